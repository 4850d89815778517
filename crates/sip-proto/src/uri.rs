//! SIP URIs (RFC 3261 section 19.1), name-addr values, and header parameters.
//!
//! What the parser guarantees:
//! - [`Uri::parse`] accepts `sip:`/`sips:` URIs fully parsed and any other scheme
//!   (`tel:`, unknown ones as in RFC 4475 3.3.2 `nobodyKnowsThisScheme:`) as
//!   [`Uri::Other`], so the proxy can answer 416 instead of 400.
//! - Strings are kept as they were received (escaped), except the host, which is
//!   lower-cased; [`SipUri::user_unescaped`] decodes %HH.
//!
//! Parsing is done once on borrowed slices (`SipUriRef`, `NameAddrRef`), which
//! [`crate::message::Message::parse`] uses to validate From/To/Request-URI without
//! allocating; the public owned types are built from those.

use crate::parse::{
    canonical_escapes, find_any, for_each_param, is, is_escaped_run, is_host, is_ws, parse_digits,
    pct_decode, quoted_end, span, trim_ws, unquote, DIGIT, HNV_UNRESERVED, HOST, PARAM_UNRESERVED,
    PASSWORD_EXTRA, SCHEME, TOKEN, UNRESERVED, URIC, USER_UNRESERVED,
};
use std::fmt;

/// Errors in a URI or name-addr; the caller answers 400 with [`UriError`]'s text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(pub String);

impl From<&'static str> for UriError {
    fn from(s: &'static str) -> UriError {
        UriError(s.to_string())
    }
}

/// `;name[=value]` parameters in received order; names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, Option<String>)>);

impl Params {
    /// The value of the first parameter named `name`: `Some(None)` for a flag parameter.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
    /// Whether a parameter named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    /// Sets (replacing every existing one) or adds parameter `name`.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        self.remove(name);
        self.0.push((name.to_string(), value.map(str::to_string)));
    }
    /// Removes every parameter named `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    /// The value of parameter `name` with the quotes of a quoted-string removed and its
    /// `\x` escapes resolved (`+sip.instance="<urn:...>"` -> `<urn:...>`). Values are
    /// stored as received, quotes included, so that encoding gives them back unchanged.
    pub fn get_unquoted(&self, name: &str) -> Option<String> {
        self.get(name).flatten().map(|v| unquote(v).into_owned())
    }
}

impl fmt::Display for Params {
    /// `;a=b;c` (empty when there are no parameters).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, v) in &self.0 {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` (RFC 3261 section 19.1.1).
    pub secure: bool,
    /// Userinfo's user part as received (may contain %HH escapes).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Host name (lower-cased), IPv4 address, or IPv6 reference *with* brackets.
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
    /// `?h=v&...` headers as received, without the `?`.
    pub headers: Option<String>,
}

/// Any URI in a Request-URI, From, To, Contact, Route...
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    /// A URI of another scheme (`tel:`, `mailto:`, unknown), kept verbatim.
    Other {
        scheme: String,
        rest: String,
    },
}

/// `display-name <uri>;params` or `uri;params` (RFC 3261 section 20.10, 25.1 name-addr /
/// addr-spec). In the addr-spec form, `;params` after the URI are header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as received (quotes removed, escapes kept).
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

// ---------------------------------------------------------------------------------------
// Borrowed parsing.

/// A SIP URI as slices of the input; `params` is the raw `;a=b;c` text (validated).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SipUriRef<'a> {
    pub secure: bool,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: &'a str,
    pub headers: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum UriRef<'a> {
    Sip(SipUriRef<'a>),
    Other { scheme: &'a str, rest: &'a str },
}

