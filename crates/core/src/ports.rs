//! Ports: one small trait per capability the use cases need. Adapters live in `relay-aws`
//! (DynamoDB, SQS, KMS) and `relay-embedded` (SQLite); the core never names a technology.

use crate::ids::{ContactId, TenantId};
use crate::records::*;
use crate::tenant::{Channel, Tenant};
use async_trait::async_trait;

/// Storage failures. Messages carry error codes and ids only, never stored values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("a piece of the webhook is {size} bytes, more than the queue's {max}")]
    TooLarge { size: usize, max: usize },
}

/// Tenants and channels, read side.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn channel(&self, phone_number_id: &str) -> Result<Option<Channel>, StoreError>;
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;
    /// The tenant an inbox API key (by its SHA-256) belongs to.
    async fn tenant_for_api_key(&self, digest: &[u8; 32]) -> Result<Option<TenantId>, StoreError>;
    /// A Meta app by its id (its webhook URL names it).
    async fn meta_app(&self, app_id: &str) -> Result<Option<crate::tenant::MetaApp>, StoreError>;
    /// The channel that files a WhatsApp Business Account's own events (template and account
    /// updates, which name no number): the first of its channels.
    async fn waba_channel(&self, waba_id: &str) -> Result<Option<Channel>, StoreError>;
}

/// Where the receiver puts webhooks, durably, before it answers 200.
#[async_trait]
pub trait InboundQueue: Send + Sync {
    /// The largest message body the queue takes, in bytes.
    fn max_message_bytes(&self) -> usize;
    /// Enqueue every body or fail; a failure may leave some enqueued (the router de-duplicates).
    async fn enqueue(&self, bodies: &[String]) -> Result<(), QueueError>;
}

/// Where jobs for reply-sender (sends, read receipts, forwards) go.
#[async_trait]
pub trait OutboundQueue: Send + Sync {
    async fn enqueue_jobs(&self, jobs: &[crate::jobs::Job]) -> Result<(), QueueError>;
}

/// What the job handler may do with a job it received, beyond succeeding or failing.
#[async_trait]
pub trait JobControl: Send + Sync {
    /// Makes a received job visible again after `delay` (SQS ChangeMessageVisibility).
    async fn retry_after(
        &self,
        receipt: &str,
        delay: std::time::Duration,
    ) -> Result<(), QueueError>;
    /// Puts a copy of the job on the dead-letter queue (the caller then lets the original go).
    async fn dead_letter(&self, body: &str) -> Result<(), QueueError>;
}

/// Conversations, messages, statuses and events of every tenant, as five role-sized ports
/// (each consumer depends on the ones it uses); every store implements all five, and so
/// [`MessageStore`]. Every write is idempotent: the same input twice has the effect of once.
pub trait MessageStore:
    InboundLog
    + InboxReads
    + OutboundLedger
    + MediaLedger
    + ErasureStore
    + TeamBoard
    + PrescriptionLedger
    + NoticeBoard
{
}

impl<
    T: InboundLog
        + InboxReads
        + OutboundLedger
        + MediaLedger
        + ErasureStore
        + TeamBoard
        + PrescriptionLedger
        + NoticeBoard
        + ?Sized,
> MessageStore for T
{
}

/// The store roles, to bring their methods into scope at once where a caller uses a
/// concrete store: `use relay_core::ports::store_roles::*;`.
pub mod store_roles {
    pub use super::{
        ErasureStore as _, InboundLog as _, InboxReads as _, MediaLedger as _, NoticeBoard as _,
        OutboundLedger as _, PrescriptionLedger as _, TeamBoard as _,
    };
}

