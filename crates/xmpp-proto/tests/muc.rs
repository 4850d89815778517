//! XEP-0045 chat rooms over the server test harness (`common/mod.rs`): raw XML from
//! real client sessions to `conference.example.org`, the room's stanzas as they reach
//! each session, and storage as the daemon would keep it (restarts included).

mod common;

use common::*;

const MUC: &str = "conference.example.org";
const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_DATA: &str = "jabber:x:data";
const NS_DELAY: &str = "urn:xmpp:delay";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

fn room(name: &str) -> String {
    format!("{name}@{MUC}")
}

/// Sends a join presence for `room/nick` with `inner` inside `<x xmlns='.../muc'>`.
fn join(h: &mut Harness, c: ConnId, room_name: &str, nick: &str, inner: &str) {
    h.send(
        c,
        &format!(
            "<presence to='{}/{nick}' id='join-{nick}'><x xmlns='{NS_MUC}'>{inner}</x></presence>",
            room(room_name)
        ),
    );
}

/// Submits the owner configuration form with `fields` (an empty list: instant room).
fn configure(h: &mut Harness, c: ConnId, room_name: &str, fields: &[(&str, &str)]) -> Element {
    let mut form = String::new();
    for (var, value) in fields {
        form.push_str(&format!(
            "<field var='muc#roomconfig_{var}'><value>{value}</value></field>"
        ));
    }
    h.send(
        c,
        &format!(
            "<iq type='set' id='cfg' to='{}'><query xmlns='{NS_MUC_OWNER}'><x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>{form}</x></query></iq>",
            room(room_name)
        ),
    );
    take_iq(h, c)
}

/// The iq answer received, leaving everything else in the inbox.
fn take_iq(h: &mut Harness, c: ConnId) -> Element {
    let v = h.take(c);
    let (iq, rest): (Vec<Element>, Vec<Element>) = v.into_iter().partition(|e| e.name == "iq");
    h.clients.get_mut(&c).unwrap().inbox = rest;
    assert_eq!(iq.len(), 1, "one iq answer: {iq:?}");
    iq.into_iter().next().unwrap()
}

/// Creates `room_name` as `nick` and configures it with `fields`.
fn create(h: &mut Harness, c: ConnId, room_name: &str, nick: &str, fields: &[(&str, &str)]) {
    join(h, c, room_name, nick, "");
    let v = h.take(c);
    let me = v
        .iter()
        .find(|e| e.name == "presence")
        .expect("self-presence");
    assert_eq!(codes(me), ["110", "201"], "{me:?}");
    let r = configure(h, c, room_name, fields);
    assert_eq!(r.get_attr("type"), Some("result"), "{r:?}");
}

fn user_x(e: &Element) -> &Element {
    e.get_child("x", NS_MUC_USER)
        .unwrap_or_else(|| panic!("no muc#user x in {e:?}"))
}

fn codes(e: &Element) -> Vec<String> {
    user_x(e)
        .elements()
        .filter(|s| s.name == "status")
        .map(|s| s.get_attr("code").unwrap().to_string())
        .collect()
}

fn item(e: &Element) -> &Element {
    user_x(e).get_child("item", NS_MUC_USER).unwrap()
}

fn presences(v: &[Element]) -> Vec<&Element> {
    v.iter().filter(|e| e.name == "presence").collect()
}

fn from(e: &Element) -> &str {
    e.get_attr("from").unwrap()
}

fn features(q: &Element) -> Vec<String> {
    q.elements()
        .filter(|f| f.name == "feature")
        .map(|f| f.get_attr("var").unwrap().to_string())
        .collect()
}

fn disco(h: &mut Harness, c: ConnId, to: &str, ns_: &str) -> Element {
    h.send(
        c,
        &format!("<iq type='get' id='disco' to='{to}'><query xmlns='{ns_}'/></iq>"),
    );
    h.one(c)
}

fn groupchat(room_name: &str, id: &str, text: &str) -> String {
    format!(
        "<message to='{}' type='groupchat' id='{id}'><body>{text}</body></message>",
        room(room_name)
    )
}

fn admin_set(h: &mut Harness, c: ConnId, room_name: &str, item: &str) -> Element {
    h.send(
        c,
        &format!(
            "<iq type='set' id='admin' to='{}'><query xmlns='{NS_MUC_ADMIN}'>{item}</query></iq>",
            room(room_name)
        ),
    );
    take_iq(h, c)
}

