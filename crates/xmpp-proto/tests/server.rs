//! The XMPP server core over virtual time: raw XML in, bytes and storage orders out,
//! exactly as xmppd drives it, with no socket, clock or database. Clients are played
//! by the harness (their side of SCRAM included); storage is an in-memory map whose
//! answers can be held back to check what waits for durability.

mod common;

use common::*;

// ---- stream negotiation ----

#[test]
fn features_in_order_and_starttls_required() {
    let mut h = Harness::new();
    let c = h.open(ConnKind::C2sStartTls);
    h.header(c);
    assert_eq!(h.clients[&c].headers, 1);
    let f = h.one(c);
    assert_eq!(f.ns, ns::STREAM);
    assert_eq!(
        names(&f.elements().cloned().collect::<Vec<_>>()),
        ["starttls"]
    );
    assert!(f
        .get_child("starttls", ns::TLS)
        .unwrap()
        .get_child("required", ns::TLS)
        .is_some());
    // SASL before TLS is refused (RFC 6120 section 6.5.6).
    h.send(
        c,
        &format!(
            "<auth xmlns='{}' mechanism='SCRAM-SHA-1'>biwsbj1hLHI9eA==</auth>",
            ns::SASL
        ),
    );
    let fail = h.one(c);
    assert_eq!(fail.name, "failure");
    assert!(fail.get_child("encryption-required", ns::SASL).is_some());

    let (c, f) = h.open_to_sasl();
    let mechs: Vec<String> = f
        .get_child("mechanisms", ns::SASL)
        .unwrap()
        .elements()
        .map(|m| m.text())
        .collect();
    assert_eq!(
        mechs,
        [
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1",
            "PLAIN"
        ]
    );
    assert!(f
        .get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        .is_some());
    assert!(f.get_child("starttls", ns::TLS).is_none());
    // A second STARTTLS is a failure that closes the stream.
    h.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    assert_eq!(h.one(c).name, "failure");
    assert!(h.closed(c));
}

#[test]
fn login_with_each_mechanism() {
    for mech in [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
    ] {
        let mut h = Harness::new();
        let c = h.login_with("alice", "laptop", mech);
        // RFC 3921 session and ping still work after bind.
        h.send(
            c,
            "<iq type='set' id='s1' to='example.org'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
        );
        let r = h.one(c);
        assert_eq!(r.get_attr("type"), Some("result"), "{mech}: {r:?}");
        assert_eq!(r.get_attr("from"), Some(HOST));
        assert_eq!(h.server.stats().auth_successes, 1);
        assert_eq!(h.server.stats().sessions, 1);
    }
}

#[test]
fn direct_tls_offers_plus_without_starttls() {
    let mut h = Harness::new();
    let c = h.open(ConnKind::C2sDirectTls);
    h.tls(c);
    h.header(c);
    let f = h.one(c);
    assert!(f.get_child("starttls", ns::TLS).is_none());
    assert!(f.get_child("mechanisms", ns::SASL).is_some());
    assert_eq!(h.auth(c, "SCRAM-SHA-1-PLUS", "bob", PASS).name, "success");
}

#[test]
fn wrong_password_and_unknown_user_look_the_same() {
    let mut h = Harness::new();
    let mut answers = Vec::new();
    for user in ["alice", "mallory"] {
        let (c, _) = h.open_to_sasl();
        let before = h.clients[&c].raw.len();
        let pass = if user == "alice" { "wrong" } else { PASS };
        let r = h.auth(c, "SCRAM-SHA-256", user, pass);
        assert_eq!(r.name, "failure");
        assert!(r.get_child("not-authorized", ns::SASL).is_some());
        let raw = h.clients[&c].raw[before..].to_string();
        // The challenge differs (nonce, salt); the failure is the same bytes.
        answers.push(raw[raw.rfind("<failure").unwrap()..].to_string());
    }
    assert_eq!(answers[0], answers[1]);
    // PLAIN too.
    for user in ["alice", "mallory"] {
        let (c, _) = h.open_to_sasl();
        let r = h.auth(c, "PLAIN", user, "nope");
        assert!(r.get_child("not-authorized", ns::SASL).is_some());
    }
    assert_eq!(h.server.stats().auth_failures, 4);
    assert_eq!(h.server.stats().auth_successes, 0);
}

/// A database failure during login is the server's trouble, not the client's password:
/// `temporary-auth-failure` (RFC 6120 section 6.5.12), not counted as a failed guess,
/// and the client may try again on the same stream.
#[test]
fn account_lookup_failure_is_a_temporary_auth_failure() {
    let mut h = Harness::new();
    let (c, _) = h.open_to_sasl();
    h.fail_accounts = true;
    let r = h.auth(c, "PLAIN", "alice", PASS);
    assert_eq!(r.name, "failure");
    assert!(
        r.get_child("temporary-auth-failure", ns::SASL).is_some(),
        "{r:?}"
    );
    assert_eq!(h.server.stats().auth_failures, 0);
    h.fail_accounts = false;
    assert_eq!(h.auth(c, "PLAIN", "alice", PASS).name, "success");
}

#[test]
fn stanza_before_auth_is_not_authorized() {
    let mut h = Harness::new();
    let (c, _) = h.open_to_sasl();
    h.send(c, &msg("bob@example.org", "hi"));
    assert_eq!(h.stream_error(c), "not-authorized");
    assert_eq!(h.server.stats().stream_errors, 1);
    // Before TLS too.
    let c = h.open(ConnKind::C2sStartTls);
    h.header(c);
    h.take(c);
    h.send(
        c,
        "<iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>",
    );
    assert_eq!(h.stream_error(c), "not-authorized");
    // Authenticated but not bound.
    let (c, _) = h.open_to_sasl();
    assert_eq!(h.auth(c, "SCRAM-SHA-1", "alice", PASS).name, "success");
    h.header(c);
    h.take(c);
    h.send(c, "<presence/>");
    assert_eq!(h.stream_error(c), "not-authorized");
}

#[test]
fn host_unknown_and_bad_headers() {
    let mut h = Harness::new();
    let c = h.open(ConnKind::C2sStartTls);
    h.send(c, "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='other.org' version='1.0'>");
    assert_eq!(h.clients[&c].headers, 1, "our header comes first");
    assert_eq!(h.stream_error(c), "host-unknown");

    let c = h.open(ConnKind::C2sStartTls);
    h.send(c, "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>");
    assert_eq!(h.stream_error(c), "invalid-namespace");

    let c = h.open(ConnKind::C2sStartTls);
    h.send(c, "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='example.org' version='1.0'>");
    assert_eq!(h.stream_error(c), "invalid-namespace");

    let c = h.open(ConnKind::C2sStartTls);
    h.send(c, "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org'>");
    assert_eq!(h.stream_error(c), "unsupported-version");

    let c = h.open(ConnKind::C2sStartTls);
    h.send(c, "<!DOCTYPE foo [<!ENTITY x 'y'>]><stream:stream>");
    assert_eq!(h.stream_error(c), "restricted-xml");

    let c = h.open(ConnKind::C2sStartTls);
    h.header(c);
    h.take(c);
    h.send(c, "<foo xmlns='urn:x'/>");
    assert_eq!(h.stream_error(c), "unsupported-stanza-type");
}

