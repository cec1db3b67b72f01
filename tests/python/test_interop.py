"""Interoperability tests for fanout's echo example, driven by an independent client.

Well-formed traffic goes through the `websockets` library (sync client); anything a library
client refuses to produce (bad frames, bad handshakes) is written by hand on raw sockets.
Every socket operation has a timeout so a hang fails the test instead of blocking the run.
"""

import base64
import contextlib
import hashlib
import os
import socket
import struct
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

TIMEOUT = 5.0  # seconds, for every socket operation
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024  # the echo example's max frame and message size

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_connect(url, **kwargs):
    """A websockets sync client with short timeouts and no proxy from the environment."""
    opts = dict(open_timeout=TIMEOUT, close_timeout=TIMEOUT, proxy=None, ping_interval=None)
    opts.update(kwargs)
    return connect(url, **opts)


def assert_echo_works(url):
    """The server still accepts a connection and echoes on it."""
    marker = f"still-serving-{os.urandom(4).hex()}"
    with ws_connect(url) as ws:
        ws.send(marker)
        assert ws.recv(timeout=TIMEOUT) == marker
        ws.send(marker.encode())
        assert ws.recv(timeout=TIMEOUT) == marker.encode()


# ---------------------------------------------------------------------------------------------
# Raw socket helpers
# ---------------------------------------------------------------------------------------------


