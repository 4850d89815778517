//! The proxy and registrar core of `sipd`: everything between "bytes arrived from a peer"
//! and "send these bytes / store these bindings", with no I/O.
//!
//! The daemon owns one [`Core`] and drives it as every core of the suite is driven (the
//! polling order is described in [`rtc_proto`]):
//! - [`ProtocolCore::set_wall_clock`] before the first input and then every few seconds:
//!   binding expiries, nonce lifetimes and the Date header are calendar times (Kamailio's
//!   `location.expires` is a date), derived from that clock and the monotonic `now`;
//! - [`Core::handle_message`] with each datagram or framed stream message;
//! - [`Core::handle_credentials`] when a [`Output::FetchCredentials`] lookup finished;
//! - [`Core::handle_stored`] when a [`Output::Store`] batch is durable (the 200 OK to a
//!   REGISTER is only released then, so a `kill -9` never loses an acknowledged binding);
//! - [`Core::handle_resolved`] when a [`Output::Resolve`] lookup finished;
//! - [`Core::handle_connection_closed`] when a TCP/TLS/WebSocket connection goes away;
//! - [`ProtocolCore::handle_timeout`] at [`ProtocolCore::poll_timeout`];
//! - and drains [`ProtocolCore::poll_output`] after each call.
//!
//! Bindings live in memory (loaded at start with [`Core::load_binding`]) and every change
//! goes out as an [`Output::Store`] order, so the database is written through, in batches.

mod auth;
mod nonce;
mod proxy;
mod registrar;

use crate::message::{
    error_response, parse_auth_header, Contacts, Header, HeaderName, Message, Method,
};
use crate::txn::{
    ClientTxnId, ConnId, Incoming, Peer, ResponseEvent, ResponseMatch, ServerTxnId, Timers,
    Transmit, Transport, TxnEvent, TxnLayer,
};
use crate::uri::{NameAddr, Uri};
use nonce::{NonceState, Nonces};
use proxy::{PendingResolve, ProxyCtx};
use registrar::Location;
pub use rtc_proto::{CloseReason, ProtocolCore, WallClock};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use rtc_auth::sip::DigestAlgorithm;

/// A contact binding of an address of record (RFC 3261 section 10; Kamailio's `location`
/// row). Strings are kept as received so the row reads the same in Kamailio's tools.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Kamailio's unique record id.
    pub ruid: String,
    /// `user` part of the AOR (unescaped).
    pub username: String,
    /// Domain of the AOR (lower-case).
    pub domain: String,
    /// The Contact URI as the UA sent it (without `<>` or header parameters).
    pub contact: String,
    /// `sip:IP:PORT;transport=...` the REGISTER really came from, when it differs from the
    /// contact (NAT, RFC 3581 / Kamailio's fix_nated_register).
    pub received: Option<String>,
    /// Path header values joined with `,` (RFC 3327).
    pub path: Option<String>,
    /// Absolute expiry, Unix seconds.
    pub expires: u64,
    /// q-value in thousandths (1000 = 1.0).
    pub q: u16,
    pub call_id: String,
    pub cseq: u32,
    pub user_agent: String,
    /// Our listening socket it arrived on, Kamailio's `proto:ip:port` form.
    pub socket: Option<String>,
    /// RFC 5626 `+sip.instance` and `reg-id`.
    pub instance: Option<String>,
    pub reg_id: u32,
    /// Unix seconds of the last change.
    pub last_modified: u64,
    /// The TCP/TLS connection it registered over (not persisted: gone after a restart,
    /// when the UA has to reconnect anyway).
    pub conn: Option<ConnId>,
}

/// A change to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingOp {
    Upsert(Box<Binding>),
    Delete { ruid: String },
}

/// Stored digest secrets of one subscriber (never a clear-text password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// MD5(user:realm:password), hex.
    pub ha1_md5: String,
    /// SHA-256(user:realm:password), hex, when known (RFC 8760).
    pub ha1_sha256: Option<String>,
}

/// One of our listening sockets, as the daemon bound it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// Host to put in Via/Record-Route for this socket (the address itself when `None`).
    pub advertise: Option<String>,
}

