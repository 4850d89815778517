//! `sipd.toml`: the daemon's configuration, with Kamailio's names where Kamailio has one
//! (`listen`, `alias` as `domain`, `nonce_expire`, `fr_inv_timer`, the pike and TCP
//! parameters) so an operator's habits carry over. Loaded strictly through `rtc-config`
//! (unknown keys are errors, `SIPD_<KEY>` environment overrides), then checked key by key
//! so every error names the file, the key and the problem.
//!
//! [`Resolved`] is what the daemon runs with, derived once here so that a SIGHUP reload
//! goes through exactly the same checks as start-up, in two parts: [`Fixed`], what is bound
//! or opened at start (sockets, database, certificate files, `/metrics`, log filter), and
//! [`Live`], what a reload applies (the protocol core's [`CoreConfig`], pike, connection
//! limits).

use rtc_auth::sip::DigestAlgorithm;
use rtc_config::{ConfigError, Problems};
use rtc_daemon::settings::ShellSettings;
use serde::{Deserialize, Serialize};
use sip_proto::core::{Config as CoreConfig, Listener};
use sip_proto::pike::PikeConfig;
use sip_proto::txn::Transport;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default location, shared with `rtc-admin`.
pub const DEFAULT_CONFIG: &str = "/etc/rtc/sipd.toml";

/// Sources pike tracks at most (see `sip_proto::pike`): about 10 MB at the limit.
const PIKE_MAX_SOURCES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// Domains served as registrar and home proxy (Kamailio `alias` / `SIP_DOMAIN`); the
    /// first is the digest realm.
    pub domain: Vec<String>,
    /// Sockets in Kamailio's `listen` syntax: `proto:address[:port] [advertise HOST[:PORT]]`.
    pub listen: Vec<String>,
    /// PEM certificate chain for `tls:` listeners.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key for `tls:` listeners.
    pub tls_private_key: Option<PathBuf>,
    /// Database URL, or a SQLite file path relative to this file's directory.
    pub db_url: String,
    /// Digest algorithms to challenge with, strongest first (RFC 8760).
    pub auth_algorithms: Vec<String>,
    /// Seconds a nonce stays valid (Kamailio auth `nonce_expire`).
    pub nonce_expire: u64,
    /// Registration lifetime when the UA asks for none (Kamailio registrar `default_expires`).
    pub default_expires: u32,
    /// Shortest registration accepted; shorter gets 423 (Kamailio `min_expires`).
    pub min_expires: u32,
    /// Longest registration granted (Kamailio `max_expires`).
    pub max_expires: u32,
    /// Contacts per address of record, 0 = unlimited (Kamailio `max_contacts`).
    pub max_contacts: usize,
    /// Relay requests for domains we do not serve.
    pub allow_relay: bool,
    /// Networks (CIDR or single address) trusted without authentication.
    pub trusted: Vec<String>,
    /// User-Agent substrings dropped silently (scanners).
    pub drop_user_agents: Vec<String>,
    /// Seconds an INVITE may ring before it is cancelled (Kamailio tm `fr_inv_timer`).
    pub fr_inv_timer: u64,
    /// Largest SIP message accepted, bytes.
    pub max_message_size: usize,
    /// Pike sampling window, seconds (Kamailio pike `sampling_time_unit`).
    pub pike_sampling_time_unit: u64,
    /// Requests per window before a source is banned, 0 = off (`reqs_density_per_unit`).
    pub pike_reqs_density_per_unit: u32,
    /// Seconds a ban lasts (Kamailio pike `remove_latency`).
    pub pike_remove_latency: u64,
    /// TCP and TLS connections at most, both directions (Kamailio `tcp_max_connections`).
    pub tcp_max_connections: usize,
    /// Seconds an idle TCP/TLS connection is kept (Kamailio `tcp_connection_lifetime`).
    pub tcp_connection_lifetime: u64,
    /// Inbound TCP/TLS connections per source address, 0 = unlimited.
    pub tcp_max_connections_per_ip: u32,
    pub prometheus: bool,
    pub prometheus_address: IpAddr,
    pub prometheus_port: u16,
    /// Log filter (`error`, `warn`, `info`, `debug`, or a tracing filter string).
    pub log_level: String,
    /// Server / User-Agent header value on what sipd answers or originates.
    pub server_header: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: Vec::new(),
            listen: vec!["udp:0.0.0.0:5060".into(), "tcp:0.0.0.0:5060".into()],
            tls_certificate: None,
            tls_private_key: None,
            db_url: "sipd.sqlite".into(),
            auth_algorithms: vec!["MD5".into()],
            nonce_expire: 30,
            default_expires: 3600,
            min_expires: 60,
            max_expires: 86400,
            max_contacts: 10,
            allow_relay: false,
            trusted: Vec::new(),
            drop_user_agents: [
                "friendly-scanner",
                "sipvicious",
                "sipcli",
                "VaxSIPUserAgent",
                "sundayddr",
                "iWar",
                "sip-scan",
            ]
            .map(String::from)
            .to_vec(),
            fr_inv_timer: 120,
            max_message_size: 65535,
            pike_sampling_time_unit: 2,
            pike_reqs_density_per_unit: 30,
            pike_remove_latency: 120,
            tcp_max_connections: 4096,
            tcp_connection_lifetime: 120,
            tcp_max_connections_per_ip: 32,
            prometheus: false,
            prometheus_address: IpAddr::from([127, 0, 0, 1]),
            prometheus_port: 9091,
            log_level: "info".into(),
            server_header: "sipd".into(),
        }
    }
}

