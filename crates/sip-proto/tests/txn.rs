//! The RFC 3261 section 17 transaction layer over virtual time: a fixed `Instant` base
//! plus offsets, every timer checked at the instant it must fire.

use sip_proto::message::{HeaderName, Limits, Message, Method};
use sip_proto::txn::{
    ClientTxnId, Incoming, Peer, ResponseEvent, Timers, Transmit, Transport, TxnEvent, TxnLayer,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------ harness

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

/// A layer driven over virtual time; everything it emits is recorded with the offset
/// at which it came out.
struct Harness {
    layer: TxnLayer,
    base: Instant,
    now: Duration,
    sent: Vec<(Duration, Transmit)>,
    events: Vec<(Duration, TxnEvent)>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            layer: TxnLayer::new(Timers::default()),
            base: Instant::now(),
            now: Duration::ZERO,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn drain(&mut self) {
        while let Some(t) = self.layer.poll_transmit() {
            self.sent.push((self.now, t));
        }
        while let Some(e) = self.layer.poll_event() {
            self.events.push((self.now, e));
        }
    }

    /// Fires every timer up to `offset`, each at its own deadline, then moves there.
    fn advance_to(&mut self, offset: Duration) {
        self.drain();
        while let Some(at) = self.layer.poll_timeout() {
            let due = at - self.base;
            if due > offset {
                break;
            }
            assert!(
                due >= self.now,
                "timer in the past: {due:?} < {:?}",
                self.now
            );
            self.now = due;
            self.layer.handle_timeout(at);
            self.drain();
        }
        self.now = offset;
    }

    fn advance(&mut self, d: Duration) {
        self.advance_to(self.now + d);
    }

    /// Offsets of everything sent, and forgets it.
    fn take_sent(&mut self) -> Vec<(Duration, Transmit)> {
        self.drain();
        std::mem::take(&mut self.sent)
    }

    fn sent_times(&mut self) -> Vec<Duration> {
        self.take_sent().into_iter().map(|(t, _)| t).collect()
    }

    fn take_events(&mut self) -> Vec<(Duration, TxnEvent)> {
        self.drain();
        std::mem::take(&mut self.events)
    }

    fn send_request(&mut self, req: Message, to: Peer) -> ClientTxnId {
        let now = self.instant();
        let id = self.layer.send_request(now, req, to);
        self.drain();
        id
    }

    fn on_request(&mut self, req: &Message, from: Peer) -> Incoming {
        let now = self.instant();
        let r = self.layer.on_request(now, req, from);
        self.drain();
        r
    }

    fn on_response(&mut self, resp: &Message, from: Peer) -> Option<(ClientTxnId, ResponseEvent)> {
        let now = self.instant();
        let r = self.layer.on_response(now, resp, from);
        self.drain();
        r
    }

    fn respond(&mut self, id: sip_proto::txn::ServerTxnId, resp: Message) {
        let now = self.instant();
        self.layer.respond(now, id, resp);
        self.drain();
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn udp(a: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr(a),
        conn: None,
    }
}

fn stream(transport: Transport, a: &str, conn: Option<u64>) -> Peer {
    Peer {
        transport,
        addr: addr(a),
        conn,
    }
}

const UPSTREAM: &str = "192.0.2.10:5060";
const DOWNSTREAM: &str = "198.51.100.20:5060";

/// A request as a UA or our proxy would send it. `via` is the whole top Via value.
fn request(method: &str, via: &str, cseq: u32) -> Message {
    let text = format!(
        "{method} sip:bob@biloxi.example.com SIP/2.0\r\n\
         Via: {via}\r\n\
         Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n\
         Route: <sip:p2.example.com;lr>\r\n\
         Route: <sip:p3.example.com;lr>\r\n\
         Max-Forwards: 69\r\n\
         From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
         To: Bob <sip:bob@biloxi.example.com>\r\n\
         Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
         CSeq: {cseq} {method}\r\n\
         Require: 100rel\r\n\
         Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.as_bytes(), &Limits::default()).unwrap()
}

fn invite(branch: &str) -> Message {
    request(
        "INVITE",
        &format!("SIP/2.0/UDP p1.example.com:5060;branch={branch}"),
        314159,
    )
}

fn options(branch: &str) -> Message {
    request(
        "OPTIONS",
        &format!("SIP/2.0/UDP p1.example.com:5060;branch={branch}"),
        63104,
    )
}

fn response(req: &Message, code: u16, tag: &str) -> Message {
    Message::response_to(req, code, "Reason", Some(tag))
}

/// An ACK for a final response to `invite`, as the UAC sends it (17.1.1.3).
fn ack_for(invite: &Message, resp: &Message) -> Message {
    let mut ack = invite.clone();
    if let sip_proto::message::StartLine::Request { method, .. } = &mut ack.start {
        *method = Method::Ack;
    }
    let seq = invite.cseq().unwrap().seq;
    ack.set_header(HeaderName::CSeq, format!("{seq} ACK"));
    ack.set_header(
        HeaderName::To,
        resp.header(&HeaderName::To).unwrap().to_string(),
    );
    ack.remove_headers(&HeaderName::Contact);
    ack.remove_headers(&HeaderName::Require);
    ack
}

fn parse(t: &Transmit) -> Message {
    Message::parse(&t.data, &Limits::default()).unwrap()
}

fn offsets(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|m| ms(*m)).collect()
}

// ------------------------------------------------------------ client INVITE (17.1.1)

#[test]
fn client_invite_udp_timer_a_doubles_and_timer_b_gives_up() {
    let mut h = Harness::new();
    let id = h.send_request(invite("z9hG4bKa1"), udp(DOWNSTREAM));
    h.advance_to(secs(40));
    // A: T1, 2T1, 4T1... without a cap (0.5 1 2 4 8 16 s), B at 64*T1 = 32 s.
    assert_eq!(
        h.sent_times(),
        offsets(&[0, 500, 1500, 3500, 7500, 15500, 31500])
    );
    assert_eq!(
        h.take_events(),
        vec![(secs(32), TxnEvent::ClientTimeout(id))]
    );
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.layer.poll_timeout(), None);
}

