//! reply-sender against a fake 360dialog on a real socket: success, retries, permanent
//! failures, the pair rate limit, no double send on redelivery, read receipts, and signed
//! forwards verified by an independent Standard Webhooks implementation.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use relay_core::jobs::Job;
use relay_core::ports::store_roles::*;
use relay_core::webhook::DeliveryStatus;
use relay_e2e::fake::Reply;
use relay_e2e::sender_fixture::{SECRET, setup, setup_with_rate};
use reply_sender::Outcome;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const K1: &str = "11111111111111111111111111111111";

#[tokio::test]
async fn a_reply_is_sent_once_even_when_redelivered() {
    let s = setup().await;
    let job = s.queue_text(K1, "Ihr Rezept liegt bereit.").await;
    assert_eq!(s.sender.process(&job, 1).await.unwrap(), Outcome::Done);
    let reqs = s.fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/messages");
    assert_eq!(
        reqs[0].header("d360-api-key").as_deref(),
        Some("d360-test-key")
    );
    let body = reqs[0].json();
    assert_eq!(body["to"], "4915112345678");
    assert_eq!(body["type"], "text");
    assert_eq!(body["text"]["body"], "Ihr Rezept liegt bereit.");
    assert_eq!(body["context"]["message_id"], "wamid.IN1");
    let m = s.message(K1).await;
    assert_eq!(
        (m.status, m.wamid.as_str()),
        (Some(DeliveryStatus::Sent), "wamid.FAKE000001")
    );

    // SQS redelivers the same job (the Lambda timed out after sending): nothing is sent.
    assert_eq!(s.sender.process(&job, 2).await.unwrap(), Outcome::Done);
    assert_eq!(s.fake.requests().len(), 1);
}

#[tokio::test]
async fn transient_failures_retry_with_backoff_then_succeed() {
    for first in [
        Reply::Status(429, json!({"error": "Too Many Requests"})),
        Reply::Status(
            400,
            json!({"meta": {"developer_message": "Rate limit hit"}}),
        ),
        Reply::Status(503, json!({})),
        Reply::MetaError(130429),
        Reply::Slow(Duration::from_secs(2)),
    ] {
        let s = setup().await;
        s.fake.script([first.clone()]);
        let job = s.queue_text(K1, "Bitte erneut").await;
        let outcome = s.sender.process(&job, 1).await.unwrap();
        assert!(
            matches!(outcome, Outcome::RetryAfter(d) if d >= Duration::from_millis(500)),
            "{first:?}: {outcome:?}"
        );
        assert_eq!(
            s.message(K1).await.status,
            Some(DeliveryStatus::Queued),
            "{first:?}: still queued, lease released"
        );
        assert_eq!(
            s.sender.process(&job, 2).await.unwrap(),
            Outcome::Done,
            "{first:?}"
        );
        assert_eq!(s.message(K1).await.status, Some(DeliveryStatus::Sent));
    }
}

#[tokio::test]
async fn permanent_failures_fail_at_once_with_the_reason() {
    for (reply, code) in [
        (Reply::MetaError(131047), 131047),
        (Reply::MetaError(131026), 131026),
        (Reply::MetaError(131050), 131050),
        (Reply::MetaError(368), 368),
        (Reply::Status(401, json!({"error": "invalid key"})), 401),
        (Reply::Status(403, json!({"error": "blocked"})), 403),
    ] {
        let s = setup().await;
        s.fake.script([reply]);
        let job = s.queue_text(K1, "x").await;
        assert_eq!(s.sender.process(&job, 1).await.unwrap(), Outcome::Done);
        let m = s.message(K1).await;
        assert_eq!(m.status, Some(DeliveryStatus::Failed), "{code}");
        let err = m.error.unwrap();
        assert_eq!(err.code, code);
        assert!(
            !format!("{err:?}").contains("4915100000000"),
            "no echoed recipient data is stored"
        );
        assert_eq!(s.sender.process(&job, 2).await.unwrap(), Outcome::Done);
        assert_eq!(s.fake.requests().len(), 1, "{code}: no retry");
    }
}

