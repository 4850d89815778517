//! turnd against real clients: coturn's `turnutils_uclient`/`turnutils_stunclient`,
//! Python's `aioice` and Chromium's WebRTC stack, plus the refusals, garbage, metrics,
//! reload and user databases that only a hand-built client (the harness's `StunClient`)
//! can exercise.
//!
//! Every test starts its own turnd on its own free ports (see `rtc_tests::turnd::Turnd`
//! for the base configuration) and, where it relays, its own `turnutils_peer`. The tools
//! are installed by `scripts/test`.

#[cfg(any(feature = "postgres", feature = "mysql"))]
use rtc_tests::scratch_db::{Engine, ScratchDb};
use rtc_tests::stun::StunClient;
use rtc_tests::tls::{self_signed_files, served_certificate};
use rtc_tests::tool::Background;
use rtc_tests::turnd::{
    parse_uclient, toml_string, Peer, Turnd, UclientSummary, PASSWORD, REALM, USER,
};
use rtc_tests::{free_udp_tcp_port, run_tool, run_tool_feeding, FedOutput, ToolOutput, SIGHUP};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;
use stun_proto::attr;
use stun_proto::message::{method, stun_frame_len};
use stun_proto::{Class, Message, MessageBuilder};

const UCLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn turnd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_turnd"))
}

/// `turnutils_uclient` with 10 clients of 200 messages of 170 bytes each towards `peer`,
/// on `port` with `args` (credentials, transport flags) in front of the defaults' overrides.
fn uclient(port: u16, peer: &Peer, args: &[&str]) -> ToolOutput {
    let peer_port = peer.port.to_string();
    let port = port.to_string();
    let mut all = vec![
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
        "-p",
        &port,
        "-n",
        "200",
        "-m",
        "10",
        "-l",
        "170",
    ];
    all.extend_from_slice(args);
    all.push("127.0.0.1");
    run_tool("turnutils_uclient", &all, UCLIENT_TIMEOUT)
}

/// The run finished, every message came back and nothing was lost.
fn assert_no_loss(out: &ToolOutput, turnd: &Turnd) {
    let Some(s) = parse_uclient(&out.text()) else {
        panic!(
            "no uclient summary in its output:\n{out}\nturnd log:\n{}",
            turnd.log()
        );
    };
    assert!(
        out.success() && s.lost == 0 && s.sent > 0 && s.sent == s.received,
        "uclient: {s:?}\n{out}\nturnd log:\n{}",
        turnd.log()
    );
}

fn run_uclient_test(args: &[&str]) {
    let turnd = Turnd::builder(turnd_bin()).start();
    let peer = Peer::start();
    let mut all = vec!["-u", USER, "-w", PASSWORD];
    all.extend_from_slice(args);
    let out = uclient(turnd.port, &peer, &all);
    assert_no_loss(&out, &turnd);
}

#[test]
fn uclient_udp() {
    run_uclient_test(&[]);
}

#[test]
fn uclient_tcp() {
    run_uclient_test(&["-t"]);
}

#[test]
fn uclient_send_indications() {
    run_uclient_test(&["-s"]);
}

#[test]
fn uclient_client_to_client_udp() {
    run_uclient_test(&["-y"]);
}

#[test]
fn uclient_client_to_client_tcp() {
    run_uclient_test(&["-y", "-t"]);
}

/// `-X`: REQUESTED-ADDRESS-FAMILY IPv4 explicitly; `-c`: no RTCP allocations.
#[test]
fn uclient_explicit_ipv4_without_rtcp() {
    run_uclient_test(&["-X", "-c"]);
}

#[test]
fn uclient_tls() {
    let turnd = Turnd::builder(turnd_bin()).tls().start();
    let peer = Peer::start();
    let out = uclient(
        turnd.tls_port,
        &peer,
        &["-u", USER, "-w", PASSWORD, "-S", "-t"],
    );
    assert_no_loss(&out, &turnd);
}

/// TURN REST API credentials (coturn's `use-auth-secret`): uclient derives the
/// time-limited username and password from the shared secret itself.
#[test]
fn uclient_rest_api_secret() {
    let turnd = Turnd::builder(turnd_bin())
        .unset("user")
        .set("use-auth-secret", "true")
        .set("static-auth-secret", "[\"logen\"]")
        .start();
    let peer = Peer::start();
    let out = uclient(turnd.port, &peer, &["-W", "logen", "-u", "someuser"]);
    assert_no_loss(&out, &turnd);
}

