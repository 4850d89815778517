//! Named events of the core that modules listen to, as Prosody's modules do with
//! `module:hook("message/bare", ...)`: the router, sessions and presence fire them, and
//! whatever a module does about an event (a carbon copy, offline storage, an archive
//! entry, a push notification, a stanza sent over a server-to-server stream) lives in
//! the module, not in the code that fires it.
//!
//! A module subscribes by filling fields of its [`Hooks`] (in its `MODULE`); handlers
//! run in the order of `iq::MODULES`. Hooks that may take a stanza over return [`Flow`]:
//! `Continue` hands the (possibly altered) stanza to the next handler and finally to
//! the core's default, `Handled` ends the event there.

use super::*;
use iq::MODULES;

/// What a handler that may take a stanza over decides.
pub(crate) enum Flow {
    /// Not (or not only) this handler's business: the next handler, then the core's
    /// default, get this stanza (as it was, or altered). No module of today lets a
    /// stanza through (an archive, XEP-0313, will: it records and passes on).
    #[allow(dead_code)]
    Continue(Element),
    /// Taken care of: nothing else happens to the stanza.
    Handled,
}

/// A handler given the stanza and allowed to take it over.
pub(crate) type StanzaHook = fn(&mut Server, Instant, &Jid, Element) -> Flow;
/// A handler told about a stanza concerning a JID, after the fact.
pub(crate) type NoticeHook = fn(&mut Server, Instant, &Jid, &Element);
/// A handler told which sessions of a user got a message.
pub(crate) type DeliveredHook = fn(&mut Server, Instant, &Jid, &[SessionId], &Element);

/// The events of the core and, per module, the handler of each one it listens to.
/// Every field is optional; a module lists only the events it needs.
#[derive(Clone, Copy)]
pub(crate) struct Hooks {
    /// A local session sent a message (checked, `from` stamped, `to` set, the sender
    /// not blocking the recipient), just before it is routed: Prosody's
    /// `pre-message/*`. Carbons (XEP-0280 section 6.2) copy it to the sender's other
    /// resources here; an archive (XEP-0313) records outgoing messages here.
    pub(crate) message_sent: Option<fn(&mut Server, Instant, SessionId, &Element)>,
    /// A message for the local user `to` (bare or full JID) from anyone, after the
    /// user's state is loaded and blocking is checked, before delivery (RFC 6121
    /// section 8.5): Prosody's `message/bare` and `message/full`. A handler may alter
    /// the message or consume it (an archive stamping a stanza id, a filter).
    pub(crate) message_routed: Option<StanzaHook>,
    /// A message was written to these sessions of the local user `bare` (RFC 6121
    /// section 8.5.2.1.1 or 8.5.3.1). Carbons send `<received/>` copies to the other
    /// resources (XEP-0280 section 6.1).
    pub(crate) message_delivered: Option<DeliveredHook>,
    /// No resource of the local user `bare` can take this message (RFC 6121 section
    /// 8.5.2.2.1): Prosody's `message/offline/handle`. Offline storage (XEP-0160)
    /// consumes it; with no taker it is dropped.
    pub(crate) message_offline: Option<StanzaHook>,
    /// A message for the offline user `bare` is durably stored (the sender's XEP-0198
    /// acknowledgement is released right after): where push notifications (XEP-0357)
    /// tell the user's device something is waiting.
    pub(crate) message_stored: Option<NoticeHook>,
    /// The local resource `full` changed its availability (RFC 6121 sections 4.2 to
    /// 4.5): the presence it broadcasts, `type='unavailable'` when it goes away
    /// (explicitly or because its session ended). Entity capabilities (XEP-0115) and
    /// last activity (XEP-0012) follow resources here.
    pub(crate) presence_broadcast: Option<NoticeHook>,
    /// A resource was bound (RFC 6120 section 7) and its session exists.
    pub(crate) session_opened: Option<fn(&mut Server, Instant, SessionId)>,
    /// A session ended for good (stream closed, or XEP-0198 hibernation expired), after
    /// its unavailable presence went out and its unacknowledged stanzas were requeued;
    /// the session is already gone, hence the full JID.
    pub(crate) session_closed: Option<fn(&mut Server, Instant, SessionId, &Jid)>,
    /// A stanza for a domain that is neither ours nor one of our components (RFC 6120
    /// section 10.4): Prosody's `route/remote`. Server-to-server streams take it over
    /// here; with no taker, messages and iqs are answered `remote-server-not-found`.
    pub(crate) remote_stanza: Option<StanzaHook>,
}

impl Hooks {
    /// A module listening to nothing.
    pub(crate) const NONE: Hooks = Hooks {
        message_sent: None,
        message_routed: None,
        message_delivered: None,
        message_offline: None,
        message_stored: None,
        presence_broadcast: None,
        session_opened: None,
        session_closed: None,
        remote_stanza: None,
    };
}

impl Server {
    /// Runs a stanza through the handlers of one [`StanzaHook`] event; `None` when one
    /// of them took it.
    fn run_stanza_hook(
        &mut self,
        now: Instant,
        event: fn(&Hooks) -> Option<StanzaHook>,
        jid: &Jid,
        mut st: Element,
    ) -> Option<Element> {
        for m in MODULES {
            if let Some(h) = event(&m.hooks) {
                match h(self, now, jid, st) {
                    Flow::Continue(next) => st = next,
                    Flow::Handled => return None,
                }
            }
        }
        Some(st)
    }

    pub(crate) fn hook_message_sent(&mut self, now: Instant, sid: SessionId, st: &Element) {
        for m in MODULES {
            if let Some(h) = m.hooks.message_sent {
                h(self, now, sid, st);
            }
        }
    }

    pub(crate) fn hook_message_routed(
        &mut self,
        now: Instant,
        to: &Jid,
        st: Element,
    ) -> Option<Element> {
        self.run_stanza_hook(now, |h| h.message_routed, to, st)
    }

    pub(crate) fn hook_message_delivered(
        &mut self,
        now: Instant,
        bare: &Jid,
        delivered: &[SessionId],
        st: &Element,
    ) {
        for m in MODULES {
            if let Some(h) = m.hooks.message_delivered {
                h(self, now, bare, delivered, st);
            }
        }
    }

    pub(crate) fn hook_message_offline(
        &mut self,
        now: Instant,
        bare: &Jid,
        st: Element,
    ) -> Option<Element> {
        self.run_stanza_hook(now, |h| h.message_offline, bare, st)
    }

    pub(crate) fn hook_message_stored(&mut self, now: Instant, bare: &Jid, st: &Element) {
        for m in MODULES {
            if let Some(h) = m.hooks.message_stored {
                h(self, now, bare, st);
            }
        }
    }

    pub(crate) fn hook_presence_broadcast(&mut self, now: Instant, full: &Jid, st: &Element) {
        for m in MODULES {
            if let Some(h) = m.hooks.presence_broadcast {
                h(self, now, full, st);
            }
        }
    }

    pub(crate) fn hook_session_opened(&mut self, now: Instant, sid: SessionId) {
        for m in MODULES {
            if let Some(h) = m.hooks.session_opened {
                h(self, now, sid);
            }
        }
    }

    pub(crate) fn hook_session_closed(&mut self, now: Instant, sid: SessionId, full: &Jid) {
        for m in MODULES {
            if let Some(h) = m.hooks.session_closed {
                h(self, now, sid, full);
            }
        }
    }

    pub(crate) fn hook_remote_stanza(
        &mut self,
        now: Instant,
        to: &Jid,
        st: Element,
    ) -> Option<Element> {
        self.run_stanza_hook(now, |h| h.remote_stanza, to, st)
    }
}
