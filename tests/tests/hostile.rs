//! A bad-input corpus against the HTTP functions (webhook-receiver and inbox-api, exactly as
//! deployed): malformed and deeply nested JSON, huge strings, invalid UTF-8, wrong content types,
//! header tricks, path traversal and injection in ids and cursors, another tenant's ids.
//! Every case must get a 4xx RFC 9457 problem, queue nothing, not panic, and echo none of the
//! personal values or secrets it carried.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use axum::body::Body;
use axum::http::{Request, StatusCode};
use relay_core::config::RelayConfig;
use relay_core::directory::StaticDirectory;
use relay_core::ids::Pseudonymizer;
use relay_core::ports::{InboundQueue, OutboundQueue, QueueError};
use relay_embedded::{Database, SqliteAuditLog, SqliteMessageStore};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// Uploads: WhatsApp's limits per type alone, as locally.
const UPLOAD_MAX: Option<usize> = None;

const CONFIG: &str = r#"
[[tenants]]
id = "apotheke-a"
name = "A"
api_keys = ["sk_hostile_aaaaaaaaaaaa"]
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok-a-secret"

[[tenants]]
id = "apotheke-b"
name = "B"
api_keys = ["sk_hostile_bbbbbbbbbbbb"]
[[tenants.channels]]
phone_number_id = "222"
provider = "meta"
app_secret = "meta-app-secret"
verify_token = "verify-b"
"#;

/// Values that must never come back in an answer.
const SECRETS: &[&str] = &[
    "4915199990000",
    "GEHEIMNIS",
    "tok-a-secret",
    "sk_hostile_",
    "meta-app-secret",
    "Erika Geheim",
];

#[derive(Default)]
struct Recorder {
    inbound: Mutex<Vec<String>>,
    jobs: Mutex<Vec<relay_core::jobs::Job>>,
}

struct Inbound(Arc<Recorder>);
struct Outbound(Arc<Recorder>);

#[async_trait::async_trait]
impl InboundQueue for Inbound {
    fn max_message_bytes(&self) -> usize {
        256 * 1024
    }
    async fn enqueue(&self, bodies: &[String]) -> Result<(), QueueError> {
        self.0
            .inbound
            .lock()
            .unwrap()
            .extend(bodies.iter().cloned());
        Ok(())
    }
}

#[async_trait::async_trait]
impl OutboundQueue for Outbound {
    async fn enqueue_jobs(&self, jobs: &[relay_core::jobs::Job]) -> Result<(), QueueError> {
        self.0.jobs.lock().unwrap().extend(jobs.iter().cloned());
        Ok(())
    }
}

struct App {
    router: axum::Router,
    rec: Arc<Recorder>,
    contact_a: String,
    contact_b: String,
}