#[test]
fn client_invite_provisional_stops_timer_a_and_timer_b() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKa2");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    h.advance_to(ms(600));
    let ringing = response(&req, 180, "b1");
    let got = h.on_response(&ringing, udp(DOWNSTREAM));
    assert_eq!(got, Some((id, ResponseEvent::Provisional(ringing.clone()))));
    // Another provisional also goes up.
    assert!(matches!(
        h.on_response(&response(&req, 183, "b1"), udp(DOWNSTREAM)),
        Some((_, ResponseEvent::Provisional(_)))
    ));
    assert_eq!(h.sent_times(), offsets(&[0, 500]));
    // Proceeding has no timer at the transaction layer (Timer C is the proxy's).
    assert_eq!(h.layer.poll_timeout(), None);
    h.advance_to(secs(100));
    assert_eq!(h.take_sent().len(), 0);
    assert_eq!(h.take_events(), vec![]);
    assert_eq!(h.layer.len(), (0, 1));
}

#[test]
fn client_invite_non_2xx_generates_ack_and_absorbs_retransmissions_until_timer_d() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKa3");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    h.take_sent();
    h.advance_to(ms(200));
    let busy = response(&req, 486, "b486");
    assert_eq!(
        h.on_response(&busy, udp(DOWNSTREAM)),
        Some((id, ResponseEvent::Final(busy.clone())))
    );
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.peer, udp(DOWNSTREAM));
    let ack = parse(&sent[0].1);
    // 17.1.1.3
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.uri(), req.uri());
    assert_eq!(ack.call_id(), req.call_id());
    assert_eq!(ack.from_header(), req.from_header());
    assert_eq!(ack.to_header().unwrap().tag(), Some("b486"));
    let cseq = ack.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (314159, Method::Ack));
    assert_eq!(ack.vias(), vec![req.top_via().unwrap()]);
    assert_eq!(
        ack.name_addrs(&HeaderName::Route).unwrap(),
        req.name_addrs(&HeaderName::Route).unwrap()
    );
    assert_eq!(ack.max_forwards(), Some(69));
    assert_eq!(ack.header(&HeaderName::Require), None);
    assert!(ack.body.is_empty());

    // No more INVITE retransmissions; each retransmitted final is ACKed again, not
    // passed up.
    h.advance_to(secs(2));
    assert_eq!(h.take_sent().len(), 0);
    assert_eq!(h.on_response(&busy, udp(DOWNSTREAM)), None);
    let again = h.take_sent();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.data, sent[0].1.data);

    // Timer D: 32 s after the final.
    h.advance_to(ms(32_199));
    assert_eq!(h.layer.len(), (0, 1));
    h.advance_to(ms(32_200));
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.take_events(), vec![]);
    // Now a retransmission matches nothing.
    assert_eq!(h.on_response(&busy, udp(DOWNSTREAM)), None);
    assert_eq!(h.take_sent().len(), 0);
}

#[test]
fn client_invite_2xx_is_accepted_and_every_2xx_goes_up_until_timer_m() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKa4");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    h.advance_to(secs(1));
    assert_eq!(h.sent_times(), offsets(&[0, 500]));
    let ok = response(&req, 200, "b200");
    assert_eq!(
        h.on_response(&ok, udp(DOWNSTREAM)),
        Some((id, ResponseEvent::Final(ok.clone())))
    );
    // No ACK for a 2xx at this layer (13.2.2.4: the UAC core sends it).
    assert_eq!(h.take_sent().len(), 0);
    h.advance_to(secs(5));
    assert_eq!(
        h.on_response(&ok, udp(DOWNSTREAM)),
        Some((id, ResponseEvent::Retransmitted2xx(ok.clone())))
    );
    // Another fork's 2xx.
    let ok2 = response(&req, 200, "fork2");
    assert_eq!(
        h.on_response(&ok2, udp(DOWNSTREAM)),
        Some((id, ResponseEvent::Retransmitted2xx(ok2.clone())))
    );
    // Non-2xx in Accepted are absorbed.
    assert_eq!(
        h.on_response(&response(&req, 486, "x"), udp(DOWNSTREAM)),
        None
    );
    assert_eq!(h.take_sent().len(), 0);
    // Timer M = 64*T1 after the first 2xx.
    h.advance_to(ms(32_999));
    assert_eq!(h.layer.len(), (0, 1));
    h.advance_to(secs(33));
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.take_events(), vec![]);
    assert_eq!(h.on_response(&ok, udp(DOWNSTREAM)), None);
}

