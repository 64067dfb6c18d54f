//! `relay.toml`: the tenants, their channels and the local server. The field names are a
//! contract with users and scripts; add fields, never rename them.
//!
//! Secret values may be written as `"${ENV_VAR}"`. Every error names the field it is about.

use crate::ids::{TenantId, secret_digest};
use crate::policy::{BusinessHours, OptOutPolicy, TIMEZONE, TenantPolicy};
use crate::tenant::{
    Channel, DEFAULT_RETENTION_DAYS, DEFAULT_SEND_RATE, MetaApp, Provider, Tenant, WebhookAuth,
};
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::HashSet;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = ".relay";
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The built-in demo, used by `relay serve` when there is no `relay.toml`.
pub const DEMO_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"
data_dir = ".relay"

[[tenants]]
id = "demo-apotheke"
name = "Demo-Apotheke"
api_keys = ["sk_demo_change_me"]
retention_days = 30

[[tenants.channels]]
phone_number_id = "106540352242922"
provider = "360dialog"
webhook_token = "demo-webhook-token"
api_key = "demo-360dialog-key"
"#;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    /// Largest webhook body accepted (bytes); 413 above.
    pub max_body_bytes: Option<usize>,
    /// How long audit log entries are kept (days; default 365).
    pub audit_retention_days: Option<u32>,
    /// The largest media file fetched (bytes; default 100 MB).
    pub max_media_bytes: Option<u64>,
    /// `relay serve`: how long a client may take to send a request's head, and how long a
    /// kept-alive connection may sit idle before its next one (seconds; default 10).
    pub header_read_timeout_secs: Option<u64>,
    /// `relay serve`: how long one request may take, body included (seconds; default 60):
    /// 408 after that.
    pub request_timeout_secs: Option<u64>,
    /// `relay serve`: open connections at most; more wait to be accepted (default 1024).
    pub max_connections: Option<usize>,
    /// `relay serve`: on SIGTERM, how long in-flight requests and jobs may finish before what
    /// is left is closed (seconds; default 10, below systemd's 90 s stop timeout).
    pub shutdown_grace_secs: Option<u64>,
    /// `relay serve`: `GET /metrics` (Prometheus) answers scrapes with this bearer token
    /// (a literal or `${ENV_VAR}`); without it there is no metrics route. Read it through
    /// [`RelayConfig::metrics_token`].
    pub metrics_token: Option<String>,
    /// `relay serve`: the rolling key backup's directory (best on another disk or host);
    /// `relay backup` writes it, erasure deletes a contact's key from it too.
    pub key_backup_dir: Option<String>,
    /// `relay serve` over HTTPS: certificate and key files, reloaded when they change.
    pub tls: Option<TlsSection>,
    /// Reverse proxies (IP addresses) whose `X-Forwarded-For` and `X-Forwarded-Proto` are
    /// believed: the web inbox's cookies and sign-in throttle use them. E.g. `["127.0.0.1"]`
    /// for Caddy on the same host. Nobody else's are.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The web inbox signs a staff member out after this many minutes without a page view
    /// or action (default 60).
    pub session_idle_minutes: Option<u32>,
}

/// `[server.tls]`: PEM files (e.g. certbot's `fullchain.pem` and `privkey.pem`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, leaf first.
    pub cert_file: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// How often the files are checked for a renewal (seconds; default 60).
    pub reload_secs: Option<u64>,
}

/// `relay serve`'s HTTP limits, with their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_read_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub max_connections: usize,
    pub shutdown_grace: std::time::Duration,
}

/// Default retention of the audit log.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 365;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub api_keys: Vec<String>,
    pub retention_days: Option<u32>,
    pub forward_url: Option<String>,
    pub forward_secret: Option<String>,
    /// Whether forwarded events include message text (default false: ids and types only).
    pub forward_content: Option<bool>,
    /// Whether ad referral data is stored with messages (default false: dropped).
    pub keep_referral: Option<bool>,
    /// Whether `prescription.received` forwards carry the E-Rezept tokens (default false).
    pub forward_prescriptions: Option<bool>,
    /// Days E-Rezept tokens are kept (default 7), at most the tenant's retention.
    pub prescription_retention_days: Option<u32>,
    /// Whether a photo or PDF is deleted once its E-Rezept codes are read (default false).
    pub delete_prescription_images_after_decode: Option<bool>,
    pub opt_out: Option<OptOutSection>,
    pub business_hours: Option<BusinessHoursSection>,
    /// Rates for the usage estimate (`GET /v1/usage`, `relay usage`); Germany by default.
    pub pricing: Option<PricingSection>,
    /// `[tenants.notifications.pickup_ready]`: the template of pickup-ready notices.
    pub notifications: Option<NotificationsSection>,
    #[serde(default)]
    pub channels: Vec<ChannelSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsSection {
    pub pickup_ready: Option<PickupReadySection>,
}

