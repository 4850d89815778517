//! Database reads (credentials, accounts, stored items) served beside the core: a bounded
//! number at a time, each answered back to the core as an event by the daemon's closure.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// Serves requests from `rx` until it closes, at most `concurrency` at once (the database
/// pool has a few connections, and the storage writer needs one of them). While all are
/// busy, requests wait in `rx`: its bound is what makes the core refuse or drop new ones.
pub async fn serve<R, F, Fut>(mut rx: mpsc::Receiver<R>, concurrency: usize, answer: F)
where
    F: Fn(R) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    while let Some(req) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let work = answer(req);
        tokio::spawn(async move {
            let _permit = permit;
            work.await;
        });
    }
}
