//! The shipped example configuration (`turnd/turnd.toml`, installed as /etc/rtc/turnd.toml)
//! is valid and documents every key, and configuration errors name where they come from:
//! the file and key, or the environment variable.

use rtc_tests::example_config::{
    assert_documents, check_config, check_config_with_env, struct_keys,
};
use std::path::{Path, PathBuf};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_turnd")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("turnd.toml")
}

#[test]
fn shipped_example_config_is_valid() {
    let out = check_config(bin(), &example());
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("configuration is valid"), "{out}");
}

/// Every field of `Config` (turnd/src/config.rs) appears in the example, set or commented
/// out, under its kebab-case (coturn) name.
#[test]
fn shipped_example_config_documents_every_key() {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config.rs"))
            .expect("turnd/src/config.rs");
    let keys = struct_keys(&source, "Config");
    assert!(keys.len() > 30, "found only {keys:?} in struct Config");
    assert_documents(&example(), &keys);
}

#[test]
fn unknown_key_is_an_error_naming_file_and_key() {
    let dir = rtc_tests::tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(
        &path,
        "realm = \"falcot.com\"\nlistening-ip = [\"127.0.0.1\"]\nmin-prot = 50000\n",
    )
    .unwrap();
    let out = check_config(bin(), &path);
    assert!(!out.success(), "{out}");
    let text = out.text();
    assert!(
        text.contains(&*path.to_string_lossy()),
        "file not named: {out}"
    );
    assert!(text.contains("min-prot"), "key not named: {out}");
}

#[test]
fn bad_environment_override_names_the_variable() {
    let (ok, text) = check_config_with_env(bin(), &example(), "TURND_MIN_PORT", "abc");
    assert!(!ok, "accepted TURND_MIN_PORT=abc: {text}");
    assert!(
        text.contains("TURND_MIN_PORT"),
        "variable not named: {text}"
    );
}

/// `--check-config` loads the certificate and key as start-up would: a missing or garbage
/// file, or a key of another certificate, fails naming the file and the setting.
#[test]
fn check_config_checks_the_certificate_files() {
    let dir = rtc_tests::tempfile::tempdir().unwrap();
    let (good, broken) = rtc_tests::broken_cert_pairs(dir.path());
    let path = dir.path().join("turnd.toml");
    let write = |cert: &Path, key: &Path| {
        std::fs::write(
            &path,
            format!(
                "realm = \"falcot.com\"\nlistening-ip = [\"127.0.0.1\"]\n\
                 cert = {:?}\npkey = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ),
        )
        .unwrap();
    };
    for b in &broken {
        write(&b.cert, &b.key);
        let out = check_config(bin(), &path);
        assert!(!out.success(), "{} accepted: {out}", b.what);
        let text = out.text();
        assert!(
            text.contains(&*path.to_string_lossy()),
            "{}: config file not named: {out}",
            b.what
        );
        let file = b.bad_file.display().to_string();
        assert!(text.contains(&file), "{}: {file} not named: {out}", b.what);
        let key = if b.key_at_fault { "pkey" } else { "cert" };
        assert!(
            text.contains(&format!("`{key}`")),
            "{}: key {key} not named: {out}",
            b.what
        );
    }
    write(&good.cert, &good.key);
    let out = check_config(bin(), &path);
    assert!(out.success(), "{out}");
}
