//! XEP-0352 client state indication: while a client says it is inactive, presence
//! updates (the bulk of traffic a phone does not need at once) are held, only the
//! latest per sender, and flushed, in order, when it becomes active or before anything
//! that cannot wait (a message, an iq), so ordering is kept (section 5 leaves the
//! policy to the server; this is Prosody's mod_csi_simple idea).

use super::*;

pub(crate) const NS_CSI: &str = "urn:xmpp:csi:0";

/// Presence that may wait (not subscription requests, not errors).
pub(crate) fn can_wait(st: &Element) -> bool {
    st.name == "presence" && matches!(st.get_attr("type"), None | Some("unavailable"))
}

/// Holds `st`, replacing an earlier held presence from the same sender.
pub(crate) fn hold(s: &mut Session, st: Element) {
    let from = st.get_attr("from").map(str::to_string);
    s.csi_held
        .retain(|h| h.get_attr("from").map(str::to_string) != from);
    s.csi_held.push(st);
}

impl Server {
    pub(crate) fn on_csi(&mut self, now: Instant, sid: SessionId, active: bool) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.csi_inactive = !active;
        if active {
            self.csi_flush(now, sid);
        }
    }

    /// Sends what was held.
    pub(crate) fn csi_flush(&mut self, _now: Instant, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let held = std::mem::take(&mut s.csi_held);
        for st in held {
            self.transmit(sid, st, None);
        }
    }
}
