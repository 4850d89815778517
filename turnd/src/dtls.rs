//! DTLS listener (TURN over DTLS, RFC 8656 §3.2 and RFC 7350), as coturn offers on its
//! TLS port over UDP.
//!
//! Each client address gets a `dimpl` state machine (sans-IO DTLS 1.2/1.3). Decrypted
//! records go to the protocol core like any UDP datagram, tagged [`Transport::Dtls`];
//! what the core sends back is encrypted here. The cookie exchange (HelloVerifyRequest,
//! RFC 6347 §4.2.1) is on, so a spoofed source gets no amplified answer. A session object
//! exists from the first ClientHello, so sessions that have not finished their handshake
//! have their own small cap, and the oldest of them makes room for a new one: spoofed
//! ClientHellos cannot lock real clients out.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tracing::debug;

/// Sessions one shard keeps at most; new handshakes beyond it are ignored.
const MAX_SESSIONS: usize = 20_000;
/// Sessions still in their handshake a shard keeps at most.
const MAX_HANDSHAKING: usize = 1024;
/// A session that has not finished its handshake by then is dropped.
const HANDSHAKE_IDLE: Duration = Duration::from_secs(30);
/// An established session with no traffic for longer than any allocation lifetime ends.
const IDLE: Duration = Duration::from_secs(3700);

/// The certificate and settings new DTLS sessions start with (replaced on SIGHUP).
#[derive(Clone)]
pub struct DtlsIdentity {
    config: Arc<dimpl::Config>,
    cert: dimpl::DtlsCertificate,
}

impl DtlsIdentity {
    /// From a leaf certificate and PKCS#8/SEC1 key (DER). `dimpl` signs with ECDSA
    /// P-256/P-384 only, so the caller checks the key type first (an RSA certificate
    /// cannot serve DTLS).
    pub fn new(cert_der: Vec<u8>, key_der: Vec<u8>) -> Result<DtlsIdentity, String> {
        let config = dimpl::Config::builder()
            .use_server_cookie(true)
            // TURN clients authenticate with STUN credentials, not certificates.
            .require_client_certificate(false)
            .build()
            .map_err(|e| e.to_string())?;
        let cert = dimpl::DtlsCertificate {
            certificate: cert_der,
            private_key: key_der,
        };
        Ok(DtlsIdentity {
            config: Arc::new(config),
            cert,
        })
    }
}

struct Session {
    dtls: dimpl::Dtls,
    connected: bool,
    next_timeout: Option<Instant>,
    last_seen: Instant,
}

/// What a datagram produced after decryption.
pub struct Decrypted {
    /// Application data records, in order.
    pub records: Vec<Vec<u8>>,
    /// The session ended (fatal error or close_notify): the core must drop its state.
    pub closed: bool,
}

/// All DTLS sessions of one shard, by (local, remote) address.
#[derive(Default)]
pub struct DtlsSessions {
    sessions: HashMap<Key, Session>,
    /// Sessions in creation order, for evicting the oldest unfinished handshake. Entries of
    /// sessions that finished or ended are skipped, and pruned when they pile up.
    created: VecDeque<Key>,
    /// Sessions whose handshake has not completed.
    handshaking: usize,
    buf: Vec<u8>,
}

type Key = (SocketAddr, SocketAddr);