async fn app() -> App {
    let config = RelayConfig::parse(CONFIG, &|_| None).unwrap();
    let directory = Arc::new(StaticDirectory::from_config(&config));
    let db = Database::in_memory(relay_core::Clock::system());
    let keys = Arc::new(relay_core::crypto::Keyring::in_memory(
        relay_core::Clock::system(),
    ));
    let store = Arc::new(relay_core::sealed::SealedStore::new(
        Arc::new(SqliteMessageStore::new(db.clone())),
        keys.clone(),
    ));
    let pseudo = Arc::new(Pseudonymizer::new([6; 32]));
    let blobs: Arc<dyn relay_core::media::BlobStore> =
        Arc::new(relay_core::media::MemoryBlobStore::default());
    // One customer per tenant, so that there are real ids to aim at.
    let router = relay_core::routing::Router::new(
        store.clone(),
        directory.clone(),
        pseudo.clone(),
        keys.clone(),
    );
    let mut contacts = Vec::new();
    for (pnid, tenant) in [("111", "apotheke-a"), ("222", "apotheke-b")] {
        let w = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
            "metadata":{"phone_number_id":pnid},"contacts":[{"profile":{"name":"Erika Geheim"},"wa_id":"4915199990000"}],
            "messages":[{"from":"4915199990000","id":format!("wamid.{pnid}"),"timestamp":relay_core::Clock::system().now().to_string(),"type":"text","text":{"body":"GEHEIMNIS"}}]}}]}]});
        router
            .route(
                &relay_core::envelope::envelopes(pnid, 0, w, 1 << 20, None)
                    .unwrap()
                    .remove(0),
            )
            .await
            .unwrap();
        let t = relay_core::ids::TenantId::parse(tenant).unwrap();
        let c = relay_core::ports::InboxReads::list_conversations(
            store.as_ref(),
            &t,
            &relay_core::records::PageRequest::first(1),
            relay_core::Clock::system().now(),
        )
        .await
        .unwrap()
        .items[0]
            .contact_id
            .to_string();
        contacts.push(c);
    }
    let rec = Arc::new(Recorder::default());
    let receiver = webhook_receiver::router(webhook_receiver::Receiver {
        directory: directory.clone(),
        queue: Arc::new(Inbound(rec.clone())),
        keys: keys.clone(),
        pseudonymizer: pseudo.clone(),
        max_body_bytes: 1 << 20,
    });
    let inbox = inbox_api::router(inbox_api::Inbox {
        directory,
        store: store.clone(),
        outbound: Arc::new(Outbound(rec.clone())),
        privacy: relay_core::privacy::Privacy {
            store,
            keys,
            pseudonymizer: pseudo,
            blobs: blobs.clone(),
        },
        audit: Arc::new(SqliteAuditLog::new(db)),
        audit_retention_secs: 86_400,
        blobs,
        max_media_response_bytes: None,
        max_upload_bytes: UPLOAD_MAX,
        templates: None,
        usage: None,
        clock: relay_core::Clock::system(),
    });
    App {
        router: receiver.merge(inbox).fallback(relay_http::not_found),
        rec,
        contact_a: contacts[0].clone(),
        contact_b: contacts[1].clone(),
    }
}

struct Case {
    name: String,
    request: Request<Body>,
}

fn case(name: impl Into<String>, request: Request<Body>) -> Case {
    Case {
        name: name.into(),
        request,
    }
}

fn post(uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Request<Body> {
    let mut r = Request::post(uri);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(body.into()).unwrap()
}

fn get(uri: &str, auth: Option<&str>) -> Request<Body> {
    let mut r = Request::get(uri);
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    r.body(Body::empty()).unwrap()
}

fn webhook(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Erika Geheim"},"wa_id":"4915199990000"}],
        "messages":[{"from":"4915199990000","id":"wamid.H1","timestamp":"1","type":"text","text":{"body":text}}]}}]}]}))
    .unwrap()
}

