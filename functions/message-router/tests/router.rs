//! The SQS handler against the SQLite store: exactly-once effects, partial batch failures,
//! contact identity, quarantine.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use aws_lambda_events::sqs::SqsEvent;
use message_router::handle;
use relay_core::config::RelayConfig;
use relay_core::directory::StaticDirectory;
use relay_core::ids::{Identity, Pseudonymizer, TenantId};
use relay_core::ports::store_roles::*;
use relay_core::records::PageRequest;
use relay_core::routing::Router;
use relay_embedded::{Database, SqliteMessageStore};
use serde_json::{Value, json};
use std::sync::Arc;

const NOW: i64 = 1_764_400_000;
const PNID: &str = "106540352242922";

const CONFIG: &str = r#"
[[tenants]]
id = "apotheke-a"
name = "A"
[[tenants.channels]]
phone_number_id = "106540352242922"
provider = "360dialog"
webhook_token = "tok"
"#;

struct Fixture {
    router: Router,
    store: Arc<relay_core::sealed::SealedStore>,
    pseudo: Arc<Pseudonymizer>,
    keys: Arc<relay_core::crypto::Keyring>,
    tenant: TenantId,
}

fn setup() -> Fixture {
    let keys = Arc::new(relay_core::crypto::Keyring::in_memory(
        relay_core::Clock::fixed(NOW),
    ));
    let store = Arc::new(relay_core::sealed::SealedStore::new(
        Arc::new(SqliteMessageStore::new(Database::in_memory(
            relay_core::Clock::fixed(NOW),
        ))),
        keys.clone(),
    ));
    let config = RelayConfig::parse(CONFIG, &|_| None).unwrap();
    let pseudo = Arc::new(Pseudonymizer::new([9; 32]));
    let router = Router::new(
        store.clone(),
        Arc::new(StaticDirectory::from_config(&config)),
        pseudo.clone(),
        keys.clone(),
    );
    Fixture {
        router,
        store,
        pseudo,
        keys,
        tenant: TenantId::parse("apotheke-a").unwrap(),
    }
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn body(pnid: &str, payload: Value) -> String {
    relay_core::envelope::envelopes(pnid, NOW * 1000, payload, 1 << 20, None)
        .unwrap()
        .remove(0)
}

fn batch(records: &[(&str, String)]) -> SqsEvent {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body)| json!({"messageId": id, "receiptHandle": "r", "body": body, "eventSource": "aws:sqs"}))
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

async fn conversations(f: &Fixture) -> Vec<relay_core::records::Conversation> {
    f.store
        .list_conversations(&f.tenant, &PageRequest::first(100), NOW)
        .await
        .unwrap()
        .items
}

async fn message_count(f: &Fixture) -> usize {
    let mut n = 0;
    for c in conversations(f).await {
        n += f
            .store
            .list_messages(&f.tenant, &c.contact_id, &PageRequest::first(200), NOW)
            .await
            .unwrap()
            .items
            .len();
    }
    n
}

const MESSAGE_FIXTURES: &[&str] = &[
    "text",
    "text_reply",
    "image",
    "video",
    "audio_voice",
    "sticker",
    "document",
    "location",
    "contacts",
    "interactive_button",
    "interactive_list",
    "interactive_nfm",
    "button",
    "reaction",
    "reaction_removed",
    "order",
    "system",
    "unsupported",
    "unknown_type",
];

