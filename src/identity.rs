//! A user's identity: an ed25519 signing key and an x25519 key-exchange key, generated on the
//! device from the operating system's CSPRNG.
//!
//! The secret halves never leave this type except through [`Identity::to_secret_bytes`] and
//! [`Identity::nkey_seed`], which hand them to the app for the platform keychain or keystore, in
//! zeroizing buffers. `Debug` shows the public keys only, and the secrets are wiped on drop.
//!
//! ```
//! use unibus::Identity;
//!
//! let alice = Identity::generate()?;
//! let stored = alice.to_secret_bytes(); // put this in the keychain
//! let again = Identity::from_secret_bytes(&stored)?;
//! assert_eq!(again.sign_public_key(), alice.sign_public_key());
//! assert!(alice.nkey_public().starts_with('U'));
//! # Ok::<(), unibus::identity::IdentityError>(())
//! ```

use std::fmt;

use ed25519_dalek::Signer;
use zeroize::Zeroizing;

use crate::keys::{DecodedSignKey, KexPublicKey, SignPublicKey, Signature};
use crate::nkey;

/// The version byte that starts an exported identity.
pub const SECRET_EXPORT_VERSION: u8 = 1;
/// Length of an exported identity: version byte, ed25519 seed, x25519 secret.
pub const SECRET_EXPORT_LEN: usize = 1 + 32 + 32;

/// Why an identity could not be created or imported. Messages never contain secret bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The operating system's random number generator failed. Retry; if it persists, the device
    /// cannot create keys safely.
    #[error("the OS random number generator failed: {0}")]
    Rng(String),
    /// The exported bytes have the wrong length.
    #[error("exported identity must be {SECRET_EXPORT_LEN} bytes, got {actual}")]
    WrongLength {
        /// How many bytes were given.
        actual: usize,
    },
    /// The exported bytes start with a version this SDK does not know.
    #[error("exported identity has unsupported version {version}; update the SDK")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// A secret half produces an unusable (all-zero) public key.
    #[error("exported identity holds an unusable key")]
    UnusableKey,
}

/// A user's two keypairs. See the [module documentation](self).
pub struct Identity {
    signing: ed25519_dalek::SigningKey,
    kex: x25519_dalek::StaticSecret,
    sign_public: SignPublicKey,
    kex_public: KexPublicKey,
}

impl Identity {
    /// Generates a fresh identity from the OS CSPRNG.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seeds = Zeroizing::new([0u8; 64]);
        getrandom::fill(seeds.as_mut()).map_err(|e| IdentityError::Rng(e.to_string()))?;
        let (sign, kex) = seeds.split_at(32);
        // Both halves are exactly 32 bytes: split_at(32) of a 64-byte array.
        Self::from_parts(
            sign.try_into().expect("32-byte half"),
            kex.try_into().expect("32-byte half"),
        )
    }

    /// Builds an identity from a 32-byte ed25519 seed and a 32-byte x25519 secret.
    pub fn from_parts(sign_seed: &[u8; 32], kex_secret: &[u8; 32]) -> Result<Self, IdentityError> {
        let signing = ed25519_dalek::SigningKey::from_bytes(sign_seed);
        let kex = x25519_dalek::StaticSecret::from(*kex_secret);
        let sign_public = SignPublicKey::of_signing_key(&signing);
        let kex_public = KexPublicKey::from_bytes(x25519_dalek::PublicKey::from(&kex).to_bytes())
            .map_err(|_| IdentityError::UnusableKey)?;
        Ok(Self {
            signing,
            kex,
            sign_public,
            kex_public,
        })
    }

    /// Imports an identity exported by [`Identity::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        if bytes.len() != SECRET_EXPORT_LEN {
            return Err(IdentityError::WrongLength {
                actual: bytes.len(),
            });
        }
        if bytes[0] != SECRET_EXPORT_VERSION {
            return Err(IdentityError::UnsupportedVersion { version: bytes[0] });
        }
        let sign = Zeroizing::new(<[u8; 32]>::try_from(&bytes[1..33]).expect("length checked"));
        let kex = Zeroizing::new(<[u8; 32]>::try_from(&bytes[33..65]).expect("length checked"));
        Self::from_parts(&sign, &kex)
    }

    /// Exports both secrets for the platform keychain: `0x01 || ed25519 seed || x25519 secret`,
    /// 65 bytes. The buffer is wiped when dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(SECRET_EXPORT_LEN));
        out.push(SECRET_EXPORT_VERSION);
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(self.kex.as_bytes());
        out
    }

    /// The ed25519 public key: the user's identity.
    pub fn sign_public_key(&self) -> SignPublicKey {
        self.sign_public
    }

    /// The ed25519 public key with its decoded point.
    pub(crate) fn decoded_sign_key(&self) -> DecodedSignKey {
        DecodedSignKey::of(self.sign_public, &self.signing)
    }

    /// The x25519 public key, to which room keys are sealed.
    pub fn kex_public_key(&self) -> KexPublicKey {
        self.kex_public
    }

    /// The NATS user public nkey (`U...`) of the signing key.
    pub fn nkey_public(&self) -> String {
        self.sign_public.to_nkey()
    }

    /// The NATS user seed (`SU...`) of the signing key, as NATS clients take it to log in.
    /// This is a secret; the string is wiped when dropped.
    pub fn nkey_seed(&self) -> Zeroizing<String> {
        nkey::encode_user_seed(self.signing.as_bytes())
    }

    /// Signs `message` with the ed25519 key (RFC 8032, deterministic).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature::from_bytes(self.signing.sign(message).to_bytes())
    }

    /// The x25519 secret, for opening sealed room keys inside this crate.
    pub(crate) fn kex_secret_bytes(&self) -> &[u8; 32] {
        self.kex.as_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("sign_public", &self.sign_public)
            .field("kex_public", &self.kex_public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identities_are_distinct_and_round_trip() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.sign_public_key(), b.sign_public_key());
        assert_ne!(a.kex_public_key(), b.kex_public_key());
        let again = Identity::from_secret_bytes(&a.to_secret_bytes()).unwrap();
        assert_eq!(again.sign_public_key(), a.sign_public_key());
        assert_eq!(again.kex_public_key(), a.kex_public_key());
    }

    #[test]
    fn import_rejects_bad_length_and_version() {
        assert_eq!(
            Identity::from_secret_bytes(&[1; 64]).unwrap_err(),
            IdentityError::WrongLength { actual: 64 }
        );
        let mut bytes = [1u8; SECRET_EXPORT_LEN];
        bytes[0] = 9;
        assert_eq!(
            Identity::from_secret_bytes(&bytes).unwrap_err(),
            IdentityError::UnsupportedVersion { version: 9 }
        );
    }

    #[test]
    fn debug_shows_public_keys_only() {
        let id = Identity::generate().unwrap();
        let debug = format!("{id:?}");
        let secret = crate::hex::encode(&id.to_secret_bytes()[1..33]);
        assert!(debug.contains(&id.sign_public_key().to_hex()));
        assert!(!debug.contains(&secret));
        assert!(!debug.contains(id.nkey_seed().as_str()));
    }
}