fn corpus(a: &App) -> Vec<Case> {
    let hook = "/webhooks/whatsapp/111";
    let tok = ("authorization", "Bearer tok-a-secret");
    let json_ct = ("content-type", "application/json");
    let key_a = "Bearer sk_hostile_aaaaaaaaaaaa";
    let key_b = "Bearer sk_hostile_bbbbbbbbbbbb";
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    let mut invalid_utf8 = webhook("GEHEIMNIS");
    let at = invalid_utf8.len() / 2;
    invalid_utf8.splice(at..at, [0xff, 0xfe, 0xc3]);
    let (ca, cb) = (a.contact_a.as_str(), a.contact_b.as_str());
    let mut cases = vec![
        // --- webhook-receiver -------------------------------------------------------------
        case("empty body", post(hook, &[tok], Vec::new())),
        case("not JSON", post(hook, &[tok], "GEHEIMNIS 4915199990000")),
        case(
            "truncated JSON",
            post(
                hook,
                &[tok],
                r#"{"object":"whatsapp_business_account","entry":[{"#,
            ),
        ),
        case("JSON array", post(hook, &[tok], "[]")),
        case("JSON null", post(hook, &[tok], "null")),
        case("number overflow", post(hook, &[tok], "1e999999")),
        case(
            "trailing garbage",
            post(
                hook,
                &[tok],
                [webhook("x"), b"}}}GEHEIMNIS".to_vec()].concat(),
            ),
        ),
        case(
            "byte order mark",
            post(
                hook,
                &[tok],
                [b"\xef\xbb\xbf".to_vec(), webhook("x")].concat(),
            ),
        ),
        case("deeply nested arrays", post(hook, &[tok], deep.clone())),
        case(
            "deeply nested objects",
            post(hook, &[tok], deep_obj.clone()),
        ),
        case("invalid UTF-8", post(hook, &[tok], invalid_utf8)),
        case(
            "one message above the queue's limit",
            post(hook, &[tok, json_ct], webhook(&"GEHEIMNIS ".repeat(40_000))),
        ),
        case(
            "body above the limit",
            post(hook, &[tok], vec![b' '; (1 << 20) + 1]),
        ),
        case(
            "wrong content type",
            post(
                hook,
                &[tok, ("content-type", "text/plain")],
                webhook("GEHEIMNIS"),
            ),
        ),
        case(
            "form content type",
            post(
                hook,
                &[tok, ("content-type", "application/x-www-form-urlencoded")],
                "object=x",
            ),
        ),
        case("no credentials", post(hook, &[], webhook("GEHEIMNIS"))),
        case(
            "wrong token",
            post(
                hook,
                &[("authorization", "Bearer tok-a-secreT")],
                webhook("x"),
            ),
        ),
        case(
            "token prefix only",
            post(hook, &[("authorization", "Bearer tok-a")], webhook("x")),
        ),
        case(
            "basic auth",
            post(
                hook,
                &[("authorization", "Basic dG9rLWEtc2VjcmV0")],
                webhook("x"),
            ),
        ),
        case(
            "non-ASCII token",
            post(
                hook,
                &[("authorization", "Bearer tök-a-secret")],
                webhook("x"),
            ),
        ),
        case(
            "another tenant's channel",
            post("/webhooks/whatsapp/222", &[tok], webhook("GEHEIMNIS")),
        ),
        case(
            "meta channel without signature",
            post("/webhooks/whatsapp/222", &[], webhook("x")),
        ),
        case(
            "meta channel, forged signature",
            post(
                "/webhooks/whatsapp/222",
                &[("x-hub-signature-256", "sha256=00")],
                webhook("x"),
            ),
        ),
        case(
            "unknown channel",
            post("/webhooks/whatsapp/999", &[tok], webhook("x")),
        ),
        case(
            "letters as channel",
            post("/webhooks/whatsapp/abc", &[tok], webhook("x")),
        ),
        case(
            "traversal as channel",
            post(
                "/webhooks/whatsapp/..%2F..%2Fetc%2Fpasswd",
                &[tok],
                webhook("x"),
            ),
        ),
        case(
            "overlong channel",
            post(
                &format!("/webhooks/whatsapp/{}", "1".repeat(40)),
                &[tok],
                webhook("x"),
            ),
        ),
        case(
            "unicode digits as channel",
            post(
                "/webhooks/whatsapp/%D9%A1%D9%A1%D9%A1",
                &[tok],
                webhook("x"),
            ),
        ),
        case(
            "verify handshake, wrong token",
            get(
                "/webhooks/whatsapp/222?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=GEHEIMNIS",
                None,
            ),
        ),
        case(
            "verify handshake on a 360dialog channel",
            get(
                "/webhooks/whatsapp/111?hub.mode=subscribe&hub.verify_token=tok-a-secret&hub.challenge=x",
                None,
            ),
        ),
        // --- inbox-api ---------------------------------------------------------------------
        case("no API key", get("/v1/conversations", None)),
        case(
            "wrong API key",
            get("/v1/conversations", Some("Bearer sk_hostile_cccccccccccc")),
        ),
        case(
            "webhook token as API key",
            get("/v1/conversations", Some("Bearer tok-a-secret")),
        ),
        case("limit zero", get("/v1/conversations?limit=0", Some(key_a))),
        case(
            "limit negative",
            get("/v1/conversations?limit=-1", Some(key_a)),
        ),
        case(
            "limit huge",
            get("/v1/conversations?limit=99999999999999999999", Some(key_a)),
        ),
        case(
            "limit not a number",
            get("/v1/conversations?limit=1e3", Some(key_a)),
        ),
        case(
            "cursor garbage",
            get("/v1/conversations?cursor=%FF%FE%00", Some(key_a)),
        ),
        case(
            "cursor not ours",
            get(
                "/v1/conversations?cursor=VCNhcG90aGVrZS1iI0NPTlY",
                Some(key_a),
            ),
        ),
        case(
            "cursor overlong",
            get(
                &format!("/v1/conversations?cursor={}", "A".repeat(10_000)),
                Some(key_a),
            ),
        ),
        case(
            "cursor with injected parts",
            get("/v1/conversations?cursor=MTIzCmMKZAplCg", Some(key_a)),
        ),
        case(
            "another tenant's contact",
            get(&format!("/v1/conversations/{cb}/messages"), Some(key_a)),
        ),
        case(
            "another tenant's export",
            get(&format!("/v1/contacts/{cb}/export"), Some(key_a)),
        ),
        case(
            "traversal as contact",
            get(
                "/v1/conversations/..%2F..%2Fetc%2Fpasswd/messages",
                Some(key_a),
            ),
        ),
        case(
            "SQL as contact",
            get("/v1/conversations/c_'%20OR%20'1'='1/messages", Some(key_a)),
        ),
        case(
            "uppercase contact id",
            get(
                &format!("/v1/conversations/{}/messages", ca.to_uppercase()),
                Some(key_a),
            ),
        ),
        case(
            "overlong contact id",
            get(
                &format!("/v1/conversations/c_{}/messages", "a".repeat(5000)),
                Some(key_a),
            ),
        ),
        case(
            "traversal as media id",
            get("/v1/media/md_..%2F..%2Fkeys", Some(key_a)),
        ),
        case(
            "made-up upload id",
            get("/v1/media/mu_00000000000000000000000000000000", Some(key_a)),
        ),
        case(
            "reply: not JSON",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                "GEHEIMNIS",
            ),
        ),
        case(
            "reply: deeply nested",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                deep,
            ),
        ),
        case(
            "reply: deeply nested objects",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                deep_obj,
            ),
        ),
        case(
            "reply: unknown field",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                r#"{"type":"text","text":"GEHEIMNIS","to":"4915199990000"}"#,
            ),
        ),
        case(
            "reply: unknown type",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                r#"{"type":"payment","text":"GEHEIMNIS"}"#,
            ),
        ),
        case(
            "reply: text too long",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                serde_json::to_vec(&json!({"type":"text","text":"GEHEIMNIS".repeat(500)})).unwrap(),
            ),
        ),
        case(
            "reply: text of the wrong type",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                r#"{"type":"text","text":["GEHEIMNIS"]}"#,
            ),
        ),
        case(
            "reply: insecure link",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                r#"{"type":"image","link":"http://evil.example/x.jpg"}"#,
            ),
        ),
        case(
            "reply: file URL",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                r#"{"type":"document","link":"file:///etc/passwd"}"#,
            ),
        ),
        case(
            "reply: wrong content type",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), ("content-type", "text/plain")],
                r#"{"type":"text","text":"GEHEIMNIS"}"#,
            ),
        ),
        case(
            "reply: invalid UTF-8",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                b"{\"type\":\"text\",\"text\":\"\xff\xfe\"}".to_vec(),
            ),
        ),
        case(
            "reply: control characters in idempotency key",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[
                    ("authorization", key_a),
                    json_ct,
                    ("idempotency-key", &"x".repeat(300)),
                ],
                r#"{"type":"text","text":"x"}"#,
            ),
        ),
        case(
            "reply to another tenant's contact",
            post(
                &format!("/v1/conversations/{cb}/messages"),
                &[("authorization", key_a), json_ct],
                r#"{"type":"text","text":"GEHEIMNIS"}"#,
            ),
        ),
        case(
            "reply quoting an unknown message",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                r#"{"type":"text","text":"x","reply_to":"m_../../x"}"#,
            ),
        ),
        case(
            "reply sending another's upload",
            post(
                &format!("/v1/conversations/{ca}/messages"),
                &[("authorization", key_a), json_ct],
                r#"{"type":"document","media_id":"mu_00000000000000000000000000000000"}"#,
            ),
        ),
        case(
            "mark read of another tenant's contact",
            post(
                &format!("/v1/conversations/{cb}/read"),
                &[("authorization", key_a)],
                Body::empty(),
            ),
        ),
        case(
            "erase another tenant's contact with a bad id",
            Request::delete("/v1/contacts/c_%00%00")
                .header("authorization", key_a)
                .body(Body::empty())
                .unwrap(),
        ),
        case(
            "upload without contact",
            post(
                "/v1/media",
                &[
                    ("authorization", key_a),
                    ("content-type", "application/pdf"),
                ],
                "%PDF",
            ),
        ),
        case(
            "upload to another tenant's contact",
            post(
                &format!("/v1/media?contact_id={cb}"),
                &[
                    ("authorization", key_a),
                    ("content-type", "application/pdf"),
                ],
                "%PDF",
            ),
        ),
        case(
            "upload of an executable",
            post(
                &format!("/v1/media?contact_id={ca}"),
                &[
                    ("authorization", key_a),
                    ("content-type", "application/x-msdownload"),
                ],
                "MZ",
            ),
        ),
        case(
            "upload with a traversal file name",
            post(
                &format!("/v1/media?contact_id={ca}&filename=..%2F..%2Fx"),
                &[
                    ("authorization", key_a),
                    ("content-type", "application/pdf"),
                ],
                "%PDF",
            ),
        ),
        case("unknown route", get("/v1/../../etc/passwd", Some(key_a))),
        case("admin-looking route", get("/admin", Some(key_b))),
    ];
    cases.push(case(
        "huge header",
        post(
            hook,
            &[tok, ("x-padding", &"GEHEIMNIS".repeat(10_000))],
            "{",
        ),
    ));
    cases
}

