//! SIP messages (RFC 3261 sections 7, 20 and 25): parsing with limits, typed access to
//! the headers the proxy needs, edits a proxy makes, and encoding.
//!
//! What the parser guarantees:
//! - [`Message::parse`] takes one whole message (a UDP datagram, or the bytes
//!   [`frame`] delimited on a stream), unfolds continuation lines (RFC 3261 section
//!   7.3.1), expands compact header names (section 7.3.3), and validates what a proxy
//!   relies on: the start line, Via (every value), From, To, Call-ID, CSeq (and that its
//!   method matches the request's), Max-Forwards, Content-Length. Anything else is parsed
//!   lazily by the accessors. Errors map to a SIP status ([`ParseError::status`]).
//! - Header values are stored one header line each, unfolded, with surrounding
//!   whitespace trimmed; a line may still hold several comma-separated values
//!   ([`Message::values`] splits outside quotes and `<>`).
//!
//! How parsing goes: the header block is found by its empty line and checked once for
//! UTF-8; each logical header line (a line plus its continuation lines) becomes one
//! [`Header`] with one allocation for the value (two for unknown names); then a second
//! pass validates the headers above on borrowed slices, without building typed values.
//! The body is the raw bytes after the empty line, cut to Content-Length (RFC 3261
//! section 18.3). Nothing recurses and nothing is allocated beyond the size of the input.
//!
//! Where RFC 4475 lets a parser choose, this one is strict about what a proxy would
//! otherwise forward or act on wrongly: single SPs in the Request-Line (4475 3.1.2.9,
//! 3.1.2.10), no whitespace inside `<>` (3.1.2.14), no headers in a Request-URI
//! (3.1.2.11), Max-Forwards at most 255 and CSeq within 32 bits (3.1.2.4). It is lenient
//! where nothing is at stake: CRLFs before the start line (RFC 3261 section 7.5), bare LF
//! line ends, `_` in host names, any visible ASCII in a Call-ID, and RFC 2543 messages
//! without Max-Forwards, branch, tags or Content-Length (4475 3.4.1). Headers the proxy
//! does not use (Date, Contact...) are not looked at here, so a bad Date passes (4475
//! 3.1.2.12) and a bad Contact fails in [`Message::contacts`] (3.1.2.13).

use crate::parse::{
    find_any, find_byte, find_top, fnv1a, for_each_param, is, is_host, is_token, is_ws,
    parse_digits, quoted_end, span as span_of, split_top, trim_ws, trim_ws_start, unquote, HOST,
    TOKEN,
};
use crate::uri::{header_params, parse_name_addr, parse_uri, NameAddr, Params, Uri, UriRef};
use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Resource limits for one message (RFC 3261 section 18.1.1 and Kamailio's BUF_SIZE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole message including body; larger -> 513 Message Too Large.
    pub max_message_size: usize,
    /// Header lines after unfolding; more -> 400.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 65535,
            max_headers: 256,
        }
    }
}

/// Request methods (RFC 3261 plus the extensions a proxy sees every day).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token, case preserved (methods are case-sensitive, section 7.1).
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
    /// Parses a method token (case-sensitive: `invite` is an unknown extension method,
    /// not INVITE). `None` when `s` is not a `token`.
    pub fn from_token(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            _ if is_token(s) => Method::Other(s.to_string()),
            _ => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header names this crate gives a variant (compact forms map here too); all others are
/// [`HeaderName::Other`] and compare case-insensitively.
///
/// Build names with [`HeaderName::parse`]: `Other("via")` is not [`HeaderName::Via`].
#[derive(Debug, Clone)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    Route,
    RecordRoute,
    ContentLength,
    ContentType,
    Expires,
    MinExpires,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    AuthenticationInfo,
    UserAgent,
    Server,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    Allow,
    Path,
    Timestamp,
    Date,
    Other(String),
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for HeaderName {}

impl Hash for HeaderName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        if let HeaderName::Other(s) = self {
            for b in s.bytes() {
                state.write_u8(b.to_ascii_lowercase());
            }
        }
    }
}

/// Long names with a variant, for the case-insensitive lookup in [`HeaderName::parse`].
static KNOWN_HEADERS: [(&str, HeaderName); 28] = [
    ("Via", HeaderName::Via),
    ("From", HeaderName::From),
    ("To", HeaderName::To),
    ("Call-ID", HeaderName::CallId),
    ("CSeq", HeaderName::CSeq),
    ("Contact", HeaderName::Contact),
    ("Max-Forwards", HeaderName::MaxForwards),
    ("Route", HeaderName::Route),
    ("Record-Route", HeaderName::RecordRoute),
    ("Content-Length", HeaderName::ContentLength),
    ("Content-Type", HeaderName::ContentType),
    ("Expires", HeaderName::Expires),
    ("Min-Expires", HeaderName::MinExpires),
    ("Authorization", HeaderName::Authorization),
    ("Proxy-Authorization", HeaderName::ProxyAuthorization),
    ("WWW-Authenticate", HeaderName::WwwAuthenticate),
    ("Proxy-Authenticate", HeaderName::ProxyAuthenticate),
    ("Authentication-Info", HeaderName::AuthenticationInfo),
    ("User-Agent", HeaderName::UserAgent),
    ("Server", HeaderName::Server),
    ("Supported", HeaderName::Supported),
    ("Require", HeaderName::Require),
    ("Proxy-Require", HeaderName::ProxyRequire),
    ("Unsupported", HeaderName::Unsupported),
    ("Allow", HeaderName::Allow),
    ("Path", HeaderName::Path),
    ("Timestamp", HeaderName::Timestamp),
    ("Date", HeaderName::Date),
];

