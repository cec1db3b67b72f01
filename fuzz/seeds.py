#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/: small starting inputs for each fuzz target, taken from the unit
tests next to the parsers, in each target's input format (its `//!` doc describes the format).
Run it after changing a format or adding a target; its output is committed, the corpus that
grows from it is not. Usage: python3 fuzz/seeds.py"""

import json
import os
import shutil
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def write(target, seeds):
    folder = os.path.join(ROOT, target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for i, seed in enumerate(seeds):
        with open(os.path.join(folder, f"seed-{i:02d}"), "wb") as f:
            f.write(seed.encode() if isinstance(seed, str) else seed)


def b(*parts):
    return b"".join(p.encode() if isinstance(p, str) else bytes(p) if isinstance(p, list) else p for p in parts)


# --- http_request: [limits][step] then the bytes of one or more requests (src/proto/handshake.rs tests).
RFC_REQUEST = ("GET /chat?room=1&token=abc HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n"
               "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\nCookie: a=1; fanout_token=xyz\r\n\r\n")
REQUESTS = [
    RFC_REQUEST,
    "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, WebSocket\r\nConnection: keep-alive, UPGRADE\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.0\r\n\r\nGET /ws HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
    "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "POST / HTTP/1.1\r\nContent-Length: 50\r\nexpect:  100-Continue \r\n\r\nabc",
    "POST / HTTP/1.0\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    "POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n\r\nGET /c",
    "GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: , Upgrade\r\n\r\n",
    "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "GET /app/key?protocol=7 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    "PUT / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\n\r\n",
]
write("http_request", [b([limits, step], r) for r in REQUESTS for limits, step in [(0, 0), (1, 7)]])

# --- receiver: [cfg][max_message u16][max_frame u16][step] then frames [b0][flags][len u16][payload].
def frame(b0, payload=b"", flags=0):
    payload = payload.encode() if isinstance(payload, str) else bytes(payload)
    return bytes([b0, flags]) + struct.pack("<H", len(payload)) + payload


def receiver(cfg, frames, max_message=65535, max_frame=65535, step=0):
    return bytes([cfg]) + struct.pack("<HH", max_message, max_frame) + bytes([step]) + b"".join(frames)


RFC_MASKED_HELLO = bytes([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58, 0x89])
write("receiver", [
    receiver(0, [frame(0x81, "Hello")]),
    receiver(0, [frame(0x01, "he"), frame(0x89, "p"), frame(0x80, "llo"), frame(0x82, [9])], step=3),
    receiver(0, [frame(0x81, "ok \xff and more".encode("latin-1"))], step=5),
    receiver(0, [frame(0x81, "\u00e9\u4e2d\U0001F600")], step=1),
    receiver(0, [frame(0x88, struct.pack(">H", 1000) + b"bye"), frame(0x88, b"")]),
    receiver(0, [frame(0x88, struct.pack(">H", 1005))]),
    receiver(0, [frame(0x82, bytes(100))], max_message=99),
    receiver(0, [frame(0x81, "x" * 300, flags=4)], step=64),
    receiver(0, [frame(0x81, "unmasked", flags=2)]),
    receiver(0, [frame(0x80, "stray continuation")]),
    receiver(0, [frame(0x0a, "fragmented pong")]),
    receiver(1, [frame(0xC1, "Hello Hello Hello", flags=1)]),
    receiver(1, [frame(0x41, "compressed fragments " * 4, flags=1), frame(0x80, "")], step=9),
    receiver(1, [frame(0xC2, bytes(1000), flags=1)], max_message=999),
    receiver(1, [frame(0xC9, "compressed ping", flags=1)]),
    receiver(2, [frame(0x81, "client side", flags=0)]),
    receiver(0, [bytes([0x81, 0x08])] + [RFC_MASKED_HELLO]),
    receiver(0, [bytes([0x82, 0x08]), bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0])]),
])

# --- inflate: [mode][limit u16] then data (src/proto/deflate.rs tests, RFC 7692 §7.2.3).
RFC_7692 = [
    bytes([0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
    bytes([0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f]),
    bytes([0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
    bytes([0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00]),
    bytes([0x00]),
]
def deflate_raw(data):
    """RFC 7692 §7.2.1: raw DEFLATE with a sync flush, the trailing 00 00 ff ff removed."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out


