//! The XMPP stream driver shared by the fuzz target (`fuzz/fuzz_targets/xmpp_stream.rs`,
//! built with cargo-fuzz), the stable CI guard `tests/fuzz_smoke.rs` and the verdict
//! table `tests/xml_stream.rs`, so all run exactly the same calls. Everything here must
//! hold for *any* input: a panic, or a broken invariant asserted below, is a bug.
//!
//! Invariants:
//! - Splitting the input differently never changes the events or the error.
//! - The parser never holds more than `max_stanza_bytes` plus one feed of input.
//! - Every element produced serializes to XML that parses back to the same element,
//!   both on its own (`write_to`) and with stream prefixes (`write_in_stream`).

use xmpp_proto::element::{ns, Element};
use xmpp_proto::xml::{Limits, StreamEvent, StreamParser, XmlError};

/// What a parser made of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub events: Vec<StreamEvent>,
    pub error: Option<XmlError>,
}

/// Small limits, so that mutated inputs reach them.
pub const SMALL: Limits = Limits {
    max_stanza_bytes: 600,
    max_depth: 5,
    max_attrs: 6,
};

/// Feeds `doc` in pieces of the sizes in `sizes` (cycled, 0 read as 1), taking events
/// after each piece, until the end or the first error; checks the memory bound on the
/// way.
pub fn run(doc: &[u8], limits: Limits, sizes: &[usize]) -> Outcome {
    let mut parser = StreamParser::new(limits);
    let mut events = Vec::new();
    let mut at = 0;
    let mut turn = 0;
    while at < doc.len() {
        let size = sizes[turn % sizes.len()].max(1).min(doc.len() - at);
        turn += 1;
        let fed = parser.feed(&doc[at..at + size]);
        at += size;
        let bound = limits.max_stanza_bytes.saturating_add(size);
        assert!(
            parser.buffered() <= bound,
            "{} bytes held, bound {bound}",
            parser.buffered()
        );
        loop {
            match parser.next_event() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(fed.as_ref().err(), Some(&e), "feed and next_event agree");
                    return Outcome {
                        events,
                        error: Some(e),
                    };
                }
            }
        }
        assert!(fed.is_ok());
    }
    Outcome {
        events,
        error: None,
    }
}

/// Runs `doc` whole and split as `sizes` says; both must give the same outcome, which is
/// returned.
pub fn run_split(doc: &[u8], limits: Limits, sizes: &[usize]) -> Outcome {
    let whole = run(doc, limits, &[usize::MAX]);
    let split = run(doc, limits, sizes);
    assert_eq!(whole, split, "split {sizes:?} changed the outcome");
    whole
}

/// Serializes `element` as a first-level element of a stream with `content_ns`, in both
/// forms, and checks that each parses back to the same element.
pub fn check_round_trip(element: &Element, content_ns: &str) {
    let unlimited = Limits {
        max_stanza_bytes: usize::MAX,
        max_depth: usize::MAX,
        max_attrs: usize::MAX,
    };
    let mut in_stream = String::new();
    element.write_in_stream(&mut in_stream, content_ns);
    for xml in [element.to_xml(content_ns), in_stream] {
        let doc = format!(
            "<stream:stream xmlns='{content_ns}' xmlns:stream='{}'>{xml}",
            ns::STREAM
        );
        let outcome = run(doc.as_bytes(), unlimited, &[usize::MAX]);
        assert_eq!(outcome.error, None, "{xml}");
        match outcome.events.as_slice() {
            [StreamEvent::Header(_), StreamEvent::Element(again)] => {
                assert_eq!(again, element, "{xml}")
            }
            other => panic!("{xml}: {other:?}"),
        }
    }
}

/// The fuzz entry point. The first byte picks the limits and how the rest is split; the
/// rest is the stream.
pub fn drive(data: &[u8]) {
    let Some((&control, doc)) = data.split_first() else {
        return;
    };
    let limits = if control & 0x80 != 0 {
        SMALL
    } else {
        Limits::default()
    };
    let sizes: &[usize] = match control & 0x7 {
        0 => &[1],
        1 => &[2, 3],
        2 => &[7, 1, 13],
        3 => &[64],
        4 => &[1, 100, 5],
        5 => &[(control as usize >> 3) & 0xF],
        6 => &[31, 2],
        _ => &[3, 5, 8, 1, 21],
    };
    let outcome = run_split(doc, limits, sizes);
    let mut content_ns = None;
    for event in &outcome.events {
        match event {
            StreamEvent::Header(h) => {
                assert!(h.default_ns == ns::CLIENT || h.default_ns == ns::SERVER);
                content_ns = Some(h.default_ns.clone());
            }
            StreamEvent::Element(e) => {
                let content_ns = content_ns.as_deref().expect("an element before the header");
                check_round_trip(e, content_ns);
            }
            StreamEvent::End => {}
        }
    }
    if let Some(e) = &outcome.error {
        assert!(!e.condition().is_empty());
    }
}
