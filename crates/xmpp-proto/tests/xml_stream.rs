//! XML streams and their verdicts (RFC 6120 sections 4 and 11): each document of
//! `tests/data/xmpp/` (also the seeds of the fuzz corpus) and a few built here, with what
//! the parser must make of it: the events of an accepted stream, or the stream error
//! condition (RFC 6120 section 4.9.3) and how many events come before it.
//!
//! Every document is also fed whole, one byte at a time and in uneven pieces: the
//! outcome must not change (`common/stream.rs`), and every element produced must
//! serialize and parse back to itself.
//!
//! Run with `--nocapture` to print the table.

#[path = "common/stream.rs"]
#[allow(dead_code)]
mod stream;

use stream::{check_round_trip, run, run_split, Outcome};
use xmpp_proto::element::{ns, Element, Node};
use xmpp_proto::xml::{Limits, StreamEvent, StreamHeader, StreamParser, XmlError};

const HEADER: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

enum Doc {
    File(&'static str),
    Built(fn() -> Vec<u8>),
}

enum Verdict {
    /// Accepted; the function checks the events.
    Accepted(fn(&[StreamEvent])),
    /// Refused with this condition after `after` events.
    Refused {
        condition: &'static str,
        after: usize,
    },
}

struct Case {
    doc: Doc,
    what: &'static str,
    verdict: Verdict,
}

const fn refused(condition: &'static str, after: usize) -> Verdict {
    Verdict::Refused { condition, after }
}

macro_rules! data {
    ($f:literal) => {
        include_bytes!(concat!("data/xmpp/", $f))
    };
}

fn file(name: &str) -> &'static [u8] {
    match name {
        "client-stream.xml" => data!("client-stream.xml"),
        "server-stream.xml" => data!("server-stream.xml"),
        "negotiation.xml" => data!("negotiation.xml"),
        "billion-laughs.xml" => data!("billion-laughs.xml"),
        "xxe.xml" => data!("xxe.xml"),
        "entity-reference.xml" => data!("entity-reference.xml"),
        "processing-instruction.xml" => data!("processing-instruction.xml"),
        "comment.xml" => data!("comment.xml"),
        "mismatched-end-tag.xml" => data!("mismatched-end-tag.xml"),
        "unclosed-stanza.xml" => data!("unclosed-stanza.xml"),
        "truncated.xml" => data!("truncated.xml"),
        "undeclared-prefix.xml" => data!("undeclared-prefix.xml"),
        "undeclared-attribute-prefix.xml" => data!("undeclared-attribute-prefix.xml"),
        "wrong-stream-namespace.xml" => data!("wrong-stream-namespace.xml"),
        "wrong-content-namespace.xml" => data!("wrong-content-namespace.xml"),
        "unprefixed-stream.xml" => data!("unprefixed-stream.xml"),
        "late-xml-declaration.xml" => data!("late-xml-declaration.xml"),
        "latin1-declaration.xml" => data!("latin1-declaration.xml"),
        "invalid-utf8.xml" => data!("invalid-utf8.xml"),
        "duplicate-attribute.xml" => data!("duplicate-attribute.xml"),
        "duplicate-expanded-attribute.xml" => data!("duplicate-expanded-attribute.xml"),
        "text-between-stanzas.xml" => data!("text-between-stanzas.xml"),
        "byte-order-mark.xml" => data!("byte-order-mark.xml"),
        "cdata-end-in-text.xml" => data!("cdata-end-in-text.xml"),
        "control-character.xml" => data!("control-character.xml"),
        "invalid-character-reference.xml" => data!("invalid-character-reference.xml"),
        "data-after-end.xml" => data!("data-after-end.xml"),
        "missing-attribute-space.xml" => data!("missing-attribute-space.xml"),
        "raw-less-than.xml" => data!("raw-less-than.xml"),
        "rebound-xml-prefix.xml" => data!("rebound-xml-prefix.xml"),
        other => panic!("no file {other}"),
    }
}

