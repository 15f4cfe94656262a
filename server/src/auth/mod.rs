//! Cluster login by key.
//!
//! Clients log in to NATS with their own ed25519 key (as a user nkey). nats-server delegates
//! every such login to membershipd's auth-callout service ([`callout`]), which checks the
//! nonce signature and the store, and admits active users into the application account with
//! permissions scoped to their own key and their rooms' store subjects ([`grants`]), deciding
//! each login in time under a storm ([`admission`]). The [`revocation`] revoker ends the
//! sessions of users who are no longer active, or no longer members of a room they were
//! granted. [`setup`] writes the matching nats-server configuration.
//! See `docs/operations.md` for why auth callout was chosen.

pub mod admission;
pub mod callout;
pub mod grants;
pub mod jwt;
pub mod revocation;
pub mod setup;