#[test]
fn create_configure_and_three_occupants_talk() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    let c = h.online("carol", "c", 0);

    // A new room is locked until its owner configures it (section 10.1.1).
    join(&mut h, a, "coven", "crone", "");
    let v = h.take(a);
    assert_eq!(names(&v), ["presence", "message"]);
    let me = &v[0];
    assert_eq!(from(me), "coven@conference.example.org/crone");
    assert_eq!(me.get_attr("id"), Some("join-crone"));
    assert_eq!(codes(me), ["110", "201"]);
    assert_eq!(item(me).get_attr("affiliation"), Some("owner"));
    assert_eq!(item(me).get_attr("role"), Some("moderator"));
    join(&mut h, b, "coven", "hag", "");
    let e = h.one(b);
    assert_eq!(stanza_error(&e), "item-not-found");
    assert!(
        e.get_child("x", NS_MUC).is_some(),
        "the join payload comes back"
    );
    assert_eq!(
        e.get_child("error", ns::CLIENT).unwrap().get_attr("by"),
        Some("coven@conference.example.org")
    );

    // The owner's form (section 10.2), then a submission.
    h.send(
        a,
        &format!(
            "<iq type='get' id='f' to='{}'><query xmlns='{NS_MUC_OWNER}'/></iq>",
            room("coven")
        ),
    );
    let r = h.one(a);
    let form = r
        .get_child("query", NS_MUC_OWNER)
        .unwrap()
        .get_child("x", NS_DATA)
        .unwrap();
    assert_eq!(form.get_attr("type"), Some("form"));
    let vars: Vec<&str> = form.elements().filter_map(|f| f.get_attr("var")).collect();
    for v in [
        "FORM_TYPE",
        "muc#roomconfig_roomname",
        "muc#roomconfig_roomdesc",
        "muc#roomconfig_persistentroom",
        "muc#roomconfig_publicroom",
        "muc#roomconfig_membersonly",
        "muc#roomconfig_passwordprotectedroom",
        "muc#roomconfig_roomsecret",
        "muc#roomconfig_moderatedroom",
        "muc#roomconfig_whois",
        "muc#roomconfig_changesubject",
        "muc#roomconfig_allowinvites",
        "muc#roomconfig_maxusers",
        "muc#roomconfig_historylength",
    ] {
        assert!(vars.contains(&v), "{v} in {vars:?}");
    }
    // Only owners see or change it.
    h.send(
        b,
        &format!(
            "<iq type='get' id='f' to='{}'><query xmlns='{NS_MUC_OWNER}'/></iq>",
            room("coven")
        ),
    );
    assert_eq!(stanza_error(&h.one(b)), "item-not-found");
    let r = configure(
        &mut h,
        a,
        "coven",
        &[("roomname", "The Coven"), ("maxusers", "huge")],
    );
    assert_eq!(stanza_error(&r), "not-acceptable");
    let r = configure(&mut h, a, "coven", &[("roomname", "The Coven")]);
    assert_eq!(r.get_attr("type"), Some("result"));

    // Bob enters: the occupants, then himself (110, no real JIDs in a semi-anonymous
    // room), then the (empty) subject.
    join(&mut h, b, "coven", "hag", "");
    let v = h.take(b);
    assert_eq!(names(&v), ["presence", "presence", "message"]);
    assert_eq!(from(&v[0]), "coven@conference.example.org/crone");
    assert_eq!(item(&v[0]).get_attr("jid"), None);
    assert_eq!(from(&v[1]), "coven@conference.example.org/hag");
    assert_eq!(codes(&v[1]), ["110"]);
    assert_eq!(item(&v[1]).get_attr("role"), Some("participant"));
    assert_eq!(item(&v[1]).get_attr("affiliation"), Some("none"));
    let subject = v[2].get_child("subject", ns::CLIENT).unwrap();
    assert_eq!(subject.text(), "");
    assert_eq!(from(&v[2]), "coven@conference.example.org");
    // The moderator sees Bob's real JID.
    let p = h.one(a);
    assert_eq!(from(&p), "coven@conference.example.org/hag");
    assert_eq!(item(&p).get_attr("jid"), Some("bob@example.org/b"));
    assert!(codes(&p).is_empty());

    // A nick in use (section 7.2.8).
    join(&mut h, c, "coven", "hag", "");
    assert_eq!(stanza_error(&h.one(c)), "conflict");
    join(&mut h, c, "coven", "witch", "");
    assert_eq!(presences(&h.take(c)).len(), 3);
    h.take(a);
    h.take(b);
    let s = h.server.stats();
    assert_eq!((s.rooms, s.occupants), (1, 3));

    // Groupchat: reflected to everyone with the sender's id (section 7.4).
    h.send(
        b,
        &groupchat("coven", "m1", "Thrice the brinded cat hath mew'd."),
    );
    for conn in [a, b, c] {
        let m = h.one(conn);
        assert_eq!(from(&m), "coven@conference.example.org/hag");
        assert_eq!(m.get_attr("type"), Some("groupchat"));
        assert_eq!(m.get_attr("id"), Some("m1"));
        assert_eq!(
            body(&m).as_deref(),
            Some("Thrice the brinded cat hath mew'd.")
        );
    }
    h.send(c, &groupchat("coven", "m2", "Thrice and once"));
    h.send(a, &groupchat("coven", "m3", "the hedge-pig whined"));
    for conn in [a, b, c] {
        let v = h.take(conn);
        let got: Vec<Option<String>> = v.iter().map(body).collect();
        assert_eq!(
            got,
            [
                Some("Thrice and once".into()),
                Some("the hedge-pig whined".into())
            ]
        );
    }
    // Not an occupant: not-acceptable.
    let d = h.online("dave", "d", 0);
    h.send(d, &groupchat("coven", "x", "let me in"));
    assert_eq!(stanza_error(&h.one(d)), "not-acceptable");

    // Subject: moderators only by default (section 8.1).
    h.send(
        b,
        &format!(
            "<message to='{}' type='groupchat' id='s1'><subject>Spells</subject></message>",
            room("coven")
        ),
    );
    assert_eq!(stanza_error(&h.one(b)), "forbidden");
    h.send(
        a,
        &format!(
            "<message to='{}' type='groupchat' id='s2'><subject>Spells</subject></message>",
            room("coven")
        ),
    );
    for conn in [a, b, c] {
        let m = h.one(conn);
        assert_eq!(m.get_child("subject", ns::CLIENT).unwrap().text(), "Spells");
    }

    // Private messages (section 7.5) go by nick, never as groupchat.
    h.send(
        b,
        &format!(
            "<message to='{}/witch' type='chat' id='pm'><body>psst</body></message>",
            room("coven")
        ),
    );
    let m = h.one(c);
    assert_eq!(from(&m), "coven@conference.example.org/hag");
    assert_eq!(m.get_attr("to"), Some("carol@example.org/c"));
    assert!(m.get_child("x", NS_MUC_USER).is_some());
    h.send(
        b,
        &format!(
            "<message to='{}/witch' type='groupchat' id='pm'><body>psst</body></message>",
            room("coven")
        ),
    );
    assert_eq!(stanza_error(&h.one(b)), "bad-request");
    h.send(
        b,
        &format!(
            "<message to='{}/nobody' type='chat' id='pm'><body>psst</body></message>",
            room("coven")
        ),
    );
    assert_eq!(stanza_error(&h.one(b)), "item-not-found");

    // Presence changes are reflected (section 7.7).
    h.send(
        c,
        &format!(
            "<presence to='{}/witch'><show>away</show></presence>",
            room("coven")
        ),
    );
    for conn in [a, b, c] {
        let p = h.one(conn);
        assert_eq!(p.get_child("show", ns::CLIENT).unwrap().text(), "away");
    }
    // Leaving (section 7.14): unavailable with role none, 110 for the one leaving.
    h.send(
        c,
        &format!(
            "<presence to='{}/witch' type='unavailable'><status>bye</status></presence>",
            room("coven")
        ),
    );
    let p = h.one(c);
    assert_eq!(p.get_attr("type"), Some("unavailable"));
    assert_eq!(codes(&p), ["110"]);
    assert_eq!(item(&p).get_attr("role"), Some("none"));
    assert_eq!(p.get_child("status", ns::CLIENT).unwrap().text(), "bye");
    for conn in [a, b] {
        let p = h.one(conn);
        assert_eq!(p.get_attr("type"), Some("unavailable"));
        assert!(codes(&p).is_empty());
    }
    assert_eq!(h.server.stats().occupants, 2);
}

