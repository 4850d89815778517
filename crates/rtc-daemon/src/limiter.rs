//! Connection limits (all connections, and inbound ones per source address) and the accept
//! loop that applies them.
//!
//! A slot is taken before a connection costs anything (no task, no TLS handshake) and given
//! back when its [`ConnSlot`] drops, wherever the connection ends. The limits can change at
//! run time (SIGHUP); connections already open keep their slot.

use rtc_metrics::{Counter, Gauge};
use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// First wait after a failed `accept` (out of descriptors, mostly); doubled per failure in
/// a row up to [`ACCEPT_BACKOFF_MAX`], so a lasting failure neither spins nor stalls long
/// once descriptors are free again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The limits; `max_per_ip` 0 is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections at most, inbound and outbound together.
    pub max_connections: usize,
    /// Inbound connections per source address.
    pub max_per_ip: u32,
}

/// Counts connections against [`Limits`]. Per process: in a cluster each node protects its
/// own descriptors and memory.
#[derive(Debug)]
pub struct ConnLimiter {
    limits: RwLock<Limits>,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// Open connections, for `/metrics`.
    open: Option<Arc<Gauge>>,
}

/// One connection's slot; released on drop.
#[derive(Debug)]
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    ip: Option<IpAddr>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limiter.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(g) = &self.limiter.open {
            g.dec();
        }
        if let Some(ip) = self.ip {
            let mut map = self.limiter.lock();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl ConnLimiter {
    /// `open` is kept at the number of slots held, if given.
    pub fn new(limits: Limits, open: Option<Arc<Gauge>>) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            limits: RwLock::new(limits),
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            open,
        })
    }

    /// Only a per-address limit (turnd's TCP and TLS clients: their number is bounded by
    /// the allocations they may make).
    pub fn per_ip(max_per_ip: u32) -> Arc<ConnLimiter> {
        ConnLimiter::new(
            Limits {
                max_connections: usize::MAX,
                max_per_ip,
            },
            None,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.per_ip.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// New limits (SIGHUP), for the next connections.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(PoisonError::into_inner) = limits;
    }

    /// A slot for one more connection, or `None` at a limit. `inbound_from` is the peer of
    /// an accepted connection (counted against the per-address limit); an outgoing one
    /// passes `None`.
    pub fn acquire(self: &Arc<Self>, inbound_from: Option<IpAddr>) -> Option<ConnSlot> {
        let limits = self.limits();
        let mut map = inbound_from.map(|_| self.lock());
        if let (Some(map), Some(ip)) = (map.as_mut(), inbound_from) {
            let n = map.get(&ip).copied().unwrap_or(0);
            if limits.max_per_ip > 0 && n >= limits.max_per_ip {
                return None;
            }
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        if let (Some(map), Some(ip)) = (map.as_mut(), inbound_from) {
            *map.entry(ip).or_insert(0) += 1;
        }
        if let Some(g) = &self.open {
            g.inc();
        }
        Some(ConnSlot {
            limiter: self.clone(),
            ip: inbound_from,
        })
    }

    /// [`ConnLimiter::acquire`] for an accepted connection from `ip`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        self.acquire(Some(ip))
    }
}

/// Accepts connections on `listener` until the process exits. A connection over a limit is
/// closed at once and counted in `refused`; the others go to `serve` with their slot.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    limiter: Arc<ConnLimiter>,
    refused: Arc<Counter>,
    mut serve: impl FnMut(TcpStream, SocketAddr, ConnSlot),
) {
    let local = listener.local_addr().ok();
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("listener {local:?}: {e}");
            return;
        }
    };
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => {
                backoff = ACCEPT_BACKOFF;
                x
            }
            Err(e) => {
                // Out of descriptors, mostly: wait for connections to close.
                warn!("accept on {local:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let Some(slot) = limiter.acquire(Some(remote.ip())) else {
            debug!("{remote}: connection refused (tcp-max-connections or per-address limit)");
            refused.inc();
            continue;
        };
        let _ = tcp.set_nodelay(true);
        serve(tcp, remote, slot);
    }
}

/// A TLS handshake (`handshake`, a server accept) within `limit`; a failure or time-out is
/// counted in `failures`, logged at debug level (a scanner's garbage is no news), and
/// `None`.
pub async fn tls_handshake<T, E: Display>(
    handshake: impl Future<Output = Result<T, E>>,
    limit: Duration,
    remote: SocketAddr,
    failures: &Counter,
) -> Option<T> {
    match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            failures.inc();
            debug!("{remote}: TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            failures.inc();
            debug!("{remote}: TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_per_address_limits_and_release_on_drop() {
        let gauge = Arc::new(Gauge::default());
        let l = ConnLimiter::new(
            Limits {
                max_connections: 3,
                max_per_ip: 2,
            },
            Some(gauge.clone()),
        );
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let a1 = l.acquire(Some(a)).unwrap();
        let _a2 = l.acquire(Some(a)).unwrap();
        assert!(l.acquire(Some(a)).is_none(), "per-address limit");
        let out = l.acquire(None).unwrap();
        assert!(l.acquire(Some(b)).is_none(), "global limit");
        assert!(l.acquire(None).is_none(), "global limit, outgoing");
        assert_eq!(gauge.get(), 3);
        drop(a1);
        drop(out);
        assert_eq!(gauge.get(), 1);
        let _b1 = l.acquire(Some(b)).unwrap();
        let _a3 = l.acquire(Some(a)).unwrap();
        assert!(l.acquire(Some(a)).is_none());
        // New limits apply to the next connection.
        l.set_limits(Limits {
            max_connections: 10,
            max_per_ip: 0,
        });
        let _a4 = l.acquire(Some(a)).unwrap();
    }

    #[test]
    fn refused_attempts_leave_no_trace() {
        let l = ConnLimiter::per_ip(1);
        let a: IpAddr = [192, 0, 2, 1].into();
        let s = l.try_acquire(a).unwrap();
        for _ in 0..5 {
            assert!(l.try_acquire(a).is_none());
        }
        drop(s);
        assert!(l.lock().is_empty());
        assert!(l.try_acquire(a).is_some());
    }
}
