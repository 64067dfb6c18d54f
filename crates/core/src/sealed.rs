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
use crate::ports::{ErasureStore, InboundLog, InboxReads, MediaLedger, OutboundLedger};
use crate::ports::{MessageStore, StoreError};
use crate::records::*;
use crate::webhook::ApiError;
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

// One file per store role (crate::ports).
mod erasure;
mod inbound;
mod inbox;
mod media;
mod notices;
mod outbound;
mod prescriptions;
mod team;

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