#[test]
fn client_invite_over_tcp_never_retransmits_and_ends_at_once_after_non_2xx() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKa5");
    let to = stream(Transport::Tcp, DOWNSTREAM, Some(4));
    let id = h.send_request(req.clone(), to.clone());
    h.advance_to(secs(31));
    assert_eq!(h.sent_times(), vec![Duration::ZERO]);
    let busy = response(&req, 603, "b603");
    assert!(matches!(
        h.on_response(&busy, to.clone()),
        Some((i, ResponseEvent::Final(_))) if i == id
    ));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.peer, to);
    assert_eq!(parse(&sent[0].1).method(), Some(&Method::Ack));
    // Timer D is zero on reliable transports.
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.layer.poll_timeout(), None);

    // And Timer B still guards a silent server.
    let id = h.send_request(invite("z9hG4bKa6"), to);
    h.take_sent();
    h.advance(secs(40));
    assert_eq!(h.take_sent().len(), 0);
    assert_eq!(
        h.take_events(),
        vec![(secs(31) + secs(32), TxnEvent::ClientTimeout(id))]
    );
}

// -------------------------------------------------------- client non-INVITE (17.1.2)

#[test]
fn client_non_invite_udp_timer_e_caps_at_t2_and_timer_f_gives_up() {
    let mut h = Harness::new();
    let id = h.send_request(options("z9hG4bKe1"), udp(DOWNSTREAM));
    h.advance_to(secs(40));
    // E: 0.5 1 2 4 4 4 ... s; F at 32 s.
    assert_eq!(
        h.sent_times(),
        offsets(&[0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500])
    );
    assert_eq!(
        h.take_events(),
        vec![(secs(32), TxnEvent::ClientTimeout(id))]
    );
    assert_eq!(h.layer.len(), (0, 0));
}

#[test]
fn client_non_invite_proceeding_retransmits_every_t2_then_timer_k() {
    let mut h = Harness::new();
    let req = options("z9hG4bKe2");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    h.advance_to(ms(200));
    let trying = response(&req, 100, "");
    assert!(matches!(
        h.on_response(&trying, udp(DOWNSTREAM)),
        Some((i, ResponseEvent::Provisional(_))) if i == id
    ));
    h.advance_to(ms(10_000));
    // E armed at 0.5 s still fires; from then on every T2.
    assert_eq!(h.sent_times(), offsets(&[0, 500, 4500, 8500]));
    let ok = response(&req, 200, "b");
    assert_eq!(
        h.on_response(&ok, udp(DOWNSTREAM)),
        Some((id, ResponseEvent::Final(ok.clone())))
    );
    // Completed: retransmissions of the final are absorbed; K = T4 = 5 s.
    assert_eq!(h.layer.poll_timeout(), Some(h.base + secs(15)));
    h.advance_to(secs(12));
    assert_eq!(h.on_response(&ok, udp(DOWNSTREAM)), None);
    assert_eq!(h.take_sent().len(), 0);
    h.advance_to(ms(14_999));
    assert_eq!(h.layer.len(), (0, 1));
    h.advance_to(secs(15));
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.take_events(), vec![]);
}

#[test]
fn client_non_invite_over_tls_has_no_timer_e_and_zero_timer_k() {
    let mut h = Harness::new();
    let req = options("z9hG4bKe3");
    let to = stream(Transport::Tls, DOWNSTREAM, Some(9));
    let id = h.send_request(req.clone(), to.clone());
    // Only Timer F is armed.
    assert_eq!(h.layer.poll_timeout(), Some(h.base + secs(32)));
    h.advance_to(secs(3));
    assert_eq!(h.sent_times(), vec![Duration::ZERO]);
    assert!(matches!(
        h.on_response(&response(&req, 404, "b"), to),
        Some((i, ResponseEvent::Final(_))) if i == id
    ));
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.layer.poll_timeout(), None);
}

#[test]
fn responses_match_on_branch_and_cseq_method_only() {
    let mut h = Harness::new();
    let req = options("z9hG4bKe4");
    h.send_request(req.clone(), udp(DOWNSTREAM));
    // Another branch.
    assert_eq!(
        h.on_response(
            &response(&options("z9hG4bKother"), 200, "b"),
            udp(DOWNSTREAM)
        ),
        None
    );
    // Same branch, other method (the CANCEL of the same branch would be this).
    let mut resp = response(&req, 200, "b");
    resp.set_header(HeaderName::CSeq, "63104 CANCEL".into());
    assert_eq!(h.on_response(&resp, udp(DOWNSTREAM)), None);
    // Same branch and method, from any address.
    assert!(h
        .on_response(&response(&req, 200, "b"), udp("203.0.113.99:5060"))
        .is_some());
}

// ------------------------------------------------------------------- CANCEL (9.1)

