//! Public keys as they travel between client, server and cluster.
//!
//! A user is identified by two 32-byte public keys: an ed25519 key that signs and an x25519 key
//! that receives sealed room keys. On the wire both are 64 lowercase hex characters. Parsing
//! accepts either case and normalizes, and rejects wrong lengths, non-hex characters and the
//! all-zero key, like the original system's `ValidateSignPubHex` and `ValidateKexPubHex`. It
//! also rejects keys that can never be used: points of small order (both kinds) and, for ed25519,
//! non-canonical encodings and encodings of no curve point (protocol section 2.2).
//!
//! Signatures are verified in strict mode (protocol section 2.3). The rules that make a
//! signature strict are checked here on the bytes, before ed25519-dalek sees them, so that they do
//! not depend on that library's version.
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
    /// The key is a point of small order (order 1, 2, 4 or 8), in any encoding. For x25519,
    /// every exchange with it gives the all-zero secret, so nothing sealed to it would be secret.
    /// For ed25519, no signature verifies under it in strict mode, and a lenient verifier would
    /// accept signatures under it that no one made. The lists are in protocol section 2.2.
    #[error("{kind} public key is a low-order point")]
    LowOrder {
        /// Which key.
        kind: KeyKind,
    },
    /// The ed25519 key is not in canonical form: its y-coordinate (the 32 bytes with bit 255
    /// cleared, little-endian) is not less than `p = 2^255 - 19`. Only [`KeyKind::Sign`] keys are
    /// checked for this.
    #[error("signing (ed25519) public key is not canonically encoded")]
    NonCanonical,
    /// The ed25519 key is not the encoding of a point on the curve: no `x` fits its `y`. Only
    /// [`KeyKind::Sign`] keys are checked for this.
    #[error("signing (ed25519) public key is not a curve point")]
    NotOnCurve,
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

/// The checks every public key passes after decoding (protocol section 2.2, checks 3 to 6): not
/// all zeros, not a low-order point and, for ed25519, canonical and a curve point.
fn check_usable(kind: KeyKind, bytes: [u8; PUBLIC_KEY_LEN]) -> Result<[u8; 32], KeyError> {
    if bytes.iter().all(|b| *b == 0) {
        return Err(KeyError::AllZero { kind });
    }
    match kind {
        KeyKind::Kex if is_low_order_x25519(&bytes) => Err(KeyError::LowOrder { kind }),
        KeyKind::Kex => Ok(bytes),
        KeyKind::Sign => ed25519_point(&bytes).map(|_| bytes),
    }
}

macro_rules! public_key_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; PUBLIC_KEY_LEN]);

        impl $name {
            /// Parses 64 hex characters of either case. Wrong length, non-hex characters, the
            /// all-zero key and points of small order are rejected, and for ed25519 also
            /// non-canonical encodings and encodings of no curve point (protocol section 2.2).
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
    /// An ed25519 public key: a user's identity, and their NATS nkey. Always the canonical
    /// encoding of a curve point that is not of small order (see [`KeyError::LowOrder`],
    /// [`KeyError::NonCanonical`] and [`KeyError::NotOnCurve`]).
    SignPublicKey,
    KeyKind::Sign
);

