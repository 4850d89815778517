//! Occupants (XEP-0045 section 7): entering a room (with its refusals), presence
//! reflected with roles, affiliations and status codes, nick changes, exits, groupchat
//! messages and their history, subject changes, private messages and iq between
//! occupants, and mediated invitations.

use super::*;
use room::{HistoryItem, Occupant, Subject};

/// How an occupant's presence is reflected to the room (sections 7.2.2 - 7.7, 8, 9).
#[derive(Default)]
pub(super) struct Reflect {
    pub(super) unavailable: bool,
    /// Section 7.6: the new nick, in the unavailable presence from the old one.
    pub(super) new_nick: Option<String>,
    /// Status codes for everyone; 110 is added for the occupant itself.
    pub(super) codes: Vec<u16>,
    /// Status codes only the occupant itself gets (100, 201).
    pub(super) self_codes: Vec<u16>,
    /// Children of `<item/>` (`actor`, `reason`: sections 8.2, 9.1).
    pub(super) item_children: Vec<Element>,
    /// More children of `<x/>` (`destroy`, section 10.9).
    pub(super) x_children: Vec<Element>,
    /// Shown instead of the stored affiliation (room destruction).
    pub(super) affiliation: Option<Affiliation>,
    /// The id of the presence being answered, kept in the self-presence.
    pub(super) self_id: Option<String>,
}

impl Server {
    /// Section 7.2: a user enters (the room exists; `created` when this join made it).
    /// The refusals of sections 7.2.5 - 7.2.10, then in the order of section 7.1: the
    /// occupants' presence to the newcomer, its own to everyone (itself last, status
    /// 110, section 7.2.2), history, subject.
    pub(super) fn muc_join(
        &mut self,
        now: Instant,
        from: Jid,
        to: Jid,
        st: Element,
        created: bool,
    ) {
        let room_jid = to.bare();
        let nick = to.resource().unwrap_or_default().to_string();
        let Some(room) = self.muc.rooms.get(&room_jid) else {
            return;
        };
        let aff = self.muc_affiliation(room, &from);
        let x = st.get_child("x", NS_MUC);
        let password = x
            .and_then(|x| x.get_child("password", NS_MUC))
            .map(|p| p.text());
        let full = room
            .config
            .max_users
            .is_some_and(|m| room.occupants.len() >= m);
        let refusal = if room.locked && aff != Affiliation::Owner {
            // Section 7.2.10: nobody else enters a room before it is configured.
            Some(StanzaError::new("item-not-found"))
        } else if aff == Affiliation::Outcast {
            // Section 7.2.7: banned.
            Some(StanzaError::new("forbidden"))
        } else if room.by_nick(&nick).is_some() {
            // Section 7.2.8.
            Some(StanzaError::new("conflict"))
        } else if room.config.members_only && aff < Affiliation::Member {
            // Section 7.2.6.
            Some(StanzaError::new("registration-required"))
        } else if room
            .config
            .secret()
            .is_some_and(|s| password.as_deref() != Some(s))
        {
            // Section 7.2.5.
            Some(StanzaError::new("not-authorized"))
        } else if full && aff < Affiliation::Admin {
            // Section 7.2.9 (owners and admins still enter).
            let mut e = StanzaError::new("service-unavailable");
            e.kind = "wait";
            Some(e)
        } else {
            None
        };
        if let Some(e) = refusal {
            self.muc_bounce(now, &st, e);
            if created {
                self.muc.rooms.remove(&room_jid);
            }
            return;
        }
        let role = room.default_role(aff);
        let occupant = Occupant {
            nick,
            real: from.clone(),
            role,
            presence: room::strip_muc(&st),
        };
        let mut self_codes = Vec::new();
        if room.config.non_anonymous {
            self_codes.push(100);
        }
        if created {
            self_codes.push(201);
        }
        let history = x.and_then(|x| x.get_child("history", NS_MUC));
        let after = self.room_welcome(now, room, &from, history);
        let existing: Vec<Element> = room
            .occupants
            .iter()
            .map(|o| self.occupant_presence(room, o, &from, role, &Reflect::default()))
            .collect();
        for p in existing {
            self.route(now, p);
        }
        if let Some(r) = self.muc.rooms.get_mut(&room_jid) {
            r.occupants.push(occupant.clone());
        }
        let reflect = Reflect {
            self_codes,
            self_id: st.get_attr("id").map(str::to_string),
            ..Reflect::default()
        };
        self.reflect(now, &room_jid, &occupant, &reflect, true);
        for m in after {
            self.route(now, m);
        }
    }

