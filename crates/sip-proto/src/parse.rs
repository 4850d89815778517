//! Lexical building blocks of the RFC 3261 section 25.1 grammar, shared by [`crate::uri`]
//! and [`crate::message`]: byte classes in one lookup table, whitespace and quoted-string
//! scanning, splitting at top-level commas, generic parameters and %HH escapes.
//!
//! Everything here works on borrowed `&str` slices and never allocates unless it returns
//! an owned value, so [`crate::message::Message::parse`] can validate the headers a proxy
//! relies on without building the typed values. All loops are bounded by the input
//! length and nothing recurses.

use std::borrow::Cow;

/// `token` (RFC 3261 section 25.1): alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" /
/// "`" / "'" / "~".
pub(crate) const TOKEN: u16 = 1 << 0;
/// `unreserved` = alphanum / mark.
pub(crate) const UNRESERVED: u16 = 1 << 1;
/// `user-unreserved`: "&" / "=" / "+" / "$" / "," / ";" / "?" / "/".
pub(crate) const USER_UNRESERVED: u16 = 1 << 2;
/// The extra characters of `password`: "&" / "=" / "+" / "$" / ",".
pub(crate) const PASSWORD_EXTRA: u16 = 1 << 3;
/// `param-unreserved`: "[" / "]" / "/" / ":" / "&" / "+" / "$".
pub(crate) const PARAM_UNRESERVED: u16 = 1 << 4;
/// `hnv-unreserved`: "[" / "]" / "/" / "?" / ":" / "+" / "$".
pub(crate) const HNV_UNRESERVED: u16 = 1 << 5;
/// Host name characters: alphanum, "-", "." (and "_", which RFC 1035 host names forbid
/// but real deployments send; accepting it costs nothing and refuses no one).
pub(crate) const HOST: u16 = 1 << 6;
/// `reserved` (";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","), the rest of
/// `uric` with `unreserved`; plus "[" and "]" for RFC 3986 IPv6 literals in other schemes.
pub(crate) const URIC: u16 = 1 << 7;
/// `scheme` characters after the first: ALPHA / DIGIT / "+" / "-" / ".".
pub(crate) const SCHEME: u16 = 1 << 8;
/// Unquoted generic-parameter values: `token` / `host` (with IPv6 references), plus ":"
/// so a bare IPv6 `received` value (RFC 3261 section 20.42 `IPv6address`) is accepted.
pub(crate) const GEN_VALUE: u16 = 1 << 9;

/// `DIGIT`.
pub(crate) const DIGIT: u16 = 1 << 10;

const fn build_classes() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let alnum = c.is_ascii_alphanumeric();
        let mut v = 0u16;
        if alnum {
            v |= TOKEN | UNRESERVED | HOST | URIC | SCHEME | GEN_VALUE;
        }
        if matches!(
            c,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        ) {
            v |= TOKEN | GEN_VALUE;
        }
        if matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        ) {
            v |= UNRESERVED | URIC;
        }
        if matches!(c, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            v |= USER_UNRESERVED;
        }
        if matches!(c, b'&' | b'=' | b'+' | b'$' | b',') {
            v |= PASSWORD_EXTRA;
        }
        if matches!(c, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            v |= PARAM_UNRESERVED;
        }
        if matches!(c, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            v |= HNV_UNRESERVED;
        }
        if matches!(c, b'-' | b'.' | b'_') {
            v |= HOST;
        }
        if matches!(
            c,
            b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b',' | b'[' | b']'
        ) {
            v |= URIC;
        }
        if matches!(c, b'+' | b'-' | b'.') {
            v |= SCHEME;
        }
        if matches!(c, b':' | b'[' | b']') {
            v |= GEN_VALUE;
        }
        if c.is_ascii_digit() {
            v |= DIGIT;
        }
        t[b] = v;
        b += 1;
    }
    t
}

static CLASSES: [u16; 256] = build_classes();

