//! TLS plumbing shared by the daemons: certificate loading, hot reload and rustls configs.
//!
//! Data flow: [`CertStore::load`] reads a PEM chain and a PEM private key from disk, checks
//! that they belong together and keeps the result as the *current* [`CertifiedKey`]. The
//! [`rustls::ServerConfig`] built by [`CertStore::server_config`] does not own a certificate;
//! it asks the store on every handshake (through a [`ResolvesServerCert`] impl). So when a
//! daemon calls [`CertStore::reload`] (on SIGHUP, or after certbot renews), new handshakes use
//! the new certificate with no config rebuild and no restart, and established sessions are
//! untouched. A reload that fails (half-written file, wrong key) keeps the old certificate and
//! returns an error naming the file, so an operator mistake never takes the service down.
//! [`ConfiguredPair`] is the same loading for the daemons' configuration checks
//! (`--check-config`, start-up): its error also names the setting that points at the bad
//! file, so every daemon reports a certificate problem as file, key and problem.
//!
//! Every config uses the ring provider explicitly (no process-wide default needs installing)
//! with rustls's safe default protocol versions, which are TLS 1.2 and TLS 1.3.
//!
//! [`self_signed`] and [`client_config_trusting`] exist for local instances, tests and the
//! admin tool's checks, where no public CA is involved.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why certificates or keys could not be used. Every file-related variant names the file, as
/// the message is what an operator sees in the log after a failed start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read at all.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The certificate file has no `CERTIFICATE` PEM section.
    #[error("{}: no PEM certificates found", path.display())]
    NoCertificates {
        /// File that failed.
        path: PathBuf,
    },
    /// The certificate file is not valid PEM or a certificate is unusable.
    #[error("{}: bad certificate: {reason}", path.display())]
    BadCertificate {
        /// File that failed.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file has no PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key section.
    #[error("{}: no PEM private key found (expected PKCS#8, RSA or EC)", path.display())]
    NoPrivateKey {
        /// File that failed.
        path: PathBuf,
    },
    /// The key is malformed, of an unsupported type, or does not match the certificate.
    #[error("{}: bad private key: {reason}", path.display())]
    BadKey {
        /// File that failed.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Generating a self-signed certificate failed.
    #[error("cannot generate self-signed certificate: {0}")]
    Generate(String),
    /// Building a client configuration from in-memory PEM failed.
    #[error("cannot use trusted certificate: {0}")]
    Trust(String),
}

impl TlsError {
    /// The file this error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::Io { path, .. }
            | TlsError::NoCertificates { path }
            | TlsError::BadCertificate { path, .. }
            | TlsError::NoPrivateKey { path }
            | TlsError::BadKey { path, .. } => Some(path),
            TlsError::Generate(_) | TlsError::Trust(_) => None,
        }
    }
}

/// A certificate and its key as a configuration file names them: each setting's name
/// (`cert`, `tls-private-key`...) with the path it holds. Errors about the pair then name
/// the setting as well as the file, like every other configuration error.
#[derive(Debug, Clone, Copy)]
pub struct ConfiguredPair<'a> {
    /// Name of the setting holding the certificate chain's path.
    pub cert_setting: &'static str,
    /// The certificate chain (PEM, leaf first).
    pub cert: &'a Path,
    /// Name of the setting holding the private key's path.
    pub key_setting: &'static str,
    /// The private key (PEM).
    pub key: &'a Path,
}

impl ConfiguredPair<'_> {
    /// Loads the pair exactly as start-up and reload do ([`CertStore::load`]), so that
    /// `--check-config` fails on what would make the daemon fail: a file that is missing or
    /// unreadable, is not PEM, holds no certificate or key, or a key that does not belong
    /// to the certificate. The error carries the setting at fault.
    pub fn load(&self) -> Result<Arc<CertStore>, (&'static str, TlsError)> {
        CertStore::load(self.cert, self.key).map_err(|e| (self.setting_at_fault(&e), e))
    }

    /// The setting `error` is about: the key's when it names the key file (a mismatch is
    /// reported against the key, as the key is what gets regenerated by mistake), else the
    /// certificate's.
    pub fn setting_at_fault(&self, error: &TlsError) -> &'static str {
        if error.path() == Some(self.key) {
            self.key_setting
        } else {
            self.cert_setting
        }
    }
}