impl HeaderName {
    /// Long or compact name, case-insensitive (`v` -> Via, `i` -> Call-ID, ...).
    ///
    /// Compact forms are those of RFC 3261 section 7.3.3 and of the extensions that
    /// registered one (IANA "Header Fields" registry: RFC 3265 `o`/`u`, RFC 3515 `r`,
    /// RFC 3892 `b`, RFC 3841 `a`/`j`/`d`, RFC 4028 `x`, RFC 4474 `y`/`n`); the ones
    /// without a variant expand to [`HeaderName::Other`] with the long name, so the
    /// encoder always writes long names.
    pub fn parse(s: &str) -> HeaderName {
        if let [c] = s.as_bytes() {
            let long = match c.to_ascii_lowercase() {
                b'v' => return HeaderName::Via,
                b'f' => return HeaderName::From,
                b't' => return HeaderName::To,
                b'i' => return HeaderName::CallId,
                b'm' => return HeaderName::Contact,
                b'l' => return HeaderName::ContentLength,
                b'c' => return HeaderName::ContentType,
                b'k' => return HeaderName::Supported,
                b'e' => "Content-Encoding",
                b's' => "Subject",
                b'r' => "Refer-To",
                b'b' => "Referred-By",
                b'o' => "Event",
                b'u' => "Allow-Events",
                b'a' => "Accept-Contact",
                b'j' => "Reject-Contact",
                b'd' => "Request-Disposition",
                b'x' => "Session-Expires",
                b'y' => "Identity",
                b'n' => "Identity-Info",
                _ => return HeaderName::Other(s.to_string()),
            };
            return HeaderName::Other(long.to_string());
        }
        for (name, h) in &KNOWN_HEADERS {
            if name.len() == s.len() && name.eq_ignore_ascii_case(s) {
                return h.clone();
            }
        }
        HeaderName::Other(s.to_string())
    }
    /// Canonical long form for encoding (`Call-ID`, `CSeq`, `WWW-Authenticate`...).
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Expires => "Expires",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::Authorization => "Authorization",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::AuthenticationInfo => "Authentication-Info",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Server => "Server",
            HeaderName::Supported => "Supported",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Allow => "Allow",
            HeaderName::Path => "Path",
            HeaderName::Timestamp => "Timestamp",
            HeaderName::Date => "Date",
            HeaderName::Other(s) => s,
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: Uri },
    Response { code: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

/// One Via value (RFC 3261 section 20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-case transport token (`UDP`, `TCP`, `TLS`, `WS`, `WSS`, `SCTP`, ...).
    pub transport: String,
    /// sent-by host (IPv6 with brackets), lower-cased.
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

/// A Via value as slices of the input (`params` raw, validated).
#[derive(Debug, Clone, Copy)]
struct ViaRef<'a> {
    transport: &'a str,
    host: &'a str,
    port: Option<u16>,
    params: &'a str,
}

/// Parses one `via-parm` (RFC 3261 section 25.1): `sent-protocol LWS sent-by *( SEMI
/// via-params )` with `SLASH = SWS "/" SWS` and `COLON = SWS ":" SWS`, so
/// `SIP  /   2.0 /UDP` (RFC 4475 3.1.1.1) is fine. Only `SIP/2.0` is accepted (the
/// [`Via`] type has no room for another protocol). `branch`, `received`, `maddr` and
/// `ttl` need a value, `rport` (RFC 3581) has none or a port number.
fn parse_via(s: &str) -> Result<ViaRef<'_>, ()> {
    let s = trim_ws(s);
    let b = s.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && is_ws(b[*i]) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> Result<&str, ()> {
        let st = *i;
        while *i < b.len() && is(b[*i], TOKEN) {
            *i += 1;
        }
        if *i == st {
            return Err(());
        }
        s.get(st..*i).ok_or(())
    };
    let slash = |i: &mut usize| -> Result<(), ()> {
        skip_ws(i);
        if b.get(*i) != Some(&b'/') {
            return Err(());
        }
        *i += 1;
        skip_ws(i);
        Ok(())
    };
    let proto = token(&mut i)?;
    slash(&mut i)?;
    let version = token(&mut i)?;
    slash(&mut i)?;
    let transport = token(&mut i)?;
    if !proto.eq_ignore_ascii_case("SIP") || version != "2.0" {
        return Err(());
    }
    let ws = i;
    skip_ws(&mut i);
    if i == ws {
        return Err(());
    }
    let hs = i;
    if b.get(i) == Some(&b'[') {
        i = s[i..].find(']').map(|e| i + e + 1).ok_or(())?;
    } else {
        while i < b.len() && is(b[i], HOST) {
            i += 1;
        }
    }
    let host = &s[hs..i];
    if !is_host(host) {
        return Err(());
    }
    let save = i;
    skip_ws(&mut i);
    let mut port = None;
    if b.get(i) == Some(&b':') {
        i += 1;
        skip_ws(&mut i);
        let ps = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        port = Some(
            parse_digits(&s[ps..i])
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(())?,
        );
    } else {
        i = save;
    }
    let params = &s[i..];
    let mut ok = true;
    for_each_param(params, |n, v| {
        let quoted = v.is_some_and(|v| v.starts_with('"'));
        let needs_value = n.eq_ignore_ascii_case("branch")
            || n.eq_ignore_ascii_case("received")
            || n.eq_ignore_ascii_case("maddr")
            || n.eq_ignore_ascii_case("ttl");
        if needs_value && (v.is_none() || quoted) {
            ok = false;
        }
        if n.eq_ignore_ascii_case("rport") {
            if let Some(v) = v {
                if parse_digits(v)
                    .and_then(|p| u16::try_from(p).ok())
                    .is_none()
                {
                    ok = false;
                }
            }
        }
    })?;
    if !ok {
        return Err(());
    }
    Ok(ViaRef {
        transport,
        host,
        port,
        params,
    })
}

