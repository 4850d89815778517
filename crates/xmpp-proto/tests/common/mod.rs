//! The server test harness shared by `tests/server.rs` and `tests/muc.rs`: the XMPP
//! server core over virtual time, raw XML in, bytes and storage orders out, exactly as
//! xmppd drives it, with no socket, clock or database. Clients are played by the
//! harness (their side of SCRAM included); storage is an in-memory map whose answers
//! can be held back to check what waits for durability.

// Each test binary uses its own part of the harness.
#![allow(dead_code, unused_imports)]

pub use base64::engine::general_purpose::STANDARD as B64;
pub use base64::Engine;
pub use rtc_auth::scram::{self, ScramHash};
pub use std::collections::{BTreeMap, HashMap};
pub use std::time::{Duration, Instant};
pub use xmpp_proto::element::{ns, Element};
pub use xmpp_proto::jid::Jid;
pub use xmpp_proto::server::{
    AccountSecrets, CloseReason, Config, ConnId, ConnKind, Framing, MucService, Output, Role,
    Server, StoreOp, TlsInfo, VHost,
};
pub use xmpp_proto::xml::{Limits, StreamEvent, StreamParser};

pub const HOST: &str = "example.org";
pub const PASS: &str = "s3cret pass";
pub const NS_SM: &str = "urn:xmpp:sm:3";
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
pub const EXPORTER: [u8; 32] = [7; 32];
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

pub fn config() -> Config {
    Config {
        vhosts: vec![VHost {
            domain: HOST.into(),
            allow_registration: false,
            admins: vec![],
        }],
        muc: vec![MucService {
            domain: "conference.example.org".into(),
            restrict_room_creation: false,
            max_history: 20,
        }],
        admins: vec![],
        require_encryption: true,
        allow_plain: true,
        limits: Limits::default(),
        scram_iterations: 4096,
        sm_resume_timeout: Duration::from_secs(300),
        offline_max: 3,
        c2s_rate: 0,
        negotiation_timeout: Duration::from_secs(30),
        software_name: "xmppd".into(),
        software_version: "0.1".into(),
    }
}

/// One client connection as the harness sees it.
#[derive(Default)]
pub struct Client {
    pub parser: Option<StreamParser>,
    /// Elements received and not yet taken.
    pub inbox: Vec<Element>,
    /// Everything received, as text.
    pub raw: String,
    pub headers: usize,
    pub ended: bool,
    pub closed: bool,
    pub starttls: bool,
    /// RFC 7395 framing: every send is one message, parsed on its own.
    pub websocket: bool,
    /// The messages received, one per send (WebSocket connections).
    pub messages: Vec<String>,
}

pub type Key = (String, String, String, String);

