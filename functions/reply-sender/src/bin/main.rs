//! Lambda entry point: wiring only.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use relay_telemetry::LogFormat;
use reply_sender::Sender;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relay_telemetry::init(LogFormat::Json);
    let aws = relay_aws::Aws::from_env("reply-sender").await?;
    let sender = &Sender::build(&aws.backends_with_media(relay_core::Clock::system()).await?)?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        reply_sender::handle(sender, event.payload).await
    }))
    .await
}
