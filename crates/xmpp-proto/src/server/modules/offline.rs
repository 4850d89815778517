//! Offline messages (RFC 6121 section 8.5.2.2.1, XEP-0160): stored when no resource can
//! take a message, stamped with an XEP-0203 delay, delivered at the next initial
//! presence with a non-negative priority, and deleted only once delivered for good
//! (acknowledged under XEP-0198, or written to a session without it).

use super::*;

pub(crate) const NS_DELAY: &str = "urn:xmpp:delay";
const NS_HINTS: &str = "urn:xmpp:hints";

/// Takes the messages no resource can take (hook `message_offline`, Prosody's
/// `message/offline/handle`) and announces each one once durable (`message_stored`).
pub(crate) const MODULE: Module = Module {
    name: "offline",
    server_features: &[],
    account_features: &[],
    iq: &[],
    preauth_iq: None,
    hooks: Hooks {
        message_offline: Some(message_offline),
        ..Hooks::NONE
    },
};

fn message_offline(s: &mut Server, now: Instant, bare: &Jid, st: Element) -> Flow {
    s.store_offline(now, bare, st);
    Flow::Handled
}

/// A stored message and, while it is being delivered under XEP-0198, the session it
/// went to (it stays stored until that session acknowledges it).
#[derive(Debug, Clone)]
pub(crate) struct OfflineEntry {
    pub(crate) st: Element,
    pub(crate) inflight: Option<SessionId>,
}

impl OfflineEntry {
    pub(crate) fn new(st: Element) -> OfflineEntry {
        OfflineEntry { st, inflight: None }
    }
}

/// XEP-0160 section 3 / XEP-0334: messages of type normal or chat carrying content
/// (a body, or an explicit `<store/>` hint); `<no-store/>` and chat states alone are
/// not kept.
pub(crate) fn storable(st: &Element) -> bool {
    if !matches!(stanza::stanza_type(st), "normal" | "chat") {
        return false;
    }
    if st.get_child("no-store", NS_HINTS).is_some() || carbons::is_carbon(st) {
        return false;
    }
    stanza::has_body(st) || st.get_child("store", NS_HINTS).is_some()
}

impl Server {
    /// Stores a message for `bare`, or bounces it when the user's store is full
    /// (`service-unavailable`, RFC 6121 section 8.5.2.2.1). The sender's XEP-0198
    /// acknowledgement waits for the write.
    pub(crate) fn store_offline(&mut self, now: Instant, bare: &Jid, mut st: Element) {
        if !storable(&st) {
            return;
        }
        let max = self.cfg.offline_max;
        let Some(u) = self.user(bare) else {
            return;
        };
        if u.offline.len() >= max {
            self.bounce(now, &st, StanzaError::new("service-unavailable"));
            return;
        }
        let key = self.offline_key(now);
        if st.get_child("delay", NS_DELAY).is_none() {
            let stamp = stanza::datetime(self.unix_now(now));
            st.push(
                Element::new("delay", NS_DELAY)
                    .attr("from", bare.domain())
                    .attr("stamp", &stamp)
                    .text_node("Offline Storage"),
            );
        }
        let value = stanza::to_stored(&st);
        if let Some(u) = self.user_mut(bare) {
            u.offline.insert(key.clone(), OfflineEntry::new(st.clone()));
        }
        self.stats.offline_stored += 1;
        let op = StoreOp::Put {
            host: bare.domain().to_string(),
            user: bare.node().unwrap_or_default().to_string(),
            store: "offline".into(),
            key: key.clone(),
            value,
        };
        let bare = bare.clone();
        self.store_then(vec![op], move |s, now, ok| {
            if ok {
                s.hook_message_stored(now, &bare, &st);
                return;
            }
            // Not durable: the sender learns it (the message may still have been
            // delivered from memory meanwhile; a duplicate beats a loss).
            if let Some(u) = s.user_mut(&bare) {
                u.offline.remove(&key);
            }
            s.bounce(now, &st, StanzaError::new("internal-server-error"));
        });
    }