/// Proxy and registrar settings (Kamailio's names in the daemon's config).
#[derive(Debug, Clone)]
pub struct Config {
    /// Domains we are the registrar and home proxy for (Kamailio `alias`); the first is
    /// the digest realm.
    pub domains: Vec<String>,
    pub listeners: Vec<Listener>,
    /// Challenge algorithms, strongest first (RFC 8760 section 2.4: one challenge each).
    pub algorithms: Vec<DigestAlgorithm>,
    /// Nonce lifetime (Kamailio auth `nonce_expire`).
    pub nonce_expire: Duration,
    pub default_expires: u32,
    pub min_expires: u32,
    pub max_expires: u32,
    /// Bindings per AOR, 0 = unlimited.
    pub max_contacts: usize,
    /// Relay requests to domains we do not serve (for anyone but trusted peers).
    pub allow_relay: bool,
    /// Trunks and PBXs trusted by source address: no authentication, may relay.
    pub trusted: Vec<(IpAddr, u8)>,
    /// User-Agent substrings whose requests are dropped silently (scanners).
    pub drop_user_agents: Vec<String>,
    /// Timer C (RFC 3261 section 16.6 step 11; Kamailio `fr_inv_timer`).
    pub invite_timeout: Duration,
    /// Server header / User-Agent on what we originate.
    pub server_name: String,
    pub limits: crate::message::Limits,
}

/// Orders for the daemon.
#[derive(Debug)]
pub enum Output {
    Transmit(Transmit),
    /// Look up `user@domain`; answer with [`Core::handle_credentials`].
    FetchCredentials {
        username: String,
        domain: String,
    },
    /// Make these changes durable in one transaction; answer [`Core::handle_stored`] with
    /// `id`.
    Store {
        id: u64,
        ops: Vec<BindingOp>,
    },
    /// Find where to send a request for `sip(s):host[:port][;transport=]` (RFC 3263
    /// section 4: NAPTR/SRV/A/AAAA); answer [`Core::handle_resolved`] with `id`.
    Resolve {
        id: u64,
        host: String,
        port: Option<u16>,
        transport: Option<Transport>,
        secure: bool,
    },
}

/// Counters for `/metrics` (monotonic unless noted).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: Vec<(String, u64)>,
    pub replies_by_class: [u64; 7],
    pub auth_failures: u64,
    pub auth_challenges: u64,
    pub malformed: u64,
    pub dropped_scanners: u64,
    /// Current values.
    pub contacts: u64,
    pub server_txns: u64,
    pub client_txns: u64,
}

/// The proxy/registrar state machine; see the module doc for how the daemon drives it.
pub struct Core {
    cfg: Config,
    txn: TxnLayer,
    nonces: Nonces,
    rng: u64,
    location: Location,
    outputs: VecDeque<Output>,
    /// Requests waiting for a subscriber's credentials, by (username, domain).
    parked: HashMap<(String, String), Vec<Parked>>,
    /// (deadline, key) of each fetch, so a lookup the database never answers still ends.
    park_deadlines: VecDeque<(Instant, (String, String))>,
    /// REGISTER answers held until their binding changes are durable, by store id.
    held: HashMap<u64, HeldReply>,
    /// AORs with a binding change in flight, each with the REGISTERs that arrived for it
    /// meanwhile: one change per AOR at a time, so each starts from committed state.
    registering: HashMap<String, VecDeque<QueuedRegister>>,
    next_store_id: u64,
    proxies: HashMap<ServerTxnId, ProxyCtx>,
    /// Requests waiting for DNS, and their deadlines.
    resolving: HashMap<u64, PendingResolve>,
    resolve_deadlines: VecDeque<(Instant, u64)>,
    next_resolve_id: u64,
    branches: HashMap<ClientTxnId, ServerTxnId>,
    /// Timer C deadlines (lazy: a popped entry whose context is gone is ignored).
    timer_c: BinaryHeap<Reverse<(Instant, u64, ServerTxnId)>>,
    /// Finished proxy contexts kept a little for 2xx retransmissions, (deadline, id).
    lingering: VecDeque<(Instant, ServerTxnId)>,
    last_now: Option<Instant>,
    /// Calendar time; `None` (read as the epoch) until the daemon sets it.
    wall: Option<WallClock>,
    stats: Stats,
    requests_by_method: HashMap<String, u64>,
}

