//! The inbox API over the SQLite store: authentication, tenant isolation, pagination,
//! problems, and agreement with openapi.json.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use axum::body::Body;
use axum::http::{Request, StatusCode};
use inbox_api::{Inbox, OPENAPI, ROUTES, router};
use relay_core::Clock;
use relay_core::config::RelayConfig;
use relay_core::crypto::{Keyring, LocalKeyWrapper};
use relay_core::directory::StaticDirectory;
use relay_core::ids::Pseudonymizer;
use relay_core::ports::AuditLog;
use relay_core::ports::store_roles::*;
use relay_core::privacy::Privacy;
use relay_core::routing::Router;
use relay_core::sealed::SealedStore;
use relay_embedded::{Database, SqliteAuditLog, SqliteKeyStore, SqliteMessageStore};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tower::ServiceExt;

const NOW: i64 = 1_764_400_000;
/// Uploads: WhatsApp's limits per type alone, as locally.
const UPLOAD_MAX: Option<usize> = None;

const CONFIG: &str = r#"
[[tenants]]
id = "apotheke-a"
name = "A"
api_keys = ["sk_test_aaaaaaaaaaaaaaaa"]
forward_url = "https://pms.example/hooks/whatsapp"
forward_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[tenants.notifications.pickup_ready]
template = "abholbereit"
language = "de"
params = ["{reference}"]
remind_after_days = 3
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok-a"

[[tenants]]
id = "apotheke-b"
name = "B"
api_keys = ["sk_test_bbbbbbbbbbbbbbbb"]
[[tenants.channels]]
phone_number_id = "222"
provider = "360dialog"
webhook_token = "tok-b"
"#;

const KEY_A: &str = "Bearer sk_test_aaaaaaaaaaaaaaaa";
const KEY_B: &str = "Bearer sk_test_bbbbbbbbbbbbbbbb";

fn text_webhook(pnid: &str, from: &str, name: &str, wamid: &str, ts: i64, body: &str) -> Value {
    json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"49301","phone_number_id":pnid},
        "contacts":[{"profile":{"name":name},"wa_id":from}],
        "messages":[{"from":from,"id":wamid,"timestamp":ts.to_string(),"type":"text","text":{"body":body}}]}}]}]})
}

/// Records the jobs the API hands to reply-sender.
#[derive(Default)]
struct Jobs(std::sync::Mutex<Vec<relay_core::jobs::Job>>);

#[async_trait::async_trait]
impl relay_core::ports::OutboundQueue for Jobs {
    async fn enqueue_jobs(
        &self,
        jobs: &[relay_core::jobs::Job],
    ) -> Result<(), relay_core::ports::QueueError> {
        self.0.lock().unwrap().extend(jobs.iter().cloned());
        Ok(())
    }
}

async fn setup() -> axum::Router {
    setup_full().await.0
}

async fn setup_full() -> (axum::Router, Arc<Jobs>, Arc<SealedStore>) {
    let f = fixture().await;
    (f.app, f.jobs, f.store)
}

struct Fixture {
    app: axum::Router,
    jobs: Arc<Jobs>,
    store: Arc<SealedStore>,
    /// The same data without opening: what the database holds.
    raw: Arc<SqliteMessageStore>,
    keys: Arc<Keyring>,
    router: Router,
    audit: Arc<SqliteAuditLog>,
    db: Database,
    blobs: relay_core::media::MemoryBlobStore,
    /// The fixture's clock (Unix seconds).
    now: Arc<AtomicI64>,
    directory: Arc<StaticDirectory>,
}

async fn fixture() -> Fixture {
    let config = RelayConfig::parse(CONFIG, &|_| None).unwrap();
    let directory = Arc::new(StaticDirectory::from_config(&config));
    // One clock for the whole fixture, standing at NOW unless a test moves it.
    let now = Arc::new(AtomicI64::new(NOW));
    let clock = {
        let now = now.clone();
        Clock::from_millis_fn(move || now.load(Ordering::Relaxed) * 1000)
    };
    let db = Database::in_memory(clock.clone());
    let keys = Arc::new(Keyring::new(
        Arc::new(SqliteKeyStore::new(db.clone())),
        Arc::new(LocalKeyWrapper::new([3; 32])),
        clock.clone(),
    ));
    let raw = Arc::new(SqliteMessageStore::new(db.clone()));
    let blobs = relay_core::media::MemoryBlobStore::default();
    let store = Arc::new(SealedStore::new(raw.clone(), keys.clone()));
    let pseudonymizer = Arc::new(Pseudonymizer::new([1; 32]));
    let r = Router::new(
        store.clone(),
        directory.clone(),
        pseudonymizer.clone(),
        keys.clone(),
    );
    // Tenant A: 3 customers, the first with 5 messages. Tenant B: 1 customer.
    for i in 0..3 {
        for j in 0..(if i == 0 { 5 } else { 1 }) {
            let w = text_webhook(
                "111",
                &format!("4915100000{i}"),
                &format!("Kunde {i}"),
                &format!("wamid.A{i}{j}"),
                NOW - 1000 + i * 10 + j,
                &format!("Nachricht {i}/{j}"),
            );
            let b = relay_core::envelope::envelopes("111", 0, w, 1 << 20, None)
                .unwrap()
                .remove(0);
            r.route(&b).await.unwrap();
        }
    }
    let w = text_webhook(
        "222",
        "4917000000",
        "Kundin B",
        "wamid.B0",
        NOW - 500,
        "Geheim B",
    );
    r.route(
        &relay_core::envelope::envelopes("222", 0, w, 1 << 20, None)
            .unwrap()
            .remove(0),
    )
    .await
    .unwrap();
    // A customer of A who last wrote two days ago: the service window is closed.
    let w = text_webhook(
        "111",
        "4915199999999",
        "Alter Kunde",
        "wamid.OLD",
        NOW - 2 * 86_400,
        "Vor zwei Tagen",
    );
    r.route(
        &relay_core::envelope::envelopes("111", 0, w, 1 << 20, None)
            .unwrap()
            .remove(0),
    )
    .await
    .unwrap();
    let jobs = Arc::new(Jobs::default());
    let audit = Arc::new(SqliteAuditLog::new(db.clone()));
    let app = router(Inbox {
        directory: directory.clone(),
        store: store.clone(),
        outbound: jobs.clone(),
        privacy: Privacy {
            store: store.clone(),
            keys: keys.clone(),
            pseudonymizer,
            blobs: Arc::new(blobs.clone()),
        },
        blobs: Arc::new(blobs.clone()),
        max_media_response_bytes: None,
        max_upload_bytes: UPLOAD_MAX,
        templates: None,
        usage: None,
        audit: audit.clone(),
        audit_retention_secs: 365 * 86_400,
        clock,
    })
    .fallback(relay_http::not_found);
    Fixture {
        app,
        jobs,
        store,
        raw,
        keys,
        router: r,
        audit,
        db,
        blobs,
        now,
        directory,
    }
}

