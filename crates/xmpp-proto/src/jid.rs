//! JIDs (RFC 7622): `[localpart@]domainpart[/resourcepart]`.
//!
//! Parts are normalised as RFC 7622 asks in the practical subset servers apply:
//! localpart case-folded (UsernameCaseMapped profile: lower-case, no spaces or the
//! characters `"&'/:<>@`), domainpart lower-cased without a trailing dot (IDNA for ASCII
//! labels; non-ASCII domains lower-cased), resourcepart kept as is (OpaqueString: no
//! control characters); each part 1..=1023 bytes.

use std::fmt;
use std::net::Ipv6Addr;

/// Each part is 1 to 1023 octets once prepared (RFC 7622 sections 3.2, 3.3 and 3.4).
pub const MAX_PART_BYTES: usize = 1023;

/// A DNS label is at most 63 octets (RFC 1035 section 2.3.4), which IDNA2008 keeps for
/// the A-labels RFC 7622 section 3.2 applies to ASCII domainparts.
const MAX_LABEL_BYTES: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JID: {0}")]
pub struct JidError(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    node: Option<String>,
    domain: String,
    resource: Option<String>,
}

impl Jid {
    /// Splits as RFC 7622 section 3.1 says: the resourcepart is everything after the first
    /// `/` (it may itself hold `/` and `@`), the localpart everything before the first `@`
    /// of what remains; then each part is validated and normalised. `a@b@c` is refused
    /// (its domainpart `b@c` holds an `@`), as is any empty part (`@b`, `a@`, `b/`).
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let (bare, resource) = match s.split_once('/') {
            Some((bare, resource)) => (bare, Some(resource)),
            None => (s, None),
        };
        let (node, domain) = match bare.split_once('@') {
            Some((node, domain)) => (Some(node), domain),
            None => (None, bare),
        };
        Jid::from_parts(node, domain, resource)
    }
    /// Builds from parts (validated and normalised like `parse`).
    pub fn from_parts(
        node: Option<&str>,
        domain: &str,
        resource: Option<&str>,
    ) -> Result<Jid, JidError> {
        Ok(Jid {
            node: node.map(localpart).transpose()?,
            domain: domainpart(domain)?,
            resource: resource.map(resourcepart).transpose()?,
        })
    }
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }
    pub fn domain(&self) -> &str {
        &self.domain
    }
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }
    pub fn is_bare(&self) -> bool {
        self.resource.is_none()
    }
    /// Without the resource.
    pub fn bare(&self) -> Jid {
        Jid {
            node: self.node.clone(),
            domain: self.domain.clone(),
            resource: None,
        }
    }
    /// Same JID with `resource` (validated).
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        Jid::from_parts(self.node.as_deref(), &self.domain, Some(resource))
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.node {
            write!(f, "{n}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Jid, JidError> {
        Jid::parse(s)
    }
}

fn error(part: &str, why: &str, value: &str) -> JidError {
    let shown: String = value.chars().take(64).collect();
    JidError(format!("{part} {why}: {shown:?}"))
}

fn check_length(part: &str, value: &str) -> Result<(), JidError> {
    if value.is_empty() {
        return Err(error(part, "is empty", value));
    }
    if value.len() > MAX_PART_BYTES {
        return Err(error(part, "is longer than 1023 bytes", value));
    }
    Ok(())
}

/// The localpart as the UsernameCaseMapped profile prepares it (RFC 7622 section 3.3,
/// RFC 8265 section 3.3), in the subset that needs no Unicode tables: case-folded with
/// `to_lowercase`, and refused when it holds a space or other whitespace, a control
/// character, or one of the characters RFC 7622 section 3.3.1 forbids (`"&'/:<>@`).
/// Unicode normalisation (NFC) is not applied: input is taken as already normalised, as
/// clients send it.
fn localpart(node: &str) -> Result<String, JidError> {
    let folded = if node.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
        node.to_lowercase()
    } else {
        node.to_string()
    };
    check_length("localpart", &folded)?;
    let forbidden = |c: char| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@')
    };
    if let Some(c) = folded.chars().find(|&c| forbidden(c)) {
        return Err(error("localpart", &format!("holds forbidden {c:?}"), node));
    }
    Ok(folded)
}

/// The domainpart (RFC 7622 section 3.2): an IPv6 literal in brackets (kept in its
/// canonical RFC 5952 text form), or a host name without its one optional trailing dot
/// (section 3.2 step 1), lower-cased. ASCII labels follow the LDH rule IDNA2008 applies
/// to them (letters, digits, hyphens, not at either end, 1 to 63 octets); non-ASCII
/// labels (U-labels) are lower-cased and only checked for whitespace, control characters
/// and the separators that cannot be in a domain name, since a full IDNA2008 check needs
/// Unicode tables this crate does not carry. IPv4 addresses pass as digit labels.
fn domainpart(domain: &str) -> Result<String, JidError> {
    if let Some(inner) = domain.strip_prefix('[') {
        let literal = inner
            .strip_suffix(']')
            .and_then(|ip| ip.parse::<Ipv6Addr>().ok())
            .ok_or_else(|| error("domainpart", "is not a valid IPv6 literal", domain))?;
        return Ok(format!("[{literal}]"));
    }
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    let lowered = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        trimmed.to_lowercase()
    };
    check_length("domainpart", &lowered)?;
    for label in lowered.split('.') {
        if label.is_empty() {
            return Err(error("domainpart", "has an empty label", domain));
        }
        if label.is_ascii() {
            let ldh = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ldh || label.starts_with('-') || label.ends_with('-') {
                return Err(error("domainpart", "has a label that is not LDH", domain));
            }
            if label.len() > MAX_LABEL_BYTES {
                return Err(error("domainpart", "has a label over 63 bytes", domain));
            }
        } else if label.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '@' | '/' | '[' | ']' | ':' | '\\')
        }) {
            return Err(error("domainpart", "holds a forbidden character", domain));
        }
    }
    Ok(lowered)
}