// --- TCP relaying (RFC 6062) --------------------------------------------------------------

/// `-T`: client-to-client over TCP allocations: each client Connects from its relayed
/// address to the other's, which announces it with ConnectionAttempt; both bind data
/// connections (ConnectionBind) and stream through them.
#[test]
fn uclient_tcp_relay() {
    run_uclient_test(&["-T", "-n", "50", "-m", "3"]);
}

/// `-P`: a TCP allocation with an active peer: uclient's peer opens a plain TCP connection
/// to the relayed address, turnd announces it (ConnectionAttempt, RFC 6062 §5.3) and the
/// client binds a data connection to it.
///
/// uclient reports half its messages lost here, and Debian's coturn 4.6.1 started with the
/// same flags reports exactly the same numbers. It is uclient's counting: its active peer
/// reads the raw stream with `MSG_PEEK` looking for STUN/ChannelData framing and never
/// consumes it (strace shows all 10 messages, 1700 bytes, waiting in the peer's socket), so
/// only the 10 messages the peer sends to the client are counted as received.
#[test]
fn uclient_passive_tcp_relay() {
    let turnd = Turnd::builder(turnd_bin()).start();
    let peer = Peer::start();
    let args = ["-u", USER, "-w", PASSWORD, "-P", "-n", "10", "-m", "1"];
    let out = uclient(turnd.port, &peer, &args);
    let summary = parse_uclient(&out.text());
    assert!(
        out.success()
            && summary
                == Some(UclientSummary {
                    sent: 20,
                    received: 10,
                    lost: 10
                }),
        "uclient: {summary:?}\n{out}\nturnd log:\n{}",
        turnd.log()
    );
}

// --- IPv6 relays (RFC 8656 §7.2, RFC 6156) -----------------------------------------------

fn dual_stack_turnd() -> Turnd {
    Turnd::builder(turnd_bin())
        .set("listening-ip", "[\"127.0.0.1\", \"::1\"]")
        .set("relay-ip", "[\"127.0.0.1\", \"::1\"]")
        .start()
}

