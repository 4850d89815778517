//! xmppd as a process: configuration errors, start-up on SQLite, the I/O shell's own duties
//! (STARTTLS on the same socket, direct TLS with the certificate chosen by SNI, metrics,
//! reload of virtual hosts without dropping connections, shutdown). XMPP itself is tested
//! with real clients elsewhere; here the core only has to answer a stream header.
//!
//! Every test starts its own xmppd on its own free ports (`rtc_tests::xmppd::Xmppd`).

use rtc_tests::xmppd::{TlsStream, XmppStream, Xmppd, DOMAIN, MUC, NS_SASL, NS_TLS};
use rtc_tests::{SIGHUP, SIGTERM};

mod common;
use common::add_account;
use std::path::Path;
use std::time::Duration;

fn xmppd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_xmppd"))
}

/// `r`'s value, or a panic with the error and the daemon's log.
fn ok<T>(xmppd: &Xmppd, r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}; log:\n{}", xmppd.log()))
}

#[test]
fn check_config_errors_name_file_and_key() {
    let bin = xmppd_bin();
    // Main-file problems name the main file.
    for (key, value) in [
        ("c2s-rate", "\"fast\""),
        ("c2s-stanza-size-limit", "100"),
        ("interfaces", "[\"localhost\"]"),
        ("admins", "[\"falcot.com\"]"),
        ("scram-iterations", "\"many\""),
    ] {
        let b = Xmppd::builder(bin).set(key, value);
        let out = b.check_config();
        assert!(!out.success(), "{key} = {value} accepted:\n{out}");
        let main = b.dir().join("daemon.toml");
        assert!(
            out.text().contains(&*main.to_string_lossy()),
            "file not named for {key}: {out}"
        );
        assert!(out.text().contains(key), "key {key} not named: {out}");
    }

    // No enabled host at all.
    let b = Xmppd::builder(bin);
    std::fs::remove_file(b.dir().join(format!("vhosts-enabled/{DOMAIN}.toml"))).unwrap();
    let out = b.check_config();
    assert!(!out.success(), "{out}");
    assert!(out.text().contains("vhosts-enabled"), "{out}");

    // A host file's problems name that file and the key.
    let b = Xmppd::builder(bin);
    let host = b
        .dir()
        .join("vhosts-available")
        .join(format!("{DOMAIN}.toml"));
    let out = b.check_config();
    assert!(out.success(), "{out}");
    let text = std::fs::read_to_string(&host).unwrap();
    for (broken, key) in [
        (
            text.replace("certificate = ", "#certificate = "),
            "certificate",
        ),
        (
            text.replace(&format!("{DOMAIN}.crt"), "missing.crt"),
            "certificate",
        ),
        (text.replace(&format!("{DOMAIN}.key"), "missing.key"), "key"),
        (text.replace("\"muc\"", "\"pubsub\""), "type"),
        (
            format!("allow-registraton = true\n{text}"),
            "allow-registraton",
        ),
    ] {
        std::fs::write(&host, &broken).unwrap();
        let out = b.check_config();
        assert!(!out.success(), "accepted:\n{broken}\n{out}");
        assert!(
            out.text().contains(&format!("{DOMAIN}.toml")),
            "host file not named for {key}: {out}"
        );
        assert!(out.text().contains(key), "key {key} not named: {out}");
    }
    std::fs::write(&host, &text).unwrap();
    let out = b.check_config();
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("configuration is valid"), "{out}");
}

#[test]
fn starts_on_sqlite_and_offers_starttls_then_sasl() {
    let xmppd = Xmppd::builder(xmppd_bin()).start();
    assert!(
        xmppd.db_path().exists(),
        "no database at {:?}",
        xmppd.db_path()
    );
    let mut c = XmppStream::connect(xmppd.addr()).unwrap();
    let features = c
        .open(DOMAIN)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", xmppd.log()));
    assert!(features.contains(NS_TLS), "no STARTTLS: {features}");
    assert!(
        features.contains(&format!("from='{DOMAIN}'"))
            || features.contains(&format!("from=\"{DOMAIN}\"")),
        "{features}"
    );

    // The upgrade on the same socket, then a new stream over TLS offers SASL.
    let mut tls = c
        .starttls(DOMAIN, xmppd.cert_pem(DOMAIN))
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", xmppd.log()));
    let features = tls
        .open(DOMAIN)
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", xmppd.log()));
    assert!(features.contains(NS_SASL), "no SASL after TLS: {features}");
    assert!(features.contains("SCRAM-SHA-256"), "{features}");
}

