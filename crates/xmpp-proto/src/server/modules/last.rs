//! XEP-0012 last activity:
//! - of the server (section 5): seconds since it started;
//! - of an account (section 4, offline user query), for the user and the contacts
//!   allowed to see their presence: 0 while a resource is available, else the seconds
//!   since the last logout with its status text. The logout is written by
//!   [`Server::last_logout`], from the `presence_broadcast` hook when the last available
//!   resource goes (store `lastlog`, key `last`, value
//!   `<last xmlns='urn:xmppd:lastlog' at='unix seconds'>status</last>`).
//!
//! Queries to a full JID are routed to the client (section 3, idle time).

use super::*;

pub(crate) const NS_LAST: &str = "jabber:iq:last";
const NS_STORED: &str = "urn:xmppd:lastlog";
const STORE: &str = "lastlog";
const KEY: &str = "last";

pub(crate) const MODULE: Module = Module {
    name: "last",
    server_features: &[NS_LAST],
    account_features: &[NS_LAST],
    iq: &[IqRoute {
        ns: NS_LAST,
        name: "query",
        target: Target::Both,
        handler: last_iq,
    }],
    preauth_iq: None,
    hooks: Hooks {
        presence_broadcast: Some(presence_broadcast),
        ..Hooks::NONE
    },
};

/// Hook `presence_broadcast`: the account's last available resource went.
fn presence_broadcast(s: &mut Server, now: Instant, full: &Jid, st: &Element) {
    let bare = full.bare();
    if st.get_attr("type") == Some("unavailable") && s.available_sessions(&bare).is_empty() {
        s.last_logout(now, &bare, st);
    }
}

fn answer(seconds: u64, status: &str) -> Element {
    let mut q = Element::new("query", NS_LAST).attr("seconds", &seconds.to_string());
    if !status.is_empty() {
        q = q.text_node(status);
    }
    q
}

fn last_iq(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    if req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    if req.to.node().is_none() {
        // Section 5: server uptime.
        let up = s
            .started
            .map_or(0, |t| now.saturating_duration_since(t).as_secs());
        return IqReply::Result(Some(answer(up, "")));
    }
    let owner = req.to.clone();
    let allowed = req.own
        || s.user(&owner)
            .and_then(|u| u.roster.get(&req.from.bare()))
            .is_some_and(|i| i.sub_from);
    if !allowed {
        // Section 4: not subscribed to the user's presence.
        return IqReply::Error(StanzaError::new("forbidden"));
    }
    if !s.available_sessions(&owner).is_empty() {
        return IqReply::Result(Some(answer(0, "")));
    }
    let reply = req.reply_to();
    let (host, user) = (owner.domain(), owner.node().unwrap_or_default());
    s.load_then(host, user, STORE, Some(KEY), move |s, now, r| {
        let stored = match r {
            Ok(rows) => rows
                .into_iter()
                .next()
                .and_then(|(_, v)| stanza::parse_stored(&v)),
            Err(StoreFailed) => {
                s.reply_iq(now, &reply, Err(StanzaError::new("internal-server-error")));
                return;
            }
        };
        let result = match stored {
            Some(e) => {
                let at = e
                    .get_attr("at")
                    .and_then(|a| a.parse::<u64>().ok())
                    .unwrap_or(0);
                let secs = s.unix_now(now).as_secs().saturating_sub(at);
                Ok(Some(answer(secs, &e.text())))
            }
            None => Err(StanzaError::new("item-not-found")),
        };
        s.reply_iq(now, &reply, result);
    });
    IqReply::Later
}

impl Server {
    /// `bare`'s last available resource sent (or was given)
    /// `unavailable`: the time and status are kept for section 4 queries.
    pub(crate) fn last_logout(&mut self, now: Instant, bare: &Jid, unavailable: &Element) {
        if self.registering.deleting.contains(bare) {
            return;
        }
        let status = unavailable
            .get_child("status", ns::CLIENT)
            .map(Element::text)
            .unwrap_or_default();
        let at = self.unix_now(now).as_secs().to_string();
        let mut v = Element::new("last", NS_STORED).attr("at", &at);
        if !status.is_empty() {
            v = v.text_node(&status);
        }
        self.store(vec![StoreOp::Put {
            host: bare.domain().to_string(),
            user: bare.node().unwrap_or_default().to_string(),
            store: STORE.into(),
            key: KEY.into(),
            value: stanza::to_stored(&v),
        }]);
    }
}
