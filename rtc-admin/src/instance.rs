//! `rtc-admin init`: a ready-to-run local instance of the suite in one directory.
//!
//! Everything a developer needs to try the servers on one machine is written into DIR:
//! one config file per daemon, a self-signed certificate, the SQLite databases with a demo
//! TURN user and two demo SIP and XMPP accounts (`alice`, `bob`), and the demo password in
//! `credentials.txt`. Every listening port is the
//! protocol's standard port plus `--port-offset`, so several instances (and the test suite)
//! can run side by side.
//!
//! The suite's daemons are listed once, in [`DAEMONS`]; `init` writes a config for each and
//! `up` starts each one whose config is present.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use rand::Rng as _;
use serde::Deserialize;

/// One daemon of the suite, as `init` and `up` see it.
#[derive(Debug)]
pub struct Daemon {
    /// Binary name; its config is `<name>.toml` in the instance directory.
    pub name: &'static str,
    /// `(config key, standard port)`; the instance listens on standard port + offset.
    pub ports: &'static [(&'static str, u16)],
    /// Renders the daemon's config file for an instance.
    pub render_config: fn(&Instance) -> String,
}

/// The daemons of the suite, in start order.
///
/// ----- ADD NEW DAEMONS HERE -----
/// Each needs a `render_config` like [`turnd_config`] whose output passes that daemon's
/// `--check-config`, and a test in `tests/cli.rs` checking it. `up` needs no change.
pub const DAEMONS: &[Daemon] = &[
    Daemon {
        name: "turnd",
        ports: &[
            ("listening-port", 3478),
            ("tls-listening-port", 5349),
            ("prometheus-port", 9641),
        ],
        render_config: turnd_config,
    },
    Daemon {
        name: "sipd",
        // SIP over UDP/TCP and SIPS over TLS (RFC 3261 §19.1.2), then metrics.
        ports: &[
            ("listen (udp, tcp)", 5060),
            ("listen (tls)", 5061),
            ("prometheus-port", 9091),
        ],
        render_config: sipd_config,
    },
    Daemon {
        name: "xmppd",
        // Client-to-server with STARTTLS and direct TLS (XEP-0368), then metrics;
        // server-to-server (5269, RFC 6120 §14.7) comes with federation.
        ports: &[
            ("c2s-ports", 5222),
            ("c2s-direct-tls-ports", 5223),
            ("prometheus-port", 9092),
        ],
        render_config: xmppd_config,
    },
];

/// Start of the relay port range (IANA dynamic ports, RFC 6335 §6), where coturn and turnd
/// allocate relayed addresses by default.
const RELAY_RANGE_START: u16 = 49152;
/// Relay ports per instance: plenty for local tests, and 16 instances fit below 65536.
const RELAY_PORTS_PER_INSTANCE: u16 = 1000;

/// Name of the SQLite database in the instance directory.
pub const DATABASE_FILE: &str = "turnd.sqlite";
/// sipd's SQLite database (Kamailio's `subscriber` and `location` tables).
pub const SIP_DATABASE_FILE: &str = "sipd.sqlite";
/// xmppd's SQLite database (accounts as SCRAM secrets, per-user data).
pub const XMPP_DATABASE_FILE: &str = "xmppd.sqlite";
/// PBKDF2 iterations of the demo XMPP accounts (xmppd's and Prosody's default).
const XMPP_SCRAM_ITERATIONS: u32 = 10_000;
/// SIP and XMPP accounts `init` creates (with the demo password), so two phones or two chat
/// clients can reach each other.
pub const DEMO_ACCOUNTS: [&str; 2] = ["alice", "bob"];
/// Where `init` leaves the demo user's password.
pub const CREDENTIALS_FILE: &str = "credentials.txt";
/// Name of the demo long-term user.
pub const DEMO_USER: &str = "demo";

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Directory to write the instance into (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Domain: the TURN realm and the certificate's name.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Added to every standard port, so several instances can run on one machine.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Overwrite existing files (the database is recreated, its users are lost).
    #[arg(long)]
    pub force: bool,
}

