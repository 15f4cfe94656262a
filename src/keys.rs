//! Public keys as they travel between client, server and cluster.
//!
//! A user is identified by two 32-byte public keys: an ed25519 key that signs and an x25519 key
//! that receives sealed room keys. On the wire both are 64 lowercase hex characters. Parsing
//! accepts either case and normalizes, and rejects wrong lengths, non-hex characters and the
//! all-zero key, exactly like the original system's `ValidateSignPubHex` and `ValidateKexPubHex`.
//!
//! ```
//! use unibus::keys::{SignPublicKey, KeyError};
//!
//! let key = SignPublicKey::from_hex(
//!     "D75A980182B10AB7D54BFED3C964073A0EE172F3DAA62325AF021A68F707511A",
//! )?;
//! assert_eq!(
//!     key.to_hex(),
//!     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
//! );
//! assert!(matches!(SignPublicKey::from_hex("00"), Err(KeyError::WrongLength { .. })));
//! # Ok::<(), KeyError>(())
//! ```

use std::fmt;

use crate::hex::{self, HexError};
use crate::nkey;

/// Length of an ed25519 or x25519 public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a public key in hex characters.
pub const PUBLIC_KEY_HEX_LEN: usize = 2 * PUBLIC_KEY_LEN;
/// Length of an ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Which of the two user keys a [`KeyError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// The ed25519 signing key, which is also the user's NATS nkey.
    Sign,
    /// The x25519 key-exchange key, to which room keys are sealed.
    Kex,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Sign => "signing (ed25519)",
            KeyKind::Kex => "key-exchange (x25519)",
        })
    }
}

/// A public key that was rejected. The message never contains the rejected input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The hex text does not have [`PUBLIC_KEY_HEX_LEN`] characters.
    #[error("{kind} public key must be {PUBLIC_KEY_HEX_LEN} hex characters, got {actual}")]
    WrongLength {
        /// Which key.
        kind: KeyKind,
        /// How many characters were given.
        actual: usize,
    },
    /// A character is not a hex digit.
    #[error("{kind} public key has a non-hex character at position {position}")]
    NotHex {
        /// Which key.
        kind: KeyKind,
        /// Byte offset of the first bad character.
        position: usize,
    },
    /// The key is all zeros, which is never a usable key.
    #[error("{kind} public key is all zeros")]
    AllZero {
        /// Which key.
        kind: KeyKind,
    },
    /// The x25519 key is a point of small order: every exchange with it gives the all-zero
    /// secret, so nothing sealed to it would be secret.
    #[error("key-exchange (x25519) public key is a low-order point")]
    LowOrder,
    /// The nkey text is not a NATS user public key (`U...`).
    #[error("not a NATS user public key: {reason}")]
    BadNkey {
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn parse_hex(kind: KeyKind, text: &str) -> Result<[u8; PUBLIC_KEY_LEN], KeyError> {
    let bytes = hex::decode_array::<PUBLIC_KEY_LEN>(text).map_err(|e| match e {
        HexError::Length { actual } => KeyError::WrongLength { kind, actual },
        HexError::Character { position } => KeyError::NotHex { kind, position },
    })?;
    check_usable(kind, bytes)
}

/// The checks every public key passes: not all zeros and, for x25519, not a low-order point.
fn check_usable(kind: KeyKind, bytes: [u8; PUBLIC_KEY_LEN]) -> Result<[u8; 32], KeyError> {
    if bytes.iter().all(|b| *b == 0) {
        Err(KeyError::AllZero { kind })
    } else if kind == KeyKind::Kex && is_low_order_x25519(&bytes) {
        Err(KeyError::LowOrder)
    } else {
        Ok(bytes)
    }
}

macro_rules! public_key_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; PUBLIC_KEY_LEN]);

        impl $name {
            /// Parses 64 hex characters of either case. Wrong length, non-hex characters and the
            /// all-zero key are rejected (and, for x25519, the low-order points).
            pub fn from_hex(text: &str) -> Result<Self, KeyError> {
                parse_hex($kind, text).map(Self)
            }

            /// Wraps 32 raw bytes, with the same checks as [`from_hex`](Self::from_hex).
            pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Result<Self, KeyError> {
                check_usable($kind, bytes).map(Self)
            }

            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
                &self.0
            }

            /// The canonical form: 64 lowercase hex characters.
            pub fn to_hex(&self) -> String {
                hex::encode(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl std::str::FromStr for $name {
            type Err = KeyError;
            fn from_str(text: &str) -> Result<Self, KeyError> {
                Self::from_hex(text)
            }
        }

        crate::serde_as_string!($name);
    };
}

public_key_type!(
    /// An ed25519 public key: a user's identity, and their NATS nkey.
    SignPublicKey,
    KeyKind::Sign
);

public_key_type!(
    /// An x25519 public key, to which room keys are sealed. Besides the all-zero key, the
    /// low-order points are rejected (see [`KeyError::LowOrder`]).
    KexPublicKey,
    KeyKind::Kex
);

