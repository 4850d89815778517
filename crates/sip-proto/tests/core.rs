//! The proxy/registrar core over virtual time: raw SIP text in, transmits and storage
//! orders out, exactly as sipd drives it, but with no socket or clock.

use sip_proto::core::{
    Binding, BindingOp, Config, Core, Credentials, DigestAlgorithm, Listener, Output, ProtocolCore,
};
use sip_proto::message::{HeaderName, Limits, Message};
use sip_proto::txn::{Peer, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DOMAIN: &str = "sip.test";
const PASS: &str = "s3cret";

fn local() -> SocketAddr {
    "10.0.0.1:5060".parse().unwrap()
}

fn config() -> Config {
    Config {
        domains: vec![DOMAIN.into()],
        listeners: vec![
            Listener {
                transport: Transport::Udp,
                addr: local(),
                advertise: None,
            },
            Listener {
                transport: Transport::Tcp,
                addr: local(),
                advertise: None,
            },
        ],
        algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
        nonce_expire: Duration::from_secs(30),
        default_expires: 3600,
        min_expires: 60,
        max_expires: 7200,
        max_contacts: 3,
        allow_relay: false,
        trusted: vec![("192.0.2.0".parse().unwrap(), 24)],
        drop_user_agents: vec!["friendly-scanner".into()],
        invite_timeout: Duration::from_secs(120),
        server_name: "sipd-test".into(),
        limits: Limits::default(),
    }
}

fn creds(user: &str) -> Credentials {
    Credentials {
        ha1_md5: rtc_auth::sip::ha1(DigestAlgorithm::Md5, user, DOMAIN, PASS),
        ha1_sha256: Some(rtc_auth::sip::ha1(
            DigestAlgorithm::Sha256,
            user,
            DOMAIN,
            PASS,
        )),
    }
}

fn udp(addr: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr.parse().unwrap(),
        conn: None,
    }
}

/// A core plus virtual clock and a log of what it asked for. The wall clock is set once,
/// at the start: calendar time then follows the virtual monotonic clock.
struct Harness {
    core: Core,
    now: Instant,
    sent: Vec<(Peer, Message)>,
    stores: Vec<(u64, Vec<BindingOp>)>,
    /// Changes `settle` committed, in order.
    stored_ops: Vec<BindingOp>,
    fetches: Vec<(String, String)>,
    resolves: Vec<(u64, String, Option<u16>)>,
}

impl Harness {
    fn new(cfg: Config) -> Harness {
        let t0 = Instant::now();
        let mut core = Core::new(cfg, [9; 32], 42);
        core.set_wall_clock(t0, Duration::from_secs(1_800_000_000));
        Harness {
            core,
            now: t0,
            sent: vec![],
            stores: vec![],
            stored_ops: vec![],
            fetches: vec![],
            resolves: vec![],
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit(t) => {
                    let m =
                        Message::parse(&t.data, &Limits::default()).expect("core sends valid SIP");
                    self.sent.push((t.peer, m));
                }
                Output::FetchCredentials { username, domain } => {
                    self.fetches.push((username, domain))
                }
                Output::Store { id, ops } => self.stores.push((id, ops)),
                Output::Resolve { id, host, port, .. } => self.resolves.push((id, host, port)),
            }
        }
    }

    fn recv(&mut self, from: &Peer, text: &str) {
        self.recv_on(local(), from, text);
    }

    /// A message arriving on our listening socket `on`.
    fn recv_on(&mut self, on: SocketAddr, from: &Peer, text: &str) {
        let data = text.replace('\n', "\r\n");
        self.core
            .handle_message(self.now, from.clone(), on, data.as_bytes());
        self.drain();
    }

    /// Answers every pending credentials fetch (known users only) and commits stores.
    fn settle(&mut self) {
        loop {
            let fetches = std::mem::take(&mut self.fetches);
            let stores = std::mem::take(&mut self.stores);
            if fetches.is_empty() && stores.is_empty() {
                break;
            }
            for (u, d) in fetches {
                let c = (u == "alice" || u == "bob").then(|| creds(&u));
                self.core.handle_credentials(self.now, &u, &d, c);
            }
            for (id, ops) in stores {
                self.stored_ops.extend(ops);
                self.core.handle_stored(self.now, id, true);
            }
            self.drain();
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.core.poll_timeout().filter(|t| *t <= end);
            match next {
                Some(t) => {
                    self.now = t.max(self.now);
                    self.core.handle_timeout(self.now);
                    self.drain();
                }
                None => break,
            }
        }
        self.now = end;
    }

    fn take(&mut self) -> Vec<(Peer, Message)> {
        std::mem::take(&mut self.sent)
    }

    fn last_status(&mut self) -> u16 {
        let s = self.take();
        s.last().and_then(|(_, m)| m.status()).expect("a response")
    }
}

fn register(user: &str, contact: &str, call_id: &str, cseq: u32, extra: &str) -> String {
    format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\nVia: SIP/2.0/UDP {contact};branch=z9hG4bK-{call_id}-{cseq}\nMax-Forwards: 70\nFrom: <sip:{user}@{DOMAIN}>;tag=f{cseq}\nTo: <sip:{user}@{DOMAIN}>\nCall-ID: {call_id}\nCSeq: {cseq} REGISTER\nContact: <sip:{user}@{contact}>\n{extra}Content-Length: 0\n\n"
    )
}

