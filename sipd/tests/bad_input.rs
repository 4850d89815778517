//! Hostile and broken input on the wire: the RFC 4475 torture corpus, oversized and
//! truncated messages, scanners, and a flood from one address. Each gets the
//! protocol-correct answer (or deliberate silence), and sipd keeps serving everyone else.

use rtc_tests::sipd::{options, udp_request, Sipd};
use sip_proto::message::{error_response, Limits, Message};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn sipd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sipd"))
}

fn corpus() -> Vec<PathBuf> {
    let dir = format!(
        "{}/../crates/sip-proto/tests/data/rfc4475",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 50, "the whole RFC 4475 corpus");
    files
}

/// Sends one datagram from a fresh socket and returns the first answer's status line.
fn send_udp(server: SocketAddr, data: &[u8], wait: Duration) -> Option<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(data, server).unwrap();
    let mut buf = vec![0u8; 65536];
    // Skip provisional answers (a 100 Trying to an INVITE).
    loop {
        let n = sock.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let line = text.lines().next().unwrap_or_default().to_string();
        if !line.starts_with("SIP/2.0 1") {
            return Some(line);
        }
    }
}

fn status_of(line: &str) -> u16 {
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Every torture message over UDP: those the parser refuses and can answer get exactly the
/// status the parser decides (400 with a reason, 505 for SIP/7.0), never a crash; the
/// well-formed ones are handled by the proxy like any request; afterwards sipd still
/// answers OPTIONS.
#[test]
fn torture_corpus_over_udp() {
    let sipd = Sipd::builder(sipd_bin())
        .prometheus()
        .set("pike-reqs-density-per-unit", "100000")
        .start();
    let mut checked_errors = 0;
    for path in corpus() {
        let data = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let answer = send_udp(sipd.addr(), &data, Duration::from_millis(400));
        match Message::parse(&data, &Limits::default()) {
            Err(e) => {
                if error_response(&data, &e).is_some() {
                    let line = answer.unwrap_or_else(|| {
                        panic!(
                            "{name}: no answer to a refused request; log:\n{}",
                            sipd.log()
                        )
                    });
                    assert_eq!(status_of(&line), e.status(), "{name}: {line}");
                    checked_errors += 1;
                } else {
                    assert_eq!(answer, None, "{name}: unanswerable input must get silence");
                }
            }
            Ok(m) if !m.is_request() => {
                assert_eq!(answer, None, "{name}: a stray response is not answered")
            }
            Ok(_) => {}
        }
    }
    assert!(
        checked_errors >= 15,
        "only {checked_errors} refusals checked"
    );
    assert!(
        sipd.wait_metric("sipd_malformed_total", checked_errors as f64) >= checked_errors as f64
    );
    let answer = udp_request(sipd.addr(), |l| {
        options(l, "z9hG4bK-after-torture", "after-torture")
    });
    assert!(
        answer.is_some_and(|a| a.starts_with("SIP/2.0 200")),
        "{}",
        sipd.log()
    );
}

/// 513 for a message larger than `max-message-size`, over UDP and over TCP (where the
/// connection is then closed: its framing cannot be trusted any more).
#[test]
fn oversized_messages_get_513() {
    let sipd = Sipd::builder(sipd_bin())
        .set("max-message-size", "4096")
        .start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let big = options(local, "z9hG4bK-big", "big").replace(
        "Content-Length: 0\r\n",
        &format!("X-Padding: {}\r\nContent-Length: 0\r\n", "a".repeat(8000)),
    );
    let line =
        send_udp(sipd.addr(), big.as_bytes(), Duration::from_secs(2)).expect("an answer over UDP");
    assert_eq!(status_of(&line), 513, "{line}");

    let mut tcp = TcpStream::connect(sipd.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = tcp.local_addr().unwrap();
    let big = options(local, "z9hG4bK-bigtcp", "bigtcp")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n{}",
                "b".repeat(100_000)
            ),
        );
    let _ = tcp.write_all(big.as_bytes());
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("SIP/2.0 513"), "{text:?}");
    // Still serving.
    let answer = udp_request(sipd.addr(), |l| {
        options(l, "z9hG4bK-after-big", "after-big")
    });
    assert!(answer.is_some_and(|a| a.starts_with("SIP/2.0 200")));
}

