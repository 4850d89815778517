//! Drives the TURN server core over virtual time with a fake daemon (`FakeIo`, which
//! answers the core's orders as turnd does: at once, or later when told) and a client that does what a real one does: send a request, take REALM and NONCE from the
//! 401 (or 438), and resend it signed with the long-term key (RFC 8489 §9.2).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_auth::turn::{key_md5, key_sha256, rest_password, StoredKey};
use stun_proto::attr;
use stun_proto::auth::{password_algorithms_value, Credential, NonceKey};
use stun_proto::channel::{channel_header, CHANNEL_MAX, CHANNEL_MIN};
use stun_proto::message::method;
use stun_proto::peer_policy::PeerPolicy;
use stun_proto::{
    BindId, BoundRelay, Class, ClientAction, ClientTuple, ConnectionId, Family, IntegrityKind,
    KeyLookup, Limits, Message, MessageBuilder, Output, PeerAction, PortRequest, ProtocolCore,
    RelayBindError, RelayId, Server, ServerConfig, ServerShared, Transmit, Transport,
};

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

const REALM: &str = "localhost";
const UNIX_START: u64 = 1_700_000_000;
const SERVER_ADDR: &str = "192.0.2.10:3478";
const ALTERNATE: (&str, u16) = ("192.0.2.11", 3479);
const PUBLIC_PEER: &str = "93.184.216.34:9000";
const PUBLIC_PEER_V6: &str = "[2606:4700::1111]:9000";
const UDP: u32 = 17 << 24;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn udp_tuple(remote: &str) -> ClientTuple {
    ClientTuple {
        transport: Transport::Udp,
        local: addr(SERVER_ADDR),
        remote: addr(remote),
    }
}

/// The daemon side: hands out relays, remembers what was released, answers key lookups.
/// [`Harness::pump`] carries the core's orders to it.
#[derive(Default)]
struct FakeIo {
    next_id: u32,
    next_port: u16,
    refuse_v6: bool,
    /// Key lookups stay unanswered while set (the database is slow).
    pending: bool,
    /// Relay binds stay unanswered while set, kept here (a daemon binding asynchronously).
    held_binds: Option<Vec<(BindId, Family, PortRequest)>>,
    /// Key lookups answer `Busy` (database queue full) while set.
    busy: bool,
    keys: HashMap<(String, String), StoredKey>,
    lookups: Vec<String>,
    released: Vec<RelayId>,
    released_reservations: Vec<SocketAddr>,
    /// RFC 6062: outbound connects asked for, splices made, connections closed.
    connects: Vec<(RelayId, SocketAddr, ConnectionId)>,
    splices: Vec<(ConnectionId, ClientTuple)>,
    closed: Vec<ConnectionId>,
}

impl FakeIo {
    fn with_users(users: &[(&str, &str)]) -> FakeIo {
        let mut io = FakeIo::default();
        for (user, pass) in users {
            io.add_user(user, pass);
        }
        io
    }

    fn add_user(&mut self, user: &str, pass: &str) {
        self.keys.insert(
            (REALM.to_string(), user.to_string()),
            StoredKey::Md5(key_md5(user, REALM, pass)),
        );
    }

    fn relay(&mut self, addr: SocketAddr) -> BoundRelay {
        self.next_id += 1;
        BoundRelay {
            id: RelayId(self.next_id),
            addr,
        }
    }
}

impl FakeIo {
    fn bind_relay(
        &mut self,
        family: Family,
        port: PortRequest,
    ) -> Result<BoundRelay, RelayBindError> {
        if family == Family::V6 && self.refuse_v6 {
            return Err(RelayBindError::FamilyUnsupported);
        }
        if let PortRequest::Reserved(addr) = port {
            return Ok(self.relay(addr));
        }
        if port != PortRequest::Any && self.next_port % 2 == 1 {
            self.next_port += 1;
        }
        let ip: IpAddr = match family {
            Family::V4 => "198.51.100.1".parse().unwrap(),
            Family::V6 => "2001:db8::1".parse().unwrap(),
        };
        let addr = SocketAddr::new(ip, 50_000 + self.next_port);
        self.next_port += 1;
        if port == PortRequest::EvenReserveNext {
            // The odd port is held for the RESERVATION-TOKEN.
            self.next_port += 1;
        }
        Ok(self.relay(addr))
    }

    fn bind_tcp_relay(&mut self, family: Family) -> Result<BoundRelay, RelayBindError> {
        self.bind_relay(family, PortRequest::Any)
    }

    /// The database's answer now.
    fn key(&self, realm: &str, user: &str) -> KeyLookup {
        match self.keys.get(&(realm.to_string(), user.to_string())) {
            Some(k) => KeyLookup::Found(k.clone()),
            None => KeyLookup::Unknown,
        }
    }
}

/// What `handle_client` asked the daemon to relay, owned.
#[derive(Debug, PartialEq, Eq)]
enum Relayed {
    Nothing,
    ToPeer(RelayId, SocketAddr, Vec<u8>),
}

/// A server, its fake daemon and a virtual clock (monotonic and Unix seconds move together).
struct Harness {
    server: Server,
    io: FakeIo,
    now: Instant,
    unix: u64,
}

impl Harness {
    fn new(config: ServerConfig, io: FakeIo) -> Harness {
        Harness::with_quotas(config, io, Arc::new(ServerShared::default()))
    }

    fn with_quotas(config: ServerConfig, io: FakeIo, quotas: Arc<ServerShared>) -> Harness {
        let nonces = NonceKey::new([7; 32], 600);
        let mut server = Server::new(Arc::new(config), nonces, quotas, 0x5eed);
        let now = Instant::now();
        server.set_wall_clock(now, Duration::from_secs(UNIX_START));
        Harness {
            server,
            io,
            now,
            unix: UNIX_START,
        }
    }

    /// Carries out the core's orders as turnd does: relays are bound and keys looked up
    /// at once (unless the fake database is `pending`), and answered as inputs.
    fn pump(&mut self) {
        while let Some(order) = self.server.poll_output() {
            match order {
                Output::BindRelay { id, family, port } => {
                    if let Some(held) = &mut self.io.held_binds {
                        held.push((id, family, port));
                        continue;
                    }
                    let r = self.io.bind_relay(family, port);
                    self.server.handle_relay_bound(self.now, id, r);
                }
                Output::BindTcpRelay { id, family } => {
                    let r = self.io.bind_tcp_relay(family);
                    self.server.handle_relay_bound(self.now, id, r);
                }
                Output::ReleaseRelay(id) => self.io.released.push(id),
                Output::ReleaseReservation(addr) => self.io.released_reservations.push(addr),
                Output::LookupKey { realm, user } => {
                    self.io.lookups.push(user.clone());
                    if self.io.busy {
                        self.server
                            .handle_key(self.now, &realm, &user, KeyLookup::Busy);
                    } else if !self.io.pending {
                        let answer = self.io.key(&realm, &user);
                        self.server.handle_key(self.now, &realm, &user, answer);
                    }
                }
                Output::ConnectPeer { relay, peer, id } => self.io.connects.push((relay, peer, id)),
                Output::Splice { id, data } => self.io.splices.push((id, data)),
                Output::CloseConnection(id) => self.io.closed.push(id),
            }
        }
    }

    /// The slow database answers the lookup of `user` now.
    fn key_ready(&mut self, user: &str) {
        let answer = self.io.key(REALM, user);
        self.server.handle_key(self.now, REALM, user, answer);
        self.pump();
    }

    /// A stream or DTLS client connection closed.
    fn client_closed(&mut self, tuple: &ClientTuple) {
        self.server.handle_client_closed(self.now, tuple);
        self.pump();
    }

    /// The daemon's outbound RFC 6062 connection `id` finished.
    fn peer_connected(&mut self, id: ConnectionId, ok: bool) {
        self.server.handle_peer_connected(self.now, id, ok);
        self.pump();
    }

    /// The usual setup: long-term credentials with alice, bob and mallory in the database.
    fn standard() -> Harness {
        Harness::new(ServerConfig::default(), standard_io())
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.unix += secs;
        self.server.handle_timeout(self.now);
        self.pump();
    }

    fn client_bytes(&mut self, from: ClientTuple, data: &[u8]) -> Relayed {
        let relayed = match self.server.handle_client(self.now, from, data) {
            ClientAction::Done => Relayed::Nothing,
            ClientAction::ToPeer {
                relay,
                peer,
                payload,
            } => Relayed::ToPeer(relay, peer, payload.to_vec()),
        };
        self.pump();
        relayed
    }

    fn peer_bytes(&mut self, relay: RelayId, peer: &str, data: &[u8]) -> PeerAction {
        self.server.handle_peer(self.now, relay, addr(peer), data)
    }

    fn drain(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.server.poll_transmit()).collect()
    }

    /// Sends a request and returns the single response, if any.
    fn exchange(&mut self, from: ClientTuple, data: &[u8]) -> Option<Transmit> {
        assert_eq!(self.client_bytes(from, data), Relayed::Nothing);
        let mut out = self.drain();
        assert!(out.len() <= 1, "one request, {} responses", out.len());
        let t = out.pop()?;
        assert_eq!(t.to, from, "response goes back to the requester");
        Some(t)
    }
}

