//! The service modules of the server core ("what Prosody enables by default") over
//! virtual time, with the shared harness of `tests/common`: entity capabilities
//! (XEP-0115), vcard-temp (XEP-0054), private XML storage (XEP-0049), PEP (XEP-0163)
//! with avatars (XEP-0084) and bookmarks (XEP-0402 / XEP-0048), version (XEP-0092), time
//! (XEP-0202), last activity (XEP-0012), in-band registration (XEP-0077) and service
//! administration (XEP-0133 over XEP-0050).

mod common;

use common::*;
use sha1::{Digest, Sha1};

const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";

const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
const NS_DATA: &str = "jabber:x:data";
const NS_REGISTER: &str = "jabber:iq:register";
const AVATAR_META: &str = "urn:xmpp:avatar:metadata";
const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const BOOKMARKS2: &str = "urn:xmpp:bookmarks:1";

/// Sends `xml` on `c` and returns the iq answer; whatever else arrived (notifications,
/// a stream error) stays in the inbox for `take`.
fn iq(h: &mut Harness, c: ConnId, xml: &str) -> Element {
    h.send(c, xml);
    let mut v = h.take(c);
    let pos = v
        .iter()
        .position(|e| e.name == "iq" && matches!(e.get_attr("type"), Some("result" | "error")))
        .unwrap_or_else(|| panic!("no iq answer to {xml} in {v:#?}"));
    let r = v.remove(pos);
    h.clients.get_mut(&c).unwrap().inbox = v;
    r
}

fn result_payload(e: &Element) -> Element {
    assert_eq!(e.get_attr("type"), Some("result"), "{e:#?}");
    e.elements().next().cloned().expect("a payload")
}

/// The application-specific condition of an error (RFC 6120 section 8.3.4).
fn app_condition(e: &Element) -> Option<String> {
    e.get_child("error", ns::CLIENT)?
        .elements()
        .find(|c| c.ns != ns::STANZAS)
        .map(|c| c.name.clone())
}

/// XEP-0115 section 5.1 done here independently of the server: identities and
/// features (no forms in these tests).
fn caps_ver(identities: &[(&str, &str, &str, &str)], features: &[&str]) -> String {
    let mut ids: Vec<String> = identities
        .iter()
        .map(|(c, t, l, n)| format!("{c}/{t}/{l}/{n}<"))
        .collect();
    ids.sort();
    let mut fs: Vec<String> = features.iter().map(|f| format!("{f}<")).collect();
    fs.sort();
    let s = ids.concat() + &fs.concat();
    B64.encode(Sha1::digest(s.as_bytes()))
}

/// A client advertising `features` (with `+notify` wishes) in its presence: the
/// presence goes out, the server's disco#info query (if it does not know the hash yet)
/// is answered. Returns what arrived after that (notifications of last items...).
fn set_caps(h: &mut Harness, c: ConnId, features: &[&str]) -> Vec<Element> {
    let ver = caps_ver(&[("client", "pc", "", "Test")], features);
    h.send(
        c,
        &format!("<presence><c xmlns='{NS_CAPS}' hash='sha-1' node='https://client.example' ver='{ver}'/></presence>"),
    );
    let got = h.take(c);
    let query = got.iter().find(|e| {
        e.name == "iq"
            && e.get_attr("type") == Some("get")
            && e.get_child("query", NS_DISCO_INFO).is_some()
    });
    let Some(q) = query else {
        return got;
    };
    let node = q
        .get_child("query", NS_DISCO_INFO)
        .unwrap()
        .get_attr("node")
        .unwrap()
        .to_string();
    assert_eq!(node, format!("https://client.example#{ver}"));
    assert_eq!(q.get_attr("from"), Some(HOST));
    let mut answer = format!(
        "<iq type='result' id='{}' to='{HOST}'><query xmlns='{NS_DISCO_INFO}' node='{node}'><identity category='client' type='pc' name='Test'/>",
        q.get_attr("id").unwrap()
    );
    for f in features {
        answer.push_str(&format!("<feature var='{f}'/>"));
    }
    answer.push_str("</query></iq>");
    h.send(c, &answer);
    h.take(c)
}

/// Presence subscriptions both ways between two online users.
fn subscribe_both(h: &mut Harness, a: ConnId, a_jid: &str, b: ConnId, b_jid: &str) {
    for (x, y, y_jid, x_jid) in [(a, b, b_jid, a_jid), (b, a, a_jid, b_jid)] {
        h.send(x, &format!("<presence to='{y_jid}' type='subscribe'/>"));
        h.send(y, &format!("<presence to='{x_jid}' type='subscribed'/>"));
    }
    h.take(a);
    h.take(b);
}

