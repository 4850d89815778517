//! External programs (real clients such as coturn's `turnutils_*`, Python scripts) run with
//! a hard timeout, so a hung client fails its test instead of hanging the suite.

use std::fs::File;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a tool did. Output goes through files rather than pipes so that a tool whose
/// children keep a pipe open cannot block the harness after the timeout.
#[derive(Debug)]
pub struct ToolOutput {
    pub command: String,
    /// `None` if the tool was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// stdout followed by stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for ToolOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => writeln!(f, "`{}` exited with {s}", self.command)?,
            None => writeln!(f, "`{}` was killed at its timeout", self.command)?,
        }
        write!(f, "--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// A started tool whose stdout and stderr go to files in a private directory.
struct Captured {
    child: std::process::Child,
    command: String,
    _dir: tempfile::TempDir,
    out_path: std::path::PathBuf,
    err_path: std::path::PathBuf,
}

impl Captured {
    /// Panics if the program cannot be started (not installed: `scripts/test` installs the
    /// tools the suite needs).
    fn spawn(cmd: &str, args: &[&str], stdin: Stdio) -> Captured {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out_path = dir.path().join("stdout");
        let err_path = dir.path().join("stderr");
        let out = File::create(&out_path).expect("stdout file");
        let err = File::create(&err_path).expect("stderr file");
        let command = std::iter::once(cmd)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let child = Command::new(cmd)
            .args(args)
            .stdin(stdin)
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `{command}`: {e} (run scripts/test to install it)")
            });
        Captured {
            child,
            command,
            _dir: dir,
            out_path,
            err_path,
        }
    }

    fn stdout(&self) -> Vec<u8> {
        std::fs::read(&self.out_path).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.err_path).unwrap_or_default()).into_owned()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd args...` and kills it if it has not finished after `timeout`.
///
/// Panics if the program cannot be started (not installed: `scripts/test` installs the
/// tools the suite needs).
pub fn run_tool(cmd: &str, args: &[&str], timeout: Duration) -> ToolOutput {
    let mut c = Captured::spawn(cmd, args, Stdio::null());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match c.child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                c.kill();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for `{}`: {e}", c.command),
        }
    };
    ToolOutput {
        stdout: String::from_utf8_lossy(&c.stdout()).into_owned(),
        stderr: c.stderr(),
        command: c.command,
        status,
    }
}

/// What [`run_tool_feeding`] saw: the raw bytes the tool printed (binary protocol data,
/// say) and its diagnostics.
#[derive(Debug)]
pub struct FedOutput {
    pub command: String,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// `done` accepted the output before the timeout.
    pub done: bool,
}

/// Runs `cmd args...` with `input` written to its stdin, which stays open (tools such as
/// `openssl s_client` end their session when it closes), until `done(stdout so far)` holds
/// or `timeout` passes; then kills it.
pub fn run_tool_feeding(
    cmd: &str,
    args: &[&str],
    input: &[u8],
    timeout: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> FedOutput {
    use std::io::Write;
    let mut c = Captured::spawn(cmd, args, Stdio::piped());
    let stdin = c.child.stdin.take().map(|mut s| {
        // A tool that exits early (failed handshake) closes the pipe: not our error.
        let _ = s.write_all(input);
        let _ = s.flush();
        s
    });
    let deadline = Instant::now() + timeout;
    let mut finished = false;
    while Instant::now() < deadline {
        if done(&c.stdout()) {
            finished = true;
            break;
        }
        if matches!(c.child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill();
    drop(stdin);
    let stdout = c.stdout();
    FedOutput {
        done: finished || done(&stdout),
        stdout,
        stderr: c.stderr(),
        command: c.command,
    }
}

/// A background helper process (a test peer, say), killed when dropped.
#[derive(Debug)]
pub struct Background {
    child: std::process::Child,
    name: String,
}

impl Background {
    /// Starts `cmd args...` with output discarded.
    pub fn spawn(cmd: &str, args: &[&str]) -> Background {
        let child = Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e} (run scripts/test to install it)"));
        Background {
            child,
            name: cmd.to_string(),
        }
    }

    /// Panics if the process has already exited (it could not bind its port, say).
    pub fn assert_running(&mut self) {
        if let Ok(Some(s)) = self.child.try_wait() {
            panic!("`{}` exited early with {s}", self.name);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_kills_at_timeout() {
        let o = run_tool(
            "sh",
            &["-c", "echo out; echo err >&2"],
            Duration::from_secs(5),
        );
        assert!(o.success(), "{o}");
        assert_eq!(o.text(), "out\nerr\n");
        let started = Instant::now();
        let o = run_tool("sleep", &["30"], Duration::from_millis(200));
        assert!(o.timed_out());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
