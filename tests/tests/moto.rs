//! The AWS adapters and the whole inbound pipeline against moto: real SQS, DynamoDB and KMS
//! protocol, no SDK mocks.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_core::config::RelayConfig;
use relay_core::ids::secret_digest;
use relay_core::ports::Directory;
use relay_core::ports::store_roles::*;
use relay_core::routing::Router;
use relay_core::tenant::{AuthHeaders, sign_hub_signature};
use relay_e2e::{Moto, deploy, drain, fixture, provision};
use serde_json::Value;

/// The test deployment's relay.toml; `FAKE_URL` and `FORWARD_URL` are the fake 360dialog and
/// the fake pharmacy endpoint (nothing leaves the machine).
const CONFIG: &str = r#"
[[tenants]]
id = "apotheke-a"
name = "Apotheke A"
api_keys = ["sk_test_aaaaaaaaaaaaaaaa"]
retention_days = 7
forward_url = "FORWARD_URL"
forward_secret = "whsec_c3VwZXJzZWNyZXR2YWx1ZTEyMzQ1Njc4"

[[tenants.channels]]
phone_number_id = "106540352242922"
provider = "360dialog"
webhook_token = "tok-plaintext-never-stored"
api_key = "d360-key-plaintext-never-stored"
api_base_url = "FAKE_URL"

[[tenants.channels]]
phone_number_id = "333"
provider = "meta"
app_secret = "meta-app-secret-plaintext"
verify_token = "meta-verify-token-plaintext"

[[tenants]]
id = "apotheke-b"
name = "Apotheke B"
api_keys = ["sk_test_bbbbbbbbbbbbbbbb"]
[[tenants.channels]]
phone_number_id = "222"
provider = "360dialog"
webhook_token = "tok-b"
"#;

fn config(text: &str) -> RelayConfig {
    let text = text
        .replace("FAKE_URL", "http://127.0.0.1:9")
        .replace("FORWARD_URL", "http://127.0.0.1:9/hook");
    RelayConfig::parse(&text, &|_| None).unwrap()
}

async fn scan_all(clients: &relay_aws::Clients, table: &str) -> String {
    let items = clients
        .dynamo
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    format!("{items:?}")
}

#[tokio::test]
async fn dynamodb_store_follows_the_store_rules() {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let d = provision(&clients, "conf", 5).await.unwrap();
    relay_core::testkit::store_conformance(&clients.store(&d.table)).await;
}

#[tokio::test]
async fn dynamodb_template_store_follows_the_template_rules() {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let d = provision(&clients, "tpl", 5).await.unwrap();
    relay_core::testkit::template_store_rules(&clients.store(&d.table)).await;
    relay_core::testkit::quick_reply_rules(&clients.store(&d.table)).await;
    relay_core::testkit::usage_rules(&clients.store(&d.table)).await;
}

#[tokio::test]
async fn dynamodb_staff_store_follows_the_staff_rules() {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let d = provision(&clients, "staff", 5).await.unwrap();
    relay_core::testkit::staff_store_rules(&clients.staff_store(&d.table)).await;
}

