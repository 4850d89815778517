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
//! The shell around it (arguments, logging, the core thread, signals, listeners,
//! connection limits, group commit, `/metrics`) is `rtc-daemon`'s; what is here is sipd's
//! own: which sockets, which tasks, what a reload re-reads.
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

use anyhow::Context;
use db::{Lookup, ReloadBindings, WriterCmd};
use metrics::Metrics;
use rtc_daemon::core::CoreHandle;
use rtc_daemon::shell::{Request, Signals};
use rtc_daemon::systemd::notify_or_warn;
use rtc_daemon::{listen, settings};
use rtc_store::{LocationOp, Store};
use sip_proto::txn::Transport;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use stream::Streams;
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
/// Kernel buffer per UDP socket: bursts of REGISTERs after a network outage are where a
/// SIP server loses datagrams (Kamailio's known weak point).
const UDP_BUFFER: usize = 8 << 20;
/// How long shutdown waits for the core loop and then the writer.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

const IDENTITY: rtc_daemon::cli::Identity = rtc_daemon::cli::Identity {
    name: "sipd",
    version: env!("CARGO_PKG_VERSION"),
    about: "SIP registrar and proxy (RFC 3261)",
    config_help: "Configuration file (TOML, Kamailio names)",
    default_config: config::DEFAULT_CONFIG,
    config_env: "SIPD_CONFIG",
};

fn main() -> ExitCode {
    rtc_daemon::cli::main(
        &IDENTITY,
        config::load_with_files,
        |r| r.fixed.shell.log_level.clone(),
        run,
    )
}

/// Sockets bound at start; TCP ones listen only once the core is ready.
struct Bound {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<(socket2::Socket, Transport, String)>,
}

fn run(r: config::Resolved) -> anyhow::Result<()> {
    let io = rtc_daemon::shell::io_runtime("sipd")?;
    let (store, bindings) = io.block_on(open_store(&r.fixed.store_url))?;

    let cert_store = match (&r.fixed.tls_certificate, &r.fixed.tls_private_key) {
        (Some(c), Some(k)) if r.has_tls() => Some(rtc_tls::CertStore::load(c, k).context("TLS")?),
        _ => None,
    };
    let acceptor = cert_store
        .as_ref()
        .map(|c| tokio_rustls::TlsAcceptor::from(c.server_config(&[])));

    let bound = bind_all(&r.fixed.listeners)?;

    let metrics = Arc::new(Metrics::new());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (lookup_tx, lookup_rx) = mpsc::channel::<Lookup>(LOOKUP_QUEUE);
    let (dns_tx, dns_rx) = mpsc::channel::<dns::Query>(DNS_QUEUE);
    let _io = io.enter();
    io.spawn(dns::resolver_task(
        dns_rx,
        events_tx.clone(),
        metrics.clone(),
    ));
    let streams = Streams::new(
        io.handle().clone(),
        events_tx.clone(),
        metrics.clone(),
        r.live.streams,
    );
    let database = db::Db {
        store: store.clone(),
        events: events_tx,
        metrics: metrics.clone(),
    };
    io.spawn(db::credentials_task(database.clone(), lookup_rx));
    let (writer_tx, writer) = db::spawn_location_writer(database, WRITER_QUEUE);

    let setup = core_loop::Setup {
        core: r.live.core.clone(),
        pike: r.live.pike.clone(),
        bindings,
        udp: bound.udp,
        streams: streams.clone(),
        metrics: metrics.clone(),
        lookups: lookup_tx,
        writer: writer_tx.clone(),
        dns: dns_tx,
    };
    let core = rtc_daemon::core::spawn("sipd", "SIP", events_rx, move || {
        core_loop::SipLoop::new(setup)
    })?;

    for (sock, transport, what) in bound.tcp {
        let listener = listen::listen(sock, &what)?;
        let tls = match transport {
            Transport::Tls => acceptor.clone(),
            _ => None,
        };
        io.spawn(stream::accept_loop(listener, tls, streams.clone()));
    }
    rtc_daemon::metrics::serve(&io, &r.fixed.shell, metrics.registry.clone())?;

    info!(
        "sipd serving {} on {}, database {}",
        r.live.core.domains.join(", "),
        r.fixed.listen.join(", "),
        store.url()
    );
    notify_or_warn("READY=1");

    io.block_on(async move {
        serve(core, r, cert_store, &streams, writer_tx).await?;
        writer.finish(SHUTDOWN_TIMEOUT).await;
        // A writer still stuck in a hung database holds its connection: do not wait for it.
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, store.close())
            .await
            .is_err()
        {
            warn!("database connections still busy at exit");
        }
        Ok(())
    })
}

