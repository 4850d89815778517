//! `sipd`: the SIP registrar and proxy of the suite, an I/O shell around
//! [`sip_proto::core::Core`].
//!
//! `main` loads and checks the configuration, opens the database (Kamailio's `subscriber`
//! and `location` tables), purges expired bindings and reads the rest, binds every socket
//! (so a bad address fails start-up with a clear message), then starts:
//!
//! ```text
//! core thread (current-thread runtime)      I/O runtime (1 worker, this thread's signals)
//!   core loop: Core + pike + UDP sockets <---- connection tasks (TCP/TLS read, frame, write)
//!     |  ^ Event channel                 <---- credentials task (subscriber lookups)
//!     |  +-------------------------------<---- location writer (group commit, reload)
//!     +--> lookups / store orders ------------>  /metrics, SIGHUP, SIGTERM
//! ```
//!
//! READY=1 goes to systemd once the core holds its bindings and the TCP/TLS sockets
//! listen. SIGHUP reloads the certificate, the reloadable settings and the bindings (so
//! `rtc-admin sip ul add/rm` take effect); SIGTERM lets the location writer commit what is
//! queued, then exits 0.

mod config;
mod core_loop;
mod db;
mod dns;
mod keepalive;
mod metrics;
mod stream;

use clap::Parser;
use core_loop::Event;
use db::{Lookup, WriterCmd};
use metrics::Metrics;
use rtc_store::{LocationOp, Store};
use sip_proto::txn::Transport;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stream::Streams;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Events waiting for the core loop; connection tasks wait when it is full, which slows
/// their readers down (back-pressure) rather than growing memory.
const EVENT_QUEUE: usize = 8192;
/// Credential lookups waiting for the database; beyond this they are dropped (see
/// `core_loop`: the UA retransmits).
const LOOKUP_QUEUE: usize = 1024;
/// RFC 3263 lookups waiting for the resolver before new ones are answered 478.
const DNS_QUEUE: usize = 1024;
/// Location orders waiting for the writer; beyond this a REGISTER gets an error at once.
const WRITER_QUEUE: usize = 20_000;
/// Kernel receive buffer per UDP socket: bursts of REGISTERs after a network outage are
/// where a SIP server loses datagrams (Kamailio's known weak point), and they are lost in
/// the kernel, not in user space.
const UDP_BUFFER: usize = 8 << 20;
const TCP_BACKLOG: i32 = 1024;
/// How long shutdown waits for the core loop and then the writer.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(version, about = "SIP registrar and proxy (RFC 3261)")]
struct Cli {
    /// Configuration file (TOML, Kamailio names).
    #[arg(short, long, default_value = config::DEFAULT_CONFIG, env = "SIPD_CONFIG")]
    config: PathBuf,
    /// Check the configuration and exit: 0 if valid, 1 with file, key and reason if not.
    #[arg(long)]
    check_config: bool,
}

fn main() {
    let cli = Cli::parse();
    let resolved = match config::load(&cli.config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sipd: {e}");
            std::process::exit(1);
        }
    };
    if cli.check_config {
        println!("{}: configuration is valid", cli.config.display());
        return;
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| resolved.file.log_level.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        // Colour only on a terminal: under systemd the journal would keep escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    if let Err(e) = run(resolved) {
        error!("{e}");
        std::process::exit(1);
    }
}

/// Sockets bound at start; TCP ones listen only once the core is ready.
struct Bound {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<(socket2::Socket, Transport)>,
}

