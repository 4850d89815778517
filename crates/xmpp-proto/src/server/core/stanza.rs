//! Stanza helpers shared by every part of the core: stanza errors (RFC 6120 section 8.3),
//! replies, XEP-0203 delay stamps and the parsing of stored XML values.

use super::*;
use crate::xml::Limits;

/// A stanza error (RFC 6120 section 8.3): the defined condition, its error type, and
/// optional text and application-specific child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// Defined condition element name (`service-unavailable`, ...).
    pub condition: &'static str,
    /// `auth`, `cancel`, `continue`, `modify` or `wait` (section 8.3.2).
    pub kind: &'static str,
    pub text: Option<String>,
    /// Application-specific condition (section 8.3.4), e.g. XEP-0191's `<blocked/>`.
    pub app: Option<Element>,
}

impl StanzaError {
    /// The condition with the error type section 8.3.3 gives it.
    pub fn new(condition: &'static str) -> StanzaError {
        let kind = match condition {
            "bad-request" | "jid-malformed" | "not-acceptable" | "policy-violation"
            | "redirect" | "gone" => "modify",
            "forbidden" | "not-authorized" | "registration-required" | "subscription-required" => {
                "auth"
            }
            "recipient-unavailable"
            | "remote-server-timeout"
            | "resource-constraint"
            | "unexpected-request"
            | "internal-server-error" => "wait",
            _ => "cancel",
        };
        StanzaError {
            condition,
            kind,
            text: None,
            app: None,
        }
    }

    pub fn with_text(mut self, text: &str) -> StanzaError {
        self.text = Some(text.to_string());
        self
    }

    pub fn with_app(mut self, app: Element) -> StanzaError {
        self.app = Some(app);
        self
    }

    /// The `<error/>` element.
    pub fn to_element(&self, by: Option<&str>) -> Element {
        let mut e = Element::new("error", ns::CLIENT).attr("type", self.kind);
        if let Some(by) = by {
            e.set_attr("by", by);
        }
        e.push(Element::new(self.condition, ns::STANZAS));
        if let Some(t) = &self.text {
            e.push(Element::new("text", ns::STANZAS).text_node(t));
        }
        if let Some(app) = &self.app {
            e.push(app.clone());
        }
        e
    }
}

/// The error reply to `stanza` (section 8.3.1): addresses swapped, `type='error'`, the
/// original payload kept (iq: its child; message/presence: the whole content) so the
/// sender can tell what failed, and the error appended. `None` for stanzas that must
/// never be answered with an error (errors themselves, iq results: section 8.3.1 rule
/// against error loops).
pub(crate) fn error_reply(stanza: &Element, err: &StanzaError) -> Option<Element> {
    let ty = stanza.get_attr("type").unwrap_or("");
    if ty == "error" || (stanza.name == "iq" && ty == "result") {
        return None;
    }
    let mut r = Element::new(&stanza.name, ns::CLIENT);
    for (k, v) in &stanza.attrs {
        match k.as_str() {
            "from" | "to" | "type" => {}
            _ => r.attrs.push((k.clone(), v.clone())),
        }
    }
    if let Some(to) = stanza.get_attr("to") {
        r.set_attr("from", to);
    }
    if let Some(from) = stanza.get_attr("from") {
        r.set_attr("to", from);
    }
    r.set_attr("type", "error");
    for c in stanza.elements() {
        if c.name == "error" {
            continue;
        }
        r.push(c.clone());
    }
    r.push(err.to_element(None));
    Some(r)
}

/// An iq result to `iq` with `payload` (RFC 6120 section 8.2.3).
pub(crate) fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut r = Element::new("iq", ns::CLIENT).attr("type", "result");
    if let Some(id) = iq.get_attr("id") {
        r.set_attr("id", id);
    }
    if let Some(to) = iq.get_attr("to") {
        r.set_attr("from", to);
    }
    if let Some(from) = iq.get_attr("from") {
        r.set_attr("to", from);
    }
    if let Some(p) = payload {
        r.push(p);
    }
    r
}

/// The value of the `type` attribute, with the defaults of RFC 6120 section 8.2.2 /
/// RFC 6121 section 5.2.2 (`normal` for messages, available = "" for presence).
pub(crate) fn stanza_type(st: &Element) -> &str {
    match (st.name.as_str(), st.get_attr("type")) {
        (_, Some(t)) => t,
        ("message", None) => "normal",
        _ => "",
    }
}

/// Whether `type` is one the stanza kind defines (RFC 6120 section 8.2.2, RFC 6121
/// sections 4.7.1 and 5.2.2); anything else is `bad-request`.
pub(crate) fn valid_type(st: &Element) -> bool {
    let t = st.get_attr("type");
    match st.name.as_str() {
        "message" => matches!(
            t,
            None | Some("chat" | "error" | "groupchat" | "headline" | "normal")
        ),
        "presence" => matches!(
            t,
            None | Some(
                "error"
                    | "probe"
                    | "subscribe"
                    | "subscribed"
                    | "unavailable"
                    | "unsubscribe"
                    | "unsubscribed"
            )
        ),
        "iq" => matches!(t, Some("get" | "set" | "result" | "error")),
        _ => false,
    }
}

/// `<message/>` has a `<body/>` (what offline storage and carbons care about).
pub(crate) fn has_body(st: &Element) -> bool {
    st.get_child("body", ns::CLIENT).is_some()
}

/// XEP-0203 timestamp (XEP-0082 DateTime, UTC): `2002-09-10T23:08:25.000Z`.
pub(crate) fn datetime(unix: Duration) -> String {
    let secs = unix.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        unix.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses a value written by [`Element::to_xml`] with an empty parent namespace back
/// into an element (values in the key-value stores are XML text).
pub(crate) fn parse_stored(value: &str) -> Option<Element> {
    let mut p = StreamParser::new(Limits {
        max_stanza_bytes: value.len() + 1024,
        max_depth: 64,
        max_attrs: 256,
    });
    p.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
    )
    .ok()?;
    p.feed(value.as_bytes()).ok()?;
    loop {
        match p.next_event() {
            Ok(Some(StreamEvent::Header(_))) => continue,
            Ok(Some(StreamEvent::Element(e))) => return Some(e),
            _ => return None,
        }
    }
}

/// Serializes a value for a store (namespace written on the root).
pub(crate) fn to_stored(e: &Element) -> String {
    e.to_xml("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_known_points() {
        assert_eq!(datetime(Duration::from_secs(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            datetime(Duration::from_millis(1_031_699_305_250)),
            "2002-09-10T23:08:25.250Z"
        );
        assert_eq!(
            datetime(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn error_types_follow_rfc6120() {
        assert_eq!(StanzaError::new("service-unavailable").kind, "cancel");
        assert_eq!(StanzaError::new("bad-request").kind, "modify");
        assert_eq!(StanzaError::new("forbidden").kind, "auth");
        assert_eq!(StanzaError::new("resource-constraint").kind, "wait");
    }
}