fn standard_io() -> FakeIo {
    FakeIo::with_users(&[("alice", "alice-pw"), ("bob", "bob-pw"), ("mallory", "x")])
}

/// A response, parsed on demand.
#[derive(Debug, Clone)]
struct Resp(Vec<u8>);

impl Resp {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("the server sends well-formed STUN")
    }

    /// ERROR-CODE as class * 100 + number (RFC 8489 §14.8); None for a success.
    fn code(&self) -> Option<u16> {
        let m = self.msg();
        match m.class() {
            Class::Success => None,
            Class::Error => {
                let v = m
                    .get(attr::ERROR_CODE)
                    .expect("error response has ERROR-CODE");
                Some(u16::from(v[2] & 0x7) * 100 + u16::from(v[3]))
            }
            c => panic!("not a response: {c:?}"),
        }
    }

    #[track_caller]
    fn assert_success(&self) -> &Self {
        assert_eq!(self.code(), None, "expected success");
        self
    }

    #[track_caller]
    fn assert_error(&self, code: u16) -> &Self {
        assert_eq!(self.code(), Some(code));
        self
    }

    fn get(&self, t: u16) -> Option<Vec<u8>> {
        self.msg().get(t).map(<[u8]>::to_vec)
    }

    fn str(&self, t: u16) -> Option<String> {
        self.msg().get_str(t).map(str::to_string)
    }

    fn u32(&self, t: u16) -> Option<u32> {
        self.msg().get_u32(t)
    }

    fn xor_addrs(&self, t: u16) -> Vec<SocketAddr> {
        self.msg()
            .xor_addresses(t)
            .map(|a| a.expect("well-formed address"))
            .collect()
    }

    fn relays(&self) -> Vec<SocketAddr> {
        self.xor_addrs(attr::XOR_RELAYED_ADDRESS)
    }
}

/// The attributes of one request, before credentials are added.
#[derive(Default, Clone)]
struct Req {
    attrs: Vec<(u16, Vec<u8>)>,
    peers: Vec<SocketAddr>,
    /// Appended after MESSAGE-INTEGRITY (only when the request is signed).
    after_integrity: Vec<(u16, Vec<u8>)>,
    fingerprint: bool,
}

impl Req {
    fn new() -> Req {
        Req::default()
    }
    /// An Allocate body: REQUESTED-TRANSPORT UDP.
    fn udp() -> Req {
        Req::new().u32(attr::REQUESTED_TRANSPORT, UDP)
    }
    fn attr(mut self, t: u16, v: &[u8]) -> Req {
        self.attrs.push((t, v.to_vec()));
        self
    }
    fn u32(self, t: u16, v: u32) -> Req {
        self.attr(t, &v.to_be_bytes())
    }
    fn peer(mut self, p: &str) -> Req {
        self.peers.push(addr(p));
        self
    }
    fn after_integrity(mut self, t: u16, v: &[u8]) -> Req {
        self.after_integrity.push((t, v.to_vec()));
        self
    }
    fn fingerprint(mut self) -> Req {
        self.fingerprint = true;
        self
    }
}

/// A TURN client with long-term credentials.
struct Client {
    tuple: ClientTuple,
    user: String,
    pass: String,
    realm: Option<String>,
    nonce: Option<String>,
    /// Some: RFC 8489 SHA-256 client echoing this PASSWORD-ALGORITHMS value.
    algorithms: Option<Vec<u8>>,
    tid_counter: u32,
}

impl Client {
    fn new(remote: &str, user: &str, pass: &str) -> Client {
        Client {
            tuple: udp_tuple(remote),
            user: user.into(),
            pass: pass.into(),
            realm: None,
            nonce: None,
            algorithms: None,
            tid_counter: 0,
        }
    }

    fn alice() -> Client {
        Client::new("192.0.2.100:40000", "alice", "alice-pw")
    }

    fn sha256(mut self, offered: &[u8]) -> Client {
        self.algorithms = Some(offered.to_vec());
        self
    }

    fn tid(&mut self) -> [u8; 12] {
        self.tid_counter += 1;
        let mut t = [0xA5; 12];
        t[8..].copy_from_slice(&self.tid_counter.to_be_bytes());
        t[0] = self.tuple.remote.port() as u8;
        t
    }

    fn kind(&self) -> IntegrityKind {
        if self.algorithms.is_some() {
            IntegrityKind::Sha256
        } else {
            IntegrityKind::Sha1
        }
    }

    fn key(&self) -> Vec<u8> {
        let realm = self.realm.as_deref().unwrap_or(REALM);
        match self.kind() {
            IntegrityKind::Sha1 => key_md5(&self.user, realm, &self.pass).to_vec(),
            IntegrityKind::Sha256 => key_sha256(&self.user, realm, &self.pass).to_vec(),
        }
    }

    /// The request bytes, signed once REALM and NONCE are known.
    fn build(&self, m: u16, tid: [u8; 12], req: &Req) -> Vec<u8> {
        let mut b = MessageBuilder::new(m, Class::Request, tid);
        for (t, v) in &req.attrs {
            b.attr(*t, v);
        }
        for p in &req.peers {
            b.xor_address(attr::XOR_PEER_ADDRESS, *p);
        }
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            b.attr(attr::USERNAME, self.user.as_bytes());
            b.attr(attr::REALM, realm.as_bytes());
            b.attr(attr::NONCE, nonce.as_bytes());
            if let Some(list) = &self.algorithms {
                b.attr(attr::PASSWORD_ALGORITHMS, list);
                b.u32_attr(
                    attr::PASSWORD_ALGORITHM,
                    u32::from(attr::ALGORITHM_SHA256) << 16,
                );
            }
            b.integrity(self.kind(), &self.key());
            for (t, v) in &req.after_integrity {
                b.attr(*t, v);
            }
        }
        if req.fingerprint {
            b.fingerprint();
        }
        b.finish()
    }

    /// Sends one request with a fresh transaction id and returns the response, if any.
    fn send_once(&mut self, h: &mut Harness, m: u16, req: &Req) -> Option<Resp> {
        let tid = self.tid();
        let bytes = self.build(m, tid, req);
        let t = h.exchange(self.tuple, &bytes)?;
        let resp = Resp(t.data);
        assert_eq!(resp.msg().transaction_id(), tid);
        assert_eq!(resp.msg().method(), m);
        Some(resp)
    }

    /// A request as a real client sends it: on 401 without credentials yet, or on 438,
    /// take REALM and NONCE from the error and try again once.
    fn send(&mut self, h: &mut Harness, m: u16, req: &Req) -> Option<Resp> {
        let resp = self.send_once(h, m, req)?;
        let retry = match resp.code() {
            Some(401) => self.nonce.is_none(),
            Some(438) => true,
            _ => false,
        };
        if !retry {
            return Some(resp);
        }
        self.realm = Some(resp.str(attr::REALM).expect("challenge carries REALM"));
        self.nonce = Some(resp.str(attr::NONCE).expect("challenge carries NONCE"));
        self.send_once(h, m, req)
    }

    #[track_caller]
    fn call(&mut self, h: &mut Harness, m: u16, req: &Req) -> Resp {
        self.send(h, m, req).expect("a response")
    }

    /// Learns REALM and NONCE with a Refresh without credentials (always a 401).
    fn login(&mut self, h: &mut Harness) {
        let r = self.send_once(h, method::REFRESH, &Req::new()).unwrap();
        r.assert_error(401);
        self.realm = r.str(attr::REALM);
        self.nonce = r.str(attr::NONCE);
    }

    /// Allocates (UDP) and returns the relayed addresses.
    #[track_caller]
    fn allocate(&mut self, h: &mut Harness) -> Vec<SocketAddr> {
        self.allocate_with(h, Req::udp())
    }

    #[track_caller]
    fn allocate_with(&mut self, h: &mut Harness, req: Req) -> Vec<SocketAddr> {
        let r = self.call(h, method::ALLOCATE, &req);
        r.assert_success();
        assert!(r.msg().verify_integrity(&self.key()));
        r.relays()
    }

    #[track_caller]
    fn permit(&mut self, h: &mut Harness, peer: &str) -> Resp {
        self.call(h, method::CREATE_PERMISSION, &Req::new().peer(peer))
    }

    #[track_caller]
    fn bind_channel(&mut self, h: &mut Harness, ch: u16, peer: &str) -> Resp {
        let req = Req::new()
            .u32(attr::CHANNEL_NUMBER, u32::from(ch) << 16)
            .peer(peer);
        self.call(h, method::CHANNEL_BIND, &req)
    }

    #[track_caller]
    fn refresh(&mut self, h: &mut Harness, lifetime: u32) -> Resp {
        self.call(
            h,
            method::REFRESH,
            &Req::new().u32(attr::LIFETIME, lifetime),
        )
    }

    /// A Send indication (RFC 8656 §11.1); indications are never answered.
    fn send_indication(&mut self, h: &mut Harness, peer: &str, payload: &[u8]) -> Relayed {
        let tid = self.tid();
        let mut b = MessageBuilder::new(method::SEND, Class::Indication, tid);
        b.xor_address(attr::XOR_PEER_ADDRESS, addr(peer));
        b.attr(attr::DATA, payload);
        let out = h.client_bytes(self.tuple, &b.finish());
        assert!(h.drain().is_empty(), "indications get no response");
        out
    }

    fn channel_data(&mut self, h: &mut Harness, ch: u16, payload: &[u8]) -> Relayed {
        let mut frame = channel_header(ch, payload.len()).to_vec();
        frame.extend_from_slice(payload);
        let out = h.client_bytes(self.tuple, &frame);
        assert!(h.drain().is_empty());
        out
    }
}

