//! What WhatsApp charges. Status webhooks carry each message's `pricing` (`billable`,
//! `pricing_model`, `category`, `type`); the router counts it once per message — sent,
//! delivered and read all carry it — per tenant, month (Europe/Berlin), category and type.
//! An estimate multiplies the billable counts by per-category rates from `relay.toml`.
//!
//! Meta bills per message since 2025-07-01 (marketing, utility, authentication; service
//! conversations and utility templates inside the window free). Partners report that from
//! 2026-10-01 service and utility messages inside the window are billed at the utility rate:
//! the `billable` flag of each status says what Meta bills, so the count follows it.

use crate::ids::TenantId;
use crate::ports::StoreError;
use crate::records::Recorded;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// One message's pricing, as its status webhook says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    pub billable: bool,
    /// `marketing`, `utility`, `authentication`, `service`, … (lower case).
    pub category: String,
    /// `regular`, `free_customer_service`, `free_entry_point`, … (empty when absent).
    pub pricing_type: String,
}

impl Pricing {
    /// From a status's `pricing` object; `None` without a category.
    pub fn parse(pricing: &Value) -> Option<Self> {
        let text = |k: &str| {
            pricing
                .get(k)
                .and_then(Value::as_str)
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty() && s.len() <= 64)
        };
        Some(Pricing {
            billable: pricing
                .get("billable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            category: text("category")?,
            pricing_type: text("type").unwrap_or_default(),
        })
    }
}

/// The month (`YYYY-MM`) of a Unix time in Europe/Berlin, as Meta's invoices count it.
pub fn month_of(unix_seconds: i64) -> Option<String> {
    let ts = jiff::Timestamp::from_second(unix_seconds).ok()?;
    let tz = jiff::tz::TimeZone::get(crate::policy::TIMEZONE).ok()?;
    let local = ts.to_zoned_datetime(tz);
    Some(format!("{:04}-{:02}", local.year(), local.month()))
}

/// Whether `s` is a month like `2026-12`.
pub fn valid_month(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit)
        && matches!(s[5..].parse::<u8>(), Ok(1..=12))
}

/// How many messages of one category and type a tenant had in a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCount {
    pub category: String,
    pub pricing_type: String,
    pub messages: u64,
    pub billable: u64,
}

/// Where the counts are kept (the message store on each backend).
#[async_trait]
pub trait UsageLedger: Send + Sync {
    /// Counts the pricing of message `wamid_key` in `month`, once: the first status carrying
    /// it counts, later ones (and redeliveries) are duplicates.
    async fn record_usage(
        &self,
        tenant: &TenantId,
        month: &str,
        wamid_key: &str,
        pricing: &Pricing,
        expires_at: i64,
    ) -> Result<Recorded, StoreError>;

    /// A tenant's counts for a month, by category and type.
    async fn usage(&self, tenant: &TenantId, month: &str) -> Result<Vec<UsageCount>, StoreError>;
}

/// Per-message rates by category, for the estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub currency: String,
    /// When the rates were taken, and from where (shown with every estimate).
    pub as_of: String,
    pub source: String,
    pub per_category: BTreeMap<String, f64>,
}

impl Default for Rates {
    /// Germany. Meta's rate card for Germany as partners reported it in 2025 (€0.1131 per
    /// marketing message, €0.0456 per utility or authentication message; service messages
    /// free). Check Meta's pricing page ("Pricing on the WhatsApp Business Platform") and set
    /// `[tenants.pricing]` when it changes.
    fn default() -> Self {
        Rates {
            currency: "EUR".into(),
            as_of: "2025-07-01".into(),
            source: "Meta's rate card for Germany as reported by partners (check developers.facebook.com pricing)".into(),
            per_category: [
                ("marketing", 0.1131),
                ("utility", 0.0456),
                ("authentication", 0.0456),
                ("service", 0.0),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        }
    }
}

/// A month's counts with what they cost at `rates`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub rows: Vec<EstimateRow>,
    /// The sum, rounded to cents.
    pub total: f64,
    pub currency: String,
    /// Categories counted as billable that `rates` has no rate for (left out of the total).
    pub unpriced: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimateRow {
    #[serde(flatten)]
    pub count: UsageCount,
    pub rate: Option<f64>,
    pub estimate: f64,
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn estimate(counts: &[UsageCount], rates: &Rates) -> Estimate {
    let mut unpriced = Vec::new();
    let rows: Vec<EstimateRow> = counts
        .iter()
        .map(|c| {
            let rate = rates.per_category.get(&c.category).copied();
            if rate.is_none() && c.billable > 0 && !unpriced.contains(&c.category) {
                unpriced.push(c.category.clone());
            }
            EstimateRow {
                count: c.clone(),
                rate,
                estimate: cents(rate.unwrap_or(0.0) * c.billable as f64),
            }
        })
        .collect();
    Estimate {
        total: cents(rows.iter().map(|r| r.estimate).sum()),
        rows,
        currency: rates.currency.clone(),
        unpriced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pricing_is_read_from_a_status() {
        // developers.facebook.com, status messages reference: per-message pricing (PMP).
        let p = Pricing::parse(&json!({"billable": true, "pricing_model": "PMP",
                                       "category": "utility", "type": "regular"}))
        .unwrap();
        assert_eq!(
            p,
            Pricing {
                billable: true,
                category: "utility".into(),
                pricing_type: "regular".into()
            }
        );
        let free = Pricing::parse(&json!({"billable": false, "pricing_model": "PMP",
                                          "category": "service", "type": "free_customer_service"}))
        .unwrap();
        assert!(!free.billable);
        assert!(Pricing::parse(&json!({"billable": true})).is_none());
    }

    #[test]
    fn months_are_berlin_months() {
        // 2026-11-30 23:30 UTC is already December in Berlin (UTC+1).
        assert_eq!(month_of(1_796_081_400).as_deref(), Some("2026-12"));
        assert_eq!(month_of(1_796_077_800).as_deref(), Some("2026-11"));
        assert!(valid_month("2026-12") && !valid_month("2026-13") && !valid_month("26-12"));
        assert!(!valid_month("2026-1x") && !valid_month("2026/12"));
    }

    #[test]
    fn the_estimate_counts_billable_messages_at_their_rate() {
        let row = |c: &str, t: &str, m, b| UsageCount {
            category: c.into(),
            pricing_type: t.into(),
            messages: m,
            billable: b,
        };
        let e = estimate(
            &[
                row("marketing", "regular", 10, 10),
                row("utility", "regular", 100, 40),
                row("service", "free_customer_service", 500, 0),
                row("referral_conversion", "free_entry_point", 3, 2),
            ],
            &Rates::default(),
        );
        assert_eq!(e.rows[0].estimate, 1.13);
        assert_eq!(e.rows[1].estimate, 1.82);
        assert_eq!(e.rows[2].estimate, 0.0);
        assert_eq!(e.total, 2.95);
        assert_eq!(e.unpriced, ["referral_conversion"]);
    }
}