/// What one instance is made of: where it lives, its name and its port offset.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Absolute, so generated configs work from any working directory.
    pub dir: PathBuf,
    pub domain: String,
    pub port_offset: u16,
}

impl Instance {
    /// `standard + offset`; [`Instance::check_ports`] has made sure it fits.
    pub fn port(&self, standard: u16) -> u16 {
        standard + self.port_offset
    }

    /// The instance's slice of the relay range; offsets wrap every 16 instances because
    /// only 16 slices of 1000 ports fit in 49152-65535.
    pub fn relay_ports(&self) -> (u16, u16) {
        let slots = (u16::MAX - RELAY_RANGE_START) / RELAY_PORTS_PER_INSTANCE + 1;
        let start = RELAY_RANGE_START + (self.port_offset % slots) * RELAY_PORTS_PER_INSTANCE;
        (start, start.saturating_add(RELAY_PORTS_PER_INSTANCE - 1))
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("tls").join(format!("{}.crt", self.domain))
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("tls").join(format!("{}.key", self.domain))
    }

    /// Every service port must stay below the relay range, or the daemon would compete
    /// with its own relay allocations.
    fn check_ports(&self) -> anyhow::Result<()> {
        for daemon in DAEMONS {
            for (key, standard) in daemon.ports {
                let port = u32::from(*standard) + u32::from(self.port_offset);
                if port >= u32::from(RELAY_RANGE_START) {
                    bail!(
                        "--port-offset {} puts {} `{key}` at {port}, inside the relay range \
                         {RELAY_RANGE_START}-65535; use a smaller offset",
                        self.port_offset,
                        daemon.name
                    );
                }
            }
        }
        Ok(())
    }
}

/// A DNS name we can put in a file name and a certificate: letters, digits, `-` and `.`.
fn check_domain(domain: &str) -> anyhow::Result<()> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        bail!("--domain {domain:?} is not a DNS name (letters, digits, `-`, dot-separated)");
    }
    Ok(())
}

/// A TOML string literal, escaped by the `toml` crate so any path round-trips.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `turnd.toml` for a loopback-only instance.
pub fn turnd_config(i: &Instance) -> String {
    let (min_port, max_port) = i.relay_ports();
    let metrics_port = i.port(9641);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"# turnd configuration of a local instance, written by `rtc-admin init`.
# Key names are coturn's (turnserver.conf). Check with: turnd --check-config --config <this file>

# Realm: part of every long-term user's key (RFC 8489 §9.2.2).
realm = {realm}

# Loopback only: this instance is for development on this machine.
listening-ip = ["127.0.0.1"]
# STUN/TURN over UDP and TCP (standard port 3478 + offset {offset}).
listening-port = {port}
# TURN over TLS (standard port 5349 + offset {offset}).
tls-listening-port = {tls_port}

# Relayed addresses are allocated on this address, in this instance's 1000-port range.
relay-ip = ["127.0.0.1"]
min-port = {min_port}
max-port = {max_port}

# Long-term credentials from the user database; the REST API shared-secret scheme is off.
lt-cred-mech = true
use-auth-secret = false
# SQLite user database, relative to this file's directory; manage it with `rtc-admin turn`.
userdb = {userdb}

# Self-signed certificate written by `rtc-admin init` (absolute paths).
cert = {cert}
pkey = {pkey}

# A localhost instance can only relay to peers on localhost, so loopback peers are allowed.
# NEVER copy this line to a public server: any TURN user could then reach services that
# listen on the server's own loopback interface (RFC 8656 §21.1).
allow-loopback-peers = true

# Requests per second per source address before authentication (turnd's default).
unauthenticated-rate = 100

# Prometheus metrics at http://127.0.0.1:{metrics_port}/metrics
prometheus = true
prometheus-address = "127.0.0.1"
prometheus-port = {metrics_port}

# error, warn, info, debug, or a tracing filter string.
log-level = "info"
"#,
        realm = quoted(&i.domain),
        offset = i.port_offset,
        port = i.port(3478),
        tls_port = i.port(5349),
        userdb = quoted(DATABASE_FILE),
        cert = quoted(&i.cert_path().display().to_string()),
        pkey = quoted(&i.key_path().display().to_string()),
    );
    s
}

