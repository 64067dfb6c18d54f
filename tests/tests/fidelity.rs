//! Webhook shapes beyond plain messages, each through the receiver and the router on both
//! backends (local mode's SQLite and queue; DynamoDB and SQS on moto): a Meta app serving
//! several pharmacies, identity changes, and the other fields WhatsApp sends.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use axum::body::Body;
use axum::http::Request;
use relay_core::backends::Backends;
use relay_core::config::RelayConfig;
use relay_core::ids::TenantId;
use relay_core::ports::store_roles::*;
use relay_core::records::{Conversation, PageRequest, StoredMessage};
use relay_core::tenant::sign_hub_signature;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

const CONFIG: &str = r#"
[[tenants]]
id = "apotheke-a"
name = "A"
api_keys = ["sk_a_0123456789abcdef"]
[[tenants.channels]]
phone_number_id = "401"
provider = "meta"
app = "777"
waba_id = "901"

[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok"

[[tenants]]
id = "apotheke-b"
name = "B"
api_keys = ["sk_b_0123456789abcdef"]
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

# An IT provider's app, serving both pharmacies; and another app.
[[meta_apps]]
id = "777"
app_secret = "secret-777"
verify_token = "verify-777"

[[meta_apps]]
id = "888"
app_secret = "secret-888"
verify_token = "verify-888"
"#;

// One per test run: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Kept {
    Local(#[allow(dead_code)] tempfile::TempDir, relay_embedded::Local),
    Aws(
        #[allow(dead_code)] relay_e2e::Moto,
        relay_aws::Clients,
        relay_e2e::Deployment,
    ),
}

/// One backend's pipeline: the receiver's routes, the router, and the stores to look at.
struct Pipe {
    name: &'static str,
    receiver: axum::Router,
    router: relay_core::routing::Router,
    backends: Backends,
    kept: Kept,
}

impl Pipe {
    async fn local() -> Pipe {
        let dir = tempfile::tempdir().unwrap();
        let local = relay_embedded::Local::open(dir.path(), relay_core::Clock::system()).unwrap();
        let backends = local.backends(&RelayConfig::parse(CONFIG, &|_| None).unwrap());
        Pipe {
            name: "local",
            receiver: webhook_receiver::router(
                webhook_receiver::Receiver::build(&backends).unwrap(),
            ),
            router: backends.router(),
            backends,
            kept: Kept::Local(dir, local),
        }
    }

    async fn aws(prefix: &str) -> Pipe {
        let moto = relay_e2e::Moto::start().unwrap();
        let clients = moto.clients().await;
        let d = relay_e2e::deploy(&clients, prefix, 5, CONFIG)
            .await
            .unwrap();
        let clock = relay_core::Clock::system();
        let backends_of = |function: &str| {
            relay_aws::Aws::with_clients(d.settings(function).unwrap(), clients.clone())
        };
        let receiver = webhook_receiver::router(
            webhook_receiver::Receiver::build(
                &backends_of("webhook-receiver")
                    .backends(clock.clone())
                    .await
                    .unwrap(),
            )
            .unwrap(),
        );
        let router = backends_of("message-router")
            .backends(clock.clone())
            .await
            .unwrap()
            .router();
        let backends = backends_of("inbox-api")
            .backends_with_media(clock)
            .await
            .unwrap();
        Pipe {
            name: "aws",
            receiver,
            router,
            backends,
            kept: Kept::Aws(moto, clients, d),
        }
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
        let mut req = Request::post(path).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .receiver
            .clone()
            .oneshot(req.body(Body::from(body.to_vec())).unwrap())
            .await
            .unwrap();
        resp.status().as_u16()
    }

    /// Signed by Meta app 777, to the app's URL.
    async fn post_app(&self, body: &Value) -> u16 {
        let bytes = body.to_string().into_bytes();
        let sig = sign_hub_signature(b"secret-777", &bytes);
        self.post(
            "/webhooks/meta/777",
            &[("x-hub-signature-256", &sig)],
            &bytes,
        )
        .await
    }

    /// A 360dialog webhook to channel 111 (tenant A).
    async fn post_360(&self, body: &Value) -> u16 {
        self.post(
            "/webhooks/whatsapp/111",
            &[("authorization", "Bearer tok")],
            body.to_string().as_bytes(),
        )
        .await
    }

    /// Routes everything queued, as the event source (or `relay serve`) would; returns the
    /// bodies it routed.
    async fn drain(&self) -> Vec<String> {
        let mut routed = Vec::new();
        loop {
            let batch: Vec<(String, String)> = match &self.kept {
                Kept::Local(_, local) => local
                    .queue
                    .receive(10, Duration::from_secs(30))
                    .unwrap()
                    .into_iter()
                    .map(|m| (m.receipt, m.body))
                    .collect(),
                Kept::Aws(_, clients, d) => clients
                    .sqs
                    .receive_message()
                    .queue_url(&d.queue_url)
                    .max_number_of_messages(10)
                    .visibility_timeout(30)
                    .send()
                    .await
                    .unwrap()
                    .messages
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| (m.receipt_handle.unwrap(), m.body.unwrap()))
                    .collect(),
            };
            if batch.is_empty() {
                return routed;
            }
            for (receipt, body) in batch {
                self.router.route(&body).await.unwrap();
                match &self.kept {
                    Kept::Local(_, local) => {
                        local.queue.delete(&receipt).unwrap();
                    }
                    Kept::Aws(_, clients, d) => {
                        clients
                            .sqs
                            .delete_message()
                            .queue_url(&d.queue_url)
                            .receipt_handle(receipt)
                            .send()
                            .await
                            .unwrap();
                    }
                }
                routed.push(body);
            }
        }
    }

    fn now(&self) -> i64 {
        self.backends.clock.now()
    }

    async fn conversations(&self, tenant: &str) -> Vec<Conversation> {
        self.backends
            .store
            .list_conversations(&tenant_id(tenant), &PageRequest::first(50), self.now())
            .await
            .unwrap()
            .items
    }

    async fn messages(&self, tenant: &str, c: &Conversation) -> Vec<StoredMessage> {
        self.backends
            .store
            .list_messages(
                &tenant_id(tenant),
                &c.contact_id,
                &PageRequest::first(50),
                self.now(),
            )
            .await
            .unwrap()
            .items
    }
}

