//! The XMPP server core of `xmppd`: client-to-server streams from the first byte to the
//! last, and everything routed between them, with no I/O.
//!
//! # Driving it
//!
//! One [`Server`] follows the suite's core contract (`rtc_proto`, whose crate doc gives
//! the polling order; [`Server`] implements [`rtc_proto::ProtocolCore`]). Inputs:
//! - [`Server::handle_connection_opened`] for each accepted connection, with its
//!   [`ConnKind`] (a STARTTLS port, or a direct-TLS port, XEP-0368, where TLS is already
//!   up), its [`Framing`] (a byte stream, or RFC 7395 WebSocket messages) and its
//!   [`Role`] (a client today; servers come with federation);
//! - [`Server::handle_data`] with every chunk of decrypted bytes it reads (over
//!   WebSocket: one text message per call; each [`Output::Send`] is then one message);
//! - [`Server::handle_tls_established`] once a handshake the core asked for
//!   ([`Output::StartTls`]) or a direct-TLS handshake completed, with the
//!   channel-binding data for SCRAM-*-PLUS;
//! - [`Server::handle_connection_closed`] when the socket is gone (EOF, error, or after
//!   [`Output::Close`]);
//! - [`Server::handle_account_loaded`], [`Server::handle_loaded`] and
//!   [`Server::handle_stored`] when storage work it asked for is done, or failed
//!   ([`StoreFailed`]). Stored means durable: a message for an offline user is only
//!   acknowledged (XEP-0198) once its [`Output::Store`] batch is committed;
//! - [`Server::handle_timeout`] at [`Server::poll_timeout`];
//! - [`Server::set_wall_clock`] at start and now and then (XEP-0203 delay stamps and
//!   offline-storage keys need the calendar time the core never reads itself);
//! - and it drains [`Server::poll_output`] after each call.
//!
//! Storage orders must be carried out in the order they are polled (one queue per
//! daemon, or at least per user): a `Load` issued after a `Store` must see that store.
//!
//! # Inside: core, modules, components (Prosody's layout)
//!
//! ```text
//! bytes -> core/stream.rs: framing (stream or RFC 7395), parser, header checks,
//!          STARTTLS, SASL, bind, stream errors
//!       -> core/session.rs: bound resource, from/to checks; core/sm.rs XEP-0198
//!          counting and queue; modules/csi.rs XEP-0352 hold
//!       -> core/router.rs: route(stanza) by its `to`
//!            our domain, no localpart -> core/iq.rs dispatch table (modules/)
//!            a local user             -> core/users.rs (load state) -> messages
//!                                        (hooks: message_routed, message_delivered,
//!                                        message_offline), core/presence.rs,
//!                                        account iq modules (core/roster.rs,
//!                                        modules/blocking.rs...)
//!            a component domain       -> components/muc.rs (muc_handle)
//!            anything else            -> deliver_remote (hook: remote_stanza)
//! ```
//!
//! - `core/`: what every stream needs whatever is loaded: streams and SASL, sessions,
//!   XEP-0198, routing, roster and presence (RFC 6121), per-user state, stanza helpers,
//!   the module table (`iq.rs`) and the hooks (`hooks.rs`).
//! - `modules/`: one file per XEP family (disco and caps, vcard, private, PEP and
//!   bookmarks, blocking, carbons, CSI, offline, registration, ad-hoc commands,
//!   version/time/last/ping), each listed in `iq::MODULES`.
//! - `components/`: services on their own domains (XEP-0045 rooms).
//!
//! Per-user state (`core/users.rs`: roster, blocklist, offline messages) is loaded with
//! [`Output::Load`] when a user first binds a resource or when a stanza for an offline
//! user needs it (a message to store, a subscription request), kept while the user has
//! sessions, and dropped a minute after the last one goes. Every change is written
//! through with [`Output::Store`]; answers that promise durability (a roster set result,
//! a blocklist change, an XEP-0198 `<a h>` covering a message written to offline
//! storage) wait for [`Server::handle_stored`].
//!
//! # Adding a module
//!
//! A module is a file `src/server/modules/<module>.rs` (declared in `modules.rs`, and
//! imported in this file's `use self::modules::{...}` if other files name it) starting
//! with `use super::*;`, holding free functions or an `impl Server` block, and one
//! `pub(crate) const MODULE: Module` listed in `iq::MODULES`:
//!
//! ```ignore
//! pub(crate) const MODULE: Module = Module {
//!     name: "version",
//!     server_features: &["jabber:iq:version"],   // domain disco#info (XEP-0030)
//!     account_features: &[],                     // user@domain disco#info
//!     iq: &[IqRoute { ns: "jabber:iq:version", name: "query",
//!                     target: Target::Server, handler: version_iq }],
//!     preauth_iq: None,                          // XEP-0077: iq before auth
//!     hooks: Hooks::NONE,                        // core events it listens to
//! };
//! fn version_iq(s: &mut Server, now: Instant, req: IqRequest) -> IqReply {
//!     if req.is_set() { return IqReply::Error(StanzaError::new("bad-request")); }
//!     IqReply::Result(Some(Element::new("query", "jabber:iq:version")...))
//! }
//! ```
//!
//! - The dispatcher hands each get/set whose single payload matches `ns` + `name` and
//!   whose target matches (`Target::Server`: `to` = the domain; `Target::Account`: `to`
//!   = a user's bare JID, or no `to` from one of the user's own resources, RFC 6120
//!   section 10.3.3; `Target::Both`) to the handler. `IqRequest` carries the iq
//!   (`from` stamped), `from`, `to`, the sender's `session` if local, and `own` (the
//!   account's own resource). Results and errors of results are never dispatched.
//! - `IqReply::Result(payload)` / `IqReply::Error(StanzaError)` are sent at once;
//!   `IqReply::Later` means the handler answers itself with `Server::reply_iq(now,
//!   &req.reply_to(), Ok(payload) | Err(error))`, typically from a storage callback:
//!   `load_then`, `store_then` and `fetch_account_then` take a closure run when the
//!   daemon answers, so a module never needs a variant in a central enum.
//! - A namespace nobody registered is answered `service-unavailable`; a registered
//!   namespace with another element name or target `feature-not-implemented` (RFC 6120
//!   section 8.3.3).
//! - Module state goes in a field of [`Server`] of a type the module defines (see
//!   `components/muc.rs`'s `MucState`); per-user data in the key-value stores under the
//!   module's own store names (`vcard`, `private`, `pep` and `pep_items`, `lastlog`...).
//! - Stanzas are sent with `Server::route(now, stanza)` (`from` and `to` set), which
//!   reaches local sessions, components and remote domains alike; `Server::bounce`
//!   answers one with a stanza error.
//!
//! # Which hook (`core/hooks.rs`)
//!
//! A module reacts to what happens outside its iq payloads by filling fields of its
//! `hooks: Hooks { field: Some(handler), ..Hooks::NONE }`; the router, sessions and
//! presence fire them and never name the module:
//!
//! | to ...                                              | hook                 |
//! |-----------------------------------------------------|----------------------|
//! | copy or archive what a local user sends (carbons, XEP-0313 outgoing) | `message_sent` |
//! | see, alter or take a message before delivery (XEP-0313 incoming)     | `message_routed` |
//! | follow up on a delivered message (carbons `<received/>`)             | `message_delivered` |
//! | keep a message nobody online can take (offline storage)              | `message_offline` |
//! | act once an offline message is durable (XEP-0357 push)               | `message_stored` |
//! | follow resources' availability (caps, last activity)                 | `presence_broadcast` |
//! | set up or tear down per-session state                                | `session_opened`, `session_closed` |
//! | carry stanzas to other servers (server-to-server streams)            | `remote_stanza` |
//!
//! Handlers run in `iq::MODULES` order; the ones that may take a stanza over return
//! `Flow::Handled` to stop it there or `Flow::Continue(stanza)` to pass it on.

