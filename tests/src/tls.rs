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
