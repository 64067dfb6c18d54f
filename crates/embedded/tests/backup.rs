//! The key backup and erasure: a key destroyed by an erasure is gone from the key backup too;
//! before any key backup exists there is nothing to reach; once one was made, a missing one
//! (an unmounted volume) makes the erasure fail, so that it is run again.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_core::Clock;
use relay_core::ids::{ContactId, TenantId};
use relay_embedded::Local;
use relay_embedded::backup::{backup_keys, key_backup_db};

fn keys_in(keys_dir: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(key_backup_db(keys_dir)).unwrap();
    let mut stmt = conn
        .prepare("SELECT keyref FROM data_keys ORDER BY keyref")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn erasure_reaches_the_key_backup_and_fails_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
    let clock = Clock::fixed(1_800_000_000);
    let local = Local::open_with_key_backup(&data, clock, Some(keys.clone())).unwrap();
    let tenant = TenantId::parse("apotheke").unwrap();
    let contact = |n: u8| ContactId::parse(&format!("c_{}", hex(n))).unwrap();
    for n in [1, 2, 3] {
        local
            .keys
            .contact_sealer(&tenant, &contact(n), 1_900_000_000)
            .await
            .unwrap();
    }
    // No key backup yet: destroying a key has nothing else to reach.
    assert!(
        local
            .keys
            .destroy(&tenant, contact(1).as_str())
            .await
            .unwrap()
    );

    assert_eq!(backup_keys(&data, &keys).unwrap(), 2);
    assert_eq!(
        keys_in(&keys),
        [contact(2).to_string(), contact(3).to_string()]
    );
    assert!(
        local
            .keys
            .destroy(&tenant, contact(2).as_str())
            .await
            .unwrap()
    );
    assert_eq!(
        keys_in(&keys),
        [contact(3).to_string()],
        "gone from the backup too"
    );

    // The key backup's volume is not there: the erasure fails (and is re-run later).
    std::fs::rename(&keys, dir.path().join("unmounted")).unwrap();
    std::fs::create_dir(&keys).unwrap();
    assert!(
        local
            .keys
            .destroy(&tenant, contact(3).as_str())
            .await
            .is_err()
    );
    std::fs::remove_dir(&keys).unwrap();
    std::fs::rename(dir.path().join("unmounted"), &keys).unwrap();
    local
        .keys
        .destroy(&tenant, contact(3).as_str())
        .await
        .unwrap();
    assert!(keys_in(&keys).is_empty(), "the re-run reached it");
}

fn hex(n: u8) -> String {
    format!("{n:032x}")
}
