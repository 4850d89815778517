//! The core loop: the one place xmppd calls into the protocol [`Server`]. It runs on the
//! core thread (`rtc_daemon::core`, which drives it turn by turn) and owns the server and
//! the sending side of every connection. Nothing else touches the server, so it needs no
//! lock.
//!
//! Each turn waits for the first of:
//! - an [`Event`]: bytes or a TLS upgrade or a close from a connection task (`conn.rs`),
//!   an account or a store loaded (lookup task), a batch committed (writer task); up to
//!   `EVENT_BURST` of them are handled in a row; a reload or shutdown comes from the main
//!   thread;
//! - the server's next timer ([`Server::poll_timeout`]) or the one-second metrics tick;
//!
//! and then drains [`Server::poll_output`]: bytes go to the connection's queue, TLS
//! upgrades and closes to the connection task, account and store lookups to the lookup
//! task, and storage changes to the writer, whose answer ([`Server::stored`]) is what lets
//! the server acknowledge what it stored (an offline message is durable before the sender
//! hears it was received). Storage work passes the [`Sequencer`] on its way, which keeps
//! it in the server's order for each user. Last, every connection whose chunk was handled
//! this turn is told to read on (see `conn.rs`: reading is in lock-step with the core),
//! with the pause the server's `c2s-rate` accounting asks for.

use crate::conn::{ConnCmd, ConnHandle};
use crate::db::{Lookup, StoreOrder, WriterCmd};
use crate::metrics::Metrics;
use crate::sequencer::{Sequencer, Work};
use rtc_daemon::core::since_epoch;
use rtc_store::StoreError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use xmpp_proto::server::{
    AccountSecrets, CloseReason, Config as ServerConfig, ConnId, ConnKind, Framing, Output, Role,
    Server, Stats, StoreFailed, TlsInfo,
};

/// Everything that reaches the core loop from other tasks.
#[derive(Debug)]
pub enum Event {
    /// An accepted connection (after its TLS handshake on a direct-TLS port, with `tls`).
    Opened {
        id: ConnId,
        kind: ConnKind,
        peer: SocketAddr,
        conn: ConnHandle,
        tls: Option<TlsInfo>,
    },
    /// Bytes read (decrypted) from a connection.
    Data {
        id: ConnId,
        data: Vec<u8>,
    },
    /// The handshake after `<proceed/>` completed.
    TlsEstablished {
        id: ConnId,
        info: TlsInfo,
    },
    Closed {
        id: ConnId,
        reason: CloseReason,
    },
    /// An account lookup finished (`Ok(None)`: no such account).
    Account {
        id: u64,
        host: String,
        user: String,
        found: Result<Option<AccountSecrets>, StoreError>,
    },
    /// A store load finished.
    Loaded {
        id: u64,
        items: Result<Vec<(String, String)>, StoreError>,
    },
    /// Store orders committed (or not).
    Stored {
        ids: Vec<u64>,
        ok: bool,
    },
}

/// Settings a reload hands the core loop.
#[derive(Debug)]
pub struct Reload {
    pub server: ServerConfig,
    /// `ConnLimits::write_queue`.
    pub write_queue: usize,
}

/// What the core loop is started with.
pub struct Setup {
    pub server: ServerConfig,
    pub write_queue: usize,
    pub metrics: Arc<Metrics>,
    pub lookups: mpsc::Sender<Lookup>,
    pub writer: mpsc::Sender<WriterCmd>,
}

impl XmppLoop {
    /// Makes the loop on the core thread: the server, with the calendar time set.
    pub fn new(setup: Setup) -> XmppLoop {
        let now = Instant::now();
        let mut server = Server::new(setup.server, rand::random());
        server.set_wall_clock(now, since_epoch());
        XmppLoop {
            server,
            conns: HashMap::new(),
            resume: Vec::new(),
            sequencer: Sequencer::default(),
            write_queue: setup.write_queue,
            metrics: setup.metrics,
            lookups: setup.lookups,
            writer: setup.writer,
            outstanding: 0,
            published: Stats::default(),
            now,
        }
    }
}