/// sipd's config for an instance: the domain, loopback sockets, the instance certificate.
pub fn sipd_config(i: &Instance) -> String {
    let port = i.port(5060);
    let tls_port = i.port(5061);
    let metrics_port = i.port(9091);
    format!(
        r#"# sipd configuration of a local instance, written by `rtc-admin init`.
# Key names follow Kamailio's. Check with: sipd --check-config --config <this file>

# SIP domain served (Kamailio's SIP_DOMAIN / alias); also the digest realm.
domain = [{domain}]

# Loopback only: SIP over UDP and TCP on {port} (5060 + offset {offset}), SIPS over TLS on
# {tls_port} (5061 + offset).
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}", "tls:127.0.0.1:{tls_port}"]

# Self-signed certificate written by `rtc-admin init` (absolute paths).
tls-certificate = {cert}
tls-private-key = {key}

# SQLite database (Kamailio's subscriber and location tables), relative to this file's
# directory; manage users with `rtc-admin sip add/passwd/rm`.
db-url = {db}

# Prometheus metrics at http://127.0.0.1:{metrics_port}/metrics
prometheus = true
prometheus-address = "127.0.0.1"
prometheus-port = {metrics_port}

log-level = "info"
"#,
        domain = quoted(&i.domain),
        offset = i.port_offset,
        cert = quoted(&i.cert_path().display().to_string()),
        key = quoted(&i.key_path().display().to_string()),
        db = quoted(SIP_DATABASE_FILE),
    )
}

/// xmppd's main config for an instance; the domain itself is described in its virtual-host
/// file ([`xmppd_vhost`]), enabled by a link as Debian's Prosody does.
pub fn xmppd_config(i: &Instance) -> String {
    format!(
        r#"# xmppd configuration of a local instance, written by `rtc-admin init`.
# Prosody's model: this main file, plus one file per domain in vhosts-available/, enabled
# by a link in vhosts-enabled/. Check with: xmppd --check-config --config <this file>

admins = []

# Loopback only. Client connections with STARTTLS on {c2s} (5222 + offset {offset}),
# direct TLS (XEP-0368) on {tls} (5223 + offset).
interfaces = ["127.0.0.1"]
c2s-ports = [{c2s}]
c2s-direct-tls-ports = [{tls}]

# SQLite database relative to this file's directory; manage accounts with
# `rtc-admin xmpp adduser/passwd/deluser`.
db-url = {db}
scram-iterations = {iterations}

vhosts-available = "vhosts-available"
vhosts-enabled = "vhosts-enabled"

# Prometheus metrics at http://127.0.0.1:{metrics}/metrics
prometheus = true
prometheus-address = "127.0.0.1"
prometheus-port = {metrics}

log-level = "info"
"#,
        c2s = i.port(5222),
        tls = i.port(5223),
        metrics = i.port(9092),
        offset = i.port_offset,
        db = quoted(XMPP_DATABASE_FILE),
        iterations = XMPP_SCRAM_ITERATIONS,
    )
}

/// The instance domain's virtual-host file, with its chat-room service.
pub fn xmppd_vhost(i: &Instance) -> String {
    format!(
        r#"# The {domain} virtual host of a local instance, written by `rtc-admin init`.
domain = {quoted_domain}
certificate = {cert}
key = {key}
allow-registration = false

# Chat rooms (XEP-0045) on their own domain, as Prosody's
# Component "conference.{domain}" "muc"
[[component]]
domain = {muc}
type = "muc"
"#,
        domain = i.domain,
        quoted_domain = quoted(&i.domain),
        cert = quoted(&i.cert_path().display().to_string()),
        key = quoted(&i.key_path().display().to_string()),
        muc = quoted(&format!("conference.{}", i.domain)),
    )
}

/// `credentials.txt`: TOML, so `up` can read it back, and plain enough to read by eye.
#[derive(Debug, Deserialize)]
pub struct DemoCredentials {
    pub user: String,
    pub password: String,
    pub realm: String,
    /// Absent in instances written before sipd existed.
    #[serde(default, rename = "accounts")]
    pub accounts: Vec<String>,
}

