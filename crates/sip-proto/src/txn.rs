//! The SIP transaction layer (RFC 3261 section 17, with RFC 6026's Accepted states),
//! sans-IO.
//!
//! The layer sits between the transport (the daemon's sockets) and the transaction user
//! (the proxy/registrar core). It never reads a clock, opens a socket or draws a random
//! number: every entry point takes `now`, and the output is polled.
//!
//! - Server side: [`TxnLayer::on_request`] classifies each received request (new
//!   transaction, retransmission absorbed, ACK absorbed, ACK for a 2xx to forward);
//!   the TU answers with [`TxnLayer::respond`]; the layer retransmits final responses over
//!   UDP (Timer G) and waits for the ACK (Timer H).
//! - Client side: [`TxnLayer::send_request`] starts a transaction for a request whose top
//!   Via already carries its branch; [`TxnLayer::on_response`] matches responses, absorbs
//!   retransmissions and sends the ACK for non-2xx finals; [`TxnLayer::cancel`] sends a
//!   CANCEL when the rules of section 9.1 allow it.
//! - Output: [`TxnLayer::poll_transmit`] (bytes for the daemon to send),
//!   [`TxnLayer::poll_event`] (timeouts, transport failures, terminations), and the timer
//!   pair [`TxnLayer::poll_timeout`] / [`TxnLayer::handle_timeout`].
//!
//! Transactions keep only what they need: a server transaction its request (the TU builds
//! responses from it) and its last response encoded once; a client transaction its request
//! bytes while it may retransmit them, then the ACK bytes, plus for INVITEs the few
//! headers ACK and CANCEL are made of. Timers live in one deadline heap with lazy deletion
//! (see `timers.rs`), so tens of thousands of transactions cost no scan per tick.
//!
//! Responses that match no client transaction are dropped rather than forwarded
//! statelessly (RFC 6026 changed RFC 3261 section 16.7 so that a proxy no longer forwards
//! such "stray" responses): [`TxnLayer::on_response`] returns `None` both for them and
//! for the retransmissions it absorbed; [`TxnLayer::on_response_match`] tells the two
//! apart for a TU that wants to treat strays differently.

mod derived;
mod matching;
mod timers;

pub use matching::{has_magic_cookie, MAGIC_COOKIE};

use crate::message::{Message, Method};
use derived::InviteInfo;
use matching::ServerKey;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use timers::{Slot, Slots, TimerQueue, TxnRef};

pub use crate::transport::{ConnId, Peer, Transmit, Transport};

/// A server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxnId(u64);

/// A client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxnId(u64);

/// The timer base values of RFC 3261 section 17.1.1.1 (table 4 of appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate: first retransmission interval (A, E, G), and 64*T1 for B, F, H, J,
    /// and RFC 6026's L and M.
    pub t1: Duration,
    /// Cap of the non-INVITE (E) and INVITE response (G) retransmission interval.
    pub t2: Duration,
    /// Maximum time a message stays in the network: Timers I and K.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64*T1: Timers B, F, H, J, L, M and the wait after a CANCEL.
    fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
    /// Timer D: "at least 32 s" for unreliable transports (17.1.1.2); 64*T1 when T1 is
    /// raised so D keeps covering the server's Timer H.
    fn d(&self) -> Duration {
        self.t1x64().max(Duration::from_secs(32))
    }
}

/// What a received request is, for the TU ([`TxnLayer::on_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A new server transaction: the TU must answer it with [`TxnLayer::respond`].
    New(ServerTxnId),
    /// A retransmission, absorbed; the last response sent, if any, was queued again
    /// (17.2.1, 17.2.2).
    Retransmission,
    /// The ACK for a non-2xx final response of a server transaction, absorbed (17.2.1).
    AckForNon2xx,
    /// An ACK outside any transaction: the ACK for a 2xx (section 13.2.2.4, its own
    /// "transaction"), for the TU to forward without creating a client transaction (an
    /// ACK never gets one, section 17.1). With RFC 6026 this includes an ACK that matches
    /// an INVITE server transaction in the Accepted state.
    Ack2xx,
}

/// A response a client transaction passes up ([`TxnLayer::on_response`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseEvent {
    /// 1xx (17.1.1.2, 17.1.2.2).
    Provisional(Message),
    /// The first final response. For an INVITE with a non-2xx the ACK is already queued.
    Final(Message),
    /// A 2xx received after the first final of an INVITE transaction (RFC 6026 Accepted
    /// state): a retransmission, or the 2xx of another fork downstream. The proxy forwards
    /// each one (section 16.7 step 5).
    Retransmitted2xx(Message),
}

/// What became of a received response ([`TxnLayer::on_response_match`]).
// A return value moved once, the same size as `on_response`'s Option: boxing would only
// add an allocation per response.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseMatch {
    /// For the TU.
    Matched(ClientTxnId, ResponseEvent),
    /// A client transaction took it and the TU has nothing to do: a retransmitted final
    /// (re-ACKed if it was an INVITE's non-2xx), a response in a state that ignores it,
    /// or the response to a CANCEL the layer sent.
    Absorbed,
    /// No client transaction has this branch and CSeq method (any more). RFC 6026
    /// changed section 16.7 so that a proxy no longer forwards these statelessly.
    Stray,
}

