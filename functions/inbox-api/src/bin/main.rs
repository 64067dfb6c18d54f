//! Lambda entry point: wiring only. Serves the inbox API and the staff web inbox (one
//! function: they share the use cases, the stores and the warm instances).

use relay_telemetry::LogFormat;
use std::net::{IpAddr, SocketAddr};

/// The caller's address from API Gateway's request context (the web inbox's sign-in
/// throttle keys on it); API Gateway sets it, clients cannot.
async fn client_addr(mut req: axum::extract::Request) -> axum::extract::Request {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    let ip = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) => c
            .http
            .source_ip
            .as_deref()
            .and_then(|s| s.parse::<IpAddr>().ok()),
        _ => None,
    };
    if let Some(ip) = ip {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::new(ip, 0)));
    }
    req
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    relay_telemetry::init(LogFormat::Json);
    let aws = relay_aws::Aws::from_env("inbox-api").await?;
    let backends = aws.backends_with_media(relay_core::Clock::system()).await?;
    let settings = relay_web::WebSettings {
        // API Gateway serves HTTPS only.
        always_https: true,
        ..Default::default()
    };
    let app = inbox_api::function_router(&backends, settings)?
        .fallback(relay_http::not_found)
        .layer(axum::middleware::map_request(client_addr));
    lambda_http::run(app).await
}
