//! The SQLite file under `data_dir` and its schema.

use relay_core::Clock;
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS contacts (
    tenant TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    name TEXT,
    wa_id TEXT,
    user_id TEXT,
    username TEXT,
    last_inbound_at INTEGER,
    last_message_at INTEGER NOT NULL DEFAULT 0,
    unread INTEGER NOT NULL DEFAULT 0,
    phone_number_id TEXT,
    opted_out INTEGER NOT NULL DEFAULT 0,
    away_replied_at INTEGER,
    send_backoff_until INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, contact_id)
);
CREATE INDEX IF NOT EXISTS contacts_by_activity ON contacts (tenant, last_message_at DESC, contact_id DESC);

CREATE TABLE IF NOT EXISTS identities (
    tenant TEXT NOT NULL,
    identity_key TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, identity_key)
);

CREATE TABLE IF NOT EXISTS messages (
    tenant TEXT NOT NULL,
    wamid_key TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    status_rank INTEGER,
    body TEXT NOT NULL,
    -- Outbound: the sent message's wamid key (statuses find it by this), the send lease.
    alias_key TEXT,
    send_lease_until INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, wamid_key)
);
CREATE INDEX IF NOT EXISTS messages_by_contact ON messages (tenant, contact_id, timestamp DESC, wamid_key DESC);
CREATE INDEX IF NOT EXISTS messages_by_alias ON messages (tenant, alias_key);

CREATE TABLE IF NOT EXISTS consent (
    tenant TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    key TEXT NOT NULL,
    at INTEGER NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, contact_id, key)
);

CREATE TABLE IF NOT EXISTS idempotency (
    tenant TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    message_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key_hash)
);

CREATE TABLE IF NOT EXISTS statuses (
    tenant TEXT NOT NULL,
    wamid_key TEXT NOT NULL,
    status TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, wamid_key, status)
);

CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE IF NOT EXISTS quarantine (
    key TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS queue_by_visibility ON queue (queue, visible_at_ms, id);
-- Deleting or delaying a received message finds it by its receipt without a scan of the
-- backlog (a scan per delete made the router slower the longer the queue grew).
CREATE INDEX IF NOT EXISTS queue_by_receipt ON queue (receipt) WHERE receipt IS NOT NULL;

-- Files the pharmacy uploaded to send (POST /v1/media).
CREATE TABLE IF NOT EXISTS uploads (
    tenant TEXT NOT NULL,
    media_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, media_id)
);

-- Failed media requests per channel and hour (360dialog blocks a number after more than five).
CREATE TABLE IF NOT EXISTS media_failures (
    phone_number_id TEXT NOT NULL,
    hour INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (phone_number_id, hour)
);

-- Data keys, wrapped under the master key file. Deleting a row shreds the data sealed under it.
CREATE TABLE IF NOT EXISTS data_keys (
    tenant TEXT NOT NULL,
    keyref TEXT NOT NULL,
    key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (tenant, keyref)
);

-- The audit log: rows are never updated, and deleted only once expired.
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    result INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, at_ms DESC);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- "Expired" is judged on the relay's clock (relay_now(), registered on every connection the
-- relay opens), the clock the code stamps `expires_at` with: SQLite's own clock would let a
-- rule enforced here disagree with the same rule in the code. A connection without the
-- function (a hand-opened sqlite3 shell) cannot delete at all. Databases made before this
-- had the trigger on strftime('now'): it is replaced at every open.
DROP TRIGGER IF EXISTS audit_no_early_delete;
CREATE TRIGGER audit_no_early_delete BEFORE DELETE ON audit
WHEN OLD.expires_at > relay_now()
BEGIN SELECT RAISE(ABORT, 'audit entries are kept until they expire'); END;
"#;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the local database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
}

/// One SQLite connection shared by the store and the queue. Statements are short (one row
/// or one small batch), so a mutex is simpler and faster here than a pool.
#[derive(Clone)]
pub struct Database {
    conn: Arc<Mutex<Connection>>,
    clock: Clock,
}

/// Makes the relay's clock callable from SQL as `relay_now()` (Unix seconds).
fn register_clock(conn: &Connection, clock: &Clock) -> rusqlite::Result<()> {
    let clock = clock.clone();
    conn.create_scalar_function(
        "relay_now",
        0,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_INNOCUOUS,
        move |_| Ok(clock.now()),
    )
}

impl Database {
    /// Opens (and creates) the database file, in WAL mode with `synchronous=NORMAL`: a crash
    /// of the process loses nothing; a power cut can lose the newest transactions, but only
    /// as a suffix of the log (a store write and the queue delete after it go together, and
    /// the message is delivered again). What is promised to the outside — a webhook answered
    /// 200, a reply answered 202 — is committed by the queue with `synchronous=FULL`
    /// ([`Database::durably`]), which also makes everything before it durable; destroying a
    /// key checkpoints the log into the file.
    /// Every rule the store, the queue and the schema enforce on time reads `clock`.
    pub fn open(path: &Path, clock: Clock) -> Result<Self, DbError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            register_clock(&conn, &clock)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // Deleted rows (erasure, expiry) are overwritten, not left in free pages.
            conn.pragma_update(None, "secure_delete", "ON")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Database {
            conn: Arc::new(Mutex::new(conn)),
            clock,
        })
    }

    /// A private in-memory database, for tests and benchmarks.
    pub fn in_memory(clock: Clock) -> Self {
        let conn = Connection::open_in_memory().expect("in-memory SQLite opens");
        register_clock(&conn, &clock).expect("relay_now() registers");
        conn.pragma_update(None, "secure_delete", "ON")
            .expect("secure_delete applies");
        conn.execute_batch(SCHEMA).expect("schema applies");
        Database {
            conn: Arc::new(Mutex::new(conn)),
            clock,
        }
    }

    /// The clock this database's rules (expiry, visibility, the audit trigger) read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Folds the write-ahead log into the file and truncates it, so deleted rows do not
    /// linger in the WAL (after an erasure).
    pub fn checkpoint(&self) -> rusqlite::Result<()> {
        self.lock()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    }

    /// Every text and blob value in every table, one per line (blobs lossily as UTF-8): what
    /// someone reading the file would see. For privacy tests and audits of a data directory.
    pub fn dump_values(&self) -> rusqlite::Result<String> {
        let conn = self.lock();
        let tables: Vec<String> = {
            let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut out = String::new();
        for table in tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\""))?;
            let n = stmt.column_count();
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                for i in 0..n {
                    match row.get_ref(i)? {
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            out.push_str(&String::from_utf8_lossy(t));
                            out.push('\n');
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    /// Runs a statement (admin tools and tests: e.g. proving the audit log refuses changes).
    pub fn execute(&self, sql: &str) -> rusqlite::Result<usize> {
        self.lock().execute(sql, [])
    }

    /// Runs `f` in a transaction committed with `synchronous=FULL`: on disk (the log synced)
    /// when this returns, with every transaction before it.
    pub(crate) fn durably<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut conn = self.lock();
        conn.pragma_update(None, "synchronous", "FULL")?;
        let result = (|| {
            let tx = conn.transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        result
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}
