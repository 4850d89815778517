//! SIP digest authentication (RFC 3261 §22.4): the HA1 a registrar stores and the
//! `response` it checks.
//!
//! The digest scheme is HTTP's: RFC 2617 §3.2.2 defines it with MD5, RFC 7616 §3.4.1
//! generalises it to other hashes, and RFC 8760 §2 brings SHA-256 (and SHA-512/256) to
//! SIP. The server never needs the password, only
//! `HA1 = H(username ":" realm ":" password)`, which Kamailio keeps hex encoded in
//! `subscriber.ha1` (MD5 only; `rtc-store` keeps the SHA-256 one beside it). Kamailio's
//! second column `subscriber.ha1b` is `H(username "@" domain ":" realm ":" password)`, for
//! clients that put the domain into the digest username.
//!
//! Flow in a registrar: challenge with a realm and nonce -> the client answers with
//! `Authorization: Digest username=.., nonce=.., uri=.., qop=auth, nc=.., cnonce=..,
//! response=..` -> look up the stored HA1 of the user for the algorithm the client chose
//! -> [`verify_response`]. Nonce freshness and `nc` replay checks are the caller's: this
//! module has no clock and no state.
//!
//! Only `qop=auth` and the RFC 2069 form without qop are supported. `auth-int` (A2 with a
//! hash of the body) is not: no SIP user agent in practice uses it for REGISTER, and a
//! registrar that does not offer it never receives it.

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// A digest algorithm of RFC 7616 §3.3 / RFC 8760 §2, non-session (`-sess`) variants only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    /// `MD5` (RFC 2617 §3.2.1), the one every SIP client speaks.
    Md5,
    /// `SHA-256` (RFC 7616 §3.3, RFC 8760 §2.1).
    Sha256,
}

impl DigestAlgorithm {
    /// The token of the `algorithm` parameter: `"MD5"` or `"SHA-256"`.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// The algorithm for an `algorithm` parameter value, case-insensitively.
    ///
    /// The `-sess` variants (RFC 7616 §3.4.2) give `None`: their HA1 mixes in the nonce
    /// and cnonce, so a stored HA1 cannot serve them and the server never offers them.
    pub fn from_name(name: &str) -> Option<DigestAlgorithm> {
        if name.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else if name.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else {
            None
        }
    }

    /// Length of a hex digest of this algorithm (32 or 64).
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Md5 => 32,
            DigestAlgorithm::Sha256 => 64,
        }
    }

    /// Lowercase hex of `H(parts joined by ":")`, RFC 7616 §3.4's `H(data)`.
    fn hash_hex(self, parts: &[&str]) -> String {
        fn feed(h: &mut impl sha2::Digest, parts: &[&str]) {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    h.update(b":");
                }
                h.update(part.as_bytes());
            }
        }
        match self {
            DigestAlgorithm::Md5 => {
                let mut h = Md5::new();
                feed(&mut h, parts);
                hex::encode(h.finalize())
            }
            DigestAlgorithm::Sha256 => {
                let mut h = Sha256::new();
                feed(&mut h, parts);
                hex::encode(h.finalize())
            }
        }
    }
}

/// `HA1 = H(user ":" realm ":" password)` in lowercase hex (RFC 7616 §3.4.2; RFC 2617
/// §3.2.2.2 for MD5): Kamailio's `subscriber.ha1` for MD5.
///
/// Strings are hashed as given; like Kamailio, no Unicode normalisation is applied.
pub fn ha1(alg: DigestAlgorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(&[user, realm, password])
}

/// `H(user "@" domain ":" realm ":" password)` in lowercase hex: Kamailio's
/// `subscriber.ha1b`, the HA1 for clients whose digest `username` is `user@domain`.
pub fn ha1b(alg: DigestAlgorithm, user: &str, domain: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(&[&format!("{user}@{domain}"), realm, password])
}

/// The `response` parameter a client computes (RFC 7616 §3.4.1, RFC 2617 §3.2.2.1):
///
/// - with `qop = "auth"`: `H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)`;
/// - without qop (RFC 2069 compatibility): `H(HA1 ":" nonce ":" HA2)`;
///
/// where `HA2 = H(method ":" digest_uri)` (RFC 7616 §3.4.3 for `qop=auth`). `ha1_hex` is
/// the stored HA1; it is lowercased first, since the digest is computed over the lowercase
/// hex string. Missing `nc`/`cnonce` with a qop are taken as empty, which
/// [`verify_response`] refuses anyway. Only `auth` (or none) is meaningful as `qop`; see
/// the module documentation.
// The arguments are the fields of the Authorization header one to one, so that a caller
// passes what it parsed without assembling a struct first.
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    alg: DigestAlgorithm,
    ha1_hex: &str,
    nonce: &str,
    nc: Option<&str>,
    cnonce: Option<&str>,
    qop: Option<&str>,
    method: &str,
    digest_uri: &str,
) -> String {
    let ha1 = ha1_hex.to_ascii_lowercase();
    let ha2 = alg.hash_hex(&[method, digest_uri]);
    match qop {
        Some(qop) => alg.hash_hex(&[
            &ha1,
            nonce,
            nc.unwrap_or(""),
            cnonce.unwrap_or(""),
            qop,
            &ha2,
        ]),
        None => alg.hash_hex(&[&ha1, nonce, &ha2]),
    }
}

