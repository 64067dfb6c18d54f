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
use relay_core::jobs::Job;
use relay_core::outbound::{ReplyRequest, queued_message};
use relay_core::ports::{AuditLog, Directory, MessageStore, OutboundQueue, StoreError};
use relay_core::privacy::Privacy;
use relay_core::records::AuditEntry;
use relay_core::records::{Conversation, PageRequest, StoredMessage};
use relay_core::records::{CreateOutcome, Direction, IdempotencyRecord};
use relay_http::{ProblemResponse, bearer, detailed, problem};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

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
    pub store: Arc<dyn MessageStore>,
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
    GET "/v1/contacts/{contact_id}/export" => export_contact,
    DELETE "/v1/contacts/{contact_id}" => erase_contact,
    GET "/v1/media/{media_id}" => get_media,
    POST "/v1/media" => upload_media limit MAX_UPLOAD_BYTES,
}

pub fn router(state: Inbox) -> Router {
    routes(Router::new())
        .route_layer(middleware::from_fn_with_state(state.clone(), audited))
        .with_state(state)
}

/// Filled by [`Authenticated`] so that the audit layer knows who called.
#[derive(Clone, Default)]
struct AuditSlot(Arc<std::sync::Mutex<Option<(TenantId, String)>>>);

/// Set by a handler whose path does not name the contact (media): whose data it served.
#[derive(Clone, Default)]
struct AuditTarget(Arc<std::sync::Mutex<Option<String>>>);

/// The audit action of a route, `None` for routes that touch no personal data.
fn audit_action(method: &axum::http::Method, path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    Some(match (method.as_str(), parts.as_slice()) {
        ("GET", ["v1", "conversations"]) => "conversations.list",
        ("GET", ["v1", "conversations", _, "messages"]) => "messages.list",
        ("POST", ["v1", "conversations", _, "messages"]) => "reply.create",
        ("POST", ["v1", "conversations", _, "read"]) => "conversation.read",
        ("GET", ["v1", "contacts", _, "export"]) => "contact.export",
        ("DELETE", ["v1", "contacts", _]) => "contact.erase",
        ("GET", ["v1", "media", _]) => "media.get",
        ("POST", ["v1", "media"]) => "media.upload",
        _ => return None,
    })
}