/// The certificate and key a server presents, reloadable in place.
///
/// Shared as `Arc<CertStore>` between the daemon's reload trigger and every
/// [`rustls::ServerConfig`] built from it.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    // A plain RwLock suffices: handshakes only clone the Arc under a short read lock.
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material stays out of logs; the paths are what matters when debugging.
        f.debug_struct("CertStore")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl CertStore {
    /// Reads `cert_path` (PEM chain, leaf first) and `key_path` (PEM PKCS#8, PKCS#1 RSA or
    /// SEC1 EC key) and checks that the key belongs to the leaf certificate.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>, TlsError> {
        let provider = provider();
        let key = read_certified_key(cert_path, key_path, &provider)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Re-reads both files. On success new handshakes use the new certificate; on error the
    /// previous certificate stays in service and the error names the offending file.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = read_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// The leaf certificate and the private key as DER, read from the files again: for
    /// protocol stacks that are not rustls (DTLS). Errors name the file, as for `load`.
    pub fn leaf_and_key_der(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let key = read_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        let leaf = key.cert[0].as_ref().to_vec();
        let key_der = PrivateKeyDer::from_pem_slice(&read_file(&self.key_path)?)
            .map_err(|e| TlsError::BadKey {
                path: self.key_path.clone(),
                reason: e.to_string(),
            })?
            .secret_der()
            .to_vec();
        Ok((leaf, key_der))
    }

    /// The certificate and key new handshakes will use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // Poisoning cannot leave a torn value (writers only swap an Arc), so ignore it.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A server config (TLS 1.2/1.3, ring, no client auth) whose certificate follows this
    /// store across reloads. `alpn` lists the protocols offered, most preferred first.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports rustls's default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(StoreResolver(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Hands the store's current certificate to every handshake, whatever the SNI: each daemon
/// serves one identity, so there is nothing to choose between.
#[derive(Debug)]
struct StoreResolver(Arc<CertStore>);

impl ResolvesServerCert for StoreResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn parse_certs(pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, pem::Error> {
    CertificateDer::pem_slice_iter(pem_bytes).collect()
}

fn read_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = parse_certs(&read_file(cert_path)?).map_err(|e| TlsError::BadCertificate {
        path: cert_path.to_owned(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: cert_path.to_owned(),
        });
    }
    let key = match PrivateKeyDer::from_pem_slice(&read_file(key_path)?) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey {
                path: key_path.to_owned(),
            })
        }
        Err(e) => {
            return Err(TlsError::BadKey {
                path: key_path.to_owned(),
                reason: e.to_string(),
            })
        }
    };
    // from_der also rejects a key that does not match the leaf, the classic renewal mistake.
    CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsError::BadKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })
}

/// Generates a self-signed certificate (ECDSA P-256) for `names` (DNS names or IP
/// addresses), returned as `(certificate PEM, PKCS#8 key PEM)`.
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((ck.cert.pem(), ck.key_pair.serialize_pem()))
}

