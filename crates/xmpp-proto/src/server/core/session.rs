//! Bound resources (RFC 6120 section 7): what a session is, how stanzas reach its
//! connection (through XEP-0352 holding and the XEP-0198 queue), how client stanzas are
//! checked and stamped (RFC 6120 section 8.1.2.1) before routing, and how a session ends:
//! at once, or after an XEP-0198 hibernation.

use super::*;

pub(crate) type SessionId = u64;

/// One bound resource. It outlives its connection while hibernating (XEP-0198).
pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) jid: Jid,
    pub(crate) conn: Option<ConnId>,
    /// Initial presence sent and not withdrawn (RFC 6121 section 4.2).
    pub(crate) available: bool,
    pub(crate) priority: i8,
    /// Last available presence broadcast (sent again in answer to probes).
    pub(crate) presence: Option<Element>,
    /// Entities that got directed presence (RFC 6121 section 4.6) and must get our
    /// unavailable presence.
    pub(crate) directed: BTreeSet<Jid>,
    /// Asked for the roster: gets roster pushes (RFC 6121 section 2.1.6).
    pub(crate) roster_requested: bool,
    /// Asked for the blocklist: gets XEP-0191 pushes.
    pub(crate) blocklist_requested: bool,
    /// XEP-0280 enabled.
    pub(crate) carbons: bool,
    /// XEP-0352 `<inactive/>`: presence updates held, latest per sender.
    pub(crate) csi_inactive: bool,
    pub(crate) csi_held: Vec<Element>,
    pub(crate) sm: Option<sm::SmState>,
    /// Bumped at each hibernation, so a stale timer is recognised.
    pub(crate) hibernation: u64,
}

/// XEP-0198 "handled" mark of one inbound stanza whose outcome is not durable yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckToken {
    pub(crate) sid: SessionId,
    pub(crate) generation: u64,
    pub(crate) seq: u64,
}

impl Server {
    pub(crate) fn create_session(&mut self, now: Instant, cid: ConnId, jid: Jid) -> SessionId {
        let sid = self.next_session;
        self.next_session += 1;
        let bare = jid.bare();
        self.by_full.insert(jid.clone(), sid);
        self.sessions.insert(
            sid,
            Session {
                id: sid,
                jid,
                conn: Some(cid),
                available: false,
                priority: 0,
                presence: None,
                directed: BTreeSet::new(),
                roster_requested: false,
                blocklist_requested: false,
                carbons: false,
                csi_inactive: false,
                csi_held: Vec::new(),
                sm: None,
                hibernation: 0,
            },
        );
        if let Some(u) = self.users.get_mut(&bare) {
            u.sessions.push(sid);
        }
        if let Some(c) = self.conns.get_mut(&cid) {
            c.session = Some(sid);
        }
        self.stats.sessions = self.sessions.len() as u64;
        self.hook_session_opened(now, sid);
        sid
    }

