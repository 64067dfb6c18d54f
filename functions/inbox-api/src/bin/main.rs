//! Lambda entry point: wiring only.

use inbox_api::{Inbox, router};
use relay_telemetry::LogFormat;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    relay_telemetry::init(LogFormat::Json);
    let aws = relay_aws::Aws::from_env("inbox-api").await?;
    let inbox = Inbox::build(&aws.backends_with_media(relay_core::Clock::system()).await?)?;
    lambda_http::run(router(inbox).fallback(relay_http::not_found)).await
}
