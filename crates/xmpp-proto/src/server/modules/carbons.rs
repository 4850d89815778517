//! XEP-0280 message carbons: resources that enable them get a `<received/>` copy of
//! messages delivered to another resource of their account and a `<sent/>` copy of
//! messages another resource sends, so conversations follow the user.

use super::*;

pub(crate) const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_HINTS: &str = "urn:xmpp:hints";

pub(crate) const MODULE: Module = Module {
    name: "carbons",
    server_features: &[NS_CARBONS],
    account_features: &[],
    iq: &[
        IqRoute {
            ns: NS_CARBONS,
            name: "enable",
            target: Target::Both,
            handler: enable_iq,
        },
        IqRoute {
            ns: NS_CARBONS,
            name: "disable",
            target: Target::Both,
            handler: enable_iq,
        },
    ],
    preauth_iq: None,
};

/// Section 4 / 5: per session, from the session itself.
fn enable_iq(s: &mut Server, _: Instant, req: IqRequest) -> IqReply {
    let on = req.payload().name == "enable";
    if !req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    let Some(sess) = req.session.and_then(|sid| s.sessions.get_mut(&sid)) else {
        return IqReply::Error(StanzaError::new("not-allowed"));
    };
    sess.carbons = on;
    IqReply::Result(None)
}

/// Already a carbon copy (never copied again).
pub(crate) fn is_carbon(st: &Element) -> bool {
    st.get_child("received", NS_CARBONS).is_some() || st.get_child("sent", NS_CARBONS).is_some()
}

/// Section 6: chat messages, and normal messages with a body, unless marked private
/// (section 7) or `<no-copy/>` (XEP-0334).
fn eligible(st: &Element) -> bool {
    let ty = stanza::stanza_type(st);
    let kind_ok = ty == "chat" || (ty == "normal" && stanza::has_body(st));
    kind_ok
        && !is_carbon(st)
        && st.get_child("private", NS_CARBONS).is_none()
        && st.get_child("no-copy", NS_HINTS).is_none()
}

fn wrap(kind: &str, bare: &Jid, to: &Jid, st: &Element) -> Element {
    let ty = stanza::stanza_type(st);
    Element::new("message", ns::CLIENT)
        .attr("from", &bare.to_string())
        .attr("to", &to.to_string())
        .attr("type", ty)
        .child(
            Element::new(kind, NS_CARBONS)
                .child(Element::new("forwarded", NS_FORWARD).child(st.clone())),
        )
}

impl Server {
    /// Section 6.1: `<received/>` copies to the carbons-enabled resources of `bare`
    /// that did not get the message itself.
    pub(crate) fn carbon_received(
        &mut self,
        now: Instant,
        bare: &Jid,
        delivered: &[SessionId],
        st: &Element,
    ) {
        if !eligible(st) {
            return;
        }
        for sid in self.sessions_of(bare) {
            if delivered.contains(&sid) {
                continue;
            }
            let Some(s) = self.sessions.get(&sid).filter(|s| s.carbons) else {
                continue;
            };
            let copy = wrap("received", bare, &s.jid.clone(), st);
            self.send_to_session(now, sid, copy);
        }
    }

    /// Section 6.2: `<sent/>` copies of what session `from` sends, to the account's
    /// other carbons-enabled resources.
    pub(crate) fn carbon_sent(&mut self, now: Instant, from: SessionId, st: &Element) {
        if !eligible(st) {
            return;
        }
        let Some(bare) = self.sessions.get(&from).map(|s| s.jid.bare()) else {
            return;
        };
        for sid in self.sessions_of(&bare) {
            if sid == from {
                continue;
            }
            let Some(s) = self.sessions.get(&sid).filter(|s| s.carbons) else {
                continue;
            };
            let copy = wrap("sent", &bare, &s.jid.clone(), st);
            self.send_to_session(now, sid, copy);
        }
    }
}
