//! Sealed room keys: a room's 32-byte key, encrypted to one member's x25519 key with HPKE.
//!
//! The suite is RFC 9180 base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20-Poly1305 (suite ids `0x0020`, `0x0001`, `0x0003`), which Apple CryptoKit and Tink
//! provide. The HPKE `info` binds a version label, the room id, the epoch, the recipient's x25519
//! key and the rekeyer's ed25519 key, so a copy sealed for one room, epoch or member does not open
//! as another's. The AAD is empty. A sealed key travels as 81 bytes:
//!
//! ```text
//! version (1 byte, 0x01) || enc (32 bytes) || ciphertext (32 bytes) || tag (16 bytes)
//! ```
//!
//! `docs/protocol.md` specifies the `info` layout byte by byte, and `tests/vectors/` holds golden
//! vectors.
//!
//! ```
//! use unibus::{Identity, RoomId, sealing::{RoomKey, SealBinding, seal_room_key, open_room_key}};
//!
//! let owner = Identity::generate()?;
//! let member = Identity::generate()?;
//! let room = RoomId::new("general")?;
//! let key = RoomKey::generate()?;
//!
//! let sealed = seal_room_key(&key, &SealBinding {
//!     room: &room,
//!     epoch: 1,
//!     recipient: &member.kex_public_key(),
//!     rekeyer: &owner.sign_public_key(),
//! })?;
//! let opened = open_room_key(&member, &sealed, &room, 1, &owner.sign_public_key())?;
//! assert_eq!(opened.expose_secret(), key.expose_secret());
//! assert!(open_room_key(&member, &sealed, &room, 2, &owner.sign_public_key()).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::convert::Infallible;
use std::fmt;

use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::keys::{KexPublicKey, SignPublicKey};
use crate::room::RoomId;
use crate::Identity;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// Version byte of the sealed-key format and `info` layout described in the module docs.
pub const SEALED_ROOM_KEY_VERSION: u8 = 1;
/// Length of a room key in bytes.
pub const ROOM_KEY_LEN: usize = 32;
/// Length of the HPKE encapsulated key (an X25519 public key).
pub const ENC_LEN: usize = 32;
/// Length of the ciphertext with its Poly1305 tag.
pub const CIPHERTEXT_LEN: usize = ROOM_KEY_LEN + 16;
/// Length of a serialized [`SealedRoomKey`].
pub const SEALED_ROOM_KEY_LEN: usize = 1 + ENC_LEN + CIPHERTEXT_LEN;
/// The label that starts the HPKE `info` of version 1.
pub const INFO_LABEL: &[u8] = b"unibus/room-key/v1";

/// Why a room key could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The OS random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Rng(String),
    /// The x25519 exchange gave the all-zero result: a key is a low-order point. The key is
    /// unusable; the member must register a proper key.
    #[error("a key-exchange key is a low-order point (all-zero shared secret)")]
    LowOrderKey,
    /// The sealed key does not open with this identity for this room, epoch and rekeyer: it was
    /// sealed for someone or something else, or was altered.
    #[error("the sealed room key does not open for this member, room, epoch and rekeyer")]
    OpenFailed,
    /// The serialized sealed key has the wrong length.
    #[error("a sealed room key is {SEALED_ROOM_KEY_LEN} bytes, got {actual}")]
    WrongLength {
        /// How many bytes were given.
        actual: usize,
    },
    /// The serialized sealed key has a version this SDK does not know.
    #[error("sealed room key has unsupported version {version}; update the SDK")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
}

/// A room's symmetric key. Wiped on drop; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomKey(Zeroizing<[u8; ROOM_KEY_LEN]>);

impl RoomKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; ROOM_KEY_LEN]);
        getrandom::fill(key.as_mut()).map_err(|e| SealError::Rng(e.to_string()))?;
        Ok(Self(key))
    }

    /// Wraps 32 raw key bytes.
    pub fn from_bytes(bytes: [u8; ROOM_KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes, for the app's message encryption. Keep the borrow short.
    pub fn expose_secret(&self) -> &[u8; ROOM_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomKey(<redacted>)")
    }
}

/// What a sealed copy is bound to. All four go into the HPKE `info`.
#[derive(Debug, Clone, Copy)]
pub struct SealBinding<'a> {
    /// The room.
    pub room: &'a RoomId,
    /// The key epoch.
    pub epoch: u64,
    /// The member's x25519 key the copy is sealed to.
    pub recipient: &'a KexPublicKey,
    /// The ed25519 key of whoever seals (the rekeyer, normally the room owner).
    pub rekeyer: &'a SignPublicKey,
}

