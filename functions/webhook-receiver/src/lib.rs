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
use relay_core::envelope::{
    Addressee, Owner, pieces_by_owner, sealed_envelopes, split_by_addressee,
};
use relay_core::ports::{Directory, InboundQueue, QueueError};
use relay_core::tenant::{AuthHeaders, WebhookAuth};
use relay_core::webhook::{PayloadError, validate_webhook};
use relay_http::{ProblemResponse, detailed, problem};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

pub const WEBHOOK_ROUTE: &str = "/webhooks/whatsapp/{phone_number_id}";
/// A Meta app's one callback URL: the webhooks of all its numbers.
pub const META_APP_ROUTE: &str = "/webhooks/meta/{app_id}";
/// Every route of the receiver (method, path), served at its Function URL (template.yaml).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", WEBHOOK_ROUTE),
    ("GET", WEBHOOK_ROUTE),
    ("POST", META_APP_ROUTE),
    ("GET", META_APP_ROUTE),
];

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
        .route(
            META_APP_ROUTE,
            post(receive_app).get(verify_app_subscription),
        )
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
    authenticate(&channel.auth, headers, body).map(pieces_by_owner)
}

/// Checks a webhook's credentials, then that it is JSON and a webhook.
pub fn authenticate(
    expected: &WebhookAuth,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, ProblemResponse> {
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
    if !expected.verify(&auth, body) {
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
    Ok(value)
}

/// Seals each piece (under its owner's contact key, or the tenant's transit key) into queue
/// bodies of at most `max_message_bytes`.
pub fn seal(
    channel: &relay_core::tenant::Channel,
    pieces: Vec<(Sealer, serde_json::Value)>,
    max_message_bytes: usize,
    received_at_ms: i64,
) -> Result<Vec<String>, ProblemResponse> {
    seal_for(
        (&channel.phone_number_id, None),
        &channel.tenant_id,
        pieces,
        max_message_bytes,
        received_at_ms,
    )
}

fn seal_for(
    addressed: (&str, Option<&str>),
    tenant: &relay_core::ids::TenantId,
    pieces: Vec<(Sealer, serde_json::Value)>,
    max_message_bytes: usize,
    received_at_ms: i64,
) -> Result<Vec<String>, ProblemResponse> {
    sealed_envelopes(addressed, received_at_ms, tenant, pieces, max_message_bytes).map_err(|e| {
        match e {
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
        }
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
    count_answer(&response, started);
    response
}

fn count_answer(response: &Response, started: Instant) {
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
}

/// The body, or the answer to a body that could not be read.
// The answer is returned at once, once per request: no need to box it.
#[allow(clippy::result_large_err)]
fn readable(state: &Receiver, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
    match body {
        Ok(b) => Ok(b),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::warn!(
                limit = state.max_body_bytes,
                "webhook refused: body too large"
            );
            Err(problem(
                413,
                "too-large",
                "The body is larger than this endpoint accepts",
            )
            .into_response())
        }
        Err(_) => {
            Err(problem(400, "unreadable-body", "The body could not be read").into_response())
        }
    }
}

fn queued() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"queued"}"#,
    )
        .into_response()
}

fn keys_unavailable(e: &relay_core::crypto::CryptoError) -> Response {
    tracing::error!(error = %e, "data keys unavailable; answering 503 so the sender retries");
    problem(
        503,
        "keys-unavailable",
        "The webhook could not be sealed; retry later",
    )
    .into_response()
}

