//! Database reads (credentials, accounts, stored items) served beside the core: a bounded
//! number at a time, each answered back to the core as an event by the daemon's closure.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// What a daemon's database tasks share: its store, the way back to its core loop, its
/// counters. Cheap to clone (handles only).
#[derive(Debug)]
pub struct Db<S, E, M> {
    pub store: S,
    pub events: mpsc::Sender<E>,
    pub metrics: Arc<M>,
}

impl<S: Clone, E, M> Clone for Db<S, E, M> {
    fn clone(&self) -> Self {
        Db {
            store: self.store.clone(),
            events: self.events.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Serves requests from `rx` until it closes with `answer(ctx.clone(), request)`, at most
/// `concurrency` at once (the database pool has a few connections, and the storage writer
/// needs one of them). While all are busy, requests wait in `rx`: its bound is what makes
/// the core refuse or drop new ones.
pub async fn serve<R, C, F, Fut>(mut rx: mpsc::Receiver<R>, concurrency: usize, ctx: C, answer: F)
where
    C: Clone,
    F: Fn(C, R) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some(req) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let work = answer(ctx.clone(), req);
        tokio::spawn(async move {
            let _permit = permit;
            work.await;
        });
    }
}
