//! One shard: an OS thread with a single-threaded tokio runtime that owns a protocol core
//! ([`stun_proto::Server`]), its client sockets and every relay socket of its allocations.
//!
//! The kernel spreads clients over shards (`SO_REUSEPORT` hashes the 5-tuple), so a client
//! and its allocation always live on the same thread: the relay path takes no lock and
//! copies nothing. Peer data is received four bytes into a buffer so the ChannelData header
//! can be written in front of it in place.
//!
//! Every input to the core is followed by [`State::flush`], which follows the core's
//! polling order (`stun_proto::server`): relay orders returned by the handle call are sent
//! at once, then transmits, then control orders ([`Output`]). Orders that can be carried
//! out at once are answered before the flush returns (relay sockets are bound
//! synchronously, so an Allocate is answered within the datagram that asked); key lookups
//! go to the database task and come back through [`db_replies`]; RFC 6062 connects
//! through their own task.

use crate::dtls::{DtlsIdentity, DtlsSessions};
use crate::shared::{DbReply, DbRequest, KeyAnswer, Shared};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stun_proto::channel::{channel_frame_len, is_channel_data};
use stun_proto::message::stun_frame_len;
use stun_proto::{
    BoundRelay, ClientAction, ClientTuple, ConnectionId, Family, KeyLookup, Output, PeerAction,
    PortRequest, ProtocolCore, RelayBindError, RelayId, Server, Stats, Transport,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Largest frame on a stream: a STUN message or ChannelData is at most 65535 + header.
const MAX_FRAME: usize = 65535 + 20;
/// A stream client that has sent nothing useful for this long is dropped.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longer than the largest allocation lifetime a client could be refreshing within.
const IDLE_STREAM_TIMEOUT: Duration = Duration::from_secs(3700);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one stream client before we drop (like a full UDP buffer would).
const STREAM_QUEUE: usize = 512;

/// The sockets a shard serves, bound by `main` so bind errors stop start-up.
pub struct Listeners {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: Vec<std::net::TcpListener>,
    pub tls: Vec<std::net::TcpListener>,
    pub dtls: Vec<std::net::UdpSocket>,
}

struct RelaySocket {
    socket: Rc<UdpSocket>,
    task: JoinHandle<()>,
}

/// What carries out the core's orders ([`Output`]), plus the routes back to clients.
struct ShardIo {
    shared: Arc<Shared>,
    me: Weak<RefCell<State>>,
    relays: HashMap<RelayId, RelaySocket>,
    next_relay: u32,
    /// Listening UDP sockets by local address (responses and RFC 5780 replies).
    udp_out: HashMap<SocketAddr, Rc<UdpSocket>>,
    streams: HashMap<ClientTuple, mpsc::Sender<Vec<u8>>>,
    db_reply: mpsc::UnboundedSender<DbReply>,
    /// RFC 6062 relay listeners (address and accept task), by relay.
    tcp_relays: HashMap<RelayId, (SocketAddr, JoinHandle<()>)>,
    /// RFC 6062 peer connections, by CONNECTION-ID.
    tcp_peers: HashMap<ConnectionId, PeerConn>,
    /// Client data connections whose ConnectionBind just succeeded.
    splices: HashMap<ClientTuple, ConnectionId>,
    dtls: DtlsSessions,
    /// The identity new DTLS sessions use, refreshed on every tick (SIGHUP reloads it).
    dtls_identity: Option<DtlsIdentity>,
}

/// A peer TCP connection (RFC 6062).
enum PeerConn {
    /// Outbound connect in progress; abort cancels it.
    Connecting(tokio::task::AbortHandle),
    /// Waiting for the client's ConnectionBind.
    Waiting(TcpStream),
    /// Being copied; abort stops the peer-to-client half, which ends the splice.
    Spliced(tokio::task::AbortHandle),
}

struct State {
    core: Server,
    io: ShardIo,
    /// Receive buffer shared by every relay socket of the shard.
    relay_buf: Vec<u8>,
}

/// Re-anchors the core's calendar time. Once a tick: nonces and REST timestamps have a
/// resolution of seconds, so no system clock read per datagram.
fn set_wall_clock(core: &mut Server, now: Instant) {
    core.set_wall_clock(now, rtc_daemon::core::since_epoch());
}

impl ShardIo {
    fn bind_relay(
        &mut self,
        family: Family,
        port: PortRequest,
    ) -> Result<BoundRelay, RelayBindError> {
        let ip = match family {
            Family::V4 => self.shared.relay_v4,
            Family::V6 => self.shared.relay_v6,
        }
        .ok_or(RelayBindError::FamilyUnsupported)?;
        let std_sock = self.shared.ports.bind(ip, port)?;
        let addr = std_sock.local_addr().map_err(|_| RelayBindError::NoPorts)?;
        let socket = match UdpSocket::from_std(std_sock) {
            Ok(s) => Rc::new(s),
            Err(e) => {
                warn!("relay socket {addr}: {e}");
                return Err(RelayBindError::NoPorts);
            }
        };
        self.next_relay = self.next_relay.wrapping_add(1);
        let id = RelayId(self.next_relay);
        let task = tokio::task::spawn_local(relay_loop(socket.clone(), id, self.me.clone()));
        self.relays.insert(id, RelaySocket { socket, task });
        Ok(BoundRelay { id, addr })
    }

    fn release_relay(&mut self, id: RelayId) {
        if let Some(r) = self.relays.remove(&id) {
            r.task.abort();
        }
        if let Some((addr, task)) = self.tcp_relays.remove(&id) {
            task.abort();
            self.shared.ports.unreserve(addr);
        }
    }

    fn bind_tcp_relay(&mut self, family: Family) -> Result<BoundRelay, RelayBindError> {
        let ip = match family {
            Family::V4 => self.shared.relay_v4,
            Family::V6 => self.shared.relay_v6,
        }
        .ok_or(RelayBindError::FamilyUnsupported)?;
        let std_listener = self.shared.ports.bind_tcp(ip)?;
        let addr = std_listener
            .local_addr()
            .map_err(|_| RelayBindError::NoPorts)?;
        let listener = TcpListener::from_std(std_listener).map_err(|_| RelayBindError::NoPorts)?;
        self.next_relay = self.next_relay.wrapping_add(1);
        let id = RelayId(self.next_relay);
        let task = tokio::task::spawn_local(tcp_relay_accept(listener, id, self.me.clone()));
        self.tcp_relays.insert(id, (addr, task));
        Ok(BoundRelay { id, addr })
    }

    fn connect_peer(&mut self, relay: RelayId, peer: SocketAddr, id: ConnectionId) {
        let me = self.me.clone();
        let local = self.tcp_relay_addr(relay);
        let task = tokio::task::spawn_local(async move {
            let result = match local {
                Some(local) => connect_from(local, peer).await,
                None => Err(std::io::ErrorKind::NotFound.into()),
            };
            let Some(st) = me.upgrade() else { return };
            let mut st = st.borrow_mut();
            st.io.tcp_peers.remove(&id);
            let ok = match result {
                Ok(stream) => {
                    // Kept until the ConnectionBind, or closed by the core's
                    // CloseConnection if the allocation went away meanwhile.
                    st.io.tcp_peers.insert(id, PeerConn::Waiting(stream));
                    true
                }
                Err(e) => {
                    debug!("RFC 6062 connect to {peer}: {e}");
                    false
                }
            };
            let now = Instant::now();
            st.core.handle_peer_connected(now, id, ok);
            st.flush(now);
        });
        self.tcp_peers
            .insert(id, PeerConn::Connecting(task.abort_handle()));
    }

    fn close_connection(&mut self, id: ConnectionId) {
        match self.tcp_peers.remove(&id) {
            Some(PeerConn::Spliced(h) | PeerConn::Connecting(h)) => h.abort(),
            // Dropping the stream closes it.
            Some(PeerConn::Waiting(_)) | None => {}
        }
    }

    /// Queues a key lookup for the database task; its answer comes back through
    /// [`db_replies`]. `Some` is an answer now: no database, or its queue is full.
    fn lookup_key(&mut self, realm: &str, user: &str) -> Option<KeyLookup> {
        let Some(db) = &self.shared.db else {
            return Some(KeyLookup::Unknown);
        };
        let req = DbRequest {
            realm: realm.to_string(),
            user: user.to_string(),
            reply: self.db_reply.clone(),
        };
        // Queue full: the database is behind. Busy drops the waiting requests unanswered,
        // so the clients retransmit rather than take a final 401.
        if db.try_send(req).is_err() {
            return Some(KeyLookup::Busy);
        }
        None
    }
}

impl ShardIo {
    fn tcp_relay_addr(&self, relay: RelayId) -> Option<SocketAddr> {
        self.tcp_relays.get(&relay).map(|(addr, _)| *addr)
    }

    /// Sends to a client on the transport it used; over streams ChannelData is padded to
    /// 4 bytes (RFC 8656 §12.5).
    fn send_to_client(
        &mut self,
        to: ClientTuple,
        from: Option<SocketAddr>,
        data: &[u8],
        dropped: &mut u64,
    ) {
        match to.transport {
            Transport::Dtls => {
                let sent = match self.udp_out.get(&to.local) {
                    Some(s) => self.dtls.send(s, to.local, to.remote, data),
                    None => false,
                };
                if !sent {
                    *dropped += 1;
                }
            }
            Transport::Udp => {
                let local = from.unwrap_or(to.local);
                if let Some(s) = self.udp_out.get(&local) {
                    // Full socket buffer: drop, as the network would.
                    if s.try_send_to(data, to.remote).is_err() {
                        *dropped += 1;
                    }
                }
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(tx) = self.streams.get(&to) {
                    let mut v = data.to_vec();
                    if is_channel_data(data) {
                        v.resize((data.len() + 3) & !3, 0);
                    }
                    if tx.try_send(v).is_err() {
                        *dropped += 1;
                    }
                }
            }
        }
    }

    fn send_to_peer(&self, relay: RelayId, peer: SocketAddr, payload: &[u8], dropped: &mut u64) {
        if let Some(r) = self.relays.get(&relay) {
            if r.socket.try_send_to(payload, peer).is_err() {
                *dropped += 1;
            }
        }
    }
}

impl State {
    /// Drains the core after an input, in its polling order: transmits, then orders.
    /// Answering an order is an input that may queue more of both, hence the loop.
    fn flush(&mut self, now: Instant) {
        let mut dropped = 0;
        loop {
            while let Some(t) = self.core.poll_transmit() {
                self.io.send_to_client(t.to, t.from, &t.data, &mut dropped);
            }
            let Some(order) = self.core.poll_output() else {
                break;
            };
            self.execute(now, order);
        }
        if dropped > 0 {
            self.io.shared.metrics.send_dropped.add(dropped);
        }
    }

    /// Carries out one control order of the core.
    fn execute(&mut self, now: Instant, order: Output) {
        match order {
            Output::BindRelay { id, family, port } => {
                let bound = self.io.bind_relay(family, port);
                self.core.handle_relay_bound(now, id, bound);
            }
            Output::BindTcpRelay { id, family } => {
                let bound = self.io.bind_tcp_relay(family);
                self.core.handle_relay_bound(now, id, bound);
            }
            Output::ReleaseRelay(id) => self.io.release_relay(id),
            Output::ReleaseReservation(addr) => self.io.shared.ports.unreserve(addr),
            Output::LookupKey { realm, user } => {
                if let Some(answer) = self.io.lookup_key(&realm, &user) {
                    self.core.handle_key(now, &realm, &user, answer);
                }
            }
            Output::ConnectPeer { relay, peer, id } => self.io.connect_peer(relay, peer, id),
            Output::Splice { id, data } => {
                self.io.splices.insert(data, id);
            }
            Output::CloseConnection(id) => self.io.close_connection(id),
        }
    }

    /// Reads up to [`SOCKET_BURST`] client datagrams from a listening socket under one
    /// clock reading. Returns whether the socket was drained (ended on WouldBlock).
    fn udp_burst(&mut self, sock: &UdpSocket, local: SocketAddr, buf: &mut [u8]) -> bool {
        let now = Instant::now();
        for _ in 0..SOCKET_BURST {
            let (n, remote) = match sock.try_recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    // ICMP errors surface here on Linux; not fatal for a server socket.
                    debug!("udp {local}: {e}");
                    continue;
                }
            };
            let tuple = ClientTuple {
                transport: Transport::Udp,
                local,
                remote,
            };
            self.client_input_at(now, tuple, &buf[..n]);
        }
        false
    }

    /// Reads up to [`SOCKET_BURST`] peer datagrams from relay socket `id` into the shard's
    /// buffer and forwards them. Returns whether the socket was drained.
    fn relay_burst(&mut self, sock: &UdpSocket, id: RelayId) -> bool {
        let mut buf = std::mem::take(&mut self.relay_buf);
        let mut dropped = 0;
        let now = Instant::now();
        let mut drained = false;
        for _ in 0..SOCKET_BURST {
            // Four bytes of headroom for the ChannelData header (RFC 8656 §12.4).
            let (n, peer) = match sock.try_recv_from(&mut buf[4..]) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    // ICMP errors from earlier sends surface here; keep reading.
                    debug!("relay {id:?}: {e}");
                    continue;
                }
            };
            match self.core.handle_peer(now, id, peer, &buf[4..4 + n]) {
                PeerAction::Drop => {}
                PeerAction::ChannelData { client, header } => {
                    buf[..4].copy_from_slice(&header);
                    self.io
                        .send_to_client(client, None, &buf[..4 + n], &mut dropped);
                }
                PeerAction::Data { client, message } => {
                    self.io.send_to_client(client, None, &message, &mut dropped)
                }
            }
        }
        self.relay_buf = buf;
        if dropped > 0 {
            self.io.shared.metrics.send_dropped.add(dropped);
        }
        drained
    }

    /// A client's bytes through the core, and the relay it asked for.
    fn client_input(&mut self, from: ClientTuple, data: &[u8]) {
        self.client_input_at(Instant::now(), from, data);
    }

    /// As [`State::client_input`] with the caller's clock reading, so a burst of
    /// datagrams reads the clock once.
    fn client_input_at(&mut self, now: Instant, from: ClientTuple, data: &[u8]) {
        let mut dropped = 0;
        match self.core.handle_client(now, from, data) {
            ClientAction::Done => {}
            ClientAction::ToPeer {
                relay,
                peer,
                payload,
            } => self.io.send_to_peer(relay, peer, payload, &mut dropped),
        }
        if dropped > 0 {
            self.io.shared.metrics.send_dropped.add(dropped);
        }
        self.flush(now);
    }

    /// A stream or DTLS client went away: its allocation ends with it (RFC 8656 §2.2).
    fn client_closed(&mut self, tuple: &ClientTuple) {
        let now = Instant::now();
        self.core.handle_client_closed(now, tuple);
        self.flush(now);
    }
}

