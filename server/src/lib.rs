//! # unibus-server
//!
//! The reference server's side of unibus. So far: the data layer, [`store`], with one
//! [`Store`](store::Store) contract and two backends that behave identically, SQLite (the
//! embedded default) and replicated JetStream KV.

#![warn(missing_docs)]

pub mod store;
