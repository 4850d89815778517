//! The database side of sipd: two tasks on the I/O runtime, so a slow database never
//! stalls the core loop.
//!
//! - [`credentials_task`] answers [`Output::FetchCredentials`](sip_proto::core::Output)
//!   lookups from Kamailio's `subscriber` table, a bounded number at a time; the core loop
//!   caches the answers.
//! - [`location_writer`] makes binding changes durable with group commit: it takes every
//!   order waiting in its queue (up to [`MAX_BATCH_OPS`] changes), applies them in ONE
//!   transaction (one commit, one sync) and reports each order back, so the core releases
//!   the REGISTERs' 200 OKs only for what is on disk. Under load, batches grow by
//!   themselves: while one commits, the next one queues. The same task re-reads the table
//!   on SIGHUP (after committing what was queued before) and purges expired rows.

use crate::core_loop::{unix_now, Event};
use crate::metrics::Metrics;
use rtc_store::{LocationOp, LocationRow, SipCredentials, Store};
use sip_proto::core::{Binding, BindingOp, Credentials};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tracing::{error, info, warn};

/// Changes committed in one transaction at most.
pub const MAX_BATCH_OPS: usize = 1000;
/// Lookups running against the database at once (the pool has 8 connections; the
/// location writer needs one).
const LOOKUP_CONCURRENCY: usize = 6;
/// How often expired rows are deleted. The core expires bindings in memory on its own; this
/// keeps rows of bindings that expired while sipd was down, or that another registrar
/// sharing the table left behind, from piling up.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// A credential lookup for the database task.
#[derive(Debug)]
pub struct Lookup {
    pub username: String,
    pub domain: String,
}

/// Work for the location writer.
#[derive(Debug)]
pub enum WriterCmd {
    /// Make `ops` durable and answer [`Event::Stored`] with `id`.
    Store { id: u64, ops: Vec<BindingOp> },
    /// Commit what is queued before this, then re-read every binding ([`Event::Bindings`]).
    ReloadBindings,
}

/// Serves credential lookups until the queue closes.
pub async fn credentials_task(
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
            let (creds, cache) = match store.sip().credentials(&req.username, &req.domain).await {
                Ok(c) => (c.map(core_credentials), true),
                Err(e) => {
                    warn!("credentials of {}@{}: {e}", req.username, req.domain);
                    metrics.db_errors.inc();
                    (None, false)
                }
            };
            let _ = events
                .send(Event::Credentials {
                    username: req.username,
                    domain: req.domain,
                    creds,
                    cache,
                })
                .await;
        });
    }
}

/// What the core checks digests with. `ha1b` (for clients that put `user@domain` in the
/// digest username) is not used: the core authenticates the plain user name.
fn core_credentials(c: SipCredentials) -> Credentials {
    Credentials {
        ha1_md5: c.ha1_md5,
        ha1_sha256: c.ha1_sha256,
    }
}

/// Commits location changes in batches until every sender is gone and the queue is empty:
/// on shutdown, everything queued is committed before this returns.
pub async fn location_writer(
    store: Store,
    mut rx: mpsc::Receiver<WriterCmd>,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
) {
    let mut purge = tokio::time::interval(PURGE_EVERY);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; start-up has just purged.
    purge.tick().await;
    loop {
        let first = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => break,
            },
            _ = purge.tick() => {
                let ops = [LocationOp::PurgeExpired { now_unix: unix_now() }];
                apply(&store, &ops, &metrics).await;
                continue;
            }
        };
        let mut batch = Batch::default();
        let mut reload = false;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                WriterCmd::Store { id, ops } => batch.push(id, ops),
                WriterCmd::ReloadBindings => {
                    reload = true;
                    break;
                }
            }
            if batch.ops.len() >= MAX_BATCH_OPS {
                break;
            }
            next = rx.try_recv().ok();
        }
        batch.commit(&store, &events, &metrics).await;
        if reload {
            match store.sip().load_locations().await {
                Ok(rows) => {
                    let now = unix_now();
                    let bindings = rows
                        .into_iter()
                        .filter(|r| r.is_live(now))
                        .map(binding_from_row)
                        .collect();
                    let _ = events.send(Event::Bindings(bindings)).await;
                }
                Err(e) => {
                    error!("reloading bindings: {e}; keeping the ones in memory");
                    metrics.db_errors.inc();
                }
            }
        }
    }
    info!("location writer: every queued change is committed");
}

/// Orders gathered for one transaction.
#[derive(Default)]
struct Batch {
    /// Each order's id and how many of `ops` are its.
    orders: Vec<(u64, usize)>,
    ops: Vec<LocationOp>,
}

impl Batch {
    fn push(&mut self, id: u64, ops: Vec<BindingOp>) {
        self.orders.push((id, ops.len()));
        self.ops.extend(ops.into_iter().map(location_op));
    }

