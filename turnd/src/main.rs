//! `turnd`: the TURN/STUN relay of the suite.
//!
//! `main` loads and checks the configuration, opens the user database, binds every
//! listening socket (so a bad address fails start-up with a clear message), then starts one
//! shard thread per core ([`shard`]) and keeps the control plane on a small runtime of its
//! own: database lookups, the `/metrics` endpoint, periodic reload of database settings,
//! SIGHUP (certificates and database settings) and SIGTERM.

mod config;
mod dtls;
mod shard;
mod shared;

use anyhow::Context;
use rtc_daemon::shell::{Request, Signals};
use rtc_daemon::systemd::notify_or_warn;
use shared::{db_task, Shared};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// How often database-backed settings (REST secrets, realm quotas, peer lists) are re-read
/// without a SIGHUP.
const DB_REFRESH: Duration = Duration::from_secs(30);
/// Key lookups waiting for the database before new ones are refused.
const DB_QUEUE: usize = 1024;

const IDENTITY: rtc_daemon::cli::Identity = rtc_daemon::cli::Identity {
    name: "turnd",
    version: env!("CARGO_PKG_VERSION"),
    about: "TURN/STUN relay server (RFC 8489, RFC 8656)",
    config_help: "Configuration file (TOML, coturn key names)",
    default_config: config::DEFAULT_CONFIG,
    config_env: "TURND_CONFIG",
};

fn main() -> ExitCode {
    rtc_daemon::cli::main(&IDENTITY, config::load, |r| r.file.log_level.clone(), run)
}

