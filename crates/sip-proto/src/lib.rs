//! Sans-IO SIP (RFC 3261): the wire format, the transaction layer and the registrar and
//! proxy logic of `sipd`, with no socket, clock or random number inside.
//!
//! Data flow: bytes from a socket -> [`message::Message::parse`] (or
//! [`message::frame`] first on a stream transport) -> [`txn::TxnLayer`] absorbs
//! retransmissions and runs the RFC 3261 section 17 timers -> the proxy/registrar core
//! decides (challenge, store a binding, fork to contacts) -> transmits and storage orders
//! are polled by the daemon, which carries them out and feeds results back with `now`.
//!
//! [`core::Core`] follows the suite's core contract ([`rtc_proto::ProtocolCore`]):
//! `handle_*` inputs, `poll_output`, `poll_timeout`/`handle_timeout`, and calendar time
//! from a wall clock set with `set_wall_clock`. What a transport is (UDP, TCP, TLS,
//! WebSocket) is decided in [`transport`] alone.

#![forbid(unsafe_code)]

pub mod core;
pub mod message;
mod parse;
pub mod pike;
pub mod transport;
pub mod txn;
pub mod uri;