impl ViaRef<'_> {
    fn into_owned(self) -> Via {
        Via {
            transport: self.transport.to_ascii_uppercase(),
            host: self.host.to_ascii_lowercase(),
            port: self.port,
            params: header_params(self.params),
        }
    }
}

impl Via {
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }
    /// `rport` (RFC 3581): `None` absent, `Some(None)` flag, `Some(Some(p))` filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }
    pub fn received(&self) -> Option<&str> {
        self.params.get("received").flatten()
    }
    /// Parses one Via value (not a comma-separated list; see [`Message::vias`]).
    pub fn parse(s: &str) -> Result<Via, ParseError> {
        parse_via(s)
            .map(ViaRef::into_owned)
            .map_err(|_| bad("Bad Via header"))
    }
}

impl fmt::Display for Via {
    /// `SIP/2.0/UDP host:port;params`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        self.params.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// `CSeq = 1*DIGIT LWS Method` (RFC 3261 section 20.16); the number must fit 32 bits
/// (RFC 4475 3.1.2.4 refuses 2^65).
fn parse_cseq(v: &str) -> Option<(u32, &str)> {
    let v = trim_ws(v);
    let end = v
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    let seq = u32::try_from(parse_digits(&v[..end])?).ok()?;
    let rest = &v[end..];
    let method = trim_ws_start(rest);
    if method.len() == rest.len() || !is_token(method) {
        return None;
    }
    Some((seq, method))
}

/// A Contact header's content (RFC 3261 section 20.10): `*` or a list of name-addrs
/// (params `expires`, `q`, `+sip.instance`, `reg-id`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    Star,
    List(Vec<NameAddr>),
}

/// Why a message was refused, with the status a server answers (RFC 3261 section 21).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Larger than [`Limits::max_message_size`]: 513.
    #[error("message too large")]
    TooLarge,
    /// SIP version other than 2.0: 505.
    #[error("version not supported")]
    VersionNotSupported,
    /// Everything else that is malformed: 400 with this text as the reason phrase
    /// (short, names the header, e.g. "Bad CSeq header").
    #[error("{0}")]
    Malformed(String),
}

impl ParseError {
    pub fn status(&self) -> u16 {
        match self {
            ParseError::TooLarge => 513,
            ParseError::VersionNotSupported => 505,
            ParseError::Malformed(_) => 400,
        }
    }
    /// Reason phrase for the answer.
    pub fn reason(&self) -> String {
        match self {
            ParseError::TooLarge => "Message Too Large".into(),
            ParseError::VersionNotSupported => "Version Not Supported".into(),
            ParseError::Malformed(r) => r.clone(),
        }
    }
}

fn bad(reason: &str) -> ParseError {
    ParseError::Malformed(reason.to_string())
}

/// What [`frame`] found at the start of a stream buffer (RFC 3261 section 18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Need more bytes.
    Incomplete,
    /// `len` bytes of CRLF keep-alive (RFC 5626 section 4.4.1: a double CRLF "ping" to
    /// be answered by a single CRLF "pong"; a lone CRLF is skipped silently).
    KeepAlive { len: usize, ping: bool },
    /// One whole message of `len` bytes (headers + Content-Length body).
    Message { len: usize },
}

/// Finds the empty line ending the header block, starting at `from`: returns the offset
/// where the empty line starts (the header block includes the line break before it) and
/// where the body starts. Lines end with CRLF or, leniently, a bare LF.
fn find_head_end(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut line = from;
    loop {
        let nl = line + find_byte(data.get(line..)?, b'\n')?;
        let len = nl - line;
        if len == 0 || (len == 1 && data[line] == b'\r') {
            return Some((line, nl + 1));
        }
        line = nl + 1;
    }
}

/// Logical header lines: each item is one header line with its continuation lines
/// (lines starting with SP or HTAB, RFC 3261 section 7.3.1), line breaks included.
struct HeaderSpans<'a> {
    rest: &'a str,
}