/// Runs a shard until the process exits.
pub fn run(index: usize, shared: Arc<Shared>, listeners: Listeners) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let seed: u64 = rand::random();
        let mut core = Server::new(
            shared.core.clone(),
            shared.nonce_key.clone(),
            shared.quotas.clone(),
            seed,
        );
        set_wall_clock(&mut core, Instant::now());
        let (db_tx, db_rx) = mpsc::unbounded_channel();
        let state = Rc::new_cyclic(|me| {
            RefCell::new(State {
                core,
                relay_buf: vec![0u8; 65536 + 4],
                io: ShardIo {
                    shared: shared.clone(),
                    me: me.clone(),
                    relays: HashMap::new(),
                    next_relay: 0,
                    udp_out: HashMap::new(),
                    streams: HashMap::new(),
                    db_reply: db_tx,
                    tcp_relays: HashMap::new(),
                    tcp_peers: HashMap::new(),
                    splices: HashMap::new(),
                    dtls: DtlsSessions::default(),
                    dtls_identity: shared.dtls_identity(),
                },
            })
        });
        for s in listeners.udp {
            let local = s.local_addr()?;
            let sock = Rc::new(UdpSocket::from_std(s)?);
            state.borrow_mut().io.udp_out.insert(local, sock.clone());
            tokio::task::spawn_local(udp_loop(sock, local, Rc::downgrade(&state)));
        }
        for s in listeners.dtls {
            let local = s.local_addr()?;
            let sock = Rc::new(UdpSocket::from_std(s)?);
            state.borrow_mut().io.udp_out.insert(local, sock.clone());
            tokio::task::spawn_local(dtls_loop(sock, local, Rc::downgrade(&state)));
        }
        for l in listeners.tcp {
            let l = TcpListener::from_std(l)?;
            tokio::task::spawn_local(accept_loop(l, false, Rc::downgrade(&state)));
        }
        for l in listeners.tls {
            let l = TcpListener::from_std(l)?;
            tokio::task::spawn_local(accept_loop(l, true, Rc::downgrade(&state)));
        }
        tokio::task::spawn_local(db_replies(db_rx, Rc::downgrade(&state)));
        debug!("shard {index} running");
        tick_loop(state).await;
        Ok(())
    })
}

