//! The TURN server state machine (RFC 8656) with STUN Binding (RFC 8489) and NAT behaviour
//! discovery (RFC 5780).
//!
//! One [`Server`] owns the allocations of one shard and follows the suite's core contract
//! ([`rtc_proto::ProtocolCore`]): it never touches a socket, a clock or a random number
//! generator; everything it needs from outside is an [`Output`] order answered by a
//! `handle_*` input.
//!
//! # Polling order
//!
//! After every input (`handle_client`, `handle_peer`, `handle_key`, `handle_relay_bound`,
//! `handle_peer_connected`, `handle_peer_connection`, `handle_client_closed`,
//! `handle_connection_closed`, `handle_timeout`):
//!
//! 1. act on what the input returned: [`ClientAction::ToPeer`] and [`PeerAction`] are the
//!    relay path and must be sent before anything else touches the buffer they borrow;
//! 2. drain [`Server::poll_transmit`] (responses and indications for clients);
//! 3. drain [`ProtocolCore::poll_output`] and carry each order out; answering an order is
//!    an input, so go back to step 2 until both queues are empty;
//! 4. re-arm the timer at [`ProtocolCore::poll_timeout`] and call
//!    [`ProtocolCore::handle_timeout`] when it passes (early calls are harmless).
//!
//! [`ProtocolCore::set_wall_clock`] must be called before the first input and then every
//! few seconds: the core derives Unix seconds from it for nonces (RFC 8489 §9.2) and TURN
//! REST credential expiry.
//!
//! # What stays synchronous, and why
//!
//! - **The relay path** (ChannelData, Send and Data indications, RFC 8656 §11-12): the
//!   handle call returns the relay order, borrowing the caller's buffer, so relaying costs
//!   no queue, copy, lock or allocation per packet.
//! - **Key lookups go through a cache in the core.** A key fetched with
//!   [`Output::LookupKey`] is kept for [`KEY_TTL`] ([`UNKNOWN_KEY_TTL`] for unknown users),
//!   measured with the `now` the daemon passes in, so a password changed with `rtc-admin`
//!   takes effect within a minute and a flood of made-up names cannot hammer the database.
//!   A cached key authenticates at once; only a miss parks the request until
//!   [`Server::handle_key`]. Because the core knows what is cached, only real database
//!   queries cost unauthenticated rate budget. [`Server::clear_key_cache`] forgets it all
//!   (turnd on SIGHUP). Each core has its own cache, so with several shards a key is
//!   fetched once per shard and minute: a few queries more, against a lock per request
//!   had the shards shared one cache.
//! - **Relay sockets**: the Allocate parks on [`Output::BindRelay`] and resumes on
//!   [`Server::handle_relay_bound`]; a daemon that binds synchronously answers while it
//!   drains, so the response still leaves within the same input.
//!
//! Requests on an existing allocation (Refresh, CreatePermission, ChannelBind, Connect)
//! verify with the allocation's key and never wait.

use crate::attr;
use crate::auth::{
    negotiated_algorithm, password_algorithms_value, Credential, NonceCheck, NonceKey,
};
use crate::channel::{channel_header, parse_channel_data, CHANNEL_MAX, CHANNEL_MIN};
use crate::message::{method, Class, IntegrityKind, Message, MessageBuilder, ParseError};
use crate::peer_policy::PeerPolicy;
use rtc_auth::turn::StoredKey;
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use rtc_proto::ProtocolCore;
use rtc_proto::WallClock;

mod tcp;

/// How a client reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Dtls,
}

/// The 5-tuple that identifies an allocation (RFC 8656 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientTuple {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// A relay socket the daemon bound for us, named by the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// Port constraints from EVEN-PORT (RFC 8656 §14.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    Any,
    Even,
    /// An even port, with the next (odd) one held back for a later RESERVATION-TOKEN
    /// until [`Output::ReleaseReservation`] or a [`PortRequest::Reserved`] bind.
    EvenReserveNext,
    /// The port held back by an earlier `EvenReserveNext` (RFC 8656 §7.2, step 9).
    Reserved(SocketAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundRelay {
    pub id: RelayId,
    /// The local address the socket is bound to.
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayBindError {
    /// This server has no relay address of that family: 440.
    FamilyUnsupported,
    /// No port left in `min-port..=max-port`: 508.
    NoPorts,
}

/// The daemon's answer to [`Output::LookupKey`], given with [`Server::handle_key`].
#[derive(Debug, Clone)]
pub enum KeyLookup {
    Found(StoredKey),
    /// No such user.
    Unknown,
    /// No verdict (the daemon's database queue is full, or the query failed): the
    /// requests waiting for this key are dropped unanswered and nothing is cached, so a
    /// client retransmits instead of taking a final 401 for a password it got right.
    Busy,
}

/// Names one [`Output::BindRelay`] or [`Output::BindTcpRelay`] order, so its answer
/// ([`Server::handle_relay_bound`]) finds the Allocate that waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindId(pub u64);

/// An order for the daemon: the control plane of the server (relay sockets, the user
/// database, RFC 6062 peer connections). Drained with [`ProtocolCore::poll_output`] after
/// every input; the orders that need an answer name the `handle_*` input that takes it.
///
/// The relay path is not here: relayed packets come back from [`Server::handle_client`]
/// and [`Server::handle_peer`] themselves (no queue, no copy), and responses for clients
/// from [`Server::poll_transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bind a UDP relay socket; answer with [`Server::handle_relay_bound`]. The Allocate
    /// waits for the answer, so answer at once where binding is synchronous (turnd does).
    /// Every bind must be answered: the user's quota is held until then.
    BindRelay {
        id: BindId,
        family: Family,
        port: PortRequest,
    },
    /// RFC 6062: a TCP relay listening on the relayed address for peer connections;
    /// answer with [`Server::handle_relay_bound`].
    BindTcpRelay { id: BindId, family: Family },
    /// The allocation owning this relay (UDP socket or TCP listener) is gone.
    ReleaseRelay(RelayId),
    /// A port held by [`PortRequest::EvenReserveNext`] is free again (its
    /// RESERVATION-TOKEN expired unused, RFC 8656 §14.9).
    ReleaseReservation(SocketAddr),
    /// The long-term key for (realm, user) from the user database; answer with
    /// [`Server::handle_key`]. At most one lookup per (realm, user) is in flight; the
    /// requests that need it wait (parked) and resume on the answer. Unanswered, they are
    /// dropped after 5 seconds and the next request asks again.
    LookupKey { realm: String, user: String },
    /// RFC 6062 §5.2: open a TCP connection from relay `relay` to `peer`, then answer with
    /// [`Server::handle_peer_connected`].
    ConnectPeer {
        relay: RelayId,
        peer: SocketAddr,
        id: ConnectionId,
    },
    /// RFC 6062 §5.4: from now on the client connection `data` and peer connection `id`
    /// carry raw bytes between each other. The ConnectionBind response is already queued
    /// for `data` (drain [`Server::poll_transmit`] first, as the polling order says).
    Splice { id: ConnectionId, data: ClientTuple },
    /// Close peer connection `id` (and its spliced client connection, if any).
    CloseConnection(ConnectionId),
}

/// RFC 6062 CONNECTION-ID of a peer TCP connection.
pub type ConnectionId = u32;

/// What every shard of one server shares: allocation counts, so `user-quota` and
/// `total-quota` hold for the whole server, and RESERVATION-TOKENs, which a client may
/// present on a 5-tuple that the kernel steered to another shard.
#[derive(Debug, Default)]
pub struct ServerShared {
    total: AtomicU64,
    per_user: Mutex<HashMap<String, u32>>,
    reservations: Mutex<HashMap<[u8; 8], Reservation>>,
}

impl ServerShared {
    /// Reserve one allocation for `user`; `Err(code)` is 486 (user) or 508 (total).
    fn acquire(&self, user: &str, user_quota: u32, total_quota: u32) -> Result<(), u16> {
        let mut map = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.get(user).copied().unwrap_or(0);
        if user_quota > 0 && n >= user_quota {
            return Err(486);
        }
        if total_quota > 0 && self.total.load(Ordering::Relaxed) >= u64::from(total_quota) {
            return Err(508);
        }
        map.insert(user.to_string(), n + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, user: &str) {
        let mut map = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                map.remove(user);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Limits that may come from the config file or, per realm, from the database
/// (`turn_realm_option`), and so can change on reload. Zero means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub user_quota: u32,
    pub total_quota: u32,
    /// Bytes per second per allocation, both directions together (coturn's `max-bps`).
    pub max_bps: u64,
}

/// Static configuration of the protocol core.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub realm: String,
    /// SOFTWARE attribute value, if any.
    pub software: Option<String>,
    /// Long-term credentials (`lt-cred-mech`) checked against config users and the database.
    pub lt_cred_mech: bool,
    /// TURN REST API (`use-auth-secret`).
    pub use_auth_secret: bool,
    /// `no-auth`: allocations without credentials (tests and closed networks only).
    pub no_auth: bool,
    /// Users from the config file (`user = ["name:password"]`).
    pub static_users: HashMap<String, Credential>,
    /// Whether users outside `static_users` are looked up ([`Output::LookupKey`]); without
    /// a user database they are unknown at once, with no lookup and no rate budget spent.
    pub user_database: bool,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub limits: Limits,
    pub peer_policy: PeerPolicy,
    /// Relay addresses to advertise instead of the bound ones (`external-ip`): private ->
    /// public.
    pub external_ip: Vec<(IpAddr, IpAddr)>,
    /// RFC 5780: the second IP and port of this server, when it has them.
    pub alternate: Option<(IpAddr, u16)>,
    /// RFC 5780: the primary IP and port, so a request reaching the alternate address is
    /// told the primary one as OTHER-ADDRESS. Without it the alternate is always "other".
    pub primary: Option<(IpAddr, u16)>,
    /// Unauthenticated requests per second allowed from one IP (0: unlimited).
    pub unauthenticated_rate: u32,
    /// Whether TCP allocations (RFC 6062) are offered; otherwise 442.
    pub tcp_relay: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            realm: "localhost".into(),
            software: None,
            lt_cred_mech: true,
            use_auth_secret: false,
            no_auth: false,
            static_users: HashMap::new(),
            user_database: true,
            // RFC 8656 §3.2 / coturn defaults.
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            limits: Limits::default(),
            peer_policy: PeerPolicy::default(),
            external_ip: Vec::new(),
            alternate: None,
            primary: None,
            unauthenticated_rate: 0,
            tcp_relay: false,
        }
    }
}

