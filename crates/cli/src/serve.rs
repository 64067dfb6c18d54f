//! `relay serve`: the whole pipeline on one machine. The webhook-receiver and inbox-api
//! routers share one listener; workers drive the message-router and reply-sender SQS handlers
//! from the embedded queues, exactly as the Lambda event source mappings do on AWS.

use anyhow::Context;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use relay_core::Clock;
use relay_core::config::RelayConfig;
pub use relay_embedded::Local;
use relay_embedded::{FileBlobStore, SqliteMessageStore, SqliteQueue, VISIBILITY};
use reply_sender::Sender;
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use webhook_receiver::Receiver;

/// A running local relay; sending `true` on `shutdown` stops it.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: watch::Sender<bool>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The built-in demo's staff sign-in (public: the demo serves on loopback only).
pub const DEMO_STAFF_EMAIL: &str = "demo@apotheke.example";
pub const DEMO_STAFF_PASSWORD: &str = "demo-apotheke";

/// Gives the demo tenant its staff account, once (a changed password is kept).
async fn seed_demo_staff(local: &Local, config: &RelayConfig) -> anyhow::Result<()> {
    use relay_core::staff::{self, Role, StaffAccount, StaffStore};
    let Some(tenant) = config.tenants.first() else {
        return Ok(());
    };
    if local
        .staff
        .staff_by_email(DEMO_STAFF_EMAIL)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let account = StaffAccount {
        id: staff::new_staff_id(),
        tenant: tenant.tenant.id.clone(),
        email: DEMO_STAFF_EMAIL.to_owned(),
        role: Role::Admin,
        password_hash: staff::hash_password(DEMO_STAFF_PASSWORD)?,
        created_at: local.clock.now(),
        sessions_valid_after: 0,
    };
    local.staff.add_staff(&account).await?;
    // A template to answer with once a demo conversation's window has closed.
    use relay_core::templates::{Template, TemplateStore};
    let body = "Guten Tag, Ihre Bestellung {{1}} liegt zur Abholung bereit.";
    local
        .store
        .replace_templates(
            &tenant.tenant.id,
            &[Template {
                name: "abholbereit".into(),
                language: "de".into(),
                category: "UTILITY".into(),
                status: "APPROVED".into(),
                body: body.into(),
                params: 1,
                updated_at: local.clock.now(),
                quality: None,
            }],
        )
        .await?;
    Ok(())
}

pub async fn start(
    config: &RelayConfig,
    listen: SocketAddr,
    data_dir: PathBuf,
    demo: bool,
) -> anyhow::Result<Running> {
    let local = Local::open_with_key_backup(
        &data_dir,
        Clock::system(),
        config.server.key_backup_dir.as_ref().map(PathBuf::from),
    )?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (in use? choose another with --listen)")
        })?;
    let addr = listener.local_addr()?;
    // The demo's channel sends to the simulated WhatsApp on this very listener.
    let mut config = config.clone();
    let demo = if demo {
        seed_demo_staff(&local, &config).await?;
        let base = format!("http://{addr}");
        let channel = config
            .tenants
            .first_mut()
            .and_then(|t| t.channels.first_mut())
            .context("the demo configuration has no channel")?;
        channel.api_base_url = Some(format!("{base}{}", crate::demo::WHATSAPP_PATH));
        Some(crate::demo::Demo::new(
            base,
            &channel.phone_number_id,
            // The built-in demo's webhook token (public, like the demo itself).
            "demo-webhook-token",
            local.clock.clone(),
        ))
    } else {
        None
    };
    let config = &config;
    let backends = local.backends(config);
    let router = backends.router();
    let sender = Arc::new(Sender::build(&backends)?);
    let reminder_sender = sender.clone();
    let metrics = crate::metrics::router(
        config.metrics_token(),
        vec![
            ("inbound", local.queue.clone()),
            ("outbound", local.outbound.clone()),
        ],
    );
    let app = webhook_receiver::router(Receiver::build(&backends)?)
        // The inbox API and the staff web inbox, as the inbox-api function serves them.
        .merge(inbox_api::function_router(
            &backends,
            relay_web::WebSettings {
                idle_timeout_secs: config.session_idle_secs(),
                trusted_proxies: config.trusted_proxies(),
                always_https: config.server.tls.is_some(),
                ..Default::default()
            },
        )?)
        .merge(metrics)
        .merge(demo.map(|d| d.router()).unwrap_or_default())
        .fallback(relay_http::not_found);
    let (shutdown, stop) = watch::channel(false);

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
    let reminders = tokio::spawn(remind(reminder_sender, shutdown.subscribe()));
    let limits = config.http_limits();
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls::acceptor)
        .transpose()?;
    let done = tokio::spawn(async move {
        crate::http::serve(listener, app, limits, tls, stop).await;
        // The workers finish the batch in hand; one that is still busy after the grace period
        // is left: what it did not delete is delivered again at the next start.
        for (name, worker) in [("router", routing), ("sender", sending)] {
            match tokio::time::timeout(limits.shutdown_grace, worker).await {
                Ok(result) => result.with_context(|| format!("{name} worker panicked"))?,
                Err(_) => tracing::warn!(
                    worker = name,
                    "still busy after the grace period: stopping without it"
                ),
            }
        }
        sweeper.abort();
        reminders.abort();
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
        let event = relay_aws::batch::event(
            batch.iter().map(|m| relay_aws::batch::Received {
                message_id: m.message_id.clone(),
                receipt: m.receipt.clone(),
                body: m.body.clone(),
                receives: Some(m.receive_count),
            }),
            "relay:embedded",
        );
        let failed: HashSet<String> = match handler(event).await {
            Ok(resp) => relay_aws::batch::failed_ids(&resp),
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

/// Local stand-in for the reminder schedule on AWS: every five minutes, the pickup reminders
/// that are due (the same function the schedule invokes).
async fn remind(sender: Arc<reply_sender::Sender>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = reply_sender::sweep_notices(&sender).await {
            tracing::error!(error = %e, "reminder sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = stop.changed() => break,
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
