//! XEP-0191 blocking command: the blocklist (get, block, unblock, pushes), and what a
//! block means for routing (section 3.3): nothing from a blocked entity reaches the
//! user (enforced in `router.rs`: iq requests and messages answered like an absent
//! user, presence dropped), nothing from the user reaches it (`not-acceptable` with
//! `<blocked/>` for messages and iq, presence dropped).

use super::*;

pub(crate) const NS_BLOCKING: &str = "urn:xmpp:blocking";
const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

pub(crate) const MODULE: Module = Module {
    name: "blocking",
    server_features: &[NS_BLOCKING],
    account_features: &[],
    iq: &[
        IqRoute {
            ns: NS_BLOCKING,
            name: "blocklist",
            target: Target::Account,
            handler: blocklist_iq,
        },
        IqRoute {
            ns: NS_BLOCKING,
            name: "block",
            target: Target::Account,
            handler: block_iq,
        },
        IqRoute {
            ns: NS_BLOCKING,
            name: "unblock",
            target: Target::Account,
            handler: block_iq,
        },
    ],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

/// Section 3.3: what the user gets when addressing someone they blocked.
pub(crate) fn blocked_error() -> StanzaError {
    StanzaError::new("not-acceptable").with_app(Element::new("blocked", NS_BLOCKING_ERRORS))
}

/// Section 3.2: the list.
fn blocklist_iq(s: &mut Server, _: Instant, req: IqRequest) -> IqReply {
    if !req.own {
        return IqReply::Error(StanzaError::new("service-unavailable"));
    }
    if req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    if let Some(sess) = req.session.and_then(|sid| s.sessions.get_mut(&sid)) {
        sess.blocklist_requested = true;
    }
    let mut list = Element::new("blocklist", NS_BLOCKING);
    if let Some(u) = s.user(&req.to) {
        for j in &u.blocklist {
            list.push(Element::new("item", NS_BLOCKING).attr("jid", &j.to_string()));
        }
    }
    IqReply::Result(Some(list))
}

/// Sections 3.3 (block), 3.4 (unblock) and 3.5 (unblock all, no item): durable, then pushed to
/// the resources that asked for the list, then answered.
fn block_iq(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    if !req.own {
        return IqReply::Error(StanzaError::new("service-unavailable"));
    }
    if !req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    let block = req.payload().name == "block";
    let mut jids = Vec::new();
    for item in req.payload().elements().filter(|e| e.name == "item") {
        match item.get_attr("jid").map(Jid::parse) {
            Some(Ok(j)) => jids.push(j),
            _ => return IqReply::Error(StanzaError::new("jid-malformed")),
        }
    }
    if block && jids.is_empty() {
        // Section 3.3: a block needs at least one item.
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    let bare = req.to.clone();
    let Some(u) = s.user_mut(&bare) else {
        return IqReply::Error(StanzaError::new("internal-server-error"));
    };
    let all = !block && jids.is_empty();
    let changed: Vec<Jid> = if block {
        jids.iter()
            .filter(|j| u.blocklist.insert((*j).clone()))
            .cloned()
            .collect()
    } else if all {
        std::mem::take(&mut u.blocklist).into_iter().collect()
    } else {
        jids.iter()
            .filter(|j| u.blocklist.remove(j))
            .cloned()
            .collect()
    };
    let host = bare.domain().to_string();
    let user = bare.node().unwrap_or_default().to_string();
    let ops: Vec<StoreOp> = changed
        .iter()
        .map(|j| {
            if block {
                StoreOp::Put {
                    host: host.clone(),
                    user: user.clone(),
                    store: "blocklist".into(),
                    key: j.to_string(),
                    value: stanza::to_stored(
                        &Element::new("item", NS_BLOCKING).attr("jid", &j.to_string()),
                    ),
                }
            } else {
                StoreOp::Delete {
                    host: host.clone(),
                    user: user.clone(),
                    store: "blocklist".into(),
                    key: j.to_string(),
                }
            }
        })
        .collect();
    if block {
        // Section 3.3: blocked entities that could see our presence (a subscription
        // `from`, or directed presence) see us go offline.
        let sessions = s.sessions_of(&bare);
        for j in &changed {
            let saw = s
                .user(&bare)
                .and_then(|u| u.roster.get(&j.bare()))
                .is_some_and(|i| i.sub_from)
                || sessions.iter().any(|sid| {
                    s.sessions
                        .get(sid)
                        .is_some_and(|x| x.directed.iter().any(|d| d == j || d.bare() == *j))
                });
            if saw {
                s.send_unavailable_to(now, &bare, j);
            }
        }
    }
    let reply = req.reply_to();
    let pushed = if all { Vec::new() } else { jids };
    s.store_then(ops, move |s, now, ok| {
        if !ok {
            s.reply_iq(now, &reply, Err(StanzaError::new("internal-server-error")));
            return;
        }
        s.reply_iq(now, &reply, Ok(None));
        s.blocklist_push(now, &bare, block, &pushed);
        if !block {
            // Section 3.4: contacts allowed to see our presence get it again.
            let subscribed: Vec<Jid> = s
                .user(&bare)
                .map(|u| {
                    changed
                        .iter()
                        .filter(|j| u.roster.get(*j).is_some_and(|i| i.sub_from))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for j in subscribed {
                s.send_current_presence(now, &bare, &j);
            }
        }
    });
    IqReply::Later
}

impl Server {
    /// Section 3.3 / 3.4: the change to every resource that asked for the list.
    fn blocklist_push(&mut self, now: Instant, bare: &Jid, block: bool, jids: &[Jid]) {
        let mut payload = Element::new(if block { "block" } else { "unblock" }, NS_BLOCKING);
        for j in jids {
            payload.push(Element::new("item", NS_BLOCKING).attr("jid", &j.to_string()));
        }
        for sid in self.sessions_of(bare) {
            let Some(s) = self.sessions.get(&sid).filter(|s| s.blocklist_requested) else {
                continue;
            };
            let to = s.jid.to_string();
            let id = format!("block{}", self.random_id());
            let iq = Element::new("iq", ns::CLIENT)
                .attr("type", "set")
                .attr("id", &id)
                .attr("to", &to)
                .child(payload.clone());
            self.send_to_session(now, sid, iq);
        }
    }

    /// Whether `user` (bare, local) blocks `other`: an item equal to its full JID,
    /// bare JID, `domain/resource` or domain (XEP-0191 section 6, JID matching as in XEP-0016).
    pub(crate) fn blocks(&self, user: &Jid, other: &Jid) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        if u.blocklist.is_empty() {
            return false;
        }
        let l = &u.blocklist;
        if l.contains(other) || l.contains(&other.bare()) {
            return true;
        }
        let domain = Jid::from_parts(None, other.domain(), None).ok();
        let domain_res = other
            .resource()
            .and_then(|r| Jid::from_parts(None, other.domain(), Some(r)).ok());
        domain.is_some_and(|d| l.contains(&d)) || domain_res.is_some_and(|d| l.contains(&d))
    }
}
