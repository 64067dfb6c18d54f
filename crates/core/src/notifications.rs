//! Pickup-ready notices: the pharmacy tells a customer their order can be collected, by the
//! tenant's utility template (`[tenants.notifications.pickup_ready]`; neutral wording, no drug
//! names), once per order reference, never to an opted-out contact, inside or outside the
//! 24-hour window; optionally one reminder after N days unless the order was collected.
//!
//! The send goes through the reply use case ([`crate::replies::queue_reply`]) with an
//! idempotency key derived from the reference, so a repeated request is the same message; the
//! [`Notice`] record (port [`NoticeBoard`], beside the other store roles in `ports`) carries what the reminder sweep needs. The sweep
//! runs on a schedule on AWS and every few minutes in `relay serve`.
//!
//! May depend on: the ports, records and use cases of this crate.

use crate::ids::{ContactId, TenantId};
use crate::jobs::Job;
use crate::outbound::{ReplyRequest, TemplateSpec};
pub use crate::ports::NoticeBoard;
use crate::ports::{Directory, OutboundQueue, StoreError};
pub use crate::records::Notice;
use crate::records::{IdempotencyRecord, Recorded};
use crate::replies::{Queued, Refusal, ReplyCommand, ReplyPorts, queue_reply};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The one kind of notice there is so far.
pub const PICKUP_READY: &str = "pickup_ready";

/// `[tenants.notifications.pickup_ready]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickupReadyPolicy {
    /// An approved UTILITY template (e.g. "Ihre Bestellung {{1}} liegt zur Abholung bereit").
    pub template: String,
    pub language: String,
    /// The body's parameters, in order; `{reference}` is replaced by the order reference.
    #[serde(default)]
    pub params: Vec<String>,
    /// A reminder this many days after the notice unless collected (default: none).
    #[serde(default)]
    pub remind_after_days: Option<u32>,
    /// The reminder's template (default: the notice's own).
    #[serde(default)]
    pub reminder_template: Option<String>,
}

/// Whether `reference` is one a notice takes.
pub fn valid_reference(reference: &str) -> bool {
    (1..=64).contains(&reference.len())
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why a notice was not sent.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("unknown notification kind")]
    UnknownKind,
    #[error("the reference must be 1 to 64 letters, digits or . _ -")]
    BadReference,
    #[error("the tenant has no pickup_ready template configured")]
    NotConfigured,
    #[error("the configured template is not a valid template: {0}")]
    BadTemplate(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] crate::ports::QueueError),
}

/// The ports a notice needs: the reply use case's and the board.
pub struct NoticePorts<'a> {
    pub replies: ReplyPorts<'a>,
    pub board: &'a dyn NoticeBoard,
}

fn hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// The template message of a notice (or its reminder) with `{reference}` filled in.
fn template_reply(
    policy: &PickupReadyPolicy,
    template: &str,
    reference: &str,
) -> Result<crate::outbound::ValidReply, NoticeError> {
    let params: Vec<Value> = policy
        .params
        .iter()
        .map(|p| json!({"type": "text", "text": p.replace("{reference}", reference)}))
        .collect();
    let components = if params.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "body", "parameters": params})]
    };
    ReplyRequest::Template {
        template: TemplateSpec {
            name: template.to_owned(),
            language: policy.language.clone(),
            components,
        },
        reply_to: None,
    }
    .validate()
    .map_err(|e| NoticeError::BadTemplate(e.detail))
}

/// Refuses a template the tenant's template store knows as anything but UTILITY: a pickup
/// notice is a utility message (Meta's category decides what it costs and whether a customer
/// who stopped marketing gets it). A template the store does not list (not synced) passes.
async fn check_utility(
    templates: Option<&dyn crate::templates::TemplateStore>,
    tenant: &TenantId,
    (name, language): (&str, &str),
) -> Result<(), NoticeError> {
    let Some(templates) = templates else {
        return Ok(());
    };
    let known = templates.templates(tenant).await?;
    match known
        .iter()
        .find(|t| t.name == name && t.language == language)
    {
        Some(t) if !t.category.eq_ignore_ascii_case("UTILITY") => {
            Err(NoticeError::BadTemplate(format!(
                "{name} ({language}) is a {} template; pickup notices use a UTILITY template",
                t.category.to_uppercase()
            )))
        }
        _ => Ok(()),
    }
}

