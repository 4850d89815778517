//! Byte-level pieces of the XML grammar the stream parser needs (XML 1.0 fifth edition,
//! Namespaces in XML 1.0): names, references, attribute values, character data checks,
//! start tags and the XML declaration. Everything works on complete slices; deciding
//! whether enough bytes are there is the caller's job, except for references, whose
//! length is only known once read ([`reference`] says "not yet").

use super::XmlError;

/// `http://www.w3.org/XML/1998/namespace`, bound to the `xml` prefix by definition
/// (Namespaces in XML 1.0 section 3).
pub(super) const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// `http://www.w3.org/2000/xmlns/`, which no prefix may be bound to.
pub(super) const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// The longest reference waited for. XML allows any number of leading zeros in a
/// character reference, but no sender needs them: a reference still open after this many
/// bytes is refused rather than buffered.
pub(super) const MAX_REFERENCE_BYTES: usize = 32;

pub(super) fn not_well_formed(why: impl Into<String>) -> XmlError {
    XmlError::NotWellFormed(why.into())
}

/// XML `S` (production 3): the four whitespace characters.
pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// U+FFFE and U+FFFF (UTF-8 `EF BF BE` and `EF BF BF`) are not XML `Char`s (production 2).
fn is_noncharacter(b: &[u8]) -> bool {
    b.len() >= 3 && b[0] == 0xEF && b[1] == 0xBF && (b[2] == 0xBE || b[2] == 0xBF)
}

/// XML `Char` (production 2) for a decoded character reference.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `NameStartChar` (production 4) without `:`, which namespaces reserve for QNames.
fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// `NameChar` (production 4a) without `:`.
fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// Reads a QName (Namespaces in XML production 7: `NCName (':' NCName)?`) starting at
/// byte `start` of `s`; returns where it ends. Stops at the first byte that cannot be in a
/// name; the caller checks what comes next.
pub(super) fn qname_end(s: &str, start: usize) -> Result<usize, XmlError> {
    let b = s.as_bytes();
    let mut i = start;
    let mut segment_start = start;
    let mut colon = false;
    while i < b.len() {
        let c = b[i];
        if c == b':' {
            if colon || i == segment_start {
                return Err(not_well_formed("malformed qualified name"));
            }
            colon = true;
            i += 1;
            segment_start = i;
            continue;
        }
        let (ch, len) = if c < 0x80 {
            (c as char, 1)
        } else {
            match s[i..].chars().next() {
                Some(ch) => (ch, ch.len_utf8()),
                None => break,
            }
        };
        let ok = if i == segment_start {
            is_name_start(ch)
        } else {
            is_name_char(ch)
        };
        if !ok {
            break;
        }
        i += len;
    }
    if i == segment_start {
        return Err(not_well_formed(if i == start {
            "expected a name"
        } else {
            "malformed qualified name"
        }));
    }
    Ok(i)
}

/// What a reference (`&...;`) at the start of a slice stands for.
///
/// `Ok(None)`: the slice ends before the reference does and nothing seen so far decides
/// (at most [`MAX_REFERENCE_BYTES`] are waited for). The five predefined entities
/// (XML section 4.6) and character references to XML `Char`s are the only ones XMPP
/// allows (RFC 6120 section 11.1): any other entity reference is `restricted-xml`,
/// whatever its name, and is never looked up.
pub(super) fn reference(b: &[u8]) -> Result<Option<(usize, char)>, XmlError> {
    debug_assert_eq!(b.first(), Some(&b'&'));
    let limit = b.len().min(MAX_REFERENCE_BYTES);
    let is_char_ref = b.get(1) == Some(&b'#');
    let body_start = if is_char_ref { 2 } else { 1 };
    // Decide on the first byte that cannot be in the reference, or on its ';'.
    let mut end = None;
    for (i, &c) in b.iter().enumerate().take(limit).skip(body_start) {
        if c == b';' {
            end = Some(i);
            break;
        }
        let fits = if is_char_ref {
            c.is_ascii_hexdigit() || (i == 2 && c == b'x')
        } else {
            c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':') || c >= 0x80
        };
        if !fits {
            return Err(not_well_formed("malformed reference"));
        }
    }
    let Some(end) = end else {
        if b.len() < MAX_REFERENCE_BYTES {
            return Ok(None);
        }
        return Err(if is_char_ref {
            not_well_formed("character reference too long")
        } else {
            XmlError::Restricted("entity reference (RFC 6120 section 11.1)".into())
        });
    };
    let body = &b[body_start..end];
    if is_char_ref {
        let (digits, radix) = match body.strip_prefix(b"x") {
            Some(hex) => (hex, 16),
            None => (body, 10),
        };
        if digits.is_empty() {
            return Err(not_well_formed("empty character reference"));
        }
        let mut value: u32 = 0;
        for &d in digits {
            let digit = (d as char)
                .to_digit(radix)
                .ok_or_else(|| not_well_formed("malformed character reference"))?;
            // Saturates above the Unicode range, which is refused below anyway.
            value = value
                .saturating_mul(radix)
                .saturating_add(digit)
                .min(0x11_0000);
        }
        return match char::from_u32(value) {
            Some(c) if is_xml_char(c) => Ok(Some((end + 1, c))),
            _ => Err(not_well_formed(
                "character reference to a character XML forbids",
            )),
        };
    }
    let c = match body {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"quot" => '"',
        b"apos" => '\'',
        [] => return Err(not_well_formed("empty entity reference")),
        [first, ..] if first.is_ascii_digit() || matches!(first, b'-' | b'.') => {
            return Err(not_well_formed("malformed entity reference"))
        }
        _ => {
            let name = String::from_utf8_lossy(body);
            return Err(XmlError::Restricted(format!(
                "entity reference &{name}; (RFC 6120 section 11.1)"
            )));
        }
    };
    Ok(Some((end + 1, c)))
}

