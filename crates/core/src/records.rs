//! What the relay stores, independent of the storage technology.

use crate::ids::{ContactId, TenantId};
use crate::webhook::{ApiError, DeliveryStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// A message in a conversation. `content` is the typed [`crate::webhook::Content`] as JSON
/// (`{"image": {...}}`), `text` the body or caption for quick display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: String,
    pub wamid: String,
    pub wamid_key: String,
    pub contact_id: ContactId,
    pub direction: Direction,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub content: Value,
    /// Meta's timestamp (Unix seconds).
    pub timestamp: i64,
    /// When the relay stored it (Unix seconds).
    pub received_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeliveryStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// The wamid this message answers (`context.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Click-to-WhatsApp ad data, only if the tenant keeps it (`keep_referral`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<Value>,
    /// The message's file (image, document, audio, video, sticker) and how fetching it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<crate::media::MediaInfo>,
    /// Not a message through the API: sent from the Business app, or imported history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::webhook::Origin>,
    pub expires_at: i64,
}

/// What an inbound message tells us about its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactUpdate {
    pub contact_id: ContactId,
    /// The channel the customer wrote to: replies go out through it.
    pub phone_number_id: String,
    pub name: Option<String>,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
    /// The parent BSUID (the same user across a business portfolio), when WhatsApp sends
    /// one: kept with the contact, not used to find it.
    pub parent_user_id: Option<String>,
    /// Meta's timestamp of the customer's message: the 24-hour window runs from the newest
    /// one. 0 for what the customer did not write now (a notice, a message from the business
    /// app): the window stays as it was.
    pub last_inbound_at: i64,
    /// When the conversation last saw activity (its place in the list); only moves forward.
    pub last_message_at: i64,
    /// Whether a new message counts as unread (not for the business's own or imported ones).
    pub unread: bool,
    pub expires_at: i64,
    /// The identity keys (hashes) this message named: kept on the contact, so erasure finds
    /// every identity item without reading a phone number.
    pub identity_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredStatus {
    pub wamid_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<ContactId>,
    pub status: DeliveryStatus,
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ApiError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Value>,
    pub expires_at: i64,
}

/// Anything that is not a message or status (other `field`s, `errors[]`, unusable parts):
/// kept raw, de-duplicated by content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub key: String,
    pub kind: String,
    pub received_at: i64,
    pub payload: Value,
    pub expires_at: i64,
}

/// An event for a channel with no tenant (or addressed to another channel than the one that
/// authenticated it): kept for an operator, never routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    pub key: String,
    pub phone_number_id: String,
    pub reason: String,
    pub received_at: i64,
    pub payload: Value,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub contact_id: ContactId,
    pub name: Option<String>,
    pub last_message_at: i64,
    pub last_inbound_at: Option<i64>,
    pub unread: i64,
    #[serde(default)]
    pub opted_out: bool,
}

/// Everything the relay keeps about a contact (the conversation plus what sending needs).
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRecord {
    pub conversation: Conversation,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
    /// The parent BSUID (the same user across a business portfolio), when WhatsApp sends
    /// one: kept with the contact, not used to find it.
    pub parent_user_id: Option<String>,
    pub phone_number_id: Option<String>,
    /// Until when sends to this contact wait (after WhatsApp's pair rate limit, 131056).
    pub send_backoff_until: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentEvent {
    /// The customer wrote first (a user-initiated conversation): recorded once per contact.
    ConversationStarted,
    OptedOut,
    OptedIn,
    /// The customer told WhatsApp to stop marketing messages (`user_preferences`): service
    /// messages and utility templates still go out; marketing templates do not.
    MarketingStopped,
    MarketingResumed,
}

impl ConsentEvent {
    /// Whether the newest marketing entry of a ledger stops marketing messages.
    pub fn marketing_stopped(ledger: &[ConsentEntry]) -> bool {
        ledger
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    ConsentEvent::MarketingStopped | ConsentEvent::MarketingResumed
                )
            })
            .max_by_key(|e| e.at)
            .is_some_and(|e| e.event == ConsentEvent::MarketingStopped)
    }

    /// Whether the event changes the opt-out state.
    pub fn sets_opt_out(self) -> bool {
        matches!(self, ConsentEvent::OptedOut | ConsentEvent::OptedIn)
    }
}

/// The ledger key of the [`ConsentEvent::ConversationStarted`] entry (one per contact).
pub const FIRST_CONTACT_KEY: &str = "first_contact";

/// One entry of a contact's consent ledger: what changed, when, and what caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentEntry {
    /// De-duplication key (the causing message's id, or a request id).
    pub key: String,
    pub event: ConsentEvent,
    pub at: i64,
    /// `message:<id>` for a keyword message, `api` for the inbox API.
    pub source: String,
    pub expires_at: i64,
}

