//! The database side of xmppd: two tasks on the I/O runtime, so a slow database never
//! stalls the core loop.
//!
//! - [`lookup_task`] answers the server's [`Output::FetchAccount`] (SCRAM secrets at
//!   login) and [`Output::Load`] (a user's roster, offline messages, vCard...), a bounded
//!   number at a time.
//! - the storage writer ([`spawn_writer`], `rtc_daemon::writer`) makes changes durable
//!   with group commit (up to [`MAX_BATCH_OPS`] changes in ONE transaction), so the server
//!   acknowledges a stored offline message, roster push or vCard only once it is on
//!   disk.
//!
//! [`Output::FetchAccount`]: xmpp_proto::server::Output::FetchAccount
//! [`Output::Load`]: xmpp_proto::server::Output::Load

use crate::core_loop::Event;
use crate::metrics::Metrics;
use rtc_daemon::writer::{self, Backend};
use rtc_store::{ScramRow, Store, StoreError, XmppOp, XmppSecrets};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;
use xmpp_proto::server::{AccountSecrets, ScramSecrets, StoreOp};

/// Changes committed in one transaction at most.
pub const MAX_BATCH_OPS: usize = 1000;
/// Lookups running against the database at once (the pool has 8 connections; the
/// writer needs one).
const LOOKUP_CONCURRENCY: usize = 6;

/// A read for the lookup task.
#[derive(Debug)]
pub enum Lookup {
    Account {
        id: u64,
        host: String,
        user: String,
    },
    Load {
        id: u64,
        host: String,
        user: String,
        store: String,
        key: Option<String>,
    },
}

/// Changes for the writer, answered with [`Event::Stored`] under `id`.
pub type StoreOrder = writer::Order<StoreOp>;

/// What the writer's queue carries (xmppd has no barrier).
pub type WriterCmd = writer::Cmd<StoreOp, Infallible>;

/// Serves lookups until the queue closes. A database failure reaches the core loop as
/// one, never as "no such account" or "nothing stored".
pub async fn lookup_task(
    store: Store,
    rx: mpsc::Receiver<Lookup>,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
) {
    rtc_daemon::lookup::serve(rx, LOOKUP_CONCURRENCY, move |req: Lookup| {
        let (store, events, metrics) = (store.clone(), events.clone(), metrics.clone());
        async move {
            metrics.db_lookups.inc();
            let answer = match req {
                Lookup::Account { id, host, user } => {
                    let found = store.xmpp().account(&host, &user).await;
                    if found.is_err() {
                        metrics.db_errors.inc();
                    }
                    let found = found.map(|a| a.map(|a| account_secrets(a.secrets)));
                    Event::Account {
                        id,
                        host,
                        user,
                        found,
                    }
                }
                Lookup::Load {
                    id,
                    host,
                    user,
                    store: name,
                    key,
                } => {
                    let items = store.xmpp().load(&host, &user, &name, key.as_deref()).await;
                    if let Err(e) = &items {
                        tracing::warn!("loading {name} of {user}@{host}: {e}");
                        metrics.db_errors.inc();
                    }
                    Event::Loaded { id, items }
                }
            };
            let _ = events.send(answer).await;
        }
    })
    .await
}

/// Starts the storage writer: changes group-committed (see `rtc_daemon::writer`), so the
/// server acknowledges a stored offline message, roster push or vCard only once it is on
/// disk. It ends once every sender is gone and the queue is committed.
pub fn spawn_writer(
    store: Store,
    queue: usize,
    events: mpsc::Sender<Event>,
    metrics: &Metrics,
) -> (mpsc::Sender<WriterCmd>, writer::WriterTask) {
    let config = writer::Config {
        name: "storage writer",
        max_batch: MAX_BATCH_OPS,
        period: None,
        metrics: writer::Metrics {
            batches: metrics.db_batches.clone(),
            rows: None,
            errors: metrics.db_errors.clone(),
        },
    };
    writer::spawn(Writer { store, events }, queue, config)
}

struct Writer {
    store: Store,
    events: mpsc::Sender<Event>,
}

impl Backend for Writer {
    type Op = StoreOp;
    type Row = XmppOp;
    type Barrier = Infallible;
    type Error = StoreError;

    fn row(op: StoreOp) -> XmppOp {
        store_op(op)
    }

    async fn apply(&mut self, rows: &[XmppOp]) -> Result<(), StoreError> {
        self.store.xmpp().apply(rows).await
    }

    async fn report(&mut self, ids: Vec<u64>, ok: bool) {
        let _ = self.events.send(Event::Stored { ids, ok }).await;
    }

    async fn barrier(&mut self, never: Infallible) {
        match never {}
    }
}

/// The server's storage order as a row operation.
fn store_op(op: StoreOp) -> XmppOp {
    match op {
        StoreOp::Put {
            host,
            user,
            store,
            key,
            value,
        } => XmppOp::Put {
            host,
            user,
            store,
            key,
            value,
        },
        StoreOp::Delete {
            host,
            user,
            store,
            key,
        } => XmppOp::Delete {
            host,
            user,
            store,
            key,
        },
        StoreOp::DeleteAll { host, user, store } => XmppOp::DeleteAll { host, user, store },
        StoreOp::PutAccount {
            host,
            user,
            secrets,
        } => XmppOp::PutAccount {
            host,
            user,
            secrets: XmppSecrets {
                sha1: secrets.sha1.map(scram_row),
                sha256: secrets.sha256.map(scram_row),
            },
        },
        StoreOp::DeleteAccount { host, user } => XmppOp::DeleteAccount { host, user },
    }
}

fn scram_row(s: ScramSecrets) -> ScramRow {
    ScramRow {
        salt: s.salt,
        iterations: s.iterations,
        stored_key: s.stored_key,
        server_key: s.server_key,
    }
}

/// A stored account's secrets as the server checks them.
fn account_secrets(a: XmppSecrets) -> AccountSecrets {
    let scram = |s: ScramRow| ScramSecrets {
        salt: s.salt,
        iterations: s.iterations,
        stored_key: s.stored_key,
        server_key: s.server_key,
    };
    AccountSecrets {
        sha1: a.sha1.map(scram),
        sha256: a.sha256.map(scram),
    }
}
