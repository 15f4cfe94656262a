//! The server's integration tests, in one binary: each file used to be a test binary of its
//! own that linked the whole stack. Every test runs against real components: nats-server
//! clusters on 127.0.0.1, SQLite files, HTTP, and the real `membershipd` binary.
//!
//! Run one group with its module name, e.g. `cargo test -p unibus-server --test integration --
//! cluster_faults::`.

mod common;
mod daemon;

mod client_messages;
mod client_sdk;
mod cluster_faults;
mod cluster_login;
mod control_plane;
mod ffi_watch_stream;
mod history_sdk;
mod http_api;
mod messages;
mod migration;
mod multi_instance;
mod revocation_in_force;
mod serve;
