//! reply-sender: the egress function. It takes jobs from the outbound queue and talks to the
//! outside world: sends replies through 360dialog (or Meta), marks messages as read, and
//! delivers signed forwards to the pharmacy's software.
//!
//! The send flow itself (the send lease, pacing, retries, recording) is a core use case,
//! `relay_core::sending::SendFlow`; this crate feeds it jobs, and does what needs an HTTP
//! client of its own: fetching customers' media and signed forwards to the pharmacy.
//!
//! Retries use the queue: a failed job is made visible again after an exponential backoff
//! with jitter (ChangeMessageVisibility on SQS), up to a bound, then dead-lettered.

mod media;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
pub use media::{MEDIA_FAILURE_BUDGET, hash_matches};
pub use relay_aws::batch::BatchError;
use relay_aws::batch::{Handled, each_record};
use relay_core::Clock;
use relay_core::ids::{ContactId, Pseudonymizer, TenantId};
use relay_core::jobs::{Job, sign_webhook};
use relay_core::ports::store_roles::*;
use relay_core::ports::{Directory, JobControl, StoreError};
pub use relay_core::sending::{ChannelLimiter, Outcome, RetryPolicy};
use relay_whatsapp::WhatsAppClient;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

/// How long a forward to the pharmacy's endpoint may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the egress function needs; built once per process.
pub struct Sender {
    pub store: Arc<relay_core::sealed::SealedStore>,
    pub directory: Arc<dyn Directory>,
    pub control: Arc<dyn JobControl>,
    pub pseudonymizer: Arc<Pseudonymizer>,
    /// Opens sealed forward payloads; seals fetched files.
    pub keys: Arc<relay_core::crypto::Keyring>,
    /// Where fetched files go (S3, or files under `data_dir`).
    pub blobs: Arc<dyn relay_core::media::BlobStore>,
    /// The largest file fetched (bytes).
    pub max_media_bytes: u64,
    /// Where jobs this sender makes go (the `prescription.received` forward of a photo's
    /// E-Rezept codes): this function's own queue, forward payloads sealed on the way.
    pub outbound: Option<Arc<dyn relay_core::ports::OutboundQueue>>,
    /// Bounds on reading E-Rezept codes from fetched photos and PDFs.
    pub scan_limits: relay_scan::Limits,
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

/// How many due reminders one sweep takes (the next sweep takes the rest).
pub const SWEEP_BATCH: usize = 200;

/// Sends the pickup reminders that are due (`relay_core::notifications::sweep_reminders`): run
/// by a schedule on AWS (an EventBridge rule invokes this function) and every few minutes by
/// `relay serve`. Safe to run twice at once: each reminder has a key of its own.
pub async fn sweep_notices(
    sender: &Sender,
) -> Result<relay_core::notifications::Swept, StoreError> {
    let Some(queue) = &sender.outbound else {
        return Ok(Default::default());
    };
    let ports = relay_core::notifications::NoticePorts {
        replies: relay_core::replies::ReplyPorts {
            store: sender.store.as_ref(),
            directory: sender.directory.as_ref(),
            outbound: queue.as_ref(),
            templates: None,
        },
        board: sender.store.as_ref(),
    };
    let swept = relay_core::notifications::sweep_reminders(
        &ports,
        sender.directory.as_ref(),
        sender.now(),
        SWEEP_BATCH,
    )
    .await?;
    if swept != Default::default() {
        tracing::info!(
            reminded = swept.reminded,
            skipped = swept.skipped,
            failed = swept.failed,
            "pickup reminders swept"
        );
    }
    Ok(swept)
}

/// What invokes the function: the outbound queue's event source, or the reminder schedule.
pub enum Invocation {
    Jobs(SqsEvent),
    Schedule,
}

impl Invocation {
    /// Tells an EventBridge scheduled event (`"source": "aws.events"`) from an SQS batch.
    pub fn of(event: serde_json::Value) -> Result<Self, serde_json::Error> {
        if event.get("source").and_then(serde_json::Value::as_str) == Some("aws.events") {
            return Ok(Invocation::Schedule);
        }
        serde_json::from_value(event).map(Invocation::Jobs)
    }
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
            outbound: b
                .outbound
                .clone()
                .map(|q| Arc::new(relay_core::sealed::SealedOutbound::new(q, b.keys.clone())) as _),
            scan_limits: relay_scan::Limits::default(),
            http: whatsapp.http(),
            whatsapp,
            limiter: ChannelLimiter::default(),
            policy: RetryPolicy::default(),
            clock: b.clock.clone(),
            concurrency: b.limits.sender_concurrency,
        })
    }

    /// The send flow (relay_core::sending) over this sender's ports.
    pub fn flow(&self) -> relay_core::sending::SendFlow<'_> {
        relay_core::sending::SendFlow {
            store: self.store.as_ref(),
            directory: self.directory.as_ref(),
            keys: &self.keys,
            blobs: self.blobs.as_ref(),
            pseudonymizer: &self.pseudonymizer,
            whatsapp: &self.whatsapp,
            limiter: &self.limiter,
            policy: &self.policy,
            clock: &self.clock,
            concurrency: self.concurrency,
        }
    }

    fn now(&self) -> i64 {
        self.clock.now()
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
                self.flow()
                    .send(tenant, contact, message_key, *consent_reply)
                    .await
            }
            Job::MarkRead {
                tenant,
                contact,
                wamid_key,
                typing,
            } => {
                self.flow()
                    .mark_read(tenant, contact, (wamid_key, *typing), receives)
                    .await
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_and_the_queue_are_told_apart() {
        // EventBridge's scheduled event, as the AWS documentation shows it.
        let scheduled = serde_json::json!({
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-12-02T07:00:00Z", "region": "eu-central-1",
            "resources": ["arn:aws:events:eu-central-1:123456789012:rule/reminders"], "detail": {}
        });
        assert!(matches!(
            Invocation::of(scheduled),
            Ok(Invocation::Schedule)
        ));
        let batch = serde_json::json!({"Records": [{
            "messageId": "m1", "receiptHandle": "r1", "body": "{}",
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:eu-central-1:1:outbound",
            "awsRegion": "eu-central-1"
        }]});
        match Invocation::of(batch) {
            Ok(Invocation::Jobs(e)) => assert_eq!(e.records.len(), 1),
            _ => panic!("an SQS batch"),
        }
        assert!(Invocation::of(serde_json::json!({"Records": 5})).is_err());
    }
}
