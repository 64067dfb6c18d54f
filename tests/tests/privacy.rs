//! Privacy by design, end to end on moto (DynamoDB, SQS, KMS), with every log line captured
//! at debug level: after real traffic, no table item, queue message or log line holds a name,
//! phone number, wamid or message text; export returns all of it; erasure deletes it and
//! shreds every copy (a "backup" taken before is unreadable afterwards).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_e2e::fake::Fake;
use relay_e2e::sender_fixture::SECRET;
use relay_e2e::{Moto, deploy, drain, drain_jobs};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};

const NAME: &str = "Erika Mustermann";
const PHONE: &str = "4915123456789";
const WAMID: &str = "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABIYFjNFQjBDMjA2RjU4QjEwMDlBRTg4AA==";
const TEXT: &str = "Mein Rezept für Ibuprofen 600, bitte";
const REPLY: &str = "Ihr Ibuprofen 600 liegt ab 15 Uhr bereit";
const API_KEY: &str = "sk_privacy_0123456789abcdef";
const WEBHOOK_TOKEN: &str = "tok-privacy-secret";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Every value of this test that is personal data or a secret.
fn personal(extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        NAME,
        "Mustermann",
        PHONE,
        WAMID,
        TEXT,
        "Ibuprofen",
        REPLY,
        API_KEY,
        WEBHOOK_TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend_from_slice(extra);
    v
}

fn assert_clean(what: &str, haystack: &str, values: &[String]) {
    for p in values {
        assert!(!haystack.contains(p.as_str()), "{what} contains {p:?}");
    }
}

async fn scan(clients: &relay_aws::Clients, table: &str) -> Vec<String> {
    let out = clients
        .dynamo
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap();
    out.items
        .unwrap_or_default()
        .iter()
        .map(|i| format!("{i:?}"))
        .collect()
}

async fn peek(clients: &relay_aws::Clients, queue_url: &str) -> Vec<String> {
    let out = clients
        .sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    out.messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.body)
        .collect()
}