use crate::element::{ns, Element};
use crate::jid::Jid;
use crate::xml::{StreamEvent, StreamParser};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use rtc_proto::{CloseReason, ConnId, WallClock};

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

/// Kind of listening port a connection came in on: whether TLS is already up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// Plain TCP, STARTTLS offered (and required by default): port 5222. A WebSocket
    /// without TLS below it (`ws:`) is this kind too, never offered STARTTLS (RFC 7395
    /// section 3.9), so with `require_encryption` it offers no SASL mechanism.
    C2sStartTls,
    /// TLS from the first byte (XEP-0368): port 5223, or a `wss:` WebSocket.
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

/// Orders for the daemon. `Send` carries bytes for `conn`, in order; on a
/// [`Framing::WebSocket`] connection each `Send` is a text message of its own.
#[derive(Debug)]
pub enum Output {
    Send {
        conn: ConnId,
        data: Vec<u8>,
    },
    /// Everything queued for `conn` so far has been sent (it ends with `<proceed/>`):
    /// start the TLS server handshake, then call [`Server::handle_tls_established`].
    StartTls {
        conn: ConnId,
    },
    /// Flush what is queued, then close.
    Close {
        conn: ConnId,
    },
    /// Load `user@host`'s SCRAM secrets; answer [`Server::handle_account_loaded`].
    FetchAccount {
        id: u64,
        host: String,
        user: String,
    },
    /// Load every key of `store` of `user@host` (or one `key`); answer
    /// [`Server::handle_loaded`].
    Load {
        id: u64,
        host: String,
        user: String,
        store: String,
        key: Option<String>,
    },
    /// Make these changes durable in one transaction; answer [`Server::handle_stored`].
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

/// A storage order the daemon could not carry out (the database failed or its queue
/// was full). Told apart from "no such data" all the way: a failed load is answered
/// `internal-server-error` or keeps the stanza from being acknowledged, never read as
/// empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("storage failed")]
pub struct StoreFailed;

/// How XML travels on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// One XML document over a byte stream (TCP, TLS): `<stream:stream>` ... its end
    /// tag (RFC 6120 section 4); [`Server::handle_data`] takes bytes split anywhere.
    Stream,
    /// RFC 7395 XMPP over WebSocket: each [`Server::handle_data`] call is one text
    /// message holding whole elements (section 3.3.3), the stream is opened with
    /// `<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>` and ended with `<close/>`
    /// (sections 3.4 and 3.6), and every [`Output::Send`] is one message to send. TLS is
    /// the WebSocket's (`wss:`, section 3.9): no STARTTLS.
    WebSocket,
}

