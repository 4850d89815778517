//! A daemon under test: config written to a directory, the real binary started with its
//! output captured to a log file there, readiness awaited, killed on drop.
//!
//! [`Setup`] is what every daemon's builder (`turnd`, `sipd`, `xmppd` modules) holds, and
//! [`builder_methods!`](crate::builder_methods) / [`running_methods!`](crate::running_methods)
//! give the builders and the running daemons the methods they share, so each module keeps
//! only what is its daemon's own.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a daemon may take to answer after being started.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);

/// How to tell that a daemon is ready to serve.
#[derive(Debug, Clone, Copy)]
pub enum Ready {
    /// A STUN Binding request sent over UDP to this address is answered (turnd).
    StunUdp(SocketAddr),
    /// A TCP connection to this address is accepted (SIP, XMPP).
    TcpConnect(SocketAddr),
}

/// A signal to send to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Term,
    /// SIGKILL: the daemon gets no chance to flush or clean up (durability tests).
    Kill,
}

pub const SIGHUP: Signal = Signal::Hup;
pub const SIGTERM: Signal = Signal::Term;

/// What a daemon's builder holds: the binary, a scratch directory (config, log, database,
/// certificates), the settings as raw TOML values by key, and the `/metrics` port if any.
#[derive(Debug)]
pub struct Setup {
    pub binary: PathBuf,
    pub dir: TempDir,
    pub settings: BTreeMap<String, String>,
    pub prometheus: Option<u16>,
}

impl Setup {
    /// A fresh directory named `{prefix}...` under the system's temporary directory.
    pub fn new(binary: &Path, prefix: &str) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temporary directory");
        Setup {
            binary: binary.to_owned(),
            dir,
            settings: BTreeMap::new(),
            prometheus: None,
        }
    }

    /// The settings as TOML lines, `key = value`.
    pub fn config_text(&self) -> String {
        self.settings
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    }

    /// Starts the binary on `config_text` with `--config`, waiting for `ready`.
    pub fn start(&self, config_text: &str, ready: Ready) -> Daemon {
        Daemon::start(
            &self.binary,
            &["--config", "{config}"],
            config_text,
            self.dir.path(),
            ready,
        )
    }
}

/// The builder methods every daemon's builder shares (`set`, `unset`, `prometheus`,
/// `dir`); the builder keeps its [`Setup`] in a field named `setup`. `$name` is the
/// daemon's name, for the documentation.
#[macro_export]
macro_rules! builder_methods {
    ($name:literal) => {
        /// Sets `key` to `toml_value` (written as is: strings need their quotes).
        pub fn set(mut self, key: &str, toml_value: &str) -> Self {
            self.setup
                .settings
                .insert(key.to_string(), toml_value.to_string());
            self
        }

        #[doc = concat!("Leaves `key` at ", $name, "'s default.")]
        pub fn unset(mut self, key: &str) -> Self {
            self.setup.settings.remove(key);
            self
        }

        /// Serves `/metrics` on a free port.
        pub fn prometheus(mut self) -> Self {
            let port = $crate::ports::free_udp_tcp_port();
            self.setup.prometheus = Some(port);
            self.set("prometheus", "true")
                .set("prometheus-port", &port.to_string())
        }

        /// The directory the config, log, database and certificates live in.
        pub fn dir(&self) -> &std::path::Path {
            self.setup.dir.path()
        }
    };
}

/// The methods every running daemon shares (`metrics`, `wait_metric`, `log`), for a struct
/// with the fields `daemon: Daemon` and `prometheus: Option<u16>`.
#[macro_export]
macro_rules! running_methods {
    () => {
        /// The `/metrics` text.
        pub fn metrics(&self) -> String {
            $crate::metrics::scrape_local(self.prometheus)
        }

        /// Waits (the daemon publishes once a second) until `series` is at least `min`;
        /// its value.
        pub fn wait_metric(&self, series: &str, min: f64) -> f64 {
            $crate::metrics::wait_at_least(self.prometheus, series, min)
        }

        pub fn log(&self) -> String {
            self.daemon.log_contents()
        }
    };
}

/// A running daemon. Dropping it kills the process.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    binary: PathBuf,
    /// As given to [`Daemon::start`], `{config}` not yet replaced.
    args: Vec<String>,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Writes `config_text` to `dir/daemon.toml`, starts `binary` with `args` (where the
    /// argument `{config}` is replaced by that path) and waits until `ready` holds.
    ///
    /// Panics, with the daemon's log, if it exits or is not ready within
    /// [`READY_DEADLINE`].
    pub fn start(
        binary: &Path,
        args: &[&str],
        config_text: &str,
        dir: &Path,
        ready: Ready,
    ) -> Daemon {
        let config = dir.join("daemon.toml");
        std::fs::write(&config, config_text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log = dir.join("daemon.log");
        let out = File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let err = out.try_clone().expect("cloning the log file handle");
        let config_arg = config.to_string_lossy().into_owned();
        let argv: Vec<&str> = args
            .iter()
            .map(|a| {
                if *a == "{config}" {
                    config_arg.as_str()
                } else {
                    a
                }
            })
            .collect();
        let child = Command::new(binary)
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut daemon = Daemon {
            child,
            binary: binary.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: dir.to_owned(),
            config,
            log,
        };
        daemon.wait_ready(ready);
        daemon
    }

    fn wait_ready(&mut self, ready: Ready) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "daemon exited during start-up ({status}); log:\n{}",
                    self.log_contents()
                );
            }
            let ok = match ready {
                Ready::StunUdp(addr) => stun_binding_answered(addr),
                Ready::TcpConnect(addr) => {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                }
            };
            if ok {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon not ready ({ready:?}) after {READY_DEADLINE:?}; log:\n{}",
                    self.log_contents()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` (nothing flushed, nothing cleaned up), then the same binary again with the
    /// same arguments, config file and directory; returns once `ready` holds. The log
    /// starts over.
    pub fn kill_and_restart(&mut self, ready: Ready) {
        self.signal(Signal::Kill);
        self.wait_exit(Duration::from_secs(5));
        let config = std::fs::read_to_string(&self.config).expect("config");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        *self = Daemon::start(&self.binary, &args, &config, &self.dir, ready);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file the daemon was started with (tests may rewrite it before a reload).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Sends `sig` to the daemon. Through `sh`'s built-in `kill`, which every system has,
    /// so the harness needs neither `unsafe` nor a signal crate.
    pub fn signal(&self, sig: Signal) {
        let name = match sig {
            Signal::Hup => "HUP",
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        };
        let status = Command::new("sh")
            .args(["-c", &format!("kill -s {name} {}", self.pid())])
            .status()
            .expect("running sh");
        assert!(status.success(), "kill -s {name} {} failed", self.pid());
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit; its exit status, or `None` if it is
    /// still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Waits up to `timeout` for `needle` to appear in the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_contents().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One STUN Binding request (RFC 8489 §3) over UDP; true if a success response came back.
fn stun_binding_answered(addr: SocketAddr) -> bool {
    let Ok(mut client) = crate::stun::StunClient::udp(addr) else {
        return false;
    };
    client.set_timeout(Duration::from_millis(200));
    client.binding().is_ok()
}
