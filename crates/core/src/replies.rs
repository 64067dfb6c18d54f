//! The reply use case: a pharmacy's reply to a conversation is checked against WhatsApp's
//! rules (opt-out, the 24-hour window, the file it sends, what it answers) and queued for
//! reply-sender, once per idempotency key. The inbox API (and later the web inbox) translate
//! HTTP into a [`ReplyCommand`] and a [`Refusal`] into a status code; the rules live here.
//!
//! May depend on: the ports and records of this crate.

use crate::ids::{ContactId, TenantId};
use crate::jobs::Job;
use crate::outbound::{ValidReply, queued_message};
use crate::ports::{Directory, MessageStore, OutboundQueue, QueueError, StoreError};
use crate::records::{
    ConsentEvent, CreateOutcome, Direction, IdempotencyRecord, PageRequest, StoredMessage,
};
use crate::routing::SERVICE_WINDOW_SECS;

/// The ports the use case needs.
pub struct ReplyPorts<'a> {
    pub store: &'a dyn MessageStore,
    pub directory: &'a dyn Directory,
    pub outbound: &'a dyn OutboundQueue,
    /// The tenant's templates, to know a template's category (marketing templates are
    /// refused to a customer who stopped them).
    pub templates: Option<&'a dyn crate::templates::TemplateStore>,
}

/// A checked reply to one conversation.
pub struct ReplyCommand<'a> {
    pub tenant: &'a TenantId,
    pub contact: &'a ContactId,
    pub reply: &'a ValidReply,
    /// The caller's idempotency key (hashed with the tenant) and the hash of its request.
    pub idempotency: Option<IdempotencyRecord>,
    pub now: i64,
}

/// The reply is queued (or was, by an earlier request with the same idempotency key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// `m_…`, the message's id in the inbox.
    pub id: String,
    /// Where it has got to: `queued` for a new one, the current status for a repeat.
    pub status: String,
    pub created: bool,
}

/// Why a reply is not queued.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("no such conversation")]
    NoSuchConversation,
    #[error("no such uploaded file for this conversation")]
    UnknownUpload,
    #[error("a {kind} reply cannot carry a {mime} file")]
    WrongFileType { kind: &'static str, mime: String },
    #[error("the contact has opted out")]
    OptedOut,
    /// The customer stopped marketing messages (WhatsApp's `user_preferences`).
    #[error("the customer stopped marketing messages; this template is a marketing template")]
    MarketingStopped,
    /// Outside the 24-hour window only templates may be sent.
    #[error("the 24-hour customer service window is closed")]
    WindowClosed { closed_at: Option<i64> },
    #[error("reply_to is not a message of this conversation")]
    NotInConversation,
    #[error("this idempotency key was used for another request")]
    KeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Whether the template a reply names (`name`, `language.code`) is a marketing template.
async fn is_marketing(
    templates: &dyn crate::templates::TemplateStore,
    tenant: &TenantId,
    object: &serde_json::Value,
) -> Result<bool, StoreError> {
    let name = object.get("name").and_then(serde_json::Value::as_str);
    let language = object
        .pointer("/language/code")
        .and_then(serde_json::Value::as_str);
    let Some(name) = name else { return Ok(false) };
    Ok(templates.templates(tenant).await?.iter().any(|t| {
        t.name == name
            && language.is_none_or(|l| l == t.language)
            && t.category.eq_ignore_ascii_case("MARKETING")
    }))
}

/// A fresh message key: 32 hex digits.
fn new_message_key() -> Result<String, Refusal> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| StoreError::Unavailable(format!("random: {e}")))?;
    Ok(hex::encode(b))
}

