//! XEP-0092 software version of the server itself (`Config.software_name` /
//! `software_version`; no `<os/>`, which section 4 leaves optional and which tells
//! attackers too much). Queries to a user's full JID are routed to the client.

use super::*;

pub(crate) const NS_VERSION: &str = "jabber:iq:version";

pub(crate) const MODULE: Module = Module {
    name: "version",
    server_features: &[NS_VERSION],
    account_features: &[],
    iq: &[IqRoute {
        ns: NS_VERSION,
        name: "query",
        target: Target::Server,
        handler: version_iq,
    }],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

/// Section 2: `<name/>` and `<version/>`.
fn version_iq(s: &mut Server, _: Instant, req: IqRequest) -> IqReply {
    if req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    let cfg = s.config();
    IqReply::Result(Some(
        Element::new("query", NS_VERSION)
            .child(Element::new("name", NS_VERSION).text_node(&cfg.software_name))
            .child(Element::new("version", NS_VERSION).text_node(&cfg.software_version)),
    ))
}
