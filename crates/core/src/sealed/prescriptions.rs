//! [`PrescriptionLedger`] on SealedStore: each token's prescription id and access code are
//! sealed under the contact's key (the token opens the prescription).

use super::*;
use crate::ports::PrescriptionLedger;

#[async_trait]
impl PrescriptionLedger for SealedStore {
    async fn add_prescriptions(
        &self,
        tenant: &TenantId,
        record: &PrescriptionRecord,
    ) -> Result<Recorded, StoreError> {
        let s = self
            .keys
            .contact_sealer(tenant, &record.contact_id, record.expires_at)
            .await?;
        let mut sealed = record.clone();
        for p in &mut sealed.prescriptions {
            p.task_id = s.seal_str("prescription.task_id", &p.task_id);
            p.access_code = s.seal_str("prescription.access_code", &p.access_code);
        }
        self.inner.add_prescriptions(tenant, &sealed).await
    }

    async fn prescriptions(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<PrescriptionRecord>, StoreError> {
        let k = &self.keys;
        let mut out = Vec::new();
        'records: for mut r in self.inner.prescriptions(tenant, contact, now).await? {
            for p in &mut r.prescriptions {
                let id = open_field(k, tenant, "prescription.task_id", Some(p.task_id.clone()));
                let code = open_field(
                    k,
                    tenant,
                    "prescription.access_code",
                    Some(p.access_code.clone()),
                );
                match (id.await?, code.await?) {
                    (Some(id), Some(code)) => {
                        p.task_id = id;
                        p.access_code = code;
                    }
                    // The key is gone: the contact was erased.
                    _ => continue 'records,
                }
            }
            out.push(r);
        }
        Ok(out)
    }
}