/// Once a second: expire state, apply reloaded settings, publish metrics.
async fn tick_loop(state: Rc<RefCell<State>>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = Stats::default();
    let mut gauges = (0i64, 0i64, 0i64);
    let mut generation = 0;
    let mut key_epoch = 0;
    loop {
        interval.tick().await;
        let mut st = state.borrow_mut();
        let st = &mut *st;
        let now = Instant::now();
        set_wall_clock(&mut st.core, now);
        st.core.handle_timeout(now);
        st.flush(now);
        let shared = st.io.shared.clone();
        let epoch = shared.creds.epoch();
        if epoch != key_epoch {
            // SIGHUP: forget cached keys, so changed passwords apply at once.
            key_epoch = epoch;
            st.core.clear_key_cache();
        }
        let udp_out = st.io.udp_out.clone();
        for (local, remote) in st
            .io
            .dtls
            .tick(Instant::now(), |l| udp_out.get(&l).cloned())
        {
            let tuple = ClientTuple {
                transport: Transport::Dtls,
                local,
                remote,
            };
            st.client_closed(&tuple);
        }
        st.io.dtls_identity = shared.dtls_identity();
        if let Some((g, d)) = shared.dynamic_if_newer(generation) {
            generation = g;
            st.core.set_secrets(d.secrets.clone());
            st.core.set_limits(d.limits);
            st.core.set_peer_policy(d.policy.clone());
        }
        let now = st.core.stats().clone();
        shared.metrics.publish(&published, &now);
        published = now;
        let g = (
            st.core.allocation_count() as i64,
            st.core.permission_count() as i64,
            st.core.channel_count() as i64,
        );
        shared.metrics.allocations.add(g.0 - gauges.0);
        shared.metrics.permissions.add(g.1 - gauges.1);
        shared.metrics.channels.add(g.2 - gauges.2);
        gauges = g;
    }
}