fn run(r: config::Resolved) -> Result<(), String> {
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sipd-io")
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;

    let (store, bindings) = io.block_on(open_store(&r.store_url))?;

    let cert_store = match (&r.file.tls_certificate, &r.file.tls_private_key) {
        (Some(c), Some(k)) if r.has_tls() => {
            Some(rtc_tls::CertStore::load(c, k).map_err(|e| format!("TLS: {e}"))?)
        }
        _ => None,
    };
    let acceptor = cert_store
        .as_ref()
        .map(|c| tokio_rustls::TlsAcceptor::from(c.server_config(&[])));

    let bound = bind_all(&r.listeners)?;

    let metrics = Arc::new(Metrics::new());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (lookup_tx, lookup_rx) = mpsc::channel::<Lookup>(LOOKUP_QUEUE);
    let (dns_tx, dns_rx) = mpsc::channel::<dns::Query>(DNS_QUEUE);
    io.spawn(dns::resolver_task(
        dns_rx,
        events_tx.clone(),
        metrics.clone(),
    ));
    let (writer_tx, writer_rx) = mpsc::channel::<WriterCmd>(WRITER_QUEUE);
    let streams = Streams::new(
        io.handle().clone(),
        events_tx.clone(),
        metrics.clone(),
        r.streams,
    );
    io.spawn(db::credentials_task(
        store.clone(),
        lookup_rx,
        events_tx.clone(),
        metrics.clone(),
    ));
    let writer = io.spawn(db::location_writer(
        store.clone(),
        writer_rx,
        events_tx.clone(),
        metrics.clone(),
    ));

    // The core thread. Its end (normal, or a panic unwinding) drops `core_done`.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (core_done_tx, mut core_done) = tokio::sync::oneshot::channel::<()>();
    let setup = core_loop::Setup {
        core: r.core.clone(),
        pike: r.pike.clone(),
        bindings,
        udp: bound.udp,
        streams: streams.clone(),
        metrics: metrics.clone(),
        lookups: lookup_tx,
        writer: writer_tx.clone(),
        dns: dns_tx,
        events: events_rx,
    };
    let core_thread = std::thread::Builder::new()
        .name("sipd-core".into())
        .spawn(move || {
            let _done = core_done_tx;
            core_loop::run(setup, ready_tx);
        })
        .map_err(|e| format!("thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let _ = core_thread.join();
            return Err("the SIP core failed to start".into());
        }
    }

    for (sock, transport) in bound.tcp {
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        sock.listen(TCP_BACKLOG)
            .map_err(|e| format!("{transport:?} {local:?}: listen: {e}"))?;
        let tls = match transport {
            Transport::Tls => acceptor.clone(),
            _ => None,
        };
        io.spawn(stream::accept_loop(sock.into(), tls, streams.clone()));
    }

    if r.file.prometheus {
        let addr = SocketAddr::new(r.file.prometheus_address, r.file.prometheus_port);
        let listener = io
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| format!("prometheus {addr}: {e}"))?;
        let registry = metrics.registry.clone();
        io.spawn(async move {
            if let Err(e) = rtc_metrics::serve(listener, registry).await {
                error!("metrics endpoint stopped: {e}");
            }
        });
        info!("metrics on http://{addr}/metrics");
    }

    info!(
        "sipd serving {} on {}, database {}",
        r.core.domains.join(", "),
        r.file.listen.join(", "),
        store.url()
    );
    sd_notify("READY=1");

    io.block_on(async move {
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut running = r;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading configuration, certificate and bindings");
                    if let Some(c) = &cert_store {
                        match c.reload() {
                            Ok(()) => info!("certificate reloaded"),
                            Err(e) => warn!("certificate reload failed, keeping the old one: {e}"),
                        }
                    }
                    let settings = reload_config(&mut running, &streams);
                    let _ = events_tx.send(Event::Reload(settings)).await;
                    let _ = writer_tx.send(WriterCmd::ReloadBindings).await;
                }
                _ = term.recv() => { info!("SIGTERM: exiting"); break; }
                _ = int.recv() => { info!("SIGINT: exiting"); break; }
                _ = &mut core_done => {
                    return Err("the SIP core stopped unexpectedly".to_string());
                }
            }
        }
        sd_notify("STOPPING=1");
        // The core loop stops reading, waits for the writer to confirm what it queued,
        // sends the answers it released, and ends.
        let _ = events_tx.send(Event::Shutdown).await;
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut core_done)
            .await
            .is_err()
        {
            warn!("the SIP core did not stop in time");
        }
        // With the core loop's sender gone, dropping ours lets the writer finish the queue.
        drop(writer_tx);
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, writer).await {
            Ok(_) => {}
            Err(_) => warn!("location writer did not finish in time; uncommitted changes are lost"),
        }
        store.close().await;
        Ok::<(), String>(())
    })?;
    Ok(())
}

/// Connects, creates missing tables, purges expired bindings and reads the rest.
async fn open_store(url: &str) -> Result<(Store, Vec<sip_proto::core::Binding>), String> {
    let store = Store::connect(url)
        .await
        .map_err(|e| format!("database: {e}"))?;
    store
        .migrate_sip()
        .await
        .map_err(|e| format!("database: {e}"))?;
    let now = core_loop::unix_now();
    store
        .sip()
        .apply_location_batch(&[LocationOp::PurgeExpired { now_unix: now }])
        .await
        .map_err(|e| format!("database: purging expired bindings: {e}"))?;
    let rows = store
        .sip()
        .load_locations()
        .await
        .map_err(|e| format!("database: {e}"))?;
    let bindings = rows
        .into_iter()
        .filter(|r| r.is_live(now))
        .map(db::binding_from_row)
        .collect();
    Ok((store, bindings))
}

