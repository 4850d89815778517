//! STUN message framing (RFC 8489 §5, §14): parse a datagram into a borrowed [`Message`]
//! view without allocating, and build messages with [`MessageBuilder`].
//!
//! Parsing validates the fixed header and walks the TLV attributes once, remembering where
//! each one is. Integrity attributes are recorded with their offsets so that
//! [`Message::verify_integrity`] can hash the exact prefix RFC 8489 §14.5/§14.6 describe,
//! with the length field rewritten, without copying the message.

use crate::attr;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// RFC 8489 §5: fixed value in every STUN header; distinguishes STUN from RFC 3489 and
/// from ChannelData.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN header (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;
/// RFC 8489 §14.7: the CRC is XORed with this so FINGERPRINT differs from other CRCs.
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Upper bound on attributes we index in one message. Real clients send fewer than 20; a
/// message with more is refused with 400 rather than growing memory per packet.
pub const MAX_ATTRIBUTES: usize = 48;

/// The class bits of a message type (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// STUN/TURN methods this server knows (RFC 8489 §18.2, RFC 8656 §17, RFC 6062 §6.1).
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
    pub const CONNECT: u16 = 0x00A;
    pub const CONNECTION_BIND: u16 = 0x00B;
    pub const CONNECTION_ATTEMPT: u16 = 0x00C;
}

/// Why a buffer is not a STUN message we accept. These are never answered on the wire
/// (RFC 8489 §6.3: a malformed message is silently discarded); the daemon counts them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("leading bits are not 00")]
    NotStun,
    #[error("magic cookie missing")]
    BadCookie,
    #[error("length field {0} does not match the datagram")]
    BadLength(usize),
    #[error("attribute runs past the end of the message")]
    TruncatedAttribute,
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    #[error("FINGERPRINT is not the last attribute or does not match")]
    BadFingerprint,
}

/// One attribute's location inside the message buffer.
#[derive(Debug, Clone, Copy, Default)]
struct AttrSlot {
    typ: u16,
    /// Offset of the attribute value (after the 4-byte TLV header). u32, not u16: a
    /// message may be 20 + 65532 bytes long (RFC 8489 §5), so a value can start past 65535.
    start: u32,
    len: u16,
}

/// A parsed, borrowed view of a STUN message.
#[derive(Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    method: u16,
    class: Class,
    attrs: [AttrSlot; MAX_ATTRIBUTES],
    n_attrs: usize,
    /// Offset of the MESSAGE-INTEGRITY attribute header, if present.
    integrity: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header, if present.
    integrity_sha256: Option<usize>,
    has_fingerprint: bool,
}

/// Which integrity attribute a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityKind {
    Sha1,
    Sha256,
}

fn decode_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = match ((t >> 7) & 0x2) | ((t >> 4) & 0x1) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

fn encode_type(method: u16, class: Class) -> u16 {
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 1) << 4)
        | ((c & 2) << 7)
}

/// True if the buffer starts like a STUN message (RFC 7983 demultiplexing: first byte
/// 0..=3 and the magic cookie present).
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] < 4
        && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == MAGIC_COOKIE
}

/// For stream transports: the total length of the STUN message at the start of `buf`, if
/// the header is complete (RFC 8489 §6.2.2: the length field frames messages on TCP).
pub fn stun_frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    Some(HEADER_LEN + u16::from_be_bytes([buf[2], buf[3]]) as usize)
}

