//! XEP-0115 entity capabilities, both ways:
//! - ours: the `<c/>` element of the stream features (section 6.3), whose `ver` is the
//!   section 5 hash of the server's own disco#info (`disco.rs`), and disco#info on
//!   `node#ver` answered like the plain query (section 6.2);
//! - the clients': the `<c/>` of each available presence is remembered per full JID, and
//!   an unknown `ver` is asked for with a disco#info query (section 6.3) whose answer is
//!   checked (section 5.4) and cached by `ver`. What PEP needs from it is the set of
//!   nodes a resource advertised `+notify` for (XEP-0163 section 4.2): it decides who
//!   gets notifications, and a resource whose set becomes known (or grows) gets the last
//!   items of the services it sees (XEP-0163 section 4.3.4, `pep.rs`).
//!
//! Hooks: `presence_broadcast` ([`Server::caps_available`] / [`Server::caps_unavailable`])
//! for the presence of local resources; `router.rs` hands iq answers addressed to one of
//! our domains to [`Server::caps_iq_answer`].

use super::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};
use std::sync::Arc;

/// No iq of its own (its disco#info answers are `disco.rs`'s): it follows resources.
pub(crate) const MODULE: Module = Module {
    name: "caps",
    server_features: &[],
    account_features: &[],
    iq: &[],
    preauth_iq: None,
    hooks: Hooks {
        presence_broadcast: Some(presence_broadcast),
        ..Hooks::NONE
    },
};

fn presence_broadcast(s: &mut Server, now: Instant, full: &Jid, st: &Element) {
    if st.get_attr("type") == Some("unavailable") {
        s.caps_unavailable(full);
    } else {
        s.caps_available(now, full, st);
    }
}

pub(crate) const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// Section 4: a URI identifying the software (the project's repository).
pub(crate) const CAPS_NODE: &str = env!("CARGO_PKG_REPOSITORY");
/// Suffix of a feature asking for notifications of a node (XEP-0163 section 4.2).
const NOTIFY_SUFFIX: &str = "+notify";
/// Verified `ver` strings kept; the cache starts again when full (a client release
/// adds one; only a flood of forged hashes could fill it).
const MAX_CACHED: usize = 4096;

/// Nodes a resource wants notifications for.
pub(crate) type Notify = Arc<BTreeSet<String>>;

/// Section 5.1: the string hashed for `ver` from a disco#info `<query/>`: identities
/// `category/type/lang/name<` sorted, features `<`-terminated and sorted, then each
/// XEP-0128 form by `FORM_TYPE`, its fields by `var`, values sorted. `None` when the
/// answer is one section 5.4 step 3 says to refuse: a duplicate identity or feature,
/// two forms of one `FORM_TYPE`, or a `FORM_TYPE` with differing values. Forms whose
/// `FORM_TYPE` is missing or not hidden are left out (step 3.6).
pub(crate) fn verification_string(query: &Element) -> Option<String> {
    const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    let mut identities: Vec<String> = query
        .elements()
        .filter(|e| e.name == "identity" && e.ns == DISCO_INFO)
        .map(|e| {
            format!(
                "{}/{}/{}/{}",
                e.get_attr("category").unwrap_or(""),
                e.get_attr("type").unwrap_or(""),
                e.get_attr("xml:lang").unwrap_or(""),
                e.get_attr("name").unwrap_or("")
            )
        })
        .collect();
    let mut features: Vec<&str> = query
        .elements()
        .filter(|e| e.name == "feature" && e.ns == DISCO_INFO)
        .filter_map(|e| e.get_attr("var"))
        .collect();
    identities.sort_unstable();
    features.sort_unstable();
    if has_duplicates(&identities) || has_duplicates(&features) {
        return None;
    }
    let mut forms: Vec<FormValues> = Vec::new();
    for x in query
        .elements()
        .filter(|e| e.name == "x" && e.ns == form::NS_DATA)
    {
        let mut form_type: Option<Vec<String>> = None;
        let mut fields = Vec::new();
        for f in x.elements().filter(|e| e.name == "field") {
            let var = f.get_attr("var").unwrap_or("");
            let mut values: Vec<String> = f
                .elements()
                .filter(|v| v.name == "value")
                .map(Element::text)
                .collect();
            if var == "FORM_TYPE" {
                if f.get_attr("type") != Some("hidden") {
                    form_type = None;
                    break;
                }
                values.dedup();
                if values.len() != 1 {
                    return None;
                }
                form_type = Some(values);
            } else {
                values.sort_unstable();
                fields.push((var.to_string(), values));
            }
        }
        let Some(ft) = form_type.and_then(|v| v.into_iter().next()) else {
            continue;
        };
        if forms.iter().any(|(t, _)| *t == ft) {
            return None;
        }
        fields.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        forms.push((ft, fields));
    }
    forms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut s = String::new();
    for i in &identities {
        s.push_str(i);
        s.push('<');
    }
    for f in &features {
        s.push_str(f);
        s.push('<');
    }
    for (ft, fields) in &forms {
        s.push_str(ft);
        s.push('<');
        for (var, values) in fields {
            s.push_str(var);
            s.push('<');
            for v in values {
                s.push_str(v);
                s.push('<');
            }
        }
    }
    Some(s)
}