fn doc(d: &Doc) -> Vec<u8> {
    match d {
        Doc::File(name) => file(name).to_vec(),
        Doc::Built(f) => f(),
    }
}

fn name(d: &Doc) -> String {
    match d {
        Doc::File(name) => name.to_string(),
        Doc::Built(_) => "(built)".to_string(),
    }
}

fn header(events: &[StreamEvent]) -> &StreamHeader {
    match events.first() {
        Some(StreamEvent::Header(h)) => h,
        other => panic!("no header first: {other:?}"),
    }
}

fn elements(events: &[StreamEvent]) -> Vec<&Element> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Element(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn child<'a>(e: &'a Element, name: &str, ns: &str) -> &'a Element {
    e.get_child(name, ns)
        .unwrap_or_else(|| panic!("no <{name} xmlns='{ns}'> in {e:?}"))
}

/// 1 MiB in one text node: refused once 256 KiB of the stanza are in.
fn huge_text() -> Vec<u8> {
    let mut d = format!("{HEADER}<message><body>").into_bytes();
    d.resize(d.len() + (1 << 20), b'a');
    d
}

/// A start tag that never ends (1 MiB of attributes).
fn endless_start_tag() -> Vec<u8> {
    let mut d = format!("{HEADER}<message to='").into_bytes();
    d.resize(d.len() + (1 << 20), b'x');
    d
}

fn too_deep() -> Vec<u8> {
    let depth = Limits::default().max_depth + 1;
    let mut d = HEADER.to_string();
    d.push_str("<message/>");
    d.push_str(&"<a>".repeat(depth));
    d.push_str(&"</a>".repeat(depth));
    d.into_bytes()
}

fn deepest_allowed() -> Vec<u8> {
    let depth = Limits::default().max_depth;
    let mut d = HEADER.to_string();
    d.push_str(&"<a>".repeat(depth));
    d.push_str(&"</a>".repeat(depth));
    d.into_bytes()
}

fn too_many_attributes() -> Vec<u8> {
    let attrs: String = (0..=Limits::default().max_attrs)
        .map(|i| format!(" a{i}='{i}'"))
        .collect();
    format!("{HEADER}<message{attrs}/>").into_bytes()
}

/// Exactly `max_stanza_bytes`, then the same plus one byte.
fn stanza_of(len: usize) -> Vec<u8> {
    let shell = "<message><body></body></message>".len();
    let body = "a".repeat(len - shell);
    format!("{HEADER}<message><body>{body}</body></message>").into_bytes()
}

fn largest_stanza() -> Vec<u8> {
    stanza_of(Limits::default().max_stanza_bytes)
}

fn one_byte_too_large() -> Vec<u8> {
    stanza_of(Limits::default().max_stanza_bytes + 1)
}

/// A billion-laughs document without a DOCTYPE: the reference alone is refused.
fn lol_reference() -> Vec<u8> {
    format!("{HEADER}<message><body>&lol9;&lol9;</body></message>").into_bytes()
}

fn whitespace_keepalives() -> Vec<u8> {
    let mut d = format!("{HEADER}\n").into_bytes();
    for _ in 0..1000 {
        d.extend_from_slice(b" \n\t\r\n");
    }
    d.extend_from_slice(b"<presence/>\n \n</stream:stream>\n");
    d
}

fn self_closed_stream() -> Vec<u8> {
    b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='b.example'/>".to_vec()
}