impl<'a> Message<'a> {
    /// Parses a whole STUN message. `buf` must be exactly one message.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort);
        }
        if buf[0] & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        if u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) != MAGIC_COOKIE {
            return Err(ParseError::BadCookie);
        }
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if len % 4 != 0 || len + HEADER_LEN != buf.len() {
            return Err(ParseError::BadLength(len));
        }
        let (method, class) = decode_type(u16::from_be_bytes([buf[0], buf[1]]));
        let mut msg = Message {
            buf,
            method,
            class,
            attrs: [AttrSlot::default(); MAX_ATTRIBUTES],
            n_attrs: 0,
            integrity: None,
            integrity_sha256: None,
            has_fingerprint: false,
        };
        let mut off = HEADER_LEN;
        while off < buf.len() {
            if msg.has_fingerprint {
                // RFC 8489 §14.7: FINGERPRINT must be last.
                return Err(ParseError::BadFingerprint);
            }
            if off + 4 > buf.len() {
                return Err(ParseError::TruncatedAttribute);
            }
            let typ = u16::from_be_bytes([buf[off], buf[off + 1]]);
            let alen = u16::from_be_bytes([buf[off + 2], buf[off + 3]]) as usize;
            let start = off + 4;
            let padded = (alen + 3) & !3;
            if start + padded > buf.len() {
                return Err(ParseError::TruncatedAttribute);
            }
            // RFC 8489 §14.5/§14.6: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and
            // FINGERPRINT count; after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT. Everything
            // else is ignored (not indexed), so it can neither be trusted nor fail the request.
            let after_integrity = msg.integrity_sha256.is_some()
                || (msg.integrity.is_some() && typ != attr::MESSAGE_INTEGRITY_SHA256);
            match typ {
                attr::FINGERPRINT => {
                    if alen != 4 {
                        return Err(ParseError::BadFingerprint);
                    }
                    let want = u32::from_be_bytes([
                        buf[start],
                        buf[start + 1],
                        buf[start + 2],
                        buf[start + 3],
                    ]);
                    if fingerprint(buf, off) != want {
                        return Err(ParseError::BadFingerprint);
                    }
                    msg.has_fingerprint = true;
                }
                attr::MESSAGE_INTEGRITY if msg.integrity.is_none() && !after_integrity => {
                    msg.integrity = Some(off)
                }
                attr::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    msg.integrity_sha256 = Some(off)
                }
                _ if after_integrity => {}
                _ => {
                    if msg.n_attrs == MAX_ATTRIBUTES {
                        return Err(ParseError::TooManyAttributes);
                    }
                    msg.attrs[msg.n_attrs] = AttrSlot {
                        typ,
                        start: start as u32,
                        len: alen as u16,
                    };
                    msg.n_attrs += 1;
                }
            }
            off = start + padded;
        }
        Ok(msg)
    }

    pub fn method(&self) -> u16 {
        self.method
    }
    pub fn class(&self) -> Class {
        self.class
    }
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut t = [0u8; 12];
        t.copy_from_slice(&self.buf[8..20]);
        t
    }
    /// The raw bytes of the message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    pub fn has_fingerprint(&self) -> bool {
        self.has_fingerprint
    }
    /// The integrity attribute the message carries; SHA-256 is preferred when both are
    /// present (RFC 8489 §9.2.4).
    pub fn integrity(&self) -> Option<IntegrityKind> {
        if self.integrity_sha256.is_some() {
            Some(IntegrityKind::Sha256)
        } else if self.integrity.is_some() {
            Some(IntegrityKind::Sha1)
        } else {
            None
        }
    }

    /// Value of the first attribute of type `typ` (the first occurrence wins, as RFC 8489
    /// §14 says for duplicates).
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.iter().find(|(t, _)| *t == typ).map(|(_, v)| v)
    }

    /// All indexed attributes in order, as (type, value).
    pub fn iter(&self) -> impl Iterator<Item = (u16, &'a [u8])> + '_ {
        let buf = self.buf;
        self.attrs[..self.n_attrs].iter().map(move |a| {
            (
                a.typ,
                &buf[a.start as usize..a.start as usize + a.len as usize],
            )
        })
    }

    /// Comprehension-required attributes (type < 0x8000, RFC 8489 §14) that `known` does
    /// not accept; the server answers 420 listing them.
    pub fn unknown_required(&self, known: impl Fn(u16) -> bool) -> Vec<u16> {
        let mut out: Vec<u16> = Vec::new();
        for (t, _) in self.iter() {
            if t < 0x8000 && !known(t) && !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// A string attribute (USERNAME, REALM, NONCE, SOFTWARE) as UTF-8.
    pub fn get_str(&self, typ: u16) -> Option<&'a str> {
        self.get(typ).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// XOR-MAPPED-ADDRESS style attribute (RFC 8489 §14.2), all occurrences.
    pub fn xor_addresses(&self, typ: u16) -> impl Iterator<Item = Option<SocketAddr>> + '_ {
        let tid = self.transaction_id();
        self.iter()
            .filter(move |(t, _)| *t == typ)
            .map(move |(_, v)| decode_xor_address(v, &tid))
    }

    pub fn get_u32(&self, typ: u16) -> Option<u32> {
        self.get(typ)
            .filter(|v| v.len() == 4)
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) or MESSAGE-INTEGRITY-SHA256 with `key`
    /// (RFC 8489 §14.5, §14.6): the HMAC covers the message up to the integrity attribute,
    /// with the header length rewritten to end just after it. Comparison is constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let (off, kind) = match (self.integrity_sha256, self.integrity) {
            (Some(o), _) => (o, IntegrityKind::Sha256),
            (None, Some(o)) => (o, IntegrityKind::Sha1),
            (None, None) => return false,
        };
        let vlen = u16::from_be_bytes([self.buf[off + 2], self.buf[off + 3]]) as usize;
        let value = &self.buf[off + 4..off + 4 + vlen];
        let computed = integrity_over(self.buf, off, kind, vlen, key);
        // RFC 8489 §14.6: a truncated SHA-256 HMAC of at least 16 bytes is allowed.
        match kind {
            IntegrityKind::Sha1 if vlen == 20 => rtc_auth::ct_eq(&computed[..20], value),
            IntegrityKind::Sha256 if (16..=32).contains(&vlen) && vlen % 4 == 0 => {
                rtc_auth::ct_eq(&computed[..vlen], value)
            }
            _ => false,
        }
    }
}

