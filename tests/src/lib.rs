//! Test harness for the end-to-end suites: a moto server on a free loopback port (the real
//! SQS, DynamoDB and KMS protocols for the AWS SDK), the deployment's resources created in it
//! as `template.yaml` declares them, and helpers to serve routers on real sockets.

pub mod counter;
pub mod fake;
pub mod faults;
pub mod sender_fixture;

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGION: &str = "eu-central-1";

/// A moto server process; killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `MOTO_SERVER`, else `.venv/bin/moto_server` (made by infra/setup-venv.sh), else PATH.
fn moto_binary() -> PathBuf {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/moto_server");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("moto_server")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Moto {
    pub fn start() -> anyhow::Result<Moto> {
        let bin = moto_binary();
        for _attempt in 0..3 {
            let port = free_port();
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "cannot start {} — run infra/setup-venv.sh (or set MOTO_SERVER) first",
                        bin.display()
                    )
                })?;
            let mut moto = Moto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Some(status) = moto.child.try_wait()? {
                    // Most likely the port was taken between choosing and binding: try another.
                    let _ = status;
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(moto);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        bail!("moto_server did not come up on a loopback port")
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let creds =
            aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "moto");
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(creds)
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    pub async fn clients(&self) -> relay_aws::Clients {
        relay_aws::Clients::new(&self.sdk_config().await)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `template.yaml` creates, created in moto.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub table: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub outbound_url: String,
    pub outbound_dlq_url: String,
    pub kms_key_id: String,
    /// Wrapped data keys (`pk` only, TTL `expires_at`).
    pub keys_table: String,
    /// The audit log (`tenant` / `at`, TTL `expires_at`).
    pub audit_table: String,
    /// Sealed media files.
    pub media_bucket: String,
}

impl Deployment {
    /// The settings `function` reads from the environment template.yaml gives it here.
    pub fn settings(&self, function: &str) -> anyhow::Result<relay_aws::Settings> {
        let given: Vec<&str> = [relay_aws::FUNCTION_ENV, relay_aws::FUNCTION_OPTIONAL_ENV]
            .iter()
            .flat_map(|list| list.iter())
            .filter(|(f, _)| *f == function)
            .flat_map(|(_, vars)| vars.iter().copied())
            .collect();
        let value = |k: &str| -> Option<String> {
            Some(match k {
                "RELAY_TABLE" => self.table.clone(),
                "INBOUND_QUEUE_URL" => self.queue_url.clone(),
                "OUTBOUND_QUEUE_URL" => self.outbound_url.clone(),
                "OUTBOUND_DLQ_URL" => self.outbound_dlq_url.clone(),
                "KEYS_TABLE" => self.keys_table.clone(),
                "RELAY_KMS_KEY_ID" => self.kms_key_id.clone(),
                "AUDIT_TABLE" => self.audit_table.clone(),
                "MEDIA_BUCKET" => self.media_bucket.clone(),
                _ => return None,
            })
        };
        let lookup = |k: &str| given.contains(&k).then(|| value(k)).flatten();
        Ok(relay_aws::Settings::for_function_from(function, &lookup)?)
    }

    pub fn keyring(
        &self,
        clients: &relay_aws::Clients,
    ) -> std::sync::Arc<relay_core::crypto::Keyring> {
        std::sync::Arc::new(clients.keyring(
            &self.keys_table,
            &self.kms_key_id,
            relay_core::Clock::system(),
        ))
    }
}

async fn queue_with_dlq(
    clients: &relay_aws::Clients,
    name: &str,
    max_receives: u32,
) -> anyhow::Result<(String, String)> {
    let dlq_url = clients
        .sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .context("CreateQueue dlq")?
        .queue_url
        .context("no dlq url")?;
    let dlq_arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .context("no dlq arn")?;
    let queue_url = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::MaximumMessageSize, "1048576")
        .attributes(QueueAttributeName::VisibilityTimeout, "0")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#),
        )
        .send()
        .await
        .context("CreateQueue")?
        .queue_url
        .context("no queue url")?;
    Ok((queue_url, dlq_url))
}

