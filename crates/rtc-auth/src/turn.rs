//! TURN credentials: long-term keys and the TURN REST API (ephemeral) scheme.
//!
//! Long-term credentials (RFC 8489 §9.2): the server never needs the password, only the
//! key derived from it, which it stores (coturn keeps it hex encoded in
//! `turnusers_lt.hmackey`) and uses as the HMAC key for MESSAGE-INTEGRITY (§14.5) or
//! MESSAGE-INTEGRITY-SHA256 (§14.6).
//!
//! REST API credentials (draft-uberti-behave-turn-rest-00 §2.2, coturn's
//! `use-auth-secret`): a web service sharing a secret with the TURN server hands clients
//! a username carrying an expiry time and a password that is an HMAC of that username,
//! so the TURN server can check them without a per-user database row.
//!
//! Strings are taken as given: SASLprep (RFC 4013) / OpaqueString (RFC 8265) preparation
//! of realm and password, required by RFC 8489 §9.2.2, is the caller's job.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;

/// The long-term key with the MD5 algorithm: `MD5(username ":" realm ":" password)`.
///
/// RFC 8489 §9.2.2 (and RFC 5389 §15.4 before it); this is the key for PASSWORD-ALGORITHM
/// MD5 (§18.5.1.1) and for clients that send no PASSWORD-ALGORITHMS at all. coturn stores
/// it hex encoded in `turnusers_lt.hmackey`.
pub fn key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    feed_credentials(&mut h, username, realm, password);
    h.finalize().into()
}

/// The long-term key with the SHA-256 algorithm: `SHA-256(username ":" realm ":" password)`.
///
/// RFC 8489 §9.2.2, selected by PASSWORD-ALGORITHM SHA-256 (§18.5.1.2).
pub fn key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    feed_credentials(&mut h, username, realm, password);
    h.finalize().into()
}

fn feed_credentials(h: &mut impl sha2::Digest, username: &str, realm: &str, password: &str) {
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
}

/// A long-term key as coturn stores it in `turnusers_lt.hmackey`.
///
/// coturn writes the key as lowercase hex; its length tells the algorithm the server was
/// configured with: 32 hex digits for MD5, 64 for SHA-256 (RFC 8489 §18.5.1).
#[derive(Clone, PartialEq, Eq)]
pub enum StoredKey {
    /// Key for PASSWORD-ALGORITHM MD5 (RFC 8489 §18.5.1.1).
    Md5([u8; 16]),
    /// Key for PASSWORD-ALGORITHM SHA-256 (RFC 8489 §18.5.1.2).
    Sha256([u8; 32]),
}

impl std::fmt::Debug for StoredKey {
    // A key is as good as the password for this realm: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredKey::Md5(_) => f.write_str("StoredKey::Md5(..)"),
            StoredKey::Sha256(_) => f.write_str("StoredKey::Sha256(..)"),
        }
    }
}

impl StoredKey {
    /// Parses a stored key. Surrounding whitespace is ignored because coturn's
    /// `hmackey` column is `char(128)`, which some engines pad with spaces; an optional
    /// `0x` prefix (as `turnadmin -k` prints the key) is accepted too.
    pub fn from_hex(s: &str) -> Option<StoredKey> {
        let s = s.trim();
        let s = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        match s.len() {
            32 => {
                let mut k = [0u8; 16];
                hex::decode_to_slice(s, &mut k).ok()?;
                Some(StoredKey::Md5(k))
            }
            64 => {
                let mut k = [0u8; 32];
                hex::decode_to_slice(s, &mut k).ok()?;
                Some(StoredKey::Sha256(k))
            }
            _ => None,
        }
    }

    /// Lowercase hex, exactly as coturn's `turnadmin -a` writes it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// The raw key, used as the HMAC key for MESSAGE-INTEGRITY (RFC 8489 §14.5).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            StoredKey::Md5(k) => k,
            StoredKey::Sha256(k) => k,
        }
    }
}