/// `-x`: REQUESTED-ADDRESS-FAMILY IPv6, relaying to a peer on `::1`.
#[test]
fn uclient_ipv6_relay() {
    let turnd = dual_stack_turnd();
    let peer = Peer::start_on(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let args = [
        "-u", USER, "-w", PASSWORD, "-x", "-e", "::1", "-n", "50", "-m", "3",
    ];
    let out = uclient(turnd.port, &peer, &args);
    assert_no_loss(&out, &turnd);
}

/// `-Z`: dual allocation (ADDITIONAL-ADDRESS-FAMILY, which uclient sends under coturn's
/// draft code point 0x8032), relaying to an IPv4 peer, then refreshing the IPv6 half.
#[test]
fn uclient_dual_allocation() {
    let turnd = dual_stack_turnd();
    let peer = Peer::start();
    let args = ["-u", USER, "-w", PASSWORD, "-Z", "-n", "50", "-m", "3"];
    let out = uclient(turnd.port, &peer, &args);
    assert_no_loss(&out, &turnd);
}

// --- RFC 5780 NAT behaviour discovery ------------------------------------------------------

#[test]
fn rfc5780_nat_behaviour_discovery() {
    let alt_port = free_udp_tcp_port();
    let turnd = Turnd::builder(turnd_bin())
        .set("listening-ip", "[\"127.0.0.1\", \"127.0.0.2\"]")
        .set("alt-listening-port", &alt_port.to_string())
        .start();
    let out = run_tool(
        "turnutils_natdiscovery",
        &["-m", "-f", "-p", &turnd.port.to_string(), "127.0.0.1"],
        Duration::from_secs(30),
    );
    // Loopback has no NAT: both behaviours are endpoint independent (RFC 5780 §4.3, §4.4).
    let text = out.text();
    assert!(
        out.success()
            && text.contains("NAT with Endpoint Independent Mapping!")
            && text.contains("NAT with Endpoint Independent Filtering!"),
        "{out}\nturnd log:\n{}",
        turnd.log()
    );

    let primary = turnd.addr();
    let alternate = addr(&format!("127.0.0.2:{alt_port}"));
    let address = |r: &rtc_tests::stun::Response, t: u16| {
        let v = r.message().get(t).map(<[u8]>::to_vec);
        v.and_then(|v| stun_proto::message::decode_address(&v))
    };
    let mut c = StunClient::udp(primary).unwrap();
    let (r, from) = c.binding_from(&[]).unwrap();
    assert_eq!(from, primary);
    assert_eq!(address(&r, attr::OTHER_ADDRESS), Some(alternate));
    assert_eq!(address(&r, attr::RESPONSE_ORIGIN), Some(primary));
    // CHANGE-REQUEST with change IP and change port (RFC 5780 §7.2): answered from the
    // alternate address, which RESPONSE-ORIGIN names.
    let (r, from) = c
        .binding_from(&[(attr::CHANGE_REQUEST, vec![0, 0, 0, 0x06])])
        .unwrap();
    assert_eq!(r.message().class(), Class::Success);
    assert_eq!(from, alternate);
    assert_eq!(address(&r, attr::RESPONSE_ORIGIN), Some(alternate));
    assert_eq!(
        r.message()
            .xor_addresses(attr::XOR_MAPPED_ADDRESS)
            .next()
            .flatten(),
        c.local_addr()
    );
}

// --- DTLS (RFC 8656 §3.2, RFC 7350) with OpenSSL -------------------------------------------
//
// uclient's DTLS client picks DTLS 1.0 or 1.2 at random for each connection; turnd refuses
// 1.0 on purpose (dimpl does DTLS 1.2/1.3; RFC 8996 deprecates 1.0) with a protocol_version
// alert, on which uclient tries again. OpenSSL's `s_client` checks each version alone.

/// `-S` without `-t`: DTLS to the TLS port. Each of the 10 clients that draws DTLS 1.0
/// must be refused at once (not left to time out) and reconnect with 1.2.
#[test]
fn uclient_dtls() {
    let turnd = Turnd::builder(turnd_bin()).tls().start();
    let peer = Peer::start();
    let out = uclient(turnd.tls_port, &peer, &["-u", USER, "-w", PASSWORD, "-S"]);
    assert_no_loss(&out, &turnd);
}

/// A Binding request, raw; and its transaction id.
fn raw_binding() -> ([u8; 12], Vec<u8>) {
    let tid = rtc_tests::stun::transaction_id();
    (
        tid,
        MessageBuilder::new(method::BINDING, Class::Request, tid).finish(),
    )
}

/// The STUN message at the start of `bytes`, once it is all there.
fn whole_stun(bytes: &[u8]) -> Option<&[u8]> {
    let n = stun_frame_len(bytes)?;
    bytes.get(..n)
}

/// `openssl s_client` with `version` (`-dtls1_2`, `-dtls1`) to turnd's TLS port, sending
/// `request` as application data and waiting for one STUN message back.
fn openssl_dtls(turnd: &Turnd, version: &str, ca: &Path, request: &[u8]) -> FedOutput {
    run_tool_feeding(
        "openssl",
        &[
            "s_client",
            version,
            "-quiet",
            "-connect",
            &turnd.tls_addr().to_string(),
            "-CAfile",
            &ca.to_string_lossy(),
        ],
        request,
        Duration::from_secs(5),
        |out| whole_stun(out).is_some(),
    )
}

#[test]
fn dtls_1_2_binding_with_openssl() {
    let turnd = Turnd::builder(turnd_bin()).tls().start();
    let cert = turnd.tls.clone().expect("TLS files").cert;
    let (tid, request) = raw_binding();
    let out = openssl_dtls(&turnd, "-dtls1_2", &cert, &request);
    let Some(bytes) = whole_stun(&out.stdout) else {
        panic!(
            "no STUN response over DTLS 1.2 from `{}`: {:?}\n{}\nturnd log:\n{}",
            out.command,
            out.stdout,
            out.stderr,
            turnd.log()
        );
    };
    let m = Message::parse(bytes).expect("a well-formed response");
    assert_eq!((m.method(), m.class()), (method::BINDING, Class::Success));
    assert_eq!(m.transaction_id(), tid);
    let mapped = m.xor_addresses(attr::XOR_MAPPED_ADDRESS).next().flatten();
    assert_eq!(
        mapped.map(|a| a.ip()),
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    );
}

/// DTLS 1.0 reaches turnd, which refuses the ClientHello with a fatal protocol_version
/// alert (RFC 5246 §7.2.2) that the client understands: no application data comes back.
#[test]
fn dtls_1_0_is_refused() {
    let turnd = Turnd::builder(turnd_bin())
        .tls()
        .set("log-level", &toml_string("debug"))
        .start();
    let cert = turnd.tls.clone().expect("TLS files").cert;
    let (_, request) = raw_binding();
    let out = openssl_dtls(&turnd, "-dtls1", &cert, &request);
    assert!(
        !out.done && out.stdout.is_empty(),
        "DTLS 1.0 answered: {:?}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        turnd
            .daemon
            .wait_for_log(": DTLS: ", Duration::from_secs(2)),
        "the handshake never reached turnd:\n{}",
        turnd.log()
    );
    assert!(
        out.stderr.contains("alert protocol version"),
        "no protocol_version alert reached the client:\n{}",
        out.stderr
    );
}

/// dimpl signs with ECDSA only: an RSA certificate turns DTLS off, with a warning, and
/// TLS goes on with it.
#[test]
fn rsa_certificate_disables_dtls_but_not_tls() {
    let builder = Turnd::builder(turnd_bin());
    let (cert, key) = (builder.dir().join("rsa.crt"), builder.dir().join("rsa.key"));
    let (cert_s, key_s) = (cert.to_string_lossy(), key.to_string_lossy());
    let gen = run_tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key_s,
            "-out",
            &cert_s,
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            // Not a CA: webpki refuses a CA certificate as the server's own.
            "basicConstraints=critical,CA:FALSE",
        ],
        Duration::from_secs(60),
    );
    assert!(gen.success(), "{gen}");
    let turnd = builder
        .set("cert", &toml_string(&cert_s))
        .set("pkey", &toml_string(&key_s))
        .start();
    assert!(
        turnd
            .daemon
            .wait_for_log("DTLS disabled", Duration::from_secs(5)),
        "no warning:\n{}",
        turnd.log()
    );
    let pem = std::fs::read_to_string(&cert).unwrap();
    if let Err(e) = served_certificate(turnd.tls_addr(), "localhost", &pem) {
        panic!("TLS with the RSA certificate: {e}\n{}", turnd.log());
    }
    let (_, request) = raw_binding();
    let out = openssl_dtls(&turnd, "-dtls1_2", &cert, &request);
    assert!(!out.done && out.stdout.is_empty(), "DTLS answered: {out:?}");
}

