//! Services on domains of their own (Prosody's `Component`): the router hands them every
//! stanza addressed to their domain. Today the XEP-0045 chat-room service (`muc.rs`).

use super::*;

pub(crate) mod muc;
