//! The part of `sipd.toml` the admin CLI needs, read leniently.
//!
//! As with `turnd.toml` ([`crate::settings`]), sipd parses its file strictly and
//! `sipd --check-config` is the judge of it; rtc-admin reads only the keys below and
//! ignores the rest, so the two never have to change in lockstep. A key that is absent
//! means sipd's default, repeated here: `db-url = "sipd.sqlite"`, `listen =
//! ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]`, metrics on 127.0.0.1:9091.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

/// The file name of sipd's configuration inside a config directory.
pub const SIPD_CONFIG_FILE: &str = "sipd.toml";

/// sipd's defaults for the keys below.
pub const DEFAULT_DB_URL: &str = "sipd.sqlite";
pub const DEFAULT_LISTEN: [&str; 2] = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"];
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9091;

/// The keys of `sipd.toml` that rtc-admin reads, kebab-case as sipd names them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SipSettings {
    /// Served domains; the first is the default domain and the digest realm.
    pub domain: Vec<String>,
    /// Database URL, or a SQLite file path relative to the config file's directory.
    pub db_url: Option<String>,
    /// Listening sockets in Kamailio's syntax, `proto:address[:port] [advertise HOST]`
    /// (`udp:127.0.0.1:5060`, `tls:[::1]`); `None` = sipd's default.
    pub listen: Option<Vec<String>>,
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

    /// The database URL sipd would open: `db-url` (default `sipd.sqlite`), a bare path
    /// taken as SQLite relative to the config file's directory (as turnd's `userdb`).
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
        let default: Vec<String> = DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect();
        for entry in self.settings.listen.as_ref().unwrap_or(&default) {
            let bad =
                |why: &str| anyhow!("{}: `listen` entry {entry:?}: {why}", self.path.display());
            // `proto:address[:port]`, then an optional `advertise HOST[:PORT]`.
            let socket = entry.split_whitespace().next().unwrap_or_default();
            let (proto, rest) = socket
                .split_once(':')
                .ok_or_else(|| bad("expected proto:address[:port]"))?;
            if !proto.eq_ignore_ascii_case("udp") {
                continue;
            }
            let (ip, port) = match rest.strip_prefix('[') {
                Some(v6) => match v6.split_once(']') {
                    Some((ip, "")) => (ip, None),
                    Some((ip, port)) => (ip, Some(port.strip_prefix(':').unwrap_or(port))),
                    None => return Err(bad("unclosed [")),
                },
                None => match rest.split_once(':') {
                    Some((ip, port)) => (ip, Some(port)),
                    None => (rest, None),
                },
            };
            let ip: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
            let port = match port {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None => 5060, // RFC 3261 §19.1.2
            };
            let mut addr = SocketAddr::new(ip, port);
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
            s.prometheus_port.unwrap_or(DEFAULT_PROMETHEUS_PORT),
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
        assert_eq!(
            config("").require_database_url().unwrap(),
            "/etc/rtc/sipd.sqlite"
        );
        let e = config("db-url = \" \"").require_database_url().unwrap_err();
        assert!(e.to_string().contains("`db-url`"), "{e}");
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
        let c = config("listen = [\"tls:[::1]:5061\", \"udp:[::]\"]");
        assert_eq!(
            c.udp_listen_address().unwrap(),
            Some("[::1]:5060".parse().unwrap())
        );
        assert!(c.metrics_address().is_err());
        let c = config("listen = [\"udp:192.0.2.1 advertise sip.example.org:5080\"]");
        assert_eq!(
            c.udp_listen_address().unwrap(),
            Some("192.0.2.1:5060".parse().unwrap())
        );
        assert!(config("listen = [\"udp\"]").udp_listen_address().is_err());
        assert!(config("listen = [\"udp:host.example\"]")
            .udp_listen_address()
            .is_err());
        let tcp_only = config("listen = [\"tcp:127.0.0.1\"]");
        assert_eq!(tcp_only.udp_listen_address().unwrap(), None);
        // sipd's defaults when the keys are absent.
        let c = config("prometheus = true");
        assert_eq!(
            c.udp_listen_address().unwrap(),
            Some("127.0.0.1:5060".parse().unwrap())
        );
        assert_eq!(
            c.metrics_address().unwrap(),
            "127.0.0.1:9091".parse().unwrap()
        );
    }

    /// sipd's shipped example reads as sipd reads it, and the defaults it documents
    /// (commented-out `#key = value` lines) are the ones repeated here.
    #[test]
    fn shipped_example_and_its_defaults() {
        let shipped = include_str!("../../../sipd/sipd.toml");
        let c = config(shipped);
        assert_eq!(c.require_default_domain().unwrap(), "sip.example.org");
        let documented = |key: &str| -> SipConfig {
            let line = shipped
                .lines()
                .find_map(|l| {
                    l.strip_prefix('#')
                        .filter(|l| l.starts_with(&format!("{key} = ")))
                })
                .unwrap_or_else(|| panic!("sipd.toml documents no default for {key}"));
            config(&format!("{line}\nprometheus = true"))
        };
        for c in [c.clone(), documented("db-url")] {
            assert_eq!(c.require_database_url().unwrap(), "/etc/rtc/sipd.sqlite");
        }
        for c in [c.clone(), documented("listen")] {
            assert_eq!(
                c.udp_listen_address().unwrap(),
                Some("127.0.0.1:5060".parse().unwrap())
            );
        }
        for key in ["prometheus-address", "prometheus-port"] {
            assert_eq!(
                documented(key).metrics_address().unwrap(),
                "127.0.0.1:9091".parse().unwrap()
            );
        }
    }
}
