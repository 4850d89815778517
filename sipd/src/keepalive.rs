//! STUN keep-alives on the SIP UDP port (RFC 5626 section 8, RFC 7983 demultiplexing).
//!
//! A UA behind NAT keeps its binding alive by sending STUN Binding requests to the port it
//! registered through; the answer also tells it its public address. This is transport
//! housekeeping, not SIP, so the shell answers it before the core sees anything: SIP text
//! never starts with the bytes 0x00 or 0x01 that open a STUN request or indication.

use std::net::SocketAddr;
use stun_proto::message::method;
use stun_proto::{attr, Class, Message, MessageBuilder};

/// What a datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram {
    /// Not STUN: for the SIP core.
    Sip,
    /// STUN, and this is the answer to send back (a Binding success response).
    StunReply(Vec<u8>),
    /// STUN that needs no answer (an indication, a response, another method): dropped.
    StunIgnored,
}

/// Classifies `data` received from `from` and builds the Binding response if it is a
/// Binding request: XOR-MAPPED-ADDRESS with the source address (RFC 8489 section 14.2),
/// FINGERPRINT so the UA can tell it from SIP on the same port (RFC 5626 section 8 asks
/// UAs to check it).
pub fn classify(data: &[u8], from: SocketAddr) -> Datagram {
    if !matches!(data.first(), Some(0x00 | 0x01)) {
        return Datagram::Sip;
    }
    let Ok(m) = Message::parse(data) else {
        // Starts like STUN but is not: let the core count it as malformed SIP.
        return Datagram::Sip;
    };
    if m.method() != method::BINDING || m.class() != Class::Request {
        return Datagram::StunIgnored;
    }
    let mut b = MessageBuilder::new(method::BINDING, Class::Success, m.transaction_id());
    b.xor_address(attr::XOR_MAPPED_ADDRESS, from);
    b.fingerprint();
    Datagram::StunReply(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_request_gets_xor_mapped_address() {
        let tid = [7u8; 12];
        let mut req = MessageBuilder::new(method::BINDING, Class::Request, tid);
        req.fingerprint();
        let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let Datagram::StunReply(resp) = classify(&req.finish(), from) else {
            panic!("no reply");
        };
        let m = Message::parse(&resp).unwrap();
        assert_eq!(m.class(), Class::Success);
        assert_eq!(m.method(), method::BINDING);
        assert_eq!(m.transaction_id(), tid);
        assert!(m.has_fingerprint());
        let mapped = m.xor_addresses(attr::XOR_MAPPED_ADDRESS).next().flatten();
        assert_eq!(mapped, Some(from));

        let v6: SocketAddr = "[2001:db8::7]:5060".parse().unwrap();
        let req = MessageBuilder::new(method::BINDING, Class::Request, tid).finish();
        let Datagram::StunReply(resp) = classify(&req, v6) else {
            panic!("no reply");
        };
        let m = Message::parse(&resp).unwrap();
        assert_eq!(
            m.xor_addresses(attr::XOR_MAPPED_ADDRESS).next().flatten(),
            Some(v6)
        );
    }

    #[test]
    fn sip_and_other_stun_are_told_apart() {
        let from: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        assert_eq!(
            classify(b"OPTIONS sip:a SIP/2.0\r\n\r\n", from),
            Datagram::Sip
        );
        assert_eq!(classify(b"", from), Datagram::Sip);
        assert_eq!(classify(&[0, 1, 0, 0], from), Datagram::Sip);
        let ind = MessageBuilder::new(method::BINDING, Class::Indication, [1; 12]).finish();
        assert_eq!(classify(&ind, from), Datagram::StunIgnored);
        let resp = MessageBuilder::new(method::BINDING, Class::Success, [1; 12]).finish();
        assert_eq!(classify(&resp, from), Datagram::StunIgnored);
    }
}
