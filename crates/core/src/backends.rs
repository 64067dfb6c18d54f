//! The object graph of one relay process: every port as a trait object, built by one function
//! per backend (`relay_aws::backends` from a function's settings, `relay_embedded::open` from
//! the data directory and `relay.toml`). Every entry point — the Lambda mains, `relay serve`,
//! the CLI's admin commands and the end-to-end tests — builds its handlers from a `Backends`,
//! so "local mode runs the code Lambda runs" holds by construction.
//!
//! May depend on: the ports and use cases of this crate; nothing of AWS, SQLite or HTTP.

use crate::Clock;
use crate::crypto::Keyring;
use crate::ids::Pseudonymizer;
use crate::media::BlobStore;
use crate::ports::{AuditLog, Directory, InboundQueue, JobControl, OutboundQueue};
use crate::privacy::Privacy;
use crate::routing::Router;
use crate::sealed::SealedStore;
use crate::staff::StaffStore;
use std::sync::Arc;

/// Sizes and limits the handlers apply (from `relay.toml` locally, the environment on AWS).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest webhook body (receiver).
    pub max_body_bytes: usize,
    /// The largest media file fetched from WhatsApp (reply-sender).
    pub max_media_bytes: u64,
    /// The largest file the inbox API returns in one response (`None`: files stream).
    pub max_media_response_bytes: Option<u64>,
    /// The largest file the inbox API and the web inbox take as an upload, below WhatsApp's
    /// limits per type (`None`: those alone; on AWS, what a Lambda request can carry).
    pub max_upload_bytes: Option<usize>,
    /// How long audit entries are kept.
    pub audit_retention_days: u32,
    /// How many reply-senders run at once (each paces to its share of a channel's rate).
    pub sender_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: crate::config::DEFAULT_MAX_BODY_BYTES,
            max_media_bytes: crate::media::DEFAULT_MAX_MEDIA_BYTES,
            max_media_response_bytes: None,
            max_upload_bytes: None,
            audit_retention_days: crate::config::DEFAULT_AUDIT_RETENTION_DAYS,
            sender_concurrency: 1,
        }
    }
}

impl Limits {
    pub fn audit_retention_secs(&self) -> i64 {
        i64::from(self.audit_retention_days) * 86_400
    }
}

/// A port this process was not configured with (on AWS each function gets only its own).
#[derive(Debug, thiserror::Error)]
#[error("this process has no {0} configured")]
pub struct Missing(pub &'static str);

/// The ports of one process. The store is sealing by type: a handler cannot be given the raw
/// store by mistake.
#[derive(Clone)]
pub struct Backends {
    /// The one clock (also the keyring's).
    pub clock: Clock,
    pub keys: Arc<Keyring>,
    pub store: Arc<SealedStore>,
    pub directory: Arc<dyn Directory>,
    pub pseudonymizer: Arc<Pseudonymizer>,
    pub inbound: Option<Arc<dyn InboundQueue>>,
    pub outbound: Option<Arc<dyn OutboundQueue>>,
    /// Retry and dead-letter control over received jobs (the outbound queue's).
    pub control: Option<Arc<dyn JobControl>>,
    pub audit: Option<Arc<dyn AuditLog>>,
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// Staff accounts and sessions (the web inbox).
    pub staff: Option<Arc<dyn StaffStore>>,
    /// The tenants' message templates (the web inbox's closed-window composer).
    pub templates: Option<Arc<dyn crate::templates::TemplateStore>>,
    /// The tenants' quick replies (the web inbox's composer).
    pub quick_replies: Option<Arc<dyn crate::templates::QuickReplies>>,
    /// What WhatsApp charges, counted per message from status webhooks.
    pub usage: Option<Arc<dyn crate::usage::UsageLedger>>,
    pub limits: Limits,
}

impl Backends {
    pub fn inbound(&self) -> Result<Arc<dyn InboundQueue>, Missing> {
        self.inbound.clone().ok_or(Missing("inbound queue"))
    }

    pub fn outbound(&self) -> Result<Arc<dyn OutboundQueue>, Missing> {
        self.outbound.clone().ok_or(Missing("outbound queue"))
    }

    pub fn control(&self) -> Result<Arc<dyn JobControl>, Missing> {
        self.control.clone().ok_or(Missing("outbound queue"))
    }

    pub fn audit(&self) -> Result<Arc<dyn AuditLog>, Missing> {
        self.audit.clone().ok_or(Missing("audit log"))
    }

    pub fn templates(&self) -> Result<Arc<dyn crate::templates::TemplateStore>, Missing> {
        self.templates.clone().ok_or(Missing("template store"))
    }

    pub fn quick_replies(&self) -> Result<Arc<dyn crate::templates::QuickReplies>, Missing> {
        self.quick_replies
            .clone()
            .ok_or(Missing("quick reply store"))
    }

    pub fn staff(&self) -> Result<Arc<dyn StaffStore>, Missing> {
        self.staff.clone().ok_or(Missing("staff store"))
    }

    pub fn blobs(&self) -> Result<Arc<dyn BlobStore>, Missing> {
        self.blobs.clone().ok_or(Missing("media store"))
    }

    /// The message router; its acting rules (opt-out, away replies, forwards) are on when
    /// there is an outbound queue.
    pub fn router(&self) -> Router {
        let router = Router::new(
            self.store.clone(),
            self.directory.clone(),
            self.pseudonymizer.clone(),
            self.keys.clone(),
        );
        let router = match &self.templates {
            Some(t) => router.with_templates(t.clone()),
            None => router,
        };
        let router = match &self.usage {
            Some(u) => router.with_usage(u.clone()),
            None => router,
        };
        match &self.outbound {
            Some(queue) => router.with_outbound(queue.clone()),
            None => router,
        }
    }

    /// Export and erasure (GDPR Art. 15, 17, 20).
    pub fn privacy(&self) -> Result<Privacy, Missing> {
        Ok(Privacy {
            store: self.store.clone(),
            keys: self.keys.clone(),
            pseudonymizer: self.pseudonymizer.clone(),
            blobs: self.blobs()?,
        })
    }
}