/// A datagram shorter than its Content-Length (RFC 3261 section 18.3: 400), and a request
/// cut off in its headers (nothing to answer: no complete Via/CSeq).
#[test]
fn truncated_messages() {
    let sipd = Sipd::builder(sipd_bin()).start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = sock.local_addr().unwrap();
    let short = options(local, "z9hG4bK-short", "short").replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Type: application/sdp\r\nContent-Length: 500\r\n\r\nv=0\r\n",
    );
    let line = send_udp(sipd.addr(), short.as_bytes(), Duration::from_secs(2)).expect("an answer");
    assert_eq!(status_of(&line), 400, "{line}");
    let full = options(local, "z9hG4bK-cut", "cut");
    let cut = &full.as_bytes()[..25];
    assert_eq!(send_udp(sipd.addr(), cut, Duration::from_millis(500)), None);
    let answer = udp_request(sipd.addr(), |l| {
        options(l, "z9hG4bK-after-cut", "after-cut")
    });
    assert!(answer.is_some_and(|a| a.starts_with("SIP/2.0 200")));
}

/// One address floods unauthenticated REGISTERs: pike bans it, and another address is
/// served normally meanwhile. Scanner user agents get silence.
#[test]
fn flood_is_banned_and_others_are_unaffected() {
    let sipd = Sipd::builder(sipd_bin())
        .prometheus()
        .set("pike-reqs-density-per-unit", "20")
        .start();
    let flooder = UdpSocket::bind("127.0.0.3:0").unwrap();
    let local = flooder.local_addr().unwrap();
    for i in 0..500 {
        let req = options(local, &format!("z9hG4bK-fl-{i}"), &format!("fl-{i}"))
            .replace("OPTIONS sip:falcot.com", "REGISTER sip:falcot.com")
            .replace("CSeq: 1 OPTIONS", "CSeq: 1 REGISTER")
            .replace("To: <sip:falcot.com>", "To: <sip:victim@falcot.com>");
        flooder.send_to(req.as_bytes(), sipd.addr()).unwrap();
    }
    sipd.wait_metric("sipd_pike_bans_total", 1.0);
    // The flooder is ignored...
    flooder
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while flooder.recv(&mut buf).is_ok() {} // drain answers sent before the ban
    let probe = options(local, "z9hG4bK-fl-probe", "fl-probe");
    flooder.send_to(probe.as_bytes(), sipd.addr()).unwrap();
    flooder
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(
        flooder.recv(&mut buf).is_err(),
        "a banned source gets no answer"
    );
    // ...another address is not.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let req = options(other.local_addr().unwrap(), "z9hG4bK-other", "other");
    other.send_to(req.as_bytes(), sipd.addr()).unwrap();
    let n = other.recv(&mut buf).expect("the other source is served");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"));
    // Scanners: no answer at all, counted.
    let scan = options(other.local_addr().unwrap(), "z9hG4bK-scan", "scan")
        .replace("Accept:", "User-Agent: friendly-scanner\r\nAccept:");
    other.send_to(scan.as_bytes(), sipd.addr()).unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(other.recv(&mut buf).is_err(), "scanners get silence");
    sipd.wait_metric("sipd_scanner_drops_total", 1.0);
}

/// A trusted trunk's call to a host name (RFC 3263): sipd looks the name up and relays
/// the INVITE to the address it finds; the receiving UA sees the Request-URI unchanged.
#[test]
fn relays_to_a_host_name_after_dns() {
    let sipd = Sipd::builder(sipd_bin())
        .set("trusted", "[\"127.0.0.0/8\"]")
        .start();
    let uas = UdpSocket::bind("127.0.0.1:0").unwrap();
    uas.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let uas_port = uas.local_addr().unwrap().port();
    let trunk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = trunk.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:carol@localhost:{uas_port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-dns\r\n\
         Max-Forwards: 70\r\nFrom: <sip:pbx@trunk.example>;tag=1\r\nTo: <sip:carol@localhost>\r\n\
         Call-ID: dns-test\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@{local}>\r\nContent-Length: 0\r\n\r\n"
    );
    trunk.send_to(invite.as_bytes(), sipd.addr()).unwrap();
    let mut buf = [0u8; 8192];
    let (n, from) = uas
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("nothing relayed ({e}); log:\n{}", sipd.log()));
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with(&format!("INVITE sip:carol@localhost:{uas_port} SIP/2.0")),
        "{text}"
    );
    assert_eq!(from, sipd.addr());
    assert!(text.contains("Max-Forwards: 69"), "{text}");
}
