//! Upgrade request parse + validation + accept key + 101 response, per handshake.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fanout::proto::handshake::{accept_key, accept_response, parse_request};
use fanout::proto::{HttpLimits, Parsed, RequestStatus};

/// What a current Chromium sends, give or take the cookie.
const BROWSER_REQUEST: &[u8] = b"GET /chat?token=abc.def.ghi HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\nOrigin: http://127.0.0.1:8080\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: fanout_token=abc.def.ghi\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn handshake(c: &mut Criterion) {
    let limits = HttpLimits::default();
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse + validate + accept key + 101", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(BROWSER_REQUEST));
            match parse_request(&mut buf, &limits) {
                Ok(RequestStatus::Complete(Parsed::Upgrade(u))) => accept_response(&u.accept, None),
                _ => unreachable!(),
            }
        })
    });
    group.bench_function("accept key alone", |b| b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ=="))));
    group.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
