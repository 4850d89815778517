//! Sans-IO STUN (RFC 8489) and TURN (RFC 8656) for `turnd`.
//!
//! Data flows one way through this crate: the daemon hands over bytes it received
//! together with the current time, the core decides, and the daemon carries out what it
//! was told (send these bytes, relay this payload, bind a relay socket, look up a key) and
//! hands the answers back as input. The server follows the suite's core contract,
//! [`rtc_proto::ProtocolCore`]; [`server`] documents its polling order. Nothing in here
//! opens a socket, reads a clock or draws a random number, so every behaviour is testable
//! with virtual time.
//!
//! - [`message`]: STUN message parsing and building, integrity and fingerprint.
//! - [`attr`]: attribute type codes.
//! - [`channel`]: ChannelData framing.
//! - [`auth`]: nonces and long-term credential key derivation.
//! - [`peer_policy`]: which peers a relay may reach.
//! - [`server`]: the TURN server state machine.
#![forbid(unsafe_code)]

pub mod attr;
pub mod auth;
pub mod channel;
pub mod message;
pub mod peer_policy;
pub mod server;

pub use message::{Class, IntegrityKind, Message, MessageBuilder, ParseError};
pub use server::{
    BindId, BoundRelay, ClientAction, ClientTuple, ConnectionId, Family, KeyLookup, Limits, Output,
    PeerAction, PortRequest, ProtocolCore, RelayBindError, RelayId, Server, ServerConfig,
    ServerShared, Stats, Transmit, Transport,
};