/// Something parked until its credentials arrive.
struct Parked {
    since: Instant,
    id: ServerTxnId,
    req: Message,
    from: Peer,
    local: SocketAddr,
    auth: DigestAuth,
}

/// A REGISTER whose 200 waits for its [`Output::Store`]; the AOR's new bindings are
/// installed in memory only once that store committed.
struct HeldReply {
    id: ServerTxnId,
    response: Message,
    aor: String,
    bindings: Vec<Binding>,
}

/// An authenticated REGISTER waiting for an earlier change of the same AOR to commit.
struct QueuedRegister {
    id: ServerTxnId,
    req: Message,
    from: Peer,
    local: SocketAddr,
}

/// Parsed `Authorization`/`Proxy-Authorization` digest credentials (RFC 7616 section 3.4).
#[derive(Debug, Clone)]
struct DigestAuth {
    username: String,
    realm: String,
    nonce: String,
    uri: String,
    response: String,
    algorithm: DigestAlgorithm,
    qop: Option<String>,
    nc: Option<String>,
    cnonce: Option<String>,
}

/// Which challenge header family a request uses: 401 WWW-Authenticate for the registrar
/// (RFC 3261 section 22.2), 407 Proxy-Authenticate for the proxy (section 22.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    Www,
    Proxy,
}

/// How long a request waits for its subscriber's credentials before it is answered 503
/// (the database is down or its queue is full; the UA may try again later).
const PARK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a finished INVITE context stays to relay 2xx retransmissions (64*T1).
const LINGER: Duration = Duration::from_secs(32);
/// Default Max-Forwards we add when a request has none (RFC 3261 section 16.6 step 3).
const MAX_FORWARDS: u32 = 70;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn reply_class(code: u16) -> usize {
    (code / 100).clamp(1, 6) as usize
}

impl Core {
    /// `secret` keys the nonces (RFC 7616 section 3.3: the server's private data), `seed`
    /// feeds tags, branches and ruids.
    pub fn new(config: Config, secret: [u8; 32], seed: u64) -> Core {
        let mut rng = seed;
        let first_serial = splitmix(&mut rng);
        Core {
            nonces: Nonces::new(secret, config.nonce_expire.as_secs(), first_serial),
            cfg: config,
            txn: TxnLayer::new(Timers::default()),
            rng,
            location: Location::default(),
            outputs: VecDeque::new(),
            parked: HashMap::new(),
            park_deadlines: VecDeque::new(),
            held: HashMap::new(),
            registering: HashMap::new(),
            next_store_id: 1,
            proxies: HashMap::new(),
            resolving: HashMap::new(),
            resolve_deadlines: VecDeque::new(),
            next_resolve_id: 1,
            branches: HashMap::new(),
            timer_c: BinaryHeap::new(),
            lingering: VecDeque::new(),
            last_now: None,
            wall: None,
            stats: Stats::default(),
            requests_by_method: HashMap::new(),
        }
    }

    /// A binding read back from the database at start-up.
    pub fn load_binding(&mut self, binding: Binding) {
        self.location.insert(binding);
    }

    /// Replaces every binding (after `rtc-admin sip ul ...` changed the table and the
    /// daemon re-read it on SIGHUP). Connections of bindings that survive are kept.
    pub fn reload_bindings(&mut self, bindings: Vec<Binding>) {
        let old = std::mem::take(&mut self.location);
        for mut b in bindings {
            if let Some(prev) = old.find_ruid(&b.ruid) {
                b.conn = prev.conn;
            }
            self.location.insert(b);
        }
    }

    /// New settings (SIGHUP). Transactions in flight keep running.
    pub fn update_config(&mut self, config: Config) {
        self.nonces.set_lifetime(config.nonce_expire.as_secs());
        self.cfg = config;
    }