#[tokio::test]
async fn every_message_is_stored_exactly_once_under_redelivery() {
    let f = setup();
    let records: Vec<(String, String)> = MESSAGE_FIXTURES
        .iter()
        .map(|name| (format!("id-{name}"), body(PNID, fixture(name))))
        .collect();
    let refs: Vec<(&str, String)> = records
        .iter()
        .map(|(i, b)| (i.as_str(), b.clone()))
        .collect();
    for chunk in refs.chunks(10) {
        let resp = handle(&f.router, batch(chunk)).await.unwrap();
        assert!(resp.batch_item_failures.is_empty());
    }
    assert_eq!(message_count(&f).await, MESSAGE_FIXTURES.len());
    let unread_before: i64 = conversations(&f).await.iter().map(|c| c.unread).sum();

    // The whole lot again (SQS redelivery, or 360dialog retrying): nothing new, nothing counted.
    for chunk in refs.chunks(10) {
        handle(&f.router, batch(chunk)).await.unwrap();
    }
    assert_eq!(message_count(&f).await, MESSAGE_FIXTURES.len());
    let unread_after: i64 = conversations(&f).await.iter().map(|c| c.unread).sum();
    assert_eq!(unread_before, unread_after);
    // The system message (Erika's number change) has no contacts array and is kept as a
    // notice in her conversation: stored, but not unread. Every other one is unread.
    assert_eq!(unread_after, MESSAGE_FIXTURES.len() as i64 - 1);
}

#[tokio::test]
async fn concurrent_twins_store_once() {
    let f = setup();
    let b = body(PNID, fixture("text"));
    let (a, c) = tokio::join!(
        handle(&f.router, batch(&[("x", b.clone())])),
        handle(&f.router, batch(&[("y", b.clone())]))
    );
    assert!(a.unwrap().batch_item_failures.is_empty() && c.unwrap().batch_item_failures.is_empty());
    assert_eq!(message_count(&f).await, 1);
    assert_eq!(conversations(&f).await[0].unread, 1);
}

#[tokio::test]
async fn one_bad_record_fails_alone() {
    let f = setup();
    let resp = handle(
        &f.router,
        batch(&[
            ("good-1", body(PNID, fixture("text"))),
            ("bad", "this is not an envelope".to_owned()),
            (
                "not-a-webhook",
                body(PNID, json!({"object": "page", "entry": []})),
            ),
            ("good-2", body(PNID, fixture("image"))),
        ]),
    )
    .await
    .unwrap();
    let failed: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["bad", "not-a-webhook"]);
    assert_eq!(message_count(&f).await, 2);
}

#[tokio::test]
async fn a_record_without_message_id_fails_the_batch_instead_of_hiding() {
    let f = setup();
    let event: SqsEvent =
        serde_json::from_value(json!({"Records": [{"body": body(PNID, fixture("text"))}]}))
            .unwrap();
    assert!(handle(&f.router, event).await.is_err());
}

#[tokio::test]
async fn multi_event_posts_store_every_event() {
    let f = setup();
    handle(&f.router, batch(&[("m", body(PNID, fixture("multi")))]))
        .await
        .unwrap();
    let convs = conversations(&f).await;
    assert_eq!(convs.len(), 2);
    assert_eq!(message_count(&f).await, 3);
    assert_eq!(
        convs[0].name.as_deref(),
        Some("Hans Beispiel"),
        "latest activity first"
    );
    // The two statuses are for an outbound message the relay does not know: kept.
    let key = f.pseudo.wamid_key(&f.tenant, "wamid.OUTBOUND0001");
    let statuses = f.store.statuses(&f.tenant, &key, NOW).await.unwrap();
    let words: Vec<&str> = statuses.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(words, ["delivered", "read"]);
    assert!(
        statuses.iter().all(|s| s.contact_id.is_some()),
        "status recipients resolve to the known contact"
    );
}

#[tokio::test]
async fn a_contact_keeps_its_id_when_a_bsuid_appears() {
    let f = setup();
    handle(&f.router, batch(&[("1", body(PNID, fixture("text")))]))
        .await
        .unwrap();
    handle(
        &f.router,
        batch(&[("2", body(PNID, fixture("bsuid_with_number")))]),
    )
    .await
    .unwrap();
    let convs = conversations(&f).await;
    assert_eq!(
        convs.len(),
        1,
        "wa_id first, then wa_id + BSUID: one contact"
    );
    assert_eq!(convs[0].unread, 2);
    assert_eq!(
        convs[0].contact_id,
        f.pseudo
            .contact_id(&f.tenant, Identity::WaId("4915112345678"))
    );

    handle(
        &f.router,
        batch(&[("3", body(PNID, fixture("bsuid_only")))]),
    )
    .await
    .unwrap();
    let convs = conversations(&f).await;
    assert_eq!(convs.len(), 2, "a BSUID-only user is their own contact");
    let anon = convs
        .iter()
        .find(|c| c.name.as_deref() == Some("Anonyme Kundin"))
        .unwrap();
    assert_eq!(
        anon.contact_id,
        f.pseudo
            .contact_id(&f.tenant, Identity::Bsuid("DE.1502576394655843"))
    );
    assert!(!anon.contact_id.as_str().contains("1502576394655843"));
}

