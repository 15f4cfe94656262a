//! `POST /admin`, the signed admin API (protocol §13): the request body. Its signature is
//! [`crate::admin`]; the operations and their params are the server's, shared with its CLI.

use serde_json::Value;

use super::json::{JsonError, Object};

/// The fields of an admin request body.
const FIELDS: &[&str] = &["admin", "timestamp", "nonce", "operation", "params"];

/// An admin request body as read, before any check of what it says (protocol §13).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminBody {
    /// The admin's signing key, as sent.
    pub admin: String,
    /// Unix milliseconds, as sent.
    pub timestamp: i64,
    /// The nonce, as sent.
    pub nonce: String,
    /// The operation's name.
    pub operation: String,
    /// The operation's params: an object, or `None` when left out.
    pub params: Option<Value>,
}

impl AdminBody {
    /// Reads an admin request body strictly ([`super::json`]): one JSON object with the
    /// fields of [`AdminBody`], each of its type, nothing else. Errors name fields, never
    /// values. What the fields say (key, signature, freshness, nonce) the server checks next.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        let mut request = Object::parse(bytes, FIELDS)?;
        Ok(AdminBody {
            admin: request.str("admin")?,
            timestamp: request.i64("timestamp", "a whole number of Unix milliseconds")?,
            nonce: request.str("nonce")?,
            operation: request.str("operation")?,
            params: request.optional_object("params")?,
        })
    }
}
