//! `rtc-admin xmpp`: Prosody's `prosodyctl` for xmppd, on the same database and config.
//!
//! Commands keep prosodyctl's names: `adduser JID`, `passwd JID`, `deluser JID`, `check
//! [config|certs]`, `cert import HOST PATH...`, `about`, `status`. Passwords are asked
//! twice with echo off on a terminal and read as one line from a pipe ([`password`]).
//!
//! Flow: parse -> read `<config-dir>/xmppd.toml` leniently and the enabled host files
//! ([`config`]) when a command needs the database, the served domains, the SCRAM
//! iteration count or the ports -> account commands open the database (`-b/--db-url` or
//! `db-url`), create missing tables and make one `rtc-store` call; `check` ([`check`]),
//! `cert import` ([`cert`]) and `status` ([`probe`]) work on files and sockets only.
//!
//! Accounts hold SCRAM secrets only (RFC 5802 §3): for SCRAM-SHA-1 and SCRAM-SHA-256
//! (RFC 7677), a fresh random 16-byte salt and `scram-iterations` PBKDF2 rounds, computed
//! from the SASLprep'd password as clients compute them (`rtc_auth::scram`), so every
//! mechanism xmppd offers, PLAIN included, works for the new account.
//!
//! A running xmppd reads accounts from the database at each login: a new password counts
//! from the next login; a deleted user's open sessions stay until they end.

mod cert;
mod check;
mod config;
mod password;
mod probe;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use rand::RngCore as _;
use rtc_auth::scram::{self, ScramHash};
use rtc_store::{ScramRow, Store, XmppSecrets};

use self::check::CheckWhat;
use self::config::{XmppConfig, XMPPD_CONFIG_FILE};

/// Salt length of new accounts' SCRAM secrets (RFC 5802 leaves it open; 16 random bytes
/// as Prosody's UUID-based salts carry).
const SALT_LEN: usize = 16;

/// XMPP accounts, configuration and certificate checks (Prosody prosodyctl commands).
#[derive(Debug, Args)]
#[command(
    after_help = "JID is user@domain, the domain one of xmppd's enabled hosts (a file in \
                  vhosts-enabled next to <config-dir>/xmppd.toml).\n\
                  Example: echo 's3cret' | rtc-admin xmpp adduser juliet@falcot.com"
)]
pub struct XmppArgs {
    /// Database URL, or SQLite file path; default: `db-url` of xmppd.toml.
    #[arg(short = 'b', long = "db-url", value_name = "URL", global = true)]
    pub db_url: Option<String>,
    #[command(subcommand)]
    pub command: XmppCommand,
}