/// Digest Authorization answering the first challenge of `resp` for `alg`.
fn authorization(
    resp: &Message,
    header: HeaderName,
    user: &str,
    method: &str,
    uri: &str,
    alg: DigestAlgorithm,
    nc: u32,
) -> String {
    let want = alg.name();
    let ch = resp
        .headers
        .iter()
        .filter(|h| h.name == header)
        .find(|h| h.value.contains(&format!("algorithm={want}")))
        .expect("challenge for the algorithm")
        .value
        .clone();
    let (_, params) = sip_proto::message::parse_auth_header(&ch).unwrap();
    let get = |n: &str| {
        params
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let nonce = get("nonce");
    let realm = get("realm");
    let ha1 = rtc_auth::sip::ha1(alg, user, &realm, PASS);
    let nc = format!("{nc:08x}");
    let r = rtc_auth::sip::digest_response(
        alg,
        &ha1,
        &nonce,
        Some(&nc),
        Some("abc"),
        Some("auth"),
        method,
        uri,
    );
    format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={want}, qop=auth, nc={nc}, cnonce=\"abc\"")
}

/// Registers `user` with its contact at `contact` (host:port), digest with `alg`.
fn do_register(h: &mut Harness, user: &str, contact: &str, alg: DigestAlgorithm) -> Message {
    let from = udp(contact);
    h.recv(
        &from,
        &register(user, contact, &format!("cid-{user}"), 1, ""),
    );
    let sent = h.take();
    assert_eq!(sent.len(), 1);
    let challenge = &sent[0].1;
    assert_eq!(challenge.status(), Some(401));
    let auth = authorization(
        challenge,
        HeaderName::WwwAuthenticate,
        user,
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        alg,
        1,
    );
    h.recv(
        &from,
        &register(
            user,
            contact,
            &format!("cid-{user}"),
            2,
            &format!("Authorization: {auth}\n"),
        ),
    );
    assert!(h.take().is_empty(), "the 200 waits for the store");
    assert_eq!(h.fetches.len(), 1);
    h.settle();
    let sent = h.take();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0.addr, from.addr, "answer goes back to the source");
    sent[0].1.clone()
}

#[test]
fn register_sha256_and_md5_then_query() {
    let mut h = Harness::new(config());
    let ok = do_register(&mut h, "alice", "10.0.0.50:5070", DigestAlgorithm::Sha256);
    assert_eq!(ok.status(), Some(200));
    assert!(ok
        .values(&HeaderName::Contact)
        .iter()
        .any(|c| c.contains("sip:alice@10.0.0.50:5070") && c.contains("expires=3600")));
    assert!(ok.header(&HeaderName::Date).is_some());
    let ok = do_register(&mut h, "bob", "10.0.0.51:5070", DigestAlgorithm::Md5);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(h.core.stats().contacts, 2);
}

#[test]
fn unknown_user_and_wrong_password_look_the_same() {
    let mut h = Harness::new(config());
    let mut answers = Vec::new();
    for user in ["mallory", "alice"] {
        let from = udp("10.0.0.60:5070");
        h.recv(&from, &register(user, "10.0.0.60:5070", user, 1, ""));
        let ch = h.take().remove(0).1;
        let mut auth = authorization(
            &ch,
            HeaderName::WwwAuthenticate,
            user,
            "REGISTER",
            &format!("sip:{DOMAIN}"),
            DigestAlgorithm::Md5,
            1,
        );
        // Corrupt the response for alice (wrong password); mallory does not exist.
        if user == "alice" {
            auth = auth.replace("response=\"", "response=\"0");
            let i = auth.find("response=\"").unwrap() + 10;
            auth.remove(i + 1);
        }
        h.recv(
            &from,
            &register(
                user,
                "10.0.0.60:5070",
                user,
                2,
                &format!("Authorization: {auth}\n"),
            ),
        );
        h.settle();
        let r = h.take().remove(0).1;
        answers.push((r.status(), r.values(&HeaderName::WwwAuthenticate).len()));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, Some(401));
    assert_eq!(h.core.stats().auth_failures, 2);
    assert_eq!(h.core.stats().contacts, 0);
}

#[test]
fn replayed_authorization_is_refused() {
    let mut h = Harness::new(config());
    let from = udp("10.0.0.50:5070");
    h.recv(&from, &register("alice", "10.0.0.50:5070", "c1", 1, ""));
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "alice",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &from,
        &register(
            "alice",
            "10.0.0.50:5070",
            "c1",
            2,
            &format!("Authorization: {auth}\n"),
        ),
    );
    h.settle();
    assert_eq!(h.last_status(), 200);
    // Same Authorization (same nonce, same nc) in a new transaction.
    h.recv(
        &from,
        &register(
            "alice",
            "10.0.0.50:5070",
            "c1",
            3,
            &format!("Authorization: {auth}\n"),
        ),
    );
    h.settle();
    let r = h.take().remove(0).1;
    assert_eq!(r.status(), Some(401));
    assert!(r
        .header(&HeaderName::WwwAuthenticate)
        .unwrap()
        .contains("stale=true"));
}

#[test]
fn expired_nonce_is_stale() {
    let mut h = Harness::new(config());
    let from = udp("10.0.0.50:5070");
    h.recv(&from, &register("alice", "10.0.0.50:5070", "c1", 1, ""));
    let ch = h.take().remove(0).1;
    h.advance(Duration::from_secs(40));
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "alice",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &from,
        &register(
            "alice",
            "10.0.0.50:5070",
            "c1",
            2,
            &format!("Authorization: {auth}\n"),
        ),
    );
    let r = h.take().remove(0).1;
    assert_eq!(r.status(), Some(401));
    assert!(
        h.fetches.is_empty(),
        "a stale nonce costs no database lookup"
    );
}