/// Things the TU learns about outside a message ([`TxnLayer::poll_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnEvent {
    /// Timer B or F fired, or no final response came 64*T1 after a CANCEL (section 9.1):
    /// the transaction is gone and the TU acts as if a 408 arrived (sections 8.1.3.1,
    /// 16.7 step 2).
    ClientTimeout(ClientTxnId),
    /// The transport failed before a final response (17.1.4): the transaction is gone and
    /// a proxy acts as if a 503 arrived (16.9).
    ClientTransportError(ClientTxnId),
    /// Timer H fired: the ACK for a non-2xx final response never came (17.2.1).
    ServerTimeout(ServerTxnId),
    /// The server transaction is gone (Timers H, I, J, L, a reliable transport's
    /// immediate end, or its connection failed, 17.2.4); its id is dead. Emitted for every
    /// server transaction, after [`TxnEvent::ServerTimeout`] when that fired.
    ServerTerminated(ServerTxnId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Non-INVITE, nothing sent yet (17.2.2).
    Trying,
    /// A provisional response was sent (INVITE transactions start here, 17.2.1).
    Proceeding,
    /// A final (non-2xx for INVITE) response was sent.
    Completed,
    /// INVITE: the ACK came (Timer I running).
    Confirmed,
    /// INVITE: a 2xx was sent (RFC 6026 section 7.1, Timer L running).
    Accepted,
}

#[derive(Debug)]
struct ServerTxn {
    key: String,
    invite: bool,
    /// Matched per RFC 2543 rules (no magic cookie in the branch).
    legacy: bool,
    state: ServerState,
    peer: Peer,
    /// The request, while the TU may still answer it (or, for INVITE, match a CANCEL
    /// against it). A completed non-INVITE transaction lingers 64*T1 holding only its
    /// encoded response: at thousands of REGISTERs a second that is the difference
    /// between a few and many tens of megabytes.
    request: Option<Message>,
    /// The last response sent, to answer retransmissions and for Timer G.
    response: Option<Vec<u8>>,
    status: Option<u16>,
    /// RFC 2543 matching: the To tag of the final response, which the ACK must carry.
    final_to_tag: Option<String>,
    /// Timer G's current interval.
    interval: Duration,
    slots: Slots,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// INVITE, no response yet (17.1.1.2).
    Calling,
    /// Non-INVITE, no response yet (17.1.2.2).
    Trying,
    Proceeding,
    Completed,
    /// INVITE: a 2xx was received (RFC 6026 section 7.2, Timer M running).
    Accepted,
}

