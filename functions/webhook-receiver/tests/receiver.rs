//! The receiver's answers, from fixtures: what is enqueued and what is refused.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use relay_core::config::RelayConfig;
use relay_core::directory::StaticDirectory;
use relay_core::envelope::Envelope;
use relay_core::ports::{InboundQueue, QueueError};
use relay_core::tenant::sign_hub_signature;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;
use webhook_receiver::{Receiver, router};

const CONFIG: &str = r#"
[[tenants]]
id = "apotheke-a"
name = "A"
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok-111"

[[tenants.channels]]
phone_number_id = "222"
provider = "360dialog"
webhook = "partner"
webhook_token = "tok-222"
signing_secret = "sig-222"

[[tenants.channels]]
phone_number_id = "333"
provider = "meta"
app_secret = "app-333"
verify_token = "verify-333"

[[tenants.channels]]
phone_number_id = "401"
provider = "meta"
app = "777"
waba_id = "901"

[[tenants]]
id = "apotheke-b"
name = "B"
[[tenants.channels]]
phone_number_id = "402"
provider = "meta"
app = "777"
waba_id = "902"

[[tenants.channels]]
phone_number_id = "403"
provider = "meta"
app = "888"
waba_id = "903"

# An IT provider's app serving both pharmacies, and another app.
[[meta_apps]]
id = "777"
app_secret = "secret-777"
verify_token = "verify-777"

[[meta_apps]]
id = "888"
app_secret = "secret-888"
verify_token = "verify-888"
"#;

/// A queue that records what it is given, and can be told to fail.
#[derive(Default)]
struct RecordingQueue {
    bodies: Mutex<Vec<String>>,
    failing: AtomicBool,
    max: Option<usize>,
    /// Told of every enqueue (a permit is kept if nobody waits).
    sent: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl InboundQueue for RecordingQueue {
    fn max_message_bytes(&self) -> usize {
        self.max.unwrap_or(1024 * 1024)
    }
    async fn enqueue(&self, bodies: &[String]) -> Result<(), QueueError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(QueueError::Unavailable("test says no".into()));
        }
        self.bodies.lock().unwrap().extend(bodies.iter().cloned());
        self.sent.notify_one();
        Ok(())
    }
}

struct App {
    router: axum::Router,
    queue: Arc<RecordingQueue>,
    keys: Arc<relay_core::crypto::Keyring>,
}

fn app_with(queue: RecordingQueue, max_body_bytes: usize) -> App {
    let keys = Arc::new(relay_core::crypto::Keyring::in_memory(
        relay_core::Clock::system(),
    ));
    app_on(queue, max_body_bytes, keys)
}

fn app_on(
    queue: RecordingQueue,
    max_body_bytes: usize,
    keys: Arc<relay_core::crypto::Keyring>,
) -> App {
    let queue = Arc::new(queue);
    let config = RelayConfig::parse(CONFIG, &|_| None).unwrap();
    let router = router(Receiver {
        directory: Arc::new(StaticDirectory::from_config(&config)),
        queue: queue.clone(),
        keys: keys.clone(),
        pseudonymizer: Arc::new(relay_core::ids::Pseudonymizer::new([4; 32])),
        max_body_bytes,
    });
    App {
        router,
        queue,
        keys,
    }
}

fn app() -> App {
    app_with(RecordingQueue::default(), 4 * 1024 * 1024)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn post(
    app: &App,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value, Option<String>) {
    let mut req = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ct,
    )
}

/// The queued envelopes, their payloads opened with the tenant's transit key.
fn queued(app: &App) -> Vec<Envelope> {
    app.queue
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| {
            let mut e: Envelope = serde_json::from_str(b).unwrap();
            let tenant = e
                .tenant
                .clone()
                .expect("sealed envelopes name their tenant");
            let sealed = e
                .payload
                .as_str()
                .expect("the payload is sealed")
                .to_owned();
            let plain = ready(app.keys.open(&tenant, "envelope", &sealed)).unwrap();
            e.payload = serde_json::from_slice(&plain).unwrap();
            e
        })
        .collect()
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