#[test]
fn min_expires_star_and_expiry() {
    let mut h = Harness::new(config());
    do_register(&mut h, "alice", "10.0.0.50:5070", DigestAlgorithm::Md5);
    let from = udp("10.0.0.50:5070");
    let reg = |cseq: u32, extra: &str, h: &mut Harness| {
        h.recv(
            &from,
            &register("alice", "10.0.0.50:5070", "cid-alice", cseq, ""),
        );
        let ch = h.take().remove(0).1;
        let auth = authorization(
            &ch,
            HeaderName::WwwAuthenticate,
            "alice",
            "REGISTER",
            &format!("sip:{DOMAIN}"),
            DigestAlgorithm::Md5,
            1,
        );
        let text = register(
            "alice",
            "10.0.0.50:5070",
            "cid-alice",
            cseq + 1,
            &format!("Authorization: {auth}\n{extra}"),
        );
        h.recv(&from, &text);
        h.settle();
        h.take().remove(0).1
    };
    let r = reg(10, "Expires: 5\n", &mut h);
    assert_eq!(r.status(), Some(423));
    assert_eq!(r.header(&HeaderName::MinExpires), Some("60"));
    let r = reg(20, "Expires: 60\n", &mut h);
    assert_eq!(r.status(), Some(200));
    assert_eq!(h.core.stats().contacts, 1);
    // Expiry purges it from memory and from the database.
    h.advance(Duration::from_secs(61));
    assert_eq!(h.core.stats().contacts, 0);
    assert!(h
        .stores
        .iter()
        .any(|(_, ops)| ops.iter().any(|o| matches!(o, BindingOp::Delete { .. }))));
    // "*" removes everything (re-register first).
    do_register(&mut h, "alice", "10.0.0.50:5070", DigestAlgorithm::Md5);
    let star = "Expires: 0\n";
    h.recv(
        &from,
        &register("alice", "10.0.0.50:5070", "cid-alice", 30, "")
            .replace("Contact: <sip:alice@10.0.0.50:5070>", "Contact: *"),
    );
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "alice",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &from,
        &register(
            "alice",
            "10.0.0.50:5070",
            "cid-alice",
            31,
            &format!("Authorization: {auth}\n{star}"),
        )
        .replace("Contact: <sip:alice@10.0.0.50:5070>", "Contact: *"),
    );
    h.settle();
    assert_eq!(h.last_status(), 200);
    assert_eq!(h.core.stats().contacts, 0);
}

#[test]
fn nat_register_stores_received_and_routes_there() {
    let mut h = Harness::new(config());
    // Contact says a private address, the packet comes from the NAT's public one.
    let from = udp("198.51.100.7:40000");
    h.recv(&from, &register("bob", "192.168.1.20:5060", "nat", 1, ""));
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "bob",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &from,
        &register(
            "bob",
            "192.168.1.20:5060",
            "nat",
            2,
            &format!("Authorization: {auth}\n"),
        ),
    );
    h.settle();
    let stored: Vec<Binding> = Vec::new();
    let _ = stored;
    let r = h.take().remove(0);
    assert_eq!(r.0.addr, from.addr);
    assert_eq!(r.1.status(), Some(200));
    // A call from a trusted trunk reaches bob through the NAT binding.
    let trunk = udp("192.0.2.10:5060");
    h.recv(
        &trunk,
        &invite(
            "carol@example.net",
            "bob",
            "192.0.2.10:5060",
            "call-nat",
            "",
        ),
    );
    let sent = h.take();
    let fwd = sent
        .iter()
        .find(|(_, m)| m.is_request())
        .expect("forwarded INVITE");
    assert_eq!(fwd.0.addr, from.addr);
    assert_eq!(
        fwd.1.uri().unwrap().to_string(),
        "sip:bob@192.168.1.20:5060"
    );
}

fn invite(from_aor: &str, to_user: &str, via: &str, call_id: &str, extra: &str) -> String {
    format!(
        "INVITE sip:{to_user}@{DOMAIN} SIP/2.0\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{call_id}\nMax-Forwards: 70\nFrom: <sip:{from_aor}>;tag=caller\nTo: <sip:{to_user}@{DOMAIN}>\nCall-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:caller@{via}>\n{extra}Content-Type: application/sdp\nContent-Length: 4\n\nv=0\n"
    )
}

fn response_for(req: &Message, code: u16, reason: &str, to_tag: &str, contact: &str) -> String {
    let mut r = Message::response_to(req, code, reason, Some(to_tag));
    if !contact.is_empty() {
        r.set_header(HeaderName::Contact, format!("<{contact}>"));
    }
    for v in req.values(&HeaderName::RecordRoute) {
        r.headers.push(sip_proto::message::Header {
            name: HeaderName::RecordRoute,
            value: v,
        });
    }
    String::from_utf8(r.encode()).unwrap().replace("\r\n", "\n")
}