impl SealBinding<'_> {
    /// The HPKE `info` of format version 1:
    /// `INFO_LABEL || u16be(len(room)) || room || u64be(epoch) || recipient (32) || rekeyer (32)`.
    pub fn info(&self) -> Vec<u8> {
        let room = self.room.as_str().as_bytes();
        let mut info = Vec::with_capacity(INFO_LABEL.len() + 2 + room.len() + 8 + 64);
        info.extend_from_slice(INFO_LABEL);
        // RoomId is at most 128 bytes, so its length fits in a u16.
        info.extend_from_slice(&(room.len() as u16).to_be_bytes());
        info.extend_from_slice(room);
        info.extend_from_slice(&self.epoch.to_be_bytes());
        info.extend_from_slice(self.recipient.as_bytes());
        info.extend_from_slice(self.rekeyer.as_bytes());
        info
    }
}

/// One member's sealed copy of a room key. See the [module documentation](self) for the format.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealedRoomKey {
    enc: [u8; ENC_LEN],
    ciphertext: [u8; CIPHERTEXT_LEN],
}

impl SealedRoomKey {
    /// Parses the 81-byte wire form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != SEALED_ROOM_KEY_LEN {
            return Err(SealError::WrongLength {
                actual: bytes.len(),
            });
        }
        if bytes[0] != SEALED_ROOM_KEY_VERSION {
            return Err(SealError::UnsupportedVersion { version: bytes[0] });
        }
        let mut sealed = Self {
            enc: [0; ENC_LEN],
            ciphertext: [0; CIPHERTEXT_LEN],
        };
        sealed.enc.copy_from_slice(&bytes[1..1 + ENC_LEN]);
        sealed.ciphertext.copy_from_slice(&bytes[1 + ENC_LEN..]);
        Ok(sealed)
    }

    /// The 81-byte wire form.
    pub fn to_bytes(&self) -> [u8; SEALED_ROOM_KEY_LEN] {
        let mut out = [0u8; SEALED_ROOM_KEY_LEN];
        out[0] = SEALED_ROOM_KEY_VERSION;
        out[1..1 + ENC_LEN].copy_from_slice(&self.enc);
        out[1 + ENC_LEN..].copy_from_slice(&self.ciphertext);
        out
    }
}

impl fmt::Debug for SealedRoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedRoomKey({})", crate::hex::encode(&self.to_bytes()))
    }
}

/// Seals `key` for one member, bound to `binding`.
pub fn seal_room_key(key: &RoomKey, binding: &SealBinding<'_>) -> Result<SealedRoomKey, SealError> {
    let mut ikm = Zeroizing::new([0u8; 32]);
    getrandom::fill(ikm.as_mut()).map_err(|e| SealError::Rng(e.to_string()))?;
    seal_with_ephemeral_ikm(key, binding, &ikm)
}

/// Opens a copy sealed to `identity`'s x25519 key for `room` at `epoch` by `rekeyer`.
pub fn open_room_key(
    identity: &Identity,
    sealed: &SealedRoomKey,
    room: &RoomId,
    epoch: u64,
    rekeyer: &SignPublicKey,
) -> Result<RoomKey, SealError> {
    let binding = SealBinding {
        room,
        epoch,
        recipient: &identity.kex_public_key(),
        rekeyer,
    };
    let plaintext = hpke_open(
        identity.kex_secret_bytes(),
        &sealed.enc,
        &binding.info(),
        &[],
        &sealed.ciphertext,
    )?;
    let bytes: [u8; ROOM_KEY_LEN] = plaintext
        .as_slice()
        .try_into()
        .map_err(|_| SealError::OpenFailed)?;
    Ok(RoomKey::from_bytes(bytes))
}

/// Sealing with the ephemeral key derived from `ikm` (RFC 9180 `DeriveKeyPair`). Production
/// passes fresh CSPRNG bytes; golden vectors pass fixed ones.
pub(crate) fn seal_with_ephemeral_ikm(
    key: &RoomKey,
    binding: &SealBinding<'_>,
    ikm: &[u8; 32],
) -> Result<SealedRoomKey, SealError> {
    let (enc, ciphertext) = hpke_seal(
        binding.recipient.as_bytes(),
        &binding.info(),
        &[],
        key.expose_secret(),
        ikm,
    )?;
    Ok(SealedRoomKey {
        enc,
        ciphertext: ciphertext
            .as_slice()
            .try_into()
            .expect("ChaCha20-Poly1305 output is plaintext (32) + tag (16) bytes"),
    })
}

