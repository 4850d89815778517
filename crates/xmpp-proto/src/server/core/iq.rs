//! The iq dispatch table: every service module registers the payloads it answers
//! (RFC 6120 section 8.2.3: one payload per get/set) and the disco#info features it
//! adds. See the module doc of `server.rs` for how to add a module.

use super::*;

/// Who an iq is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The domain (`to='example.org'`).
    Server,
    /// An account (`to='user@example.org'`, or no `to` from the user's own session,
    /// RFC 6120 section 10.3.3).
    Account,
    /// Either.
    Both,
}

impl Target {
    fn accepts(self, t: Target) -> bool {
        self == Target::Both || self == t
    }
}

/// One get/set request as a handler sees it.
pub(crate) struct IqRequest {
    /// The iq as received, `from` stamped.
    pub(crate) iq: Element,
    #[allow(dead_code)] // for modules that answer per requester (vcard, PEP)
    pub(crate) from: Jid,
    /// The domain or the account bare JID.
    pub(crate) to: Jid,
    /// The sender's session when it is a local one.
    pub(crate) session: Option<SessionId>,
    /// From the account itself (one of its resources).
    pub(crate) own: bool,
}

impl IqRequest {
    pub(crate) fn is_set(&self) -> bool {
        self.iq.get_attr("type") == Some("set")
    }
    /// The single payload element.
    pub(crate) fn payload(&self) -> &Element {
        self.iq
            .elements()
            .next()
            .expect("dispatch checked one payload")
    }
    /// Where the answer goes, for handlers that answer later ([`Server::reply_iq`]).
    pub(crate) fn reply_to(&self) -> IqReplyTo {
        IqReplyTo {
            id: self.iq.get_attr("id").unwrap_or_default().to_string(),
            from: self.iq.get_attr("to").map(str::to_string),
            to: self.iq.get_attr("from").unwrap_or_default().to_string(),
        }
    }
}

/// Addressing of an iq answer.
#[derive(Debug, Clone)]
pub(crate) struct IqReplyTo {
    pub(crate) id: String,
    /// The request's `to` (absent when the client sent none).
    pub(crate) from: Option<String>,
    pub(crate) to: String,
}

pub(crate) enum IqReply {
    Result(Option<Element>),
    Error(StanzaError),
    /// The handler answers itself with [`Server::reply_iq`].
    Later,
}

pub(crate) type IqHandler = fn(&mut Server, Instant, IqRequest) -> IqReply;
/// An iq before authentication (XEP-0077 registration): the handler owns the answer.
pub(crate) type PreauthIqHandler = fn(&mut Server, Instant, ConnId, Element);

/// One payload a module answers.
pub(crate) struct IqRoute {
    pub(crate) ns: &'static str,
    /// Payload element name; `""` for any.
    pub(crate) name: &'static str,
    pub(crate) target: Target,
    pub(crate) handler: IqHandler,
}

/// A service module.
pub(crate) struct Module {
    pub(crate) name: &'static str,
    /// Features in the domain's disco#info (XEP-0030 section 3.1).
    pub(crate) server_features: &'static [&'static str],
    /// Features in an account's disco#info.
    pub(crate) account_features: &'static [&'static str],
    pub(crate) iq: &'static [IqRoute],
    pub(crate) preauth_iq: Option<PreauthIqHandler>,
    /// The core events it listens to (`hooks.rs`).
    pub(crate) hooks: Hooks,
}

/// Every module, in dispatch order (iq payloads, then hooks). New modules add themselves
/// here.
pub(crate) const MODULES: &[&Module] = &[
    &session::SESSION_MODULE,
    &roster::MODULE,
    &blocking::MODULE,
    &carbons::MODULE,
    &disco::MODULE,
    &ping::MODULE,
    &vcard::MODULE,
    &private::MODULE,
    &pep::MODULE,
    &bookmarks::MODULE,
    &version::MODULE,
    &time::MODULE,
    &caps::MODULE,
    &last::MODULE,
    &register::MODULE,
    &adhoc::MODULE,
    &offline::MODULE,
];