#[test]
fn authenticated_call_forks_and_completes() {
    let mut h = Harness::new(config());
    do_register(&mut h, "bob", "10.0.0.51:5070", DigestAlgorithm::Md5);
    // A second device of bob's.
    let dev2 = udp("10.0.0.52:5070");
    h.recv(&dev2, &register("bob", "10.0.0.52:5070", "dev2", 1, ""));
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "bob",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &dev2,
        &register(
            "bob",
            "10.0.0.52:5070",
            "dev2",
            2,
            &format!("Authorization: {auth}\n"),
        ),
    );
    h.settle();
    assert_eq!(h.last_status(), 200);

    let alice = udp("10.0.0.50:5070");
    let aor = format!("alice@{DOMAIN}");
    h.recv(&alice, &invite(&aor, "bob", "10.0.0.50:5070", "call1", ""));
    let sent = h.take();
    let codes: Vec<u16> = sent.iter().filter_map(|(_, m)| m.status()).collect();
    assert_eq!(codes, vec![100, 407]);
    let ch = sent[1].1.clone();
    // ACK for the 407 is absorbed by the transaction layer.
    let ack = format!("ACK sip:bob@{DOMAIN} SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.50:5070;branch=z9hG4bK-call1\nMax-Forwards: 70\nFrom: <sip:{aor}>;tag=caller\nTo: <sip:bob@{DOMAIN}>;tag={}\nCall-ID: call1\nCSeq: 1 ACK\nContent-Length: 0\n\n", ch.to_header().unwrap().tag().unwrap());
    h.recv(&alice, &ack);
    assert!(h.take().is_empty());

    let auth = authorization(
        &ch,
        HeaderName::ProxyAuthenticate,
        "alice",
        "INVITE",
        &format!("sip:bob@{DOMAIN}"),
        DigestAlgorithm::Sha256,
        1,
    );
    let inv2 = invite(
        &aor,
        "bob",
        "10.0.0.50:5070",
        "call1",
        &format!("Proxy-Authorization: {auth}\n"),
    )
    .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
    .replace("branch=z9hG4bK-call1", "branch=z9hG4bK-call1b");
    h.recv(&alice, &inv2);
    h.settle();
    let sent = h.take();
    let forwarded: Vec<_> = sent
        .iter()
        .filter(|(_, m)| m.is_request())
        .cloned()
        .collect();
    assert_eq!(
        forwarded.len(),
        2,
        "parallel fork to both devices: {sent:?}"
    );
    for (_, m) in &forwarded {
        assert!(
            m.header(&HeaderName::ProxyAuthorization).is_none(),
            "credentials consumed"
        );
        assert_eq!(m.max_forwards(), Some(69));
        assert_eq!(m.vias().len(), 2);
        assert!(m.header(&HeaderName::RecordRoute).unwrap().contains(";lr"));
    }
    // Device 2 rings, device 1 answers: 180 and 200 reach alice, device 2 is cancelled.
    let (p1, m1) = forwarded
        .iter()
        .find(|(p, _)| p.addr.port() == 5070 && p.addr.ip().to_string() == "10.0.0.51")
        .unwrap()
        .clone();
    let (p2, m2) = forwarded
        .iter()
        .find(|(p, _)| p.addr.ip().to_string() == "10.0.0.52")
        .unwrap()
        .clone();
    h.recv(
        &p2,
        &response_for(&m2, 180, "Ringing", "dev2tag", "sip:bob@10.0.0.52:5070"),
    );
    let s = h.take();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].1.status(), Some(180));
    assert_eq!(s[0].0.addr, alice.addr);
    assert_eq!(s[0].1.vias().len(), 1, "our Via removed");
    h.recv(
        &p1,
        &response_for(&m1, 200, "OK", "dev1tag", "sip:bob@10.0.0.51:5070"),
    );
    let s = h.take();
    assert!(s
        .iter()
        .any(|(p, m)| m.status() == Some(200) && p.addr == alice.addr));
    assert!(
        s.iter()
            .any(|(p, m)| m.method().map(|x| x.as_str()) == Some("CANCEL") && p.addr == p2.addr),
        "{s:?}"
    );
    // Stats reflect the call.
    let st = h.core.stats();
    assert!(st.requests.iter().any(|(m, n)| m == "INVITE" && *n >= 2));
    assert!(st.replies_by_class[2] >= 1);
}

#[test]
fn no_relay_for_strangers_and_404_for_unknown() {
    let mut h = Harness::new(config());
    let stranger = udp("203.0.113.9:5060");
    h.recv(
        &stranger,
        &invite("eve@evil.example", "nobody", "203.0.113.9:5060", "r1", "").replace(
            &format!("sip:nobody@{DOMAIN} SIP"),
            "sip:x@198.51.100.1 SIP",
        ),
    );
    let codes: Vec<u16> = h.take().iter().filter_map(|(_, m)| m.status()).collect();
    assert_eq!(codes, vec![100, 403]);
    h.recv(
        &stranger,
        &invite("eve@evil.example", "nobody", "203.0.113.9:5060", "r2", ""),
    );
    let codes: Vec<u16> = h.take().iter().filter_map(|(_, m)| m.status()).collect();
    assert_eq!(codes, vec![100, 404]);
}