/// An RNG that yields one fixed 32-byte block: HPKE draws exactly the ephemeral IKM from it.
struct FixedIkm<'a>(&'a [u8; 32], usize);

impl rand_core::TryRng for FixedIkm<'_> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        unreachable!("HPKE only calls fill_bytes for the ephemeral IKM")
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        unreachable!("HPKE only calls fill_bytes for the ephemeral IKM")
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let end = self.1 + dst.len();
        assert!(
            end <= 32,
            "HPKE asked for more than the 32-byte ephemeral IKM"
        );
        dst.copy_from_slice(&self.0[self.1..end]);
        self.1 = end;
        Ok(())
    }
}

impl rand_core::TryCryptoRng for FixedIkm<'_> {}

fn map_hpke(e: hpke::HpkeError) -> SealError {
    match e {
        hpke::HpkeError::EncapError | hpke::HpkeError::DecapError => SealError::LowOrderKey,
        _ => SealError::OpenFailed,
    }
}

/// RFC 9180 `SealBase` + one `Seal`, returning `(enc, ciphertext || tag)`.
fn hpke_seal(
    recipient: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    ikm: &[u8; 32],
) -> Result<([u8; ENC_LEN], Vec<u8>), SealError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient).map_err(map_hpke)?;
    let (enc, ciphertext) = hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        aad,
        &mut FixedIkm(ikm, 0),
    )
    .map_err(map_hpke)?;
    let mut enc_bytes = [0u8; ENC_LEN];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    Ok((enc_bytes, ciphertext))
}

/// RFC 9180 `OpenBase` + one `Open`.
fn hpke_open(
    secret: &[u8; 32],
    enc: &[u8; ENC_LEN],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(secret).map_err(map_hpke)?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(map_hpke)?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(&OpModeR::Base, &sk, &enc, info, ciphertext, aad)
        .map(Zeroizing::new)
        .map_err(map_hpke)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(text: &str) -> [u8; N] {
        crate::hex::decode_array(text).unwrap()
    }

    /// RFC 9180 appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base
    /// mode, sequence number 0. This runs the exact seal and open paths the SDK uses.
    #[test]
    fn hpke_matches_rfc9180_a_2_1() {
        let ikm_e = unhex::<32>("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b");
        let pk_rm = unhex::<32>("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a");
        let sk_rm = unhex::<32>("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb");
        let info = unhex::<20>("4f6465206f6e2061204772656369616e2055726e");
        let pt = unhex::<29>("4265617574792069732074727574682c20747275746820626561757479");
        let aad = unhex::<7>("436f756e742d30");
        let enc = unhex::<32>("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a");
        let ct = unhex::<45>(
            "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
        );

        let (got_enc, got_ct) = hpke_seal(&pk_rm, &info, &aad, &pt, &ikm_e).unwrap();
        assert_eq!(got_enc, enc);
        assert_eq!(got_ct, ct);
        let opened = hpke_open(&sk_rm, &enc, &info, &aad, &ct).unwrap();
        assert_eq!(opened.as_slice(), pt);
    }

    #[test]
    fn sealing_to_a_low_order_point_is_rejected() {
        // KexPublicKey refuses low-order points, so go below it: u = 1 has order 4, and every
        // clamped scalar maps it to zero. HPKE itself must still refuse.
        let mut low = [0u8; 32];
        low[0] = 1;
        assert_eq!(
            hpke_seal(&low, b"info", &[], &[0; 32], &[7; 32]),
            Err(SealError::LowOrderKey)
        );
    }

    #[test]
    fn opening_an_enc_that_is_a_low_order_point_is_rejected() {
        let member = Identity::generate().unwrap();
        let room = RoomId::new("r").unwrap();
        let mut bytes = [0u8; SEALED_ROOM_KEY_LEN];
        bytes[0] = SEALED_ROOM_KEY_VERSION; // enc = all zeros, a low-order point
        let sealed = SealedRoomKey::from_bytes(&bytes).unwrap();
        let rekeyer = Identity::generate().unwrap().sign_public_key();
        assert_eq!(
            open_room_key(&member, &sealed, &room, 1, &rekeyer).unwrap_err(),
            SealError::LowOrderKey
        );
    }
}
