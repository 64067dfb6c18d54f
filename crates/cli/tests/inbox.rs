//! The staff web inbox as the pharmacy's team uses it: `relay staff` accounts, then headless
//! Chromium (Debian's `chromium` + `chromium-driver`, installed by `infra/setup-debian.sh`)
//! against `relay serve`, with the fake 360dialog as WhatsApp. Plus the HTTP-level rules a
//! browser hides (CSRF, cookies, headers, throttling).
//!
//! With `RELAY_SCREENSHOTS=<dir>` the browser test saves PNGs of the main screens there
//! (`infra/screenshots.sh` makes docs/img with it).
//!
//! Webhook shapes: Meta's Cloud API webhook reference ("messages" field: text, image,
//! document; "statuses": sent, delivered, read), as 360dialog forwards them unchanged:
//! https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use fantoccini::{Client as WebDriver, Locator};
use relay_core::ports::AuditLog;
use relay_core::staff::StaffStore;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
const CHANNEL_A: &str = "106540352242922";
const CHANNEL_B: &str = "106540352242923";
const ANNA: (&str, &str) = ("anna@apotheke-am-markt.example", "Rezept-Theke-2026");
const BERT: (&str, &str) = ("bert@linden-apotheke.example", "Linden-Apotheke-42");

fn config(whatsapp: &str) -> String {
    config_with(whatsapp, "")
}

fn config_with(whatsapp: &str, server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[[tenants]]
id = "apotheke-am-markt"
name = "Apotheke am Markt"
api_keys = ["sk_inbox_test_a_0123456789"]

[[tenants.channels]]
phone_number_id = "{CHANNEL_A}"
provider = "360dialog"
webhook_token = "hook-a"
api_key = "d360-key-a"
api_base_url = "{whatsapp}"

[[tenants]]
id = "linden-apotheke"
name = "Linden-Apotheke"
api_keys = ["sk_inbox_test_b_0123456789"]

[[tenants.channels]]
phone_number_id = "{CHANNEL_B}"
provider = "360dialog"
webhook_token = "hook-b"
api_key = "d360-key-b"
api_base_url = "{whatsapp}"
"#
    )
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `relay serve` in `dir` on a free port; its log goes to `dir/serve.log`.
fn serve(dir: &Path) -> (Killed, String) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new(RELAY)
        .args(["serve", "--config", "relay.toml", "--data-dir", "data"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for_port(port, "relay serve");
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

fn staff(dir: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(RELAY)
        .arg("staff")
        .args(args)
        .args(["--config", "relay.toml", "--data-dir", "data"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn add_staff(dir: &Path, tenant: &str, (email, password): (&str, &str)) {
    let out = staff(
        dir,
        &[
            "add",
            "--tenant",
            tenant,
            "--email",
            email,
            "--password-stdin",
        ],
        Some(&format!("{password}\n")),
    );
    assert!(
        out.status.success(),
        "staff add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A "messages" webhook of channel `channel` carrying `message` from `from` named `name`.
fn inbound(channel: &str, name: &str, from: &str, message: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": channel},
        "contacts": [{"profile": {"name": name}, "wa_id": from}],
        "messages": [message]}}]}]})
}

fn text(from: &str, id: &str, ts: i64, body: &str) -> Value {
    json!({"from": from, "id": id, "timestamp": ts.to_string(), "type": "text", "text": {"body": body}})
}

fn status(channel: &str, wamid: &str, status: &str, ts: i64, to: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": channel},
        "statuses": [{"id": wamid, "status": status, "timestamp": ts.to_string(), "recipient_id": to}]}}]}]})
}

