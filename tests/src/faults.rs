//! Fault injection for the fault suites (`tests/tests/faults.rs` on moto,
//! `crates/cli/tests/faults.rs` on the embedded backend): a proxy that fails, throttles, stalls
//! and "loses the answer to" AWS calls on their way to moto; a load of distinct webhooks and
//! replies driven like 360dialog and a pharmacy's software drive them (retrying until accepted);
//! and the check of what ended where, printed as a table.

use crate::fake::{Fake, Recorded};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A seeded random source (xorshift64*), shared by threads: a run is replayed from its seed as
/// far as the scheduling allows.
#[derive(Debug)]
pub struct Dice(AtomicU64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(AtomicU64::new(seed.max(1)))
    }

    /// Uniform in [0, 1).
    pub fn roll(&self) -> f64 {
        let mut x = self.0.load(Ordering::Relaxed);
        loop {
            let mut n = x;
            n ^= n >> 12;
            n ^= n << 25;
            n ^= n >> 27;
            match self
                .0
                .compare_exchange_weak(x, n, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return (n.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64
                        / (1u64 << 53) as f64;
                }
                Err(now) => x = now,
            }
        }
    }

    /// Uniform in [0, n).
    pub fn below(&self, n: u64) -> u64 {
        (self.roll() * n as f64) as u64
    }
}

/// The seed of a run: `FAULT_SEED`, else the clock (printed, so a failing run can be replayed).
pub fn seed() -> u64 {
    std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            // A seed, not a rule: any varying number will do.
            relay_core::Clock::system().now_ms() as u64
        })
}

/// `name` from the environment, else `default` (the suites' sizes: `FAULT_WEBHOOKS` …).
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Rates (0..1) of faults on AWS calls (DynamoDB, SQS, KMS: the JSON-protocol services).
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsFaults {
    /// 500 InternalFailure; the call did not happen.
    pub error: f64,
    /// 400 ThrottlingException / ProvisionedThroughputExceededException; did not happen.
    pub throttle: f64,
    /// The call happens, its answer comes after `slow_for` (past the SDK's attempt timeout).
    pub slow: f64,
    /// The call happens, and the client is told 500 — the ambiguous failure.
    pub lost: f64,
    pub slow_for: Duration,
}

/// How many faults of each kind a proxy injected.
#[derive(Debug, Default)]
pub struct AwsFaultCounts {
    pub calls: AtomicUsize,
    pub error: AtomicUsize,
    pub throttle: AtomicUsize,
    pub slow: AtomicUsize,
    pub lost: AtomicUsize,
}

impl AwsFaultCounts {
    pub fn injected(&self) -> usize {
        self.error.load(Ordering::Relaxed)
            + self.throttle.load(Ordering::Relaxed)
            + self.slow.load(Ordering::Relaxed)
            + self.lost.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} of {} calls: {} errors, {} throttled, {} stalled, {} answers lost",
            self.injected(),
            self.calls.load(Ordering::Relaxed),
            self.error.load(Ordering::Relaxed),
            self.throttle.load(Ordering::Relaxed),
            self.slow.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
        )
    }
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    faults: AwsFaults,
    on: AtomicBool,
    /// Calls whose answer is lost next, whether or not the random faults are on.
    lose_next: AtomicUsize,
    dice: Dice,
    counts: Arc<AwsFaultCounts>,
    /// DynamoDB calls reach moto one at a time. moto's `TransactWriteItems` copies every table
    /// it touches first and, when the transaction is cancelled, puts the copies back — undoing
    /// whatever other requests wrote meanwhile (its server is threaded, its backend unlocked).
    /// Cancelled transactions are everyday here (every duplicate is one), so without this the
    /// suite reported lost writes and miscounts that were moto's; DynamoDB itself is atomic
    /// per request.
    dynamo: tokio::sync::Mutex<()>,
    /// Calls of this operation (`x-amz-target`, e.g. `DynamoDB_20120810.UpdateItem`) are
    /// refused with 500 and not made — once a call of the second one (if any) has been made.
    refuse: std::sync::Mutex<Option<(String, Option<String>)>>,
}

/// An HTTP proxy in front of moto that injects [`AwsFaults`] while switched on. The SDK
/// clients under test use its URL as their endpoint; S3 (REST-XML) passes through untouched.
#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    state: Arc<ProxyState>,
}

