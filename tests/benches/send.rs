//! The send path: checking a reply and building its Cloud API body, and one reply through
//! reply-sender end to end (claim, pacing, HTTP to a fake 360dialog on loopback, record the
//! wamid) with the SQLite store.

use criterion::{Criterion, criterion_group, criterion_main};
use relay_core::outbound::{Recipient, ReplyRequest, message_body};
use serde_json::json;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let request = json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "Wann holen Sie ab?"},
        "action": {"buttons": [{"type": "reply", "reply": {"id": "today", "title": "Heute"}},
                               {"type": "reply", "reply": {"id": "tomorrow", "title": "Morgen"}}]}}});
    c.bench_function("reply/validate+body (interactive buttons)", |b| {
        b.iter(|| {
            let reply = serde_json::from_value::<ReplyRequest>(black_box(request.clone()))
                .expect("json")
                .validate()
                .expect("valid");
            message_body(
                &Recipient::WaId("4915112345678".into()),
                reply.kind,
                &reply.object,
                None,
            )
        })
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Pacing at the maximum channel rate so the figure is the relay's own cost per send.
    let s = rt.block_on(relay_e2e::sender_fixture::setup_with_rate(1000));
    let mut i = 0u64;
    c.bench_function(
        "send/one reply through reply-sender (SQLite, loopback fake 360dialog)",
        |b| {
            b.iter(|| {
                i += 1;
                rt.block_on(async {
                    let job = s
                        .queue_text(&format!("{i:032x}"), "Ihre Bestellung ist abholbereit.")
                        .await;
                    s.sender.process(&job, 1).await.expect("sent")
                })
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
