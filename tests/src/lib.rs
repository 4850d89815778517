//! Shared harness for the suite's integration tests (turnd, sipd, xmppd).
//!
//! A test picks free ports ([`ports`]), writes a config and starts the real binary with
//! [`Daemon`] (logs captured in its directory, readiness awaited, killed on drop), drives it
//! with real external clients through [`run_tool`] (hard timeout) or with the small
//! in-process [`stun::StunClient`] for the cases real clients never produce (refusals,
//! garbage), and reads its Prometheus endpoint with [`metrics`]. [`turnd::Turnd`] bundles
//! all of this for the TURN server so each turnd test is a few lines, [`sipd::Sipd`] for
//! the SIP server, [`xmppd::Xmppd`] for the XMPP server.

pub mod daemon;
pub mod example_config;
pub mod metrics;
pub mod ports;
pub mod scratch_db;
pub mod sipd;
pub mod stun;
pub mod tls;
pub mod tool;
pub mod turnd;
pub mod xmppd;

pub use daemon::{Daemon, Ready, Signal, SIGHUP, SIGTERM};
pub use ports::{free_port_range, free_udp_tcp_port};
/// Re-exported so tests need no dependency of their own for scratch directories.
pub use tempfile;
pub use tls::{broken_cert_pairs, self_signed_files, BrokenPair};
pub use tool::{run_tool, run_tool_feeding, FedOutput, ToolOutput};
