//! The I/O runtime and the process signals.

use anyhow::Context;
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::info;

/// The runtime for everything but the core: accept loops, connection tasks, storage,
/// `/metrics`, signals. One worker: the core thread does the protocol work, and the
/// machine's other cores are better left to it (and to the kernel's network stack).
pub fn io_runtime(name: &str) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("{name}-io"))
        .enable_all()
        .build()
        .context("runtime")
}

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGHUP: re-read configuration and certificates.
    Reload,
    /// SIGTERM or SIGINT: drain and exit 0.
    Stop,
}

/// SIGHUP, SIGTERM and SIGINT, installed once (inside the runtime) and awaited in turn.
#[derive(Debug)]
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers; call from within the runtime.
    pub fn new() -> anyhow::Result<Signals> {
        let install = |k: SignalKind| signal(k).context("installing a signal handler");
        Ok(Signals {
            hup: install(SignalKind::hangup())?,
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }

    /// The next signal, logged.
    pub async fn next(&mut self) -> Request {
        tokio::select! {
            _ = self.hup.recv() => { info!("SIGHUP: reloading"); Request::Reload }
            _ = self.term.recv() => { info!("SIGTERM: exiting"); Request::Stop }
            _ = self.int.recv() => { info!("SIGINT: exiting"); Request::Stop }
        }
    }
}