    async fn commit(self, store: &Store, events: &mpsc::Sender<Event>, metrics: &Metrics) {
        if self.orders.is_empty() {
            return;
        }
        let ok = apply(store, &self.ops, metrics).await;
        if ok || self.orders.len() == 1 {
            let ids = self.orders.iter().map(|(id, _)| *id).collect();
            let _ = events.send(Event::Stored { ids, ok }).await;
            return;
        }
        // One bad order (a value the database refuses) must not fail the REGISTERs that
        // happened to share its transaction: retry each order alone.
        warn!(
            "retrying {} location changes one REGISTER at a time",
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
async fn apply(store: &Store, ops: &[LocationOp], metrics: &Metrics) -> bool {
    match store.sip().apply_location_batch(ops).await {
        Ok(()) => {
            metrics.db_batches.inc();
            metrics.db_batch_ops.add(ops.len() as u64);
            true
        }
        Err(e) => {
            error!("{e}");
            metrics.db_errors.inc();
            false
        }
    }
}

fn location_op(op: BindingOp) -> LocationOp {
    match op {
        BindingOp::Upsert(b) => LocationOp::Upsert(row_from_binding(*b)),
        BindingOp::Delete { ruid } => LocationOp::Delete { ruid },
    }
}

/// A binding as Kamailio's `usrloc` writes it: q as a float, unused Kamailio columns at
/// their defaults, `connection_id` -1 for UDP like Kamailio.
pub fn row_from_binding(b: Binding) -> LocationRow {
    LocationRow {
        ruid: b.ruid,
        username: b.username,
        domain: (!b.domain.is_empty()).then_some(b.domain),
        contact: b.contact,
        received: b.received,
        path: b.path,
        expires: b.expires,
        q: f32::from(b.q) / 1000.0,
        callid: b.call_id,
        cseq: i32::try_from(b.cseq).unwrap_or(i32::MAX),
        user_agent: b.user_agent,
        socket: b.socket,
        instance: b.instance,
        reg_id: i32::try_from(b.reg_id).unwrap_or(i32::MAX),
        last_modified: b.last_modified,
        connection_id: b.conn.and_then(|c| i32::try_from(c).ok()).unwrap_or(-1),
        ..LocationRow::default()
    }
}

/// A row read back. Kamailio's q of -1 ("not given") reads as 1.0, the default RFC 3261
/// leaves to the registrar; connections do not survive a restart, so `conn` is `None`.
pub fn binding_from_row(r: LocationRow) -> Binding {
    let q = if r.q < 0.0 {
        1000
    } else {
        (r.q.min(1.0) * 1000.0).round() as u16
    };
    Binding {
        ruid: r.ruid,
        username: r.username,
        domain: r.domain.unwrap_or_default(),
        contact: r.contact,
        received: r.received,
        path: r.path,
        expires: r.expires,
        q,
        call_id: r.callid,
        cseq: u32::try_from(r.cseq).unwrap_or(0),
        user_agent: r.user_agent,
        socket: r.socket,
        instance: r.instance,
        reg_id: u32::try_from(r.reg_id).unwrap_or(0),
        last_modified: r.last_modified,
        conn: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            ruid: "uloc-1".into(),
            username: "alice".into(),
            domain: "example.org".into(),
            contact: "sip:alice@192.0.2.1:5060;transport=tcp".into(),
            received: Some("sip:198.51.100.7:40000;transport=tcp".into()),
            path: Some("<sip:edge.example.org;lr>".into()),
            expires: 1_900_000_000,
            q: 500,
            call_id: "c1@host".into(),
            cseq: 42,
            user_agent: "Phone/1.0".into(),
            socket: Some("tcp:192.0.2.10:5060".into()),
            instance: Some("<urn:uuid:00000000-0000-0000-0000-000000000001>".into()),
            reg_id: 1,
            last_modified: 1_800_000_000,
            conn: Some(7),
        }
    }

    #[test]
    fn bindings_round_trip_through_location_rows() {
        let b = binding();
        let row = row_from_binding(b.clone());
        assert_eq!(row.q, 0.5);
        assert_eq!(row.domain.as_deref(), Some("example.org"));
        assert_eq!(row.connection_id, 7);
        assert_eq!(row.cseq, 42);
        let back = binding_from_row(row);
        assert_eq!(back, Binding { conn: None, ..b });
    }

    #[test]
    fn kamailio_rows_are_read_sensibly() {
        let row = LocationRow {
            q: -1.0,
            cseq: -5,
            reg_id: 0,
            domain: None,
            ..row_from_binding(binding())
        };
        let b = binding_from_row(row);
        assert_eq!((b.q, b.cseq, b.domain.as_str()), (1000, 0, ""));
        let row = LocationRow {
            q: 0.333,
            ..row_from_binding(binding())
        };
        assert_eq!(binding_from_row(row).q, 333);
        let udp = row_from_binding(Binding {
            conn: None,
            q: 1000,
            ..binding()
        });
        assert_eq!((udp.connection_id, udp.q), (-1, 1.0));
    }
}