/// PEP event notifications among `v`: (from, node, item ids, retracted ids).
fn events(v: &[Element]) -> Vec<(String, String, Vec<String>, Vec<String>)> {
    v.iter()
        .filter(|m| m.name == "message")
        .filter_map(|m| {
            assert_eq!(m.get_attr("type"), Some("headline"));
            let items = m
                .get_child("event", NS_PUBSUB_EVENT)?
                .get_child("items", NS_PUBSUB_EVENT)?;
            let ids = |n: &str| {
                items
                    .elements()
                    .filter(|i| i.name == n)
                    .map(|i| i.get_attr("id").unwrap().to_string())
                    .collect::<Vec<_>>()
            };
            Some((
                m.get_attr("from").unwrap().to_string(),
                items.get_attr("node").unwrap().to_string(),
                ids("item"),
                ids("retract"),
            ))
        })
        .collect()
}

/// Login with a given password through STARTTLS and SCRAM-SHA-256, bound to `resource`.
fn login_pass(h: &mut Harness, user: &str, pass: &str, resource: &str) -> ConnId {
    let (c, _) = h.open_to_sasl();
    let r = h.auth(c, "SCRAM-SHA-256", user, pass);
    assert_eq!(r.name, "success", "{r:?}");
    h.header(c);
    h.take(c);
    let r = iq(
        h,
        c,
        &format!(
            "<iq type='set' id='b'><bind xmlns='{}'><resource>{resource}</resource></bind></iq>",
            ns::BIND
        ),
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    c
}

fn publish(node: &str, id: &str, payload: &str, options: &str) -> String {
    let opts = if options.is_empty() {
        String::new()
    } else {
        format!(
            "<publish-options><x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>{options}</x></publish-options>"
        )
    };
    format!(
        "<iq type='set' id='pub-{id}'><pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'><item id='{id}'>{payload}</item></publish>{opts}</pubsub></iq>"
    )
}

fn item_ids(result: &Element) -> Vec<String> {
    result_payload(result)
        .get_child("items", NS_PUBSUB)
        .unwrap()
        .elements()
        .map(|i| i.get_attr("id").unwrap().to_string())
        .collect()
}

// ---- XEP-0115 and XEP-0030 ----

#[test]
fn caps_hash_in_features_matches_disco_info() {
    let mut h = Harness::new();
    let (c, sasl_features) = h.open_to_sasl();
    assert!(sasl_features.get_child("c", NS_CAPS).is_some());
    assert_eq!(h.auth(c, "SCRAM-SHA-256", "alice", PASS).name, "success");
    h.header(c);
    let f = h.one(c);
    let caps = f.get_child("c", NS_CAPS).expect("caps in features").clone();
    assert_eq!(caps.get_attr("hash"), Some("sha-1"));
    h.send(
        c,
        &format!("<iq type='set' id='b'><bind xmlns='{}'/></iq>", ns::BIND),
    );
    h.take(c);
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='get' id='d' to='{HOST}'><query xmlns='{NS_DISCO_INFO}'/></iq>"),
    );
    let q = result_payload(&r);
    let ids: Vec<(String, String, String, String)> = q
        .elements()
        .filter(|e| e.name == "identity")
        .map(|e| {
            let a = |n: &str| e.get_attr(n).unwrap_or("").to_string();
            (a("category"), a("type"), a("xml:lang"), a("name"))
        })
        .collect();
    let features: Vec<&str> = q
        .elements()
        .filter(|e| e.name == "feature")
        .filter_map(|e| e.get_attr("var"))
        .collect();
    for f in [
        "vcard-temp",
        "jabber:iq:private",
        "jabber:iq:version",
        "urn:xmpp:time",
        "jabber:iq:last",
        "jabber:iq:register",
        NS_COMMANDS,
        NS_DISCO_ITEMS,
    ] {
        assert!(features.contains(&f), "{f} in {features:?}");
    }
    let idr: Vec<(&str, &str, &str, &str)> = ids
        .iter()
        .map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str()))
        .collect();
    let ver = caps_ver(&idr, &features);
    assert_eq!(caps.get_attr("ver"), Some(ver.as_str()));
    // Section 6.2: the same answer on node#ver.
    let node = format!("{}#{ver}", caps.get_attr("node").unwrap());
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='get' id='d2' to='{HOST}'><query xmlns='{NS_DISCO_INFO}' node='{node}'/></iq>"),
    );
    let q2 = result_payload(&r);
    assert_eq!(q2.get_attr("node"), Some(node.as_str()));
    assert_eq!(q2.elements().count(), q.elements().count());

    // The account: account/registered and pubsub/pep (XEP-0163 section 6.1), the
    // pubsub features clients look for.
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='get' id='d3' to='alice@{HOST}'><query xmlns='{NS_DISCO_INFO}'/></iq>"),
    );
    let q = result_payload(&r);
    let kinds: Vec<(&str, &str)> = q
        .elements()
        .filter(|e| e.name == "identity")
        .map(|e| (e.get_attr("category").unwrap(), e.get_attr("type").unwrap()))
        .collect();
    assert_eq!(kinds, [("account", "registered"), ("pubsub", "pep")]);
    let features: Vec<&str> = q.elements().filter_map(|e| e.get_attr("var")).collect();
    for f in [
        NS_PUBSUB,
        "http://jabber.org/protocol/pubsub#publish-options",
        "urn:xmpp:bookmarks:1#compat",
    ] {
        assert!(features.contains(&f), "{f} in {features:?}");
    }
}