    /// History (sections 7.2.13 and 7.2.14, XEP-0203 stamps) and subject (section
    /// 7.2.15, stamped with the time it was set) for a user who just entered.
    fn room_welcome(
        &self,
        now: Instant,
        room: &Room,
        to: &Jid,
        request: Option<&Element>,
    ) -> Vec<Element> {
        let mut out = room.history_for(now, request);
        let subject = match &room.subject {
            Some(Subject { nick, text, stamp }) => {
                let from = if nick.is_empty() {
                    room.jid.clone()
                } else {
                    room.occupant_jid(nick)
                };
                Element::new("message", ns::CLIENT)
                    .attr("from", &from.to_string())
                    .attr("type", "groupchat")
                    .child(Element::new("subject", ns::CLIENT).text_node(text))
                    .child(
                        Element::new("delay", NS_DELAY)
                            .attr("from", &room.jid.to_string())
                            .attr("stamp", stamp),
                    )
            }
            None => Element::new("message", ns::CLIENT)
                .attr("from", &room.jid.to_string())
                .attr("type", "groupchat")
                .child(Element::new("subject", ns::CLIENT)),
        };
        out.push(subject);
        for m in &mut out {
            m.set_attr("to", &to.to_string());
        }
        out
    }

    /// Available presence to `room/nick` from a user: entering, a presence change
    /// (section 7.7) or a nick change (section 7.6).
    pub(super) fn muc_presence(&mut self, now: Instant, from: Jid, to: Jid, st: Element) {
        let room_jid = to.bare();
        let nick = to.resource().unwrap_or_default().to_string();
        let Some(room) = self.muc.rooms.get(&room_jid) else {
            return;
        };
        let Some(current) = room.by_real(&from).map(|o| o.nick.clone()) else {
            if st.get_child("x", NS_MUC).is_some() {
                self.muc_join(now, from, to, st, false);
            } else {
                self.muc_not_in_room(now, &from, &to);
            }
            return;
        };
        if current != nick {
            self.muc_nick_change(now, from, &room_jid, current, nick, st);
            return;
        }
        // A client that joins again from the same session (it lost track: `<x/>`
        // again) gets the room state once more.
        let rejoin = st.get_child("x", NS_MUC).is_some();
        let Some(r) = self.muc.rooms.get_mut(&room_jid) else {
            return;
        };
        let Some(o) = r.by_real_mut(&from) else {
            return;
        };
        o.presence = room::strip_muc(&st);
        let occupant = o.clone();
        let mut after = Vec::new();
        if rejoin {
            let Some(room) = self.muc.rooms.get(&room_jid) else {
                return;
            };
            let history = st
                .get_child("x", NS_MUC)
                .and_then(|x| x.get_child("history", NS_MUC));
            after = self.room_welcome(now, room, &from, history);
            let others: Vec<Element> = room
                .occupants
                .iter()
                .filter(|o| o.real != from)
                .map(|o| self.occupant_presence(room, o, &from, occupant.role, &Reflect::default()))
                .collect();
            for p in others {
                self.route(now, p);
            }
        }
        let reflect = Reflect {
            self_id: st.get_attr("id").map(str::to_string),
            ..Reflect::default()
        };
        self.reflect(now, &room_jid, &occupant, &reflect, true);
        for m in after {
            self.route(now, m);
        }
    }

