use super::*;

const REGISTER: &str = "REGISTER sip:registrar.biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Bob <sip:bob@biloxi.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.4>;expires=7200, <sip:bob@[2001:db8::4]:5070;transport=tcp>;q=0.5\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\
\r\n";

fn parse(s: &str) -> Message {
    Message::parse(s.as_bytes(), &Limits::default()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn parse_err(s: &[u8]) -> ParseError {
    Message::parse(s, &Limits::default()).expect_err("should not parse")
}

/// A minimal valid request with `extra` header lines inserted before Content-Length.
fn request_with(extra: &str) -> String {
    format!(
        "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n\
         From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c1\r\n\
         CSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn parses_an_ordinary_register() {
    let m = parse(REGISTER);
    assert!(m.is_request());
    assert_eq!(m.method(), Some(&Method::Register));
    let uri = m.uri().unwrap().as_sip().unwrap();
    assert_eq!(uri.host, "registrar.biloxi.com");
    assert_eq!(m.headers.len(), 9);
    assert_eq!(m.call_id(), Some("843817637684230@998sdasdh09"));
    assert_eq!(
        m.cseq(),
        Some(CSeq {
            seq: 1826,
            method: Method::Register
        })
    );
    assert_eq!(m.max_forwards(), Some(70));
    assert_eq!(m.expires(), Ok(Some(7200)));
    assert_eq!(m.from_header().unwrap().tag(), Some("456248"));
    assert_eq!(m.to_header().unwrap().display.as_deref(), Some("Bob"));
    assert_eq!(m.to_header().unwrap().tag(), None);
    let via = m.top_via().unwrap();
    assert_eq!(via.transport, "UDP");
    assert_eq!(via.host, "bobspc.biloxi.com");
    assert_eq!(via.port, Some(5060));
    assert_eq!(via.branch(), Some("z9hG4bKnashds7"));
    assert_eq!(via.rport(), Some(None));
    let Ok(Some(Contacts::List(c))) = m.contacts() else {
        panic!("contacts");
    };
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].expires(), Ok(Some(7200)));
    assert_eq!(c[1].qvalue(), Ok(Some(500)));
    assert_eq!(c[1].uri.as_sip().unwrap().host, "[2001:db8::4]");
    assert_eq!(c[1].uri.as_sip().unwrap().port, Some(5070));
    assert!(m.body.is_empty());
    assert_eq!(
        Message::parse(&m.encode(), &Limits::default()),
        Ok(m.clone())
    );
    assert_eq!(m.encode(), REGISTER.as_bytes());
}

#[test]
fn methods_are_case_sensitive_tokens() {
    assert_eq!(Method::from_token("INVITE"), Some(Method::Invite));
    assert_eq!(
        Method::from_token("invite"),
        Some(Method::Other("invite".into()))
    );
    assert_eq!(Method::from_token("IN VITE"), None);
    assert_eq!(Method::from_token(""), None);
    for m in [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "INFO",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
        "FOO",
    ] {
        assert_eq!(Method::from_token(m).unwrap().as_str(), m);
    }
    // A lower-case method must match a lower-case CSeq method.
    let text = request_with("").replace("OPTIONS", "options");
    assert_eq!(
        parse(&text).method(),
        Some(&Method::Other("options".into()))
    );
    let text = request_with("").replacen("OPTIONS", "options", 1);
    assert_eq!(parse_err(text.as_bytes()).status(), 400);
}

#[test]
fn header_names_compact_and_case_insensitive() {
    for (s, h) in [
        ("v", HeaderName::Via),
        ("V", HeaderName::Via),
        ("vIa", HeaderName::Via),
        ("i", HeaderName::CallId),
        ("call-id", HeaderName::CallId),
        ("m", HeaderName::Contact),
        ("l", HeaderName::ContentLength),
        ("c", HeaderName::ContentType),
        ("k", HeaderName::Supported),
        ("f", HeaderName::From),
        ("t", HeaderName::To),
        ("www-authenticate", HeaderName::WwwAuthenticate),
        ("CSEQ", HeaderName::CSeq),
    ] {
        assert_eq!(HeaderName::parse(s), h, "{s}");
    }
    assert_eq!(HeaderName::parse("s").as_str(), "Subject");
    assert_eq!(HeaderName::parse("o").as_str(), "Event");
    assert_eq!(HeaderName::parse("X-Foo"), HeaderName::parse("x-foo"));
    assert_ne!(HeaderName::parse("X-Foo"), HeaderName::parse("X-Bar"));
    let hash = |h: &HeaderName| {
        use std::collections::hash_map::DefaultHasher;
        let mut s = DefaultHasher::new();
        h.hash(&mut s);
        s.finish()
    };
    assert_eq!(
        hash(&HeaderName::parse("X-Foo")),
        hash(&HeaderName::parse("x-FOO"))
    );
    assert_eq!(HeaderName::CallId.as_str(), "Call-ID");
    assert_eq!(HeaderName::WwwAuthenticate.as_str(), "WWW-Authenticate");
}

#[test]
fn unfolds_continuation_lines() {
    let text = request_with(
        "Subject: I know you're there,\r\n pick up the phone\r\n\tand talk to me!\r\n\
         Supported:\r\n  100rel\r\n",
    );
    let m = parse(&text);
    assert_eq!(
        m.header(&HeaderName::parse("Subject")),
        Some("I know you're there, pick up the phone and talk to me!")
    );
    assert_eq!(m.header(&HeaderName::Supported), Some("100rel"));
    // A continuation before any header is refused.
    let text = "OPTIONS sip:a@b SIP/2.0\r\n Via: x\r\n\r\n";
    assert_eq!(parse_err(text.as_bytes()).status(), 400);
}

#[test]
fn bare_lf_line_ends_are_accepted() {
    let text = request_with("").replace("\r\n", "\n");
    let m = parse(&text);
    assert_eq!(m.call_id(), Some("c1"));
    // A bare CR inside a line is not a line end.
    let text = request_with("X-A: a\rb\r\n");
    assert_eq!(parse_err(text.as_bytes()).status(), 400);
}

#[test]
fn values_split_outside_quotes_and_angle_brackets() {
    let text = request_with(
        "Route: <sip:p1.example.com;lr>, \"a,b\" <sip:p2.example.com;lr>\r\n\
         Route: <sip:p3.example.com;lr>\r\nAllow: INVITE, ACK,,BYE\r\n",
    );
    let m = parse(&text);
    assert_eq!(
        m.values(&HeaderName::Route),
        vec![
            "<sip:p1.example.com;lr>",
            "\"a,b\" <sip:p2.example.com;lr>",
            "<sip:p3.example.com;lr>"
        ]
    );
    assert_eq!(m.values(&HeaderName::Allow), vec!["INVITE", "ACK", "BYE"]);
    let routes = m.name_addrs(&HeaderName::Route).unwrap();
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[1].display.as_deref(), Some("a,b"));
    assert!(routes[2].uri.as_sip().unwrap().params.contains("lr"));
    assert!(m.name_addrs(&HeaderName::Path).unwrap().is_empty());
    let m = parse(&request_with("Record-Route: <sip:a@b>;;\r\n"));
    assert!(m.name_addrs(&HeaderName::RecordRoute).is_err());
}

