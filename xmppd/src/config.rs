//! `xmppd.toml` and the virtual-host files: Prosody's configuration model in TOML.
//!
//! Prosody keeps global settings in `prosody.cfg.lua` and one file per domain in
//! `conf.avail/`, enabled by a symlink in `conf.d/` (Debian's layout). xmppd does the same:
//! the main file ([`Config`], Prosody's global names in kebab-case: `admins`,
//! `c2s-require-encryption`, `smacks-hibernation-time`...) names two directories,
//! `vhosts-available` and `vhosts-enabled`; every `*.toml` in the enabled one (a symlink
//! or a copy) is a [`VhostFile`]: one `VirtualHost` with its certificate, and its
//! `Component "conference..." "muc"` as `[[component]]` tables.
//!
//! Both are loaded strictly through `rtc-config` (unknown keys are errors; `XMPPD_<KEY>`
//! environment overrides apply to the main file only, as a variable cannot say which
//! domain it means), then checked key by key so every error names the file, the key and
//! the problem. [`Resolved`] is what the daemon runs with, derived here once so a SIGHUP
//! reload goes through exactly the checks start-up does: [`Fixed`] (client ports,
//! database, `/metrics`, log filter: bound at start) and [`Live`] (the core's
//! [`ServerConfig`], the hosts and their certificates, the connection limits: reloaded).

use rtc_config::{ConfigError, Problems};
use rtc_daemon::settings::ShellSettings;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use xmpp_proto::jid::Jid;
use xmpp_proto::server::{Config as ServerConfig, ConnKind, MucService, VHost};

/// Default location, shared with `rtc-admin`.
pub const DEFAULT_CONFIG: &str = "/etc/rtc/xmppd.toml";

/// RFC 6120 section 13.12: a server must accept stanzas of at least 10000 bytes.
const MIN_STANZA_SIZE: usize = 10_000;
/// Above this one client could make the server hold very large buffers.
const MAX_STANZA_SIZE: usize = 16 << 20;
/// RFC 7677 section 4: at least 4096 PBKDF2 iterations for SCRAM-SHA-256.
const MIN_SCRAM_ITERATIONS: u32 = 4096;
/// Beyond this a login costs seconds of CPU: a denial of service by configuration.
const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;
/// History a room may replay on join at most (each is one stanza sent to the joiner).
const MAX_HISTORY: usize = 1000;
/// Bytes of output queued for one connection before it is closed as not reading: four
/// of the largest stanzas, but never less than this.
const MIN_WRITE_QUEUE: usize = 1 << 20;

/// The main file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// Bare JIDs with server administration rights on every host (Prosody `admins`).
    pub admins: Vec<String>,
    /// Database URL, or a SQLite file path relative to this file's directory.
    pub db_url: String,
    /// PBKDF2 iterations for newly set passwords (Prosody `scram_iterations`... in spirit:
    /// Prosody hard-codes 10000, the value here is its default).
    pub scram_iterations: u32,
    /// Client ports offering STARTTLS (Prosody `c2s_ports`).
    pub c2s_ports: Vec<u16>,
    /// Client ports speaking TLS from the first byte, XEP-0368 (Prosody
    /// `c2s_direct_tls_ports`).
    pub c2s_direct_tls_ports: Vec<u16>,
    /// Addresses to listen on; `*` is every IPv4 address, as in Prosody.
    pub interfaces: Vec<String>,
    /// No authentication before TLS (Prosody `c2s_require_encryption`).
    pub c2s_require_encryption: bool,
    /// Offer SASL PLAIN (only ever over TLS).
    pub allow_plain: bool,
    /// Largest stanza accepted from a client, bytes (Prosody `c2s_stanza_size_limit`).
    pub c2s_stanza_size_limit: usize,
    /// Read rate per client connection, e.g. "10kb/s" (Prosody `limits.c2s.rate`; K = 1024),
    /// or "unlimited".
    pub c2s_rate: String,
    /// Seconds a dropped XEP-0198 session may be resumed (Prosody
    /// `smacks_hibernation_time`).
    pub smacks_hibernation_time: u64,
    /// Offline messages kept per user before further ones are refused.
    pub offline_max: usize,
    /// Seconds a new connection has to authenticate.
    pub negotiation_timeout: u64,
    /// Directory of the virtual-host files, relative to this file (Prosody's
    /// `conf.avail`; `rtc-admin` links from here).
    pub vhosts_available: PathBuf,
    /// Directory whose `*.toml` files (links or copies) are the served domains (Prosody's
    /// `conf.d`).
    pub vhosts_enabled: PathBuf,
    pub prometheus: bool,
    pub prometheus_address: IpAddr,
    pub prometheus_port: u16,
    /// Log filter (`error`, `warn`, `info`, `debug`, or a tracing filter string).
    pub log_level: String,
    /// Client connections at most.
    pub tcp_max_connections: usize,
    /// Client connections per source address, 0 = unlimited.
    pub tcp_max_connections_per_ip: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            admins: Vec::new(),
            db_url: "xmppd.sqlite".into(),
            scram_iterations: 10_000,
            c2s_ports: vec![5222],
            c2s_direct_tls_ports: vec![5223],
            interfaces: vec!["0.0.0.0".into()],
            c2s_require_encryption: true,
            allow_plain: true,
            c2s_stanza_size_limit: 256 * 1024,
            c2s_rate: "10kb/s".into(),
            smacks_hibernation_time: 600,
            offline_max: 1000,
            negotiation_timeout: 60,
            vhosts_available: "vhosts-available".into(),
            vhosts_enabled: "vhosts-enabled".into(),
            prometheus: false,
            prometheus_address: IpAddr::from([127, 0, 0, 1]),
            prometheus_port: 9092,
            log_level: "info".into(),
            tcp_max_connections: 10_000,
            tcp_max_connections_per_ip: 32,
        }
    }
}

