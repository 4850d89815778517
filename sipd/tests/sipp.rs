//! sipd against SIPp (Debian's `sip-tester`), the load and conformance tool SIP operators
//! use: REGISTER with a digest challenge, re-REGISTER and de-REGISTER, and full calls
//! (INVITE/407/ACK, INVITE with Proxy-Authorization, 100/180/200/ACK/BYE) between two SIPp
//! instances through sipd, over UDP, TCP and TLS; bindings surviving `kill -9`; the same
//! on PostgreSQL and MariaDB.
//!
//! The scenarios are the ones the benchmark runs (`tests/sipp/*.xml`, see its README).
//! Debian's SIPp is built without TLS, so TLS runs go through `socat` (OpenSSL) as the TLS
//! client: SIPp speaks TCP to socat, socat speaks TLS 1.2+ to sipd.

use rtc_store::{LocationRow, Store};
use rtc_tests::scratch_db::{Engine, ScratchDb};
use rtc_tests::sipd::{Sipd, DOMAIN};
use rtc_tests::tool::Background;
use rtc_tests::{free_udp_tcp_port, run_tool, ToolOutput};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SIPP_TIMEOUT: Duration = Duration::from_secs(90);
const PASSWORD: &str = "pass-1234";

fn sipd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sipd"))
}

