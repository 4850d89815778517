//! Decoding and server-driving code shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`,
//! built with cargo-fuzz) and the stable CI guard `tests/fuzz_smoke.rs`, so both exercise
//! exactly the same calls. Everything here must hold for *any* input: a panic, or a broken
//! invariant asserted below, is a bug.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_auth::turn::{key_md5, StoredKey};
use stun_proto::attr;
use stun_proto::auth::{negotiated_algorithm, NonceKey};
use stun_proto::channel::{
    channel_frame_len, is_channel_data, parse_channel_data, CHANNEL_HEADER_LEN, CHANNEL_MAX,
    CHANNEL_MIN,
};
use stun_proto::message::{
    decode_address, looks_like_stun, method, stun_frame_len, Class, IntegrityKind, Message,
    MessageBuilder,
};
use stun_proto::{
    BoundRelay, ClientAction, ClientTuple, Family, KeyLookup, Output, PortRequest, ProtocolCore,
    RelayBindError, RelayId, Server, ServerConfig, Transport,
};

/// The key `verify_integrity` is tried with.
pub const FUZZ_KEY: &[u8] = b"fuzz-key";
const USER: &str = "fuzz";
const PASSWORD: &str = "fuzz-pw";
const REALM: &str = "localhost";
/// A public peer (the default peer policy refuses documentation ranges).
pub const PEER: &str = "93.184.216.34:9000";
pub const CHANNEL: u16 = 0x4000;

/// Parses `data` as STUN and as ChannelData and calls every accessor on the result.
pub fn decode_all(data: &[u8]) {
    if let Ok(m) = Message::parse(data) {
        // A message that parses is one whole, framed STUN message. (`looks_like_stun` is
        // the narrower RFC 7983 demultiplexing test, first byte 0..=3, so no assertion.)
        assert!(data[0] < 0x40);
        black_box(looks_like_stun(data));
        assert_eq!(stun_frame_len(data), Some(data.len()));
        black_box((
            m.method(),
            m.class(),
            m.transaction_id(),
            m.has_fingerprint(),
        ));
        black_box(m.integrity());
        assert_eq!(m.as_bytes().len(), data.len());
        for (t, v) in m.iter() {
            // `get` returns the first occurrence, which is at or before this one.
            assert!(m.get(t).is_some());
            assert!(v.len() <= data.len());
            black_box(m.get_str(t));
            black_box(m.get_u32(t));
            black_box(decode_address(v));
        }
        for t in [
            attr::XOR_MAPPED_ADDRESS,
            attr::XOR_PEER_ADDRESS,
            attr::XOR_RELAYED_ADDRESS,
        ] {
            black_box(m.xor_addresses(t).collect::<Vec<_>>());
        }
        black_box(m.verify_integrity(FUZZ_KEY));
        let unknown = m.unknown_required(attr::is_known_required);
        assert!(unknown
            .iter()
            .all(|t| *t < 0x8000 && !attr::is_known_required(*t)));
        black_box(negotiated_algorithm(&m).is_ok());
    }
    if let Some((ch, payload)) = parse_channel_data(data) {
        assert!(is_channel_data(data));
        assert!((CHANNEL_MIN..=CHANNEL_MAX).contains(&ch));
        assert!(payload.len() + CHANNEL_HEADER_LEN <= data.len());
    }
    black_box(channel_frame_len(data));
}

/// Relay sockets and a user database for [`Driver`]: every user's password is `fuzz-pw`.
#[derive(Debug, Default)]
pub struct TrivialIo {
    next: u16,
}

impl TrivialIo {
    fn bind_relay(
        &mut self,
        family: Family,
        port: PortRequest,
    ) -> Result<BoundRelay, RelayBindError> {
        self.next = self.next.wrapping_add(1);
        let ip: IpAddr = match family {
            Family::V4 => "198.51.100.1".parse().unwrap(),
            Family::V6 => "2001:db8::1".parse().unwrap(),
        };
        let addr = match port {
            PortRequest::Reserved(addr) => addr,
            _ => SocketAddr::new(ip, 50_000u16.wrapping_add(self.next.wrapping_mul(2))),
        };
        Ok(BoundRelay {
            id: RelayId(u32::from(self.next)),
            addr,
        })
    }

    /// Answers the server's orders at once, as turnd does; the rest needs no answer.
    fn pump(&mut self, server: &mut Server, now: Instant) {
        while let Some(order) = server.poll_output() {
            match order {
                Output::BindRelay { id, family, port } => {
                    let r = self.bind_relay(family, port);
                    server.handle_relay_bound(now, id, r);
                }
                Output::BindTcpRelay { id, family } => {
                    let r = self.bind_relay(family, PortRequest::Any);
                    server.handle_relay_bound(now, id, r);
                }
                Output::LookupKey { realm, user } => {
                    let key = StoredKey::Md5(key_md5(&user, &realm, PASSWORD));
                    server.handle_key(now, &realm, &user, KeyLookup::Found(key));
                }
                Output::ReleaseRelay(_)
                | Output::ReleaseReservation(_)
                | Output::ConnectPeer { .. }
                | Output::Splice { .. }
                | Output::CloseConnection(_) => {}
            }
        }
    }
}

/// A server with one authenticated allocation (relay 1) that has a permission and a
/// channel for [`PEER`], so fuzzed input reaches the relaying paths and not only parsing.
pub struct Driver {
    pub server: Server,
    pub io: TrivialIo,
    pub client: ClientTuple,
    pub now: Instant,
    nonce: String,
    tid: u32,
}

