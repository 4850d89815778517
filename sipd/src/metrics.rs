//! Prometheus series of sipd. The core counts in plain integers ([`Stats`]); the core loop
//! copies them here once a second (and when `/metrics` could be read right after an event
//! that matters, such as shutdown), so the packet path touches no atomic. Counters that
//! only the shell sees (connections refused, send drops, database batches) are atomics
//! bumped where they happen, from whichever thread.

use rtc_metrics::{Counter, Gauge, Registry};
use sip_proto::core::Stats;
use sip_proto::pike::PikeStats;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Distinct `method` labels at most. The core reports methods by name, and a scanner
/// inventing methods must not grow the registry without end; the rest go to "other".
const MAX_METHOD_LABELS: usize = 32;

pub struct Metrics {
    pub registry: Arc<Registry>,
    contacts: Arc<Gauge>,
    server_txns: Arc<Gauge>,
    client_txns: Arc<Gauge>,
    requests: Mutex<HashMap<String, Arc<Counter>>>,
    replies: [Arc<Counter>; 6],
    auth_failures: Arc<Counter>,
    auth_challenges: Arc<Counter>,
    malformed: Arc<Counter>,
    scanner_drops: Arc<Counter>,
    pike_bans: Arc<Counter>,
    pike_banned: Arc<Gauge>,
    pike_dropped: Arc<Counter>,
    /// Open TCP/TLS connections (inbound and outbound).
    pub tcp_connections: Arc<Gauge>,
    pub tcp_refused: Arc<Counter>,
    pub tls_failures: Arc<Counter>,
    pub outgoing_failures: Arc<Counter>,
    pub send_dropped: Arc<Counter>,
    pub stream_errors: Arc<Counter>,
    pub stun_keepalives: Arc<Counter>,
    pub db_batches: Arc<Counter>,
    pub db_batch_ops: Arc<Counter>,
    pub db_errors: Arc<Counter>,
    pub db_lookups: Arc<Counter>,
    pub dns_lookups: Arc<Counter>,
    pub dns_failures: Arc<Counter>,
    pub db_lookups_dropped: Arc<Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let class = |c: &str| {
            r.counter_with(
                "sipd_replies_total",
                "SIP responses sent, by class",
                &[("class", c)],
            )
        };
        let txns = |kind: &str| {
            r.gauge_with(
                "sipd_transactions",
                "SIP transactions in progress",
                &[("kind", kind)],
            )
        };
        Metrics {
            contacts: r.gauge(
                "sipd_registered_contacts",
                "Contacts bound in the location table",
            ),
            server_txns: txns("server"),
            client_txns: txns("client"),
            requests: Mutex::new(HashMap::new()),
            replies: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
                class("6xx"),
            ],
            auth_failures: r.counter(
                "sipd_auth_failures_total",
                "Requests refused for wrong or unknown credentials",
            ),
            auth_challenges: r.counter(
                "sipd_auth_challenges_total",
                "401/407 digest challenges sent",
            ),
            malformed: r.counter("sipd_malformed_total", "Malformed SIP messages received"),
            scanner_drops: r.counter(
                "sipd_scanner_drops_total",
                "Requests dropped for a scanner User-Agent (drop-user-agents)",
            ),
            pike_bans: r.counter("sipd_pike_bans_total", "Sources banned by pike"),
            pike_banned: r.gauge(
                "sipd_pike_banned_sources",
                "Sources banned by pike right now",
            ),
            pike_dropped: r.counter(
                "sipd_pike_dropped_total",
                "Messages dropped unanswered because their source was banned",
            ),
            tcp_connections: r.gauge("sipd_tcp_connections", "Open TCP and TLS connections"),
            tcp_refused: r.counter(
                "sipd_tcp_refused_total",
                "TCP/TLS connections refused by tcp-max-connections or tcp-max-connections-per-ip",
            ),
            tls_failures: r.counter(
                "sipd_tls_handshake_failures_total",
                "Failed or timed-out TLS handshakes",
            ),
            outgoing_failures: r.counter(
                "sipd_outgoing_connection_failures_total",
                "Outgoing TCP/TLS connections that could not be opened",
            ),
            send_dropped: r.counter(
                "sipd_send_dropped_total",
                "Messages not sent: full socket buffer or connection queue, or connection gone",
            ),
            stream_errors: r.counter(
                "sipd_stream_errors_total",
                "TCP/TLS connections closed for unframeable input (bad Content-Length, too large)",
            ),
            stun_keepalives: r.counter(
                "sipd_stun_keepalives_total",
                "STUN Binding requests answered on SIP UDP ports (RFC 5626 keep-alives)",
            ),
            db_batches: r.counter(
                "sipd_db_batches_total",
                "Location write transactions (group commits)",
            ),
            db_batch_ops: r.counter(
                "sipd_db_batch_ops_total",
                "Location changes written in those transactions",
            ),
            db_errors: r.counter("sipd_db_errors_total", "Failed database operations"),
            db_lookups: r.counter(
                "sipd_db_lookups_total",
                "Credential lookups sent to the database",
            ),
            db_lookups_dropped: r.counter(
                "sipd_db_lookups_dropped_total",
                "Credential lookups dropped because the database queue was full",
            ),
            dns_lookups: r.counter(
                "sipd_dns_lookups_total",
                "RFC 3263 lookups of next hops given by host name",
            ),
            dns_failures: r.counter(
                "sipd_dns_failures_total",
                "Lookups that found no destination (answered 478)",
            ),
            registry: r,
        }
    }

    /// Adds what the core counted since `before` and sets its gauges.
    pub fn publish(&self, before: &Stats, now: &Stats) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        for (method, n) in &now.requests {
            let was = before
                .requests
                .iter()
                .find(|(m, _)| m == method)
                .map_or(0, |(_, n)| *n);
            let delta = d(was, *n);
            if delta > 0 {
                self.request_counter(method).add(delta);
            }
        }
        // Index 0 is unused: replies_by_class[c] counts class c (1..=6).
        for (i, c) in self.replies.iter().enumerate() {
            c.add(d(
                before.replies_by_class[i + 1],
                now.replies_by_class[i + 1],
            ));
        }
        self.auth_failures
            .add(d(before.auth_failures, now.auth_failures));
        self.auth_challenges
            .add(d(before.auth_challenges, now.auth_challenges));
        self.malformed.add(d(before.malformed, now.malformed));
        self.scanner_drops
            .add(d(before.dropped_scanners, now.dropped_scanners));
        self.contacts.set(gauge(now.contacts));
        self.server_txns.set(gauge(now.server_txns));
        self.client_txns.set(gauge(now.client_txns));
    }

    /// As [`Metrics::publish`] for pike.
    pub fn publish_pike(&self, before: &PikeStats, now: &PikeStats) {
        self.pike_bans.add(now.bans.saturating_sub(before.bans));
        self.pike_dropped
            .add(now.dropped.saturating_sub(before.dropped));
        self.pike_banned.set(gauge(now.banned_sources));
    }

    fn request_counter(&self, method: &str) -> Arc<Counter> {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = requests.get(method) {
            return c.clone();
        }
        let label = if requests.len() < MAX_METHOD_LABELS {
            method
        } else {
            "other"
        };
        let c = self.registry.counter_with(
            "sipd_requests_total",
            "SIP requests received, by method",
            &[("method", label)],
        );
        if label == method {
            requests.insert(method.to_string(), c.clone());
        }
        c
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
