//! Typed settings of the Lambda functions, read once from the environment at start.

/// What the functions read from their environment. Secrets are not among them: channel
/// secrets and the pseudonymisation key live KMS-encrypted in the table.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `RELAY_TABLE`: the DynamoDB table.
    pub table: String,
    /// `INBOUND_QUEUE_URL`: the inbound SQS queue (receiver only).
    pub inbound_queue_url: Option<String>,
    /// `MAX_BODY_BYTES`: largest webhook body (receiver only; default 4 MiB).
    pub max_body_bytes: usize,
    /// `OUTBOUND_QUEUE_URL`: jobs for reply-sender (router, inbox API, reply-sender).
    pub outbound_queue_url: Option<String>,
    /// `OUTBOUND_DLQ_URL`: where reply-sender puts jobs it gives up on.
    pub outbound_dlq_url: Option<String>,
    /// `SENDER_CONCURRENCY`: reply-sender's reserved concurrency (default 1); each instance
    /// sends at its share of a channel's rate.
    pub sender_concurrency: u32,
    /// `KEYS_TABLE`: the wrapped data keys (no backups, see `docs/privacy.md`).
    pub keys_table: Option<String>,
    /// `RELAY_KMS_KEY_ID`: the CMK that wraps data keys.
    pub kms_key_id: Option<String>,
    /// `AUDIT_TABLE`: the audit log (inbox-api).
    pub audit_table: Option<String>,
    /// `AUDIT_RETENTION_DAYS`: how long audit entries are kept (default 365).
    pub audit_retention_days: u32,
    /// `MEDIA_BUCKET`: sealed media files (reply-sender writes, inbox-api reads and erases).
    pub media_bucket: Option<String>,
    /// `MAX_MEDIA_BYTES`: the largest file reply-sender fetches (default 100 MB).
    pub max_media_bytes: u64,
    /// `MEDIA_RESPONSE_MAX_BYTES`: the largest file inbox-api returns in one response
    /// (default 5,000,000: Lambda's synchronous response limit is 6 MB).
    pub media_response_max_bytes: u64,
    /// `MEDIA_UPLOAD_MAX_BYTES`: the largest file inbox-api and the web inbox take as an upload
    /// (default [`DEFAULT_MEDIA_UPLOAD_MAX_BYTES`]).
    pub media_upload_max_bytes: usize,
}

/// What a file uploaded to a Lambda function can weigh: a synchronous request carries at most
/// 6 MB (6,291,456 bytes), and the HTTP API hands a binary body over base64-encoded (4 bytes
/// for 3) inside the event's JSON with its headers — 4,718,592 bytes of file before headers.
pub const DEFAULT_MEDIA_UPLOAD_MAX_BYTES: usize = 4_500_000;

use relay_core::config::DEFAULT_AUDIT_RETENTION_DAYS;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {0} is not a valid number")]
    NotANumber(&'static str),
}

/// The environment each Lambda function requires (checked at start; `template.yaml` must set
/// them, which a test checks).
pub const FUNCTION_ENV: &[(&str, &[&str])] = &[
    (
        "webhook-receiver",
        &[
            "RELAY_TABLE",
            "INBOUND_QUEUE_URL",
            "KEYS_TABLE",
            "RELAY_KMS_KEY_ID",
        ],
    ),
    (
        "message-router",
        &[
            "RELAY_TABLE",
            "OUTBOUND_QUEUE_URL",
            "KEYS_TABLE",
            "RELAY_KMS_KEY_ID",
        ],
    ),
    (
        "reply-sender",
        &[
            "RELAY_TABLE",
            "OUTBOUND_QUEUE_URL",
            "OUTBOUND_DLQ_URL",
            "KEYS_TABLE",
            "RELAY_KMS_KEY_ID",
            "MEDIA_BUCKET",
        ],
    ),
    (
        "inbox-api",
        &[
            "RELAY_TABLE",
            "OUTBOUND_QUEUE_URL",
            "KEYS_TABLE",
            "RELAY_KMS_KEY_ID",
            "AUDIT_TABLE",
            "MEDIA_BUCKET",
        ],
    ),
];

/// Optional settings (with defaults) a function reads.
pub const FUNCTION_OPTIONAL_ENV: &[(&str, &[&str])] = &[
    ("webhook-receiver", &["MAX_BODY_BYTES", "RUST_LOG"]),
    ("message-router", &["RUST_LOG"]),
    (
        "reply-sender",
        &["SENDER_CONCURRENCY", "MAX_MEDIA_BYTES", "RUST_LOG"],
    ),
    (
        "inbox-api",
        &[
            "AUDIT_RETENTION_DAYS",
            "MEDIA_RESPONSE_MAX_BYTES",
            "MEDIA_UPLOAD_MAX_BYTES",
            "RUST_LOG",
        ],
    ),
];

impl Settings {
    /// The settings of one function, failing fast if any variable it needs is missing.
    pub fn for_function(name: &str) -> Result<Self, SettingsError> {
        Self::for_function_from(name, &|k| std::env::var(k).ok())
    }

