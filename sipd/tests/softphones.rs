//! sipd against real softphones: Debian's baresip 1.0 and linphonec 5.1 register and call
//! each other through it, sipsak registers and pings it. These are the clients a
//! Kamailio-class registrar and proxy is judged by; each test proves one flow from both
//! ends, the clients' own output (what they consider registered, established, ended) and
//! sipd's side (its `location` table and Prometheus counters).
//!
//! Every test starts its own sipd on free ports with its own subscribers, and its phones
//! on free SIP and RTP ports with private configuration directories, so the tests run in
//! parallel. Phones are driven through their stdin (baresip's `stdio` menu, linphonec's
//! command line) and killed when the test ends, whatever happens; each step has a hard
//! timeout. Nothing is skipped: a missing client fails its test. The Debian packages
//! are baresip-core, linphone-cli and sipsak (bookworm: baresip 1.0.0, linphonec
//! 5.1.65, sipsak 0.9.8.1).
//!
//! Digest algorithms (RFC 8760). sipd challenges with one WWW-/Proxy-Authenticate per
//! `auth-algorithms` entry (MD5 alone by default, as Kamailio). Of these clients only linphonec
//! answers SHA-256. baresip 1.0 (libre 1.1) gives up with ENOSYS ("Function not
//! implemented") on *any* challenge that is not MD5, even when an MD5 one is offered
//! alongside, and sipsak 0.9.8 answers only the first challenge and knows only MD5; so
//! the tests that use them run sipd with `auth-algorithms = ["MD5"]`, and
//! [`sha256_challenges_lock_out_baresip_and_sipsak`] pins that limitation down.

use rtc_store::{LocationRow, Store};
use rtc_tests::sipd::{Sipd, DOMAIN};
use rtc_tests::{free_port_range, free_udp_tcp_port, run_tool};
use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for one step of a flow (registration, answer, hang-up). Every step takes
/// well under a second on loopback; the margin is for a loaded machine.
const STEP: Duration = Duration::from_secs(10);

/// How long the calls last: long enough for baresip to report their end, which it does
/// only for calls of a second or more.
const CALL_LENGTH: Duration = Duration::from_millis(1500);

/// What sipd offers to clients that only do MD5 digest (baresip 1.0, sipsak 0.9.8).
const MD5_ONLY: &str = r#"["MD5"]"#;

fn sipd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sipd"))
}

// --- sipd and its database ---------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn db_url(dir: &Path) -> String {
    dir.join("sipd.sqlite").to_string_lossy().into_owned()
}

/// sipd with metrics, `auth-algorithms` set to `algorithms` (a TOML array) unless `None`
/// (sipd's default), and `users` (name, password) as subscribers of [`DOMAIN`], added to
/// its database before it starts, as `rtc-admin sip add` would.
fn start_sipd(algorithms: Option<&str>, users: &[(&str, &str)]) -> Sipd {
    let mut builder = Sipd::builder(sipd_bin()).prometheus();
    if let Some(a) = algorithms {
        builder = builder.set("auth-algorithms", a);
    }
    let url = db_url(builder.dir());
    runtime().block_on(async {
        let store = Store::connect(&url).await.expect("opening sipd's database");
        store.migrate_sip().await.expect("creating the SIP tables");
        for (user, password) in users {
            let added = store
                .sip()
                .add_subscriber(user, DOMAIN, DOMAIN, password)
                .await
                .expect("adding a subscriber");
            assert!(added, "{user} added twice");
        }
        store.close().await;
    });
    builder.start()
}

/// The rows of sipd's `location` table for `user@DOMAIN`. sipd answers a REGISTER only
/// once its binding is committed, so a registered client's row is there.
fn bindings(sipd: &Sipd, user: &str) -> Vec<LocationRow> {
    let url = db_url(sipd.dir.path());
    runtime().block_on(async {
        let store = Store::connect(&url).await.expect("opening sipd's database");
        let rows = store
            .sip()
            .locations_for(user, Some(DOMAIN))
            .await
            .expect("reading locations");
        store.close().await;
        rows
    })
}

fn metric(sipd: &Sipd, series: &str) -> f64 {
    rtc_tests::metrics::value(&sipd.metrics(), series).unwrap_or(0.0)
}

