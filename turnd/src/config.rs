//! `turnd.toml`: the daemon's configuration, with coturn's `turnserver.conf` key names so an
//! operator's habits (and most of their config) carry over. Loaded strictly through
//! `rtc-config` (unknown keys are errors, `TURND_<KEY>` environment overrides), then checked
//! key by key so every error names the file, the key and the problem.

use rtc_config::{ConfigError, Problems};
use rtc_daemon::settings::ShellSettings;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;
use stun_proto::auth::Credential;
use stun_proto::peer_policy::{IpRange, PeerPolicy};
use stun_proto::{Limits, ServerConfig};

/// Default location, shared with `rtc-admin`.
pub const DEFAULT_CONFIG: &str = "/etc/rtc/turnd.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// UDP and TCP port for STUN/TURN (RFC 8656 §4: 3478).
    pub listening_port: u16,
    /// TLS port (RFC 8656 §4: 5349).
    pub tls_listening_port: u16,
    /// Second port for RFC 5780 NAT behaviour discovery (coturn: listening-port + 1).
    pub alt_listening_port: Option<u16>,
    /// Addresses to listen on. Two addresses (and `alt-listening-port`) enable RFC 5780.
    pub listening_ip: Vec<IpAddr>,
    /// Addresses relay sockets bind to; by default the specific listening addresses, or the
    /// host's routed address when listening on the wildcard.
    pub relay_ip: Vec<IpAddr>,
    /// `PUBLIC` or `PUBLIC/PRIVATE`: advertise PUBLIC for relays bound on PRIVATE (NAT, cloud).
    pub external_ip: Vec<String>,
    pub min_port: u16,
    pub max_port: u16,
    pub realm: String,
    pub lt_cred_mech: bool,
    pub use_auth_secret: bool,
    pub static_auth_secret: Vec<String>,
    /// `name:password` or `name:0x<hex key>` (coturn's `user=`).
    pub user: Vec<String>,
    pub no_auth: bool,
    /// SQLite database path (coturn's `userdb`).
    pub userdb: Option<String>,
    /// PostgreSQL connection URL (coturn's `psql-userdb`).
    pub psql_userdb: Option<String>,
    /// MariaDB/MySQL connection URL (coturn's `mysql-userdb`).
    pub mysql_userdb: Option<String>,
    pub no_udp: bool,
    pub no_tcp: bool,
    pub no_tls: bool,
    /// Refuse TCP allocations (RFC 6062), as coturn's `no-tcp-relay`.
    pub no_tcp_relay: bool,
    /// No DTLS listener (DTLS is served on `tls-listening-port` over UDP when a certificate
    /// with an ECDSA key is configured).
    pub no_dtls: bool,
    pub cert: Option<PathBuf>,
    pub pkey: Option<PathBuf>,
    pub allowed_peer_ip: Vec<String>,
    pub denied_peer_ip: Vec<String>,
    pub allow_loopback_peers: bool,
    pub user_quota: u32,
    pub total_quota: u32,
    pub max_bps: u64,
    pub max_allocate_lifetime: u64,
    pub channel_lifetime: u64,
    pub permission_lifetime: u64,
    pub stale_nonce: u64,
    /// Shared nonce key (hex, 64 chars) so several nodes accept each other's nonces.
    pub nonce_secret: Option<String>,
    pub relay_threads: Option<usize>,
    pub prometheus: bool,
    pub prometheus_address: IpAddr,
    pub prometheus_port: u16,
    pub no_software_attribute: bool,
    /// Requests per second per source address before authentication (0: unlimited).
    pub unauthenticated_rate: u32,
    /// Concurrent TCP/TLS connections per source address.
    pub max_connections_per_ip: u32,
    /// Log filter (`error`, `warn`, `info`, `debug`, or a tracing filter string).
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listening_port: 3478,
            tls_listening_port: 5349,
            alt_listening_port: None,
            listening_ip: vec!["0.0.0.0".parse().expect("ip")],
            relay_ip: Vec::new(),
            external_ip: Vec::new(),
            min_port: 49152,
            max_port: 65535,
            realm: String::new(),
            lt_cred_mech: true,
            use_auth_secret: false,
            static_auth_secret: Vec::new(),
            user: Vec::new(),
            no_auth: false,
            userdb: None,
            psql_userdb: None,
            mysql_userdb: None,
            no_udp: false,
            no_tcp: false,
            no_tls: false,
            no_tcp_relay: false,
            no_dtls: false,
            cert: None,
            pkey: None,
            allowed_peer_ip: Vec::new(),
            denied_peer_ip: Vec::new(),
            allow_loopback_peers: false,
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            max_allocate_lifetime: 3600,
            channel_lifetime: 600,
            permission_lifetime: 300,
            stale_nonce: 600,
            nonce_secret: None,
            relay_threads: None,
            prometheus: false,
            prometheus_address: "127.0.0.1".parse().expect("ip"),
            prometheus_port: 9641,
            no_software_attribute: false,
            unauthenticated_rate: 100,
            max_connections_per_ip: 1024,
            log_level: "info".into(),
        }
    }
}