fn tenant_id(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

/// Both backends, one after the other.
async fn each_backend(prefix: &str) -> [Pipe; 2] {
    [Pipe::local().await, Pipe::aws(prefix).await]
}

fn webhook(entries: Vec<Value>) -> Value {
    json!({"object": "whatsapp_business_account", "entry": entries})
}

/// A text message to `pnid` from `from`, as Meta sends it (developers.facebook.com, webhooks
/// "messages" reference: text).
fn text_change(pnid: &str, from: &str, id: &str, ts: i64, body: &str) -> Value {
    json!({"field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "4930000000", "phone_number_id": pnid},
        "contacts": [{"profile": {"name": "Kundin"}, "wa_id": from}],
        "messages": [{"from": from, "id": id, "timestamp": ts.to_string(), "type": "text",
                      "text": {"body": body}}]}})
}

#[tokio::test]
async fn a_meta_app_serving_two_pharmacies_files_each_event_under_its_numbers_tenant() {
    for pipe in each_backend("fid-app").await {
        let now = pipe.now();
        // The template whose status update comes through the app's URL (tenant B's account).
        let templates = pipe.backends.templates.clone().unwrap();
        templates
            .replace_templates(
                &tenant_id("apotheke-b"),
                &[relay_core::templates::Template {
                    name: "abholbereit".into(),
                    language: "de".into(),
                    category: "UTILITY".into(),
                    status: "PENDING".into(),
                    body: "Ihre Bestellung liegt bereit.".into(),
                    params: 0,
                    updated_at: now,
                    quality: None,
                }],
            )
            .await
            .unwrap();
        let body = webhook(vec![
            json!({"id": "901", "changes": [text_change("401", "4915100000001", "wamid.APP.A1", now, "Rezept A")]}),
            json!({"id": "902", "changes": [
                text_change("402", "4915100000002", "wamid.APP.B1", now, "Rezept B"),
                // developers.facebook.com, webhooks "message_template_status_update" reference
                {"field": "message_template_status_update", "value": {"event": "APPROVED",
                 "message_template_id": 594425479261596u64, "message_template_name": "abholbereit",
                 "message_template_language": "de", "reason": "NONE"}}]}),
            // Another app's number, and a number nobody has.
            json!({"id": "903", "changes": [text_change("403", "4915100000003", "wamid.APP.C1", now, "C")]}),
            json!({"id": "904", "changes": [text_change("499", "4915100000004", "wamid.APP.D1", now, "D")]}),
        ]);
        assert_eq!(pipe.post_app(&body).await, 200, "{}", pipe.name);
        // Delivered twice (Meta retries): nothing is stored twice.
        assert_eq!(pipe.post_app(&body).await, 200, "{}", pipe.name);
        pipe.drain().await;

        for (tenant, text) in [("apotheke-a", "Rezept A"), ("apotheke-b", "Rezept B")] {
            let list = pipe.conversations(tenant).await;
            assert_eq!(list.len(), 1, "{}: {tenant}", pipe.name);
            let messages = pipe.messages(tenant, &list[0]).await;
            let texts: Vec<_> = messages.iter().map(|m| m.text.clone().unwrap()).collect();
            assert_eq!(texts, [text], "{}: {tenant}", pipe.name);
        }
        let t = templates.templates(&tenant_id("apotheke-b")).await.unwrap();
        assert_eq!(t[0].status, "APPROVED", "{}", pipe.name);
        let untouched = templates.templates(&tenant_id("apotheke-a")).await.unwrap();
        assert!(untouched.is_empty(), "{}", pipe.name);

        let quarantined = pipe.backends.store.list_quarantine(10, now).await.unwrap();
        assert_eq!(quarantined.len(), 2, "{}: {quarantined:?}", pipe.name);
        for q in &quarantined {
            assert_eq!(
                q.reason, "event names a number outside the Meta app that signed it",
                "{}",
                pipe.name
            );
        }
        let mut named: Vec<&str> = quarantined
            .iter()
            .map(|q| q.phone_number_id.as_str())
            .collect();
        named.sort();
        assert_eq!(named, ["403", "499"], "{}", pipe.name);
    }
}