/// Waits (sipd publishes once a second) until `series` is at most `max`.
fn wait_metric_at_most(sipd: &Sipd, series: &str, max: f64) -> bool {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if metric(sipd, series) <= max {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

// --- Softphones ------------------------------------------------------------------------------

/// A softphone process reading commands on stdin, its stdout and stderr in one file (and
/// linphonec's SIP log in another), killed on drop. With `home`, its $HOME is its private
/// directory (linphonec keeps its database, history and ZRTP cache there).
struct Phone {
    name: String,
    /// In a cell so that read-only waits can notice an early exit.
    child: RefCell<Child>,
    stdin: ChildStdin,
    output: PathBuf,
    sip_log: Option<PathBuf>,
    /// Configuration and $HOME; removed after the process is killed.
    _dir: rtc_tests::tempfile::TempDir,
}

impl Phone {
    fn spawn(
        name: &str,
        dir: rtc_tests::tempfile::TempDir,
        cmd: &str,
        args: &[&str],
        sip_log: Option<PathBuf>,
        home: bool,
    ) -> Phone {
        let output = dir.path().join("output");
        let out = File::create(&output).expect("output file");
        let err = out.try_clone().expect("output file handle");
        let mut command = Command::new(cmd);
        command.args(args);
        if home {
            command.env("HOME", dir.path());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e} (run scripts/test to install it)"));
        let stdin = child.stdin.take().expect("piped stdin");
        Phone {
            name: name.to_string(),
            child: RefCell::new(child),
            stdin,
            output,
            sip_log,
            _dir: dir,
        }
    }

    /// Types one command line.
    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("{}: writing `{line}`: {e}\n{}", self.name, self.output()));
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.output).unwrap_or_default()).into_owned()
    }

    fn sip_log(&self) -> String {
        self.sip_log
            .as_ref()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the process has ended.
    fn exit_status(&self) -> Option<ExitStatus> {
        self.child.borrow_mut().try_wait().ok().flatten()
    }

    /// Waits until the output contains `needle`; false at the timeout, or at once if the
    /// process has exited without printing it (it could not bind its port, say).
    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.exit_status().is_some();
            if self.output().contains(needle) {
                return true;
            }
            if exited || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to end by itself (after `quit`).
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exit_status().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        // SIGKILL: linphonec can hang in its SIGTERM handler.
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The last `max` bytes of `text`, on a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Everything worth reading when a step fails: each phone's output and SIP log, and
/// sipd's log.
fn report(sipd: &Sipd, phones: &[&Phone]) -> String {
    let mut r = String::new();
    for p in phones {
        if let Some(status) = p.exit_status() {
            r += &format!("=== {} exited: {status}\n", p.name);
        }
        r += &format!("=== {} output\n{}\n", p.name, tail(&p.output(), 20_000));
        let log = p.sip_log();
        if !log.is_empty() {
            r += &format!("=== {} SIP log (tail)\n{}\n", p.name, tail(&log, 20_000));
        }
    }
    r + &format!("=== sipd log\n{}", sipd.log())
}

/// Panics with `what` and the [`report`] unless `ok`.
fn check(ok: bool, what: &str, sipd: &Sipd, phones: &[&Phone]) {
    if !ok {
        panic!("{what}\n{}", report(sipd, phones));
    }
}

/// A baresip 1.0 user agent for `user@DOMAIN` using sipd as outbound proxy over UDP, on
/// loopback, with no sound hardware: audio goes through the `aubridge` module (played
/// into a bridge nobody reads, recorded from it), which runs at any sample rate (`ausine`
/// only at 48 kHz, which G.711 is not). `-s` traces every SIP message to the output.
/// `auto_answer` sets the account's `answermode=auto`.
fn baresip(user: &str, password: &str, sipd: &Sipd, auto_answer: bool) -> Phone {
    let dir = rtc_tests::tempfile::Builder::new()
        .prefix(&format!("baresip-{user}-"))
        .tempdir()
        .expect("temporary directory");
    let port = free_udp_tcp_port();
    let (rtp_min, rtp_max) = free_port_range(10);
    let config = format!(
        "poll_method\t\tepoll\n\
         sip_listen\t\t127.0.0.1:{port}\n\
         net_interface\t\t127.0.0.1\n\
         rtp_ports\t\t{rtp_min}-{rtp_max}\n\
         audio_player\t\taubridge,nil\n\
         audio_source\t\taubridge,nil\n\
         audio_alert\t\taubridge,nil\n\
         module_path\t\t/usr/lib/baresip/modules\n\
         module\t\t\tstdio.so\n\
         module\t\t\tg711.so\n\
         module\t\t\taubridge.so\n\
         module_app\t\taccount.so\n\
         module_app\t\tmenu.so\n"
    );
    std::fs::write(dir.path().join("config"), config).expect("baresip config");
    let answer = if auto_answer { ";answermode=auto" } else { "" };
    let account = format!(
        "<sip:{user}@{DOMAIN}>;auth_pass={password};\
         outbound=\"sip:127.0.0.1:{};transport=udp\";regint=60{answer}\n",
        sipd.port
    );
    std::fs::write(dir.path().join("accounts"), account).expect("baresip accounts");
    let path = dir.path().to_string_lossy().into_owned();
    // `-f` holds all of baresip's files: it needs no $HOME of its own.
    Phone::spawn(user, dir, "baresip", &["-s", "-f", &path], None, false)
}

/// A linphonec 5.1 for `user@DOMAIN` registering with sipd over UDP and sending every
/// request through it (`reg_route`), with its SIP log (every message) in a file, no
/// video, and wav files instead of a sound card (`soundcard use files`). Its $HOME is its
/// private directory, where linphone needs `.local/share/linphone` to exist: without its
/// database the core never leaves its start-up state and never registers.
fn linphonec(user: &str, password: &str, sipd: &Sipd) -> Phone {
    let dir = rtc_tests::tempfile::Builder::new()
        .prefix(&format!("linphonec-{user}-"))
        .tempdir()
        .expect("temporary directory");
    std::fs::create_dir_all(dir.path().join(".local/share/linphone")).expect("linphone data dir");
    let port = free_udp_tcp_port();
    let (rtp, _) = free_port_range(2);
    let proxy = sipd.port;
    let rc = format!(
        "[sip]\n\
         sip_port={port}\n\
         sip_tcp_port=0\n\
         sip_tls_port=0\n\
         default_proxy=0\n\
         [rtp]\n\
         audio_rtp_port={rtp}\n\
         video_rtp_port=-1\n\
         text_rtp_port=-1\n\
         [video]\n\
         capture=0\n\
         display=0\n\
         automatically_initiate=0\n\
         automatically_accept=0\n\
         [sound]\n\
         echocancellation=0\n\
         [proxy_0]\n\
         reg_proxy=<sip:127.0.0.1:{proxy};transport=udp>\n\
         reg_route=<sip:127.0.0.1:{proxy};transport=udp;lr>\n\
         reg_identity=sip:{user}@{DOMAIN}\n\
         reg_expires=60\n\
         reg_sendregister=1\n\
         [auth_info_0]\n\
         username={user}\n\
         passwd={password}\n\
         realm={DOMAIN}\n\
         domain={DOMAIN}\n"
    );
    let rc_path = dir.path().join("linphonerc");
    std::fs::write(&rc_path, rc).expect("linphonec rc");
    let log = dir.path().join("sip.log");
    let rc_arg = rc_path.to_string_lossy().into_owned();
    let log_arg = log.to_string_lossy().into_owned();
    let mut phone = Phone::spawn(
        user,
        dir,
        "linphonec",
        &["-c", &rc_arg, "-d", "6", "-l", &log_arg],
        Some(log),
        true,
    );
    phone.send("soundcard use files");
    phone
}

/// Asks linphonec for its registration state until it reports `user` registered.
fn wait_linphonec_registered(phone: &mut Phone) -> bool {
    let expected = format!("registered, identity=sip:{}@{DOMAIN}", phone.name);
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        phone.send("status register");
        if phone.wait_for(&expected, Duration::from_millis(300)) {
            return true;
        }
    }
    false
}

