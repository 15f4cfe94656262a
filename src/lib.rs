//! # unibus
//!
//! The client-side core of unibus: invite-only, key-based membership of end-to-end-encrypted
//! rooms on a NATS JetStream cluster.
//!
//! - [`identity`]: a user's ed25519 + x25519 keypairs, generated on the device.
//! - [`keys`]: public keys as they travel (64 lowercase hex characters), and signatures.
//! - [`invite`]: invite links, `https://host/invite#token`, formatted and parsed.
//! - [`room`]: room identifiers.
//! - [`sealing`]: a room key sealed to one member with HPKE (RFC 9180).
//! - [`manifest`]: the signed record of a rekey, which clients verify before trusting a key.
//!
//! Nothing here touches the network or a server's storage; the reference server and the FFI
//! bindings are separate crates built on this one.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
mod golden;
mod hex;
pub mod identity;
pub mod invite;
pub mod keys;
pub mod manifest;
mod nkey;
pub mod room;
pub mod sealing;

pub use identity::Identity;
pub use invite::{InviteLink, InviteToken};
pub use keys::{KexPublicKey, SignPublicKey, Signature};
pub use room::RoomId;
