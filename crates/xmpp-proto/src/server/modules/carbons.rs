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
    hooks: Hooks {
        message_sent: Some(carbon_sent),
        message_delivered: Some(carbon_received),
        ..Hooks::NONE
    },
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

/// Hook `message_delivered`, section 6.1: `<received/>` copies to the carbons-enabled
/// resources of `bare` that did not get the message itself.
fn carbon_received(
    s: &mut Server,
    now: Instant,
    bare: &Jid,
    delivered: &[SessionId],
    st: &Element,
) {
    if !eligible(st) {
        return;
    }
    for sid in s.sessions_of(bare) {
        if delivered.contains(&sid) {
            continue;
        }
        let Some(to) = s
            .sessions
            .get(&sid)
            .filter(|x| x.carbons)
            .map(|x| x.jid.clone())
        else {
            continue;
        };
        let copy = wrap("received", bare, &to, st);
        s.send_to_session(now, sid, copy);
    }
}

/// Hook `message_sent`, section 6.2: `<sent/>` copies of what session `from` sends to
/// someone else, to the account's other carbons-enabled resources (a message to the
/// account itself reaches them anyway, and gets `<received/>` copies).
fn carbon_sent(s: &mut Server, now: Instant, from: SessionId, st: &Element) {
    if !eligible(st) {
        return;
    }
    let Some(bare) = s.sessions.get(&from).map(|x| x.jid.bare()) else {
        return;
    };
    let to_self = st
        .get_attr("to")
        .and_then(|t| Jid::parse(t).ok())
        .is_some_and(|t| t.bare() == bare);
    if to_self {
        return;
    }
    for sid in s.sessions_of(&bare) {
        if sid == from {
            continue;
        }
        let Some(to) = s
            .sessions
            .get(&sid)
            .filter(|x| x.carbons)
            .map(|x| x.jid.clone())
        else {
            continue;
        };
        let copy = wrap("sent", &bare, &to, st);
        s.send_to_session(now, sid, copy);
    }
}
