//! XEP-0163 Personal Eventing Protocol: every account is a pubsub service at its bare
//! JID, the subset of XEP-0060 clients use:
//! - publish with auto-create (XEP-0163 section 3) and publish-options (XEP-0060 section
//!   7.1.5, XEP-0223: `pubsub#persist_items`, `pubsub#access_model`,
//!   `pubsub#max_items`, `pubsub#send_last_published_item`...), retract (section 7.2),
//!   items retrieval by the owner and by others as the access model allows (section
//!   6.5: open, presence, roster as presence, whitelist = the owner alone), node
//!   creation, configuration, deletion and purge (sections 8.1, 8.2, 8.4, 8.5);
//! - notifications (XEP-0163 section 4): implicit subscriptions of the owner and of the
//!   contacts with a presence subscription, filtered by what each resource advertised
//!   `+notify` for (`caps.rs`), addressed to full JIDs; the last item of each node a
//!   resource wants when its wishes become known (section 4.3.4).
//!
//! What XEP-0084 avatars, XEP-0402 bookmarks, XEP-0172 nicknames and XEP-0292 vCard4
//! need is this generic service; `bookmarks.rs` adds the XEP-0048 compatibility.
//!
//! Storage (per account): store `pep`, key = node name (`/` and `%` escaped), value the
//! node's configuration and its item ids oldest first; store `pep_items`, key =
//! escaped node `/` item id, value `<item xmlns='http://jabber.org/protocol/pubsub'/>`
//! with the payload. A service is loaded with its owner's state (`users.rs`, field
//! `User::pep`): node configurations and item ids; payloads are kept in memory when
//! small and loaded by key otherwise (avatar data).

// A `StanzaError` is what goes on the wire when a request fails, built once per
// failed request; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]
use super::*;
use std::collections::VecDeque;

pub(crate) const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub(crate) const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub(crate) const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub(crate) const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const NS_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
const NS_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// Our bookkeeping element for node rows.
const NS_STORED: &str = "urn:xmppd:pep";

const STORE_NODES: &str = "pep";
const STORE_ITEMS: &str = "pep_items";
/// Items one node keeps at most: what `pubsub#max_items` = `max` means here
/// (Prosody's `pep_max_items`).
pub(crate) const MAX_ITEMS: usize = 256;
/// Nodes per account.
const MAX_NODES: usize = 256;
/// Payloads up to this size (serialized) stay in memory; larger ones (avatar data) are
/// loaded from storage when asked for.
const CACHE_MAX: usize = 8 * 1024;
/// Longest key the storage takes (`rtc-store`: 190 characters).
const MAX_KEY: usize = 190;

pub(crate) const MODULE: Module = Module {
    name: "pep",
    server_features: &[],
    account_features: &[
        NS_PUBSUB,
        "http://jabber.org/protocol/pubsub#access-open",
        "http://jabber.org/protocol/pubsub#access-presence",
        "http://jabber.org/protocol/pubsub#access-roster",
        "http://jabber.org/protocol/pubsub#access-whitelist",
        "http://jabber.org/protocol/pubsub#auto-create",
        "http://jabber.org/protocol/pubsub#auto-subscribe",
        "http://jabber.org/protocol/pubsub#config-node",
        "http://jabber.org/protocol/pubsub#create-and-configure",
        "http://jabber.org/protocol/pubsub#create-nodes",
        "http://jabber.org/protocol/pubsub#delete-items",
        "http://jabber.org/protocol/pubsub#delete-nodes",
        "http://jabber.org/protocol/pubsub#filtered-notifications",
        "http://jabber.org/protocol/pubsub#instant-nodes",
        "http://jabber.org/protocol/pubsub#item-ids",
        "http://jabber.org/protocol/pubsub#last-published",
        "http://jabber.org/protocol/pubsub#persistent-items",
        "http://jabber.org/protocol/pubsub#presence-notifications",
        "http://jabber.org/protocol/pubsub#publish",
        NS_PUBLISH_OPTIONS,
        "http://jabber.org/protocol/pubsub#purge-nodes",
        "http://jabber.org/protocol/pubsub#retract-items",
        "http://jabber.org/protocol/pubsub#retrieve-items",
        // XEP-0292: vCard4 lives in the `urn:xmpp:vcard4` node.
        "urn:xmpp:vcard4",
    ],
    iq: &[
        IqRoute {
            ns: NS_PUBSUB,
            name: "pubsub",
            target: Target::Account,
            handler: pubsub_iq,
        },
        IqRoute {
            ns: NS_PUBSUB_OWNER,
            name: "pubsub",
            target: Target::Account,
            handler: pubsub_iq,
        },
    ],
    preauth_iq: None,
    hooks: Hooks::NONE,
};

/// `pubsub#access_model` (XEP-0060 section 4.5); `authorize` is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Open,
    Presence,
    /// Treated as `presence`: roster groups are not configurable here.
    Roster,
    Whitelist,
}

impl Access {
    fn name(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Roster => "roster",
            Access::Whitelist => "whitelist",
        }
    }
    fn parse(s: &str) -> Option<Access> {
        match s {
            "open" => Some(Access::Open),
            "presence" => Some(Access::Presence),
            "roster" => Some(Access::Roster),
            "whitelist" => Some(Access::Whitelist),
            _ => None,
        }
    }
}

/// `pubsub#send_last_published_item`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLast {
    fn name(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }
    fn parse(s: &str) -> Option<SendLast> {
        match s {
            "never" => Some(SendLast::Never),
            "on_sub" => Some(SendLast::OnSub),
            "on_sub_and_presence" => Some(SendLast::OnSubAndPresence),
            _ => None,
        }
    }
}

/// A node's configuration (XEP-0060 section 16.4.4, the fields PEP clients use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeConfig {
    pub(crate) access: Access,
    /// `None`: `max` ([`MAX_ITEMS`]).
    pub(crate) max_items: Option<usize>,
    pub(crate) persist: bool,
    pub(crate) send_last: SendLast,
    pub(crate) notify_retract: bool,
    pub(crate) deliver_notifications: bool,
}