/// Checks raw character data (text or CDATA content, known to be UTF-8): no control
/// character but tab, line feed and carriage return, no U+FFFE/U+FFFF; in text (not
/// CDATA), no `]]>` (XML production 14).
pub(super) fn check_chars(b: &[u8], is_text: bool) -> Result<(), XmlError> {
    for (i, &c) in b.iter().enumerate() {
        if c < 0x20 {
            if !matches!(c, b'\t' | b'\n' | b'\r') {
                return Err(not_well_formed("control character"));
            }
        } else if c == b'>' {
            if is_text && i >= 2 && b[i - 1] == b']' && b[i - 2] == b']' {
                return Err(not_well_formed("']]>' in text"));
            }
        } else if c == 0xEF && is_noncharacter(&b[i..]) {
            return Err(not_well_formed("U+FFFE or U+FFFF"));
        }
    }
    Ok(())
}

/// Appends `s` with line ends normalised (XML section 2.11: CR LF and a lone CR become
/// LF). The caller never splits a CR LF pair between two calls.
pub(super) fn push_normalized(out: &mut String, s: &str) {
    let mut rest = s;
    while let Some(i) = rest.find('\r') {
        out.push_str(&rest[..i]);
        out.push('\n');
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('\n') {
            rest = after;
        }
    }
    out.push_str(rest);
}

/// An attribute value, unescaped and normalised as XML section 3.3.3 asks for CDATA
/// attributes: references replaced, each literal whitespace character (and each CR LF
/// pair) becomes a space; characters from references are kept as they are.
fn attr_value(raw: &str) -> Result<String, XmlError> {
    let b = raw.as_bytes();
    if !b
        .iter()
        .any(|&c| c < 0x20 || c == b'&' || c == b'<' || c == 0xEF)
    {
        return Ok(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' => return Err(not_well_formed("'<' in an attribute value")),
            b'&' => {
                out.push_str(&raw[run..i]);
                let (len, c) =
                    reference(&b[i..])?.ok_or_else(|| not_well_formed("unterminated reference"))?;
                out.push(c);
                i += len;
                run = i;
            }
            b'\t' | b'\n' | b'\r' => {
                out.push_str(&raw[run..i]);
                out.push(' ');
                i += if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                run = i;
            }
            c if c < 0x20 => return Err(not_well_formed("control character")),
            0xEF if is_noncharacter(&b[i..]) => return Err(not_well_formed("U+FFFE or U+FFFF")),
            _ => i += 1,
        }
    }
    out.push_str(&raw[run..]);
    Ok(out)
}

/// A start tag read from its `<` to its `>`: raw QName, attributes in document order
/// (names as written, values unescaped), and whether it was an empty-element tag.
#[derive(Debug)]
pub(super) struct StartTag<'a> {
    pub qname: &'a str,
    pub attrs: Vec<(String, String)>,
    pub empty: bool,
}

