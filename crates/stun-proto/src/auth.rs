//! Long-term credential checks (RFC 8489 §9.2, RFC 8656 §5) and stateless nonces.
//!
//! A nonce carries its own expiry and an HMAC over (expiry, client IP) keyed with a server
//! secret, so nothing is stored per client and every shard (or node sharing the secret)
//! accepts nonces issued by the others. Expired but authentic nonces get 438 Stale Nonce;
//! forged ones get 401.

use crate::attr;
use crate::message::Message;
use hmac::{Hmac, Mac};
use rtc_auth::turn::{key_md5, key_sha256, StoredKey};
use sha2::Sha256;
use std::net::IpAddr;

/// RFC 8489 §9.2: "obMatJos2" followed by the base64 of the 24-bit security feature set.
/// Implementations disagree on the bit order of that set (the RFC's own vector is
/// ambiguous), so we set both the most and the least significant bit: in either reading it
/// says "password algorithms supported, no username anonymity".
pub const NONCE_COOKIE: &str = "obMatJos2gAAB";

/// How long a nonce is valid: coturn's `stale-nonce` default.
pub const DEFAULT_NONCE_LIFETIME_SECS: u64 = 600;

/// Which password algorithm derived the key (RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    Md5,
    Sha256,
}

impl PasswordAlgorithm {
    fn from_code(c: u16) -> Option<Self> {
        match c {
            attr::ALGORITHM_MD5 => Some(Self::Md5),
            attr::ALGORITHM_SHA256 => Some(Self::Sha256),
            _ => None,
        }
    }
}

/// The PASSWORD-ALGORITHMS value the server offers, MD5 first so clients that can only use
/// keys stored by coturn (MD5) pick it (RFC 8489 §14.11: clients take the first they know).
pub fn password_algorithms_value() -> [u8; 8] {
    [0, 1, 0, 0, 0, 2, 0, 0]
}

/// The key-derivation inputs a server knows for a user.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Clear text (TURN REST passwords, `user = "name:password"` in the config): every
    /// algorithm can be derived.
    Password(String),
    /// A stored key (coturn's `hmackey`): only its own algorithm works.
    Stored(StoredKey),
}

impl Credential {
    /// The long-term key for `alg`, if this credential can provide it.
    pub fn key(&self, alg: PasswordAlgorithm, user: &str, realm: &str) -> Option<Vec<u8>> {
        match (self, alg) {
            (Credential::Password(p), PasswordAlgorithm::Md5) => {
                Some(key_md5(user, realm, p).to_vec())
            }
            (Credential::Password(p), PasswordAlgorithm::Sha256) => {
                Some(key_sha256(user, realm, p).to_vec())
            }
            (Credential::Stored(StoredKey::Md5(k)), PasswordAlgorithm::Md5) => Some(k.to_vec()),
            (Credential::Stored(StoredKey::Sha256(k)), PasswordAlgorithm::Sha256) => {
                Some(k.to_vec())
            }
            _ => None,
        }
    }
}

/// Issues and checks nonces.
#[derive(Clone)]
pub struct NonceKey {
    secret: [u8; 32],
    lifetime: u64,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceKey")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// Outcome of checking a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Authentic but expired: 438 Stale Nonce.
    Stale,
    /// Not one of ours (or for another client address): 401.
    Invalid,
}

impl NonceKey {
    /// `secret` comes from the caller's randomness (or a shared value for several nodes).
    pub fn new(secret: [u8; 32], lifetime_secs: u64) -> NonceKey {
        NonceKey {
            secret,
            lifetime: lifetime_secs,
        }
    }

    fn tag(&self, expiry: u64, ip: IpAddr) -> [u8; 12] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("key");
        mac.update(&expiry.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let out = mac.finalize().into_bytes();
        let mut t = [0u8; 12];
        t.copy_from_slice(&out[..12]);
        t
    }

    /// A fresh nonce for a client at `ip`.
    pub fn issue(&self, unix_now: u64, ip: IpAddr) -> String {
        let expiry = unix_now + self.lifetime;
        format!(
            "{NONCE_COOKIE}{:016x}{}",
            expiry,
            hex_lower(&self.tag(expiry, ip))
        )
    }

    pub fn check(&self, nonce: &str, unix_now: u64, ip: IpAddr) -> NonceCheck {
        let Some(rest) = nonce.strip_prefix(NONCE_COOKIE) else {
            return NonceCheck::Invalid;
        };
        if rest.len() != 16 + 24 || !rest.is_ascii() {
            return NonceCheck::Invalid;
        }
        let Ok(expiry) = u64::from_str_radix(&rest[..16], 16) else {
            return NonceCheck::Invalid;
        };
        let want = hex_lower(&self.tag(expiry, ip));
        if !rtc_auth::ct_eq(want.as_bytes(), &rest.as_bytes()[16..]) {
            return NonceCheck::Invalid;
        }
        if expiry <= unix_now {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }
}

fn hex_lower(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

/// Why a request's algorithm negotiation is refused (RFC 8489 §9.2.4 bullet list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmError {
    /// PASSWORD-ALGORITHMS differs from what we offered, or PASSWORD-ALGORITHM names one
    /// we did not offer, or only one of the two is present: 400.
    Mismatch,
}

/// The algorithm a request uses. Without either attribute the client is an RFC 5389 one
/// and MD5 applies (RFC 8489 §9.2.4).
pub fn negotiated_algorithm(msg: &Message<'_>) -> Result<PasswordAlgorithm, AlgorithmError> {
    match (
        msg.get(attr::PASSWORD_ALGORITHMS),
        msg.get(attr::PASSWORD_ALGORITHM),
    ) {
        (None, None) => Ok(PasswordAlgorithm::Md5),
        (Some(list), Some(chosen)) => {
            if list != password_algorithms_value() || chosen.len() < 4 {
                return Err(AlgorithmError::Mismatch);
            }
            let code = u16::from_be_bytes([chosen[0], chosen[1]]);
            PasswordAlgorithm::from_code(code).ok_or(AlgorithmError::Mismatch)
        }
        _ => Err(AlgorithmError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_lifecycle() {
        let k = NonceKey::new([9; 32], 600);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let n = k.issue(1000, ip);
        assert!(n.starts_with(NONCE_COOKIE));
        assert_eq!(k.check(&n, 1000, ip), NonceCheck::Valid);
        assert_eq!(k.check(&n, 1599, ip), NonceCheck::Valid);
        assert_eq!(k.check(&n, 1600, ip), NonceCheck::Stale);
        assert_eq!(
            k.check(&n, 1000, "192.0.2.2".parse().unwrap()),
            NonceCheck::Invalid
        );
        let other = NonceKey::new([8; 32], 600);
        assert_eq!(other.check(&n, 1000, ip), NonceCheck::Invalid);
        let mut forged = n.clone();
        forged.replace_range(13..29, &format!("{:016x}", 99999u64));
        assert_eq!(k.check(&forged, 1000, ip), NonceCheck::Invalid);
        assert_eq!(k.check("garbage", 1000, ip), NonceCheck::Invalid);
    }

    #[test]
    fn credential_keys() {
        let pw = Credential::Password("pass".into());
        assert_eq!(
            pw.key(PasswordAlgorithm::Md5, "user", "realm").unwrap(),
            key_md5("user", "realm", "pass").to_vec()
        );
        let stored = Credential::Stored(StoredKey::Md5(key_md5("user", "realm", "pass")));
        assert!(stored
            .key(PasswordAlgorithm::Sha256, "user", "realm")
            .is_none());
    }
}