/// Checks a client's `response` against the stored HA1, in constant time
/// ([`crate::ct_eq`]) so that timing does not tell how much of a guess was right.
///
/// Refused outright: a `qop` other than `auth`, `qop=auth` without `nc` or `cnonce`
/// (RFC 7616 §3.4 makes both mandatory with a qop), and a response that is not a hex
/// digest of the algorithm's length. Hex case is ignored (some clients send uppercase).
#[allow(clippy::too_many_arguments)]
pub fn verify_response(
    alg: DigestAlgorithm,
    ha1_hex: &str,
    nonce: &str,
    nc: Option<&str>,
    cnonce: Option<&str>,
    qop: Option<&str>,
    method: &str,
    digest_uri: &str,
    response: &str,
) -> bool {
    let qop_ok = match qop {
        None => true,
        Some(q) => q.eq_ignore_ascii_case("auth") && nc.is_some() && cnonce.is_some(),
    };
    if !qop_ok {
        return false;
    }
    if response.len() != alg.hex_len() || ha1_hex.len() != alg.hex_len() {
        return false;
    }
    // The qop token enters the hash as the client sent it (RFC 7616 §3.4.1).
    let expected = digest_response(alg, ha1_hex, nonce, nc, cnonce, qop, method, digest_uri);
    crate::ct_eq(
        expected.as_bytes(),
        response.to_ascii_lowercase().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names() {
        assert_eq!(
            DigestAlgorithm::from_name("md5"),
            Some(DigestAlgorithm::Md5)
        );
        assert_eq!(
            DigestAlgorithm::from_name("sha-256"),
            Some(DigestAlgorithm::Sha256)
        );
        assert_eq!(DigestAlgorithm::from_name("MD5-sess"), None);
        assert_eq!(DigestAlgorithm::from_name("SHA-256-sess"), None);
        assert_eq!(DigestAlgorithm::from_name("SHA-512-256"), None);
        assert_eq!(DigestAlgorithm::from_name(""), None);
        for alg in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
            assert_eq!(DigestAlgorithm::from_name(alg.name()), Some(alg));
            assert_eq!(ha1(alg, "u", "r", "p").len(), alg.hex_len());
        }
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        let alg = DigestAlgorithm::Md5;
        let h = ha1(alg, "u", "r", "p");
        let ok = digest_response(
            alg,
            &h,
            "n",
            Some("00000001"),
            Some("c"),
            Some("auth"),
            "REGISTER",
            "sip:r",
        );
        assert!(verify_response(
            alg,
            &h,
            "n",
            Some("00000001"),
            Some("c"),
            Some("auth"),
            "REGISTER",
            "sip:r",
            &ok
        ));
        // auth-int, missing nc/cnonce, wrong length, other method, other algorithm.
        assert!(!verify_response(
            alg,
            &h,
            "n",
            Some("00000001"),
            Some("c"),
            Some("auth-int"),
            "REGISTER",
            "sip:r",
            &ok
        ));
        assert!(!verify_response(
            alg,
            &h,
            "n",
            None,
            Some("c"),
            Some("auth"),
            "REGISTER",
            "sip:r",
            &ok
        ));
        assert!(!verify_response(
            alg,
            &h,
            "n",
            Some("00000001"),
            None,
            Some("auth"),
            "REGISTER",
            "sip:r",
            &ok
        ));
        assert!(!verify_response(
            alg,
            &h,
            "n",
            Some("00000001"),
            Some("c"),
            Some("auth"),
            "REGISTER",
            "sip:r",
            &ok[1..]
        ));
        assert!(!verify_response(
            alg,
            &h,
            "n",
            Some("00000001"),
            Some("c"),
            Some("auth"),
            "INVITE",
            "sip:r",
            &ok
        ));
        let sha = ha1(DigestAlgorithm::Sha256, "u", "r", "p");
        assert!(!verify_response(
            DigestAlgorithm::Sha256,
            &sha,
            "n",
            Some("00000001"),
            Some("c"),
            Some("auth"),
            "REGISTER",
            "sip:r",
            &ok
        ));
    }
}