#[test]
fn bad_namespaces_and_addresses_after_bind() {
    let mut h = Harness::new();
    let c = h.login("alice", "a");
    h.send(
        c,
        "<message xmlns='jabber:server' to='bob@example.org'><body>x</body></message>",
    );
    assert_eq!(h.stream_error(c), "invalid-namespace");

    let c = h.login("alice", "a");
    h.send(
        c,
        "<message from='bob@example.org/x' to='carol@example.org'><body>x</body></message>",
    );
    assert_eq!(h.stream_error(c), "invalid-from");

    let c = h.login("alice", "a");
    h.send(c, "<message to='a@b@c' id='j'><body>x</body></message>");
    assert_eq!(stanza_error(&h.one(c)), "jid-malformed");
    h.send(
        c,
        "<message to='bob@example.org' type='bogus' id='t'><body>x</body></message>",
    );
    assert_eq!(stanza_error(&h.one(c)), "bad-request");
    // Not-well-formed input maps to its condition.
    h.send(c, "<message><body>x</message>");
    assert_eq!(h.stream_error(c), "not-well-formed");
}

#[test]
fn oversized_stanza_is_policy_violation() {
    let mut cfg = config();
    cfg.limits.max_stanza_bytes = 1024;
    let mut h = Harness::with(cfg);
    let c = h.login("alice", "a");
    let big = "x".repeat(2000);
    h.send(c, &msg("bob@example.org", &big));
    assert_eq!(h.stream_error(c), "policy-violation");
}

#[test]
fn rate_limit_reports_pause_then_policy_violation() {
    let mut cfg = config();
    cfg.c2s_rate = 1000;
    cfg.limits.max_stanza_bytes = 1000;
    let mut h = Harness::with(cfg);
    let c = h.login("alice", "a");
    h.advance(Duration::from_secs(10));
    let m = format!(
        "<message to='alice@example.org'><body>{}</body></message>",
        "y".repeat(800)
    );
    h.send(c, &m);
    h.send(c, &m);
    h.send(c, &m);
    assert!(!h.closed(c), "{}", h.clients[&c].raw);
    assert!(h.server.read_paused_until(c).is_some());
    for _ in 0..5 {
        h.send(c, &m);
    }
    assert_eq!(h.stream_error(c), "policy-violation");
}

#[test]
fn negotiation_timeout() {
    let mut h = Harness::new();
    let c = h.open(ConnKind::C2sStartTls);
    h.send(c, "<stream:stream xmlns='jabber:client'");
    h.advance(Duration::from_secs(31));
    assert_eq!(h.stream_error(c), "connection-timeout");
    // A bound session is not affected.
    let c = h.login("alice", "a");
    h.advance(Duration::from_secs(60));
    assert!(!h.closed(c));
}

#[test]
fn bind_conflict_kicks_the_old_session_and_generates_resources() {
    let mut h = Harness::new();
    let old = h.login("alice", "phone");
    let new = h.login("alice", "phone");
    assert_eq!(h.stream_error(old), "conflict");
    assert!(!h.closed(new));
    // No resource asked: the server makes one.
    let (c, _) = h.open_to_sasl();
    h.auth(c, "SCRAM-SHA-256", "alice", PASS);
    h.header(c);
    h.take(c);
    h.send(
        c,
        &format!("<iq type='set' id='b'><bind xmlns='{}'/></iq>", ns::BIND),
    );
    let r = h.one(c);
    let jid = r
        .get_child("bind", ns::BIND)
        .unwrap()
        .get_child("jid", ns::BIND)
        .unwrap()
        .text();
    let jid = Jid::parse(&jid).unwrap();
    assert_eq!(jid.bare().to_string(), "alice@example.org");
    assert!(!jid.resource().unwrap().is_empty());
}