    pub fn for_function_from(
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let required = FUNCTION_ENV
            .iter()
            .find(|(f, _)| *f == name)
            .map(|(_, vars)| *vars)
            .unwrap_or_default();
        for var in required {
            if env(var).filter(|v| !v.is_empty()).is_none() {
                return Err(SettingsError::Missing(var));
            }
        }
        Self::from_lookup(env)
    }

    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let table = env("RELAY_TABLE")
            .filter(|s| !s.is_empty())
            .ok_or(SettingsError::Missing("RELAY_TABLE"))?;
        let max_body_bytes = match env("MAX_BODY_BYTES") {
            None => relay_core::config::DEFAULT_MAX_BODY_BYTES,
            Some(v) => v
                .parse()
                .map_err(|_| SettingsError::NotANumber("MAX_BODY_BYTES"))?,
        };
        Ok(Settings {
            table,
            inbound_queue_url: env("INBOUND_QUEUE_URL").filter(|s| !s.is_empty()),
            max_body_bytes,
            outbound_queue_url: env("OUTBOUND_QUEUE_URL").filter(|s| !s.is_empty()),
            outbound_dlq_url: env("OUTBOUND_DLQ_URL").filter(|s| !s.is_empty()),
            sender_concurrency: match env("SENDER_CONCURRENCY") {
                None => 1,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(SettingsError::NotANumber("SENDER_CONCURRENCY"))?,
            },
            keys_table: env("KEYS_TABLE").filter(|s| !s.is_empty()),
            kms_key_id: env("RELAY_KMS_KEY_ID").filter(|s| !s.is_empty()),
            audit_table: env("AUDIT_TABLE").filter(|s| !s.is_empty()),
            media_bucket: env("MEDIA_BUCKET").filter(|s| !s.is_empty()),
            max_media_bytes: match env("MAX_MEDIA_BYTES") {
                None => relay_core::media::DEFAULT_MAX_MEDIA_BYTES,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(SettingsError::NotANumber("MAX_MEDIA_BYTES"))?,
            },
            media_response_max_bytes: match env("MEDIA_RESPONSE_MAX_BYTES") {
                None => 5_000_000,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(SettingsError::NotANumber("MEDIA_RESPONSE_MAX_BYTES"))?,
            },
            media_upload_max_bytes: match env("MEDIA_UPLOAD_MAX_BYTES") {
                None => DEFAULT_MEDIA_UPLOAD_MAX_BYTES,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(SettingsError::NotANumber("MEDIA_UPLOAD_MAX_BYTES"))?,
            },
            audit_retention_days: match env("AUDIT_RETENTION_DAYS") {
                None => DEFAULT_AUDIT_RETENTION_DAYS,
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(SettingsError::NotANumber("AUDIT_RETENTION_DAYS"))?,
            },
        })
    }

    /// The keyring of personal-data keys (`KEYS_TABLE`, `RELAY_KMS_KEY_ID`).
    pub fn keyring(
        &self,
        clients: &crate::Clients,
        clock: relay_core::Clock,
    ) -> Result<std::sync::Arc<relay_core::crypto::Keyring>, SettingsError> {
        let table = self
            .keys_table
            .as_deref()
            .ok_or(SettingsError::Missing("KEYS_TABLE"))?;
        let key = self
            .kms_key_id
            .as_deref()
            .ok_or(SettingsError::Missing("RELAY_KMS_KEY_ID"))?;
        Ok(std::sync::Arc::new(clients.keyring(table, key, clock)))
    }

    pub fn require_media_bucket(&self) -> Result<&str, SettingsError> {
        self.media_bucket
            .as_deref()
            .ok_or(SettingsError::Missing("MEDIA_BUCKET"))
    }

    pub fn require_audit_table(&self) -> Result<&str, SettingsError> {
        self.audit_table
            .as_deref()
            .ok_or(SettingsError::Missing("AUDIT_TABLE"))
    }

    pub fn require_outbound_queue(&self) -> Result<&str, SettingsError> {
        self.outbound_queue_url
            .as_deref()
            .ok_or(SettingsError::Missing("OUTBOUND_QUEUE_URL"))
    }

    pub fn require_inbound_queue(&self) -> Result<&str, SettingsError> {
        self.inbound_queue_url
            .as_deref()
            .ok_or(SettingsError::Missing("INBOUND_QUEUE_URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_function_fails_fast_without_its_variables() {
        let none = |_: &str| None;
        assert!(matches!(
            Settings::for_function_from("reply-sender", &none),
            Err(SettingsError::Missing("RELAY_TABLE"))
        ));
        let partial = |k: &str| {
            [
                "RELAY_TABLE",
                "OUTBOUND_QUEUE_URL",
                "KEYS_TABLE",
                "RELAY_KMS_KEY_ID",
                "AUDIT_TABLE",
                "MEDIA_BUCKET",
            ]
            .contains(&k)
            .then(|| "x".to_owned())
        };
        assert!(matches!(
            Settings::for_function_from("reply-sender", &partial),
            Err(SettingsError::Missing("OUTBOUND_DLQ_URL"))
        ));
        assert!(Settings::for_function_from("inbox-api", &partial).is_ok());
        let no_audit = |k: &str| (k != "AUDIT_TABLE").then(|| "x".to_owned());
        assert!(matches!(
            Settings::for_function_from("inbox-api", &no_audit),
            Err(SettingsError::Missing("AUDIT_TABLE"))
        ));
        let bad = |k: &str| match k {
            "RELAY_TABLE" | "INBOUND_QUEUE_URL" | "KEYS_TABLE" | "RELAY_KMS_KEY_ID" => {
                Some("x".to_owned())
            }
            "MAX_BODY_BYTES" => Some("lots".to_owned()),
            _ => None,
        };
        assert!(matches!(
            Settings::for_function_from("webhook-receiver", &bad),
            Err(SettingsError::NotANumber("MAX_BODY_BYTES"))
        ));
    }
}
