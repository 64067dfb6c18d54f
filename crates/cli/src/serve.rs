//! `relay serve`: the whole pipeline on one machine. The webhook-receiver and inbox-api
//! routers share one listener; workers drive the message-router and reply-sender SQS handlers
//! from the embedded queues, exactly as the Lambda event source mappings do on AWS.

use anyhow::Context;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use inbox_api::Inbox;
use relay_core::Clock;
use relay_core::config::RelayConfig;
use relay_core::crypto::{Keyring, LocalKeyWrapper};
use relay_core::directory::StaticDirectory;
use relay_core::ids::Pseudonymizer;
use relay_core::privacy::Privacy;
use relay_core::routing::Router;
use relay_core::sealed::SealedStore;
use relay_embedded::{
    Database, FileBlobStore, SqliteAuditLog, SqliteKeyStore, SqliteMessageStore, SqliteQueue,
};
use reply_sender::{ChannelLimiter, RetryPolicy, Sender};
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use webhook_receiver::Receiver;

pub const INBOUND_QUEUE: &str = "inbound";
pub const OUTBOUND_QUEUE: &str = "outbound";
/// As the SAM template's redrive policy: after this many receives a message is dead.
pub const MAX_RECEIVES: u32 = 5;
/// reply-sender bounds its own attempts (and dead-letters explicitly); the queue's bound is a
/// safety net above the 24 hours of forward retries.
pub const OUTBOUND_MAX_RECEIVES: u32 = 100;
const VISIBILITY: Duration = Duration::from_secs(30);

/// The local backends under `data_dir`.
pub struct Local {
    /// The raw SQLite store (sealed values only); use `sealed` to read and write.
    pub store: Arc<SqliteMessageStore>,
    /// The store as the handlers use it: personal fields sealed under contact keys.
    pub sealed: Arc<SealedStore>,
    pub keys: Arc<Keyring>,
    pub audit: Arc<SqliteAuditLog>,
    /// Sealed media files under `data_dir/media`.
    pub blobs: Arc<FileBlobStore>,
    pub queue: Arc<SqliteQueue>,
    pub outbound: Arc<SqliteQueue>,
    pub pseudonymizer: Arc<Pseudonymizer>,
    /// The one clock of this relay: the database, the keyring and the handlers read it.
    pub clock: Clock,
}

impl Local {
    pub fn open(data_dir: &Path, clock: Clock) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Health data lives here: only the owner may read it.
            let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
        }
        let db = Database::open(&data_dir.join("relay.db"), clock.clone())?;
        let key = relay_embedded::load_or_create_key(&data_dir.join("pseudonym.key"))?;
        // The local stand-in for the KMS key: wraps every contact's data key.
        let master = relay_embedded::load_or_create_key(&data_dir.join("master.key"))?;
        let keys = Arc::new(Keyring::new(
            Arc::new(SqliteKeyStore::new(db.clone())),
            Arc::new(LocalKeyWrapper::new(master)),
            clock.clone(),
        ));
        let store = Arc::new(SqliteMessageStore::new(db.clone()));
        Ok(Local {
            sealed: Arc::new(SealedStore::new(store.clone(), keys.clone())),
            store,
            keys,
            audit: Arc::new(SqliteAuditLog::new(db.clone())),
            blobs: Arc::new(FileBlobStore::new(data_dir.join("media"))),
            queue: Arc::new(SqliteQueue::new(db.clone(), INBOUND_QUEUE, MAX_RECEIVES)),
            outbound: Arc::new(SqliteQueue::new(db, OUTBOUND_QUEUE, OUTBOUND_MAX_RECEIVES)),
            pseudonymizer: Arc::new(Pseudonymizer::new(key)),
            clock,
        })
    }

    /// The queue an admin command names.
    pub fn privacy(&self) -> Privacy {
        Privacy {
            store: self.sealed.clone(),
            keys: self.keys.clone(),
            pseudonymizer: self.pseudonymizer.clone(),
            blobs: self.blobs.clone(),
        }
    }

    pub fn queue_named(&self, name: &str) -> anyhow::Result<Arc<SqliteQueue>> {
        match name {
            INBOUND_QUEUE => Ok(self.queue.clone()),
            OUTBOUND_QUEUE => Ok(self.outbound.clone()),
            other => anyhow::bail!("no queue {other:?}: use \"inbound\" or \"outbound\""),
        }
    }
}

