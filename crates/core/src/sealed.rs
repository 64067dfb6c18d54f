//! [`SealedStore`]: a [`MessageStore`] that seals every personal field before it reaches the
//! adapter and opens it on the way back, so no adapter (DynamoDB, SQLite) ever holds a
//! message text, a name, a phone number or a wamid in plaintext.
//!
//! | record | sealed fields | key |
//! |---|---|---|
//! | message | `wamid`, `text`, `content`, `reply_to` | the contact's |
//! | contact | `name`, `wa_id`, `user_id`, `username` | the contact's |
//! | other event | `payload` | the tenant's `events` key |
//! | quarantined event | `payload` | the system tenant's `events` key |
//!
//! Ids, times, kinds, statuses and error codes stay plaintext: they are pseudonymous and the
//! stores query on them. A value sealed under a destroyed key (erasure raced a read) reads as
//! gone: the message is left out, the field is empty.

use crate::crypto::{CryptoError, EVENTS_KEYREF, Keyring, Sealer, is_sealed};
use crate::ids::{ContactId, TenantId};
use crate::ports::{MessageStore, StoreError};
use crate::records::*;
use crate::webhook::ApiError;
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

pub struct SealedStore {
    inner: Arc<dyn MessageStore>,
    keys: Arc<Keyring>,
}

impl SealedStore {
    pub fn new(inner: Arc<dyn MessageStore>, keys: Arc<Keyring>) -> Self {
        SealedStore { inner, keys }
    }

    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keys
    }
}

impl From<CryptoError> for StoreError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Unavailable(m) => StoreError::Unavailable(m),
            other => StoreError::Corrupt(other.to_string()),
        }
    }
}

fn seal_opt(s: &Sealer, purpose: &str, v: &Option<String>) -> Option<String> {
    v.as_deref()
        .filter(|v| !v.is_empty())
        .map(|v| s.seal_str(purpose, v))
}

/// `Ok(None)` when the value's key is gone (erased); plaintext (written before sealing
/// existed, or by a test) passes through.
async fn open_field(
    keys: &Keyring,
    tenant: &TenantId,
    purpose: &str,
    v: Option<String>,
) -> Result<Option<String>, StoreError> {
    match v {
        Some(v) if is_sealed(&v) => match keys.open_string(tenant, purpose, &v).await {
            Ok(p) => Ok(Some(p)),
            Err(CryptoError::Destroyed) => Ok(None),
            Err(e) => Err(e.into()),
        },
        other => Ok(other),
    }
}

async fn open_value(
    keys: &Keyring,
    tenant: &TenantId,
    purpose: &str,
    v: Value,
) -> Result<Option<Value>, StoreError> {
    match v {
        Value::String(s) if is_sealed(&s) => match keys.open(tenant, purpose, &s).await {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|_| {
                StoreError::Corrupt(format!("sealed {purpose} is not JSON"))
            })?)),
            Err(CryptoError::Destroyed) => Ok(None),
            Err(e) => Err(e.into()),
        },
        other => Ok(Some(other)),
    }
}

fn seal_value(s: &Sealer, purpose: &str, v: &Value) -> Value {
    Value::String(s.seal(purpose, &serde_json::to_vec(v).unwrap_or_default()))
}

impl SealedStore {
    fn seal_message(s: &Sealer, m: &StoredMessage) -> StoredMessage {
        let mut m = m.clone();
        if !m.wamid.is_empty() {
            m.wamid = s.seal_str("message.wamid", &m.wamid);
        }
        m.text = seal_opt(s, "message.text", &m.text);
        m.reply_to = seal_opt(s, "message.reply_to", &m.reply_to);
        m.content = seal_value(s, "message.content", &m.content);
        m.referral = m
            .referral
            .as_ref()
            .map(|r| seal_value(s, "message.referral", r));
        m
    }

    /// `None` if the message's key was destroyed.
    async fn open_message(
        &self,
        tenant: &TenantId,
        mut m: StoredMessage,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let k = &self.keys;
        let Some(content) = open_value(k, tenant, "message.content", m.content).await? else {
            return Ok(None);
        };
        m.content = content;
        m.wamid = open_field(k, tenant, "message.wamid", Some(m.wamid))
            .await?
            .unwrap_or_default();
        m.text = open_field(k, tenant, "message.text", m.text).await?;
        m.reply_to = open_field(k, tenant, "message.reply_to", m.reply_to).await?;
        m.referral = match m.referral {
            Some(r) => open_value(k, tenant, "message.referral", r).await?,
            None => None,
        };
        Ok(Some(m))
    }

    async fn open_messages(
        &self,
        tenant: &TenantId,
        items: Vec<StoredMessage>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        for m in items {
            if let Some(m) = self.open_message(tenant, m).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    async fn open_conversation(
        &self,
        tenant: &TenantId,
        mut c: Conversation,
    ) -> Result<Conversation, StoreError> {
        c.name = open_field(&self.keys, tenant, "contact.name", c.name).await?;
        Ok(c)
    }
}

#[async_trait]
impl MessageStore for SealedStore {
    async fn resolve_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
        proposed: &ContactId,
        expires_at: i64,
    ) -> Result<ContactId, StoreError> {
        self.inner
            .resolve_contact(tenant, identity_keys, proposed, expires_at)
            .await
    }

    async fn find_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
    ) -> Result<Option<ContactId>, StoreError> {
        self.inner.find_contact(tenant, identity_keys).await
    }