/// A name-addr or addr-spec as slices; `params` is the raw header-parameter text
/// (validated, starts with optional whitespace and `;` or is empty).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameAddrRef<'a> {
    pub display: Option<&'a str>,
    pub uri: UriRef<'a>,
    pub params: &'a str,
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Parses `sip:` / `sips:` URIs (RFC 3261 section 25.1 `SIP-URI` / `SIPS-URI`):
/// `scheme ":" [ userinfo ] hostport uri-parameters [ headers ]`.
pub(crate) fn parse_sip_uri(s: &str) -> Result<SipUriRef<'_>, &'static str> {
    let (secure, rest) = if let Some(r) = strip_prefix_ci(s, "sip:") {
        (false, r)
    } else if let Some(r) = strip_prefix_ci(s, "sips:") {
        (true, r)
    } else {
        return Err("Bad URI scheme");
    };
    // userinfo ends at the only "@": neither hostport, parameters nor headers may hold
    // an unescaped "@", while the user part may hold ";", "?" and "," (user-unreserved,
    // RFC 4475 3.1.1.2 and 3.1.1.9), so "@" must be found before anything else.
    let (user, password, hostpart) = match rest.find('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (u, p) = match userinfo.find(':') {
                Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                None => (userinfo, None),
            };
            if !is_escaped_run(u, UNRESERVED | USER_UNRESERVED) {
                return Err("Bad URI user part");
            }
            if let Some(p) = p {
                if !p.is_empty() && !is_escaped_run(p, UNRESERVED | PASSWORD_EXTRA) {
                    return Err("Bad URI password");
                }
            }
            (Some(u), p, &rest[at + 1..])
        }
        None => (None, None, rest),
    };
    let host_end = if hostpart.starts_with('[') {
        hostpart.find(']').map(|i| i + 1).ok_or("Bad URI host")?
    } else {
        span(hostpart.as_bytes(), HOST)
    };
    let host = &hostpart[..host_end];
    if !is_host(host) {
        return Err("Bad URI host");
    }
    let mut r = &hostpart[host_end..];
    let mut port = None;
    if let Some(p) = r.strip_prefix(':') {
        let end = span(p.as_bytes(), DIGIT);
        port = Some(
            parse_digits(&p[..end])
                .and_then(|v| u16::try_from(v).ok())
                .ok_or("Bad URI port")?,
        );
        r = &p[end..];
    }
    if !(r.is_empty() || r.starts_with(';') || r.starts_with('?')) {
        return Err("Bad URI host");
    }
    let params_end = r.find('?').unwrap_or(r.len());
    let params = &r[..params_end];
    if !params.is_empty() {
        // uri-parameters = *( ";" uri-parameter ), uri-parameter = pname [ "=" pvalue ],
        // pname/pvalue = 1*paramchar.
        let body = params.strip_prefix(';').ok_or("Bad URI parameter")?;
        for p in body.split(';') {
            let (n, v) = match p.find('=') {
                Some(e) => (&p[..e], Some(&p[e + 1..])),
                None => (p, None),
            };
            let ok = |x: &str| is_escaped_run(x, UNRESERVED | PARAM_UNRESERVED);
            if !ok(n) || !v.is_none_or(ok) {
                return Err("Bad URI parameter");
            }
        }
    }
    let headers = match r[params_end..].strip_prefix('?') {
        Some(h) => {
            // headers = "?" header *( "&" header ), header = hname "=" hvalue.
            for one in h.split('&') {
                let (n, v) = one.split_once('=').ok_or("Bad URI headers")?;
                let class = UNRESERVED | HNV_UNRESERVED;
                if !is_escaped_run(n, class) || !(v.is_empty() || is_escaped_run(v, class)) {
                    return Err("Bad URI headers");
                }
            }
            Some(h)
        }
        None => None,
    };
    Ok(SipUriRef {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

/// Parses any `absoluteURI`: SIP/SIPS fully, other schemes as `scheme ":" 1*uric`.
pub(crate) fn parse_uri(s: &str) -> Result<UriRef<'_>, &'static str> {
    let colon = s.find(':').ok_or("Bad URI")?;
    let scheme = &s[..colon];
    let sb = scheme.as_bytes();
    if sb.is_empty() || !sb[0].is_ascii_alphabetic() || !sb.iter().all(|&b| is(b, SCHEME)) {
        return Err("Bad URI scheme");
    }
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        return parse_sip_uri(s).map(UriRef::Sip);
    }
    let rest = &s[colon + 1..];
    if !is_escaped_run(rest, URIC) {
        return Err("Bad URI");
    }
    Ok(UriRef::Other { scheme, rest })
}

/// Parses `name-addr / addr-spec` followed by header parameters (the value of From, To,
/// Contact, Route, Record-Route, Path... RFC 3261 section 20.10 and 25.1).
pub(crate) fn parse_name_addr(s: &str) -> Result<NameAddrRef<'_>, &'static str> {
    let s = trim_ws(s);
    let (display, angle) = if s.starts_with('"') {
        let end = quoted_end(s, 0).ok_or("Bad display name")?;
        let rest = trim_ws(&s[end..]);
        if !rest.starts_with('<') {
            return Err("Bad name-addr");
        }
        (Some(&s[1..end - 1]), Some(rest))
    } else if let Some(lt) = s.find('<') {
        // display-name = *(token LWS): tokens separated by whitespace only
        // (RFC 4475 3.1.2.15: "Bell, Alexander" unquoted is refused).
        let d = trim_ws(&s[..lt]);
        if !d.bytes().all(|b| is(b, TOKEN) || is_ws(b)) {
            return Err("Bad display name");
        }
        ((!d.is_empty()).then_some(d), Some(&s[lt..]))
    } else {
        (None, None)
    };
    let (uri, params) = match angle {
        Some(a) => {
            // LAQUOT addr-spec RAQUOT: no whitespace inside the brackets
            // (RFC 4475 3.1.2.14).
            let gt = a.find('>').ok_or("Bad name-addr")?;
            (parse_uri(&a[1..gt])?, &a[gt + 1..])
        }
        None => {
            // addr-spec: every ";" after the URI starts a header parameter, and a URI
            // with ",", ";" or "?" must have been in <> (RFC 3261 section 20.10;
            // RFC 4475 3.1.2.13).
            let end = s.find(';').unwrap_or(s.len());
            let u = trim_ws(&s[..end]);
            if find_any(u.as_bytes(), b"?,").is_some() {
                return Err("Bad addr-spec");
            }
            (parse_uri(u)?, &s[end..])
        }
    };
    for_each_param(params, |_, _| {}).map_err(|_| "Bad header parameter")?;
    Ok(NameAddrRef {
        display,
        uri,
        params,
    })
}

/// Builds owned parameters from text already validated by [`parse_sip_uri`].
fn uri_params(raw: &str) -> Params {
    let Some(body) = raw.strip_prefix(';') else {
        return Params::default();
    };
    Params(
        body.split(';')
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (p.to_string(), None),
            })
            .collect(),
    )
}

