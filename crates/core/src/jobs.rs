//! The outbound queue's messages (jobs for reply-sender, the egress function) and the
//! Standard Webhooks signature of forwarded events.

use crate::ids::{ContactId, TenantId};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Send a stored outbound message (by its row key) through the contact's channel.
    Send {
        tenant: TenantId,
        contact: ContactId,
        message_key: String,
        /// The confirmation of an opt-out or opt-in: the one message that still goes to a
        /// contact who opted out. Every other send to such a contact is refused at send time.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        consent_reply: bool,
    },
    /// Tell WhatsApp the customer's message (and those before it) was read.
    MarkRead {
        tenant: TenantId,
        contact: ContactId,
        wamid_key: String,
        /// With the typing indicator: someone at the pharmacy is writing the answer.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        typing: bool,
    },
    /// Fetch an inbound message's file from WhatsApp, check it, seal it into the blob store.
    FetchMedia {
        tenant: TenantId,
        contact: ContactId,
        message_key: String,
    },
    /// POST an event to the tenant's `forward_url`, signed (Standard Webhooks).
    Forward {
        tenant: TenantId,
        /// Stable across retries and duplicates: the receiver de-duplicates on it.
        webhook_id: String,
        /// When the event happened (Unix seconds); retries stop 24 h after it.
        created_at: i64,
        payload: Value,
    },
}

impl Job {
    /// The contact the job is about, where it names one.
    pub fn contact(&self) -> Option<&ContactId> {
        match self {
            Job::Send { contact, .. }
            | Job::MarkRead { contact, .. }
            | Job::FetchMedia { contact, .. } => Some(contact),
            Job::Forward { .. } => None,
        }
    }

    pub fn to_body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn tenant(&self) -> &TenantId {
        match self {
            Job::Send { tenant, .. }
            | Job::MarkRead { tenant, .. }
            | Job::FetchMedia { tenant, .. }
            | Job::Forward { tenant, .. } => tenant,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Job::Send { .. } => "send",
            Job::MarkRead { .. } => "mark_read",
            Job::FetchMedia { .. } => "fetch_media",
            Job::Forward { .. } => "forward",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a forward secret must be \"whsec_\" followed by base64")]
pub struct BadSecret;

/// The key bytes of a `whsec_…` secret.
pub fn webhook_secret_key(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let b64 = secret.strip_prefix("whsec_").ok_or(BadSecret)?;
    let key = STANDARD.decode(b64).map_err(|_| BadSecret)?;
    if key.len() < 16 {
        Err(BadSecret)
    } else {
        Ok(key)
    }
}

/// `webhook-signature` per the Standard Webhooks spec: `v1,` + base64(HMAC-SHA256(key,
/// "{id}.{timestamp}.{body}")).
pub fn sign_webhook(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, BadSecret> {
    let key = webhook_secret_key(secret)?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip() {
        let j = Job::Forward {
            tenant: TenantId::parse("a").unwrap(),
            webhook_id: "msg_1".into(),
            created_at: 5,
            payload: serde_json::json!({"type": "message.received"}),
        };
        assert_eq!(serde_json::from_str::<Job>(&j.to_body()).unwrap(), j);
        assert!(j.to_body().contains("\"job\":\"forward\""));
    }

    #[test]
    fn secrets_are_checked() {
        assert!(webhook_secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert_eq!(
            webhook_secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(BadSecret)
        );
        assert_eq!(webhook_secret_key("whsec_!!!"), Err(BadSecret));
        let s = sign_webhook(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b"{\"test\": 2432232314}",
        )
        .unwrap();
        // The example from the Standard Webhooks specification.
        assert_eq!(s, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
