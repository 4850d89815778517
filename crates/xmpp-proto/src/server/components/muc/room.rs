//! One room's state (XEP-0045) as plain data: configuration (the `muc#roomconfig` form
//! of section 10.2, which is also how a persistent room's configuration is stored),
//! affiliations, occupants with their roles, discussion history and subject, and the
//! presence an occupant is shown with. No routing here: `occupants.rs` and `admin.rs`
//! turn changes into stanzas.

use super::*;

/// XEP-0045 section 5.2: long-lived relation of a bare JID to the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// XEP-0045 section 5.1: the role of an occupant for the length of a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// Room configuration (XEP-0045 section 10.2, `muc#roomconfig` fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomConfig {
    pub(crate) name: String,
    pub(crate) description: String,
    /// Kept when the last occupant leaves, and stored.
    pub(crate) persistent: bool,
    /// Listed in the service's disco#items (section 6.3).
    pub(crate) public: bool,
    pub(crate) members_only: bool,
    pub(crate) password_protected: bool,
    pub(crate) password: String,
    pub(crate) moderated: bool,
    /// `whois` = `anyone`: every occupant sees real JIDs (section 7.2.3); otherwise only
    /// moderators do (semi-anonymous, section 7.2.4).
    pub(crate) non_anonymous: bool,
    /// Participants may change the subject (moderators always may, section 8.1).
    pub(crate) change_subject: bool,
    /// Occupants may invite others into a members-only room (section 7.8).
    pub(crate) allow_invites: bool,
    /// `None`: no limit.
    pub(crate) max_users: Option<usize>,
    /// Messages of history kept and sent on join (at most the service's `max_history`).
    pub(crate) history_length: usize,
}

impl RoomConfig {
    /// A new room's defaults (as Prosody's): temporary, public, open, unmoderated,
    /// semi-anonymous.
    pub(crate) fn new(max_history: usize) -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            password_protected: false,
            password: String::new(),
            moderated: false,
            non_anonymous: false,
            change_subject: false,
            allow_invites: false,
            max_users: None,
            history_length: max_history,
        }
    }

    /// Password in force (section 7.2.5).
    pub(crate) fn secret(&self) -> Option<&str> {
        (self.password_protected).then_some(self.password.as_str())
    }

    /// The `muc#roomconfig` form: `type='form'` for an owner to fill (section 10.2,
    /// labels and options), `type='submit'` with every value (what is stored).
    pub(crate) fn to_form(&self, ty: &str, max_history: usize) -> Element {
        let full = ty == "form";
        let mut x = Element::new("x", NS_DATA).attr("type", ty);
        if full {
            x.push(Element::new("title", NS_DATA).text_node("Room configuration"));
        }
        x.push(field("FORM_TYPE", "hidden", "", &[FORM_ROOMCONFIG]));
        let b = |v: bool| if v { "1" } else { "0" };
        let max_users = self
            .max_users
            .map(|n| n.to_string())
            .unwrap_or_else(|| "none".into());
        let history = self.history_length.to_string();
        let fields: [(&str, &str, &str, &str); 13] = [
            ("roomname", "text-single", "Title", &self.name),
            ("roomdesc", "text-single", "Description", &self.description),
            (
                "persistentroom",
                "boolean",
                "Persistent (kept when empty)",
                b(self.persistent),
            ),
            (
                "publicroom",
                "boolean",
                "Listed in the room directory",
                b(self.public),
            ),
            (
                "membersonly",
                "boolean",
                "Members only",
                b(self.members_only),
            ),
            (
                "passwordprotectedroom",
                "boolean",
                "Password protected",
                b(self.password_protected),
            ),
            ("roomsecret", "text-private", "Password", &self.password),
            (
                "moderatedroom",
                "boolean",
                "Moderated (visitors need voice)",
                b(self.moderated),
            ),
            (
                "whois",
                "list-single",
                "Who may discover real JIDs",
                if self.non_anonymous {
                    "anyone"
                } else {
                    "moderators"
                },
            ),
            (
                "changesubject",
                "boolean",
                "Participants may change the subject",
                b(self.change_subject),
            ),
            (
                "allowinvites",
                "boolean",
                "Occupants may invite others",
                b(self.allow_invites),
            ),
            (
                "maxusers",
                "list-single",
                "Maximum number of occupants",
                &max_users,
            ),
            (
                "historylength",
                "text-single",
                "Messages of history sent on join",
                &history,
            ),
        ];
        for (var, fty, label, value) in fields {
            let var = format!("muc#roomconfig_{var}");
            let mut f = if full {
                field(&var, fty, label, &[value])
            } else {
                field(&var, "", "", &[value])
            };
            if full && var == "muc#roomconfig_whois" {
                f.push(option("Moderators only", "moderators"));
                f.push(option("Anyone", "anyone"));
            }
            if full && var == "muc#roomconfig_maxusers" {
                for n in ["10", "20", "30", "50", "100", "none"] {
                    f.push(option(n, n));
                }
            }
            if full && var == "muc#roomconfig_historylength" {
                f.push(Element::new("desc", NS_DATA).text_node(&format!("At most {max_history}")));
            }
            x.push(f);
        }
        x
    }

    /// Applies a submitted `muc#roomconfig` form (section 10.2: fields left out keep
    /// their value). Errs with the stanza error condition: `not-acceptable` for values
    /// out of range (a password-protected room without a password included),
    /// `bad-request` for another form type.
    pub(crate) fn apply_form(
        &mut self,
        x: &Element,
        max_history: usize,
    ) -> Result<(), &'static str> {
        let mut c = self.clone();
        for (var, values) in form_values(x) {
            let v = values.first().map(String::as_str).unwrap_or("");
            let Some(name) = var.strip_prefix("muc#roomconfig_") else {
                if var == "FORM_TYPE" && v != FORM_ROOMCONFIG {
                    return Err("bad-request");
                }
                if var == "muc#maxhistoryfetch" {
                    c.history_length = parse_history(v, max_history)?;
                }
                continue;
            };
            match name {
                "roomname" => c.name = v.to_string(),
                "roomdesc" => c.description = v.to_string(),
                "persistentroom" => c.persistent = parse_bool(v)?,
                "publicroom" => c.public = parse_bool(v)?,
                "membersonly" => c.members_only = parse_bool(v)?,
                "passwordprotectedroom" => c.password_protected = parse_bool(v)?,
                "roomsecret" => c.password = v.to_string(),
                "moderatedroom" => c.moderated = parse_bool(v)?,
                "whois" => {
                    c.non_anonymous = match v {
                        "anyone" => true,
                        "moderators" => false,
                        _ => return Err("not-acceptable"),
                    }
                }
                "changesubject" => c.change_subject = parse_bool(v)?,
                "allowinvites" => c.allow_invites = parse_bool(v)?,
                "maxusers" => {
                    c.max_users = match v {
                        "" | "none" | "0" => None,
                        n => Some(n.parse::<usize>().map_err(|_| "not-acceptable")?),
                    }
                }
                "historylength" => c.history_length = parse_history(v, max_history)?,
                _ => {}
            }
        }
        if c.password_protected && c.password.is_empty() {
            return Err("not-acceptable");
        }
        *self = c;
        Ok(())
    }
}

