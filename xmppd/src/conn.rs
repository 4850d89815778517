//! Client connections: accepting, TLS, reading, writing, limits.
//!
//! Every connection is one task on the I/O runtime that owns its socket. Bytes read go to
//! the core loop as [`Event::Data`], unparsed: the XML parser lives in the core. In the
//! other direction the task writes what the core loop queues on its [`ConnHandle`]
//! (coalescing whatever is queued into one write, so a burst of stanzas costs one TLS
//! record and one syscall), and carries out the core's [`ConnCmd::StartTls`] by running
//! the server handshake on the same TCP stream.
//!
//! Reading is in lock-step with the core: after each chunk the task waits for the core
//! loop's verdict before it reads again. The verdict is [`ConnCmd::Resume`] (read on, or
//! pause until the instant the core's `c2s-rate` accounting names: TCP flow control then
//! slows the client down), `StartTls` (the client's ClientHello comes right after
//! `<proceed/>`, and those bytes must reach rustls, not the XML parser) or `Close`. So each
//! connection has at most one chunk with the core: memory stays bounded by the number of
//! connections whatever clients send, and the rate limit takes effect at the next read,
//! not after a queue of chunks already read. A round trip to the core loop costs
//! microseconds, far below what a client notices.
//!
//! Limits: `tcp-max-connections` and the per-address limit at accept; a write timeout and
//! a cap on queued output, so a client that stops reading is closed instead of growing our
//! memory (its XEP-0198 session can still be resumed).

use crate::config::ConnLimits;
use crate::core_loop::Event;
use crate::metrics::Metrics;
use crate::tls::{self, Certs};
use rtc_daemon::limiter::{tls_handshake, ConnLimiter};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::{timeout, Instant};
use tokio_rustls::server::TlsStream;
use tracing::debug;
use xmpp_proto::server::{CloseReason, ConnId, ConnKind};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not taken queued output within this time is not reading: close.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;
/// Queued output gathered into one write at most.
const COALESCE: usize = 64 * 1024;
/// Commands an idle connection's queue may keep room for.
const IDLE_QUEUE_CAPACITY: usize = 8;
/// TCP keep-alive: a client that vanished without a FIN (a phone losing its network) is
/// noticed by the kernel, and its session can be hibernated for resumption.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(120);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// What the core loop asks a connection task to do.
#[derive(Debug)]
pub enum ConnCmd {
    Send(Vec<u8>),
    /// Everything before this is written: start the TLS handshake.
    StartTls,
    /// The core has handled the last chunk: read on, at once or from the given instant
    /// (the connection's read budget is spent).
    Resume(Option<std::time::Instant>),
    /// Write what is queued, then close.
    Close,
}

/// The core loop's handle on one connection: a command queue shared with its task.
///
/// Not a tokio channel: a channel allocates its first block of slots (about a kilobyte)
/// when it is made and keeps it for the connection's life, and most connections are
/// idle most of the time. A `VecDeque` allocates only while something is queued, and
/// gives the memory back once a burst is written.
#[derive(Debug)]
pub struct ConnHandle {
    shared: Arc<ConnShared>,
}

#[derive(Debug, Default)]
struct ConnShared {
    queue: Mutex<VecDeque<ConnCmd>>,
    /// Something was queued, the connection is to be aborted, or the handle is gone.
    wake: Notify,
    /// Bytes queued and not yet written.
    queued: AtomicUsize,
    /// Close at once, dropping what is queued.
    abort: AtomicBool,
    /// The core loop let go of the connection (it is shutting down): nothing more will
    /// be queued.
    gone: AtomicBool,
}

impl ConnHandle {
    /// Queues `data`; false (and the connection is aborted) when more than `max` bytes
    /// would be waiting: the client is not reading what it is sent. That cap, in bytes,
    /// is what bounds the queue.
    pub fn send(&self, data: Vec<u8>, max: usize) -> bool {
        let queued = self.shared.queued.fetch_add(data.len(), Ordering::Relaxed) + data.len();
        if queued > max {
            self.abort();
            return false;
        }
        self.command(ConnCmd::Send(data));
        true
    }

    /// Queues any command; ignored once the task is gone.
    pub fn command(&self, cmd: ConnCmd) {
        self.shared.lock().push_back(cmd);
        self.shared.wake.notify_one();
    }

    /// Closes without writing what is queued.
    pub fn abort(&self) {
        self.shared.abort.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.shared.gone.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
    }
}