/// Writes an audit entry for every authenticated call that reads or changes personal data.
/// If the entry cannot be written, a read is answered 503 (nothing leaves unaudited); a
/// change that already happened is answered as it went, and the failure is logged.
async fn audited(
    State(state): State<Inbox>,
    mut request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(action) = audit_action(&method, &path) else {
        return next.run(request).await;
    };
    let slot = AuditSlot::default();
    let named = AuditTarget::default();
    request.extensions_mut().insert(slot.clone());
    request.extensions_mut().insert(named.clone());
    let response = next.run(request).await;
    let who = slot.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some((tenant, actor)) = who else {
        // Not authenticated: nothing was read or changed.
        return response;
    };
    let target = named
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .or_else(|| {
            path.trim_matches('/')
                .split('/')
                .nth(2)
                .and_then(|c| ContactId::parse(c).ok())
                .map(|c| c.to_string())
        });
    let at_ms = state.clock.now_ms();
    let now = at_ms.div_euclid(1000);
    let entry = AuditEntry {
        at_ms,
        tenant,
        actor,
        action: action.to_owned(),
        target,
        result: response.status().as_u16(),
        expires_at: now + state.audit_retention_secs,
    };
    if let Err(e) = state.audit.append(&entry).await {
        tracing::error!(error = %e, action, "audit entry could not be written");
        if method == axum::http::Method::GET && response.status().is_success() {
            return problem(
                503,
                "audit-unavailable",
                "The access could not be recorded; retry later",
            )
            .into_response();
        }
    }
    response
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

fn conversation_json(c: &Conversation) -> Value {
    json!({
        "contact_id": c.contact_id,
        "name": c.name,
        "last_message_at": c.last_message_at,
        "last_inbound_at": c.last_inbound_at,
        "window_expires_at": c.last_inbound_at.map(|t| t + SERVICE_WINDOW_SECS),
        "unread": c.unread,
        "opted_out": c.opted_out,
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
    if let Some(media) = &m.media {
        out.insert(
            "media".into(),
            json!({"id": media.media_id, "status": media.status, "mime_type": media.mime_type,
                   "size": media.size, "reason": media.reason}),
        );
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
    let now = state.clock.now();
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
    let now = state.clock.now();
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

fn queue_problem(e: relay_core::ports::QueueError) -> ProblemResponse {
    tracing::error!(error = %e, "enqueue failed");
    problem(
        503,
        "queue-unavailable",
        "The reply could not be queued; retry (with the same Idempotency-Key)",
    )
}

fn hex_sha256(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..16])
}

/// `POST /v1/conversations/{contact_id}/messages`: checks the reply against WhatsApp's rules
/// and the contact's state, stores it as `queued` and hands it to reply-sender.
async fn send_message(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(contact_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ProblemResponse> {
    let not_found = || problem(404, "not-found", "No such conversation");
    let contact = ContactId::parse(&contact_id).map_err(|_| not_found())?;
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(problem(413, "too-large", "The request body is too large"));
        }
        Err(_) => {
            return Err(problem(
                400,
                "unreadable-body",
                "The body could not be read",
            ));
        }
    };
    relay_http::json_content_type(&headers)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Some(k.to_owned()),
            _ => {
                return Err(detailed(
                    400,
                    "bad-idempotency-key",
                    "Invalid Idempotency-Key",
                    "1 to 255 visible ASCII characters",
                ));
            }
        },
    };
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        detailed(
            400,
            "not-json",
            "The body is not JSON",
            format!("line {}, column {}", e.line(), e.column()),
        )
    })?;
    // serde's messages can quote the input; the detail names the position only.
    let request: ReplyRequest = serde_json::from_value(value).map_err(|_| {
        detailed(
            422,
            "invalid-message",
            "The body is not a reply this API accepts",
            "see the OpenAPI document for the reply types",
        )
    })?;
    let reply = request
        .validate()
        .map_err(|e| detailed(422, e.slug, "WhatsApp would refuse this message", e.detail))?;

    let now = state.clock.now();
    let Some(record) = state
        .store
        .contact(&tenant, &contact, now)
        .await
        .map_err(store_problem)?
    else {
        return Err(not_found());
    };
    if let Some(upload_id) = reply.upload_id() {
        let upload = state
            .store
            .upload(&tenant, upload_id, now)
            .await
            .map_err(store_problem)?
            .filter(|u| u.contact_id == contact);
        let Some(upload) = upload else {
            return Err(detailed(
                422,
                "unknown-media",
                "No such uploaded file for this conversation",
                "upload it with POST /v1/media?contact_id=… first (uploads expire with the conversation)",
            ));
        };
        let mime = upload.media.mime_type.as_deref().unwrap_or_default();
        let fits = match reply.kind {
            "image" => mime.starts_with("image/"),
            "audio" => mime.starts_with("audio/"),
            _ => true,
        };
        if !fits {
            return Err(detailed(
                422,
                "invalid-message",
                "WhatsApp would refuse this message",
                format!("a {} reply cannot carry a {mime} file", reply.kind),
            ));
        }
    }
    if record.conversation.opted_out {
        return Err(detailed(
            409,
            "opted-out",
            "The contact has opted out",
            "they can opt in again by sending START",
        ));
    }
    let window_closed_at = record
        .conversation
        .last_inbound_at
        .map(|t| t + SERVICE_WINDOW_SECS);
    if !reply.is_template && window_closed_at.is_none_or(|t| t <= now) {
        let p = relay_http::Problem::new(
            422,
            "window-closed",
            "The 24-hour customer service window is closed",
        )
        .with_detail("outside the window only approved templates may be sent")
        .with("window_closed_at", serde_json::json!(window_closed_at));
        return Err(ProblemResponse(p));
    }
    let reply_to_wamid = match &reply.reply_to {
        None => None,
        Some(id) => {
            let bad = || {
                detailed(
                    422,
                    "invalid-message",
                    "reply_to is not a message of this conversation",
                    "give the id of a message in this conversation",
                )
            };
            let key = id
                .strip_prefix("m_")
                .filter(|k| k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(bad)?;
            let m = state
                .store
                .message_by_wamid(&tenant, key, now)
                .await
                .map_err(store_problem)?
                .ok_or_else(bad)?;
            if m.contact_id != contact || m.wamid.is_empty() {
                return Err(bad());
            }
            Some(m.wamid)
        }
    };

    let key = uuid::Uuid::new_v4().simple().to_string();
    let expires_at = now
        + state
            .directory
            .tenant(&tenant)
            .await
            .map_err(store_problem)?
            .map(|t| t.retention_secs())
            .unwrap_or(i64::from(relay_core::tenant::DEFAULT_RETENTION_DAYS) * 86_400);
    let message = queued_message(&key, &contact, &reply, reply_to_wamid, now, expires_at);
    let idempotency = idempotency_key.map(|k| IdempotencyRecord {
        key_hash: hex_sha256(&[tenant.as_str().as_bytes(), k.as_bytes()]),
        request_hash: hex_sha256(&[contact.as_str().as_bytes(), &body]),
    });
    let outcome = state
        .store
        .create_outbound(&tenant, &message, idempotency.as_ref())
        .await
        .map_err(store_problem)?;
    let created = outcome == CreateOutcome::Created;
    let message_key = match outcome {
        CreateOutcome::Created => key,
        CreateOutcome::Existing {
            message_key,
            request_hash,
        } => {
            if let (Some(first), Some(idem)) = (request_hash, &idempotency)
                && first != idem.request_hash
            {
                return Err(detailed(
                    422,
                    "idempotency-key-reused",
                    "This Idempotency-Key was used for another request",
                    "use a new key for a new message",
                ));
            }
            message_key
        }
    };
    let job = Job::Send {
        tenant: tenant.clone(),
        contact: contact.clone(),
        message_key: message_key.clone(),
        consent_reply: false,
    };
    // Enqueued again on an idempotent repeat: if the first attempt stored but did not queue,
    // this completes it; if it did, reply-sender's claim makes the twin a no-op.
    state
        .outbound
        .enqueue_jobs(&[job])
        .await
        .map_err(queue_problem)?;
    // A repeat (same Idempotency-Key) reports where the first message has got to.
    let current = if created {
        None
    } else {
        state
            .store
            .message_by_wamid(&tenant, &message_key, now)
            .await
            .map_err(store_problem)?
    };
    let status = current
        .as_ref()
        .and_then(|m| m.status)
        .map(|s| s.as_str())
        .unwrap_or("queued");
    tracing::info!(tenant = %tenant, contact = %contact, message = %format!("m_{message_key}"), kind = reply.kind, "reply queued");
    Ok((
        StatusCode::ACCEPTED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"id": format!("m_{message_key}"), "status": status})),
    )
        .into_response())
}

