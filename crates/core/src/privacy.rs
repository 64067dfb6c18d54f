//! Data subject rights: export (GDPR Art. 15/20) and erasure (Art. 17) of one contact.
//!
//! Both work on a [`crate::sealed::SealedStore`] (export decrypts; erasure needs the profile's
//! identities) and are used alike by inbox-api and `relay contacts`.

use crate::crypto::{CryptoError, Keyring, contact_keyref};
use crate::ids::{ContactId, Identity, Pseudonymizer, TenantId};
use crate::ports::StoreError;
use crate::ports::store_roles::*;
use crate::records::{ErasedItems, PageRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

pub const EXPORT_FORMAT: &str = "relay.contact-export.v1";

/// Proof of an erasure: what was deleted and when. Carries only pseudonymous ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureReceipt {
    pub contact_id: ContactId,
    /// Unix seconds.
    pub erased_at: i64,
    /// True if this run destroyed a data key of the contact (false on a re-run: all were gone).
    pub key_destroyed: bool,
    pub deleted: ErasedItems,
}

#[derive(Clone)]
pub struct Privacy {
    /// A sealing store: export reads decrypted values through it.
    pub store: Arc<crate::sealed::SealedStore>,
    pub keys: Arc<Keyring>,
    pub pseudonymizer: Arc<Pseudonymizer>,
    /// The contact's files.
    pub blobs: Arc<dyn crate::media::BlobStore>,
}

impl Privacy {
    /// Everything the relay holds about a contact, decrypted, as one JSON document; `None` if
    /// the contact is unknown, erased or expired.
    pub async fn export(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<Value>, StoreError> {
        let Some(record) = self.store.contact(tenant, contact, now).await? else {
            return Ok(None);
        };
        let mut messages = Vec::new();
        let mut page = PageRequest::first(200);
        loop {
            let p = self
                .store
                .list_messages(tenant, contact, &page, now)
                .await?;
            let mut items = p.items;
            crate::prescriptions::attach(self.store.as_ref(), (tenant, contact), &mut items, now)
                .await?;
            for m in items {
                let mut keys = vec![m.wamid_key.clone()];
                if !m.wamid.is_empty() {
                    let k = self.pseudonymizer.wamid_key(tenant, &m.wamid);
                    if k != m.wamid_key {
                        keys.push(k);
                    }
                }
                let mut statuses = Vec::new();
                for k in keys {
                    statuses.extend(self.store.statuses(tenant, &k, now).await?);
                }
                let mut v = serde_json::to_value(&m).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "statuses".into(),
                        serde_json::to_value(&statuses).unwrap_or_default(),
                    );
                    // The file itself is one download away (the inbox API serves it).
                    if let Some(media) = o.get_mut("media").and_then(Value::as_object_mut) {
                        media.remove("object_key");
                        if let Some(id) = media.get("media_id").and_then(Value::as_str) {
                            let href = format!("/v1/media/{id}");
                            media.insert("href".into(), Value::String(href));
                        }
                    }
                }
                messages.push(v);
            }
            match p.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        // Oldest first reads naturally in a document.
        messages.reverse();
        let consent = self.store.consent_ledger(tenant, contact, now).await?;
        // What the pharmacy's team recorded about the conversation (web inbox).
        let team = self.store.team_state(tenant, contact, now).await?;
        let notes = self.store.notes(tenant, contact, now).await?;
        let c = &record.conversation;
        Ok(Some(json!({
            "format": EXPORT_FORMAT,
            "exported_at": now,
            "tenant": tenant,
            "contact": {
                "contact_id": c.contact_id,
                "name": c.name,
                "wa_id": record.wa_id,
                "user_id": record.user_id,
                "username": record.username,
                "parent_user_id": record.parent_user_id,
                "channel": record.phone_number_id,
                "opted_out": c.opted_out,
                "last_inbound_at": c.last_inbound_at,
                "last_message_at": c.last_message_at,
            },
            "messages": messages,
            "consent": consent,
            "team": team,
            "notes": notes,
        })))
    }

    /// Erases a contact: destroys its data key first (from then on every copy anywhere is
    /// unreadable), then deletes its items. Safe to run again, also after a crash half-way.
    pub async fn erase(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<ErasureReceipt, StoreError> {
        // Every identity of the contact: recorded by the store, and (for data written before it
        // recorded them) hashed from the profile's ids while they still open.
        let mut identity_keys = self.store.contact_identity_keys(tenant, contact).await?;
        if let Some(record) = self.store.contact(tenant, contact, i64::MIN).await? {
            if let Some(b) = record.user_id.as_deref() {
                identity_keys.push(self.pseudonymizer.identity_key(tenant, Identity::Bsuid(b)));
            }
            if let Some(w) = record.wa_id.as_deref() {
                identity_keys.push(self.pseudonymizer.identity_key(tenant, Identity::WaId(w)));
            }
        }
        identity_keys.sort();
        identity_keys.dedup();
        // The keys first: the contact's own, and the key of each of its identities (webhooks on
        // the queues are sealed under the identity they arrived with). From here on no copy
        // anywhere opens.
        let mut key_destroyed = self
            .keys
            .destroy(tenant, contact_keyref(contact))
            .await
            .map_err(|e: CryptoError| StoreError::from(e))?;
        for k in &identity_keys {
            let alias = format!("c_{k}");
            if alias != contact.as_str() {
                key_destroyed |= self.keys.destroy(tenant, &alias).await?;
            }
        }
        let media = self
            .blobs
            .delete_prefix(&crate::media::contact_prefix(tenant, contact.as_str()))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut deleted = self
            .store
            .erase_contact(tenant, contact, &identity_keys)
            .await?;
        deleted.media = media;
        tracing::info!(
            tenant = %tenant,
            contact = %contact,
            items = deleted.total(),
            key_destroyed,
            "contact erased"
        );
        Ok(ErasureReceipt {
            contact_id: contact.clone(),
            erased_at: now,
            key_destroyed,
            deleted,
        })
    }
}