/// Builds owned header parameters from text already validated by [`for_each_param`].
pub(crate) fn header_params(raw: &str) -> Params {
    let mut out = Vec::new();
    // Validated before; on the impossible error the parameters gathered so far are kept.
    let _ = for_each_param(raw, |n, v| out.push((n.to_string(), v.map(str::to_string))));
    Params(out)
}

impl SipUriRef<'_> {
    pub(crate) fn into_owned(self) -> SipUri {
        SipUri {
            secure: self.secure,
            user: self.user.map(str::to_string),
            password: self.password.map(str::to_string),
            host: self.host.to_ascii_lowercase(),
            port: self.port,
            params: uri_params(self.params),
            headers: self.headers.map(str::to_string),
        }
    }
}

impl UriRef<'_> {
    pub(crate) fn into_owned(self) -> Uri {
        match self {
            UriRef::Sip(u) => Uri::Sip(u.into_owned()),
            UriRef::Other { scheme, rest } => Uri::Other {
                scheme: scheme.to_string(),
                rest: rest.to_string(),
            },
        }
    }
}

impl NameAddrRef<'_> {
    pub(crate) fn into_owned(self) -> NameAddr {
        NameAddr {
            display: self.display.map(str::to_string),
            uri: self.uri.into_owned(),
            params: header_params(self.params),
        }
    }

    /// The first header parameter named `name` (case-insensitive), without allocating.
    pub(crate) fn param(&self, name: &str) -> Option<Option<&str>> {
        let mut found = None;
        let _ = for_each_param(self.params, |n, v| {
            if found.is_none() && n.eq_ignore_ascii_case(name) {
                found = Some(v);
            }
        });
        found
    }
}

