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
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare("SELECT body FROM templates WHERE tenant = ?1 ORDER BY name, language")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([tenant.as_str()], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(from_json(&row.map_err(db_err)?)?);
        }
        Ok(out)
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
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare("SELECT body FROM quick_replies WHERE tenant = ?1")
            .map_err(db_err)?;
        let rows = stmt
            .query_map([tenant.as_str()], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        let mut out: Vec<relay_core::templates::QuickReply> = Vec::new();
        for row in rows {
            out.push(from_json(&row.map_err(db_err)?)?);
        }
        // By title as people read it (SQLite's collation would put "Ö" after "Z").
        out.sort_by_key(|q| q.title.to_lowercase());
        Ok(out)
    }
}