fn client_stream(events: &[StreamEvent]) {
    let h = header(events);
    assert_eq!(h.default_ns, ns::CLIENT);
    assert_eq!(h.from.as_deref(), Some("juliet@im.example.com"));
    assert_eq!(h.to.as_deref(), Some("im.example.com"));
    assert_eq!(h.version.as_deref(), Some("1.0"));
    assert_eq!(h.lang.as_deref(), Some("en"));
    assert_eq!(h.id, None);
    assert_eq!(events.last(), Some(&StreamEvent::End));
    let stanzas = elements(events);
    assert_eq!(stanzas.len(), 4);
    let message = stanzas[0];
    assert_eq!(
        (message.name.as_str(), message.ns.as_str()),
        ("message", ns::CLIENT)
    );
    assert_eq!(message.get_attr("type"), Some("chat"));
    assert_eq!(message.get_attr("xml:lang"), Some("en"));
    assert_eq!(
        child(message, "body", ns::CLIENT).text(),
        "Art thou not Romeo, and a Montague? <3 & \"fish\" ☺☃ Grüße 日本語 🎭"
    );
    child(message, "active", "http://jabber.org/protocol/chatstates");
    let html = child(message, "html", "http://jabber.org/protocol/xhtml-im");
    let p = child(
        child(html, "body", "http://www.w3.org/1999/xhtml"),
        "p",
        "http://www.w3.org/1999/xhtml",
    );
    assert_eq!(p.get_attr("style"), Some("font-weight:bold"));
    assert_eq!(
        p.children,
        [
            Node::Text("Art ".into()),
            Node::Element(Element::new("em", "http://www.w3.org/1999/xhtml").text_node("thou")),
            Node::Text(" not".into()),
        ]
    );
    let item = child(child(stanzas[1], "query", ns::ROSTER), "item", ns::ROSTER);
    assert_eq!(item.get_attr("name"), Some("N & 'urse'"));
    assert_eq!(child(item, "group", ns::ROSTER).text(), "Servants");
    // A CR from a reference stays; a raw line end is a line feed.
    assert_eq!(child(stanzas[2], "status", ns::CLIENT).text(), "a\rb\nc");
    assert_eq!(stanzas[3].ns, "urn:xmpp:sm:3");
}

fn server_stream(events: &[StreamEvent]) {
    assert_eq!(header(events).default_ns, ns::SERVER);
    assert_eq!(events.last(), Some(&StreamEvent::End));
    let stanzas = elements(events);
    assert_eq!(stanzas[0].name, "result");
    assert_eq!(stanzas[0].ns, "jabber:server:dialback");
    let message = stanzas[1];
    // The prefixed attribute keeps its declaration next to it.
    assert_eq!(
        message.attrs,
        [
            ("from".to_string(), "romeo@example.net/orchard".to_string()),
            ("to".to_string(), "juliet@im.example.com".to_string()),
            ("xmlns:x".to_string(), "urn:example:x".to_string()),
            ("x:flag".to_string(), "1".to_string()),
        ]
    );
    let inner = child(message, "body", "urn:example:x2");
    assert_eq!(inner.get_attr("xmlns:x"), Some("urn:example:x2"));
    assert_eq!(child(message, "body", ns::SERVER).text(), "plain");
}

fn negotiation(events: &[StreamEvent]) {
    assert_eq!(header(events).to.as_deref(), Some("im.example.com"));
    let e = elements(events);
    assert_eq!(
        (e[0].name.as_str(), e[0].ns.as_str()),
        ("starttls", ns::TLS)
    );
    assert_eq!(e[1].ns, ns::SASL);
    assert_eq!(e[1].get_attr("mechanism"), Some("SCRAM-SHA-1"));
    assert!(e[1].text().starts_with("biwsbj1qdWxpZXQ"));
    let bind = child(e[2], "bind", ns::BIND);
    assert_eq!(child(bind, "resource", ns::BIND).text(), "balcony");
    // CDATA sections are text, merged with the text around them.
    let body = child(e[3], "body", ns::CLIENT);
    assert_eq!(
        body.children,
        [Node::Text("<b>bold</b> & ]] > <![CDATA[]]> tail".into())]
    );
    // No </stream:stream>: the stream is still open.
    assert_ne!(events.last(), Some(&StreamEvent::End));
}

fn truncated(events: &[StreamEvent]) {
    // Only the header: the stanza is not complete, nothing is wrong yet.
    assert_eq!(events.len(), 1);
    header(events);
}

fn keepalives(events: &[StreamEvent]) {
    assert_eq!(events.len(), 3);
    assert_eq!(elements(events)[0].name, "presence");
}

