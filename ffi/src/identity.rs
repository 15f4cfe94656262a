//! Identity and public-key exports.

use std::sync::Arc;

use crate::errors::{IdentityError, KeyError};

/// A user's ed25519 + x25519 keypairs. The secrets stay in Rust and are wiped when this object is
/// destroyed (`close()` in Kotlin, deinit in Swift, garbage collection in Python).
#[derive(Debug, uniffi::Object)]
pub struct Identity(pub(crate) Arc<unibus::Identity>);

#[uniffi::export]
impl Identity {
    /// A fresh identity from the OS CSPRNG.
    #[uniffi::constructor]
    pub fn generate() -> Result<Arc<Self>, IdentityError> {
        Ok(Arc::new(Self(Arc::new(unibus::Identity::generate()?))))
    }

    /// Imports the 65 bytes produced by [`Identity::export_secret_bytes`].
    #[uniffi::constructor]
    pub fn from_secret_bytes(bytes: Vec<u8>) -> Result<Arc<Self>, IdentityError> {
        Ok(Arc::new(Self(Arc::new(
            unibus::Identity::from_secret_bytes(&bytes)?,
        ))))
    }

    /// Both secrets, for the platform keychain or keystore and nothing else.
    pub fn export_secret_bytes(&self) -> Vec<u8> {
        self.0.to_secret_bytes().to_vec()
    }

    /// The ed25519 public key, 64 lowercase hex characters: the user's identity.
    pub fn sign_public_key(&self) -> String {
        self.0.sign_public_key().to_hex()
    }

    /// The x25519 public key, 64 lowercase hex characters.
    pub fn kex_public_key(&self) -> String {
        self.0.kex_public_key().to_hex()
    }

    /// The NATS user nkey (`U...`) with which this identity logs in to the cluster.
    pub fn nkey_public(&self) -> String {
        self.0.nkey_public()
    }

    /// An ed25519 signature (64 bytes) over `message`.
    pub fn sign(&self, message: Vec<u8>) -> Vec<u8> {
        self.0.sign(&message).to_bytes().to_vec()
    }
}

/// Checks a signing public key and returns its canonical (lowercase) hex.
#[uniffi::export]
pub fn validate_sign_public_key(hex: String) -> Result<String, KeyError> {
    Ok(unibus::keys::validate_sign_public_key_hex(&hex)?)
}

/// Checks a key-exchange public key and returns its canonical (lowercase) hex.
#[uniffi::export]
pub fn validate_kex_public_key(hex: String) -> Result<String, KeyError> {
    Ok(unibus::keys::validate_kex_public_key_hex(&hex)?)
}
