//! SCRAM known answers: the example exchanges of RFC 5802 §5 (SCRAM-SHA-1) and RFC 7677
//! §3 (SCRAM-SHA-256), recomputed from the password; PBKDF2 against RFC 6070 (HMAC-SHA-1)
//! and RFC 7914 §11 (HMAC-SHA-256). The same values come out of, e.g.,
//!   python3 -c 'import hashlib; print(hashlib.pbkdf2_hmac("sha1", b"password", b"salt", 4096, 20).hex())'

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rtc_auth::scram::{
    client_key, client_proof, derive_keys, pbkdf2_hmac, salted_password, server_key,
    server_signature, stored_key, verify_client_proof, ScramHash,
};

fn pbkdf2_hex(alg: ScramHash, password: &[u8], salt: &[u8], iterations: u32, len: usize) -> String {
    let mut out = vec![0; len];
    pbkdf2_hmac(alg, password, salt, iterations, &mut out);
    hex::encode(out)
}

#[test]
fn rfc6070_pbkdf2_hmac_sha1() {
    let sha1 = ScramHash::Sha1;
    for (password, salt, c, len, expected) in [
        (
            &b"password"[..],
            &b"salt"[..],
            1,
            20,
            "0c60c80f961f0e71f3a9b524af6012062fe037a6",
        ),
        (
            b"password",
            b"salt",
            2,
            20,
            "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957",
        ),
        (
            b"password",
            b"salt",
            4096,
            20,
            "4b007901b765489abead49d926f721d065a429c1",
        ),
        (
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            25,
            "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038",
        ),
        (
            b"pass\0word",
            b"sa\0lt",
            4096,
            16,
            "56fa6aa75548099dcc37d7f03425e0c3",
        ),
    ] {
        assert_eq!(pbkdf2_hex(sha1, password, salt, c, len), expected, "c={c}");
    }
}

#[test]
fn rfc7914_pbkdf2_hmac_sha256() {
    let sha256 = ScramHash::Sha256;
    assert_eq!(
        pbkdf2_hex(sha256, b"passwd", b"salt", 1, 64),
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc\
         49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
    );
    assert_eq!(
        pbkdf2_hex(sha256, b"Password", b"NaCl", 80000, 64),
        "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56\
         a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"
    );
}

/// One SCRAM example: the three client/server messages and the password.
struct Example {
    alg: ScramHash,
    password: &'static str,
    client_first_bare: &'static str,
    server_first: &'static str,
    client_final_without_proof: &'static str,
    proof: &'static str,
    server_final_v: &'static str,
}

fn check(e: &Example) {
    // Salt and iteration count as the server sent them in server-first.
    let mut salt = None;
    let mut iterations = None;
    for attr in e.server_first.split(',') {
        if let Some(s) = attr.strip_prefix("s=") {
            salt = Some(B64.decode(s).unwrap());
        } else if let Some(i) = attr.strip_prefix("i=") {
            iterations = Some(i.parse::<u32>().unwrap());
        }
    }
    let (salt, iterations) = (salt.unwrap(), iterations.unwrap());
    let auth_message = format!(
        "{},{},{}",
        e.client_first_bare, e.server_first, e.client_final_without_proof
    );
    let salted = salted_password(e.alg, e.password, &salt, iterations);
    let ck = client_key(e.alg, &salted);
    let proof = client_proof(e.alg, &ck, auth_message.as_bytes());
    assert_eq!(B64.encode(&proof), e.proof);
    let sk = server_key(e.alg, &salted);
    let v = server_signature(e.alg, &sk, auth_message.as_bytes());
    assert_eq!(B64.encode(v), e.server_final_v);

    // The server's side, from what it stores only.
    let (stored, server) = derive_keys(e.alg, e.password, &salt, iterations);
    assert_eq!(stored, stored_key(e.alg, &ck));
    assert_eq!(server, sk);
    assert!(verify_client_proof(
        e.alg,
        &stored,
        auth_message.as_bytes(),
        &proof
    ));
    let mut bad = proof.clone();
    bad[0] ^= 1;
    assert!(!verify_client_proof(
        e.alg,
        &stored,
        auth_message.as_bytes(),
        &bad
    ));
    assert!(!verify_client_proof(
        e.alg,
        &stored,
        auth_message.as_bytes(),
        &proof[1..]
    ));
    let other = format!("{auth_message}x");
    assert!(!verify_client_proof(
        e.alg,
        &stored,
        other.as_bytes(),
        &proof
    ));
}

/// RFC 5802 §5: user "user", password "pencil".
#[test]
fn rfc5802_section_5_scram_sha1() {
    check(&Example {
        alg: ScramHash::Sha1,
        password: "pencil",
        client_first_bare: "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        client_final_without_proof: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
        proof: "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        server_final_v: "rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    });
}

/// RFC 7677 §3: user "user", password "pencil".
#[test]
fn rfc7677_section_3_scram_sha256() {
    check(&Example {
        alg: ScramHash::Sha256,
        password: "pencil",
        client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO",
        server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                       s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        client_final_without_proof: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        proof: "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        server_final_v: "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    });
}