#[test]
fn server_iq_disco_ping_and_unknown_payloads() {
    let mut h = Harness::new();
    let c = h.login("alice", "a");
    h.send(c, "<iq type='get' id='d' to='example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let r = h.one(c);
    let q = r
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let id = q.elements().find(|e| e.name == "identity").unwrap();
    assert_eq!(id.get_attr("category"), Some("server"));
    assert_eq!(id.get_attr("type"), Some("im"));
    let features: Vec<&str> = q.elements().filter_map(|e| e.get_attr("var")).collect();
    for f in [
        "urn:xmpp:ping",
        NS_CARBONS,
        NS_BLOCKING,
        "http://jabber.org/protocol/disco#info",
    ] {
        assert!(features.contains(&f), "{f} in {features:?}");
    }
    h.send(c, "<iq type='get' id='i' to='example.org'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    let r = h.one(c);
    let items: Vec<&str> = r
        .elements()
        .next()
        .unwrap()
        .elements()
        .filter_map(|e| e.get_attr("jid"))
        .collect();
    assert_eq!(items, ["conference.example.org"]);
    h.send(
        c,
        "<iq type='get' id='p' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    let r = h.one(c);
    assert_eq!(r.get_attr("type"), Some("result"));
    assert_eq!(r.get_attr("id"), Some("p"));
    h.send(
        c,
        "<iq type='get' id='u' to='example.org'><query xmlns='urn:unknown'/></iq>",
    );
    assert_eq!(stanza_error(&h.one(c)), "service-unavailable");
    h.send(
        c,
        "<iq type='get' id='f' to='example.org'><other xmlns='urn:xmpp:ping'/></iq>",
    );
    assert_eq!(stanza_error(&h.one(c)), "feature-not-implemented");
    h.send(c, "<iq type='get' id='two' to='example.org'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(stanza_error(&h.one(c)), "bad-request");
    // Remote domains, and the MUC service (tests/muc.rs) answering for itself.
    h.send(c, &msg("someone@elsewhere.net", "x"));
    let e = h.one(c);
    assert_eq!(stanza_error(&e), "remote-server-not-found");
    assert_eq!(e.get_attr("from"), Some("someone@elsewhere.net"));
    h.send(c, "<iq type='get' id='m' to='conference.example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let r = h.one(c);
    assert_eq!(r.get_attr("type"), Some("result"));
    assert_eq!(r.get_attr("from"), Some("conference.example.org"));
}

// ---- routing ----

#[test]
fn messages_iq_and_presence_between_two_sessions() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    h.send(a, &msg("bob@example.org/b", "hello"));
    let m = h.one(b);
    assert_eq!(body(&m).as_deref(), Some("hello"));
    assert_eq!(m.get_attr("from"), Some("alice@example.org/a"));
    assert_eq!(m.get_attr("to"), Some("bob@example.org/b"));
    // iq between full JIDs, result routed back.
    h.send(
        a,
        "<iq type='get' id='v1' to='bob@example.org/b'><query xmlns='jabber:iq:version'/></iq>",
    );
    let iq = h.one(b);
    assert_eq!(iq.get_attr("from"), Some("alice@example.org/a"));
    h.send(b, "<iq type='result' id='v1' to='alice@example.org/a'/>");
    let r = h.one(a);
    assert_eq!(r.get_attr("type"), Some("result"));
    assert_eq!(r.get_attr("from"), Some("bob@example.org/b"));
    // iq to an offline full JID: service-unavailable.
    h.send(
        a,
        "<iq type='get' id='v2' to='bob@example.org/gone'><query xmlns='jabber:iq:version'/></iq>",
    );
    assert_eq!(stanza_error(&h.one(a)), "service-unavailable");
    // Directed presence reaches the resource; its unavailable follows at logout.
    h.send(
        a,
        "<presence to='bob@example.org/b'><show>away</show></presence>",
    );
    let p = h.one(b);
    assert_eq!(p.name, "presence");
    assert_eq!(p.get_attr("from"), Some("alice@example.org/a"));
    h.send(a, "</stream:stream>");
    assert!(h.clients[&a].ended && h.closed(a));
    let p = h.one(b);
    assert_eq!(p.get_attr("type"), Some("unavailable"));
    // Message to a user that does not exist.
    h.send(b, &msg("nobody@example.org", "x"));
    assert_eq!(stanza_error(&h.one(b)), "service-unavailable");
}

#[test]
fn bare_jid_messages_follow_priority() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b1 = h.online("bob", "one", 5);
    let b2 = h.online("bob", "two", 1);
    h.take(b1);
    h.send(a, &msg("bob@example.org", "to-bare"));
    assert_eq!(body(&h.one(b1)).as_deref(), Some("to-bare"));
    assert!(h.take(b2).is_empty());
    // Same priority: both get it.
    h.send(b2, "<presence><priority>5</priority></presence>");
    h.take(b1);
    h.take(b2);
    h.send(a, &msg("bob@example.org", "tie"));
    assert_eq!(body(&h.one(b1)).as_deref(), Some("tie"));
    assert_eq!(body(&h.one(b2)).as_deref(), Some("tie"));
    // Full JID: that resource only, even with a lower priority.
    h.send(b2, "<presence><priority>-1</priority></presence>");
    h.take(b1);
    h.take(b2);
    h.send(a, &msg("bob@example.org/two", "full"));
    assert_eq!(body(&h.one(b2)).as_deref(), Some("full"));
    assert!(h.take(b1).is_empty());
    // A full JID that is not online is treated as the bare JID.
    h.send(a, &msg("bob@example.org/nope", "fallback"));
    assert_eq!(body(&h.one(b1)).as_deref(), Some("fallback"));
    // Headline: every non-negative resource.
    h.send(
        a,
        "<message to='bob@example.org' type='headline'><body>news</body></message>",
    );
    assert_eq!(h.take(b1).len(), 1);
    assert!(h.take(b2).is_empty());
    // Groupchat to a bare JID is an error.
    h.send(
        a,
        "<message to='bob@example.org' type='groupchat' id='g'><body>x</body></message>",
    );
    assert_eq!(stanza_error(&h.one(a)), "service-unavailable");
}

// ---- roster and presence ----

fn roster_push_item(e: &Element) -> (String, Element) {
    assert_eq!(e.name, "iq");
    assert_eq!(e.get_attr("type"), Some("set"));
    let q = e.get_child("query", ns::ROSTER).unwrap();
    (
        q.get_attr("ver").unwrap_or_default().to_string(),
        q.elements().next().unwrap().clone(),
    )
}

/// A roster change whose store fails is refused, and memory goes back to what the
/// database holds: the next roster get shows neither the item nor a new version
/// (hardening issue: in-memory state follows only what committed).
#[test]
fn failed_roster_store_leaves_the_committed_roster() {
    let mut h = Harness::new();
    let a = h.online("alice", "one", 0);
    h.take(a);
    h.hold_stores = true;
    h.send(
        a,
        "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@example.org' name='Bob'/></query></iq>",
    );
    assert!(h.take(a).is_empty(), "result waits for the store");
    let (id, _) = h.stores.pop().expect("a store order");
    h.hold_stores = false;
    h.server
        .handle_stored(h.now, id, Err(xmpp_proto::server::StoreFailed));
    h.settle();
    let v = h.take(a);
    let error = v
        .iter()
        .find(|e| e.get_attr("id") == Some("s1"))
        .expect("answer");
    assert_eq!(error.get_attr("type"), Some("error"));
    assert_eq!(stanza_error(error), "internal-server-error");

    h.send(
        a,
        "<iq type='get' id='g1'><query xmlns='jabber:iq:roster' ver=''/></iq>",
    );
    let r = h.one(a);
    let q = r.get_child("query", ns::ROSTER).unwrap();
    assert_eq!(q.elements().count(), 0, "the failed item is gone: {r:?}");
    assert_eq!(q.get_attr("ver"), Some("0"));
}

/// A subscription request changes the sender's roster with nobody waiting for the
/// store; when that store fails, the pending-out item is dropped from memory too.
#[test]
fn failed_unacknowledged_store_is_undone_in_memory() {
    let mut h = Harness::new();
    let a = h.online("alice", "one", 0);
    h.take(a);
    h.hold_stores = true;
    h.send(a, "<presence to='bob@example.org' type='subscribe'/>");
    let held = std::mem::take(&mut h.stores);
    assert!(!held.is_empty(), "the subscription is written");
    h.hold_stores = false;
    for (id, _) in held {
        h.server
            .handle_stored(h.now, id, Err(xmpp_proto::server::StoreFailed));
    }
    h.settle();
    h.take(a);
    h.send(
        a,
        "<iq type='get' id='g1'><query xmlns='jabber:iq:roster' ver=''/></iq>",
    );
    let r = h.one(a);
    let q = r.get_child("query", ns::ROSTER).unwrap();
    assert_eq!(
        q.elements().count(),
        0,
        "nothing of the failed write: {r:?}"
    );
}

#[test]
fn roster_set_push_and_versioning() {
    let mut h = Harness::new();
    let a1 = h.online("alice", "one", 0);
    let a2 = h.online("alice", "two", 0);
    h.take(a1);
    h.send(
        a1,
        "<iq type='get' id='g0'><query xmlns='jabber:iq:roster' ver=''/></iq>",
    );
    let r = h.one(a1);
    let q = r.get_child("query", ns::ROSTER).unwrap();
    assert_eq!(q.get_attr("ver"), Some("0"));
    assert_eq!(q.elements().count(), 0);

    h.hold_stores = true;
    h.send(
        a1,
        "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@example.org' name='Bob'><group>Friends</group></item></query></iq>",
    );
    assert!(h.take(a1).is_empty(), "result waits for the store");
    assert!(h.take(a2).is_empty());
    h.hold_stores = false;
    h.release_stores();
    let v = h.take(a1);
    assert_eq!(v.len(), 2, "{v:#?}");
    let (ver, item) = roster_push_item(&v[0]);
    assert_eq!(ver, "1");
    assert_eq!(item.get_attr("jid"), Some("bob@example.org"));
    assert_eq!(item.get_attr("name"), Some("Bob"));
    assert_eq!(item.get_attr("subscription"), Some("none"));
    assert_eq!(v[1].get_attr("id"), Some("s1"));
    assert_eq!(v[1].get_attr("type"), Some("result"));
    let (ver2, _) = roster_push_item(&h.one(a2));
    assert_eq!(ver2, "1");

    // Current version: empty result.
    h.send(
        a1,
        "<iq type='get' id='g1'><query xmlns='jabber:iq:roster' ver='1'/></iq>",
    );
    let r = h.one(a1);
    assert_eq!(r.get_attr("type"), Some("result"));
    assert!(r.elements().next().is_none());
    // Older version: the whole roster.
    h.send(
        a1,
        "<iq type='get' id='g2'><query xmlns='jabber:iq:roster' ver='0'/></iq>",
    );
    let r = h.one(a1);
    let q = r.get_child("query", ns::ROSTER).unwrap();
    assert_eq!(q.get_attr("ver"), Some("1"));
    assert_eq!(q.elements().count(), 1);

    // Bad sets.
    h.send(a1, "<iq type='set' id='bad'><query xmlns='jabber:iq:roster'><item jid='x@example.org'><group/></item></query></iq>");
    assert_eq!(stanza_error(&h.one(a1)), "not-acceptable");
    h.send(a1, "<iq type='set' id='bad2'><query xmlns='jabber:iq:roster'><item jid='x@example.org'/><item jid='y@example.org'/></query></iq>");
    assert_eq!(stanza_error(&h.one(a1)), "bad-request");
    h.send(a1, "<iq type='set' id='rm0'><query xmlns='jabber:iq:roster'><item jid='x@example.org' subscription='remove'/></query></iq>");
    assert_eq!(stanza_error(&h.one(a1)), "item-not-found");

    // Survives a logout: reloaded from the store.
    h.send(a1, "</stream:stream>");
    h.send(a2, "</stream:stream>");
    h.advance(Duration::from_secs(120));
    let a = h.login("alice", "three");
    h.send(
        a,
        "<iq type='get' id='g3'><query xmlns='jabber:iq:roster' ver='1'/></iq>",
    );
    assert!(h.one(a).elements().next().is_none());
    h.send(
        a,
        "<iq type='get' id='g4'><query xmlns='jabber:iq:roster'/></iq>",
    );
    let r = h.one(a);
    let item = r
        .get_child("query", ns::ROSTER)
        .unwrap()
        .elements()
        .next()
        .unwrap()
        .clone();
    assert_eq!(item.get_attr("name"), Some("Bob"));
    assert_eq!(
        item.get_child("group", ns::ROSTER).unwrap().text(),
        "Friends"
    );

    // Remove.
    h.send(a, "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='bob@example.org' subscription='remove'/></query></iq>");
    let v = h.take(a);
    let (ver, item) = roster_push_item(&v[0]);
    assert_eq!(ver, "2");
    assert_eq!(item.get_attr("subscription"), Some("remove"));
    assert_eq!(v[1].get_attr("type"), Some("result"));
}

#[test]
fn subscription_handshake_and_presence_broadcast() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);

    // Alice asks.
    h.send(a, "<presence to='bob@example.org' type='subscribe'/>");
    let (_, item) = roster_push_item(&h.one(a));
    assert_eq!(item.get_attr("ask"), Some("subscribe"));
    assert_eq!(item.get_attr("subscription"), Some("none"));
    let req = h.one(b);
    assert_eq!(req.get_attr("type"), Some("subscribe"));
    assert_eq!(req.get_attr("from"), Some("alice@example.org"));

    // Bob approves: his roster gets alice 'from', alice's becomes 'to' and she gets
    // bob's presence.
    h.send(b, "<presence to='alice@example.org' type='subscribed'/>");
    let (_, item) = roster_push_item(&h.one(b));
    assert_eq!(item.get_attr("subscription"), Some("from"));
    let v = h.take(a);
    assert_eq!(v.len(), 3, "{v:#?}");
    let (_, item) = roster_push_item(&v[0]);
    assert_eq!(item.get_attr("subscription"), Some("to"));
    assert!(item.get_attr("ask").is_none());
    assert_eq!(v[1].get_attr("type"), Some("subscribed"));
    assert_eq!(v[2].name, "presence");
    assert_eq!(v[2].get_attr("from"), Some("bob@example.org/b"));
    assert!(v[2].get_attr("type").is_none());

    // And back.
    h.send(b, "<presence to='alice@example.org' type='subscribe'/>");
    h.take(b);
    assert_eq!(h.one(a).get_attr("type"), Some("subscribe"));
    h.send(a, "<presence to='bob@example.org' type='subscribed'/>");
    let (_, item) = roster_push_item(&h.one(a));
    assert_eq!(item.get_attr("subscription"), Some("both"));
    let v = h.take(b);
    let (_, item) = roster_push_item(&v[0]);
    assert_eq!(item.get_attr("subscription"), Some("both"));

    // Presence updates now reach the contact.
    h.send(a, "<presence><show>dnd</show></presence>");
    let p = h.one(b);
    assert_eq!(p.get_child("show", ns::CLIENT).unwrap().text(), "dnd");
    assert_eq!(p.get_attr("from"), Some("alice@example.org/a"));
    h.take(a);

    // A new resource of bob gets alice's presence through the probe.
    let b2 = h.login("bob", "b2");
    h.send(b2, "<presence/>");
    let v = h.take(b2);
    assert!(
        v.iter()
            .any(|p| p.get_attr("from") == Some("alice@example.org/a")),
        "{v:#?}"
    );
    assert!(v
        .iter()
        .any(|p| p.get_attr("from") == Some("bob@example.org/b")));
    h.take(a);
    h.take(b);

    // Connection lost: contacts see alice go.
    h.drop_conn(a);
    let p = h.one(b);
    assert_eq!(p.get_attr("type"), Some("unavailable"));
    assert_eq!(p.get_attr("from"), Some("alice@example.org/a"));
    assert_eq!(h.one(b2).get_attr("type"), Some("unavailable"));

    // Bob cancels: alice loses 'from' (next login shows 'to').
    h.send(b, "<presence to='alice@example.org' type='unsubscribed'/>");
    let (_, item) = roster_push_item(&h.one(b));
    assert_eq!(item.get_attr("subscription"), Some("to"));
    let a = h.login("alice", "a");
    h.send(
        a,
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    );
    let r = h.one(a);
    let item = r
        .get_child("query", ns::ROSTER)
        .unwrap()
        .elements()
        .next()
        .unwrap()
        .clone();
    assert_eq!(item.get_attr("subscription"), Some("from"));
}

#[test]
fn subscription_request_to_offline_user_is_kept() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    h.send(
        a,
        "<presence to='carol@example.org' type='subscribe'><status>hi</status></presence>",
    );
    h.take(a);
    let c = h.online("carol", "c", 0);
    // `online` took the inbox; log in again to see it delivered at initial presence.
    let _ = c;
    let c2 = h.login("carol", "c2");
    h.send(c2, "<presence/>");
    let v = h.take(c2);
    assert!(
        v.iter().any(|p| p.get_attr("type") == Some("subscribe")
            && p.get_attr("from") == Some("alice@example.org")),
        "{v:#?}"
    );
    // Not in carol's roster until she answers.
    h.send(
        c2,
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    );
    assert_eq!(
        h.one(c2)
            .get_child("query", ns::ROSTER)
            .unwrap()
            .elements()
            .count(),
        0
    );
    // Subscribe to a user that does not exist: unsubscribed comes back.
    h.send(a, "<presence to='ghost@example.org' type='subscribe'/>");
    let v = h.take(a);
    assert!(
        v.iter().any(|p| p.get_attr("type") == Some("unsubscribed")),
        "{v:#?}"
    );
}