#[test]
fn stunclient_reports_mapped_address() {
    let turnd = Turnd::builder(turnd_bin()).start();
    let out = run_tool(
        "turnutils_stunclient",
        &["-p", &turnd.port.to_string(), "127.0.0.1"],
        Duration::from_secs(30),
    );
    assert!(
        out.success() && out.text().contains("reflexive addr: 127.0.0.1:"),
        "{out}"
    );
}

#[test]
fn metrics_after_uclient_run() {
    let turnd = Turnd::builder(turnd_bin()).prometheus().start();
    let peer = Peer::start();
    let out = uclient(
        turnd.port,
        &peer,
        &["-u", USER, "-w", PASSWORD, "-n", "50", "-m", "2"],
    );
    assert_no_loss(&out, &turnd);
    turnd.wait_metric("turn_total_traffic_peer_sentp", 1.0);
    turnd.wait_metric("turn_total_traffic_sentp", 1.0);
    let text = turnd.metrics();
    assert!(
        rtc_tests::metrics::value(&text, "turn_total_allocations").is_some(),
        "turn_total_allocations gauge missing:\n{text}"
    );
}

/// A second, independent TURN client implementation: aioice gathers a relay candidate.
#[test]
fn aioice_gathers_relay_candidate() {
    let turnd = Turnd::builder(turnd_bin()).start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/aioice_relay.py"
    );
    let out = run_tool(
        "python3",
        &[
            script,
            "127.0.0.1",
            &turnd.port.to_string(),
            USER,
            PASSWORD,
            "udp",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.success() && out.stdout.contains("relay 127.0.0.1 "),
        "{out}\nturnd log:\n{}",
        turnd.log()
    );
}