#[derive(Debug)]
enum ClientKind {
    Invite(Box<InviteInfo>),
    NonInvite,
    /// A CANCEL the layer sent itself (section 9.1): its responses and its end are
    /// absorbed.
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelState {
    None,
    /// Asked for before any provisional response: sent when one arrives (9.1).
    Pending,
    Sent,
}

#[derive(Debug)]
struct ClientTxn {
    key: String,
    kind: ClientKind,
    state: ClientState,
    peer: Peer,
    /// The request while it may be retransmitted (unreliable transports only), then the
    /// ACK of a non-2xx final to repeat for each retransmission of that final.
    bytes: Vec<u8>,
    /// Timer A/E's current interval.
    interval: Duration,
    cancel: CancelState,
    slots: Slots,
}

impl ClientTxn {
    fn awaiting_final(&self) -> bool {
        matches!(
            self.state,
            ClientState::Calling | ClientState::Trying | ClientState::Proceeding
        )
    }
}

/// The transaction layer; see the module doc.
#[derive(Debug)]
pub struct TxnLayer {
    timers: Timers,
    next_id: u64,
    servers: FxHashMap<u64, ServerTxn>,
    server_keys: FxHashMap<String, u64>,
    clients: FxHashMap<u64, ClientTxn>,
    client_keys: FxHashMap<String, u64>,
    /// Transactions bound to a stream connection, for [`TxnLayer::transport_error`].
    by_conn: FxHashMap<ConnId, FxHashSet<TxnRef>>,
    /// Client transactions by destination, for [`TxnLayer::destination_unreachable`].
    by_dest: FxHashMap<(Transport, SocketAddr), FxHashSet<u64>>,
    queue: TimerQueue,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
}

impl TxnLayer {
    /// A layer with the given timer values (T1 is raised to at least 1 ms and T2 to at
    /// least T1, so retransmission intervals always advance).
    pub fn new(timers: Timers) -> Self {
        let t1 = timers.t1.max(Duration::from_millis(1));
        let timers = Timers {
            t1,
            t2: timers.t2.max(t1),
            t4: timers.t4,
        };
        TxnLayer {
            timers,
            next_id: 0,
            servers: FxHashMap::default(),
            server_keys: FxHashMap::default(),
            clients: FxHashMap::default(),
            client_keys: FxHashMap::default(),
            by_conn: FxHashMap::default(),
            by_dest: FxHashMap::default(),
            queue: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    // ----------------------------------------------------------------- server side

    /// Classifies a received request (RFC 3261 section 17.2.3): with a magic-cookie branch
    /// it matches on branch + sent-by + method (an ACK matches its INVITE); otherwise on
    /// the RFC 2543 fields (Request-URI, From tag, Call-ID, CSeq, top Via, and the To tag,
    /// which for an ACK must be the one of the final response sent). `from` is where
    /// responses go: the source address and port for UDP (the caller has applied Via
    /// `received`/`rport` per RFC 3581 / section 18.2.2), the same connection for streams.
    ///
    /// `msg` must be a request; a response is absorbed and reported as a retransmission.
    pub fn on_request(&mut self, now: Instant, msg: &Message, from: Peer) -> Incoming {
        let Some(method) = msg.method() else {
            return Incoming::Retransmission;
        };
        let is_ack = *method == Method::Ack;
        let key = matching::server_key(msg, if is_ack { &Method::Invite } else { method });
        let found = key
            .as_ref()
            .and_then(|k| self.server_keys.get(&k.key).copied());
        let out = match (is_ack, found) {
            (true, None) => Incoming::Ack2xx,
            (true, Some(id)) => self.server_ack(now, id, msg),
            (false, Some(id)) => self.server_retransmission(id),
            (false, None) => self.new_server(msg, from, key),
        };
        self.prune();
        out
    }

    fn new_server(&mut self, msg: &Message, from: Peer, key: Option<ServerKey>) -> Incoming {
        let id = self.alloc_id();
        let invite = msg.method() == Some(&Method::Invite);
        // Without a top Via (never past `Message::parse`) the transaction cannot be
        // matched again: give it a key no request produces.
        let ServerKey { key, legacy } = key.unwrap_or_else(|| ServerKey {
            key: format!("\u{2}{id}"),
            legacy: false,
        });
        index_conn(&mut self.by_conn, from.conn, TxnRef::Server(id));
        self.server_keys.insert(key.clone(), id);
        self.servers.insert(
            id,
            ServerTxn {
                key,
                invite,
                legacy,
                state: if invite {
                    ServerState::Proceeding
                } else {
                    ServerState::Trying
                },
                peer: from,
                request: Some(msg.clone()),
                response: None,
                status: None,
                final_to_tag: None,
                interval: self.timers.t1,
                slots: Slots::default(),
            },
        );
        Incoming::New(ServerTxnId(id))
    }

    /// 17.2.1 (Proceeding and Completed) and 17.2.2 (Proceeding and Completed): a
    /// retransmitted request gets the last response again; in Trying, Confirmed and
    /// Accepted (RFC 6026 section 7.1) it is only absorbed.
    fn server_retransmission(&mut self, id: u64) -> Incoming {
        if let Some(t) = self.servers.get(&id) {
            if let Some(data) = &t.response {
                self.transmits.push_back(Transmit {
                    peer: t.peer.clone(),
                    data: data.clone(),
                });
            }
        }
        Incoming::Retransmission
    }

    fn server_ack(&mut self, now: Instant, id: u64, ack: &Message) -> Incoming {
        let Some(t) = self.servers.get_mut(&id) else {
            return Incoming::Ack2xx;
        };
        match t.state {
            // RFC 6026 section 7.1: the ACK for the 2xx goes to the TU.
            ServerState::Accepted => Incoming::Ack2xx,
            ServerState::Completed => {
                if t.legacy && matching::to_tag(ack) != t.final_to_tag {
                    // An RFC 2543 ACK with another To tag acknowledges something else.
                    return Incoming::Ack2xx;
                }
                // 17.2.1: Completed -> Confirmed; G and H stop, Timer I (T4 on UDP, zero
                // on reliable transports) absorbs further ACKs.
                t.state = ServerState::Confirmed;
                t.response = None;
                t.slots.clear(Slot::Retransmit);
                t.slots.clear(Slot::Timeout);
                if t.peer.transport.is_reliable() {
                    self.remove_server(id);
                } else {
                    let at = now + self.timers.t4;
                    self.queue
                        .arm(&mut t.slots, TxnRef::Server(id), Slot::Linger, at);
                }
                Incoming::AckForNon2xx
            }
            // Confirmed: absorbed (17.2.1). Before any final response an ACK acknowledges
            // nothing this transaction sent: absorbed as well.
            ServerState::Confirmed | ServerState::Proceeding | ServerState::Trying => {
                Incoming::AckForNon2xx
            }
        }
    }

    /// Sends `response` on server transaction `id` to the peer its request came from,
    /// following the state machines of RFC 3261 section 17.2.1 (INVITE; a 2xx moves it to
    /// RFC 6026's Accepted state, where further 2xx responses are still sent and INVITE
    /// retransmissions absorbed for Timer L = 64*T1) and 17.2.2 (non-INVITE). A response
    /// the state machine does not allow (anything after a non-2xx final, a non-2xx after a
    /// 2xx) and responses for unknown or terminated transactions are dropped.
    ///
    /// The layer never sends 100 Trying by itself: the TU does when it cannot answer an
    /// INVITE within 200 ms (17.2.1, 16.2).
    pub fn respond(&mut self, now: Instant, id: ServerTxnId, response: Message) {
        self.respond_inner(now, id.0, &response);
        self.prune();
    }

    fn respond_inner(&mut self, now: Instant, id: u64, response: &Message) {
        let Some(code) = response.status().filter(|c| *c >= 100) else {
            return;
        };
        let timers = self.timers;
        let Some(t) = self.servers.get_mut(&id) else {
            return;
        };
        let provisional = code < 200;
        let success = (200..300).contains(&code);
        match t.state {
            ServerState::Completed | ServerState::Confirmed => return,
            ServerState::Accepted if !success => return,
            ServerState::Accepted => {
                self.transmits.push_back(Transmit {
                    peer: t.peer.clone(),
                    data: response.encode(),
                });
                return;
            }
            ServerState::Trying | ServerState::Proceeding => {}
        }
        let data = response.encode();
        t.status = Some(code);
        let peer = t.peer.clone();
        let reliable = peer.transport.is_reliable();
        let r = TxnRef::Server(id);
        let mut terminate = false;
        if provisional {
            t.state = ServerState::Proceeding;
            t.response = Some(data.clone());
        } else if t.invite && success {
            // RFC 6026 section 7.1 (replacing 17.2.1's immediate termination): the UAS
            // core retransmits the 2xx; the transaction absorbs INVITE retransmissions
            // for Timer L so they do not look like new requests.
            t.state = ServerState::Accepted;
            t.response = None;
            self.queue
                .arm(&mut t.slots, r, Slot::Linger, now + timers.t1x64());
        } else if t.invite {
            // 17.2.1: Completed; Timer G retransmits over UDP, Timer H waits for the ACK.
            t.state = ServerState::Completed;
            t.response = Some(data.clone());
            if t.legacy {
                t.final_to_tag = matching::to_tag(response);
            }
            if !reliable {
                t.interval = timers.t1;
                self.queue
                    .arm(&mut t.slots, r, Slot::Retransmit, now + timers.t1);
            }
            self.queue
                .arm(&mut t.slots, r, Slot::Timeout, now + timers.t1x64());
        } else {
            // 17.2.2: Completed; Timer J (64*T1 on UDP, zero on reliable transports).
            t.state = ServerState::Completed;
            if reliable {
                terminate = true;
            } else {
                if !t.legacy {
                    t.request = None;
                }
                let mut kept = data.clone();
                kept.shrink_to_fit();
                t.response = Some(kept);
                self.queue
                    .arm(&mut t.slots, r, Slot::Linger, now + timers.t1x64());
            }
        }
        self.transmits.push_back(Transmit { peer, data });
        if terminate {
            self.remove_server(id);
        }
    }

    /// Answers server transaction `id` with `response` and ends it at once, as a
    /// stateless UAS does (RFC 3261 section 8.2.7): a retransmission of the request is
    /// then processed again. For answers that are cheap and harmless to recompute (a
    /// registrar's 401 challenge), so a registration burst does not keep one lingering
    /// transaction per challenge for 64*T1.
    pub fn respond_and_forget(&mut self, now: Instant, id: ServerTxnId, response: Message) {
        self.respond_inner(now, id.0, &response);
        self.remove_server(id.0);
        self.prune();
    }

    /// The request that created server transaction `id` (to build responses from).
    pub fn server_txn_request(&self, id: ServerTxnId) -> Option<&Message> {
        self.servers.get(&id.0).and_then(|t| t.request.as_ref())
    }

    /// Where server transaction `id` sends its responses.
    pub fn server_txn_peer(&self, id: ServerTxnId) -> Option<&Peer> {
        self.servers.get(&id.0).map(|t| &t.peer)
    }

    /// The status code of the last response sent on server transaction `id`, `None` when
    /// nothing was sent yet or the transaction is gone. A CANCEL handler uses it to see
    /// whether the INVITE already has its final response (section 9.2).
    pub fn server_txn_status(&self, id: ServerTxnId) -> Option<u16> {
        self.servers.get(&id.0).and_then(|t| t.status)
    }

    /// The INVITE server transaction a received CANCEL targets (section 9.2: the 17.2.3
    /// matching rules applied as if the CANCEL were the INVITE, i.e. same branch and
    /// sent-by, or for RFC 2543 requests the same Request-URI, From tag, Call-ID, CSeq
    /// number, top Via and To tag).
    pub fn find_invite_for_cancel(&self, cancel: &Message) -> Option<ServerTxnId> {
        let key = matching::server_key(cancel, &Method::Invite)?;
        let id = *self.server_keys.get(&key.key)?;
        let t = self.servers.get(&id)?;
        if !t.invite
            || (key.legacy
                && t.request
                    .as_ref()
                    .is_none_or(|r| matching::to_tag(cancel) != matching::to_tag(r)))
        {
            return None;
        }
        Some(ServerTxnId(id))
    }

    // ----------------------------------------------------------------- client side

    /// Starts a client transaction for `request` (whose top Via already carries the
    /// branch) towards `to`, and queues its first transmission. INVITE: section 17.1.1
    /// (Timer A retransmits over UDP from T1 doubling, Timer B = 64*T1 gives up while no
    /// response came). Others: 17.1.2 (Timer E from T1 doubling up to T2, then T2 once a
    /// provisional came; Timer F = 64*T1). Reliable transports run neither A nor E.
    ///
    /// An ACK is never a transaction (section 17): it is only queued, and the id returned
    /// matches nothing.
    pub fn send_request(&mut self, now: Instant, request: Message, to: Peer) -> ClientTxnId {
        let id = self.start_client(now, request, to, false);
        self.prune();
        ClientTxnId(id)
    }

    fn start_client(&mut self, now: Instant, request: Message, to: Peer, cancel: bool) -> u64 {
        let id = self.alloc_id();
        let data = request.encode();
        let invite = match request.method() {
            None | Some(Method::Ack) => {
                self.transmits.push_back(Transmit { peer: to, data });
                return id;
            }
            Some(m) => *m == Method::Invite,
        };
        let key = matching::client_key_of_request(&request).unwrap_or_else(|| format!("\u{2}{id}"));
        let kind = if cancel {
            ClientKind::Cancel
        } else if invite {
            ClientKind::Invite(Box::new(InviteInfo::of(&request)))
        } else {
            ClientKind::NonInvite
        };
        let reliable = to.transport.is_reliable();
        let mut t = ClientTxn {
            key: key.clone(),
            kind,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            peer: to.clone(),
            bytes: if reliable { Vec::new() } else { data.clone() },
            interval: self.timers.t1,
            cancel: CancelState::None,
            slots: Slots::default(),
        };
        let r = TxnRef::Client(id);
        if !reliable {
            self.queue
                .arm(&mut t.slots, r, Slot::Retransmit, now + self.timers.t1);
        }
        self.queue
            .arm(&mut t.slots, r, Slot::Timeout, now + self.timers.t1x64());
        index_conn(&mut self.by_conn, to.conn, r);
        self.by_dest
            .entry((to.transport, to.addr))
            .or_default()
            .insert(id);
        self.client_keys.insert(key, id);
        self.clients.insert(id, t);
        self.transmits.push_back(Transmit { peer: to, data });
        id
    }

    /// Matches a received response to a client transaction (section 17.1.3: top Via
    /// branch and CSeq method) and runs its state machine. Returns what the TU must see:
    /// provisionals and the first final; retransmitted finals are absorbed (and for an
    /// INVITE's non-2xx the ACK is sent again, 17.1.1.2); every 2xx of an INVITE comes up
    /// (RFC 6026 Accepted state, Timer M). For a non-2xx final to an INVITE the ACK is
    /// generated (17.1.1.3) and sent to the peer the INVITE went to.
    ///
    /// `None`: absorbed, the response to a CANCEL the layer sent, or no transaction
    /// matched (a stray response, which the TU drops: see the module doc).
    /// [`TxnLayer::on_response_match`] tells the last two apart.
    pub fn on_response(
        &mut self,
        now: Instant,
        msg: &Message,
        from: Peer,
    ) -> Option<(ClientTxnId, ResponseEvent)> {
        match self.on_response_match(now, msg, from) {
            ResponseMatch::Matched(id, event) => Some((id, event)),
            ResponseMatch::Absorbed | ResponseMatch::Stray => None,
        }
    }

    /// [`TxnLayer::on_response`], telling a response a transaction absorbed (which must
    /// never be forwarded, section 16.7) from one that matched no transaction.
    pub fn on_response_match(&mut self, now: Instant, msg: &Message, from: Peer) -> ResponseMatch {
        let out = self.client_response(now, msg, &from);
        self.prune();
        out
    }

    fn client_response(&mut self, now: Instant, msg: &Message, from: &Peer) -> ResponseMatch {
        let Some(code) = msg.status().filter(|c| *c >= 100) else {
            return ResponseMatch::Stray;
        };
        let Some(&id) = matching::client_key_of_response(msg)
            .as_ref()
            .and_then(|key| self.client_keys.get(key))
        else {
            return ResponseMatch::Stray;
        };
        self.learn_conn(id, from);
        let timers = self.timers;
        let Some(t) = self.clients.get_mut(&id) else {
            return ResponseMatch::Stray;
        };
        let r = TxnRef::Client(id);
        let reliable = t.peer.transport.is_reliable();
        let mut terminate = false;
        let mut send_cancel = false;
        let event = match (&t.kind, t.state) {
            (ClientKind::Invite(info), ClientState::Calling | ClientState::Proceeding) => {
                if code < 200 {
                    if t.state == ClientState::Calling {
                        // 17.1.1.2: Proceeding; no more retransmissions, and Timer B only
                        // guards the Calling state.
                        t.state = ClientState::Proceeding;
                        t.bytes = Vec::new();
                        t.slots.clear(Slot::Retransmit);
                        t.slots.clear(Slot::Timeout);
                        send_cancel = t.cancel == CancelState::Pending;
                    }
                    Some(ResponseEvent::Provisional(msg.clone()))
                } else if code < 300 {
                    // RFC 6026 section 7.2: Accepted, Timer M.
                    t.state = ClientState::Accepted;
                    t.bytes = Vec::new();
                    t.slots.clear(Slot::Retransmit);
                    t.slots.clear(Slot::Timeout);
                    self.queue
                        .arm(&mut t.slots, r, Slot::Linger, now + timers.t1x64());
                    Some(ResponseEvent::Final(msg.clone()))
                } else {
                    // 17.1.1.2: ACK, Completed, Timer D (zero on reliable transports).
                    let ack = info.ack(msg).encode();
                    t.state = ClientState::Completed;
                    t.slots.clear(Slot::Retransmit);
                    t.slots.clear(Slot::Timeout);
                    if reliable {
                        terminate = true;
                        t.bytes = Vec::new();
                    } else {
                        t.bytes = ack.clone();
                        self.queue
                            .arm(&mut t.slots, r, Slot::Linger, now + timers.d());
                    }
                    self.transmits.push_back(Transmit {
                        peer: t.peer.clone(),
                        data: ack,
                    });
                    Some(ResponseEvent::Final(msg.clone()))
                }
            }
            (ClientKind::Invite(_), ClientState::Accepted) => (200..300)
                .contains(&code)
                .then(|| ResponseEvent::Retransmitted2xx(msg.clone())),
            (ClientKind::Invite(_), ClientState::Completed) => {
                // 17.1.1.2: a retransmitted final is acknowledged again, not passed up.
                if code >= 300 && !t.bytes.is_empty() {
                    self.transmits.push_back(Transmit {
                        peer: t.peer.clone(),
                        data: t.bytes.clone(),
                    });
                }
                None
            }
            (
                ClientKind::NonInvite | ClientKind::Cancel,
                ClientState::Trying | ClientState::Proceeding,
            ) => {
                let internal = matches!(t.kind, ClientKind::Cancel);
                let event = if code < 200 {
                    // 17.1.2.2: Proceeding; Timer E keeps running, at T2 from now on.
                    t.state = ClientState::Proceeding;
                    ResponseEvent::Provisional(msg.clone())
                } else {
                    // 17.1.2.2: Completed, Timer K (T4 on UDP, zero on reliable).
                    t.state = ClientState::Completed;
                    t.bytes = Vec::new();
                    t.slots.clear(Slot::Retransmit);
                    t.slots.clear(Slot::Timeout);
                    if reliable {
                        terminate = true;
                    } else {
                        self.queue
                            .arm(&mut t.slots, r, Slot::Linger, now + timers.t4);
                    }
                    ResponseEvent::Final(msg.clone())
                };
                (!internal).then_some(event)
            }
            // Completed non-INVITE (retransmissions absorbed), and states a response
            // cannot move any more.
            _ => None,
        };
        if send_cancel {
            self.send_cancel(now, id);
        }
        if terminate {
            self.remove_client(id);
        }
        match event {
            Some(e) => ResponseMatch::Matched(ClientTxnId(id), e),
            None => ResponseMatch::Absorbed,
        }
    }

    /// Cancels the INVITE client transaction `id` (section 9.1; 16.10 for proxies): once
    /// a provisional response has arrived a CANCEL is sent as its own non-INVITE client
    /// transaction (its responses are absorbed here); before that the CANCEL waits for
    /// the first provisional; after a final response nothing is sent. Once the CANCEL is
    /// out, the INVITE transaction is given up with [`TxnEvent::ClientTimeout`] if no
    /// final response came within 64*T1 (9.1). Non-INVITE transactions are never
    /// cancelled (9.1: SHOULD NOT).
    pub fn cancel(&mut self, now: Instant, id: ClientTxnId) {
        let Some(t) = self.clients.get_mut(&id.0) else {
            return;
        };
        if !matches!(t.kind, ClientKind::Invite(_)) || t.cancel != CancelState::None {
            return;
        }
        match t.state {
            ClientState::Calling => t.cancel = CancelState::Pending,
            ClientState::Proceeding => self.send_cancel(now, id.0),
            _ => {}
        }
        self.prune();
    }

    fn send_cancel(&mut self, now: Instant, id: u64) {
        let Some(t) = self.clients.get_mut(&id) else {
            return;
        };
        let ClientKind::Invite(info) = &t.kind else {
            return;
        };
        let cancel = info.cancel();
        t.cancel = CancelState::Sent;
        let peer = t.peer.clone();
        self.queue.arm(
            &mut t.slots,
            TxnRef::Client(id),
            Slot::Timeout,
            now + self.timers.t1x64(),
        );
        self.start_client(now, cancel, peer, true);
    }

    /// Over a stream opened for the request, the first response tells which connection
    /// the transaction depends on (for [`TxnLayer::transport_error`], and the ACK and
    /// CANCEL go on it).
    fn learn_conn(&mut self, id: u64, from: &Peer) {
        let Some(conn) = from.conn else {
            return;
        };
        let Some(t) = self.clients.get_mut(&id) else {
            return;
        };
        if t.peer.conn.is_none()
            && t.peer.transport.is_reliable()
            && t.peer.transport == from.transport
            && t.peer.addr == from.addr
        {
            t.peer.conn = Some(conn);
            index_conn(&mut self.by_conn, Some(conn), TxnRef::Client(id));
        }
    }

    // ----------------------------------------------------------------- failures

    /// Connection `conn` failed or closed (sections 17.1.4, 17.2.4, 18.4): client
    /// transactions still waiting for a final response end with
    /// [`TxnEvent::ClientTransportError`], the others silently; server transactions on it
    /// end with [`TxnEvent::ServerTerminated`] (their responses can no longer be
    /// delivered; a proxy then drops them, 16.9).
    pub fn transport_error(&mut self, now: Instant, conn: ConnId) {
        let _ = now;
        let Some(set) = self.by_conn.remove(&conn) else {
            return;
        };
        let mut refs: Vec<TxnRef> = set.into_iter().collect();
        refs.sort_unstable();
        for r in refs {
            match r {
                TxnRef::Server(id) => self.remove_server(id),
                TxnRef::Client(id) => self.fail_client(id),
            }
        }
        self.prune();
    }

    /// Sending to `transport`/`addr` failed (a TCP/TLS connection could not be opened, or
    /// ICMP reported the destination unreachable; sections 17.1.4, 18.4): every client
    /// transaction towards it fails as in [`TxnLayer::transport_error`].
    pub fn destination_unreachable(
        &mut self,
        now: Instant,
        transport: Transport,
        addr: SocketAddr,
    ) {
        let _ = now;
        let Some(set) = self.by_dest.remove(&(transport, addr)) else {
            return;
        };
        let mut ids: Vec<u64> = set.into_iter().collect();
        ids.sort_unstable();
        for id in ids {
            self.fail_client(id);
        }
        self.prune();
    }

    fn fail_client(&mut self, id: u64) {
        if let Some(t) = self.clients.get(&id) {
            if t.awaiting_final() && !matches!(t.kind, ClientKind::Cancel) {
                self.events
                    .push_back(TxnEvent::ClientTransportError(ClientTxnId(id)));
            }
            self.remove_client(id);
        }
    }

    // ----------------------------------------------------------------- output and time

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    /// When [`TxnLayer::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.peek().map(|(at, _, _)| at)
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, txn, slot)) = self.queue.pop_due(now) {
            match txn {
                TxnRef::Server(id) => self.server_timer(now, id, at, slot),
                TxnRef::Client(id) => self.client_timer(now, id, at, slot),
            }
        }
        self.prune();
        self.compact();
    }