/// Checks `cmd` against the conversation and queues it. Safe to repeat with the same
/// idempotency key: one message, one send; the job is queued again (reply-sender's claim makes
/// a twin a no-op), which completes a first attempt that stored but did not queue.
pub async fn queue_reply(ports: &ReplyPorts<'_>, cmd: ReplyCommand<'_>) -> Result<Queued, Refusal> {
    let ReplyCommand {
        tenant,
        contact,
        reply,
        idempotency,
        now,
    } = cmd;
    let record = ports
        .store
        .contact(tenant, contact, now)
        .await?
        .ok_or(Refusal::NoSuchConversation)?;
    if let Some(upload_id) = reply.upload_id() {
        let upload = ports
            .store
            .upload(tenant, upload_id, now)
            .await?
            .filter(|u| &u.contact_id == contact)
            .ok_or(Refusal::UnknownUpload)?;
        let mime = upload.media.mime_type.as_deref().unwrap_or_default();
        let fits = match reply.kind {
            "image" => mime.starts_with("image/"),
            "audio" => mime.starts_with("audio/"),
            _ => true,
        };
        if !fits {
            return Err(Refusal::WrongFileType {
                kind: reply.kind,
                mime: mime.to_owned(),
            });
        }
    }
    if record.conversation.opted_out {
        return Err(Refusal::OptedOut);
    }
    if reply.is_template
        && let Some(templates) = ports.templates
        && is_marketing(templates, tenant, &reply.object).await?
        && ConsentEvent::marketing_stopped(&ports.store.consent_ledger(tenant, contact, now).await?)
    {
        return Err(Refusal::MarketingStopped);
    }
    let window_closed_at = record
        .conversation
        .last_inbound_at
        .map(|t| t + SERVICE_WINDOW_SECS);
    if !reply.is_template && window_closed_at.is_none_or(|t| t <= now) {
        return Err(Refusal::WindowClosed {
            closed_at: window_closed_at,
        });
    }
    let reply_to_wamid = match &reply.reply_to {
        None => None,
        Some(id) => {
            let key = id
                .strip_prefix("m_")
                .filter(|k| k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or(Refusal::NotInConversation)?;
            let m = ports
                .store
                .message_by_wamid(tenant, key, now)
                .await?
                .ok_or(Refusal::NotInConversation)?;
            if &m.contact_id != contact || m.wamid.is_empty() {
                return Err(Refusal::NotInConversation);
            }
            Some(m.wamid)
        }
    };

    let key = new_message_key()?;
    let retention = ports
        .directory
        .tenant(tenant)
        .await?
        .map(|t| t.retention_secs())
        .unwrap_or(i64::from(crate::tenant::DEFAULT_RETENTION_DAYS) * 86_400);
    let message = queued_message(&key, contact, reply, reply_to_wamid, now, now + retention);
    let outcome = ports
        .store
        .create_outbound(tenant, &message, idempotency.as_ref())
        .await?;
    let (message_key, created) = match outcome {
        CreateOutcome::Created => (key, true),
        CreateOutcome::Existing {
            message_key,
            request_hash,
        } => {
            if let (Some(first), Some(idem)) = (request_hash, &idempotency)
                && first != idem.request_hash
            {
                return Err(Refusal::KeyReused);
            }
            (message_key, false)
        }
    };
    ports
        .outbound
        .enqueue_jobs(&[Job::Send {
            tenant: tenant.clone(),
            contact: contact.clone(),
            message_key: message_key.clone(),
            consent_reply: false,
        }])
        .await?;
    // A repeat reports where the first message has got to.
    let status = if created {
        None
    } else {
        ports
            .store
            .message_by_wamid(tenant, &message_key, now)
            .await?
            .and_then(|m| m.status)
    };
    Ok(Queued {
        id: format!("m_{message_key}"),
        status: status.map_or("queued", |s| s.as_str()).to_owned(),
        created,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum MarkReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Sends a read receipt for the conversation's newest inbound message (with the typing
/// indicator when `typing`) and sets its unread count to zero. `None`: no such conversation;
/// `Some(None)`: nothing inbound to mark.
pub async fn mark_read(
    store: &dyn MessageStore,
    outbound: &dyn OutboundQueue,
    (tenant, contact): (&TenantId, &ContactId),
    typing: bool,
    now: i64,
) -> Result<Option<Option<StoredMessage>>, MarkReadError> {
    if store.conversation(tenant, contact, now).await?.is_none() {
        return Ok(None);
    }
    let mut newest_inbound = None;
    let mut cursor = None;
    // The newest inbound message is nearly always on the first page; look a few pages deep.
    for _ in 0..5 {
        let page = store
            .list_messages(tenant, contact, &PageRequest { limit: 200, cursor }, now)
            .await?;
        newest_inbound = page
            .items
            .into_iter()
            .find(|m| m.direction == Direction::Inbound);
        if newest_inbound.is_some() || page.next_cursor.is_none() {
            break;
        }
        cursor = page.next_cursor;
    }
    if let Some(m) = &newest_inbound {
        outbound
            .enqueue_jobs(&[Job::MarkRead {
                tenant: tenant.clone(),
                contact: contact.clone(),
                wamid_key: m.wamid_key.clone(),
                typing,
            }])
            .await?;
    }
    store.clear_unread(tenant, contact).await?;
    Ok(Some(newest_inbound))
}