/// A forward of a notice's change to the pharmacy's software (`notification.sent`,
/// `notification.reminded`, `notification.collected`).
fn forward(tenant: &TenantId, notice: &Notice, event: &str, at: i64) -> Job {
    Job::Forward {
        tenant: tenant.clone(),
        webhook_id: format!(
            "ntf_{}",
            hash(&[
                event,
                notice.contact_id.as_str(),
                &notice.kind,
                &notice.reference
            ])
        ),
        created_at: at,
        payload: json!({"type": event, "timestamp": at, "data": {
            "contact_id": notice.contact_id, "kind": notice.kind, "reference": notice.reference,
            "message_id": notice.message_id, "reminder_id": notice.reminder,
            "collected_at": notice.collected_at,
        }}),
    }
}

/// Sends the pickup-ready notice for `reference` (once: a repeat answers with the first one's
/// message and notice) and records it. Refused to an opted-out contact.
pub async fn notify(
    ports: &NoticePorts<'_>,
    tenant: &crate::tenant::Tenant,
    contact: &ContactId,
    (kind, reference): (&str, &str),
    now: i64,
) -> Result<(Notice, Queued), NoticeError> {
    if kind != PICKUP_READY {
        return Err(NoticeError::UnknownKind);
    }
    if !valid_reference(reference) {
        return Err(NoticeError::BadReference);
    }
    let policy = tenant
        .policy
        .pickup_ready
        .as_ref()
        .ok_or(NoticeError::NotConfigured)?;
    let reply = template_reply(policy, &policy.template, reference)?;
    check_utility(
        ports.replies.templates,
        &tenant.id,
        (&policy.template, &policy.language),
    )
    .await?;
    let key = hash(&["notice", contact.as_str(), kind, reference]);
    let queued = queue_reply(
        &ports.replies,
        ReplyCommand {
            tenant: &tenant.id,
            contact,
            reply: &reply,
            idempotency: Some(IdempotencyRecord {
                key_hash: hash(&[tenant.id.as_str(), &key]),
                request_hash: key.clone(),
            }),
            now,
        },
    )
    .await?;
    let notice = Notice {
        contact_id: contact.clone(),
        kind: kind.to_owned(),
        reference: reference.to_owned(),
        message_id: queued.id.clone(),
        sent_at: now,
        remind_at: policy
            .remind_after_days
            .map(|d| now + i64::from(d) * 86_400),
        reminder: None,
        collected_at: None,
        expires_at: now + tenant.retention_secs(),
    };
    let notice = match ports.board.add_notice(&tenant.id, &notice).await? {
        Recorded::New => notice,
        Recorded::Duplicate => ports
            .board
            .notice(&tenant.id, contact, kind, reference, now)
            .await?
            .unwrap_or(notice),
    };
    if tenant.forward_url.is_some() {
        ports
            .replies
            .outbound
            .enqueue_jobs(&[forward(
                &tenant.id,
                &notice,
                "notification.sent",
                notice.sent_at,
            )])
            .await?;
    }
    Ok((notice, queued))
}