/// What the daemon runs with after checking: derived values resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub file: Config,
    pub core: ServerConfig,
    pub relay_v4: Option<IpAddr>,
    pub relay_v6: Option<IpAddr>,
    pub store_url: Option<String>,
    pub nonce_secret: Option<[u8; 32]>,
    pub config_allowed: Vec<IpRange>,
    pub config_denied: Vec<IpRange>,
}

impl Resolved {
    /// The `/metrics` endpoint and log filter. turnd re-reads no file on SIGHUP (only
    /// certificates and database settings), so all of its file's settings are static.
    pub fn shell(&self) -> ShellSettings {
        ShellSettings {
            prometheus: self.file.prometheus,
            prometheus_address: self.file.prometheus_address,
            prometheus_port: self.file.prometheus_port,
            log_level: self.file.log_level.clone(),
        }
    }
}

/// Loads and checks a config file with `TURND_*` overrides, then the files it names: the
/// certificate and key are loaded as the TLS and DTLS listeners will load them (readable,
/// PEM, key matching the certificate), so that `--check-config` fails on what would stop
/// start-up, naming the file and the setting.
pub fn load(path: &Path) -> Result<Resolved, ConfigError> {
    let cfg: Config = rtc_config::load(path, "TURND")?;
    let file = path.display().to_string();
    let r = resolve(cfg, &file)?;
    if let (Some(cert), Some(key)) = (&r.file.cert, &r.file.pkey) {
        let pair = rtc_tls::ConfiguredPair {
            cert_setting: "cert",
            cert,
            key_setting: "pkey",
            key,
        };
        pair.load()
            .map_err(|(setting, e)| ConfigError::new(file, Some(setting), e.to_string()))?;
    }
    Ok(r)
}

