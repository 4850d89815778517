//! DTLS listener (TURN over DTLS, RFC 8656 §3.2 and RFC 7350), as coturn offers on its
//! TLS port over UDP.
//!
//! Each client address gets a `dimpl` state machine (sans-IO DTLS 1.2/1.3). Decrypted
//! records go to the protocol core like any UDP datagram, tagged [`Transport::Dtls`];
//! what the core sends back is encrypted here. The cookie exchange (HelloVerifyRequest,
//! RFC 6347 §4.2.1) is on, so a spoofed source gets no amplified answer. A session object
//! exists from the first ClientHello, but a spoofed source never sends a second datagram
//! (it never sees the HelloVerifyRequest): sessions with one datagram have their own small
//! cap, and the oldest of them makes room for a new one, so spoofed ClientHellos cannot
//! fill the table. A session that never carries a STUN message is dropped after 30 s.
//!
//! A ClientHello for DTLS 1.0 gets a fatal `protocol_version` alert instead of silence
//! (see [`version_refusal`]), so a client that tries 1.0 (coturn's `turnutils_uclient -S`
//! draws 1.0 or 1.2 for each connection) fails at once and retries, rather than
//! retransmitting into the void until it times out.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tracing::debug;

/// Sessions one shard keeps at most; new handshakes beyond it are ignored.
const MAX_SESSIONS: usize = 20_000;
/// Sessions that have sent a single datagram (unverified sources) a shard keeps at most.
const MAX_FRESH: usize = 1024;
/// A session that has carried no STUN message by then is dropped.
const HANDSHAKE_IDLE: Duration = Duration::from_secs(30);
/// An established session with no traffic for longer than any allocation lifetime ends.
const IDLE: Duration = Duration::from_secs(3700);

/// DTLS record content type `alert` and handshake content type (RFC 6347 §4.1, RFC 5246
/// §6.2.1).
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake type `client_hello` (RFC 5246 §7.4).
const CLIENT_HELLO: u8 = 1;
/// DTLS 1.2 on the wire, {254, 253} (RFC 6347 §4.1): versions count down, so a larger
/// value is an older protocol. DTLS 1.3 keeps this value in `legacy_version` (RFC 9147
/// §5.3).
const DTLS_1_2: u16 = 0xfefd;
/// `AlertLevel.fatal` and `AlertDescription.protocol_version` (RFC 5246 §7.2, §7.2.2).
const ALERT_FATAL: u8 = 2;
const ALERT_PROTOCOL_VERSION: u8 = 70;
/// DTLS record header: type, version, epoch, 48-bit sequence number, length (RFC 6347
/// §4.1).
const RECORD_HEADER: usize = 13;
/// DTLS handshake header: type, length, message_seq, fragment_offset, fragment_length
/// (RFC 6347 §4.2.2).
const HANDSHAKE_HEADER: usize = 12;

