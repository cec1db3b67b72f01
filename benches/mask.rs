//! Unmasking, 16 B to 1 MiB: the word-at-a-time path against the byte loop from §5.3.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fanout::proto::mask::{apply_mask, apply_mask_reference};

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [16usize, 64, 256, 1024, 4096, 64 * 1024, 1024 * 1024] {
        let mut data = vec![0x5Au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("word", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut data), [0x37, 0xfa, 0x21, 0x3d], 0))
        });
        group.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| apply_mask_reference(black_box(&mut data), [0x37, 0xfa, 0x21, 0x3d], 0))
        });
    }
    group.finish();
}

criterion_group!(benches, unmask);
criterion_main!(benches);