/// A response for a client.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub to: ClientTuple,
    /// Send from this local address instead of `to.local` (RFC 5780 CHANGE-REQUEST).
    pub from: Option<SocketAddr>,
    pub data: Vec<u8>,
}

/// What the daemon does with a client packet after [`Server::handle_client`].
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAction<'a> {
    /// Nothing to relay (responses, if any, are queued).
    Done,
    /// Send `payload` from relay socket `relay` to `peer`.
    ToPeer {
        relay: RelayId,
        peer: SocketAddr,
        payload: &'a [u8],
    },
}

/// What the daemon does with a peer packet after [`Server::handle_peer`].
#[derive(Debug, PartialEq, Eq)]
pub enum PeerAction {
    Drop,
    /// Send `header` followed by the payload (ChannelData, RFC 8656 §12.4); over TCP/TLS
    /// pad to a multiple of 4.
    ChannelData {
        client: ClientTuple,
        header: [u8; 4],
    },
    /// Send this Data indication (RFC 8656 §11.4).
    Data {
        client: ClientTuple,
        message: Vec<u8>,
    },
}

/// Counters for the daemon to export. Plain integers: each shard owns its own.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub packets_from_clients: u64,
    pub bytes_from_clients: u64,
    pub packets_to_peers: u64,
    pub bytes_to_peers: u64,
    pub packets_from_peers: u64,
    pub bytes_from_peers: u64,
    pub packets_to_clients: u64,
    pub bytes_to_clients: u64,
    /// Malformed datagrams silently dropped (RFC 8489 §6.3).
    pub malformed: u64,
    /// Relayed packets dropped for lack of permission, channel or bandwidth.
    pub relay_dropped: u64,
    /// Requests dropped by the unauthenticated rate limit.
    pub rate_limited: u64,
    pub auth_failures: u64,
    pub allocations_created: u64,
    /// Error responses sent, by code.
    pub errors: BTreeMap<u16, u64>,
}

/// One channel binding (RFC 8656 §12).
#[derive(Debug, Clone, Copy)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

/// Per-allocation bandwidth bucket (`max-bps`).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Allocation {
    client: ClientTuple,
    username: String,
    key: Vec<u8>,
    integrity: IntegrityKind,
    relays: Vec<BoundRelay>,
    expires: Instant,
    permissions: FxHashMap<IpAddr, Instant>,
    channels: FxHashMap<u16, Channel>,
    channel_by_peer: FxHashMap<SocketAddr, u16>,
    /// Transaction id and response of the Allocate, for retransmissions (RFC 8656 §7.2).
    allocate_tid: [u8; 12],
    allocate_response: Vec<u8>,
    bucket: Option<Bucket>,
    /// RFC 6062 TCP allocation: peers are reached through TCP connections.
    tcp: bool,
}

/// A reserved odd port (RFC 8656 §14.9: kept for 30 seconds).
#[derive(Debug)]
struct Reservation {
    addr: SocketAddr,
    expires: Instant,
}

/// An Allocate waiting for its relay socket ([`Output::BindRelay`] or
/// [`Output::BindTcpRelay`]): everything the response needs, decided before the bind.
#[derive(Debug)]
struct PendingAllocate {
    from: ClientTuple,
    answering: Answering,
    auth: Authed,
    lifetime: Duration,
    tcp: bool,
    port: PortRequest,
    /// RFC 8656 §7.2 dual allocation: an IPv6 relay follows the primary one.
    want_v6_too: bool,
    /// ADDRESS-ERROR-CODE in the dialect of the request (RFC 8656 or coturn's draft).
    address_error_attr: u16,
    relays: Vec<BoundRelay>,
    /// The client went away before the bind was answered: undo instead of answering.
    cancelled: bool,
}

/// What a response needs of its request, kept when the answer comes after the request's
/// turn (a parked Allocate).
#[derive(Debug, Clone, Copy)]
struct Answering {
    method: u16,
    tid: [u8; 12],
    fingerprint: bool,
}

impl Answering {
    fn of(msg: &Message<'_>) -> Answering {
        Answering {
            method: msg.method(),
            tid: msg.transaction_id(),
            fingerprint: msg.has_fingerprint(),
        }
    }
}

/// A cached answer of the user database: the key (`None`: no such user), fetched at.
type CachedKey = (Option<StoredKey>, Instant);

/// A request waiting for the daemon's key lookup.
#[derive(Debug)]
struct Parked {
    from: ClientTuple,
    data: Vec<u8>,
    realm: String,
    user: String,
    since: Instant,
}

/// Successful authentication: the key to sign the response with.
#[derive(Debug)]
struct Authed {
    user: String,
    key: Vec<u8>,
    integrity: IntegrityKind,
}

/// A request failed; answer with this error (RFC 8489 §14.8).
#[derive(Debug)]
struct Reject {
    code: u16,
    reason: &'static str,
    /// 401/438 carry REALM and NONCE; 420 carries UNKNOWN-ATTRIBUTES.
    challenge: bool,
    unknown: Vec<u16>,
    /// Sign with this key (errors after successful authentication).
    key: Option<(Vec<u8>, IntegrityKind)>,
}

impl Reject {
    fn new(code: u16, reason: &'static str) -> Reject {
        Reject {
            code,
            reason,
            challenge: false,
            unknown: Vec::new(),
            key: None,
        }
    }
    fn challenge(code: u16, reason: &'static str) -> Reject {
        Reject {
            challenge: true,
            ..Reject::new(code, reason)
        }
    }
    fn signed(mut self, a: &Authed) -> Reject {
        self.key = Some((a.key.clone(), a.integrity));
        self
    }
}