/// `POST /v1/conversations/{contact_id}/read`: read receipt for the newest inbound message,
/// and the unread count back to zero.
async fn mark_read(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(contact_id): Path<String>,
) -> Result<Response, ProblemResponse> {
    let not_found = || problem(404, "not-found", "No such conversation");
    let contact = ContactId::parse(&contact_id).map_err(|_| not_found())?;
    let now = state.clock.now();
    if state
        .store
        .conversation(&tenant, &contact, now)
        .await
        .map_err(store_problem)?
        .is_none()
    {
        return Err(not_found());
    }
    let mut newest_inbound = None;
    let mut cursor = None;
    // The newest inbound message is nearly always on the first page; look a few pages deep.
    for _ in 0..5 {
        let page = state
            .store
            .list_messages(
                &tenant,
                &contact,
                &PageRequest {
                    limit: MAX_PAGE,
                    cursor,
                },
                now,
            )
            .await
            .map_err(store_problem)?;
        newest_inbound = page
            .items
            .into_iter()
            .find(|m| m.direction == Direction::Inbound);
        if newest_inbound.is_some() || page.next_cursor.is_none() {
            break;
        }
        cursor = page.next_cursor;
    }
    if let Some(m) = &newest_inbound {
        let job = Job::MarkRead {
            tenant: tenant.clone(),
            contact: contact.clone(),
            wamid_key: m.wamid_key.clone(),
        };
        state
            .outbound
            .enqueue_jobs(&[job])
            .await
            .map_err(queue_problem)?;
    }
    state
        .store
        .clear_unread(&tenant, &contact)
        .await
        .map_err(store_problem)?;
    tracing::info!(tenant = %tenant, contact = %contact, "conversation marked read");
    Ok((
        StatusCode::ACCEPTED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"read_up_to": newest_inbound.map(|m| m.id), "unread": 0})),
    )
        .into_response())
}

