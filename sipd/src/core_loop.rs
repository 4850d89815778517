//! The core loop: the one place sipd calls into the protocol [`Core`]. It runs on the core
//! thread (`rtc_daemon::core`, which drives it turn by turn) and owns the core, pike,
//! every UDP socket and the sending side of every TCP/TLS connection. Nothing else touches
//! the core, so it needs no lock.
//!
//! Each turn waits for the first of:
//! - a UDP socket turning readable: datagrams are read with `try_recv_from` until the
//!   socket would block (or a burst limit, so one flooded socket cannot starve the rest),
//!   each through pike, the STUN keep-alive check and then [`Core::handle`];
//! - an [`Event`] from elsewhere: a framed message or a connection opening or closing
//!   (connection tasks, `stream.rs`), credentials (database task), a committed location
//!   batch (location writer); a reload or shutdown comes from the main thread;
//! - the core's next timer ([`Core::poll_timeout`]) or the one-second housekeeping tick
//!   (pike expiry, metrics);
//!
//! and then drains [`Core::poll_output`]: transmits go out at once (UDP `try_send_to`, or
//! the connection's queue), credential lookups go to the database task unless cached, and
//! location changes go to the location writer, whose answer ([`Core::stored`]) is what
//! releases a REGISTER's 200 OK.

use crate::db::{Lookup, WriterCmd};
use crate::keepalive::{self, Datagram};
use crate::metrics::Metrics;
use crate::stream::{ConnCmd, Streams, CONN_QUEUE};
use anyhow::Context as _;
use rtc_daemon::core::since_epoch;
use rtc_daemon::writer::Order;
use sip_proto::core::{
    Binding, CloseReason, Config as CoreConfig, Core, Credentials, Output, ProtocolCore, Stats,
};
use sip_proto::pike::{Pike, PikeConfig, PikeStats, Verdict};
use sip_proto::txn::{ConnId, Peer, Transmit, Transport};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// Datagrams read from one socket before looking at anything else.
const UDP_BURST: usize = 256;
/// Credentials are trusted this long before the database is asked again, so a password
/// changed with `rtc-admin` takes effect without a reload (SIGHUP clears the cache).
const CREDS_TTL: Duration = Duration::from_secs(30);
/// Unknown users are remembered briefly, so guessing names cannot hammer the database.
const UNKNOWN_TTL: Duration = Duration::from_secs(5);
const CREDS_CACHE_MAX: usize = 100_000;

/// Everything that reaches the core loop from other tasks.
#[derive(Debug)]
pub enum Event {
    /// An accepted connection is ready (after the TLS handshake).
    Opened {
        id: ConnId,
        transport: Transport,
        remote: SocketAddr,
        local: SocketAddr,
        tx: mpsc::Sender<ConnCmd>,
    },
    /// An outgoing connection the core loop asked for is established.
    Connected {
        id: ConnId,
        local: SocketAddr,
    },
    /// One framed SIP message from a connection.
    Message {
        id: ConnId,
        data: Vec<u8>,
    },
    Closed {
        id: ConnId,
        reason: CloseReason,
    },
    /// A credential lookup finished.
    Credentials {
        username: String,
        domain: String,
        found: Result<Option<Credentials>, rtc_store::StoreError>,
    },
    /// Location batches committed (or not).
    Stored {
        ids: Vec<u64>,
        ok: bool,
    },
    /// Bindings re-read from the database (SIGHUP, after `rtc-admin sip ul ...`).
    Bindings(Vec<Binding>),
    /// An RFC 3263 lookup finished (`dns.rs`).
    Resolved {
        id: u64,
        peers: Vec<Peer>,
    },
}

/// SIGHUP: new settings if the file still checks; in any case cached credentials are
/// forgotten.
pub type Reload = Option<Box<(CoreConfig, PikeConfig)>>;

/// What the core loop is started with.
pub struct Setup {
    pub core: CoreConfig,
    pub pike: PikeConfig,
    pub bindings: Vec<Binding>,
    pub udp: Vec<std::net::UdpSocket>,
    pub streams: Arc<Streams>,
    pub metrics: Arc<Metrics>,
    pub lookups: mpsc::Sender<Lookup>,
    pub writer: mpsc::Sender<WriterCmd>,
    pub dns: mpsc::Sender<crate::dns::Query>,
}

