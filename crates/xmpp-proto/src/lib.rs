//! Sans-IO XMPP (RFC 6120, RFC 6121 and the extensions clients expect): the streaming XML
//! parser, JIDs, SASL, and the server core of `xmppd`, with no socket, clock or random
//! number inside.
//!
//! Data flow: bytes from a connection -> [`xml::StreamParser`] (stream header, one
//! [`element::Element`] per stanza, with size and depth limits) -> [`server::Server`]
//! (stream negotiation: STARTTLS, SASL, bind; then routing, roster, presence, storage
//! orders) -> outputs polled by the daemon (bytes to send, TLS upgrades, storage work).

#![forbid(unsafe_code)]

pub mod element;
pub mod jid;
pub mod sasl;
pub mod server;
pub mod xml;
