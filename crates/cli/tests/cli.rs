//! The `relay` binary as a user runs it: `relay serve` end to end on the embedded backends
//! (including a restart), admin commands locally and against moto, and --help everywhere.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[[tenants]]
id = "apotheke-am-markt"
name = "Apotheke am Markt"
api_keys = ["${TEST_INBOX_KEY}"]
retention_days = 30

[[tenants.channels]]
phone_number_id = "106540352242922"
provider = "360dialog"
webhook_token = "${TEST_WEBHOOK_TOKEN}"
"#;

fn relay(args: &[&str], dir: &Path) -> Output {
    Command::new(RELAY)
        .args(args)
        .current_dir(dir)
        .env("TEST_INBOX_KEY", "sk_cli_test_0123456789")
        .env("TEST_WEBHOOK_TOKEN", "cli-webhook-token")
        .output()
        .unwrap()
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `relay serve` in `dir`, appending its output (debug level) to `dir/serve.log`.
fn serve(dir: &Path) -> Server {
    let port = free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .unwrap();
    let child = Command::new(RELAY)
        .args([
            "serve",
            "--config",
            "relay.toml",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            "data",
        ])
        .current_dir(dir)
        .env("TEST_INBOX_KEY", "sk_cli_test_0123456789")
        .env("TEST_WEBHOOK_TOKEN", "cli-webhook-token")
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "relay serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn conversations(http: &reqwest::Client, url: &str) -> Vec<Value> {
    let v: Value = http
        .get(format!("{url}/v1/conversations"))
        .bearer_auth("sk_cli_test_0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["conversations"].as_array().unwrap().clone()
}

/// Polls until the router has caught up (it runs asynchronously behind the queue).
async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = conversations(http, url).await;
        if pred(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "pipeline did not catch up: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(http: &reqwest::Client, url: &str, fixture: &str) -> u16 {
    http.post(format!("{url}/webhooks/whatsapp/106540352242922"))
        .bearer_auth("cli-webhook-token")
        .body(relay_e2e::fixture(fixture))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn serve_runs_the_pipeline_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), CONFIG).unwrap();
    let http = reqwest::Client::new();
    {
        let server = serve(dir.path());
        for f in ["multi", "text", "image", "bsuid_only", "text"] {
            assert_eq!(post(&http, &server.url, f).await, 200);
        }
        let convs = wait_for(&http, &server.url, |c| {
            c.len() == 3 && c.iter().any(|x| x["unread"] == 4)
        })
        .await;
        let erika = convs
            .iter()
            .find(|c| c["name"] == "Erika Mustermann")
            .unwrap();
        assert_eq!(erika["unread"], 4, "the duplicate text counted once");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data/pseudonym.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }
    // After a restart: the same data, the same contact ids, duplicates still recognised.
    let server = serve(dir.path());
    let before = conversations(&http, &server.url).await;
    assert_eq!(before.len(), 3);
    assert_eq!(post(&http, &server.url, "image").await, 200);
    assert_eq!(post(&http, &server.url, "video").await, 200);
    let after = wait_for(&http, &server.url, |c| c.iter().any(|x| x["unread"] == 5)).await;
    assert_eq!(after.len(), 3);
    let ids = |v: &[Value]| {
        let mut ids: Vec<String> = v
            .iter()
            .map(|c| c["contact_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&before), ids(&after));

    // Nothing personal in the logs, at debug level: no number, name, text or secret.
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("webhook queued") && log.contains("inbound message"),
        "the debug log is captured"
    );
    // Written to a file, not a terminal: plain lines, no colour codes.
    assert!(!log.contains('\u{1b}'), "escape codes in a redirected log");
    for personal in [
        "4915112345678",
        "4917600011122",
        "DE.1502576394655843",
        "Erika",
        "Mustermann",
        "Hans Beispiel",
        "Ibuprofen",
        "Mein Rezept",
        "wamid.",
        "cli-webhook-token",
        "sk_cli_test_0123456789",
    ] {
        assert!(!log.contains(personal), "{personal} appears in the log");
    }

    // What WhatsApp charges: statuses carry each message's pricing, counted once per message
    // (sent and delivered of one message, and another's delivered naming only a BSUID).
    for f in ["status_sent", "status_delivered", "status_bsuid_only"] {
        assert_eq!(post(&http, &server.url, f).await, 200);
    }
    let usage = |args: &[&str]| {
        let mut all = vec![
            "usage",
            "--tenant",
            "apotheke-am-markt",
            "--data-dir",
            "data",
        ];
        all.extend_from_slice(args);
        relay(&all, dir.path())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let json: Value = loop {
        let out = usage(&["--month", "2025-11", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        if v["messages"] == 2 || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(json["messages"], 2, "{json}");
    assert_eq!(json["billable"], 1, "{json}");
    assert_eq!(
        json["estimate"], 0.05,
        "one utility message at the German rate: {json}"
    );
    let table = usage(&["--month", "2025-11"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("utility") && text.contains("estimate: 0.05 EUR"),
        "{text}"
    );
    assert!(usage(&["--month", "2025-10"]).status.success());
    let bad = usage(&["--month", "2025-13"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--month"));

    // Local admin commands see the same data directory.
    let out = relay(&["dlq", "list", "--data-dir", "data"], dir.path());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("empty"));
    let out = relay(&["quarantine", "list", "--data-dir", "data"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_explains_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["config", "check", "--help"],
        vec!["tenants", "apply", "--help"],
        vec!["tenants", "list", "--help"],
        vec!["quarantine", "list", "--help"],
        vec!["dlq", "list", "--help"],
        vec!["dlq", "redrive", "--help"],
        vec!["contacts", "export", "--help"],
        vec!["contacts", "erase", "--help"],
        vec!["audit", "--help"],
        vec!["usage", "--help"],
    ] {
        let out = relay(&args, dir.path());
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let out = relay(&["--help"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "serve",
        "config",
        "tenants",
        "quarantine",
        "dlq",
        "contacts",
        "audit",
    ] {
        assert!(text.contains(cmd), "--help mentions {cmd}");
    }
}

#[test]
fn a_bad_config_fails_fast_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("relay.toml"),
        "[[tenants]]\nid = \"a\"\nname = \"A\"\n[[tenants.channels]]\nphone_number_id = \"1\"\nprovider = \"360dialog\"\n",
    )
    .unwrap();
    for args in [
        vec!["config", "check"],
        vec!["serve", "--config", "relay.toml", "--data-dir", "d"],
    ] {
        let out = relay(&args, dir.path());
        assert!(!out.status.success(), "{args:?} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("tenants[0].channels[0].webhook_token"),
            "{args:?}: {err}"
        );
    }
    let out = relay(&["serve", "--config", "missing.toml"], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn config_check_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), CONFIG).unwrap();
    let out = relay(&["config", "check"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 tenant(s), 1 channel(s)"));
}

#[tokio::test]
async fn tenants_apply_and_list_against_moto() {
    let moto = relay_e2e::Moto::start().unwrap();
    let clients = moto.clients().await;
    let d = relay_e2e::provision(&clients, "cli", 5).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), CONFIG).unwrap();
    let aws_env = |cmd: &mut Command| {
        cmd.current_dir(dir.path())
            .env("TEST_INBOX_KEY", "sk_cli_test_0123456789")
            .env("TEST_WEBHOOK_TOKEN", "cli-webhook-token")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "eu-central-1")
            .env("AWS_ENDPOINT_URL", &moto.endpoint);
    };
    let mut cmd = Command::new(RELAY);
    cmd.args([
        "tenants",
        "apply",
        "--file",
        "relay.toml",
        "--table",
        &d.table,
        "--kms-key-id",
        &d.kms_key_id,
    ]);
    aws_env(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("1 tenant(s), 1 channel(s), 1 API key(s)"),
        "{text}"
    );
    assert!(text.contains("created the pseudonymisation key"));

    let mut cmd = Command::new(RELAY);
    cmd.args(["tenants", "list", "--aws", "--table", &d.table]);
    aws_env(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("apotheke-am-markt\tApotheke am Markt\t1 channel(s)")
    );

    let mut cmd = Command::new(RELAY);
    cmd.args(["dlq", "list", "--aws", "--dlq-url", &d.dlq_url]);
    aws_env(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("empty"));

    // A customer writes through the deployment's handlers; an operator exports and erases them.
    let w = relay_e2e::wire(&clients, &d).await.unwrap();
    let hook = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "metadata": {"phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Grete Operator"}, "wa_id": "4915711111111"}],
        "messages": [{"from": "4915711111111", "id": "wamid.CLIAWS1", "timestamp": relay_core::Clock::system().now().to_string(), "type": "text", "text": {"body": "Bitte löschen Sie meine Daten"}}]}}]}]});
    let http = reqwest::Client::new();
    let status = http
        .post(format!(
            "{}/webhooks/whatsapp/106540352242922",
            w.receiver_url
        ))
        .bearer_auth("cli-webhook-token")
        .json(&hook)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    relay_e2e::drain(&clients.sqs, &d.queue_url, &w.router)
        .await
        .unwrap();
    let cid = conversations(&http, &w.inbox_url).await[0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let privacy_args = [
        "--aws",
        "--table",
        &d.table,
        "--keys-table",
        &d.keys_table,
        "--kms-key",
        &d.kms_key_id,
        "--audit-table",
        &d.audit_table,
        "--media-bucket",
        &d.media_bucket,
    ];
    let run = |args: &[&str]| {
        let mut cmd = Command::new(RELAY);
        cmd.args(args).args(privacy_args);
        aws_env(&mut cmd);
        cmd.output().unwrap()
    };
    let out = run(&["contacts", "export", &cid, "--tenant", "apotheke-am-markt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["contact"]["name"], "Grete Operator");
    assert_eq!(doc["messages"][0]["text"], "Bitte löschen Sie meine Daten");
    let out = run(&[
        "contacts",
        "erase",
        &cid,
        "--tenant",
        "apotheke-am-markt",
        "--yes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["key_destroyed"], true);
    assert_eq!(receipt["deleted"]["messages"], 1);
    assert!(conversations(&http, &w.inbox_url).await.is_empty());
    let out = run(&["audit", "--tenant", "apotheke-am-markt", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for action in ["contact.export", "contact.erase"] {
        assert!(
            entries.iter().any(|e| e["action"] == action
                && e["actor"] == "cli"
                && e["target"] == cid.as_str()),
            "{action} audited: {entries:?}"
        );
    }
    // Without the key table the command says what is missing.
    let mut cmd = Command::new(RELAY);
    cmd.args([
        "contacts",
        "export",
        &cid,
        "--tenant",
        "apotheke-am-markt",
        "--aws",
        "--table",
        &d.table,
    ]);
    aws_env(&mut cmd);
    cmd.env_remove("KEYS_TABLE");
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keys-table"));
}

#[tokio::test]
async fn serve_sends_replies_and_tracks_their_status() {
    let fake = relay_e2e::fake::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace(
        "webhook_token = \"${TEST_WEBHOOK_TOKEN}\"",
        &format!("webhook_token = \"${{TEST_WEBHOOK_TOKEN}}\"\napi_key = \"d360-local-key\"\napi_base_url = \"{}\"", fake.url),
    );
    std::fs::write(dir.path().join("relay.toml"), config).unwrap();
    let server = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    let hook = |value: Value| serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]});
    let meta = serde_json::json!({"phone_number_id": "106540352242922"});
    let post_hook = |body: Value| {
        let http = http.clone();
        let url = server.url.clone();
        async move {
            http.post(format!("{url}/webhooks/whatsapp/106540352242922"))
                .bearer_auth("cli-webhook-token")
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let inbound = hook(
        serde_json::json!({"metadata": meta, "contacts": [{"profile": {"name": "Erika"}, "wa_id": "4915112345678"}],
        "messages": [{"from": "4915112345678", "id": "wamid.LOCAL1", "timestamp": now.to_string(), "type": "text", "text": {"body": "Hallo"}}]}),
    );
    assert_eq!(post_hook(inbound).await, 200);
    let convs = wait_for(&http, &server.url, |c| c.len() == 1).await;
    let cid = convs[0]["contact_id"].as_str().unwrap().to_owned();

    let resp = http
        .post(format!("{}/v1/conversations/{cid}/messages", server.url))
        .bearer_auth("sk_cli_test_0123456789")
        .json(&serde_json::json!({"type": "text", "text": "Ihre Bestellung ist da."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // reply-sender (driven from the embedded outbound queue) calls the fake 360dialog.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no send reached the fake 360dialog"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = &fake.requests()[0];
    assert_eq!(
        sent.header("d360-api-key").as_deref(),
        Some("d360-local-key")
    );
    assert_eq!(sent.json()["to"], "4915112345678");
    let wamid = fake.wamids()[0].clone();

    for (status, dt) in [("sent", 1), ("delivered", 2), ("read", 3)] {
        let st = hook(
            serde_json::json!({"metadata": meta, "statuses": [{"id": wamid, "status": status,
            "timestamp": (now + dt).to_string(), "recipient_id": "4915112345678"}]}),
        );
        assert_eq!(post_hook(st).await, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msgs: Value = http
            .get(format!("{}/v1/conversations/{cid}/messages", server.url))
            .bearer_auth("sk_cli_test_0123456789")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let reply = msgs["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id.as_str())
            .cloned();
        if reply.as_ref().is_some_and(|r| r["status"] == "read") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reply never showed read: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.requests().len(), 1, "sent exactly once");
}

/// Local mode, as a user runs it: after traffic, neither the SQLite files nor the debug log
/// hold the customer's name, number or words; `relay contacts export|erase` and `relay audit`
/// work on the data directory.
#[tokio::test]
async fn serve_keeps_personal_data_sealed_and_contacts_can_be_exported_and_erased() {
    const NAME: &str = "Frieda Beispielfrau";
    const PHONE: &str = "4917612345678";
    const TEXT: &str = "Ist mein Blutdruckmittel da?";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), CONFIG).unwrap();
    let server = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    let hook = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "metadata": {"phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": NAME}, "wa_id": PHONE}],
        "messages": [{"from": PHONE, "id": "wamid.LOCALPRIVACY1", "timestamp": now.to_string(), "type": "text", "text": {"body": TEXT}}]}}]}]});
    let status = http
        .post(format!("{}/webhooks/whatsapp/106540352242922", server.url))
        .bearer_auth("cli-webhook-token")
        .json(&hook)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    let convs = wait_for(&http, &server.url, |c| c.len() == 1).await;
    assert_eq!(convs[0]["name"], NAME);
    let cid = convs[0]["contact_id"].as_str().unwrap().to_owned();

    let personal = [
        NAME,
        PHONE,
        TEXT,
        "wamid.LOCALPRIVACY1",
        "sk_cli_test_0123456789",
    ];
    let data = dir.path().join("data");
    let mut files = String::new();
    for f in ["relay.db", "relay.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.join(f)) {
            files.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    assert!(!files.is_empty());
    for p in personal {
        assert!(!files.contains(p), "the SQLite files contain {p:?}");
    }
    let key = std::fs::metadata(data.join("master.key")).unwrap();
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    // Export to a file (owner-only), while serve runs.
    let out = relay(
        &[
            "contacts",
            "export",
            &cid,
            "--tenant",
            "apotheke-am-markt",
            "--data-dir",
            "data",
            "--out",
            "export.json",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("export.json")).unwrap()).unwrap();
    assert_eq!(doc["contact"]["name"], NAME);
    assert_eq!(doc["contact"]["wa_id"], PHONE);
    assert_eq!(doc["messages"][0]["text"], TEXT);

    // Erasure asks for confirmation, then deletes and reports.
    let args = [
        "contacts",
        "erase",
        &cid,
        "--tenant",
        "apotheke-am-markt",
        "--data-dir",
        "data",
    ];
    let out = relay(&args, dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let out = relay(&[&args[..], &["--yes"]].concat(), dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["key_destroyed"], true);
    assert_eq!(receipt["deleted"]["messages"], 1);
    assert!(conversations(&http, &server.url).await.is_empty());
    let out = relay(&[&args[..], &["--yes"]].concat(), dir.path());
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["key_destroyed"], false, "idempotent");

    let out = relay(&["audit", "--data-dir", "data", "--json"], dir.path());
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stdout);
    let actions: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(actions.iter().any(|a| a["action"] == "contact.erase"
        && a["actor"] == "cli"
        && a["target"] == cid.as_str()));
    assert!(actions.iter().any(|a| a["action"] == "contact.export"));
    assert!(actions.iter().any(|a| a["action"] == "conversations.list"
        && a["actor"].as_str().unwrap().starts_with("api-key:")));

    drop(server);
    let logs = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(logs.contains("webhook queued"), "debug logs were written");
    for p in personal {
        assert!(!logs.contains(p), "the serve log contains {p:?}");
    }
}

