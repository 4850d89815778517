//! Roster management (RFC 6121 section 2): get with versioning (section 2.6), set and
//! remove, pushes to interested resources (section 2.1.6), and the persistence of
//! items, including the subscription bookkeeping of section 3 that clients never see
//! (pending inbound requests, kept on hidden items when the contact is not in the
//! roster).

use super::*;

/// One roster item with its subscription state (RFC 6121 Appendix A: `none`/`to`/
/// `from`/`both` plus pending-out (`ask`) and pending-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RosterItem {
    pub(crate) jid: Jid,
    pub(crate) name: Option<String>,
    pub(crate) groups: Vec<String>,
    /// The user receives the contact's presence.
    pub(crate) sub_to: bool,
    /// The contact receives the user's presence.
    pub(crate) sub_from: bool,
    /// Pending out: the user asked to subscribe.
    pub(crate) ask: bool,
    /// Pending in: the contact asked, the user has not answered (section 3.1.3).
    pub(crate) pending_in: bool,
    /// Visible in the roster; `false` for an item that only remembers a pending
    /// inbound request from someone not in the roster.
    pub(crate) in_roster: bool,
}

impl RosterItem {
    pub(crate) fn new(jid: Jid) -> RosterItem {
        RosterItem {
            jid,
            name: None,
            groups: Vec::new(),
            sub_to: false,
            sub_from: false,
            ask: false,
            pending_in: false,
            in_roster: false,
        }
    }

    pub(crate) fn subscription(&self) -> &'static str {
        match (self.sub_to, self.sub_from) {
            (true, true) => "both",
            (true, false) => "to",
            (false, true) => "from",
            (false, false) => "none",
        }
    }

    /// The item as clients see it (section 2.1.2).
    pub(crate) fn to_client(&self) -> Element {
        let mut e = Element::new("item", ns::ROSTER)
            .attr("jid", &self.jid.to_string())
            .attr("subscription", self.subscription());
        if let Some(n) = &self.name {
            e.set_attr("name", n);
        }
        if self.ask {
            e.set_attr("ask", "subscribe");
        }
        for g in &self.groups {
            e.push(Element::new("group", ns::ROSTER).text_node(g));
        }
        e
    }

    /// The stored form: the client form plus our bookkeeping.
    fn to_stored(&self) -> Element {
        let mut e = self.to_client();
        if self.pending_in {
            e.set_attr("pending-in", "true");
        }
        if !self.in_roster {
            e.set_attr("hidden", "true");
        }
        e
    }

    pub(crate) fn from_element(e: &Element) -> Option<RosterItem> {
        let jid = Jid::parse(e.get_attr("jid")?).ok()?;
        let sub = e.get_attr("subscription").unwrap_or("none");
        Some(RosterItem {
            jid,
            name: e.get_attr("name").map(str::to_string),
            groups: e
                .elements()
                .filter(|g| g.name == "group")
                .map(|g| g.text())
                .collect(),
            sub_to: matches!(sub, "to" | "both"),
            sub_from: matches!(sub, "from" | "both"),
            ask: e.get_attr("ask") == Some("subscribe"),
            pending_in: e.get_attr("pending-in") == Some("true"),
            in_roster: e.get_attr("hidden") != Some("true"),
        })
    }

    /// Worth keeping at all.
    fn live(&self) -> bool {
        self.in_roster || self.pending_in
    }
}