#[test]
fn cancel_before_a_provisional_waits_for_one() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKc1");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    h.advance_to(ms(100));
    let now = h.instant();
    h.layer.cancel(now, id);
    // Nothing yet, and the INVITE keeps being retransmitted.
    h.advance_to(ms(1000));
    let sent = h.take_sent();
    assert_eq!(
        sent.iter().map(|s| s.0).collect::<Vec<_>>(),
        offsets(&[0, 500])
    );
    assert!(sent
        .iter()
        .all(|s| parse(&s.1).method() == Some(&Method::Invite)));

    let ringing = response(&req, 180, "b");
    assert!(h.on_response(&ringing, udp(DOWNSTREAM)).is_some());
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.peer, udp(DOWNSTREAM));
    let cancel = parse(&sent[0].1);
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(cancel.uri(), req.uri());
    assert_eq!(cancel.vias(), vec![req.top_via().unwrap()]);
    assert_eq!(cancel.call_id(), req.call_id());
    assert_eq!(cancel.from_header(), req.from_header());
    assert_eq!(cancel.to_header(), req.to_header());
    let cseq = cancel.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (314159, Method::Cancel));
    assert_eq!(cancel.values(&HeaderName::Route).len(), 2);
    assert_eq!(cancel.header(&HeaderName::Require), None);
    assert_eq!(h.layer.len(), (0, 2));

    // The CANCEL is a non-INVITE client transaction: Timer E retransmits it over UDP.
    h.advance_to(ms(1500));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(parse(&sent[0].1).method(), Some(&Method::Cancel));
    // Its 200 is absorbed; the INVITE's 487 goes up and is ACKed.
    assert_eq!(
        h.on_response(&response(&cancel, 200, "b"), udp(DOWNSTREAM)),
        None
    );
    let terminated = response(&req, 487, "b");
    assert_eq!(
        h.on_response(&terminated, udp(DOWNSTREAM)),
        Some((id, ResponseEvent::Final(terminated.clone())))
    );
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(parse(&sent[0].1).method(), Some(&Method::Ack));
    // K (5 s) for the CANCEL, D (32 s) for the INVITE; no events.
    h.advance(secs(6));
    assert_eq!(h.layer.len(), (0, 1));
    h.advance(secs(30));
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.take_events(), vec![]);
}

#[test]
fn cancel_after_a_provisional_goes_out_at_once_and_only_once() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKc2");
    let to = stream(Transport::Tcp, DOWNSTREAM, Some(3));
    let id = h.send_request(req.clone(), to.clone());
    h.on_response(&response(&req, 100, ""), to.clone());
    h.take_sent();
    let now = h.instant();
    h.layer.cancel(now, id);
    h.layer.cancel(now, id);
    h.drain();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.peer, to);
    assert_eq!(parse(&sent[0].1).method(), Some(&Method::Cancel));
    // Over TCP the CANCEL's 200 ends its transaction at once (K = 0).
    let cancel = parse(&sent[0].1);
    assert_eq!(h.on_response(&response(&cancel, 200, "b"), to), None);
    assert_eq!(h.layer.len(), (0, 1));
}

#[test]
fn cancel_after_a_final_sends_nothing() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKc3");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    let now = h.instant();
    h.layer.cancel(now, id);
    h.on_response(&response(&req, 200, "b"), udp(DOWNSTREAM));
    h.take_sent();
    let now = h.instant();
    h.layer.cancel(now, id);
    h.drain();
    assert_eq!(h.take_sent().len(), 0);

    // Pending CANCEL then a non-2xx final: only the ACK goes out.
    let req = invite("z9hG4bKc4");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    let now = h.instant();
    h.layer.cancel(now, id);
    h.take_sent();
    h.on_response(&response(&req, 480, "b"), udp(DOWNSTREAM));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(parse(&sent[0].1).method(), Some(&Method::Ack));
}

#[test]
fn cancel_without_a_final_gives_the_invite_up_after_64_t1() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKc5");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    h.advance_to(secs(1));
    h.on_response(&response(&req, 180, "b"), udp(DOWNSTREAM));
    h.advance_to(secs(10));
    let now = h.instant();
    h.layer.cancel(now, id);
    h.advance_to(secs(60));
    // Only the INVITE transaction is reported (the CANCEL's own Timer F is silent).
    assert_eq!(
        h.take_events(),
        vec![(secs(42), TxnEvent::ClientTimeout(id))]
    );
    assert_eq!(h.layer.len(), (0, 0));
}

#[test]
fn cancel_of_a_non_invite_is_ignored() {
    let mut h = Harness::new();
    let req = options("z9hG4bKc6");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    h.on_response(&response(&req, 100, ""), udp(DOWNSTREAM));
    h.take_sent();
    let now = h.instant();
    h.layer.cancel(now, id);
    h.drain();
    assert_eq!(h.take_sent().len(), 0);
    assert_eq!(h.layer.len(), (0, 1));
}

// ---------------------------------------------------------- server INVITE (17.2.1)

#[test]
fn server_invite_retransmission_gets_the_last_provisional_again() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKs1");
    let Incoming::New(id) = h.on_request(&req, udp(UPSTREAM)) else {
        panic!("not new");
    };
    assert_eq!(h.layer.server_txn_request(id), Some(&req));
    assert_eq!(h.layer.server_txn_peer(id), Some(&udp(UPSTREAM)));
    // Before any response a retransmission is only absorbed.
    assert_eq!(h.on_request(&req, udp(UPSTREAM)), Incoming::Retransmission);
    assert_eq!(h.take_sent().len(), 0);
    let trying = response(&req, 100, "");
    h.respond(id, trying.clone());
    let ringing = response(&req, 180, "s1");
    h.respond(id, ringing.clone());
    assert_eq!(h.layer.server_txn_status(id), Some(180));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].1.peer, udp(UPSTREAM));
    assert_eq!(sent[1].1.data, ringing.encode());
    assert_eq!(h.on_request(&req, udp(UPSTREAM)), Incoming::Retransmission);
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.data, ringing.encode());
    // No timer runs in Proceeding.
    assert_eq!(h.layer.poll_timeout(), None);
}