#[test]
fn history_for_a_late_joiner() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    create(&mut h, a, "coven", "crone", &[("historylength", "3")]);
    for i in 1..=5 {
        h.send(
            a,
            &groupchat("coven", &format!("h{i}"), &format!("line {i}")),
        );
        h.advance(Duration::from_secs(60));
    }
    h.send(
        a,
        &format!(
            "<message to='{}' type='groupchat'><subject>Spells</subject></message>",
            room("coven")
        ),
    );
    h.take(a);
    // The last 3 kept; 2 asked for; XEP-0203 stamps from the room; the subject last.
    join(&mut h, b, "coven", "hag", "<history maxstanzas='2'/>");
    let v = h.take(b);
    assert_eq!(
        names(&v),
        ["presence", "presence", "message", "message", "message"]
    );
    let history: Vec<Option<String>> = v[2..4].iter().map(body).collect();
    assert_eq!(
        history,
        [Some("line 4".to_string()), Some("line 5".to_string())]
    );
    let delay = v[2].get_child("delay", NS_DELAY).unwrap();
    assert_eq!(delay.get_attr("from"), Some("coven@conference.example.org"));
    // 1_700_000_000 + 3 minutes (the harness clock).
    assert_eq!(delay.get_attr("stamp"), Some("2023-11-14T22:16:20.000Z"));
    assert_eq!(from(&v[2]), "coven@conference.example.org/crone");
    assert_eq!(v[2].get_attr("to"), Some("bob@example.org/b"));
    assert_eq!(
        v[4].get_child("subject", ns::CLIENT).unwrap().text(),
        "Spells"
    );
    assert!(v[4].get_child("delay", NS_DELAY).is_some());
    // Without a limit: the room's 3; `seconds` and `maxchars='0'` (section 7.2.14).
    let c = h.online("carol", "c", 0);
    join(&mut h, c, "coven", "witch", "");
    let v = h.take(c);
    assert_eq!(v.iter().filter(|e| body(e).is_some()).count(), 3);
    let d = h.online("dave", "d", 0);
    join(&mut h, d, "coven", "dave", "<history seconds='90'/>");
    let v = h.take(d);
    let got: Vec<Option<String>> = v.iter().filter_map(|e| body(e).map(Some)).collect();
    assert_eq!(got, [Some("line 5".to_string())]);
    h.send(
        d,
        &format!("<presence to='{}/dave' type='unavailable'/>", room("coven")),
    );
    h.take(d);
    join(&mut h, d, "coven", "dave", "<history maxchars='0'/>");
    let v = h.take(d);
    assert!(v.iter().all(|e| body(e).is_none()), "{v:?}");
}

