//! Signed admin requests: how an admin's app proves a request is theirs, fresh and not replayed.
//!
//! An admin request is `POST {server}/admin` with a JSON body
//! `{"admin": "<signing key hex>", "timestamp": <Unix ms>, "nonce": "<32 hex>", "operation": "...",
//! "params": {...}}` and the header `Unibus-Signature: <128 hex>`, an ed25519 signature by the
//! admin's key over [`admin_message`]: `"unibus/admin/v1" || 0x00 || <the exact body bytes>`.
//! Signing the bytes as sent avoids any JSON canonicalization. The server accepts a request only
//! if the key is an active admin, the timestamp is within its window, and the nonce was not seen
//! before in that window.
//!
//! ```
//! use unibus::Identity;
//! use unibus::admin::{sign_admin_body, verify_admin_body};
//!
//! let admin = Identity::generate()?;
//! let body = br#"{"operation":"user.list"}"#;
//! let signature = sign_admin_body(&admin, body);
//! verify_admin_body(&admin.sign_public_key(), body, &signature)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::keys::SignatureError;
use crate::{Identity, SignPublicKey, Signature};

/// Domain-separation prefix of the signed admin message.
pub const ADMIN_CONTEXT: &[u8] = b"unibus/admin/v1";
/// The HTTP header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Unibus-Signature";

/// The bytes an admin signs for a request body.
pub fn admin_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(ADMIN_CONTEXT.len() + 1 + body.len());
    message.extend_from_slice(ADMIN_CONTEXT);
    message.push(0);
    message.extend_from_slice(body);
    message
}

/// Signs a request body.
pub fn sign_admin_body(admin: &Identity, body: &[u8]) -> Signature {
    admin.sign(&admin_message(body))
}

/// Verifies a request body's signature under `admin`.
pub fn verify_admin_body(
    admin: &SignPublicKey,
    body: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    admin.verify(&admin_message(body), signature)
}
