//! [`MessageStore`] on SQLite: the local twin of the DynamoDB store, with the same
//! idempotency rules (primary keys instead of conditional writes).

use crate::db::Database;
use async_trait::async_trait;
use relay_core::crypto::{CryptoError, KeyStore, WrappedKey};
use relay_core::ids::{ContactId, TenantId};
use relay_core::ports::{AuditLog, StoreError};
use relay_core::ports::{ErasureStore, InboundLog, InboxReads, MediaLedger, OutboundLedger};
use relay_core::records::*;
use relay_core::webhook::{ApiError, DeliveryStatus};
use rusqlite::{OptionalExtension, params};

// One file per store role (relay_core::ports).
mod erasure;
mod inbound;
mod inbox;
mod media;
mod notices;
mod outbound;
mod prescriptions;
mod team;
mod templates;

#[derive(Clone)]
pub struct SqliteMessageStore {
    db: Database,
}

impl SqliteMessageStore {
    pub fn new(db: Database) -> Self {
        SqliteMessageStore { db }
    }

    /// The blob keys of files whose messages have expired (to delete before the rows go).
    pub fn expired_media(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT json_extract(body, '$.media.object_key') FROM messages
                 WHERE expires_at <= ?1 AND json_extract(body, '$.media.object_key') IS NOT NULL
                 UNION ALL
                 SELECT json_extract(body, '$.media.object_key') FROM uploads
                 WHERE expires_at <= ?1 AND json_extract(body, '$.media.object_key') IS NOT NULL",
            )
            .map_err(db_err)?;
        let rows = stmt.query_map([now], |r| r.get(0)).map_err(db_err)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db_err)
    }

    /// Contacts with no data key (see `Local::contacts_without_keys`).
    pub fn contacts_without_keys(&self) -> Result<Vec<(TenantId, ContactId)>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT tenant, contact_id FROM contacts c WHERE NOT EXISTS
                 (SELECT 1 FROM data_keys k WHERE k.tenant = c.tenant AND k.keyref = c.contact_id)",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (t, c) = row.map_err(db_err)?;
            let t = TenantId::parse(&t)
                .map_err(|_| StoreError::Corrupt("contact with an invalid tenant".into()))?;
            let c = ContactId::parse(&c)
                .map_err(|_| StoreError::Corrupt("invalid contact id".into()))?;
            out.push((t, c));
        }
        Ok(out)
    }

    /// Deletes expired rows; `relay serve` runs it periodically (DynamoDB's TTL does this on AWS).
    pub fn sweep_expired(&self, now: i64) -> Result<usize, StoreError> {
        let conn = self.db.lock();
        let mut n = 0;
        for table in [
            "messages",
            "statuses",
            "events",
            "identities",
            "contacts",
            "quarantine",
            "consent",
            "idempotency",
            "data_keys",
            "audit",
            "media_failures",
            "uploads",
            "staff_sessions",
            "sign_in_failures",
            "team_states",
            "notes",
            "usage_marks",
            "prescriptions",
            "notices",
        ] {
            n += conn
                .execute(
                    &format!("DELETE FROM {table} WHERE expires_at <= ?1"),
                    [now],
                )
                .map_err(db_err)?;
        }
        Ok(n)
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    // SQLite's messages name tables and constraints, never bound values.
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s)
        .map_err(|_| StoreError::Corrupt("a stored row is not valid JSON".into()))
}

/// The JSON `body` column of every row `sql` selects, decoded.
fn bodies<T: serde::de::DeserializeOwned>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params, |r| r.get::<_, String>(0))
        .map_err(db_err)?;
    rows.map(|r| from_json(&r.map_err(db_err)?)).collect()
}

fn inserted(n: usize) -> Recorded {
    if n == 1 {
        Recorded::New
    } else {
        Recorded::Duplicate
    }
}

/// The (time, tie-breaker) position a page starts after; the very top without a cursor.
fn keyset(page: &PageRequest) -> Result<(i64, String), StoreError> {
    match &page.cursor {
        None => Ok((i64::MAX, String::new())),
        Some(c) => {
            let p = cursor::decode(c, 2).ok_or(StoreError::InvalidCursor)?;
            let ts = p[0].parse().map_err(|_| StoreError::InvalidCursor)?;
            Ok((ts, p[1].clone()))
        }
    }
}