// ---------------------------------------------------------------------------------------
// Public owned API.

impl SipUri {
    /// Parses `sip:...` / `sips:...`.
    pub fn parse(s: &str) -> Result<SipUri, UriError> {
        parse_sip_uri(s)
            .map(SipUriRef::into_owned)
            .map_err(UriError::from)
    }
    /// The user part with %HH escapes decoded (RFC 3261 section 19.1.4 compares it so).
    /// If the decoded bytes are not UTF-8, the user part is returned with only the escapes
    /// of unreserved characters decoded, so two different users never map to one string.
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(|u| {
            String::from_utf8(pct_decode(u)).unwrap_or_else(|_| canonical_escapes(u).into_owned())
        })
    }
    /// The `transport` parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.params
            .get("transport")
            .flatten()
            .map(str::to_ascii_lowercase)
    }
    /// Address-of-record key `user@host` (user unescaped, host lower-case, no port or
    /// parameters), as the registrar stores bindings (RFC 3261 section 10.3 step 5).
    /// Just the host when there is no user part.
    pub fn aor(&self) -> String {
        let host = self.host.to_ascii_lowercase();
        match self.user_unescaped() {
            Some(u) => format!("{u}@{host}"),
            None => host,
        }
    }
    /// URI equality per RFC 3261 section 19.1.4: scheme, user and password (case-sensitive,
    /// compared with escapes of unreserved characters decoded), host (case-insensitive)
    /// and port must match; a parameter present in both must match case-insensitively;
    /// `user`, `ttl`, `method`, `maddr` and `transport` must be in both or neither, other
    /// parameters in only one are ignored; header components must match as a set.
    pub fn equivalent(&self, other: &SipUri) -> bool {
        fn opt_eq(a: Option<&str>, b: Option<&str>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => canonical_escapes(a) == canonical_escapes(b),
                _ => false,
            }
        }
        if self.secure != other.secure
            || self.port != other.port
            || !self.host.eq_ignore_ascii_case(&other.host)
            || !opt_eq(self.user.as_deref(), other.user.as_deref())
            || !opt_eq(self.password.as_deref(), other.password.as_deref())
        {
            return false;
        }
        if !params_match(&self.params, &other.params) || !params_match(&other.params, &self.params)
        {
            return false;
        }
        headers_match(self.headers.as_deref(), other.headers.as_deref())
    }
}

fn ci_canonical_eq(a: &str, b: &str) -> bool {
    canonical_escapes(a).eq_ignore_ascii_case(&canonical_escapes(b))
}

/// Every parameter of `a` is compatible with `b` (RFC 3261 section 19.1.4). As with
/// [`Params::get`], only the first of repeated parameters counts.
fn params_match(a: &Params, b: &Params) -> bool {
    const MUST_MATCH: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];
    a.0.iter().enumerate().all(|(i, (n, v))| {
        if a.0[..i].iter().any(|(m, _)| ci_canonical_eq(n, m)) {
            return true;
        }
        match b.0.iter().find(|(m, _)| ci_canonical_eq(n, m)) {
            Some((_, w)) => match (v, w) {
                (None, None) => true,
                (Some(v), Some(w)) => ci_canonical_eq(v, w),
                _ => false,
            },
            None => !MUST_MATCH.iter().any(|m| ci_canonical_eq(n, m)),
        }
    })
}