// --- WebRTC in a real browser ------------------------------------------------------------

/// The page the browser runs: two RTCPeerConnections talking through the TURN server.
const WEBRTC_PAGE: &str = include_str!("../../tests/web/webrtc_relay.html");

/// A tiny HTTP/1.0 server for [`WEBRTC_PAGE`] on 127.0.0.1 (any free port) handing the
/// body of each `POST /result` to the test; it stops when dropped.
struct PageServer {
    addr: SocketAddr,
    results: std::sync::mpsc::Receiver<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PageServer {
    fn start() -> PageServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{mpsc, Arc};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("HTTP listener");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, results) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    // A thread per connection: a browser may open a connection it never
                    // sends a request on (preconnect), which must not hold up the others.
                    Ok((stream, _)) => {
                        let tx = tx.clone();
                        std::thread::spawn(move || http_exchange(stream, &tx));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("HTTP accept: {e}"),
                }
            }
        });
        PageServer {
            addr,
            results,
            stop,
        }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads one request and answers it: the page for `GET /webrtc_relay.html`, 204 for
/// `POST /result` (whose body goes to `results`), 404 for anything else (`/favicon.ico`).
fn http_exchange(
    mut stream: TcpStream,
    results: &std::sync::mpsc::Sender<String>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let content_length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while request.len() < head_end + content_length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/webrtc_relay.html") => ("200 OK", "text/html; charset=utf-8", WEBRTC_PAGE),
        ("POST", "/result") => {
            let body = &request[head_end..(head_end + content_length).min(request.len())];
            let _ = results.send(String::from_utf8_lossy(body).into_owned());
            ("204 No Content", "text/plain", "")
        }
        _ => ("404 Not Found", "text/plain", "not found"),
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// A field of a selected candidate pair from the page's report (`side` "a" or "b",
/// `end` "local" or "remote").
fn selected_candidate_type<'a>(result: &'a serde_json::Value, side: &str, end: &str) -> &'a str {
    result["selected"][side][end]["candidateType"]
        .as_str()
        .unwrap_or("(none)")
}

/// Debian's Chromium, headless, runs two RTCPeerConnections in one page with
/// `iceTransportPolicy: 'relay'` through turnd and sends a message over a data channel:
/// ICE, TURN allocations, permissions, channel bindings, DTLS and SCTP of a real browser.
#[test]
fn chromium_webrtc_data_channel_over_turn() {
    // Both peers' relayed candidates are on turnd's relay address, 127.0.0.1: each
    // allocation's peer is the other allocation, on loopback, which turnd refuses by
    // default (RFC 8656 §21). The harness's base configuration allows it; say so here.
    let turnd = Turnd::builder(turnd_bin())
        .set("allow-loopback-peers", "true")
        .prometheus()
        .start();

    let page = PageServer::start();
    let url = format!(
        "http://{}/webrtc_relay.html?host=127.0.0.1&port={}&username={USER}&credential={PASSWORD}",
        page.addr, turnd.port
    );

    let profile = rtc_tests::tempfile::Builder::new()
        .prefix("chromium-profile-")
        .tempdir()
        .expect("temporary directory");
    let log = profile.path().join("chromium.log");
    let user_data_dir = format!("--user-data-dir={}", profile.path().display());
    // Through `sh` only to keep Chromium's output for the failure message; `exec` leaves
    // Chromium itself as the process `Background` kills.
    let chromium = Background::spawn(
        "sh",
        &[
            "-c",
            "log=$1; shift; exec chromium \"$@\" >\"$log\" 2>&1",
            "sh",
            &log.to_string_lossy(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &user_data_dir,
            &url,
        ],
    );
    // Without the D-Bus complaints of a machine with no session bus.
    let chromium_log = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(":ERROR:dbus/"))
            .collect();
        lines.join("\n")
    };

    let result = match page.results.recv_timeout(Duration::from_secs(30)) {
        Ok(body) => body,
        Err(_) => panic!(
            "no result from the page after 30 s\nchromium log:\n{}\nturnd log:\n{}",
            chromium_log(),
            turnd.log()
        ),
    };
    let parsed: serde_json::Value = serde_json::from_str(&result)
        .unwrap_or_else(|e| panic!("the page's result is not JSON ({e}): {result}"));
    let context = || {
        format!(
            "page result: {parsed:#}\nchromium log:\n{}\nturnd log:\n{}",
            chromium_log(),
            turnd.log()
        )
    };
    assert_eq!(parsed["ok"], true, "{}", context());
    assert_eq!(parsed["message"], "hello through turnd", "{}", context());
    let types = parsed["candidateTypes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !types.is_empty() && types.iter().all(|t| t == "relay"),
        "gathered candidates other than relay: {types:?}\n{}",
        context()
    );
    for side in ["a", "b"] {
        for end in ["local", "remote"] {
            assert_eq!(
                selected_candidate_type(&parsed, side, end),
                "relay",
                "{side}'s selected pair, {end} candidate\n{}",
                context()
            );
        }
    }

    // While the page still holds both connections: one allocation per peer connection,
    // and the message (with ICE checks, DTLS and SCTP before it) relayed peer to peer.
    turnd.wait_metric("turn_total_allocations", 2.0);
    turnd.wait_metric("turn_total_traffic_peer_sentp", 1.0);
    drop(chromium);
}