/// The table, queues (with a redrive policy) and KMS key, named with `prefix`.
pub async fn provision(
    clients: &relay_aws::Clients,
    prefix: &str,
    max_receives: u32,
) -> anyhow::Result<Deployment> {
    let table = format!("{prefix}-relay");
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
    };
    clients
        .dynamo
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .attribute_definitions(attr("gsi1pk")?)
        .attribute_definitions(attr("gsi1sk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("gsi1")
                .key_schema(key("gsi1pk", KeyType::Hash)?)
                .key_schema(key("gsi1sk", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await
        .context("CreateTable")?;
    clients
        .dynamo
        .update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires_at")
                .build()?,
        )
        .send()
        .await
        .context("UpdateTimeToLive")?;

    let keys_table = format!("{prefix}-keys");
    clients
        .dynamo
        .create_table()
        .table_name(&keys_table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .send()
        .await
        .context("CreateTable keys")?;
    let audit_table = format!("{prefix}-audit");
    clients
        .dynamo
        .create_table()
        .table_name(&audit_table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("tenant")?)
        .attribute_definitions(attr("at")?)
        .key_schema(key("tenant", KeyType::Hash)?)
        .key_schema(key("at", KeyType::Range)?)
        .send()
        .await
        .context("CreateTable audit")?;
    let media_bucket = format!("{prefix}-media");
    clients
        .s3()
        .create_bucket()
        .bucket(&media_bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuCentral1)
                .build(),
        )
        .send()
        .await
        .context("CreateBucket")?;
    let (queue_url, dlq_url) =
        queue_with_dlq(clients, &format!("{prefix}-inbound"), max_receives).await?;
    let (outbound_url, outbound_dlq_url) =
        queue_with_dlq(clients, &format!("{prefix}-outbound"), 100).await?;
    let kms_key_id = clients
        .kms
        .create_key()
        .description("relay test key")
        .send()
        .await
        .context("CreateKey")?
        .key_metadata
        .map(|m| m.key_id)
        .context("no key id")?;
    Ok(Deployment {
        table,
        queue_url,
        dlq_url,
        outbound_url,
        outbound_dlq_url,
        kms_key_id,
        keys_table,
        audit_table,
        media_bucket,
    })
}

/// [`provision`] plus the tenants of `relay_toml` applied (channel secrets wrapped with the
/// deployment's KMS key): what `sam deploy` and `relay tenants apply` give an operator.
pub async fn deploy(
    clients: &relay_aws::Clients,
    prefix: &str,
    max_receives: u32,
    relay_toml: &str,
) -> anyhow::Result<Deployment> {
    let d = provision(clients, prefix, max_receives).await?;
    let config = relay_core::config::RelayConfig::parse(relay_toml, &|_| None)?;
    relay_aws::admin::apply_tenants(
        &clients.dynamo,
        &clients.secrets(Some(d.kms_key_id.clone())),
        &d.table,
        &config,
        |_| {},
    )
    .await?;
    Ok(d)
}

/// Serves a router on a free loopback port until the test ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Receives what is on the queue (as the Lambda event source mapping would) and builds the
/// SQS event the message-router gets, with message ids and receipt handles.
pub async fn receive_event(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> anyhow::Result<aws_lambda_events::sqs::SqsEvent> {
    let resp = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(30)
        .send()
        .await
        .context("ReceiveMessage")?;
    Ok(relay_aws::batch::event(
        resp.messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| relay_aws::batch::Received {
                message_id: m.message_id.unwrap_or_default(),
                receipt: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
                receives: None,
            }),
        "aws:sqs",
    ))
}

/// Feeds a queue to an SQS handler as the Lambda event source mapping does, deleting what it
/// handled, until the queue is empty. Failed records are made visible again at once when
/// `redeliver_failures` (the test's stand-in for the visibility timeout); otherwise they stay
/// hidden for the delay the handler set. Returns (handled, failed).
async fn drain_with<F, Fut>(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    redeliver_failures: bool,
    handler: F,
) -> anyhow::Result<(usize, usize)>
where
    F: Fn(aws_lambda_events::sqs::SqsEvent) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<aws_lambda_events::sqs::SqsBatchResponse>>,
{
    let (mut ok, mut failed) = (0, 0);
    loop {
        let event = receive_event(sqs, queue_url).await?;
        if event.records.is_empty() {
            return Ok((ok, failed));
        }
        let receipts: Vec<(String, String)> = event
            .records
            .iter()
            .map(|r| {
                (
                    r.message_id.clone().unwrap_or_default(),
                    r.receipt_handle.clone().unwrap_or_default(),
                )
            })
            .collect();
        let failures = relay_aws::batch::failed_ids(&handler(event).await?);
        // What succeeded is deleted in one DeleteMessageBatch per batch, as the poller does.
        let mut done = Vec::new();
        for (id, receipt) in receipts {
            if !failures.contains(&id) {
                ok += 1;
                done.push(
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(format!("m{}", done.len()))
                        .receipt_handle(receipt)
                        .build()
                        .context("delete entry")?,
                );
                continue;
            }
            failed += 1;
            if redeliver_failures {
                sqs.change_message_visibility()
                    .queue_url(queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await?;
            }
        }
        if !done.is_empty() {
            let out = sqs
                .delete_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(done))
                .send()
                .await
                .context("DeleteMessageBatch")?;
            anyhow::ensure!(
                out.failed.is_empty(),
                "DeleteMessageBatch: {:?}",
                out.failed
            );
        }
        if failed > 50 {
            return Ok((ok, failed));
        }
    }
}

/// Drains the inbound queue through the message-router handler (failures come back at once).
pub async fn drain(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    router: &relay_core::routing::Router,
) -> anyhow::Result<(usize, usize)> {
    drain_with(sqs, queue_url, true, |event| async move {
        Ok(message_router::handle(router, event).await?)
    })
    .await
}

/// Drains the outbound queue through reply-sender; jobs it retries stay hidden for their backoff.
pub async fn drain_jobs(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    sender: &reply_sender::Sender,
) -> anyhow::Result<(usize, usize)> {
    drain_with(sqs, queue_url, false, |event| async move {
        Ok(reply_sender::handle(sender, event).await?)
    })
    .await
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(workspace_root().join(format!("tests/fixtures/{name}.json")))
        .expect("fixture exists")
}

/// The deployment's handlers, wired to moto exactly as the Lambda mains wire them, with the
/// HTTP functions served on loopback.
pub struct Wired {
    pub receiver_url: String,
    pub inbox_url: String,
    pub router: relay_core::routing::Router,
    pub sender: reply_sender::Sender,
}

pub async fn wire(clients: &relay_aws::Clients, d: &Deployment) -> anyhow::Result<Wired> {
    // Each function is built as its Lambda main builds it: from the environment template.yaml
    // gives it, through the composition root (so each has its own keyring and cache).
    let clock = relay_core::Clock::system();
    let aws = |function: &str| -> anyhow::Result<relay_aws::Aws> {
        Ok(relay_aws::Aws::with_clients(
            d.settings(function)?,
            clients.clone(),
        ))
    };
    let receiver = webhook_receiver::router(webhook_receiver::Receiver::build(
        &aws("webhook-receiver")?.backends(clock.clone()).await?,
    )?);
    // The API and the web inbox, as the function serves them (API Gateway: always HTTPS).
    let inbox = inbox_api::function_router(
        &aws("inbox-api")?.backends_with_media(clock.clone()).await?,
        relay_web::WebSettings {
            always_https: true,
            ..Default::default()
        },
    )?;
    let router = aws("message-router")?
        .backends(clock.clone())
        .await?
        .router();
    let sender =
        reply_sender::Sender::build(&aws("reply-sender")?.backends_with_media(clock).await?)?;
    Ok(Wired {
        receiver_url: format!("http://{}", serve(receiver).await),
        inbox_url: format!("http://{}", serve(inbox).await),
        router,
        sender,
    })
}