impl ConnShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ConnCmd>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next queued command. An emptied queue that grew for a burst is released.
    fn pop(&self) -> Option<ConnCmd> {
        let mut q = self.lock();
        let cmd = q.pop_front();
        if q.is_empty() && q.capacity() > IDLE_QUEUE_CAPACITY {
            *q = VecDeque::new();
        }
        cmd
    }
}

/// State shared by the accept loops, the connection tasks and the main thread.
pub struct Conns {
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    certs: Arc<Certs>,
    next_id: AtomicU64,
    limiter: Arc<ConnLimiter>,
}

impl Conns {
    pub fn new(
        events: mpsc::Sender<Event>,
        metrics: Arc<Metrics>,
        certs: Arc<Certs>,
        limits: ConnLimits,
    ) -> Arc<Conns> {
        Arc::new(Conns {
            events,
            metrics,
            certs,
            next_id: AtomicU64::new(1),
            limiter: ConnLimiter::new(limits.conns(), None),
        })
    }

    /// New limits (SIGHUP), for the next connections accepted.
    pub fn set_limits(&self, limits: ConnLimits) {
        self.limiter.set_limits(limits.conns());
    }
}

/// Accepts connections on one listener until the process exits.
pub async fn accept_loop(listener: std::net::TcpListener, kind: ConnKind, conns: Arc<Conns>) {
    let (limiter, refused) = (conns.limiter.clone(), conns.metrics.tcp_refused.clone());
    rtc_daemon::limiter::accept_loop(listener, limiter, refused, move |tcp, remote, slot| {
        let conns = conns.clone();
        tokio::spawn(async move {
            let _slot = slot;
            connection(tcp, remote, kind, &conns).await;
        });
    })
    .await
}

/// Sets the connection up (TLS first on a direct-TLS port), registers it with the core
/// loop, serves it, reports its end.
async fn connection(tcp: TcpStream, remote: SocketAddr, kind: ConnKind, conns: &Conns) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
    let (stream, tls) = match kind {
        ConnKind::C2sStartTls => (Stream::Plain(tcp), None),
        // Boxed, here and for STARTTLS: a handshake's state (rustls's) is large and
        // short-lived, and inline it would make every connection's task that much bigger
        // for its whole life.
        ConnKind::C2sDirectTls => match Box::pin(handshake(conns, tcp, kind, remote)).await {
            Some((s, info)) => (Stream::Tls(Box::new(s)), Some(info)),
            None => return,
        },
    };
    let id = conns.next_id.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::new(ConnShared::default());
    let handle = ConnHandle {
        shared: shared.clone(),
    };
    let opened = Event::Opened {
        id,
        kind,
        peer: remote,
        conn: handle,
        tls,
    };
    if conns.events.send(opened).await.is_err() {
        return;
    }
    let mut task = ConnTask {
        id,
        remote,
        conns,
        shared,
        waiting: false,
        paused_until: None,
        out: Vec::new(),
    };
    let reason = task.serve(stream).await;
    debug!("connection {id} from {remote} closed: {reason:?}");
    let _ = conns.events.send(Event::Closed { id, reason }).await;
}

/// The TLS handshake within its time limit; failures are counted and logged.
async fn handshake(
    conns: &Conns,
    tcp: TcpStream,
    kind: ConnKind,
    remote: SocketAddr,
) -> Option<(TlsStream<TcpStream>, xmpp_proto::server::TlsInfo)> {
    let accept = tls::accept(&conns.certs, tcp, kind);
    tls_handshake(
        accept,
        TLS_HANDSHAKE_TIMEOUT,
        remote,
        &conns.metrics.tls_failures,
    )
    .await
}

/// The socket, before and after TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Waits until a read would find something, without holding a buffer: an idle
    /// client then costs no read buffer at all. Under TLS, plaintext rustls already
    /// decrypted is ready at once.
    async fn readable(&self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.readable().await,
            Stream::Tls(s) => {
                let (tcp, tls) = s.get_ref();
                if tls.wants_read() {
                    tcp.readable().await
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
        }
    }

    /// Writes and flushes (TLS buffers records until flushed), within [`WRITE_TIMEOUT`].
    async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let io = async {
            match self {
                Stream::Plain(s) => s.write_all(data).await,
                Stream::Tls(s) => {
                    s.write_all(data).await?;
                    s.flush().await
                }
            }
        };
        match timeout(WRITE_TIMEOUT, io).await {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// Sends TLS close_notify and FIN, within [`WRITE_TIMEOUT`].
    async fn shutdown(&mut self) {
        let io = async {
            match self {
                Stream::Plain(s) => s.shutdown().await,
                Stream::Tls(s) => s.shutdown().await,
            }
        };
        let _ = timeout(WRITE_TIMEOUT, io).await;
    }
}

/// One connection's task state.
struct ConnTask<'a> {
    id: ConnId,
    remote: SocketAddr,
    conns: &'a Conns,
    shared: Arc<ConnShared>,
    /// A chunk is with the core: no reading until it answers.
    waiting: bool,
    /// No reading before this (`c2s-rate`).
    paused_until: Option<Instant>,
    /// Output gathered for the next write.
    out: Vec<u8>,
}