impl Default for NodeConfig {
    /// XEP-0163 section 5 recommended defaults.
    fn default() -> NodeConfig {
        NodeConfig {
            access: Access::Presence,
            max_items: Some(1),
            persist: true,
            send_last: SendLast::OnSubAndPresence,
            notify_retract: true,
            deliver_notifications: true,
        }
    }
}

impl NodeConfig {
    /// Items kept.
    fn limit(&self) -> usize {
        self.max_items.unwrap_or(MAX_ITEMS).min(MAX_ITEMS)
    }

    /// Applies the known fields of a node_config or publish-options form; a value out
    /// of range is `not-acceptable`. Other fields are ignored.
    pub(crate) fn apply(&mut self, f: &form::Submitted) -> Result<(), StanzaError> {
        let bad = |what: &str| StanzaError::new("not-acceptable").with_text(what);
        let flag = |var: &str| -> Result<Option<bool>, StanzaError> {
            match f.first(var) {
                None => Ok(None),
                Some(v) => form::parse_bool(v).map(Some).ok_or_else(|| bad(var)),
            }
        };
        if let Some(v) = f.first("pubsub#access_model") {
            self.access = Access::parse(v).ok_or_else(|| bad("pubsub#access_model"))?;
        }
        if let Some(v) = f.first("pubsub#max_items") {
            self.max_items = match v.trim() {
                "max" => None,
                n => match n.parse::<usize>() {
                    Ok(n) if (1..=MAX_ITEMS).contains(&n) => Some(n),
                    _ => return Err(bad("pubsub#max_items")),
                },
            };
        }
        if let Some(v) = f.first("pubsub#send_last_published_item") {
            self.send_last =
                SendLast::parse(v).ok_or_else(|| bad("pubsub#send_last_published_item"))?;
        }
        if let Some(b) = flag("pubsub#persist_items")? {
            self.persist = b;
        }
        if let Some(b) = flag("pubsub#notify_retract")? {
            self.notify_retract = b;
        }
        if let Some(b) = flag("pubsub#deliver_notifications")? {
            self.deliver_notifications = b;
        }
        Ok(())
    }

    /// XEP-0060 section 7.1.5: whether every option given already holds.
    fn satisfies(&self, f: &form::Submitted) -> Result<bool, StanzaError> {
        let mut c = self.clone();
        c.apply(f)?;
        Ok(c == *self)
    }

    /// The node_config form (section 8.2.1).
    fn to_form(&self) -> Element {
        let max = self
            .max_items
            .map_or_else(|| "max".to_string(), |n| n.to_string());
        let b = |v: bool| if v { "1" } else { "0" };
        let mut x = form::new_form("form", NS_NODE_CONFIG, None);
        x.push(form::with_options(
            form::field(
                "pubsub#access_model",
                "list-single",
                Some("Who may subscribe and retrieve items"),
                &[self.access.name()],
            ),
            &["open", "presence", "roster", "whitelist"],
        ));
        x.push(form::field(
            "pubsub#max_items",
            "text-single",
            Some("Max number of items to persist"),
            &[&max],
        ));
        x.push(form::field(
            "pubsub#persist_items",
            "boolean",
            Some("Persist items to storage"),
            &[b(self.persist)],
        ));
        x.push(form::with_options(
            form::field(
                "pubsub#send_last_published_item",
                "list-single",
                Some("When to send the last published item"),
                &[self.send_last.name()],
            ),
            &["never", "on_sub", "on_sub_and_presence"],
        ));
        x.push(form::field(
            "pubsub#notify_retract",
            "boolean",
            Some("Notify subscribers when items are removed"),
            &[b(self.notify_retract)],
        ));
        x.push(form::field(
            "pubsub#deliver_notifications",
            "boolean",
            Some("Deliver event notifications"),
            &[b(self.deliver_notifications)],
        ));
        x
    }
}

/// One published item; the payload is `None` when it stays in storage.
pub(crate) struct PepItem {
    pub(crate) id: String,
    payload: Option<Element>,
}

pub(crate) struct PepNode {
    pub(crate) config: NodeConfig,
    /// Oldest first.
    pub(crate) items: Vec<PepItem>,
}

impl PepNode {
    /// The stored row: configuration and item ids.
    fn to_stored(&self, name: &str) -> Element {
        let c = &self.config;
        let mut e = Element::new("node", NS_STORED)
            .attr("name", name)
            .attr("access", c.access.name())
            .attr(
                "max-items",
                &c.max_items
                    .map_or_else(|| "max".to_string(), |n| n.to_string()),
            )
            .attr("persist", if c.persist { "1" } else { "0" })
            .attr("send-last", c.send_last.name())
            .attr("notify-retract", if c.notify_retract { "1" } else { "0" })
            .attr("deliver", if c.deliver_notifications { "1" } else { "0" });
        if c.persist {
            for i in &self.items {
                e.push(Element::new("item", NS_STORED).attr("id", &i.id));
            }
        }
        e
    }

    fn from_stored(e: &Element) -> Option<(String, PepNode)> {
        let name = e.get_attr("name")?.to_string();
        let d = NodeConfig::default();
        let flag = |a: &str, dflt: bool| e.get_attr(a).and_then(form::parse_bool).unwrap_or(dflt);
        let config = NodeConfig {
            access: e
                .get_attr("access")
                .and_then(Access::parse)
                .unwrap_or(d.access),
            max_items: match e.get_attr("max-items") {
                Some("max") => None,
                Some(n) => n.parse().ok().or(d.max_items),
                None => d.max_items,
            },
            persist: flag("persist", d.persist),
            send_last: e
                .get_attr("send-last")
                .and_then(SendLast::parse)
                .unwrap_or(d.send_last),
            notify_retract: flag("notify-retract", d.notify_retract),
            deliver_notifications: flag("deliver", d.deliver_notifications),
        };
        let items = e
            .elements()
            .filter(|i| i.name == "item")
            .filter_map(|i| i.get_attr("id"))
            .map(|id| PepItem {
                id: id.to_string(),
                payload: None,
            })
            .collect();
        Some((name, PepNode { config, items }))
    }
}

