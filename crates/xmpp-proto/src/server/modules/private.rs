//! XEP-0049 private XML storage: any XML a user's clients keep on the server, one
//! entry per namespace (store `private`, key = the namespace, value a
//! `<query xmlns='jabber:iq:private'/>` holding the elements), readable and writable by
//! the account alone. `storage:bookmarks` is kept in step with XEP-0402 bookmarks
//! (`bookmarks.rs`).

use super::*;

pub(crate) const NS_PRIVATE: &str = "jabber:iq:private";
const STORE: &str = "private";
/// Longest key the storage takes (`rtc-store`: 190 characters).
const MAX_KEY: usize = 190;

pub(crate) const MODULE: Module = Module {
    name: "private",
    server_features: &[NS_PRIVATE],
    account_features: &[],
    iq: &[IqRoute {
        ns: NS_PRIVATE,
        name: "query",
        target: Target::Account,
        handler: private_iq,
    }],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

/// Section 3: namespaces no one may store under (`jabber:*`, `http://jabber.org/*`,
/// `vcard-temp`); an element without a namespace of its own inherits `jabber:iq:private`
/// and is refused with them. Keys longer than the storage takes are refused too.
fn acceptable(ns: &str) -> bool {
    !(ns.is_empty()
        || ns.starts_with("jabber:")
        || ns.starts_with("http://jabber.org/")
        || ns == "vcard-temp"
        || ns.len() > MAX_KEY)
}

fn private_iq(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    if !req.own {
        // Section 3: another user's data.
        return IqReply::Error(StanzaError::new("forbidden"));
    }
    let q = req.payload();
    let children: Vec<&Element> = q.elements().collect();
    if children.is_empty() {
        // Section 3: "Bad Format" for a get, "Not Acceptable" for a set.
        return IqReply::Error(StanzaError::new(if req.is_set() {
            "not-acceptable"
        } else {
            "bad-request"
        }));
    }
    if children.iter().any(|c| !acceptable(&c.ns)) {
        return IqReply::Error(StanzaError::new("not-acceptable"));
    }
    let owner = req.to.clone();
    let reply = req.reply_to();
    if req.is_set() {
        set(s, owner, reply, &children);
        return IqReply::Later;
    }
    // Section 2: one namespace per get.
    let [asked] = children.as_slice() else {
        return IqReply::Error(StanzaError::new("not-acceptable"));
    };
    let asked = (*asked).clone();
    if asked.ns == bookmarks::NS_BOOKMARKS {
        let o = owner.clone();
        s.bookmarks_as_storage(now, &owner, move |s, now, storage| match storage {
            Some(st) => {
                let q = Element::new("query", NS_PRIVATE).child(st);
                s.reply_iq(now, &reply, Ok(Some(q)));
            }
            None => get(s, &o, reply, asked),
        });
    } else {
        get(s, &owner, reply, asked);
    }
    IqReply::Later
}

/// Section 2: what is stored under the namespace, or the empty element asked for.
fn get(s: &mut Server, owner: &Jid, reply: iq::IqReplyTo, asked: Element) {
    let (host, user) = (owner.domain(), owner.node().unwrap_or_default());
    let key = asked.ns.clone();
    s.load_then(host, user, STORE, Some(&key), move |s, now, r| {
        let result = match r {
            Err(StoreFailed) => Err(StanzaError::new("internal-server-error")),
            Ok(rows) => {
                let stored = rows
                    .into_iter()
                    .next()
                    .and_then(|(_, v)| stanza::parse_stored(&v));
                Ok(Some(match stored {
                    Some(q) => q,
                    None => Element::new("query", NS_PRIVATE)
                        .child(Element::new(&asked.name, &asked.ns)),
                }))
            }
        };
        s.reply_iq(now, &reply, result);
    });
}

/// Section 2: each namespace's elements replace what was stored under it.
fn set(s: &mut Server, owner: Jid, reply: iq::IqReplyTo, children: &[&Element]) {
    let mut by_ns: BTreeMap<String, Element> = BTreeMap::new();
    for c in children {
        by_ns
            .entry(c.ns.clone())
            .or_insert_with(|| Element::new("query", NS_PRIVATE))
            .push((*c).clone());
    }
    let (host, user) = (
        owner.domain().to_string(),
        owner.node().unwrap_or_default().to_string(),
    );
    let legacy = by_ns
        .get(bookmarks::NS_BOOKMARKS)
        .and_then(|q| q.elements().find(|e| e.name == "storage").cloned());
    let ops = by_ns
        .into_iter()
        .map(|(ns, q)| StoreOp::Put {
            host: host.clone(),
            user: user.clone(),
            store: STORE.into(),
            key: ns,
            value: stanza::to_stored(&q),
        })
        .collect();
    s.store_then(ops, move |s, now, ok| {
        if !ok {
            s.reply_iq(now, &reply, Err(StanzaError::new("internal-server-error")));
            return;
        }
        s.reply_iq(now, &reply, Ok(None));
        if let Some(storage) = legacy {
            s.bookmarks_from_legacy(now, &owner, storage);
        }
    });
}