/// Parses a complete start tag (XML productions 40 and 44). Attribute names must be
/// unique as written (XML WFC "Unique Att Spec"); more than `max_attrs` attributes,
/// namespace declarations included, is a policy violation.
pub(super) fn start_tag(s: &str, max_attrs: usize) -> Result<StartTag<'_>, XmlError> {
    let b = s.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut i = qname_end(s, 1)?;
    let qname = &s[1..i];
    let mut attrs: Vec<(String, String)> = Vec::new();
    loop {
        let before_ws = i;
        while is_ws(at(i)) {
            i += 1;
        }
        match at(i) {
            b'>' if i + 1 == b.len() => {
                return Ok(StartTag {
                    qname,
                    attrs,
                    empty: false,
                })
            }
            b'/' if at(i + 1) == b'>' && i + 2 == b.len() => {
                return Ok(StartTag {
                    qname,
                    attrs,
                    empty: true,
                })
            }
            _ if i == before_ws => {
                return Err(not_well_formed("expected whitespace, '>' or '/>' in a tag"))
            }
            _ => {}
        }
        let name_start = i;
        i = qname_end(s, i)?;
        let name = &s[name_start..i];
        while is_ws(at(i)) {
            i += 1;
        }
        if at(i) != b'=' {
            return Err(not_well_formed("expected '=' after an attribute name"));
        }
        i += 1;
        while is_ws(at(i)) {
            i += 1;
        }
        let quote = at(i);
        if quote != b'"' && quote != b'\'' {
            return Err(not_well_formed("unquoted attribute value"));
        }
        let value_start = i + 1;
        let value_end = b[value_start..]
            .iter()
            .position(|&c| c == quote)
            .map(|p| value_start + p)
            .ok_or_else(|| not_well_formed("unterminated attribute value"))?;
        let value = attr_value(&s[value_start..value_end])?;
        i = value_end + 1;
        if attrs.len() == max_attrs {
            return Err(XmlError::PolicyViolation(format!(
                "more than {max_attrs} attributes on an element"
            )));
        }
        if attrs.iter().any(|(n, _)| n == name) {
            return Err(not_well_formed(format!("duplicate attribute {name}")));
        }
        attrs.push((name.to_string(), value));
    }
}

