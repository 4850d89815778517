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