/// Who is at the other end of a connection, which decides the stream's content
/// namespace (RFC 6120 section 4.8.2) and what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// A client (`jabber:client`): SASL, resource binding, sessions.
    Client,
}

impl Role {
    /// The default namespace of the stream's content.
    pub fn content_ns(self) -> &'static str {
        match self {
            Role::Client => ns::CLIENT,
        }
    }
}

mod components;
mod core;
mod modules;

use self::components::muc;
use self::core::{form, hooks, iq, roster, session, stanza, stream, users};
use self::modules::{
    adhoc, blocking, bookmarks, caps, carbons, csi, disco, last, offline, pep, ping, private,
    register, time, vcard, version,
};

pub use stanza::StanzaError;

use hooks::{Flow, Hooks};
use iq::{IqReply, IqRequest, IqRoute, Module, Target};
use session::{AckToken, Session, SessionId};
use stream::Conn;
use users::User;

/// How long an offline user's loaded state is kept after its last use (a burst of
/// messages to the same offline user costs one load).
const USER_IDLE: Duration = Duration::from_secs(60);

/// Something to do at a given time; checked against the current state when it fires
/// (a cancelled timer is simply found stale).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// RFC 6120 section 4.9.3.4 `connection-timeout` before authentication completes.
    Negotiation(ConnId),
    /// End of an XEP-0198 hibernation (section 5: the resumption window).
    Hibernation(SessionId, u64),
    /// Drop an offline user's loaded state.
    UserIdle(Jid),
}

