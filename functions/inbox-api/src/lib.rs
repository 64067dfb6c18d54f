//! inbox-api: what the pharmacy's software calls. A bearer API key selects the tenant; a key
//! sees its own tenant's conversations only. Errors are RFC 9457 problems. The contract is
//! `openapi.json` beside this crate, tested against this router.
//!
//! Times are Unix seconds, as WhatsApp gives them.

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use relay_core::Clock;
use relay_core::ids::{ContactId, TenantId, secret_digest};
use relay_core::outbound::ReplyRequest;
use relay_core::ports::{AuditLog, Directory, OutboundQueue, StoreError};
use relay_core::privacy::Privacy;
use relay_core::records::AuditEntry;
use relay_core::records::IdempotencyRecord;
use relay_core::records::{Conversation, PageRequest, StoredMessage};
use relay_core::replies::{Refusal, ReplyCommand, ReplyPorts, queue_reply};
use relay_http::{ProblemResponse, bearer, detailed, problem};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

mod audit;
mod conversations;
mod media;
mod notifications;
mod privacy;
mod usage;
use audit::*;
use conversations::*;
pub use conversations::{message_json, refusal_problem};
use media::*;
use notifications::*;
use privacy::*;
pub use usage::usage_json;
use usage::*;

/// The 24-hour customer service window, from the customer's last message (the router's).
pub use relay_core::routing::SERVICE_WINDOW_SECS;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 200;

/// The largest file `POST /v1/media` takes: WhatsApp's limit for audio and video (16 MB;
/// images 5 MB, checked per type). On AWS the HTTP API's 10 MB request limit is lower.
pub const MAX_UPLOAD_BYTES: usize = 16 * 1024 * 1024;

/// Largest reply body accepted (a text of 4096 characters is at most 16 KiB of UTF-8).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct Inbox {
    pub directory: Arc<dyn Directory>,
    /// A sealing store ([`relay_core::sealed::SealedStore`]).
    pub store: Arc<relay_core::sealed::SealedStore>,
    /// Where replies and read receipts go (reply-sender's queue).
    pub outbound: Arc<dyn OutboundQueue>,
    /// Export and erasure.
    pub privacy: Privacy,
    pub audit: Arc<dyn AuditLog>,
    /// How long audit entries are kept, in seconds.
    pub audit_retention_secs: i64,
    /// Where files are (S3, or files under `data_dir`).
    pub blobs: Arc<dyn relay_core::media::BlobStore>,
    /// The largest file served in one response (Lambda's 6 MB response limit on AWS; none
    /// locally, where files stream).
    pub max_media_response_bytes: Option<u64>,
    /// The largest upload this deployment takes (what a Lambda request carries on AWS; none
    /// locally, where WhatsApp's limits per type apply alone).
    pub max_upload_bytes: Option<usize>,
    /// The tenants' templates (a template's category decides whether a customer who stopped
    /// marketing messages may get it).
    pub templates: Option<Arc<dyn relay_core::templates::TemplateStore>>,
    /// What WhatsApp charges, counted from status webhooks.
    pub usage: Option<Arc<dyn relay_core::usage::UsageLedger>>,
    pub clock: Clock,
}

impl Inbox {
    /// The inbox API of a process, from its backends.
    pub fn build(
        b: &relay_core::backends::Backends,
    ) -> Result<Self, relay_core::backends::Missing> {
        Ok(Inbox {
            directory: b.directory.clone(),
            store: b.store.clone(),
            outbound: b.outbound()?,
            privacy: b.privacy()?,
            audit: b.audit()?,
            audit_retention_secs: b.limits.audit_retention_secs(),
            blobs: b.blobs()?,
            max_media_response_bytes: b.limits.max_media_response_bytes,
            max_upload_bytes: b.limits.max_upload_bytes,
            templates: b.templates.clone(),
            usage: b.usage.clone(),
            clock: b.clock.clone(),
        })
    }
}