// ---- offline storage and durability ----

#[test]
fn offline_messages_are_acked_only_when_stored_and_delivered_at_login() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    h.send(a, &format!("<enable xmlns='{NS_SM}' resume='true'/>"));
    assert_eq!(h.one(a).name, "enabled");
    h.hold_stores = true;
    h.send(a, &msg("bob@example.org", "one"));
    h.send(a, &msg("bob@example.org", "two"));
    h.send(a, &format!("<r xmlns='{NS_SM}'/>"));
    assert!(h.take(a).is_empty(), "no ack before the store is durable");
    h.hold_stores = false;
    let held = std::mem::take(&mut h.stores);
    assert_eq!(held.len(), 2);
    let (id, ops) = held[0].clone();
    h.commit(id, ops);
    h.settle();
    let ack = h.one(a);
    assert_eq!(ack.name, "a");
    assert_eq!(ack.get_attr("h"), Some("1"), "only the first is durable");
    let (id, ops) = held[1].clone();
    h.commit(id, ops);
    h.settle();
    h.send(a, &format!("<r xmlns='{NS_SM}'/>"));
    assert_eq!(h.one(a).get_attr("h"), Some("2"));
    assert_eq!(h.server.stats().offline_stored, 2);

    // Bob logs in: nothing before initial presence, then both with a delay stamp.
    let b = h.login("bob", "b");
    assert!(h.take(b).is_empty());
    h.send(b, "<presence/>");
    let v: Vec<Element> = h
        .take(b)
        .into_iter()
        .filter(|e| e.name == "message")
        .collect();
    assert_eq!(v.len(), 2);
    assert_eq!(body(&v[0]).as_deref(), Some("one"));
    assert_eq!(body(&v[1]).as_deref(), Some("two"));
    let delay = v[0].get_child("delay", "urn:xmpp:delay").unwrap();
    assert_eq!(delay.get_attr("from"), Some(HOST));
    assert!(delay
        .get_attr("stamp")
        .unwrap()
        .starts_with("2023-11-14T22:13"));
    // Delivered without SM: deleted.
    assert!(!h.db.keys().any(|(_, u, s, _)| u == "bob" && s == "offline"));

    // Cap: offline_max = 3, the fourth is bounced.
    h.send(b, "</stream:stream>");
    for i in 0..4 {
        h.send(a, &msg("carol@example.org", &format!("c{i}")));
    }
    let v = h.take(a);
    let errors: Vec<&Element> = v.iter().filter(|e| e.name == "message").collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(stanza_error(errors[0]), "service-unavailable");
}

