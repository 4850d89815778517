//! Bookmarks: XEP-0402 (one PEP item per room in `urn:xmpp:bookmarks:1`) is where they
//! live; the two XEP-0048 forms older clients use are kept in step with it (XEP-0402
//! section 5, advertised as `urn:xmpp:bookmarks:1#compat` and `#compat-pep`):
//! - `<storage xmlns='storage:bookmarks'/>` in private XML storage (XEP-0049,
//!   `private.rs`): a get is answered from the XEP-0402 node when there is one, a set
//!   is converted into XEP-0402 items (published, changed, retracted);
//! - the same `<storage/>` as the `current` item of the PEP node `storage:bookmarks`: a
//!   publish there is converted likewise, and every XEP-0402 change republishes it
//!   (when that node exists) so XEP-0048 clients are notified.
//!
//! The conversion keeps name, autojoin, nick and password (XEP-0402 section 5.3);
//! XEP-0048 URL bookmarks and XEP-0402 `<extensions/>` have no counterpart, and an
//! XEP-0402 item whose converted fields did not change is left as it is (extensions
//! kept).

use super::*;
use pep::{Access, NodeConfig, SendLast};

pub(crate) const NS_BOOKMARKS2: &str = "urn:xmpp:bookmarks:1";
pub(crate) const NS_BOOKMARKS: &str = "storage:bookmarks";
/// The item id XEP-0048 section 3.3 uses for the whole `<storage/>` over PEP.
const LEGACY_ITEM: &str = "current";

pub(crate) const MODULE: Module = Module {
    name: "bookmarks",
    server_features: &[],
    account_features: &[
        "urn:xmpp:bookmarks:1#compat",
        "urn:xmpp:bookmarks:1#compat-pep",
    ],
    iq: &[],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

/// XEP-0402 section 3: the node configuration clients ask for with publish-options.
pub(crate) fn bookmarks2_config() -> NodeConfig {
    NodeConfig {
        access: Access::Whitelist,
        max_items: None,
        persist: true,
        send_last: SendLast::Never,
        ..NodeConfig::default()
    }
}

/// The fields both forms share: name, autojoin, nick, password.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    name: Option<String>,
    autojoin: bool,
    nick: Option<String>,
    password: Option<String>,
}

impl Fields {
    fn read(conf: &Element) -> Fields {
        let child = |n: &str| {
            conf.elements()
                .find(|e| e.name == n)
                .map(Element::text)
                .filter(|t| !t.is_empty())
        };
        Fields {
            name: conf.get_attr("name").map(str::to_string),
            autojoin: conf
                .get_attr("autojoin")
                .and_then(form::parse_bool)
                .unwrap_or(false),
            nick: child("nick"),
            password: child("password"),
        }
    }

    fn write(&self, mut conf: Element) -> Element {
        let ns = conf.ns.clone();
        if let Some(n) = &self.name {
            conf.set_attr("name", n);
        }
        conf.set_attr("autojoin", if self.autojoin { "true" } else { "false" });
        if let Some(n) = &self.nick {
            conf.push(Element::new("nick", &ns).text_node(n));
        }
        if let Some(p) = &self.password {
            conf.push(Element::new("password", &ns).text_node(p));
        }
        conf
    }
}

/// XEP-0048 `<storage/>` -> (room JID, XEP-0402 `<conference/>`) pairs.
fn from_storage(storage: &Element) -> Vec<(String, Fields)> {
    let mut v: Vec<(String, Fields)> = Vec::new();
    for c in storage.elements().filter(|e| e.name == "conference") {
        let Some(jid) = c.get_attr("jid").and_then(|j| Jid::parse(j).ok()) else {
            continue;
        };
        let jid = jid.bare().to_string();
        if !v.iter().any(|(j, _)| *j == jid) {
            v.push((jid, Fields::read(c)));
        }
    }
    v
}

/// XEP-0402 items -> XEP-0048 `<storage/>`.
fn to_storage(items: &[(String, Element)]) -> Element {
    let mut s = Element::new("storage", NS_BOOKMARKS);
    for (jid, conf) in items {
        let c = Element::new("conference", NS_BOOKMARKS).attr("jid", jid);
        s.push(Fields::read(conf).write(c));
    }
    s
}

impl Server {
    /// `pep.rs` hook after a publish by the owner is durable.
    pub(crate) fn bookmarks_after_publish(
        &mut self,
        now: Instant,
        owner: &Jid,
        node: &str,
        payload: &Element,
    ) {
        match node {
            NS_BOOKMARKS2 => self.bookmarks_refresh_legacy_node(now, owner),
            NS_BOOKMARKS if payload.name == "storage" && payload.ns == NS_BOOKMARKS => {
                self.bookmarks_from_legacy(now, owner, payload.clone())
            }
            _ => {}
        }
    }

    /// `pep.rs` hook after a retraction by the owner is durable.
    pub(crate) fn bookmarks_after_retract(&mut self, now: Instant, owner: &Jid, node: &str) {
        if node == NS_BOOKMARKS2 {
            self.bookmarks_refresh_legacy_node(now, owner);
        }
    }

