//! Per-user state (roster, blocklist, offline messages), loaded from the key-value
//! stores when first needed and kept while the user has sessions (plus [`USER_IDLE`]).
//!
//! Stores (host, user, store, key -> XML value):
//! - `roster`: one key per contact bare JID, value `<item xmlns='jabber:iq:roster'/>`
//!   with our bookkeeping attributes (see `roster.rs`);
//! - `roster_version`: key `ver`, value `<ver xmlns='urn:xmpp:features:rosterver'>N</ver>`;
//! - `blocklist`: one key per blocked JID, value `<item xmlns='urn:xmpp:blocking'/>`;
//! - `offline`: keys sortable by arrival (`offline.rs`), value the stored `<message/>`.

use super::*;

/// Outcome of loading a user's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    Ok,
    /// No such account (RFC 6121 section 8.5.1 rules apply).
    NoSuchUser,
    /// The database failed: answer with a `wait` error, try again next time.
    Failed,
}

type UserWaiter = Box<dyn FnOnce(&mut Server, Instant, Ready) + Send>;

enum LoadState {
    Loading { pending: u32, failed: bool },
    Ready,
}

pub(crate) struct User {
    state: LoadState,
    waiters: Vec<UserWaiter>,
    /// `None` until known (an account lookup is part of loading for routing).
    pub(crate) exists: Option<bool>,
    pub(crate) roster: BTreeMap<Jid, roster::RosterItem>,
    pub(crate) roster_ver: u64,
    pub(crate) blocklist: BTreeSet<Jid>,
    pub(crate) offline: BTreeMap<String, offline::OfflineEntry>,
    pub(crate) sessions: Vec<SessionId>,
    /// The account's XEP-0163 PEP service, once something needed it (`pep.rs`).
    pub(crate) pep: Option<Box<pep::PepService>>,
    last_used: Instant,
    /// Writes of this user's state emitted so far ([`Server::store`]): a re-read answered
    /// after a later write may predate it, and is then asked again.
    pub(crate) writes: u64,
}

/// The key-value stores that make up a user's loaded state.
const USER_STORES: [&str; 4] = ["roster", "roster_version", "blocklist", "offline"];

/// The users whose loaded state (the [`USER_STORES`]) `ops` change.
pub(crate) fn touched_users(ops: &[StoreOp]) -> Vec<Jid> {
    let mut out: Vec<Jid> = Vec::new();
    for op in ops {
        let (host, user, store) = match op {
            StoreOp::Put {
                host, user, store, ..
            }
            | StoreOp::Delete {
                host, user, store, ..
            } => (host, user, Some(store.as_str())),
            StoreOp::DeleteAll { host, user, store } => (host, user, store.as_deref()),
            StoreOp::PutAccount { .. } | StoreOp::DeleteAccount { .. } => continue,
        };
        if store.is_some_and(|s| !USER_STORES.contains(&s)) {
            continue;
        }
        if let Ok(j) = Jid::from_parts(Some(user), host, None) {
            if !out.contains(&j) {
                out.push(j);
            }
        }
    }
    out
}

/// The parts loaded for a user.
#[derive(Debug, Clone, Copy)]
enum Part {
    Account,
    Roster,
    RosterVersion,
    Blocklist,
    Offline,
}

impl Part {
    /// The key-value store the part is kept in (`None` for the account).
    fn store(self) -> Option<&'static str> {
        match self {
            Part::Account => None,
            Part::Roster => Some("roster"),
            Part::RosterVersion => Some("roster_version"),
            Part::Blocklist => Some("blocklist"),
            Part::Offline => Some("offline"),
        }
    }
}