impl<'a> Iterator for HeaderSpans<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest.as_bytes();
        let mut pos = 0;
        loop {
            match self.rest[pos..].find('\n') {
                Some(nl) => {
                    let nl = pos + nl;
                    if b.get(nl + 1).is_some_and(|&c| is_ws(c)) {
                        pos = nl + 1;
                        continue;
                    }
                    let span = &self.rest[..nl];
                    self.rest = &self.rest[nl + 1..];
                    return Some(span);
                }
                None => {
                    let span = self.rest;
                    self.rest = "";
                    return Some(span);
                }
            }
        }
    }
}

/// Splits a logical header line into its name and unfolded, trimmed value: pieces are
/// joined with one SP, which is what RFC 3261 section 7.3.1 says folding means. `None`
/// when there is no colon, the name is not a token, or a bare CR is inside.
fn split_header(span: &str) -> Option<(&str, Cow<'_, str>)> {
    // HCOLON = *( SP / HTAB ) ":" SWS; the name is a token, so it ends at the first
    // byte that is not one.
    let b = span.as_bytes();
    let name_len = span_of(b, TOKEN);
    let mut colon = name_len;
    while colon < b.len() && is_ws(b[colon]) {
        colon += 1;
    }
    if name_len == 0 || b.get(colon) != Some(&b':') {
        return None;
    }
    let name = &span[..name_len];
    let raw = &span[colon + 1..];
    if find_byte(raw.as_bytes(), b'\n').is_none() {
        let v = raw.strip_suffix('\r').unwrap_or(raw);
        if find_byte(v.as_bytes(), b'\r').is_some() {
            return None;
        }
        return Some((name, Cow::Borrowed(trim_ws(v))));
    }
    let mut out = String::with_capacity(raw.len());
    for piece in raw.split('\n') {
        let piece = piece.strip_suffix('\r').unwrap_or(piece);
        if find_byte(piece.as_bytes(), b'\r').is_some() {
            return None;
        }
        let piece = trim_ws(piece);
        if piece.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(piece);
    }
    Some((name, Cow::Owned(out)))
}

/// Finds Content-Length in a raw header block (start line first), for framing.
fn scan_content_length(head: &[u8]) -> Result<Option<usize>, ParseError> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.splitn(2, '\n');
    lines.next();
    let spans = HeaderSpans {
        rest: lines.next().unwrap_or(""),
    };
    let mut found = None;
    for span in spans {
        // Only "Content-Length" and "l" can match: skip the rest without splitting them.
        if !matches!(span.as_bytes().first(), Some(b'C' | b'c' | b'L' | b'l')) {
            continue;
        }
        let Some((name, value)) = split_header(span) else {
            continue;
        };
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            if found.is_some() {
                return Err(bad("Multiple Content-Length headers"));
            }
            let n = parse_digits(&value)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad("Bad Content-Length header"))?;
            found = Some(n);
        }
    }
    Ok(found)
}