type AccountCallback =
    Box<dyn FnOnce(&mut Server, Instant, Result<Option<AccountSecrets>, StoreFailed>) + Send>;
type LoadCallback = Box<dyn FnOnce(&mut Server, Instant, LoadResult) + Send>;
type StoreCallback = Box<dyn FnOnce(&mut Server, Instant, bool) + Send>;

/// What [`Server::handle_loaded`] hands a load callback.
pub(crate) type LoadResult = Result<Vec<(String, String)>, StoreFailed>;

/// Continuations of storage orders, by order id.
enum Waiting {
    Account(AccountCallback),
    Load(LoadCallback),
    Store(StoreCallback),
}

/// The server core.
pub struct Server {
    cfg: Config,
    rng: u64,
    outputs: VecDeque<Output>,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<SessionId, Session>,
    next_session: SessionId,
    /// Bound resources (RFC 6120 section 7).
    by_full: HashMap<Jid, SessionId>,
    /// XEP-0198 resumption ids.
    by_smid: HashMap<String, SessionId>,
    users: HashMap<Jid, User>,
    next_order: u64,
    waiting: HashMap<u64, Waiting>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// The XEP-0198 handled-count token of the client stanza being processed: taken by
    /// whatever makes its outcome asynchronous (a user load, an offline store) and
    /// released when that outcome is durable.
    hold: Option<AckToken>,
    /// Sessions whose XEP-0198 queue grew during this call (an `<r/>` goes out at the end).
    sm_dirty: Vec<SessionId>,
    /// Calendar anchor from [`Server::set_wall_clock`].
    wall: Option<WallClock>,
    last_now: Option<Instant>,
    /// Last offline key's microseconds, so keys stay increasing.
    last_offline_micros: u64,
    /// Per-server key of the fake SCRAM secrets of unknown users (stable salts).
    fake_key: u64,
    stats: Stats,
    muc: muc::MucState,
    /// XEP-0115: clients' capabilities (`caps.rs`).
    caps: caps::CapsState,
    /// First call seen: XEP-0012 server uptime (`last.rs`).
    started: Option<Instant>,
    /// XEP-0077 registrations and removals in progress (`register.rs`).
    registering: register::RegisterState,
}

impl Server {
    /// `seed` feeds stream ids, SCRAM nonces, resource names and stanza ids.
    pub fn new(config: Config, seed: u64) -> Server {
        let mut rng = seed;
        let fake_key = splitmix(&mut rng);
        Server {
            cfg: config,
            rng,
            fake_key,
            outputs: VecDeque::new(),
            conns: HashMap::new(),
            sessions: HashMap::new(),
            next_session: 1,
            by_full: HashMap::new(),
            by_smid: HashMap::new(),
            users: HashMap::new(),
            next_order: 1,
            waiting: HashMap::new(),
            timers: BinaryHeap::new(),
            hold: None,
            sm_dirty: Vec::new(),
            wall: None,
            last_now: None,
            last_offline_micros: 0,
            stats: Stats::default(),
            muc: muc::MucState::default(),
            caps: caps::CapsState::default(),
            started: None,
            registering: register::RegisterState::default(),
        }
    }