pub(crate) const MODULE: Module = Module {
    name: "roster",
    server_features: &[],
    account_features: &[],
    iq: &[IqRoute {
        ns: ns::ROSTER,
        name: "query",
        target: Target::Account,
        handler: roster_iq,
    }],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

/// Longest contact name and group name we keep (RFC 6121 section 2.1.2.4 lets the
/// server limit them).
const MAX_NAME: usize = 1024;

fn roster_iq(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    if !req.own {
        // Section 2.1.5 / 2.3.3: only the user's own resources.
        return IqReply::Error(StanzaError::new(if req.is_set() {
            "forbidden"
        } else {
            "service-unavailable"
        }));
    }
    if req.is_set() {
        roster_set(s, now, req)
    } else {
        roster_get(s, req)
    }
}

/// Section 2.1.3 / 2.6.3: the whole roster, or an empty result when the client's
/// version is current (pushes follow for later changes).
fn roster_get(s: &mut Server, req: IqRequest) -> IqReply {
    let bare = req.to.clone();
    if let Some(sess) = req.session.and_then(|sid| s.sessions.get_mut(&sid)) {
        sess.roster_requested = true;
    }
    let Some(u) = s.user(&bare) else {
        return IqReply::Error(StanzaError::new("internal-server-error"));
    };
    let client_ver = req.payload().get_attr("ver");
    let ver = u.roster_ver.to_string();
    if client_ver == Some(ver.as_str()) {
        return IqReply::Result(None);
    }
    let mut q = Element::new("query", ns::ROSTER);
    if client_ver.is_some() {
        q.set_attr("ver", &ver);
    }
    for item in u.roster.values().filter(|i| i.in_roster) {
        q.push(item.to_client());
    }
    IqReply::Result(Some(q))
}

/// Section 2.3 (add/update) and 2.5 (remove).
fn roster_set(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    let bare = req.to.clone();
    let items: Vec<&Element> = req
        .payload()
        .elements()
        .filter(|e| e.name == "item" && e.ns == ns::ROSTER)
        .collect();
    // Section 2.3.3: exactly one item.
    let [item] = items.as_slice() else {
        return IqReply::Error(StanzaError::new("bad-request"));
    };
    let Some(jid) = item.get_attr("jid").and_then(|j| Jid::parse(j).ok()) else {
        return IqReply::Error(StanzaError::new("bad-request"));
    };
    if item.get_attr("subscription") == Some("remove") {
        s.roster_remove(now, &bare, &jid, req.reply_to());
        return IqReply::Later;
    }
    let name = item.get_attr("name").filter(|n| !n.is_empty());
    let mut groups: Vec<String> = Vec::new();
    for g in item.elements().filter(|e| e.name == "group") {
        let t = g.text();
        if t.is_empty() || t.len() > MAX_NAME {
            return IqReply::Error(StanzaError::new("not-acceptable"));
        }
        if groups.contains(&t) {
            return IqReply::Error(StanzaError::new("bad-request"));
        }
        groups.push(t);
    }
    if name.is_some_and(|n| n.len() > MAX_NAME) {
        return IqReply::Error(StanzaError::new("not-acceptable"));
    }
    let Some(u) = s.user_mut(&bare) else {
        return IqReply::Error(StanzaError::new("internal-server-error"));
    };
    let entry = u
        .roster
        .entry(jid.clone())
        .or_insert_with(|| RosterItem::new(jid.clone()));
    // Section 2.3.2: `subscription` and `ask` from the client are ignored.
    entry.name = name.map(str::to_string);
    entry.groups = groups;
    entry.in_roster = true;
    s.save_roster_item(now, &bare, &jid, true, Some(req.reply_to()));
    IqReply::Later
}

impl Server {
    /// Section 2.5.2: cancel both directions, then drop the item.
    fn roster_remove(&mut self, now: Instant, bare: &Jid, contact: &Jid, reply: iq::IqReplyTo) {
        let Some(u) = self.user_mut(bare) else {
            return;
        };
        let Some(item) = u.roster.get(contact).cloned().filter(|i| i.in_roster) else {
            // Section 2.5.3: removing what is not there.
            self.reply_iq(now, &reply, Err(StanzaError::new("item-not-found")));
            return;
        };
        if item.sub_to || item.ask {
            self.route(
                now,
                subscription_presence(bare, &item.jid.bare(), "unsubscribe"),
            );
        }
        if item.sub_from || item.pending_in {
            self.route(
                now,
                subscription_presence(bare, &item.jid.bare(), "unsubscribed"),
            );
        }
        if let Some(u) = self.user_mut(bare) {
            u.roster.remove(contact);
        }
        self.save_roster_item(now, bare, contact, true, Some(reply));
    }

    /// Persists `contact`'s item (or its removal), bumping the roster version and
    /// pushing it to interested resources when `visible`. With `reply`, the push and
    /// the iq result wait until the change is durable.
    pub(crate) fn save_roster_item(
        &mut self,
        now: Instant,
        bare: &Jid,
        contact: &Jid,
        visible: bool,
        reply: Option<iq::IqReplyTo>,
    ) {
        let Some(u) = self.user_mut(bare) else {
            return;
        };
        let item = u.roster.get(contact).cloned().filter(RosterItem::live);
        if item.is_none() {
            u.roster.remove(contact);
        }
        let host = bare.domain().to_string();
        let user = bare.node().unwrap_or_default().to_string();
        let mut ops = Vec::new();
        match &item {
            Some(i) => ops.push(StoreOp::Put {
                host: host.clone(),
                user: user.clone(),
                store: "roster".into(),
                key: contact.to_string(),
                value: stanza::to_stored(&i.to_stored()),
            }),
            None => ops.push(StoreOp::Delete {
                host: host.clone(),
                user: user.clone(),
                store: "roster".into(),
                key: contact.to_string(),
            }),
        }
        let mut push = None;
        if visible {
            u.roster_ver += 1;
            let ver = u.roster_ver;
            ops.push(StoreOp::Put {
                host,
                user,
                store: "roster_version".into(),
                key: "ver".into(),
                value: stanza::to_stored(
                    &Element::new("ver", "urn:xmpp:features:rosterver").text_node(&ver.to_string()),
                ),
            });
            let shown = match item.as_ref().filter(|i| i.in_roster) {
                Some(i) => i.to_client(),
                None => Element::new("item", ns::ROSTER)
                    .attr("jid", &contact.to_string())
                    .attr("subscription", "remove"),
            };
            push = Some(
                Element::new("query", ns::ROSTER)
                    .attr("ver", &ver.to_string())
                    .child(shown),
            );
        }
        match reply {
            Some(reply) => {
                let bare = bare.clone();
                self.store_then(ops, move |s, now, ok| {
                    if ok {
                        if let Some(q) = push {
                            s.roster_push(now, &bare, q);
                        }
                        s.reply_iq(now, &reply, Ok(None));
                    } else {
                        s.reply_iq(now, &reply, Err(StanzaError::new("internal-server-error")));
                    }
                });
            }
            None => {
                if let Some(q) = push {
                    self.roster_push(now, bare, q);
                }
                self.store(ops);
            }
        }
    }

    /// Section 2.1.6: an iq set to every resource that asked for the roster.
    fn roster_push(&mut self, now: Instant, bare: &Jid, query: Element) {
        for sid in self.sessions_of(bare) {
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            if !s.roster_requested {
                continue;
            }
            let to = s.jid.to_string();
            let id = format!("push{}", self.random_id());
            let iq = Element::new("iq", ns::CLIENT)
                .attr("type", "set")
                .attr("id", &id)
                .attr("to", &to)
                .child(query.clone());
            self.send_to_session(now, sid, iq);
        }
    }
}

/// `<presence type=.../>` between two bare JIDs (subscription management, RFC 6121
/// section 3: the server stamps bare JIDs).
pub(crate) fn subscription_presence(from: &Jid, to: &Jid, ty: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .attr("from", &from.to_string())
        .attr("to", &to.to_string())
        .attr("type", ty)
}
