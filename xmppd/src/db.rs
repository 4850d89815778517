//! The database side of xmppd: two tasks on the I/O runtime, so a slow database never
//! stalls the core loop.
//!
//! - [`lookup_task`] answers the server's [`Output::FetchAccount`] (SCRAM secrets at
//!   login) and [`Output::Load`] (a user's roster, offline messages, vCard...), a bounded
//!   number at a time.
//! - [`writer_task`] makes changes durable with group commit: it takes every order waiting
//!   in its queue (up to [`MAX_BATCH_OPS`] changes), applies them in ONE transaction (one
//!   commit, one sync) and reports each order back, so the server acknowledges a stored
//!   offline message, roster push or vCard only once it is on disk. Under load, batches
//!   grow by themselves: while one commits, the next one queues.
//!
//! [`Output::FetchAccount`]: xmpp_proto::server::Output::FetchAccount
//! [`Output::Load`]: xmpp_proto::server::Output::Load

use crate::core_loop::Event;
use crate::metrics::Metrics;
use rtc_store::{ScramRow, Store, XmppOp, XmppSecrets};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tracing::{error, info, warn};
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
#[derive(Debug)]
pub struct StoreOrder {
    pub id: u64,
    pub ops: Vec<StoreOp>,
}

/// Serves lookups until the queue closes.
pub async fn lookup_task(
    store: Store,
    mut rx: mpsc::Receiver<Lookup>,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
) {
    let permits = Arc::new(Semaphore::new(LOOKUP_CONCURRENCY));
    while let Some(req) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let store = store.clone();
        let events = events.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            metrics.db_lookups.inc();
            let answer = match req {
                Lookup::Account { id, host, user } => {
                    let secrets = match store.xmpp().account(&host, &user).await {
                        Ok(a) => a.map(|a| account_secrets(a.secrets)),
                        Err(e) => {
                            // Answered like an unknown account: the login fails and the
                            // client may try again; nothing is changed.
                            warn!("account {user}@{host}: {e}");
                            metrics.db_errors.inc();
                            None
                        }
                    };
                    Event::Account { id, secrets }
                }
                Lookup::Load {
                    id,
                    host,
                    user,
                    store: name,
                    key,
                } => {
                    let items = store
                        .xmpp()
                        .load(&host, &user, &name, key.as_deref())
                        .await
                        .map_err(|e| {
                            warn!("loading {name} of {user}@{host}: {e}");
                            metrics.db_errors.inc();
                        });
                    Event::Loaded { id, items }
                }
            };
            let _ = events.send(answer).await;
        });
    }
}

/// Commits changes in batches until every sender is gone and the queue is empty: on
/// shutdown, everything queued is committed before this returns.
pub async fn writer_task(
    store: Store,
    mut rx: mpsc::Receiver<StoreOrder>,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::default();
        batch.push(first);
        while batch.ops.len() < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(order) => batch.push(order),
                Err(_) => break,
            }
        }
        batch.commit(&store, &events, &metrics).await;
    }
    info!("storage writer: every queued change is committed");
}

/// Orders gathered for one transaction.
#[derive(Default)]
struct Batch {
    /// Each order's id and how many of `ops` are its.
    orders: Vec<(u64, usize)>,
    ops: Vec<XmppOp>,
}

impl Batch {
    fn push(&mut self, order: StoreOrder) {
        self.orders.push((order.id, order.ops.len()));
        self.ops.extend(order.ops.into_iter().map(store_op));
    }

    async fn commit(self, store: &Store, events: &mpsc::Sender<Event>, metrics: &Metrics) {
        let ok = apply(store, &self.ops, metrics).await;
        if ok || self.orders.len() == 1 {
            let ids = self.orders.iter().map(|(id, _)| *id).collect();
            let _ = events.send(Event::Stored { ids, ok }).await;
            return;
        }
        // One bad order (a value the database refuses) must not fail the others that
        // happened to share its transaction: retry each order alone.
        warn!(
            "retrying {} storage orders one at a time",
            self.orders.len()
        );
        let mut start = 0;
        for (id, len) in self.orders {
            let ok = apply(store, &self.ops[start..start + len], metrics).await;
            start += len;
            let _ = events.send(Event::Stored { ids: vec![id], ok }).await;
        }
    }
}

/// One transaction; errors are logged and counted.
async fn apply(store: &Store, ops: &[XmppOp], metrics: &Metrics) -> bool {
    match store.xmpp().apply(ops).await {
        Ok(()) => {
            metrics.db_batches.inc();
            true
        }
        Err(e) => {
            error!("{e}");
            metrics.db_errors.inc();
            false
        }
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
