//! Process start-up common to the daemons: the two arguments every daemon takes
//! (`--config`, `--check-config`), loading and checking the configuration before anything
//! else, logging set-up, and the exit code.

use clap::{Arg, ArgAction, Command};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What distinguishes one daemon's command line from another's.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// Binary name, used as the prefix of start-up errors (`sipd: ...`).
    pub name: &'static str,
    /// The daemon crate's version (`env!("CARGO_PKG_VERSION")`).
    pub version: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// `--help` text of `--config`.
    pub config_help: &'static str,
    /// Default configuration file.
    pub default_config: &'static str,
    /// Environment variable that may name the configuration file instead.
    pub config_env: &'static str,
}

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Args {
    pub config: PathBuf,
    /// Check the configuration and exit.
    pub check_config: bool,
}

impl Identity {
    /// Parses the process arguments (clap exits with its usage message on a bad one).
    pub fn args(&self) -> Args {
        let m = Command::new(self.name)
            .version(self.version)
            .about(self.about)
            .arg(
                Arg::new("config")
                    .short('c')
                    .long("config")
                    .help(self.config_help)
                    .default_value(self.default_config)
                    .env(self.config_env)
                    .value_parser(clap::value_parser!(PathBuf)),
            )
            .arg(
                Arg::new("check-config")
                    .long("check-config")
                    .help("Check the configuration and exit: 0 if valid, 1 with file, key and reason if not")
                    .action(ArgAction::SetTrue),
            )
            .get_matches();
        Args {
            config: m
                .get_one::<PathBuf>("config")
                .cloned()
                .unwrap_or_else(|| PathBuf::from(self.default_config)),
            check_config: m.get_flag("check-config"),
        }
    }
}

/// A daemon's `main`: parses the arguments, loads the configuration with `load` (an error
/// goes to stderr, exit 1, before any logging is set up, so `--check-config` and a unit
/// failing to start both show it plainly), stops there for `--check-config`, sets up
/// logging at the level `log_level` reads from the configuration (`RUST_LOG` wins), and
/// runs `run`. An error from `run` is logged with its whole chain of causes; exit 1.
pub fn main<C, E: Display>(
    id: &Identity,
    load: impl FnOnce(&Path) -> Result<C, E>,
    log_level: impl FnOnce(&C) -> String,
    run: impl FnOnce(C) -> anyhow::Result<()>,
) -> ExitCode {
    let args = id.args();
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", id.name);
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        println!("{}: configuration is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&log_level(&config));
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stdout with `filter` (a tracing filter string) unless `RUST_LOG` is set.
pub fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        // Colour only on a terminal: under systemd the journal would keep escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}
