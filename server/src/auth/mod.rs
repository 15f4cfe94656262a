//! Cluster login by key.
//!
//! Clients log in to NATS with their own ed25519 key (as a user nkey). nats-server delegates
//! every such login to membershipd's auth-callout service ([`callout`]), which checks the
//! nonce signature and the store, and admits active users into the application account with
//! permissions scoped to their own key, deciding each login in time under a storm
//! ([`admission`]). [`setup`] writes the matching nats-server configuration.
//! See `docs/operations.md` for why auth callout was chosen.

pub mod admission;
pub mod callout;
pub mod jwt;
pub mod revocation;
pub mod setup;
