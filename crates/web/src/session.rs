//! Who is asking: the session cookie, the client's address and scheme (believing forwarded
//! headers only from trusted proxies), CSRF checks and the sign-in throttle.

use crate::Web;
use crate::i18n::{Lang, lang_of};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use relay_core::ids::TenantId;
use relay_core::records::AuditEntry;
use relay_core::staff::{self, StaffAccount, StaffSession};
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

/// The peer address of the connection, a request extension set by the server that accepted
/// it (relay serve) or from the Lambda request context (axum's own type, so any server can).
pub type ClientAddr = axum::extract::ConnectInfo<SocketAddr>;

/// The session cookie's name: with `__Host-` (bound to this origin, Secure) over HTTPS.
pub(crate) const COOKIE_SECURE: &str = "__Host-relay_session";
pub(crate) const COOKIE_PLAIN: &str = "relay_session";
/// The sign-in form's own CSRF cookie (double submit), before there is a session.
pub(crate) const LOGIN_COOKIE: &str = "relay_login";

/// A session is touched (its idle deadline moved) at most this often.
const TOUCH_EVERY_SECS: i64 = 60;

/// The header the page's script sends on its background requests: they neither count as
/// activity nor redirect (they answer 401 when the session is gone).
pub(crate) const POLL_HEADER: &str = "x-relay-poll";

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Where the request comes from and whether the browser sees HTTPS.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub address: Option<IpAddr>,
    pub https: bool,
}

pub(crate) fn origin(web: &Web, parts_headers: &HeaderMap, peer: Option<ClientAddr>) -> Origin {
    let peer_ip = peer.map(|p| p.0.ip());
    let trusted = peer_ip.is_some_and(|ip| web.settings.trusted_proxies.contains(&ip));
    let mut address = peer_ip;
    let mut https = web.settings.always_https;
    if trusted {
        // The right-most address the trusted proxy did not add itself.
        if let Some(forwarded) = parts_headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            && let Some(ip) = forwarded
                .split(',')
                .rev()
                .filter_map(|s| s.trim().parse::<IpAddr>().ok())
                .find(|ip| !web.settings.trusted_proxies.contains(ip))
        {
            address = Some(ip);
        }
        if parts_headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
        {
            https = true;
        }
    }
    Origin { address, https }
}

pub(crate) fn session_cookie(token: &str, https: bool, max_age: i64) -> String {
    let (name, secure) = if https {
        (COOKIE_SECURE, "; Secure")
    } else {
        (COOKIE_PLAIN, "")
    };
    format!("{name}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

pub(crate) fn clear_session_cookies() -> [String; 2] {
    [
        format!("{COOKIE_SECURE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"),
        format!("{COOKIE_PLAIN}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    ]
}

/// A signed-in staff member.
pub(crate) struct Signed {
    pub account: StaffAccount,
    pub session: StaffSession,
    pub lang: Lang,
}

impl Signed {
    pub fn tenant(&self) -> &TenantId {
        &self.account.tenant
    }

    /// What the audit log names: the person, never their email.
    pub fn actor(&self) -> String {
        format!("staff:{}", self.account.id)
    }
}

/// Not signed in: pages go to the sign-in page, background requests get 401.
pub(crate) enum NotSignedIn {
    Redirect,
    Unauthorized,
    Unavailable,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::Redirect => Redirect::to("/login").into_response(),
            NotSignedIn::Unauthorized => StatusCode::UNAUTHORIZED.into_response(),
            NotSignedIn::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                "The inbox store is unavailable; try again shortly.",
            )
                .into_response(),
        }
    }
}

impl FromRequestParts<Web> for Signed {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let polling = parts.headers.contains_key(POLL_HEADER);
        let missing = || {
            if polling {
                NotSignedIn::Unauthorized
            } else {
                NotSignedIn::Redirect
            }
        };
        let token = cookie(&parts.headers, COOKIE_SECURE)
            .or_else(|| cookie(&parts.headers, COOKIE_PLAIN))
            .ok_or_else(missing)?;
        if token.len() > 64 {
            return Err(missing());
        }
        let digest = staff::token_digest(token);
        let now = web.clock.now();
        let unavailable = |e: relay_core::ports::StoreError| {
            tracing::error!(error = %e, "session lookup failed");
            NotSignedIn::Unavailable
        };
        let session = web
            .staff
            .session(&digest, now)
            .await
            .map_err(unavailable)?
            .ok_or_else(missing)?;
        let account = web
            .staff
            .staff(&session.tenant, &session.staff_id)
            .await
            .map_err(unavailable)?
            // Removed, or the password was reset after this session began.
            .filter(|a| session.created_at >= a.sessions_valid_after)
            .ok_or_else(missing)?;
        if !polling && now - session.last_seen >= TOUCH_EVERY_SECS {
            let deadline = now + web.settings.idle_timeout_secs;
            if let Err(e) = web.staff.touch_session(&digest, now, deadline).await {
                tracing::warn!(error = %e, "session touch failed");
            }
        }
        Ok(Signed {
            account,
            session,
            lang: lang_of(&parts.headers),
        })
    }
}

impl axum::extract::OptionalFromRequestParts<Web> for Signed {
    type Rejection = NotSignedIn;

    async fn from_request_parts(
        parts: &mut Parts,
        web: &Web,
    ) -> Result<Option<Self>, Self::Rejection> {
        match <Signed as FromRequestParts<Web>>::from_request_parts(parts, web).await {
            Ok(s) => Ok(Some(s)),
            Err(NotSignedIn::Unavailable) => Err(NotSignedIn::Unavailable),
            Err(_) => Ok(None),
        }
    }
}

/// A state change must carry the session's CSRF token, and come from this origin where the
/// browser says where it comes from.
pub(crate) fn check_csrf(signed: &Signed, token: &str, headers: &HeaderMap) -> bool {
    same_origin(headers) && bool::from(signed.session.csrf.as_bytes().ct_eq(token.as_bytes()))
}

/// `Sec-Fetch-Site` (sent by every current browser) or, failing that, `Origin` against `Host`.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host)),
        // Neither header: not a browser's cross-site form post.
        _ => true,
    }
}

/// Appends an audit entry; a failure is logged (the action itself stands).
pub(crate) async fn audit(
    web: &Web,
    tenant: &TenantId,
    actor: String,
    action: &str,
    target: Option<String>,
    result: u16,
) {
    let entry = AuditEntry {
        at_ms: web.clock.now_ms(),
        tenant: tenant.clone(),
        actor,
        action: action.to_owned(),
        target,
        result,
        expires_at: web.clock.now() + web.audit_retention_secs,
    };
    if let Err(e) = web.audit.append(&entry).await {
        tracing::error!(error = %e, action, "audit append failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; relay_session=tok; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE_PLAIN), Some("tok"));
        assert_eq!(cookie(&h, COOKIE_SECURE), None);
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("inbox.example"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://inbox.example"),
        );
        assert!(same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h), "Sec-Fetch-Site decides when present");
    }

    #[test]
    fn secure_cookies_are_host_bound() {
        let c = session_cookie("t", true, 60);
        assert!(c.starts_with("__Host-relay_session=t;") && c.contains("Secure"));
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict"));
        assert!(!session_cookie("t", false, 60).contains("Secure"));
    }
}
