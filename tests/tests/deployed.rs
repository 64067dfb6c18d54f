//! The deployed code path before anyone deploys: the four Lambda binaries, unmodified, under
//! the local Lambda host (infra/lambda-host/host.py) on moto. The host creates the template's
//! tables, queues, key and bucket from template.yaml's own definitions, gives each function
//! the environment template.yaml gives it, and feeds it as AWS would: Function URL events for
//! webhook-receiver and HTTP API events for inbox-api (both built from real HTTP requests), SQS
//! event-source mappings (batches, ReportBatchItemFailures, the redrive policy) for
//! message-router and reply-sender. Nothing here wires a handler: every request goes through a
//! function's `main`. With `RELAY_DEPLOYED_SAM_BUILD=<dir>` the functions are the `bootstrap`
//! files `sam build` put there (what the zips hold); CI runs it so after infra/build-lambdas.sh.
//!
//! Webhook shapes: Meta's Cloud API "messages" webhook (text, image, statuses), as 360dialog
//! forwards it: https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components
//! (the same shapes as tests/fixtures/text.json, image.json and status_*.json).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_e2e::Moto;
use relay_e2e::fake::{Fake, MediaMode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PNID: &str = "106540352242922";
const TOKEN: &str = "tok-deployed-path-0001";
const API_KEY: &str = "sk_deployed_0123456789abcdef";
const CUSTOMER: &str = "4915112345678";
const NAME: &str = "Erika Mustermann";
const TEXT: &str = "Ist mein Ibuprofen schon da?";
const REPLY: &str = "Ja, es liegt bereit.";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The binaries as `cargo build` makes them (the functions' and the `relay` CLI), built once
/// per test run so that what runs is the code under test, never an older build.
fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(root())
            .args([
                "build",
                "--locked",
                "--message-format=json-render-diagnostics",
            ])
            .args([
                "-p",
                "webhook-receiver",
                "-p",
                "message-router",
                "-p",
                "reply-sender",
            ])
            .args(["-p", "inbox-api", "-p", "relay"])
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(out.status.success(), "cargo build of the binaries failed");
        let mut dir = None;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(m) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "webhook-receiver"
                && let Some(exe) = m["executable"].as_str()
            {
                dir = Path::new(exe).parent().map(Path::to_path_buf);
            }
        }
        let dir = dir.expect("cargo names the webhook-receiver binary");
        for b in [
            "webhook-receiver",
            "message-router",
            "reply-sender",
            "inbox-api",
            "relay",
        ] {
            assert!(dir.join(b).exists(), "{b} not built in {}", dir.display());
        }
        dir
    })
}

/// The host with moto, a fake 360dialog and a fake pharmacy endpoint; the host is stopped on drop.
struct Deployed {
    host: Child,
    moto: Moto,
    out: Value,
    dir: tempfile::TempDir,
    fake: Fake,
    pharmacy: Fake,
    http: reqwest::Client,
}

impl Drop for Deployed {
    fn drop(&mut self) {
        let _ = self.host.kill();
        let _ = self.host.wait();
    }
}