JSON = b'{"channel":"prices","seq":123,"data":{"symbol":"ABC","bid":101.25,"ask":101.5}}'
write("inflate", [bytes([0]) + struct.pack("<H", 1024) + c for c in RFC_7692] + [
    bytes([0]) + struct.pack("<H", 4) + RFC_7692[0],
    bytes([1 | 6 << 1]) + struct.pack("<H", 0) + JSON * 20,
    bytes([1 | 9 << 1]) + struct.pack("<H", 0) + bytes(4096),
    # A bomb: 1 MiB of zeros deflated (as a client would send it) under a 4 KiB limit.
    bytes([0]) + struct.pack("<H", 4096) + deflate_raw(bytes(1 << 20)),
])

# --- deflate_offer: Sec-WebSocket-Extensions values, one per line (deflate.rs offers_table).
write("deflate_offer", [
    "permessage-deflate",
    "Permessage-Deflate; client_max_window_bits",
    "permessage-deflate; client_max_window_bits=\"12\"",
    "permessage-deflate;server_max_window_bits=9;client_max_window_bits",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits\npermessage-deflate",
    "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=9",
    "permessage-deflate; server_max_window_bits=010",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; ;\npermessage-deflate",
    "permessage-deflate; client_max_window_bits=\"9",
    "permessage-deflate; mystery=\"a\\\"b\", permessage-deflate; server_max_window_bits=15",
])

# --- native_ops: one client frame (gateway/src/native/protocol.rs tests).
write("native_ops", [
    '{"op":"subscribe","channel":"news","since":17}',
    '{"op":"subscribe","channel":"news","since":17,"epoch":"k3x9"}',
    '{"op":"unsubscribe","channel":"news"}',
    '{"op":"publish","channel":"chat:1","data":{"t":[1,2]},"id":7}',
    '{"op":"publish","channel":"c","event":"App\\\\Events\\\\Sent","data":1}',
    '{"op":"publish","channel":"x","id":"abc"}',
    '{"op":"publish","channel":"x","event":"pusher:ping","data":1}',
    '{"op":"subscribe","channel":"a b"}',
    '{"op":"dance","channel":"x"}',
    '{"channel":"x"}',
    '[1,2]',
    '{"op":"publish","channel":"u/1@a.b","data":"\\u00e9\\ud83d\\ude00","id":[1,{"a":null}]}',
])

# --- jwt_claims: [mode] then header NUL claims NUL secret (0), a token (1), or [exp] sub NUL patterns (2).
HEADER = '{"alg":"HS256","typ":"JWT"}'
write("jwt_claims", [
    b([0], HEADER, [0], '{"sub":"alice","exp":4102444800,"subscribe":["news","chat:*"],"publish":[]}', [0], "s3cret"),
    b([0], HEADER, [0], '{"sub":"bob","exp":4102444800}', [0], "k"),
    b([0], HEADER, [0], '{"sub":"old","exp":1000000000}', [0], "k"),
    b([0], HEADER, [0], '{"exp":4102444800}', [0], "k"),
    b([0], '{"alg":"none"}', [0], '{"sub":"x","exp":4102444800}', [0], "k"),
    b([0], HEADER, [0], '{"sub":"x","exp":4102444800,"aud":"y","subscribe":"news"}', [0], "k"),
    b([1], "not.a.token"),
    b([1], "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjo0MTAyNDQ0ODAwfQ.c2ln"),
    b([2], struct.pack("<Q", 4102444800), "alice", [0], "news\nchat:*", [0], "chat:*"),
    b([2], struct.pack("<Q", 1000000000), "expired", [0], "*", [0], ""),
])

# --- channel_pattern: pattern \n channel \n more patterns (gateway/src/native/auth.rs tests).
write("channel_pattern", [
    "news\nnews", "news\nnews2", "chat:*\nchat:lobby", "chat:*\nchat:", "chat:*\nchat", "*\nanything",
    "private-*\nprivate-App.Models.User.1\npresence-*", "presence-cache-a\n#server-to-user-7\n",
    "\u00e9*\n\u00e9t\u00e9", "pusher:x*\npusher:ping",
])

