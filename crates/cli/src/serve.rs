//! `relay serve`: the whole pipeline on one machine. The webhook-receiver and inbox-api
//! routers share one listener; a worker drives the message-router's SQS handler from the
//! embedded queue, exactly as the Lambda event source mapping does on AWS.

use anyhow::Context;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use inbox_api::Inbox;
use relay_core::config::RelayConfig;
use relay_core::directory::StaticDirectory;
use relay_core::ids::Pseudonymizer;
use relay_core::routing::Router;
use relay_embedded::{Database, SqliteMessageStore, SqliteQueue};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use webhook_receiver::Receiver;

pub const INBOUND_QUEUE: &str = "inbound";
/// As the SAM template's redrive policy: after this many receives a message is dead.
pub const MAX_RECEIVES: u32 = 5;
const VISIBILITY: Duration = Duration::from_secs(30);

/// The local backends under `data_dir`.
pub struct Local {
    pub store: Arc<SqliteMessageStore>,
    pub queue: Arc<SqliteQueue>,
    pub pseudonymizer: Arc<Pseudonymizer>,
}

impl Local {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Health data lives here: only the owner may read it.
            let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
        }
        let db = Database::open(&data_dir.join("relay.db"))?;
        let key = relay_embedded::load_or_create_key(&data_dir.join("pseudonym.key"))?;
        Ok(Local {
            store: Arc::new(SqliteMessageStore::new(db.clone())),
            queue: Arc::new(SqliteQueue::new(db.clone(), INBOUND_QUEUE, MAX_RECEIVES)),
            pseudonymizer: Arc::new(Pseudonymizer::new(key)),
        })
    }
}

/// A running local relay; dropping the shutdown sender stops it.
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
    let local = Local::open(&data_dir)?;
    let directory = Arc::new(StaticDirectory::from_config(config));
    let router = Router::new(
        local.store.clone(),
        directory.clone(),
        local.pseudonymizer.clone(),
    );

    let app = webhook_receiver::router(Receiver {
        directory: directory.clone(),
        queue: local.queue.clone(),
        max_body_bytes: config.max_body_bytes(),
    })
    .merge(inbox_api::router(Inbox {
        directory,
        store: local.store.clone(),
        clock: relay_core::system_clock(),
    }))
    .fallback(relay_http::not_found);

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (in use? choose another with --listen)")
        })?;
    let addr = listener.local_addr()?;
    let (shutdown, mut stop) = watch::channel(false);

    let worker = tokio::spawn(drive_router(
        local.queue.clone(),
        router,
        shutdown.subscribe(),
    ));
    let sweeper = tokio::spawn(sweep(local.store.clone(), shutdown.subscribe()));
    let done = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context("HTTP server failed")?;
        worker.await.context("worker panicked")?;
        sweeper.abort();
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown,
        done,
    })
}

/// The message-router, fed from the embedded queue in batches of up to 10 (as SQS does).
async fn drive_router(queue: Arc<SqliteQueue>, router: Router, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            break;
        }
        let batch = match queue.receive(10, VISIBILITY) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "receiving from the local queue failed");
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
        let failed: HashSet<String> = match message_router::handle(&router, event).await {
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
            let result = if failed.contains(&m.message_id) {
                // Back off like the visibility timeout would, but sooner, for a snappy local loop.
                let delay = Duration::from_secs(1u64 << m.receive_count.min(5));
                queue.retry_after(&m.receipt, delay)
            } else {
                queue.delete(&m.receipt).map(|_| ())
            };
            if let Err(e) = result {
                tracing::error!(error = %e, message_id = %m.message_id, "queue bookkeeping failed; the message will be retried");
            }
        }
    }
}

/// Local stand-in for DynamoDB TTL: delete expired rows every ten minutes.
async fn sweep(store: Arc<SqliteMessageStore>, mut stop: watch::Receiver<bool>) {
    loop {
        match store.sweep_expired(relay_core::unix_now()) {
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
