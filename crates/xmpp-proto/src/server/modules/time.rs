//! XEP-0202 entity time of the server: UTC from the wall clock the daemon gives the core
//! ([`Server::set_wall_clock`]), offset `Z` (the core knows no time zone).

use super::*;

pub(crate) const NS_TIME: &str = "urn:xmpp:time";

pub(crate) const MODULE: Module = Module {
    name: "time",
    server_features: &[NS_TIME],
    account_features: &[],
    iq: &[IqRoute {
        ns: NS_TIME,
        name: "time",
        target: Target::Server,
        handler: time_iq,
    }],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

/// Section 4: `<tzo/>` (XEP-0082 offset) and `<utc/>` (XEP-0082 DateTime in UTC).
fn time_iq(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    if req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    let utc = stanza::datetime(s.unix_now(now));
    IqReply::Result(Some(
        Element::new("time", NS_TIME)
            .child(Element::new("tzo", NS_TIME).text_node("+00:00"))
            .child(Element::new("utc", NS_TIME).text_node(&utc)),
    ))
}