/// Waits until a baresip SIP trace (`-s`) shows a `code` response to a `method` request,
/// sent or received.
fn wait_traced_answer(phone: &Phone, code: &str, method: &str) -> bool {
    let deadline = Instant::now() + STEP;
    loop {
        if traced_answer(&phone.output(), code, method) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a baresip trace holds a response `SIP/2.0 {code}` whose CSeq names `method`.
fn traced_answer(trace: &str, code: &str, method: &str) -> bool {
    let status = format!("SIP/2.0 {code} ");
    let mut lines = trace.lines();
    while let Some(line) = lines.next() {
        if line.starts_with(&status) {
            // The message's header lines, up to the blank line that ends them.
            let cseq = lines
                .by_ref()
                .take_while(|l| !l.trim().is_empty())
                .find(|l| l.starts_with("CSeq:"));
            if cseq.is_some_and(|l| l.trim_end().ends_with(&format!(" {method}"))) {
                return true;
            }
        }
    }
    false
}

/// The `header:` lines (`Authorization`, `Proxy-Authorization`) in a SIP log.
fn header_lines<'a>(log: &'a str, header: &str) -> Vec<&'a str> {
    let prefix = format!("{header}:");
    log.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with(&prefix))
        .collect()
}

/// `sipsak` in usrloc mode: registers `user@DOMAIN` (Expires 120) from 127.0.0.1 through
/// sipd. `-p` must come before `-s`, or sipsak resolves the domain in the URI; `-u` is
/// needed, or sipsak 0.9.8 answers the challenge as `username="user@"`.
fn sipsak_register(sipd: &Sipd, user: &str, password: &str) -> rtc_tests::ToolOutput {
    let proxy = format!("127.0.0.1:{}", sipd.port);
    let aor = format!("sip:{user}@{DOMAIN}");
    let args = [
        "-vv",
        "-U",
        "-p",
        &proxy,
        "-s",
        &aor,
        "-u",
        user,
        "-a",
        password,
        "-H",
        "127.0.0.1",
        "-x",
        "120",
    ];
    run_tool("sipsak", &args, STEP)
}

