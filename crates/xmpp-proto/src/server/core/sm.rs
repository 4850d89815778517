//! XEP-0198 stream management: acknowledgements (section 4) and resumption (section
//! 5), with the durability rule of xmppd: a stanza is only counted as handled in an
//! `<a h/>` once what it caused is durable (a message stored offline is acknowledged
//! after its [`Output::Store`] is committed). Unacknowledged stanzas of a session that
//! ends are not lost: messages go to offline storage (or to the user's other resources).

use super::*;

pub(crate) const NS_SM: &str = "urn:xmpp:sm:3";
/// Stanzas queued for a hibernating session before it is given up (Prosody
/// `smacks_max_hibernated_stanzas`-like bound on memory).
const MAX_HIBERNATED_QUEUE: usize = 10_000;

struct Unacked {
    seq: u64,
    st: Element,
    /// Key in the `offline` store when this is an offline message being delivered: it
    /// is deleted from there once acknowledged, and stays there if never acknowledged.
    offline_key: Option<String>,
}

/// XEP-0198 state of a session. Counters are kept as u64 and sent modulo 2^32
/// (section 4: `h` wraps).
pub(crate) struct SmState {
    pub(crate) id: String,
    pub(crate) resumable: bool,
    /// Stanzas received from the client.
    h_in: u64,
    /// Received stanzas whose outcome is not yet durable.
    pending: BTreeSet<u64>,
    /// Bumped on resumption: holds taken before it no longer apply.
    generation: u64,
    /// The client asked `<r/>` while something was pending.
    ack_wanted: bool,
    /// Stanzas sent to the client.
    out: u64,
    unacked: VecDeque<Unacked>,
    pub(crate) request_outstanding: bool,
}

impl SmState {
    pub(crate) fn push(&mut self, st: Element, offline_key: Option<String>) {
        self.out += 1;
        self.unacked.push_back(Unacked {
            seq: self.out,
            st,
            offline_key,
        });
    }

    /// The `h` we may report: everything received up to the first stanza whose
    /// outcome is still pending.
    fn ack_h(&self) -> u64 {
        match self.pending.first() {
            Some(p) => p - 1,
            None => self.h_in,
        }
    }
}

impl Server {
    /// Counts a stanza received on `sid` (section 4) and returns its hold.
    pub(crate) fn sm_count_inbound(&mut self, sid: SessionId) -> Option<AckToken> {
        let sm = self.sessions.get_mut(&sid)?.sm.as_mut()?;
        sm.h_in += 1;
        sm.pending.insert(sm.h_in);
        Some(AckToken {
            sid,
            generation: sm.generation,
            seq: sm.h_in,
        })
    }

