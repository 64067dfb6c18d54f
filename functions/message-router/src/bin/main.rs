//! Lambda entry point: wiring only.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use relay_core::routing::Router;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relay_aws::init_tracing(relay_aws::LogFormat::Json);
    let settings = relay_aws::Settings::for_function("message-router")?;
    let clients = relay_aws::Clients::new(&relay_aws::sdk_config(None).await);
    let pseudonymizer = clients.pseudonymizer(&settings.table).await?;
    let outbound = clients.job_queue(settings.require_outbound_queue()?, None);
    let keys = settings.keyring(&clients, relay_core::Clock::system())?;
    let router = Router::new(
        Arc::new(clients.sealed_store(&settings.table, keys.clone())),
        Arc::new(clients.directory(&settings.table)),
        Arc::new(pseudonymizer),
        keys,
    )
    .with_outbound(Arc::new(outbound));
    let router = &router;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        message_router::handle(router, event.payload).await
    }))
    .await
}
