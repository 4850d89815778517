//! The core every stream needs, whatever modules are loaded (Prosody's `core/`):
//! stream negotiation and SASL (`stream.rs`), sessions (`session.rs`), XEP-0198 stream
//! management (`sm.rs`), routing (`router.rs`), the roster and presence of RFC 6121
//! (`roster.rs`, `presence.rs`), per-user state (`users.rs`), stanza helpers
//! (`stanza.rs`, `form.rs`), and the module registry with its iq dispatch and the hooks
//! modules listen to (`iq.rs`, `hooks.rs`).

use super::*;

pub(crate) mod form;
pub(crate) mod hooks;
pub(crate) mod iq;
pub(crate) mod presence;
pub(crate) mod roster;
pub(crate) mod router;
pub(crate) mod session;
pub(crate) mod sm;
pub(crate) mod stanza;
pub(crate) mod stream;
pub(crate) mod users;
