//! Digest nonces (RFC 7616 section 3.3, RFC 8760): stateless to issue, checked by HMAC,
//! expiring after `nonce-expire`, and never accepted twice for the same nonce-count.
//!
//! A nonce is `hex(expiry_unix || serial || HMAC-SHA256(key, expiry || serial)[..12])`:
//! issuing one stores nothing, so a flood of unauthenticated requests costs no memory.
//! Only a nonce that carried a *correct* response is remembered, with the highest
//! nonce-count seen, until it expires: a replayed Authorization (same nc, or any reuse
//! without qop) is refused and answered with a fresh challenge marked `stale=true`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};

const MAC_LEN: usize = 12;
/// Hex length of a nonce we issue: 8 + 8 + 12 bytes.
const NONCE_HEX_LEN: usize = 2 * (8 + 8 + MAC_LEN);

/// What [`Nonces::check`] thinks of a nonce a client sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    /// Ours and still valid.
    Fresh,
    /// Ours but expired: challenge again with `stale=true` (RFC 7616 section 3.3), the
    /// client repeats without asking the user.
    Stale,
    /// Not a nonce we issued (or tampered with).
    Bogus,
}

/// Issues and checks nonces; remembers used ones until they expire.
pub struct Nonces {
    key: [u8; 32],
    lifetime: u64,
    serial: u64,
    /// serial -> highest nonce-count accepted (0 = used without qop: single use).
    used: HashMap<u64, u32>,
    /// (expiry, serial) in issue order, to forget used nonces once they expire.
    expiries: VecDeque<(u64, u64)>,
}

impl Nonces {
    pub fn new(key: [u8; 32], lifetime_secs: u64, first_serial: u64) -> Nonces {
        Nonces {
            key,
            lifetime: lifetime_secs.max(1),
            serial: first_serial,
            used: HashMap::new(),
            expiries: VecDeque::new(),
        }
    }

    pub fn set_lifetime(&mut self, secs: u64) {
        self.lifetime = secs.max(1);
    }

    fn mac(&self, expiry: u64, serial: u64) -> [u8; MAC_LEN] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(&expiry.to_be_bytes());
        m.update(&serial.to_be_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// A new nonce valid until `unix + lifetime`.
    pub fn issue(&mut self, unix: u64) -> String {
        self.serial = self.serial.wrapping_add(1);
        let expiry = unix + self.lifetime;
        let mut raw = Vec::with_capacity(8 + 8 + MAC_LEN);
        raw.extend_from_slice(&expiry.to_be_bytes());
        raw.extend_from_slice(&self.serial.to_be_bytes());
        raw.extend_from_slice(&self.mac(expiry, self.serial));
        hex::encode(raw)
    }

    fn decode(&self, nonce: &str) -> Option<(u64, u64)> {
        if nonce.len() != NONCE_HEX_LEN {
            return None;
        }
        let raw = hex::decode(nonce).ok()?;
        let expiry = u64::from_be_bytes(raw[0..8].try_into().ok()?);
        let serial = u64::from_be_bytes(raw[8..16].try_into().ok()?);
        rtc_auth::ct_eq(&raw[16..], &self.mac(expiry, serial)).then_some((expiry, serial))
    }

    /// Authenticity and age of `nonce` (before the response is even verified).
    pub fn check(&self, nonce: &str, unix: u64) -> NonceState {
        match self.decode(nonce) {
            None => NonceState::Bogus,
            Some((expiry, _)) if expiry < unix => NonceState::Stale,
            Some(_) => NonceState::Fresh,
        }
    }

    /// Records a use of `nonce` whose response verified. `nc` is the nonce-count with
    /// qop=auth (RFC 7616 section 3.4: strictly increasing per nonce), `None` without qop
    /// (then the nonce is single-use). `false` = replay.
    pub fn consume(&mut self, nonce: &str, nc: Option<u32>, unix: u64) -> bool {
        self.forget_expired(unix);
        let Some((expiry, serial)) = self.decode(nonce) else {
            return false;
        };
        if expiry < unix {
            return false;
        }
        match (self.used.get(&serial).copied(), nc) {
            (None, n) => {
                self.used.insert(serial, n.unwrap_or(0));
                self.expiries.push_back((expiry, serial));
                true
            }
            (Some(last), Some(n)) if last > 0 && n > last => {
                self.used.insert(serial, n);
                true
            }
            _ => false,
        }
    }

    /// Forgets used nonces that have expired (also done on every use), and gives the
    /// table's memory back after a burst.
    pub fn housekeeping(&mut self, unix: u64) {
        self.forget_expired(unix);
        if self.used.capacity() > 1024 && self.used.capacity() > 4 * self.used.len() {
            self.used.shrink_to_fit();
            self.expiries.shrink_to_fit();
        }
    }

    fn forget_expired(&mut self, unix: u64) {
        // Expiries are pushed in issue order plus a constant lifetime, so the front is the
        // oldest unless the lifetime was changed by a reload: then a few entries stay a
        // little longer, which is harmless.
        while let Some(&(exp, serial)) = self.expiries.front() {
            if exp >= unix {
                break;
            }
            self.expiries.pop_front();
            self.used.remove(&serial);
        }
    }

    /// Nonces remembered as used.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_check_expire() {
        let mut n = Nonces::new([7; 32], 30, 0);
        let a = n.issue(1000);
        assert_eq!(n.check(&a, 1000), NonceState::Fresh);
        assert_eq!(n.check(&a, 1030), NonceState::Fresh);
        assert_eq!(n.check(&a, 1031), NonceState::Stale);
        let mut t = a.clone().into_bytes();
        t[40] = if t[40] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            n.check(std::str::from_utf8(&t).unwrap(), 1000),
            NonceState::Bogus
        );
        assert_eq!(n.check("abc", 1000), NonceState::Bogus);
        let other = Nonces::new([8; 32], 30, 0);
        assert_eq!(other.check(&a, 1000), NonceState::Bogus);
    }

    #[test]
    fn replay_refused() {
        let mut n = Nonces::new([7; 32], 30, 0);
        let a = n.issue(1000);
        assert!(n.consume(&a, Some(1), 1001));
        assert!(!n.consume(&a, Some(1), 1002), "same nc twice");
        assert!(n.consume(&a, Some(2), 1002));
        assert!(!n.consume(&a, Some(2), 1003));
        let b = n.issue(1000);
        assert!(n.consume(&b, None, 1001));
        assert!(!n.consume(&b, None, 1001), "no qop: single use");
        assert!(!n.consume(&b, Some(5), 1001), "no switching to qop");
        // Forgotten after expiry, and then refused as expired anyway.
        assert!(!n.consume(&a, Some(9), 1031));
        assert_eq!(n.remembered(), 0);
    }
}
