//! Load generator for `relay serve` (run by `infra/load.sh`, which starts the server): posts
//! TOTAL distinct webhooks (each a new message, from 1,000 customers) with CONCURRENCY
//! connections, then waits until the router has stored every one. Prints webhooks/s, the
//! answer latency percentiles and how long storing took. Not a criterion bench: one run is
//! one measurement, printed as a table for docs/performance.md.

#![allow(clippy::unwrap_used)] // a load script: a panic is the report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn body(i: usize, now: i64) -> Vec<u8> {
    let from = format!("49151{:08}", i % 1000);
    serde_json::to_vec(&serde_json::json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"4930000000","phone_number_id":"106540352242922"},
        "contacts":[{"profile":{"name":format!("Kunde {}", i % 1000)},"wa_id":from}],
        "messages":[{"from":from,"id":format!("wamid.LOAD{i:09}"),"timestamp":now.to_string(),"type":"text",
          "text":{"body":"Guten Tag, ist mein Rezept schon da? Ich komme heute Nachmittag vorbei."}}]}}]}]}))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn stored(db: &str) -> usize {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
        .unwrap_or(0) as usize
}

fn main() {
    let Ok(url) = std::env::var("RELAY_URL") else {
        eprintln!("load: set RELAY_URL (infra/load.sh starts relay serve and sets it); skipped");
        return;
    };
    let db = std::env::var("RELAY_DB").unwrap();
    let total = env("TOTAL", 20_000);
    let concurrency = env("CONCURRENCY", 64);
    let token = std::env::var("WEBHOOK_TOKEN").unwrap_or_else(|_| "load-token".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        let now = relay_core::unix_now();
        let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..total).map(|i| body(i, now)).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let endpoint = format!("{url}/webhooks/whatsapp/106540352242922");
        let before = stored(&db);
        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let (http, bodies, next, endpoint, token) = (
                    http.clone(),
                    bodies.clone(),
                    next.clone(),
                    endpoint.clone(),
                    token.clone(),
                );
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut failures = 0usize;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= bodies.len() {
                            break;
                        }
                        let t = Instant::now();
                        let status = http
                            .post(&endpoint)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(bodies[i].clone())
                            .send()
                            .await
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0);
                        latencies.push(t.elapsed());
                        if status != 200 {
                            failures += 1;
                        }
                    }
                    (latencies, failures)
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(total);
        let mut failures = 0;
        for w in workers {
            let (l, f) = w.await.unwrap();
            latencies.extend(l);
            failures += f;
        }
        let sent_in = started.elapsed();
        // Every answered webhook must end up stored: wait for the router to drain the queue.
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut count = stored(&db) - before;
        while count < total - failures && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            count = stored(&db) - before;
        }
        let all_stored_in = started.elapsed();
        latencies.sort();
        println!("| measure | value |");
        println!("|---|---|");
        println!("| webhooks sent | {total} ({concurrency} connections) |");
        println!("| answered 200 | {} |", total - failures);
        println!(
            "| webhooks/s (answered) | {:.0} |",
            total as f64 / sent_in.as_secs_f64()
        );
        println!(
            "| answer p50 | {:.2} ms |",
            percentile(&latencies, 0.50).as_secs_f64() * 1e3
        );
        println!(
            "| answer p90 | {:.2} ms |",
            percentile(&latencies, 0.90).as_secs_f64() * 1e3
        );
        println!(
            "| answer p99 | {:.2} ms |",
            percentile(&latencies, 0.99).as_secs_f64() * 1e3
        );
        println!(
            "| answer max | {:.2} ms |",
            percentile(&latencies, 1.0).as_secs_f64() * 1e3
        );
        println!("| messages stored | {count} |");
        println!(
            "| all stored after | {:.1} s ({:.0} messages/s end to end) |",
            all_stored_in.as_secs_f64(),
            count as f64 / all_stored_in.as_secs_f64()
        );
        assert_eq!(
            count,
            total - failures,
            "an answered webhook was not stored"
        );
    });
}
