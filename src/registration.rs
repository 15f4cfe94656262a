//! Registration: a new user redeems an invite by publishing their two public keys, with a
//! signature that proves they hold the signing key.
//!
//! The client sends `POST {server}/register` with a JSON body of four hex strings:
//!
//! ```json
//! { "token": "<64 hex>", "sign_public_key": "<64 hex>", "kex_public_key": "<64 hex>",
//!   "signature": "<128 hex>" }
//! ```
//!
//! The signature is ed25519 by the signing key over [`registration_message`]:
//! `"unibus/register/v1" || token (32) || sign_public_key (32) || kex_public_key (32)`. It binds
//! the token to both keys, so nobody can redeem an intercepted request with other keys, and a
//! server cannot be made to register a signing key whose holder did not ask.
//!
//! ```
//! use unibus::{Identity, InviteToken};
//! use unibus::registration::RegisterRequest;
//!
//! let me = Identity::generate()?;
//! let request = RegisterRequest::sign(&me, InviteToken::generate().unwrap());
//! request.verify()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::invite::InviteLinkError;
use crate::keys::{KeyError, SignatureError};
use crate::{Identity, InviteToken, KexPublicKey, SignPublicKey, Signature};

/// Domain-separation prefix of the signed registration message.
pub const REGISTER_CONTEXT: &[u8] = b"unibus/register/v1";

/// The bytes a registering client signs.
pub fn registration_message(
    token: &InviteToken,
    sign_public_key: &SignPublicKey,
    kex_public_key: &KexPublicKey,
) -> Vec<u8> {
    let mut message = Vec::with_capacity(REGISTER_CONTEXT.len() + 96);
    message.extend_from_slice(REGISTER_CONTEXT);
    message.extend_from_slice(token.as_bytes());
    message.extend_from_slice(sign_public_key.as_bytes());
    message.extend_from_slice(kex_public_key.as_bytes());
    message
}

/// Why a registration request's fields were rejected. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterRequestError {
    /// The token is not 64 hex characters.
    #[error("token: {0}")]
    BadToken(InviteLinkError),
    /// A public key is malformed.
    #[error("{0}")]
    BadKey(KeyError),
    /// The signature is malformed or does not verify.
    #[error("signature: {0}")]
    BadSignature(SignatureError),
}

/// A registration request. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The invite token being redeemed.
    pub token: InviteToken,
    /// The new user's ed25519 key.
    pub sign_public_key: SignPublicKey,
    /// The new user's x25519 key.
    pub kex_public_key: KexPublicKey,
    /// The proof of possession of the signing key.
    pub signature: Signature,
}

impl RegisterRequest {
    /// Builds and signs a request for `identity` to redeem `token`.
    pub fn sign(identity: &Identity, token: InviteToken) -> Self {
        let (sign_public_key, kex_public_key) =
            (identity.sign_public_key(), identity.kex_public_key());
        let signature = identity.sign(&registration_message(
            &token,
            &sign_public_key,
            &kex_public_key,
        ));
        Self {
            token,
            sign_public_key,
            kex_public_key,
            signature,
        }
    }

    /// Parses the four hex fields of the JSON body, each with its own error.
    pub fn from_hex_fields(
        token: &str,
        sign_public_key: &str,
        kex_public_key: &str,
        signature: &str,
    ) -> Result<Self, RegisterRequestError> {
        Ok(Self {
            token: InviteToken::from_hex(token).map_err(RegisterRequestError::BadToken)?,
            sign_public_key: SignPublicKey::from_hex(sign_public_key)
                .map_err(RegisterRequestError::BadKey)?,
            kex_public_key: KexPublicKey::from_hex(kex_public_key)
                .map_err(RegisterRequestError::BadKey)?,
            signature: Signature::from_hex(signature)
                .map_err(RegisterRequestError::BadSignature)?,
        })
    }