    /// New settings (SIGHUP: virtual hosts added or removed). Sessions of a removed host
    /// are closed with `host-gone` (RFC 6120 section 4.9.3.5).
    pub fn update_config(&mut self, now: Instant, config: Config) {
        self.tick(now);
        self.cfg = config;
        let gone: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.host.as_ref().is_some_and(|h| !self.is_local_domain(h)))
            .map(|c| c.id)
            .collect();
        for cid in gone {
            self.stream_error(now, cid, "host-gone", None);
        }
        let hibernating: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.conn.is_none() && !self.is_local_domain(s.jid.domain()))
            .map(|s| s.id)
            .collect();
        for sid in hibernating {
            self.destroy_session(now, sid);
        }
        self.users.retain(|j, _| {
            self.cfg
                .vhosts
                .iter()
                .any(|v| v.domain.eq_ignore_ascii_case(j.domain()))
        });
        self.finish_call();
    }

    /// The calendar time now (`since_epoch` = `SystemTime::now().duration_since(UNIX_EPOCH)`),
    /// for XEP-0203 delay stamps and the arrival-ordered keys of offline messages. Call at
    /// start and from time to time (clock steps are picked up); until then the core
    /// counts from the Unix epoch.
    pub fn set_wall_clock(&mut self, now: Instant, since_epoch: Duration) {
        self.wall = Some(WallClock::new(now, since_epoch));
        self.started.get_or_insert(now);
    }

    /// A connection was accepted: `kind` says whether TLS is already up or offered
    /// with STARTTLS, `framing` how XML travels on it, `role` who is at the other end.
    pub fn handle_connection_opened(
        &mut self,
        now: Instant,
        conn: ConnId,
        kind: ConnKind,
        framing: Framing,
        role: Role,
        peer: SocketAddr,
    ) {
        self.tick(now);
        let params = stream::ConnParams {
            kind,
            framing,
            role,
            peer,
        };
        let c = Conn::new(conn, params, self.cfg.limits, self.cfg.c2s_rate, now);
        self.conns.insert(conn, c);
        self.stats.c2s_connections = self.conns.len() as u64;
        self.arm(now + self.cfg.negotiation_timeout, Timer::Negotiation(conn));
        self.finish_call();
    }

    /// For [`ConnKind::C2sDirectTls`] (and WebSocket over `wss:`) right after opening;
    /// after [`Output::StartTls`] otherwise.
    pub fn handle_tls_established(&mut self, now: Instant, conn: ConnId, info: TlsInfo) {
        self.tick(now);
        self.on_tls_established(now, conn, info);
        self.finish_call();
    }

    /// Bytes read from `conn` ([`Framing::Stream`]: any chunk; [`Framing::WebSocket`]:
    /// one whole text message).
    pub fn handle_data(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) {
        self.tick(now);
        self.on_data(now, conn, bytes);
        self.finish_call();
    }

    pub fn handle_connection_closed(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        self.tick(now);
        self.on_connection_closed(now, conn, reason);
        self.finish_call();
    }

    /// The answer to [`Output::FetchAccount`]. `Ok(None)`: no such account (answered
    /// exactly like a wrong password); `Err`: the database failed, which is never taken
    /// for "no such account" (SASL answers `temporary-auth-failure`, routing does not
    /// bounce messages for a user it could not look up).
    pub fn handle_account_loaded(
        &mut self,
        now: Instant,
        id: u64,
        secrets: Result<Option<AccountSecrets>, StoreFailed>,
    ) {
        self.tick(now);
        if let Some(Waiting::Account(f)) = self.waiting.remove(&id) {
            f(self, now, secrets);
        }
        self.finish_call();
    }

    /// The answer to [`Output::Load`]: `(key, value)` pairs of the store asked for.
    pub fn handle_loaded(
        &mut self,
        now: Instant,
        id: u64,
        items: Result<Vec<(String, String)>, StoreFailed>,
    ) {
        self.tick(now);
        if let Some(Waiting::Load(f)) = self.waiting.remove(&id) {
            f(self, now, items);
        }
        self.finish_call();
    }

    /// The answer to [`Output::Store`]: `Ok` once the changes are durable.
    pub fn handle_stored(&mut self, now: Instant, id: u64, result: Result<(), StoreFailed>) {
        self.tick(now);
        if let Some(Waiting::Store(f)) = self.waiting.remove(&id) {
            f(self, now, result.is_ok());
        }
        self.finish_call();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::Negotiation(cid) => self.negotiation_timeout(now, cid),
                Timer::Hibernation(sid, generation) => {
                    self.hibernation_timeout(now, sid, generation)
                }
                Timer::UserIdle(bare) => self.user_idle(now, &bare),
            }
        }
        self.finish_call();
    }

    /// Graceful stop (SIGTERM): every stream gets `system-shutdown` (RFC 6120 section
    /// 4.9.3.20) and every session ends now, hibernating ones included, so their
    /// unacknowledged messages reach offline storage; the daemon then drains the
    /// outputs (storage orders included) before exiting.
    pub fn shutdown(&mut self, now: Instant) {
        self.tick(now);
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for cid in conns {
            self.stream_error(now, cid, "system-shutdown", None);
        }
        let rest: Vec<SessionId> = self.sessions.keys().copied().collect();
        for sid in rest {
            self.destroy_session(now, sid);
        }
        self.finish_call();
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.c2s_connections = self.conns.len() as u64;
        s.sessions = self.sessions.len() as u64;
        let (rooms, occupants) = self.muc_counts();
        s.rooms = rooms;
        s.occupants = occupants;
        s
    }

    /// When the connection's read budget (`c2s_rate`) is spent, the instant at which the
    /// daemon may read from it again (it pauses reads until then; a client that keeps
    /// sending regardless ends with `policy-violation`).
    pub fn read_paused_until(&self, conn: ConnId) -> Option<Instant> {
        self.conns
            .get(&conn)
            .and_then(|c| c.paused_until(self.cfg.c2s_rate))
    }

    // ---- storage orders with continuations (for every module) ----

    /// [`Output::FetchAccount`], `then` runs with the answer.
    pub(crate) fn fetch_account_then(
        &mut self,
        host: &str,
        user: &str,
        then: impl FnOnce(&mut Server, Instant, Result<Option<AccountSecrets>, StoreFailed>)
            + Send
            + 'static,
    ) {
        let id = self.order_id();
        self.waiting.insert(id, Waiting::Account(Box::new(then)));
        self.outputs.push_back(Output::FetchAccount {
            id,
            host: host.to_string(),
            user: user.to_string(),
        });
    }

    /// [`Output::Load`] of `store` (one `key` or all), `then` runs with the answer.
    pub(crate) fn load_then(
        &mut self,
        host: &str,
        user: &str,
        store: &str,
        key: Option<&str>,
        then: impl FnOnce(&mut Server, Instant, LoadResult) + Send + 'static,
    ) {
        let id = self.order_id();
        self.waiting.insert(id, Waiting::Load(Box::new(then)));
        self.outputs.push_back(Output::Load {
            id,
            host: host.to_string(),
            user: user.to_string(),
            store: store.to_string(),
            key: key.map(str::to_string),
        });
    }

    /// [`Output::Store`] of `ops` in one transaction, `then` runs once it is durable (or
    /// failed). The XEP-0198 hold of the stanza being processed, if any, is carried
    /// over: it is released after `then`.
    pub(crate) fn store_then(
        &mut self,
        ops: Vec<StoreOp>,
        then: impl FnOnce(&mut Server, Instant, bool) + Send + 'static,
    ) {
        let hold = self.hold.take();
        self.emit_store(ops, move |s, now, ok| {
            s.hold = hold;
            then(s, now, ok);
            s.release_hold(now);
        });
    }

    /// Writes `ops` with nobody waiting for the outcome. Memory was changed first (the
    /// change is already visible to the user's sessions).
    pub(crate) fn store(&mut self, ops: Vec<StoreOp>) {
        if !ops.is_empty() {
            self.emit_store(ops, |_, _, _| {});
        }
    }

    /// Emits the order for [`Server::store`] and [`Server::store_then`]. If the write
    /// fails, the touched users' roster, blocklist and offline messages are re-read from
    /// the database before `then` runs, so memory follows what committed rather than what
    /// was attempted (storage orders run in order per user, so the re-read sees the
    /// failed change's absence).
    fn emit_store(
        &mut self,
        ops: Vec<StoreOp>,
        then: impl FnOnce(&mut Server, Instant, bool) + Send + 'static,
    ) {
        let id = self.order_id();
        let touched = self.count_writes(&ops);
        self.waiting.insert(
            id,
            Waiting::Store(Box::new(move |s: &mut Server, now, ok| {
                if !ok {
                    s.resync_users(now, touched);
                }
                then(s, now, ok);
            })),
        );
        self.outputs.push_back(Output::Store { id, ops });
    }

    /// The users whose loaded state `ops` write, each with its write counted.
    fn count_writes(&mut self, ops: &[StoreOp]) -> Vec<Jid> {
        let touched = users::touched_users(ops);
        for j in &touched {
            if let Some(u) = self.users.get_mut(j) {
                u.writes += 1;
            }
        }
        touched
    }

    // ---- small shared helpers ----

    fn tick(&mut self, now: Instant) {
        self.last_now = Some(now);
        self.started.get_or_insert(now);
    }

    /// Work done at the end of every public call: XEP-0198 ack requests for sessions
    /// whose queue grew.
    fn finish_call(&mut self) {
        if let Some(now) = self.last_now {
            self.release_hold(now);
        }
        self.request_acks();
    }

    fn order_id(&mut self) -> u64 {
        let id = self.next_order;
        self.next_order += 1;
        id
    }

    fn arm(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    pub(crate) fn random_u64(&mut self) -> u64 {
        splitmix(&mut self.rng)
    }

    /// 16 hex digits of the seeded generator (stream ids, resources, stanza ids).
    pub(crate) fn random_id(&mut self) -> String {
        format!("{:016x}", self.random_u64())
    }

    /// Calendar time now, from [`Server::set_wall_clock`].
    pub(crate) fn unix_now(&self, now: Instant) -> Duration {
        self.wall.map_or(Duration::ZERO, |w| w.since_epoch(now))
    }

    /// Whether `domain` is one of our virtual hosts.
    pub(crate) fn is_local_domain(&self, domain: &str) -> bool {
        self.cfg
            .vhosts
            .iter()
            .any(|v| v.domain.eq_ignore_ascii_case(domain))
    }

    pub(crate) fn vhost(&self, domain: &str) -> Option<&VHost> {
        self.cfg
            .vhosts
            .iter()
            .find(|v| v.domain.eq_ignore_ascii_case(domain))
    }

    pub(crate) fn muc_service(&self, domain: &str) -> Option<&MucService> {
        self.cfg
            .muc
            .iter()
            .find(|m| m.domain.eq_ignore_ascii_case(domain))
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether `jid` (bare) is an admin of its host (global `admins` or the vhost's):
    /// for the ad-hoc commands module (XEP-0133).
    #[allow(dead_code)]
    pub(crate) fn is_admin(&self, jid: &Jid) -> bool {
        let bare = jid.bare();
        self.cfg.admins.contains(&bare)
            || self
                .vhost(jid.domain())
                .is_some_and(|v| v.admins.contains(&bare))
    }

    fn count_in(&mut self, name: &str) {
        if let Some(i) = stanza_index(name) {
            self.stats.stanzas_in[i] += 1;
        }
    }

    fn count_out(&mut self, name: &str) {
        if let Some(i) = stanza_index(name) {
            self.stats.stanzas_out[i] += 1;
        }
    }
}

/// The suite's common verbs (`rtc-proto`), for a daemon shell that drives any core.
impl rtc_proto::ProtocolCore for Server {
    type Output = Output;

    fn poll_output(&mut self) -> Option<Output> {
        Server::poll_output(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Server::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Server::handle_timeout(self, now)
    }

    fn set_wall_clock(&mut self, now: Instant, since_epoch: Duration) {
        Server::set_wall_clock(self, now, since_epoch)
    }
}

fn stanza_index(name: &str) -> Option<usize> {
    match name {
        "message" => Some(MESSAGE),
        "presence" => Some(PRESENCE),
        "iq" => Some(IQ),
        _ => None,
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
