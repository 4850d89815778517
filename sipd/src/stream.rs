//! TCP and TLS connections: accepting, connecting, framing, limits.
//!
//! Every connection is one task on the I/O runtime that owns the stream. It frames SIP
//! messages out of the byte stream with [`sip_proto::message::frame`] (RFC 3261 section
//! 18.3: Content-Length delimits them) and hands each one to the core loop as an
//! [`Event::Message`]; in the other direction it writes what the core loop queues on its
//! [`ConnCmd`] channel, which the core loop finds by [`ConnId`]. Keep-alives stay here:
//! a CRLFCRLF "ping" is answered with a CRLF "pong" (RFC 5626 section 4.4.1) without the
//! core hearing of it.
//!
//! The task tells the core loop when its connection is usable ([`Event::Opened`] or
//! [`Event::Connected`]) and when it is gone ([`Event::Closed`]); these and the messages
//! go through one channel, so the core loop sees them in order.
//!
//! Limits, after Kamailio: `tcp-max-connections` (both directions), per-address inbound
//! connections, `tcp-connection-lifetime` (idle: no byte in either direction), the message
//! size (a stream that cannot be framed within it is answered, when possible, and closed),
//! and a write timeout so a peer that stops reading cannot pin a task forever.

use crate::config::StreamLimits;
use crate::core_loop::Event;
use crate::metrics::Metrics;
use rtc_daemon::limiter::{tls_handshake, ConnLimiter, ConnSlot};
use sip_proto::core::CloseReason;
use sip_proto::message::{error_response, frame, Frame, Limits, ParseError};
use sip_proto::txn::{ConnId, Transport};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tracing::debug;

/// Messages queued for one connection before further ones are dropped (as a full UDP
/// socket buffer would); the transaction layer retransmits what matters.
pub const CONN_QUEUE: usize = 256;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer that has not taken a queued message within this time is not reading: close.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 16 * 1024;

/// What the core loop asks a connection task to do.
#[derive(Debug)]
pub enum ConnCmd {
    Send(Vec<u8>),
    Close,
}

/// State shared by the accept loops, the connection tasks and the core loop.
pub struct Streams {
    /// The runtime connection tasks run on (not the core loop's).
    pub io: tokio::runtime::Handle,
    pub events: mpsc::Sender<Event>,
    pub metrics: Arc<Metrics>,
    next_id: AtomicU64,
    limits: RwLock<StreamLimits>,
    limiter: Arc<ConnLimiter>,
}

impl Streams {
    pub fn new(
        io: tokio::runtime::Handle,
        events: mpsc::Sender<Event>,
        metrics: Arc<Metrics>,
        limits: StreamLimits,
    ) -> Arc<Streams> {
        let limiter = ConnLimiter::new(limits.conns(), Some(metrics.tcp_connections.clone()));
        Arc::new(Streams {
            io,
            events,
            metrics,
            next_id: AtomicU64::new(1),
            limits: RwLock::new(limits),
            limiter,
        })
    }

    pub fn limits(&self) -> StreamLimits {
        *self.limits.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// New limits (SIGHUP); connections already open keep the idle lifetime they had.
    pub fn set_limits(&self, limits: StreamLimits) {
        self.limiter.set_limits(limits.conns());
        *self.limits.write().unwrap_or_else(PoisonError::into_inner) = limits;
    }

    pub fn next_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A slot for one more outgoing connection, or `None` at `tcp-max-connections`.
    pub fn acquire_outgoing(&self) -> Option<ConnSlot> {
        self.limiter.acquire(None)
    }

    /// Opens an outgoing TCP connection for the core loop, which has already registered
    /// `id` with the sending half of `rx` (so messages queue while connecting).
    pub fn connect(
        self: &Arc<Self>,
        id: ConnId,
        addr: SocketAddr,
        slot: ConnSlot,
        rx: mpsc::Receiver<ConnCmd>,
    ) {
        let streams = self.clone();
        self.io.spawn(async move {
            let _slot = slot;
            let reason = match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    match tcp.local_addr() {
                        Ok(local) => {
                            debug!("connection {id}: connected to {addr}");
                            let opened = streams.events.send(Event::Connected { id, local }).await;
                            if opened.is_err() {
                                return;
                            }
                            serve(tcp, id, addr, &streams, rx).await
                        }
                        Err(_) => CloseReason::Error,
                    }
                }
                Ok(Err(e)) => {
                    debug!("connection {id}: connecting to {addr}: {e}");
                    streams.metrics.outgoing_failures.inc();
                    CloseReason::Error
                }
                Err(_) => {
                    debug!("connection {id}: connecting to {addr}: timed out");
                    streams.metrics.outgoing_failures.inc();
                    CloseReason::Error
                }
            };
            let _ = streams.events.send(Event::Closed { id, reason }).await;
        });
    }
}