def raw_socket(server):
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def read_http_head(sock):
    """Read up to the end of an HTTP response head; return (status, headers, leftover bytes)."""
    buf = b""
    deadline = time.monotonic() + TIMEOUT
    while b"\r\n\r\n" not in buf:
        assert time.monotonic() < deadline, f"no complete response head; got {buf!r}"
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before a complete response head; got {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert parts[0] == "HTTP/1.1", f"bad status line {lines[0]!r}"
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, rest


def header(headers, name):
    values = headers.get(name.lower(), [])
    assert len(values) <= 1, f"header {name} repeated: {values}"
    return values[0] if values else None


def read_until_eof(sock, initial=b""):
    """Read until the server closes TCP. Fails if it has not within TIMEOUT."""
    buf = initial
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert time.monotonic() < deadline, f"server did not close TCP; read so far {buf!r}"
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            pytest.fail(f"server did not close TCP within {TIMEOUT} s; read so far {buf!r}")
        except ConnectionResetError:
            # Still a close, though an abortive one; whatever arrived before the reset is in buf.
            return buf
        if not chunk:
            return buf
        buf += chunk


def make_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def raw_handshake(server):
    """Open a raw socket and do a correct opening handshake; return (sock, leftover bytes)."""
    sock = raw_socket(server)
    key = make_key()
    sock.sendall(
        (
            "GET / HTTP/1.1\r\n"
            f"Host: {server.host}:{server.port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
        ).encode()
    )
    status, headers, rest = read_http_head(sock)
    assert status == 101, f"handshake status {status}, headers {headers}"
    assert header(headers, "upgrade").lower() == "websocket"
    assert "upgrade" in header(headers, "connection").lower()
    assert header(headers, "sec-websocket-accept") == accept_for(key)
    return sock, rest


def frame(opcode, payload=b"", *, fin=True, rsv=0, mask=True, length_override=None):
    """Build one frame by hand. `rsv` is the 3 RSV bits as a number 0..7 (RSV1 = 4)."""
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    n = len(payload) if length_override is None else length_override
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def parse_frames(data):
    """Parse server frames. Returns a list of dicts; fails on truncation or masked frames."""
    frames = []
    i = 0
    while i < len(data):
        assert len(data) - i >= 2, f"truncated frame header at {i}: {data[i:]!r}"
        b0, b1 = data[i], data[i + 1]
        i += 2
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        assert not (b1 & 0x80), "server sent a masked frame"
        payload = data[i : i + n]
        assert len(payload) == n, f"truncated frame payload: want {n}, have {len(payload)}"
        i += n
        frames.append(
            {"fin": bool(b0 & 0x80), "rsv": (b0 >> 4) & 7, "opcode": b0 & 0xF, "payload": payload}
        )
    return frames


def read_frame(sock, buf):
    """Read exactly one server frame; return (frame dict, remaining buffer)."""

    def need(k):
        nonlocal buf
        while len(buf) < k:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed mid-frame; have {buf!r}"
            buf += chunk

    need(2)
    n = buf[1] & 0x7F
    hlen = 2 + (2 if n == 126 else 8 if n == 127 else 0)
    need(hlen)
    if n == 126:
        (n,) = struct.unpack("!H", buf[2:4])
    elif n == 127:
        (n,) = struct.unpack("!Q", buf[2:10])
    need(hlen + n)
    (f,) = parse_frames(buf[: hlen + n])
    return f, buf[hlen + n :]


def expect_close_then_eof(sock, rest, want_code):
    """The server's next frame is a close with `want_code`, and then it closes TCP."""
    data = read_until_eof(sock, rest)
    frames = parse_frames(data)
    assert frames, f"server closed TCP without a close frame (expected {want_code})"
    last = frames[-1]
    assert last["opcode"] == OP_CLOSE, f"last frame is not a close frame: {frames}"
    assert last["fin"] and last["rsv"] == 0, f"bad close frame header: {last}"
    payload = last["payload"]
    assert len(payload) >= 2, f"close frame has no status code: {payload!r}"
    (code,) = struct.unpack("!H", payload[:2])
    assert code == want_code, f"close code {code}, expected {want_code}; reason {payload[2:]!r}"
    payload[2:].decode("utf-8")  # the reason the server sent must itself be valid UTF-8
    # Nothing other than the close frame may come back for a violating frame.
    assert [f["opcode"] for f in frames] == [OP_CLOSE], f"unexpected frames: {frames}"


# ---------------------------------------------------------------------------------------------
# Library client: echo
# ---------------------------------------------------------------------------------------------


def test_library_version_is_the_pinned_one():
    # The tests below use the websockets >= 13 sync client API (protocol.close_rcvd etc.).
    major = int(websockets.__version__.split(".")[0])
    assert major >= 13, websockets.__version__


@pytest.mark.parametrize(
    "message",
    [
        "hello",
        "",
        "κόσμε — 世界 — 🌍 — \u0000 — \U0010ffff",
        "x" * 70000,
        b"\x00\x01\x02\xff",
        b"",
        bytes(range(256)) * 274,  # 70144 bytes: 64-bit length form
        os.urandom(70000),
    ],
    ids=["text", "empty-text", "unicode-text", "text-70000", "binary", "empty-binary",
         "binary-70144", "random-binary-70000"],
)
def test_echo_single_message(server, message):
    with ws_connect(server.url) as ws:
        ws.send(message)
        got = ws.recv(timeout=TIMEOUT)
        assert type(got) is type(message)  # text stays text, binary stays binary
        assert got == message


def test_echo_lengths_around_frame_length_boundaries(server):
    # 125/126 (7-bit vs 16-bit length) and 65535/65536 (16-bit vs 64-bit length).
    with ws_connect(server.url) as ws:
        for n in (124, 125, 126, 127, 65534, 65535, 65536, 65537):
            payload = os.urandom(n)
            ws.send(payload)
            assert ws.recv(timeout=TIMEOUT) == payload, n


def test_many_messages_pipelined_in_order(server):
    msgs = []
    for i in range(1000):
        if i % 2:
            msgs.append(f"message {i} {'.' * (i % 37)}")
        else:
            msgs.append(f"binary {i}".encode() + bytes([i % 256]) * (i % 53))
    with ws_connect(server.url) as ws:
        for m in msgs:
            ws.send(m)
        got = [ws.recv(timeout=TIMEOUT) for _ in msgs]
    for i, (want, have) in enumerate(zip(msgs, got)):
        assert type(have) is type(want), f"message {i}: type {type(have)} != {type(want)}"
        assert have == want, f"message {i} out of order or altered"


def test_many_connections_at_once(server):
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(ws_connect(server.url)) for _ in range(20)]
        for i, ws in enumerate(conns):
            ws.send(f"conn {i}")
        for i, ws in enumerate(conns):
            assert ws.recv(timeout=TIMEOUT) == f"conn {i}"


def test_fragmented_text_message_comes_back_whole(server):
    with ws_connect(server.url) as ws:
        ws.send(["frag-one ", "κόσμε ", "", "frag-three"])
        assert ws.recv(timeout=TIMEOUT) == "frag-one κόσμε frag-three"


