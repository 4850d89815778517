//! `xmppd`: the XMPP server of the suite, an I/O shell around
//! [`xmpp_proto::server::Server`].
//!
//! `main` loads and checks the configuration (the main file and every enabled virtual-host
//! file), loads each host's certificate, opens the database and creates missing tables,
//! binds every client port (so a bad address fails start-up with a clear message), then
//! starts:
//!
//! ```text
//! core thread (current-thread runtime)      I/O runtime (1 worker, this thread's signals)
//!   core loop: Server (all XMPP state) <----- connection tasks (accept, TLS, read, write)
//!     |  ^ Event channel                <----- lookup task (accounts, stores; 6 at a time)
//!     |  +------------------------------<----- writer task (group commit of Store orders)
//!     +--> bytes, STARTTLS, close, read on --> connection tasks
//!     +--> sequencer (per-user order) -------> lookup task / writer task
//!                                              /metrics, SIGHUP, SIGTERM
//! ```
//!
//! READY=1 goes to systemd once the server exists and the client ports listen. SIGHUP
//! re-reads the main file and the virtual-host files and reloads the certificates: hosts
//! added or removed take effect at once (the server's `update_config`), sessions stay.
//! SIGTERM lets the writer commit what is queued, then exits 0.

mod config;
mod conn;
mod core_loop;
mod db;
mod metrics;
mod sequencer;
mod tls;

use clap::Parser;
use conn::Conns;
use core_loop::{Event, Reload};
use db::{Lookup, StoreOrder};
use metrics::Metrics;
use rtc_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tls::{CertTable, Certs};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use xmpp_proto::server::ConnKind;

/// Events waiting for the core loop; connection tasks wait when it is full, which slows
/// their readers down (back-pressure) rather than growing memory.
const EVENT_QUEUE: usize = 8192;
/// Lookups waiting for the database; beyond this the core gets an error answer at once.
const LOOKUP_QUEUE: usize = 4096;
/// Store orders waiting for the writer; beyond this a change fails at once.
const WRITER_QUEUE: usize = 20_000;
const TCP_BACKLOG: i32 = 1024;
/// How long shutdown waits for the core loop and then the writer.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    version,
    about = "XMPP server (RFC 6120, RFC 6121) with Prosody's configuration model"
)]
struct Cli {
    /// Main configuration file (TOML, Prosody's names); it names the virtual-host
    /// directories.
    #[arg(short, long, default_value = config::DEFAULT_CONFIG, env = "XMPPD_CONFIG")]
    config: PathBuf,
    /// Check the configuration (and load every host's certificate) and exit: 0 if valid,
    /// 1 with file, key and reason if not.
    #[arg(long)]
    check_config: bool,
}

fn main() {
    let cli = Cli::parse();
    let checked = config::load(&cli.config)
        .map_err(|e| e.to_string())
        .and_then(|r| CertTable::build(&r.vhosts).map(|certs| (r, certs)));
    let (resolved, certs) = match checked {
        Ok(x) => x,
        Err(e) => {
            eprintln!("xmppd: {e}");
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
    if let Err(e) = run(resolved, certs) {
        error!("{e}");
        std::process::exit(1);
    }
}

fn run(r: config::Resolved, certs: CertTable) -> Result<(), String> {
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("xmppd-io")
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;

    let store = io.block_on(open_store(&r.store_url))?;
    let certs = Certs::new(certs);
    let bound = bind_all(&r.listeners)?;

    let metrics = Arc::new(Metrics::new());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (lookup_tx, lookup_rx) = mpsc::channel::<Lookup>(LOOKUP_QUEUE);
    let (writer_tx, writer_rx) = mpsc::channel::<StoreOrder>(WRITER_QUEUE);
    io.spawn(db::lookup_task(
        store.clone(),
        lookup_rx,
        events_tx.clone(),
        metrics.clone(),
    ));
    let writer = io.spawn(db::writer_task(
        store.clone(),
        writer_rx,
        events_tx.clone(),
        metrics.clone(),
    ));
    let conns = Conns::new(events_tx.clone(), metrics.clone(), certs.clone(), r.conns);

    // The core thread. Its end (normal, or a panic unwinding) drops `core_done`.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (core_done_tx, mut core_done) = tokio::sync::oneshot::channel::<()>();
    let setup = core_loop::Setup {
        server: r.server.clone(),
        write_queue: r.conns.write_queue,
        metrics: metrics.clone(),
        lookups: lookup_tx,
        writer: writer_tx,
        events: events_rx,
    };
    let core_thread = std::thread::Builder::new()
        .name("xmppd-core".into())
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
            return Err("the XMPP core failed to start".into());
        }
    }

    for (sock, kind) in bound {
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        sock.listen(TCP_BACKLOG)
            .map_err(|e| format!("{kind:?} {local:?}: listen: {e}"))?;
        io.spawn(conn::accept_loop(sock.into(), kind, conns.clone()));
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

    let domains: Vec<&str> = r.vhosts.iter().map(|v| v.domain.as_str()).collect();
    let ports: Vec<String> = r.listeners.iter().map(|l| l.addr.to_string()).collect();
    info!(
        "xmppd serving {} on {}, database {}",
        domains.join(", "),
        ports.join(", "),
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
                    info!("SIGHUP: reloading configuration, virtual hosts and certificates");
                    if let Some(reload) = reload_config(&mut running, &certs, &conns) {
                        let _ = events_tx.send(Event::Reload(reload)).await;
                    }
                }
                _ = term.recv() => { info!("SIGTERM: exiting"); break; }
                _ = int.recv() => { info!("SIGINT: exiting"); break; }
                _ = &mut core_done => {
                    return Err("the XMPP core stopped unexpectedly".to_string());
                }
            }
        }
        sd_notify("STOPPING=1");
        // The core loop stops taking input, waits for the writer to confirm what it
        // queued, hands out what that releases, and ends.
        let _ = events_tx.send(Event::Shutdown).await;
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut core_done)
            .await
            .is_err()
        {
            warn!("the XMPP core did not stop in time");
        }
        // The core loop held the writer's only sender: with it gone the writer finishes
        // the queue and returns.
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, writer).await {
            Ok(_) => {}
            Err(_) => warn!("storage writer did not finish in time; uncommitted changes are lost"),
        }
        store.close().await;
        Ok::<(), String>(())
    })?;
    Ok(())
}

