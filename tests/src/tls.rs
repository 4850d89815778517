//! TLS material for tests: self-signed certificates written to files, and a client that
//! reports which certificate a server presents.

use rustls::pki_types::ServerName;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A certificate and key written to disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
}

/// Generates a self-signed certificate for `names` (via `rtc_tls::self_signed`) and writes
/// it to `dir/<stem>.crt` and `dir/<stem>.key`, `stem` being the first name.
pub fn self_signed_files(dir: &Path, names: &[&str]) -> CertFiles {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let (cert_pem, key_pem) = rtc_tls::self_signed(&names).expect("self-signed certificate");
    let stem = names.first().map(String::as_str).unwrap_or("cert");
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, &cert_pem).expect("writing certificate");
    std::fs::write(&key, key_pem).expect("writing key");
    CertFiles {
        cert,
        key,
        cert_pem,
    }
}

/// Completes a TLS handshake with `addr` as `server_name`, trusting only `trusted_pem`,
/// and returns the DER of the certificate the server presented. `Err` if the handshake
/// fails (for example because the server presents a certificate we do not trust).
pub fn served_certificate(
    addr: SocketAddr,
    server_name: &str,
    trusted_pem: &str,
) -> Result<Vec<u8>, String> {
    let config = rtc_tls::client_config_trusting(trusted_pem).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::clone(&config), name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    // Flush whatever the handshake left to send (the client Finished under TLS 1.3).
    conn.writer().flush().map_err(|e| e.to_string())?;
    while conn.wants_write() {
        conn.write_tls(&mut sock).map_err(|e| e.to_string())?;
    }
    let chain = conn
        .peer_certificates()
        .ok_or("the server sent no certificate")?;
    Ok(chain.first().ok_or("empty certificate chain")?.to_vec())
}

/// A certificate/key pair a daemon must refuse, and which of the two is at fault.
#[derive(Debug, Clone)]
pub struct BrokenPair {
    /// What is wrong, for assertion messages.
    pub what: &'static str,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `true` when the key file is the one at fault, `false` for the certificate.
    pub key_at_fault: bool,
    /// The file the error must name.
    pub bad_file: PathBuf,
}

/// Writes a valid pair for `localhost` into `dir` and returns it with the ways
/// `--check-config` must catch a broken one: each file missing, each file garbage, and a
/// key that belongs to another certificate.
pub fn broken_cert_pairs(dir: &Path) -> (CertFiles, Vec<BrokenPair>) {
    let good = self_signed_files(dir, &["localhost"]);
    let other = self_signed_files(dir, &["other.localhost"]);
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").expect("writing garbage");
    let pair = |what, cert: &Path, key: &Path, key_at_fault, bad_file: &Path| BrokenPair {
        what,
        cert: cert.to_owned(),
        key: key.to_owned(),
        key_at_fault,
        bad_file: bad_file.to_owned(),
    };
    let broken = vec![
        pair("missing certificate", &missing, &good.key, false, &missing),
        pair("missing key", &good.cert, &missing, true, &missing),
        pair("garbage certificate", &garbage, &good.key, false, &garbage),
        pair("garbage key", &good.cert, &garbage, true, &garbage),
        pair(
            "key of another certificate",
            &good.cert,
            &other.key,
            true,
            &other.key,
        ),
    ];
    (good, broken)
}
