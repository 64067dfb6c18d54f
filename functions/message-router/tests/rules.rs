//! Routing rules that act: opt-out/opt-in keywords, away replies outside opening hours, and
//! forwarding. Jobs are recorded instead of sent.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use aws_lambda_events::sqs::SqsEvent;
use relay_core::config::RelayConfig;
use relay_core::directory::StaticDirectory;
use relay_core::ids::{Pseudonymizer, TenantId};
use relay_core::jobs::Job;
use relay_core::ports::store_roles::*;
use relay_core::ports::{OutboundQueue, QueueError};
use relay_core::records::{ConsentEvent, Direction, PageRequest};
use relay_core::routing::Router;
use relay_embedded::{Database, SqliteMessageStore};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const NOW: i64 = 1_764_400_000;

#[derive(Default)]
struct Jobs(Mutex<Vec<Job>>);

#[async_trait::async_trait]
impl OutboundQueue for Jobs {
    async fn enqueue_jobs(&self, jobs: &[Job]) -> Result<(), QueueError> {
        self.0.lock().unwrap().extend(jobs.iter().cloned());
        Ok(())
    }
}

impl Jobs {
    fn take(&self) -> Vec<Job> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn config(extra: &str) -> RelayConfig {
    let text = format!(
        r#"
[[tenants]]
id = "apotheke-a"
name = "A"
{extra}
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok"
"#
    );
    RelayConfig::parse(&text, &|_| None).unwrap()
}

struct Setup {
    router: Router,
    store: Arc<relay_core::sealed::SealedStore>,
    jobs: Arc<Jobs>,
    keys: Arc<relay_core::crypto::Keyring>,
    tenant: TenantId,
}

fn setup(extra: &str) -> Setup {
    let keys = Arc::new(relay_core::crypto::Keyring::in_memory(
        relay_core::Clock::fixed(NOW),
    ));
    let store = Arc::new(relay_core::sealed::SealedStore::new(
        Arc::new(SqliteMessageStore::new(Database::in_memory(
            relay_core::Clock::fixed(NOW),
        ))),
        keys.clone(),
    ));
    let jobs = Arc::new(Jobs::default());
    let router = Router::new(
        store.clone(),
        Arc::new(StaticDirectory::from_config(&config(extra))),
        Arc::new(Pseudonymizer::new([2; 32])),
        keys.clone(),
    )
    .with_outbound(jobs.clone());
    Setup {
        router,
        store,
        jobs,
        keys,
        tenant: TenantId::parse("apotheke-a").unwrap(),
    }
}

fn text(wamid: &str, ts: i64, body: &str) -> String {
    let w = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Erika"},"wa_id":"4915112345678"}],
        "messages":[{"from":"4915112345678","id":wamid,"timestamp":ts.to_string(),"type":"text","text":{"body":body}}]}}]}]});
    relay_core::envelope::envelopes("111", 0, w, 1 << 20, None)
        .unwrap()
        .remove(0)
}

async fn route(s: &Setup, body: String) {
    let event: SqsEvent =
        serde_json::from_value(json!({"Records": [{"messageId": "1", "body": body}]})).unwrap();
    let resp = message_router::handle(&s.router, event).await.unwrap();
    assert!(resp.batch_item_failures.is_empty());
}

impl Setup {
    /// The queued jobs, forward payloads opened (they travel sealed, never in plaintext).
    async fn take_jobs(&self) -> Vec<Job> {
        let mut out = Vec::new();
        for mut job in self.jobs.take() {
            if let Job::Forward {
                tenant, payload, ..
            } = &mut job
            {
                let sealed = payload.as_str().expect("forward payloads are sealed");
                assert!(
                    !sealed.contains("message"),
                    "no plaintext in a sealed payload"
                );
                *payload =
                    relay_core::sealed::open_forward_payload(&self.keys, tenant, payload.clone())
                        .await
                        .unwrap()
                        .unwrap();
            }
            out.push(job);
        }
        out
    }

