//! The SIP decoding driver shared by the fuzz target (`fuzz/fuzz_targets/sip_message.rs`,
//! built with cargo-fuzz) and the stable CI guard `tests/fuzz_smoke.rs`, so both run
//! exactly the same calls. Everything here must hold for *any* input: a panic, or a
//! broken invariant asserted below, is a bug.

use std::hint::black_box;

use sip_proto::message::{
    error_response, frame, parse_auth_header, Contacts, Frame, Header, HeaderName, Limits, Message,
    ParseError, Via,
};
use sip_proto::uri::{NameAddr, Uri};

/// Header names whose accessors are exercised on every parsed message.
fn names() -> [HeaderName; 12] {
    [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::Contact,
        HeaderName::Route,
        HeaderName::RecordRoute,
        HeaderName::Path,
        HeaderName::Authorization,
        HeaderName::WwwAuthenticate,
        HeaderName::parse("X-Unknown"),
    ]
}

/// Parses `data` as a datagram and as a stream, calls every accessor on what parses and
/// checks that encoding round-trips; on errors, checks the error response.
pub fn decode_all(data: &[u8]) {
    let limits = Limits::default();
    match Message::parse(data, &limits) {
        Ok(m) => check_message(&m),
        Err(e) => {
            check_error(data, &e);
            check_lines(data);
        }
    }
    match frame(data, &limits) {
        Ok(Frame::Message { len }) => {
            assert!(len > 0 && len <= data.len());
            if len < data.len() {
                black_box(Message::parse(&data[..len], &limits).is_ok());
            }
        }
        Ok(Frame::KeepAlive { len, .. }) => assert!(len > 0 && len <= data.len()),
        Ok(Frame::Incomplete) | Err(_) => {}
    }
}

/// The value parsers on their own, on the Request-URI and each header value of input
/// that did not parse as a whole (a message that parses has its values checked through
/// its accessors in [`check_message`]).
fn check_lines(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    if let Some(uri) = lines.next().and_then(|l| l.split(' ').nth(1)) {
        check_values(uri);
    }
    for line in lines.take_while(|l| !l.is_empty()).take(32) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        // Only headers these parsers are for (compact forms included).
        if !matches!(
            HeaderName::parse(name.trim()),
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Path
                | HeaderName::Authorization
                | HeaderName::ProxyAuthorization
                | HeaderName::WwwAuthenticate
                | HeaderName::ProxyAuthenticate
        ) {
            continue;
        }
        check_values(value.trim());
    }
}

fn check_error(data: &[u8], e: &ParseError) {
    assert!(matches!(e.status(), 400 | 505 | 513));
    assert!(!e.reason().is_empty());
    if let Some(resp) = error_response(data, e) {
        let status_line = format!("SIP/2.0 {} ", e.status());
        assert!(resp.starts_with(status_line.as_bytes()));
        // Copied values never break the framing of the answer.
        assert_eq!(
            frame(&resp, &Limits::default()),
            Ok(Frame::Message { len: resp.len() })
        );
    }
}

/// The typed value parsers on `s`, and Display -> parse -> equal for what parses. Each
/// parser only gets values that could be its kind (a colon for URIs, `SIP` for Via, `=`
/// for credentials), which keeps the smoke test fast in debug builds.
fn check_values(s: &str) {
    if s.contains(':') {
        if let Ok(n) = NameAddr::parse(s) {
            // Display -> parse gives the same value (its URI included); when Display gives
            // the input back, that holds without parsing again.
            let text = n.to_string();
            if text != s {
                assert_eq!(NameAddr::parse(&text).as_ref(), Ok(&n), "{s:?}");
            }
            black_box((
                n.tag(),
                n.qvalue().ok(),
                n.expires().ok(),
                n.sip_instance(),
                n.reg_id(),
            ));
            if let Some(sip) = n.uri.as_sip() {
                assert!(sip.equivalent(sip));
                black_box((sip.aor(), sip.transport(), sip.user_unescaped()));
            }
        } else if let Ok(u) = Uri::parse(s) {
            check_uri(&u);
        }
    }
    if s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("SIP")) {
        if let Ok(v) = Via::parse(s) {
            let text = v.to_string();
            if text != s {
                assert_eq!(Via::parse(&text).as_ref(), Ok(&v), "{s:?}");
            }
            black_box((v.branch(), v.rport(), v.received()));
        }
    }
    if s.contains('=') {
        if let Some((scheme, params)) = parse_auth_header(s) {
            assert!(!scheme.is_empty() && !params.is_empty());
        }
    }
}

