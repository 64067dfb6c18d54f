//! Schema migrations: a data directory of an earlier release opens, migrates and keeps its
//! data; a newer schema than this release knows is refused, untouched.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_core::Clock;
use relay_core::config::RelayConfig;
use relay_core::ids::TenantId;
use relay_core::ports::store_roles::*;
use relay_core::records::PageRequest;
use relay_embedded::{Database, DbError, Local, SCHEMA_VERSION};
use std::path::{Path, PathBuf};

/// When the fixture was made (its README); its data is read on a clock shortly after.
const FIXTURE_MADE_AT: i64 = 1_796_160_160;

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// A copy of the data directory `relay serve` of commit 11dd651 (before migrations) left
/// behind: see tests/fixtures/data-dir-11dd651/README.md.
fn legacy_data_dir() -> (tempfile::TempDir, PathBuf) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-dir-11dd651");
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("data");
    std::fs::create_dir_all(&to).unwrap();
    for f in ["relay.db", "pseudonym.key", "master.key"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    (dir, to)
}

#[test]
fn a_new_database_is_at_the_newest_schema_and_reopens_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    drop(Database::open(&path, Clock::system()).unwrap());
    assert_eq!(user_version(&path), SCHEMA_VERSION as i64);
    drop(Database::open(&path, Clock::system()).unwrap());
    assert_eq!(user_version(&path), SCHEMA_VERSION as i64);
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.db");
    drop(Database::open(&path, Clock::system()).unwrap());
    let newer = SCHEMA_VERSION as i64 + 1;
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let err = match Database::open(&path, Clock::system()) {
        Err(e) => e,
        Ok(_) => panic!("a newer schema was opened"),
    };
    assert!(
        matches!(err, DbError::TooNew { found, .. } if found == newer),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&format!("schema version {newer}")), "{text}");
    assert!(text.contains("newer release"), "{text}");
    assert_eq!(user_version(&path), newer, "the file was changed");
}

#[tokio::test]
async fn a_data_directory_of_release_11dd651_migrates_and_keeps_every_message() {
    let (_dir, data) = legacy_data_dir();
    assert_eq!(
        user_version(&data.join("relay.db")),
        0,
        "the fixture predates migrations"
    );
    let now = FIXTURE_MADE_AT + 60;
    let local = Local::open(&data, Clock::fixed(now)).unwrap();
    assert_eq!(user_version(&data.join("relay.db")), SCHEMA_VERSION as i64);

    // What the old release stored is all there, and opens with the old keys.
    let backends = local.backends(&RelayConfig::demo());
    let tenant = TenantId::parse("demo-apotheke").unwrap();
    let conversations = backends
        .store
        .list_conversations(&tenant, &PageRequest::first(50), now)
        .await
        .unwrap()
        .items;
    assert_eq!(conversations.len(), 3, "{conversations:?}");
    let mut messages = 0;
    let mut names = Vec::new();
    for c in &conversations {
        names.extend(c.name.clone());
        messages += backends
            .store
            .list_messages(&tenant, &c.contact_id, &PageRequest::first(50), now)
            .await
            .unwrap()
            .items
            .len();
    }
    assert_eq!(messages, 5);
    names.sort();
    assert_eq!(
        names,
        ["Anonyme Kundin", "Erika Mustermann", "Hans Beispiel"],
        "names decrypt with the old keys"
    );
    let audit = backends.audit().unwrap().list(None, 10, now).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");

    // Migration 2 replaced the audit trigger: expiry is judged on the relay's clock now.
    let db = Database::open(&data.join("relay.db"), Clock::fixed(now)).unwrap();
    assert!(db.execute("DELETE FROM audit").is_err());
    let db = Database::open(&data.join("relay.db"), Clock::fixed(audit[0].expires_at)).unwrap();
    assert_eq!(db.execute("DELETE FROM audit").unwrap(), 1);
}
