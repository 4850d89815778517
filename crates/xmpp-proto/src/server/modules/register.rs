//! XEP-0077 in-band registration, and the account changes it shares with the XEP-0133
//! commands (`adhoc.rs`):
//! - before authentication, on a host with `allow_registration` (Prosody's name, off by
//!   default): the form (section 3.1) and account creation with SCRAM secrets only
//!   (salt from the core's generator, `Config.scram_iterations`), `conflict` when the
//!   name is taken. With registration off the request is `service-unavailable` and the
//!   stream feature (section 8) is not offered;
//! - once authenticated, on any host: password change (section 3.3) and account removal
//!   (section 3.2), which the user's clients need whether or not new accounts may be
//!   created there.

use super::*;
use std::collections::HashSet;

pub(crate) const NS_REGISTER: &str = "jabber:iq:register";
/// Longest password taken (it is hashed at once; the limit only bounds the work).
const MAX_PASSWORD: usize = 1024;

pub(crate) const MODULE: Module = Module {
    name: "register",
    server_features: &[NS_REGISTER],
    account_features: &[],
    iq: &[IqRoute {
        ns: NS_REGISTER,
        name: "query",
        target: Target::Both,
        handler: register_iq,
    }],
    preauth_iq: Some(register_preauth),
    hooks: Hooks::NONE,
};

/// Registrations waiting for storage, so two racing for one name cannot both win.
#[derive(Default)]
pub(crate) struct RegisterState {
    pending: HashSet<Jid>,
    /// Accounts being removed: their logout is not recorded (`last.rs`).
    pub(crate) deleting: HashSet<Jid>,
}

/// A password we accept: not empty, not huge, and one SASLprep takes (RFC 4013), so the
/// client's SCRAM computes the same keys.
pub(crate) fn valid_password(p: &str) -> bool {
    !p.is_empty() && p.len() <= MAX_PASSWORD && rtc_auth::scram::saslprep(p).is_ok()
}

/// The only iq allowed before authentication (RFC 6120 section 7.1 otherwise).
fn register_preauth(s: &mut Server, now: Instant, cid: ConnId, iq: Element) {
    let Some(q) = iq
        .get_child("query", NS_REGISTER)
        .filter(|_| iq.elements().count() == 1)
    else {
        s.refuse_element(now, cid, &iq, false);
        return;
    };
    let host = s.conns.get(&cid).and_then(|c| c.host.clone());
    let allowed = host
        .as_deref()
        .and_then(|h| s.vhost(h))
        .is_some_and(|v| v.allow_registration);
    let reply = |s: &mut Server, r: Result<Option<Element>, StanzaError>| {
        let e = match r {
            Ok(p) => Some(stanza::iq_result(&iq, p)),
            Err(e) => stanza::error_reply(&iq, &e),
        };
        s.send_element_conn(cid, e);
    };
    let ty = iq.get_attr("type").unwrap_or("");
    if ty != "get" && ty != "set" {
        return;
    }
    let Some(host) = host.filter(|_| allowed) else {
        // Section 3.1: the host does not offer registration.
        reply(s, Err(StanzaError::new("service-unavailable")));
        return;
    };
    if iq.get_attr("id").is_none() {
        reply(s, Err(StanzaError::new("bad-request")));
        return;
    }
    if ty == "get" {
        // Section 3.1: the fields to fill in.
        let form = Element::new("query", NS_REGISTER)
            .child(
                Element::new("instructions", NS_REGISTER)
                    .text_node("Choose a username and password for use with this service."),
            )
            .child(Element::new("username", NS_REGISTER))
            .child(Element::new("password", NS_REGISTER));
        reply(s, Ok(Some(form)));
        return;
    }
    if q.get_child("remove", NS_REGISTER).is_some() {
        // Section 3.2: cancellation needs an authenticated stream.
        reply(s, Err(StanzaError::new("not-authorized")));
        return;
    }
    let field = |n: &str| q.get_child(n, NS_REGISTER).map(Element::text);
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        // Section 3.1: a required field is missing.
        reply(s, Err(StanzaError::new("not-acceptable")));
        return;
    };
    let Ok(jid) = Jid::from_parts(Some(username.trim()), &host, None) else {
        reply(
            s,
            Err(StanzaError::new("not-acceptable").with_text("invalid username")),
        );
        return;
    };
    if !valid_password(&password) {
        reply(
            s,
            Err(StanzaError::new("not-acceptable").with_text("unacceptable password")),
        );
        return;
    }
    s.create_account(now, &jid, &password, move |s, _now, r| {
        if !s.conns.contains_key(&cid) {
            return;
        }
        let e = match r {
            Ok(()) => Some(stanza::iq_result(&iq, None)),
            Err(e) => stanza::error_reply(&iq, &e),
        };
        s.send_element_conn(cid, e);
    });
}

