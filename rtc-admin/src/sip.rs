//! `rtc-admin sip`: Kamailio's `kamctl` and `kamdbctl` for sipd, on the same database.
//!
//! The commands keep kamctl's names and shapes (`add`, `passwd`, `rm`, `show`, `ul show|rm|
//! add`, `online`, `ping`, `stats`) and kamdbctl's (`db create|drop|backup|restore`), so an
//! operator's habits and runbooks carry over. User names are `user` (in the default domain)
//! or `user@domain`; an address of record may also be written `sip:user@domain`.
//!
//! Flow: parse -> read `<config-dir>/sipd.toml` leniently when a command needs the default
//! domain, the database, the UDP listener or the metrics endpoint ([`config`]) -> open
//! the database named by `-b/--db-url` or by `db-url`, creating missing tables
//! (Kamailio's schema, so a fresh file works and a Kamailio database stays as it is) -> one
//! or two `rtc-store` calls -> print. `ping` and `stats` talk to the running sipd instead
//! ([`probe`]); `db backup`/`restore` move rows through a portable file ([`backup`]).
//!
//! A running sipd sees these changes through the database: new passwords within its
//! credential cache's lifetime (30 s, or at once on SIGHUP), `ul add`/`ul rm` when it
//! reloads its bindings on SIGHUP (it keeps them in memory).

mod backup;
mod config;
mod probe;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use rand::Rng as _;
use rtc_store::{LocationOp, LocationRow, Store};

use self::config::SipConfig;

/// SIP subscribers, user location and database tables (Kamailio kamctl/kamdbctl commands).
#[derive(Debug, Args)]
#[command(
    after_help = "USER is `user` (in the first `domain` of <config-dir>/sipd.toml) or \
                        `user@domain`; the digest realm is the user's domain (sipd challenges with the \
                        domain of the address of record).\n\
                        Example: rtc-admin sip add alice s3cret"
)]
pub struct SipArgs {
    /// Database URL, or SQLite file path; default: `db-url` of sipd.toml.
    #[arg(short = 'b', long = "db-url", value_name = "URL", global = true)]
    pub db_url: Option<String>,
    #[command(subcommand)]
    pub command: SipCommand,
}

#[derive(Debug, Subcommand)]
pub enum SipCommand {
    /// Add a subscriber (kamctl add).
    Add(PasswordArgs),
    /// Set a subscriber's password (kamctl passwd).
    Passwd(PasswordArgs),
    /// Delete a subscriber (kamctl rm); its registrations expire on their own.
    Rm {
        /// `user` or `user@domain`.
        user: String,
    },
    /// List subscribers, or show one and the digest algorithms it can use (kamctl show).
    Show {
        /// `user` or `user@domain`.
        user: Option<String>,
    },
    /// Registered contacts in the user location table (kamctl ul).
    #[command(subcommand)]
    Ul(UlCommand),
    /// List the addresses of record that have live registrations (kamctl online).
    Online,
    /// Send one SIP OPTIONS over UDP and print the answer and round trip (kamctl ping).
    Ping {
        /// Request-URI; its host (and port, default 5060) is where the request goes, except
        /// that one of sipd's own domains goes to sipd's first udp listener. Default: sipd's
        /// first domain, at that listener.
        uri: Option<String>,
    },
    /// Print the running sipd's sipd_* metrics from its Prometheus endpoint (kamctl stats).
    Stats,
    /// Create, drop, back up or restore the SIP tables (kamdbctl).
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// `user` or `user@domain`.
    pub user: String,
    pub password: String,
    /// Digest realm the HA1s are computed for; default: the user's domain, the realm
    /// sipd challenges with (Kamailio's `www_authorize("$td", ...)`).
    #[arg(long)]
    pub realm: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UlCommand {
    /// Show the bindings of one address of record, or of all.
    Show { aor: Option<String> },
    /// Remove every binding of an address of record.
    Rm { aor: String },
    /// Bind a contact to an address of record; EXPIRES in seconds, 0 (default) = permanent.
    Add {
        aor: String,
        contact: String,
        expires: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the SIP tables where missing (Kamailio 5.6 schema).
    Create,
    /// Drop the SIP tables, with all subscribers and registrations.
    Drop {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Write every subscriber and registration to FILE (`-` = stdout).
    Backup { file: PathBuf },
    /// Replace the SIP tables' contents with FILE's (`-` = stdin), in one transaction.
    Restore {
        file: PathBuf,
        /// Do not ask for confirmation when the tables are not empty.
        #[arg(long)]
        yes: bool,
    },
}

/// Loads `sipd.toml` on first use only: commands given everything on the command line
/// (`-b URL` and `user@domain`) work on a machine without it.
struct LazyConfig<'a> {
    dir: &'a Path,
    loaded: Option<SipConfig>,
}

impl LazyConfig<'_> {
    fn get(&mut self) -> anyhow::Result<&SipConfig> {
        if self.loaded.is_none() {
            self.loaded = Some(SipConfig::load_from_dir(self.dir)?);
        }
        Ok(self.loaded.as_ref().expect("just loaded"))
    }

    fn database_url(&mut self, given: Option<&str>) -> anyhow::Result<String> {
        match given {
            // A path given on the command line is relative to where the command runs.
            Some(url) => Ok(url.to_owned()),
            None => self.get()?.require_database_url(),
        }
    }

    /// Splits `user[@domain]`, filling in the default domain.
    fn user_domain(&mut self, user: &str) -> anyhow::Result<(String, String)> {
        let user = user
            .strip_prefix("sip:")
            .or_else(|| user.strip_prefix("sips:"))
            .unwrap_or(user);
        let (name, domain) = match user.rsplit_once('@') {
            Some((name, domain)) => (name, domain.to_ascii_lowercase()),
            None => (user, self.get()?.require_default_domain()?),
        };
        if name.is_empty() || domain.is_empty() || name.contains(char::is_whitespace) {
            bail!("{user:?} is not `user` or `user@domain`");
        }
        Ok((name.to_owned(), domain))
    }

    fn realm(&mut self, given: Option<&str>, domain: &str) -> String {
        given.unwrap_or(domain).to_owned()
    }
}

/// Runs one `rtc-admin sip` command line.
pub fn run(args: SipArgs, config_dir: &Path) -> anyhow::Result<()> {
    let mut cfg = LazyConfig {
        dir: config_dir,
        loaded: None,
    };
    match &args.command {
        SipCommand::Ping { uri } => return ping(uri.as_deref(), &mut cfg),
        SipCommand::Stats => {
            let addr = cfg.get()?.metrics_address()?;
            for line in probe::sipd_metrics(addr, probe::PROBE_TIMEOUT)? {
                println!("{line}");
            }
            return Ok(());
        }
        _ => {}
    }
    crate::block_on(database_command(&args, &mut cfg))
}

fn now_unix() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs())
}