#[test]
fn offline_messages_under_sm_are_deleted_only_when_acked() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    h.send(a, &msg("bob@example.org", "kept"));
    let b = h.login("bob", "b");
    h.send(b, &format!("<enable xmlns='{NS_SM}'/>"));
    h.take(b);
    h.send(b, "<presence/>");
    assert!(h.take(b).iter().any(|e| body(e).as_deref() == Some("kept")));
    assert!(h.db.keys().any(|(_, u, s, _)| u == "bob" && s == "offline"));
    // Connection lost before acking (no resumption): still stored.
    h.drop_conn(b);
    assert!(h.db.keys().any(|(_, u, s, _)| u == "bob" && s == "offline"));
    // Next session acks it: gone.
    let b = h.login("bob", "b");
    h.send(b, &format!("<enable xmlns='{NS_SM}'/>"));
    h.take(b);
    h.send(b, "<presence/>");
    let v = h.take(b);
    assert!(v.iter().any(|e| body(e).as_deref() == Some("kept")));
    let n = v
        .iter()
        .filter(|e| ["message", "presence", "iq"].contains(&e.name.as_str()))
        .count();
    h.send(b, &format!("<a xmlns='{NS_SM}' h='{n}'/>"));
    assert!(!h.db.keys().any(|(_, u, s, _)| u == "bob" && s == "offline"));
}

// ---- XEP-0198 ----

