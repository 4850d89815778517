//! `xmppd.toml` and the virtual-host files, as the admin CLI reads them.
//!
//! Layout (Debian's Prosody, in TOML): the main file names two directories relative to
//! itself, `vhosts-available` (Prosody's `conf.avail/`) and `vhosts-enabled`
//! (`conf.d/`); every `*.toml` in the enabled one, a symlink into the available one or a
//! copy, is one `VirtualHost` with its certificate, key and `[[component]]` tables
//! (`Component "conference.falcot.com" "muc"`).
//!
//! Commands read these files leniently (unknown keys ignored), as `sip/config.rs` does for
//! sipd.toml: xmppd parses them strictly and `xmppd --check-config` stays the judge.
//! `rtc-admin xmpp check` is the one place that looks for unknown keys; it uses the key
//! lists below, which a test keeps equal to the keys of the shipped example files.
//! A key that is absent means xmppd's default, repeated here.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

/// The file name of xmppd's configuration inside a config directory.
pub const XMPPD_CONFIG_FILE: &str = "xmppd.toml";

/// xmppd's defaults for the keys below.
pub const DEFAULT_DB_URL: &str = "xmppd.sqlite";
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 10_000;
pub const DEFAULT_C2S_PORT: u16 = 5222;
pub const DEFAULT_C2S_DIRECT_TLS_PORT: u16 = 5223;
pub const DEFAULT_VHOSTS_AVAILABLE: &str = "vhosts-available";
pub const DEFAULT_VHOSTS_ENABLED: &str = "vhosts-enabled";
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9092;
/// Where `cert import` puts certificates: next to the config file, as Prosody's
/// `certificates = "certs"` default.
pub const CERTS_DIR: &str = "certs";

/// Every key of the main file xmppd knows.
pub const MAIN_KEYS: &[&str] = &[
    "admins",
    "db-url",
    "scram-iterations",
    "c2s-ports",
    "c2s-direct-tls-ports",
    "interfaces",
    "c2s-require-encryption",
    "allow-plain",
    "c2s-stanza-size-limit",
    "c2s-rate",
    "smacks-hibernation-time",
    "offline-max",
    "negotiation-timeout",
    "vhosts-available",
    "vhosts-enabled",
    "prometheus",
    "prometheus-address",
    "prometheus-port",
    "log-level",
    "tcp-max-connections",
    "tcp-max-connections-per-ip",
];

/// Every key of a virtual-host file.
pub const HOST_KEYS: &[&str] = &[
    "domain",
    "certificate",
    "key",
    "allow-registration",
    "admins",
    "component",
];

/// Every key of a `[[component]]` table.
pub const COMPONENT_KEYS: &[&str] = &[
    "domain",
    "type",
    "restrict-room-creation",
    "max-history-messages",
];

/// The keys of `xmppd.toml` that rtc-admin reads, kebab-case as xmppd names them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct XmppSettings {
    pub admins: Vec<String>,
    /// Database URL, or a SQLite file path relative to the config file's directory.
    pub db_url: Option<String>,
    pub scram_iterations: Option<u32>,
    pub c2s_ports: Option<Vec<u16>>,
    pub c2s_direct_tls_ports: Option<Vec<u16>>,
    /// Addresses xmppd listens on; `*` is every IPv4 address, as in Prosody.
    pub interfaces: Option<Vec<String>>,
    pub vhosts_available: Option<PathBuf>,
    pub vhosts_enabled: Option<PathBuf>,
    pub prometheus: bool,
    pub prometheus_address: Option<IpAddr>,
    pub prometheus_port: Option<u16>,
}

/// A loaded `xmppd.toml` and the path it came from (errors and relative paths need it).
#[derive(Debug, Clone)]
pub struct XmppConfig {
    pub path: PathBuf,
    pub settings: XmppSettings,
}

