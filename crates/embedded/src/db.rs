//! The SQLite file under `data_dir` and its schema.

use relay_core::Clock;
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use rusqlite_migration::{M, Migrations};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// The schema as numbered migrations (`PRAGMA user_version` is the number applied). Every
/// change to the schema is a new file appended here, never an edit of an old one: a data
/// directory of any earlier release opens, migrates in one transaction, and keeps its data.
const MIGRATION_STEPS: &[M<'static>] = &[
    M::up(include_str!("../migrations/0001_initial.sql")),
    M::up(include_str!(
        "../migrations/0002_audit_trigger_on_relay_clock.sql"
    )),
    M::up(include_str!("../migrations/0003_staff.sql")),
    M::up(include_str!("../migrations/0004_team.sql")),
    M::up(include_str!("../migrations/0005_templates.sql")),
    M::up(include_str!("../migrations/0006_quick_replies.sql")),
    M::up(include_str!("../migrations/0007_usage.sql")),
    M::up(include_str!("../migrations/0008_parent_bsuid.sql")),
    M::up(include_str!("../migrations/0009_prescriptions.sql")),
    M::up(include_str!("../migrations/0010_notices.sql")),
];
const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_STEPS);

/// The schema version this release writes.
pub const SCHEMA_VERSION: usize = MIGRATION_STEPS.len();

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the local database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "the local database {path} has schema version {found}, newer than this relay knows ({SCHEMA_VERSION}): it was written by a newer release. Run that release (or newer), or restore a backup made by this one."
    )]
    TooNew { path: String, found: i64 },
    #[error(
        "the local database {path} could not be migrated to schema version {SCHEMA_VERSION}: {source}"
    )]
    Migrate {
        path: String,
        source: rusqlite_migration::Error,
    },
}

/// The schema version a database file says it has (`PRAGMA user_version`; 0 before migrations).
fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Brings the schema to [`SCHEMA_VERSION`]; refuses a newer one with a clear error.
fn migrate(conn: &mut Connection, path: &str) -> Result<(), DbError> {
    let found = user_version(conn).map_err(|source| DbError::Open {
        path: path.to_owned(),
        source,
    })?;
    if found > SCHEMA_VERSION as i64 {
        return Err(DbError::TooNew {
            path: path.to_owned(),
            found,
        });
    }
    MIGRATIONS
        .to_latest(conn)
        .map_err(|source| DbError::Migrate {
            path: path.to_owned(),
            source,
        })
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
            Ok(conn)
        };
        let mut conn = open().map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source,
        })?;
        migrate(&mut conn, &path.display().to_string())?;
        Ok(Database {
            conn: Arc::new(Mutex::new(conn)),
            clock,
        })
    }

    /// A private in-memory database, for tests and benchmarks.
    pub fn in_memory(clock: Clock) -> Self {
        let mut conn = Connection::open_in_memory().expect("in-memory SQLite opens");
        register_clock(&conn, &clock).expect("relay_now() registers");
        conn.pragma_update(None, "secure_delete", "ON")
            .expect("secure_delete applies");
        migrate(&mut conn, ":memory:").expect("the schema applies");
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