def test_fragmented_binary_message_comes_back_whole(server):
    parts = [os.urandom(1000), b"", os.urandom(70000), os.urandom(3)]
    with ws_connect(server.url) as ws:
        ws.send(parts)
        assert ws.recv(timeout=TIMEOUT) == b"".join(parts)
        # and the connection is still usable afterwards
        ws.send("after")
        assert ws.recv(timeout=TIMEOUT) == "after"


def test_ping_gets_pong(server):
    with ws_connect(server.url) as ws:
        pong = ws.ping(b"are you there?")
        assert pong.wait(TIMEOUT), "no pong for the ping within the timeout"
        pong = ws.ping(b"")
        assert pong.wait(TIMEOUT), "no pong for an empty ping within the timeout"
        pong = ws.ping(b"p" * 125)
        assert pong.wait(TIMEOUT), "no pong for a 125-byte ping within the timeout"
        ws.send("still open")
        assert ws.recv(timeout=TIMEOUT) == "still open"


def test_close_handshake_echoes_code_and_reason(server):
    with ws_connect(server.url) as ws:
        ws.send("before close")
        assert ws.recv(timeout=TIMEOUT) == "before close"
        ws.close(4000, "bye")
    assert ws.wait_closed(TIMEOUT), "TCP connection not closed after the close handshake"
    rcvd = ws.protocol.close_rcvd
    assert rcvd is not None, "no close frame received from the server"
    assert (rcvd.code, rcvd.reason) == (4000, "bye")
    assert ws.close_code == 4000
    assert ws.close_reason == "bye"


def test_normal_close_without_reason(server):
    with ws_connect(server.url) as ws:
        ws.close()
    assert ws.wait_closed(TIMEOUT)
    rcvd = ws.protocol.close_rcvd
    assert rcvd is not None and rcvd.code == 1000


def _expect_closed_with(ws, code):
    with pytest.raises(ConnectionClosed) as info:
        # The server may have closed while we were still sending; either way the next
        # recv must report the close it sent.
        ws.recv(timeout=TIMEOUT)
    rcvd = info.value.rcvd
    assert rcvd is not None, f"no close frame from the server: {info.value!r}"
    assert rcvd.code == code, f"close code {rcvd.code} ({rcvd.reason!r}), expected {code}"


def test_message_over_limit_single_frame_gets_1009(server):
    with ws_connect(server.url, max_size=None, compression=None) as ws:
        try:
            ws.send(b"\x00" * (MAX_MESSAGE + 1))
        except ConnectionClosed:
            pass
        _expect_closed_with(ws, 1009)
    assert_echo_works(server.url)


def test_message_over_limit_fragmented_gets_1009(server):
    # Every frame is small; only the reassembled message exceeds the 16 MiB limit.
    chunk = b"\x01" * (1 << 20)
    parts = [chunk] * 16 + [b"\x01"]
    with ws_connect(server.url, max_size=None, compression=None) as ws:
        try:
            ws.send(parts)
        except ConnectionClosed:
            pass
        _expect_closed_with(ws, 1009)


def test_message_exactly_at_limit_is_echoed(server):
    payload = os.urandom(MAX_MESSAGE)
    with ws_connect(server.url, max_size=None, compression=None) as ws:
        ws.send(payload)
        got = ws.recv(timeout=30)
        assert len(got) == len(payload)
        assert got == payload


# ---------------------------------------------------------------------------------------------
# Raw sockets: frames
# ---------------------------------------------------------------------------------------------


def test_raw_echo_is_unmasked_and_exact(server):
    sock, buf = raw_handshake(server)
    with sock:
        sock.sendall(frame(OP_TEXT, "raw κ".encode()))
        f, buf = read_frame(sock, buf)
        assert (f["fin"], f["rsv"], f["opcode"]) == (True, 0, OP_TEXT)
        assert f["payload"] == "raw κ".encode()
        sock.sendall(frame(OP_BINARY, b"\x00\xff" * 200))
        f, buf = read_frame(sock, buf)
        assert (f["fin"], f["rsv"], f["opcode"]) == (True, 0, OP_BINARY)
        assert f["payload"] == b"\x00\xff" * 200
        sock.sendall(frame(OP_CLOSE, close_payload(4000, b"bye")))
        data = read_until_eof(sock, buf)
        frames = parse_frames(data)
        assert [f["opcode"] for f in frames] == [OP_CLOSE]
        assert frames[0]["payload"] == close_payload(4000, b"bye")


