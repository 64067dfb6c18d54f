//! The fault suite on the embedded backend: `relay serve` (SQLite store and queues) killed
//! with SIGKILL at random moments while webhooks and replies pour in, restarted each time on
//! the same data directory; a fake 360dialog and a fake pharmacy endpoint that answer 429 and
//! 5xx and break connections. Checks that every webhook answered 200 is stored exactly once,
//! every reply answered 202 is sent (a second send only in the window a kill or a broken
//! answer leaves), every stored message is forwarded under one stable id, and nothing
//! accepted ends nowhere (dead letters are redriven with `relay dlq redrive`). Prints the
//! summary table.
//!
//! Sizes: `FAULT_WEBHOOKS`, `FAULT_REPLIES`, `FAULT_CUSTOMERS`, `FAULT_KILLS`; `FAULT_SEED`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_e2e::fake::{Chaos, Fake};
use relay_e2e::faults::{
    Dice, Relay, Stored, Verdict, env_usize, fake_faults, forwards, post_replies, post_webhooks,
    read_back, relay_toml, seed, sends, wait_for_conversations,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");

/// `relay serve` on a fixed port, restartable.
struct Server {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let mut s = Server {
            dir: dir.to_owned(),
            port,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))
            .unwrap();
        let child = Command::new(RELAY)
            .args([
                "serve",
                "--config",
                "relay.toml",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data-dir",
                "data",
            ])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "relay serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no flush — then the same data directory again.
    fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `relay dlq redrive` for a local queue; how many it moved.
fn redrive(dir: &Path, queue: &str) -> usize {
    let out = Command::new(RELAY)
        .args(["dlq", "redrive", "--queue", queue, "--data-dir", "data"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected redrive output: {text}"))
}

/// Whether the pipeline has finished with everything accepted: each webhook stored, each
/// reply sent or failed, each stored message forwarded.
fn settled(stored: &Stored, webhooks: usize, replies: usize, pharmacy: &Fake) -> bool {
    let forwarded = forwards(pharmacy);
    stored.inbound.len() >= webhooks
        && stored.replies.len() >= replies
        && stored
            .replies
            .values()
            .all(|(_, status, _)| status != "queued")
        && stored
            .inbound_ids
            .keys()
            .all(|id| forwarded.get(id).is_some_and(|(n, _)| *n > 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_killed_at_random_loses_and_doubles_nothing() {
    let seed = seed();
    println!("FAULT_SEED={seed}");
    let webhooks = env_usize("FAULT_WEBHOOKS", 1500);
    let replies = env_usize("FAULT_REPLIES", 300);
    let customers = env_usize("FAULT_CUSTOMERS", 50);
    let max_kills = env_usize("FAULT_KILLS", 6);
    let dice = Arc::new(Dice::new(seed));

    let whatsapp = Fake::start().await;
    let pharmacy = Fake::start().await;
    // relay serve's HTTP timeout is 10 s: no stalled answers here (the moto suite has them).
    let chaos = Chaos {
        too_many_requests: 0.05,
        server_error: 0.05,
        slow: 0.0,
        broken: 0.04,
        slow_for: Duration::ZERO,
    };
    whatsapp.chaos(chaos, seed ^ 1);
    pharmacy.chaos(chaos, seed ^ 2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("relay.toml"),
        relay_toml(&whatsapp.url, &pharmacy.url),
    )
    .unwrap();
    let port = free_port();
    let server = Arc::new(Mutex::new(Server::start(dir.path(), port)));
    let url = format!("http://127.0.0.1:{port}");
    let relay = Relay::new(&url, &url);

    // The killer: SIGKILL at random moments (0.3–2.5 s apart), during the load and after it,
    // while replies and forwards are on their way out.
    let kills = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let killer = {
        let (server, kills, running, dice) =
            (server.clone(), kills.clone(), running.clone(), dice.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) && kills.load(Ordering::SeqCst) < max_kills {
                std::thread::sleep(Duration::from_millis(300 + dice.below(2200)));
                if !running.load(Ordering::SeqCst) {
                    break;
                }
                server.lock().unwrap().kill_and_restart();
                kills.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let started = Instant::now();
    let (sent, webhook_refusals) = post_webhooks(&http, &relay, webhooks, customers, 8, &|n| {
        println!("  {n} webhooks accepted ({:.0?})", started.elapsed())
    })
    .await
    .unwrap();
    let contacts = wait_for_conversations(&http, &relay, customers, Duration::from_secs(120))
        .await
        .unwrap();
    let (_, reply_refusals) = post_replies(&http, &relay, &contacts, replies, 4)
        .await
        .unwrap();
    println!(
        "  load done: {sent} webhooks ({webhook_refusals} refusals), {replies} replies ({reply_refusals} refusals), {:.0?}",
        started.elapsed()
    );

    // Retries run on their own clock (backoff, the send lease after a kill): wait for them
    // (faults and kills go on), redriving dead letters.
    let mut dead = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        // The server may be down for a restart right now: try again.
        if let Ok(stored) = read_back(&http, &relay).await
            && settled(&stored, sent, replies, &pharmacy)
            && kills.load(Ordering::SeqCst) >= max_kills
        {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        for queue in ["inbound", "outbound"] {
            dead += redrive(dir.path(), queue);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    running.store(false, Ordering::SeqCst);
    killer.join().unwrap();
    let kills = kills.load(Ordering::SeqCst);
    let stored = read_back(&http, &relay).await.unwrap();
    println!("  settled after {:.0?}", started.elapsed());

    let mut verdict = Verdict::check(
        "embedded (relay serve)",
        sent,
        replies,
        &stored,
        &sends(&whatsapp),
        &forwards(&pharmacy),
        Err(kills),
    );
    verdict.dead_lettered = dead;
    verdict.faults = format!(
        "{} 360dialog, {} pharmacy, {kills} kills (SIGKILL), {} + {} refusals",
        fake_faults(&whatsapp.requests()),
        fake_faults(&pharmacy.requests()),
        webhook_refusals,
        reply_refusals,
    );
    assert!(kills > 0, "the server was never killed");
    drop(server);
    verdict.assert_held();
}