impl Deployed {
    async fn start(idle_seconds: u32) -> Deployed {
        let bins = binaries();
        let moto = Moto::start().unwrap();
        let fake = Fake::start().await;
        let pharmacy = Fake::start().await;
        let dir = tempfile::tempdir().unwrap();
        let outputs = dir.path().join("outputs.json");
        let mut host = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("infra/lambda-host/host.py"))
            .args(["--endpoint-url", &moto.endpoint, "--port", "0"])
            .arg("--bin-dir")
            .arg(bins)
            // CI runs this suite a second time on the zips' contents (`sam build`'s output).
            .args(
                std::env::var("RELAY_DEPLOYED_SAM_BUILD")
                    .map(|dir| vec!["--sam-build-dir".to_owned(), dir])
                    .unwrap_or_default(),
            )
            .args(["--idle-seconds", &idle_seconds.to_string()])
            // Failed records come back after 2 s instead of the template's 180.
            .args(["--visibility-timeout", "2"])
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            .arg("--outputs")
            .arg(&outputs)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run infra/setup-venv.sh first (the host needs .venv's boto3 and PyYAML)");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !outputs.exists() {
            assert!(Instant::now() < deadline, "the host did not come up");
            if let Some(status) = host.try_wait().unwrap() {
                panic!("the host stopped ({status}); its reason is above");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out: Value = serde_json::from_slice(&std::fs::read(&outputs).unwrap()).unwrap();
        let d = Deployed {
            host,
            moto,
            out,
            dir,
            fake,
            pharmacy,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        };
        // The tenant, applied to the table as on a real deployment.
        let config = format!(
            r#"
[[tenants]]
id = "apotheke-deployed"
name = "Apotheke"
api_keys = ["{API_KEY}"]
forward_url = "{}/hook"
forward_secret = "whsec_c3VwZXJzZWNyZXR2YWx1ZTEyMzQ1Njc4"

[[tenants.channels]]
phone_number_id = "{PNID}"
provider = "360dialog"
webhook_token = "{TOKEN}"
api_key = "d360-deployed"
api_base_url = "{}"
"#,
            d.pharmacy.url, d.fake.url
        );
        let file = d.dir.path().join("relay.toml");
        std::fs::write(&file, config).unwrap();
        let table = d.output("TableName");
        let key = d.output("KmsKeyId");
        d.relay(&[
            "tenants",
            "apply",
            "--file",
            file.to_str().unwrap(),
            "--table",
            &table,
            "--kms-key-id",
            &key,
        ]);
        d
    }

    fn output(&self, name: &str) -> String {
        self.out[name]
            .as_str()
            .unwrap_or_else(|| panic!("no output {name}: {}", self.out))
            .to_owned()
    }

    /// The `relay` CLI against this deployment; its standard output.
    fn relay(&self, args: &[&str]) -> String {
        let out = Command::new(binaries().join("relay"))
            .args(args)
            .args(["--endpoint-url", &self.moto.endpoint])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "eu-central-1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "relay {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn inbox(&self) -> String {
        self.output("InboxApiUrl")
    }

    async fn post_webhook(&self, value: Value) -> u16 {
        let hook = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
            "changes": [{"field": "messages", "value": value}]}]});
        let url = self.output("WebhookUrl").replace("{phone_number_id}", PNID);
        self.http
            .post(url)
            .bearer_auth(TOKEN)
            .json(&hook)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A request of the pharmacy's software to the inbox API.
    async fn call(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.http
            .request(method, format!("{}{path}", self.inbox()))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
    }

