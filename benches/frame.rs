//! Frame header decode and whole-frame decode (header + unmask + split), per frame.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fanout::proto::frame::{decode_header, encode_frame, encode_masked_frame, OpCode, Role};
use fanout::proto::{decode_frame, FrameRules, Status};

fn header_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_header");
    group.throughput(Throughput::Elements(1));
    let cases = [
        ("7-bit masked", encode_masked_frame(true, OpCode::Text, &[b'a'; 64], [1, 2, 3, 4])),
        ("16-bit masked", encode_masked_frame(true, OpCode::Binary, &[0; 1000], [1, 2, 3, 4])),
        ("64-bit masked", encode_masked_frame(true, OpCode::Binary, &[0; 70_000], [1, 2, 3, 4])),
    ];
    for (name, frame) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| match decode_header(black_box(&frame[..]), Role::Server, 0) {
                Ok(Status::Complete(h)) => h.payload_len,
                _ => unreachable!(),
            })
        });
    }
    group.finish();
}

fn frame_decode(c: &mut Criterion) {
    let rules = FrameRules { role: Role::Server, allowed_rsv: 0, max_frame_payload: 1 << 20 };
    let mut group = c.benchmark_group("decode_frame");
    for size in [64usize, 1024, 16 * 1024] {
        // 64 KiB of back-to-back frames, as one read would deliver them.
        let frame = encode_masked_frame(true, OpCode::Binary, &vec![7u8; size], [9, 8, 7, 6]);
        let count = (64 * 1024 / frame.len()).max(1);
        let mut wire = BytesMut::new();
        for _ in 0..count {
            wire.extend_from_slice(&frame);
        }
        group.throughput(Throughput::Bytes((count * size) as u64));
        group.bench_function(format!("{size} B payload x {count}"), |b| {
            b.iter(|| {
                let mut buf = wire.clone();
                let mut total = 0;
                while let Ok(Status::Complete(f)) = decode_frame(&mut buf, &rules) {
                    total += f.payload.len();
                }
                black_box(total)
            })
        });
    }
    group.finish();
}

fn frame_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_frame");
    group.throughput(Throughput::Elements(1));
    let payload = [b'x'; 64];
    group.bench_function("64 B server frame", |b| b.iter(|| encode_frame(OpCode::Text, black_box(&payload))));
    group.finish();
}

/// The receive path zeroes each 64 KiB read block once (safe code, no uninitialised reads);
/// this is that cost, paid once per block rather than once per read.
fn read_block(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_block");
    group.throughput(Throughput::Bytes(64 * 1024));
    group.bench_function("zeroed 64 KiB", |b| b.iter(|| BytesMut::zeroed(black_box(64 * 1024))));
    group.finish();
}

criterion_group!(benches, header_decode, frame_decode, frame_encode, read_block);
criterion_main!(benches);