/// A client config (TLS 1.2/1.3, ring) that trusts exactly the certificates in `cert_pem`
/// and nothing else, so a test or health check cannot pass by accident through a public CA.
pub fn client_config_trusting(cert_pem: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let certs = parse_certs(cert_pem.as_bytes()).map_err(|e| TlsError::Trust(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Trust("no PEM certificates found".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| TlsError::Trust(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports rustls's default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, ServerConnection};

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    fn write_pair(cert_pem: &str, key_pem: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        Files {
            _dir: dir,
            cert,
            key,
        }
    }

    fn localhost() -> (String, String) {
        self_signed(&["localhost".to_owned()]).unwrap()
    }

    /// Runs a full in-memory handshake and returns the leaf certificate the client saw and
    /// the negotiated ALPN protocol.
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        client_pem: &str,
        alpn: &[u8],
    ) -> Result<(CertificateDer<'static>, Option<Vec<u8>>), rustls::Error> {
        let mut client_cfg = (*client_config_trusting(client_pem).unwrap()).clone();
        client_cfg.alpn_protocols = vec![alpn.to_vec()];
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(Arc::new(client_cfg), name).unwrap();
        let mut server = ServerConnection::new(server).unwrap();
        let mut buf = Vec::new();
        // Each round moves every pending byte both ways; a handshake needs only a few.
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            buf.clear();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).unwrap();
                server.process_new_packets()?;
            }
            buf.clear();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets()?;
            }
        }
        assert!(!client.is_handshaking(), "handshake did not finish");
        let leaf = client.peer_certificates().unwrap()[0].clone().into_owned();
        Ok((leaf, client.alpn_protocol().map(<[u8]>::to_vec)))
    }

    fn der_of(pem: &str) -> CertificateDer<'static> {
        parse_certs(pem.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn handshake_then_reload_then_broken_reload() {
        let (cert1, key1) = localhost();
        let files = write_pair(&cert1, &key1);
        let store = CertStore::load(&files.cert, &files.key).unwrap();
        let server = store.server_config(&[b"stun.turn", b"h2"]);

        let (leaf, alpn) = handshake(server.clone(), &cert1, b"stun.turn").unwrap();
        assert_eq!(leaf, der_of(&cert1));
        assert_eq!(alpn.as_deref(), Some(&b"stun.turn"[..]));

        // A renewed certificate is served by the *same* config after reload.
        let (cert2, key2) = localhost();
        std::fs::write(&files.cert, &cert2).unwrap();
        std::fs::write(&files.key, &key2).unwrap();
        store.reload().unwrap();
        let (leaf, _) = handshake(server.clone(), &cert2, b"stun.turn").unwrap();
        assert_eq!(leaf, der_of(&cert2));
        // A client trusting only the old certificate now fails.
        assert!(handshake(server.clone(), &cert1, b"stun.turn").is_err());

        // A broken key file: reload fails naming it, and the second cert stays in service.
        std::fs::write(&files.key, "not a key").unwrap();
        let err = store.reload().unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
        assert!(err.to_string().contains("key.pem"), "{err}");
        let (leaf, _) = handshake(server, &cert2, b"stun.turn").unwrap();
        assert_eq!(leaf, der_of(&cert2));
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let (cert1, _) = localhost();
        let (_, key2) = localhost();
        let files = write_pair(&cert1, &key2);
        let err = CertStore::load(&files.cert, &files.key).unwrap_err();
        assert!(matches!(err, TlsError::BadKey { .. }), "{err:?}");
        assert!(err.to_string().contains("key.pem"), "{err}");
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let (cert, key) = localhost();
        let files = write_pair(&cert, &key);
        let missing = files.cert.with_file_name("absent.pem");
        let err = CertStore::load(&missing, &files.key).unwrap_err();
        assert!(matches!(err, TlsError::Io { .. }));
        assert!(err.to_string().contains("absent.pem"), "{err}");

        std::fs::write(&files.cert, "nothing here\n").unwrap();
        let err = CertStore::load(&files.cert, &files.key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificates { .. }), "{err:?}");
        assert!(err.to_string().contains("cert.pem"), "{err}");
    }

    #[test]
    fn truncated_certificate_is_bad_certificate() {
        let (cert, key) = localhost();
        let cut = &cert[..cert.len() / 2];
        let files = write_pair(cut, &key);
        let err = CertStore::load(&files.cert, &files.key).unwrap_err();
        assert!(matches!(err, TlsError::BadCertificate { .. }), "{err:?}");
    }

    #[test]
    fn configured_pair_errors_name_the_setting_at_fault() {
        let (cert, key) = localhost();
        let (_, other_key) = localhost();
        let files = write_pair(&cert, &key);
        let missing = files.cert.with_file_name("absent.pem");
        let garbage = files.cert.with_file_name("garbage.pem");
        std::fs::write(&garbage, "not PEM at all\n").unwrap();
        let mismatched = files.cert.with_file_name("other.key");
        std::fs::write(&mismatched, other_key).unwrap();
        fn pair<'a>(cert: &'a Path, key: &'a Path) -> ConfiguredPair<'a> {
            ConfiguredPair {
                cert_setting: "cert",
                cert,
                key_setting: "pkey",
                key,
            }
        }
        let cases: [(&Path, &Path, &str, &str); 5] = [
            (&missing, &files.key, "cert", "absent.pem"),
            (&files.cert, &missing, "pkey", "absent.pem"),
            (&garbage, &files.key, "cert", "garbage.pem"),
            (&files.cert, &garbage, "pkey", "garbage.pem"),
            (&files.cert, &mismatched, "pkey", "other.key"),
        ];
        for (c, k, setting, file) in cases {
            let (at, err) = pair(c, k).load().unwrap_err();
            assert_eq!(at, setting, "{err}");
            assert!(err.to_string().contains(file), "{err}");
        }
        assert!(pair(&files.cert, &files.key).load().is_ok());
    }

    #[test]
    fn client_config_rejects_non_pem() {
        assert!(matches!(
            client_config_trusting("hello"),
            Err(TlsError::Trust(_))
        ));
    }

    #[test]
    fn debug_does_not_leak_key() {
        let (cert, key) = localhost();
        let files = write_pair(&cert, &key);
        let store = CertStore::load(&files.cert, &files.key).unwrap();
        let shown = format!("{store:?}");
        assert!(shown.contains("cert.pem"));
        assert!(!shown.contains("PRIVATE"));
    }
}