fn directory_unavailable(e: &relay_core::ports::StoreError) -> Response {
    tracing::error!(error = %e, "channel lookup failed");
    problem(
        503,
        "directory-unavailable",
        "Channel lookup failed; retry later",
    )
    .into_response()
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
    let body = match readable(&state, body) {
        Ok(b) => b,
        Err(answer) => return answer,
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
        Err(e) => return directory_unavailable(&e),
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
    let max = state.queue.max_message_bytes();
    let queue_unavailable = |e: &QueueError| {
        tracing::error!(phone_number_id = %phone_number_id, error = %e, "enqueue failed; answering 503 so the sender retries");
        problem(
            503,
            "queue-unavailable",
            "The webhook could not be queued; retry later",
        )
        .into_response()
    };
    // Warm: sealed under the keys this instance last read as current, and the check that they
    // still are runs alongside the enqueue — one round trip. A key destroyed meanwhile (an
    // erasure on another instance) makes the webhook go out again under the current key; the
    // copy under the destroyed one is unreadable and the router drops it.
    let mut requeued = false;
    if let Some((warm, checks)) =
        recent_sealers(&state, &channel.tenant_id, &pieces, now_ms / 1000).await
    {
        let bodies = match seal(&channel, warm, max, now_ms) {
            Ok(b) => b,
            Err(p) => return refused(p),
        };
        let (sent, current) = tokio::join!(
            state.queue.enqueue(&bodies),
            all_current(&state.keys, &checks)
        );
        match (sent, current) {
            (Err(e), _) => return queue_unavailable(&e),
            (Ok(()), Err(e)) => return keys_unavailable(&e),
            (Ok(()), Ok(true)) => return webhook_queued(&channel, &body, bodies.len(), started),
            (Ok(()), Ok(false)) => requeued = true,
        }
    }
    let pieces = match sealers(&state, &channel.tenant_id, pieces, now_ms / 1000).await {
        Ok(p) => p,
        Err(e) => return keys_unavailable(&e),
    };
    let bodies = match seal(&channel, pieces, max, now_ms) {
        Ok(b) => b,
        Err(p) => return refused(p),
    };
    if let Err(e) = state.queue.enqueue(&bodies).await {
        return queue_unavailable(&e);
    }
    if requeued {
        tracing::info!(
            tenant = %channel.tenant_id,
            "a key changed since this instance read it: webhook queued again under the current one"
        );
    }
    webhook_queued(&channel, &body, bodies.len(), started)
}

/// The answer to a webhook that was queued, and its log line.
fn webhook_queued(
    channel: &relay_core::tenant::Channel,
    body: &[u8],
    pieces: usize,
    started: Instant,
) -> Response {
    tracing::info!(
        phone_number_id = %channel.phone_number_id,
        tenant = %channel.tenant_id,
        bytes = body.len(),
        pieces,
        micros = started.elapsed().as_micros() as u64,
        "webhook queued"
    );
    queued()
}

/// Each piece with the sealer this instance last read as current for its owner (the transit
/// key for pieces about nobody), if it has one for every owner, and the contact keys among
/// them, each once (what must be checked); `None` sends the webhook the cold way, reading
/// each key first.
#[allow(clippy::type_complexity)]
async fn recent_sealers(
    state: &Receiver,
    tenant: &relay_core::ids::TenantId,
    pieces: &[(Option<Owner>, serde_json::Value)],
    now: i64,
) -> Option<(Vec<(Sealer, serde_json::Value)>, Vec<Sealer>)> {
    let mut out = Vec::with_capacity(pieces.len());
    let mut checks: Vec<Sealer> = Vec::new();
    for (owner, piece) in pieces {
        let sealer = match owner {
            Some(o) => {
                let keyref = state.pseudonymizer.contact_id(tenant, o.identity());
                let s = state.keys.recent_sealer(
                    tenant,
                    keyref.as_str(),
                    Some(now + relay_core::crypto::TRANSIT_KEY_EXTRA_SECS),
                )?;
                if !checks.iter().any(|c| c.keyref() == s.keyref()) {
                    checks.push(s.clone());
                }
                s
            }
            // Transit keys are never destroyed early: cached for their day.
            None => state.keys.transit_sealer(tenant, now).await.ok()?,
        };
        out.push((sealer, piece.clone()));
    }
    Some((out, checks))
}

/// Whether every one of `sealers` is still its key's current generation.
async fn all_current(
    keys: &Keyring,
    sealers: &[Sealer],
) -> Result<bool, relay_core::crypto::CryptoError> {
    for s in sealers {
        if !keys.is_current(s).await? {
            return Ok(false);
        }
    }
    Ok(true)
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
    handshake(&channel.auth, &q)
}

fn handshake(auth: &WebhookAuth, q: &Subscription) -> Response {
    let challenge = q
        .challenge
        .as_deref()
        .filter(|c| c.len() <= 256 && c.bytes().all(|b| b.is_ascii_graphic()));
    match auth.verify_subscription(q.mode.as_deref(), q.verify_token.as_deref(), challenge) {
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
async fn receive_app(
    state: State<Receiver>,
    path: Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = receive_app_webhook(state, path, headers, body).await;
    count_answer(&response, started);
    response
}

/// A webhook to a Meta app's URL: signed with the app secret, about any of the app's numbers
/// (and their accounts). Each part goes to the channel its number (or account) names, sealed
/// for that channel's tenant, but only if that channel is one of this app's: a part about any
/// other number is queued for quarantine, sealed for no tenant.
#[tracing::instrument(name = "app_webhook", skip_all, fields(app = tracing::field::Empty))]
async fn receive_app_webhook(
    State(state): State<Receiver>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match readable(&state, body) {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    if !valid_phone_number_id(&app_id) {
        return unauthorized().into_response();
    }
    if let Err(p) = relay_http::json_content_type(&headers) {
        return p.into_response();
    }
    let app = match state.directory.meta_app(&app_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            // Spend what a signature check costs, so timing does not tell unknown apps apart.
            std::hint::black_box(relay_core::tenant::verify_hmac_hex(b"", &body, b"00"));
            tracing::warn!(id_len = app_id.len(), "webhook refused: unknown Meta app");
            return unauthorized().into_response();
        }
        Err(e) => return directory_unavailable(&e),
    };
    tracing::Span::current().record("app", app_id.as_str());
    let value = match authenticate(&app.auth(), &headers, &body) {
        Ok(v) => v,
        Err(p) => {
            tracing::warn!(
                status = p.0.status,
                problem = p.0.slug(),
                bytes = body.len(),
                "webhook refused"
            );
            return p.into_response();
        }
    };
    let now_ms = state.keys.clock().now_ms();
    let max = state.queue.max_message_bytes();
    let mut bodies = Vec::new();
    let mut outside = 0usize;
    for (addressee, part) in split_by_addressee(value) {
        let channel = match &addressee {
            Addressee::Number(n) => state.directory.channel(n).await,
            Addressee::Account(w) => state.directory.waba_channel(w).await,
        };
        let channel = match channel {
            Ok(c) => c.filter(|c| c.meta_app.as_deref() == Some(app_id.as_str())),
            Err(e) => return directory_unavailable(&e),
        };
        let sealed = match channel {
            Some(c) => {
                let pieces =
                    match sealers(&state, &c.tenant_id, pieces_by_owner(part), now_ms / 1000).await
                    {
                        Ok(p) => p,
                        Err(e) => return keys_unavailable(&e),
                    };
                seal_for(
                    (&c.phone_number_id, Some(&app_id)),
                    &c.tenant_id,
                    pieces,
                    max,
                    now_ms,
                )
            }
            None => {
                outside += 1;
                let system = relay_core::ids::TenantId::system();
                let sealer = match state.keys.transit_sealer(&system, now_ms / 1000).await {
                    Ok(s) => s,
                    Err(e) => return keys_unavailable(&e),
                };
                let named = match &addressee {
                    Addressee::Number(n) if valid_phone_number_id(n) => n.as_str(),
                    _ => "",
                };
                seal_for(
                    (named, Some(&app_id)),
                    &system,
                    vec![(sealer, part)],
                    max,
                    now_ms,
                )
            }
        };
        match sealed {
            Ok(mut b) => bodies.append(&mut b),
            Err(p) => {
                tracing::warn!(
                    status = p.0.status,
                    problem = p.0.slug(),
                    bytes = body.len(),
                    "webhook refused"
                );
                return p.into_response();
            }
        }
    }
    if let Err(e) = state.queue.enqueue(&bodies).await {
        tracing::error!(error = %e, "enqueue failed; answering 503 so the sender retries");
        return problem(
            503,
            "queue-unavailable",
            "The webhook could not be queued; retry later",
        )
        .into_response();
    }
    if outside > 0 {
        tracing::warn!(
            parts = outside,
            "webhook names numbers outside the app: queued for quarantine"
        );
    }
    tracing::info!(
        bytes = body.len(),
        pieces = bodies.len(),
        micros = started.elapsed().as_micros() as u64,
        "webhook queued"
    );
    queued()
}

/// Meta's subscription handshake for an app's URL.
async fn verify_app_subscription(
    State(state): State<Receiver>,
    Path(app_id): Path<String>,
    query: Result<Query<Subscription>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return problem(400, "bad-query", "The query string is malformed").into_response();
    };
    if !valid_phone_number_id(&app_id) {
        return unauthorized().into_response();
    }
    let auth = match state.directory.meta_app(&app_id).await {
        Ok(Some(a)) => a.auth(),
        Ok(None) => return unauthorized().into_response(),
        Err(e) => return directory_unavailable(&e),
    };
    handshake(&auth, &q)
}
