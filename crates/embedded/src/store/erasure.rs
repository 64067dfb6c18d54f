//! [`ErasureStore`] on SqliteMessageStore: erasure of a contact.

use super::*;

#[async_trait]
impl ErasureStore for SqliteMessageStore {
    async fn contact_identity_keys(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare("SELECT identity_key FROM identities WHERE tenant = ?1 AND contact_id = ?2 ORDER BY identity_key")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![tenant.as_str(), contact.as_str()], |r| r.get(0))
            .map_err(db_err)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db_err)
    }

    async fn erase_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
    ) -> Result<ErasedItems, StoreError> {
        let (t, c) = (tenant.as_str(), contact.as_str());
        let mut erased = ErasedItems::default();
        {
            let mut conn = self.db.lock();
            let tx = conn.transaction().map_err(db_err)?;
            let run = |sql: &str| tx.execute(sql, params![t, c]).map_err(db_err);
            erased.statuses = run(
                "DELETE FROM statuses WHERE tenant = ?1 AND wamid_key IN (
                   SELECT wamid_key FROM messages WHERE tenant = ?1 AND contact_id = ?2
                   UNION SELECT alias_key FROM messages WHERE tenant = ?1 AND contact_id = ?2 AND alias_key IS NOT NULL)",
            )?;
            erased.index_items = run(
                "DELETE FROM idempotency WHERE tenant = ?1 AND message_key IN (
                   SELECT wamid_key FROM messages WHERE tenant = ?1 AND contact_id = ?2)",
            )?;
            erased.messages = run("DELETE FROM messages WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.consent_entries =
                run("DELETE FROM consent WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.index_items += run("DELETE FROM uploads WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.identities =
                run("DELETE FROM identities WHERE tenant = ?1 AND contact_id = ?2")?;
            for key in identity_keys {
                erased.identities += tx
                    .execute(
                        "DELETE FROM identities WHERE tenant = ?1 AND identity_key = ?2",
                        params![t, key],
                    )
                    .map_err(db_err)?;
            }
            erased.notes = run("DELETE FROM notes WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.prescriptions =
                run("DELETE FROM prescriptions WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.index_items += run("DELETE FROM notices WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.index_items +=
                run("DELETE FROM team_states WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.profile = run("DELETE FROM contacts WHERE tenant = ?1 AND contact_id = ?2")?;
            tx.commit().map_err(db_err)?;
        }
        self.db.checkpoint().map_err(db_err)?;
        Ok(erased)
    }
}
