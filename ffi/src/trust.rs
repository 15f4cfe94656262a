//! The client's trust store: pinned room owners, their verification and epoch floors, kept in
//! a file across restarts (docs/client.md, "Trust across restarts").

use std::sync::Arc;

use unibus::client;
use unibus::{RoomId, SignPublicKey};

use crate::errors::TrustError;
use crate::identity::Identity;

/// What the trust store holds for one room.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RoomTrust {
    /// The room id.
    pub room: String,
    /// The pinned owner's signing key, hex: the only key accepted as the room's rekeyer.
    pub owner: String,
    /// Whether the app marked the owner verified.
    pub verified: bool,
    /// The highest epoch of the room this client verified; a lower "latest" is refused.
    pub epoch_floor: u64,
}

impl From<client::RoomTrust> for RoomTrust {
    fn from(trust: client::RoomTrust) -> Self {
        Self {
            room: trust.room.to_string(),
            owner: trust.owner.to_hex(),
            verified: trust.verified,
            epoch_floor: trust.epoch_floor,
        }
    }
}

/// A room owner as shown to people, to compare out of band.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OwnerFingerprint {
    /// The room id.
    pub room: String,
    /// The owner's signing key, hex.
    pub owner: String,
    /// 12 groups of 5 digits separated by spaces, to read aloud.
    pub safety_number: String,
    /// `unibus-owner:v1:<room>:<owner hex>`, for a QR code.
    pub qr_code: String,
}

impl From<client::OwnerFingerprint> for OwnerFingerprint {
    fn from(fingerprint: client::OwnerFingerprint) -> Self {
        Self {
            room: fingerprint.room.to_string(),
            owner: fingerprint.owner.to_hex(),
            safety_number: fingerprint.safety_number,
            qr_code: fingerprint.qr_code,
        }
    }
}

fn room_id(room: &str) -> Result<RoomId, TrustError> {
    RoomId::new(room).map_err(|e| TrustError::InvalidArgument(e.to_string()))
}

fn owner_key(owner: &str) -> Result<SignPublicKey, TrustError> {
    SignPublicKey::from_hex(owner).map_err(|e| TrustError::InvalidArgument(e.to_string()))
}

/// The fingerprint of `owner` (signing key, hex) as the owner of `room`: what the owner's own
/// device shows, to compare with a member's.
#[uniffi::export]
pub fn owner_fingerprint(room: String, owner: String) -> Result<OwnerFingerprint, TrustError> {
    Ok(client::OwnerFingerprint::new(&room_id(&room)?, &owner_key(&owner)?).into())
}

/// Reads a scanned owner code (`unibus-owner:v1:<room>:<owner hex>`) into its fingerprint.
#[uniffi::export]
pub fn parse_owner_code(code: String) -> Result<OwnerFingerprint, TrustError> {
    Ok(client::OwnerFingerprint::from_qr_code(&code)?.into())
}

/// Pinned room owners and epoch floors of one identity. Open a file once per process and give
/// the same object to that identity's sessions.
#[derive(Debug, uniffi::Object)]
pub struct TrustStore(pub(crate) client::TrustStore);

#[uniffi::export]
impl TrustStore {
    /// Opens the trust file at `path` for `identity`, or creates it if there is none (the
    /// directory must exist). A file of another identity raises `WrongIdentity`; an unreadable
    /// one `Corrupt` or `UnsupportedVersion`, and is left untouched.
    #[uniffi::constructor]
    pub fn open(path: String, identity: Arc<Identity>) -> Result<Arc<Self>, TrustError> {
        Ok(Arc::new(Self(client::TrustStore::open(
            path,
            &identity.0.sign_public_key(),
        )?)))
    }

    /// A store in memory only: it does not survive a restart.
    #[uniffi::constructor]
    pub fn in_memory(identity: Arc<Identity>) -> Arc<Self> {
        Arc::new(Self(client::TrustStore::in_memory(
            &identity.0.sign_public_key(),
        )))
    }

    /// The file behind the store; null in memory.
    pub fn path(&self) -> Option<String> {
        self.0.path().map(|p| p.to_string_lossy().into_owned())
    }

    /// What the store holds for `room`; null before any reply named its owner.
    pub fn room(&self, room: String) -> Result<Option<RoomTrust>, TrustError> {
        Ok(self.0.room(&room_id(&room)?).map(Into::into))
    }

    /// Every room the store holds, sorted by id.
    pub fn rooms(&self) -> Vec<RoomTrust> {
        self.0.rooms().into_iter().map(Into::into).collect()
    }

    /// The pinned owner of `room` as a safety number and QR code; null if none is pinned.
    pub fn owner_fingerprint(&self, room: String) -> Result<Option<OwnerFingerprint>, TrustError> {
        Ok(self.0.owner_fingerprint(&room_id(&room)?).map(Into::into))
    }

    /// Marks `owner` (hex) verified for `room` after an out-of-band comparison; pins it if none
    /// is. Raises `OwnerMismatch` if another owner is pinned (see `accept_owner`).
    pub fn mark_owner_verified(&self, room: String, owner: String) -> Result<(), TrustError> {
        Ok(self
            .0
            .mark_owner_verified(&room_id(&room)?, &owner_key(&owner)?)?)
    }

    /// Pins `owner` (hex) for `room` in place of any other, verified: accepts a change of owner
    /// deliberately, after verifying the new one out of band. The epoch floor is kept.
    pub fn accept_owner(&self, room: String, owner: String) -> Result<(), TrustError> {
        Ok(self.0.accept_owner(&room_id(&room)?, &owner_key(&owner)?)?)
    }

    /// Forgets `room`'s pin and floor (a deliberate reset).
    pub fn forget_room(&self, room: String) -> Result<(), TrustError> {
        Ok(self.0.forget_room(&room_id(&room)?)?)
    }
}
