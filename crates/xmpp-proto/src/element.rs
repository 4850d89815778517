//! XML elements as stanzas are handled: a small owned tree with resolved namespaces.
//!
//! CONTRACT (implemented by the parser work; keep the public signatures, add freely).

/// Namespaces used everywhere (RFC 6120 section 4.8, RFC 6121).
pub mod ns {
    pub const CLIENT: &str = "jabber:client";
    pub const SERVER: &str = "jabber:server";
    pub const STREAM: &str = "http://etherx.jabber.org/streams";
    pub const STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
    pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
    pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
    pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
    pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
    pub const ROSTER: &str = "jabber:iq:roster";
}

/// An element: local name, resolved namespace URI, attributes (namespaced ones such as
/// `xml:lang` keep their `prefix:` form), children in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub ns: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Element {
        Element {
            name: name.to_string(),
            ns: ns.to_string(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }
    /// Builder: with attribute `name` = `value`.
    pub fn attr(mut self, name: &str, value: &str) -> Element {
        self.set_attr(name, value);
        self
    }
    /// Builder: with a child element.
    pub fn child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }
    /// Builder: with a text node.
    pub fn text_node(mut self, text: &str) -> Element {
        self.children.push(Node::Text(text.to_string()));
        self
    }
    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn set_attr(&mut self, name: &str, value: &str) {
        match self.attrs.iter_mut().find(|(n, _)| n == name) {
            Some(a) => a.1 = value.to_string(),
            None => self.attrs.push((name.to_string(), value.to_string())),
        }
    }
    pub fn remove_attr(&mut self, name: &str) {
        self.attrs.retain(|(n, _)| n != name);
    }
    /// Child elements in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|c| match c {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }
    /// First child element with this name and namespace.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name && e.ns == ns)
    }
    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|c| match c {
            Node::Element(e) if e.name == name && e.ns == ns => Some(e),
            _ => None,
        })
    }
    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }
    /// Concatenated text of the direct text children.
    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|c| match c {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
            .collect()
    }
    /// Serializes, writing `xmlns` only where the namespace differs from `parent_ns`
    /// (stanzas inside a `jabber:client` stream are written with `parent_ns` = that).
    /// Text and attribute values are escaped.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        let _ = (out, parent_ns);
        unimplemented!("parser")
    }
    /// `write_to` into a new string with `parent_ns`.
    pub fn to_xml(&self, parent_ns: &str) -> String {
        let mut s = String::new();
        self.write_to(&mut s, parent_ns);
        s
    }
}
