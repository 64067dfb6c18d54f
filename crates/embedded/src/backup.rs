//! Backups of a data directory that erasure still reaches.
//!
//! Content and keys are backed up apart. The **content backup** is a consistent snapshot of
//! `relay.db` (taken while the relay serves) without the data keys: every personal value in it
//! is sealed under a key it does not hold, so a content backup alone reads nothing. The **key
//! backup** (`keys.db` with the wrapped data keys, `master.key` and `pseudonym.key`) is one
//! rolling copy in a directory of its own — best on another disk or host — and the key store
//! deletes an erased contact's key from it in the same step as from `relay.db` (an erasure
//! that cannot reach it fails, and is re-run). So whichever content backup is restored, with
//! whichever key backup, an erased contact's data cannot be opened; `restore` then deletes it.
//! See docs/privacy.md.

use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};

/// The key files a key backup carries beside `keys.db`.
const KEY_FILES: &[&str] = &["master.key", "pseudonym.key"];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Sqlite {
        what: &'static str,
        path: String,
        source: rusqlite::Error,
    },
    #[error("{0} exists already: restore into an empty data directory (or move it away first)")]
    Exists(String),
    #[error("{0} is not a key backup (no keys.db, master.key and pseudonym.key in it)")]
    NotAKeyBackup(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.display().to_string();
    move |source| BackupError::Io { what, path, source }
}

fn sql(what: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError {
    let path = path.display().to_string();
    move |source| BackupError::Sqlite { what, path, source }
}

#[cfg(unix)]
fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}
#[cfg(not(unix))]
fn private(_: &Path) {}

/// Writes a consistent snapshot of `data_dir/relay.db` to `out` (which must not exist),
/// without its data keys. Safe while `relay serve` runs (SQLite's `VACUUM INTO` reads one
/// transaction's view). Returns the number of contacts in it.
pub fn backup_content(data_dir: &Path, out: &Path) -> Result<usize, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.display().to_string()));
    }
    let db = data_dir.join("relay.db");
    let tmp = out.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let conn = Connection::open(&db).map_err(sql("cannot open", &db))?;
    conn.execute("VACUUM INTO ?1", params![tmp.to_string_lossy()])
        .map_err(sql("cannot snapshot", &db))?;
    drop(conn);
    let copy = Connection::open(&tmp).map_err(sql("cannot open", &tmp))?;
    // The keys stay out: deleted and the freed pages overwritten.
    copy.pragma_update(None, "secure_delete", "ON")
        .and_then(|_| copy.execute("DELETE FROM data_keys", []))
        .and_then(|_| copy.execute_batch("VACUUM"))
        .map_err(sql("cannot strip the keys from", &tmp))?;
    let contacts: i64 = copy
        .query_row("SELECT count(*) FROM contacts", [], |r| r.get(0))
        .map_err(sql("cannot read", &tmp))?;
    drop(copy);
    private(&tmp);
    std::fs::rename(&tmp, out).map_err(io("cannot write", out))?;
    Ok(contacts as usize)
}

/// The file in the data directory that says a key backup has been made (and where): from
/// then on an erasure that finds no key backup there fails, instead of skipping a volume that
/// is merely not mounted.
pub const KEY_BACKUP_MADE: &str = "key-backup.made";

/// The key backup's database in `keys_dir`.
pub fn key_backup_db(keys_dir: &Path) -> PathBuf {
    keys_dir.join("keys.db")
}

