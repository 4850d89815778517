//! Checks every daemon makes of its shipped example configuration: it passes
//! `--check-config`, it shows every key of the config structs (set or commented out), and
//! errors name the file and key or the environment variable.

use crate::tool::{run_tool, ToolOutput};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// `binary --check-config --config config`.
pub fn check_config(binary: &str, config: &Path) -> ToolOutput {
    let path = config.to_string_lossy();
    run_tool(
        binary,
        &["--check-config", "--config", &path],
        CHECK_TIMEOUT,
    )
}

/// `--check-config` with one extra environment variable: (success, stdout + stderr).
pub fn check_config_with_env(
    binary: &str,
    config: &Path,
    var: &str,
    value: &str,
) -> (bool, String) {
    let out = Command::new(binary)
        .args(["--check-config", "--config"])
        .arg(config)
        .env(var, value)
        .output()
        .unwrap_or_else(|e| panic!("running {binary}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The keys of `pub struct <name> {` in a config source file: field names in kebab-case,
/// or their `#[serde(rename = "...")]`.
pub fn struct_keys(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} in config.rs"));
    let body = &source[start..];
    let body = &body[..body.find("\n}").expect("end of struct")];
    let mut keys = Vec::new();
    let mut renamed = None;
    for line in body.lines().map(str::trim) {
        if let Some(r) = line.strip_prefix("#[serde(rename = \"") {
            renamed = r.split('"').next().map(str::to_string);
        } else if let Some((field, _)) = line.strip_prefix("pub ").and_then(|l| l.split_once(':')) {
            keys.push(
                renamed
                    .take()
                    .unwrap_or_else(|| field.trim().replace('_', "-")),
            );
        }
    }
    keys
}

/// Keys an example file shows, set or commented out (`key = ...`, `#key = ...`), and its
/// `[[table]]` names.
pub fn documented(example: &str) -> Vec<String> {
    example
        .lines()
        .map(|l| l.trim_start_matches('#').trim_start())
        .filter_map(|l| {
            if let Some(t) = l.strip_prefix("[[") {
                return t.strip_suffix("]]").map(str::to_string);
            }
            l.split_once('=').map(|(k, _)| k.trim().to_string())
        })
        .collect()
}

/// Panics naming every key of `keys` that `example` does not show.
pub fn assert_documents(example: &Path, keys: &[String]) {
    let text =
        std::fs::read_to_string(example).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    let shown = documented(&text);
    let missing: Vec<&String> = keys.iter().filter(|k| !shown.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "not in {}: {missing:?}",
        example.display()
    );
}

/// `--check-config` of the shipped example passes.
pub fn assert_example_valid(binary: &str, example: &Path) {
    let out = check_config(binary, example);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("configuration is valid"), "{out}");
}

/// Every field of `pub struct <name>` in the daemon's `config_rs` (at least `min_keys`
/// of them, so a renamed struct cannot pass by finding nothing) appears in `example`.
pub fn assert_example_documents(config_rs: &Path, name: &str, min_keys: usize, example: &Path) {
    let source = std::fs::read_to_string(config_rs)
        .unwrap_or_else(|e| panic!("{}: {e}", config_rs.display()));
    let keys = struct_keys(&source, name);
    assert!(
        keys.len() > min_keys,
        "found only {keys:?} in struct {name}"
    );
    assert_documents(example, &keys);
}

/// A config file `text` holding the misspelt `key` is refused, naming the file and key.
pub fn assert_unknown_key_named(binary: &str, text: &str, key: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, text).unwrap();
    let out = check_config(binary, &path);
    assert!(!out.success(), "{out}");
    let said = out.text();
    assert!(
        said.contains(&*path.to_string_lossy()),
        "file not named: {out}"
    );
    assert!(said.contains(key), "key not named: {out}");
}

/// `var=value` in the environment over the shipped example is refused, naming `var`.
pub fn assert_bad_env_named(binary: &str, example: &Path, var: &str, value: &str) {
    let (ok, text) = check_config_with_env(binary, example, var, value);
    assert!(!ok, "accepted {var}={value}: {text}");
    assert!(text.contains(var), "variable not named: {text}");
}

/// `--check-config` loads the certificate and key as start-up would: for each broken pair
/// of [`crate::broken_cert_pairs`] (a missing or garbage file, a key of another
/// certificate) it fails naming the config file, the PEM file and the setting at fault
/// (`cert_key` or `key_key`); the good pair passes. `config(cert, key)` is the config text.
pub fn assert_certificate_files_checked(
    binary: &str,
    config: impl Fn(&Path, &Path) -> String,
    cert_key: &str,
    key_key: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let (good, broken) = crate::broken_cert_pairs(dir.path());
    let path = dir.path().join("daemon.toml");
    for b in &broken {
        std::fs::write(&path, config(&b.cert, &b.key)).unwrap();
        let out = check_config(binary, &path);
        assert!(!out.success(), "{} accepted: {out}", b.what);
        let text = out.text();
        assert!(
            text.contains(&*path.to_string_lossy()),
            "{}: config file not named: {out}",
            b.what
        );
        let file = b.bad_file.display().to_string();
        assert!(text.contains(&file), "{}: {file} not named: {out}", b.what);
        let key = if b.key_at_fault { key_key } else { cert_key };
        assert!(
            text.contains(&format!("`{key}`")),
            "{}: key {key} not named: {out}",
            b.what
        );
    }
    std::fs::write(&path, config(&good.cert, &good.key)).unwrap();
    let out = check_config(binary, &path);
    assert!(out.success(), "{out}");
}
