//! End-to-end tests of the `rtc-admin` binary: real command lines against a SQLite
//! database in a temporary config directory, and a real `turnd` for `init` and `up`.

use std::io::{BufRead as _, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use stun_proto::message::method;
use stun_proto::{attr, Class, Message, MessageBuilder};

/// `printf 'roland:falcot.com:secret' | md5sum`
const ROLAND_KEY: &str = "43a267e11838e2f018db6b75781ac136";

fn rtc_admin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtc-admin"));
    c.env_remove("RTC_CONFIG_DIR").env_remove("RUST_LOG");
    // Relative paths in turnd.toml must not depend on where the tool is started.
    c.current_dir("/");
    c
}

/// `rtc-admin --config-dir DIR ARGS...`
fn admin(dir: &Path, args: &[&str]) -> Output {
    rtc_admin()
        .arg("--config-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run rtc-admin")
}

/// Runs and expects exit 0; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = admin(dir, args);
    assert!(
        out.status.success(),
        "rtc-admin {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A config dir whose turnd.toml names a relative SQLite file and a realm, plus keys
/// rtc-admin does not read (it must ignore them).
fn config_dir(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("turnd.toml"),
        format!(
            "realm = \"falcot.com\"\nuserdb = \"turnd.sqlite\"\nlistening-ip = [\"127.0.0.1\"]\n\
             max-allocate-lifetime = 3600\n{extra}"
        ),
    )
    .unwrap();
    dir
}

fn with_store<T>(dir: &Path, f: impl AsyncFnOnce(&rtc_store::Store) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", dir.join("turnd.sqlite").display());
        let store = rtc_store::Store::connect(&url).await.unwrap();
        let out = f(&store).await;
        store.close().await;
        out
    })
}

/// `<target>/debug/turnd`, built by `cargo build -p turnd` (CI builds every binary first).
fn turnd_binary() -> PathBuf {
    daemon_binary("turnd")
}