/// 131048 (spam rate limit) and 131057 (account in maintenance) hold the business back for a
/// while: retried after minutes, then hours, and failed with the reason only after about a day.
#[tokio::test]
async fn a_business_held_back_by_whatsapp_retries_for_hours_then_fails() {
    for code in [131048, 131057] {
        let mut s = setup().await;
        s.fake
            .script([Reply::MetaError(code), Reply::MetaError(code)]);
        let job = s.queue_text(K1, "x").await;
        let outcome = s.sender.process(&job, 1).await.unwrap();
        assert!(
            matches!(outcome, Outcome::RetryAfter(d) if d >= Duration::from_secs(300)),
            "{code}: {outcome:?}"
        );
        assert_eq!(
            s.message(K1).await.status,
            Some(DeliveryStatus::Queued),
            "{code}: still queued"
        );
        // Later attempts wait longer, up to hours.
        assert!(s.sender.policy.hold_backoff(4) >= Duration::from_secs(2400));
        assert!(s.sender.policy.hold_backoff(30) <= Duration::from_secs(6 * 3600));
        // Past the hold period (about a day after it was queued): failed with the reason.
        s.sender.policy.hold_for = Duration::ZERO;
        assert_eq!(s.sender.process(&job, 9).await.unwrap(), Outcome::Done);
        let m = s.message(K1).await;
        assert_eq!(m.status, Some(DeliveryStatus::Failed), "{code}");
        assert_eq!(m.error.unwrap().code, code);
        assert_eq!(s.fake.requests().len(), 2, "{code}");
    }
}

#[tokio::test]
async fn the_pair_rate_limit_holds_back_that_recipient_only() {
    let s = setup().await;
    s.fake.script([Reply::MetaError(131056)]);
    let job = s.queue_text(K1, "x").await;
    let outcome = s.sender.process(&job, 1).await.unwrap();
    assert!(
        matches!(outcome, Outcome::RetryAfter(d) if d >= Duration::from_secs(6)),
        "{outcome:?}"
    );
    let rec = s
        .store
        .contact(&s.tenant, &s.contact, s.now)
        .await
        .unwrap()
        .unwrap();
    assert!(rec.send_backoff_until >= s.now + 6);
    // Another message to the same person waits without calling WhatsApp.
    let other = s.queue_text("22222222222222222222222222222222", "y").await;
    assert!(matches!(
        s.sender.process(&other, 1).await.unwrap(),
        Outcome::RetryAfter(_)
    ));
    assert_eq!(s.fake.requests().len(), 1);
}

#[tokio::test]
async fn after_the_attempt_bound_the_job_is_dead_lettered_and_the_message_failed() {
    let s = setup().await;
    s.fake
        .script(std::iter::repeat_n(Reply::Status(500, json!({})), 5));
    let job = s.queue_text(K1, "x").await;
    assert!(matches!(
        s.sender.process(&job, 1).await.unwrap(),
        Outcome::RetryAfter(_)
    ));
    assert!(matches!(
        s.sender.process(&job, 2).await.unwrap(),
        Outcome::RetryAfter(_)
    ));
    assert!(matches!(
        s.sender.process(&job, 3).await.unwrap(),
        Outcome::DeadLetter(_)
    ));
    let m = s.message(K1).await;
    assert_eq!(m.status, Some(DeliveryStatus::Failed));
    assert!(
        m.error
            .unwrap()
            .title
            .unwrap()
            .contains("gave up after 3 attempts")
    );
    assert_eq!(s.fake.requests().len(), 3);
}

#[tokio::test]
async fn the_batch_handler_sets_delays_and_dead_letters() {
    let s = setup().await;
    s.fake.script([Reply::Status(500, json!({}))]);
    let job = s.queue_text(K1, "x").await;
    let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(json!({"Records": [
        {"messageId": "a", "receiptHandle": "ra", "body": job.to_body(), "attributes": {"ApproximateReceiveCount": "1"}},
        {"messageId": "b", "receiptHandle": "rb", "body": "not a job"},
    ]}))
    .unwrap();
    let resp = reply_sender::handle(&s.sender, event).await.unwrap();
    let failed: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        ["a"],
        "the retried job stays; the junk is dead-lettered and let go"
    );
    assert_eq!(s.control.retries.lock().unwrap().len(), 1);
    assert_eq!(s.control.dead.lock().unwrap().as_slice(), ["not a job"]);
}

