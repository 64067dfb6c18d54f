//! The web inbox's part of the hostile-input corpus: script and markup in every field a
//! customer controls (profile name, text, caption, file name, location name and address, shared
//! contact, reaction, button and list answers, quoted text, an unknown type's name), rendered
//! by the list, the conversation page and both refresh fragments. Nothing may come back as
//! markup: every `<` of theirs is escaped, no `href` holds anything but http(s), and pages carry
//! the strict CSP. (The browser test in crates/cli/tests/inbox.rs checks that nothing runs.)

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use axum::body::Body;
use axum::http::{Request, header};
use relay_core::Clock;
use relay_core::config::RelayConfig;
use relay_core::ids::{ContactId, Identity, TenantId};
use relay_core::ports::store_roles::*;
use relay_core::records::{ContactUpdate, Direction, StoredMessage};
use relay_core::staff::{self, Role, StaffAccount, StaffSession, StaffStore};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Payloads: each would run, or break out of its context, if it reached the page unescaped.
const PAYLOADS: &[&str] = &[
    "<script>window.__xss=1</script>",
    "\"><img src=x onerror=alert(1)>",
    "'><svg onload=alert(1)>",
    "</textarea><script>alert(1)</script>",
    "javascript:alert(1)",
    "<a href=\"javascript:alert(1)\">klick</a>",
    "{{7*7}}{% raw %}",
    "<iframe src=//evil.example></iframe>",
    "&lt;script&gt;",
];

/// Markup that may appear only if it is ours, never built from a payload.
const FORBIDDEN: &[&str] = &[
    "<script>window",
    "<img src=x",
    "<svg",
    "</textarea><script",
    "<iframe",
    "href=\"javascript:",
    "href='javascript:",
    "<a href=\"javascript",
];

fn message(
    tenant: &TenantId,
    contact: &ContactId,
    p: &relay_core::ids::Pseudonymizer,
    n: usize,
    (kind, text, content): (&str, Option<String>, Value),
    now: i64,
) -> StoredMessage {
    let wamid = format!("wamid.HOSTILE{n}");
    let wamid_key = p.wamid_key(tenant, &wamid);
    StoredMessage {
        id: format!("m_{wamid_key}"),
        wamid,
        wamid_key,
        contact_id: contact.clone(),
        direction: Direction::Inbound,
        kind: kind.into(),
        text,
        content,
        timestamp: now - 100 + n as i64,
        received_at: now,
        status: None,
        error: None,
        reply_to: Some("wamid.HOSTILE0".into()),
        referral: None,
        media: None,
        origin: None,
        expires_at: now + 86_400,
    }
}

#[tokio::test]
async fn customer_text_never_becomes_markup() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let local = relay_embedded::Local::open(dir.path(), clock.clone()).unwrap();
    let backends = local.backends(&RelayConfig::demo());
    let tenant = TenantId::parse("demo-apotheke").unwrap();
    let now = clock.now();
    let p = &local.pseudonymizer;
    let mut contacts = Vec::new();
    for (i, payload) in PAYLOADS.iter().enumerate() {
        let wa_id = format!("4915190000{i:03}");
        let contact = p.contact_id(&tenant, Identity::WaId(&wa_id));
        let kinds: Vec<(&str, Option<String>, Value)> = vec![
            (
                "text",
                Some(payload.to_string()),
                json!({"text": {"body": payload}}),
            ),
            (
                "image",
                Some(payload.to_string()),
                json!({"image": {"id": "1", "caption": payload}}),
            ),
            (
                "document",
                None,
                json!({"document": {"id": "2", "filename": payload, "caption": payload}}),
            ),
            (
                "location",
                None,
                json!({"location": {"latitude": 52.5, "longitude": 13.4, "name": payload, "address": payload}}),
            ),
            (
                "contacts",
                None,
                json!({"contacts": [{"name": {"formatted_name": payload}, "phones": [{"phone": payload}]}]}),
            ),
            (
                "reaction",
                None,
                json!({"reaction": {"message_id": "wamid.unknown", "emoji": payload}}),
            ),
            (
                "interactive",
                None,
                json!({"interactive": {"type": "button_reply", "button_reply": {"id": "b", "title": payload}}}),
            ),
            (
                "button",
                None,
                json!({"button": {"text": payload, "payload": payload}}),
            ),
            (
                "unsupported",
                None,
                json!({"unsupported": {"type": payload}}),
            ),
        ];
        for (n, item) in kinds.into_iter().enumerate() {
            let m = message(&tenant, &contact, p, i * 100 + n, item, now);
            let update = ContactUpdate {
                contact_id: contact.clone(),
                phone_number_id: "106540352242922".into(),
                name: Some(payload.to_string()),
                wa_id: Some(wa_id.clone()),
                user_id: None,
                username: Some(payload.to_string()),
                parent_user_id: None,
                last_inbound_at: now,
                last_message_at: now,
                unread: true,
                expires_at: now + 86_400,
                identity_keys: vec![],
            };
            backends
                .store
                .record_inbound(&tenant, &m, &update)
                .await
                .unwrap();
        }
        contacts.push(contact);
    }
    let account = StaffAccount {
        id: staff::new_staff_id(),
        tenant: tenant.clone(),
        email: "anna@apotheke.example".into(),
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
            csrf: "c".into(),
            created_at: now,
            last_seen: now,
            expires_at: now + 3600,
        })
        .await
        .unwrap();
    let router = relay_web::router(
        relay_web::Web::build(&backends, relay_web::WebSettings::default()).unwrap(),
    );
    let get = |path: String| {
        let router = router.clone();
        let cookie = format!("relay_session={token}");
        async move {
            let resp = router
                .oneshot(
                    Request::get(&path)
                        .header(header::COOKIE, cookie)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{path}");
            let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe"),
                "{path}: {csp}"
            );
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            String::from_utf8(body.to_vec()).unwrap()
        }
    };
    let mut pages = vec![get("/inbox".into()).await, get("/inbox/list".into()).await];
    for c in &contacts {
        pages.push(get(format!("/inbox/c/{c}")).await);
        pages.push(get(format!("/inbox/c/{c}/messages")).await);
    }
    for html in &pages {
        for bad in FORBIDDEN {
            assert!(!html.contains(bad), "{bad:?} reached the page as markup");
        }
        // Our own script tag is the only one, and it has a src.
        assert_eq!(
            html.matches("<script").count(),
            html.matches("<script src=\"/assets/app.js\"").count()
        );
        for href in html.split("href=\"").skip(1) {
            let target = &href[..href.find('"').unwrap()];
            assert!(
                target.starts_with('/')
                    || target.starts_with("https://")
                    || target.starts_with("http://"),
                "an href that is neither ours nor http(s): {target}"
            );
        }
    }
    // The payloads are there, as text.
    let conversation = &pages[2];
    assert!(
        conversation.contains("&lt;script&gt;window.__xss=1&lt;/script&gt;")
            || conversation.contains("&#60;script&#62;window.__xss=1&#60;/script&#62;"),
        "{conversation}"
    );
}
