//! Tenants (pharmacies), their WhatsApp channels, and how a webhook proves it comes from the
//! channel's provider. Pure functions: no I/O.

use crate::ids::{TenantId, secret_digest};
use crate::policy::TenantPolicy;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const DEFAULT_RETENTION_DAYS: u32 = 30;

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub retention_days: u32,
    pub forward_url: Option<String>,
    pub forward_secret: Option<SecretString>,
    pub policy: TenantPolicy,
}

impl Tenant {
    pub fn retention_secs(&self) -> i64 {
        i64::from(self.retention_days) * 86_400
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Dialog360,
    Meta,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Dialog360 => "360dialog",
            Provider::Meta => "meta",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "360dialog" => Some(Provider::Dialog360),
            "meta" => Some(Provider::Meta),
            _ => None,
        }
    }
}

/// What a webhook must present for a channel.
#[derive(Debug, Clone)]
pub enum WebhookAuth {
    /// 360dialog sends the custom header configured on its webhook: `Authorization: Bearer <token>`.
    /// Only the token's SHA-256 is kept. When a signing secret is set, `x-360dialog-signature`
    /// (HMAC-SHA256 of the raw body, hex) is required as well.
    Dialog360 {
        token_sha256: [u8; 32],
        signing_secret: Option<SecretString>,
    },
    /// Meta Cloud API directly: `X-Hub-Signature-256: sha256=<hex>` with the app secret, and the
    /// `hub.verify_token` handshake on GET.
    Meta {
        app_secret: SecretString,
        verify_token: SecretString,
    },
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub phone_number_id: String,
    pub tenant_id: TenantId,
    pub auth: WebhookAuth,
    /// 360dialog `D360-API-KEY` or Meta access token, for sending (outbound issue).
    pub send_key: Option<SecretString>,
    pub api_base_url: Option<String>,
    /// Messages per second this channel may send (WhatsApp's default throughput is 80/s).
    pub send_rate_per_second: u32,
    /// Meta direct: the app whose callback URL receives this number's webhooks (then `auth`
    /// holds that app's secret), and the WhatsApp Business Account the number belongs to.
    pub meta_app: Option<String>,
    pub waba_id: Option<String>,
}

/// A Meta app, configured once: Meta posts the webhooks of all its numbers (and the
/// template and account webhooks of their business accounts) to the app's one callback URL,
/// signed with the app secret.
#[derive(Debug, Clone)]
pub struct MetaApp {
    pub id: String,
    pub app_secret: SecretString,
    pub verify_token: SecretString,
}

impl MetaApp {
    /// What a webhook to the app's URL must present.
    pub fn auth(&self) -> WebhookAuth {
        WebhookAuth::Meta {
            app_secret: self.app_secret.clone(),
            verify_token: self.verify_token.clone(),
        }
    }
}

pub const DEFAULT_SEND_RATE: u32 = 80;

impl Channel {
    pub fn provider(&self) -> Provider {
        match self.auth {
            WebhookAuth::Dialog360 { .. } => Provider::Dialog360,
            WebhookAuth::Meta { .. } => Provider::Meta,
        }
    }
}

/// The headers the receiver hands to [`WebhookAuth::verify`]; all optional.
#[derive(Debug, Default, Clone, Copy)]
pub struct AuthHeaders<'a> {
    pub authorization: Option<&'a [u8]>,
    pub dialog360_signature: Option<&'a [u8]>,
    pub hub_signature_256: Option<&'a [u8]>,
}

impl WebhookAuth {
    /// Constant-time check of a webhook request. The answer is a bare yes/no on purpose: the
    /// caller answers every failure the same way.
    pub fn verify(&self, headers: &AuthHeaders<'_>, body: &[u8]) -> bool {
        match self {
            WebhookAuth::Dialog360 {
                token_sha256,
                signing_secret,
            } => {
                let Some(token) = headers.authorization.and_then(bearer_token) else {
                    return false;
                };
                let presented = sha256_bytes(token);
                if !bool::from(presented.ct_eq(token_sha256)) {
                    return false;
                }
                match signing_secret {
                    None => true,
                    Some(secret) => headers.dialog360_signature.is_some_and(|sig| {
                        verify_hmac_hex(secret.expose_secret().as_bytes(), body, sig)
                    }),
                }
            }
            WebhookAuth::Meta { app_secret, .. } => headers.hub_signature_256.is_some_and(|sig| {
                verify_hmac_hex(app_secret.expose_secret().as_bytes(), body, sig)
            }),
        }
    }