// ---- XEP-0054 ----

#[test]
fn vcard_set_and_get() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    // Nothing stored yet: an empty vCard for oneself, item-not-found for others.
    let r = iq(
        &mut h,
        a,
        "<iq type='get' id='v0'><vCard xmlns='vcard-temp'/></iq>",
    );
    let v = result_payload(&r);
    assert_eq!((v.name.as_str(), v.elements().count()), ("vCard", 0));
    let r = iq(
        &mut h,
        b,
        "<iq type='get' id='v1' to='alice@example.org'><vCard xmlns='vcard-temp'/></iq>",
    );
    assert_eq!(stanza_error(&r), "item-not-found");

    let r = iq(
        &mut h,
        a,
        "<iq type='set' id='v2'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN><NICKNAME>al</NICKNAME></vCard></iq>",
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    assert!(h.db.contains_key(&(
        HOST.into(),
        "alice".into(),
        "vcard".into(),
        "current".into()
    )));
    for c in [a, b] {
        let r = iq(
            &mut h,
            c,
            "<iq type='get' id='v3' to='alice@example.org'><vCard xmlns='vcard-temp'/></iq>",
        );
        assert_eq!(r.get_attr("from"), Some("alice@example.org"));
        let v = result_payload(&r);
        assert_eq!(
            v.get_child("FN", "vcard-temp").unwrap().text(),
            "Alice Liddell"
        );
    }
    // Only the owner writes it.
    let r = iq(
        &mut h,
        b,
        "<iq type='set' id='v4' to='alice@example.org'><vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>",
    );
    assert_eq!(stanza_error(&r), "forbidden");
    // Survives a restart (it is in storage).
    h.restart();
    let b = h.online("bob", "b", 0);
    let r = iq(
        &mut h,
        b,
        "<iq type='get' id='v5' to='alice@example.org'><vCard xmlns='vcard-temp'/></iq>",
    );
    let v = result_payload(&r);
    assert_eq!(v.get_child("NICKNAME", "vcard-temp").unwrap().text(), "al");
}

// ---- XEP-0049 ----

#[test]
fn private_storage_set_get_and_refusals() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    let r = iq(
        &mut h,
        a,
        "<iq type='set' id='p1'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs></query></iq>",
    );
    assert_eq!(r.get_attr("type"), Some("result"), "{r:#?}");
    assert!(h.db.contains_key(&(
        HOST.into(),
        "alice".into(),
        "private".into(),
        "urn:example:prefs".into()
    )));
    let r = iq(
        &mut h,
        a,
        "<iq type='get' id='p2'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>",
    );
    let q = result_payload(&r);
    let prefs = q.get_child("prefs", "urn:example:prefs").unwrap();
    assert_eq!(
        prefs
            .get_child("theme", "urn:example:prefs")
            .unwrap()
            .text(),
        "dark"
    );
    // Nothing stored: the empty element back.
    let r = iq(
        &mut h,
        a,
        "<iq type='get' id='p3'><query xmlns='jabber:iq:private'><other xmlns='urn:example:other'/></query></iq>",
    );
    let q = result_payload(&r);
    let o = q.get_child("other", "urn:example:other").unwrap();
    assert_eq!(o.elements().count(), 0);
    // Reserved namespaces (section 3) and unqualified children are refused.
    for bad in [
        "<x xmlns='jabber:client'/>",
        "<q xmlns='jabber:iq:roster'/>",
        "<vCard xmlns='vcard-temp'/>",
        "<nons/>",
    ] {
        let r = iq(
            &mut h,
            a,
            &format!("<iq type='set' id='p4'><query xmlns='jabber:iq:private'>{bad}</query></iq>"),
        );
        assert_eq!(stanza_error(&r), "not-acceptable", "{bad}");
    }
    let r = iq(
        &mut h,
        a,
        "<iq type='get' id='p5'><query xmlns='jabber:iq:private'/></iq>",
    );
    assert_eq!(stanza_error(&r), "bad-request");
    // Another user's data.
    let r = iq(
        &mut h,
        b,
        "<iq type='get' id='p6' to='alice@example.org'><query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query></iq>",
    );
    assert_eq!(stanza_error(&r), "forbidden");
}

// ---- XEP-0163 / XEP-0084 ----

