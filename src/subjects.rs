//! A user's NATS subjects, as the client uses them and membershipd grants and serves them
//! (docs/protocol.md §11 and §12). `<hex>` is the user's signing key in lowercase hex.
//!
//! | what | subject |
//! |---|---|
//! | control-plane requests | `unibus.cp.<hex>.<operation>` |
//! | change notifications | `unibus.events.<hex>.room` (subscribed as `unibus.events.<hex>.>`) |
//! | reply inboxes | `_INBOX_<hex>.…` |
//!
//! ```
//! use unibus::{subjects, Identity};
//!
//! let me = Identity::generate()?;
//! let hex = me.sign_public_key().to_hex();
//! assert_eq!(subjects::requests(&me.sign_public_key()), format!("unibus.cp.{hex}"));
//! assert_eq!(subjects::inbox_prefix(&me.sign_public_key()), format!("_INBOX_{hex}"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::SignPublicKey;

/// The prefix of every control-plane request subject.
pub const REQUEST_PREFIX: &str = "unibus.cp";
/// The prefix of every change-notification subject.
pub const EVENTS_PREFIX: &str = "unibus.events";

/// `unibus.cp.<hex>`: a user's requests are this, a dot, and the operation.
pub fn requests(key: &SignPublicKey) -> String {
    format!("{REQUEST_PREFIX}.{}", key.to_hex())
}

/// `unibus.events.<hex>`: a user's notifications are published below this.
pub fn events(key: &SignPublicKey) -> String {
    format!("{EVENTS_PREFIX}.{}", key.to_hex())
}

/// `_INBOX_<hex>`: the inbox prefix a user's client must use, the only inboxes it may read.
pub fn inbox_prefix(key: &SignPublicKey) -> String {
    format!("_INBOX_{}", key.to_hex())
}