/// Local mode fetches a customer's photo through (a fake) 360dialog, keeps it sealed under
/// `data_dir/media`, streams it to the pharmacy, and erasure removes it.
#[tokio::test]
async fn serve_fetches_media_stores_it_sealed_and_serves_it() {
    let fake = relay_e2e::fake::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace(
        "webhook_token = \"${TEST_WEBHOOK_TOKEN}\"",
        &format!("webhook_token = \"${{TEST_WEBHOOK_TOKEN}}\"\napi_key = \"d360-local-key\"\napi_base_url = \"{}\"", fake.url),
    );
    std::fs::write(dir.path().join("relay.toml"), config).unwrap();
    let mut photo = b"%LOCAL-PRESCRIPTION%".repeat(20_000);
    photo.truncate(399_999);
    fake.add_media(
        "LOCALMEDIA1",
        photo.clone(),
        relay_e2e::fake::MediaMode::Good,
    );
    let server = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    let hook = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "metadata": {"phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Erika"}, "wa_id": "4915112345678"}],
        "messages": [{"from": "4915112345678", "id": "wamid.LOCALMEDIA1", "timestamp": now.to_string(), "type": "image",
          "image": {"id": "LOCALMEDIA1", "mime_type": "image/jpeg", "sha256": relay_e2e::fake::Fake::sha256_b64(&photo)}}]}}]}]});
    let status = http
        .post(format!("{}/webhooks/whatsapp/106540352242922", server.url))
        .bearer_auth("cli-webhook-token")
        .json(&hook)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    let convs = wait_for(&http, &server.url, |c| c.len() == 1).await;
    let cid = convs[0]["contact_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let media_id = loop {
        let msgs: Value = http
            .get(format!("{}/v1/conversations/{cid}/messages", server.url))
            .bearer_auth("sk_cli_test_0123456789")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let media = msgs["messages"][0]["media"].clone();
        if media["status"] == "available" {
            break media["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the photo never became available: {media}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let resp = http
        .get(format!("{}/v1/media/{media_id}", server.url))
        .bearer_auth("sk_cli_test_0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert!(
        resp.bytes().await.unwrap().to_vec() == photo,
        "the served file is the photo"
    );
    // On disk: one file, sealed.
    let media_dir = dir.path().join("data/media/apotheke-am-markt").join(&cid);
    let files: Vec<_> = std::fs::read_dir(&media_dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    let stored = std::fs::read(files[0].as_ref().unwrap().path()).unwrap();
    assert!(
        !stored.windows(20).any(|w| w == b"%LOCAL-PRESCRIPTION%"),
        "plaintext on disk"
    );

    let out = relay(
        &[
            "contacts",
            "erase",
            &cid,
            "--tenant",
            "apotheke-am-markt",
            "--data-dir",
            "data",
            "--yes",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["deleted"]["media"], 1);
    assert!(
        std::fs::read_dir(&media_dir)
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
}

/// `--log-format json` (or RELAY_LOG_FORMAT=json): every log line is one JSON object, for a
/// log shipper; the request's span travels with it.
#[tokio::test]
async fn serve_writes_json_log_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("json.log")).unwrap();
    let child = Command::new(RELAY)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", "data", "--log-format", "json"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "relay serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The demo channel; a refused webhook is logged too.
    let answer = reqwest::Client::new()
        .post(format!("{}/webhooks/whatsapp/106540352242922", server.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    drop(server);
    let text = std::fs::read_to_string(dir.path().join("json.log")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing logged");
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("\"webhook\"")),
        "the webhook's span is on its lines: {text}"
    );
}
