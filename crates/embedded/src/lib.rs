//! Local mode: the relay's store and queue on one SQLite file under `data_dir`, implementing
//! the same ports as DynamoDB and SQS so that `relay serve` runs the Lambda handlers unchanged.

pub mod backup;
mod blobs;
mod db;
mod keys;
mod local;
mod queue;
mod staff;
mod store;

pub use blobs::FileBlobStore;
pub use db::{Database, DbError, SCHEMA_VERSION};
pub use keys::{KeyError, load_or_create_key};
pub use local::{
    INBOUND_QUEUE, Local, MAX_RECEIVES, OUTBOUND_MAX_RECEIVES, OUTBOUND_QUEUE, OpenError,
    VISIBILITY,
};
pub use queue::{DeadLetter, MAX_MESSAGE_BYTES, ReceivedMessage, SqliteQueue};
pub use staff::SqliteStaffStore;
pub use store::{SqliteAuditLog, SqliteKeyStore, SqliteMessageStore};