// --- Refusals, with the harness client -------------------------------------------------

fn allocated(turnd: &Turnd) -> StunClient {
    let mut c = StunClient::udp(turnd.addr()).expect("UDP socket");
    if let Err(e) = c.allocate(USER, PASSWORD) {
        panic!("Allocate failed: {e}\nturnd log:\n{}", turnd.log());
    }
    c
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

#[test]
fn wrong_password_is_401() {
    let turnd = Turnd::builder(turnd_bin()).start();
    let mut c = StunClient::udp(turnd.addr()).unwrap();
    let e = c.allocate(USER, "not-the-secret").unwrap_err();
    assert_eq!(e.code, 401, "{e}");
}

/// RFC 8656 §21 (and coturn's default): the relay must not reach the server's own host.
#[test]
fn loopback_peer_is_403_by_default() {
    let turnd = Turnd::builder(turnd_bin())
        .unset("allow-loopback-peers")
        .start();
    let mut c = allocated(&turnd);
    let e = c.create_permission(addr("127.0.0.1:9")).unwrap_err();
    assert_eq!(e.code, 403, "{e}");
    // Elsewhere in 127/8 too.
    let e = c.create_permission(addr("127.1.2.3:9")).unwrap_err();
    assert_eq!(e.code, 403, "{e}");
}

/// Cloud metadata services live at 169.254.169.254: never a peer, even when loopback
/// peers are allowed for testing.
#[test]
fn link_local_metadata_peer_is_403_even_with_loopback_allowed() {
    let turnd = Turnd::builder(turnd_bin()).start();
    let mut c = allocated(&turnd);
    let e = c.create_permission(addr("169.254.169.254:80")).unwrap_err();
    assert_eq!(e.code, 403, "{e}");
    // The same configuration does allow the loopback peer the other tests use.
    c.create_permission(addr("127.0.0.1:9")).unwrap();
}

/// `::ffff:127.0.0.1` is loopback spelled in IPv6; the policy must see through it.
#[test]
fn v4_mapped_loopback_peer_is_refused_by_default() {
    let turnd = Turnd::builder(turnd_bin())
        .unset("allow-loopback-peers")
        .set("relay-ip", "[\"127.0.0.1\", \"::1\"]")
        .start();
    // An IPv6 relay (REQUESTED-ADDRESS-FAMILY 0x02, RFC 8656 §18.6): the family matches,
    // so the peer policy decides: 403.
    let mut c = StunClient::udp(turnd.addr()).unwrap();
    let relayed = c
        .allocate_extra(
            USER,
            PASSWORD,
            &[(stun_proto::attr::REQUESTED_ADDRESS_FAMILY, vec![2, 0, 0, 0])],
        )
        .unwrap_or_else(|e| panic!("IPv6 Allocate: {e}\n{}", turnd.log()));
    assert!(relayed.is_ipv6(), "{relayed}");
    // The IPv4-mapped form, the SIIT IPv4-translated form (RFC 2765 §2.1), the NAT64
    // well-known prefix (RFC 6052) and the IPv4-compatible form of 127.0.0.1.
    for peer in [
        "[::ffff:127.0.0.1]:9",
        "[::ffff:0:7f00:1]:9",
        "[64:ff9b::7f00:1]:9",
        "[::127.0.0.1]:9",
    ] {
        let e = c.create_permission(addr(peer)).unwrap_err();
        assert_eq!(e.code, 403, "{peer}: {e}");
    }
    // An IPv4 relay: refused too (443 Peer Address Family Mismatch, RFC 8656 §9.1, or
    // 403); what matters is that no permission is installed.
    let mut c = allocated(&turnd);
    let e = c
        .create_permission(addr("[::ffff:127.0.0.1]:9"))
        .unwrap_err();
    assert!(e.code == 403 || e.code == 443, "{e}");
}

/// RFC 8489 §9.2.4: a nonce older than `stale-nonce` seconds gets 438 Stale Nonce.
#[test]
fn stale_nonce_is_438() {
    let turnd = Turnd::builder(turnd_bin()).set("stale-nonce", "1").start();
    let mut c = StunClient::udp(turnd.addr()).unwrap();
    c.fetch_nonce(USER, PASSWORD).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let e = c.allocate_with_stored(&[]).unwrap_err();
    assert_eq!(e.code, 438, "{e}");
    // With the fresh nonce the 438 carries, it works (RFC 8489 §9.2.5).
    c.fetch_nonce(USER, PASSWORD).unwrap();
    c.allocate_with_stored(&[]).unwrap();
}

/// `user-quota = 1`: a second allocation for the same user is 486 Allocation Quota
/// Reached (RFC 8656 §7.2).
#[test]
fn user_quota_is_486() {
    let turnd = Turnd::builder(turnd_bin()).set("user-quota", "1").start();
    let _first = allocated(&turnd);
    let mut second = StunClient::udp(turnd.addr()).unwrap();
    let e = second.allocate(USER, PASSWORD).unwrap_err();
    assert_eq!(e.code, 486, "{e}");
}

/// RFC 8489 §6.3.1.1: an unknown comprehension-required attribute is 420 with the
/// attribute listed in UNKNOWN-ATTRIBUTES.
#[test]
fn unknown_required_attribute_is_420() {
    let turnd = Turnd::builder(turnd_bin()).start();
    let mut c = StunClient::udp(turnd.addr()).unwrap();
    let e = c
        .allocate_extra(USER, PASSWORD, &[(0x0031, vec![0, 0, 0, 0])])
        .unwrap_err();
    assert_eq!(e.code, 420, "{e}");
    assert_eq!(e.unknown, vec![0x0031]);
}

/// Random, truncated and corrupted datagrams and a TCP connection speaking nonsense: the
/// server drops them, counts them, and goes on serving.
#[test]
fn garbage_is_counted_and_survived() {
    use rand::Rng;
    let turnd = Turnd::builder(turnd_bin()).prometheus().start();
    let mut rng = rand::thread_rng();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let template = StunClient::udp(turnd.addr()).unwrap().request(
        stun_proto::message::method::ALLOCATE,
        &[(stun_proto::attr::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])],
    );
    for i in 0..1000 {
        let datagram: Vec<u8> = match i % 4 {
            // Noise.
            0 => (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
            // A valid request cut short.
            1 => template[..rng.gen_range(0..template.len())].to_vec(),
            // A valid request with a lying length field.
            2 => {
                let mut d = template.clone();
                let bogus: u16 = rng.gen_range(0..2000) * 4 + 4;
                d[2..4].copy_from_slice(&bogus.to_be_bytes());
                d
            }
            // A STUN header (class bits 00, magic cookie) followed by random attributes.
            _ => {
                let mut d = template[..20].to_vec();
                let body: Vec<u8> = (0..rng.gen_range(1..64) * 4).map(|_| rng.gen()).collect();
                d[2..4].copy_from_slice(&(body.len() as u16).to_be_bytes());
                d.extend_from_slice(&body);
                d
            }
        };
        sock.send_to(&datagram, turnd.addr()).unwrap();
    }

    // Neither STUN (first two bits 00 with the magic cookie) nor ChannelData (01): the
    // server cannot resynchronise such a stream and must close it. (Text such as "GET /"
    // would not do: 'G' starts a syntactically valid ChannelData header for channel 0x4745,
    // which the server rightly waits to read in full.)
    let mut tcp = TcpStream::connect(turnd.addr()).unwrap();
    let mut junk: Vec<u8> = (0..512).map(|_| rng.gen()).collect();
    junk[0] = 0xFF;
    tcp.write_all(&junk).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("server answered {n} bytes to junk on TCP"),
        Err(e) => panic!("server kept the junk TCP connection open: {e}"),
    }

    let _ok = allocated(&turnd);
    assert!(turnd.daemon.log_contents().contains("turnd listening"));
    turnd.wait_metric("turnd_malformed_packets_total", 1.0);
    turnd.wait_metric("turnd_error_responses_total{code=\"401\"}", 1.0);
    turnd.wait_metric("turnd_stream_garbage_total", 1.0);
}

