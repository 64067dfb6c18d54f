//! Lambda entry point: wiring only.

use relay_telemetry::LogFormat;
use webhook_receiver::{Receiver, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    relay_telemetry::init(LogFormat::Json);
    let aws = relay_aws::Aws::from_env("webhook-receiver").await?;
    let receiver = Receiver::build(&aws.backends(relay_core::Clock::system()).await?)?;
    lambda_http::run(router(receiver).fallback(relay_http::not_found)).await
}