#[test]
fn pep_avatar_notifies_contacts_that_asked() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    let c = h.online("carol", "c", 0);
    subscribe_both(&mut h, a, "alice@example.org", b, "bob@example.org");
    let meta_notify = format!("{AVATAR_META}+notify");
    // Carol wants avatars but has no subscription; bob asks for metadata only.
    assert!(events(&set_caps(&mut h, b, &["urn:xmpp:ping", &meta_notify])).is_empty());
    assert!(events(&set_caps(&mut h, c, &[&meta_notify])).is_empty());
    h.take(a);

    // Data first (big: it stays in storage, loaded when asked for), then metadata.
    let data = "iVBORw0KGgo".repeat(1000);
    let r = iq(
        &mut h,
        a,
        &publish(
            AVATAR_DATA,
            "111f4b3c50d7b0df729d299bc6f8e9ef9066971f",
            &format!("<data xmlns='{AVATAR_DATA}'>{data}</data>"),
            "",
        ),
    );
    let p = result_payload(&r);
    let published = p.get_child("publish", NS_PUBSUB).unwrap();
    assert_eq!(published.get_attr("node"), Some(AVATAR_DATA));
    assert!(h.take(b).is_empty(), "no +notify for data");
    let meta = format!(
        "<metadata xmlns='{AVATAR_META}'><info bytes='11000' height='64' width='64' id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f' type='image/png'/></metadata>"
    );
    let r = iq(
        &mut h,
        a,
        &publish(
            AVATAR_META,
            "111f4b3c50d7b0df729d299bc6f8e9ef9066971f",
            &meta,
            "",
        ),
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    let ev = events(&h.take(b));
    assert_eq!(
        ev,
        [(
            "alice@example.org".to_string(),
            AVATAR_META.to_string(),
            vec!["111f4b3c50d7b0df729d299bc6f8e9ef9066971f".to_string()],
            vec![]
        )]
    );
    assert!(h.take(c).is_empty(), "carol is not subscribed");
    assert!(h.take(a).is_empty(), "alice did not ask");

    // Bob fetches the data (XEP-0084 section 4.3); carol may not.
    let r = iq(
        &mut h,
        b,
        &format!("<iq type='get' id='g1' to='alice@example.org'><pubsub xmlns='{NS_PUBSUB}'><items node='{AVATAR_DATA}'/></pubsub></iq>"),
    );
    let items = result_payload(&r);
    let item = items
        .get_child("items", NS_PUBSUB)
        .unwrap()
        .get_child("item", NS_PUBSUB)
        .unwrap();
    assert_eq!(item.get_child("data", AVATAR_DATA).unwrap().text(), data);
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='get' id='g2' to='alice@example.org'><pubsub xmlns='{NS_PUBSUB}'><items node='{AVATAR_META}'/></pubsub></iq>"),
    );
    assert_eq!(stanza_error(&r), "not-authorized");
    assert_eq!(
        app_condition(&r).as_deref(),
        Some("presence-subscription-required")
    );
    // Only the owner publishes.
    let r = iq(
        &mut h,
        b,
        &format!("<iq type='set' id='x' to='alice@example.org'><pubsub xmlns='{NS_PUBSUB}'><publish node='{AVATAR_META}'><item><metadata xmlns='{AVATAR_META}'/></item></publish></pubsub></iq>"),
    );
    assert_eq!(stanza_error(&r), "forbidden");

    // A second resource of bob's with the same client: the hash is known (no query),
    // and the last item comes at once (XEP-0163 section 4.3.4).
    let b2 = h.online("bob", "b2", 0);
    let got = set_caps(&mut h, b2, &["urn:xmpp:ping", &meta_notify]);
    assert!(!got.iter().any(|e| e.name == "iq"), "hash cached: {got:#?}");
    let ev = events(&got);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].1, AVATAR_META);

    // Retraction with notify (XEP-0060 section 7.2.2.1).
    h.take(b);
    let r = iq(
        &mut h,
        a,
        &format!("<iq type='set' id='r1'><pubsub xmlns='{NS_PUBSUB}'><retract node='{AVATAR_META}' notify='true'><item id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f'/></retract></pubsub></iq>"),
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    let ev = events(&h.take(b));
    assert_eq!(ev[0].3, ["111f4b3c50d7b0df729d299bc6f8e9ef9066971f"]);
    // Retracting it again: no such item.
    let r = iq(
        &mut h,
        a,
        &format!("<iq type='set' id='r2'><pubsub xmlns='{NS_PUBSUB}'><retract node='{AVATAR_META}'><item id='111f4b3c50d7b0df729d299bc6f8e9ef9066971f'/></retract></pubsub></iq>"),
    );
    assert_eq!(stanza_error(&r), "item-not-found");

    // Bob's disco#items on alice: her nodes he may see.
    let r = iq(
        &mut h,
        b,
        &format!(
            "<iq type='get' id='di' to='alice@example.org'><query xmlns='{NS_DISCO_ITEMS}'/></iq>"
        ),
    );
    let nodes: Vec<&str> = result_payload(&r)
        .elements()
        .filter_map(|e| e.get_attr("node"))
        .map(|n| match n {
            AVATAR_DATA => AVATAR_DATA,
            AVATAR_META => AVATAR_META,
            other => panic!("unexpected node {other}"),
        })
        .collect();
    assert_eq!(nodes, [AVATAR_DATA, AVATAR_META]);
}

