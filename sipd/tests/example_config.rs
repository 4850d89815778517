//! The shipped example configuration (`sipd/sipd.toml`, installed as /etc/rtc/sipd.toml)
//! is valid and documents every key, and configuration errors name where they come from:
//! the file and key, or the environment variable.

use rtc_tests::run_tool;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

fn sipd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sipd")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipd.toml")
}

#[test]
fn shipped_example_config_is_valid() {
    let path = example();
    let path = path.to_string_lossy();
    let out = run_tool(
        sipd_bin(),
        &["--check-config", "--config", &path],
        CHECK_TIMEOUT,
    );
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("configuration is valid"), "{out}");
}

/// Every field of `Config` (sipd/src/config.rs) appears in the example, set or commented
/// out, under its kebab-case (Kamailio) name.
#[test]
fn shipped_example_config_documents_every_key() {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config.rs"))
            .expect("sipd/src/config.rs");
    let start = source
        .find("pub struct Config {")
        .expect("struct Config in config.rs");
    let body = &source[start..];
    let body = &body[..body.find("\n}").expect("end of struct Config")];
    let keys: Vec<String> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().replace('_', "-"))
        .collect();
    assert!(keys.len() > 25, "found only {keys:?} in struct Config");

    let example = std::fs::read_to_string(example()).expect("sipd.toml");
    let documented: Vec<&str> = example
        .lines()
        .map(|l| l.trim_start_matches('#').trim_start())
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .collect();
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !documented.contains(&k.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in sipd.toml: {missing:?}");
}

#[test]
fn unknown_key_is_an_error_naming_file_and_key() {
    let dir = rtc_tests::tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(
        &path,
        "domain = [\"falcot.com\"]\npike-remove-latncy = 60\n",
    )
    .unwrap();
    let path = path.to_string_lossy();
    let out = run_tool(
        sipd_bin(),
        &["--check-config", "--config", &path],
        CHECK_TIMEOUT,
    );
    assert!(!out.success(), "{out}");
    let text = out.text();
    assert!(text.contains(path.as_ref()), "file not named: {out}");
    assert!(text.contains("pike-remove-latncy"), "key not named: {out}");
}

#[test]
fn bad_environment_override_names_the_variable() {
    let out = Command::new(sipd_bin())
        .args(["--check-config", "--config"])
        .arg(example())
        .env("SIPD_MAX_EXPIRES", "abc")
        .output()
        .expect("running sipd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "accepted SIPD_MAX_EXPIRES=abc: {text}"
    );
    assert!(
        text.contains("SIPD_MAX_EXPIRES"),
        "variable not named: {text}"
    );
}
