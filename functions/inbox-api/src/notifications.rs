//! Pickup-ready notices: `POST /v1/conversations/{contact_id}/notifications` sends the tenant's
//! template once per order reference; `…/notifications/{reference}/collected` stops its
//! reminder; `GET …/notifications` lists a conversation's notices. The rules live in
//! `relay_core::notifications`.

use super::*;
use relay_core::notifications::{self, Notice, NoticeError, NoticePorts, PICKUP_READY};
use relay_core::ports::store_roles::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyRequest {
    kind: String,
    reference: String,
}

pub fn notice_json(n: &Notice) -> Value {
    json!({
        "kind": n.kind, "reference": n.reference, "message_id": n.message_id,
        "sent_at": n.sent_at, "remind_at": n.remind_at,
        "reminder_id": n.reminder.as_deref().filter(|r| r.starts_with("m_")),
        "reminder_skipped": n.reminder.as_deref() == Some("skipped"),
        "collected_at": n.collected_at,
    })
}

/// A notice not sent, as a problem.
pub fn notice_problem(e: NoticeError) -> ProblemResponse {
    match e {
        NoticeError::UnknownKind => detailed(
            422,
            "unknown-notification",
            "No such kind of notification",
            "kind must be \"pickup_ready\"",
        ),
        NoticeError::BadReference => detailed(
            422,
            "invalid-reference",
            "Invalid order reference",
            "1 to 64 letters, digits, '.', '_' or '-'",
        ),
        NoticeError::NotConfigured => detailed(
            422,
            "notification-not-configured",
            "This pharmacy has no pickup-ready template",
            "set [tenants.notifications.pickup_ready] template and language in relay.toml",
        ),
        NoticeError::BadTemplate(detail) => detailed(
            422,
            "notification-not-configured",
            "The configured pickup-ready template is not valid",
            detail,
        ),
        NoticeError::Refused(r) => refusal_problem(r),
        NoticeError::Store(e) => store_problem(e),
        NoticeError::Queue(e) => queue_problem(e),
    }
}

async fn tenant_of(
    state: &Inbox,
    tenant: &TenantId,
) -> Result<relay_core::tenant::Tenant, ProblemResponse> {
    state
        .directory
        .tenant(tenant)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| problem(404, "not-found", "No such tenant"))
}

/// Forwards are sealed on the way, as the router's are.
fn sealed_outbound(state: &Inbox) -> relay_core::sealed::SealedOutbound {
    relay_core::sealed::SealedOutbound::new(state.outbound.clone(), state.privacy.keys.clone())
}

pub(crate) async fn notify(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(contact_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ProblemResponse> {
    let not_found = || problem(404, "not-found", "No such conversation");
    let contact = ContactId::parse(&contact_id).map_err(|_| not_found())?;
    relay_http::json_content_type(&headers)?;
    let body = body.map_err(|_| problem(400, "unreadable-body", "The body could not be read"))?;
    let request: NotifyRequest = serde_json::from_slice(&body).map_err(|_| {
        detailed(
            422,
            "invalid-notification",
            "The body is not a notification this API accepts",
            "{\"kind\": \"pickup_ready\", \"reference\": \"…\"}",
        )
    })?;
    let t = tenant_of(&state, &tenant).await?;
    let outbound = sealed_outbound(&state);
    let ports = NoticePorts {
        replies: ReplyPorts {
            store: state.store.as_ref(),
            directory: state.directory.as_ref(),
            outbound: &outbound,
            templates: state.templates.as_deref(),
        },
        board: state.store.as_ref(),
    };
    let (notice, queued) = notifications::notify(
        &ports,
        &t,
        &contact,
        (&request.kind, &request.reference),
        state.clock.now(),
    )
    .await
    .map_err(notice_problem)?;
    tracing::info!(tenant = %tenant, contact = %contact, message = %queued.id, created = queued.created, "notification queued");
    Ok((
        StatusCode::ACCEPTED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(
            json!({"id": queued.id, "status": queued.status, "created": queued.created,
                    "notification": notice_json(&notice)}),
        ),
    )
        .into_response())
}

pub(crate) async fn collected(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path((contact_id, reference)): Path<(String, String)>,
) -> Result<Response, ProblemResponse> {
    let not_found = || problem(404, "not-found", "No such notification");
    let contact = ContactId::parse(&contact_id).map_err(|_| not_found())?;
    if !notifications::valid_reference(&reference) {
        return Err(not_found());
    }
    let t = tenant_of(&state, &tenant).await?;
    let outbound = sealed_outbound(&state);
    let notice = notifications::collected(
        state.store.as_ref(),
        &outbound,
        &t,
        &contact,
        (PICKUP_READY, &reference),
        state.clock.now(),
    )
    .await
    .map_err(notice_problem)?
    .ok_or_else(not_found)?;
    tracing::info!(tenant = %tenant, contact = %contact, "notification marked collected");
    Ok(ok_json(json!({"notification": notice_json(&notice)})))
}

pub(crate) async fn list_notifications(
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
    let notices = state
        .store
        .notices(&tenant, &contact, now)
        .await
        .map_err(store_problem)?;
    Ok(ok_json(json!({
        "notifications": notices.iter().map(notice_json).collect::<Vec<_>>(),
    })))
}