#[tokio::test]
async fn statuses_move_forward_only() {
    let f = setup();
    // Deliver read before sent/delivered (out of order): the relay ends at "read".
    for name in [
        "status_read",
        "status_sent",
        "status_delivered",
        "status_read",
    ] {
        handle(&f.router, batch(&[(name, body(PNID, fixture(name)))]))
            .await
            .unwrap();
    }
    let key = f.pseudo.wamid_key(&f.tenant, "wamid.OUTBOUND0001");
    assert_eq!(
        f.store.statuses(&f.tenant, &key, NOW).await.unwrap().len(),
        3,
        "each status once"
    );
}

#[tokio::test]
async fn events_for_unknown_or_mismatched_channels_are_quarantined_not_lost() {
    let f = setup();
    // Authenticated as a channel no tenant has (removed between receipt and routing).
    handle(&f.router, batch(&[("1", body("999", fixture("text")))]))
        .await
        .unwrap();
    // Authenticated as ours, but the payload is addressed to another number.
    let mut other = fixture("image");
    other["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("555");
    handle(&f.router, batch(&[("2", body(PNID, other))]))
        .await
        .unwrap();
    assert_eq!(message_count(&f).await, 0);
    let q = f.store.list_quarantine(10, NOW).await.unwrap();
    assert_eq!(q.len(), 2);
    assert!(
        q.iter()
            .any(|q| q.phone_number_id == "999" && q.reason.contains("no tenant"))
    );
    assert!(q.iter().any(|q| q.reason.contains("another channel")));
    // Quarantining twice keeps one.
    handle(&f.router, batch(&[("1", body("999", fixture("text")))]))
        .await
        .unwrap();
    assert_eq!(f.store.list_quarantine(10, NOW).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_event_queued_for_another_tenant_than_its_channels_is_quarantined() {
    let f = setup();
    // Sealed for apotheke-b (the channel's tenant when it was queued), routed after the
    // channel went to apotheke-a: it must not land in apotheke-a's inbox.
    let other = TenantId::parse("apotheke-b").unwrap();
    let sealer = f.keys.transit_sealer(&other, NOW).await.unwrap();
    let bodies = relay_core::envelope::sealed_envelopes(
        (PNID, None),
        NOW * 1000,
        &other,
        vec![(sealer, fixture("text"))],
        1 << 20,
    )
    .unwrap();
    let records: Vec<(&str, String)> = bodies.into_iter().map(|b| ("1", b)).collect();
    let answer = handle(&f.router, batch(&records)).await.unwrap();
    assert!(answer.batch_item_failures.is_empty());
    assert_eq!(message_count(&f).await, 0);
    let q = f.store.list_quarantine(10, NOW).await.unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0].reason.contains("another tenant"), "{}", q[0].reason);
}

#[tokio::test]
async fn messages_carry_the_tenant_retention() {
    let f = setup();
    handle(&f.router, batch(&[("1", body(PNID, fixture("text")))]))
        .await
        .unwrap();
    let c = &conversations(&f).await[0];
    let msgs = f
        .store
        .list_messages(&f.tenant, &c.contact_id, &PageRequest::first(10), NOW)
        .await
        .unwrap();
    assert_eq!(msgs.items[0].expires_at, NOW + 30 * 86_400);
    let after = NOW + 30 * 86_400 + 1;
    assert!(
        f.store
            .list_messages(&f.tenant, &c.contact_id, &PageRequest::first(10), after)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