# --- pusher_message: one client frame (gateway/src/pusher/protocol.rs tests).
write("pusher_message", [
    '{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"{\\"user_id\\":1}"}}',
    '{"event":"pusher:subscribe","data":{"channel":"private-a","auth":"278d425bdf160c739803:58df8b0c"}}',
    '{"event":"pusher:unsubscribe","data":"{\\"channel\\":\\"a\\"}"}',
    '{"event":"client-x","channel":"private-a","data":{"k":1}}',
    '{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\\"id\\":\\"u1\\",\\"user_info\\":{\\"n\\":1}}"}}',
    '{"event":"pusher:ping","data":{}}',
    '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}',
    '{"id":"12345"}',
    '{"user_info":{}}',
    "1234.1234", "3.17179869184", "1.99999999999999999999",
    "{nope",
])

# --- pusher_signature: [mode] then NUL-separated fields (gateway/src/pusher/signature.rs tests).
KEY, SECRET = "278d425bdf160c739803", "7ad3773142a6692b25b8"
DOC_BODY = '{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
DOC_QUERY = ("auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0"
             "&body_md5=ec365a775a4cd0599faeb73354201b6f"
             "&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c")
write("pusher_signature", [
    b([0], "POST", [0], "/apps/3/events", [0], DOC_QUERY, [0], KEY, [0], SECRET, [0],
      struct.pack("<Q", 1353088179), DOC_BODY),
    b([0], "GET", [0], "/apps/3/channels", [0], "auth_key=k&auth_timestamp=x&auth_version=1.0&auth_signature=zz"
      "&Name=Something%20else&a=%zz&b=%e9+x", [0], "k", [0], "s", [0], struct.pack("<Q", 0)),
    b([1], "POST", [0], "/apps/3/events", [0], KEY, [0], SECRET, [0], struct.pack("<I", 1353088179), DOC_BODY, [0],
      "info=user_count,subscription_count\nfilter_by_prefix=presence-\nName=Something else"),
    b([1], "GET", [0], "/apps/3/channels", [0], "k", [0], "s", [0], struct.pack("<I", 7), [0], "a=%\nb=\u00e9&=+"),
    b([2], KEY, [0], SECRET, [0], "1234.1234", [0], "private-foobar", [0], [0],
      KEY + ":58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"),
    b([2], KEY, [0], SECRET, [0], "1234.1234", [0], "presence-foobar", [0],
      '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}', [0],
      KEY + ":afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"),
])

# --- pusher_rest_body: [flags][max_event_size u16] then the body.
write("pusher_rest_body", [
    b([0], struct.pack("<H", 10240), DOC_BODY),
    b([0], struct.pack("<H", 10240), '{"name":"e","data":{"a":1},"channels":["a","b","#server-to-user-7"],'
      '"socket_id":"1.2","info":"subscription_count"}'),
    b([2], struct.pack("<H", 10240), '{"name":"e","data":"x","channel":"presence-a","socket_id":"3.4294967296",'
      '"info":"user_count,subscription_count"}'),
    b([0], struct.pack("<H", 3), '{"name":"e","data":"\\u00e9\\u00e9","channel":"a"}'),
    b([0], struct.pack("<H", 10240), '{"name":"pusher:x","data":1,"channel":"a"}'),
    b([1], struct.pack("<H", 10240), '{"batch":[{"name":"e","channel":"a","data":"1"},'
      '{"name":"f","channel":"b","data":"2","info":"subscription_count"}]}'),
    b([1], struct.pack("<H", 10240), '{"batch":[]}'),
    b([0], struct.pack("<H", 10240), '{"name":"e","data":1,"channel":"a","channels":["b"]}'),
])

