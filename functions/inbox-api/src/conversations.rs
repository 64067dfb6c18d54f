//! Conversations and their messages: lists, the reply route, read receipts.

use super::*;
use relay_core::ports::store_roles::*;

pub(crate) fn conversation_json(c: &Conversation) -> Value {
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
    if let Some(origin) = m.origin {
        out.insert("origin".into(), json!(origin));
    }
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

pub(crate) fn ok_json(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(v),
    )
        .into_response()
}

pub(crate) async fn list_conversations(
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

pub(crate) async fn list_messages(
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
    let mut result = state
        .store
        .list_messages(&tenant, &contact, &page, now)
        .await
        .map_err(store_problem)?;
    relay_core::prescriptions::attach(
        state.store.as_ref(),
        (&tenant, &contact),
        &mut result.items,
        now,
    )
    .await
    .map_err(store_problem)?;
    tracing::info!(tenant = %tenant, contact = %contact, count = result.items.len(), "messages listed");
    Ok(ok_json(json!({
        "messages": result.items.iter().map(message_json).collect::<Vec<_>>(),
        "next_cursor": result.next_cursor,
    })))
}

pub(crate) fn queue_problem(e: relay_core::ports::QueueError) -> ProblemResponse {
    tracing::error!(error = %e, "enqueue failed");
    problem(
        503,
        "queue-unavailable",
        "The reply could not be queued; retry (with the same Idempotency-Key)",
    )
}

pub(crate) fn hex_sha256(parts: &[&[u8]]) -> String {
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
pub(crate) async fn send_message(
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

    let idempotency = idempotency_key.map(|k| IdempotencyRecord {
        key_hash: hex_sha256(&[tenant.as_str().as_bytes(), k.as_bytes()]),
        request_hash: hex_sha256(&[contact.as_str().as_bytes(), &body]),
    });
    let ports = ReplyPorts {
        store: state.store.as_ref(),
        directory: state.directory.as_ref(),
        outbound: state.outbound.as_ref(),
        templates: state.templates.as_deref(),
    };
    let queued = queue_reply(
        &ports,
        ReplyCommand {
            tenant: &tenant,
            contact: &contact,
            reply: &reply,
            idempotency,
            now: state.clock.now(),
        },
    )
    .await
    .map_err(refusal_problem)?;
    tracing::info!(tenant = %tenant, contact = %contact, message = %queued.id, kind = reply.kind, created = queued.created, "reply queued");
    Ok((
        StatusCode::ACCEPTED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"id": queued.id, "status": queued.status})),
    )
        .into_response())
}

/// A refused reply as a problem: its status, type and detail.
pub fn refusal_problem(r: Refusal) -> ProblemResponse {
    match r {
        Refusal::NoSuchConversation => problem(404, "not-found", "No such conversation"),
        Refusal::UnknownUpload => detailed(
            422,
            "unknown-media",
            "No such uploaded file for this conversation",
            "upload it with POST /v1/media?contact_id=… first (uploads expire with the conversation)",
        ),
        Refusal::WrongFileType { kind, mime } => detailed(
            422,
            "invalid-message",
            "WhatsApp would refuse this message",
            format!("a {kind} reply cannot carry a {mime} file"),
        ),
        Refusal::OptedOut => detailed(
            409,
            "opted-out",
            "The contact has opted out",
            "they can opt in again by sending START",
        ),
        Refusal::MarketingStopped => detailed(
            409,
            "marketing-stopped",
            "The customer stopped marketing messages",
            "this is a marketing template; utility templates and replies inside the window still go out",
        ),
        Refusal::WindowClosed { closed_at } => ProblemResponse(
            relay_http::Problem::new(
                422,
                "window-closed",
                "The 24-hour customer service window is closed",
            )
            .with_detail("outside the window only approved templates may be sent")
            .with("window_closed_at", serde_json::json!(closed_at)),
        ),
        Refusal::NotInConversation => detailed(
            422,
            "invalid-message",
            "reply_to is not a message of this conversation",
            "give the id of a message in this conversation",
        ),
        Refusal::KeyReused => detailed(
            422,
            "idempotency-key-reused",
            "This Idempotency-Key was used for another request",
            "use a new key for a new message",
        ),
        Refusal::Store(e) => store_problem(e),
        Refusal::Queue(e) => queue_problem(e),
    }
}

/// `POST /v1/conversations/{contact_id}/read`: read receipt for the newest inbound message,
/// and the unread count back to zero.
#[derive(serde::Deserialize)]
pub(crate) struct ReadQuery {
    #[serde(default)]
    typing: bool,
}

pub(crate) async fn mark_read(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(contact_id): Path<String>,
    query: Result<axum::extract::Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ProblemResponse> {
    let not_found = || problem(404, "not-found", "No such conversation");
    let contact = ContactId::parse(&contact_id).map_err(|_| not_found())?;
    let axum::extract::Query(query) = query.map_err(|_| {
        detailed(
            400,
            "bad-query",
            "The query string is malformed",
            "typing must be true or false",
        )
    })?;
    let now = state.clock.now();
    // The typing indicator only where an answer may go out: inside the window.
    let typing = query.typing
        && state
            .store
            .conversation(&tenant, &contact, now)
            .await
            .map_err(store_problem)?
            .and_then(|c| c.last_inbound_at)
            .is_some_and(|t| t + SERVICE_WINDOW_SECS > now);
    let newest_inbound = relay_core::replies::mark_read(
        state.store.as_ref(),
        state.outbound.as_ref(),
        (&tenant, &contact),
        typing,
        now,
    )
    .await
    .map_err(|e| match e {
        relay_core::replies::MarkReadError::Store(e) => store_problem(e),
        relay_core::replies::MarkReadError::Queue(e) => queue_problem(e),
    })?
    .ok_or_else(not_found)?;
    tracing::info!(tenant = %tenant, contact = %contact, "conversation marked read");
    Ok((
        StatusCode::ACCEPTED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"read_up_to": newest_inbound.map(|m| m.id), "unread": 0})),
    )
        .into_response())
}
