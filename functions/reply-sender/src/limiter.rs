//! Per-channel send pacing: each channel gets evenly spaced slots at its configured rate, so
//! a burst drains at the rate WhatsApp allows instead of producing a storm of 429s.
//!
//! Hand-written rather than `governor`: a keyed limiter with a different rate per key is ten
//! lines here and would pull dashmap and quanta into every Lambda.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct ChannelLimiter {
    next_slot: Mutex<HashMap<String, Instant>>,
}

impl ChannelLimiter {
    /// Waits for this channel's next free slot at `per_second` (reserving it).
    pub async fn acquire(&self, channel: &str, per_second: u32) {
        let wait = {
            let mut slots = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = slots
                .get(channel)
                .copied()
                .filter(|s| *s > now)
                .unwrap_or(now);
            let spacing = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
            slots.insert(channel.to_owned(), slot + spacing);
            slot.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
