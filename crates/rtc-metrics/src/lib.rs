//! The daemons' Prometheus metrics: a registry on the `prometheus` crate and the `/metrics`
//! route, served by the suite's HTTP stack (`rtc-http`).
//!
//! Data flow: at start-up a daemon registers its metrics once with [`Registry::counter`],
//! [`Registry::gauge`] and their labelled `_with` forms, and keeps the returned
//! `Arc<Counter>` / `Arc<Gauge>` handles in its state. A labelled handle is the resolved
//! child of its family, so hot paths (every STUN packet, every SIP transaction) then only
//! touch one relaxed atomic: no lock, no label lookup, no allocation. When Prometheus
//! scrapes, the [`handler`] gathers the families from the `prometheus` registry and encodes
//! them in the text exposition format 0.0.4.
//!
//! Why `prometheus` and not `prometheus-client`: the names scraped today (coturn's
//! `turn_total_traffic_rcvp` among them) are counters without a `_total` suffix, which
//! `prometheus-client`'s OpenMetrics encoder would rename; the `prometheus` crate writes
//! the 0.0.4 text format with names, types, labels and help texts exactly as registered,
//! so dashboards and alerts written against the suite keep working.
//!
//! The endpoint faces the network, so it runs under `rtc-http`'s limits (request head
//! size, time per request, concurrent connections; see [`rtc_http::Limits`]).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::core::Collector;
use prometheus::{
    Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, TextEncoder,
};
use rtc_http::hyper::StatusCode;
use rtc_http::{Handler, Router, Server};
use tokio::net::TcpListener;

/// A monotonically increasing count (packets, requests, errors).
///
/// Relaxed ordering is enough (the `prometheus` crate's integer counters use it): a scrape
/// needs an eventually correct total, not an ordering with other memory operations.
#[derive(Debug)]
pub struct Counter(IntCounter);

impl Default for Counter {
    /// A counter outside any registry, for code that counts before it has one.
    fn default() -> Counter {
        Counter(IntCounter::new("unregistered", "Not in any registry").expect("valid name"))
    }
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down (open allocations, connected clients).
#[derive(Debug)]
pub struct Gauge(IntGauge);

impl Default for Gauge {
    /// A gauge outside any registry.
    fn default() -> Gauge {
        Gauge(IntGauge::new("unregistered", "Not in any registry").expect("valid name"))
    }
}

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.dec();
    }

    /// Adds `n`.
    pub fn add(&self, n: i64) {
        self.0.add(n);
    }

    /// Subtracts `n`.
    pub fn sub(&self, n: i64) {
        self.0.sub(n);
    }

    /// Replaces the value.
    pub fn set(&self, v: i64) {
        self.0.set(v);
    }

    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// One metric name: its `prometheus` vector (the family) and the handles given out so far,
/// by label values in label-name order, so asking twice returns the same handle.
#[derive(Debug)]
struct Family<V, M> {
    label_names: Vec<String>,
    vec: V,
    series: BTreeMap<Vec<String>, Arc<M>>,
}

#[derive(Debug, Default)]
struct Families {
    counters: BTreeMap<String, Family<IntCounterVec, Counter>>,
    gauges: BTreeMap<String, Family<IntGaugeVec, Gauge>>,
}

/// All metrics of one process. Registration locks; updating a metric never does.
#[derive(Debug, Default)]
pub struct Registry {
    prometheus: prometheus::Registry,
    families: Mutex<Families>,
}

impl Registry {
    /// An empty registry, shared between the daemon's components and [`serve`].
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Registers (or finds) the unlabelled counter `name`.
    ///
    /// # Panics
    /// On an invalid metric name, an empty help text, or if `name` is already a gauge: all
    /// programming errors in static registration code, best caught by the first test that
    /// runs it.
    pub fn counter(&self, name: &str, help: &str) -> Arc<Counter> {
        self.counter_with(name, help, &[])
    }