#[test]
fn members_only_room_and_mediated_invitation() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    let c = h.online("carol", "c", 0);
    create(
        &mut h,
        a,
        "coven",
        "crone",
        &[
            ("membersonly", "1"),
            ("passwordprotectedroom", "1"),
            ("roomsecret", "cauldronburn"),
        ],
    );
    // Not on the member list (section 7.2.6).
    join(
        &mut h,
        b,
        "coven",
        "hag",
        "<password>cauldronburn</password>",
    );
    assert_eq!(stanza_error(&h.one(b)), "registration-required");
    // A non-occupant cannot invite.
    h.send(
        c,
        &format!(
            "<message to='{}'><x xmlns='{NS_MUC_USER}'><invite to='bob@example.org'/></x></message>",
            room("coven")
        ),
    );
    assert_eq!(stanza_error(&h.one(c)), "not-acceptable");
    // The owner invites Bob (section 7.8.2): the room sends it on with the password
    // and puts Bob on the member list.
    h.send(
        a,
        &format!(
            "<message to='{}' id='inv'><x xmlns='{NS_MUC_USER}'><invite to='bob@example.org'><reason>Join us</reason></invite></x></message>",
            room("coven")
        ),
    );
    let m = h.one(b);
    assert_eq!(from(&m), "coven@conference.example.org");
    let x = user_x(&m);
    let inv = x.get_child("invite", NS_MUC_USER).unwrap();
    assert_eq!(inv.get_attr("from"), Some("alice@example.org/a"));
    assert_eq!(
        inv.get_child("reason", NS_MUC_USER).unwrap().text(),
        "Join us"
    );
    assert_eq!(
        x.get_child("password", NS_MUC_USER).unwrap().text(),
        "cauldronburn"
    );
    join(
        &mut h,
        b,
        "coven",
        "hag",
        "<password>cauldronburn</password>",
    );
    let v = h.take(b);
    let me = presences(&v)[1];
    assert_eq!(codes(me), ["110"]);
    assert_eq!(item(me).get_attr("affiliation"), Some("member"));
    h.take(a);
    // Bob, a mere member, may not invite into a members-only room (no allowinvites).
    h.send(
        b,
        &format!(
            "<message to='{}'><x xmlns='{NS_MUC_USER}'><invite to='carol@example.org'/></x></message>",
            room("coven")
        ),
    );
    assert_eq!(stanza_error(&h.one(b)), "forbidden");
    // Carol declines an invitation: the inviter hears of it.
    h.send(
        c,
        &format!(
            "<message to='{}'><x xmlns='{NS_MUC_USER}'><decline to='alice@example.org/a'><reason>busy</reason></decline></x></message>",
            room("coven")
        ),
    );
    let m = h.one(a);
    let d = user_x(&m).get_child("decline", NS_MUC_USER).unwrap();
    assert_eq!(d.get_attr("from"), Some("carol@example.org"));
    // The member list (section 9.7).
    h.send(
        a,
        &format!(
            "<iq type='get' id='ml' to='{}'><query xmlns='{NS_MUC_ADMIN}'><item affiliation='member'/></query></iq>",
            room("coven")
        ),
    );
    let r = h.one(a);
    let jids: Vec<&str> = r
        .get_child("query", NS_MUC_ADMIN)
        .unwrap()
        .elements()
        .filter_map(|i| i.get_attr("jid"))
        .collect();
    assert_eq!(jids, ["bob@example.org"]);
    // Removing Bob from the member list removes him from the room (321).
    let r = admin_set(
        &mut h,
        a,
        "coven",
        "<item affiliation='none' jid='bob@example.org'/>",
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    let p = h.one(b);
    assert_eq!(p.get_attr("type"), Some("unavailable"));
    assert_eq!(codes(&p), ["110", "321"]);
    // XEP-0249 direct invitations are plain messages between users.
    h.send(
        a,
        "<message to='carol@example.org' id='di'><x xmlns='jabber:x:conference' jid='coven@conference.example.org' password='cauldronburn'/></message>",
    );
    let m = h.one(c);
    let x = m.get_child("x", "jabber:x:conference").unwrap();
    assert_eq!(x.get_attr("jid"), Some("coven@conference.example.org"));
}

