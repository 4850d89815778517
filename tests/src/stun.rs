//! A tiny blocking STUN/TURN client (UDP or TCP) for the cases real clients never produce:
//! wrong passwords, forbidden peers, stale nonces, unknown attributes, raw garbage.
//!
//! It speaks the long-term credential mechanism (RFC 8489 §9.2) with MESSAGE-INTEGRITY
//! (SHA-1, the one every server accepts) and keeps the realm, nonce and key of the last
//! challenge, so after [`StunClient::allocate`] the same client can send authenticated
//! Refresh and CreatePermission requests on the same 5-tuple.

use rand::RngCore;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use stun_proto::attr;
use stun_proto::message::method;
use stun_proto::{Class, IntegrityKind, Message, MessageBuilder};

/// REQUESTED-TRANSPORT value for UDP (RFC 8656 §18.7: protocol number 17 in the first byte).
const TRANSPORT_UDP: u32 = 17 << 24;
/// Retransmission interval over UDP; short, because the server is on loopback.
const UDP_RETRANSMIT: Duration = Duration::from_millis(250);

/// An error response, or no response at all (`code` 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunError {
    pub code: u16,
    pub reason: String,
    /// UNKNOWN-ATTRIBUTES of a 420 response (RFC 8489 §14.9).
    pub unknown: Vec<u16>,
}

impl StunError {
    fn local(reason: impl Into<String>) -> StunError {
        StunError {
            code: 0,
            reason: reason.into(),
            unknown: Vec::new(),
        }
    }
}

impl std::fmt::Display for StunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

/// A parsed response: class and attributes, owned.
#[derive(Debug, Clone)]
pub struct Response {
    pub bytes: Vec<u8>,
}

impl Response {
    pub fn message(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("responses are parsed before being returned")
    }

    fn into_result(self) -> Result<Response, StunError> {
        let m = self.message();
        if m.class() != Class::Error {
            return Ok(self);
        }
        let (code, reason) = match m.get(attr::ERROR_CODE) {
            Some(v) if v.len() >= 4 => (
                u16::from(v[2] & 0x7) * 100 + u16::from(v[3]),
                String::from_utf8_lossy(&v[4..]).into_owned(),
            ),
            _ => (0, "error response without ERROR-CODE".into()),
        };
        let unknown = m
            .get(attr::UNKNOWN_ATTRIBUTES)
            .map(|v| {
                v.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default();
        Err(StunError {
            code,
            reason,
            unknown,
        })
    }
}

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
}

/// Realm, nonce and key from the last 401/438 challenge.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub user: String,
    pub realm: String,
    pub nonce: Vec<u8>,
    pub key: Vec<u8>,
}

pub struct StunClient {
    conn: Conn,
    timeout: Duration,
    pub creds: Option<Credentials>,
    /// Where the last datagram came from (RFC 5780 tests check the source).
    last_from: Option<SocketAddr>,
}

impl std::fmt::Debug for StunClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StunClient")
            .field("local", &self.local_addr())
            .finish_non_exhaustive()
    }
}

/// A fresh random transaction ID (RFC 8489 §5).
pub fn transaction_id() -> [u8; 12] {
    let mut tid = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut tid);
    tid
}

