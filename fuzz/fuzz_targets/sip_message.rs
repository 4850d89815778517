//! SIP message decoding: `Message::parse` on the input as a datagram and `frame` on it as
//! a stream; for what parses, every accessor, encode -> parse round trips, responses and
//! proxy edits; for what does not, `error_response`. The calls live in
//! `crates/sip-proto/tests/common/decode.rs`, shared with the stable CI guard
//! `crates/sip-proto/tests/fuzz_smoke.rs`.
#![no_main]

#[path = "../../crates/sip-proto/tests/common/decode.rs"]
#[allow(dead_code)]
mod decode;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    decode::decode_all(data);
});