/// Connects and creates missing tables.
async fn open_store(url: &str) -> Result<Store, String> {
    let store = Store::connect(url)
        .await
        .map_err(|e| format!("database: {e}"))?;
    store
        .migrate_xmpp()
        .await
        .map_err(|e| format!("database: {e}"))?;
    Ok(store)
}

/// Binds every client port, not yet listening (connections are accepted once the core is
/// up).
fn bind_all(listeners: &[config::Listener]) -> Result<Vec<(socket2::Socket, ConnKind)>, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut bound = Vec::new();
    for l in listeners {
        let err = |e: std::io::Error| format!("listen {} ({:?}): {e}", l.addr, l.kind);
        let s = Socket::new(
            Domain::for_address(l.addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(err)?;
        if l.addr.is_ipv6() {
            // `::` serves IPv6 only, so it can sit beside `0.0.0.0`.
            s.set_only_v6(true).map_err(err)?;
        }
        s.set_nonblocking(true).map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        s.bind(&l.addr.into()).map_err(err)?;
        bound.push((s, l.kind));
    }
    Ok(bound)
}

/// Re-reads the configuration for SIGHUP. Returns the server's new settings, or `None`
/// (everything stays as it runs) when a file or a certificate no longer checks: a reload
/// is all or nothing. Settings that need sockets or the database opened again are
/// reported, not applied.
fn reload_config(
    running: &mut config::Resolved,
    certs: &Certs,
    conns: &Conns,
) -> Option<Box<Reload>> {
    let checked = config::load(&running.path)
        .map_err(|e| e.to_string())
        .and_then(|n| CertTable::build(&n.vhosts).map(|t| (n, t)));
    let (new, table) = match checked {
        Ok(x) => x,
        Err(e) => {
            error!("reload: {e}; keeping the running configuration");
            return None;
        }
    };
    let needs_restart: [(&str, bool); 6] = [
        ("interfaces", new.file.interfaces != running.file.interfaces),
        (
            "c2s-ports",
            new.file.c2s_ports != running.file.c2s_ports
                || new.file.c2s_direct_tls_ports != running.file.c2s_direct_tls_ports,
        ),
        ("db-url", new.store_url != running.store_url),
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
    certs.replace(table);
    conns.set_limits(new.conns);
    let reload = Reload {
        server: new.server.clone(),
        write_queue: new.conns.write_queue,
    };
    // Keep what needs a restart as it runs, so the next reload compares against it.
    let mut kept = new;
    kept.listeners = running.listeners.clone();
    kept.store_url = running.store_url.clone();
    kept.file.interfaces = running.file.interfaces.clone();
    kept.file.c2s_ports = running.file.c2s_ports.clone();
    kept.file.c2s_direct_tls_ports = running.file.c2s_direct_tls_ports.clone();
    kept.file.db_url = running.file.db_url.clone();
    kept.file.prometheus = running.file.prometheus;
    kept.file.prometheus_address = running.file.prometheus_address;
    kept.file.prometheus_port = running.file.prometheus_port;
    kept.file.log_level = running.file.log_level.clone();
    *running = kept;
    Some(Box::new(reload))
}

/// Tells systemd (`Type=notify`) about `state`, if it is watching.
fn sd_notify(state: &str) {
    if let Err(e) = rtc_systemd::notify(state) {
        warn!("sd_notify: {e}");
    }
}
