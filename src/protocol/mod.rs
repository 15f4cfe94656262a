//! The wire protocol, one definition for the client and the server (feature `serde`): what
//! travels between them, as Rust types. `docs/protocol.md` is the specification; a test checks
//! its tables against these enums.
//!
//! - [`control`]: the control plane on NATS (§12): [`Operation`](control::Operation), one
//!   request and one reply type per operation, reading and writing replies.
//! - [`events`]: change notifications (§12.6).
//! - [`messages`]: messages on the bus (§15): sending envelopes, pages of stored envelopes,
//!   live messages.
//! - [`codes`]: the refusal codes of the control plane and of the HTTP API, and the error
//!   envelope they travel in (§10, §12.3, §13).
//! - [`registration`]: `POST /register` (§10): the body and the reply.
//! - [`status`]: `POST /status` (§10.2): a user asks whether its key is still a user.
//! - [`admin`]: `POST /admin` (§13): the request body and the admin operations with their
//!   params ([`AdminOperation`](admin::AdminOperation)), which the server's CLI runs too.
//! - [`json`]: strict reading of untrusted JSON bodies, as the HTTP API requires.
//!
//! Adding a control-plane operation means adding it to [`control::Operation`] with its request
//! and reply types, one handler in the server, and its row in the documentation.

pub mod admin;
pub mod codes;
pub mod control;
pub mod events;
pub mod json;
pub mod messages;
pub mod registration;
pub mod status;