async fn get(app: &axum::Router, uri: &str, auth: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::get(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn conversations_are_listed_with_window_and_unread() {
    let app = setup().await;
    let (status, body) = get(&app, "/v1/conversations", Some(KEY_A)).await;
    assert_eq!(status, StatusCode::OK);
    let convs = body["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 4);
    assert_eq!(convs[0]["name"], "Kunde 2", "most recent activity first");
    let first = convs.iter().find(|c| c["name"] == "Kunde 0").unwrap();
    assert_eq!(first["unread"], 5);
    assert_eq!(
        first["window_expires_at"],
        first["last_message_at"].as_i64().unwrap() + 86_400
    );
    assert!(body["next_cursor"].is_null());
}

#[tokio::test]
async fn a_key_sees_only_its_own_tenant() {
    let app = setup().await;
    let (_, a) = get(&app, "/v1/conversations", Some(KEY_A)).await;
    let (_, b) = get(&app, "/v1/conversations", Some(KEY_B)).await;
    let b_convs = b["conversations"].as_array().unwrap();
    assert_eq!(b_convs.len(), 1);
    assert_eq!(b_convs[0]["name"], "Kundin B");
    let a_contact = a["conversations"][0]["contact_id"].as_str().unwrap();
    let b_contact = b_convs[0]["contact_id"].as_str().unwrap();
    // Another tenant's contact id is "not found", not "forbidden": nothing leaks.
    let (status, body) = get(
        &app,
        &format!("/v1/conversations/{a_contact}/messages"),
        Some(KEY_B),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.to_string().contains("Nachricht"));
    let (status, body) = get(
        &app,
        &format!("/v1/conversations/{b_contact}/messages"),
        Some(KEY_B),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["messages"][0]["text"], "Geheim B");
    // A cursor from tenant A's listing does not open tenant B's data (or vice versa).
    let (_, page) = get(&app, "/v1/conversations?limit=1", Some(KEY_A)).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, body) = get(
        &app,
        &format!("/v1/conversations?cursor={cursor}"),
        Some(KEY_B),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] == "Kundin B")
    );
}

