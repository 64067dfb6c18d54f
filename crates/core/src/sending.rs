//! The send flow: a queued reply goes to WhatsApp at most once (the send lease), is paced to
//! the channel's rate, retried with backoff where WhatsApp says so, and its result recorded;
//! read receipts likewise. reply-sender runs it for each job; WhatsApp is a port
//! ([`WhatsAppApi`]), so the rules are the same whoever implements it.
//!
//! At-least-once in, at most one send out: before calling WhatsApp it takes a lease on the
//! message (`claim_send`); a job redelivered after a recorded success sends nothing. The one
//! window left — a crash after WhatsApp accepted the message and before the wamid is recorded —
//! is the lease time; a retry after it sends again (documented in the README).
//!
//! May depend on: the ports of this crate, tokio's timer (pacing and short pauses).

use crate::Clock;
use crate::crypto::Keyring;
use crate::ids::{ContactId, Pseudonymizer, TenantId};
use crate::media::BlobStore;
use crate::outbound::{Failure, Recipient, SendError, message_body};
use crate::ports::{Directory, MessageStore, StoreError};
use crate::records::Claim;
use crate::tenant::Channel;
use crate::webhook::ApiError;
use async_trait::async_trait;
use serde_json::Value;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

pub use limiter::ChannelLimiter;

/// WhatsApp as the send flow uses it (360dialog or Meta's Cloud API).
#[async_trait]
pub trait WhatsAppApi: Send + Sync {
    /// Sends a Cloud API message body; the wamid on success.
    async fn send(&self, channel: &Channel, body: &Value) -> Result<String, SendError>;
    /// Marks an inbound message as read.
    /// The read receipt, with the typing indicator when `typing`.
    async fn mark_read(
        &self,
        channel: &Channel,
        wamid: &str,
        typing: bool,
    ) -> Result<(), SendError>;
    /// Uploads a file for sending; WhatsApp's media id.
    async fn upload_media(
        &self,
        channel: &Channel,
        bytes: Vec<u8>,
        mime_type: &str,
        filename: &str,
    ) -> Result<String, SendError>;
}

/// How often reply-sender tries to record a send WhatsApp accepted (with pauses of 0.1, 0.3,
/// 0.9 and 2.7 s between tries: about 4 s plus the store's own timeouts, well inside the lease).
const COMPLETE_SEND_TRIES: u32 = 5;

/// How long and how often to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts at a send (or read receipt) before it is failed and dead-lettered.
    pub send_attempts: u32,
    /// Forwards are retried at least this long after the event (Standard Webhooks receivers
    /// may be down for a while), then dead-lettered.
    pub forward_for: Duration,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// How long a send attempt holds its lease (longer than one HTTP call with its timeout).
    pub lease: Duration,
    /// How long a send held back by WhatsApp (131048, 131057) is retried, from when it was
    /// queued, before it fails.
    pub hold_for: Duration,
    /// The first pause after such a refusal; it doubles up to [`RetryPolicy::hold_max_delay`].
    pub hold_base_delay: Duration,
    pub hold_max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            send_attempts: 8,
            forward_for: Duration::from_secs(24 * 3600),
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
            hold_for: Duration::from_secs(24 * 3600),
            hold_base_delay: Duration::from_secs(300),
            hold_max_delay: Duration::from_secs(6 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The pause after the `attempt`-th refusal that holds the business back: minutes first,
    /// hours later.
    pub fn hold_backoff(&self, attempt: u32) -> Duration {
        self.hold_base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.hold_max_delay)
    }

    /// Exponential backoff with full jitter in [½, 1] of the step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay);
        let jitter = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            % 1000;
        step.mul_f64(0.5 + jitter as f64 / 2000.0)
    }
}

/// What became of one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    RetryAfter(Duration),
    DeadLetter(String),
}

fn give_up_error(last: &ApiError, attempts: u32) -> ApiError {
    ApiError {
        code: last.code,
        title: Some(format!(
            "gave up after {attempts} attempts: {}",
            last.title.as_deref().unwrap_or("transient failure")
        )),
        ..ApiError::default()
    }
}