/// Checks a loaded config and derives the protocol core's settings.
pub fn resolve(mut cfg: Config, file: &str) -> Result<Resolved, ConfigError> {
    let mut p = Problems::new(file);
    if cfg.min_port == 0 || cfg.min_port > cfg.max_port {
        p.push(
            "min-port",
            format!("must be between 1 and max-port ({})", cfg.max_port),
        );
    }
    if cfg.listening_ip.is_empty() {
        p.push("listening-ip", "needs at least one address");
    }
    if !cfg.no_auth && cfg.realm.trim().is_empty() {
        p.push(
            "realm",
            "must be set (it is part of every user's key) unless no-auth = true",
        );
    }
    if !cfg.no_auth && !cfg.lt_cred_mech && !cfg.use_auth_secret {
        p.push(
            "lt-cred-mech",
            "no authentication mechanism is enabled; set lt-cred-mech, use-auth-secret or no-auth",
        );
    }
    let dbs = [&cfg.userdb, &cfg.psql_userdb, &cfg.mysql_userdb]
        .iter()
        .filter(|d| d.is_some())
        .count();
    if dbs > 1 {
        p.push(
            "userdb",
            "set only one of userdb, psql-userdb and mysql-userdb",
        );
    }
    match (&cfg.cert, &cfg.pkey) {
        (Some(_), None) => p.push("pkey", "cert is set but pkey is not"),
        (None, Some(_)) => p.push("cert", "pkey is set but cert is not"),
        _ => {}
    }
    for (key, v) in [
        ("max-allocate-lifetime", cfg.max_allocate_lifetime),
        ("channel-lifetime", cfg.channel_lifetime),
        ("permission-lifetime", cfg.permission_lifetime),
        ("stale-nonce", cfg.stale_nonce),
    ] {
        if v == 0 {
            p.push(key, "must be greater than 0");
        }
    }
    if cfg.max_allocate_lifetime > 0 && cfg.max_allocate_lifetime < 600 {
        // RFC 8656 §3.2: the default lifetime is 10 minutes; a lower maximum would make
        // every client's default request invalid.
        p.push(
            "max-allocate-lifetime",
            "must be at least 600 (RFC 8656 default lifetime)",
        );
    }
    let ranges = |key: &str, list: &[String], p: &mut Problems| -> Vec<IpRange> {
        let mut out = Vec::new();
        for s in list {
            match s.parse::<IpRange>() {
                Ok(r) => out.push(r),
                Err(e) => p.push(key, format!("`{s}`: {e}")),
            }
        }
        out
    };
    let allowed = ranges("allowed-peer-ip", &cfg.allowed_peer_ip, &mut p);
    let denied = ranges("denied-peer-ip", &cfg.denied_peer_ip, &mut p);

    let mut external = Vec::new();
    for e in &cfg.external_ip {
        let (public, private) = match e.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (e.as_str(), None),
        };
        match (
            public.trim().parse::<IpAddr>(),
            private.map(|x| x.trim().parse::<IpAddr>()),
        ) {
            (Ok(pb), None) => external.push((None, pb)),
            (Ok(pb), Some(Ok(pr))) => external.push((Some(pr), pb)),
            _ => p.push(
                "external-ip",
                format!("`{e}` is not PUBLIC or PUBLIC/PRIVATE"),
            ),
        }
    }

    let mut static_users = HashMap::new();
    for u in &cfg.user {
        let Some((name, secret)) = u.split_once(':') else {
            p.push("user", format!("`{u}` is not name:password"));
            continue;
        };
        let cred = match secret.strip_prefix("0x") {
            Some(hex) => match rtc_auth::turn::StoredKey::from_hex(hex) {
                Some(k) => Credential::Stored(k),
                None => {
                    p.push(
                        "user",
                        format!("user `{name}`: key after 0x is not 32 or 64 hex digits"),
                    );
                    continue;
                }
            },
            None => Credential::Password(secret.to_string()),
        };
        static_users.insert(name.to_string(), cred);
    }

    let nonce_secret = match &cfg.nonce_secret {
        None => None,
        Some(h) => match hex::decode(h) {
            Ok(v) if v.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&v);
                Some(k)
            }
            _ => {
                p.push("nonce-secret", "must be 64 hex digits");
                None
            }
        },
    };

    // Relay addresses: explicit, else the specific listening addresses, else the routed one.
    let mut relay_v4 = cfg.relay_ip.iter().copied().find(IpAddr::is_ipv4);
    let mut relay_v6 = cfg.relay_ip.iter().copied().find(IpAddr::is_ipv6);
    if cfg.relay_ip.is_empty() {
        let specific = |v4: bool| {
            cfg.listening_ip
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == v4 && !ip.is_unspecified())
        };
        relay_v4 = specific(true).or_else(|| {
            cfg.listening_ip
                .iter()
                .any(|ip| ip.is_ipv4())
                .then(|| routed_address(true))
                .flatten()
        });
        relay_v6 = specific(false).or_else(|| {
            cfg.listening_ip
                .iter()
                .any(|ip| ip.is_ipv6())
                .then(|| routed_address(false))
                .flatten()
        });
    }
    if relay_v4.is_none() && relay_v6.is_none() {
        p.push(
            "relay-ip",
            "no relay address: set relay-ip to this host's address",
        );
    }

    let external_ip = external
        .iter()
        .filter_map(|(private, public)| {
            let private = private.or(if public.is_ipv4() { relay_v4 } else { relay_v6 })?;
            Some((private, *public))
        })
        .collect();

    // RFC 5780 needs two addresses and two ports.
    let specific: Vec<IpAddr> = cfg
        .listening_ip
        .iter()
        .copied()
        .filter(|ip| !ip.is_unspecified())
        .collect();
    let (primary, alternate) = match (cfg.alt_listening_port, specific.as_slice()) {
        (Some(alt), [a, b, ..]) if a.is_ipv4() == b.is_ipv4() => {
            (Some((*a, cfg.listening_port)), Some((*b, alt)))
        }
        (Some(_), _) => {
            p.push(
                "alt-listening-port",
                "RFC 5780 needs two specific listening-ip addresses of one family",
            );
            (None, None)
        }
        _ => (None, None),
    };

    p.into_result()?;

    // Certificate paths, like `userdb`, are relative to the config file.
    let config_dir = Path::new(file).parent().unwrap_or(Path::new(""));
    for p in [&mut cfg.cert, &mut cfg.pkey].into_iter().flatten() {
        if p.is_relative() {
            *p = config_dir.join(&*p);
        }
    }

    let store_url = cfg
        .psql_userdb
        .clone()
        .or_else(|| cfg.mysql_userdb.clone())
        .or_else(|| {
            cfg.userdb
                .as_ref()
                .map(|p| rtc_store::resolve_userdb(p, Path::new(file)))
        });

    let core = ServerConfig {
        realm: cfg.realm.clone(),
        software: (!cfg.no_software_attribute).then(|| "turnd".to_string()),
        lt_cred_mech: cfg.lt_cred_mech,
        use_auth_secret: cfg.use_auth_secret,
        no_auth: cfg.no_auth,
        static_users,
        // Without a database, users outside the config are unknown at once.
        user_database: store_url.is_some(),
        default_lifetime: Duration::from_secs(600),
        max_lifetime: Duration::from_secs(cfg.max_allocate_lifetime),
        permission_lifetime: Duration::from_secs(cfg.permission_lifetime),
        channel_lifetime: Duration::from_secs(cfg.channel_lifetime),
        limits: Limits {
            user_quota: cfg.user_quota,
            total_quota: cfg.total_quota,
            max_bps: cfg.max_bps,
        },
        peer_policy: PeerPolicy::new(allowed.clone(), denied.clone(), cfg.allow_loopback_peers),
        external_ip,
        alternate,
        primary,
        unauthenticated_rate: cfg.unauthenticated_rate,
        tcp_relay: !cfg.no_tcp_relay,
    };
    Ok(Resolved {
        core,
        relay_v4,
        relay_v6,
        store_url,
        nonce_secret,
        config_allowed: allowed,
        config_denied: denied,
        file: cfg,
    })
}

