//! A tenant's rules for automatic behaviour: opt-out keywords and their confirmations,
//! opening hours with an away reply, and what forwarding may include. Parsed from
//! `relay.toml`, stored with the tenant (JSON) on AWS.

use serde::{Deserialize, Serialize};

pub const DEFAULT_OPT_OUT: &[&str] = &["STOP", "STOPP", "ABMELDEN", "ABBESTELLEN"];
pub const DEFAULT_OPT_IN: &[&str] = &["START", "ANMELDEN"];
pub const DEFAULT_OPT_OUT_TEXT: &str =
    "Sie erhalten keine Nachrichten mehr von uns. Mit START melden Sie sich wieder an.";
pub const DEFAULT_OPT_IN_TEXT: &str = "Willkommen zurück! Mit STOP melden Sie sich jederzeit ab.";
pub const DEFAULT_AWAY_INTERVAL_HOURS: u32 = 12;
pub const TIMEZONE: &str = "Europe/Berlin";

pub const DEFAULT_PRESCRIPTION_RETENTION_DAYS: u32 = 7;

fn default_prescription_retention_days() -> u32 {
    DEFAULT_PRESCRIPTION_RETENTION_DAYS
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantPolicy {
    /// Whether forwarded events include message text and captions.
    #[serde(default)]
    pub forward_content: bool,
    /// Whether click-to-WhatsApp ad data (`referral`: ad ids, click ids, URLs) is kept with
    /// the message (default false: it is dropped on arrival; the pharmacy rarely needs it).
    #[serde(default)]
    pub keep_referral: bool,
    /// Whether `prescription.received` forwards carry the E-Rezept tokens themselves (default
    /// false: the message and contact ids and the count; the software fetches the message).
    #[serde(default)]
    pub forward_prescriptions: bool,
    /// How long E-Rezept tokens are kept (days; default 7): then they are erased like expired
    /// content, while the message stays for the tenant's retention.
    #[serde(default = "default_prescription_retention_days")]
    pub prescription_retention_days: u32,
    /// Whether a photo or PDF is deleted once its E-Rezept codes are read (default false).
    #[serde(default)]
    pub delete_prescription_images_after_decode: bool,
    pub opt_out: OptOutPolicy,
    #[serde(default)]
    pub business_hours: Option<BusinessHours>,
    /// Per-message rates for the usage estimate (`[tenants.pricing]`; Germany by default).
    #[serde(default)]
    pub rates: crate::usage::Rates,
    /// The pickup-ready notice (`[tenants.notifications.pickup_ready]`; none: not offered).
    #[serde(default)]
    pub pickup_ready: Option<crate::notifications::PickupReadyPolicy>,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        TenantPolicy {
            forward_content: false,
            keep_referral: false,
            forward_prescriptions: false,
            prescription_retention_days: DEFAULT_PRESCRIPTION_RETENTION_DAYS,
            delete_prescription_images_after_decode: false,
            opt_out: OptOutPolicy::default(),
            business_hours: None,
            rates: crate::usage::Rates::default(),
            pickup_ready: None,
        }
    }
}

impl TenantPolicy {
    /// How long E-Rezept tokens are kept, in seconds.
    pub fn prescription_retention_secs(&self) -> i64 {
        i64::from(self.prescription_retention_days) * 86_400
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptOutPolicy {
    pub keywords: Vec<String>,
    pub opt_in_keywords: Vec<String>,
    pub confirmation_text: String,
    pub opt_in_text: String,
}

impl Default for OptOutPolicy {
    fn default() -> Self {
        OptOutPolicy {
            keywords: DEFAULT_OPT_OUT.iter().map(|s| s.to_string()).collect(),
            opt_in_keywords: DEFAULT_OPT_IN.iter().map(|s| s.to_string()).collect(),
            confirmation_text: DEFAULT_OPT_OUT_TEXT.to_owned(),
            opt_in_text: DEFAULT_OPT_IN_TEXT.to_owned(),
        }
    }
}

/// What a message's text asks for, if it is exactly a keyword (case and surrounding space
/// do not matter; "stop bitte" is a message, not a keyword).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    OptOut,
    OptIn,
}

impl OptOutPolicy {
    pub fn keyword(&self, text: &str) -> Option<Keyword> {
        let t = text.trim();
        let eq = |k: &String| k.trim().to_lowercase() == t.to_lowercase();
        if self.keywords.iter().any(eq) {
            Some(Keyword::OptOut)
        } else if self.opt_in_keywords.iter().any(eq) {
            Some(Keyword::OptIn)
        } else {
            None
        }
    }
}

/// Opening hours in Europe/Berlin: per weekday (Monday = 0) a list of `[from, to)` minutes
/// after midnight, local time, plus whole closed dates (`YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusinessHours {
    pub weekly: [Vec<(u16, u16)>; 7],
    pub closed_dates: Vec<String>,
    pub away_text: String,
    pub away_interval_hours: u32,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl BusinessHours {
    pub fn day_names() -> &'static [&'static str; 7] {
        &DAYS
    }

