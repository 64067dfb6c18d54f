//! Load generator for `relay serve` (run by `infra/load.sh`, which starts the server): posts
//! TOTAL distinct webhooks (each a new message, from 1,000 customers) with CONCURRENCY
//! connections, then waits until the router has stored every one. Prints webhooks/s, the
//! answer latency percentiles and how long storing took; then a burst of REPLIES (1,000)
//! replies through the inbox API, drained by reply-sender to a fake 360dialog. Not a criterion
//! bench: one run is one measurement, printed as tables for docs/performance.md.

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
        let now = relay_core::Clock::system().now();
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
        let replies = env("REPLIES", 1000);
        if replies > 0 {
            reply_burst(&http, &url, replies, concurrency).await;
        }
    });
}

/// A burst of `n` replies through the inbox API, spread over the conversations, then drained
/// by reply-sender to the fake 360dialog (`FAKE_PORT`, started here; infra/load.sh points the
/// channel at it with a sending rate of `SEND_RATE`).
async fn reply_burst(http: &reqwest::Client, url: &str, n: usize, concurrency: usize) {
    let port: u16 = std::env::var("FAKE_PORT").unwrap().parse().unwrap();
    let fake = relay_e2e::fake::Fake::start_at(port).await;
    let api_key = std::env::var("API_KEY").unwrap();
    let mut contacts = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page: serde_json::Value = http
            .get(match &cursor {
                Some(c) => format!("{url}/v1/conversations?limit=100&cursor={c}"),
                None => format!("{url}/v1/conversations?limit=100"),
            })
            .bearer_auth(&api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for c in page["conversations"].as_array().unwrap() {
            contacts.push(c["contact_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let contacts = Arc::new(contacts);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, contacts, next, url, api_key) = (
                http.clone(),
                contacts.clone(),
                next.clone(),
                url.to_owned(),
                api_key.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return latencies;
                    }
                    let contact = &contacts[i % contacts.len()];
                    let t = Instant::now();
                    let status = http
                        .post(format!("{url}/v1/conversations/{contact}/messages"))
                        .bearer_auth(&api_key)
                        .json(&serde_json::json!({"type": "text", "text": format!("Ihre Bestellung {i} ist abholbereit.")}))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    assert_eq!(status, 202, "reply {i} was not accepted");
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let accepted_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while fake.requests().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_in = started.elapsed();
    let sent = fake.requests().len();
    latencies.sort();
    println!("| reply burst | value |");
    println!("|---|---|");
    println!(
        "| replies accepted (202) | {n} in {:.2} s ({:.0}/s) |",
        accepted_in.as_secs_f64(),
        n as f64 / accepted_in.as_secs_f64()
    );
    println!(
        "| answer p50 / p99 | {:.2} ms / {:.2} ms |",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "| sent to 360dialog (fake) | {sent} after {:.2} s ({:.0}/s, channel rate {}) |",
        drained_in.as_secs_f64(),
        sent as f64 / drained_in.as_secs_f64(),
        std::env::var("SEND_RATE").unwrap_or_default()
    );
    println!("| 429 answers | {} |", fake.rejected());
    assert_eq!(sent, n, "a reply was not sent");
}