/// A utility template with neutral wording (no drug names: Meta's commerce policy, § 10 HWG).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickupReadySection {
    pub template: String,
    pub language: String,
    #[serde(default)]
    pub params: Vec<String>,
    pub remind_after_days: Option<u32>,
    pub reminder_template: Option<String>,
}

/// `[tenants.pricing]`: what WhatsApp charges per message, by category (`marketing`,
/// `utility`, `authentication`, `service`, …); categories not named keep the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingSection {
    pub currency: Option<String>,
    /// When the rates were taken (e.g. "2026-10-01"), and where from.
    pub as_of: Option<String>,
    pub source: Option<String>,
    #[serde(default)]
    pub rates: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptOutSection {
    pub keywords: Option<Vec<String>>,
    pub opt_in_keywords: Option<Vec<String>>,
    pub confirmation_text: Option<String>,
    pub opt_in_text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHoursSection {
    pub timezone: Option<String>,
    pub away_text: String,
    pub away_interval_hours: Option<u32>,
    #[serde(default)]
    pub closed_dates: Vec<String>,
    #[serde(default)]
    pub mon: Vec<String>,
    #[serde(default)]
    pub tue: Vec<String>,
    #[serde(default)]
    pub wed: Vec<String>,
    #[serde(default)]
    pub thu: Vec<String>,
    #[serde(default)]
    pub fri: Vec<String>,
    #[serde(default)]
    pub sat: Vec<String>,
    #[serde(default)]
    pub sun: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSection {
    pub phone_number_id: String,
    pub provider: String,
    /// Which 360dialog webhook feeds the channel: `"number"` (the number's own webhook, the
    /// default) or `"partner"` (the partner webhook, the only one 360dialog signs).
    pub webhook: Option<String>,
    pub webhook_token: Option<String>,
    pub signing_secret: Option<String>,
    pub api_key: Option<String>,
    pub api_base_url: Option<String>,
    pub app_secret: Option<String>,
    pub verify_token: Option<String>,
    pub access_token: Option<String>,
    pub send_rate_per_second: Option<u32>,
    /// Meta direct: the id of the `[[meta_apps]]` entry whose callback URL receives this
    /// number's webhooks (instead of `app_secret` and `verify_token` here).
    pub app: Option<String>,
    /// Meta direct: the WhatsApp Business Account the number belongs to (its template and
    /// account webhooks name only the account).
    pub waba_id: Option<String>,
}

/// `[[meta_apps]]`: a Meta app whose one callback URL (`/webhooks/meta/{id}`) receives the
/// webhooks of all its numbers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaAppSection {
    pub id: String,
    pub app_secret: String,
    pub verify_token: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    tenants: Vec<TenantSection>,
    #[serde(default)]
    meta_apps: Vec<MetaAppSection>,
}

/// A checked configuration: every tenant and channel is usable.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub server: ServerSection,
    pub tenants: Vec<TenantConfig>,
    /// Meta apps with an app-level webhook URL; their channels name them.
    pub meta_apps: Vec<MetaApp>,
    /// `server.metrics_token`, resolved.
    metrics_token: Option<SecretString>,
    /// Settings that work but are likely wrong (each names its field, never a value).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub tenant: Tenant,
    /// SHA-256 of each inbox API key; the keys themselves are not kept.
    pub api_key_digests: Vec<[u8; 32]>,
    pub channels: Vec<Channel>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(String),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl RelayConfig {
    /// Parses and checks a `relay.toml`, looking up `${VAR}` in `env`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let mut problems = Vec::new();
        let mut tenants = Vec::new();
        let mut seen_tenants = HashSet::new();
        let mut seen_channels = HashSet::new();
        let mut seen_keys = HashSet::new();

        if let Some(listen) = &raw.server.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(format!(
                "server.listen: {listen:?} is not an address like \"127.0.0.1:8080\""
            ));
        }
        if raw
            .server
            .audit_retention_days
            .is_some_and(|d| !(1..=3650).contains(&d))
        {
            problems.push("server.audit_retention_days: must be between 1 and 3650".to_owned());
        }
        for p in &raw.server.trusted_proxies {
            if p.parse::<std::net::IpAddr>().is_err() {
                problems.push(format!(
                    "server.trusted_proxies: {p:?} is not an IP address like \"127.0.0.1\""
                ));
            }
        }
        if raw
            .server
            .session_idle_minutes
            .is_some_and(|m| !(5..=1440).contains(&m))
        {
            problems.push("server.session_idle_minutes: must be between 5 and 1440".to_owned());
        }
        if raw.server.max_media_bytes == Some(0) {
            problems.push("server.max_media_bytes: must be greater than 0".to_owned());
        }
        if raw.server.max_body_bytes == Some(0) {
            problems.push("server.max_body_bytes: must be greater than 0".to_owned());
        }
        for (field, value, range) in [
            (
                "header_read_timeout_secs",
                raw.server.header_read_timeout_secs,
                1..=300,
            ),
            (
                "request_timeout_secs",
                raw.server.request_timeout_secs,
                1..=3600,
            ),
            (
                "shutdown_grace_secs",
                raw.server.shutdown_grace_secs,
                0..=300,
            ),
        ] {
            if value.is_some_and(|v| !range.contains(&v)) {
                problems.push(format!(
                    "server.{field}: must be between {} and {}",
                    range.start(),
                    range.end()
                ));
            }
        }
        if let Some(tls) = &raw.server.tls {
            if tls.reload_secs.is_some_and(|s| !(1..=86_400).contains(&s)) {
                problems.push("server.tls.reload_secs: must be between 1 and 86400".to_owned());
            }
            for (field, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if path.trim().is_empty() {
                    problems.push(format!("server.tls.{field}: must name a file"));
                }
            }
        }
        if raw
            .server
            .max_connections
            .is_some_and(|n| !(1..=100_000).contains(&n))
        {
            problems.push("server.max_connections: must be between 1 and 100000".to_owned());
        }

        let mut meta_apps: Vec<MetaApp> = Vec::new();
        for (ai, a) in raw.meta_apps.iter().enumerate() {
            let at = format!("meta_apps[{ai}]");
            if !is_numeric_id(&a.id) {
                problems.push(format!("{at}.id: must be the digits of the Meta app id"));
                continue;
            }
            if meta_apps.iter().any(|m| m.id == a.id) {
                problems.push(format!("{at}.id: app {} is defined twice", a.id));
            }
            let mut field = |name: &str, v: &str| match secret(&format!("{at}.{name}"), v, env) {
                Ok(s) if s.is_empty() => {
                    problems.push(format!("{at}.{name}: must not be empty"));
                    None
                }
                Ok(s) => Some(SecretString::from(s)),
                Err(p) => {
                    problems.push(p);
                    None
                }
            };
            let app_secret = field("app_secret", &a.app_secret);
            let verify_token = field("verify_token", &a.verify_token);
            if let (Some(app_secret), Some(verify_token)) = (app_secret, verify_token) {
                meta_apps.push(MetaApp {
                    id: a.id.clone(),
                    app_secret,
                    verify_token,
                });
            }
        }
        let mut warnings = Vec::new();
        let mut seen_wabas: std::collections::HashMap<String, (TenantId, Option<String>)> =
            std::collections::HashMap::new();

        for (ti, t) in raw.tenants.iter().enumerate() {
            let at = format!("tenants[{ti}]");
            let id = match TenantId::parse(&t.id) {
                Ok(id) => id,
                Err(e) => {
                    problems.push(format!("{at}.id: {e}"));
                    continue;
                }
            };
            if !seen_tenants.insert(id.clone()) {
                problems.push(format!("{at}.id: tenant {id} is defined twice"));
            }
            if t.name.trim().is_empty() {
                problems.push(format!("{at}.name: must not be empty"));
            }
            let retention_days = t.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
            if !(1..=3650).contains(&retention_days) {
                problems.push(format!("{at}.retention_days: must be between 1 and 3650"));
            }
            let mut api_key_digests = Vec::new();
            for (ki, key) in t.api_keys.iter().enumerate() {
                let field = format!("{at}.api_keys[{ki}]");
                match secret(&field, key, env) {
                    Ok(k) if k.len() < 16 => {
                        problems.push(format!("{field}: must be at least 16 characters"))
                    }
                    Ok(k) => {
                        let d = secret_digest(&k);
                        if !seen_keys.insert(d) {
                            problems.push(format!("{field}: the same API key is used twice"));
                        }
                        api_key_digests.push(d);
                    }
                    Err(p) => problems.push(p),
                }
            }
            if let Some(url) = &t.forward_url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                problems.push(format!("{at}.forward_url: must be an http(s) URL"));
            }
            let policy = policy(&at, t, &mut problems);
            let forward_secret = opt_secret(
                &format!("{at}.forward_secret"),
                &t.forward_secret,
                env,
                &mut problems,
            );
            if let Some(secret) = &forward_secret
                && crate::jobs::webhook_secret_key(secrecy::ExposeSecret::expose_secret(secret))
                    .is_err()
            {
                problems.push(format!(
                    "{at}.forward_secret: must be \"whsec_\" followed by base64 (at least 16 bytes)"
                ));
            }
            if t.forward_url.is_some() != forward_secret.is_some() {
                problems.push(format!(
                    "{at}.forward_url: forward_url and forward_secret go together"
                ));
            }

            let mut channels = Vec::new();
            for (ci, c) in t.channels.iter().enumerate() {
                let at = format!("{at}.channels[{ci}]");
                let partner = match c.webhook.as_deref() {
                    None | Some("number") => false,
                    Some("partner") => true,
                    Some(_) => {
                        problems.push(format!("{at}.webhook: must be \"number\" or \"partner\""));
                        false
                    }
                };
                // 360dialog signs only the partner webhook: on a number's own webhook a
                // required signature never comes, every webhook is refused, and
                // 360dialog's retries end with the messages lost.
                if c.provider == "360dialog" && c.signing_secret.is_some() && !partner {
                    problems.push(format!(
                        "{at}.signing_secret: 360dialog signs (x-360dialog-signature) only the partner webhook, not a number's own: with it every webhook of this number would be refused and lost. Remove it, or set webhook = \"partner\" if the partner webhook feeds this channel"
                    ));
                }
                if c.phone_number_id.is_empty()
                    || !c.phone_number_id.bytes().all(|b| b.is_ascii_digit())
                {
                    problems.push(format!(
                        "{at}.phone_number_id: must be the digits of the phone number id"
                    ));
                    continue;
                }
                if !seen_channels.insert(c.phone_number_id.clone()) {
                    problems.push(format!("{at}.phone_number_id: channel is defined twice"));
                }
                let mut need = |field: &str, v: &Option<String>| -> Option<SecretString> {
                    let name = format!("{at}.{field}");
                    match v {
                        None => {
                            problems
                                .push(format!("{name}: required when provider = {:?}", c.provider));
                            None
                        }
                        Some(v) => match secret(&name, v, env) {
                            Ok(s) if s.is_empty() => {
                                problems.push(format!("{name}: must not be empty"));
                                None
                            }
                            Ok(s) => Some(SecretString::from(s)),
                            Err(p) => {
                                problems.push(p);
                                None
                            }
                        },
                    }
                };
                let (auth, send_key) = match Provider::parse(&c.provider) {
                    Some(Provider::Dialog360) => {
                        let token = need("webhook_token", &c.webhook_token);
                        if token
                            .as_ref()
                            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t).contains('_'))
                        {
                            warnings.push(format!(
                                "{at}.webhook_token: contains \"_\", which 360dialog refuses in webhook URLs and headers; registering the webhook with it fails. Choose a token of letters, digits and \"-\""
                            ));
                        }
                        let signing = match &c.signing_secret {
                            Some(_) => need("signing_secret", &c.signing_secret),
                            None => None,
                        };
                        let key = c.api_key.as_ref().and_then(|_| need("api_key", &c.api_key));
                        (
                            token.map(|t| WebhookAuth::Dialog360 {
                                token_sha256: secret_digest(secrecy::ExposeSecret::expose_secret(
                                    &t,
                                )),
                                signing_secret: signing,
                            }),
                            key,
                        )
                    }
                    Some(Provider::Meta) if c.app.is_some() => {
                        let token = c
                            .access_token
                            .as_ref()
                            .and_then(|_| need("access_token", &c.access_token));
                        let app = c.app.as_deref().unwrap_or_default();
                        let auth = meta_apps.iter().find(|m| m.id == app).map(MetaApp::auth);
                        if auth.is_none() {
                            problems
                                .push(format!("{at}.app: no [[meta_apps]] entry has id {app:?}"));
                        }
                        for (field, v) in [
                            ("app_secret", &c.app_secret),
                            ("verify_token", &c.verify_token),
                        ] {
                            if v.is_some() {
                                problems.push(format!(
                                    "{at}.{field}: a channel of a Meta app takes the app's; remove it here"
                                ));
                            }
                        }
                        if c.waba_id.is_none() {
                            problems.push(format!(
                                "{at}.waba_id: required with app (the account's template and account webhooks name only it)"
                            ));
                        }
                        (auth, token)
                    }
                    Some(Provider::Meta) => {
                        let app_secret = need("app_secret", &c.app_secret);
                        let verify_token = need("verify_token", &c.verify_token);
                        let token = c
                            .access_token
                            .as_ref()
                            .and_then(|_| need("access_token", &c.access_token));
                        (
                            app_secret
                                .zip(verify_token)
                                .map(|(app_secret, verify_token)| WebhookAuth::Meta {
                                    app_secret,
                                    verify_token,
                                }),
                            token,
                        )
                    }
                    None => {
                        problems.push(format!(
                            "{at}.provider: {:?} is not \"360dialog\" or \"meta\"",
                            c.provider
                        ));
                        (None, None)
                    }
                };
                if c.send_rate_per_second == Some(0)
                    || c.send_rate_per_second.is_some_and(|r| r > 1000)
                {
                    problems.push(format!(
                        "{at}.send_rate_per_second: must be between 1 and 1000"
                    ));
                }
                if let Some(url) = &c.api_base_url
                    && !(url.starts_with("https://") || url.starts_with("http://"))
                {
                    problems.push(format!("{at}.api_base_url: must be an http(s) URL"));
                }
                if c.provider != "meta" {
                    for (field, v) in [("app", &c.app), ("waba_id", &c.waba_id)] {
                        if v.is_some() {
                            problems.push(format!("{at}.{field}: only for provider = \"meta\""));
                        }
                    }
                }
                if let Some(waba) = &c.waba_id {
                    if !is_numeric_id(waba) {
                        problems.push(format!(
                            "{at}.waba_id: must be the digits of the WhatsApp Business Account id"
                        ));
                    } else if let Some((owner, app)) = seen_wabas.get(waba) {
                        if *owner != id || *app != c.app {
                            problems.push(format!(
                                "{at}.waba_id: account {waba} already belongs to tenant {owner} (app {}); an account's numbers belong to one tenant and one app",
                                app.as_deref().unwrap_or("none")
                            ));
                        }
                    } else {
                        seen_wabas.insert(waba.clone(), (id.clone(), c.app.clone()));
                    }
                }
                if let Some(auth) = auth {
                    channels.push(Channel {
                        phone_number_id: c.phone_number_id.clone(),
                        tenant_id: id.clone(),
                        auth,
                        send_key,
                        api_base_url: c.api_base_url.clone(),
                        send_rate_per_second: c.send_rate_per_second.unwrap_or(DEFAULT_SEND_RATE),
                        meta_app: c.app.clone(),
                        waba_id: c.waba_id.clone(),
                    });
                }
            }
            tenants.push(TenantConfig {
                tenant: Tenant {
                    id,
                    name: t.name.clone(),
                    retention_days,
                    forward_url: t.forward_url.clone(),
                    forward_secret,
                    policy,
                },
                api_key_digests,
                channels,
            });
        }
        let metrics_token = opt_secret(
            "server.metrics_token",
            &raw.server.metrics_token,
            env,
            &mut problems,
        );
        if metrics_token
            .as_ref()
            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t).len() < 16)
        {
            problems.push("server.metrics_token: must be at least 16 characters".to_owned());
        }
        if problems.is_empty() {
            Ok(RelayConfig {
                server: raw.server,
                tenants,
                meta_apps,
                metrics_token,
                warnings,
            })
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn demo() -> Self {
        // The demo text is a constant checked by a unit test.
        Self::parse(DEMO_CONFIG, &|_| None).expect("built-in demo config is valid")
    }

    pub fn listen(&self) -> &str {
        self.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN)
    }

    pub fn data_dir(&self) -> &str {
        self.server.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)
    }

    pub fn max_body_bytes(&self) -> usize {
        self.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES)
    }

    pub fn max_media_bytes(&self) -> u64 {
        self.server
            .max_media_bytes
            .unwrap_or(crate::media::DEFAULT_MAX_MEDIA_BYTES)
    }

    pub fn audit_retention_days(&self) -> u32 {
        self.server
            .audit_retention_days
            .unwrap_or(DEFAULT_AUDIT_RETENTION_DAYS)
    }

    /// The bearer token of `GET /metrics` (none: no metrics route).
    pub fn metrics_token(&self) -> Option<&SecretString> {
        self.metrics_token.as_ref()
    }

    /// `server.trusted_proxies`, parsed (checked when the file was read).
    pub fn trusted_proxies(&self) -> Vec<std::net::IpAddr> {
        self.server
            .trusted_proxies
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The web inbox's idle timeout, in seconds.
    pub fn session_idle_secs(&self) -> i64 {
        i64::from(self.server.session_idle_minutes.unwrap_or(60)) * 60
    }

    pub fn http_limits(&self) -> HttpLimits {
        let secs = std::time::Duration::from_secs;
        let s = &self.server;
        HttpLimits {
            header_read_timeout: secs(s.header_read_timeout_secs.unwrap_or(10)),
            request_timeout: secs(s.request_timeout_secs.unwrap_or(60)),
            max_connections: s.max_connections.unwrap_or(1024),
            shutdown_grace: secs(s.shutdown_grace_secs.unwrap_or(10)),
        }
    }
}