fn binding(tid: [u8; 12], req: &Req) -> Vec<u8> {
    Client::new("0.0.0.0:0", "", "").build(method::BINDING, tid, req)
}

// ---------------------------------------------------------------------------------------
// Binding (RFC 8489 §7, RFC 5780)
// ---------------------------------------------------------------------------------------

#[test]
fn binding_reflects_the_client_address_and_mirrors_fingerprint() {
    let mut h = Harness::standard();
    for (remote, fingerprint) in [("192.0.2.100:40000", false), ("[2001:db8::7]:1234", true)] {
        let mut req = Req::new();
        if fingerprint {
            req = req.fingerprint();
        }
        let from = udp_tuple(remote);
        let t = h.exchange(from, &binding([1; 12], &req)).unwrap();
        assert_eq!(t.from, None);
        let r = Resp(t.data);
        r.assert_success();
        assert_eq!(r.msg().transaction_id(), [1; 12]);
        assert_eq!(r.xor_addrs(attr::XOR_MAPPED_ADDRESS), vec![addr(remote)]);
        assert_eq!(r.msg().has_fingerprint(), fingerprint);
        // No RFC 5780 attributes without an alternate address.
        assert!(r.get(attr::OTHER_ADDRESS).is_none());
        assert!(r.get(attr::RESPONSE_ORIGIN).is_none());
    }
}

#[test]
fn binding_change_request_uses_the_alternate_address() {
    let (alt_ip, alt_port) = ALTERNATE;
    let alternate = SocketAddr::new(alt_ip.parse().unwrap(), alt_port);
    let config = ServerConfig {
        alternate: Some((alternate.ip(), alternate.port())),
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, standard_io());
    let from = udp_tuple("192.0.2.100:40000");
    let decode = |v: Vec<u8>| stun_proto::message::decode_address(&v).unwrap();

    // No change requested: sent from where it arrived.
    let t = h.exchange(from, &binding([2; 12], &Req::new())).unwrap();
    assert_eq!(t.from, None);
    let r = Resp(t.data);
    assert_eq!(decode(r.get(attr::OTHER_ADDRESS).unwrap()), alternate);
    assert_eq!(
        decode(r.get(attr::RESPONSE_ORIGIN).unwrap()),
        addr(SERVER_ADDR)
    );

    // Change IP and port (flags A|B).
    let req = Req::new().u32(attr::CHANGE_REQUEST, 0x6);
    let t = h.exchange(from, &binding([3; 12], &req)).unwrap();
    assert_eq!(t.from, Some(alternate));
    let r = Resp(t.data);
    r.assert_success();
    assert_eq!(decode(r.get(attr::RESPONSE_ORIGIN).unwrap()), alternate);
    assert_eq!(decode(r.get(attr::OTHER_ADDRESS).unwrap()), alternate);
    assert_eq!(r.xor_addrs(attr::XOR_MAPPED_ADDRESS), vec![from.remote]);

    // Change port only.
    let req = Req::new().u32(attr::CHANGE_REQUEST, 0x2);
    let t = h.exchange(from, &binding([4; 12], &req)).unwrap();
    let want = SocketAddr::new(addr(SERVER_ADDR).ip(), alt_port);
    assert_eq!(t.from, Some(want));
    assert_eq!(
        decode(Resp(t.data).get(attr::RESPONSE_ORIGIN).unwrap()),
        want
    );
}

#[test]
fn binding_change_request_without_alternate_is_420() {
    let mut h = Harness::standard();
    let req = Req::new().u32(attr::CHANGE_REQUEST, 0x6);
    let t = h
        .exchange(udp_tuple("192.0.2.100:40000"), &binding([5; 12], &req))
        .unwrap();
    assert_eq!(t.from, None);
    let r = Resp(t.data);
    r.assert_error(420);
    assert_eq!(r.get(attr::UNKNOWN_ATTRIBUTES), Some(vec![0x00, 0x03]));
}

// ---------------------------------------------------------------------------------------
// Allocate (RFC 8656 §7.2) and authentication (RFC 8489 §9.2)
// ---------------------------------------------------------------------------------------

#[test]
fn allocate_without_credentials_is_challenged() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    let r = c.send_once(&mut h, method::ALLOCATE, &Req::udp()).unwrap();
    r.assert_error(401);
    assert_eq!(r.str(attr::REALM).as_deref(), Some(REALM));
    let nonce = r.str(attr::NONCE).unwrap();
    assert!(nonce.starts_with("obMatJos2"), "{nonce}");
    assert_eq!(
        r.get(attr::PASSWORD_ALGORITHMS),
        Some(password_algorithms_value().to_vec())
    );
    // A challenge is not signed: the client has no key yet.
    assert_eq!(r.msg().integrity(), None);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.stats().auth_failures, 1);
}

#[test]
fn allocate_with_wrong_password_is_401() {
    let mut h = Harness::standard();
    let mut c = Client::new("192.0.2.100:40000", "alice", "not-alices");
    let r = c.call(&mut h, method::ALLOCATE, &Req::udp());
    r.assert_error(401);
    assert!(r.str(attr::NONCE).unwrap().starts_with("obMatJos2"));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.io.lookups, vec!["alice".to_string()]);
    assert_eq!(h.server.stats().auth_failures, 2);
    // Unknown users get the same answer.
    let mut c = Client::new("192.0.2.100:40001", "nobody", "x");
    c.call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(401);
}

#[test]
fn allocate_succeeds_with_the_right_password() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    let r = c.call(&mut h, method::ALLOCATE, &Req::udp());
    r.assert_success();
    assert_eq!(r.relays(), vec![addr("198.51.100.1:50000")]);
    assert_eq!(r.u32(attr::LIFETIME), Some(600));
    assert_eq!(r.xor_addrs(attr::XOR_MAPPED_ADDRESS), vec![c.tuple.remote]);
    assert_eq!(r.msg().integrity(), Some(IntegrityKind::Sha1));
    assert!(r
        .msg()
        .verify_integrity(&key_md5("alice", REALM, "alice-pw")));
    assert!(!r.msg().verify_integrity(&key_md5("alice", REALM, "wrong")));
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.stats().allocations_created, 1);
}

#[test]
fn allocate_lifetime_is_capped_at_the_maximum() {
    let mut h = Harness::standard();
    let r = Client::alice().call(
        &mut h,
        method::ALLOCATE,
        &Req::udp().u32(attr::LIFETIME, 99_999),
    );
    r.assert_success();
    assert_eq!(r.u32(attr::LIFETIME), Some(3600));
}

#[test]
fn allocate_retransmission_is_answered_identically_and_a_new_one_is_437() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    c.login(&mut h);
    let tid = c.tid();
    let request = c.build(method::ALLOCATE, tid, &Req::udp());
    let first = h.exchange(c.tuple, &request).unwrap().data;
    Resp(first.clone()).assert_success();
    let again = h.exchange(c.tuple, &request).unwrap().data;
    assert_eq!(
        first, again,
        "RFC 8656 §7.2: a retransmission gets the same response"
    );
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.stats().allocations_created, 1);

    let r = c.call(&mut h, method::ALLOCATE, &Req::udp());
    r.assert_error(437);
    assert!(r.msg().verify_integrity(&c.key()));
}

#[test]
fn allocate_checks_requested_transport() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    c.call(&mut h, method::ALLOCATE, &Req::new())
        .assert_error(400);
    let tcp = Req::new().u32(attr::REQUESTED_TRANSPORT, 6 << 24);
    c.call(&mut h, method::ALLOCATE, &tcp).assert_error(442);
    assert_eq!(h.server.allocation_count(), 0);
    // Nothing was bound or leaked: the next allocation gets the first relay port.
    assert_eq!(c.allocate(&mut h), vec![addr("198.51.100.1:50000")]);
}

#[test]
fn stale_nonce_is_438_with_a_fresh_nonce_that_then_works() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    c.login(&mut h);
    let old = c.nonce.clone().unwrap();
    h.advance(601);
    let r = c.send_once(&mut h, method::ALLOCATE, &Req::udp()).unwrap();
    r.assert_error(438);
    assert_eq!(r.str(attr::REALM).as_deref(), Some(REALM));
    let fresh = r.str(attr::NONCE).unwrap();
    assert!(fresh.starts_with("obMatJos2"));
    assert_ne!(fresh, old);
    c.nonce = Some(fresh);
    c.send_once(&mut h, method::ALLOCATE, &Req::udp())
        .unwrap()
        .assert_success();
}

