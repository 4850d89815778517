//! Presence (RFC 6121 sections 3 and 4): the subscription state machine of Appendix A
//! for outbound (what the user sends) and inbound (what reaches the user) requests,
//! presence broadcast to `from`/`both` contacts and the user's own resources, probes at
//! login and their answers, directed presence, and the unavailable broadcast when a
//! resource goes away.

use super::*;
use roster::subscription_presence;

impl Server {
    /// A presence from a bound client (RFC 6121 section 4.2 - 4.6 and 3).
    pub(crate) fn outbound_presence(
        &mut self,
        now: Instant,
        sid: SessionId,
        st: Element,
        to: Option<Jid>,
    ) {
        let ty = st.get_attr("type").unwrap_or("").to_string();
        match (ty.as_str(), to) {
            ("", None) => self.presence_available(now, sid, st),
            ("unavailable", None) => self.presence_unavailable(now, sid, st),
            ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", Some(to)) => {
                self.outbound_subscription(now, sid, &ty, to.bare(), st)
            }
            ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", None) => {
                self.reply_to_session(now, sid, &st, StanzaError::new("bad-request"))
            }
            ("" | "unavailable", Some(to)) => self.directed_presence(now, sid, &ty, to, st),
            ("error", Some(_)) => self.route(now, st),
            // Section 4.3: probes are the server's business.
            _ => {}
        }
    }

    /// Initial or updated available presence (sections 4.2.2 and 4.4.2).
    fn presence_available(&mut self, now: Instant, sid: SessionId, mut st: Element) {
        let priority = st
            .get_child("priority", ns::CLIENT)
            .and_then(|p| p.text().trim().parse::<i8>().ok())
            .unwrap_or(0);
        st.remove_attr("to");
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let initial = !s.available;
        s.available = true;
        s.priority = priority;
        s.presence = Some(st.clone());
        let full = s.jid.clone();
        let bare = full.bare();
        self.broadcast_to_contacts(now, &bare, &st);
        // The user's own available resources, this one included (section 4.2.2).
        for o in self.available_sessions(&bare) {
            let Some(ojid) = self.sessions.get(&o).map(|x| x.jid.to_string()) else {
                continue;
            };
            let mut p = st.clone();
            p.set_attr("to", &ojid);
            self.send_to_session(now, o, p);
        }
        // Modules following resources (caps, XEP-0115 / XEP-0163).
        self.hook_presence_broadcast(now, &full, &st);
        if !initial {
            return;
        }
        // ...and their presence to the new one.
        for o in self.available_sessions(&bare) {
            if o == sid {
                continue;
            }
            if let Some(mut p) = self.sessions.get(&o).and_then(|x| x.presence.clone()) {
                p.set_attr("to", &full.to_string());
                self.send_to_session(now, sid, p);
            }
        }
        let (probe_to, pending_in): (Vec<Jid>, Vec<Jid>) = match self.user(&bare) {
            Some(u) => (
                u.roster
                    .values()
                    .filter(|i| i.sub_to)
                    .map(|i| i.jid.clone())
                    .collect(),
                u.roster
                    .values()
                    .filter(|i| i.pending_in)
                    .map(|i| i.jid.clone())
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        // Section 4.3.1: probe the contacts we are subscribed to.
        for c in probe_to {
            let probe = Element::new("presence", ns::CLIENT)
                .attr("type", "probe")
                .attr("from", &full.to_string())
                .attr("to", &c.to_string());
            self.route(now, probe);
        }
        // Section 3.1.3: subscription requests that arrived while offline.
        for c in pending_in {
            let p = subscription_presence(&c, &bare, "subscribe");
            self.send_to_session(now, sid, p);
        }
        // RFC 6121 section 8.5.2.2.1 / XEP-0160: offline messages on initial presence
        // with a non-negative priority.
        if priority >= 0 {
            self.deliver_offline(now, sid);
        }
    }

    /// Sends a presence (from a full JID) to every contact with a subscription `from`
    /// or `both`, except blocked ones (XEP-0191 section 3.3).
    fn broadcast_to_contacts(&mut self, now: Instant, bare: &Jid, st: &Element) {
        let contacts: Vec<Jid> = match self.user(bare) {
            Some(u) => u
                .roster
                .values()
                .filter(|i| i.sub_from)
                .map(|i| i.jid.clone())
                .collect(),
            None => return,
        };
        for c in contacts {
            if self.blocks(bare, &c) {
                continue;
            }
            let mut p = st.clone();
            p.set_attr("to", &c.to_string());
            self.route(now, p);
        }
    }

    /// Section 4.5.2: unavailable to the contacts, the user's other resources and
    /// everyone that got directed presence.
    pub(crate) fn presence_unavailable(&mut self, now: Instant, sid: SessionId, mut st: Element) {
        st.remove_attr("to");
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let was = s.available;
        s.available = false;
        s.presence = None;
        let directed = std::mem::take(&mut s.directed);
        let full = s.jid.clone();
        let bare = full.bare();
        if was {
            // Modules following resources (caps: no more notifications for this one;
            // last activity, XEP-0012: the account's last available resource went).
            self.hook_presence_broadcast(now, &full, &st);
            self.broadcast_to_contacts(now, &bare, &st);
            for o in self.available_sessions(&bare) {
                let Some(ojid) = self.sessions.get(&o).map(|x| x.jid.to_string()) else {
                    continue;
                };
                let mut p = st.clone();
                p.set_attr("to", &ojid);
                self.send_to_session(now, o, p);
            }
        }
        for d in directed {
            let mut p = st.clone();
            p.set_attr("to", &d.to_string());
            self.route(now, p);
        }
    }

    /// Section 4.6: presence to one entity, remembered when that entity would not get
    /// our broadcast (so it gets our unavailable presence later).
    fn directed_presence(&mut self, now: Instant, sid: SessionId, ty: &str, to: Jid, st: Element) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let bare = s.jid.bare();
        if self.blocks(&bare, &to) {
            return;
        }
        let subscribed = self
            .user(&bare)
            .and_then(|u| u.roster.get(&to.bare()))
            .is_some_and(|i| i.sub_from);
        if let Some(s) = self.sessions.get_mut(&sid) {
            if ty == "unavailable" {
                s.directed.remove(&to);
            } else if !subscribed || !s.available {
                // A subscribed contact gets our unavailable broadcast anyway.
                s.directed.insert(to);
            }
        }
        self.route(now, st);
    }

    /// A presence stanza reaching a local user (RFC 6121 sections 3, 4.3 and 8.5).
    pub(crate) fn inbound_presence(
        &mut self,
        now: Instant,
        from: Option<Jid>,
        to: Jid,
        st: Element,
    ) {
        let ty = st.get_attr("type").unwrap_or("").to_string();
        let bare = to.bare();
        match ty.as_str() {
            "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed" => {
                if let Some(from) = from {
                    self.inbound_subscription(now, &bare, &from.bare(), &ty, st);
                }
            }
            "probe" => {
                if let Some(from) = from {
                    self.answer_probe(now, &bare, &from);
                }
            }
            _ => {
                if to.resource().is_some() {
                    // Section 8.5.3: that resource or nobody.
                    if let Some(sid) = self.by_full.get(&to).copied() {
                        self.send_to_session(now, sid, st);
                    }
                } else {
                    // Section 8.5.2.1.2: every available resource.
                    for sid in self.available_sessions(&bare) {
                        self.send_to_session(now, sid, st.clone());
                    }
                }
            }
        }
    }

    /// Section 4.3.2: the current presence of each available resource to a subscribed
    /// prober (unavailable when there is none); `unsubscribed` to anyone else.
    fn answer_probe(&mut self, now: Instant, bare: &Jid, prober: &Jid) {
        let subscribed = prober.bare() == *bare
            || self
                .user(bare)
                .and_then(|u| u.roster.get(&prober.bare()))
                .is_some_and(|i| i.sub_from);
        if !subscribed {
            self.route(
                now,
                subscription_presence(bare, &prober.bare(), "unsubscribed"),
            );
            return;
        }
        let avail = self.available_sessions(bare);
        if avail.is_empty() {
            let p = Element::new("presence", ns::CLIENT)
                .attr("from", &bare.to_string())
                .attr("to", &prober.to_string())
                .attr("type", "unavailable");
            self.route(now, p);
            return;
        }
        for sid in avail {
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            let Some(mut p) = s.presence.clone() else {
                continue;
            };
            p.set_attr("from", &s.jid.to_string());
            p.set_attr("to", &prober.to_string());
            self.route(now, p);
        }
    }

    /// Outbound subscription management (sections 3.1.2, 3.1.5, 3.2.2, 3.3.2; Appendix
    /// A.1.1 - A.4.1). The stanza goes out from the user's bare JID.
    fn outbound_subscription(
        &mut self,
        now: Instant,
        sid: SessionId,
        ty: &str,
        contact: Jid,
        mut st: Element,
    ) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let bare = s.jid.bare();
        if contact == bare || self.blocks(&bare, &contact) {
            return;
        }
        st.set_attr("from", &bare.to_string());
        st.set_attr("to", &contact.to_string());
        let Some(u) = self.user_mut(&bare) else {
            return;
        };
        let item = u
            .roster
            .entry(contact.clone())
            .or_insert_with(|| roster::RosterItem::new(contact.clone()));
        let mut act = Act::default();
        match ty {
            "subscribe" => {
                // A.1.1: None -> None + Pending Out, From -> From + Pending Out.
                let changed = (!item.sub_to && !item.ask) || !item.in_roster;
                if !item.sub_to {
                    item.ask = true;
                }
                item.in_roster = true;
                act.save = changed.then_some(true);
                act.route = true;
            }
            "unsubscribe" => {
                // A.2.1: To -> None, Both -> From, Pending Out cancelled.
                let changed = item.sub_to || item.ask;
                item.sub_to = false;
                item.ask = false;
                act.save = changed.then_some(item.in_roster);
                act.route = true;
            }
            "subscribed" => {
                // A.3.1: only an answer to a pending request (subscription
                // pre-approval, section 3.4, is not offered: anything else is ignored).
                if item.pending_in {
                    item.pending_in = false;
                    item.sub_from = true;
                    item.in_roster = true;
                    act.save = Some(true);
                    act.route = true;
                    // Section 3.1.5: the contact now gets our current presence.
                    act.current = true;
                }
            }
            _ => {
                // "unsubscribed", A.4.1: From -> None, Both -> To, Pending In denied.
                if item.sub_from || item.pending_in {
                    let had_from = item.sub_from;
                    item.sub_from = false;
                    item.pending_in = false;
                    act.save = Some(item.in_roster && had_from);
                    act.route = true;
                    // Section 3.2.2: and our unavailable presence.
                    act.unavailable = had_from;
                }
            }
        }
        let live = item.in_roster || item.pending_in;
        if act.save.is_none() && !live {
            u.roster.remove(&contact);
        }
        if let Some(visible) = act.save {
            self.save_roster_item(now, &bare, &contact, visible, None);
        }
        if act.route {
            self.route(now, st);
        }
        if act.current {
            self.send_current_presence(now, &bare, &contact);
            // XEP-0163 (`caps.rs`, `pep.rs`): the new subscriber's last items.
            self.caps_subscription_approved(now, &bare, &contact);
        }
        if act.unavailable {
            self.send_unavailable_to(now, &bare, &contact);
        }
    }

    /// Inbound subscription management (sections 3.1.3, 3.1.6, 3.2.3, 3.3.3; Appendix
    /// A.1.2 - A.4.2): the state changes, then the stanza reaches the user's available
    /// resources stamped with bare JIDs.
    fn inbound_subscription(
        &mut self,
        now: Instant,
        bare: &Jid,
        contact: &Jid,
        ty: &str,
        mut st: Element,
    ) {
        st.set_attr("from", &contact.to_string());
        st.set_attr("to", &bare.to_string());
        let Some(u) = self.user_mut(bare) else {
            return;
        };
        let item = u
            .roster
            .entry(contact.clone())
            .or_insert_with(|| roster::RosterItem::new(contact.clone()));
        let mut act = Act::default();
        match ty {
            "subscribe" => {
                if item.sub_from {
                    // Section 3.1.3: already approved, answer for the user.
                    act.auto_subscribed = true;
                } else if !item.pending_in {
                    // Kept until the user answers, delivered again at each login.
                    item.pending_in = true;
                    act.save = Some(false);
                    act.route = true;
                }
            }
            "subscribed" => {
                // A.3.2: only if we asked.
                if item.ask {
                    item.ask = false;
                    item.sub_to = true;
                    act.save = Some(item.in_roster);
                    act.route = true;
                }
            }
            "unsubscribe" => {
                // A.2.2: From -> None, Both -> To, a pending request withdrawn.
                if item.sub_from || item.pending_in {
                    act.save = Some(item.in_roster && item.sub_from);
                    item.sub_from = false;
                    item.pending_in = false;
                    act.route = true;
                }
            }
            _ => {
                // "unsubscribed", A.4.2: To -> None, Both -> From, Pending Out denied.
                if item.sub_to || item.ask {
                    item.sub_to = false;
                    item.ask = false;
                    act.save = Some(item.in_roster);
                    act.route = true;
                }
            }
        }
        let live = item.in_roster || item.pending_in;
        if act.save.is_none() && !live {
            u.roster.remove(contact);
        }
        if act.auto_subscribed {
            self.route(now, subscription_presence(bare, contact, "subscribed"));
        }
        if let Some(visible) = act.save {
            self.save_roster_item(now, bare, contact, visible, None);
        }
        // `route` here means: deliver to the user's available resources.
        if act.route {
            for sid in self.available_sessions(bare) {
                self.send_to_session(now, sid, st.clone());
            }
        }
    }

    /// The current presence of each of the user's available resources to `to`.
    pub(crate) fn send_current_presence(&mut self, now: Instant, bare: &Jid, to: &Jid) {
        for sid in self.available_sessions(bare) {
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            let Some(mut p) = s.presence.clone() else {
                continue;
            };
            p.set_attr("from", &s.jid.to_string());
            p.set_attr("to", &to.to_string());
            self.route(now, p);
        }
    }

    /// Unavailable presence from each of the user's available resources to `to`.
    pub(crate) fn send_unavailable_to(&mut self, now: Instant, bare: &Jid, to: &Jid) {
        for sid in self.available_sessions(bare) {
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            let p = Element::new("presence", ns::CLIENT)
                .attr("from", &s.jid.to_string())
                .attr("to", &to.to_string())
                .attr("type", "unavailable");
            self.route(now, p);
        }
    }
}

/// What a subscription state change leads to.
#[derive(Default)]
struct Act {
    /// Persist the item; `Some(true)` when the change is visible (version, push).
    save: Option<bool>,
    /// Send the stanza on (outbound: route it; inbound: deliver it to the user).
    route: bool,
    /// Send the user's current presence to the contact.
    current: bool,
    /// Send unavailable presence to the contact.
    unavailable: bool,
    /// Answer `subscribed` for the user.
    auto_subscribed: bool,
}