#[test]
fn sm_counts_and_resumes_after_a_dropped_connection() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.login("bob", "b");
    h.send(b, &format!("<enable xmlns='{NS_SM}' resume='true'/>"));
    let en = h.one(b);
    assert_eq!(en.get_attr("resume"), Some("true"));
    assert_eq!(en.get_attr("max"), Some("300"));
    let previd = en.get_attr("id").unwrap().to_string();
    h.send(b, "<presence/>");
    h.take(b);
    // Inbound counting.
    h.send(
        b,
        "<iq type='get' id='p' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    h.send(b, &format!("<r xmlns='{NS_SM}'/>"));
    let v = h.take(b);
    let a_el = v.iter().find(|e| e.name == "a").unwrap();
    assert_eq!(a_el.get_attr("h"), Some("2"));

    // Outbound: the server asks for acks.
    h.send(a, &msg("bob@example.org/b", "m1"));
    let raw = h.clients[&b].raw.clone();
    assert!(raw.contains(&format!("<r xmlns='{NS_SM}'/>")), "{raw}");
    h.send(a, &msg("bob@example.org/b", "m2"));
    // So far bob got: presence echo (1), ping result (2), m1 (3), m2 (4).
    h.take(b);
    h.send(b, &format!("<a xmlns='{NS_SM}' h='3'/>"));
    // Too high an h is an error, tested on another session below.

    h.drop_conn(b);
    // Still available: alice's message is queued.
    h.send(a, &msg("bob@example.org", "m3"));
    assert!(h.take(a).is_empty());

    let (c, _) = h.open_to_sasl();
    assert_eq!(h.auth(c, "SCRAM-SHA-256", "bob", PASS).name, "success");
    h.header(c);
    h.take(c);
    h.send(
        c,
        &format!("<resume xmlns='{NS_SM}' previd='{previd}' h='3'/>"),
    );
    let v = h.take(c);
    assert_eq!(v[0].name, "resumed");
    assert_eq!(v[0].get_attr("h"), Some("2"));
    let bodies: Vec<String> = v.iter().filter_map(body).collect();
    assert_eq!(bodies, ["m2", "m3"]);
    // The resumed session works.
    h.send(c, &msg("alice@example.org/a", "back"));
    assert_eq!(body(&h.one(a)).as_deref(), Some("back"));

    // A resumption id is single-use per user: another user cannot take it.
    let (x, _) = h.open_to_sasl();
    h.auth(x, "SCRAM-SHA-256", "carol", PASS);
    h.header(x);
    h.take(x);
    h.send(
        x,
        &format!("<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>"),
    );
    let f = h.one(x);
    assert_eq!(f.name, "failed");
    assert!(f.get_child("item-not-found", ns::STANZAS).is_some());

    // Acknowledging more than was sent.
    h.send(c, &format!("<a xmlns='{NS_SM}' h='99'/>"));
    assert_eq!(h.stream_error(c), "undefined-condition");
}

#[test]
fn hibernation_timeout_moves_unacked_messages_offline() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.login("bob", "b");
    h.send(b, &format!("<enable xmlns='{NS_SM}' resume='true'/>"));
    h.send(b, "<presence/>");
    h.send(b, &format!("<a xmlns='{NS_SM}' h='1'/>"));
    // Sent on the live connection, never acknowledged.
    h.send(a, &msg("bob@example.org", "unacked"));
    assert_eq!(h.take(b).iter().filter_map(body).count(), 1);
    h.drop_conn(b);
    h.send(a, &msg("bob@example.org", "while-away"));
    // Written at once (see the next test), kept when the session is given up.
    assert!(h.db.keys().any(|(_, u, s, _)| u == "bob" && s == "offline"));
    h.take(a);
    h.advance(Duration::from_secs(301));
    assert_eq!(h.server.stats().sessions, 1);
    let stored: Vec<&String> =
        h.db.iter()
            .filter(|((_, u, s, _), _)| u == "bob" && s == "offline")
            .map(|(_, v)| v)
            .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    // Next login gets both, once.
    let b = h.login("bob", "b");
    h.send(b, "<presence/>");
    let mut bodies: Vec<String> = h.take(b).iter().filter_map(body).collect();
    bodies.sort();
    assert_eq!(bodies, ["unacked", "while-away"]);
}

// ---- carbons, CSI, blocking ----

#[test]
fn carbons_between_two_resources() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b1 = h.online("bob", "one", 0);
    let b2 = h.online("bob", "two", 0);
    h.take(b1);
    for c in [b1, b2] {
        h.send(
            c,
            &format!("<iq type='set' id='c'><enable xmlns='{NS_CARBONS}'/></iq>"),
        );
        assert_eq!(h.one(c).get_attr("type"), Some("result"));
    }
    // Received copy.
    h.send(a, &msg("bob@example.org/one", "to-one"));
    assert_eq!(body(&h.one(b1)).as_deref(), Some("to-one"));
    let copy = h.one(b2);
    assert_eq!(copy.get_attr("from"), Some("bob@example.org"));
    let fwd = copy
        .get_child("received", NS_CARBONS)
        .unwrap()
        .get_child("forwarded", "urn:xmpp:forward:0")
        .unwrap()
        .get_child("message", ns::CLIENT)
        .unwrap();
    assert_eq!(body(fwd).as_deref(), Some("to-one"));
    // Sent copy.
    h.send(b1, &msg("alice@example.org/a", "reply"));
    assert_eq!(body(&h.one(a)).as_deref(), Some("reply"));
    let copy = h.one(b2);
    assert!(copy.get_child("sent", NS_CARBONS).is_some());
    assert!(h.take(b1).is_empty());
    // Private: no copy.
    h.send(b1, &format!("<message to='alice@example.org/a' type='chat'><body>p</body><private xmlns='{NS_CARBONS}'/></message>"));
    h.take(a);
    assert!(h.take(b2).is_empty());
    // Disabled: no copy.
    h.send(
        b2,
        &format!("<iq type='set' id='d'><disable xmlns='{NS_CARBONS}'/></iq>"),
    );
    h.take(b2);
    h.send(a, &msg("bob@example.org/one", "again"));
    h.take(b1);
    assert!(h.take(b2).is_empty());
}

#[test]
fn csi_holds_presence_until_active() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    h.send(b, "<inactive xmlns='urn:xmpp:csi:0'/>");
    h.send(
        a,
        "<presence to='bob@example.org/b'><show>away</show></presence>",
    );
    h.send(
        a,
        "<presence to='bob@example.org/b'><show>xa</show></presence>",
    );
    assert!(h.take(b).is_empty());
    // A message flushes the latest presence first.
    h.send(a, &msg("bob@example.org/b", "wake"));
    let v = h.take(b);
    assert_eq!(names(&v), ["presence", "message"]);
    assert_eq!(v[0].get_child("show", ns::CLIENT).unwrap().text(), "xa");
    h.send(
        a,
        "<presence to='bob@example.org/b'><show>chat</show></presence>",
    );
    assert!(h.take(b).is_empty());
    h.send(b, "<active xmlns='urn:xmpp:csi:0'/>");
    assert_eq!(
        h.one(b).get_child("show", ns::CLIENT).unwrap().text(),
        "chat"
    );
}