    /// Whether the pharmacy is open at this Unix time (Europe/Berlin, DST-correct).
    pub fn is_open(&self, unix_seconds: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_second(unix_seconds) else {
            return true;
        };
        let Ok(tz) = jiff::tz::TimeZone::get(TIMEZONE) else {
            return true;
        };
        let local = ts.to_zoned_datetime(tz);
        let date = local.date().to_string();
        if self.closed_dates.contains(&date) {
            return false;
        }
        let day = local.weekday().to_monday_zero_offset() as usize;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.weekly[day]
            .iter()
            .any(|&(from, to)| from <= minute && minute < to)
    }

    /// Parses `"08:00-13:00"` into minutes; `to` may be `24:00`.
    pub fn parse_interval(s: &str) -> Result<(u16, u16), String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?} is not like \"08:00-18:30\""))?;
        let hm = |x: &str| -> Result<u16, String> {
            let (h, m) = x
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("{x:?} is not HH:MM"))?;
            let (h, m): (u16, u16) = (
                h.parse().map_err(|_| format!("{x:?} is not HH:MM"))?,
                m.parse().map_err(|_| format!("{x:?} is not HH:MM"))?,
            );
            if m >= 60 || h > 24 || (h == 24 && m != 0) {
                return Err(format!("{x:?} is not a time of day"));
            }
            Ok(h * 60 + m)
        };
        let (from, to) = (hm(a)?, hm(b)?);
        if from >= to {
            return Err(format!("{s:?} ends before it starts"));
        }
        Ok((from, to))
    }

    pub fn valid_date(s: &str) -> bool {
        s.parse::<jiff::civil::Date>().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours() -> BusinessHours {
        let day = vec![(8 * 60, 13 * 60), (14 * 60, 18 * 60 + 30)];
        BusinessHours {
            weekly: [
                day.clone(),
                day.clone(),
                day.clone(),
                day.clone(),
                day,
                vec![(9 * 60, 13 * 60)],
                vec![],
            ],
            closed_dates: vec!["2026-12-24".into()],
            away_text: "Geschlossen".into(),
            away_interval_hours: 12,
        }
    }

    fn unix(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_second()
    }

    #[test]
    fn opening_hours_follow_berlin_time_across_dst() {
        let h = hours();
        // Winter (CET, UTC+1): Monday 2026-01-05 07:30 UTC = 08:30 local → open.
        assert!(h.is_open(unix("2026-01-05T07:30:00Z")));
        // 06:30 UTC = 07:30 local → closed.
        assert!(!h.is_open(unix("2026-01-05T06:30:00Z")));
        // Summer (CEST, UTC+2): Monday 2026-07-06 06:30 UTC = 08:30 local → open; a fixed
        // UTC+1 offset would say 07:30 and closed.
        assert!(h.is_open(unix("2026-07-06T06:30:00Z")));
        // Lunch break, Saturday afternoon, Sunday, a closed date.
        assert!(!h.is_open(unix("2026-07-06T11:30:00Z")));
        assert!(!h.is_open(unix("2026-07-11T12:00:00Z")));
        assert!(!h.is_open(unix("2026-07-12T09:00:00Z")));
        assert!(
            !h.is_open(unix("2026-12-24T09:00:00Z")),
            "Christmas Eve is closed although a Thursday"
        );
        // The DST switch day (2026-03-29, Sunday) has no opening: check the Monday after.
        assert!(h.is_open(unix("2026-03-30T06:00:00Z")), "08:00 CEST");
        assert!(!h.is_open(unix("2026-03-30T05:59:00Z")));
    }

    #[test]
    fn intervals_are_validated() {
        assert_eq!(
            BusinessHours::parse_interval("08:00-18:30"),
            Ok((480, 1110))
        );
        assert_eq!(BusinessHours::parse_interval("00:00-24:00"), Ok((0, 1440)));
        for bad in ["8-18", "18:00-08:00", "08:60-09:00", "25:00-26:00", "x"] {
            assert!(BusinessHours::parse_interval(bad).is_err(), "{bad}");
        }
        assert!(BusinessHours::valid_date("2026-12-24"));
        assert!(!BusinessHours::valid_date("24.12.2026"));
    }

    #[test]
    fn keywords_match_whole_text_case_insensitively() {
        let p = OptOutPolicy::default();
        assert_eq!(p.keyword("STOP"), Some(Keyword::OptOut));
        assert_eq!(p.keyword("  stopp "), Some(Keyword::OptOut));
        assert_eq!(p.keyword("Abmelden"), Some(Keyword::OptOut));
        assert_eq!(p.keyword("start"), Some(Keyword::OptIn));
        assert_eq!(p.keyword("stop bitte"), None);
        assert_eq!(p.keyword("Bitte nicht stoppen"), None);
    }
}
