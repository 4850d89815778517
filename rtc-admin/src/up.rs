//! `rtc-admin up`: run a local instance in the foreground, like a tiny process supervisor.
//!
//! Flow: make sure the instance exists (`init` if `turnd.toml` is missing) -> refuse to
//! start if the pid file ([`PID_FILE`]) names processes a previous `up` left running ->
//! start each daemon of [`DAEMONS`] that has a config in the directory, in its own process
//! group so a terminal's Ctrl-C reaches only us and we stop the children in order ->
//! forward their output line by line prefixed with `[name]` -> wait for
//! Ctrl-C/SIGTERM/SIGHUP or for a daemon to exit -> SIGTERM every daemon still running,
//! SIGKILL what is left after a grace period -> remove the pid file.
//!
//! The daemons must not outlive `up` even when it cannot stop them itself (`kill -9`, a
//! crash): each is started through `rtc-admin exec-supervised` ([`exec_supervised`]), which
//! asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`, kept across
//! `execve`) and then becomes the daemon. Doing this in the child between `fork` and `exec`
//! would need `pre_exec`, i.e. unsafe code, which this crate forbids; a re-exec of our own
//! binary gets the same result in safe code at the cost of one extra `execve` per daemon.

use std::ffi::OsString;
use std::fmt::Display;
use std::io::{IsTerminal as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::Args;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::instance::{self, DemoCredentials, InitArgs, DAEMONS};
use crate::settings::{TurnConfig, TURND_CONFIG_FILE};

/// How long daemons get to exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// In the instance directory while `up` runs: `<program> <pid>` per line, `up` itself
/// first, then each daemon it started. The next `up` reads it to name the `up` that holds
/// the instance (the directory's `flock` says whether one does) or the daemons left over.
pub const PID_FILE: &str = "up.pid";

/// Writes one line to stdout, ignoring errors: after SIGHUP the terminal is gone and
/// `println!` would panic half-way through stopping the daemons.
fn say(line: impl Display) {
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// [`say`] for stderr.
fn say_err(line: impl Display) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Arguments of the hidden `exec-supervised` command, which `up` runs for each daemon.
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Pid of the `up` that must be alive for the daemon to run.
    #[arg(long)]
    pub parent: u32,
    /// The daemon's program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// Becomes the daemon `args.command` with SIGTERM armed for when `up` (our parent) dies.
/// Returns only on failure.
pub fn exec_supervised(args: &ExecArgs) -> anyhow::Result<i32> {
    use rustix::process::{getppid, set_parent_process_death_signal, Pid, Signal};
    // SIGTERM rather than SIGKILL: the daemon shuts down as on `systemctl stop`, finishing
    // its database writes; it has its own shutdown timeout.
    set_parent_process_death_signal(Some(Signal::TERM)).context("PR_SET_PDEATHSIG")?;
    // If `up` died before the call above, no signal will come: we have been reparented.
    let parent = u32::try_from(Pid::as_raw(getppid())).unwrap_or(0);
    if parent != args.parent {
        return Err(anyhow!(
            "`rtc-admin up` (pid {}) is gone: not starting {}",
            args.parent,
            Path::new(&args.command[0]).display()
        ));
    }
    let error = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .exec();
    Err(anyhow!(
        "cannot start {}: {error}",
        Path::new(&args.command[0]).display()
    ))
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Instance directory; initialised first if it has no turnd.toml.
    #[arg(long)]
    pub dir: PathBuf,
    /// Domain for a new instance (default localhost).
    #[arg(long)]
    pub domain: Option<String>,
    /// Port offset for a new instance (default 0).
    #[arg(long)]
    pub port_offset: Option<u16>,
}

/// A started daemon, from the supervisor's side.
struct Running {
    name: &'static str,
    pid: Option<u32>,
    /// Sending (or dropping) this makes the waiter task SIGKILL the child.
    kill: Option<oneshot::Sender<()>>,
    exited: bool,
}

/// Runs the instance; returns the process exit code.
pub fn run(args: &UpArgs) -> anyhow::Result<i32> {
    if !args.dir.join(TURND_CONFIG_FILE).exists() {
        instance::init(&InitArgs {
            dir: args.dir.clone(),
            domain: args.domain.clone().unwrap_or_else(|| "localhost".into()),
            port_offset: args.port_offset.unwrap_or(0),
            force: false,
        })?;
    } else if args.domain.is_some() || args.port_offset.is_some() {
        println!(
            "[rtc-admin] {} exists: --domain and --port-offset only apply to a new instance",
            args.dir.join(TURND_CONFIG_FILE).display()
        );
    }
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    let mut pids = PidFile::claim(&dir)?;
    let result = crate::block_on(supervise(&dir, &mut pids));
    pids.remove();
    result
}

/// A process recorded in the pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded {
    /// The program as the kernel names it (`/proc/PID/comm`), so that a pid reused by an
    /// unrelated process is not taken for a leftover.
    program: String,
    pid: u32,
}

impl Recorded {
    fn running(&self) -> bool {
        let proc = PathBuf::from(format!("/proc/{}", self.pid));
        let Ok(comm) = std::fs::read_to_string(proc.join("comm")) else {
            return false;
        };
        // A zombie (state Z or X, after the last `)` of the name) has exited already.
        let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        let state = state.rsplit(')').next().unwrap_or("").trim_start();
        comm.trim_end() == self.program && !state.starts_with(['Z', 'X'])
    }
}

/// `up`'s record of the processes it runs ([`PID_FILE`]), and its hold on the instance.
struct PidFile {
    path: PathBuf,
    /// `up` itself, then every daemon started.
    entries: Vec<Recorded>,
    /// The instance directory, exclusively `flock`ed while this `up` lives: the kernel
    /// drops the lock however we die (`kill -9` included), and the daemons do not inherit
    /// it (close-on-exec), so a held lock means exactly that an `up` still runs.
    _lock: std::fs::File,
}

impl PidFile {
    /// Takes the instance for this `up` and creates its pid file, after making sure that no
    /// other `up` holds the instance and that no daemon recorded by an earlier one still
    /// runs: a second `up` would otherwise start daemons that fail one by one on busy ports.
    /// Leftover daemons get the grace period first, to finish the SIGTERM the kernel sent
    /// them when their `up` died.
    fn claim(dir: &Path) -> anyhow::Result<PidFile> {
        use rustix::fs::{flock, FlockOperation};
        let path = dir.join(PID_FILE);
        let lock =
            std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        let previous = Self::read(&path);
        match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(up_running_error(&path, previous.first()));
            }
            Err(e) => return Err(anyhow!("cannot lock {}: {e}", dir.display())),
        }
        // The recorded `up` is gone (we hold the lock); its daemons may not be.
        let mut left: Vec<Recorded> = previous
            .into_iter()
            .skip(1)
            .filter(Recorded::running)
            .collect();
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while !left.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            left.retain(Recorded::running);
        }
        if !left.is_empty() {
            return Err(leftovers_error(&path, &left));
        }
        let file = PidFile {
            path,
            entries: vec![Recorded {
                program: own_program(),
                pid: std::process::id(),
            }],
            _lock: lock,
        };
        file.write()?;
        Ok(file)
    }

    fn read(path: &Path) -> Vec<Recorded> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let (program, pid) = line.rsplit_once(' ')?;
                Some(Recorded {
                    program: program.to_owned(),
                    pid: pid.parse().ok()?,
                })
            })
            .collect()
    }

    /// Records a started daemon.
    fn add(&mut self, program: &str, pid: u32) -> anyhow::Result<()> {
        self.entries.push(Recorded {
            program: program.to_owned(),
            pid,
        });
        self.write()
    }

    /// Replaces the file whole (write then rename), so a reader never sees half of it.
    fn write(&self) -> anyhow::Result<()> {
        let text: String = self
            .entries
            .iter()
            .map(|r| format!("{} {}\n", r.program, r.pid))
            .collect();
        let tmp = self.path.with_extension("pid.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Our own name as the kernel knows it, which is what the next `up` will compare.
fn own_program() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|c| c.trim_end().to_owned())
        .unwrap_or_else(|_| "rtc-admin".into())
}