#[tokio::test]
async fn a_webhook_about_one_customer_is_queued_whole_under_their_key() {
    let app = app();
    let body = fixture("text");
    let (status, json, _) = post(
        &app,
        "/webhooks/whatsapp/111",
        &[("authorization", "Bearer tok-111")],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["status"], "queued");
    let plain: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let wa_id = plain["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Sealed under the key named by the customer's contact id.
    let raw = app.queue.bodies.lock().unwrap()[0].clone();
    let tenant = relay_core::ids::TenantId::parse("apotheke-a").unwrap();
    let contact = relay_core::ids::Pseudonymizer::new([4; 32])
        .contact_id(&tenant, relay_core::ids::Identity::WaId(&wa_id));
    let envelope: Envelope = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        relay_core::crypto::sealed_keyref(envelope.payload.as_str().unwrap()),
        Some(contact.as_str())
    );
    let q = queued(&app);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].phone_number_id, "111");
    assert_eq!(q[0].payload, plain, "unchanged once opened");
}

#[tokio::test]
async fn a_webhook_about_several_customers_is_queued_per_customer_losing_nothing() {
    let app = app();
    let body = fixture("multi");
    let (status, _, _) = post(
        &app,
        "/webhooks/whatsapp/111",
        &[("authorization", "Bearer tok-111")],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // What lies in the queue is sealed: no name, number or text of the webhook in it.
    let raw = app.queue.bodies.lock().unwrap().join("\n");
    let plain: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let wa_id = plain["entry"][0]["changes"][0]["value"]["contacts"][0]["wa_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!raw.contains(&wa_id), "a phone number in the queue");
    assert!(!raw.contains("wamid."), "a wamid in the queue");
    let events =
        |v: serde_json::Value| relay_core::webhook::webhook_from_value(v).unwrap().events();
    let want = events(plain);
    let mut got = Vec::new();
    for e in queued(&app) {
        assert_eq!(e.phone_number_id, "111");
        got.extend(events(e.payload));
    }
    assert_eq!(got.len(), want.len());
    for e in &want {
        assert!(got.contains(e), "{e:?} was lost");
    }
}

#[tokio::test]
async fn bad_requests_get_their_status_and_enqueue_nothing() {
    let app = app();
    let ok = fixture("text");
    let auth = ("authorization", "Bearer tok-111");
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "/webhooks/whatsapp/111",
            vec![],
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/webhooks/whatsapp/111",
            vec![("authorization", "Bearer tok-222")],
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/webhooks/whatsapp/111",
            vec![("authorization", "tok-111")],
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        // Unknown channel: the same answer as a wrong token.
        (
            "/webhooks/whatsapp/999",
            vec![auth],
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/webhooks/whatsapp/..%2f111",
            vec![auth],
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/webhooks/whatsapp/111",
            vec![auth],
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "not-json",
        ),
        (
            "/webhooks/whatsapp/111",
            vec![auth],
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "not-json",
        ),
        (
            "/webhooks/whatsapp/111",
            vec![auth],
            b"{\"hello\":1}".to_vec(),
            StatusCode::BAD_REQUEST,
            "not-a-webhook",
        ),
        (
            "/webhooks/whatsapp/111",
            vec![auth],
            b"[1,2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "not-a-webhook",
        ),
        (
            "/webhooks/whatsapp/111",
            vec![auth],
            br#"{"object":"page","entry":[]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "not-a-webhook",
        ),
        // A signing secret is configured for 222: the bearer alone is not enough.
        (
            "/webhooks/whatsapp/222",
            vec![("authorization", "Bearer tok-222")],
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/webhooks/whatsapp/222",
            vec![
                ("authorization", "Bearer tok-222"),
                ("x-360dialog-signature", "sha256=00"),
            ],
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/webhooks/whatsapp/333",
            vec![("x-hub-signature-256", "sha256=deadbeef")],
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/webhooks/whatsapp/333",
            vec![auth],
            ok.clone(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
    ];
    for (path, headers, body, want, slug) in cases {
        let (status, json, ct) = post(&app, path, &headers, body).await;
        assert_eq!(status, want, "{path} {headers:?}");
        assert_eq!(
            json["type"],
            format!("urn:relay:problem:{slug}"),
            "{path} {headers:?}"
        );
        assert_eq!(ct.as_deref(), Some("application/problem+json"));
    }
    assert!(
        queued(&app).is_empty(),
        "nothing is enqueued for a rejected request"
    );
}

#[tokio::test]
async fn signed_webhooks_are_checked_over_the_raw_bytes() {
    let app = app();
    // Odd but valid JSON formatting: the signature is over these exact bytes.
    let body = fixture("status_read");
    let sig = sign_hub_signature(b"app-333", &body);
    let (status, _, _) = post(
        &app,
        "/webhooks/whatsapp/333",
        &[("x-hub-signature-256", &sig)],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let sig = sign_hub_signature(b"sig-222", &body);
    let (status, _, _) = post(
        &app,
        "/webhooks/whatsapp/222",
        &[
            ("authorization", "Bearer tok-222"),
            ("x-360dialog-signature", &sig),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut tampered = body.clone();
    tampered.push(b' ');
    let sig = sign_hub_signature(b"app-333", &body);
    let (status, _, _) = post(
        &app,
        "/webhooks/whatsapp/333",
        &[("x-hub-signature-256", &sig)],
        tampered,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(queued(&app).len(), 2);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_enqueue_nothing() {
    let app = app_with(RecordingQueue::default(), 1024);
    let mut big = fixture("text");
    big.extend(std::iter::repeat_n(b' ', 2048));
    let (status, json, _) = post(
        &app,
        "/webhooks/whatsapp/111",
        &[("authorization", "Bearer tok-111")],
        big,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json["status"], 413);
    assert!(queued(&app).is_empty());
}

#[tokio::test]
async fn a_queue_outage_is_503_so_the_sender_retries() {
    let app = app_with(
        RecordingQueue {
            failing: AtomicBool::new(true),
            ..Default::default()
        },
        4 << 20,
    );
    let (status, json, _) = post(
        &app,
        "/webhooks/whatsapp/111",
        &[("authorization", "Bearer tok-111")],
        fixture("text"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["type"], "urn:relay:problem:queue-unavailable");
    app.queue.failing.store(false, Ordering::SeqCst);
    let (status, _, _) = post(
        &app,
        "/webhooks/whatsapp/111",
        &[("authorization", "Bearer tok-111")],
        fixture("text"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn webhooks_larger_than_a_queue_message_are_split_not_truncated() {
    let app = app_with(
        RecordingQueue {
            max: Some(1000),
            ..Default::default()
        },
        4 << 20,
    );
    let (status, _, _) = post(
        &app,
        "/webhooks/whatsapp/111",
        &[("authorization", "Bearer tok-111")],
        fixture("multi"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let q = queued(&app);
    assert_eq!(q.len(), 6, "one piece per message, status and other change");
    let events: usize = q
        .iter()
        .map(|e| {
            relay_core::webhook::webhook_from_value(e.payload.clone())
                .unwrap()
                .events()
                .len()
        })
        .sum();
    assert_eq!(events, 6);
}

async fn get(app: &App, uri: &str) -> (StatusCode, String) {
    let resp = app
        .router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn meta_subscription_handshake() {
    let app = app();
    let ok = "/webhooks/whatsapp/333?hub.mode=subscribe&hub.verify_token=verify-333&hub.challenge=1158201444";
    assert_eq!(
        get(&app, ok).await,
        (StatusCode::OK, "1158201444".to_owned())
    );
    for bad in [
        "/webhooks/whatsapp/333?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "/webhooks/whatsapp/333?hub.mode=other&hub.verify_token=verify-333&hub.challenge=1",
        "/webhooks/whatsapp/111?hub.mode=subscribe&hub.verify_token=tok-111&hub.challenge=1",
        "/webhooks/whatsapp/999?hub.mode=subscribe&hub.verify_token=verify-333&hub.challenge=1",
        "/webhooks/whatsapp/333?hub.mode=subscribe&hub.verify_token=verify-333&hub.challenge=%3Cscript%3E%20",
    ] {
        assert_eq!(get(&app, bad).await.0, StatusCode::UNAUTHORIZED, "{bad}");
    }
}

/// A text message to `pnid` from `from`, as a change of an app webhook.
fn app_message(pnid: &str, from: &str, id: &str) -> serde_json::Value {
    serde_json::json!({"field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "4930000000", "phone_number_id": pnid},
        "contacts": [{"profile": {"name": "Kundin"}, "wa_id": from}],
        "messages": [{"from": from, "id": id, "timestamp": "1764300000", "type": "text",
                      "text": {"body": "Ist mein Rezept da?"}}]}})
}

#[tokio::test]
async fn a_meta_app_webhook_goes_to_each_numbers_tenant_and_only_to_the_apps_numbers() {
    let app = app();
    // One POST to app 777's URL: numbers of two tenants, an account event of tenant B's
    // account, a number of another app, and a number nobody has.
    let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [
        {"id": "901", "changes": [app_message("401", "4915100000001", "wamid.A1")]},
        {"id": "902", "changes": [app_message("402", "4915100000002", "wamid.B1"),
            {"field": "message_template_status_update", "value": {"event": "APPROVED",
             "message_template_id": 5, "message_template_name": "abholbereit",
             "message_template_language": "de", "reason": null}}]},
        {"id": "903", "changes": [app_message("403", "4915100000003", "wamid.C1")]},
        {"id": "904", "changes": [app_message("499", "4915100000004", "wamid.D1")]}]})
    .to_string()
    .into_bytes();
    let sig = sign_hub_signature(b"secret-777", &body);
    let (status, _, _) = post(
        &app,
        "/webhooks/meta/777",
        &[("x-hub-signature-256", &sig)],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let got: Vec<(String, String, String)> = queued(&app)
        .into_iter()
        .map(|e| {
            assert_eq!(e.app.as_deref(), Some("777"));
            let what = e.payload["entry"][0]["changes"][0]["field"]
                .as_str()
                .unwrap()
                .to_owned();
            (e.phone_number_id, e.tenant.unwrap().to_string(), what)
        })
        .collect();
    let want = |p: &str, t: &str, f: &str| (p.to_owned(), t.to_owned(), f.to_owned());
    assert_eq!(
        got,
        [
            want("401", "apotheke-a", "messages"),
            want("402", "apotheke-b", "messages"),
            // The account's own event, filed under its first channel.
            want("402", "apotheke-b", "message_template_status_update"),
            // Another app's number and an unknown one: for quarantine, sealed for no tenant.
            want("403", "_system", "messages"),
            want("499", "_system", "messages"),
        ]
    );
    // Each piece holds only its own customer (the account event none).
    for e in queued(&app) {
        let text = e.payload.to_string();
        let field = e.payload["entry"][0]["changes"][0]["field"].clone();
        let mine = match e.phone_number_id.as_str() {
            _ if field != "messages" => "",
            "401" => "4915100000001",
            "402" => "4915100000002",
            "403" => "4915100000003",
            _ => "4915100000004",
        };
        for n in [
            "4915100000001",
            "4915100000002",
            "4915100000003",
            "4915100000004",
        ] {
            assert_eq!(text.contains(n), n == mine, "{n} in {}", e.phone_number_id);
        }
    }

    // Signed with another app's secret, unsigned, or to an unknown app: refused, nothing queued.
    let before = app.queue.bodies.lock().unwrap().len();
    let other = sign_hub_signature(b"secret-888", &body);
    for (path, headers) in [
        (
            "/webhooks/meta/777",
            vec![("x-hub-signature-256", other.as_str())],
        ),
        ("/webhooks/meta/777", vec![]),
        (
            "/webhooks/meta/999",
            vec![("x-hub-signature-256", sig.as_str())],
        ),
        (
            "/webhooks/meta/77a",
            vec![("x-hub-signature-256", sig.as_str())],
        ),
    ] {
        let (status, _, _) = post(&app, path, &headers, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(app.queue.bodies.lock().unwrap().len(), before);

    // The app's subscription handshake.
    let ok = "/webhooks/meta/777?hub.mode=subscribe&hub.verify_token=verify-777&hub.challenge=42";
    assert_eq!(get(&app, ok).await, (StatusCode::OK, "42".to_owned()));
    let bad = "/webhooks/meta/777?hub.mode=subscribe&hub.verify_token=verify-888&hub.challenge=42";
    assert_eq!(get(&app, bad).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_number_of_a_meta_app_keeps_its_own_url() {
    // A per-number override_callback_uri: the number's URL, signed with the app's secret.
    let app = app();
    let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [
        {"id": "902", "changes": [app_message("402", "4915100000002", "wamid.B2")]}]})
    .to_string()
    .into_bytes();
    let sig = sign_hub_signature(b"secret-777", &body);
    let (status, _, _) = post(
        &app,
        "/webhooks/whatsapp/402",
        &[("x-hub-signature-256", &sig)],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let q = queued(&app);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].tenant.as_ref().unwrap().as_str(), "apotheke-b");
}

/// A key store that counts its reads and, once armed, answers one only after the queue was
/// given something (failing after a second otherwise).
struct GatedKeys {
    inner: relay_core::crypto::MemoryKeyStore,
    armed: AtomicBool,
    sent: Arc<tokio::sync::Notify>,
    loads: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl relay_core::crypto::KeyStore for GatedKeys {
    async fn load(
        &self,
        tenant: &relay_core::ids::TenantId,
        keyref: &str,
        now: i64,
    ) -> Result<Option<relay_core::crypto::WrappedKey>, relay_core::crypto::CryptoError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        if self.armed.load(Ordering::SeqCst)
            && tokio::time::timeout(std::time::Duration::from_secs(1), self.sent.notified())
                .await
                .is_err()
        {
            return Err(relay_core::crypto::CryptoError::Unavailable(
                "read before the enqueue".into(),
            ));
        }
        self.inner.load(tenant, keyref, now).await
    }
    async fn insert(
        &self,
        tenant: &relay_core::ids::TenantId,
        keyref: &str,
        key: &relay_core::crypto::WrappedKey,
        now: i64,
    ) -> Result<Option<relay_core::crypto::WrappedKey>, relay_core::crypto::CryptoError> {
        self.inner.insert(tenant, keyref, key, now).await
    }
    async fn extend(
        &self,
        tenant: &relay_core::ids::TenantId,
        keyref: &str,
        key_id: &str,
        expires_at: i64,
    ) -> Result<(), relay_core::crypto::CryptoError> {
        self.inner.extend(tenant, keyref, key_id, expires_at).await
    }
    async fn delete(
        &self,
        tenant: &relay_core::ids::TenantId,
        keyref: &str,
    ) -> Result<bool, relay_core::crypto::CryptoError> {
        self.inner.delete(tenant, keyref).await
    }
}

/// A warm receiver seals under the key it read last time and checks it alongside the enqueue:
/// the key store's read waits here until the queue has the webhook, so a receiver that read
/// first would time out and answer 503.
#[tokio::test]
async fn a_warm_receiver_checks_its_key_alongside_the_enqueue() {
    let queue = RecordingQueue::default();
    let store = Arc::new(GatedKeys {
        inner: relay_core::crypto::MemoryKeyStore::default(),
        armed: AtomicBool::new(false),
        sent: queue.sent.clone(),
        loads: Default::default(),
    });
    let keys = Arc::new(relay_core::crypto::Keyring::new(
        store.clone(),
        Arc::new(relay_core::crypto::LocalKeyWrapper::new([7; 32])),
        relay_core::Clock::system(),
    ));
    let app = app_on(queue, 4 * 1024 * 1024, keys);
    let auth = [("authorization", "Bearer tok-111")];
    let (cold, _, _) = post(&app, "/webhooks/whatsapp/111", &auth, fixture("text")).await;
    assert_eq!(cold, StatusCode::OK);
    // The cold webhook's enqueue left a permit: used up here, so the gate really waits.
    app.queue.sent.notified().await;
    store.armed.store(true, Ordering::SeqCst);
    let before = store.loads.load(Ordering::SeqCst);
    let (warm, json, _) = post(&app, "/webhooks/whatsapp/111", &auth, fixture("text")).await;
    assert_eq!(warm, StatusCode::OK, "{json}");
    assert_eq!(
        store.loads.load(Ordering::SeqCst) - before,
        1,
        "one read, the check"
    );
    assert_eq!(app.queue.bodies.lock().unwrap().len(), 2);
}

/// A key destroyed by another instance (an erasure) while this one holds it: the webhook goes
/// out again under the current key, and the copy under the destroyed one cannot be opened —
/// the router drops it; the new message is not lost.
#[tokio::test]
async fn a_webhook_sealed_under_a_key_erased_elsewhere_is_queued_again_under_the_new_one() {
    let store = Arc::new(relay_core::crypto::MemoryKeyStore::default());
    let wrapper = Arc::new(relay_core::crypto::LocalKeyWrapper::new([7; 32]));
    let instance = |clock| {
        Arc::new(relay_core::crypto::Keyring::new(
            store.clone(),
            wrapper.clone(),
            clock,
        ))
    };
    let app = app_on(
        RecordingQueue::default(),
        4 * 1024 * 1024,
        instance(relay_core::Clock::system()),
    );
    let other = instance(relay_core::Clock::system());
    let auth = [("authorization", "Bearer tok-111")];
    let (first, _, _) = post(&app, "/webhooks/whatsapp/111", &auth, fixture("text")).await;
    assert_eq!(first, StatusCode::OK);
    let raw = app.queue.bodies.lock().unwrap()[0].clone();
    let envelope: Envelope = serde_json::from_str(&raw).unwrap();
    let tenant = envelope.tenant.clone().unwrap();
    let keyref = relay_core::crypto::sealed_keyref(envelope.payload.as_str().unwrap())
        .unwrap()
        .to_owned();
    assert!(other.destroy(&tenant, &keyref).await.unwrap());

    let (again, _, _) = post(&app, "/webhooks/whatsapp/111", &auth, fixture("text")).await;
    assert_eq!(again, StatusCode::OK);
    let bodies = app.queue.bodies.lock().unwrap().clone();
    assert_eq!(
        bodies.len(),
        3,
        "the stale copy and the one under the new key"
    );
    let sealed = |raw: &str| {
        let e: Envelope = serde_json::from_str(raw).unwrap();
        e.payload.as_str().unwrap().to_owned()
    };
    assert!(matches!(
        other
            .open_current(&tenant, "envelope", &sealed(&bodies[1]))
            .await,
        Err(relay_core::crypto::CryptoError::Destroyed)
    ));
    let plain: serde_json::Value = serde_json::from_slice(
        &other
            .open_current(&tenant, "envelope", &sealed(&bodies[2]))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        plain,
        serde_json::from_slice::<serde_json::Value>(&fixture("text")).unwrap()
    );
}
