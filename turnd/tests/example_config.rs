//! The shipped example configuration (`turnd/turnd.toml`, installed as /etc/rtc/turnd.toml)
//! is valid and documents every key, and configuration errors name where they come from:
//! the file and key, or the environment variable.

use rtc_tests::example_config::{
    assert_bad_env_named, assert_certificate_files_checked, assert_example_documents,
    assert_example_valid, assert_unknown_key_named,
};
use std::path::{Path, PathBuf};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_turnd")
}

fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn shipped_example_config_is_valid() {
    assert_example_valid(bin(), &shipped("turnd.toml"));
}

/// Every field of `Config` (turnd/src/config.rs) appears in the example, set or commented
/// out, under its kebab-case (coturn) name.
#[test]
fn shipped_example_config_documents_every_key() {
    assert_example_documents(
        &shipped("src/config.rs"),
        "Config",
        30,
        &shipped("turnd.toml"),
    );
}

#[test]
fn unknown_key_is_an_error_naming_file_and_key() {
    assert_unknown_key_named(
        bin(),
        "realm = \"falcot.com\"\nlistening-ip = [\"127.0.0.1\"]\nmin-prot = 50000\n",
        "min-prot",
    );
}

#[test]
fn bad_environment_override_names_the_variable() {
    assert_bad_env_named(bin(), &shipped("turnd.toml"), "TURND_MIN_PORT", "abc");
}

/// `--check-config` loads the certificate and key as start-up would: a missing or garbage
/// file, or a key of another certificate, fails naming the file and the setting.
#[test]
fn check_config_checks_the_certificate_files() {
    assert_certificate_files_checked(
        bin(),
        |cert, key| {
            format!(
                "realm = \"falcot.com\"\nlistening-ip = [\"127.0.0.1\"]\ncert = {:?}\npkey = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            )
        },
        "cert",
        "pkey",
    );
}