/// Outcome of authenticating a request.
enum AuthResult {
    Ok(Authed),
    Reject(Reject),
    /// Parked until the key lookup finishes.
    Parked,
}

const PARKED_MAX: usize = 4096;
/// Requests larger than this are not parked (a real Allocate is a few hundred bytes).
const PARKED_MESSAGE_MAX: usize = 2048;
const MAX_USERNAME: usize = 508;
const MAX_REALM_NONCE: usize = 763;
const PARKED_TIMEOUT: Duration = Duration::from_secs(5);
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// How long a looked-up key is trusted before asking the database again, so a password
/// changed with `rtc-admin` takes effect without a reload.
pub const KEY_TTL: Duration = Duration::from_secs(60);
/// Unknown users are remembered briefly so a flood of bad names cannot hammer the database.
pub const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(10);
/// Cached keys at most per core; at the limit the cache starts over (keys are refetched).
const KEY_CACHE_MAX: usize = 100_000;
/// RFC 8656 §12: a channel number stays blocked 5 minutes after its binding expires.
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);
const RATE_TABLE_MAX: usize = 65536;
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The TURN server core for one shard.
#[derive(Debug)]
pub struct Server {
    config: Arc<ServerConfig>,
    limits: Limits,
    peer_policy: PeerPolicy,
    secrets: Vec<String>,
    nonces: NonceKey,
    /// Quota counts and reservation tokens of the whole server (all shards).
    shared: Arc<ServerShared>,
    /// The maps on the relay path use a fast non-keyed hash (FxHash): their keys exist only
    /// after authentication (allocations, permissions, channels) or are ours (relay ids),
    /// so an unauthenticated sender cannot flood them with colliding keys. The rate table,
    /// keyed by any source address, keeps the keyed default hasher.
    allocations: FxHashMap<ClientTuple, Allocation>,
    by_relay: FxHashMap<RelayId, ClientTuple>,
    parked: Vec<Parked>,
    /// (realm, user) -> cached database answer; see the module documentation.
    keys: HashMap<(String, String), CachedKey>,
    /// Lookups asked for and not answered yet, with when they were asked: one per key, and
    /// asked again if the answer is later than [`PARKED_TIMEOUT`].
    lookups: HashMap<(String, String), Instant>,
    /// Allocates waiting for their relay sockets.
    binds: FxHashMap<BindId, PendingAllocate>,
    next_bind: u64,
    outputs: VecDeque<Output>,
    wall: Option<WallClock>,
    /// Unauthenticated-request buckets per source IP: (tokens, last refill).
    rate: HashMap<IpAddr, (f64, Instant)>,
    transmits: VecDeque<Transmit>,
    next_sweep: Option<Instant>,
    next_token: u64,
    token_seed: u64,
    stats: Stats,
    tcp_conns: HashMap<ConnectionId, tcp::TcpConnection>,
    permissions: usize,
    channels: usize,
}

impl Server {
    /// `seed` is randomness from the daemon (reservation tokens); `nonces` is shared by all
    /// shards.
    pub fn new(
        config: Arc<ServerConfig>,
        nonces: NonceKey,
        shared: Arc<ServerShared>,
        seed: u64,
    ) -> Server {
        Server {
            limits: config.limits,
            peer_policy: config.peer_policy.clone(),
            config,
            secrets: Vec::new(),
            nonces,
            shared,
            allocations: FxHashMap::default(),
            by_relay: FxHashMap::default(),
            parked: Vec::new(),
            keys: HashMap::new(),
            lookups: HashMap::new(),
            binds: FxHashMap::default(),
            next_bind: 0,
            outputs: VecDeque::new(),
            wall: None,
            rate: HashMap::new(),
            transmits: VecDeque::new(),
            next_sweep: None,
            next_token: 0,
            token_seed: seed,
            stats: Stats::default(),
            tcp_conns: HashMap::new(),
            permissions: 0,
            channels: 0,
        }
    }

    /// TURN REST shared secrets (config `static-auth-secret` plus the database), replaced on
    /// reload.
    pub fn set_secrets(&mut self, secrets: Vec<String>) {
        self.secrets = secrets;
    }

    /// Quotas and bandwidth, replaced on reload; existing allocations keep running.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Peer policy (config lists plus the database's `allowed_peer_ip`/`denied_peer_ip`),
    /// replaced on reload. Existing permissions stay until they expire.
    pub fn set_peer_policy(&mut self, policy: PeerPolicy) {
        self.peer_policy = policy;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }
    pub fn permission_count(&self) -> usize {
        self.permissions
    }
    pub fn channel_count(&self) -> usize {
        self.channels
    }

    /// The next response or indication for a client. Drained before
    /// [`ProtocolCore::poll_output`] (see the module documentation): a ConnectionBind
    /// response must be queued on its connection before the [`Output::Splice`] order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Wall-clock seconds at `now`, for nonces and TURN REST expiry (0 before
    /// [`ProtocolCore::set_wall_clock`]: nonces still work, REST credentials look expired).
    fn unix(&self, now: Instant) -> u64 {
        self.wall.map_or(0, |w| w.unix(now))
    }