fn parse_bool(v: &str) -> Result<bool, &'static str> {
    // XEP-0004 section 3.3: boolean values are 0/1/false/true.
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" | "" => Ok(false),
        _ => Err("not-acceptable"),
    }
}

fn parse_history(v: &str, max_history: usize) -> Result<usize, &'static str> {
    v.parse::<usize>()
        .map(|n| n.min(max_history))
        .map_err(|_| "not-acceptable")
}

/// An XEP-0004 field; `ty` and `label` left out when empty.
pub(crate) fn field(var: &str, ty: &str, label: &str, values: &[&str]) -> Element {
    let mut f = Element::new("field", NS_DATA).attr("var", var);
    if !ty.is_empty() {
        f.set_attr("type", ty);
    }
    if !label.is_empty() {
        f.set_attr("label", label);
    }
    for v in values {
        f.push(Element::new("value", NS_DATA).text_node(v));
    }
    f
}

fn option(label: &str, value: &str) -> Element {
    Element::new("option", NS_DATA)
        .attr("label", label)
        .child(Element::new("value", NS_DATA).text_node(value))
}

/// (var, values) of each field of an XEP-0004 form.
pub(crate) fn form_values(x: &Element) -> Vec<(String, Vec<String>)> {
    x.elements()
        .filter(|f| f.name == "field" && f.ns == NS_DATA)
        .filter_map(|f| {
            let var = f.get_attr("var")?.to_string();
            let values = f
                .elements()
                .filter(|v| v.name == "value" && v.ns == NS_DATA)
                .map(|v| v.text())
                .collect();
            Some((var, values))
        })
        .collect()
}

/// One occupant (XEP-0045 section 7.2): the nick is the resource of its occupant JID.
#[derive(Debug, Clone)]
pub(crate) struct Occupant {
    pub(crate) nick: String,
    /// The full JID of the session that joined.
    pub(crate) real: Jid,
    pub(crate) role: Role,
    /// The occupant's last presence: its children other than the MUC payloads
    /// (`show`, `status`, `priority`, caps...), reflected to everyone.
    pub(crate) presence: Element,
}

