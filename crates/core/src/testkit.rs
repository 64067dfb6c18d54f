//! One behaviour suite for every [`MessageStore`] adapter (SQLite here, DynamoDB on moto in
//! the end-to-end tests), so that local mode and AWS cannot drift apart. Enabled by the
//! `testkit` feature; it panics on the first broken rule, naming it.

use crate::ids::{ContactId, Identity, Pseudonymizer, TenantId};
use crate::ports::{MessageStore, StoreError};
use crate::records::*;
use crate::webhook::{ApiError, DeliveryStatus};
use serde_json::json;

const NOW: i64 = 1_764_300_000;
const LATER: i64 = NOW + 100 * 86_400;

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).expect("valid tenant id")
}

fn message(
    p: &Pseudonymizer,
    t: &TenantId,
    contact: &ContactId,
    wamid: &str,
    ts: i64,
) -> StoredMessage {
    let wamid_key = p.wamid_key(t, wamid);
    StoredMessage {
        id: format!("m_{wamid_key}"),
        wamid: wamid.to_owned(),
        wamid_key,
        contact_id: contact.clone(),
        direction: Direction::Inbound,
        kind: "text".into(),
        text: Some(format!("body of {wamid}")),
        content: json!({"text": {"body": format!("body of {wamid}")}}),
        timestamp: ts,
        received_at: NOW,
        status: None,
        error: None,
        reply_to: None,
        expires_at: LATER,
    }
}

fn update(contact: &ContactId, name: &str, ts: i64) -> ContactUpdate {
    ContactUpdate {
        contact_id: contact.clone(),
        name: Some(name.to_owned()),
        wa_id: Some("4915100000000".into()),
        user_id: None,
        username: None,
        last_inbound_at: ts,
        expires_at: LATER,
    }
}

fn status(
    p: &Pseudonymizer,
    t: &TenantId,
    wamid: &str,
    s: DeliveryStatus,
    ts: i64,
) -> StoredStatus {
    StoredStatus {
        wamid_key: p.wamid_key(t, wamid),
        contact_id: None,
        status: s,
        timestamp: ts,
        errors: if s == DeliveryStatus::Failed {
            vec![ApiError {
                code: 131026,
                title: Some("Message undeliverable".into()),
                ..ApiError::default()
            }]
        } else {
            vec![]
        },
        pricing: None,
        conversation: None,
        expires_at: LATER,
    }
}

async fn contact_for(
    store: &dyn MessageStore,
    p: &Pseudonymizer,
    t: &TenantId,
    wa: &str,
) -> ContactId {
    let keys = [p.identity_key(t, Identity::WaId(wa))];
    store
        .resolve_contact(t, &keys, &p.contact_id(t, Identity::WaId(wa)), LATER)
        .await
        .expect("resolve_contact")
}