fn self_closed(events: &[StreamEvent]) {
    assert_eq!(header(events).to.as_deref(), Some("b.example"));
    assert_eq!(events[1..], [StreamEvent::End]);
}

fn deepest(events: &[StreamEvent]) {
    let mut e = elements(events)[0];
    let mut depth = 1;
    while let Some(c) = e.elements().next() {
        e = c;
        depth += 1;
    }
    assert_eq!(depth, Limits::default().max_depth);
}

fn largest(events: &[StreamEvent]) {
    let body = child(elements(events)[0], "body", ns::CLIENT);
    assert_eq!(
        body.text().len(),
        Limits::default().max_stanza_bytes - "<message><body></body></message>".len()
    );
}

fn cases() -> Vec<Case> {
    use Doc::{Built, File};
    use Verdict::Accepted;
    vec![
        Case {
            doc: File("client-stream.xml"),
            what: "client stream: declaration, header, nested namespaces, escapes, UTF-8, end",
            verdict: Accepted(client_stream),
        },
        Case {
            doc: File("server-stream.xml"),
            what: "server stream: prefix declared on the header, prefixed attributes",
            verdict: Accepted(server_stream),
        },
        Case {
            doc: File("negotiation.xml"),
            what: "STARTTLS, SASL, bind, CDATA sections",
            verdict: Accepted(negotiation),
        },
        Case {
            doc: Built(whitespace_keepalives),
            what: "5000 bytes of whitespace keep-alives between stanzas",
            verdict: Accepted(keepalives),
        },
        Case {
            doc: Built(self_closed_stream),
            what: "<stream:stream/>: header, then end",
            verdict: Accepted(self_closed),
        },
        Case {
            doc: File("truncated.xml"),
            what: "stanza not complete yet",
            verdict: Accepted(truncated),
        },
        Case {
            doc: Built(deepest_allowed),
            what: "stanza nested exactly max_depth deep",
            verdict: Accepted(deepest),
        },
        Case {
            doc: Built(largest_stanza),
            what: "stanza of exactly max_stanza_bytes",
            verdict: Accepted(largest),
        },
        Case {
            doc: File("billion-laughs.xml"),
            what: "billion laughs: refused at <!DOCTYPE, nothing expanded",
            verdict: refused("restricted-xml", 0),
        },
        Case {
            doc: File("xxe.xml"),
            what: "external entity (XXE) in a DOCTYPE",
            verdict: refused("restricted-xml", 0),
        },
        Case {
            doc: Built(lol_reference),
            what: "reference to an undeclared entity &lol9;",
            verdict: refused("restricted-xml", 1),
        },
        Case {
            doc: File("entity-reference.xml"),
            what: "internal entity reference &foo;",
            verdict: refused("restricted-xml", 1),
        },
        Case {
            doc: File("processing-instruction.xml"),
            what: "processing instruction <?php ?> in the stream",
            verdict: refused("restricted-xml", 2),
        },
        Case {
            doc: File("late-xml-declaration.xml"),
            what: "XML declaration after the stream header",
            verdict: refused("restricted-xml", 1),
        },
        Case {
            doc: File("comment.xml"),
            what: "comment in a stanza",
            verdict: refused("restricted-xml", 1),
        },
        Case {
            doc: Built(huge_text),
            what: "1 MiB of text in one stanza",
            verdict: refused("policy-violation", 1),
        },
        Case {
            doc: Built(endless_start_tag),
            what: "1 MiB start tag",
            verdict: refused("policy-violation", 1),
        },
        Case {
            doc: Built(one_byte_too_large),
            what: "stanza of max_stanza_bytes + 1",
            verdict: refused("policy-violation", 1),
        },
        Case {
            doc: Built(too_deep),
            what: "max_depth + 1 nested elements",
            verdict: refused("policy-violation", 2),
        },
        Case {
            doc: Built(too_many_attributes),
            what: "max_attrs + 1 attributes",
            verdict: refused("policy-violation", 1),
        },
        Case {
            doc: File("mismatched-end-tag.xml"),
            what: "<body> closed by </message>",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("unclosed-stanza.xml"),
            what: "</stream:stream> with a stanza still open",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("undeclared-prefix.xml"),
            what: "element with an undeclared prefix",
            verdict: refused("bad-namespace-prefix", 1),
        },
        Case {
            doc: File("undeclared-attribute-prefix.xml"),
            what: "attribute with an undeclared prefix",
            verdict: refused("bad-namespace-prefix", 1),
        },
        Case {
            doc: File("unprefixed-stream.xml"),
            what: "stream element in the default namespace",
            verdict: refused("bad-namespace-prefix", 0),
        },
        Case {
            doc: File("wrong-stream-namespace.xml"),
            what: "stream element in another namespace",
            verdict: refused("invalid-namespace", 0),
        },
        Case {
            doc: File("wrong-content-namespace.xml"),
            what: "content namespace other than jabber:client/server",
            verdict: refused("invalid-namespace", 0),
        },
        Case {
            doc: File("latin1-declaration.xml"),
            what: "XML declaration with encoding ISO-8859-1",
            verdict: refused("unsupported-encoding", 0),
        },
        Case {
            doc: File("invalid-utf8.xml"),
            what: "Latin-1 byte in text",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("byte-order-mark.xml"),
            what: "byte order mark before the header",
            verdict: refused("not-well-formed", 0),
        },
        Case {
            doc: File("duplicate-attribute.xml"),
            what: "attribute given twice",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("duplicate-expanded-attribute.xml"),
            what: "a:id and b:id with a and b bound to one namespace",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("missing-attribute-space.xml"),
            what: "no whitespace between attributes",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("raw-less-than.xml"),
            what: "unescaped '<' in text",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("text-between-stanzas.xml"),
            what: "text at stream level",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("cdata-end-in-text.xml"),
            what: "']]>' in text",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("control-character.xml"),
            what: "U+0001 in text",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("invalid-character-reference.xml"),
            what: "&#x0;",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("rebound-xml-prefix.xml"),
            what: "xml prefix bound to another namespace",
            verdict: refused("not-well-formed", 1),
        },
        Case {
            doc: File("data-after-end.xml"),
            what: "element after </stream:stream>",
            verdict: refused("not-well-formed", 3),
        },
    ]
}

