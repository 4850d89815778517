//! XML elements as stanzas are handled: a small owned tree with resolved namespaces.
//!
//! Elements come out of [`crate::xml::StreamParser`] with one text node between two child
//! elements at most (adjacent text, character references and CDATA sections are merged)
//! and no empty text node, so parse -> [`Element::write_to`] -> parse gives the same
//! value. Built by hand, an element may hold adjacent or empty text nodes; it still
//! serializes correctly, but parses back merged.

use crate::xml::{escape_attr, escape_text};

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
    ///
    /// The output is namespace-well-formed on its own as long as the element came from
    /// [`crate::xml::StreamParser`] (which keeps an `xmlns:p` declaration next to every
    /// `p:attr` it returns) or was built with plain attribute names: elements never get a
    /// prefix, each one that changes namespace carries a default `xmlns` (RFC 6120 section
    /// 4.8.5 asks for no prefixes on content elements). An `xmlns` entry in `attrs` is
    /// ignored: `ns` is the one source of the element's namespace. Empty elements are
    /// written `<x/>`; text nodes are escaped with [`escape_text`], attribute values with
    /// [`escape_attr`] and `'`-quoted.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        self.write_start(out, "", self.ns != parent_ns);
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        self.write_children(out, &self.ns);
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// Serializes a first-level element of a stream whose header declared
    /// `xmlns:stream='http://etherx.jabber.org/streams'` and the content namespace
    /// `content_ns` as default: elements of the stream namespace (`<stream:features/>`,
    /// `<stream:error/>`) are written with the `stream:` prefix RFC 6120 section 4.8.5 says
    /// implementations SHOULD generate, their children relative to `content_ns` (the
    /// prefixed element does not change the default namespace); anything else is
    /// [`Element::write_to`] with `content_ns`.
    ///
    /// The result is only namespace-well-formed inside such a stream; use `write_to` for
    /// standalone XML.
    pub fn write_in_stream(&self, out: &mut String, content_ns: &str) {
        if self.ns != ns::STREAM || content_ns == ns::STREAM {
            self.write_to(out, content_ns);
            return;
        }
        self.write_start(out, "stream:", false);
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        self.write_children(out, content_ns);
        out.push_str("</stream:");
        out.push_str(&self.name);
        out.push('>');
    }

    /// `<`, the prefixed name, `xmlns` if asked, the attributes.
    fn write_start(&self, out: &mut String, prefix: &str, with_xmlns: bool) {
        out.push('<');
        out.push_str(prefix);
        out.push_str(&self.name);
        if with_xmlns {
            out.push_str(" xmlns='");
            escape_attr(&self.ns, out);
            out.push('\'');
        }
        for (name, value) in &self.attrs {
            if name == "xmlns" {
                continue;
            }
            out.push(' ');
            out.push_str(name);
            out.push_str("='");
            escape_attr(value, out);
            out.push('\'');
        }
    }

    fn write_children(&self, out: &mut String, ns_in_scope: &str) {
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_to(out, ns_in_scope),
                Node::Text(t) => escape_text(t, out),
            }
        }
    }
    /// `write_to` into a new string with `parent_ns`.
    pub fn to_xml(&self, parent_ns: &str) -> String {
        let mut s = String::new();
        self.write_to(&mut s, parent_ns);
        s
    }
}