impl FaultProxy {
    pub async fn start(upstream: &str, faults: AwsFaults, seed: u64) -> FaultProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(32)
                .build()
                .unwrap_or_default(),
            faults,
            on: AtomicBool::new(false),
            lose_next: AtomicUsize::new(0),
            dice: Dice::new(seed),
            counts: Arc::default(),
            dynamo: tokio::sync::Mutex::new(()),
            refuse: std::sync::Mutex::new(None),
        });
        let app = axum::Router::new()
            .fallback(proxy)
            .with_state(state.clone());
        let url = format!("http://{}", crate::serve(app).await);
        FaultProxy { url, state }
    }

    /// The next `n` calls (DynamoDB, SQS, KMS) are made, and answered 500: for regression tests
    /// of one retry after a lost answer.
    pub fn lose_next(&self, n: usize) {
        self.state.lose_next.store(n, Ordering::SeqCst);
    }

    /// From the first call of `after` on, every call of `operation` (both `x-amz-target`s;
    /// `after` may be `target|text`, a call of that target whose request names `text`) fails
    /// with 500 and is not made, until [`FaultProxy::refuse_none`]: for tests of a write
    /// interrupted between two calls.
    pub fn refuse_after(&self, after: &str, operation: &str) {
        *self.state.refuse.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((operation.to_owned(), Some(after.to_owned())));
    }

    pub fn refuse_none(&self) {
        *self.state.refuse.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn set_enabled(&self, on: bool) {
        self.state.on.store(on, Ordering::SeqCst);
    }

    pub fn counts(&self) -> Arc<AwsFaultCounts> {
        self.state.counts.clone()
    }
}

fn aws_error(status: StatusCode, kind: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{kind};Sender")) {
        // SQS's JSON protocol keeps the query-protocol error code here.
        headers.insert("x-amzn-query-error", v);
    }
    (
        status,
        headers,
        json!({"__type": kind, "message": "injected by the fault proxy"}).to_string(),
    )
        .into_response()
}

/// Whether a call of `target` with `body` is the call `after` names (`target` or `target|text`).
fn is_call(after: &str, target: &str, body: &[u8]) -> bool {
    let (op, text) = after.split_once('|').unwrap_or((after, ""));
    op == target && (text.is_empty() || body.windows(text.len()).any(|w| w == text.as_bytes()))
}

async fn proxy(State(s): State<Arc<ProxyState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    #[derive(PartialEq)]
    enum Plan {
        Pass,
        Error,
        Throttle,
        Slow,
        Lost,
    }
    let refused = {
        let mut refuse = s.refuse.lock().unwrap_or_else(|e| e.into_inner());
        match refuse.as_mut() {
            Some((_, after)) if after.as_deref().is_some_and(|a| is_call(a, &target, &body)) => {
                *after = None;
                false
            }
            Some((op, None)) => *op == target,
            _ => false,
        }
    };
    if refused {
        return aws_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure");
    }
    let scripted = !target.is_empty()
        && s.lose_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let plan = if scripted {
        Plan::Lost
    } else if s.on.load(Ordering::SeqCst) && !target.is_empty() {
        s.counts.calls.fetch_add(1, Ordering::Relaxed);
        let f = s.faults;
        let r = s.dice.roll();
        if r < f.error {
            Plan::Error
        } else if r < f.error + f.throttle {
            Plan::Throttle
        } else if r < f.error + f.throttle + f.slow {
            Plan::Slow
        } else if r < f.error + f.throttle + f.slow + f.lost {
            Plan::Lost
        } else {
            Plan::Pass
        }
    } else {
        Plan::Pass
    };
    match plan {
        Plan::Error => {
            s.counts.error.fetch_add(1, Ordering::Relaxed);
            return aws_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure");
        }
        Plan::Throttle => {
            s.counts.throttle.fetch_add(1, Ordering::Relaxed);
            let kind = if target.starts_with("DynamoDB") {
                "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
            } else {
                "ThrottlingException"
            };
            return aws_error(StatusCode::BAD_REQUEST, kind);
        }
        _ => {}
    }
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut forward = s
        .http
        .request(parts.method.clone(), format!("{}{path}", s.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name, value);
        }
    }
    // The call runs to its end in a task of its own, holding the DynamoDB turn until moto has
    // answered: a caller that gives up (a killed handler drops its connection) must not hand
    // the turn on while moto is still working on its request, as DynamoDB would have applied
    // it whole either way.
    let state = s.clone();
    let one_at_a_time = target.starts_with("DynamoDB");
    let call = tokio::spawn(async move {
        let _turn = if one_at_a_time {
            Some(state.dynamo.lock().await)
        } else {
            None
        };
        let answer = forward.send().await.ok()?;
        let status = answer.status();
        let mut headers = HeaderMap::new();
        for (name, value) in answer.headers() {
            if name != "content-length" && name != "transfer-encoding" {
                headers.insert(name.clone(), value.clone());
            }
        }
        let bytes: Bytes = answer.bytes().await.unwrap_or_default();
        Some((status, headers, bytes))
    });
    let Ok(Some((status, headers, bytes))) = call.await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    match plan {
        Plan::Lost => {
            s.counts.lost.fetch_add(1, Ordering::Relaxed);
            aws_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure")
        }
        Plan::Slow => {
            s.counts.slow.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(s.faults.slow_for).await;
            (status, headers, bytes).into_response()
        }
        _ => (status, headers, bytes).into_response(),
    }
}