/// A text message to channel 111 from a customer with a number and a BSUID (Meta's 2026
/// shape: developers.facebook.com, "business-scoped user IDs").
fn text_360(wa_id: Option<&str>, bsuid: Option<&str>, id: &str, ts: i64, body: &str) -> Value {
    let mut contact = json!({"profile": {"name": "Erika"}});
    let mut message =
        json!({"id": id, "timestamp": ts.to_string(), "type": "text", "text": {"body": body}});
    if let Some(w) = wa_id {
        contact["wa_id"] = json!(w);
        message["from"] = json!(w);
    }
    if let Some(b) = bsuid {
        contact["user_id"] = json!(b);
        message["from_user_id"] = json!(b);
    }
    webhook(vec![
        json!({"id": "900", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "4930000000", "phone_number_id": "111"},
        "contacts": [contact], "messages": [message]}}]}),
    ])
}

#[tokio::test]
async fn a_customer_who_changes_number_and_bsuid_stays_one_contact_opted_out_and_is_erased_whole() {
    const OLD: &str = "4915111111111";
    const NEW: &str = "4915222222222";
    for pipe in each_backend("fid-identity").await {
        let now = pipe.now();
        let day = 86_400;
        let a = "apotheke-a";
        let mut queued = Vec::new();
        // Two days ago: a question, then STOP (outside the window now: no confirmation).
        for (id, ts, body) in [
            ("wamid.ID1", now - 3 * day, "Hallo"),
            ("wamid.ID2", now - 2 * day, "STOP"),
        ] {
            assert_eq!(
                pipe.post_360(&text_360(Some(OLD), Some("DE.OLD1"), id, ts, body))
                    .await,
                200
            );
        }
        queued.extend(pipe.drain().await);
        let before = pipe.conversations(a).await;
        assert_eq!(before.len(), 1, "{}", pipe.name);
        assert!(before[0].opted_out, "{}", pipe.name);
        let window_from = before[0].last_inbound_at;

        // A day ago the number changed: Meta's system message (developers.facebook.com,
        // webhooks reference "messages/system": no contacts array; `from` the old number,
        // `system.wa_id` the new one).
        let change = webhook(vec![
            json!({"id": "900", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "4930000000", "phone_number_id": "111"},
            "messages": [{"from": OLD, "id": "wamid.SYS1", "timestamp": (now - day).to_string(),
                "type": "system", "system": {"body": format!("User Erika changed from {OLD} to {NEW}"),
                "wa_id": NEW, "type": "user_changed_number"}}]}}]}),
        ]);
        assert_eq!(pipe.post_360(&change).await, 200);
        // The new number's BSUID (field user_id_update; shape as documented by BSP guides of
        // Meta's 2026 BSUID rollout, e.g. dualhook.com "BSUID webhook changes").
        let rotation = webhook(vec![
            json!({"id": "900", "changes": [{"field": "user_id_update", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "4930000000", "phone_number_id": "111"},
            "contacts": [{"profile": {"name": "Erika"}, "wa_id": NEW}],
            "user_id_update": [{"wa_id": NEW, "detail": "User id for Erika has been updated.",
                "user_id": {"previous": "DE.OLD1", "current": "DE.NEW1"},
                "timestamp": (now - day + 60).to_string()}]}}]}),
        ]);
        assert_eq!(pipe.post_360(&rotation).await, 200);
        // Both delivered twice.
        assert_eq!(pipe.post_360(&change).await, 200);
        assert_eq!(pipe.post_360(&rotation).await, 200);
        queued.extend(pipe.drain().await);

        let after = pipe.conversations(a).await;
        assert_eq!(after.len(), 1, "{}: one contact, not two", pipe.name);
        let c = &after[0];
        assert_eq!(c.contact_id, before[0].contact_id, "{}", pipe.name);
        assert!(c.opted_out, "{}: the opt-out carried over", pipe.name);
        assert_eq!(
            c.last_inbound_at, window_from,
            "{}: a notice opens no window",
            pipe.name
        );
        let record = pipe
            .backends
            .store
            .contact(&tenant_id(a), &c.contact_id, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (record.wa_id.as_deref(), record.user_id.as_deref()),
            (Some(NEW), Some("DE.NEW1")),
            "{}: replies go to the new identity",
            pipe.name
        );
        let kinds: Vec<String> = pipe
            .messages(a, c)
            .await
            .iter()
            .map(|m| m.kind.clone())
            .collect();
        assert_eq!(kinds, ["system", "system", "text", "text"], "{}", pipe.name);

        // The customer writes under the new BSUID only (number hidden): the same conversation.
        assert_eq!(
            pipe.post_360(&text_360(
                None,
                Some("DE.NEW1"),
                "wamid.ID3",
                now,
                "Neue Nummer"
            ))
            .await,
            200
        );
        queued.extend(pipe.drain().await);
        let list = pipe.conversations(a).await;
        assert_eq!(list.len(), 1, "{}", pipe.name);
        assert_eq!(pipe.messages(a, &list[0]).await.len(), 5, "{}", pipe.name);
        assert!(list[0].opted_out, "{}: still opted out", pipe.name);

        // Erased: every queued copy (a redelivery, a dead letter) is unreadable, under every
        // identity the customer had, and nothing comes back.
        let receipt = pipe
            .backends
            .privacy()
            .unwrap()
            .erase(&tenant_id(a), &c.contact_id, now)
            .await
            .unwrap();
        assert!(receipt.key_destroyed, "{}", pipe.name);
        for body in &queued {
            let report = pipe.router.route(body).await.unwrap();
            assert_eq!(report.stored, 0, "{}: {report:?}", pipe.name);
        }
        assert!(
            pipe.conversations(a).await.is_empty(),
            "{}: the erased contact came back",
            pipe.name
        );
    }
}

