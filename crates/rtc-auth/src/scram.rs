//! SCRAM key derivation (RFC 5802 §3, RFC 7677): what a server stores instead of a
//! password, and the signatures and proof it checks during an exchange.
//!
//! From a password, a salt and an iteration count (RFC 5802 §3):
//!
//! ```text
//! SaltedPassword  := Hi(Normalize(password), salt, i)      -- PBKDF2-HMAC, one block
//! ClientKey       := HMAC(SaltedPassword, "Client Key")
//! StoredKey       := H(ClientKey)                           -- stored
//! ServerKey       := HMAC(SaltedPassword, "Server Key")     -- stored
//! ClientSignature := HMAC(StoredKey, AuthMessage)
//! ClientProof     := ClientKey XOR ClientSignature          -- sent by the client
//! ServerSignature := HMAC(ServerKey, AuthMessage)           -- sent back as "v="
//! ```
//!
//! A server keeps `(salt, i, StoredKey, ServerKey)` per hash (Prosody's
//! `internal_hashed` keeps the same four), verifies a proof by recovering `ClientKey =
//! ClientProof XOR ClientSignature` and comparing `H(ClientKey)` with StoredKey in
//! constant time ([`verify_client_proof`]), and proves itself with ServerSignature. A
//! stolen StoredKey/ServerKey pair does not let anyone log in elsewhere without the
//! PBKDF2 work; the clear-text password is never needed.
//!
//! `Hi` is PBKDF2 (RFC 8018 §5.2) with HMAC as the PRF and one block of output, written
//! here on top of the `hmac`, `sha1` and `sha2` crates ([`pbkdf2_hmac`] gives any output
//! length, for RFC 6070's vectors). The HMAC key (the password) is absorbed once and the
//! keyed state cloned per iteration, which halves the hashing of a naive loop: it is the
//! cost that decides logins per second.
//!
//! `Normalize` is SASLprep (RFC 4013), done here in the practical subset described at
//! [`saslprep`].

use std::borrow::Cow;

use hmac::digest::{Digest as _, KeyInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// The hash of a SCRAM mechanism: SHA-1 (`SCRAM-SHA-1`, RFC 5802) or SHA-256
/// (`SCRAM-SHA-256`, RFC 7677).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    /// Output length of `H` and `HMAC` in bytes: 20 or 32.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// The hash part of the mechanism name: `"SHA-1"` or `"SHA-256"`.
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
        }
    }
}

