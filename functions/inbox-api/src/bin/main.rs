//! Lambda entry point: wiring only.

use inbox_api::{Inbox, router};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    relay_aws::init_tracing(relay_aws::LogFormat::Json);
    let settings = relay_aws::Settings::for_function("inbox-api")?;
    let clients = relay_aws::Clients::new(&relay_aws::sdk_config(None).await);
    let inbox = Inbox {
        directory: Arc::new(clients.directory(&settings.table)),
        store: Arc::new(clients.store(&settings.table)),
        outbound: Arc::new(clients.job_queue(settings.require_outbound_queue()?, None)),
        clock: relay_core::system_clock(),
    };
    lambda_http::run(router(inbox).fallback(relay_http::not_found)).await
}