/// Replaces the key backup in `keys_dir` with the current data keys and key files (written
/// beside and renamed, so a crash leaves the old one whole). Returns the number of keys.
pub fn backup_keys(data_dir: &Path, keys_dir: &Path) -> Result<usize, BackupError> {
    std::fs::create_dir_all(keys_dir).map_err(io("cannot create", keys_dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(keys_dir, std::fs::Permissions::from_mode(0o700));
    }
    let db = data_dir.join("relay.db");
    let target = key_backup_db(keys_dir);
    let tmp = target.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let conn = Connection::open(&tmp).map_err(sql("cannot create", &tmp))?;
    let copied = conn
        .execute_batch(
            "CREATE TABLE data_keys (tenant TEXT NOT NULL, keyref TEXT NOT NULL,
                key_id TEXT NOT NULL, wrapped BLOB NOT NULL, expires_at INTEGER,
                PRIMARY KEY (tenant, keyref));",
        )
        .and_then(|_| conn.execute("ATTACH DATABASE ?1 AS live", params![db.to_string_lossy()]))
        .and_then(|_| conn.execute("INSERT INTO data_keys SELECT * FROM live.data_keys", []))
        .map_err(sql("cannot copy the keys of", &db))?;
    drop(conn);
    private(&tmp);
    for f in KEY_FILES {
        let to = keys_dir.join(f);
        let part = to.with_extension("partial");
        std::fs::copy(data_dir.join(f), &part).map_err(io("cannot copy", &data_dir.join(f)))?;
        private(&part);
        std::fs::rename(&part, &to).map_err(io("cannot write", &to))?;
    }
    std::fs::rename(&tmp, &target).map_err(io("cannot write", &target))?;
    let marker = data_dir.join(KEY_BACKUP_MADE);
    std::fs::write(&marker, format!("{}\n", keys_dir.display()))
        .map_err(io("cannot write", &marker))?;
    Ok(copied)
}

/// Deletes one data key from the key backup in `keys_dir` (erasure reaching the backup). With
/// no key backup made yet (no [`KEY_BACKUP_MADE`] in `data_dir`) there is nothing to delete;
/// once one was made, a missing one is an error (an unmounted volume would otherwise keep the
/// key).
pub fn forget_key(
    data_dir: &Path,
    keys_dir: &Path,
    tenant: &str,
    keyref: &str,
) -> Result<(), BackupError> {
    let db = key_backup_db(keys_dir);
    if !db.exists() && !data_dir.join(KEY_BACKUP_MADE).exists() {
        return Ok(());
    }
    let conn = Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sql("cannot open the key backup", &db))?;
    conn.pragma_update(None, "secure_delete", "ON")
        .and_then(|_| {
            conn.execute(
                "DELETE FROM data_keys WHERE tenant = ?1 AND keyref = ?2",
                params![tenant, keyref],
            )
        })
        .map_err(sql("cannot delete from the key backup", &db))?;
    Ok(())
}

/// Restores a content backup and a key backup into `data_dir`, which must hold no
/// `relay.db`. Returns the number of keys restored. Contacts whose key is not in the key
/// backup (erased after the content backup) stay unreadable; the caller erases them.
pub fn restore(content: &Path, keys_dir: &Path, data_dir: &Path) -> Result<usize, BackupError> {
    let keys_db = key_backup_db(keys_dir);
    if !keys_db.exists() || KEY_FILES.iter().any(|f| !keys_dir.join(f).exists()) {
        return Err(BackupError::NotAKeyBackup(keys_dir.display().to_string()));
    }
    let db = data_dir.join("relay.db");
    if db.exists() {
        return Err(BackupError::Exists(db.display().to_string()));
    }
    std::fs::create_dir_all(data_dir).map_err(io("cannot create", data_dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = db.with_extension("partial");
    std::fs::copy(content, &tmp).map_err(io("cannot copy", content))?;
    let conn = Connection::open(&tmp).map_err(sql("cannot open", &tmp))?;
    let keys = conn
        .execute(
            "ATTACH DATABASE ?1 AS backup",
            params![keys_db.to_string_lossy()],
        )
        .and_then(|_| {
            conn.execute(
                "INSERT OR REPLACE INTO data_keys SELECT * FROM backup.data_keys",
                [],
            )
        })
        .map_err(sql("cannot restore the keys from", &keys_db))?;
    drop(conn);
    for f in KEY_FILES {
        let to = data_dir.join(f);
        std::fs::copy(keys_dir.join(f), &to).map_err(io("cannot copy", &keys_dir.join(f)))?;
        private(&to);
    }
    private(&tmp);
    std::fs::rename(&tmp, &db).map_err(io("cannot write", &db))?;
    Ok(keys)
}