    /// A XEP-0048 `<storage/>` was stored (private XML or PEP): the XEP-0402 node is made
    /// to match it, with notifications for what changed.
    pub(crate) fn bookmarks_from_legacy(&mut self, now: Instant, owner: &Jid, storage: Element) {
        let o = owner.clone();
        self.with_pep(now, owner, move |s, now, r| {
            if r.is_err() {
                return;
            }
            let wanted = from_storage(&storage);
            let existing: Vec<String> = s
                .pep_node(&o, NS_BOOKMARKS2)
                .map(|n| n.items.iter().map(|i| i.id.clone()).collect())
                .unwrap_or_default();
            let o2 = o.clone();
            s.pep_fetch(now, &o, NS_BOOKMARKS2, existing, move |s, _now, current| {
                let mut ops = Vec::new();
                if s.pep_node(&o2, NS_BOOKMARKS2).is_none() {
                    ops.extend(s.pep_create(&o2, NS_BOOKMARKS2, bookmarks2_config()));
                }
                let mut published = Vec::new();
                for (jid, fields) in &wanted {
                    let same = current
                        .iter()
                        .any(|(id, c)| id == jid && Fields::read(c) == *fields);
                    if same {
                        continue;
                    }
                    let conf = fields.write(Element::new("conference", NS_BOOKMARKS2));
                    ops.extend(s.pep_apply_publish(&o2, NS_BOOKMARKS2, jid, conf.clone()));
                    published.push((jid.clone(), conf));
                }
                let mut retracted = Vec::new();
                for (id, _) in &current {
                    if !wanted.iter().any(|(j, _)| j == id) {
                        ops.extend(
                            s.pep_apply_retract(&o2, NS_BOOKMARKS2, id)
                                .unwrap_or_default(),
                        );
                        retracted.push(id.clone());
                    }
                }
                if ops.is_empty() {
                    return;
                }
                s.store_then(ops, move |s, now, ok| {
                    if !ok {
                        return;
                    }
                    for (id, conf) in &published {
                        s.pep_notify_publish(now, &o2, NS_BOOKMARKS2, id, conf);
                    }
                    if !retracted.is_empty() {
                        s.pep_notify_retract(now, &o2, NS_BOOKMARKS2, &retracted);
                    }
                });
            });
        });
    }

    /// The XEP-0402 items as one XEP-0048 `<storage/>`, or `None` when the account has
    /// no XEP-0402 node.
    pub(crate) fn bookmarks_as_storage(
        &mut self,
        now: Instant,
        owner: &Jid,
        f: impl FnOnce(&mut Server, Instant, Option<Element>) + Send + 'static,
    ) {
        let o = owner.clone();
        self.with_pep(now, owner, move |s, now, r| {
            let ids: Option<Vec<String>> = r.ok().and_then(|()| {
                s.pep_node(&o, NS_BOOKMARKS2)
                    .map(|n| n.items.iter().map(|i| i.id.clone()).collect())
            });
            match ids {
                None => f(s, now, None),
                Some(ids) => s.pep_fetch(now, &o, NS_BOOKMARKS2, ids, move |s, now, items| {
                    f(s, now, Some(to_storage(&items)))
                }),
            }
        });
    }

    /// XEP-0402 changed: the XEP-0048 PEP node, if the account has one, gets the new
    /// `<storage/>` (and its subscribers a notification).
    fn bookmarks_refresh_legacy_node(&mut self, now: Instant, owner: &Jid) {
        if self.pep_node(owner, NS_BOOKMARKS).is_none() {
            return;
        }
        let o = owner.clone();
        self.bookmarks_as_storage(now, owner, move |s, _now, storage| {
            let Some(storage) = storage else {
                return;
            };
            let ops = s.pep_apply_publish(&o, NS_BOOKMARKS, LEGACY_ITEM, storage.clone());
            s.store_then(ops, move |s, now, ok| {
                if ok {
                    s.pep_notify_publish(now, &o, NS_BOOKMARKS, LEGACY_ITEM, &storage);
                }
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_pep_forms_convert() {
        let storage = stanza::parse_stored(
            "<storage xmlns='storage:bookmarks'><conference jid='Room@Conference.example.org' name='The Room' autojoin='1'><nick>al</nick></conference><conference jid='bad@@jid'/><url url='https://example.org'/></storage>",
        )
        .unwrap();
        let v = from_storage(&storage);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "room@conference.example.org");
        assert!(v[0].1.autojoin);
        let conf = v[0].1.write(Element::new("conference", NS_BOOKMARKS2));
        assert_eq!(conf.get_attr("autojoin"), Some("true"));
        let back = to_storage(&[(v[0].0.clone(), conf)]);
        let c = back.elements().next().unwrap();
        assert_eq!(c.get_attr("jid"), Some("room@conference.example.org"));
        assert_eq!(c.get_attr("name"), Some("The Room"));
        assert_eq!(c.get_child("nick", NS_BOOKMARKS).unwrap().text(), "al");
    }
}