    /// Checks the proof of possession.
    pub fn verify(&self) -> Result<(), RegisterRequestError> {
        let message =
            registration_message(&self.token, &self.sign_public_key, &self.kex_public_key);
        self.sign_public_key
            .verify(&message, &self.signature)
            .map_err(RegisterRequestError::BadSignature)
    }
}

/// The JSON body of `POST /register`: the four fields as hex strings. Clients serialize it
/// from a signed [`RegisterRequest`]; servers deserialize it and parse it back with
/// [`RegisterRequest::try_from`], which checks every field.
#[cfg(feature = "serde")]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// The invite token, 64 hex.
    pub token: String,
    /// The ed25519 key, 64 hex.
    pub sign_public_key: String,
    /// The x25519 key, 64 hex.
    pub kex_public_key: String,
    /// The signature over [`registration_message`], 128 hex.
    pub signature: String,
}

#[cfg(feature = "serde")]
impl From<&RegisterRequest> for RegisterBody {
    fn from(request: &RegisterRequest) -> Self {
        Self {
            token: request.token.to_hex().to_string(),
            sign_public_key: request.sign_public_key.to_hex(),
            kex_public_key: request.kex_public_key.to_hex(),
            signature: request.signature.to_hex(),
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<&RegisterBody> for RegisterRequest {
    type Error = RegisterRequestError;

    fn try_from(body: &RegisterBody) -> Result<Self, RegisterRequestError> {
        Self::from_hex_fields(
            &body.token,
            &body.sign_public_key,
            &body.kex_public_key,
            &body.signature,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_and_any_substitution_does_not() {
        let me = Identity::generate().unwrap();
        let request = RegisterRequest::sign(&me, InviteToken::from_bytes([7; 32]));
        request.verify().unwrap();

        let other = Identity::generate().unwrap();
        let mut swapped_kex = request.clone();
        swapped_kex.kex_public_key = other.kex_public_key();
        assert!(swapped_kex.verify().is_err());
        let mut swapped_token = request.clone();
        swapped_token.token = InviteToken::from_bytes([8; 32]);
        assert!(swapped_token.verify().is_err());
        let mut swapped_sign = request;
        swapped_sign.sign_public_key = other.sign_public_key();
        assert!(swapped_sign.verify().is_err());
    }

    #[test]
    fn fields_parse_with_their_own_errors() {
        let me = Identity::generate().unwrap();
        let r = RegisterRequest::sign(&me, InviteToken::from_bytes([7; 32]));
        let (t, s, k, g) = (
            r.token.to_hex(),
            r.sign_public_key.to_hex(),
            r.kex_public_key.to_hex(),
            r.signature.to_hex(),
        );
        assert_eq!(RegisterRequest::from_hex_fields(&t, &s, &k, &g).unwrap(), r);
        assert!(matches!(
            RegisterRequest::from_hex_fields("zz", &s, &k, &g),
            Err(RegisterRequestError::BadToken(_))
        ));
        assert!(matches!(
            RegisterRequest::from_hex_fields(&t, &"0".repeat(64), &k, &g),
            Err(RegisterRequestError::BadKey(KeyError::AllZero { .. }))
        ));
        assert!(matches!(
            RegisterRequest::from_hex_fields(&t, &s, &k, "00"),
            Err(RegisterRequestError::BadSignature(
                SignatureError::Malformed
            ))
        ));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn the_json_body_round_trips_and_refuses_unknown_fields() {
        let me = Identity::generate().unwrap();
        let request = RegisterRequest::sign(&me, InviteToken::from_bytes([7; 32]));
        let json = serde_json::to_string(&RegisterBody::from(&request)).unwrap();
        let body: RegisterBody = serde_json::from_str(&json).unwrap();
        assert_eq!(RegisterRequest::try_from(&body).unwrap(), request);
        let extra = json.replacen('{', "{\"admin\":true,", 1);
        assert!(serde_json::from_str::<RegisterBody>(&extra).is_err());
    }
}
