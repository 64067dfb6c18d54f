//! Lambda entry point: wiring only.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use relay_telemetry::LogFormat;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relay_telemetry::init(LogFormat::Json);
    let aws = relay_aws::Aws::from_env("message-router").await?;
    let router = &aws.backends(relay_core::Clock::system()).await?.router();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        message_router::handle(router, event.payload).await
    }))
    .await
}
