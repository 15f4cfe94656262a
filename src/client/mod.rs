//! The network client (feature `client`, on by default): what an app does with a server.
//!
//! 1. [`register`] redeems an invite link over HTTPS with a fresh [`Identity`](crate::Identity)
//!    and returns the [`Registration`] to keep beside it.
//! 2. [`Session::connect`] logs in to the NATS cluster with the identity's own key.
//! 3. The session asks the control plane about rooms and epochs, fetches and opens room keys
//!    (verifying the signed manifest first), lets room owners manage members and rekey on the
//!    device, and [`Session::watch`] streams the changes that concern the identity.
//! 4. [`Session::send`] sends an end-to-end encrypted message to a room,
//!    [`Session::messages`] reads a room's history page by page, and
//!    [`Session::watch_with_messages`] adds every room's new messages to the watch, in order and
//!    each once, resuming after restarts from the cursors in the [`TrustStore`].
//! 5. [`check_status`] asks the server whether the identity is still a user; a session with a
//!    [`StatusCheck`] asks by itself when its logins keep being refused.
//!
//! Every call has a time limit, and a failure to find out is an error: a timeout or a lost
//! connection never reads as "not a member". The wire protocol is in `docs/protocol.md`
//! (§10 to §12, and §14 and §15 for messages).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use unibus::client::{register, RegisterOptions, Session, SessionOptions};
//! use unibus::{Identity, InviteLink};
//!
//! let link = InviteLink::parse("https://members.example.com/invite#<64 hex>")?;
//! let me = Arc::new(Identity::generate()?); // keep me.to_secret_bytes() in the keychain
//! let registration = register(&link, &me, &RegisterOptions::default()).await?;
//! let options = SessionOptions {
//!     status_check: Some((&registration).into()),
//!     ..SessionOptions::default()
//! };
//! let session = Session::connect(me, &registration.nats_urls, options).await?;
//! for room in session.my_rooms().await? {
//!     if room.epoch > 0 {
//!         let opened = session.room_key(&room.id, None).await?;
//!         println!("{}: epoch {}", room.id, opened.epoch);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The client needs a tokio runtime. TLS is rustls with the *ring* provider, set per client and
//! never installed process-wide; server certificates are checked against the platform's trust
//! store (`rustls-platform-verifier`; on Android that needs its one-time JNI set-up) or against
//! [`RegisterOptions::trusted_root_certificates`].

mod direct;
mod error;
mod history;
mod http;
mod live;
mod liveness;
mod messages;
mod opened;
mod read_ahead;
mod register;
mod session;
mod status;
mod trust;
mod watch;

pub use direct::KEY_FRESH;
pub use error::{RegisterError, SessionEnd, SessionError};
pub use liveness::ConnectionState;
pub use messages::{
    Page, Received, ReceivedPage, SentMessage, Unreadable, REMEMBERED_PER_ROOM, SEAL_ATTEMPTS,
    SEND_ATTEMPTS,
};
pub use register::{register, RegisterOptions, Registration};
pub use session::{OpenedRoomKey, RekeyProgress, RoomInfo, Session, SessionOptions};
pub use status::{check_status, StatusCheck, StatusError};
pub use trust::{
    HistoryPolicy, OwnerFingerprint, RoomTrust, TrustError, TrustStore, OWNER_CODE_PREFIX,
    SAFETY_NUMBER_LABEL, TRUST_FILE_FORMAT, TRUST_FILE_VERSION,
};
pub use watch::{RoomUpdate, Watch, WatchEnd};