fn run(r: config::Resolved) -> anyhow::Result<()> {
    let control = rtc_daemon::shell::io_runtime("turnd")?;
    let cfg = r.file.clone();

    let store = match &r.store_url {
        Some(url) => Some(control.block_on(async {
            let s = rtc_store::Store::connect(url)
                .await
                .context("user database")?;
            s.migrate_turn().await.context("user database")?;
            anyhow::Ok(s)
        })?),
        None => None,
    };

    // One certificate serves TLS and DTLS; `no-tls` and `no-dtls` switch each off.
    let cert_store = match (&cfg.cert, &cfg.pkey) {
        (Some(c), Some(k)) if !(cfg.no_tls && cfg.no_dtls) => {
            Some(rtc_tls::CertStore::load(c, k).context("TLS")?)
        }
        _ => None,
    };
    let tls_config = match &cert_store {
        Some(c) if !cfg.no_tls => Some(c.server_config(&[])),
        _ => None,
    };

    let nonce_secret = r.nonce_secret.unwrap_or_else(rand::random);
    // Bounded: a flood of made-up user names must not queue database work without end.
    let (db_tx, db_rx) = tokio::sync::mpsc::channel(DB_QUEUE);
    let shared = Arc::new(Shared::new(
        &r,
        nonce_secret,
        rand::random(),
        store.as_ref().map(|_| db_tx),
        tls_config,
    ));

    let dtls_on = match &cert_store {
        Some(c) if !cfg.no_dtls => match dtls_identity(c) {
            Ok(id) => {
                shared.set_dtls_identity(Some(id));
                true
            }
            Err(e) => {
                warn!("DTLS disabled: {e}");
                false
            }
        },
        _ => false,
    };
    let threads = cfg.relay_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let threads = threads.max(1);
    let mut ports = vec![cfg.listening_port];
    if let Some(alt) = cfg.alt_listening_port {
        ports.push(alt);
    }
    // UDP sockets are opened once per shard (SO_REUSEPORT spreads clients by 5-tuple).
    // TCP and TLS are served by shard 0 alone: an RFC 6062 data connection arrives on a
    // new 5-tuple and must reach the shard that holds its allocation.
    let mut per_shard = Vec::new();
    for shard in 0..threads {
        let mut l = shard::Listeners {
            udp: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            dtls: Vec::new(),
        };
        for ip in &cfg.listening_ip {
            for port in &ports {
                let addr = SocketAddr::new(*ip, *port);
                if !cfg.no_udp {
                    l.udp
                        .push(shard::listen_udp(addr).with_context(|| format!("UDP {addr}"))?);
                }
                if shard == 0 && !cfg.no_tcp && *port == cfg.listening_port {
                    l.tcp
                        .push(shard::listen_tcp(addr).with_context(|| format!("TCP {addr}"))?);
                }
            }
            if dtls_on {
                let addr = SocketAddr::new(*ip, cfg.tls_listening_port);
                l.dtls
                    .push(shard::listen_udp(addr).with_context(|| format!("DTLS {addr}"))?);
            }
            if shard == 0 && shared.tls_acceptor().is_some() {
                let addr = SocketAddr::new(*ip, cfg.tls_listening_port);
                l.tls
                    .push(shard::listen_tcp(addr).with_context(|| format!("TLS {addr}"))?);
            }
        }
        per_shard.push(l);
    }

    if let Some(store) = &store {
        control.block_on(shared.refresh_from_db(store));
        control.spawn(db_task(store.clone(), db_rx));
    }
    rtc_daemon::metrics::serve(&control, &r.shell(), shared.metrics.registry.clone())?;

    for (i, l) in per_shard.into_iter().enumerate() {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("turnd-shard-{i}"))
            .spawn(move || {
                if let Err(e) = shard::run(i, shared, l) {
                    error!("shard {i} stopped: {e}");
                    std::process::exit(1);
                }
            })
            .context("shard thread")?;
    }
    info!(
        "turnd listening on {:?} port {} (TLS {}), relays {:?}/{:?} ports {}-{}, realm `{}`, {} shards",
        cfg.listening_ip,
        cfg.listening_port,
        if shared.tls_acceptor().is_some() {
            cfg.tls_listening_port.to_string()
        } else {
            "off".into()
        },
        r.relay_v4,
        r.relay_v6,
        cfg.min_port,
        cfg.max_port,
        cfg.realm,
        threads
    );
    notify_or_warn("READY=1");

    control.block_on(async move {
        let mut signals = Signals::new()?;
        let mut refresh = tokio::time::interval(DB_REFRESH);
        refresh.tick().await;
        loop {
            tokio::select! {
                request = signals.next() => {
                    if request == Request::Stop {
                        break;
                    }
                    reload(&shared, cert_store.as_deref(), dtls_on);
                    if let Some(store) = &store {
                        shared.refresh_from_db(store).await;
                    }
                }
                _ = refresh.tick() => {
                    if let Some(store) = &store {
                        shared.refresh_from_db(store).await;
                    }
                }
            }
        }
        anyhow::Ok(())
    })
}

/// SIGHUP: the certificate for new TLS and DTLS handshakes (sessions stay), and keys are
/// looked up again. Database settings are re-read by the caller.
fn reload(shared: &Shared, cert_store: Option<&rtc_tls::CertStore>, dtls_on: bool) {
    if let Some(c) = cert_store {
        match c.reload() {
            Ok(()) => info!("certificate reloaded"),
            Err(e) => warn!("certificate reload failed, keeping the old one: {e}"),
        }
        if dtls_on {
            match dtls_identity(c) {
                Ok(id) => shared.set_dtls_identity(Some(id)),
                Err(e) => warn!("DTLS certificate reload failed: {e:#}"),
            }
        }
    }
    shared.creds.clear();
}

/// The DTLS certificate from the TLS one. `dimpl` signs with ECDSA only.
fn dtls_identity(c: &rtc_tls::CertStore) -> anyhow::Result<dtls::DtlsIdentity> {
    if c.current().key.algorithm() != rustls::SignatureAlgorithm::ECDSA {
        anyhow::bail!("the certificate's key is not ECDSA (DTLS needs P-256 or P-384)");
    }
    let (cert, key) = c.leaf_and_key_der()?;
    dtls::DtlsIdentity::new(cert, key).context("DTLS configuration")
}