/// Checks that `user` has a binding in sipd's `location` table whose User-Agent contains
/// `agent`.
fn check_bound(sipd: &Sipd, user: &str, agent: &str, phones: &[&Phone]) {
    let rows = bindings(sipd, user);
    check(
        rows.iter().any(|r| r.user_agent.contains(agent)),
        &format!("no binding for {user}@{DOMAIN} from {agent} in location: {rows:?}"),
        sipd,
        phones,
    );
}

/// The proxy's side of one completed, authenticated call: requests counted by method,
/// final answers relayed, and nobody refused.
fn check_call_counted(sipd: &Sipd, phones: &[&Phone]) {
    for series in [
        "sipd_requests_total{method=\"INVITE\"}",
        "sipd_requests_total{method=\"ACK\"}",
        "sipd_requests_total{method=\"BYE\"}",
    ] {
        sipd.wait_metric(series, 1.0);
    }
    // Two REGISTERs, the INVITE's 200 and the BYE's 200 at least.
    sipd.wait_metric("sipd_replies_total{class=\"2xx\"}", 4.0);
    // The INVITE was challenged (407) before it was relayed.
    sipd.wait_metric("sipd_auth_challenges_total", 3.0);
    let failures = metric(sipd, "sipd_auth_failures_total");
    check(
        failures == 0.0,
        &format!("{failures} authentication failures"),
        sipd,
        phones,
    );
    let bans = metric(sipd, "sipd_pike_bans_total");
    check(bans == 0.0, "pike banned a softphone", sipd, phones);
}

// --- Tests -------------------------------------------------------------------------------

