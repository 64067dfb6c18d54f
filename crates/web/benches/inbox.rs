//! The web inbox's conversation list with 10,000 conversations on the local (SQLite)
//! backend: criterion's estimate, plus the p99 of 500 page loads and the first page load's
//! size in bytes (sign-in page, inbox page, stylesheet, script), printed.
//!
//!   cargo bench -p relay-web --bench inbox

#![allow(clippy::unwrap_used)] // a bench: a panic is the report

use axum::body::Body;
use axum::http::{Request, header};
use criterion::{Criterion, criterion_group, criterion_main};
use relay_core::Clock;
use relay_core::config::RelayConfig;
use relay_core::ids::{Identity, TenantId};
use relay_core::ports::store_roles::*;
use relay_core::records::{ContactUpdate, Direction, StoredMessage};
use relay_core::staff::{self, Role, StaffAccount, StaffSession, StaffStore};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const CONVERSATIONS: usize = 10_000;

struct Setup {
    router: axum::Router,
    cookie: String,
    _dir: tempfile::TempDir,
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::system();
        let local = relay_embedded::Local::open(dir.path(), clock.clone()).unwrap();
        let config = RelayConfig::demo();
        let backends = local.backends(&config);
        let tenant = TenantId::parse("demo-apotheke").unwrap();
        let now = clock.now();
        let started = Instant::now();
        for i in 0..CONVERSATIONS {
            let wa_id = format!("49151{i:08}");
            let contact = local.pseudonymizer.contact_id(&tenant, Identity::WaId(&wa_id));
            let wamid = format!("wamid.BENCH{i}");
            let wamid_key = local.pseudonymizer.wamid_key(&tenant, &wamid);
            let ts = now - (i as i64) * 30;
            let message = StoredMessage {
                id: format!("m_{wamid_key}"),
                wamid,
                wamid_key,
                contact_id: contact.clone(),
                direction: Direction::Inbound,
                kind: "text".into(),
                text: Some(format!("Nachricht {i}: ist mein Rezept fertig?")),
                content: serde_json::json!({"text": {"body": format!("Nachricht {i}: ist mein Rezept fertig?")}}),
                timestamp: ts,
                received_at: ts,
                status: None,
                error: None,
                reply_to: None,
                referral: None,
                media: None,
                origin: None,
                expires_at: now + 30 * 86_400,
            };
            let update = ContactUpdate {
                contact_id: contact,
                phone_number_id: "106540352242922".into(),
                name: Some(format!("Kundin {i}")),
                wa_id: Some(wa_id),
                user_id: None,
                username: None,
                parent_user_id: None,
                last_inbound_at: ts,
                last_message_at: ts,
                unread: true,
                expires_at: now + 30 * 86_400,
                identity_keys: vec![],
            };
            backends
                .store
                .record_inbound(&tenant, &message, &update)
                .await
                .unwrap();
        }
        eprintln!(
            "{CONVERSATIONS} conversations stored in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let account = StaffAccount {
            id: staff::new_staff_id(),
            tenant: tenant.clone(),
            email: "bench@apotheke.example".into(),
            role: Role::Staff,
            password_hash: staff::decoy_hash().to_owned(),
            created_at: now,
            sessions_valid_after: 0,
        };
        local.staff.add_staff(&account).await.unwrap();
        let (token, token_hash) = staff::new_token();
        local
            .staff
            .create_session(&StaffSession {
                token_hash,
                staff_id: account.id,
                tenant,
                csrf: "bench".into(),
                created_at: now,
                last_seen: now,
                expires_at: now + 86_400,
            })
            .await
            .unwrap();
        let web = relay_web::Web::build(&backends, relay_web::WebSettings::default()).unwrap();
        Setup {
            router: relay_web::router(web),
            cookie: format!("relay_session={token}"),
            _dir: dir,
        }
    })
}

async fn get(s: &Setup, path: &str) -> usize {
    let mut req = Request::get(path);
    // The sign-in page is what a browser without a session sees.
    if path != "/login" {
        req = req.header(header::COOKIE, &s.cookie);
    }
    let req = req.body(Body::empty()).unwrap();
    let resp = s.router.clone().oneshot(req).await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .len()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = setup(&rt);

    let mut times: Vec<Duration> = rt.block_on(async {
        let mut times = Vec::new();
        for _ in 0..500 {
            let t = Instant::now();
            get(&s, "/inbox").await;
            times.push(t.elapsed());
        }
        times
    });
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    eprintln!(
        "conversation list, {CONVERSATIONS} conversations: p50 {:.2} ms, p99 {:.2} ms (500 loads)",
        p(0.50).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3
    );
    let bytes: Vec<(&str, usize)> = rt.block_on(async {
        let mut v = Vec::new();
        for path in ["/login", "/inbox", "/assets/app.css", "/assets/app.js"] {
            v.push((path, get(&s, path).await));
        }
        v
    });
    let total: usize = bytes.iter().map(|(_, n)| n).sum();
    eprintln!("first page load: {total} bytes uncompressed ({bytes:?})");

    c.bench_function("web inbox: conversation list, 10,000 conversations", |b| {
        b.iter(|| rt.block_on(get(&s, "/inbox")))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