/// Keys fetched by the database task: the core caches them and resumes the requests that
/// waited for them.
async fn db_replies(mut rx: mpsc::UnboundedReceiver<DbReply>, state: Weak<RefCell<State>>) {
    while let Some(reply) = rx.recv().await {
        let Some(st) = state.upgrade() else { return };
        let mut st = st.borrow_mut();
        let answer = match reply.key {
            KeyAnswer::Found(k) => KeyLookup::Found(k),
            KeyAnswer::Unknown => KeyLookup::Unknown,
            // Not cached as an unknown user (that would answer 401, a wrong password):
            // the waiting requests are dropped and the clients' retransmissions ask again.
            KeyAnswer::DatabaseError => KeyLookup::Busy,
        };
        let now = Instant::now();
        st.core.handle_key(now, &reply.realm, &reply.user, answer);
        st.flush(now);
    }
}

/// Client datagrams on one listening socket: wait until readable, then take up to a burst
/// under one borrow of the shard and one clock reading.
async fn udp_loop(sock: Rc<UdpSocket>, local: SocketAddr, state: Weak<RefCell<State>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        if let Err(e) = sock.readable().await {
            warn!("udp {local}: {e}");
            return;
        }
        let Some(st) = state.upgrade() else { return };
        let drained = st.borrow_mut().udp_burst(&sock, local, &mut buf);
        if !drained {
            // `readable()` is ready again at once and costs no scheduler budget: yield, or a
            // flood on this socket would starve every other task of the shard.
            tokio::task::yield_now().await;
        }
    }
}