// The helpers below are plain index loops rather than iterator chains: the parser runs
// on every packet, and in debug builds (tests, the fuzz smoke test) generic iterator
// code is not optimised at all.

/// Whether byte `b` belongs to any of the classes in `class`.
#[inline(always)]
pub(crate) fn is(b: u8, class: u16) -> bool {
    CLASSES[usize::from(b)] & class != 0
}

/// Whether every byte of `s` is in `class` (true for an empty `s`).
#[inline]
pub(crate) fn all_in(s: &[u8], class: u16) -> bool {
    let mut i = 0;
    while i < s.len() {
        if !is(s[i], class) {
            return false;
        }
        i += 1;
    }
    true
}

/// Length of the prefix of `s` whose bytes are all in `class`.
#[inline]
pub(crate) fn span(s: &[u8], class: u16) -> usize {
    let mut i = 0;
    while i < s.len() && is(s[i], class) {
        i += 1;
    }
    i
}

/// A non-empty `token`.
#[inline]
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && all_in(s.as_bytes(), TOKEN)
}

#[inline(always)]
pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Position of the first `needle` byte. The standard library has no public `memchr` for
/// byte slices, but `BufRead::skip_until` on a `&[u8]` is one (it calls the platform's
/// `memchr`), which matters for scanning whole messages for line ends.
#[inline]
pub(crate) fn find_byte(s: &[u8], needle: u8) -> Option<usize> {
    use std::io::BufRead;
    let mut rest = s;
    // Reading from a slice cannot fail; `n` counts the delimiter when it was found.
    let n = rest.skip_until(needle).ok()?;
    match n.checked_sub(1) {
        Some(at) if s.get(at) == Some(&needle) => Some(at),
        _ => None,
    }
}

/// Position of the first byte that is one of `set` (a handful of ASCII bytes).
#[inline]
pub(crate) fn find_any(s: &[u8], set: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < s.len() {
        let mut j = 0;
        while j < set.len() {
            if s[i] == set[j] {
                return Some(i);
            }
            j += 1;
        }
        i += 1;
    }
    None
}

/// Trims SP and HTAB (not other Unicode whitespace: SIP's LWS is only those two).
#[inline]
pub(crate) fn trim_ws(s: &str) -> &str {
    trim_ws_end(trim_ws_start(s))
}

#[inline]
pub(crate) fn trim_ws_start(s: &str) -> &str {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    // SP and HTAB are ASCII, so `i` is a character boundary.
    s.get(i..).unwrap_or("")
}

#[inline]
pub(crate) fn trim_ws_end(s: &str) -> &str {
    let b = s.as_bytes();
    let mut e = b.len();
    while e > 0 && is_ws(b[e - 1]) {
        e -= 1;
    }
    s.get(..e).unwrap_or("")
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `s` is non-empty and every byte is in `class` or part of a valid `%HH`
/// escape (RFC 3261 section 25.1 `escaped`).
pub(crate) fn is_escaped_run(s: &str, class: u16) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                (Some(_), Some(_)) => i += 3,
                _ => return false,
            }
        } else if is(b[i], class) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Decodes every `%HH` escape (invalid escapes are kept as they are).
pub(crate) fn pct_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The form RFC 3261 section 19.1.4 compares: an escaped `unreserved` character equals
/// the character itself, while an escaped reserved character stays distinct from the
/// unescaped one. Escapes of everything else are kept with upper-case hex digits.
/// Borrowed when there is no `%` at all (the common case).
pub(crate) fn canonical_escapes(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                let v = h << 4 | l;
                if v.is_ascii() && is(v, UNRESERVED) {
                    out.push(char::from(v));
                } else {
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
                continue;
            }
        }
        // Copy one whole UTF-8 character.
        let ch_len = utf8_len(b[i]);
        let end = (i + ch_len).min(b.len());
        out.push_str(s.get(i..end).unwrap_or(""));
        i = end.max(i + 1);
    }
    Cow::Owned(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xFF => 4,
        _ => 1,
    }
}

