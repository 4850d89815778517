//! The shipped example configuration (`sipd/sipd.toml`, installed as /etc/rtc/sipd.toml)
//! is valid and documents every key, and configuration errors name where they come from:
//! the file and key, or the environment variable.

use rtc_tests::example_config::{
    assert_bad_env_named, assert_example_documents, assert_example_valid, assert_unknown_key_named,
};
use std::path::{Path, PathBuf};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sipd")
}

fn shipped(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn shipped_example_config_is_valid() {
    assert_example_valid(bin(), &shipped("sipd.toml"));
}

/// Every field of `Config` (sipd/src/config.rs) appears in the example, set or commented
/// out, under its kebab-case (Kamailio) name.
#[test]
fn shipped_example_config_documents_every_key() {
    assert_example_documents(
        &shipped("src/config.rs"),
        "Config",
        25,
        &shipped("sipd.toml"),
    );
}

#[test]
fn unknown_key_is_an_error_naming_file_and_key() {
    assert_unknown_key_named(
        bin(),
        "domain = [\"falcot.com\"]\npike-remove-latncy = 60\n",
        "pike-remove-latncy",
    );
}

#[test]
fn bad_environment_override_names_the_variable() {
    assert_bad_env_named(bin(), &shipped("sipd.toml"), "SIPD_MAX_EXPIRES", "abc");
}
