//! inbox-api: what the pharmacy's software calls. A bearer API key selects the tenant; a key
//! sees its own tenant's conversations only. Errors are RFC 9457 problems. The contract is
//! `openapi.json` beside this crate, tested against this router.
//!
//! Times are Unix seconds, as WhatsApp gives them.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use relay_core::Clock;
use relay_core::ids::{ContactId, TenantId, secret_digest};
use relay_core::ports::{Directory, MessageStore, StoreError};
use relay_core::records::{Conversation, PageRequest, StoredMessage};
use relay_http::{ProblemResponse, bearer, problem};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The 24-hour customer service window, from the customer's last message.
pub const SERVICE_WINDOW_SECS: i64 = 24 * 3600;
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 200;

/// Every route this router serves (method, path); the OpenAPI test compares against it.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/v1/conversations"),
    ("GET", "/v1/conversations/{contact_id}/messages"),
];

#[derive(Clone)]
pub struct Inbox {
    pub directory: Arc<dyn Directory>,
    pub store: Arc<dyn MessageStore>,
    pub clock: Clock,
}

pub fn router(state: Inbox) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/conversations", get(list_conversations))
        .route(
            "/v1/conversations/{contact_id}/messages",
            get(list_messages),
        )
        .with_state(state)
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
        match state
            .directory
            .tenant_for_api_key(&secret_digest(key))
            .await
        {
            Ok(Some(tenant)) => Ok(Authenticated(tenant)),
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

fn conversation_json(c: &Conversation) -> Value {
    json!({
        "contact_id": c.contact_id,
        "name": c.name,
        "last_message_at": c.last_message_at,
        "last_inbound_at": c.last_inbound_at,
        "window_expires_at": c.last_inbound_at.map(|t| t + SERVICE_WINDOW_SECS),
        "unread": c.unread,
    })
}

/// A message as the API shows it: common fields plus the type's own object, as WhatsApp
/// names it (`"image": {...}`).
pub fn message_json(m: &StoredMessage) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(m.id));
    out.insert("wamid".into(), json!(m.wamid));
    out.insert("contact_id".into(), json!(m.contact_id));
    out.insert("direction".into(), json!(m.direction));
    out.insert("type".into(), json!(m.kind));
    out.insert("text".into(), json!(m.text));
    out.insert("timestamp".into(), json!(m.timestamp));
    out.insert("status".into(), json!(m.status));
    out.insert("reply_to".into(), json!(m.reply_to));
    if let Some(e) = &m.error {
        out.insert("error".into(), json!(e));
    }
    if let Value::Object(content) = &m.content {
        for (k, v) in content {
            if !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn ok_json(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(v),
    )
        .into_response()
}

async fn list_conversations(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ProblemResponse> {
    let page = page(query)?;
    let now = (state.clock)();
    let result = state
        .store
        .list_conversations(&tenant, &page, now)
        .await
        .map_err(store_problem)?;
    tracing::info!(tenant = %tenant, count = result.items.len(), "conversations listed");
    Ok(ok_json(json!({
        "conversations": result.items.iter().map(conversation_json).collect::<Vec<_>>(),
        "next_cursor": result.next_cursor,
    })))
}

async fn list_messages(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(contact_id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ProblemResponse> {
    let not_found = || problem(404, "not-found", "No such conversation");
    let contact = ContactId::parse(&contact_id).map_err(|_| not_found())?;
    let page = page(query)?;
    let now = (state.clock)();
    if state
        .store
        .conversation(&tenant, &contact, now)
        .await
        .map_err(store_problem)?
        .is_none()
    {
        return Err(not_found());
    }
    let result = state
        .store
        .list_messages(&tenant, &contact, &page, now)
        .await
        .map_err(store_problem)?;
    tracing::info!(tenant = %tenant, contact = %contact, count = result.items.len(), "messages listed");
    Ok(ok_json(json!({
        "messages": result.items.iter().map(message_json).collect::<Vec<_>>(),
        "next_cursor": result.next_cursor,
    })))
}
