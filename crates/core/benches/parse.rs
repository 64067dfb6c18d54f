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
    let keys = relay_core::crypto::Keyring::in_memory(relay_core::Clock::system());
    let tenant = relay_core::ids::TenantId::parse("demo-apotheke").expect("id");
    let mut g = c.benchmark_group("webhook");
    for name in ["text", "multi"] {
        let body = fixture(name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("parse+events/{name} ({} B)", body.len()), |b| {
            b.iter(|| parse_webhook(black_box(&body)).map(|w| w.events().len()))
        });
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        g.bench_function(format!("envelope/{name} ({} B)", body.len()), |b| {
            b.iter(|| {
                envelopes(
                    "106540352242922",
                    0,
                    black_box(value.clone()),
                    1 << 20,
                    None,
                )
            })
        });
        let sealer = ready(keys.transit_sealer(&tenant, 1_800_000_000)).expect("key");
        g.bench_function(format!("envelope+seal/{name} ({} B)", body.len()), |b| {
            b.iter(|| {
                envelopes(
                    "106540352242922",
                    0,
                    black_box(value.clone()),
                    1 << 20,
                    Some((&tenant, &sealer)),
                )
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("crypto");
    let sealer = ready(keys.sealer(&tenant, "c_1", None)).expect("key");
    let text =
        "Guten Tag, ist mein Rezept für Ibuprofen 400 schon da? Viele Grüße, Erika Mustermann";
    let sealed = sealer.seal_str("message.text", text);
    g.bench_function("seal 84 B text", |b| {
        b.iter(|| sealer.seal_str("message.text", black_box(text)))
    });
    g.bench_function("open 84 B text (cached key)", |b| {
        b.iter(|| ready(keys.open(&tenant, "message.text", black_box(&sealed))))
    });
    g.finish();
}

/// Polls a future that never waits (the in-memory key store) to completion.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
