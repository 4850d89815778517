//! XEP-0030 service discovery, the part clients need at login: disco#info of the domain
//! (identity server/im, features from every registered module) and of an account
//! (identity account/registered), disco#items of the domain listing the MUC services.
//! Entity capabilities (XEP-0115) and PEP items belong to the modules that come later.

use super::*;

pub(super) const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub(super) const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

pub(super) const MODULE: Module = Module {
    name: "disco",
    server_features: &[NS_DISCO_INFO, NS_DISCO_ITEMS],
    account_features: &[NS_DISCO_INFO],
    iq: &[
        IqRoute {
            ns: NS_DISCO_INFO,
            name: "query",
            target: Target::Both,
            handler: disco_info,
        },
        IqRoute {
            ns: NS_DISCO_ITEMS,
            name: "query",
            target: Target::Both,
            handler: disco_items,
        },
    ],
    preauth_iq: None,
};

/// Section 3.1; a `node` we do not know is `item-not-found` (section 3.2).
fn disco_info(s: &mut Server, _: Instant, req: IqRequest) -> IqReply {
    if req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    let p = req.payload();
    if p.get_attr("node").is_some() {
        return IqReply::Error(StanzaError::new("item-not-found"));
    }
    let mut q = Element::new("query", NS_DISCO_INFO);
    let features = if req.to.node().is_none() {
        q.push(
            Element::new("identity", NS_DISCO_INFO)
                .attr("category", "server")
                .attr("type", "im")
                .attr("name", &s.config().software_name),
        );
        s.server_features()
    } else {
        // An account (XEP-0030 section 3.1, identity from the Disco Categories
        // registry), answered to anyone as Prosody does; PEP adds its features.
        q.push(
            Element::new("identity", NS_DISCO_INFO)
                .attr("category", "account")
                .attr("type", "registered"),
        );
        s.account_features()
    };
    for f in features {
        q.push(Element::new("feature", NS_DISCO_INFO).attr("var", f));
    }
    IqReply::Result(Some(q))
}

/// Section 4.1: the domain's items are its MUC services; an account has none here
/// (PEP nodes come with the PEP module).
fn disco_items(s: &mut Server, _: Instant, req: IqRequest) -> IqReply {
    if req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    if req.payload().get_attr("node").is_some() {
        return IqReply::Error(StanzaError::new("item-not-found"));
    }
    let mut q = Element::new("query", NS_DISCO_ITEMS);
    if req.to.node().is_none() {
        for m in &s.config().muc {
            q.push(Element::new("item", NS_DISCO_ITEMS).attr("jid", &m.domain));
        }
    }
    IqReply::Result(Some(q))
}