impl DtlsSessions {
    /// Feeds one datagram from `remote` (received on `local`), sending handshake records
    /// through `sock`.
    pub fn input(
        &mut self,
        identity: Option<&DtlsIdentity>,
        sock: &UdpSocket,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Decrypted {
        let mut out = Decrypted {
            records: Vec::new(),
            closed: false,
        };
        let key = (local, remote);
        if !self.sessions.contains_key(&key) {
            let Some(id) = identity else { return out };
            if self.sessions.len() >= MAX_SESSIONS {
                debug!("{remote}: DTLS session limit reached");
                return out;
            }
            self.make_room_for_handshake();
            let dtls = dimpl::Dtls::new_auto(id.config.clone(), id.cert.clone(), now);
            self.created.push_back(key);
            self.handshaking += 1;
            self.sessions.insert(
                key,
                Session {
                    dtls,
                    connected: false,
                    next_timeout: None,
                    last_seen: now,
                },
            );
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return out;
        };
        s.last_seen = now;
        let was_connected = s.connected;
        let ended = match s.dtls.handle_packet(data) {
            Err(e) => {
                debug!("{remote}: DTLS: {e}");
                true
            }
            Ok(()) => Self::drain(s, &mut self.buf, sock, remote, &mut out.records),
        };
        if !was_connected && s.connected {
            self.handshaking -= 1;
        }
        if ended {
            self.remove(&key);
            out.closed = true;
        }
        out
    }

    /// Encrypts `data` for an established session and sends it. Returns false if there is
    /// no such session.
    pub fn send(
        &mut self,
        sock: &UdpSocket,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&(local, remote)) else {
            return false;
        };
        if !s.connected || s.dtls.send_application_data(data).is_err() {
            return false;
        }
        let mut ignored = Vec::new();
        Self::drain(s, &mut self.buf, sock, remote, &mut ignored);
        true
    }

    /// Retransmissions and idle expiry; returns the sessions that ended.
    pub fn tick(
        &mut self,
        now: Instant,
        socket_for: impl Fn(SocketAddr) -> Option<std::rc::Rc<UdpSocket>>,
    ) -> Vec<Key> {
        let mut ended = Vec::new();
        let mut finished = 0;
        for (&(local, remote), s) in self.sessions.iter_mut() {
            let idle = now.saturating_duration_since(s.last_seen);
            if idle > IDLE || (!s.connected && idle > HANDSHAKE_IDLE) {
                ended.push((local, remote));
                continue;
            }
            if s.next_timeout.is_some_and(|t| t <= now) {
                let Some(sock) = socket_for(local) else {
                    continue;
                };
                let was_connected = s.connected;
                let mut ignored = Vec::new();
                if s.dtls.handle_timeout(now).is_err()
                    || Self::drain(s, &mut self.buf, &sock, remote, &mut ignored)
                {
                    ended.push((local, remote));
                }
                if !was_connected && s.connected {
                    finished += 1;
                }
            }
        }
        self.handshaking -= finished;
        for k in &ended {
            self.remove(k);
        }
        ended
    }

    fn remove(&mut self, key: &Key) {
        if let Some(s) = self.sessions.remove(key) {
            if !s.connected {
                self.handshaking -= 1;
            }
        }
    }

    /// Evicts the oldest unfinished handshake when there are too many.
    fn make_room_for_handshake(&mut self) {
        if self.created.len() > 4 * MAX_HANDSHAKING {
            let sessions = &self.sessions;
            self.created
                .retain(|k| sessions.get(k).is_some_and(|s| !s.connected));
        }
        if self.handshaking < MAX_HANDSHAKING {
            return;
        }
        while let Some(k) = self.created.pop_front() {
            if self.sessions.get(&k).is_some_and(|s| !s.connected) {
                self.remove(&k);
                return;
            }
        }
    }

    /// Sends pending records and collects plaintext; true if the peer closed.
    fn drain(
        s: &mut Session,
        buf: &mut Vec<u8>,
        sock: &UdpSocket,
        remote: SocketAddr,
        records: &mut Vec<Vec<u8>>,
    ) -> bool {
        if buf.len() < 2048 {
            buf.resize(2048, 0);
        }
        loop {
            match s.dtls.poll_output(buf) {
                dimpl::Output::Packet(p) => {
                    let _ = sock.try_send_to(p, remote);
                }
                dimpl::Output::BufferTooSmall { needed } => buf.resize(needed, 0),
                dimpl::Output::Timeout(t) => {
                    s.next_timeout = Some(t);
                    return false;
                }
                dimpl::Output::Connected => s.connected = true,
                dimpl::Output::ApplicationData(d) => records.push(d.to_vec()),
                dimpl::Output::CloseNotify => return true,
                _ => {}
            }
        }
    }
}
