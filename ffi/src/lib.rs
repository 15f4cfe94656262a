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
//! Panics never cross the boundary: uniffi catches them and raises an internal error in the
//! foreign language, which is why the release profile must never use `panic = "abort"`.

#![warn(missing_docs)]

mod errors;
mod identity;
mod invite;
mod sealing;

pub use errors::{IdentityError, InviteLinkError, KeyError, SealError};
pub use identity::{validate_kex_public_key, validate_sign_public_key, Identity};
pub use invite::{format_invite_link, InviteLink};
pub use sealing::{open_manifest, open_room_key, rekey_room, seal_room_key, Recipient, RoomKey};

uniffi::setup_scaffolding!("unibus");
