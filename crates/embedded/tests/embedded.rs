#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use relay_core::ports::InboundQueue;
use relay_embedded::{Database, SqliteMessageStore, SqliteQueue};
use std::time::Duration;

/// The store rules, one test each, each on a fresh in-memory store.
mod store_rules {
    use relay_embedded::{Database, SqliteMessageStore};
    relay_core::store_rules!(SqliteMessageStore::new(Database::in_memory(
        relay_core::Clock::system()
    )));
}

#[tokio::test]
async fn store_data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    {
        let store =
            SqliteMessageStore::new(Database::open(&path, relay_core::Clock::system()).unwrap());
        relay_core::testkit::store_conformance(&store).await;
    }
    let store =
        SqliteMessageStore::new(Database::open(&path, relay_core::Clock::system()).unwrap());
    let q = relay_core::ports::InboxReads::list_quarantine(&store, 10, 0)
        .await
        .unwrap();
    assert_eq!(
        q.len(),
        1,
        "rows written before the restart are there after it"
    );
}

#[tokio::test]
async fn queue_is_at_least_once_with_visibility_and_dead_letters() {
    let queue = SqliteQueue::new(
        Database::in_memory(relay_core::Clock::system()),
        "inbound",
        2,
    );
    queue
        .enqueue(&["a".to_owned(), "b".to_owned()])
        .await
        .unwrap();
    assert_eq!(queue.depth().unwrap(), 2);

    let got = queue.receive(10, Duration::from_secs(30)).unwrap();
    assert_eq!(
        got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(got.iter().all(|m| m.receive_count == 1));
    assert!(
        queue
            .receive(10, Duration::from_secs(30))
            .unwrap()
            .is_empty(),
        "in-flight messages are hidden"
    );

    assert!(queue.delete(&got[0].receipt).unwrap());
    assert!(
        !queue.delete(&got[0].receipt).unwrap(),
        "deleting twice deletes nothing"
    );
    queue.retry_after(&got[1].receipt, Duration::ZERO).unwrap();
    let again = queue.receive(10, Duration::ZERO).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].receive_count, 2,
        "a message not deleted comes back"
    );
    assert!(
        !queue.delete(&got[1].receipt).unwrap(),
        "a stale receipt deletes nothing"
    );

    // Received max_receives times and not deleted: it moves to the dead-letter queue.
    assert!(queue.receive(10, Duration::ZERO).unwrap().is_empty());
    assert_eq!(queue.depth().unwrap(), 0);
    assert_eq!(queue.dlq_depth().unwrap(), 1);
    let dead = queue.dlq_list(10).unwrap();
    assert_eq!(dead[0].receive_count, 2);

    assert_eq!(queue.dlq_redrive().unwrap(), 1);
    let back = queue.receive(10, Duration::from_secs(30)).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, "b");
    assert_eq!(
        back[0].receive_count, 1,
        "a redriven message starts counting afresh"
    );
}

#[tokio::test]
async fn queue_refuses_oversized_messages_and_enqueues_nothing() {
    let queue = SqliteQueue::new(
        Database::in_memory(relay_core::Clock::system()),
        "inbound",
        5,
    );
    let big = "x".repeat(relay_embedded::MAX_MESSAGE_BYTES + 1);
    assert!(queue.enqueue(&["ok".to_owned(), big]).await.is_err());
    assert_eq!(queue.depth().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_are_committed_together_and_each_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&dir.path().join("relay.db"), relay_core::Clock::system()).unwrap();
    let queue = std::sync::Arc::new(SqliteQueue::new(db.clone(), "inbound", 5));
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let queue = queue.clone();
            tokio::spawn(async move {
                queue
                    .enqueue(&[format!("body-{i}-a"), format!("body-{i}-b")])
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Every answer came after its commit: all 600 are there, on reopening the file too.
    drop(queue);
    let reopened = SqliteQueue::new(
        Database::open(&dir.path().join("relay.db"), relay_core::Clock::system()).unwrap(),
        "inbound",
        5,
    );
    assert_eq!(reopened.depth().unwrap(), 600);
    let mut bodies = std::collections::BTreeSet::new();
    loop {
        let batch = reopened.receive(10, Duration::from_secs(30)).unwrap();
        if batch.is_empty() {
            break;
        }
        bodies.extend(batch.into_iter().map(|m| m.body));
    }
    assert_eq!(bodies.len(), 600);
    assert!(bodies.contains("body-299-b"));
}

#[tokio::test]
async fn staff_store_follows_the_staff_rules() {
    let store =
        relay_embedded::SqliteStaffStore::new(Database::in_memory(relay_core::Clock::system()));
    relay_core::testkit::staff_store_rules(&store).await;
}

#[tokio::test]
async fn a_password_reset_ends_the_accounts_local_sessions() {
    use relay_core::staff::{Role, StaffAccount, StaffSession, StaffStore};
    let store =
        relay_embedded::SqliteStaffStore::new(Database::in_memory(relay_core::Clock::system()));
    let t = relay_core::ids::TenantId::parse("t").unwrap();
    let account = StaffAccount {
        id: "st_1".into(),
        tenant: t.clone(),
        email: "a@b.example".into(),
        role: Role::Staff,
        password_hash: "h".into(),
        created_at: 1,
        sessions_valid_after: 0,
    };
    assert!(store.add_staff(&account).await.unwrap());
    let session = StaffSession {
        token_hash: "th".into(),
        staff_id: "st_1".into(),
        tenant: t.clone(),
        csrf: "c".into(),
        created_at: 1,
        last_seen: 1,
        expires_at: 1_000,
    };
    store.create_session(&session).await.unwrap();
    assert!(store.set_password(&t, "st_1", "h2", 5).await.unwrap());
    assert_eq!(store.session("th", 2).await.unwrap(), None);
}

#[tokio::test]
async fn usage_is_counted_once_per_message() {
    let store = SqliteMessageStore::new(Database::in_memory(relay_core::Clock::system()));
    relay_core::testkit::usage_rules(&store).await;
}

#[tokio::test]
async fn template_store_follows_the_template_rules() {
    let store = SqliteMessageStore::new(Database::in_memory(relay_core::Clock::system()));
    relay_core::testkit::template_store_rules(&store).await;
}

#[tokio::test]
async fn quick_reply_store_follows_the_rules() {
    let store = SqliteMessageStore::new(Database::in_memory(relay_core::Clock::system()));
    relay_core::testkit::quick_reply_rules(&store).await;
}