/// After authentication: the registration record, password change, cancellation.
fn register_iq(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    let user = req.from.bare();
    // The user's own account: from a local session, to their domain or bare JID.
    let own = req.session.is_some()
        && user.domain() == req.to.domain()
        && (req.to.node().is_none() || req.own);
    if !own {
        return IqReply::Error(StanzaError::new("forbidden"));
    }
    let q = req.payload();
    if !req.is_set() {
        // Section 3.2 (already registered).
        return IqReply::Result(Some(
            Element::new("query", NS_REGISTER)
                .child(Element::new("registered", NS_REGISTER))
                .child(
                    Element::new("username", NS_REGISTER)
                        .text_node(user.node().unwrap_or_default()),
                ),
        ));
    }
    let reply = req.reply_to();
    if q.get_child("remove", NS_REGISTER).is_some() {
        // Section 3.2: the answer, then every stream of the account closes.
        s.delete_account(now, &user, move |s, now, r| {
            s.reply_iq(now, &reply, r.map(|()| None));
        });
        return IqReply::Later;
    }
    let field = |n: &str| q.get_child(n, NS_REGISTER).map(Element::text);
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return IqReply::Error(StanzaError::new("bad-request"));
    };
    if Jid::from_parts(Some(username.trim()), user.domain(), None).ok() != Some(user.clone()) {
        // Section 3.3: only one's own password.
        return IqReply::Error(StanzaError::new("not-authorized"));
    }
    if !valid_password(&password) {
        return IqReply::Error(
            StanzaError::new("not-acceptable").with_text("unacceptable password"),
        );
    }
    s.set_password(&user, &password, move |s, now, ok| {
        let r = if ok {
            Ok(None)
        } else {
            Err(StanzaError::new("internal-server-error"))
        };
        s.reply_iq(now, &reply, r);
    });
    IqReply::Later
}

impl Server {
    /// SCRAM secrets (both hashes) for `password` with a fresh salt from the core's
    /// generator and the configured iteration count.
    pub(crate) fn new_secrets(&mut self, password: &str) -> AccountSecrets {
        let mut salt = [0u8; 16];
        salt[..8].copy_from_slice(&self.random_u64().to_le_bytes());
        salt[8..].copy_from_slice(&self.random_u64().to_le_bytes());
        crate::sasl::scram_secrets(password, &salt, self.cfg.scram_iterations)
    }