/// The u-coordinates of the x25519 points of small order, and their non-canonical encodings
/// (`p`, `p + 1`), with bit 255 cleared as RFC 7748 decoding clears it. Every clamped scalar maps
/// them to zero. Little-endian, as on the wire.
const LOW_ORDER_POINTS: [[u8; 32]; 7] = [
    // 0
    [0; 32],
    // 1
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    // points of order 8
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    // p - 1
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // p (= 0)
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // p + 1 (= 1)
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

fn is_low_order_x25519(bytes: &[u8; 32]) -> bool {
    let mut u = *bytes;
    u[31] &= 0x7f;
    LOW_ORDER_POINTS.contains(&u)
}

impl SignPublicKey {
    /// The NATS nkey form of this key (`U` followed by 55 base32 characters), with which the user
    /// logs in to the cluster.
    pub fn to_nkey(&self) -> String {
        nkey::encode_user_public(&self.0)
    }

    /// Parses a NATS user nkey (`U...`) back into the ed25519 key it encodes.
    pub fn from_nkey(text: &str) -> Result<Self, KeyError> {
        let bytes =
            nkey::decode_user_public(text).map_err(|reason| KeyError::BadNkey { reason })?;
        Self::from_bytes(bytes)
    }

    /// Verifies an ed25519 signature over `message` with this key, in strict mode (RFC 8032
    /// section 5.1.7, rejecting non-canonical and small-order encodings).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| SignatureError::Invalid)?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &sig)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// Checks a signing public key the way registration does and returns its canonical hex.
///
/// The counterpart of the original system's `ValidateSignPubHex`.
pub fn validate_sign_public_key_hex(text: &str) -> Result<String, KeyError> {
    SignPublicKey::from_hex(text).map(|k| k.to_hex())
}

/// Checks a key-exchange public key the way registration does and returns its canonical hex.
///
/// The counterpart of the original system's `ValidateKexPubHex`.
pub fn validate_kex_public_key_hex(text: &str) -> Result<String, KeyError> {
    KexPublicKey::from_hex(text).map(|k| k.to_hex())
}

/// An ed25519 signature: 64 bytes, 128 hex characters on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; SIGNATURE_LEN]);

/// A signature that is malformed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature text is not 128 hex characters.
    #[error("signature must be {} hex characters", 2 * SIGNATURE_LEN)]
    Malformed,
    /// The signature does not verify under the claimed key.
    #[error("signature does not verify")]
    Invalid,
}

impl Signature {
    /// Wraps 64 raw signature bytes.
    pub fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses 128 hex characters of either case.
    pub fn from_hex(text: &str) -> Result<Self, SignatureError> {
        hex::decode_array::<SIGNATURE_LEN>(text)
            .map(Self)
            .map_err(|_| SignatureError::Malformed)
    }

    /// The raw 64 bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }

    /// 128 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn accepts_any_case_and_normalizes_to_lowercase() {
        let upper = KEY.to_uppercase();
        assert_eq!(validate_sign_public_key_hex(&upper).unwrap(), KEY);
        assert_eq!(validate_kex_public_key_hex(&upper).unwrap(), KEY);
    }

    #[test]
    fn rejects_wrong_length_non_hex_and_all_zero() {
        assert_eq!(
            SignPublicKey::from_hex(&KEY[..62]),
            Err(KeyError::WrongLength {
                kind: KeyKind::Sign,
                actual: 62
            })
        );
        assert_eq!(
            KexPublicKey::from_hex(&format!("{KEY}00")),
            Err(KeyError::WrongLength {
                kind: KeyKind::Kex,
                actual: 66
            })
        );
        let mut bad = KEY.to_string();
        bad.replace_range(10..11, "g");
        assert_eq!(
            SignPublicKey::from_hex(&bad),
            Err(KeyError::NotHex {
                kind: KeyKind::Sign,
                position: 10
            })
        );
        assert_eq!(
            KexPublicKey::from_hex(&"0".repeat(64)),
            Err(KeyError::AllZero { kind: KeyKind::Kex })
        );
        assert_eq!(
            SignPublicKey::from_bytes([0; 32]),
            Err(KeyError::AllZero {
                kind: KeyKind::Sign
            })
        );
    }

    #[test]
    fn surrounding_whitespace_is_a_length_error_not_silently_trimmed() {
        assert!(matches!(
            SignPublicKey::from_hex(&format!(" {KEY}")),
            Err(KeyError::WrongLength { .. })
        ));
    }

    #[test]
    fn error_messages_do_not_echo_the_input() {
        let mut bad = KEY.to_string();
        bad.replace_range(0..1, "z");
        let message = SignPublicKey::from_hex(&bad).unwrap_err().to_string();
        assert!(!message.contains(&bad[1..]), "{message}");
    }

    #[test]
    fn every_listed_low_order_point_gives_the_all_zero_exchange() {
        let scalar = [0x5a; 32];
        for point in LOW_ORDER_POINTS {
            assert_eq!(x25519_dalek::x25519(scalar, point), [0; 32], "{point:02x?}");
            let mut high = point;
            high[31] |= 0x80;
            assert_eq!(x25519_dalek::x25519(scalar, high), [0; 32], "{high:02x?}");
            assert!(is_low_order_x25519(&high));
        }
    }

    #[test]
    fn low_order_x25519_keys_are_rejected_but_not_as_signing_keys() {
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(KexPublicKey::from_bytes(one), Err(KeyError::LowOrder));
        assert_eq!(
            KexPublicKey::from_hex(&hex::encode(&LOW_ORDER_POINTS[2])),
            Err(KeyError::LowOrder)
        );
        let mut zero_high = [0u8; 32];
        zero_high[31] = 0x80;
        assert_eq!(KexPublicKey::from_bytes(zero_high), Err(KeyError::LowOrder));
        assert!(SignPublicKey::from_bytes(one).is_ok());
    }

    #[test]
    fn nkey_round_trips() {
        let key = SignPublicKey::from_hex(KEY).unwrap();
        let nkey = key.to_nkey();
        assert!(nkey.starts_with('U') && nkey.len() == 56, "{nkey}");
        assert_eq!(SignPublicKey::from_nkey(&nkey).unwrap(), key);
    }
}
