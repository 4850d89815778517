//! `rtc-admin turn`: coturn's `turnadmin`, flag for flag, on the suite's database.
//!
//! turnadmin selects the operation with a flag (`-a`, `-d`, `-l`...) rather than a
//! subcommand, and operators have those command lines in scripts and runbooks, so they are
//! kept verbatim: one [`TurnArgs`] with an argument group holding the action flags (exactly
//! one required), plus a real `credentials` subcommand for what turnadmin never had.
//!
//! Flow: parse -> resolve the realm (`-r`, else `realm` from `turnd.toml`) -> open the
//! database named by `-b/-e/-M` or by `turnd.toml` -> create missing tables (coturn's
//! schema, so a fresh file works) -> one `rtc-store` call -> print.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use clap::{ArgGroup, Args, Subcommand};
use rtc_store::{RealmOption, Store};
use serde::Serialize;

use crate::settings::TurnConfig;

/// Database selection, named as in turnadmin; overrides `turnd.toml`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("database").multiple(false)))]
pub struct DbArgs {
    /// SQLite database file (turnadmin's -b/--db/--userdb); default: `userdb` of turnd.toml.
    #[arg(
        short = 'b',
        long = "userdb",
        visible_alias = "db",
        value_name = "PATH",
        group = "database"
    )]
    pub userdb: Option<String>,
    /// PostgreSQL connection URL; default: `psql-userdb` of turnd.toml.
    #[arg(
        short = 'e',
        long = "psql-userdb",
        value_name = "URL",
        group = "database"
    )]
    pub psql_userdb: Option<String>,
    /// MariaDB/MySQL connection URL; default: `mysql-userdb` of turnd.toml.
    #[arg(
        short = 'M',
        long = "mysql-userdb",
        value_name = "URL",
        group = "database"
    )]
    pub mysql_userdb: Option<String>,
}

/// The action flags other than `-g`, which the realm option values cannot go with.
///
/// Expressed as conflicts because clap counts a flag's implicit `false` as present, so
/// `requires = "set_realm_option"` on the values would never fire.
const NOT_SET_REALM_OPTION: [&str; 12] = [
    "key",
    "add",
    "delete",
    "list",
    "add_admin",
    "delete_admin",
    "list_admin",
    "set_secret",
    "show_secret",
    "delete_secret",
    "delete_all_secrets",
    "list_realm_options",
];

/// TURN users, admins, REST secrets and realm options (coturn `turnadmin` flags).
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("action").required(true).multiple(false).args([
        "key", "add", "delete", "list", "add_admin", "delete_admin", "list_admin",
        "set_secret", "show_secret", "delete_secret", "delete_all_secrets",
        "set_realm_option", "list_realm_options",
    ])),
    group(ArgGroup::new("realm_option").multiple(true).args(["user_quota", "total_quota", "max_bps"])),
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    after_help = "Without -r, the realm is `realm` of <config-dir>/turnd.toml; -l and -G then list every realm.\n\
                  Example: rtc-admin turn -a -u roland -r falcot.com -p secret"
)]
pub struct TurnArgs {
    #[command(subcommand)]
    pub command: Option<TurnCommand>,

    /// Print the long-term key of -u/-r/-p (0x + hex MD5), without touching the database.
    #[arg(short = 'k', long = "key", requires_all = ["user", "password"])]
    pub key: bool,
    /// Add or update a long-term user (-u, -p, -r).
    #[arg(short = 'a', long = "add", requires_all = ["user", "password"])]
    pub add: bool,
    /// Delete a long-term user (-u, -r).
    #[arg(short = 'd', long = "delete", requires = "user")]
    pub delete: bool,
    /// List long-term users as `user[realm]` (of -r, or of every realm).
    #[arg(short = 'l', long = "list")]
    pub list: bool,
    /// Add or update an admin account (-u, -p; -r restricts it to one realm).
    #[arg(short = 'A', long = "add-admin", requires_all = ["user", "password"])]
    pub add_admin: bool,
    /// Delete an admin account (-u).
    #[arg(short = 'D', long = "delete-admin", requires = "user")]
    pub delete_admin: bool,
    /// List admin accounts.
    #[arg(short = 'L', long = "list-admin")]
    pub list_admin: bool,
    /// Add a TURN REST API shared secret to the realm.
    #[arg(short = 's', long = "set-secret", value_name = "SECRET")]
    pub set_secret: Option<String>,
    /// Show the realm's REST API secrets.
    #[arg(short = 'S', long = "show-secret")]
    pub show_secret: bool,
    /// Delete one REST API secret of the realm.
    #[arg(short = 'X', long = "delete-secret", value_name = "SECRET")]
    pub delete_secret: Option<String>,
    /// Delete every REST API secret of the realm.
    #[arg(long = "delete-all-secrets")]
    pub delete_all_secrets: bool,
    /// Set realm options (--user-quota, --total-quota, --max-bps; 0 removes one).
    #[arg(short = 'g', long = "set-realm-option", requires = "realm_option")]
    pub set_realm_option: bool,
    /// List realm options (of -r, or of every realm).
    #[arg(short = 'G', long = "list-realm-options")]
    pub list_realm_options: bool,