    /// Creates the account `jid` (bare) with `password`: `conflict` when it exists (or
    /// is being created), else durable when `then` runs.
    pub(crate) fn create_account(
        &mut self,
        now: Instant,
        jid: &Jid,
        password: &str,
        then: impl FnOnce(&mut Server, Instant, Result<(), StanzaError>) + Send + 'static,
    ) {
        if !self.registering.pending.insert(jid.clone()) {
            return then(self, now, Err(StanzaError::new("conflict")));
        }
        let (host, node) = (
            jid.domain().to_string(),
            jid.node().unwrap_or_default().to_string(),
        );
        let jid = jid.clone();
        let password = password.to_string();
        self.fetch_account_then(&host.clone(), &node.clone(), move |s, now, existing| {
            let Ok(existing) = existing else {
                s.registering.pending.remove(&jid);
                return then(s, now, Err(StanzaError::new("internal-server-error")));
            };
            if existing.is_some() {
                s.registering.pending.remove(&jid);
                return then(s, now, Err(StanzaError::new("conflict")));
            }
            let secrets = s.new_secrets(&password);
            let op = StoreOp::PutAccount {
                host,
                user: node,
                secrets,
            };
            s.store_then(vec![op], move |s, now, ok| {
                s.registering.pending.remove(&jid);
                if !ok {
                    return then(s, now, Err(StanzaError::new("internal-server-error")));
                }
                if let Some(u) = s.users.get_mut(&jid) {
                    // A routing lookup may have cached "no such user".
                    u.exists = Some(true);
                }
                then(s, now, Ok(()));
            });
        });
    }

    /// Replaces `user`'s credentials; `then` runs once durable. Sessions stay up (their
    /// authentication was valid when it happened).
    pub(crate) fn set_password(
        &mut self,
        user: &Jid,
        password: &str,
        then: impl FnOnce(&mut Server, Instant, bool) + Send + 'static,
    ) {
        let secrets = self.new_secrets(password);
        let op = StoreOp::PutAccount {
            host: user.domain().to_string(),
            user: user.node().unwrap_or_default().to_string(),
            secrets,
        };
        self.store_then(vec![op], then);
    }

    /// Removes an account and everything stored for it. Its contacts see it unsubscribe
    /// both ways (as a roster removal would, RFC 6121 section 2.5.2); `then` gets the
    /// outcome (`item-not-found` for no such account) before the account's streams are
    /// closed with `not-authorized` (XEP-0077 section 3.2).
    pub(crate) fn delete_account(
        &mut self,
        now: Instant,
        user: &Jid,
        then: impl FnOnce(&mut Server, Instant, Result<(), StanzaError>) + Send + 'static,
    ) {
        let bare = user.bare();
        self.with_user(now, &user.bare(), false, move |s, now, ready| {
            match ready {
                users::Ready::Ok => {}
                users::Ready::NoSuchUser => {
                    return then(s, now, Err(StanzaError::new("item-not-found")))
                }
                users::Ready::Failed => {
                    return then(s, now, Err(StanzaError::new("internal-server-error")))
                }
            }
            let (host, node) = (
                bare.domain().to_string(),
                bare.node().unwrap_or_default().to_string(),
            );
            let ops = vec![
                StoreOp::DeleteAccount {
                    host: host.clone(),
                    user: node.clone(),
                },
                StoreOp::DeleteAll {
                    host,
                    user: node,
                    store: None,
                },
            ];
            s.store_then(ops, move |s, now, ok| {
                if !ok {
                    then(s, now, Err(StanzaError::new("internal-server-error")));
                    return;
                }
                then(s, now, Ok(()));
                // Contacts see the resources go (while the roster is still known), then
                // the subscriptions end; no last-activity record is written back.
                s.registering.deleting.insert(bare.clone());
                for sid in s.sessions_of(&bare) {
                    s.kick_session(now, sid, "not-authorized");
                }
                let items: Vec<roster::RosterItem> = s
                    .user(&bare)
                    .map(|u| u.roster.values().cloned().collect())
                    .unwrap_or_default();
                for i in items {
                    if i.sub_to || i.ask {
                        let p = roster::subscription_presence(&bare, &i.jid.bare(), "unsubscribe");
                        s.route(now, p);
                    }
                    if i.sub_from || i.pending_in {
                        let p = roster::subscription_presence(&bare, &i.jid.bare(), "unsubscribed");
                        s.route(now, p);
                    }
                }
                s.registering.deleting.remove(&bare);
                s.users.remove(&bare);
            });
        });
    }
}
