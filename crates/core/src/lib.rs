//! Domain core of the pharmacy WhatsApp relay: the WhatsApp webhook model, tenants and
//! channels, pseudonymous ids, the ports (traits) adapters implement, and the use cases.
//!
//! May depend on: serde, crypto primitives, small utility crates. Must not depend on the AWS
//! SDK, an HTTP client or server, or a database.

pub mod backends;
pub mod config;
pub mod crypto;
pub mod directory;
pub mod envelope;
pub mod erezept;
pub mod ids;
pub mod jobs;
pub mod media;
pub mod notifications;
pub mod outbound;
pub mod policy;
pub mod ports;
pub mod prescriptions;
pub mod privacy;
pub mod problem;
pub mod records;
pub mod replies;
pub mod routing;
pub mod sealed;
pub mod sending;
pub mod staff;
pub mod templates;
pub mod tenant;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod usage;
pub mod webhook;

/// The one clock: every rule that depends on "now" (windows, expiry, leases, audit retention,
/// queue visibility) reads it from a `Clock` handed in by the composition root, never from the
/// system directly. Production passes [`Clock::system`]; tests pass [`Clock::fixed`] or their
/// own function, so no rule and no test depends on the date the code runs.
#[derive(Clone)]
pub struct Clock(std::sync::Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Clock(std::sync::Arc::new(|| {
            #[allow(clippy::disallowed_methods)] // the one place that reads the system clock
            let now = std::time::SystemTime::now();
            now.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        }))
    }

    /// A clock standing still at `secs` (Unix seconds).
    pub fn fixed(secs: i64) -> Self {
        Clock(std::sync::Arc::new(move || secs * 1000))
    }

    /// A clock reading `millis` (Unix milliseconds) from a function: tests that move time.
    pub fn from_millis_fn(millis: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Clock(std::sync::Arc::new(millis))
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

#[cfg(test)]
mod clock_tests {
    use super::Clock;

    #[test]
    fn a_fixed_clock_stands_still_and_reads_in_both_units() {
        let c = Clock::fixed(1_700_000_000);
        assert_eq!(c.now(), 1_700_000_000);
        assert_eq!(c.now_ms(), 1_700_000_000_000);
    }

    #[test]
    fn seconds_round_down_also_before_the_epoch() {
        let c = Clock::from_millis_fn(|| -1);
        assert_eq!(c.now(), -1);
        let c = Clock::from_millis_fn(|| 1_999);
        assert_eq!(c.now(), 1);
    }
}