/// The channel, credentials and tenant of the fault suites (both backends).
pub const PNID: &str = "106540352242922";
pub const WEBHOOK_TOKEN: &str = "fault-token";
pub const API_KEY: &str = "sk_faults_0123456789abcdef";

/// The suites' `relay.toml`: one pharmacy forwarding to `pharmacy_url`, one 360dialog number
/// served by `whatsapp_url`.
pub fn relay_toml(whatsapp_url: &str, pharmacy_url: &str) -> String {
    format!(
        r#"
[[tenants]]
id = "apotheke"
name = "Apotheke"
api_keys = ["{API_KEY}"]
forward_url = "{pharmacy_url}/hook"
forward_secret = "whsec_c3VwZXJzZWNyZXR2YWx1ZTEyMzQ1Njc4"
[[tenants.channels]]
phone_number_id = "{PNID}"
provider = "360dialog"
webhook_token = "{WEBHOOK_TOKEN}"
api_key = "d360-key"
api_base_url = "{whatsapp_url}"
"#
    )
}

/// Where the suites talk to a relay (either backend).
#[derive(Clone, Debug)]
pub struct Relay {
    /// The webhook URL of the channel (`…/webhooks/whatsapp/{phone_number_id}`).
    pub webhook_url: String,
    pub webhook_token: String,
    pub inbox_url: String,
    pub api_key: String,
    pub phone_number_id: String,
}

impl Relay {
    /// The suites' channel ([`relay_toml`]) on a receiver at `receiver_url` and an inbox API at
    /// `inbox_url`.
    pub fn new(receiver_url: &str, inbox_url: &str) -> Relay {
        Relay {
            webhook_url: format!("{receiver_url}/webhooks/whatsapp/{PNID}"),
            webhook_token: WEBHOOK_TOKEN.into(),
            inbox_url: inbox_url.to_owned(),
            api_key: API_KEY.into(),
            phone_number_id: PNID.into(),
        }
    }
}

/// The customers' numbers and the marker every message carries (`#W{i}` inbound,
/// `#R{i}` replies), so the checks find each one again in the store and at the fakes.
pub fn customer(i: usize) -> String {
    format!("49151{:08}", 40_000 + i)
}

pub fn webhook(pnid: &str, i: usize, customers: usize, now: i64) -> Vec<u8> {
    let from = customer(i % customers);
    serde_json::to_vec(&json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"4930000000","phone_number_id":pnid},
        "contacts":[{"profile":{"name":format!("Kunde {}", i % customers)},"wa_id":from}],
        "messages":[{"from":from,"id":format!("wamid.FAULT{i:08}"),"timestamp":now.to_string(),"type":"text",
          "text":{"body":format!("Ist mein Rezept da? #W{i}#")}}]}}]}]}))
    .unwrap_or_default()
}

/// What the client side saw while driving the relay.
#[derive(Debug, Default)]
pub struct Driven {
    pub webhooks: usize,
    /// Answers other than 200 (or no answer) before a webhook was accepted; 360dialog retries.
    pub webhook_refusals: usize,
    pub replies: usize,
    pub reply_refusals: usize,
}

