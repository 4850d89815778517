//! The streaming XML parser for XMPP streams (RFC 6120 section 11): incremental, bounded,
//! and restricted to the XML subset XMPP allows.
//!
//! What it does:
//! - Bytes are fed as they arrive ([`StreamParser::feed`]); events come out of
//!   [`StreamParser::next_event`]: the `<stream:stream>` header once, then one complete
//!   [`Element`] per top-level child (stanza, `<starttls/>`, `<auth/>`, SM `<r/>`...),
//!   then [`StreamEvent::End`] at `</stream:stream>`.
//! - Refused, with the RFC 6120 section 4.9.3 condition: DOCTYPE/DTDs, entity
//!   declarations and any entity reference other than the five predefined ones and
//!   character references (`restricted-xml`), processing instructions and comments
//!   (`restricted-xml`; an XML declaration `<?xml ...?>` before the stream header is
//!   allowed), malformed XML or invalid UTF-8 (`not-well-formed`), undeclared prefixes
//!   (`bad-namespace-prefix`), a stream header in the wrong namespace
//!   (`invalid-namespace`), a stanza bigger than `max_stanza_bytes` or deeper than
//!   `max_depth` (`policy-violation`). Memory is bounded by those limits: the parser
//!   never holds more than one stanza plus a partial token.
//! - [`StreamParser::reset`] starts a new stream on the same connection (after STARTTLS
//!   and after SASL success, RFC 6120 sections 5.4.3.3 and 6.4.6).
//! - RFC 7395 WebSocket framing uses the same parser: the server core feeds it a stream
//!   header of its own, then each message, whose elements come out as children
//!   (`server/core/stream.rs`); [`StreamParser::in_element`] tells a message that ends
//!   inside an element.
//!
//! How, and the choices made where RFC 6120 leaves room:
//! - `feed` parses at once and returns any error it meets, not only broken limits; the
//!   events complete before the error still come out of `next_event`, then the error.
//!   Outcomes do not depend on how the input was split (tested down to one byte per
//!   feed, and by the fuzz driver in `tests/common/stream.rs`).
//! - Refusals are decided as early as the bytes allow: `<!DOCTYPE`, `<!--`, `<?php` are
//!   refused on their keyword (a billion-laughs DTD is never read, let alone expanded),
//!   a reference on its name, and a stanza as soon as one byte beyond its size budget
//!   arrives, without scanning further.
//! - An XML declaration naming another encoding than UTF-8 is `unsupported-encoding`
//!   (RFC 6120 section 11.6, [`XmlError::UnsupportedEncoding`]); a byte order mark, and
//!   non-whitespace text between stanzas, are `not-well-formed`.
//! - The stream element must be `stream` in the stream namespace, through a prefix
//!   (`bad-namespace-prefix` otherwise, RFC 6120 section 4.8.5), with `jabber:client`
//!   or `jabber:server` as the default namespace (`invalid-namespace` otherwise, section
//!   4.8.2); which of the two a listener accepts is the session's business.
//! - Elements carry resolved namespaces: prefixes on elements are gone, `xmlns`
//!   declarations are dropped from `attrs`, except that a prefixed attribute (`p:a`,
//!   `xml:` aside) gets its `xmlns:p` declaration put before it, so an element written
//!   on its own stays namespace-well-formed. Text is unescaped, line ends normalised (XML
//!   section 2.11), attribute values normalised (section 3.3.3); adjacent text,
//!   references and CDATA sections make one text node.

mod lex;

use std::collections::VecDeque;
use std::mem;

use crate::element::{ns, Element, Node};
use lex::{is_ws, not_well_formed};

/// What one peer may make the parser hold. Breaking a limit is `policy-violation`
/// (RFC 6120 section 4.9.3.14), detected while the bytes arrive, never after buffering
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Serialized size of one stanza (Prosody's `c2s_stanza_size_limit` is 256 KiB), as
    /// received: from its `<` to the `>` of its end tag. The stream header and the XML
    /// declaration are each held to the same bound.
    pub max_stanza_bytes: usize,
    /// Element nesting inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Attributes on one element, namespace declarations included.
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 32,
            max_attrs: 64,
        }
    }
}

