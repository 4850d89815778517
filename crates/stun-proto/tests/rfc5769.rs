//! RFC 5769 test vectors (and RFC 8489 Appendix B.1's long-term vector), byte-exact.

use stun_proto::attr;
use stun_proto::message::{decode_address, Class, Message, MessageBuilder};
use stun_proto::IntegrityKind;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).unwrap()
}

const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

/// RFC 5769 §2.1.
const SAMPLE_REQUEST: &str = "
00010058 2112a442 b7e7a701 bc34d686 fa87dfae 80220010 5354554e 20746573
7420636c 69656e74 00240004 6e0001ff 80290008 932ff9b1 51263b36 00060009
6576746a 3a683676 59202020 00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249
c1b571a2 80280004 e57a3bcf";

/// RFC 5769 §2.2.
const SAMPLE_IPV4_RESPONSE: &str = "
0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563
746f7220 00200008 0001a147 e112a643 00080014 2b91f599 fd9e90c3 8c7489f9
2af9ba53 f06be7d7 80280004 c07d4c96";

/// RFC 5769 §2.3.
const SAMPLE_IPV6_RESPONSE: &str = "
01010048 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563
746f7220 00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9 00080014
a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41 80280004 c8fb0b4c";

/// RFC 5769 §2.4: long-term credentials.
const SAMPLE_LONG_TERM: &str = "
00010060 2112a442 78ad3433 c6ad72c0 29da412e 00060012 e3839ee3 8388e383
aae38383 e382afe3 82b90000 0015001c 662f2f34 39396b39 35346436 4f4c3334
6f4c3946 53547679 36347341 0014000b 6578616d 706c652e 6f726700 00080014
f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666";

#[test]
fn sample_request() {
    let bytes = unhex(SAMPLE_REQUEST);
    let m = Message::parse(&bytes).expect("parses, fingerprint checked");
    assert_eq!(m.class(), Class::Request);
    assert!(m.has_fingerprint());
    assert_eq!(m.get_str(attr::SOFTWARE), Some("STUN test client"));
    assert_eq!(m.get_str(attr::USERNAME), Some("evtj:h6vY"));
    assert!(m.verify_integrity(PASSWORD));
    assert!(!m.verify_integrity(b"wrong"));
}

#[test]
fn sample_ipv4_response() {
    let bytes = unhex(SAMPLE_IPV4_RESPONSE);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(
        m.xor_addresses(attr::XOR_MAPPED_ADDRESS).next().unwrap(),
        Some("192.0.2.1:32853".parse().unwrap())
    );
    assert!(m.verify_integrity(PASSWORD));
    // Our builder reproduces the same bytes from the same inputs (padding aside: the RFC
    // pads SOFTWARE with a space, we pad with zero, so compare after re-encoding ours).
    let mut b = MessageBuilder::new(m.method(), Class::Success, m.transaction_id());
    b.attr(attr::SOFTWARE, b"test vector");
    b.xor_address(attr::XOR_MAPPED_ADDRESS, "192.0.2.1:32853".parse().unwrap());
    b.integrity(IntegrityKind::Sha1, PASSWORD);
    b.fingerprint();
    let ours = b.finish();
    assert_eq!(ours.len(), bytes.len());
    assert_eq!(&ours[..20], &bytes[..20]);
    assert_eq!(&ours[36..48], &bytes[36..48]); // XOR-MAPPED-ADDRESS identical
    Message::parse(&ours).unwrap();
}

#[test]
fn sample_ipv6_response() {
    let bytes = unhex(SAMPLE_IPV6_RESPONSE);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(
        m.xor_addresses(attr::XOR_MAPPED_ADDRESS).next().unwrap(),
        Some(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        )
    );
    assert!(m.verify_integrity(PASSWORD));
    let mut b = MessageBuilder::new(m.method(), Class::Success, m.transaction_id());
    b.xor_address(
        attr::XOR_MAPPED_ADDRESS,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap(),
    );
    let ours = b.finish();
    assert_eq!(&ours[20..44], &bytes[36..60]);
    assert!(decode_address(&[0, 1, 0, 80, 1, 2, 3, 4]).is_some());
}

#[test]
fn sample_long_term_request() {
    let bytes = unhex(SAMPLE_LONG_TERM);
    let m = Message::parse(&bytes).unwrap();
    let user = m.get_str(attr::USERNAME).unwrap();
    assert_eq!(user, "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}");
    assert_eq!(m.get_str(attr::REALM), Some("example.org"));
    assert_eq!(m.get_str(attr::NONCE), Some("f//499k954d6OL34oL9FSTvy64sA"));
    // Key = MD5(username ":" realm ":" SASLprep(password)), RFC 5389 §15.4.
    let key = rtc_auth::turn::key_md5(user, "example.org", "TheMatrIX");
    assert!(m.verify_integrity(&key));
}

#[test]
fn every_truncation_of_the_vectors_is_refused_without_panic() {
    for v in [
        SAMPLE_REQUEST,
        SAMPLE_IPV4_RESPONSE,
        SAMPLE_IPV6_RESPONSE,
        SAMPLE_LONG_TERM,
    ] {
        let bytes = unhex(v);
        for n in 0..bytes.len() {
            assert!(Message::parse(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
    }
}