public_key_type!(
    /// An x25519 public key, to which room keys are sealed. Besides the all-zero key, the
    /// low-order points are rejected (see [`KeyError::LowOrder`]). Any other 32 bytes are
    /// accepted, as RFC 7748 accepts them.
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

/// The y-coordinates of the ed25519 points of small order, and their non-canonical encodings
/// (`p`, `p + 1`), as 32 bytes with bit 255 (the sign of `x`) cleared. Little-endian, as on the
/// wire. An encoding decodes to a point of small order if and only if its bytes with bit 255
/// cleared are in this list, so these 7 values stand for 14 encodings: the 8 canonical encodings
/// of the 8 points of small order, 2 encodings with `x = 0` and the sign bit set, and 4 with
/// `y >= p`. `tests/strict_signatures.rs` derives the list from the curve. libsodium's
/// small-order blocklist (`ge25519_has_small_order`) has the same 7 values.
const SMALL_ORDER_ED25519_Y: [[u8; 32]; 7] = [
    // 0: the two points of order 4, (±sqrt(-1), 0)
    [0; 32],
    // 1: the identity (0, 1), order 1
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    // two points of order 8 each
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    // p - 1: the point (0, -1), order 2
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // p (= 0, non-canonical): the points of order 4
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // p + 1 (= 1, non-canonical): the identity
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// The order of the ed25519 base point, `L = 2^252 + 27742317777372353535851937790883648493`,
/// little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Why 32 bytes are not a usable ed25519 point: the first failing check of protocol section
/// 2.2, checks 4 to 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PointDefect {
    /// The bytes are one of the 14 encodings of a point of small order.
    SmallOrder,
    /// The y-coordinate is not less than `p`.
    NonCanonical,
    /// No curve point has this y-coordinate.
    NotOnCurve,
}

/// The byte-level checks: not a small-order point in any encoding, then `y < p`. Together they
/// make the encoding canonical, because the only canonical-looking encodings that RFC 8032
/// decoding still rejects (`x = 0` with the sign bit set) are encodings of small-order points.
fn ed25519_encoding_defect(bytes: &[u8; 32]) -> Option<PointDefect> {
    let mut y = *bytes;
    y[31] &= 0x7f;
    if SMALL_ORDER_ED25519_Y.contains(&y) {
        Some(PointDefect::SmallOrder)
    } else if !y_is_below_p(&y) {
        Some(PointDefect::NonCanonical)
    } else {
        None
    }
}

/// The byte-level checks, then decoding, then (as a second opinion on the list, which is
/// complete) ed25519-dalek's own small-order test on the decoded point: the decoded point of a
/// usable signing key, or why it is not one (protocol section 2.2, checks 4 to 6).
fn ed25519_point(bytes: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey, KeyError> {
    let defect = match ed25519_encoding_defect(bytes) {
        Some(defect) => defect,
        None => match ed25519_dalek::VerifyingKey::from_bytes(bytes) {
            Err(_) => PointDefect::NotOnCurve,
            Ok(point) if point.is_weak() => PointDefect::SmallOrder,
            Ok(point) => return Ok(point),
        },
    };
    Err(match defect {
        PointDefect::SmallOrder => KeyError::LowOrder {
            kind: KeyKind::Sign,
        },
        PointDefect::NonCanonical => KeyError::NonCanonical,
        PointDefect::NotOnCurve => KeyError::NotOnCurve,
    })
}

/// Whether a y-coordinate with bit 255 cleared is less than `p = 2^255 - 19`. The values from `p`
/// to `2^255 - 1` are `ed ff .. ff 7f` to `ff ff .. ff 7f` in little-endian.
fn y_is_below_p(y: &[u8; 32]) -> bool {
    !(y[0] >= 0xed && y[1..31].iter().all(|b| *b == 0xff) && y[31] == 0x7f)
}

/// Whether the little-endian 32-byte integer `s` is less than the group order `L`.
fn scalar_is_reduced(s: &[u8; 32]) -> bool {
    for (byte, bound) in s.iter().rev().zip(GROUP_ORDER.iter().rev()) {
        if byte != bound {
            return byte < bound;
        }
    }
    false
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

    /// Verifies an ed25519 signature over `message` with this key, in strict mode (protocol
    /// section 2.3): `S` must be less than the group order, neither this key nor `R` may be a
    /// point of small order in any encoding, both must be canonical, and the cofactorless
    /// equation must give back exactly the bytes of `R`. Any failure is
    /// [`SignatureError::Invalid`].
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        if !byte_rules_hold(&self.0, signature) {
            return Err(SignatureError::Invalid);
        }
        let point = ed25519_point(&self.0).map_err(|_| SignatureError::Invalid)?;
        verify_strict(&point, message, signature)
    }

    /// The public half of `signing`, with no check: it is `[s]B` for the key's clamped scalar
    /// `s` (a multiple of 8 from 2^254 to 2^255 − 8, so never a multiple of the group order),
    /// a point of the prime-order subgroup other than the identity, canonically encoded by
    /// ed25519-dalek. Every check of [`from_bytes`](Self::from_bytes) holds by construction.
    pub(crate) fn of_signing_key(signing: &ed25519_dalek::SigningKey) -> Self {
        Self(signing.verifying_key().to_bytes())
    }

    /// Checks these bytes like [`from_bytes`](Self::from_bytes) and keeps the decoded point
    /// beside them, for a parser that verifies a signature under the key right away
    /// ([`DecodedSignKey::verify`] does not decode the point a second time).
    pub(crate) fn decode(bytes: [u8; PUBLIC_KEY_LEN]) -> Result<DecodedSignKey, KeyError> {
        if bytes.iter().all(|b| *b == 0) {
            return Err(KeyError::AllZero {
                kind: KeyKind::Sign,
            });
        }
        let point = ed25519_point(&bytes)?;
        Ok(DecodedSignKey {
            key: Self(bytes),
            point,
        })
    }
}

/// A [`SignPublicKey`] with its curve point, decoded once ([`SignPublicKey::decode`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecodedSignKey {
    key: SignPublicKey,
    point: ed25519_dalek::VerifyingKey,
}

