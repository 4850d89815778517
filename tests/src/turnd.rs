//! turnd under test: a config on free ports, the daemon, and coturn's client tools.
//!
//! ```no_run
//! # let bin = std::path::Path::new("turnd");
//! let turnd = rtc_tests::turnd::Turnd::builder(bin).set("stale-nonce", "1").start();
//! let mut client = rtc_tests::stun::StunClient::udp(turnd.addr()).unwrap();
//! client.allocate("roland", "secret").unwrap();
//! ```

use crate::daemon::{Daemon, Ready, Setup};
use crate::ports::{free_port_range, free_udp_tcp_port};
use crate::tls::{self_signed_files, CertFiles};
use crate::tool::Background;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const REALM: &str = "falcot.com";
pub const USER: &str = "roland";
pub const PASSWORD: &str = "secret";
/// Relay ports per test server: uclient's 10 clients with RTP, RTCP and client-to-client
/// allocations use 40, EVEN-PORT reservations a few more.
const RELAY_PORTS: u16 = 200;

/// Settings for one turnd, as raw TOML values by key; see [`Turnd::builder`].
#[derive(Debug)]
pub struct TurndBuilder {
    setup: Setup,
    tls: Option<CertFiles>,
}

impl TurndBuilder {
    crate::builder_methods!("turnd");

    /// Serves TLS on a free port with a fresh self-signed certificate for `localhost`.
    pub fn tls(mut self) -> Self {
        let files = self_signed_files(self.dir(), &["localhost", "127.0.0.1"]);
        self = self
            .set("cert", &toml_string(&files.cert.to_string_lossy()))
            .set("pkey", &toml_string(&files.key.to_string_lossy()));
        self.tls = Some(files);
        self
    }

    /// The config file text.
    pub fn config_text(&self) -> String {
        self.setup.config_text()
    }

    pub fn start(self) -> Turnd {
        let port: u16 = self.setup.settings["listening-port"]
            .parse()
            .expect("listening-port is a number");
        let tls_port: u16 = self.setup.settings["tls-listening-port"]
            .parse()
            .expect("tls-listening-port is a number");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let daemon = self.setup.start(&self.config_text(), Ready::StunUdp(addr));
        Turnd {
            daemon,
            port,
            tls_port,
            prometheus: self.setup.prometheus,
            tls: self.tls,
            dir: self.setup.dir,
        }
    }
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A running turnd. Dropping it kills the daemon and removes its directory.
#[derive(Debug)]
pub struct Turnd {
    pub daemon: Daemon,
    pub port: u16,
    pub tls_port: u16,
    pub prometheus: Option<u16>,
    pub tls: Option<CertFiles>,
    // Last: the directory outlives the daemon that writes into it.
    pub dir: TempDir,
}

impl Turnd {
    /// The configuration every real-client test starts from: realm `falcot.com`, user
    /// `roland:secret`, listening and relaying on 127.0.0.1 on free ports, two shards, no
    /// unauthenticated rate limit (uclient's ten clients start at once).
    ///
    /// `allow-loopback-peers = true` because the test peer (`turnutils_peer`) listens on
    /// loopback, which turnd refuses as a peer by default (RFC 8656 §21: a relay must not
    /// give access to the server's own host). Refusal tests `unset` it.
    pub fn builder(binary: &Path) -> TurndBuilder {
        let (min, max) = free_port_range(RELAY_PORTS);
        let b = TurndBuilder {
            setup: Setup::new(binary, "turnd-test-"),
            tls: None,
        };
        b.set("listening-port", &free_udp_tcp_port().to_string())
            .set("tls-listening-port", &free_udp_tcp_port().to_string())
            .set("listening-ip", "[\"127.0.0.1\"]")
            .set("relay-ip", "[\"127.0.0.1\"]")
            .set("min-port", &min.to_string())
            .set("max-port", &max.to_string())
            .set("realm", &toml_string(REALM))
            .set(
                "user",
                &format!("[{}]", toml_string(&format!("{USER}:{PASSWORD}"))),
            )
            .set("allow-loopback-peers", "true")
            .set("relay-threads", "2")
            .set("unauthenticated-rate", "0")
            .set("log-level", &toml_string("info"))
    }

    crate::running_methods!();

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.tls_port))
    }
}

/// coturn's `turnutils_peer` echoing UDP (127.0.0.1 by default) on a free port; killed on
/// drop.
#[derive(Debug)]
pub struct Peer {
    pub port: u16,
    _process: Background,
}

impl Peer {
    pub fn start() -> Peer {
        Peer::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// The echo peer on another loopback address (`::1` for IPv6 relays).
    pub fn start_on(ip: IpAddr) -> Peer {
        let port = free_udp_tcp_port();
        let mut process = Background::spawn(
            "turnutils_peer",
            &["-L", &ip.to_string(), "-p", &port.to_string()],
        );
        // Ready once it holds the port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while UdpSocket::bind((ip, port)).is_ok() {
            process.assert_running();
            assert!(
                Instant::now() < deadline,
                "turnutils_peer did not bind {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Peer {
            port,
            _process: process,
        }
    }
}

/// The summary `turnutils_uclient` prints at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UclientSummary {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
}

/// Parses "tot_send_msgs=A, tot_recv_msgs=B" (the last one: the totals) and
/// "Total lost packets N (x%)".
pub fn parse_uclient(text: &str) -> Option<UclientSummary> {
    let number_after = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let totals = text.lines().rev().find(|l| l.contains("tot_send_msgs="))?;
    let lost_line = text
        .lines()
        .rev()
        .find(|l| l.contains("Total lost packets "))?;
    Some(UclientSummary {
        sent: number_after(totals, "tot_send_msgs=")?,
        received: number_after(totals, "tot_recv_msgs=")?,
        lost: number_after(lost_line, "Total lost packets ")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uclient_summary() {
        let out = "\
9: : start_mclient: msz=10, tot_send_msgs=1924, tot_recv_msgs=1920, tot_send_bytes ~ 1\n\
9: : start_mclient: tot_send_msgs=2000, tot_recv_msgs=2000\n\
9: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)\n";
        assert_eq!(
            parse_uclient(out),
            Some(UclientSummary {
                sent: 2000,
                received: 2000,
                lost: 0
            })
        );
        assert_eq!(parse_uclient("nothing"), None);
    }
}