#[test]
fn pep_survives_restart_and_sends_last_item_at_login() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    subscribe_both(&mut h, a, "alice@example.org", b, "bob@example.org");
    let r = iq(
        &mut h,
        a,
        &publish(
            "http://jabber.org/protocol/nick",
            "current",
            "<nick xmlns='http://jabber.org/protocol/nick'>Ali</nick>",
            "",
        ),
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    h.restart();
    // Bob logs in; alice is offline, her service is loaded from storage.
    let b = h.online("bob", "b", 0);
    let ev = events(&set_caps(
        &mut h,
        b,
        &["http://jabber.org/protocol/nick+notify"],
    ));
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "alice@example.org");
    assert_eq!(ev[0].2, ["current"]);
}

#[test]
fn pep_last_item_on_new_subscription() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let c = h.online("carol", "c", 0);
    let nick_notify = "http://jabber.org/protocol/nick+notify";
    let r = iq(
        &mut h,
        a,
        &publish(
            "http://jabber.org/protocol/nick",
            "current",
            "<nick xmlns='http://jabber.org/protocol/nick'>Ali</nick>",
            "",
        ),
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    assert!(events(&set_caps(&mut h, c, &[nick_notify])).is_empty());
    // Carol asks, alice approves: carol is now subscribed to alice's nodes.
    h.send(c, "<presence to='alice@example.org' type='subscribe'/>");
    h.take(a);
    h.send(a, "<presence to='carol@example.org' type='subscribed'/>");
    let ev = events(&h.take(c));
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].0, "alice@example.org");
    assert_eq!(ev[0].1, "http://jabber.org/protocol/nick");
    // Carol goes unavailable: nothing more for that resource.
    h.send(c, "<presence type='unavailable'/>");
    h.take(c);
    let r = iq(
        &mut h,
        a,
        &publish(
            "http://jabber.org/protocol/nick",
            "current",
            "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>",
            "",
        ),
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    assert!(events(&h.take(c)).is_empty());
}

// ---- XEP-0402 / XEP-0048 ----

const BOOKMARK_OPTIONS: &str = "<field var='pubsub#persist_items'><value>true</value></field><field var='pubsub#max_items'><value>max</value></field><field var='pubsub#send_last_published_item'><value>never</value></field><field var='pubsub#access_model'><value>whitelist</value></field>";

#[test]
fn bookmarks_publish_retrieve_and_compat() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let a2 = h.online("alice", "a2", 0);
    let b = h.online("bob", "b", 0);
    subscribe_both(&mut h, a, "alice@example.org", b, "bob@example.org");
    h.take(a2);
    set_caps(&mut h, a, &[&format!("{BOOKMARKS2}+notify")]);
    h.take(a2);
    set_caps(&mut h, b, &[&format!("{BOOKMARKS2}+notify")]);
    h.take(a);
    h.take(a2);

    let conf = |name: &str| {
        format!("<conference xmlns='{BOOKMARKS2}' name='{name}' autojoin='true'><nick>al</nick></conference>")
    };
    for (room, name) in [
        ("tea@conference.example.org", "Tea"),
        ("cards@conference.example.org", "Cards"),
    ] {
        let r = iq(
            &mut h,
            a,
            &publish(BOOKMARKS2, room, &conf(name), BOOKMARK_OPTIONS),
        );
        assert_eq!(r.get_attr("type"), Some("result"), "{r:#?}");
        // The owner's resource that asked is notified, not bob (whitelist).
        let ev = events(&h.take(a));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].2, [room]);
    }
    assert!(events(&h.take(b)).is_empty(), "whitelist: owner only");
    assert!(h.take(a2).is_empty(), "a2 did not ask");

    let get = format!(
        "<iq type='get' id='g'><pubsub xmlns='{NS_PUBSUB}'><items node='{BOOKMARKS2}'/></pubsub></iq>"
    );
    let r = iq(&mut h, a, &get);
    assert_eq!(
        item_ids(&r),
        ["tea@conference.example.org", "cards@conference.example.org"]
    );
    // max_items = max kept both; the node is whitelist (XEP-0402 section 3).
    let r = iq(
        &mut h,
        b,
        &format!("<iq type='get' id='g' to='alice@example.org'><pubsub xmlns='{NS_PUBSUB}'><items node='{BOOKMARKS2}'/></pubsub></iq>"),
    );
    assert_eq!(stanza_error(&r), "not-allowed");
    assert_eq!(app_condition(&r).as_deref(), Some("closed-node"));
    // Publish-options that contradict the node (XEP-0060 section 7.1.5).
    let r = iq(
        &mut h,
        a,
        &publish(
            BOOKMARKS2,
            "x@conference.example.org",
            &conf("X"),
            "<field var='pubsub#access_model'><value>open</value></field>",
        ),
    );
    assert_eq!(stanza_error(&r), "conflict");
    assert_eq!(app_condition(&r).as_deref(), Some("precondition-not-met"));

    // XEP-0048 through private XML storage sees the same bookmarks.
    let r = iq(
        &mut h,
        a2,
        "<iq type='get' id='pv'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query></iq>",
    );
    let st = result_payload(&r);
    let storage = st.get_child("storage", "storage:bookmarks").unwrap();
    let jids: Vec<&str> = storage
        .elements()
        .filter_map(|c| c.get_attr("jid"))
        .collect();
    assert_eq!(
        jids,
        ["tea@conference.example.org", "cards@conference.example.org"]
    );
    let tea = storage.elements().next().unwrap();
    assert_eq!(tea.get_attr("name"), Some("Tea"));
    assert_eq!(tea.get_attr("autojoin"), Some("true"));
    assert_eq!(
        tea.get_child("nick", "storage:bookmarks").unwrap().text(),
        "al"
    );

    // An old client rewrites the list: cards goes, chess comes.
    h.take(a);
    let r = iq(
        &mut h,
        a2,
        "<iq type='set' id='ps'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='tea@conference.example.org' name='Tea' autojoin='true'><nick>al</nick></conference><conference jid='chess@conference.example.org' name='Chess'/></storage></query></iq>",
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    let ev = events(&h.take(a));
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[0].2, ["chess@conference.example.org"]);
    assert_eq!(ev[1].3, ["cards@conference.example.org"]);
    let r = iq(&mut h, a, &get);
    assert_eq!(
        item_ids(&r),
        ["tea@conference.example.org", "chess@conference.example.org"]
    );
    let chess = result_payload(&r)
        .get_child("items", NS_PUBSUB)
        .unwrap()
        .elements()
        .nth(1)
        .unwrap()
        .get_child("conference", BOOKMARKS2)
        .unwrap()
        .clone();
    assert_eq!(chess.get_attr("autojoin"), Some("false"));

    // XEP-0048 over PEP: a publish of the whole <storage/> is converted too.
    let r = iq(
        &mut h,
        a2,
        &publish(
            "storage:bookmarks",
            "current",
            "<storage xmlns='storage:bookmarks'><conference jid='go@conference.example.org' name='Go' autojoin='1'/></storage>",
            "<field var='pubsub#access_model'><value>whitelist</value></field>",
        ),
    );
    assert_eq!(r.get_attr("type"), Some("result"), "{r:#?}");
    let r = iq(&mut h, a, &get);
    assert_eq!(item_ids(&r), ["go@conference.example.org"]);
    // ...and a XEP-0402 change republishes the legacy node.
    h.take(a);
    let r = iq(
        &mut h,
        a,
        &publish(
            BOOKMARKS2,
            "tea@conference.example.org",
            &conf("Tea"),
            BOOKMARK_OPTIONS,
        ),
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    let r = iq(
        &mut h,
        a,
        "<iq type='get' id='l'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='storage:bookmarks'/></pubsub></iq>",
    );
    let storage = result_payload(&r)
        .get_child("items", NS_PUBSUB)
        .unwrap()
        .get_child("item", NS_PUBSUB)
        .unwrap()
        .get_child("storage", "storage:bookmarks")
        .unwrap()
        .clone();
    let jids: Vec<&str> = storage
        .elements()
        .filter_map(|c| c.get_attr("jid"))
        .collect();
    assert_eq!(
        jids,
        ["go@conference.example.org", "tea@conference.example.org"]
    );
}

