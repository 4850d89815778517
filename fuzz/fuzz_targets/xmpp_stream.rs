//! XMPP XML streams: arbitrary bytes fed to `StreamParser` whole and in pieces of sizes
//! the first byte picks (with default or small limits), asserting the same events and
//! error either way and bounded memory; every element produced is serialized (`write_to`
//! and `write_in_stream`) and must parse back to itself. The calls live in
//! `crates/xmpp-proto/tests/common/stream.rs`, shared with the stable CI guard
//! `crates/xmpp-proto/tests/fuzz_smoke.rs` and the verdict table `tests/xml_stream.rs`.
#![no_main]

#[path = "../../crates/xmpp-proto/tests/common/stream.rs"]
#[allow(dead_code)]
mod stream;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    stream::drive(data);
});