impl DemoCredentials {
    pub fn load(dir: &Path) -> Option<DemoCredentials> {
        let text = std::fs::read_to_string(dir.join(CREDENTIALS_FILE)).ok()?;
        toml::from_str(&text).ok()
    }
}

/// Writes the instance; refuses to replace anything unless `force`.
pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    check_domain(&args.domain)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let instance = Instance {
        dir,
        domain: args.domain.clone(),
        port_offset: args.port_offset,
    };
    instance.check_ports()?;

    let configs: Vec<(PathBuf, String)> = DAEMONS
        .iter()
        .map(|d| {
            (
                instance.dir.join(format!("{}.toml", d.name)),
                (d.render_config)(&instance),
            )
        })
        .collect();
    let database = instance.dir.join(DATABASE_FILE);
    let sip_database = instance.dir.join(SIP_DATABASE_FILE);
    let xmpp_database = instance.dir.join(XMPP_DATABASE_FILE);
    let vhost_name = format!("{}.toml", instance.domain);
    let vhost_available = instance.dir.join("vhosts-available").join(&vhost_name);
    let vhost_enabled = instance.dir.join("vhosts-enabled").join(&vhost_name);
    let credentials = instance.dir.join(CREDENTIALS_FILE);
    let mut targets: Vec<PathBuf> = configs.iter().map(|(p, _)| p.clone()).collect();
    targets.extend([
        instance.cert_path(),
        instance.key_path(),
        database.clone(),
        sip_database.clone(),
        xmpp_database.clone(),
        vhost_available.clone(),
        vhost_enabled.clone(),
        credentials.clone(),
    ]);
    // All-or-nothing: check every file before writing any, so a refused init changes nothing.
    let existing: Vec<String> = targets
        .iter()
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() && !args.force {
        bail!(
            "refusing to overwrite existing files (pass --force to replace them): {}",
            existing.join(", ")
        );
    }

    let mut names = vec![
        instance.domain.clone(),
        format!("conference.{}", instance.domain),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    names.dedup();
    let (cert_pem, key_pem) = rtc_tls::self_signed(&names)?;
    std::fs::create_dir_all(instance.dir.join("tls"))?;
    write_file(&instance.cert_path(), &cert_pem, 0o644)?;
    write_file(&instance.key_path(), &key_pem, 0o600)?;
    for (path, text) in &configs {
        write_file(path, text, 0o644)?;
    }
    std::fs::create_dir_all(instance.dir.join("vhosts-available"))?;
    std::fs::create_dir_all(instance.dir.join("vhosts-enabled"))?;
    write_file(&vhost_available, &xmppd_vhost(&instance), 0o644)?;
    // Enabled by a relative link, so the instance directory can move.
    let _ = std::fs::remove_file(&vhost_enabled);
    std::os::unix::fs::symlink(
        Path::new("../vhosts-available").join(&vhost_name),
        &vhost_enabled,
    )
    .with_context(|| format!("cannot link {}", vhost_enabled.display()))?;

    let password = random_password();
    crate::block_on(create_database(&database, &instance.domain, &password))?;
    crate::block_on(create_sip_database(
        &sip_database,
        &instance.domain,
        &password,
    ))?;
    crate::block_on(create_xmpp_database(
        &xmpp_database,
        &instance.domain,
        &password,
    ))?;
    write_file(
        &credentials,
        &format!(
            "# Demo accounts written by `rtc-admin init`: the TURN user (long-term credentials)\n\
             # and the SIP and XMPP accounts, all with this password.\n\
             user = {}\npassword = {}\nrealm = {}\naccounts = [{}]\n",
            quoted(DEMO_USER),
            quoted(&password),
            quoted(&instance.domain),
            DEMO_ACCOUNTS.map(quoted).join(", ")
        ),
        0o600,
    )?;

    println!("Instance written to {}", instance.dir.display());
    for path in &targets {
        println!("  {}", path.display());
    }
    println!(
        "Demo user: {DEMO_USER} / {password} (realm {}), also in {}",
        instance.domain,
        credentials.display()
    );
    println!(
        "SIP and XMPP accounts: {} with the same password",
        DEMO_ACCOUNTS
            .map(|u| format!("{u}@{}", instance.domain))
            .join(", ")
    );
    println!(
        "Start it with: rtc-admin up --dir {}",
        instance.dir.display()
    );
    Ok(())
}

