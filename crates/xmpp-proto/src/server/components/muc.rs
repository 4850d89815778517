//! Chat-room services (XEP-0045) on their own domains (Prosody's `Component
//! "conference.example.org" "muc"`): the component the router hands every stanza whose
//! `to` is a [`MucService`] domain ([`Server::muc_handle`]).
//!
//! ```text
//! route() -> muc_handle(from, stanza)
//!   to = service            -> disco#info / disco#items (public rooms, section 6)
//!   to = room, not in memory -> room index of the service loaded (once), then the
//!                              room's stored state if it is a persistent room, the
//!                              stanza waiting meanwhile; else join = create
//!   to = room[/nick]        -> occupants.rs: join, presence, nick change, leave,
//!                              groupchat, private messages, invitations
//!                              admin.rs: muc#admin (roles, affiliations), muc#owner
//!                              (configuration form, destruction), room disco
//! ```
//!
//! Every stanza to an occupant goes out with [`Server::route`] from `room@service/nick`,
//! so local sessions and (later) remote servers are reached alike. A user going offline
//! without leaving is covered by RFC 6121 section 4.6: rooms got directed presence, so
//! the unavailable presence the session end broadcasts (`presence.rs`) reaches
//! [`Server::muc_handle`] like an explicit exit. An error saying an occupant is gone
//! (bounced by its server when the session ended some other way) removes the occupant
//! (status 333).
//!
//! Storage (host = the service domain, Prosody's model):
//! - user `""`, store `muc_rooms`: the room index, one key per persistent room
//!   (localpart), value `<room xmlns='urn:xmppd:muc' name='' public='1'/>`, so that room
//!   discovery lists rooms not in memory; loaded on the first stanza to the service
//!   (there is no start-up hook: loading is lazy and stanzas wait for it);
//! - user = room localpart, store `muc_config`: key `config`, the `muc#roomconfig` form
//!   as submitted (`type='submit'`, every field), key `subject`;
//! - user = room localpart, store `muc_affiliations`: one key per bare JID, value
//!   `<item xmlns='http://jabber.org/protocol/muc#admin' affiliation='member'/>`.
//!
//! Discussion history is kept in memory (as Prosody without a message archive).

use super::*;

mod admin;
mod occupants;
mod room;

use room::{Affiliation, Role, Room, RoomConfig};

pub(crate) const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub(crate) const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub(crate) const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub(crate) const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0004 data forms.
pub(crate) const NS_DATA: &str = "jabber:x:data";
/// XEP-0203 delayed delivery (history, section 7.2.13).
pub(crate) const NS_DELAY: &str = "urn:xmpp:delay";
const NS_PING: &str = "urn:xmpp:ping";
/// XEP-0068 FORM_TYPE of the configuration form (XMPP Registrar considerations).
const FORM_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// XEP-0068 FORM_TYPE of the room information form (section 6.4).
const FORM_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// Our own namespace for the room index entries.
const NS_STORE: &str = "urn:xmppd:muc";

const STORE_ROOMS: &str = "muc_rooms";
const STORE_CONFIG: &str = "muc_config";
const STORE_AFFILIATIONS: &str = "muc_affiliations";

/// A stanza waiting for storage, with its sender.
type Queued = Vec<(Jid, Element)>;

/// All rooms of all MUC services.
#[derive(Default)]
pub(crate) struct MucState {
    /// Rooms in memory (every room with occupants, and persistent rooms once loaded),
    /// by bare room JID.
    rooms: HashMap<Jid, Room>,
    /// The persistent-room index of each service, by domain.
    indexes: HashMap<String, Index>,
    /// Persistent rooms being loaded, with the stanzas waiting for them.
    loading: HashMap<Jid, Queued>,
}

enum Index {
    Loading(Queued),
    /// Persistent rooms by localpart.
    Ready(BTreeMap<String, IndexEntry>),
}

/// What room discovery needs of a persistent room that may not be in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexEntry {
    name: String,
    public: bool,
}