pub struct Harness {
    pub server: Server,
    pub now: Instant,
    pub clients: HashMap<ConnId, Client>,
    pub accounts: HashMap<String, AccountSecrets>,
    pub db: BTreeMap<Key, String>,
    /// Store orders not yet answered (when `hold_stores`).
    pub stores: Vec<(u64, Vec<StoreOp>)>,
    pub hold_stores: bool,
    /// Account lookups fail as a broken database would.
    pub fail_accounts: bool,
    /// Every store order seen.
    pub store_log: Vec<StoreOp>,
    pub next_conn: ConnId,
    /// The configuration and start time, for [`Harness::restart`].
    pub cfg: Config,
    pub start: Instant,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(config())
    }

    pub fn with(cfg: Config) -> Harness {
        let mut accounts = HashMap::new();
        for (i, u) in ["alice", "bob", "carol", "dave"].iter().enumerate() {
            let salt = [i as u8 + 1; 16];
            accounts.insert(
                u.to_string(),
                xmpp_proto::sasl::scram_secrets(PASS, &salt, 4096),
            );
        }
        let now = Instant::now();
        let mut server = Server::new(cfg.clone(), 7);
        server.set_wall_clock(now, Duration::from_secs(1_700_000_000));
        Harness {
            server,
            now,
            clients: HashMap::new(),
            accounts,
            db: BTreeMap::new(),
            stores: Vec::new(),
            hold_stores: false,
            fail_accounts: false,
            store_log: Vec::new(),
            next_conn: 1,
            cfg,
            start: now,
        }
    }

    /// Drains outputs, answering storage work (stores only when not held), until quiet.
    pub fn settle(&mut self) {
        loop {
            let mut answers = Vec::new();
            while let Some(o) = self.server.poll_output() {
                match o {
                    Output::Send { conn, data } => self.received(conn, &data),
                    Output::StartTls { conn } => {
                        self.clients.get_mut(&conn).unwrap().starttls = true;
                    }
                    Output::Close { conn } => self.clients.get_mut(&conn).unwrap().closed = true,
                    Output::FetchAccount { id, user, .. } => {
                        answers.push(Answer::Account(id, user))
                    }
                    Output::Load {
                        id,
                        host,
                        user,
                        store,
                        key,
                    } => answers.push(Answer::Load(id, host, user, store, key)),
                    Output::Store { id, ops } => {
                        self.store_log.extend(ops.iter().cloned());
                        if self.hold_stores {
                            self.stores.push((id, ops));
                        } else {
                            answers.push(Answer::Store(id, ops));
                        }
                    }
                }
            }
            if answers.is_empty() {
                return;
            }
            for a in answers {
                match a {
                    Answer::Account(id, user) => {
                        let s = self.accounts.get(&user).cloned();
                        let answer = if self.fail_accounts {
                            Err(xmpp_proto::server::StoreFailed)
                        } else {
                            Ok(s)
                        };
                        self.server.handle_account_loaded(self.now, id, answer);
                    }
                    Answer::Load(id, host, user, store, key) => {
                        let items = self
                            .db
                            .iter()
                            .filter(|((h, u, s, k), _)| {
                                *h == host
                                    && *u == user
                                    && *s == store
                                    && key.as_ref().is_none_or(|x| x == k)
                            })
                            .map(|((_, _, _, k), v)| (k.clone(), v.clone()))
                            .collect();
                        self.server.handle_loaded(self.now, id, Ok(items));
                    }
                    Answer::Store(id, ops) => self.commit(id, ops),
                }
            }
        }
    }

    pub fn commit(&mut self, id: u64, ops: Vec<StoreOp>) {
        for op in ops {
            match op {
                StoreOp::Put {
                    host,
                    user,
                    store,
                    key,
                    value,
                } => {
                    self.db.insert((host, user, store, key), value);
                }
                StoreOp::Delete {
                    host,
                    user,
                    store,
                    key,
                } => {
                    self.db.remove(&(host, user, store, key));
                }
                StoreOp::DeleteAll { host, user, store } => {
                    self.db.retain(|(h, u, s, _), _| {
                        !(*h == host && *u == user && store.as_ref().is_none_or(|x| x == s))
                    });
                }
                // Accounts are keyed by user name alone (one host in these tests).
                StoreOp::PutAccount { user, secrets, .. } => {
                    self.accounts.insert(user, secrets);
                }
                StoreOp::DeleteAccount { user, .. } => {
                    self.accounts.remove(&user);
                }
            }
        }
        self.server.handle_stored(self.now, id, Ok(()));
    }

    /// Commits the held stores.
    pub fn release_stores(&mut self) {
        let held = std::mem::take(&mut self.stores);
        for (id, ops) in held {
            self.commit(id, ops);
        }
        self.settle();
    }

    pub fn received(&mut self, conn: ConnId, data: &[u8]) {
        let c = self.clients.get_mut(&conn).expect("known connection");
        let text = String::from_utf8(data.to_vec()).expect("UTF-8");
        c.raw.push_str(&text);
        if c.websocket {
            received_message(c, text);
            return;
        }
        let p = c
            .parser
            .get_or_insert_with(|| StreamParser::new(Limits::default()));
        p.feed(data)
            .unwrap_or_else(|e| panic!("server sent bad XML ({e}): {text}"));
        while let Some(ev) = p.next_event().expect("well-formed") {
            match ev {
                StreamEvent::Header(_) => c.headers += 1,
                StreamEvent::End => c.ended = true,
                StreamEvent::Element(e) => {
                    let restart = (e.name == "proceed" && e.ns == ns::TLS)
                        || (e.name == "success" && e.ns == ns::SASL);
                    c.inbox.push(e);
                    if restart {
                        p.reset();
                    }
                }
            }
        }
    }

    pub fn open(&mut self, kind: ConnKind) -> ConnId {
        self.open_framed(kind, Framing::Stream)
    }

    pub fn open_framed(&mut self, kind: ConnKind, framing: Framing) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        let client = Client {
            websocket: framing == Framing::WebSocket,
            ..Client::default()
        };
        self.clients.insert(id, client);
        self.server.handle_connection_opened(
            self.now,
            id,
            kind,
            framing,
            Role::Client,
            "192.0.2.1:40000".parse().unwrap(),
        );
        self.settle();
        id
    }

    pub fn send(&mut self, conn: ConnId, xml: &str) {
        self.server.handle_data(self.now, conn, xml.as_bytes());
        self.settle();
    }

    /// RFC 7395 section 3.4: the client's `<open/>`, in a message of its own.
    pub fn ws_open(&mut self, conn: ConnId) {
        self.send(
            conn,
            &format!("<open xmlns='{NS_FRAMING}' to='{HOST}' version='1.0'/>"),
        );
    }

    /// A login over a WebSocket (`wss:`, TLS below the WebSocket): `<open/>`, SASL
    /// with `mech`, `<open/>` again, bind `resource`.
    pub fn login_ws(&mut self, user: &str, resource: &str, mech: &str) -> ConnId {
        let c = self.open_framed(ConnKind::C2sDirectTls, Framing::WebSocket);
        self.tls(c);
        self.ws_open(c);
        let f = self.one(c);
        assert_eq!(f.name, "features");
        assert!(f.get_child("starttls", ns::TLS).is_none(), "{f:?}");
        let r = self.auth(c, mech, user, PASS);
        assert_eq!(r.name, "success", "{r:?}");
        self.ws_open(c);
        let f = self.one(c);
        assert!(f.get_child("bind", ns::BIND).is_some(), "{f:?}");
        self.send(
            c,
            &format!("<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='{}'><resource>{resource}</resource></bind></iq>", ns::BIND),
        );
        let r = self.one(c);
        assert_eq!(r.get_attr("type"), Some("result"), "{r:?}");
        c
    }

    pub fn header(&mut self, conn: ConnId) {
        self.send(
            conn,
            &format!("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{HOST}' version='1.0'>"),
        );
    }

    pub fn tls(&mut self, conn: ConnId) {
        self.server.handle_tls_established(
            self.now,
            conn,
            TlsInfo {
                tls_exporter: Some(EXPORTER.to_vec()),
                tls_server_end_point: None,
                sni: Some(HOST.into()),
                version: "TLSv1.3".into(),
            },
        );
        self.settle();
    }

    /// Elements received since the last call, `<r/>` requests filtered out.
    pub fn take(&mut self, conn: ConnId) -> Vec<Element> {
        let v = std::mem::take(&mut self.clients.get_mut(&conn).unwrap().inbox);
        v.into_iter()
            .filter(|e| !(e.name == "r" && e.ns == NS_SM))
            .collect()
    }

    /// The one element received.
    pub fn one(&mut self, conn: ConnId) -> Element {
        let mut v = self.take(conn);
        assert_eq!(v.len(), 1, "expected one element, got {v:#?}");
        v.remove(0)
    }

    pub fn closed(&self, conn: ConnId) -> bool {
        self.clients[&conn].closed
    }

    /// The condition of the stream error received, checking the stream is closed.
    pub fn stream_error(&mut self, conn: ConnId) -> String {
        let v = self.take(conn);
        let err = v
            .iter()
            .find(|e| e.name == "error" && e.ns == ns::STREAM)
            .unwrap_or_else(|| panic!("no stream error in {v:#?}"));
        assert!(self.clients[&conn].ended, "stream closed after the error");
        assert!(self.closed(conn));
        let cond = err
            .elements()
            .find(|c| c.ns == ns::STREAMS_ERR)
            .unwrap()
            .name
            .clone();
        cond
    }

    /// Connection through STARTTLS up to the SASL features.
    pub fn open_to_sasl(&mut self) -> (ConnId, Element) {
        let c = self.open(ConnKind::C2sStartTls);
        self.header(c);
        let f = self.one(c);
        assert_eq!(f.name, "features");
        self.send(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(self.one(c).name, "proceed");
        assert!(self.clients[&c].starttls);
        self.tls(c);
        self.header(c);
        let f = self.one(c);
        (c, f)
    }

    /// Runs SASL with `mech`, returns the final element (`success` or `failure`).
    pub fn auth(&mut self, c: ConnId, mech: &str, user: &str, pass: &str) -> Element {
        if mech == "PLAIN" {
            let msg = B64.encode(format!("\0{user}\0{pass}"));
            self.send(
                c,
                &format!("<auth xmlns='{}' mechanism='PLAIN'>{msg}</auth>", ns::SASL),
            );
            return self.one(c);
        }
        let hash = if mech.contains("SHA-256") {
            ScramHash::Sha256
        } else {
            ScramHash::Sha1
        };
        let gs2 = if mech.ends_with("-PLUS") {
            "p=tls-exporter,,"
        } else {
            "n,,"
        };
        let cnonce = "fyko+d2lbbFgONRv9qkxdawL";
        let first_bare = format!("n={user},r={cnonce}");
        let first = format!("{gs2}{first_bare}");
        self.send(
            c,
            &format!(
                "<auth xmlns='{}' mechanism='{mech}'>{}</auth>",
                ns::SASL,
                B64.encode(&first)
            ),
        );
        let ch = self.one(c);
        assert_eq!(ch.name, "challenge", "{ch:?}");
        let server_first = String::from_utf8(B64.decode(ch.text()).unwrap()).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iters = 0;
        for part in server_first.split(',') {
            match part.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = B64.decode(v).unwrap(),
                ("i=", v) => iters = v.parse().unwrap(),
                _ => {}
            }
        }
        assert!(nonce.starts_with(cnonce));
        let mut cb = gs2.as_bytes().to_vec();
        if mech.ends_with("-PLUS") {
            cb.extend_from_slice(&EXPORTER);
        }
        let without_proof = format!("c={},r={nonce}", B64.encode(&cb));
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let salted = scram::salted_password(hash, pass, &salt, iters);
        let ck = scram::client_key(hash, &salted);
        let sk = scram::stored_key(hash, &ck);
        let sig = scram::hmac(hash, &sk, auth_message.as_bytes());
        let proof: Vec<u8> = ck.iter().zip(sig.iter()).map(|(a, b)| a ^ b).collect();
        let fin = format!("{without_proof},p={}", B64.encode(&proof));
        self.send(
            c,
            &format!(
                "<response xmlns='{}'>{}</response>",
                ns::SASL,
                B64.encode(&fin)
            ),
        );
        let r = self.one(c);
        if r.name == "success" {
            let server_key = scram::server_key(hash, &salted);
            let v = scram::hmac(hash, &server_key, auth_message.as_bytes());
            let got = String::from_utf8(B64.decode(r.text()).unwrap()).unwrap();
            assert_eq!(got, format!("v={}", B64.encode(v)), "server signature");
        }
        r
    }

    /// A full login: STARTTLS, SASL with `mech`, restart, bind `resource`.
    pub fn login_with(&mut self, user: &str, resource: &str, mech: &str) -> ConnId {
        let (c, _) = self.open_to_sasl();
        let r = self.auth(c, mech, user, PASS);
        assert_eq!(r.name, "success", "{r:?}");
        self.header(c);
        let f = self.one(c);
        assert!(f.get_child("bind", ns::BIND).is_some());
        self.send(
            c,
            &format!("<iq type='set' id='b1'><bind xmlns='{}'><resource>{resource}</resource></bind></iq>", ns::BIND),
        );
        let r = self.one(c);
        assert_eq!(r.get_attr("type"), Some("result"), "{r:?}");
        let jid = r
            .get_child("bind", ns::BIND)
            .unwrap()
            .get_child("jid", ns::BIND)
            .unwrap()
            .text();
        assert_eq!(jid, format!("{user}@{HOST}/{resource}"));
        c
    }

    pub fn login(&mut self, user: &str, resource: &str) -> ConnId {
        self.login_with(user, resource, "SCRAM-SHA-256-PLUS")
    }

    /// Login, roster fetched, initial presence (with `priority`), inbox emptied.
    pub fn online(&mut self, user: &str, resource: &str, priority: i8) -> ConnId {
        let c = self.login(user, resource);
        self.send(
            c,
            "<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>",
        );
        self.send(
            c,
            &format!("<presence><priority>{priority}</priority></presence>"),
        );
        self.take(c);
        c
    }

    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.server.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.server.handle_timeout(self.now);
            self.settle();
        }
        self.now = end;
    }

    /// A daemon restart: a new `Server` on the same stored data (and clock); every
    /// client connection is gone.
    pub fn restart(&mut self) {
        self.server = Server::new(self.cfg.clone(), 8);
        let since = Duration::from_secs(1_700_000_000) + (self.now - self.start);
        self.server.set_wall_clock(self.now, since);
        self.clients.clear();
    }

    pub fn drop_conn(&mut self, c: ConnId) {
        self.server
            .handle_connection_closed(self.now, c, CloseReason::Error);
        self.settle();
    }
}

