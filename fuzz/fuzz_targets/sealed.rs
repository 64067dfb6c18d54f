//! Opening sealed values and files from arbitrary bytes: never panics, never opens a forgery.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::crypto::Keyring;
use relay_core::ids::TenantId;
use relay_core::media::{FileOpener, SliceReader};

fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::in_memory(relay_core::Clock::system());
    let tenant = TenantId::parse("fuzz").unwrap();
    // A real key exists, so forged values reach the cipher, not just the lookup.
    let sealer = ready(keys.sealer(&tenant, "c_1", None)).unwrap();
    let genuine = sealer.seal_str("message.text", "x");
    if let Ok(s) = std::str::from_utf8(data) {
        assert!(s == genuine || ready(keys.open(&tenant, "message.text", s)).is_err());
    }
    let mut reader = SliceReader::new(data.to_vec());
    if let Ok(mut opener) = ready(FileOpener::new(&keys, &tenant, "md_x", data.len() as u64, &mut reader)) {
        while let Ok(Some(_)) = ready(opener.next(&mut reader)) {}
    }
});