#[test]
fn sha256_password_algorithm_for_a_static_user() {
    let mut users = HashMap::new();
    users.insert("dave".to_string(), Credential::Password("dave-pw".into()));
    let config = ServerConfig {
        static_users: users,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, FakeIo::default());
    let mut c =
        Client::new("192.0.2.100:40000", "dave", "dave-pw").sha256(&password_algorithms_value());
    let r = c.call(&mut h, method::ALLOCATE, &Req::udp());
    r.assert_success();
    assert_eq!(r.msg().integrity(), Some(IntegrityKind::Sha256));
    assert!(r
        .msg()
        .verify_integrity(&key_sha256("dave", REALM, "dave-pw")));
    assert!(
        h.io.lookups.is_empty(),
        "static users need no database lookup"
    );

    // A different list than the server offered (a downgrade attempt): 400.
    let mut c = Client::new("192.0.2.100:40001", "dave", "dave-pw").sha256(&[0, 2, 0, 0]);
    c.call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(400);
    assert_eq!(h.server.allocation_count(), 1);
}

fn rest_harness() -> Harness {
    let config = ServerConfig {
        use_auth_secret: true,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, FakeIo::default());
    h.server.set_secrets(vec!["s3cret".into()]);
    h
}

#[test]
fn rest_timestamp_limits_new_allocations_not_running_calls() {
    let mut h = rest_harness();
    let user = format!("{}:alice", h.unix + 60);
    let pass = rest_password("s3cret", &user);
    let mut c = Client::new("192.0.2.100:40000", &user, &pass);
    c.allocate(&mut h);
    h.advance(61);
    // As coturn: the allocation made in time keeps working past the timestamp...
    c.refresh(&mut h, 600).assert_success();
    c.permit(&mut h, PUBLIC_PEER).assert_success();
    // ...but the credential makes no new allocation.
    let mut again = Client::new("192.0.2.100:40001", &user, &pass);
    again
        .call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(401);
}

#[test]
fn turn_rest_credentials() {
    let mut h = rest_harness();
    let user = format!("{}:alice", h.unix + 3600);
    let pass = rest_password("s3cret", &user);
    let mut c = Client::new("192.0.2.100:40000", &user, &pass);
    c.allocate(&mut h);
    assert_eq!(h.server.allocation_count(), 1);

    let expired = format!("{}:alice", h.unix - 1);
    let pass = rest_password("s3cret", &expired);
    let mut c = Client::new("192.0.2.100:40001", &expired, &pass);
    c.call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(401);

    let user = format!("{}:alice", h.unix + 3600);
    let pass = rest_password("not-the-secret", &user);
    let mut c = Client::new("192.0.2.100:40002", &user, &pass);
    c.call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(401);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn unknown_required_attribute_is_420_unless_after_integrity() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    let r = c.call(&mut h, method::ALLOCATE, &Req::udp().attr(0x0031, b"????"));
    r.assert_error(420);
    assert_eq!(r.get(attr::UNKNOWN_ATTRIBUTES), Some(vec![0x00, 0x31]));
    // Unknown but comprehension-optional: fine.
    c.login(&mut h);
    let r = c.call(&mut h, method::ALLOCATE, &Req::udp().attr(0xC0FE, b"x"));
    r.assert_success();
    c.refresh(&mut h, 0).assert_success();
    // RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY are ignored.
    let r = c.call(
        &mut h,
        method::ALLOCATE,
        &Req::udp().after_integrity(0x0031, b"????"),
    );
    r.assert_success();
    assert_eq!(h.server.allocation_count(), 1);
}

// ---------------------------------------------------------------------------------------
// Permissions and peer policy (RFC 8656 §9, §21.3)
// ---------------------------------------------------------------------------------------

/// An allocation with both an IPv4 and an IPv6 relay, so both peer families are in reach.
fn dual_stack(h: &mut Harness, c: &mut Client) {
    let req = Req::udp().u32(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02 << 24);
    assert_eq!(c.allocate_with(h, req).len(), 2);
}

#[test]
fn create_permission_refuses_internal_peers() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    dual_stack(&mut h, &mut c);
    for peer in [
        "127.0.0.1:9",
        "[::1]:9",
        "[::ffff:127.0.0.1]:9",
        "169.254.169.254:80",
        "10.0.0.1:9",
        "203.0.113.5:9",
        "[fe80::1]:9",
    ] {
        let r = c.permit(&mut h, peer);
        r.assert_error(403);
        // Errors after authentication are signed (RFC 8489 §9.2.4).
        assert!(r.msg().verify_integrity(&c.key()), "{peer}");
    }
    assert_eq!(h.server.permission_count(), 0);
    c.permit(&mut h, PUBLIC_PEER).assert_success();
    c.permit(&mut h, PUBLIC_PEER_V6).assert_success();
    assert_eq!(h.server.permission_count(), 2);
}

#[test]
fn peer_of_a_family_without_relay_is_443() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    c.allocate(&mut h);
    // RFC 8656 §9.1: the family check (MUST) comes before the policy (MAY).
    c.permit(&mut h, PUBLIC_PEER_V6).assert_error(443);
    c.permit(&mut h, "[::1]:9").assert_error(443);
}

#[test]
fn loopback_peers_when_allowed() {
    let config = ServerConfig {
        peer_policy: PeerPolicy::new(vec![], vec![], true),
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, standard_io());
    let mut c = Client::alice();
    dual_stack(&mut h, &mut c);
    for peer in ["127.0.0.1:9", "[::1]:9", "[::ffff:127.0.0.1]:9"] {
        c.permit(&mut h, peer).assert_success();
    }
    // Only loopback was opened.
    c.permit(&mut h, "10.0.0.1:9").assert_error(403);
    c.permit(&mut h, "169.254.169.254:80").assert_error(403);
}

// ---------------------------------------------------------------------------------------
// Relaying (RFC 8656 §11, §12)
// ---------------------------------------------------------------------------------------

/// alice with an allocation on RelayId(1) and a permission for PUBLIC_PEER.
fn relaying() -> (Harness, Client) {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    c.allocate(&mut h);
    c.permit(&mut h, PUBLIC_PEER).assert_success();
    (h, c)
}

#[test]
fn send_indication_reaches_permitted_peers_only() {
    let (mut h, mut c) = relaying();
    let out = c.send_indication(&mut h, PUBLIC_PEER, b"hello peer");
    assert_eq!(
        out,
        Relayed::ToPeer(RelayId(1), addr(PUBLIC_PEER), b"hello peer".to_vec())
    );
    // A permission covers the IP, any port (RFC 8656 §9).
    let other_port = "93.184.216.34:1";
    assert!(matches!(
        c.send_indication(&mut h, other_port, b"x"),
        Relayed::ToPeer(_, p, _) if p == addr(other_port)
    ));
    assert_eq!(h.server.stats().relay_dropped, 0);
    let out = c.send_indication(&mut h, "93.184.216.35:9000", b"nope");
    assert_eq!(out, Relayed::Nothing);
    assert_eq!(h.server.stats().relay_dropped, 1);
    // Without an allocation nothing is relayed either.
    let mut stranger = Client::new("192.0.2.200:1", "bob", "bob-pw");
    assert_eq!(
        stranger.send_indication(&mut h, PUBLIC_PEER, b"x"),
        Relayed::Nothing
    );
    assert_eq!(h.server.stats().relay_dropped, 2);
}

#[test]
fn peer_data_becomes_a_data_indication() {
    let (mut h, c) = relaying();
    let PeerAction::Data { client, message } = h.peer_bytes(RelayId(1), PUBLIC_PEER, b"from peer")
    else {
        panic!("expected a Data indication");
    };
    assert_eq!(client, c.tuple);
    let m = Message::parse(&message).unwrap();
    assert_eq!((m.method(), m.class()), (method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"from peer"[..]));
    assert_eq!(
        m.xor_addresses(attr::XOR_PEER_ADDRESS).collect::<Vec<_>>(),
        vec![Some(addr(PUBLIC_PEER))]
    );

    assert_eq!(
        h.peer_bytes(RelayId(1), "93.184.216.35:9000", b"x"),
        PeerAction::Drop
    );
    assert_eq!(
        h.peer_bytes(RelayId(77), PUBLIC_PEER, b"x"),
        PeerAction::Drop
    );
    assert_eq!(h.server.stats().relay_dropped, 2);
}

