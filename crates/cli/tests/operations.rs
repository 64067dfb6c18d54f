//! `relay serve` in production: slow clients are cut off and cannot starve the others, SIGTERM
//! stops the server within its grace period even with slow clients connected, and `/metrics`
//! answers an operator's scrape (with its token only, and nothing personal in it).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");

const CONFIG: &str = r#"
[server]
header_read_timeout_secs = 2
request_timeout_secs = 5
shutdown_grace_secs = 2
metrics_token = "${TEST_METRICS_TOKEN}"

[[tenants]]
id = "apotheke"
name = "Apotheke"
api_keys = ["sk_limits_test_0123456789"]

[[tenants.channels]]
phone_number_id = "106540352242922"
provider = "360dialog"
webhook_token = "limits-webhook-token"
"#;

struct Serve {
    child: Child,
    port: u16,
    /// Where it runs (its relay.toml, data/ and keys/).
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Serve {
    /// Stops the server (SIGKILL: as a lost machine would) and waits for it.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const METRICS_TOKEN: &str = "metrics-token-0123456789";

fn serve() -> Serve {
    serve_with(CONFIG)
}

fn serve_with(config: &str) -> Serve {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("relay.toml"), config).unwrap();
    let mut s = serve_in(tmp.path());
    s._tmp = Some(tmp);
    s
}

/// `relay serve` in `dir` (its relay.toml), on a port the kernel picks.
fn serve_in(dir: &Path) -> Serve {
    // Port 0: the kernel picks a free port and the banner names it (no race with another
    // test picking the same "free" port).
    let mut child = Command::new(RELAY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .current_dir(dir)
        .env("TEST_METRICS_TOKEN", METRICS_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut out, &mut banner).unwrap();
    // Keep reading, so that its later lines ("stopped") do not hit a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let port: u16 = banner
        .split("://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {banner:?}"));
    Serve {
        child,
        port,
        dir: dir.to_owned(),
        _tmp: None,
    }
}

/// Connections that send half a request line and then nothing.
fn half_open(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"POST /webhooks/whatsapp/106540352242922 HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect()
}

fn webhook() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/text.json"
    ))
    .unwrap()
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_others_are_still_answered() {
    let server = serve();
    let opened = Instant::now();
    let stalled = half_open(server.port, 300);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{}", server.port);
    // 300 stalled clients do not keep the others waiting.
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let answer = http
        .post(format!("{base}/webhooks/whatsapp/106540352242922"))
        .bearer_auth("limits-webhook-token")
        .header("content-type", "application/json")
        .body(webhook())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "the webhook is queued meanwhile");

    // After the header deadline (2 s) the server has closed every stalled connection: all
    // of them are closed by 8 s after they were opened (one deadline for all, so a server
    // that never closes them fails in seconds, not after 300 timeouts).
    let until = opened + Duration::from_secs(8);
    let closed = tokio::task::spawn_blocking(move || {
        stalled
            .into_iter()
            .filter_map(|mut s| {
                let left = until.saturating_duration_since(Instant::now());
                s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
                    .unwrap();
                let mut buf = [0u8; 512];
                // A 408 or nothing, then the end of the stream; a timeout means still open.
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return Some(()),
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                            return Some(());
                        }
                        Err(_) => return None,
                    }
                }
            })
            .count()
    })
    .await
    .unwrap();
    assert_eq!(closed, 300, "stalled connections still open");
}