/// Header components: the same set on both sides, names case-insensitive, values exact
/// after canonical escaping.
fn headers_match(a: Option<&str>, b: Option<&str>) -> bool {
    let split = |h: Option<&str>| -> Vec<(String, String)> {
        h.map(|h| {
            h.split('&')
                .map(|one| {
                    let (n, v) = one.split_once('=').unwrap_or((one, ""));
                    (
                        canonical_escapes(n).to_ascii_lowercase(),
                        canonical_escapes(v).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let mut x = split(a);
    let mut y = split(b);
    x.sort();
    y.sort();
    x == y
}

impl Uri {
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        parse_uri(s).map(UriRef::into_owned).map_err(UriError::from)
    }
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other { .. } => None,
        }
    }
}

impl NameAddr {
    pub fn parse(s: &str) -> Result<NameAddr, UriError> {
        parse_name_addr(s)
            .map(NameAddrRef::into_owned)
            .map_err(UriError::from)
    }
    /// The `tag` parameter (From/To, RFC 3261 section 19.3).
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }
    /// The Contact `q` parameter (RFC 3261 section 20.10 `qvalue`) in thousandths:
    /// `q=0.5` -> 500. `Ok(None)` when absent, `Err` when malformed or above 1.
    pub fn qvalue(&self) -> Result<Option<u16>, UriError> {
        let Some(v) = self.params.get("q") else {
            return Ok(None);
        };
        let bad = || UriError::from("Bad q parameter");
        let v = v.ok_or_else(bad)?;
        let (int, frac) = v.split_once('.').unwrap_or((v, ""));
        if !matches!(int, "0" | "1") || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut millis = if int == "1" { 1000 } else { 0 };
        for (i, b) in frac.bytes().enumerate() {
            millis += u16::from(b - b'0') * [100, 10, 1][i];
        }
        if millis > 1000 {
            return Err(bad());
        }
        Ok(Some(millis))
    }
    /// The Contact `expires` parameter (RFC 3261 section 20.10, delta-seconds).
    /// `Ok(None)` when absent; `Err` when not a number or above 2^32-1 (RFC 4475 3.1.2.4:
    /// the registrar may then treat it as its default expiry).
    pub fn expires(&self) -> Result<Option<u32>, UriError> {
        match self.params.get("expires") {
            None => Ok(None),
            Some(v) => v
                .and_then(parse_digits)
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| UriError::from("Bad expires parameter")),
        }
    }
    /// The `+sip.instance` Contact parameter (RFC 5626 section 4.1) without its quotes
    /// and angle brackets: `"<urn:uuid:...>"` -> `urn:uuid:...`.
    pub fn sip_instance(&self) -> Option<String> {
        let v = self.params.get_unquoted("+sip.instance")?;
        let inner = v.strip_prefix('<').and_then(|x| x.strip_suffix('>'));
        Some(inner.map(str::to_string).unwrap_or(v))
    }
    /// The `reg-id` Contact parameter (RFC 5626 section 4.2).
    pub fn reg_id(&self) -> Option<u32> {
        self.params
            .get("reg-id")
            .flatten()
            .and_then(parse_digits)
            .and_then(|v| u32::try_from(v).ok())
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        self.params.fmt(f)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}
impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}
impl fmt::Display for NameAddr {
    /// Always the `<uri>` form, so URI parameters and header parameters stay apart. The
    /// display name is written as a quoted-string; a received one passes through as it
    /// is, and a `"`, lone `\` or control character set by code is escaped so the result
    /// always parses again.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            f.write_str("\"")?;
            write_quoted_content(f, d)?;
            f.write_str("\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

fn write_quoted_content(f: &mut fmt::Formatter<'_>, d: &str) -> fmt::Result {
    let mut chars = d.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n) if n.is_ascii() && n != '\r' && n != '\n' => {
                    chars.next();
                    write!(f, "\\{n}")?;
                }
                _ => f.write_str("\\\\")?,
            },
            '"' => f.write_str("\\\"")?,
            '\r' | '\n' => f.write_str(" ")?,
            c if c != '\t' && (c < ' ' || c == '\x7f') => write!(f, "\\{c}")?,
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        SipUri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_the_parts_of_a_sip_uri() {
        let u = sip("sips:alice:secret@AtLanTa.CoM:5061;transport=TCP;lr?subject=project%20x&priority=urgent");
        assert!(u.secure);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, "atlanta.com");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.params.get("transport"), Some(Some("TCP")));
        assert_eq!(u.params.get("LR"), Some(None));
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        assert_eq!(
            u.headers.as_deref(),
            Some("subject=project%20x&priority=urgent")
        );
        assert_eq!(
            u.to_string(),
            "sips:alice:secret@atlanta.com:5061;transport=TCP;lr?subject=project%20x&priority=urgent"
        );
        assert_eq!(sip(&u.to_string()), u);
    }

    #[test]
    fn ipv6_references() {
        let u = sip("sip:[2001:DB8::10]:5070;maddr=[2001:db8::1]");
        assert_eq!(u.host, "[2001:db8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params.get("maddr"), Some(Some("[2001:db8::1]")));
        let u = sip("sip:bob@[::1]");
        assert_eq!(u.host, "[::1]");
        assert_eq!(u.port, None);
        for bad in [
            "sip:[2001:db8::1",
            "sip:[zz::1]",
            "sip:[::1]x",
            "sip:[::1]:99999",
            "sip:[::1]:",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escapes_and_unusual_user_parts() {
        // RFC 4475 3.1.1.3 and 3.1.1.4.
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user.as_deref(), Some("sips%3Auser%40example.com"));
        assert_eq!(u.user_unescaped().as_deref(), Some("sips:user@example.com"));
        assert_eq!(u.host, "example.net");
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user_unescaped().as_deref(), Some("null-\0-null"));
        // 3.1.1.9: parameters in the user part stay in the user part.
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert!(u.params.0.is_empty());
        // 3.1.1.2: a password full of odd characters.
        let u = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password.as_deref(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        // Invalid UTF-8 after decoding keeps distinct users distinct.
        let a = sip("sip:%FF@x").aor();
        let b = sip("sip:%FE@x").aor();
        assert_ne!(a, b);
        assert_eq!(
            sip("sip:%61lice@Example.COM:5060;x=y").aor(),
            "alice@example.com"
        );
        assert_eq!(sip("sip:example.com").aor(), "example.com");
    }

    #[test]
    fn refuses_malformed_uris() {
        for bad in [
            "",
            "sip:",
            "sip:@host",
            "sip:user@",
            "sip:us er@host",
            "sip:user@ho st",
            "sip:user@host;",
            "sip:user@host;a=",
            "sip:user@host;;a",
            "sip:user@host?",
            "sip:user@host?a",
            "sip:%zz@host",
            "sip:user@host:port",
            "sip:user@host:70000",
            "sip:user@.host",
            "<sip:user@host>",
            "sip:user@host>",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn other_schemes_are_kept_verbatim() {
        // RFC 4475 3.3.2 and 3.3.3.
        let u = Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!(
            u,
            Uri::Other {
                scheme: "nobodyKnowsThisScheme".into(),
                rest: "totallyopaquecontent".into()
            }
        );
        let u = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.to_string(), "soap.beep://192.0.2.103:3002");
        assert!(u.as_sip().is_none());
        assert!(Uri::parse("tel:+1-201-555-0123").is_ok());
        assert!(Uri::parse("1tel:123").is_err());
        assert!(Uri::parse("tel:").is_err());
        assert!(Uri::parse("tel:a b").is_err());
        assert!(matches!(Uri::parse("SIP:bob@b.example"), Ok(Uri::Sip(_))));
    }

    /// RFC 3261 section 19.1.4: the equivalent and non-equivalent example pairs.
    #[test]
    fn rfc3261_equivalence_examples() {
        let equal = [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;security=on",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ];
        for (a, b) in equal {
            assert!(sip(a).equivalent(&sip(b)), "{a} == {b}");
            assert!(sip(b).equivalent(&sip(a)), "{b} == {a}");
        }
        let different = [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
            ("sip:a%3Bb@x", "sip:a;b@x"),
        ];
        for (a, b) in different {
            assert!(!sip(a).equivalent(&sip(b)), "{a} != {b}");
            assert!(!sip(b).equivalent(&sip(a)), "{b} != {a}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"A. G. Bell\" <sip:agb@bell-telephone.com> ;tag=a48s").unwrap();
        assert_eq!(n.display.as_deref(), Some("A. G. Bell"));
        assert_eq!(n.tag(), Some("a48s"));
        assert_eq!(n.uri.as_sip().unwrap().user.as_deref(), Some("agb"));

        // addr-spec: the parameters are header parameters (RFC 3261 section 20.10).
        let n = NameAddr::parse("sip:+12125551212@server.phone2net.com;tag=887s").unwrap();
        assert_eq!(n.tag(), Some("887s"));
        assert!(n.uri.as_sip().unwrap().params.0.is_empty());
        // name-addr: the parameters inside <> belong to the URI.
        let n = NameAddr::parse("<sip:+1@gw1.example.net;unknownparam>").unwrap();
        assert!(n.params.0.is_empty());
        assert!(n.uri.as_sip().unwrap().params.contains("unknownparam"));

        // Token display names and no space before "<" (RFC 4475 3.1.1.6).
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        let n =
            NameAddr::parse("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>").unwrap();
        assert_eq!(n.display.as_deref(), Some("token1~` token2'+_ token3*%!.-"));

        // Escapes are kept in the display name, and survive Display.
        let n = NameAddr::parse(r#""J Rosenberg \\\"" <sip:jdrosen@example.com> ; tag = 98asjd8"#)
            .unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"J Rosenberg \\\""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        assert_eq!(
            n.to_string(),
            r#""J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8"#
        );
        assert_eq!(NameAddr::parse(&n.to_string()).unwrap(), n);

        // Other schemes.
        let n = NameAddr::parse("isbn:2983792873").unwrap();
        assert!(matches!(n.uri, Uri::Other { ref scheme, .. } if scheme == "isbn"));
        let n = NameAddr::parse("<http://www.example.com>;tag=3234233").unwrap();
        assert_eq!(n.tag(), Some("3234233"));

        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>", // RFC 4475 3.1.2.6
            "\"Watson, Thomas\" < sip:t.watson@example.org >", // 3.1.2.14
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43", // 3.1.2.15
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E", // 3.1.2.13
            "\"Joe\" <sip:joe@example.org>;;;;",      // 3.1.2.1
            "<sip:a@b",
            "<sip:a@b> x",
            "sip:a@b, sip:c@d",
            "",
            "<>",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_escapes_what_code_puts_in() {
        let n = NameAddr {
            display: Some("say \"hi\"\\".into()),
            uri: Uri::parse("sip:a@b").unwrap(),
            params: Params::default(),
        };
        let text = n.to_string();
        assert_eq!(text, r#""say \"hi\"\\" <sip:a@b>"#);
        assert!(NameAddr::parse(&text).is_ok());
    }

    #[test]
    fn contact_parameters() {
        let n = NameAddr::parse(
            "<sip:alice@192.0.2.1:5060;transport=tcp>;expires=3600;q=0.7;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1",
        )
        .unwrap();
        assert_eq!(n.expires(), Ok(Some(3600)));
        assert_eq!(n.qvalue(), Ok(Some(700)));
        assert_eq!(
            n.sip_instance().as_deref(),
            Some("urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF")
        );
        assert_eq!(
            n.params.get("+sip.instance"),
            Some(Some("\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\""))
        );
        assert_eq!(n.reg_id(), Some(1));
        assert_eq!(NameAddr::parse(&n.to_string()).unwrap(), n);

        let q = |s: &str| {
            NameAddr::parse(&format!("<sip:a@b>;q={s}"))
                .unwrap()
                .qvalue()
        };
        assert_eq!(q("1"), Ok(Some(1000)));
        assert_eq!(q("1.000"), Ok(Some(1000)));
        assert_eq!(q("0.001"), Ok(Some(1)));
        assert_eq!(q("0"), Ok(Some(0)));
        assert!(q("1.5").is_err());
        assert!(q("0.1234").is_err());
        assert!(q("2").is_err());
        let e = NameAddr::parse("<sip:a@b>;expires=280297596632815").unwrap();
        assert!(e.expires().is_err());
    }
}
