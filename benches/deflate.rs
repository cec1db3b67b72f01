//! permessage-deflate: compressing and inflating one message (no context takeover, so every
//! message costs the same), at the levels a server would pick, on a 1 KiB JSON event and a
//! 16 KiB one. The compressed size is printed once per case.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fanout::proto::deflate::{Compressor, Inflater};

/// A JSON event of about `n` bytes, like a market-data update.
fn json(n: usize) -> Vec<u8> {
    let mut out = String::from(r#"{"channel":"prices","seq":123456,"data":["#);
    let mut k = 0;
    while out.len() + 80 < n {
        out.push_str(&format!(
            r#"{{"symbol":"SYM{k:03}","bid":{}.25,"ask":{}.5,"volume":{}}},"#,
            100 + k,
            101 + k,
            7919 * k
        ));
        k += 1;
    }
    out.push_str(r#"{"end":true}]}"#);
    out.into_bytes()
}

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("permessage-deflate");
    for size in [1024usize, 16 * 1024] {
        let data = json(size);
        group.throughput(Throughput::Bytes(data.len() as u64));
        for level in [1u32, 6] {
            let mut compressor = Compressor::new(level);
            let compressed = compressor.compress(&data).unwrap().to_vec();
            eprintln!("{} B JSON at level {level}: {} B compressed", data.len(), compressed.len());
            group.bench_function(format!("compress {} B, level {level}", data.len()), |b| {
                b.iter(|| compressor.compress(black_box(&data)).map(<[u8]>::len))
            });
            let mut inflater = Inflater::new();
            group.bench_function(format!("inflate {} B, level {level}", data.len()), |b| {
                b.iter(|| inflater.inflate(black_box(&compressed), 1 << 20).map(|d| d.len()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, deflate);
criterion_main!(benches);