/// One virtual-host file (Prosody `VirtualHost "falcot.com"` and what follows it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct VhostFile {
    /// The domain served (the part after `@` in its users' JIDs).
    pub domain: String,
    /// PEM certificate chain covering the domain and its components (relative paths are
    /// relative to this file's directory).
    pub certificate: Option<PathBuf>,
    /// PEM private key of that certificate.
    pub key: Option<PathBuf>,
    /// XEP-0077 in-band registration (Prosody `allow_registration`).
    pub allow_registration: bool,
    /// Bare JIDs administering this host only, besides the global `admins`.
    pub admins: Vec<String>,
    /// Services on their own domain (Prosody `Component "conference.falcot.com" "muc"`).
    pub component: Vec<ComponentFile>,
}

/// One `[[component]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct ComponentFile {
    /// The component's own domain, e.g. `conference.falcot.com`.
    pub domain: String,
    /// What it is; `muc` (XEP-0045 chat rooms) is the only kind so far.
    #[serde(rename = "type")]
    pub kind: String,
    /// Only admins create rooms (Prosody `restrict_room_creation`).
    pub restrict_room_creation: bool,
    /// Messages of history sent on join by default (Prosody `max_history_messages`).
    pub max_history_messages: usize,
}

impl Default for ComponentFile {
    fn default() -> Self {
        ComponentFile {
            domain: String::new(),
            kind: String::new(),
            restrict_room_creation: false,
            max_history_messages: 20,
        }
    }
}

/// A listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub kind: ConnKind,
}

/// An enabled virtual host as the TLS layer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vhost {
    /// The file in `vhosts-enabled` it came from (for messages).
    pub file: PathBuf,
    pub domain: String,
    /// Component domains, which share the host's certificate.
    pub components: Vec<String>,
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// Limits the connection tasks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: u32,
    /// Output bytes queued for one connection before it is closed.
    pub write_queue: usize,
}

impl ConnLimits {
    /// The limits the connection limiter applies.
    pub fn conns(&self) -> rtc_daemon::limiter::Limits {
        rtc_daemon::limiter::Limits {
            max_connections: self.max_connections,
            max_per_ip: self.max_connections_per_ip,
        }
    }
}

/// Settings bound or opened at start, under their configuration keys: a reload that
/// changes one is reported (`rtc_daemon::settings::restart_needed`), not applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Fixed {
    pub interfaces: Vec<String>,
    pub c2s_ports: Vec<u16>,
    pub c2s_direct_tls_ports: Vec<u16>,
    /// The client ports, from the three keys above.
    #[serde(skip)]
    pub listeners: Vec<Listener>,
    /// `db-url` ready for `Store::connect`.
    #[serde(rename = "db-url")]
    pub store_url: String,
    #[serde(flatten)]
    pub shell: ShellSettings,
}

