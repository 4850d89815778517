//! Prometheus series of xmppd. The server counts in plain integers ([`Stats`]); the core
//! loop copies them here once a second, so the stanza path touches no atomic. Counters
//! that only the shell sees (refused connections, TLS failures, database batches) are
//! atomics bumped where they happen, from whichever thread.

use rtc_metrics::{Counter, Gauge, Registry};
use std::sync::Arc;
use xmpp_proto::server::{Stats, IQ, MESSAGE, PRESENCE};

/// Index into [`Stats::stanzas_in`] and `stanzas_out` -> `kind` label value.
const KINDS: [(usize, &str); 3] = [(MESSAGE, "message"), (PRESENCE, "presence"), (IQ, "iq")];

pub struct Metrics {
    pub registry: Arc<Registry>,
    c2s_connections: Arc<Gauge>,
    sessions: Arc<Gauge>,
    rooms: Arc<Gauge>,
    occupants: Arc<Gauge>,
    stanzas_in: [Arc<Counter>; 3],
    stanzas_out: [Arc<Counter>; 3],
    auth_failures: Arc<Counter>,
    auth_successes: Arc<Counter>,
    stream_errors: Arc<Counter>,
    offline_stored: Arc<Counter>,
    pub tls_failures: Arc<Counter>,
    pub tcp_refused: Arc<Counter>,
    pub write_overflows: Arc<Counter>,
    pub db_batches: Arc<Counter>,
    pub db_errors: Arc<Counter>,
    pub db_lookups: Arc<Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let by_kind = |name: &str, help: &str| {
            KINDS.map(|(_, kind)| r.counter_with(name, help, &[("kind", kind)]))
        };
        Metrics {
            c2s_connections: r.gauge(
                "xmppd_c2s_connections",
                "Client connections open (any stage of negotiation)",
            ),
            sessions: r.gauge(
                "xmppd_sessions",
                "Client sessions with a bound resource, including hibernated XEP-0198 ones",
            ),
            rooms: r.gauge("xmppd_rooms", "Chat rooms (XEP-0045) in existence"),
            occupants: r.gauge("xmppd_occupants", "Occupants of all chat rooms"),
            stanzas_in: by_kind("xmppd_stanzas_in_total", "Stanzas received from clients"),
            stanzas_out: by_kind("xmppd_stanzas_out_total", "Stanzas sent to clients"),
            auth_failures: r.counter(
                "xmppd_auth_failures_total",
                "SASL authentications that failed",
            ),
            auth_successes: r.counter(
                "xmppd_auth_successes_total",
                "SASL authentications that succeeded",
            ),
            stream_errors: r.counter(
                "xmppd_stream_errors_total",
                "Streams closed with a stream error (RFC 6120 section 4.9)",
            ),
            offline_stored: r.counter(
                "xmppd_offline_stored_total",
                "Messages stored for users who were offline",
            ),
            tls_failures: r.counter(
                "xmppd_tls_handshake_failures_total",
                "Failed or timed-out TLS handshakes (direct TLS and STARTTLS)",
            ),
            tcp_refused: r.counter(
                "xmppd_tcp_refused_total",
                "Connections refused by tcp-max-connections or tcp-max-connections-per-ip",
            ),
            write_overflows: r.counter(
                "xmppd_write_overflows_total",
                "Connections closed because the client did not read what it was sent",
            ),
            db_batches: r.counter(
                "xmppd_db_batches_total",
                "Storage write transactions (group commits)",
            ),
            db_errors: r.counter("xmppd_db_errors_total", "Failed database operations"),
            db_lookups: r.counter(
                "xmppd_db_lookups_total",
                "Account and store reads sent to the database",
            ),
            registry: r,
        }
    }

    /// Adds what the server counted since `before` and sets its gauges.
    pub fn publish(&self, before: &Stats, now: &Stats) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        for (pos, (i, _)) in KINDS.into_iter().enumerate() {
            self.stanzas_in[pos].add(d(before.stanzas_in[i], now.stanzas_in[i]));
            self.stanzas_out[pos].add(d(before.stanzas_out[i], now.stanzas_out[i]));
        }
        self.auth_failures
            .add(d(before.auth_failures, now.auth_failures));
        self.auth_successes
            .add(d(before.auth_successes, now.auth_successes));
        self.stream_errors
            .add(d(before.stream_errors, now.stream_errors));
        self.offline_stored
            .add(d(before.offline_stored, now.offline_stored));
        self.c2s_connections.set(gauge(now.c2s_connections));
        self.sessions.set(gauge(now.sessions));
        self.rooms.set(gauge(now.rooms));
        self.occupants.set(gauge(now.occupants));
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
