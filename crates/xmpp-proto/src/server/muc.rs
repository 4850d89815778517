//! Chat-room services (XEP-0045) on their own domains: the boundary the router calls.
//!
//! PLACEHOLDER owned by the MUC work: replace the bodies, keep the three entry points
//! ([`Server::muc_handle`], [`Server::muc_counts`], [`MucState`]). Stanzas to occupants
//! and replies go out with [`Server::route`] (from = `room@service/nick`), which reaches
//! local sessions and, later, remote servers. Room state lives in [`MucState`] (a field
//! of [`Server`]); persistent rooms use [`Server::load_then`] / [`Server::store_then`]
//! with the service domain as host.

use super::*;

/// All rooms of all MUC services.
#[derive(Default)]
pub(crate) struct MucState {}

impl Server {
    /// A stanza addressed to a MUC service domain (the service, a room, or an occupant).
    /// Until rooms exist every request is answered `service-unavailable` (RFC 6120
    /// section 8.3.3.19).
    pub(crate) fn muc_handle(&mut self, now: Instant, from: Jid, stanza: Element) {
        let _ = from;
        let ty = stanza::stanza_type(&stanza);
        if ty == "error" || (stanza.name == "iq" && ty == "result") {
            return;
        }
        self.bounce(now, &stanza, StanzaError::new("service-unavailable"));
    }

    /// (rooms, occupants) for [`Stats`].
    pub(crate) fn muc_counts(&self) -> (u64, u64) {
        let _ = &self.muc;
        (0, 0)
    }
}