/// The opening `<stream:stream ...>` (RFC 6120 section 4.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamHeader {
    /// Default namespace: `jabber:client` or `jabber:server`.
    pub default_ns: String,
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    pub lang: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Header(StreamHeader),
    Element(Element),
    End,
}

/// Why a stream must be closed, as the RFC 6120 section 4.9.3 condition to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    #[error("not-well-formed: {0}")]
    NotWellFormed(String),
    #[error("restricted-xml: {0}")]
    Restricted(String),
    #[error("bad-namespace-prefix: {0}")]
    BadNamespacePrefix(String),
    #[error("invalid-namespace: {0}")]
    InvalidNamespace(String),
    #[error("policy-violation: {0}")]
    PolicyViolation(String),
    /// An XML declaration naming an encoding other than UTF-8 (RFC 6120 sections 11.6
    /// and 4.9.3.22).
    #[error("unsupported-encoding: {0}")]
    UnsupportedEncoding(String),
}

impl XmlError {
    /// The stream error element name (`not-well-formed`, `restricted-xml`...).
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::Restricted(_) => "restricted-xml",
            XmlError::BadNamespacePrefix(_) => "bad-namespace-prefix",
            XmlError::InvalidNamespace(_) => "invalid-namespace",
            XmlError::PolicyViolation(_) => "policy-violation",
            XmlError::UnsupportedEncoding(_) => "unsupported-encoding",
        }
    }
}

/// Incremental parser for one direction of one stream.
///
/// Bytes are parsed as soon as they are fed: complete events wait in a queue for
/// [`StreamParser::next_event`], and only what cannot be decided yet is kept (a partial
/// tag, reference, CDATA section or UTF-8 sequence, and the elements of the stanza being
/// received). Every decision depends only on the bytes, never on how they were split
/// between calls to `feed`, so the events and the error are the same for any split.
///
/// The limit on a stanza's size is enforced by never looking at more than
/// `max_stanza_bytes` of a stanza: a tag or section that does not end within that window
/// is refused as soon as one byte beyond it arrives, without scanning further, and
/// errors inside the window are found in document order before it.
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    /// Received bytes from `pos` on are not consumed yet.
    buf: Vec<u8>,
    pos: usize,
    /// How far past `pos` the search for the end of the current token got (so a token
    /// arriving one byte at a time is scanned once), and the quote the search is in.
    scanned: usize,
    quote: u8,
    phase: Phase,
    /// Nothing of this stream consumed yet: the only place an XML declaration may be
    /// (XML production 22, RFC 6120 section 11.5).
    at_start: bool,
    /// Bytes consumed of the current stanza (or the stream header).
    stanza_bytes: usize,
    /// The stream element's name as written, which `</...>` must repeat.
    stream_qname: String,
    /// Namespace declarations in scope, innermost last: (`xmlns` or `xmlns:p`, URI).
    bindings: Vec<(String, String)>,
    /// The stanza being received: open elements, outermost first, with what their end
    /// tags must match and where their declarations start in `bindings`.
    tree: Vec<Element>,
    open: Vec<OpenElement>,
    /// Character data not yet added to the innermost open element.
    text: String,
    events: VecDeque<StreamEvent>,
    error: Option<XmlError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the stream header.
    Prolog,
    /// Inside `<stream:stream>`.
    Stream,
    /// After `</stream:stream>`: only whitespace may follow.
    Closed,
}

#[derive(Debug)]
struct OpenElement {
    /// Prefix as written (empty for none): with the element's local name, what the end
    /// tag must repeat.
    prefix: String,
    bindings_mark: usize,
}

/// How a step of the parser ended.
enum Step {
    Progress,
    NeedMore,
}

/// `feed` appends and parses input in slices of this size, so a large read ending in
/// garbage is refused before all of it is copied.
const FEED_SLICE: usize = 64 * 1024;

