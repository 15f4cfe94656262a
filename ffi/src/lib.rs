//! # unibus-ffi
//!
//! The unibus client SDK exported to Swift, Kotlin and Python with uniffi (proc-macros only).
//!
//! This crate is a thin skin over the `unibus` crate: every function parses its foreign
//! arguments into the Rust types, calls the Rust API, and maps the result back. It holds no
//! logic of its own. Each Rust error enum becomes a typed exception with one subclass per
//! variant (`InviteLinkException.InsecureHttp` in Kotlin, `InviteLinkError.InsecureHttp` in
//! Swift and Python), whose message is the Rust error's message.
//!
//! Secrets stay in Rust objects ([`Identity`], [`RoomKey`]) and are wiped when the foreign
//! object is destroyed. Only the explicit export calls hand secret bytes to the app.
//!
//! The network client (`register`, `Session` with its messages, history sharing and watches) is
//! async: `suspend` in Kotlin, `async` in Swift, coroutines in Python. Its work runs on one tokio
//! runtime of the SDK's own, set up by `init_platform` (threads, log level, the app's
//! `LogSink`) or with defaults on first use.
//!
//! Panics never cross the boundary: uniffi catches them in calls and raises an internal error
//! in the foreign language, and a panic in SDK work on the runtime becomes the call's
//! `Internal` error. The release profile must never use `panic = "abort"`.

#![warn(missing_docs)]

mod client;
mod errors;
mod identity;
mod invite;
mod runtime;
mod sealing;
mod trust;

pub use client::{
    register, ConnectionState, HistoryPolicy, MessagePage, OpenedMessage, OpenedRoomKey,
    ReceivedMessage, ReceivedPage, RegisterOptions, Registration, RoomInfo, RoomUpdate,
    SentMessage, Session, SessionEnd, SessionOptions, Unreadable, WatchEnd, WatchEvent,
    WatchHandle, WatchListener, WatchStep, WatchStream,
};
pub use errors::{
    IdentityError, InviteLinkError, KeyError, RegisterError, SealError, SessionError, TrustError,
};
pub use identity::{validate_kex_public_key, validate_sign_public_key, Identity};
pub use invite::{format_invite_link, InviteLink};
pub use runtime::{
    init_platform, shutdown_platform, LogLevel, LogSink, PlatformConfig, PlatformError,
};
pub use sealing::{
    open_history_share, open_manifest, open_member_part, open_room_key, rekey_room, seal_room_key,
    Recipient, RoomKey,
};

pub use trust::{owner_fingerprint, parse_owner_code, OwnerFingerprint, RoomTrust, TrustStore};

uniffi::setup_scaffolding!("unibus");