// ---- XEP-0092, XEP-0202, XEP-0012 ----

#[test]
fn version_time_and_last_activity() {
    let mut h = Harness::new();
    h.advance(Duration::from_secs(42));
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    let c = h.online("carol", "c", 0);
    subscribe_both(&mut h, a, "alice@example.org", b, "bob@example.org");

    let r = iq(
        &mut h,
        b,
        "<iq type='get' id='v' to='example.org'><query xmlns='jabber:iq:version'/></iq>",
    );
    let q = result_payload(&r);
    assert_eq!(
        q.get_child("name", "jabber:iq:version").unwrap().text(),
        "xmppd"
    );
    assert_eq!(
        q.get_child("version", "jabber:iq:version").unwrap().text(),
        "0.1"
    );

    let r = iq(
        &mut h,
        b,
        "<iq type='get' id='t' to='example.org'><time xmlns='urn:xmpp:time'/></iq>",
    );
    let t = result_payload(&r);
    assert_eq!(
        t.get_child("tzo", "urn:xmpp:time").unwrap().text(),
        "+00:00"
    );
    // 1_700_000_000 + 42 s.
    assert_eq!(
        t.get_child("utc", "urn:xmpp:time").unwrap().text(),
        "2023-11-14T22:14:02.000Z"
    );

    // Server uptime (section 5).
    let r = iq(
        &mut h,
        b,
        "<iq type='get' id='u' to='example.org'><query xmlns='jabber:iq:last'/></iq>",
    );
    assert_eq!(result_payload(&r).get_attr("seconds"), Some("42"));

    // Alice online: 0.
    let last = "<iq type='get' id='l' to='alice@example.org'><query xmlns='jabber:iq:last'/></iq>";
    let r = iq(&mut h, b, last);
    assert_eq!(result_payload(&r).get_attr("seconds"), Some("0"));
    // Alice leaves with a status; 100 s later bob asks.
    h.send(
        a,
        "<presence type='unavailable'><status>gone fishing</status></presence>",
    );
    h.take(b);
    h.advance(Duration::from_secs(100));
    let r = iq(&mut h, b, last);
    let q = result_payload(&r);
    assert_eq!(q.get_attr("seconds"), Some("100"));
    assert_eq!(q.text(), "gone fishing");
    assert!(h
        .db
        .contains_key(&(HOST.into(), "alice".into(), "lastlog".into(), "last".into())));
    // Carol has no subscription.
    let r = iq(&mut h, c, last);
    assert_eq!(stanza_error(&r), "forbidden");
}

