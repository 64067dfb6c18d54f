//! The fault suite on the AWS backend: the four functions wired to moto through a proxy that
//! fails, throttles, stalls and "loses the answers" of DynamoDB, SQS and KMS calls; a fake
//! 360dialog and a fake pharmacy endpoint that answer 429/5xx, time out and break connections;
//! router and sender invocations killed mid-batch. Over many webhooks and replies it checks
//! that every webhook answered 200 is stored exactly once, every reply answered 202 is sent
//! (a second send only where its outcome was unknown), every stored message is forwarded under
//! one stable id, and nothing accepted ends nowhere: what is not stored is in a DLQ, which is
//! redriven. Prints the summary table.
//!
//! Sizes: `FAULT_WEBHOOKS`, `FAULT_REPLIES`, `FAULT_CUSTOMERS`; `FAULT_SEED` replays a run
//! (`infra/faults.sh` runs it bigger).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use relay_core::ports::store_roles::*;
use relay_e2e::fake::{Chaos, Fake};
use relay_e2e::faults::{
    AwsFaults, Dice, FaultProxy, Relay, Verdict, env_usize, fake_faults, forwards, post_replies,
    post_webhooks, read_back, relay_toml, seed, sends, wait_for_conversations,
};
use relay_e2e::{Moto, deploy};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// SDK settings of the functions under test: the production timeouts scaled down (so that a
/// stalled call times out quickly) and two attempts per call (so that faults get through the
/// SDK's own retries and reach the relay's code).
async fn faulty_sdk(endpoint: &str) -> aws_config::SdkConfig {
    let creds =
        aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "moto");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(relay_e2e::REGION))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(500))
                .operation_timeout(Duration::from_secs(2))
                .build(),
        )
        .load()
        .await
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    attrs.values().filter_map(|v| v.parse::<usize>().ok()).sum()
}