    /// User name.
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Realm; default: `realm` of turnd.toml.
    #[arg(short = 'r', long = "realm")]
    pub realm: Option<String>,
    /// Password.
    #[arg(short = 'p', long = "password")]
    pub password: Option<String>,
    /// Concurrent allocations per user in the realm (with -g; 0 removes the override).
    #[arg(long = "user-quota", value_name = "N", conflicts_with_all = NOT_SET_REALM_OPTION)]
    pub user_quota: Option<u64>,
    /// Concurrent allocations in the realm (with -g; 0 removes the override).
    #[arg(long = "total-quota", value_name = "N", conflicts_with_all = NOT_SET_REALM_OPTION)]
    pub total_quota: Option<u64>,
    /// Bandwidth cap per session in bytes per second (with -g; 0 removes the override).
    #[arg(long = "max-bps", value_name = "N", conflicts_with_all = NOT_SET_REALM_OPTION)]
    pub max_bps: Option<u64>,

    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, Subcommand)]
pub enum TurnCommand {
    /// Print TURN REST API credentials (time-limited username and HMAC password) for a web app.
    Credentials(CredentialsArgs),
}

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The user the credentials are for (becomes `expiry:NAME`).
    #[arg(long)]
    pub user: String,
    /// Validity in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub ttl: u64,
    /// Shared secret; default: first `static-auth-secret` of turnd.toml, else the first
    /// secret of the realm in the database.
    #[arg(long)]
    pub secret: Option<String>,
    /// Realm whose database secrets are used; default: `realm` of turnd.toml.
    #[arg(short = 'r', long = "realm")]
    pub realm: Option<String>,
    /// Print one JSON object (`username`, `password`, `ttl`, `uris`) for web apps.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbArgs,
}

/// Loads `turnd.toml` on first use only: `-k -r REALM` and other self-contained commands
/// must work on a machine with no configuration at all.
struct LazyConfig<'a> {
    dir: &'a Path,
    loaded: Option<TurnConfig>,
}

impl LazyConfig<'_> {
    fn get(&mut self) -> anyhow::Result<&TurnConfig> {
        if self.loaded.is_none() {
            self.loaded = Some(TurnConfig::load_from_dir(self.dir)?);
        }
        Ok(self.loaded.as_ref().expect("just loaded"))
    }

    fn realm(&mut self, given: Option<&str>) -> anyhow::Result<String> {
        match given {
            Some(r) => Ok(r.to_owned()),
            None => self.get()?.require_realm(),
        }
    }

    fn database_url(&mut self, db: &DbArgs) -> anyhow::Result<String> {
        if let Some(url) = db.psql_userdb.clone().or_else(|| db.mysql_userdb.clone()) {
            return Ok(url);
        }
        if let Some(path) = &db.userdb {
            // A path given on the command line is relative to where the command runs.
            return Ok(path.clone());
        }
        self.get()?.require_database_url()
    }

    async fn store(&mut self, db: &DbArgs) -> anyhow::Result<Store> {
        let url = self.database_url(db)?;
        let store = Store::connect(&url).await?;
        // Idempotent: a fresh database file gets coturn's tables, an existing one is untouched.
        store.migrate_turn().await?;
        Ok(store)
    }
}

/// Runs one `rtc-admin turn` command line.
pub fn run(args: TurnArgs, config_dir: &Path) -> anyhow::Result<()> {
    let mut cfg = LazyConfig {
        dir: config_dir,
        loaded: None,
    };
    if let Some(TurnCommand::Credentials(c)) = &args.command {
        return crate::block_on(credentials(c, &mut cfg));
    }
    if args.key {
        let (user, password) = user_password(&args)?;
        let realm = cfg.realm(args.realm.as_deref())?;
        // turnadmin prints the key with a 0x prefix; turnd's `user = ["name:0x..."]` takes it.
        println!(
            "0x{}",
            hex::encode(rtc_auth::turn::key_md5(user, &realm, password))
        );
        return Ok(());
    }
    crate::block_on(database_action(&args, &mut cfg))
}

fn user_password(args: &TurnArgs) -> anyhow::Result<(&str, &str)> {
    // clap's `requires` guarantees both; this only guards against a future refactor.
    match (&args.user, &args.password) {
        (Some(u), Some(p)) => Ok((u, p)),
        _ => bail!("-u/--user and -p/--password are required"),
    }
}

fn user(args: &TurnArgs) -> anyhow::Result<&str> {
    args.user
        .as_deref()
        .ok_or_else(|| anyhow!("-u/--user is required"))
}