    /// One datagram, or one message framed off a stream, from `from` on our socket
    /// `local`.
    pub fn handle_message(&mut self, now: Instant, from: Peer, local: SocketAddr, data: &[u8]) {
        let unix = self.tick(now);
        let msg = match Message::parse(data, &self.cfg.limits) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                if let Some(bytes) = error_response(data, &e) {
                    self.count_reply(e.status());
                    self.outputs.push_back(Output::Transmit(Transmit {
                        peer: from,
                        data: bytes,
                    }));
                }
                return;
            }
        };
        if msg.is_request() {
            self.on_request(now, unix, msg, from, local);
        } else {
            self.on_response(now, unix, msg, from);
        }
        self.drain_txn(now, unix);
    }

    /// Result of a [`Output::FetchCredentials`]: `None` for no such subscriber (answered
    /// exactly like a wrong password, so accounts cannot be enumerated).
    pub fn handle_credentials(
        &mut self,
        now: Instant,
        username: &str,
        domain: &str,
        creds: Option<Credentials>,
    ) {
        let unix = self.tick(now);
        let key = (username.to_string(), domain.to_string());
        for p in self.parked.remove(&key).unwrap_or_default() {
            self.resume_authenticated(now, unix, p, creds.as_ref());
        }
        self.drain_txn(now, unix);
    }

    /// A [`Output::Store`] batch committed (`ok`) or failed. Only a committed change
    /// reaches the in-memory location table (and so routing); a failed one answers the
    /// REGISTER with 500 so the UA retries, and leaves the AOR as the database has it.
    pub fn handle_stored(&mut self, now: Instant, id: u64, ok: bool) {
        let unix = self.tick(now);
        self.finish_register(now, unix, id, ok);
        self.drain_txn(now, unix);
    }

    /// The [`Output::FetchCredentials`] lookup failed (the database, not the user): the
    /// requests waiting for it get 503 with Retry-After at once, never the 401 of a wrong
    /// password (a UA that takes a 401 for a bad password stops registering).
    pub fn handle_credentials_unavailable(&mut self, now: Instant, username: &str, domain: &str) {
        let unix = self.tick(now);
        let key = (username.to_string(), domain.to_string());
        for p in self.parked.remove(&key).unwrap_or_default() {
            self.unavailable(now, p);
        }
        self.drain_txn(now, unix);
    }

    /// 503 Service Unavailable with Retry-After (RFC 3261 section 21.5.4) for a request
    /// whose credentials cannot be had now.
    fn unavailable(&mut self, now: Instant, p: Parked) {
        let mut r = self.make_response(&p.req, 503, "Service Unavailable");
        r.set_header(HeaderName::Other("Retry-After".into()), "5".into());
        self.send_response(now, p.id, r);
    }

    /// Result of an [`Output::Resolve`]: destinations in preference order, empty when the
    /// name does not resolve.
    pub fn handle_resolved(&mut self, now: Instant, id: u64, peers: Vec<Peer>) {
        let unix = self.tick(now);
        self.resolved_inner(now, unix, id, peers);
        self.drain_txn(now, unix);
    }

    /// A TCP/TLS/WebSocket connection closed: transactions and bindings using it are told
    /// (bindings stay, routed by their received address; if the UA reconnects from
    /// elsewhere they are refreshed by the next REGISTER). Both reasons are handled alike:
    /// either way nothing more can be sent on it (RFC 3261 section 18.4).
    pub fn handle_connection_closed(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let _ = reason;
        let unix = self.tick(now);
        self.txn.transport_error(now, conn);
        self.location.forget_conn(conn);
        for h in self.held.values_mut() {
            for b in h.bindings.iter_mut().filter(|b| b.conn == Some(conn)) {
                b.conn = None;
            }
        }
        // Requests still waiting (for credentials, or behind another change of their
        // AOR) must not bind a contact to the connection that just went away.
        let waiting = self.registering.values_mut().flatten().map(|q| &mut q.from);
        let parked = self.parked.values_mut().flatten().map(|p| &mut p.from);
        for from in waiting.chain(parked).filter(|f| f.conn == Some(conn)) {
            from.conn = None;
        }
        self.drain_txn(now, unix);
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.requests = self
            .requests_by_method
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        s.requests.sort();
        s.contacts = self.location.len() as u64;
        let (server, client) = self.txn.len();
        s.server_txns = server as u64;
        s.client_txns = client as u64;
        s
    }

    /// Notes `now` (the base of [`ProtocolCore::poll_timeout`]) and returns the Unix
    /// seconds at `now`, which every calendar decision of this input uses.
    fn tick(&mut self, now: Instant) -> u64 {
        self.last_now = Some(now);
        self.wall.map_or(0, |w| w.unix(now))
    }

    fn random_hex(&mut self) -> String {
        format!("{:016x}", splitmix(&mut self.rng))
    }

    fn count_reply(&mut self, code: u16) {
        self.stats.replies_by_class[reply_class(code)] += 1;
    }

    /// A response to `req` from us, with our To tag and Server header.
    fn make_response(&mut self, req: &Message, code: u16, reason: &str) -> Message {
        let tag = if code > 100 {
            Some(self.local_tag(req))
        } else {
            None
        };
        let mut r = Message::response_to(req, code, reason, tag.as_deref());
        if !self.cfg.server_name.is_empty() {
            r.set_header(HeaderName::Server, self.cfg.server_name.clone());
        }
        r
    }

    /// Our To tag for responses we generate: stable for one request (so a retransmitted
    /// request that slips past the transaction layer gets the same tag), RFC 3261 section
    /// 8.2.6.2.
    fn local_tag(&self, req: &Message) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let key = [
            req.call_id().unwrap_or(""),
            &req.top_via()
                .and_then(|v| v.branch().map(str::to_string))
                .unwrap_or_default(),
        ]
        .concat();
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        format!("{:x}", h ^ self.rng.rotate_left(17))
    }

    fn send_response(&mut self, now: Instant, id: ServerTxnId, response: Message) {
        let code = response.status().unwrap_or(500);
        self.count_reply(code);
        self.txn.respond(now, id, response);
        if code >= 200 {
            self.finish(now, id);
        }
    }

    /// Answers a request on its server transaction with a bare response.
    fn reply(&mut self, now: Instant, id: ServerTxnId, req: &Message, code: u16, reason: &str) {
        let r = self.make_response(req, code, reason);
        self.send_response(now, id, r);
    }

    /// Moves transaction-layer events into the core (client timeouts become 408s).
    fn drain_txn(&mut self, now: Instant, unix: u64) {
        while let Some(ev) = self.txn.poll_event() {
            match ev {
                TxnEvent::ClientTimeout(cid) => {
                    self.branch_failed(now, unix, cid, 408, "Request Timeout")
                }
                // Section 16.9: a transport error counts as a 503 from that branch.
                TxnEvent::ClientTransportError(cid) => {
                    self.branch_failed(now, unix, cid, 503, "Service Unavailable")
                }
                TxnEvent::ServerTimeout(_) | TxnEvent::ServerTerminated(_) => {}
            }
        }
    }

    /// Whether `host[:port]` names us: one of our domains, or one of our listening
    /// addresses / advertised names (RFC 3261 section 16.4 "the proxy's own URI").
    fn is_local_host(&self, host: &str, port: Option<u16>) -> bool {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        if port.is_none() && self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(h)) {
            return true;
        }
        self.cfg.listeners.iter().any(|l| {
            let port_ok = |p: u16| port.map_or(p == 5060 || p == 5061, |x| x == p);
            let adv = l.advertise.as_deref().map(split_host_port);
            match adv {
                Some((ah, ap)) if ah.eq_ignore_ascii_case(h) => {
                    port_ok(ap.unwrap_or(l.addr.port()))
                }
                _ => {
                    let ip_match = h
                        .parse::<IpAddr>()
                        .map(|ip| {
                            ip == l.addr.ip() || (l.addr.ip().is_unspecified() && ip.is_loopback())
                        })
                        .unwrap_or(false);
                    ip_match && port_ok(l.addr.port())
                }
            }
        }) || (self.cfg.domains.iter().any(|d| d.eq_ignore_ascii_case(h))
            && port.is_some_and(|p| self.cfg.listeners.iter().any(|l| l.addr.port() == p)))
    }

    fn is_our_domain(&self, host: &str) -> bool {
        self.cfg
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(host))
            || self.is_local_host(host, None)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.cfg
            .trusted
            .iter()
            .any(|&(net, len)| ip_in(ip, net, len))
    }

    /// Our listener matching `transport` and the address family of `dest`, preferring
    /// the socket the request came in on.
    fn listener_for(
        &self,
        transport: Transport,
        dest: IpAddr,
        prefer: SocketAddr,
    ) -> Option<&Listener> {
        let fam = |a: &SocketAddr| a.is_ipv4() == dest.is_ipv4();
        self.cfg
            .listeners
            .iter()
            .find(|l| l.transport == transport && l.addr == prefer)
            .or_else(|| {
                self.cfg
                    .listeners
                    .iter()
                    .find(|l| l.transport == transport && fam(&l.addr))
            })
            .or_else(|| self.cfg.listeners.iter().find(|l| l.transport == transport))
    }
}

