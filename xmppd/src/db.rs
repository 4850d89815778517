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

/// What the database tasks share.
pub type Db = rtc_daemon::lookup::Db<Store, Event, Metrics>;

/// Serves lookups until the queue closes, [`LOOKUP_CONCURRENCY`] at a time.
pub async fn lookup_task(db: Db, rx: mpsc::Receiver<Lookup>) {
    rtc_daemon::lookup::serve(rx, LOOKUP_CONCURRENCY, db, answer).await
}

/// One lookup. A database failure reaches the core loop as one, never as "no such
/// account" or "nothing stored".
async fn answer(db: Db, req: Lookup) {
    db.metrics.db_lookups.inc();
    let answer = match req {
        Lookup::Account { id, host, user } => {
            let found = db.store.xmpp().account(&host, &user).await;
            if found.is_err() {
                db.metrics.db_errors.inc();
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
            store,
            key,
        } => {
            let items = db
                .store
                .xmpp()
                .load(&host, &user, &store, key.as_deref())
                .await;
            if let Err(e) = &items {
                tracing::warn!("loading {store} of {user}@{host}: {e}");
                db.metrics.db_errors.inc();
            }
            Event::Loaded { id, items }
        }
    };
    let _ = db.events.send(answer).await;
}

/// Starts the storage writer: changes group-committed (see `rtc_daemon::writer`), so the
/// server acknowledges a stored offline message, roster push or vCard only once it is on
/// disk. It ends once every sender is gone and the queue is committed.
pub fn spawn_writer(db: Db, queue: usize) -> (mpsc::Sender<WriterCmd>, writer::WriterTask) {
    let config = writer::Config {
        name: "storage writer",
        max_batch: MAX_BATCH_OPS,
        period: None,
        metrics: writer::Metrics {
            batches: db.metrics.db_batches.clone(),
            rows: None,
            errors: db.metrics.db_errors.clone(),
        },
    };
    let report = writer::Report {
        events: db.events,
        stored: |ids, ok| Event::Stored { ids, ok },
    };
    writer::spawn(Writer { store: db.store }, queue, config, report)
}

struct Writer {
    store: Store,
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