/// Wrapped data keys in the `data_keys` table.
#[derive(Clone)]
pub struct SqliteKeyStore {
    db: Database,
    /// The rolling key backup (crate::backup) and the data directory: a destroyed key is
    /// deleted there too.
    key_backup: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl SqliteKeyStore {
    pub fn new(db: Database) -> Self {
        SqliteKeyStore {
            db,
            key_backup: None,
        }
    }

    /// Destroying a key also deletes it from the key backup in `keys_dir` (an erasure that
    /// cannot reach the backup fails, so that it is run again).
    pub fn with_key_backup(
        mut self,
        data_dir: &std::path::Path,
        keys_dir: Option<std::path::PathBuf>,
    ) -> Self {
        self.key_backup = keys_dir.map(|k| (data_dir.to_owned(), k));
        self
    }
}

fn key_err(e: rusqlite::Error) -> CryptoError {
    CryptoError::Unavailable(format!("sqlite: {e}"))
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    async fn load(
        &self,
        tenant: &TenantId,
        keyref: &str,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError> {
        let conn = self.db.lock();
        conn.query_row(
            "SELECT key_id, wrapped, expires_at FROM data_keys WHERE tenant = ?1 AND keyref = ?2
             AND (expires_at IS NULL OR expires_at > ?3)",
            params![tenant.as_str(), keyref, now],
            |r| {
                Ok(WrappedKey {
                    key_id: r.get(0)?,
                    wrapped: r.get(1)?,
                    expires_at: r.get(2)?,
                })
            },
        )
        .optional()
        .map_err(key_err)
    }

    async fn insert(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key: &WrappedKey,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError> {
        let n = {
            let conn = self.db.lock();
            // An expired (not yet swept) key may be replaced, as on DynamoDB.
            conn.execute(
                "INSERT INTO data_keys (tenant, keyref, key_id, wrapped, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, keyref) DO UPDATE SET
                   key_id = excluded.key_id, wrapped = excluded.wrapped, expires_at = excluded.expires_at
                 WHERE data_keys.expires_at IS NOT NULL AND data_keys.expires_at <= ?6",
                params![tenant.as_str(), keyref, key.key_id, key.wrapped, key.expires_at, now],
            )
            .map_err(key_err)?
        };
        if n == 1 {
            Ok(None)
        } else {
            self.load(tenant, keyref, now).await
        }
    }

    async fn extend(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key_id: &str,
        expires_at: i64,
    ) -> Result<(), CryptoError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE data_keys SET expires_at = max(coalesce(expires_at, 0), ?4)
             WHERE tenant = ?1 AND keyref = ?2 AND key_id = ?3",
            params![tenant.as_str(), keyref, key_id, expires_at],
        )
        .map_err(key_err)?;
        Ok(())
    }

    async fn delete(&self, tenant: &TenantId, keyref: &str) -> Result<bool, CryptoError> {
        let n = {
            let conn = self.db.lock();
            conn.execute(
                "DELETE FROM data_keys WHERE tenant = ?1 AND keyref = ?2",
                params![tenant.as_str(), keyref],
            )
            .map_err(key_err)?
        };
        self.db.checkpoint().map_err(key_err)?;
        if let Some((data_dir, keys_dir)) = &self.key_backup {
            crate::backup::forget_key(data_dir, keys_dir, tenant.as_str(), keyref)
                .map_err(|e| CryptoError::Unavailable(e.to_string()))?;
        }
        Ok(n == 1)
    }
}

/// The audit log in the `audit` table (append-only by trigger).
#[derive(Clone)]
pub struct SqliteAuditLog {
    db: Database,
}

impl SqliteAuditLog {
    pub fn new(db: Database) -> Self {
        SqliteAuditLog { db }
    }
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    async fn append(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "INSERT INTO audit (tenant, at_ms, actor, action, target, result, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                e.tenant.as_str(),
                e.at_ms,
                e.actor,
                e.action,
                e.target,
                e.result,
                e.expires_at
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn list(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT tenant, at_ms, actor, action, target, result, expires_at FROM audit
                 WHERE (?1 IS NULL OR tenant = ?1) AND expires_at > ?2
                 ORDER BY at_ms DESC, id DESC LIMIT ?3",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(
                params![tenant.map(TenantId::as_str), now, limit as i64],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        AuditEntry {
                            at_ms: r.get(1)?,
                            tenant: TenantId::system(),
                            actor: r.get(2)?,
                            action: r.get(3)?,
                            target: r.get(4)?,
                            result: r.get(5)?,
                            expires_at: r.get(6)?,
                        },
                    ))
                },
            )
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (t, mut e) = row.map_err(db_err)?;
            e.tenant = TenantId::parse(&t)
                .map_err(|_| StoreError::Corrupt("audit row with an invalid tenant".into()))?;
            out.push(e);
        }
        Ok(out)
    }
}