/// One `listen` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// `HOST[:PORT]` to put in Via and Record-Route instead of the bound address (NAT).
    pub advertise: Option<String>,
}

/// TCP and TLS limits, applied by the connection tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: u32,
    pub idle_lifetime: Duration,
    pub max_message_size: usize,
}

/// Settings bound or opened at start, under their configuration keys: a reload that
/// changes one is reported (`rtc_daemon::settings::restart_needed`), not applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Fixed {
    pub listen: Vec<String>,
    /// `listen` parsed.
    #[serde(skip)]
    pub listeners: Vec<ListenSpec>,
    /// `db-url` ready for `Store::connect`.
    #[serde(rename = "db-url")]
    pub store_url: String,
    /// Certificate files (relative to the config file's directory); the files themselves
    /// are re-read on SIGHUP.
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    #[serde(flatten)]
    pub shell: ShellSettings,
}

/// Settings a SIGHUP applies.
#[derive(Debug, Clone)]
pub struct Live {
    /// The core's settings; its `listeners` describe the sockets in [`Fixed`].
    pub core: CoreConfig,
    pub pike: PikeConfig,
    pub streams: StreamLimits,
}

impl StreamLimits {
    /// The limits the connection limiter applies.
    pub fn conns(&self) -> rtc_daemon::limiter::Limits {
        rtc_daemon::limiter::Limits {
            max_connections: self.max_connections,
            max_per_ip: self.max_connections_per_ip,
        }
    }
}

/// The checked configuration and everything derived from it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The file it was loaded from (reloads read it again).
    pub path: PathBuf,
    pub fixed: Fixed,
    pub live: Live,
}

impl Resolved {
    pub fn has_tls(&self) -> bool {
        self.fixed
            .listeners
            .iter()
            .any(|l| l.transport == Transport::Tls)
    }
}

/// Loads and checks a config file with `SIPD_*` overrides.
pub fn load(path: &Path) -> Result<Resolved, ConfigError> {
    let cfg: Config = rtc_config::load(path, "SIPD")?;
    resolve(cfg, path)
}