    async fn outbound_texts(&self) -> Vec<String> {
        let c = self
            .store
            .list_conversations(&self.tenant, &PageRequest::first(1), NOW)
            .await
            .unwrap()
            .items[0]
            .contact_id
            .clone();
        let msgs = self
            .store
            .list_messages(&self.tenant, &c, &PageRequest::first(100), NOW)
            .await
            .unwrap()
            .items;
        msgs.into_iter()
            .filter(|m| m.direction == Direction::Outbound)
            .map(|m| m.text.unwrap_or_default())
            .collect()
    }
}

const FORWARD: &str = r#"forward_url = "https://pms.example/hook"
forward_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw""#;

#[tokio::test]
async fn stop_opts_out_with_a_ledger_entry_a_confirmation_and_a_forward() {
    let s = setup(FORWARD);
    route(&s, text("wamid.S1", NOW - 60, " Stopp ")).await;
    let c = s
        .store
        .list_conversations(&s.tenant, &PageRequest::first(1), NOW)
        .await
        .unwrap()
        .items[0]
        .clone();
    assert!(c.opted_out);
    let ledger = s
        .store
        .consent_ledger(&s.tenant, &c.contact_id, NOW)
        .await
        .unwrap();
    assert_eq!(ledger.len(), 2);
    assert_eq!(
        (ledger[0].event, ledger[0].at),
        (ConsentEvent::ConversationStarted, NOW - 60),
        "the customer's first message opens the ledger"
    );
    assert_eq!(
        (ledger[1].event, ledger[1].at),
        (ConsentEvent::OptedOut, NOW - 60)
    );
    assert!(
        ledger[1].source.starts_with("message:m_"),
        "which message caused it"
    );
    assert_eq!(
        s.outbound_texts().await,
        [relay_core::policy::DEFAULT_OPT_OUT_TEXT]
    );
    let jobs = s.take_jobs().await;
    let kinds: Vec<&str> = jobs.iter().map(Job::kind).collect();
    assert_eq!(kinds, ["send", "forward", "forward"]);
    let types: Vec<Value> = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Forward { payload, .. } => Some(payload["type"].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        types,
        [json!("contact.opted_out"), json!("message.received")]
    );

    // The same webhook again: nothing new is stored; the jobs repeat with the same ids.
    route(&s, text("wamid.S1", NOW - 60, " Stopp ")).await;
    assert_eq!(
        s.store
            .consent_ledger(&s.tenant, &c.contact_id, NOW)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(s.outbound_texts().await.len(), 1, "one confirmation");
    assert_eq!(s.take_jobs().await, jobs, "the same jobs (idempotent ids)");

    route(&s, text("wamid.S2", NOW - 30, "start")).await;
    let c = s
        .store
        .conversation(&s.tenant, &c.contact_id, NOW)
        .await
        .unwrap()
        .unwrap();
    assert!(!c.opted_out);
    assert_eq!(
        s.store
            .consent_ledger(&s.tenant, &c.contact_id, NOW)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event)
            .collect::<Vec<_>>(),
        [
            ConsentEvent::ConversationStarted,
            ConsentEvent::OptedOut,
            ConsentEvent::OptedIn
        ]
    );
    assert!(
        s.outbound_texts()
            .await
            .contains(&relay_core::policy::DEFAULT_OPT_IN_TEXT.to_owned())
    );
}

#[tokio::test]
async fn only_the_whole_text_is_a_keyword_and_custom_keywords_work() {
    let s =
        setup("[tenants.opt_out]\nkeywords = [\"ABMELDUNG\"]\nconfirmation_text = \"Abgemeldet.\"");
    route(&s, text("wamid.K1", NOW - 60, "Bitte nicht stoppen")).await;
    route(&s, text("wamid.K2", NOW - 50, "stop")).await;
    let c = s
        .store
        .list_conversations(&s.tenant, &PageRequest::first(1), NOW)
        .await
        .unwrap()
        .items[0]
        .clone();
    assert!(!c.opted_out, "STOP is not this tenant's keyword");
    route(&s, text("wamid.K3", NOW - 40, "abmeldung")).await;
    assert_eq!(s.outbound_texts().await, ["Abgemeldet."]);
}