#[test]
fn channels_carry_data_both_ways() {
    let (mut h, mut c) = relaying();
    c.bind_channel(&mut h, 0x4000, PUBLIC_PEER).assert_success();
    assert_eq!(h.server.channel_count(), 1);
    assert_eq!(
        c.channel_data(&mut h, 0x4000, b"via channel"),
        Relayed::ToPeer(RelayId(1), addr(PUBLIC_PEER), b"via channel".to_vec())
    );
    // Padding after the payload (RFC 8656 §12.5) is not relayed.
    let mut padded = channel_header(0x4000, 3).to_vec();
    padded.extend_from_slice(b"abc\0");
    assert_eq!(
        h.client_bytes(c.tuple, &padded),
        Relayed::ToPeer(RelayId(1), addr(PUBLIC_PEER), b"abc".to_vec())
    );
    let payload = vec![0xEE; 300];
    assert_eq!(
        h.peer_bytes(RelayId(1), PUBLIC_PEER, &payload),
        PeerAction::ChannelData {
            client: c.tuple,
            header: [0x40, 0x00, 0x01, 0x2C],
        }
    );
    // Another port of the same IP is not the bound peer: Data indication.
    assert!(matches!(
        h.peer_bytes(RelayId(1), "93.184.216.34:9001", b"x"),
        PeerAction::Data { .. }
    ));
    // An unbound channel number is dropped.
    assert_eq!(c.channel_data(&mut h, 0x4001, b"x"), Relayed::Nothing);
    assert_eq!(h.server.stats().relay_dropped, 1);
}

#[test]
fn channel_bind_errors() {
    let (mut h, mut c) = relaying();
    for ch in [CHANNEL_MIN - 1, CHANNEL_MAX + 1, 0xFFFF] {
        let r = c.bind_channel(&mut h, ch, PUBLIC_PEER);
        r.assert_error(400);
        assert!(r.msg().verify_integrity(&c.key()));
    }
    c.bind_channel(&mut h, 0x4000, PUBLIC_PEER).assert_success();
    // Refreshing the same binding is fine.
    c.bind_channel(&mut h, 0x4000, PUBLIC_PEER).assert_success();
    // The channel to another peer, or the peer to another channel: 400.
    c.bind_channel(&mut h, 0x4000, "93.184.216.35:9000")
        .assert_error(400);
    c.bind_channel(&mut h, 0x4001, PUBLIC_PEER)
        .assert_error(400);
    // And a refused peer: 403.
    c.bind_channel(&mut h, 0x4002, "10.0.0.1:9")
        .assert_error(403);
    assert_eq!(h.server.channel_count(), 1);
}

// ---------------------------------------------------------------------------------------
// Lifetimes (RFC 8656 §7.3, §9, §12)
// ---------------------------------------------------------------------------------------

#[test]
fn permissions_lapse_after_300_seconds() {
    let (mut h, _c) = relaying();
    h.advance(299);
    assert!(matches!(
        h.peer_bytes(RelayId(1), PUBLIC_PEER, b"x"),
        PeerAction::Data { .. }
    ));
    h.advance(2);
    assert_eq!(h.server.permission_count(), 0);
    assert_eq!(
        h.peer_bytes(RelayId(1), PUBLIC_PEER, b"x"),
        PeerAction::Drop
    );
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn allocations_expire_and_release_their_relay() {
    let (mut h, _c) = relaying();
    h.advance(599);
    assert_eq!(h.server.allocation_count(), 1);
    assert!(h.io.released.is_empty());
    h.advance(2);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.io.released, vec![RelayId(1)]);
    assert_eq!(
        h.peer_bytes(RelayId(1), PUBLIC_PEER, b"x"),
        PeerAction::Drop
    );
}

#[test]
fn refresh_extends_and_lifetime_zero_deletes() {
    let (mut h, mut c) = relaying();
    h.advance(500);
    let r = c.refresh(&mut h, 600);
    r.assert_success();
    assert_eq!(r.u32(attr::LIFETIME), Some(600));
    h.advance(500);
    assert_eq!(
        h.server.allocation_count(),
        1,
        "refreshed at 500 s for 600 s"
    );

    let r = c.refresh(&mut h, 0);
    r.assert_success();
    assert_eq!(r.u32(attr::LIFETIME), Some(0));
    assert!(r.msg().verify_integrity(&c.key()));
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.server.permission_count(), 0);
    assert_eq!(h.io.released, vec![RelayId(1)]);
    c.refresh(&mut h, 600).assert_error(437);
}

#[test]
fn refresh_without_allocation_is_437() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    let r = c.refresh(&mut h, 600);
    r.assert_error(437);
    assert!(r.msg().verify_integrity(&c.key()));
}

// ---------------------------------------------------------------------------------------
// Quotas
// ---------------------------------------------------------------------------------------

#[test]
fn user_and_total_quotas_are_enforced_and_released() {
    let config = ServerConfig {
        limits: Limits {
            user_quota: 1,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, standard_io());
    let mut first = Client::alice();
    first.allocate(&mut h);
    let mut second = Client::new("192.0.2.100:40001", "alice", "alice-pw");
    let r = second.call(&mut h, method::ALLOCATE, &Req::udp());
    r.assert_error(486);
    assert!(r.msg().verify_integrity(&second.key()));

    h.server.set_limits(Limits {
        user_quota: 1,
        total_quota: 1,
        max_bps: 0,
    });
    let mut bob = Client::new("192.0.2.101:40000", "bob", "bob-pw");
    bob.call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(508);

    first.refresh(&mut h, 0).assert_success();
    second.allocate(&mut h);
    bob.call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(508);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn quotas_are_shared_between_shards() {
    let quotas = Arc::new(ServerShared::default());
    let limits = Limits {
        user_quota: 1,
        ..Limits::default()
    };
    let config = || ServerConfig {
        limits,
        ..ServerConfig::default()
    };
    let mut a = Harness::with_quotas(config(), standard_io(), quotas.clone());
    let mut b = Harness::with_quotas(config(), standard_io(), quotas.clone());
    Client::alice().allocate(&mut a);
    let mut c = Client::new("192.0.2.100:40001", "alice", "alice-pw");
    c.call(&mut b, method::ALLOCATE, &Req::udp())
        .assert_error(486);
    assert_eq!(quotas.total(), 1);
}

// ---------------------------------------------------------------------------------------
// EVEN-PORT and RESERVATION-TOKEN (RFC 8656 §7.2, §14.6, §14.9)
// ---------------------------------------------------------------------------------------

#[test]
fn even_port_reservation_is_handed_to_the_token_holder() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    let r = c.call(
        &mut h,
        method::ALLOCATE,
        &Req::udp().attr(attr::EVEN_PORT, &[0x80]),
    );
    r.assert_success();
    assert_eq!(r.relays(), vec![addr("198.51.100.1:50000")]);
    let token = r.get(attr::RESERVATION_TOKEN).expect("RESERVATION-TOKEN");
    assert_eq!(token.len(), 8);

    let mut bob = Client::new("192.0.2.101:40000", "bob", "bob-pw");
    let relays = bob.allocate_with(&mut h, Req::udp().attr(attr::RESERVATION_TOKEN, &token));
    assert_eq!(relays, vec![addr("198.51.100.1:50001")]);
    // The reserved socket now belongs to bob's allocation.
    bob.permit(&mut h, PUBLIC_PEER).assert_success();
    assert!(matches!(
        h.peer_bytes(RelayId(2), PUBLIC_PEER, b"x"),
        PeerAction::Data { client, .. } if client == bob.tuple
    ));
    // A token is good once.
    let mut carol = Client::new("192.0.2.102:40000", "mallory", "x");
    carol
        .call(
            &mut h,
            method::ALLOCATE,
            &Req::udp().attr(attr::RESERVATION_TOKEN, &token),
        )
        .assert_error(508);
}

#[test]
fn reservation_token_with_even_port_is_400() {
    let mut h = Harness::standard();
    let req = Req::udp()
        .attr(attr::RESERVATION_TOKEN, &[1; 8])
        .attr(attr::EVEN_PORT, &[0x80]);
    Client::alice()
        .call(&mut h, method::ALLOCATE, &req)
        .assert_error(400);
}

#[test]
fn even_port_reservation_with_dual_allocation_is_400() {
    let mut h = Harness::standard();
    let req = Req::udp()
        .attr(attr::EVEN_PORT, &[0x80])
        .u32(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02 << 24);
    Client::alice()
        .call(&mut h, method::ALLOCATE, &req)
        .assert_error(400);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn unused_reservations_are_released_after_30_seconds() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    c.allocate_with(&mut h, Req::udp().attr(attr::EVEN_PORT, &[0x80]));
    h.advance(29);
    assert!(h.io.released_reservations.is_empty());
    h.advance(2);
    assert_eq!(h.io.released_reservations, vec![addr("198.51.100.1:50001")]);
    assert!(h.io.released.is_empty());
    assert_eq!(h.server.allocation_count(), 1);
}

// ---------------------------------------------------------------------------------------
// Address families (RFC 8656 §7.2, RFC 6156)
// ---------------------------------------------------------------------------------------

#[test]
fn requested_address_family_ipv6() {
    let mut h = Harness::standard();
    let relays = Client::alice().allocate_with(
        &mut h,
        Req::udp().u32(attr::REQUESTED_ADDRESS_FAMILY, 0x02 << 24),
    );
    assert_eq!(relays, vec![addr("[2001:db8::1]:50000")]);
}

#[test]
fn additional_address_family_gives_two_relays() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    let r = c.call(
        &mut h,
        method::ALLOCATE,
        &Req::udp().u32(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02 << 24),
    );
    r.assert_success();
    assert_eq!(
        r.relays(),
        vec![addr("198.51.100.1:50000"), addr("[2001:db8::1]:50001")]
    );
    assert!(r.get(attr::ADDRESS_ERROR_CODE).is_none());
}

