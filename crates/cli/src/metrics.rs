//! `GET /metrics` for `relay serve`, in Prometheus text format: webhooks by outcome and their
//! answer time, jobs and sends by outcome, media failures (counted where they happen, through
//! the `metrics` facade, which is a no-op on Lambda), and the queues' depth, oldest age and
//! dead letters (read at each scrape). Off unless `[server] metrics_token` is set; then a
//! scrape needs `Authorization: Bearer <token>`. No label names a person or a channel.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use relay_embedded::SqliteQueue;
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, OnceLock};

/// The answer time buckets (seconds): 360dialog wants a median under 0.25 s and under 1 %
/// above 1 s.
const ANSWER_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    token: Arc<SecretString>,
    queues: Vec<(&'static str, Arc<SqliteQueue>)>,
}

/// The process's recorder (installed once: the facade has one global recorder).
fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("relay_webhook_answer_seconds".into()),
                    ANSWER_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::error!(error = %e, "metrics recorder could not be installed");
                    None
                }
            }
        })
        .clone()
}

/// The `/metrics` route, or none when no token is configured.
pub fn router(
    token: Option<&SecretString>,
    queues: Vec<(&'static str, Arc<SqliteQueue>)>,
) -> Router {
    let (Some(token), Some(handle)) = (token, recorder()) else {
        return Router::new();
    };
    Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(Scrape {
            handle,
            token: Arc::new(token.clone()),
            queues,
        })
}

async fn scrape(State(s): State<Scrape>, headers: HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = s.token.expose_secret();
    let ok: bool = subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), expected.as_bytes()).into();
    if !ok {
        return relay_http::problem(401, "unauthorized", "Missing or invalid metrics token")
            .into_response();
    }
    for (name, queue) in &s.queues {
        // A queue that cannot be read leaves its last values; the error is logged.
        match (queue.depth(), queue.oldest_age(), queue.dlq_depth()) {
            (Ok(depth), Ok(age), Ok(dead)) => {
                metrics::gauge!("relay_queue_depth", "queue" => *name).set(depth as f64);
                metrics::gauge!("relay_queue_oldest_age_seconds", "queue" => *name)
                    .set(age.as_secs_f64());
                metrics::gauge!("relay_dead_letters", "queue" => *name).set(dead as f64);
            }
            _ => tracing::warn!(queue = name, "queue could not be read for metrics"),
        }
    }
    s.handle.run_upkeep();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.handle.render(),
    )
        .into_response()
}