/// Posts `count` distinct webhooks with `concurrency` connections, each retried (as 360dialog
/// does) until answered 200. `on_refusal` runs on a refusal (the embedded suite restarts a
/// killed server there).
pub async fn post_webhooks(
    http: &reqwest::Client,
    relay: &Relay,
    count: usize,
    customers: usize,
    concurrency: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> anyhow::Result<(usize, usize)> {
    let now = relay_core::Clock::system().now();
    let next = AtomicUsize::new(0);
    let refusals = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return Ok::<_, anyhow::Error>(());
            }
            let body = webhook(&relay.phone_number_id, i, customers, now);
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let answer = http
                    .post(&relay.webhook_url)
                    .bearer_auth(&relay.webhook_token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if answer.as_ref().is_ok_and(|a| a.status() == 200) {
                    break;
                }
                refusals.fetch_add(1, Ordering::Relaxed);
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "webhook {i} was not accepted within 120 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(250) {
                progress(n);
            }
        }
    };
    let workers: Vec<_> = (0..concurrency.max(1)).map(|_| worker()).collect();
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    Ok((count, refusals.load(Ordering::Relaxed)))
}

async fn get_json(http: &reqwest::Client, relay: &Relay, path: &str) -> anyhow::Result<Value> {
    let answer = http
        .get(format!("{}{path}", relay.inbox_url))
        .bearer_auth(&relay.api_key)
        .send()
        .await?;
    anyhow::ensure!(answer.status() == 200, "GET {path}: {}", answer.status());
    Ok(answer.json().await?)
}

/// Every page of a listing.
async fn all_pages(
    http: &reqwest::Client,
    relay: &Relay,
    path: &str,
    field: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=100&cursor={c}"),
            None => format!("{path}?limit=100"),
        };
        let page = get_json(http, relay, &url).await?;
        out.extend(page[field].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(out),
        }
    }
}