async fn database_action(args: &TurnArgs, cfg: &mut LazyConfig<'_>) -> anyhow::Result<()> {
    // Listings without -r show every realm, as turnadmin does; everything else acts on one.
    let listing = args.list || args.list_realm_options || args.list_admin;
    let realm = match (&args.realm, listing || args.add_admin || args.delete_admin) {
        (Some(r), _) => Some(r.clone()),
        (None, false) => Some(cfg.realm(None)?),
        (None, true) => None,
    };
    let store = cfg.store(&args.db).await?;
    let turn = store.turn();
    let one_realm = || {
        realm
            .clone()
            .expect("realm resolved for non-listing actions")
    };

    if args.add {
        let (name, password) = user_password(args)?;
        let realm = one_realm();
        let key = rtc_auth::turn::key_md5(name, &realm, password);
        turn.add_user(&realm, name, &hex::encode(key)).await?;
    } else if args.delete {
        let (name, realm) = (user(args)?, one_realm());
        if !turn.delete_user(&realm, name).await? {
            bail!("no user `{name}` in realm `{realm}` in {}", store.url());
        }
    } else if args.list {
        for (realm, name) in turn.list_users(realm.as_deref()).await? {
            println!("{name}[{realm}]");
        }
    } else if args.add_admin {
        let (name, password) = user_password(args)?;
        // No -r: a superuser (realm ''), as in coturn; the config's realm is not implied
        // because that would silently demote every admin created without -r.
        let realm = realm.unwrap_or_default();
        turn.add_admin(name, &realm, &rtc_auth::admin_password::hash(password))
            .await?;
    } else if args.delete_admin {
        let name = user(args)?;
        if !turn.delete_admin(name).await? {
            bail!("no admin `{name}` in {}", store.url());
        }
    } else if args.list_admin {
        for (name, realm) in turn.list_admins().await? {
            if realm.is_empty() {
                println!("{name}");
            } else {
                println!("{name}[{realm}]");
            }
        }
    } else if let Some(secret) = &args.set_secret {
        turn.add_secret(&one_realm(), secret).await?;
    } else if args.show_secret {
        for secret in turn.secrets(&one_realm()).await? {
            println!("{secret}");
        }
    } else if let Some(secret) = &args.delete_secret {
        let realm = one_realm();
        if !turn.delete_secret(&realm, secret).await? {
            bail!("realm `{realm}` has no such secret in {}", store.url());
        }
    } else if args.delete_all_secrets {
        turn.delete_all_secrets(Some(&one_realm())).await?;
    } else if args.set_realm_option {
        let realm = one_realm();
        for (opt, value) in [
            (RealmOption::UserQuota, args.user_quota),
            (RealmOption::TotalQuota, args.total_quota),
            (RealmOption::MaxBps, args.max_bps),
        ] {
            if let Some(v) = value {
                // turnadmin semantics: 0 means "no override", so the row goes away.
                turn.set_realm_option(&realm, opt, (v != 0).then_some(v))
                    .await?;
            }
        }
    } else if args.list_realm_options {
        for (realm, opt, value) in turn.list_realm_options(realm.as_deref()).await? {
            println!("{realm}: {opt}={value}");
        }
    }
    store.close().await;
    Ok(())
}

/// REST API credentials (draft-uberti-behave-turn-rest-00 §2.2) as a web app hands them
/// to a browser's `RTCPeerConnection`.
#[derive(Debug, Serialize)]
struct RestCredentials {
    username: String,
    password: String,
    ttl: u64,
    uris: Vec<String>,
}

async fn credentials(c: &CredentialsArgs, cfg: &mut LazyConfig<'_>) -> anyhow::Result<()> {
    if c.user.is_empty() {
        bail!("--user must not be empty");
    }
    let secret = match &c.secret {
        Some(s) => s.clone(),
        None => secret_from_config_or_db(c, cfg).await?,
    };
    // URIs are informative; without a config file the credentials are still usable.
    let uris = match &c.secret {
        Some(_) => cfg.get().map(|t| t.uris()).unwrap_or_default(),
        None => cfg.get()?.uris(),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs();
    let username = rtc_auth::turn::rest_username(now.saturating_add(c.ttl), &c.user);
    let password = rtc_auth::turn::rest_password(&secret, &username);
    let creds = RestCredentials {
        username,
        password,
        ttl: c.ttl,
        uris,
    };
    if c.json {
        println!("{}", serde_json::to_string(&creds)?);
    } else {
        println!("username: {}", creds.username);
        println!("password: {}", creds.password);
        println!("ttl: {}", creds.ttl);
        for uri in &creds.uris {
            println!("uri: {uri}");
        }
    }
    Ok(())
}

async fn secret_from_config_or_db(
    c: &CredentialsArgs,
    cfg: &mut LazyConfig<'_>,
) -> anyhow::Result<String> {
    let config = cfg.get()?;
    if let Some(s) = config.settings.static_auth_secret.first() {
        return Ok(s.clone());
    }
    let path = config.path.display().to_string();
    let realm = cfg.realm(c.realm.as_deref())?;
    let store = cfg.store(&c.db).await?;
    let secrets = store.turn().secrets(&realm).await?;
    store.close().await;
    secrets.into_iter().next().ok_or_else(|| {
        anyhow!(
            "no REST API secret: {path} has no `static-auth-secret` and realm `{realm}` has none \
             in the database (add one with `rtc-admin turn -s SECRET -r {realm}`, or pass --secret)"
        )
    })
}