    /// Bytes from a client.
    pub fn handle_client<'a>(
        &mut self,
        now: Instant,
        from: ClientTuple,
        data: &'a [u8],
    ) -> ClientAction<'a> {
        self.stats.packets_from_clients += 1;
        self.stats.bytes_from_clients += data.len() as u64;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
        if crate::channel::is_channel_data(data) {
            return self.client_channel_data(now, from, data);
        }
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.malformed(e);
                return ClientAction::Done;
            }
        };
        match msg.class() {
            Class::Request => {
                self.handle_request(now, from, &msg);
                ClientAction::Done
            }
            Class::Indication if msg.method() == method::SEND => {
                self.send_indication(now, from, &msg)
            }
            // Responses and other indications from clients are not for us.
            _ => ClientAction::Done,
        }
    }

    fn malformed(&mut self, _e: ParseError) {
        self.stats.malformed += 1;
    }

    /// Bytes from `peer` arriving on relay socket `relay`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: RelayId,
        peer: SocketAddr,
        data: &[u8],
    ) -> PeerAction {
        self.stats.packets_from_peers += 1;
        self.stats.bytes_from_peers += data.len() as u64;
        // The largest payload a Data indication can carry: 65535 minus XOR-PEER-ADDRESS
        // (IPv6: 24 bytes) and the DATA header. A bigger (IPv6 jumbo-ish) datagram cannot
        // be framed for the client (RFC 8656 §11.4), so it is dropped.
        if data.len() > 65535 - 28 {
            self.stats.relay_dropped += 1;
            return PeerAction::Drop;
        }
        let Some(tuple) = self.by_relay.get(&relay) else {
            self.stats.relay_dropped += 1;
            return PeerAction::Drop;
        };
        let Some(alloc) = self.allocations.get_mut(tuple) else {
            self.stats.relay_dropped += 1;
            return PeerAction::Drop;
        };
        // RFC 8656 §11.3/§12: only peers with a live permission reach the client.
        let permitted = alloc
            .permissions
            .get(&peer.ip())
            .is_some_and(|&exp| exp > now);
        if !permitted || !take_bandwidth(alloc, now, data.len(), self.limits.max_bps) {
            self.stats.relay_dropped += 1;
            return PeerAction::Drop;
        }
        let client = alloc.client;
        self.stats.packets_to_clients += 1;
        self.stats.bytes_to_clients += data.len() as u64;
        if let Some(&ch) = alloc.channel_by_peer.get(&peer) {
            if alloc.channels.get(&ch).is_some_and(|c| c.expires > now) {
                return PeerAction::ChannelData {
                    client,
                    header: channel_header(ch, data.len()),
                };
            }
        }
        let tid = self.new_tid();
        let mut b = MessageBuilder::new(method::DATA, Class::Indication, tid);
        b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        b.attr(attr::DATA, data);
        PeerAction::Data {
            client,
            message: b.finish(),
        }
    }

    fn new_tid(&mut self) -> [u8; 12] {
        // Indications need distinct ids, not secret ones (RFC 8489 §6): a counter mixed with
        // the daemon's seed is enough.
        self.next_token = self.next_token.wrapping_add(1);
        let mut t = [0u8; 12];
        t[..8].copy_from_slice(&(self.token_seed ^ self.next_token).to_be_bytes());
        t[8..].copy_from_slice(&(self.next_token as u32).to_be_bytes());
        t
    }

    fn client_channel_data<'a>(
        &mut self,
        now: Instant,
        from: ClientTuple,
        data: &'a [u8],
    ) -> ClientAction<'a> {
        let Some((ch, payload)) = parse_channel_data(data) else {
            self.stats.malformed += 1;
            return ClientAction::Done;
        };
        let max_bps = self.limits.max_bps;
        let Some(alloc) = self.allocations.get_mut(&from) else {
            self.stats.relay_dropped += 1;
            return ClientAction::Done;
        };
        let Some(c) = alloc.channels.get(&ch).copied().filter(|c| c.expires > now) else {
            self.stats.relay_dropped += 1;
            return ClientAction::Done;
        };
        let permitted = alloc
            .permissions
            .get(&c.peer.ip())
            .is_some_and(|&exp| exp > now);
        let Some(relay) = relay_for(&alloc.relays, c.peer) else {
            self.stats.relay_dropped += 1;
            return ClientAction::Done;
        };
        if !permitted || !take_bandwidth(alloc, now, payload.len(), max_bps) {
            self.stats.relay_dropped += 1;
            return ClientAction::Done;
        }
        self.stats.packets_to_peers += 1;
        self.stats.bytes_to_peers += payload.len() as u64;
        ClientAction::ToPeer {
            relay,
            peer: c.peer,
            payload,
        }
    }

    /// Send indication (RFC 8656 §11.2): relayed only with a permission; never answered.
    fn send_indication<'a>(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'a>,
    ) -> ClientAction<'a> {
        let max_bps = self.limits.max_bps;
        let peer = msg.xor_addresses(attr::XOR_PEER_ADDRESS).next().flatten();
        let payload = msg.get(attr::DATA);
        let (Some(peer), Some(payload), Some(alloc)) =
            (peer, payload, self.allocations.get_mut(&from))
        else {
            self.stats.relay_dropped += 1;
            return ClientAction::Done;
        };
        let permitted = alloc
            .permissions
            .get(&peer.ip())
            .is_some_and(|&exp| exp > now);
        let relay = relay_for(&alloc.relays, peer);
        match relay {
            Some(relay) if permitted && take_bandwidth(alloc, now, payload.len(), max_bps) => {
                self.stats.packets_to_peers += 1;
                self.stats.bytes_to_peers += payload.len() as u64;
                ClientAction::ToPeer {
                    relay,
                    peer,
                    payload,
                }
            }
            _ => {
                self.stats.relay_dropped += 1;
                ClientAction::Done
            }
        }
    }

    fn handle_request(&mut self, now: Instant, from: ClientTuple, msg: &Message<'_>) {
        // RFC 8489 §6.3.1.1: unknown comprehension-required attributes -> 420.
        let unknown = msg.unknown_required(attr::is_known_required);
        if !unknown.is_empty() {
            let mut r = Reject::new(420, "Unknown Attribute");
            r.unknown = unknown;
            self.reject(now, from, msg, r);
            return;
        }
        let result = match msg.method() {
            method::BINDING => self.binding(now, from, msg),
            method::ALLOCATE => self.allocate(now, from, msg),
            method::REFRESH => self.refresh(now, from, msg),
            method::CREATE_PERMISSION => self.create_permission(now, from, msg),
            method::CHANNEL_BIND => self.channel_bind(now, from, msg),
            method::CONNECT if self.config.tcp_relay => self.connect(now, from, msg),
            method::CONNECTION_BIND if self.config.tcp_relay => {
                self.connection_bind(now, from, msg)
            }
            _ => Err(Reject::new(400, "Unsupported Method")),
        };
        if let Err(r) = result {
            self.reject(now, from, msg, r);
        }
    }

    /// Token bucket for requests that do not (yet) carry valid credentials.
    fn rate_ok(&mut self, now: Instant, ip: IpAddr) -> bool {
        let rate = f64::from(self.config.unauthenticated_rate);
        if rate == 0.0 {
            return true;
        }
        if self.rate.len() >= RATE_TABLE_MAX && !self.rate.contains_key(&ip) {
            // Table full (many sources at once): forget an arbitrary source rather than grow
            // without bound or lock every new client out.
            if let Some(old) = self.rate.keys().next().copied() {
                self.rate.remove(&old);
            }
        }
        let e = self.rate.entry(ip).or_insert((rate * 2.0, now));
        let elapsed = now.saturating_duration_since(e.1).as_secs_f64();
        e.0 = (e.0 + elapsed * rate).min(rate * 2.0);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }

    fn binding(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
    ) -> Result<(), Reject> {
        let other = self.other_address(from.local);
        let mut send_from = None;
        if let Some(v) = msg.get(attr::CHANGE_REQUEST) {
            // RFC 5780 §7.2: flags A (change IP, 0x4) and B (change port, 0x2).
            let Some(other) = other else {
                let mut r = Reject::new(420, "Unknown Attribute");
                r.unknown = vec![attr::CHANGE_REQUEST];
                return Err(r);
            };
            if v.len() != 4 || from.transport != Transport::Udp {
                return Err(Reject::new(400, "Bad CHANGE-REQUEST"));
            }
            let (change_ip, change_port) = (v[3] & 0x4 != 0, v[3] & 0x2 != 0);
            if change_ip || change_port {
                let ip = if change_ip {
                    other.ip()
                } else {
                    from.local.ip()
                };
                let port = if change_port {
                    other.port()
                } else {
                    from.local.port()
                };
                send_from = Some(SocketAddr::new(ip, port));
            }
        }
        let mut b = MessageBuilder::new(method::BINDING, Class::Success, msg.transaction_id());
        b.xor_address(attr::XOR_MAPPED_ADDRESS, from.remote);
        b.address(attr::MAPPED_ADDRESS, from.remote);
        if let Some(other) = other {
            if from.transport == Transport::Udp {
                b.address(attr::RESPONSE_ORIGIN, send_from.unwrap_or(from.local));
                b.address(attr::OTHER_ADDRESS, other);
            }
        }
        // Charged here, not on entry: errors are charged by `reject`, once.
        if !self.rate_ok(now, from.remote.ip()) {
            self.stats.rate_limited += 1;
            return Ok(());
        }
        self.finish(from, send_from, msg.has_fingerprint(), b, None);
        Ok(())
    }

    /// RFC 5780 §7.4 OTHER-ADDRESS for a request that reached `local`: the IP and the port
    /// that differ from the ones it used.
    fn other_address(&self, local: SocketAddr) -> Option<SocketAddr> {
        let (alt_ip, alt_port) = self.config.alternate?;
        let (pri_ip, pri_port) = self.config.primary.unwrap_or((alt_ip, alt_port));
        let ip = if local.ip() == alt_ip { pri_ip } else { alt_ip };
        let port = if local.port() == alt_port {
            pri_port
        } else {
            alt_port
        };
        Some(SocketAddr::new(ip, port))
    }

    /// Adds SOFTWARE, integrity and FINGERPRINT as the request had them, and queues it.
    fn finish(
        &mut self,
        to: ClientTuple,
        from: Option<SocketAddr>,
        fingerprint: bool,
        mut b: MessageBuilder,
        key: Option<(&[u8], IntegrityKind)>,
    ) {
        if let Some(s) = &self.config.software {
            b.attr(attr::SOFTWARE, s.as_bytes());
        }
        if let Some((k, kind)) = key {
            b.integrity(kind, k);
        }
        if fingerprint {
            b.fingerprint();
        }
        self.transmits.push_back(Transmit {
            to,
            from,
            data: b.finish(),
        });
    }

    fn reject(&mut self, now: Instant, to: ClientTuple, req: &Message<'_>, r: Reject) {
        self.reject_answering(now, to, Answering::of(req), r);
    }

    fn reject_answering(&mut self, now: Instant, to: ClientTuple, req: Answering, r: Reject) {
        // An unsigned error answers a request that proved no key (no credentials, forged or
        // stale nonce, wrong password, 420, unknown method...), so it draws on the same
        // per-IP budget as Binding. Otherwise a spoofed source gets 401s, larger than the
        // request, reflected without limit by adding any MESSAGE-INTEGRITY (the reflection
        // and amplification concerns of RFC 8489 §16 and RFC 8656 §21).
        // Only UDP sources can be spoofed; stream and DTLS clients completed a handshake, and
        // a dropped answer would leave them waiting (they do not retransmit).
        let spoofable = to.transport == Transport::Udp;
        if r.key.is_none() && spoofable && !self.rate_ok(now, to.remote.ip()) {
            self.stats.rate_limited += 1;
            return;
        }
        *self.stats.errors.entry(r.code).or_default() += 1;
        if matches!(r.code, 401 | 438 | 441) {
            self.stats.auth_failures += 1;
        }
        let mut b = MessageBuilder::new(req.method, Class::Error, req.tid);
        b.error_code(r.code, r.reason);
        if !r.unknown.is_empty() {
            let v: Vec<u8> = r.unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
            b.attr(attr::UNKNOWN_ATTRIBUTES, &v);
        }
        if r.challenge {
            let nonce = self.nonces.issue(self.unix(now), to.remote.ip());
            b.attr(attr::REALM, self.config.realm.as_bytes());
            b.attr(attr::NONCE, nonce.as_bytes());
            b.attr(attr::PASSWORD_ALGORITHMS, &password_algorithms_value());
        }
        let key = r
            .key
            .as_ref()
            .filter(|_| !self.config.no_auth)
            .map(|(k, kind)| (k.as_slice(), *kind));
        self.finish(to, None, req.fingerprint, b, key);
    }

    /// RFC 8489 §9.2.4 server side of the long-term credential mechanism, plus the TURN
    /// REST API. On success returns the key for signing the response.
    /// `owner` is the allocation whose key may verify the request without a lookup: the
    /// request's own 5-tuple, or for an RFC 6062 ConnectionBind the control connection's.
    fn authenticate(
        &mut self,
        now: Instant,
        from: ClientTuple,
        owner: ClientTuple,
        msg: &Message<'_>,
    ) -> AuthResult {
        if self.config.no_auth {
            return AuthResult::Ok(Authed {
                user: String::new(),
                key: Vec::new(),
                integrity: IntegrityKind::Sha1,
            });
        }
        let Some(kind) = msg.integrity() else {
            // Rate limited in `reject`, like every unsigned error.
            return AuthResult::Reject(Reject::challenge(401, "Unauthorized"));
        };
        let (Some(user), Some(realm), Some(nonce)) = (
            msg.get_str(attr::USERNAME),
            msg.get_str(attr::REALM),
            msg.get_str(attr::NONCE),
        ) else {
            return AuthResult::Reject(Reject::new(400, "Missing USERNAME, REALM or NONCE"));
        };
        // RFC 8489 §14.3, §14.9, §14.10: USERNAME under 509 bytes, REALM and NONCE under
        // 128 characters (763 bytes). Longer values only cost memory and database lookups.
        if user.len() > MAX_USERNAME
            || realm.len() > MAX_REALM_NONCE
            || nonce.len() > MAX_REALM_NONCE
        {
            return AuthResult::Reject(Reject::new(400, "USERNAME, REALM or NONCE too long"));
        }
        let Ok(alg) = negotiated_algorithm(msg) else {
            return AuthResult::Reject(Reject::new(400, "Password algorithm mismatch"));
        };
        match self.nonces.check(nonce, self.unix(now), from.remote.ip()) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => return AuthResult::Reject(Reject::challenge(438, "Stale Nonce")),
            NonceCheck::Invalid => {
                return AuthResult::Reject(Reject::challenge(401, "Unauthorized"))
            }
        }
        if realm != self.config.realm {
            return AuthResult::Reject(Reject::challenge(401, "Unauthorized"));
        }
        // Requests on an existing allocation reuse its key: no lookup per Refresh. A TURN
        // REST credential's timestamp is checked when the allocation is made, not on its
        // refreshes, as coturn does: a call must not drop when the credential's TTL passes
        // mid-call (web apps hand out short TTLs).
        if let Some(a) = self.allocations.get(&owner) {
            if a.username == user && a.integrity == kind {
                if msg.verify_integrity(&a.key) {
                    return AuthResult::Ok(Authed {
                        user: user.to_string(),
                        key: a.key.clone(),
                        integrity: kind,
                    });
                }
                return AuthResult::Reject(Reject::challenge(401, "Unauthorized"));
            }
        }
        let rest_expiry = if self.config.use_auth_secret {
            rtc_auth::turn::rest_expiry(user)
        } else {
            None
        };
        if rest_expiry.is_some_and(|e| e < self.unix(now)) {
            return AuthResult::Reject(Reject::challenge(401, "Unauthorized"));
        }
        let mut candidates: Vec<Credential> = Vec::new();
        if rest_expiry.is_some() {
            for s in &self.secrets {
                candidates.push(Credential::Password(rtc_auth::turn::rest_password(s, user)));
            }
        }
        if self.config.lt_cred_mech && candidates.is_empty() {
            if let Some(c) = self.config.static_users.get(user) {
                candidates.push(c.clone());
            } else if self.config.user_database {
                match self.cached_key(now, realm, user) {
                    Some(Some(k)) => candidates.push(Credential::Stored(k)),
                    Some(None) => {}
                    None => {
                        // A database query per made-up USERNAME would let one source keep
                        // the database busy: a query (not a cached answer) costs
                        // unauthenticated budget, and nothing is parked past the limit.
                        if self.parked.len() >= PARKED_MAX
                            || msg.as_bytes().len() > PARKED_MESSAGE_MAX
                            || !self.rate_ok(now, from.remote.ip())
                        {
                            self.stats.rate_limited += 1;
                            return AuthResult::Parked;
                        }
                        self.park(now, from, msg, realm, user);
                        return AuthResult::Parked;
                    }
                }
            }
        }
        for c in &candidates {
            if let Some(key) = c.key(alg, user, realm) {
                if msg.verify_integrity(&key) {
                    return AuthResult::Ok(Authed {
                        user: user.to_string(),
                        key,
                        integrity: kind,
                    });
                }
            }
        }
        AuthResult::Reject(Reject::challenge(401, "Unauthorized"))
    }

    /// The cached database answer for (realm, user) if still fresh at `now`:
    /// `Some(Some(key))` a known user, `Some(None)` a known-unknown one, `None` ask.
    fn cached_key(&self, now: Instant, realm: &str, user: &str) -> Option<Option<StoredKey>> {
        let (key, at) = self.keys.get(&(realm.to_string(), user.to_string()))?;
        let ttl = if key.is_some() {
            KEY_TTL
        } else {
            UNKNOWN_KEY_TTL
        };
        (now.saturating_duration_since(*at) < ttl).then(|| key.clone())
    }

    /// Parks a request until (realm, user) is looked up, asking for it unless a lookup is
    /// already in flight.
    fn park(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
        realm: &str,
        user: &str,
    ) {
        self.parked.push(Parked {
            from,
            data: msg.as_bytes().to_vec(),
            realm: realm.to_string(),
            user: user.to_string(),
            since: now,
        });
        let k = (realm.to_string(), user.to_string());
        let asked = self
            .lookups
            .get(&k)
            .is_some_and(|&at| now.saturating_duration_since(at) < PARKED_TIMEOUT);
        if !asked {
            self.lookups.insert(k, now);
            self.outputs.push_back(Output::LookupKey {
                realm: realm.to_string(),
                user: user.to_string(),
            });
        }
    }

    /// The answer to [`Output::LookupKey`] (or a fresher one the daemon pushes): cache it
    /// and re-run the requests that waited for it. [`KeyLookup::Busy`] drops them
    /// unanswered, counted as rate limited.
    pub fn handle_key(&mut self, now: Instant, realm: &str, user: &str, answer: KeyLookup) {
        let k = (realm.to_string(), user.to_string());
        self.lookups.remove(&k);
        let key = match answer {
            KeyLookup::Found(key) => Some(key),
            KeyLookup::Unknown => None,
            KeyLookup::Busy => {
                let before = self.parked.len();
                self.parked.retain(|p| p.realm != realm || p.user != user);
                self.stats.rate_limited += (before - self.parked.len()) as u64;
                return;
            }
        };
        // Bounded without bookkeeping: at the limit start over (entries are refetched).
        if self.keys.len() >= KEY_CACHE_MAX {
            self.keys.clear();
        }
        self.keys.insert(k, (key, now));
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.realm == realm && p.user == user);
        self.parked = waiting;
        for p in ready {
            // The request was counted when it arrived; it parsed then and parses now.
            if let Ok(msg) = Message::parse(&p.data) {
                self.handle_request(now, p.from, &msg);
            }
        }
    }

    /// Forgets every cached key, so the next request of each user asks the database
    /// again (turnd on SIGHUP: a changed password or a new user applies at once).
    pub fn clear_key_cache(&mut self) {
        self.keys.clear();
    }

    fn auth_or_reject(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
    ) -> Result<Option<Authed>, Reject> {
        match self.authenticate(now, from, from, msg) {
            AuthResult::Ok(a) => Ok(Some(a)),
            AuthResult::Reject(r) => Err(r),
            AuthResult::Parked => Ok(None),
        }
    }

    /// Authenticates a request that acts on the client's allocation (RFC 8656 §5): 437
    /// if the 5-tuple has none, 441 if it belongs to another user.
    fn auth_for_allocation(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
    ) -> Result<Option<Authed>, Reject> {
        let Some(auth) = self.auth_or_reject(now, from, msg)? else {
            return Ok(None);
        };
        match self.allocations.get(&from) {
            None => Err(Reject::new(437, "Allocation Mismatch").signed(&auth)),
            Some(a) if a.username != auth.user => {
                Err(Reject::new(441, "Wrong Credentials").signed(&auth))
            }
            Some(_) => Ok(Some(auth)),
        }
    }

    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        // RFC 8656 §7.2 step 10 / §7.3: requested values above the default are honoured up
        // to the maximum; smaller ones get the default.
        match msg.get_u32(attr::LIFETIME) {
            Some(l) => Duration::from_secs(u64::from(l))
                .max(self.config.default_lifetime)
                .min(self.config.max_lifetime),
            None => self.config.default_lifetime,
        }
    }

    fn advertised(&self, addr: SocketAddr) -> SocketAddr {
        for (private, public) in &self.config.external_ip {
            if *private == addr.ip() {
                return SocketAddr::new(*public, addr.port());
            }
        }
        addr
    }

    fn new_reservation_token(&mut self) -> [u8; 8] {
        // Tokens need only be unguessable enough not to collide with another client's by
        // accident; they are bound to this shard. SplitMix64 over the daemon's seed.
        self.next_token = self.next_token.wrapping_add(1);
        let mut z = self
            .token_seed
            .wrapping_add(self.next_token.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).to_be_bytes()
    }

    /// Allocate (RFC 8656 §7.2).
    fn allocate(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
    ) -> Result<(), Reject> {
        let Some(auth) = self.auth_or_reject(now, from, msg)? else {
            return Ok(());
        };
        if let Some(a) = self.allocations.get(&from) {
            if a.allocate_tid == msg.transaction_id() {
                let data = a.allocate_response.clone();
                self.transmits.push_back(Transmit {
                    to: from,
                    from: None,
                    data,
                });
                return Ok(());
            }
            return Err(Reject::new(437, "Allocation Mismatch").signed(&auth));
        }
        if let Some(p) = self.binds.values().find(|p| p.from == from && !p.cancelled) {
            // Waiting for its relay socket: a retransmission gets the response when it
            // comes, another transaction is refused like one on a finished allocation.
            if p.answering.tid == msg.transaction_id() {
                return Ok(());
            }
            return Err(Reject::new(437, "Allocation Mismatch").signed(&auth));
        }
        let token = msg.get(attr::RESERVATION_TOKEN);
        let even = msg.get(attr::EVEN_PORT);
        let family = msg.get(attr::REQUESTED_ADDRESS_FAMILY);
        // Dual allocation (RFC 8656 §7.2), also under coturn's pre-RFC code point, answered
        // in the same dialect: both are comprehension-optional, so an unrecognised one would
        // silently give a coturn client a single-family allocation.
        let (additional, address_error_attr) = match msg.get(attr::ADDITIONAL_ADDRESS_FAMILY) {
            Some(v) => (Some(v), attr::ADDRESS_ERROR_CODE),
            None => (
                msg.get(attr::ADDITIONAL_ADDRESS_FAMILY_DRAFT),
                attr::ADDRESS_ERROR_CODE_DRAFT,
            ),
        };
        let tcp = match msg.get(attr::REQUESTED_TRANSPORT) {
            None => return Err(Reject::new(400, "Missing REQUESTED-TRANSPORT").signed(&auth)),
            Some(v) if v.len() == 4 && v[0] == 17 => false,
            Some(v) if v.len() == 4 && v[0] == 6 && self.config.tcp_relay => {
                // RFC 6062 §5.1: TCP allocations only over TCP/TLS control connections, and
                // without the UDP-only port and family options.
                if !matches!(from.transport, Transport::Tcp | Transport::Tls) {
                    return Err(
                        Reject::new(400, "TCP relay needs a TCP or TLS connection").signed(&auth)
                    );
                }
                if token.is_some() || even.is_some() || additional.is_some() {
                    return Err(
                        Reject::new(400, "Option not valid for a TCP allocation").signed(&auth)
                    );
                }
                true
            }
            Some(_) => return Err(Reject::new(442, "Unsupported Transport Protocol").signed(&auth)),
        };
        if token.is_some() && (even.is_some() || family.is_some() || additional.is_some()) {
            return Err(
                Reject::new(400, "RESERVATION-TOKEN with EVEN-PORT or family").signed(&auth),
            );
        }
        if family.is_some() && additional.is_some() {
            return Err(Reject::new(400, "Both address family attributes").signed(&auth));
        }
        let parse_family = |v: &[u8]| match v.first() {
            Some(1) => Some(Family::V4),
            Some(2) => Some(Family::V6),
            _ => None,
        };
        let primary = match family {
            None => Family::V4,
            Some(v) => parse_family(v)
                .ok_or_else(|| Reject::new(440, "Address Family not Supported").signed(&auth))?,
        };
        let want_v6_too = match additional {
            None => false,
            Some(v) if parse_family(v) == Some(Family::V6) => true,
            Some(_) => {
                return Err(Reject::new(400, "ADDITIONAL-ADDRESS-FAMILY must be IPv6").signed(&auth))
            }
        };
        let port_req = match even {
            None => PortRequest::Any,
            Some(v) if v.first().is_some_and(|b| b & 0x80 != 0) => PortRequest::EvenReserveNext,
            Some(_) => PortRequest::Even,
        };
        if port_req == PortRequest::EvenReserveNext && want_v6_too {
            // RFC 8656 §7.2: a reservation cannot be made for a dual allocation.
            return Err(
                Reject::new(400, "EVEN-PORT R with ADDITIONAL-ADDRESS-FAMILY").signed(&auth),
            );
        }

        self.shared
            .acquire(&auth.user, self.limits.user_quota, self.limits.total_quota)
            .map_err(|code| {
                let reason = if code == 486 {
                    "Allocation Quota Reached"
                } else {
                    "Insufficient Capacity"
                };
                Reject::new(code, reason).signed(&auth)
            })?;

        let port_req = match token {
            Some(t) => {
                let key: Option<[u8; 8]> = t.try_into().ok();
                let mut map = self
                    .shared
                    .reservations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                match key.and_then(|k| map.remove(&k)) {
                    Some(r) => PortRequest::Reserved(r.addr),
                    None => {
                        drop(map);
                        self.shared.release(&auth.user);
                        return Err(Reject::new(508, "Insufficient Capacity").signed(&auth));
                    }
                }
            }
            None => port_req,
        };
        // The response waits for the relay socket: park the Allocate on a bind order.
        self.next_bind += 1;
        let id = BindId(self.next_bind);
        self.outputs.push_back(if tcp {
            Output::BindTcpRelay {
                id,
                family: primary,
            }
        } else {
            Output::BindRelay {
                id,
                family: primary,
                port: port_req,
            }
        });
        self.binds.insert(
            id,
            PendingAllocate {
                from,
                answering: Answering::of(msg),
                auth,
                lifetime: self.lifetime(msg),
                tcp,
                port: port_req,
                want_v6_too,
                address_error_attr,
                relays: Vec::new(),
                cancelled: false,
            },
        );
        Ok(())
    }

    /// The answer to [`Output::BindRelay`] or [`Output::BindTcpRelay`]: finishes the
    /// Allocate that waited for it (RFC 8656 §7.2), or asks for the IPv6 relay of a dual
    /// allocation first. A bind for a client that went away meanwhile is undone.
    pub fn handle_relay_bound(
        &mut self,
        now: Instant,
        id: BindId,
        result: Result<BoundRelay, RelayBindError>,
    ) {
        let Some(mut p) = self.binds.remove(&id) else {
            // Not ours (answered twice): a socket bound for nobody must not leak.
            if let Ok(bound) = result {
                self.outputs.push_back(Output::ReleaseRelay(bound.id));
            }
            return;
        };
        let primary = p.relays.is_empty();
        let mut v6_error = None;
        match result {
            Ok(bound) => p.relays.push(bound),
            Err(e) if primary => {
                self.shared.release(&p.auth.user);
                if p.cancelled {
                    return;
                }
                let r = match e {
                    RelayBindError::FamilyUnsupported => {
                        Reject::new(440, "Address Family not Supported")
                    }
                    RelayBindError::NoPorts => Reject::new(508, "Insufficient Capacity"),
                };
                let r = r.signed(&p.auth);
                self.reject_answering(now, p.from, p.answering, r);
                return;
            }
            Err(RelayBindError::FamilyUnsupported) => v6_error = Some(440u16),
            Err(RelayBindError::NoPorts) => v6_error = Some(508u16),
        }
        let reserved_odd = (p.port == PortRequest::EvenReserveNext)
            .then(|| SocketAddr::new(p.relays[0].addr.ip(), p.relays[0].addr.port() + 1));
        if p.cancelled {
            for r in &p.relays {
                self.outputs.push_back(Output::ReleaseRelay(r.id));
            }
            if let Some(odd) = reserved_odd {
                self.outputs.push_back(Output::ReleaseReservation(odd));
            }
            self.shared.release(&p.auth.user);
            return;
        }
        if primary && p.want_v6_too {
            self.outputs.push_back(Output::BindRelay {
                id,
                family: Family::V6,
                port: PortRequest::Any,
            });
            self.binds.insert(id, p);
            return;
        }
        let reserved_token = reserved_odd.map(|odd| {
            let t = self.new_reservation_token();
            self.shared
                .reservations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    t,
                    Reservation {
                        addr: odd,
                        expires: now + RESERVATION_LIFETIME,
                    },
                );
            t
        });
        self.complete_allocate(now, p, reserved_token, v6_error);
    }

    /// Answers an Allocate whose relays are bound and installs the allocation.
    fn complete_allocate(
        &mut self,
        now: Instant,
        p: PendingAllocate,
        reserved_token: Option<[u8; 8]>,
        v6_error: Option<u16>,
    ) {
        let PendingAllocate {
            from,
            answering,
            auth,
            lifetime,
            tcp,
            address_error_attr,
            relays,
            ..
        } = p;
        let mut b = MessageBuilder::new(method::ALLOCATE, Class::Success, answering.tid);
        for r in &relays {
            b.xor_address(attr::XOR_RELAYED_ADDRESS, self.advertised(r.addr));
        }
        if let Some(code) = v6_error {
            // RFC 8656 §7.2: the IPv6 half failed, report it without failing the request.
            let reason = if code == 440 {
                "Address Family not Supported"
            } else {
                "Insufficient Capacity"
            };
            let mut v = vec![2, 0, (code / 100) as u8, (code % 100) as u8];
            v.extend_from_slice(reason.as_bytes());
            b.attr(address_error_attr, &v);
        }
        b.u32_attr(attr::LIFETIME, lifetime.as_secs() as u32);
        if let Some(t) = reserved_token {
            b.attr(attr::RESERVATION_TOKEN, &t);
        }
        b.xor_address(attr::XOR_MAPPED_ADDRESS, from.remote);
        if let Some(s) = &self.config.software {
            b.attr(attr::SOFTWARE, s.as_bytes());
        }
        if !self.config.no_auth {
            b.integrity(auth.integrity, &auth.key);
        }
        if answering.fingerprint {
            b.fingerprint();
        }
        let response = b.finish();
        for r in &relays {
            self.by_relay.insert(r.id, from);
        }
        let bucket = (self.limits.max_bps > 0).then_some(Bucket {
            tokens: self.limits.max_bps as f64,
            last: now,
        });
        self.allocations.insert(
            from,
            Allocation {
                client: from,
                username: auth.user,
                key: auth.key,
                integrity: auth.integrity,
                relays,
                expires: now + lifetime,
                permissions: FxHashMap::default(),
                channels: FxHashMap::default(),
                channel_by_peer: FxHashMap::default(),
                allocate_tid: answering.tid,
                allocate_response: response.clone(),
                bucket,
                tcp,
            },
        );
        self.stats.allocations_created += 1;
        self.transmits.push_back(Transmit {
            to: from,
            from: None,
            data: response,
        });
    }

    fn success(&mut self, from: ClientTuple, msg: &Message<'_>, auth: &Authed, b: MessageBuilder) {
        let key = (!self.config.no_auth).then_some((auth.key.as_slice(), auth.integrity));
        self.finish(from, None, msg.has_fingerprint(), b, key);
    }

    /// Refresh (RFC 8656 §7.3).
    fn refresh(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
    ) -> Result<(), Reject> {
        let Some(auth) = self.auth_for_allocation(now, from, msg)? else {
            return Ok(());
        };
        let requested = msg.get_u32(attr::LIFETIME);
        let alloc = self
            .allocations
            .get(&from)
            .expect("checked by auth_for_allocation");
        if let Some(v) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let fam = match v.first() {
                Some(1) => Family::V4,
                Some(2) => Family::V6,
                _ => return Err(Reject::new(440, "Address Family not Supported").signed(&auth)),
            };
            if !alloc.relays.iter().any(|r| Family::of(r.addr.ip()) == fam) {
                return Err(Reject::new(443, "Peer Address Family Mismatch").signed(&auth));
            }
        }
        let lifetime = if requested == Some(0) {
            Duration::ZERO
        } else {
            self.lifetime(msg)
        };
        if lifetime.is_zero() {
            self.remove_allocation(&from);
        } else if let Some(a) = self.allocations.get_mut(&from) {
            a.expires = now + lifetime;
        }
        let mut b = MessageBuilder::new(method::REFRESH, Class::Success, msg.transaction_id());
        b.u32_attr(attr::LIFETIME, lifetime.as_secs() as u32);
        self.success(from, msg, &auth, b);
        Ok(())
    }

    /// Checks a peer address against the policy and the allocation's families.
    fn check_peer(&self, alloc: &Allocation, peer: SocketAddr) -> Result<(), Reject> {
        if relay_for(&alloc.relays, peer).is_none() {
            return Err(Reject::new(443, "Peer Address Family Mismatch"));
        }
        if !self.peer_policy.permits(peer.ip()) {
            return Err(Reject::new(403, "Forbidden IP"));
        }
        Ok(())
    }

    /// CreatePermission (RFC 8656 §9).
    fn create_permission(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
    ) -> Result<(), Reject> {
        let Some(auth) = self.auth_for_allocation(now, from, msg)? else {
            return Ok(());
        };
        let alloc = self
            .allocations
            .get(&from)
            .expect("checked by auth_for_allocation");
        let mut peers = Vec::new();
        for p in msg.xor_addresses(attr::XOR_PEER_ADDRESS) {
            let p = p.ok_or_else(|| Reject::new(400, "Bad XOR-PEER-ADDRESS").signed(&auth))?;
            self.check_peer(alloc, p).map_err(|r| r.signed(&auth))?;
            peers.push(p.ip());
        }
        if peers.is_empty() {
            return Err(Reject::new(400, "Missing XOR-PEER-ADDRESS").signed(&auth));
        }
        let expires = now + self.config.permission_lifetime;
        let alloc = self.allocations.get_mut(&from).expect("checked above");
        for ip in peers {
            if alloc.permissions.insert(ip, expires).is_none() {
                self.permissions += 1;
            }
        }
        let b = MessageBuilder::new(
            method::CREATE_PERMISSION,
            Class::Success,
            msg.transaction_id(),
        );
        self.success(from, msg, &auth, b);
        Ok(())
    }

    /// ChannelBind (RFC 8656 §11.2).
    fn channel_bind(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
    ) -> Result<(), Reject> {
        let Some(auth) = self.auth_for_allocation(now, from, msg)? else {
            return Ok(());
        };
        let alloc = self
            .allocations
            .get(&from)
            .expect("checked by auth_for_allocation");
        let ch = match msg.get(attr::CHANNEL_NUMBER) {
            Some(v) if v.len() == 4 => u16::from_be_bytes([v[0], v[1]]),
            _ => return Err(Reject::new(400, "Missing CHANNEL-NUMBER").signed(&auth)),
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&ch) {
            return Err(Reject::new(400, "Bad channel number").signed(&auth));
        }
        let peer = msg
            .xor_addresses(attr::XOR_PEER_ADDRESS)
            .next()
            .flatten()
            .ok_or_else(|| Reject::new(400, "Missing XOR-PEER-ADDRESS").signed(&auth))?;
        self.check_peer(alloc, peer).map_err(|r| r.signed(&auth))?;
        // RFC 8656 §11.2: the channel may not be bound to another peer (even in its
        // quarantine after expiry), nor the peer to another channel.
        if let Some(c) = alloc.channels.get(&ch) {
            if c.peer != peer {
                return Err(Reject::new(400, "Channel bound to another peer").signed(&auth));
            }
        }
        if let Some(&other) = alloc.channel_by_peer.get(&peer) {
            if other != ch {
                return Err(Reject::new(400, "Peer bound to another channel").signed(&auth));
            }
        }
        let ch_expires = now + self.config.channel_lifetime;
        let perm_expires = now + self.config.permission_lifetime;
        let alloc = self.allocations.get_mut(&from).expect("checked above");
        if alloc
            .channels
            .insert(
                ch,
                Channel {
                    peer,
                    expires: ch_expires,
                },
            )
            .is_none()
        {
            self.channels += 1;
        }
        alloc.channel_by_peer.insert(peer, ch);
        // A channel binding also installs or refreshes the permission (RFC 8656 §11.2).
        match alloc.permissions.entry(peer.ip()) {
            Entry::Occupied(mut e) => {
                e.insert(perm_expires.max(*e.get()));
            }
            Entry::Vacant(e) => {
                e.insert(perm_expires);
                self.permissions += 1;
            }
        }
        let b = MessageBuilder::new(method::CHANNEL_BIND, Class::Success, msg.transaction_id());
        self.success(from, msg, &auth, b);
        Ok(())
    }

    fn remove_allocation(&mut self, tuple: &ClientTuple) {
        if let Some(a) = self.allocations.remove(tuple) {
            for r in &a.relays {
                self.by_relay.remove(&r.id);
                self.outputs.push_back(Output::ReleaseRelay(r.id));
            }
            self.permissions -= a.permissions.len();
            self.channels -= a.channels.len();
            self.shared.release(&a.username);
            if a.tcp {
                self.close_connections_of(tuple);
            }
        }
    }

    /// Removes everything of a client whose stream (or DTLS) connection closed (RFC 8656
    /// §2.2: a TCP or TLS allocation ends with its connection).
    pub fn handle_client_closed(&mut self, _now: Instant, tuple: &ClientTuple) {
        // A request still waiting for its key or relay must not create an allocation
        // nobody can use.
        self.parked.retain(|p| p.from != *tuple);
        for p in self.binds.values_mut() {
            if p.from == *tuple {
                p.cancelled = true;
            }
        }
        self.remove_allocation(tuple);
        self.data_connection_closed(tuple);
    }

    /// Expires allocations, permissions, channels, reservations and parked requests.
    fn sweep(&mut self, now: Instant) {
        match self.next_sweep {
            Some(t) if t <= now => {}
            _ => return,
        }
        self.next_sweep = Some(now + SWEEP_INTERVAL);
        let expired: Vec<ClientTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            self.remove_allocation(&t);
        }
        let (mut perms, mut chans) = (0, 0);
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, exp| *exp > now);
            let channels = &mut a.channels;
            channels.retain(|_, c| c.expires + CHANNEL_QUARANTINE > now);
            a.channel_by_peer.retain(|_, ch| channels.contains_key(ch));
            perms += a.permissions.len();
            chans += a.channels.len();
        }
        self.permissions = perms;
        self.channels = chans;
        let expired: Vec<SocketAddr> = {
            let mut map = self
                .shared
                .reservations
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut gone = Vec::new();
            map.retain(|_, r| {
                let keep = r.expires > now;
                if !keep {
                    gone.push(r.addr);
                }
                keep
            });
            gone
        };
        self.outputs
            .extend(expired.into_iter().map(Output::ReleaseReservation));
        self.expire_connections(now);
        self.parked
            .retain(|p| now.saturating_duration_since(p.since) < PARKED_TIMEOUT);
        self.lookups
            .retain(|_, at| now.saturating_duration_since(*at) < PARKED_TIMEOUT);
        let rate = f64::from(self.config.unauthenticated_rate);
        self.rate.retain(|_, (tokens, last)| {
            *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < rate * 2.0
        });
    }
}