impl SipLoop {
    /// Makes the loop on the core thread (the UDP sockets register with its runtime):
    /// the core, holding the bindings read at start.
    pub fn new(setup: Setup) -> anyhow::Result<SipLoop> {
        let mut udp = Vec::new();
        for s in setup.udp {
            let local = s.local_addr().context("UDP socket")?;
            let sock = UdpSocket::from_std(s).with_context(|| format!("UDP {local}"))?;
            udp.push(UdpListener { sock, local });
        }
        let mut core = Core::new(setup.core, rand::random(), rand::random());
        core.set_wall_clock(Instant::now(), since_epoch());
        let count = setup.bindings.len();
        for b in setup.bindings {
            core.load_binding(b);
        }
        info!("{count} contact bindings loaded");
        Ok(SipLoop {
            core,
            pike: Pike::new(setup.pike),
            udp,
            udp_start: 0,
            conns: HashMap::new(),
            by_addr: HashMap::new(),
            streams: setup.streams,
            metrics: setup.metrics,
            lookups: setup.lookups,
            writer: setup.writer,
            dns: setup.dns,
            creds: HashMap::new(),
            pending_lookups: HashSet::new(),
            outstanding: 0,
            published: Stats::default(),
            pike_published: PikeStats::default(),
            buf: vec![0u8; 65536],
            now: Instant::now(),
        })
    }
}

struct UdpListener {
    sock: UdpSocket,
    local: SocketAddr,
}

/// A TCP/TLS connection as the core loop knows it.
struct Conn {
    transport: Transport,
    remote: SocketAddr,
    /// Our end; `None` while an outgoing connection is being set up.
    local: Option<SocketAddr>,
    tx: mpsc::Sender<ConnCmd>,
}

pub struct SipLoop {
    core: Core,
    pike: Pike,
    udp: Vec<UdpListener>,
    /// The UDP socket looked at first next time, so a busy one does not hide the others.
    udp_start: usize,
    conns: HashMap<ConnId, Conn>,
    /// Connections by transport and peer address, so a message for a destination without
    /// a connection id reuses an open connection (RFC 3261 section 18.1.1) instead of
    /// opening another.
    by_addr: HashMap<(Transport, SocketAddr), ConnId>,
    streams: Arc<Streams>,
    metrics: Arc<Metrics>,
    lookups: mpsc::Sender<Lookup>,
    writer: mpsc::Sender<WriterCmd>,
    dns: mpsc::Sender<crate::dns::Query>,
    /// (username, domain) -> credentials (`None`: no such subscriber) and when fetched.
    creds: HashMap<(String, String), (Option<Credentials>, Instant)>,
    pending_lookups: HashSet<(String, String)>,
    /// Store orders handed to the writer and not yet confirmed.
    outstanding: usize,
    published: Stats,
    pike_published: PikeStats,
    buf: Vec<u8>,
    /// Clock reading of the current turn: one per burst, not one per message.
    now: Instant,
}

impl rtc_daemon::core::CoreLoop for SipLoop {
    type Event = Event;
    type Reload = Reload;

    fn clock(&mut self) -> Instant {
        self.now = Instant::now();
        self.now
    }

    fn handle_event(&mut self, ev: Event, shutting_down: bool) {
        self.event(ev, shutting_down);
    }

    fn reload(&mut self, settings: Reload) {
        self.creds.clear();
        if let Some(settings) = settings {
            let (core, pike) = *settings;
            self.core.update_config(core);
            self.pike.update_config(pike);
            info!("configuration reloaded");
        }
    }