/// A coexistence change to channel 111 (`smb_message_echoes`, `history`, `smb_app_state_sync`).
fn coexistence(field: &str, value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] = json!({"display_phone_number": "4930000000", "phone_number_id": "111"});
    webhook(vec![
        json!({"id": "900", "changes": [{"field": field, "value": value}]}),
    ])
}

#[tokio::test]
async fn the_business_apps_messages_history_and_names_join_the_customers_conversation() {
    const ECHOED: &str = "4915333333333";
    const HISTORY: &str = "4915444444444";
    const BUSINESS: &str = "4930000000";
    for pipe in each_backend("fid-coexist").await {
        let now = pipe.now();
        let day = 86_400;
        let a = "apotheke-a";
        // Sent from the Business app (360dialog "coexistence webhooks" page and Meta's
        // smb_message_echoes reference: `message_echoes[]` with `from` the business, `to` the
        // customer).
        let echo = coexistence(
            "smb_message_echoes",
            json!({"message_echoes": [{
            "from": BUSINESS, "to": ECHOED, "id": "wamid.ECHO.1", "timestamp": now.to_string(),
            "type": "text", "text": {"body": "Ihre Bestellung liegt bereit."}}]}),
        );
        assert_eq!(pipe.post_360(&echo).await, 200);
        assert_eq!(pipe.post_360(&echo).await, 200);

        // A history chunk of about 2 MB: one thread, 480 messages of 4000 characters, the
        // customer's and the business's in turn (Meta's history reference: `history[]` with
        // `metadata{phase, chunk_order, progress}` and `threads[]{id, messages[]}`, each
        // message with `history_context.status`).
        let n = 480;
        let messages: Vec<Value> = (0..n)
            .map(|i| {
                let from = if i % 2 == 0 { HISTORY } else { BUSINESS };
                json!({"from": from, "id": format!("wamid.HIST.{i}"),
                       "timestamp": (now - 30 * day + i as i64 * 60).to_string(), "type": "text",
                       "text": {"body": format!("{i:04} {}", "x".repeat(3995))},
                       "history_context": {"status": "READ"}})
            })
            .collect();
        let history = coexistence(
            "history",
            json!({"history": [{
            "metadata": {"phase": 1, "chunk_order": 1, "progress": 40},
            "threads": [{"id": HISTORY, "messages": messages}]}]}),
        );
        let size = history.to_string().len();
        assert!(size > 1_900_000, "{size}");
        assert_eq!(pipe.post_360(&history).await, 200, "{}: no 413", pipe.name);

        // The address book: a known customer's name, and someone who never wrote.
        let names = coexistence(
            "smb_app_state_sync",
            json!({"state_sync": [
            {"type": "contact", "action": "add", "metadata": {"timestamp": now.to_string()},
             "contact": {"full_name": "Familie Muster", "first_name": "Familie", "phone_number": HISTORY}},
            {"type": "contact", "action": "add", "metadata": {"timestamp": now.to_string()},
             "contact": {"full_name": "Nur im Adressbuch", "phone_number": "4915999999999"}}]}),
        );
        let queued_first = pipe.drain().await;
        assert_eq!(pipe.post_360(&names).await, 200);
        let mut queued = queued_first;
        queued.extend(pipe.drain().await);

        let list = pipe.conversations(a).await;
        assert_eq!(
            list.len(),
            2,
            "{}: nobody added from the address book",
            pipe.name
        );
        let echoed = list.iter().find(|c| c.name.is_none()).unwrap();
        let msgs = pipe.messages(a, echoed).await;
        assert_eq!(msgs.len(), 1, "{}", pipe.name);
        assert_eq!(msgs[0].direction, relay_core::records::Direction::Outbound);
        assert_eq!(
            msgs[0].origin,
            Some(relay_core::webhook::Origin::BusinessApp)
        );
        assert_eq!(
            msgs[0].text.as_deref(),
            Some("Ihre Bestellung liegt bereit.")
        );
        assert_eq!(echoed.unread, 0, "{}", pipe.name);
        assert!(
            echoed.last_inbound_at.unwrap_or(0) == 0,
            "{}: the business app's message opens no window",
            pipe.name
        );

        let imported = list.iter().find(|c| c.name.is_some()).unwrap();
        assert_eq!(
            imported.name.as_deref(),
            Some("Familie Muster"),
            "{}",
            pipe.name
        );
        assert_eq!(imported.unread, 0, "{}", pipe.name);
        let mut all = Vec::new();
        let mut page = PageRequest::first(200);
        loop {
            let got = pipe
                .backends
                .store
                .list_messages(&tenant_id(a), &imported.contact_id, &page, now)
                .await
                .unwrap();
            all.extend(got.items);
            match got.next_cursor {
                Some(cursor) => {
                    page = PageRequest {
                        cursor: Some(cursor),
                        limit: 200,
                    }
                }
                None => break,
            }
        }
        assert_eq!(
            all.len(),
            n,
            "{}: the whole chunk, nothing dropped",
            pipe.name
        );
        assert!(
            all.iter()
                .all(|m| m.origin == Some(relay_core::webhook::Origin::History))
        );
        let outbound = all
            .iter()
            .filter(|m| m.direction == relay_core::records::Direction::Outbound)
            .count();
        assert_eq!(outbound, n / 2, "{}", pipe.name);
        assert!(
            all.iter()
                .filter(|m| m.direction == relay_core::records::Direction::Outbound)
                .all(|m| m.status == Some(relay_core::webhook::DeliveryStatus::Read))
        );
        assert!(
            all.iter().all(|m| m.text.as_ref().unwrap().len() == 4000),
            "{}: no message cut",
            pipe.name
        );

        // Erased with the contact: every queued piece of the history no longer opens.
        pipe.backends
            .privacy()
            .unwrap()
            .erase(&tenant_id(a), &imported.contact_id, now)
            .await
            .unwrap();
        let mut replayed = 0;
        for body in &queued {
            let report = pipe.router.route(body).await.unwrap();
            replayed += report.stored;
        }
        assert_eq!(replayed, 0, "{}", pipe.name);
        let left = pipe.conversations(a).await;
        assert_eq!(
            left.len(),
            1,
            "{}: only the other customer is left",
            pipe.name
        );
    }
}