/// `user@domain`, or `user` when the row has no domain (Kamailio's `use_domain = 0`).
fn aor_of(row: &LocationRow) -> String {
    match &row.domain {
        Some(d) => format!("{}@{d}", row.username),
        None => row.username.clone(),
    }
}

async fn database_command(args: &SipArgs, cfg: &mut LazyConfig<'_>) -> anyhow::Result<()> {
    let url = cfg.database_url(args.db_url.as_deref())?;
    let store = Store::connect(&url).await?;
    let result = match &args.command {
        SipCommand::Db(db) => db_command(db, &store).await,
        command => {
            // Idempotent: a fresh database gets Kamailio's tables, an existing one is
            // left as it is.
            store.migrate_sip().await?;
            subscriber_or_location_command(command, &store, cfg).await
        }
    };
    store.close().await;
    result
}

async fn subscriber_or_location_command(
    command: &SipCommand,
    store: &Store,
    cfg: &mut LazyConfig<'_>,
) -> anyhow::Result<()> {
    let sip = store.sip();
    match command {
        SipCommand::Add(a) => {
            let (user, domain) = cfg.user_domain(&a.user)?;
            let realm = cfg.realm(a.realm.as_deref(), &domain);
            if !sip
                .add_subscriber(&user, &domain, &realm, &a.password)
                .await?
            {
                bail!(
                    "subscriber `{user}@{domain}` exists in {} (change its password with \
                     `rtc-admin sip passwd`)",
                    store.url()
                );
            }
        }
        SipCommand::Passwd(a) => {
            let (user, domain) = cfg.user_domain(&a.user)?;
            let realm = cfg.realm(a.realm.as_deref(), &domain);
            if !sip
                .set_password(&user, &domain, &realm, &a.password)
                .await?
            {
                bail!("no subscriber `{user}@{domain}` in {}", store.url());
            }
        }
        SipCommand::Rm { user } => {
            let (user, domain) = cfg.user_domain(user)?;
            if !sip.delete_subscriber(&user, &domain).await? {
                bail!("no subscriber `{user}@{domain}` in {}", store.url());
            }
        }
        SipCommand::Show { user: None } => {
            for (user, domain) in sip.list_subscribers(None).await? {
                println!("{user}@{domain}");
            }
        }
        SipCommand::Show { user: Some(user) } => {
            let (user, domain) = cfg.user_domain(user)?;
            let Some(c) = sip.credentials(&user, &domain).await? else {
                bail!("no subscriber `{user}@{domain}` in {}", store.url());
            };
            println!("user: {user}@{domain}");
            let mut algorithms = Vec::new();
            if !c.ha1_md5.is_empty() {
                algorithms.push("MD5");
            }
            if c.ha1_sha256.is_some() {
                algorithms.push("SHA-256");
            }
            println!("digest: {}", algorithms.join(" "));
            let now = now_unix()?;
            let live = sip
                .locations_for(&user, Some(&domain))
                .await?
                .iter()
                .filter(|r| r.is_live(now))
                .count();
            println!("registrations: {live}");
        }
        SipCommand::Ul(ul) => location_command(ul, store, cfg).await?,
        SipCommand::Online => {
            let now = now_unix()?;
            let mut aors: Vec<String> = sip
                .load_locations()
                .await?
                .iter()
                .filter(|r| r.is_live(now))
                .map(aor_of)
                .collect();
            aors.sort();
            aors.dedup();
            for aor in aors {
                println!("{aor}");
            }
        }
        SipCommand::Ping { .. } | SipCommand::Stats | SipCommand::Db(_) => {
            unreachable!("handled without the subscriber tables")
        }
    }
    Ok(())
}