async fn dtls_loop(sock: Rc<UdpSocket>, local: SocketAddr, state: Weak<RefCell<State>>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, remote) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                debug!("dtls {local}: {e}");
                continue;
            }
        };
        let Some(st) = state.upgrade() else { return };
        let mut st = st.borrow_mut();
        let st = &mut *st;
        let now = Instant::now();
        let out = st.io.dtls.input(
            st.io.dtls_identity.as_ref(),
            &sock,
            local,
            remote,
            &buf[..n],
            now,
        );
        let tuple = ClientTuple {
            transport: Transport::Dtls,
            local,
            remote,
        };
        for record in out.records {
            st.client_input(tuple, &record);
        }
        if out.closed {
            st.client_closed(&tuple);
        }
    }
}

/// Datagrams read from one socket before yielding, so one busy sender cannot starve the
/// rest of the shard.
const SOCKET_BURST: usize = 64;

/// Peer datagrams for one relay socket. The receive buffer is the shard's, not the
/// socket's: a 64 KiB buffer per allocation would dominate memory with many allocations.
async fn relay_loop(sock: Rc<UdpSocket>, id: RelayId, state: Weak<RefCell<State>>) {
    loop {
        if let Err(e) = sock.readable().await {
            debug!("relay {id:?}: {e}");
            return;
        }
        let Some(st) = state.upgrade() else { return };
        let drained = st.borrow_mut().relay_burst(&sock, id);
        if !drained {
            // See `udp_loop`: a busy peer must not starve the shard.
            tokio::task::yield_now().await;
        }
    }
}