/// An identity item (which contact a number or BSUID is) is written when it is new and then
/// about once a day, not with every message, and is always kept at least as long as the
/// newest message that found it (docs/cost.md, privacy.md).
#[tokio::test]
async fn an_identity_is_written_once_a_day_and_outlives_its_newest_message() {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let d = provision(&clients, "ident", 5).await.unwrap();
    let store = clients.store(&d.table);
    let tenant = relay_core::ids::TenantId::parse("apotheke-i").unwrap();
    let keys = vec!["k1".to_owned(), "k2".to_owned()];
    let contact = relay_core::ids::ContactId::parse(&format!("c_{}", "a".repeat(32))).unwrap();
    let kept = |key: &'static str| {
        let (clients, table, tenant) = (clients.clone(), d.table.clone(), tenant.clone());
        async move {
            let item = clients
                .dynamo
                .get_item()
                .table_name(table)
                .key("pk", s(format!("T#{tenant}#I#{key}")))
                .key("sk", s("ID"))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .unwrap();
            item["expires_at"].as_n().unwrap().parse::<i64>().unwrap()
        }
    };
    let day = 86_400;
    let e0 = 1_800_000_000;
    let resolve = |expires_at: i64| store.resolve_contact(&tenant, &keys, &contact, expires_at);
    assert_eq!(resolve(e0).await.unwrap(), contact);
    let first = kept("k1").await;
    assert!(first >= e0, "kept at least as long as the message");
    // Later the same day: found fresh, nothing written.
    assert_eq!(resolve(e0 + day / 2).await.unwrap(), contact);
    assert_eq!(kept("k1").await, first);
    assert_eq!(kept("k2").await, first);
    // Past what was written: refreshed, again at least as long as the message.
    assert_eq!(resolve(first + 1).await.unwrap(), contact);
    assert!(kept("k1").await > first + 1 && kept("k2").await > first + 1);
    // A shorter retention never shortens what is kept.
    assert_eq!(resolve(e0).await.unwrap(), contact);
    assert!(kept("k1").await > first);
}

fn s(v: impl Into<String>) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(v.into())
}