def test_raw_ping_interleaved_in_fragmented_message(server):
    sock, buf = raw_handshake(server)
    with sock:
        sock.sendall(
            frame(OP_TEXT, b"Hel", fin=False)
            + frame(OP_PING, b"mid")
            + frame(OP_CONT, b"lo", fin=False)
            + frame(OP_CONT, b"!", fin=True)
        )
        f, buf = read_frame(sock, buf)
        assert (f["opcode"], f["payload"]) == (OP_PONG, b"mid")
        f, buf = read_frame(sock, buf)
        assert (f["fin"], f["opcode"], f["payload"]) == (True, OP_TEXT, b"Hello!")


def test_raw_utf8_sequence_split_across_fragments_is_valid(server):
    # U+03BA (0xce 0xba) and U+1F30D (4 bytes) each split between two frames.
    sock, buf = raw_handshake(server)
    with sock:
        sock.sendall(
            frame(OP_TEXT, b"\xce", fin=False)
            + frame(OP_CONT, b"\xba\xf0\x9f", fin=False)
            + frame(OP_CONT, b"\x8c\x8d", fin=True)
        )
        f, buf = read_frame(sock, buf)
        assert (f["opcode"], f["payload"]) == (OP_TEXT, "κ🌍".encode())


def test_raw_unsolicited_pong_is_ignored(server):
    sock, buf = raw_handshake(server)
    with sock:
        sock.sendall(frame(OP_PONG, b"unsolicited") + frame(OP_TEXT, b"after pong"))
        f, buf = read_frame(sock, buf)
        assert (f["opcode"], f["payload"]) == (OP_TEXT, b"after pong")


INVALID_UTF8 = bytes([0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5,
                      0xED, 0xA0, 0x80])

