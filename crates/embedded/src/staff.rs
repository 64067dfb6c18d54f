//! [`StaffStore`] on SQLite: staff accounts, sessions and sign-in counters in the relay's
//! database (the same file, the same backups).

use crate::db::Database;
use async_trait::async_trait;
use relay_core::ids::TenantId;
use relay_core::ports::StoreError;
use relay_core::staff::{Role, StaffAccount, StaffSession, StaffStore};
use rusqlite::{OptionalExtension, Row, params};

#[derive(Clone)]
pub struct SqliteStaffStore {
    db: Database,
}

impl SqliteStaffStore {
    pub fn new(db: Database) -> Self {
        SqliteStaffStore { db }
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    // SQLite's messages name tables and constraints, never bound values.
    StoreError::Unavailable(format!("sqlite: {e}"))
}

const ACCOUNT: &str = "id, tenant, email, role, password_hash, created_at, sessions_valid_after";

fn account(r: &Row<'_>) -> rusqlite::Result<StaffAccount> {
    let tenant: String = r.get(1)?;
    let role: String = r.get(3)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("staff row has an invalid {what}").into(),
        )
    };
    Ok(StaffAccount {
        id: r.get(0)?,
        tenant: TenantId::parse(&tenant).map_err(|_| bad("tenant"))?,
        email: r.get(2)?,
        role: Role::parse(&role).ok_or_else(|| bad("role"))?,
        password_hash: r.get(4)?,
        created_at: r.get(5)?,
        sessions_valid_after: r.get(6)?,
    })
}

const SESSION: &str = "token_hash, staff_id, tenant, csrf, created_at, last_seen, expires_at";

fn session(r: &Row<'_>) -> rusqlite::Result<StaffSession> {
    let tenant: String = r.get(2)?;
    Ok(StaffSession {
        token_hash: r.get(0)?,
        staff_id: r.get(1)?,
        tenant: TenantId::parse(&tenant).map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                "session row has an invalid tenant".into(),
            )
        })?,
        csrf: r.get(3)?,
        created_at: r.get(4)?,
        last_seen: r.get(5)?,
        expires_at: r.get(6)?,
    })
}

#[async_trait]
impl StaffStore for SqliteStaffStore {
    async fn add_staff(&self, a: &StaffAccount) -> Result<bool, StoreError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "INSERT INTO staff (id, tenant, email, role, password_hash, created_at, sessions_valid_after)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![
                    a.id,
                    a.tenant.as_str(),
                    a.email,
                    a.role.as_str(),
                    a.password_hash,
                    a.created_at,
                    a.sessions_valid_after
                ],
            )
            .map_err(db_err)?;
        Ok(n == 1)
    }

    async fn staff_by_email(&self, email: &str) -> Result<Option<StaffAccount>, StoreError> {
        let conn = self.db.lock();
        conn.query_row(
            &format!("SELECT {ACCOUNT} FROM staff WHERE email = ?1"),
            [email],
            account,
        )
        .optional()
        .map_err(db_err)
    }

    async fn staff(&self, tenant: &TenantId, id: &str) -> Result<Option<StaffAccount>, StoreError> {
        let conn = self.db.lock();
        conn.query_row(
            &format!("SELECT {ACCOUNT} FROM staff WHERE tenant = ?1 AND id = ?2"),
            [tenant.as_str(), id],
            account,
        )
        .optional()
        .map_err(db_err)
    }

    async fn list_staff(&self, tenant: &TenantId) -> Result<Vec<StaffAccount>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {ACCOUNT} FROM staff WHERE tenant = ?1 ORDER BY email"
            ))
            .map_err(db_err)?;
        let rows = stmt.query_map([tenant.as_str()], account).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    async fn set_password(
        &self,
        tenant: &TenantId,
        id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        let n = tx
            .execute(
                "UPDATE staff SET password_hash = ?3, sessions_valid_after = ?4
                 WHERE tenant = ?1 AND id = ?2",
                params![tenant.as_str(), id, password_hash, now],
            )
            .map_err(db_err)?;
        tx.execute("DELETE FROM staff_sessions WHERE staff_id = ?1", [id])
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(n == 1)
    }

    async fn remove_staff(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        let n = tx
            .execute(
                "DELETE FROM staff WHERE tenant = ?1 AND id = ?2",
                [tenant.as_str(), id],
            )
            .map_err(db_err)?;
        if n == 1 {
            tx.execute("DELETE FROM staff_sessions WHERE staff_id = ?1", [id])
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(n == 1)
    }

    async fn create_session(&self, s: &StaffSession) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            &format!("INSERT OR REPLACE INTO staff_sessions ({SESSION}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                s.token_hash,
                s.staff_id,
                s.tenant.as_str(),
                s.csrf,
                s.created_at,
                s.last_seen,
                s.expires_at
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn session(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<StaffSession>, StoreError> {
        let conn = self.db.lock();
        conn.query_row(
            &format!(
                "SELECT {SESSION} FROM staff_sessions WHERE token_hash = ?1 AND expires_at > ?2"
            ),
            params![token_hash, now],
            session,
        )
        .optional()
        .map_err(db_err)
    }

    async fn touch_session(
        &self,
        token_hash: &str,
        last_seen: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE staff_sessions SET last_seen = MAX(last_seen, ?2), expires_at = MAX(expires_at, ?3)
             WHERE token_hash = ?1",
            params![token_hash, last_seen, expires_at],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "DELETE FROM staff_sessions WHERE token_hash = ?1",
            [token_hash],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn add_sign_in_failure(
        &self,
        key: &str,
        bucket: i64,
        expires_at: i64,
    ) -> Result<u32, StoreError> {
        let conn = self.db.lock();
        conn.query_row(
            "INSERT INTO sign_in_failures (key, bucket, failures, expires_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (key, bucket) DO UPDATE SET failures = failures + 1
             RETURNING failures",
            params![key, bucket, expires_at],
            |r| r.get(0),
        )
        .map_err(db_err)
    }

    async fn sign_in_failures(&self, key: &str, bucket: i64) -> Result<u32, StoreError> {
        let conn = self.db.lock();
        Ok(conn
            .query_row(
                "SELECT failures FROM sign_in_failures WHERE key = ?1 AND bucket = ?2",
                params![key, bucket],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?
            .unwrap_or(0))
    }
}
