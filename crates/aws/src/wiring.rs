//! The composition root on AWS: a function's settings and SDK clients become its
//! [`Backends`]. Every Lambda main, the CLI's `--aws` commands and the end-to-end tests on moto
//! build through here, so they wire the same objects the same way.

use crate::{Clients, Settings, SettingsError, admin::AdminError};
use relay_core::Clock;
use relay_core::backends::{Backends, Limits};
use relay_core::media::BlobStore;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("the pseudonymisation key could not be loaded: {0}")]
    PseudonymKey(#[from] AdminError),
}

/// A function's settings and the SDK clients built from them, once per process.
#[derive(Clone, Debug)]
pub struct Aws {
    pub settings: Settings,
    pub clients: Clients,
}

impl Aws {
    /// A Lambda function's: settings from its environment (failing fast on a missing
    /// variable), the SDK from the environment with the relay's timeouts.
    pub async fn from_env(function: &str) -> Result<Self, WiringError> {
        let settings = Settings::for_function(function)?;
        Ok(Aws::new(settings, &crate::sdk_config(None).await))
    }

    pub fn new(settings: Settings, sdk: &aws_config::SdkConfig) -> Self {
        Aws::with_clients(settings, Clients::new(sdk))
    }

    /// With clients built elsewhere (tests: an SDK pointed at moto, or at a fault proxy).
    pub fn with_clients(settings: Settings, clients: Clients) -> Self {
        Aws { settings, clients }
    }

    /// Every port the settings name, on `clock`, except media files ([`Aws::media_store`]).
    pub async fn backends(&self, clock: Clock) -> Result<Backends, WiringError> {
        let (s, c) = (&self.settings, &self.clients);
        let keys = s.keyring(c, clock.clone())?;
        let jobs = s
            .outbound_queue_url
            .as_deref()
            .map(|url| Arc::new(c.job_queue(url, s.outbound_dlq_url.clone())));
        Ok(Backends {
            clock,
            store: Arc::new(c.sealed_store(&s.table, keys.clone())),
            keys,
            directory: Arc::new(c.directory(&s.table)),
            pseudonymizer: Arc::new(c.pseudonymizer(&s.table).await?),
            inbound: s
                .inbound_queue_url
                .as_deref()
                .map(|url| Arc::new(c.inbound_queue(url)) as _),
            outbound: jobs.clone().map(|q| q as _),
            control: jobs.map(|q| q as _),
            audit: s
                .audit_table
                .as_deref()
                .map(|t| Arc::new(c.audit_log(t)) as _),
            blobs: None,
            staff: Some(Arc::new(c.staff_store(&s.table))),
            templates: Some(Arc::new(c.store(&s.table))),
            quick_replies: Some(Arc::new(c.store(&s.table))),
            usage: Some(Arc::new(c.store(&s.table))),
            limits: Limits {
                max_body_bytes: s.max_body_bytes,
                max_media_bytes: s.max_media_bytes,
                max_media_response_bytes: Some(s.media_response_max_bytes),
                max_upload_bytes: Some(s.media_upload_max_bytes),
                audit_retention_days: s.audit_retention_days,
                sender_concurrency: s.sender_concurrency,
            },
        })
    }

    /// Sealed media files in S3 (`MEDIA_BUCKET`). Only the functions that touch media call
    /// this, so only they link the S3 client.
    pub fn media_store(&self) -> Result<Arc<dyn BlobStore>, WiringError> {
        let bucket = self.settings.require_media_bucket()?;
        Ok(Arc::new(self.clients.blob_store(bucket)))
    }

    /// [`Aws::backends`] with media files.
    pub async fn backends_with_media(&self, clock: Clock) -> Result<Backends, WiringError> {
        let mut b = self.backends(clock).await?;
        b.blobs = Some(self.media_store()?);
        Ok(b)
    }
}