async fn location_command(
    ul: &UlCommand,
    store: &Store,
    cfg: &mut LazyConfig<'_>,
) -> anyhow::Result<()> {
    let sip = store.sip();
    let now = now_unix()?;
    match ul {
        UlCommand::Show { aor } => {
            let rows = match aor {
                Some(aor) => {
                    let (user, domain) = cfg.user_domain(aor)?;
                    let rows = sip.locations_for(&user, Some(&domain)).await?;
                    if rows.is_empty() {
                        bail!("no registrations for `{user}@{domain}` in {}", store.url());
                    }
                    rows
                }
                None => sip.load_locations().await?,
            };
            print_bindings(rows, now);
        }
        UlCommand::Rm { aor } => {
            let (user, domain) = cfg.user_domain(aor)?;
            if sip.locations_for(&user, Some(&domain)).await?.is_empty() {
                bail!("no registrations for `{user}@{domain}` in {}", store.url());
            }
            sip.apply_location_batch(&[LocationOp::DeleteAor {
                username: user,
                domain: Some(domain),
            }])
            .await?;
        }
        UlCommand::Add {
            aor,
            contact,
            expires,
        } => {
            let (user, domain) = cfg.user_domain(aor)?;
            let scheme = contact.split(':').next().unwrap_or_default();
            if !["sip", "sips", "tel"]
                .iter()
                .any(|s| s.eq_ignore_ascii_case(scheme))
                || !contact.contains(':')
            {
                bail!("{contact:?} is not a sip:, sips: or tel: URI");
            }
            // Binding the same contact again refreshes it, as a REGISTER would (RFC 3261
            // §10.3 step 7), instead of adding a duplicate.
            let existing = sip
                .locations_for(&user, Some(&domain))
                .await?
                .into_iter()
                .find(|r| r.contact == *contact);
            let ruid = match &existing {
                Some(r) => r.ruid.clone(),
                None => format!("rtcadm-{:016x}", rand::thread_rng().gen::<u64>()),
            };
            let row = LocationRow {
                ruid: ruid.clone(),
                username: user,
                domain: Some(domain),
                contact: contact.clone(),
                expires: match expires.unwrap_or(0) {
                    0 => 0,
                    secs => now.saturating_add(secs),
                },
                q: 1.0,
                callid: format!("{ruid}@rtc-admin"),
                cseq: existing.as_ref().map_or(1, |r| r.cseq.saturating_add(1)),
                user_agent: "rtc-admin".to_owned(),
                last_modified: now,
                ..LocationRow::default()
            };
            sip.apply_location_batch(&[LocationOp::Upsert(row)]).await?;
        }
    }
    Ok(())
}

