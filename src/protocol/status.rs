//! `POST /status` (protocol §10.2): a user asks whether its own signing key is still a user.
//!
//! The cluster refuses a revoked user's login with the same `Authorization Violation` as a
//! login membershipd could not answer (a restart, a storm), so a client that missed its account
//! notice (§12.6) cannot tell the two apart from the refusals. It asks here instead: the key
//! signs a fresh timestamp, and the server answers the key's [`KeyStatus`]. The request changes
//! nothing, so it carries no nonce: a replay inside the freshness window learns only what the
//! first answer said.
//!
//! ```
//! use unibus::protocol::status::{StatusBody, StatusRequest};
//! use unibus::Identity;
//!
//! let me = Identity::generate()?;
//! let body = StatusBody::from(&StatusRequest::sign(&me, 1_700_000_000_000));
//! let request = StatusRequest::try_from(&body)?;
//! request.verify()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

use super::json::{JsonError, Object};
use crate::keys::{KeyError, SignatureError};
use crate::{Identity, SignPublicKey, Signature};

/// Domain-separation prefix of the signed status message.
pub const STATUS_CONTEXT: &[u8] = b"unibus/status/v1";

/// The fields of a status body.
const FIELDS: &[&str] = &["sign_public_key", "timestamp", "signature"];

/// The bytes a client signs to ask for its status: [`STATUS_CONTEXT`], the signing key, and the
/// timestamp as 8 bytes, big-endian two's complement.
pub fn status_message(sign_public_key: &SignPublicKey, timestamp: i64) -> Vec<u8> {
    let mut message = Vec::with_capacity(STATUS_CONTEXT.len() + 32 + 8);
    message.extend_from_slice(STATUS_CONTEXT);
    message.extend_from_slice(sign_public_key.as_bytes());
    message.extend_from_slice(&timestamp.to_be_bytes());
    message
}

/// What the server knows of a signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// An active user: it may log in. Refused logins are passing (a restart, a storm).
    Active,
    /// A revoked user: its logins stay refused, and only an admin can change that.
    Revoked,
    /// A deleted user: the key is retired for good.
    Deleted,
    /// No user has, or had, this key on this server.
    Unknown,
}

impl KeyStatus {
    /// Whether the key can never log in again: revoked or deleted. `Unknown` is not: the
    /// client may be asking the wrong server.
    pub fn is_retired(self) -> bool {
        matches!(self, Self::Revoked | Self::Deleted)
    }

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Deleted => "deleted",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a status request's fields were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusRequestError {
    /// The signing key is malformed (`bad_key`).
    #[error("{0}")]
    BadKey(KeyError),
    /// The signature is malformed or does not verify (`bad_signature`).
    #[error("signature: {0}")]
    BadSignature(SignatureError),
}

/// A signed status request. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRequest {
    /// The key asking about itself.
    pub sign_public_key: SignPublicKey,
    /// Unix milliseconds when the request was made.
    pub timestamp: i64,
    /// The signature over [`status_message`].
    pub signature: Signature,
}

impl StatusRequest {
    /// Builds and signs a request for `identity` at `timestamp` (Unix milliseconds).
    pub fn sign(identity: &Identity, timestamp: i64) -> Self {
        let sign_public_key = identity.sign_public_key();
        let signature = identity.sign(&status_message(&sign_public_key, timestamp));
        Self {
            sign_public_key,
            timestamp,
            signature,
        }
    }

    /// Checks the signature.
    pub fn verify(&self) -> Result<(), StatusRequestError> {
        self.sign_public_key
            .verify(
                &status_message(&self.sign_public_key, self.timestamp),
                &self.signature,
            )
            .map_err(StatusRequestError::BadSignature)
    }
}

/// The JSON body of `POST /status`, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBody {
    /// The ed25519 key, 64 hex.
    pub sign_public_key: String,
    /// Unix milliseconds.
    pub timestamp: i64,
    /// The signature over [`status_message`], 128 hex.
    pub signature: String,
}

