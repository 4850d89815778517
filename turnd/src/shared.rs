//! State shared by all shards: settings that reload, the database task, connection limits
//! and metrics. Nothing here is touched per relayed packet. (Looked-up keys are cached by
//! each shard's core, `stun_proto::server`; SIGHUP empties those caches through
//! [`CredCache`].)

use crate::config::Resolved;
use crate::shard::PortPool;
use rtc_auth::turn::StoredKey;
use rtc_daemon::limiter::ConnLimiter;
use rtc_metrics::{Counter, Gauge, Registry};
use rtc_store::Store;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use stun_proto::auth::NonceKey;
use stun_proto::peer_policy::{IpRange, PeerPolicy};
use stun_proto::{Limits, ServerConfig, ServerShared, Stats};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// A request from a shard to the database task.
#[derive(Debug)]
pub struct DbRequest {
    pub realm: String,
    pub user: String,
    pub reply: mpsc::UnboundedSender<DbReply>,
}

/// The database task's answer to one key lookup.
#[derive(Debug)]
pub struct DbReply {
    pub realm: String,
    pub user: String,
    pub key: KeyAnswer,
}

/// What the database said about a user's key.
#[derive(Debug)]
pub enum KeyAnswer {
    Found(StoredKey),
    /// No such user (or an unusable stored key).
    Unknown,
    /// The query failed: neither a key nor a verdict on the user.
    DatabaseError,
}

/// Settings that come from the database (and the config) and change on reload.
#[derive(Debug, Clone)]
pub struct Dynamic {
    pub secrets: Vec<String>,
    pub limits: Limits,
    pub policy: PeerPolicy,
}

/// The generation of the shards' key caches: each shard's core caches the keys it looked
/// up (60 s, 10 s for unknown users); [`CredCache::clear`] makes every shard forget them
/// at its next tick, so a password changed in the database applies on SIGHUP.
#[derive(Debug, Default)]
pub struct CredCache {
    epoch: AtomicU64,
}

impl CredCache {
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Changes with every [`CredCache::clear`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }
}