/// The routes, written once: [`ROUTES`] (what the OpenAPI test and the template test compare
/// against) and the router are both made from this list, so neither can have a route the
/// other lacks. `limit N` sets that route's body limit.
macro_rules! inbox_routes {
    ($( $method:ident $path:literal => $handler:ident $(limit $limit:expr)? ),* $(,)?) => {
        /// Every route this router serves (method, path).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn routes(router: Router<Inbox>) -> Router<Inbox> {
            router
                $(.route(
                    $path,
                    axum::routing::on(axum::routing::MethodFilter::$method, $handler)
                        $(.layer(DefaultBodyLimit::max($limit)))?,
                ))*
        }
    };
}

inbox_routes! {
    GET "/healthz" => healthz,
    GET "/v1/conversations" => list_conversations,
    GET "/v1/conversations/{contact_id}/messages" => list_messages,
    POST "/v1/conversations/{contact_id}/messages" => send_message limit MAX_REPLY_BYTES,
    POST "/v1/conversations/{contact_id}/read" => mark_read,
    GET "/v1/conversations/{contact_id}/notifications" => list_notifications,
    POST "/v1/conversations/{contact_id}/notifications" => notify limit 4096,
    POST "/v1/conversations/{contact_id}/notifications/{reference}/collected" => collected,
    GET "/v1/contacts/{contact_id}/export" => export_contact,
    DELETE "/v1/contacts/{contact_id}" => erase_contact,
    GET "/v1/media/{media_id}" => get_media,
    POST "/v1/media" => upload_media limit MAX_UPLOAD_BYTES,
    GET "/v1/usage" => get_usage,
}

pub fn router(state: Inbox) -> Router {
    routes(Router::new())
        .route_layer(middleware::from_fn_with_state(state.clone(), audited))
        .with_state(state)
}

/// What the inbox-api function serves: this API and the staff web inbox (`relay_web`), from
/// one set of backends. The Lambda main and the end-to-end tests use it.
pub fn function_router(
    b: &relay_core::backends::Backends,
    web: relay_web::WebSettings,
) -> Result<Router, relay_core::backends::Missing> {
    Ok(router(Inbox::build(b)?).merge(relay_web::router(relay_web::Web::build(b, web)?)))
}

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The tenant the request's API key belongs to.
pub struct Authenticated(pub TenantId);

impl FromRequestParts<Inbox> for Authenticated {
    type Rejection = ProblemResponse;

    async fn from_request_parts(parts: &mut Parts, state: &Inbox) -> Result<Self, Self::Rejection> {
        let unauthorized = || problem(401, "unauthorized", "Missing or invalid API key");
        let key = bearer(&parts.headers).ok_or_else(unauthorized)?;
        let digest = secret_digest(key);
        match state.directory.tenant_for_api_key(&digest).await {
            Ok(Some(tenant)) => {
                if let Some(slot) = parts.extensions.get::<AuditSlot>() {
                    // The key's id: a prefix of its SHA-256, never the key.
                    let actor = format!("api-key:{}", &hex::encode(digest)[..12]);
                    *slot.0.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((tenant.clone(), actor));
                }
                Ok(Authenticated(tenant))
            }
            Ok(None) => Err(unauthorized()),
            Err(e) => {
                tracing::error!(error = %e, "API key lookup failed");
                Err(problem(
                    503,
                    "directory-unavailable",
                    "API key lookup failed; retry later",
                ))
            }
        }
    }
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

fn page(query: Result<Query<PageQuery>, QueryRejection>) -> Result<PageRequest, ProblemResponse> {
    let bad = |detail: &str| {
        ProblemResponse(
            relay_http::Problem::new(400, "bad-query", "Invalid query parameters")
                .with_detail(detail.to_owned()),
        )
    };
    let Query(q) = query.map_err(|_| bad("the query string is malformed"))?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(bad("limit must be a whole number from 1 to 200")),
        },
    };
    Ok(PageRequest {
        limit,
        cursor: q.cursor.filter(|c| !c.is_empty()),
    })
}

fn store_problem(e: StoreError) -> ProblemResponse {
    match e {
        StoreError::InvalidCursor => ProblemResponse(
            relay_http::Problem::new(400, "bad-query", "Invalid query parameters")
                .with_detail("cursor is not one this API issued"),
        ),
        other => {
            tracing::error!(error = %other, "store read failed");
            problem(
                503,
                "store-unavailable",
                "The inbox store is unavailable; retry later",
            )
        }
    }
}