/// What the send flow works with, borrowed from the process's state.
pub struct SendFlow<'a> {
    pub store: &'a dyn MessageStore,
    pub directory: &'a dyn Directory,
    pub keys: &'a Keyring,
    pub blobs: &'a dyn BlobStore,
    pub pseudonymizer: &'a Pseudonymizer,
    pub whatsapp: &'a dyn WhatsAppApi,
    pub limiter: &'a ChannelLimiter,
    pub policy: &'a RetryPolicy,
    pub clock: &'a Clock,
    /// How many senders run at once: each paces itself to its share of a channel's rate.
    pub concurrency: u32,
}

impl SendFlow<'_> {
    fn now(&self) -> i64 {
        self.clock.now()
    }

    fn share(&self, rate: u32) -> u32 {
        (rate / self.concurrency.max(1)).max(1)
    }

    /// Sends one stored outbound message (by its row key), at most once.
    pub async fn send(
        &self,
        tenant: &TenantId,
        contact_id: &ContactId,
        key: &str,
        consent_reply: bool,
    ) -> Result<Outcome, StoreError> {
        let now = self.now();
        let Some(contact) = self.store.contact(tenant, contact_id, now).await? else {
            tracing::info!(tenant = %tenant, message_key = %key, "contact gone (erased or expired): nothing to send");
            return Ok(Outcome::Done);
        };
        let permanent = |title: &str| ApiError {
            code: 0,
            title: Some(title.to_owned()),
            ..ApiError::default()
        };
        if contact.conversation.opted_out && !consent_reply {
            // They opted out after the reply was accepted: it is not sent.
            self.store
                .fail_send(
                    tenant,
                    key,
                    &permanent("the contact opted out before it was sent"),
                )
                .await?;
            return Ok(Outcome::Done);
        }
        let channel = match &contact.phone_number_id {
            Some(pnid) => self.directory.channel(pnid).await?,
            None => None,
        };
        let Some(channel) = channel else {
            self.store
                .fail_send(tenant, key, &permanent("no channel to send through"))
                .await?;
            return Ok(Outcome::Done);
        };
        if contact.send_backoff_until > now {
            // WhatsApp asked us to slow down for this recipient: wait without an attempt.
            return Ok(Outcome::RetryAfter(Duration::from_secs(
                (contact.send_backoff_until - now) as u64,
            )));
        }
        let attempt = match self
            .store
            .claim_send(tenant, key, now, self.policy.lease.as_secs() as i64)
            .await?
        {
            Claim::Claimed { attempt } => attempt,
            Claim::Done | Claim::Missing => return Ok(Outcome::Done),
            Claim::InFlight => return Ok(Outcome::RetryAfter(self.policy.lease)),
        };
        let Some(message) = self.store.message_by_wamid(tenant, key, now).await? else {
            return Ok(Outcome::Done);
        };
        let recipient = match (&contact.wa_id, &contact.user_id) {
            (Some(n), _) => Recipient::WaId(n.clone()),
            (None, Some(u)) => Recipient::Bsuid(u.clone()),
            (None, None) => {
                self.store
                    .fail_send(
                        tenant,
                        key,
                        &permanent("the contact has no number or BSUID"),
                    )
                    .await?;
                return Ok(Outcome::Done);
            }
        };
        let object = message
            .content
            .get(&message.kind)
            .cloned()
            .unwrap_or_default();
        let sent = async {
            // A file uploaded through the inbox API goes to WhatsApp now, by id.
            let object = self
                .with_uploaded_media(tenant, &channel, &message, object)
                .await?;
            let body = message_body(
                &recipient,
                &message.kind,
                &object,
                message.reply_to.as_deref(),
            );
            self.limiter
                .acquire(
                    &channel.phone_number_id,
                    self.share(channel.send_rate_per_second),
                )
                .await;
            self.whatsapp.send(&channel, &body).await
        }
        .await;
        match sent {
            Ok(wamid) => {
                let wamid_key = self.pseudonymizer.wamid_key(tenant, &wamid);
                // WhatsApp has the message: recording that must not give up quickly, or the
                // retry after the lease sends it a second time (found by the fault suite).
                let mut pause = Duration::from_millis(100);
                let mut tries = 1;
                while let Err(e) = self
                    .store
                    .complete_send(tenant, key, &message.contact_id, &wamid, &wamid_key)
                    .await
                {
                    if tries >= COMPLETE_SEND_TRIES {
                        tracing::error!(tenant = %tenant, message = %message.id, error = %e, "sent, but the send could not be recorded; it may be sent again after the lease");
                        return Err(e);
                    }
                    tracing::warn!(tenant = %tenant, message = %message.id, error = %e, tries, "sent; recording it failed, trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 3;
                    tries += 1;
                }
                tracing::info!(tenant = %tenant, message = %message.id, wamid_key = %wamid_key, attempt, "sent");
                metrics::counter!("relay_sends_total", "outcome" => "sent").increment(1);
                Ok(Outcome::Done)
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, message = %message.id, attempt, code = e.error.code, failure = ?e.failure, "send failed");
                let held_too_long =
                    now - message.timestamp >= self.policy.hold_for.as_secs() as i64;
                let outcome = match e.failure {
                    Failure::Permanent => "failed",
                    Failure::Held if held_too_long => "gave_up",
                    Failure::Held => "held",
                    _ if attempt >= self.policy.send_attempts => "gave_up",
                    Failure::PairRateLimited => "paced",
                    Failure::Transient => "retried",
                };
                metrics::counter!("relay_sends_total", "outcome" => outcome).increment(1);
                match e.failure {
                    Failure::Permanent => {
                        self.store.fail_send(tenant, key, &e.error).await?;
                        Ok(Outcome::Done)
                    }
                    // Held back for about a day at most (the attempt bound does not apply):
                    // then it fails with WhatsApp's reason.
                    Failure::Held if held_too_long => {
                        self.store.fail_send(tenant, key, &e.error).await?;
                        Ok(Outcome::Done)
                    }
                    Failure::Held => {
                        self.store.release_send(tenant, key).await?;
                        Ok(Outcome::RetryAfter(self.policy.hold_backoff(attempt)))
                    }
                    _ if attempt >= self.policy.send_attempts => {
                        self.store
                            .fail_send(tenant, key, &give_up_error(&e.error, attempt))
                            .await?;
                        Ok(Outcome::DeadLetter(format!("send failed {attempt} times")))
                    }
                    Failure::PairRateLimited => {
                        // About one message per 6 s to the same user: this recipient waits, others go on.
                        let delay = self.policy.backoff(attempt).max(Duration::from_secs(6));
                        self.store
                            .set_send_backoff(tenant, contact_id, now + delay.as_secs() as i64)
                            .await?;
                        self.store.release_send(tenant, key).await?;
                        Ok(Outcome::RetryAfter(delay))
                    }
                    Failure::Transient => {
                        self.store.release_send(tenant, key).await?;
                        Ok(Outcome::RetryAfter(
                            e.retry_after
                                .unwrap_or_else(|| self.policy.backoff(attempt)),
                        ))
                    }
                }
            }
        }
    }

    /// Sends the read receipt for an inbound message.
    pub async fn mark_read(
        &self,
        tenant: &TenantId,
        contact_id: &ContactId,
        (wamid_key, typing): (&str, bool),
        receives: u32,
    ) -> Result<Outcome, StoreError> {
        let now = self.now();
        let contact = self.store.contact(tenant, contact_id, now).await?;
        let channel = match contact.as_ref().and_then(|c| c.phone_number_id.as_deref()) {
            Some(pnid) => self.directory.channel(pnid).await?,
            None => None,
        };
        let message = self.store.message_by_wamid(tenant, wamid_key, now).await?;
        let (Some(channel), Some(message)) = (channel, message) else {
            return Ok(Outcome::Done);
        };
        self.limiter
            .acquire(
                &channel.phone_number_id,
                self.share(channel.send_rate_per_second),
            )
            .await;
        match self
            .whatsapp
            .mark_read(&channel, &message.wamid, typing)
            .await
        {
            Ok(()) => Ok(Outcome::Done),
            Err(e) if e.failure == Failure::Permanent => {
                tracing::warn!(tenant = %tenant, code = e.error.code, "read receipt refused");
                Ok(Outcome::Done)
            }
            Err(_) if receives >= self.policy.send_attempts => {
                Ok(Outcome::DeadLetter("read receipt kept failing".into()))
            }
            Err(e) => Ok(Outcome::RetryAfter(
                e.retry_after
                    .unwrap_or_else(|| self.policy.backoff(receives)),
            )),
        }
    }

    /// Replaces `{"media_id": "mu_…"}` in a reply's object by WhatsApp's id of the same file,
    /// uploaded now (opened from the blob store); other objects pass unchanged.
    async fn with_uploaded_media(
        &self,
        tenant: &TenantId,
        channel: &crate::tenant::Channel,
        message: &crate::records::StoredMessage,
        mut object: Value,
    ) -> Result<Value, SendError> {
        let Some(upload_id) = object
            .get("media_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Ok(object);
        };
        let fail = |failure: Failure, title: &str| SendError {
            failure,
            error: Box::new(ApiError {
                code: 0,
                title: Some(title.to_owned()),
                ..ApiError::default()
            }),
            retry_after: None,
        };
        let unavailable = |_| fail(Failure::Transient, "the file store is unavailable");
        let upload = self
            .store
            .upload(tenant, &upload_id, self.now())
            .await
            .map_err(|_| fail(Failure::Transient, "the store is unavailable"))?
            .filter(|u| u.contact_id == message.contact_id)
            .ok_or_else(|| {
                fail(
                    Failure::Permanent,
                    "the uploaded file is gone (expired or erased)",
                )
            })?;
        let key = upload
            .media
            .object_key
            .as_deref()
            .ok_or_else(|| fail(Failure::Permanent, "the uploaded file is gone"))?;
        let mut reader = self
            .blobs
            .open(key)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| fail(Failure::Permanent, "the uploaded file is gone"))?;
        let size = upload.media.size.unwrap_or(0);
        let mut opener = crate::media::FileOpener::new(
            self.keys,
            tenant,
            &upload.media_id,
            size,
            reader.as_mut(),
        )
        .await
        .map_err(|_| {
            fail(
                Failure::Permanent,
                "the uploaded file does not open (erased?)",
            )
        })?;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = opener
            .next(reader.as_mut())
            .await
            .map_err(|_| fail(Failure::Transient, "the uploaded file could not be read"))?
        {
            bytes.extend(chunk);
        }
        let mime = upload
            .media
            .mime_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let name = upload
            .filename
            .clone()
            .unwrap_or_else(|| upload.media_id.clone());
        let wa_id = self
            .whatsapp
            .upload_media(channel, bytes, &mime, &name)
            .await?;
        if let Some(o) = object.as_object_mut() {
            o.remove("media_id");
            o.insert("id".into(), Value::String(wa_id));
            if message.kind == "document"
                && !o.contains_key("filename")
                && let Some(f) = &upload.filename
            {
                o.insert("filename".into(), Value::String(f.clone()));
            }
        }
        Ok(object)
    }
}

mod limiter {
    //! Per-channel send pacing: each channel gets evenly spaced slots at its configured rate, so
    //! a burst drains at the rate WhatsApp allows instead of producing a storm of 429s.
    //!
    //! Hand-written rather than `governor`: a keyed limiter with a different rate per key is ten
    //! lines here and would pull dashmap and quanta into every Lambda.

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    #[derive(Default)]
    pub struct ChannelLimiter {
        next_slot: Mutex<HashMap<String, Instant>>,
    }

    impl ChannelLimiter {
        /// Waits for this channel's next free slot at `per_second` (reserving it).
        pub async fn acquire(&self, channel: &str, per_second: u32) {
            let wait = {
                let mut slots = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let slot = slots
                    .get(channel)
                    .copied()
                    .filter(|s| *s > now)
                    .unwrap_or(now);
                let spacing = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
                slots.insert(channel.to_owned(), slot + spacing);
                slot.saturating_duration_since(now)
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}