type PepWaiter = Box<dyn FnOnce(&mut Server, Instant, Result<(), StanzaError>) + Send>;
type FetchDone = Box<dyn FnOnce(&mut Server, Instant, Vec<(String, Element)>) + Send>;

/// One account's service.
pub(crate) struct PepService {
    loaded: bool,
    waiters: Vec<PepWaiter>,
    pub(crate) nodes: BTreeMap<String, PepNode>,
}

impl PepService {
    /// Still waiting for storage (the owner's state must not be dropped meanwhile).
    pub(crate) fn loading(&self) -> bool {
        !self.loaded
    }
}

/// Store key of a node: `/` (the item separator) and `%` escaped.
fn node_key(node: &str) -> String {
    node.replace('%', "%25").replace('/', "%2F")
}

fn item_key(node: &str, id: &str) -> String {
    format!("{}/{id}", node_key(node))
}

/// A stanza error with a pubsub#errors condition (XEP-0060 section 7.1.3 and others).
pub(crate) fn pubsub_error(condition: &'static str, app: &str) -> StanzaError {
    StanzaError::new(condition).with_app(Element::new(app, NS_PUBSUB_ERRORS))
}

/// The configuration a node gets when it is created without one.
pub(crate) fn default_config(node: &str) -> NodeConfig {
    match node {
        bookmarks::NS_BOOKMARKS2 => bookmarks::bookmarks2_config(),
        // XEP-0048 section 3.3 and XEP-0223: private data.
        bookmarks::NS_BOOKMARKS => NodeConfig {
            access: Access::Whitelist,
            send_last: SendLast::Never,
            ..NodeConfig::default()
        },
        _ => NodeConfig::default(),
    }
}

/// What one request is about.
struct Ctx {
    owner: Jid,
    from: Jid,
    own: bool,
    set: bool,
    reply: iq::IqReplyTo,
}

/// An answer now, or `None` when the action answers once storage has.
type Outcome = Option<Result<Option<Element>, StanzaError>>;

fn pubsub_iq(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
    let ctx = Ctx {
        owner: req.to.clone(),
        from: req.from.clone(),
        own: req.own,
        set: req.is_set(),
        reply: req.reply_to(),
    };
    let payload = req.payload().clone();
    let owner = ctx.owner.clone();
    s.with_pep(now, &owner, move |s, now, r| {
        let reply = ctx.reply.clone();
        let out = match r {
            Err(e) => Some(Err(e)),
            Ok(()) if payload.ns == NS_PUBSUB_OWNER => s.pubsub_owner_action(ctx, &payload),
            Ok(()) => s.pubsub_action(now, ctx, &payload),
        };
        if let Some(result) = out {
            s.reply_iq(now, &reply, result);
        }
    });
    IqReply::Later
}

impl Server {
    // ---- the service and its loading ----

    /// Runs `f` once `owner`'s service is loaded (with the owner's state: the roster
    /// decides who may see what). `Err` for no such account or a storage failure.
    pub(crate) fn with_pep(
        &mut self,
        now: Instant,
        owner: &Jid,
        f: impl FnOnce(&mut Server, Instant, Result<(), StanzaError>) + Send + 'static,
    ) {
        let o = owner.clone();
        self.with_user(now, owner, false, move |s, now, ready| match ready {
            users::Ready::Ok => s.pep_loaded_then(now, &o, Box::new(f)),
            users::Ready::NoSuchUser => f(s, now, Err(StanzaError::new("item-not-found"))),
            users::Ready::Failed => f(s, now, Err(StanzaError::new("internal-server-error"))),
        });
    }

    fn pep_loaded_then(&mut self, now: Instant, owner: &Jid, f: PepWaiter) {
        let hold = self.hold.take();
        let wrapped: PepWaiter = Box::new(move |s: &mut Server, now, r| {
            s.hold = hold;
            f(s, now, r);
            s.release_hold(now);
        });
        let Some(u) = self.user_mut(owner) else {
            wrapped(self, now, Err(StanzaError::new("internal-server-error")));
            return;
        };
        match &mut u.pep {
            Some(p) if p.loaded => wrapped(self, now, Ok(())),
            Some(p) => p.waiters.push(wrapped),
            None => {
                u.pep = Some(Box::new(PepService {
                    loaded: false,
                    waiters: vec![wrapped],
                    nodes: BTreeMap::new(),
                }));
                let o = owner.clone();
                let (host, user) = (owner.domain(), owner.node().unwrap_or_default());
                self.load_then(host, user, STORE_NODES, None, move |s, now, r| {
                    s.pep_rows_loaded(now, &o, r)
                });
            }
        }
    }

    fn pep_rows_loaded(&mut self, now: Instant, owner: &Jid, rows: LoadResult) {
        let Some(p) = self.user_mut(owner).and_then(|u| u.pep.as_mut()) else {
            return;
        };
        let waiters = std::mem::take(&mut p.waiters);
        let result = match rows {
            Ok(rows) => {
                for (_, v) in rows {
                    if let Some((name, node)) =
                        stanza::parse_stored(&v).and_then(|e| PepNode::from_stored(&e))
                    {
                        p.nodes.insert(name, node);
                    }
                }
                p.loaded = true;
                Ok(())
            }
            Err(StoreFailed) => {
                if let Some(u) = self.user_mut(owner) {
                    u.pep = None;
                }
                Err(StanzaError::new("internal-server-error"))
            }
        };
        for w in waiters {
            w(self, now, result.clone());
        }
    }

    /// The loaded service of `owner`.
    pub(crate) fn pep(&self, owner: &Jid) -> Option<&PepService> {
        self.user(owner)
            .and_then(|u| u.pep.as_deref())
            .filter(|p| p.loaded)
    }

    fn pep_mut(&mut self, owner: &Jid) -> Option<&mut PepService> {
        self.user_mut(owner)
            .and_then(|u| u.pep.as_deref_mut())
            .filter(|p| p.loaded)
    }