/// Every sealed string (`s1.{keyref}.…`) under `keyref` inside a scanned item's text.
fn sealed_under(items: &[String], keyref: &str) -> Vec<String> {
    let marker = format!("s1.{keyref}.");
    let mut out = Vec::new();
    for item in items {
        let mut rest = item.as_str();
        while let Some(i) = rest.find(&marker) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
                .unwrap_or(tail.len());
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

#[tokio::test]
async fn no_personal_data_at_rest_in_queues_or_logs_and_erasure_shreds_every_copy() {
    let logs = Capture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let moto = Moto::start().unwrap();
    let clients = relay_aws::Clients::new(&moto.sdk_config().await);
    let fake = Fake::start().await;
    let pharmacy = Fake::start().await;
    let text = format!(
        r#"
[[tenants]]
id = "apotheke"
name = "Apotheke"
api_keys = ["{API_KEY}"]
forward_url = "{}/hooks/whatsapp"
forward_secret = "{SECRET}"
forward_content = true
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "{WEBHOOK_TOKEN}"
api_key = "d360-key"
api_base_url = "{}"
"#,
        pharmacy.url, fake.url
    );
    let d = deploy(&clients, "privacy", 5, &text).await.unwrap();
    let w = relay_e2e::wire(&clients, &d).await.unwrap();
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    let hook = |value: Value| json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]});
    let meta = json!({"phone_number_id": "111"});
    let post = |body: Value| {
        let http = http.clone();
        let url = w.receiver_url.clone();
        async move {
            http.post(format!("{url}/webhooks/whatsapp/111"))
                .bearer_auth(WEBHOOK_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let inbound = |wamid: &str, body: &str| {
        hook(
            json!({"metadata": meta, "contacts": [{"profile": {"name": NAME}, "wa_id": PHONE}],
            "messages": [{"from": PHONE, "id": wamid, "timestamp": (now - 60).to_string(), "type": "text", "text": {"body": body}}]}),
        )
    };

    // A customer writes; the webhook waits in the queue sealed.
    assert_eq!(post(inbound(WAMID, TEXT)).await, 200);
    let queued = peek(&clients, &d.queue_url).await;
    assert_eq!(queued.len(), 1);
    assert_clean("the inbound queue", &queued.join("\n"), &personal(&[]));
    drain(&clients.sqs, &d.queue_url, &w.router).await.unwrap();
    // The forward (with content, as this tenant asked) waits sealed too.
    let jobs = peek(&clients, &d.outbound_url).await;
    assert!(!jobs.is_empty());
    assert_clean("the outbound queue", &jobs.join("\n"), &personal(&[]));

    // The pharmacy answers; it is sent and its statuses come back.
    let convs: Value = http
        .get(format!("{}/v1/conversations", w.inbox_url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(convs["conversations"][0]["name"], NAME);
    let cid = convs["conversations"][0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http
        .post(format!("{}/v1/conversations/{cid}/messages", w.inbox_url))
        .bearer_auth(API_KEY)
        .json(&json!({"type": "text", "text": REPLY}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    drain_jobs(&clients.sqs, &d.outbound_url, &w.sender)
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(fake.requests()[0].json()["to"], PHONE);
    let forwarded = pharmacy.requests();
    assert_eq!(
        forwarded.len(),
        1,
        "the forward reached the pharmacy, opened"
    );
    assert_eq!(forwarded[0].json()["data"]["text"], TEXT);
    let sent_wamid = fake.wamids()[0].clone();
    for (status, dt) in [("sent", 1), ("delivered", 2), ("read", 3)] {
        let st = hook(
            json!({"metadata": meta, "statuses": [{"id": sent_wamid, "status": status,
            "timestamp": (now + dt).to_string(), "recipient_id": PHONE}]}),
        );
        assert_eq!(post(st).await, 200);
    }
    drain(&clients.sqs, &d.queue_url, &w.router).await.unwrap();
    let values = personal(std::slice::from_ref(&sent_wamid));

    // At rest: nothing readable in any table.
    let main = scan(&clients, &d.table).await;
    assert!(main.len() > 5);
    for (name, items) in [
        ("the table", main.clone()),
        ("the key table", scan(&clients, &d.keys_table).await),
        ("the audit log", scan(&clients, &d.audit_table).await),
    ] {
        assert_clean(name, &items.join("\n"), &values);
    }

    // Export: all of it, decrypted, statuses included.
    let export: Value = http
        .get(format!("{}/v1/contacts/{cid}/export", w.inbox_url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(export["contact"]["name"], NAME);
    assert_eq!(export["contact"]["wa_id"], PHONE);
    let msgs = export["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[0]["text"].as_str(), msgs[0]["wamid"].as_str()),
        (Some(TEXT), Some(WAMID))
    );
    assert_eq!(msgs[1]["text"], REPLY);
    assert_eq!(msgs[1]["wamid"], sent_wamid.as_str());
    let statuses: Vec<&str> = msgs[1]["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert_eq!(export["consent"][0]["event"], "conversation_started");

    // A webhook of the customer still waits on the queue when the erasure comes.
    assert_eq!(
        post(inbound("wamid.IN-FLIGHT", "Noch eine Frage")).await,
        200
    );
    let in_flight = peek(&clients, &d.queue_url).await;
    assert_eq!(in_flight.len(), 1);

    // Erasure: the keys first, then every item. A backup taken now is shredded by it.
    let backup = sealed_under(&main, &cid);
    assert!(
        backup.len() >= 4,
        "sealed values of the contact: {}",
        backup.len()
    );
    let receipt: Value = http
        .delete(format!("{}/v1/contacts/{cid}", w.inbox_url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(receipt["key_destroyed"], true, "{receipt}");
    assert_eq!(receipt["deleted"]["messages"], 2, "{receipt}");
    assert_eq!(receipt["deleted"]["statuses"], 3, "{receipt}");
    let after = scan(&clients, &d.table).await;
    assert!(
        !after.iter().any(|i| i.contains(&cid)),
        "an item of the erased contact is left"
    );
    assert!(
        !scan(&clients, &d.keys_table)
            .await
            .iter()
            .any(|i| i.contains(&cid)),
        "the contact's key is left"
    );
    let fresh = d.keyring(&clients);
    let tenant = relay_core::ids::TenantId::parse("apotheke").unwrap();
    for sealed in &backup {
        assert!(
            matches!(
                fresh.open(&tenant, "message.text", sealed).await,
                Err(relay_core::crypto::CryptoError::Destroyed)
            ),
            "a backed-up value still opens"
        );
    }
    // The queued webhook no longer opens either: the router drops it, nothing comes back.
    let envelope: relay_core::envelope::Envelope = serde_json::from_str(&in_flight[0]).unwrap();
    assert!(matches!(
        fresh
            .open(&tenant, "envelope", envelope.payload.as_str().unwrap())
            .await,
        Err(relay_core::crypto::CryptoError::Destroyed)
    ));
    drain(&clients.sqs, &d.queue_url, &w.router).await.unwrap();
    assert!(
        !scan(&clients, &d.table)
            .await
            .iter()
            .any(|i| i.contains(&cid)),
        "the in-flight webhook brought the contact back"
    );
    let again: Value = http
        .delete(format!("{}/v1/contacts/{cid}", w.inbox_url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["key_destroyed"], false);
    assert_eq!(again["deleted"]["messages"], 0);

    // The customer writes again: a new contact with nothing of the old one.
    assert_eq!(
        post(inbound("wamid.AFTER-ERASURE", "Hallo nochmal")).await,
        200
    );
    drain(&clients.sqs, &d.queue_url, &w.router).await.unwrap();
    let export: Value = http
        .get(format!("{}/v1/contacts/{cid}/export", w.inbox_url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let texts: Vec<&str> = export["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Hallo nochmal"]);

    // The audit log names who did what to which (pseudonymous) contact.
    let audit = relay_aws::DynamoAuditLog::new(clients.dynamo.clone(), &d.audit_table);
    let entries = relay_core::ports::AuditLog::list(&audit, Some(&tenant), 100, now)
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    for a in [
        "conversations.list",
        "reply.create",
        "contact.export",
        "contact.erase",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }

    // Logs, at debug level, across the whole run: ids and counts only.
    let text = logs.text();
    assert!(
        text.contains("webhook queued") && text.contains("contact erased"),
        "logs were captured"
    );
    assert_clean("the logs", &text, &values);
}