/// Two baresips register (digest MD5) and alice calls bob, who answers automatically: the
/// INVITE is challenged, relayed to bob's registered contact, its 200 relayed back with
/// sipd's Record-Route, and the ACK and BYE follow that route. Both sides report the call
/// established and terminated; sipd shows both bindings and counts the transactions. On
/// `/quit` both unregister (Expires 0) and sipd's binding count drops back to zero.
#[test]
fn baresip_calls_baresip() {
    let sipd = start_sipd(
        Some(MD5_ONLY),
        &[("alice", "alice-secret"), ("bob", "bob-secret")],
    );
    let mut bob = baresip("bob", "bob-secret", &sipd, true);
    let mut alice = baresip("alice", "alice-secret", &sipd, false);
    for p in [&bob, &alice] {
        check(
            p.wait_for("All 1 useragent registered successfully", STEP),
            &format!("{} did not register", p.name),
            &sipd,
            &[&alice, &bob],
        );
    }
    sipd.wait_metric("sipd_registered_contacts", 2.0);
    check_bound(&sipd, "alice", "baresip", &[&alice, &bob]);
    check_bound(&sipd, "bob", "baresip", &[&alice, &bob]);

    alice.send(&format!("/dial sip:bob@{DOMAIN}"));
    check(
        bob.wait_for(&format!("Call established: sip:alice@{DOMAIN}"), STEP),
        "bob never had the call established",
        &sipd,
        &[&alice, &bob],
    );
    check(
        alice.wait_for(&format!("Call established: sip:bob@{DOMAIN}"), STEP),
        "alice never had the call established",
        &sipd,
        &[&alice, &bob],
    );

    // baresip reports an ended call only if it lasted a second or more.
    std::thread::sleep(CALL_LENGTH);
    alice.send("/hangup");
    check(
        bob.wait_for(&format!("Call with sip:alice@{DOMAIN} terminated"), STEP),
        "bob never saw the BYE",
        &sipd,
        &[&alice, &bob],
    );
    check(
        alice.wait_for(&format!("Call with sip:bob@{DOMAIN} terminated"), STEP)
            && wait_traced_answer(&alice, "200", "BYE"),
        "alice's BYE was not answered 200",
        &sipd,
        &[&alice, &bob],
    );
    check_call_counted(&sipd, &[&alice, &bob]);

    alice.send("/quit");
    bob.send("/quit");
    check(
        wait_metric_at_most(&sipd, "sipd_registered_contacts", 0.0),
        "bindings left after both phones unregistered",
        &sipd,
        &[&alice, &bob],
    );
    check(
        alice.wait_exit(STEP) && bob.wait_exit(STEP),
        "baresip did not quit",
        &sipd,
        &[&alice, &bob],
    );
}

/// Across SIP stacks: linphonec (belle-sip) calls baresip (libre) through sipd, which
/// relays between two independent implementations' ideas of Via, Record-Route, Contact
/// and SDP. Both register with MD5 (baresip's only algorithm), linphonec hangs up.
#[test]
fn linphonec_calls_baresip() {
    let sipd = start_sipd(
        Some(MD5_ONLY),
        &[("alice", "alice-secret"), ("bob", "bob-secret")],
    );
    let bob = baresip("bob", "bob-secret", &sipd, true);
    let mut alice = linphonec("alice", "alice-secret", &sipd);
    check(
        bob.wait_for("All 1 useragent registered successfully", STEP),
        "bob (baresip) did not register",
        &sipd,
        &[&alice, &bob],
    );
    check(
        wait_linphonec_registered(&mut alice),
        "alice (linphonec) did not register",
        &sipd,
        &[&alice, &bob],
    );
    check_bound(&sipd, "alice", "Linphonec", &[&alice, &bob]);
    check_bound(&sipd, "bob", "baresip", &[&alice, &bob]);

    alice.send(&format!("call sip:bob@{DOMAIN}"));
    check(
        alice.wait_for(&format!("with sip:bob@{DOMAIN} connected."), STEP),
        "alice's call never connected",
        &sipd,
        &[&alice, &bob],
    );
    check(
        bob.wait_for(&format!("Call established: sip:alice@{DOMAIN}"), STEP),
        "bob never had the call established",
        &sipd,
        &[&alice, &bob],
    );

    std::thread::sleep(CALL_LENGTH);
    alice.send("terminate");
    check(
        alice.wait_for(&format!("with sip:bob@{DOMAIN} ended"), STEP),
        "alice's call did not end",
        &sipd,
        &[&alice, &bob],
    );
    check(
        bob.wait_for(&format!("Call with sip:alice@{DOMAIN} terminated"), STEP),
        "bob never saw the BYE",
        &sipd,
        &[&alice, &bob],
    );
    check_call_counted(&sipd, &[&alice, &bob]);
}