/// [`load`], then the files the configuration names: the certificate and key are loaded as
/// the TLS listener will load them (readable, PEM, key matching the certificate), so that
/// `--check-config` fails on what would stop start-up, naming the file and the setting.
/// SIGHUP reloads use [`load`] alone: there a broken certificate keeps the old one in
/// service and must not also hold back the rest of the reload.
pub fn load_with_files(path: &Path) -> Result<Resolved, ConfigError> {
    let r = load(path)?;
    if let (Some(cert), Some(key)) = (&r.fixed.tls_certificate, &r.fixed.tls_private_key) {
        let pair = rtc_tls::ConfiguredPair {
            cert_setting: "tls-certificate",
            cert,
            key_setting: "tls-private-key",
            key,
        };
        pair.load().map_err(|(setting, e)| {
            ConfigError::new(path.display().to_string(), Some(setting), e.to_string())
        })?;
    }
    Ok(r)
}

/// Checks a loaded config and derives the protocol core's settings.
pub fn resolve(mut cfg: Config, path: &Path) -> Result<Resolved, ConfigError> {
    let file = path.display().to_string();
    let mut p = Problems::new(&file);

    let mut domains = Vec::new();
    for d in &cfg.domain {
        let d = d.trim().to_ascii_lowercase();
        if d.is_empty() || d.contains(|c: char| c.is_whitespace() || "@;:<>\"/".contains(c)) {
            p.push("domain", format!("`{d}` is not a host name"));
        } else if !domains.contains(&d) {
            domains.push(d);
        }
    }
    if domains.is_empty() {
        p.push(
            "domain",
            "needs at least one domain (the first is the digest realm)",
        );
    }

    let mut listeners: Vec<ListenSpec> = Vec::new();
    for l in &cfg.listen {
        match parse_listen(l) {
            Ok(spec) => {
                if listeners
                    .iter()
                    .any(|o| o.addr == spec.addr && same_socket_kind(o.transport, spec.transport))
                {
                    p.push("listen", format!("`{l}`: listed twice"));
                } else {
                    listeners.push(spec);
                }
            }
            Err(e) => p.push("listen", format!("`{l}`: {e}")),
        }
    }
    if cfg.listen.is_empty() {
        p.push(
            "listen",
            "needs at least one socket, e.g. \"udp:0.0.0.0:5060\"",
        );
    }
    let tls = listeners.iter().any(|l| l.transport == Transport::Tls);
    match (&cfg.tls_certificate, &cfg.tls_private_key) {
        (None, _) if tls => p.push("tls-certificate", "required by the tls: listener"),
        (_, None) if tls => p.push("tls-private-key", "required by the tls: listener"),
        (Some(_), None) => p.push("tls-private-key", "tls-certificate is set but this is not"),
        (None, Some(_)) => p.push("tls-certificate", "tls-private-key is set but this is not"),
        _ => {}
    }

    if cfg.db_url.trim().is_empty() {
        p.push("db-url", "must not be empty");
    }

    let mut algorithms = Vec::new();
    for a in &cfg.auth_algorithms {
        match DigestAlgorithm::from_name(a.trim()) {
            Some(alg) if algorithms.contains(&alg) => {
                p.push("auth-algorithms", format!("`{a}` listed twice"))
            }
            Some(alg) => algorithms.push(alg),
            None => p.push(
                "auth-algorithms",
                format!("`{a}` is not supported (use \"SHA-256\" and/or \"MD5\")"),
            ),
        }
    }
    if cfg.auth_algorithms.is_empty() {
        p.push("auth-algorithms", "needs at least one algorithm");
    }

    for (key, v) in [
        ("nonce-expire", cfg.nonce_expire),
        ("fr-inv-timer", cfg.fr_inv_timer),
        ("pike-sampling-time-unit", cfg.pike_sampling_time_unit),
        ("pike-remove-latency", cfg.pike_remove_latency),
        ("tcp-connection-lifetime", cfg.tcp_connection_lifetime),
        ("tcp-max-connections", cfg.tcp_max_connections as u64),
        ("max-expires", u64::from(cfg.max_expires)),
    ] {
        if v == 0 {
            p.push(key, "must be greater than 0");
        }
    }
    if cfg.min_expires > cfg.max_expires {
        p.push(
            "min-expires",
            format!("must not exceed max-expires ({})", cfg.max_expires),
        );
    }
    if cfg.default_expires < cfg.min_expires || cfg.default_expires > cfg.max_expires {
        p.push(
            "default-expires",
            format!(
                "must be between min-expires ({}) and max-expires ({})",
                cfg.min_expires, cfg.max_expires
            ),
        );
    }
    // A UDP datagram cannot be larger, and a few hundred bytes is less than any INVITE.
    if !(1024..=65535).contains(&cfg.max_message_size) {
        p.push("max-message-size", "must be between 1024 and 65535");
    }

    let mut trusted = Vec::new();
    for t in &cfg.trusted {
        match parse_cidr(t) {
            Ok(net) => trusted.push(net),
            Err(e) => p.push("trusted", format!("`{t}`: {e}")),
        }
    }
    for ua in &cfg.drop_user_agents {
        if ua.trim().is_empty() {
            p.push(
                "drop-user-agents",
                "an entry is empty (it would drop everyone)",
            );
        }
    }
    if cfg.server_header.trim().is_empty() || cfg.server_header.contains(['\r', '\n']) {
        p.push("server-header", "must be one non-empty line");
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&cfg.log_level) {
        p.push("log-level", format!("`{}`: {e}", cfg.log_level));
    }

    p.into_result()?;

    // Certificate paths, like db-url, are relative to the config file.
    let config_dir = path.parent().unwrap_or(Path::new(""));
    for f in [&mut cfg.tls_certificate, &mut cfg.tls_private_key]
        .into_iter()
        .flatten()
    {
        if f.is_relative() {
            *f = config_dir.join(&*f);
        }
    }
    let store_url = rtc_store::resolve_userdb(cfg.db_url.trim(), path);

    let core = CoreConfig {
        domains,
        listeners: listeners
            .iter()
            .map(|l| Listener {
                transport: l.transport,
                addr: l.addr,
                advertise: l.advertise.clone(),
            })
            .collect(),
        algorithms,
        nonce_expire: Duration::from_secs(cfg.nonce_expire),
        default_expires: cfg.default_expires,
        min_expires: cfg.min_expires,
        max_expires: cfg.max_expires,
        max_contacts: cfg.max_contacts,
        allow_relay: cfg.allow_relay,
        trusted: trusted.clone(),
        drop_user_agents: cfg.drop_user_agents.clone(),
        invite_timeout: Duration::from_secs(cfg.fr_inv_timer),
        server_name: cfg.server_header.clone(),
        limits: sip_proto::message::Limits {
            max_message_size: cfg.max_message_size,
            ..Default::default()
        },
    };
    let pike = PikeConfig {
        sampling_time_unit: Duration::from_secs(cfg.pike_sampling_time_unit),
        reqs_density_per_unit: cfg.pike_reqs_density_per_unit,
        remove_latency: Duration::from_secs(cfg.pike_remove_latency),
        trusted,
        max_sources: PIKE_MAX_SOURCES,
    };
    let streams = StreamLimits {
        max_connections: cfg.tcp_max_connections,
        max_connections_per_ip: cfg.tcp_max_connections_per_ip,
        idle_lifetime: Duration::from_secs(cfg.tcp_connection_lifetime),
        max_message_size: cfg.max_message_size,
    };
    let fixed = Fixed {
        listen: cfg.listen.clone(),
        listeners,
        store_url,
        tls_certificate: cfg.tls_certificate.clone(),
        tls_private_key: cfg.tls_private_key.clone(),
        shell: ShellSettings {
            prometheus: cfg.prometheus,
            prometheus_address: cfg.prometheus_address,
            prometheus_port: cfg.prometheus_port,
            log_level: cfg.log_level.clone(),
        },
    };
    Ok(Resolved {
        path: path.to_owned(),
        fixed,
        live: Live {
            core,
            pike,
            streams,
        },
    })
}