    /// The stanza of the current hold is handled: acknowledge it if the client asked.
    pub(crate) fn release_hold(&mut self, _now: Instant) {
        let Some(t) = self.hold.take() else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&t.sid) else {
            return;
        };
        let conn = s.conn;
        let Some(sm) = s.sm.as_mut() else {
            return;
        };
        if sm.generation != t.generation {
            return;
        }
        sm.pending.remove(&t.seq);
        if sm.ack_wanted {
            sm.ack_wanted = false;
            let h = sm.ack_h();
            if let Some(cid) = conn {
                self.send_raw(cid, ack_element(h));
            }
        }
    }

    pub(crate) fn on_sm_element(&mut self, now: Instant, cid: ConnId, sid: SessionId, e: &Element) {
        match e.name.as_str() {
            "enable" => self.sm_enable(now, cid, sid, e),
            "r" => {
                let Some(sm) = self.sessions.get_mut(&sid).and_then(|s| s.sm.as_mut()) else {
                    // Section 4: `<r/>` without SM enabled is unexpected.
                    self.stream_error(now, cid, "unsupported-stanza-type", None);
                    return;
                };
                if sm.pending.is_empty() {
                    let h = sm.h_in;
                    self.send_raw(cid, ack_element(h));
                } else {
                    sm.ack_wanted = true;
                }
            }
            "a" => {
                let h = e.get_attr("h").and_then(|h| h.parse::<u32>().ok());
                let Some(h) = h else {
                    self.stream_error(now, cid, "invalid-xml", None);
                    return;
                };
                if let Some(m) = self.sessions.get_mut(&sid).and_then(|s| s.sm.as_mut()) {
                    m.request_outstanding = false;
                }
                if let Err(app) = self.sm_ack(now, sid, h) {
                    self.stream_error(now, cid, "undefined-condition", Some(app));
                } else {
                    self.sm_dirty.push(sid);
                }
            }
            "resume" => self.sm_failed(cid, "unexpected-request", None),
            _ => self.stream_error(now, cid, "unsupported-stanza-type", None),
        }
    }

    /// Section 3: `<enabled/>`, with an id and our resumption window when asked.
    fn sm_enable(&mut self, _now: Instant, cid: ConnId, sid: SessionId, e: &Element) {
        let id = self.random_id();
        let max = self.cfg.sm_resume_timeout.as_secs();
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.sm.is_some() {
            self.sm_failed(cid, "unexpected-request", None);
            return;
        }
        let resumable = matches!(e.get_attr("resume"), Some("true" | "1"));
        s.sm = Some(SmState {
            id: id.clone(),
            resumable,
            h_in: 0,
            pending: BTreeSet::new(),
            generation: 0,
            ack_wanted: false,
            out: 0,
            unacked: VecDeque::new(),
            request_outstanding: false,
        });
        let mut out = format!("<enabled xmlns='{NS_SM}' id='{id}'");
        if resumable {
            self.by_smid.insert(id, sid);
            out.push_str(&format!(" resume='true' max='{max}'"));
        }
        out.push_str("/>");
        self.send_raw(cid, out);
    }

    /// `<failed/>` with a stanza error condition (section 3 and 5).
    pub(crate) fn sm_failed(&mut self, cid: ConnId, condition: &str, h: Option<u64>) {
        let h = h.map(|h| format!(" h='{}'", h as u32)).unwrap_or_default();
        let out = format!(
            "<failed xmlns='{NS_SM}'{h}><{condition} xmlns='{}'/></failed>",
            ns::STANZAS
        );
        self.send_raw(cid, out);
    }

    /// The client has handled our stanzas up to `h`. `Err` with the section 4
    /// `<handled-count-too-high/>` when it acknowledges more than we sent.
    fn sm_ack(&mut self, now: Instant, sid: SessionId, h: u32) -> Result<(), Element> {
        let _ = now;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Ok(());
        };
        let bare = s.jid.bare();
        let Some(sm) = s.sm.as_mut() else {
            return Ok(());
        };
        let acked_before = sm.out - sm.unacked.len() as u64;
        let n = u64::from(h.wrapping_sub(acked_before as u32));
        if n > sm.unacked.len() as u64 {
            return Err(Element::new("handled-count-too-high", NS_SM)
                .attr("h", &h.to_string())
                .attr("send-count", &(sm.out as u32).to_string()));
        }
        let mut delete = Vec::new();
        for _ in 0..n {
            if let Some(u) = sm.unacked.pop_front() {
                debug_assert!(u.seq <= sm.out);
                if let Some(k) = u.offline_key {
                    delete.push(k);
                }
            }
        }
        if !delete.is_empty() {
            self.offline_delivered(&bare, delete);
        }
        Ok(())
    }

    /// Section 5: resumption of a hibernating (or not yet noticed dead) session on this
    /// newly authenticated connection.
    pub(crate) fn sm_resume(&mut self, now: Instant, cid: ConnId, e: &Element) {
        let Some(user) = self.conns.get(&cid).and_then(|c| c.user().cloned()) else {
            return;
        };
        let h = e.get_attr("h").and_then(|h| h.parse::<u32>().ok());
        let previd = e.get_attr("previd").unwrap_or_default().to_string();
        let Some(h) = h else {
            self.sm_failed(cid, "bad-request", None);
            return;
        };
        let sid = self.by_smid.get(&previd).copied().filter(|sid| {
            self.sessions
                .get(sid)
                .is_some_and(|s| s.jid.bare() == user && s.sm.is_some())
        });
        let Some(sid) = sid else {
            self.sm_failed(cid, "item-not-found", None);
            return;
        };
        // The old connection, if the client got here before we saw it die, is closed
        // without touching the session.
        let old = self.sessions.get(&sid).and_then(|s| s.conn);
        if let Some(old) = old.filter(|o| *o != cid) {
            if let Some(oc) = self.conns.get_mut(&old) {
                oc.session = None;
            }
            let end = self.stream_end_tag(old);
            self.send_raw(old, end);
            self.close_conn(now, old);
        }
        if let Some(c) = self.conns.get_mut(&cid) {
            c.session = Some(sid);
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.conn = Some(cid);
            s.hibernation += 1;
        }
        if let Err(app) = self.sm_ack(now, sid, h) {
            self.stream_error(now, cid, "undefined-condition", Some(app));
            return;
        }
        let ws = self.is_websocket(cid);
        let content_ns = self
            .conns
            .get(&cid)
            .map_or(ns::CLIENT, |c| c.role.content_ns());
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(sm) = s.sm.as_mut() else {
            return;
        };
        // Stanzas whose outcome is still pending are reported unhandled: the client
        // sends them again (a duplicate at worst, never a loss).
        sm.h_in = sm.ack_h();
        sm.pending.clear();
        sm.generation += 1;
        sm.ack_wanted = false;
        sm.request_outstanding = false;
        let resumed = format!(
            "<resumed xmlns='{NS_SM}' previd='{previd}' h='{}'/>",
            sm.h_in as u32
        );
        // Over WebSocket each element is a message of its own (RFC 7395 section 3.3.3).
        let mut messages = vec![resumed];
        for u in &sm.unacked {
            if ws {
                messages.push(u.st.to_xml(""));
            } else {
                messages[0].push_str(&u.st.to_xml(content_ns));
            }
        }
        // XEP-0352 state belongs to the stream: a resumed stream starts active.
        let held = std::mem::take(&mut s.csi_held);
        s.csi_inactive = false;
        for m in messages {
            self.send_raw(cid, m);
        }
        for st in held {
            self.transmit(sid, st, None);
        }
        self.sm_dirty.push(sid);
    }

    /// At the end of each call: ask for acknowledgement (section 4 `<r/>`) where
    /// stanzas are waiting and no request is outstanding; give up hibernating sessions
    /// whose queue grew too long.
    pub(crate) fn request_acks(&mut self) {
        let mut dirty = std::mem::take(&mut self.sm_dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for sid in dirty {
            let Some(s) = self.sessions.get_mut(&sid) else {
                continue;
            };
            let conn = s.conn;
            let Some(sm) = s.sm.as_mut() else {
                continue;
            };
            match conn {
                Some(cid) if !sm.unacked.is_empty() && !sm.request_outstanding => {
                    sm.request_outstanding = true;
                    self.send_raw(cid, format!("<r xmlns='{NS_SM}'/>"));
                }
                None if sm.unacked.len() > MAX_HIBERNATED_QUEUE => {
                    if let Some(now) = self.last_now {
                        self.destroy_session(now, sid);
                    }
                }
                _ => {}
            }
        }
    }

    /// A session ended with stanzas it never acknowledged: offline messages it was
    /// given stay stored; other messages of type chat/normal go to the user's other
    /// resources if any is available, to offline storage otherwise.
    pub(crate) fn sm_requeue(&mut self, now: Instant, bare: &Jid, sid: SessionId, sm: SmState) {
        let _ = sid;
        for u in sm.unacked {
            if let Some(k) = u.offline_key {
                self.offline_undelivered(bare, &k);
                continue;
            }
            let st = u.st;
            if st.name == "iq" && matches!(st.get_attr("type"), Some("get" | "set")) {
                // Nobody will answer it now.
                self.bounce(now, &st, StanzaError::new("service-unavailable"));
                continue;
            }
            if st.name != "message" || !matches!(stanza::stanza_type(&st), "chat" | "normal") {
                continue;
            }
            if carbons::is_carbon(&st) {
                continue;
            }
            let mut st = st;
            st.set_attr("to", &bare.to_string());
            self.deliver_message(now, bare.clone(), st);
        }
    }
}

fn ack_element(h: u64) -> String {
    format!("<a xmlns='{NS_SM}' h='{}'/>", h as u32)
}