    /// Meta's subscription handshake: the challenge to echo, when mode and token match.
    pub fn verify_subscription<'a>(
        &self,
        mode: Option<&str>,
        token: Option<&str>,
        challenge: Option<&'a str>,
    ) -> Option<&'a str> {
        let WebhookAuth::Meta { verify_token, .. } = self else {
            return None;
        };
        if mode != Some("subscribe") {
            return None;
        }
        let token = token?;
        let ok: bool = secret_digest(token)
            .ct_eq(&secret_digest(verify_token.expose_secret()))
            .into();
        if ok { challenge } else { None }
    }
}

fn sha256_bytes(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(b).into()
}

/// `Bearer <token>` (scheme case-insensitive, as RFC 9110 says).
pub fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// HMAC-SHA256 over the raw body, given as hex with an optional `sha256=` prefix.
pub fn verify_hmac_hex(secret: &[u8], body: &[u8], header: &[u8]) -> bool {
    let hex_part = header.trim_ascii();
    let hex_part = hex_part.strip_prefix(b"sha256=").unwrap_or(hex_part);
    let Ok(expected) = hex::decode(hex_part) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The `sha256=<hex>` signature Meta would send; for tests, tools and the fake provider.
pub fn sign_hub_signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d360(token: &str, signing: Option<&str>) -> WebhookAuth {
        WebhookAuth::Dialog360 {
            token_sha256: secret_digest(token),
            signing_secret: signing.map(|s| SecretString::from(s.to_owned())),
        }
    }

    fn headers<'a>(
        auth: Option<&'a str>,
        d: Option<&'a str>,
        hub: Option<&'a str>,
    ) -> AuthHeaders<'a> {
        AuthHeaders {
            authorization: auth.map(str::as_bytes),
            dialog360_signature: d.map(str::as_bytes),
            hub_signature_256: hub.map(str::as_bytes),
        }
    }

    #[test]
    fn dialog360_bearer() {
        let a = d360("tok-123", None);
        assert!(a.verify(&headers(Some("Bearer tok-123"), None, None), b"{}"));
        assert!(a.verify(&headers(Some("bearer  tok-123 "), None, None), b"{}"));
        assert!(!a.verify(&headers(Some("Bearer tok-124"), None, None), b"{}"));
        assert!(!a.verify(&headers(Some("Basic tok-123"), None, None), b"{}"));
        assert!(!a.verify(&headers(Some("Bearer "), None, None), b"{}"));
        assert!(!a.verify(&headers(None, None, None), b"{}"));
    }

    #[test]
    fn dialog360_signature_when_configured() {
        let a = d360("tok", Some("sig-secret"));
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = sign_hub_signature(b"sig-secret", body);
        let bare = sig.trim_start_matches("sha256=").to_owned();
        assert!(a.verify(&headers(Some("Bearer tok"), Some(&sig), None), body));
        assert!(a.verify(&headers(Some("Bearer tok"), Some(&bare), None), body));
        assert!(!a.verify(&headers(Some("Bearer tok"), None, None), body));
        assert!(!a.verify(&headers(Some("Bearer tok"), Some(&sig), None), b"{}"));
        assert!(!a.verify(&headers(Some("Bearer nope"), Some(&sig), None), body));
    }

    #[test]
    fn meta_signature_over_raw_bytes() {
        let a = WebhookAuth::Meta {
            app_secret: SecretString::from("app-secret".to_owned()),
            verify_token: SecretString::from("vt".to_owned()),
        };
        let body = b"{ \"object\" : \"whatsapp_business_account\" }";
        let sig = sign_hub_signature(b"app-secret", body);
        assert!(a.verify(&headers(None, None, Some(&sig)), body));
        // Same JSON, other bytes: must fail (hash the raw body, never re-serialised JSON).
        assert!(!a.verify(
            &headers(None, None, Some(&sig)),
            b"{\"object\":\"whatsapp_business_account\"}"
        ));
        assert!(!a.verify(&headers(None, None, Some("sha256=zz")), body));
        assert!(!a.verify(&headers(Some("Bearer app-secret"), None, None), body));
    }

    #[test]
    fn meta_subscription_handshake() {
        let a = WebhookAuth::Meta {
            app_secret: SecretString::from("s".to_owned()),
            verify_token: SecretString::from("vt".to_owned()),
        };
        assert_eq!(
            a.verify_subscription(Some("subscribe"), Some("vt"), Some("123")),
            Some("123")
        );
        assert_eq!(
            a.verify_subscription(Some("subscribe"), Some("vx"), Some("123")),
            None
        );
        assert_eq!(
            a.verify_subscription(Some("unsubscribe"), Some("vt"), Some("123")),
            None
        );
        assert_eq!(
            d360("vt", None).verify_subscription(Some("subscribe"), Some("vt"), Some("1")),
            None
        );
    }
}