    fn server_timer(&mut self, now: Instant, id: u64, at: Instant, slot: Slot) {
        let Some(t) = self.servers.get_mut(&id) else {
            return;
        };
        if t.slots.get(slot) != Some(at) {
            return;
        }
        t.slots.clear(slot);
        match slot {
            Slot::Retransmit => {
                // Timer G (17.2.1): the final response again, interval doubling up to T2.
                if let Some(data) = &t.response {
                    self.transmits.push_back(Transmit {
                        peer: t.peer.clone(),
                        data: data.clone(),
                    });
                }
                t.interval = (t.interval * 2).min(self.timers.t2);
                self.queue.arm(
                    &mut t.slots,
                    TxnRef::Server(id),
                    Slot::Retransmit,
                    now + t.interval,
                );
            }
            Slot::Timeout => {
                // Timer H (17.2.1): no ACK came.
                self.events
                    .push_back(TxnEvent::ServerTimeout(ServerTxnId(id)));
                self.remove_server(id);
            }
            // Timers I, J and L.
            Slot::Linger => self.remove_server(id),
        }
    }

    fn client_timer(&mut self, now: Instant, id: u64, at: Instant, slot: Slot) {
        let timers = self.timers;
        let Some(t) = self.clients.get_mut(&id) else {
            return;
        };
        if t.slots.get(slot) != Some(at) {
            return;
        }
        t.slots.clear(slot);
        match slot {
            Slot::Retransmit => {
                t.interval = match t.state {
                    // Timer A (17.1.1.2): doubles, without a cap.
                    ClientState::Calling => t.interval * 2,
                    // Timer E (17.1.2.2): doubles up to T2 in Trying, T2 in Proceeding.
                    ClientState::Trying => (t.interval * 2).min(timers.t2),
                    ClientState::Proceeding => timers.t2,
                    ClientState::Completed | ClientState::Accepted => return,
                };
                self.transmits.push_back(Transmit {
                    peer: t.peer.clone(),
                    data: t.bytes.clone(),
                });
                self.queue.arm(
                    &mut t.slots,
                    TxnRef::Client(id),
                    Slot::Retransmit,
                    now + t.interval,
                );
            }
            Slot::Timeout => {
                // Timer B or F, or 64*T1 after a CANCEL without a final (9.1).
                if !matches!(t.kind, ClientKind::Cancel) {
                    self.events
                        .push_back(TxnEvent::ClientTimeout(ClientTxnId(id)));
                }
                self.remove_client(id);
            }
            // Timers D, K and M.
            Slot::Linger => self.remove_client(id),
        }
    }