#[tokio::test]
async fn read_receipts_name_the_inbound_message() {
    let s = setup().await;
    let key = s.sender.pseudonymizer.wamid_key(&s.tenant, "wamid.IN1");
    let job = Job::MarkRead {
        tenant: s.tenant.clone(),
        contact: s.contact.clone(),
        wamid_key: key.clone(),
        typing: false,
    };
    assert_eq!(s.sender.process(&job, 1).await.unwrap(), Outcome::Done);
    let body = s.fake.requests()[0].json();
    assert_eq!(
        body,
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN1"})
    );
    // Someone at the pharmacy is writing: the same receipt with the typing indicator.
    let typing = Job::MarkRead {
        tenant: s.tenant.clone(),
        contact: s.contact.clone(),
        wamid_key: key,
        typing: true,
    };
    assert_eq!(s.sender.process(&typing, 1).await.unwrap(), Outcome::Done);
    assert_eq!(
        s.fake.requests()[1].json(),
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN1",
               "typing_indicator": {"type": "text"}})
    );
}

#[tokio::test]
async fn forwards_are_signed_per_standard_webhooks_and_retried() {
    let s = setup().await;
    let job = Job::Forward {
        tenant: s.tenant.clone(),
        webhook_id: "msg_m_123".into(),
        created_at: s.now,
        payload: json!({"type": "message.received", "data": {"message_id": "m_123"}}),
    };
    s.forward.script([Reply::Status(502, json!({}))]);
    assert!(matches!(
        s.sender.process(&job, 1).await.unwrap(),
        Outcome::RetryAfter(_)
    ));
    assert_eq!(s.sender.process(&job, 2).await.unwrap(), Outcome::Done);
    let reqs = s.forward.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].header("webhook-id"),
        reqs[1].header("webhook-id"),
        "a stable id for de-duplication"
    );
    let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
    for r in &reqs {
        let mut headers = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(name, r.header(name).unwrap().parse().unwrap());
        }
        wh.verify(&r.body, &headers)
            .expect("the independent verifier accepts our signature");
        let mut tampered = r.body.clone();
        tampered.push(b' ');
        assert!(wh.verify(&tampered, &headers).is_err());
    }
    assert_eq!(reqs[1].json()["data"]["message_id"], "m_123");

    // A receiver down for more than 24 hours: the job goes to the DLQ.
    let old = Job::Forward {
        tenant: s.tenant.clone(),
        webhook_id: "msg_old".into(),
        created_at: s.now - 25 * 3600,
        payload: json!({}),
    };
    s.forward.script([Reply::Status(500, json!({}))]);
    assert!(matches!(
        s.sender.process(&old, 20).await.unwrap(),
        Outcome::DeadLetter(_)
    ));
}