/// Settings a SIGHUP applies: hosts added or removed, their certificates, the server's
/// settings and the connection limits.
#[derive(Debug, Clone)]
pub struct Live {
    /// Enabled hosts in file-name order; the first one's certificate is the default.
    pub vhosts: Vec<Vhost>,
    pub server: ServerConfig,
    pub conns: ConnLimits,
}

/// The checked configuration and everything derived from it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The main file (reloads read it again).
    pub path: PathBuf,
    pub fixed: Fixed,
    pub live: Live,
}

/// Loads and checks the main file (with `XMPPD_*` overrides) and every enabled host file.
pub fn load(path: &Path) -> Result<Resolved, ConfigError> {
    let cfg: Config = rtc_config::load(path, "XMPPD")?;
    let enabled = enabled_dir(&cfg, path);
    let mut hosts = Vec::new();
    for file in list_enabled(&enabled, path)? {
        // No environment overrides: a variable could not say which host it means.
        let vhost: VhostFile = rtc_config::load(&file, "")?;
        hosts.push((file, vhost));
    }
    resolve(cfg, path, hosts)
}

/// `vhosts-enabled` as a path (relative to the main file's directory).
fn enabled_dir(cfg: &Config, path: &Path) -> PathBuf {
    relative_to(path, &cfg.vhosts_enabled)
}

/// `p` taken relative to the directory of `file` unless absolute.
fn relative_to(file: &Path, p: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_owned(),
    }
}