// --- Reload ---------------------------------------------------------------------------

/// SIGHUP swaps the certificate for new TLS connections while allocations made before
/// the reload keep working.
#[test]
fn sighup_reloads_certificate_and_keeps_allocations() {
    let turnd = Turnd::builder(turnd_bin()).tls().start();
    let a = turnd.tls.clone().expect("TLS files");
    let served_a = served_certificate(turnd.tls_addr(), "localhost", &a.cert_pem)
        .unwrap_or_else(|e| panic!("TLS with cert A: {e}\n{}", turnd.log()));

    let mut client = allocated(&turnd);

    let b_dir = turnd.dir.path().join("b");
    std::fs::create_dir(&b_dir).unwrap();
    let b = self_signed_files(&b_dir, &["localhost"]);
    std::fs::copy(&b.key, &a.key).unwrap();
    std::fs::copy(&b.cert, &a.cert).unwrap();
    turnd.daemon.signal(SIGHUP);
    assert!(
        turnd
            .daemon
            .wait_for_log("certificate reloaded", Duration::from_secs(5)),
        "no reload in the log:\n{}",
        turnd.log()
    );

    let served_b = served_certificate(turnd.tls_addr(), "localhost", &b.cert_pem)
        .unwrap_or_else(|e| panic!("TLS with cert B after SIGHUP: {e}\n{}", turnd.log()));
    assert_ne!(served_a, served_b);
    assert!(
        served_certificate(turnd.tls_addr(), "localhost", &a.cert_pem).is_err(),
        "cert A still served after the reload"
    );

    let lifetime = client
        .refresh(600)
        .unwrap_or_else(|e| panic!("Refresh after SIGHUP: {e}\n{}", turnd.log()));
    assert_eq!(lifetime, 600);
}

