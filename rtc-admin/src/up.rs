//! `rtc-admin up`: run a local instance in the foreground, like a tiny process supervisor.
//!
//! Flow: make sure the instance exists (`init` if `turnd.toml` is missing) -> start each
//! daemon of [`DAEMONS`] that has a config in the directory, in its own process group so a
//! terminal's Ctrl-C reaches only us and we stop the children in order -> forward their
//! output line by line prefixed with `[name]` -> wait for Ctrl-C/SIGTERM or for a daemon to
//! exit -> SIGTERM every daemon still running, SIGKILL what is left after a grace period.

use std::io::IsTerminal as _;
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
    crate::block_on(supervise(&dir))
}

async fn supervise(dir: &Path) -> anyhow::Result<i32> {
    // Signal handlers first: a SIGTERM arriving while daemons start must not kill us
    // with the default action and orphan them.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

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
        let mut command = Command::new(&binary);
        if !std::io::stdout().is_terminal() {
            // Colour codes make logs captured from a pipe unreadable (tracing honours this).
            command.env("NO_COLOR", "1");
        }
        let mut child = match command
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
        println!(
            "[rtc-admin] started {} (pid {}): {} --config {}",
            daemon.name,
            pid.map_or_else(|| "?".into(), |p| p.to_string()),
            binary.display(),
            config.display()
        );
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
            println!("[rtc-admin] SIGTERM: stopping");
            0
        }
        _ = int.recv() => {
            println!("[rtc-admin] interrupted: stopping");
            0
        }
        Some((index, status)) = exits.recv() => {
            running[index].exited = true;
            println!(
                "[rtc-admin] {} exited early ({}); stopping the others",
                running[index].name,
                describe(&status)
            );
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
                        println!(
                            "[rtc-admin] {} still running after {} s: killing it",
                            r.name,
                            STOP_GRACE.as_secs()
                        );
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
        println!(
            "[rtc-admin] {} stopped ({})",
            running[index].name,
            describe(&status)
        );
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
                    eprintln!("[{name}] {text}");
                } else {
                    println!("[{name}] {text}");
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
    println!("[rtc-admin] instance {}", dir.display());
    if let Ok(turn) = TurnConfig::load_from_dir(dir) {
        for uri in turn.uris() {
            println!("[rtc-admin]   {uri}");
        }
        if let Some(url) = turn.metrics_url() {
            println!("[rtc-admin]   metrics: {url}");
        }
    }
    if let Some(c) = DemoCredentials::load(dir) {
        println!(
            "[rtc-admin]   demo user: {} / {} (realm {})",
            c.user, c.password, c.realm
        );
        for u in &c.accounts {
            println!(
                "[rtc-admin]   SIP and XMPP account: {u}@{} / {}",
                c.realm, c.password
            );
        }
    }
    println!("[rtc-admin] Ctrl-C to stop");
}
