//! The core thread: one OS thread with a current-thread runtime that owns a daemon's
//! protocol core, so the core needs no lock, and the generic loop that drives it.
//!
//! Each turn of [`drive`] waits for the first of:
//! - a control message from the main thread ([`Control`]: reload, shutdown);
//! - an event from the I/O runtime (bytes from a connection task, a database answer),
//!   then up to [`EVENT_BURST`] more without waiting;
//! - input the loop itself owns ([`CoreLoop::poll_readable`]: sipd's UDP sockets);
//! - the core's next timer ([`CoreLoop::poll_timeout`]) or the housekeeping tick;
//!
//! then runs the timers that are due, the housekeeping once per [`TICK`], and drains the
//! core's output ([`CoreLoop::drain`]) — `rtc-proto`'s polling order. The clock is read
//! once per turn, not once per message.
//!
//! On shutdown the loop stops taking new input, keeps turning until every storage order
//! it handed out is confirmed (or [`SHUTDOWN_GRACE`] passes), so what the core
//! acknowledged is on disk, and ends.

use anyhow::{anyhow, bail, Context as _};
use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Events handled per turn before the output is drained.
pub const EVENT_BURST: usize = 256;
/// Housekeeping period: metrics, the wall clock, caches.
pub const TICK: Duration = Duration::from_secs(1);
/// On shutdown, how long to wait for the storage writer to confirm what is queued.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The daemon's side of the core loop: its protocol core and the state around it
/// (connections, caches). All calls come from the core thread.
pub trait CoreLoop {
    /// What the I/O runtime sends the core.
    type Event: Send + 'static;
    /// Settings a reload hands the core.
    type Reload: Send + 'static;

    /// Reads the monotonic clock for this turn (calendar time goes to the core through
    /// `set_wall_clock` in [`CoreLoop::housekeeping`]).
    fn clock(&mut self) -> Instant;

    /// One event; while `shutting_down`, new input is refused (what it would ask to store
    /// could not be confirmed any more) but answers are still taken.
    fn handle_event(&mut self, ev: Self::Event, shutting_down: bool);

    fn reload(&mut self, settings: Self::Reload);

    /// The shutdown request arrived (once).
    fn begin_shutdown(&mut self);

    /// The core's next timer.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Runs the core's timers due at the turn's clock reading.
    fn handle_timeout(&mut self);

    /// Once per [`TICK`].
    fn housekeeping(&mut self);

    /// Carries out everything the core asked for.
    fn drain(&mut self);

    /// Storage orders handed out and not yet confirmed.
    fn outstanding(&self) -> usize;

    /// After the last turn.
    fn finish(&mut self) {
        self.drain();
        self.housekeeping();
    }

    /// Input the loop owns itself, ready: its index. Never ready by default.
    fn poll_readable(&self, _cx: &mut Context<'_>) -> Poll<usize> {
        Poll::Pending
    }

    /// Reads the input [`CoreLoop::poll_readable`] found ready.
    fn read_ready(&mut self, _input: usize) {}
}

/// From the main thread to the core loop.
#[derive(Debug)]
pub enum Control<R> {
    Reload(R),
    Shutdown,
}

/// The main thread's handle on the core thread.
#[derive(Debug)]
pub struct CoreHandle<R> {
    what: &'static str,
    control: mpsc::Sender<Control<R>>,
    /// Resolves (with an error) when the core thread ends, normally or by a panic.
    done: oneshot::Receiver<()>,
}

/// Starts the core thread `{name}-core`. `build` runs on it, inside its runtime (so it may
/// register sockets), and makes the loop; this returns once it has, or with its error.
/// `what` names the core in messages ("SIP").
pub fn spawn<L, F>(
    name: &str,
    what: &'static str,
    events: mpsc::Receiver<L::Event>,
    build: F,
) -> anyhow::Result<CoreHandle<L::Reload>>
where
    L: CoreLoop + 'static,
    F: FnOnce() -> anyhow::Result<L> + Send + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let (done_tx, done) = oneshot::channel::<()>();
    let (control, control_rx) = mpsc::channel(16);
    let thread = std::thread::Builder::new()
        .name(format!("{name}-core"))
        .spawn(move || {
            // Dropped when the thread ends, however it ends.
            let _done = done_tx;
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow!(e).context("core runtime")));
                    return;
                }
            };
            rt.block_on(async move {
                match build() {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        drive(l, events, control_rx).await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .context("core thread")?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(CoreHandle {
            what,
            control,
            done,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let _ = thread.join();
            bail!("the {what} core failed to start")
        }
    }
}

impl<R> CoreHandle<R> {
    /// Hands new settings to the core.
    pub async fn reload(&self, settings: R) {
        let _ = self.control.send(Control::Reload(settings)).await;
    }

    /// Resolves if the core thread ends by itself: an error, the daemon cannot go on.
    pub async fn stopped(&mut self) -> anyhow::Error {
        let _ = (&mut self.done).await;
        anyhow!("the {} core stopped unexpectedly", self.what)
    }

    /// Asks the core to shut down and waits up to `limit` for it.
    pub async fn shutdown(mut self, limit: Duration) {
        let _ = self.control.send(Control::Shutdown).await;
        if tokio::time::timeout(limit, &mut self.done).await.is_err() {
            warn!("the {} core did not stop in time", self.what);
        }
    }
}

/// Runs `l` until shutdown completes or every event sender is gone.
pub async fn drive<L: CoreLoop>(
    mut l: L,
    mut events: mpsc::Receiver<L::Event>,
    mut control: mpsc::Receiver<Control<L::Reload>>,
) {
    let mut next_tick = l.clock() + TICK;
    let mut shutdown_by: Option<Instant> = None;
    let mut control_open = true;
    loop {
        let wake = l.poll_timeout().map_or(next_tick, |t| t.min(next_tick));
        let reading = shutdown_by.is_none();
        let now;
        tokio::select! {
            c = control.recv(), if control_open => {
                now = l.clock();
                match c {
                    Some(Control::Reload(r)) => l.reload(r),
                    // The main thread gone is a shutdown too.
                    Some(Control::Shutdown) | None => {
                        control_open = c.is_some();
                        if shutdown_by.is_none() {
                            l.begin_shutdown();
                            shutdown_by = Some(now + SHUTDOWN_GRACE);
                        }
                    }
                }
            }
            ev = events.recv() => {
                now = l.clock();
                let Some(ev) = ev else { break };
                let mut next = Some(ev);
                let mut handled = 0;
                while let Some(ev) = next.take() {
                    l.handle_event(ev, shutdown_by.is_some());
                    handled += 1;
                    if handled < EVENT_BURST {
                        next = events.try_recv().ok();
                    }
                }
            }
            i = poll_fn(|cx| l.poll_readable(cx)), if reading => {
                now = l.clock();
                l.read_ready(i);
            }
            () = tokio::time::sleep_until(wake.into()) => {
                now = l.clock();
            }
        }
        if l.poll_timeout().is_some_and(|t| t <= now) {
            l.handle_timeout();
        }
        if now >= next_tick {
            next_tick = now + TICK;
            l.housekeeping();
        }
        l.drain();
        if let Some(by) = shutdown_by {
            if l.outstanding() == 0 {
                break;
            }
            if now >= by {
                warn!(
                    "shutting down with {} storage orders unconfirmed",
                    l.outstanding()
                );
                break;
            }
        }
    }
    l.finish();
}

/// The system clock as time since the Unix epoch (zero if it reads earlier): what a
/// daemon hands its core's `set_wall_clock` (the cores never read the clock themselves).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