    async fn record_inbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        contact: &ContactUpdate,
    ) -> Result<Recorded, StoreError> {
        let s = self
            .keys
            .contact_sealer(tenant, &message.contact_id, message.expires_at)
            .await?;
        let message = Self::seal_message(&s, message);
        let mut contact = contact.clone();
        contact.name = seal_opt(&s, "contact.name", &contact.name);
        contact.wa_id = seal_opt(&s, "contact.wa_id", &contact.wa_id);
        contact.user_id = seal_opt(&s, "contact.user_id", &contact.user_id);
        contact.username = seal_opt(&s, "contact.username", &contact.username);
        self.inner.record_inbound(tenant, &message, &contact).await
    }

    async fn record_status(
        &self,
        tenant: &TenantId,
        status: &StoredStatus,
    ) -> Result<Recorded, StoreError> {
        self.inner.record_status(tenant, status).await
    }

    async fn record_event(
        &self,
        tenant: &TenantId,
        event: &StoredEvent,
    ) -> Result<Recorded, StoreError> {
        let s = self
            .keys
            .sealer(tenant, EVENTS_KEYREF, Some(event.expires_at))
            .await?;
        let mut event = event.clone();
        event.payload = seal_value(&s, "event.payload", &event.payload);
        self.inner.record_event(tenant, &event).await
    }

    async fn quarantine(&self, item: &Quarantined) -> Result<Recorded, StoreError> {
        let system = TenantId::system();
        let s = self
            .keys
            .sealer(&system, EVENTS_KEYREF, Some(item.expires_at))
            .await?;
        let mut item = item.clone();
        item.payload = seal_value(&s, "quarantine.payload", &item.payload);
        self.inner.quarantine(&item).await
    }

    async fn list_quarantine(
        &self,
        limit: usize,
        now: i64,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let system = TenantId::system();
        let mut out = Vec::new();
        for mut q in self.inner.list_quarantine(limit, now).await? {
            q.payload = open_value(&self.keys, &system, "quarantine.payload", q.payload)
                .await?
                .unwrap_or(Value::Null);
            out.push(q);
        }
        Ok(out)
    }

    async fn list_conversations(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<Conversation>, StoreError> {
        let p = self.inner.list_conversations(tenant, page, now).await?;
        let mut items = Vec::with_capacity(p.items.len());
        for c in p.items {
            items.push(self.open_conversation(tenant, c).await?);
        }
        Ok(Page {
            items,
            next_cursor: p.next_cursor,
        })
    }

    async fn conversation(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<Conversation>, StoreError> {
        match self.inner.conversation(tenant, contact, now).await? {
            Some(c) => Ok(Some(self.open_conversation(tenant, c).await?)),
            None => Ok(None),
        }
    }

    async fn list_messages(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<StoredMessage>, StoreError> {
        let p = self.inner.list_messages(tenant, contact, page, now).await?;
        Ok(Page {
            items: self.open_messages(tenant, p.items).await?,
            next_cursor: p.next_cursor,
        })
    }

    async fn message_by_wamid(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Option<StoredMessage>, StoreError> {
        match self.inner.message_by_wamid(tenant, wamid_key, now).await? {
            Some(m) => self.open_message(tenant, m).await,
            None => Ok(None),
        }
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<ContactRecord>, StoreError> {
        let Some(mut c) = self.inner.contact(tenant, contact, now).await? else {
            return Ok(None);
        };
        let k = &self.keys;
        c.conversation = self.open_conversation(tenant, c.conversation).await?;
        c.wa_id = open_field(k, tenant, "contact.wa_id", c.wa_id).await?;
        c.user_id = open_field(k, tenant, "contact.user_id", c.user_id).await?;
        c.username = open_field(k, tenant, "contact.username", c.username).await?;
        Ok(Some(c))
    }

    async fn record_consent(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        entry: &ConsentEntry,
    ) -> Result<Recorded, StoreError> {
        self.inner.record_consent(tenant, contact, entry).await
    }

    async fn consent_ledger(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<ConsentEntry>, StoreError> {
        self.inner.consent_ledger(tenant, contact, now).await
    }

    async fn claim_away_reply(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
        interval: i64,
    ) -> Result<bool, StoreError> {
        self.inner
            .claim_away_reply(tenant, contact, now, interval)
            .await
    }

    async fn clear_unread(&self, tenant: &TenantId, contact: &ContactId) -> Result<(), StoreError> {
        self.inner.clear_unread(tenant, contact).await
    }

    async fn set_send_backoff(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        until: i64,
    ) -> Result<(), StoreError> {
        self.inner.set_send_backoff(tenant, contact, until).await
    }

    async fn create_outbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        let s = self
            .keys
            .contact_sealer(tenant, &message.contact_id, message.expires_at)
            .await?;
        let message = Self::seal_message(&s, message);
        self.inner
            .create_outbound(tenant, &message, idempotency)
            .await
    }

    async fn claim_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        now: i64,
        lease_secs: i64,
    ) -> Result<Claim, StoreError> {
        self.inner
            .claim_send(tenant, message_key, now, lease_secs)
            .await
    }

    async fn complete_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        contact: &ContactId,
        wamid: &str,
        wamid_key: &str,
    ) -> Result<(), StoreError> {
        // The wamid is sealed under the key of the contact the message went to (its current
        // generation: if the contact was erased meanwhile, the message is gone as well).
        let s = self
            .keys
            .sealer(tenant, crate::crypto::contact_keyref(contact), None)
            .await?;
        let sealed = s.seal_str("message.wamid", wamid);
        self.inner
            .complete_send(tenant, message_key, contact, &sealed, wamid_key)
            .await
    }

    async fn fail_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        error: &ApiError,
    ) -> Result<(), StoreError> {
        self.inner.fail_send(tenant, message_key, error).await
    }

    async fn release_send(&self, tenant: &TenantId, message_key: &str) -> Result<(), StoreError> {
        self.inner.release_send(tenant, message_key).await
    }

    async fn statuses(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Vec<StoredStatus>, StoreError> {
        self.inner.statuses(tenant, wamid_key, now).await
    }

    async fn create_upload(&self, tenant: &TenantId, upload: &Upload) -> Result<(), StoreError> {
        let s = self
            .keys
            .contact_sealer(tenant, &upload.contact_id, upload.expires_at)
            .await?;
        let mut upload = upload.clone();
        upload.filename = seal_opt(&s, "upload.filename", &upload.filename);
        self.inner.create_upload(tenant, &upload).await
    }

    async fn upload(
        &self,
        tenant: &TenantId,
        media_id: &str,
        now: i64,
    ) -> Result<Option<Upload>, StoreError> {
        match self.inner.upload(tenant, media_id, now).await? {
            Some(mut u) => {
                u.filename = open_field(&self.keys, tenant, "upload.filename", u.filename).await?;
                Ok(Some(u))
            }
            None => Ok(None),
        }
    }

    async fn set_media(
        &self,
        tenant: &TenantId,
        message_key: &str,
        media: &crate::media::MediaInfo,
    ) -> Result<(), StoreError> {
        self.inner.set_media(tenant, message_key, media).await
    }

    async fn add_media_failure(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError> {
        self.inner.add_media_failure(phone_number_id, hour).await
    }

    async fn media_failures(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError> {
        self.inner.media_failures(phone_number_id, hour).await
    }

    async fn contact_identity_keys(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.contact_identity_keys(tenant, contact).await
    }

    async fn erase_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
    ) -> Result<ErasedItems, StoreError> {
        self.inner
            .erase_contact(tenant, contact, identity_keys)
            .await
    }
}

/// The purpose forwarded event payloads are sealed for on the outbound queue.
pub const FORWARD_PURPOSE: &str = "forward";

/// An [`crate::ports::OutboundQueue`] that seals the payload of every forward job (it may
/// carry message content) under its contact's key; reply-sender opens it.
pub struct SealedOutbound {
    inner: Arc<dyn crate::ports::OutboundQueue>,
    keys: Arc<Keyring>,
}

impl SealedOutbound {
    pub fn new(inner: Arc<dyn crate::ports::OutboundQueue>, keys: Arc<Keyring>) -> Self {
        SealedOutbound { inner, keys }
    }
}

#[async_trait]
impl crate::ports::OutboundQueue for SealedOutbound {
    async fn enqueue_jobs(
        &self,
        jobs: &[crate::jobs::Job],
    ) -> Result<(), crate::ports::QueueError> {
        use crate::jobs::Job;
        let now = self.keys.clock().now();
        let mut sealed = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut job = job.clone();
            if let Job::Forward {
                tenant, payload, ..
            } = &mut job
                && !payload.is_string()
            {
                // Under the contact's key when it names one (erasure shreds it, dead-lettered
                // or not), else the tenant's transit key.
                let contact = payload["data"]["contact_id"]
                    .as_str()
                    .and_then(|c| ContactId::parse(c).ok());
                let s = match contact {
                    Some(c) => {
                        self.keys
                            .sealer(
                                tenant,
                                crate::crypto::contact_keyref(&c),
                                Some(now + crate::crypto::TRANSIT_KEY_EXTRA_SECS),
                            )
                            .await
                    }
                    None => self.keys.transit_sealer(tenant, now).await,
                }
                .map_err(|e| crate::ports::QueueError::Unavailable(e.to_string()))?;
                *payload = seal_value(&s, FORWARD_PURPOSE, payload);
            }
            sealed.push(job);
        }
        self.inner.enqueue_jobs(&sealed).await
    }
}

/// Opens a forward job's payload (plaintext passes through).
pub async fn open_forward_payload(
    keys: &Keyring,
    tenant: &TenantId,
    payload: Value,
) -> Result<Option<Value>, StoreError> {
    open_value(keys, tenant, FORWARD_PURPOSE, payload).await
}
