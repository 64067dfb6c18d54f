//! [`TemplateStore`] on SqliteMessageStore.

use super::*;
use relay_core::templates::{Template, TemplateStore};

#[async_trait]
impl TemplateStore for SqliteMessageStore {
    async fn replace_templates(
        &self,
        tenant: &TenantId,
        templates: &[Template],
    ) -> Result<(), StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute("DELETE FROM templates WHERE tenant = ?1", [tenant.as_str()])
            .map_err(db_err)?;
        for t in templates {
            tx.execute(
                "INSERT OR REPLACE INTO templates (tenant, name, language, body) VALUES (?1, ?2, ?3, ?4)",
                params![tenant.as_str(), t.name, t.language, to_json(t)],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    async fn templates(&self, tenant: &TenantId) -> Result<Vec<Template>, StoreError> {
        bodies(
            &self.db.lock(),
            "SELECT body FROM templates WHERE tenant = ?1 ORDER BY name, language",
            [tenant.as_str()],
        )
    }
}

#[async_trait]
impl relay_core::templates::QuickReplies for SqliteMessageStore {
    async fn put_quick_reply(
        &self,
        tenant: &TenantId,
        reply: &relay_core::templates::QuickReply,
    ) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "INSERT OR REPLACE INTO quick_replies (tenant, id, title, body) VALUES (?1, ?2, ?3, ?4)",
            params![tenant.as_str(), reply.id, reply.title, to_json(reply)],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn remove_quick_reply(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "DELETE FROM quick_replies WHERE tenant = ?1 AND id = ?2",
                [tenant.as_str(), id],
            )
            .map_err(db_err)?;
        Ok(n == 1)
    }

    async fn quick_replies(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<relay_core::templates::QuickReply>, StoreError> {
        let mut out: Vec<relay_core::templates::QuickReply> = bodies(
            &self.db.lock(),
            "SELECT body FROM quick_replies WHERE tenant = ?1",
            [tenant.as_str()],
        )?;
        // By title as people read it (SQLite's collation would put "Ö" after "Z").
        out.sort_by_key(|q| q.title.to_lowercase());
        Ok(out)
    }
}

#[async_trait]
impl relay_core::usage::UsageLedger for SqliteMessageStore {
    async fn record_usage(
        &self,
        tenant: &TenantId,
        month: &str,
        wamid_key: &str,
        pricing: &relay_core::usage::Pricing,
        expires_at: i64,
    ) -> Result<Recorded, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        let n = tx
            .execute(
                "INSERT INTO usage_marks (tenant, wamid_key, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![tenant.as_str(), wamid_key, expires_at],
            )
            .map_err(db_err)?;
        if n == 1 {
            tx.execute(
                "INSERT INTO usage (tenant, month, category, pricing_type, messages, billable) VALUES (?1, ?2, ?3, ?4, 1, ?5)
                 ON CONFLICT (tenant, month, category, pricing_type) DO UPDATE SET
                   messages = messages + 1, billable = billable + excluded.billable",
                params![
                    tenant.as_str(),
                    month,
                    pricing.category,
                    pricing.pricing_type,
                    i64::from(pricing.billable)
                ],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(inserted(n))
    }

    async fn usage(
        &self,
        tenant: &TenantId,
        month: &str,
    ) -> Result<Vec<relay_core::usage::UsageCount>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT category, pricing_type, messages, billable FROM usage
                 WHERE tenant = ?1 AND month = ?2 ORDER BY category, pricing_type",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![tenant.as_str(), month], |r| {
                Ok(relay_core::usage::UsageCount {
                    category: r.get(0)?,
                    pricing_type: r.get(1)?,
                    messages: r.get::<_, i64>(2)?.max(0) as u64,
                    billable: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    }
}
