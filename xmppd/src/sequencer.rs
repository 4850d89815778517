//! Storage work in the order the server asked for it, per user.
//!
//! The server's contract: storage orders take effect in the order they are polled, so a
//! `Load` issued after a `Store` sees that store. Reads go to a pool of concurrent lookups
//! and writes to one group-committing writer, which on their own could overtake each
//! other. The [`Sequencer`] keeps them in order where it matters, for one user (`host`,
//! `user`) at a time: a read of a user waits while a write touching that user is in
//! flight, a write waits while a read of a user it touches is in flight, and anything
//! that waits also holds back later work for the same users (first come, first served).
//! Reads of different users, and writes among themselves (the writer is one FIFO queue),
//! run freely. A write touching several users (both ends of a subscription) waits for
//! all of them.
//!
//! No I/O here: the core loop submits work, dispatches what comes back, and reports
//! completions, which release what waited.

use crate::db::{Lookup, StoreOrder};
use std::collections::{HashMap, HashSet, VecDeque};
use xmpp_proto::server::StoreOp;

/// `(host, user)`.
type UserKey = (String, String);

/// One piece of storage work.
#[derive(Debug)]
pub enum Work {
    Read(Lookup),
    Write(StoreOrder),
}

impl Work {
    fn id(&self) -> u64 {
        match self {
            Work::Read(Lookup::Account { id, .. } | Lookup::Load { id, .. }) => *id,
            Work::Write(o) => o.id,
        }
    }

    fn is_write(&self) -> bool {
        matches!(self, Work::Write(_))
    }

    /// The users this work reads or changes.
    fn users(&self) -> Vec<UserKey> {
        match self {
            Work::Read(Lookup::Account { host, user, .. } | Lookup::Load { host, user, .. }) => {
                vec![(host.clone(), user.clone())]
            }
            Work::Write(o) => {
                let mut users: Vec<UserKey> = Vec::new();
                for op in &o.ops {
                    let (StoreOp::Put { host, user, .. }
                    | StoreOp::Delete { host, user, .. }
                    | StoreOp::DeleteAll { host, user, .. }
                    | StoreOp::PutAccount { host, user, .. }
                    | StoreOp::DeleteAccount { host, user }) = op;
                    if !users.iter().any(|(h, u)| h == host && u == user) {
                        users.push((host.clone(), user.clone()));
                    }
                }
                users
            }
        }
    }
}

#[derive(Debug, Default)]
struct UserState {
    reads: u32,
    writes: u32,
    /// Work for this user waiting in `deferred`.
    waiting: u32,
}

impl UserState {
    fn idle(&self) -> bool {
        self.reads == 0 && self.writes == 0 && self.waiting == 0
    }
}

#[derive(Debug, Default)]
pub struct Sequencer {
    users: HashMap<UserKey, UserState>,
    /// Dispatched work by id: whether it writes, and its users.
    in_flight: HashMap<u64, (bool, Vec<UserKey>)>,
    deferred: VecDeque<(Work, Vec<UserKey>)>,
}

impl Sequencer {
    /// `work`, if it may be dispatched now; otherwise it is kept until a completion
    /// releases it.
    pub fn submit(&mut self, work: Work) -> Option<Work> {
        let users = work.users();
        let must_wait = users.iter().any(|u| {
            self.users.get(u).is_some_and(|s| {
                s.waiting > 0
                    || if work.is_write() {
                        s.reads > 0
                    } else {
                        s.writes > 0
                    }
            })
        });
        if must_wait {
            for u in &users {
                self.users.entry(u.clone()).or_default().waiting += 1;
            }
            self.deferred.push_back((work, users));
            return None;
        }
        self.start(&work, users);
        Some(work)
    }

    /// Work `id` is finished (answered, or failed to dispatch): returns the work it
    /// released, in submission order, to be dispatched.
    pub fn done(&mut self, id: u64) -> Vec<Work> {
        let Some((write, users)) = self.in_flight.remove(&id) else {
            return Vec::new();
        };
        for u in &users {
            if let Some(s) = self.users.get_mut(u) {
                if write {
                    s.writes -= 1;
                } else {
                    s.reads -= 1;
                }
            }
        }
        self.forget_idle(&users);
        self.release()
    }

