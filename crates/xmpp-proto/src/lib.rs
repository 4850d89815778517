//! Sans-IO XMPP (RFC 6120, RFC 6121 and the extensions clients expect): the streaming XML
//! parser, JIDs, SASL, and the server core of `xmppd`, with no socket, clock or random
//! number inside.
//!
//! Data flow: bytes (or RFC 7395 WebSocket messages) from a connection ->
//! [`xml::StreamParser`] (stream header, one [`element::Element`] per stanza, with size
//! and depth limits) -> [`server::Server`] (its core: stream negotiation, STARTTLS,
//! SASL, bind, routing, roster, presence; its modules, one per XEP family, hooked to the
//! core's events; its components, chat rooms) -> outputs polled by the daemon (bytes to
//! send, TLS upgrades, storage work), following the suite's `rtc_proto` contract.

#![forbid(unsafe_code)]

pub mod element;
pub mod jid;
pub mod sasl;
pub mod server;
pub mod xml;