/// What the router writes: contacts by identity, inbound messages, statuses, events, quarantine, consent and away-reply claims.
#[async_trait]
pub trait InboundLog: Send + Sync {
    /// The contact any of `identity_keys` already belongs to, else `proposed`; afterwards every
    /// key points at the returned contact. Concurrent callers agree on one contact.
    async fn resolve_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
        proposed: &ContactId,
        expires_at: i64,
    ) -> Result<ContactId, StoreError>;

    /// Links `identity_keys` to `contact` (those no one has yet), and lists them with the
    /// contact, so its erasure reaches them: an identity learnt without a message of its own
    /// (a status naming a BSUID).
    async fn link_identities(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Sets a known contact's name (the Business app's address book); `false` if the store
    /// has no such contact (nobody is added by it).
    async fn rename_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        name: &str,
    ) -> Result<bool, StoreError>;

    /// The contact an identity belongs to, without creating one.
    async fn find_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
    ) -> Result<Option<ContactId>, StoreError>;

    /// Stores an inbound message once (keyed by its wamid) and, the first time only, counts it
    /// as unread. The contact's last activity only moves forward, whatever the arrival order.
    async fn record_inbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        contact: &ContactUpdate,
    ) -> Result<Recorded, StoreError>;

    /// Stores a status once per (message, status) and moves the message's status forward.
    /// A status for a message the relay does not know is kept all the same.
    async fn record_status(
        &self,
        tenant: &TenantId,
        status: &StoredStatus,
    ) -> Result<Recorded, StoreError>;

    async fn record_event(
        &self,
        tenant: &TenantId,
        event: &StoredEvent,
    ) -> Result<Recorded, StoreError>;

    async fn quarantine(&self, item: &Quarantined) -> Result<Recorded, StoreError>;

    /// Records a consent change (once per entry key) and sets the contact's opt-out state.
    async fn record_consent(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        entry: &ConsentEntry,
    ) -> Result<Recorded, StoreError>;

    /// True (and remembered) if no away reply went to this contact in the last `interval` seconds.
    async fn claim_away_reply(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
        interval: i64,
    ) -> Result<bool, StoreError>;
}

/// What the inbox API and the router read: conversations, messages, contacts, statuses, consent, quarantine.
#[async_trait]
pub trait InboxReads: Send + Sync {
    async fn list_quarantine(&self, limit: usize, now: i64)
    -> Result<Vec<Quarantined>, StoreError>;