#[tokio::test]
async fn messages_paginate_newest_first_without_gaps() {
    let app = setup().await;
    let (_, convs) = get(&app, "/v1/conversations", Some(KEY_A)).await;
    let contact = convs["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Kunde 0")
        .unwrap()["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut texts = Vec::new();
    let mut uri = format!("/v1/conversations/{contact}/messages?limit=2");
    loop {
        let (status, page) = get(&app, &uri, Some(KEY_A)).await;
        assert_eq!(status, StatusCode::OK);
        for m in page["messages"].as_array().unwrap() {
            assert_eq!(m["direction"], "inbound");
            assert_eq!(m["type"], "text");
            assert!(m["wamid"].as_str().unwrap().starts_with("wamid."));
            texts.push(m["text"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/conversations/{contact}/messages?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        texts,
        [
            "Nachricht 0/4",
            "Nachricht 0/3",
            "Nachricht 0/2",
            "Nachricht 0/1",
            "Nachricht 0/0"
        ]
    );
}

#[tokio::test]
async fn problems_for_bad_requests() {
    let app = setup().await;
    let cases = [
        (
            "/v1/conversations",
            None,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/v1/conversations",
            Some("Bearer sk_wrong_key_000000000"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/v1/conversations",
            Some("Basic abc"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/v1/conversations?limit=0",
            Some(KEY_A),
            StatusCode::BAD_REQUEST,
            "bad-query",
        ),
        (
            "/v1/conversations?limit=201",
            Some(KEY_A),
            StatusCode::BAD_REQUEST,
            "bad-query",
        ),
        (
            "/v1/conversations?limit=abc",
            Some(KEY_A),
            StatusCode::BAD_REQUEST,
            "bad-query",
        ),
        (
            "/v1/conversations?cursor=%27%20OR%201%3D1",
            Some(KEY_A),
            StatusCode::BAD_REQUEST,
            "bad-query",
        ),
        (
            "/v1/conversations/..%2F..%2Fetc/messages",
            Some(KEY_A),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "/v1/conversations/c_00000000000000000000000000000000/messages",
            Some(KEY_A),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "/v1/nothing-here",
            Some(KEY_A),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
    ];
    for (uri, auth, want, slug) in cases {
        let (status, body) = get(&app, uri, auth).await;
        assert_eq!(status, want, "{uri}");
        assert_eq!(body["type"], format!("urn:relay:problem:{slug}"), "{uri}");
    }
    let (status, body) = get(&app, "/healthz", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(
        documented, served,
        "openapi.json and ROUTES list the same operations"
    );

    // And the router really serves each of them (a route that is missing answers the 404
    // fallback problem; an existing one answers 200, 401 or a 404 of its own).
    let app = setup().await;
    for (method, path) in &served {
        let uri = path.replace("{contact_id}", "c_00000000000000000000000000000000");
        let (status, body) = if method == "GET" {
            get(&app, &uri, Some(KEY_A)).await
        } else if method == "DELETE" {
            delete(&app, &uri, Some(KEY_A)).await
        } else {
            post(
                &app,
                &uri,
                Some(KEY_A),
                json!({"type": "text", "text": "x"}),
                &[],
            )
            .await
        };
        let unrouted = body["title"] == "No such resource";
        assert!(
            !unrouted,
            "{method} {path} is documented but not routed (status {status})"
        );
    }
}

async fn post(
    app: &axum::Router,
    uri: &str,
    auth: Option<&str>,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::post(uri).header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn contact_named(app: &axum::Router, key: &str, name: &str) -> String {
    let (_, convs) = get(app, "/v1/conversations", Some(key)).await;
    convs["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["contact_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_reply_is_queued_stored_and_handed_to_the_sender() {
    let (app, jobs, _) = setup_full().await;
    let c = contact_named(&app, KEY_A, "Kunde 0").await;
    let uri = format!("/v1/conversations/{c}/messages");
    let (status, body) = post(
        &app,
        &uri,
        Some(KEY_A),
        json!({"type": "text", "text": "Ihr Ibuprofen ist da."}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().unwrap().to_owned();
    let (_, msgs) = get(&app, &uri, Some(KEY_A)).await;
    let first = &msgs["messages"][0];
    assert_eq!(
        (
            first["id"].as_str(),
            first["direction"].as_str(),
            first["status"].as_str()
        ),
        (Some(id.as_str()), Some("outbound"), Some("queued"))
    );
    assert_eq!(first["text"], "Ihr Ibuprofen ist da.");
    let jobs = jobs.0.lock().unwrap().clone();
    assert!(
        matches!(&jobs[..], [relay_core::jobs::Job::Send { message_key, .. }] if format!("m_{message_key}") == id)
    );
}

#[tokio::test]
async fn idempotency_keys_answer_the_same_and_send_once() {
    let (app, jobs, _) = setup_full().await;
    let c = contact_named(&app, KEY_A, "Kunde 1").await;
    let uri = format!("/v1/conversations/{c}/messages");
    let body = json!({"type": "text", "text": "Einmal bitte"});
    let (s1, a) = post(
        &app,
        &uri,
        Some(KEY_A),
        body.clone(),
        &[("idempotency-key", "order-42")],
    )
    .await;
    let (s2, b) = post(
        &app,
        &uri,
        Some(KEY_A),
        body.clone(),
        &[("idempotency-key", "order-42")],
    )
    .await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(a["id"], b["id"], "same key, same answer");
    let (_, msgs) = get(&app, &uri, Some(KEY_A)).await;
    let outbound = msgs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "outbound")
        .count();
    assert_eq!(outbound, 1, "one message stored");
    // Each answer hands the job on again; reply-sender's claim makes the twin a no-op.
    assert_eq!(jobs.0.lock().unwrap().len(), 2);
    let (status, p) = post(
        &app,
        &uri,
        Some(KEY_A),
        json!({"type": "text", "text": "Etwas anderes"}),
        &[("idempotency-key", "order-42")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["type"], "urn:relay:problem:idempotency-key-reused");
}

#[tokio::test]
async fn refused_replies_say_why_and_queue_nothing() {
    let (app, jobs, store) = setup_full().await;
    let open = contact_named(&app, KEY_A, "Kunde 0").await;
    let closed = contact_named(&app, KEY_A, "Alter Kunde").await;
    let other_tenant = contact_named(&app, KEY_B, "Kundin B").await;
    let at = |c: &str| format!("/v1/conversations/{c}/messages");

    let (status, p) = post(
        &app,
        &at(&closed),
        Some(KEY_A),
        json!({"type": "text", "text": "Hallo?"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["type"], "urn:relay:problem:window-closed");
    assert_eq!(
        p["window_closed_at"],
        NOW - 2 * 86_400 + 86_400,
        "says when it closed"
    );

    let cases = [
        (
            at(&open),
            json!({"type": "text", "text": "x".repeat(4097)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "text-too-long",
        ),
        (
            at(&open),
            json!({"type": "interactive", "interactive": {"type": "button", "body": {"text": "?"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "Viel zu langer Buttontitel"}}]}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-interactive",
        ),
        (
            at(&open),
            json!({"type": "fax", "text": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-message",
        ),
        (
            // An E-Rezept token is never sent out over WhatsApp.
            at(&open),
            json!({"type": "text", "text": "Ihr Token: Task/160.123.456.789.123.58/$accept?ac=777bea0e13cc9c42ceec14aec3ddee2263325dc2c6c699db115f58fe423607ea"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "prescription-token",
        ),
        (
            at(&open),
            json!({"type": "text", "text": "x", "reply_to": "m_00000000000000000000000000000000"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-message",
        ),
        (
            at(&other_tenant),
            json!({"type": "text", "text": "x"}),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            at("c_00000000000000000000000000000000"),
            json!({"type": "text", "text": "x"}),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
    ];
    for (uri, body, want, slug) in cases {
        let (status, p) = post(&app, &uri, Some(KEY_A), body, &[]).await;
        assert_eq!(status, want, "{slug}");
        assert_eq!(p["type"], format!("urn:relay:problem:{slug}"));
    }
    // Opted out: refused, templates too.
    let c = relay_core::ids::ContactId::parse(&open).unwrap();
    let entry = relay_core::records::ConsentEntry {
        key: "stop-1".into(),
        event: relay_core::records::ConsentEvent::OptedOut,
        at: NOW,
        source: "test".into(),
        expires_at: NOW + 86_400,
    };
    relay_core::ports::InboundLog::record_consent(
        store.as_ref(),
        &relay_core::ids::TenantId::parse("apotheke-a").unwrap(),
        &c,
        &entry,
    )
    .await
    .unwrap();
    for body in [
        json!({"type": "text", "text": "x"}),
        json!({"type": "template", "template": {"name": "abholbereit", "language": "de"}}),
    ] {
        let (status, p) = post(&app, &at(&open), Some(KEY_A), body, &[]).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(p["type"], "urn:relay:problem:opted-out");
    }
    assert!(jobs.0.lock().unwrap().is_empty(), "nothing was queued");

    // A template may go out after the window closed.
    let (status, _) = post(
        &app,
        &at(&closed),
        Some(KEY_A),
        json!({"type": "template", "template": {"name": "abholbereit", "language": "de"}}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn replies_can_quote_a_message_of_the_conversation() {
    let (app, _, store) = setup_full().await;
    let c = contact_named(&app, KEY_A, "Kunde 0").await;
    let uri = format!("/v1/conversations/{c}/messages");
    let (_, msgs) = get(&app, &uri, Some(KEY_A)).await;
    let inbound = msgs["messages"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = post(
        &app,
        &uri,
        Some(KEY_A),
        json!({"type": "text", "text": "Gern!", "reply_to": inbound}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let key = body["id"]
        .as_str()
        .unwrap()
        .trim_start_matches("m_")
        .to_owned();
    let stored = store
        .message_by_wamid(
            &relay_core::ids::TenantId::parse("apotheke-a").unwrap(),
            &key,
            NOW,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.reply_to.as_deref(),
        Some("wamid.A04"),
        "sent as context with the quoted wamid"
    );
}

#[tokio::test]
async fn marking_read_clears_unread_and_sends_a_read_receipt() {
    let (app, jobs, _) = setup_full().await;
    let c = contact_named(&app, KEY_A, "Kunde 0").await;
    let (status, body) = post(
        &app,
        &format!("/v1/conversations/{c}/read"),
        Some(KEY_A),
        json!({}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["unread"], 0);
    let (_, convs) = get(&app, "/v1/conversations", Some(KEY_A)).await;
    let conv = convs["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["contact_id"] == c.as_str())
        .unwrap()
        .clone();
    assert_eq!(conv["unread"], 0);
    let jobs = jobs.0.lock().unwrap().clone();
    assert!(
        matches!(&jobs[..], [relay_core::jobs::Job::MarkRead { .. }]),
        "{jobs:?}"
    );
    let (status, _) = post(
        &app,
        "/v1/conversations/c_00000000000000000000000000000000/read",
        Some(KEY_A),
        json!({}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn delete(app: &axum::Router, uri: &str, auth: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::delete(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_database_holds_no_personal_data_in_plaintext() {
    let f = fixture().await;
    let c = contact_named(&f.app, KEY_A, "Kunde 0").await;
    let (status, _) = post(
        &f.app,
        &format!("/v1/conversations/{c}/messages"),
        Some(KEY_A),
        json!({"type": "text", "text": "Ihr Ibuprofen liegt bereit"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let dump = f.db.dump_values().unwrap();
    for personal in [
        "Kunde 0",
        "Kundin B",
        "4915100000",
        "4917000000",
        "Nachricht 0/",
        "Geheim B",
        "Ibuprofen",
        "wamid.A",
    ] {
        assert!(
            !dump.contains(personal),
            "{personal:?} is readable in the database"
        );
    }
    // The API still reads it all.
    let (_, body) = get(
        &f.app,
        &format!("/v1/conversations/{c}/messages"),
        Some(KEY_A),
    )
    .await;
    let texts: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&"Ihr Ibuprofen liegt bereit"));
    assert!(texts.contains(&"Nachricht 0/4"));
}

#[tokio::test]
async fn export_has_everything_decrypted_and_is_audited() {
    let f = fixture().await;
    let c = contact_named(&f.app, KEY_A, "Kunde 0").await;
    post(
        &f.app,
        &format!("/v1/conversations/{c}/messages"),
        Some(KEY_A),
        json!({"type": "text", "text": "Antwort"}),
        &[],
    )
    .await;
    let (status, doc) = get(&f.app, &format!("/v1/contacts/{c}/export"), Some(KEY_A)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["format"], "relay.contact-export.v1");
    assert_eq!(doc["contact"]["contact_id"], c.as_str());
    assert_eq!(doc["contact"]["name"], "Kunde 0");
    assert_eq!(doc["contact"]["wa_id"], "49151000000");
    let messages = doc["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 6, "five inbound, one reply");
    assert_eq!(messages[0]["text"], "Nachricht 0/0", "oldest first");
    assert_eq!(messages[0]["wamid"], "wamid.A00");
    assert!(
        messages
            .iter()
            .any(|m| m["text"] == "Antwort" && m["direction"] == "outbound")
    );
    assert!(messages.iter().all(|m| m["statuses"].is_array()));
    let consent = doc["consent"].as_array().unwrap();
    assert_eq!(
        consent.len(),
        1,
        "the first message starts the ledger, once"
    );
    assert_eq!(consent[0]["event"], "conversation_started");
    assert_eq!(
        consent[0]["source"],
        format!("message:{}", messages[0]["id"].as_str().unwrap())
    );

    // Another tenant's key sees nothing of it.
    let (status, _) = get(&f.app, &format!("/v1/contacts/{c}/export"), Some(KEY_B)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&f.app, &format!("/v1/contacts/{c}/export"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let log = f.audit.list(None, 100, NOW).await.unwrap();
    let actions: Vec<(&str, &str, Option<&str>, u16)> = log
        .iter()
        .map(|e| {
            (
                e.tenant.as_str(),
                e.action.as_str(),
                e.target.as_deref(),
                e.result,
            )
        })
        .collect();
    assert!(actions.contains(&("apotheke-a", "contact.export", Some(c.as_str()), 200)));
    assert!(actions.contains(&("apotheke-a", "reply.create", Some(c.as_str()), 202)));
    assert!(actions.contains(&("apotheke-b", "contact.export", Some(c.as_str()), 404)));
    assert!(
        !log.iter().any(|e| e.result == 401),
        "unauthenticated calls read nothing and name no tenant"
    );
    let actor = &log
        .iter()
        .find(|e| e.action == "contact.export")
        .unwrap()
        .actor;
    assert!(actor.starts_with("api-key:") && actor.len() == "api-key:".len() + 12);
    assert!(!actor.contains("sk_test"), "the key itself is never logged");
}

#[tokio::test]
async fn erasure_deletes_everything_shreds_the_key_and_is_idempotent() {
    let f = fixture().await;
    let c = contact_named(&f.app, KEY_A, "Kunde 0").await;
    let contact = relay_core::ids::ContactId::parse(&c).unwrap();
    let tenant = relay_core::ids::TenantId::parse("apotheke-a").unwrap();
    post(
        &f.app,
        &format!("/v1/conversations/{c}/messages"),
        Some(KEY_A),
        json!({"type": "text", "text": "Antwort"}),
        &[("idempotency-key", "erase-test-1")],
    )
    .await;
    // A copy of a sealed message as a backup would hold it.
    let backup = f
        .raw
        .list_messages(
            &tenant,
            &contact,
            &relay_core::records::PageRequest::first(1),
            NOW,
        )
        .await
        .unwrap()
        .items
        .remove(0);
    let sealed_text = backup.text.clone().unwrap();
    assert!(sealed_text.starts_with("s1."));

    // Another tenant cannot erase it.
    let (status, receipt) = delete(&f.app, &format!("/v1/contacts/{c}"), Some(KEY_B)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receipt["key_destroyed"], false);
    assert!(
        receipt["deleted"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == 0)
    );

    let (status, receipt) = delete(&f.app, &format!("/v1/contacts/{c}"), Some(KEY_A)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receipt["contact_id"], c.as_str());
    assert_eq!(receipt["erased_at"], NOW);
    assert_eq!(receipt["key_destroyed"], true);
    let d = &receipt["deleted"];
    assert_eq!(d["profile"], 1);
    assert_eq!(d["messages"], 6);
    assert_eq!(d["consent_entries"], 1);
    assert_eq!(d["identities"], 1);
    assert_eq!(d["index_items"], 1, "the idempotency key");

    // Gone from every read, and from the database.
    assert!(
        get(
            &f.app,
            &format!("/v1/conversations/{c}/messages"),
            Some(KEY_A)
        )
        .await
        .0 == StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&f.app, &format!("/v1/contacts/{c}/export"), Some(KEY_A))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = get(&f.app, "/v1/conversations", Some(KEY_A)).await;
    assert!(
        !list["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["contact_id"] == c.as_str())
    );
    // Only the audit log names the contact still (pseudonymously: proof of the erasure).
    let audit_rows = f.db.dump_values().unwrap().matches(c.as_str()).count();
    let audit_entries = f
        .audit
        .list(None, 100, NOW)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.target.as_deref() == Some(c.as_str()))
        .count();
    assert_eq!(
        audit_rows, audit_entries,
        "a row outside the audit log still names the contact"
    );
    // The backup copy no longer opens: its key is gone.
    assert!(matches!(
        f.keys.open(&tenant, "message.text", &sealed_text).await,
        Err(relay_core::crypto::CryptoError::Destroyed)
    ));
    // Other customers are untouched.
    let (_, list) = get(&f.app, "/v1/conversations", Some(KEY_A)).await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 3);

    // Again: nothing left to do, same answer shape.
    let (status, again) = delete(&f.app, &format!("/v1/contacts/{c}"), Some(KEY_A)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["key_destroyed"], false);
    assert!(
        again["deleted"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == 0)
    );

    // The customer writes again: a new contact (same pseudonymous id), with only the new message.
    let w = text_webhook(
        "111",
        "49151000000",
        "Kunde 0",
        "wamid.NEW",
        NOW - 1,
        "Neu hier",
    );
    f.router
        .route(
            &relay_core::envelope::envelopes("111", 0, w, 1 << 20, None)
                .unwrap()
                .remove(0),
        )
        .await
        .unwrap();
    let (_, doc) = get(&f.app, &format!("/v1/contacts/{c}/export"), Some(KEY_A)).await;
    let texts: Vec<&str> = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Neu hier"]);
    assert!(
        f.keys
            .open(&tenant, "message.text", &sealed_text)
            .await
            .is_err()
    );

    let log = f.audit.list(Some(&tenant), 100, NOW).await.unwrap();
    assert_eq!(
        log.iter().filter(|e| e.action == "contact.erase").count(),
        2
    );
}

#[tokio::test]
async fn the_audit_log_is_append_only() {
    let f = fixture().await;
    get(&f.app, "/v1/conversations", Some(KEY_A)).await;
    assert_eq!(f.audit.list(None, 10, NOW).await.unwrap().len(), 1);
    assert!(f.db.execute("UPDATE audit SET action = 'nothing'").is_err());
    // Kept until it expires on the relay's clock (the one that stamped it), whatever the
    // date on the machine running this.
    assert!(f.db.execute("DELETE FROM audit").is_err());
    let e = &f.audit.list(None, 10, NOW).await.unwrap()[0];
    assert_eq!(e.action, "conversations.list");
    assert_eq!(e.target, None);
    // The health check touches no personal data: not audited.
    get(&f.app, "/healthz", None).await;
    assert_eq!(f.audit.list(None, 10, NOW).await.unwrap().len(), 1);

    // Retention is 365 days: a second before, still refused; from then on, deletable.
    f.now.store(NOW + 365 * 86_400 - 1, Ordering::Relaxed);
    assert!(f.db.execute("DELETE FROM audit").is_err(), "a second early");
    assert!(f.db.execute("UPDATE audit SET action = 'nothing'").is_err());
    f.now.store(NOW + 365 * 86_400, Ordering::Relaxed);
    assert_eq!(f.db.execute("DELETE FROM audit").unwrap(), 1);
}

#[tokio::test]
async fn an_erasure_interrupted_after_the_key_is_finished_by_a_rerun() {
    let f = fixture().await;
    let c = contact_named(&f.app, KEY_A, "Kunde 1").await;
    let contact = relay_core::ids::ContactId::parse(&c).unwrap();
    let tenant = relay_core::ids::TenantId::parse("apotheke-a").unwrap();
    // The first run crashed right after destroying the key: the items are still there, sealed.
    assert!(f.keys.destroy(&tenant, contact.as_str()).await.unwrap());
    assert!(
        f.raw
            .contact(&tenant, &contact, NOW)
            .await
            .unwrap()
            .is_some()
    );
    // Reads meanwhile show nothing readable of it (names come back empty, messages are left out).
    let (_, body) = get(
        &f.app,
        &format!("/v1/conversations/{c}/messages"),
        Some(KEY_A),
    )
    .await;
    assert_eq!(body["messages"], json!([]));

    let (status, receipt) = delete(&f.app, &format!("/v1/contacts/{c}"), Some(KEY_A)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receipt["key_destroyed"], false, "it was gone already");
    assert_eq!(receipt["deleted"]["messages"], 1);
    assert_eq!(receipt["deleted"]["profile"], 1);
    assert_eq!(
        receipt["deleted"]["identities"], 1,
        "found through the profile although its ids no longer open"
    );
    assert!(
        f.raw
            .contact(&tenant, &contact, NOW)
            .await
            .unwrap()
            .is_none()
    );
}

async fn get_raw(
    app: &axum::Router,
    uri: &str,
    auth: &str,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app
        .clone()
        .oneshot(
            Request::get(uri)
                .header("authorization", auth)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, bytes.to_vec())
}

#[tokio::test]
async fn media_is_served_to_its_tenant_only_once_available() {
    use relay_core::media::{FileSealer, MediaInfo, MediaStatus, object_key};
    let f = fixture().await;
    let tenant = relay_core::ids::TenantId::parse("apotheke-a").unwrap();
    let w = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Kunde 0"},"wa_id":"49151000000"}],
        "messages":[{"from":"49151000000","id":"wamid.DOC1","timestamp":(NOW - 5).to_string(),"type":"document",
          "document":{"id":"WAMEDIA1","mime_type":"application/pdf","sha256":"x","filename":"Rezept März.pdf"}}]}}]}]});
    f.router
        .route(
            &relay_core::envelope::envelopes("111", 0, w, 1 << 20, None)
                .unwrap()
                .remove(0),
        )
        .await
        .unwrap();
    let c = contact_named(&f.app, KEY_A, "Kunde 0").await;
    let (_, body) = get(
        &f.app,
        &format!("/v1/conversations/{c}/messages?limit=1"),
        Some(KEY_A),
    )
    .await;
    let m = &body["messages"][0];
    assert_eq!(m["media"]["status"], "pending");
    let media_id = m["media"]["id"].as_str().unwrap().to_owned();
    let uri = format!("/v1/media/{media_id}");
    let (status, headers, _) = get_raw(&f.app, &uri, KEY_A).await;
    assert_eq!(status, StatusCode::CONFLICT, "still being fetched");
    assert_eq!(headers.get("retry-after").unwrap(), "5");

    // What reply-sender does once the file is fetched: seal it, store it, mark it available.
    let contact = relay_core::ids::ContactId::parse(&c).unwrap();
    let pdf = b"%PDF-1.7 Rezept: Ibuprofen 600".repeat(5000);
    let sealer = f
        .keys
        .contact_sealer(&tenant, &contact, NOW + 86_400)
        .await
        .unwrap();
    let mut file = FileSealer::new(sealer, &media_id);
    let mut sealed = file.update(&pdf);
    let (tail, size, _) = file.finish();
    sealed.extend(tail);
    let key = object_key(&tenant, &c, &media_id);
    let mut writer = relay_core::media::BlobStore::begin(&f.blobs, &key)
        .await
        .unwrap();
    writer.write(sealed).await.unwrap();
    writer.finish().await.unwrap();
    let message_key = relay_core::media::message_key_of(&media_id).unwrap();
    let info = MediaInfo {
        status: MediaStatus::Available,
        size: Some(size),
        object_key: Some(key),
        ..MediaInfo::pending(message_key, Some("application/pdf".into()))
    };
    f.store
        .set_media(&tenant, message_key, &info)
        .await
        .unwrap();

    let (status, headers, bytes) = get_raw(&f.app, &uri, KEY_A).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, pdf);
    assert_eq!(headers.get("content-type").unwrap(), "application/pdf");
    assert_eq!(
        headers.get("content-length").unwrap(),
        &pdf.len().to_string()
    );
    assert_eq!(
        headers.get("content-disposition").unwrap(),
        "attachment; filename=\"Rezept Mrz.pdf\"",
        "only safe characters in the file name"
    );
    assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
    // The export names the file and where to get it (not where it is stored).
    let (_, doc) = get(&f.app, &format!("/v1/contacts/{c}/export"), Some(KEY_A)).await;
    let exported = doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["media"].is_object())
        .unwrap()["media"]
        .clone();
    assert_eq!(exported["href"], format!("/v1/media/{media_id}"));
    assert!(exported.get("object_key").is_none());
    // Another tenant, a made-up id, a path trick: 404, nothing else.
    for (uri, key) in [
        (uri.as_str(), KEY_B),
        ("/v1/media/md_0000", KEY_A),
        ("/v1/media/..%2F..%2Fetc", KEY_A),
        ("/v1/media/notours", KEY_A),
    ] {
        let (status, _, _) = get_raw(&f.app, uri, key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
    // Served files are audited against the contact they belong to.
    let log = f.audit.list(Some(&tenant), 100, NOW).await.unwrap();
    assert!(log.iter().any(|e| e.action == "media.get"
        && e.target.as_deref() == Some(c.as_str())
        && e.result == 200));

    // A file that could not be fetched says why.
    let failed = MediaInfo {
        status: MediaStatus::Failed,
        reason: Some("the file does not match its SHA-256".into()),
        ..MediaInfo::pending(message_key, None)
    };
    f.store
        .set_media(&tenant, message_key, &failed)
        .await
        .unwrap();
    let (status, body) = get(&f.app, &uri, Some(KEY_A)).await;
    assert_eq!(status, StatusCode::GONE);
    assert_eq!(body["detail"], "the file does not match its SHA-256");
}

/// An audit log that refuses every entry.
struct BrokenAudit;

#[async_trait::async_trait]
impl AuditLog for BrokenAudit {
    async fn append(
        &self,
        _: &relay_core::records::AuditEntry,
    ) -> Result<(), relay_core::ports::StoreError> {
        Err(relay_core::ports::StoreError::Unavailable("down".into()))
    }
    async fn list(
        &self,
        _: Option<&relay_core::ids::TenantId>,
        _: usize,
        _: i64,
    ) -> Result<Vec<relay_core::records::AuditEntry>, relay_core::ports::StoreError> {
        Ok(vec![])
    }
}

#[tokio::test]
async fn a_read_that_cannot_be_audited_releases_nothing() {
    let f = fixture().await;
    let config = RelayConfig::parse(CONFIG, &|_| None).unwrap();
    let app = router(Inbox {
        directory: Arc::new(StaticDirectory::from_config(&config)),
        store: f.store.clone(),
        outbound: f.jobs.clone(),
        privacy: Privacy {
            store: f.store.clone(),
            keys: f.keys.clone(),
            pseudonymizer: Arc::new(Pseudonymizer::new([1; 32])),
            blobs: Arc::new(f.blobs.clone()),
        },
        audit: Arc::new(BrokenAudit),
        audit_retention_secs: 86_400,
        blobs: Arc::new(f.blobs.clone()),
        max_media_response_bytes: None,
        max_upload_bytes: UPLOAD_MAX,
        templates: None,
        usage: None,
        clock: Clock::fixed(NOW),
    });
    let (status, body) = get(&app, "/v1/conversations", Some(KEY_A)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["type"], "urn:relay:problem:audit-unavailable");
    assert!(!body.to_string().contains("Kunde"), "no data released");
    // The same read with a working audit log succeeds (the fixture's).
    assert_eq!(
        get(&f.app, "/v1/conversations", Some(KEY_A)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn pickup_notices_go_once_per_reference_and_remind_unless_collected() {
    use relay_core::notifications::{NoticePorts, sweep_reminders};
    let f = fixture().await;
    let (app, jobs) = (&f.app, &f.jobs);
    let erika = contact_named(app, KEY_A, "Kunde 0").await;
    let uri = format!("/v1/conversations/{erika}/notifications");
    let notify_to = |key: &'static str, contact: &str, reference: &'static str| {
        let uri = format!("/v1/conversations/{contact}/notifications");
        async move {
            let body = json!({"kind": "pickup_ready", "reference": reference});
            post(app, &uri, Some(key), body, &[]).await
        }
    };
    let sends = || {
        jobs.0
            .lock()
            .unwrap()
            .iter()
            .filter(|j| matches!(j, relay_core::jobs::Job::Send { .. }))
            .count()
    };
    let notify = |reference: &'static str| {
        let uri = uri.clone();
        async move {
            post(
                app,
                &uri,
                Some(KEY_A),
                json!({"kind": "pickup_ready", "reference": reference}),
                &[],
            )
            .await
        }
    };
    let (status, first) = notify("A-1001").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["created"], true);
    assert_eq!(first["notification"]["reference"], "A-1001");
    assert_eq!(first["notification"]["remind_at"], NOW + 3 * 86_400);
    assert_eq!(sends(), 1);
    // Once per reference: the same message again, nothing new stored.
    let (status, again) = notify("A-1001").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (again["id"].clone(), again["created"].clone()),
        (first["id"].clone(), json!(false))
    );
    let (_, msgs) = get(
        app,
        &format!("/v1/conversations/{erika}/messages"),
        Some(KEY_A),
    )
    .await;
    let templates: Vec<&Value> = msgs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "template")
        .collect();
    assert_eq!(templates.len(), 1, "{msgs}");
    assert_eq!(templates[0]["template"]["name"], "abholbereit");
    assert_eq!(
        templates[0]["template"]["components"][0]["parameters"][0]["text"], "A-1001",
        "the reference fills the template's parameter"
    );
    let (status, _) = notify("A-1002").await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Bad requests, an unconfigured pharmacy, an opted-out customer.
    let (status, p) = notify("A 1003; DROP").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p["type"].as_str().unwrap().ends_with("invalid-reference"),
        "{p}"
    );
    let (status, p) = post(
        app,
        &uri,
        Some(KEY_A),
        json!({"kind": "refill", "reference": "X"}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .ends_with("unknown-notification"),
        "{p}"
    );
    let other = contact_named(app, KEY_B, "Kundin B").await;
    let (status, p) = notify_to(KEY_B, &other, "B-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        p["type"]
            .as_str()
            .unwrap()
            .ends_with("notification-not-configured"),
        "{p}"
    );
    let (status, _) = notify_to(KEY_A, &other, "B-1").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's conversation"
    );
    let tenant = relay_core::ids::TenantId::parse("apotheke-a").unwrap();
    let opt_out = |contact: String| {
        let store = f.store.clone();
        let tenant = tenant.clone();
        async move {
            let c = relay_core::ids::ContactId::parse(&contact).unwrap();
            let entry = relay_core::records::ConsentEntry {
                key: format!("api:{contact}"),
                event: relay_core::records::ConsentEvent::OptedOut,
                at: NOW,
                source: "api".into(),
                expires_at: NOW + 30 * 86_400,
            };
            store.record_consent(&tenant, &c, &entry).await.unwrap();
        }
    };
    let kunde1 = contact_named(app, KEY_A, "Kunde 1").await;
    opt_out(kunde1.clone()).await;
    let (status, p) = notify_to(KEY_A, &kunde1, "C-1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(p["type"].as_str().unwrap().ends_with("opted-out"), "{p}");
    // A customer who opts out after the notice gets no reminder.
    let kunde2 = contact_named(app, KEY_A, "Kunde 2").await;
    let (status, _) = notify_to(KEY_A, &kunde2, "D-1").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    opt_out(kunde2).await;

    // A-1001 is collected; A-1002 is not.
    let (status, c) = post(
        app,
        &format!("{uri}/A-1001/collected"),
        Some(KEY_A),
        json!({}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["notification"]["collected_at"], NOW);
    let (status, _) = post(
        app,
        &format!("{uri}/Z-9/collected"),
        Some(KEY_A),
        json!({}),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The sweep: nothing before the day; then one reminder, for A-1002 only, and only once.
    // As reply-sender's sweep has it: forwards sealed on the way.
    let outbound = relay_core::sealed::SealedOutbound::new(f.jobs.clone(), f.keys.clone());
    let ports = NoticePorts {
        replies: relay_core::replies::ReplyPorts {
            store: f.store.as_ref(),
            directory: f.directory.as_ref(),
            outbound: &outbound,
            templates: None,
        },
        board: f.store.as_ref(),
    };
    let before = sends();
    let swept = sweep_reminders(&ports, f.directory.as_ref(), NOW + 86_400, 100)
        .await
        .unwrap();
    assert_eq!(swept, Default::default());
    let later = NOW + 3 * 86_400 + 60;
    f.now.store(later, Ordering::Relaxed);
    let swept = sweep_reminders(&ports, f.directory.as_ref(), later, 100)
        .await
        .unwrap();
    assert_eq!(
        (swept.reminded, swept.skipped, swept.failed),
        (1, 1, 0),
        "{swept:?}"
    );
    assert_eq!(sends(), before + 1);
    let again = sweep_reminders(&ports, f.directory.as_ref(), later + 600, 100)
        .await
        .unwrap();
    assert_eq!(again, Default::default(), "a second sweep sends nothing");
    let (_, list) = get(app, &uri, Some(KEY_A)).await;
    let list = list["notifications"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    let a1002 = list.iter().find(|n| n["reference"] == "A-1002").unwrap();
    assert!(
        a1002["reminder_id"].as_str().unwrap().starts_with("m_"),
        "{a1002}"
    );
    let a1001 = list.iter().find(|n| n["reference"] == "A-1001").unwrap();
    assert!(a1001["reminder_id"].is_null(), "collected: no reminder");

    // Forwarded to the pharmacy's software, sealed in the queue like the router's forwards.
    let forwards: Vec<(String, Value)> = jobs
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|j| match j {
            relay_core::jobs::Job::Forward {
                webhook_id,
                payload,
                ..
            } => Some((webhook_id.clone(), payload.clone())),
            _ => None,
        })
        .collect();
    assert!(
        forwards.iter().all(|(_, p)| p.is_string()),
        "sealed: {forwards:?}"
    );
    let mut opened = Vec::new();
    for (id, p) in &forwards {
        let p = relay_core::sealed::open_forward_payload(&f.keys, &tenant, p.clone())
            .await
            .unwrap()
            .unwrap();
        opened.push((
            id.clone(),
            p["type"].as_str().unwrap().to_owned(),
            p["data"]["reference"].as_str().unwrap().to_owned(),
        ));
    }
    opened.sort();
    opened.dedup();
    let mut events: Vec<(String, String)> = opened
        .iter()
        .map(|(_, t, r)| (t.clone(), r.clone()))
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            ("notification.collected".to_owned(), "A-1001".to_owned()),
            ("notification.reminded".into(), "A-1002".into()),
            ("notification.sent".into(), "A-1001".into()),
            ("notification.sent".into(), "A-1002".into()),
            ("notification.sent".into(), "D-1".into()),
        ],
        "the repeated notice is the same forward (one webhook id)"
    );
}

#[tokio::test]
async fn a_pickup_template_known_as_marketing_is_refused_before_anything_is_sent() {
    use relay_core::notifications::{NoticeError, NoticePorts, PICKUP_READY, notify};
    use relay_core::templates::{Template, TemplateStore};
    let f = fixture().await;
    let tenant = relay_core::ids::TenantId::parse("apotheke-a").unwrap();
    let contact =
        relay_core::ids::ContactId::parse(&contact_named(&f.app, KEY_A, "Kunde 0").await).unwrap();
    let t = relay_core::ports::Directory::tenant(f.directory.as_ref(), &tenant)
        .await
        .unwrap()
        .unwrap();
    let template = |category: &str| -> Template {
        serde_json::from_value(json!({
            "name": "abholbereit", "language": "de", "category": category, "status": "APPROVED",
            "body": "Ihre Bestellung {{1}} liegt bereit.", "params": 1, "updated_at": NOW
        }))
        .unwrap()
    };
    let outbound = relay_core::sealed::SealedOutbound::new(f.jobs.clone(), f.keys.clone());
    let ports = NoticePorts {
        replies: relay_core::replies::ReplyPorts {
            store: f.store.as_ref(),
            directory: f.directory.as_ref(),
            outbound: &outbound,
            templates: Some(f.raw.as_ref()),
        },
        board: f.store.as_ref(),
    };
    f.raw
        .replace_templates(&tenant, &[template("MARKETING")])
        .await
        .unwrap();
    match notify(&ports, &t, &contact, (PICKUP_READY, "A-1"), NOW).await {
        Err(NoticeError::BadTemplate(detail)) => {
            assert!(detail.contains("MARKETING"), "{detail}")
        }
        other => panic!("refused, not {other:?}"),
    }
    assert!(f.jobs.0.lock().unwrap().is_empty(), "nothing queued");
    assert!(
        f.store
            .notices(&tenant, &contact, NOW)
            .await
            .unwrap()
            .is_empty()
    );
    // Recategorised as UTILITY (or not synced at all): it goes.
    f.raw
        .replace_templates(&tenant, &[template("UTILITY")])
        .await
        .unwrap();
    let (notice, queued) = notify(&ports, &t, &contact, (PICKUP_READY, "A-1"), NOW)
        .await
        .unwrap();
    assert!(queued.created);
    assert_eq!(notice.reference, "A-1");
}