const CLOSED: &str = r#"[tenants.business_hours]
away_text = "Wir haben geschlossen und melden uns morgen."
away_interval_hours = 12"#;

#[tokio::test]
async fn away_replies_go_out_once_per_interval_outside_opening_hours() {
    // No opening hours at all: always closed.
    let s = setup(CLOSED);
    route(&s, text("wamid.A1", NOW - 60, "Hallo?")).await;
    route(&s, text("wamid.A2", NOW - 50, "Noch da?")).await;
    assert_eq!(
        s.outbound_texts().await,
        ["Wir haben geschlossen und melden uns morgen."]
    );
    // A redelivery of the first message re-queues its reply (same id), never a second one.
    route(&s, text("wamid.A1", NOW - 60, "Hallo?")).await;
    assert_eq!(s.outbound_texts().await.len(), 1);
    let sends = s
        .jobs
        .take()
        .into_iter()
        .filter(|j| j.kind() == "send")
        .count();
    assert_eq!(sends, 2, "first delivery and redelivery of A1; none for A2");

    // Old messages (outside the 24-hour window) get no automatic reply at all.
    let s = setup(CLOSED);
    route(&s, text("wamid.OLD", NOW - 2 * 86_400, "Hallo?")).await;
    assert!(s.outbound_texts().await.is_empty());
    assert!(s.take_jobs().await.is_empty());
}

#[tokio::test]
async fn open_hours_get_no_away_reply() {
    let s = setup(
        r#"[tenants.business_hours]
away_text = "Geschlossen"
mon = ["00:00-24:00"]
tue = ["00:00-24:00"]
wed = ["00:00-24:00"]
thu = ["00:00-24:00"]
fri = ["00:00-24:00"]
sat = ["00:00-24:00"]
sun = ["00:00-24:00"]"#,
    );
    route(&s, text("wamid.O1", NOW - 60, "Hallo?")).await;
    assert!(s.outbound_texts().await.is_empty());
}

#[tokio::test]
async fn forwards_leave_out_content_unless_the_tenant_allows_it() {
    for (extra, with_text) in [
        (FORWARD.to_owned(), false),
        (format!("{FORWARD}\nforward_content = true"), true),
    ] {
        let s = setup(&extra);
        route(&s, text("wamid.F1", NOW - 60, "Mein Befund")).await;
        let jobs = s.take_jobs().await;
        let [
            Job::Forward {
                payload,
                webhook_id,
                ..
            },
        ] = &jobs[..]
        else {
            panic!("{jobs:?}")
        };
        assert!(webhook_id.starts_with("msg_m_"));
        assert_eq!(payload["type"], "message.received");
        assert_eq!(
            payload.to_string().contains("Mein Befund"),
            with_text,
            "{extra}"
        );
        assert!(
            !payload.to_string().contains("Erika"),
            "names are not forwarded"
        );
    }
}

#[tokio::test]
async fn ad_referral_data_is_dropped_unless_the_tenant_keeps_it() {
    for (extra, kept) in [("", false), ("keep_referral = true", true)] {
        let s = setup(extra);
        let w = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
            "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Erika"},"wa_id":"4915112345678"}],
            "messages":[{"from":"4915112345678","id":"wamid.AD1","timestamp":(NOW - 10).to_string(),"type":"text",
              "text":{"body":"Ich habe Ihre Anzeige gesehen"},
              "referral":{"source_url":"https://fb.me/x","source_id":"ad-123","source_type":"ad","ctwa_clid":"click-456"}}]}}]}]});
        route(
            &s,
            relay_core::envelope::envelopes("111", 0, w, 1 << 20, None)
                .unwrap()
                .remove(0),
        )
        .await;
        let c = s
            .store
            .list_conversations(&s.tenant, &PageRequest::first(1), NOW)
            .await
            .unwrap()
            .items[0]
            .contact_id
            .clone();
        let m = s
            .store
            .list_messages(&s.tenant, &c, &PageRequest::first(1), NOW)
            .await
            .unwrap()
            .items
            .remove(0);
        assert_eq!(m.text.as_deref(), Some("Ich habe Ihre Anzeige gesehen"));
        assert_eq!(m.referral.is_some(), kept, "{extra:?}");
        if kept {
            assert_eq!(m.referral.unwrap()["ctwa_clid"], "click-456");
        }
    }
}