# --- config_toml: a --config file (gateway/src/settings.rs tests, the default file's keys).
write("config_toml", [
    'history_size = 50\nhistory_ttl = 60\nallowed_origins = ["https://a"]\n',
    "compression = true\ncompression_threshold = 1024\nworkers = 2\n",
    'listen = "127.0.0.1:9000"\nmax_message_size = 1024\nslow_consumer = "drop"\n',
    'listen = "0.0.0.0:80"\njwt_secret = "s"\napi_key = ""\n',
    'redis_url = "redis://127.0.0.1:6379/0"\nredis_prefix = "fanout"\nredis_ingest = ["laravel_database_*"]\n',
    '[[pusher.apps]]\nid = "1"\nkey = "app-key"\nsecret = "app-secret"\nmax_event_size = 10240\n'
    'webhook_url = "http://127.0.0.1:3000/pusher/webhook"\nwebhook_events = ["channel_occupied"]\n'
    '[[pusher.apps]]\nid = "2"\nkey = "k2"\nsecret = "s2"\nclient_events = false\n',
    "mystery = 1\n",
    "workers = 0\nmax_frame_size = 1\n",
    'tls_cert = "/nonexistent/cert.pem"\ntls_key = "/nonexistent/key.pem"\ntls_listen = "127.0.0.1:8443"\n',
])

# --- redis_ingest: [flags][max u16] redis channel \n payload (gateway/src/cluster/ingest.rs tests).
write("redis_ingest", [
    b([1], struct.pack("<H", 1000), "laravel_database_private-orders.1\n",
      '{"event":"App\\\\Events\\\\Shipped","data":{"id":1,"socket":null},"socket":"123.456"}'),
    b([1], struct.pack("<H", 1000), "news\n", '{"event":"E"}'),
    b([0], struct.pack("<H", 1000), "news\n", '{"event":"E","data":"text","socket":""}'),
    b([1], struct.pack("<H", 1000), "news\n", '{"event":7}'),
    b([1], struct.pack("<H", 1000), "news\n", '{"event":"pusher:x"}'),
    b([1], struct.pack("<H", 1000), "bad channel\n", '{"event":"E"}'),
    b([1], struct.pack("<H", 10), "news\n", '{"event":"E","data":"xxxxxxxx"}'),
])

# --- cluster_wire: one Pub/Sub message (gateway/src/cluster/wire.rs tests).
write("cluster_wire", [
    '7 ep1 1700000000000 {"c":"news","e":"App\\\\E","d":{"a":[1, 2]}}',
    '8 ep1 1700000000001 {"c":"presence-a","e":"client-x","d":"{}","o":1,"u":"u1","x":"1.2"}',
    '! {"f":"{\\"event\\":\\"x\\"}","x":"1.2"}',
    "1 ep 1 nope", "x ep 1 {}", "1  1 {}",
])

# --- proxy_header: [max_len u16] then the bytes (src/proto/proxy.rs tests, the spec's examples).
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
V2_TCP4 = V2_SIG + bytes([0x21, 0x11]) + struct.pack(">H", 12) + bytes([192, 168, 0, 1, 10, 0, 0, 1]) + struct.pack(">HH", 56324, 443)
V2_TCP6 = (V2_SIG + bytes([0x21, 0x21]) + struct.pack(">H", 36) + bytes(15) + b"\x01" + bytes(15) + b"\x02"
           + struct.pack(">HH", 1, 2))
V2_LOCAL = V2_SIG + bytes([0x20, 0x00]) + struct.pack(">H", 0)
V2_TLV = V2_SIG + bytes([0x21, 0x11]) + struct.pack(">H", 19) + bytes([127, 0, 0, 2, 127, 0, 0, 1]) + struct.pack(">HH", 1, 2) + b"\x04\x00\x04abcd"
write("proxy_header", [
    b(struct.pack("<H", 512), "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\r\n"),
    b(struct.pack("<H", 512), "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
    b(struct.pack("<H", 512), "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"),
    b(struct.pack("<H", 512), "PROXY TCP4 1.2.3.4\r\n"),
    b(struct.pack("<H", 512), V2_TCP4, "GET / HTTP/1.1\r\n\r\n"),
    b(struct.pack("<H", 512), V2_TCP6),
    b(struct.pack("<H", 512), V2_LOCAL),
    b(struct.pack("<H", 512), V2_TLV),
    b(struct.pack("<H", 20), V2_TLV),
    b(struct.pack("<H", 512), V2_SIG[:7]),
])