/// Accepts connections on one TCP or TLS listener until the process exits.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    streams: Arc<Streams>,
) {
    let (limiter, refused) = (streams.limiter.clone(), streams.metrics.tcp_refused.clone());
    rtc_daemon::limiter::accept_loop(listener, limiter, refused, move |tcp, remote, slot| {
        let streams = streams.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(local) = tcp.local_addr() else { return };
            match tls {
                None => serve_inbound(tcp, Transport::Tcp, local, remote, &streams).await,
                Some(acceptor) => {
                    let failures = &streams.metrics.tls_failures;
                    let handshake = acceptor.accept(tcp);
                    if let Some(s) =
                        tls_handshake(handshake, TLS_HANDSHAKE_TIMEOUT, remote, failures).await
                    {
                        serve_inbound(s, Transport::Tls, local, remote, &streams).await
                    }
                }
            }
        });
    })
    .await
}

/// Registers an accepted connection with the core loop, serves it, reports its end.
async fn serve_inbound<S>(
    stream: S,
    transport: Transport,
    local: SocketAddr,
    remote: SocketAddr,
    streams: &Arc<Streams>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let id = streams.next_id();
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    let opened = Event::Opened {
        id,
        transport,
        remote,
        local,
        tx,
    };
    if streams.events.send(opened).await.is_err() {
        return;
    }
    let reason = serve(stream, id, remote, streams, rx).await;
    debug!("connection {id} from {remote} ({transport:?}) closed: {reason:?}");
    let _ = streams.events.send(Event::Closed { id, reason }).await;
}

/// Reads and writes one connection until it closes, idles out or is told to close.
async fn serve<S>(
    mut stream: S,
    id: ConnId,
    remote: SocketAddr,
    streams: &Streams,
    mut rx: mpsc::Receiver<ConnCmd>,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = streams.limits();
    let frame_limits = Limits {
        max_message_size: limits.max_message_size,
        ..Limits::default()
    };
    let idle = limits.idle_lifetime;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; READ_CHUNK];
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let n = match read {
                    Ok(0) => return CloseReason::Eof,
                    Ok(n) => n,
                    Err(e) => {
                        debug!("connection {id} from {remote}: {e}");
                        return CloseReason::Error;
                    }
                };
                idle_timer.as_mut().reset(Instant::now() + idle);
                buf.extend_from_slice(&chunk[..n]);
                match drain_frames(&mut buf, &frame_limits, id, streams).await {
                    Ok(pings) => {
                        // RFC 5626 section 4.4.1: one pong per ping.
                        for _ in 0..pings {
                            if write(&mut stream, b"\r\n").await.is_err() {
                                return CloseReason::Error;
                            }
                        }
                    }
                    Err(Drained::CoreGone) => return CloseReason::Eof,
                    Err(Drained::Unframeable(err)) => {
                        streams.metrics.stream_errors.inc();
                        debug!("connection {id} from {remote}: {err}; closing");
                        // RFC 3261 section 18.3: there is no way to find the next message.
                        if let Some(answer) = error_response(&buf, &err) {
                            let _ = write(&mut stream, &answer).await;
                        }
                        let _ = stream.shutdown().await;
                        return CloseReason::Error;
                    }
                }
            }
            cmd = rx.recv() => match cmd {
                Some(ConnCmd::Send(data)) => {
                    idle_timer.as_mut().reset(Instant::now() + idle);
                    if write(&mut stream, &data).await.is_err() {
                        return CloseReason::Error;
                    }
                }
                Some(ConnCmd::Close) | None => {
                    let _ = timeout(WRITE_TIMEOUT, stream.shutdown()).await;
                    return CloseReason::Eof;
                }
            },
            () = &mut idle_timer => {
                debug!("connection {id} from {remote}: idle for {idle:?}, closing");
                let _ = timeout(WRITE_TIMEOUT, stream.shutdown()).await;
                return CloseReason::Eof;
            }
        }
    }
}

enum Drained {
    CoreGone,
    Unframeable(ParseError),
}

/// Hands every whole message at the front of `buf` to the core loop; returns how many
/// keep-alive pings were among them.
async fn drain_frames(
    buf: &mut Vec<u8>,
    limits: &Limits,
    id: ConnId,
    streams: &Streams,
) -> Result<usize, Drained> {
    let mut pings = 0;
    loop {
        match frame(buf, limits) {
            Ok(Frame::Incomplete) => {
                if buf.len() > limits.max_message_size {
                    return Err(Drained::Unframeable(ParseError::TooLarge));
                }
                return Ok(pings);
            }
            Ok(Frame::KeepAlive { len, ping }) => {
                buf.drain(..len.min(buf.len()));
                pings += usize::from(ping);
            }
            Ok(Frame::Message { len }) => {
                let data: Vec<u8> = buf.drain(..len.min(buf.len())).collect();
                // Waits when the core loop is behind: back-pressure reaches the peer.
                if streams
                    .events
                    .send(Event::Message { id, data })
                    .await
                    .is_err()
                {
                    return Err(Drained::CoreGone);
                }
            }
            Err(e) => return Err(Drained::Unframeable(e)),
        }
    }
}

/// Writes and flushes (TLS buffers records until flushed), within [`WRITE_TIMEOUT`].
async fn write<S: AsyncWrite + Unpin>(stream: &mut S, data: &[u8]) -> std::io::Result<()> {
    let io = async {
        stream.write_all(data).await?;
        stream.flush().await
    };
    match timeout(WRITE_TIMEOUT, io).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}