/// `GET /v1/contacts/{contact_id}/export`: everything about one contact, decrypted, as one
/// JSON document (GDPR Art. 15 and 20).
async fn export_contact(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(contact_id): Path<String>,
) -> Result<Response, ProblemResponse> {
    let not_found = || problem(404, "not-found", "No such contact");
    let contact = ContactId::parse(&contact_id).map_err(|_| not_found())?;
    let doc = state
        .privacy
        .export(&tenant, &contact, state.clock.now())
        .await
        .map_err(store_problem)?
        .ok_or_else(not_found)?;
    tracing::info!(tenant = %tenant, contact = %contact, "contact exported");
    let mut response = ok_json(doc);
    if let Ok(v) =
        header::HeaderValue::from_str(&format!("attachment; filename=\"{contact}.json\""))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// `DELETE /v1/contacts/{contact_id}`: erases the contact (GDPR Art. 17) and returns the
/// receipt. Idempotent: erasing an erased or unknown contact returns a receipt with nothing
/// deleted.
async fn erase_contact(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(contact_id): Path<String>,
) -> Result<Response, ProblemResponse> {
    let contact =
        ContactId::parse(&contact_id).map_err(|_| problem(404, "not-found", "No such contact"))?;
    let receipt = state
        .privacy
        .erase(&tenant, &contact, state.clock.now())
        .await
        .map_err(store_problem)?;
    Ok(ok_json(serde_json::to_value(&receipt).unwrap_or_default()))
}

/// A MIME type safe to send back as Content-Type, else `application/octet-stream`.
fn safe_mime(m: Option<&str>) -> String {
    m.map(|m| {
        m.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    })
    .filter(|m| {
        m.len() <= 100
            && m.split_once('/')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b))
    })
    .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// A file name for Content-Disposition: the document's own name reduced to safe characters.
fn safe_filename(name: Option<&str>, media_id: &str) -> String {
    let cleaned: String = name
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-_ ".contains(*c))
        .take(100)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        media_id.to_owned()
    } else {
        cleaned
    }
}

