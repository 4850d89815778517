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
//! The shell around it (arguments, logging, the core thread, signals, listeners,
//! connection limits, group commit, `/metrics`) is `rtc-daemon`'s; what is here is xmppd's
//! own: virtual hosts and their certificates, and what a reload re-reads.
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

use anyhow::Context;
use conn::Conns;
use core_loop::Reload;
use db::Lookup;
use metrics::Metrics;
use rtc_daemon::core::CoreHandle;
use rtc_daemon::shell::{Request, Signals};
use rtc_daemon::systemd::notify_or_warn;
use rtc_daemon::{listen, settings};
use rtc_store::Store;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tls::{CertTable, Certs};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Events waiting for the core loop; connection tasks wait when it is full, which slows
/// their readers down (back-pressure) rather than growing memory.
const EVENT_QUEUE: usize = 8192;
/// Lookups waiting for the database; beyond this the core gets an error answer at once.
const LOOKUP_QUEUE: usize = 4096;
/// Store orders waiting for the writer; beyond this a change fails at once.
const WRITER_QUEUE: usize = 20_000;
/// How long shutdown waits for the core loop and then the writer.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

const IDENTITY: rtc_daemon::cli::Identity = rtc_daemon::cli::Identity {
    name: "xmppd",
    version: env!("CARGO_PKG_VERSION"),
    about: "XMPP server (RFC 6120, RFC 6121) with Prosody's configuration model",
    config_help:
        "Main configuration file (TOML, Prosody's names); it names the virtual-host directories",
    default_config: config::DEFAULT_CONFIG,
    config_env: "XMPPD_CONFIG",
};

fn main() -> ExitCode {
    rtc_daemon::cli::main(
        &IDENTITY,
        load,
        |(r, _)| r.fixed.shell.log_level.clone(),
        |(r, certs)| run(r, certs),
    )
}

/// Why the configuration cannot be used: a file or a host's certificate.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error(transparent)]
    Config(#[from] rtc_config::ConfigError),
    #[error(transparent)]
    Certs(#[from] tls::CertError),
}

/// The main file, every enabled host file and every host's certificate: what
/// `--check-config` checks and a reload must pass whole.
fn load(path: &Path) -> Result<(config::Resolved, CertTable), LoadError> {
    let r = config::load(path)?;
    let certs = CertTable::build(&r.live.vhosts)?;
    Ok((r, certs))
}

fn run(r: config::Resolved, certs: CertTable) -> anyhow::Result<()> {
    let io = rtc_daemon::shell::io_runtime("xmppd")?;
    let store = io.block_on(open_store(&r.fixed.store_url))?;
    let certs = Certs::new(certs);
    let mut bound = Vec::new();
    for l in &r.fixed.listeners {
        let s = listen::bind_tcp(l.addr)
            .with_context(|| format!("listen {} ({:?})", l.addr, l.kind))?;
        bound.push((s, *l));
    }

    let metrics = Arc::new(Metrics::new());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (lookup_tx, lookup_rx) = mpsc::channel::<Lookup>(LOOKUP_QUEUE);
    let _io = io.enter();
    let database = db::Db {
        store: store.clone(),
        events: events_tx.clone(),
        metrics: metrics.clone(),
    };
    io.spawn(db::lookup_task(database.clone(), lookup_rx));
    let (writer_tx, writer) = db::spawn_writer(database, WRITER_QUEUE);
    let conns = Conns::new(events_tx, metrics.clone(), certs.clone(), r.live.conns);

    let setup = core_loop::Setup {
        server: r.live.server.clone(),
        write_queue: r.live.conns.write_queue,
        metrics: metrics.clone(),
        lookups: lookup_tx,
        writer: writer_tx,
    };
    let core = rtc_daemon::core::spawn("xmppd", "XMPP", events_rx, move || {
        Ok(core_loop::XmppLoop::new(setup))
    })?;

    for (sock, l) in bound {
        let listener = listen::listen(sock, &format!("{:?} {}", l.kind, l.addr))?;
        io.spawn(conn::accept_loop(listener, l.kind, conns.clone()));
    }
    rtc_daemon::metrics::serve(&io, &r.fixed.shell, metrics.registry.clone())?;

    let domains: Vec<&str> = r.live.vhosts.iter().map(|v| v.domain.as_str()).collect();
    let ports: Vec<String> = r
        .fixed
        .listeners
        .iter()
        .map(|l| l.addr.to_string())
        .collect();
    info!(
        "xmppd serving {} on {}, database {}",
        domains.join(", "),
        ports.join(", "),
        store.url()
    );
    notify_or_warn("READY=1");

    io.block_on(async move {
        serve(core, r, &certs, &conns).await?;
        // The core loop held the writer's only sender: with it gone the writer finishes
        // the queue and returns.
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

/// Handles signals until SIGTERM, then lets the core loop end every stream, wait for the
/// writer to confirm what it queued, hand out what that releases, and end.
async fn serve(
    mut core: CoreHandle<Box<Reload>>,
    mut running: config::Resolved,
    certs: &Certs,
    conns: &Conns,
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
        if let Some(reload) = reload_config(&mut running, certs, conns) {
            core.reload(reload).await;
        }
    }
    notify_or_warn("STOPPING=1");
    core.shutdown(SHUTDOWN_TIMEOUT).await;
    Ok(())
}

/// Connects and creates missing tables.
async fn open_store(url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(url).await.context("database")?;
    store.migrate_xmpp().await.context("database")?;
    Ok(store)
}

/// Re-reads the configuration, the virtual hosts and their certificates for SIGHUP.
/// Returns the server's new settings, or `None` (everything stays as it runs) when a file
/// or a certificate no longer checks: a reload is all or nothing. Static settings that
/// changed are reported, not applied.
fn reload_config(
    running: &mut config::Resolved,
    certs: &Certs,
    conns: &Conns,
) -> Option<Box<Reload>> {
    let (new, table) = match load(&running.path) {
        Ok(x) => x,
        Err(e) => {
            error!("reload: {e}; keeping the running configuration");
            return None;
        }
    };
    settings::warn_restart_needed(&running.fixed, &new.fixed);
    certs.replace(table);
    conns.set_limits(new.live.conns);
    running.live = new.live;
    Some(Box::new(Reload {
        server: running.live.server.clone(),
        write_queue: running.live.conns.write_queue,
    }))
}
