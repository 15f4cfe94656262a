//! # unibus-server
//!
//! The reference server's side of unibus, `membershipd`:
//!
//! - [`store`]: the data layer, one [`Store`](store::Store) contract with two backends that
//!   behave identically, SQLite (the embedded default) and replicated JetStream KV;
//! - [`http`]: the HTTP API, registration and health;
//! - [`config`] and [`cli`]: the `membershipd` command line.

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod http;
pub mod json;
pub mod serve;
pub mod store;
