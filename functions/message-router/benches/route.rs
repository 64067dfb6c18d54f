//! The router's per-event work: parse the queued envelope, pseudonymise, resolve the contact
//! and store the message (SQLite in memory, so the figure is the relay's own cost, not a
//! network round trip to DynamoDB).

use criterion::{Criterion, criterion_group, criterion_main};
use relay_core::config::RelayConfig;
use relay_core::directory::StaticDirectory;
use relay_core::ids::Pseudonymizer;
use relay_core::routing::Router;
use relay_embedded::{Database, SqliteMessageStore};
use serde_json::json;
use std::sync::Arc;

const CONFIG: &str = r#"
[[tenants]]
id = "a"
name = "A"
[[tenants.channels]]
phone_number_id = "111"
provider = "360dialog"
webhook_token = "t"
"#;

fn text(i: u64) -> String {
    let w = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"49301","phone_number_id":"111"},
        "contacts":[{"profile":{"name":"Erika Mustermann"},"wa_id":format!("49151{}", i % 500)}],
        "messages":[{"from":format!("49151{}", i % 500),"id":format!("wamid.bench{i}"),"timestamp":(1_764_300_000 + i).to_string(),
                     "type":"text","text":{"body":"Guten Tag, ist mein Ibuprofen 400 schon da?"}}]}}]}]});
    relay_core::envelope::envelopes("111", 0, w, 1 << 20, None)
        .expect("fits")
        .remove(0)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let config = RelayConfig::parse(CONFIG, &|_| None).expect("config");
    // As in production: every personal field sealed under the contact's key.
    let keys = Arc::new(relay_core::crypto::Keyring::in_memory(
        relay_core::Clock::system(),
    ));
    let router = Router::new(
        Arc::new(relay_core::sealed::SealedStore::new(
            Arc::new(SqliteMessageStore::new(Database::in_memory(
                relay_core::Clock::system(),
            ))),
            keys.clone(),
        )),
        Arc::new(StaticDirectory::from_config(&config)),
        Arc::new(Pseudonymizer::new([3; 32])),
        keys,
    );
    let mut i = 0u64;
    c.bench_function("router/new text message (SQLite in memory)", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(router.route(&text(i))).expect("routed")
        })
    });
    let dup = text(0);
    rt.block_on(router.route(&dup)).expect("routed");
    c.bench_function("router/duplicate text message (SQLite in memory)", |b| {
        b.iter(|| rt.block_on(router.route(&dup)).expect("routed"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
