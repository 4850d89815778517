//! The part of `sipd.toml` the admin CLI needs, read leniently.
//!
//! As with `turnd.toml` ([`crate::settings`]), sipd parses its file strictly and
//! `sipd --check-config` is the judge of it; rtc-admin reads only the keys below and
//! ignores the rest, so the two never have to change in lockstep.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

/// The file name of sipd's configuration inside a config directory.
pub const SIPD_CONFIG_FILE: &str = "sipd.toml";

/// sipd's `/metrics` port when `prometheus-port` is not set.
pub const DEFAULT_SIPD_PROMETHEUS_PORT: u16 = 9642;

/// The keys of `sipd.toml` that rtc-admin reads, kebab-case as sipd names them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SipSettings {
    /// Served domains; the first is the default domain and the digest realm.
    pub domain: Vec<String>,
    /// Database URL, or a SQLite file path relative to the config file's directory.
    pub db_url: Option<String>,
    /// Listening sockets, `proto:address:port` (`udp:127.0.0.1:5060`, `tls:[::1]:5061`).
    pub listen: Vec<String>,
    pub prometheus: bool,
    pub prometheus_address: Option<IpAddr>,
    pub prometheus_port: Option<u16>,
}

/// A loaded `sipd.toml` and the path it came from (errors and relative paths need it).
#[derive(Debug, Clone)]
pub struct SipConfig {
    pub path: PathBuf,
    pub settings: SipSettings,
}

impl SipConfig {
    /// Reads `<config_dir>/sipd.toml`.
    pub fn load_from_dir(config_dir: &Path) -> anyhow::Result<SipConfig> {
        SipConfig::load(&config_dir.join(SIPD_CONFIG_FILE))
    }

    /// Reads one file; every error names it.
    pub fn load(path: &Path) -> anyhow::Result<SipConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow!(
                "{}: cannot read the SIP configuration: {e} (use --config-dir or RTC_CONFIG_DIR \
                 to point at the directory holding {SIPD_CONFIG_FILE})",
                path.display()
            )
        })?;
        let settings: SipSettings =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        Ok(SipConfig {
            path: path.to_owned(),
            settings,
        })
    }

    /// The database URL sipd would open: `db-url`, a bare path taken as SQLite relative to
    /// the config file's directory (as turnd's `userdb`).
    pub fn require_database_url(&self) -> anyhow::Result<String> {
        match self.settings.db_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => Ok(rtc_store::resolve_userdb(url, &self.path)),
            _ => bail!(
                "{}: key `db-url` is not set; pass -b/--db-url",
                self.path.display()
            ),
        }
    }

    /// The first `domain`: default domain of user names and the digest realm.
    pub fn require_default_domain(&self) -> anyhow::Result<String> {
        match self.settings.domain.first().map(|d| d.trim()) {
            Some(d) if !d.is_empty() => Ok(d.to_ascii_lowercase()),
            _ => bail!(
                "{}: key `domain` is not set (e.g. domain = [\"sip.example.org\"])",
                self.path.display()
            ),
        }
    }

    /// Whether `host` is one of the served domains (case-insensitively, RFC 3261 §19.1.4).
    pub fn serves(&self, host: &str) -> bool {
        self.settings
            .domain
            .iter()
            .any(|d| d.trim().eq_ignore_ascii_case(host))
    }

    /// The first `udp:` listening address, with a wildcard address replaced by loopback
    /// (a request sent to 0.0.0.0 goes nowhere useful).
    pub fn udp_listen_address(&self) -> anyhow::Result<Option<SocketAddr>> {
        for entry in &self.settings.listen {
            let (proto, addr) = entry.split_once(':').ok_or_else(|| {
                anyhow!(
                    "{}: `listen` entry {entry:?} is not proto:address:port",
                    self.path.display()
                )
            })?;
            if !proto.eq_ignore_ascii_case("udp") {
                continue;
            }
            let mut addr: SocketAddr = addr
                .parse()
                .map_err(|e| anyhow!("{}: `listen` entry {entry:?}: {e}", self.path.display()))?;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                    IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                });
            }
            return Ok(Some(addr));
        }
        Ok(None)
    }

    /// The `/metrics` URL's address, or an error when the endpoint is off.
    pub fn metrics_address(&self) -> anyhow::Result<SocketAddr> {
        let s = &self.settings;
        if !s.prometheus {
            bail!(
                "{}: `prometheus` is not enabled, so sipd serves no metrics (set prometheus = true)",
                self.path.display()
            );
        }
        let ip = match s.prometheus_address {
            Some(ip) if ip.is_unspecified() && ip.is_ipv4() => IpAddr::from([127, 0, 0, 1]),
            Some(ip) if ip.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            Some(ip) => ip,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        Ok(SocketAddr::new(
            ip,
            s.prometheus_port.unwrap_or(DEFAULT_SIPD_PROMETHEUS_PORT),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> SipConfig {
        SipConfig {
            path: PathBuf::from("/etc/rtc/sipd.toml"),
            settings: toml::from_str(text).unwrap(),
        }
    }

    #[test]
    fn database_and_domain() {
        let c = config(
            "domain = [\"SIP.example.org\", \"other.org\"]\ndb-url = \"sipd.sqlite\"\nunknown-key = 1",
        );
        assert_eq!(c.require_database_url().unwrap(), "/etc/rtc/sipd.sqlite");
        assert_eq!(c.require_default_domain().unwrap(), "sip.example.org");
        assert!(c.serves("OTHER.org"));
        assert!(!c.serves("example.org"));
        let c = config("db-url = \"postgres://u@h/sip\"");
        assert_eq!(c.require_database_url().unwrap(), "postgres://u@h/sip");
        let e = c.require_default_domain().unwrap_err().to_string();
        assert!(
            e.contains("/etc/rtc/sipd.toml") && e.contains("`domain`"),
            "{e}"
        );
        let e = config("").require_database_url().unwrap_err().to_string();
        assert!(e.contains("`db-url`"), "{e}");
    }

    #[test]
    fn listen_and_metrics() {
        let c = config(
            "listen = [\"tcp:127.0.0.1:5060\", \"udp:0.0.0.0:5070\", \"udp:192.0.2.1:5060\"]\n\
             prometheus = true\nprometheus-port = 9700",
        );
        assert_eq!(
            c.udp_listen_address().unwrap(),
            Some("127.0.0.1:5070".parse().unwrap())
        );
        assert_eq!(
            c.metrics_address().unwrap(),
            "127.0.0.1:9700".parse().unwrap()
        );
        let c = config("listen = [\"tls:[::1]:5061\", \"udp:[::]:5060\"]");
        assert_eq!(
            c.udp_listen_address().unwrap(),
            Some("[::1]:5060".parse().unwrap())
        );
        assert!(c.metrics_address().is_err());
        assert!(config("listen = [\"udp\"]").udp_listen_address().is_err());
        assert_eq!(config("").udp_listen_address().unwrap(), None);
    }
}
