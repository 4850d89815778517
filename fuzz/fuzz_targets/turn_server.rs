//! The TURN server core (long-term credentials on, `no_auth` off) fed arbitrary bytes as a
//! client packet and as a peer packet, after a real client set up an allocation with a
//! permission and a channel so relaying paths are reachable. Shared with
//! `crates/stun-proto/tests/fuzz_smoke.rs` through `tests/common/decode.rs`.
#![no_main]

#[path = "../../crates/stun-proto/tests/common/decode.rs"]
#[allow(dead_code)]
mod decode;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A fresh server per input keeps every run reproducible from its input alone.
    let mut driver = decode::Driver::new();
    driver.feed(data);
});