/// UDP and TCP may share an address and port; TCP and TLS may not (both are TCP sockets).
fn same_socket_kind(a: Transport, b: Transport) -> bool {
    let stream = |t| matches!(t, Transport::Tcp | Transport::Tls);
    a == b || (stream(a) && stream(b))
}

/// What is wrong with a `listen`, `advertise` or `trusted` value; the text goes to the
/// operator after the file and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("empty")]
    Empty,
    #[error("expected `proto:address[:port] [advertise host[:port]]`")]
    ListenSyntax,
    #[error("expected `proto:address[:port]` (proto is udp, tcp or tls)")]
    NoProtocol,
    #[error("{0} is not supported yet")]
    UnsupportedProtocol(String),
    #[error("unknown protocol `{0}` (udp, tcp or tls)")]
    UnknownProtocol(String),
    #[error("unclosed `[` in IPv6 address")]
    UnclosedBracket,
    #[error("`{0}` is not an IPv6 address")]
    NotIpv6(String),
    #[error("expected `:port` after `]`")]
    NoPortAfterBracket,
    #[error("`{0}` is not an IP address (sipd binds addresses, not names; IPv6 goes in brackets)")]
    NotBindable(String),
    #[error("IPv6 addresses go in brackets: `udp:[::]:5060`")]
    Ipv6WithoutBrackets,
    #[error("`{0}` is not a port number")]
    NotPort(String),
    #[error("`{0}` is not a host name or IPv4 address")]
    NotHost(String),
    /// In the `advertise` part of a `listen` value.
    #[error("advertise: {0}")]
    Advertise(Box<ValueError>),
    #[error("`{0}` is not an IP address")]
    NotIp(String),
    #[error("prefix length `{0}` is not 0..={1}")]
    PrefixLength(String, u8),
    #[error("host bits are set; did you mean {0}/{1}?")]
    HostBits(IpAddr, u8),
}

