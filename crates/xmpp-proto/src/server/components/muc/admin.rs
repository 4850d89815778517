//! Room administration (XEP-0045 sections 8 - 10) and what a room answers about itself:
//! disco#info with the room features and the `muc#roominfo` form (section 6.4),
//! `muc#admin` role and affiliation changes and lists (kick, voice, ban, member /
//! moderator / admin / owner lists), `muc#owner` configuration (sections 10.1 and 10.2)
//! and destruction (section 10.9), and the storage of persistent rooms.

use super::*;
use occupants::Reflect;

/// One item of a `muc#admin` set, checked before anything is applied.
enum AdminChange {
    Role {
        nick: String,
        role: Role,
        reason: Option<String>,
    },
    Affiliation {
        jid: Jid,
        affiliation: Affiliation,
        reason: Option<String>,
    },
}

/// XEP-0045 section 7.4: ids of reflected messages are kept (advertised feature).
const NS_STABLE_ID: &str = "http://jabber.org/protocol/muc#stable_id";

impl Server {
    /// An iq to the room itself.
    pub(super) fn room_iq(&mut self, now: Instant, from: Jid, room_jid: &Jid, st: Element) {
        let ty = stanza::stanza_type(&st).to_string();
        if ty != "get" && ty != "set" {
            return;
        }
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        if room.locked && self.muc_affiliation(room, &from) != Affiliation::Owner {
            // Section 10.1.1: a locked room does not exist yet for anyone else.
            self.muc_bounce(now, &st, StanzaError::new("item-not-found"));
            return;
        }
        let (name, pns, node) = match (st.elements().count(), st.elements().next()) {
            (1, Some(p)) => (p.name.clone(), p.ns.clone(), p.get_attr("node").is_some()),
            _ => {
                // RFC 6120 section 8.2.3.
                self.muc_bounce(now, &st, StanzaError::new("bad-request"));
                return;
            }
        };
        match (ty.as_str(), name.as_str(), pns.as_str()) {
            ("get", "query", disco::NS_DISCO_INFO) if !node => {
                let q = self.room_info(room);
                self.route(now, stanza::iq_result(&st, Some(q)));
            }
            ("get", "query", disco::NS_DISCO_ITEMS) if !node => {
                // Section 6.5: the occupant list is kept private.
                let q = Element::new("query", disco::NS_DISCO_ITEMS);
                self.route(now, stanza::iq_result(&st, Some(q)));
            }
            ("get", "query", disco::NS_DISCO_INFO | disco::NS_DISCO_ITEMS) => {
                self.muc_bounce(now, &st, StanzaError::new("item-not-found"))
            }
            ("get", "ping", NS_PING) => self.route(now, stanza::iq_result(&st, None)),
            ("get", "query", NS_MUC_ADMIN) => self.muc_admin_get(now, from, room_jid, st),
            ("set", "query", NS_MUC_ADMIN) => self.muc_admin_set(now, from, room_jid, st),
            (_, "query", NS_MUC_OWNER) => self.muc_owner(now, from, room_jid, st),
            _ => self.muc_bounce(now, &st, StanzaError::new("service-unavailable")),
        }
    }

    /// Section 6.4: identity, features and the extended information form.
    fn room_info(&self, room: &Room) -> Element {
        let mut q = Element::new("query", disco::NS_DISCO_INFO);
        q.push(
            Element::new("identity", disco::NS_DISCO_INFO)
                .attr("category", "conference")
                .attr("type", "text")
                .attr("name", &room.display_name()),
        );
        let mut features = room.features();
        features.push(NS_STABLE_ID);
        for f in features {
            q.push(Element::new("feature", disco::NS_DISCO_INFO).attr("var", f));
        }
        q.push(room.info_form());
        q
    }

