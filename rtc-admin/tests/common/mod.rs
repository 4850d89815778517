//! Running the real `rtc-admin` binary from a test: a clean environment, a config
//! directory, and the exit status and output checked in one place.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn rtc_admin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtc-admin"));
    c.env_remove("RTC_CONFIG_DIR").env_remove("RUST_LOG");
    // Relative paths in config files must not depend on where the tool is started.
    c.current_dir("/");
    c
}

/// `rtc-admin --config-dir DIR ARGS...` with stdin closed.
pub fn admin(dir: &Path, args: &[&str]) -> Output {
    admin_with_input(dir, args, "")
}

/// `rtc-admin --config-dir DIR ARGS...` with `input` on stdin.
pub fn admin_with_input(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = rtc_admin()
        .arg("--config-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rtc-admin");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("wait for rtc-admin")
}

/// Runs and expects exit 0; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = admin(dir, args);
    assert!(
        out.status.success(),
        "rtc-admin {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs and expects exit 1 (a failed command, not a usage error); returns stderr.
pub fn fails(dir: &Path, args: &[&str]) -> String {
    let out = admin(dir, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "rtc-admin {args:?} should fail: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).expect("utf-8 output")
}