    /// Live (server, client) transactions, for metrics. Client transactions include the
    /// CANCELs the layer sent itself.
    pub fn len(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// Whether no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.clients.is_empty()
    }

    // ----------------------------------------------------------------- bookkeeping

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn remove_server(&mut self, id: u64) {
        let Some(t) = self.servers.remove(&id) else {
            return;
        };
        if self.server_keys.get(&t.key) == Some(&id) {
            self.server_keys.remove(&t.key);
        }
        unindex_conn(&mut self.by_conn, t.peer.conn, TxnRef::Server(id));
        self.events
            .push_back(TxnEvent::ServerTerminated(ServerTxnId(id)));
    }

    fn remove_client(&mut self, id: u64) {
        let Some(t) = self.clients.remove(&id) else {
            return;
        };
        if self.client_keys.get(&t.key) == Some(&id) {
            self.client_keys.remove(&t.key);
        }
        unindex_conn(&mut self.by_conn, t.peer.conn, TxnRef::Client(id));
        let dest = (t.peer.transport, t.peer.addr);
        if let Some(set) = self.by_dest.get_mut(&dest) {
            set.remove(&id);
            if set.is_empty() {
                self.by_dest.remove(&dest);
            }
        }
    }

    /// Drops stale heap entries from the top so [`TxnLayer::poll_timeout`] is exact.
    /// Gives memory back after a burst: hash tables keep their peak capacity otherwise, and
    /// a registrar that absorbed thousands of REGISTERs a second for a minute would hold
    /// that peak for good.
    fn compact(&mut self) {
        fn shrink<K: std::hash::Hash + Eq, V>(m: &mut FxHashMap<K, V>) {
            if m.capacity() > 256 && m.capacity() > 4 * m.len() {
                m.shrink_to_fit();
            }
        }
        shrink(&mut self.servers);
        shrink(&mut self.server_keys);
        shrink(&mut self.clients);
        shrink(&mut self.client_keys);
        shrink(&mut self.by_conn);
        shrink(&mut self.by_dest);
    }