fn scenario(name: &str) -> String {
    format!("{}/../tests/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A sipd whose digest challenge SIPp can answer: SIPp only speaks MD5 and answers the
/// first challenge it sees, so MD5 is offered first here (sipd's default puts SHA-256
/// first, RFC 8760 section 2.4).
///
/// Every SIPp runs on 127.0.0.1, so to pike they are all one source sending hundreds of
/// requests a second: its density is raised (pike itself is tested in `startup.rs`).
fn sipd() -> rtc_tests::sipd::SipdBuilder {
    Sipd::builder(sipd_bin())
        .set("auth-algorithms", "[\"MD5\", \"SHA-256\"]")
        .set("pike-reqs-density-per-unit", "100000")
}

fn db_url(s: &Sipd, server: Option<&ScratchDb>) -> String {
    match server {
        Some(db) => db.url(),
        None => s.db_path().to_string_lossy().into_owned(),
    }
}

/// Creates `prefix0001..` subscribers (kamctl add) straight in sipd's database.
fn add_users(url: &str, prefix: &str, first: u32, count: u32) {
    block_on(async {
        let store = Store::connect(url).await.expect("database");
        store.migrate_sip().await.expect("migrate");
        for i in first..first + count {
            let user = format!("{prefix}{i:04}");
            store
                .sip()
                .add_subscriber(&user, DOMAIN, DOMAIN, PASSWORD)
                .await
                .expect("add");
        }
    })
}

fn locations(url: &str) -> Vec<LocationRow> {
    block_on(async {
        let store = Store::connect(url).await.expect("database");
        store.sip().load_locations().await.expect("locations")
    })
}

/// `user;password;domain` lines for `-inf`.
fn users_csv(dir: &Path, name: &str, prefix: &str, first: u32, count: u32) -> PathBuf {
    let mut text = String::from("SEQUENTIAL\n");
    for i in first..first + count {
        text.push_str(&format!("{prefix}{i:04};{PASSWORD};{DOMAIN}\n"));
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `caller;password;domain;callee` lines for `uac_auth.xml`.
fn calls_csv(dir: &Path, callers: (&str, u32), callees: (&str, u32), count: u32) -> PathBuf {
    let mut text = String::from("SEQUENTIAL\n");
    for i in 0..count {
        text.push_str(&format!(
            "{}{:04};{PASSWORD};{DOMAIN};{}{:04}\n",
            callers.0,
            callers.1 + i,
            callees.0,
            callees.1 + i
        ));
    }
    let p = dir.join("calls.csv");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs SIPp to completion: every call of the scenario must succeed (exit status 0).
fn sipp(args: &[&str], target: &str) -> ToolOutput {
    let mut all: Vec<&str> = vec![
        "-i",
        "127.0.0.1",
        "-nostdin",
        "-default_behaviors",
        "all,-bye",
        "-max_socket",
        "1000",
        "-recv_timeout",
        "10000",
        "-timeout",
        "60s",
    ];
    all.extend_from_slice(args);
    all.push(target);
    run_tool("sipp", &all, SIPP_TIMEOUT)
}

fn assert_sipp(out: &ToolOutput, what: &str, s: &Sipd) {
    assert!(
        out.success(),
        "{what} failed:\n{out}\nsipd log:\n{}",
        s.log()
    );
}

/// The SIP transport SIPp uses and the address it talks to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Leg {
    Udp,
    Tcp,
    /// SIPp over TCP to a socat that speaks TLS to sipd.
    Tls,
}

impl Leg {
    fn sipp_transport(self) -> &'static str {
        match self {
            Leg::Udp => "u1",
            Leg::Tcp | Leg::Tls => "t1",
        }
    }
}

/// socat bridging plain TCP on a local port to sipd's TLS port (OpenSSL client, no
/// certificate check: the test certificate is self-signed).
fn tls_bridge(tls: std::net::SocketAddr) -> (Background, String) {
    let port = free_udp_tcp_port();
    let listen = format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork");
    let connect = format!("OPENSSL:{tls},verify=0,openssl-min-proto-version=TLS1.2");
    let b = Background::spawn("socat", &[&listen, &connect]);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (b, format!("127.0.0.1:{port}"))
}

fn start(server_db: Option<&ScratchDb>, tls: bool) -> Sipd {
    let mut b = sipd();
    if let Some(db) = server_db {
        b = b.set("db-url", &format!("\"{}\"", db.url()));
    }
    if tls {
        b = b.tls();
    }
    b.start()
}

/// Register, refresh, de-register (register_auth.xml), then register and stay
/// (register_auth_only.xml): the bindings are in the location table when SIPp is told 200.
fn register_flow(leg: Leg, server_db: Option<&ScratchDb>) {
    let s = start(server_db, leg == Leg::Tls);
    let url = db_url(&s, server_db);
    add_users(&url, "u", 1, 8);
    let (_bridge, target) = match leg {
        Leg::Tls => {
            let (b, t) = tls_bridge(s.tls_addr().unwrap());
            (Some(b), t)
        }
        _ => (None, s.addr().to_string()),
    };
    let csv = users_csv(s.dir.path(), "life.csv", "u", 1, 4);
    let csv = csv.to_string_lossy().into_owned();
    let port = free_udp_tcp_port().to_string();
    let out = sipp(
        &[
            "-sf",
            &scenario("register_auth.xml"),
            "-inf",
            &csv,
            "-t",
            leg.sipp_transport(),
            "-p",
            &port,
            "-r",
            "10",
            "-m",
            "4",
        ],
        &target,
    );
    assert_sipp(&out, "register/refresh/de-register", &s);
    assert!(
        locations(&url).is_empty(),
        "de-REGISTER removed every binding"
    );

    let csv = users_csv(s.dir.path(), "only.csv", "u", 5, 4);
    let csv = csv.to_string_lossy().into_owned();
    let out = sipp(
        &[
            "-sf",
            &scenario("register_auth_only.xml"),
            "-inf",
            &csv,
            "-t",
            leg.sipp_transport(),
            "-p",
            &port,
            "-r",
            "10",
            "-m",
            "4",
        ],
        &target,
    );
    assert_sipp(&out, "register", &s);
    let mut users: Vec<String> = locations(&url).into_iter().map(|r| r.username).collect();
    users.sort();
    assert_eq!(users, ["u0005", "u0006", "u0007", "u0008"]);
}

/// Callees register from the port their UAS SIPp then listens on; callers call them with
/// proxy authentication; both SIPps must see every call complete.
fn call_flow(leg: Leg, server_db: Option<&ScratchDb>) {
    let s = start(server_db, leg == Leg::Tls);
    let url = db_url(&s, server_db);
    add_users(&url, "a", 1, 4);
    add_users(&url, "b", 1, 4);
    let (_bridge, target) = match leg {
        Leg::Tls => {
            let (b, t) = tls_bridge(s.tls_addr().unwrap());
            (Some(b), t)
        }
        _ => (None, s.addr().to_string()),
    };
    // The callee leg: UDP behind the TLS bridge (sipd cannot open a connection back
    // through socat), the same transport otherwise.
    let (callee_t, callee_target) = match leg {
        Leg::Tls => ("u1", s.addr().to_string()),
        _ => (leg.sipp_transport(), target.clone()),
    };
    let uas_port = free_udp_tcp_port().to_string();
    let callees = users_csv(s.dir.path(), "callees.csv", "b", 1, 4);
    let callees = callees.to_string_lossy().into_owned();
    let out = sipp(
        &[
            "-sf",
            &scenario("register_auth_only.xml"),
            "-inf",
            &callees,
            "-t",
            callee_t,
            "-p",
            &uas_port,
            "-r",
            "10",
            "-m",
            "4",
        ],
        &callee_target,
    );
    assert_sipp(&out, "callee registration", &s);
    let uas_log = s.dir.path().join("uas.log");
    let uas_log_s = uas_log.to_string_lossy().into_owned();
    let mut uas_args: Vec<String> = [
        "-sf",
        &scenario("uas.xml"),
        "-i",
        "127.0.0.1",
        "-t",
        callee_t,
        "-p",
        &uas_port,
        "-m",
        "4",
        "-nostdin",
        "-default_behaviors",
        "all,-bye",
        "-timeout",
        "60s",
        "-trace_err",
        "-error_file",
        &uas_log_s,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if callee_t == "t1" {
        // A TCP UAS must keep its registered connection to the proxy: it connects to sipd
        // first (the proxy reuses that connection, RFC 5923-style, to reach it).
        uas_args.push(callee_target.clone());
    }
    let uas_refs: Vec<&str> = uas_args.iter().map(String::as_str).collect();
    let uas = std::thread::spawn({
        let uas_refs: Vec<String> = uas_refs.iter().map(|s| s.to_string()).collect();
        move || {
            let r: Vec<&str> = uas_refs.iter().map(String::as_str).collect();
            run_tool("sipp", &r, SIPP_TIMEOUT)
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let calls = calls_csv(s.dir.path(), ("a", 1), ("b", 1), 4);
    let calls = calls.to_string_lossy().into_owned();
    let caller_port = free_udp_tcp_port().to_string();
    let out = sipp(
        &[
            "-sf",
            &scenario("uac_auth.xml"),
            "-inf",
            &calls,
            "-t",
            leg.sipp_transport(),
            "-p",
            &caller_port,
            "-r",
            "10",
            "-m",
            "4",
            "-d",
            "200",
        ],
        &target,
    );
    assert_sipp(&out, "calls (caller side)", &s);
    let uas_out = uas.join().unwrap();
    assert!(
        uas_out.success(),
        "calls (callee side) failed:\n{uas_out}\n{}\nsipd log:\n{}",
        std::fs::read_to_string(&uas_log).unwrap_or_default(),
        s.log()
    );
}

#[test]
fn sipp_register_udp() {
    register_flow(Leg::Udp, None);
}

#[test]
fn sipp_register_tcp() {
    register_flow(Leg::Tcp, None);
}

#[test]
fn sipp_register_tls() {
    register_flow(Leg::Tls, None);
}

#[test]
fn sipp_call_udp() {
    call_flow(Leg::Udp, None);
}

#[test]
fn sipp_call_tcp() {
    call_flow(Leg::Tcp, None);
}

#[test]
fn sipp_call_tls() {
    call_flow(Leg::Tls, None);
}

#[test]
fn sipp_register_and_call_on_postgres() {
    let db = ScratchDb::create(Engine::Postgres);
    register_flow(Leg::Udp, Some(&db));
    let db = ScratchDb::create(Engine::Postgres);
    call_flow(Leg::Udp, Some(&db));
}

#[test]
fn sipp_register_and_call_on_mariadb() {
    let db = ScratchDb::create(Engine::Mysql);
    register_flow(Leg::Udp, Some(&db));
    let db = ScratchDb::create(Engine::Mysql);
    call_flow(Leg::Udp, Some(&db));
}

/// Every binding acknowledged with 200 is durable: 300 users register at 300/s, sipd is
/// killed with SIGKILL the moment SIPp has its last 200, and after a restart every binding
/// is in the table, loaded, and calls still route to them.
#[test]
fn kill_9_loses_no_acknowledged_binding() {
    let mut s = sipd().prometheus().start();
    let url = db_url(&s, None);
    add_users(&url, "k", 1, 300);
    add_users(&url, "a", 1, 4);
    let uas_port = free_udp_tcp_port().to_string();
    let csv = users_csv(s.dir.path(), "k.csv", "k", 1, 300);
    let csv = csv.to_string_lossy().into_owned();
    let out = sipp(
        &[
            "-sf",
            &scenario("register_auth_only.xml"),
            "-inf",
            &csv,
            "-t",
            "u1",
            "-p",
            &uas_port,
            "-r",
            "300",
            "-m",
            "300",
            "-l",
            "300",
        ],
        &s.addr().to_string(),
    );
    assert_sipp(&out, "300 registrations", &s);
    s.kill_and_restart();
    assert_eq!(
        locations(&url).len(),
        300,
        "every acknowledged binding is in the table"
    );
    let n = s.wait_metric("sipd_registered_contacts", 300.0);
    assert_eq!(n, 300.0, "and loaded again");
    let uas = std::thread::spawn({
        let uas_port = uas_port.clone();
        move || {
            run_tool(
                "sipp",
                &[
                    "-sf",
                    &scenario("uas.xml"),
                    "-i",
                    "127.0.0.1",
                    "-t",
                    "u1",
                    "-p",
                    &uas_port,
                    "-m",
                    "4",
                    "-nostdin",
                    "-timeout",
                    "60s",
                ],
                SIPP_TIMEOUT,
            )
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let calls = calls_csv(s.dir.path(), ("a", 1), ("k", 10), 4);
    let calls = calls.to_string_lossy().into_owned();
    let caller_port = free_udp_tcp_port().to_string();
    let out = sipp(
        &[
            "-sf",
            &scenario("uac_auth.xml"),
            "-inf",
            &calls,
            "-t",
            "u1",
            "-p",
            &caller_port,
            "-r",
            "10",
            "-m",
            "4",
            "-d",
            "100",
        ],
        &s.addr().to_string(),
    );
    assert_sipp(&out, "calls after the restart", &s);
    assert!(uas.join().unwrap().success());
}
