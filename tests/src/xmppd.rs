//! xmppd under test: the main file and one file per virtual host (Prosody's Debian layout:
//! `vhosts-available/<domain>.toml` with its own self-signed certificate, linked from
//! `vhosts-enabled/`), SQLite in a scratch directory, free ports, the daemon, and a small
//! raw XMPP client for what the shell itself must get right (stream headers, STARTTLS,
//! direct TLS with SNI).
//!
//! ```no_run
//! # let bin = std::path::Path::new("xmppd");
//! let xmppd = rtc_tests::xmppd::Xmppd::builder(bin).prometheus().start();
//! let mut c = rtc_tests::xmppd::XmppStream::connect(xmppd.addr()).unwrap();
//! let features = c.open(rtc_tests::xmppd::DOMAIN).unwrap();
//! assert!(features.contains(rtc_tests::xmppd::NS_TLS));
//! ```

use crate::daemon::{Daemon, Ready, Setup};
use crate::ports::free_udp_tcp_port;
use crate::tls::{self_signed_files, CertFiles};
use crate::tool::{run_tool, ToolOutput};
use crate::turnd::toml_string;
use rtc_auth::scram::{self, ScramHash};
use rustls::pki_types::ServerName;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The test server's first domain, with its chat-room component [`MUC`].
pub const DOMAIN: &str = "falcot.com";
pub const MUC: &str = "conference.falcot.com";
/// The STARTTLS namespace (RFC 6120 section 5.4.2.1).
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// The SASL namespace (RFC 6120 section 6.4.1).
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings for one xmppd, as raw TOML values by key; see [`Xmppd::builder`].
#[derive(Debug)]
pub struct XmppdBuilder {
    setup: Setup,
    port: u16,
    tls_port: u16,
    /// Certificates of the host files written, by domain.
    certs: BTreeMap<String, CertFiles>,
}

impl XmppdBuilder {
    crate::builder_methods!("xmppd");

    /// Another virtual host `domain` (with component `conference.<domain>`): its file
    /// and certificate written now, the file linked from vhosts-enabled if `enabled`.
    pub fn vhost(mut self, domain: &str, enabled: bool) -> Self {
        let files = write_vhost(self.dir(), domain);
        if enabled {
            enable_vhost(self.dir(), domain);
        }
        self.certs.insert(domain.to_string(), files);
        self
    }

    /// The main file's text.
    pub fn config_text(&self) -> String {
        self.setup.config_text()
    }

    /// Writes the main file as `daemon.toml` (where [`Daemon::start`] writes it too); its
    /// path. The host files are on disk already.
    fn write_main(&self) -> PathBuf {
        let main = self.dir().join("daemon.toml");
        std::fs::write(&main, self.config_text()).expect("writing the main file");
        main
    }

    /// Writes the main file and runs `xmppd --check-config` on the whole configuration
    /// as it is on disk (tests may break a host file first).
    pub fn check_config(&self) -> ToolOutput {
        let main = self.write_main();
        let main = main.to_string_lossy().into_owned();
        run_tool(
            &self.setup.binary.to_string_lossy(),
            &["--check-config", "--config", &main],
            CHECK_TIMEOUT,
        )
    }

    /// Starts the daemon and waits until its STARTTLS port accepts connections, which it
    /// does only once the core runs.
    pub fn start(self) -> Xmppd {
        let ready = Ready::TcpConnect(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)));
        let daemon = self.setup.start(&self.config_text(), ready);
        Xmppd {
            daemon,
            port: self.port,
            tls_port: self.tls_port,
            prometheus: self.setup.prometheus,
            certs: self.certs,
            dir: self.setup.dir,
        }
    }
}