/// `H(data)`.
pub fn hash(alg: ScramHash, data: &[u8]) -> Vec<u8> {
    match alg {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// `HMAC(key, data)` (RFC 2104).
pub fn hmac(alg: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
    match alg {
        ScramHash::Sha1 => run::<Hmac<Sha1>>(key, data),
        ScramHash::Sha256 => run::<Hmac<Sha256>>(key, data),
    }
}

/// PBKDF2 (RFC 8018 §5.2) with HMAC-`alg` as the PRF, filling `out` (any length).
///
/// `iterations` of 0 is taken as 1, as PBKDF2 has no zero-round form; SCRAM callers
/// refuse such a count before getting here (RFC 5802 requires at least 4096 of a client's
/// view, RFC 7677 §4 asks for 4096 or more).
pub fn pbkdf2_hmac(alg: ScramHash, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    fn run<M: Mac + KeyInit + Clone>(
        password: &[u8],
        salt: &[u8],
        iterations: u32,
        out: &mut [u8],
    ) {
        let keyed =
            <M as KeyInit>::new_from_slice(password).expect("HMAC takes keys of any length");
        let len = <M as hmac::digest::OutputSizeUser>::output_size();
        for (block_index, chunk) in out.chunks_mut(len).enumerate() {
            // U1 = PRF(P, S || INT(i)), Uj = PRF(P, Uj-1); T = U1 ^ U2 ^ ... ^ Uc.
            let mut mac = keyed.clone();
            mac.update(salt);
            mac.update(&(block_index as u32 + 1).to_be_bytes());
            let mut u = mac.finalize().into_bytes();
            let mut t = u.clone();
            for _ in 1..iterations.max(1) {
                let mut mac = keyed.clone();
                mac.update(&u);
                u = mac.finalize().into_bytes();
                t.iter_mut().zip(u.iter()).for_each(|(t, u)| *t ^= u);
            }
            chunk.copy_from_slice(&t[..chunk.len()]);
        }
    }
    match alg {
        ScramHash::Sha1 => run::<Hmac<Sha1>>(password, salt, iterations, out),
        ScramHash::Sha256 => run::<Hmac<Sha256>>(password, salt, iterations, out),
    }
}

/// `SaltedPassword := Hi(password, salt, i)` (RFC 5802 §2.2, §3). `password` is used as
/// given: normalise it with [`saslprep`] first, as the client does.
pub fn salted_password(alg: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0; alg.output_len()];
    pbkdf2_hmac(alg, password.as_bytes(), salt, iterations, &mut out);
    out
}

/// `ClientKey := HMAC(SaltedPassword, "Client Key")`.
pub fn client_key(alg: ScramHash, salted_password: &[u8]) -> Vec<u8> {
    hmac(alg, salted_password, b"Client Key")
}

/// `StoredKey := H(ClientKey)`: stored by the server.
pub fn stored_key(alg: ScramHash, client_key: &[u8]) -> Vec<u8> {
    hash(alg, client_key)
}

/// `ServerKey := HMAC(SaltedPassword, "Server Key")`: stored by the server.
pub fn server_key(alg: ScramHash, salted_password: &[u8]) -> Vec<u8> {
    hmac(alg, salted_password, b"Server Key")
}

/// `ClientSignature := HMAC(StoredKey, AuthMessage)`.
pub fn client_signature(alg: ScramHash, stored_key: &[u8], auth_message: &[u8]) -> Vec<u8> {
    hmac(alg, stored_key, auth_message)
}

/// `ServerSignature := HMAC(ServerKey, AuthMessage)`: the `v=` of the server-final
/// message.
pub fn server_signature(alg: ScramHash, server_key: &[u8], auth_message: &[u8]) -> Vec<u8> {
    hmac(alg, server_key, auth_message)
}

/// `ClientProof := ClientKey XOR ClientSignature`: what a client sends as `p=` (servers
/// only need it in tests and client simulations).
pub fn client_proof(alg: ScramHash, client_key: &[u8], auth_message: &[u8]) -> Vec<u8> {
    let signature = client_signature(alg, &stored_key(alg, client_key), auth_message);
    xor(client_key, &signature)
}

/// The server's check of a client proof (RFC 5802 §3): `ClientKey = ClientProof XOR
/// ClientSignature`, then `H(ClientKey) == StoredKey`, compared in constant time
/// ([`crate::ct_eq`]). A proof of the wrong length fails.
pub fn verify_client_proof(
    alg: ScramHash,
    stored_key: &[u8],
    auth_message: &[u8],
    proof: &[u8],
) -> bool {
    if proof.len() != alg.output_len() || stored_key.len() != alg.output_len() {
        return false;
    }
    let signature = client_signature(alg, stored_key, auth_message);
    let client_key = xor(proof, &signature);
    crate::ct_eq(&hash(alg, &client_key), stored_key)
}

/// What a server stores for one hash: `(StoredKey, ServerKey)` of a password (already
/// normalised), salt and iteration count.
pub fn derive_keys(
    alg: ScramHash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> (Vec<u8>, Vec<u8>) {
    let salted = salted_password(alg, password, salt, iterations);
    let stored = stored_key(alg, &client_key(alg, &salted));
    (stored, server_key(alg, &salted))
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(a, b)| a ^ b).collect()
}

/// Why [`saslprep`] refused a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslprepError {
    /// A character RFC 4013 §2.3 prohibits (control, private use, non-character,
    /// tagging or change-display character).
    Prohibited(char),
    /// Nothing left after mapping: an empty name or password is refused.
    Empty,
}

impl std::fmt::Display for SaslprepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaslprepError::Prohibited(c) => {
                write!(f, "character U+{:04X} is not allowed (RFC 4013)", *c as u32)
            }
            SaslprepError::Empty => f.write_str("empty"),
        }
    }
}

impl std::error::Error for SaslprepError {}

