//! Use case of the message-router: turn one queued webhook into stored messages, contacts,
//! statuses and events, each exactly once, for the right tenant.

use crate::Clock;
use crate::crypto::{CryptoError, Keyring};
use crate::envelope::{ENVELOPE_PURPOSE, Envelope};
use crate::ids::{ContactId, Identity, Pseudonymizer, TenantId, content_digest};
use crate::jobs::Job;
use crate::media::MediaInfo;
use crate::outbound::{ValidReply, queued_message};
use crate::policy::Keyword;
use crate::ports::store_roles::*;
use crate::ports::{Directory, OutboundQueue, QueueError, StoreError};
use crate::records::*;
use crate::tenant::Tenant;
use crate::webhook::{Contact, Event, Identities, Message, Status, webhook_from_value};
use serde_json::{Value, json};
use std::sync::Arc;

/// How long quarantined events are kept for an operator to look at.
pub const QUARANTINE_RETENTION_SECS: i64 = 14 * 86_400;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteReport {
    pub stored: usize,
    pub duplicates: usize,
    pub quarantined: usize,
    /// Queue messages sealed under a key that no longer exists (their contact was erased, or
    /// a transit key expired): dropped, they can never be read.
    pub unreadable: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Will never succeed; after the queue's retries it lands in the dead-letter queue.
    #[error("malformed queue message: {0}")]
    Malformed(&'static str),
    /// May succeed on a retry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Side effects (replies, forwards) could not be queued; a retry re-queues them.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The 24-hour customer service window: automatic replies only go out inside it.
pub const SERVICE_WINDOW_SECS: i64 = 24 * 3600;

#[derive(Clone)]
pub struct Router {
    store: Arc<crate::sealed::SealedStore>,
    directory: Arc<dyn Directory>,
    pseudonymizer: Arc<Pseudonymizer>,
    keys: Arc<Keyring>,
    clock: Clock,
    outbound: Option<Arc<dyn OutboundQueue>>,
    templates: Option<Arc<dyn crate::templates::TemplateStore>>,
    usage: Option<Arc<dyn crate::usage::UsageLedger>>,
}

impl Router {
    pub fn new(
        store: Arc<crate::sealed::SealedStore>,
        directory: Arc<dyn Directory>,
        pseudonymizer: Arc<Pseudonymizer>,
        keys: Arc<Keyring>,
    ) -> Self {
        Router {
            store,
            directory,
            pseudonymizer,
            clock: keys.clock().clone(),
            keys,
            outbound: None,
            templates: None,
            usage: None,
        }
    }

    /// Keeps the tenants' template list current from `message_template_status_update`
    /// webhooks (a template approved, paused, disabled …).
    pub fn with_templates(mut self, templates: Arc<dyn crate::templates::TemplateStore>) -> Self {
        self.templates = Some(templates);
        self
    }

    /// Counts what WhatsApp charges from the `pricing` of status webhooks.
    pub fn with_usage(mut self, usage: Arc<dyn crate::usage::UsageLedger>) -> Self {
        self.usage = Some(usage);
        self
    }

    /// What a template webhook changes — its status (`message_template_status_update`), its
    /// category (`template_category_update`) or its quality (`message_template_quality_update`)
    /// — on a known template (a new one arrives with the next `relay templates sync`, which
    /// also brings its text).
    async fn template_update(
        &self,
        tenant: &TenantId,
        field: &str,
        value: &Value,
        now: i64,
    ) -> Result<(), RouteError> {
        let Some(store) = &self.templates else {
            return Ok(());
        };
        let text = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let new = match field {
            "message_template_status_update" => text("event"),
            "template_category_update" => text("new_category").or_else(|| text("correct_category")),
            "message_template_quality_update" => text("new_quality_score"),
            _ => None,
        };
        let (Some(name), Some(new)) = (text("message_template_name"), new) else {
            return Ok(());
        };
        let language = text("message_template_language");
        let mut list = store.templates(tenant).await?;
        let mut changed = false;
        for t in list.iter_mut() {
            if t.name != name || language.is_some_and(|l| l != t.language) {
                continue;
            }
            let slot = match field {
                "message_template_status_update" => &mut t.status,
                "template_category_update" => &mut t.category,
                _ => t.quality.get_or_insert_with(String::new),
            };
            if slot != new {
                *slot = new.to_owned();
                t.updated_at = now;
                changed = true;
            }
        }
        if changed {
            store.replace_templates(tenant, &list).await?;
            tracing::info!(tenant = %tenant, field, value = new, "template updated");
        }
        Ok(())
    }

    /// Enables the routing rules that act (opt-out, away replies, forwarding): their jobs go
    /// to this queue. Without it the router only stores.
    /// Forward payloads are sealed under the tenant's transit key on the way.
    pub fn with_outbound(mut self, queue: Arc<dyn OutboundQueue>) -> Self {
        self.outbound = Some(Arc::new(crate::sealed::SealedOutbound::new(
            queue,
            self.keys.clone(),
        )));
        self
    }

    /// Routes one queue message. Safe to call again with the same body: nothing is stored or
    /// counted twice. On error, events before the failing one are stored; a retry finishes.
    pub async fn route(&self, body: &str) -> Result<RouteReport, RouteError> {
        let mut envelope: Envelope = serde_json::from_str(body)
            .map_err(|_| RouteError::Malformed("not a relay envelope"))?;
        let mut payload = std::mem::take(&mut envelope.payload);
        if let Value::String(sealed) = &payload {
            let tenant = envelope
                .tenant
                .as_ref()
                .ok_or(RouteError::Malformed("sealed payload without a tenant"))?;
            // The key must still be current: a webhook queued before its customer was erased
            // must not store them again.
            let bytes = match self
                .keys
                .open_current(tenant, ENVELOPE_PURPOSE, sealed)
                .await
            {
                Ok(b) => b,
                Err(CryptoError::Destroyed) => {
                    // Its contact was erased while it waited, or it outlived its transit key.
                    tracing::warn!(tenant = %tenant, "queue message sealed under a destroyed key: dropped");
                    return Ok(RouteReport {
                        unreadable: 1,
                        ..RouteReport::default()
                    });
                }
                Err(CryptoError::Unavailable(e)) => return Err(StoreError::Unavailable(e).into()),
                Err(_) => return Err(RouteError::Malformed("sealed payload does not open")),
            };
            payload = serde_json::from_slice(&bytes)
                .map_err(|_| RouteError::Malformed("sealed payload is not JSON"))?;
        }
        let webhook = webhook_from_value(payload)
            .map_err(|_| RouteError::Malformed("payload is not a webhook"))?;
        let now = self.clock.now();
        let channel = self.directory.channel(&envelope.phone_number_id).await?;
        let tenant = match &channel {
            Some(channel) => self.directory.tenant(&channel.tenant_id).await?,
            None => None,
        };
        // Came to a Meta app's URL: only that app's numbers take it.
        let foreign = envelope
            .app
            .as_ref()
            .is_some_and(|app| channel.as_ref().and_then(|c| c.meta_app.as_ref()) != Some(app));
        let mut report = RouteReport::default();
        for event in webhook.events() {
            // Each event names its own channel; it must be the one that sent it (so the
            // channel's tenant is the event's), and that tenant the one it was sealed for.
            let addressed = event.phone_number_id().unwrap_or(&envelope.phone_number_id);
            let reason = match &tenant {
                _ if foreign => Some("event names a number outside the Meta app that signed it"),
                None => Some("no tenant has this channel"),
                Some(_) if addressed != envelope.phone_number_id => {
                    Some("event is addressed to another channel than the one that sent it")
                }
                // Sealed for one tenant, its channel now another's (moved while queued).
                Some(t) if envelope.tenant.as_ref().is_some_and(|e| *e != t.id) => {
                    Some("event was queued for another tenant than its channel's")
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
    ) -> Result<Recorded, RouteError> {
        let expires_at = now + tenant.retention_secs();
        let recorded = match event {
            Event::Message {
                contact,
                message,
                metadata,
                ..
            } => {
                let pnid = metadata.phone_number_id.as_str();
                match self
                    .inbound(tenant, pnid, contact.as_ref(), &message, now, expires_at)
                    .await?
                {
                    Some(r) => r,
                    None => {
                        let raw = json!({"id": message.id, "type": message.kind});
                        self.event(&tenant.id, "message_without_sender", raw, now, expires_at)
                            .await?
                    }
                }
            }
            Event::Status { status, .. } => self.status(tenant, &status, expires_at).await?,
            Event::Echo { metadata, echo, .. } => {
                self.echo(tenant, &metadata.phone_number_id, &echo, now, expires_at)
                    .await?
            }
            Event::ContactSync {
                customer,
                name,
                removed,
                ..
            } => {
                // A removal from the address book leaves the conversation as it is.
                if removed {
                    Recorded::Duplicate
                } else {
                    self.contact_sync(tenant, &customer, name.as_deref())
                        .await?
                }
            }
            Event::Error { error, .. } => {
                let raw = serde_json::to_value(&error).unwrap_or(Value::Null);
                self.event(&tenant.id, "error", raw, now, expires_at)
                    .await?
            }
            Event::Other { field, value, .. } if field == "user_preferences" => {
                // The consent ledger keeps it, under the contact; not a tenant-wide event.
                self.user_preferences(tenant, &value, now).await?
            }
            Event::Other { field, value, .. } if field == "user_id_update" => {
                // Applied to the contact, not kept as a tenant-wide event: it names a customer.
                let pnid = value
                    .pointer("/metadata/phone_number_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.user_id_updates(tenant, pnid, &value, now, expires_at)
                    .await?
            }
            Event::Other {
                field,
                value,
                waba_id,
            } => {
                self.template_update(&tenant.id, &field, &value, now)
                    .await?;
                let raw = json!({"waba_id": waba_id, "value": value});
                self.event(&tenant.id, &field, raw, now, expires_at).await?
            }
            Event::Unrecognized { raw, .. } => {
                self.event(&tenant.id, "unrecognized", raw, now, expires_at)
                    .await?
            }
        };
        Ok(recorded)
    }

    /// The identity keys of `who` (to find or link its contact) and the contact id a new
    /// contact gets — the id whose key the receiver sealed the queued piece under.
    fn identity_keys(
        &self,
        tenant: &TenantId,
        who: &Identities,
    ) -> (Vec<String>, Option<ContactId>) {
        let keys = [
            who.bsuid.as_deref().map(Identity::Bsuid),
            who.wa_id.as_deref().map(Identity::WaId),
        ]
        .into_iter()
        .flatten()
        .map(|identity| self.pseudonymizer.identity_key(tenant, identity))
        .collect();
        let primary = who
            .primary()
            .map(|identity| self.pseudonymizer.contact_id(tenant, identity));
        (keys, primary)
    }

    /// A message as stored for `contact`: inbound, unread, its file pending.
    fn stored_message(
        &self,
        tenant: &Tenant,
        contact_id: &ContactId,
        message: &Message,
        now: i64,
        expires_at: i64,
    ) -> StoredMessage {
        let wamid_key = self.pseudonymizer.wamid_key(&tenant.id, &message.id);
        StoredMessage {
            id: format!("m_{wamid_key}"),
            wamid: message.id.clone(),
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
            // Data minimisation: ad tracking data is dropped unless the pharmacy wants it.
            referral: message
                .referral
                .clone()
                .filter(|_| tenant.policy.keep_referral),
            // Stored first as pending; reply-sender fetches the file (a job, off this path).
            media: message
                .content
                .media()
                .filter(|m| m.id.is_some())
                .map(|m| MediaInfo::pending(&wamid_key, m.mime_type.clone())),
            origin: None,
            wamid_key,
            expires_at,
        }
    }

    /// A message of the conversation the customer did not just send through the API: one
    /// the pharmacy sent from the Business app, or one of the imported history. Filed under
    /// the customer (a new one for a customer not seen yet), with no automatic reply, no
    /// forward and nothing unread; only a customer's own message of the history opens the
    /// window (from when they wrote it).
    async fn echo(
        &self,
        tenant: &Tenant,
        phone_number_id: &str,
        echo: &crate::webhook::Echo,
        now: i64,
        expires_at: i64,
    ) -> Result<Recorded, RouteError> {
        let (keys, Some(proposed)) = self.identity_keys(&tenant.id, &echo.customer) else {
            return Ok(Recorded::Duplicate);
        };
        let contact_id = self
            .store
            .resolve_contact(&tenant.id, &keys, &proposed, expires_at)
            .await?;
        let mut stored = self.stored_message(tenant, &contact_id, &echo.message, now, expires_at);
        stored.origin = Some(echo.origin);
        if echo.from_business {
            stored.direction = Direction::Outbound;
            stored.status = Some(echo.status.unwrap_or(crate::webhook::DeliveryStatus::Sent));
        }
        // An edit or a revoke from the app names the message it changes.
        if matches!(stored.kind.as_str(), "edit" | "revoke") && stored.reply_to.is_none() {
            stored.reply_to = changed_message_id(&stored.content, &stored.kind);
        }
        let update = ContactUpdate {
            contact_id: contact_id.clone(),
            phone_number_id: phone_number_id.to_owned(),
            name: None,
            wa_id: echo.customer.wa_id.clone(),
            user_id: echo.customer.bsuid.clone(),
            username: None,
            parent_user_id: None,
            last_inbound_at: if echo.from_business {
                0
            } else {
                stored.timestamp
            },
            last_message_at: stored.timestamp,
            unread: false,
            expires_at,
            identity_keys: keys,
        };
        let recorded = self
            .store
            .record_inbound(&tenant.id, &stored, &update)
            .await?;
        if let (Some(queue), Some(_)) = (&self.outbound, &stored.media) {
            queue
                .enqueue_jobs(&[Job::FetchMedia {
                    tenant: tenant.id.clone(),
                    contact: contact_id.clone(),
                    message_key: stored.wamid_key.clone(),
                }])
                .await?;
        }
        tracing::debug!(tenant = %tenant.id, contact = %contact_id, origin = echo.origin.as_str(), kind = %stored.kind, "message kept");
        Ok(recorded)
    }

    /// A name from the Business app's address book, for a customer the relay already has
    /// (nobody is added from the address book).
    async fn contact_sync(
        &self,
        tenant: &Tenant,
        customer: &Identities,
        name: Option<&str>,
    ) -> Result<Recorded, RouteError> {
        let (keys, _) = self.identity_keys(&tenant.id, customer);
        let (Some(name), false) = (name.filter(|n| !n.trim().is_empty()), keys.is_empty()) else {
            return Ok(Recorded::Duplicate);
        };
        if let Some(contact) = self.store.find_contact(&tenant.id, &keys).await?
            && self
                .store
                .rename_contact(&tenant.id, &contact, name)
                .await?
        {
            return Ok(Recorded::New);
        }
        Ok(Recorded::Duplicate)
    }

    /// `None` when the message names no sender at all.
    async fn inbound(
        &self,
        tenant: &Tenant,
        phone_number_id: &str,
        contact: Option<&Contact>,
        message: &Message,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<Recorded>, RouteError> {
        let who = Identities::of_message(contact, message);
        if let Some(change) = message.content.identity_change() {
            // From the old identity to the new: one contact goes on under the new one.
            let new = Identities {
                bsuid: change.user_id.clone(),
                wa_id: change.wa_id.clone(),
            };
            let notice = Notice {
                id: &message.id,
                timestamp: message.timestamp,
                content: serde_json::to_value(&message.content).unwrap_or(Value::Null),
                text: change.body.clone(),
            };
            return self
                .identity_changed(tenant, phone_number_id, &who, &new, notice, now, expires_at)
                .await;
        }
        let (keys, Some(proposed)) = self.identity_keys(&tenant.id, &who) else {
            return Ok(None);
        };
        let contact_id = self
            .store
            .resolve_contact(&tenant.id, &keys, &proposed, expires_at)
            .await?;
        let stored = self.stored_message(tenant, &contact_id, message, now, expires_at);
        let update = ContactUpdate {
            contact_id,
            phone_number_id: phone_number_id.to_owned(),
            name: contact
                .and_then(|c| c.profile.as_ref())
                .and_then(|p| p.name.clone()),
            wa_id: who.wa_id.clone(),
            user_id: who.bsuid.clone(),
            username: contact
                .and_then(|c| c.profile.as_ref())
                .and_then(|p| p.username.clone()),
            parent_user_id: contact.and_then(|c| c.parent_user_id.clone()),
            last_inbound_at: stored.timestamp,
            last_message_at: stored.timestamp,
            unread: true,
            expires_at,
            identity_keys: keys,
        };
        let recorded = self
            .store
            .record_inbound(&tenant.id, &stored, &update)
            .await?;
        // The consent ledger starts with the customer's first message: proof that they began
        // the conversation. Once per contact (a later message finds the entry there).
        if recorded == Recorded::New {
            let entry = ConsentEntry {
                key: FIRST_CONTACT_KEY.to_owned(),
                event: ConsentEvent::ConversationStarted,
                at: stored.timestamp,
                source: format!("message:{}", stored.id),
                expires_at,
            };
            self.store
                .record_consent(&tenant.id, &update.contact_id, &entry)
                .await?;
        }
        tracing::debug!(
            tenant = %tenant.id,
            contact = %update.contact_id,
            message = %stored.id,
            kind = %stored.kind,
            duplicate = recorded == Recorded::Duplicate,
            "inbound message"
        );
        // E-Rezept tokens the customer pasted (photos and PDFs are read when reply-sender
        // fetches them): kept apart from the message for the tenant's prescription retention,
        // sealed under the contact's key; repeating this returns what the first run kept.
        let found = stored
            .text
            .as_deref()
            .map(crate::erezept::find_in_text)
            .unwrap_or_default();
        let prescriptions = crate::prescriptions::record(
            self.store.as_ref(),
            (&tenant.id, &update.contact_id),
            &stored.wamid_key,
            &found,
            &tenant.policy,
            (now, stored.expires_at),
        )
        .await?;
        // Side effects run on duplicates too: their ids are derived from the message, so a
        // retry after a crash completes them and a plain duplicate changes nothing.
        if let Some(queue) = &self.outbound {
            let inbound = Inbound {
                message: &stored,
                contact: &update.contact_id,
                prescriptions: &prescriptions,
            };
            self.after_inbound(queue.as_ref(), tenant, inbound, now)
                .await?;
        }
        Ok(Some(recorded))
    }

    /// A customer's identity changed (`old` to `new`): the contact found by the old one is
    /// linked to the new one and goes on under it (history, consent and opt-out stay with it),
    /// and the change is kept as a notice in the conversation. The notice does not open the
    /// 24-hour window: the customer wrote nothing. `None` when `old` names no known contact.
    #[allow(clippy::too_many_arguments)]
    async fn identity_changed(
        &self,
        tenant: &Tenant,
        phone_number_id: &str,
        old: &Identities,
        new: &Identities,
        notice: Notice<'_>,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<Recorded>, RouteError> {
        let (mut keys, _) = self.identity_keys(&tenant.id, old);
        // Only a customer the pharmacy knows goes on; a change about anyone else is not kept.
        let known = if keys.is_empty() {
            None
        } else {
            self.store.find_contact(&tenant.id, &keys).await?
        };
        let Some(known) = known else {
            return Ok(None);
        };
        let (new_keys, _) = self.identity_keys(&tenant.id, new);
        keys.extend(new_keys);
        keys.sort();
        keys.dedup();
        let contact_id = self
            .store
            .resolve_contact(&tenant.id, &keys, &known, expires_at)
            .await?;
        let wamid_key = self.pseudonymizer.wamid_key(&tenant.id, notice.id);
        let stored = StoredMessage {
            id: format!("m_{wamid_key}"),
            wamid: notice.id.to_owned(),
            wamid_key,
            contact_id: contact_id.clone(),
            direction: Direction::Inbound,
            kind: "system".to_owned(),
            text: notice.text,
            content: notice.content,
            timestamp: if notice.timestamp > 0 {
                notice.timestamp
            } else {
                now
            },
            received_at: now,
            status: None,
            error: None,
            reply_to: None,
            referral: None,
            media: None,
            origin: None,
            expires_at,
        };
        let update = ContactUpdate {
            contact_id: contact_id.clone(),
            phone_number_id: phone_number_id.to_owned(),
            name: None,
            // The new identity replaces the old one where it names one; replies go there.
            wa_id: new.wa_id.clone(),
            user_id: new.bsuid.clone(),
            username: None,
            parent_user_id: None,
            // Only a message from the customer opens the window (the stores keep the newest).
            last_inbound_at: 0,
            last_message_at: stored.timestamp,
            unread: false,
            expires_at,
            identity_keys: keys,
        };
        let recorded = self
            .store
            .record_inbound(&tenant.id, &stored, &update)
            .await?;
        tracing::info!(tenant = %tenant.id, contact = %contact_id, "customer identity changed");
        if let (Some(queue), Some(_)) = (&self.outbound, &tenant.forward_url) {
            queue
                .enqueue_jobs(&[Job::Forward {
                    tenant: tenant.id.clone(),
                    webhook_id: format!("idc_{}", stored.wamid_key),
                    created_at: stored.timestamp,
                    payload: json!({"type": "contact.identity_changed", "timestamp": stored.timestamp,
                                    "data": {"contact_id": contact_id, "message_id": stored.id}}),
                }])
                .await?;
        }
        Ok(Some(recorded))
    }

    /// The `user_preferences` webhook: a known customer stopped or resumed marketing
    /// messages. Kept in their consent ledger (marketing templates are refused while stopped).
    async fn user_preferences(
        &self,
        tenant: &Tenant,
        value: &Value,
        now: i64,
    ) -> Result<Recorded, RouteError> {
        let mut recorded = Recorded::Duplicate;
        for pref in crate::webhook::user_preferences(value) {
            let (keys, _) = self.identity_keys(&tenant.id, &pref.who);
            let Some(contact) = self.store.find_contact(&tenant.id, &keys).await? else {
                continue;
            };
            let at = if pref.timestamp > 0 {
                pref.timestamp
            } else {
                now
            };
            let word = if pref.stop { "stop" } else { "resume" };
            let entry = ConsentEntry {
                key: format!("user_preferences:{}:{word}:{at}", pref.category),
                event: if pref.stop {
                    ConsentEvent::MarketingStopped
                } else {
                    ConsentEvent::MarketingResumed
                },
                at,
                source: format!("user_preferences:{}", pref.category),
                expires_at: now + tenant.retention_secs(),
            };
            if self
                .store
                .record_consent(&tenant.id, &contact, &entry)
                .await?
                == Recorded::New
            {
                recorded = Recorded::New;
            }
            tracing::info!(tenant = %tenant.id, contact = %contact, event = word, "marketing preference");
        }
        Ok(recorded)
    }

    /// The `user_id_update` webhook: a customer's BSUID changed (`previous` to `current`).
    async fn user_id_updates(
        &self,
        tenant: &Tenant,
        phone_number_id: &str,
        value: &Value,
        now: i64,
        expires_at: i64,
    ) -> Result<Recorded, RouteError> {
        let mut recorded = Recorded::Duplicate;
        for update in crate::webhook::user_id_updates(value) {
            let id = format!(
                "user_id_update:{}:{}",
                update.old.bsuid.as_deref().unwrap_or_default(),
                update.new.bsuid.as_deref().unwrap_or_default()
            );
            let notice = Notice {
                id: &id,
                timestamp: update.timestamp,
                content: json!({"system": {"type": "user_changed_user_id"}}),
                text: None,
            };
            if self
                .identity_changed(
                    tenant,
                    phone_number_id,
                    &update.old,
                    &update.new,
                    notice,
                    now,
                    expires_at,
                )
                .await?
                == Some(Recorded::New)
            {
                recorded = Recorded::New;
            }
        }
        Ok(recorded)
    }

    async fn after_inbound(
        &self,
        queue: &dyn OutboundQueue,
        tenant: &Tenant,
        inbound: Inbound<'_>,
        now: i64,
    ) -> Result<(), RouteError> {
        let Inbound {
            message,
            contact,
            prescriptions,
        } = inbound;
        let policy = &tenant.policy;
        let mut jobs = Vec::new();
        if message.media.is_some() {
            jobs.push(Job::FetchMedia {
                tenant: tenant.id.clone(),
                contact: contact.clone(),
                message_key: message.wamid_key.clone(),
            });
        }
        let in_window = message.timestamp + SERVICE_WINDOW_SECS > now;
        let keyword = (message.kind == "text")
            .then(|| {
                message
                    .text
                    .as_deref()
                    .and_then(|t| policy.opt_out.keyword(t))
            })
            .flatten();
        if let Some(keyword) = keyword {
            let (event, text, event_type) = match keyword {
                Keyword::OptOut => (
                    ConsentEvent::OptedOut,
                    &policy.opt_out.confirmation_text,
                    "contact.opted_out",
                ),
                Keyword::OptIn => (
                    ConsentEvent::OptedIn,
                    &policy.opt_out.opt_in_text,
                    "contact.opted_in",
                ),
            };
            let entry = ConsentEntry {
                key: message.id.clone(),
                event,
                at: message.timestamp,
                source: format!("message:{}", message.id),
                expires_at: message.expires_at,
            };
            self.store
                .record_consent(&tenant.id, contact, &entry)
                .await?;
            tracing::info!(tenant = %tenant.id, contact = %contact, event = event_type, "consent changed");
            // The confirmation goes out even to someone who just opted out: it answers their
            // request, it does not start a conversation.
            if in_window {
                let key = self
                    .pseudonymizer
                    .derived_key(&tenant.id, event_type, &message.wamid);
                jobs.push(
                    self.auto_reply(tenant, contact, &key, text, (now, message.expires_at), true)
                        .await?,
                );
            }
            if tenant.forward_url.is_some() {
                jobs.push(Job::Forward {
                    tenant: tenant.id.clone(),
                    webhook_id: format!("consent_{}", message.id),
                    created_at: message.timestamp,
                    payload: json!({"type": event_type, "timestamp": message.timestamp,
                                    "data": {"contact_id": contact, "message_id": message.id}}),
                });
            }
        } else if let Some(hours) = &policy.business_hours
            && in_window
            && !hours.is_open(message.timestamp)
        {
            let key = self
                .pseudonymizer
                .derived_key(&tenant.id, "away", &message.wamid);
            let opted_out = self
                .store
                .conversation(&tenant.id, contact, now)
                .await?
                .is_some_and(|c| c.opted_out);
            let interval = i64::from(hours.away_interval_hours) * 3600;
            // Either this message wins the interval, or an earlier attempt for it already did.
            let due = !opted_out
                && (self
                    .store
                    .claim_away_reply(&tenant.id, contact, now, interval)
                    .await?
                    || self
                        .store
                        .message_by_wamid(&tenant.id, &key, now)
                        .await?
                        .is_some());
            if due {
                jobs.push(
                    self.auto_reply(
                        tenant,
                        contact,
                        &key,
                        &hours.away_text,
                        (now, message.expires_at),
                        false,
                    )
                    .await?,
                );
            }
        }
        if tenant.forward_url.is_some() && !prescriptions.is_empty() {
            jobs.push(crate::prescriptions::forward(
                tenant,
                message,
                contact,
                prescriptions,
            ));
        }
        if tenant.forward_url.is_some() {
            let mut data = json!({"message_id": message.id, "contact_id": contact, "type": message.kind,
                                  "timestamp": message.timestamp, "reply_to": message.reply_to});
            if policy.forward_content {
                data["text"] = json!(message.text);
                data["content"] = message.content.clone();
                data["wamid"] = json!(message.wamid);
            }
            jobs.push(Job::Forward {
                tenant: tenant.id.clone(),
                webhook_id: format!("msg_{}", message.id),
                created_at: message.timestamp,
                payload: json!({"type": "message.received", "timestamp": message.timestamp, "data": data}),
            });
        }
        if !jobs.is_empty() {
            queue.enqueue_jobs(&jobs).await?;
        }
        Ok(())
    }

    /// Stores an automatic text reply under a derived key (idempotent) and returns its job.
    /// `(now, expires_at)`; `consent_reply` for opt-out/opt-in confirmations.
    async fn auto_reply(
        &self,
        tenant: &Tenant,
        contact: &ContactId,
        key: &str,
        text: &str,
        (now, expires_at): (i64, i64),
        consent_reply: bool,
    ) -> Result<Job, StoreError> {
        let message = queued_message(key, contact, &ValidReply::text(text), None, now, expires_at);
        self.store
            .create_outbound(&tenant.id, &message, None)
            .await?;
        Ok(Job::Send {
            tenant: tenant.id.clone(),
            contact: contact.clone(),
            message_key: key.to_owned(),
            consent_reply,
        })
    }

    async fn status(
        &self,
        tenant: &Tenant,
        status: &Status,
        expires_at: i64,
    ) -> Result<Recorded, RouteError> {
        // The status of our message belongs to the message's contact, whichever identity it
        // names: found by that identity, else (a BSUID not seen yet, or a failed status that
        // names nobody) by the message itself.
        let wamid_key = self.pseudonymizer.wamid_key(&tenant.id, &status.id);
        let (keys, _) = self.identity_keys(&tenant.id, &Identities::of_status(status));
        let mut contact_id = if keys.is_empty() {
            None
        } else {
            self.store.find_contact(&tenant.id, &keys).await?
        };
        if contact_id.is_none() {
            contact_id = self
                .store
                .message_by_wamid(&tenant.id, &wamid_key, self.clock.now())
                .await?
                .map(|m| m.contact_id);
            // The identity it names is the contact's (a BSUID not seen before): learnt, so the
            // contact's erasure reaches the status's queued copies too.
            if let Some(c) = &contact_id {
                self.store
                    .link_identities(&tenant.id, c, &keys, expires_at)
                    .await?;
            }
        }
        let stored = StoredStatus {
            wamid_key,
            contact_id,
            status: status.status,
            timestamp: status.timestamp,
            errors: status.errors.clone(),
            pricing: status.pricing.clone(),
            conversation: status.conversation.clone(),
            expires_at,
        };
        let recorded = self.store.record_status(&tenant.id, &stored).await?;
        // Counted once per message (sent, delivered and read all carry the pricing), in the
        // Berlin month of the status.
        if let (Some(usage), Some(pricing)) = (
            &self.usage,
            status
                .pricing
                .as_ref()
                .and_then(crate::usage::Pricing::parse),
        ) {
            let at = if status.timestamp > 0 {
                status.timestamp
            } else {
                self.clock.now()
            };
            if let Some(month) = crate::usage::month_of(at) {
                usage
                    .record_usage(&tenant.id, &month, &stored.wamid_key, &pricing, expires_at)
                    .await?;
            }
        }
        tracing::debug!(tenant = %tenant.id, wamid_key = %stored.wamid_key, status = stored.status.as_str(), "status");
        if let (Some(queue), Some(_)) = (&self.outbound, &tenant.forward_url) {
            let message = self
                .store
                .message_by_wamid(&tenant.id, &stored.wamid_key, self.clock.now())
                .await?;
            let job = Job::Forward {
                tenant: tenant.id.clone(),
                webhook_id: format!("st_{}_{}", stored.wamid_key, stored.status.as_str()),
                created_at: stored.timestamp,
                payload: json!({"type": "message.status", "timestamp": stored.timestamp, "data": {
                    "message_id": message.as_ref().map(|m| m.id.clone()),
                    "contact_id": message.as_ref().map(|m| m.contact_id.clone()).or(stored.contact_id.clone()),
                    "status": stored.status, "errors": stored.errors}}),
            };
            queue.enqueue_jobs(&[job]).await?;
        }
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

/// The message an edit or revoke changes: `context.id`, else the id its body names.
fn changed_message_id(content: &Value, kind: &str) -> Option<String> {
    // Unknown types are kept whole (`{"unknown": <message>}`).
    let body = content.get("unknown").and_then(|m| m.get(kind))?;
    ["original_message_id", "message_id", "id"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .map(str::to_owned)
}

/// A change kept in a conversation as a notice (not written by the customer).
struct Notice<'a> {
    /// The idempotency key: the system message's wamid, or one derived from the change.
    id: &'a str,
    timestamp: i64,
    content: Value,
    text: Option<String>,
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
        Event::Echo { metadata, echo, .. } => json!({
            "metadata": metadata, "origin": echo.origin, "from_business": echo.from_business,
            "customer": {"wa_id": echo.customer.wa_id, "user_id": echo.customer.bsuid},
            "message": {"id": echo.message.id, "timestamp": echo.message.timestamp,
                        "type": echo.message.kind, "content": echo.message.content},
        }),
        Event::ContactSync {
            metadata,
            customer,
            name,
            removed,
            ..
        } => json!({"metadata": metadata, "contact": {"wa_id": customer.wa_id,
                     "user_id": customer.bsuid, "name": name, "removed": removed}}),
        Event::Other { field, value, .. } => json!({"field": field, "value": value}),
        Event::Unrecognized {
            metadata,
            reason,
            raw,
            ..
        } => json!({"metadata": metadata, "reason": reason, "raw": raw}),
    }
}

/// An inbound message as its side effects see it: stored, under its contact, with the
/// E-Rezept tokens that are new in it.
#[derive(Clone, Copy)]
struct Inbound<'a> {
    message: &'a StoredMessage,
    contact: &'a ContactId,
    prescriptions: &'a [crate::erezept::Prescription],
}