impl Server {
    /// Runs `f` once `bare`'s state is loaded (at once if it is). `known_exists` skips
    /// the account lookup (the user just authenticated). The XEP-0198 hold of the stanza
    /// being processed follows `f`.
    pub(crate) fn with_user(
        &mut self,
        now: Instant,
        bare: &Jid,
        known_exists: bool,
        f: impl FnOnce(&mut Server, Instant, Ready) + Send + 'static,
    ) {
        if let Some(u) = self.users.get_mut(bare) {
            u.last_used = now;
            if known_exists {
                u.exists = Some(true);
            }
            match u.state {
                LoadState::Ready => {
                    let r = if u.exists == Some(false) {
                        Ready::NoSuchUser
                    } else {
                        Ready::Ok
                    };
                    f(self, now, r);
                    return;
                }
                LoadState::Loading { .. } => {
                    let hold = self.hold.take();
                    u.waiters.push(Box::new(move |s: &mut Server, now, r| {
                        s.hold = hold;
                        f(s, now, r);
                        s.release_hold(now);
                    }));
                    return;
                }
            }
        }
        let hold = self.hold.take();
        let mut parts = vec![
            Part::Roster,
            Part::RosterVersion,
            Part::Blocklist,
            Part::Offline,
        ];
        if !known_exists {
            parts.push(Part::Account);
        }
        self.users.insert(
            bare.clone(),
            User {
                state: LoadState::Loading {
                    pending: parts.len() as u32,
                    failed: false,
                },
                waiters: vec![Box::new(move |s: &mut Server, now, r| {
                    s.hold = hold;
                    f(s, now, r);
                    s.release_hold(now);
                })],
                exists: known_exists.then_some(true),
                roster: BTreeMap::new(),
                roster_ver: 0,
                blocklist: BTreeSet::new(),
                offline: BTreeMap::new(),
                sessions: Vec::new(),
                pep: None,
                last_used: now,
                writes: 0,
            },
        );
        let host = bare.domain().to_string();
        let node = bare.node().unwrap_or_default().to_string();
        for part in parts {
            let b = bare.clone();
            match part {
                Part::Account => self.fetch_account_then(&host, &node, move |s, now, a| match a {
                    Ok(a) => s.user_part(now, &b, part, Ok(Vec::new()), Some(a.is_some())),
                    Err(e) => s.user_part(now, &b, part, Err(e), None),
                }),
                Part::Roster | Part::RosterVersion | Part::Blocklist | Part::Offline => {
                    let store = part.store().unwrap_or_default();
                    self.load_then(&host, &node, store, None, move |s, now, r| {
                        s.user_part(now, &b, part, r, None)
                    });
                }
            }
        }
    }

    fn user_part(
        &mut self,
        now: Instant,
        bare: &Jid,
        part: Part,
        items: LoadResult,
        exists: Option<bool>,
    ) {
        let Some(u) = self.users.get_mut(bare) else {
            return;
        };
        let LoadState::Loading { pending, failed } = &mut u.state else {
            return;
        };
        *pending -= 1;
        if items.is_err() {
            *failed = true;
        }
        let (done, failed) = (*pending == 0, *failed);
        match items {
            Err(StoreFailed) => {}
            Ok(_) if matches!(part, Part::Account) => {
                if u.exists.is_none() {
                    u.exists = exists;
                }
            }
            Ok(items) => fill_part(u, part, items),
        }
        if !done {
            return;
        }
        let waiters = std::mem::take(&mut u.waiters);
        let ready = if failed {
            self.users.remove(bare);
            Ready::Failed
        } else {
            u.state = LoadState::Ready;
            if u.exists == Some(false) {
                Ready::NoSuchUser
            } else {
                Ready::Ok
            }
        };
        for w in waiters {
            w(self, now, ready);
        }
        if ready != Ready::Failed && self.users.get(bare).is_some_and(|u| u.sessions.is_empty()) {
            self.arm(now + USER_IDLE, Timer::UserIdle(bare.clone()));
        }
    }