/// SASLprep (RFC 4013) in the practical subset: enough that what a client computes from
/// a password and what we compute agree for every password people actually type.
///
/// Done (RFC 4013 §2.1, §2.3):
/// - non-ASCII space characters (RFC 3454 C.1.2) map to U+0020;
/// - characters "commonly mapped to nothing" (B.1: soft hyphen, zero-width joiners,
///   variation selectors...) are removed;
/// - prohibited output is refused: ASCII and non-ASCII control characters (C.2.1, C.2.2),
///   private use (C.3), non-characters (C.4), surrogate code points (C.5, impossible in a
///   Rust `str`), inappropriate for plain text and canonical representation (C.6, C.7),
///   change-display and deprecated characters (C.8) and tagging characters (C.9).
///
/// Not done: Unicode normalisation form KC (§2.2) and the bidirectional check (§2.4).
/// NFKC changes only strings with compatibility characters (ligatures, full-width forms,
/// composed/decomposed pairs): a password typed as NFC text, which keyboards and input
/// methods produce, is the same under NFKC except for those. Normalising would need
/// Unicode tables this crate does not carry; a client that does normalise such a
/// password computes a different key and is refused, as a wrong password is. Strings
/// are returned borrowed when nothing changed.
pub fn saslprep(s: &str) -> Result<Cow<'_, str>, SaslprepError> {
    let mut changed = false;
    for c in s.chars() {
        // Mapping comes before the prohibition check (RFC 4013 §2), so characters
        // mapped to nothing are not prohibited even where C.2.2 lists them (U+200D...).
        if is_mapped_to_nothing(c) || is_non_ascii_space(c) {
            changed = true;
        } else if is_prohibited(c) {
            return Err(SaslprepError::Prohibited(c));
        }
    }
    let out: Cow<'_, str> = if changed {
        Cow::Owned(
            s.chars()
                .filter(|&c| !is_mapped_to_nothing(c))
                .map(|c| if is_non_ascii_space(c) { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    };
    if out.is_empty() {
        return Err(SaslprepError::Empty);
    }
    Ok(out)
}

/// RFC 3454 table C.1.2.
fn is_non_ascii_space(c: char) -> bool {
    matches!(
        c,
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200B}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// RFC 3454 table B.1.
fn is_mapped_to_nothing(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200C}'
            | '\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// RFC 3454 tables C.2.1 to C.9, for characters that are not mapped first.
fn is_prohibited(c: char) -> bool {
    matches!(
        c as u32,
        // C.2.1 ASCII control characters.
        0x00..=0x1F | 0x7F
        // C.2.2 non-ASCII control characters.
        | 0x80..=0x9F | 0x06DD | 0x070F | 0x180E | 0x2028 | 0x2029 | 0x2061..=0x2063
        | 0x206A..=0x206F | 0xFFF9..=0xFFFC | 0x1D173..=0x1D17A
        // C.3 private use.
        | 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD
        // C.4 non-character code points (the last two of every plane, and FDD0-FDEF).
        | 0xFDD0..=0xFDEF | 0xFFFE | 0xFFFF | 0x1FFFE | 0x1FFFF | 0x2FFFE | 0x2FFFF
        | 0x3FFFE | 0x3FFFF | 0x4FFFE | 0x4FFFF | 0x5FFFE | 0x5FFFF | 0x6FFFE | 0x6FFFF
        | 0x7FFFE | 0x7FFFF | 0x8FFFE | 0x8FFFF | 0x9FFFE | 0x9FFFF | 0xAFFFE | 0xAFFFF
        | 0xBFFFE | 0xBFFFF | 0xCFFFE | 0xCFFFF | 0xDFFFE | 0xDFFFF | 0xEFFFE | 0xEFFFF
        | 0xFFFFE | 0xFFFFF | 0x10FFFE | 0x10FFFF
        // C.6 inappropriate for plain text (FFF9-FFFD; FFF9-FFFC above), C.7 for
        // canonical representation.
        | 0xFFFD | 0x2FF0..=0x2FFB
        // C.8 change display properties or deprecated.
        | 0x0340 | 0x0341 | 0x200E | 0x200F | 0x202A..=0x202E
        // C.9 tagging characters.
        | 0xE0001 | 0xE0020..=0xE007F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslprep_subset() {
        assert_eq!(saslprep("pencil").unwrap(), "pencil");
        assert!(matches!(saslprep("pencil").unwrap(), Cow::Borrowed(_)));
        // RFC 4013 §3 examples that need no NFKC: SOFT HYPHEN mapped to nothing, a
        // non-ASCII space mapped to SPACE, a control character prohibited.
        assert_eq!(saslprep("I\u{00AD}X").unwrap(), "IX");
        assert_eq!(saslprep("user").unwrap(), "user");
        assert_eq!(saslprep("USER").unwrap(), "USER");
        assert_eq!(saslprep("a\u{00A0}b\u{3000}c").unwrap(), "a b c");
        assert_eq!(
            saslprep("\u{0007}"),
            Err(SaslprepError::Prohibited('\u{0007}'))
        );
        assert_eq!(saslprep("a\nb"), Err(SaslprepError::Prohibited('\n')));
        assert_eq!(
            saslprep("\u{E000}"),
            Err(SaslprepError::Prohibited('\u{E000}'))
        );
        assert_eq!(
            saslprep("\u{FFFF}"),
            Err(SaslprepError::Prohibited('\u{FFFF}'))
        );
        assert_eq!(
            saslprep("\u{202E}x"),
            Err(SaslprepError::Prohibited('\u{202E}'))
        );
        assert_eq!(saslprep("\u{00AD}"), Err(SaslprepError::Empty));
        assert_eq!(saslprep(""), Err(SaslprepError::Empty));
        // Non-ASCII letters pass through untouched.
        assert_eq!(saslprep("pässwörd ☃").unwrap(), "pässwörd ☃");
    }

    #[test]
    fn hmac_rfc_2202_and_4231() {
        // RFC 2202 §3 test case 2 (HMAC-SHA-1), RFC 4231 §4.3 test case 2 (HMAC-SHA-256).
        assert_eq!(
            hex::encode(hmac(
                ScramHash::Sha1,
                b"Jefe",
                b"what do ya want for nothing?"
            )),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex::encode(hmac(
                ScramHash::Sha256,
                b"Jefe",
                b"what do ya want for nothing?"
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