fn describe(outcome: &Outcome) -> String {
    match &outcome.error {
        None => format!("accepted, {} events", outcome.events.len()),
        Some(e) => format!("{} after {} events", e.condition(), outcome.events.len()),
    }
}

#[test]
fn every_document_gets_its_verdict() {
    eprintln!("| document | what | verdict |\n| --- | --- | --- |");
    for case in cases() {
        let bytes = doc(&case.doc);
        let limits = Limits::default();
        let outcome = run_split(&bytes, limits, &[1]);
        for sizes in [&[7][..], &[3, 5, 8, 1, 21], &[4096]] {
            assert_eq!(run(&bytes, limits, sizes), outcome, "{}", case.what);
        }
        eprintln!(
            "| {} | {} | {} |",
            name(&case.doc),
            case.what,
            describe(&outcome)
        );
        match case.verdict {
            Verdict::Accepted(check) => {
                assert_eq!(outcome.error, None, "{}", case.what);
                check(&outcome.events);
            }
            Verdict::Refused { condition, after } => {
                let got = outcome.error.as_ref().map(XmlError::condition);
                assert_eq!(got, Some(condition), "{}: {:?}", case.what, outcome.error);
                assert_eq!(outcome.events.len(), after, "{}", case.what);
            }
        }
        let content_ns = match outcome.events.first() {
            Some(StreamEvent::Header(h)) => h.default_ns.clone(),
            _ => continue,
        };
        for e in elements(&outcome.events) {
            check_round_trip(e, &content_ns);
        }
    }
}

