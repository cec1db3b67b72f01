"""permessage-deflate (RFC 7692) against the echo example started with `--compression`.

The `websockets` client negotiates the extension (or not) and checks every echoed message; raw
sockets show what a library hides: the response header, the RSV1 bit of each frame, and the close
codes for bad compressed input. Messages are compressed here with Python's zlib, as RFC 7692
§7.2.1 describes, independently of the server's code.
"""

import os
import zlib

import pytest

from test_interop import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    TIMEOUT,
    accept_for,
    close_payload,
    expect_close_then_eof,
    frame,
    header,
    make_key,
    raw_socket,
    read_frame,
    read_http_head,
    ws_connect,
)

SYNC_TAIL = b"\x00\x00\xff\xff"


def deflate(data, level=6):
    """A message's compressed payload: raw DEFLATE, sync flush, the 4-byte tail removed."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(SYNC_TAIL)
    return out[:-4]


def inflate(payload):
    d = zlib.decompressobj(-15)
    return d.decompress(payload + SYNC_TAIL)


def json_text(n):
    items = ",".join(
        f'{{"symbol":"SYM{k:03}","bid":{100 + k}.25,"ask":{101 + k}.5,"volume":{1000 * k + n}}}'
        for k in range(16)
    )
    return f'{{"channel":"prices","seq":{n},"data":[{items}]}}'


def raw_deflate_handshake(server, offer="permessage-deflate; client_max_window_bits"):
    """A raw upgrade offering `offer`; returns (sock, leftover bytes, the extensions header)."""
    sock = raw_socket(server)
    key = make_key()
    lines = [
        "GET / HTTP/1.1",
        f"Host: {server.host}:{server.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if offer is not None:
        lines.append(f"Sec-WebSocket-Extensions: {offer}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    status, headers, rest = read_http_head(sock)
    assert status == 101, (status, headers)
    assert header(headers, "sec-websocket-accept") == accept_for(key)
    return sock, rest, header(headers, "sec-websocket-extensions")


def compressed_frame(opcode, data, level=6, **kwargs):
    return frame(opcode, deflate(data, level), rsv=4, **kwargs)


# ---------------------------------------------------------------------------------------------
# The websockets library, compression on and off
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    ["hello", json_text(1), json_text(2) * 70, b"\x00" * 100_000, os.urandom(5000), ""],
    ids=["short", "json-1k", "json-70k", "zeros-100k", "random-5000", "empty"],
)
def test_websockets_with_compression_round_trips(cserver, message):
    with ws_connect(cserver.url, max_size=None) as ws:
        ext = ws.response.headers["Sec-WebSocket-Extensions"]
        assert ext.startswith("permessage-deflate"), ext
        assert "server_no_context_takeover" in ext and "client_no_context_takeover" in ext, ext
        assert "client_max_window_bits=15" in ext, ext  # websockets offers it without a value
        for _ in range(3):
            ws.send(message)
            got = ws.recv(timeout=TIMEOUT)
            assert type(got) is type(message) and got == message


def test_websockets_fragmented_compressed_message(cserver):
    parts = [json_text(i) for i in range(5)]
    with ws_connect(cserver.url) as ws:
        ws.send(parts)
        assert ws.recv(timeout=TIMEOUT) == "".join(parts)


def test_websockets_without_compression_on_a_compressing_server(cserver):
    with ws_connect(cserver.url, compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send(json_text(3))
        assert ws.recv(timeout=TIMEOUT) == json_text(3)


def test_websockets_offer_is_declined_when_the_server_does_not_compress(server):
    with ws_connect(server.url) as ws:  # websockets offers permessage-deflate by default
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send(json_text(4))
        assert ws.recv(timeout=TIMEOUT) == json_text(4)


# ---------------------------------------------------------------------------------------------
# Raw sockets: the header, the RSV1 bit
# ---------------------------------------------------------------------------------------------


def test_raw_response_header_and_rsv1_per_message(cserver):
    sock, buf, ext = raw_deflate_handshake(cserver, "permessage-deflate; client_max_window_bits=10")
    with sock:
        assert ext == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "client_max_window_bits=10"
        )
        big = json_text(7).encode()
        sock.sendall(compressed_frame(OP_TEXT, big))
        f, buf = read_frame(sock, buf)
        assert (f["fin"], f["rsv"], f["opcode"]) == (True, 4, OP_TEXT), "a 1 KiB echo is compressed"
        assert len(f["payload"]) < len(big) // 2
        assert inflate(f["payload"]) == big
        # Below the threshold the echo goes plain: RSV1 is per message.
        sock.sendall(compressed_frame(OP_TEXT, b"tiny"))
        f, buf = read_frame(sock, buf)
        assert (f["rsv"], f["payload"]) == (0, b"tiny")
        # An uncompressed message on a compressed connection is fine too.
        sock.sendall(frame(OP_BINARY, big))
        f, buf = read_frame(sock, buf)
        assert f["rsv"] == 4 and inflate(f["payload"]) == big
        # Fragmented: RSV1 on the first frame only, a ping in between.
        payload = deflate(big)
        sock.sendall(
            frame(OP_TEXT, payload[:10], fin=False, rsv=4)
            + frame(OP_PING, b"mid")
            + frame(OP_CONT, payload[10:])
        )
        f, buf = read_frame(sock, buf)
        assert (f["opcode"], f["payload"]) == (0xA, b"mid")
        f, buf = read_frame(sock, buf)
        assert f["rsv"] == 4 and inflate(f["payload"]) == big


def test_raw_server_window_limit_is_honoured_with_plain_frames(cserver):
    sock, buf, ext = raw_deflate_handshake(cserver, "permessage-deflate; server_max_window_bits=9")
    with sock:
        assert "server_max_window_bits=9" in ext, ext
        big = json_text(8).encode()
        sock.sendall(compressed_frame(OP_TEXT, big))
        f, buf = read_frame(sock, buf)
        assert (f["rsv"], f["payload"]) == (0, big), "a 9-bit window: sent uncompressed"


def test_raw_offers_that_cannot_be_honoured_are_declined(cserver):
    for offer in ["permessage-deflate; server_max_window_bits=7", "permessage-deflate; foo", "x-unknown"]:
        sock, buf, ext = raw_deflate_handshake(cserver, offer)
        with sock:
            assert ext is None, (offer, ext)
            sock.sendall(frame(OP_TEXT, b"plain"))
            f, buf = read_frame(sock, buf)
            assert (f["rsv"], f["payload"]) == (0, b"plain")


# ---------------------------------------------------------------------------------------------
# Raw sockets: bad compressed input
# ---------------------------------------------------------------------------------------------

MAX_MESSAGE = 16 * 1024 * 1024

BAD = {
    # 32 MiB of zeros in about 32 KiB: past the 16 MiB limit once inflated.
    "decompression-bomb": (lambda: compressed_frame(OP_BINARY, b"\x00" * (2 * MAX_MESSAGE), level=9), 1009),
    "compressed-ping": (lambda: frame(OP_PING, b"", rsv=4), 1002),
    "compressed-close": (lambda: frame(OP_CLOSE, close_payload(1000), rsv=4), 1002),
    "rsv1-on-continuation": (
        lambda: frame(OP_TEXT, b"abc", fin=False) + frame(OP_CONT, b"def", rsv=4),
        1002,
    ),
    "invalid-deflate-data": (lambda: frame(OP_BINARY, b"\xff\xff\xff\xff", rsv=4), 1007),
    "inflates-to-invalid-utf8": (lambda: compressed_frame(OP_TEXT, b"ok \xff\xfe"), 1007),
}


@pytest.mark.parametrize("name", list(BAD))
def test_raw_bad_compressed_input_gets_close_code(cserver, name):
    make, code = BAD[name]
    sock, rest, ext = raw_deflate_handshake(cserver)
    assert ext is not None
    with sock:
        sock.sendall(make())
        expect_close_then_eof(sock, rest, code)
    with ws_connect(cserver.url) as ws:  # and the server goes on
        ws.send(json_text(9))
        assert ws.recv(timeout=TIMEOUT) == json_text(9)


def test_raw_rsv1_without_negotiation_gets_1002(cserver):
    sock, rest, ext = raw_deflate_handshake(cserver, offer=None)
    assert ext is None
    with sock:
        sock.sendall(compressed_frame(OP_TEXT, b"hello"))
        expect_close_then_eof(sock, rest, 1002)


def test_bomb_does_not_grow_the_server(cserver):
    """Ten bombs in a row: the server's memory stays bounded by the limit, not their size."""
    rss = lambda: int(  # noqa: E731
        next(line for line in open(f"/proc/{cserver.proc.pid}/status") if line.startswith("VmRSS:")).split()[1]
    )
    bomb = compressed_frame(OP_BINARY, b"\x00" * (8 * MAX_MESSAGE), level=9)  # 128 MiB inflated
    before = rss()
    for _ in range(10):
        sock, rest, _ = raw_deflate_handshake(cserver)
        with sock:
            sock.sendall(bomb)
            expect_close_then_eof(sock, rest, 1009)
    grown_mib = (rss() - before) / 1024
    assert grown_mib < 64, f"the server grew by {grown_mib:.0f} MiB"