    /// Writes a message queued for hibernating session `sid` to the offline store,
    /// marked as being delivered to it; the sender's acknowledgement waits for the
    /// write. `None` when the store is full (the message then stays in memory only,
    /// as for a connected session).
    pub(crate) fn store_offline_inflight(
        &mut self,
        now: Instant,
        bare: &Jid,
        sid: SessionId,
        st: &Element,
    ) -> Option<String> {
        let max = self.cfg.offline_max;
        if self.user(bare)?.offline.len() >= max {
            return None;
        }
        let key = self.offline_key(now);
        let mut stored = st.clone();
        if stored.get_child("delay", NS_DELAY).is_none() {
            let stamp = stanza::datetime(self.unix_now(now));
            stored.push(
                Element::new("delay", NS_DELAY)
                    .attr("from", bare.domain())
                    .attr("stamp", &stamp)
                    .text_node("Offline Storage"),
            );
        }
        let value = stanza::to_stored(&stored);
        if let Some(u) = self.user_mut(bare) {
            let mut e = OfflineEntry::new(stored);
            e.inflight = Some(sid);
            u.offline.insert(key.clone(), e);
        }
        let op = StoreOp::Put {
            host: bare.domain().to_string(),
            user: bare.node().unwrap_or_default().to_string(),
            store: "offline".into(),
            key: key.clone(),
            value,
        };
        let bare = bare.clone();
        let k = key.clone();
        self.store_then(vec![op], move |s, _, ok| {
            if !ok {
                // Memory still has it (the hibernating queue): nothing else to do.
                if let Some(u) = s.user_mut(&bare) {
                    u.offline.remove(&k);
                }
            }
        });
        Some(key)
    }

    /// A key that sorts by arrival: microseconds of calendar time, kept increasing.
    fn offline_key(&mut self, now: Instant) -> String {
        let micros = self.unix_now(now).as_micros() as u64;
        let micros = micros.max(self.last_offline_micros + 1);
        self.last_offline_micros = micros;
        format!("{micros:020}")
    }

    /// Sends the stored messages to a session that just became available.
    pub(crate) fn deliver_offline(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let bare = s.jid.bare();
        let with_sm = s.sm.is_some();
        let Some(u) = self.user_mut(&bare) else {
            return;
        };
        let mut batch = Vec::new();
        for (k, e) in u.offline.iter_mut() {
            if e.inflight.is_some() {
                continue;
            }
            if with_sm {
                e.inflight = Some(sid);
            }
            batch.push((k.clone(), e.st.clone()));
        }
        if batch.is_empty() {
            return;
        }
        self.csi_flush(now, sid);
        let mut delivered = Vec::new();
        for (k, st) in batch {
            if with_sm {
                self.transmit(sid, st, Some(k));
            } else {
                self.transmit(sid, st, None);
                delivered.push(k);
            }
        }
        if !delivered.is_empty() {
            self.offline_delivered(&bare, delivered);
        }
    }

    /// Delivered for good: delete from memory and from the store.
    pub(crate) fn offline_delivered(&mut self, bare: &Jid, keys: Vec<String>) {
        if let Some(u) = self.users.get_mut(bare) {
            for k in &keys {
                u.offline.remove(k);
            }
        }
        let ops = keys
            .into_iter()
            .map(|key| StoreOp::Delete {
                host: bare.domain().to_string(),
                user: bare.node().unwrap_or_default().to_string(),
                store: "offline".into(),
                key,
            })
            .collect();
        self.store(ops);
    }

    /// The session it went to ended without acknowledging it: it is still stored and
    /// goes to the next session.
    pub(crate) fn offline_undelivered(&mut self, bare: &Jid, key: &str) {
        if let Some(e) = self
            .users
            .get_mut(bare)
            .and_then(|u| u.offline.get_mut(key))
        {
            e.inflight = None;
        }
    }
}
