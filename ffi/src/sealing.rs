//! Sealed room keys and rekey manifests.

use std::sync::Arc;

use unibus::history::HistoryShare;
use unibus::manifest::{MemberPart, SignedManifest};
use unibus::sealing::{self, SealBinding, SealedRoomKey};
use unibus::{KexPublicKey, RoomId, SignPublicKey};

use crate::errors::SealError;
use crate::identity::Identity;

/// A room's 32-byte symmetric key. Wiped when this object is destroyed.
#[derive(Debug, uniffi::Object)]
pub struct RoomKey(pub(crate) sealing::RoomKey);

#[uniffi::export]
impl RoomKey {
    /// A fresh key from the OS CSPRNG.
    #[uniffi::constructor]
    pub fn generate() -> Result<Arc<Self>, SealError> {
        Ok(Arc::new(Self(sealing::RoomKey::generate()?)))
    }

    /// Wraps 32 key bytes.
    #[uniffi::constructor]
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Arc<Self>, SealError> {
        let bytes: [u8; sealing::ROOM_KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            SealError::InvalidInput(format!("a room key is 32 bytes, got {}", b.len()))
        })?;
        Ok(Arc::new(Self(sealing::RoomKey::from_bytes(bytes))))
    }

    /// The key bytes, for the app's message encryption. This copies the secret out of Rust.
    pub fn expose_bytes(&self) -> Vec<u8> {
        self.0.expose_secret().to_vec()
    }
}

/// A member to rekey for: the two public keys they registered, as hex.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Recipient {
    /// The member's ed25519 key.
    pub sign_public_key: String,
    /// The member's x25519 key.
    pub kex_public_key: String,
}

/// Seals `room_key` to one member's x25519 key for `room_id` at `epoch`, bound to the rekeyer's
/// ed25519 key. Returns the 81-byte sealed copy.
#[uniffi::export]
pub fn seal_room_key(
    room_key: &RoomKey,
    room_id: String,
    epoch: u64,
    recipient_kex_public_key: String,
    rekeyer_sign_public_key: String,
) -> Result<Vec<u8>, SealError> {
    let room = RoomId::new(&room_id)?;
    let recipient = KexPublicKey::from_hex(&recipient_kex_public_key)?;
    let rekeyer = SignPublicKey::from_hex(&rekeyer_sign_public_key)?;
    let binding = SealBinding {
        room: &room,
        epoch,
        recipient: &recipient,
        rekeyer: &rekeyer,
    };
    Ok(sealing::seal_room_key(&room_key.0, &binding)?
        .to_bytes()
        .to_vec())
}

/// Opens a sealed copy addressed to `identity` for `room_id` at `epoch` by the rekeyer.
#[uniffi::export]
pub fn open_room_key(
    identity: &Identity,
    sealed: Vec<u8>,
    room_id: String,
    epoch: u64,
    rekeyer_sign_public_key: String,
) -> Result<Arc<RoomKey>, SealError> {
    let sealed = SealedRoomKey::from_bytes(&sealed)?;
    let room = RoomId::new(&room_id)?;
    let rekeyer = SignPublicKey::from_hex(&rekeyer_sign_public_key)?;
    let key = sealing::open_room_key(&identity.0, &sealed, &room, epoch, &rekeyer)?;
    Ok(Arc::new(RoomKey(key)))
}

/// Rekeys on the device: seals `room_key` to every recipient and signs the manifest for `epoch`
/// (replacing `previous_epoch`, 0 for a new room). Returns the signed manifest's wire bytes.
///
/// Sealing is CPU work (about 0.1 ms per member), so it runs on a background thread and this
/// function is `suspend`/`async` in the foreign language.
#[uniffi::export]
pub async fn rekey_room(
    rekeyer: Arc<Identity>,
    room_id: String,
    epoch: u64,
    previous_epoch: u64,
    room_key: Arc<RoomKey>,
    recipients: Vec<Recipient>,
) -> Result<Vec<u8>, SealError> {
    let room = RoomId::new(&room_id)?;
    let recipients = recipients
        .iter()
        .map(|r| {
            Ok(unibus::manifest::Recipient {
                member: SignPublicKey::from_hex(&r.sign_public_key)?,
                kex: KexPublicKey::from_hex(&r.kex_public_key)?,
            })
        })
        .collect::<Result<Vec<_>, unibus::keys::KeyError>>()?;
    // Sealing is CPU work: the runtime's blocking pool keeps it off the async workers.
    crate::runtime::run(async move {
        tokio::task::spawn_blocking(move || {
            SignedManifest::rekey(
                &rekeyer.0,
                &room,
                epoch,
                previous_epoch,
                &room_key.0,
                &recipients,
            )
            .map(|signed| signed.to_bytes())
            .map_err(SealError::from)
        })
        .await
        .map_err(|e| SealError::Other(format!("rekey task failed: {e}")))?
    })
    .await
}

/// Verifies a whole signed manifest (room, epoch, the trusted rekeyer's signature, the entries
/// against the signed Merkle root; protocol §8.5) and opens this identity's copy of the room key.
#[uniffi::export]
pub fn open_manifest(
    identity: &Identity,
    manifest: Vec<u8>,
    room_id: String,
    epoch: u64,
    trusted_rekeyer_sign_public_key: String,
) -> Result<Arc<RoomKey>, SealError> {
    let signed = SignedManifest::from_bytes(&manifest)?;
    let room = RoomId::new(&room_id)?;
    let rekeyer = SignPublicKey::from_hex(&trusted_rekeyer_sign_public_key)?;
    let key = signed.open(&identity.0, &room, epoch, &rekeyer)?;
    Ok(Arc::new(RoomKey(key)))
}

/// Verifies one member's part of a manifest (the signed header, the member's entry and its
/// inclusion proof; protocol §8.5) and opens this identity's copy of the room key. The part is
/// what a member needs instead of the whole manifest: a few hundred bytes in any room.
#[uniffi::export]
pub fn open_member_part(
    identity: &Identity,
    member_part: Vec<u8>,
    room_id: String,
    epoch: u64,
    trusted_rekeyer_sign_public_key: String,
) -> Result<Arc<RoomKey>, SealError> {
    let part = MemberPart::from_bytes(&member_part)?;
    let room = RoomId::new(&room_id)?;
    let rekeyer = SignPublicKey::from_hex(&trusted_rekeyer_sign_public_key)?;
    let key = part.open(&identity.0, &room, epoch, &rekeyer)?;
    Ok(Arc::new(RoomKey(key)))
}

/// Verifies a history share (the room owner's copy of an earlier epoch's key for a member who
/// was not its recipient; protocol §16.3) and opens this identity's copy of the room key.
#[uniffi::export]
pub fn open_history_share(
    identity: &Identity,
    share: Vec<u8>,
    room_id: String,
    epoch: u64,
    trusted_owner_sign_public_key: String,
) -> Result<Arc<RoomKey>, SealError> {
    let share = HistoryShare::from_bytes(&share)?;
    let room = RoomId::new(&room_id)?;
    let owner = SignPublicKey::from_hex(&trusted_owner_sign_public_key)?;
    let key = share.open(&identity.0, &room, epoch, &owner)?;
    Ok(Arc::new(RoomKey(key)))
}