/// Checks the inside of an XML declaration (`<?xml` and `?>` removed; XML production 23):
/// `version` (1.x), then optional `encoding` and `standalone`, in that order. Any
/// encoding but UTF-8 is `unsupported-encoding` (RFC 6120 section 11.6).
pub(super) fn xml_declaration(s: &str) -> Result<(), XmlError> {
    const NAMES: [&str; 3] = ["version", "encoding", "standalone"];
    let malformed = || not_well_formed("malformed XML declaration");
    let mut rest = s;
    let mut next = 0;
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        if trimmed.len() == rest.len() {
            return Err(malformed());
        }
        let (name, after) = trimmed.split_once('=').ok_or_else(malformed)?;
        let name = name.trim_end_matches([' ', '\t', '\r', '\n']);
        let after = after.trim_start_matches([' ', '\t', '\r', '\n']);
        let quote = after.chars().next().filter(|&q| q == '"' || q == '\'');
        let quote = quote.ok_or_else(malformed)?;
        let (value, remaining) = after[1..].split_once(quote).ok_or_else(malformed)?;
        let index = NAMES[next..]
            .iter()
            .position(|&n| n == name)
            .ok_or_else(malformed)?
            + next;
        if next == 0 && index != 0 {
            return Err(malformed());
        }
        match index {
            0 => {
                let minor = value.strip_prefix("1.").ok_or_else(malformed)?;
                if minor.is_empty() || !minor.bytes().all(|d| d.is_ascii_digit()) {
                    return Err(malformed());
                }
            }
            1 => {
                if !value.eq_ignore_ascii_case("UTF-8") {
                    return Err(XmlError::UnsupportedEncoding(format!(
                        "encoding {value:?} (RFC 6120 section 11.6)"
                    )));
                }
            }
            _ => {
                if value != "yes" && value != "no" {
                    return Err(malformed());
                }
            }
        }
        next = index + 1;
        rest = remaining;
    }
    if next == 0 {
        return Err(malformed());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(r: Result<impl std::fmt::Debug, XmlError>) -> &'static str {
        r.err().map_or("ok", |e| e.condition())
    }

    #[test]
    fn references() {
        assert_eq!(reference(b"&amp;x").unwrap(), Some((5, '&')));
        assert_eq!(reference(b"&apos;").unwrap(), Some((6, '\'')));
        assert_eq!(reference(b"&#x41;").unwrap(), Some((6, 'A')));
        assert_eq!(reference(b"&#65;").unwrap(), Some((5, 'A')));
        assert_eq!(reference(b"&#x1F600;").unwrap(), Some((9, '\u{1F600}')));
        assert_eq!(reference(b"&#xD;").unwrap(), Some((5, '\r')));
        assert_eq!(reference(b"&am").unwrap(), None);
        assert_eq!(reference(b"&").unwrap(), None);
        assert_eq!(reference(b"&#x").unwrap(), None);
        for (input, want) in [
            (&b"&foo;"[..], "restricted-xml"),
            (b"&lol9;", "restricted-xml"),
            (b"&\xc3\xa9;", "restricted-xml"),
            (b"&#0;", "not-well-formed"),
            (b"&#x1;", "not-well-formed"),
            (b"&#xFFFE;", "not-well-formed"),
            (b"&#xD800;", "not-well-formed"),
            (b"&#x110000;", "not-well-formed"),
            (b"&#99999999999999999999;", "not-well-formed"),
            (b"&#;", "not-well-formed"),
            (b"&#x;", "not-well-formed"),
            (b"&#12a;", "not-well-formed"),
            (b"&;", "not-well-formed"),
            (b"& amp;", "not-well-formed"),
            (b"&amp ", "not-well-formed"),
            (b"&1x;", "not-well-formed"),
            (b"&#x0000000000000000000000000000041;", "not-well-formed"),
            (
                b"&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "restricted-xml",
            ),
        ] {
            assert_eq!(
                condition(reference(input)),
                want,
                "{}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn qnames() {
        assert_eq!(qname_end("<a>", 1), Ok(2));
        assert_eq!(qname_end("<stream:stream ", 1), Ok(14));
        assert_eq!(qname_end("<é·x-1.2>", 1), Ok(10));
        for bad in ["<:a>", "<a:>", "<a:b:c>", "<1a>", "<a:1b>", "< a>", "<>"] {
            assert!(qname_end(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn attribute_values_are_unescaped_and_normalised() {
        let tag = start_tag(
            "<a x='1 &lt;2&#x9;' y=\"a\tb\r\nc\rd\" z='&quot;&apos;'/>",
            8,
        )
        .unwrap();
        assert!(tag.empty);
        assert_eq!(
            tag.attrs,
            [
                ("x".to_string(), "1 <2\t".to_string()),
                ("y".to_string(), "a b c d".to_string()),
                ("z".to_string(), "\"'".to_string()),
            ]
        );
        for bad in [
            "<a x='1'y='2'>",
            "<a x='1' x='2'>",
            "<a x=1>",
            "<a x>",
            "<a x='<'>",
            "<a x='&'>",
            "<a x='\u{1}'>",
            "<a/ >",
            "<a / >",
        ] {
            assert_eq!(condition(start_tag(bad, 8)), "not-well-formed", "{bad}");
        }
        assert_eq!(condition(start_tag("<a x='&ent;'>", 8)), "restricted-xml");
        assert_eq!(
            condition(start_tag("<a b='' c='' d=''>", 2)),
            "policy-violation"
        );
    }

    #[test]
    fn xml_declarations() {
        for good in [
            " version='1.0'",
            " version=\"1.0\" encoding='utf-8'",
            " version='1.1' encoding='UTF-8' standalone='yes' ",
            " version = '1.0' standalone='no'",
        ] {
            assert_eq!(xml_declaration(good), Ok(()), "{good}");
        }
        for (bad, want) in [
            ("", "not-well-formed"),
            (" encoding='UTF-8'", "not-well-formed"),
            (" version='2.0'", "not-well-formed"),
            (" version='1.0'encoding='UTF-8'", "not-well-formed"),
            (
                " version='1.0' standalone='yes' encoding='UTF-8'",
                "not-well-formed",
            ),
            (" version='1.0' version='1.0'", "not-well-formed"),
            (
                " version='1.0' encoding='ISO-8859-1'",
                "unsupported-encoding",
            ),
            (" version='1.0' encoding='UTF-16'", "unsupported-encoding"),
        ] {
            assert_eq!(condition(xml_declaration(bad)), want, "{bad}");
        }
    }
}