/// One block per address of record, its contacts below, in kamctl ul show's spirit.
fn print_bindings(mut rows: Vec<LocationRow>, now: u64) {
    rows.sort_by(|a, b| {
        (a.domain.as_deref(), &a.username, b.q, &a.contact)
            .partial_cmp(&(b.domain.as_deref(), &b.username, a.q, &b.contact))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut current: Option<String> = None;
    for r in &rows {
        let aor = aor_of(r);
        if current.as_deref() != Some(aor.as_str()) {
            println!("AOR: {aor}");
            current = Some(aor);
        }
        let expires = match r.expires {
            0 => "permanent".to_owned(),
            e if e > now => (e - now).to_string(),
            _ => "expired".to_owned(),
        };
        let q = if r.q >= 0.0 {
            format!(";q={:.2}", r.q)
        } else {
            String::new()
        };
        println!("    Contact: <{}>{q};expires={expires}", r.contact);
        let mut details = format!(
            "        ruid={} callid={} cseq={} user-agent={:?}",
            r.ruid, r.callid, r.cseq, r.user_agent
        );
        for (name, value) in [
            ("received", &r.received),
            ("path", &r.path),
            ("socket", &r.socket),
            ("instance", &r.instance),
        ] {
            if let Some(v) = value {
                details.push_str(&format!(" {name}={v}"));
            }
        }
        println!("{details}");
    }
}

async fn db_command(db: &DbCommand, store: &Store) -> anyhow::Result<()> {
    match db {
        DbCommand::Create => store.migrate_sip().await?,
        DbCommand::Drop { yes } => {
            let question = format!(
                "Drop the SIP tables (subscriber, subscriber_sha256, location) of {}, with every \
                 subscriber and registration?",
                store.url()
            );
            if !yes && !confirm(&question)? {
                bail!("nothing dropped");
            }
            store.drop_sip().await?;
        }
        DbCommand::Backup { file } => {
            store.migrate_sip().await?;
            let snapshot = store.sip().snapshot().await?;
            let now = now_unix()?;
            if file.as_os_str() == "-" {
                backup::write(&mut std::io::stdout().lock(), &snapshot, now)?;
            } else {
                use std::os::unix::fs::OpenOptionsExt as _;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(file)
                    .with_context(|| format!("cannot write {}", file.display()))?;
                let mut out = std::io::BufWriter::new(f);
                backup::write(&mut out, &snapshot, now)
                    .with_context(|| format!("writing {}", file.display()))?;
                out.into_inner()
                    .map_err(|e| anyhow!("writing {}: {}", file.display(), e.error()))?
                    .sync_all()?;
                eprintln!(
                    "backed up {} subscribers and {} registrations to {}",
                    snapshot.subscribers.len(),
                    snapshot.locations.len(),
                    file.display()
                );
            }
        }
        DbCommand::Restore { file, yes } => {
            let snapshot = if file.as_os_str() == "-" {
                backup::read(std::io::stdin().lock(), "stdin")?
            } else {
                let f = std::fs::File::open(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                backup::read(std::io::BufReader::new(f), &file.display().to_string())?
            };
            store.migrate_sip().await?;
            let sip = store.sip();
            let present = sip.counts().await?;
            if present.total() > 0 && !yes {
                let question = format!(
                    "{} holds {} subscribers and {} registrations; replace them with the {} \
                     subscribers and {} registrations of the backup?",
                    store.url(),
                    present.subscribers,
                    present.locations,
                    snapshot.subscribers.len(),
                    snapshot.locations.len()
                );
                if !confirm(&question)? {
                    bail!("nothing restored");
                }
            }
            sip.restore(&snapshot).await?;
            eprintln!(
                "restored {} subscribers and {} registrations",
                snapshot.subscribers.len(),
                snapshot.locations.len()
            );
        }
    }
    Ok(())
}

/// Asks on stderr and reads one line from stdin; only `y`/`yes` agrees. With stdin not a
/// terminal the question is still asked, so a script can pipe its answer.
fn confirm(question: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    let read = stdin.lock().read_line(&mut answer)?;
    // A terminal echoed the answer and its newline; a pipe or end of input did not.
    if read == 0 || !stdin.is_terminal() {
        eprintln!();
    }
    let answer = answer.trim();
    Ok(answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes"))
}

fn ping(uri: Option<&str>, cfg: &mut LazyConfig<'_>) -> anyhow::Result<()> {
    let (request_uri, to) = match uri {
        Some(uri) => {
            let target = probe::parse_uri(uri)?;
            let literal = target.host.parse::<std::net::IpAddr>().is_ok();
            // The config only matters for one of sipd's own domains without a port.
            let (serves, sipd_udp) = if literal || target.port.is_some() {
                (false, None)
            } else {
                match cfg.get() {
                    Ok(c) => (c.serves(&target.host), c.udp_listen_address()?),
                    Err(_) => (false, None),
                }
            };
            (
                uri.to_owned(),
                probe::destination(&target, serves, sipd_udp)?,
            )
        }
        None => {
            let c = cfg.get()?;
            let to = c.udp_listen_address()?.ok_or_else(|| {
                anyhow!(
                    "{}: `listen` has no udp: entry; pass a URI to ping",
                    c.path.display()
                )
            })?;
            let host = match c.require_default_domain() {
                Ok(domain) => domain,
                Err(_) => to.to_string(),
            };
            (format!("sip:{host}"), to)
        }
    };
    let reply = probe::ping(&request_uri, to, probe::PROBE_TIMEOUT)?;
    println!("{}", reply.status_line);
    println!(
        "from {} in {:.3} ms",
        reply.from,
        reply.round_trip.as_secs_f64() * 1000.0
    );
    Ok(())
}
