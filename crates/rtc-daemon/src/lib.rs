//! The daemon shell shared by `turnd`, `sipd` and `xmppd`: everything a daemon of the suite
//! needs around its sans-IO protocol core, written once.
//!
//! A daemon's life, and the module that carries each step:
//!
//! ```text
//! main() -> cli::main: arguments, config load (--check-config), logging
//!   run(): runtime (shell::io_runtime), storage, listen::bind_* (bound, not listening)
//!          writer::spawn (group commit), lookup::serve (bounded concurrent reads)
//!          core::spawn: the core thread; returns once the core is ready
//!          listen::listen + limiter::accept_loop (connections only once the core is up)
//!          metrics::serve (/metrics), systemd::notify_or_warn("READY=1")
//!          shell::Signals: SIGHUP -> the daemon's reload (settings::restart_needed names
//!            what a reload cannot change); SIGTERM/SIGINT -> core::CoreHandle::shutdown,
//!            then writer::WriterTask::finish commits what is queued
//! ```
//!
//! The core thread runs [`core::drive`]: a current-thread runtime turning events (bytes,
//! database answers) and timers into calls on the daemon's [`core::CoreLoop`], which holds
//! the protocol core and is the one place each daemon calls into it. The polling order is
//! the one `rtc-proto` documents (input, drain output, re-arm the timer).
//!
//! Nothing here keeps process-global state: every limiter, writer and core handle is a
//! value the daemon owns, so one process may run several (tests do) and state that a
//! cluster shares stays in the database or behind the core's orders.

#![forbid(unsafe_code)]

pub mod cli;
pub mod core;
pub mod limiter;
pub mod listen;
pub mod lookup;
pub mod metrics;
pub mod settings;
pub mod shell;
pub mod systemd;
pub mod writer;
