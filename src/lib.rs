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
//! - [`envelope`]: a room message, encrypted under its epoch's key and signed by its sender,
//!   with the sender's proof of membership.
//! - [`registration`]: the signed request that redeems an invite.
//! - [`admin`]: signed, non-replayable admin requests.
//! - [`subjects`]: a user's NATS subjects (requests, notifications, inboxes).
//! - [`protocol`] (feature `serde`): the wire protocol's types, shared by the client and the
//!   reference server.
//! - [`client`] (feature `client`, on by default): registration over HTTPS and the session on
//!   the cluster: rooms, epochs, room keys, rekeys and change notifications.
//!
//! Everything outside [`client`] is pure computation: no network, no storage. The reference
//! server and the FFI bindings are separate crates built on this one; the server uses it
//! without the `client` feature.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
mod golden;

/// With the `serde` feature, (de)serializes a type through its `Display` and `FromStr`, so
/// keys and room ids travel as their canonical strings and are validated when read.
macro_rules! serde_as_string {
    ($type:ty) => {
        #[cfg(feature = "serde")]
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text =
                    <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_as_string;
pub mod admin;
#[cfg(feature = "client")]
pub mod client;
pub mod envelope;
mod hex;
pub mod history;
pub mod identity;
pub mod invite;
pub mod keys;
pub mod manifest;
mod nkey;
#[cfg(feature = "serde")]
pub mod protocol;
pub mod registration;
pub mod room;
pub mod sealing;
pub mod subjects;
mod wire;

pub use identity::Identity;
pub use invite::{InviteLink, InviteToken};
pub use keys::{KexPublicKey, SignPublicKey, Signature};
pub use room::RoomId;
