//! # unibus-server
//!
//! The reference server's side of unibus, `membershipd`:
//!
//! - [`store`]: the data layer, one [`Store`](store::Store) contract with two backends that
//!   behave identically, SQLite (the embedded default) and replicated JetStream KV;
//! - [`http`]: the HTTP API: registration, health and the signed admin API, reading untrusted
//!   bodies strictly with [`unibus::protocol::json`];
//! - [`admin`]: the admin operations, shared by the CLI and the admin API;
//! - [`app_links`]: the operator's app as the invite page and the `.well-known` association
//!   files present it;
//! - [`auth`]: cluster login by key (the auth callout) and the revocation sweep;
//! - [`control`]: the control-plane service on NATS;
//! - [`messages`]: messages on the bus: the message stream, `send` and `messages`, and the
//!   leases of live copies (`listen`) and their fan-out;
//! - [`serve`]: everything `membershipd serve` runs, wired together, with the embedded
//!   nats-server's supervisor;
//! - [`config`] and [`cli`]: the `membershipd` command line, whose failures are
//!   [`error::ServerError`]s.

#![warn(missing_docs)]

pub mod admin;
pub mod app_links;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
mod embedded_nats;
pub mod error;
pub mod http;
pub mod messages;
pub mod serve;
pub mod store;
mod task;