/// Parses Kamailio's `listen` value: `proto:addr[:port]` with `proto` one of `udp`, `tcp`,
/// `tls`, `addr` an IPv4 address or a bracketed IPv6 one, the port defaulting to 5060
/// (5061 for TLS, RFC 3261 section 26.2), then optionally ` advertise HOST[:PORT]`.
pub fn parse_listen(s: &str) -> Result<ListenSpec, ValueError> {
    let mut words = s.split_whitespace();
    let socket = words.next().ok_or(ValueError::Empty)?;
    let advertise = match (words.next(), words.next(), words.next()) {
        (None, _, _) => None,
        (Some(kw), Some(host), None) if kw.eq_ignore_ascii_case("advertise") => {
            check_advertise(host).map_err(|e| ValueError::Advertise(Box::new(e)))?;
            Some(host.to_string())
        }
        _ => return Err(ValueError::ListenSyntax),
    };
    let (proto, rest) = socket.split_once(':').ok_or(ValueError::NoProtocol)?;
    let transport = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        "ws" | "wss" | "sctp" => return Err(ValueError::UnsupportedProtocol(proto.into())),
        _ => return Err(ValueError::UnknownProtocol(proto.into())),
    };
    let default_port = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    let addr = if let Some(v6) = rest.strip_prefix('[') {
        let (ip, after) = v6.split_once(']').ok_or(ValueError::UnclosedBracket)?;
        let ip: IpAddr = ip.parse().map_err(|_| ValueError::NotIpv6(ip.into()))?;
        let port = match after {
            "" => default_port,
            p => parse_port(p.strip_prefix(':').ok_or(ValueError::NoPortAfterBracket)?)?,
        };
        SocketAddr::new(ip, port)
    } else {
        let (ip, port) = match rest.split_once(':') {
            Some((ip, port)) => (ip, parse_port(port)?),
            None => (rest, default_port),
        };
        let ip: IpAddr = ip.parse().map_err(|_| ValueError::NotBindable(ip.into()))?;
        if ip.is_ipv6() {
            return Err(ValueError::Ipv6WithoutBrackets);
        }
        SocketAddr::new(ip, port)
    };
    Ok(ListenSpec {
        transport,
        addr,
        advertise,
    })
}

fn parse_port(s: &str) -> Result<u16, ValueError> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ValueError::NotPort(s.into())),
    }
}

