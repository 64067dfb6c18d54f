//! The built-in demo's simulated WhatsApp, so the whole loop works on a fresh machine without
//! a 360dialog account: a stand-in for 360dialog's send API that accepts every message and
//! answers with `sent`, `delivered` and `read` status webhooks (through the relay's own webhook
//! route, as 360dialog would), and a customer page where the new user writes as a customer
//! and sees the pharmacy's answers. Mounted only by the demo (which serves on loopback only).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use relay_core::Clock;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the demo channel's sends go (its `api_base_url`, under the relay's own address).
pub const WHATSAPP_PATH: &str = "/demo/whatsapp";
/// The demo customer's WhatsApp number (a German mobile number from the test range).
pub const CUSTOMER: &str = "4915100000042";

#[derive(Clone)]
pub struct Demo {
    inner: Arc<Inner>,
}

struct Inner {
    /// The relay's own base URL (statuses and the customer's messages are posted there).
    base: String,
    phone_number_id: String,
    webhook_token: String,
    clock: Clock,
    http: reqwest::Client,
    next: AtomicU64,
    chat: Mutex<Vec<Line>>,
}

#[derive(Clone)]
struct Line {
    from_customer: bool,
    text: String,
    status: &'static str,
    wamid: String,
}

impl Demo {
    pub fn new(base: String, phone_number_id: &str, webhook_token: &str, clock: Clock) -> Self {
        Demo {
            inner: Arc::new(Inner {
                base,
                phone_number_id: phone_number_id.to_owned(),
                webhook_token: webhook_token.to_owned(),
                clock,
                http: reqwest::Client::new(),
                next: AtomicU64::new(1),
                chat: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route(&format!("{WHATSAPP_PATH}/messages"), post(send))
            .route("/demo/customer", get(customer_page).post(customer_writes))
            .with_state(self)
    }

    fn wamid(&self, prefix: &str) -> String {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        format!("wamid.{prefix}{:x}{n:06}", self.inner.clock.now())
    }

    fn chat(&self) -> std::sync::MutexGuard<'_, Vec<Line>> {
        self.inner.chat.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Posts a webhook to the relay's own route, as 360dialog would.
    async fn deliver(&self, value: Value) {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "0", "changes": [{"field": "messages", "value": value}]}]});
        let url = format!(
            "{}/webhooks/whatsapp/{}",
            self.inner.base, self.inner.phone_number_id
        );
        let result = self
            .inner
            .http
            .post(url)
            .bearer_auth(&self.inner.webhook_token)
            .json(&body)
            .send()
            .await;
        if !result.is_ok_and(|r| r.status().is_success()) {
            tracing::warn!("the demo's simulated WhatsApp could not deliver a webhook");
        }
    }

    fn metadata(&self) -> Value {
        json!({"display_phone_number": "4930000000", "phone_number_id": self.inner.phone_number_id})
    }
}

/// 360dialog's `POST /messages`: a send (answered with a wamid, then its statuses) or a read
/// receipt (answered with success).
async fn send(State(demo): State<Demo>, Json(body): Json<Value>) -> Response {
    if body.get("status").and_then(Value::as_str) == Some("read") {
        return Json(json!({"success": true})).into_response();
    }
    let to = body["to"].as_str().unwrap_or(CUSTOMER).to_owned();
    let kind = body["type"].as_str().unwrap_or("text");
    let text = match kind {
        "text" => body["text"]["body"].as_str().unwrap_or_default().to_owned(),
        "template" => format!(
            "[Vorlage {}]",
            body["template"]["name"].as_str().unwrap_or("?")
        ),
        other => format!("[{other}]"),
    };
    let wamid = demo.wamid("DEMOOUT");
    demo.chat().push(Line {
        from_customer: false,
        text,
        status: "sent",
        wamid: wamid.clone(),
    });
    let statuses = demo.clone();
    let id = wamid.clone();
    tokio::spawn(async move {
        for status in ["sent", "delivered", "read"] {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if let Some(line) = statuses.chat().iter_mut().find(|l| l.wamid == id) {
                line.status = status;
            }
            let ts = statuses.inner.clock.now();
            statuses
                .deliver(json!({"messaging_product": "whatsapp", "metadata": statuses.metadata(),
                    "statuses": [{"id": id, "status": status, "timestamp": ts.to_string(), "recipient_id": to,
                        "conversation": {"id": "demo-conversation", "origin": {"type": "service"}},
                        "pricing": {"billable": false, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"}}]}))
                .await;
        }
    });
    Json(json!({"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
        "messages": [{"id": wamid}]}))
    .into_response()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The demo customer's phone: what they wrote and what the pharmacy answered.
async fn customer_page(State(demo): State<Demo>) -> Response {
    let lines: String = demo
        .chat()
        .iter()
        .map(|l| {
            format!(
                "<li class=\"msg {}\">{}{}</li>",
                if l.from_customer { "out" } else { "in" },
                escape(&l.text),
                if l.from_customer {
                    String::new()
                } else {
                    format!(" <small class=\"meta\">{}</small>", l.status)
                }
            )
        })
        .collect();
    let html = format!(
        r#"<!doctype html><html lang="de"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="3"><title>Demo: Kundin am Handy</title>
<link rel="stylesheet" href="/assets/app.css"></head><body>
<main class="login"><h1>Demo: Kundin am Handy</h1>
<p class="hint">Nur in der Demo: Sie schreiben hier als Kundin (+{CUSTOMER}) an die Demo-Apotheke.
Die Antworten aus dem <a href="/inbox" target="_blank" rel="noopener">Posteingang</a> erscheinen hier.</p>
<ol class="messages" id="chat">{lines}</ol>
<form method="post" action="/demo/customer" class="card">
<label for="name">Name</label><input id="name" name="name" value="Erika Mustermann" maxlength="60">
<label for="text">Nachricht</label><textarea id="text" name="text" rows="2" maxlength="1000" required>Guten Tag, ist mein Rezept schon da?</textarea>
<button type="submit" id="write">Senden</button></form></main></body></html>"#
    );
    let mut r = Html(html).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(relay_web::CSP),
    );
    r
}

#[derive(Deserialize)]
struct Written {
    #[serde(default)]
    name: String,
    #[serde(default)]
    text: String,
}

async fn customer_writes(State(demo): State<Demo>, Form(form): Form<Written>) -> Response {
    let text: String = form.text.trim().chars().take(1000).collect();
    if text.is_empty() {
        return (StatusCode::UNPROCESSABLE_ENTITY, "empty message").into_response();
    }
    let name: String = form.name.trim().chars().take(60).collect();
    let wamid = demo.wamid("DEMOIN");
    demo.chat().push(Line {
        from_customer: true,
        text: text.clone(),
        status: "",
        wamid: wamid.clone(),
    });
    let ts = demo.inner.clock.now();
    demo.deliver(json!({"messaging_product": "whatsapp", "metadata": demo.metadata(),
        "contacts": [{"profile": {"name": if name.is_empty() { "Kundin" } else { &name }}, "wa_id": CUSTOMER}],
        "messages": [{"from": CUSTOMER, "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": text}}]}))
        .await;
    Redirect::to("/demo/customer").into_response()
}