async fn accept_loop(listener: TcpListener, tls: bool, state: Weak<RefCell<State>>) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(st) = state.upgrade() else { return };
        let shared = st.borrow().io.shared.clone();
        let Some(guard) = shared.conn_limit.try_acquire(remote.ip()) else {
            debug!("{remote}: too many connections from this address");
            shared.metrics.conn_refused.inc();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(l) => l,
            Err(_) => continue,
        };
        let state = state.clone();
        tokio::task::spawn_local(async move {
            let _guard = guard;
            if tls {
                let Some(acceptor) = shared.tls_acceptor() else {
                    return;
                };
                let hs = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                match hs {
                    Ok(Ok(s)) => serve_stream(s, Transport::Tls, local, remote, state).await,
                    Ok(Err(e)) => {
                        shared.metrics.tls_failures.inc();
                        debug!("{remote}: TLS handshake failed: {e}")
                    }
                    Err(_) => debug!("{remote}: TLS handshake timed out"),
                }
            } else {
                serve_stream(stream, Transport::Tcp, local, remote, state).await;
            }
        });
    }
}

/// A TCP or TLS client: frames STUN messages and ChannelData out of the byte stream
/// (RFC 8489 §6.2.2, RFC 8656 §12.5) and writes our messages back through a queue.
async fn serve_stream<S>(
    stream: S,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    state: Weak<RefCell<State>>,
) where
    S: AsyncRead + AsyncWrite + 'static,
{
    let tuple = ClientTuple {
        transport,
        local,
        remote,
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    let tx_clone = tx.clone();
    {
        let Some(st) = state.upgrade() else { return };
        st.borrow_mut().io.streams.insert(tuple, tx);
    }
    let writer = tokio::task::spawn_local(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 65536];
    let mut timeout = FIRST_MESSAGE_TIMEOUT;
    'conn: loop {
        let n = match tokio::time::timeout(timeout, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if buf.len() < 4 {
                break;
            }
            let frame = if is_channel_data(&buf) {
                channel_frame_len(&buf)
            } else if buf[0] < 0x40 {
                stun_frame_len(&buf)
            } else {
                None
            };
            let Some(frame) = frame.filter(|&f| f <= MAX_FRAME) else {
                // Not STUN, not ChannelData: there is no way to resynchronise a stream.
                debug!("{remote}: garbage on {transport:?} stream, closing");
                let Some(st) = state.upgrade() else {
                    break 'conn;
                };
                st.borrow().io.shared.metrics.stream_garbage.inc();
                break 'conn;
            };
            if buf.len() < frame {
                break;
            }
            let Some(st) = state.upgrade() else {
                break 'conn;
            };
            // The frame may include ChannelData padding; the core ignores it.
            st.borrow_mut().client_input(tuple, &buf[..frame]);
            buf.drain(..frame);
            timeout = IDLE_STREAM_TIMEOUT;
            // RFC 6062 §5.4: after a successful ConnectionBind this connection carries the
            // peer's raw bytes.
            let spliced = {
                let mut st = st.borrow_mut();
                let io = &mut st.io;
                io.splices
                    .remove(&tuple)
                    .and_then(|id| match io.tcp_peers.remove(&id) {
                        Some(PeerConn::Waiting(stream)) => Some((id, stream)),
                        _ => None,
                    })
            };
            if let Some((id, peer)) = spliced {
                splice(
                    id,
                    rd,
                    peer,
                    std::mem::take(&mut buf),
                    tx_clone,
                    state.clone(),
                )
                .await;
                break 'conn;
            }
        }
    }
    if let Some(st) = state.upgrade() {
        let mut st = st.borrow_mut();
        let st = &mut *st;
        st.io.streams.remove(&tuple);
        st.client_closed(&tuple);
    }
    writer.abort();
    info!("{remote}: {transport:?} connection closed");
}

