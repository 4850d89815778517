//! TCP relaying (RFC 6062): TCP allocations reach peers through TCP connections, each
//! carried to the client on a separate data connection bound with ConnectionBind.
//!
//! The core keeps the bookkeeping (which connection belongs to which allocation, whether
//! it waits for a ConnectionBind, the 30-second bind timer); the daemon owns the sockets
//! and, once bound, copies bytes between the two connections without the core.

use super::{AuthResult, ClientTuple, ConnectionId, Output, Reject, Server, Transmit, Transport};
use crate::attr;
use crate::message::{method, Class, IntegrityKind, Message, MessageBuilder};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 6062 §5.3/§5.4: a peer connection waits this long for the client's ConnectionBind.
const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// Peer connections one allocation may have (RFC 6062 sets no number; a browser's TURN
/// TCP allocation carries one or two).
const MAX_CONNECTIONS_PER_ALLOCATION: usize = 128;
/// Peer connections one server core may have.
const MAX_CONNECTIONS: usize = 16_384;

#[derive(Debug)]
pub(super) struct TcpConnection {
    allocation: ClientTuple,
    peer: SocketAddr,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Outbound connect in progress; the Connect response waits for it.
    Connecting { tid: [u8; 12], fingerprint: bool },
    /// Connected; waiting for ConnectionBind until the deadline.
    AwaitingBind { deadline: Instant },
    /// Spliced to this client data connection.
    Bound(ClientTuple),
}

impl Server {
    /// Peer connections hold file descriptors: bounded per allocation and per shard so
    /// one party cannot exhaust them.
    fn tcp_capacity(&self, allocation: &ClientTuple) -> bool {
        self.tcp_conns.len() < MAX_CONNECTIONS
            && self
                .tcp_conns
                .values()
                .filter(|c| c.allocation == *allocation)
                .count()
                < MAX_CONNECTIONS_PER_ALLOCATION
    }

    fn new_connection_id(&mut self) -> ConnectionId {
        loop {
            let t = self.new_reservation_token();
            let id = u32::from_be_bytes([t[0], t[1], t[2], t[3]]);
            if id != 0 && !self.tcp_conns.contains_key(&id) {
                return id;
            }
        }
    }

    /// Connect (RFC 6062 §5.2).
    pub(super) fn connect(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
    ) -> Result<(), Reject> {
        let Some(auth) = self.auth_for_allocation(now, from, msg)? else {
            return Ok(());
        };
        let alloc = self
            .allocations
            .get(&from)
            .expect("checked by auth_for_allocation");
        if !alloc.tcp {
            return Err(Reject::new(400, "Not a TCP allocation").signed(&auth));
        }
        let peer = msg
            .xor_addresses(attr::XOR_PEER_ADDRESS)
            .next()
            .flatten()
            .ok_or_else(|| Reject::new(400, "Missing XOR-PEER-ADDRESS").signed(&auth))?;
        self.check_peer(alloc, peer).map_err(|r| r.signed(&auth))?;
        if alloc.permissions.get(&peer.ip()).is_none_or(|&e| e <= now) {
            return Err(Reject::new(403, "No permission for peer").signed(&auth));
        }
        if self
            .tcp_conns
            .values()
            .any(|c| c.allocation == from && c.peer == peer)
        {
            return Err(Reject::new(446, "Connection Already Exists").signed(&auth));
        }
        if !self.tcp_capacity(&from) {
            return Err(Reject::new(508, "Insufficient Capacity").signed(&auth));
        }
        let relay = alloc.relays[0].id;
        let id = self.new_connection_id();
        self.tcp_conns.insert(
            id,
            TcpConnection {
                allocation: from,
                peer,
                state: State::Connecting {
                    tid: msg.transaction_id(),
                    fingerprint: msg.has_fingerprint(),
                },
            },
        );
        self.outputs
            .push_back(Output::ConnectPeer { relay, peer, id });
        Ok(())
    }

    /// The answer to [`Output::ConnectPeer`]: the daemon's outbound connection for `id`
    /// finished (`ok`) or failed. Answers the Connect request (success with CONNECTION-ID,
    /// or 447 Connection Timeout or Failure). If the allocation went away meanwhile, a
    /// connected socket is not wanted: [`Output::CloseConnection`] follows.
    pub fn handle_peer_connected(&mut self, now: Instant, id: ConnectionId, ok: bool) {
        let unwanted = |s: &mut Server| {
            if ok {
                s.outputs.push_back(Output::CloseConnection(id));
            }
        };
        let Some(conn) = self.tcp_conns.get_mut(&id) else {
            return unwanted(self);
        };
        let State::Connecting { tid, fingerprint } = conn.state else {
            return unwanted(self);
        };
        let to = conn.allocation;
        let (key, kind) = match self.allocations.get(&to) {
            Some(a) => (a.key.clone(), a.integrity),
            None => {
                self.tcp_conns.remove(&id);
                return unwanted(self);
            }
        };
        let mut b = if ok {
            conn.state = State::AwaitingBind {
                deadline: now + BIND_TIMEOUT,
            };
            let mut b = MessageBuilder::new(method::CONNECT, Class::Success, tid);
            b.u32_attr(attr::CONNECTION_ID, id);
            b
        } else {
            self.tcp_conns.remove(&id);
            *self.stats.errors.entry(447).or_default() += 1;
            let mut b = MessageBuilder::new(method::CONNECT, Class::Error, tid);
            b.error_code(447, "Connection Timeout or Failure");
            b
        };
        self.sign(&mut b, &key, kind, fingerprint);
        self.transmits.push_back(Transmit {
            to,
            from: None,
            data: b.finish(),
        });
    }