/// RFC 8760 SHA-256 digest, forced: sipd offers only `algorithm=SHA-256` and linphonec
/// registers with it. The client's own log of the exchange shows the only challenge it
/// got and that its Authorization answered it with SHA-256; sipd accepted it (binding in
/// `location`, no authentication failure). sipd refuses credentials for an algorithm it
/// did not offer, so the binding alone already proves a SHA-256 response was verified.
#[test]
fn linphonec_registers_with_sha256_digest() {
    let sipd = start_sipd(Some(r#"["SHA-256"]"#), &[("dave", "dave-secret")]);
    let mut dave = linphonec("dave", "dave-secret", &sipd);
    check(
        wait_linphonec_registered(&mut dave),
        "dave did not register",
        &sipd,
        &[&dave],
    );
    check_bound(&sipd, "dave", "Linphonec", &[&dave]);
    sipd.wait_metric("sipd_registered_contacts", 1.0);

    let log = dave.sip_log();
    let challenges = header_lines(&log, "WWW-Authenticate");
    check(
        !challenges.is_empty() && challenges.iter().all(|l| l.contains("algorithm=SHA-256")),
        &format!("challenges other than SHA-256 only: {challenges:#?}"),
        &sipd,
        &[&dave],
    );
    let answers = header_lines(&log, "Authorization");
    check(
        !answers.is_empty() && answers.iter().all(|l| l.contains("algorithm=SHA-256")),
        &format!("Authorization not all SHA-256: {answers:#?}"),
        &sipd,
        &[&dave],
    );
    check(
        metric(&sipd, "sipd_auth_failures_total") == 0.0,
        "authentication failures",
        &sipd,
        &[&dave],
    );
}

/// Both challenges, SHA-256 first, then MD5 (one header each per RFC 8760 section 2.4),
/// the setting for sites whose phones support SHA-256, with two linphonecs: the client picks the topmost algorithm it supports,
/// SHA-256, for REGISTER and for the proxy-challenged INVITE; carol answers automatically
/// (`autoanswer enable`), dave hangs up. Also the callee side of linphonec, which the
/// other tests do not cover.
#[test]
fn linphonec_calls_linphonec_with_sha256_and_md5_challenges() {
    let sipd = start_sipd(
        Some(r#"["SHA-256", "MD5"]"#),
        &[("dave", "dave-secret"), ("carol", "carol-secret")],
    );
    let mut carol = linphonec("carol", "carol-secret", &sipd);
    let mut dave = linphonec("dave", "dave-secret", &sipd);
    carol.send("autoanswer enable");
    let carol_registered = wait_linphonec_registered(&mut carol);
    let dave_registered = wait_linphonec_registered(&mut dave);
    check(
        carol_registered && dave_registered,
        "carol or dave did not register",
        &sipd,
        &[&dave, &carol],
    );
    check_bound(&sipd, "carol", "Linphonec", &[&dave, &carol]);
    check_bound(&sipd, "dave", "Linphonec", &[&dave, &carol]);

    dave.send(&format!("call sip:carol@{DOMAIN}"));
    for (p, peer) in [(&dave, "carol"), (&carol, "dave")] {
        check(
            p.wait_for(&format!("with sip:{peer}@{DOMAIN} connected."), STEP),
            &format!("{}'s call never connected", p.name),
            &sipd,
            &[&dave, &carol],
        );
    }
    dave.send("terminate");
    for (p, peer) in [(&dave, "carol"), (&carol, "dave")] {
        check(
            p.wait_for(&format!("with sip:{peer}@{DOMAIN} ended"), STEP),
            &format!("{}'s call did not end", p.name),
            &sipd,
            &[&dave, &carol],
        );
    }
    check_call_counted(&sipd, &[&dave, &carol]);

    let log = dave.sip_log();
    let challenges = header_lines(&log, "WWW-Authenticate");
    check(
        challenges.iter().any(|l| l.contains("algorithm=MD5"))
            && challenges.iter().any(|l| l.contains("algorithm=SHA-256")),
        &format!("sipd did not offer both algorithms: {challenges:#?}"),
        &sipd,
        &[&dave, &carol],
    );
    for header in ["Authorization", "Proxy-Authorization"] {
        let answers = header_lines(&log, header);
        check(
            !answers.is_empty() && answers.iter().all(|l| l.contains("algorithm=SHA-256")),
            &format!("{header} not all SHA-256: {answers:#?}"),
            &sipd,
            &[&dave, &carol],
        );
    }
}

/// sipsak, the SER/Kamailio project's test tool: usrloc mode registers carol with digest
/// (the binding lands in `location` with sipsak's Contact and User-Agent), the same
/// with a wrong password is refused (sipsak: "authorization failed", sipd counts an
/// authentication failure), and an OPTIONS ping to the domain is answered 200.
///
/// sipsak resolves the URI's host unless `-p` (outbound proxy) comes before `-s`, and
/// `-s sip:127.0.0.1:PORT` cuts five-digit ports to four digits in the Request-URI
/// (sipsak 0.9.8.1 bug), so the ping goes to `sip:falcot.com` through `-p`.
#[test]
fn sipsak_registers_and_pings() {
    let sipd = start_sipd(Some(MD5_ONLY), &[("carol", "carol-secret")]);
    let out = sipsak_register(&sipd, "carol", "carol-secret");
    assert!(
        out.success() && out.stdout.contains("All usrloc tests completed successful"),
        "{out}\nsipd log:\n{}",
        sipd.log()
    );
    let rows = bindings(&sipd, "carol");
    assert!(
        rows.iter().any(|r| r.user_agent.starts_with("sipsak")
            && r.contact.starts_with("sip:carol@127.0.0.1:")
            && r.expires > 0),
        "no binding from sipsak: {rows:?}"
    );
    sipd.wait_metric("sipd_registered_contacts", 1.0);

    let out = sipsak_register(&sipd, "carol", "not-the-password");
    assert!(
        !out.success() && out.text().contains("authorization failed"),
        "{out}\nsipd log:\n{}",
        sipd.log()
    );
    sipd.wait_metric("sipd_auth_failures_total", 1.0);

    let proxy = format!("127.0.0.1:{}", sipd.port);
    let out = run_tool(
        "sipsak",
        &["-vv", "-p", &proxy, "-s", &format!("sip:{DOMAIN}")],
        STEP,
    );
    assert!(
        out.success() && out.stdout.contains("SIP/2.0 200 OK"),
        "{out}\nsipd log:\n{}",
        sipd.log()
    );
    sipd.wait_metric("sipd_requests_total{method=\"OPTIONS\"}", 1.0);
}

/// Documents a client limitation, not a sipd fault: with SHA-256 offered (sipd's default
/// `["SHA-256", "MD5"]`), baresip 1.0 (libre 1.1's `sip_auth_authenticate` returns
/// ENOSYS for the first non-MD5 challenge it meets, whatever else is offered) and sipsak
/// 0.9.8 (takes the first challenge, knows only MD5) cannot register at all. Deployments
/// with such phones must set `auth-algorithms = ["MD5"]`. If this test fails, a newer
/// client learnt SHA-256: drop `MD5_ONLY` from the tests that use it.
#[test]
fn sha256_challenges_lock_out_baresip_and_sipsak() {
    let sipd = start_sipd(
        Some(r#"["SHA-256", "MD5"]"#),
        &[("alice", "alice-secret"), ("carol", "carol-secret")],
    );
    let alice = baresip("alice", "alice-secret", &sipd, false);
    check(
        alice.wait_for("Register: Function not implemented", STEP),
        "baresip did not refuse the SHA-256 challenge the way libre 1.1 does",
        &sipd,
        &[&alice],
    );

    let out = sipsak_register(&sipd, "carol", "carol-secret");
    assert!(
        !out.success() && out.text().contains("unsupported authentication algorithm"),
        "{out}"
    );
    assert!(bindings(&sipd, "alice").is_empty() && bindings(&sipd, "carol").is_empty());
    assert_eq!(metric(&sipd, "sipd_registered_contacts"), 0.0);
}
