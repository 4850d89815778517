//! Service modules, one per XEP family (Prosody's `plugins/mod_*.lua`). Each declares a
//! `MODULE` listed in `iq::MODULES`: the iq payloads it answers, the disco features it
//! adds, and the hooks it listens to (see the `server` module doc).

use super::*;

pub(crate) mod adhoc;
pub(crate) mod blocking;
pub(crate) mod bookmarks;
pub(crate) mod caps;
pub(crate) mod carbons;
pub(crate) mod csi;
pub(crate) mod disco;
pub(crate) mod last;
pub(crate) mod offline;
pub(crate) mod pep;
pub(crate) mod ping;
pub(crate) mod private;
pub(crate) mod register;
pub(crate) mod time;
pub(crate) mod vcard;
pub(crate) mod version;