/// The REST API password for `username`: `base64(HMAC-SHA1(secret, username))`.
///
/// draft-uberti-behave-turn-rest-00 §2.2; SHA-1 is what coturn uses unless told
/// otherwise, and what every WebRTC credential service computes.
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Builds a REST API username: `"<expiry>:<user>"`, or just `"<expiry>"` when `user` is
/// empty (draft-uberti-behave-turn-rest-00 §2.2; ':' is coturn's default
/// `rest-api-separator`).
pub fn rest_username(expiry_unix: u64, user: &str) -> String {
    if user.is_empty() {
        expiry_unix.to_string()
    } else {
        format!("{expiry_unix}:{user}")
    }
}

/// Parses the expiry (Unix seconds) out of a REST API username, using ':' as separator.
///
/// See [`rest_expiry_with_separator`].
pub fn rest_expiry(username: &str) -> Option<u64> {
    rest_expiry_with_separator(username, ':')
}

/// Parses the expiry (Unix seconds) out of a REST API username with a configured
/// separator (coturn's `rest-api-separator`).
///
/// The timestamp is the part before the first separator (`"1700000000:alice"`) or the
/// whole name when there is no separator. Like coturn, when the part before the separator
/// is not all digits the timestamp is looked for after it instead (`"alice:1700000000"`),
/// and a leading separator is skipped. Unlike coturn (which uses `atol` and so reads
/// garbage as 0), anything that is not plain decimal digits gives `None`, so a malformed
/// name can never look like a valid credential.
pub fn rest_expiry_with_separator(username: &str, separator: char) -> Option<u64> {
    let digits = match username.split_once(separator) {
        None => username,
        Some(("", rest)) => rest,
        Some((head, _)) if is_decimal(head) => head,
        Some((_, tail)) => tail,
    };
    if is_decimal(digits) {
        digits.parse().ok()
    } else {
        None
    }
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_expiry_forms() {
        assert_eq!(rest_expiry("1700000000:alice"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry("alice:1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry(":1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000:a:b"), Some(1_700_000_000));
        assert_eq!(rest_expiry("alice"), None);
        assert_eq!(rest_expiry(""), None);
        assert_eq!(rest_expiry("17x:alice"), None);
        assert_eq!(rest_expiry("-5:alice"), None);
        assert_eq!(rest_expiry("99999999999999999999999:alice"), None);
        assert_eq!(
            rest_expiry_with_separator("1700000000-alice", '-'),
            Some(1_700_000_000)
        );
        assert_eq!(rest_expiry_with_separator("1700000000:alice", '-'), None);
    }

    #[test]
    fn rest_username_round_trips() {
        assert_eq!(rest_username(1_700_000_000, "alice"), "1700000000:alice");
        assert_eq!(rest_username(1_700_000_000, ""), "1700000000");
        assert_eq!(rest_expiry(&rest_username(42, "bob:with:colons")), Some(42));
    }

    #[test]
    fn stored_key_parsing() {
        assert!(StoredKey::from_hex("").is_none());
        assert!(StoredKey::from_hex("abcd").is_none());
        assert!(StoredKey::from_hex(&"zz".repeat(16)).is_none());
        let md5 = StoredKey::from_hex("8493FBC53BA582FB4C044C456BDC40EB   ").unwrap();
        assert!(matches!(md5, StoredKey::Md5(_)));
        assert_eq!(md5.to_hex(), "8493fbc53ba582fb4c044c456bdc40eb");
        assert_eq!(
            StoredKey::from_hex("0x8493fbc53ba582fb4c044c456bdc40eb"),
            Some(md5.clone())
        );
        assert_eq!(format!("{md5:?}"), "StoredKey::Md5(..)");
        let sha = StoredKey::from_hex(&"ab".repeat(32)).unwrap();
        assert!(matches!(sha, StoredKey::Sha256(_)));
        assert_eq!(sha.as_bytes().len(), 32);
    }
}
