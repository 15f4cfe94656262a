//! NATS JWTs: the signed tokens of the auth-callout exchange.
//!
//! A NATS JWT is `base64url(header) . base64url(claims) . base64url(signature)` without padding,
//! where the header is `{"typ":"JWT","alg":"ed25519-nkey"}` and the signature is ed25519 by the
//! issuer's nkey over the first two parts. The claims always carry `iss` (the issuer's public
//! nkey), `sub`, `iat` and `jti` (base32 SHA-256 of the claims without `jti`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Why a JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed JWT: {0}")]
    Malformed(String),
    /// The header is not an ed25519-nkey JWT header.
    #[error("unsupported JWT algorithm")]
    Algorithm,
    /// The signature does not verify under the `iss` key.
    #[error("JWT signature does not verify under its issuer")]
    Signature,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Encodes and signs `claims` (a JSON object without `iss`, `iat` and `jti`) with `issuer`.
pub fn encode(
    mut claims: Map<String, Value>,
    issuer: &KeyPair,
    now_secs: i64,
) -> Result<String, JwtError> {
    claims.insert("iss".into(), Value::String(issuer.public_key()));
    claims.insert("iat".into(), Value::from(now_secs));
    claims.remove("jti");
    let unsigned = serde_json::to_vec(&claims).map_err(|e| JwtError::Sign(e.to_string()))?;
    let jti = data_encoding::BASE32_NOPAD.encode(&Sha256::digest(&unsigned));
    claims.insert("jti".into(), Value::String(jti));
    let body = serde_json::to_vec(&claims).map_err(|e| JwtError::Sign(e.to_string()))?;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(body)
    );
    let signature = issuer
        .sign(signing_input.as_bytes())
        .map_err(|e| JwtError::Sign(e.to_string()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// Decodes a JWT and verifies its signature under the key in its `iss` claim. Returns the
/// claims. (Whether that issuer is trusted is the caller's decision.) membershipd decides
/// nothing on it: this is the check nats-server makes on the callout's answers, kept so that
/// tests and tools can make it too.
pub fn decode_verified(token: &str) -> Result<Map<String, Value>, JwtError> {
    let (claims, signing_input, signature) = decode_parts(token)?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::Malformed("no iss claim".into()))?;
    let key = KeyPair::from_public_key(issuer).map_err(|e| JwtError::Malformed(e.to_string()))?;
    key.verify(signing_input.as_bytes(), &signature)
        .map_err(|_| JwtError::Signature)?;
    Ok(claims)
}

/// Decodes a JWT's claims without verifying its signature: for a token whose signature would
/// prove nothing to the caller (see [`Callout::respond`](super::callout::Callout::respond)).
pub fn decode_unverified(token: &str) -> Result<Map<String, Value>, JwtError> {
    Ok(decode_parts(token)?.0)
}

/// A decoded JWT: its claims, the text its signature covers, and the signature.
type Parts<'t> = (Map<String, Value>, &'t str, Vec<u8>);

/// The parts of a JWT whose header names the nkey algorithm.
fn decode_parts(token: &str) -> Result<Parts<'_>, JwtError> {
    let Some((signing_input, signature)) = token.rsplit_once('.') else {
        return Err(JwtError::Malformed("expected three parts".into()));
    };
    let mut parts = signing_input.split('.');
    let (Some(header), Some(body), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three parts".into()));
    };
    let b64 = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|e| JwtError::Malformed(e.to_string()))
    };
    let header_json: Value =
        serde_json::from_slice(&b64(header)?).map_err(|e| JwtError::Malformed(e.to_string()))?;
    if header_json.get("alg").and_then(Value::as_str) != Some("ed25519-nkey") {
        return Err(JwtError::Algorithm);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64(body)?).map_err(|e| JwtError::Malformed(e.to_string()))?;
    Ok((claims, signing_input, b64(signature)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_encoded_jwt_verifies_and_a_tampered_one_does_not() {
        let issuer = KeyPair::new_account();
        let claims = json!({ "sub": "UABC", "nats": { "type": "user", "version": 2 } });
        let token = encode(claims.as_object().unwrap().clone(), &issuer, 1_700_000_000).unwrap();
        let decoded = decode_verified(&token).unwrap();
        assert_eq!(decoded["iss"], issuer.public_key());
        assert_eq!(decoded["sub"], "UABC");
        assert!(decoded["jti"].as_str().unwrap().len() > 40);

        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let forged = json!({ "sub": "UXYZ", "iss": issuer.public_key() });
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        assert_eq!(decode_verified(&parts.join(".")), Err(JwtError::Signature));
        assert!(matches!(
            decode_verified("a.b"),
            Err(JwtError::Malformed(_))
        ));
    }
}