/// Copies bytes between a client data connection and its peer connection until either
/// side closes (RFC 6062 §5.4), then tells the core.
async fn splice<R>(
    id: ConnectionId,
    mut client_rd: R,
    peer: TcpStream,
    leftover: Vec<u8>,
    client_tx: mpsc::Sender<Vec<u8>>,
    state: Weak<RefCell<State>>,
) where
    R: AsyncRead + Unpin,
{
    let (mut peer_rd, mut peer_wr) = peer.into_split();
    let to_client = tokio::task::spawn_local(async move {
        let mut chunk = vec![0u8; 16384];
        loop {
            match peer_rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if client_tx.send(chunk[..n].to_vec()).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    if let Some(st) = state.upgrade() {
        st.borrow_mut()
            .io
            .tcp_peers
            .insert(id, PeerConn::Spliced(to_client.abort_handle()));
    }
    let to_peer = async {
        if !leftover.is_empty() {
            peer_wr.write_all(&leftover).await?;
        }
        let mut chunk = vec![0u8; 16384];
        loop {
            let n = client_rd.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            peer_wr.write_all(&chunk[..n]).await?;
        }
    };
    tokio::select! {
        _ = to_peer => {}
        _ = to_client => {}
    }
    if let Some(st) = state.upgrade() {
        let mut st = st.borrow_mut();
        if let Some(PeerConn::Spliced(h)) = st.io.tcp_peers.remove(&id) {
            h.abort();
        }
        st.core.handle_connection_closed(Instant::now(), id);
    }
}

/// Picks relay ports from `min-port..=max-port` for every shard, starting at a random
/// point and moving on, so ports are not reused right after release. Ports held for a
/// RESERVATION-TOKEN (RFC 8656 §7.2) are skipped until taken or released; they are kept
/// in this set rather than as bound sockets because the token may be redeemed on another
/// shard's thread.
#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
    next: std::sync::atomic::AtomicU32,
    reserved: std::sync::Mutex<HashSet<SocketAddr>>,
}

impl PortPool {
    pub fn new(min: u16, max: u16, start: u32) -> PortPool {
        PortPool {
            min,
            max,
            next: std::sync::atomic::AtomicU32::new(start),
            reserved: std::sync::Mutex::new(HashSet::new()),
        }
    }

    fn candidate(&self) -> u16 {
        let span = u32::from(self.max - self.min) + 1;
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.min + (n % span) as u16
    }

    fn reserved(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn unreserve(&self, addr: SocketAddr) {
        self.reserved().remove(&addr);
    }

    /// Binds a relay socket as `req` asks (RFC 8656 §14.6 EVEN-PORT).
    pub fn bind(
        &self,
        ip: IpAddr,
        req: PortRequest,
    ) -> Result<std::net::UdpSocket, RelayBindError> {
        if let PortRequest::Reserved(addr) = req {
            let held = self.reserved().remove(&addr);
            return match held {
                true => bind_udp(addr, RELAY_BUFFER).map_err(|_| RelayBindError::NoPorts),
                false => Err(RelayBindError::NoPorts),
            };
        }
        let span = u32::from(self.max - self.min) + 1;
        for _ in 0..span {
            let mut port = self.candidate();
            if req != PortRequest::Any && port % 2 == 1 {
                if port == self.max {
                    continue;
                }
                port += 1;
            }
            let addr = SocketAddr::new(ip, port);
            let next = SocketAddr::new(ip, port.wrapping_add(1));
            let reserve = req == PortRequest::EvenReserveNext;
            if port > self.max || (reserve && port == self.max) {
                continue;
            }
            {
                let held = self.reserved();
                if held.contains(&addr) || (reserve && held.contains(&next)) {
                    continue;
                }
            }
            let Ok(sock) = bind_udp(addr, RELAY_BUFFER) else {
                continue;
            };
            if reserve {
                // Check the odd port is free now; it is held by the set, not by a socket.
                if bind_udp(next, RELAY_BUFFER).is_err() {
                    continue;
                }
                self.reserved().insert(next);
            }
            return Ok(sock);
        }
        Err(RelayBindError::NoPorts)
    }
}

/// Peers connecting to a TCP allocation's relayed address (RFC 6062 §5.3).
async fn tcp_relay_accept(listener: TcpListener, relay: RelayId, state: Weak<RefCell<State>>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Some(st) = state.upgrade() else { return };
        let mut st = st.borrow_mut();
        let now = Instant::now();
        if let Some(id) = st.core.handle_peer_connection(now, relay, peer) {
            st.io.tcp_peers.insert(id, PeerConn::Waiting(stream));
        }
        st.flush(now);
    }
}

/// RFC 6062 §5.2: the connection to the peer comes from the relayed transport address,
/// which the relay's listener also uses (hence SO_REUSEADDR/SO_REUSEPORT on both).
async fn connect_from(local: SocketAddr, peer: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(local)?;
    match tokio::time::timeout(Duration::from_secs(30), sock.connect(peer)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

impl PortPool {
    /// A listening TCP socket on a free relay port for an RFC 6062 allocation.
    pub fn bind_tcp(&self, ip: IpAddr) -> Result<std::net::TcpListener, RelayBindError> {
        let span = u32::from(self.max - self.min) + 1;
        for _ in 0..span {
            let addr = SocketAddr::new(ip, self.candidate());
            // SO_REUSEPORT (needed for connecting from the relayed address) would let a
            // second allocation bind the same port: the pool keeps the ones in use.
            let mut held = self.reserved();
            if held.contains(&addr) {
                continue;
            }
            if let Ok(l) = listen_tcp(addr) {
                held.insert(addr);
                return Ok(l);
            }
        }
        Err(RelayBindError::NoPorts)
    }
}

/// Socket buffer for each relay socket: one allocation's traffic, modest so that tens of
/// thousands of allocations do not pin much kernel memory.
const RELAY_BUFFER: usize = 256 * 1024;

/// A non-blocking UDP socket with the given buffer sizes.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    let _ = s.set_recv_buffer_size(buffer);
    let _ = s.set_send_buffer_size(buffer);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A listening socket that several shards can bind (`SO_REUSEPORT`).
pub fn listen_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    // Large buffers absorb bursts: coturn's measurements show drops in the kernel, not in
    // user space, under load.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

pub fn listen_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}