fn policy(at: &str, t: &TenantSection, problems: &mut Vec<String>) -> TenantPolicy {
    let mut policy = TenantPolicy {
        forward_content: t.forward_content.unwrap_or(false),
        keep_referral: t.keep_referral.unwrap_or(false),
        forward_prescriptions: t.forward_prescriptions.unwrap_or(false),
        delete_prescription_images_after_decode: t
            .delete_prescription_images_after_decode
            .unwrap_or(false),
        ..TenantPolicy::default()
    };
    if let Some(p) = t
        .notifications
        .as_ref()
        .and_then(|n| n.pickup_ready.as_ref())
    {
        let at = format!("{at}.notifications.pickup_ready");
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 512
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !name_ok(&p.template) {
            problems.push(format!(
                "{at}.template: a template name (lowercase letters, digits, '_')"
            ));
        }
        if let Some(r) = &p.reminder_template
            && !name_ok(r)
        {
            problems.push(format!(
                "{at}.reminder_template: a template name (lowercase letters, digits, '_')"
            ));
        }
        if p.language.is_empty() || p.language.len() > 15 {
            problems.push(format!("{at}.language: a language code like \"de\""));
        }
        if p.remind_after_days.is_some_and(|d| d == 0 || d > 60) {
            problems.push(format!("{at}.remind_after_days: 1 to 60 days"));
        }
        if p.params.len() > 10 || p.params.iter().any(|s| s.is_empty() || s.len() > 200) {
            problems.push(format!(
                "{at}.params: up to 10 parameters of 1 to 200 characters"
            ));
        }
        policy.pickup_ready = Some(crate::notifications::PickupReadyPolicy {
            template: p.template.clone(),
            language: p.language.clone(),
            params: p.params.clone(),
            remind_after_days: p.remind_after_days,
            reminder_template: p.reminder_template.clone(),
        });
    }
    if let Some(days) = t.prescription_retention_days {
        if days == 0 || days > 3650 {
            problems.push(format!(
                "{at}.prescription_retention_days: must be 1 to 3650 days"
            ));
        }
        policy.prescription_retention_days = days.max(1);
    }
    if let Some(o) = &t.opt_out {
        let d = OptOutPolicy::default();
        policy.opt_out = OptOutPolicy {
            keywords: o.keywords.clone().unwrap_or(d.keywords),
            opt_in_keywords: o.opt_in_keywords.clone().unwrap_or(d.opt_in_keywords),
            confirmation_text: o.confirmation_text.clone().unwrap_or(d.confirmation_text),
            opt_in_text: o.opt_in_text.clone().unwrap_or(d.opt_in_text),
        };
        for (field, text) in [
            ("confirmation_text", &policy.opt_out.confirmation_text),
            ("opt_in_text", &policy.opt_out.opt_in_text),
        ] {
            if text.trim().is_empty() || text.chars().count() > 4096 {
                problems.push(format!(
                    "{at}.opt_out.{field}: must be 1 to 4096 characters"
                ));
            }
        }
    }
    if let Some(p) = &t.pricing {
        let at = format!("{at}.pricing");
        let rates = &mut policy.rates;
        if let Some(c) = &p.currency {
            if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
                rates.currency = c.clone();
            } else {
                problems.push(format!(
                    "{at}.currency: must be a currency code like \"EUR\""
                ));
            }
        }
        if let Some(d) = &p.as_of {
            if BusinessHours::valid_date(d) {
                rates.as_of = d.clone();
            } else {
                problems.push(format!(
                    "{at}.as_of: {d:?} is not a date like \"2026-10-01\""
                ));
            }
        }
        if let Some(s) = &p.source {
            rates.source = s.clone();
        }
        for (category, rate) in &p.rates {
            if !rate.is_finite() || !(0.0..=10.0).contains(rate) {
                problems.push(format!("{at}.rates.{category}: must be between 0 and 10"));
            } else if category.is_empty()
                || !category
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                problems.push(format!(
                    "{at}.rates: {category:?} is not a category like \"marketing\""
                ));
            } else {
                rates.per_category.insert(category.clone(), *rate);
            }
        }
    }
    if let Some(b) = &t.business_hours {
        let at = format!("{at}.business_hours");
        if b.timezone.as_deref().is_some_and(|tz| tz != TIMEZONE) {
            problems.push(format!("{at}.timezone: only {TIMEZONE:?} is supported"));
        }
        if b.away_text.trim().is_empty() || b.away_text.chars().count() > 4096 {
            problems.push(format!("{at}.away_text: must be 1 to 4096 characters"));
        }
        let interval = b
            .away_interval_hours
            .unwrap_or(crate::policy::DEFAULT_AWAY_INTERVAL_HOURS);
        if !(1..=720).contains(&interval) {
            problems.push(format!(
                "{at}.away_interval_hours: must be between 1 and 720"
            ));
        }
        let mut weekly: [Vec<(u16, u16)>; 7] = Default::default();
        for (i, (name, list)) in BusinessHours::day_names()
            .iter()
            .zip([&b.mon, &b.tue, &b.wed, &b.thu, &b.fri, &b.sat, &b.sun])
            .enumerate()
        {
            for (j, s) in list.iter().enumerate() {
                match BusinessHours::parse_interval(s) {
                    Ok(iv) => weekly[i].push(iv),
                    Err(e) => problems.push(format!("{at}.{name}[{j}]: {e}")),
                }
            }
        }
        for (j, d) in b.closed_dates.iter().enumerate() {
            if !BusinessHours::valid_date(d) {
                problems.push(format!(
                    "{at}.closed_dates[{j}]: {d:?} is not a date like \"2026-12-24\""
                ));
            }
        }
        policy.business_hours = Some(BusinessHours {
            weekly,
            closed_dates: b.closed_dates.clone(),
            away_text: b.away_text.clone(),
            away_interval_hours: interval,
        });
    }
    policy
}