    /// A tenant's conversations, most recent activity first; expired ones are left out.
    async fn list_conversations(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<Conversation>, StoreError>;

    /// One conversation (a contact and its counters), unless unknown or expired.
    async fn conversation(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<Conversation>, StoreError>;

    /// One conversation's messages, newest first; expired ones are left out.
    async fn list_messages(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<StoredMessage>, StoreError>;

    async fn message_by_wamid(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Option<StoredMessage>, StoreError>;

    /// The full contact, unless unknown or expired.
    async fn contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<ContactRecord>, StoreError>;

    /// The contact's consent ledger, oldest first.
    async fn consent_ledger(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<ConsentEntry>, StoreError>;

    /// The statuses recorded for one message (by wamid key), oldest first.
    async fn statuses(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Vec<StoredStatus>, StoreError>;
}

/// Replies and their sending: creation (idempotent), the send lease, results, backoff, unread counts.
#[async_trait]
pub trait OutboundLedger: Send + Sync {
    async fn clear_unread(&self, tenant: &TenantId, contact: &ContactId) -> Result<(), StoreError>;

    async fn set_send_backoff(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        until: i64,
    ) -> Result<(), StoreError>;

    /// Stores a new outbound message (status `queued`) under `message.wamid_key` (its row key),
    /// unless that row key, or the idempotency key, exists already.
    async fn create_outbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError>;

    /// Takes a lease on an outbound message before sending it (see [`Claim`]).
    async fn claim_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        now: i64,
        lease_secs: i64,
    ) -> Result<Claim, StoreError>;

    /// Records a successful send: the wamid (and its key, for statuses) and status `sent`.
    async fn complete_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        contact: &ContactId,
        wamid: &str,
        wamid_key: &str,
    ) -> Result<(), StoreError>;

    /// Records a final failure with its reason.
    async fn fail_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        error: &crate::webhook::ApiError,
    ) -> Result<(), StoreError>;

    /// Gives up the lease after a transient failure, so a later attempt can claim it.
    async fn release_send(&self, tenant: &TenantId, message_key: &str) -> Result<(), StoreError>;
}

/// Media files' records: uploads, fetched files, the per-channel failure budget.
#[async_trait]
pub trait MediaLedger: Send + Sync {
    /// Stores an uploaded file's record (in the contact's data: erased with it).
    async fn create_upload(&self, tenant: &TenantId, upload: &Upload) -> Result<(), StoreError>;

    /// An uploaded file's record, unless unknown or expired.
    async fn upload(
        &self,
        tenant: &TenantId,
        media_id: &str,
        now: i64,
    ) -> Result<Option<Upload>, StoreError>;

    /// Records how fetching a message's file went (by the message's row key).
    async fn set_media(
        &self,
        tenant: &TenantId,
        message_key: &str,
        media: &crate::media::MediaInfo,
    ) -> Result<(), StoreError>;

    /// Counts a failed media request of a channel in the hour `hour` (Unix hours) and returns
    /// the hour's count. 360dialog blocks a number's media for an hour after more than five.
    async fn add_media_failure(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError>;

    /// The failed media requests of a channel in the hour `hour`.
    async fn media_failures(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError>;
}

/// Erasure (GDPR Art. 17): every item of a contact, and the identities that name it.
#[async_trait]
pub trait ErasureStore: Send + Sync {
    /// The identity hashes (BSUID, wa_id) the store has recorded for a contact, expired or not.
    async fn contact_identity_keys(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> Result<Vec<String>, StoreError>;

    /// Deletes every item of a contact: profile, messages, their pointers and statuses,
    /// consent ledger, idempotency keys, identities (those given and those the profile names).
    /// Idempotent; a re-run after a crash finishes the job. Returns what it deleted.
    async fn erase_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
    ) -> Result<ErasedItems, StoreError>;
}

/// The team's side of a conversation (the web inbox): assignment, labels, closed, and
/// internal notes. In the contact's data: sealed with its key, exported, erased with it.
#[async_trait]
pub trait TeamBoard: Send + Sync {
    /// The conversation's team state, unless none was set or it expired.
    async fn team_state(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<TeamState>, StoreError>;

    /// Replaces the team state, unless the stored one is newer (`updated_at`).
    async fn set_team_state(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        state: &TeamState,
    ) -> Result<(), StoreError>;

    /// Stores a note once (by its id).
    async fn add_note(&self, tenant: &TenantId, note: &Note) -> Result<Recorded, StoreError>;

    /// A conversation's notes, oldest first; expired ones are left out.
    async fn notes(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<Note>, StoreError>;
}

/// E-Rezept tokens found in messages, one record per message, kept for the tenant's
/// `prescription_retention_days` (then expired like other content), erased with the contact.
#[async_trait]
pub trait PrescriptionLedger: Send + Sync {
    /// Stores the record once (by its message key).
    async fn add_prescriptions(
        &self,
        tenant: &TenantId,
        record: &PrescriptionRecord,
    ) -> Result<Recorded, StoreError>;

    /// A contact's records, oldest first; expired ones are left out.
    async fn prescriptions(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<PrescriptionRecord>, StoreError>;
}

/// Pickup notices (`crate::notifications`): the message stores keep them (on DynamoDB in the
/// contact's partition, erased with it).
#[async_trait]
pub trait NoticeBoard: Send + Sync {
    /// Stores the notice once (by tenant, contact, kind and reference).
    async fn add_notice(&self, tenant: &TenantId, notice: &Notice) -> Result<Recorded, StoreError>;
    /// One notice, unless unknown or expired.
    async fn notice(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        kind: &str,
        reference: &str,
        now: i64,
    ) -> Result<Option<Notice>, StoreError>;
    /// Replaces a stored notice (collected, reminded).
    async fn update_notice(&self, tenant: &TenantId, notice: &Notice) -> Result<(), StoreError>;
    /// A conversation's notices, oldest first; expired ones are left out.
    async fn notices(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<Notice>, StoreError>;
    /// Up to `limit` notices of any tenant whose reminder is due at `now`, oldest due first.
    async fn due_notices(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(TenantId, Notice)>, StoreError>;
}

/// The audit log: append-only (adapters have no update or delete), read by operators.
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Entries newest first, of one tenant or of all; expired ones are left out.
    async fn list(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}
