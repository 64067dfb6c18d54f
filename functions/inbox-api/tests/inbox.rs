//! The inbox API over the SQLite store: authentication, tenant isolation, pagination,
//! problems, and agreement with openapi.json.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use axum::body::Body;
use axum::http::{Request, StatusCode};
use inbox_api::{Inbox, OPENAPI, ROUTES, router};
use relay_core::config::RelayConfig;
use relay_core::directory::StaticDirectory;
use relay_core::ids::Pseudonymizer;
use relay_core::routing::Router;
use relay_embedded::{Database, SqliteMessageStore};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const NOW: i64 = 1_764_400_000;

const CONFIG: &str = r#"
[[tenants]]
id = "apotheke-a"
name = "A"
api_keys = ["sk_test_aaaaaaaaaaaaaaaa"]
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

async fn setup() -> axum::Router {
    let config = RelayConfig::parse(CONFIG, &|_| None).unwrap();
    let directory = Arc::new(StaticDirectory::from_config(&config));
    let store = Arc::new(SqliteMessageStore::new(Database::in_memory()));
    let r = Router::new(
        store.clone(),
        directory.clone(),
        Arc::new(Pseudonymizer::new([1; 32])),
    )
    .with_clock(Arc::new(|| NOW));
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
            let b = relay_core::envelope::envelopes("111", 0, w, 1 << 20)
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
        &relay_core::envelope::envelopes("222", 0, w, 1 << 20)
            .unwrap()
            .remove(0),
    )
    .await
    .unwrap();
    router(Inbox {
        directory,
        store,
        clock: Arc::new(|| NOW),
    })
    .fallback(relay_http::not_found)
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
    assert_eq!(convs.len(), 3);
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
        assert_eq!(method, "GET");
        let uri = path.replace("{contact_id}", "c_00000000000000000000000000000000");
        let (status, body) = get(&app, &uri, Some(KEY_A)).await;
        let unrouted = body["title"] == "No such resource";
        assert!(
            !unrouted,
            "{method} {path} is documented but not routed (status {status})"
        );
    }
}