    pub(crate) fn pep_node(&self, owner: &Jid, node: &str) -> Option<&PepNode> {
        self.pep(owner).and_then(|p| p.nodes.get(node))
    }

    /// XEP-0060 section 6.5.9 / 6.1.3: whether `who` (bare) may see `owner`'s node.
    pub(crate) fn pep_may_see(
        &self,
        owner: &Jid,
        cfg: &NodeConfig,
        who: &Jid,
    ) -> Result<(), StanzaError> {
        if who == owner {
            return Ok(());
        }
        if self.blocks(owner, who) {
            return Err(StanzaError::new("item-not-found"));
        }
        match cfg.access {
            Access::Open => Ok(()),
            Access::Presence | Access::Roster => {
                let subscribed = self
                    .user(owner)
                    .and_then(|u| u.roster.get(who))
                    .is_some_and(|i| i.sub_from);
                if subscribed {
                    Ok(())
                } else {
                    Err(pubsub_error(
                        "not-authorized",
                        "presence-subscription-required",
                    ))
                }
            }
            Access::Whitelist => Err(pubsub_error("not-allowed", "closed-node")),
        }
    }

    // ---- changes, as store operations ----

    /// Creates `node` with `config` (the service is loaded): the store operation.
    pub(crate) fn pep_create(
        &mut self,
        owner: &Jid,
        node: &str,
        config: NodeConfig,
    ) -> Vec<StoreOp> {
        let Some(p) = self.pep_mut(owner) else {
            return Vec::new();
        };
        p.nodes.insert(
            node.to_string(),
            PepNode {
                config,
                items: Vec::new(),
            },
        );
        self.pep_node_row(owner, node).into_iter().collect()
    }

    fn pep_node_row(&self, owner: &Jid, node: &str) -> Option<StoreOp> {
        let n = self.pep_node(owner, node)?;
        Some(StoreOp::Put {
            host: owner.domain().to_string(),
            user: owner.node().unwrap_or_default().to_string(),
            store: STORE_NODES.into(),
            key: node_key(node),
            value: stanza::to_stored(&n.to_stored(node)),
        })
    }

    fn item_op(owner: &Jid, node: &str, id: &str, payload: Option<&Element>) -> StoreOp {
        let (host, user) = (
            owner.domain().to_string(),
            owner.node().unwrap_or_default().to_string(),
        );
        match payload {
            Some(p) => StoreOp::Put {
                host,
                user,
                store: STORE_ITEMS.into(),
                key: item_key(node, id),
                value: stanza::to_stored(
                    &Element::new("item", NS_PUBSUB)
                        .attr("id", id)
                        .child(p.clone()),
                ),
            },
            None => StoreOp::Delete {
                host,
                user,
                store: STORE_ITEMS.into(),
                key: item_key(node, id),
            },
        }
    }

    /// Publishes `id` = `payload` to the existing `node`: the item goes last (replacing
    /// one with the same id, XEP-0060 section 7.1.2), the oldest beyond `max_items`
    /// are dropped. The store operations.
    pub(crate) fn pep_apply_publish(
        &mut self,
        owner: &Jid,
        node: &str,
        id: &str,
        payload: Element,
    ) -> Vec<StoreOp> {
        let Some(n) = self.pep_mut(owner).and_then(|p| p.nodes.get_mut(node)) else {
            return Vec::new();
        };
        let persist = n.config.persist;
        let mut ops = Vec::new();
        if persist {
            ops.push(Server::item_op(owner, node, id, Some(&payload)));
        }
        let cached = !persist || payload.to_xml("").len() <= CACHE_MAX;
        n.items.retain(|i| i.id != id);
        n.items.push(PepItem {
            id: id.to_string(),
            payload: cached.then_some(payload),
        });
        let excess = n.items.len().saturating_sub(n.config.limit());
        let dropped: Vec<PepItem> = n.items.drain(..excess).collect();
        if persist {
            for d in dropped {
                ops.push(Server::item_op(owner, node, &d.id, None));
            }
        }
        ops.extend(self.pep_node_row(owner, node));
        ops
    }

    /// Retracts `id` from `node`; `None` when there is no such item.
    pub(crate) fn pep_apply_retract(
        &mut self,
        owner: &Jid,
        node: &str,
        id: &str,
    ) -> Option<Vec<StoreOp>> {
        let n = self.pep_mut(owner).and_then(|p| p.nodes.get_mut(node))?;
        let pos = n.items.iter().position(|i| i.id == id)?;
        n.items.remove(pos);
        let mut ops = Vec::new();
        if n.config.persist {
            ops.push(Server::item_op(owner, node, id, None));
        }
        ops.extend(self.pep_node_row(owner, node));
        Some(ops)
    }

    /// Every item of `node` removed (purge, XEP-0060 section 8.5), and with `delete` the
    /// node itself (section 8.4).
    fn pep_apply_clear(&mut self, owner: &Jid, node: &str, delete: bool) -> Vec<StoreOp> {
        let Some(p) = self.pep_mut(owner) else {
            return Vec::new();
        };
        let Some(n) = p.nodes.get_mut(node) else {
            return Vec::new();
        };
        let items = std::mem::take(&mut n.items);
        let persist = n.config.persist;
        if delete {
            p.nodes.remove(node);
        }
        let mut ops: Vec<StoreOp> = if persist {
            items
                .iter()
                .map(|i| Server::item_op(owner, node, &i.id, None))
                .collect()
        } else {
            Vec::new()
        };
        if delete {
            ops.push(StoreOp::Delete {
                host: owner.domain().to_string(),
                user: owner.node().unwrap_or_default().to_string(),
                store: STORE_NODES.into(),
                key: node_key(node),
            });
        } else {
            ops.extend(self.pep_node_row(owner, node));
        }
        ops
    }

    // ---- payloads ----

