//! reply-sender: the egress function. It takes jobs from the outbound queue and talks to the
//! outside world: sends replies through 360dialog (or Meta), marks messages as read, and
//! delivers signed forwards to the pharmacy's software.
//!
//! At-least-once in, at most one send out: before calling WhatsApp it takes a lease on the
//! message (`claim_send`); a job redelivered after a recorded success sends nothing. The one
//! window left — a crash after WhatsApp accepted the message and before the wamid is recorded —
//! is the lease time; a retry after it sends again (documented in the README).
//!
//! Retries use the queue: a failed job is made visible again after an exponential backoff
//! with jitter (ChangeMessageVisibility on SQS), up to a bound, then dead-lettered.

mod limiter;

mod media;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
pub use limiter::ChannelLimiter;
pub use media::{MEDIA_FAILURE_BUDGET, hash_matches};
pub use relay_aws::batch::BatchError;
use relay_aws::batch::{Handled, each_record};
use relay_core::Clock;
use relay_core::ids::{ContactId, Pseudonymizer, TenantId};
use relay_core::jobs::{Job, sign_webhook};
use relay_core::outbound::{Failure, Recipient, message_body};
use relay_core::ports::{Directory, JobControl, MessageStore, StoreError};
use relay_core::records::Claim;
use relay_core::webhook::ApiError;
use relay_whatsapp::WhatsAppClient;
use secrecy::ExposeSecret;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// How long a forward to the pharmacy's endpoint may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            send_attempts: 8,
            forward_for: Duration::from_secs(24 * 3600),
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
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

/// What the egress function needs; built once per process.
pub struct Sender {
    pub store: Arc<dyn MessageStore>,
    pub directory: Arc<dyn Directory>,
    pub control: Arc<dyn JobControl>,
    pub pseudonymizer: Arc<Pseudonymizer>,
    /// Opens sealed forward payloads; seals fetched files.
    pub keys: Arc<relay_core::crypto::Keyring>,
    /// Where fetched files go (S3, or files under `data_dir`).
    pub blobs: Arc<dyn relay_core::media::BlobStore>,
    /// The largest file fetched (bytes).
    pub max_media_bytes: u64,
    pub whatsapp: WhatsAppClient,
    /// For forwards to the pharmacy (each request bounded by [`FORWARD_TIMEOUT`]); the mains
    /// share the WhatsApp client's (`WhatsAppClient::http`).
    pub http: reqwest::Client,
    pub limiter: ChannelLimiter,
    pub policy: RetryPolicy,
    pub clock: Clock,
    /// How many senders run at once (the Lambda's reserved concurrency): each paces itself to
    /// its share of a channel's rate, so all together stay within it.
    pub concurrency: u32,
}

/// What became of one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    RetryAfter(Duration),
    DeadLetter(String),
}