/// The keys of a virtual-host file that rtc-admin reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct HostSettings {
    pub domain: String,
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub component: Vec<ComponentSettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ComponentSettings {
    pub domain: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One virtual-host file.
#[derive(Debug, Clone)]
pub struct HostFile {
    /// Where it was found (in `vhosts-enabled` or `vhosts-available`).
    pub path: PathBuf,
    pub settings: HostSettings,
}

impl HostFile {
    /// Reads one host file leniently; errors name it.
    pub fn load(path: &Path) -> anyhow::Result<HostFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("{}: cannot read: {e}", path.display()))?;
        let settings: HostSettings =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        Ok(HostFile {
            path: path.to_owned(),
            settings,
        })
    }

    /// The served domain, normalised as xmppd does (lower case, no trailing dot).
    pub fn domain(&self) -> String {
        normalize_domain(&self.settings.domain)
    }

    /// Component domains.
    pub fn components(&self) -> Vec<String> {
        self.settings
            .component
            .iter()
            .map(|c| normalize_domain(&c.domain))
            .filter(|d| !d.is_empty())
            .collect()
    }

    /// The directory relative paths in this file are relative to: the real file's, so
    /// that for a link in `vhosts-enabled` it is `vhosts-available` (xmppd does the same).
    pub fn base_dir(&self) -> PathBuf {
        std::fs::canonicalize(&self.path)
            .ok()
            .and_then(|real| real.parent().map(Path::to_owned))
            .or_else(|| self.path.parent().map(Path::to_owned))
            .unwrap_or_default()
    }

    /// `certificate` as a path (relative ones resolved), if set.
    pub fn certificate(&self) -> Option<PathBuf> {
        self.resolve(self.settings.certificate.as_deref())
    }

    /// `key` as a path (relative ones resolved), if set.
    pub fn key(&self) -> Option<PathBuf> {
        self.resolve(self.settings.key.as_deref())
    }

    fn resolve(&self, p: Option<&Path>) -> Option<PathBuf> {
        match p {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) if p.is_relative() => Some(lexically_normal(&self.base_dir().join(p))),
            Some(p) => Some(p.to_owned()),
            None => None,
        }
    }
}

/// `a/b/../c` as `a/c`, without touching the file system: the base is a real directory
/// (canonical), so what follows reads as the operator wrote it (`../certs/x.crt` from
/// `vhosts-available` shows as `<config-dir>/certs/x.crt`, links not resolved).
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Lower case without a trailing dot: how xmppd compares domains (RFC 7622 §3.2).
pub fn normalize_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_lowercase()
}

/// The host files of a directory: `*.toml`, hidden files skipped, in name order (as xmppd
/// lists `vhosts-enabled`).
pub fn list_host_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
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

impl XmppConfig {
    /// Reads `<config_dir>/xmppd.toml`.
    pub fn load_from_dir(config_dir: &Path) -> anyhow::Result<XmppConfig> {
        XmppConfig::load(&config_dir.join(XMPPD_CONFIG_FILE))
    }