    /// SOFTWARE, integrity and FINGERPRINT for a response sent after the request's turn.
    fn sign(&self, b: &mut MessageBuilder, key: &[u8], kind: IntegrityKind, fingerprint: bool) {
        if let Some(s) = &self.config.software {
            b.attr(attr::SOFTWARE, s.as_bytes());
        }
        if !self.config.no_auth {
            b.integrity(kind, key);
        }
        if fingerprint {
            b.fingerprint();
        }
    }

    /// A peer connected to the relayed address of TCP allocation `relay` (RFC 6062 §5.3).
    /// Returns the connection id to keep the socket under, or `None` to close it (no
    /// permission, not a TCP allocation).
    pub fn handle_peer_connection(
        &mut self,
        now: Instant,
        relay: super::RelayId,
        peer: SocketAddr,
    ) -> Option<ConnectionId> {
        let tuple = *self.by_relay.get(&relay)?;
        let alloc = self.allocations.get(&tuple)?;
        let permitted = alloc.permissions.get(&peer.ip()).is_some_and(|&e| e > now);
        if !alloc.tcp
            || !permitted
            || !self.peer_policy.permits(peer.ip())
            || !self.tcp_capacity(&tuple)
        {
            self.stats.relay_dropped += 1;
            return None;
        }
        let id = self.new_connection_id();
        self.tcp_conns.insert(
            id,
            TcpConnection {
                allocation: tuple,
                peer,
                state: State::AwaitingBind {
                    deadline: now + BIND_TIMEOUT,
                },
            },
        );
        let tid = self.new_tid();
        let mut b = MessageBuilder::new(method::CONNECTION_ATTEMPT, Class::Indication, tid);
        b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        b.u32_attr(attr::CONNECTION_ID, id);
        self.transmits.push_back(Transmit {
            to: tuple,
            from: None,
            data: b.finish(),
        });
        Some(id)
    }

    /// ConnectionBind (RFC 6062 §5.4), on a new client data connection.
    pub(super) fn connection_bind(
        &mut self,
        now: Instant,
        from: ClientTuple,
        msg: &Message<'_>,
    ) -> Result<(), Reject> {
        // Verify with the key of the allocation that owns the connection, so a bind never
        // waits for a database lookup (the splice must follow the response at once).
        let owner = msg
            .get_u32(attr::CONNECTION_ID)
            .and_then(|id| self.tcp_conns.get(&id))
            .map_or(from, |c| c.allocation);
        let auth = match self.authenticate(now, from, owner, msg) {
            AuthResult::Ok(a) => a,
            AuthResult::Reject(r) => return Err(r),
            AuthResult::Parked => return Ok(()),
        };
        if !matches!(from.transport, Transport::Tcp | Transport::Tls)
            || self.allocations.contains_key(&from)
        {
            return Err(
                Reject::new(400, "ConnectionBind needs a fresh TCP connection").signed(&auth),
            );
        }
        let id = msg
            .get_u32(attr::CONNECTION_ID)
            .ok_or_else(|| Reject::new(400, "Missing CONNECTION-ID").signed(&auth))?;
        let Some(conn) = self.tcp_conns.get_mut(&id) else {
            return Err(Reject::new(400, "Unknown CONNECTION-ID").signed(&auth));
        };
        if !matches!(conn.state, State::AwaitingBind { .. }) {
            return Err(Reject::new(400, "Connection not awaiting a bind").signed(&auth));
        }
        let owner = self
            .allocations
            .get(&conn.allocation)
            .map(|a| a.username.as_str());
        if owner != Some(auth.user.as_str()) {
            return Err(Reject::new(441, "Wrong Credentials").signed(&auth));
        }
        conn.state = State::Bound(from);
        let b = MessageBuilder::new(
            method::CONNECTION_BIND,
            Class::Success,
            msg.transaction_id(),
        );
        self.success(from, msg, &auth, b);
        self.outputs.push_back(Output::Splice { id, data: from });
        Ok(())
    }

    /// The daemon closed peer connection `id` (either side hung up).
    pub fn handle_connection_closed(&mut self, _now: Instant, id: ConnectionId) {
        self.tcp_conns.remove(&id);
    }

    pub(super) fn close_connections_of(&mut self, allocation: &ClientTuple) {
        let ids: Vec<ConnectionId> = self
            .tcp_conns
            .iter()
            .filter(|(_, c)| c.allocation == *allocation)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.tcp_conns.remove(&id);
            self.outputs.push_back(Output::CloseConnection(id));
        }
    }

    pub(super) fn data_connection_closed(&mut self, data: &ClientTuple) {
        let ids: Vec<ConnectionId> = self
            .tcp_conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Bound(t) if t == *data))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.tcp_conns.remove(&id);
            self.outputs.push_back(Output::CloseConnection(id));
        }
    }

    /// Peer connections nobody bound within 30 seconds are closed (RFC 6062 §5.3).
    pub(super) fn expire_connections(&mut self, now: Instant) {
        let ids: Vec<ConnectionId> = self
            .tcp_conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::AwaitingBind { deadline } if deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.tcp_conns.remove(&id);
            self.outputs.push_back(Output::CloseConnection(id));
        }
    }

    /// Number of RFC 6062 peer connections (any state).
    pub fn tcp_connection_count(&self) -> usize {
        self.tcp_conns.len()
    }
}