#[tokio::test]
async fn a_burst_of_1000_replies_drains_at_the_channel_rate_without_429s() {
    // The channel may send 400/s; the fake refuses anything above 450 in a second.
    let s = Arc::new(setup_with_rate(400).await);
    s.fake.limit_rate(450);
    let mut jobs = Vec::new();
    for i in 0..1000u32 {
        jobs.push(
            s.queue_text(&format!("{i:032x}"), &format!("Nachricht {i}"))
                .await,
        );
    }
    let jobs = Arc::new(Mutex::new(jobs));
    // Eight concurrent workers, as several Lambda pollers would be (sharing one limiter here).
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (s, jobs) = (s.clone(), jobs.clone());
            tokio::spawn(async move {
                loop {
                    let Some(job) = jobs.lock().unwrap().pop() else {
                        break;
                    };
                    let outcome = s.sender.process(&job, 1).await.unwrap();
                    assert_eq!(outcome, Outcome::Done);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(s.fake.rejected(), 0, "no 429 storm");
    assert_eq!(s.fake.requests().len(), 1000);
    let c = s
        .store
        .conversation(&s.tenant, &s.contact, s.now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.last_message_at, s.now);
}

#[tokio::test]
async fn a_contact_who_opts_out_after_a_reply_was_accepted_does_not_get_it() {
    let s = setup().await;
    let job = s.queue_text(K1, "Angebot der Woche").await;
    let stop = relay_core::records::ConsentEntry {
        key: "stop".into(),
        event: relay_core::records::ConsentEvent::OptedOut,
        at: s.now,
        source: "message:m_x".into(),
        expires_at: s.now + 86_400,
    };
    s.store
        .record_consent(&s.tenant, &s.contact, &stop)
        .await
        .unwrap();
    assert_eq!(s.sender.process(&job, 1).await.unwrap(), Outcome::Done);
    let m = s.message(K1).await;
    assert_eq!(m.status, Some(DeliveryStatus::Failed));
    assert!(m.error.unwrap().title.unwrap().contains("opted out"));
    assert!(s.fake.requests().is_empty(), "nothing was sent");
    // The confirmation of the opt-out itself still goes out.
    let confirm = s
        .queue_text("33333333333333333333333333333333", "Abgemeldet.")
        .await;
    let Job::Send {
        tenant,
        contact,
        message_key,
        ..
    } = confirm
    else {
        unreachable!()
    };
    let confirm = Job::Send {
        tenant,
        contact,
        message_key,
        consent_reply: true,
    };
    assert_eq!(s.sender.process(&confirm, 1).await.unwrap(), Outcome::Done);
    assert_eq!(s.fake.requests().len(), 1);
}

#[tokio::test]
async fn after_erasure_pending_sends_and_forwards_of_the_contact_go_nowhere() {
    let s = setup().await;
    let send = s
        .queue_text(&format!("{:032x}", 7), "Ihr Rezept ist da")
        .await;
    let forward = Job::Forward {
        tenant: s.tenant.clone(),
        webhook_id: "msg_m_erased".into(),
        created_at: s.now,
        payload: json!({"type": "message.received", "data": {"message_id": "m_erased", "contact_id": s.contact}}),
    };
    let privacy = relay_core::privacy::Privacy {
        store: s.store.clone(),
        keys: s.store.keyring().clone(),
        pseudonymizer: Arc::new(relay_core::ids::Pseudonymizer::new([5; 32])),
        blobs: Arc::new(relay_core::media::MemoryBlobStore::default()),
    };
    let receipt = privacy.erase(&s.tenant, &s.contact, s.now).await.unwrap();
    assert!(receipt.key_destroyed);
    assert_eq!(s.sender.process(&send, 1).await.unwrap(), Outcome::Done);
    assert_eq!(s.sender.process(&forward, 1).await.unwrap(), Outcome::Done);
    assert!(
        s.fake.requests().is_empty(),
        "nothing sent to an erased contact"
    );
    assert!(
        s.forward.requests().is_empty(),
        "nothing of an erased contact forwarded"
    );
    // Another contact's forward still goes out (the check is per contact, not a blanket stop).
    let other = Job::Forward {
        tenant: s.tenant.clone(),
        webhook_id: "msg_m_other".into(),
        created_at: s.now,
        payload: json!({"type": "message.received", "data": {"message_id": "m_other"}}),
    };
    assert_eq!(s.sender.process(&other, 1).await.unwrap(), Outcome::Done);
    assert_eq!(s.forward.requests().len(), 1);
}

// ---- media -------------------------------------------------------------------------------------

use relay_core::media::{BlobStore, FileOpener, MediaStatus};
use relay_e2e::fake::{Fake, MediaMode};

/// A "photo": bytes that are recognisable if they ever appear in plaintext.
fn photo(len: usize) -> Vec<u8> {
    let mut v = b"%PRESCRIPTION-PHOTO%".repeat(len / 20 + 1);
    v.truncate(len);
    v
}

async fn open_stored(s: &relay_e2e::sender_fixture::Setup, wamid: &str) -> Vec<u8> {
    let m = s.inbound(wamid).await;
    let media = m.media.unwrap();
    let mut reader = s
        .blobs
        .open(media.object_key.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut opener = FileOpener::new(
        s.store.keyring(),
        &s.tenant,
        &media.media_id,
        media.size.unwrap(),
        reader.as_mut(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    while let Some(c) = opener.next(reader.as_mut()).await.unwrap() {
        out.extend(c);
    }
    out
}

#[tokio::test]
async fn an_inbound_photo_is_fetched_checked_and_stored_sealed() {
    let s = setup().await;
    let bytes = photo(300_000);
    s.fake.add_media("MEDIA1", bytes.clone(), MediaMode::Good);
    let job = s
        .inbound_image("wamid.IMG1", "MEDIA1", &Fake::sha256_b64(&bytes))
        .await;
    let pending = s.inbound("wamid.IMG1").await.media.unwrap();
    assert_eq!(
        pending.status,
        MediaStatus::Pending,
        "stored first as pending"
    );
    assert_eq!(s.sender.process(&job, 1).await.unwrap(), Outcome::Done);

    let media = s.inbound("wamid.IMG1").await.media.unwrap();
    assert_eq!(media.status, MediaStatus::Available, "{media:?}");
    assert_eq!(media.size, Some(bytes.len() as u64));
    assert_eq!(media.mime_type.as_deref(), Some("image/jpeg"));
    // Both requests went through 360dialog with the channel's key.
    let reqs = s.fake.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[0].path.starts_with("GET /MEDIA1"));
    assert!(
        reqs[1]
            .path
            .starts_with("GET /whatsapp_business/attachments?mid=MEDIA1")
    );
    assert!(
        reqs.iter()
            .all(|r| r.header("d360-api-key").as_deref() == Some("d360-test-key"))
    );
    // At rest it is sealed; opened, it is the same file.
    let blob = s.blobs.get(media.object_key.as_deref().unwrap()).unwrap();
    assert!(
        !blob.windows(20).any(|w| w == b"%PRESCRIPTION-PHOTO%"),
        "plaintext at rest"
    );
    assert_eq!(open_stored(&s, "wamid.IMG1").await, bytes);
    // A redelivered job changes nothing and fetches nothing.
    assert_eq!(s.sender.process(&job, 2).await.unwrap(), Outcome::Done);
    assert_eq!(s.fake.requests().len(), 2);
}

#[tokio::test]
async fn bad_media_fails_with_a_reason_and_stores_nothing() {
    let s = setup().await;
    let bytes = photo(50_000);
    for (i, (mode, reason)) in [
        (MediaMode::WrongHash, "SHA-256"),
        (MediaMode::NotFound, "unknown or expired"),
        (MediaMode::Unannounced, "larger than the limit"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("BAD{i}");
        let wamid = format!("wamid.BAD{i}");
        let data = if mode == MediaMode::Unannounced {
            photo(2 << 20) // the fixture's limit is 1 MiB
        } else {
            bytes.clone()
        };
        s.fake.add_media(&id, data, mode);
        // The webhook's hash is the file's own unless the provider lies about it.
        let hash = if mode == MediaMode::WrongHash {
            Fake::sha256_b64(b"not this")
        } else {
            Fake::sha256_b64(&bytes)
        };
        let job = s.inbound_image(&wamid, &id, &hash).await;
        assert_eq!(
            s.sender.process(&job, 1).await.unwrap(),
            Outcome::Done,
            "{mode:?}"
        );
        let media = s.inbound(&wamid).await.media.unwrap();
        assert_eq!(media.status, MediaStatus::Failed, "{mode:?}");
        let why = media.reason.unwrap_or_default();
        assert!(why.contains(reason), "{mode:?}: {why}");
    }
    assert!(s.blobs.keys().is_empty(), "nothing kept of a bad file");
}

#[tokio::test]
async fn failing_downloads_retry_and_pause_before_360dialog_would_block_the_number() {
    let s = setup().await;
    let bytes = photo(10_000);
    s.fake
        .add_media("FLAKY", bytes.clone(), MediaMode::DownloadFails);
    let job = s
        .inbound_image("wamid.FLAKY", "FLAKY", &Fake::sha256_b64(&bytes))
        .await;
    // Each failed attempt is a failed media request: retried with backoff…
    for attempt in 1..=2 {
        assert!(
            matches!(
                s.sender.process(&job, attempt).await.unwrap(),
                Outcome::RetryAfter(_)
            ),
            "attempt {attempt}"
        );
    }
    // …and counted per channel: two requests failed twice (the URL lookup succeeded).
    let hour = relay_core::Clock::system().now() / 3600;
    assert_eq!(s.store.media_failures("111", hour).await.unwrap(), 2);
    // Two more failures reach the budget; then nothing is requested until the next hour.
    s.store.add_media_failure("111", hour).await.unwrap();
    s.store.add_media_failure("111", hour).await.unwrap();
    let before = s.fake.requests().len();
    match s.sender.process(&job, 3).await.unwrap() {
        Outcome::RetryAfter(d) => assert!(d.as_secs() <= 3600 + 60, "{d:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.fake.requests().len(), before, "no request while paused");
    assert_eq!(
        s.inbound("wamid.FLAKY").await.media.unwrap().status,
        MediaStatus::Pending
    );
}

#[tokio::test]
async fn a_slow_download_still_completes_and_erasure_deletes_the_file() {
    let s = setup().await;
    let bytes = photo(100_000);
    s.fake.add_media("SLOW", bytes.clone(), MediaMode::Slow(50));
    let job = s
        .inbound_image("wamid.SLOW", "SLOW", &Fake::sha256_b64(&bytes))
        .await;
    assert_eq!(s.sender.process(&job, 1).await.unwrap(), Outcome::Done);
    assert_eq!(open_stored(&s, "wamid.SLOW").await, bytes);
    let privacy = relay_core::privacy::Privacy {
        store: s.store.clone(),
        keys: s.store.keyring().clone(),
        pseudonymizer: s.pseudo.clone(),
        blobs: Arc::new(s.blobs.clone()),
    };
    let receipt = privacy.erase(&s.tenant, &s.contact, s.now).await.unwrap();
    assert_eq!(receipt.deleted.media, 1);
    assert!(s.blobs.keys().is_empty());
}

#[tokio::test]
async fn template_lists_come_from_360dialog_and_from_a_meta_business_account() {
    let fake = relay_e2e::fake::Fake::start().await;
    let config = relay_core::config::RelayConfig::parse(
        &format!(
            r#"
[[meta_apps]]
id = "777"
app_secret = "s"
verify_token = "v"

[[tenants]]
id = "apotheke-a"
name = "A"
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok"
api_key = "d360-key"
api_base_url = "{url}"

[[tenants.channels]]
phone_number_id = "222"
provider = "meta"
app = "777"
waba_id = "102290129340398"
access_token = "meta-token"
api_base_url = "{url}"
"#,
            url = fake.url
        ),
        &|_| None,
    )
    .unwrap();
    let client = relay_whatsapp::WhatsAppClient::new(std::time::Duration::from_secs(5));
    let channels = &config.tenants[0].channels;
    for channel in channels {
        let list = client.list_templates(channel).await.unwrap();
        let templates = relay_core::templates::parse_template_list(&list, 0);
        let names: Vec<(&str, &str, bool)> = templates
            .iter()
            .map(|t| (t.name.as_str(), t.category.as_str(), t.approved()))
            .collect();
        assert_eq!(
            names,
            [
                ("abholbereit", "UTILITY", true),
                ("herbstaktion", "MARKETING", false)
            ],
            "{}",
            channel.phone_number_id
        );
    }
    // Meta: both pages fetched, with the channel's access token.
    let meta: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/102290129340398/message_templates"))
        .collect();
    assert_eq!(meta.len(), 2, "two pages");
    assert!(
        meta.iter()
            .all(|r| r.header("authorization").as_deref() == Some("Bearer meta-token"))
    );
    // Without a waba_id a Meta channel's list cannot be asked for.
    let mut no_waba = channels[1].clone();
    no_waba.waba_id = None;
    let err = client.list_templates(&no_waba).await.unwrap_err();
    assert!(err.to_string().contains("waba_id"), "{err}");
}