/// Prometheus metrics; names follow coturn's where coturn has one.
pub struct Metrics {
    pub registry: Arc<Registry>,
    rcvp: Arc<Counter>,
    rcvb: Arc<Counter>,
    sentp: Arc<Counter>,
    sentb: Arc<Counter>,
    peer_rcvp: Arc<Counter>,
    peer_rcvb: Arc<Counter>,
    peer_sentp: Arc<Counter>,
    peer_sentb: Arc<Counter>,
    malformed: Arc<Counter>,
    relay_dropped: Arc<Counter>,
    rate_limited: Arc<Counter>,
    auth_failures: Arc<Counter>,
    allocations_created: Arc<Counter>,
    errors: Mutex<HashMap<u16, Arc<Counter>>>,
    pub send_dropped: Arc<Counter>,
    pub conn_refused: Arc<Counter>,
    pub tls_failures: Arc<Counter>,
    pub stream_garbage: Arc<Counter>,
    pub allocations: Arc<Gauge>,
    pub permissions: Arc<Gauge>,
    pub channels: Arc<Gauge>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            rcvp: r.counter("turn_total_traffic_rcvp", "Packets received from clients"),
            rcvb: r.counter("turn_total_traffic_rcvb", "Bytes received from clients"),
            sentp: r.counter("turn_total_traffic_sentp", "Packets relayed to clients"),
            sentb: r.counter("turn_total_traffic_sentb", "Bytes relayed to clients"),
            peer_rcvp: r.counter(
                "turn_total_traffic_peer_rcvp",
                "Packets received from peers",
            ),
            peer_rcvb: r.counter("turn_total_traffic_peer_rcvb", "Bytes received from peers"),
            peer_sentp: r.counter("turn_total_traffic_peer_sentp", "Packets relayed to peers"),
            peer_sentb: r.counter("turn_total_traffic_peer_sentb", "Bytes relayed to peers"),
            malformed: r.counter("turnd_malformed_packets_total", "Malformed packets dropped"),
            relay_dropped: r.counter(
                "turnd_relay_dropped_total",
                "Relayed packets dropped: no permission, channel or bandwidth",
            ),
            rate_limited: r.counter(
                "turnd_rate_limited_total",
                "Unauthenticated requests dropped by the per-address rate limit",
            ),
            auth_failures: r.counter("turnd_auth_failures_total", "401, 438 and 441 responses"),
            allocations_created: r.counter("turnd_allocations_created_total", "Allocations made"),
            errors: Mutex::new(HashMap::new()),
            send_dropped: r.counter(
                "turnd_send_dropped_total",
                "Packets dropped because a socket buffer or stream queue was full",
            ),
            conn_refused: r.counter(
                "turnd_connections_refused_total",
                "TCP/TLS connections refused by max-connections-per-ip",
            ),
            tls_failures: r.counter(
                "turnd_tls_handshake_failures_total",
                "Failed TLS handshakes",
            ),
            stream_garbage: r.counter(
                "turnd_stream_garbage_total",
                "TCP/TLS connections closed for bytes that are neither STUN nor ChannelData",
            ),
            allocations: r.gauge("turn_total_allocations", "Active allocations"),
            permissions: r.gauge("turnd_permissions", "Active permissions"),
            channels: r.gauge("turnd_channels", "Active channel bindings"),
            registry: r,
        }
    }

    /// Adds what a shard counted since its last report.
    pub fn publish(&self, before: &Stats, now: &Stats) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        self.rcvp
            .add(d(before.packets_from_clients, now.packets_from_clients));
        self.rcvb
            .add(d(before.bytes_from_clients, now.bytes_from_clients));
        self.sentp
            .add(d(before.packets_to_clients, now.packets_to_clients));
        self.sentb
            .add(d(before.bytes_to_clients, now.bytes_to_clients));
        self.peer_rcvp
            .add(d(before.packets_from_peers, now.packets_from_peers));
        self.peer_rcvb
            .add(d(before.bytes_from_peers, now.bytes_from_peers));
        self.peer_sentp
            .add(d(before.packets_to_peers, now.packets_to_peers));
        self.peer_sentb
            .add(d(before.bytes_to_peers, now.bytes_to_peers));
        self.malformed.add(d(before.malformed, now.malformed));
        self.relay_dropped
            .add(d(before.relay_dropped, now.relay_dropped));
        self.rate_limited
            .add(d(before.rate_limited, now.rate_limited));
        self.auth_failures
            .add(d(before.auth_failures, now.auth_failures));
        self.allocations_created
            .add(d(before.allocations_created, now.allocations_created));
        for (code, n) in &now.errors {
            let delta = d(before.errors.get(code).copied().unwrap_or(0), *n);
            if delta > 0 {
                let mut map = self.errors.lock().unwrap_or_else(|e| e.into_inner());
                let c = map.entry(*code).or_insert_with(|| {
                    self.registry.counter_with(
                        "turnd_error_responses_total",
                        "Error responses sent, by STUN error code",
                        &[("code", &code.to_string())],
                    )
                });
                c.add(delta);
            }
        }
    }
}

pub struct Shared {
    pub core: Arc<ServerConfig>,
    pub nonce_key: NonceKey,
    pub quotas: Arc<ServerShared>,
    pub relay_v4: Option<IpAddr>,
    pub relay_v6: Option<IpAddr>,
    pub ports: PortPool,
    pub creds: CredCache,
    pub db: Option<mpsc::Sender<DbRequest>>,
    /// Concurrent stream connections per source address.
    pub conn_limit: Arc<ConnLimiter>,
    pub metrics: Metrics,
    tls: RwLock<Option<tokio_rustls::TlsAcceptor>>,
    dtls: RwLock<Option<crate::dtls::DtlsIdentity>>,
    dynamic: RwLock<(u64, Arc<Dynamic>)>,
    static_secrets: Vec<String>,
    config_allowed: Vec<IpRange>,
    config_denied: Vec<IpRange>,
}