impl DecodedSignKey {
    /// The public half of `signing`, whose key is `key` (an [`Identity`](crate::Identity)'s,
    /// checked when the identity was made).
    pub(crate) fn of(key: SignPublicKey, signing: &ed25519_dalek::SigningKey) -> Self {
        Self {
            key,
            point: signing.verifying_key(),
        }
    }

    /// The key.
    pub(crate) fn key(&self) -> &SignPublicKey {
        &self.key
    }

    /// [`SignPublicKey::verify`], every rule of it, without decoding the key again.
    pub(crate) fn verify(
        &self,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        if !byte_rules_hold(self.key.as_bytes(), signature) {
            return Err(SignatureError::Invalid);
        }
        verify_strict(&self.point, message, signature)
    }
}

/// Rule 1, then rules 2 and 3 on the bytes (protocol section 2.3): decided here, whatever the
/// library does. A parsed key passed the key's checks already; they are repeated because they
/// cost no curve arithmetic.
fn byte_rules_hold(key: &[u8; PUBLIC_KEY_LEN], signature: &Signature) -> bool {
    let (r, s) = signature.r_and_s();
    scalar_is_reduced(&s)
        && ed25519_encoding_defect(key).is_none()
        && ed25519_encoding_defect(&r).is_none()
}

/// The cofactorless check under a decoded, usable `point`: verify_strict decodes R, repeats the
/// small-order checks and checks rule 4, comparing the computed R with the bytes of R.
fn verify_strict(
    point: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    point
        .verify_strict(message, &sig)
        .map_err(|_| SignatureError::Invalid)
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

    /// The two halves, `R` (a point) and `S` (a scalar).
    fn r_and_s(&self) -> ([u8; 32], [u8; 32]) {
        let mut r = [0; 32];
        let mut s = [0; 32];
        r.copy_from_slice(&self.0[..32]);
        s.copy_from_slice(&self.0[32..]);
        (r, s)
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
    fn the_public_half_of_a_signing_key_passes_every_check_without_being_checked() {
        // Seeds spread over the scalar's range, and the edges: whatever the seed, the derived
        // key is one that `from_bytes` accepts, unchanged.
        let mut seeds: Vec<[u8; 32]> = vec![[0; 32], [0xff; 32], [1; 32]];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2_000 {
            let mut seed = [0; 32];
            for byte in &mut seed {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                *byte = (state >> 56) as u8;
            }
            seeds.push(seed);
        }
        for seed in seeds {
            let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
            let derived = SignPublicKey::of_signing_key(&signing);
            assert_eq!(SignPublicKey::from_bytes(*derived.as_bytes()), Ok(derived));
        }
    }

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
    fn low_order_keys_are_rejected_with_their_kind() {
        let kex = Err(KeyError::LowOrder { kind: KeyKind::Kex });
        let sign = Err(KeyError::LowOrder {
            kind: KeyKind::Sign,
        });
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(KexPublicKey::from_bytes(one), kex);
        assert_eq!(SignPublicKey::from_bytes(one), sign);
        assert_eq!(
            KexPublicKey::from_hex(&hex::encode(&LOW_ORDER_POINTS[2])),
            kex
        );
        let mut zero_high = [0u8; 32];
        zero_high[31] = 0x80;
        assert_eq!(KexPublicKey::from_bytes(zero_high), kex);
        assert_eq!(SignPublicKey::from_bytes(zero_high), sign);
    }

    /// The checks made before ed25519-dalek is called reject every listed encoding and every
    /// `y >= p` by themselves, so verification does not depend on what the library does.
    #[test]
    fn byte_level_checks_reject_small_order_and_non_canonical_encodings_without_the_library() {
        for y in SMALL_ORDER_ED25519_Y {
            for sign in [0, 0x80] {
                let mut encoding = y;
                encoding[31] |= sign;
                assert_eq!(
                    ed25519_encoding_defect(&encoding),
                    Some(PointDefect::SmallOrder),
                    "{encoding:02x?}"
                );
            }
        }
        for low in 0xed..=0xff {
            for top in [0x7f, 0xff] {
                let mut encoding = [0xff; 32];
                encoding[0] = low;
                encoding[31] = top;
                assert_ne!(ed25519_encoding_defect(&encoding), None, "{encoding:02x?}");
            }
        }
        let mut below_p = [0xff; 32];
        below_p[0] = 0xeb;
        below_p[31] = 0x7f;
        assert!(y_is_below_p(&below_p));
    }

    #[test]
    fn scalars_are_reduced_exactly_below_the_group_order() {
        assert!(scalar_is_reduced(&[0; 32]));
        let mut below = GROUP_ORDER;
        below[0] -= 1;
        assert!(scalar_is_reduced(&below));
        assert!(!scalar_is_reduced(&GROUP_ORDER));
        let mut above = GROUP_ORDER;
        above[16] = 1;
        assert!(!scalar_is_reduced(&above));
        assert!(!scalar_is_reduced(&[0xff; 32]));
    }

    #[test]
    fn nkeys_of_unusable_signing_keys_are_rejected_like_their_bytes() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut y_is_p_plus_3 = [0xff; 32];
        y_is_p_plus_3[0] = 0xf0;
        y_is_p_plus_3[31] = 0x7f;
        let mut y_is_2 = [0u8; 32];
        y_is_2[0] = 2;
        for (bytes, expected) in [
            (
                identity,
                KeyError::LowOrder {
                    kind: KeyKind::Sign,
                },
            ),
            (y_is_p_plus_3, KeyError::NonCanonical),
            (y_is_2, KeyError::NotOnCurve),
        ] {
            let text = nkey::encode_user_public(&bytes);
            assert_eq!(SignPublicKey::from_nkey(&text), Err(expected.clone()));
            assert_eq!(SignPublicKey::from_hex(&hex::encode(&bytes)), Err(expected));
        }
    }

    #[test]
    fn nkey_round_trips() {
        let key = SignPublicKey::from_hex(KEY).unwrap();
        let nkey = key.to_nkey();
        assert!(nkey.starts_with('U') && nkey.len() == 56, "{nkey}");
        assert_eq!(SignPublicKey::from_nkey(&nkey).unwrap(), key);
    }
}