    /// Delivers a stanza to a session: held while XEP-0352 inactive if it can wait,
    /// counted and queued for XEP-0198, written to the connection if there is one.
    pub(crate) fn send_to_session(&mut self, now: Instant, sid: SessionId, st: Element) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        if s.conn.is_none() && s.sm.is_some() && offline::storable(&st) {
            // Hibernating (XEP-0198 section 5): the message only lives in memory until
            // the client resumes, and the sender is told it was handled. Written to
            // offline storage now, so a crash (kill -9) before resumption loses
            // nothing; deleted once the resumed client acknowledges it.
            let bare = s.jid.bare();
            if let Some(key) = self.store_offline_inflight(now, &bare, sid, &st) {
                self.transmit(sid, st, Some(key));
                return;
            }
        }
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.csi_inactive {
            if csi::can_wait(&st) {
                csi::hold(s, st);
                return;
            }
            self.csi_flush(now, sid);
        }
        self.transmit(sid, st, None);
    }

    /// Writes a stanza to the session now (no CSI), `offline_key` when it comes from
    /// offline storage (deleted from there once acknowledged).
    pub(crate) fn transmit(&mut self, sid: SessionId, st: Element, offline_key: Option<String>) {
        let conn = self.sessions.get(&sid).and_then(|s| s.conn);
        let data = conn.map(|cid| self.element_xml(cid, &st));
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let mut queued = false;
        if let Some(sm) = &mut s.sm {
            sm.push(st.clone(), offline_key);
            queued = true;
        }
        if let Some(i) = stanza_index(&st.name) {
            self.stats.stanzas_out[i] += 1;
        }
        if queued {
            self.sm_dirty.push(sid);
        }
        if let (Some(cid), Some(data)) = (conn, data) {
            self.send_raw(cid, data);
        }
    }

    /// A stanza from a bound client (RFC 6120 section 8.1.2.1 and 10.3): counted for
    /// XEP-0198, `from` checked and stamped, `type` and `to` validated, then handled as
    /// outbound message, presence or iq.
    pub(crate) fn on_client_stanza(&mut self, now: Instant, sid: SessionId, st: Element) {
        self.count_in(&st.name);
        self.hold = self.sm_count_inbound(sid);
        self.client_stanza(now, sid, st);
        // Whatever did not take the XEP-0198 hold is handled now.
        self.release_hold(now);
    }

    fn client_stanza(&mut self, now: Instant, sid: SessionId, mut st: Element) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let full = s.jid.clone();
        let cid = s.conn;
        if let Some(f) = st.get_attr("from") {
            let ok = Jid::parse(f).is_ok_and(|j| j == full || j == full.bare());
            if !ok {
                // RFC 6120 section 4.9.3.9.
                if let Some(cid) = cid {
                    self.stream_error(now, cid, "invalid-from", None);
                }
                return;
            }
        }
        st.set_attr("from", &full.to_string());
        if !stanza::valid_type(&st) || (st.name == "iq" && st.get_attr("id").is_none()) {
            self.reply_to_session(now, sid, &st, StanzaError::new("bad-request"));
            return;
        }
        let to = match st.get_attr("to") {
            None => None,
            Some(t) => match Jid::parse(t) {
                Ok(j) => {
                    st.set_attr("to", &j.to_string());
                    Some(j)
                }
                Err(_) => {
                    // RFC 6120 section 8.3.3.8.
                    st.remove_attr("to");
                    self.reply_to_session(now, sid, &st, StanzaError::new("jid-malformed"));
                    return;
                }
            },
        };
        match st.name.as_str() {
            "message" => self.outbound_message(now, sid, st, to),
            "presence" => self.outbound_presence(now, sid, st, to),
            _ => self.outbound_iq(now, sid, st, to),
        }
    }

    /// Answers a session's own stanza with an error, straight back to it.
    pub(crate) fn reply_to_session(
        &mut self,
        now: Instant,
        sid: SessionId,
        st: &Element,
        err: StanzaError,
    ) {
        if let Some(mut r) = stanza::error_reply(st, &err) {
            if st.get_attr("to").is_none() {
                r.remove_attr("from");
            }
            self.send_to_session(now, sid, r);
        }
    }

    /// RFC 6121 section 8.5 from the sender's side: blocking (XEP-0191 section 3.3),
    /// the `message_sent` hook (carbons, XEP-0280 section 6.2), then routing. No `to` means our
    /// own bare JID (RFC 6120 section 10.3.1).
    fn outbound_message(&mut self, now: Instant, sid: SessionId, mut st: Element, to: Option<Jid>) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let bare = s.jid.bare();
        let to = to.unwrap_or_else(|| bare.clone());
        st.set_attr("to", &to.to_string());
        if self.blocks(&bare, &to) {
            self.reply_to_session(now, sid, &st, blocking::blocked_error());
            return;
        }
        self.hook_message_sent(now, sid, &st);
        self.route(now, st);
    }

    /// RFC 6120 section 10.3.3: an iq without `to` is handled by the server for the
    /// account; anything else is routed.
    fn outbound_iq(&mut self, now: Instant, sid: SessionId, st: Element, to: Option<Jid>) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let full = s.jid.clone();
        let bare = full.bare();
        match to {
            None => {
                let req = IqRequest {
                    iq: st,
                    from: full,
                    to: bare,
                    session: Some(sid),
                    own: true,
                };
                self.dispatch_iq(now, req, Target::Account);
            }
            Some(to) => {
                if to.bare() != bare && self.blocks(&bare, &to) {
                    self.reply_to_session(now, sid, &st, blocking::blocked_error());
                    return;
                }
                self.route(now, st);
            }
        }
    }

    /// Replaces a session (RFC 6120 section 7.7.2.2 `conflict`): its stream is closed
    /// with the error, a hibernating one just ends.
    pub(crate) fn kick_session(&mut self, now: Instant, sid: SessionId, condition: &str) {
        let conn = self.sessions.get(&sid).and_then(|s| s.conn);
        match conn {
            Some(cid) => self.stream_error(now, cid, condition, None),
            None => self.destroy_session(now, sid),
        }
    }

    /// The connection of a session went away without a clean close.
    pub(crate) fn session_lost(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.conn = None;
        let resumable = s.sm.as_ref().is_some_and(|m| m.resumable);
        if resumable {
            // XEP-0198 section 5: keep the session (and its presence) for a while.
            s.hibernation += 1;
            let generation = s.hibernation;
            if let Some(m) = &mut s.sm {
                m.request_outstanding = false;
            }
            let at = now + self.cfg.sm_resume_timeout;
            self.arm(at, Timer::Hibernation(sid, generation));
        } else {
            self.destroy_session(now, sid);
        }
    }

    pub(crate) fn hibernation_timeout(&mut self, now: Instant, sid: SessionId, generation: u64) {
        let expired = self
            .sessions
            .get(&sid)
            .is_some_and(|s| s.conn.is_none() && s.hibernation == generation);
        if expired {
            self.destroy_session(now, sid);
        }
    }

    /// Ends a session: unavailable presence to whoever saw it (RFC 6121 section 4.5.2),
    /// unacknowledged messages to offline storage, indexes cleaned. The connection, if
    /// any, is the caller's business.
    pub(crate) fn destroy_session(&mut self, now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        if s.available || !s.directed.is_empty() {
            let full = s.jid.clone();
            let unavailable = Element::new("presence", ns::CLIENT)
                .attr("from", &full.to_string())
                .attr("type", "unavailable");
            self.presence_unavailable(now, sid, unavailable);
        }
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        if self.by_full.get(&s.jid) == Some(&sid) {
            self.by_full.remove(&s.jid);
        }
        if let Some(c) = s.conn.and_then(|c| self.conns.get_mut(&c)) {
            if c.session == Some(sid) {
                c.session = None;
            }
        }
        let bare = s.jid.bare();
        if let Some(sm) = s.sm {
            self.by_smid.remove(&sm.id);
            self.sm_requeue(now, &bare, sid, sm);
        }
        if let Some(u) = self.users.get_mut(&bare) {
            u.sessions.retain(|x| *x != sid);
            if u.sessions.is_empty() {
                self.arm(now + USER_IDLE, Timer::UserIdle(bare));
            }
        }
        self.stats.sessions = self.sessions.len() as u64;
        self.hook_session_closed(now, sid, &s.jid);
    }

    /// Sessions of `bare` (bound, hibernating included).
    pub(crate) fn sessions_of(&self, bare: &Jid) -> Vec<SessionId> {
        self.users
            .get(bare)
            .map(|u| u.sessions.clone())
            .unwrap_or_default()
    }

    /// Available sessions of `bare` (RFC 6121 section 4.1 "available resource").
    pub(crate) fn available_sessions(&self, bare: &Jid) -> Vec<SessionId> {
        self.sessions_of(bare)
            .into_iter()
            .filter(|sid| self.sessions.get(sid).is_some_and(|s| s.available))
            .collect()
    }
}

/// RFC 3921 section 3 session establishment: a no-op kept for old clients (RFC 6121
/// Appendix E), advertised `<optional/>` in the stream features.
pub(crate) const SESSION_MODULE: Module = Module {
    name: "session",
    server_features: &[],
    account_features: &[],
    iq: &[IqRoute {
        ns: ns::SESSION,
        name: "session",
        target: Target::Both,
        handler: session_iq,
    }],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

fn session_iq(_: &mut Server, _: Instant, req: IqRequest) -> IqReply {
    if req.is_set() {
        IqReply::Result(None)
    } else {
        IqReply::Error(StanzaError::new("bad-request"))
    }
}