#[test]
fn additional_family_unavailable_reports_address_error_code() {
    let mut io = standard_io();
    io.refuse_v6 = true;
    let mut h = Harness::new(ServerConfig::default(), io);
    let mut c = Client::alice();
    let r = c.call(
        &mut h,
        method::ALLOCATE,
        &Req::udp().u32(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02 << 24),
    );
    r.assert_success();
    assert_eq!(r.relays(), vec![addr("198.51.100.1:50000")]);
    let v = r.get(attr::ADDRESS_ERROR_CODE).expect("ADDRESS-ERROR-CODE");
    assert_eq!(v[0], 0x02, "family IPv6");
    assert_eq!(u16::from(v[2] & 0x7) * 100 + u16::from(v[3]), 440);
    // Asking for IPv6 only fails outright.
    let mut c = Client::new("192.0.2.100:40001", "bob", "bob-pw");
    c.call(
        &mut h,
        method::ALLOCATE,
        &Req::udp().u32(attr::REQUESTED_ADDRESS_FAMILY, 0x02 << 24),
    )
    .assert_error(440);
}

/// coturn's clients (`turnutils_uclient -Z`) send ADDITIONAL-ADDRESS-FAMILY under the
/// draft code point 0x8032; it is comprehension-optional, so without the alias they would
/// silently get an IPv4-only allocation, then 443 on their IPv6 Refresh.
#[test]
fn coturn_draft_additional_address_family_gives_two_relays() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    let req = Req::udp().u32(attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT, 0x02 << 24);
    let r = c.call(&mut h, method::ALLOCATE, &req);
    r.assert_success();
    assert_eq!(
        r.relays(),
        vec![addr("198.51.100.1:50000"), addr("[2001:db8::1]:50001")]
    );
    let refresh_v6 = Req::new()
        .u32(attr::LIFETIME, 600)
        .u32(attr::REQUESTED_ADDRESS_FAMILY, 0x02 << 24);
    c.call(&mut h, method::REFRESH, &refresh_v6)
        .assert_success();

    // The failed half is reported in the same dialect.
    let mut io = standard_io();
    io.refuse_v6 = true;
    let mut h = Harness::new(ServerConfig::default(), io);
    let r = Client::alice().call(&mut h, method::ALLOCATE, &req);
    r.assert_success();
    assert_eq!(r.relays(), vec![addr("198.51.100.1:50000")]);
    assert!(r.get(attr::ADDRESS_ERROR_CODE).is_none());
    let v = r
        .get(attr::ADDRESS_ERROR_CODE_DRAFT)
        .expect("ADDRESS-ERROR-CODE at 0x8033");
    assert_eq!(u16::from(v[2] & 0x7) * 100 + u16::from(v[3]), 440);
}

#[test]
fn unknown_requested_family_is_440() {
    let mut h = Harness::standard();
    Client::alice()
        .call(
            &mut h,
            method::ALLOCATE,
            &Req::udp().u32(attr::REQUESTED_ADDRESS_FAMILY, 0x03 << 24),
        )
        .assert_error(440);
    assert_eq!(h.server.allocation_count(), 0);
}

// ---------------------------------------------------------------------------------------
// Rate and bandwidth limits
// ---------------------------------------------------------------------------------------

