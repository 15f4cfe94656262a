//! `POST /register` (protocol §10): the body a client sends and the reply it gets. Refusals
//! are [`ApiCode`](super::codes::ApiCode)s in the error envelope.

use serde::{Deserialize, Serialize};

use super::json::{JsonError, Object};
pub use crate::registration::RegisterBody;
use crate::{KexPublicKey, SignPublicKey};

/// The fields of a registration body.
const FIELDS: &[&str] = &["token", "sign_public_key", "kex_public_key", "signature"];

impl RegisterBody {
    /// Reads a registration body strictly ([`super::json`]): one JSON object with exactly the
    /// four string fields, nothing else. Errors name fields, never values. The fields' contents
    /// are checked by [`RegisterRequest::try_from`](crate::registration::RegisterRequest).
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        let mut object = Object::parse(bytes, FIELDS)?;
        Ok(RegisterBody {
            token: object.str("token")?,
            sign_public_key: object.str("sign_public_key")?,
            kex_public_key: object.str("kex_public_key")?,
            signature: object.str("signature")?,
        })
    }
}

/// The success reply, `200`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReply {
    /// The registered signing key.
    pub sign_public_key: SignPublicKey,
    /// The registered key-exchange key.
    pub kex_public_key: KexPublicKey,
    /// Whether the user is an admin.
    pub admin: bool,
    /// Where to connect to the cluster, logging in with the signing key's nkey.
    pub nats_urls: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_round_trips_and_the_body_is_read_strictly() {
        let id = crate::Identity::generate().unwrap();
        let reply = RegisterReply {
            sign_public_key: id.sign_public_key(),
            kex_public_key: id.kex_public_key(),
            admin: false,
            nats_urls: vec!["nats://127.0.0.1:4222".into()],
        };
        let bytes = serde_json::to_vec(&reply).unwrap();
        assert_eq!(
            serde_json::from_slice::<RegisterReply>(&bytes).unwrap(),
            reply
        );
        let body = RegisterBody {
            token: "t".into(),
            sign_public_key: "s".into(),
            kex_public_key: "k".into(),
            signature: "g".into(),
        };
        let json = serde_json::to_vec(&body).unwrap();
        assert_eq!(RegisterBody::from_json(&json).unwrap(), body);
        assert!(RegisterBody::from_json(br#"["t","s","k","g"]"#).is_err());
    }
}