/// `<target>/debug/NAME`, built by `cargo build -p NAME` (CI builds every binary first).
fn daemon_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/cli-<hash> -> <target>/debug/NAME
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .unwrap();
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p {name}` before these tests",
        path.display()
    );
    path
}

#[test]
fn add_list_key_delete_user() {
    let dir = config_dir("");
    let d = dir.path();
    assert_eq!(
        ok(
            d,
            &[
                "turn",
                "-a",
                "-u",
                "roland",
                "-r",
                "falcot.com",
                "-p",
                "secret"
            ]
        ),
        ""
    );
    // Long forms, and the realm taken from turnd.toml.
    ok(d, &["turn", "--add", "--user", "alice", "--password", "pw"]);
    ok(
        d,
        &["turn", "-a", "-u", "bob", "-r", "other.org", "-p", "pw"],
    );
    assert_eq!(
        ok(d, &["turn", "-l"]),
        "alice[falcot.com]\nroland[falcot.com]\nbob[other.org]\n"
    );
    assert_eq!(
        ok(d, &["turn", "-l", "-r", "other.org"]),
        "bob[other.org]\n"
    );

    let key = with_store(d, async |s| {
        s.turn().get_user_key("falcot.com", "roland").await.unwrap()
    });
    assert_eq!(key.as_deref().map(str::trim), Some(ROLAND_KEY));
    assert_eq!(
        ok(
            d,
            &[
                "turn",
                "-k",
                "-u",
                "roland",
                "-r",
                "falcot.com",
                "-p",
                "secret"
            ]
        ),
        format!("0x{ROLAND_KEY}\n")
    );
    // -k needs neither a database nor a config file when the realm is given.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        ok(
            empty.path(),
            &[
                "turn",
                "--key",
                "-u",
                "roland",
                "-r",
                "falcot.com",
                "-p",
                "secret"
            ]
        ),
        format!("0x{ROLAND_KEY}\n")
    );

    ok(d, &["turn", "-d", "-u", "roland", "-r", "falcot.com"]);
    assert_eq!(
        ok(d, &["turn", "-l"]),
        "alice[falcot.com]\nbob[other.org]\n"
    );
    let out = admin(d, &["turn", "-d", "-u", "roland", "-r", "falcot.com"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user `roland`"));
}

#[test]
fn shared_secrets() {
    let dir = config_dir("");
    let d = dir.path();
    ok(d, &["turn", "-s", "logen", "-r", "north.gov"]);
    ok(d, &["turn", "--set-secret", "s2", "-r", "north.gov"]);
    ok(d, &["turn", "-s", "home"]);
    assert_eq!(ok(d, &["turn", "-S", "-r", "north.gov"]), "logen\ns2\n");
    assert_eq!(ok(d, &["turn", "--show-secret"]), "home\n");
    ok(d, &["turn", "-X", "logen", "-r", "north.gov"]);
    assert_eq!(ok(d, &["turn", "-S", "-r", "north.gov"]), "s2\n");
    assert_eq!(
        admin(d, &["turn", "-X", "logen", "-r", "north.gov"])
            .status
            .code(),
        Some(1)
    );
    ok(d, &["turn", "--delete-all-secrets", "-r", "north.gov"]);
    assert_eq!(ok(d, &["turn", "-S", "-r", "north.gov"]), "");
    // Other realms are untouched.
    assert_eq!(ok(d, &["turn", "-S"]), "home\n");
}

#[test]
fn realm_options() {
    let dir = config_dir("");
    let d = dir.path();
    ok(
        d,
        &[
            "turn",
            "-g",
            "-r",
            "north.gov",
            "--user-quota",
            "10",
            "--total-quota",
            "100",
        ],
    );
    ok(d, &["turn", "--set-realm-option", "--max-bps", "3000"]);
    assert_eq!(
        ok(d, &["turn", "-G"]),
        "falcot.com: max-bps=3000\nnorth.gov: total-quota=100\nnorth.gov: user-quota=10\n"
    );
    // 0 removes the override, as in turnadmin.
    ok(d, &["turn", "-g", "-r", "north.gov", "--user-quota", "0"]);
    assert_eq!(
        ok(d, &["turn", "-G", "-r", "north.gov"]),
        "north.gov: total-quota=100\n"
    );
    let opts = with_store(d, async |s| {
        s.turn().realm_options("north.gov").await.unwrap()
    });
    assert_eq!(opts.total_quota, Some(100));
    assert_eq!(opts.user_quota, None);
}

#[test]
fn admin_accounts() {
    let dir = config_dir("");
    let d = dir.path();
    ok(d, &["turn", "-A", "-u", "root", "-p", "magi"]);
    ok(
        d,
        &[
            "turn",
            "--add-admin",
            "-u",
            "gov",
            "-p",
            "north",
            "-r",
            "north.gov",
        ],
    );
    assert_eq!(ok(d, &["turn", "-L"]), "gov[north.gov]\nroot\n");
    let (realm, hash) = with_store(d, async |s| s.turn().get_admin("root").await.unwrap())
        .expect("root admin stored");
    assert_eq!(realm, "");
    assert!(rtc_auth::admin_password::verify("magi", &hash));
    assert!(!hash.contains("magi"), "password stored in clear");
    ok(d, &["turn", "-D", "-u", "root"]);
    assert_eq!(ok(d, &["turn", "--list-admin"]), "gov[north.gov]\n");
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn check_rest_credentials(username: &str, password: &str, secret: &str, ttl: u64, user: &str) {
    assert_eq!(rtc_auth::turn::rest_password(secret, username), password);
    let (expiry, name) = username.split_once(':').unwrap();
    assert_eq!(name, user);
    let expiry: u64 = expiry.parse().unwrap();
    let expected = now() + ttl;
    assert!(
        expiry <= expected && expiry + 60 >= expected,
        "{expiry} vs {expected}"
    );
}

#[test]
fn rest_credentials_from_config_and_database() {
    // static-auth-secret in turnd.toml wins.
    let dir = config_dir("use-auth-secret = true\nstatic-auth-secret = [\"north\", \"old\"]\n");
    let out = ok(
        dir.path(),
        &["turn", "credentials", "--user", "alice", "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    check_rest_credentials(
        v["username"].as_str().unwrap(),
        v["password"].as_str().unwrap(),
        "north",
        86_400,
        "alice",
    );
    assert_eq!(v["ttl"], 86_400);
    let uris: Vec<&str> = v["uris"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        uris.contains(&"turn:127.0.0.1:3478?transport=udp"),
        "{uris:?}"
    );

    // Otherwise the realm's first secret in the database; human-readable output.
    let dir = config_dir("");
    let d = dir.path();
    let out = admin(d, &["turn", "credentials", "--user", "bob"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("static-auth-secret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(d, &["turn", "-s", "dbsecret"]);
    let out = ok(d, &["turn", "credentials", "--user", "bob", "--ttl", "600"]);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_owned()
    };
    check_rest_credentials(
        &field("username"),
        &field("password"),
        "dbsecret",
        600,
        "bob",
    );
    assert_eq!(field("ttl"), "600");

    // --secret needs nothing else.
    let empty = tempfile::tempdir().unwrap();
    let out = ok(
        empty.path(),
        &[
            "turn",
            "credentials",
            "--user",
            "carol",
            "--secret",
            "given",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    check_rest_credentials(
        v["username"].as_str().unwrap(),
        v["password"].as_str().unwrap(),
        "given",
        86_400,
        "carol",
    );
}

#[test]
fn errors_name_the_file_and_the_key() {
    let empty = tempfile::tempdir().unwrap();
    let out = admin(empty.path(), &["turn", "-l"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = empty.path().join("turnd.toml");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");

    std::fs::write(&file, "realm = \"x\"\n").unwrap();
    let stderr = String::from_utf8(admin(empty.path(), &["turn", "-l"]).stderr).unwrap();
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("`userdb`"), "{stderr}");

    std::fs::write(&file, "userdb = \"x.sqlite\"\n").unwrap();
    let stderr = String::from_utf8(admin(empty.path(), &["turn", "-s", "x"]).stderr).unwrap();
    assert!(stderr.contains("`realm`"), "{stderr}");

    // RTC_CONFIG_DIR is the default for --config-dir.
    let out = rtc_admin()
        .env("RTC_CONFIG_DIR", empty.path())
        .args(["turn", "-S", "-r", "r"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_flag_combinations_are_usage_errors() {
    let dir = config_dir("");
    for args in [
        &["turn"][..],
        &["turn", "-a", "-d", "-u", "roland", "-p", "x"],
        &["turn", "-a", "-u", "roland"],
        &["turn", "-d"],
        &["turn", "-g", "-r", "x"],
        &["turn", "-l", "--max-bps", "5"],
        &["turn", "-s"],
        &["turn", "credentials"],
        &["turn", "-l", "credentials", "--user", "x"],
        &["turn", "-l", "-b", "a", "-e", "postgres://h/db"],
        &["init"],
    ] {
        let out = admin(dir.path(), args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} should be a usage error"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error:"),
            "{args:?}"
        );
    }
}

#[test]
fn init_writes_an_instance_the_daemons_accept() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("instance");
    let d = dir.to_str().unwrap();
    let out = ok(
        root.path(),
        &[
            "init",
            "--dir",
            d,
            "--domain",
            "falcot.com",
            "--port-offset",
            "7",
        ],
    );
    for file in [
        "turnd.toml",
        "turnd.sqlite",
        "sipd.toml",
        "sipd.sqlite",
        "xmppd.toml",
        "xmppd.sqlite",
        "vhosts-available/falcot.com.toml",
        "vhosts-enabled/falcot.com.toml",
        "credentials.txt",
        "tls/falcot.com.crt",
        "tls/falcot.com.key",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("tls/falcot.com.key"), 0o600);
    assert_eq!(mode("credentials.txt"), 0o600);

    let config = std::fs::read_to_string(dir.join("turnd.toml")).unwrap();
    assert!(config.contains("listening-port = 3485"), "{config}");
    assert!(config.contains("prometheus-port = 9648"), "{config}");
    assert!(config.contains("NEVER copy this line"), "{config}");

    // The demo password is printed once and matches the stored key.
    let creds: toml::Table =
        toml::from_str(&std::fs::read_to_string(dir.join("credentials.txt")).unwrap()).unwrap();
    let password = creds["password"].as_str().unwrap();
    assert!(out.contains(password), "{out}");
    let key = with_store(&dir, async |s| {
        s.turn().get_user_key("falcot.com", "demo").await.unwrap()
    })
    .expect("demo user");
    assert_eq!(
        key.trim(),
        hex::encode(rtc_auth::turn::key_md5("demo", "falcot.com", password))
    );
    // rtc-admin finds the same database through the relative userdb.
    assert_eq!(ok(&dir, &["turn", "-l"]), "demo[falcot.com]\n");

    for daemon in ["turnd", "sipd", "xmppd"] {
        let check = Command::new(daemon_binary(daemon))
            .arg("--check-config")
            .arg("--config")
            .arg(dir.join(format!("{daemon}.toml")))
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{daemon} --check-config: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    assert!(
        std::fs::symlink_metadata(dir.join("vhosts-enabled/falcot.com.toml"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let accounts = ok(&dir, &["xmpp", "about"]);
    assert!(accounts.contains("falcot.com"), "{accounts}");
    let sip = std::fs::read_to_string(dir.join("sipd.toml")).unwrap();
    assert!(sip.contains("udp:127.0.0.1:5067"), "{sip}");
    assert!(sip.contains("tls:127.0.0.1:5068"), "{sip}");
    // The demo SIP accounts exist, with the demo password's HA1 (kamctl show).
    let shown = ok(&dir, &["sip", "show"]);
    assert!(shown.contains("alice") && shown.contains("bob"), "{shown}");
    let creds = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let url = format!("sqlite://{}", dir.join("sipd.sqlite").display());
            let store = rtc_store::Store::connect(&url).await.unwrap();
            store
                .sip()
                .credentials("alice", "falcot.com")
                .await
                .unwrap()
        })
        .expect("alice exists");
    assert_eq!(
        creds.ha1_md5,
        rtc_auth::sip::ha1(
            rtc_auth::sip::DigestAlgorithm::Md5,
            "alice",
            "falcot.com",
            password
        )
    );
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let root = tempfile::tempdir().unwrap();
    let d = root.path().to_str().unwrap();
    ok(root.path(), &["init", "--dir", d]);
    let before = std::fs::read(root.path().join("credentials.txt")).unwrap();
    let out = admin(root.path(), &["init", "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--force") && stderr.contains("turnd.toml"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(root.path().join("credentials.txt")).unwrap(),
        before
    );

    ok(root.path(), &["init", "--dir", d, "--force"]);
    assert_ne!(
        std::fs::read(root.path().join("credentials.txt")).unwrap(),
        before
    );
    assert_eq!(ok(root.path(), &["turn", "-l"]), "demo[localhost]\n");
}

/// Kills what `up` started if the test fails half-way, so no daemon outlives it.
struct Cleanup {
    admin: Child,
    turnd_pid: Option<i32>,
    /// Every daemon `up` reported starting, for the tests that watch all of them.
    daemon_pids: Vec<i32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.admin.kill();
        let _ = self.admin.wait();
        let pids = self.turnd_pid.iter().chain(&self.daemon_pids);
        // Only daemons still running: a daemon that exited long ago may have left its pid
        // to another test's process (pid_max is 32768 on small machines, so pids wrap).
        for &raw in pids.filter(|&&p| is_daemon(p)) {
            if let Some(pid) = rustix::process::Pid::from_raw(raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// Whether `pid` is one of the suite's daemons right now (by the kernel's name for it).
fn is_daemon(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| matches!(comm.trim_end(), "turnd" | "sipd" | "xmppd"))
}

/// `rtc-admin up --dir DIR --port-offset N` with stdout captured, killed by the guard.
fn start_up(dir: &Path, offset: u32, stderr: Stdio) -> Cleanup {
    let child = rtc_admin()
        .args(["up", "--dir", dir.to_str().unwrap(), "--port-offset"])
        .arg(offset.to_string())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    Cleanup {
        admin: child,
        turnd_pid: None,
        daemon_pids: Vec::new(),
    }
}

fn sigterm(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
}

/// Sends a STUN Binding request until the server answers; returns the mapped address.
fn stun_binding(server: std::net::SocketAddr, deadline: Instant) -> std::net::SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    let mut n = 0u8;
    while Instant::now() < deadline {
        n = n.wrapping_add(1);
        let tid = [n; 12];
        let request = MessageBuilder::new(method::BINDING, Class::Request, tid).finish();
        socket.send_to(&request, server).unwrap();
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let reply = Message::parse(&buf[..len]).expect("STUN reply");
        if reply.transaction_id() != tid {
            continue;
        }
        assert_eq!(reply.class(), Class::Success);
        let mapped = reply
            .xor_addresses(attr::XOR_MAPPED_ADDRESS)
            .next()
            .flatten()
            .expect("XOR-MAPPED-ADDRESS");
        assert_eq!(mapped, socket.local_addr().unwrap());
        return mapped;
    }
    panic!("no STUN answer from {server}");
}

/// Opens an XMPP client stream to `domain` and returns what the server sends until its
/// stream features have arrived.
fn xmpp_features(server: std::net::SocketAddr, domain: &str, deadline: Instant) -> String {
    use std::io::{Read as _, Write as _};
    while Instant::now() < deadline {
        let Ok(mut s) = std::net::TcpStream::connect(server) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        );
        s.write_all(header.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).contains("</stream:features>") {
                break;
            }
        }
        return String::from_utf8_lossy(&got).into_owned();
    }
    panic!("no XMPP answer from {server}");
}

/// Sends SIP OPTIONS over UDP until a status line comes back (or `deadline`).
fn sip_options(server: std::net::SocketAddr, deadline: Instant) -> String {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let req = format!(
        "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-up-test\r\n\
         Max-Forwards: 70\r\nFrom: <sip:test@localhost>;tag=t1\r\nTo: <sip:{server}>\r\n\
         Call-ID: up-test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.send_to(req.as_bytes(), server).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            return text.lines().next().unwrap_or_default().to_string();
        }
    }
    panic!("no SIP answer from {server}");
}

#[test]
fn up_runs_every_daemon_until_sigterm() {
    turnd_binary();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("local");
    let offset = 20_000 + std::process::id() % 1000;
    let mut guard = start_up(&dir, offset, Stdio::inherit());
    let (tx, rx) = mpsc::channel();
    let stdout = guard.admin.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut output = Vec::new();
    while guard.turnd_pid.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no `started turnd` line in {output:#?}"));
        guard.turnd_pid = line
            .strip_prefix("[rtc-admin] started turnd (pid ")
            .and_then(|rest| rest.split(')').next())
            .and_then(|pid| pid.parse().ok());
        output.push(line);
    }

    let port = 3478 + offset as u16;
    stun_binding(([127, 0, 0, 1], port).into(), deadline);
    // sipd answers an OPTIONS keep-alive on its instance port.
    let sip_port = 5060 + offset as u16;
    let status = sip_options(([127, 0, 0, 1], sip_port).into(), deadline);
    assert!(status.starts_with("SIP/2.0 200"), "{status}");
    // xmppd answers a stream header for the instance domain with its features.
    let xmpp_port = 5222 + offset as u16;
    let features = xmpp_features(([127, 0, 0, 1], xmpp_port).into(), "localhost", deadline);
    assert!(features.contains("starttls"), "{features}");

    sigterm(guard.admin.id());
    let status = loop {
        if let Some(status) = guard.admin.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "rtc-admin did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    output.extend(rx.try_iter());
    assert!(status.success(), "rtc-admin up: {status}\n{output:#?}");
    let summary = output.join("\n");
    assert!(
        summary.contains(&format!("turn:127.0.0.1:{port}")),
        "{summary}"
    );
    assert!(summary.contains("demo user: demo / "), "{summary}");
    assert!(summary.contains("[turnd] "), "{summary}");
    assert!(summary.contains("[sipd] "), "{summary}");
    assert!(summary.contains("[xmppd] "), "{summary}");
    assert!(
        summary.contains("SIP and XMPP account: alice@"),
        "{summary}"
    );
    let pid = rustix::process::Pid::from_raw(guard.turnd_pid.unwrap()).unwrap();
    assert!(
        rustix::process::test_kill_process(pid).is_err(),
        "turnd is still running"
    );
}

#[test]
fn up_reports_a_daemon_that_exits_early() {
    turnd_binary();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("busy");
    let offset = 21_000 + std::process::id() % 1000;
    // Hold turnd's UDP port so that it fails to start.
    let _busy = UdpSocket::bind(("127.0.0.1", 3478 + offset as u16)).unwrap();
    let mut guard = start_up(&dir, offset, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = guard.admin.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "rtc-admin up did not notice turnd exiting"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut guard.admin.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("turnd exited early (exit status: 1)"), "{out}");
}

/// Reads `up`'s stdout until it has started every daemon (its `Ctrl-C to stop` line) and
/// records their pids in the guard; returns the lines read.
fn wait_until_up(guard: &mut Cleanup, deadline: Instant) -> Vec<String> {
    let stdout = guard.admin.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut output = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("`up` did not finish starting: {output:#?}"));
        let pid: Option<i32> = line
            .strip_prefix("[rtc-admin] started ")
            .and_then(|rest| rest.split_once(" (pid "))
            .and_then(|(_, rest)| rest.split(')').next())
            .and_then(|pid| pid.parse().ok());
        guard.daemon_pids.extend(pid);
        let done = line == "[rtc-admin] Ctrl-C to stop";
        assert!(!line.contains("exited early"), "{output:#?}\n{line}");
        output.push(line);
        if done {
            break;
        }
    }
    assert_eq!(guard.daemon_pids.len(), 3, "{output:#?}");
    output
}

/// Whether `pid` runs (a zombie, which nobody may reap in a container, does not).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with(['Z', 'X'])
        }
        Err(_) => false,
    }
}

/// Waits until none of `pids` runs; panics naming the survivors at `deadline`.
fn assert_all_exit(pids: &[i32], deadline: Instant, what: &str) {
    while pids.iter().any(|&p| running(p)) {
        let alive: Vec<_> = pids.iter().filter(|&&p| running(p)).collect();
        assert!(
            Instant::now() < deadline,
            "{what}: daemons still running: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

fn wait_exit(child: &mut Child, deadline: Instant) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "rtc-admin up did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `rtc-admin up --dir DIR` expected to refuse at once; killed after a while if it runs.
fn up_once(dir: &Path) -> rtc_tests::ToolOutput {
    rtc_tests::run_tool(
        env!("CARGO_BIN_EXE_rtc-admin"),
        &["up", "--dir", dir.to_str().unwrap()],
        Duration::from_secs(30),
    )
}

/// A closed terminal (SIGHUP) stops `up` and its daemons as SIGTERM does, and the pid
/// file goes with them.
#[test]
fn up_stops_its_daemons_on_sighup() {
    turnd_binary();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("hup");
    let offset = 22_000 + std::process::id() % 1000;
    let mut guard = start_up(&dir, offset, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(60);
    wait_until_up(&mut guard, deadline);
    assert!(dir.join("up.pid").exists());

    signal(guard.admin.id(), rustix::process::Signal::HUP);
    let status = wait_exit(&mut guard.admin, deadline);
    assert!(status.success(), "rtc-admin up after SIGHUP: {status}");
    assert_all_exit(&guard.daemon_pids, deadline, "after SIGHUP to up");
    assert!(!dir.join("up.pid").exists(), "pid file left behind");
}

/// `kill -9` of `up` cannot be caught, yet the daemons die with it (their death signal),
/// and the next `up` of the instance starts normally from the stale pid file.
#[test]
fn killed_up_takes_its_daemons_along() {
    turnd_binary();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("kill9");
    let offset = 23_000 + std::process::id() % 1000;
    let mut guard = start_up(&dir, offset, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(60);
    wait_until_up(&mut guard, deadline);

    guard.admin.kill().unwrap();
    guard.admin.wait().unwrap();
    assert_all_exit(
        &guard.daemon_pids,
        Instant::now() + Duration::from_secs(15),
        "after SIGKILL to up",
    );

    let mut again = start_up(&dir, offset, Stdio::null());
    wait_until_up(&mut again, deadline);
    signal(again.admin.id(), rustix::process::Signal::TERM);
    let status = wait_exit(&mut again.admin, deadline);
    assert!(status.success(), "second rtc-admin up: {status}");
}

/// A second `up` of a running instance starts nothing: it names the running `up` and how
/// to stop it, and the first instance keeps running.
#[test]
fn second_up_of_a_running_instance_refuses_and_says_what_to_do() {
    turnd_binary();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("twice");
    let offset = 24_000 + std::process::id() % 1000;
    let mut guard = start_up(&dir, offset, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(60);
    wait_until_up(&mut guard, deadline);

    let out = up_once(&dir);
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(!stdout.contains("started"), "{stdout}");
    let up_pid = guard.admin.id();
    assert!(
        stderr.contains("still running")
            && stderr.contains(&format!("pid {up_pid}"))
            && stderr.contains(&format!("kill {up_pid}")),
        "{stderr}"
    );
    assert!(
        guard.daemon_pids.iter().all(|&p| running(p)),
        "the first instance was disturbed"
    );

    signal(up_pid, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut guard.admin, deadline).success());
}

/// Processes recorded by an `up` that is gone and that outlive the grace period are
/// reported with the command that stops them, and nothing is started.
#[test]
fn up_reports_leftover_daemons_and_starts_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("leftover");
    let d = dir.to_str().unwrap();
    ok(root.path(), &["init", "--dir", d, "--port-offset", "25000"]);
    // A live process under a recorded name stands in for a daemon that survived.
    let mut leftover = Command::new("sleep").arg("120").spawn().unwrap();
    let pid = leftover.id();
    // The recorded `up` (pid 0 never names a process) is gone.
    std::fs::write(dir.join("up.pid"), format!("rtc-admin 0\nsleep {pid}\n")).unwrap();
    let out = up_once(&dir);
    let _ = leftover.kill();
    let _ = leftover.wait();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(!stdout.contains("started"), "{stdout}");
    assert!(
        stderr.contains(&format!("sleep (pid {pid})")) && stderr.contains(&format!("kill {pid}")),
        "{stderr}"
    );
}
