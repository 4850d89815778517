//! Credential algorithms for the RTC suite, with no I/O.
//!
//! Daemons and the admin CLI fetch stored material (a hex key, a shared secret, an
//! admin password hash) from `rtc-store`, then call into this crate to derive or check
//! credentials; the result feeds the protocol core (for TURN, the key that verifies
//! MESSAGE-INTEGRITY, RFC 8489 §14.5). Nothing here reads the clock or touches a socket:
//! callers pass "now" in where an expiry matters.
//!
//! Modules:
//! - [`turn`]: long-term credential keys (RFC 8489 §9.2.2) and TURN REST API secrets.
//! - [`admin_password`]: the password format of coturn's `admin_user` table.
//! - [`sip`]: SIP digest HA1 and response checks (RFC 2617, RFC 7616, RFC 8760), with
//!   Kamailio's `ha1`/`ha1b` forms.
//! - [`scram`]: SCRAM key derivation (RFC 5802, RFC 7677): PBKDF2-HMAC, StoredKey and
//!   ServerKey, proof checks, and SASLprep in the practical subset; the SASL exchange
//!   itself lives in `xmpp-proto`'s `sasl` module.

#![forbid(unsafe_code)]

pub mod admin_password;
pub mod scram;
pub mod sip;
pub mod turn;

use subtle::ConstantTimeEq;

/// Compares two byte strings in time that depends only on their lengths.
///
/// Credential checks must not leak, through timing, how many leading bytes of a guess
/// were right; the length is not secret (it is fixed by the algorithm).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"abc", b""));
    }
}