/// Given `s[start] == '"'`, the index just past the closing quote of the `quoted-string`
/// (RFC 3261 section 25.1: `qdtext` / `quoted-pair`), or `None` if it is unterminated or
/// holds a raw control character.
pub(crate) fn quoted_end(s: &str, start: usize) -> Option<usize> {
    let b = s.as_bytes();
    debug_assert_eq!(b.get(start), Some(&b'"'));
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some(i + 1),
            // quoted-pair: "\" followed by any of %x00-09 / %x0B-0C / %x0E-7F.
            b'\\' => match b.get(i + 1) {
                Some(&c) if c < 0x80 && c != b'\r' && c != b'\n' => i += 2,
                _ => return None,
            },
            b'\t' => i += 1,
            c if c < 0x20 || c == 0x7F => return None,
            _ => i += 1,
        }
    }
    None
}

/// Removes the surrounding quotes of a quoted-string and resolves its quoted-pairs;
/// anything else is returned unchanged.
pub(crate) fn unquote(s: &str) -> Cow<'_, str> {
    let inner = match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if s.len() >= 2 => inner,
        _ => return Cow::Borrowed(s),
    };
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Splits `s` at `sep` where it is outside a quoted-string and outside `<...>`, yielding
/// each piece trimmed of SP/HTAB (empty pieces included, so callers can refuse them).
/// This is how one header line holding several values is taken apart (RFC 3261 section
/// 7.3.1: a comma-separated list is equivalent to several lines).
pub(crate) fn split_top(s: &str, sep: u8) -> TopSplit<'_> {
    TopSplit {
        s,
        pos: 0,
        done: false,
        sep,
    }
}

pub(crate) struct TopSplit<'a> {
    s: &'a str,
    pos: usize,
    done: bool,
    sep: u8,
}

impl<'a> Iterator for TopSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        let mut quoted = false;
        let mut angle = false;
        while i < b.len() {
            let c = b[i];
            if quoted {
                match c {
                    b'\\' => i += 1,
                    b'"' => quoted = false,
                    _ => {}
                }
            } else {
                match c {
                    b'"' => quoted = true,
                    b'<' => angle = true,
                    b'>' => angle = false,
                    c if c == self.sep && !angle => {
                        self.pos = i + 1;
                        return Some(trim_ws(self.s.get(start..i).unwrap_or("")));
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        self.done = true;
        Some(trim_ws(self.s.get(start..).unwrap_or("")))
    }
}

/// Position of the first `needle` byte outside quoted-strings and `<...>`.
pub(crate) fn find_top(s: &str, needle: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut quoted = false;
    let mut angle = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if quoted {
            match c {
                b'\\' => i += 1,
                b'"' => quoted = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => quoted = true,
                b'<' => angle = true,
                b'>' => angle = false,
                c if c == needle && !angle => return Some(i),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// Walks `*( SEMI generic-param )` (RFC 3261 section 25.1: `SEMI = SWS ";" SWS`,
/// `generic-param = token [ EQUAL gen-value ]`, `gen-value = token / host /
/// quoted-string`), calling `f(name, value)` for each; the value keeps its quotes. `s`
/// must be empty or start (after optional whitespace) with `;`. Returns `Err` on any
/// deviation: empty parameters (`;;`), a missing value after `=`, stray text.
pub(crate) fn for_each_param<'a>(
    s: &'a str,
    mut f: impl FnMut(&'a str, Option<&'a str>),
) -> Result<(), ()> {
    let b = s.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && is_ws(b[*i]) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            return Ok(());
        }
        if b[i] != b';' {
            return Err(());
        }
        i += 1;
        skip_ws(&mut i);
        let ns = i;
        while i < b.len() && is(b[i], TOKEN) {
            i += 1;
        }
        if i == ns {
            return Err(());
        }
        let name = s.get(ns..i).ok_or(())?;
        skip_ws(&mut i);
        if i < b.len() && b[i] == b'=' {
            i += 1;
            skip_ws(&mut i);
            let vs = i;
            if i < b.len() && b[i] == b'"' {
                i = quoted_end(s, i).ok_or(())?;
            } else {
                while i < b.len() && is(b[i], GEN_VALUE) {
                    i += 1;
                }
                if i == vs {
                    return Err(());
                }
            }
            f(name, Some(s.get(vs..i).ok_or(())?));
        } else {
            f(name, None);
        }
    }
}

/// Validates a `host` (RFC 3261 section 25.1): an IPv6 reference `[...]` (checked with
/// the standard library's address parser), or a host name / IPv4 address made of
/// alphanumerics, "-", "." and "_", not starting with "." or "-" and without "..".
pub(crate) fn is_host(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(addr) => addr.parse::<std::net::Ipv6Addr>().is_ok(),
            None => false,
        };
    }
    let b = s.as_bytes();
    if b.is_empty() || b[0] == b'.' || b[0] == b'-' || !all_in(b, HOST) {
        return false;
    }
    let mut i = 1;
    while i < b.len() {
        if b[i] == b'.' && b[i - 1] == b'.' {
            return false;
        }
        i += 1;
    }
    true
}