/// A running local relay; sending `true` on `shutdown` stops it.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: watch::Sender<bool>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start(
    config: &RelayConfig,
    listen: SocketAddr,
    data_dir: PathBuf,
) -> anyhow::Result<Running> {
    let local = Local::open(&data_dir, Clock::system())?;
    let directory = Arc::new(StaticDirectory::from_config(config));
    let router = Router::new(
        local.sealed.clone(),
        directory.clone(),
        local.pseudonymizer.clone(),
        local.keys.clone(),
    )
    .with_outbound(local.outbound.clone());
    let whatsapp = relay_whatsapp::WhatsAppClient::default();
    let sender = Arc::new(Sender {
        store: local.sealed.clone(),
        keys: local.keys.clone(),
        blobs: local.blobs.clone(),
        max_media_bytes: config.max_media_bytes(),
        directory: directory.clone(),
        control: local.outbound.clone(),
        pseudonymizer: local.pseudonymizer.clone(),
        http: whatsapp.http(),
        whatsapp,
        limiter: ChannelLimiter::default(),
        policy: RetryPolicy::default(),
        clock: local.clock.clone(),
        concurrency: 1,
    });

    let app = webhook_receiver::router(Receiver {
        directory: directory.clone(),
        queue: local.queue.clone(),
        keys: local.keys.clone(),
        pseudonymizer: local.pseudonymizer.clone(),
        max_body_bytes: config.max_body_bytes(),
    })
    .merge(inbox_api::router(Inbox {
        directory,
        store: local.sealed.clone(),
        outbound: local.outbound.clone(),
        privacy: local.privacy(),
        audit: local.audit.clone(),
        audit_retention_secs: i64::from(config.audit_retention_days()) * 86_400,
        blobs: local.blobs.clone(),
        // Local files stream: no response size limit.
        max_media_response_bytes: None,
        clock: local.clock.clone(),
    }))
    .fallback(relay_http::not_found);

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (in use? choose another with --listen)")
        })?;
    let addr = listener.local_addr()?;
    let (shutdown, mut stop) = watch::channel(false);

    let router = Arc::new(router);
    let routing = tokio::spawn(drive(
        local.queue.clone(),
        shutdown.subscribe(),
        Retry::Backoff,
        move |event| {
            let router = router.clone();
            async move {
                message_router::handle(&router, event)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    ));
    let sending = tokio::spawn(drive(
        local.outbound.clone(),
        shutdown.subscribe(),
        Retry::HandlerSetsDelay,
        move |event| {
            let sender = sender.clone();
            async move {
                reply_sender::handle(&sender, event)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    ));
    let sweeper = tokio::spawn(sweep(
        local.clock.clone(),
        local.store.clone(),
        local.blobs.clone(),
        shutdown.subscribe(),
    ));
    let done = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context("HTTP server failed")?;
        routing.await.context("router worker panicked")?;
        sending.await.context("sender worker panicked")?;
        sweeper.abort();
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown,
        done,
    })
}

/// Who decides when a failed record comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// The driver backs off by receive count (what the visibility timeout does on SQS).
    Backoff,
    /// The handler already set the delay (reply-sender's ChangeMessageVisibility).
    HandlerSetsDelay,
}

/// Feeds a handler from an embedded queue in batches of up to 10, as an SQS event source
/// mapping does: records the handler reports as failed stay; the others are deleted.
async fn drive<H, F>(
    queue: Arc<SqliteQueue>,
    mut stop: watch::Receiver<bool>,
    retry: Retry,
    handler: H,
) where
    H: Fn(SqsEvent) -> F,
    F: Future<Output = Result<SqsBatchResponse, String>>,
{
    loop {
        if *stop.borrow() {
            break;
        }
        let batch = match queue.receive(10, VISIBILITY) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "receiving from a local queue failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = queue.wait_for_messages(Duration::from_millis(500)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let mut event = SqsEvent::default();
        for m in &batch {
            let mut record = SqsMessage::default();
            record.message_id = Some(m.message_id.clone());
            record.receipt_handle = Some(m.receipt.clone());
            record.body = Some(m.body.clone());
            record.attributes.insert(
                "ApproximateReceiveCount".into(),
                m.receive_count.to_string(),
            );
            record.event_source = Some("relay:embedded".into());
            event.records.push(record);
        }
        let failed: HashSet<String> = match handler(event).await {
            Ok(resp) => resp
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "batch failed");
                batch.iter().map(|m| m.message_id.clone()).collect()
            }
        };
        for m in &batch {
            let result = match (failed.contains(&m.message_id), retry) {
                (false, _) => queue.delete(&m.receipt).map(|_| ()),
                (true, Retry::HandlerSetsDelay) => Ok(()),
                // Sooner than SQS's visibility timeout, for a snappy local loop.
                (true, Retry::Backoff) => queue.retry_after(
                    &m.receipt,
                    Duration::from_secs(1u64 << m.receive_count.min(5)),
                ),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, message_id = %m.message_id, "queue bookkeeping failed; the message will be retried");
            }
        }
    }
}

/// Local stand-in for DynamoDB TTL and S3 lifecycle: delete expired files and rows every ten
/// minutes.
async fn sweep(
    clock: Clock,
    store: Arc<SqliteMessageStore>,
    blobs: Arc<FileBlobStore>,
    mut stop: watch::Receiver<bool>,
) {
    use relay_core::media::BlobStore;
    loop {
        let now = clock.now();
        match store.expired_media(now) {
            Ok(keys) => {
                for key in keys {
                    if let Err(e) = blobs.delete(&key).await {
                        tracing::error!(error = %e, "expired file could not be deleted");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "retention sweep failed"),
        }
        match store.sweep_expired(now) {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "expired rows deleted"),
            Err(e) => tracing::error!(error = %e, "retention sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            _ = stop.changed() => break,
        }
    }
}