/// Writes `vhosts-available/<domain>.toml` (certificate paths relative to it) and a
/// self-signed certificate for `domain` and `conference.<domain>` in `certs/`.
pub fn write_vhost(dir: &Path, domain: &str) -> CertFiles {
    let certs = dir.join("certs");
    let available = dir.join("vhosts-available");
    std::fs::create_dir_all(&certs).expect("certs directory");
    std::fs::create_dir_all(&available).expect("vhosts-available");
    std::fs::create_dir_all(dir.join("vhosts-enabled")).expect("vhosts-enabled");
    let muc = format!("conference.{domain}");
    // The loopback address too: go-sendxmpp checks the certificate against the host it
    // connects to.
    let files = self_signed_files(&certs, &[domain, &muc, "127.0.0.1"]);
    let text = format!(
        "domain = {}\ncertificate = {}\nkey = {}\n\n[[component]]\ndomain = {}\ntype = \"muc\"\n",
        toml_string(domain),
        toml_string(&format!("../certs/{domain}.crt")),
        toml_string(&format!("../certs/{domain}.key")),
        toml_string(&muc),
    );
    std::fs::write(available.join(format!("{domain}.toml")), text).expect("writing a vhost");
    files
}

/// Links `vhosts-available/<domain>.toml` into `vhosts-enabled/`, as an administrator
/// does (`ln -s ../vhosts-available/<domain>.toml vhosts-enabled/`).
pub fn enable_vhost(dir: &Path, domain: &str) {
    let name = format!("{domain}.toml");
    let link = dir.join("vhosts-enabled").join(&name);
    std::os::unix::fs::symlink(Path::new("../vhosts-available").join(&name), &link)
        .unwrap_or_else(|e| panic!("linking {}: {e}", link.display()));
}

/// A running xmppd. Dropping it kills the daemon and removes its directory.
#[derive(Debug)]
pub struct Xmppd {
    pub daemon: Daemon,
    /// STARTTLS port.
    pub port: u16,
    /// Direct-TLS port (XEP-0368).
    pub tls_port: u16,
    pub prometheus: Option<u16>,
    /// Certificates by host domain.
    pub certs: BTreeMap<String, CertFiles>,
    // Last: the directory outlives the daemon that writes into it.
    pub dir: TempDir,
}

impl Xmppd {
    /// Domain `falcot.com` (component `conference.falcot.com`) enabled, STARTTLS and
    /// direct TLS on 127.0.0.1 on free ports, SQLite in the test's directory.
    pub fn builder(binary: &Path) -> XmppdBuilder {
        let port = free_udp_tcp_port();
        let tls_port = free_udp_tcp_port();
        let b = XmppdBuilder {
            setup: Setup::new(binary, "xmppd-test-"),
            port,
            tls_port,
            certs: BTreeMap::new(),
        };
        b.vhost(DOMAIN, true)
            .set("interfaces", "[\"127.0.0.1\"]")
            .set("c2s-ports", &format!("[{port}]"))
            .set("c2s-direct-tls-ports", &format!("[{tls_port}]"))
            .set("db-url", &toml_string("xmppd.sqlite"))
            .set("log-level", &toml_string("info"))
    }

    crate::running_methods!();

    /// `kill -9` (nothing flushed, nothing cleaned up), then the same binary again on the
    /// same configuration, database and ports; returns once it is ready.
    pub fn kill_and_restart(&mut self) {
        self.daemon.kill_and_restart(Ready::TcpConnect(self.addr()));
    }

    /// The STARTTLS address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The direct-TLS address.
    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.tls_port))
    }

    /// The certificate (PEM) of host `domain`.
    pub fn cert_pem(&self, domain: &str) -> &str {
        &self.certs[domain].cert_pem
    }

    /// Adds host `domain` to vhosts-available (not enabled); its certificate PEM.
    pub fn add_vhost(&mut self, domain: &str) -> String {
        let files = write_vhost(self.dir.path(), domain);
        let pem = files.cert_pem.clone();
        self.certs.insert(domain.to_string(), files);
        pem
    }

    /// Links host `domain` into vhosts-enabled (takes effect at the next SIGHUP).
    pub fn enable_vhost(&self, domain: &str) {
        enable_vhost(self.dir.path(), domain);
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("xmppd.sqlite")
    }
}

