//! Publish to N in-memory subscribers: the topic table, the per-turn batch and one `Bytes`
//! clone into each subscriber's queue, as the reactor does at the end of a loop turn (the
//! `writev` that follows is the kernel's cost and is measured by the load tests instead).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fanout::pubsub::Topics;

const LARGE: usize = 16 * 1024;

fn publish(c: &mut Criterion) {
    let header = [0x81u8, 64];
    let payload = Bytes::from(vec![b'x'; 64]);
    let mut group = c.benchmark_group("publish_64B");
    for subscribers in [1u32, 100, 10_000, 100_000] {
        let mut topics = Topics::new();
        for m in 0..subscribers {
            topics.subscribe(m, "news", false);
        }
        // Each subscriber's queue: reused across iterations, so steady state allocates nothing.
        let mut queues: Vec<Vec<Bytes>> = (0..subscribers).map(|_| Vec::with_capacity(4)).collect();
        group.throughput(Throughput::Elements(u64::from(subscribers)));
        group.bench_with_input(BenchmarkId::new("subscribers", subscribers), &subscribers, |b, _| {
            b.iter(|| {
                topics.publish("news", &header, black_box(&payload), LARGE, || None);
                topics.deliver(|m, bytes| queues[m as usize].push(bytes.clone()));
                for q in &mut queues {
                    q.clear();
                }
            })
        });
    }
    group.finish();

    // 100 publishes in one turn reach each subscriber as one buffer.
    let mut group = c.benchmark_group("publish_64B_x100_per_turn");
    let subscribers = 10_000u32;
    let mut topics = Topics::new();
    for m in 0..subscribers {
        topics.subscribe(m, "news", false);
    }
    let mut queues: Vec<Vec<Bytes>> = (0..subscribers).map(|_| Vec::with_capacity(4)).collect();
    group.throughput(Throughput::Elements(100 * u64::from(subscribers)));
    group.bench_function("10000 subscribers", |b| {
        b.iter(|| {
            for _ in 0..100 {
                topics.publish("news", &header, black_box(&payload), LARGE, || None);
            }
            topics.deliver(|m, bytes| queues[m as usize].push(bytes.clone()));
            for q in &mut queues {
                q.clear();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