/// HMAC over `buf[..off]` with the header length set to cover the integrity attribute.
fn integrity_over(buf: &[u8], off: usize, kind: IntegrityKind, vlen: usize, key: &[u8]) -> Vec<u8> {
    let new_len = ((off + 4 + vlen - HEADER_LEN) as u16).to_be_bytes();
    match kind {
        IntegrityKind::Sha1 => {
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("any key length");
            mac.update(&buf[0..2]);
            mac.update(&new_len);
            mac.update(&buf[4..off]);
            mac.finalize().into_bytes().to_vec()
        }
        IntegrityKind::Sha256 => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
            mac.update(&buf[0..2]);
            mac.update(&new_len);
            mac.update(&buf[4..off]);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

/// CRC-32 of `buf[..off]` with the length rewritten to include an 8-byte FINGERPRINT at `off`.
fn fingerprint(buf: &[u8], off: usize) -> u32 {
    let new_len = ((off + 8 - HEADER_LEN) as u16).to_be_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[0..2]);
    h.update(&new_len);
    h.update(&buf[4..off]);
    h.finalize() ^ FINGERPRINT_XOR
}

/// Decodes an XOR-*-ADDRESS value (RFC 8489 §14.2).
pub fn decode_xor_address(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match v[1] {
        0x01 if v.len() == 8 => {
            let x = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC_COOKIE;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(x)), port))
        }
        0x02 if v.len() == 20 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            key[4..].copy_from_slice(tid);
            let mut a = [0u8; 16];
            for i in 0..16 {
                a[i] = v[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

/// Decodes a plain (non-XOR) address attribute such as MAPPED-ADDRESS (RFC 8489 §14.1).
pub fn decode_address(v: &[u8]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]);
    match v[1] {
        0x01 if v.len() == 8 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(v[4], v[5], v[6], v[7])),
            port,
        )),
        0x02 if v.len() == 20 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&v[4..20]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

/// Writes a STUN message into a `Vec<u8>` attribute by attribute.
#[derive(Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    tid: [u8; 12],
}

impl MessageBuilder {
    pub fn new(method: u16, class: Class, tid: [u8; 12]) -> MessageBuilder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&encode_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        MessageBuilder { buf, tid }
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends a raw attribute with padding (RFC 8489 §14: values are padded to 4 bytes).
    pub fn attr(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self.set_len();
        self
    }

    pub fn u32_attr(&mut self, typ: u16, v: u32) -> &mut Self {
        self.attr(typ, &v.to_be_bytes())
    }