/// Conversations, retried through faults.
pub async fn conversations(http: &reqwest::Client, relay: &Relay) -> Vec<Value> {
    for _ in 0..50 {
        if let Ok(c) = all_pages(http, relay, "/v1/conversations", "conversations").await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Vec::new()
}

/// Waits until `n` conversations exist (the router is behind the queue).
pub async fn wait_for_conversations(
    http: &reqwest::Client,
    relay: &Relay,
    n: usize,
    within: Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + within;
    loop {
        let c = conversations(http, relay).await;
        if c.len() >= n {
            return Ok(c
                .iter()
                .filter_map(|c| c["contact_id"].as_str().map(str::to_owned))
                .collect());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} conversations after {within:?}",
            c.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts `count` text replies spread over `contacts`, each with an Idempotency-Key and
/// retried (as a pharmacy's software should) until answered 202.
pub async fn post_replies(
    http: &reqwest::Client,
    relay: &Relay,
    contacts: &[String],
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(usize, usize)> {
    let next = AtomicUsize::new(0);
    let refusals = AtomicUsize::new(0);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return Ok::<_, anyhow::Error>(());
            }
            let contact = &contacts[i % contacts.len()];
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let answer = http
                    .post(format!(
                        "{}/v1/conversations/{contact}/messages",
                        relay.inbox_url
                    ))
                    .bearer_auth(&relay.api_key)
                    .header("idempotency-key", format!("fault-reply-{i}"))
                    .json(
                        &json!({"type": "text", "text": format!("Ihre Bestellung ist da. #R{i}#")}),
                    )
                    .send()
                    .await;
                if answer.as_ref().is_ok_and(|a| a.status() == 202) {
                    break;
                }
                if let Ok(a) = &answer {
                    anyhow::ensure!(
                        a.status().is_server_error(),
                        "reply {i} refused with {}",
                        a.status()
                    );
                }
                refusals.fetch_add(1, Ordering::Relaxed);
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "reply {i} was not accepted within 120 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let workers: Vec<_> = (0..concurrency.max(1)).map(|_| worker()).collect();
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    Ok((count, refusals.load(Ordering::Relaxed)))
}

/// The marker `#{prefix}{n}#` in a text.
fn marker(text: &str, prefix: char) -> Option<usize> {
    let start = text.find(&format!("#{prefix}"))? + 2;
    let rest = &text[start..];
    rest[..rest.find('#')?].parse().ok()
}

/// What the store holds, read back through the inbox API.
#[derive(Debug, Default)]
pub struct Stored {
    /// Inbound marker → how often stored.
    pub inbound: BTreeMap<usize, usize>,
    /// Reply marker → (how often stored, its status, its id `m_…`).
    pub replies: BTreeMap<usize, (usize, String, String)>,
    /// Inbound message id (`m_…`) of each inbound marker.
    pub inbound_ids: HashMap<String, usize>,
    /// Conversations whose unread count is not their number of inbound messages.
    pub unread_mismatches: usize,
}

pub async fn read_back(http: &reqwest::Client, relay: &Relay) -> anyhow::Result<Stored> {
    let mut stored = Stored::default();
    for c in all_pages(http, relay, "/v1/conversations", "conversations").await? {
        let id = c["contact_id"].as_str().unwrap_or_default();
        let messages = all_pages(
            http,
            relay,
            &format!("/v1/conversations/{id}/messages"),
            "messages",
        )
        .await?;
        let mut inbound = 0;
        for m in &messages {
            let text = m["text"].as_str().unwrap_or_default();
            if m["direction"] == "inbound" {
                inbound += 1;
                if let Some(i) = marker(text, 'W') {
                    *stored.inbound.entry(i).or_default() += 1;
                    if let Some(mid) = m["id"].as_str() {
                        stored.inbound_ids.insert(mid.to_owned(), i);
                    }
                }
            } else if let Some(i) = marker(text, 'R') {
                let e = stored.replies.entry(i).or_default();
                e.0 += 1;
                e.1 = m["status"].as_str().unwrap_or_default().to_owned();
                e.2 = m["id"].as_str().unwrap_or_default().to_owned();
            }
        }
        if c["unread"].as_u64() != Some(inbound) {
            stored.unread_mismatches += 1;
        }
    }
    Ok(stored)
}

/// What reached the fake 360dialog: reply marker → (times processed, how many of its requests
/// took effect with an unknown outcome for the relay: answered too late or broken off).
pub fn sends(fake: &Fake) -> BTreeMap<usize, (usize, usize)> {
    let mut out: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for r in fake.requests() {
        let body = r.json();
        let Some(i) = body["text"]["body"].as_str().and_then(|t| marker(t, 'R')) else {
            continue;
        };
        let e = out.entry(i).or_default();
        if r.processed {
            e.0 += 1;
        }
        if r.fault.is_some_and(|f| f.is_ambiguous()) {
            e.1 += 1;
        }
    }
    out
}

/// What reached the fake pharmacy: inbound message id → (times processed, distinct webhook ids).
pub fn forwards(pharmacy: &Fake) -> HashMap<String, (usize, std::collections::BTreeSet<String>)> {
    let mut out: HashMap<String, (usize, std::collections::BTreeSet<String>)> = HashMap::new();
    for r in pharmacy.requests() {
        let body = r.json();
        if body["type"] != "message.received" {
            continue;
        }
        let Some(id) = body["data"]["message_id"].as_str() else {
            continue;
        };
        let e = out.entry(id.to_owned()).or_default();
        if r.processed {
            e.0 += 1;
        }
        if let Some(h) = r.header("webhook-id") {
            e.1.insert(h);
        }
    }
    out
}

/// Faults injected at a fake.
pub fn fake_faults(requests: &[Recorded]) -> usize {
    requests.iter().filter(|r| r.fault.is_some()).count()
}

/// The verdict of a fault run: the summary table's row and the checks behind it.
#[derive(Debug, Default)]
pub struct Verdict {
    pub backend: &'static str,
    pub webhooks: usize,
    pub replies: usize,
    pub faults: String,
    pub stored: usize,
    /// Inbound messages stored more than once (must be 0).
    pub stored_twice: usize,
    /// Extra sends of a reply WhatsApp had already got (allowed: one per send whose outcome
    /// the relay could not know — the answer lost, or the process killed after the send).
    pub sent_again: usize,
    /// Extra sends beyond that (must be 0).
    pub sent_again_unexplained: usize,
    pub forwards_missing: usize,
    pub forward_ids_unstable: usize,
    pub unread_mismatches: usize,
    /// Dead-lettered before the redrive.
    pub dead_lettered: usize,
    /// Replies that ended `failed` (they are in the DLQ, reported, not lost).
    pub replies_failed: usize,
    pub lost: usize,
    /// The markers of what was lost (`W17`: webhook 17, `R3`: reply 3), for the report.
    pub lost_markers: Vec<String>,
}

impl Verdict {
    /// Compares what was accepted with what the store and the fakes hold. `kills` is how many
    /// times the job of each reply (by message id) was killed mid-flight, or, where the suite
    /// cannot tell which (a killed process sending one job at a time), `Err(total kills)`: each
    /// kill explains at most one second send. A kill between WhatsApp's answer and the store
    /// write is the documented window for a second send.
    pub fn check(
        backend: &'static str,
        webhooks: usize,
        replies: usize,
        stored: &Stored,
        sent: &BTreeMap<usize, (usize, usize)>,
        forwarded: &HashMap<String, (usize, std::collections::BTreeSet<String>)>,
        kills: Result<&HashMap<String, usize>, usize>,
    ) -> Verdict {
        let mut v = Verdict {
            backend,
            webhooks,
            replies,
            ..Verdict::default()
        };
        for i in 0..webhooks {
            match stored.inbound.get(&i).copied().unwrap_or(0) {
                0 => {
                    v.lost += 1;
                    v.lost_markers.push(format!("W{i}"));
                }
                1 => v.stored += 1,
                _ => {
                    v.stored += 1;
                    v.stored_twice += 1;
                }
            }
        }
        for i in 0..replies {
            let (copies, status, id) = stored.replies.get(&i).cloned().unwrap_or_default();
            if copies > 1 {
                v.stored_twice += 1;
            }
            let (times, unknown) = sent.get(&i).copied().unwrap_or_default();
            if times == 0 {
                if status == "failed" {
                    v.replies_failed += 1;
                } else {
                    v.lost += 1;
                    v.lost_markers.push(format!("R{i}"));
                }
                continue;
            }
            let killed = match kills {
                Ok(per_job) => per_job.get(&id).copied().unwrap_or(0),
                Err(_) => 0,
            };
            let again = times - 1;
            v.sent_again += again;
            v.sent_again_unexplained += again.saturating_sub(unknown + killed);
        }
        for id in stored.inbound_ids.keys() {
            match forwarded.get(id) {
                Some((n, ids)) if *n >= 1 => {
                    if ids.len() != 1 {
                        v.forward_ids_unstable += 1;
                    }
                }
                _ => v.forwards_missing += 1,
            }
        }
        if let Err(total) = kills {
            v.sent_again_unexplained = v.sent_again_unexplained.saturating_sub(total);
        }
        v.unread_mismatches = stored.unread_mismatches;
        v
    }

    pub fn table(rows: &[&Verdict]) -> String {
        let mut out = String::from(
            "| backend | webhooks sent | replies sent | faults injected | stored | stored twice | sent again (outcome unknown) | forwards missing | in DLQ before redrive | replies failed | lost |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for v in rows {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v.backend,
                v.webhooks,
                v.replies,
                v.faults,
                v.stored,
                v.stored_twice,
                v.sent_again,
                v.forwards_missing,
                v.dead_lettered,
                v.replies_failed,
                v.lost
            ));
        }
        out
    }

    /// Panics with the table unless every guarantee held.
    pub fn assert_held(&self) {
        let mut table = Verdict::table(&[self]);
        if !self.lost_markers.is_empty() {
            table.push_str(&format!("lost: {:?}\n", self.lost_markers));
        }
        println!("{table}");
        assert_eq!(self.lost, 0, "accepted but lost\n{table}");
        assert_eq!(self.stored_twice, 0, "stored twice\n{table}");
        assert_eq!(
            self.sent_again_unexplained, 0,
            "a reply sent again although its first send was known\n{table}"
        );
        assert_eq!(self.forwards_missing, 0, "forwards missing\n{table}");
        assert_eq!(
            self.forward_ids_unstable, 0,
            "a forward delivered under two webhook ids\n{table}"
        );
        assert_eq!(
            self.unread_mismatches, 0,
            "unread counts off (a message counted twice or not at all)\n{table}"
        );
    }
}
