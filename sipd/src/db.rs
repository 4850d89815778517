//! The database side of sipd: two tasks on the I/O runtime, so a slow database never
//! stalls the core loop.
//!
//! - [`credentials_task`] answers [`Output::FetchCredentials`](sip_proto::core::Output)
//!   lookups from Kamailio's `subscriber` table, a bounded number at a time; the core loop
//!   caches the answers.
//! - the location writer ([`spawn_location_writer`], `rtc_daemon::writer`) makes binding
//!   changes durable with group commit (up to [`MAX_BATCH_OPS`] changes in ONE
//!   transaction), so the core releases the REGISTERs' 200 OKs only for what is on disk.
//!   The same task re-reads the table on SIGHUP (after committing what was queued before)
//!   and purges expired rows.

use crate::core_loop::{unix_now, Event};
use crate::metrics::Metrics;
use rtc_daemon::writer::{self, Backend};
use rtc_store::{LocationOp, LocationRow, SipCredentials, Store, StoreError};
use sip_proto::core::{Binding, BindingOp, Credentials};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::error;

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

/// Commit what is queued before this, then re-read every binding ([`Event::Bindings`]).
#[derive(Debug)]
pub struct ReloadBindings;

/// Work for the location writer: a [`Store`](sip_proto::core::Output::Store) order, made
/// durable and answered with [`Event::Stored`], or [`ReloadBindings`].
pub type WriterCmd = writer::Cmd<BindingOp, ReloadBindings>;

/// What the database tasks share.
pub type Db = rtc_daemon::lookup::Db<Store, Event, Metrics>;

/// Serves credential lookups until the queue closes, [`LOOKUP_CONCURRENCY`] at a time.
pub async fn credentials_task(db: Db, rx: mpsc::Receiver<Lookup>) {
    rtc_daemon::lookup::serve(rx, LOOKUP_CONCURRENCY, db, credentials).await
}

/// One lookup. A database failure is answered as one, never as "no such subscriber".
async fn credentials(db: Db, req: Lookup) {
    db.metrics.db_lookups.inc();
    let found = db.store.sip().credentials(&req.username, &req.domain).await;
    if found.is_err() {
        db.metrics.db_errors.inc();
    }
    let _ = db
        .events
        .send(Event::Credentials {
            username: req.username,
            domain: req.domain,
            found: found.map(|c| c.map(core_credentials)),
        })
        .await;
}

/// What the core checks digests with. `ha1b` (for clients that put `user@domain` in the
/// digest username) is not used: the core authenticates the plain user name.
fn core_credentials(c: SipCredentials) -> Credentials {
    Credentials {
        ha1_md5: c.ha1_md5,
        ha1_sha256: c.ha1_sha256,
    }
}

/// Starts the location writer: binding changes group-committed to Kamailio's `location`
/// table (see `rtc_daemon::writer`), expired rows purged every [`PURGE_EVERY`], bindings
/// re-read on [`ReloadBindings`]. It ends once every sender is gone and the queue is
/// committed.
pub fn spawn_location_writer(
    db: Db,
    queue: usize,
) -> (mpsc::Sender<WriterCmd>, writer::WriterTask) {
    let config = writer::Config {
        name: "location writer",
        max_batch: MAX_BATCH_OPS,
        period: Some(PURGE_EVERY),
        metrics: writer::Metrics {
            batches: db.metrics.db_batches.clone(),
            rows: Some(db.metrics.db_batch_ops.clone()),
            errors: db.metrics.db_errors.clone(),
        },
    };
    let report = writer::Report {
        events: db.events.clone(),
        stored: |ids, ok| Event::Stored { ids, ok },
    };
    writer::spawn(Locations(db), queue, config, report)
}

/// The location writer's side of `rtc_daemon::writer`.
struct Locations(Db);

impl Backend for Locations {
    type Op = BindingOp;
    type Row = LocationOp;
    type Barrier = ReloadBindings;
    type Error = StoreError;

    fn row(op: BindingOp) -> LocationOp {
        location_op(op)
    }

    async fn apply(&mut self, rows: &[LocationOp]) -> Result<(), StoreError> {
        self.0.store.sip().apply_location_batch(rows).await
    }

    async fn barrier(&mut self, _: ReloadBindings) {
        match self.0.store.sip().load_locations().await {
            Ok(rows) => {
                let now = unix_now();
                let bindings = rows
                    .into_iter()
                    .filter(|r| r.is_live(now))
                    .map(binding_from_row)
                    .collect();
                let _ = self.0.events.send(Event::Bindings(bindings)).await;
            }
            Err(e) => {
                error!("reloading bindings: {e}; keeping the ones in memory");
                self.0.metrics.db_errors.inc();
            }
        }
    }

    fn periodic(&mut self) -> Vec<LocationOp> {
        vec![LocationOp::PurgeExpired {
            now_unix: unix_now(),
        }]
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
