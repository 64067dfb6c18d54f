//! Hot path of both functions: parsing a webhook into events, and cutting queue bodies.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use relay_core::envelope::envelopes;
use relay_core::webhook::parse_webhook;
use std::hint::black_box;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("webhook");
    for name in ["text", "multi"] {
        let body = fixture(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("parse+events/{name} ({} B)", body.len()), |b| {
            b.iter(|| parse_webhook(black_box(&body)).map(|w| w.events().len()))
        });
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        g.bench_function(format!("envelope/{name} ({} B)", body.len()), |b| {
            b.iter(|| envelopes("106540352242922", 0, black_box(value.clone()), 1 << 20))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
