//! Passwords of coturn's web/telnet administrators (`admin_user.password`).
//!
//! coturn's `turnadmin -A` stores a string that *looks* like crypt(3) SHA-256-crypt but
//! is its own, simpler scheme: `"$5$" + hex(salt) + "$" + hex(SHA-256(salt || password))`
//! with an 8-byte random salt (84 characters in all). It is not the iterated
//! SHA-crypt algorithm, so the `sha-crypt` crate cannot read or write it; we implement
//! coturn's scheme so that a database shared with coturn keeps working both ways.
//! coturn also accepts a stored value that is not in this shape as a plain-text
//! password; [`verify`] does the same, for compatibility with hand-written rows.

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

const SALT_LEN: usize = 8;
const PREFIX: &str = "$5$";

/// Hashes `password` with a fresh random salt, in coturn's `admin_user` format.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    hash_with_salt(password, salt)
}

/// Hashes `password` with a given salt; deterministic, for tests and reproducible fixtures.
pub fn hash_with_salt(password: &str, salt: [u8; SALT_LEN]) -> String {
    format!(
        "{PREFIX}{}${}",
        hex::encode(salt),
        hex::encode(digest(&salt, password))
    )
}

/// Checks `password` against a stored `admin_user.password` value.
///
/// Accepts coturn's salted format (see the module doc) and, like coturn, a stored value
/// in any other shape compared as plain text. Comparisons are constant time.
pub fn verify(password: &str, stored: &str) -> bool {
    match parse(stored) {
        Some((salt, expected)) => crate::ct_eq(&digest(&salt, password), &expected),
        None => crate::ct_eq(password.as_bytes(), stored.as_bytes()),
    }
}

fn digest(salt: &[u8; SALT_LEN], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Splits a coturn-format value into salt and digest, or `None` if it is not one.
fn parse(stored: &str) -> Option<([u8; SALT_LEN], [u8; 32])> {
    let rest = stored.strip_prefix(PREFIX)?;
    let (salt_hex, digest_hex) = rest.split_once('$')?;
    let mut salt = [0u8; SALT_LEN];
    hex::decode_to_slice(salt_hex, &mut salt).ok()?;
    let mut expected = [0u8; 32];
    hex::decode_to_slice(digest_hex, &mut expected).ok()?;
    Some((salt, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_hashes_verify_and_differ() {
        let a = hash("s3cret");
        let b = hash("s3cret");
        assert_ne!(a, b, "salt must be random");
        assert_eq!(a.len(), 3 + 16 + 1 + 64);
        assert!(verify("s3cret", &a));
        assert!(verify("s3cret", &b));
        assert!(!verify("s3cret!", &a));
        assert!(!verify("", &a));
    }

    #[test]
    fn plain_text_fallback() {
        assert!(verify("magi", "magi"));
        assert!(!verify("magi", "mag"));
        // A damaged hash is not a hash: it only matches itself, as in coturn.
        assert!(!verify("x", "$5$zz$00"));
    }
}
