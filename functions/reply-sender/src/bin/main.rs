//! Lambda entry point: wiring only.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use reply_sender::{ChannelLimiter, RetryPolicy, Sender};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    relay_aws::init_tracing(relay_aws::LogFormat::Json);
    let settings = relay_aws::Settings::for_function("reply-sender")?;
    let clients = relay_aws::Clients::new(&relay_aws::sdk_config(None).await);
    let clock = relay_core::Clock::system();
    let keys = settings.keyring(&clients, clock.clone())?;
    // One HTTP client for 360dialog and forwards: one TLS setup at cold start.
    let whatsapp = relay_whatsapp::WhatsAppClient::default();
    let sender = Sender {
        store: Arc::new(clients.sealed_store(&settings.table, keys.clone())),
        keys,
        blobs: Arc::new(clients.blob_store(settings.require_media_bucket()?)),
        max_media_bytes: settings.max_media_bytes,
        directory: Arc::new(clients.directory(&settings.table)),
        control: Arc::new(clients.job_queue(
            settings.require_outbound_queue()?,
            settings.outbound_dlq_url.clone(),
        )),
        pseudonymizer: Arc::new(clients.pseudonymizer(&settings.table).await?),
        http: whatsapp.http(),
        whatsapp,
        limiter: ChannelLimiter::default(),
        policy: RetryPolicy::default(),
        clock,
        concurrency: settings.sender_concurrency,
    };
    let sender = &sender;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        reply_sender::handle(sender, event.payload).await
    }))
    .await
}
