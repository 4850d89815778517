//! sipd as a process: configuration errors, start-up on SQLite, the I/O shell's own duties
//! (STUN and CRLF keep-alives, pike, metrics, TLS, reload, shutdown) and a first SIP
//! exchange over UDP and TCP. Registrar and proxy behaviour is tested against real SIP
//! clients elsewhere; here the core only has to answer.
//!
//! Every test starts its own sipd on its own free ports (`rtc_tests::sipd::Sipd`).

use rtc_tests::sipd::{options, udp_request, Sipd, DOMAIN};
use rtc_tests::stun::StunClient;
use rtc_tests::{run_tool, SIGHUP, SIGTERM};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

fn sipd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sipd"))
}

/// `sipd --check-config` on `text`: (success, stdout + stderr, config path).
fn check(text: &str) -> (bool, String, String) {
    let dir = rtc_tests::tempfile::tempdir().unwrap();
    let path = dir.path().join("sipd.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_string_lossy().into_owned();
    let bin = sipd_bin().to_string_lossy();
    let out = run_tool(&bin, &["--check-config", "--config", &path], CHECK_TIMEOUT);
    (out.success(), out.text(), path)
}

#[test]
fn check_config_errors_name_file_and_key() {
    let cases = [
        (
            "domain = [\"falcot.com\"]\nlisten = [\"tls:127.0.0.1:5061\"]\n",
            "tls-certificate",
        ),
        (
            "domain = [\"falcot.com\"]\nlisten = [\"udp:sip.falcot.com:5060\"]\n",
            "listen",
        ),
        ("listen = [\"udp:127.0.0.1:5060\"]\n", "domain"),
        (
            "domain = [\"falcot.com\"]\nmin-expires = 600\ndefault-expires = 60\n",
            "default-expires",
        ),
        (
            "domain = [\"falcot.com\"]\ntrusted = [\"203.0.113.0/33\"]\n",
            "trusted",
        ),
        (
            "domain = [\"falcot.com\"]\nmax-expires = \"a day\"\n",
            "max-expires",
        ),
    ];
    for (text, key) in cases {
        let (ok, out, path) = check(text);
        assert!(!ok, "accepted:\n{text}\n{out}");
        assert!(out.contains(&path), "file not named for {key}: {out}");
        assert!(out.contains(key), "key {key} not named: {out}");
    }
    let (ok, out, _) = check("domain = [\"falcot.com\"]\n");
    assert!(ok, "{out}");
    assert!(out.contains("configuration is valid"), "{out}");
}

/// `--check-config` loads the TLS certificate and key as start-up would: a missing or
/// garbage file, or a key of another certificate, fails naming the file and the setting.
#[test]
fn check_config_checks_the_certificate_files() {
    rtc_tests::example_config::assert_certificate_files_checked(
        sipd_bin().to_str().unwrap(),
        |cert, key| {
            format!(
                "domain = [\"falcot.com\"]\nlisten = [\"tls:127.0.0.1:5061\"]\n\
                 tls-certificate = {:?}\ntls-private-key = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            )
        },
        "tls-certificate",
        "tls-private-key",
    );
}

#[test]
fn starts_on_sqlite_and_answers_options_over_udp() {
    let sipd = Sipd::builder(sipd_bin()).start();
    assert!(
        sipd.db_path().exists(),
        "no database at {:?}",
        sipd.db_path()
    );
    let answer = udp_request(sipd.addr(), |local| {
        options(local, "z9hG4bK-startup-1", "startup-1@test")
    })
    .unwrap_or_else(|| panic!("no answer to OPTIONS; log:\n{}", sipd.log()));
    assert!(answer.starts_with("SIP/2.0 "), "{answer}");
    assert!(
        answer.contains("startup-1@test"),
        "Call-ID not copied: {answer}"
    );
    assert!(
        answer.contains("z9hG4bK-startup-1"),
        "Via not copied: {answer}"
    );
}

#[test]
fn answers_over_tcp_and_pongs_crlf_pings() {
    let sipd = Sipd::builder(sipd_bin()).start();
    let mut tcp = TcpStream::connect(sipd.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // RFC 5626 section 4.4.1: a double CRLF is answered with a single one.
    tcp.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    tcp.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");

    let local = tcp.local_addr().unwrap();
    let request =
        options(local, "z9hG4bK-tcp-1", "tcp-1@test").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    tcp.write_all(request.as_bytes()).unwrap();
    let answer = read_sip_message(&mut tcp)
        .unwrap_or_else(|e| panic!("no answer over TCP ({e}); log:\n{}", sipd.log()));
    assert!(answer.starts_with("SIP/2.0 "), "{answer}");
    assert!(answer.contains("tcp-1@test"), "{answer}");
}

#[test]
fn unframeable_stream_is_closed() {
    let sipd = Sipd::builder(sipd_bin()).start();
    let mut tcp = TcpStream::connect(sipd.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // Content-Length is mandatory on streams (RFC 3261 section 18.3) and this one lies.
    let local = tcp.local_addr().unwrap();
    let request = options(local, "z9hG4bK-bad-1", "bad-1@test")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .replace("Content-Length: 0", "Content-Length: x");
    tcp.write_all(request.as_bytes()).unwrap();
    let mut rest = Vec::new();
    // Whatever is answered (400, or nothing for hopeless input), the connection ends.
    let _ = tcp.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("SIP/2.0 4"),
        "unexpected answer: {text}"
    );
}

/// Reads one SIP message (headers and a Content-Length body) from a stream.
fn read_sip_message(s: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name == "l")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or("no Content-Length")?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(head + &String::from_utf8_lossy(&body))
}

#[test]
fn metrics_endpoint_serves_sipd_series() {
    let sipd = Sipd::builder(sipd_bin()).prometheus().start();
    let text = sipd.metrics();
    for series in [
        "sipd_registered_contacts",
        "sipd_transactions{kind=\"server\"}",
        "sipd_transactions{kind=\"client\"}",
        "sipd_replies_total{class=\"2xx\"}",
        "sipd_auth_failures_total",
        "sipd_auth_challenges_total",
        "sipd_malformed_total",
        "sipd_scanner_drops_total",
        "sipd_pike_bans_total",
        "sipd_pike_banned_sources",
        "sipd_pike_dropped_total",
        "sipd_tcp_connections",
        "sipd_db_batches_total",
        "sipd_db_batch_ops_total",
        "sipd_db_errors_total",
    ] {
        assert!(
            rtc_tests::metrics::value(&text, series).is_some(),
            "{series} missing:\n{text}"
        );
    }
    udp_request(sipd.addr(), |local| {
        options(local, "z9hG4bK-m-1", "m-1@test")
    })
    .unwrap_or_else(|| panic!("no answer to OPTIONS; log:\n{}", sipd.log()));
    sipd.wait_metric("sipd_requests_total{method=\"OPTIONS\"}", 1.0);

    let _tcp = TcpStream::connect(sipd.addr()).unwrap();
    sipd.wait_metric("sipd_tcp_connections", 1.0);
}

#[test]
fn stun_binding_on_the_sip_udp_port_is_answered() {
    let sipd = Sipd::builder(sipd_bin()).prometheus().start();
    let mut client = StunClient::udp(sipd.addr()).unwrap();
    let mapped = client
        .binding()
        .unwrap_or_else(|e| panic!("STUN binding: {e}; log:\n{}", sipd.log()));
    assert_eq!(Some(mapped), client.local_addr());
    sipd.wait_metric("sipd_stun_keepalives_total", 1.0);
}

#[test]
fn pike_bans_a_flooding_source() {
    let sipd = Sipd::builder(sipd_bin())
        .prometheus()
        .set("pike-reqs-density-per-unit", "5")
        .set("pike-remove-latency", "60")
        .start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    for i in 0..20 {
        let req = options(
            local,
            &format!("z9hG4bK-flood-{i}"),
            &format!("flood-{i}@test"),
        );
        sock.send_to(req.as_bytes(), sipd.addr()).unwrap();
    }
    sipd.wait_metric("sipd_pike_bans_total", 1.0);
    sipd.wait_metric("sipd_pike_banned_sources", 1.0);
    assert!(
        sipd.daemon
            .wait_for_log("pike: 127.0.0.1", Duration::from_secs(3)),
        "{}",
        sipd.log()
    );
    // Banned: even a well-formed request now goes unanswered.
    let answer = udp_request(sipd.addr(), |local| {
        options(local, "z9hG4bK-after", "after@test")
    });
    assert_eq!(answer, None);
    assert!(sipd.wait_metric("sipd_pike_dropped_total", 1.0) >= 1.0);
}

#[test]
fn tls_listener_presents_the_certificate() {
    let sipd = Sipd::builder(sipd_bin()).tls().start();
    let addr: SocketAddr = sipd.tls_addr().unwrap();
    let pem = &sipd.tls.as_ref().unwrap().cert_pem;
    rtc_tests::tls::served_certificate(addr, "localhost", pem)
        .unwrap_or_else(|e| panic!("TLS: {e}; log:\n{}", sipd.log()));
}

#[test]
fn sighup_reloads_and_sigterm_exits_zero() {
    let mut sipd = Sipd::builder(sipd_bin()).start();
    let path = sipd.daemon.config_path().to_owned();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}max-expires = 7200\n")).unwrap();
    sipd.daemon.signal(SIGHUP);
    assert!(
        sipd.daemon
            .wait_for_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        sipd.log()
    );
    assert!(
        sipd.daemon
            .wait_for_log("bindings reloaded", Duration::from_secs(5)),
        "{}",
        sipd.log()
    );
    // A broken file is refused and the daemon keeps running.
    std::fs::write(&path, format!("{text}max-expires = 0\n")).unwrap();
    sipd.daemon.signal(SIGHUP);
    assert!(
        sipd.daemon
            .wait_for_log("keeping the running configuration", Duration::from_secs(5)),
        "{}",
        sipd.log()
    );
    let answer = udp_request(sipd.addr(), |local| options(local, "z9hG4bK-h", "h@test"));
    assert!(
        answer.is_some(),
        "no answer after reload; log:\n{}",
        sipd.log()
    );

    sipd.daemon.signal(SIGTERM);
    let status = sipd.daemon.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; log:\n{}",
        sipd.log()
    );
    assert!(
        sipd.log().contains("every queued change is committed"),
        "{}",
        sipd.log()
    );
    assert!(
        sipd.log().contains(&format!("sipd serving {DOMAIN}")),
        "{}",
        sipd.log()
    );
}