/// The suite's core contract; see the module doc for what each input is.
impl ProtocolCore for Core {
    type Output = Output;

    fn handle_timeout(&mut self, now: Instant) {
        let unix = self.tick(now);
        self.expire_resolves(now);
        self.txn.handle_timeout(now);
        while let Some(Reverse((at, _, id))) = self.timer_c.peek().copied() {
            if at > now {
                break;
            }
            self.timer_c.pop();
            self.fire_timer_c(now, id);
        }
        while let Some(&(at, id)) = self.lingering.front() {
            if at > now {
                break;
            }
            self.lingering.pop_front();
            if let Some(ctx) = self.proxies.get(&id) {
                if ctx.finished {
                    let ctx = self.proxies.remove(&id).expect("present");
                    for b in ctx.branches {
                        self.branches.remove(&b.client);
                    }
                }
            }
        }
        while let Some((at, _)) = self.park_deadlines.front() {
            if *at > now {
                break;
            }
            let (_, key) = self.park_deadlines.pop_front().expect("peeked");
            let expired: Vec<Parked> = match self.parked.get_mut(&key) {
                Some(list) => {
                    let (old, keep): (Vec<Parked>, Vec<Parked>) =
                        list.drain(..).partition(|p| p.since + PARK_TIMEOUT <= now);
                    *list = keep;
                    old
                }
                None => Vec::new(),
            };
            if self.parked.get(&key).is_some_and(Vec::is_empty) {
                self.parked.remove(&key);
            }
            for p in expired {
                self.unavailable(now, p);
            }
        }
        self.expire_bindings(unix);
        self.nonces.housekeeping(unix);
        if self.proxies.capacity() > 1024 && self.proxies.capacity() > 4 * self.proxies.len() {
            self.proxies.shrink_to_fit();
            self.branches.shrink_to_fit();
        }
        self.drain_txn(now, unix);
    }

