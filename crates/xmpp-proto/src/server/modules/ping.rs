//! XEP-0199 XMPP Ping: the server answers pings addressed to it (and to an account, on
//! the account's behalf) so clients can check their link.

use super::*;

pub(crate) const NS_PING: &str = "urn:xmpp:ping";

pub(crate) const MODULE: Module = Module {
    name: "ping",
    server_features: &[NS_PING],
    account_features: &[],
    iq: &[IqRoute {
        ns: NS_PING,
        name: "ping",
        target: Target::Both,
        handler: ping_iq,
    }],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

/// Section 4.2: an empty result; a set is not how one pings.
fn ping_iq(_: &mut Server, _: Instant, req: IqRequest) -> IqReply {
    if req.is_set() {
        IqReply::Error(StanzaError::new("bad-request"))
    } else {
        IqReply::Result(None)
    }
}
