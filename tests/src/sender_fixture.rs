//! A reply-sender wired to a SQLite store and a fake 360dialog (plus a fake forward endpoint),
//! with one customer who has just written: shared by the sender tests and the send benchmark.

use crate::fake::Fake;
use relay_core::config::RelayConfig;
use relay_core::directory::StaticDirectory;
use relay_core::ids::{ContactId, Pseudonymizer, TenantId};
use relay_core::jobs::Job;
use relay_core::outbound::{ValidReply, queued_message};
use relay_core::ports::store_roles::*;
use relay_core::ports::{JobControl, QueueError};
use relay_core::routing::Router;
use relay_embedded::{Database, SqliteMessageStore};
use reply_sender::{ChannelLimiter, RetryPolicy, Sender};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Records what the handler asks of the queue.
#[derive(Default)]
pub struct Control {
    pub retries: Mutex<Vec<Duration>>,
    pub dead: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl JobControl for Control {
    async fn retry_after(&self, _receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.retries.lock().expect("fixture").push(delay);
        Ok(())
    }
    async fn dead_letter(&self, body: &str) -> Result<(), QueueError> {
        self.dead.lock().expect("fixture").push(body.to_owned());
        Ok(())
    }
}

pub struct Setup {
    pub sender: Sender,
    pub store: Arc<relay_core::sealed::SealedStore>,
    pub control: Arc<Control>,
    pub fake: Fake,
    pub forward: Fake,
    pub tenant: TenantId,
    pub contact: ContactId,
    pub now: i64,
    pub router: Router,
    pub blobs: relay_core::media::MemoryBlobStore,
    pub pseudo: Arc<Pseudonymizer>,
}

pub async fn setup() -> Setup {
    setup_with_rate(1000).await
}

pub async fn setup_with_rate(rate: u32) -> Setup {
    let fake = Fake::start().await;
    let forward = Fake::start().await;
    let config = format!(
        r#"
[[tenants]]
id = "apotheke-a"
name = "A"
forward_url = "{}/hooks/whatsapp"
forward_secret = "{SECRET}"
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "tok"
api_key = "d360-test-key"
api_base_url = "{}"
send_rate_per_second = {}
"#,
        forward.url, fake.url, rate
    );
    let config = RelayConfig::parse(&config, &|_| None).expect("fixture");
    let directory = Arc::new(StaticDirectory::from_config(&config));
    let keys = Arc::new(relay_core::crypto::Keyring::in_memory(
        relay_core::Clock::system(),
    ));
    let blobs = relay_core::media::MemoryBlobStore::default();
    let store = Arc::new(relay_core::sealed::SealedStore::new(
        Arc::new(SqliteMessageStore::new(Database::in_memory(
            relay_core::Clock::system(),
        ))),
        keys.clone(),
    ));
    let pseudo = Arc::new(Pseudonymizer::new([5; 32]));
    let now = relay_core::Clock::system().now();
    // A customer writes (so the contact, its channel and the window exist).
    let hook = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Erika"},"wa_id":"4915112345678"}],
        "messages":[{"from":"4915112345678","id":"wamid.IN1","timestamp":now.to_string(),"type":"text","text":{"body":"Hallo"}}]}}]}]});
    let router = Router::new(
        store.clone(),
        directory.clone(),
        pseudo.clone(),
        keys.clone(),
    );
    router
        .route(
            &relay_core::envelope::envelopes("111", 0, hook, 1 << 20, None)
                .expect("fixture")
                .remove(0),
        )
        .await
        .expect("fixture");
    let tenant = TenantId::parse("apotheke-a").expect("fixture");
    let contact = store
        .list_conversations(&tenant, &relay_core::records::PageRequest::first(1), now)
        .await
        .expect("fixture")
        .items[0]
        .contact_id
        .clone();
    let control = Arc::new(Control::default());
    let sender = Sender {
        store: store.clone(),
        directory,
        control: control.clone(),
        pseudonymizer: pseudo.clone(),
        keys,
        blobs: Arc::new(blobs.clone()),
        max_media_bytes: 1 << 20,
        outbound: None,
        scan_limits: relay_scan::Limits::default(),
        whatsapp: relay_whatsapp::WhatsAppClient::new(Duration::from_millis(500)),
        http: reqwest::Client::new(),
        limiter: ChannelLimiter::default(),
        policy: RetryPolicy {
            send_attempts: 3,
            ..RetryPolicy::default()
        },
        clock: relay_core::Clock::system(),
        concurrency: 1,
    };
    Setup {
        sender,
        store,
        control,
        fake,
        forward,
        tenant,
        contact,
        now,
        router,
        blobs,
        pseudo,
    }
}

impl Setup {
    /// The customer sends an image (WhatsApp media id `media_id`, announced hash `sha256`);
    /// returns the fetch job the router would queue.
    pub async fn inbound_image(&self, wamid: &str, media_id: &str, sha256: &str) -> Job {
        let hook = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
            "metadata":{"phone_number_id":"111"},"contacts":[{"profile":{"name":"Erika"},"wa_id":"4915112345678"}],
            "messages":[{"from":"4915112345678","id":wamid,"timestamp":self.now.to_string(),"type":"image",
              "image":{"id":media_id,"mime_type":"image/jpeg","sha256":sha256,"caption":"Mein Rezept"}}]}}]}]});
        self.router
            .route(
                &relay_core::envelope::envelopes("111", 0, hook, 1 << 20, None)
                    .expect("fixture")
                    .remove(0),
            )
            .await
            .expect("fixture");
        Job::FetchMedia {
            tenant: self.tenant.clone(),
            contact: self.contact.clone(),
            message_key: self.pseudo.wamid_key(&self.tenant, wamid),
        }
    }

    /// The stored message of an inbound wamid (opened).
    pub async fn inbound(&self, wamid: &str) -> relay_core::records::StoredMessage {
        self.store
            .message_by_wamid(
                &self.tenant,
                &self.pseudo.wamid_key(&self.tenant, wamid),
                self.now,
            )
            .await
            .expect("store")
            .expect("the message is stored")
    }

    pub async fn queue_text(&self, key: &str, text: &str) -> Job {
        let m = queued_message(
            key,
            &self.contact,
            &ValidReply::text(text),
            Some("wamid.IN1".into()),
            self.now,
            self.now + 86_400,
        );
        self.store
            .create_outbound(&self.tenant, &m, None)
            .await
            .expect("fixture");
        Job::Send {
            tenant: self.tenant.clone(),
            contact: self.contact.clone(),
            message_key: key.to_owned(),
            consent_reply: false,
        }
    }

    pub async fn message(&self, key: &str) -> relay_core::records::StoredMessage {
        self.store
            .message_by_wamid(&self.tenant, key, self.now)
            .await
            .expect("fixture")
            .expect("fixture")
    }
}