/// Delimits the next message on a stream transport. Content-Length is mandatory on
/// streams; a missing or bad one, or headers longer than the limit, are errors (the
/// daemon answers if it can and closes the connection).
///
/// CRLFs before a start line are keep-alives (RFC 3261 section 7.5 says to ignore them,
/// RFC 5626 section 4.4.1 makes a double CRLF a ping); a bare LF is skipped like a lone
/// CRLF.
pub fn frame(buf: &[u8], limits: &Limits) -> Result<Frame, ParseError> {
    match buf {
        [] | [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(Frame::Incomplete),
        [b'\r', b'\n', b'\r', b'\n', ..] => return Ok(Frame::KeepAlive { len: 4, ping: true }),
        [b'\r', b'\n', ..] => {
            return Ok(Frame::KeepAlive {
                len: 2,
                ping: false,
            })
        }
        [b'\n', ..] => {
            return Ok(Frame::KeepAlive {
                len: 1,
                ping: false,
            })
        }
        _ => {}
    }
    let window = &buf[..buf.len().min(limits.max_message_size)];
    let Some((head_end, body_start)) = find_head_end(window, 0) else {
        return if buf.len() >= limits.max_message_size {
            Err(ParseError::TooLarge)
        } else {
            Ok(Frame::Incomplete)
        };
    };
    let cl = scan_content_length(&buf[..head_end])?
        .ok_or_else(|| bad("Missing Content-Length header"))?;
    let len = body_start
        .checked_add(cl)
        .filter(|&l| l <= limits.max_message_size)
        .ok_or(ParseError::TooLarge)?;
    Ok(if buf.len() < len {
        Frame::Incomplete
    } else {
        Frame::Message { len }
    })
}

/// Builds the error response for bytes that failed [`Message::parse`] with `err`, when
/// they look like a request with enough of Via, From, To, Call-ID and CSeq to answer
/// (RFC 3261 section 8.2.6: those are copied verbatim). `None` for responses and for
/// input too broken to answer; the daemon then only logs and counts it.
///
/// "Enough" is at least one Via (where the answer goes, section 18.2.2) and a CSeq
/// (what the client transaction matches on with the branch, section 17.1.3); From, To
/// and Call-ID are copied when present (RFC 4475 3.3.1 expects a 400 even when they are
/// missing). ACK is never answered (section 17.2.1). A To without a tag gets one
/// (section 8.2.6.2), derived from a hash of the Call-ID so that a retransmission gets
/// the same answer without any random number in this crate.
pub fn error_response(data: &[u8], err: &ParseError) -> Option<Vec<u8>> {
    let start = data
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(data.len());
    let head_end = find_head_end(data, start).map_or(data.len(), |(e, _)| e);
    let head = String::from_utf8_lossy(&data[start..head_end]);
    let (first, rest) = head.split_once('\n').unwrap_or((&head, ""));
    let first = first.strip_suffix('\r').unwrap_or(first);
    if first
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        return None;
    }
    let method = first.split(' ').next().unwrap_or("");
    if !is_token(method) || method == "ACK" {
        return None;
    }
    let mut vias: Vec<Cow<'_, str>> = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for span in (HeaderSpans { rest }) {
        let Some((name, value)) = split_header(span) else {
            continue;
        };
        match HeaderName::parse(name) {
            HeaderName::Via => vias.push(value),
            HeaderName::From if from.is_none() => from = Some(value),
            HeaderName::To if to.is_none() => to = Some(value),
            HeaderName::CallId if call_id.is_none() => call_id = Some(value),
            HeaderName::CSeq if cseq.is_none() => cseq = Some(value),
            _ => {}
        }
    }
    let cseq = cseq?;
    if vias.is_empty() {
        return None;
    }
    let reason: String = err
        .reason()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut out = format!("SIP/2.0 {} {}\r\n", err.status(), reason);
    for v in &vias {
        out.push_str("Via: ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    if let Some(f) = &from {
        out.push_str("From: ");
        out.push_str(f);
        out.push_str("\r\n");
    }
    if let Some(t) = &to {
        out.push_str("To: ");
        out.push_str(t);
        if !has_tag(t) {
            let id = call_id.as_deref().unwrap_or("");
            out.push_str(&format!(";tag={:016x}", fnv1a(id.as_bytes())));
        }
        out.push_str("\r\n");
    }
    if let Some(c) = &call_id {
        out.push_str("Call-ID: ");
        out.push_str(c);
        out.push_str("\r\n");
    }
    out.push_str("CSeq: ");
    out.push_str(&cseq);
    out.push_str("\r\nContent-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// Whether a From/To value has a `tag` parameter; for values that do not parse, a plain
/// search for `;tag=` decides.
fn has_tag(v: &str) -> bool {
    match parse_name_addr(v) {
        Ok(n) => n.param("tag").is_some_and(|t| t.is_some()),
        Err(_) => v
            .to_ascii_lowercase()
            .replace([' ', '\t'], "")
            .contains(";tag="),
    }
}

/// Parses `SIP-Version` (`"SIP" "/" 1*DIGIT "." 1*DIGIT`): `Ok(true)` for 2.0,
/// `Ok(false)` for another well-formed version (505), `Err` otherwise (400).
fn check_version(v: &str) -> Result<bool, ()> {
    let rest = v
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .and_then(|_| v.get(4..))
        .ok_or(())?;
    let (major, minor) = rest.split_once('.').ok_or(())?;
    if parse_digits(major).is_none() || parse_digits(minor).is_none() {
        return Err(());
    }
    Ok(rest == "2.0")
}

/// Request-Line / Status-Line (RFC 3261 sections 7.1 and 7.2): single SPs between the
/// elements (RFC 4475 3.1.2.9 and 3.1.2.10 refuse extra ones), 505 for another version.
fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        let (version, rest) = line.split_once(' ').ok_or_else(|| bad("Bad Status-Line"))?;
        match check_version(version) {
            Ok(true) => {}
            Ok(false) => return Err(ParseError::VersionNotSupported),
            Err(()) => return Err(bad("Bad Status-Line")),
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        // Status-Code = 3DIGIT; 100..=699 are the classes RFC 3261 section 7.2 defines.
        let code = Some(code)
            .filter(|c| c.len() == 3)
            .and_then(parse_digits)
            .filter(|c| (100..=699).contains(c))
            .ok_or_else(|| bad("Bad Status-Line"))?;
        if reason.chars().any(|c| c != '\t' && c.is_control()) {
            return Err(bad("Bad Status-Line"));
        }
        return Ok(StartLine::Response {
            code: code as u16,
            reason: reason.to_string(),
        });
    }
    let (method, rest) = line
        .split_once(' ')
        .ok_or_else(|| bad("Bad Request-Line"))?;
    let (uri, version) = rest
        .rsplit_once(' ')
        .ok_or_else(|| bad("Bad Request-Line"))?;
    match check_version(version) {
        Ok(true) => {}
        Ok(false) => return Err(ParseError::VersionNotSupported),
        Err(()) => return Err(bad("Bad Request-Line")),
    }
    let method = Method::from_token(method).ok_or_else(|| bad("Bad Request-Line"))?;
    let uri_ref = parse_uri(uri).map_err(|_| bad("Bad Request-URI"))?;
    // RFC 3261 section 19.1.1 (table 1): no headers in a Request-URI (RFC 4475 3.1.2.11
    // allows refusing them, which keeps an escaped Route from being acted on).
    if matches!(uri_ref, UriRef::Sip(u) if u.headers.is_some()) {
        return Err(bad("Bad Request-URI"));
    }
    Ok(StartLine::Request {
        method,
        uri: uri_ref.into_owned(),
    })
}

/// Call-ID (RFC 3261 section 20.8): non-empty visible ASCII. The grammar (`word ["@"
/// word]`) is narrower, but Call-IDs are only compared, and real ones carry `=` and
/// other characters outside it.
fn valid_call_id(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Counts of the headers a message must have once.
#[derive(Default)]
struct Seen {
    via: usize,
    from: usize,
    to: usize,
    call_id: usize,
    cseq: usize,
    max_forwards: usize,
    content_length: usize,
}

fn require_one(n: usize, name: &str) -> Result<(), ParseError> {
    match n {
        1 => Ok(()),
        0 => Err(ParseError::Malformed(format!("Missing {name} header"))),
        _ => Err(ParseError::Malformed(format!("Multiple {name} headers"))),
    }
}

impl Message {
    /// Parses and validates one whole message; see the module doc.
    ///
    /// The body is cut to Content-Length; bytes after it in a datagram are discarded and a
    /// datagram shorter than Content-Length is an error (RFC 3261 section 18.3). Without
    /// Content-Length the body is the rest of the datagram (RFC 2543 senders, RFC 4475
    /// 3.4.1). Max-Forwards may be missing for the same reason.
    pub fn parse(data: &[u8], limits: &Limits) -> Result<Message, ParseError> {
        if data.len() > limits.max_message_size {
            return Err(ParseError::TooLarge);
        }
        let start = data
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or_else(|| bad("Empty message"))?;
        let (head_end, body_start) =
            find_head_end(data, start).ok_or_else(|| bad("Missing end of headers"))?;
        let head =
            std::str::from_utf8(&data[start..head_end]).map_err(|_| bad("Header is not UTF-8"))?;
        let (first, rest) = head.split_once('\n').unwrap_or((head, ""));
        let first = first.strip_suffix('\r').unwrap_or(first);
        let start_line = parse_start_line(first)?;

        let mut headers: Vec<Header> = Vec::with_capacity(16);
        for span in (HeaderSpans { rest }) {
            if headers.len() >= limits.max_headers {
                return Err(bad("Too many headers"));
            }
            let (name, value) = split_header(span).ok_or_else(|| bad("Bad header line"))?;
            headers.push(Header {
                name: HeaderName::parse(name),
                value: value.into_owned(),
            });
        }

        let mut seen = Seen::default();
        let mut content_length = None;
        let mut cseq_method: Option<&str> = None;
        for h in &headers {
            let v = h.value.as_str();
            match h.name {
                HeaderName::Via => {
                    seen.via += 1;
                    for one in split_top(v, b',') {
                        parse_via(one).map_err(|_| bad("Bad Via header"))?;
                    }
                }
                HeaderName::From => {
                    seen.from += 1;
                    parse_name_addr(v).map_err(|_| bad("Bad From header"))?;
                }
                HeaderName::To => {
                    seen.to += 1;
                    parse_name_addr(v).map_err(|_| bad("Bad To header"))?;
                }
                HeaderName::CallId => {
                    seen.call_id += 1;
                    if !valid_call_id(v) {
                        return Err(bad("Bad Call-ID header"));
                    }
                }
                HeaderName::CSeq => {
                    seen.cseq += 1;
                    let (_, m) = parse_cseq(v).ok_or_else(|| bad("Bad CSeq header"))?;
                    cseq_method = Some(m);
                }
                HeaderName::MaxForwards => {
                    seen.max_forwards += 1;
                    // RFC 3261 section 20.22: an integer in the range 0-255.
                    parse_digits(v)
                        .filter(|&n| n <= 255)
                        .ok_or_else(|| bad("Bad Max-Forwards header"))?;
                }
                HeaderName::ContentLength => {
                    seen.content_length += 1;
                    content_length = Some(
                        parse_digits(v)
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(|| bad("Bad Content-Length header"))?,
                    );
                }
                _ => {}
            }
        }
        if seen.via == 0 {
            return Err(bad("Missing Via header"));
        }
        require_one(seen.from, "From")?;
        require_one(seen.to, "To")?;
        require_one(seen.call_id, "Call-ID")?;
        require_one(seen.cseq, "CSeq")?;
        if seen.max_forwards > 1 {
            return Err(bad("Multiple Max-Forwards headers"));
        }
        if seen.content_length > 1 {
            return Err(bad("Multiple Content-Length headers"));
        }
        if let StartLine::Request { method, .. } = &start_line {
            if cseq_method != Some(method.as_str()) {
                return Err(bad("CSeq method does not match"));
            }
        }

        let available = &data[body_start..];
        let body = match content_length {
            Some(n) => available
                .get(..n)
                .ok_or_else(|| bad("Content-Length larger than message"))?
                .to_vec(),
            None => available.to_vec(),
        };
        Ok(Message {
            start: start_line,
            headers,
            body,
        })
    }

    /// Encodes with canonical header names and a Content-Length equal to the body.
    ///
    /// The first Content-Length line is written where it stands (its text kept when it
    /// already equals the body length, so a parsed message encodes back to itself);
    /// further ones are dropped, and one is added at the end when there was none. A CR or
    /// LF that code put into a value is written as a space, so no edit can inject a
    /// header line.
    pub fn encode(&self) -> Vec<u8> {
        let size = 64
            + self
                .headers
                .iter()
                .map(|h| h.name.as_str().len() + h.value.len() + 4)
                .sum::<usize>()
            + self.body.len();
        let mut out = Vec::with_capacity(size);
        match &self.start {
            StartLine::Request { method, uri } => {
                out.extend_from_slice(method.as_str().as_bytes());
                out.push(b' ');
                out.extend_from_slice(uri.to_string().as_bytes());
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.extend_from_slice(format!("SIP/2.0 {code} ").as_bytes());
                push_clean(&mut out, reason);
                out.extend_from_slice(b"\r\n");
            }
        }
        let mut wrote_length = false;
        for h in &self.headers {
            if h.name == HeaderName::ContentLength {
                if !wrote_length {
                    wrote_length = true;
                    let same = parse_digits(&h.value).is_some_and(|n| n == self.body.len() as u64);
                    if same {
                        out.extend_from_slice(b"Content-Length: ");
                        push_clean(&mut out, &h.value);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.extend_from_slice(
                            format!("Content-Length: {}\r\n", self.body.len()).as_bytes(),
                        );
                    }
                }
                continue;
            }
            push_clean(&mut out, h.name.as_str());
            out.extend_from_slice(b": ");
            push_clean(&mut out, &h.value);
            out.extend_from_slice(b"\r\n");
        }
        if !wrote_length {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// A response to `req` (RFC 3261 section 8.2.6): Via(s), From, To, Call-ID, CSeq
    /// copied; `to_tag` added to To when it has none and `code > 100`; Timestamp copied
    /// for 100 (section 8.2.6.1). No body.
    pub fn response_to(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut headers: Vec<Header> = req
            .headers
            .iter()
            .filter(|h| h.name == HeaderName::Via)
            .cloned()
            .collect();
        for name in [
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            if let Some(v) = req.header(&name) {
                let mut value = v.to_string();
                if name == HeaderName::To && code > 100 {
                    if let Some(tag) = to_tag {
                        if !has_tag(&value) {
                            value.push_str(";tag=");
                            value.push_str(tag);
                        }
                    }
                }
                headers.push(Header { name, value });
            }
        }
        if code == 100 {
            if let Some(t) = req.header(&HeaderName::Timestamp) {
                headers.push(Header {
                    name: HeaderName::Timestamp,
                    value: t.to_string(),
                });
            }
        }
        Message {
            start: StartLine::Response {
                code,
                reason: reason.to_string(),
            },
            headers,
            body: Vec::new(),
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }
    pub fn uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// First header line named `name`.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }
    /// Every comma-separated value of every header line named `name`, in order, trimmed
    /// (commas inside quotes or `<>` do not split). Empty values are skipped. Not for
    /// headers whose grammar has bare commas (Date, WWW-Authenticate...).
    pub fn values(&self, name: &HeaderName) -> Vec<String> {
        self.headers
            .iter()
            .filter(|h| &h.name == name)
            .flat_map(|h| split_top(&h.value, b','))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }
    /// All Via values, topmost first (validated by `parse`).
    pub fn vias(&self) -> Vec<Via> {
        self.headers
            .iter()
            .filter(|h| h.name == HeaderName::Via)
            .flat_map(|h| split_top(&h.value, b','))
            .filter_map(|v| Via::parse(v).ok())
            .collect()
    }
    pub fn top_via(&self) -> Option<Via> {
        let v = self.header(&HeaderName::Via)?;
        Via::parse(split_top(v, b',').next()?).ok()
    }
    pub fn from_header(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header(&HeaderName::From)?).ok()
    }
    pub fn to_header(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header(&HeaderName::To)?).ok()
    }
    pub fn call_id(&self) -> Option<&str> {
        self.header(&HeaderName::CallId)
    }
    pub fn cseq(&self) -> Option<CSeq> {
        let (seq, m) = parse_cseq(self.header(&HeaderName::CSeq)?)?;
        Some(CSeq {
            seq,
            method: Method::from_token(m)?,
        })
    }
    pub fn max_forwards(&self) -> Option<u32> {
        parse_digits(self.header(&HeaderName::MaxForwards)?).and_then(|n| u32::try_from(n).ok())
    }
    /// The Expires header (delta-seconds); `Err` when present but not a number (or above
    /// 2^32-1, RFC 4475 3.1.2.4: the registrar may then use its default).
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        match self.header(&HeaderName::Expires) {
            None => Ok(None),
            Some(v) => parse_digits(v)
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad("Bad Expires header")),
        }
    }
    /// Contacts of all Contact lines; `Ok(None)` when there is none; `*` mixed with
    /// others is an error (RFC 3261 section 10.3 step 6 answers 400).
    pub fn contacts(&self) -> Result<Option<Contacts>, ParseError> {
        let mut list = Vec::new();
        let mut stars = 0usize;
        let mut any = false;
        for h in self
            .headers
            .iter()
            .filter(|h| h.name == HeaderName::Contact)
        {
            for v in split_top(&h.value, b',') {
                any = true;
                if v == "*" {
                    stars += 1;
                } else {
                    list.push(NameAddr::parse(v).map_err(|_| bad("Bad Contact header"))?);
                }
            }
        }
        match (any, stars, list.is_empty()) {
            (false, _, _) => Ok(None),
            (true, 0, _) => Ok(Some(Contacts::List(list))),
            (true, 1, true) => Ok(Some(Contacts::Star)),
            _ => Err(bad("Bad Contact header")),
        }
    }
    /// Name-addr values of a list header such as Route, Record-Route or Path.
    pub fn name_addrs(&self, name: &HeaderName) -> Result<Vec<NameAddr>, ParseError> {
        self.headers
            .iter()
            .filter(|h| &h.name == name)
            .flat_map(|h| split_top(&h.value, b','))
            .map(|v| {
                NameAddr::parse(v)
                    .map_err(|_| ParseError::Malformed(format!("Bad {} header", name.as_str())))
            })
            .collect()
    }

    /// Inserts a header line before the first existing line of that name, or, if there
    /// is none, at the top for Via/Route/Record-Route and at the end otherwise.
    pub fn push_front(&mut self, name: HeaderName, value: String) {
        let at = match self.headers.iter().position(|h| h.name == name) {
            Some(i) => i,
            None if matches!(
                name,
                HeaderName::Via | HeaderName::Route | HeaderName::RecordRoute
            ) =>
            {
                0
            }
            None => self.headers.len(),
        };
        self.headers.insert(at, Header { name, value });
    }
    /// Removes and returns the first comma-separated value of the first line named
    /// `name` (the line goes when it becomes empty): popping the top Via or Route.
    pub fn remove_first_value(&mut self, name: &HeaderName) -> Option<String> {
        let i = self.headers.iter().position(|h| &h.name == name)?;
        let value = &self.headers[i].value;
        match find_top(value, b',') {
            Some(c) => {
                let first = trim_ws(&value[..c]).to_string();
                let rest = trim_ws(&value[c + 1..]).to_string();
                if rest.is_empty() {
                    self.headers.remove(i);
                } else {
                    self.headers[i].value = rest;
                }
                Some(first)
            }
            None => Some(trim_ws(&self.headers.remove(i).value).to_string()),
        }
    }
    pub fn set_header(&mut self, name: HeaderName, value: String) {
        self.remove_headers(&name);
        self.headers.push(Header { name, value });
    }
    pub fn remove_headers(&mut self, name: &HeaderName) {
        self.headers.retain(|h| &h.name != name);
    }
    pub fn set_uri(&mut self, new: Uri) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            *uri = new;
        }
    }
}