/// The opening stream header a client sends (RFC 6120 section 4.7).
pub fn stream_header(to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xml:lang='en' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

/// A raw XMPP client connection: send text, read until something shows up.
#[derive(Debug)]
pub struct XmppStream<S> {
    io: S,
    /// Received and not yet returned by a read.
    pending: Vec<u8>,
}

/// A TLS client stream over TCP.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl XmppStream<TcpStream> {
    /// A plain TCP connection (a STARTTLS port).
    pub fn connect(addr: SocketAddr) -> Result<Self, String> {
        let tcp = tcp(addr)?;
        Ok(XmppStream {
            io: tcp,
            pending: Vec::new(),
        })
    }

    /// `<starttls/>`, `<proceed/>`, then the TLS handshake naming `server_name` (SNI),
    /// trusting only `trusted_pem` (RFC 6120 section 5.4). Call after [`Self::open`].
    pub fn starttls(
        mut self,
        server_name: &str,
        trusted_pem: &str,
    ) -> Result<XmppStream<TlsStream>, String> {
        self.send(&format!("<starttls xmlns='{NS_TLS}'/>"))?;
        let answer = self.read_until("proceed", IO_TIMEOUT)?;
        if !answer.contains("<proceed") {
            return Err(format!("no <proceed/>: {answer}"));
        }
        let tls = tls_client(self.io, server_name, trusted_pem, &[])?;
        Ok(XmppStream {
            io: tls,
            pending: Vec::new(),
        })
    }
}

impl XmppStream<TlsStream> {
    /// A direct-TLS connection (XEP-0368: ALPN `xmpp-client`) naming `server_name`.
    pub fn connect_tls(
        addr: SocketAddr,
        server_name: &str,
        trusted_pem: &str,
    ) -> Result<Self, String> {
        let tls = tls_client(tcp(addr)?, server_name, trusted_pem, &[b"xmpp-client"])?;
        Ok(XmppStream {
            io: tls,
            pending: Vec::new(),
        })
    }

    /// The certificate the server presented (DER).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.io
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
    }

    /// This connection's `tls-exporter` channel binding as the client computes it
    /// (RFC 9266: 32 bytes of the `EXPORTER-Channel-Binding` exporter).
    pub fn tls_exporter(&self) -> Vec<u8> {
        self.io
            .conn
            .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
            .expect("exporter after the handshake")
            .to_vec()
    }

    /// `tls-server-end-point` (RFC 5929 section 4.1) for the SHA-256-signed certificates
    /// the tests use: SHA-256 of the server's certificate.
    pub fn tls_server_end_point(&self) -> Vec<u8> {
        let cert = self.peer_certificate().expect("a server certificate");
        scram::hash(ScramHash::Sha256, &cert)
    }
}

impl<S: Read + Write> XmppStream<S> {
    pub fn send(&mut self, text: &str) -> Result<(), String> {
        self.io
            .write_all(text.as_bytes())
            .and_then(|()| self.io.flush())
            .map_err(|e| format!("send: {e}"))
    }

    /// Sends a stream header for `to` and reads up to the end of the stream features;
    /// everything received, or an error with what was received (a stream error, say).
    pub fn open(&mut self, to: &str) -> Result<String, String> {
        self.send(&stream_header(to))?;
        let got = self.read_until("</stream:features>", IO_TIMEOUT)?;
        if got.contains("<stream:error") {
            return Err(format!("stream error: {got}"));
        }
        Ok(got)
    }