/// The host files in `dir`: `*.toml`, hidden files skipped (editor and package-manager
/// leftovers such as `.x.toml.swp` or `x.toml.dpkg-old` do not match), in name order so
/// the default certificate does not depend on the directory's order.
fn list_enabled(dir: &Path, main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let main_name = main.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        ConfigError::new(
            &main_name,
            Some("vhosts-enabled"),
            format!("cannot read directory {}: {e}", dir.display()),
        )
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            ConfigError::new(
                &main_name,
                Some("vhosts-enabled"),
                format!("reading {}: {e}", dir.display()),
            )
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// Checks a loaded main file and its host files and derives the core's settings.
pub fn resolve(
    cfg: Config,
    path: &Path,
    hosts: Vec<(PathBuf, VhostFile)>,
) -> Result<Resolved, ConfigError> {
    let file = path.display().to_string();
    let mut p = Problems::new(&file);

    let admins = parse_admins(&cfg.admins, "admins", &mut p);
    if cfg.db_url.trim().is_empty() {
        p.push("db-url", "must not be empty");
    }
    if !(MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(&cfg.scram_iterations) {
        p.push(
            "scram-iterations",
            format!("must be between {MIN_SCRAM_ITERATIONS} (RFC 7677) and {MAX_SCRAM_ITERATIONS}"),
        );
    }

    let mut ips = Vec::new();
    for i in &cfg.interfaces {
        match parse_interface(i) {
            Ok(ip) if ips.contains(&ip) => p.push("interfaces", format!("`{i}` listed twice")),
            Ok(ip) => ips.push(ip),
            Err(e) => p.push("interfaces", e),
        }
    }
    if cfg.interfaces.is_empty() {
        p.push("interfaces", "needs at least one address, e.g. \"0.0.0.0\"");
    }
    let mut ports: Vec<(u16, ConnKind)> = Vec::new();
    for (key, list, kind) in [
        ("c2s-ports", &cfg.c2s_ports, ConnKind::C2sStartTls),
        (
            "c2s-direct-tls-ports",
            &cfg.c2s_direct_tls_ports,
            ConnKind::C2sDirectTls,
        ),
    ] {
        for &port in list {
            if port == 0 {
                p.push(key, "0 is not a port");
            } else if ports.iter().any(|(q, _)| *q == port) {
                p.push(key, format!("port {port} is listed twice"));
            } else {
                ports.push((port, kind));
            }
        }
    }
    if ports.is_empty() {
        p.push(
            "c2s-ports",
            "no client port: set c2s-ports and/or c2s-direct-tls-ports",
        );
    }
    let listeners = ips
        .iter()
        .flat_map(|ip| {
            ports.iter().map(|&(port, kind)| Listener {
                addr: SocketAddr::new(*ip, port),
                kind,
            })
        })
        .collect();

    if !(MIN_STANZA_SIZE..=MAX_STANZA_SIZE).contains(&cfg.c2s_stanza_size_limit) {
        p.push(
            "c2s-stanza-size-limit",
            format!(
                "must be between {MIN_STANZA_SIZE} (RFC 6120 section 13.12) and {MAX_STANZA_SIZE}"
            ),
        );
    }
    let read_rate = match parse_rate(&cfg.c2s_rate) {
        Ok(r) => r,
        Err(e) => {
            p.push("c2s-rate", e);
            0
        }
    };
    if cfg.negotiation_timeout == 0 {
        p.push("negotiation-timeout", "must be greater than 0");
    }
    if cfg.tcp_max_connections == 0 {
        p.push("tcp-max-connections", "must be greater than 0");
    }
    if cfg.vhosts_enabled.as_os_str().is_empty() {
        p.push("vhosts-enabled", "must not be empty");
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&cfg.log_level) {
        p.push("log-level", format!("`{}`: {e}", cfg.log_level));
    }
    if hosts.is_empty() {
        p.push(
            "vhosts-enabled",
            format!(
                "no virtual host is enabled: link a file from {} into {}",
                relative_to(path, &cfg.vhosts_available).display(),
                enabled_dir(&cfg, path).display()
            ),
        );
    }
    p.into_result()?;

    let mut vhosts: Vec<Vhost> = Vec::new();
    let mut core_hosts = Vec::new();
    let mut muc = Vec::new();
    // Every domain served, host or component, and the file that claims it.
    let mut claimed: Vec<(String, PathBuf)> = Vec::new();
    for (host_path, host) in hosts {
        let (vhost, core_host, services) = resolve_vhost(&host_path, host, &mut claimed)?;
        vhosts.push(vhost);
        core_hosts.push(core_host);
        muc.extend(services);
    }

    let store_url = rtc_store::resolve_userdb(cfg.db_url.trim(), path);
    let server = ServerConfig {
        vhosts: core_hosts,
        muc,
        admins,
        require_encryption: cfg.c2s_require_encryption,
        allow_plain: cfg.allow_plain,
        limits: xmpp_proto::xml::Limits {
            max_stanza_bytes: cfg.c2s_stanza_size_limit,
            ..Default::default()
        },
        scram_iterations: cfg.scram_iterations,
        sm_resume_timeout: Duration::from_secs(cfg.smacks_hibernation_time),
        offline_max: cfg.offline_max,
        c2s_rate: read_rate,
        negotiation_timeout: Duration::from_secs(cfg.negotiation_timeout),
        software_name: "xmppd".into(),
        software_version: env!("CARGO_PKG_VERSION").into(),
    };
    let conns = ConnLimits {
        max_connections: cfg.tcp_max_connections,
        max_connections_per_ip: cfg.tcp_max_connections_per_ip,
        write_queue: (4 * cfg.c2s_stanza_size_limit).max(MIN_WRITE_QUEUE),
    };
    let fixed = Fixed {
        interfaces: cfg.interfaces,
        c2s_ports: cfg.c2s_ports,
        c2s_direct_tls_ports: cfg.c2s_direct_tls_ports,
        listeners,
        store_url,
        shell: ShellSettings {
            prometheus: cfg.prometheus,
            prometheus_address: cfg.prometheus_address,
            prometheus_port: cfg.prometheus_port,
            log_level: cfg.log_level,
        },
    };
    Ok(Resolved {
        path: path.to_owned(),
        fixed,
        live: Live {
            vhosts,
            server,
            conns,
        },
    })
}

/// Checks one host file; `claimed` holds the domains of the files before it.
fn resolve_vhost(
    path: &Path,
    host: VhostFile,
    claimed: &mut Vec<(String, PathBuf)>,
) -> Result<(Vhost, VHost, Vec<MucService>), ConfigError> {
    let mut p = Problems::new(path.display().to_string());
    let mut claim = |key: &str, raw: &str, p: &mut Problems| -> Option<String> {
        let domain = match parse_domain(raw) {
            Ok(d) => d,
            Err(e) => {
                p.push(key, e);
                return None;
            }
        };
        if let Some((_, other)) = claimed.iter().find(|(d, _)| *d == domain) {
            p.push(
                key,
                format!("`{domain}` is already served by {}", other.display()),
            );
            return None;
        }
        claimed.push((domain.clone(), path.to_owned()));
        Some(domain)
    };

    let domain = if host.domain.trim().is_empty() {
        p.push("domain", "required: the domain this file serves");
        None
    } else {
        claim("domain", &host.domain, &mut p)
    };
    // Relative to the file itself, which for a link in vhosts-enabled is the real file
    // in vhosts-available (where an operator keeps `certs/falcot.com.crt` next to it).
    let real_dir = std::fs::canonicalize(path)
        .ok()
        .and_then(|real| real.parent().map(Path::to_owned))
        .or_else(|| path.parent().map(Path::to_owned))
        .unwrap_or_default();
    let file_path = |key: &str, v: &Option<PathBuf>, p: &mut Problems| match v {
        None => {
            p.push(
                key,
                "required: every host has its own certificate and key (PEM)",
            );
            None
        }
        Some(f) if f.as_os_str().is_empty() => {
            p.push(key, "must not be empty");
            None
        }
        Some(f) if f.is_relative() => Some(real_dir.join(f)),
        Some(f) => Some(f.clone()),
    };
    let certificate = file_path("certificate", &host.certificate, &mut p);
    let key = file_path("key", &host.key, &mut p);
    let admins = parse_admins(&host.admins, "admins", &mut p);

    let mut services = Vec::new();
    let mut components = Vec::new();
    for (i, c) in host.component.iter().enumerate() {
        let at = |k: &str| format!("component[{i}].{k}");
        let Some(cdomain) = (if c.domain.trim().is_empty() {
            p.push(&at("domain"), "required");
            None
        } else {
            claim(&at("domain"), &c.domain, &mut p)
        }) else {
            continue;
        };
        match c.kind.as_str() {
            "muc" => {}
            "" => p.push(&at("type"), "required: \"muc\""),
            other => p.push(
                &at("type"),
                format!("`{other}` is not a component type xmppd has (only \"muc\")"),
            ),
        }
        if c.max_history_messages > MAX_HISTORY {
            p.push(
                &at("max-history-messages"),
                format!("must be at most {MAX_HISTORY}"),
            );
        }
        components.push(cdomain.clone());
        services.push(MucService {
            domain: cdomain,
            restrict_room_creation: c.restrict_room_creation,
            max_history: c.max_history_messages,
        });
    }
    p.into_result()?;
    let (Some(domain), Some(certificate), Some(key)) = (domain, certificate, key) else {
        unreachable!("every None above pushed a problem");
    };
    let vhost = Vhost {
        file: path.to_owned(),
        domain: domain.clone(),
        components,
        certificate,
        key,
    };
    let core = VHost {
        domain,
        allow_registration: host.allow_registration,
        admins,
    };
    Ok((vhost, core, services))
}

/// Admin JIDs: bare (`user@domain`), as Prosody's `admins` are.
fn parse_admins(list: &[String], key: &str, p: &mut Problems) -> Vec<Jid> {
    let mut out = Vec::new();
    for a in list {
        match Jid::parse(a.trim()) {
            Ok(j) if j.node().is_none() || !j.is_bare() => {
                p.push(key, format!("`{a}`: an admin is a bare JID, user@domain"))
            }
            Ok(j) => out.push(j),
            Err(e) => p.push(key, format!("`{a}`: {e}")),
        }
    }
    out
}

/// A domain as a JID domainpart (RFC 7622), normalised (lower case, no trailing dot).
/// What is wrong with a domain, interface or rate value; the text goes to the operator
/// after the file and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{0}` is not a domain name")]
    NotDomain(String),
    #[error("`{0}`: {1}")]
    BadDomain(String, String),
    #[error("`{0}` is not an IP address (xmppd binds addresses, not names)")]
    NotBindable(String),
    #[error("`{0}` is not a rate such as \"10kb/s\" (or \"unlimited\")")]
    NotRate(String),
    #[error("`{0}`: a rate of 0 would stop every client; use \"unlimited\" for no limit")]
    ZeroRate(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

fn parse_domain(raw: &str) -> Result<String, ValueError> {
    let raw = raw.trim();
    if raw.contains(['@', '/']) {
        return Err(ValueError::NotDomain(raw.into()));
    }
    Jid::from_parts(None, raw, None)
        .map(|j| j.domain().to_string())
        .map_err(|e| ValueError::BadDomain(raw.into(), e.to_string()))
}

/// An `interfaces` entry: an IP address, or `*` for every IPv4 address (Prosody's
/// meaning; `::` is every IPv6 address).
fn parse_interface(s: &str) -> Result<IpAddr, ValueError> {
    match s.trim() {
        "*" => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        t => t.parse().map_err(|_| ValueError::NotBindable(s.into())),
    }
}

/// `c2s-rate`: `<n> <unit>/s` with unit `b`, `kb` or `mb` (K = 1024, M = 1024², any case,
/// `kib`/`mib` too), or `unlimited` (0). Bytes per second.
pub fn parse_rate(s: &str) -> Result<u32, ValueError> {
    let t = s.trim().to_ascii_lowercase();
    if t == "unlimited" {
        return Ok(0);
    }
    let bad = || ValueError::NotRate(s.into());
    let per_second = t.strip_suffix("/s").ok_or_else(bad)?;
    let digits = per_second
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(per_second.len());
    let (n, unit) = per_second.split_at(digits);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "b" => 1,
        "kb" | "kib" => 1024,
        "mb" | "mib" => 1024 * 1024,
        _ => return Err(bad()),
    };
    match n.checked_mul(mult).map(u32::try_from) {
        Some(Ok(0)) => Err(ValueError::ZeroRate(s.into())),
        Some(Ok(v)) => Ok(v),
        _ => Err(ValueError::TooLarge(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_like_prosody() {
        assert_eq!(parse_rate("10kb/s"), Ok(10 * 1024));
        assert_eq!(parse_rate("10 KB/s"), Ok(10 * 1024));
        assert_eq!(parse_rate("512b/s"), Ok(512));
        assert_eq!(parse_rate("2MiB/s"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_rate("unlimited"), Ok(0));
        for bad in [
            "10kb",
            "kb/s",
            "10 xb/s",
            "0kb/s",
            "-1kb/s",
            "99999999mb/s",
            "",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn interfaces() {
        assert_eq!(parse_interface("*"), Ok(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(parse_interface("::"), Ok("::".parse().unwrap()));
        assert!(parse_interface("localhost").is_err());
    }

    fn main_cfg(toml: &str) -> Result<Config, ConfigError> {
        rtc_config::load_str(toml, "/etc/rtc/xmppd.toml", &[], "XMPPD")
    }

    fn host(toml: &str) -> VhostFile {
        rtc_config::load_str(toml, "h.toml", &[], "").unwrap()
    }

    const FALCOT: &str = "domain = \"falcot.com\"\ncertificate = \"certs/falcot.crt\"\n\
                          key = \"/k.pem\"\n[[component]]\ndomain = \"conference.falcot.com\"\n\
                          type = \"muc\"\n";

    #[test]
    fn unknown_keys_are_refused_in_both_kinds_of_file() {
        let e = main_cfg("c2s-port = [5222]").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("c2s-port"), "{e}");
        let e = rtc_config::load_str::<VhostFile>(
            "domain = \"a.org\"\n[[component]]\ndomain = \"c.a.org\"\ntyp = \"muc\"\n",
            "h.toml",
            &[],
            "",
        )
        .unwrap_err();
        assert!(e.to_string().contains("typ"), "{e}");
        assert_eq!(e.file, "h.toml");
    }

    #[test]
    fn env_overrides_apply_to_the_main_file() {
        let cfg: Config = rtc_config::load_str(
            "",
            "x.toml",
            &[
                ("XMPPD_C2S_PORTS".into(), "[5322]".into()),
                ("XMPPD_C2S_RATE".into(), "1mb/s".into()),
            ],
            "XMPPD",
        )
        .unwrap();
        assert_eq!(cfg.c2s_ports, vec![5322]);
        assert_eq!(cfg.c2s_rate, "1mb/s");
    }

    #[test]
    fn main_file_checks_name_the_key_without_touching_the_disk() {
        // `resolve` with hosts given: no directory is read.
        let hosts = || {
            vec![(
                PathBuf::from("/etc/rtc/vhosts-enabled/f.toml"),
                host(FALCOT),
            )]
        };
        let path = Path::new("/etc/rtc/xmppd.toml");
        for (toml, key) in [
            ("c2s-rate = \"fast\"", "c2s-rate"),
            (
                "c2s-ports = [5222]\nc2s-direct-tls-ports = [5222]",
                "c2s-direct-tls-ports",
            ),
            ("c2s-ports = []\nc2s-direct-tls-ports = []", "c2s-ports"),
            ("interfaces = [\"localhost\"]", "interfaces"),
            ("c2s-stanza-size-limit = 100", "c2s-stanza-size-limit"),
            ("scram-iterations = 1", "scram-iterations"),
            ("negotiation-timeout = 0", "negotiation-timeout"),
        ] {
            let e = resolve(main_cfg(toml).unwrap(), path, hosts()).unwrap_err();
            assert_eq!(e.file, "/etc/rtc/xmppd.toml");
            assert_eq!(e.key.as_deref(), Some(key), "{toml}: {e}");
        }
        let e = resolve(main_cfg("").unwrap(), path, Vec::new()).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("vhosts-enabled"), "{e}");
        assert!(e.to_string().contains("/etc/rtc/vhosts-available"), "{e}");
    }

    #[test]
    fn hosts_resolve_with_paths_relative_to_their_file() {
        let r = resolve(
            main_cfg("interfaces = [\"127.0.0.1\", \"::1\"]\nc2s-rate = \"20kb/s\"").unwrap(),
            Path::new("/etc/rtc/xmppd.toml"),
            vec![(
                PathBuf::from("/nonexistent/enabled/falcot.toml"),
                host(FALCOT),
            )],
        )
        .unwrap();
        assert_eq!(r.fixed.store_url, "/etc/rtc/xmppd.sqlite");
        assert_eq!(r.fixed.listeners.len(), 4);
        assert_eq!(r.fixed.listeners[1].kind, ConnKind::C2sDirectTls);
        assert_eq!(r.fixed.listeners[1].addr, "127.0.0.1:5223".parse().unwrap());
        assert_eq!(r.live.server.c2s_rate, 20 * 1024);
        assert_eq!(r.live.server.limits.max_stanza_bytes, 262_144);
        assert_eq!(r.live.server.sm_resume_timeout, Duration::from_secs(600));
        let v = &r.live.vhosts[0];
        assert_eq!(v.domain, "falcot.com");
        assert_eq!(v.components, vec!["conference.falcot.com"]);
        assert_eq!(
            v.certificate,
            Path::new("/nonexistent/enabled/certs/falcot.crt")
        );
        assert_eq!(v.key, Path::new("/k.pem"));
        assert_eq!(r.live.server.muc[0].max_history, 20);
        assert!(!r.live.server.vhosts[0].allow_registration);
    }

    #[test]
    fn host_file_errors_name_that_file_and_key() {
        let path = Path::new("/etc/rtc/xmppd.toml");
        let f = PathBuf::from("/x/enabled/falcot.toml");
        let g = PathBuf::from("/x/enabled/other.toml");
        let e = resolve(
            main_cfg("").unwrap(),
            path,
            vec![(f.clone(), host("domain = \"falcot.com\"\nkey = \"k\""))],
        )
        .unwrap_err();
        assert_eq!(e.file, "/x/enabled/falcot.toml");
        assert_eq!(e.key.as_deref(), Some("certificate"), "{e}");

        let e = resolve(
            main_cfg("").unwrap(),
            path,
            vec![
                (f.clone(), host(FALCOT)),
                (
                    g,
                    host("domain = \"Falcot.COM\"\ncertificate = \"c\"\nkey = \"k\""),
                ),
            ],
        )
        .unwrap_err();
        assert_eq!(e.file, "/x/enabled/other.toml");
        assert_eq!(e.key.as_deref(), Some("domain"), "{e}");
        assert!(e.to_string().contains("falcot.toml"), "{e}");

        let e = resolve(
            main_cfg("").unwrap(),
            path,
            vec![(f, host(&FALCOT.replace("\"muc\"", "\"pubsub\"")))],
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("component[0].type"), "{e}");
    }
}