    /// Lists (sections 8.5 voice list, 9.2 ban list, 9.5 member list, 9.8 moderator
    /// list, 10.5 owner list, 10.8 admin list): affiliation lists for admins and owners,
    /// role lists for moderators.
    fn muc_admin_get(&mut self, now: Instant, from: Jid, room_jid: &Jid, st: Element) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        let actor_aff = self.muc_affiliation(room, &from);
        let actor_role = room.by_real(&from).map_or(Role::None, |o| o.role);
        let item = st
            .elements()
            .next()
            .and_then(|q| q.get_child("item", NS_MUC_ADMIN));
        let mut q = Element::new("query", NS_MUC_ADMIN);
        let result = match item.map(|i| (i.get_attr("affiliation"), i.get_attr("role"))) {
            Some((Some(a), None)) => match Affiliation::parse(a) {
                Some(Affiliation::None) | None => Err(StanzaError::new("bad-request")),
                Some(_) if actor_aff < Affiliation::Admin => Err(StanzaError::new("forbidden")),
                Some(wanted) => {
                    for (jid, aff) in &room.affiliations {
                        if *aff == wanted {
                            q.push(
                                Element::new("item", NS_MUC_ADMIN)
                                    .attr("affiliation", aff.as_str())
                                    .attr("jid", &jid.to_string()),
                            );
                        }
                    }
                    Ok(())
                }
            },
            Some((None, Some(r))) => match Role::parse(r) {
                Some(Role::None) | None => Err(StanzaError::new("bad-request")),
                Some(_) if actor_role != Role::Moderator => Err(StanzaError::new("forbidden")),
                Some(wanted) => {
                    for o in room.occupants.iter().filter(|o| o.role == wanted) {
                        q.push(
                            Element::new("item", NS_MUC_ADMIN)
                                .attr("affiliation", self.muc_affiliation(room, &o.real).as_str())
                                .attr("jid", &o.real.to_string())
                                .attr("nick", &o.nick)
                                .attr("role", o.role.as_str()),
                        );
                    }
                    Ok(())
                }
            },
            _ => Err(StanzaError::new("bad-request")),
        };
        match result {
            Ok(()) => self.route(now, stanza::iq_result(&st, Some(q))),
            Err(e) => self.muc_bounce(now, &st, e),
        }
    }

    /// Role changes by nick (section 8.2 kick, 8.3 / 8.4 voice, 9.6 / 9.7 moderator)
    /// and affiliation changes by JID (section 9.1 ban, 9.3 / 9.4 membership, 10.3 -
    /// 10.7 owner and admin), all checked before any is applied (a list modification,
    /// sections 9.2 and 9.5, is all or nothing); the room always keeps an owner
    /// (sections 10.4 and 10.5, `conflict`).
    fn muc_admin_set(&mut self, now: Instant, from: Jid, room_jid: &Jid, st: Element) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        let actor_aff = self.muc_affiliation(room, &from);
        let actor = room.by_real(&from);
        let actor_role = actor.map_or(Role::None, |o| o.role);
        let actor_nick = actor.map(|o| o.nick.clone());
        let items: Vec<Element> = st
            .elements()
            .next()
            .map(|q| {
                q.elements()
                    .filter(|i| i.name == "item" && i.ns == NS_MUC_ADMIN)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut changes = Vec::new();
        let mut refusal = None;
        for item in &items {
            let reason = item.get_child("reason", NS_MUC_ADMIN).map(|r| r.text());
            let check = match (item.get_attr("role"), item.get_attr("affiliation")) {
                (Some(r), None) => {
                    let role = Role::parse(r);
                    let target = item.get_attr("nick").and_then(|n| room.by_nick(n));
                    match (role, target) {
                        (None, _) => Err("bad-request"),
                        (_, None) if item.get_attr("nick").is_none() => Err("bad-request"),
                        (_, None) => Err("item-not-found"),
                        (Some(_), Some(_)) if actor_role != Role::Moderator => Err("forbidden"),
                        (Some(role), Some(t)) => {
                            let t_aff = self.muc_affiliation(room, &t.real);
                            let allowed = match role {
                                // Section 8.2: nobody kicks an admin or owner, nor
                                // someone of higher affiliation.
                                Role::None => t_aff < Affiliation::Admin && t_aff <= actor_aff,
                                // Sections 8.4 / 9.7: voice and moderator rights of
                                // admins and owners are not taken away; moderators are
                                // made and unmade by admins.
                                Role::Visitor | Role::Participant => {
                                    t_aff < Affiliation::Admin
                                        && (t.role != Role::Moderator
                                            || actor_aff >= Affiliation::Admin)
                                }
                                Role::Moderator => actor_aff >= Affiliation::Admin,
                            };
                            if allowed {
                                Ok(AdminChange::Role {
                                    nick: t.nick.clone(),
                                    role,
                                    reason,
                                })
                            } else {
                                Err("not-allowed")
                            }
                        }
                    }
                }
                (None, Some(a)) => {
                    let jid = match (item.get_attr("jid"), item.get_attr("nick")) {
                        (Some(j), _) => Jid::parse(j).ok().map(|j| j.bare()),
                        (None, Some(n)) => room.by_nick(n).map(|o| o.real.bare()),
                        (None, None) => None,
                    };
                    match (Affiliation::parse(a), jid) {
                        (None, _) | (_, None) => Err("bad-request"),
                        _ if actor_aff < Affiliation::Admin => Err("forbidden"),
                        (Some(aff), Some(jid)) => {
                            let current = room.stored_affiliation(&jid);
                            // Sections 10.3 - 10.7: only owners make or unmake
                            // admins and owners.
                            if (aff >= Affiliation::Admin || current >= Affiliation::Admin)
                                && actor_aff != Affiliation::Owner
                            {
                                Err("not-allowed")
                            } else {
                                Ok(AdminChange::Affiliation {
                                    jid,
                                    affiliation: aff,
                                    reason,
                                })
                            }
                        }
                    }
                }
                _ => Err("bad-request"),
            };
            match check {
                Ok(c) => changes.push(c),
                Err(cond) => {
                    refusal = Some(StanzaError::new(cond));
                    break;
                }
            }
        }
        if refusal.is_none() && changes.is_empty() {
            refusal = Some(StanzaError::new("bad-request"));
        }
        if refusal.is_none() {
            let mut owners: BTreeSet<Jid> = room
                .affiliations
                .iter()
                .filter(|(_, a)| **a == Affiliation::Owner)
                .map(|(j, _)| j.clone())
                .collect();
            let had_owner = !owners.is_empty();
            for c in &changes {
                if let AdminChange::Affiliation {
                    jid, affiliation, ..
                } = c
                {
                    if *affiliation == Affiliation::Owner {
                        owners.insert(jid.clone());
                    } else {
                        owners.remove(jid);
                    }
                }
            }
            if had_owner && owners.is_empty() {
                refusal = Some(StanzaError::new("conflict"));
            }
        }
        if let Some(e) = refusal {
            self.muc_bounce(now, &st, e);
            return;
        }
        self.route(now, stanza::iq_result(&st, None));
        for c in changes {
            match c {
                AdminChange::Role { nick, role, reason } => {
                    let children = actor_and_reason(actor_nick.as_deref(), reason);
                    self.muc_apply_role(now, room_jid, &nick, role, children);
                }
                AdminChange::Affiliation {
                    jid,
                    affiliation,
                    reason,
                } => {
                    let children = actor_and_reason(actor_nick.as_deref(), reason);
                    self.muc_apply_affiliation(now, room_jid, &jid, affiliation, children);
                }
            }
        }
    }

    /// A role change: `none` removes the occupant (307, section 8.2), anything else is
    /// reflected with the new role.
    fn muc_apply_role(
        &mut self,
        now: Instant,
        room_jid: &Jid,
        nick: &str,
        role: Role,
        item_children: Vec<Element>,
    ) {
        let Some(room) = self.muc.rooms.get_mut(room_jid) else {
            return;
        };
        let Some(o) = room.occupants.iter_mut().find(|o| o.nick == nick) else {
            return;
        };
        if role == Role::None {
            let real = o.real.clone();
            self.muc_remove(now, room_jid, &real, None, &[307], item_children);
            return;
        }
        o.role = role;
        let o = o.clone();
        let reflect = Reflect {
            item_children,
            ..Reflect::default()
        };
        self.reflect(now, room_jid, &o, &reflect, true);
    }

    /// An affiliation change, then its effect on the user's sessions in the room: a
    /// ban removes them (301, section 9.1), losing membership of a members-only room
    /// too (321, section 9.4), anything else gives them the default role of the new
    /// affiliation (section 5.1, default roles) and is reflected.
    fn muc_apply_affiliation(
        &mut self,
        now: Instant,
        room_jid: &Jid,
        jid: &Jid,
        affiliation: Affiliation,
        item_children: Vec<Element>,
    ) {
        self.muc_set_affiliation(room_jid, jid, affiliation);
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        let sessions: Vec<(Jid, Affiliation)> = room
            .occupants
            .iter()
            .filter(|o| o.real.bare() == *jid)
            .map(|o| (o.real.clone(), self.muc_affiliation(room, &o.real)))
            .collect();
        let members_only = room.config.members_only;
        for (real, aff) in sessions {
            if aff == Affiliation::Outcast {
                self.muc_remove(now, room_jid, &real, None, &[301], item_children.clone());
            } else if members_only && aff < Affiliation::Member {
                self.muc_remove(now, room_jid, &real, None, &[321], item_children.clone());
            } else {
                let Some(room) = self.muc.rooms.get_mut(room_jid) else {
                    return;
                };
                let role = room.default_role(aff);
                let Some(o) = room.by_real_mut(&real) else {
                    continue;
                };
                o.role = role;
                let o = o.clone();
                let reflect = Reflect {
                    item_children: item_children.clone(),
                    ..Reflect::default()
                };
                self.reflect(now, room_jid, &o, &reflect, true);
            }
        }
    }

    /// Sets (and stores, for a persistent room) an affiliation; `none` is not kept.
    pub(super) fn muc_set_affiliation(&mut self, room_jid: &Jid, jid: &Jid, aff: Affiliation) {
        let Some(room) = self.muc.rooms.get_mut(room_jid) else {
            return;
        };
        let bare = jid.bare();
        if aff == Affiliation::None {
            room.affiliations.remove(&bare);
        } else {
            room.affiliations.insert(bare.clone(), aff);
        }
        if room.config.persistent {
            let op = affiliation_op(room_jid, &bare, aff);
            self.store(vec![op]);
        }
    }

    /// Writes the subject of a persistent room.
    pub(super) fn muc_store_subject(&mut self, room_jid: &Jid) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        if room.config.persistent {
            let op = subject_op(room);
            self.store(vec![op]);
        }
    }

    /// `muc#owner` (section 10): the configuration form, its submission (which also
    /// unlocks a new room: an empty submission is an instant room, section 10.1.2), its
    /// cancellation (which destroys a room never configured, section 10.1.3), and room
    /// destruction (section 10.9). Owners only (`forbidden`).
    fn muc_owner(&mut self, now: Instant, from: Jid, room_jid: &Jid, st: Element) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        if self.muc_affiliation(room, &from) != Affiliation::Owner {
            self.muc_bounce(now, &st, StanzaError::new("forbidden"));
            return;
        }
        let max_history = self.muc_max_history(room_jid.domain());
        let Some(q) = st.elements().next().cloned() else {
            return;
        };
        if st.get_attr("type") == Some("get") {
            let form = room.config.to_form("form", max_history);
            let q = Element::new("query", NS_MUC_OWNER).child(form);
            self.route(now, stanza::iq_result(&st, Some(q)));
            return;
        }
        if let Some(d) = q.get_child("destroy", NS_MUC_OWNER) {
            let d = d.clone();
            self.muc_destroy(now, room_jid, Some(&d));
            self.route(now, stanza::iq_result(&st, None));
            return;
        }
        let Some(x) = q.get_child("x", NS_DATA) else {
            self.muc_bounce(now, &st, StanzaError::new("bad-request"));
            return;
        };
        match x.get_attr("type") {
            Some("cancel") => {
                if room.locked {
                    self.muc_destroy(now, room_jid, None);
                }
                self.route(now, stanza::iq_result(&st, None));
            }
            Some("submit") => {
                let x = x.clone();
                self.muc_configure(now, room_jid, &x, st);
            }
            _ => self.muc_bounce(now, &st, StanzaError::new("bad-request")),
        }
    }

    /// Section 10.2: a submitted configuration. Storage follows persistence (written
    /// whole when the room becomes persistent, removed when it stops being so) and the
    /// owner's result waits until it is durable; occupants learn of the change (104, and
    /// 172 / 173 when anonymity changed, section 10.2.1), and a room turned members-only
    /// loses its non-members (322).
    fn muc_configure(&mut self, now: Instant, room_jid: &Jid, x: &Element, st: Element) {
        let max_history = self.muc_max_history(room_jid.domain());
        let Some(room) = self.muc.rooms.get_mut(room_jid) else {
            return;
        };
        let old = room.config.clone();
        if let Err(condition) = room.config.apply_form(x, max_history) {
            self.muc_bounce(now, &st, StanzaError::new(condition));
            return;
        }
        let was_locked = room.locked;
        room.locked = false;
        while room.history.len() > room.config.history_length {
            room.history.pop_front();
        }
        let new = room.config.clone();
        let mut ops = Vec::new();
        if new.persistent {
            ops.push(index_op(room));
            ops.push(config_op(room, max_history));
            if !old.persistent {
                for (jid, aff) in &room.affiliations {
                    ops.push(affiliation_op(room_jid, jid, *aff));
                }
                if room.subject.is_some() {
                    ops.push(subject_op(room));
                }
            }
        } else if old.persistent {
            ops.extend(delete_ops(room_jid));
        }
        let entry = new.persistent.then(|| IndexEntry {
            name: new.name.clone(),
            public: new.public,
        });
        self.muc_index_set(room_jid, entry);
        if !was_locked {
            let mut codes = vec![104];
            if new.non_anonymous != old.non_anonymous {
                codes.push(if new.non_anonymous { 172 } else { 173 });
            }
            self.muc_notify(now, room_jid, &codes);
        }
        if new.members_only && !old.members_only {
            let outsiders: Vec<Jid> = self
                .muc
                .rooms
                .get(room_jid)
                .map(|r| {
                    r.occupants
                        .iter()
                        .filter(|o| self.muc_affiliation(r, &o.real) < Affiliation::Member)
                        .map(|o| o.real.clone())
                        .collect()
                })
                .unwrap_or_default();
            for real in outsiders {
                self.muc_remove(now, room_jid, &real, None, &[322], Vec::new());
            }
        }
        // An owner configuring from outside may have made an empty room temporary.
        self.muc_room_emptied(room_jid);
        if ops.is_empty() {
            self.route(now, stanza::iq_result(&st, None));
            return;
        }
        self.store_then(ops, move |s, now, ok| {
            if ok {
                s.route(now, stanza::iq_result(&st, None));
            } else {
                s.muc_bounce(now, &st, StanzaError::new("internal-server-error"));
            }
        });
    }

    /// A status message from the room to every occupant (section 10.2.1).
    fn muc_notify(&mut self, now: Instant, room_jid: &Jid, codes: &[u16]) {
        let Some(room) = self.muc.rooms.get(room_jid) else {
            return;
        };
        let mut x = Element::new("x", NS_MUC_USER);
        for c in codes {
            x.push(Element::new("status", NS_MUC_USER).attr("code", &c.to_string()));
        }
        let out: Vec<Element> = room
            .occupants
            .iter()
            .map(|o| {
                Element::new("message", ns::CLIENT)
                    .attr("from", &room_jid.to_string())
                    .attr("to", &o.real.to_string())
                    .attr("type", "groupchat")
                    .child(x.clone())
            })
            .collect();
        for m in out {
            self.route(now, m);
        }
    }

    /// Section 10.9: every occupant gets unavailable presence with `<destroy/>` (the
    /// alternate venue and reason the owner gave), and the room leaves memory and
    /// storage.
    pub(super) fn muc_destroy(&mut self, now: Instant, room_jid: &Jid, destroy: Option<&Element>) {
        let Some(room) = self.muc.rooms.remove(room_jid) else {
            return;
        };
        let mut d = Element::new("destroy", NS_MUC_USER);
        if let Some(given) = destroy {
            if let Some(j) = given.get_attr("jid") {
                d.set_attr("jid", j);
            }
            for c in given.elements() {
                if c.name == "reason" || c.name == "password" {
                    d.push(Element::new(&c.name, NS_MUC_USER).text_node(&c.text()));
                }
            }
        }
        for o in &room.occupants {
            let mut x = room::user_x(Affiliation::None, Role::None, None, None, &[]);
            x.push(d.clone());
            let p = Element::new("presence", ns::CLIENT)
                .attr("from", &room.occupant_jid(&o.nick).to_string())
                .attr("to", &o.real.to_string())
                .attr("type", "unavailable")
                .child(x);
            self.route(now, p);
        }
        if room.config.persistent {
            self.store(delete_ops(room_jid));
            self.muc_index_set(room_jid, None);
        }
    }

    /// Keeps the in-memory room index in line with what is stored.
    fn muc_index_set(&mut self, room_jid: &Jid, entry: Option<IndexEntry>) {
        let (Some(Index::Ready(rooms)), Some(node)) =
            (self.muc.indexes.get_mut(room_jid.domain()), room_jid.node())
        else {
            return;
        };
        match entry {
            Some(e) => {
                rooms.insert(node.to_string(), e);
            }
            None => {
                rooms.remove(node);
            }
        }
    }
}