#[derive(Debug, Subcommand)]
pub enum XmppCommand {
    /// Create an account; the password is asked twice (or read from stdin).
    Adduser { jid: String },
    /// Set an account's password; asked twice (or read from stdin).
    Passwd { jid: String },
    /// Delete an account and everything stored for it (roster, offline messages...).
    Deluser { jid: String },
    /// Check the configuration and the certificates; exit 1 on errors.
    Check {
        /// Only this part (default: both).
        #[arg(value_enum)]
        what: Option<CheckWhat>,
    },
    /// Certificates of the virtual hosts.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Versions, configuration paths, enabled hosts and the database in use.
    About,
    /// Whether xmppd is running (its metrics endpoint, else its client port).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Copy HOST's certificate and key from PATHs (/etc/letsencrypt/live...) into
    /// <config-dir>/certs and point HOST's file at them.
    Import {
        host: String,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// Runs one `rtc-admin xmpp` command line; returns the exit code.
pub fn run(args: XmppArgs, config_dir: &Path) -> anyhow::Result<i32> {
    match &args.command {
        XmppCommand::Check { what } => check::run(config_dir, *what),
        XmppCommand::Cert(CertCommand::Import { host, paths }) => {
            let cfg = XmppConfig::load_from_dir(config_dir)?;
            cert::import(&cfg, host, paths)?;
            Ok(0)
        }
        XmppCommand::About => about(config_dir, args.db_url.as_deref()),
        XmppCommand::Status => status(config_dir),
        XmppCommand::Adduser { jid }
        | XmppCommand::Passwd { jid }
        | XmppCommand::Deluser { jid } => account_command(&args, jid, config_dir).map(|()| 0),
    }
}

/// `user@domain` as xmppd stores it: the localpart case-folded (RFC 7622
/// UsernameCaseMapped, lower case), the domain lower case without a trailing dot.
fn parse_jid(jid: &str) -> anyhow::Result<(String, String)> {
    let bad = |why: &str| anyhow!("{jid:?} is not an account JID (user@domain): {why}");
    let (node, domain) = jid.split_once('@').ok_or_else(|| bad("no @"))?;
    if domain.contains('/') {
        return Err(bad("give the bare JID, without a resource"));
    }
    let domain = config::normalize_domain(domain);
    if node.is_empty() || domain.is_empty() || domain.contains('@') {
        return Err(bad("empty part"));
    }
    let node = scram::saslprep(node).map_err(|e| bad(&e.to_string()))?;
    let node = node.to_lowercase();
    if node.len() > 1023
        || node
            .chars()
            .any(|c| c.is_whitespace() || "\"&'/:<>@".contains(c))
    {
        return Err(bad("a localpart cannot hold spaces or any of \"&'/:<>@"));
    }
    Ok((node, domain))
}

/// SCRAM-SHA-1 and SCRAM-SHA-256 secrets of a password with a fresh salt.
pub(crate) fn new_secrets(password: &str, iterations: u32) -> XmppSecrets {
    let mut salt = [0u8; SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    // The password was checked by `password::new_password`; map it as clients do.
    let password =
        scram::saslprep(password).map_or_else(|_| password.to_owned(), |p| p.into_owned());
    let row = |hash| {
        let (stored_key, server_key) = scram::derive_keys(hash, &password, &salt, iterations);
        ScramRow {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        }
    };
    XmppSecrets {
        sha1: Some(row(ScramHash::Sha1)),
        sha256: Some(row(ScramHash::Sha256)),
    }
}

fn account_command(args: &XmppArgs, jid: &str, config_dir: &Path) -> anyhow::Result<()> {
    let (user, host) = parse_jid(jid)?;
    // The config is needed for the database unless -b names it; without it (and with -b)
    // the host cannot be checked and xmppd's default iteration count is used.
    let cfg = match (XmppConfig::load_from_dir(config_dir), &args.db_url) {
        (Ok(c), _) => Some(c),
        (Err(_), Some(_)) if !config_dir.join(XMPPD_CONFIG_FILE).exists() => None,
        (Err(e), _) => return Err(e),
    };
    if let Some(cfg) = &cfg {
        if cfg.enabled_host(&host)?.is_none() {
            let available = cfg.available_dir().join(format!("{host}.toml"));
            let hint = if available.exists() {
                format!(
                    "; enable it: ln -s {} {}/",
                    available.display(),
                    cfg.enabled_dir().display()
                )
            } else {
                String::new()
            };
            bail!(
                "{host} is not a host of xmppd (no file in {} serves it){hint}",
                cfg.enabled_dir().display()
            );
        }
    }
    let url = match (&args.db_url, &cfg) {
        (Some(url), _) => url.clone(),
        (None, Some(cfg)) => cfg.require_database_url()?,
        (None, None) => unreachable!("the config is required without -b"),
    };
    let iterations = cfg.as_ref().map_or(
        config::DEFAULT_SCRAM_ITERATIONS,
        XmppConfig::scram_iterations,
    );
    // Ask before touching the database, so a typo in the password costs nothing.
    let jid = format!("{user}@{host}");
    let secrets = match &args.command {
        XmppCommand::Deluser { .. } => None,
        _ => Some(new_secrets(&password::new_password(&jid)?, iterations)),
    };
    crate::block_on(async {
        let store = Store::connect(&url).await?;
        let result = async {
            store.migrate_xmpp().await?;
            let x = store.xmpp();
            match (&args.command, &secrets) {
                (XmppCommand::Adduser { .. }, Some(s)) => {
                    if !x.create_account(&host, &user, s).await? {
                        bail!(
                            "the account {jid} exists already in {} (change its password \
                             with `rtc-admin xmpp passwd {jid}`)",
                            store.url()
                        );
                    }
                }
                (XmppCommand::Passwd { .. }, Some(s)) => {
                    if !x.set_account(&host, &user, s).await? {
                        bail!("no account {jid} in {}", store.url());
                    }
                }
                (XmppCommand::Deluser { .. }, _) => {
                    if !x.delete_account(&host, &user).await? {
                        bail!("no account {jid} in {}", store.url());
                    }
                }
                _ => unreachable!("account commands only"),
            }
            Ok(())
        }
        .await;
        store.close().await;
        result
    })
}

/// `prosodyctl about`: what is installed and configured.
fn about(config_dir: &Path, db_url: Option<&str>) -> anyhow::Result<i32> {
    println!("rtc-admin {}", env!("CARGO_PKG_VERSION"));
    match xmppd_binary() {
        Some(bin) => {
            let version = std::process::Command::new(&bin)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|| "version unknown".to_owned());
            println!("xmppd: {} ({version})", bin.display());
        }
        None => println!("xmppd: not found next to rtc-admin or in PATH"),
    }
    let path = config_dir.join(XMPPD_CONFIG_FILE);
    let cfg = match XmppConfig::load(&path) {
        Ok(c) => {
            println!("config: {}", path.display());
            Some(c)
        }
        Err(e) => {
            println!("config: {e:#}");
            None
        }
    };
    if let Some(cfg) = &cfg {
        println!("vhosts-available: {}", cfg.available_dir().display());
        println!("vhosts-enabled: {}", cfg.enabled_dir().display());
        println!("certificates: {}", cfg.certs_dir().display());
        println!("hosts:");
        match cfg.enabled_hosts() {
            Ok(hosts) if hosts.is_empty() => println!("  (none enabled)"),
            Ok(hosts) => {
                for host in hosts {
                    match host {
                        Ok(h) => {
                            let components = h.components();
                            if components.is_empty() {
                                println!("  {}", h.domain());
                            } else {
                                println!(
                                    "  {} (components: {})",
                                    h.domain(),
                                    components.join(", ")
                                );
                            }
                        }
                        Err(e) => println!("  {e:#}"),
                    }
                }
            }
            Err(e) => println!("  {e:#}"),
        }
    }
    let url = match (db_url, &cfg) {
        (Some(u), _) => Some(u.to_owned()),
        (None, Some(c)) => c.require_database_url().ok(),
        (None, None) => None,
    };
    if let Some(url) = url {
        println!("database: {}", describe_database(&url));
    }
    Ok(0)
}

/// The engine and account count of a database, without creating anything: a SQLite
/// file that does not exist is reported as such rather than created.
fn describe_database(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    let sqlite_file = if lower.contains("://") && !lower.starts_with("sqlite:") {
        None
    } else {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        Some(path.split('?').next().unwrap_or(path).to_owned())
    };
    if let Some(file) = &sqlite_file {
        if file != ":memory:" && !Path::new(file).exists() {
            return format!("SQLite {file} (not created yet: xmppd creates it at start)");
        }
    }
    crate::block_on(async {
        match Store::connect(url).await {
            Err(e) => format!("{e}"),
            Ok(store) => {
                let engine = match store.backend() {
                    rtc_store::Backend::Sqlite => "SQLite",
                    rtc_store::Backend::Postgres => "PostgreSQL",
                    rtc_store::Backend::Mysql => "MariaDB/MySQL",
                };
                let accounts = match store.xmpp().list_accounts(None).await {
                    Ok(a) => format!("{} accounts", a.len()),
                    Err(_) => "no XMPP tables yet".to_owned(),
                };
                let text = format!("{engine} {} ({accounts})", store.url());
                store.close().await;
                text
            }
        }
    })
}

/// `xmppd` next to this executable (an installed suite, or cargo's target directory),
/// else in PATH.
fn xmppd_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("xmppd")));
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("xmppd"));
    beside.into_iter().chain(in_path).find(|p| p.is_file())
}