#[test]
fn password_refused_then_accepted() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    // A password-protected room needs a password.
    join(&mut h, a, "coven", "crone", "");
    h.take(a);
    let r = configure(&mut h, a, "coven", &[("passwordprotectedroom", "1")]);
    assert_eq!(stanza_error(&r), "not-acceptable");
    let r = configure(
        &mut h,
        a,
        "coven",
        &[
            ("passwordprotectedroom", "1"),
            ("roomsecret", "cauldronburn"),
        ],
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    join(&mut h, b, "coven", "hag", "");
    let e = h.one(b);
    assert_eq!(stanza_error(&e), "not-authorized");
    assert_eq!(
        e.get_child("error", ns::CLIENT).unwrap().get_attr("type"),
        Some("auth")
    );
    join(&mut h, b, "coven", "hag", "<password>wrong</password>");
    assert_eq!(stanza_error(&h.one(b)), "not-authorized");
    join(
        &mut h,
        b,
        "coven",
        "hag",
        "<password>cauldronburn</password>",
    );
    let v = h.take(b);
    assert_eq!(codes(presences(&v)[1]), ["110"]);
    // Room info shows it (section 6.4).
    let r = disco(&mut h, b, &room("coven"), DISCO_INFO);
    let q = r.get_child("query", DISCO_INFO).unwrap();
    assert!(features(q).contains(&"muc_passwordprotected".to_string()));
}

#[test]
fn moderated_room_visitors_need_voice_and_max_users() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    let c = h.online("carol", "c", 0);
    create(
        &mut h,
        a,
        "coven",
        "crone",
        &[("moderatedroom", "1"), ("maxusers", "2")],
    );
    join(&mut h, b, "coven", "hag", "");
    let v = h.take(b);
    assert_eq!(item(presences(&v)[1]).get_attr("role"), Some("visitor"));
    h.take(a);
    // Full: 503 wait (section 7.2.9).
    join(&mut h, c, "coven", "witch", "");
    let e = h.one(c);
    assert_eq!(stanza_error(&e), "service-unavailable");
    assert_eq!(
        e.get_child("error", ns::CLIENT).unwrap().get_attr("type"),
        Some("wait")
    );
    // A visitor may not speak (section 7.4).
    h.send(b, &groupchat("coven", "v1", "hello?"));
    assert_eq!(stanza_error(&h.one(b)), "forbidden");
    assert!(h.take(a).is_empty());
    // Only moderators grant voice (section 8.3).
    let r = admin_set(&mut h, b, "coven", "<item nick='hag' role='participant'/>");
    assert_eq!(stanza_error(&r), "forbidden");
    let r = admin_set(&mut h, a, "coven", "<item nick='hag' role='participant'/>");
    assert_eq!(r.get_attr("type"), Some("result"));
    let p = h.one(b);
    assert_eq!(item(&p).get_attr("role"), Some("participant"));
    assert_eq!(codes(&p), ["110"]);
    assert_eq!(item(&h.one(a)).get_attr("role"), Some("participant"));
    h.send(b, &groupchat("coven", "v2", "thanks"));
    assert_eq!(body(&h.one(a)).as_deref(), Some("thanks"));
    h.take(b);
    // The voice list (section 8.5).
    h.send(
        a,
        &format!(
            "<iq type='get' id='vl' to='{}'><query xmlns='{NS_MUC_ADMIN}'><item role='participant'/></query></iq>",
            room("coven")
        ),
    );
    let r = h.one(a);
    let nicks: Vec<&str> = r
        .get_child("query", NS_MUC_ADMIN)
        .unwrap()
        .elements()
        .filter_map(|i| i.get_attr("nick"))
        .collect();
    assert_eq!(nicks, ["hag"]);
}