/// Runs every rule against `store`, which must be empty.
pub async fn store_conformance(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([42; 32]);
    let a = tenant("conf-a");
    let b = tenant("conf-b");

    // --- contacts: one contact across wa_id and BSUID -------------------------------------
    let c1 = contact_for(store, &p, &a, "4915100000001").await;
    let keys_both = [
        p.identity_key(&a, Identity::Bsuid("DE.1")),
        p.identity_key(&a, Identity::WaId("4915100000001")),
    ];
    let again = store
        .resolve_contact(
            &a,
            &keys_both,
            &p.contact_id(&a, Identity::Bsuid("DE.1")),
            LATER,
        )
        .await
        .expect("resolve");
    assert_eq!(
        again, c1,
        "a contact seen by wa_id and later with a BSUID stays one contact"
    );
    let bsuid_only = store
        .resolve_contact(
            &a,
            &keys_both[..1],
            &p.contact_id(&a, Identity::Bsuid("DE.1")),
            LATER,
        )
        .await
        .expect("resolve");
    assert_eq!(bsuid_only, c1, "the BSUID alone now finds the same contact");
    assert_eq!(
        store.find_contact(&a, &keys_both[..1]).await.expect("find"),
        Some(c1.clone())
    );
    assert_eq!(
        store.find_contact(&b, &keys_both[..1]).await.expect("find"),
        None,
        "identities are per tenant"
    );

    // --- inbound messages: exactly once, unread counted once ------------------------------
    let m1 = message(&p, &a, &c1, "wamid.A1", NOW + 10);
    assert_eq!(
        store
            .record_inbound(&a, &m1, &update(&c1, "Erika", NOW + 10))
            .await
            .expect("record"),
        Recorded::New
    );
    assert_eq!(
        store
            .record_inbound(&a, &m1, &update(&c1, "Erika", NOW + 10))
            .await
            .expect("record"),
        Recorded::Duplicate,
        "the same wamid twice is a duplicate"
    );
    // An older message arriving later: stored, but the last activity does not go back.
    let m0 = message(&p, &a, &c1, "wamid.A0", NOW + 5);
    assert_eq!(
        store
            .record_inbound(&a, &m0, &update(&c1, "Erika M.", NOW + 5))
            .await
            .expect("record"),
        Recorded::New
    );

    let convs = store
        .list_conversations(&a, &PageRequest::first(10), NOW)
        .await
        .expect("list");
    assert_eq!(convs.items.len(), 1);
    let conv = &convs.items[0];
    assert_eq!(conv.contact_id, c1);
    assert_eq!(
        conv.unread, 2,
        "two distinct messages, one duplicate: unread is 2"
    );
    assert_eq!(
        conv.last_inbound_at,
        Some(NOW + 10),
        "last activity only moves forward"
    );
    assert_eq!(conv.last_message_at, NOW + 10);
    assert_eq!(conv.name.as_deref(), Some("Erika M."));

    assert_eq!(
        store
            .conversation(&a, &c1, NOW)
            .await
            .expect("get")
            .as_ref(),
        Some(conv)
    );
    assert!(
        store
            .conversation(&b, &c1, NOW)
            .await
            .expect("get")
            .is_none(),
        "not visible to another tenant"
    );

    let msgs = store
        .list_messages(&a, &c1, &PageRequest::first(10), NOW)
        .await
        .expect("messages");
    let ids: Vec<&str> = msgs.items.iter().map(|m| m.wamid.as_str()).collect();
    assert_eq!(ids, ["wamid.A1", "wamid.A0"], "newest first, each once");
    assert_eq!(msgs.items[0], m1, "a message reads back as written");

    // --- statuses: kept even for unknown messages, monotonic on known ones -----------------
    assert_eq!(
        store
            .record_status(
                &a,
                &status(&p, &a, "wamid.UNKNOWN", DeliveryStatus::Delivered, NOW)
            )
            .await
            .expect("status"),
        Recorded::New
    );
    let kept = store
        .statuses(&a, &p.wamid_key(&a, "wamid.UNKNOWN"), NOW)
        .await
        .expect("statuses");
    assert_eq!(kept.len(), 1, "a status for an unknown message is kept");

    let key1 = p.wamid_key(&a, "wamid.A1");
    for (s, ts) in [
        (DeliveryStatus::Delivered, 2),
        (DeliveryStatus::Sent, 1),
        (DeliveryStatus::Delivered, 2),
    ] {
        store
            .record_status(&a, &status(&p, &a, "wamid.A1", s, NOW + ts))
            .await
            .expect("status");
    }
    let m = store
        .message_by_wamid(&a, &key1, NOW)
        .await
        .expect("get")
        .expect("message");
    assert_eq!(
        m.status,
        Some(DeliveryStatus::Delivered),
        "a late `sent` does not move delivered back"
    );
    assert_eq!(
        store
            .statuses(&a, &key1, NOW)
            .await
            .expect("statuses")
            .len(),
        2,
        "each status once"
    );
    store
        .record_status(
            &a,
            &status(&p, &a, "wamid.A1", DeliveryStatus::Read, NOW + 3),
        )
        .await
        .expect("status");
    assert_eq!(
        store
            .message_by_wamid(&a, &key1, NOW)
            .await
            .expect("get")
            .expect("message")
            .status,
        Some(DeliveryStatus::Read)
    );
    let key0 = p.wamid_key(&a, "wamid.A0");
    store
        .record_status(
            &a,
            &status(&p, &a, "wamid.A0", DeliveryStatus::Failed, NOW + 4),
        )
        .await
        .expect("status");
    let failed = store
        .message_by_wamid(&a, &key0, NOW)
        .await
        .expect("get")
        .expect("message");
    assert_eq!(failed.status, Some(DeliveryStatus::Failed));
    assert_eq!(
        failed.error.map(|e| e.code),
        Some(131026),
        "failed keeps the error code"
    );

    // --- tenant isolation -----------------------------------------------------------------
    let none = store
        .list_conversations(&b, &PageRequest::first(10), NOW)
        .await
        .expect("list");
    assert!(none.items.is_empty(), "another tenant sees nothing");
    assert!(
        store
            .message_by_wamid(&b, &key1, NOW)
            .await
            .expect("get")
            .is_none()
    );
    let none = store
        .list_messages(&b, &c1, &PageRequest::first(10), NOW)
        .await
        .expect("list");
    assert!(
        none.items.is_empty(),
        "another tenant cannot read a contact id it learned"
    );

    // --- pagination without gaps or repeats, ties included ----------------------------------
    let mut contacts = Vec::new();
    for i in 0..5 {
        let c = contact_for(store, &p, &b, &format!("49170000000{i}")).await;
        // Two share a timestamp to exercise tie-breaking.
        let ts = NOW + 100 + (i / 2) as i64;
        let m = message(&p, &b, &c, &format!("wamid.B{i}"), ts);
        store
            .record_inbound(&b, &m, &update(&c, "B", ts))
            .await
            .expect("record");
        contacts.push(c);
    }
    let c0 = contacts[0].clone();
    for i in 0..7 {
        let m = message(
            &p,
            &b,
            &c0,
            &format!("wamid.C{i}"),
            NOW + 200 + (i / 3) as i64,
        );
        store
            .record_inbound(&b, &m, &update(&c0, "B", NOW + 200))
            .await
            .expect("record");
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_conversations(
                &b,
                &PageRequest {
                    limit: 2,
                    cursor: cursor.clone(),
                },
                NOW,
            )
            .await
            .expect("page");
        seen.extend(
            page.items
                .iter()
                .map(|c| (c.last_message_at, c.contact_id.clone())),
        );
        pages += 1;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination terminates");
    }
    assert_eq!(seen.len(), 5, "every conversation once: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(seen, sorted, "most recent activity first");
    assert_eq!(
        seen[0].1, c0,
        "the contact with the newest message comes first"
    );

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_messages(
                &b,
                &c0,
                &PageRequest {
                    limit: 3,
                    cursor: cursor.clone(),
                },
                NOW,
            )
            .await
            .expect("page");
        seen.extend(page.items.iter().map(|m| m.wamid.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "every message once: {seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8);

    let bad = store
        .list_messages(
            &b,
            &c0,
            &PageRequest {
                limit: 3,
                cursor: Some("%%%".into()),
            },
            NOW,
        )
        .await;
    assert!(
        matches!(bad, Err(StoreError::InvalidCursor)),
        "a malformed cursor is refused"
    );

    // --- expiry: reads never return expired data ------------------------------------------
    let after_expiry = LATER + 1;
    assert!(
        store
            .list_conversations(&a, &PageRequest::first(10), after_expiry)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        store
            .list_messages(&a, &c1, &PageRequest::first(10), after_expiry)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        store
            .message_by_wamid(&a, &key1, after_expiry)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .conversation(&a, &c1, after_expiry)
            .await
            .expect("get")
            .is_none()
    );

    // --- events and quarantine: kept once --------------------------------------------------
    let ev = StoredEvent {
        key: "k1".into(),
        kind: "account_update".into(),
        received_at: NOW,
        payload: json!({"event": "VERIFIED_ACCOUNT"}),
        expires_at: LATER,
    };
    assert_eq!(
        store.record_event(&a, &ev).await.expect("event"),
        Recorded::New
    );
    assert_eq!(
        store.record_event(&a, &ev).await.expect("event"),
        Recorded::Duplicate
    );
    let q = Quarantined {
        key: "q1".into(),
        phone_number_id: "999".into(),
        reason: "no tenant has this channel".into(),
        received_at: NOW,
        payload: json!({"x": 1}),
        expires_at: LATER,
    };
    assert_eq!(
        store.quarantine(&q).await.expect("quarantine"),
        Recorded::New
    );
    assert_eq!(
        store.quarantine(&q).await.expect("quarantine"),
        Recorded::Duplicate
    );
    assert_eq!(store.list_quarantine(10, NOW).await.expect("list"), vec![q]);
}
