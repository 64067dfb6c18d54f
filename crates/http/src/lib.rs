//! Shared by the HTTP functions (webhook-receiver, inbox-api) and `relay serve`: problem
//! responses, bearer extraction, tracing setup and serving stored files (`files`). Depends on
//! axum, never on AWS.

pub mod files;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
pub use relay_core::problem::Problem;

/// An RFC 9457 problem as an axum response.
#[derive(Debug)]
pub struct ProblemResponse(pub Problem);

impl From<Problem> for ProblemResponse {
    fn from(p: Problem) -> Self {
        ProblemResponse(p)
    }
}

impl IntoResponse for ProblemResponse {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(relay_core::problem::CONTENT_TYPE),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

pub fn problem(status: u16, slug: &str, title: &str) -> ProblemResponse {
    ProblemResponse(Problem::new(status, slug, title))
}

/// A problem with a `detail` (written for people; never payload content or secrets).
pub fn detailed(
    status: u16,
    slug: &str,
    title: &str,
    detail: impl Into<String>,
) -> ProblemResponse {
    ProblemResponse(Problem::new(status, slug, title).with_detail(detail))
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let token = relay_core::tenant::bearer_token(value)?;
    std::str::from_utf8(token).ok()
}

/// The fallback for unknown routes: a 404 problem, not an empty body.
pub async fn not_found() -> ProblemResponse {
    problem(404, "not-found", "No such resource")
}

/// A JSON body's `Content-Type` is absent or JSON (`application/json`, `…+json`, any
/// parameters); anything else is a 415 problem (nothing is parsed or queued).
pub fn json_content_type(headers: &HeaderMap) -> Result<(), ProblemResponse> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = v.to_str().ok().map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        Some(e) if e.starts_with("application/") && e.ends_with("+json") => Ok(()),
        _ => Err(detailed(
            415,
            "unsupported-media-type",
            "The body must be JSON",
            "send Content-Type: application/json",
        )),
    }
}

#[cfg(test)]
mod content_type_tests {
    use super::*;

    #[test]
    fn json_or_nothing() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            json_content_type(&h).is_ok()
        };
        assert!(json_content_type(&HeaderMap::new()).is_ok());
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/problem+json"));
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "json",
            "",
        ] {
            assert!(!with(bad), "{bad}");
        }
    }
}
