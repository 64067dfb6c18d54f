//! The E-Rezept use case: tokens found in a message (its text by the router, the codes in its
//! photo or PDF by reply-sender) are recorded once per message, without those the contact
//! sent before, for the tenant's `prescription_retention_days`; readers join them back onto
//! their messages as `content.prescriptions`.
//!
//! May depend on: the ports and records of this crate.

use crate::erezept::Prescription;
use crate::ids::{ContactId, TenantId};
use crate::policy::TenantPolicy;
use crate::ports::{PrescriptionLedger, StoreError};
use crate::records::{PrescriptionRecord, StoredMessage};
use serde_json::{Value, json};

/// Records what was found in the message `message_key` and returns the tokens that are new for
/// the contact (the ones to show and forward). Repeating it for the same message returns what
/// the first call recorded, so a redelivered event forwards the same tokens again (the forward
/// id de-duplicates) and records nothing twice. Tokens are kept until
/// `found_at + prescription_retention_days`, never past the message's own expiry.
pub async fn record(
    ledger: &dyn PrescriptionLedger,
    (tenant, contact): (&TenantId, &ContactId),
    message_key: &str,
    found: &[Prescription],
    policy: &TenantPolicy,
    (found_at, message_expires_at): (i64, i64),
) -> Result<Vec<Prescription>, StoreError> {
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let earlier = ledger.prescriptions(tenant, contact, found_at).await?;
    if let Some(mine) = earlier.iter().find(|r| r.message_key == message_key) {
        return Ok(mine.prescriptions.clone());
    }
    let mut new: Vec<Prescription> = Vec::new();
    for p in found {
        let seen = earlier.iter().any(|r| r.prescriptions.contains(p));
        if !seen && !new.contains(p) {
            new.push(p.clone());
        }
    }
    if new.is_empty() {
        return Ok(new);
    }
    let expires_at = (found_at + policy.prescription_retention_secs()).min(message_expires_at);
    let record = PrescriptionRecord {
        contact_id: contact.clone(),
        message_key: message_key.to_owned(),
        prescriptions: new.clone(),
        found_at,
        expires_at,
    };
    ledger.add_prescriptions(tenant, &record).await?;
    Ok(new)
}

/// The `prescription.received` forward of tokens new in `message`: the ids and the count, and
/// the tokens themselves only if the tenant set `forward_prescriptions`.
pub fn forward(
    tenant: &crate::tenant::Tenant,
    message: &StoredMessage,
    contact: &ContactId,
    found: &[Prescription],
) -> crate::jobs::Job {
    let mut data = json!({"message_id": message.id, "contact_id": contact, "count": found.len()});
    if tenant.policy.forward_prescriptions {
        data["prescriptions"] = json!(found);
    }
    crate::jobs::Job::Forward {
        tenant: tenant.id.clone(),
        webhook_id: format!("rx_{}", message.id),
        created_at: message.timestamp,
        payload: json!({"type": "prescription.received", "timestamp": message.timestamp, "data": data}),
    }
}

/// Puts each kept record's tokens on its message as `content.prescriptions` (those already
/// expired or erased are not there to put).
pub async fn attach(
    ledger: &dyn PrescriptionLedger,
    (tenant, contact): (&TenantId, &ContactId),
    messages: &mut [StoredMessage],
    now: i64,
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let records = ledger.prescriptions(tenant, contact, now).await?;
    for r in records {
        if let Some(m) = messages.iter_mut().find(|m| m.wamid_key == r.message_key) {
            if !m.content.is_object() {
                m.content = json!({});
            }
            if let Value::Object(content) = &mut m.content {
                content.insert("prescriptions".into(), json!(r.prescriptions));
            }
        }
    }
    Ok(())
}