/// `GET /v1/media/{media_id}`: the file of a message, opened and streamed.
async fn get_media(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(media_id): Path<String>,
    axum::Extension(target): axum::Extension<AuditTarget>,
) -> Result<Response, ProblemResponse> {
    use relay_core::media::{FileOpener, MediaStatus, message_key_of};
    let not_found = || problem(404, "not-found", "No such media");
    let now = state.clock.now();
    // A file of a message (`md_…`), or one the pharmacy uploaded (`mu_…`).
    let (media, contact_id, filename) = if media_id.starts_with(relay_core::outbound::UPLOAD_PREFIX)
        && media_id.len() <= 64
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        let upload = state
            .store
            .upload(&tenant, &media_id, now)
            .await
            .map_err(store_problem)?
            .ok_or_else(not_found)?;
        (upload.media, upload.contact_id, upload.filename)
    } else {
        let key = message_key_of(&media_id).ok_or_else(not_found)?;
        let message = state
            .store
            .message_by_wamid(&tenant, key, now)
            .await
            .map_err(store_problem)?
            .ok_or_else(not_found)?;
        let media = message.media.clone().ok_or_else(not_found)?;
        let filename = message
            .content
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|m| m.get("filename"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        (media, message.contact_id, filename)
    };
    if media.media_id != media_id {
        return Err(not_found());
    }
    *target.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(contact_id.to_string());
    match media.status {
        MediaStatus::Pending => {
            let mut r =
                problem(409, "media-pending", "The file is still being fetched").into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return Ok(r);
        }
        MediaStatus::Failed => {
            return Err(detailed(
                410,
                "media-unavailable",
                "The file could not be fetched from WhatsApp",
                media.reason.clone().unwrap_or_default(),
            ));
        }
        MediaStatus::Available => {}
    }
    let size = media.size.unwrap_or(0);
    if let Some(max) = state.max_media_response_bytes
        && size > max
    {
        return Err(detailed(
            413,
            "media-too-large",
            "The file is larger than this deployment serves in one response",
            format!("{size} bytes; the limit is {max}"),
        ));
    }
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "media read failed");
        problem(
            503,
            "store-unavailable",
            "The file store is unavailable; retry later",
        )
    };
    let object = media.object_key.clone().ok_or_else(not_found)?;
    let mut reader = state
        .blobs
        .open(&object)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(not_found)?;
    let opener = match FileOpener::new(
        &state.privacy.keys,
        &tenant,
        &media.media_id,
        size,
        reader.as_mut(),
    )
    .await
    {
        Ok(o) => o,
        // Erased meanwhile: gone.
        Err(relay_core::media::MediaError::Crypto(relay_core::crypto::CryptoError::Destroyed)) => {
            return Err(not_found());
        }
        Err(e) => return Err(unavailable(&e)),
    };
    let stream = futures_util::stream::unfold(
        (reader, opener, false),
        |(mut reader, mut opener, failed)| async move {
            if failed {
                return None;
            }
            match opener.next(reader.as_mut()).await {
                Ok(Some(chunk)) => Some((
                    Ok::<_, std::io::Error>(Bytes::from(chunk)),
                    (reader, opener, false),
                )),
                Ok(None) => None,
                Err(e) => {
                    // The headers are out already: end the body short (its length will not
                    // match, so the client sees a broken transfer, never a wrong file).
                    tracing::error!(error = %e, "media stream failed");
                    Some((
                        Err(std::io::Error::other("media stream failed")),
                        (reader, opener, true),
                    ))
                }
            }
        },
    );
    tracing::info!(tenant = %tenant, contact = %contact_id, bytes = size, "media served");
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    let h = response.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&safe_mime(media.mime_type.as_deref())) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        safe_filename(filename.as_deref(), &media.media_id)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct UploadQuery {
    contact_id: Option<String>,
    filename: Option<String>,
}

/// The file types WhatsApp takes for sending, and each one's size limit.
fn upload_limit(mime: &str) -> Option<usize> {
    const MB: usize = 1024 * 1024;
    match mime {
        "image/jpeg" | "image/png" => Some(5 * MB),
        "audio/aac" | "audio/mp4" | "audio/mpeg" | "audio/amr" | "audio/ogg" | "video/mp4"
        | "video/3gpp" => Some(16 * MB),
        "application/pdf" | "text/plain" | "application/msword" => Some(MAX_UPLOAD_BYTES),
        m if m.starts_with("application/vnd.openxmlformats-officedocument.")
            || m.starts_with("application/vnd.ms-") =>
        {
            Some(MAX_UPLOAD_BYTES)
        }
        _ => None,
    }
}

