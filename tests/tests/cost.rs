//! Measures the AWS requests one inbound message and one reply cost, through the real code
//! paths on moto, and writes them to `target/cost/measurements.json` for docs/cost.md
//! (`python3 infra/cost.py` turns them into money). Also guards against regressions: the
//! counts must stay within the bounds the design promises.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_e2e::counter::CallCounter;
use relay_e2e::fake::Fake;
use relay_e2e::{Moto, deploy, drain, drain_jobs};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn count(m: &BTreeMap<String, u64>, suffix: &str) -> u64 {
    m.iter()
        .filter(|(k, _)| k.ends_with(suffix))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn requests_per_inbound_message_and_per_reply_are_measured() {
    let moto = Moto::start().unwrap();
    let counter = CallCounter::default();
    let clients = counter.clients(&moto.sdk_config().await);
    let fake = Fake::start().await;
    let text = format!(
        r#"
[[tenants]]
id = "apotheke"
name = "Apotheke"
api_keys = ["sk_cost_0123456789abcdef"]
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok"
api_key = "k"
api_base_url = "{}"
"#,
        fake.url
    );
    let d = deploy(&clients, "cost", 5, &text).await.unwrap();

    let w = relay_e2e::wire(&clients, &d).await.unwrap();
    let (receiver, inbox, router, sender) = (
        w.receiver_url.trim_start_matches("http://").to_owned(),
        w.inbox_url.trim_start_matches("http://").to_owned(),
        w.router,
        w.sender,
    );
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    let hook = |value: Value| json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]});
    let meta = json!({"phone_number_id": "111"});
    let post = |body: Value| {
        let http = http.clone();
        let receiver = receiver.clone();
        async move {
            http.post(format!("http://{receiver}/webhooks/whatsapp/111"))
                .bearer_auth("tok")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let inbound = |i: u64| {
        hook(
            json!({"metadata": meta, "contacts": [{"profile": {"name": "Erika"}, "wa_id": "4915112345678"}],
            "messages": [{"from": "4915112345678", "id": format!("wamid.COST{i}"), "timestamp": now.to_string(), "type": "text", "text": {"body": "Hallo"}}]}),
        )
    };

    // Warm up: the first message of a contact and the directory caches (a warm Lambda).
    assert_eq!(post(inbound(0)).await, 200);
    drain(&clients.sqs, &d.queue_url, &router).await.unwrap();

    // --- one inbound message of a known contact, webhook to stored ------------------------------
    const N: u64 = 10;
    let before = counter.snapshot();
    let t = std::time::Instant::now();
    for i in 1..=N {
        assert_eq!(post(inbound(i)).await, 200);
    }
    let receive_ms = t.elapsed().as_secs_f64() * 1000.0 / N as f64;
    let t = std::time::Instant::now();
    drain(&clients.sqs, &d.queue_url, &router).await.unwrap();
    let route_ms = t.elapsed().as_secs_f64() * 1000.0 / N as f64;
    let inbound_calls = delta(&counter.snapshot(), &before);

    // --- one reply: inbox POST, send, three status webhooks routed -------------------------------
    let convs: Value = http
        .get(format!("http://{inbox}/v1/conversations"))
        .bearer_auth("sk_cost_0123456789abcdef")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid = convs["conversations"][0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = counter.snapshot();
    let t = std::time::Instant::now();
    for i in 0..N {
        let r = http
            .post(format!("http://{inbox}/v1/conversations/{cid}/messages"))
            .bearer_auth("sk_cost_0123456789abcdef")
            .json(&json!({"type": "text", "text": format!("Antwort {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let inbox_ms = t.elapsed().as_secs_f64() * 1000.0 / N as f64;
    let t = std::time::Instant::now();
    drain_jobs(&clients.sqs, &d.outbound_url, &sender)
        .await
        .unwrap();
    let send_ms = t.elapsed().as_secs_f64() * 1000.0 / N as f64;
    for wamid in fake.wamids() {
        for (status, dt) in [("sent", 1), ("delivered", 2), ("read", 3)] {
            let st = hook(
                json!({"metadata": meta, "statuses": [{"id": wamid, "status": status,
                "timestamp": (now + dt).to_string(), "recipient_id": "4915112345678"}]}),
            );
            assert_eq!(post(st).await, 200);
        }
    }
    drain(&clients.sqs, &d.queue_url, &router).await.unwrap();
    let reply_calls = delta(&counter.snapshot(), &before);
    assert_eq!(fake.requests().len() as u64, N);

    let per = |m: &BTreeMap<String, u64>| -> BTreeMap<String, f64> {
        m.iter()
            .map(|(k, v)| (k.clone(), *v as f64 / N as f64))
            .collect()
    };
    let report = json!({
        "messages_measured": N,
        "per_inbound_message": per(&inbound_calls),
        "per_reply_with_three_statuses": per(&reply_calls),
        // Wall time per message of each handler's work including its AWS calls, against moto
        // on loopback: an upper bound for Lambda duration (moto answers slower than DynamoDB).
        "duration_ms": {"webhook-receiver": receive_ms, "message-router": route_ms, "inbox-api": inbox_ms, "reply-sender": send_ms},
        "notes": "Counts per message through the real code paths on moto with warm caches; the test drains SQS itself as the Lambda event source mapping does: ReceiveMessage of up to 10, one DeleteMessageBatch for what succeeded.",
    });
    let dir = format!("{}/../target/cost", env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        format!("{dir}/measurements.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());

    // The design's promises, per inbound message of a known contact: one SendMessage; three
    // single-item writes and no transaction — the wamid's pointer and the message (PutItems on
    // the condition that they are new), the contact's counters with its last activity (one
    // UpdateItem whose unread mark is repeatable); nothing else written: the identity item is
    // fresh for a day, the consent ledger's first entry is found by a read; no KMS call on the
    // hot path (keys and secrets are cached); five reads: the contact's current key generation
    // in the receiver (alongside its SendMessage), in the router before it opens and before it seals
    // (consistent reads, so nothing is written under a key an erasure destroyed, and a webhook
    // queued before an erasure cannot bring the contact back), the identity, and the first
    // consent entry.
    let per_in = |suffix: &str| count(&inbound_calls, suffix) as f64 / N as f64;
    assert_eq!(per_in(".SendMessage"), 1.0, "{inbound_calls:?}");
    assert_eq!(per_in(".TransactWriteItems"), 0.0, "{inbound_calls:?}");
    assert_eq!(per_in("DynamoDB.TransactItems"), 0.0);
    assert_eq!(
        per_in("DynamoDB_20120810.UpdateItem"),
        1.0,
        "{inbound_calls:?}"
    );
    assert_eq!(
        per_in("DynamoDB_20120810.PutItem"),
        2.0,
        "{inbound_calls:?}"
    );
    assert!(
        per_in("DynamoDB_20120810.GetItem") <= 5.0,
        "{inbound_calls:?}"
    );
    // The queue's messages are deleted a batch at a time, as Lambda's poller deletes them.
    assert_eq!(per_in("AmazonSQS.DeleteMessage"), 0.0, "{inbound_calls:?}");
    assert!(
        per_in("AmazonSQS.DeleteMessageBatch") <= 0.2,
        "{inbound_calls:?}"
    );
    assert_eq!(
        per_in("TrentService.Decrypt"),
        0.0,
        "no KMS call per message"
    );
    let per_reply = |suffix: &str| count(&reply_calls, suffix) as f64 / N as f64;
    // A reply without an idempotency key is written without a transaction (its pointer, then
    // the message); sending sets the wamid and `sent` in one update. With its three statuses
    // (each a put and a forward-only update) and the audit entry: 13 write units.
    assert_eq!(per_reply(".TransactWriteItems"), 0.0, "{reply_calls:?}");
    let write_units = per_reply("DynamoDB_20120810.PutItem")
        + per_reply("DynamoDB_20120810.UpdateItem")
        + 2.0 * per_reply("DynamoDB.TransactItems");
    assert!(
        write_units <= 13.0,
        "{write_units} write units: {reply_calls:?}"
    );
    assert!(
        per_reply("AmazonSQS.SendMessage") + per_reply("AmazonSQS.SendMessageBatch") <= 5.0,
        "{reply_calls:?}"
    );
    // A handful per warm instance, none per reply: reply-sender's first lookup of the channel
    // (its API key), and the contact's data key once in inbox-api and once in reply-sender
    // (each function caches unwrapped keys for 15 minutes).
    assert!(
        count(&reply_calls, "TrentService.Decrypt") <= 3,
        "{reply_calls:?}"
    );
    assert_eq!(
        count(&reply_calls, "TrentService.GenerateDataKey"),
        0,
        "the contact's key exists already: {reply_calls:?}"
    );
}