#[tokio::test]
async fn every_bad_input_gets_a_4xx_problem_queues_nothing_and_echoes_nothing() {
    let a = app().await;
    let cases = corpus(&a);
    let n = cases.len();
    let mut report = Vec::new();
    for Case { name, request } in cases {
        let resp = a.router.clone().oneshot(request).await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(status.is_client_error(), "{name}: {status} {text}");
        assert_eq!(ct, "application/problem+json", "{name}: {text}");
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:relay:problem:")),
            "{name}: {text}"
        );
        assert_eq!(body["status"], status.as_u16(), "{name}");
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "{name}: the answer contains {secret:?}: {text}"
            );
        }
        report.push(format!("{status} {name}"));
    }
    assert!(
        a.rec.inbound.lock().unwrap().is_empty(),
        "something was queued for the router"
    );
    assert!(
        a.rec.jobs.lock().unwrap().is_empty(),
        "something was queued for reply-sender"
    );
    assert!(n >= 70, "the corpus has {n} cases");
    println!("{}", report.join("\n"));
    // And the relay still works after all of it.
    let ok = a
        .router
        .clone()
        .oneshot(post(
            "/webhooks/whatsapp/111",
            &[("authorization", "Bearer tok-a-secret")],
            webhook("hi"),
        ))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}