fn check_uri(u: &Uri) {
    let text = u.to_string();
    assert_eq!(Uri::parse(&text).as_ref(), Ok(u));
    if let Some(sip) = u.as_sip() {
        assert!(sip.equivalent(sip));
        black_box((sip.aor(), sip.transport(), sip.user_unescaped()));
    }
}

fn check_message(m: &Message) {
    // What parse validated is there.
    let vias = m.vias();
    assert!(!vias.is_empty());
    assert_eq!(m.top_via().as_ref(), vias.first());
    assert_eq!(vias.len(), m.values(&HeaderName::Via).len());
    for v in &vias {
        assert_eq!(Via::parse(&v.to_string()).as_ref(), Ok(v));
    }
    let from = m.from_header().expect("From");
    let to = m.to_header().expect("To");
    for n in [&from, &to] {
        assert_eq!(NameAddr::parse(&n.to_string()).as_ref(), Ok(n));
    }
    assert!(m.call_id().is_some());
    let cseq = m.cseq().expect("CSeq");
    if let Some(method) = m.method() {
        assert_eq!(&cseq.method, method);
        let uri = m.uri().unwrap();
        check_uri(uri);
        assert!(uri.as_sip().is_none_or(|sip| sip.headers.is_none()));
    } else {
        assert!((100..=699).contains(&m.status().unwrap()));
    }
    assert!(m.max_forwards().is_none_or(|n| n <= 255));
    black_box(m.expires().is_ok());
    match m.contacts() {
        Ok(Some(Contacts::List(list))) => {
            for n in &list {
                assert_eq!(NameAddr::parse(&n.to_string()).as_ref(), Ok(n));
                black_box((
                    n.qvalue().ok(),
                    n.expires().ok(),
                    n.sip_instance(),
                    n.reg_id(),
                ));
            }
        }
        Ok(Some(Contacts::Star)) | Ok(None) | Err(_) => {}
    }
    for name in names() {
        black_box(m.header(&name));
        black_box(m.values(&name));
        black_box(m.name_addrs(&name).is_ok());
    }
    for h in &m.headers {
        black_box(m.header(&h.name));
        if matches!(
            h.name,
            HeaderName::Authorization
                | HeaderName::ProxyAuthorization
                | HeaderName::WwwAuthenticate
                | HeaderName::ProxyAuthenticate
        ) {
            black_box(parse_auth_header(&h.value));
        }
    }

    // Encoding round-trips (a Content-Length is added when there was none).
    let bytes = m.encode();
    let again = Message::parse(&bytes, &Limits::default()).expect("encoded message parses");
    let mut expected = m.clone();
    if expected.header(&HeaderName::ContentLength).is_none() {
        expected.headers.push(Header {
            name: HeaderName::ContentLength,
            value: m.body.len().to_string(),
        });
    }
    assert_eq!(again, expected);
    assert_eq!(again.encode(), bytes);
    assert_eq!(
        frame(&bytes, &Limits::default()),
        Ok(Frame::Message { len: bytes.len() })
    );

    if m.is_request() {
        // Answers built from a valid request are valid responses.
        for code in [100, 200] {
            let r = Message::response_to(m, code, "Reason", Some("fuzz-tag"));
            let parsed = Message::parse(&r.encode(), &Limits::default()).expect("response");
            assert_eq!(parsed.status(), Some(code));
            assert_eq!(parsed.cseq(), m.cseq());
            if code > 100 {
                assert!(parsed.to_header().unwrap().tag().is_some());
            }
        }
        // A proxy's edits keep it valid: pop the top Via, push ours, add a Route.
        let mut e = m.clone();
        assert!(e.remove_first_value(&HeaderName::Via).is_some());
        e.push_front(
            HeaderName::Via,
            "SIP/2.0/UDP proxy.invalid;branch=z9hG4bKfuzz".into(),
        );
        e.push_front(HeaderName::Route, "<sip:proxy.invalid;lr>".into());
        let parsed = Message::parse(&e.encode(), &Limits::default()).expect("edited");
        assert_eq!(parsed.top_via().unwrap().host, "proxy.invalid");
        assert_eq!(parsed.vias().len(), vias.len());
    }
}
