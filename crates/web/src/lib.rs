//! The staff web inbox: the pharmacy's team signs in with personal accounts and answers its
//! customers in a browser. Server-rendered HTML (askama templates, escaped by default), one
//! small script of its own for live updates, no inline script (a strict CSP forbids it).
//!
//! It is a router beside the inbox API's and uses the same use cases (the reply rules and
//! read receipts of `relay_core::replies`, file serving of `relay_http::files`): `relay serve`
//! mounts it at `/`, and on AWS the inbox-api function serves it from the same binary.
//!
//! May depend on: relay-core (ports, use cases), relay-http; not on the inbox API's crate.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use relay_core::Clock;
use relay_core::backends::{Backends, Missing};
use relay_core::crypto::Keyring;
use relay_core::media::BlobStore;
use relay_core::ports::{AuditLog, Directory, OutboundQueue};
use relay_core::sealed::SealedStore;
use relay_core::staff::StaffStore;
use std::net::IpAddr;
use std::sync::Arc;

mod assets;
mod i18n;
mod pages;
mod session;
mod view;

pub use session::ClientAddr;

/// How the inbox runs here (from `[inbox]` of relay.toml, or the function's environment).
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// A session ends after this long without a page view or action (polling does not count).
    pub idle_timeout_secs: i64,
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (e.g. Caddy on
    /// 127.0.0.1). From anyone else these headers are ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// Every request reached the browser over HTTPS (relay serve's own TLS; API Gateway):
    /// cookies are always `Secure`.
    pub always_https: bool,
    /// How often an open page asks for news, in seconds.
    pub poll_secs: u32,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            idle_timeout_secs: 60 * 60,
            trusted_proxies: Vec::new(),
            always_https: false,
            poll_secs: 4,
        }
    }
}

#[derive(Clone)]
pub struct Web {
    pub directory: Arc<dyn Directory>,
    /// A sealing store: the pages show what it opens.
    pub store: Arc<SealedStore>,
    /// Where replies and read receipts go (reply-sender's queue).
    pub outbound: Arc<dyn OutboundQueue>,
    pub audit: Arc<dyn AuditLog>,
    pub audit_retention_secs: i64,
    pub blobs: Arc<dyn BlobStore>,
    pub keys: Arc<Keyring>,
    pub max_media_response_bytes: Option<u64>,
    /// The largest attachment this deployment takes (see the inbox API's).
    pub max_upload_bytes: Option<usize>,
    /// Export and erasure (admins only).
    pub privacy: relay_core::privacy::Privacy,
    /// Approved templates, offered when the window is closed.
    pub templates: Arc<dyn relay_core::templates::TemplateStore>,
    /// Stock answers for the composer (edited by admins).
    pub quick_replies: Arc<dyn relay_core::templates::QuickReplies>,
    /// What WhatsApp charges (admins see the month's counts and estimate).
    pub usage: Option<Arc<dyn relay_core::usage::UsageLedger>>,
    pub staff: Arc<dyn StaffStore>,
    pub clock: Clock,
    pub settings: Arc<WebSettings>,
}

impl Web {
    pub fn build(b: &Backends, settings: WebSettings) -> Result<Self, Missing> {
        Ok(Web {
            directory: b.directory.clone(),
            store: b.store.clone(),
            outbound: b.outbound()?,
            audit: b.audit()?,
            audit_retention_secs: b.limits.audit_retention_secs(),
            blobs: b.blobs()?,
            keys: b.keys.clone(),
            max_media_response_bytes: b.limits.max_media_response_bytes,
            max_upload_bytes: b.limits.max_upload_bytes,
            privacy: b.privacy()?,
            templates: b.templates()?,
            quick_replies: b.quick_replies()?,
            usage: b.usage.clone(),
            staff: b.staff()?,
            clock: b.clock.clone(),
            settings: Arc::new(settings),
        })
    }
}

/// Every route of the web inbox (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/lang/{lang}"),
    ("GET", "/inbox"),
    ("GET", "/inbox/list"),
    ("POST", "/inbox/search"),
    ("GET", "/inbox/c/{contact_id}"),
    ("GET", "/inbox/c/{contact_id}/messages"),
    ("POST", "/inbox/c/{contact_id}/reply"),
    ("POST", "/inbox/c/{contact_id}/read"),
    ("POST", "/inbox/c/{contact_id}/typing"),
    ("POST", "/inbox/c/{contact_id}/template"),
    ("POST", "/inbox/c/{contact_id}/attachment"),
    ("POST", "/inbox/c/{contact_id}/team"),
    ("POST", "/inbox/c/{contact_id}/notes"),
    ("GET", "/inbox/c/{contact_id}/export"),
    ("POST", "/inbox/c/{contact_id}/erase"),
    ("GET", "/inbox/media/{media_id}"),
    ("GET", "/inbox/quick-replies"),
    ("GET", "/inbox/usage"),
    ("POST", "/inbox/quick-replies"),
    ("POST", "/inbox/quick-replies/{id}/delete"),
    ("GET", "/assets/{file}"),
];

pub fn router(web: Web) -> Router {
    use pages::*;
    Router::new()
        .route("/", get(root))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/lang/{lang}", get(set_language))
        .route("/inbox", get(inbox_page))
        .route("/inbox/list", get(list_fragment))
        .route("/inbox/search", post(search))
        .route("/inbox/c/{contact_id}", get(conversation_page))
        .route("/inbox/c/{contact_id}/messages", get(messages_fragment))
        .route("/inbox/c/{contact_id}/reply", post(reply))
        .route("/inbox/c/{contact_id}/read", post(mark_read))
        .route("/inbox/c/{contact_id}/typing", post(typing))
        .route("/inbox/usage", get(usage_page))
        .route("/inbox/c/{contact_id}/template", post(send_template))
        .route(
            "/inbox/c/{contact_id}/attachment",
            post(send_attachment).layer(axum::extract::DefaultBodyLimit::max(
                MAX_ATTACHMENT_BYTES + 64 * 1024,
            )),
        )
        .route("/inbox/c/{contact_id}/team", post(set_team))
        .route("/inbox/c/{contact_id}/notes", post(add_note))
        .route("/inbox/c/{contact_id}/pickup", post(pickup_ready))
        .route(
            "/inbox/c/{contact_id}/pickup/{reference}/collected",
            post(pickup_collected),
        )
        .route("/inbox/c/{contact_id}/export", get(export_contact))
        .route("/inbox/c/{contact_id}/erase", post(erase_contact))
        .route("/inbox/media/{media_id}", get(media))
        .route(
            "/inbox/quick-replies",
            get(quick_replies_page).post(add_quick_reply),
        )
        .route("/inbox/quick-replies/{id}/delete", post(remove_quick_reply))
        .route("/assets/{file}", get(assets::asset))
        .layer(middleware::map_response(security_headers))
        .with_state(web)
}

/// The Content-Security-Policy of every page: scripts, styles and media from this origin only,
/// no inline script or style, no framing, forms post here only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
