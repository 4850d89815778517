//! A small Prometheus metrics registry and the `/metrics` HTTP endpoint for the daemons.
//!
//! Data flow: at start-up a daemon registers its metrics once with [`Registry::counter`],
//! [`Registry::gauge`] and their labelled `_with` forms, and keeps the returned
//! `Arc<Counter>` / `Arc<Gauge>` handles in its state. Hot paths (every STUN packet, every SIP
//! transaction) then only touch a relaxed atomic: no lock, no map lookup, no allocation. When
//! Prometheus scrapes, [`serve`] takes the registry lock once and [`Registry::render`] walks
//! the families in name order, producing the text exposition format 0.0.4.
//!
//! The HTTP side is deliberately tiny (one request per connection, bounded size, time and
//! concurrency) because it faces the network and must never become a way to exhaust the
//! daemon: no HTTP library, no keep-alive, nothing but `GET /metrics`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// A monotonically increasing count (packets, requests, errors).
///
/// Relaxed ordering is enough: a scrape needs an eventually correct total, not an ordering
/// with other memory operations.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open allocations, connected clients).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.sub(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n`.
    pub fn sub(&self, n: i64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// Replaces the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
}

/// Label pairs sorted by label name, so `[a, b]` and `[b, a]` are the same series.
type LabelSet = Vec<(String, String)>;

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<LabelSet, Series>,
}

/// All metrics of one process. Registration locks; updating a metric never does.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

impl Registry {
    /// An empty registry, shared between the daemon's components and [`serve`].
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Registers (or finds) the unlabelled counter `name`.
    ///
    /// # Panics
    /// On an invalid metric name, or if `name` is already a gauge: both are programming
    /// errors in static registration code, best caught by the first test that runs it.
    pub fn counter(&self, name: &str, help: &str) -> Arc<Counter> {
        self.counter_with(name, help, &[])
    }

    /// Registers (or finds) the counter `name` with these labels. Every label set of one name
    /// belongs to one family, rendered under a single HELP/TYPE header; asking again for the
    /// same name and labels returns the same counter.
    ///
    /// # Panics
    /// As [`Registry::counter`], and on invalid or duplicate label names.
    pub fn counter_with(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Counter> {
        match self.register(name, help, labels, Kind::Counter) {
            Series::Counter(c) => c,
            Series::Gauge(_) => unreachable!("register checks the family kind"),
        }
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
        match self.register(name, help, labels, Kind::Gauge) {
            Series::Gauge(g) => g,
            Series::Counter(_) => unreachable!("register checks the family kind"),
        }
    }

    fn register(&self, name: &str, help: &str, labels: &[(&str, &str)], kind: Kind) -> Series {
        assert!(valid_name(name), "invalid metric name {name:?}");
        let mut set: LabelSet = labels
            .iter()
            .map(|(k, v)| {
                assert!(
                    valid_name(k) && !k.contains(':') && !k.starts_with("__"),
                    "invalid label name {k:?} for metric {name}"
                );
                (k.to_string(), v.to_string())
            })
            .collect();
        set.sort();
        assert!(
            set.windows(2).all(|w| w[0].0 != w[1].0),
            "duplicate label name for metric {name}"
        );

        let mut families = self.lock();
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            kind,
            series: BTreeMap::new(),
        });
        assert!(
            family.kind == kind,
            "metric {name} registered as {} and {}",
            family.kind.as_str(),
            kind.as_str()
        );
        family
            .series
            .entry(set)
            .or_insert_with(|| match kind {
                Kind::Counter => Series::Counter(Arc::default()),
                Kind::Gauge => Series::Gauge(Arc::default()),
            })
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Family>> {
        // A panic while registering cannot leave a half-built entry visible to rendering
        // that is worse than a missing metric, so keep serving after poisoning.
        self.families.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Prometheus text exposition format (version 0.0.4): families sorted by name, each
    /// with one HELP and TYPE line, series sorted by labels.
    pub fn render(&self) -> String {
        let families = self.lock();
        let mut out = String::new();
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for (labels, series) in &family.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
                    }
                    out.push('}');
                }
                let _ = match series {
                    Series::Counter(c) => writeln!(out, " {}", c.get()),
                    Series::Gauge(g) => writeln!(out, " {}", g.get()),
                };
            }
        }
        out
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, the metric name grammar of the exposition format.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Largest request head accepted; a scrape request is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request, and separately to read the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent connections served; beyond this, accepting waits, so a flood queues in the
/// kernel backlog instead of in our memory.
const MAX_CONCURRENT: usize = 64;
/// Consecutive accept failures tolerated (with backoff) before giving up: fd exhaustion is
/// transient, a listener failing for this long is not.
const MAX_ACCEPT_FAILURES: u32 = 30;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` (and `HEAD`) from `registry` on `listener` until the future is
/// dropped. Other paths get 404, other methods 405, oversized requests 431, slow ones are
/// closed. Each connection carries one request. Returns an error only if accepting keeps
/// failing.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let mut failures = 0u32;
    loop {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                failures = 0;
                stream
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_ACCEPT_FAILURES {
                    return Err(e);
                }
                let backoff = Duration::from_millis(10u64 << failures.min(7));
                tokio::time::sleep(backoff.min(Duration::from_secs(1))).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout); there is nobody to report to.
            let _ = handle(stream, &registry).await;
            drop(permit);
        });
    }
}

/// What the request head asked for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics { head_only: bool },
    NotFound,
    MethodNotAllowed,
    Bad,
    TooLarge,
}

async fn handle(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let request = match tokio::time::timeout(IO_TIMEOUT, read_request(&mut stream)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()), // slow client: just close
    };
    let (status, body, head_only) = match request {
        Request::Metrics { head_only } => ("200 OK", registry.render(), head_only),
        Request::NotFound => ("404 Not Found", "not found\n".to_owned(), false),
        Request::MethodNotAllowed => (
            "405 Method Not Allowed",
            "method not allowed\n".to_owned(),
            false,
        ),
        Request::Bad => ("400 Bad Request", "bad request\n".to_owned(), false),
        Request::TooLarge => (
            "431 Request Header Fields Too Large",
            "request too large\n".to_owned(),
            false,
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        response.push_str(&body);
    }
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(IO_TIMEOUT, write).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

/// Reads until the blank line ending the request head, or until [`MAX_REQUEST`] bytes.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Request> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_head_end(&buf) {
            return Ok(parse_request(&buf[..end]));
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(Request::TooLarge);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Request::Bad);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn parse_request(head: &[u8]) -> Request {
    let Ok(head) = std::str::from_utf8(head) else {
        return Request::Bad;
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    // Prometheus may append query parameters; they do not change what we serve.
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Request::NotFound;
    }
    match method {
        "GET" => Request::Metrics { head_only: false },
        "HEAD" => Request::Metrics { head_only: true },
        _ => Request::MethodNotAllowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn request_parsing() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Request::Metrics { head_only: false }
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.0"),
            Request::Metrics { head_only: false }
        );
        assert_eq!(
            parse_request(b"HEAD /metrics HTTP/1.1"),
            Request::Metrics { head_only: true }
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1"),
            Request::MethodNotAllowed
        );
        assert_eq!(parse_request(b"GET /metrics"), Request::Bad);
        assert_eq!(parse_request(b"GET /metrics SPDY/3"), Request::Bad);
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
        req.extend(std::iter::repeat_n(b'a', 3 * MAX_REQUEST));
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