#[tokio::test]
async fn tenants_apply_keeps_secrets_out_of_the_table_and_the_directory_reads_them() {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let d = provision(&clients, "apply", 5).await.unwrap();
    let secrets = clients.secrets(Some(d.kms_key_id.clone()));
    let report = relay_aws::admin::apply_tenants(
        &clients.dynamo,
        &secrets,
        &d.table,
        &config(CONFIG),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        (report.tenants, report.channels, report.api_keys),
        (2, 3, 2)
    );
    assert!(report.created_pseudonym_key);

    let raw = scan_all(&clients, &d.table).await;
    for plaintext in [
        "tok-plaintext-never-stored",
        "d360-key-plaintext-never-stored",
        "meta-app-secret-plaintext",
        "meta-verify-token-plaintext",
        "whsec_c3VwZXJzZWNyZXR2YWx1ZTEyMzQ1Njc4",
        "c3VwZXJzZWNyZXR2YWx1ZTEyMzQ1Njc4",
        "sk_test_aaaaaaaaaaaaaaaa",
    ] {
        assert!(
            !raw.contains(plaintext),
            "{plaintext} is stored in plaintext"
        );
    }

    let dir = clients.directory(&d.table);
    let channel = dir
        .channel("106540352242922")
        .await
        .unwrap()
        .expect("channel");
    let ok = AuthHeaders {
        authorization: Some(b"Bearer tok-plaintext-never-stored"),
        ..AuthHeaders::default()
    };
    assert!(channel.auth.verify(&ok, b"{}"));
    let meta = dir.channel("333").await.unwrap().expect("meta channel");
    let sig = sign_hub_signature(b"meta-app-secret-plaintext", b"body");
    assert!(meta.auth.verify(
        &AuthHeaders {
            hub_signature_256: Some(sig.as_bytes()),
            ..AuthHeaders::default()
        },
        b"body"
    ));
    assert!(dir.channel("999").await.unwrap().is_none());
    let tenant = dir
        .tenant(&channel.tenant_id)
        .await
        .unwrap()
        .expect("tenant");
    assert_eq!(
        (tenant.name.as_str(), tenant.retention_days),
        ("Apotheke A", 7)
    );
    assert_eq!(
        dir.tenant_for_api_key(&secret_digest("sk_test_aaaaaaaaaaaaaaaa"))
            .await
            .unwrap()
            .map(|t| t.to_string()),
        Some("apotheke-a".into())
    );

    // Applying again is idempotent and keeps the pseudonymisation key; dropping a key and a
    // channel from the file removes them.
    let key_before = relay_aws::admin::load_pseudonym_key(&clients.dynamo, &secrets, &d.table)
        .await
        .unwrap();
    let trimmed = CONFIG
        .replace(
            "api_keys = [\"sk_test_aaaaaaaaaaaaaaaa\"]",
            "api_keys = [\"sk_test_cccccccccccccccc\"]",
        )
        .replace("phone_number_id = \"333\"", "phone_number_id = \"444\"");
    let report = relay_aws::admin::apply_tenants(
        &clients.dynamo,
        &secrets,
        &d.table,
        &config(&trimmed),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        (
            report.removed_api_keys,
            report.removed_channels,
            report.created_pseudonym_key
        ),
        (1, 1, false)
    );
    let fresh = clients.directory(&d.table);
    assert!(
        fresh
            .tenant_for_api_key(&secret_digest("sk_test_aaaaaaaaaaaaaaaa"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(fresh.channel("333").await.unwrap().is_none());
    assert!(fresh.channel("444").await.unwrap().is_some());
    assert_eq!(
        key_before,
        relay_aws::admin::load_pseudonym_key(&clients.dynamo, &secrets, &d.table)
            .await
            .unwrap()
    );
    let tenants = relay_aws::admin::list_tenants(&clients.dynamo, &d.table)
        .await
        .unwrap();
    assert_eq!(
        tenants.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["apotheke-a", "apotheke-b"]
    );
}

struct Stack {
    _moto: Moto,
    fake: relay_e2e::fake::Fake,
    forward: relay_e2e::fake::Fake,
    sender: reply_sender::Sender,
    clients: relay_aws::Clients,
    d: relay_e2e::Deployment,
    router: Router,
    receiver_url: String,
    inbox_url: String,
    http: reqwest::Client,
}

async fn stack(prefix: &str, max_receives: u32) -> Stack {
    let moto = Moto::start().unwrap();
    let clients = moto.clients().await;
    let fake = relay_e2e::fake::Fake::start().await;
    let forward = relay_e2e::fake::Fake::start().await;
    let text = CONFIG
        .replace("FAKE_URL", &fake.url)
        .replace("FORWARD_URL", &format!("{}/hook", forward.url));
    let d = deploy(&clients, prefix, max_receives, &text).await.unwrap();
    let w = relay_e2e::wire(&clients, &d).await.unwrap();
    Stack {
        _moto: moto,
        fake,
        forward,
        sender: w.sender,
        clients,
        d,
        router: w.router,
        receiver_url: w.receiver_url,
        inbox_url: w.inbox_url,
        http: reqwest::Client::new(),
    }
}

impl Stack {
    async fn post(&self, pnid: &str, token: &str, body: Vec<u8>) -> u16 {
        self.http
            .post(format!("{}/webhooks/whatsapp/{pnid}", self.receiver_url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.inbox_url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn queue_depth(&self, url: &str) -> usize {
        let attrs = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        attrs
            .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn webhook_in_stored_once_listed_by_the_inbox_on_aws() {
    let s = stack("e2e", 5).await;
    let token = "tok-plaintext-never-stored";
    for name in [
        "multi",
        "text",
        "image",
        "bsuid_only",
        "status_failed",
        "template_status",
    ] {
        assert_eq!(
            s.post("106540352242922", token, fixture(name)).await,
            200,
            "{name}"
        );
    }
    // 360dialog retries the same webhook: a duplicate on the queue.
    assert_eq!(s.post("106540352242922", token, fixture("text")).await, 200);
    // Refused requests enqueue nothing.
    assert_eq!(
        s.post("106540352242922", "wrong", fixture("text")).await,
        401
    );
    assert_eq!(s.post("999", token, fixture("text")).await, 401);
    assert_eq!(
        s.post("106540352242922", token, b"{nope".to_vec()).await,
        400
    );
    // Seven webhooks; "multi" is about several customers (and an account update), so it is
    // queued as six pieces, each sealed under its own customer's key.
    assert_eq!(s.queue_depth(&s.d.queue_url).await, 12);

    let (ok, failed) = drain(&s.clients.sqs, &s.d.queue_url, &s.router)
        .await
        .unwrap();
    assert_eq!((ok, failed), (12, 0));
    // A redelivered batch (the Lambda timed out after storing) changes nothing either.
    assert_eq!(
        s.post("106540352242922", token, fixture("multi")).await,
        200
    );
    drain(&s.clients.sqs, &s.d.queue_url, &s.router)
        .await
        .unwrap();

    let (status, convs) = s.get("/v1/conversations", "sk_test_aaaaaaaaaaaaaaaa").await;
    assert_eq!(status, 200);
    let convs = convs["conversations"].as_array().unwrap().clone();
    let names: Vec<&str> = convs
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(convs.len(), 3, "{names:?}");
    let erika = convs
        .iter()
        .find(|c| c["name"] == "Erika Mustermann")
        .unwrap();
    assert_eq!(erika["unread"], 4, "Erste, Zweite, text, image — each once");
    let cid = erika["contact_id"].as_str().unwrap();
    let (status, msgs) = s
        .get(
            &format!("/v1/conversations/{cid}/messages?limit=10"),
            "sk_test_aaaaaaaaaaaaaaaa",
        )
        .await;
    assert_eq!(status, 200);
    let types: Vec<&str> = msgs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    // By Meta's timestamps: Zweite (…31), Erste (…30), the image (…03), the text (…01).
    assert_eq!(types, ["text", "text", "image", "text"], "newest first");
    assert_eq!(msgs["messages"][0]["text"], "Zweite");
    assert_eq!(msgs["messages"][2]["image"]["mime_type"], "image/jpeg");
    assert_eq!(msgs["messages"][2]["text"], "Mein Rezept");

    // Tenant B's key sees none of it.
    let (_, b) = s.get("/v1/conversations", "sk_test_bbbbbbbbbbbbbbbb").await;
    assert!(b["conversations"].as_array().unwrap().is_empty());
    let (status, _) = s
        .get(
            &format!("/v1/conversations/{cid}/messages"),
            "sk_test_bbbbbbbbbbbbbbbb",
        )
        .await;
    assert_eq!(status, 404);

    // No phone number in any key of the table.
    let items = s
        .clients
        .dynamo
        .scan()
        .table_name(&s.d.table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    for item in &items {
        for k in ["pk", "sk", "gsi1pk", "gsi1sk"] {
            if let Some(v) = item.get(k).and_then(|v| v.as_s().ok()) {
                assert!(
                    !v.contains("4915112345678") && !v.contains("wamid."),
                    "{k} = {v}"
                );
            }
        }
    }
}

#[tokio::test]
async fn poison_records_reach_the_dlq_and_relay_redrives_them() {
    let s = stack("dlq", 2).await;
    // Something that is not an envelope lands on the queue (a bug, a manual send).
    s.clients
        .sqs
        .send_message()
        .queue_url(&s.d.queue_url)
        .message_body("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.post(
            "106540352242922",
            "tok-plaintext-never-stored",
            fixture("text")
        )
        .await,
        200
    );
    let (ok, failed) = drain(&s.clients.sqs, &s.d.queue_url, &s.router)
        .await
        .unwrap();
    assert_eq!(
        ok, 1,
        "the good record is stored despite its poisoned neighbour"
    );
    assert!(failed >= 1);
    let dead = relay_aws::admin::dlq_list(&s.clients.sqs, &s.d.dlq_url, 10)
        .await
        .unwrap();
    assert_eq!(
        dead.len(),
        1,
        "after maxReceiveCount receives, moto's redrive policy moved it"
    );
    assert_eq!(dead[0].size, "garbage".len());

    // Wait out the peek's visibility timeout, then redrive.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let moved = relay_aws::admin::dlq_redrive(&s.clients.sqs, &s.d.dlq_url, &s.d.queue_url, |_| {})
        .await
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(s.queue_depth(&s.d.dlq_url).await, 0);
    assert_eq!(s.queue_depth(&s.d.queue_url).await, 1);
    let store = s.clients.store(&s.d.table);
    assert!(
        store
            .list_quarantine(10, relay_core::Clock::system().now())
            .await
            .unwrap()
            .is_empty()
    );
}

fn webhook(value: Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": value}]}]}))
    .unwrap()
}

#[tokio::test]
async fn reply_round_trip_on_aws_inbound_reply_statuses_read() {
    let s = stack("reply", 5).await;
    let token = "tok-plaintext-never-stored";
    let now = relay_core::Clock::system().now();
    let meta = serde_json::json!({"display_phone_number": "4930123456", "phone_number_id": "106540352242922"});
    let inbound = webhook(
        serde_json::json!({"metadata": meta, "contacts": [{"profile": {"name": "Erika"}, "wa_id": "4915112345678"}],
        "messages": [{"from": "4915112345678", "id": "wamid.RT1", "timestamp": now.to_string(), "type": "text", "text": {"body": "Ist mein Rezept fertig?"}}]}),
    );
    assert_eq!(s.post("106540352242922", token, inbound).await, 200);
    drain(&s.clients.sqs, &s.d.queue_url, &s.router)
        .await
        .unwrap();

    let (_, convs) = s.get("/v1/conversations", "sk_test_aaaaaaaaaaaaaaaa").await;
    let cid = convs["conversations"][0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = s
        .http
        .post(format!("{}/v1/conversations/{cid}/messages", s.inbox_url))
        .bearer_auth("sk_test_aaaaaaaaaaaaaaaa")
        .json(&serde_json::json!({"type": "text", "text": "Ja, es liegt bereit."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (done, retried) = relay_e2e::drain_jobs(&s.clients.sqs, &s.d.outbound_url, &s.sender)
        .await
        .unwrap();
    assert_eq!(retried, 0);
    assert!(done >= 2, "the send and the message.received forward");
    let sends = s.fake.requests();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].json()["text"]["body"], "Ja, es liegt bereit.");
    assert_eq!(
        sends[0].header("d360-api-key").as_deref(),
        Some("d360-key-plaintext-never-stored")
    );
    let wamid = s.fake.wamids()[0].clone();
    assert!(
        s.forward
            .requests()
            .iter()
            .any(|r| r.json()["type"] == "message.received")
    );

    // WhatsApp reports the reply's progress, out of order.
    for (status, dt) in [("delivered", 2), ("sent", 1), ("read", 3)] {
        let st = webhook(
            serde_json::json!({"metadata": meta, "statuses": [{"id": wamid, "status": status,
            "timestamp": (now + dt).to_string(), "recipient_id": "4915112345678"}]}),
        );
        assert_eq!(s.post("106540352242922", token, st).await, 200);
    }
    drain(&s.clients.sqs, &s.d.queue_url, &s.router)
        .await
        .unwrap();
    let (_, msgs) = s
        .get(
            &format!("/v1/conversations/{cid}/messages"),
            "sk_test_aaaaaaaaaaaaaaaa",
        )
        .await;
    let reply = msgs["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(reply["direction"], "outbound");
    assert_eq!(reply["status"], "read");
    assert_eq!(reply["wamid"], wamid.as_str());
    // The status forwards name our message id.
    relay_e2e::drain_jobs(&s.clients.sqs, &s.d.outbound_url, &s.sender)
        .await
        .unwrap();
    let statuses: Vec<Value> = s
        .forward
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|j| j["type"] == "message.status")
        .collect();
    assert_eq!(statuses.len(), 3);
    assert!(
        statuses
            .iter()
            .all(|j| j["data"]["message_id"] == id.as_str())
    );
    // Sent once, however often the jobs were handled.
    assert_eq!(s.fake.requests().len(), 1);
}