impl StunClient {
    /// A client on its own UDP socket on 127.0.0.1.
    pub fn udp(server: SocketAddr) -> std::io::Result<StunClient> {
        let bind: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse().expect("addr")
        } else {
            "[::1]:0".parse().expect("addr")
        };
        let s = UdpSocket::bind(bind)?;
        Ok(StunClient {
            conn: Conn::Udp(s, server),
            timeout: Duration::from_secs(3),
            creds: None,
            last_from: None,
        })
    }

    /// A client on a new TCP connection.
    pub fn tcp(server: SocketAddr) -> std::io::Result<StunClient> {
        let s = TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
        s.set_nodelay(true)?;
        Ok(StunClient {
            conn: Conn::Tcp(s),
            timeout: Duration::from_secs(3),
            creds: None,
            last_from: None,
        })
    }

    /// How long a request waits for its response.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.conn {
            Conn::Udp(s, _) => s.local_addr().ok(),
            Conn::Tcp(s) => s.local_addr().ok(),
        }
    }

    /// Sends bytes as they are: a datagram, or a write on the stream.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.conn {
            Conn::Udp(s, to) => s.send_to(bytes, *to).map(|_| ()),
            Conn::Tcp(s) => s.write_all(bytes),
        }
    }

    /// Reads one datagram or one STUN frame from the stream, until `deadline`.
    fn recv(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        let left = deadline.checked_duration_since(Instant::now())?;
        let left = left.max(Duration::from_millis(1));
        match &mut self.conn {
            Conn::Udp(s, _) => {
                s.set_read_timeout(Some(left.min(UDP_RETRANSMIT))).ok()?;
                let mut buf = vec![0u8; 65536];
                let (n, from) = s.recv_from(&mut buf).ok()?;
                self.last_from = Some(from);
                buf.truncate(n);
                Some(buf)
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(left)).ok()?;
                let mut head = [0u8; 4];
                s.read_exact(&mut head).ok()?;
                // STUN: 20-byte header, length after it; ChannelData: 4-byte header,
                // padded to 4 on streams (RFC 8656 §12.5).
                let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
                let rest = if head[0] < 0x40 {
                    16 + len
                } else {
                    (len + 3) & !3
                };
                let mut buf = head.to_vec();
                buf.resize(4 + rest, 0);
                s.read_exact(&mut buf[4..]).ok()?;
                Some(buf)
            }
        }
    }

    /// Sends a request and returns the response with the same transaction ID, retransmitting
    /// over UDP (RFC 8489 §6.2.1). Other messages (Data indications) are skipped.
    pub fn transact(&mut self, request: &[u8]) -> Result<Response, StunError> {
        let tid: [u8; 12] = request[8..20].try_into().expect("a STUN request");
        let deadline = Instant::now() + self.timeout;
        self.send_raw(request)
            .map_err(|e| StunError::local(format!("send: {e}")))?;
        let mut last_send = Instant::now();
        while Instant::now() < deadline {
            if let Some(bytes) = self.recv(deadline) {
                if let Ok(m) = Message::parse(&bytes) {
                    if m.transaction_id() == tid && m.class() != Class::Request {
                        return Ok(Response { bytes });
                    }
                }
            }
            if matches!(self.conn, Conn::Udp(..)) && last_send.elapsed() >= UDP_RETRANSMIT {
                self.send_raw(request)
                    .map_err(|e| StunError::local(format!("send: {e}")))?;
                last_send = Instant::now();
            }
        }
        Err(StunError::local(format!(
            "no response within {:?}",
            self.timeout
        )))
    }

    /// Binding request (RFC 8489 §3): the XOR-MAPPED-ADDRESS the server saw.
    pub fn binding(&mut self) -> Result<SocketAddr, StunError> {
        let mut b = MessageBuilder::new(method::BINDING, Class::Request, transaction_id());
        b.fingerprint();
        let r = self.transact(&b.finish())?.into_result()?;
        let m = r.message();
        let mapped = m.xor_addresses(attr::XOR_MAPPED_ADDRESS).next().flatten();
        mapped.ok_or_else(|| StunError::local("no XOR-MAPPED-ADDRESS"))
    }

    /// A Binding request with `attrs` (CHANGE-REQUEST, say; RFC 5780 §7.2): the response,
    /// success or error, and the address it came from (UDP only).
    pub fn binding_from(
        &mut self,
        attrs: &[(u16, Vec<u8>)],
    ) -> Result<(Response, SocketAddr), StunError> {
        let req = self.request(method::BINDING, attrs);
        self.last_from = None;
        let r = self.transact(&req)?;
        let from = self
            .last_from
            .ok_or_else(|| StunError::local("no source address (not UDP)"))?;
        Ok((r, from))
    }

    /// Builds a request: `fill` adds the attributes, then USERNAME, REALM, NONCE and
    /// MESSAGE-INTEGRITY from the stored credentials if there are any, then FINGERPRINT.
    pub fn build(&self, method: u16, fill: impl FnOnce(&mut MessageBuilder)) -> Vec<u8> {
        let mut b = MessageBuilder::new(method, Class::Request, transaction_id());
        fill(&mut b);
        if let Some(c) = &self.creds {
            b.attr(attr::USERNAME, c.user.as_bytes());
            b.attr(attr::REALM, c.realm.as_bytes());
            b.attr(attr::NONCE, &c.nonce);
            b.integrity(IntegrityKind::Sha1, &c.key);
        }
        b.fingerprint();
        b.finish()
    }

    /// [`Self::build`] with raw attributes.
    pub fn request(&self, method: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        self.build(method, |b| {
            for (t, v) in attrs {
                b.attr(*t, v);
            }
        })
    }

    /// Sends an unauthenticated Allocate to learn the realm and nonce (the 401 of RFC 8656
    /// §7.2 / RFC 8489 §9.2.4) and stores them with the key for `user`/`pass`.
    pub fn fetch_nonce(&mut self, user: &str, pass: &str) -> Result<(), StunError> {
        self.creds = None;
        let req = self.request(method::ALLOCATE, &allocate_attrs());
        let resp = self.transact(&req)?;
        match resp.clone().into_result() {
            Ok(_) => return Err(StunError::local("Allocate succeeded without credentials")),
            Err(e) if e.code == 401 => {}
            Err(e) => return Err(e),
        }
        let m = resp.message();
        let realm = m
            .get_str(attr::REALM)
            .ok_or_else(|| StunError::local("401 without REALM"))?
            .to_string();
        let nonce = m
            .get(attr::NONCE)
            .ok_or_else(|| StunError::local("401 without NONCE"))?
            .to_vec();
        let key = rtc_auth::turn::key_md5(user, &realm, pass).to_vec();
        self.creds = Some(Credentials {
            user: user.to_string(),
            realm,
            nonce,
            key,
        });
        Ok(())
    }

    /// Allocate with the stored credentials (after [`Self::fetch_nonce`]), plus `extra`
    /// attributes: the relayed address, or the error.
    pub fn allocate_with_stored(
        &mut self,
        extra: &[(u16, Vec<u8>)],
    ) -> Result<SocketAddr, StunError> {
        let mut attrs = allocate_attrs();
        attrs.extend_from_slice(extra);
        let req = self.request(method::ALLOCATE, &attrs);
        let r = self.transact(&req)?.into_result()?;
        let m = r.message();
        let relayed = m.xor_addresses(attr::XOR_RELAYED_ADDRESS).next().flatten();
        relayed.ok_or_else(|| StunError::local("no XOR-RELAYED-ADDRESS"))
    }

    /// The full long-term credential dance (RFC 8489 §9.2): unauthenticated Allocate, 401
    /// with realm and nonce, authenticated Allocate. Returns the relayed address.
    pub fn allocate(&mut self, user: &str, pass: &str) -> Result<SocketAddr, StunError> {
        self.allocate_extra(user, pass, &[])
    }

    /// Like [`Self::allocate`], with `extra` attributes in the authenticated request.
    pub fn allocate_extra(
        &mut self,
        user: &str,
        pass: &str,
        extra: &[(u16, Vec<u8>)],
    ) -> Result<SocketAddr, StunError> {
        self.fetch_nonce(user, pass)?;
        self.allocate_with_stored(extra)
    }

    /// Refresh (RFC 8656 §7.3) with the stored credentials: the granted lifetime.
    pub fn refresh(&mut self, lifetime: u32) -> Result<u32, StunError> {
        let req = self.request(
            method::REFRESH,
            &[(attr::LIFETIME, lifetime.to_be_bytes().to_vec())],
        );
        let r = self.transact(&req)?.into_result()?;
        Ok(r.message().get_u32(attr::LIFETIME).unwrap_or(0))
    }

    /// CreatePermission (RFC 8656 §9) for `peer` with the stored credentials.
    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<(), StunError> {
        let req = self.build(method::CREATE_PERMISSION, |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        });
        self.transact(&req)?.into_result().map(|_| ())
    }
}

fn allocate_attrs() -> Vec<(u16, Vec<u8>)> {
    vec![(
        attr::REQUESTED_TRANSPORT,
        TRANSPORT_UDP.to_be_bytes().to_vec(),
    )]
}
