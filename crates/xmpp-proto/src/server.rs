//! The XMPP server core of `xmppd`: client-to-server streams from the first byte to the
//! last, and everything routed between them, with no I/O.
//!
//! CONTRACT: the public API below is what the daemon (`xmppd/`) codes against; keep it
//! (add freely). The daemon drives one [`Server`] the quinn way:
//! - [`Server::connection_opened`] for each accepted TCP connection (on a STARTTLS port or
//!   a direct-TLS port, XEP-0368, where TLS is already up);
//! - [`Server::data`] with every chunk of decrypted bytes it reads;
//! - [`Server::tls_established`] once a handshake the core asked for ([`Output::StartTls`])
//!   or a direct-TLS handshake completed, with the channel-binding data for SCRAM-*-PLUS;
//! - [`Server::connection_closed`] when the socket is gone (EOF, error, or after
//!   [`Output::Close`]);
//! - [`Server::account_loaded`], [`Server::loaded`] and [`Server::stored`] when storage work
//!   it asked for is done (stored = durable: a message for an offline user is only
//!   acknowledged (XEP-0198) once its [`Output::Store`] batch is committed);
//! - [`Server::handle_timeout`] at [`Server::poll_timeout`];
//! - and drains [`Server::poll_output`] after each call.

use crate::jid::Jid;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The daemon's id for one TCP connection.
pub type ConnId = u64;

/// A served domain (Prosody `VirtualHost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VHost {
    pub domain: String,
    /// XEP-0077 in-band registration (Prosody `allow_registration`, off by default).
    pub allow_registration: bool,
    /// Admins of this host in addition to the global ones.
    pub admins: Vec<Jid>,
}

/// A chat-room service (Prosody `Component "conference.example.org" "muc"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MucService {
    pub domain: String,
    /// Only admins may create rooms (Prosody `restrict_room_creation`).
    pub restrict_room_creation: bool,
    /// Messages of history sent to a joining occupant by default (XEP-0045 section 7.2.15;
    /// Prosody `max_history_messages` is 20).
    pub max_history: usize,
}

/// Server settings (Prosody's names in the daemon's config).
#[derive(Debug, Clone)]
pub struct Config {
    pub vhosts: Vec<VHost>,
    pub muc: Vec<MucService>,
    /// Global admins (Prosody `admins`): XEP-0133 ad-hoc commands on every host.
    pub admins: Vec<Jid>,
    /// No SASL before TLS (Prosody `c2s_require_encryption`, default true).
    pub require_encryption: bool,
    /// PLAIN is offered only over TLS; `false` removes it entirely.
    pub allow_plain: bool,
    pub limits: crate::xml::Limits,
    /// PBKDF2 iterations for new SCRAM credentials (in-band registration, password
    /// change); Prosody's default is 10000.
    pub scram_iterations: u32,
    /// How long a detached XEP-0198 session waits to be resumed (Prosody
    /// `smacks_hibernation_time`, 600 s).
    pub sm_resume_timeout: Duration,
    /// Stored offline messages per user before new ones are bounced (service-unavailable).
    pub offline_max: usize,
    /// Per-connection read rate once authenticated, bytes per second (Prosody `limits`
    /// c2s rate, "10kb/s"); the daemon applies it by pausing reads, the core reports it.
    pub c2s_rate: u32,
    /// How long a new connection may take to complete its stream header and
    /// authentication before it is closed with `connection-timeout`.
    pub negotiation_timeout: Duration,
    /// Name/version answered to XEP-0092.
    pub software_name: String,
    pub software_version: String,
}

/// Kind of listening port a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// Plain TCP, STARTTLS offered (and required by default): port 5222.
    C2sStartTls,
    /// TLS from the first byte (XEP-0368): port 5223.
    C2sDirectTls,
}

/// TLS facts for SCRAM-*-PLUS (RFC 5802 section 6, RFC 9266 `tls-exporter`, RFC 5929
/// `tls-server-end-point`) and the SNI name the client asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// 32 bytes of `EXPORTER-Channel-Binding` (TLS 1.3; also offered on 1.2 with EMS).
    pub tls_exporter: Option<Vec<u8>>,
    /// Hash of our certificate (RFC 5929 section 4.1).
    pub tls_server_end_point: Option<Vec<u8>>,
    pub sni: Option<String>,
    /// "TLSv1.3"...
    pub version: String,
}

/// SCRAM secrets of one mechanism (RFC 5802 section 3: never the password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSecrets {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// An account's stored credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSecrets {
    pub sha1: Option<ScramSecrets>,
    pub sha256: Option<ScramSecrets>,
}