#[test]
fn max_forwards_loop_options_scanner() {
    let mut h = Harness::new(config());
    let p = udp("203.0.113.9:5060");
    h.recv(
        &p,
        &invite("eve@evil.example", "bob", "203.0.113.9:5060", "mf", "")
            .replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(h.last_status(), 483);
    let opts = format!("OPTIONS sip:{DOMAIN} SIP/2.0\nVia: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-o1;rport\nMax-Forwards: 70\nFrom: <sip:mon@example.net>;tag=1\nTo: <sip:{DOMAIN}>\nCall-ID: o1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    h.recv(&p, &opts);
    let s = h.take();
    assert_eq!(s[0].1.status(), Some(200));
    assert!(s[0].1.top_via().unwrap().rport() == Some(Some(5060)));
    h.recv(
        &p,
        &opts.replace("o1", "o2").replace(
            "Content-Length",
            "User-Agent: friendly-scanner\nContent-Length",
        ),
    );
    assert!(h.take().is_empty());
    assert_eq!(h.core.stats().dropped_scanners, 1);
    // A request that already carries our Via with its own loop hash comes back: 482.
    do_register(&mut h, "bob", "10.0.0.1:5060", DigestAlgorithm::Md5);
    let trunk = udp("192.0.2.10:5060");
    h.recv(
        &trunk,
        &invite("carol@example.net", "bob", "192.0.2.10:5060", "loop", ""),
    );
    let fwd = h
        .take()
        .into_iter()
        .find(|(_, m)| m.is_request())
        .expect("forwarded")
        .1;
    // bob's contact is the proxy itself: the forwarded INVITE arrives back.
    let text = String::from_utf8(fwd.encode())
        .unwrap()
        .replace("\r\n", "\n")
        .replace("sip:bob@10.0.0.1:5060", &format!("sip:bob@{DOMAIN}"));
    h.recv(&udp("10.0.0.1:5060"), &text);
    let codes: Vec<u16> = h.take().iter().filter_map(|(_, m)| m.status()).collect();
    assert!(codes.contains(&482), "{codes:?}");
}

#[test]
fn cancel_before_answer_gives_487() {
    let mut h = Harness::new(config());
    do_register(&mut h, "bob", "10.0.0.51:5070", DigestAlgorithm::Md5);
    let trunk = udp("192.0.2.10:5060");
    let inv = invite("carol@example.net", "bob", "192.0.2.10:5060", "c487", "");
    h.recv(&trunk, &inv);
    let fwd = h.take().into_iter().find(|(_, m)| m.is_request()).unwrap();
    h.recv(&fwd.0, &response_for(&fwd.1, 180, "Ringing", "b", ""));
    h.take();
    let cancel = inv
        .replace("INVITE sip", "CANCEL sip")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .replace(
            "Content-Type: application/sdp\nContent-Length: 4\n\nv=0\n",
            "Content-Length: 0\n\n",
        );
    h.recv(&trunk, &cancel);
    let s = h.take();
    assert!(
        s.iter()
            .any(|(p, m)| m.status() == Some(200) && p.addr == trunk.addr),
        "200 to CANCEL"
    );
    let c = s
        .iter()
        .find(|(_, m)| m.method().map(|x| x.as_str()) == Some("CANCEL"))
        .expect("CANCEL downstream")
        .clone();
    h.recv(&c.0, &response_for(&c.1, 200, "OK", "b", ""));
    h.recv(
        &fwd.0,
        &response_for(&fwd.1, 487, "Request Terminated", "b", ""),
    );
    let s = h.take();
    assert!(
        s.iter()
            .any(|(p, m)| m.status() == Some(487) && p.addr == trunk.addr),
        "{s:?}"
    );
    // Unknown CANCEL: 481.
    h.recv(&trunk, &cancel.replace("c487", "nope"));
    assert_eq!(h.last_status(), 481);
}

#[test]
fn unanswered_branch_times_out_with_408() {
    let mut h = Harness::new(config());
    do_register(&mut h, "bob", "10.0.0.51:5070", DigestAlgorithm::Md5);
    let trunk = udp("192.0.2.10:5060");
    h.recv(
        &trunk,
        &invite("carol@example.net", "bob", "192.0.2.10:5060", "t408", ""),
    );
    h.take();
    h.advance(Duration::from_secs(40));
    let s = h.take();
    assert!(
        s.iter()
            .any(|(p, m)| m.status() == Some(408) && p.addr == trunk.addr),
        "{:?}",
        s.iter().map(|(_, m)| m.status()).collect::<Vec<_>>()
    );
}

#[test]
fn store_failure_answers_500() {
    let mut h = Harness::new(config());
    let from = udp("10.0.0.50:5070");
    h.recv(&from, &register("alice", "10.0.0.50:5070", "f", 1, ""));
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "alice",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &from,
        &register(
            "alice",
            "10.0.0.50:5070",
            "f",
            2,
            &format!("Authorization: {auth}\n"),
        ),
    );
    let (u, d) = h.fetches.remove(0);
    h.core
        .handle_credentials(h.now, &u, &d, Some(creds("alice")));
    h.drain();
    let (id, _) = h.stores.remove(0);
    h.core.handle_stored(h.now, id, false);
    h.drain();
    assert_eq!(h.last_status(), 500);
}

/// A binding whose store failed is never routed to, and a REGISTER of the same AOR that
/// arrives while a change is in flight is computed from committed state only (issue:
/// bindings answered 500 on a full disk were still used for routing).
#[test]
fn failed_store_changes_nothing_and_queued_register_builds_on_committed_state() {
    let mut h = Harness::new(config());
    // Trusted peers register without digest, so each REGISTER goes straight to a store.
    let pbx = udp("192.0.2.10:5060");
    h.recv(&pbx, &register("alice", "192.0.2.10:5060", "a", 1, ""));
    assert_eq!(h.stores.len(), 1, "the first change goes out");
    h.recv(&pbx, &register("alice", "192.0.2.11:5060", "b", 1, ""));
    assert_eq!(h.stores.len(), 1, "the second waits for the first");
    assert!(
        h.take().is_empty(),
        "nothing answered before a store finished"
    );
    assert_eq!(h.core.stats().contacts, 0, "nothing routable before commit");

    let (first, _) = h.stores.remove(0);
    h.core.handle_stored(h.now, first, false);
    h.drain();
    assert_eq!(h.last_status(), 500);
    assert_eq!(
        h.core.stats().contacts,
        0,
        "a failed store is not in memory"
    );

    // The queued REGISTER now runs against the committed (empty) state.
    assert_eq!(h.stores.len(), 1);
    let (second, ops) = h.stores.remove(0);
    let contacts: Vec<&str> = ops
        .iter()
        .map(|op| match op {
            BindingOp::Upsert(b) => b.contact.as_str(),
            BindingOp::Delete { .. } => panic!("nothing committed to delete"),
        })
        .collect();
    assert_eq!(contacts, vec!["sip:alice@192.0.2.11:5060"]);
    h.core.handle_stored(h.now, second, true);
    h.drain();
    let ok = h.take().pop().expect("200").1;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.values(&HeaderName::Contact).len(), 1);
    assert_eq!(h.core.stats().contacts, 1);

    // A call to alice reaches the committed contact only.
    h.recv(
        &pbx,
        &invite("pbx@192.0.2.10", "alice", "192.0.2.10:5060", "call-1", ""),
    );
    let forwarded: Vec<String> = h
        .take()
        .into_iter()
        .filter(|(_, m)| m.is_request())
        .map(|(_, m)| m.uri().expect("request URI").to_string())
        .collect();
    assert_eq!(forwarded, vec!["sip:alice@192.0.2.11:5060"]);
}

