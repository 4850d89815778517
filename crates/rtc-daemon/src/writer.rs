//! The group-commit storage writer.
//!
//! A core emits storage orders (a binding to save, an offline message to keep) and only
//! acknowledges what they stand for (a REGISTER's 200 OK, an XEP-0198 `<a h>`) once the
//! order is reported committed. The writer takes every order waiting in its queue, up to a
//! batch limit, into ONE transaction (one commit, one sync) and reports each order's
//! result, so thousands of orders a second cost a few fsyncs: under load, batches grow by
//! themselves while the previous one commits.
//!
//! A failed commit fails every order of its batch; when the batch held several, each is
//! then retried alone, so one order the database refuses does not fail the others that
//! happened to share its transaction.
//!
//! The writer is one task per process with an order kept per queue, not per database:
//! several nodes sharing one database each run their own, and the database orders their
//! transactions.

use rtc_metrics::Counter;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// One order: its id (answered in the report) and its changes.
#[derive(Debug)]
pub struct Order<O> {
    pub id: u64,
    pub ops: Vec<O>,
}

/// What the writer's queue carries.
#[derive(Debug)]
pub enum Cmd<O, B> {
    /// Make the order durable and report it.
    Store(Order<O>),
    /// Commit everything queued before this, then run [`Backend::barrier`] with it (sipd
    /// re-reads its bindings this way, after its own changes are in).
    Barrier(B),
}

/// The daemon's side of the writer: how its orders become rows and how a transaction is
/// applied.
pub trait Backend: Send + 'static {
    /// A change as the core emits it.
    type Op: Send + 'static;
    /// The same change as the store applies it.
    type Row: Send + Sync;
    type Barrier: Send + 'static;
    type Error: Display + Send;

    fn row(op: Self::Op) -> Self::Row;

    /// Applies `rows` in one transaction.
    fn apply(&mut self, rows: &[Self::Row])
        -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// See [`Cmd::Barrier`]; nothing by default.
    fn barrier(&mut self, b: Self::Barrier) -> impl Future<Output = ()> + Send {
        let _ = b;
        async {}
    }

    /// Rows to apply every [`Config::period`] (sipd purges expired bindings).
    fn periodic(&mut self) -> Vec<Self::Row> {
        Vec::new()
    }
}

/// Counters the writer keeps.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Transactions committed.
    pub batches: Arc<Counter>,
    /// Rows committed, if the daemon counts them.
    pub rows: Option<Arc<Counter>>,
    /// Transactions that failed.
    pub errors: Arc<Counter>,
}

/// Where the writer tells the core how orders ended: `stored(ids, ok)` sent on `events`.
#[derive(Debug, Clone)]
pub struct Report<E> {
    pub events: mpsc::Sender<E>,
    pub stored: fn(Vec<u64>, bool) -> E,
}

impl<E> Report<E> {
    async fn send(&self, ids: Vec<u64>, ok: bool) {
        let _ = self.events.send((self.stored)(ids, ok)).await;
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Names the writer in its log lines ("location writer").
    pub name: &'static str,
    /// Rows in one transaction at most (an order is never split).
    pub max_batch: usize,
    /// How often [`Backend::periodic`] runs, if at all.
    pub period: Option<Duration>,
    pub metrics: Metrics,
}

/// The sending side of a writer's queue.
pub type Queue<B> = mpsc::Sender<Cmd<<B as Backend>::Op, <B as Backend>::Barrier>>;

/// The running writer task.
#[derive(Debug)]
pub struct WriterTask {
    name: &'static str,
    join: JoinHandle<()>,
}

/// Starts the writer on the current runtime with a queue of `queue` commands.
pub fn spawn<B: Backend, E: Send + 'static>(
    backend: B,
    queue: usize,
    config: Config,
    report: Report<E>,
) -> (Queue<B>, WriterTask) {
    let (tx, rx) = mpsc::channel(queue);
    let name = config.name;
    let join = tokio::spawn(run(backend, rx, config, report));
    (tx, WriterTask { name, join })
}

impl WriterTask {
    /// Waits up to `limit` for the writer to commit what is queued; it ends once every
    /// sender is dropped and the queue is empty.
    pub async fn finish(self, limit: Duration) {
        if tokio::time::timeout(limit, self.join).await.is_err() {
            warn!(
                "{} did not finish in time; uncommitted changes are lost",
                self.name
            );
        }
    }
}

/// Commits orders in batches until every sender is gone and the queue is empty: on
/// shutdown, everything queued is committed before this returns.
pub async fn run<B: Backend, E>(
    mut backend: B,
    mut rx: mpsc::Receiver<Cmd<B::Op, B::Barrier>>,
    config: Config,
    report: Report<E>,
) {
    let mut period = config.period.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let first = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => break,
            },
            _ = async { period.as_mut().unwrap().tick().await }, if period.is_some() => {
                let rows = backend.periodic();
                if !rows.is_empty() {
                    apply(&mut backend, &rows, &config.metrics).await;
                }
                continue;
            }
        };
        let mut batch = Batch::default();
        let mut barrier = None;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Store(order) => batch.push::<B>(order),
                Cmd::Barrier(b) => {
                    barrier = Some(b);
                    break;
                }
            }
            if batch.rows.len() >= config.max_batch {
                break;
            }
            next = rx.try_recv().ok();
        }
        batch.commit(&mut backend, &config, &report).await;
        if let Some(b) = barrier {
            backend.barrier(b).await;
        }
    }
    info!("{}: every queued change is committed", config.name);
}