    /// The items `ids` of `node` with their payloads, loaded from storage where not in
    /// memory; unknown ids are left out. `f` runs at once when nothing is to load.
    pub(crate) fn pep_fetch(
        &mut self,
        now: Instant,
        owner: &Jid,
        node: &str,
        ids: Vec<String>,
        f: impl FnOnce(&mut Server, Instant, Vec<(String, Element)>) + Send + 'static,
    ) {
        self.pep_fetch_step(
            now,
            owner.clone(),
            node.to_string(),
            ids.into(),
            Vec::new(),
            Box::new(f),
        );
    }

    fn pep_fetch_step(
        &mut self,
        now: Instant,
        owner: Jid,
        node: String,
        mut rest: VecDeque<String>,
        mut acc: Vec<(String, Element)>,
        f: FetchDone,
    ) {
        while let Some(id) = rest.pop_front() {
            let item = self
                .pep_node(&owner, &node)
                .and_then(|n| n.items.iter().find(|i| i.id == id));
            let Some(item) = item else {
                continue;
            };
            if let Some(p) = &item.payload {
                acc.push((id, p.clone()));
                continue;
            }
            let key = item_key(&node, &id);
            let (host, user) = (
                owner.domain().to_string(),
                owner.node().unwrap_or_default().to_string(),
            );
            self.load_then(&host, &user, STORE_ITEMS, Some(&key), move |s, now, r| {
                let payload = r
                    .ok()
                    .and_then(|rows| rows.into_iter().next())
                    .and_then(|(_, v)| stanza::parse_stored(&v))
                    .and_then(|e| e.elements().next().cloned());
                if let Some(p) = payload {
                    acc.push((id, p));
                }
                s.pep_fetch_step(now, owner, node, rest, acc, f);
            });
            return;
        }
        f(self, now, acc);
    }

    // ---- notifications ----

    /// An event notification (XEP-0060 section 7.1.2.1) from `owner` to `to`.
    fn pep_send_event(&mut self, now: Instant, owner: &Jid, to: &Jid, event_child: Element) {
        let id = self.random_id();
        let m = Element::new("message", ns::CLIENT)
            .attr("from", &owner.to_string())
            .attr("to", &to.to_string())
            .attr("type", "headline")
            .attr("id", &id)
            .child(Element::new("event", NS_PUBSUB_EVENT).child(event_child));
        self.route(now, m);
    }

    /// XEP-0163 section 4.3: the event to every resource of the owner and of the
    /// contacts allowed to see the node that asked for it with `+notify`.
    pub(crate) fn pep_broadcast(
        &mut self,
        now: Instant,
        owner: &Jid,
        node: &str,
        cfg: &NodeConfig,
        event_child: Element,
    ) {
        if !cfg.deliver_notifications {
            return;
        }
        let mut targets = self.notify_targets(owner, node);
        if cfg.access != Access::Whitelist {
            let contacts: Vec<Jid> = self
                .user(owner)
                .map(|u| {
                    u.roster
                        .values()
                        .filter(|i| i.sub_from)
                        .map(|i| i.jid.clone())
                        .collect()
                })
                .unwrap_or_default();
            for c in contacts {
                if c != *owner && self.pep_may_see(owner, cfg, &c).is_ok() {
                    targets.extend(self.notify_targets(&c, node));
                }
            }
        }
        for t in targets {
            self.pep_send_event(now, owner, &t, event_child.clone());
        }
    }

    /// `<items node=...>` with full items, for a notification.
    fn event_items(node: &str, items: &[(String, Element)]) -> Element {
        let mut e = Element::new("items", NS_PUBSUB_EVENT).attr("node", node);
        for (id, p) in items {
            e.push(
                Element::new("item", NS_PUBSUB_EVENT)
                    .attr("id", id)
                    .child(p.clone()),
            );
        }
        e
    }

    /// Notifies a publish of `id` = `payload` to `node`.
    pub(crate) fn pep_notify_publish(
        &mut self,
        now: Instant,
        owner: &Jid,
        node: &str,
        id: &str,
        payload: &Element,
    ) {
        let Some(cfg) = self.pep_node(owner, node).map(|n| n.config.clone()) else {
            return;
        };
        let ev = Server::event_items(node, &[(id.to_string(), payload.clone())]);
        self.pep_broadcast(now, owner, node, &cfg, ev);
    }

    /// Notifies retractions (XEP-0060 section 7.2.2.1).
    pub(crate) fn pep_notify_retract(
        &mut self,
        now: Instant,
        owner: &Jid,
        node: &str,
        ids: &[String],
    ) {
        let Some(cfg) = self.pep_node(owner, node).map(|n| n.config.clone()) else {
            return;
        };
        let mut ev = Element::new("items", NS_PUBSUB_EVENT).attr("node", node);
        for id in ids {
            ev.push(Element::new("retract", NS_PUBSUB_EVENT).attr("id", id));
        }
        self.pep_broadcast(now, owner, node, &cfg, ev);
    }

    /// XEP-0163 section 4.3.4: the last item of each of `nodes` (those `to` wants) that
    /// `owner` has and lets `to` see, sent to the resource `to`: on presence for nodes
    /// configured `on_sub_and_presence`, on a new subscription (`on_sub`) for those
    /// configured `on_sub` too.
    pub(crate) fn pep_send_last(
        &mut self,
        now: Instant,
        owner: &Jid,
        to: &Jid,
        nodes: Vec<String>,
        on_sub: bool,
    ) {
        let (o, to) = (owner.clone(), to.clone());
        self.with_pep(now, owner, move |s, now, r| {
            if r.is_err() {
                return;
            }
            let who = to.bare();
            let wanted: Vec<(String, String)> = nodes
                .into_iter()
                .filter_map(|name| {
                    let n = s.pep_node(&o, &name)?;
                    let wanted = match n.config.send_last {
                        SendLast::OnSubAndPresence => true,
                        SendLast::OnSub => on_sub,
                        SendLast::Never => false,
                    };
                    if !wanted
                        || !n.config.deliver_notifications
                        || s.pep_may_see(&o, &n.config, &who).is_err()
                    {
                        return None;
                    }
                    let last = n.items.last()?.id.clone();
                    Some((name, last))
                })
                .collect();
            for (name, id) in wanted {
                let (o2, to2) = (o.clone(), to.clone());
                s.pep_fetch(now, &o, &name.clone(), vec![id], move |s, now, items| {
                    if !items.is_empty() {
                        let ev = Server::event_items(&name, &items);
                        s.pep_send_event(now, &o2, &to2, ev);
                    }
                });
            }
        });
    }

