//! `rtc-admin`: the administration CLI of the RTC suite.
//!
//! It talks to the same storage (`rtc-store`) and reads the same config files as the
//! daemons, so nothing it does needs a running server:
//!
//! - `rtc-admin turn ...` is coturn's `turnadmin` with the same flags (`-a -u -r -p`, `-l`,
//!   `-s`...). The realm and the database come from `<config-dir>/turnd.toml` unless given
//!   on the command line; credential algorithms come from `rtc-auth`. See [`turn`].
//! - `rtc-admin sip ...` is Kamailio's `kamctl`/`kamdbctl` for sipd (`add`, `passwd`, `ul
//!   show`, `ping`, `db backup`...), on Kamailio's own tables; defaults come from
//!   `<config-dir>/sipd.toml`. See [`sip`].
//! - `rtc-admin xmpp ...` is Prosody's `prosodyctl` for xmppd (`adduser`, `passwd`,
//!   `deluser`, `check`, `cert import`, `about`, `status`); accounts go to xmppd's tables,
//!   hosts and certificates come from `<config-dir>/xmppd.toml` and its virtual-host
//!   files. See [`xmpp`].
//! - `rtc-admin init` writes a self-contained local instance (configs, certificate, user
//!   database, demo user) into a directory. See [`instance`].
//! - `rtc-admin up` starts that instance's daemons in the foreground and stops them on
//!   Ctrl-C. See [`up`].
//!
//! Data flow: clap parses the command line -> the command reads `turnd.toml` or
//! `sipd.toml` leniently ([`settings`], `sip::config`) when it needs the realm or domain,
//! the database or the listening ports -> one async `rtc-store` call on a current-thread
//! tokio runtime (the admin tool does one thing at a time, so a single thread is plenty)
//! -> the result is printed.

#![forbid(unsafe_code)]

mod instance;
mod settings;
mod sip;
mod turn;
mod up;
mod xmpp;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "rtc-admin",
    version,
    about = "Administer the RTC suite (TURN users and secrets, SIP subscribers and registrations, XMPP accounts, local instances)"
)]
struct Cli {
    /// Directory holding the daemons' configuration files (turnd.toml, sipd.toml, xmppd.toml...).
    #[arg(
        long,
        global = true,
        env = "RTC_CONFIG_DIR",
        default_value = "/etc/rtc"
    )]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// TURN users, admins, REST secrets and realm options (coturn turnadmin flags).
    Turn(Box<turn::TurnArgs>),
    /// SIP subscribers, registrations and database tables (Kamailio kamctl/kamdbctl commands).
    Sip(Box<sip::SipArgs>),
    /// XMPP accounts, configuration and certificate checks (Prosody prosodyctl commands).
    Xmpp(Box<xmpp::XmppArgs>),
    /// Write a ready-to-run local instance (configs, certificate, database, demo user).
    Init(instance::InitArgs),
    /// Run a local instance in the foreground (initialising it first if needed).
    Up(up::UpArgs),
    /// Internal to `up`: run a daemon that dies with its parent (see `up::exec_supervised`).
    #[command(hide = true)]
    ExecSupervised(up::ExecArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Turn(args) => turn::run(*args, &cli.config_dir).map(|()| 0),
        Command::Sip(args) => sip::run(*args, &cli.config_dir).map(|()| 0),
        Command::Xmpp(args) => xmpp::run(*args, &cli.config_dir),
        Command::Init(args) => instance::init(&args).map(|()| 0),
        Command::Up(args) => up::run(&args),
        Command::ExecSupervised(args) => up::exec_supervised(&args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rtc-admin: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Runs a future on a current-thread runtime: every command is a short sequence of
/// database calls (or, for `up`, a few child processes), which one thread serves.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
        .block_on(future)
}