impl Server {
    /// Hands a get/set to the module that registered its payload.
    pub(crate) fn dispatch_iq(&mut self, now: Instant, req: IqRequest, target: Target) {
        let ty = req.iq.get_attr("type").unwrap_or("");
        if ty != "get" && ty != "set" {
            return;
        }
        let payloads = req.iq.elements().count();
        if payloads != 1 {
            // RFC 6120 section 8.2.3: exactly one payload.
            self.answer(now, &req, IqReply::Error(StanzaError::new("bad-request")));
            return;
        }
        let (pns, pname) = {
            let p = req.payload();
            (p.ns.clone(), p.name.clone())
        };
        let mut ns_known = false;
        let mut found = None;
        'outer: for m in MODULES {
            for r in m.iq {
                if r.ns == pns {
                    ns_known = true;
                    if (r.name.is_empty() || r.name == pname) && r.target.accepts(target) {
                        found = Some(r.handler);
                        break 'outer;
                    }
                }
            }
        }
        match found {
            Some(h) => {
                let reply_to = req.reply_to();
                let original = req.iq.clone();
                match h(self, now, req) {
                    IqReply::Later => {}
                    IqReply::Result(p) => self.reply_iq(now, &reply_to, Ok(p)),
                    IqReply::Error(e) => self.reply_error_to(now, &original, e),
                }
            }
            None => {
                // RFC 6120 section 8.3.3.19 / 8.3.3.3.
                let cond = if ns_known {
                    "feature-not-implemented"
                } else {
                    "service-unavailable"
                };
                self.answer(now, &req, IqReply::Error(StanzaError::new(cond)));
            }
        }
    }

    fn answer(&mut self, now: Instant, req: &IqRequest, reply: IqReply) {
        match reply {
            IqReply::Result(p) => self.reply_iq(now, &req.reply_to(), Ok(p)),
            IqReply::Error(e) => self.reply_error_to(now, &req.iq, e),
            IqReply::Later => {}
        }
    }

    fn reply_error_to(&mut self, now: Instant, iq: &Element, e: StanzaError) {
        let Some(mut r) = stanza::error_reply(iq, &e) else {
            return;
        };
        if iq.get_attr("to").is_none() {
            r.remove_attr("from");
        }
        self.deliver_reply(now, r);
    }

    /// Sends the answer to an iq (RFC 6120 section 8.2.3): a result with the payload,
    /// or an error.
    pub(crate) fn reply_iq(
        &mut self,
        now: Instant,
        to: &IqReplyTo,
        result: Result<Option<Element>, StanzaError>,
    ) {
        let mut r = Element::new("iq", ns::CLIENT).attr("id", &to.id);
        if let Some(f) = &to.from {
            r.set_attr("from", f);
        }
        r.set_attr("to", &to.to);
        match result {
            Ok(p) => {
                r.set_attr("type", "result");
                if let Some(p) = p {
                    r.push(p);
                }
            }
            Err(e) => {
                r.set_attr("type", "error");
                r.push(e.to_element(None));
            }
        }
        self.deliver_reply(now, r);
    }

    /// An answer goes straight to a local session when it is one (no `from` needed),
    /// else through the router.
    fn deliver_reply(&mut self, now: Instant, r: Element) {
        let to = r.get_attr("to").and_then(|t| Jid::parse(t).ok());
        if let Some(sid) = to.as_ref().and_then(|t| self.by_full.get(t)).copied() {
            self.send_to_session(now, sid, r);
        } else {
            self.route(now, r);
        }
    }

    /// disco#info features of the domain from every module (XEP-0030 section 3.1).
    pub(crate) fn server_features(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = MODULES
            .iter()
            .flat_map(|m| m.server_features.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// disco#info features of an account.
    pub(crate) fn account_features(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = MODULES
            .iter()
            .flat_map(|m| m.account_features.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Names of the registered modules (for `about`/`status`).
    #[allow(dead_code)]
    pub(crate) fn module_names(&self) -> Vec<&'static str> {
        MODULES.iter().map(|m| m.name).collect()
    }
}