    /// Nothing in flight and nothing waiting.
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.deferred.is_empty() && self.users.is_empty()
    }

    fn start(&mut self, work: &Work, users: Vec<UserKey>) {
        for u in &users {
            let s = self.users.entry(u.clone()).or_default();
            if work.is_write() {
                s.writes += 1;
            } else {
                s.reads += 1;
            }
        }
        self.in_flight.insert(work.id(), (work.is_write(), users));
    }

    /// Deferred work that no longer conflicts, front to back; work for a user with
    /// earlier work still waiting stays behind it.
    fn release(&mut self) -> Vec<Work> {
        let mut ready = Vec::new();
        let mut blocked: HashSet<UserKey> = HashSet::new();
        let mut kept = VecDeque::with_capacity(self.deferred.len());
        while let Some((work, users)) = self.deferred.pop_front() {
            let conflict = users.iter().any(|u| {
                blocked.contains(u)
                    || self.users.get(u).is_some_and(|s| {
                        if work.is_write() {
                            s.reads > 0
                        } else {
                            s.writes > 0
                        }
                    })
            });
            if conflict {
                blocked.extend(users.iter().cloned());
                kept.push_back((work, users));
                continue;
            }
            for u in &users {
                if let Some(s) = self.users.get_mut(u) {
                    s.waiting -= 1;
                }
            }
            self.start(&work, users);
            ready.push(work);
        }
        self.deferred = kept;
        ready
    }

    fn forget_idle(&mut self, users: &[UserKey]) {
        for u in users {
            if self.users.get(u).is_some_and(UserState::idle) {
                self.users.remove(u);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: u64, user: &str) -> Work {
        Work::Read(Lookup::Load {
            id,
            host: "falcot.com".into(),
            user: user.into(),
            store: "roster".into(),
            key: None,
        })
    }

    fn put(id: u64, users: &[&str]) -> Work {
        let ops = users
            .iter()
            .map(|u| StoreOp::Put {
                host: "falcot.com".into(),
                user: (*u).into(),
                store: "roster".into(),
                key: "k".into(),
                value: "v".into(),
            })
            .collect();
        Work::Write(StoreOrder { id, ops })
    }

    fn ids(w: &[Work]) -> Vec<u64> {
        w.iter().map(Work::id).collect()
    }

    #[test]
    fn unrelated_users_and_same_kind_work_run_at_once() {
        let mut s = Sequencer::default();
        assert!(s.submit(load(1, "roland")).is_some());
        assert!(s.submit(load(2, "roland")).is_some());
        assert!(s.submit(put(3, &["joe"])).is_some());
        assert!(s.submit(put(4, &["joe"])).is_some());
        for id in 1..=4 {
            assert!(s.done(id).is_empty());
        }
        assert!(s.is_idle());
    }

    #[test]
    fn a_load_after_a_store_waits_for_it_and_keeps_order() {
        let mut s = Sequencer::default();
        assert!(s.submit(put(1, &["roland"])).is_some());
        assert!(s.submit(load(2, "roland")).is_none());
        // A write behind the waiting read waits too, though writes don't conflict.
        assert!(s.submit(put(3, &["roland"])).is_none());
        // Another user is not held up.
        assert!(s.submit(load(4, "joe")).is_some());
        assert_eq!(ids(&s.done(1)), vec![2]);
        assert_eq!(ids(&s.done(2)), vec![3]);
        assert!(s.done(3).is_empty());
        assert!(s.done(4).is_empty());
        assert!(s.is_idle());
    }

    #[test]
    fn a_store_touching_two_users_waits_for_both() {
        let mut s = Sequencer::default();
        assert!(s.submit(load(1, "roland")).is_some());
        assert!(s.submit(load(2, "joe")).is_some());
        assert!(s.submit(put(3, &["roland", "joe"])).is_none());
        assert!(s.done(1).is_empty(), "joe is still being read");
        assert_eq!(ids(&s.done(2)), vec![3]);
        assert!(s.submit(load(5, "joe")).is_none());
        assert_eq!(ids(&s.done(3)), vec![5]);
        assert!(s.done(5).is_empty());
        assert!(s.is_idle());
    }

    #[test]
    fn unknown_completions_are_ignored() {
        let mut s = Sequencer::default();
        assert!(s.done(42).is_empty());
        assert!(s.is_idle());
    }
}