/// One WebSocket message from the server (RFC 7395 section 3.3.3): exactly one element,
/// namespace-well-formed on its own; `<open/>` and `<close/>` count as the stream header
/// and end.
fn received_message(c: &mut Client, text: String) {
    // The parser wants a stream around elements; the wrapper declares no default
    // namespace a message could lean on: an element without `xmlns` would come out in
    // `jabber:client` here, so the raw text is checked too.
    let mut p = StreamParser::new(Limits::default());
    p.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    )
    .unwrap();
    assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Header(_)))));
    p.feed(text.as_bytes())
        .unwrap_or_else(|e| panic!("server sent bad XML ({e}): {text}"));
    assert!(!p.in_element(), "partial element in a message: {text}");
    let mut elements = Vec::new();
    while let Some(ev) = p.next_event().expect("well-formed") {
        match ev {
            StreamEvent::Element(e) => elements.push(e),
            other => panic!("not an element in a message: {other:?} ({text})"),
        }
    }
    assert_eq!(elements.len(), 1, "one element per message: {text}");
    let e = elements.remove(0);
    let declared = text.starts_with(&format!("<{} xmlns='{}'", e.name, e.ns))
        || (e.ns == ns::STREAM
            && text.starts_with(&format!("<stream:{} xmlns:stream='{}'", e.name, ns::STREAM)));
    assert!(declared, "namespace not declared in the message: {text}");
    c.messages.push(text);
    match (e.ns.as_str(), e.name.as_str()) {
        (NS_FRAMING, "open") => c.headers += 1,
        (NS_FRAMING, "close") => c.ended = true,
        _ => c.inbox.push(e),
    }
}

pub enum Answer {
    Account(u64, String),
    Load(u64, String, String, String, Option<String>),
    Store(u64, Vec<StoreOp>),
}

pub fn names(v: &[Element]) -> Vec<String> {
    v.iter().map(|e| e.name.clone()).collect()
}

pub fn body(e: &Element) -> Option<String> {
    e.get_child("body", ns::CLIENT).map(|b| b.text())
}

pub fn stanza_error(e: &Element) -> String {
    assert_eq!(e.get_attr("type"), Some("error"), "{e:?}");
    e.get_child("error", ns::CLIENT)
        .unwrap()
        .elements()
        .find(|c| c.ns == ns::STANZAS)
        .unwrap()
        .name
        .clone()
}

pub fn msg(to: &str, text: &str) -> String {
    format!("<message to='{to}' type='chat' id='m-{text}'><body>{text}</body></message>")
}
