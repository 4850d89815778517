//! xmppd against real XMPP clients: slixmpp (Python, Debian's python3-slixmpp) scenarios
//! for every SASL mechanism, roster and subscriptions, presence, chat, offline delivery,
//! carbons, stream-management resumption, a three-occupant chat room and blocking;
//! go-sendxmpp (Go) as an independent second client; raw-socket hostile input (billion
//! laughs, XXE, oversized stanza, invalid JIDs, a stanza before authentication, a client
//! that never finishes its stream header), each checked for the right stream error and a
//! healthy server afterwards. The scripts live in `tests/xmpp/` and were validated against
//! Debian's Prosody first (`tests/xmpp/prosody.sh`).
//!
//! Also here: offline messages survive `kill -9` once acknowledged (XEP-0198).

mod common;

use common::{add_account, add_account_url};
use rtc_tests::scratch_db::{Engine, ScratchDb};
use rtc_tests::xmppd::{XmppStream, Xmppd, DOMAIN, MUC, NS_SASL};
use rtc_tests::{run_tool, ToolOutput};
use std::path::Path;
use std::time::Duration;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn xmppd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xmppd"))
}

fn script(name: &str) -> String {
    format!("{}/../tests/xmpp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// An xmppd with alice, bob and carol (passwords `<name>-pw`) and the vhost's
/// certificate written where the scripts can trust it.
struct Env {
    xmppd: Xmppd,
    cafile: String,
}

fn env_with(extra: &[(&str, &str)]) -> Env {
    env_on(None, extra)
}

/// On SQLite, or on a PostgreSQL/MariaDB scratch database.
fn env_on(db: Option<&ScratchDb>, extra: &[(&str, &str)]) -> Env {
    let mut b = Xmppd::builder(xmppd_bin()).prometheus();
    if let Some(db) = db {
        b = b.set("db-url", &format!("\"{}\"", db.url()));
    }
    for (k, v) in extra {
        b = b.set(k, v);
    }
    let xmppd = b.start();
    for u in ["alice", "bob", "carol"] {
        match db {
            Some(db) => add_account_url(&db.url(), u, &format!("{u}-pw")),
            None => add_account(&xmppd.db_path(), u, &format!("{u}-pw")),
        }
    }
    let cafile = xmppd.dir.path().join("ca.pem");
    std::fs::write(&cafile, xmppd.cert_pem(DOMAIN)).unwrap();
    Env {
        xmppd,
        cafile: cafile.to_string_lossy().into_owned(),
    }
}

fn env() -> Env {
    env_with(&[])
}

impl Env {
    /// Runs `tests/xmpp/<file> <scenario> ...` with the server, CA and the three accounts.
    fn run(&self, file: &str, scenario: &str, extra: &[&str]) -> ToolOutput {
        let port = self.xmppd.port.to_string();
        let jid = |u: &str| format!("{u}@{DOMAIN}");
        let (a, b, c) = (jid("alice"), jid("bob"), jid("carol"));
        let path = script(file);
        let mut args: Vec<&str> = vec![
            &path,
            scenario,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--cafile",
            &self.cafile,
        ];
        // As many accounts as the scenario declares (tests/xmpp/slix.py SCENARIOS).
        let accounts = match (file, scenario) {
            ("slix.py", "muc") => 3,
            ("slix.py", "login") | ("raw.py", _) => 1,
            _ => 2,
        };
        let all = [
            ("--jid", "--password", &a, "alice-pw"),
            ("--jid2", "--password2", &b, "bob-pw"),
            ("--jid3", "--password3", &c, "carol-pw"),
        ];
        for (jf, pf, j, pw) in &all[..accounts] {
            args.extend_from_slice(&[jf, j.as_str(), pf, pw]);
        }
        args.extend_from_slice(extra);
        // Debian's interpreter: it is the one that sees python3-slixmpp.
        run_tool("/usr/bin/python3", &args, SCRIPT_TIMEOUT)
    }

    fn expect(&self, file: &str, scenario: &str, extra: &[&str]) {
        let out = self.run(file, scenario, extra);
        assert!(
            out.success(),
            "{file} {scenario} {extra:?} failed:\n{out}\nxmppd log:\n{}",
            self.xmppd.log()
        );
    }
}

#[test]
fn sasl_mechanisms_with_slixmpp() {
    let e = env();
    for mech in ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"] {
        e.expect("slix.py", "login", &["--mech", mech]);
    }
    // No slixmpp -PLUS here: slixmpp 1.8.3 always declares tls-unique, which TLS 1.3 does
    // not define and RFC 9266 replaces with tls-exporter; the -PLUS mechanisms are proven
    // with tls-exporter and tls-server-end-point in `sasl_edge_cases_on_the_wire`.
    e.xmppd.wait_metric("xmppd_auth_successes_total", 3.0);
}

#[test]
fn sasl_edge_cases_on_the_wire() {
    let e = env();
    for mech in [
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "PLAIN",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256-PLUS",
    ] {
        e.expect("raw.py", "sasl", &["--mech", mech]);
    }
    e.expect(
        "raw.py",
        "sasl",
        &["--mech", "SCRAM-SHA-256-PLUS", "--cb", "tls-exporter"],
    );
    e.expect(
        "raw.py",
        "sasl",
        &[
            "--mech",
            "SCRAM-SHA-256-PLUS",
            "--cb",
            "tls-server-end-point",
        ],
    );
    // Wrong password: not-authorized, and the account still works.
    let out = e.run(
        "raw.py",
        "sasl",
        &[
            "--password",
            "wrong",
            "--mech",
            "SCRAM-SHA-256",
            "--expect-failure",
            "not-authorized",
            "--health-password",
            "alice-pw",
        ],
    );
    assert!(out.success(), "{out}");
    // A client claiming it could not bind the channel while we offer -PLUS: a downgrade.
    let out = e.run(
        "raw.py",
        "sasl",
        &[
            "--mech",
            "SCRAM-SHA-256",
            "--gs2-flag",
            "y",
            "--expect-failure",
            "any",
            "--health-password",
            "alice-pw",
        ],
    );
    assert!(out.success(), "{out}");
    e.xmppd.wait_metric("xmppd_auth_failures_total", 2.0);
}

#[test]
fn roster_presence_and_chat() {
    let e = env();
    e.expect("slix.py", "roster", &[]);
    e.expect("slix.py", "presence", &[]);
    e.expect("slix.py", "chat", &[]);
}

#[test]
fn offline_delivery() {
    env().expect("slix.py", "offline", &[]);
}

#[test]
fn carbons_between_two_resources() {
    env().expect("slix.py", "carbons", &[]);
}

#[test]
fn stream_management_resumption() {
    env().expect("slix.py", "smacks", &[]);
}

#[test]
fn chat_room_with_three_occupants() {
    env().expect("slix.py", "muc", &["--muc", MUC]);
}

#[test]
fn blocking() {
    env().expect("slix.py", "blocking", &[]);
}

/// go-sendxmpp (an independent Go client) sends, a slixmpp client receives: over STARTTLS
/// and over direct TLS (XEP-0368).
#[test]
fn go_sendxmpp_to_slixmpp() {
    let e = env();
    e.expect("slix.py", "sendxmpp", &[]);
    let tls_port = e.xmppd.tls_port.to_string();
    let out = e.run(
        "slix.py",
        "sendxmpp",
        &["--direct-tls", "--port", &tls_port],
    );
    assert!(out.success(), "{out}\nxmppd log:\n{}", e.xmppd.log());
}

#[test]
fn hostile_documents_get_stream_errors() {
    let e = env();
    for check in ["billion-laughs", "xxe"] {
        e.expect("raw.py", check, &[]);
        e.expect("raw.py", check, &["--after-tls"]);
    }
    e.expect("raw.py", "oversized", &[]);
    e.expect(
        "raw.py",
        "oversized",
        &["--stage", "preauth", "--size", "65536"],
    );
    e.expect("raw.py", "bad-jid", &[]);
    e.expect("raw.py", "preauth", &[]);
    e.expect(
        "raw.py",
        "preauth",
        &["--stanza", "message", "--before-tls"],
    );
    e.xmppd.wait_metric("xmppd_stream_errors_total", 7.0);
}

#[test]
fn a_client_that_never_finishes_its_header_times_out() {
    let e = env_with(&[("negotiation-timeout", "3")]);
    e.expect("raw.py", "slow-header", &["--wait", "10"]);
    e.expect("raw.py", "slow-header", &["--silent", "--wait", "10"]);
}

/// A message to an offline user, acknowledged with XEP-0198 `<a h='1'/>`, survives
/// `kill -9` of xmppd and is delivered at the recipient's next login.
#[test]
fn acknowledged_offline_message_survives_kill_9() {
    let mut e = env();
    let cert = e.xmppd.cert_pem(DOMAIN).to_string();
    let login = |x: &Xmppd, user: &str| {
        let mut plain = XmppStream::connect(x.addr()).unwrap();
        plain.open(DOMAIN).unwrap();
        let mut s = plain
            .starttls(DOMAIN, &cert)
            .unwrap_or_else(|m| panic!("{m}; log:\n{}", x.log()));
        s.open(DOMAIN).unwrap();
        s.scram("SCRAM-SHA-256", user, &format!("{user}-pw"), None)
            .unwrap_or_else(|m| panic!("{m}; log:\n{}", x.log()));
        s.open(DOMAIN).unwrap();
        s.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>t</resource></bind></iq>").unwrap();
        s.read_until("</iq>", Duration::from_secs(5)).unwrap();
        s
    };
    let mut alice = login(&e.xmppd, "alice");
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>").unwrap();
    alice.read_until("enabled", Duration::from_secs(5)).unwrap();
    alice
        .send(&format!("<message to='bob@{DOMAIN}' type='chat' id='m1'><body>kept through kill -9</body></message><r xmlns='urn:xmpp:sm:3'/>"))
        .unwrap();
    let ack = alice
        .read_until("h='1'", Duration::from_secs(5))
        .or_else(|_| alice.read_until("h=\"1\"", Duration::from_secs(1)));
    assert!(
        ack.is_ok(),
        "no <a h='1'/>: {ack:?}; log:\n{}",
        e.xmppd.log()
    );
    e.xmppd.kill_and_restart();
    let mut bob = login(&e.xmppd, "bob");
    bob.send("<presence/>").unwrap();
    let got = bob.read_until("kept through kill -9", Duration::from_secs(5));
    assert!(got.is_ok(), "{got:?}; log:\n{}", e.xmppd.log());
    let _ = NS_SASL;
}

/// The same server on PostgreSQL and on MariaDB: accounts, roster, offline messages.
#[test]
fn postgres_and_mariadb_backends() {
    for engine in [Engine::Postgres, Engine::Mysql] {
        let db = ScratchDb::create(engine);
        let e = env_on(Some(&db), &[]);
        e.expect("slix.py", "login", &["--mech", "SCRAM-SHA-256"]);
        e.expect("slix.py", "roster", &[]);
        e.expect("slix.py", "offline", &[]);
    }
}