/// Handles a batch of jobs; the answer lists the records to retry.
pub async fn handle(sender: &Sender, event: SqsEvent) -> Result<SqsBatchResponse, BatchError> {
    each_record(event, |record| async move {
        let message_id = &record.message_id;
        let (kind, outcome) = match serde_json::from_str::<Job>(&record.body) {
            Ok(job) => (job.kind(), sender.process(&job, record.receives).await),
            Err(_) => ("unreadable", Ok(Outcome::DeadLetter("not a job".into()))),
        };
        let label = match &outcome {
            Ok(Outcome::Done) => "done",
            Ok(Outcome::RetryAfter(_)) => "retry",
            Ok(Outcome::DeadLetter(_)) => "dead_letter",
            Err(_) => "store_error",
        };
        metrics::counter!("relay_jobs_total", "kind" => kind, "outcome" => label).increment(1);
        let retry = match outcome {
            Ok(Outcome::Done) => false,
            Ok(Outcome::RetryAfter(delay)) => {
                if let Some(receipt) = &record.receipt
                    && let Err(e) = sender.control.retry_after(receipt, delay).await
                {
                    tracing::warn!(message_id = %message_id, error = %e, "could not set the retry delay; the visibility timeout applies");
                }
                true
            }
            Ok(Outcome::DeadLetter(reason)) => {
                tracing::error!(message_id = %message_id, reason = %reason, "job dead-lettered");
                // If even the DLQ refuses it, keep it on the queue rather than lose it.
                sender.control.dead_letter(&record.body).await.is_err()
            }
            Err(e) => {
                tracing::warn!(message_id = %message_id, error = %e, "job failed on storage; the queue retries it");
                true
            }
        };
        if retry { Handled::Retry } else { Handled::Done }
    })
    .await
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

impl Sender {
    /// The sender of a process, from its backends: one HTTP client (one TLS setup) for
    /// 360dialog, downloads and forwards; the default retry policy.
    pub fn build(
        b: &relay_core::backends::Backends,
    ) -> Result<Self, relay_core::backends::Missing> {
        let whatsapp = WhatsAppClient::default();
        Ok(Sender {
            store: b.store.clone(),
            directory: b.directory.clone(),
            control: b.control()?,
            pseudonymizer: b.pseudonymizer.clone(),
            keys: b.keys.clone(),
            blobs: b.blobs()?,
            max_media_bytes: b.limits.max_media_bytes,
            http: whatsapp.http(),
            whatsapp,
            limiter: ChannelLimiter::default(),
            policy: RetryPolicy::default(),
            clock: b.clock.clone(),
            concurrency: b.limits.sender_concurrency,
        })
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    fn share(&self, rate: u32) -> u32 {
        (rate / self.concurrency.max(1)).max(1)
    }

    /// One job; its span names the job's kind and its tenant and contact (pseudonymous ids).
    #[tracing::instrument(name = "job", skip_all, fields(kind = job.kind(), tenant = %job.tenant(), contact = tracing::field::Empty))]
    pub async fn process(&self, job: &Job, receives: u32) -> Result<Outcome, StoreError> {
        if let Some(contact) = job.contact() {
            tracing::Span::current().record("contact", contact.as_str());
        }
        match job {
            Job::Send {
                tenant,
                contact,
                message_key,
                consent_reply,
            } => {
                self.send(tenant, contact, message_key, *consent_reply)
                    .await
            }
            Job::MarkRead {
                tenant,
                contact,
                wamid_key,
            } => self.mark_read(tenant, contact, wamid_key, receives).await,
            Job::FetchMedia {
                tenant,
                contact,
                message_key,
            } => {
                self.fetch_media(tenant, contact, message_key, receives)
                    .await
            }
            Job::Forward {
                tenant,
                webhook_id,
                created_at,
                payload,
            } => Ok(self
                .forward(tenant, webhook_id, *created_at, payload, receives)
                .await),
        }
    }

    async fn send(
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
                let outcome = match e.failure {
                    Failure::Permanent => "failed",
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

    async fn mark_read(
        &self,
        tenant: &TenantId,
        contact_id: &ContactId,
        wamid_key: &str,
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
        match self.whatsapp.mark_read(&channel, &message.wamid).await {
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

    async fn forward(
        &self,
        tenant: &TenantId,
        webhook_id: &str,
        created_at: i64,
        payload: &serde_json::Value,
        receives: u32,
    ) -> Outcome {
        let now = self.now();
        let target = match self.directory.tenant(tenant).await {
            Ok(Some(t)) => t.forward_url.zip(t.forward_secret),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "tenant lookup failed");
                return Outcome::RetryAfter(self.policy.backoff(receives));
            }
        };
        let Some((url, secret)) = target else {
            tracing::info!(tenant = %tenant, webhook_id, "forwarding is off for this tenant: dropped");
            return Outcome::Done;
        };
        let payload = match relay_core::sealed::open_forward_payload(
            &self.keys,
            tenant,
            payload.clone(),
        )
        .await
        {
            Ok(Some(p)) => p,
            Ok(None) => {
                tracing::warn!(tenant = %tenant, webhook_id, "forward sealed under an expired transit key: dropped");
                return Outcome::Done;
            }
            Err(relay_core::ports::StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "key lookup failed");
                return Outcome::RetryAfter(self.policy.backoff(receives));
            }
            Err(e) => return Outcome::DeadLetter(format!("forward payload does not open: {e}")),
        };
        // A contact erased since the event was queued: its data must not reach the pharmacy
        // afresh after the erasure (the router stores the contact before it queues a forward,
        // so a missing contact means erased or expired).
        if let Some(contact) = payload["data"]["contact_id"]
            .as_str()
            .and_then(|c| ContactId::parse(c).ok())
        {
            match self.store.conversation(tenant, &contact, now).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::info!(tenant = %tenant, contact = %contact, webhook_id, "contact erased or expired: forward dropped");
                    return Outcome::Done;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "contact lookup failed");
                    return Outcome::RetryAfter(self.policy.backoff(receives));
                }
            }
        }
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let Ok(signature) = sign_webhook(secret.expose_secret(), webhook_id, now, &body) else {
            return Outcome::DeadLetter(
                "the tenant's forward secret is not a whsec_ secret".into(),
            );
        };
        let result = self
            .http
            .post(&url)
            .timeout(FORWARD_TIMEOUT)
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let status = result.as_ref().map(|r| r.status().as_u16()).ok();
        if status.is_some_and(|s| (200..300).contains(&s)) {
            tracing::info!(tenant = %tenant, webhook_id, "forwarded");
            return Outcome::Done;
        }
        tracing::warn!(tenant = %tenant, webhook_id, status, receives, "forward failed");
        let age = Duration::from_secs((now - created_at).max(0) as u64);
        if age >= self.policy.forward_for && receives >= 3 {
            Outcome::DeadLetter(format!("forward failing for {} h", age.as_secs() / 3600))
        } else {
            Outcome::RetryAfter(self.policy.backoff(receives))
        }
    }
}