/// Markup declarations after `<!`: the ones XMPP refuses as `restricted-xml` (RFC 6120
/// section 11.1: comments, DTDs and what only a DTD holds) and CDATA sections, which
/// RFC 6120 does not forbid and which are read as text.
const BANG_MARKUP: [(&[u8], Bang); 7] = [
    (b"<!--", Bang::Restricted("comment")),
    (b"<![CDATA[", Bang::Cdata),
    (b"<!DOCTYPE", Bang::Restricted("DOCTYPE")),
    (b"<!ENTITY", Bang::Restricted("entity declaration")),
    (b"<!ELEMENT", Bang::Restricted("element type declaration")),
    (b"<!ATTLIST", Bang::Restricted("attribute-list declaration")),
    (b"<!NOTATION", Bang::Restricted("notation declaration")),
];

#[derive(Clone, Copy)]
enum Bang {
    Restricted(&'static str),
    Cdata,
}

impl StreamParser {
    pub fn new(limits: Limits) -> StreamParser {
        StreamParser {
            limits,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            quote: 0,
            phase: Phase::Prolog,
            at_start: true,
            stanza_bytes: 0,
            stream_qname: String::new(),
            bindings: Vec::new(),
            tree: Vec::new(),
            open: Vec::new(),
            text: String::new(),
            events: VecDeque::new(),
            error: None,
        }
    }
    /// Appends received bytes. Errors when the input already breaks a limit.
    ///
    /// The bytes are parsed at once, so any reason to close the stream (a limit, or
    /// anything else this module refuses) is returned here as soon as it is seen; the
    /// events complete before it are still returned by [`StreamParser::next_event`],
    /// which then returns the same error.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), XmlError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        for slice in data.chunks(FEED_SLICE) {
            self.buf.extend_from_slice(slice);
            if let Err(e) = self.parse_buffered() {
                // The stream is over: drop what was held for it.
                self.buf = Vec::new();
                self.pos = 0;
                self.tree.clear();
                self.open.clear();
                self.text = String::new();
                self.error = Some(e.clone());
                return Err(e);
            }
        }
        Ok(())
    }
    /// The next complete event, `Ok(None)` when more bytes are needed. After an error the
    /// parser is unusable (the stream is closed).
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, XmlError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(None),
        }
    }
    /// Forgets everything: the next bytes must start a new stream header.
    ///
    /// Bytes fed and events not yet taken are dropped too: after STARTTLS, anything that
    /// came in clear behind `<starttls/>` must not be acted on (RFC 6120 section
    /// 5.4.3.3). An error is forgotten as well.
    pub fn reset(&mut self) {
        *self = StreamParser::new(self.limits);
    }
    /// Bytes held and not yet turned into events (for tests and metrics): the unparsed
    /// tail and what was consumed of the stanza being received. Never more than
    /// `max_stanza_bytes` plus the last `feed` slice not yet parsed.
    pub fn buffered(&self) -> usize {
        let stanza = if self.tree.is_empty() {
            0
        } else {
            self.stanza_bytes
        };
        self.buf.len() - self.pos + stanza
    }
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    /// Whether part of an element is held: a stanza begun and not ended, or the start of
    /// a tag (RFC 7395 framing refuses a message that ends there).
    pub fn in_element(&self) -> bool {
        !self.tree.is_empty() || self.buf[self.pos..].iter().any(|b| !is_ws(*b))
    }
    /// Whether `</stream:stream>` was received (the stream header is still needed after
    /// a [`StreamParser::reset`]).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Parses what `buf` holds as far as it can.
    fn parse_buffered(&mut self) -> Result<(), XmlError> {
        let buf = mem::take(&mut self.buf);
        let mut result = Ok(());
        while self.pos < buf.len() {
            match self.step(&buf[self.pos..]) {
                Ok(Step::Progress) => {}
                Ok(Step::NeedMore) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.buf = buf;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > 4 * FEED_SLICE {
                self.buf.shrink_to(FEED_SLICE);
            }
        } else if self.pos >= 4096 && self.pos * 2 >= self.buf.len() {
            // Amortised: the partial token moves at most once per its own length.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        result
    }

    /// One token (or run of whitespace between stanzas) from `rest`, which is not empty.
    fn step(&mut self, rest: &[u8]) -> Result<Step, XmlError> {
        if !self.tree.is_empty() {
            return if rest[0] == b'<' {
                self.markup(rest)
            } else {
                self.character_data(rest)
            };
        }
        if is_ws(rest[0]) {
            // Whitespace between stanzas (keep-alives, RFC 6120 section 11.7) and around
            // the stream header costs nothing and counts against no stanza.
            let n = rest.iter().position(|&b| !is_ws(b)).unwrap_or(rest.len());
            self.pos += n;
            self.at_start = false;
            return Ok(Step::Progress);
        }
        match (self.phase, rest[0]) {
            (Phase::Closed, _) => Err(not_well_formed("data after </stream:stream>")),
            (_, b'<') => self.markup(rest),
            // A byte order mark lands here too: RFC 6120 section 11.6 forbids sending
            // one, and U+FEFF is then a character outside the root element.
            (Phase::Prolog, _) => Err(not_well_formed("text before the stream header")),
            (Phase::Stream, _) => Err(not_well_formed("text between stanzas")),
        }
    }

    /// The part of `rest` within the current stanza's size budget, and whether `rest`
    /// goes beyond it.
    fn window<'a>(&self, rest: &'a [u8]) -> (&'a [u8], bool) {
        let budget = self
            .limits
            .max_stanza_bytes
            .saturating_sub(self.stanza_bytes);
        if rest.len() > budget {
            (&rest[..budget], true)
        } else {
            (rest, false)
        }
    }

    /// The token is not complete: wait, unless it cannot complete within the budget.
    fn need_more(&self, truncated: bool) -> Result<Step, XmlError> {
        if truncated {
            Err(XmlError::PolicyViolation(format!(
                "stanza larger than {} bytes",
                self.limits.max_stanza_bytes
            )))
        } else {
            Ok(Step::NeedMore)
        }
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        self.stanza_bytes += n;
        self.scanned = 0;
        self.quote = 0;
        self.at_start = false;
    }

    /// Back between stanzas: the next one starts a new budget.
    fn at_stream_level(&mut self) {
        self.stanza_bytes = 0;
    }

    /// A token starting with `<`.
    fn markup(&mut self, rest: &[u8]) -> Result<Step, XmlError> {
        let (win, truncated) = self.window(rest);
        if win.len() < 2 {
            return self.need_more(truncated);
        }
        match win[1] {
            b'/' => self.end_tag(win, truncated),
            b'?' => self.question_mark(win, truncated),
            b'!' => self.bang(win, truncated),
            _ => self.start_tag(win, truncated),
        }
    }

    /// Finds the `>` closing a start tag, outside quoted attribute values, resuming where
    /// the last call stopped. A `<` before it is refused at once.
    fn start_tag_end(&mut self, win: &[u8]) -> Result<Option<usize>, XmlError> {
        let mut i = self.scanned.max(1);
        let mut quote = self.quote;
        while i < win.len() {
            let found = if quote == 0 {
                win[i..]
                    .iter()
                    .position(|&c| matches!(c, b'>' | b'<' | b'"' | b'\''))
            } else {
                win[i..].iter().position(|&c| c == quote || c == b'<')
            };
            let Some(offset) = found else {
                i = win.len();
                break;
            };
            i += offset;
            match win[i] {
                b'<' => return Err(not_well_formed("'<' inside a tag")),
                b'>' if quote == 0 => return Ok(Some(i)),
                q if quote == 0 => quote = q,
                _ => quote = 0,
            }
            i += 1;
        }
        self.scanned = i;
        self.quote = quote;
        Ok(None)
    }

    /// Finds `terminator` at or after `from`, resuming where the last call stopped.
    fn find_terminator(&mut self, win: &[u8], from: usize, terminator: &[u8]) -> Option<usize> {
        let start = self.scanned.saturating_sub(terminator.len() - 1).max(from);
        let found = win
            .get(start..)
            .and_then(|w| w.windows(terminator.len()).position(|w| w == terminator));
        match found {
            Some(offset) => Some(start + offset),
            None => {
                self.scanned = win.len();
                None
            }
        }
    }

    fn start_tag(&mut self, win: &[u8], truncated: bool) -> Result<Step, XmlError> {
        let Some(end) = self.start_tag_end(win)? else {
            return self.need_more(truncated);
        };
        let text = std::str::from_utf8(&win[..=end])
            .map_err(|_| not_well_formed("invalid UTF-8 in a tag"))?;
        let tag = lex::start_tag(text, self.limits.max_attrs)?;
        self.consume(end + 1);
        self.open_element(tag)?;
        Ok(Step::Progress)
    }

    fn end_tag(&mut self, win: &[u8], truncated: bool) -> Result<Step, XmlError> {
        let from = self.scanned.max(2);
        let found = win[from..]
            .iter()
            .position(|&c| c == b'>' || c == b'<')
            .map(|p| from + p);
        let end = match found {
            Some(end) if win[end] == b'>' => end,
            Some(_) => return Err(not_well_formed("'<' inside an end tag")),
            None => {
                self.scanned = win.len();
                return self.need_more(truncated);
            }
        };
        let text = std::str::from_utf8(&win[..=end])
            .map_err(|_| not_well_formed("invalid UTF-8 in a tag"))?;
        let name_end = lex::qname_end(text, 2)?;
        if !text.as_bytes()[name_end..end].iter().all(|&b| is_ws(b)) {
            return Err(not_well_formed("malformed end tag"));
        }
        self.consume(end + 1);
        self.close_element(&text[2..name_end])?;
        Ok(Step::Progress)
    }

    /// `<?`: the XML declaration at the very start of a stream, else a processing
    /// instruction, refused at once (RFC 6120 section 11.1) without reading it.
    fn question_mark(&mut self, win: &[u8], truncated: bool) -> Result<Step, XmlError> {
        const DECL: &[u8] = b"<?xml";
        if self.at_start {
            let n = win.len().min(DECL.len());
            if win[..n] == DECL[..n] {
                let Some(&after) = win.get(DECL.len()) else {
                    return self.need_more(truncated);
                };
                if is_ws(after) {
                    return self.xml_declaration(win, truncated);
                }
            }
        }
        Err(XmlError::Restricted(
            "processing instruction (RFC 6120 section 11.1)".into(),
        ))
    }

    fn xml_declaration(&mut self, win: &[u8], truncated: bool) -> Result<Step, XmlError> {
        let Some(end) = self.find_terminator(win, 5, b"?>") else {
            return self.need_more(truncated);
        };
        let text = std::str::from_utf8(&win[5..end])
            .map_err(|_| not_well_formed("invalid UTF-8 in the XML declaration"))?;
        lex::xml_declaration(text)?;
        self.consume(end + 2);
        self.at_stream_level();
        Ok(Step::Progress)
    }

    /// `<!`: refused markup, refused as soon as its keyword is recognised (a DOCTYPE is
    /// never read, so no entity in it is ever expanded), or a CDATA section.
    fn bang(&mut self, win: &[u8], truncated: bool) -> Result<Step, XmlError> {
        for (keyword, kind) in BANG_MARKUP {
            if win.starts_with(keyword) {
                return match kind {
                    Bang::Restricted(what) => Err(XmlError::Restricted(format!(
                        "{what} (RFC 6120 section 11.1)"
                    ))),
                    Bang::Cdata if self.tree.is_empty() => {
                        Err(not_well_formed("CDATA section outside a stanza"))
                    }
                    Bang::Cdata => self.cdata(win, truncated),
                };
            }
        }
        if BANG_MARKUP
            .iter()
            .any(|(keyword, _)| keyword.starts_with(win))
        {
            return self.need_more(truncated);
        }
        Err(not_well_formed("unknown markup after '<!'"))
    }

    fn cdata(&mut self, win: &[u8], truncated: bool) -> Result<Step, XmlError> {
        const OPEN: usize = b"<![CDATA[".len();
        let Some(end) = self.find_terminator(win, OPEN, b"]]>") else {
            return self.need_more(truncated);
        };
        let content =
            std::str::from_utf8(&win[OPEN..end]).map_err(|_| not_well_formed("invalid UTF-8"))?;
        lex::check_chars(content.as_bytes(), false)?;
        lex::push_normalized(&mut self.text, content);
        self.consume(end + 3);
        Ok(Step::Progress)
    }

    /// Text inside a stanza: a reference, or a run of characters up to the next `<` or
    /// `&`. A run that reaches the end of the input is consumed only up to what later
    /// bytes cannot change: a partial UTF-8 sequence, a CR (CR LF is one line end) and
    /// one or two `]` (which `>` would make a forbidden `]]>`) wait.
    fn character_data(&mut self, rest: &[u8]) -> Result<Step, XmlError> {
        let (win, truncated) = self.window(rest);
        if win.is_empty() {
            return self.need_more(truncated);
        }
        if win[0] == b'&' {
            let Some((len, c)) = lex::reference(win)? else {
                return self.need_more(truncated);
            };
            self.text.push(c);
            self.consume(len);
            return Ok(Step::Progress);
        }
        let stop = win.iter().position(|&b| b == b'<' || b == b'&');
        let run = &win[..stop.unwrap_or(win.len())];
        let valid = match std::str::from_utf8(run) {
            Ok(s) => s,
            Err(e) if e.error_len().is_none() && stop.is_none() => {
                // `valid_up_to` is a character boundary: this cannot fail.
                std::str::from_utf8(&run[..e.valid_up_to()]).unwrap_or_default()
            }
            Err(e) => {
                // Errors are reported in document order, whatever the split.
                lex::check_chars(&run[..e.valid_up_to()], true)?;
                return Err(not_well_formed("invalid UTF-8"));
            }
        };
        let mut take = valid.len();
        if stop.is_none() && take == run.len() {
            let b = valid.as_bytes();
            if b.last() == Some(&b'\r') {
                take -= 1;
            } else {
                take -= b.iter().rev().take(2).take_while(|&&c| c == b']').count();
            }
        }
        if take == 0 {
            return self.need_more(truncated);
        }
        let part = &valid[..take];
        lex::check_chars(part.as_bytes(), true)?;
        lex::push_normalized(&mut self.text, part);
        self.consume(take);
        Ok(Step::Progress)
    }

    /// Adds the pending text to the innermost open element.
    fn flush_text(&mut self) {
        if !self.text.is_empty() {
            if let Some(top) = self.tree.last_mut() {
                top.children.push(Node::Text(mem::take(&mut self.text)));
            }
        }
    }

    /// The namespace URI `prefix` is bound to (`""`: the default namespace, empty when
    /// there is none); `None` for an undeclared prefix.
    fn resolve(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(lex::XML_NS);
        }
        let found = self.bindings.iter().rev().find(|(name, _)| {
            if prefix.is_empty() {
                name == "xmlns"
            } else {
                name.len() == 6 + prefix.len()
                    && name.starts_with("xmlns:")
                    && name.ends_with(prefix)
            }
        });
        match found {
            Some((_, uri)) => Some(uri),
            None if prefix.is_empty() => Some(""),
            None => None,
        }
    }

    /// Takes a namespace declaration (Namespaces in XML section 3). Binding `xml` to
    /// anything but its namespace, binding `xmlns`, binding a prefix to either reserved
    /// namespace, or to the empty name (XML 1.0 namespaces cannot undeclare a prefix) is
    /// not namespace-well-formed.
    fn declare(&mut self, name: String, uri: String) -> Result<(), XmlError> {
        let reserved = uri == lex::XML_NS || uri == lex::XMLNS_NS;
        match name.strip_prefix("xmlns:") {
            None if reserved => return Err(not_well_formed("reserved default namespace")),
            None => {}
            Some("xml") if uri == lex::XML_NS => return Ok(()),
            Some("xml") | Some("xmlns") => {
                return Err(not_well_formed("declaration of a reserved prefix"))
            }
            Some(_) if uri.is_empty() => {
                return Err(not_well_formed("prefix bound to an empty namespace name"))
            }
            Some(_) if reserved => {
                return Err(not_well_formed("prefix bound to a reserved namespace"))
            }
            Some(_) => {}
        }
        self.bindings.push((name, uri));
        Ok(())
    }

    /// Checks the prefixes of attributes and puts the declaration of each prefix used
    /// (but `xml`) right before its first use, so the element stays namespace-well-formed
    /// when written on its own: [`Element`] has no other place for it. Two attributes with
    /// the same namespace and local name are refused (Namespaces in XML section 6.3).
    fn qualify_attrs(&self, attrs: &mut Vec<(String, String)>) -> Result<(), XmlError> {
        let mut i = 0;
        let mut qualified: Vec<(usize, usize)> = Vec::new();
        while i < attrs.len() {
            let Some((prefix, local)) = attrs[i].0.split_once(':') else {
                i += 1;
                continue;
            };
            if prefix == "xmlns" {
                i += 1;
                continue;
            }
            let uri = self.resolve(prefix).ok_or_else(|| {
                XmlError::BadNamespacePrefix(format!("undeclared prefix {prefix}"))
            })?;
            let (prefix_len, local) = (prefix.len(), local.to_string());
            for &(j, other_len) in &qualified {
                let (other, _) = &attrs[j];
                let other_uri = self.resolve(&other[..other_len]);
                if other[other_len + 1..] == local && other_uri == Some(uri) {
                    return Err(not_well_formed(format!(
                        "attributes {other} and {} are the same",
                        attrs[i].0
                    )));
                }
            }
            if prefix != "xml" {
                let declaration = format!("xmlns:{}", &attrs[i].0[..prefix_len]);
                if !attrs[..i].iter().any(|(n, _)| *n == declaration) {
                    let uri = uri.to_string();
                    attrs.insert(i, (declaration, uri));
                    i += 1;
                }
            }
            qualified.push((i, prefix_len));
            i += 1;
        }
        Ok(())
    }

    fn open_element(&mut self, tag: lex::StartTag<'_>) -> Result<(), XmlError> {
        let lex::StartTag {
            qname,
            mut attrs,
            empty,
        } = tag;
        if self.phase == Phase::Stream && self.open.len() >= self.limits.max_depth {
            return Err(XmlError::PolicyViolation(format!(
                "elements nested deeper than {}",
                self.limits.max_depth
            )));
        }
        let bindings_mark = self.bindings.len();
        let mut i = 0;
        while i < attrs.len() {
            let name = &attrs[i].0;
            if name == "xmlns" || name.starts_with("xmlns:") {
                let (name, uri) = attrs.remove(i);
                self.declare(name, uri)?;
            } else {
                i += 1;
            }
        }
        let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
        if prefix == "xmlns" {
            return Err(not_well_formed("element with the xmlns prefix"));
        }
        let ns = self
            .resolve(prefix)
            .ok_or_else(|| XmlError::BadNamespacePrefix(format!("undeclared prefix {prefix}")))?;
        self.qualify_attrs(&mut attrs)?;
        if self.phase == Phase::Prolog {
            let ns = ns.to_string();
            return self.open_stream(qname, prefix, local, &ns, attrs, empty);
        }
        let element = Element {
            name: local.to_string(),
            ns: ns.to_string(),
            attrs,
            children: Vec::new(),
        };
        self.flush_text();
        self.tree.push(element);
        self.open.push(OpenElement {
            prefix: prefix.to_string(),
            bindings_mark,
        });
        if empty {
            self.close_innermost();
        }
        Ok(())
    }

    /// The stream header (RFC 6120 section 4.7): `stream` in the stream namespace, which
    /// must come through a prefix (section 4.8.5: the default namespace is the content
    /// namespace), and a content namespace this server speaks (section 4.8.2).
    fn open_stream(
        &mut self,
        qname: &str,
        prefix: &str,
        local: &str,
        element_ns: &str,
        attrs: Vec<(String, String)>,
        empty: bool,
    ) -> Result<(), XmlError> {
        if element_ns == ns::STREAM && prefix.is_empty() {
            return Err(XmlError::BadNamespacePrefix(
                "stream element without a prefix (RFC 6120 section 4.8.5)".into(),
            ));
        }
        if element_ns != ns::STREAM {
            return Err(XmlError::InvalidNamespace(format!(
                "stream element in namespace {element_ns:?} (RFC 6120 section 4.8.1)"
            )));
        }
        if local != "stream" {
            return Err(not_well_formed(format!(
                "<{qname}> where <stream:stream> was expected"
            )));
        }
        let default_ns = self.resolve("").unwrap_or_default();
        if default_ns != ns::CLIENT && default_ns != ns::SERVER {
            return Err(XmlError::InvalidNamespace(format!(
                "content namespace {default_ns:?} (RFC 6120 section 4.8.2)"
            )));
        }
        let mut header = StreamHeader {
            default_ns: default_ns.to_string(),
            ..StreamHeader::default()
        };
        for (name, value) in attrs {
            let field = match name.as_str() {
                "to" => &mut header.to,
                "from" => &mut header.from,
                "id" => &mut header.id,
                "version" => &mut header.version,
                "xml:lang" => &mut header.lang,
                _ => continue,
            };
            *field = Some(value);
        }
        self.events.push_back(StreamEvent::Header(header));
        self.phase = Phase::Stream;
        self.stream_qname = qname.to_string();
        self.at_stream_level();
        if empty {
            self.end_stream();
        }
        Ok(())
    }

    fn end_stream(&mut self) {
        self.events.push_back(StreamEvent::End);
        self.phase = Phase::Closed;
        self.bindings.clear();
        self.at_stream_level();
    }

    /// Closes the innermost open element: into its parent, or out as an event.
    fn close_innermost(&mut self) {
        self.flush_text();
        let (Some(element), Some(open)) = (self.tree.pop(), self.open.pop()) else {
            return;
        };
        self.bindings.truncate(open.bindings_mark);
        match self.tree.last_mut() {
            Some(parent) => parent.children.push(Node::Element(element)),
            None => {
                self.events.push_back(StreamEvent::Element(element));
                self.at_stream_level();
            }
        }
    }

    /// An end tag must repeat its start tag's name as written (XML WFC "Element Type
    /// Match"); at stream level, only `</stream:stream>` may come.
    fn close_element(&mut self, qname: &str) -> Result<(), XmlError> {
        if let (Some(element), Some(open)) = (self.tree.last(), self.open.last()) {
            let matches = if open.prefix.is_empty() {
                qname == element.name
            } else {
                qname.len() == open.prefix.len() + 1 + element.name.len()
                    && qname.starts_with(open.prefix.as_str())
                    && qname.ends_with(element.name.as_str())
                    && qname.as_bytes()[open.prefix.len()] == b':'
            };
            if !matches {
                return Err(not_well_formed(format!(
                    "</{qname}> does not close <{}>",
                    element.name
                )));
            }
            self.close_innermost();
            return Ok(());
        }
        if self.phase == Phase::Stream && qname == self.stream_qname {
            self.end_stream();
            return Ok(());
        }
        Err(not_well_formed(format!("</{qname}> closes nothing")))
    }
}

/// Escapes text for element content (`&`, `<`, `>`), and CR as `&#xD;`: a raw CR
/// would be read back as a line feed (XML section 2.11).
pub fn escape_text(s: &str, out: &mut String) {
    escape(s, out, |b| match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    });
}

/// Escapes an attribute value for `'`- or `"`-quoting; tab, line feed and CR as
/// character references, which attribute-value normalisation (XML section 3.3.3) would
/// otherwise turn into spaces.
pub fn escape_attr(s: &str, out: &mut String) {
    escape(s, out, |b| match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'"' => Some("&quot;"),
        b'\'' => Some("&apos;"),
        b'\t' => Some("&#x9;"),
        b'\n' => Some("&#xA;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    });
}

/// Copies `s` in runs between the ASCII bytes `replace` has an escape for.
fn escape(s: &str, out: &mut String, replace: impl Fn(u8) -> Option<&'static str>) {
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if let Some(escaped) = replace(b) {
            out.push_str(&s[run..i]);
            out.push_str(escaped);
            run = i + 1;
        }
    }
    out.push_str(&s[run..]);
}