/// The resourcepart (RFC 7622 section 3.4, OpaqueString profile): kept as it is (no case
/// mapping: `Home` and `home` are two resources), refused when it holds a control
/// character.
fn resourcepart(resource: &str) -> Result<String, JidError> {
    check_length("resourcepart", resource)?;
    if resource.chars().any(char::is_control) {
        return Err(error("resourcepart", "holds a control character", resource));
    }
    Ok(resource.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parts_are_split_as_rfc_7622_section_3_1_says() {
        let j = jid("juliet@example.com/balcony");
        assert_eq!(
            (j.node(), j.domain(), j.resource()),
            (Some("juliet"), "example.com", Some("balcony"))
        );
        let j = jid("example.com");
        assert_eq!(
            (j.node(), j.domain(), j.resource()),
            (None, "example.com", None)
        );
        assert!(j.is_bare());
        // The resource takes everything after the first '/', '@' and '/' included.
        let j = jid("juliet@example.com/foo@bar/baz");
        assert_eq!(j.resource(), Some("foo@bar/baz"));
        assert_eq!(j.node(), Some("juliet"));
        let j = jid("example.com/a@b");
        assert_eq!((j.node(), j.resource()), (None, Some("a@b")));
    }

    #[test]
    fn parts_are_normalised() {
        let j = jid("JuLiet@Example.COM./Balcony");
        assert_eq!(j.to_string(), "juliet@example.com/Balcony");
        assert_eq!(
            jid("ÄLICE@Bücher.example").to_string(),
            "älice@bücher.example"
        );
        assert_eq!(jid("[::1]").domain(), "[::1]");
        assert_eq!(jid("a@[0:0:0:0:0:0:0:1]/r").domain(), "[::1]");
        assert_eq!(jid("a@[2001:DB8::1]").domain(), "[2001:db8::1]");
        assert_eq!(jid("a@192.0.2.1").domain(), "192.0.2.1");
        assert_eq!(
            jid("x@xn--bcher-kva.example").domain(),
            "xn--bcher-kva.example"
        );
        assert_eq!(jid("a@b/Home"), jid("A@B/Home"));
        assert_ne!(jid("a@b/Home"), jid("a@b/home"));
    }

    #[test]
    fn invalid_jids_are_refused() {
        let cases = [
            "",
            "@",
            "@example.com",
            "juliet@",
            "juliet@example.com/",
            "/resource",
            "a@b@c",
            "jul iet@example.com",
            "jul\"iet@example.com",
            "jul&iet@example.com",
            "jul'iet@example.com",
            "jul:iet@example.com",
            "jul<iet@example.com",
            "jul>iet@example.com",
            "jul\u{7}iet@example.com",
            "juliet@example.com/bal\u{0}cony",
            "juliet@example.com/bal\ncony",
            "juliet@example.com/\u{85}",
            "juliet@exa mple.com",
            "juliet@example..com",
            "juliet@.example.com",
            "juliet@example.com..",
            "juliet@exa_mple.com",
            "juliet@-example.com",
            "juliet@example-.com",
            "juliet@[::1",
            "juliet@[not-an-ip]",
            "juliet@[192.0.2.1]",
            "juliet@bü cher.example",
        ];
        for case in cases {
            assert!(Jid::parse(case).is_err(), "{case:?} parsed");
        }
        let long = "a".repeat(1024);
        for too_long in [
            format!("{long}@example.com"),
            format!("a@{}.example", "b.".repeat(512)),
            format!("a@example.com/{long}"),
            format!("a@{}.example", "b".repeat(64)),
        ] {
            assert!(Jid::parse(&too_long).is_err(), "{} bytes", too_long.len());
        }
        // Exactly at the limits.
        let node = "a".repeat(1023);
        let resource = "r".repeat(1023);
        let j = jid(&format!("{node}@example.com/{resource}"));
        assert_eq!(j.node().map(str::len), Some(1023));
        assert_eq!(j.resource().map(str::len), Some(1023));
        assert_eq!(
            jid(&format!("a@{}.example", "b".repeat(63))).domain().len(),
            71
        );
    }

    #[test]
    fn from_parts_validates_like_parse() {
        let j = Jid::from_parts(Some("Romeo"), "Example.net", Some("orchard")).unwrap();
        assert_eq!(j, jid("romeo@example.net/orchard"));
        assert_eq!(j.bare(), jid("romeo@example.net"));
        assert_eq!(
            j.bare().with_resource("x").unwrap(),
            jid("romeo@example.net/x")
        );
        assert!(Jid::from_parts(Some(""), "example.net", None).is_err());
        assert!(Jid::from_parts(Some("a@b"), "example.net", None).is_err());
        assert!(Jid::from_parts(None, "example.net/x", None).is_err());
        assert!(Jid::from_parts(None, "", None).is_err());
        assert!(j.with_resource("").is_err());
        assert!(j.with_resource("a\u{1b}b").is_err());
        assert_eq!("a@b/c".parse::<Jid>().unwrap().to_string(), "a@b/c");
    }
}