async fn post_hook(http: &reqwest::Client, url: &str, channel: &str, token: &str, body: &Value) {
    let status = http
        .post(format!("{url}/webhooks/whatsapp/{channel}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
}

async fn conversations(http: &reqwest::Client, url: &str, key: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: Value = http
            .get(format!("{url}/v1/conversations"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let c = v["conversations"].as_array().unwrap().clone();
        if c.len() >= n {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "the router did not catch up: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// chromedriver on a free port, and a headless Chromium session through it.
async fn browser() -> (Killed, WebDriver) {
    let port = free_port();
    // The browser keeps the machine's real clock when the suite runs under libfaketime
    // (infra/test-clock.sh): Chromium does not start with it preloaded. What the relay
    // decides by date is on the relay's side; the browser only counts cookie Max-Age.
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian: apt-get install chromium chromium-driver; infra/setup-debian.sh does)");
    let driver = Killed(driver);
    wait_for_port(port, "chromedriver");
    let profile = tempfile::tempdir().unwrap().keep();
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--window-size=1024,768".to_owned(),
    ];
    args.push(format!("--user-data-dir={}", profile.display()));
    let caps = json!({"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}});
    let web =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
    (driver, web)
}

async fn sign_in(web: &WebDriver, url: &str, (email, password): (&str, &str)) {
    web.goto(&format!("{url}/login")).await.unwrap();
    web.find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys(email)
        .await
        .unwrap();
    web.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    web.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The page's visible text, read in one step (a page that is navigating reads as empty).
async fn body_text(web: &WebDriver) -> String {
    match web
        .execute(
            "return document.body ? document.body.innerText : '';",
            vec![],
        )
        .await
    {
        Ok(v) => v.as_str().unwrap_or_default().to_owned(),
        Err(_) => String::new(),
    }
}

/// Waits until the page's text contains `needle` (the page's own script updates it).
async fn wait_for_text(web: &WebDriver, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = body_text(web).await;
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared; the page says: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn screenshot(web: &WebDriver, name: &str) {
    if let Some(dir) = std::env::var_os("RELAY_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let png = web.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// Nothing the customer wrote ran as script: no dialog opened, the canary is unset and the
/// title is the page's own.
async fn assert_no_script_ran(web: &WebDriver) {
    assert!(
        web.get_alert_text().await.is_err(),
        "a dialog opened: customer text ran as script"
    );
    let canary = web
        .execute(
            "return window.__xss === undefined && !document.title.includes('XSS');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(canary, json!(true), "customer text ran as script");
}

/// Hostile text in every field the customer controls (the hostile-input corpus's web cases).
const XSS_NAME: &str = "<img src=x onerror=\"window.__xss=1;document.title='XSS'\">Mallory";
const XSS_TEXT: &str =
    "<script>window.__xss=1;alert('XSS')</script> javascript:alert(1) \"><svg onload=alert(1)>";
const XSS_CAPTION: &str = "\"><img src=x onerror=alert(1)> Foto";
const XSS_FILENAME: &str = "<b onmouseover=alert(1)>rezept</b>\".pdf";

#[tokio::test]
async fn staff_answer_customers_in_a_real_browser() {
    let fake = relay_e2e::fake::Fake::start().await;
    let photo = b"\x89PNG\r\n\x1a\n-not-really-a-png-".to_vec();
    fake.add_media("XSSPHOTO1", photo.clone(), relay_e2e::fake::MediaMode::Good);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), config(&fake.url)).unwrap();
    add_staff(dir.path(), "apotheke-am-markt", ANNA);
    add_staff(dir.path(), "linden-apotheke", BERT);
    let (_server, url) = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    let erika = "4915112345678";

    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika Mustermann",
            erika,
            text(
                erika,
                "wamid.WEB1",
                now - 60,
                "Guten Tag, ist mein Rezept fertig?",
            ),
        ),
    )
    .await;
    let convs = conversations(&http, &url, "sk_inbox_test_a_0123456789", 1).await;
    let cid = convs[0]["contact_id"].as_str().unwrap().to_owned();

    let (_driver, web) = browser().await;
    web.goto(&format!("{url}/login")).await.unwrap();
    screenshot(&web, "sign-in").await;
    sign_in(&web, &url, ANNA).await;
    wait_for_text(&web, "Erika Mustermann").await;
    assert!(
        web.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/inbox")
    );
    screenshot(&web, "inbox-list").await;

    // A new message appears without a reload: the marker set on this page survives.
    web.execute("window.__samePage = 1;", vec![]).await.unwrap();
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika Mustermann",
            erika,
            text(erika, "wamid.WEB2", now, "Ich komme um 17 Uhr vorbei."),
        ),
    )
    .await;
    wait_for_text(&web, "Ich komme um 17 Uhr vorbei.").await;
    let same = web
        .execute("return window.__samePage === 1;", vec![])
        .await
        .unwrap();
    assert_eq!(same, json!(true), "the page was reloaded");

    // Open the conversation, answer the first message, see the reply go out and reach read.
    web.find(Locator::Css(&format!("a[data-contact='{cid}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&web, "Guten Tag, ist mein Rezept fertig?").await;
    web.find(Locator::Css("[data-reply-to]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    web.find(Locator::Id("text"))
        .await
        .unwrap()
        .send_keys("Ja, Ihr Rezept liegt zur Abholung bereit.")
        .await
        .unwrap();
    web.find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&web, "Ja, Ihr Rezept liegt zur Abholung bereit.").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while fake.wamids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the reply never reached WhatsApp"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/messages") && r.json()["type"] == "text")
        .unwrap();
    assert_eq!(
        sent.json()["text"]["body"],
        "Ja, Ihr Rezept liegt zur Abholung bereit."
    );
    // While the answer was being written, the customer saw "typing…": a read receipt of
    // their newest message with the typing indicator.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !fake.requests().iter().any(|r| {
        let b = r.json();
        b["status"] == "read"
            && b["message_id"] == "wamid.WEB2"
            && b["typing_indicator"]["type"] == "text"
    }) {
        assert!(
            Instant::now() < deadline,
            "no typing indicator reached WhatsApp: {:?}",
            fake.requests()
                .iter()
                .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sent.json()["context"]["message_id"],
        "wamid.WEB1",
        "sent as a reply to the first message"
    );
    let wamid = fake.wamids()[0].clone();
    web.execute("window.__samePage = 1;", vec![]).await.unwrap();
    for (s, dt) in [("sent", 1), ("delivered", 2), ("read", 3)] {
        post_hook(
            &http,
            &url,
            CHANNEL_A,
            "hook-a",
            &status(CHANNEL_A, &wamid, s, now + dt, erika),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while web
        .find_all(Locator::Css("[data-status='read']"))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the reply never showed as read: {}",
            body_text(&web).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let same = web
        .execute("return window.__samePage === 1;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same,
        json!(true),
        "the status arrived by a reload, not by itself"
    );
    // The team's side: assign to Anna with a label, and an internal note.
    web.find(Locator::Id("assignee"))
        .await
        .unwrap()
        .select_by_index(1)
        .await
        .unwrap();
    web.find(Locator::Id("label-0"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    web.find(Locator::Id("team-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&web, "@anna").await;
    web.find(Locator::Id("note"))
        .await
        .unwrap()
        .send_keys("Rezept liegt im Fach 3.")
        .await
        .unwrap();
    web.find(Locator::Id("add-note"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&web, "Rezept liegt im Fach 3.").await;
    wait_for_text(&web, "Interne Notiz").await;
    screenshot(&web, "conversation").await;

    // The closed window: a customer who last wrote two days ago gets an approved template
    // (listed from the fake 360dialog by `relay templates sync`), with its parameter.
    let gustav = "4915122222222";
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Gustav Gans",
            gustav,
            text(
                gustav,
                "wamid.OLD1",
                now - 2 * 86_400,
                "Bitte Bescheid geben, wenn es da ist.",
            ),
        ),
    )
    .await;
    let convs = conversations(&http, &url, "sk_inbox_test_a_0123456789", 2).await;
    let gustav_id = convs.iter().find(|c| c["name"] == "Gustav Gans").unwrap()["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // (Off the test's one runtime thread: the fake 360dialog answers on it.)
    let cwd = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(RELAY)
            .args([
                "templates",
                "sync",
                "--tenant",
                "apotheke-am-markt",
                "--config",
                "relay.toml",
                "--data-dir",
                "data",
            ])
            .current_dir(cwd)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 template(s) stored, 1 approved"));
    web.goto(&format!("{url}/inbox/c/{gustav_id}"))
        .await
        .unwrap();
    wait_for_text(&web, "Das 24-Stunden-Fenster ist geschlossen").await;
    assert!(
        web.find_all(Locator::Id("send")).await.unwrap().is_empty(),
        "no free text outside the window"
    );
    assert!(
        !body_text(&web).await.contains("herbstaktion"),
        "only approved templates are offered"
    );
    web.find(Locator::Id("template-choose"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    web.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("p1"))
        .await
        .unwrap()
        .send_keys("A-17")
        .await
        .unwrap();
    screenshot(&web, "closed-window-template").await;
    web.find(Locator::Id("template-send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&web, "Ihre Bestellung A-17 liegt zur Abholung bereit.").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let template_send = loop {
        if let Some(r) = fake
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/messages") && r.json()["type"] == "template")
        {
            break r.json();
        }
        assert!(
            Instant::now() < deadline,
            "the template never reached WhatsApp"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(template_send["template"]["name"], "abholbereit");
    assert_eq!(
        template_send["template"]["components"][0]["parameters"][0]["text"],
        "A-17"
    );
    assert_eq!(template_send["to"], gustav);

    // A double submit of one form sends one reply: the form's nonce is its idempotency key.
    let sends_before = fake.wamids().len();

    // Hostile text in name, message, caption and file name is shown as text and never runs.
    let mallory = "4915199999999";
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            XSS_NAME,
            mallory,
            text(mallory, "wamid.XSS1", now, XSS_TEXT),
        ),
    )
    .await;
    post_hook(&http, &url, CHANNEL_A, "hook-a", &inbound(CHANNEL_A, XSS_NAME, mallory, json!({
        "from": mallory, "id": "wamid.XSS2", "timestamp": now.to_string(), "type": "image",
        "image": {"id": "XSSPHOTO1", "mime_type": "image/png", "sha256": relay_e2e::fake::Fake::sha256_b64(&photo), "caption": XSS_CAPTION}}))).await;
    post_hook(&http, &url, CHANNEL_A, "hook-a", &inbound(CHANNEL_A, XSS_NAME, mallory, json!({
        "from": mallory, "id": "wamid.XSS3", "timestamp": now.to_string(), "type": "document",
        "document": {"id": "XSSDOC-MISSING", "mime_type": "application/pdf", "sha256": "AAAA", "filename": XSS_FILENAME}}))).await;
    let convs = conversations(&http, &url, "sk_inbox_test_a_0123456789", 2).await;
    let mallory_id = convs.iter().find(|c| c["name"] == XSS_NAME).unwrap()["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    web.goto(&format!("{url}/inbox/c/{mallory_id}"))
        .await
        .unwrap();
    wait_for_text(&web, "Mallory").await;
    wait_for_text(&web, "rezept</b>").await;
    let page = body_text(&web).await;
    assert!(
        page.contains("<script>window.__xss=1;alert('XSS')</script>"),
        "the text is shown literally: {page}"
    );
    assert!(
        page.contains("\"><img src=x onerror=alert(1)> Foto"),
        "the caption is shown literally"
    );
    assert!(page.contains(XSS_NAME), "the name is shown literally");
    // Hover and click where a handler would be, then check nothing ran.
    web.execute("document.querySelectorAll('#messages li').forEach(function (li) { li.scrollIntoView(); li.dispatchEvent(new MouseEvent('mouseover', {bubbles: true})); });", vec![]).await.unwrap();
    assert_no_script_ran(&web).await;
    assert!(
        web.find_all(Locator::Css(
            "#messages script, #messages svg, #messages b, #list img"
        ))
        .await
        .unwrap()
        .is_empty(),
        "customer text became markup"
    );

    // CSRF: a page of another origin posting a reply into the conversation achieves nothing.
    let attack = format!(
        "data:text/html,<form method=post action='{url}/inbox/c/{cid}/reply'><input name=text value=CSRF-ATTACK><input name=csrf value=guess><button id=go>go</button></form>"
    );
    web.goto(&attack).await.unwrap();
    web.find(Locator::Id("go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("CSRF-ATTACK")),
        "a cross-site form sent a message"
    );
    assert_eq!(
        fake.wamids().len(),
        sends_before,
        "no message was sent by the attack"
    );

    // Sign out; another tenant's staff see none of this tenant's conversations.
    web.goto(&format!("{url}/inbox")).await.unwrap();
    web.find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&web, "Anmelden").await;
    sign_in(&web, &url, BERT).await;
    wait_for_text(&web, "Keine Unterhaltungen").await;
    assert!(!body_text(&web).await.contains("Erika"));
    web.goto(&format!("{url}/inbox/c/{cid}")).await.unwrap();
    wait_for_text(&web, "gibt es nicht").await;
    assert!(!body_text(&web).await.contains("Rezept"));

    // Ten wrong passwords lock the account: then even the right one is refused for a while.
    web.goto(&format!("{url}/inbox")).await.unwrap();
    web.find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&web, "Anmelden").await;
    for _ in 0..10 {
        sign_in(&web, &url, (ANNA.0, "wrong-password-123")).await;
        wait_for_text(&web, "E-Mail oder Passwort ist falsch.").await;
    }
    sign_in(&web, &url, ANNA).await;
    wait_for_text(&web, "Zu viele Fehlversuche").await;
    screenshot(&web, "sign-in-throttled").await;
    assert!(
        web.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/login")
    );
    web.close().await.unwrap();
}

// ---- HTTP-level rules ---------------------------------------------------------------------

struct Session {
    http: reqwest::Client,
    url: String,
    cookie: String,
    csrf: String,
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

async fn login_attempt(
    http: &reqwest::Client,
    url: &str,
    email: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let page = http.get(format!("{url}/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "relay_login").unwrap();
    let login_cookie = login_cookie.split(';').next().unwrap().to_owned();
    let html = page.text().await.unwrap();
    let mut req = http
        .post(format!("{url}/login"))
        .header("cookie", login_cookie)
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf", &hidden(&html, "csrf")),
        ]);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn session(url: &str, who: (&str, &str)) -> Session {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = login_attempt(&http, url, who.0, who.1, &[]).await;
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = set_cookie(&resp, "relay_session").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let html = http
        .get(format!("{url}/inbox"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Session {
        csrf: hidden(&html, "csrf"),
        http,
        url: url.to_owned(),
        cookie,
    }
}

#[tokio::test]
async fn the_inbox_refuses_forgeries_guesses_and_other_tenants() {
    let fake = relay_e2e::fake::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("relay.toml"),
        config_with(&fake.url, "trusted_proxies = [\"127.0.0.1\"]"),
    )
    .unwrap();
    add_staff(dir.path(), "apotheke-am-markt", ANNA);
    add_staff(dir.path(), "linden-apotheke", BERT);
    let (_server, url) = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika",
            "4915112345678",
            text("4915112345678", "wamid.H1", now, "Hallo"),
        ),
    )
    .await;
    let cid = conversations(&http, &url, "sk_inbox_test_a_0123456789", 1).await[0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let anna = session(&url, ANNA).await;
    let page = anna
        .http
        .get(format!("{url}/inbox/c/{cid}"))
        .header("cookie", &anna.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" onclick="),
        "no inline script"
    );
    let nonce = hidden(&html, "nonce");

    let reply = |csrf: String, extra: Option<(&'static str, &'static str)>, body: &'static str| {
        let mut req = anna
            .http
            .post(format!("{}/inbox/c/{cid}/reply", anna.url))
            .header("cookie", &anna.cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("text", body),
                ("nonce", nonce.as_str()),
            ]);
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        req.send()
    };
    // No token, a wrong token, a cross-site origin: refused, nothing queued.
    assert_eq!(
        reply(String::new(), None, "eins")
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        reply("forged".into(), None, "eins")
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        reply(
            anna.csrf.clone(),
            Some(("sec-fetch-site", "cross-site")),
            "eins"
        )
        .await
        .unwrap()
        .status()
        .as_u16(),
        403
    );
    // The real form, twice (a double click): one reply.
    for _ in 0..2 {
        let r = reply(anna.csrf.clone(), None, "Ihre Bestellung ist da.")
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 303);
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .contains("notice=queued")
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.wamids().is_empty() {
        assert!(Instant::now() < deadline, "the reply was not sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.wamids().len(),
        1,
        "the resubmitted form sent a second message"
    );

    // Another tenant's staff: no conversation, no message, no media of tenant A.
    let bert = session(&url, BERT).await;
    for path in [
        format!("/inbox/c/{cid}"),
        format!("/inbox/c/{cid}/messages"),
    ] {
        let r = bert
            .http
            .get(format!("{url}{path}"))
            .header("cookie", &bert.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    let r = bert
        .http
        .post(format!("{url}/inbox/c/{cid}/reply"))
        .header("cookie", &bert.cookie)
        .form(&[
            ("csrf", bert.csrf.as_str()),
            ("text", "fremd"),
            ("nonce", "n1"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=not-found")
    );
    let list = bert
        .http
        .get(format!("{url}/inbox/list"))
        .header("cookie", &bert.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!list.contains("Erika") && !list.contains(&cid));

    // An unknown email and a wrong password get the same answer. (127.0.0.1 is a trusted
    // proxy here: X-Forwarded-For gives each attempt the address of a client behind it.)
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let unknown = login_attempt(
        &plain,
        &url,
        "nobody@apotheke.example",
        "whatever-password",
        &from("203.0.113.1"),
    )
    .await;
    let wrong = login_attempt(
        &plain,
        &url,
        ANNA.0,
        "whatever-password",
        &from("203.0.113.1"),
    )
    .await;
    assert_eq!(unknown.status().as_u16(), 401);
    assert_eq!(wrong.status().as_u16(), 401);
    let strip = |s: String| s.replace(&hidden(&s, "csrf"), "");
    assert_eq!(
        strip(unknown.text().await.unwrap()),
        strip(wrong.text().await.unwrap())
    );
    // Ten failures of one account, each from another address, lock the account.
    const SPREAD: [&str; 10] = [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
        "198.51.100.5",
        "198.51.100.6",
        "198.51.100.7",
        "198.51.100.8",
        "198.51.100.9",
        "198.51.100.10",
    ];
    for ip in SPREAD {
        assert_eq!(
            login_attempt(&plain, &url, BERT.0, "not-berts-password", &from(ip))
                .await
                .status()
                .as_u16(),
            401
        );
    }
    assert_eq!(
        login_attempt(&plain, &url, BERT.0, BERT.1, &from("198.51.100.200"))
            .await
            .status()
            .as_u16(),
        429
    );
    // Ten failures from one address, each for another email, lock the address (only).
    for i in 0..10 {
        let email = format!("guess{i}@apotheke.example");
        assert_eq!(
            login_attempt(
                &plain,
                &url,
                &email,
                "guessed-password",
                &from("203.0.113.50")
            )
            .await
            .status()
            .as_u16(),
            401
        );
    }
    assert_eq!(
        login_attempt(&plain, &url, ANNA.0, ANNA.1, &from("203.0.113.50"))
            .await
            .status()
            .as_u16(),
        429
    );
    let ok = login_attempt(
        &plain,
        &url,
        ANNA.0,
        ANNA.1,
        &[
            ("x-forwarded-for", "203.0.113.51"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    assert_eq!(ok.status().as_u16(), 303);
    let cookie = set_cookie(&ok, "__Host-relay_session")
        .expect("behind an HTTPS proxy the cookie is __Host- and Secure");
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Sessions that exist keep working; a password reset ends them.
    let r = bert
        .http
        .get(format!("{url}/inbox"))
        .header("cookie", &bert.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let out = staff(
        dir.path(),
        &[
            "reset-password",
            "--tenant",
            "linden-apotheke",
            "--email",
            BERT.0,
            "--password-stdin",
        ],
        Some("Linden-Apotheke-43\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = bert
        .http
        .get(format!("{url}/inbox"))
        .header("cookie", &bert.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        303,
        "a reset password ends the account's sessions"
    );

    // A cross-site sign-in form (login CSRF) is refused.
    let r = login_attempt(
        &plain,
        &url,
        ANNA.0,
        ANNA.1,
        &[
            ("sec-fetch-site", "cross-site"),
            ("x-forwarded-for", "203.0.113.52"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 403);

    // Every read and action is in the audit log under the staff member's id, never the email.
    let out = Command::new(RELAY)
        .args(["audit", "--data-dir", "data", "--json", "--limit", "500"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&out.stdout);
    for action in ["web.sign-in", "web.messages.list", "web.reply"] {
        assert!(
            audit.contains(action),
            "{action} missing from the audit log: {audit}"
        );
    }
    assert!(audit.contains("\"actor\":\"staff:st_"));
    assert!(!audit.contains(ANNA.0) && !audit.contains("Erika"));
    // Nor is anything personal in the relay's log.
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    for secret in [
        ANNA.0,
        ANNA.1,
        BERT.1,
        "Erika",
        "Ihre Bestellung",
        "4915112345678",
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log");
    }
}

#[test]
fn staff_commands_check_their_input_and_never_show_passwords() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), config("http://127.0.0.1:9")).unwrap();
    let out = staff(
        dir.path(),
        &[
            "add",
            "--tenant",
            "no-such-tenant",
            "--email",
            "a@b.example",
            "--password-stdin",
        ],
        Some("long-enough-password\n"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("apotheke-am-markt"),
        "names the known tenants"
    );
    let out = staff(
        dir.path(),
        &[
            "add",
            "--tenant",
            "apotheke-am-markt",
            "--email",
            "a@b.example",
            "--password-stdin",
        ],
        Some("short\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("12 characters"));
    let out = staff(
        dir.path(),
        &[
            "add",
            "--tenant",
            "apotheke-am-markt",
            "--email",
            "not-an-email",
            "--password-stdin",
        ],
        Some("long-enough-password\n"),
    );
    assert!(!out.status.success());
    // Generated password: shown once, works for nothing else.
    let out = staff(
        dir.path(),
        &[
            "add",
            "--tenant",
            "apotheke-am-markt",
            "--email",
            "Chris@Apotheke.example",
            "--role",
            "admin",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("password (shown once): "));
    let out = staff(
        dir.path(),
        &[
            "add",
            "--tenant",
            "linden-apotheke",
            "--email",
            "chris@apotheke.example",
        ],
        None,
    );
    assert!(!out.status.success(), "emails are unique across tenants");
    let list = staff(dir.path(), &["list", "--tenant", "apotheke-am-markt"], None);
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listed.contains("chris@apotheke.example") && listed.contains("admin"),
        "{listed}"
    );
    assert!(!listed.contains("argon2"), "no hashes listed");
    assert!(
        staff(
            dir.path(),
            &[
                "remove",
                "--tenant",
                "linden-apotheke",
                "--email",
                "chris@apotheke.example"
            ],
            None
        )
        .status
        .code()
            != Some(0),
        "another tenant's account cannot be removed"
    );
    assert!(
        staff(
            dir.path(),
            &[
                "remove",
                "--tenant",
                "apotheke-am-markt",
                "--email",
                "chris@apotheke.example"
            ],
            None
        )
        .status
        .success()
    );
    let list = staff(dir.path(), &["list", "--tenant", "apotheke-am-markt"], None);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("chris@"));
    let help = Command::new(RELAY)
        .args(["staff", "add", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--password-stdin"));
}

// ---- the first run -------------------------------------------------------------------------

#[tokio::test]
async fn the_demo_runs_the_whole_loop_without_a_whatsapp_account() {
    // No relay.toml: the built-in demo, with its staff login and simulated WhatsApp.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let child = Command::new(RELAY)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _server = Killed(child);
    wait_for_port(port, "relay serve (demo)");
    let url = format!("http://127.0.0.1:{port}");
    // The listener is up a moment before the banner is printed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let printed = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
        if printed.contains("demo@apotheke.example / demo-apotheke") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo login is not printed: {printed}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The new user writes as a customer …
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("{url}/demo/customer"))
        .form(&[
            ("name", "Erika Mustermann"),
            ("text", "Ist mein Rezept da?"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let convs = conversations(&http, &url, "sk_demo_change_me", 1).await;
    let cid = convs[0]["contact_id"].as_str().unwrap().to_owned();

    // … signs in as the demo staff member and answers in the web inbox …
    let staff = session(&url, ("demo@apotheke.example", "demo-apotheke")).await;
    let page = staff
        .http
        .get(format!("{url}/inbox/c/{cid}"))
        .header("cookie", &staff.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Ist mein Rezept da?"));
    let r = staff
        .http
        .post(format!("{url}/inbox/c/{cid}/reply"))
        .header("cookie", &staff.cookie)
        .form(&[
            ("csrf", staff.csrf.as_str()),
            ("text", "Ja, es liegt bereit."),
            ("nonce", &hidden(&page, "nonce")),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("notice=queued"),
        "the first reply is accepted (the window is open): {:?}",
        r.headers()["location"]
    );

    // … and sees it reach the customer's phone and be read.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let phone = http
            .get(format!("{url}/demo/customer"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let msgs: Value = http
            .get(format!("{url}/v1/conversations/{cid}/messages"))
            .bearer_auth("sk_demo_change_me")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = msgs["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["direction"] == "outbound")
            .map(|m| m["status"].clone());
        if phone.contains("Ja, es liegt bereit.") && status == Some(json!("read")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reply never reached read: {status:?}; phone: {phone}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn the_demo_refuses_to_serve_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(RELAY)
        .args(["serve", "--listen", &format!("0.0.0.0:{}", free_port())])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback") && err.contains("relay.toml"),
        "{err}"
    );
}

#[tokio::test]
async fn staff_commands_work_against_an_aws_deployment() {
    let moto = relay_e2e::Moto::start().unwrap();
    let clients = moto.clients().await;
    let d = relay_e2e::deploy(&clients, "staffcli", 5, &config("http://127.0.0.1:9"))
        .await
        .unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(RELAY)
            .arg("staff")
            .args(args)
            .args([
                "--aws",
                "--table",
                &d.table,
                "--audit-table",
                &d.audit_table,
            ])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "eu-central-1")
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let out = run(
        &[
            "add",
            "--tenant",
            "linden-apotheke",
            "--email",
            BERT.0,
            "--password-stdin",
        ],
        Some(&format!("{}\n", BERT.1)),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &[
            "add",
            "--tenant",
            "no-such-apotheke",
            "--email",
            "x@y.example",
        ],
        None,
    );
    assert!(
        !out.status.success(),
        "a tenant not in the table is refused"
    );
    let listed = run(&["list", "--tenant", "linden-apotheke", "--json"], None);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains(BERT.0) && listed.contains("\"role\":\"staff\""),
        "{listed}"
    );
    // Written where the deployed inbox reads it, with the password hashed.
    let account = clients
        .staff_store(&d.table)
        .staff_by_email(BERT.0)
        .await
        .unwrap()
        .expect("the account is in the table");
    assert!(relay_core::staff::verify_password(
        BERT.1,
        &account.password_hash
    ));
    let audit = clients
        .audit_log(&d.audit_table)
        .list(None, 10, relay_core::Clock::system().now())
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "staff.add" && e.actor == "cli")
    );
    let out = run(
        &["remove", "--tenant", "linden-apotheke", "--email", BERT.0],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        clients
            .staff_store(&d.table)
            .staff_by_email(BERT.0)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn admins_export_and_erase_a_contact_from_the_inbox() {
    let fake = relay_e2e::fake::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), config(&fake.url)).unwrap();
    add_staff(dir.path(), "apotheke-am-markt", ANNA);
    let chef = ("chef@apotheke-am-markt.example", "Chef-Apotheker-2026");
    let out = staff(
        dir.path(),
        &[
            "add",
            "--tenant",
            "apotheke-am-markt",
            "--email",
            chef.0,
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(chef.1),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_server, url) = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika Mustermann",
            "4915112345678",
            text(
                "4915112345678",
                "wamid.P1",
                now,
                "Mein Rezept für Ibuprofen",
            ),
        ),
    )
    .await;
    let cid = conversations(&http, &url, "sk_inbox_test_a_0123456789", 1).await[0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Staff without the admin role: neither export nor erase, and no controls on the page.
    let anna = session(&url, ANNA).await;
    let page = anna
        .http
        .get(format!("{url}/inbox/c/{cid}"))
        .header("cookie", &anna.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("/erase"),
        "the erase form is for admins only"
    );
    let r = anna
        .http
        .get(format!("{url}/inbox/c/{cid}/export"))
        .header("cookie", &anna.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = anna
        .http
        .post(format!("{url}/inbox/c/{cid}/erase"))
        .header("cookie", &anna.cookie)
        .form(&[("csrf", anna.csrf.as_str()), ("confirm", "LÖSCHEN")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // An admin exports everything, then erases (only with the confirmation word).
    let chef = session(&url, chef).await;
    let r = chef
        .http
        .get(format!("{url}/inbox/c/{cid}/export"))
        .header("cookie", &chef.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let doc = r.text().await.unwrap();
    assert!(
        doc.contains("Mein Rezept für Ibuprofen") && doc.contains("Erika Mustermann"),
        "{doc}"
    );
    let r = chef
        .http
        .post(format!("{url}/inbox/c/{cid}/erase"))
        .header("cookie", &chef.cookie)
        .form(&[("csrf", chef.csrf.as_str()), ("confirm", "ja")])
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=confirm-erase")
    );
    assert_eq!(
        chef.http
            .get(format!("{url}/inbox/c/{cid}"))
            .header("cookie", &chef.cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "not erased without the word"
    );
    let r = chef
        .http
        .post(format!("{url}/inbox/c/{cid}/erase"))
        .header("cookie", &chef.cookie)
        .form(&[("csrf", chef.csrf.as_str()), ("confirm", "löschen")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/inbox?notice=erased");
    assert_eq!(
        chef.http
            .get(format!("{url}/inbox/c/{cid}"))
            .header("cookie", &chef.cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404,
        "erased"
    );
    assert!(
        conversations(&http, &url, "sk_inbox_test_a_0123456789", 0)
            .await
            .is_empty()
    );
    let out = Command::new(RELAY)
        .args(["audit", "--data-dir", "data", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit.contains("web.contact.export") && audit.contains("web.contact.erase"),
        "{audit}"
    );
}

#[tokio::test]
async fn the_team_assigns_labels_closes_and_notes_without_writing_to_the_customer() {
    let fake = relay_e2e::fake::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), config(&fake.url)).unwrap();
    add_staff(dir.path(), "apotheke-am-markt", ANNA);
    let (_server, url) = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    let erika = "4915112345678";
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika Mustermann",
            erika,
            text(erika, "wamid.T1", now - 30, "Rezept für Oma"),
        ),
    )
    .await;
    let cid = conversations(&http, &url, "sk_inbox_test_a_0123456789", 1).await[0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let anna = session(&url, ANNA).await;
    let get = |path: String| {
        let anna = &anna;
        async move {
            anna.http
                .get(format!("{}{path}", anna.url))
                .header("cookie", &anna.cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let page = get(format!("/inbox/c/{cid}")).await;
    let me = {
        let start = page.find("<option value=\"st_").unwrap() + "<option value=\"".len();
        page[start..start + page[start..].find('"').unwrap()].to_owned()
    };
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let anna = &anna;
        async move {
            let mut form = form;
            form.push(("csrf", anna.csrf.clone()));
            anna.http
                .post(format!("{}{path}", anna.url))
                .header("cookie", &anna.cookie)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    // Assign to me with the label "Rezept".
    let r = post(
        format!("/inbox/c/{cid}/team"),
        vec![("assignee", me.clone()), ("l0", "on".into())],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let mine = get("/inbox/list?filter=mine".into()).await;
    assert!(
        mine.contains(&cid) && mine.contains("Rezept") && mine.contains("@anna"),
        "{mine}"
    );
    assert!(
        !get("/inbox/list?filter=unassigned".into())
            .await
            .contains(&cid)
    );
    assert!(get("/inbox/list?filter=label0".into()).await.contains(&cid));
    assert!(!get("/inbox/list?filter=label1".into()).await.contains(&cid));
    // Another tenant's staff id cannot be assigned.
    let r = post(
        format!("/inbox/c/{cid}/team"),
        vec![("assignee", "st_00000000000000000000000000000000".into())],
    )
    .await;
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=refused")
    );

    // An internal note: shown as a note, never sent, in the export.
    let sends = fake.requests().len();
    let r = post(
        format!("/inbox/c/{cid}/notes"),
        vec![
            ("text", "Oma holt am Freitag ab".into()),
            ("nonce", "n-1".into()),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    let r = post(
        format!("/inbox/c/{cid}/notes"),
        vec![
            ("text", "Oma holt am Freitag ab".into()),
            ("nonce", "n-1".into()),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303, "the same form again");
    let page = get(format!("/inbox/c/{cid}")).await;
    assert_eq!(
        page.matches("Oma holt am Freitag ab").count(),
        1,
        "one note for one form"
    );
    assert!(page.contains("class=\"msg note\""));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.requests().len(),
        sends,
        "a note is never sent to WhatsApp"
    );

    // Closed: out of the open list, in the closed one; a new customer message reopens it.
    // (The form sends the whole state: assignee, labels and the closed box.)
    let r = post(
        format!("/inbox/c/{cid}/team"),
        vec![
            ("assignee", me.clone()),
            ("l0", "on".into()),
            ("closed", "1".into()),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(
        !get("/inbox/list".into()).await.contains(&cid),
        "closed conversations leave the open list"
    );
    assert!(get("/inbox/list?filter=closed".into()).await.contains(&cid));
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika Mustermann",
            erika,
            text(erika, "wamid.T2", now + 5, "Doch noch eine Frage"),
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get("/inbox/list".into()).await.contains(&cid) {
        assert!(
            Instant::now() < deadline,
            "a new message did not reopen the conversation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The team's data is the contact's: exported with it (by an admin, via the API here).
    let export: Value = http
        .get(format!("{url}/v1/contacts/{cid}/export"))
        .bearer_auth("sk_inbox_test_a_0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(export["notes"][0]["text"], "Oma holt am Freitag ab");
    assert_eq!(export["team"]["labels"], json!(["Rezept"]));
    // Sealed at rest: the note's text is not in the database file.
    let db = std::fs::read(dir.path().join("data/relay.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains("Oma holt"),
        "the note is sealed at rest"
    );
    // And erased with the contact.
    let r = http
        .delete(format!("{url}/v1/contacts/{cid}"))
        .bearer_auth("sk_inbox_test_a_0123456789")
        .send()
        .await
        .unwrap();
    let receipt: Value = r.json().await.unwrap();
    assert_eq!(receipt["deleted"]["notes"], 1, "{receipt}");
}

#[tokio::test]
async fn admins_keep_quick_replies_that_staff_insert_into_the_composer() {
    let fake = relay_e2e::fake::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), config(&fake.url)).unwrap();
    add_staff(dir.path(), "apotheke-am-markt", ANNA);
    let chef = ("chef@apotheke-am-markt.example", "Chef-Apotheker-2026");
    let out = staff(
        dir.path(),
        &[
            "add",
            "--tenant",
            "apotheke-am-markt",
            "--email",
            chef.0,
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(chef.1),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_server, url) = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika",
            "4915112345678",
            text("4915112345678", "wamid.Q1", now, "Wann haben Sie offen?"),
        ),
    )
    .await;
    let cid = conversations(&http, &url, "sk_inbox_test_a_0123456789", 1).await[0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let anna = session(&url, ANNA).await;
    let r = anna
        .http
        .post(format!("{url}/inbox/quick-replies"))
        .header("cookie", &anna.cookie)
        .form(&[
            ("csrf", anna.csrf.as_str()),
            ("title", "Öffnungszeiten"),
            ("text", "Mo–Fr 8–18 Uhr"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "staff do not edit quick replies");

    let chef = session(&url, chef).await;
    let r = chef
        .http
        .post(format!("{url}/inbox/quick-replies"))
        .header("cookie", &chef.cookie)
        .form(&[
            ("csrf", chef.csrf.as_str()),
            ("title", "Öffnungszeiten"),
            ("text", "Mo–Fr 8–18 Uhr, Sa 9–13 Uhr"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let page = chef
        .http
        .get(format!("{url}/inbox/quick-replies"))
        .header("cookie", &chef.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Mo–Fr 8–18 Uhr, Sa 9–13 Uhr"));

    // Staff pick it; the composer comes back with the text in it.
    let page = anna
        .http
        .get(format!("{url}/inbox/c/{cid}"))
        .header("cookie", &anna.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<option value=\"0\">Öffnungszeiten</option>"),
        "{page}"
    );
    let page = anna
        .http
        .get(format!("{url}/inbox/c/{cid}?quick=0"))
        .header("cookie", &anna.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(">Mo–Fr 8–18 Uhr, Sa 9–13 Uhr</textarea>"),
        "the composer holds the text"
    );

    // Removed by the admin: gone from the composer.
    let start = page.find("/inbox/quick-replies/").map(|_| ()).is_none();
    assert!(start, "staff see no edit links");
    let admin_page = chef
        .http
        .get(format!("{url}/inbox/quick-replies"))
        .header("cookie", &chef.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let i = admin_page.find("/inbox/quick-replies/q_").unwrap() + "/inbox/quick-replies/".len();
    let id = admin_page[i..i + admin_page[i..].find('/').unwrap()].to_owned();
    let r = chef
        .http
        .post(format!("{url}/inbox/quick-replies/{id}/delete"))
        .header("cookie", &chef.cookie)
        .form(&[("csrf", chef.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let page = anna
        .http
        .get(format!("{url}/inbox/c/{cid}"))
        .header("cookie", &anna.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("Öffnungszeiten"));

    // What WhatsApp charges: admins see the month's counts and estimate; staff do not.
    let priced = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "4930123456", "phone_number_id": CHANNEL_A},
        "statuses": [{"id": "wamid.PRICED1", "status": "delivered", "timestamp": now.to_string(),
            "recipient_id": "4915112345678",
            "pricing": {"billable": true, "pricing_model": "PMP", "category": "marketing", "type": "regular"}}]}}]}]});
    post_hook(&http, &url, CHANNEL_A, "hook-a", &priced).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let r = chef
            .http
            .get(format!("{url}/inbox/usage"))
            .header("cookie", &chef.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let page = r.text().await.unwrap();
        if page.contains("id=\"usage-total\"") || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(page.contains("<td>marketing</td>"), "{page}");
    assert!(
        page.contains("0.11 EUR"),
        "one marketing message at the German rate: {page}"
    );
    let r = anna
        .http
        .get(format!("{url}/inbox/usage"))
        .header("cookie", &anna.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "staff do not see costs");

    // A pasted E-Rezept token: shown as a prescription with a copy button.
    let token = "Task/160.123.456.789.123.58/$accept?ac=777bea0e13cc9c42ceec14aec3ddee2263325dc2c6c699db115f58fe423607ea";
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika",
            "4915112345678",
            text(
                "4915112345678",
                "wamid.RX1",
                now,
                &format!("Mein Rezept: {token}"),
            ),
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = anna
            .http
            .get(format!("{url}/inbox/c/{cid}"))
            .header("cookie", &anna.cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.contains("class=\"erezept\"") || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        page.contains("<strong>E-Rezept:</strong> 1 Verordnung"),
        "{page}"
    );
    assert!(page.contains(&format!("data-copy=\"{token}\"")), "{page}");
}

#[tokio::test]
async fn template_status_webhooks_keep_the_offered_templates_current() {
    let fake = relay_e2e::fake::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), config(&fake.url)).unwrap();
    add_staff(dir.path(), "apotheke-am-markt", ANNA);
    let (_server, url) = serve(dir.path());
    let cwd = dir.path().to_owned();
    let templates = |args: &'static [&'static str]| {
        let cwd = cwd.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(RELAY)
                .arg("templates")
                .args(args)
                .args([
                    "--tenant",
                    "apotheke-am-markt",
                    "--config",
                    "relay.toml",
                    "--data-dir",
                    "data",
                ])
                .current_dir(cwd)
                .output()
                .unwrap()
        })
    };
    let out = templates(&["sync"]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Meta's message_template_status_update webhook (WhatsApp Business Account webhooks
    // reference, field "message_template_status_update"), as 360dialog forwards it.
    let status = |event: &str| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "time": 1_796_000_000,
        "changes": [{"field": "message_template_status_update", "value": {"event": event, "message_template_id": 1_234_567_890,
            "message_template_name": "abholbereit", "message_template_language": "de", "reason": "NONE"}}]}]})
    };
    let http = reqwest::Client::new();
    post_hook(&http, &url, CHANNEL_A, "hook-a", &status("PAUSED")).await;
    let listed = || async {
        let out = templates(&["list"]).await.unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listed().await.contains("abholbereit\tde\tUTILITY\tPAUSED") {
        assert!(
            Instant::now() < deadline,
            "the status webhook did not pause the template: {}",
            listed().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    post_hook(&http, &url, CHANNEL_A, "hook-a", &status("APPROVED")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listed()
        .await
        .contains("abholbereit\tde\tUTILITY\tAPPROVED")
    {
        assert!(
            Instant::now() < deadline,
            "the status webhook did not approve the template again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Meta moves it to marketing (template_category_update): the composer then says what
    // WhatsApp charges for it before it is sent.
    let recategorised = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "time": 1_796_000_000,
        "changes": [{"field": "template_category_update", "value": {"message_template_id": 1_234_567_890,
            "message_template_name": "abholbereit", "message_template_language": "de",
            "previous_category": "UTILITY", "new_category": "MARKETING"}}]}]});
    post_hook(&http, &url, CHANNEL_A, "hook-a", &recategorised).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listed()
        .await
        .contains("abholbereit\tde\tMARKETING\tAPPROVED")
    {
        assert!(
            Instant::now() < deadline,
            "the category did not change: {}",
            listed().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let two_days_ago = relay_core::Clock::system().now() - 2 * 86_400;
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika",
            "4915112345678",
            text(
                "4915112345678",
                "wamid.OLD1",
                two_days_ago,
                "Ist es schon da?",
            ),
        ),
    )
    .await;
    let cid = conversations(&http, &url, "sk_inbox_test_a_0123456789", 1).await[0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let anna = session(&url, ANNA).await;
    let page = anna
        .http
        .get(format!("{url}/inbox/c/{cid}?template=0"))
        .header("cookie", &anna.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"cost-warning\""), "{page}");
    assert!(page.contains("0.11 EUR"), "{page}");
}

#[tokio::test]
async fn files_from_the_composer_are_stored_sealed_and_sent() {
    let fake = relay_e2e::fake::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relay.toml"), config(&fake.url)).unwrap();
    add_staff(dir.path(), "apotheke-am-markt", ANNA);
    let (_server, url) = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            "Erika",
            "4915112345678",
            text(
                "4915112345678",
                "wamid.F1",
                now,
                "Schicken Sie mir den Beipackzettel?",
            ),
        ),
    )
    .await;
    let cid = conversations(&http, &url, "sk_inbox_test_a_0123456789", 1).await[0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let anna = session(&url, ANNA).await;
    let page = anna
        .http
        .get(format!("{url}/inbox/c/{cid}"))
        .header("cookie", &anna.cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("enctype=\"multipart/form-data\""));
    let nonce = {
        let i = page.find("id=\"attach-form\"").unwrap();
        hidden(&page[i..], "nonce")
    };
    let pdf = b"%PDF-1.4\n% Beipackzettel BEIPACK-GEHEIM\n%%EOF\n".to_vec();
    let upload = |bytes: Vec<u8>, name: &'static str, mime: &'static str, csrf: String| {
        let form = reqwest::multipart::Form::new()
            .text("csrf", csrf)
            .text("nonce", nonce.clone())
            .text("caption", "Der Beipackzettel")
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name(name)
                    .mime_str(mime)
                    .unwrap(),
            );
        anna.http
            .post(format!("{url}/inbox/c/{cid}/attachment"))
            .header("cookie", &anna.cookie)
            .multipart(form)
            .send()
    };
    // Without the CSRF token, or of a type WhatsApp does not send: refused, nothing sent.
    assert_eq!(
        upload(
            pdf.clone(),
            "zettel.pdf",
            "application/pdf",
            "forged".into()
        )
        .await
        .unwrap()
        .status()
        .as_u16(),
        403
    );
    let r = upload(b"<html>".to_vec(), "x.html", "text/html", anna.csrf.clone())
        .await
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=attachment")
    );
    // A PDF: stored sealed, sent as a document with its name and caption.
    let r = upload(
        pdf.clone(),
        "../../zettel.pdf",
        "application/pdf",
        anna.csrf.clone(),
    )
    .await
    .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("notice=queued"),
        "{:?}",
        r.headers()["location"]
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let sent = loop {
        if let Some(r) = fake
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/messages") && r.json()["type"] == "document")
        {
            break r.json();
        }
        assert!(
            Instant::now() < deadline,
            "the document never reached WhatsApp: {:?}",
            fake.requests()
                .iter()
                .map(|r| r.path.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        sent["document"]["filename"], "zettel.pdf",
        "a plain file name, no path"
    );
    assert_eq!(sent["document"]["caption"], "Der Beipackzettel");
    assert!(
        sent["document"]["id"].is_string(),
        "sent by the media id of its upload: {sent}"
    );
    for entry in walk(&dir.path().join("data")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("BEIPACK-GEHEIM"),
            "{} holds the file in plaintext",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn staff_send_a_pickup_notice_and_mark_it_collected_in_a_real_browser() {
    let fake = relay_e2e::fake::Fake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&fake.url).replacen(
        "api_keys = [\"sk_inbox_test_a_0123456789\"]\n",
        "api_keys = [\"sk_inbox_test_a_0123456789\"]\n\
         [tenants.notifications.pickup_ready]\n\
         template = \"abholbereit\"\nlanguage = \"de\"\nparams = [\"{reference}\"]\nremind_after_days = 2\n",
        1,
    );
    std::fs::write(dir.path().join("relay.toml"), config).unwrap();
    add_staff(dir.path(), "apotheke-am-markt", ANNA);
    let (_server, url) = serve(dir.path());
    let http = reqwest::Client::new();
    let now = relay_core::Clock::system().now();
    let erika = "4915112345678";
    post_hook(
        &http,
        &url,
        CHANNEL_A,
        "hook-a",
        &inbound(
            CHANNEL_A,
            XSS_NAME,
            erika,
            text(erika, "wamid.PU1", now - 30, "Ist meine Bestellung da?"),
        ),
    )
    .await;
    let cid = conversations(&http, &url, "sk_inbox_test_a_0123456789", 1).await[0]["contact_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_driver, web) = browser().await;
    sign_in(&web, &url, ANNA).await;
    wait_for_text(&web, "Mallory").await;
    web.goto(&format!("{url}/inbox/c/{cid}")).await.unwrap();
    wait_for_text(&web, "Abholbereit melden").await;
    web.find(Locator::Id("reference"))
        .await
        .unwrap()
        .send_keys("B-4711")
        .await
        .unwrap();
    web.find(Locator::Id("pickup-send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&web, "Abholbereit-Nachricht wird gesendet.").await;
    wait_for_text(&web, "B-4711 gemeldet").await;
    screenshot(&web, "pickup-notice").await;
    // The template went to WhatsApp with the order number in its parameter.
    let deadline = Instant::now() + Duration::from_secs(15);
    let sent = loop {
        if let Some(r) = fake
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/messages") && r.json()["type"] == "template")
        {
            break r.json();
        }
        assert!(
            Instant::now() < deadline,
            "the notice never reached WhatsApp"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sent["template"]["name"], "abholbereit");
    assert_eq!(
        sent["template"]["components"][0]["parameters"][0]["text"],
        "B-4711"
    );
    // Collected: the row says so, no reminder is owed, the API agrees.
    web.find(Locator::Css("li[data-reference='B-4711'] button.collected"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&web, "abgeholt").await;
    let list: Value = http
        .get(format!("{url}/v1/conversations/{cid}/notifications"))
        .bearer_auth("sk_inbox_test_a_0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["notifications"][0]["reference"], "B-4711");
    assert!(list["notifications"][0]["collected_at"].is_i64(), "{list}");
    assert!(
        web.find(Locator::Css("li[data-reference='B-4711'] button.collected"))
            .await
            .is_err(),
        "no second 'collected'"
    );
    assert_no_script_ran(&web).await;
    web.close().await.unwrap();
}
