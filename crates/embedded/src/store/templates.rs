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