/// `<actor nick/>` and `<reason/>` for the `<item/>` of a presence (sections 8.2, 9.1).
fn actor_and_reason(actor: Option<&str>, reason: Option<String>) -> Vec<Element> {
    let mut v = Vec::new();
    if let Some(n) = actor {
        v.push(Element::new("actor", NS_MUC_USER).attr("nick", n));
    }
    if let Some(r) = reason {
        v.push(Element::new("reason", NS_MUC_USER).text_node(&r));
    }
    v
}

fn room_parts(room_jid: &Jid) -> (String, String) {
    (
        room_jid.domain().to_string(),
        room_jid.node().unwrap_or_default().to_string(),
    )
}

fn index_op(room: &Room) -> StoreOp {
    let (host, node) = room_parts(&room.jid);
    let value = Element::new("room", NS_STORE)
        .attr("name", &room.config.name)
        .attr("public", if room.config.public { "1" } else { "0" });
    StoreOp::Put {
        host,
        user: String::new(),
        store: STORE_ROOMS.into(),
        key: node,
        value: stanza::to_stored(&value),
    }
}

fn config_op(room: &Room, max_history: usize) -> StoreOp {
    let (host, user) = room_parts(&room.jid);
    StoreOp::Put {
        host,
        user,
        store: STORE_CONFIG.into(),
        key: "config".into(),
        value: stanza::to_stored(&room.config.to_form("submit", max_history)),
    }
}