// --- User databases -------------------------------------------------------------------

const DB_USER: &str = "dbuser";
const DB_PASSWORD: &str = "from-the-database";

/// Creates the coturn schema at `url` with rtc-store and adds `dbuser` the way
/// `turnadmin -a` would (hex MD5 key).
fn provision(url: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = rtc_store::Store::connect(url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        store.migrate_turn().await.unwrap();
        let key = hex::encode(rtc_auth::turn::key_md5(DB_USER, REALM, DB_PASSWORD));
        store.turn().add_user(REALM, DB_USER, &key).await.unwrap();
        store.close().await;
    });
}

/// turnd with `key = url` and no static users; uclient authenticates as the database user.
fn uclient_with_database(key: &str, url: &str, builder: rtc_tests::turnd::TurndBuilder) {
    provision(url);
    let turnd = builder.unset("user").set(key, &toml_string(url)).start();
    let peer = Peer::start();
    let out = uclient(
        turnd.port,
        &peer,
        &["-u", DB_USER, "-w", DB_PASSWORD, "-n", "50", "-m", "4"],
    );
    assert_no_loss(&out, &turnd);
    // A user the database does not know is refused.
    let mut c = StunClient::udp(turnd.addr()).unwrap();
    assert_eq!(c.allocate("nobody", "x").unwrap_err().code, 401);
}

#[test]
fn sqlite_userdb() {
    let builder = Turnd::builder(turnd_bin());
    let path = builder.dir().join("turndb");
    uclient_with_database("userdb", &path.to_string_lossy(), builder);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_userdb() {
    let db = ScratchDb::create(Engine::Postgres);
    uclient_with_database("psql-userdb", &db.url(), Turnd::builder(turnd_bin()));
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_userdb() {
    let db = ScratchDb::create(Engine::Mysql);
    uclient_with_database("mysql-userdb", &db.url(), Turnd::builder(turnd_bin()));
}
