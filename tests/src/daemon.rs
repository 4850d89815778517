//! A daemon under test: config written to a directory, the real binary started with its
//! output captured to a log file there, readiness awaited, killed on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A running daemon. Dropping it kills the process.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
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
        let args: Vec<&str> = args
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
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut daemon = Daemon { child, config, log };
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