#[test]
fn kick_and_ban() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    let c = h.online("carol", "c", 0);
    create(&mut h, a, "coven", "crone", &[]);
    join(&mut h, b, "coven", "hag", "");
    join(&mut h, c, "coven", "witch", "");
    for conn in [a, b, c] {
        h.take(conn);
    }
    // A participant cannot kick; a moderator cannot kick an owner (section 8.2).
    let r = admin_set(&mut h, b, "coven", "<item nick='witch' role='none'/>");
    assert_eq!(stanza_error(&r), "forbidden");
    // Kick: 307 with the actor and reason, to the kicked occupant and the others.
    let r = admin_set(
        &mut h,
        a,
        "coven",
        "<item nick='hag' role='none'><reason>Avaunt</reason></item>",
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    let p = h.one(b);
    assert_eq!(p.get_attr("type"), Some("unavailable"));
    assert_eq!(codes(&p), ["110", "307"]);
    let it = item(&p);
    assert_eq!(it.get_attr("role"), Some("none"));
    assert_eq!(
        it.get_child("actor", NS_MUC_USER).unwrap().get_attr("nick"),
        Some("crone")
    );
    assert_eq!(
        it.get_child("reason", NS_MUC_USER).unwrap().text(),
        "Avaunt"
    );
    let p = h.one(c);
    assert_eq!(codes(&p), ["307"]);
    assert_eq!(from(&p), "coven@conference.example.org/hag");
    h.take(a);
    // A kicked user may come back; a banned one may not (section 9.1).
    join(&mut h, b, "coven", "hag", "");
    assert_eq!(presences(&h.take(b)).len(), 3);
    h.take(a);
    h.take(c);
    let r = admin_set(
        &mut h,
        a,
        "coven",
        "<item affiliation='outcast' jid='bob@example.org'/>",
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    let p = h.one(b);
    assert_eq!(codes(&p), ["110", "301"]);
    assert_eq!(item(&p).get_attr("affiliation"), Some("outcast"));
    assert_eq!(codes(&h.one(c)), ["301"]);
    h.take(a);
    join(&mut h, b, "coven", "hag", "");
    assert_eq!(stanza_error(&h.one(b)), "forbidden");
    h.send(
        a,
        &format!(
            "<iq type='get' id='bl' to='{}'><query xmlns='{NS_MUC_ADMIN}'><item affiliation='outcast'/></query></iq>",
            room("coven")
        ),
    );
    let r = h.one(a);
    let jids: Vec<&str> = r
        .get_child("query", NS_MUC_ADMIN)
        .unwrap()
        .elements()
        .filter_map(|i| i.get_attr("jid"))
        .collect();
    assert_eq!(jids, ["bob@example.org"]);
    // Admins are made by owners; the room keeps an owner (section 10.7).
    let r = admin_set(
        &mut h,
        a,
        "coven",
        "<item affiliation='admin' jid='carol@example.org'/>",
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    let p = h.one(c);
    assert_eq!(item(&p).get_attr("affiliation"), Some("admin"));
    assert_eq!(item(&p).get_attr("role"), Some("moderator"));
    h.take(a);
    let r = admin_set(
        &mut h,
        c,
        "coven",
        "<item affiliation='none' jid='alice@example.org'/>",
    );
    assert_eq!(stanza_error(&r), "not-allowed");
    let r = admin_set(
        &mut h,
        a,
        "coven",
        "<item affiliation='member' jid='alice@example.org'/>",
    );
    assert_eq!(stanza_error(&r), "conflict");
}

#[test]
fn nick_change() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    create(&mut h, a, "coven", "crone", &[]);
    join(&mut h, b, "coven", "hag", "");
    h.take(a);
    h.take(b);
    h.send(b, &format!("<presence to='{}/crone'/>", room("coven")));
    assert_eq!(stanza_error(&h.one(b)), "conflict");
    h.send(
        b,
        &format!("<presence to='{}/oldhag' id='nc'/>", room("coven")),
    );
    for (conn, mine) in [(a, false), (b, true)] {
        let v = h.take(conn);
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(from(&v[0]), "coven@conference.example.org/hag");
        assert_eq!(v[0].get_attr("type"), Some("unavailable"));
        assert_eq!(item(&v[0]).get_attr("nick"), Some("oldhag"));
        assert_eq!(item(&v[0]).get_attr("role"), Some("participant"));
        let want: &[&str] = if mine { &["110", "303"] } else { &["303"] };
        assert_eq!(codes(&v[0]), want);
        assert_eq!(from(&v[1]), "coven@conference.example.org/oldhag");
        assert_eq!(v[1].get_attr("type"), None);
        assert_eq!(codes(&v[1]).contains(&"110".to_string()), mine);
    }
    h.send(b, &groupchat("coven", "n", "new name"));
    assert_eq!(from(&h.one(a)), "coven@conference.example.org/oldhag");
}

#[test]
fn persistent_room_survives_a_restart() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    create(
        &mut h,
        a,
        "coven",
        "crone",
        &[
            ("roomname", "The Coven"),
            ("persistentroom", "1"),
            ("membersonly", "1"),
            ("whois", "anyone"),
        ],
    );
    let r = admin_set(
        &mut h,
        a,
        "coven",
        "<item affiliation='member' jid='bob@example.org'/>",
    );
    assert_eq!(r.get_attr("type"), Some("result"));
    h.send(
        a,
        &format!(
            "<message to='{}' type='groupchat'><subject>Spells</subject></message>",
            room("coven")
        ),
    );
    // Everyone leaves: a persistent room stays.
    h.send(
        a,
        &format!(
            "<presence to='{}/crone' type='unavailable'/>",
            room("coven")
        ),
    );
    h.take(a);
    h.take(b);
    assert_eq!(h.server.stats().rooms, 1);
    assert_eq!(
        h.db.get(&(MUC.into(), "".into(), "muc_rooms".into(), "coven".into()))
            .map(|v| v.contains("The Coven")),
        Some(true)
    );

    h.restart();
    let b = h.online("bob", "b", 0);
    // Discovery finds it before anyone entered (the room index).
    let r = disco(&mut h, b, MUC, DISCO_ITEMS);
    let items: Vec<(&str, &str)> = r
        .get_child("query", DISCO_ITEMS)
        .unwrap()
        .elements()
        .map(|i| (i.get_attr("jid").unwrap(), i.get_attr("name").unwrap()))
        .collect();
    assert_eq!(items, [("coven@conference.example.org", "The Coven")]);
    assert_eq!(h.server.stats().rooms, 1);
    // Bob is still a member of the members-only, non-anonymous room; the subject is
    // still set.
    join(&mut h, b, "coven", "hag", "");
    let v = h.take(b);
    assert_eq!(names(&v), ["presence", "message"]);
    assert_eq!(codes(&v[0]), ["100", "110"]);
    assert_eq!(item(&v[0]).get_attr("affiliation"), Some("member"));
    assert_eq!(
        v[1].get_child("subject", ns::CLIENT).unwrap().text(),
        "Spells"
    );
    let d = h.online("dave", "d", 0);
    join(&mut h, d, "coven", "dave", "");
    assert_eq!(stanza_error(&h.one(d)), "registration-required");
    let r = disco(&mut h, b, &room("coven"), DISCO_INFO);
    let q = r.get_child("query", DISCO_INFO).unwrap();
    let f = features(q);
    for want in ["muc_persistent", "muc_membersonly", "muc_nonanonymous"] {
        assert!(f.contains(&want.to_string()), "{want} in {f:?}");
    }
    // Alice is still its owner: she destroys it, and storage forgets it.
    let a = h.online("alice", "a", 0);
    join(&mut h, a, "coven", "crone", "");
    h.take(a);
    h.take(b);
    h.send(
        a,
        &format!(
            "<iq type='set' id='d' to='{}'><query xmlns='{NS_MUC_OWNER}'><destroy jid='newcoven@{MUC}'><reason>Moving</reason></destroy></query></iq>",
            room("coven")
        ),
    );
    let v = h.take(a);
    assert!(v
        .iter()
        .any(|e| e.name == "iq" && e.get_attr("type") == Some("result")));
    let p = h.one(b);
    assert_eq!(p.get_attr("type"), Some("unavailable"));
    let destroy = user_x(&p).get_child("destroy", NS_MUC_USER).unwrap();
    assert_eq!(
        destroy.get_attr("jid"),
        Some("newcoven@conference.example.org")
    );
    assert_eq!(
        destroy.get_child("reason", NS_MUC_USER).unwrap().text(),
        "Moving"
    );
    assert!(h.db.keys().all(|(host, ..)| host != MUC), "{:?}", h.db);
    assert_eq!(h.server.stats().rooms, 0);
}