/// What an erasure deleted, by kind (a count of items; a re-run counts only what was left).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasedItems {
    pub profile: usize,
    /// Stored files (images, documents, voice notes).
    #[serde(default)]
    pub media: usize,
    pub messages: usize,
    pub statuses: usize,
    pub consent_entries: usize,
    pub identities: usize,
    /// Message pointers, idempotency keys and other index items.
    pub index_items: usize,
    /// Internal notes of the team (and its state of the conversation).
    #[serde(default)]
    pub notes: usize,
    /// E-Rezept tokens kept for the contact's messages.
    #[serde(default)]
    pub prescriptions: usize,
}

impl ErasedItems {
    pub fn total(&self) -> usize {
        self.profile
            + self.media
            + self.messages
            + self.statuses
            + self.consent_entries
            + self.identities
            + self.index_items
            + self.prescriptions
    }
}

/// A file the pharmacy uploaded to send (`POST /v1/media`): sealed in the blob store under its
/// contact's key, sent by id in a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    /// `mu_` + 32 hex digits.
    pub media_id: String,
    pub contact_id: ContactId,
    pub media: crate::media::MediaInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One entry of the audit log: who read or changed a contact's personal data, and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix milliseconds.
    pub at_ms: i64,
    pub tenant: TenantId,
    /// `api-key:{first 12 hex digits of the key's SHA-256}`, or `cli` for an operator.
    pub actor: String,
    /// What was done, e.g. `messages.list`, `contact.erase`.
    pub action: String,
    /// The pseudonymous contact id, when the action names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The HTTP status (or 200/500 for the CLI).
    pub result: u16,
    pub expires_at: i64,
}

/// An `Idempotency-Key` of the inbox API, by hash, with the hash of the request it was used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key_hash: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// The message (or the idempotency key) exists already: the earlier message's row key and,
    /// for an idempotency key, the hash of the request it was first used with.
    Existing {
        message_key: String,
        request_hash: Option<String>,
    },
}

/// The sender's claim on an outbound message before it calls WhatsApp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Go ahead; this is attempt number `attempt`.
    Claimed { attempt: u32 },
    /// Sent (or failed) already: do not send again.
    Done,
    /// Another attempt holds a live lease: try later.
    InFlight,
    /// No such message (expired or erased): nothing to do.
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: usize) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Opaque page cursors: URL-safe base64 of the position's parts, joined by `\n`. Stores
/// rebuild the full key from the caller's tenant, so a cursor cannot reach another tenant.
pub mod cursor {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    pub fn encode(parts: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(parts.join("\n"))
    }

    pub fn decode(cursor: &str, n: usize) -> Option<Vec<String>> {
        if cursor.len() > 512 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let parts: Vec<String> = text.split('\n').map(str::to_owned).collect();
        (parts.len() == n).then_some(parts)
    }
}

/// The team's own state of a conversation (the web inbox): who handles it, its labels, and
/// whether it is closed. Never sent to WhatsApp; erased with the contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TeamState {
    /// The staff id it is assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// E.g. "Rezept", "Bestellung", "Abholbereit" (sealed: they say something about the person).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub closed: bool,
    /// When the team last changed it (a customer's newer message reopens a closed one).
    pub updated_at: i64,
    pub expires_at: i64,
}

/// The E-Rezept tokens found in one message (its text, or the codes in its photo or PDF). Kept
/// apart from the message so they go sooner (`prescription_retention_days`) than the message;
/// sealed under the contact's key, exported, erased with the contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrescriptionRecord {
    pub contact_id: ContactId,
    /// The message's row key (its wamid key); one record per message.
    pub message_key: String,
    pub prescriptions: Vec<crate::erezept::Prescription>,
    /// When they were found.
    pub found_at: i64,
    pub expires_at: i64,
}

/// A pickup notice sent to a contact, by its reference (`crate::notifications`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub contact_id: ContactId,
    pub kind: String,
    /// The pharmacy's order reference (1 to 64 of `A-Z a-z 0-9 . _ -`: it goes in a URL path).
    pub reference: String,
    /// The notice's message (`m_…`).
    pub message_id: String,
    pub sent_at: i64,
    /// When a reminder is due (none: no reminder).
    #[serde(default)]
    pub remind_at: Option<i64>,
    /// The reminder's message, or `skipped` when it was not sent (opted out, turned off).
    #[serde(default)]
    pub reminder: Option<String>,
    #[serde(default)]
    pub collected_at: Option<i64>,
    pub expires_at: i64,
}

impl Notice {
    /// Whether the sweep owes this notice a reminder at `now`.
    pub fn reminder_due(&self, now: i64) -> bool {
        self.collected_at.is_none()
            && self.reminder.is_none()
            && self.remind_at.is_some_and(|t| t <= now)
    }
}

/// An internal note on a conversation: written by staff for staff, never sent to WhatsApp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// `n_` + 32 hex digits; the same id twice is one note.
    pub id: String,
    pub contact_id: ContactId,
    /// The staff id of its author.
    pub author: String,
    pub text: String,
    pub created_at: i64,
    pub expires_at: i64,
}