impl ProtocolCore for Server {
    type Output = Output;

    fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Expires allocations, permissions, channels, reservations, RFC 6062 connections
    /// waiting for a bind, parked requests and unanswered lookups (once a second).
    fn handle_timeout(&mut self, now: Instant) {
        self.sweep(now);
    }

    fn set_wall_clock(&mut self, now: Instant, since_epoch: Duration) {
        self.wall = Some(WallClock::new(now, since_epoch));
    }
}

/// The relay of the allocation whose family matches the peer (dual allocations have one
/// of each, RFC 8656 §7).
fn relay_for(relays: &[BoundRelay], peer: SocketAddr) -> Option<RelayId> {
    let fam = Family::of(crate::peer_policy::canonical(peer.ip()));
    let fam = if peer.is_ipv6() && fam == Family::V4 {
        // An IPv4-mapped peer is reached through an IPv6 socket only if we have one.
        Family::V6
    } else {
        fam
    };
    relays
        .iter()
        .find(|r| Family::of(r.addr.ip()) == fam)
        .map(|r| r.id)
}

fn take_bandwidth(alloc: &mut Allocation, now: Instant, len: usize, max_bps: u64) -> bool {
    let Some(b) = alloc.bucket.as_mut() else {
        return true;
    };
    if max_bps == 0 {
        return true;
    }
    let rate = max_bps as f64;
    b.tokens = (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate).min(rate);
    b.last = now;
    if b.tokens >= len as f64 {
        b.tokens -= len as f64;
        true
    } else {
        false
    }
}
