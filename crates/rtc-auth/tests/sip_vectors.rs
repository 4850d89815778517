//! SIP digest known answers: the worked examples of RFC 2617 §3.5 and RFC 7616 §3.9.1,
//! plus Kamailio's `ha1b`. Every value was also computed outside this crate, e.g.
//!   printf 'Mufasa:http-auth@example.org:Circle of Life' | sha256sum
//!   printf 'alice@example.org:example.org:secret' | md5sum

use rtc_auth::sip::{digest_response, ha1, ha1b, verify_response, DigestAlgorithm};

const MD5: DigestAlgorithm = DigestAlgorithm::Md5;
const SHA256: DigestAlgorithm = DigestAlgorithm::Sha256;

/// RFC 2617 §3.5: user "Mufasa", password "Circle Of Life", qop=auth.
#[test]
fn rfc2617_mufasa() {
    let h = ha1(MD5, "Mufasa", "testrealm@host.com", "Circle Of Life");
    assert_eq!(h, "939e7578ed9e3c518a452acee763bce9");
    let nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093";
    let response = digest_response(
        MD5,
        &h,
        nonce,
        Some("00000001"),
        Some("0a4f113b"),
        Some("auth"),
        "GET",
        "/dir/index.html",
    );
    assert_eq!(response, "6629fae49393a05397450978507c4ef1");
    let check = |resp: &str, nc: &str| {
        verify_response(
            MD5,
            &h,
            nonce,
            Some(nc),
            Some("0a4f113b"),
            Some("auth"),
            "GET",
            "/dir/index.html",
            resp,
        )
    };
    assert!(check("6629fae49393a05397450978507c4ef1", "00000001"));
    assert!(check("6629FAE49393A05397450978507C4EF1", "00000001"));
    assert!(!check("6629fae49393a05397450978507c4ef2", "00000001"));
    assert!(!check("6629fae49393a05397450978507c4ef1", "00000002"));
    // An uppercase stored HA1 gives the same digest.
    assert!(verify_response(
        MD5,
        &h.to_ascii_uppercase(),
        nonce,
        Some("00000001"),
        Some("0a4f113b"),
        Some("auth"),
        "GET",
        "/dir/index.html",
        "6629fae49393a05397450978507c4ef1",
    ));
}

/// RFC 2069 form (no qop), same credentials: H(HA1:nonce:HA2).
#[test]
fn rfc2069_without_qop() {
    let h = ha1(MD5, "Mufasa", "testrealm@host.com", "Circle Of Life");
    let nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093";
    let response = digest_response(MD5, &h, nonce, None, None, None, "GET", "/dir/index.html");
    assert_eq!(response, "670fd8c2df070c60b045671b8b24ff02");
    assert!(verify_response(
        MD5,
        &h,
        nonce,
        None,
        None,
        None,
        "GET",
        "/dir/index.html",
        &response
    ));
}

/// RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
#[test]
fn rfc7616_md5_and_sha256() {
    let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    for (alg, expected_ha1, expected) in [
        (
            MD5,
            "3d78807defe7de2157e2b0b6573a855f",
            "8ca523f5e9506fed4657c9700eebdbec",
        ),
        (
            SHA256,
            "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ] {
        let h = ha1(alg, "Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(h, expected_ha1, "{alg:?}");
        let response = digest_response(
            alg,
            &h,
            nonce,
            Some("00000001"),
            Some(cnonce),
            Some("auth"),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(response, expected, "{alg:?}");
        assert!(verify_response(
            alg,
            &h,
            nonce,
            Some("00000001"),
            Some(cnonce),
            Some("auth"),
            "GET",
            "/dir/index.html",
            expected
        ));
    }
}

/// Kamailio's `ha1b`: the digest username carries the domain.
#[test]
fn kamailio_ha1b() {
    assert_eq!(
        ha1b(MD5, "alice", "example.org", "example.org", "secret"),
        "1441a999b257bcd0cf5166930039876a"
    );
    assert_eq!(
        ha1b(MD5, "alice", "example.org", "example.org", "secret"),
        ha1(MD5, "alice@example.org", "example.org", "secret")
    );
    assert_eq!(
        ha1b(SHA256, "alice", "example.org", "example.org", "secret"),
        "eff6e137e37e2995cde26ec021fde2bc3b152390ab0cc9351c4d4475e0fe8848"
    );
    assert_eq!(
        ha1(MD5, "alice", "example.org", "secret"),
        "543e1aec5d3614f03141652d6ada51b2"
    );
}