#[test]
fn server_invite_non_2xx_timer_g_until_ack_then_timer_i() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKs2");
    let Incoming::New(id) = h.on_request(&req, udp(UPSTREAM)) else {
        panic!("not new");
    };
    let busy = response(&req, 486, "s2");
    h.respond(id, busy.clone());
    h.advance_to(ms(10_000));
    // G: T1 doubling up to T2 (0.5 1 2 4 4 s).
    let sent = h.take_sent();
    assert_eq!(
        sent.iter().map(|s| s.0).collect::<Vec<_>>(),
        offsets(&[0, 500, 1500, 3500, 7500])
    );
    assert!(sent.iter().all(|s| s.1.data == busy.encode()));
    // A retransmitted INVITE gets the final again.
    assert_eq!(h.on_request(&req, udp(UPSTREAM)), Incoming::Retransmission);
    assert_eq!(h.take_sent().len(), 1);
    // Responses after the final are not sent.
    h.respond(id, response(&req, 200, "s2"));
    assert_eq!(h.take_sent().len(), 0);

    let ack = ack_for(&req, &busy);
    assert_eq!(h.on_request(&ack, udp(UPSTREAM)), Incoming::AckForNon2xx);
    // Confirmed: no G, no H; ACKs and INVITEs absorbed silently; I = T4.
    assert_eq!(h.layer.poll_timeout(), Some(h.base + secs(15)));
    assert_eq!(h.on_request(&ack, udp(UPSTREAM)), Incoming::AckForNon2xx);
    assert_eq!(h.on_request(&req, udp(UPSTREAM)), Incoming::Retransmission);
    h.advance_to(ms(14_999));
    assert_eq!(h.take_sent().len(), 0);
    assert_eq!(h.take_events(), vec![]);
    h.advance_to(secs(15));
    assert_eq!(
        h.take_events(),
        vec![(secs(15), TxnEvent::ServerTerminated(id))]
    );
    assert_eq!(h.layer.len(), (0, 0));
    // Gone: the next copy is a new transaction, and an ACK now matches nothing.
    assert_eq!(h.on_request(&ack, udp(UPSTREAM)), Incoming::Ack2xx);
    assert!(matches!(
        h.on_request(&req, udp(UPSTREAM)),
        Incoming::New(_)
    ));
}

#[test]
fn server_invite_timer_h_fires_when_no_ack_comes() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKs3");
    let Incoming::New(id) = h.on_request(&req, udp(UPSTREAM)) else {
        panic!("not new");
    };
    h.advance_to(secs(2));
    h.respond(id, response(&req, 404, "s3"));
    h.advance_to(secs(60));
    assert_eq!(
        h.sent_times(),
        [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
            .iter()
            .map(|m| secs(2) + ms(*m))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        h.take_events(),
        vec![
            (secs(34), TxnEvent::ServerTimeout(id)),
            (secs(34), TxnEvent::ServerTerminated(id)),
        ]
    );
    assert_eq!(h.layer.len(), (0, 0));
}

#[test]
fn server_invite_over_tcp_no_timer_g_and_zero_timer_i() {
    let mut h = Harness::new();
    let mut req = invite("z9hG4bKs4");
    req.remove_first_value(&HeaderName::Via);
    req.push_front(
        HeaderName::Via,
        "SIP/2.0/TCP client.example.com;branch=z9hG4bKs4".into(),
    );
    let from = stream(Transport::Tcp, UPSTREAM, Some(11));
    let Incoming::New(id) = h.on_request(&req, from.clone()) else {
        panic!("not new");
    };
    let busy = response(&req, 486, "s4");
    h.respond(id, busy.clone());
    // Only Timer H is armed.
    assert_eq!(h.layer.poll_timeout(), Some(h.base + secs(32)));
    h.advance_to(secs(5));
    assert_eq!(h.sent_times(), vec![Duration::ZERO]);
    assert_eq!(
        h.on_request(&ack_for(&req, &busy), from),
        Incoming::AckForNon2xx
    );
    assert_eq!(
        h.take_events(),
        vec![(secs(5), TxnEvent::ServerTerminated(id))]
    );
    assert_eq!(h.layer.poll_timeout(), None);
}

#[test]
fn server_invite_2xx_is_accepted_until_timer_l() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKs5");
    let Incoming::New(id) = h.on_request(&req, udp(UPSTREAM)) else {
        panic!("not new");
    };
    h.respond(id, response(&req, 180, "s5"));
    let ok = response(&req, 200, "s5");
    h.respond(id, ok.clone());
    assert_eq!(h.take_sent().len(), 2);
    // No Timer G for a 2xx: the UAS core (or the UAS downstream) retransmits it.
    h.advance_to(secs(4));
    assert_eq!(h.take_sent().len(), 0);
    // Accepted (RFC 6026): INVITE retransmissions absorbed, not answered, not new.
    assert_eq!(h.on_request(&req, udp(UPSTREAM)), Incoming::Retransmission);
    assert_eq!(h.take_sent().len(), 0);
    // Further 2xx (retransmissions forwarded by the proxy) still go out; others do not.
    h.respond(id, ok.clone());
    h.respond(id, response(&req, 486, "s5"));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.data, ok.encode());
    // The ACK for the 2xx, with its own branch or the INVITE's, goes to the core.
    let mut ack = ack_for(&req, &ok);
    assert_eq!(h.on_request(&ack, udp(UPSTREAM)), Incoming::Ack2xx);
    ack.remove_first_value(&HeaderName::Via);
    ack.push_front(
        HeaderName::Via,
        "SIP/2.0/UDP p1.example.com:5060;branch=z9hG4bKnewack".into(),
    );
    assert_eq!(h.on_request(&ack, udp(UPSTREAM)), Incoming::Ack2xx);
    // Timer L = 64*T1.
    h.advance_to(secs(32));
    assert_eq!(
        h.take_events(),
        vec![(secs(32), TxnEvent::ServerTerminated(id))]
    );
}