#[test]
fn max_bps_drops_the_excess() {
    let config = ServerConfig {
        limits: Limits {
            max_bps: 1000,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, standard_io());
    let mut c = Client::alice();
    c.allocate(&mut h);
    c.permit(&mut h, PUBLIC_PEER).assert_success();
    let payload = [0x55u8; 100];
    let sent = (0..20)
        .filter(|_| c.send_indication(&mut h, PUBLIC_PEER, &payload) != Relayed::Nothing)
        .count();
    assert_eq!(sent, 10, "1000 bytes of 2000 fit in one second's budget");
    assert_eq!(h.server.stats().relay_dropped, 10);
    assert_eq!(h.server.stats().bytes_to_peers, 1000);
    // The peer direction draws on the same budget.
    assert_eq!(
        h.peer_bytes(RelayId(1), PUBLIC_PEER, &payload),
        PeerAction::Drop
    );
    h.advance(1);
    assert_ne!(
        c.send_indication(&mut h, PUBLIC_PEER, &payload),
        Relayed::Nothing
    );
}

#[test]
fn unauthenticated_requests_are_rate_limited_per_ip() {
    let config = ServerConfig {
        unauthenticated_rate: 5,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, standard_io());
    let noisy = udp_tuple("192.0.2.100:40000");
    let answered = (0..50u8)
        .filter(|i| h.exchange(noisy, &binding([*i; 12], &Req::new())).is_some())
        .count();
    assert_eq!(answered, 10, "a burst of twice the rate");
    assert_eq!(h.server.stats().rate_limited, 40);
    let quiet = udp_tuple("192.0.2.101:40000");
    assert!(h.exchange(quiet, &binding([1; 12], &Req::new())).is_some());
    h.advance(1);
    assert!(h.exchange(noisy, &binding([2; 12], &Req::new())).is_some());
}

#[test]
fn failing_authentication_is_rate_limited_too() {
    let config = ServerConfig {
        unauthenticated_rate: 5,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, standard_io());
    // A forged nonce and key: every request fails authentication before any key is used.
    let mut c = Client::new("192.0.2.100:40000", "alice", "guess");
    c.realm = Some(REALM.into());
    c.nonce = Some("obMatJos2gAABforged".into());
    let answered = (0..50)
        .filter(|_| c.send_once(&mut h, method::ALLOCATE, &Req::udp()).is_some())
        .count();
    assert_eq!(answered, 10, "challenges for 50 forged requests");
    assert_eq!(h.server.stats().rate_limited, 40);
    // Unknown comprehension-required attributes do not bypass it either.
    let req = Req::new().attr(0x0031, b"x");
    let answered = (0..50u8)
        .filter(|i| h.exchange(c.tuple, &binding([*i; 12], &req)).is_some())
        .count();
    assert_eq!(answered, 0);
}

// ---------------------------------------------------------------------------------------
// Garbage and parking
// ---------------------------------------------------------------------------------------

#[test]
fn garbage_is_counted_and_never_answered() {
    let mut h = Harness::standard();
    let mut c = Client::alice();
    c.allocate(&mut h);
    let before = h.server.stats().clone();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut sent = 0u64;
    for _ in 0..2000 {
        let len = (next() % 120) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        assert_eq!(h.client_bytes(c.tuple, &data), Relayed::Nothing);
        sent += 1;
    }
    let valid = c.build(method::ALLOCATE, [9; 12], &Req::udp().fingerprint());
    for cut in 0..valid.len() {
        assert_eq!(h.client_bytes(c.tuple, &valid[..cut]), Relayed::Nothing);
        sent += 1;
    }
    // A ChannelData for a channel never bound.
    assert_eq!(c.channel_data(&mut h, 0x4ABC, b"data"), Relayed::Nothing);
    sent += 1;
    assert!(h.drain().is_empty());
    let s = h.server.stats();
    let counted = (s.malformed - before.malformed) + (s.relay_dropped - before.relay_dropped);
    assert_eq!(counted, sent, "every dropped packet is counted once");
    assert!(s.relay_dropped > before.relay_dropped);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn busy_database_drops_the_request_instead_of_a_final_401() {
    let io = FakeIo {
        busy: true,
        ..standard_io()
    };
    let mut h = Harness::new(ServerConfig::default(), io);
    let mut c = Client::alice();
    assert!(c.send(&mut h, method::ALLOCATE, &Req::udp()).is_none());
    assert_eq!(h.server.stats().rate_limited, 1);
    // The client's retransmission succeeds once the database keeps up.
    h.io.busy = false;
    c.allocate(&mut h);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn parked_request_of_a_closed_connection_is_forgotten() {
    let io = FakeIo {
        pending: true,
        ..FakeIo::default()
    };
    let mut h = Harness::new(ServerConfig::default(), io);
    let mut c = Client::new("192.0.2.100:40000", "carol", "carol-pw");
    assert!(c.send(&mut h, method::ALLOCATE, &Req::udp()).is_none());
    h.client_closed(&c.tuple);
    h.io.pending = false;
    h.io.add_user("carol", "carol-pw");
    h.key_ready("carol");
    assert!(h.drain().is_empty());
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn oversized_username_is_400_without_a_lookup() {
    let mut h = Harness::new(ServerConfig::default(), FakeIo::default());
    let long = "u".repeat(600);
    let mut c = Client::new("192.0.2.100:40000", &long, "pw");
    c.call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(400);
    assert!(h.io.lookups.is_empty());
}

#[test]
fn made_up_usernames_are_rate_limited_before_the_database() {
    let config = ServerConfig {
        unauthenticated_rate: 5,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, FakeIo::default());
    for i in 0..50 {
        let mut c = Client::new("192.0.2.100:40000", &format!("nobody{i}"), "pw");
        let _ = c.send(&mut h, method::ALLOCATE, &Req::udp());
    }
    // Every attempt costs budget (the challenge too); far fewer than 50 lookups happen.
    assert!(h.io.lookups.len() <= 10, "{} lookups", h.io.lookups.len());
    assert!(h.server.stats().rate_limited > 0);
}

#[test]
fn parked_request_is_answered_when_the_key_arrives() {
    let io = FakeIo {
        pending: true,
        ..FakeIo::default()
    };
    let mut h = Harness::new(ServerConfig::default(), io);
    let mut c = Client::new("192.0.2.100:40000", "carol", "carol-pw");
    assert!(c.send(&mut h, method::ALLOCATE, &Req::udp()).is_none());
    assert_eq!(h.io.lookups, vec!["carol".to_string()]);
    assert_eq!(h.server.allocation_count(), 0);

    // Someone else's lookup finishing does not wake carol's request.
    h.key_ready("dave");
    assert!(h.drain().is_empty());

    h.io.pending = false;
    h.io.add_user("carol", "carol-pw");
    h.key_ready("carol");
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, c.tuple);
    let r = Resp(out[0].data.clone());
    r.assert_success();
    assert!(r.msg().verify_integrity(&c.key()));
    assert_eq!(r.relays(), vec![addr("198.51.100.1:50000")]);
    assert_eq!(h.server.allocation_count(), 1);
    // Answered once only.
    h.key_ready("carol");
    assert!(h.drain().is_empty());
}

// ---------------------------------------------------------------------------------------
// TCP relaying (RFC 6062)
// ---------------------------------------------------------------------------------------

/// REQUESTED-TRANSPORT TCP (RFC 6062 §6.1: protocol number 6).
const TCP: u32 = 6 << 24;
const OTHER_PEER: &str = "93.184.216.35:9000";

fn tcp_tuple(remote: &str) -> ClientTuple {
    ClientTuple {
        transport: Transport::Tcp,
        ..udp_tuple(remote)
    }
}

impl Client {
    /// The same client on a TCP connection from `remote`.
    fn over_tcp(mut self, remote: &str) -> Client {
        self.tuple = tcp_tuple(remote);
        self
    }

    /// A Connect request (RFC 6062 §5.2) with a known transaction id; the server answers
    /// only once the daemon reports the outbound connection.
    fn connect_request(&mut self, h: &mut Harness, peer: &str) -> ([u8; 12], Option<Resp>) {
        let tid = self.tid();
        let bytes = self.build(method::CONNECT, tid, &Req::new().peer(peer));
        (tid, h.exchange(self.tuple, &bytes).map(|t| Resp(t.data)))
    }

    #[track_caller]
    fn connection_bind(&mut self, h: &mut Harness, id: ConnectionId) -> Resp {
        self.call(
            h,
            method::CONNECTION_BIND,
            &Req::new().u32(attr::CONNECTION_ID, id),
        )
    }
}

fn tcp_relay_config() -> ServerConfig {
    ServerConfig {
        tcp_relay: true,
        ..ServerConfig::default()
    }
}

/// alice's control connection with a TCP allocation on RelayId(1) and a permission for
/// PUBLIC_PEER.
fn tcp_allocation() -> (Harness, Client) {
    let mut h = Harness::new(tcp_relay_config(), standard_io());
    let mut c = Client::alice().over_tcp("192.0.2.100:41000");
    assert_eq!(
        c.allocate_with(&mut h, Req::new().u32(attr::REQUESTED_TRANSPORT, TCP)),
        vec![addr("198.51.100.1:50000")]
    );
    c.permit(&mut h, PUBLIC_PEER).assert_success();
    (h, c)
}

/// A connection to PUBLIC_PEER made by Connect and reported connected: its id.
fn connected(h: &mut Harness, c: &mut Client) -> ConnectionId {
    let (_, early) = c.connect_request(h, PUBLIC_PEER);
    assert!(early.is_none(), "no response before the peer connects");
    let (_, _, id) = *h.io.connects.last().expect("a connect order");
    h.peer_connected(id, true);
    let out = h.drain();
    assert_eq!(out.len(), 1);
    Resp(out[0].data.clone()).assert_success();
    id
}

#[test]
fn tcp_allocation_needs_a_stream_control_connection() {
    let mut h = Harness::new(tcp_relay_config(), standard_io());
    let tcp = Req::new().u32(attr::REQUESTED_TRANSPORT, TCP);
    // RFC 6062 §5.1: over UDP a TCP allocation is 400.
    let mut udp = Client::alice();
    let r = udp.call(&mut h, method::ALLOCATE, &tcp);
    r.assert_error(400);
    assert!(r.msg().verify_integrity(&udp.key()));
    assert_eq!(h.server.allocation_count(), 0);
    // Over TCP it is granted, with the relay the daemon bound.
    let mut c = Client::alice().over_tcp("192.0.2.100:41000");
    let r = c.call(&mut h, method::ALLOCATE, &tcp);
    r.assert_success();
    assert_eq!(r.relays(), vec![addr("198.51.100.1:50000")]);
    assert_eq!(h.server.allocation_count(), 1);

    // Without `tcp_relay`: 442 Unsupported Transport Protocol, even over TCP.
    let mut h = Harness::standard();
    let mut c = Client::alice().over_tcp("192.0.2.100:41000");
    c.call(&mut h, method::ALLOCATE, &tcp).assert_error(442);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn connect_without_permission_is_403() {
    let (mut h, mut c) = tcp_allocation();
    let (_, r) = c.connect_request(&mut h, OTHER_PEER);
    let r = r.expect("refused at once");
    r.assert_error(403);
    assert!(r.msg().verify_integrity(&c.key()));
    assert!(h.io.connects.is_empty());
    assert_eq!(h.server.tcp_connection_count(), 0);
}

#[test]
fn connect_with_another_users_credentials_is_441() {
    let (mut h, c) = tcp_allocation();
    // Bob's valid credentials on alice's control connection.
    let mut bob = Client::new("192.0.2.100:41000", "bob", "bob-pw").over_tcp("192.0.2.100:41000");
    assert_eq!(bob.tuple, c.tuple);
    let (_, r) = bob.connect_request(&mut h, PUBLIC_PEER);
    let r = match r {
        Some(r) if r.code() == Some(401) => {
            bob.realm = r.str(attr::REALM);
            bob.nonce = r.str(attr::NONCE);
            bob.connect_request(&mut h, PUBLIC_PEER)
                .1
                .expect("answered")
        }
        other => other.expect("answered"),
    };
    r.assert_error(441);
    assert!(h.io.connects.is_empty());
}

#[test]
fn connect_is_answered_when_the_peer_connection_is_up() {
    let (mut h, mut c) = tcp_allocation();
    let (tid, early) = c.connect_request(&mut h, PUBLIC_PEER);
    assert!(early.is_none(), "RFC 6062 §5.2: answered after the connect");
    assert_eq!(h.io.connects.len(), 1);
    let (relay, peer, id) = h.io.connects[0];
    assert_eq!((relay, peer), (RelayId(1), addr(PUBLIC_PEER)));
    assert_ne!(id, 0);

    h.peer_connected(id, true);
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, c.tuple);
    let r = Resp(out[0].data.clone());
    r.assert_success();
    assert_eq!(r.msg().method(), method::CONNECT);
    assert_eq!(r.msg().transaction_id(), tid);
    assert_eq!(r.u32(attr::CONNECTION_ID), Some(id));
    assert!(r.msg().verify_integrity(&c.key()));
    // A second report changes nothing.
    h.peer_connected(id, true);
    assert!(h.drain().is_empty());

    // RFC 6062 §5.2: one connection per peer address: 446.
    let (_, r) = c.connect_request(&mut h, PUBLIC_PEER);
    r.expect("refused at once").assert_error(446);
    assert_eq!(h.io.connects.len(), 1);

    // A connection that fails: 447, and it is forgotten.
    c.permit(&mut h, OTHER_PEER).assert_success();
    let (tid, early) = c.connect_request(&mut h, OTHER_PEER);
    assert!(early.is_none());
    let (_, peer, failed) = h.io.connects[1];
    assert_eq!(peer, addr(OTHER_PEER));
    assert_eq!(h.server.tcp_connection_count(), 2);
    h.peer_connected(failed, false);
    let out = h.drain();
    assert_eq!(out.len(), 1);
    let r = Resp(out[0].data.clone());
    r.assert_error(447);
    assert_eq!(r.msg().transaction_id(), tid);
    assert!(r.msg().verify_integrity(&c.key()));
    assert_eq!(h.server.tcp_connection_count(), 1);
    assert_eq!(h.server.stats().errors.get(&447), Some(&1));
}

#[test]
fn connection_bind_splices_a_new_data_connection() {
    let (mut h, mut c) = tcp_allocation();
    let id = connected(&mut h, &mut c);

    // RFC 6062 §5.4: an id the server never issued is 400.
    let mut stranger = Client::alice().over_tcp("192.0.2.100:41001");
    stranger
        .connection_bind(&mut h, id.wrapping_add(1))
        .assert_error(400);
    // Another user's credentials: 441.
    let mut bob = Client::new("192.0.2.100:41002", "bob", "bob-pw").over_tcp("192.0.2.100:41002");
    bob.connection_bind(&mut h, id).assert_error(441);
    assert!(h.io.splices.is_empty());

    let mut data = Client::alice().over_tcp("192.0.2.100:41003");
    let r = data.connection_bind(&mut h, id);
    r.assert_success();
    assert!(r.msg().verify_integrity(&data.key()));
    assert_eq!(h.io.splices, vec![(id, data.tuple)]);
    // Bound once only.
    stranger.connection_bind(&mut h, id).assert_error(400);
    assert_eq!(h.io.splices.len(), 1);

    // The data connection closing closes its peer connection.
    h.client_closed(&data.tuple);
    assert_eq!(h.io.closed, vec![id]);
    assert_eq!(h.server.tcp_connection_count(), 0);
    assert_eq!(
        h.server.allocation_count(),
        1,
        "the control connection stays"
    );
}

#[test]
fn incoming_peer_connection_is_announced_with_connection_attempt() {
    let (mut h, c) = tcp_allocation();
    let peer = addr("93.184.216.34:50123");
    let id = h
        .server
        .handle_peer_connection(h.now, RelayId(1), peer)
        .expect("a permitted peer is accepted");
    let out = h.drain();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, c.tuple, "announced on the control connection");
    let m = Message::parse(&out[0].data).unwrap();
    assert_eq!(
        (m.method(), m.class()),
        (method::CONNECTION_ATTEMPT, Class::Indication)
    );
    assert_eq!(m.method(), 0x000C);
    assert_eq!(
        m.xor_addresses(attr::XOR_PEER_ADDRESS).collect::<Vec<_>>(),
        vec![Some(peer)]
    );
    assert_eq!(m.get_u32(attr::CONNECTION_ID), Some(id));

    // No permission for that IP: refused, nothing announced.
    let before = h.server.stats().relay_dropped;
    assert_eq!(
        h.server
            .handle_peer_connection(h.now, RelayId(1), addr(OTHER_PEER)),
        None
    );
    assert!(h.drain().is_empty());
    assert_eq!(h.server.stats().relay_dropped, before + 1);
    // Nor on a relay nobody holds.
    assert_eq!(
        h.server.handle_peer_connection(h.now, RelayId(9), peer),
        None
    );

    // The client binds it like an active one.
    let mut data = Client::alice().over_tcp("192.0.2.100:41003");
    data.connection_bind(&mut h, id).assert_success();
    assert_eq!(h.io.splices, vec![(id, data.tuple)]);
}

#[test]
fn unbound_peer_connection_is_closed_after_30_seconds() {
    let (mut h, _c) = tcp_allocation();
    let id = h
        .server
        .handle_peer_connection(h.now, RelayId(1), addr(PUBLIC_PEER))
        .unwrap();
    assert_eq!(h.drain().len(), 1, "the ConnectionAttempt");
    h.advance(29);
    assert!(h.io.closed.is_empty());
    assert_eq!(h.server.tcp_connection_count(), 1);
    h.advance(2);
    assert_eq!(h.io.closed, vec![id]);
    assert_eq!(h.server.tcp_connection_count(), 0);
    // Too late to bind it.
    let mut data = Client::alice().over_tcp("192.0.2.100:41003");
    data.connection_bind(&mut h, id).assert_error(400);
    assert!(h.io.splices.is_empty());
}

#[test]
fn closing_the_control_connection_closes_its_peer_connections() {
    let (mut h, mut c) = tcp_allocation();
    let active = connected(&mut h, &mut c);
    let mut data = Client::alice().over_tcp("192.0.2.100:41003");
    data.connection_bind(&mut h, active).assert_success();
    let passive = h
        .server
        .handle_peer_connection(h.now, RelayId(1), addr("93.184.216.34:50123"))
        .unwrap();
    h.drain();
    assert_eq!(h.server.tcp_connection_count(), 2);

    h.client_closed(&c.tuple);
    let mut closed = h.io.closed.clone();
    closed.sort_unstable();
    let mut want = vec![active, passive];
    want.sort_unstable();
    assert_eq!(closed, want);
    assert_eq!(h.server.tcp_connection_count(), 0);
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.io.released, vec![RelayId(1)]);
}

// ---------------------------------------------------------------------------------------
// Orders answered later: the key cache and parked Allocates
// ---------------------------------------------------------------------------------------

#[test]
fn looked_up_keys_are_cached_for_60_seconds_unknown_users_for_10() {
    let mut h = Harness::standard();
    Client::alice().allocate(&mut h);
    assert_eq!(h.io.lookups, vec!["alice".to_string()]);
    // Another allocation of alice's within the minute: the core's cache answers.
    h.advance(59);
    Client::new("192.0.2.100:40001", "alice", "alice-pw").allocate(&mut h);
    assert_eq!(h.io.lookups.len(), 1);
    // Past the TTL the database is asked again (a changed password applies).
    h.advance(2);
    Client::new("192.0.2.100:40002", "alice", "alice-pw").allocate(&mut h);
    assert_eq!(h.io.lookups.len(), 2);

    let mut nobody = Client::new("192.0.2.100:40003", "nobody", "x");
    nobody
        .call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(401);
    h.io.add_user("nobody", "x");
    h.advance(9);
    nobody
        .call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(401);
    assert_eq!(h.io.lookups.len(), 3, "an unknown user is remembered 10 s");
    h.advance(2);
    nobody.allocate(&mut h);
    assert_eq!(h.io.lookups.len(), 4);
}

#[test]
fn clearing_the_key_cache_asks_the_database_again() {
    let mut h = Harness::standard();
    Client::alice().allocate(&mut h);
    h.server.clear_key_cache();
    Client::new("192.0.2.100:40001", "alice", "alice-pw").allocate(&mut h);
    assert_eq!(h.io.lookups, vec!["alice".to_string(), "alice".to_string()]);
}

#[test]
fn without_a_user_database_unknown_users_cost_no_lookup() {
    let config = ServerConfig {
        user_database: false,
        ..ServerConfig::default()
    };
    let mut h = Harness::new(config, standard_io());
    Client::alice()
        .call(&mut h, method::ALLOCATE, &Req::udp())
        .assert_error(401);
    assert!(h.io.lookups.is_empty());
}

#[test]
fn allocate_waits_for_its_relay_and_answers_when_bound() {
    let io = FakeIo {
        held_binds: Some(Vec::new()),
        ..standard_io()
    };
    let mut h = Harness::new(ServerConfig::default(), io);
    let mut c = Client::alice();
    c.login(&mut h);
    let tid = c.tid();
    let req = c.build(method::ALLOCATE, tid, &Req::udp());
    assert!(
        h.exchange(c.tuple, &req).is_none(),
        "no answer before the bind"
    );
    // A retransmission while the bind is out is not answered twice, nor bound twice.
    assert!(h.exchange(c.tuple, &req).is_none());
    let held = h.io.held_binds.replace(Vec::new()).unwrap();
    assert_eq!(held.len(), 1);
    let (id, family, port) = held[0];
    assert_eq!((family, port), (Family::V4, PortRequest::Any));
    let bound = h.io.bind_relay(family, port);
    h.server.handle_relay_bound(h.now, id, bound);
    h.pump();
    let out = h.drain();
    assert_eq!(out.len(), 1);
    let r = Resp(out[0].data.clone());
    r.assert_success();
    assert_eq!(r.msg().transaction_id(), tid);
    assert_eq!(r.relays(), vec![addr("198.51.100.1:50000")]);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn relay_bound_for_a_closed_client_is_released_with_its_quota() {
    let config = ServerConfig {
        limits: Limits {
            user_quota: 1,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let io = FakeIo {
        held_binds: Some(Vec::new()),
        ..standard_io()
    };
    let mut h = Harness::new(config, io);
    let mut c = Client::alice();
    assert!(c.send(&mut h, method::ALLOCATE, &Req::udp()).is_none());
    h.client_closed(&c.tuple);
    let held = h.io.held_binds.take().unwrap();
    let (id, family, port) = held[0];
    let bound = h.io.bind_relay(family, port);
    h.server.handle_relay_bound(h.now, id, bound);
    h.pump();
    assert!(h.drain().is_empty());
    assert_eq!(h.io.released, vec![RelayId(1)]);
    assert_eq!(h.server.allocation_count(), 0);
    // The quota went back with it.
    Client::new("192.0.2.100:40001", "alice", "alice-pw").allocate(&mut h);
}
