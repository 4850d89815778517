//! XEP-0054 vcard-temp: a user sets their own vCard and anyone may read it (store
//! `vcard`, key `current`). vCard4 (XEP-0292) is a PEP node (`pep.rs`).

use super::*;

pub(crate) const NS_VCARD: &str = "vcard-temp";
const STORE: &str = "vcard";
const KEY: &str = "current";

pub(crate) const MODULE: Module = Module {
    name: "vcard",
    server_features: &[NS_VCARD],
    account_features: &[NS_VCARD],
    iq: &[IqRoute {
        ns: NS_VCARD,
        name: "vCard",
        target: Target::Account,
        handler: vcard_iq,
    }],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

fn vcard_iq(s: &mut Server, _: Instant, req: IqRequest) -> IqReply {
    let owner = req.to.clone();
    let (host, user) = (
        owner.domain().to_string(),
        owner.node().unwrap_or_default().to_string(),
    );
    let reply = req.reply_to();
    if req.is_set() {
        // Section 3.2: only the user updates their vCard.
        if !req.own {
            return IqReply::Error(StanzaError::new("forbidden"));
        }
        let op = StoreOp::Put {
            host,
            user,
            store: STORE.into(),
            key: KEY.into(),
            value: stanza::to_stored(req.payload()),
        };
        s.store_then(vec![op], move |s, now, ok| {
            let r = if ok {
                Ok(None)
            } else {
                Err(StanzaError::new("internal-server-error"))
            };
            s.reply_iq(now, &reply, r);
        });
        return IqReply::Later;
    }
    let own = req.own;
    s.load_then(&host, &user, STORE, Some(KEY), move |s, now, r| {
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
            Some(v) => Ok(Some(v)),
            // Section 3.1: an empty vCard for the user themselves.
            None if own => Ok(Some(Element::new("vCard", NS_VCARD))),
            // Section 3.3 (another user's): no vCard.
            None => Err(StanzaError::new("item-not-found")),
        };
        s.reply_iq(now, &reply, result);
    });
    IqReply::Later
}