impl Shared {
    pub fn new(
        r: &Resolved,
        nonce_secret: [u8; 32],
        port_start: u32,
        db: Option<mpsc::Sender<DbRequest>>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Shared {
        let core = Arc::new(r.core.clone());
        let dynamic = Dynamic {
            secrets: r.file.static_auth_secret.clone(),
            limits: core.limits,
            policy: core.peer_policy.clone(),
        };
        Shared {
            nonce_key: NonceKey::new(nonce_secret, r.file.stale_nonce),
            quotas: Arc::new(ServerShared::default()),
            relay_v4: r.relay_v4,
            relay_v6: r.relay_v6,
            ports: PortPool::new(r.file.min_port, r.file.max_port, port_start),
            creds: CredCache::default(),
            db,
            conn_limit: ConnLimiter::per_ip(r.file.max_connections_per_ip),
            metrics: Metrics::new(),
            tls: RwLock::new(tls.map(tokio_rustls::TlsAcceptor::from)),
            dtls: RwLock::new(None),
            dynamic: RwLock::new((1, Arc::new(dynamic))),
            static_secrets: r.file.static_auth_secret.clone(),
            config_allowed: r.config_allowed.clone(),
            config_denied: r.config_denied.clone(),
            core,
        }
    }

    /// Certificate for new DTLS sessions (set at start and on SIGHUP).
    pub fn dtls_identity(&self) -> Option<crate::dtls::DtlsIdentity> {
        self.dtls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_dtls_identity(&self, id: Option<crate::dtls::DtlsIdentity>) {
        *self.dtls.write().unwrap_or_else(|e| e.into_inner()) = id;
    }

    pub fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The dynamic settings, if they changed since `generation`.
    pub fn dynamic_if_newer(&self, generation: u64) -> Option<(u64, Arc<Dynamic>)> {
        let d = self.dynamic.read().unwrap_or_else(|e| e.into_inner());
        (d.0 != generation).then(|| (d.0, d.1.clone()))
    }

    /// Re-reads REST secrets, realm options and peer lists from the database (coturn's
    /// `turn_secret`, `turn_realm_option`, `allowed_peer_ip`, `denied_peer_ip`).
    pub async fn refresh_from_db(&self, store: &Store) {
        let realm = &self.core.realm;
        let t = store.turn();
        let mut secrets: Vec<String> = Vec::new();
        let mut limits = self.core.limits;
        let mut allowed = self.config_allowed.clone();
        let mut denied = self.config_denied.clone();
        match t.secrets(realm).await {
            Ok(s) => secrets.extend(s),
            Err(e) => warn!("reading turn_secret: {e}"),
        }
        match t.realm_options(realm).await {
            Ok(o) => {
                let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
                if let Some(v) = o.user_quota {
                    limits.user_quota = clamp(v);
                }
                if let Some(v) = o.total_quota {
                    limits.total_quota = clamp(v);
                }
                if let Some(v) = o.max_bps {
                    limits.max_bps = v;
                }
            }
            Err(e) => warn!("reading turn_realm_option: {e}"),
        }
        match t.peer_ip_lists(realm).await {
            Ok((a, d)) => {
                for (list, out) in [(a, &mut allowed), (d, &mut denied)] {
                    for s in list {
                        match s.parse::<IpRange>() {
                            Ok(r) => out.push(r),
                            Err(e) => warn!("ignoring peer ip range `{s}` from the database: {e}"),
                        }
                    }
                }
            }
            Err(e) => warn!("reading peer ip lists: {e}"),
        }
        self.set_dynamic(secrets, limits, allowed, denied);
    }

    fn set_dynamic(
        &self,
        db_secrets: Vec<String>,
        limits: Limits,
        allowed: Vec<IpRange>,
        denied: Vec<IpRange>,
    ) {
        let mut d = self.dynamic.write().unwrap_or_else(|e| e.into_inner());
        let mut secrets = self.static_secrets.clone();
        for s in db_secrets {
            if !secrets.contains(&s) {
                secrets.push(s);
            }
        }
        let policy = PeerPolicy::new(allowed, denied, self.core.peer_policy.allow_loopback);
        let changed = d.1.secrets != secrets || d.1.limits != limits;
        let next = Dynamic {
            secrets,
            limits,
            policy,
        };
        d.0 += 1;
        d.1 = Arc::new(next);
        if changed {
            info!("settings from the database applied");
        }
    }
}

/// The database task: answers key lookups for all shards on the main runtime (the pool's
/// connections belong to it).
pub async fn db_task(store: Store, rx: mpsc::Receiver<DbRequest>) {
    // Lookups in flight at once; beyond that requests wait in the bounded queue, and the
    // shards refuse new ones when it is full.
    rtc_daemon::lookup::serve(rx, 32, store, |store, req: DbRequest| async move {
        let key = match store.turn().get_user_key(&req.realm, &req.user).await {
            Ok(Some(hex)) => match StoredKey::from_hex(&hex) {
                Some(k) => KeyAnswer::Found(k),
                None => {
                    warn!(
                        "user {}@{}: hmackey is not a 32/64-digit hex key",
                        req.user, req.realm
                    );
                    KeyAnswer::Unknown
                }
            },
            Ok(None) => KeyAnswer::Unknown,
            Err(e) => {
                // Said as what it is, and not answered as a wrong password: the
                // requests waiting for this key are dropped, so clients retransmit.
                warn!("key of {}@{}: database error: {e}", req.user, req.realm);
                KeyAnswer::DatabaseError
            }
        };
        let _ = req.reply.send(DbReply {
            realm: req.realm,
            user: req.user,
            key,
        });
    })
    .await
}
