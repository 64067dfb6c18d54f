//! The composition root of local mode: the data directory (and `relay.toml`) become the
//! [`Backends`] that `relay serve`, the CLI's local admin commands and the tests build from.

use crate::{
    Database, DbError, FileBlobStore, KeyError, SqliteAuditLog, SqliteKeyStore, SqliteMessageStore,
    SqliteQueue, SqliteStaffStore, load_or_create_key,
};
use relay_core::Clock;
use relay_core::backends::{Backends, Limits};
use relay_core::config::RelayConfig;
use relay_core::crypto::{Keyring, LocalKeyWrapper};
use relay_core::directory::StaticDirectory;
use relay_core::ids::Pseudonymizer;
use relay_core::sealed::SealedStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub const INBOUND_QUEUE: &str = "inbound";
pub const OUTBOUND_QUEUE: &str = "outbound";
/// As the SAM template's redrive policy: after this many receives a message is dead.
pub const MAX_RECEIVES: u32 = 5;
/// reply-sender bounds its own attempts (and dead-letters explicitly); the queue's bound is a
/// safety net above the 24 hours of forward retries.
pub const OUTBOUND_MAX_RECEIVES: u32 = 100;
/// How long a received message stays invisible (the template's visibility timeout).
pub const VISIBILITY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no queue {0:?}: use \"inbound\" or \"outbound\"")]
    NoSuchQueue(String),
    #[error(transparent)]
    Store(relay_core::ports::StoreError),
}

/// The local backends under `data_dir`, with the concrete handles local mode also needs
/// (the sweep, the queue workers, `relay dlq`).
pub struct Local {
    /// The raw SQLite store (sealed values only); handlers get the sealing one.
    pub store: Arc<SqliteMessageStore>,
    pub sealed: Arc<SealedStore>,
    pub keys: Arc<Keyring>,
    pub audit: Arc<SqliteAuditLog>,
    /// Sealed media files under `data_dir/media`.
    pub blobs: Arc<FileBlobStore>,
    pub queue: Arc<SqliteQueue>,
    pub outbound: Arc<SqliteQueue>,
    pub pseudonymizer: Arc<Pseudonymizer>,
    /// Staff accounts and sessions of the web inbox.
    pub staff: Arc<SqliteStaffStore>,
    /// The one clock of this relay: the database, the keyring and the handlers read it.
    pub clock: Clock,
}

impl Local {
    pub fn open(data_dir: &Path, clock: Clock) -> Result<Self, OpenError> {
        Self::open_with_key_backup(data_dir, clock, None)
    }

    /// As [`Local::open`], with the rolling key backup in `key_backup` (`[server]
    /// key_backup_dir`): erasure deletes a contact's key there too.
    pub fn open_with_key_backup(
        data_dir: &Path,
        clock: Clock,
        key_backup: Option<std::path::PathBuf>,
    ) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Health data lives here: only the owner may read it.
            let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
        }
        let db = Database::open(&data_dir.join("relay.db"), clock.clone())?;
        let key = load_or_create_key(&data_dir.join("pseudonym.key"))?;
        // The local stand-in for the KMS key: wraps every contact's data key.
        let master = load_or_create_key(&data_dir.join("master.key"))?;
        let keys = Arc::new(Keyring::new(
            Arc::new(SqliteKeyStore::new(db.clone()).with_key_backup(data_dir, key_backup)),
            Arc::new(LocalKeyWrapper::new(master)),
            clock.clone(),
        ));
        let store = Arc::new(SqliteMessageStore::new(db.clone()));
        Ok(Local {
            sealed: Arc::new(SealedStore::new(store.clone(), keys.clone())),
            store,
            keys,
            audit: Arc::new(SqliteAuditLog::new(db.clone())),
            blobs: Arc::new(FileBlobStore::new(data_dir.join("media"))),
            staff: Arc::new(SqliteStaffStore::new(db.clone())),
            queue: Arc::new(SqliteQueue::new(db.clone(), INBOUND_QUEUE, MAX_RECEIVES)),
            outbound: Arc::new(SqliteQueue::new(db, OUTBOUND_QUEUE, OUTBOUND_MAX_RECEIVES)),
            pseudonymizer: Arc::new(Pseudonymizer::new(key)),
            clock,
        })
    }

    /// Every port, with tenants and limits from `config`.
    pub fn backends(&self, config: &RelayConfig) -> Backends {
        Backends {
            clock: self.clock.clone(),
            keys: self.keys.clone(),
            store: self.sealed.clone(),
            directory: Arc::new(StaticDirectory::from_config(config)),
            pseudonymizer: self.pseudonymizer.clone(),
            inbound: Some(self.queue.clone()),
            outbound: Some(self.outbound.clone()),
            control: Some(self.outbound.clone()),
            audit: Some(self.audit.clone()),
            blobs: Some(self.blobs.clone()),
            staff: Some(self.staff.clone()),
            templates: Some(self.store.clone()),
            quick_replies: Some(self.store.clone()),
            usage: Some(self.store.clone()),
            limits: Limits {
                max_body_bytes: config.max_body_bytes(),
                max_media_bytes: config.max_media_bytes(),
                // Local files stream: no response size limit.
                max_media_response_bytes: None,
                max_upload_bytes: None,
                audit_retention_days: config.audit_retention_days(),
                sender_concurrency: 1,
            },
        }
    }

    /// Contacts whose data key is gone (erased after the content backup that was restored):
    /// their rows are unreadable ciphertext, to be erased.
    pub fn contacts_without_keys(
        &self,
    ) -> Result<Vec<(relay_core::ids::TenantId, relay_core::ids::ContactId)>, OpenError> {
        self.store.contacts_without_keys().map_err(OpenError::Store)
    }

    /// The queue an admin command names.
    pub fn queue_named(&self, name: &str) -> Result<Arc<SqliteQueue>, OpenError> {
        match name {
            INBOUND_QUEUE => Ok(self.queue.clone()),
            OUTBOUND_QUEUE => Ok(self.outbound.clone()),
            other => Err(OpenError::NoSuchQueue(other.to_owned())),
        }
    }
}