#[test]
fn unanswered_credential_lookup_ends_in_503() {
    let mut h = Harness::new(config());
    let from = udp("10.0.0.50:5070");
    h.recv(&from, &register("alice", "10.0.0.50:5070", "p", 1, ""));
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "alice",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &from,
        &register(
            "alice",
            "10.0.0.50:5070",
            "p",
            2,
            &format!("Authorization: {auth}\n"),
        ),
    );
    assert_eq!(h.fetches.len(), 1);
    h.fetches.clear(); // the database never answers
    h.advance(Duration::from_secs(6));
    let s = h.take();
    assert!(s.iter().any(|(_, m)| m.status() == Some(503)), "{s:?}");
}

/// A credentials lookup the database failed gets 503 with Retry-After at once, not the
/// 401 of a wrong password.
#[test]
fn failed_credential_lookup_answers_503_at_once() {
    let mut h = Harness::new(config());
    let from = udp("10.0.0.50:5070");
    h.recv(&from, &register("alice", "10.0.0.50:5070", "u", 1, ""));
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "alice",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &from,
        &register(
            "alice",
            "10.0.0.50:5070",
            "u",
            2,
            &format!("Authorization: {auth}\n"),
        ),
    );
    let (u, d) = h.fetches.remove(0);
    h.core.handle_credentials_unavailable(h.now, &u, &d);
    h.drain();
    let s = h.take();
    let last = &s.last().expect("an answer").1;
    assert_eq!(last.status(), Some(503), "{s:?}");
    assert!(last
        .header(&HeaderName::Other("Retry-After".into()))
        .is_some());
}

/// A refresh in flight when the binding's old expiry passes: the expiry must not queue a
/// Delete of the binding (it keeps its ruid) behind the refresh's Upsert, or the row the
/// UA is told is registered would be removed once both committed.
#[test]
fn expiry_waits_for_a_refresh_in_flight() {
    let mut h = Harness::new(config());
    let pbx = udp("192.0.2.10:5060");
    let reg = |cseq: u32| register("alice", "192.0.2.10:5060", "r", cseq, "Expires: 60\n");
    h.recv(&pbx, &reg(1));
    h.settle();
    assert_eq!(h.last_status(), 200);
    h.advance(Duration::from_millis(59_500));
    h.recv(&pbx, &reg(2));
    let (refresh, ops) = h.stores.remove(0);
    assert!(matches!(ops.as_slice(), [BindingOp::Upsert(_)]), "{ops:?}");
    // The old expiry passes while the refresh is being written.
    h.advance(Duration::from_secs(2));
    let deletes: Vec<_> = h
        .stores
        .iter()
        .flat_map(|(_, ops)| ops.iter())
        .filter(|op| matches!(op, BindingOp::Delete { .. }))
        .collect();
    assert!(
        deletes.is_empty(),
        "expiry deleted a binding being refreshed: {deletes:?}"
    );
    h.core.handle_stored(h.now, refresh, true);
    h.drain();
    assert_eq!(h.last_status(), 200);
    assert_eq!(h.core.stats().contacts, 1);
    // The refreshed binding expires on its own new schedule.
    h.advance(Duration::from_secs(61));
    assert_eq!(h.core.stats().contacts, 0);
}

#[test]
fn tcp_registration_is_reached_over_its_connection() {
    let mut h = Harness::new(config());
    let from = Peer {
        transport: Transport::Tcp,
        addr: "198.51.100.8:50123".parse().unwrap(),
        conn: Some(77),
    };
    let reg = |cseq: u32, extra: &str| {
        register(
            "bob",
            "192.168.1.30:5060;transport=tcp",
            "tcpreg",
            cseq,
            extra,
        )
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
    };
    h.recv(&from, &reg(1, ""));
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "bob",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(&from, &reg(2, &format!("Authorization: {auth}\n")));
    h.settle();
    let r = h.take().remove(0);
    assert_eq!(r.0.conn, Some(77));
    assert_eq!(r.1.status(), Some(200));
    let trunk = udp("192.0.2.10:5060");
    h.recv(
        &trunk,
        &invite("carol@example.net", "bob", "192.0.2.10:5060", "tcpcall", ""),
    );
    let fwd = h
        .take()
        .into_iter()
        .find(|(_, m)| m.is_request())
        .expect("forwarded");
    assert_eq!(fwd.0.conn, Some(77), "same connection reused");
    assert_eq!(fwd.0.transport, Transport::Tcp);
    assert!(fwd.1.top_via().unwrap().transport == "TCP");
    // Two Record-Routes: the UDP leg and the TCP leg differ.
    assert_eq!(fwd.1.values(&HeaderName::RecordRoute).len(), 2);
}