#[test]
fn temporary_room_goes_when_empty_and_offline_users_leave() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    create(&mut h, a, "coven", "crone", &[]);
    join(&mut h, b, "coven", "hag", "");
    h.take(a);
    h.take(b);
    // Bob's connection drops without leaving the room: his session's unavailable
    // presence reaches the room (directed presence, RFC 6121 section 4.6).
    h.drop_conn(b);
    let p = h.one(a);
    assert_eq!(from(&p), "coven@conference.example.org/hag");
    assert_eq!(p.get_attr("type"), Some("unavailable"));
    assert_eq!(h.server.stats().occupants, 1);
    // The last occupant goes offline: the temporary room is gone.
    h.send(a, "<presence type='unavailable'/>");
    assert_eq!((h.server.stats().rooms, h.server.stats().occupants), (0, 0));
    let c = h.online("carol", "c", 0);
    let r = disco(&mut h, c, &room("coven"), DISCO_INFO);
    assert_eq!(stanza_error(&r), "item-not-found");
    assert!(h.db.keys().all(|(host, ..)| host != MUC));
    // A presence update without `<x/>` from a non-occupant is not a join (section
    // 7.2.18).
    h.send(c, &format!("<presence to='{}/witch'/>", room("coven")));
    let p = h.one(c);
    assert_eq!(p.get_attr("type"), Some("unavailable"));
    assert_eq!(codes(&p), ["110", "307", "333"]);
    assert_eq!(h.server.stats().rooms, 0);
}

