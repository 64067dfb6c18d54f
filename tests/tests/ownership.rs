//! One owner rule for receiver and router: a queued piece is sealed under the key of the
//! contact the router files it under, so erasing that contact shreds the queued copy too.
//! Built through local mode's composition root (`relay_embedded::Local`), as `relay serve` is.

use axum::body::Body;
use axum::http::Request;
use relay_core::config::RelayConfig;
use relay_core::crypto::{contact_keyref, sealed_keyref};
use relay_core::envelope::Envelope;
use relay_core::ids::TenantId;
use relay_core::ports::store_roles::*;
use relay_core::records::PageRequest;
use serde_json::json;
use std::time::Duration;
use tower::ServiceExt;

const CONFIG: &str = r#"
[[tenants]]
id = "apotheke-a"
name = "A"

[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok"
"#;

/// A text message whose sender ids are JSON numbers rather than strings (the documented shape
/// — developers.facebook.com, webhooks "messages" reference — has strings). The router reads
/// numbers as their digits; the receiver must read them the same way.
fn numeric_from(now: i64) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "4930000000", "phone_number_id": "111"},
            "contacts": [{"profile": {"name": "Erika"}, "wa_id": 4915112345678u64}],
            "messages": [{"from": 4915112345678u64, "id": "wamid.NUMERIC1",
                "timestamp": now.to_string(), "type": "text", "text": {"body": "Rezept"}}]}}]}]})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_numeric_sender_is_sealed_under_its_contacts_key_and_shredded_by_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let clock = relay_core::Clock::system();
    let now = clock.now();
    let local = relay_embedded::Local::open(dir.path(), clock).unwrap();
    let backends = local.backends(&RelayConfig::parse(CONFIG, &|_| None).unwrap());
    let receiver = webhook_receiver::router(webhook_receiver::Receiver::build(&backends).unwrap());
    let answer = receiver
        .oneshot(
            Request::post("/webhooks/whatsapp/111")
                .header("authorization", "Bearer tok")
                .header("content-type", "application/json")
                .body(Body::from(numeric_from(now)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let queued = local.queue.receive(10, Duration::from_secs(30)).unwrap();
    assert_eq!(queued.len(), 1);
    let body = queued[0].body.clone();

    // The router files it under a contact ...
    let router = backends.router();
    assert_eq!(router.route(&body).await.unwrap().stored, 1);
    let tenant = TenantId::parse("apotheke-a").unwrap();
    let contact = backends
        .store
        .list_conversations(&tenant, &PageRequest::first(10), now)
        .await
        .unwrap()
        .items
        .remove(0)
        .contact_id;
    // ... whose key sealed the queued copy (not the tenant's transit key).
    let envelope: Envelope = serde_json::from_str(&body).unwrap();
    let sealed = envelope.payload.as_str().expect("sealed payload");
    assert_eq!(sealed_keyref(sealed), Some(contact_keyref(&contact)));

    // Erased while a copy still waits (a redelivery, a dead letter): that copy is shredded.
    let receipt = backends
        .privacy()
        .unwrap()
        .erase(&tenant, &contact, now)
        .await
        .unwrap();
    assert!(receipt.key_destroyed);
    let again = router.route(&body).await.unwrap();
    assert_eq!((again.unreadable, again.stored), (1, 0));
    let left = backends
        .store
        .list_conversations(&tenant, &PageRequest::first(10), now)
        .await
        .unwrap();
    assert!(left.items.is_empty(), "the erased contact came back");
}
