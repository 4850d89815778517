//! XEP-0004 data forms, the few shapes the service modules need: forms to fill in
//! (ad-hoc commands, XEP-0050/0133; pubsub node configuration, XEP-0060 section 8.2),
//! results, and the values of a submitted form (publish-options, XEP-0060 section
//! 7.1.5; a command's answer).

use super::*;

pub(crate) const NS_DATA: &str = "jabber:x:data";

/// `<x xmlns='jabber:x:data' type=...>` (section 3.1: `form`, `submit`, `cancel`,
/// `result`) with the hidden `FORM_TYPE` field of XEP-0068 first.
pub(crate) fn new_form(ty: &str, form_type: &str, title: Option<&str>) -> Element {
    let mut x = Element::new("x", NS_DATA).attr("type", ty);
    if let Some(t) = title {
        x.push(Element::new("title", NS_DATA).text_node(t));
    }
    x.push(field("FORM_TYPE", "hidden", None, &[form_type]));
    x
}

/// One `<field/>` (section 3.2) with its values.
pub(crate) fn field(var: &str, ty: &str, label: Option<&str>, values: &[&str]) -> Element {
    let mut f = Element::new("field", NS_DATA)
        .attr("var", var)
        .attr("type", ty);
    if let Some(l) = label {
        f.set_attr("label", l);
    }
    for v in values {
        f.push(Element::new("value", NS_DATA).text_node(v));
    }
    f
}

/// The field marked `<required/>` (section 3.2).
pub(crate) fn required(mut f: Element) -> Element {
    f.push(Element::new("required", NS_DATA));
    f
}

/// The field with `<option/>`s (section 3.2, list-single / list-multi).
pub(crate) fn with_options(mut f: Element, options: &[&str]) -> Element {
    for o in options {
        f.push(
            Element::new("option", NS_DATA)
                .attr("label", o)
                .child(Element::new("value", NS_DATA).text_node(o)),
        );
    }
    f
}

/// A submitted form: its type and the values of each field by `var`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Submitted {
    pub(crate) form_type: Option<String>,
    pub(crate) fields: BTreeMap<String, Vec<String>>,
}

impl Submitted {
    /// Reads `x` (section 3.3: a `submit` form carries `var` and values only).
    pub(crate) fn parse(x: &Element) -> Submitted {
        let mut s = Submitted::default();
        for f in x.elements().filter(|e| e.name == "field") {
            let Some(var) = f.get_attr("var") else {
                continue;
            };
            let values: Vec<String> = f
                .elements()
                .filter(|v| v.name == "value")
                .map(Element::text)
                .collect();
            if var == "FORM_TYPE" {
                s.form_type = values.first().cloned();
            } else {
                s.fields.insert(var.to_string(), values);
            }
        }
        s
    }

    /// The first value of `var`, if any.
    pub(crate) fn first(&self, var: &str) -> Option<&str> {
        self.fields
            .get(var)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every value of `var`.
    pub(crate) fn all(&self, var: &str) -> &[String] {
        self.fields.get(var).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The first data form child of `parent`.
pub(crate) fn find(parent: &Element) -> Option<&Element> {
    parent.get_child("x", NS_DATA)
}

/// XEP-0004 section 3.3 boolean: `1`/`true` or `0`/`false`.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}