    async fn api(&self, path: &str) -> Value {
        let r = self.call(reqwest::Method::GET, path).await;
        assert_eq!(r.status().as_u16(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// Polls until `check` holds (the functions run on their own, driven by the queues).
    async fn until<T>(&self, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn messages(&self, cid: &str) -> Vec<Value> {
        self.api(&format!("/v1/conversations/{cid}/messages")).await["messages"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn stats(&self) -> Value {
        reqwest::get(format!("{}/stats", self.output("ControlUrl")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn queue_depth(&self, url: &str) -> u64 {
        let sqs = self.moto.clients().await.sqs;
        let a = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .send()
            .await
            .unwrap();
        a.attributes()
            .unwrap()
            .values()
            .map(|v| v.parse::<u64>().unwrap())
            .sum()
    }

    /// Every function's log, as CloudWatch would hold it.
    fn logs(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self.dir.path().join("logs")).unwrap() {
            all += &std::fs::read_to_string(e.unwrap().path()).unwrap();
        }
        all
    }
}

fn metadata() -> Value {
    json!({"display_phone_number": "4930123456", "phone_number_id": PNID})
}

fn now() -> i64 {
    relay_core::Clock::system().now()
}

#[tokio::test]
async fn the_deployed_functions_take_a_conversation_from_webhook_to_read_reply_and_erasure() {
    let d = Deployed::start(600).await;
    let t = now();

    // A customer writes: the Function URL answers 200 only once queued; the router's mapping
    // stores it; the HTTP API lists it.
    let hook = json!({"messaging_product": "whatsapp", "metadata": metadata(),
        "contacts": [{"profile": {"name": NAME}, "wa_id": CUSTOMER}],
        "messages": [{"from": CUSTOMER, "id": "wamid.DEPLOYED1", "timestamp": t.to_string(),
            "type": "text", "text": {"body": TEXT}}]});
    assert_eq!(d.post_webhook(hook.clone()).await, 200);
    // WhatsApp delivers at least once: the same webhook again is stored once.
    assert_eq!(d.post_webhook(hook).await, 200);
    let cid = d
        .until("the conversation", async || {
            let c = d.api("/v1/conversations").await;
            c["conversations"][0]["contact_id"]
                .as_str()
                .map(str::to_owned)
        })
        .await;
    let msgs = d.messages(&cid).await;
    assert_eq!(msgs.len(), 1, "stored once: {msgs:?}");
    assert_eq!(msgs[0]["text"], TEXT);
    // Wrong token: refused by the function itself, nothing queued.
    let r = d
        .http
        .post(d.output("WebhookUrl").replace("{phone_number_id}", PNID))
        .bearer_auth("not-the-token")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A path the HTTP API has no route for is API Gateway's 404, not the function's.
    let r = d
        .http
        .get(format!("{}/no/such/route", d.inbox()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.text().await.unwrap(), r#"{"message":"Not Found"}"#);

    // The pharmacy answers; reply-sender's mapping sends it through the fake 360dialog.
    let r = d
        .http
        .post(format!("{}/v1/conversations/{cid}/messages", d.inbox()))
        .bearer_auth(API_KEY)
        .json(&json!({"type": "text", "text": REPLY}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wamid = d
        .until("the send", async || {
            let sends: Vec<_> = d
                .fake
                .requests()
                .into_iter()
                .filter(|r| r.path.ends_with("/messages") && r.json()["type"] == "text")
                .collect();
            (!sends.is_empty()).then(|| {
                assert_eq!(sends[0].json()["text"]["body"], REPLY);
                assert_eq!(
                    sends[0].header("d360-api-key").as_deref(),
                    Some("d360-deployed")
                );
                d.fake.wamids()[0].clone()
            })
        })
        .await;
    // The signed forward of the customer's message reached the pharmacy's software.
    d.until("the forward", async || {
        d.pharmacy
            .requests()
            .iter()
            .any(|r| {
                r.json()["type"] == "message.received" && r.header("webhook-signature").is_some()
            })
            .then_some(())
    })
    .await;

    // WhatsApp reports the reply's progress, out of order; it ends read.
    for (status, dt) in [("delivered", 2), ("sent", 1), ("read", 3)] {
        let st = json!({"messaging_product": "whatsapp", "metadata": metadata(), "statuses": [{"id": wamid,
            "status": status, "timestamp": (t + dt).to_string(), "recipient_id": CUSTOMER}]});
        assert_eq!(d.post_webhook(st).await, 200);
    }
    d.until("the read status", async || {
        let m = d.messages(&cid).await;
        m.iter()
            .any(|m| {
                m["id"] == id.as_str() && m["status"] == "read" && m["wamid"] == wamid.as_str()
            })
            .then_some(())
    })
    .await;
    let sent = d
        .fake
        .requests()
        .iter()
        .filter(|r| r.json()["type"] == "text")
        .count();
    assert_eq!(sent, 1, "sent once");

    // A photo: reply-sender fetches it at once and seals it into the bucket; the API serves it.
    let photo = b"%DEPLOYED-PHOTO%".repeat(4096);
    d.fake
        .add_media("DEPLOYEDIMG", photo.clone(), MediaMode::Good);
    let img = json!({"messaging_product": "whatsapp", "metadata": metadata(),
        "contacts": [{"profile": {"name": NAME}, "wa_id": CUSTOMER}],
        "messages": [{"from": CUSTOMER, "id": "wamid.DEPLOYED2", "timestamp": (t + 5).to_string(),
            "type": "image", "image": {"id": "DEPLOYEDIMG", "mime_type": "image/jpeg",
            "sha256": Fake::sha256_b64(&photo)}}]});
    assert_eq!(d.post_webhook(img).await, 200);
    let media_id = d
        .until("the photo", async || {
            let m = d.messages(&cid).await;
            m.iter()
                .find(|m| m["media"]["status"] == "available")
                .map(|m| m["media"]["id"].as_str().unwrap().to_owned())
        })
        .await;
    let r = d
        .call(reqwest::Method::GET, &format!("/v1/media/{media_id}"))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.bytes().await.unwrap() == photo,
        "served whole through the HTTP API"
    );

    // Staff sign in to the web inbox (accounts as `relay staff add --aws` makes them) and answer.
    let added = d.relay(&[
        "staff",
        "add",
        "--aws",
        "--table",
        &d.output("TableName"),
        "--audit-table",
        &d.output("AuditTableName"),
        "--tenant",
        "apotheke-deployed",
        "--email",
        "anna@apotheke.example",
        "--role",
        "staff",
    ]);
    let password = added
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .expect("a generated password, printed once")
        .to_owned();
    web_reply(&d, &cid, &password).await;
    d.until("the web reply's send", async || {
        d.fake
            .requests()
            .iter()
            .any(|r| r.json()["text"]["body"] == "Bis gleich!")
            .then_some(())
    })
    .await;

    // The pickup reminder schedule runs (nothing is due).
    let r = d
        .http
        .post(format!("{}/schedule/Reminders", d.output("ControlUrl")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());

    // Erasure: the contact, its messages and its photo are gone.
    let r = d
        .call(reqwest::Method::DELETE, &format!("/v1/contacts/{cid}"))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let receipt: Value = r.json().await.unwrap();
    assert_eq!(receipt["deleted"]["media"], 1, "{receipt}");
    let c = d.api("/v1/conversations").await;
    assert!(c["conversations"].as_array().unwrap().is_empty(), "{c}");
    let r = d
        .call(reqwest::Method::GET, &format!("/v1/media/{media_id}"))
        .await;
    assert_eq!(r.status().as_u16(), 404);

    // One warm instance per function, re-used: one start each for all of the above.
    let stats = d.stats().await;
    let receiver = &stats["functions"]["WebhookReceiverFunction"];
    assert!(receiver["invokes"].as_u64().unwrap() >= 7, "{stats}");
    assert_eq!(receiver["cold_starts"], 1, "{stats}");
    for f in [
        "MessageRouterFunction",
        "ReplySenderFunction",
        "InboxApiFunction",
    ] {
        assert_eq!(stats["functions"][f]["cold_starts"], 1, "{f}: {stats}");
        assert_eq!(stats["functions"][f]["errors"], 0, "{f}: {stats}");
    }

    // What CloudWatch would have: no number, name, text or secret in any function's log.
    let logs = d.logs();
    assert!(
        logs.contains("webhook-receiver") || logs.contains("\"level\""),
        "the functions logged: {logs:.300}"
    );
    for secret in [
        CUSTOMER,
        NAME,
        TEXT,
        REPLY,
        "Bis gleich!",
        TOKEN,
        API_KEY,
        "d360-deployed",
        &password,
    ] {
        assert!(!logs.contains(secret), "a log line holds {secret:?}");
    }
}

async fn web_reply(d: &Deployed, cid: &str, password: &str) {
    fn hidden(html: &str, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).unwrap() + marker.len();
        html[start..start + html[start..].find('"').unwrap()].to_owned()
    }
    fn cookie(r: &reqwest::Response, name: &str) -> String {
        let c = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie"));
        c.split(';').next().unwrap().to_owned()
    }
    let url = d.inbox();
    let page = d.http.get(format!("{url}/login")).send().await.unwrap();
    let login = cookie(&page, "relay_login");
    let csrf = hidden(&page.text().await.unwrap(), "csrf");
    let r = d
        .http
        .post(format!("{url}/login"))
        .header("cookie", login)
        .form(&[
            ("email", "anna@apotheke.example"),
            ("password", password),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "signed in");
    // Behind the HTTP API (HTTPS only) the session cookie is __Host- and Secure.
    let session = cookie(&r, "__Host-relay_session");
    let page = d
        .http
        .get(format!("{url}/inbox/c/{cid}"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(NAME), "the conversation shows the customer");
    let r = d
        .http
        .post(format!("{url}/inbox/c/{cid}/reply"))
        .header("cookie", &session)
        .form(&[
            ("csrf", hidden(&page, "csrf").as_str()),
            ("text", "Bis gleich!"),
            ("nonce", hidden(&page, "nonce").as_str()),
        ])
        .send()
        .await
        .unwrap();
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.contains("notice=queued"), "{to}");
}

#[tokio::test]
async fn a_poison_record_reaches_the_dlq_and_relay_redrives_it_and_idle_instances_start_cold() {
    let d = Deployed::start(3).await;
    let inbound = d.output("InboundQueueUrl");
    let dlq = d.output("InboundDlqUrl");
    // Something that is not a queued webhook lands on the inbound queue (a bug, a manual send),
    // beside a good webhook: the good one is stored, the poison one fails on its own.
    let sqs = d.moto.clients().await.sqs;
    sqs.send_message()
        .queue_url(&inbound)
        .message_body("not an envelope")
        .send()
        .await
        .unwrap();
    let hook = json!({"messaging_product": "whatsapp", "metadata": metadata(),
        "contacts": [{"profile": {"name": NAME}, "wa_id": CUSTOMER}],
        "messages": [{"from": CUSTOMER, "id": "wamid.DEPLOYED3", "timestamp": now().to_string(),
            "type": "text", "text": {"body": TEXT}}]});
    assert_eq!(d.post_webhook(hook).await, 200);
    d.until("the good webhook", async || {
        let c = d.api("/v1/conversations").await;
        (c["conversations"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;
    // After maxReceiveCount (5) receives, the queue's redrive policy moves it to the DLQ.
    d.until("the poison record in the DLQ", async || {
        (d.queue_depth(&dlq).await == 1 && d.queue_depth(&inbound).await == 0).then_some(())
    })
    .await;
    let stats = d.stats().await;
    let failed_before = stats["mappings"][d.out["Functions"]["MessageRouterFunction"]
        .as_str()
        .unwrap()]["failed"]
        .as_u64()
        .unwrap();
    // moto moves a record on the receive that reaches maxReceiveCount (SQS: the one after).
    assert!(failed_before >= 4, "failed on each receive: {stats}");

    let listed = d.relay(&["dlq", "list", "--aws", "--dlq-url", &dlq]);
    assert!(
        listed.contains("\t15 bytes"),
        "the listing names the record by id and size, never content: {listed}"
    );
    assert!(!listed.contains("envelope"));
    // Wait out the listing's peek (it hides the record for a moment), then redrive.
    d.until("the redrive", async || {
        let out = d.relay(&[
            "dlq",
            "redrive",
            "--aws",
            "--dlq-url",
            &dlq,
            "--queue-url",
            &inbound,
        ]);
        (out.trim() == "moved 1 message(s) back to the queue").then_some(())
    })
    .await;
    // Back on the inbound queue, the router sees it again (and, still poison, it returns to
    // the DLQ).
    d.until("the redriven record handled again", async || {
        let s = d.stats().await;
        let failed = s["mappings"][d.out["Functions"]["MessageRouterFunction"]
            .as_str()
            .unwrap()]["failed"]
            .as_u64()
            .unwrap();
        (failed > failed_before).then_some(())
    })
    .await;

    // An instance idle longer than the idle time is stopped; the next webhook starts a new one.
    let before = d.stats().await["functions"]["WebhookReceiverFunction"]["cold_starts"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let again = json!({"messaging_product": "whatsapp", "metadata": metadata(),
        "contacts": [{"profile": {"name": NAME}, "wa_id": CUSTOMER}],
        "messages": [{"from": CUSTOMER, "id": "wamid.DEPLOYED4", "timestamp": now().to_string(),
            "type": "text", "text": {"body": "Noch eine Frage"}}]});
    assert_eq!(
        d.post_webhook(again).await,
        200,
        "answered after a cold start"
    );
    let after = d.stats().await["functions"]["WebhookReceiverFunction"]["cold_starts"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 1);
}