// ------------------------------------------------------ server non-INVITE (17.2.2)

#[test]
fn server_non_invite_trying_proceeding_completed_and_timer_j() {
    let mut h = Harness::new();
    let req = options("z9hG4bKn1");
    let Incoming::New(id) = h.on_request(&req, udp(UPSTREAM)) else {
        panic!("not new");
    };
    // Trying: retransmissions discarded.
    assert_eq!(h.on_request(&req, udp(UPSTREAM)), Incoming::Retransmission);
    assert_eq!(h.take_sent().len(), 0);
    let trying = response(&req, 100, "");
    h.respond(id, trying.clone());
    assert_eq!(h.take_sent().len(), 1);
    // Proceeding: the provisional again.
    assert_eq!(h.on_request(&req, udp(UPSTREAM)), Incoming::Retransmission);
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.data, trying.encode());
    h.advance_to(secs(1));
    let ok = response(&req, 200, "n1");
    h.respond(id, ok.clone());
    assert_eq!(h.take_sent().len(), 1);
    // Completed: the final again, nothing else sent, no retransmission timer.
    h.respond(id, response(&req, 500, "n1"));
    assert_eq!(h.take_sent().len(), 0);
    assert_eq!(h.on_request(&req, udp(UPSTREAM)), Incoming::Retransmission);
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.data, ok.encode());
    // Timer J = 64*T1 after the final.
    h.advance_to(ms(32_999));
    assert_eq!(h.take_sent().len(), 0);
    assert_eq!(h.layer.len(), (1, 0));
    h.advance_to(secs(33));
    assert_eq!(
        h.take_events(),
        vec![(secs(33), TxnEvent::ServerTerminated(id))]
    );
    assert!(matches!(
        h.on_request(&req, udp(UPSTREAM)),
        Incoming::New(_)
    ));
}

#[test]
fn server_non_invite_over_ws_ends_with_the_final_timer_j_zero() {
    let mut h = Harness::new();
    let req = options("z9hG4bKn2");
    let from = stream(Transport::Ws, UPSTREAM, Some(21));
    let Incoming::New(id) = h.on_request(&req, from.clone()) else {
        panic!("not new");
    };
    h.respond(id, response(&req, 200, "n2"));
    let sent = h.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.peer, from);
    assert_eq!(
        h.take_events(),
        vec![(secs(0), TxnEvent::ServerTerminated(id))]
    );
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.layer.poll_timeout(), None);
}

// ---------------------------------------------------------------- matching (17.2.3)

#[test]
fn server_matching_uses_branch_sent_by_and_method() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKm1");
    assert!(matches!(
        h.on_request(&req, udp(UPSTREAM)),
        Incoming::New(_)
    ));
    // Same branch, other sent-by: another transaction.
    let mut other = req.clone();
    other.remove_first_value(&HeaderName::Via);
    other.push_front(
        HeaderName::Via,
        "SIP/2.0/UDP p9.example.com:5060;branch=z9hG4bKm1".into(),
    );
    assert!(matches!(
        h.on_request(&other, udp(UPSTREAM)),
        Incoming::New(_)
    ));
    // Same branch, same sent-by, but the CANCEL: its own transaction.
    let mut cancel = req.clone();
    if let sip_proto::message::StartLine::Request { method, .. } = &mut cancel.start {
        *method = Method::Cancel;
    }
    cancel.set_header(HeaderName::CSeq, "314159 CANCEL".into());
    assert!(matches!(
        h.on_request(&cancel, udp(UPSTREAM)),
        Incoming::New(_)
    ));
    assert_eq!(
        h.on_request(&cancel, udp(UPSTREAM)),
        Incoming::Retransmission
    );
    // The branch compares case-insensitively (7.3.1).
    let upper = invite("Z9HG4BKM1");
    assert_eq!(
        h.on_request(&upper, udp(UPSTREAM)),
        Incoming::Retransmission
    );
    assert_eq!(h.layer.len(), (3, 0));
}

#[test]
fn find_invite_for_cancel_matches_branch_and_sent_by() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKf1");
    let Incoming::New(inv) = h.on_request(&req, udp(UPSTREAM)) else {
        panic!("not new");
    };
    let opts = options("z9hG4bKf2");
    h.on_request(&opts, udp(UPSTREAM));
    let mut cancel = request(
        "CANCEL",
        "SIP/2.0/UDP p1.example.com:5060;branch=z9hG4bKf1",
        314159,
    );
    assert_eq!(h.layer.find_invite_for_cancel(&cancel), Some(inv));
    let Incoming::New(c) = h.on_request(&cancel, udp(UPSTREAM)) else {
        panic!("not new");
    };
    assert_ne!(c, inv);
    // Another sent-by, another branch, or a non-INVITE target: no match.
    cancel.remove_first_value(&HeaderName::Via);
    cancel.push_front(
        HeaderName::Via,
        "SIP/2.0/UDP p1.example.com:5070;branch=z9hG4bKf1".into(),
    );
    assert_eq!(h.layer.find_invite_for_cancel(&cancel), None);
    let cancel2 = request(
        "CANCEL",
        "SIP/2.0/UDP p1.example.com:5060;branch=z9hG4bKf2",
        63104,
    );
    assert_eq!(h.layer.find_invite_for_cancel(&cancel2), None);
}