    /// SASL SCRAM as a client (RFC 5802; `SCRAM-SHA-1`, `SCRAM-SHA-256`, or their `-PLUS`
    /// forms with `binding` = (channel-binding type, data) as RFC 5056 defines them).
    /// `Ok` with the server's `<success/>` (its signature checked), `Err` with the
    /// `<failure/>` or whatever else came.
    pub fn scram(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
        binding: Option<(&str, &[u8])>,
    ) -> Result<String, String> {
        use base64::engine::general_purpose::STANDARD as B64;
        use base64::Engine as _;
        let alg = if mechanism.starts_with("SCRAM-SHA-256") {
            ScramHash::Sha256
        } else {
            ScramHash::Sha1
        };
        let gs2 = match binding {
            Some((kind, _)) => format!("p={kind},,"),
            None => "n,,".to_string(),
        };
        let nonce = format!("{:032x}", rand::random::<u128>());
        let first_bare = format!("n={user},r={nonce}");
        self.send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{}</auth>",
            B64.encode(format!("{gs2}{first_bare}"))
        ))?;
        let server_first = sasl_payload(&self.read_until_any(
            &["</challenge>", "</failure>", "</stream:stream>"],
            IO_TIMEOUT,
        )?)?;
        let attr = |name: &str| {
            server_first
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| format!("no `{name}` in {server_first}"))
        };
        let (r, s, i) = (attr("r")?, attr("s")?, attr("i")?);
        if !r.starts_with(&nonce) {
            return Err(format!("server nonce does not extend ours: {server_first}"));
        }
        let salt = B64.decode(&s).map_err(|e| e.to_string())?;
        let iterations: u32 = i.parse().map_err(|_| format!("bad i in {server_first}"))?;
        let mut cbind = gs2.into_bytes();
        if let Some((_, data)) = binding {
            cbind.extend_from_slice(data);
        }
        let final_bare = format!("c={},r={r}", B64.encode(&cbind));
        let auth_message = format!("{first_bare},{server_first},{final_bare}");
        let salted = scram::salted_password(alg, password, &salt, iterations);
        let client_key = scram::client_key(alg, &salted);
        let proof = scram::client_proof(alg, &client_key, auth_message.as_bytes());
        self.send(&format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(format!("{final_bare},p={}", B64.encode(proof)))
        ))?;
        let answer = self.read_until_any(
            &["</success>", "</failure>", "</stream:stream>"],
            IO_TIMEOUT,
        )?;
        if !answer.contains("<success") {
            return Err(answer);
        }
        let server_final = sasl_payload(&answer)?;
        let expected = scram::server_signature(
            alg,
            &scram::server_key(alg, &salted),
            auth_message.as_bytes(),
        );
        if server_final != format!("v={}", B64.encode(expected)) {
            return Err(format!("wrong server signature: {server_final}"));
        }
        Ok(answer)
    }

    /// Reads until `needle` has arrived or the stream ends; what arrived, up to and
    /// including `needle` (the rest is kept for the next read). An error names what was
    /// received before the deadline or the end.
    pub fn read_until(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.read_until_any(&[needle], timeout)
    }

    /// As [`Self::read_until`], up to whichever of `needles` arrives first (a success
    /// or a failure element, say).
    pub fn read_until_any(
        &mut self,
        needles: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let first = needles
                .iter()
                .filter_map(|n| find(&self.pending, n.as_bytes()).map(|at| at + n.len()))
                .min();
            if let Some(end) = first {
                let rest = self.pending.split_off(end);
                let got = std::mem::replace(&mut self.pending, rest);
                return Ok(String::from_utf8_lossy(&got).into_owned());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "none of {needles:?} within {timeout:?}; received: {}",
                    String::from_utf8_lossy(&self.pending)
                ));
            }
            match self.io.read(&mut buf) {
                Ok(0) => {
                    return Err(format!(
                        "stream closed before any of {needles:?}; received: {}",
                        String::from_utf8_lossy(&self.pending)
                    ))
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    return Err(format!(
                        "read: {e}; received: {}",
                        String::from_utf8_lossy(&self.pending)
                    ))
                }
            }
        }
    }

    /// True if nothing arrives and the stream stays open for `wait`.
    pub fn is_quiet_and_open(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            match self.io.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return false,
            }
        }
        self.pending.is_empty()
    }
}

/// The base64 text content of a SASL element (`<challenge>...</challenge>`), decoded.
fn sasl_payload(element: &str) -> Result<String, String> {
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    let start = element
        .find("<challenge")
        .or_else(|| element.find("<success"));
    let Some(start) = start else {
        return Err(format!("SASL failed: {element}"));
    };
    let body = &element[start..];
    let text = body
        .split_once('>')
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(text, _)| text.trim())
        .unwrap_or("");
    let bytes = B64.decode(text).map_err(|e| format!("{e}: {element}"))?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// TCP with a short read timeout, so reads poll against the callers' deadlines.
fn tcp(addr: SocketAddr) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(tcp)
}

/// A completed TLS client handshake on `tcp`.
fn tls_client(
    mut tcp: TcpStream,
    server_name: &str,
    trusted_pem: &str,
    alpn: &[&[u8]],
) -> Result<TlsStream, String> {
    let mut config =
        (*rtc_tls::client_config_trusting(trusted_pem).map_err(|e| e.to_string())?).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + IO_TIMEOUT;
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && Instant::now() < deadline => {}
            Err(e) => return Err(format!("TLS handshake: {e}")),
        }
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}
