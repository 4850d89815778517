//! STUN message and ChannelData decoding: `Message::parse` and every accessor on what
//! parses, plus `channel::parse_channel_data`. The calls live in
//! `crates/stun-proto/tests/common/decode.rs`, shared with the stable CI guard
//! `tests/fuzz_smoke.rs`.
#![no_main]

#[path = "../../crates/stun-proto/tests/common/decode.rs"]
#[allow(dead_code)]
mod decode;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    decode::decode_all(data);
});