    /// XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS (RFC 8489 §14.2).
    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut v = Vec::with_capacity(20);
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.extend_from_slice(&[0, 1]);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            }
            IpAddr::V6(ip) => {
                v.extend_from_slice(&[0, 2]);
                v.extend_from_slice(&port.to_be_bytes());
                let mut key = [0u8; 16];
                key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                key[4..].copy_from_slice(&self.tid);
                for (o, k) in ip.octets().iter().zip(key.iter()) {
                    v.push(o ^ k);
                }
            }
        }
        self.attr(typ, &v)
    }

    /// Plain address attribute: MAPPED-ADDRESS, OTHER-ADDRESS, RESPONSE-ORIGIN (RFC 8489
    /// §14.1, RFC 5780 §7).
    pub fn address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        let mut v = Vec::with_capacity(20);
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.extend_from_slice(&[0, 1]);
                v.extend_from_slice(&addr.port().to_be_bytes());
                v.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                v.extend_from_slice(&[0, 2]);
                v.extend_from_slice(&addr.port().to_be_bytes());
                v.extend_from_slice(&ip.octets());
            }
        }
        self.attr(typ, &v)
    }

    /// ERROR-CODE (RFC 8489 §14.8).
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    /// Appends MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 computed with `key`.
    pub fn integrity(&mut self, kind: IntegrityKind, key: &[u8]) -> &mut Self {
        let (typ, vlen) = match kind {
            IntegrityKind::Sha1 => (attr::MESSAGE_INTEGRITY, 20),
            IntegrityKind::Sha256 => (attr::MESSAGE_INTEGRITY_SHA256, 32),
        };
        let off = self.buf.len();
        let mac = integrity_over(&self.buf, off, kind, vlen, key);
        self.attr(typ, &mac[..vlen])
    }

    /// Appends FINGERPRINT (RFC 8489 §14.7); must be the last attribute.
    pub fn fingerprint(&mut self) -> &mut Self {
        let off = self.buf.len();
        let crc = fingerprint(&self.buf, off);
        self.attr(attr::FINGERPRINT, &crc.to_be_bytes())
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_encoding_round_trips() {
        for m in [1u16, 3, 4, 6, 7, 8, 9, 0xA, 0xB, 0xC, 0xFFF] {
            for c in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                assert_eq!(decode_type(encode_type(m, c)), (m, c));
            }
        }
        assert_eq!(encode_type(method::BINDING, Class::Success), 0x0101);
        assert_eq!(encode_type(method::ALLOCATE, Class::Error), 0x0113);
        assert_eq!(encode_type(method::DATA, Class::Indication), 0x0017);
    }

    #[test]
    fn builder_output_parses_and_verifies() {
        let tid = [7u8; 12];
        let mut b = MessageBuilder::new(method::ALLOCATE, Class::Request, tid);
        b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
        b.attr(attr::USERNAME, b"alice");
        b.xor_address(
            attr::XOR_PEER_ADDRESS,
            "[2001:db8::1]:4000".parse().unwrap(),
        );
        b.integrity(IntegrityKind::Sha1, b"key");
        b.integrity(IntegrityKind::Sha256, b"key");
        b.fingerprint();
        let bytes = b.finish();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.method(), method::ALLOCATE);
        assert_eq!(m.class(), Class::Request);
        assert_eq!(m.get_str(attr::USERNAME), Some("alice"));
        assert_eq!(
            m.xor_addresses(attr::XOR_PEER_ADDRESS).next().unwrap(),
            Some("[2001:db8::1]:4000".parse().unwrap())
        );
        assert!(m.has_fingerprint());
        assert_eq!(m.integrity(), Some(IntegrityKind::Sha256));
        assert!(m.verify_integrity(b"key"));
        assert!(!m.verify_integrity(b"other"));
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut b = MessageBuilder::new(method::BINDING, Class::Request, [1; 12]);
        b.attr(attr::USERNAME, b"bob");
        b.integrity(IntegrityKind::Sha1, b"k");
        b.attr(0x0031, b"evil"); // comprehension-required, unknown, after MI
        let bytes = b.finish();
        let m = Message::parse(&bytes).unwrap();
        assert!(m.get(0x0031).is_none());
        assert!(m.unknown_required(|_| false).contains(&attr::USERNAME));
        assert!(!m.unknown_required(|_| false).contains(&0x0031));
    }

    #[test]
    fn malformed_inputs_are_refused() {
        assert_eq!(Message::parse(&[0; 10]).unwrap_err(), ParseError::TooShort);
        let mut b = MessageBuilder::new(method::BINDING, Class::Request, [1; 12]);
        b.attr(attr::SOFTWARE, b"abc");
        let good = b.finish();
        let mut bad = good.clone();
        bad[4] ^= 1;
        assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::BadCookie);
        assert!(matches!(
            Message::parse(&good[..good.len() - 4]),
            Err(ParseError::BadLength(_))
        ));
        let mut bad = good.clone();
        bad[22] = 0xFF; // attribute length far beyond the end
        assert_eq!(
            Message::parse(&bad).unwrap_err(),
            ParseError::TruncatedAttribute
        );
        let mut b = MessageBuilder::new(method::BINDING, Class::Request, [1; 12]);
        b.fingerprint();
        let mut bad = b.finish();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(
            Message::parse(&bad).unwrap_err(),
            ParseError::BadFingerprint
        );
    }

    #[test]
    fn attribute_values_past_64k_are_found_where_they_are() {
        // PADDING pushes the next attribute header to offset 65532: its value starts at
        // 65536, which does not fit in 16 bits.
        let mut b = MessageBuilder::new(method::BINDING, Class::Request, [1; 12]);
        b.attr(attr::PADDING, &vec![0; 65532 - HEADER_LEN - 4]);
        b.attr(attr::SOFTWARE, b"abcd");
        let bytes = b.finish();
        assert_eq!(bytes.len(), 65540);
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.get(attr::SOFTWARE), Some(&b"abcd"[..]));
    }

    #[test]
    fn too_many_attributes_is_an_error_not_growth() {
        let mut b = MessageBuilder::new(method::BINDING, Class::Request, [1; 12]);
        for _ in 0..=MAX_ATTRIBUTES {
            b.attr(attr::SOFTWARE, b"x");
        }
        assert_eq!(
            Message::parse(&b.finish()).unwrap_err(),
            ParseError::TooManyAttributes
        );
    }
}