#[test]
fn discovery_of_the_service_and_rooms() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let r = disco(&mut h, a, MUC, DISCO_INFO);
    let q = r.get_child("query", DISCO_INFO).unwrap();
    let id = q.get_child("identity", DISCO_INFO).unwrap();
    assert_eq!(id.get_attr("category"), Some("conference"));
    assert_eq!(id.get_attr("type"), Some("text"));
    assert!(features(q).contains(&NS_MUC.to_string()));
    // Public rooms only; a locked room is not there yet.
    create(&mut h, a, "open", "crone", &[("roomname", "Open house")]);
    create(&mut h, a, "hidden", "crone", &[("publicroom", "0")]);
    join(&mut h, a, "locked", "crone", "");
    h.take(a);
    let r = disco(&mut h, a, MUC, DISCO_ITEMS);
    let items: Vec<&str> = r
        .get_child("query", DISCO_ITEMS)
        .unwrap()
        .elements()
        .map(|i| i.get_attr("jid").unwrap())
        .collect();
    assert_eq!(items, ["open@conference.example.org"]);
    // Room info (section 6.4).
    let r = disco(&mut h, a, &room("open"), DISCO_INFO);
    let q = r.get_child("query", DISCO_INFO).unwrap();
    assert_eq!(
        q.get_child("identity", DISCO_INFO)
            .unwrap()
            .get_attr("name"),
        Some("Open house")
    );
    let f = features(q);
    for want in [
        NS_MUC,
        "muc_public",
        "muc_temporary",
        "muc_open",
        "muc_unmoderated",
        "muc_semianonymous",
        "muc_unsecured",
    ] {
        assert!(f.contains(&want.to_string()), "{want} in {f:?}");
    }
    let form = q.get_child("x", NS_DATA).unwrap();
    let occupants = form
        .elements()
        .find(|f| f.get_attr("var") == Some("muc#roominfo_occupants"))
        .unwrap();
    assert_eq!(occupants.get_child("value", NS_DATA).unwrap().text(), "1");
    let r = disco(&mut h, a, &room("hidden"), DISCO_INFO);
    let f = features(r.get_child("query", DISCO_INFO).unwrap());
    assert!(f.contains(&"muc_hidden".to_string()));
    // The domain lists the service (disco.rs) and stats count the rooms.
    let r = disco(&mut h, a, HOST, DISCO_ITEMS);
    assert!(r
        .get_child("query", DISCO_ITEMS)
        .unwrap()
        .elements()
        .any(|i| i.get_attr("jid") == Some(MUC)));
    let s = h.server.stats();
    assert_eq!((s.rooms, s.occupants), (3, 3));
}

#[test]
fn restricted_room_creation() {
    let mut cfg = config();
    cfg.muc[0].restrict_room_creation = true;
    cfg.admins = vec![Jid::parse("alice@example.org").unwrap()];
    let mut h = Harness::with(cfg);
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    join(&mut h, b, "coven", "hag", "");
    assert_eq!(stanza_error(&h.one(b)), "not-allowed");
    create(&mut h, a, "coven", "crone", &[]);
    join(&mut h, b, "coven", "hag", "");
    assert_eq!(presences(&h.take(b)).len(), 2);
}

#[test]
fn occupant_iq_and_self_ping() {
    let mut h = Harness::new();
    let a = h.online("alice", "a", 0);
    let b = h.online("bob", "b", 0);
    create(&mut h, a, "coven", "crone", &[]);
    join(&mut h, b, "coven", "hag", "");
    h.take(a);
    h.take(b);
    // XEP-0410: the room answers a ping to one's own occupant JID.
    h.send(
        b,
        &format!(
            "<iq type='get' id='sp' to='{}/hag'><ping xmlns='urn:xmpp:ping'/></iq>",
            room("coven")
        ),
    );
    let r = h.one(b);
    assert_eq!(r.get_attr("type"), Some("result"));
    // Other iqs go to the occupant and back, with occupant JIDs on both sides.
    h.send(
        b,
        &format!(
            "<iq type='get' id='v' to='{}/crone'><query xmlns='jabber:iq:version'/></iq>",
            room("coven")
        ),
    );
    let q = h.one(a);
    assert_eq!(from(&q), "coven@conference.example.org/hag");
    h.send(
        a,
        "<iq type='result' id='v' to='coven@conference.example.org/hag'><query xmlns='jabber:iq:version'><name>x</name></query></iq>",
    );
    let r = h.one(b);
    assert_eq!(from(&r), "coven@conference.example.org/crone");
    assert_eq!(r.get_attr("type"), Some("result"));
    // Not an occupant: bad-request (section 6.6).
    let c = h.online("carol", "c", 0);
    h.send(
        c,
        &format!(
            "<iq type='get' id='v' to='{}/crone'><query xmlns='jabber:iq:version'/></iq>",
            room("coven")
        ),
    );
    assert_eq!(stanza_error(&h.one(c)), "bad-request");
    // An error saying an occupant is gone removes it (status 333); other errors to a
    // private message go back to its sender.
    h.send(
        a,
        "<message type='error' id='pm1' to='coven@conference.example.org/hag'><error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
    );
    let e = h.one(b);
    assert_eq!(from(&e), "coven@conference.example.org/crone");
    assert_eq!(stanza_error(&e), "not-acceptable");
    h.send(
        b,
        "<message type='error' id='m' to='coven@conference.example.org'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
    );
    let p = h.one(a);
    assert_eq!(p.get_attr("type"), Some("unavailable"));
    assert_eq!(codes(&p), ["333"]);
    assert_eq!(h.server.stats().occupants, 1);
}