/// A connection as the core loop knows it.
struct Conn {
    handle: ConnHandle,
    /// Told to start TLS or to close: its task reads on by itself after the handshake,
    /// or never, so it gets no `Resume`.
    no_resume: bool,
}

pub struct XmppLoop {
    server: Server,
    conns: HashMap<ConnId, Conn>,
    /// Connections that delivered a chunk this turn and wait for the verdict.
    resume: Vec<ConnId>,
    sequencer: Sequencer,
    write_queue: usize,
    metrics: Arc<Metrics>,
    lookups: mpsc::Sender<Lookup>,
    writer: mpsc::Sender<WriterCmd>,
    /// Store orders polled from the server and not yet confirmed.
    outstanding: usize,
    published: Stats,
    /// Clock reading of the current turn: one per burst, not one per event.
    now: Instant,
}

impl rtc_daemon::core::CoreLoop for XmppLoop {
    type Event = Event;
    type Reload = Box<Reload>;

    fn clock(&mut self) -> Instant {
        self.now = Instant::now();
        self.now
    }

    fn handle_event(&mut self, ev: Event, shutting_down: bool) {
        self.event(ev, shutting_down);
    }

    fn reload(&mut self, r: Box<Reload>) {
        let Reload {
            server,
            write_queue,
        } = *r;
        let domains: Vec<String> = server.vhosts.iter().map(|v| v.domain.clone()).collect();
        self.write_queue = write_queue;
        self.server.update_config(self.now, server);
        info!("configuration reloaded: serving {}", domains.join(", "));
    }

