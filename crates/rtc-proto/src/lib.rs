//! The one contract shared by the suite's sans-IO protocol cores (`stun-proto`,
//! `sip-proto`, `xmpp-proto`), so that one daemon shell can drive any of them.
//!
//! # The shape (quinn-proto's)
//!
//! A core owns no socket, reads no clock and draws no randomness (a seed is passed in at
//! construction). Its daemon drives it with four kinds of calls:
//!
//! 1. **Input**: `handle_*` methods, each taking `now: Instant` first: bytes received
//!    (`handle_data`, `handle_datagram`...), a connection opened or closed, and the answer
//!    to an order the core gave earlier (`handle_stored`, `handle_loaded`...).
//! 2. **Output**: after *every* input call, the daemon calls [`ProtocolCore::poll_output`]
//!    until it returns `None` and carries each order out (send, store, look up, resolve,
//!    close). Orders that need an answer carry an id; the answer comes back as an input.
//!    Orders must be executed in the order they were polled where they touch the same
//!    thing (storage of one user, one connection's bytes).
//! 3. **Timers**: then it asks [`ProtocolCore::poll_timeout`] for the earliest deadline
//!    and calls [`ProtocolCore::handle_timeout`] once that instant has passed (calling it
//!    early is harmless), then polls output again.
//! 4. **Wall clock**: [`ProtocolCore::set_wall_clock`] at start and from time to time
//!    (every few seconds is plenty); the core derives calendar time from its
//!    [`WallClock`] and the monotonic `now` it is given, so a clock step is picked up at
//!    the next call and a test can run days of virtual time without sleeping.
//!
//! In short, per event: `handle_*(now, ..)` -> drain `poll_output()` -> re-arm the timer
//! at `poll_timeout()`; on the timer: `handle_timeout(now)` -> drain -> re-arm.
//!
//! A core never assumes it holds all state of the service: anything another node of a
//! cluster could change (a location binding, a user's roster, a TURN quota) is loaded
//! through an order and may be refreshed by an input, so several nodes can share one
//! database and exchange events over NATS or Redis (see `ARCHITECTURE.md`).

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// Identifies one connection (TCP, TLS, WebSocket...) for the lifetime of a daemon
/// process; given by the daemon when it reports the connection opened, never reused.
pub type ConnId = u64;

/// Why a connection went away, as the daemon reports it to a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side (FIN or TLS close_notify).
    Eof,
    /// A read or write failed (reset, TLS error, time-out in the daemon).
    Error,
}

/// The calendar anchor a core derives wall-clock time from: the `since_epoch` reading of
/// the system clock taken at the monotonic instant `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    at: Instant,
    since_epoch: Duration,
}

impl WallClock {
    /// `since_epoch` is `SystemTime::now().duration_since(UNIX_EPOCH)` read at `at`.
    pub fn new(at: Instant, since_epoch: Duration) -> WallClock {
        WallClock { at, since_epoch }
    }

    /// Time since the Unix epoch at `now` (before the anchor: the anchor's reading).
    pub fn since_epoch(&self, now: Instant) -> Duration {
        self.since_epoch + now.saturating_duration_since(self.at)
    }

    /// Whole seconds since the Unix epoch at `now`.
    pub fn unix(&self, now: Instant) -> u64 {
        self.since_epoch(now).as_secs()
    }
}

/// The verbs every protocol core shares; the input methods (`handle_*`) are each core's
/// own, since what comes in differs. See the crate documentation for the polling order.
pub trait ProtocolCore {
    /// What the daemon must carry out: transmits, storage orders, look-ups, closes.
    type Output;

    /// The next order, `None` when there is nothing left to do until the next input.
    fn poll_output(&mut self) -> Option<Self::Output>;

    /// The earliest instant at which [`ProtocolCore::handle_timeout`] has work to do.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Runs every timer due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// Re-anchors calendar time; see [`WallClock`].
    fn set_wall_clock(&mut self, now: Instant, since_epoch: Duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_follows_the_monotonic_clock_from_its_anchor() {
        let t0 = Instant::now();
        let w = WallClock::new(t0 + Duration::from_secs(10), Duration::from_secs(1_000));
        assert_eq!(w.unix(t0 + Duration::from_secs(10)), 1_000);
        assert_eq!(
            w.since_epoch(t0 + Duration::from_millis(12_500)),
            Duration::from_millis(1_002_500)
        );
        // An instant before the anchor reads as the anchor, never earlier.
        assert_eq!(w.unix(t0), 1_000);
    }
}