    /// Reads one file; every error names it.
    pub fn load(path: &Path) -> anyhow::Result<XmppConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow!(
                "{}: cannot read the XMPP configuration: {e} (use --config-dir or \
                 RTC_CONFIG_DIR to point at the directory holding {XMPPD_CONFIG_FILE})",
                path.display()
            )
        })?;
        let settings: XmppSettings =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        Ok(XmppConfig {
            path: path.to_owned(),
            settings,
        })
    }

    /// The directory of the config file.
    pub fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    fn relative(&self, p: &Path) -> PathBuf {
        if p.is_relative() {
            self.dir().join(p)
        } else {
            p.to_owned()
        }
    }

    /// The database URL xmppd would open: `db-url` (default `xmppd.sqlite`), a bare path
    /// taken as SQLite relative to the config file's directory.
    pub fn require_database_url(&self) -> anyhow::Result<String> {
        let url = self
            .settings
            .db_url
            .as_deref()
            .unwrap_or(DEFAULT_DB_URL)
            .trim();
        if url.is_empty() {
            bail!(
                "{}: key `db-url` is empty; set it or pass -b/--db-url",
                self.path.display()
            );
        }
        Ok(rtc_store::resolve_userdb(url, &self.path))
    }

    /// PBKDF2 iterations for new passwords (`scram-iterations`).
    pub fn scram_iterations(&self) -> u32 {
        self.settings
            .scram_iterations
            .unwrap_or(DEFAULT_SCRAM_ITERATIONS)
    }

    /// `vhosts-available` as a path.
    pub fn available_dir(&self) -> PathBuf {
        self.relative(
            self.settings
                .vhosts_available
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_VHOSTS_AVAILABLE)),
        )
    }

    /// `vhosts-enabled` as a path.
    pub fn enabled_dir(&self) -> PathBuf {
        self.relative(
            self.settings
                .vhosts_enabled
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_VHOSTS_ENABLED)),
        )
    }

    /// Where `cert import` writes: `<config-dir>/certs`.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir().join(CERTS_DIR)
    }

    /// Every enabled host file, each read on its own (one broken file does not hide the
    /// others).
    pub fn enabled_hosts(&self) -> anyhow::Result<Vec<anyhow::Result<HostFile>>> {
        let dir = self.enabled_dir();
        let files = list_host_files(&dir).map_err(|e| {
            anyhow!(
                "{}: `vhosts-enabled`: cannot read directory {}: {e}",
                self.path.display(),
                dir.display()
            )
        })?;
        Ok(files.iter().map(|f| HostFile::load(f)).collect())
    }

    /// The enabled host file serving `domain`, if any.
    pub fn enabled_host(&self, domain: &str) -> anyhow::Result<Option<HostFile>> {
        for host in self.enabled_hosts()? {
            match host {
                Ok(h) if h.domain() == domain => return Ok(Some(h)),
                Ok(_) => {}
                // A broken file named after the domain is most likely its own.
                Err(e) if e.to_string().contains(&format!("{domain}.toml")) => return Err(e),
                Err(_) => {}
            }
        }
        Ok(None)
    }

    /// The host file for `domain` to edit: `vhosts-available/<domain>.toml`, else the
    /// enabled or available file whose `domain` it is.
    pub fn host_file_for(&self, domain: &str) -> Option<HostFile> {
        let named = self.available_dir().join(format!("{domain}.toml"));
        if let Ok(h) = HostFile::load(&named) {
            if h.domain() == domain {
                return Some(h);
            }
        }
        for dir in [self.enabled_dir(), self.available_dir()] {
            for file in list_host_files(&dir).unwrap_or_default() {
                if let Ok(h) = HostFile::load(&file) {
                    if h.domain() == domain {
                        return Some(h);
                    }
                }
            }
        }
        None
    }

    /// Where a client connects: the first interface (a wildcard replaced by loopback) and
    /// the first STARTTLS port, else the first direct-TLS port (`true` = TLS).
    pub fn c2s_address(&self) -> anyhow::Result<Option<(SocketAddr, bool)>> {
        let s = &self.settings;
        let interface = s
            .interfaces
            .as_ref()
            .and_then(|i| i.first().cloned())
            .unwrap_or_else(|| "0.0.0.0".to_owned());
        let ip: IpAddr = match interface.trim() {
            "*" => IpAddr::from([127, 0, 0, 1]),
            i => i.parse().map_err(|_| {
                anyhow!(
                    "{}: `interfaces` entry {i:?} is not an IP address",
                    self.path.display()
                )
            })?,
        };
        let ip = if ip.is_unspecified() {
            match ip {
                IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            }
        } else {
            ip
        };
        let starttls = s.c2s_ports.clone().unwrap_or(vec![DEFAULT_C2S_PORT]);
        let direct = s
            .c2s_direct_tls_ports
            .clone()
            .unwrap_or(vec![DEFAULT_C2S_DIRECT_TLS_PORT]);
        Ok(match (starttls.first(), direct.first()) {
            (Some(&p), _) => Some((SocketAddr::new(ip, p), false)),
            (None, Some(&p)) => Some((SocketAddr::new(ip, p), true)),
            (None, None) => None,
        })
    }

    /// The `/metrics` address when the Prometheus endpoint is on.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        let s = &self.settings;
        if !s.prometheus {
            return None;
        }
        let ip = match s.prometheus_address {
            Some(ip) if ip.is_unspecified() && ip.is_ipv4() => IpAddr::from([127, 0, 0, 1]),
            Some(ip) if ip.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            Some(ip) => ip,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        Some(SocketAddr::new(
            ip,
            s.prometheus_port.unwrap_or(DEFAULT_PROMETHEUS_PORT),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> XmppConfig {
        XmppConfig {
            path: PathBuf::from("/etc/rtc/xmppd.toml"),
            settings: toml::from_str(text).unwrap(),
        }
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = config("unknown-key = 1");
        assert_eq!(c.require_database_url().unwrap(), "/etc/rtc/xmppd.sqlite");
        assert_eq!(c.scram_iterations(), 10_000);
        assert_eq!(c.available_dir(), Path::new("/etc/rtc/vhosts-available"));
        assert_eq!(c.enabled_dir(), Path::new("/etc/rtc/vhosts-enabled"));
        assert_eq!(c.certs_dir(), Path::new("/etc/rtc/certs"));
        assert_eq!(
            c.c2s_address().unwrap(),
            Some(("127.0.0.1:5222".parse().unwrap(), false))
        );
        assert_eq!(c.metrics_address(), None);
        let c = config(
            "db-url = \"postgres://u@h/x\"\nscram-iterations = 4096\nvhosts-enabled = \"/srv/on\"\n\
             interfaces = [\"::\"]\nc2s-ports = []\nc2s-direct-tls-ports = [5300]\n\
             prometheus = true\nprometheus-port = 9700",
        );
        assert_eq!(c.require_database_url().unwrap(), "postgres://u@h/x");
        assert_eq!(c.scram_iterations(), 4096);
        assert_eq!(c.enabled_dir(), Path::new("/srv/on"));
        assert_eq!(
            c.c2s_address().unwrap(),
            Some(("[::1]:5300".parse().unwrap(), true))
        );
        assert_eq!(c.metrics_address(), Some("127.0.0.1:9700".parse().unwrap()));
        let e = config("db-url = \" \"").require_database_url().unwrap_err();
        assert!(e.to_string().contains("`db-url`"), "{e}");
        assert!(config("interfaces = [\"x\"]").c2s_address().is_err());
        assert_eq!(
            config("interfaces = [\"*\"]").c2s_address().unwrap(),
            Some(("127.0.0.1:5222".parse().unwrap(), false))
        );
    }

    /// The key lists are xmppd's: every key its shipped examples set or document
    /// (`#key = value`) is known, and every known key is documented there.
    #[test]
    fn key_lists_match_the_shipped_examples() {
        fn keys(text: &str, table: Option<&str>) -> Vec<String> {
            let mut out = Vec::new();
            let mut current: Option<String> = None;
            for line in text.lines() {
                let line = line.trim_start_matches('#').trim();
                if let Some(t) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
                    current = Some(t.to_owned());
                    continue;
                }
                if current.as_deref() != table {
                    continue;
                }
                if let Some((k, _)) = line.split_once(" = ") {
                    if k.chars()
                        .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit())
                    {
                        out.push(k.to_owned());
                    }
                }
            }
            out.sort();
            out.dedup();
            out
        }
        let sorted = |list: &[&str]| {
            let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        let main = include_str!("../../../xmppd/xmppd.toml");
        assert_eq!(keys(main, None), sorted(MAIN_KEYS));
        let host = include_str!("../../../xmppd/vhosts-available/example.org.toml");
        let mut host_keys = keys(host, None);
        host_keys.push("component".to_owned());
        host_keys.sort();
        assert_eq!(host_keys, sorted(HOST_KEYS));
        assert_eq!(keys(host, Some("component")), sorted(COMPONENT_KEYS));
        // And they read as rtc-admin reads them.
        let c = config(main);
        assert_eq!(c.require_database_url().unwrap(), "/etc/rtc/xmppd.sqlite");
        let h: HostSettings = toml::from_str(host).unwrap();
        assert_eq!(h.domain, "example.org");
        assert_eq!(h.component[0].kind, "muc");
    }
}