/// Parses `1*DIGIT` into a `u64`, `None` when empty, non-digit or overflowing.
pub(crate) fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut v: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b[i] - b'0'))?;
        i += 1;
    }
    Some(v)
}

/// 64-bit FNV-1a: a stable, dependency-free hash for deriving tags from a Call-ID.
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_abnf() {
        assert!(is_token("!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token("a b"));
        assert!(!is_token(""));
        assert!(is_escaped_run(
            "null-%00-null",
            UNRESERVED | USER_UNRESERVED
        ));
        assert!(!is_escaped_run("%Z1", UNRESERVED));
        assert!(!is_escaped_run("a%4", UNRESERVED));
        assert!(!is_escaped_run("a%", UNRESERVED));
    }

    #[test]
    fn quoted_strings_and_splitting() {
        let s = r#""J Rosenberg \\\"" <sip:a@b>"#;
        assert_eq!(quoted_end(s, 0), Some(18));
        assert_eq!(quoted_end("\"abc", 0), None);
        assert_eq!(unquote(r#""a\"b""#), "a\"b");
        let parts: Vec<_> = split_top(r#"a, "b,c" <d,e>;x="1,2" , f"#, b',').collect();
        assert_eq!(parts, vec!["a", r#""b,c" <d,e>;x="1,2""#, "f"]);
        let parts: Vec<_> = split_top("", b',').collect();
        assert_eq!(parts, vec![""]);
    }

    #[test]
    fn generic_params() {
        let mut got = Vec::new();
        for_each_param(" ;  tag    = 1918181833n ; lr;x=\"a;b\"", |n, v| {
            got.push((n, v))
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("tag", Some("1918181833n")),
                ("lr", None),
                ("x", Some("\"a;b\""))
            ]
        );
        assert!(for_each_param(";;", |_, _| {}).is_err());
        assert!(for_each_param(";a=", |_, _| {}).is_err());
        assert!(for_each_param("x", |_, _| {}).is_err());
        assert!(for_each_param("", |_, _| {}).is_ok());
    }

    #[test]
    fn byte_search() {
        assert_eq!(find_byte(b"", b'a'), None);
        assert_eq!(find_byte(b"a", b'a'), Some(0));
        assert_eq!(find_byte(b"xxa", b'a'), Some(2));
        assert_eq!(find_byte(b"xxx", b'a'), None);
        assert_eq!(find_byte(b"xaxa", b'a'), Some(1));
        assert_eq!(find_any(b"host:5060;x", b";:"), Some(4));
        assert_eq!(find_any(b"host", b";:"), None);
    }

    #[test]
    fn canonical_escape_forms() {
        assert_eq!(canonical_escapes("%61lice"), "alice");
        assert_eq!(canonical_escapes("a%3bb"), "a%3Bb");
        assert_eq!(canonical_escapes("plain"), "plain");
    }
}