/// A message of discussion history (section 7.2.13), as broadcast (`from` the
/// occupant JID, no `to`), with its XEP-0203 delay stamp already added.
#[derive(Debug, Clone)]
pub(crate) struct HistoryItem {
    pub(crate) message: Element,
    pub(crate) at: Instant,
    /// Serialized length, for `maxchars`.
    pub(crate) chars: usize,
}

/// The room subject (section 8.1), the nick that set it and when (XEP-0082).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    pub(crate) nick: String,
    pub(crate) text: String,
    pub(crate) stamp: String,
}

pub(crate) struct Room {
    /// Bare room JID.
    pub(crate) jid: Jid,
    pub(crate) config: RoomConfig,
    /// By bare JID; `None` is not stored.
    pub(crate) affiliations: BTreeMap<Jid, Affiliation>,
    /// In order of arrival.
    pub(crate) occupants: Vec<Occupant>,
    pub(crate) history: VecDeque<HistoryItem>,
    pub(crate) subject: Option<Subject>,
    /// Section 10.1.1: a room created with `<x xmlns='.../muc'/>` is locked until its
    /// owner configures it or accepts the defaults (instant room).
    pub(crate) locked: bool,
}

impl Room {
    pub(crate) fn new(jid: Jid, config: RoomConfig) -> Room {
        Room {
            jid,
            config,
            affiliations: BTreeMap::new(),
            occupants: Vec::new(),
            history: VecDeque::new(),
            subject: None,
            locked: false,
        }
    }

    /// The stored affiliation of a (bare or full) JID.
    pub(crate) fn stored_affiliation(&self, jid: &Jid) -> Affiliation {
        self.affiliations
            .get(&jid.bare())
            .copied()
            .unwrap_or(Affiliation::None)
    }