#[tokio::test]
async fn pasted_e_rezept_tokens_are_kept_for_their_retention_and_forwarded_as_asked() {
    // The token form of gemSpec_DM_eRp (check digits by ISO 7064 MOD 97-10).
    let ac = "777bea0e13cc9c42ceec14aec3ddee2263325dc2c6c699db115f58fe423607ea";
    let body = format!(
        "Guten Tag, hier mein Rezept: Task/160.123.456.789.123.58/$accept?ac={ac} \
         und Task/160.123.456.789.123.59/$accept?ac={ac} (vertippt)"
    );
    let rx_forwards = |jobs: &[Job]| -> Vec<Value> {
        jobs.iter()
            .filter_map(|j| match j {
                Job::Forward { payload, .. } if payload["type"] == "prescription.received" => {
                    Some(payload.clone())
                }
                _ => None,
            })
            .collect()
    };
    for (extra, with_tokens) in [
        (FORWARD.to_owned(), false),
        (format!("{FORWARD}\nforward_prescriptions = true"), true),
    ] {
        let s = setup(&extra);
        route(&s, text("wamid.RX1", NOW - 60, &body)).await;
        route(&s, text("wamid.RX1", NOW - 60, &body)).await;
        let c = s
            .store
            .list_conversations(&s.tenant, &PageRequest::first(1), NOW)
            .await
            .unwrap()
            .items
            .remove(0)
            .contact_id;
        let messages = |at: i64| {
            let (s, c) = (&s, &c);
            async move {
                let mut items = s
                    .store
                    .list_messages(&s.tenant, c, &PageRequest::first(5), at)
                    .await
                    .unwrap()
                    .items;
                relay_core::prescriptions::attach(s.store.as_ref(), (&s.tenant, c), &mut items, at)
                    .await
                    .unwrap();
                items
            }
        };
        let m = messages(NOW).await.remove(0);
        assert_eq!(
            m.content["prescriptions"],
            json!([{"task_id": "160.123.456.789.123.58", "access_code": ac}]),
            "the valid token only"
        );
        assert!(
            m.text.as_deref().is_some_and(|t| t.contains(ac)),
            "the text itself stays as the customer wrote it"
        );
        let jobs = s.take_jobs().await;
        let rx = rx_forwards(&jobs);
        assert_eq!(
            rx.len(),
            2,
            "one per delivery, the same webhook id: {jobs:?}"
        );
        assert_eq!(rx[0]["data"]["count"], 1);
        assert_eq!(rx[0].to_string().contains(ac), with_tokens, "{extra}");

        // The same token in a later message is not a new prescription.
        route(&s, text("wamid.RX3", NOW - 30, &format!("nochmal {body}"))).await;
        assert!(rx_forwards(&s.take_jobs().await).is_empty());
        let newest = messages(NOW).await.remove(0);
        assert!(newest.content.get("prescriptions").is_none(), "{newest:?}");

        // Kept 7 days by default; the message stays for the tenant's retention.
        let later = NOW + 8 * 86_400;
        let all = messages(later).await;
        assert_eq!(all.len(), 2, "the messages are still there");
        assert!(all.iter().all(|m| m.content.get("prescriptions").is_none()));
    }
    // Plain text has none.
    let s = setup("");
    route(&s, text("wamid.RX2", NOW - 60, "Ist mein Rezept fertig?")).await;
    let c = s
        .store
        .list_conversations(&s.tenant, &PageRequest::first(1), NOW)
        .await
        .unwrap()
        .items
        .remove(0)
        .contact_id;
    assert!(
        s.store
            .prescriptions(&s.tenant, &c, NOW)
            .await
            .unwrap()
            .is_empty()
    );
}
