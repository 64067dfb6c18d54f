//! Domain core of the pharmacy WhatsApp relay: the WhatsApp webhook model, tenants and
//! channels, pseudonymous ids, the ports (traits) adapters implement, and the use cases.
//!
//! May depend on: serde, crypto primitives, small utility crates. Must not depend on the AWS
//! SDK, an HTTP client or server, or a database.

pub mod config;
pub mod crypto;
pub mod directory;
pub mod envelope;
pub mod ids;
pub mod jobs;
pub mod media;
pub mod outbound;
pub mod policy;
pub mod ports;
pub mod privacy;
pub mod problem;
pub mod records;
pub mod routing;
pub mod sealed;
pub mod tenant;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod webhook;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The clock the use cases read; tests pass a fixed one.
pub type Clock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    std::sync::Arc::new(unix_now)
}
