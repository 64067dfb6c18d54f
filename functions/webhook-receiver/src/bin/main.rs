//! Lambda entry point: wiring only.

use std::sync::Arc;
use webhook_receiver::{Receiver, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    relay_aws::init_tracing(relay_aws::LogFormat::Json);
    let settings = relay_aws::Settings::for_function("webhook-receiver")?;
    let clients = relay_aws::Clients::new(&relay_aws::sdk_config(None).await);
    let receiver = Receiver {
        directory: Arc::new(clients.directory(&settings.table)),
        queue: Arc::new(clients.inbound_queue(settings.require_inbound_queue()?)),
        keys: settings.keyring(&clients, relay_core::Clock::system())?,
        pseudonymizer: Arc::new(clients.pseudonymizer(&settings.table).await?),
        max_body_bytes: settings.max_body_bytes,
    };
    lambda_http::run(router(receiver).fallback(relay_http::not_found)).await
}