    pub(crate) fn by_nick(&self, nick: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.nick == nick)
    }

    pub(crate) fn by_real(&self, real: &Jid) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.real == *real)
    }

    pub(crate) fn by_real_mut(&mut self, real: &Jid) -> Option<&mut Occupant> {
        self.occupants.iter_mut().find(|o| o.real == *real)
    }

    pub(crate) fn occupant_jid(&self, nick: &str) -> Jid {
        self.jid
            .with_resource(nick)
            .unwrap_or_else(|_| self.jid.clone())
    }

    /// The role an occupant gets from its affiliation (section 5.1, default roles).
    pub(crate) fn default_role(&self, aff: Affiliation) -> Role {
        match aff {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    /// Adds a message to the history, keeping `history_length` of them.
    pub(crate) fn remember(&mut self, item: HistoryItem) {
        let keep = self.config.history_length;
        if keep == 0 {
            self.history.clear();
            return;
        }
        self.history.push_back(item);
        while self.history.len() > keep {
            self.history.pop_front();
        }
    }

    /// What a joining user asked for in `<history/>` (section 7.2.14): the newest
    /// messages within `maxstanzas`, `seconds` and `maxchars`.
    pub(crate) fn history_for(&self, now: Instant, request: Option<&Element>) -> Vec<Element> {
        let attr = |name: &str| {
            request
                .and_then(|h| h.get_attr(name))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let max_stanzas = attr("maxstanzas").map_or(usize::MAX, |n| n as usize);
        let max_chars = attr("maxchars").map_or(usize::MAX, |n| n as usize);
        let seconds = attr("seconds").map(Duration::from_secs);
        let mut picked = Vec::new();
        let mut chars = 0usize;
        for item in self.history.iter().rev() {
            if picked.len() >= max_stanzas {
                break;
            }
            if seconds.is_some_and(|s| now.saturating_duration_since(item.at) > s) {
                break;
            }
            chars += item.chars;
            if chars > max_chars {
                break;
            }
            picked.push(item.message.clone());
        }
        picked.reverse();
        picked
    }

    /// The `muc#roominfo` form for disco#info (section 6.4, XEP-0128).
    pub(crate) fn info_form(&self) -> Element {
        let mut x = Element::new("x", NS_DATA).attr("type", "result");
        x.push(field("FORM_TYPE", "hidden", "", &[FORM_ROOMINFO]));
        let occupants = self.occupants.len().to_string();
        let subject = self.subject.as_ref().map_or("", |s| s.text.as_str());
        let history = self.config.history_length.to_string();
        let changesubject = if self.config.change_subject { "1" } else { "0" };
        for (var, label, value) in [
            (
                "muc#roominfo_description",
                "Description",
                self.config.description.as_str(),
            ),
            ("muc#roominfo_occupants", "Number of occupants", &occupants),
            ("muc#roominfo_subject", "Subject", subject),
            (
                "muc#roomconfig_changesubject",
                "Participants may change the subject",
                changesubject,
            ),
            ("muc#maxhistoryfetch", "Maximum history returned", &history),
        ] {
            x.push(field(var, "", label, &[value]));
        }
        x
    }

    /// disco#info features (section 6.4, the registered `muc_*` features).
    pub(crate) fn features(&self) -> Vec<&'static str> {
        let c = &self.config;
        vec![
            NS_MUC,
            if c.public { "muc_public" } else { "muc_hidden" },
            if c.persistent {
                "muc_persistent"
            } else {
                "muc_temporary"
            },
            if c.members_only {
                "muc_membersonly"
            } else {
                "muc_open"
            },
            if c.moderated {
                "muc_moderated"
            } else {
                "muc_unmoderated"
            },
            if c.non_anonymous {
                "muc_nonanonymous"
            } else {
                "muc_semianonymous"
            },
            if c.password_protected {
                "muc_passwordprotected"
            } else {
                "muc_unsecured"
            },
        ]
    }

    /// The display name (the room's localpart when it has none).
    pub(crate) fn display_name(&self) -> String {
        if self.config.name.is_empty() {
            self.jid.node().unwrap_or_default().to_string()
        } else {
            self.config.name.clone()
        }
    }
}

/// `<x xmlns='muc#user'><item .../>(<status code/>)*</x>` (section 7.2.2): `jid` only
/// for those allowed to see it, `nick` for a nick change (section 7.6).
pub(crate) fn user_x(
    aff: Affiliation,
    role: Role,
    jid: Option<&Jid>,
    nick: Option<&str>,
    codes: &[u16],
) -> Element {
    let mut item = Element::new("item", NS_MUC_USER)
        .attr("affiliation", aff.as_str())
        .attr("role", role.as_str());
    if let Some(j) = jid {
        item.set_attr("jid", &j.to_string());
    }
    if let Some(n) = nick {
        item.set_attr("nick", n);
    }
    let mut x = Element::new("x", NS_MUC_USER).child(item);
    for c in codes {
        x.push(Element::new("status", NS_MUC_USER).attr("code", &c.to_string()));
    }
    x
}

/// A client presence without what the room adds or reads (the MUC payloads).
pub(crate) fn strip_muc(st: &Element) -> Element {
    let mut p = Element::new("presence", ns::CLIENT);
    for c in st.elements() {
        if c.ns == NS_MUC || c.ns == NS_MUC_USER {
            continue;
        }
        p.push(c.clone());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_form_round_trips_through_storage() {
        let mut c = RoomConfig::new(20);
        c.name = "Coven".into();
        c.persistent = true;
        c.members_only = true;
        c.password_protected = true;
        c.password = "cauldron".into();
        c.non_anonymous = true;
        c.max_users = Some(30);
        c.history_length = 5;
        let stored = stanza::to_stored(&c.to_form("submit", 20));
        let back = stanza::parse_stored(&stored).unwrap();
        let mut d = RoomConfig::new(20);
        d.apply_form(&back, 20).unwrap();
        assert_eq!(c, d);
    }

    #[test]
    fn bad_config_values_are_refused() {
        let mut c = RoomConfig::new(20);
        let form = |var: &str, v: &str| {
            Element::new("x", NS_DATA)
                .attr("type", "submit")
                .child(field(var, "", "", &[v]))
        };
        assert!(c
            .apply_form(&form("muc#roomconfig_maxusers", "many"), 20)
            .is_err());
        assert!(c
            .apply_form(&form("muc#roomconfig_passwordprotectedroom", "1"), 20)
            .is_err());
        assert!(c.apply_form(&form("FORM_TYPE", "urn:other"), 20).is_err());
        assert_eq!(c, RoomConfig::new(20));
        c.apply_form(&form("muc#roomconfig_historylength", "500"), 20)
            .unwrap();
        assert_eq!(c.history_length, 20);
    }

    #[test]
    fn history_request_limits() {
        let now = Instant::now();
        let mut r = Room::new(Jid::parse("r@muc.example").unwrap(), RoomConfig::new(3));
        for i in 0..5u64 {
            r.remember(HistoryItem {
                message: Element::new("message", ns::CLIENT).attr("id", &i.to_string()),
                at: now + Duration::from_secs(i * 10),
                chars: 10,
            });
        }
        let ids = |v: Vec<Element>| -> Vec<String> {
            v.iter()
                .map(|m| m.get_attr("id").unwrap().to_string())
                .collect()
        };
        let later = now + Duration::from_secs(40);
        assert_eq!(ids(r.history_for(later, None)), ["2", "3", "4"]);
        let h = Element::new("history", NS_MUC).attr("maxstanzas", "2");
        assert_eq!(ids(r.history_for(later, Some(&h))), ["3", "4"]);
        let h = Element::new("history", NS_MUC).attr("seconds", "15");
        assert_eq!(ids(r.history_for(later, Some(&h))), ["3", "4"]);
        let h = Element::new("history", NS_MUC).attr("maxchars", "0");
        assert!(r.history_for(later, Some(&h)).is_empty());
    }
}