fn is_numeric_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A secret field: either the literal value or `${VAR}` looked up in the environment.
fn secret(
    field: &str,
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(var) if !var.is_empty() => {
            env(var).ok_or_else(|| format!("{field}: environment variable {var} is not set"))
        }
        _ => Ok(value.to_owned()),
    }
}

fn opt_secret(
    field: &str,
    value: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<SecretString> {
    let v = value.as_ref()?;
    match secret(field, v, env) {
        Ok(s) => Some(SecretString::from(s)),
        Err(p) => {
            problems.push(p);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn err(text: &str) -> String {
        RelayConfig::parse(text, &no_env).unwrap_err().to_string()
    }

    #[test]
    fn demo_is_valid() {
        let c = RelayConfig::demo();
        assert_eq!(c.tenants.len(), 1);
        assert_eq!(c.listen(), "127.0.0.1:8080");
        assert_eq!(c.tenants[0].channels[0].phone_number_id, "106540352242922");
    }

    #[test]
    fn the_documented_example_parses_with_env_secrets() {
        let text = r#"
[server]
listen = "127.0.0.1:9090"
data_dir = "/tmp/x"

[[tenants]]
id = "apotheke-am-markt"
name = "Apotheke am Markt"
api_keys = ["${INBOX_KEY}"]
retention_days = 14
forward_url = "https://pms.example/hooks/whatsapp"
forward_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

[[tenants.channels]]
phone_number_id = "106540352242922"
provider = "360dialog"
webhook_token = "${WEBHOOK_TOKEN}"
api_key = "k"
api_base_url = "https://waba-sandbox.360dialog.io"

[[tenants.channels]]
phone_number_id = "106540352242923"
provider = "meta"
app_secret = "a"
verify_token = "v"
access_token = "t"
"#;
        let env = |k: &str| match k {
            "INBOX_KEY" => Some("sk_live_0123456789abcdef".to_owned()),
            "WEBHOOK_TOKEN" => Some("tok".to_owned()),
            _ => None,
        };
        let c = RelayConfig::parse(text, &env).unwrap();
        assert_eq!(c.listen(), "127.0.0.1:9090");
        let t = &c.tenants[0];
        assert_eq!(t.tenant.retention_days, 14);
        assert_eq!(
            t.api_key_digests,
            vec![secret_digest("sk_live_0123456789abcdef")]
        );
        assert!(
            matches!(&t.channels[0].auth, WebhookAuth::Dialog360 { token_sha256, .. } if *token_sha256 == secret_digest("tok"))
        );
        assert!(matches!(t.channels[1].auth, WebhookAuth::Meta { .. }));
    }

    #[test]
    fn errors_name_the_field() {
        let base = "[[tenants]]\nid = \"a\"\nname = \"A\"\n";
        assert!(
            err(&format!(
                "{base}[[tenants.channels]]\nphone_number_id = \"1\"\nprovider = \"360dialog\"\n"
            ))
            .contains("tenants[0].channels[0].webhook_token: required")
        );
        assert!(
            err(&format!(
                "{base}[[tenants.channels]]\nphone_number_id = \"1\"\nprovider = \"x\"\n"
            ))
            .contains("tenants[0].channels[0].provider")
        );
        assert!(err(&format!("{base}[[tenants.channels]]\nphone_number_id = \"1\"\nprovider = \"meta\"\napp_secret = \"${{NOPE}}\"\nverify_token = \"v\"\n"))
            .contains("tenants[0].channels[0].app_secret: environment variable NOPE is not set"));
        assert!(err("[[tenants]]\nid = \"Bad Id\"\nname = \"A\"\n").contains("tenants[0].id"));
        assert!(
            err(&format!("{base}api_keys = [\"short\"]\n"))
                .contains("tenants[0].api_keys[0]: must be at least 16")
        );
        assert!(err("[server]\nlisten = \"nope\"\n").contains("server.listen"));
        assert!(
            err("[server]\nheader_read_timeout_secs = 0\n")
                .contains("server.header_read_timeout_secs: must be between 1 and 300")
        );
        assert!(
            err("[server]\nmax_connections = 0\n")
                .contains("server.max_connections: must be between 1 and 100000")
        );
        assert!(
            err("[server]\nmetrics_token = \"short\"\n")
                .contains("server.metrics_token: must be at least 16")
        );
        // A signature 360dialog never sends on a number's own webhook would silence the number.
        let signed = format!(
            "{base}[[tenants.channels]]\nphone_number_id = \"1\"\nprovider = \"360dialog\"\nwebhook_token = \"t\"\nsigning_secret = \"s\"\n"
        );
        assert!(err(&signed).contains("tenants[0].channels[0].signing_secret: 360dialog signs"));
        assert!(
            RelayConfig::parse(
                &signed.replace("signing_secret", "webhook = \"partner\"\nsigning_secret"),
                &|_| None
            )
            .is_ok(),
            "fine on the partner webhook"
        );
        assert!(
            err(&signed.replace("signing_secret = \"s\"", "webhook = \"partnr\""))
                .contains("tenants[0].channels[0].webhook: must be")
        );
        // Typos are refused with the unknown key named.
        assert!(err(&format!("{base}retention_dayz = 3\n")).contains("retention_dayz"));
        assert!(err(&format!("{base}{base}")).contains("defined twice"));
    }

    #[test]
    fn meta_apps_are_configured_once_and_named_by_their_numbers() {
        let app = "[[meta_apps]]\nid = \"777\"\napp_secret = \"s\"\nverify_token = \"v\"\n";
        let channel = |tenant: &str, pnid: &str, extra: &str| {
            format!(
                "[[tenants]]\nid = \"{tenant}\"\nname = \"X\"\n[[tenants.channels]]\nphone_number_id = \"{pnid}\"\nprovider = \"meta\"\n{extra}"
            )
        };
        let ok = format!(
            "{}{}{app}",
            channel("a", "1", "app = \"777\"\nwaba_id = \"91\"\n"),
            channel("b", "2", "app = \"777\"\nwaba_id = \"92\"\n")
        );
        let c = RelayConfig::parse(&ok, &|_| None).unwrap();
        assert_eq!(c.meta_apps.len(), 1);
        let ch = &c.tenants[1].channels[0];
        assert_eq!(
            (ch.meta_app.as_deref(), ch.waba_id.as_deref()),
            (Some("777"), Some("92"))
        );
        // The channel takes the app's secret (its own URL keeps working).
        let body = b"{}";
        let sig = crate::tenant::sign_hub_signature(b"s", body);
        assert!(ch.auth.verify(
            &crate::tenant::AuthHeaders {
                hub_signature_256: Some(sig.as_bytes()),
                ..Default::default()
            },
            body
        ));
        for (text, says) in [
            (
                format!(
                    "{}{app}",
                    channel("a", "1", "app = \"778\"\nwaba_id = \"91\"\n")
                ),
                "tenants[0].channels[0].app: no [[meta_apps]] entry has id \"778\"",
            ),
            (
                format!("{}{app}", channel("a", "1", "app = \"777\"\n")),
                "tenants[0].channels[0].waba_id: required with app",
            ),
            (
                format!(
                    "{}{app}",
                    channel(
                        "a",
                        "1",
                        "app = \"777\"\nwaba_id = \"91\"\napp_secret = \"x\"\n"
                    )
                ),
                "tenants[0].channels[0].app_secret: a channel of a Meta app takes the app's",
            ),
            (
                format!(
                    "{}{}{app}",
                    channel("a", "1", "app = \"777\"\nwaba_id = \"91\"\n"),
                    channel("b", "2", "app = \"777\"\nwaba_id = \"91\"\n")
                ),
                "tenants[1].channels[0].waba_id: account 91 already belongs to tenant a",
            ),
            (
                format!("{app}{app}"),
                "meta_apps[1].id: app 777 is defined twice",
            ),
            (
                "[[meta_apps]]\nid = \"x7\"\napp_secret = \"s\"\nverify_token = \"v\"\n".to_owned(),
                "meta_apps[0].id: must be the digits",
            ),
        ] {
            let e = err(&text);
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn pricing_rates_default_to_germany_and_can_be_set_per_tenant() {
        let base = "[[tenants]]\nid = \"a\"\nname = \"A\"\n";
        let c = RelayConfig::parse(base, &|_| None).unwrap();
        let rates = &c.tenants[0].tenant.policy.rates;
        assert_eq!(rates.currency, "EUR");
        assert_eq!(rates.per_category.get("marketing"), Some(&0.1131));
        let set = format!(
            "{base}[tenants.pricing]\nas_of = \"2026-10-01\"\nsource = \"Rechnung Oktober\"\nrates = {{ utility = 0.05, marketing_lite = 0.08 }}\n"
        );
        let c = RelayConfig::parse(&set, &|_| None).unwrap();
        let rates = &c.tenants[0].tenant.policy.rates;
        assert_eq!(rates.per_category.get("utility"), Some(&0.05));
        assert_eq!(rates.per_category.get("marketing_lite"), Some(&0.08));
        assert_eq!(
            rates.per_category.get("marketing"),
            Some(&0.1131),
            "others keep the default"
        );
        assert_eq!(rates.as_of, "2026-10-01");
        for (text, says) in [
            (
                "rates = { utility = -1.0 }",
                "tenants[0].pricing.rates.utility: must be between 0 and 10",
            ),
            (
                "currency = \"euro\"",
                "tenants[0].pricing.currency: must be a currency code",
            ),
            ("as_of = \"Oktober\"", "tenants[0].pricing.as_of"),
            (
                "rates = { \"Marketing!\" = 0.1 }",
                "tenants[0].pricing.rates: \"Marketing!\"",
            ),
        ] {
            let e = err(&format!("{base}[tenants.pricing]\n{text}\n"));
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_webhook_token_360dialog_would_refuse_is_warned_about_without_its_value() {
        let text = "[[tenants]]\nid = \"a\"\nname = \"A\"\n[[tenants.channels]]\nphone_number_id = \"1\"\nprovider = \"360dialog\"\nwebhook_token = \"my_token_1\"\n";
        let c = RelayConfig::parse(text, &|_| None).unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].starts_with("tenants[0].channels[0].webhook_token: contains \"_\""));
        assert!(!c.warnings[0].contains("my_token_1"));
        let fine =
            RelayConfig::parse(&text.replace("my_token_1", "my-token-1"), &|_| None).unwrap();
        assert!(fine.warnings.is_empty());
    }
}