// ---- XEP-0077 ----

#[test]
fn registration_off_by_default() {
    let mut h = Harness::new();
    let (c, f) = h.open_to_sasl();
    assert!(f
        .get_child("register", "http://jabber.org/features/iq-register")
        .is_none());
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='get' id='r'><query xmlns='{NS_REGISTER}'/></iq>"),
    );
    assert_eq!(stanza_error(&r), "service-unavailable");
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='set' id='r'><query xmlns='{NS_REGISTER}'><username>frank</username><password>pw</password></query></iq>"),
    );
    assert_eq!(stanza_error(&r), "service-unavailable");
    assert!(!h.accounts.contains_key("frank"));
    // Any other iq before authentication still ends the stream.
    h.send(
        c,
        "<iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>",
    );
    assert_eq!(h.stream_error(c), "not-authorized");
}

#[test]
fn registration_conflict_password_change_and_cancel() {
    let mut cfg = config();
    cfg.vhosts[0].allow_registration = true;
    let mut h = Harness::with(cfg);
    let (c, f) = h.open_to_sasl();
    assert!(f
        .get_child("register", "http://jabber.org/features/iq-register")
        .is_some());
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='get' id='r1'><query xmlns='{NS_REGISTER}'/></iq>"),
    );
    let q = result_payload(&r);
    assert!(q.get_child("username", NS_REGISTER).is_some());
    assert!(q.get_child("password", NS_REGISTER).is_some());
    // Taken.
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='set' id='r2'><query xmlns='{NS_REGISTER}'><username>alice</username><password>x</password></query></iq>"),
    );
    assert_eq!(stanza_error(&r), "conflict");
    // Missing password, bad username.
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='set' id='r3'><query xmlns='{NS_REGISTER}'><username>frank</username></query></iq>"),
    );
    assert_eq!(stanza_error(&r), "not-acceptable");
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='set' id='r4'><query xmlns='{NS_REGISTER}'><username>fr ank</username><password>pw</password></query></iq>"),
    );
    assert_eq!(stanza_error(&r), "not-acceptable");
    // Created, with SCRAM secrets at the configured iteration count.
    let r = iq(
        &mut h,
        c,
        &format!("<iq type='set' id='r5'><query xmlns='{NS_REGISTER}'><username>Frank</username><password>first pw</password></query></iq>"),
    );
    assert_eq!(r.get_attr("type"), Some("result"), "{r:#?}");
    let secrets = h.accounts.get("frank").expect("account created").clone();
    assert_eq!(secrets.sha256.as_ref().unwrap().iterations, 4096);
    assert_eq!(secrets.sha256.as_ref().unwrap().salt.len(), 16);
    // The same connection authenticates with it.
    assert_eq!(
        h.auth(c, "SCRAM-SHA-256", "frank", "first pw").name,
        "success"
    );

    // Password change after authentication (section 3.3).
    let d = login_pass(&mut h, "frank", "first pw", "home");
    let r = iq(
        &mut h,
        d,
        &format!("<iq type='get' id='q' to='{HOST}'><query xmlns='{NS_REGISTER}'/></iq>"),
    );
    assert!(result_payload(&r)
        .get_child("registered", NS_REGISTER)
        .is_some());
    let r = iq(
        &mut h,
        d,
        &format!("<iq type='set' id='pw' to='{HOST}'><query xmlns='{NS_REGISTER}'><username>frank</username><password>second pw</password></query></iq>"),
    );
    assert_eq!(r.get_attr("type"), Some("result"), "{r:#?}");
    // Not someone else's.
    let r = iq(
        &mut h,
        d,
        &format!("<iq type='set' id='pw2'><query xmlns='{NS_REGISTER}'><username>alice</username><password>x</password></query></iq>"),
    );
    assert_eq!(stanza_error(&r), "not-authorized");
    let (c2, _) = h.open_to_sasl();
    assert_eq!(
        h.auth(c2, "SCRAM-SHA-256", "frank", "first pw").name,
        "failure"
    );
    let d2 = login_pass(&mut h, "frank", "second pw", "work");

    // Cancellation (section 3.2): the answer, then every stream of the account ends.
    let r = iq(
        &mut h,
        d,
        &format!("<iq type='set' id='rm'><query xmlns='{NS_REGISTER}'><remove/></query></iq>"),
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    assert!(!h.accounts.contains_key("frank"));
    assert_eq!(h.stream_error(d), "not-authorized");
    assert_eq!(h.stream_error(d2), "not-authorized");
}

// ---- XEP-0133 over XEP-0050 ----