    // ---- requests ----

    /// `http://jabber.org/protocol/pubsub` requests (the service is loaded).
    fn pubsub_action(&mut self, now: Instant, ctx: Ctx, payload: &Element) -> Outcome {
        let options = payload
            .get_child("publish-options", NS_PUBSUB)
            .and_then(form::find)
            .map(form::Submitted::parse);
        let configure = payload
            .get_child("configure", NS_PUBSUB)
            .and_then(form::find)
            .map(form::Submitted::parse);
        let Some(action) = payload
            .elements()
            .find(|e| e.name != "publish-options" && e.name != "configure")
        else {
            return Some(Err(StanzaError::new("bad-request")));
        };
        match (action.name.as_str(), ctx.set) {
            ("publish", true) => {
                if options
                    .as_ref()
                    .and_then(|o| o.form_type.as_deref())
                    .is_some_and(|t| t != NS_PUBLISH_OPTIONS)
                {
                    return Some(Err(StanzaError::new("bad-request")));
                }
                self.ps_publish(ctx, action, options)
            }
            ("retract", true) => self.ps_retract(ctx, action),
            ("items", false) => self.ps_items(now, ctx, action),
            ("create", true) => self.ps_create(ctx, action, configure),
            (
                "subscribe" | "unsubscribe" | "options" | "subscriptions" | "affiliations"
                | "default",
                _,
            ) => Some(Err(StanzaError::new("feature-not-implemented").with_app(
                Element::new("unsupported", NS_PUBSUB_ERRORS).attr("feature", &action.name),
            ))),
            _ => Some(Err(StanzaError::new("bad-request"))),
        }
    }