#[test]
fn direct_tls_presents_the_certificate_of_the_host_named_by_sni() {
    let xmppd = Xmppd::builder(xmppd_bin())
        .vhost("debian.org", true)
        .start();
    for (sni, host) in [
        (DOMAIN, DOMAIN),
        (MUC, DOMAIN),
        ("debian.org", "debian.org"),
        ("conference.debian.org", "debian.org"),
    ] {
        let pem = xmppd.cert_pem(host);
        let mut c = XmppStream::connect_tls(xmppd.tls_addr(), sni, pem)
            .unwrap_or_else(|e| panic!("SNI {sni}: {e}; log:\n{}", xmppd.log()));
        let der = c.peer_certificate().expect("a certificate");
        let expected = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'_>| c.to_vec())
            .unwrap();
        assert_eq!(der, expected, "SNI {sni} got another host's certificate");
        if sni == host {
            // TLS from the first byte: the stream goes straight to authentication.
            let features = c
                .open(host)
                .unwrap_or_else(|e| panic!("{e}; log:\n{}", xmppd.log()));
            assert!(features.contains(NS_SASL), "{features}");
            assert!(
                !features.contains(NS_TLS),
                "STARTTLS inside TLS: {features}"
            );
        }
    }
    // A client trusting only debian.org's certificate but asking for falcot.com is
    // refused by its own verification: the server did pick falcot.com's.
    assert!(
        XmppStream::connect_tls(xmppd.tls_addr(), DOMAIN, xmppd.cert_pem("debian.org")).is_err()
    );
}

/// SCRAM-*-PLUS works only if the channel-binding data the shell hands the core is exactly
/// what the client computes on its side of the same TLS connection: the RFC 9266 exporter
/// (direct TLS, and after STARTTLS on the upgraded socket) and the RFC 5929 hash of the
/// certificate the SNI chose.
#[test]
fn channel_binding_data_matches_the_clients() {
    let b = Xmppd::builder(xmppd_bin());
    add_account(&b.dir().join("xmppd.sqlite"), "roland", "secret");
    let xmppd = b.start();
    let pem = xmppd.cert_pem(DOMAIN);
    let plus = |c: &mut XmppStream<TlsStream>, mechanism: &str, kind: &str, data: &[u8]| {
        c.scram(mechanism, "roland", "secret", Some((kind, data)))
    };

    let mut direct = ok(
        &xmppd,
        XmppStream::connect_tls(xmppd.tls_addr(), DOMAIN, pem),
    );
    let features = ok(&xmppd, direct.open(DOMAIN));
    assert!(features.contains("SCRAM-SHA-256-PLUS"), "{features}");
    assert!(features.contains("tls-exporter"), "{features}");
    let exporter = direct.tls_exporter();
    ok(
        &xmppd,
        plus(&mut direct, "SCRAM-SHA-256-PLUS", "tls-exporter", &exporter),
    );

    let mut by_cert = ok(&xmppd, XmppStream::connect_tls(xmppd.tls_addr(), MUC, pem));
    ok(&xmppd, by_cert.open(DOMAIN));
    let end_point = by_cert.tls_server_end_point();
    let kind = "tls-server-end-point";
    ok(
        &xmppd,
        plus(&mut by_cert, "SCRAM-SHA-1-PLUS", kind, &end_point),
    );

    let mut plain = ok(&xmppd, XmppStream::connect(xmppd.addr()));
    ok(&xmppd, plain.open(DOMAIN));
    let mut upgraded = ok(&xmppd, plain.starttls(DOMAIN, pem));
    ok(&xmppd, upgraded.open(DOMAIN));
    let exporter = upgraded.tls_exporter();
    ok(
        &xmppd,
        plus(
            &mut upgraded,
            "SCRAM-SHA-256-PLUS",
            "tls-exporter",
            &exporter,
        ),
    );

    // Another connection's exporter (what a man in the middle would relay) is refused.
    let mut other = ok(
        &xmppd,
        XmppStream::connect_tls(xmppd.tls_addr(), DOMAIN, pem),
    );
    ok(&xmppd, other.open(DOMAIN));
    let err = plus(&mut other, "SCRAM-SHA-256-PLUS", "tls-exporter", &exporter).unwrap_err();
    assert!(err.contains("not-authorized"), "{err}");
}