#[test]
fn sigterm_stops_within_the_grace_period_with_slow_clients_connected() {
    let mut server = serve();
    let _stalled = half_open(server.port, 50);
    // One client that keeps a request open by sending its body very slowly.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(
        b"POST /webhooks/whatsapp/106540352242922 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer limits-webhook-token\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    // Grace 2 s (+ the workers' 2 s at most): well inside systemd's stop timeout.
    let deadline = started + Duration::from_secs(15);
    loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            assert!(exit.success(), "relay serve exited with {exit}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "relay serve still running {:?} after SIGTERM",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn metrics_count_webhooks_and_show_the_queues_to_the_token_holder_only() {
    let server = serve();
    let base = format!("http://127.0.0.1:{}", server.port);
    let http = reqwest::Client::new();
    let post = |token: &'static str| {
        http.post(format!("{base}/webhooks/whatsapp/106540352242922"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(webhook())
            .send()
    };
    assert_eq!(post("limits-webhook-token").await.unwrap().status(), 200);
    assert_eq!(post("wrong-token").await.unwrap().status(), 401);

    let scrape = |token: Option<&'static str>| {
        let mut r = http.get(format!("{base}/metrics"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(scrape(None).await.unwrap().status(), 401);
    assert_eq!(scrape(Some("not-the-token")).await.unwrap().status(), 401);
    let answer = scrape(Some(METRICS_TOKEN)).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = answer.text().await.unwrap();
    for line in [
        "relay_webhooks_total{outcome=\"accepted\"} 1",
        "relay_webhooks_total{outcome=\"unauthorized\"} 1",
        "relay_webhook_answer_seconds_bucket{le=\"0.25\"}",
        "relay_queue_depth{queue=\"inbound\"}",
        "relay_queue_oldest_age_seconds{queue=\"outbound\"}",
        "relay_dead_letters{queue=\"inbound\"} 0",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    // Nothing about a person or a channel: the fixture's number, name and text are not there.
    for personal in ["4915", "Erika", "106540352242922"] {
        assert!(!text.contains(personal), "{personal:?} in the metrics");
    }
}

#[tokio::test]
async fn without_a_metrics_token_there_is_no_metrics_route() {
    let server = serve_with(&CONFIG.replace("metrics_token = \"${TEST_METRICS_TOKEN}\"\n", ""));
    let answer = reqwest::get(format!("http://127.0.0.1:{}/metrics", server.port))
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}

fn relay(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(RELAY)
        .args(args)
        .current_dir(dir)
        .env("TEST_METRICS_TOKEN", METRICS_TOKEN)
        .output()
        .unwrap()
}

async fn conversations(http: &reqwest::Client, port: u16) -> Vec<serde_json::Value> {
    let v: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/v1/conversations"))
        .bearer_auth("sk_limits_test_0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["conversations"].as_array().unwrap().clone()
}

/// Back up while serving, erase a contact, lose the whole data directory, restore: the other
/// customers are back, the erased one is not (not even as ciphertext), and the content backup
/// never held a data key.
#[tokio::test]
async fn a_contact_erased_after_a_backup_stays_erased_when_the_backup_is_restored() {
    let config = CONFIG.replacen("[server]\n", "[server]\nkey_backup_dir = \"keys\"\n", 1);
    let mut server = serve_with(&config);
    let http = reqwest::Client::new();
    let multi = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/multi.json"
    ))
    .unwrap();
    let answer = http
        .post(format!(
            "http://127.0.0.1:{}/webhooks/whatsapp/106540352242922",
            server.port
        ))
        .bearer_auth("limits-webhook-token")
        .header("content-type", "application/json")
        .body(multi)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let c = conversations(&http, server.port).await;
        if c.len() == 2 {
            break c;
        }
        assert!(Instant::now() < deadline, "not routed: {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id_of = |name: &str| {
        listed
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["contact_id"].as_str())
            .unwrap()
            .to_owned()
    };
    let (erika, hans) = (id_of("Erika Mustermann"), id_of("Hans Beispiel"));

    let root = server.dir.clone();
    let out = relay(
        &root,
        &["backup", "--out", "backup.db", "--data-dir", "data"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backup = rusqlite::Connection::open(root.join("backup.db")).unwrap();
    let keys_in_backup: i64 = backup
        .query_row("SELECT count(*) FROM data_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keys_in_backup, 0, "the content backup holds data keys");
    drop(backup);

    // Erased after the backup (through the inbox API, while serving).
    let erased = http
        .delete(format!(
            "http://127.0.0.1:{}/v1/contacts/{erika}",
            server.port
        ))
        .bearer_auth("sk_limits_test_0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);

    // The disk is lost: the data directory is gone; the backups were elsewhere.
    server.stop();
    std::fs::remove_dir_all(root.join("data")).unwrap();
    let out = relay(
        &root,
        &["restore", "--from", "backup.db", "--data-dir", "data"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("erased 1 contact"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Hans is back and readable; Erika is not there at all.
    let db = rusqlite::Connection::open(root.join("data/relay.db")).unwrap();
    let rows = |contact: &str| -> i64 {
        db.query_row(
            "SELECT (SELECT count(*) FROM contacts WHERE contact_id = ?1)
                  + (SELECT count(*) FROM messages WHERE contact_id = ?1)",
            [contact],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(rows(&erika), 0, "the erased contact was restored");
    assert!(rows(&hans) >= 2);
    drop(db);
    let again = serve_in(&root);
    let listed = conversations(&http, again.port).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0]["name"], "Hans Beispiel",
        "readable with the restored keys"
    );
}

/// A self-signed certificate for 127.0.0.1 (PEM certificate, PEM key).
fn certificate() -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    (c.cert.pem(), c.key_pair.serialize_pem())
}

fn https_client(trusting: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(trusting.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// `[server.tls]`: served over HTTPS only, and a renewed certificate is used without a restart.
#[tokio::test]
async fn serves_https_and_picks_up_a_renewed_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = certificate();
    std::fs::write(tmp.path().join("cert.pem"), &cert_a).unwrap();
    std::fs::write(tmp.path().join("key.pem"), &key_a).unwrap();
    // [server.tls] goes after [server]'s own keys, before the tenants.
    let (server_part, tenants) = CONFIG.split_once("[[tenants]]").unwrap();
    let config = format!(
        "{server_part}[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\nreload_secs = 1\n\n[[tenants]]{tenants}"
    );
    std::fs::write(tmp.path().join("relay.toml"), &config).unwrap();
    let server = serve_in(tmp.path());
    let url = format!("https://127.0.0.1:{}/healthz", server.port);

    let answer = https_client(&cert_a).get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/healthz", server.port)).await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    // certbot renews: new files in place; the server presents them within seconds.
    let (cert_b, key_b) = certificate();
    std::fs::write(tmp.path().join("key.pem"), &key_b).unwrap();
    std::fs::write(tmp.path().join("cert.pem"), &cert_b).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(a) = https_client(&cert_b).get(&url).send().await {
            assert_eq!(a.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        https_client(&cert_a).get(&url).send().await.is_err(),
        "the old certificate is still served"
    );
}

/// The documented alternative to `[server.tls]`: Caddy in front (docs/self-hosting.md 4b),
/// terminating TLS and proxying to the relay on loopback. Caddy comes from Debian's package,
/// which ./infra/test.sh installs.
#[tokio::test]
async fn behind_caddy_the_relay_answers_over_https() {
    let caddy = ["/usr/bin/caddy", "/usr/local/bin/caddy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "caddy is not installed: run ./infra/test.sh (it installs it) or apt-get install caddy",
        );
    let relay_server = serve();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("caddy");
    std::fs::write(
        dir.path().join("Caddyfile"),
        format!(
            "{{\n\tadmin off\n\tauto_https disable_redirects\n\tskip_install_trust\n\tstorage file_system {{\n\t\troot {}\n\t}}\n}}\nhttps://127.0.0.1:{port} {{\n\ttls internal\n\treverse_proxy 127.0.0.1:{}\n}}\n",
            data.display(),
            relay_server.port
        ),
    )
    .unwrap();
    let mut proxy = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.path().join("Caddyfile"))
        .env("HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let root = data.join("pki/authorities/local/root.crt");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        if let Ok(pem) = std::fs::read_to_string(&root) {
            let client = https_client(&pem);
            if client
                .get(format!("https://127.0.0.1:{port}/healthz"))
                .send()
                .await
                .is_ok()
            {
                break client;
            }
        }
        if Instant::now() > deadline {
            let _ = proxy.kill();
            panic!("caddy did not come up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let answer = client
        .post(format!(
            "https://127.0.0.1:{port}/webhooks/whatsapp/106540352242922"
        ))
        .bearer_auth("limits-webhook-token")
        .header("content-type", "application/json")
        .body(webhook())
        .send()
        .await;
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(answer.unwrap().status(), 200, "a webhook through the proxy");
}

/// Reads until the server closes the connection, or `until` passes; what it sent, if closed.
fn read_until_closed(mut s: TcpStream, until: Instant) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned());
            }
            Err(_) => return None,
        }
    }
}

/// An idle kept-alive connection is closed after the header deadline (2 s here); a request
/// whose body trickles in is answered 408 after the request deadline (5 s here).
#[test]
fn idle_connections_are_closed_and_slow_bodies_get_408() {
    let server = serve();
    let started = Instant::now();
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(
        b"POST /webhooks/whatsapp/106540352242922 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer limits-webhook-token\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
    )
    .unwrap();
    let idle =
        std::thread::spawn(move || read_until_closed(idle, started + Duration::from_secs(8)));
    let slow =
        std::thread::spawn(move || read_until_closed(slow, started + Duration::from_secs(12)));
    let idle = idle
        .join()
        .unwrap()
        .expect("the idle connection is still open");
    assert!(idle.starts_with("HTTP/1.1 200"), "{idle}");
    let slow = slow
        .join()
        .unwrap()
        .expect("the slow request is still open");
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow}");
}