/// Why serving stopped.
type Stop = CloseReason;

impl ConnTask<'_> {
    /// Reads and writes until the connection closes or is told to.
    async fn serve(&mut self, mut stream: Stream) -> CloseReason {
        let shared = self.shared.clone();
        loop {
            let paused_until = self.paused_until.filter(|t| *t > Instant::now());
            let can_read = !self.waiting && paused_until.is_none();
            let mut buf = Vec::new();
            tokio::select! {
                biased;
                () = shared.wake.notified() => {
                    if shared.abort.load(Ordering::Relaxed) {
                        debug!("connection {} from {}: not reading its output, closing", self.id, self.remote);
                        return CloseReason::Error;
                    }
                    while let Some(cmd) = shared.pop() {
                        stream = match self.command(stream, cmd).await {
                            Ok(s) => s,
                            Err(stop) => return stop,
                        };
                    }
                    if shared.gone.load(Ordering::Relaxed) {
                        // The core loop is gone (shutdown) and everything it queued
                        // is written.
                        stream.shutdown().await;
                        return CloseReason::Eof;
                    }
                }
                read = async {
                    stream.readable().await?;
                    buf.reserve_exact(READ_CHUNK);
                    stream.read_buf(&mut buf).await
                }, if can_read => {
                    match read {
                        Ok(0) => return CloseReason::Eof,
                        Ok(_) => {
                            let data = Event::Data { id: self.id, data: buf };
                            // Waits when the core loop is behind: back-pressure reaches
                            // the client through TCP.
                            if self.conns.events.send(data).await.is_err() {
                                return CloseReason::Eof;
                            }
                            self.waiting = true;
                        }
                        Err(e) => {
                            debug!("connection {} from {}: {e}", self.id, self.remote);
                            return CloseReason::Error;
                        }
                    }
                }
                () = tokio::time::sleep_until(paused_until.unwrap_or_else(Instant::now)),
                    if !self.waiting && paused_until.is_some() => {}
            }
        }
    }

    /// Carries out `first` and whatever else is queued behind it. Consecutive sends
    /// become one write.
    async fn command(&mut self, mut stream: Stream, first: ConnCmd) -> Result<Stream, Stop> {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            if let ConnCmd::Send(data) = cmd {
                self.out.extend_from_slice(&data);
                if self.out.len() < COALESCE {
                    if let Some(more) = self.shared.pop() {
                        next = Some(more);
                        continue;
                    }
                }
                self.flush(&mut stream).await?;
                continue;
            }
            self.flush(&mut stream).await?;
            match cmd {
                ConnCmd::Send(_) => unreachable!("handled above"),
                ConnCmd::Resume(until) => {
                    self.waiting = false;
                    self.paused_until = until.map(Instant::from_std);
                }
                ConnCmd::Close => {
                    stream.shutdown().await;
                    return Err(CloseReason::Eof);
                }
                ConnCmd::StartTls => {
                    let Stream::Plain(tcp) = stream else {
                        debug!("connection {}: STARTTLS on a TLS stream", self.id);
                        return Err(CloseReason::Error);
                    };
                    let Some((tls, info)) = Box::pin(handshake(
                        self.conns,
                        tcp,
                        ConnKind::C2sStartTls,
                        self.remote,
                    ))
                    .await
                    else {
                        return Err(CloseReason::Error);
                    };
                    stream = Stream::Tls(Box::new(tls));
                    // The chunk that asked for TLS is answered: read the new stream.
                    self.waiting = false;
                    let up = Event::TlsEstablished { id: self.id, info };
                    if self.conns.events.send(up).await.is_err() {
                        return Err(CloseReason::Eof);
                    }
                }
            }
        }
        Ok(stream)
    }

    async fn flush(&mut self, stream: &mut Stream) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let n = self.out.len();
        let res = stream.write(&self.out).await;
        self.shared.queued.fetch_sub(n, Ordering::Relaxed);
        self.out.clear();
        if self.out.capacity() > COALESCE {
            // A burst is over: give the memory back rather than keep it per connection.
            self.out = Vec::new();
        }
        res.map_err(|e| {
            debug!("connection {} to {}: write: {e}", self.id, self.remote);
            CloseReason::Error
        })
    }
}