/// `POST /v1/media?contact_id=…&filename=…` with the file as the body and its Content-Type:
/// stores it sealed under the contact's key, for a reply to send by `media_id`.
async fn upload_media(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    axum::Extension(target): axum::Extension<AuditTarget>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ProblemResponse> {
    use relay_core::media::{FileSealer, MediaInfo, MediaStatus, object_key};
    let bad = |detail: &str| {
        detailed(
            400,
            "bad-query",
            "Invalid query parameters",
            detail.to_owned(),
        )
    };
    let Query(q) = query.map_err(|_| bad("the query string is malformed"))?;
    let contact = q
        .contact_id
        .as_deref()
        .and_then(|c| ContactId::parse(c).ok())
        .ok_or_else(|| bad("contact_id (the conversation the file is for) is required"))?;
    let filename = match q.filename {
        Some(f)
            if f.is_empty()
                || f.len() > 240
                || f.contains(['/', '\\'])
                || f.chars().any(char::is_control) =>
        {
            return Err(bad("filename must be a plain file name"));
        }
        other => other,
    };
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(problem(
                413,
                "too-large",
                "The file is larger than WhatsApp sends",
            ));
        }
        Err(_) => {
            return Err(problem(
                400,
                "unreadable-body",
                "The body could not be read",
            ));
        }
    };
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let Some(limit) = upload_limit(&mime) else {
        return Err(detailed(
            415,
            "unsupported-media-type",
            "WhatsApp does not send files of this type",
            "JPEG or PNG images, AAC/MP4/MPEG/AMR/OGG audio, MP4/3GPP video, PDF, text and Office documents",
        ));
    };
    if body.is_empty() {
        return Err(problem(400, "empty-body", "The file is empty"));
    }
    if body.len() > limit {
        return Err(detailed(
            413,
            "too-large",
            "The file is larger than WhatsApp sends",
            format!(
                "{} bytes; {mime} files may have at most {limit}",
                body.len()
            ),
        ));
    }
    let now = state.clock.now();
    let not_found = || problem(404, "not-found", "No such conversation");
    if state
        .store
        .conversation(&tenant, &contact, now)
        .await
        .map_err(store_problem)?
        .is_none()
    {
        return Err(not_found());
    }
    *target.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(contact.to_string());
    let retention = match state.directory.tenant(&tenant).await {
        Ok(Some(t)) => t.retention_secs(),
        _ => i64::from(relay_core::tenant::DEFAULT_RETENTION_DAYS) * 86_400,
    };
    let expires_at = now + retention;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|_| problem(503, "unavailable", "No randomness; retry"))?;
    let media_id = format!("{}{}", relay_core::outbound::UPLOAD_PREFIX, hex::encode(id));
    let sealer = state
        .privacy
        .keys
        .contact_sealer(&tenant, &contact, expires_at)
        .await
        .map_err(|e| store_problem(e.into()))?;
    let mut file = FileSealer::new(sealer, &media_id);
    let mut sealed = file.update(&body);
    let (tail, size, _) = file.finish();
    sealed.extend(tail);
    let key = object_key(&tenant, contact.as_str(), &media_id);
    let blob_error = |e: relay_core::media::BlobError| {
        tracing::error!(error = %e, "upload could not be stored");
        problem(
            503,
            "store-unavailable",
            "The file could not be stored; retry later",
        )
    };
    let mut writer = state.blobs.begin(&key).await.map_err(blob_error)?;
    writer.write(sealed).await.map_err(blob_error)?;
    writer.finish().await.map_err(blob_error)?;
    let upload = relay_core::records::Upload {
        media_id: media_id.clone(),
        contact_id: contact.clone(),
        media: MediaInfo {
            media_id: media_id.clone(),
            status: MediaStatus::Available,
            mime_type: Some(mime.clone()),
            size: Some(size),
            reason: None,
            object_key: Some(key),
        },
        filename,
        created_at: now,
        expires_at,
    };
    state
        .store
        .create_upload(&tenant, &upload)
        .await
        .map_err(store_problem)?;
    tracing::info!(tenant = %tenant, contact = %contact, bytes = size, "file uploaded");
    Ok((
        StatusCode::CREATED,
        Json(json!({"media_id": media_id, "mime_type": mime, "size": size, "expires_at": expires_at})),
    )
        .into_response())
}