    /// A write to these users' state failed: re-read their roster, roster version,
    /// blocklist and offline messages from the database, replacing what memory holds,
    /// so the change that did not commit disappears (a user not loaded has nothing to
    /// correct; a re-read that fails too leaves memory as it is).
    pub(crate) fn resync_users(&mut self, _now: Instant, users: Vec<Jid>) {
        for bare in users {
            let Some(writes) = self.user(&bare).map(|u| u.writes) else {
                continue;
            };
            let host = bare.domain().to_string();
            let node = bare.node().unwrap_or_default().to_string();
            for part in [
                Part::Roster,
                Part::RosterVersion,
                Part::Blocklist,
                Part::Offline,
            ] {
                let store = part.store().unwrap_or_default();
                let b = bare.clone();
                self.load_then(&host, &node, store, None, move |s, now, r| {
                    let (Ok(items), Some(u)) = (r, s.user_mut(&b)) else {
                        return;
                    };
                    if u.writes != writes {
                        // A change of this user went out after the re-read was asked
                        // for (memory already shows it; the rows read may not): read
                        // again, behind that change. Once per round, from its first part.
                        if matches!(part, Part::Roster) {
                            s.resync_users(now, vec![b]);
                        }
                        return;
                    }
                    replace_part(u, part, items);
                });
            }
        }
    }

    /// Drops an offline user's state once unused for [`USER_IDLE`].
    pub(crate) fn user_idle(&mut self, now: Instant, bare: &Jid) {
        let Some(u) = self.users.get(bare) else {
            return;
        };
        if !u.sessions.is_empty() || !matches!(u.state, LoadState::Ready) {
            return;
        }
        if u.pep.as_ref().is_some_and(|p| p.loading()) {
            // Its waiters need the state: look again later.
            let due = now + USER_IDLE;
            self.arm(due, Timer::UserIdle(bare.clone()));
            return;
        }
        let due = u.last_used + USER_IDLE;
        if due <= now {
            self.users.remove(bare);
        } else {
            self.arm(due, Timer::UserIdle(bare.clone()));
        }
    }

    /// The loaded state of a user (`None` when not loaded).
    pub(crate) fn user(&self, bare: &Jid) -> Option<&User> {
        self.users
            .get(bare)
            .filter(|u| matches!(u.state, LoadState::Ready))
    }

    pub(crate) fn user_mut(&mut self, bare: &Jid) -> Option<&mut User> {
        self.users
            .get_mut(bare)
            .filter(|u| matches!(u.state, LoadState::Ready))
    }
}

/// Adds loaded rows of one part to a user's state.
fn fill_part(u: &mut User, part: Part, items: Vec<(String, String)>) {
    match part {
        Part::Account => {}
        Part::Roster => {
            for (_, v) in items {
                if let Some(item) =
                    stanza::parse_stored(&v).and_then(|e| roster::RosterItem::from_element(&e))
                {
                    u.roster.insert(item.jid.clone(), item);
                }
            }
        }
        Part::RosterVersion => {
            u.roster_ver = items
                .first()
                .and_then(|(_, v)| stanza::parse_stored(v))
                .and_then(|e| e.text().trim().parse().ok())
                .unwrap_or(0);
        }
        Part::Blocklist => {
            for (k, _) in items {
                if let Ok(j) = Jid::parse(&k) {
                    u.blocklist.insert(j);
                }
            }
        }
        Part::Offline => {
            for (k, v) in items {
                if let Some(st) = stanza::parse_stored(&v) {
                    u.offline.insert(k, offline::OfflineEntry::new(st));
                }
            }
        }
    }
}

/// Replaces one part of a user's state with the rows read back. Offline messages keep
/// what memory knows beyond the rows (which session one is being delivered to).
fn replace_part(u: &mut User, part: Part, items: Vec<(String, String)>) {
    match part {
        Part::Roster => u.roster.clear(),
        Part::Blocklist => u.blocklist.clear(),
        Part::Offline => {
            let stored: BTreeSet<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
            u.offline.retain(|k, _| stored.contains(k.as_str()));
            let missing: Vec<(String, String)> = items
                .iter()
                .filter(|(k, _)| !u.offline.contains_key(k))
                .cloned()
                .collect();
            fill_part(u, part, missing);
            return;
        }
        Part::RosterVersion | Part::Account => {}
    }
    fill_part(u, part, items);
}