#[test]
fn rfc2543_requests_match_without_a_magic_cookie() {
    let mut h = Harness::new();
    // No branch at all, and a branch without the cookie.
    for via in [
        "SIP/2.0/UDP old.example.com:5060",
        "SIP/2.0/UDP old.example.com:5060;branch=7a9f2",
    ] {
        let req = request("INVITE", via, 1);
        let Incoming::New(id) = h.on_request(&req, udp(UPSTREAM)) else {
            panic!("not new");
        };
        assert_eq!(h.on_request(&req, udp(UPSTREAM)), Incoming::Retransmission);
        // What a proxy adds on receipt does not change the match.
        let mut stamped = req.clone();
        stamped.remove_first_value(&HeaderName::Via);
        stamped.push_front(
            HeaderName::Via,
            format!("{via};received=192.0.2.10;rport=5060"),
        );
        assert_eq!(
            h.on_request(&stamped, udp(UPSTREAM)),
            Incoming::Retransmission
        );
        // Another CSeq or Call-ID is another transaction.
        let next = request("INVITE", via, 2);
        assert!(matches!(
            h.on_request(&next, udp(UPSTREAM)),
            Incoming::New(_)
        ));
        let mut other_call = req.clone();
        other_call.set_header(HeaderName::CallId, "another@old.example.com".into());
        assert!(matches!(
            h.on_request(&other_call, udp(UPSTREAM)),
            Incoming::New(_)
        ));

        // CANCEL finds the INVITE by Request-URI, tags, Call-ID, CSeq number, top Via.
        let cancel = request("CANCEL", via, 1);
        assert_eq!(h.layer.find_invite_for_cancel(&cancel), Some(id));

        let busy = response(&req, 486, "old-tag");
        h.respond(id, busy.clone());
        h.take_sent();
        // An ACK whose To tag is not the final response's acknowledges something else.
        let wrong = ack_for(&req, &response(&req, 486, "other-tag"));
        assert_eq!(h.on_request(&wrong, udp(UPSTREAM)), Incoming::Ack2xx);
        let ack = ack_for(&req, &busy);
        assert_eq!(h.on_request(&ack, udp(UPSTREAM)), Incoming::AckForNon2xx);
        assert_eq!(h.on_request(&ack, udp(UPSTREAM)), Incoming::AckForNon2xx);
        assert_eq!(h.take_sent().len(), 0);
    }

    // Non-INVITE: the To tag and the method are part of the match.
    let via = "SIP/2.0/UDP old.example.com:5060";
    let bye = request("BYE", via, 5);
    let mut bye_tagged = bye.clone();
    bye_tagged.set_header(
        HeaderName::To,
        "Bob <sip:bob@biloxi.example.com>;tag=x".into(),
    );
    assert!(matches!(
        h.on_request(&bye, udp(UPSTREAM)),
        Incoming::New(_)
    ));
    assert!(matches!(
        h.on_request(&bye_tagged, udp(UPSTREAM)),
        Incoming::New(_)
    ));
    assert_eq!(
        h.on_request(&bye_tagged, udp(UPSTREAM)),
        Incoming::Retransmission
    );
    let info = request("INFO", via, 5);
    assert!(matches!(
        h.on_request(&info, udp(UPSTREAM)),
        Incoming::New(_)
    ));
}

#[test]
fn ack_outside_any_transaction_goes_to_the_core() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKx1");
    let ok = response(&req, 200, "x");
    let mut ack = ack_for(&req, &ok);
    ack.remove_first_value(&HeaderName::Via);
    ack.push_front(
        HeaderName::Via,
        "SIP/2.0/UDP p1.example.com:5060;branch=z9hG4bKack2xx".into(),
    );
    assert_eq!(h.on_request(&ack, udp(UPSTREAM)), Incoming::Ack2xx);
    assert_eq!(h.layer.len(), (0, 0));
}

// ------------------------------------------------------- transport errors (17.x.4)

#[test]
fn transport_error_fails_the_transactions_on_that_connection() {
    let mut h = Harness::new();
    let conn7 = stream(Transport::Tcp, UPSTREAM, Some(7));
    let conn8 = stream(Transport::Tls, "192.0.2.11:5061", Some(8));
    let Incoming::New(s7) = h.on_request(&invite("z9hG4bKt1"), conn7.clone()) else {
        panic!("not new");
    };
    let Incoming::New(s8) = h.on_request(&invite("z9hG4bKt2"), conn8.clone()) else {
        panic!("not new");
    };
    let c7 = h.send_request(options("z9hG4bKt3"), conn7.clone());
    // A transaction that already ended (K = 0 over TCP) is not reported again.
    let req = options("z9hG4bKt4");
    h.send_request(req.clone(), conn7.clone());
    h.on_response(&response(&req, 200, "t"), conn7.clone());
    h.send_request(options("z9hG4bKt5"), conn8);
    let now = h.instant();
    h.layer.transport_error(now, 7);
    let mut events: Vec<TxnEvent> = h.take_events().into_iter().map(|e| e.1).collect();
    events.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        events,
        vec![
            TxnEvent::ClientTransportError(c7),
            TxnEvent::ServerTerminated(s7),
        ]
    );
    assert_eq!(h.layer.len(), (1, 1));
    assert!(h.layer.server_txn_request(s8).is_some());
    // Responding on the dead transaction sends nothing.
    h.take_sent();
    h.respond(s7, response(&invite("z9hG4bKt1"), 486, "t"));
    assert_eq!(h.take_sent().len(), 0);
    // Unknown connections are ignored.
    h.layer.transport_error(now, 99);
    assert_eq!(h.take_events(), vec![]);
}