/// The fatal `protocol_version` alert (RFC 5246 §7.2.2) answering a datagram that opens
/// with an epoch-0 ClientHello whose `client_version` is older than DTLS 1.2, or `None`
/// for any other datagram.
///
/// Like OpenSSL, the alert's record carries the version the client asked for, the one
/// record version a client fixed to that version surely accepts. The
/// record sequence number is the ClientHello's, as RFC 6347 §4.2.1 has a stateless
/// HelloVerifyRequest do. Answering keeps no state, and the 15-byte alert is smaller than
/// any ClientHello it answers, so a spoofed source gets no amplification.
fn version_refusal(data: &[u8]) -> Option<[u8; RECORD_HEADER + 2]> {
    let record = data.get(..RECORD_HEADER)?;
    let epoch = u16::from_be_bytes([record[3], record[4]]);
    let len = usize::from(u16::from_be_bytes([record[11], record[12]]));
    if record[0] != CONTENT_HANDSHAKE || epoch != 0 || len < HANDSHAKE_HEADER + 2 {
        return None;
    }
    let body = data.get(RECORD_HEADER..RECORD_HEADER + len)?;
    let fragment_offset = &body[6..9];
    if body[0] != CLIENT_HELLO || fragment_offset != [0, 0, 0] {
        return None;
    }
    let client_version = u16::from_be_bytes([body[12], body[13]]);
    // Only {254, 255}, DTLS 1.0, and {254, 254} (never assigned) are DTLS older than 1.2;
    // DTLS 1.2, 1.3 and anything unrecognisable stay dimpl's to judge.
    if client_version >> 8 != 0xfe || client_version <= DTLS_1_2 {
        return None;
    }
    let mut alert = [0u8; RECORD_HEADER + 2];
    alert[0] = CONTENT_ALERT;
    alert[1..3].copy_from_slice(&client_version.to_be_bytes());
    // Epoch 0 and the ClientHello's sequence number.
    alert[3..11].copy_from_slice(&record[3..11]);
    alert[11..13].copy_from_slice(&2u16.to_be_bytes());
    alert[13] = ALERT_FATAL;
    alert[14] = ALERT_PROTOCOL_VERSION;
    Some(alert)
}

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
    pub fn new(cert_der: Vec<u8>, key_der: Vec<u8>) -> Result<DtlsIdentity, dimpl::Error> {
        let config = dimpl::Config::builder()
            .use_server_cookie(true)
            // TURN clients authenticate with STUN credentials, not certificates.
            .require_client_certificate(false)
            .build()?;
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
    /// When it was made: tells a queued entry from a later session of the same address.
    created: Instant,
    /// Datagrams received; a second one proves the source is real.
    datagrams: u32,
    /// An application record (a STUN message) arrived.
    carried_data: bool,
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
    /// Sessions with a single datagram, oldest first, with their creation time. Entries
    /// of sessions that moved on or ended are skipped, and pruned when they pile up.
    fresh: VecDeque<(Key, Instant)>,
    /// Sessions that have received a single datagram.
    fresh_count: usize,
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
            if let Some(alert) = version_refusal(data) {
                // The same ": DTLS: " shape as dimpl's refusals below.
                debug!(
                    "{remote}: DTLS: ClientHello older than DTLS 1.2, protocol_version alert sent"
                );
                let _ = sock.try_send_to(&alert, remote);
                return out;
            }
            if self.sessions.len() >= MAX_SESSIONS {
                debug!("{remote}: DTLS session limit reached");
                return out;
            }
            self.make_room_for_fresh();
            let dtls = dimpl::Dtls::new_auto(id.config.clone(), id.cert.clone(), now);
            self.fresh.push_back((key, now));
            self.fresh_count += 1;
            self.sessions.insert(
                key,
                Session {
                    dtls,
                    connected: false,
                    next_timeout: None,
                    last_seen: now,
                    created: now,
                    datagrams: 0,
                    carried_data: false,
                },
            );
        }
        let Some(s) = self.sessions.get_mut(&key) else {
            return out;
        };
        s.last_seen = now;
        s.datagrams = s.datagrams.saturating_add(1);
        if s.datagrams == 2 {
            self.fresh_count -= 1;
        }
        let ended = match s.dtls.handle_packet(data) {
            Err(e) => {
                debug!("{remote}: DTLS: {e}");
                true
            }
            Ok(()) => Self::drain(s, &mut self.buf, sock, remote, &mut out.records),
        };
        s.carried_data |= !out.records.is_empty();
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
        for (&(local, remote), s) in self.sessions.iter_mut() {
            let idle = now.saturating_duration_since(s.last_seen);
            if idle > IDLE || (!s.carried_data && idle > HANDSHAKE_IDLE) {
                ended.push((local, remote));
                continue;
            }
            if s.next_timeout.is_some_and(|t| t <= now) {
                let Some(sock) = socket_for(local) else {
                    continue;
                };
                let mut ignored = Vec::new();
                if s.dtls.handle_timeout(now).is_err()
                    || Self::drain(s, &mut self.buf, &sock, remote, &mut ignored)
                {
                    ended.push((local, remote));
                }
            }
        }
        for k in &ended {
            self.remove(k);
        }
        ended
    }

    fn remove(&mut self, key: &Key) {
        if let Some(s) = self.sessions.remove(key) {
            if s.datagrams <= 1 {
                self.fresh_count -= 1;
            }
        }
    }

    /// Whether a queued entry still names a session with a single datagram.
    fn still_fresh(&self, (key, created): &(Key, Instant)) -> bool {
        self.sessions
            .get(key)
            .is_some_and(|s| s.created == *created && s.datagrams <= 1)
    }

    /// Evicts the oldest single-datagram session when there are too many.
    fn make_room_for_fresh(&mut self) {
        if self.fresh.len() > 4 * MAX_FRESH {
            let kept: VecDeque<_> = self
                .fresh
                .iter()
                .filter(|e| self.still_fresh(e))
                .copied()
                .collect();
            self.fresh = kept;
        }
        if self.fresh_count < MAX_FRESH {
            return;
        }
        while let Some(entry) = self.fresh.pop_front() {
            if self.still_fresh(&entry) {
                self.remove(&entry.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    fn identity() -> DtlsIdentity {
        let (cert, key) = rtc_tls::self_signed(&["localhost".to_string()]).unwrap();
        let cert = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        DtlsIdentity::new(cert.to_vec(), key.secret_der().to_vec()).unwrap()
    }

    /// A ClientHello record as RFC 6347 §4.2.2 lays it out, with `version` as both record
    /// and client version and record sequence number 5; a DTLS 1.0 cipher suite
    /// (TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA) and no extensions.
    fn client_hello(version: u16) -> Vec<u8> {
        let mut body = version.to_be_bytes().to_vec();
        body.extend_from_slice(&[7; 32]); // random
        body.extend_from_slice(&[0, 0]); // empty session_id and cookie
        body.extend_from_slice(&[0, 2, 0xc0, 0x0a]);
        body.extend_from_slice(&[1, 0]); // null compression
        let body_len = &(body.len() as u32).to_be_bytes()[1..];
        let mut handshake = vec![1]; // client_hello
        handshake.extend_from_slice(body_len);
        handshake.extend_from_slice(&[0, 0, 0, 0, 0]); // message_seq, fragment_offset
        handshake.extend_from_slice(body_len); // fragment_length: unfragmented
        handshake.extend_from_slice(&body);
        let mut record = vec![22]; // handshake
        record.extend_from_slice(&version.to_be_bytes());
        record.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5]); // epoch 0, sequence 5
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    async fn answer(client: &UdpSocket) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        let got = tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf)).await;
        got.ok().map(|n| buf[..n.unwrap()].to_vec())
    }

    /// A DTLS 1.0 ClientHello is answered with a fatal protocol_version alert (RFC 5246
    /// §7.2.2) in a DTLS 1.0 record that echoes its sequence number, and leaves no session
    /// behind; a DTLS 1.2 ClientHello still goes to dimpl.
    #[tokio::test]
    async fn dtls_1_0_client_hello_gets_a_protocol_version_alert_and_no_state() {
        let id = identity();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        // `try_send_to` needs the runtime to have seen the socket writable, as the
        // daemon's sockets have by the time they receive.
        sock.writable().await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(local).await.unwrap();
        let remote = client.local_addr().unwrap();
        let mut s = DtlsSessions::default();
        let now = Instant::now();

        let hello = client_hello(0xfeff);
        let out = s.input(Some(&id), &sock, local, remote, &hello, now);
        let alert = answer(&client).await.expect("an alert");
        assert_eq!(
            alert,
            [21, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 5, 0, 2, 2, 70],
            "alert(fatal, protocol_version) in a DTLS 1.0 record"
        );
        assert!(alert.len() < hello.len());
        // Nothing for the core: no session was made, so none ended.
        assert!(out.records.is_empty() && !out.closed);
        assert!(s.sessions.is_empty() && s.fresh.is_empty() && s.fresh_count == 0);

        // Cut short, or a later fragment: not a ClientHello to judge, no answer.
        s.input(Some(&id), &sock, local, remote, &hello[..20], now);
        let mut later_fragment = hello.clone();
        later_fragment[RECORD_HEADER + 8] = 1;
        s.input(Some(&id), &sock, local, remote, &later_fragment, now);
        s = DtlsSessions::default();
        // DTLS turned off (no identity): silence, as for every other datagram.
        s.input(None, &sock, local, remote, &hello, now);
        assert_eq!(answer(&client).await, None);

        // DTLS 1.2 is dimpl's: a session, and a HelloVerifyRequest rather than an alert.
        s.input(Some(&id), &sock, local, remote, &client_hello(0xfefd), now);
        assert_eq!(s.sessions.len(), 1);
        if let Some(reply) = answer(&client).await {
            assert_eq!(reply[0], 22, "a handshake record: {reply:?}");
        }
    }

    /// A flood of first datagrams from distinct (spoofed) sources stays within the cap,
    /// and a source that sent a second datagram is not the one evicted.
    #[tokio::test]
    async fn single_datagram_sources_are_capped_and_evicted_oldest_first() {
        let id = identity();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let mut s = DtlsSessions::default();
        let now = Instant::now();
        let real: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        // Not a valid ClientHello: dimpl discards it as noise, the session stays.
        let junk = [22u8, 0xfe, 0xfd, 0, 0];
        s.input(Some(&id), &sock, local, real, &junk, now);
        s.input(Some(&id), &sock, local, real, &junk, now);
        for i in 0..MAX_FRESH as u16 + 50 {
            let spoofed = SocketAddr::new("198.51.100.7".parse().unwrap(), 2000 + i);
            s.input(Some(&id), &sock, local, spoofed, &junk, now);
        }
        assert_eq!(s.fresh_count, MAX_FRESH);
        assert_eq!(s.sessions.len(), MAX_FRESH + 1);
        assert!(s.sessions.contains_key(&(local, real)));
        assert!(s.fresh.len() <= 4 * MAX_FRESH + 1);
        // Nothing carried data: all end after the handshake idle time.
        let ended = s.tick(now + HANDSHAKE_IDLE + Duration::from_secs(1), |_| None);
        assert_eq!(ended.len(), MAX_FRESH + 1);
        assert_eq!(s.fresh_count, 0);
    }
}