/// Orders gathered for one transaction.
struct Batch<R> {
    /// Each order's id and how many of `rows` are its.
    orders: Vec<(u64, usize)>,
    rows: Vec<R>,
}

impl<R> Default for Batch<R> {
    fn default() -> Self {
        Batch {
            orders: Vec::new(),
            rows: Vec::new(),
        }
    }
}

impl<R: Send + Sync> Batch<R> {
    fn push<B: Backend<Row = R>>(&mut self, order: Order<B::Op>) {
        self.orders.push((order.id, order.ops.len()));
        self.rows.extend(order.ops.into_iter().map(B::row));
    }

    async fn commit<B: Backend<Row = R>, E>(
        self,
        backend: &mut B,
        config: &Config,
        report: &Report<E>,
    ) {
        if self.orders.is_empty() {
            return;
        }
        let ok = apply(backend, &self.rows, &config.metrics).await;
        if ok || self.orders.len() == 1 {
            let ids = self.orders.iter().map(|(id, _)| *id).collect();
            report.send(ids, ok).await;
            return;
        }
        warn!(
            "{}: retrying {} orders one at a time",
            config.name,
            self.orders.len()
        );
        let mut start = 0;
        for (id, len) in self.orders {
            let ok = apply(backend, &self.rows[start..start + len], &config.metrics).await;
            start += len;
            report.send(vec![id], ok).await;
        }
    }
}

/// One transaction; errors are logged and counted.
async fn apply<B: Backend>(backend: &mut B, rows: &[B::Row], m: &Metrics) -> bool {
    match backend.apply(rows).await {
        Ok(()) => {
            m.batches.inc();
            if let Some(c) = &m.rows {
                c.add(rows.len() as u64);
            }
            true
        }
        Err(e) => {
            error!("{e}");
            m.errors.inc();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Rows are numbers; a transaction holding 13 fails. Reports and transactions are
    /// recorded.
    #[derive(Clone, Default)]
    struct Fake {
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Backend for Fake {
        type Op = u32;
        type Row = u32;
        type Barrier = &'static str;
        type Error = String;

        fn row(op: u32) -> u32 {
            op
        }

        async fn apply(&mut self, rows: &[u32]) -> Result<(), String> {
            let ok = !rows.contains(&13);
            self.log.lock().unwrap().push(format!("tx {rows:?} {ok}"));
            if ok {
                Ok(())
            } else {
                Err("13 refused".into())
            }
        }

        async fn barrier(&mut self, b: &'static str) {
            self.log.lock().unwrap().push(format!("barrier {b}"));
        }
    }

    fn config(max_batch: usize) -> Config {
        Config {
            name: "test writer",
            max_batch,
            period: None,
            metrics: Metrics {
                batches: Arc::default(),
                rows: Some(Arc::default()),
                errors: Arc::default(),
            },
        }
    }

    /// Runs the writer over `cmds`, all queued before it starts (so one batch takes what
    /// fits); the transactions and barriers in order, and the reports in order.
    async fn run_with(
        cmds: Vec<Cmd<u32, &'static str>>,
        max_batch: usize,
    ) -> (Vec<String>, Vec<String>) {
        let fake = Fake::default();
        let (tx, rx) = mpsc::channel(100);
        for c in cmds {
            tx.send(c).await.unwrap();
        }
        drop(tx);
        let (events, mut reports) = mpsc::channel(100);
        let report = Report {
            events,
            stored: |ids, ok| format!("{ids:?} {ok}"),
        };
        run(fake.clone(), rx, config(max_batch), report).await;
        let mut sent = Vec::new();
        while let Ok(r) = reports.try_recv() {
            sent.push(r);
        }
        let log = fake.log.lock().unwrap().clone();
        (log, sent)
    }

    fn store(id: u64, ops: &[u32]) -> Cmd<u32, &'static str> {
        Cmd::Store(Order {
            id,
            ops: ops.to_vec(),
        })
    }

    #[tokio::test]
    async fn queued_orders_share_one_transaction_up_to_the_limit() {
        let (log, reports) =
            run_with(vec![store(1, &[1, 2]), store(2, &[3]), store(3, &[4])], 3).await;
        assert_eq!(log, ["tx [1, 2, 3] true", "tx [4] true"]);
        assert_eq!(reports, ["[1, 2] true", "[3] true"]);
    }

    #[tokio::test]
    async fn a_failed_batch_is_retried_order_by_order() {
        let (log, reports) =
            run_with(vec![store(1, &[1]), store(2, &[13]), store(3, &[3])], 10).await;
        assert_eq!(
            log,
            [
                "tx [1, 13, 3] false",
                "tx [1] true",
                "tx [13] false",
                "tx [3] true"
            ]
        );
        assert_eq!(reports, ["[1] true", "[2] false", "[3] true"]);
    }

    #[tokio::test]
    async fn a_barrier_runs_after_what_was_queued_before_it() {
        let (log, reports) = run_with(
            vec![store(1, &[1]), Cmd::Barrier("reload"), store(2, &[2])],
            10,
        )
        .await;
        assert_eq!(log, ["tx [1] true", "barrier reload", "tx [2] true"]);
        assert_eq!(reports, ["[1] true", "[2] true"]);
    }
}
