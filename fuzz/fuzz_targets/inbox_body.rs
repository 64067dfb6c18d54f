//! The inbox API's JSON bodies and query parts on arbitrary input: replies parse and validate
//! without panicking; cursors decode or are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::outbound::ReplyRequest;
use relay_core::records::cursor;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = serde_json::from_slice::<ReplyRequest>(data) {
        if let Ok(valid) = reply.validate() {
            // What passes validation has a kind and an object WhatsApp takes.
            assert!(!valid.kind.is_empty());
            assert!(valid.object.is_object());
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        for n in 1..4 {
            if let Some(parts) = cursor::decode(s, n) {
                assert_eq!(parts.len(), n);
            }
        }
    }
});
