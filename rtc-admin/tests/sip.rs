//! End-to-end tests of `rtc-admin sip`: the real binary against real databases (a SQLite
//! file found through sipd.toml's relative `db-url`; PostgreSQL and MariaDB scratch
//! databases through `-b`), and, for `ping` and `stats`, against small stand-ins for sipd
//! (a UDP responder answering OPTIONS, an HTTP responder serving /metrics) until the real
//! daemon exists.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{admin, admin_with_input, fails, ok};
use rtc_auth::sip::{ha1, ha1b, DigestAlgorithm};
use rtc_store::{LocationOp, LocationRow, SipSnapshot, Store};

/// A config dir whose sipd.toml names two domains and a relative SQLite file, plus keys
/// rtc-admin does not read (it must ignore them).
fn config_dir(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sipd.toml"),
        format!(
            "domain = [\"sip.example.org\", \"other.org\"]\ndb-url = \"sipd.sqlite\"\n\
             max-expires = 3600\n{extra}"
        ),
    )
    .unwrap();
    dir
}

fn with_store<T>(url: &str, f: impl AsyncFnOnce(&Store) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::connect(url).await.unwrap();
        let out = f(&store).await;
        store.close().await;
        out
    })
}

fn sqlite_url(dir: &Path) -> String {
    dir.join("sipd.sqlite").display().to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn subscribers_add_show_passwd_rm() {
    let dir = config_dir("");
    let d = dir.path();
    assert_eq!(ok(d, &["sip", "add", "alice", "wonderland"]), "");
    ok(d, &["sip", "add", "bob@other.org", "builder"]);
    ok(d, &["sip", "add", "carol@Other.ORG", "x"]);
    let e = fails(d, &["sip", "add", "alice@sip.example.org", "again"]);
    assert!(e.contains("`alice@sip.example.org` exists"), "{e}");
    assert_eq!(
        ok(d, &["sip", "show"]),
        "bob@other.org\ncarol@other.org\nalice@sip.example.org\n"
    );
    assert_eq!(
        ok(d, &["sip", "show", "alice"]),
        "user: alice@sip.example.org\ndigest: MD5 SHA-256\nregistrations: 0\n"
    );

    // Stored as Kamailio's auth_db reads it, for realm = the user's domain (the realm sipd
    // challenges with); no clear text.
    let url = sqlite_url(d);
    let creds = with_store(&url, async |s| {
        s.sip().credentials("bob", "other.org").await.unwrap()
    })
    .expect("bob stored");
    let md5 = DigestAlgorithm::Md5;
    assert_eq!(creds.ha1_md5, ha1(md5, "bob", "other.org", "builder"));
    assert_eq!(
        creds.ha1b_md5,
        ha1b(md5, "bob", "other.org", "other.org", "builder")
    );
    assert_eq!(
        creds.ha1_sha256.as_deref(),
        Some(ha1(DigestAlgorithm::Sha256, "bob", "other.org", "builder").as_str())
    );
    let snapshot = with_store(&url, async |s| s.sip().snapshot().await.unwrap());
    assert!(snapshot.subscribers.iter().all(|s| s.password.is_empty()));

    ok(d, &["sip", "passwd", "bob@other.org", "fixer"]);
    let creds = with_store(&url, async |s| {
        s.sip().credentials("bob", "other.org").await.unwrap()
    })
    .unwrap();
    assert_eq!(creds.ha1_md5, ha1(md5, "bob", "other.org", "fixer"));
    // --realm overrides the configured realm.
    ok(
        d,
        &[
            "sip",
            "passwd",
            "--realm",
            "other.org",
            "bob@other.org",
            "fixer",
        ],
    );
    let creds = with_store(&url, async |s| {
        s.sip().credentials("bob", "other.org").await.unwrap()
    })
    .unwrap();
    assert_eq!(creds.ha1_md5, ha1(md5, "bob", "other.org", "fixer"));
    let e = fails(d, &["sip", "passwd", "nobody", "x"]);
    assert!(e.contains("no subscriber `nobody@sip.example.org`"), "{e}");

    ok(d, &["sip", "rm", "alice"]);
    assert_eq!(ok(d, &["sip", "show"]), "bob@other.org\ncarol@other.org\n");
    let e = fails(d, &["sip", "rm", "alice"]);
    assert!(e.contains("no subscriber `alice@sip.example.org`"), "{e}");
    fails(d, &["sip", "show", "alice"]);
}

#[test]
fn user_location_add_show_rm_online() {
    let dir = config_dir("");
    let d = dir.path();
    ok(
        d,
        &[
            "sip",
            "ul",
            "add",
            "alice",
            "sip:alice@192.0.2.10:5060",
            "3600",
        ],
    );
    ok(
        d,
        &[
            "sip",
            "ul",
            "add",
            "sip:bob@other.org",
            "sip:bob@192.0.2.20",
        ],
    );
    // The same contact again refreshes the binding instead of adding a second one.
    ok(
        d,
        &[
            "sip",
            "ul",
            "add",
            "alice",
            "sip:alice@192.0.2.10:5060",
            "3600",
        ],
    );
    ok(
        d,
        &["sip", "ul", "add", "alice", "sips:alice@192.0.2.11", "600"],
    );
    let e = fails(d, &["sip", "ul", "add", "alice", "alice@192.0.2.10", "60"]);
    assert!(e.contains("not a sip:"), "{e}");

    let show = ok(d, &["sip", "ul", "show", "alice"]);
    let lines: Vec<&str> = show.lines().collect();
    assert_eq!(lines[0], "AOR: alice@sip.example.org", "{show}");
    assert_eq!(
        show.matches("Contact: <sip:alice@192.0.2.10:5060>").count(),
        1,
        "{show}"
    );
    let expires: u64 = show
        .split("<sip:alice@192.0.2.10:5060>;q=1.00;expires=")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no expiry in {show}"));
    assert!((3590..=3600).contains(&expires), "{show}");
    assert!(show.contains("cseq=2"), "a refresh counts up: {show}");
    assert!(show.contains("<sips:alice@192.0.2.11>"), "{show}");
    let all = ok(d, &["sip", "ul", "show"]);
    assert!(
        all.starts_with(
            "AOR: bob@other.org\n    Contact: <sip:bob@192.0.2.20>;q=1.00;expires=permanent\n"
        ),
        "{all}"
    );

    // A binding that expired (the registrar has not purged it yet) is not online.
    let url = sqlite_url(d);
    with_store(&url, async |s| {
        let row = LocationRow {
            ruid: "gone".into(),
            username: "carol".into(),
            domain: Some("sip.example.org".into()),
            contact: "sip:carol@192.0.2.30".into(),
            expires: now() - 5,
            q: 1.0,
            callid: "c".into(),
            last_modified: now() - 65,
            ..LocationRow::default()
        };
        s.sip()
            .apply_location_batch(&[LocationOp::Upsert(row)])
            .await
            .unwrap()
    });
    assert_eq!(
        ok(d, &["sip", "online"]),
        "alice@sip.example.org\nbob@other.org\n"
    );
    assert!(ok(d, &["sip", "ul", "show", "carol"]).contains(";expires=expired"));

    ok(d, &["sip", "ul", "rm", "alice@sip.example.org"]);
    let e = fails(d, &["sip", "ul", "show", "alice"]);
    assert!(
        e.contains("no registrations for `alice@sip.example.org`"),
        "{e}"
    );
    fails(d, &["sip", "ul", "rm", "alice"]);
    assert_eq!(ok(d, &["sip", "online"]), "bob@other.org\n");
    // The subscriber view counts live registrations.
    ok(d, &["sip", "add", "bob@other.org", "pw"]);
    assert!(ok(d, &["sip", "show", "bob@other.org"]).ends_with("registrations: 1\n"));
}

/// backup -> drop -> create -> restore gives back every row, on the database that
/// `args` (config, or `-b URL`) selects; `url` opens it for checks.
fn backup_drop_create_restore(d: &Path, db: &[&str], url: &str) {
    let cmd = |rest: &[&str]| -> Vec<String> {
        ["sip"]
            .iter()
            .chain(db)
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |rest: &[&str]| {
        let args = cmd(rest);
        ok(d, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let run_with = |rest: &[&str], input: &str| {
        let args = cmd(rest);
        admin_with_input(
            d,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            input,
        )
    };
    run(&["add", "alice@sip.example.org", "wonderland"]);
    run(&["add", "o'brien@other.org", "x"]);
    run(&[
        "ul",
        "add",
        "alice@sip.example.org",
        "sip:alice@192.0.2.10",
        "3600",
    ]);
    run(&[
        "ul",
        "add",
        "o'brien@other.org",
        "sip:ob@[2001:db8::1]:5070",
    ]);
    let before: SipSnapshot = with_store(url, async |s| s.sip().snapshot().await.unwrap());
    assert_eq!(before.subscribers.len(), 2);
    assert_eq!(before.locations.len(), 2);

    let file = d.join("sip-backup.jsonl");
    let file = file.to_str().unwrap();
    run(&["db", "backup", file]);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Refused without a yes; nothing happens.
    let out = run_with(&["db", "drop"], "n\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing dropped"));
    assert_eq!(run(&["show"]).lines().count(), 2);
    // Confirmed on stdin.
    let out = run_with(&["db", "drop"], "yes\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run(&["db", "create"]);
    assert_eq!(run(&["show"]), "");

    run(&["db", "restore", file]);
    let after = with_store(url, async |s| s.sip().snapshot().await.unwrap());
    assert_eq!(after, before);
    assert_eq!(run(&["show"]), "o'brien@other.org\nalice@sip.example.org\n");
    // Restoring over rows asks first; --yes does not.
    let out = run_with(&["db", "restore", file], "\n");
    assert_eq!(out.status.code(), Some(1));
    run(&["db", "restore", "--yes", file]);
    run(&["db", "drop", "--yes"]);
}

#[test]
fn db_backup_drop_create_restore_sqlite() {
    let dir = config_dir("");
    let d = dir.path();
    backup_drop_create_restore(d, &[], &sqlite_url(d));
}

#[cfg(feature = "postgres")]
#[test]
fn db_backup_drop_create_restore_postgres() {
    use rtc_tests::scratch_db::{Engine, ScratchDb};
    let db = ScratchDb::create(Engine::Postgres);
    let url = db.url();
    // No sipd.toml needed when -b and user@domain are given... except for the realm.
    let dir = config_dir("");
    backup_drop_create_restore(dir.path(), &["-b", &url], &url);
}

#[cfg(feature = "mysql")]
#[test]
fn db_backup_drop_create_restore_mysql() {
    use rtc_tests::scratch_db::{Engine, ScratchDb};
    let db = ScratchDb::create(Engine::Mysql);
    let url = db.url();
    let dir = config_dir("");
    backup_drop_create_restore(dir.path(), &["-b", &url], &url);
}

#[test]
fn backup_pipes_through_stdout_and_stdin() {
    // A SQLite backup restores into a second SQLite file through stdin/stdout, the way an
    // operator pipes between hosts.
    let dir = config_dir("");
    let d = dir.path();
    ok(d, &["sip", "add", "alice", "pw"]);
    ok(
        d,
        &["sip", "ul", "add", "alice", "sip:alice@192.0.2.10", "120"],
    );
    let dump = ok(d, &["sip", "db", "backup", "-"]);
    assert!(dump.starts_with("{\"record\":\"header\""), "{dump}");
    let other = d.join("other.sqlite");
    let other = other.to_str().unwrap();
    let out = admin_with_input(d, &["sip", "-b", other, "db", "restore", "-"], &dump);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ok(d, &["sip", "-b", other, "online"]),
        "alice@sip.example.org\n"
    );
    let e = String::from_utf8(
        admin_with_input(
            d,
            &["sip", "db", "restore", "-"],
            "{\"record\":\"subscriber\"}\n",
        )
        .stderr,
    )
    .unwrap();
    assert!(e.contains("stdin:1:") || e.contains("no header"), "{e}");
}

/// A stand-in for sipd's UDP listener: answers each OPTIONS with 200 OK carrying the
/// request's Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2), after a stray datagram
/// that the client must ignore; hands each request to the test.
fn options_responder(requests: usize) -> (SocketAddr, mpsc::Receiver<String>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        for _ in 0..requests {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut response = String::from("SIP/2.0 200 OK\r\n");
            for line in request.lines() {
                let name = line.split(':').next().unwrap_or_default();
                if ["Via", "From", "Call-ID", "CSeq"].contains(&name) {
                    response.push_str(line.trim_end());
                    response.push_str("\r\n");
                } else if name == "To" {
                    response.push_str(&format!("{};tag=responder\r\n", line.trim_end()));
                }
            }
            response.push_str("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER\r\n");
            response.push_str("Content-Length: 0\r\n\r\n");
            let stray = "SIP/2.0 200 OK\r\nCall-ID: someone-else\r\nCSeq: 1 OPTIONS\r\n\r\n";
            let _ = socket.send_to(stray.as_bytes(), from);
            let _ = socket.send_to(response.as_bytes(), from);
            if tx.send(request).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn ping_sends_options_and_prints_the_status_line() {
    let (addr, requests) = options_responder(2);
    let dir = config_dir(&format!("listen = [\"tcp:127.0.0.1:1\", \"udp:{addr}\"]\n"));
    let d = dir.path();

    // No URI: sipd's first domain at its first udp listener.
    let out = ok(d, &["sip", "ping"]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("SIP/2.0 200 OK"), "{out}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with(&format!("from {addr} in ")) && l.ends_with(" ms")),
        "{out}"
    );
    let request = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    let header = |name: &str| -> String {
        request
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {request}"))
            .to_owned()
    };
    assert!(
        request.starts_with("OPTIONS sip:sip.example.org SIP/2.0\r\n"),
        "{request}"
    );
    assert!(
        header("Via").starts_with("SIP/2.0/UDP 127.0.0.1:"),
        "{request}"
    );
    assert!(header("Via").contains(";branch=z9hG4bK"), "{request}");
    assert!(header("From").contains(";tag="), "{request}");
    assert_eq!(header("To"), "<sip:sip.example.org>");
    assert_eq!(header("CSeq"), "1 OPTIONS");
    assert_eq!(header("Max-Forwards"), "70");
    assert_eq!(header("Content-Length"), "0");
    assert!(!header("Call-ID").is_empty());
    assert!(request.ends_with("\r\n\r\n"), "{request:?}");

    // An explicit URI with a literal address goes there, whatever sipd.toml says.
    let uri = format!("sip:{addr}");
    let empty = tempfile::tempdir().unwrap();
    let out = ok(empty.path(), &["sip", "ping", &uri]);
    assert!(out.starts_with("SIP/2.0 200 OK\n"), "{out}");
    let request = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        request.starts_with(&format!("OPTIONS {uri} SIP/2.0\r\n")),
        "{request}"
    );
}

#[test]
fn ping_without_an_answer_fails_after_three_seconds() {
    // A bound socket that never answers (a closed port could answer with ICMP).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let dir = config_dir("");
    let start = Instant::now();
    let e = fails(dir.path(), &["sip", "ping", &format!("sip:alice@{addr}")]);
    let took = start.elapsed();
    assert!(e.contains(&format!("no answer from {addr}")), "{e}");
    assert!(e.contains("within 3 s"), "{e}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    drop(silent);
    // sips: cannot be pinged over UDP; sipd.toml without a udp listener says so.
    let e = fails(dir.path(), &["sip", "ping", "sips:127.0.0.1"]);
    assert!(e.contains("sips:"), "{e}");
    let tcp_only = config_dir("listen = [\"tcp:127.0.0.1:5060\", \"tls:127.0.0.1\"]\n");
    let e = fails(tcp_only.path(), &["sip", "ping"]);
    assert!(e.contains("`listen` has no udp: entry"), "{e}");
}

/// A stand-in for sipd's /metrics: serves one scrape and hands the request to the test.
fn metrics_responder(body: &'static str) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = write!(
            stream,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\r\n{body}"
        );
        let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
    });
    (addr, rx)
}

#[test]
fn stats_prints_the_sipd_metrics() {
    let (addr, requests) = metrics_responder(
        "# HELP sipd_requests_total SIP requests received.\n\
         # TYPE sipd_requests_total counter\n\
         sipd_requests_total{method=\"REGISTER\"} 12\n\
         sipd_registrations 3\n\
         process_open_fds 9\n",
    );
    let dir = config_dir(&format!(
        "prometheus = true\nprometheus-address = \"{}\"\nprometheus-port = {}\n",
        addr.ip(),
        addr.port()
    ));
    assert_eq!(
        ok(dir.path(), &["sip", "stats"]),
        "sipd_requests_total{method=\"REGISTER\"} 12\nsipd_registrations 3\n"
    );
    let request = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        request.starts_with("GET /metrics HTTP/1.0\r\n"),
        "{request}"
    );

    // Nothing listening: a clear error naming the URL.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = config_dir(&format!("prometheus = true\nprometheus-port = {port}\n"));
    let e = fails(dir.path(), &["sip", "stats"]);
    assert!(
        e.contains(&format!(
            "cannot reach sipd's metrics at http://127.0.0.1:{port}/metrics"
        )),
        "{e}"
    );
    // The endpoint turned off (sipd's default).
    let dir = config_dir("");
    let e = fails(dir.path(), &["sip", "stats"]);
    assert!(e.contains("`prometheus` is not enabled"), "{e}");
}

#[test]
fn errors_name_the_file_and_the_key() {
    let empty = tempfile::tempdir().unwrap();
    let file = empty.path().join("sipd.toml");
    let e = fails(empty.path(), &["sip", "show"]);
    assert!(e.contains(&file.display().to_string()), "{e}");

    std::fs::write(&file, "domain = [\"sip.example.org\"]\ndb-url = \"\"\n").unwrap();
    let e = fails(empty.path(), &["sip", "show"]);
    assert!(
        e.contains("`db-url`") && e.contains(&file.display().to_string()),
        "{e}"
    );
    // Without `db-url`, sipd's default: sipd.sqlite next to sipd.toml.
    std::fs::write(&file, "listen = [\"udp:127.0.0.1:5090\"]\n").unwrap();
    assert_eq!(ok(empty.path(), &["sip", "show"]), "");
    assert!(empty.path().join("sipd.sqlite").is_file());
    let e = fails(empty.path(), &["sip", "add", "alice", "pw"]);
    assert!(e.contains("`domain`"), "{e}");
    // Everything on the command line: no config needed.
    let nothing = tempfile::tempdir().unwrap();
    let db = nothing.path().join("x.sqlite");
    let db = db.to_str().unwrap();
    ok(
        nothing.path(),
        &[
            "sip",
            "-b",
            db,
            "add",
            "--realm",
            "example.org",
            "alice@example.org",
            "pw",
        ],
    );
    assert_eq!(
        ok(nothing.path(), &["sip", "show", "-b", db]),
        "alice@example.org\n"
    );

    for args in [
        &["sip"][..],
        &["sip", "add", "alice"],
        &["sip", "ul"],
        &["sip", "ul", "add", "alice"],
        &["sip", "ul", "add", "alice", "sip:a@h", "soon"],
        &["sip", "db", "backup"],
        &["sip", "db", "drop", "--force"],
    ] {
        let out = admin(empty.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} should be a usage error"
        );
    }
}