/// Section 5.1 steps 8-9 with SHA-1 (the `hash='sha-1'` every client uses): base64 of
/// the digest of [`verification_string`].
pub(crate) fn caps_ver(query: &Element) -> Option<String> {
    verification_string(query).map(|s| B64.encode(Sha1::digest(s.as_bytes())))
}

/// An XEP-0128 form for hashing: its `FORM_TYPE` and (var, sorted values) pairs.
type FormValues = (String, Vec<(String, Vec<String>)>);

fn has_duplicates<T: PartialEq>(sorted: &[T]) -> bool {
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// The `+notify` nodes of a disco#info answer (XEP-0163 section 4.2).
fn notify_nodes(query: &Element) -> BTreeSet<String> {
    query
        .elements()
        .filter(|e| e.name == "feature")
        .filter_map(|e| e.get_attr("var"))
        .filter_map(|v| v.strip_suffix(NOTIFY_SUFFIX))
        .map(str::to_string)
        .collect()
}

/// One available resource that advertised caps.
struct Resource {
    jid: Jid,
    ver: String,
    /// `None` while our disco#info query is out.
    notify: Option<Notify>,
    /// What it wanted before this `ver`, so only new wishes get last items.
    previous: Option<Notify>,
}

/// A disco#info query of ours (section 6.3).
struct Query {
    jid: Jid,
    ver: String,
    /// `sha-1` hashes are checked and cached; anything else (legacy caps) is trusted
    /// for this resource only.
    verifiable: bool,
}

/// What the server knows of clients' capabilities.
#[derive(Default)]
pub(crate) struct CapsState {
    /// Verified answers by `ver` (section 5.4 step 3.8).
    by_ver: HashMap<String, Notify>,
    /// Available resources that advertised caps, by bare JID.
    resources: HashMap<Jid, Vec<Resource>>,
    /// Our queries in flight, by iq id.
    queries: HashMap<String, Query>,
}

impl Server {
    /// The `<c/>` of our stream features (section 6.3) for `domain`.
    pub(crate) fn server_caps(&self, domain: &str) -> Element {
        let info = disco::server_info(self, domain, None);
        let ver = caps_ver(&info).unwrap_or_default();
        Element::new("c", NS_CAPS)
            .attr("hash", "sha-1")
            .attr("node", CAPS_NODE)
            .attr("ver", &ver)
    }

    /// XEP-0115 / XEP-0163: an available presence broadcast by the
    /// local resource `full`. Its caps are recorded (asked for when unknown), and once
    /// known, the resource gets the last items of the nodes it newly wants.
    pub(crate) fn caps_available(&mut self, now: Instant, full: &Jid, st: &Element) {
        let bare = full.bare();
        let Some(c) = st.get_child("c", NS_CAPS) else {
            // Caps withdrawn (or never given): no notifications for this resource.
            self.caps_unavailable(full);
            return;
        };
        let (Some(ver), Some(node)) = (c.get_attr("ver"), c.get_attr("node")) else {
            return;
        };
        let verifiable = c.get_attr("hash") == Some("sha-1");
        let list = self.caps.resources.entry(bare.clone()).or_default();
        let pos = list.iter().position(|r| r.jid == *full);
        if let Some(i) = pos {
            if list[i].ver == ver {
                return;
            }
        }
        let previous = pos.and_then(|i| list.remove(i).notify);
        let known = verifiable
            .then(|| self.caps.by_ver.get(ver).cloned())
            .flatten();
        let list = self.caps.resources.entry(bare).or_default();
        list.push(Resource {
            jid: full.clone(),
            ver: ver.to_string(),
            notify: known.clone(),
            previous: previous.clone(),
        });
        match known {
            Some(n) => self.caps_known(now, full, &n, previous.as_ref()),
            None => {
                let id = format!("caps{}", self.random_id());
                self.caps.queries.insert(
                    id.clone(),
                    Query {
                        jid: full.clone(),
                        ver: ver.to_string(),
                        verifiable,
                    },
                );
                let q = Element::new("iq", ns::CLIENT)
                    .attr("type", "get")
                    .attr("id", &id)
                    .attr("from", full.domain())
                    .attr("to", &full.to_string())
                    .child(
                        Element::new("query", disco::NS_DISCO_INFO)
                            .attr("node", &format!("{node}#{ver}")),
                    );
                self.route(now, q);
            }
        }
    }

    /// `full` went unavailable; nothing more is sent to it.
    pub(crate) fn caps_unavailable(&mut self, full: &Jid) {
        let bare = full.bare();
        if let Some(list) = self.caps.resources.get_mut(&bare) {
            list.retain(|r| r.jid != *full);
            if list.is_empty() {
                self.caps.resources.remove(&bare);
            }
        }
        self.caps.queries.retain(|_, q| q.jid != *full);
    }

    /// Hook (`router.rs`): an iq result or error addressed to one of our domains; the
    /// answers to our caps queries are consumed here.
    pub(crate) fn caps_iq_answer(&mut self, now: Instant, st: &Element) {
        let Some(id) = st.get_attr("id") else {
            return;
        };
        let from = st.get_attr("from").and_then(|f| Jid::parse(f).ok());
        match self.caps.queries.get(id) {
            Some(q) if Some(&q.jid) == from.as_ref() => {}
            _ => return,
        }
        let Some(q) = self.caps.queries.remove(id) else {
            return;
        };
        let query = st.get_child("query", disco::NS_DISCO_INFO);
        let notify: Notify = Arc::new(query.map(notify_nodes).unwrap_or_default());
        if let Some(query) = query.filter(|_| q.verifiable) {
            // Section 5.4 step 3.8: cache only what hashes to the advertised `ver`.
            if caps_ver(query).as_deref() == Some(q.ver.as_str()) {
                if self.caps.by_ver.len() >= MAX_CACHED {
                    self.caps.by_ver.clear();
                }
                self.caps.by_ver.insert(q.ver.clone(), notify.clone());
            }
        }
        let bare = q.jid.bare();
        let Some(r) = self
            .caps
            .resources
            .get_mut(&bare)
            .and_then(|l| l.iter_mut().find(|r| r.jid == q.jid && r.ver == q.ver))
        else {
            return;
        };
        r.notify = Some(notify.clone());
        let previous = r.previous.take();
        self.caps_known(now, &q.jid, &notify, previous.as_ref());
    }

    /// The resource's wishes are known: last items of the nodes it did not want before,
    /// from its own account and the local contacts whose presence it receives (XEP-0163
    /// section 4.3.4; a contact's service decides by its own access model).
    fn caps_known(&mut self, now: Instant, full: &Jid, notify: &Notify, previous: Option<&Notify>) {
        let nodes: Vec<String> = notify
            .iter()
            .filter(|n| previous.is_none_or(|p| !p.contains(*n)))
            .cloned()
            .collect();
        if nodes.is_empty() {
            return;
        }
        let bare = full.bare();
        let mut services = vec![bare.clone()];
        if let Some(u) = self.user(&bare) {
            services.extend(
                u.roster
                    .values()
                    .filter(|i| i.sub_to && i.jid.node().is_some())
                    .map(|i| i.jid.clone())
                    .filter(|j| self.is_local_domain(j.domain())),
            );
        }
        for owner in services {
            self.pep_send_last(now, &owner, full, nodes.clone(), false);
        }
    }

    /// Hook (`presence.rs`): `contact` may now see `owner`'s presence (a subscription
    /// approved, RFC 6121 section 3.1.5), so it is subscribed to `owner`'s PEP nodes:
    /// its resources get the last items they want (XEP-0163 sections 4.1 and 4.3.4).
    pub(crate) fn caps_subscription_approved(&mut self, now: Instant, owner: &Jid, contact: &Jid) {
        let targets: Vec<(Jid, Vec<String>)> = self
            .caps
            .resources
            .get(&contact.bare())
            .map(|l| {
                l.iter()
                    .filter_map(|r| {
                        let n = r.notify.as_ref()?;
                        Some((r.jid.clone(), n.iter().cloned().collect()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (jid, nodes) in targets {
            if !nodes.is_empty() {
                self.pep_send_last(now, owner, &jid, nodes, true);
            }
        }
    }

    /// Available resources of `bare` that asked for notifications of `node`.
    pub(crate) fn notify_targets(&self, bare: &Jid, node: &str) -> Vec<Jid> {
        self.caps
            .resources
            .get(bare)
            .map(|l| {
                l.iter()
                    .filter(|r| r.notify.as_ref().is_some_and(|n| n.contains(node)))
                    .map(|r| r.jid.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(identities: &[(&str, &str, Option<&str>, &str)], features: &[&str]) -> Element {
        let mut q = Element::new("query", disco::NS_DISCO_INFO);
        for (c, t, lang, n) in identities {
            let mut i = Element::new("identity", disco::NS_DISCO_INFO)
                .attr("category", c)
                .attr("type", t)
                .attr("name", n);
            if let Some(l) = lang {
                i.set_attr("xml:lang", l);
            }
            q.push(i);
        }
        for f in features {
            q.push(Element::new("feature", disco::NS_DISCO_INFO).attr("var", f));
        }
        q
    }

    const FEATURES: [&str; 4] = [
        "http://jabber.org/protocol/disco#items",
        "http://jabber.org/protocol/caps",
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/muc",
    ];

    /// XEP-0115 section 5.2, the simple example.
    #[test]
    fn simple_example() {
        let q = info(&[("client", "pc", None, "Exodus 0.9.1")], &FEATURES);
        assert_eq!(
            verification_string(&q).unwrap(),
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
        );
        assert_eq!(caps_ver(&q).unwrap(), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    /// XEP-0115 section 5.3, the complex example (two languages, an XEP-0128 form).
    #[test]
    fn complex_example() {
        let mut q = info(
            &[
                ("client", "pc", Some("en"), "Psi 0.11"),
                ("client", "pc", Some("el"), "Ψ 0.11"),
            ],
            &FEATURES,
        );
        let mut x = Element::new("x", form::NS_DATA).attr("type", "result");
        x.push(form::field(
            "FORM_TYPE",
            "hidden",
            None,
            &["urn:xmpp:dataforms:softwareinfo"],
        ));
        x.push(form::field(
            "ip_version",
            "text-multi",
            None,
            &["ipv6", "ipv4"],
        ));
        x.push(form::field("os", "text-single", None, &["Mac"]));
        x.push(form::field("os_version", "text-single", None, &["10.5.1"]));
        x.push(form::field("software", "text-single", None, &["Psi"]));
        x.push(form::field(
            "software_version",
            "text-single",
            None,
            &["0.11"],
        ));
        q.push(x);
        assert_eq!(
            verification_string(&q).unwrap(),
            "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<"
        );
        assert_eq!(caps_ver(&q).unwrap(), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    /// Section 5.4 step 3: answers that could collide with honest ones are refused.
    #[test]
    fn ill_formed_answers_are_refused() {
        let q = info(
            &[("client", "pc", None, "x")],
            &["urn:a", "urn:a", "urn:b+notify"],
        );
        assert!(caps_ver(&q).is_none());
        let q = info(
            &[("client", "pc", None, "x"), ("client", "pc", None, "x")],
            &[],
        );
        assert!(caps_ver(&q).is_none());
        let q = info(&[], &["urn:a+notify", "urn:b"]);
        assert_eq!(
            notify_nodes(&q).into_iter().collect::<Vec<_>>(),
            ["urn:a".to_string()]
        );
    }
}