    fn prune(&mut self) {
        while let Some((at, txn, slot)) = self.queue.peek() {
            let live = match txn {
                TxnRef::Server(id) => self
                    .servers
                    .get(&id)
                    .is_some_and(|t| t.slots.get(slot) == Some(at)),
                TxnRef::Client(id) => self
                    .clients
                    .get(&id)
                    .is_some_and(|t| t.slots.get(slot) == Some(at)),
            };
            if live {
                break;
            }
            self.queue.pop();
        }
    }
}

fn index_conn(by_conn: &mut FxHashMap<ConnId, FxHashSet<TxnRef>>, conn: Option<ConnId>, r: TxnRef) {
    if let Some(conn) = conn {
        by_conn.entry(conn).or_default().insert(r);
    }
}

fn unindex_conn(
    by_conn: &mut FxHashMap<ConnId, FxHashSet<TxnRef>>,
    conn: Option<ConnId>,
    r: TxnRef,
) {
    if let Some(conn) = conn {
        if let Some(set) = by_conn.get_mut(&conn) {
            set.remove(&r);
            if set.is_empty() {
                by_conn.remove(&conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timers_are_rfc_3261_table_4() {
        let t = Timers::default();
        assert_eq!(t.t1x64(), Duration::from_secs(32));
        assert_eq!(t.d(), Duration::from_secs(32));
        assert_eq!(t.t4, Duration::from_secs(5));
        let layer = TxnLayer::new(Timers {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::ZERO,
        });
        assert_eq!(layer.timers().t1, Duration::from_millis(1));
        assert_eq!(layer.timers().t2, Duration::from_millis(1));
    }

    #[test]
    fn an_empty_layer_wants_no_timeout() {
        let mut layer = TxnLayer::new(Timers::default());
        assert!(layer.is_empty());
        assert_eq!(layer.len(), (0, 0));
        assert_eq!(layer.poll_timeout(), None);
        layer.handle_timeout(Instant::now());
        layer.transport_error(Instant::now(), 7);
        assert_eq!(layer.poll_transmit(), None);
        assert_eq!(layer.poll_event(), None);
    }
}