/// The Lambda event source mapping, with crashes: receives batches (with their receive
/// counts), runs the handler, deletes what succeeded. A killed invocation (`kill_rate`)
/// is cut off after a random few milliseconds; its records were not deleted and come back
/// once their visibility timeout ends. Records the router failed come back at once (the
/// test's stand-in for the visibility timeout); reply-sender set its own delays. Stops when
/// `stop` is set and the queue is empty. Returns the kills; the bodies of killed records go
/// to `killed`.
async fn event_source<F, Fut>(source: Source, handler: F) -> usize
where
    F: Fn(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = SqsBatchResponse>,
{
    let Source {
        sqs,
        url,
        router_like,
        kill_rate,
        dice,
        stop,
        killed,
    } = source;
    let mut kills = 0;
    loop {
        let resp = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .visibility_timeout(5)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap();
        let messages = resp.messages.unwrap_or_default();
        if messages.is_empty() {
            if stop.load(Ordering::SeqCst) && depth(&sqs, &url).await == 0 {
                return kills;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let event = relay_aws::batch::event(
            messages.iter().map(|m| relay_aws::batch::Received {
                message_id: m.message_id.clone().unwrap_or_default(),
                receipt: m.receipt_handle.clone().unwrap_or_default(),
                body: m.body.clone().unwrap_or_default(),
                receives: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok()),
            }),
            "aws:sqs",
        );
        let failed = if dice.roll() < kill_rate {
            let after = Duration::from_millis(1 + dice.below(40));
            match tokio::time::timeout(after, handler(event)).await {
                Ok(resp) => relay_aws::batch::failed_ids(&resp),
                Err(_) => {
                    // Killed: nothing deleted; the records return after the visibility timeout.
                    kills += 1;
                    killed
                        .lock()
                        .unwrap()
                        .extend(messages.iter().filter_map(|m| m.body.clone()));
                    continue;
                }
            }
        } else {
            relay_aws::batch::failed_ids(&handler(event).await)
        };
        for m in messages {
            let id = m.message_id.unwrap_or_default();
            let receipt = m.receipt_handle.unwrap_or_default();
            // A receipt can be stale (the record came back to another instance meanwhile):
            // the event source mapping ignores that, as SQS makes the record visible again.
            if !failed.contains(&id) {
                let _ = sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(receipt)
                    .send()
                    .await;
            } else if router_like {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(&url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await;
            }
        }
    }
}

/// moto with the suites' deployment (records dead-lettered after `max_receives`), a fake
/// 360dialog and a fake pharmacy endpoint.
async fn stack(
    prefix: &str,
    max_receives: u32,
) -> (Moto, relay_aws::Clients, Fake, Fake, relay_e2e::Deployment) {
    let moto = Moto::start().unwrap();
    let direct = moto.clients().await;
    let whatsapp = Fake::start().await;
    let pharmacy = Fake::start().await;
    let d = deploy(
        &direct,
        prefix,
        max_receives,
        &relay_toml(&whatsapp.url, &pharmacy.url),
    )
    .await
    .unwrap();
    (moto, direct, whatsapp, pharmacy, d)
}

/// One queue's event source mapping and how it misbehaves.
#[derive(Clone)]
struct Source {
    sqs: aws_sdk_sqs::Client,
    url: String,
    /// Failed records come back at once (the router); else the handler set their delay.
    router_like: bool,
    kill_rate: f64,
    dice: Arc<Dice>,
    stop: Arc<AtomicBool>,
    killed: Arc<Mutex<Vec<String>>>,
}

impl Source {
    /// [`INSTANCES`] concurrent pumps of this queue into `handler`.
    fn spawn<F, Fut>(&self, handler: F) -> Vec<tokio::task::JoinHandle<usize>>
    where
        F: Fn(SqsEvent) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = SqsBatchResponse> + Send + 'static,
    {
        (0..INSTANCES)
            .map(|_| tokio::spawn(event_source(self.clone(), handler.clone())))
            .collect()
    }
}

/// Two concurrent "Lambda instances" per queue, as the event source mapping scales out.
struct Pumps {
    stop_inbound: Arc<AtomicBool>,
    stop_outbound: Arc<AtomicBool>,
    inbound: Vec<tokio::task::JoinHandle<usize>>,
    outbound: Vec<tokio::task::JoinHandle<usize>>,
    killed: Arc<Mutex<Vec<String>>>,
}

const INSTANCES: usize = 2;

impl Pumps {
    fn start(
        sqs: &aws_sdk_sqs::Client,
        d: &relay_e2e::Deployment,
        router: Arc<relay_core::routing::Router>,
        sender: Arc<reply_sender::Sender>,
        kill_rate: f64,
        dice: Arc<Dice>,
    ) -> Pumps {
        let stop_inbound = Arc::new(AtomicBool::new(false));
        let stop_outbound = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(Mutex::new(Vec::new()));
        let source = |url: &str, router_like: bool, stop: &Arc<AtomicBool>| Source {
            sqs: sqs.clone(),
            url: url.to_owned(),
            router_like,
            kill_rate,
            dice: dice.clone(),
            stop: stop.clone(),
            killed: killed.clone(),
        };
        let inbound = source(&d.queue_url, true, &stop_inbound).spawn(move |event| {
            let router = router.clone();
            async move { message_router::handle(&router, event).await.unwrap() }
        });
        let outbound = source(&d.outbound_url, false, &stop_outbound).spawn(move |event| {
            let sender = sender.clone();
            async move { reply_sender::handle(&sender, event).await.unwrap() }
        });
        Pumps {
            stop_inbound,
            stop_outbound,
            inbound,
            outbound,
            killed,
        }
    }

    /// Waits until both queues are empty (inbound first: the router queues jobs). Returns the
    /// kills, and per reply (message id) how often its send job was killed.
    async fn finish(self) -> (usize, HashMap<String, usize>) {
        self.stop_inbound.store(true, Ordering::SeqCst);
        let mut kills = 0;
        for pump in self.inbound {
            kills += pump.await.unwrap();
        }
        self.stop_outbound.store(true, Ordering::SeqCst);
        for pump in self.outbound {
            kills += pump.await.unwrap();
        }
        let mut per_reply = HashMap::new();
        for body in self.killed.lock().unwrap().iter() {
            if let Ok(relay_core::jobs::Job::Send { message_key, .. }) = serde_json::from_str(body)
            {
                *per_reply.entry(format!("m_{message_key}")).or_insert(0) += 1;
            }
        }
        (kills, per_reply)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_accepted_message_is_lost_or_doubled_under_aws_and_whatsapp_faults() {
    // The relay's own log (warnings and errors; it never holds personal data) goes with the
    // test's output: on a failure it tells what happened to the lost record.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let seed = seed();
    println!("FAULT_SEED={seed}");
    let webhooks = env_usize("FAULT_WEBHOOKS", 400);
    let replies = env_usize("FAULT_REPLIES", 100);
    let customers = env_usize("FAULT_CUSTOMERS", 20);
    let dice = Arc::new(Dice::new(seed ^ 0x5eed));

    // Three receives before the DLQ (the template allows five): so that some records do end
    // there under these fault rates, and the redrive is part of the run.
    let (moto, direct, whatsapp, pharmacy, d) = stack("faults", 3).await;

    let proxy = FaultProxy::start(
        &moto.endpoint,
        AwsFaults {
            error: 0.03,
            throttle: 0.03,
            slow: 0.005,
            lost: 0.03,
            slow_for: Duration::from_millis(800),
        },
        seed,
    )
    .await;
    let clients = relay_aws::Clients::new(&faulty_sdk(&proxy.url).await);
    let wired = relay_e2e::wire(&clients, &d).await.unwrap();
    let mut sender = wired.sender;
    sender.whatsapp = relay_whatsapp::WhatsAppClient::new(Duration::from_millis(500));
    sender.http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    sender.policy = reply_sender::RetryPolicy {
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(2),
        // The production lease (60 s) is far above a store call's timeout (10 s); so is this
        // one above the test's (2 s) plus the retries of recording a send.
        lease: Duration::from_secs(10),
        ..reply_sender::RetryPolicy::default()
    };
    let (router, sender) = (Arc::new(wired.router), Arc::new(sender));
    let chaos = Chaos {
        too_many_requests: 0.05,
        server_error: 0.05,
        slow: 0.02,
        broken: 0.03,
        slow_for: Duration::from_millis(900),
    };
    whatsapp.chaos(chaos, seed ^ 1);
    pharmacy.chaos(chaos, seed ^ 2);
    proxy.set_enabled(true);
    let relay = Relay::new(&wired.receiver_url, &wired.inbox_url);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let pumps = Pumps::start(
        &direct.sqs,
        &d,
        router.clone(),
        sender.clone(),
        0.05,
        dice.clone(),
    );
    let (sent, webhook_refusals) = post_webhooks(&http, &relay, webhooks, customers, 8, &|n| {
        println!("  {n} webhooks accepted ({:.0?})", started.elapsed())
    })
    .await
    .unwrap();
    let contacts = wait_for_conversations(&http, &relay, customers, Duration::from_secs(300))
        .await
        .unwrap();
    let (_, reply_refusals) = post_replies(&http, &relay, &contacts, replies, 4)
        .await
        .unwrap();
    let (mut kills, killed) = pumps.finish().await;
    println!(
        "  faults on: {sent} webhooks ({webhook_refusals} refusals), {replies} replies ({reply_refusals} refusals), {kills} kills, {:.0?}",
        started.elapsed()
    );

    // Faults off; what is dead-lettered is redriven (`relay dlq redrive`) and drained.
    proxy.set_enabled(false);
    whatsapp.calm();
    pharmacy.calm();
    let mut dead = 0;
    for (dlq, queue) in [
        (&d.dlq_url, &d.queue_url),
        (&d.outbound_dlq_url, &d.outbound_url),
    ] {
        dead += relay_aws::admin::dlq_redrive(&direct.sqs, dlq, queue, |_| {})
            .await
            .unwrap();
    }
    let (more, _) = Pumps::start(&direct.sqs, &d, router, sender, 0.0, dice)
        .finish()
        .await;
    kills += more;

    let stored = read_back(&http, &relay).await.unwrap();
    let mut verdict = Verdict::check(
        "AWS (moto)",
        sent,
        replies,
        &stored,
        &sends(&whatsapp),
        &forwards(&pharmacy),
        Ok(&killed),
    );
    verdict.dead_lettered = dead;
    let counts = proxy.counts();
    verdict.faults = format!(
        "{} AWS, {} 360dialog, {} pharmacy, {kills} kills, {} + {} refusals",
        counts.injected(),
        fake_faults(&whatsapp.requests()),
        fake_faults(&pharmacy.requests()),
        webhook_refusals,
        reply_refusals,
    );
    println!("  AWS faults: {}", counts.summary());
    println!("  took {:.0?}", started.elapsed());
    if !verdict.lost_markers.is_empty() {
        explain_losses(&direct, &d, &verdict.lost_markers, &stored).await;
    }
    assert!(
        counts.injected() > 0 && kills > 0,
        "no faults were injected"
    );
    verdict.assert_held();
}

/// For a failure report: was a "lost" webhook stored after all (and only missing from the
/// inbox's listing), and what does its conversation's item look like (attribute names only)?
async fn explain_losses(
    clients: &relay_aws::Clients,
    d: &relay_e2e::Deployment,
    lost: &[String],
    stored: &relay_e2e::faults::Stored,
) {
    let tenant = relay_core::ids::TenantId::parse("apotheke").unwrap();
    let pseudonymizer = clients.pseudonymizer(&d.table).await.unwrap();
    let store = clients.sealed_store(&d.table, d.keyring(clients));
    let now = relay_core::Clock::system().now();
    for marker in lost {
        let Some(i) = marker
            .strip_prefix('W')
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let key = pseudonymizer.wamid_key(&tenant, &format!("wamid.FAULT{i:08}"));
        match store.message_by_wamid(&tenant, &key, now).await {
            Ok(Some(m)) => {
                let listed = stored.inbound_ids.len();
                let profile = clients
                    .dynamo
                    .get_item()
                    .table_name(&d.table)
                    .key(
                        "pk",
                        aws_sdk_dynamodb::types::AttributeValue::S(format!(
                            "T#apotheke#C#{}",
                            m.contact_id
                        )),
                    )
                    .key(
                        "sk",
                        aws_sdk_dynamodb::types::AttributeValue::S("PROFILE".into()),
                    )
                    .consistent_read(true)
                    .send()
                    .await
                    .ok()
                    .and_then(|o| o.item)
                    .map(|item| {
                        item.keys()
                            .cloned()
                            .collect::<std::collections::BTreeSet<_>>()
                    });
                println!(
                    "{marker}: stored (contact {}), but not listed by the inbox ({listed} inbound listed); its conversation item has attributes {profile:?}",
                    m.contact_id
                );
            }
            Ok(None) => println!("{marker}: not in the store"),
            Err(e) => println!("{marker}: lookup failed: {e}"),
        }
    }
}

/// The concurrent twin on DynamoDB: the same queued webhook handled by two router instances at
/// once (SQS delivers at least once; a visibility timeout can run out mid-batch) stores the
/// message once and counts it once. Through the proxy with its faults off, so that moto applies
/// each call atomically as DynamoDB does (see `FaultProxy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_twins_store_and_count_once_on_dynamodb() {
    let (moto, direct, _whatsapp, _pharmacy, d) = stack("twins", 5).await;
    let proxy = FaultProxy::start(&moto.endpoint, AwsFaults::default(), 1).await;
    let clients = relay_aws::Clients::new(&faulty_sdk(&proxy.url).await);
    let wired = relay_e2e::wire(&clients, &d).await.unwrap();
    let relay = Relay::new(&wired.receiver_url, &wired.inbox_url);
    let http = reqwest::Client::new();
    let (n, customers) = (30, 3);
    post_webhooks(&http, &relay, n, customers, 4, &|_| {})
        .await
        .unwrap();
    let router = Arc::new(wired.router);
    let mut handled = 0;
    while handled < n {
        let event = relay_e2e::receive_event(&direct.sqs, &d.queue_url)
            .await
            .unwrap();
        assert!(!event.records.is_empty(), "the queue ran dry at {handled}");
        for record in event.records {
            let single = || {
                let mut e = SqsEvent::default();
                e.records.push(record.clone());
                e
            };
            let (one, twin) = (single(), single());
            let (a, b) = tokio::join!(
                message_router::handle(&router, one),
                message_router::handle(&router, twin)
            );
            assert!(a.unwrap().batch_item_failures.is_empty());
            assert!(b.unwrap().batch_item_failures.is_empty());
            direct
                .sqs
                .delete_message()
                .queue_url(&d.queue_url)
                .receipt_handle(record.receipt_handle.unwrap_or_default())
                .send()
                .await
                .unwrap();
            handled += 1;
        }
    }
    let stored = read_back(&http, &relay).await.unwrap();
    assert_eq!(stored.inbound.len(), n);
    assert!(
        stored.inbound.values().all(|&copies| copies == 1),
        "{:?}",
        stored.inbound
    );
    assert_eq!(stored.unread_mismatches, 0, "a twin was counted twice");
}

/// An audit entry whose answer is lost: the SDK's retry finds it written (the append is
/// conditional) — that is success, not a failure that would turn the inbox's answer into 503.
/// And the entry is there once.
#[tokio::test]
async fn an_audit_entry_whose_answer_was_lost_is_written_once_and_reported_written() {
    use relay_core::ports::AuditLog;
    let (moto, direct, _whatsapp, _pharmacy, d) = stack("audit", 5).await;
    let proxy = FaultProxy::start(&moto.endpoint, AwsFaults::default(), 1).await;
    let clients = relay_aws::Clients::new(&faulty_sdk(&proxy.url).await);
    let audit = clients.audit_log(&d.audit_table);
    let tenant = relay_core::ids::TenantId::parse("apotheke").unwrap();
    let entry = relay_core::records::AuditEntry {
        at_ms: relay_core::Clock::system().now_ms(),
        tenant: tenant.clone(),
        actor: "cli".into(),
        action: "contact.export".into(),
        target: None,
        result: 200,
        expires_at: relay_core::Clock::system().now() + 3600,
    };
    proxy.lose_next(1);
    audit.append(&entry).await.unwrap();
    let listed = direct
        .audit_log(&d.audit_table)
        .list(Some(&tenant), 10, relay_core::Clock::system().now())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
}

/// A router cut off right after the contact's update (every read after it fails: the consent
/// ledger's first entry is the next call) has made the conversation visible: it must
/// be visible with its 24-hour window open, or a reply to it is refused as "window closed"
/// until the retry completes (the 422s the fault suite saw now and then).
#[tokio::test]
async fn a_conversation_is_listed_with_its_window_even_if_the_router_stops_half_way() {
    let (moto, direct, _whatsapp, _pharmacy, d) = stack("window", 5).await;
    let proxy = FaultProxy::start(&moto.endpoint, AwsFaults::default(), 1).await;
    let clients = relay_aws::Clients::new(&faulty_sdk(&proxy.url).await);
    let wired = relay_e2e::wire(&clients, &d).await.unwrap();
    let relay = Relay::new(&wired.receiver_url, &wired.inbox_url);
    let http = reqwest::Client::new();
    post_webhooks(&http, &relay, 1, 1, 1, &|_| {})
        .await
        .unwrap();
    proxy.refuse_after(
        // The profile's update (the one that lists it: gsi1pk), not the identity's.
        "DynamoDB_20120810.UpdateItem|gsi1pk",
        "DynamoDB_20120810.GetItem",
    );
    let event = relay_e2e::receive_event(&direct.sqs, &d.queue_url)
        .await
        .unwrap();
    let answer = message_router::handle(&wired.router, event).await.unwrap();
    assert_eq!(answer.batch_item_failures.len(), 1, "the record is retried");
    // What the cut-off router left, as the inbox sees it.
    proxy.refuse_none();
    let listed = relay_e2e::faults::conversations(&http, &relay).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0]["window_expires_at"].is_i64(),
        "listed without a window: {}",
        listed[0]
    );
    let contact = listed[0]["contact_id"].as_str().unwrap().to_owned();
    let (_, refusals) = post_replies(&http, &relay, &[contact], 1, 1).await.unwrap();
    assert_eq!(refusals, 0);
}
