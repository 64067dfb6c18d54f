//! Lambda entry point: wiring only.

use inbox_api::{Inbox, router};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    relay_aws::init_tracing(relay_aws::LogFormat::Json);
    let settings = relay_aws::Settings::for_function("inbox-api")?;
    let clients = relay_aws::Clients::new(&relay_aws::sdk_config(None).await);
    let clock = relay_core::Clock::system();
    let keys = settings.keyring(&clients, clock.clone())?;
    let store = Arc::new(clients.sealed_store(&settings.table, keys.clone()));
    let blobs: Arc<dyn relay_core::media::BlobStore> =
        Arc::new(clients.blob_store(settings.require_media_bucket()?));
    let inbox = Inbox {
        directory: Arc::new(clients.directory(&settings.table)),
        store: store.clone(),
        outbound: Arc::new(clients.job_queue(settings.require_outbound_queue()?, None)),
        privacy: relay_core::privacy::Privacy {
            store,
            keys,
            pseudonymizer: Arc::new(clients.pseudonymizer(&settings.table).await?),
            blobs: blobs.clone(),
        },
        blobs,
        max_media_response_bytes: Some(settings.media_response_max_bytes),
        audit: Arc::new(clients.audit_log(settings.require_audit_table()?)),
        audit_retention_secs: i64::from(settings.audit_retention_days) * 86_400,
        clock,
    };
    lambda_http::run(router(inbox).fallback(relay_http::not_found)).await
}