#[test]
fn blocking_drops_both_ways_and_pushes() {
    let mut h = Harness::new();
    let a1 = h.online("alice", "one", 0);
    let a2 = h.online("alice", "two", 0);
    let b = h.online("bob", "b", 0);
    h.take(a1);
    h.send(
        a2,
        &format!("<iq type='get' id='bl'><blocklist xmlns='{NS_BLOCKING}'/></iq>"),
    );
    assert_eq!(
        h.one(a2)
            .get_child("blocklist", NS_BLOCKING)
            .unwrap()
            .elements()
            .count(),
        0
    );
    h.hold_stores = true;
    h.send(a1, &format!("<iq type='set' id='blk'><block xmlns='{NS_BLOCKING}'><item jid='bob@example.org'/></block></iq>"));
    assert!(h.take(a1).is_empty(), "answer after the store");
    h.hold_stores = false;
    h.release_stores();
    assert_eq!(h.one(a1).get_attr("type"), Some("result"));
    let push = h.one(a2);
    assert!(push.get_child("block", NS_BLOCKING).is_some());
    // Bob -> alice: refused like an absent user; alice -> bob: blocked error.
    h.send(b, &msg("alice@example.org", "spam"));
    assert_eq!(stanza_error(&h.one(b)), "service-unavailable");
    assert!(h.take(a1).is_empty() && h.take(a2).is_empty());
    h.send(a1, &msg("bob@example.org", "hey"));
    let e = h.one(a1);
    assert_eq!(stanza_error(&e), "not-acceptable");
    assert!(e
        .get_child("error", ns::CLIENT)
        .unwrap()
        .get_child("blocked", "urn:xmpp:blocking:errors")
        .is_some());
    assert!(h.take(b).is_empty());
    // Unblock all.
    h.send(
        a1,
        &format!("<iq type='set' id='ub'><unblock xmlns='{NS_BLOCKING}'/></iq>"),
    );
    assert_eq!(h.one(a1).get_attr("type"), Some("result"));
    assert!(h.one(a2).get_child("unblock", NS_BLOCKING).is_some());
    h.send(b, &msg("alice@example.org/one", "ok now"));
    assert_eq!(body(&h.one(a1)).as_deref(), Some("ok now"));
    // Persisted: the block survived in the store and is gone now.
    assert!(!h.db.keys().any(|(_, _, s, _)| s == "blocklist"));
}

#[test]
fn messages_to_a_hibernating_session_are_stored_before_the_ack() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    h.send(a, &format!("<enable xmlns='{NS_SM}'/>"));
    h.take(a);
    let b = h.login("bob", "b");
    h.send(b, &format!("<enable xmlns='{NS_SM}' resume='true'/>"));
    let previd = h.one(b).get_attr("id").unwrap().to_string();
    h.send(b, "<presence/>");
    h.send(b, &format!("<a xmlns='{NS_SM}' h='1'/>"));
    h.take(b);
    h.drop_conn(b);
    h.hold_stores = true;
    h.send(a, &msg("bob@example.org", "durable"));
    h.send(a, &format!("<r xmlns='{NS_SM}'/>"));
    assert!(h.take(a).is_empty(), "acked only once written");
    h.hold_stores = false;
    h.release_stores();
    assert_eq!(h.one(a).get_attr("h"), Some("1"));
    // A crash now would keep it: it is in the offline store.
    assert!(h.db.keys().any(|(_, u, s, _)| u == "bob" && s == "offline"));
    // Resumed and acknowledged: deleted, delivered once.
    let (c, _) = h.open_to_sasl();
    h.auth(c, "SCRAM-SHA-256", "bob", PASS);
    h.header(c);
    h.take(c);
    h.send(
        c,
        &format!("<resume xmlns='{NS_SM}' previd='{previd}' h='1'/>"),
    );
    let v = h.take(c);
    assert_eq!(v.iter().filter_map(body).collect::<Vec<_>>(), ["durable"]);
    h.send(c, &format!("<a xmlns='{NS_SM}' h='2'/>"));
    assert!(!h.db.keys().any(|(_, u, s, _)| u == "bob" && s == "offline"));
    // Shutdown ends everything with system-shutdown.
    h.server.shutdown(h.now);
    h.settle();
    assert_eq!(h.stream_error(c), "system-shutdown");
    assert_eq!(h.server.stats().sessions, 0);
}

#[test]
fn server_is_send() {
    // The daemon moves the core into a task.
    fn check<T: Send>() {}
    check::<Server>();
}

