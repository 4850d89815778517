//! Routing (RFC 6120 section 10, RFC 6121 section 8): one entry point, [`Server::route`],
//! for every stanza whatever its origin, to the server itself, a local user, a MUC
//! service or a remote domain ([`Server::deliver_remote`], where the `remote_stanza` hook
//! lets server-to-server streams take stanzas over). Modules act on messages through the
//! hooks fired here (`hooks.rs`): `message_routed`, `message_delivered`,
//! `message_offline`.

use super::*;

impl Server {
    /// Routes a stanza by its `to` (which must be set); `from` is the sender as stamped.
    pub(crate) fn route(&mut self, now: Instant, st: Element) {
        let Some(to) = st.get_attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return;
        };
        if self.is_local_domain(to.domain()) {
            if to.node().is_none() {
                self.route_to_server(now, to, st);
            } else {
                self.route_to_local_user(now, to, st);
            }
        } else if self.muc_service(to.domain()).is_some() {
            let Some(from) = st.get_attr("from").and_then(|f| Jid::parse(f).ok()) else {
                return;
            };
            self.muc_handle(now, from, st);
        } else {
            self.deliver_remote(now, to, st);
        }
    }

    /// Sends an error for `st` back to its sender (never for errors, RFC 6120 section
    /// 8.3.1).
    pub(crate) fn bounce(&mut self, now: Instant, st: &Element, err: StanzaError) {
        if st.get_attr("from").is_none() {
            return;
        }
        if let Some(r) = stanza::error_reply(st, &err) {
            self.route(now, r);
        }
    }

    /// A remote domain: the `remote_stanza` hook (where server-to-server streams take
    /// stanzas over); with no taker, RFC 6120 section 10.4.3 `remote-server-not-found`.
    /// Presence is dropped rather than bounced (a roster with remote contacts would get
    /// an error per contact at each presence change).
    pub(crate) fn deliver_remote(&mut self, now: Instant, to: Jid, st: Element) {
        let Some(st) = self.hook_remote_stanza(now, &to, st) else {
            return;
        };
        if st.name == "presence" {
            return;
        }
        self.bounce(now, &st, StanzaError::new("remote-server-not-found"));
    }

    /// RFC 6120 section 10.3 / 10.4: addressed to the domain itself.
    fn route_to_server(&mut self, now: Instant, to: Jid, st: Element) {
        match st.name.as_str() {
            "iq" => {
                let ty = st.get_attr("type").unwrap_or("");
                if ty != "get" && ty != "set" {
                    // Results to our pushes and pings: nothing waits for them, except
                    // the answers to XEP-0115 disco#info queries (`caps.rs`).
                    self.caps_iq_answer(now, &st);
                    return;
                }
                let Some(from) = st.get_attr("from").and_then(|f| Jid::parse(f).ok()) else {
                    return;
                };
                let session = self.by_full.get(&from).copied();
                let req = IqRequest {
                    iq: st,
                    own: false,
                    from,
                    to,
                    session,
                };
                self.dispatch_iq(now, req, Target::Server);
            }
            "message" => {
                let ty = stanza::stanza_type(&st);
                if ty != "error" && ty != "headline" {
                    self.bounce(now, &st, StanzaError::new("service-unavailable"));
                }
            }
            _ => {}
        }
    }

    /// A stanza for `user@ourdomain[/resource]`: once the user's state is loaded
    /// (RFC 6121 section 8.5). Availability presence for a user who is not online is
    /// dropped without loading anything (section 8.5.2.2.2: no available resource).
    fn route_to_local_user(&mut self, now: Instant, to: Jid, st: Element) {
        let bare = to.bare();
        if st.name == "presence" && !self.users.contains_key(&bare) {
            let ty = st.get_attr("type").unwrap_or("");
            if matches!(ty, "" | "unavailable" | "error" | "probe") {
                return;
            }
        }
        self.with_user(now, &bare, false, move |s, now, ready| {
            s.local_user_ready(now, to, st, ready)
        });
    }

    fn local_user_ready(&mut self, now: Instant, to: Jid, st: Element, ready: users::Ready) {
        let from = st.get_attr("from").and_then(|f| Jid::parse(f).ok());
        let ty = stanza::stanza_type(&st).to_string();
        match ready {
            users::Ready::Ok => {}
            users::Ready::Failed => {
                if st.name != "presence" {
                    self.bounce(now, &st, StanzaError::new("internal-server-error"));
                }
                return;
            }
            users::Ready::NoSuchUser => {
                // RFC 6121 section 8.5.1; section 3.1.3 / 4.3.2 for subscribe and probe.
                match (st.name.as_str(), ty.as_str()) {
                    ("presence", "subscribe" | "probe") => {
                        if let Some(from) = from {
                            let p = Element::new("presence", ns::CLIENT)
                                .attr("from", &to.bare().to_string())
                                .attr("to", &from.bare().to_string())
                                .attr("type", "unsubscribed");
                            self.route(now, p);
                        }
                    }
                    ("presence", _) => {}
                    _ => self.bounce(now, &st, StanzaError::new("service-unavailable")),
                }
                return;
            }
        }
        let bare = to.bare();
        if let Some(f) = &from {
            if f.bare() != bare && self.blocks(&bare, f) {
                // XEP-0191 section 3.3: nothing from a blocked entity reaches the user;
                // iq requests and messages get service-unavailable, like an absent user.
                match st.name.as_str() {
                    "presence" => {}
                    "iq" if ty == "get" || ty == "set" => {
                        self.bounce(now, &st, StanzaError::new("service-unavailable"))
                    }
                    "message" if ty != "groupchat" && ty != "headline" => {
                        self.bounce(now, &st, StanzaError::new("service-unavailable"))
                    }
                    _ => {}
                }
                return;
            }
        }
        match st.name.as_str() {
            "message" => {
                if let Some(st) = self.hook_message_routed(now, &to, st) {
                    self.deliver_message(now, to, st);
                }
            }
            "presence" => self.inbound_presence(now, from, to, st),
            _ => self.inbound_iq(now, from, to, st),
        }
    }

    /// RFC 6121 section 8.5.2 (bare JID) and 8.5.3 (full JID) for messages.
    pub(crate) fn deliver_message(&mut self, now: Instant, to: Jid, st: Element) {
        let ty = stanza::stanza_type(&st).to_string();
        let bare = to.bare();
        if to.resource().is_some() {
            if let Some(sid) = self.by_full.get(&to).copied() {
                // Section 8.5.3.1.
                self.send_to_session(now, sid, st.clone());
                self.hook_message_delivered(now, &bare, &[sid], &st);
                return;
            }
            // Section 8.5.3.2.1: no such resource.
            match ty.as_str() {
                "groupchat" => {
                    self.bounce(now, &st, StanzaError::new("service-unavailable"));
                    return;
                }
                "error" => return,
                _ => {}
            }
        }
        let avail = self.available_sessions(&bare);
        let nonneg: Vec<(SessionId, i8)> = avail
            .iter()
            .filter_map(|sid| self.sessions.get(sid).map(|s| (*sid, s.priority)))
            .filter(|(_, p)| *p >= 0)
            .collect();
        match ty.as_str() {
            "normal" | "chat" => {
                // Section 8.5.2.1.1: the highest non-negative priority resource(s); all
                // of them on a tie (as Prosody does).
                let Some(max) = nonneg.iter().map(|(_, p)| *p).max() else {
                    // Section 8.5.2.2.1: offline storage (`offline.rs`), if loaded.
                    let _ = self.hook_message_offline(now, &bare, st);
                    return;
                };
                let targets: Vec<SessionId> = nonneg
                    .iter()
                    .filter(|(_, p)| *p == max)
                    .map(|(s, _)| *s)
                    .collect();
                for sid in &targets {
                    self.send_to_session(now, *sid, st.clone());
                }
                self.hook_message_delivered(now, &bare, &targets, &st);
            }
            "headline" => {
                // Section 8.5.2.1.1 (headline): every non-negative resource; none: drop.
                for (sid, _) in nonneg {
                    self.send_to_session(now, sid, st.clone());
                }
            }
            "groupchat" => self.bounce(now, &st, StanzaError::new("service-unavailable")),
            _ => {}
        }
    }

    /// RFC 6121 section 8.5.2.1.3 / 8.5.3 for iq: a bare JID is answered by the server
    /// for the account, a full JID goes to that resource.
    fn inbound_iq(&mut self, now: Instant, from: Option<Jid>, to: Jid, st: Element) {
        let ty = stanza::stanza_type(&st).to_string();
        if to.resource().is_some() {
            match self.by_full.get(&to).copied() {
                Some(sid) => self.send_to_session(now, sid, st),
                None if ty == "get" || ty == "set" => {
                    self.bounce(now, &st, StanzaError::new("service-unavailable"))
                }
                None => {}
            }
            return;
        }
        if ty != "get" && ty != "set" {
            return;
        }
        let Some(from) = from else {
            return;
        };
        let own = from.bare() == to;
        let session = if own {
            self.by_full.get(&from).copied()
        } else {
            None
        };
        let req = IqRequest {
            iq: st,
            from,
            to,
            session,
            own,
        };
        self.dispatch_iq(now, req, Target::Account);
    }
}
