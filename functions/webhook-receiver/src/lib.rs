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
use relay_core::envelope::{Owner, pieces_by_owner, sealed_envelopes};
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
    /// Seals queued webhooks under the key of the customer they are about.
    pub keys: Arc<Keyring>,
    /// Names those keys (a customer's key is named by their pseudonymous contact id).
    pub pseudonymizer: Arc<relay_core::ids::Pseudonymizer>,
    /// Bodies above this get 413.
    pub max_body_bytes: usize,
}

impl Receiver {
    /// The receiver of a process, from its backends.
    pub fn build(
        b: &relay_core::backends::Backends,
    ) -> Result<Self, relay_core::backends::Missing> {
        Ok(Receiver {
            directory: b.directory.clone(),
            queue: b.inbound()?,
            keys: b.keys.clone(),
            pseudonymizer: b.pseudonymizer.clone(),
            max_body_bytes: b.limits.max_body_bytes,
        })
    }
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

/// The in-process work of one webhook before sealing: authenticate, validate, cut into pieces
/// about one WhatsApp user each. Separate from the handler so that it can be benchmarked.
pub fn prepare(
    channel: &relay_core::tenant::Channel,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(Option<Owner>, serde_json::Value)>, ProblemResponse> {
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
    Ok(pieces_by_owner(value))
}

/// Seals each piece (under its owner's contact key, or the tenant's transit key) into queue
/// bodies of at most `max_message_bytes`.
pub fn seal(
    channel: &relay_core::tenant::Channel,
    pieces: Vec<(Sealer, serde_json::Value)>,
    max_message_bytes: usize,
    received_at_ms: i64,
) -> Result<Vec<String>, ProblemResponse> {
    sealed_envelopes(
        &channel.phone_number_id,
        received_at_ms,
        &channel.tenant_id,
        pieces,
        max_message_bytes,
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

/// The sealer of each piece: its owner's key (created on a customer's first message), the
/// tenant's transit key for pieces about nobody. Read per webhook (the current generation), so
/// nothing is sealed under a key that an erasure destroyed.
async fn sealers(
    state: &Receiver,
    tenant: &relay_core::ids::TenantId,
    pieces: Vec<(Option<Owner>, serde_json::Value)>,
    now: i64,
) -> Result<Vec<(Sealer, serde_json::Value)>, relay_core::crypto::CryptoError> {
    let mut known: Vec<(Option<Owner>, Sealer)> = Vec::new();
    let mut out = Vec::with_capacity(pieces.len());
    for (owner, piece) in pieces {
        let sealer = match known.iter().find(|(o, _)| *o == owner) {
            Some((_, s)) => s.clone(),
            None => {
                let s = match &owner {
                    Some(o) => {
                        let keyref = state.pseudonymizer.contact_id(tenant, o.identity());
                        state
                            .keys
                            .sealer(
                                tenant,
                                keyref.as_str(),
                                Some(now + relay_core::crypto::TRANSIT_KEY_EXTRA_SECS),
                            )
                            .await?
                    }
                    None => state.keys.transit_sealer(tenant, now).await?,
                };
                known.push((owner, s.clone()));
                s
            }
        };
        out.push((sealer, piece));
    }
    Ok(out)
}

/// Webhooks answered, by outcome (`accepted`, or the refusal's kind), and how long the answer
/// took: what an operator watches (360dialog wants a median under 250 ms). No label names a
/// channel or a person.
async fn receive(
    state: State<Receiver>,
    path: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = receive_webhook(state, path, headers, body).await;
    let outcome = match response.status().as_u16() {
        200 => "accepted",
        400 => "bad_request",
        401 => "unauthorized",
        413 => "too_large",
        415 => "unsupported_media_type",
        503 => "unavailable",
        _ => "other",
    };
    metrics::counter!("relay_webhooks_total", "outcome" => outcome).increment(1);
    metrics::histogram!("relay_webhook_answer_seconds").record(started.elapsed().as_secs_f64());
    response
}

/// One span per webhook, so its lines belong together; the channel is recorded once its id
/// is known to be one (never the raw path).
#[tracing::instrument(name = "webhook", skip_all, fields(phone_number_id = tracing::field::Empty))]
async fn receive_webhook(
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
    tracing::Span::current().record("phone_number_id", phone_number_id.as_str());
    if let Err(p) = relay_http::json_content_type(&headers) {
        return p.into_response();
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
    let now_ms = state.keys.clock().now_ms();
    let refused = |p: ProblemResponse| {
        tracing::warn!(phone_number_id = %phone_number_id, status = p.0.status, problem = p.0.slug(), bytes = body.len(), "webhook refused");
        p.into_response()
    };
    let pieces = match prepare(&channel, &headers, &body) {
        Ok(p) => p,
        Err(p) => return refused(p),
    };
    let pieces = match sealers(&state, &channel.tenant_id, pieces, now_ms / 1000).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "data keys unavailable; answering 503 so the sender retries");
            return problem(
                503,
                "keys-unavailable",
                "The webhook could not be sealed; retry later",
            )
            .into_response();
        }
    };
    let bodies = match seal(&channel, pieces, state.queue.max_message_bytes(), now_ms) {
        Ok(b) => b,
        Err(p) => return refused(p),
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