    /// Section 7.6: unavailable from the old nick with the new one and status 303,
    /// then available from the new nick.
    fn muc_nick_change(
        &mut self,
        now: Instant,
        from: Jid,
        room_jid: &Jid,
        old: String,
        new: String,
        st: Element,
    ) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        if room.by_nick(&new).is_some() {
            // Section 7.6: in use.
            self.muc_bounce(now, &st, StanzaError::new("conflict"));
            return;
        }
        let Some(before) = room.by_nick(&old).cloned() else {
            return;
        };
        let gone = Reflect {
            unavailable: true,
            new_nick: Some(new.clone()),
            codes: vec![303],
            ..Reflect::default()
        };
        self.reflect(now, room_jid, &before, &gone, true);
        let Some(o) = self
            .muc
            .rooms
            .get_mut(room_jid)
            .and_then(|r| r.by_real_mut(&from))
        else {
            return;
        };
        o.nick = new;
        o.presence = room::strip_muc(&st);
        let after = o.clone();
        let back = Reflect {
            self_id: st.get_attr("id").map(str::to_string),
            ..Reflect::default()
        };
        self.reflect(now, room_jid, &after, &back, true);
    }

    /// Removes the occupant whose session is `real` (section 7.14 exit; kick, ban and
    /// the other removals of sections 8.2, 9.1, 9.4 with their status codes): the
    /// unavailable presence to everyone, itself included (110), and a temporary room
    /// that is now empty goes away (section 4.2).
    pub(super) fn muc_remove(
        &mut self,
        now: Instant,
        room_jid: &Jid,
        real: &Jid,
        status: Option<Element>,
        codes: &[u16],
        item_children: Vec<Element>,
    ) {
        let Some(room) = self.muc.rooms.get_mut(room_jid) else {
            return;
        };
        let Some(i) = room.occupants.iter().position(|o| o.real == *real) else {
            return;
        };
        let mut o = room.occupants.remove(i);
        o.role = Role::None;
        if let Some(s) = status {
            o.presence = s;
        }
        let reflect = Reflect {
            unavailable: true,
            codes: codes.to_vec(),
            item_children,
            ..Reflect::default()
        };
        self.reflect(now, room_jid, &o, &reflect, true);
        self.muc_room_emptied(room_jid);
    }

    /// A temporary room with nobody left is destroyed (section 4.2, room types).
    pub(super) fn muc_room_emptied(&mut self, room_jid: &Jid) {
        let gone = self
            .muc
            .rooms
            .get(room_jid)
            .is_some_and(|r| r.occupants.is_empty() && (!r.config.persistent || r.locked));
        if gone {
            self.muc.rooms.remove(room_jid);
        }
    }

    /// An error from an occupant's real JID. One saying the occupant is not there any
    /// more (its session ended, its server is unreachable) removes it with status 333
    /// (not with 307: a disconnect is no kick); any other
    /// message error answering a private message goes back to the sender's occupant
    /// JID, from the occupant's.
    pub(super) fn muc_error_from(&mut self, now: Instant, to: &Jid, from: &Jid, st: Element) {
        let room_jid = to.bare();
        let Some(room) = self.muc.rooms.get(&room_jid) else {
            return;
        };
        let Some(sender) = room.by_real(from) else {
            return;
        };
        if recipient_gone(&st) {
            self.muc_remove(now, &room_jid, from, None, &[333], Vec::new());
            return;
        }
        let target = to.resource().and_then(|n| room.by_nick(n));
        if let (Some(t), "message") = (target, st.name.as_str()) {
            let mut e = st.clone();
            e.set_attr("from", &room.occupant_jid(&sender.nick).to_string());
            e.set_attr("to", &t.real.to_string());
            self.route(now, e);
        }
    }

    /// Section 7.2.18: presence without `<x/>` from someone who is not an occupant (a
    /// client that lost track of the room, or a groupchat 1.0 join) gets an explicit
    /// removal (110, 307, 333) rather than an accidental join.
    pub(super) fn muc_not_in_room(&mut self, now: Instant, from: &Jid, to: &Jid) {
        let mut x = room::user_x(Affiliation::None, Role::None, None, None, &[110, 307, 333]);
        if let Some(item) = x.get_child_mut("item", NS_MUC_USER) {
            item.push(Element::new("reason", NS_MUC_USER).text_node("You are not in the room."));
        }
        let p = Element::new("presence", ns::CLIENT)
            .attr("from", &to.to_string())
            .attr("to", &from.to_string())
            .attr("type", "unavailable")
            .child(x);
        self.route(now, p);
    }

    /// `o`'s presence as the occupant `viewer` (with `viewer_role`) sees it: real JID
    /// only for moderators and in non-anonymous rooms (sections 7.2.3, 7.2.4).
    pub(super) fn occupant_presence(
        &self,
        room: &Room,
        o: &Occupant,
        viewer: &Jid,
        viewer_role: Role,
        r: &Reflect,
    ) -> Element {
        let myself = *viewer == o.real;
        let mut p = if r.unavailable {
            let mut p = Element::new("presence", ns::CLIENT).attr("type", "unavailable");
            for s in o.presence.elements().filter(|e| e.name == "status") {
                p.push(s.clone());
            }
            p
        } else {
            o.presence.clone()
        };
        p.set_attr("from", &room.occupant_jid(&o.nick).to_string());
        p.set_attr("to", &viewer.to_string());
        if let (true, Some(id)) = (myself, &r.self_id) {
            p.set_attr("id", id);
        }
        let show_jid = myself || room.config.non_anonymous || viewer_role == Role::Moderator;
        let mut codes = r.codes.clone();
        if myself {
            codes.push(110);
            codes.extend(&r.self_codes);
        }
        codes.sort_unstable();
        codes.dedup();
        let aff = r
            .affiliation
            .unwrap_or_else(|| self.muc_affiliation(room, &o.real));
        let mut x = room::user_x(
            aff,
            o.role,
            show_jid.then_some(&o.real),
            r.new_nick.as_deref(),
            &codes,
        );
        if let Some(item) = x.get_child_mut("item", NS_MUC_USER) {
            for c in &r.item_children {
                item.push(c.clone());
            }
        }
        for c in &r.x_children {
            x.push(c.clone());
        }
        p.push(x);
        p
    }

    /// `o`'s presence to every occupant, then to `o` itself when `to_self`.
    pub(super) fn reflect(
        &mut self,
        now: Instant,
        room_jid: &Jid,
        o: &Occupant,
        r: &Reflect,
        to_self: bool,
    ) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        let mut out: Vec<Element> = room
            .occupants
            .iter()
            .filter(|v| v.real != o.real)
            .map(|v| self.occupant_presence(room, o, &v.real, v.role, r))
            .collect();
        if to_self {
            out.push(self.occupant_presence(room, o, &o.real, o.role, r));
        }
        for p in out {
            self.route(now, p);
        }
    }

    /// Section 7.4 (and 8.1 for subject changes): an occupant with voice speaks to all;
    /// messages with a body are kept for the history with an XEP-0203 stamp.
    pub(super) fn muc_groupchat(&mut self, now: Instant, from: Jid, room_jid: &Jid, st: Element) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        let Some(o) = room.by_real(&from) else {
            // Section 7.4: only occupants.
            self.muc_bounce(now, &st, StanzaError::new("not-acceptable"));
            return;
        };
        let nick = o.nick.clone();
        let role = o.role;
        let has_body = stanza::has_body(&st);
        let subject = st
            .get_child("subject", ns::CLIENT)
            .filter(|_| !has_body)
            .map(|s| s.text());
        let may_speak = role >= Role::Participant;
        let may_set_subject = role == Role::Moderator || (room.config.change_subject && may_speak);
        if !may_speak || (subject.is_some() && !may_set_subject) {
            // Section 7.4 (visitors in a moderated room), section 8.1.
            self.muc_bounce(now, &st, StanzaError::new("forbidden"));
            return;
        }
        let mut m = st;
        m.set_attr("from", &room.occupant_jid(&nick).to_string());
        m.remove_attr("to");
        let recipients: Vec<Jid> = room.occupants.iter().map(|o| o.real.clone()).collect();
        let stamp = stanza::datetime(self.unix_now(now));
        for r in recipients {
            let mut copy = m.clone();
            copy.set_attr("to", &r.to_string());
            self.route(now, copy);
        }
        let Some(room) = self.muc.rooms.get_mut(room_jid) else {
            return;
        };
        if has_body {
            let mut kept = m;
            // Section 7.9: history an owner brings along keeps its own stamps.
            if kept.get_child("delay", NS_DELAY).is_none() {
                kept.push(
                    Element::new("delay", NS_DELAY)
                        .attr("from", &room_jid.to_string())
                        .attr("stamp", &stamp),
                );
            }
            let chars = kept.to_xml(ns::CLIENT).len();
            room.remember(HistoryItem {
                message: kept,
                at: now,
                chars,
            });
        } else if let Some(text) = subject {
            room.subject = Some(Subject { nick, text, stamp });
            self.muc_store_subject(room_jid);
        }
    }

    /// Section 7.5: a private message to another occupant, from our occupant JID.
    pub(super) fn muc_private_message(&mut self, now: Instant, from: Jid, to: Jid, st: Element) {
        let Some(room) = self.muc.rooms.get(&to.bare()) else {
            return;
        };
        let Some(sender) = room.by_real(&from) else {
            self.muc_bounce(now, &st, StanzaError::new("not-acceptable"));
            return;
        };
        if stanza::stanza_type(&st) == "groupchat" {
            self.muc_bounce(now, &st, StanzaError::new("bad-request"));
            return;
        }
        let Some(target) = room.by_nick(to.resource().unwrap_or_default()) else {
            self.muc_bounce(now, &st, StanzaError::new("item-not-found"));
            return;
        };
        let mut m = st.clone();
        m.set_attr("from", &room.occupant_jid(&sender.nick).to_string());
        m.set_attr("to", &target.real.to_string());
        if m.get_child("x", NS_MUC_USER).is_none() {
            // Section 7.5: the service adds `<x/>` (for XEP-0280 carbons).
            m.push(Element::new("x", NS_MUC_USER));
        }
        self.route(now, m);
    }

    /// An iq to an occupant JID: an XEP-0410 self-ping is answered by the room,
    /// anything else goes to the occupant (and answers back) with occupant JIDs.
    pub(super) fn occupant_iq(&mut self, now: Instant, from: Jid, to: Jid, st: Element) {
        let ty = stanza::stanza_type(&st).to_string();
        let request = ty == "get" || ty == "set";
        let Some(room) = self.muc.rooms.get(&to.bare()) else {
            return;
        };
        let nick = to.resource().unwrap_or_default();
        let Some(sender) = room.by_real(&from) else {
            // Section 6.6.
            if request {
                self.muc_bounce(now, &st, StanzaError::new("bad-request"));
            }
            return;
        };
        let ping = st.get_child("ping", NS_PING).is_some();
        if request && ping && sender.nick == nick {
            self.route(now, stanza::iq_result(&st, None));
            return;
        }
        let Some(target) = room.by_nick(nick) else {
            if request {
                self.muc_bounce(now, &st, StanzaError::new("item-not-found"));
            }
            return;
        };
        let mut fwd = st.clone();
        fwd.set_attr("from", &room.occupant_jid(&sender.nick).to_string());
        fwd.set_attr("to", &target.real.to_string());
        self.route(now, fwd);
    }

    /// A message to the room that is not groupchat: mediated invitations and their
    /// declines (section 7.8.2).
    pub(super) fn muc_room_message(
        &mut self,
        now: Instant,
        from: Jid,
        room_jid: &Jid,
        st: Element,
    ) {
        let x = st.get_child("x", NS_MUC_USER);
        let invites: Vec<Element> = x
            .map(|x| {
                x.elements()
                    .filter(|e| e.name == "invite")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let declines: Vec<Element> = x
            .map(|x| {
                x.elements()
                    .filter(|e| e.name == "decline")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !invites.is_empty() {
            self.muc_invite(now, from, room_jid, &st, invites);
        } else if !declines.is_empty() {
            for d in declines {
                let Some(to) = d.get_attr("to").and_then(|t| Jid::parse(t).ok()) else {
                    continue;
                };
                let mut e = d.clone();
                e.remove_attr("to");
                e.set_attr("from", &from.bare().to_string());
                let m = Element::new("message", ns::CLIENT)
                    .attr("from", &room_jid.to_string())
                    .attr("to", &to.to_string())
                    .child(Element::new("x", NS_MUC_USER).child(e));
                self.route(now, m);
            }
        } else {
            self.muc_bounce(now, &st, StanzaError::new("bad-request"));
        }
    }

    /// Section 7.8.2: the room sends the invitation on, from itself, with the inviter's
    /// real JID and the room password; in a members-only room the invitee becomes a
    /// member when the inviter may invite (admins and owners, or anyone with
    /// `allowinvites`).
    fn muc_invite(
        &mut self,
        now: Instant,
        from: Jid,
        room_jid: &Jid,
        st: &Element,
        invites: Vec<Element>,
    ) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        if room.by_real(&from).is_none() {
            self.muc_bounce(now, st, StanzaError::new("not-acceptable"));
            return;
        }
        let aff = self.muc_affiliation(room, &from);
        if room.config.members_only && aff < Affiliation::Admin && !room.config.allow_invites {
            self.muc_bounce(now, st, StanzaError::new("forbidden"));
            return;
        }
        let mut out = Vec::new();
        let mut new_members = Vec::new();
        for inv in invites {
            let Some(to) = inv.get_attr("to").and_then(|t| Jid::parse(t).ok()) else {
                self.muc_bounce(now, st, StanzaError::new("jid-malformed"));
                return;
            };
            let mut e = inv.clone();
            e.remove_attr("to");
            e.set_attr("from", &from.to_string());
            let mut x = Element::new("x", NS_MUC_USER).child(e);
            if let Some(secret) = room.config.secret() {
                x.push(Element::new("password", NS_MUC_USER).text_node(secret));
            }
            let reason = inv
                .get_child("reason", NS_MUC_USER)
                .map(|r| format!(": {}", r.text()))
                .unwrap_or_default();
            let text = format!("{} invites you to the room {room_jid}{reason}", from.bare());
            let mut m = Element::new("message", ns::CLIENT)
                .attr("from", &room_jid.to_string())
                .attr("to", &to.to_string());
            if let Some(id) = st.get_attr("id") {
                m.set_attr("id", id);
            }
            m.push(x);
            m.push(Element::new("body", ns::CLIENT).text_node(&text));
            out.push(m);
            if room.config.members_only && room.stored_affiliation(&to) == Affiliation::None {
                new_members.push(to.bare());
            }
        }
        for j in new_members {
            self.muc_set_affiliation(room_jid, &j, Affiliation::Member);
        }
        for m in out {
            self.route(now, m);
        }
    }
}

/// Whether an error says its sender's side is gone (RFC 6120 section 8.3.3: the
/// conditions a server answers for a session or a domain it cannot reach).
fn recipient_gone(st: &Element) -> bool {
    let Some(e) = st.get_child("error", ns::CLIENT) else {
        return false;
    };
    e.elements().any(|c| {
        c.ns == ns::STANZAS
            && matches!(
                c.name.as_str(),
                "service-unavailable"
                    | "item-not-found"
                    | "recipient-unavailable"
                    | "remote-server-not-found"
                    | "remote-server-timeout"
                    | "gone"
            )
    })
}