#[test]
fn resumption_replaces_a_connection_not_yet_seen_dead() {
    let mut h = Harness::new();
    let b = h.login("bob", "b");
    h.send(b, &format!("<enable xmlns='{NS_SM}' resume='true'/>"));
    let previd = h.one(b).get_attr("id").unwrap().to_string();
    let (c, _) = h.open_to_sasl();
    h.auth(c, "SCRAM-SHA-256", "bob", PASS);
    h.header(c);
    h.take(c);
    h.send(
        c,
        &format!("<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>"),
    );
    assert_eq!(h.one(c).name, "resumed");
    // The old connection is closed without an error, the session lives on.
    assert!(h.closed(b) && h.clients[&b].ended);
    h.drop_conn(b);
    assert_eq!(h.server.stats().sessions, 1);
    h.send(
        c,
        "<iq type='get' id='p' to='example.org'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert_eq!(h.one(c).get_attr("type"), Some("result"));
}

// ---- RFC 7395 WebSocket framing ----

#[test]
fn websocket_login_and_chat_with_a_tcp_user() {
    let mut h = Harness::new();
    let b = h.online("bob", "tcp", 0);
    let a = h.open_framed(ConnKind::C2sDirectTls, Framing::WebSocket);
    h.tls(a);
    h.ws_open(a);
    // Section 3.4: `<open/>` answered with `<open/>` (from, id, version), then the
    // features in a message of their own; no STARTTLS over a WebSocket (section 3.9).
    let open = &h.clients[&a].messages[0];
    assert!(
        open.starts_with(&format!("<open xmlns='{NS_FRAMING}' id='")),
        "{open}"
    );
    assert!(open.contains(" from='example.org'") && open.contains(" version='1.0'"));
    assert!(!open.contains("<?xml"), "{open}");
    assert_eq!(h.clients[&a].headers, 1);
    let f = h.one(a);
    assert_eq!((f.name.as_str(), f.ns.as_str()), ("features", ns::STREAM));
    assert!(f.get_child("starttls", ns::TLS).is_none());
    let mechs: Vec<String> = f
        .get_child("mechanisms", ns::SASL)
        .unwrap()
        .elements()
        .map(|m| m.text())
        .collect();
    assert_eq!(mechs[0], "SCRAM-SHA-256-PLUS");
    // SASL, then the restart is a new `<open/>` (section 3.7), then bind.
    assert_eq!(
        h.auth(a, "SCRAM-SHA-256-PLUS", "alice", PASS).name,
        "success"
    );
    h.ws_open(a);
    assert_eq!(h.clients[&a].headers, 2);
    let f = h.one(a);
    assert!(f.get_child("bind", ns::BIND).is_some());
    h.send(
        a,
        &format!(
            "<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='{}'><resource>web</resource></bind></iq>",
            ns::BIND
        ),
    );
    let r = h.one(a);
    assert_eq!(r.get_attr("type"), Some("result"));

    // A message each way between the WebSocket and the TCP user.
    h.send(
        a,
        "<message xmlns='jabber:client' to='bob@example.org/tcp' type='chat'><body>over ws</body></message>",
    );
    let m = h.one(b);
    assert_eq!(body(&m).as_deref(), Some("over ws"));
    assert_eq!(m.get_attr("from"), Some("alice@example.org/web"));
    h.send(b, &msg("alice@example.org/web", "over tcp"));
    let m = h.one(a);
    assert_eq!(body(&m).as_deref(), Some("over tcp"));
    assert_eq!(m.get_attr("from"), Some("bob@example.org/tcp"));
    let last = h.clients[&a].messages.last().unwrap().clone();
    assert!(last.starts_with("<message xmlns='jabber:client'"), "{last}");

    // Section 3.6: `<close/>` is answered with `<close/>`, and the session ends.
    h.send(a, &format!("<close xmlns='{NS_FRAMING}'/>"));
    assert!(h.clients[&a].ended && h.closed(a));
    assert_eq!(
        h.clients[&a].messages.last().unwrap(),
        &format!("<close xmlns='{NS_FRAMING}'/>")
    );
}

#[test]
fn websocket_sm_resumption_sends_one_element_per_message() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.login_ws("bob", "web", "SCRAM-SHA-1-PLUS");
    h.send(b, &format!("<enable xmlns='{NS_SM}' resume='true'/>"));
    let previd = h.one(b).get_attr("id").unwrap().to_string();
    h.send(b, "<presence xmlns='jabber:client'/>");
    h.take(b);
    h.drop_conn(b);
    h.send(a, &msg("bob@example.org/web", "m1"));
    h.send(a, &msg("bob@example.org/web", "m2"));

    let c = h.open_framed(ConnKind::C2sDirectTls, Framing::WebSocket);
    h.tls(c);
    h.ws_open(c);
    h.take(c);
    assert_eq!(h.auth(c, "SCRAM-SHA-256", "bob", PASS).name, "success");
    h.ws_open(c);
    h.take(c);
    let before = h.clients[&c].messages.len();
    h.send(
        c,
        &format!("<resume xmlns='{NS_SM}' previd='{previd}' h='1'/>"),
    );
    let v = h.take(c);
    assert_eq!(v[0].name, "resumed");
    let bodies: Vec<String> = v.iter().filter_map(body).collect();
    assert_eq!(bodies, ["m1", "m2"]);
    // `<resumed/>` and each queued stanza are separate messages (received_message
    // checks each holds exactly one element).
    assert!(h.clients[&c].messages.len() - before >= 3);
}

#[test]
fn websocket_framing_errors_close_with_close() {
    let mut h = Harness::new();
    // A stanza split over two messages (section 3.3.3).
    let c = h.open_framed(ConnKind::C2sDirectTls, Framing::WebSocket);
    h.tls(c);
    h.ws_open(c);
    h.take(c);
    h.send(
        c,
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PL",
    );
    assert_eq!(h.stream_error(c), "not-well-formed");
    let m = &h.clients[&c].messages;
    assert_eq!(m.last().unwrap(), &format!("<close xmlns='{NS_FRAMING}'/>"));
    assert!(
        m[m.len() - 2].starts_with("<stream:error xmlns:stream="),
        "{m:?}"
    );

    // A TCP stream header on a WebSocket: our `<open/>` first (RFC 6120 section
    // 4.9.1.2), then the error and `<close/>`.
    let c = h.open_framed(ConnKind::C2sDirectTls, Framing::WebSocket);
    h.send(
        c,
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>",
    );
    assert_eq!(h.stream_error(c), "not-well-formed");
    assert_eq!(h.clients[&c].headers, 1);

    // An element before `<open/>`, and in place of the restart after SASL.
    let c = h.open_framed(ConnKind::C2sDirectTls, Framing::WebSocket);
    h.tls(c);
    h.send(
        c,
        &format!(
            "<auth xmlns='{}' mechanism='PLAIN'>AGFsaWNl</auth>",
            ns::SASL
        ),
    );
    assert_eq!(h.stream_error(c), "bad-format");
    let c = h.open_framed(ConnKind::C2sDirectTls, Framing::WebSocket);
    h.tls(c);
    h.ws_open(c);
    h.take(c);
    assert_eq!(h.auth(c, "SCRAM-SHA-256", "alice", PASS).name, "success");
    h.send(
        c,
        &format!(
            "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='{}'/></iq>",
            ns::BIND
        ),
    );
    assert_eq!(h.stream_error(c), "bad-format");
    // A second `<open/>` in the middle of a stream.
    let c = h.open_framed(ConnKind::C2sDirectTls, Framing::WebSocket);
    h.tls(c);
    h.ws_open(c);
    h.take(c);
    h.ws_open(c);
    assert_eq!(h.stream_error(c), "bad-format");

    // Unknown host in `<open/>`.
    let c = h.open_framed(ConnKind::C2sDirectTls, Framing::WebSocket);
    h.send(
        c,
        &format!("<open xmlns='{NS_FRAMING}' to='elsewhere.example' version='1.0'/>"),
    );
    assert_eq!(h.stream_error(c), "host-unknown");

    // STARTTLS is never offered nor accepted on a WebSocket (section 3.9).
    let mut cfg = config();
    cfg.require_encryption = false;
    let mut h = Harness::with(cfg);
    let c = h.open_framed(ConnKind::C2sStartTls, Framing::WebSocket);
    h.ws_open(c);
    let f = h.one(c);
    assert!(f.get_child("starttls", ns::TLS).is_none(), "{f:?}");
    h.send(c, &format!("<starttls xmlns='{}'/>", ns::TLS));
    let v = h.take(c);
    assert_eq!(v[0].name, "failure");
    assert!(h.clients[&c].ended && h.closed(c));
    assert!(!h.clients[&c].starttls);
}
