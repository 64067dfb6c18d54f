//! The audit log of every call: who read or changed whose data, and the answer.

use super::*;

/// Filled by [`Authenticated`] so that the audit layer knows who called.
#[derive(Clone, Default)]
pub(crate) struct AuditSlot(pub(crate) Arc<std::sync::Mutex<Option<(TenantId, String)>>>);

/// Set by a handler whose path does not name the contact (media): whose data it served.
#[derive(Clone, Default)]
pub(crate) struct AuditTarget(pub(crate) Arc<std::sync::Mutex<Option<String>>>);

/// The audit action of a route, `None` for routes that touch no personal data.
pub(crate) fn audit_action(method: &axum::http::Method, path: &str) -> Option<&'static str> {
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
        ("GET", ["v1", "usage"]) => "usage.read",
        _ => return None,
    })
}

/// Writes an audit entry for every authenticated call that reads or changes personal data.
/// If the entry cannot be written, a read is answered 503 (nothing leaves unaudited); a
/// change that already happened is answered as it went, and the failure is logged.
pub(crate) async fn audited(
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
    // One span per call, named by its action (never its path, which carries ids of people).
    let response =
        tracing::Instrument::instrument(next.run(request), tracing::info_span!("request", action))
            .await;
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