/// Appends `s`, with CR and LF turned into spaces.
fn push_clean(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if find_byte(b, b'\r').is_some() || find_byte(b, b'\n').is_some() {
        out.extend(
            s.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Splits an `Authorization`/`Proxy-Authorization`/`WWW-Authenticate` value into its
/// scheme and `name=value` parameters (quotes removed, `\"` unescaped) (RFC 3261 section
/// 25.1 `credentials`, RFC 7616 section 3.4). `None` when it does not parse.
///
/// Parameter names are returned as received (they compare case-insensitively). A scheme
/// with no parameter at all, or a token68 blob (HTTP Basic), is `None`: SIP's grammar
/// always has at least one `auth-param`.
pub fn parse_auth_header(value: &str) -> Option<(String, Vec<(String, String)>)> {
    let v = trim_ws(value);
    let scheme_end = find_any(v.as_bytes(), b" \t").unwrap_or(v.len());
    let scheme = &v[..scheme_end];
    if !is_token(scheme) {
        return None;
    }
    let s = &v[scheme_end..];
    let b = s.as_bytes();
    let mut i = 0;
    let mut params = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && is_ws(b[*i]) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        // Empty list elements ("a=1, ,b=2") are allowed by the #rule.
        while i < b.len() && b[i] == b',' {
            i += 1;
            skip_ws(&mut i);
        }
        if i >= b.len() {
            break;
        }
        let ns = i;
        while i < b.len() && is(b[i], TOKEN) {
            i += 1;
        }
        if i == ns {
            return None;
        }
        let name = &s[ns..i];
        skip_ws(&mut i);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let vs = i;
        let value = if b.get(i) == Some(&b'"') {
            i = quoted_end(s, i)?;
            unquote(&s[vs..i]).into_owned()
        } else {
            while i < b.len() && (is(b[i], TOKEN) || matches!(b[i], b'/' | b':' | b'@')) {
                i += 1;
            }
            if i == vs {
                return None;
            }
            s[vs..i].to_string()
        };
        params.push((name.to_string(), value));
        skip_ws(&mut i);
        match b.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
    if params.is_empty() {
        return None;
    }
    Some((scheme.to_string(), params))
}

#[cfg(test)]
mod tests;