fn subject_op(room: &Room) -> StoreOp {
    let (host, user) = room_parts(&room.jid);
    match &room.subject {
        Some(s) => StoreOp::Put {
            host,
            user,
            store: STORE_CONFIG.into(),
            key: "subject".into(),
            value: stanza::to_stored(
                &Element::new("subject", ns::CLIENT)
                    .attr("nick", &s.nick)
                    .attr("stamp", &s.stamp)
                    .text_node(&s.text),
            ),
        },
        None => StoreOp::Delete {
            host,
            user,
            store: STORE_CONFIG.into(),
            key: "subject".into(),
        },
    }
}

fn affiliation_op(room_jid: &Jid, jid: &Jid, aff: Affiliation) -> StoreOp {
    let (host, user) = room_parts(room_jid);
    if aff == Affiliation::None {
        return StoreOp::Delete {
            host,
            user,
            store: STORE_AFFILIATIONS.into(),
            key: jid.to_string(),
        };
    }
    StoreOp::Put {
        host,
        user,
        store: STORE_AFFILIATIONS.into(),
        key: jid.to_string(),
        value: stanza::to_stored(
            &Element::new("item", NS_MUC_ADMIN).attr("affiliation", aff.as_str()),
        ),
    }
}

fn delete_ops(room_jid: &Jid) -> Vec<StoreOp> {
    let (host, user) = room_parts(room_jid);
    vec![
        StoreOp::DeleteAll {
            host: host.clone(),
            user: user.clone(),
            store: Some(STORE_CONFIG.into()),
        },
        StoreOp::DeleteAll {
            host: host.clone(),
            user: user.clone(),
            store: Some(STORE_AFFILIATIONS.into()),
        },
        StoreOp::Delete {
            host,
            user: String::new(),
            store: STORE_ROOMS.into(),
            key: user,
        },
    ]
}