/// A trusted trunk's call to another domain: the host name goes out for an RFC 3263
/// lookup, the request follows the answer; a name that does not resolve gets 478.
#[test]
fn foreign_domains_are_resolved_before_forwarding() {
    let mut h = Harness::new(config());
    let trunk = udp("192.0.2.10:5060");
    let inv = |cid: &str| {
        invite("carol@example.net", "x", "192.0.2.10:5060", cid, "").replace(
            &format!("sip:x@{DOMAIN} SIP"),
            "sip:dave@carrier.example SIP",
        )
    };
    h.recv(&trunk, &inv("dns1"));
    assert_eq!(h.resolves.len(), 1);
    let (rid, host, port) = h.resolves.remove(0);
    assert_eq!((host.as_str(), port), ("carrier.example", None));
    h.core
        .handle_resolved(h.now, rid, vec![udp("203.0.113.50:5080")]);
    h.drain();
    let fwd = h
        .take()
        .into_iter()
        .find(|(_, m)| m.is_request())
        .expect("forwarded");
    assert_eq!(fwd.0.addr, "203.0.113.50:5080".parse().unwrap());
    assert_eq!(fwd.1.uri().unwrap().to_string(), "sip:dave@carrier.example");
    h.recv(&trunk, &inv("dns2"));
    let (rid, _, _) = h.resolves.remove(0);
    h.core.handle_resolved(h.now, rid, vec![]);
    h.drain();
    assert_eq!(h.last_status(), 478);
    // A lookup that never returns ends the same way.
    h.recv(&trunk, &inv("dns3"));
    h.take();
    h.advance(Duration::from_secs(11));
    assert_eq!(h.last_status(), 478);
}

/// RFC 3327 Path and RFC 5626 Outbound: an edge proxy's Path is stored, echoed in the 200
/// and becomes the Route of requests to the UA; `+sip.instance`/`reg-id` bindings are
/// matched by instance (a new Contact address replaces the old one instead of adding a
/// second binding) and the 200 says `Require: outbound`.
#[test]
fn path_and_outbound() {
    let mut h = Harness::new(config());
    let edge = udp("198.51.100.20:5060");
    let instance = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";
    let reg = |cseq: u32, contact: &str, extra: &str| {
        register("bob", contact, "ob", cseq, extra)
            .replace(
                &format!("Contact: <sip:bob@{contact}>"),
                &format!("Contact: <sip:bob@{contact};transport=tcp>;+sip.instance=\"{instance}\";reg-id=1"),
            )
            .replace("Max-Forwards: 70", "Max-Forwards: 70\nSupported: path, outbound\nPath: <sip:198.51.100.20;lr>")
    };
    h.recv(&edge, &reg(1, "192.168.1.40:5062", ""));
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "bob",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &edge,
        &reg(2, "192.168.1.40:5062", &format!("Authorization: {auth}\n")),
    );
    h.settle();
    let ok = h.take().remove(0).1;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.values(&HeaderName::Path), vec!["<sip:198.51.100.20;lr>"]);
    assert_eq!(ok.values(&HeaderName::Require), vec!["outbound"]);
    assert!(ok.values(&HeaderName::Contact)[0].contains("reg-id=1"));
    // The UA moved (new address, same instance and reg-id): still one binding.
    h.recv(&edge, &reg(3, "192.168.1.41:5062", ""));
    let ch = h.take().remove(0).1;
    let auth = authorization(
        &ch,
        HeaderName::WwwAuthenticate,
        "bob",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv(
        &edge,
        &reg(4, "192.168.1.41:5062", &format!("Authorization: {auth}\n")),
    );
    h.settle();
    let ok = h.take().remove(0).1;
    assert_eq!(ok.values(&HeaderName::Contact).len(), 1, "{ok:?}");
    assert!(ok.values(&HeaderName::Contact)[0].contains("192.168.1.41"));
    assert_eq!(h.core.stats().contacts, 1);
    // A call to bob goes to the edge proxy, with the Path as its Route (RFC 3327 5.3).
    let trunk = udp("192.0.2.10:5060");
    h.recv(
        &trunk,
        &invite("carol@example.net", "bob", "192.0.2.10:5060", "viapath", ""),
    );
    let fwd = h
        .take()
        .into_iter()
        .find(|(_, m)| m.is_request())
        .expect("forwarded");
    assert_eq!(fwd.0.addr, edge.addr);
    assert_eq!(
        fwd.1.values(&HeaderName::Route),
        vec!["<sip:198.51.100.20;lr>"]
    );
    assert!(fwd
        .1
        .uri()
        .unwrap()
        .to_string()
        .starts_with("sip:bob@192.168.1.41:5062"));
}

/// RFC 7118: a browser registers over a WebSocket connection. Its Via and Contact
/// name a `.invalid` host (it cannot be reached by address, only through its connection,
/// as an RFC 5626 flow). A call from a UDP trunk reaches it over that very connection,
/// with a `SIP/2.0/WS(S)` Via and two Record-Routes since the transport changes, and no
/// INVITE retransmissions on the reliable leg (RFC 3261 section 17.1.1.2: no Timer A);
/// its answers go back to the trunk over UDP.
#[test]
fn websocket_registration_is_reached_over_its_connection() {
    websocket_call(Transport::Wss, "10.0.0.1:443");
    websocket_call(Transport::Ws, "10.0.0.1:8080");
}