    /// XEP-0060 section 7.1 with XEP-0163 section 3 auto-create.
    fn ps_publish(
        &mut self,
        ctx: Ctx,
        publish: &Element,
        options: Option<form::Submitted>,
    ) -> Outcome {
        if !ctx.own {
            return Some(Err(StanzaError::new("forbidden")));
        }
        let Some(node) = publish.get_attr("node").filter(|n| !n.is_empty()) else {
            return Some(Err(pubsub_error("bad-request", "nodeid-required")));
        };
        let items: Vec<&Element> = publish.elements().filter(|e| e.name == "item").collect();
        let item = match items.as_slice() {
            [] => return Some(Err(pubsub_error("bad-request", "item-required"))),
            [one] => *one,
            _ => return Some(Err(pubsub_error("bad-request", "invalid-payload"))),
        };
        let payload = match item.elements().collect::<Vec<_>>().as_slice() {
            [] => return Some(Err(pubsub_error("bad-request", "payload-required"))),
            [one] => (*one).clone(),
            _ => return Some(Err(pubsub_error("bad-request", "invalid-payload"))),
        };
        let id = match item.get_attr("id").filter(|i| !i.is_empty()) {
            Some(i) => i.to_string(),
            None => self.random_id(),
        };
        if item_key(node, &id).len() > MAX_KEY {
            return Some(Err(
                StanzaError::new("not-acceptable").with_text("node or item id too long")
            ));
        }
        let owner = ctx.owner.clone();
        let mut ops = Vec::new();
        match self.pep_node(&owner, node) {
            Some(n) => {
                if let Some(o) = &options {
                    match n.config.satisfies(o) {
                        Ok(true) => {}
                        // Section 7.1.5: the node exists with another configuration.
                        Ok(false) => {
                            return Some(Err(pubsub_error("conflict", "precondition-not-met")))
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
            None => {
                let mut cfg = default_config(node);
                if let Some(o) = &options {
                    if let Err(e) = cfg.apply(o) {
                        return Some(Err(e));
                    }
                }
                if self.pep(&owner).map_or(0, |p| p.nodes.len()) >= MAX_NODES {
                    return Some(Err(
                        StanzaError::new("not-allowed").with_text("too many nodes")
                    ));
                }
                ops.extend(self.pep_create(&owner, node, cfg));
            }
        }
        ops.extend(self.pep_apply_publish(&owner, node, &id, payload.clone()));
        let result = Element::new("pubsub", NS_PUBSUB).child(
            Element::new("publish", NS_PUBSUB)
                .attr("node", node)
                .child(Element::new("item", NS_PUBSUB).attr("id", &id)),
        );
        let node = node.to_string();
        self.store_then(ops, move |s, now, ok| {
            if !ok {
                s.reply_iq(
                    now,
                    &ctx.reply,
                    Err(StanzaError::new("internal-server-error")),
                );
                return;
            }
            s.reply_iq(now, &ctx.reply, Ok(Some(result)));
            s.pep_notify_publish(now, &owner, &node, &id, &payload);
            s.bookmarks_after_publish(now, &owner, &node, &payload);
        });
        None
    }

    /// XEP-0060 section 7.2.
    fn ps_retract(&mut self, ctx: Ctx, retract: &Element) -> Outcome {
        if !ctx.own {
            return Some(Err(StanzaError::new("forbidden")));
        }
        let Some(node) = retract.get_attr("node").filter(|n| !n.is_empty()) else {
            return Some(Err(pubsub_error("bad-request", "nodeid-required")));
        };
        let ids: Vec<String> = retract
            .elements()
            .filter(|e| e.name == "item")
            .filter_map(|e| e.get_attr("id"))
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            return Some(Err(pubsub_error("bad-request", "item-required")));
        }
        let owner = ctx.owner.clone();
        let Some(n) = self.pep_node(&owner, node) else {
            return Some(Err(StanzaError::new("item-not-found")));
        };
        if ids.iter().any(|id| !n.items.iter().any(|i| i.id == *id)) {
            return Some(Err(StanzaError::new("item-not-found")));
        }
        let notify = retract
            .get_attr("notify")
            .and_then(form::parse_bool)
            .unwrap_or(n.config.notify_retract);
        let mut ops = Vec::new();
        for id in &ids {
            ops.extend(self.pep_apply_retract(&owner, node, id).unwrap_or_default());
        }
        let node = node.to_string();
        self.store_then(ops, move |s, now, ok| {
            if !ok {
                s.reply_iq(
                    now,
                    &ctx.reply,
                    Err(StanzaError::new("internal-server-error")),
                );
                return;
            }
            s.reply_iq(now, &ctx.reply, Ok(None));
            if notify {
                s.pep_notify_retract(now, &owner, &node, &ids);
            }
            s.bookmarks_after_retract(now, &owner, &node);
        });
        None
    }

    /// XEP-0060 section 6.5: all items, the last `max_items`, or the ids asked for.
    fn ps_items(&mut self, now: Instant, ctx: Ctx, items: &Element) -> Outcome {
        let Some(node) = items.get_attr("node").filter(|n| !n.is_empty()) else {
            return Some(Err(pubsub_error("bad-request", "nodeid-required")));
        };
        let owner = ctx.owner.clone();
        let Some(n) = self.pep_node(&owner, node) else {
            return Some(Err(StanzaError::new("item-not-found")));
        };
        if let Err(e) = self.pep_may_see(&owner, &n.config, &ctx.from.bare()) {
            return Some(Err(e));
        }
        let asked: Vec<String> = items
            .elements()
            .filter(|e| e.name == "item")
            .filter_map(|e| e.get_attr("id"))
            .map(str::to_string)
            .collect();
        let ids: Vec<String> = if asked.is_empty() {
            let max = items
                .get_attr("max_items")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let skip = n.items.len().saturating_sub(max);
            n.items.iter().skip(skip).map(|i| i.id.clone()).collect()
        } else {
            asked
        };
        let node = node.to_string();
        self.pep_fetch(now, &owner, &node.clone(), ids, move |s, now, found| {
            let mut e = Element::new("items", NS_PUBSUB).attr("node", &node);
            for (id, p) in found {
                e.push(Element::new("item", NS_PUBSUB).attr("id", &id).child(p));
            }
            let q = Element::new("pubsub", NS_PUBSUB).child(e);
            s.reply_iq(now, &ctx.reply, Ok(Some(q)));
        });
        None
    }

    /// XEP-0060 section 8.1 (with an instant node name when none is given).
    fn ps_create(
        &mut self,
        ctx: Ctx,
        create: &Element,
        configure: Option<form::Submitted>,
    ) -> Outcome {
        if !ctx.own {
            return Some(Err(StanzaError::new("forbidden")));
        }
        let owner = ctx.owner.clone();
        let given = create.get_attr("node").filter(|n| !n.is_empty());
        let node = match given {
            Some(n) => n.to_string(),
            None => self.random_id(),
        };
        if self.pep_node(&owner, &node).is_some() {
            return Some(Err(StanzaError::new("conflict")));
        }
        if node_key(&node).len() > MAX_KEY {
            return Some(Err(
                StanzaError::new("not-acceptable").with_text("node name too long")
            ));
        }
        if self.pep(&owner).map_or(0, |p| p.nodes.len()) >= MAX_NODES {
            return Some(Err(
                StanzaError::new("not-allowed").with_text("too many nodes")
            ));
        }
        let mut cfg = default_config(&node);
        if let Some(c) = &configure {
            if let Err(e) = cfg.apply(c) {
                return Some(Err(e));
            }
        }
        let ops = self.pep_create(&owner, &node, cfg);
        let result = given.is_none().then(|| {
            Element::new("pubsub", NS_PUBSUB)
                .child(Element::new("create", NS_PUBSUB).attr("node", &node))
        });
        self.store_then(ops, move |s, now, ok| {
            let r = if ok {
                Ok(result)
            } else {
                Err(StanzaError::new("internal-server-error"))
            };
            s.reply_iq(now, &ctx.reply, r);
        });
        None
    }

    /// `http://jabber.org/protocol/pubsub#owner` requests: configure (XEP-0060 section
    /// 8.2), default (8.3), delete (8.4), purge (8.5); the owner alone.
    fn pubsub_owner_action(&mut self, ctx: Ctx, payload: &Element) -> Outcome {
        if !ctx.own {
            return Some(Err(StanzaError::new("forbidden")));
        }
        let Some(action) = payload.elements().next() else {
            return Some(Err(StanzaError::new("bad-request")));
        };
        if action.name == "default" && !ctx.set {
            let q = Element::new("pubsub", NS_PUBSUB_OWNER).child(
                Element::new("default", NS_PUBSUB_OWNER).child(NodeConfig::default().to_form()),
            );
            return Some(Ok(Some(q)));
        }
        let Some(node) = action.get_attr("node").filter(|n| !n.is_empty()) else {
            return Some(Err(pubsub_error("bad-request", "nodeid-required")));
        };
        let owner = ctx.owner.clone();
        let Some(current) = self.pep_node(&owner, node).map(|n| n.config.clone()) else {
            return Some(Err(StanzaError::new("item-not-found")));
        };
        let node = node.to_string();
        match (action.name.as_str(), ctx.set) {
            ("configure", false) => {
                let q = Element::new("pubsub", NS_PUBSUB_OWNER).child(
                    Element::new("configure", NS_PUBSUB_OWNER)
                        .attr("node", &node)
                        .child(current.to_form()),
                );
                Some(Ok(Some(q)))
            }
            ("configure", true) => {
                let Some(x) = form::find(action) else {
                    return Some(Err(StanzaError::new("bad-request")));
                };
                if x.get_attr("type") == Some("cancel") {
                    return Some(Ok(None));
                }
                let mut cfg = current;
                if let Err(e) = cfg.apply(&form::Submitted::parse(x)) {
                    return Some(Err(e));
                }
                let Some(n) = self.pep_mut(&owner).and_then(|p| p.nodes.get_mut(&node)) else {
                    return Some(Err(StanzaError::new("item-not-found")));
                };
                n.config = cfg;
                let excess = n.items.len().saturating_sub(n.config.limit());
                let dropped: Vec<String> = n.items.drain(..excess).map(|i| i.id).collect();
                let persist = n.config.persist;
                let mut ops: Vec<StoreOp> = dropped
                    .iter()
                    .filter(|_| persist)
                    .map(|id| Server::item_op(&owner, &node, id, None))
                    .collect();
                ops.extend(self.pep_node_row(&owner, &node));
                self.store_then(ops, move |s, now, ok| {
                    let r = if ok {
                        Ok(None)
                    } else {
                        Err(StanzaError::new("internal-server-error"))
                    };
                    s.reply_iq(now, &ctx.reply, r);
                });
                None
            }
            ("delete" | "purge", true) => {
                let delete = action.name == "delete";
                let ops = self.pep_apply_clear(&owner, &node, delete);
                self.store_then(ops, move |s, now, ok| {
                    if !ok {
                        s.reply_iq(
                            now,
                            &ctx.reply,
                            Err(StanzaError::new("internal-server-error")),
                        );
                        return;
                    }
                    s.reply_iq(now, &ctx.reply, Ok(None));
                    let ev = Element::new(if delete { "delete" } else { "purge" }, NS_PUBSUB_EVENT)
                        .attr("node", &node);
                    s.pep_broadcast(now, &owner, &node, &current, ev);
                });
                None
            }
            _ => Some(Err(StanzaError::new("bad-request"))),
        }
    }

    // ---- service discovery (disco.rs) ----

    /// XEP-0030 disco#items on an account: the nodes the requester may see (XEP-0060
    /// section 5.2), or the items of one node (section 5.5).
    pub(crate) fn pep_disco_items(
        &mut self,
        now: Instant,
        req: IqRequest,
        node: Option<String>,
    ) -> IqReply {
        let owner = req.to.clone();
        let who = req.from.bare();
        let reply = req.reply_to();
        self.with_pep(now, &owner.clone(), move |s, now, r| {
            let result = r.and_then(|()| {
                let mut q = Element::new("query", disco::NS_DISCO_ITEMS);
                let o = owner.to_string();
                match &node {
                    None => {
                        if let Some(p) = s.pep(&owner) {
                            for (name, n) in &p.nodes {
                                if s.pep_may_see(&owner, &n.config, &who).is_ok() {
                                    q.push(
                                        Element::new("item", disco::NS_DISCO_ITEMS)
                                            .attr("jid", &o)
                                            .attr("node", name),
                                    );
                                }
                            }
                        }
                    }
                    Some(name) => {
                        let n = s
                            .pep_node(&owner, name)
                            .ok_or_else(|| StanzaError::new("item-not-found"))?;
                        s.pep_may_see(&owner, &n.config, &who)?;
                        q.set_attr("node", name);
                        for i in &n.items {
                            q.push(
                                Element::new("item", disco::NS_DISCO_ITEMS)
                                    .attr("jid", &o)
                                    .attr("name", &i.id),
                            );
                        }
                    }
                }
                Ok(Some(q))
            });
            s.reply_iq(now, &reply, result);
        });
        IqReply::Later
    }

    /// XEP-0030 disco#info on one of an account's nodes (XEP-0060 section 5.3).
    pub(crate) fn pep_node_info(&mut self, now: Instant, req: IqRequest, node: String) -> IqReply {
        let owner = req.to.clone();
        let who = req.from.bare();
        let reply = req.reply_to();
        self.with_pep(now, &owner.clone(), move |s, now, r| {
            let result = r.and_then(|()| {
                let n = s
                    .pep_node(&owner, &node)
                    .ok_or_else(|| StanzaError::new("item-not-found"))?;
                s.pep_may_see(&owner, &n.config, &who)?;
                Ok(Some(
                    Element::new("query", disco::NS_DISCO_INFO)
                        .attr("node", &node)
                        .child(
                            Element::new("identity", disco::NS_DISCO_INFO)
                                .attr("category", "pubsub")
                                .attr("type", "leaf"),
                        )
                        .child(
                            Element::new("feature", disco::NS_DISCO_INFO).attr("var", NS_PUBSUB),
                        ),
                ))
            });
            s.reply_iq(now, &reply, result);
        });
        IqReply::Later
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_rows_round_trip() {
        let n = PepNode {
            config: NodeConfig {
                access: Access::Whitelist,
                max_items: None,
                persist: true,
                send_last: SendLast::Never,
                notify_retract: false,
                deliver_notifications: true,
            },
            items: vec![
                PepItem {
                    id: "a".into(),
                    payload: None,
                },
                PepItem {
                    id: "b/c".into(),
                    payload: None,
                },
            ],
        };
        let e = stanza::parse_stored(&stanza::to_stored(&n.to_stored("x/y%z"))).unwrap();
        let (name, back) = PepNode::from_stored(&e).unwrap();
        assert_eq!(name, "x/y%z");
        assert_eq!(back.config, n.config);
        let ids: Vec<&str> = back.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b/c"]);
        // Keys stay unambiguous whatever the node and item names hold.
        assert_ne!(item_key("a/b", "c"), item_key("a", "b/c"));
        assert_eq!(node_key("x/y%z"), "x%2Fy%25z");
    }

    #[test]
    fn publish_options_are_preconditions() {
        let mut f = form::Submitted::default();
        f.fields
            .insert("pubsub#max_items".into(), vec!["max".into()]);
        f.fields
            .insert("pubsub#access_model".into(), vec!["whitelist".into()]);
        let mut c = NodeConfig::default();
        assert!(!c.satisfies(&f).unwrap());
        c.apply(&f).unwrap();
        assert!(c.satisfies(&f).unwrap());
        assert_eq!(c.limit(), MAX_ITEMS);
        f.fields
            .insert("pubsub#max_items".into(), vec!["100000".into()]);
        assert!(c.apply(&f).is_err());
    }
}
