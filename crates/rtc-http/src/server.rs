//! Accepting connections and serving each under [`Limits`].

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::Router;

/// What one connection may cost the daemon. HTTP faces the network while the daemon's real
/// work is SIP, XMPP or TURN, so a client that never finishes its request, one that never
/// reads the answer, or a flood of either must not be able to take more than this. The
/// defaults are those of the hand-written `/metrics` endpoint this server replaced.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line and header fields). A longer one is refused with
    /// `431 Request Header Fields Too Large` (RFC 6585 §5) and the connection closes. A
    /// scrape or a WebSocket handshake is a few hundred bytes; 8 KiB is also what common
    /// servers accept, so no real client meets it, and no client makes us buffer more.
    pub max_head_bytes: usize,
    /// Time from accept to a complete request head, TLS handshake included. A slower client
    /// is disconnected without an answer: each open connection holds one of the
    /// [`Limits::max_connections`] slots, so a trickle of bytes (slowloris) must not keep it.
    pub head_timeout: Duration,
    /// Further time, once `head_timeout` has run, for the handler and for writing the
    /// response: the whole exchange ends at most `head_timeout + response_timeout` after
    /// accept, so a client that stops reading cannot keep its slot either.
    pub response_timeout: Duration,
    /// Connections served at once. At the cap the server stops accepting: further clients
    /// wait in the kernel's listen backlog and are served as slots free, costing neither
    /// memory nor a task; when the backlog is full, the kernel refuses them.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: 8 * 1024,
            head_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            max_connections: 64,
        }
    }
}

/// Consecutive accept failures tolerated (with back-off) before [`Server::serve`] gives up:
/// running out of file descriptors is transient, a listener failing for this long is not.
const MAX_ACCEPT_FAILURES: u32 = 30;

/// An HTTP/1.1 server: a [`Router`], its [`Limits`], and TLS or not.
///
/// HTTP/1.1 only, on purpose: Prometheus scrapes and RFC 6455 upgrades are HTTP/1.1, and
/// HTTP/2 would bring a second set of limits to get right (streams, HPACK tables) for no
/// client we have.
pub struct Server {
    router: Arc<Router>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
}

impl Server {
    /// Plain HTTP with the default [`Limits`].
    pub fn new(router: Router) -> Server {
        Server {
            router: Arc::new(router),
            limits: Limits::default(),
            tls: None,
        }
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: Limits) -> Server {
        self.limits = limits;
        self
    }

    /// Serves HTTPS with `config` (from `rtc_tls::CertStore::server_config`, so TLS 1.2 and
    /// 1.3 with a certificate that follows reloads). ALPN offers only `http/1.1`
    /// (RFC 7301), whatever `config` lists, as that is all this server speaks.
    pub fn tls(mut self, config: Arc<ServerConfig>) -> Server {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        self.tls = Some(TlsAcceptor::from(Arc::new(config)));
        self
    }

    /// Serves `listener` until the future is dropped. Returns an error only if accepting
    /// keeps failing (30 times in a row, with back-off).
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut failures = 0u32;
        loop {
            // Take the slot before accepting, so a connection over the cap stays in the
            // kernel's backlog instead of being accepted and parked here.
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    failures = 0;
                    stream
                }
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_ACCEPT_FAILURES {
                        return Err(e);
                    }
                    let backoff = Duration::from_millis(10u64 << failures.min(7));
                    tokio::time::sleep(backoff.min(Duration::from_secs(1))).await;
                    continue;
                }
            };
            let router = self.router.clone();
            let tls = self.tls.clone();
            let limits = self.limits;
            tokio::spawn(async move {
                connection(stream, tls, router, limits).await;
                drop(slot);
            });
        }
    }
}

/// One connection: TLS handshake if any, then one request and its response.
async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    router: Arc<Router>,
    limits: Limits,
) {
    let head_deadline = Instant::now() + limits.head_timeout;
    match tls {
        None => exchange(TokioIo::new(stream), router, limits, head_deadline).await,
        Some(acceptor) => {
            // A failed or slow handshake has nobody to answer: rustls has sent its alert.
            if let Ok(Ok(stream)) = timeout_at(head_deadline, acceptor.accept(stream)).await {
                exchange(TokioIo::new(stream), router, limits, head_deadline).await;
            }
        }
    }
}

/// Lets hyper read one request head by `head_deadline`, dispatch it and write the response
/// by `head_deadline + response_timeout`.
async fn exchange<I>(io: TokioIo<I>, router: Arc<Router>, limits: Limits, head_deadline: Instant)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.dispatch(request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        // One request per connection: the slot frees as soon as the answer is out, and the
        // time limits are per connection. Prometheus reconnects for every scrape, which
        // costs nothing at one scrape every few seconds.
        .keep_alive(false)
        // A client may shut down its sending side once its request is out (HTTP/1.0
        // tools do); it still gets its answer.
        .half_close(true)
        // `Content-Type`, not `content-type`: the same bytes the hand-written endpoint sent,
        // for the scripts that grep a response head.
        .title_case_headers(true)
        .max_header_size(limits.max_head_bytes)
        .header_read_timeout(head_deadline.saturating_duration_since(Instant::now()))
        .serve_connection(io, service)
        // The future ends once a 101 response is written and the stream handed to the
        // handler's `hyper::upgrade::on`, so the deadline below does not follow it.
        .with_upgrades();
    // Errors are the client's (reset, timeout, a malformed request hyper already answered
    // with 400 or 431); there is nobody to report them to.
    let _ = timeout_at(head_deadline + limits.response_timeout, connection).await;
}
