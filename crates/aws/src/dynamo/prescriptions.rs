//! [`PrescriptionLedger`] on DynamoDB: `T#{tenant}#C#{contact}` / `RX#{message key}`, in the
//! contact's partition (erasure's partition sweep takes them); `expires_at` is the table's TTL
//! attribute, and reads leave out what has expired before TTL gets to it.

use super::*;
use relay_core::ports::PrescriptionLedger;

#[async_trait]
impl PrescriptionLedger for DynamoMessageStore {
    async fn add_prescriptions(
        &self,
        tenant: &TenantId,
        record: &PrescriptionRecord,
    ) -> Result<Recorded, StoreError> {
        let body = serde_json::to_string(record).map_err(|e| corrupt(&e.to_string()))?;
        let mut item = Item::new();
        item.insert("pk".into(), s(contact_pk(tenant, &record.contact_id)));
        item.insert("sk".into(), s(format!("RX#{}", record.message_key)));
        item.insert("body".into(), s(body));
        item.insert("expires_at".into(), n(record.expires_at));
        self.put_new(item).await
    }

    async fn prescriptions(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<PrescriptionRecord>, StoreError> {
        let items = self
            .partition(contact_pk(tenant, contact), "RX#", now)
            .await?;
        let mut records: Vec<PrescriptionRecord> = bodies(&items, "prescriptions")?;
        records.sort_by(|a, b| {
            a.found_at
                .cmp(&b.found_at)
                .then_with(|| a.message_key.cmp(&b.message_key))
        });
        Ok(records)
    }
}
