//! The shipped example configuration (`sipd/sipd.toml`, installed as /etc/rtc/sipd.toml)
//! is valid and documents every key, and configuration errors name where they come from:
//! the file and key, or the environment variable.

use rtc_tests::example_config::{
    assert_documents, check_config, check_config_with_env, struct_keys,
};
use std::path::{Path, PathBuf};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sipd")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipd.toml")
}

#[test]
fn shipped_example_config_is_valid() {
    let out = check_config(bin(), &example());
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
    let keys = struct_keys(&source, "Config");
    assert!(keys.len() > 25, "found only {keys:?} in struct Config");
    assert_documents(&example(), &keys);
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
    let out = check_config(bin(), &path);
    assert!(!out.success(), "{out}");
    let text = out.text();
    assert!(
        text.contains(&*path.to_string_lossy()),
        "file not named: {out}"
    );
    assert!(text.contains("pike-remove-latncy"), "key not named: {out}");
}

#[test]
fn bad_environment_override_names_the_variable() {
    let (ok, text) = check_config_with_env(bin(), &example(), "SIPD_MAX_EXPIRES", "abc");
    assert!(!ok, "accepted SIPD_MAX_EXPIRES=abc: {text}");
    assert!(
        text.contains("SIPD_MAX_EXPIRES"),
        "variable not named: {text}"
    );
}
