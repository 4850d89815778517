//! The part of `turnd.toml` the admin CLI needs, read leniently.
//!
//! turnd parses its file strictly (unknown keys are errors); doing the same here would mean
//! a second copy of its whole config type that must change in lockstep. The admin tool only
//! needs the realm, where the database is, the REST secrets and where the daemon listens,
//! so it reads those keys and ignores the rest. `turnd --check-config` stays the judge of
//! whether the file is valid.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use serde::Deserialize;

/// turnd's defaults for the keys below (RFC 8656 §4 ports, turnd's metrics port).
pub const DEFAULT_LISTENING_PORT: u16 = 3478;
pub const DEFAULT_TLS_LISTENING_PORT: u16 = 5349;
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9641;

/// The file name of turnd's configuration inside a config directory.
pub const TURND_CONFIG_FILE: &str = "turnd.toml";

/// The keys of `turnd.toml` that rtc-admin reads; coturn names, kebab-case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct TurnSettings {
    pub realm: String,
    pub userdb: Option<String>,
    pub psql_userdb: Option<String>,
    pub mysql_userdb: Option<String>,
    pub static_auth_secret: Vec<String>,
    pub listening_ip: Vec<IpAddr>,
    pub listening_port: Option<u16>,
    pub tls_listening_port: Option<u16>,
    pub cert: Option<PathBuf>,
    pub no_udp: bool,
    pub no_tcp: bool,
    pub no_tls: bool,
    pub prometheus: bool,
    pub prometheus_address: Option<IpAddr>,
    pub prometheus_port: Option<u16>,
}

/// A loaded `turnd.toml` and the path it came from (errors and relative paths need it).
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub path: PathBuf,
    pub settings: TurnSettings,
}

impl TurnConfig {
    /// Reads `<config_dir>/turnd.toml`.
    pub fn load_from_dir(config_dir: &Path) -> anyhow::Result<TurnConfig> {
        TurnConfig::load(&config_dir.join(TURND_CONFIG_FILE))
    }

    /// Reads one file; every error names it.
    pub fn load(path: &Path) -> anyhow::Result<TurnConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow!(
                "{}: cannot read the TURN configuration: {e} (use --config-dir or RTC_CONFIG_DIR \
                 to point at the directory holding {TURND_CONFIG_FILE})",
                path.display()
            )
        })?;
        let settings: TurnSettings =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        Ok(TurnConfig {
            path: path.to_owned(),
            settings,
        })
    }

    /// The database URL turnd would open: `psql-userdb`, else `mysql-userdb`, else
    /// `userdb` (a SQLite path, relative to the config file's directory), or `None`.
    pub fn database_url(&self) -> Option<String> {
        let s = &self.settings;
        s.psql_userdb
            .clone()
            .or_else(|| s.mysql_userdb.clone())
            .or_else(|| {
                s.userdb
                    .as_deref()
                    .map(|p| rtc_store::resolve_userdb(p, &self.path))
            })
    }

    /// Like [`TurnConfig::database_url`], with an error saying which keys to set.
    pub fn require_database_url(&self) -> anyhow::Result<String> {
        self.database_url().ok_or_else(|| {
            anyhow!(
                "{}: no user database is configured: set `userdb` (SQLite file), `psql-userdb` \
                 or `mysql-userdb`, or pass -b/--userdb, -e/--psql-userdb or -M/--mysql-userdb",
                self.path.display()
            )
        })
    }

    /// The configured realm, or an error naming the file and key.
    pub fn require_realm(&self) -> anyhow::Result<String> {
        let realm = self.settings.realm.trim();
        if realm.is_empty() {
            return Err(anyhow!(
                "{}: key `realm` is not set; pass -r/--realm",
                self.path.display()
            ));
        }
        Ok(realm.to_owned())
    }

    /// The address clients should use: the first specific listening address, else the realm
    /// (usually the domain name), else loopback.
    pub fn public_host(&self) -> String {
        let s = &self.settings;
        match s.listening_ip.iter().find(|ip| !ip.is_unspecified()) {
            Some(IpAddr::V6(ip)) => format!("[{ip}]"),
            Some(ip) => ip.to_string(),
            None if !s.realm.trim().is_empty() => s.realm.trim().to_owned(),
            None => "127.0.0.1".to_owned(),
        }
    }

    /// ICE server URIs (RFC 7065) for what is enabled: UDP, TCP and, with a certificate, TLS.
    pub fn uris(&self) -> Vec<String> {
        let s = &self.settings;
        let host = self.public_host();
        let port = s.listening_port.unwrap_or(DEFAULT_LISTENING_PORT);
        let tls_port = s.tls_listening_port.unwrap_or(DEFAULT_TLS_LISTENING_PORT);
        let mut uris = Vec::new();
        if !s.no_udp {
            uris.push(format!("turn:{host}:{port}?transport=udp"));
        }
        if !s.no_tcp {
            uris.push(format!("turn:{host}:{port}?transport=tcp"));
        }
        if !s.no_tls && s.cert.is_some() {
            uris.push(format!("turns:{host}:{tls_port}?transport=tcp"));
        }
        uris
    }

    /// The `/metrics` URL when the Prometheus endpoint is on.
    pub fn metrics_url(&self) -> Option<String> {
        let s = &self.settings;
        s.prometheus.then(|| {
            let ip = s.prometheus_address.unwrap_or(IpAddr::from([127, 0, 0, 1]));
            let port = s.prometheus_port.unwrap_or(DEFAULT_PROMETHEUS_PORT);
            match ip {
                IpAddr::V6(ip) => format!("http://[{ip}]:{port}/metrics"),
                IpAddr::V4(ip) => format!("http://{ip}:{port}/metrics"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> TurnConfig {
        TurnConfig {
            path: PathBuf::from("/etc/rtc/turnd.toml"),
            settings: toml::from_str(text).unwrap(),
        }
    }

    #[test]
    fn database_precedence_and_relative_paths() {
        let c = config("userdb = \"turnd.sqlite\"\nsome-unknown-key = 1");
        assert_eq!(c.database_url().as_deref(), Some("/etc/rtc/turnd.sqlite"));
        let c = config("userdb = \"/var/lib/turn/turndb\"");
        assert_eq!(c.database_url().as_deref(), Some("/var/lib/turn/turndb"));
        let c = config("userdb = \"x\"\nmysql-userdb = \"mysql://m/db\"");
        assert_eq!(c.database_url().as_deref(), Some("mysql://m/db"));
        let c = config("mysql-userdb = \"mysql://m/db\"\npsql-userdb = \"postgres://p/db\"");
        assert_eq!(c.database_url().as_deref(), Some("postgres://p/db"));
        let e = config("realm = \"x\"").require_database_url().unwrap_err();
        assert!(e.to_string().contains("/etc/rtc/turnd.toml"), "{e}");
        assert!(e.to_string().contains("`userdb`"), "{e}");
    }

    #[test]
    fn uris_follow_the_listeners() {
        let c = config(
            "listening-ip = [\"0.0.0.0\", \"192.0.2.1\"]\nlistening-port = 3479\ncert = \"/c\"",
        );
        assert_eq!(
            c.uris(),
            [
                "turn:192.0.2.1:3479?transport=udp",
                "turn:192.0.2.1:3479?transport=tcp",
                "turns:192.0.2.1:5349?transport=tcp"
            ]
        );
        let c = config("realm = \"example.org\"\nno-tcp = true");
        assert_eq!(c.uris(), ["turn:example.org:3478?transport=udp"]);
        assert_eq!(c.metrics_url(), None);
    }
}
