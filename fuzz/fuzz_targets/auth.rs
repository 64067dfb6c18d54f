//! Signature and token checks on arbitrary input: never panic, never accept a forgery made
//! without the secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::tenant::{bearer_token, sign_hub_signature, verify_hmac_hex};

fuzz_target!(|data: &[u8]| {
    // secret | header | body, split at the first two 0xff bytes.
    let mut parts = data.splitn(3, |b| *b == 0xff);
    let (secret, header, body) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let _ = bearer_token(header);
    let accepted = verify_hmac_hex(secret, body, header);
    let genuine = sign_hub_signature(secret, body);
    // The arbitrary header is accepted only if it is the genuine signature.
    if accepted {
        assert_eq!(header, genuine.as_bytes());
    }
    assert!(verify_hmac_hex(secret, body, genuine.as_bytes()));
});