impl Driver {
    pub fn new() -> Driver {
        let config = ServerConfig::default();
        let nonces = NonceKey::new([3; 32], 600);
        let mut server = Server::new(Arc::new(config), nonces, Arc::default(), 1);
        let now = Instant::now();
        server.set_wall_clock(now, Duration::from_secs(1_700_000_000));
        let mut d = Driver {
            server,
            io: TrivialIo::default(),
            client: ClientTuple {
                transport: Transport::Udp,
                local: "192.0.2.10:3478".parse().unwrap(),
                remote: "192.0.2.100:40000".parse().unwrap(),
            },
            now,
            nonce: String::new(),
            tid: 0,
        };
        let challenge = d.request(method::ALLOCATE, false);
        d.feed_client(&challenge);
        let r = d.server.poll_transmit().expect("401");
        let m = Message::parse(&r.data).expect("valid 401");
        d.nonce = m.get_str(attr::NONCE).expect("NONCE").to_string();
        for m in [
            method::ALLOCATE,
            method::CREATE_PERMISSION,
            method::CHANNEL_BIND,
        ] {
            let req = d.request(m, true);
            d.feed_client(&req);
            let r = d.server.poll_transmit().expect("a response");
            let resp = Message::parse(&r.data).expect("valid response");
            assert_eq!(resp.class(), Class::Success, "setup step {m:#x}");
        }
        assert_eq!(d.server.allocation_count(), 1);
        d
    }

    /// A request from the driver's client; `signed` adds the long-term credentials.
    /// Allocate, CreatePermission and ChannelBind carry what they need to succeed.
    pub fn request(&mut self, m: u16, signed: bool) -> Vec<u8> {
        self.tid += 1;
        let mut tid = [0x11; 12];
        tid[8..].copy_from_slice(&self.tid.to_be_bytes());
        let mut b = MessageBuilder::new(m, Class::Request, tid);
        match m {
            method::ALLOCATE => {
                b.u32_attr(attr::REQUESTED_TRANSPORT, 17 << 24);
                b.u32_attr(attr::LIFETIME, 3600);
            }
            method::CHANNEL_BIND => {
                b.u32_attr(attr::CHANNEL_NUMBER, u32::from(CHANNEL) << 16);
                b.xor_address(attr::XOR_PEER_ADDRESS, PEER.parse().unwrap());
            }
            _ => {
                b.xor_address(attr::XOR_PEER_ADDRESS, PEER.parse().unwrap());
            }
        }
        if signed {
            b.attr(attr::USERNAME, USER.as_bytes());
            b.attr(attr::REALM, REALM.as_bytes());
            b.attr(attr::NONCE, self.nonce.as_bytes());
            b.integrity(IntegrityKind::Sha1, &key_md5(USER, REALM, PASSWORD));
        }
        b.fingerprint();
        b.finish()
    }

    /// Valid messages to mutate: requests, a Send indication, a ChannelData frame.
    pub fn seeds(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for m in [
            method::ALLOCATE,
            method::REFRESH,
            method::CREATE_PERMISSION,
            method::CHANNEL_BIND,
        ] {
            let signed = self.request(m, true);
            // Without FINGERPRINT too, so mutations get past the CRC.
            let m = Message::parse(&signed).unwrap();
            let n = m.as_bytes().len() - 8;
            let mut plain = signed[..n].to_vec();
            let len = (n - 20) as u16;
            plain[2..4].copy_from_slice(&len.to_be_bytes());
            out.push(signed);
            out.push(plain);
        }
        let mut b = MessageBuilder::new(method::SEND, Class::Indication, [5; 12]);
        b.xor_address(attr::XOR_PEER_ADDRESS, PEER.parse().unwrap());
        b.attr(attr::DATA, b"payload");
        out.push(b.finish());
        let mut frame = stun_proto::channel::channel_header(CHANNEL, 5).to_vec();
        frame.extend_from_slice(b"hello\0\0\0");
        out.push(frame);
        out
    }

    /// `data` as client bytes: what is relayed goes to the peer of the channel or a
    /// permitted one, from relay 1, and is part of `data`.
    pub fn feed_client(&mut self, data: &[u8]) {
        let client = self.client;
        if let ClientAction::ToPeer {
            relay,
            peer,
            payload,
        } = self.server.handle_client(self.now, client, data)
        {
            assert_eq!(relay, RelayId(1));
            assert_eq!(peer.ip(), PEER.parse::<SocketAddr>().unwrap().ip());
            assert!(payload.len() < data.len());
        }
        self.io.pump(&mut self.server, self.now);
    }

    /// `data` as client bytes, as peer bytes, then a timer tick; every response the server
    /// queued must itself be well-formed STUN.
    pub fn feed(&mut self, data: &[u8]) {
        self.feed_client(data);
        let peer: SocketAddr = PEER.parse().unwrap();
        black_box(self.server.handle_peer(self.now, RelayId(1), peer, data));
        black_box(self.server.handle_peer(self.now, RelayId(9), peer, data));
        while let Some(t) = self.server.poll_transmit() {
            assert_eq!(t.to, self.client);
            let m = Message::parse(&t.data).expect("server output parses");
            assert!(matches!(m.class(), Class::Success | Class::Error));
            decode_all(&t.data);
        }
        self.now += Duration::from_millis(10);
        self.server.handle_timeout(self.now);
        self.io.pump(&mut self.server, self.now);
    }
}

impl Default for Driver {
    fn default() -> Self {
        Driver::new()
    }
}
