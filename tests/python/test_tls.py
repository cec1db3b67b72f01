"""The echo example over TLS, driven by Python's `websockets` and `ssl` modules: a test CA made
by the fixture (conftest.py), wss:// echo, ALPN, session resumption, large messages, and the
bad input a TLS port meets (plain HTTP, random bytes), after which the server still serves."""

import os
import socket
import ssl

from websockets.sync.client import connect

TIMEOUT = 5.0


def wss(server, **kwargs):
    opts = dict(open_timeout=TIMEOUT, close_timeout=TIMEOUT, proxy=None, ping_interval=None)
    opts.update(kwargs)
    return connect(server.url, ssl=server.ssl_context(), **opts)


def tls_socket(server, context=None, session=None):
    raw = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    context = context or server.ssl_context()
    return context.wrap_socket(raw, server_hostname="localhost", session=session)


def read_until_eof(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            return data
        if not chunk:
            return data
        data += chunk


def assert_echo_works(server):
    marker = f"still-serving-{os.urandom(4).hex()}"
    with wss(server) as ws:
        ws.send(marker)
        assert ws.recv(timeout=TIMEOUT) == marker


def test_wss_echo_text_and_binary(echo_tls_server):
    with wss(echo_tls_server) as ws:
        ws.send("hello over TLS")
        assert ws.recv(timeout=TIMEOUT) == "hello over TLS"
        ws.send(b"\x00\x01\x02")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01\x02"


def test_wss_large_message_both_ways(echo_tls_server):
    payload = os.urandom(2 * 1024 * 1024)
    with wss(echo_tls_server, max_size=None) as ws:
        ws.send(payload)
        assert ws.recv(timeout=TIMEOUT * 4) == payload


def test_alpn_selects_http11(echo_tls_server):
    with tls_socket(echo_tls_server) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        assert sock.version() in ("TLSv1.3", "TLSv1.2")


def test_session_resumption(echo_tls_server):
    context = echo_tls_server.ssl_context()
    with tls_socket(echo_tls_server, context) as sock:
        # A TLS 1.3 ticket arrives after the handshake: an exchange makes sure it was read.
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert read_until_eof(sock).startswith(b"HTTP/1.1 426 ")
        session = sock.session
    assert session is not None
    with tls_socket(echo_tls_server, context, session=session) as again:
        assert again.session_reused


def test_plain_http_on_the_tls_port_gets_400(echo_tls_server):
    with socket.create_connection((echo_tls_server.host, echo_tls_server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = read_until_eof(sock)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    assert_echo_works(echo_tls_server)


def test_random_bytes_get_an_alert_then_the_close(echo_tls_server):
    noise = b"\x9c" + os.urandom(511)
    with socket.create_connection((echo_tls_server.host, echo_tls_server.port), timeout=TIMEOUT) as sock:
        sock.sendall(noise)
        answer = read_until_eof(sock)
    # An alert record (content type 21), level fatal (2).
    assert len(answer) >= 7 and answer[0] == 21 and answer[5] == 2, answer
    assert_echo_works(echo_tls_server)


def test_an_untrusted_client_refuses_the_test_certificate(echo_tls_server):
    context = ssl.create_default_context()  # the system's roots: the test CA is not among them
    raw = socket.create_connection((echo_tls_server.host, echo_tls_server.port), timeout=TIMEOUT)
    try:
        context.wrap_socket(raw, server_hostname="localhost")
        raise AssertionError("the handshake should have failed")
    except ssl.SSLCertVerificationError:
        pass
    finally:
        raw.close()
    assert_echo_works(echo_tls_server)


def test_compressed_frames_inside_tls_records(echo_tls_server_compressed):
    server = echo_tls_server_compressed
    text = '{"event":"tick","data":{"price":' + ",".join(str(i) for i in range(400)) + "}}"
    with wss(server, max_size=None) as ws:
        ext = ws.response.headers["Sec-WebSocket-Extensions"]
        assert ext.startswith("permessage-deflate") and "server_no_context_takeover" in ext, ext
        for message in [text, text * 50, os.urandom(3000)]:
            ws.send(message)
            assert ws.recv(timeout=TIMEOUT) == message
    assert_echo_works(server)
