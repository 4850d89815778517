//! TLS for client connections: one certificate per virtual host, chosen by SNI, and the
//! channel-binding data SCRAM-*-PLUS needs.
//!
//! Each enabled host file names its certificate, which must cover the host and its
//! components (`falcot.com`, `conference.falcot.com`). [`CertTable`] maps every one of
//! those names to the host's [`HostTls`]: a rustls config built from an
//! `rtc_tls::CertStore` and the RFC 5929 `tls-server-end-point` hash of that very
//! certificate. A handshake reads the ClientHello first ([`LazyConfigAcceptor`]), picks
//! the host by SNI (the first host when there is no SNI or an unknown one), and finishes
//! with that host's config; so the shell knows exactly which certificate it presented,
//! which a `ResolvesServerCert` deep inside rustls would not tell it, and the end-point
//! hash it hands the core is always the one the client saw.
//!
//! SIGHUP builds a whole new table (new hosts, renewed certificates) and swaps it in
//! ([`Certs::replace`]); handshakes already under way finish with the table they started
//! with and established sessions are not touched.

use crate::config::Vhost;
use rustls::ServerConfig;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use xmpp_proto::server::{ConnKind, TlsInfo};

/// XEP-0368 section 3: direct TLS clients offer this ALPN protocol.
const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";
/// RFC 9266 section 2: the label of the `tls-exporter` channel binding, 32 bytes long.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
const EXPORTER_LEN: usize = 32;

/// One host's TLS identity.
pub struct HostTls {
    /// For STARTTLS: no ALPN (clients upgrading a stream send none, and an offered
    /// protocol we do not list would fail the handshake).
    starttls: Arc<ServerConfig>,
    /// For direct TLS: ALPN `xmpp-client`.
    direct: Arc<ServerConfig>,
    /// `tls-server-end-point` (RFC 5929 section 4.1); `None` for a signature algorithm
    /// the RFC gives no hash for (Ed25519, RSA-PSS), so -PLUS is not offered with it.
    end_point: Option<Vec<u8>>,
}

/// Why a host's TLS identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The host file's `certificate` or `key` (named by `key`) is unusable.
    #[error("{}: key `{key}`: {error}", file.display())]
    Host {
        file: std::path::PathBuf,
        key: &'static str,
        error: rtc_tls::TlsError,
    },
    #[error("no virtual host to serve TLS for")]
    NoHost,
}

/// Every served name -> its host's TLS identity.
pub struct CertTable {
    by_name: HashMap<String, Arc<HostTls>>,
    default: Arc<HostTls>,
}

impl CertTable {
    /// Loads every host's certificate and key. An error names the host file and key
    /// (`certificate` or `key`) and says what is wrong with the PEM file.
    pub fn build(vhosts: &[Vhost]) -> Result<CertTable, CertError> {
        let mut by_name = HashMap::new();
        let mut default = None;
        for v in vhosts {
            let pair = rtc_tls::ConfiguredPair {
                cert_setting: "certificate",
                cert: &v.certificate,
                key_setting: "key",
                key: &v.key,
            };
            let store = pair.load().map_err(|(key, error)| CertError::Host {
                file: v.file.clone(),
                key,
                error,
            })?;
            let end_point = end_point_hash(store.current().cert[0].as_ref());
            let host = Arc::new(HostTls {
                starttls: server_config(&store, &[]),
                direct: server_config(&store, &[ALPN_XMPP_CLIENT]),
                end_point,
            });
            for name in std::iter::once(&v.domain).chain(&v.components) {
                by_name.insert(name.clone(), host.clone());
            }
            default.get_or_insert(host);
        }
        let default = default.ok_or(CertError::NoHost)?;
        Ok(CertTable { by_name, default })
    }

    /// The host for a ClientHello's SNI.
    fn pick(&self, sni: Option<&str>) -> &Arc<HostTls> {
        sni.and_then(|name| self.by_name.get(name))
            .unwrap_or(&self.default)
    }
}

/// A rustls config for `store`'s certificate. Extended master secret is required
/// (RFC 7627): without it a TLS 1.2 `tls-exporter` value is not unique to the
/// connection (RFC 9266 section 3), and every TLS 1.2 client of the last decade has it.
fn server_config(store: &Arc<rtc_tls::CertStore>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config = (*store.server_config(alpn)).clone();
    config.require_ems = true;
    Arc::new(config)
}

/// The current table, replaced whole on reload.
pub struct Certs {
    current: RwLock<Arc<CertTable>>,
}

impl Certs {
    pub fn new(table: CertTable) -> Arc<Certs> {
        Arc::new(Certs {
            current: RwLock::new(Arc::new(table)),
        })
    }