/// The address the host would use to reach the Internet: a routing-table lookup through an
/// unconnected UDP socket's `connect`, which sends nothing.
fn routed_address(v4: bool) -> Option<IpAddr> {
    let (bind, target): (SocketAddr, SocketAddr) = if v4 {
        ("0.0.0.0:0".parse().ok()?, "192.0.2.1:9".parse().ok()?)
    } else {
        ("[::]:0".parse().ok()?, "[2001:db8::1]:9".parse().ok()?)
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(target).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Resolved, ConfigError> {
        let cfg: Config = rtc_config::load_str(toml, "t.toml", &[], "TURND")?;
        resolve(cfg, "t.toml")
    }

    #[test]
    fn minimal_config_resolves_with_coturn_defaults() {
        let r = parse("realm = \"example.org\"\nlistening-ip = [\"127.0.0.1\"]\n").unwrap();
        assert_eq!(r.core.max_lifetime, Duration::from_secs(3600));
        assert_eq!(r.core.permission_lifetime, Duration::from_secs(300));
        assert_eq!(r.core.channel_lifetime, Duration::from_secs(600));
        assert_eq!(r.relay_v4, Some("127.0.0.1".parse().unwrap()));
        assert!(!r.core.peer_policy.allow_loopback);
    }

    #[test]
    fn errors_name_file_and_key() {
        let e =
            parse("realm = \"x\"\nmin-port = 5000\nmax-port = 4000\nlistening-ip=[\"127.0.0.1\"]")
                .unwrap_err();
        assert_eq!(e.file, "t.toml");
        assert!(e.to_string().contains("min-port"), "{e}");
        let e = parse("realm = \"x\"\nmin-prot = 5000").unwrap_err();
        assert!(e.to_string().contains("min-prot"), "{e}");
        let e = parse("listening-ip=[\"127.0.0.1\"]").unwrap_err();
        assert!(e.to_string().contains("realm"), "{e}");
        let e =
            parse("realm=\"x\"\nlistening-ip=[\"127.0.0.1\"]\ndenied-peer-ip=[\"1.2.3.4-1.2.3\"]")
                .unwrap_err();
        assert!(e.to_string().contains("denied-peer-ip"), "{e}");
        let e = parse("realm=\"x\"\nlistening-ip=[\"127.0.0.1\"]\ncert=\"/a\"").unwrap_err();
        assert!(e.to_string().contains("pkey"), "{e}");
    }

    #[test]
    fn external_ip_and_users() {
        let r = parse(
            "realm=\"x\"\nlistening-ip=[\"10.0.0.5\"]\nexternal-ip=[\"198.51.100.7/10.0.0.5\"]\n\
             user=[\"alice:secret\", \"bob:0x0123456789abcdef0123456789abcdef\"]",
        )
        .unwrap();
        assert_eq!(
            r.core.external_ip,
            vec![("10.0.0.5".parse().unwrap(), "198.51.100.7".parse().unwrap())]
        );
        assert_eq!(r.core.static_users.len(), 2);
        let e = parse("realm=\"x\"\nlistening-ip=[\"127.0.0.1\"]\nuser=[\"nocolon\"]").unwrap_err();
        assert!(e.to_string().contains("user"), "{e}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let toml = "realm=\"x\"\nlistening-ip=[\"127.0.0.1\"]\nuserdb=\"turnd.sqlite\"\n\
                    cert=\"tls/c.pem\"\npkey=\"/k.pem\"";
        let cfg: Config = rtc_config::load_str(toml, "/etc/rtc/turnd.toml", &[], "TURND").unwrap();
        let r = resolve(cfg, "/etc/rtc/turnd.toml").unwrap();
        assert_eq!(r.store_url.as_deref(), Some("/etc/rtc/turnd.sqlite"));
        assert_eq!(
            r.file.cert.as_deref(),
            Some(Path::new("/etc/rtc/tls/c.pem"))
        );
        assert_eq!(r.file.pkey.as_deref(), Some(Path::new("/k.pem")));
    }

    #[test]
    fn env_overrides_apply() {
        let cfg: Config = rtc_config::load_str(
            "realm=\"x\"\nlistening-ip=[\"127.0.0.1\"]",
            "t.toml",
            &[("TURND_MIN_PORT".into(), "50000".into())],
            "TURND",
        )
        .unwrap();
        assert_eq!(cfg.min_port, 50000);
    }
}