/// The size limit holds however the bytes come: in 4 KiB reads, the refusal comes with
/// the read that crosses 256 KiB, and the parser never held more than the limit.
#[test]
fn oversized_stanzas_fail_fast() {
    for build in [huge_text, endless_start_tag] {
        let bytes = build();
        let mut parser = StreamParser::new(Limits::default());
        let mut fed = 0;
        let mut result = Ok(());
        for chunk in bytes.chunks(4096) {
            result = parser.feed(chunk);
            fed += chunk.len();
            assert!(parser.buffered() <= Limits::default().max_stanza_bytes);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(XmlError::PolicyViolation(_))));
        assert!(fed <= HEADER.len() + Limits::default().max_stanza_bytes + 4096);
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::Header(_)))
        ));
        assert!(matches!(
            parser.next_event(),
            Err(XmlError::PolicyViolation(_))
        ));
        // Unusable from now on, and holding nothing.
        assert!(parser.feed(b"<message/>").is_err());
        assert_eq!(parser.buffered(), 0);
    }
}

fn events_of(parser: &mut StreamParser) -> Vec<StreamEvent> {
    std::iter::from_fn(|| parser.next_event().unwrap()).collect()
}

/// RFC 6120 sections 5.4.3.3 and 6.4.6: after STARTTLS and after SASL the stream starts
/// over, XML declaration allowed again; whatever came behind `<starttls/>` in clear is
/// dropped.
#[test]
fn reset_starts_a_new_stream() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(
        format!(
            "<?xml version='1.0'?>{HEADER}<starttls xmlns='{}'/>",
            ns::TLS
        )
        .as_bytes(),
    )
    .unwrap();
    p.feed(b"<message to='injected@example.com'/>").unwrap();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Header(_)))));
    let Ok(Some(StreamEvent::Element(starttls))) = p.next_event() else {
        panic!("no starttls")
    };
    assert_eq!(starttls.ns, ns::TLS);
    // The server answers <proceed/>, TLS comes up, and the stream restarts.
    p.reset();
    assert_eq!(p.buffered(), 0);
    assert_eq!(p.next_event(), Ok(None));
    p.feed(format!("<?xml version='1.0'?>{HEADER}<presence/>").as_bytes())
        .unwrap();
    let events = events_of(&mut p);
    assert!(matches!(events[0], StreamEvent::Header(_)));
    // The injected message is gone.
    assert_eq!(events.len(), 2);
    assert_eq!(elements(&events)[0].name, "presence");
    // A second header inside the stream is an element, not a restart: it never ends
    // here, so it is just an open stanza.
    p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!(p.next_event(), Ok(None));
    // After </stream:stream>, reset allows a new stream too.
    p.reset();
    p.feed(format!("{HEADER}</stream:stream>").as_bytes())
        .unwrap();
    assert_eq!(events_of(&mut p).len(), 2);
    assert!(p.is_closed());
    p.reset();
    assert!(!p.is_closed());
    p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!(events_of(&mut p).len(), 1);
}

#[test]
fn xml_declaration_only_at_the_very_start() {
    for doc in [
        format!(" <?xml version='1.0'?>{HEADER}"),
        format!("<?xml version='1.0'?><?xml version='1.0'?>{HEADER}"),
        format!("<?xml-stylesheet href='a'?>{HEADER}"),
    ] {
        let outcome = run_split(doc.as_bytes(), Limits::default(), &[1]);
        assert_eq!(
            outcome.error.as_ref().map(XmlError::condition),
            Some("restricted-xml")
        );
    }
    let outcome = run_split(
        format!("<?xml version='1.0' encoding='utf-8' standalone='yes'?>\n\n{HEADER}").as_bytes(),
        Limits::default(),
        &[1],
    );
    assert_eq!((outcome.events.len(), outcome.error), (1, None));
}