impl Server {
    /// A stanza addressed to a MUC service domain (the service, a room, or an occupant).
    pub(crate) fn muc_handle(&mut self, now: Instant, from: Jid, stanza: Element) {
        let Some(to) = stanza.get_attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return;
        };
        if to.node().is_none() {
            self.muc_service_stanza(now, from, to, stanza);
            return;
        }
        let room = to.bare();
        if self.muc.rooms.contains_key(&room) {
            self.room_stanza(now, from, to, stanza);
            return;
        }
        if let Some(waiting) = self.muc.loading.get_mut(&room) {
            waiting.push((from, stanza));
            return;
        }
        // Errors, results and unavailable presence only matter to an occupant, and
        // nobody is in a room that is not in memory: nothing to load for them.
        let ty = stanza::stanza_type(&stanza);
        if ty == "error" || ty == "result" || (stanza.name == "presence" && !ty.is_empty()) {
            return;
        }
        let Some((from, stanza)) = self.with_room_index(to.domain(), from, stanza) else {
            return;
        };
        let stored = match self.muc.indexes.get(to.domain()) {
            Some(Index::Ready(rooms)) => rooms.contains_key(to.node().unwrap_or_default()),
            _ => false,
        };
        if stored {
            self.load_room(room, from, stanza);
        } else {
            self.room_absent(now, from, to, stanza);
        }
    }

    /// (rooms, occupants) for [`Stats`]: rooms in memory and stored rooms not loaded.
    pub(crate) fn muc_counts(&self) -> (u64, u64) {
        let occupants: usize = self.muc.rooms.values().map(|r| r.occupants.len()).sum();
        let mut rooms = self.muc.rooms.len();
        for (domain, index) in &self.muc.indexes {
            if let Index::Ready(entries) = index {
                rooms += entries
                    .keys()
                    .filter(|node| {
                        Jid::from_parts(Some(node), domain, None)
                            .is_ok_and(|j| !self.muc.rooms.contains_key(&j))
                    })
                    .count();
            }
        }
        (rooms as u64, occupants as u64)
    }

    // ---- loading ----

    /// Hands the stanza back once the service's room index is in memory; otherwise it
    /// waits for the index (loaded now if nobody asked yet).
    fn with_room_index(
        &mut self,
        domain: &str,
        from: Jid,
        stanza: Element,
    ) -> Option<(Jid, Element)> {
        match self.muc.indexes.get_mut(domain) {
            Some(Index::Ready(_)) => Some((from, stanza)),
            Some(Index::Loading(waiting)) => {
                waiting.push((from, stanza));
                None
            }
            None => {
                let service = domain.to_string();
                self.muc
                    .indexes
                    .insert(service.clone(), Index::Loading(vec![(from, stanza)]));
                self.load_then(domain, "", STORE_ROOMS, None, move |s, now, res| {
                    s.room_index_loaded(now, service, res)
                });
                None
            }
        }
    }

    fn room_index_loaded(&mut self, now: Instant, service: String, res: LoadResult) {
        let Some(Index::Loading(waiting)) = self.muc.indexes.remove(&service) else {
            return;
        };
        let Ok(items) = res else {
            // Tried again with the next stanza.
            self.muc_storage_failed(now, waiting);
            return;
        };
        let mut rooms = BTreeMap::new();
        for (node, value) in items {
            let Some(e) = stanza::parse_stored(&value) else {
                continue;
            };
            rooms.insert(
                node,
                IndexEntry {
                    name: e.get_attr("name").unwrap_or_default().to_string(),
                    public: e.get_attr("public") == Some("1"),
                },
            );
        }
        self.muc.indexes.insert(service, Index::Ready(rooms));
        for (from, st) in waiting {
            self.muc_handle(now, from, st);
        }
    }

    /// Loads a persistent room (configuration, then affiliations); the stanza waits.
    fn load_room(&mut self, room: Jid, from: Jid, stanza: Element) {
        self.muc.loading.insert(room.clone(), vec![(from, stanza)]);
        let node = room.node().unwrap_or_default().to_string();
        let domain = room.domain().to_string();
        self.load_then(&domain, &node, STORE_CONFIG, None, move |s, now, res| {
            s.room_config_loaded(now, room, res)
        });
    }

    fn room_config_loaded(&mut self, now: Instant, room: Jid, res: LoadResult) {
        let Ok(items) = res else {
            let waiting = self.muc.loading.remove(&room).unwrap_or_default();
            self.muc_storage_failed(now, waiting);
            return;
        };
        let max_history = self.muc_max_history(room.domain());
        let mut config = None;
        let mut subject = None;
        for (key, value) in items {
            let Some(e) = stanza::parse_stored(&value) else {
                continue;
            };
            match key.as_str() {
                "config" => {
                    let mut c = RoomConfig::new(max_history);
                    if c.apply_form(&e, max_history).is_ok() {
                        config = Some(c);
                    }
                }
                "subject" => {
                    subject = Some(room::Subject {
                        nick: e.get_attr("nick").unwrap_or_default().to_string(),
                        text: e.text(),
                        stamp: e.get_attr("stamp").unwrap_or_default().to_string(),
                    })
                }
                _ => {}
            }
        }
        let Some(config) = config else {
            // Listed but gone: the index is corrected and the stanzas see no room.
            if let (Some(Index::Ready(rooms)), Some(node)) =
                (self.muc.indexes.get_mut(room.domain()), room.node())
            {
                rooms.remove(node);
            }
            let waiting = self.muc.loading.remove(&room).unwrap_or_default();
            for (from, st) in waiting {
                self.muc_handle(now, from, st);
            }
            return;
        };
        let node = room.node().unwrap_or_default().to_string();
        let domain = room.domain().to_string();
        self.load_then(
            &domain,
            &node,
            STORE_AFFILIATIONS,
            None,
            move |s, now, res| s.room_loaded(now, room, config, subject, res),
        );
    }

    fn room_loaded(
        &mut self,
        now: Instant,
        jid: Jid,
        config: RoomConfig,
        subject: Option<room::Subject>,
        res: LoadResult,
    ) {
        let waiting = self.muc.loading.remove(&jid).unwrap_or_default();
        let Ok(items) = res else {
            self.muc_storage_failed(now, waiting);
            return;
        };
        let mut room = Room::new(jid.clone(), config);
        room.subject = subject;
        for (key, value) in items {
            let aff = stanza::parse_stored(&value)
                .and_then(|e| e.get_attr("affiliation").and_then(Affiliation::parse));
            if let (Ok(j), Some(aff)) = (Jid::parse(&key), aff) {
                if aff != Affiliation::None {
                    room.affiliations.insert(j.bare(), aff);
                }
            }
        }
        self.muc.rooms.insert(jid, room);
        for (from, st) in waiting {
            self.muc_handle(now, from, st);
        }
    }

    /// Answers `st` with an error from the room (RFC 6120 section 8.3.1), `by` the room
    /// as XEP-0045's examples show.
    pub(crate) fn muc_bounce(&mut self, now: Instant, st: &Element, err: StanzaError) {
        if st.get_attr("from").is_none() {
            return;
        }
        let Some(mut r) = stanza::error_reply(st, &err) else {
            return;
        };
        let by = st
            .get_attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .map(|j| j.bare().to_string());
        if let (Some(by), Some(e)) = (by, r.get_child_mut("error", ns::CLIENT)) {
            e.set_attr("by", &by);
        }
        self.route(now, r);
    }

    /// The database failed: the waiting stanzas get `internal-server-error` (RFC 6120
    /// section 8.3.3.6); the next stanza tries again.
    fn muc_storage_failed(&mut self, now: Instant, waiting: Queued) {
        for (_, st) in waiting {
            self.muc_bounce(now, &st, StanzaError::new("internal-server-error"));
        }
    }

    // ---- the service itself ----

    /// XEP-0045 section 6.2 (the service's disco#info) and 6.3 (its public rooms).
    fn muc_service_stanza(&mut self, now: Instant, from: Jid, to: Jid, st: Element) {
        let ty = stanza::stanza_type(&st).to_string();
        match st.name.as_str() {
            "iq" if ty == "get" || ty == "set" => {}
            "message" if ty != "error" && ty != "groupchat" && ty != "headline" => {
                self.muc_bounce(now, &st, StanzaError::new("service-unavailable"));
                return;
            }
            _ => return,
        }
        let payload = match (st.elements().count(), st.elements().next()) {
            (1, Some(p)) => (p.name.clone(), p.ns.clone(), p.get_attr("node").is_some()),
            _ => {
                self.muc_bounce(now, &st, StanzaError::new("bad-request"));
                return;
            }
        };
        match (
            ty.as_str(),
            payload.0.as_str(),
            payload.1.as_str(),
            payload.2,
        ) {
            ("get", "query", disco::NS_DISCO_INFO, false) => {
                let mut q = Element::new("query", disco::NS_DISCO_INFO);
                q.push(
                    Element::new("identity", disco::NS_DISCO_INFO)
                        .attr("category", "conference")
                        .attr("type", "text")
                        .attr("name", "Chatrooms"),
                );
                for f in [NS_MUC, disco::NS_DISCO_INFO, disco::NS_DISCO_ITEMS, NS_PING] {
                    q.push(Element::new("feature", disco::NS_DISCO_INFO).attr("var", f));
                }
                self.route(now, stanza::iq_result(&st, Some(q)));
            }
            ("get", "query", disco::NS_DISCO_ITEMS, false) => {
                let Some((_, st)) = self.with_room_index(to.domain(), from, st) else {
                    return;
                };
                let q = self.public_rooms(to.domain());
                self.route(now, stanza::iq_result(&st, Some(q)));
            }
            ("get", "query", disco::NS_DISCO_INFO | disco::NS_DISCO_ITEMS, true) => {
                self.muc_bounce(now, &st, StanzaError::new("item-not-found"))
            }
            ("get", "ping", NS_PING, _) => self.route(now, stanza::iq_result(&st, None)),
            _ => self.muc_bounce(now, &st, StanzaError::new("service-unavailable")),
        }
    }

    /// Section 6.3: the public rooms, in memory or only stored (locked rooms are not
    /// there yet, section 10.1.1).
    fn public_rooms(&self, domain: &str) -> Element {
        let mut listed: BTreeMap<Jid, String> = BTreeMap::new();
        if let Some(Index::Ready(entries)) = self.muc.indexes.get(domain) {
            for (node, e) in entries {
                if let (true, Ok(j)) = (e.public, Jid::from_parts(Some(node), domain, None)) {
                    let name = if e.name.is_empty() {
                        node.clone()
                    } else {
                        e.name.clone()
                    };
                    listed.insert(j, name);
                }
            }
        }
        for (j, r) in &self.muc.rooms {
            if j.domain() != domain {
                continue;
            }
            if r.config.public && !r.locked {
                listed.insert(j.clone(), r.display_name());
            } else {
                listed.remove(j);
            }
        }
        let mut q = Element::new("query", disco::NS_DISCO_ITEMS);
        for (j, name) in listed {
            q.push(
                Element::new("item", disco::NS_DISCO_ITEMS)
                    .attr("jid", &j.to_string())
                    .attr("name", &name),
            );
        }
        q
    }

    /// A stanza for a room that does not exist: a join creates it (section 10.1.1),
    /// anything else is `item-not-found`.
    fn room_absent(&mut self, now: Instant, from: Jid, to: Jid, st: Element) {
        if st.name != "presence" {
            self.muc_bounce(now, &st, StanzaError::new("item-not-found"));
            return;
        }
        if to.resource().is_none() {
            // Section 7.2.1: no nick.
            self.muc_bounce(now, &st, StanzaError::new("jid-malformed"));
            return;
        }
        let Some(service) = self.muc_service(to.domain()) else {
            return;
        };
        let max_history = service.max_history;
        if service.restrict_room_creation && !self.is_admin(&from) {
            // Section 10.1.1: not allowed to create rooms.
            self.muc_bounce(now, &st, StanzaError::new("not-allowed"));
            return;
        }
        if st.get_child("x", NS_MUC).is_none() {
            // Section 7.2.18: no groupchat 1.0 joins (and no room made by a stray
            // presence update after a restart).
            self.muc_not_in_room(now, &from, &to);
            return;
        }
        let mut room = Room::new(to.bare(), RoomConfig::new(max_history));
        // Section 10.1.1: locked until the owner configures it or accepts the defaults.
        room.locked = true;
        room.affiliations.insert(from.bare(), Affiliation::Owner);
        self.muc.rooms.insert(to.bare(), room);
        self.muc_join(now, from, to, st, true);
    }

    fn muc_max_history(&self, domain: &str) -> usize {
        self.muc_service(domain).map_or(20, |s| s.max_history)
    }

    // ---- in a room ----

    /// Dispatch of a stanza for a room in memory.
    fn room_stanza(&mut self, now: Instant, from: Jid, to: Jid, st: Element) {
        let ty = stanza::stanza_type(&st).to_string();
        let room = to.bare();
        match (st.name.as_str(), to.resource().is_some()) {
            ("presence", _) if ty == "error" => self.muc_error_from(now, &to, &from, st),
            ("presence", true) => match ty.as_str() {
                "" => self.muc_presence(now, from, to, st),
                "unavailable" => {
                    let status = room::strip_muc(&st);
                    self.muc_remove(now, &room, &from, Some(status), &[], Vec::new());
                }
                _ => {}
            },
            // Section 7.2.1: no nick.
            ("presence", false) if ty.is_empty() => {
                self.muc_bounce(now, &st, StanzaError::new("jid-malformed"))
            }
            ("message", _) if ty == "error" => self.muc_error_from(now, &to, &from, st),
            ("message", false) if ty == "groupchat" => self.muc_groupchat(now, from, &room, st),
            ("message", false) => self.muc_room_message(now, from, &room, st),
            ("message", true) => self.muc_private_message(now, from, to, st),
            ("iq", false) => self.room_iq(now, from, &room, st),
            ("iq", true) => self.occupant_iq(now, from, to, st),
            _ => {}
        }
    }

    /// The affiliation `jid` has in `room`; server admins own every room (as in
    /// Prosody).
    fn muc_affiliation(&self, room: &Room, jid: &Jid) -> Affiliation {
        if self.is_admin(jid) {
            Affiliation::Owner
        } else {
            room.stored_affiliation(jid)
        }
    }
}