#[test]
fn client_learns_the_connection_from_its_first_response() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKt6");
    let id = h.send_request(req.clone(), stream(Transport::Tcp, DOWNSTREAM, None));
    h.on_response(
        &response(&req, 180, "t"),
        stream(Transport::Tcp, DOWNSTREAM, Some(42)),
    );
    // The CANCEL now goes on that connection.
    let now = h.instant();
    h.layer.cancel(now, id);
    h.drain();
    let sent = h.take_sent();
    assert_eq!(sent.last().unwrap().1.peer.conn, Some(42));
    h.layer.transport_error(now, 42);
    assert_eq!(
        h.take_events().into_iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![TxnEvent::ClientTransportError(id)]
    );
    assert_eq!(h.layer.len(), (0, 0));
}

#[test]
fn destination_unreachable_fails_client_transactions_towards_it() {
    let mut h = Harness::new();
    let a = h.send_request(options("z9hG4bKu1"), udp(DOWNSTREAM));
    let b = h.send_request(invite("z9hG4bKu2"), udp(DOWNSTREAM));
    h.send_request(options("z9hG4bKu3"), udp("198.51.100.21:5060"));
    let d = h.send_request(
        options("z9hG4bKu4"),
        stream(Transport::Tcp, DOWNSTREAM, None),
    );
    let now = h.instant();
    h.layer
        .destination_unreachable(now, Transport::Udp, addr(DOWNSTREAM));
    assert_eq!(
        h.take_events().into_iter().map(|e| e.1).collect::<Vec<_>>(),
        vec![
            TxnEvent::ClientTransportError(a),
            TxnEvent::ClientTransportError(b),
        ]
    );
    assert_eq!(h.layer.len(), (0, 2));
    h.layer
        .destination_unreachable(now, Transport::Tcp, addr(DOWNSTREAM));
    assert_eq!(
        h.take_events(),
        vec![(h.now, TxnEvent::ClientTransportError(d))]
    );
}

// ------------------------------------------------------------------------- scale

#[test]
fn tens_of_thousands_of_transactions_drain_through_the_timer_heap() {
    let mut h = Harness::new();
    let n = 20_000;
    for i in 0..n {
        let req = options(&format!("z9hG4bKbulk{i}"));
        let Incoming::New(id) = h.on_request(&req, udp(UPSTREAM)) else {
            panic!("not new");
        };
        h.respond(id, response(&req, 200, "b"));
        h.send_request(invite(&format!("z9hG4bKout{i}")), udp(DOWNSTREAM));
        if i % 1000 == 0 {
            h.advance(ms(1));
        }
    }
    h.take_sent();
    assert_eq!(h.layer.len(), (n, n));
    h.advance(secs(40));
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.layer.poll_timeout(), None);
    let events = h.take_events();
    assert_eq!(events.len(), 2 * n);
    // Each client INVITE was sent 7 times in all (1 + 6 Timer A retransmissions).
    assert_eq!(h.take_sent().len(), 6 * n);
}

#[test]
fn ack_is_never_a_client_transaction() {
    let mut h = Harness::new();
    let req = invite("z9hG4bKy1");
    let ack = ack_for(&req, &response(&req, 200, "y"));
    h.send_request(ack, udp(DOWNSTREAM));
    assert_eq!(h.take_sent().len(), 1);
    assert_eq!(h.layer.len(), (0, 0));
    assert_eq!(h.layer.poll_timeout(), None);
}

#[test]
fn on_response_match_tells_absorbed_from_stray() {
    use sip_proto::txn::ResponseMatch;
    let mut h = Harness::new();
    let req = invite("z9hG4bKr1");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    let busy = response(&req, 486, "r");
    let now = h.instant();
    assert_eq!(
        h.layer.on_response_match(now, &busy, udp(DOWNSTREAM)),
        ResponseMatch::Matched(id, ResponseEvent::Final(busy.clone()))
    );
    assert_eq!(
        h.layer.on_response_match(now, &busy, udp(DOWNSTREAM)),
        ResponseMatch::Absorbed
    );
    let other = response(&invite("z9hG4bKr2"), 486, "r");
    assert_eq!(
        h.layer.on_response_match(now, &other, udp(DOWNSTREAM)),
        ResponseMatch::Stray
    );
    // The response to a CANCEL the layer sent is absorbed too.
    let req = invite("z9hG4bKr3");
    let id = h.send_request(req.clone(), udp(DOWNSTREAM));
    h.on_response(&response(&req, 180, "r"), udp(DOWNSTREAM));
    let now = h.instant();
    h.layer.cancel(now, id);
    let sent = h.take_sent();
    let cancel = parse(&sent.last().unwrap().1);
    assert_eq!(
        h.layer
            .on_response_match(now, &response(&cancel, 200, "r"), udp(DOWNSTREAM)),
        ResponseMatch::Absorbed
    );
}