    fn begin_shutdown(&mut self) {
        info!(
            "shutting down: {} location changes to commit",
            self.outstanding
        );
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn handle_timeout(&mut self) {
        self.core.handle_timeout(self.now);
    }

    fn housekeeping(&mut self) {
        self.every_second();
    }

    fn drain(&mut self) {
        self.drain_output();
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// A readable UDP socket, looking at them in turn from `udp_start`. An error is ready
    /// too: `try_recv_from` reports it.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<usize> {
        let n = self.udp.len();
        for k in 0..n {
            let i = (self.udp_start + k) % n;
            if self.udp[i].sock.poll_recv_ready(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    }

    fn read_ready(&mut self, i: usize) {
        self.udp_start = (i + 1) % self.udp.len().max(1);
        self.udp_burst(i);
    }
}

impl SipLoop {
    /// Reads up to [`UDP_BURST`] datagrams from socket `i`.
    fn udp_burst(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..UDP_BURST {
            let (n, from) = match self.udp[i].sock.try_recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors for earlier sends surface here on Linux: not fatal.
                    debug!("udp {}: {e}", self.udp[i].local);
                    continue;
                }
            };
            let local = self.udp[i].local;
            self.datagram(local, from, &buf[..n]);
        }
        self.buf = buf;
    }

    fn datagram(&mut self, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        if !self.admit(from.ip(), data) {
            return;
        }
        // CRLF (or NUL) keep-alives that many UAs send over UDP to hold a NAT binding:
        // nothing to answer (RFC 5626's STUN keep-alives are handled below).
        if data
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
        {
            return;
        }
        match keepalive::classify(data, from) {
            Datagram::Sip => {}
            Datagram::StunIgnored => return,
            Datagram::StunReply(reply) => {
                self.metrics.stun_keepalives.inc();
                if let Some(l) = self.udp.iter().find(|l| l.local == local) {
                    if l.sock.try_send_to(&reply, from).is_err() {
                        self.metrics.send_dropped.inc();
                    }
                }
                return;
            }
        }
        let peer = Peer {
            transport: Transport::Udp,
            addr: from,
            conn: None,
        };
        self.core.handle_message(self.now, peer, local, data);
    }

    /// Pike's verdict on one message from `ip`; logs a new ban. Only requests (and
    /// keep-alives) count towards the density, as with Kamailio's `pike_check_req()` in
    /// its request route: a trunk or a callee answering many calls sends responses at the
    /// rate it is asked, which is no flood. A banned source is refused everything.
    fn admit(&mut self, ip: IpAddr, data: &[u8]) -> bool {
        if data.starts_with(b"SIP/") {
            return !self.pike.is_banned(self.now, ip);
        }
        match self.pike.check(self.now, ip) {
            Verdict::Allow => true,
            Verdict::Drop => false,
            Verdict::Banned => {
                let c = self.pike.config();
                warn!(
                    "pike: {ip} sent more than {} requests in {}s, ignoring it for {}s",
                    c.reqs_density_per_unit,
                    c.sampling_time_unit.as_secs(),
                    c.remove_latency.as_secs()
                );
                false
            }
        }
    }

    fn event(&mut self, ev: Event, shutting_down: bool) {
        match ev {
            Event::Opened {
                id,
                transport,
                remote,
                local,
                tx,
            } => {
                if shutting_down || self.pike.is_banned(self.now, remote.ip()) {
                    let _ = tx.try_send(ConnCmd::Close);
                    return;
                }
                self.by_addr.insert((transport, remote), id);
                self.conns.insert(
                    id,
                    Conn {
                        transport,
                        remote,
                        local: Some(local),
                        tx,
                    },
                );
            }
            Event::Connected { id, local } => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.local = Some(local);
                }
            }
            Event::Message { id, data } => {
                if shutting_down {
                    return;
                }
                let Some(c) = self.conns.get(&id) else {
                    return;
                };
                let (transport, remote, local) = (c.transport, c.remote, c.local);
                if !self.admit(remote.ip(), &data) {
                    // A banned source gets nothing, not even its connection.
                    if let Some(c) = self.conns.get(&id) {
                        let _ = c.tx.try_send(ConnCmd::Close);
                    }
                    return;
                }
                let Some(local) = local else { return };
                let peer = Peer {
                    transport,
                    addr: remote,
                    conn: Some(id),
                };
                self.core.handle_message(self.now, peer, local, &data);
            }
            Event::Closed { id, reason } => {
                if let Some(c) = self.conns.remove(&id) {
                    let key = (c.transport, c.remote);
                    if self.by_addr.get(&key) == Some(&id) {
                        self.by_addr.remove(&key);
                    }
                }
                self.core.handle_connection_closed(self.now, id, reason);
            }
            Event::Credentials {
                username,
                domain,
                found,
            } => {
                let key = (username, domain);
                self.pending_lookups.remove(&key);
                // A database failure is logged as one, not cached, and answered 503 with
                // Retry-After: never the 401 of a wrong password.
                let creds = match found {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("credentials of {}@{}: database error: {e}", key.0, key.1);
                        self.core
                            .handle_credentials_unavailable(self.now, &key.0, &key.1);
                        return;
                    }
                };
                if self.creds.len() >= CREDS_CACHE_MAX {
                    // Bounded without bookkeeping: start over (entries are refetched).
                    self.creds.clear();
                }
                self.creds.insert(key.clone(), (creds.clone(), self.now));
                self.core
                    .handle_credentials(self.now, &key.0, &key.1, creds);
            }
            Event::Stored { ids, ok } => {
                for id in ids {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    self.core.handle_stored(self.now, id, ok);
                }
            }
            Event::Bindings(bindings) => {
                info!(
                    "{} contact bindings reloaded from the database",
                    bindings.len()
                );
                self.core.reload_bindings(bindings);
            }
            Event::Resolved { id, peers } => self.core.handle_resolved(self.now, id, peers),
        }
    }

    /// Carries out everything the core asked for, including what answering it asks next.
    fn drain_output(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Transmit(t) => self.transmit(t),
                Output::FetchCredentials { username, domain } => self.fetch(username, domain),
                Output::Resolve {
                    id,
                    host,
                    port,
                    transport,
                    secure,
                } => {
                    let q = crate::dns::Query {
                        id,
                        host,
                        port,
                        transport,
                        secure,
                    };
                    if self.dns.try_send(q).is_err() {
                        // Lookups far behind: answer "no destination" now (478) rather
                        // than let the request wait for the core's own timeout.
                        self.metrics.dns_failures.inc();
                        self.core.handle_resolved(self.now, id, Vec::new());
                    }
                }
                Output::Store { id, ops } => {
                    match self.writer.try_send(WriterCmd::Store(Order { id, ops })) {
                        Ok(()) => self.outstanding += 1,
                        Err(e) => {
                            // The writer is far behind (or gone): fail this change now
                            // rather than hold the REGISTER without bound.
                            error!(
                                "location writer queue: {e}; answering the REGISTER with an error"
                            );
                            self.metrics.db_errors.inc();
                            self.core.handle_stored(self.now, id, false);
                        }
                    }
                }
            }
        }
    }

    fn fetch(&mut self, username: String, domain: String) {
        let key = (username, domain);
        if let Some((creds, at)) = self.creds.get(&key) {
            let ttl = if creds.is_some() {
                CREDS_TTL
            } else {
                UNKNOWN_TTL
            };
            if self.now.saturating_duration_since(*at) < ttl {
                let creds = creds.clone();
                self.core
                    .handle_credentials(self.now, &key.0, &key.1, creds);
                return;
            }
        }
        if self.pending_lookups.contains(&key) {
            // The answer to the lookup in flight serves this request too.
            return;
        }
        let lookup = Lookup {
            username: key.0.clone(),
            domain: key.1.clone(),
        };
        // Queue full: the database is behind. The lookup is dropped, not answered "no such
        // user": the request waits unanswered, the UA retransmits, and the core asks again
        // once its transaction gives up or a new request arrives. A false 401/403 would
        // make UAs stop registering.
        match self.lookups.try_send(lookup) {
            Ok(()) => {
                self.pending_lookups.insert(key);
            }
            Err(_) => {
                self.metrics.db_lookups_dropped.inc();
                debug!(
                    "credential lookup for {}@{} dropped: database queue full",
                    key.0, key.1
                );
            }
        }
    }

    fn transmit(&mut self, t: Transmit) {
        let Transmit { peer, data } = t;
        match peer.transport {
            Transport::Udp => {
                let Some(sock) = self.udp_for(peer.addr) else {
                    debug!("no UDP socket for {}", peer.addr);
                    self.metrics.send_dropped.inc();
                    return;
                };
                // A full socket buffer drops, as the network would; the transaction
                // layer retransmits.
                if let Err(e) = sock.try_send_to(&data, peer.addr) {
                    debug!("udp send to {}: {e}", peer.addr);
                    self.metrics.send_dropped.inc();
                }
            }
            Transport::Tcp | Transport::Tls => {
                let id = match peer.conn {
                    Some(id) => Some(id),
                    None => self.by_addr.get(&(peer.transport, peer.addr)).copied(),
                };
                match id {
                    Some(id) => self.send_on(id, data),
                    None if peer.transport == Transport::Tls => {
                        warn!(
                            "outgoing TLS connections are not supported yet: dropping a message for {}",
                            peer.addr
                        );
                        self.metrics.outgoing_failures.inc();
                    }
                    None => self.connect(peer.addr, data),
                }
            }
            Transport::Ws | Transport::Wss => {
                debug!(
                    "WebSocket transport is not supported: dropping a message for {}",
                    peer.addr
                );
                self.metrics.send_dropped.inc();
            }
        }
    }

    /// The UDP socket to send to `to` from: the first of its address family. (The core
    /// names the peer, not our socket; with one socket per family this is the one the
    /// peer talks to.)
    fn udp_for(&self, to: SocketAddr) -> Option<&UdpSocket> {
        self.udp
            .iter()
            .find(|l| l.local.is_ipv4() == to.is_ipv4())
            .map(|l| &l.sock)
    }

    fn send_on(&mut self, id: ConnId, data: Vec<u8>) {
        let Some(c) = self.conns.get(&id) else {
            debug!("connection {id} is gone: dropping a message");
            self.metrics.send_dropped.inc();
            return;
        };
        if c.tx.try_send(ConnCmd::Send(data)).is_err() {
            debug!(
                "connection {id} to {}: queue full, dropping a message",
                c.remote
            );
            self.metrics.send_dropped.inc();
        }
    }

    /// Opens an outgoing TCP connection and queues `data` on it.
    fn connect(&mut self, addr: SocketAddr, data: Vec<u8>) {
        let Some(slot) = self.streams.acquire_outgoing() else {
            warn!("tcp-max-connections reached: cannot connect to {addr}");
            self.metrics.outgoing_failures.inc();
            return;
        };
        let id = self.streams.next_id();
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        let _ = tx.try_send(ConnCmd::Send(data));
        self.conns.insert(
            id,
            Conn {
                transport: Transport::Tcp,
                remote: addr,
                local: None,
                tx,
            },
        );
        self.by_addr.insert((Transport::Tcp, addr), id);
        self.streams.connect(id, addr, slot, rx);
    }

    /// Once a second: the core's wall clock, pike expiry and metrics.
    fn every_second(&mut self) {
        // The core's calendar time (binding expiries, nonces) follows a clock step within
        // a second.
        self.core.set_wall_clock(self.now, since_epoch());
        self.pike.handle_timeout(self.now);
        // Expired credentials go, and the table gives its memory back once mostly empty:
        // after a registration burst it would otherwise hold every user for good.
        let now = self.now;
        self.creds.retain(|_, (c, at)| {
            let ttl = if c.is_some() { CREDS_TTL } else { UNKNOWN_TTL };
            now.saturating_duration_since(*at) < ttl
        });
        if self.creds.capacity() > 4 * self.creds.len().max(1024) {
            self.creds.shrink_to_fit();
        }
        let stats = self.core.stats();
        self.metrics.publish(&self.published, &stats);
        self.published = stats;
        let pike = self.pike.stats();
        self.metrics.publish_pike(&self.pike_published, &pike);
        self.pike_published = pike;
    }
}

/// Whole seconds since the Unix epoch, for the location table's dates.
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}