/// Binds every listener: UDP with a large receive buffer, TCP/TLS bound but not yet
/// listening (connections are accepted once the core is up).
fn bind_all(listeners: &[config::ListenSpec]) -> Result<Bound, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut bound = Bound {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for l in listeners {
        let what = format!("{}:{}", l.transport.via_token().to_lowercase(), l.addr);
        let err = |e: std::io::Error| format!("listen {what}: {e}");
        let (ty, proto) = match l.transport {
            Transport::Udp => (Type::DGRAM, Protocol::UDP),
            _ => (Type::STREAM, Protocol::TCP),
        };
        let s = Socket::new(Domain::for_address(l.addr), ty, Some(proto)).map_err(err)?;
        if l.addr.is_ipv6() {
            // `udp:[::]` serves IPv6 only, so it can sit beside `udp:0.0.0.0`.
            s.set_only_v6(true).map_err(err)?;
        }
        s.set_nonblocking(true).map_err(err)?;
        if l.transport == Transport::Udp {
            let _ = s.set_recv_buffer_size(UDP_BUFFER);
            let _ = s.set_send_buffer_size(UDP_BUFFER);
            s.bind(&l.addr.into()).map_err(err)?;
            if s.recv_buffer_size().is_ok_and(|n| n < UDP_BUFFER) {
                // The kernel caps it at net.core.rmem_max; say so, it matters under load.
                warn!(
                    "{what}: receive buffer is {} bytes, not {UDP_BUFFER}; raise net.core.rmem_max",
                    s.recv_buffer_size().unwrap_or(0)
                );
            }
            bound.udp.push(s.into());
        } else {
            s.set_reuse_address(true).map_err(err)?;
            s.bind(&l.addr.into()).map_err(err)?;
            bound.tcp.push((s, l.transport));
        }
    }
    Ok(bound)
}

/// Re-reads the config file for SIGHUP. Returns the core and pike settings to apply, or
/// `None` (the running ones stay) when the file no longer checks. Settings that need
/// sockets or connections made again are reported, not applied.
fn reload_config(
    running: &mut config::Resolved,
    streams: &Streams,
) -> Option<Box<(sip_proto::core::Config, sip_proto::pike::PikeConfig)>> {
    let new = match config::load(&running.path) {
        Ok(n) => n,
        Err(e) => {
            error!("reload: {e}; keeping the running configuration");
            return None;
        }
    };
    let needs_restart: [(&str, bool); 7] = [
        ("listen", new.listeners != running.listeners),
        ("db-url", new.store_url != running.store_url),
        (
            "tls-certificate",
            new.file.tls_certificate != running.file.tls_certificate,
        ),
        (
            "tls-private-key",
            new.file.tls_private_key != running.file.tls_private_key,
        ),
        ("prometheus", new.file.prometheus != running.file.prometheus),
        (
            "prometheus-address",
            new.file.prometheus_address != running.file.prometheus_address
                || new.file.prometheus_port != running.file.prometheus_port,
        ),
        ("log-level", new.file.log_level != running.file.log_level),
    ];
    for (key, changed) in needs_restart {
        if changed {
            warn!("reload: `{key}` changed; it takes effect at the next restart");
        }
    }
    streams.set_limits(new.streams);
    let mut core = new.core.clone();
    // The sockets are the ones bound at start.
    core.listeners = running.core.listeners.clone();
    let pike = new.pike.clone();
    // Keep what needs a restart as it runs, so the next reload compares against it.
    let mut kept = new;
    kept.listeners = running.listeners.clone();
    kept.store_url = running.store_url.clone();
    kept.file.listen = running.file.listen.clone();
    kept.file.db_url = running.file.db_url.clone();
    kept.file.tls_certificate = running.file.tls_certificate.clone();
    kept.file.tls_private_key = running.file.tls_private_key.clone();
    kept.file.prometheus = running.file.prometheus;
    kept.file.prometheus_address = running.file.prometheus_address;
    kept.file.prometheus_port = running.file.prometheus_port;
    kept.file.log_level = running.file.log_level.clone();
    kept.core.listeners = running.core.listeners.clone();
    *running = kept;
    Some(Box::new((core, pike)))
}

/// Tells systemd (`Type=notify`) about `state`, if it is watching.
fn sd_notify(state: &str) {
    if let Err(e) = rtc_systemd::notify(state) {
        warn!("sd_notify: {e}");
    }
}