/// Marks the notice collected (no reminder goes out after this); `None` if there is no such
/// notice. Repeating it keeps the first time.
pub async fn collected(
    board: &dyn NoticeBoard,
    outbound: &dyn OutboundQueue,
    tenant: &crate::tenant::Tenant,
    contact: &ContactId,
    (kind, reference): (&str, &str),
    now: i64,
) -> Result<Option<Notice>, NoticeError> {
    let Some(mut notice) = board
        .notice(&tenant.id, contact, kind, reference, now)
        .await?
    else {
        return Ok(None);
    };
    if notice.collected_at.is_none() {
        notice.collected_at = Some(now);
        board.update_notice(&tenant.id, &notice).await?;
    }
    if tenant.forward_url.is_some() {
        let at = notice.collected_at.unwrap_or(now);
        outbound
            .enqueue_jobs(&[forward(&tenant.id, &notice, "notification.collected", at)])
            .await?;
    }
    Ok(Some(notice))
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub reminded: usize,
    /// Due, but not sent: the contact opted out or is gone, or the tenant turned reminders off.
    pub skipped: usize,
    pub failed: usize,
}

/// Sends the reminders due at `now` (up to `limit`). Each is a template message with a key
/// derived from its notice, so a sweep that runs twice, or dies half-way, sends none twice.
pub async fn sweep_reminders(
    ports: &NoticePorts<'_>,
    directory: &dyn Directory,
    now: i64,
    limit: usize,
) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    for (tenant_id, mut notice) in ports.board.due_notices(now, limit).await? {
        if !notice.reminder_due(now) {
            continue;
        }
        let tenant = directory.tenant(&tenant_id).await?;
        let policy = tenant
            .as_ref()
            .and_then(|t| t.policy.pickup_ready.clone())
            .filter(|p| p.remind_after_days.is_some());
        let (Some(tenant), Some(policy)) = (tenant, policy) else {
            notice.reminder = Some("skipped".into());
            ports.board.update_notice(&tenant_id, &notice).await?;
            swept.skipped += 1;
            continue;
        };
        let template = policy
            .reminder_template
            .clone()
            .unwrap_or_else(|| policy.template.clone());
        let checked = match template_reply(&policy, &template, &notice.reference) {
            Ok(reply) => check_utility(
                ports.replies.templates,
                &tenant_id,
                (&template, &policy.language),
            )
            .await
            .map(|()| reply),
            Err(e) => Err(e),
        };
        let result = match checked {
            Ok(reply) => {
                let key = hash(&[
                    "reminder",
                    notice.contact_id.as_str(),
                    &notice.kind,
                    &notice.reference,
                ]);
                queue_reply(
                    &ports.replies,
                    ReplyCommand {
                        tenant: &tenant_id,
                        contact: &notice.contact_id,
                        reply: &reply,
                        idempotency: Some(IdempotencyRecord {
                            key_hash: hash(&[tenant_id.as_str(), &key]),
                            request_hash: key.clone(),
                        }),
                        now,
                    },
                )
                .await
                .map_err(NoticeError::from)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(queued) => {
                notice.reminder = Some(queued.id);
                ports.board.update_notice(&tenant_id, &notice).await?;
                if tenant.forward_url.is_some()
                    && let Err(e) = ports
                        .replies
                        .outbound
                        .enqueue_jobs(&[forward(&tenant_id, &notice, "notification.reminded", now)])
                        .await
                {
                    tracing::warn!(tenant = %tenant_id, error = %e, "reminder forward not queued");
                }
                tracing::info!(tenant = %tenant_id, contact = %notice.contact_id, "pickup reminder queued");
                swept.reminded += 1;
            }
            Err(NoticeError::Refused(
                Refusal::OptedOut | Refusal::NoSuchConversation | Refusal::MarketingStopped,
            ))
            | Err(NoticeError::BadTemplate(_)) => {
                notice.reminder = Some("skipped".into());
                ports.board.update_notice(&tenant_id, &notice).await?;
                tracing::info!(tenant = %tenant_id, contact = %notice.contact_id, "pickup reminder skipped");
                swept.skipped += 1;
            }
            Err(e) => {
                // Left due: the next sweep tries again.
                tracing::warn!(tenant = %tenant_id, contact = %notice.contact_id, error = %e, "pickup reminder failed");
                swept.failed += 1;
            }
        }
    }
    Ok(swept)
}