/// What an `up` refused because another holds the instance says: who, and how to stop it.
fn up_running_error(path: &Path, up: Option<&Recorded>) -> anyhow::Error {
    let who = up.map_or_else(
        || format!("see {}", path.display()),
        |r| format!("pid {}", r.pid),
    );
    let stop = up.map_or_else(|| "kill PID".to_owned(), |r| format!("kill {}", r.pid));
    anyhow!(
        "{}: another `rtc-admin up` of this instance is still running ({who}). Stop it \
         first (Ctrl-C in its terminal, or `{stop}`: it stops its daemons), then run \
         `rtc-admin up` again",
        path.display()
    )
}

/// What an `up` refused because of daemons an earlier one left says: which processes
/// still run, and the command that stops them.
fn leftovers_error(path: &Path, left: &[Recorded]) -> anyhow::Error {
    let list = left
        .iter()
        .map(|r| format!("{} (pid {})", r.program, r.pid))
        .collect::<Vec<_>>()
        .join(", ");
    let pids = left
        .iter()
        .map(|r| r.pid.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    anyhow!(
        "{}: daemons of an earlier `rtc-admin up` are still running and hold the \
         instance's ports: {list}. Stop them with `kill {pids}` (`kill -9 {pids}` if they \
         do not exit), then run `rtc-admin up` again",
        path.display()
    )
}

async fn supervise(dir: &Path, pids: &mut PidFile) -> anyhow::Result<i32> {
    // Signal handlers first: a SIGTERM arriving while daemons start must not kill us
    // with the default action and leave the daemons to their death signal.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // The terminal closing (or an SSH session dropping) sends SIGHUP: stop as for SIGTERM.
    let mut hup = signal(SignalKind::hangup())?;
    let own_exe = std::env::current_exe().context("cannot find rtc-admin's own executable")?;

    let (exits_tx, mut exits) = mpsc::unbounded_channel::<(usize, std::io::Result<ExitStatus>)>();
    let mut running: Vec<Running> = Vec::new();
    let mut forwarders = Vec::new();
    for daemon in DAEMONS {
        let config = dir.join(format!("{}.toml", daemon.name));
        if !config.exists() {
            continue;
        }
        let binary = match locate(daemon.name) {
            Some(b) => b,
            None => {
                stop_all(&mut running, &mut exits).await;
                return Err(anyhow!(
                    "{}: `{}` was found neither next to rtc-admin nor on PATH \
                     (build it with `cargo build -p {}`)",
                    config.display(),
                    daemon.name,
                    daemon.name
                ));
            }
        };
        // `rtc-admin exec-supervised --parent US -- BINARY --config CONFIG` arms the death
        // signal and becomes the daemon, keeping its pid.
        let mut command = Command::new(&own_exe);
        if !std::io::stdout().is_terminal() {
            // Colour codes make logs captured from a pipe unreadable (tracing honours this).
            command.env("NO_COLOR", "1");
        }
        let mut child = match command
            .arg("exec-supervised")
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--")
            .arg(&binary)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                stop_all(&mut running, &mut exits).await;
                return Err(anyhow!("cannot start {}: {e}", binary.display()));
            }
        };
        let pid = child.id();
        say(format_args!(
            "[rtc-admin] started {} (pid {}): {} --config {}",
            daemon.name,
            pid.map_or_else(|| "?".into(), |p| p.to_string()),
            binary.display(),
            config.display()
        ));
        if let Some(out) = child.stdout.take() {
            forwarders.push(tokio::spawn(forward(daemon.name, out, false)));
        }
        if let Some(err) = child.stderr.take() {
            forwarders.push(tokio::spawn(forward(daemon.name, err, true)));
        }
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let index = running.len();
        let tx = exits_tx.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let _ = tx.send((index, status));
        });
        running.push(Running {
            name: daemon.name,
            pid,
            kill: Some(kill_tx),
            exited: false,
        });
        if let Some(pid) = pid {
            if let Err(e) = pids.add(daemon.name, pid) {
                stop_all(&mut running, &mut exits).await;
                return Err(e);
            }
        }
    }
    if running.is_empty() {
        return Err(anyhow!(
            "{}: no daemon configuration found (expected {TURND_CONFIG_FILE})",
            dir.display()
        ));
    }
    print_summary(dir);

    let code = tokio::select! {
        _ = term.recv() => {
            say("[rtc-admin] SIGTERM: stopping");
            0
        }
        _ = int.recv() => {
            say("[rtc-admin] interrupted: stopping");
            0
        }
        _ = hup.recv() => {
            say("[rtc-admin] SIGHUP (terminal closed): stopping");
            0
        }
        Some((index, status)) = exits.recv() => {
            running[index].exited = true;
            say(format_args!(
                "[rtc-admin] {} exited early ({}); stopping the others",
                running[index].name,
                describe(&status)
            ));
            1
        }
    };
    stop_all(&mut running, &mut exits).await;
    // The pipes close when the daemons exit; let the last lines through, but do not hang
    // on a grandchild that inherited them.
    for f in forwarders {
        let _ = tokio::time::timeout(Duration::from_secs(1), f).await;
    }
    Ok(code)
}