/// Handles signals until SIGTERM, then lets the core loop wait for the writer to confirm
/// what it queued, send the answers that releases, and end.
async fn serve(
    mut core: CoreHandle<core_loop::Reload>,
    mut running: config::Resolved,
    cert_store: Option<Arc<rtc_tls::CertStore>>,
    streams: &Streams,
    writer: mpsc::Sender<WriterCmd>,
) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    loop {
        let request = tokio::select! {
            r = signals.next() => r,
            e = core.stopped() => return Err(e),
        };
        if request == Request::Stop {
            break;
        }
        if let Some(c) = &cert_store {
            match c.reload() {
                Ok(()) => info!("certificate reloaded"),
                Err(e) => warn!("certificate reload failed, keeping the old one: {e}"),
            }
        }
        core.reload(reload_config(&mut running, streams)).await;
        let _ = writer.send(WriterCmd::Barrier(ReloadBindings)).await;
    }
    notify_or_warn("STOPPING=1");
    core.shutdown(SHUTDOWN_TIMEOUT).await;
    // With the core loop's sender gone, dropping ours lets the writer finish the queue.
    drop(writer);
    Ok(())
}

/// Connects, creates missing tables, purges expired bindings and reads the rest.
async fn open_store(url: &str) -> anyhow::Result<(Store, Vec<sip_proto::core::Binding>)> {
    let store = Store::connect(url).await.context("database")?;
    store.migrate_sip().await.context("database")?;
    let now = core_loop::unix_now();
    store
        .sip()
        .apply_location_batch(&[LocationOp::PurgeExpired { now_unix: now }])
        .await
        .context("database: purging expired bindings")?;
    let rows = store.sip().load_locations().await.context("database")?;
    let bindings = rows
        .into_iter()
        .filter(|r| r.is_live(now))
        .map(db::binding_from_row)
        .collect();
    Ok((store, bindings))
}

/// Binds every listener: UDP with a large kernel buffer, TCP/TLS bound but not yet
/// listening (connections are accepted once the core is up).
fn bind_all(listeners: &[config::ListenSpec]) -> anyhow::Result<Bound> {
    let mut bound = Bound {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for l in listeners {
        let what = format!("{}:{}", l.transport.via_token().to_lowercase(), l.addr);
        if l.transport == Transport::Udp {
            let s =
                listen::bind_udp(l.addr, UDP_BUFFER).with_context(|| format!("listen {what}"))?;
            bound.udp.push(s);
        } else {
            let s = listen::bind_tcp(l.addr).with_context(|| format!("listen {what}"))?;
            bound.tcp.push((s, l.transport, what));
        }
    }
    Ok(bound)
}

/// Re-reads the config file for SIGHUP. Returns the core and pike settings to apply, or
/// `None` (the running ones stay) when the file no longer checks. Static settings that
/// changed are reported, not applied.
fn reload_config(running: &mut config::Resolved, streams: &Streams) -> core_loop::Reload {
    let mut new = match config::load(&running.path) {
        Ok(n) => n,
        Err(e) => {
            error!("reload: {e}; keeping the running configuration");
            return None;
        }
    };
    settings::warn_restart_needed(&running.fixed, &new.fixed);
    // The core describes the sockets bound at start, not the ones the file names now.
    new.live.core.listeners = running.live.core.listeners.clone();
    streams.set_limits(new.live.streams);
    running.live = new.live.clone();
    Some(Box::new((new.live.core, new.live.pike)))
}