/// sipd's database with the demo SIP accounts (`kamctl add alice ...`).
async fn create_sip_database(path: &Path, domain: &str, password: &str) -> anyhow::Result<()> {
    remove_sqlite(path)?;
    let store = rtc_store::Store::connect(&path.display().to_string()).await?;
    store.migrate_sip().await?;
    for user in DEMO_ACCOUNTS {
        store
            .sip()
            .add_subscriber(user, domain, domain, password)
            .await?;
    }
    store.close().await;
    Ok(())
}

/// xmppd's database with the demo accounts (`prosodyctl adduser alice@...`), stored as
/// SCRAM secrets only.
async fn create_xmpp_database(path: &Path, domain: &str, password: &str) -> anyhow::Result<()> {
    remove_sqlite(path)?;
    let store = rtc_store::Store::connect(&path.display().to_string()).await?;
    store.migrate_xmpp().await?;
    for user in DEMO_ACCOUNTS {
        let secrets = crate::xmpp::new_secrets(password, XMPP_SCRAM_ITERATIONS);
        store.xmpp().create_account(domain, user, &secrets).await?;
    }
    store.close().await;
    Ok(())
}

/// Removes an SQLite database and its side files (--force starts from an empty one rather
/// than keeping old users around).
fn remove_sqlite(path: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

async fn create_database(path: &Path, realm: &str, password: &str) -> anyhow::Result<()> {
    remove_sqlite(path)?;
    let store = rtc_store::Store::connect(&path.display().to_string()).await?;
    store.migrate_turn().await?;
    let key = rtc_auth::turn::key_md5(DEMO_USER, realm, password);
    store
        .turn()
        .add_user(realm, DEMO_USER, &hex::encode(key))
        .await?;
    store.close().await;
    Ok(())
}

/// 20 alphanumeric characters from the OS generator (about 119 bits).
fn random_password() -> String {
    rand::rngs::OsRng
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

/// Replaces `path` with `contents`, created with `mode` from the start so a private key
/// is never readable by others, not even between create and chmod.
fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot replace {}", path.display()))
        }
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(offset: u16) -> Instance {
        Instance {
            dir: PathBuf::from("/srv/rtc"),
            domain: "example.org".into(),
            port_offset: offset,
        }
    }

    #[test]
    fn relay_ranges_stay_in_the_dynamic_range() {
        assert_eq!(instance(0).relay_ports(), (49152, 50151));
        assert_eq!(instance(1).relay_ports(), (50152, 51151));
        assert_eq!(instance(16).relay_ports(), (65152, 65535));
        assert_eq!(instance(17).relay_ports(), (49152, 50151));
        for n in [0, 5, 16, 20_123, 39_000] {
            let (lo, hi) = instance(n).relay_ports();
            assert!(lo >= RELAY_RANGE_START && lo < hi, "{n}: {lo}-{hi}");
        }
    }

    #[test]
    fn ports_must_stay_below_the_relay_range() {
        assert!(instance(20_999).check_ports().is_ok());
        let e = instance(40_000).check_ports().unwrap_err();
        assert!(e.to_string().contains("prometheus-port"), "{e}");
    }

    #[test]
    fn domains_are_checked() {
        assert!(check_domain("localhost").is_ok());
        assert!(check_domain("falcot.com").is_ok());
        for bad in ["", "../x", "a..b", "-a.com", "a b", "a/b"] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn turnd_config_is_valid_toml_with_offset_ports() {
        let text = turnd_config(&instance(7));
        let v: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(v["listening-port"].as_integer(), Some(3485));
        assert_eq!(v["tls-listening-port"].as_integer(), Some(5356));
        assert_eq!(v["prometheus-port"].as_integer(), Some(9648));
        assert_eq!(v["realm"].as_str(), Some("example.org"));
        assert_eq!(v["cert"].as_str(), Some("/srv/rtc/tls/example.org.crt"));
        assert_eq!(v["allow-loopback-peers"].as_bool(), Some(true));
    }
}