    /// New handshakes use `table` from now on.
    pub fn replace(&self, table: CertTable) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }

    fn current(&self) -> Arc<CertTable> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Runs the server side of a TLS handshake on `io` (fresh for direct TLS, or the plain
/// stream right after `<proceed/>`) with the certificate of the host the client names,
/// and returns the stream with what the core needs to know about it.
pub async fn accept<IO>(
    certs: &Certs,
    io: IO,
    kind: ConnKind,
) -> std::io::Result<(TlsStream<IO>, TlsInfo)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
    let sni = start
        .client_hello()
        .server_name()
        .map(|s| s.to_ascii_lowercase());
    let host = certs.current().pick(sni.as_deref()).clone();
    let config = match kind {
        ConnKind::C2sDirectTls => host.direct.clone(),
        ConnKind::C2sStartTls => host.starttls.clone(),
    };
    let stream = start.into_stream(config).await?;
    let conn = stream.get_ref().1;
    let tls_exporter = conn
        .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
        .ok()
        .map(|k| k.to_vec());
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => String::new(),
    };
    let info = TlsInfo {
        tls_exporter,
        tls_server_end_point: host.end_point.clone(),
        sni,
        version,
    };
    Ok((stream, info))
}

/// RFC 5929 section 4.1: the certificate hashed with the hash of its signature
/// algorithm, SHA-256 when that is MD5 or SHA-1; `None` when the algorithm has no single
/// hash the RFC can name.
pub fn end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
    let oid = signature_algorithm_oid(cert_der)?;
    // 1.2.840.113549.1.1.{4 md5, 5 sha1, 11 sha256, 12 sha384, 13 sha512, 14 sha224}
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    // 1.2.840.10045.4.{1 sha1, 3.1 sha224, 3.2 sha256, 3.3 sha384, 3.4 sha512}
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let hash = if let Some(rest) = oid.strip_prefix(RSA) {
        match rest {
            [4 | 5 | 11] => Hash::Sha256,
            [12] => Hash::Sha384,
            [13] => Hash::Sha512,
            [14] => Hash::Sha224,
            _ => return None,
        }
    } else if let Some(rest) = oid.strip_prefix(ECDSA) {
        match rest {
            [1] | [3, 2] => Hash::Sha256,
            [3, 1] => Hash::Sha224,
            [3, 3] => Hash::Sha384,
            [3, 4] => Hash::Sha512,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(match hash {
        Hash::Sha224 => sha2::Sha224::digest(cert_der).to_vec(),
        Hash::Sha256 => sha2::Sha256::digest(cert_der).to_vec(),
        Hash::Sha384 => sha2::Sha384::digest(cert_der).to_vec(),
        Hash::Sha512 => sha2::Sha512::digest(cert_der).to_vec(),
    })
}

enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// `Certificate.signatureAlgorithm.algorithm` (RFC 5280 section 4.1.1.2), the OID's
/// content bytes. Only the outer structure is read: the certificate itself was already
/// checked by rustls when it was loaded.
fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, cert, _) = der_tlv(der)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = der_tlv(cert)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = der_tlv(rest)? else {
        return None;
    };
    let (OID, oid, _) = der_tlv(algorithm)? else {
        return None;
    };
    Some(oid)
}

/// One DER tag-length-value: (tag, content, what follows).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn end_point_of_an_ecdsa_sha256_certificate_is_its_sha256() {
        let (pem, _) = rtc_tls::self_signed(&["falcot.com".into()]).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(
            end_point_hash(der.as_ref()),
            Some(sha2::Sha256::digest(der.as_ref()).to_vec())
        );
    }

    #[test]
    fn unusual_or_broken_certificates_get_no_end_point() {
        assert_eq!(end_point_hash(b""), None);
        assert_eq!(end_point_hash(&[0x30, 0x82, 0xff]), None);
        // SEQUENCE { SEQUENCE {}, SEQUENCE { OID 1.3.101.112 (Ed25519) } }
        let ed25519 = [
            0x30, 0x09, 0x30, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
        ];
        assert_eq!(
            signature_algorithm_oid(&ed25519),
            Some(&[0x2b, 0x65, 0x70][..])
        );
        assert_eq!(end_point_hash(&ed25519), None);
        // The same with sha384WithRSAEncryption: hashed with SHA-384.
        let rsa384 = [
            0x30, 0x0f, 0x30, 0x00, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
            0x01, 0x01, 0x0c,
        ];
        assert_eq!(end_point_hash(&rsa384).map(|h| h.len()), Some(48));
    }
}
