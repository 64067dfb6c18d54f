//! webhook-receiver: authenticates WhatsApp webhooks (360dialog or Meta), checks they are
//! webhooks, and puts them durably on the inbound queue. It answers 200 only after the queue
//! took every piece; anything it cannot enqueue gets 503 so the sender retries.
//!
//! The router is the same on Lambda (`lambda_http`) and in `relay serve`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use relay_core::crypto::{Keyring, Sealer};
use relay_core::envelope::envelopes;
use relay_core::ports::{Directory, InboundQueue, QueueError};
use relay_core::tenant::AuthHeaders;
use relay_core::webhook::{PayloadError, validate_webhook};
use relay_http::{ProblemResponse, detailed, problem};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

pub const WEBHOOK_ROUTE: &str = "/webhooks/whatsapp/{phone_number_id}";

/// What the receiver needs; cheap to clone.
#[derive(Clone)]
pub struct Receiver {
    pub directory: Arc<dyn Directory>,
    pub queue: Arc<dyn InboundQueue>,
    /// Seals queued webhooks under the tenant's transit key.
    pub keys: Arc<Keyring>,
    /// Bodies above this get 413.
    pub max_body_bytes: usize,
}

pub fn router(state: Receiver) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route(WEBHOOK_ROUTE, post(receive).get(verify_subscription))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Every authentication failure looks the same, unknown channels included, so that the
/// answer does not tell which phone number ids exist.
fn unauthorized() -> ProblemResponse {
    problem(
        401,
        "unauthorized",
        "Missing or invalid webhook credentials",
    )
}

fn valid_phone_number_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The in-process work of one webhook: authenticate, validate, cut into queue bodies.
/// Separate from the handler so that it can be benchmarked without a queue.
pub fn prepare(
    channel: &relay_core::tenant::Channel,
    headers: &HeaderMap,
    body: &[u8],
    max_message_bytes: usize,
    received_at_ms: i64,
    sealer: Option<&Sealer>,
) -> Result<Vec<String>, ProblemResponse> {
    let auth = AuthHeaders {
        authorization: headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        dialog360_signature: headers
            .get("x-360dialog-signature")
            .map(HeaderValue::as_bytes),
        hub_signature_256: headers
            .get("x-hub-signature-256")
            .map(HeaderValue::as_bytes),
    };
    if !channel.auth.verify(&auth, body) {
        return Err(unauthorized());
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        let detail = PayloadError::NotJson {
            line: e.line(),
            column: e.column(),
        }
        .to_string();
        detailed(400, "not-json", "The body is not JSON", detail)
    })?;
    validate_webhook(&value).map_err(|e| {
        detailed(
            400,
            "not-a-webhook",
            "The body is not a WhatsApp webhook",
            e.to_string(),
        )
    })?;
    envelopes(
        &channel.phone_number_id,
        received_at_ms,
        value,
        max_message_bytes,
        sealer.map(|s| (&channel.tenant_id, s)),
    )
    .map_err(|e| match e {
        QueueError::TooLarge { .. } => detailed(
            413,
            "too-large",
            "A single event of this webhook is larger than the queue takes",
            e.to_string(),
        ),
        QueueError::Unavailable(_) => problem(
            503,
            "queue-unavailable",
            "The queue is unavailable; retry later",
        ),
    })
}

async fn receive(
    State(state): State<Receiver>,
    Path(phone_number_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::warn!(
                limit = state.max_body_bytes,
                "webhook refused: body too large"
            );
            return problem(
                413,
                "too-large",
                "The body is larger than this endpoint accepts",
            )
            .into_response();
        }
        Err(_) => {
            return problem(400, "unreadable-body", "The body could not be read").into_response();
        }
    };
    if !valid_phone_number_id(&phone_number_id) {
        return unauthorized().into_response();
    }
    let channel = match state.directory.channel(&phone_number_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            // Spend what a token check costs, so timing does not tell unknown channels apart.
            let presented = headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            std::hint::black_box(relay_core::ids::secret_digest(&String::from_utf8_lossy(
                presented,
            )));
            // The id is caller-chosen digits here (no channel has it): not logged.
            tracing::warn!(
                id_len = phone_number_id.len(),
                "webhook refused: unknown channel"
            );
            return unauthorized().into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "channel lookup failed");
            return problem(
                503,
                "directory-unavailable",
                "Channel lookup failed; retry later",
            )
            .into_response();
        }
    };
    let now_ms = relay_core::unix_now_ms();
    let sealer = match state
        .keys
        .transit_sealer(&channel.tenant_id, now_ms / 1000)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "transit key unavailable; answering 503 so the sender retries");
            return problem(
                503,
                "keys-unavailable",
                "The webhook could not be sealed; retry later",
            )
            .into_response();
        }
    };
    let bodies = match prepare(
        &channel,
        &headers,
        &body,
        state.queue.max_message_bytes(),
        now_ms,
        Some(&sealer),
    ) {
        Ok(b) => b,
        Err(p) => {
            tracing::warn!(phone_number_id = %phone_number_id, status = p.0.status, problem = p.0.slug(), bytes = body.len(), "webhook refused");
            return p.into_response();
        }
    };
    if let Err(e) = state.queue.enqueue(&bodies).await {
        tracing::error!(phone_number_id = %phone_number_id, error = %e, "enqueue failed; answering 503 so the sender retries");
        return problem(
            503,
            "queue-unavailable",
            "The webhook could not be queued; retry later",
        )
        .into_response();
    }
    tracing::info!(
        phone_number_id = %phone_number_id,
        tenant = %channel.tenant_id,
        bytes = body.len(),
        pieces = bodies.len(),
        micros = started.elapsed().as_micros() as u64,
        "webhook queued"
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"queued"}"#,
    )
        .into_response()
}

#[derive(Deserialize)]
struct Subscription {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's subscription handshake: echo `hub.challenge` when `hub.verify_token` matches.
async fn verify_subscription(
    State(state): State<Receiver>,
    Path(phone_number_id): Path<String>,
    query: Result<Query<Subscription>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return problem(400, "bad-query", "The query string is malformed").into_response();
    };
    if !valid_phone_number_id(&phone_number_id) {
        return unauthorized().into_response();
    }
    let channel = match state.directory.channel(&phone_number_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return unauthorized().into_response(),
        Err(_) => {
            return problem(
                503,
                "directory-unavailable",
                "Channel lookup failed; retry later",
            )
            .into_response();
        }
    };
    let challenge = q
        .challenge
        .as_deref()
        .filter(|c| c.len() <= 256 && c.bytes().all(|b| b.is_ascii_graphic()));
    match channel
        .auth
        .verify_subscription(q.mode.as_deref(), q.verify_token.as_deref(), challenge)
    {
        Some(challenge) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            challenge.to_owned(),
        )
            .into_response(),
        None => unauthorized().into_response(),
    }
}
