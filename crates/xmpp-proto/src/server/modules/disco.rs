//! XEP-0030 service discovery:
//! - the domain: disco#info (identity server/im, the features of every module; also on
//!   our XEP-0115 `node#ver`, section 6.2 there), disco#items (the MUC services, where
//!   XEP-0045 section 6.1 room discovery starts), and the XEP-0050 command nodes
//!   (`adhoc.rs`);
//! - an account: disco#info (identities account/registered and pubsub/pep, XEP-0163
//!   section 6.1; account features of every module), disco#items (the PEP nodes the
//!   requester may see, XEP-0060 section 5.2) and per-node info/items (`pep.rs`).

use super::*;

pub(crate) const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub(crate) const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

pub(crate) const MODULE: Module = Module {
    name: "disco",
    server_features: &[NS_DISCO_INFO, NS_DISCO_ITEMS],
    account_features: &[NS_DISCO_INFO, NS_DISCO_ITEMS],
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
    hooks: Hooks::NONE,
};

/// The domain's disco#info `<query/>` (section 3.1), `node` echoed: what XEP-0115 hashes
/// for our `ver`, so it must stay the same for every requester.
pub(crate) fn server_info(s: &Server, domain: &str, node: Option<&str>) -> Element {
    let _ = domain;
    let mut q = Element::new("query", NS_DISCO_INFO);
    if let Some(n) = node {
        q.set_attr("node", n);
    }
    q.push(
        Element::new("identity", NS_DISCO_INFO)
            .attr("category", "server")
            .attr("type", "im")
            .attr("name", &s.config().software_name),
    );
    for f in s.server_features() {
        q.push(Element::new("feature", NS_DISCO_INFO).attr("var", f));
    }
    q
}

/// Section 3.1; a `node` we do not know is `item-not-found` (section 3.2).
fn disco_info(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    if req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    let node = req.payload().get_attr("node").map(str::to_string);
    if req.to.node().is_none() {
        let domain = req.to.domain().to_string();
        return match node.as_deref() {
            None => IqReply::Result(Some(server_info(s, &domain, None))),
            Some(n) => {
                let ours = s
                    .server_caps(&domain)
                    .get_attr("ver")
                    .map(|v| format!("{}#{v}", caps::CAPS_NODE));
                if ours.as_deref() == Some(n) {
                    IqReply::Result(Some(server_info(s, &domain, Some(n))))
                } else if let Some(q) = adhoc::node_info(n) {
                    IqReply::Result(Some(q))
                } else {
                    IqReply::Error(StanzaError::new("item-not-found"))
                }
            }
        };
    }
    match node {
        // A PEP node (XEP-0060 section 5.3).
        Some(n) => s.pep_node_info(now, req, n),
        None => {
            // An account (identity from the Disco Categories registry), answered to
            // anyone as Prosody does.
            let mut q = Element::new("query", NS_DISCO_INFO);
            q.push(
                Element::new("identity", NS_DISCO_INFO)
                    .attr("category", "account")
                    .attr("type", "registered"),
            );
            q.push(
                Element::new("identity", NS_DISCO_INFO)
                    .attr("category", "pubsub")
                    .attr("type", "pep"),
            );
            for f in s.account_features() {
                q.push(Element::new("feature", NS_DISCO_INFO).attr("var", f));
            }
            IqReply::Result(Some(q))
        }
    }
}

/// Section 4.1: the domain's items are its MUC services (and, on the XEP-0050 node,
/// the commands the requester may run); an account's are its PEP nodes.
fn disco_items(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    if req.is_set() {
        return IqReply::Error(StanzaError::new("bad-request"));
    }
    let node = req.payload().get_attr("node").map(str::to_string);
    if req.to.node().is_some() {
        return s.pep_disco_items(now, req, node);
    }
    match node.as_deref() {
        None => {
            let mut q = Element::new("query", NS_DISCO_ITEMS);
            for m in &s.config().muc {
                q.push(Element::new("item", NS_DISCO_ITEMS).attr("jid", &m.domain));
            }
            IqReply::Result(Some(q))
        }
        Some(adhoc::NS_COMMANDS) => {
            IqReply::Result(Some(adhoc::command_items(s, &req.from, req.to.domain())))
        }
        Some(_) => IqReply::Error(StanzaError::new("item-not-found")),
    }
}