/// `prosodyctl status`: exit 0 when xmppd answers, 1 when it does not.
fn status(config_dir: &Path) -> anyhow::Result<i32> {
    let cfg = XmppConfig::load_from_dir(config_dir)?;
    if let Some(addr) = cfg.metrics_address() {
        match probe::xmppd_metrics(addr, probe::PROBE_TIMEOUT) {
            Ok(lines) => {
                let gauge =
                    |name| probe::sample(&lines, name).map_or("?".to_owned(), |v| v.to_string());
                println!(
                    "xmppd is running: {} client connections, {} sessions (metrics at {addr})",
                    gauge("xmppd_c2s_connections"),
                    gauge("xmppd_sessions")
                );
                return Ok(0);
            }
            Err(e) => eprintln!("{e:#}; trying the client port"),
        }
    }
    let Some((addr, tls)) = cfg.c2s_address()? else {
        bail!(
            "{}: no client port (c2s-ports, c2s-direct-tls-ports) to probe",
            cfg.path.display()
        );
    };
    let domain = cfg
        .enabled_hosts()
        .ok()
        .and_then(|hosts| hosts.into_iter().find_map(Result::ok))
        .map_or_else(|| "localhost".to_owned(), |h| h.domain());
    match probe::c2s(addr, tls, &domain, probe::PROBE_TIMEOUT) {
        Ok(probe::C2sAnswer::Xmpp) => {
            println!("xmppd is running: {addr} answers XMPP streams for {domain}");
            Ok(0)
        }
        Ok(probe::C2sAnswer::Accepted) if tls => {
            println!("xmppd is running: {addr} (direct TLS) accepts connections");
            Ok(0)
        }
        Ok(probe::C2sAnswer::Accepted) => {
            println!("xmppd is not answering: something accepts connections on {addr} but sends no XMPP stream");
            Ok(1)
        }
        Err(e) => {
            println!("xmppd is not running: nothing accepts connections on {addr} ({e})");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids_are_normalised() {
        assert_eq!(
            parse_jid("Juliet@Falcot.COM.").unwrap(),
            ("juliet".to_owned(), "falcot.com".to_owned())
        );
        for bad in [
            "juliet",
            "@falcot.com",
            "juliet@",
            "juliet@falcot.com/pc",
            "ju liet@falcot.com",
            "a\u{7}@x",
        ] {
            assert!(parse_jid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_verify_with_the_password() {
        let s = new_secrets("pencil", 4096);
        for (hash, row) in [
            (ScramHash::Sha1, s.sha1.unwrap()),
            (ScramHash::Sha256, s.sha256.unwrap()),
        ] {
            assert_eq!(row.salt.len(), SALT_LEN);
            assert_eq!(row.iterations, 4096);
            assert_eq!(
                (row.stored_key, row.server_key),
                scram::derive_keys(hash, "pencil", &row.salt, 4096)
            );
        }
        // A fresh salt every time.
        assert_ne!(
            new_secrets("pencil", 4096).sha1.unwrap().salt,
            new_secrets("pencil", 4096).sha1.unwrap().salt
        );
    }
}