#[test]
fn via_forms() {
    let v =
        Via::parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport=5061;received=198.51.100.7")
            .unwrap();
    assert_eq!(v.rport(), Some(Some(5061)));
    assert_eq!(v.received(), Some("198.51.100.7"));
    assert_eq!(
        v.to_string(),
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport=5061;received=198.51.100.7"
    );
    assert_eq!(Via::parse(&v.to_string()).unwrap(), v);

    let v =
        Via::parse("SIP/2.0/tls [2001:DB8::9]:5061;branch=z9hG4bKx;received=2001:db8::10").unwrap();
    assert_eq!(v.transport, "TLS");
    assert_eq!(v.host, "[2001:db8::9]");
    assert_eq!(v.port, Some(5061));
    assert_eq!(v.received(), Some("2001:db8::10"));

    // SWS around "/", ":", ";" and "=" (RFC 4475 3.1.1.1).
    let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2 : 5070 ;  branch = 390skdjuw").unwrap();
    assert_eq!(v.port, Some(5070));
    assert_eq!(v.branch(), Some("390skdjuw"));
    // RFC 2543 style: no branch at all.
    assert_eq!(
        Via::parse("SIP/2.0/UDP iftgw.example.com")
            .unwrap()
            .branch(),
        None
    );

    for bad in [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDPhost",
        "SIP/7.0/UDP host",
        "HTTP/2.0/UDP host",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host;branch",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;rport=x",
        "SIP/2.0/UDP host;rport=70000",
        "SIP/2.0/UDP host:",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP 192.0.2.15;;,;,,",
        "SIP/2.0/UDP host extra",
    ] {
        assert!(Via::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn several_vias_per_line_and_editing_them() {
    let text = request_with("").replace(
        "Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n",
        "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKa, SIP/2.0/TCP p2.example.com;branch=z9hG4bKb\r\n\
         v: SIP/2.0/UDP ua.example.com;branch=z9hG4bKc\r\n",
    );
    let mut m = parse(&text);
    let hosts: Vec<_> = m.vias().into_iter().map(|v| v.host).collect();
    assert_eq!(
        hosts,
        ["p1.example.com", "p2.example.com", "ua.example.com"]
    );
    assert_eq!(m.top_via().unwrap().host, "p1.example.com");

    // A proxy pops its own Via from a response and pushes one on a request.
    let top = m.remove_first_value(&HeaderName::Via).unwrap();
    assert!(top.contains("p1.example.com"));
    assert_eq!(m.top_via().unwrap().host, "p2.example.com");
    m.remove_first_value(&HeaderName::Via);
    assert_eq!(m.top_via().unwrap().host, "ua.example.com");
    assert_eq!(
        m.headers
            .iter()
            .filter(|h| h.name == HeaderName::Via)
            .count(),
        1
    );
    m.push_front(
        HeaderName::Via,
        "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp".into(),
    );
    assert_eq!(m.top_via().unwrap().host, "proxy.example.com");
    assert_eq!(m.headers[0].name, HeaderName::Via);
    assert_eq!(m.vias().len(), 2);

    // Route goes to the top when absent; other headers go to the end.
    m.push_front(HeaderName::Route, "<sip:r@x;lr>".into());
    assert_eq!(m.headers[0].name, HeaderName::Route);
    m.push_front(HeaderName::parse("X-New"), "1".into());
    assert_eq!(m.headers.last().unwrap().name, HeaderName::parse("x-new"));
    assert_eq!(
        m.remove_first_value(&HeaderName::Route).as_deref(),
        Some("<sip:r@x;lr>")
    );
    assert_eq!(m.header(&HeaderName::Route), None);
    assert_eq!(m.remove_first_value(&HeaderName::Route), None);
    // Still a valid message after the edits.
    assert_eq!(Message::parse(&m.encode(), &Limits::default()), Ok(m));
}

#[test]
fn required_headers_and_their_validation() {
    assert!(Message::parse(request_with("").as_bytes(), &Limits::default()).is_ok());
    for (header, reason) in [
        ("Via", "Missing Via header"),
        ("From", "Missing From header"),
        ("To", "Missing To header"),
        ("Call-ID", "Missing Call-ID header"),
        ("CSeq", "Missing CSeq header"),
    ] {
        let text = request_with("");
        let text: String = text
            .split_inclusive("\r\n")
            .filter(|l| !l.starts_with(&format!("{header}:")))
            .collect();
        assert_eq!(parse_err(text.as_bytes()), bad(reason));
    }
    for (extra, reason) in [
        ("From: <sip:x@y>;tag=2\r\n", "Multiple From headers"),
        ("Call-ID: c2\r\n", "Multiple Call-ID headers"),
        (
            "Max-Forwards: 70\r\nMax-Forwards: 69\r\n",
            "Multiple Max-Forwards headers",
        ),
        ("Max-Forwards: 256\r\n", "Bad Max-Forwards header"),
        ("Max-Forwards: -1\r\n", "Bad Max-Forwards header"),
        ("Content-Length: 0\r\n", "Multiple Content-Length headers"),
        ("X: y\r\nVia: SIP/2.0/UDP h;branch=\r\n", "Bad Via header"),
    ] {
        assert_eq!(
            parse_err(request_with(extra).as_bytes()),
            bad(reason),
            "{extra}"
        );
    }
    let text = request_with("").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    assert_eq!(
        parse_err(text.as_bytes()),
        bad("CSeq method does not match")
    );
    let text = request_with("").replace("CSeq: 1 OPTIONS", "CSeq: 4294967296 OPTIONS");
    assert_eq!(parse_err(text.as_bytes()), bad("Bad CSeq header"));
    let text = request_with("").replace("CSeq: 1 OPTIONS", "CSeq: 4294967295 OPTIONS");
    assert_eq!(parse(&text).cseq().unwrap().seq, u32::MAX);
    let text = request_with("").replace("CSeq: 1 OPTIONS", "CSeq: 1OPTIONS");
    assert_eq!(parse_err(text.as_bytes()), bad("Bad CSeq header"));
    let text = request_with("").replace("Call-ID: c1", "Call-ID: a b");
    assert_eq!(parse_err(text.as_bytes()), bad("Bad Call-ID header"));
    let text = request_with("X-No-Colon\r\n");
    assert_eq!(parse_err(text.as_bytes()), bad("Bad header line"));
    let text = request_with("Bad Name: x\r\n");
    assert_eq!(parse_err(text.as_bytes()), bad("Bad header line"));
}

#[test]
fn start_lines() {
    for (line, status) in [
        ("OPTIONS sip:a@example.com SIP/3.0", 505),
        ("OPTIONS sip:a@example.com sip/2.1", 505),
        ("OPTIONS sip:a@example.com SIP/2", 400),
        ("OPTIONS sip:a@example.com", 400),
        ("OPTIONS  sip:a@example.com SIP/2.0", 400),
        ("OPTIONS sip:a@example.com SIP/2.0 ", 400),
        ("OPTIONS <sip:a@example.com> SIP/2.0", 400),
        ("OPTIONS sip:a@example.com?Route=x SIP/2.0", 400),
        ("OPT IONS sip:a@example.com SIP/2.0", 400),
        ("SIP/2.0 99 Too small", 400),
        ("SIP/2.0 700 Too big", 400),
        ("SIP/2.0 2000 OK", 400),
        ("SIP/2.0 20 OK", 400),
        ("SIP/2.0 abc OK", 400),
        ("SIP/3.0 200 OK", 505),
    ] {
        let text = request_with("").replacen("OPTIONS sip:a@example.com SIP/2.0", line, 1);
        assert_eq!(parse_err(text.as_bytes()).status(), status, "{line}");
    }
    let resp = |line: &str| {
        let text = request_with("").replacen("OPTIONS sip:a@example.com SIP/2.0", line, 1);
        parse(&text)
    };
    let m = resp("SIP/2.0 180 Ringing");
    assert_eq!(m.status(), Some(180));
    assert!(!m.is_request());
    assert_eq!(m.method(), None);
    assert_eq!(m.uri(), None);
    let m = resp("SIP/2.0 699 Â¿Qué? ünïcödé reason");
    assert_eq!(
        m.start,
        StartLine::Response {
            code: 699,
            reason: "Â¿Qué? ünïcödé reason".into()
        }
    );
    let m = resp("SIP/2.0 100");
    assert_eq!(
        m.start,
        StartLine::Response {
            code: 100,
            reason: String::new()
        }
    );
    // Responses do not need their CSeq method to match anything.
    let m = resp("SIP/2.0 200 OK");
    assert_eq!(m.cseq().unwrap().method, Method::Options);
    // Leading CRLFs before the start line are ignored (RFC 3261 section 7.5).
    let text = format!("\r\n\r\n{}", request_with(""));
    assert!(Message::parse(text.as_bytes(), &Limits::default()).is_ok());
    assert_eq!(parse_err(b"\r\n\r\n"), bad("Empty message"));
    assert_eq!(parse_err(b""), bad("Empty message"));
}

#[test]
fn bodies_and_content_length_on_datagrams() {
    let body = b"v=0\r\n\0binary\xff\r\n";
    let mut data = request_with("Content-Type: application/sdp\r\n")
        .replace(
            "Content-Length: 0",
            &format!("Content-Length: {}", body.len()),
        )
        .into_bytes();
    data.extend_from_slice(body);
    let m = Message::parse(&data, &Limits::default()).unwrap();
    assert_eq!(m.body, body);
    assert_eq!(m.encode(), data);

    // Extra bytes after Content-Length are discarded (RFC 3261 section 18.3) ...
    let mut longer = data.clone();
    longer.extend_from_slice(b"garbage");
    assert_eq!(
        Message::parse(&longer, &Limits::default()).unwrap().body,
        body
    );
    // ... fewer is 400.
    let shorter = &data[..data.len() - 1];
    assert_eq!(
        parse_err(shorter),
        bad("Content-Length larger than message")
    );
    // Without Content-Length the body is the rest of the datagram.
    let text = request_with("").replace("Content-Length: 0\r\n", "");
    let mut data = text.into_bytes();
    data.extend_from_slice(b"rest");
    let m = Message::parse(&data, &Limits::default()).unwrap();
    assert_eq!(m.body, b"rest");
    // encode adds the Content-Length.
    let again = Message::parse(&m.encode(), &Limits::default()).unwrap();
    assert_eq!(again.header(&HeaderName::ContentLength), Some("4"));
    assert_eq!(again.body, b"rest");

    for cl in ["-1", "five", "", "1 2", "99999999999999999999999"] {
        let text = request_with("").replace("Content-Length: 0", &format!("Content-Length: {cl}"));
        assert_eq!(
            parse_err(text.as_bytes()),
            bad("Bad Content-Length header"),
            "{cl}"
        );
    }
    // Header block without its empty line.
    let text = request_with("");
    assert_eq!(
        parse_err(text.trim_end().as_bytes()),
        bad("Missing end of headers")
    );
    // Non-UTF-8 header bytes.
    let mut data = request_with("X-Bin: \r\n").into_bytes();
    let at = data.windows(7).position(|w| w == b"X-Bin: ").unwrap() + 7;
    data.insert(at, 0xff);
    assert_eq!(parse_err(&data), bad("Header is not UTF-8"));
}

#[test]
fn encode_rewrites_a_wrong_content_length_and_cleans_values() {
    let mut m = parse(&request_with(""));
    m.body = b"hello".to_vec();
    m.push_front(HeaderName::parse("X-Evil"), "a\r\nInjected: yes".into());
    let bytes = m.encode();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("Content-Length: 5\r\n"));
    assert!(text.contains("X-Evil: a  Injected: yes\r\n"));
    let again = Message::parse(&bytes, &Limits::default()).unwrap();
    assert_eq!(again.body, b"hello");
    assert_eq!(again.header(&HeaderName::parse("Injected")), None);
}

#[test]
fn limits() {
    let limits = Limits {
        max_message_size: 300,
        max_headers: 8,
    };
    let text = request_with("");
    assert!(Message::parse(text.as_bytes(), &limits).is_ok());
    let big = request_with(&format!("X-Pad: {}\r\n", "a".repeat(300)));
    assert_eq!(
        Message::parse(big.as_bytes(), &limits),
        Err(ParseError::TooLarge)
    );
    assert_eq!(ParseError::TooLarge.status(), 513);
    let many = request_with("A: 1\r\nB: 2\r\nC: 3\r\n");
    assert_eq!(
        Message::parse(many.as_bytes(), &limits),
        Err(bad("Too many headers"))
    );
}

#[test]
fn contacts_star_and_errors() {
    let m = parse(&request_with("Contact: *\r\nExpires: 0\r\n"));
    assert_eq!(m.contacts(), Ok(Some(Contacts::Star)));
    assert_eq!(m.expires(), Ok(Some(0)));
    let m = parse(&request_with("Contact: *, <sip:a@b>\r\n"));
    assert!(m.contacts().is_err());
    let m = parse(&request_with("Contact: *\r\nContact: <sip:a@b>\r\n"));
    assert!(m.contacts().is_err());
    let m = parse(&request_with("Contact: *\r\nContact: *\r\n"));
    assert!(m.contacts().is_err());
    let m = parse(&request_with(""));
    assert_eq!(m.contacts(), Ok(None));
    assert_eq!(m.expires(), Ok(None));
    let m = parse(&request_with("Contact: <sip:a@b>;;\r\nExpires: soon\r\n"));
    assert!(m.contacts().is_err());
    assert_eq!(m.expires(), Err(bad("Bad Expires header")));
    let m = parse(&request_with(
        "m: \"Alice\" <sip:alice@pc33.example.com;ob>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1;expires=600\r\n",
    ));
    let Ok(Some(Contacts::List(c))) = m.contacts() else {
        panic!()
    };
    assert_eq!(
        c[0].sip_instance().as_deref(),
        Some("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")
    );
    assert_eq!(c[0].reg_id(), Some(1));
    assert_eq!(c[0].expires(), Ok(Some(600)));
    assert!(c[0].uri.as_sip().unwrap().params.contains("ob"));
}

#[test]
fn response_to_copies_the_dialog_headers() {
    let req = parse(&request_with("Timestamp: 54\r\nX-Other: 1\r\n").replace(
        "Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n",
        "Via: SIP/2.0/UDP p.example.com;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n",
    ));
    let r = Message::response_to(&req, 200, "OK", Some("t1"));
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.vias().len(), 2);
    assert_eq!(r.to_header().unwrap().tag(), Some("t1"));
    assert_eq!(r.from_header(), req.from_header());
    assert_eq!(r.call_id(), req.call_id());
    assert_eq!(r.cseq(), req.cseq());
    assert_eq!(r.header(&HeaderName::Timestamp), None);
    assert_eq!(r.header(&HeaderName::parse("X-Other")), None);
    assert!(r.body.is_empty());
    let bytes = r.encode();
    assert_eq!(
        Message::parse(&bytes, &Limits::default()).unwrap().status(),
        Some(200)
    );

    let trying = Message::response_to(&req, 100, "Trying", Some("t1"));
    assert_eq!(trying.to_header().unwrap().tag(), None);
    assert_eq!(trying.header(&HeaderName::Timestamp), Some("54"));
    // An existing To tag is kept.
    let r2 = Message::response_to(&r, 486, "Busy Here", Some("other"));
    assert_eq!(r2.to_header().unwrap().tag(), Some("t1"));
}

#[test]
fn auth_headers() {
    // RFC 2617 section 3.5.
    let (scheme, p) = parse_auth_header(
        "Digest username=\"Mufasa\",\r\n realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
         uri=\"/dir/index.html\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
         response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""
            .replace("\r\n", "")
            .as_str(),
    )
    .unwrap();
    assert_eq!(scheme, "Digest");
    let get = |n: &str| {
        p.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("username"), Some("Mufasa"));
    assert_eq!(get("realm"), Some("testrealm@host.com"));
    assert_eq!(get("qop"), Some("auth"));
    assert_eq!(get("nc"), Some("00000001"));
    assert_eq!(get("response"), Some("6629fae49393a05397450978507c4ef1"));
    assert_eq!(p.len(), 9);

    // RFC 7616 section 3.9.1: challenge with a quoted, comma-separated qop list.
    let (scheme, p) = parse_auth_header(
        "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, \
         nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
    )
    .unwrap();
    assert_eq!(scheme, "Digest");
    assert_eq!(p[1], ("qop".into(), "auth, auth-int".into()));
    assert_eq!(p[2], ("algorithm".into(), "SHA-256".into()));
    assert_eq!(p[3].1, "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v");

    // RFC 7616 section 3.9.2: username* extended notation and userhash.
    let (_, p) = parse_auth_header(
        "Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm=\"api@example.org\", userhash=false",
    )
    .unwrap();
    assert_eq!(
        p[0],
        ("username*".into(), "UTF-8''J%C3%A4s%C3%B8n%20Doe".into())
    );

    // Escapes inside quoted values.
    let (_, p) =
        parse_auth_header(r#"Digest realm="a \"quoted\" realm\\", uri="sip:a@b""#).unwrap();
    assert_eq!(p[0].1, r#"a "quoted" realm\"#);
    assert_eq!(p[1].1, "sip:a@b");
    // RFC 4475 3.3.7: an unknown scheme still splits.
    let (scheme, p) = parse_auth_header("NoOneKnowsThisScheme opaque-data=here").unwrap();
    assert_eq!(scheme, "NoOneKnowsThisScheme");
    assert_eq!(p, vec![("opaque-data".into(), "here".into())]);

    for bad in [
        "",
        "Digest",
        "Digest realm",
        "Digest realm=",
        "Digest realm=\"open",
        "Digest realm=a b",
        "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        "Dig\"est realm=a",
    ] {
        assert_eq!(parse_auth_header(bad), None, "{bad:?}");
    }
}

#[test]
fn framing_a_stream() {
    let limits = Limits::default();
    let one = request_with("");
    let body = "hello";
    let two = request_with("")
        .replace("Content-Length: 0", "l: 5")
        .replace("CSeq: 1", "CSeq: 2")
        + body;
    let stream = format!("\r\n\r\n{one}\r\n{two}");
    let b = stream.as_bytes();

    assert_eq!(
        frame(b, &limits),
        Ok(Frame::KeepAlive { len: 4, ping: true })
    );
    let mut at = 4;
    assert_eq!(
        frame(&b[at..], &limits),
        Ok(Frame::Message { len: one.len() })
    );
    assert!(Message::parse(&b[at..at + one.len()], &limits).is_ok());
    at += one.len();
    assert_eq!(
        frame(&b[at..], &limits),
        Ok(Frame::KeepAlive {
            len: 2,
            ping: false
        })
    );
    at += 2;
    assert_eq!(
        frame(&b[at..], &limits),
        Ok(Frame::Message { len: two.len() })
    );
    let m = Message::parse(&b[at..at + two.len()], &limits).unwrap();
    assert_eq!(m.body, body.as_bytes());
    at += two.len();
    assert_eq!(at, b.len());
    assert_eq!(frame(&b[at..], &limits), Ok(Frame::Incomplete));

    // Every strict prefix of a message is incomplete.
    for cut in 0..two.len() {
        let f = frame(&two.as_bytes()[..cut], &limits);
        assert!(
            matches!(f, Ok(Frame::Incomplete) | Ok(Frame::KeepAlive { .. })),
            "{cut}: {f:?}"
        );
    }
    // Partial keep-alives wait for more.
    assert_eq!(frame(b"\r", &limits), Ok(Frame::Incomplete));
    assert_eq!(frame(b"\r\n", &limits), Ok(Frame::Incomplete));
    assert_eq!(frame(b"\r\n\r", &limits), Ok(Frame::Incomplete));
    assert_eq!(
        frame(b"\nINVITE", &limits),
        Ok(Frame::KeepAlive {
            len: 1,
            ping: false
        })
    );

    // Content-Length is mandatory on streams.
    let no_cl = request_with("").replace("Content-Length: 0\r\n", "");
    assert_eq!(
        frame(no_cl.as_bytes(), &limits),
        Err(bad("Missing Content-Length header"))
    );
    let bad_cl = request_with("").replace("Content-Length: 0", "Content-Length: x");
    assert_eq!(
        frame(bad_cl.as_bytes(), &limits),
        Err(bad("Bad Content-Length header"))
    );
    // Too big: a Content-Length past the limit, or headers that never end.
    let small = Limits {
        max_message_size: 200,
        max_headers: 64,
    };
    let huge_cl = request_with("").replace("Content-Length: 0", "Content-Length: 100000");
    assert_eq!(
        frame(huge_cl.as_bytes(), &limits),
        Err(ParseError::TooLarge)
    );
    let endless = format!("OPTIONS sip:a@b SIP/2.0\r\nX: {}", "a".repeat(300));
    assert_eq!(frame(endless.as_bytes(), &small), Err(ParseError::TooLarge));
    assert_eq!(
        frame(&endless.as_bytes()[..100], &small),
        Ok(Frame::Incomplete)
    );
}

#[test]
fn error_responses() {
    let text = request_with("").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    let err = parse_err(text.as_bytes());
    let resp = error_response(text.as_bytes(), &err).unwrap();
    let r = Message::parse(&resp, &Limits::default()).unwrap();
    assert_eq!(r.status(), Some(400));
    assert_eq!(
        r.start,
        StartLine::Response {
            code: 400,
            reason: "CSeq method does not match".into()
        }
    );
    assert_eq!(r.call_id(), Some("c1"));
    assert_eq!(r.header(&HeaderName::CSeq), Some("1 INVITE"));
    assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK1"));
    let tag = r.to_header().unwrap().tag().unwrap().to_string();
    assert_eq!(tag.len(), 16);
    // Deterministic: a retransmission gets the same tag.
    let again = error_response(text.as_bytes(), &err).unwrap();
    assert_eq!(again, resp);

    // 505 and 513 use their own reason phrases.
    let text = request_with("").replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
    let resp = error_response(text.as_bytes(), &ParseError::VersionNotSupported).unwrap();
    assert!(resp.starts_with(b"SIP/2.0 505 Version Not Supported\r\n"));
    let resp = error_response(request_with("").as_bytes(), &ParseError::TooLarge).unwrap();
    assert!(resp.starts_with(b"SIP/2.0 513 Message Too Large\r\n"));

    // An existing To tag is kept.
    let text = request_with("").replace("To: <sip:a@example.com>", "To: <sip:a@example.com>;tag=x");
    let resp = error_response(text.as_bytes(), &bad("Bad")).unwrap();
    let r = Message::parse(&resp, &Limits::default()).unwrap();
    assert_eq!(r.to_header().unwrap().tag(), Some("x"));

    // Not answered: responses, ACKs, garbage, requests without Via or CSeq.
    let resp_text =
        request_with("").replacen("OPTIONS sip:a@example.com SIP/2.0", "SIP/2.0 200 OK", 1);
    assert_eq!(error_response(resp_text.as_bytes(), &bad("x")), None);
    let ack = request_with("").replace("OPTIONS", "ACK");
    assert_eq!(error_response(ack.as_bytes(), &bad("x")), None);
    assert_eq!(error_response(b"\x00\x01garbage", &bad("x")), None);
    assert_eq!(error_response(b"", &bad("x")), None);
    let no_via = request_with("").replace("Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n", "");
    assert_eq!(error_response(no_via.as_bytes(), &bad("x")), None);
    let no_cseq = request_with("").replace("CSeq: 1 OPTIONS\r\n", "");
    assert_eq!(error_response(no_cseq.as_bytes(), &bad("x")), None);
    // A reason phrase never breaks the status line.
    let resp = error_response(request_with("").as_bytes(), &bad("a\r\nb")).unwrap();
    assert!(resp.starts_with(b"SIP/2.0 400 a  b\r\n"));
}

/// RFC 7118: a browser's request over secure WebSocket names a `.invalid` host in its Via
/// (`SIP/2.0/WSS`, section 5.1) and its Contact (`transport=ws`, section 5.2); both parse,
/// map to the WebSocket transports and survive encoding unchanged.
#[test]
fn websocket_vias_and_contacts() {
    use crate::transport::Transport;
    let text = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=asdyka899\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: asidkj3ss\r\n\
CSeq: 1 INVITE\r\n\
Route: <sip:proxy.example.com:443;transport=ws;lr>\r\n\
Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws;ob>\r\n\
Content-Length: 0\r\n\
\r\n";
    let m = parse(text);
    let via = m.top_via().unwrap();
    assert_eq!(via.transport, "WSS");
    assert_eq!(via.host, "df7jal23ls0d.invalid");
    assert_eq!(
        Transport::from_via_token(&via.transport),
        Some(Transport::Wss)
    );
    let Ok(Some(Contacts::List(c))) = m.contacts() else {
        panic!("contacts");
    };
    let contact = c[0].uri.as_sip().unwrap();
    assert_eq!(contact.host, "df7jal23ls0d.invalid");
    assert_eq!(contact.transport().as_deref(), Some("ws"));
    assert!(contact.params.contains("ob"));
    assert_eq!(
        Transport::for_uri(contact.transport().as_deref(), contact.secure),
        Transport::Ws
    );
    let route = m.name_addrs(&HeaderName::Route).unwrap().remove(0);
    assert_eq!(route.uri.as_sip().unwrap().port, Some(443));
    // Encoding keeps every token as received, and parses back to the same message.
    let encoded = m.encode();
    assert_eq!(String::from_utf8(encoded.clone()).unwrap(), text);
    assert_eq!(Message::parse(&encoded, &Limits::default()).unwrap(), m);
    // A lower-case token is accepted (tokens are case-insensitive) and written upper-case.
    let lower = parse(&text.replace("SIP/2.0/WSS", "SIP/2.0/wss"));
    assert_eq!(lower.top_via().unwrap().transport, "WSS");
}