/// `HOST[:PORT]` as it will appear in Via and Record-Route.
fn check_advertise(s: &str) -> Result<(), ValueError> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (ip, after) = v6.split_once(']').ok_or(ValueError::UnclosedBracket)?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| ValueError::NotIpv6(ip.into()))?;
        (None, after.strip_prefix(':'))
    } else {
        match s.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(h) = host {
        let ok = !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !ok {
            return Err(ValueError::NotHost(h.into()));
        }
    }
    if let Some(p) = port {
        parse_port(p)?;
    }
    Ok(())
}

/// `203.0.113.0/24`, `2001:db8::/32`, or a single address (a /32 or /128). Host bits
/// set under the mask are refused: `10.0.0.1/8` is more likely a typo than intended.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), ValueError> {
    let (ip, len) = match s.trim().split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s.trim(), None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| ValueError::NotIp(ip.into()))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(ValueError::PrefixLength(l.into(), max)),
        },
    };
    if network(ip, len) != ip {
        return Err(ValueError::HostBits(network(ip, len), len));
    }
    Ok((ip, len))
}

/// The network address of `ip/len`.
fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_at(toml: &str, path: &str) -> Result<Resolved, ConfigError> {
        let cfg: Config = rtc_config::load_str(toml, path, &[], "SIPD")?;
        resolve(cfg, Path::new(path))
    }

    fn parse(toml: &str) -> Result<Resolved, ConfigError> {
        parse_at(toml, "t.toml")
    }

    #[test]
    fn minimal_config_resolves_with_kamailio_defaults() {
        let r = parse("domain = [\"Sip.Example.org\", \"example.org\"]").unwrap();
        assert_eq!(r.live.core.domains, vec!["sip.example.org", "example.org"]);
        assert_eq!(r.fixed.listeners.len(), 2);
        assert_eq!(r.fixed.listeners[0].transport, Transport::Udp);
        assert_eq!(r.fixed.listeners[1].addr, "0.0.0.0:5060".parse().unwrap());
        assert_eq!(r.live.core.algorithms, vec![DigestAlgorithm::Md5]);
        assert_eq!(r.live.core.nonce_expire, Duration::from_secs(30));
        assert_eq!(r.live.core.invite_timeout, Duration::from_secs(120));
        assert_eq!(r.live.core.limits.max_message_size, 65535);
        assert_eq!(r.live.core.drop_user_agents.len(), 7);
        assert_eq!(r.live.pike.reqs_density_per_unit, 30);
        assert_eq!(r.live.pike.remove_latency, Duration::from_secs(120));
        assert_eq!(r.live.streams.idle_lifetime, Duration::from_secs(120));
        assert_eq!(r.fixed.store_url, "sipd.sqlite");
        assert!(!r.has_tls());
    }

    #[test]
    fn listen_syntax_follows_kamailio() {
        let l = parse_listen("udp:[::]:5060").unwrap();
        assert_eq!(l.addr, "[::]:5060".parse().unwrap());
        let l = parse_listen("tls:192.0.2.1").unwrap();
        assert_eq!((l.transport, l.addr.port()), (Transport::Tls, 5061));
        let l = parse_listen("TCP:10.0.0.10:5080 advertise 198.51.100.7:5060").unwrap();
        assert_eq!(l.transport, Transport::Tcp);
        assert_eq!(l.advertise.as_deref(), Some("198.51.100.7:5060"));
        let l = parse_listen("udp:10.0.0.10 advertise sip.example.org").unwrap();
        assert_eq!(l.advertise.as_deref(), Some("sip.example.org"));
        let l = parse_listen("udp:[::1] advertise [2001:db8::1]:5060").unwrap();
        assert_eq!(l.addr.port(), 5060);
        for bad in [
            "0.0.0.0:5060",
            "udp:sip.example.org:5060",
            "udp:::1:5060",
            "udp:0.0.0.0:0",
            "udp:0.0.0.0:70000",
            "ws:0.0.0.0:80",
            "udp:0.0.0.0 advertise",
            "udp:0.0.0.0 name x",
            "udp:0.0.0.0 advertise a b",
            "udp:0.0.0.0 advertise bad_host",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = parse("listen = [\"udp:0.0.0.0:5060\"]").unwrap_err();
        assert_eq!(e.file, "t.toml");
        assert_eq!(e.key.as_deref(), Some("domain"), "{e}");
        let e = parse("domain = [\"a.org\"]\nlisten = [\"tls:127.0.0.1:5061\"]").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tls-certificate"), "{e}");
        let e = parse("domain = [\"a.org\"]\nmin-expires = 100\ndefault-expires = 50").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("default-expires"), "{e}");
        let e = parse("domain = [\"a.org\"]\nauth-algorithms = [\"SHA-512\"]").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("auth-algorithms"), "{e}");
        let e = parse("domain = [\"a.org\"]\ntrusted = [\"10.0.0.1/8\"]").unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/8"), "{e}");
        let e = parse("domain = [\"a.org\"]\nlisten = [\"udp:1.2.3.4\", \"udp:1.2.3.4:5060\"]")
            .unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = parse("domain = [\"a.org\"]\nlisten = [\"tcp:1.2.3.4:5060\", \"tls:1.2.3.4:5060\"]\ntls-certificate = \"c\"\ntls-private-key = \"k\"").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = parse("domain = [\"a.org\"]\npike-remove-latncy = 5").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("pike-remove-latncy"), "{e}");
        let e = parse("domain = [\"a.org\"]\nlog-level = \"info,=[\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("log-level"), "{e}");
        // Several problems are all reported.
        let e = parse("max-message-size = 10").unwrap_err();
        assert!(e.to_string().contains("domain"), "{e}");
        assert!(e.to_string().contains("max-message-size"), "{e}");
    }

    #[test]
    fn udp_and_tcp_share_a_port() {
        let r = parse("domain=[\"a.org\"]\nlisten=[\"udp:127.0.0.1:5060\",\"tcp:127.0.0.1:5060\"]")
            .unwrap();
        assert_eq!(r.fixed.listeners.len(), 2);
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let r = parse_at(
            "domain=[\"a.org\"]\nlisten=[\"tls:127.0.0.1\"]\ntls-certificate=\"tls/c.pem\"\n\
             tls-private-key=\"/k.pem\"",
            "/etc/rtc/sipd.toml",
        )
        .unwrap();
        assert_eq!(r.fixed.store_url, "/etc/rtc/sipd.sqlite");
        assert_eq!(
            r.fixed.tls_certificate.as_deref(),
            Some(Path::new("/etc/rtc/tls/c.pem"))
        );
        assert_eq!(
            r.fixed.tls_private_key.as_deref(),
            Some(Path::new("/k.pem"))
        );
        assert!(r.has_tls());
        let r = parse_at(
            "domain=[\"a.org\"]\ndb-url=\"postgres://u:p@h/db\"",
            "/etc/rtc/sipd.toml",
        )
        .unwrap();
        assert_eq!(r.fixed.store_url, "postgres://u:p@h/db");
    }

    #[test]
    fn trusted_networks() {
        assert_eq!(
            parse_cidr("203.0.113.0/24").unwrap(),
            ("203.0.113.0".parse().unwrap(), 24)
        );
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap(),
            ("2001:db8::1".parse().unwrap(), 128)
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nonsense").is_err());
        let r = parse("domain=[\"a.org\"]\ntrusted=[\"192.0.2.0/24\"]").unwrap();
        assert_eq!(r.live.core.trusted, r.live.pike.trusted);
    }

    #[test]
    fn env_overrides_apply() {
        let cfg: Config = rtc_config::load_str(
            "domain=[\"a.org\"]",
            "t.toml",
            &[
                ("SIPD_PIKE_REQS_DENSITY_PER_UNIT".into(), "0".into()),
                ("SIPD_LISTEN".into(), "[\"udp:127.0.0.1:5070\"]".into()),
            ],
            "SIPD",
        )
        .unwrap();
        assert_eq!(cfg.pike_reqs_density_per_unit, 0);
        assert_eq!(cfg.listen, vec!["udp:127.0.0.1:5070"]);
    }
}