    fn begin_shutdown(&mut self) {
        // Every stream gets `system-shutdown` (RFC 6120 4.9.3.19) and every session ends,
        // so unacknowledged messages are stored offline before the writer is drained.
        self.server.shutdown(self.now);
        info!(
            "shutting down: {} storage batches to commit",
            self.outstanding
        );
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    fn handle_timeout(&mut self) {
        self.server.handle_timeout(self.now);
    }

    /// Once a second: metrics, and the calendar time for the server's delay stamps.
    fn housekeeping(&mut self) {
        self.server.set_wall_clock(self.now, since_epoch());
        self.publish_metrics();
    }

    fn drain(&mut self) {
        self.drain_output();
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }

    fn finish(&mut self) {
        self.drain_output();
        self.publish_metrics();
    }
}

impl XmppLoop {
    fn event(&mut self, ev: Event, shutting_down: bool) {
        let now = self.now;
        match ev {
            Event::Opened {
                id,
                kind,
                peer,
                conn,
                tls,
            } => {
                if shutting_down {
                    conn.command(ConnCmd::Close);
                    return;
                }
                self.conns.insert(
                    id,
                    Conn {
                        handle: conn,
                        no_resume: false,
                    },
                );
                self.server.handle_connection_opened(
                    now,
                    id,
                    kind,
                    Framing::Stream,
                    Role::Client,
                    peer,
                );
                if let Some(info) = tls {
                    self.server.handle_tls_established(now, id, info);
                }
            }
            Event::Data { id, data } => {
                // While shutting down, nothing new is taken in: what it would ask to store
                // could not be confirmed any more.
                if shutting_down {
                    return;
                }
                if !self.conns.contains_key(&id) {
                    return;
                }
                self.resume.push(id);
                self.server.handle_data(now, id, &data);
            }
            Event::TlsEstablished { id, info } => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.no_resume = false;
                    self.server.handle_tls_established(now, id, info);
                }
            }
            Event::Closed { id, reason } => {
                if self.conns.remove(&id).is_some() {
                    self.server.handle_connection_closed(now, id, reason);
                }
            }
            Event::Account {
                id,
                host,
                user,
                found,
            } => {
                self.finished(id);
                // A database failure is logged as what it is and reaches the core as
                // one: the login gets temporary-auth-failure, not a wrong password.
                let secrets = found.map_err(|e| {
                    warn!("account {user}@{host}: database error: {e}");
                    StoreFailed
                });
                self.server.handle_account_loaded(now, id, secrets);
            }
            Event::Loaded { id, items } => {
                self.finished(id);
                self.server
                    .handle_loaded(now, id, items.map_err(|_| StoreFailed));
            }
            Event::Stored { ids, ok } => {
                for id in ids {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    self.finished(id);
                    let result = if ok { Ok(()) } else { Err(StoreFailed) };
                    self.server.handle_stored(now, id, result);
                }
            }
        }
    }

    /// Carries out everything the server asked for, including what answering it asks next,
    /// then gives the connections whose chunk was handled their verdict.
    fn drain_output(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Send { conn, data } => {
                    let Some(c) = self.conns.get(&conn) else {
                        continue;
                    };
                    if !c.handle.send(data, self.write_queue) {
                        self.metrics.write_overflows.inc();
                        debug!(
                            "connection {conn}: more than {} bytes of output waiting, closing",
                            self.write_queue
                        );
                    }
                }
                Output::StartTls { conn } => self.tell(conn, ConnCmd::StartTls),
                Output::Close { conn } => self.tell(conn, ConnCmd::Close),
                Output::FetchAccount { id, host, user } => {
                    self.submit(Work::Read(Lookup::Account { id, host, user }))
                }
                Output::Load {
                    id,
                    host,
                    user,
                    store,
                    key,
                } => self.submit(Work::Read(Lookup::Load {
                    id,
                    host,
                    user,
                    store,
                    key,
                })),
                Output::Store { id, ops } => {
                    self.outstanding += 1;
                    self.submit(Work::Write(StoreOrder { id, ops }));
                }
            }
        }
        for id in self.resume.drain(..) {
            if let Some(c) = self.conns.get(&id) {
                if !c.no_resume {
                    let until = self.server.read_paused_until(id);
                    c.handle.command(ConnCmd::Resume(until));
                }
            }
        }
    }

    /// `StartTls` or `Close` for a connection; either ends its lock-step turn.
    fn tell(&mut self, conn: ConnId, cmd: ConnCmd) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.no_resume = true;
            c.handle.command(cmd);
        }
    }

    /// Storage work from the server: dispatched now, or when the sequencer releases it.
    fn submit(&mut self, work: Work) {
        if let Some(work) = self.sequencer.submit(work) {
            self.dispatch(work);
        }
    }

    /// Work `id` is answered: dispatch what was waiting for it.
    fn finished(&mut self, id: u64) {
        for work in self.sequencer.done(id) {
            self.dispatch(work);
        }
    }

    /// Hands work to the lookup task or the writer. When their queue is full the database
    /// is far behind: the work fails now (a login fails, a load or a change reports an
    /// error) rather than waiting without bound.
    fn dispatch(&mut self, work: Work) {
        let now = self.now;
        let mut pending = vec![work];
        while let Some(work) = pending.pop() {
            let id = match work {
                Work::Read(lookup) => match self.lookups.try_send(lookup) {
                    Ok(()) => continue,
                    Err(e) => {
                        warn!("database lookup queue full: failing a lookup");
                        self.metrics.db_errors.inc();
                        match e.into_inner() {
                            Lookup::Account { id, .. } => {
                                self.server.handle_account_loaded(now, id, Err(StoreFailed));
                                id
                            }
                            Lookup::Load { id, .. } => {
                                self.server.handle_loaded(now, id, Err(StoreFailed));
                                id
                            }
                        }
                    }
                },
                Work::Write(order) => match self.writer.try_send(WriterCmd::Store(order)) {
                    Ok(()) => continue,
                    Err(e) => {
                        error!("storage writer queue full: failing a change");
                        self.metrics.db_errors.inc();
                        let WriterCmd::Store(StoreOrder { id, .. }) = e.into_inner();
                        self.outstanding = self.outstanding.saturating_sub(1);
                        self.server.handle_stored(now, id, Err(StoreFailed));
                        id
                    }
                },
            };
            // What the failure released goes the same way (a loop, not recursion: a
            // full queue fails everything behind it too).
            let mut released = self.sequencer.done(id);
            released.reverse();
            pending.extend(released);
        }
    }

    fn publish_metrics(&mut self) {
        let stats = self.server.stats();
        self.metrics.publish(&self.published, &stats);
        self.published = stats;
    }
}
