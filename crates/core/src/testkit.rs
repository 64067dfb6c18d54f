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
        referral: None,
        media: None,
        origin: None,
        expires_at: LATER,
    }
}

fn update(contact: &ContactId, name: &str, ts: i64) -> ContactUpdate {
    ContactUpdate {
        contact_id: contact.clone(),
        phone_number_id: "111".into(),
        name: Some(name.to_owned()),
        wa_id: Some("4915100000000".into()),
        user_id: None,
        username: None,
        parent_user_id: None,
        last_inbound_at: ts,
        last_message_at: ts,
        unread: true,
        expires_at: LATER,
        identity_keys: vec![],
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

/// The state several rules start from: one contact with two inbound messages (A1, A0).
struct Seeded {
    c1: ContactId,
}

async fn seed(store: &dyn MessageStore, p: &Pseudonymizer, a: &TenantId) -> Seeded {
    let c1 = contact_for(store, p, a, "4915100000001").await;
    let m1 = message(p, a, &c1, "wamid.A1", NOW + 10);
    let m0 = message(p, a, &c1, "wamid.A0", NOW + 5);
    for (m, name, ts) in [(&m1, "Erika", NOW + 10), (&m0, "Erika M.", NOW + 5)] {
        store
            .record_inbound(a, m, &update(&c1, name, ts))
            .await
            .expect("record");
    }
    Seeded { c1 }
}

/// A contact seen by number and later with a BSUID stays one contact; identities are per tenant.
pub async fn contacts_are_one_across_number_and_bsuid(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([42; 32]);
    let a = tenant("conf-contacts-are-one-across-number-and-bsuid-a");
    let b = tenant("conf-contacts-are-one-across-number-and-bsuid-b");
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
}

/// An inbound message is stored once and counted unread once; the last activity only moves forward.
pub async fn inbound_messages_are_stored_and_counted_once(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([42; 32]);
    let a = tenant("conf-inbound-messages-are-stored-and-counted--a");
    let b = tenant("conf-inbound-messages-are-stored-and-counted--b");
    let c1 = contact_for(store, &p, &a, "4915100000001").await;
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

    // Read by staff: a late duplicate of a message read does not mark it unread again; a new
    // message does, also one older than the newest (it arrived late).
    store.clear_unread(&a, &c1).await.expect("clear");
    for m in [&m1, &m0] {
        assert_eq!(
            store
                .record_inbound(&a, m, &update(&c1, "Erika M.", m.timestamp))
                .await
                .expect("record"),
            Recorded::Duplicate
        );
    }
    let conv = store.conversation(&a, &c1, NOW).await.expect("get");
    assert_eq!(
        conv.expect("there").unread,
        0,
        "duplicates of read messages stay read"
    );
    let m2 = message(&p, &a, &c1, "wamid.A2", NOW + 20);
    let late = message(&p, &a, &c1, "wamid.A00", NOW + 1);
    for m in [&m2, &m2, &late] {
        store
            .record_inbound(&a, m, &update(&c1, "Erika M.", m.timestamp))
            .await
            .expect("record");
    }
    let conv = store.conversation(&a, &c1, NOW).await.expect("get");
    assert_eq!(
        conv.expect("there").unread,
        2,
        "a new message and a late one, each once"
    );
}

/// Statuses are kept (also for unknown messages), once each, and only move a message forward.
pub async fn statuses_are_kept_and_only_move_forward(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([42; 32]);
    let a = tenant("conf-statuses-are-kept-and-only-move-forward-a");
    let Seeded { c1: _ } = seed(store, &p, &a).await;
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
}

/// Another tenant sees nothing, not even with a contact id it learned.
pub async fn tenants_are_isolated(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([42; 32]);
    let a = tenant("conf-tenants-are-isolated-a");
    let b = tenant("conf-tenants-are-isolated-b");
    let Seeded { c1 } = seed(store, &p, &a).await;
    let key1 = p.wamid_key(&a, "wamid.A1");
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
}

/// Pagination without gaps or repeats, ties included; a malformed cursor is refused.
pub async fn pages_have_no_gaps_or_repeats(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([42; 32]);
    let b = tenant("conf-pages-have-no-gaps-or-repeats-b");
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
}

/// Reads never return expired data (TTL deletion lags).
pub async fn expired_data_is_never_read(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([42; 32]);
    let a = tenant("conf-expired-data-is-never-read-a");
    let Seeded { c1 } = seed(store, &p, &a).await;
    let key1 = p.wamid_key(&a, "wamid.A1");
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
}

/// Events and quarantined items are kept once.
pub async fn events_and_quarantine_are_kept_once(store: &dyn MessageStore) {
    let a = tenant("conf-events-and-quarantine-are-kept-once-a");
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

/// [`RULES`] and [`run_rule`] from one list of the rule functions.
/// What the customer did not write now (a notice, a message sent from the business app, an
/// imported one) is stored like a message, opens no 24-hour window and counts no unread; the
/// conversation's last activity still moves forward with it.
pub async fn messages_not_from_the_customer_open_no_window(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([7; 32]);
    let a = tenant("rule-notwindow");
    let c = p.contact_id(&a, Identity::WaId("4915100000077"));
    let not_customer = |ts: i64| ContactUpdate {
        last_inbound_at: 0,
        last_message_at: ts,
        unread: false,
        ..update(&c, "Erika", ts)
    };
    // A new contact from the business's side: listed, window closed, nothing unread.
    let mut echo = message(&p, &a, &c, "wamid.ECHO1", NOW + 5);
    echo.direction = Direction::Outbound;
    store
        .record_inbound(&a, &echo, &not_customer(NOW + 5))
        .await
        .expect("record");
    let conv = store
        .conversation(&a, &c, NOW)
        .await
        .expect("get")
        .expect("listed");
    assert_eq!((conv.unread, conv.last_message_at), (0, NOW + 5));
    assert!(
        conv.last_inbound_at.unwrap_or(0) == 0,
        "a message the customer did not write opens no window"
    );
    // The customer writes: the window opens from their message.
    store
        .record_inbound(
            &a,
            &message(&p, &a, &c, "wamid.IN1", NOW + 10),
            &update(&c, "Erika", NOW + 10),
        )
        .await
        .expect("record");
    // A later notice: the window stays at the customer's message, activity moves on.
    store
        .record_inbound(
            &a,
            &message(&p, &a, &c, "wamid.NOTICE1", NOW + 20),
            &not_customer(NOW + 20),
        )
        .await
        .expect("record");
    let conv = store
        .conversation(&a, &c, NOW)
        .await
        .expect("get")
        .expect("listed");
    assert_eq!(conv.last_inbound_at, Some(NOW + 10));
    assert_eq!(conv.last_message_at, NOW + 20);
    assert_eq!(conv.unread, 1, "only the customer's message is unread");
    let stored = store
        .list_messages(&a, &c, &PageRequest::first(10), NOW)
        .await
        .expect("list");
    assert_eq!(stored.items.len(), 3);
    assert!(
        stored
            .items
            .iter()
            .any(|m| m.direction == Direction::Outbound)
    );
}

/// An identity linked to a contact without a message of its own finds the contact, is listed
/// with it, and goes with its erasure; one that is already someone else's stays theirs.
pub async fn linked_identities_belong_to_the_contact(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([7; 32]);
    let a = tenant("rule-linked");
    let c = p.contact_id(&a, Identity::WaId("4915100000088"));
    let other = p.contact_id(&a, Identity::WaId("4915100000089"));
    let k = |v: &str| p.identity_key(&a, Identity::Bsuid(v));
    for (contact, wamid, key) in [(&c, "wamid.L1", "DE.L1"), (&other, "wamid.L2", "DE.L2")] {
        let keys = vec![k(key)];
        store
            .resolve_contact(&a, &keys, contact, LATER)
            .await
            .expect("resolve");
        let mut u = update(contact, "X", NOW);
        u.identity_keys = keys;
        store
            .record_inbound(&a, &message(&p, &a, contact, wamid, NOW), &u)
            .await
            .expect("record");
    }
    store
        .link_identities(&a, &c, &[k("DE.NEW"), k("DE.L2")], LATER)
        .await
        .expect("link");
    assert_eq!(
        store.find_contact(&a, &[k("DE.NEW")]).await.expect("find"),
        Some(c.clone())
    );
    assert_eq!(
        store.find_contact(&a, &[k("DE.L2")]).await.expect("find"),
        Some(other.clone()),
        "an identity already someone else's stays theirs"
    );
    let listed = store.contact_identity_keys(&a, &c).await.expect("keys");
    assert!(listed.contains(&k("DE.NEW")), "listed with the contact");
    store.erase_contact(&a, &c, &listed).await.expect("erase");
    assert_eq!(
        store.find_contact(&a, &[k("DE.NEW")]).await.expect("find"),
        None
    );
    assert_eq!(
        store.find_contact(&a, &[k("DE.L2")]).await.expect("find"),
        Some(other)
    );
}

macro_rules! rules_table {
    ($($rule:ident),* $(,)?) => {
        /// Every rule, by name: adapters run each as a test of its own ([`store_rules!`], which
        /// lists the same names), or all in turn on one store ([`store_conformance`]). Each
        /// rule writes under tenants of its own.
        pub const RULES: &[&str] = &[$(stringify!($rule)),*];

        /// Runs the rule `name` against `store`.
        pub async fn run_rule(name: &str, store: &dyn MessageStore) {
            match name {
                $(stringify!($rule) => $rule(store).await,)*
                other => panic!("no store rule {other:?}"),
            }
        }
    };
}

rules_table!(
    contacts_are_one_across_number_and_bsuid,
    inbound_messages_are_stored_and_counted_once,
    statuses_are_kept_and_only_move_forward,
    tenants_are_isolated,
    pages_have_no_gaps_or_repeats,
    expired_data_is_never_read,
    events_and_quarantine_are_kept_once,
    contacts_consent_away_replies_and_outbound,
    erasure_deletes_one_contact_entirely,
    team_state_and_notes_are_kept_per_conversation,
    messages_not_from_the_customer_open_no_window,
    linked_identities_belong_to_the_contact,
    prescriptions_are_kept_once_per_message_until_they_expire,
    notices_are_kept_once_and_due_reminders_found_across_tenants,
);

/// Runs every rule in turn against one `store` (which must be empty), naming each: for a
/// backend whose stores are costly to make (DynamoDB on moto).
pub async fn store_conformance(store: &dyn MessageStore) {
    for name in RULES {
        eprintln!("store rule: {name}");
        run_rule(name, store).await;
    }
}

/// One `#[tokio::test]` per store rule (the names of [`RULES`]), each on a fresh store made
/// by `$make`:
/// `relay_core::store_rules!(SqliteMessageStore::new(Database::in_memory(Clock::system())));`
#[macro_export]
macro_rules! store_rules {
    ($make:expr) => {
        $crate::store_rules!(@each $make;
            contacts_are_one_across_number_and_bsuid,
            inbound_messages_are_stored_and_counted_once,
            statuses_are_kept_and_only_move_forward,
            tenants_are_isolated,
            pages_have_no_gaps_or_repeats,
            expired_data_is_never_read,
            events_and_quarantine_are_kept_once,
            contacts_consent_away_replies_and_outbound,
            erasure_deletes_one_contact_entirely,
            team_state_and_notes_are_kept_per_conversation,
            messages_not_from_the_customer_open_no_window,
            linked_identities_belong_to_the_contact,
            prescriptions_are_kept_once_per_message_until_they_expire,
            notices_are_kept_once_and_due_reminders_found_across_tenants
        );
    };
    (@each $make:expr; $($rule:ident),*) => {
        $(
            #[tokio::test]
            async fn $rule() {
                let store = $make;
                $crate::testkit::$rule(&store).await;
            }
        )*
    };
}

/// Erasure deletes every item of one contact (and only of that one), idempotently.
pub async fn erasure_deletes_one_contact_entirely(store: &dyn MessageStore) {
    use crate::outbound::{ValidReply, queued_message};
    let p = Pseudonymizer::new([8; 32]);
    let t = tenant("conf-erase");
    let gone = contact_for(store, &p, &t, "4915200000001").await;
    let kept = contact_for(store, &p, &t, "4915200000002").await;
    for (c, wamid) in [
        (&gone, "wamid.E1"),
        (&gone, "wamid.E2"),
        (&kept, "wamid.K1"),
    ] {
        let mut u = update(c, "Name", NOW);
        u.identity_keys = vec![p.identity_key(
            &t,
            Identity::WaId(if c == &gone {
                "4915200000001"
            } else {
                "4915200000002"
            }),
        )];
        store
            .record_inbound(&t, &message(&p, &t, c, wamid, NOW), &u)
            .await
            .expect("record_inbound");
        store
            .record_status(&t, &status(&p, &t, wamid, DeliveryStatus::Read, NOW))
            .await
            .expect("record_status");
    }
    let entry = ConsentEntry {
        key: FIRST_CONTACT_KEY.into(),
        event: ConsentEvent::ConversationStarted,
        at: NOW,
        source: "message:x".into(),
        expires_at: LATER,
    };
    store
        .record_consent(&t, &gone, &entry)
        .await
        .expect("consent");
    let reply = queued_message(
        "erase-reply",
        &gone,
        &ValidReply::text("Hallo"),
        None,
        NOW,
        LATER,
    );
    let idem = IdempotencyRecord {
        key_hash: "idem-erase".into(),
        request_hash: "r".into(),
    };
    store
        .create_outbound(&t, &reply, Some(&idem))
        .await
        .expect("create_outbound");
    store
        .complete_send(
            &t,
            "erase-reply",
            &gone,
            "wamid.SENT",
            &p.wamid_key(&t, "wamid.SENT"),
        )
        .await
        .expect("complete_send");
    store
        .record_status(
            &t,
            &status(&p, &t, "wamid.SENT", DeliveryStatus::Delivered, NOW),
        )
        .await
        .expect("record_status");

    assert_eq!(
        store
            .contact_identity_keys(&t, &gone)
            .await
            .expect("identity keys"),
        vec![p.identity_key(&t, Identity::WaId("4915200000001"))],
        "the store names a contact's identities"
    );
    let erased = store.erase_contact(&t, &gone, &[]).await.expect("erase");
    assert_eq!(erased.profile, 1, "erasure: the profile");
    assert_eq!(erased.messages, 3, "erasure: two inbound, one outbound");
    assert_eq!(erased.statuses, 3, "erasure: each message's statuses");
    assert_eq!(erased.consent_entries, 1, "erasure: the consent ledger");
    assert_eq!(
        erased.identities, 1,
        "erasure: identities named by the profile"
    );
    assert!(
        erased.index_items >= 1,
        "erasure: pointers and the idempotency key"
    );

    assert!(
        store
            .contact(&t, &gone, NOW)
            .await
            .expect("contact")
            .is_none()
    );
    assert!(
        store
            .list_messages(&t, &gone, &PageRequest::first(10), NOW)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert!(
        store
            .consent_ledger(&t, &gone, NOW)
            .await
            .expect("ledger")
            .is_empty()
    );
    for w in ["wamid.E1", "wamid.E2", "wamid.SENT"] {
        let k = p.wamid_key(&t, w);
        assert!(
            store
                .statuses(&t, &k, NOW)
                .await
                .expect("statuses")
                .is_empty(),
            "erasure: statuses of {w}"
        );
        assert!(
            store
                .message_by_wamid(&t, &k, NOW)
                .await
                .expect("by wamid")
                .is_none()
        );
    }
    assert!(
        store
            .message_by_wamid(&t, "erase-reply", NOW)
            .await
            .expect("by key")
            .is_none()
    );
    let ids = [p.identity_key(&t, Identity::WaId("4915200000001"))];
    assert_eq!(
        store.find_contact(&t, &ids).await.expect("find"),
        None,
        "erasure: identities"
    );
    // The idempotency key is free again (a new request may reuse it).
    let again = queued_message(
        "erase-reply-2",
        &kept,
        &ValidReply::text("x"),
        None,
        NOW,
        LATER,
    );
    assert_eq!(
        store
            .create_outbound(&t, &again, Some(&idem))
            .await
            .expect("create"),
        CreateOutcome::Created,
        "erasure: the idempotency key"
    );
    // The other contact is untouched.
    assert!(
        store
            .contact(&t, &kept, NOW)
            .await
            .expect("contact")
            .is_some()
    );
    assert_eq!(
        store
            .statuses(&t, &p.wamid_key(&t, "wamid.K1"), NOW)
            .await
            .expect("statuses")
            .len(),
        1
    );
    // Idempotent.
    assert_eq!(
        store
            .erase_contact(&t, &gone, &[])
            .await
            .expect("erase again"),
        ErasedItems::default(),
        "erasure: a re-run finds nothing left"
    );
}

/// Outbound messages, consent and the per-contact counters the senders need.
/// A contact's record, its consent ledger, away-reply claims, and outbound messages: created
/// once, idempotency keys, send claims.
pub async fn contacts_consent_away_replies_and_outbound(store: &dyn MessageStore) {
    use crate::outbound::{ValidReply, queued_message};
    let p = Pseudonymizer::new([7; 32]);
    let t = tenant("conf-c");
    let c = contact_for(store, &p, &t, "4915100000077").await;
    let m = message(&p, &t, &c, "wamid.IN1", NOW + 10);
    let mut upd = update(&c, "Kundin", NOW + 10);
    upd.phone_number_id = "106540352242922".into();
    store.record_inbound(&t, &m, &upd).await.expect("record");

    let rec = store
        .contact(&t, &c, NOW)
        .await
        .expect("contact")
        .expect("exists");
    assert_eq!(
        rec.phone_number_id.as_deref(),
        Some("106540352242922"),
        "replies know the channel"
    );
    assert_eq!(rec.wa_id.as_deref(), Some("4915100000000"));
    assert!(!rec.conversation.opted_out);
    assert!(
        store
            .contact(&tenant("conf-a"), &c, NOW)
            .await
            .expect("contact")
            .is_none()
    );

    // --- consent: ledger once per key, newest entry decides ---------------------------------
    let entry = |key: &str, event, at| ConsentEntry {
        key: key.into(),
        event,
        at,
        source: format!("message:{key}"),
        expires_at: LATER,
    };
    assert_eq!(
        store
            .record_consent(&t, &c, &entry("k1", ConsentEvent::OptedOut, NOW + 20))
            .await
            .expect("consent"),
        Recorded::New
    );
    assert_eq!(
        store
            .record_consent(&t, &c, &entry("k1", ConsentEvent::OptedOut, NOW + 20))
            .await
            .expect("consent"),
        Recorded::Duplicate
    );
    assert!(
        store
            .conversation(&t, &c, NOW)
            .await
            .expect("get")
            .expect("c")
            .opted_out
    );
    // An older opt-in arriving late does not undo the newer opt-out.
    store
        .record_consent(&t, &c, &entry("k0", ConsentEvent::OptedIn, NOW + 15))
        .await
        .expect("consent");
    assert!(
        store
            .conversation(&t, &c, NOW)
            .await
            .expect("get")
            .expect("c")
            .opted_out
    );
    store
        .record_consent(&t, &c, &entry("k2", ConsentEvent::OptedIn, NOW + 30))
        .await
        .expect("consent");
    assert!(
        !store
            .conversation(&t, &c, NOW)
            .await
            .expect("get")
            .expect("c")
            .opted_out
    );
    let ledger: Vec<String> = store
        .consent_ledger(&t, &c, NOW)
        .await
        .expect("ledger")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(ledger, ["k0", "k1", "k2"], "oldest first, each once");

    // --- away replies: at most once per interval --------------------------------------------
    assert!(
        store
            .claim_away_reply(&t, &c, NOW + 100, 3600)
            .await
            .expect("claim")
    );
    assert!(
        !store
            .claim_away_reply(&t, &c, NOW + 200, 3600)
            .await
            .expect("claim")
    );
    assert!(
        store
            .claim_away_reply(&t, &c, NOW + 100 + 3600, 3600)
            .await
            .expect("claim")
    );

    store.clear_unread(&t, &c).await.expect("clear");
    assert_eq!(
        store
            .conversation(&t, &c, NOW)
            .await
            .expect("get")
            .expect("c")
            .unread,
        0
    );
    store
        .set_send_backoff(&t, &c, NOW + 50)
        .await
        .expect("backoff");
    store
        .set_send_backoff(&t, &c, NOW + 40)
        .await
        .expect("backoff");
    assert_eq!(
        store
            .contact(&t, &c, NOW)
            .await
            .expect("get")
            .expect("c")
            .send_backoff_until,
        NOW + 50,
        "backoff only grows"
    );

    // --- outbound: create once, idempotency keys, send claims --------------------------------
    let key = "0123456789abcdef0123456789abcdef";
    let out = queued_message(
        key,
        &c,
        &ValidReply::text("Ihr Rezept ist da."),
        Some("wamid.IN1".into()),
        NOW + 40,
        LATER,
    );
    let idem = IdempotencyRecord {
        key_hash: "idem1".into(),
        request_hash: "req1".into(),
    };
    assert_eq!(
        store
            .create_outbound(&t, &out, Some(&idem))
            .await
            .expect("create"),
        CreateOutcome::Created
    );
    let mut other = out.clone();
    other.wamid_key = "fedcba9876543210fedcba9876543210".into();
    other.id = format!("m_{}", other.wamid_key);
    assert_eq!(
        store
            .create_outbound(&t, &other, Some(&idem))
            .await
            .expect("create"),
        CreateOutcome::Existing {
            message_key: key.into(),
            request_hash: Some("req1".into())
        },
        "the same idempotency key answers with the first message"
    );
    assert_eq!(
        store.create_outbound(&t, &out, None).await.expect("create"),
        CreateOutcome::Existing {
            message_key: key.into(),
            request_hash: None
        }
    );
    let conv = store
        .conversation(&t, &c, NOW)
        .await
        .expect("get")
        .expect("c");
    assert_eq!(
        conv.last_message_at,
        NOW + 40,
        "an outbound message is activity too"
    );
    assert_eq!(
        conv.last_inbound_at,
        Some(NOW + 10),
        "but does not move the service window"
    );
    let listed = store
        .list_messages(&t, &c, &PageRequest::first(10), NOW)
        .await
        .expect("list")
        .items;
    assert_eq!(listed.len(), 2, "the idempotent retry stored nothing");
    assert_eq!(listed[0].direction, Direction::Outbound);
    assert_eq!(listed[0].status, Some(DeliveryStatus::Queued));

    assert_eq!(
        store
            .claim_send(&t, key, NOW + 50, 30)
            .await
            .expect("claim"),
        Claim::Claimed { attempt: 1 }
    );
    assert_eq!(
        store
            .claim_send(&t, key, NOW + 51, 30)
            .await
            .expect("claim"),
        Claim::InFlight,
        "a live lease blocks a twin"
    );
    assert_eq!(
        store
            .claim_send(&t, key, NOW + 81, 30)
            .await
            .expect("claim"),
        Claim::Claimed { attempt: 2 },
        "an expired lease does not"
    );
    store.release_send(&t, key).await.expect("release");
    assert_eq!(
        store
            .claim_send(&t, key, NOW + 82, 30)
            .await
            .expect("claim"),
        Claim::Claimed { attempt: 3 }
    );
    let wamid_key = p.wamid_key(&t, "wamid.OUT1");
    store
        .complete_send(&t, key, &c, "wamid.OUT1", &wamid_key)
        .await
        .expect("complete");
    assert_eq!(
        store
            .claim_send(&t, key, NOW + 200, 30)
            .await
            .expect("claim"),
        Claim::Done,
        "sent is never sent again"
    );
    let sent = store
        .message_by_wamid(&t, &wamid_key, NOW)
        .await
        .expect("get")
        .expect("found by its wamid");
    assert_eq!(
        (sent.status, sent.wamid.as_str(), sent.id.as_str()),
        (Some(DeliveryStatus::Sent), "wamid.OUT1", out.id.as_str())
    );
    // Status webhooks for it now move it on.
    store
        .record_status(
            &t,
            &status(&p, &t, "wamid.OUT1", DeliveryStatus::Read, NOW + 300),
        )
        .await
        .expect("status");
    let read = store
        .message_by_wamid(&t, key, NOW)
        .await
        .expect("get")
        .expect("found by its row key");
    assert_eq!(read.status, Some(DeliveryStatus::Read));
    // A late complete_send (a slow retry) does not move read back to sent.
    store
        .complete_send(&t, key, &c, "wamid.OUT1", &wamid_key)
        .await
        .expect("complete");
    assert_eq!(
        store
            .message_by_wamid(&t, key, NOW)
            .await
            .expect("get")
            .expect("m")
            .status,
        Some(DeliveryStatus::Read)
    );

    let failing = queued_message(
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        &c,
        &ValidReply::text("x"),
        None,
        NOW + 60,
        LATER,
    );
    store
        .create_outbound(&t, &failing, None)
        .await
        .expect("create");
    store
        .claim_send(&t, &failing.wamid_key, NOW + 61, 30)
        .await
        .expect("claim");
    let err = ApiError {
        code: 131047,
        title: Some("Re-engagement message".into()),
        ..ApiError::default()
    };
    store
        .fail_send(&t, &failing.wamid_key, &err)
        .await
        .expect("fail");
    let f = store
        .message_by_wamid(&t, &failing.wamid_key, NOW)
        .await
        .expect("get")
        .expect("m");
    assert_eq!(
        (f.status, f.error.map(|e| e.code)),
        (Some(DeliveryStatus::Failed), Some(131047))
    );
    assert_eq!(
        store
            .claim_send(&t, &failing.wamid_key, NOW + 62, 30)
            .await
            .expect("claim"),
        Claim::Done
    );
    assert_eq!(
        store
            .claim_send(&t, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", NOW, 30)
            .await
            .expect("claim"),
        Claim::Missing
    );
}

/// The staff store's rules (accounts, sessions, sign-in counters), for every adapter.
pub async fn staff_store_rules(store: &dyn crate::staff::StaffStore) {
    use crate::staff::{Role, StaffAccount, StaffSession};
    let (a, b) = (tenant("staff-a"), tenant("staff-b"));
    let account = |id: &str, t: &TenantId, email: &str| StaffAccount {
        id: id.to_owned(),
        tenant: t.clone(),
        email: email.to_owned(),
        role: Role::Staff,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        created_at: NOW,
        sessions_valid_after: 0,
    };
    let anna = account("st_anna", &a, "anna@apotheke.example");
    assert!(store.add_staff(&anna).await.expect("add"));
    assert!(
        !store.add_staff(&anna).await.expect("add again"),
        "the same account twice"
    );
    assert!(
        !store
            .add_staff(&account("st_other", &b, "anna@apotheke.example"))
            .await
            .expect("add"),
        "an email is unique across tenants"
    );
    let ben = StaffAccount {
        role: Role::Admin,
        ..account("st_ben", &a, "ben@apotheke.example")
    };
    assert!(store.add_staff(&ben).await.expect("add"));
    let carla = account("st_carla", &b, "carla@other.example");
    assert!(store.add_staff(&carla).await.expect("add"));

    assert_eq!(
        store
            .staff_by_email("anna@apotheke.example")
            .await
            .expect("by email"),
        Some(anna.clone())
    );
    assert_eq!(
        store
            .staff_by_email("nobody@apotheke.example")
            .await
            .expect("by email"),
        None
    );
    assert_eq!(
        store.staff(&a, "st_ben").await.expect("staff"),
        Some(ben.clone())
    );
    assert_eq!(
        store.staff(&b, "st_ben").await.expect("staff"),
        None,
        "an account is found under its own tenant only"
    );
    assert_eq!(
        store.list_staff(&a).await.expect("list"),
        vec![anna.clone(), ben.clone()]
    );
    assert_eq!(
        store.list_staff(&b).await.expect("list"),
        vec![carla.clone()]
    );

    assert!(
        store
            .set_password(&a, "st_anna", "$argon2id$new", NOW + 5)
            .await
            .expect("set")
    );
    assert!(
        !store
            .set_password(&b, "st_anna", "$argon2id$x", NOW)
            .await
            .expect("set")
    );
    let changed = store
        .staff(&a, "st_anna")
        .await
        .expect("staff")
        .expect("anna");
    assert_eq!(
        (changed.password_hash.as_str(), changed.sessions_valid_after),
        ("$argon2id$new", NOW + 5)
    );

    let session = StaffSession {
        token_hash: "th-1".into(),
        staff_id: "st_ben".into(),
        tenant: a.clone(),
        csrf: "csrf-1".into(),
        created_at: NOW,
        last_seen: NOW,
        expires_at: NOW + 100,
    };
    store.create_session(&session).await.expect("create");
    assert_eq!(
        store.session("th-1", NOW + 99).await.expect("get"),
        Some(session.clone())
    );
    assert_eq!(
        store.session("th-1", NOW + 100).await.expect("get"),
        None,
        "expired"
    );
    assert_eq!(store.session("th-2", NOW).await.expect("get"), None);
    store
        .touch_session("th-1", NOW + 90, NOW + 190)
        .await
        .expect("touch");
    store
        .touch_session("th-1", NOW + 50, NOW + 150)
        .await
        .expect("older touch");
    let touched = store
        .session("th-1", NOW + 150)
        .await
        .expect("get")
        .expect("alive");
    assert_eq!(
        (touched.last_seen, touched.expires_at),
        (NOW + 90, NOW + 190)
    );
    store.end_session("th-1").await.expect("end");
    store.end_session("th-1").await.expect("end again");
    assert_eq!(store.session("th-1", NOW).await.expect("get"), None);
    store
        .touch_session("th-1", NOW + 1, NOW + 500)
        .await
        .expect("touch an ended session");
    assert_eq!(
        store.session("th-1", NOW).await.expect("get"),
        None,
        "touch revives nothing"
    );

    assert!(store.remove_staff(&a, "st_ben").await.expect("remove"));
    assert!(
        !store
            .remove_staff(&a, "st_ben")
            .await
            .expect("remove again")
    );
    assert!(
        !store
            .remove_staff(&b, "st_anna")
            .await
            .expect("another tenant's")
    );
    assert_eq!(store.staff(&a, "st_ben").await.expect("staff"), None);
    assert_eq!(
        store
            .staff_by_email("ben@apotheke.example")
            .await
            .expect("by email"),
        None
    );
    assert!(
        store
            .add_staff(&account("st_ben2", &b, "ben@apotheke.example"))
            .await
            .expect("add"),
        "a removed account's email can be used again"
    );

    for expected in 1..=3 {
        assert_eq!(
            store
                .add_sign_in_failure("acct:x", 7, NOW + 1800)
                .await
                .expect("add"),
            expected
        );
    }
    assert_eq!(
        store
            .add_sign_in_failure("acct:x", 8, NOW)
            .await
            .expect("add"),
        1
    );
    assert_eq!(store.sign_in_failures("acct:x", 7).await.expect("get"), 3);
    assert_eq!(store.sign_in_failures("acct:y", 7).await.expect("get"), 0);
}

/// The team's state of a conversation and its notes: per tenant and contact, newer states win,
/// notes once by id and oldest first, expired ones never read, all gone with the contact.
/// E-Rezept tokens: one record per message (a repeat is a duplicate), only the contact's own,
/// oldest first, gone when expired and with the contact's erasure; the use case on top keeps a
/// token the contact sent before out of a later message.
pub async fn prescriptions_are_kept_once_per_message_until_they_expire(store: &dyn MessageStore) {
    use crate::erezept::Prescription;
    let p = Pseudonymizer::new([9; 32]);
    let (t, other) = (tenant("conf-rx"), tenant("conf-rx-other"));
    let c = contact_for(store, &p, &t, "4915200000011").await;
    let d = contact_for(store, &p, &t, "4915200000012").await;
    let token = |id: &str, code: char| Prescription {
        task_id: id.into(),
        access_code: code.to_string().repeat(64),
    };
    let (a, b) = (
        token("160.123.456.789.123.58", 'a'),
        token("160.000.000.000.001.54", 'b'),
    );
    let record = |key: &str, contact: &ContactId, found: Vec<Prescription>, at: i64, exp: i64| {
        PrescriptionRecord {
            contact_id: contact.clone(),
            message_key: key.into(),
            prescriptions: found,
            found_at: at,
            expires_at: exp,
        }
    };
    let first = record("k1", &c, vec![a.clone()], NOW, LATER);
    assert_eq!(
        store.add_prescriptions(&t, &first).await.expect("add"),
        Recorded::New
    );
    assert_eq!(
        store
            .add_prescriptions(&t, &record("k1", &c, vec![b.clone()], NOW, LATER))
            .await
            .expect("again"),
        Recorded::Duplicate,
        "one record per message"
    );
    store
        .add_prescriptions(&t, &record("k0", &c, vec![b.clone()], NOW - 5, NOW + 1))
        .await
        .expect("add");
    store
        .add_prescriptions(&t, &record("kd", &d, vec![b.clone()], NOW, LATER))
        .await
        .expect("add");
    let kept = store.prescriptions(&t, &c, NOW).await.expect("read");
    assert_eq!(
        kept.iter()
            .map(|r| r.message_key.as_str())
            .collect::<Vec<_>>(),
        ["k0", "k1"],
        "oldest first, only this contact's"
    );
    assert_eq!(kept[1], first, "read back as written");
    assert_eq!(
        store.prescriptions(&t, &c, NOW + 1).await.expect("read"),
        vec![first.clone()],
        "expired left out"
    );
    assert!(
        store
            .prescriptions(&other, &c, NOW)
            .await
            .expect("read")
            .is_empty(),
        "per tenant"
    );

    // The use case: a token sent again in a later message is not new; a redelivered message
    // gets what its first delivery recorded.
    let policy = crate::policy::TenantPolicy::default();
    let rec = |key: &'static str, found: Vec<Prescription>, at: i64| {
        let (t, c, policy) = (t.clone(), c.clone(), policy.clone());
        async move {
            crate::prescriptions::record(store, (&t, &c), key, &found, &policy, (at, LATER))
                .await
                .expect("record")
        }
    };
    assert_eq!(
        rec("k2", vec![a.clone(), b.clone()], NOW + 2).await,
        vec![b.clone()],
        "a is in k1 already (k0, with b, has expired)"
    );
    assert_eq!(
        rec("k2", vec![a.clone(), b.clone()], NOW + 3).await,
        vec![b.clone()]
    );
    assert!(rec("k3", vec![b.clone()], NOW + 4).await.is_empty());
    let k2 = store.prescriptions(&t, &c, NOW + 4).await.expect("read");
    let k2 = k2.iter().find(|r| r.message_key == "k2").expect("k2 kept");
    assert_eq!(
        k2.expires_at,
        (NOW + 2 + policy.prescription_retention_secs()).min(LATER),
        "kept for the tenant's prescription retention, never past the message"
    );

    let erased = store.erase_contact(&t, &c, &[]).await.expect("erase");
    assert!(erased.prescriptions >= 2, "{erased:?}");
    assert!(
        store
            .prescriptions(&t, &c, NOW)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        store.prescriptions(&t, &d, NOW).await.expect("read").len(),
        1,
        "another contact's stay"
    );
}

/// Pickup notices: one per (contact, kind, reference), updated in place; the reminders due are
/// found across tenants, and a notice collected or reminded is no longer due; erased with the
/// contact.
pub async fn notices_are_kept_once_and_due_reminders_found_across_tenants(
    store: &dyn MessageStore,
) {
    let p = Pseudonymizer::new([9; 32]);
    let (t, u) = (tenant("conf-notice"), tenant("conf-notice-other"));
    let c = contact_for(store, &p, &t, "4915200000013").await;
    let d = contact_for(store, &p, &u, "4915200000014").await;
    let notice = |contact: &ContactId, reference: &str, remind_at: Option<i64>| Notice {
        contact_id: contact.clone(),
        kind: "pickup_ready".into(),
        reference: reference.into(),
        message_id: format!("m_{reference}"),
        sent_at: NOW,
        remind_at,
        reminder: None,
        collected_at: None,
        expires_at: LATER,
    };
    let a = notice(&c, "A-1", Some(NOW + 100));
    assert_eq!(store.add_notice(&t, &a).await.expect("add"), Recorded::New);
    assert_eq!(
        store
            .add_notice(&t, &notice(&c, "A-1", None))
            .await
            .expect("again"),
        Recorded::Duplicate,
        "one per reference"
    );
    store
        .add_notice(&t, &notice(&c, "B.2", Some(NOW + 50)))
        .await
        .expect("add");
    store
        .add_notice(&t, &notice(&c, "C-3", None))
        .await
        .expect("add");
    store
        .add_notice(&u, &notice(&d, "A-1", Some(NOW + 70)))
        .await
        .expect("add");
    assert_eq!(
        store
            .notice(&t, &c, "pickup_ready", "A-1", NOW)
            .await
            .expect("read"),
        Some(a.clone())
    );
    assert_eq!(
        store
            .notice(&u, &c, "pickup_ready", "A-1", NOW)
            .await
            .expect("read"),
        None,
        "per tenant"
    );
    assert_eq!(store.notices(&t, &c, NOW).await.expect("list").len(), 3);
    let due = |at: i64| async move {
        store
            .due_notices(at, 10)
            .await
            .expect("due")
            .into_iter()
            .filter(|(t, _)| t.as_str().starts_with("conf-notice"))
            .map(|(t, n)| format!("{t}/{}", n.reference))
            .collect::<Vec<_>>()
    };
    assert!(due(NOW + 49).await.is_empty());
    assert_eq!(
        due(NOW + 100).await,
        [
            "conf-notice/B.2",
            "conf-notice-other/A-1",
            "conf-notice/A-1"
        ],
        "oldest due first, across tenants, none without a reminder"
    );
    let mut collected = a.clone();
    collected.collected_at = Some(NOW + 60);
    store.update_notice(&t, &collected).await.expect("update");
    let mut reminded = notice(&c, "B.2", Some(NOW + 50));
    reminded.reminder = Some("m_r".into());
    store.update_notice(&t, &reminded).await.expect("update");
    assert_eq!(due(NOW + 100).await, ["conf-notice-other/A-1"]);
    assert_eq!(
        store
            .notice(&t, &c, "pickup_ready", "A-1", NOW)
            .await
            .expect("read")
            .and_then(|n| n.collected_at),
        Some(NOW + 60)
    );
    assert!(
        store
            .notice(&t, &c, "pickup_ready", "A-1", LATER)
            .await
            .expect("read")
            .is_none(),
        "expired"
    );
    store.erase_contact(&t, &c, &[]).await.expect("erase");
    assert!(store.notices(&t, &c, NOW).await.expect("list").is_empty());
    // An update after the erasure brings nothing back.
    store.update_notice(&t, &collected).await.expect("update");
    assert!(store.notices(&t, &c, NOW).await.expect("list").is_empty());
    assert_eq!(store.notices(&u, &d, NOW).await.expect("list").len(), 1);
}

pub async fn team_state_and_notes_are_kept_per_conversation(store: &dyn MessageStore) {
    let p = Pseudonymizer::new([9; 32]);
    let (t, other) = (tenant("conf-team"), tenant("conf-team-other"));
    let c = contact_for(store, &p, &t, "4915200000009").await;
    let d = contact_for(store, &p, &t, "4915200000010").await;
    assert_eq!(store.team_state(&t, &c, NOW).await.expect("read"), None);
    let state = TeamState {
        assignee: Some("st_anna".into()),
        labels: vec!["Rezept".into(), "Abholbereit".into()],
        closed: false,
        updated_at: NOW,
        expires_at: LATER,
    };
    store.set_team_state(&t, &c, &state).await.expect("set");
    assert_eq!(
        store.team_state(&t, &c, NOW).await.expect("read"),
        Some(state.clone())
    );
    let older = TeamState {
        closed: true,
        updated_at: NOW - 10,
        ..state.clone()
    };
    store
        .set_team_state(&t, &c, &older)
        .await
        .expect("set older");
    assert_eq!(
        store.team_state(&t, &c, NOW).await.expect("read"),
        Some(state.clone()),
        "an older state does not overwrite a newer one"
    );
    let closed = TeamState {
        closed: true,
        assignee: None,
        updated_at: NOW + 5,
        ..state.clone()
    };
    store
        .set_team_state(&t, &c, &closed)
        .await
        .expect("set newer");
    assert_eq!(
        store.team_state(&t, &c, NOW).await.expect("read"),
        Some(closed.clone())
    );
    assert_eq!(
        store.team_state(&t, &d, NOW).await.expect("read"),
        None,
        "per contact"
    );
    assert_eq!(
        store.team_state(&other, &c, NOW).await.expect("read"),
        None,
        "per tenant"
    );
    assert_eq!(
        store.team_state(&t, &c, LATER).await.expect("read"),
        None,
        "expired"
    );

    let note = |id: &str, contact: &ContactId, at: i64, expires_at: i64| Note {
        id: id.into(),
        contact_id: contact.clone(),
        author: "st_anna".into(),
        text: format!("note {id}"),
        created_at: at,
        expires_at,
    };
    let second = note("n_2", &c, NOW + 2, LATER);
    let first = note("n_1", &c, NOW + 1, LATER);
    assert_eq!(
        store.add_note(&t, &second).await.expect("add"),
        Recorded::New
    );
    assert_eq!(
        store.add_note(&t, &first).await.expect("add"),
        Recorded::New
    );
    assert_eq!(
        store.add_note(&t, &first).await.expect("again"),
        Recorded::Duplicate
    );
    store
        .add_note(&t, &note("n_old", &c, NOW, NOW + 1))
        .await
        .expect("add");
    store
        .add_note(&t, &note("n_d", &d, NOW, LATER))
        .await
        .expect("add");
    assert_eq!(
        store.notes(&t, &c, NOW + 1).await.expect("notes"),
        vec![first.clone(), second.clone()],
        "oldest first, once each, expired left out, only this contact's"
    );
    assert!(
        store
            .notes(&other, &c, NOW)
            .await
            .expect("notes")
            .is_empty()
    );

    let erased = store.erase_contact(&t, &c, &[]).await.expect("erase");
    assert!(erased.notes >= 2, "{erased:?}");
    assert_eq!(store.team_state(&t, &c, NOW).await.expect("read"), None);
    assert!(store.notes(&t, &c, NOW).await.expect("notes").is_empty());
    assert_eq!(
        store.notes(&t, &d, NOW).await.expect("notes").len(),
        1,
        "another contact's stay"
    );
}

/// The template store: a tenant's list replaced whole, per tenant, in name order.
pub async fn template_store_rules(store: &dyn crate::templates::TemplateStore) {
    use crate::templates::Template;
    let (a, b) = (tenant("tpl-a"), tenant("tpl-b"));
    let t = |name: &str, lang: &str| Template {
        name: name.into(),
        language: lang.into(),
        category: "UTILITY".into(),
        status: "APPROVED".into(),
        body: "Hallo {{1}}".into(),
        params: 1,
        updated_at: NOW,
        quality: None,
    };
    assert!(store.templates(&a).await.expect("read").is_empty());
    store
        .replace_templates(
            &a,
            &[
                t("zahlung", "de"),
                t("abholbereit", "de"),
                t("abholbereit", "en"),
            ],
        )
        .await
        .expect("replace");
    store
        .replace_templates(&b, &[t("other", "de")])
        .await
        .expect("replace");
    let names = |v: Vec<Template>| {
        v.into_iter()
            .map(|t| format!("{}/{}", t.name, t.language))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.templates(&a).await.expect("read")),
        ["abholbereit/de", "abholbereit/en", "zahlung/de"]
    );
    store
        .replace_templates(&a, &[t("abholbereit", "de")])
        .await
        .expect("replace");
    assert_eq!(
        names(store.templates(&a).await.expect("read")),
        ["abholbereit/de"],
        "what is no longer listed goes"
    );
    assert_eq!(
        names(store.templates(&b).await.expect("read")),
        ["other/de"],
        "per tenant"
    );
}

/// Quick replies: per tenant, by title, replaced by id, removed once.
pub async fn quick_reply_rules(store: &dyn crate::templates::QuickReplies) {
    use crate::templates::QuickReply;
    let (a, b) = (tenant("qr-a"), tenant("qr-b"));
    let q = |id: &str, title: &str| QuickReply {
        id: id.into(),
        title: title.into(),
        text: format!("Text {title}"),
    };
    store
        .put_quick_reply(&a, &q("q_2", "Öffnungszeiten"))
        .await
        .expect("put");
    store
        .put_quick_reply(&a, &q("q_1", "Abholung"))
        .await
        .expect("put");
    store
        .put_quick_reply(&b, &q("q_9", "Andere"))
        .await
        .expect("put");
    let titles = |v: Vec<QuickReply>| v.into_iter().map(|q| q.title).collect::<Vec<_>>();
    assert_eq!(
        titles(store.quick_replies(&a).await.expect("read")),
        ["Abholung", "Öffnungszeiten"]
    );
    store
        .put_quick_reply(&a, &q("q_1", "Abholung ab 8 Uhr"))
        .await
        .expect("replace");
    assert_eq!(
        titles(store.quick_replies(&a).await.expect("read")),
        ["Abholung ab 8 Uhr", "Öffnungszeiten"]
    );
    assert!(store.remove_quick_reply(&a, "q_2").await.expect("remove"));
    assert!(!store.remove_quick_reply(&a, "q_2").await.expect("again"));
    assert!(
        !store
            .remove_quick_reply(&a, "q_9")
            .await
            .expect("another tenant's")
    );
    assert_eq!(
        titles(store.quick_replies(&a).await.expect("read")),
        ["Abholung ab 8 Uhr"]
    );
    assert_eq!(
        titles(store.quick_replies(&b).await.expect("read")),
        ["Andere"]
    );
}

/// Usage: each message counts once (whatever statuses or months follow), per tenant, month,
/// category and type; tenants and months apart.
pub async fn usage_rules(store: &dyn crate::usage::UsageLedger) {
    use crate::usage::{Pricing, UsageCount};
    let a = tenant("rule-usage-a");
    let b = tenant("rule-usage-b");
    let p = |category: &str, t: &str, billable| Pricing {
        billable,
        category: category.into(),
        pricing_type: t.into(),
    };
    let utility = p("utility", "regular", true);
    let service = p("service", "free_customer_service", false);
    let rec = |t: &TenantId, month: &'static str, key: &'static str, pricing: Pricing| {
        let t = t.clone();
        async move {
            store
                .record_usage(&t, month, key, &pricing, LATER)
                .await
                .expect("record usage")
        }
    };
    assert_eq!(
        rec(&a, "2026-12", "k1", utility.clone()).await,
        Recorded::New
    );
    assert_eq!(
        rec(&a, "2026-12", "k1", utility.clone()).await,
        Recorded::Duplicate,
        "delivered after sent: the same message"
    );
    assert_eq!(
        rec(&a, "2027-01", "k1", utility.clone()).await,
        Recorded::Duplicate,
        "a status in the next month does not count the message again"
    );
    assert_eq!(
        rec(&a, "2026-12", "k2", service.clone()).await,
        Recorded::New
    );
    assert_eq!(
        rec(&a, "2026-12", "k3", utility.clone()).await,
        Recorded::New
    );
    assert_eq!(rec(&b, "2026-12", "k1", service).await, Recorded::New);
    let row = |c: &str, t: &str, m, bl| UsageCount {
        category: c.into(),
        pricing_type: t.into(),
        messages: m,
        billable: bl,
    };
    assert_eq!(
        store.usage(&a, "2026-12").await.expect("usage"),
        [
            row("service", "free_customer_service", 1, 0),
            row("utility", "regular", 2, 2)
        ]
    );
    assert_eq!(
        store.usage(&b, "2026-12").await.expect("usage"),
        [row("service", "free_customer_service", 1, 0)]
    );
    assert!(store.usage(&a, "2027-01").await.expect("usage").is_empty());
}