/// SIGTERM to every daemon still running, then SIGKILL to those alive after the grace.
async fn stop_all(
    running: &mut [Running],
    exits: &mut mpsc::UnboundedReceiver<(usize, std::io::Result<ExitStatus>)>,
) {
    for r in running.iter().filter(|r| !r.exited) {
        // The pid cannot have been reused: the waiter task has not reaped the child, or
        // its exit would have been recorded.
        if let Some(pid) = r.pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    let mut killed = false;
    while running.iter().any(|r| !r.exited) {
        let next = if killed {
            exits.recv().await
        } else {
            match tokio::time::timeout_at(deadline, exits.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    for r in running.iter_mut().filter(|r| !r.exited) {
                        say(format_args!(
                            "[rtc-admin] {} still running after {} s: killing it",
                            r.name,
                            STOP_GRACE.as_secs()
                        ));
                        if let Some(k) = r.kill.take() {
                            let _ = k.send(());
                        }
                    }
                    killed = true;
                    continue;
                }
            }
        };
        let Some((index, status)) = next else { break };
        running[index].exited = true;
        say(format_args!(
            "[rtc-admin] {} stopped ({})",
            running[index].name,
            describe(&status)
        ));
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Copies a child's output to ours, one `[name] line` at a time, so the interleaved
/// output of several daemons stays readable. Bytes that are not UTF-8 are replaced.
async fn forward(name: &'static str, stream: impl AsyncRead + Unpin, to_stderr: bool) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                if to_stderr {
                    say_err(format_args!("[{name}] {text}"));
                } else {
                    say(format_args!("[{name}] {text}"));
                }
            }
        }
    }
}

/// The daemon binary next to our own executable (a cargo target dir or an install
/// prefix ships them together), else the first one on PATH.
fn locate(name: &str) -> Option<PathBuf> {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    sibling.into_iter().chain(on_path).find(|p| p.is_file())
}

fn print_summary(dir: &Path) {
    say(format_args!("[rtc-admin] instance {}", dir.display()));
    if let Ok(turn) = TurnConfig::load_from_dir(dir) {
        for uri in turn.uris() {
            say(format_args!("[rtc-admin]   {uri}"));
        }
        if let Some(url) = turn.metrics_url() {
            say(format_args!("[rtc-admin]   metrics: {url}"));
        }
    }
    if let Some(c) = DemoCredentials::load(dir) {
        say(format_args!(
            "[rtc-admin]   demo user: {} / {} (realm {})",
            c.user, c.password, c.realm
        ));
        for u in &c.accounts {
            say(format_args!(
                "[rtc-admin]   SIP and XMPP account: {u}@{} / {}",
                c.realm, c.password
            ));
        }
    }
    say("[rtc-admin] Ctrl-C to stop");
}
