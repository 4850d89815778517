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

use clap::Parser;
use shared::{db_task, Shared};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

/// How often database-backed settings (REST secrets, realm quotas, peer lists) are re-read
/// without a SIGHUP.
const DB_REFRESH: Duration = Duration::from_secs(30);
/// Key lookups waiting for the database before new ones are refused.
const DB_QUEUE: usize = 1024;

#[derive(Parser, Debug)]
#[command(version, about = "TURN/STUN relay server (RFC 8489, RFC 8656)")]
struct Cli {
    /// Configuration file (TOML, coturn key names).
    #[arg(short, long, default_value = config::DEFAULT_CONFIG, env = "TURND_CONFIG")]
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
            eprintln!("turnd: {e}");
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

fn run(r: config::Resolved) -> Result<(), String> {
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let cfg = r.file.clone();

    let store = match &r.store_url {
        Some(url) => Some(control.block_on(async {
            let s = rtc_store::Store::connect(url)
                .await
                .map_err(|e| format!("user database: {e}"))?;
            s.migrate_turn()
                .await
                .map_err(|e| format!("user database: {e}"))?;
            Ok::<_, String>(s)
        })?),
        None => None,
    };

    // One certificate serves TLS and DTLS; `no-tls` and `no-dtls` switch each off.
    let cert_store = match (&cfg.cert, &cfg.pkey) {
        (Some(c), Some(k)) if !(cfg.no_tls && cfg.no_dtls) => {
            Some(rtc_tls::CertStore::load(c, k).map_err(|e| format!("TLS: {e}"))?)
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
                        .push(shard::listen_udp(addr).map_err(|e| format!("UDP {addr}: {e}"))?);
                }
                if shard == 0 && !cfg.no_tcp && *port == cfg.listening_port {
                    l.tcp
                        .push(shard::listen_tcp(addr).map_err(|e| format!("TCP {addr}: {e}"))?);
                }
            }
            if dtls_on {
                let addr = SocketAddr::new(*ip, cfg.tls_listening_port);
                l.dtls
                    .push(shard::listen_udp(addr).map_err(|e| format!("DTLS {addr}: {e}"))?);
            }
            if shard == 0 && shared.tls_acceptor().is_some() {
                let addr = SocketAddr::new(*ip, cfg.tls_listening_port);
                l.tls
                    .push(shard::listen_tcp(addr).map_err(|e| format!("TLS {addr}: {e}"))?);
            }
        }
        per_shard.push(l);
    }

    if let Some(store) = &store {
        control.block_on(shared.refresh_from_db(store));
        control.spawn(db_task(store.clone(), db_rx));
    }
    if cfg.prometheus {
        let addr = SocketAddr::new(cfg.prometheus_address, cfg.prometheus_port);
        let listener = control
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| format!("prometheus {addr}: {e}"))?;
        let registry = shared.metrics.registry.clone();
        control.spawn(async move {
            if let Err(e) = rtc_metrics::serve(listener, registry).await {
                error!("metrics endpoint stopped: {e}");
            }
        });
        info!("metrics on http://{addr}/metrics");
    }

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
            .map_err(|e| format!("thread: {e}"))?;
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
    notify_ready();

    control.block_on(async move {
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut refresh = tokio::time::interval(DB_REFRESH);
        refresh.tick().await;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading certificates and database settings");
                    if let Some(c) = &cert_store {
                        match c.reload() {
                            Ok(()) => info!("certificate reloaded"),
                            Err(e) => warn!("certificate reload failed, keeping the old one: {e}"),
                        }
                        if dtls_on {
                            match dtls_identity(c) {
                                Ok(id) => shared.set_dtls_identity(Some(id)),
                                Err(e) => warn!("DTLS certificate reload failed: {e}"),
                            }
                        }
                    }
                    shared.creds.clear();
                    if let Some(store) = &store {
                        shared.refresh_from_db(store).await;
                    }
                }
                _ = refresh.tick() => {
                    if let Some(store) = &store {
                        shared.refresh_from_db(store).await;
                    }
                }
                _ = term.recv() => { info!("SIGTERM: exiting"); break; }
                _ = int.recv() => { info!("SIGINT: exiting"); break; }
            }
        }
        Ok::<(), String>(())
    })?;
    Ok(())
}

/// The DTLS certificate from the TLS one. `dimpl` signs with ECDSA only.
fn dtls_identity(c: &rtc_tls::CertStore) -> Result<dtls::DtlsIdentity, String> {
    if c.current().key.algorithm() != rustls::SignatureAlgorithm::ECDSA {
        return Err("the certificate's key is not ECDSA (DTLS needs P-256 or P-384)".into());
    }
    let (cert, key) = c.leaf_and_key_der().map_err(|e| e.to_string())?;
    dtls::DtlsIdentity::new(cert, key)
}

/// Tells systemd (`Type=notify`) that the daemon is ready, if it is watching.
fn notify_ready() {
    if let Err(e) = rtc_systemd::notify("READY=1") {
        warn!("sd_notify: {e}");
    }
}