VIOLATIONS = {
    "rsv1-set": (frame(OP_TEXT, b"hello", rsv=4), 1002),
    "rsv2-set": (frame(OP_BINARY, b"hello", rsv=2), 1002),
    "rsv3-set": (frame(OP_TEXT, b"hello", rsv=1), 1002),
    "reserved-opcode-0x3": (frame(0x3, b"hello"), 1002),
    "reserved-opcode-0xb": (frame(0xB, b"hello"), 1002),
    "unmasked-frame": (frame(OP_TEXT, b"hello", mask=False), 1002),
    "fragmented-ping": (frame(OP_PING, b"p", fin=False), 1002),
    "ping-126-bytes": (frame(OP_PING, b"p" * 126), 1002),
    "continuation-without-start": (frame(OP_CONT, b"orphan"), 1002),
    "new-message-inside-fragmented": (
        frame(OP_TEXT, b"first", fin=False) + frame(OP_TEXT, b"second"), 1002),
    "invalid-utf8-text": (frame(OP_TEXT, INVALID_UTF8), 1007),
    "invalid-utf8-fragmented-text": (
        frame(OP_TEXT, INVALID_UTF8[:12], fin=False) + frame(OP_CONT, INVALID_UTF8[12:]), 1007),
    "close-code-1005": (frame(OP_CLOSE, close_payload(1005)), 1002),
    "close-code-1006": (frame(OP_CLOSE, close_payload(1006)), 1002),
    "close-code-1015": (frame(OP_CLOSE, close_payload(1015)), 1002),
    "close-code-999": (frame(OP_CLOSE, close_payload(999)), 1002),
    "close-code-2000": (frame(OP_CLOSE, close_payload(2000)), 1002),
    "close-code-0": (frame(OP_CLOSE, close_payload(0)), 1002),
    "close-one-byte-payload": (frame(OP_CLOSE, b"\x03"), 1002),
    "close-reason-invalid-utf8": (frame(OP_CLOSE, close_payload(1000, b"ok\xff\xfe")), 1007),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_raw_protocol_violation_gets_close_code(server, name):
    data, want_code = VIOLATIONS[name]
    sock, rest = raw_handshake(server)
    with sock:
        sock.sendall(data)
        expect_close_then_eof(sock, rest, want_code)


def test_raw_violation_after_valid_traffic(server):
    # Valid message echoed first, then RSV1 -> only a 1002 close follows.
    sock, buf = raw_handshake(server)
    with sock:
        sock.sendall(frame(OP_TEXT, b"fine"))
        f, buf = read_frame(sock, buf)
        assert f["payload"] == b"fine"
        sock.sendall(frame(OP_TEXT, b"bad", rsv=4))
        expect_close_then_eof(sock, buf, 1002)


def test_raw_valid_close_code_with_empty_payload(server):
    # A close frame with no payload is valid; the server answers with a close and closes TCP.
    sock, buf = raw_handshake(server)
    with sock:
        sock.sendall(frame(OP_CLOSE, b""))
        frames = parse_frames(read_until_eof(sock, buf))
        assert [f["opcode"] for f in frames] == [OP_CLOSE]
        p = frames[0]["payload"]
        assert p == b"" or struct.unpack("!H", p[:2])[0] == 1000, p


# ---------------------------------------------------------------------------------------------
# Raw sockets: bad handshakes
# ---------------------------------------------------------------------------------------------


def upgrade_request(server, *, method="GET", key=True, version="13", extra=""):
    lines = [f"{method} / HTTP/1.1", f"Host: {server.host}:{server.port}",
             "Upgrade: websocket", "Connection: Upgrade"]
    if key:
        lines.append(f"Sec-WebSocket-Key: {make_key()}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    if method == "POST":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def send_raw_request(server, data):
    sock = raw_socket(server)
    try:
        sock.sendall(data)
        status, headers, rest = read_http_head(sock)
    except BaseException:
        sock.close()
        raise
    return sock, status, headers, rest


def test_plain_get_gets_426_with_body(server):
    req = f"GET / HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n\r\n".encode()
    sock, status, headers, rest = send_raw_request(server, req)
    with sock:
        assert status == 426
        length = header(headers, "content-length")
        body = rest
        if length is not None:
            while len(body) < int(length):
                chunk = sock.recv(4096)
                assert chunk, "connection closed before the body was complete"
                body += chunk
        else:
            body = read_until_eof(sock, rest)
        assert b"this endpoint speaks WebSocket" in body
    assert_echo_works(server.url)


def test_post_upgrade_gets_405(server):
    sock, status, headers, _ = send_raw_request(server, upgrade_request(server, method="POST"))
    with sock:
        assert status == 405
    assert_echo_works(server.url)


def test_missing_key_gets_400(server):
    sock, status, headers, _ = send_raw_request(server, upgrade_request(server, key=False))
    with sock:
        assert status == 400
    assert_echo_works(server.url)


def test_bad_key_gets_400(server):
    req = upgrade_request(server, key=False, extra="Sec-WebSocket-Key: not-a-valid-key\r\n")
    sock, status, headers, _ = send_raw_request(server, req)
    with sock:
        assert status == 400
    assert_echo_works(server.url)


def test_version_8_gets_426_with_version_13(server):
    sock, status, headers, _ = send_raw_request(server, upgrade_request(server, version="8"))
    with sock:
        assert status == 426
        assert header(headers, "sec-websocket-version") == "13", headers
    assert_echo_works(server.url)


def test_oversized_request_head_gets_431(server):
    pad = "".join(f"X-Pad-{i}: {'a' * 100}\r\n" for i in range(100))  # ~11 KiB of headers
    req = upgrade_request(server, extra=pad)
    assert len(req) > 10 * 1024
    sock, status, headers, _ = send_raw_request(server, req)
    with sock:
        assert status == 431
    assert_echo_works(server.url)


def test_random_bytes_get_400_and_close(server):
    garbage = bytearray(os.urandom(200))
    while chr(garbage[0]).isalpha():  # must not look like the start of a method token
        garbage[0] = os.urandom(1)[0]
    sock, status, headers, rest = send_raw_request(server, bytes(garbage))
    with sock:
        assert status == 400, f"sent {bytes(garbage)!r}"
        # After the response the server closes the connection: recv sees EOF.
        read_until_eof(sock, rest)
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
    assert_echo_works(server.url)


def test_server_still_serves_after_everything(server):
    assert_echo_works(server.url)
    with ws_connect(server.url) as ws:
        for i in range(10):
            ws.send(f"tail {i}")
        assert [ws.recv(timeout=TIMEOUT) for _ in range(10)] == [f"tail {i}" for i in range(10)]