fn command(node: &str, body: &str) -> String {
    format!(
        "<iq type='set' id='cmd' to='{HOST}'><command xmlns='{NS_COMMANDS}' node='http://jabber.org/protocol/admin#{node}' {body}</command></iq>"
    )
}

fn submit(fields: &[(&str, &str)]) -> String {
    let mut x = format!("<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/admin</value></field>");
    for (var, v) in fields {
        x.push_str(&format!("<field var='{var}'><value>{v}</value></field>"));
    }
    x.push_str("</x>");
    x
}

#[test]
fn adhoc_add_and_delete_user_as_admin_only() {
    let mut cfg = config();
    cfg.admins = vec![Jid::parse("alice@example.org").unwrap()];
    let mut h = Harness::with(cfg);
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);

    // Discovery (XEP-0050 section 2.2): admins see the commands, others none.
    let list = format!(
        "<iq type='get' id='di' to='{HOST}'><query xmlns='{NS_DISCO_ITEMS}' node='{NS_COMMANDS}'/></iq>"
    );
    let r = iq(&mut h, a, &list);
    let nodes: Vec<String> = result_payload(&r)
        .elements()
        .filter_map(|e| e.get_attr("node"))
        .map(str::to_string)
        .collect();
    for n in [
        "add-user",
        "delete-user",
        "change-user-password",
        "get-online-users-num",
    ] {
        assert!(
            nodes.contains(&format!("http://jabber.org/protocol/admin#{n}")),
            "{n} in {nodes:?}"
        );
    }
    let r = iq(&mut h, b, &list);
    assert_eq!(result_payload(&r).elements().count(), 0);
    let r = iq(&mut h, b, &command("add-user", "action='execute'>"));
    assert_eq!(stanza_error(&r), "forbidden");

    // Add a user: the form, then the submission.
    let r = iq(&mut h, a, &command("add-user", "action='execute'>"));
    let cmd = result_payload(&r);
    assert_eq!(cmd.get_attr("status"), Some("executing"));
    let sid = cmd.get_attr("sessionid").unwrap().to_string();
    let x = cmd.get_child("x", NS_DATA).unwrap();
    let vars: Vec<&str> = x.elements().filter_map(|f| f.get_attr("var")).collect();
    assert_eq!(
        vars,
        ["FORM_TYPE", "accountjid", "password", "password-verify"]
    );
    let r = iq(
        &mut h,
        a,
        &command(
            "add-user",
            &format!(
                "sessionid='{sid}'>{}",
                submit(&[
                    ("accountjid", "erin@example.org"),
                    ("password", "erin pw"),
                    ("password-verify", "erin pw")
                ])
            ),
        ),
    );
    let done = result_payload(&r);
    assert_eq!(done.get_attr("status"), Some("completed"), "{done:#?}");
    assert_eq!(done.get_attr("sessionid"), Some(sid.as_str()));
    assert!(h.accounts.contains_key("erin"));
    let e = login_pass(&mut h, "erin", "erin pw", "x");
    // Again: it exists.
    let r = iq(
        &mut h,
        a,
        &command(
            "add-user",
            &format!(
                ">{}",
                submit(&[
                    ("accountjid", "erin@example.org"),
                    ("password", "p"),
                    ("password-verify", "p")
                ])
            ),
        ),
    );
    assert_eq!(stanza_error(&r), "conflict");

    // Online users: alice, bob, erin.
    let r = iq(
        &mut h,
        a,
        &command("get-online-users-num", "action='execute'>"),
    );
    let done = result_payload(&r);
    assert_eq!(done.get_attr("status"), Some("completed"));
    let n = done
        .get_child("x", NS_DATA)
        .unwrap()
        .elements()
        .find(|f| f.get_attr("var") == Some("onlineusersnum"))
        .unwrap()
        .elements()
        .next()
        .unwrap()
        .text();
    assert_eq!(n, "3");

    // Delete: erin's stream ends, the account is gone. Bob may not.
    let r = iq(
        &mut h,
        b,
        &command(
            "delete-user",
            &format!(">{}", submit(&[("accountjids", "erin@example.org")])),
        ),
    );
    assert_eq!(stanza_error(&r), "forbidden");
    let r = iq(
        &mut h,
        a,
        &command(
            "delete-user",
            &format!(">{}", submit(&[("accountjids", "erin@example.org")])),
        ),
    );
    assert_eq!(result_payload(&r).get_attr("status"), Some("completed"));
    assert!(!h.accounts.contains_key("erin"));
    assert_eq!(h.stream_error(e), "not-authorized");
    let (c, _) = h.open_to_sasl();
    assert_eq!(
        h.auth(c, "SCRAM-SHA-256", "erin", "erin pw").name,
        "failure"
    );

    // Change a password.
    let r = iq(
        &mut h,
        a,
        &command(
            "change-user-password",
            &format!(
                ">{}",
                submit(&[("accountjid", "bob@example.org"), ("password", "new bob")])
            ),
        ),
    );
    assert_eq!(result_payload(&r).get_attr("status"), Some("completed"));
    login_pass(&mut h, "bob", "new bob", "b2");
}
