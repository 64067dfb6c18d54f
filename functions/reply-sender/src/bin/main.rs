//! Lambda entry point: wiring only.

use lambda_runtime::{LambdaEvent, service_fn};
use relay_telemetry::LogFormat;
use reply_sender::Sender;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relay_telemetry::init(LogFormat::Json);
    let aws = relay_aws::Aws::from_env("reply-sender").await?;
    let sender = &Sender::build(&aws.backends_with_media(relay_core::Clock::system()).await?)?;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            match reply_sender::Invocation::of(event.payload)? {
                reply_sender::Invocation::Jobs(batch) => Ok(serde_json::to_value(
                    reply_sender::handle(sender, batch).await?,
                )?),
                reply_sender::Invocation::Schedule => {
                    reply_sender::sweep_notices(sender).await?;
                    Ok::<_, lambda_runtime::Error>(serde_json::Value::Null)
                }
            }
        },
    ))
    .await
}