/// Per-user data the core keeps in key-value "stores" (Prosody's storage model: host,
/// user, store name, key -> value). Values are XML text (an element serialized with
/// [`crate::element::Element::to_xml`]) so any backend stores them as strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Sets `store`/`key` of `user@host` to `value` (insert or replace).
    Put {
        host: String,
        user: String,
        store: String,
        key: String,
        value: String,
    },
    Delete {
        host: String,
        user: String,
        store: String,
        key: String,
    },
    /// Removes every key of `store` for the user (`None`: every store: account deletion).
    DeleteAll {
        host: String,
        user: String,
        store: Option<String>,
    },
    /// Creates or replaces an account's SCRAM secrets (registration, password change).
    PutAccount {
        host: String,
        user: String,
        secrets: AccountSecrets,
    },
    DeleteAccount {
        host: String,
        user: String,
    },
}

/// Orders for the daemon.
#[derive(Debug)]
pub enum Output {
    Send {
        conn: ConnId,
        data: Vec<u8>,
    },
    /// Everything queued for `conn` so far has been sent (it ends with `<proceed/>`):
    /// start the TLS server handshake, then call [`Server::tls_established`].
    StartTls {
        conn: ConnId,
    },
    /// Flush what is queued, then close.
    Close {
        conn: ConnId,
    },
    /// Load `user@host`'s SCRAM secrets; answer [`Server::account_loaded`].
    FetchAccount {
        id: u64,
        host: String,
        user: String,
    },
    /// Load every key of `store` of `user@host` (or one `key`); answer [`Server::loaded`].
    Load {
        id: u64,
        host: String,
        user: String,
        store: String,
        key: Option<String>,
    },
    /// Make these changes durable in one transaction; answer [`Server::stored`].
    Store {
        id: u64,
        ops: Vec<StoreOp>,
    },
}

/// Counters and gauges for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Current values.
    pub c2s_connections: u64,
    pub sessions: u64,
    pub rooms: u64,
    pub occupants: u64,
    /// Monotonic.
    pub stanzas_in: [u64; 3],
    pub stanzas_out: [u64; 3],
    pub auth_failures: u64,
    pub auth_successes: u64,
    pub stream_errors: u64,
    pub offline_stored: u64,
}

/// Index into [`Stats::stanzas_in`] / `stanzas_out`.
pub const MESSAGE: usize = 0;
pub const PRESENCE: usize = 1;
pub const IQ: usize = 2;

/// Why a connection went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Eof,
    Error,
}

/// The server core.
pub struct Server {
    _private: (),
}

impl Server {
    /// `seed` feeds stream ids, SCRAM nonces, resource names and stanza ids.
    pub fn new(config: Config, seed: u64) -> Server {
        let _ = (config, seed);
        unimplemented!("core")
    }
    /// New settings (SIGHUP: virtual hosts added or removed). Sessions of a removed host
    /// are closed with `host-gone`.
    pub fn update_config(&mut self, now: Instant, config: Config) {
        let _ = (now, config);
        unimplemented!("core")
    }
    pub fn connection_opened(
        &mut self,
        now: Instant,
        conn: ConnId,
        kind: ConnKind,
        peer: SocketAddr,
    ) {
        let _ = (now, conn, kind, peer);
        unimplemented!("core")
    }
    /// For [`ConnKind::C2sDirectTls`] right after opening; after [`Output::StartTls`]
    /// otherwise.
    pub fn tls_established(&mut self, now: Instant, conn: ConnId, info: TlsInfo) {
        let _ = (now, conn, info);
        unimplemented!("core")
    }
    pub fn data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        let _ = (now, conn, bytes);
        unimplemented!("core")
    }
    pub fn connection_closed(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let _ = (now, conn, reason);
        unimplemented!("core")
    }
    /// `None`: no such account (answered exactly like a wrong password).
    pub fn account_loaded(&mut self, now: Instant, id: u64, secrets: Option<AccountSecrets>) {
        let _ = (now, id, secrets);
        unimplemented!("core")
    }
    /// `(key, value)` pairs of the store asked for; `Err` when the database failed.
    pub fn loaded(&mut self, now: Instant, id: u64, items: Result<Vec<(String, String)>, ()>) {
        let _ = (now, id, items);
        unimplemented!("core")
    }
    pub fn stored(&mut self, now: Instant, id: u64, ok: bool) {
        let _ = (now, id, ok);
        unimplemented!("core")
    }
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        unimplemented!("core")
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        unimplemented!("core")
    }
    pub fn poll_output(&mut self) -> Option<Output> {
        unimplemented!("core")
    }
    pub fn stats(&self) -> Stats {
        unimplemented!("core")
    }
}
