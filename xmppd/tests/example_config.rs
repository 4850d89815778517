//! The shipped example configuration (`xmppd/xmppd.toml`, installed as
//! /etc/rtc/xmppd.toml, and `xmppd/vhosts-available/example.org.toml`) is valid and
//! documents every key, and configuration errors name where they come from: the file and
//! key, or the environment variable.

use rtc_tests::example_config::{
    assert_documents, check_config, check_config_with_env, struct_keys,
};
use std::path::{Path, PathBuf};

fn xmppd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xmppd")
}

fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The examples installed as an administrator would: the main file, the host file in
/// vhosts-available, linked from vhosts-enabled, and a certificate where the host file
/// says (`../certs/example.org.crt`, relative to the real file).
fn install_examples() -> (rtc_tests::tempfile::TempDir, PathBuf) {
    let dir = rtc_tests::tempfile::tempdir().unwrap();
    let etc = dir.path();
    let main = etc.join("xmppd.toml");
    std::fs::copy(shipped("xmppd.toml"), &main).unwrap();
    std::fs::create_dir_all(etc.join("vhosts-available")).unwrap();
    std::fs::create_dir_all(etc.join("vhosts-enabled")).unwrap();
    std::fs::create_dir_all(etc.join("certs")).unwrap();
    std::fs::copy(
        shipped("vhosts-available/example.org.toml"),
        etc.join("vhosts-available/example.org.toml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../vhosts-available/example.org.toml",
        etc.join("vhosts-enabled/example.org.toml"),
    )
    .unwrap();
    rtc_tests::self_signed_files(
        &etc.join("certs"),
        &["example.org", "conference.example.org"],
    );
    (dir, main)
}

fn check(main: &Path) -> rtc_tests::ToolOutput {
    check_config(xmppd_bin(), main)
}

#[test]
fn shipped_example_config_is_valid() {
    let (_dir, main) = install_examples();
    let out = check(&main);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("configuration is valid"), "{out}");
}

/// Every field of `Config`, `VhostFile` and `ComponentFile` (xmppd/src/config.rs)
/// appears in its example, set or commented out, under its kebab-case (Prosody) name.
#[test]
fn shipped_examples_document_every_key() {
    let source = std::fs::read_to_string(shipped("src/config.rs")).expect("config.rs");
    let main_keys = struct_keys(&source, "Config");
    assert!(
        main_keys.len() >= 21,
        "found only {main_keys:?} in struct Config"
    );
    let mut host_keys = struct_keys(&source, "VhostFile");
    host_keys.extend(struct_keys(&source, "ComponentFile"));
    assert!(host_keys.contains(&"type".to_string()), "{host_keys:?}");

    assert_documents(&shipped("xmppd.toml"), &main_keys);
    assert_documents(&shipped("vhosts-available/example.org.toml"), &host_keys);
}

#[test]
fn unknown_key_is_an_error_naming_file_and_key() {
    let (dir, main) = install_examples();
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{text}\nc2s-require-encryptoin = false\n")).unwrap();
    let out = check(&main);
    assert!(!out.success(), "{out}");
    assert!(
        out.text().contains(&*main.to_string_lossy()),
        "file not named: {out}"
    );
    assert!(
        out.text().contains("c2s-require-encryptoin"),
        "key not named: {out}"
    );

    // The same in a host file: that file is named.
    std::fs::write(&main, text).unwrap();
    let host = dir.path().join("vhosts-available/example.org.toml");
    let text = std::fs::read_to_string(&host).unwrap();
    std::fs::write(&host, format!("{text}max-history = 5\n")).unwrap();
    let out = check(&main);
    assert!(!out.success(), "{out}");
    assert!(
        out.text().contains("example.org.toml"),
        "file not named: {out}"
    );
    assert!(out.text().contains("max-history"), "key not named: {out}");
}

#[test]
fn bad_environment_override_names_the_variable() {
    let (_dir, main) = install_examples();
    let (ok, text) = check_config_with_env(xmppd_bin(), &main, "XMPPD_C2S_PORTS", "many");
    assert!(!ok, "accepted XMPPD_C2S_PORTS=many: {text}");
    assert!(
        text.contains("XMPPD_C2S_PORTS"),
        "variable not named: {text}"
    );
}
