//! SIP transports (RFC 3261 section 18; RFC 7118 for WebSocket) and what the rest of the
//! crate needs to know about one: its Via token, its `transport=` URI parameter, its
//! default port, and whether it is reliable.
//!
//! Every reliable transport here is also connection-oriented, and that is all the
//! transaction layer and the core look at: no Timer A/E/G retransmissions and zero linger
//! timers (RFC 3261 sections 17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2), responses go back over
//! the connection the request came on (section 18.2.2), and a binding registered over a
//! connection is reached through it (RFC 5626 flows). A WebSocket connection (RFC 7118)
//! is therefore just another reliable transport: adding one means a variant and its
//! tokens here, and the daemon's listener and framing (one SIP message per WebSocket
//! message), nothing in the transaction layer or the core.

use std::net::SocketAddr;

pub use rtc_proto::ConnId;

/// SIP transports (RFC 3261 section 18, RFC 7118 for WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// Every transport, for parsing tokens.
    const ALL: [Transport; 5] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
    ];

    /// Reliable (and connection-oriented) transports run no retransmission timers and
    /// zero linger timers (sections 17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The token in a Via's sent-protocol (`SIP/2.0/UDP`; RFC 7118 section 5.1 adds `WS`
    /// and `WSS`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// Parses a Via transport token, or the value of a `transport=` URI parameter,
    /// case-insensitively (section 7.3.1: tokens are).
    pub fn from_via_token(s: &str) -> Option<Transport> {
        Transport::ALL
            .into_iter()
            .find(|t| t.via_token().eq_ignore_ascii_case(s))
    }

    /// The transport to reach a URI whose host is an address (RFC 3263 section 4.1 without
    /// DNS): its `transport=` parameter, where a `sips:` URI means TLS over TCP and secure
    /// WebSocket over `transport=ws` (RFC 7118 section 5.2 names only `ws` and lets the
    /// scheme tell WSS apart; `wss`, which Kamailio writes, is read too). No parameter, or
    /// one we do not speak (`sctp`), is UDP.
    pub fn for_uri(param: Option<&str>, secure: bool) -> Transport {
        match (param.and_then(Transport::from_via_token), secure) {
            (Some(Transport::Ws | Transport::Wss), true) => Transport::Wss,
            (_, true) => Transport::Tls,
            (Some(t), false) => t,
            (None, false) => Transport::Udp,
        }
    }

    /// The port of a URI without one: 5061 for the secure transports, 5060 otherwise
    /// (RFC 3261 section 19.1.2; RFC 3263 section 4.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls | Transport::Wss => 5061,
            Transport::Udp | Transport::Tcp | Transport::Ws => 5060,
        }
    }
}

/// Where a message came from or goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// The connection for TCP/TLS/WS; `None` for UDP, or for a request to a destination
    /// the daemon has no connection to yet (it opens one, or reuses one it has to that
    /// address; the transaction layer learns the connection from the first response that
    /// arrives on it).
    pub conn: Option<ConnId>,
}

/// Bytes for the daemon to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_tokens_round_trip() {
        for t in Transport::ALL {
            assert_eq!(Transport::from_via_token(t.via_token()), Some(t));
            assert_eq!(t.is_reliable(), t != Transport::Udp);
        }
        assert_eq!(Transport::from_via_token("tls"), Some(Transport::Tls));
        assert_eq!(Transport::from_via_token("wss"), Some(Transport::Wss));
        assert_eq!(Transport::from_via_token("SCTP"), None);
    }

    #[test]
    fn uri_transport_and_default_port() {
        let t = Transport::for_uri;
        assert_eq!(t(None, false), Transport::Udp);
        assert_eq!(t(Some("sctp"), false), Transport::Udp);
        assert_eq!(t(Some("TCP"), false), Transport::Tcp);
        assert_eq!(t(Some("tls"), false), Transport::Tls);
        assert_eq!(t(None, true), Transport::Tls);
        assert_eq!(t(Some("tcp"), true), Transport::Tls);
        assert_eq!(t(Some("ws"), false), Transport::Ws);
        assert_eq!(t(Some("wss"), false), Transport::Wss);
        assert_eq!(t(Some("ws"), true), Transport::Wss);
        assert_eq!(Transport::Udp.default_port(), 5060);
        assert_eq!(Transport::Ws.default_port(), 5060);
        assert_eq!(Transport::Tls.default_port(), 5061);
        assert_eq!(Transport::Wss.default_port(), 5061);
    }
}