fn websocket_call(ws: Transport, listen: &str) {
    let ws_local: SocketAddr = listen.parse().unwrap();
    let token = ws.via_token();
    let lower = token.to_ascii_lowercase();
    let mut cfg = config();
    cfg.listeners.push(Listener {
        transport: ws,
        addr: ws_local,
        advertise: None,
    });
    let mut h = Harness::new(cfg);
    let browser = Peer {
        transport: ws,
        addr: "198.51.100.9:51000".parse().unwrap(),
        conn: Some(12),
    };
    let reg = |cseq: u32, extra: &str| {
        register("bob", "df7jal23ls0d.invalid", "wsreg", cseq, extra)
            .replace("SIP/2.0/UDP", &format!("SIP/2.0/{token}"))
            .replace(
                "Contact: <sip:bob@df7jal23ls0d.invalid>",
                "Contact: <sip:bob@df7jal23ls0d.invalid;transport=ws>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1",
            )
    };
    h.recv_on(ws_local, &browser, &reg(1, ""));
    let sent = h.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].0, browser,
        "the challenge goes back over the connection"
    );
    let auth = authorization(
        &sent[0].1,
        HeaderName::WwwAuthenticate,
        "bob",
        "REGISTER",
        &format!("sip:{DOMAIN}"),
        DigestAlgorithm::Md5,
        1,
    );
    h.recv_on(
        ws_local,
        &browser,
        &reg(2, &format!("Authorization: {auth}\n")),
    );
    h.settle();
    let ok = h.take().remove(0);
    assert_eq!(ok.0, browser, "the 200 goes back over the connection");
    assert_eq!(ok.1.status(), Some(200));
    assert!(ok.1.values(&HeaderName::Contact)[0].contains("transport=ws"));
    // The stored binding says where it really came from (Kamailio's `received`, `socket`).
    let upsert = h
        .stored_ops
        .iter()
        .find_map(|o| match o {
            BindingOp::Upsert(b) => Some(b.clone()),
            BindingOp::Delete { .. } => None,
        })
        .expect("binding stored");
    assert_eq!(
        upsert.received,
        Some(format!("sip:198.51.100.9:51000;transport={lower}"))
    );
    assert_eq!(upsert.socket, Some(format!("{lower}:{listen}")));
    assert_eq!(upsert.conn, Some(12));

    let trunk = udp("192.0.2.10:5060");
    h.recv(
        &trunk,
        &invite("carol@example.net", "bob", "192.0.2.10:5060", "wscall", ""),
    );
    let sent = h.take();
    assert!(sent
        .iter()
        .any(|(p, m)| m.status() == Some(100) && p.addr == trunk.addr));
    let (to, fwd) = sent
        .into_iter()
        .find(|(_, m)| m.is_request())
        .expect("forwarded INVITE");
    assert_eq!(to, browser, "same connection reused");
    assert_eq!(
        fwd.uri().unwrap().to_string(),
        "sip:bob@df7jal23ls0d.invalid;transport=ws"
    );
    let via = fwd.top_via().unwrap();
    assert_eq!(
        (via.transport.as_str(), via.port),
        (token, Some(ws_local.port()))
    );
    assert_eq!(
        fwd.values(&HeaderName::RecordRoute),
        vec![
            format!("<sip:{listen};transport={lower};lr>"),
            "<sip:10.0.0.1:5060;lr>".to_string()
        ],
        "the WebSocket leg's Record-Route on top, then the UDP leg's"
    );
    // A reliable transport: the INVITE is not retransmitted while the browser is silent.
    h.advance(Duration::from_secs(4));
    assert!(
        h.take().iter().all(|(p, _)| *p != browser),
        "no Timer A over WebSocket"
    );

    // The browser rings and answers over its connection; both reach the trunk over UDP.
    h.recv_on(
        ws_local,
        &browser,
        &response_for(&fwd, 180, "Ringing", "wstag", ""),
    );
    h.recv_on(
        ws_local,
        &browser,
        &response_for(
            &fwd,
            200,
            "OK",
            "wstag",
            "sip:bob@df7jal23ls0d.invalid;transport=ws",
        ),
    );
    let sent = h.take();
    let codes: Vec<(u16, Transport)> = sent
        .iter()
        .filter(|(p, _)| p.addr == trunk.addr)
        .filter_map(|(p, m)| m.status().map(|c| (c, p.transport)))
        .collect();
    assert_eq!(codes, vec![(180, Transport::Udp), (200, Transport::Udp)]);
    let ok = sent
        .iter()
        .find(|(_, m)| m.status() == Some(200))
        .unwrap()
        .1
        .clone();
    // The browser's Contact (a .invalid host) now names its connection, so the trunk's
    // in-dialog requests come back to us and go out over that connection.
    let contact = format!("sip:bob@198.51.100.9:51000;transport={lower}");
    assert_eq!(
        ok.values(&HeaderName::Contact),
        vec![format!("<{contact}>")]
    );
    let routes: Vec<String> = ok
        .values(&HeaderName::RecordRoute)
        .into_iter()
        .rev()
        .collect();
    let bye = format!(
        "BYE {contact} SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-wsbye\nMax-Forwards: 70\nRoute: {}\nFrom: <sip:carol@example.net>;tag=caller\nTo: <sip:bob@{DOMAIN}>;tag=wstag\nCall-ID: wscall\nCSeq: 2 BYE\nContent-Length: 0\n\n",
        routes.join(", ")
    );
    h.recv(&trunk, &bye);
    let (to, fwd) = h
        .take()
        .into_iter()
        .find(|(_, m)| m.is_request())
        .expect("forwarded BYE");
    assert_eq!((to.transport, to.addr), (ws, browser.addr));
    assert_eq!(fwd.top_via().unwrap().transport, token);
    assert!(
        fwd.values(&HeaderName::Route).is_empty(),
        "both of ours popped"
    );
}

/// Calendar time comes from the wall clock the daemon sets, not from the monotonic clock
/// alone: when the system clock steps forward past a binding's expiry (a corrected clock,
/// a resumed VM), the next timer purges the binding from memory and from the database.
#[test]
fn a_wall_clock_step_is_picked_up() {
    let mut h = Harness::new(config());
    let ok = do_register(&mut h, "alice", "10.0.0.50:5070", DigestAlgorithm::Md5);
    assert!(ok.values(&HeaderName::Contact)[0].contains("expires=3600"));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.core.stats().contacts, 1);
    h.core
        .set_wall_clock(h.now, Duration::from_secs(1_800_000_000 + 3_700));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.core.stats().contacts, 0);
    assert!(h
        .stores
        .iter()
        .any(|(_, ops)| ops.iter().any(|o| matches!(o, BindingOp::Delete { .. }))));
}