    /// Next time [`ProtocolCore::handle_timeout`] is due. At most a second away, so
    /// expired bindings are purged promptly (their expiry is in Unix seconds).
    fn poll_timeout(&self) -> Option<Instant> {
        let base = self.last_now?;
        let mut t = base + Duration::from_secs(1);
        if let Some(x) = self.txn.poll_timeout() {
            t = t.min(x);
        }
        if let Some(Reverse((x, _, _))) = self.timer_c.peek() {
            t = t.min(*x);
        }
        if let Some((x, _)) = self.lingering.front() {
            t = t.min(*x);
        }
        if let Some((x, _)) = self.park_deadlines.front() {
            t = t.min(*x);
        }
        if let Some((x, _)) = self.resolve_deadlines.front() {
            t = t.min(*x);
        }
        Some(t)
    }

    fn poll_output(&mut self) -> Option<Output> {
        if let Some(t) = self.txn.poll_transmit() {
            return Some(Output::Transmit(t));
        }
        self.outputs.pop_front()
    }

    /// Re-anchors calendar time. Binding expiries, nonce lifetimes and the Date header are
    /// Unix seconds computed from this anchor and the monotonic `now` of each input.
    fn set_wall_clock(&mut self, now: Instant, since_epoch: Duration) {
        self.wall = Some(WallClock::new(now, since_epoch));
    }
}

/// `host[:port]` split, IPv6 references keep their brackets.
fn split_host_port(s: &str) -> (&str, Option<u16>) {
    if let Some(end) = s.find(']') {
        let (h, rest) = s.split_at(end + 1);
        return (h, rest.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (s, None),
    }
}

fn ip_in(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a
            .to_ipv4_mapped()
            .is_some_and(|v4| ip_in(IpAddr::V4(v4), net, len)),
        _ => false,
    }
}