#[test]
fn metrics_endpoint_serves_xmppd_series() {
    let xmppd = Xmppd::builder(xmppd_bin()).prometheus().start();
    let text = xmppd.metrics();
    for series in [
        "xmppd_c2s_connections",
        "xmppd_sessions",
        "xmppd_stanzas_in_total{kind=\"message\"}",
        "xmppd_stanzas_in_total{kind=\"presence\"}",
        "xmppd_stanzas_in_total{kind=\"iq\"}",
        "xmppd_stanzas_out_total{kind=\"message\"}",
        "xmppd_auth_failures_total",
        "xmppd_auth_successes_total",
        "xmppd_stream_errors_total",
        "xmppd_rooms",
        "xmppd_occupants",
        "xmppd_offline_stored_total",
        "xmppd_db_batches_total",
        "xmppd_db_errors_total",
        "xmppd_tls_handshake_failures_total",
    ] {
        assert!(
            rtc_tests::metrics::value(&text, series).is_some(),
            "{series} missing:\n{text}"
        );
    }
    let mut c = XmppStream::connect(xmppd.addr()).unwrap();
    c.open(DOMAIN).unwrap();
    xmppd.wait_metric("xmppd_c2s_connections", 1.0);

    // Garbage on the direct-TLS port is a failed handshake.
    let mut raw = std::net::TcpStream::connect(xmppd.tls_addr()).unwrap();
    std::io::Write::write_all(&mut raw, b"<stream:stream>").unwrap();
    xmppd.wait_metric("xmppd_tls_handshake_failures_total", 1.0);
}

#[test]
fn sighup_enables_a_new_host_without_dropping_connections_and_sigterm_exits_zero() {
    let mut xmppd = Xmppd::builder(xmppd_bin()).start();
    let new_pem = xmppd.add_vhost("debian.org");

    // Before: the domain is not served.
    let mut before = XmppStream::connect(xmppd.addr()).unwrap();
    let err = before.open("debian.org").unwrap_err();
    assert!(err.contains("host-unknown"), "{err}");

    // A client of falcot.com in the middle of its stream.
    let mut kept = XmppStream::connect(xmppd.addr()).unwrap();
    kept.open(DOMAIN).unwrap();

    xmppd.enable_vhost("debian.org");
    xmppd.daemon.signal(SIGHUP);
    assert!(
        xmppd
            .daemon
            .wait_for_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        xmppd.log()
    );

    let mut after = XmppStream::connect(xmppd.addr()).unwrap();
    let features = after
        .open("debian.org")
        .unwrap_or_else(|e| panic!("{e}; log:\n{}", xmppd.log()));
    assert!(features.contains(NS_TLS), "{features}");
    let mut tls = after
        .starttls("debian.org", &new_pem)
        .unwrap_or_else(|e| panic!("new host's certificate: {e}; log:\n{}", xmppd.log()));
    tls.open("debian.org").unwrap();

    // The connection from before the reload is still served.
    assert!(kept.is_quiet_and_open(Duration::from_millis(300)));
    kept.starttls(DOMAIN, xmppd.cert_pem(DOMAIN))
        .unwrap_or_else(|e| panic!("old connection after reload: {e}; log:\n{}", xmppd.log()))
        .open(DOMAIN)
        .unwrap();

    // A broken host file is refused as a whole and the daemon keeps running.
    let broken = xmppd.dir.path().join("vhosts-available/debian.org.toml");
    std::fs::write(&broken, "domain = \"debian.org\"\n").unwrap();
    xmppd.daemon.signal(SIGHUP);
    assert!(
        xmppd
            .daemon
            .wait_for_log("keeping the running configuration", Duration::from_secs(5)),
        "{}",
        xmppd.log()
    );
    let mut still = XmppStream::connect(xmppd.addr()).unwrap();
    still.open("debian.org").unwrap();

    xmppd.daemon.signal(SIGTERM);
    let status = xmppd.daemon.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; log:\n{}",
        xmppd.log()
    );
    let log = xmppd.log();
    assert!(log.contains("every queued change is committed"), "{log}");
    assert!(log.contains(&format!("xmppd serving {DOMAIN}")), "{log}");
}