#[tokio::test]
async fn a_customer_who_stops_marketing_gets_no_marketing_template_and_template_updates_are_kept() {
    use relay_core::replies::{Refusal, ReplyCommand, ReplyPorts, queue_reply};
    for pipe in each_backend("fid-prefs").await {
        let now = pipe.now();
        let a = "apotheke-a";
        let tenant = tenant_id(a);
        let templates = pipe.backends.templates.clone().unwrap();
        let template = |name: &str, category: &str| relay_core::templates::Template {
            name: name.into(),
            language: "de".into(),
            category: category.into(),
            status: "APPROVED".into(),
            body: "Text".into(),
            params: 0,
            updated_at: now,
            quality: None,
        };
        templates
            .replace_templates(
                &tenant,
                &[
                    template("angebot", "MARKETING"),
                    template("abholbereit", "UTILITY"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            pipe.post_360(&text_360(
                Some("4915155555555"),
                None,
                "wamid.PREF1",
                now,
                "Hallo"
            ))
            .await,
            200
        );
        pipe.drain().await;
        let contact = pipe.conversations(a).await.remove(0).contact_id;

        // Meta's user_preferences webhook (developers.facebook.com, webhooks reference
        // "user_preferences": the user stopped marketing messages).
        let prefs = |value: &str, ts: i64| {
            coexistence(
                "user_preferences",
                json!({
                "contacts": [{"profile": {"name": "Erika"}, "wa_id": "4915155555555"}],
                "user_preferences": [{"wa_id": "4915155555555", "detail": "User requested to stop marketing messages",
                    "category": "marketing_messages", "value": value, "timestamp": ts.to_string()}]}),
            )
        };
        assert_eq!(pipe.post_360(&prefs("stop", now + 1)).await, 200);
        pipe.drain().await;
        let send = |name: &'static str| {
            let reply = relay_core::outbound::ValidReply {
                kind: "template",
                object: json!({"name": name, "language": {"code": "de"}}),
                display_text: None,
                reply_to: None,
                is_template: true,
            };
            let backends = &pipe.backends;
            let (tenant, contact) = (tenant.clone(), contact.clone());
            async move {
                let outbound = backends.outbound().unwrap();
                let ports = ReplyPorts {
                    store: backends.store.as_ref(),
                    directory: backends.directory.as_ref(),
                    outbound: outbound.as_ref(),
                    templates: backends.templates.as_deref(),
                };
                queue_reply(
                    &ports,
                    ReplyCommand {
                        tenant: &tenant,
                        contact: &contact,
                        reply: &reply,
                        idempotency: None,
                        now,
                    },
                )
                .await
            }
        };
        assert!(
            matches!(send("angebot").await, Err(Refusal::MarketingStopped)),
            "{}",
            pipe.name
        );
        assert!(
            send("abholbereit").await.is_ok(),
            "{}: utility templates still go",
            pipe.name
        );
        let ledger = pipe
            .backends
            .store
            .consent_ledger(&tenant, &contact, now)
            .await
            .unwrap();
        assert!(
            ledger
                .iter()
                .any(|e| e.event == relay_core::records::ConsentEvent::MarketingStopped)
        );
        assert!(
            !pipe.conversations(a).await[0].opted_out,
            "{}: not an opt-out",
            pipe.name
        );

        // Meta moves the utility template to marketing, and rates its quality.
        let update = |field: &str, value: Value| {
            webhook(vec![
                json!({"id": "900", "changes": [{"field": field, "value": value}]}),
            ])
        };
        assert_eq!(pipe.post_360(&update("template_category_update", json!({
            "message_template_id": 1234, "message_template_name": "abholbereit",
            "message_template_language": "de", "previous_category": "UTILITY", "new_category": "MARKETING"}))).await, 200);
        assert_eq!(pipe.post_360(&update("message_template_quality_update", json!({
            "previous_quality_score": "GREEN", "new_quality_score": "YELLOW", "message_template_id": 1234,
            "message_template_name": "abholbereit", "message_template_language": "de"}))).await, 200);
        pipe.drain().await;
        let kept = templates.templates(&tenant).await.unwrap();
        let t = kept.iter().find(|t| t.name == "abholbereit").unwrap();
        assert_eq!(
            (t.category.as_str(), t.quality.as_deref()),
            ("MARKETING", Some("YELLOW")),
            "{}",
            pipe.name
        );
        assert!(
            matches!(send("abholbereit").await, Err(Refusal::MarketingStopped)),
            "{}",
            pipe.name
        );

        // Resumed (a newer entry): marketing goes again.
        assert_eq!(pipe.post_360(&prefs("resume", now + 2)).await, 200);
        pipe.drain().await;
        assert!(send("angebot").await.is_ok(), "{}", pipe.name);
    }
}

#[tokio::test]
async fn statuses_naming_only_a_bsuid_or_nobody_are_the_messages_contacts_and_go_with_its_erasure()
{
    const CUSTOMER: &str = "4915166666666";
    for pipe in each_backend("fid-status").await {
        let now = pipe.now();
        let a = "apotheke-a";
        // Our message to the customer's number (here: sent from the Business app).
        let echo = coexistence(
            "smb_message_echoes",
            json!({"message_echoes": [{
            "from": "4930000000", "to": CUSTOMER, "id": "wamid.OUT.S1", "timestamp": now.to_string(),
            "type": "text", "text": {"body": "Ihr Rezept ist da."}}]}),
        );
        assert_eq!(pipe.post_360(&echo).await, 200);
        let mut queued = pipe.drain().await;
        // Its statuses as Meta sends them from 2026 (business-scoped user ids page):
        // delivered and read with `contacts` and `recipient_user_id` only (the number hidden),
        // and a failed one without `contacts` or any recipient.
        let statuses = coexistence(
            "messages",
            json!({
            "contacts": [{"profile": {"name": "Erika"}, "user_id": "DE.S1"}],
            "statuses": [
                {"id": "wamid.OUT.S1", "status": "delivered", "timestamp": (now + 1).to_string(),
                 "recipient_user_id": "DE.S1"},
                {"id": "wamid.OUT.S1", "status": "read", "timestamp": (now + 2).to_string(),
                 "recipient_user_id": "DE.S1"},
                {"id": "wamid.OUT.S1", "status": "failed", "timestamp": (now + 3).to_string(),
                 "errors": [{"code": 131026, "title": "Message undeliverable"}]}]}),
        );
        assert_eq!(pipe.post_360(&statuses).await, 200);
        queued.extend(pipe.drain().await);
        let list = pipe.conversations(a).await;
        assert_eq!(
            list.len(),
            1,
            "{}: no second contact for the BSUID",
            pipe.name
        );
        let contact = &list[0].contact_id;
        let key = pipe
            .backends
            .pseudonymizer
            .wamid_key(&tenant_id(a), "wamid.OUT.S1");
        let kept = pipe
            .backends
            .store
            .statuses(&tenant_id(a), &key, now)
            .await
            .unwrap();
        assert_eq!(kept.len(), 3, "{}", pipe.name);
        assert!(
            kept.iter().all(|s| s.contact_id.as_ref() == Some(contact)),
            "{}: {kept:?}",
            pipe.name
        );
        // The BSUID is now the contact's: a message under it alone joins the conversation.
        assert_eq!(
            pipe.post_360(&text_360(
                None,
                Some("DE.S1"),
                "wamid.IN.S2",
                now + 4,
                "Danke"
            ))
            .await,
            200
        );
        queued.extend(pipe.drain().await);
        assert_eq!(pipe.conversations(a).await.len(), 1, "{}", pipe.name);

        pipe.backends
            .privacy()
            .unwrap()
            .erase(&tenant_id(a), contact, now)
            .await
            .unwrap();
        // Replayed (a redelivery, a dead letter): what named the customer no longer opens.
        // Only the failed status comes back, as it came: it names nobody and holds no more
        // than the message id and the error.
        let mut stored = 0;
        for body in &queued {
            stored += pipe.router.route(body).await.unwrap().stored;
        }
        assert_eq!(stored, 1, "{}", pipe.name);
        assert!(pipe.conversations(a).await.is_empty(), "{}", pipe.name);
        let left = pipe
            .backends
            .store
            .statuses(&tenant_id(a), &key, now)
            .await
            .unwrap();
        assert!(
            left.iter().all(|s| s.contact_id.is_none()
                && s.status == relay_core::webhook::DeliveryStatus::Failed),
            "{}: {left:?}",
            pipe.name
        );
    }
}

#[tokio::test]
async fn what_whatsapp_charges_is_counted_once_per_message_and_estimated() {
    for pipe in each_backend("fid-usage").await {
        let now = pipe.now();
        let month = relay_core::usage::month_of(now).unwrap();
        // Two marketing messages; each has sent, delivered and read statuses carrying the same
        // pricing (developers.facebook.com, status messages reference: pricing, PMP); and a
        // free service reply.
        let status = |id: &str, word: &str, dt: i64, category: &str, billable: bool, kind: &str| {
            json!({"id": id, "status": word, "timestamp": (now + dt).to_string(),
                   "recipient_id": "4915177777777",
                   "pricing": {"billable": billable, "pricing_model": "PMP", "category": category, "type": kind}})
        };
        let mut statuses = Vec::new();
        for id in ["wamid.MKT1", "wamid.MKT2"] {
            for (i, word) in ["sent", "delivered", "read"].iter().enumerate() {
                statuses.push(status(id, word, i as i64, "marketing", true, "regular"));
            }
        }
        statuses.push(status(
            "wamid.SRV1",
            "sent",
            0,
            "service",
            false,
            "free_customer_service",
        ));
        let hook = coexistence("messages", json!({"statuses": statuses}));
        assert_eq!(pipe.post_360(&hook).await, 200);
        assert_eq!(pipe.post_360(&hook).await, 200, "delivered twice");
        pipe.drain().await;

        let api = inbox_api::router(inbox_api::Inbox::build(&pipe.backends).unwrap());
        let get = |uri: String| {
            let api = api.clone();
            async move {
                let resp = api
                    .oneshot(
                        Request::get(uri)
                            .header("authorization", "Bearer sk_a_0123456789abcdef")
                            .body(Body::empty())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (
                    status,
                    serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
                )
            }
        };
        let (status, usage) = get("/v1/usage".into()).await;
        assert_eq!(status, 200, "{}: {usage}", pipe.name);
        assert_eq!(usage["month"], month.as_str(), "{}", pipe.name);
        assert_eq!(usage["messages"], 3, "{}: {usage}", pipe.name);
        assert_eq!(usage["billable"], 2, "{}: {usage}", pipe.name);
        assert_eq!(
            usage["estimate"], 0.23,
            "{}: two marketing messages at €0.1131: {usage}",
            pipe.name
        );
        assert_eq!(usage["currency"], "EUR");
        assert_eq!(
            get(format!("/v1/usage?month={month}")).await.1,
            usage,
            "{}",
            pipe.name
        );
        let (status, other) = get("/v1/usage?month=2020-01".into()).await;
        assert_eq!(
            (status, other["messages"].clone()),
            (200, json!(0)),
            "{}",
            pipe.name
        );
        assert_eq!(
            get("/v1/usage?month=2026-13".into()).await.0,
            400,
            "{}",
            pipe.name
        );
        // Another tenant's key sees its own (empty) usage.
        let resp = api
            .clone()
            .oneshot(
                Request::get("/v1/usage")
                    .header("authorization", "Bearer sk_b_0123456789abcdef")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let b: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(b["messages"], 0, "{}", pipe.name);
    }
}

#[tokio::test]
async fn a_parent_bsuid_is_kept_with_the_contact_and_exported() {
    for pipe in each_backend("fid-parent").await {
        let now = pipe.now();
        // contacts[].parent_user_id, sent when the business enabled parent BSUIDs (Meta,
        // business-scoped user IDs page: parent BSUIDs).
        let mut hook = text_360(
            Some("4915188888888"),
            Some("DE.CHILD1"),
            "wamid.PB1",
            now,
            "Hallo",
        );
        hook["entry"][0]["changes"][0]["value"]["contacts"][0]["parent_user_id"] =
            json!("DE.PARENT1");
        assert_eq!(pipe.post_360(&hook).await, 200);
        pipe.drain().await;
        let c = pipe.conversations("apotheke-a").await.remove(0);
        let record = pipe
            .backends
            .store
            .contact(&tenant_id("apotheke-a"), &c.contact_id, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            record.parent_user_id.as_deref(),
            Some("DE.PARENT1"),
            "{}",
            pipe.name
        );
        let export = pipe
            .backends
            .privacy()
            .unwrap()
            .export(&tenant_id("apotheke-a"), &c.contact_id, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            export["contact"]["parent_user_id"], "DE.PARENT1",
            "{}",
            pipe.name
        );
    }
}
