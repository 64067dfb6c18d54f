//! The webhook parser on arbitrary bytes: never panics; whatever parses, validates the same
//! way in place, and cutting it per customer loses no event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::envelope::pieces_by_owner;
use relay_core::webhook::{parse_webhook, validate_webhook, webhook_from_value};

fuzz_target!(|data: &[u8]| {
    let parsed = parse_webhook(data);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        assert!(parsed.is_err());
        return;
    };
    assert_eq!(validate_webhook(&value).is_ok(), parsed.is_ok());
    if let Ok(webhook) = parsed {
        let events = webhook.events();
        let mut pieces = 0;
        for (_, piece) in pieces_by_owner(value) {
            pieces += webhook_from_value(piece).map(|w| w.events().len()).unwrap_or(0);
        }
        assert_eq!(pieces, events.len());
    }
});
