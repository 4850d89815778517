//! JIDs (RFC 7622): `[localpart@]domainpart[/resourcepart]`.
//!
//! CONTRACT (implemented by the parser work; keep the public signatures, add freely).
//! Parts are normalised as RFC 7622 asks in the practical subset servers apply:
//! localpart case-folded (UsernameCaseMapped profile: lower-case, no spaces or the
//! characters `"&'/:<>@`), domainpart lower-cased without a trailing dot (IDNA for ASCII
//! labels; non-ASCII domains lower-cased), resourcepart kept as is (OpaqueString: no
//! control characters); each part 1..=1023 bytes.

use std::fmt;

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
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let _ = s;
        unimplemented!("parser")
    }
    /// Builds from parts (validated and normalised like `parse`).
    pub fn from_parts(
        node: Option<&str>,
        domain: &str,
        resource: Option<&str>,
    ) -> Result<Jid, JidError> {
        let _ = (node, domain, resource);
        unimplemented!("parser")
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