#[test]
fn multibyte_characters_split_across_feeds() {
    let mut p = StreamParser::new(Limits::default());
    p.feed(HEADER.as_bytes()).unwrap();
    let text = "é日🎭";
    let stanza = format!("<message id='{text}'><body>{text}</body></message>");
    let bytes = stanza.as_bytes();
    // Cut inside every multi-byte sequence of the body: "é" (2), "日" (3), "🎭" (4).
    let body_at = stanza.find("<body>").unwrap() + 6;
    for cut in [
        body_at + 1,
        body_at + 3,
        body_at + 4,
        body_at + 6,
        body_at + 8,
    ] {
        let mut q = StreamParser::new(Limits::default());
        q.feed(HEADER.as_bytes()).unwrap();
        q.feed(&bytes[..cut]).unwrap();
        q.feed(&bytes[cut..]).unwrap();
        let events = events_of(&mut q);
        let message = elements(&events)[0];
        assert_eq!(message.get_attr("id"), Some(text));
        assert_eq!(
            child(message, "body", ns::CLIENT).children,
            [Node::Text(text.into())]
        );
    }
    // A sequence cut and never completed is refused when the next byte comes.
    p.feed(b"<message><body>\xe6\x97").unwrap();
    assert!(matches!(p.feed(b"<"), Err(XmlError::NotWellFormed(_))));
}

#[test]
fn serialization_is_minimal_and_escaped() {
    let message = Element::new("message", ns::CLIENT)
        .attr("to", "romeo@example.net")
        .attr("xml:lang", "en")
        .attr("note", "'quoted' \"double\" <&>\t\n\r")
        .child(Element::new("body", ns::CLIENT).text_node("a < b && c > d ]]> \r\n"))
        .child(Element::new(
            "active",
            "http://jabber.org/protocol/chatstates",
        ))
        .child(
            Element::new("query", ns::ROSTER)
                .child(Element::new("item", ns::ROSTER).attr("jid", "a@b"))
                .child(Element::new("x", "")),
        );
    assert_eq!(
        message.to_xml(ns::CLIENT),
        "<message to='romeo@example.net' xml:lang='en' \
         note='&apos;quoted&apos; &quot;double&quot; &lt;&amp;&gt;&#x9;&#xA;&#xD;'>\
         <body>a &lt; b &amp;&amp; c &gt; d ]]&gt; &#xD;\n</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <query xmlns='jabber:iq:roster'><item jid='a@b'/><x xmlns=''/></query></message>"
    );
    assert!(message
        .to_xml("")
        .starts_with("<message xmlns='jabber:client' to="));
    check_round_trip(&message, ns::CLIENT);

    let features = Element::new("features", ns::STREAM)
        .child(Element::new("starttls", ns::TLS).child(Element::new("required", ns::TLS)))
        .child(Element::new("sm", "urn:xmpp:sm:3"));
    let mut out = String::new();
    features.write_in_stream(&mut out, ns::CLIENT);
    assert_eq!(
        out,
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>\
         </starttls><sm xmlns='urn:xmpp:sm:3'/></stream:features>"
    );
    assert_eq!(
        features.to_xml(ns::CLIENT),
        "<features xmlns='http://etherx.jabber.org/streams'><starttls \
         xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
         <sm xmlns='urn:xmpp:sm:3'/></features>"
    );
    check_round_trip(&features, ns::CLIENT);
    // An `xmlns` attribute never overrides `ns`.
    let odd = Element::new("a", "urn:a").attr("xmlns", "urn:b");
    assert_eq!(odd.to_xml(""), "<a xmlns='urn:a'/>");
}

#[test]
fn prefixed_elements_resolve_and_write_unprefixed() {
    let doc = format!(
        "{HEADER}<iq type='get' id='1' xmlns:d='http://jabber.org/protocol/disco#info'>\
         <d:query><d:feature var='x'/></d:query></iq>"
    );
    let outcome = run_split(doc.as_bytes(), Limits::default(), &[1]);
    let iq = elements(&outcome.events)[0];
    let query = child(iq, "query", "http://jabber.org/protocol/disco#info");
    assert_eq!(query.elements().next().unwrap().get_attr("var"), Some("x"));
    assert_eq!(
        iq.to_xml(ns::CLIENT),
        "<iq type='get' id='1'><query xmlns='http://jabber.org/protocol/disco#info'>\
         <feature var='x'/></query></iq>"
    );
}
