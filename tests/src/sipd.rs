//! sipd under test: a config on free ports with a SQLite database in a scratch directory,
//! the daemon, and a few raw SIP helpers.
//!
//! ```no_run
//! # let bin = std::path::Path::new("sipd");
//! let sipd = rtc_tests::sipd::Sipd::builder(bin).prometheus().start();
//! let answer = rtc_tests::sipd::udp_request(sipd.addr(), |local| {
//!     rtc_tests::sipd::options(local, "z9hG4bK-1", "call-1@test")
//! });
//! assert!(answer.unwrap().starts_with("SIP/2.0 200"));
//! ```

use crate::daemon::{Daemon, Ready, Setup};
use crate::ports::free_udp_tcp_port;
use crate::tls::{self_signed_files, CertFiles};
use crate::turnd::toml_string;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// The SIP domain (and digest realm) of the test server.
pub const DOMAIN: &str = "falcot.com";

/// Settings for one sipd, as raw TOML values by key; see [`Sipd::builder`].
#[derive(Debug)]
pub struct SipdBuilder {
    setup: Setup,
    port: u16,
    tls_port: Option<u16>,
    tls: Option<CertFiles>,
}

impl SipdBuilder {
    crate::builder_methods!("sipd");

    /// Adds a TLS listener on a free port with a fresh self-signed certificate for
    /// `localhost` and 127.0.0.1.
    pub fn tls(mut self) -> Self {
        let files = self_signed_files(self.dir(), &["localhost", "127.0.0.1"]);
        self = self
            .set(
                "tls-certificate",
                &toml_string(&files.cert.to_string_lossy()),
            )
            .set(
                "tls-private-key",
                &toml_string(&files.key.to_string_lossy()),
            );
        self.tls = Some(files);
        self.tls_port = Some(free_udp_tcp_port());
        self
    }

    /// The config file text. Setting `listen` replaces the sockets the builder would list.
    pub fn config_text(&self) -> String {
        let mut text = self.setup.config_text();
        if !self.setup.settings.contains_key("listen") {
            text.push_str(&format!(
                "listen = {}\n",
                listen_value(self.port, self.tls_port)
            ));
        }
        text
    }

    /// Starts the daemon and waits until its TCP socket accepts connections, which it does
    /// only once the core holds its bindings.
    pub fn start(self) -> Sipd {
        let ready = Ready::TcpConnect(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)));
        let daemon = self.setup.start(&self.config_text(), ready);
        Sipd {
            daemon,
            port: self.port,
            tls_port: self.tls_port,
            prometheus: self.setup.prometheus,
            tls: self.tls,
            dir: self.setup.dir,
        }
    }
}

fn listen_value(port: u16, tls_port: Option<u16>) -> String {
    let mut sockets = vec![
        format!("udp:127.0.0.1:{port}"),
        format!("tcp:127.0.0.1:{port}"),
    ];
    if let Some(t) = tls_port {
        sockets.push(format!("tls:127.0.0.1:{t}"));
    }
    let quoted: Vec<String> = sockets.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A running sipd. Dropping it kills the daemon and removes its directory.
#[derive(Debug)]
pub struct Sipd {
    pub daemon: Daemon,
    /// UDP and TCP port.
    pub port: u16,
    pub tls_port: Option<u16>,
    pub prometheus: Option<u16>,
    pub tls: Option<CertFiles>,
    // Last: the directory outlives the daemon that writes into it.
    pub dir: TempDir,
}

impl Sipd {
    /// Domain `falcot.com`, UDP and TCP on 127.0.0.1 on a free port, SQLite in the test's
    /// directory, pike at its default.
    pub fn builder(binary: &Path) -> SipdBuilder {
        let b = SipdBuilder {
            setup: Setup::new(binary, "sipd-test-"),
            port: free_udp_tcp_port(),
            tls_port: None,
            tls: None,
        };
        b.set("domain", &format!("[{}]", toml_string(DOMAIN)))
            .set("db-url", &toml_string("sipd.sqlite"))
            .set("log-level", &toml_string("info"))
    }

    crate::running_methods!();

    /// `kill -9` (nothing flushed, nothing cleaned up), then the same binary again on the
    /// same config, database and ports; returns once it is ready.
    pub fn kill_and_restart(&mut self) {
        self.daemon.kill_and_restart(Ready::TcpConnect(self.addr()));
    }

    /// The UDP and TCP address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("sipd.sqlite")
    }
}

/// An OPTIONS request for the domain from a UA at `local` (RFC 3261 section 11), with
/// every mandatory header; `branch` goes into the Via as given (start it with the RFC 3261
/// magic cookie `z9hG4bK`).
pub fn options(local: SocketAddr, branch: &str, call_id: &str) -> String {
    format!(
        "OPTIONS sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{DOMAIN}>;tag=probe-tag\r\n\
         To: <sip:{DOMAIN}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Contact: <sip:probe@{local}>\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\
         \r\n"
    )
}

/// Sends the request `make(local address)` from a fresh UDP socket to `server` and returns
/// the first datagram that comes back, as text, or `None` after two seconds. The request
/// is retransmitted every 500 ms like a UA's Timer A would (loopback loses nothing, but a
/// banned source is never answered, which tests want to see as `None` quickly).
pub fn udp_request(server: SocketAddr, make: impl Fn(SocketAddr) -> String) -> Option<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket");
    let local = sock.local_addr().expect("local address");
    let request = make(local);
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = vec![0u8; 65536];
    for _ in 0..4 {
        sock.send_to(request.as_bytes(), server)
            .expect("sending a request");
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}
