//! Use case of the message-router: turn one queued webhook into stored messages, contacts,
//! statuses and events, each exactly once, for the right tenant.

use crate::envelope::Envelope;
use crate::ids::{ContactId, Identity, Pseudonymizer, TenantId, content_digest};
use crate::ports::{Directory, MessageStore, StoreError};
use crate::records::*;
use crate::tenant::Tenant;
use crate::webhook::{Contact, Event, Message, Status, webhook_from_value};
use crate::{Clock, unix_now};
use serde_json::{Value, json};
use std::sync::Arc;

/// How long quarantined events are kept for an operator to look at.
pub const QUARANTINE_RETENTION_SECS: i64 = 14 * 86_400;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteReport {
    pub stored: usize,
    pub duplicates: usize,
    pub quarantined: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Will never succeed; after the queue's retries it lands in the dead-letter queue.
    #[error("malformed queue message: {0}")]
    Malformed(&'static str),
    /// May succeed on a retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Router {
    store: Arc<dyn MessageStore>,
    directory: Arc<dyn Directory>,
    pseudonymizer: Arc<Pseudonymizer>,
    clock: Clock,
}

impl Router {
    pub fn new(
        store: Arc<dyn MessageStore>,
        directory: Arc<dyn Directory>,
        pseudonymizer: Arc<Pseudonymizer>,
    ) -> Self {
        Router {
            store,
            directory,
            pseudonymizer,
            clock: Arc::new(unix_now),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Routes one queue message. Safe to call again with the same body: nothing is stored or
    /// counted twice. On error, events before the failing one are stored; a retry finishes.
    pub async fn route(&self, body: &str) -> Result<RouteReport, RouteError> {
        let envelope: Envelope = serde_json::from_str(body)
            .map_err(|_| RouteError::Malformed("not a relay envelope"))?;
        let webhook = webhook_from_value(envelope.payload.clone())
            .map_err(|_| RouteError::Malformed("payload is not a webhook"))?;
        let now = (self.clock)();
        let tenant = match self.directory.channel(&envelope.phone_number_id).await? {
            Some(channel) => self.directory.tenant(&channel.tenant_id).await?,
            None => None,
        };
        let mut report = RouteReport::default();
        for event in webhook.events() {
            let addressed = event.phone_number_id().unwrap_or(&envelope.phone_number_id);
            let reason = match &tenant {
                None => Some("no tenant has this channel"),
                Some(_) if addressed != envelope.phone_number_id => {
                    Some("event is addressed to another channel than the one that sent it")
                }
                Some(_) => None,
            };
            let recorded = match (reason, &tenant) {
                (None, Some(tenant)) => self.route_event(tenant, event, now).await?,
                (reason, _) => {
                    report.quarantined += 1;
                    self.quarantine(&envelope, &event, reason.unwrap_or_default(), now)
                        .await?
                }
            };
            match recorded {
                Recorded::New => report.stored += 1,
                Recorded::Duplicate => report.duplicates += 1,
            }
        }
        Ok(report)
    }

    async fn route_event(
        &self,
        tenant: &Tenant,
        event: Event,
        now: i64,
    ) -> Result<Recorded, StoreError> {
        let expires_at = now + tenant.retention_secs();
        match event {
            Event::Message {
                contact, message, ..
            } => {
                match self
                    .inbound(tenant, contact.as_ref(), &message, now, expires_at)
                    .await?
                {
                    Some(r) => Ok(r),
                    None => {
                        let raw = json!({"id": message.id, "type": message.kind});
                        self.event(&tenant.id, "message_without_sender", raw, now, expires_at)
                            .await
                    }
                }
            }
            Event::Status { status, .. } => self.status(tenant, &status, expires_at).await,
            Event::Error { error, .. } => {
                let raw = serde_json::to_value(&error).unwrap_or(Value::Null);
                self.event(&tenant.id, "error", raw, now, expires_at).await
            }
            Event::Other {
                field,
                value,
                waba_id,
            } => {
                self.event(
                    &tenant.id,
                    &field,
                    json!({"waba_id": waba_id, "value": value}),
                    now,
                    expires_at,
                )
                .await
            }
            Event::Unrecognized { raw, .. } => {
                self.event(&tenant.id, "unrecognized", raw, now, expires_at)
                    .await
            }
        }
    }

    fn identity_keys(
        &self,
        tenant: &TenantId,
        bsuid: Option<&str>,
        wa_id: Option<&str>,
    ) -> (Vec<String>, Option<ContactId>) {
        let mut keys = Vec::new();
        let mut primary = None;
        for identity in [bsuid.map(Identity::Bsuid), wa_id.map(Identity::WaId)]
            .into_iter()
            .flatten()
        {
            keys.push(self.pseudonymizer.identity_key(tenant, identity));
            primary.get_or_insert_with(|| self.pseudonymizer.contact_id(tenant, identity));
        }
        (keys, primary)
    }

    /// `None` when the message names no sender at all.
    async fn inbound(
        &self,
        tenant: &Tenant,
        contact: Option<&Contact>,
        message: &Message,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<Recorded>, StoreError> {
        let bsuid = contact
            .and_then(|c| c.user_id.as_deref())
            .or(message.from_user_id.as_deref());
        let wa_id = contact
            .and_then(|c| c.wa_id.as_deref())
            .or(message.from.as_deref());
        let (keys, Some(proposed)) = self.identity_keys(&tenant.id, bsuid, wa_id) else {
            return Ok(None);
        };
        let contact_id = self
            .store
            .resolve_contact(&tenant.id, &keys, &proposed, expires_at)
            .await?;
        let wamid_key = self.pseudonymizer.wamid_key(&tenant.id, &message.id);
        let stored = StoredMessage {
            id: format!("m_{wamid_key}"),
            wamid: message.id.clone(),
            wamid_key,
            contact_id: contact_id.clone(),
            direction: Direction::Inbound,
            kind: message.kind.clone(),
            text: message.content.display_text().map(str::to_owned),
            content: serde_json::to_value(&message.content).unwrap_or(Value::Null),
            timestamp: if message.timestamp > 0 {
                message.timestamp
            } else {
                now
            },
            received_at: now,
            status: None,
            error: message.errors.first().cloned(),
            reply_to: message.context.as_ref().and_then(|c| c.id.clone()),
            expires_at,
        };
        let update = ContactUpdate {
            contact_id,
            name: contact
                .and_then(|c| c.profile.as_ref())
                .and_then(|p| p.name.clone()),
            wa_id: wa_id.map(str::to_owned),
            user_id: bsuid.map(str::to_owned),
            username: contact
                .and_then(|c| c.profile.as_ref())
                .and_then(|p| p.username.clone()),
            last_inbound_at: stored.timestamp,
            expires_at,
        };
        let recorded = self
            .store
            .record_inbound(&tenant.id, &stored, &update)
            .await?;
        tracing::debug!(
            tenant = %tenant.id,
            contact = %update.contact_id,
            message = %stored.id,
            kind = %stored.kind,
            duplicate = recorded == Recorded::Duplicate,
            "inbound message"
        );
        Ok(Some(recorded))
    }

    async fn status(
        &self,
        tenant: &Tenant,
        status: &Status,
        expires_at: i64,
    ) -> Result<Recorded, StoreError> {
        let (keys, _) = self.identity_keys(
            &tenant.id,
            status.recipient_user_id.as_deref(),
            status.recipient_id.as_deref(),
        );
        let contact_id = if keys.is_empty() {
            None
        } else {
            self.store.find_contact(&tenant.id, &keys).await?
        };
        let stored = StoredStatus {
            wamid_key: self.pseudonymizer.wamid_key(&tenant.id, &status.id),
            contact_id,
            status: status.status,
            timestamp: status.timestamp,
            errors: status.errors.clone(),
            pricing: status.pricing.clone(),
            conversation: status.conversation.clone(),
            expires_at,
        };
        let recorded = self.store.record_status(&tenant.id, &stored).await?;
        tracing::debug!(tenant = %tenant.id, wamid_key = %stored.wamid_key, status = stored.status.as_str(), "status");
        Ok(recorded)
    }

    async fn event(
        &self,
        tenant: &TenantId,
        kind: &str,
        payload: Value,
        now: i64,
        expires_at: i64,
    ) -> Result<Recorded, StoreError> {
        let key = content_digest(format!("{kind}\n{payload}").as_bytes());
        tracing::debug!(tenant = %tenant, kind, key = %key, "event kept");
        let event = StoredEvent {
            key,
            kind: kind.to_owned(),
            received_at: now,
            payload,
            expires_at,
        };
        self.store.record_event(tenant, &event).await
    }

    async fn quarantine(
        &self,
        envelope: &Envelope,
        event: &Event,
        reason: &str,
        now: i64,
    ) -> Result<Recorded, StoreError> {
        let payload = event_json(event);
        let key = content_digest(format!("{}\n{payload}", envelope.phone_number_id).as_bytes());
        tracing::warn!(key = %key, kind = event.kind(), reason, "event quarantined");
        self.store
            .quarantine(&Quarantined {
                key,
                phone_number_id: envelope.phone_number_id.clone(),
                reason: reason.to_owned(),
                received_at: now,
                payload,
                expires_at: now + QUARANTINE_RETENTION_SECS,
            })
            .await
    }
}

/// An event as a self-contained webhook, so a quarantined one can be replayed as it came.
fn event_json(event: &Event) -> Value {
    match event {
        Event::Message {
            metadata,
            contact,
            message,
            ..
        } => json!({
            "metadata": metadata, "contacts": contact.iter().collect::<Vec<_>>(),
            "message": {"id": message.id, "from": message.from, "from_user_id": message.from_user_id,
                        "timestamp": message.timestamp, "type": message.kind, "content": message.content},
        }),
        Event::Status {
            metadata, status, ..
        } => json!({
            "metadata": metadata,
            "status": {"id": status.id, "status": status.status, "timestamp": status.timestamp,
                       "recipient_id": status.recipient_id, "recipient_user_id": status.recipient_user_id,
                       "errors": status.errors},
        }),
        Event::Error {
            metadata, error, ..
        } => json!({"metadata": metadata, "error": error}),
        Event::Other { field, value, .. } => json!({"field": field, "value": value}),
        Event::Unrecognized {
            metadata,
            reason,
            raw,
            ..
        } => json!({"metadata": metadata, "reason": reason, "raw": raw}),
    }
}
