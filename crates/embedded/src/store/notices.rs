//! [`NoticeBoard`] on SqliteMessageStore: one row per notice; `due_at` indexes the reminders
//! owed.

use super::*;
use relay_core::ports::NoticeBoard;

/// When the sweep owes the notice a reminder (none: it owes none).
fn due_at(n: &Notice) -> Option<i64> {
    n.remind_at
        .filter(|_| n.collected_at.is_none() && n.reminder.is_none())
}

#[async_trait]
impl NoticeBoard for SqliteMessageStore {
    async fn add_notice(&self, tenant: &TenantId, notice: &Notice) -> Result<Recorded, StoreError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "INSERT INTO notices (tenant, contact_id, kind, reference, body, sent_at, due_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
                params![
                    tenant.as_str(),
                    notice.contact_id.as_str(),
                    notice.kind,
                    notice.reference,
                    to_json(notice),
                    notice.sent_at,
                    due_at(notice),
                    notice.expires_at
                ],
            )
            .map_err(db_err)?;
        Ok(inserted(n))
    }

    async fn notice(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        kind: &str,
        reference: &str,
        now: i64,
    ) -> Result<Option<Notice>, StoreError> {
        let conn = self.db.lock();
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM notices WHERE tenant = ?1 AND contact_id = ?2 AND kind = ?3
                   AND reference = ?4 AND expires_at > ?5",
                params![tenant.as_str(), contact.as_str(), kind, reference, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn update_notice(&self, tenant: &TenantId, notice: &Notice) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE notices SET body = ?5, due_at = ?6 WHERE tenant = ?1 AND contact_id = ?2
               AND kind = ?3 AND reference = ?4",
            params![
                tenant.as_str(),
                notice.contact_id.as_str(),
                notice.kind,
                notice.reference,
                to_json(notice),
                due_at(notice)
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn notices(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<Notice>, StoreError> {
        bodies(
            &self.db.lock(),
            "SELECT body FROM notices WHERE tenant = ?1 AND contact_id = ?2 AND expires_at > ?3
             ORDER BY sent_at, kind, reference",
            params![tenant.as_str(), contact.as_str(), now],
        )
    }

    async fn due_notices(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(TenantId, Notice)>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT tenant, body FROM notices WHERE due_at IS NOT NULL AND due_at <= ?1
                   AND expires_at > ?1 ORDER BY due_at LIMIT ?2",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![now, limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (tenant, body) = row.map_err(db_err)?;
            let tenant =
                TenantId::parse(&tenant).map_err(|_| StoreError::Corrupt("tenant id".into()))?;
            out.push((tenant, from_json(&body)?));
        }
        Ok(out)
    }
}
