//! Messages on the bus (protocol §15): the stream that holds every room's envelopes, the relay
//! that stores and reads them for the control plane's `send` and `messages`, and the fan-out
//! of live copies to each room's current members.
//!
//! - [`stream`]: the JetStream stream `UNIBUS_MESSAGES` in the users' account, created or
//!   updated to this version's settings by every `serve` at start.
//! - [`relay`]: `send` (checks, then a publish with the envelope's `Nats-Msg-Id`) and
//!   `messages` (pages read with batched direct gets).
//! - [`reader`]: the stream reads a page needs, each bounded.
//! - [`fanout`]: the stream's republished copies, sent to the members that leased them from
//!   this instance ([`listeners`]).
//!
//! Users never read the stream. A member publishes envelopes to its rooms' store subjects, and
//! subscribes to their republished copies, itself when its login was granted them
//! ([`crate::auth::grants`], protocol §15.2 and §15.4), and goes through membershipd otherwise
//! (the relay, and a lease of copies); membershipd reads pages and sends leased copies for a
//! room's current, active members only (docs/operations.md says why reads take a relay).

pub mod fanout;
pub mod listeners;
pub mod reader;
pub mod relay;
pub mod stream;

pub use fanout::Fanout;
pub use listeners::Listeners;
pub use relay::Relay;
pub use stream::{ensure_stream, StreamSettings, DEFAULT_DUPLICATE_WINDOW};

/// Why the message stream could not be set up or read.
#[derive(Debug, thiserror::Error)]
pub enum MessagesError {
    /// JetStream refused or did not answer; the text says what failed. Check that the users'
    /// account has JetStream enabled (every node's config carries membershipd's `auth.conf`).
    #[error("the message stream: {0}")]
    JetStream(String),
    /// A stored message lacks a header the stream sets, or has one that does not parse.
    #[error("a stored message is malformed: {0}")]
    Malformed(String),
    /// The store could not list a room's members.
    #[error("the store: {0}")]
    Store(#[from] crate::store::StoreError),
}