    /// Registers (or finds) the counter `name` with these labels. Every label set of one name
    /// belongs to one family, rendered under a single HELP/TYPE header (the help of the first
    /// registration); asking again for the same name and labels returns the same counter.
    ///
    /// # Panics
    /// As [`Registry::counter`], on invalid or duplicate label names, and when the label
    /// names differ from those `name` was first registered with.
    pub fn counter_with(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Counter> {
        let mut families = self.lock();
        assert!(
            !families.gauges.contains_key(name),
            "metric {name} registered as gauge and counter"
        );
        self.series(
            &mut families.counters,
            name,
            help,
            labels,
            IntCounterVec::new,
            |vec, values| Counter(vec.with_label_values(values)),
        )
    }

    /// Registers (or finds) the unlabelled gauge `name`.
    ///
    /// # Panics
    /// As [`Registry::counter`], with the kinds swapped.
    pub fn gauge(&self, name: &str, help: &str) -> Arc<Gauge> {
        self.gauge_with(name, help, &[])
    }

    /// Registers (or finds) the gauge `name` with these labels; see [`Registry::counter_with`].
    ///
    /// # Panics
    /// As [`Registry::counter_with`].
    pub fn gauge_with(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Gauge> {
        let mut families = self.lock();
        assert!(
            !families.counters.contains_key(name),
            "metric {name} registered as counter and gauge"
        );
        self.series(
            &mut families.gauges,
            name,
            help,
            labels,
            IntGaugeVec::new,
            |vec, values| Gauge(vec.with_label_values(values)),
        )
    }

    /// The handle of `name{labels}`, creating and registering its family first if needed.
    fn series<V, M>(
        &self,
        families: &mut BTreeMap<String, Family<V, M>>,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        new_vec: impl FnOnce(Opts, &[&str]) -> prometheus::Result<V>,
        child: impl FnOnce(&V, &[String]) -> M,
    ) -> Arc<M>
    where
        V: Collector + Clone + 'static,
    {
        assert!(valid_name(name), "invalid metric name {name:?}");
        assert!(!help.is_empty(), "metric {name} needs a help text");
        let mut pairs: Vec<(&str, &str)> = labels.to_vec();
        for (k, _) in &pairs {
            assert!(
                valid_name(k) && !k.contains(':') && !k.starts_with("__"),
                "invalid label name {k:?} for metric {name}"
            );
        }
        // Sorted by label name, so `[a, b]` and `[b, a]` are the same series.
        pairs.sort_unstable();
        assert!(
            pairs.windows(2).all(|w| w[0].0 != w[1].0),
            "duplicate label name for metric {name}"
        );
        let names: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        let values: Vec<String> = pairs.iter().map(|(_, v)| v.to_string()).collect();

        let family = families.entry(name.to_owned()).or_insert_with(|| {
            let vec = new_vec(Opts::new(name, help), &names)
                .expect("name, help and labels were checked above");
            self.prometheus
                .register(Box::new(vec.clone()))
                .expect("each name is registered once");
            Family {
                label_names: names.iter().map(|n| n.to_string()).collect(),
                vec,
                series: BTreeMap::new(),
            }
        });
        assert!(
            family.label_names == names,
            "metric {name} registered with labels {:?} and {names:?}",
            family.label_names
        );
        let Family { vec, series, .. } = family;
        series
            .entry(values)
            .or_insert_with_key(|values| Arc::new(child(vec, values)))
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        // A panic while registering cannot leave a half-built entry visible to rendering
        // that is worse than a missing metric, so keep serving after poisoning.
        self.families.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Prometheus text exposition format (version 0.0.4): families sorted by name, each
    /// with one HELP and TYPE line, series sorted by labels.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.prometheus.gather(), &mut out)
            .expect("gathered families are never empty and writing to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, the metric name grammar of the exposition format.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `GET /metrics` handler (which also answers `HEAD`): the registry rendered at the
/// time of the request. Mount it on a daemon's [`Router`] next to its other routes.
pub fn handler(registry: Arc<Registry>) -> impl Handler {
    move |_request| {
        let registry = registry.clone();
        async move { rtc_http::response(StatusCode::OK, CONTENT_TYPE, registry.render()) }
    }
}

/// Serves `GET /metrics` (and `HEAD`) from `registry` on `listener` over plain HTTP until
/// the future is dropped, under [`rtc_http::Limits::default`]: a head over 8 KiB gets 431,
/// a client gets 5 s to send its request and 5 s more for the answer, and 64 connections
/// are served at once while further ones wait in the listen backlog. Other paths get 404,
/// other methods 405, malformed requests 400. Each connection carries one request.
/// Returns an error only if accepting keeps failing.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) -> std::io::Result<()> {
    Server::new(Router::new().get("/metrics", handler(registry)))
        .serve(listener)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[test]
    fn counters_and_gauges_count() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
        let g = Gauge::default();
        g.inc();
        g.inc();
        g.dec();
        g.add(10);
        g.sub(20);
        assert_eq!(g.get(), -9);
        g.set(7);
        assert_eq!(g.get(), 7);
    }

    #[test]
    fn same_name_and_labels_is_same_handle() {
        let r = Registry::new();
        let a = r.counter_with("x_total", "h", &[("a", "1"), ("b", "2")]);
        let b = r.counter_with("x_total", "h", &[("b", "2"), ("a", "1")]);
        assert!(Arc::ptr_eq(&a, &b));
        let c = r.counter_with("x_total", "h", &[("a", "2"), ("b", "2")]);
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(Arc::ptr_eq(&r.gauge("g", "h"), &r.gauge("g", "h")));
    }

    #[test]
    #[should_panic(expected = "registered as counter and gauge")]
    fn kind_conflict_panics() {
        let r = Registry::new();
        r.counter("m", "h");
        r.gauge("m", "h");
    }

    #[test]
    #[should_panic(expected = "invalid metric name")]
    fn bad_name_panics() {
        Registry::new().counter("1bad-name", "h");
    }

    #[test]
    fn render_is_exact() {
        let r = Registry::new();
        let udp = r.counter_with(
            "turn_packets_total",
            "Packets received.",
            &[("transport", "udp")],
        );
        let tcp = r.counter_with(
            "turn_packets_total",
            "Packets received.",
            &[("transport", "tcp")],
        );
        let weird = r.gauge_with(
            "allocations",
            "Open allocations;\nper \\ realm.",
            &[("realm", "a\"b\\c\nd")],
        );
        let plain = r.gauge("allocations_max", "Highest seen.");
        udp.add(3);
        tcp.inc();
        weird.set(-2);
        plain.set(9);
        let expected = "\
# HELP allocations Open allocations;\\nper \\\\ realm.
# TYPE allocations gauge
allocations{realm=\"a\\\"b\\\\c\\nd\"} -2
# HELP allocations_max Highest seen.
# TYPE allocations_max gauge
allocations_max 9
# HELP turn_packets_total Packets received.
# TYPE turn_packets_total counter
turn_packets_total{transport=\"tcp\"} 1
turn_packets_total{transport=\"udp\"} 3
";
        assert_eq!(r.render(), expected);
    }

    #[test]
    #[should_panic(expected = "registered with labels")]
    fn label_names_of_a_family_are_fixed() {
        let r = Registry::new();
        r.counter_with("x_total", "h", &[("a", "1")]);
        r.counter_with("x_total", "h", &[("b", "1")]);
    }

    /// The request lines the hand-written parser was tested with, now answered by rtc-http.
    #[tokio::test]
    async fn requests_are_answered_as_before() {
        let (addr, registry) = start().await;
        registry.counter("scrapes_total", "Test counter.").inc();
        let status = |resp: &str| resp.split(' ').nth(1).unwrap_or_default().to_owned();

        let resp = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status(&resp), "200", "{resp}");
        let resp = exchange(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert_eq!(status(&resp), "200", "{resp}");
        assert!(resp.ends_with("scrapes_total 1\n"), "{resp}");

        let resp = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&resp), "200", "{resp}");
        let full = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let body_len = full.split_once("\r\n\r\n").unwrap().1.len();
        assert!(
            resp.contains(&format!("Content-Length: {body_len}\r\n")),
            "{resp}"
        );
        assert!(resp.ends_with("\r\n\r\n"), "HEAD got a body: {resp}");

        let resp = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&resp), "404", "{resp}");
        let resp = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status(&resp), "405", "{resp}");
        let resp = exchange(addr, b"GET /metrics\r\n\r\n").await;
        assert_eq!(status(&resp), "400", "{resp}");
        let resp = exchange(addr, b"GET /metrics SPDY/3\r\n\r\n").await;
        assert_eq!(status(&resp), "400", "{resp}");
    }

    async fn start() -> (std::net::SocketAddr, Arc<Registry>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let registry = Registry::new();
        tokio::spawn(serve(listener, registry.clone()));
        (addr, registry)
    }

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The server may answer (431) and close before reading everything we send.
        let _ = s.write_all(request).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let (addr, registry) = start().await;
        registry.counter("scrapes_total", "Test counter.").add(5);
        let resp = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert_eq!(
            body,
            "# HELP scrapes_total Test counter.\n# TYPE scrapes_total counter\nscrapes_total 5\n"
        );

        let resp = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 404 "), "{resp}");
    }

    #[tokio::test]
    async fn oversized_request_gets_431() {
        let (addr, _registry) = start().await;
        let mut req = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(
            b'a',
            3 * rtc_http::Limits::default().max_head_bytes,
        ));
        req.extend_from_slice(b"\r\n\r\n");
        let resp = exchange(addr, &req).await;
        // Either the 431 arrived or the reset beat it; both are fine, a panic is not.
        assert!(
            resp.is_empty() || resp.starts_with("HTTP/1.1 431 "),
            "{resp}"
        );
        // The server is still alive afterwards.
        let resp = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    }
}