impl StatusBody {
    /// Reads a status body strictly ([`super::json`]): one JSON object with exactly these
    /// three fields, two strings and a whole number. Errors name fields, never values.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        let mut object = Object::parse(bytes, FIELDS)?;
        Ok(Self {
            sign_public_key: object.str("sign_public_key")?,
            timestamp: object.i64("timestamp", "a whole number of Unix milliseconds")?,
            signature: object.str("signature")?,
        })
    }
}

impl From<&StatusRequest> for StatusBody {
    fn from(request: &StatusRequest) -> Self {
        Self {
            sign_public_key: request.sign_public_key.to_hex(),
            timestamp: request.timestamp,
            signature: request.signature.to_hex(),
        }
    }
}

impl TryFrom<&StatusBody> for StatusRequest {
    type Error = StatusRequestError;

    /// Parses the key, then the signature's form; [`StatusRequest::verify`] checks it.
    fn try_from(body: &StatusBody) -> Result<Self, StatusRequestError> {
        Ok(Self {
            sign_public_key: SignPublicKey::from_hex(&body.sign_public_key)
                .map_err(StatusRequestError::BadKey)?,
            timestamp: body.timestamp,
            signature: Signature::from_hex(&body.signature)
                .map_err(StatusRequestError::BadSignature)?,
        })
    }
}

/// The success reply, `200`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The key asked about: the request's.
    pub sign_public_key: SignPublicKey,
    /// The request's timestamp, so that the client can match the answer to its question.
    pub timestamp: i64,
    /// What the server knows of the key.
    pub status: KeyStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_and_a_changed_timestamp_or_key_does_not() {
        let me = Identity::generate().unwrap();
        let request = StatusRequest::sign(&me, 1_700_000_000_000);
        request.verify().unwrap();
        let body = StatusBody::from(&request);
        assert_eq!(StatusRequest::try_from(&body).unwrap(), request);

        let later = StatusRequest {
            timestamp: request.timestamp + 1,
            ..request.clone()
        };
        assert!(matches!(
            later.verify(),
            Err(StatusRequestError::BadSignature(_))
        ));
        let other = StatusRequest {
            sign_public_key: Identity::generate().unwrap().sign_public_key(),
            ..request
        };
        assert!(other.verify().is_err());
    }

    #[test]
    fn the_signed_message_is_the_context_the_key_and_the_big_endian_timestamp() {
        let me = Identity::generate().unwrap();
        let message = status_message(&me.sign_public_key(), -2);
        assert_eq!(&message[..16], b"unibus/status/v1");
        assert_eq!(&message[16..48], me.sign_public_key().as_bytes());
        assert_eq!(
            &message[48..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
        );
    }

    #[test]
    fn the_body_is_read_strictly_and_the_reply_round_trips() {
        let me = Identity::generate().unwrap();
        let body = StatusBody::from(&StatusRequest::sign(&me, 5));
        let json = serde_json::to_vec(&body).unwrap();
        assert_eq!(StatusBody::from_json(&json).unwrap(), body);
        for bad in [
            r#"{"sign_public_key":"a","timestamp":"5","signature":"b"}"#,
            r#"{"sign_public_key":"a","timestamp":5.5,"signature":"b"}"#,
            r#"{"sign_public_key":"a","timestamp":5}"#,
            r#"{"sign_public_key":"a","timestamp":5,"signature":"b","extra":1}"#,
            r#"{"sign_public_key":null,"timestamp":5,"signature":"b"}"#,
            r#"["a",5,"b"]"#,
        ] {
            assert!(StatusBody::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
        let reply = StatusReply {
            sign_public_key: me.sign_public_key(),
            timestamp: 5,
            status: KeyStatus::Revoked,
        };
        let text = serde_json::to_string(&reply).unwrap();
        assert!(text.contains(r#""status":"revoked""#), "{text}");
        assert_eq!(serde_json::from_str::<StatusReply>(&text).unwrap(), reply);
    }
}
