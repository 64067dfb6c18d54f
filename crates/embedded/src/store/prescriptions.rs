//! [`PrescriptionLedger`] on SqliteMessageStore: one row per message; the sweep deletes
//! expired rows.

use super::*;
use relay_core::ports::PrescriptionLedger;

#[async_trait]
impl PrescriptionLedger for SqliteMessageStore {
    async fn add_prescriptions(
        &self,
        tenant: &TenantId,
        record: &PrescriptionRecord,
    ) -> Result<Recorded, StoreError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "INSERT INTO prescriptions (tenant, message_key, contact_id, body, found_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    tenant.as_str(),
                    record.message_key,
                    record.contact_id.as_str(),
                    to_json(record),
                    record.found_at,
                    record.expires_at
                ],
            )
            .map_err(db_err)?;
        Ok(inserted(n))
    }

    async fn prescriptions(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<PrescriptionRecord>, StoreError> {
        bodies(
            &self.db.lock(),
            "SELECT body FROM prescriptions WHERE tenant = ?1 AND contact_id = ?2 AND expires_at > ?3
             ORDER BY found_at, message_key",
            params![tenant.as_str(), contact.as_str(), now],
        )
    }
}
