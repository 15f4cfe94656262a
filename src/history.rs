//! History shares: a room's owner gives a member the key of an epoch it was not a recipient of.
//!
//! A member added to a room reads from the first epoch sealed to it: the manifests of earlier
//! epochs have no entry for it. When the owner's history policy says so, the owner's device
//! seals an earlier epoch's room key to the new member, exactly as a manifest entry is sealed
//! (protocol §7), and signs a **history share**: the epoch's signed head (so the member can
//! verify the senders of that epoch's messages, §14.5), the member's entry and the owner's
//! signature over both. HPKE base mode does not authenticate whoever sealed, so the owner's
//! signature is what the member trusts; the server stores and serves the share but cannot
//! forge, re-address or alter one. The wire form (version 1, `docs/protocol.md` §16):
//!
//! ```text
//! share     = 0x01 || head (header || header signature, 151 + n) || entry (145)
//!             || signature (64)
//! signature = ed25519 signature by the owner over (SIGNING_CONTEXT || every byte before it)
//! ```
//!
//! ```
//! use unibus::{Identity, RoomId};
//! use unibus::history::HistoryShare;
//! use unibus::manifest::{Recipient, SignedManifest};
//! use unibus::sealing::RoomKey;
//!
//! let owner = Identity::generate()?;
//! let newcomer = Identity::generate()?;
//! let room = RoomId::new("general")?;
//! let key = RoomKey::generate()?;
//! // Epoch 1 was sealed to the owner alone.
//! let signed = SignedManifest::rekey(&owner, &room, 1, 0, &key, &[Recipient::of(&owner)])?;
//!
//! // On the owner's device: share epoch 1 with the newcomer.
//! let share = HistoryShare::seal(&owner, &signed.head(), &key, &Recipient::of(&newcomer))?;
//! let wire = share.to_bytes();
//!
//! // On the newcomer's device, with the room's pinned owner key.
//! let opened = HistoryShare::from_bytes(&wire)?.open(&newcomer, &room, 1, &owner.sign_public_key())?;
//! assert_eq!(opened.expose_secret(), key.expose_secret());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::keys::{SignPublicKey, Signature, SIGNATURE_LEN};
use crate::manifest::{
    ManifestEntry, ManifestError, ManifestHeader, Recipient, SignedHead, ENTRY_LEN, HEADER_BASE_LEN,
};
use crate::room::RoomId;
use crate::sealing::{seal_room_key, RoomKey, SealBinding, SealError, SealedRoomKey};
use crate::wire::{Reader, Short};
use crate::Identity;

/// Version byte of the history share format. It differs from the member part's (2), so the
/// first byte of a `key` reply tells the two apart (`docs/protocol.md` §12.4).
pub const HISTORY_SHARE_VERSION: u8 = 1;
/// Domain-separation prefix of the owner's signature: it covers `SIGNING_CONTEXT || share
/// without its signature`.
pub const SIGNING_CONTEXT: &[u8] = b"unibus/history-share/v1";

/// Length in bytes of a [`HistoryShare`]'s wire form for a room id of `room_len` bytes:
/// `361 + room_len`.
pub const fn history_share_len(room_len: usize) -> usize {
    1 + HEADER_BASE_LEN + room_len + SIGNATURE_LEN + ENTRY_LEN + SIGNATURE_LEN
}

/// Why a history share could not be made, decoded, verified or opened
/// (`docs/protocol.md` §16.2 and §16.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The bytes end before the share does.
    #[error("history share is truncated")]
    Truncated,
    /// Bytes follow the end of the share.
    #[error("history share has {extra} trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The share's version byte is unknown.
    #[error("history share has unsupported version {version}; update the SDK")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The epoch's signed head inside the share does not decode (protocol §8.4, steps 1 to 10).
    #[error("the history share's epoch header does not decode: {0}")]
    Head(#[source] ManifestError),
    /// A field of the recipient's entry is out of its allowed range; the message names it.
    #[error("history share is malformed: {reason}")]
    Malformed {
        /// Which field and why.
        reason: String,
    },
    /// The epoch's header names another rekeyer than the room's trusted owner.
    #[error("history share is for an epoch rekeyed by {found}, not the room's trusted owner")]
    UntrustedRekeyer {
        /// The rekeyer the header names.
        found: SignPublicKey,
    },
    /// The share is for another room or epoch than the one asked for.
    #[error("history share is for room {found_room} epoch {found_epoch}, not the one requested")]
    WrongRoomOrEpoch {
        /// The room in the share's header.
        found_room: RoomId,
        /// The epoch in the share's header.
        found_epoch: u64,
    },
    /// The epoch header's signature does not verify under the owner's key.
    #[error("the history share's epoch header signature does not verify")]
    BadHeaderSignature,
    /// The owner's signature over the share does not verify: someone else made or changed it.
    #[error("the history share's signature does not verify under the room owner's key")]
    BadShareSignature,
    /// The share is addressed to another member.
    #[error("the history share is addressed to another member")]
    NotARecipient,
    /// The share is sealed to another x25519 key than this identity's.
    #[error("the history share is sealed to a different key-exchange key")]
    RecipientKeyMismatch,
    /// Sealing or opening the room key failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl From<Short> for HistoryError {
    fn from(short: Short) -> Self {
        match short {
            Short::Truncated => Self::Truncated,
            Short::Trailing(extra) => Self::TrailingBytes { extra },
        }
    }
}

/// One earlier epoch's room key, sealed by the room's owner to one member and signed by the
/// owner, with the epoch's signed head (`docs/protocol.md` §16). A member that opens it can read
/// that epoch's messages; it holds no entry in that epoch's manifest, so it cannot send in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryShare {
    head: SignedHead,
    entry: ManifestEntry,
    signature: Signature,
}

impl HistoryShare {
    /// Seals `room_key` (the key of `head`'s epoch, which the owner opened) to `recipient` and
    /// signs the share as `owner`. The head must be the owner's own, with a good signature
    /// (`UntrustedRekeyer`, `BadHeaderSignature`): an owner shares only epochs it rekeyed.
    pub fn seal(
        owner: &Identity,
        head: &SignedHead,
        room_key: &RoomKey,
        recipient: &Recipient,
    ) -> Result<Self, HistoryError> {
        Self::seal_with(owner, head, room_key, recipient, seal_room_key)
    }

    /// [`seal`](Self::seal) with the sealing function given: golden vectors fix the ephemeral
    /// key.
    pub(crate) fn seal_with(
        owner: &Identity,
        head: &SignedHead,
        room_key: &RoomKey,
        recipient: &Recipient,
        seal: impl FnOnce(&RoomKey, &SealBinding<'_>) -> Result<SealedRoomKey, SealError>,
    ) -> Result<Self, HistoryError> {
        let header = head.unverified_header();
        let owner_key = owner.sign_public_key();
        if header.rekeyer != owner_key {
            return Err(HistoryError::UntrustedRekeyer {
                found: header.rekeyer,
            });
        }
        head.verify_signature()
            .map_err(|_| HistoryError::BadHeaderSignature)?;
        let sealed = seal(
            room_key,
            &SealBinding {
                room: &header.room,
                epoch: header.epoch,
                recipient: &recipient.kex,
                rekeyer: &owner_key,
            },
        )?;
        let mut share = Self {
            head: head.clone(),
            entry: ManifestEntry {
                member: recipient.member,
                recipient: recipient.kex,
                sealed,
            },
            signature: Signature::from_bytes([0; SIGNATURE_LEN]),
        };
        share.signature = owner.sign(&share.signed_message());
        Ok(share)
    }

    /// The message the owner signs: [`SIGNING_CONTEXT`] || every byte of the wire form before
    /// the signature.
    fn signed_message(&self) -> Vec<u8> {
        let mut message = SIGNING_CONTEXT.to_vec();
        self.write_unsigned(&mut message);
        message
    }

    fn write_unsigned(&self, out: &mut Vec<u8>) {
        out.push(HISTORY_SHARE_VERSION);
        out.extend_from_slice(&self.head.to_bytes());
        out.extend_from_slice(&self.entry.to_bytes());
    }

    /// The wire form, [`encoded_len`](Self::encoded_len) bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_unsigned(&mut out);
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// The length of the wire form: `361 + len(room)`.
    pub fn encoded_len(&self) -> usize {
        history_share_len(self.head.unverified_header().room.as_str().len())
    }

    /// Decodes the wire form and checks its structure (`docs/protocol.md` §16.2). No signature
    /// is checked here: call [`verify`](Self::verify) or [`open`](Self::open) (a member), or
    /// [`verify_signatures`](Self::verify_signatures) (a server).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HistoryError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != HISTORY_SHARE_VERSION {
            return Err(HistoryError::UnsupportedVersion { version });
        }
        let head = SignedHead::decode(&mut reader).map_err(HistoryError::Head)?;
        let entry = ManifestEntry::decode(&mut reader).map_err(|e| match e {
            ManifestError::Malformed { reason } => HistoryError::Malformed { reason },
            ManifestError::Seal(e) => HistoryError::Seal(e),
            // An entry's decoding fails otherwise only by running out of bytes.
            _ => HistoryError::Truncated,
        })?;
        let signature = Signature::from_bytes(reader.take::<SIGNATURE_LEN>()?);
        reader.expect_remaining(0)?;
        Ok(Self {
            head,
            entry,
            signature,
        })
    }

    /// Checks both signatures under the header's own rekeyer key (strict mode): the header's
    /// (`BadHeaderSignature`) and the share's (`BadShareSignature`). Returns the header. Whether
    /// that key owns the room, and whether the header is the stored epoch's, are the caller's
    /// questions (a server's checks, `docs/protocol.md` §16.5).
    pub fn verify_signatures(&self) -> Result<&ManifestHeader, HistoryError> {
        let header = self.head.unverified_header();
        self.check_signatures(&header.rekeyer)?;
        Ok(header)
    }

    fn check_signatures(&self, owner: &SignPublicKey) -> Result<(), HistoryError> {
        self.head
            .unverified_header()
            .verify_signature(self.head.signature())
            .map_err(|_| HistoryError::BadHeaderSignature)?;
        owner
            .verify(&self.signed_message(), &self.signature)
            .map_err(|_| HistoryError::BadShareSignature)
    }

    /// What a member does before trusting the share, in this order (`docs/protocol.md` §16.3,
    /// steps 1 to 5): the header names `trusted_owner` as the rekeyer (`UntrustedRekeyer`) and
    /// `room` and `epoch` (`WrongRoomOrEpoch`); the header's signature verifies
    /// (`BadHeaderSignature`); the owner's signature over the share verifies
    /// (`BadShareSignature`); the share is addressed to `member` (`NotARecipient`).
    ///
    /// Returns the verified entry. Once this succeeds, the head is verified too.
    pub fn verify(
        &self,
        room: &RoomId,
        epoch: u64,
        trusted_owner: &SignPublicKey,
        member: &SignPublicKey,
    ) -> Result<&ManifestEntry, HistoryError> {
        let header = self.head.unverified_header();
        header
            .check_requested(room, epoch, trusted_owner)
            .map_err(|e| match e {
                ManifestError::UntrustedRekeyer { found } => {
                    HistoryError::UntrustedRekeyer { found }
                }
                _ => HistoryError::WrongRoomOrEpoch {
                    found_room: header.room.clone(),
                    found_epoch: header.epoch,
                },
            })?;
        self.check_signatures(trusted_owner)?;
        if &self.entry.member != member {
            return Err(HistoryError::NotARecipient);
        }
        Ok(&self.entry)
    }

    /// Verifies (as [`verify`](Self::verify), for `identity`'s signing key), checks that the copy
    /// is sealed to `identity`'s own x25519 key (`RecipientKeyMismatch`), and opens it with the
    /// requested room and epoch and the trusted owner as the rekeyer (`docs/protocol.md` §7.4).
    pub fn open(
        &self,
        identity: &Identity,
        room: &RoomId,
        epoch: u64,
        trusted_owner: &SignPublicKey,
    ) -> Result<RoomKey, HistoryError> {
        self.verify(room, epoch, trusted_owner, &identity.sign_public_key())?
            .open(identity, room, epoch, trusted_owner)
            .map_err(|e| match e {
                ManifestError::Seal(e) => HistoryError::Seal(e),
                // An entry's opening fails otherwise only for a copy sealed to another key.
                _ => HistoryError::RecipientKeyMismatch,
            })
    }

    /// The epoch's signed head, **unverified** until [`verify`](Self::verify) succeeds.
    pub fn unverified_head(&self) -> &SignedHead {
        &self.head
    }

    /// The recipient's entry, **unverified** until [`verify`](Self::verify) succeeds.
    pub fn unverified_entry(&self) -> &ManifestEntry {
        &self.entry
    }

    /// The owner's signature over the share.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::SignedManifest;

    struct Fixture {
        owner: Identity,
        newcomer: Identity,
        room: RoomId,
        key: RoomKey,
        head: SignedHead,
    }

    fn fixture() -> Fixture {
        let owner = Identity::generate().unwrap();
        let newcomer = Identity::generate().unwrap();
        let room = RoomId::new("general").unwrap();
        let key = RoomKey::generate().unwrap();
        let signed =
            SignedManifest::rekey(&owner, &room, 3, 2, &key, &[Recipient::of(&owner)]).unwrap();
        Fixture {
            owner,
            newcomer,
            room,
            key,
            head: signed.head(),
        }
    }

    impl Fixture {
        fn share(&self) -> HistoryShare {
            HistoryShare::seal(
                &self.owner,
                &self.head,
                &self.key,
                &Recipient::of(&self.newcomer),
            )
            .unwrap()
        }

        fn open(&self, wire: &[u8]) -> Result<RoomKey, HistoryError> {
            HistoryShare::from_bytes(wire)?.open(
                &self.newcomer,
                &self.room,
                3,
                &self.owner.sign_public_key(),
            )
        }
    }

    /// Re-signs everything before the signature of `wire` with `who`.
    fn resigned(wire: &[u8], who: &Identity) -> Vec<u8> {
        let mut bytes = wire[..wire.len() - SIGNATURE_LEN].to_vec();
        let mut message = SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(&bytes);
        bytes.extend_from_slice(&who.sign(&message).to_bytes());
        bytes
    }

    #[test]
    fn a_share_round_trips_and_opens_for_its_recipient_only() {
        let f = fixture();
        let wire = f.share().to_bytes();
        assert_eq!(wire.len(), history_share_len(7));
        assert_eq!(wire[0], HISTORY_SHARE_VERSION);
        assert_eq!(HistoryShare::from_bytes(&wire).unwrap().to_bytes(), wire);
        assert_eq!(f.open(&wire).unwrap(), f.key);
        let stranger = Identity::generate().unwrap();
        let share = HistoryShare::from_bytes(&wire).unwrap();
        assert_eq!(
            share.open(&stranger, &f.room, 3, &f.owner.sign_public_key()),
            Err(HistoryError::NotARecipient)
        );
    }

    #[test]
    fn a_share_for_another_room_epoch_or_owner_is_refused() {
        let f = fixture();
        let share = f.share();
        let owner = f.owner.sign_public_key();
        assert!(matches!(
            share.open(&f.newcomer, &f.room, 2, &owner),
            Err(HistoryError::WrongRoomOrEpoch { found_epoch: 3, .. })
        ));
        let other = RoomId::new("other").unwrap();
        assert!(matches!(
            share.open(&f.newcomer, &other, 3, &owner),
            Err(HistoryError::WrongRoomOrEpoch { .. })
        ));
        let impostor = Identity::generate().unwrap().sign_public_key();
        assert_eq!(
            share.open(&f.newcomer, &f.room, 3, &impostor),
            Err(HistoryError::UntrustedRekeyer { found: owner })
        );
    }

    #[test]
    fn a_share_signed_by_anyone_but_the_owner_is_refused() {
        let f = fixture();
        let forged = resigned(&f.share().to_bytes(), &Identity::generate().unwrap());
        assert_eq!(f.open(&forged), Err(HistoryError::BadShareSignature));
    }

    #[test]
    fn a_share_readdressed_or_with_another_sealed_copy_is_refused() {
        let f = fixture();
        let wire = f.share().to_bytes();
        let entry_at = 1 + f.head.encoded_len();
        // The recipient's key swapped for another member's: the owner's signature breaks.
        let mut swapped = wire.clone();
        swapped[entry_at..entry_at + 32]
            .copy_from_slice(Identity::generate().unwrap().sign_public_key().as_bytes());
        assert_eq!(f.open(&swapped), Err(HistoryError::BadShareSignature));
        // A byte of the sealed copy flipped: the same.
        let mut tampered = wire.clone();
        tampered[entry_at + 64 + 40] ^= 1;
        assert_eq!(f.open(&tampered), Err(HistoryError::BadShareSignature));
    }

    #[test]
    fn a_share_with_a_tampered_header_signature_is_refused() {
        let f = fixture();
        let wire = f.share().to_bytes();
        let mut bent = wire.clone();
        bent[f.head.encoded_len() - 10] ^= 1;
        assert_eq!(f.open(&bent), Err(HistoryError::BadHeaderSignature));
    }

    #[test]
    fn a_share_sealed_to_another_x25519_key_is_refused_before_opening() {
        let f = fixture();
        let other_kex = Identity::generate().unwrap().kex_public_key();
        let share = HistoryShare::seal(
            &f.owner,
            &f.head,
            &f.key,
            &Recipient {
                member: f.newcomer.sign_public_key(),
                kex: other_kex,
            },
        )
        .unwrap();
        assert_eq!(
            f.open(&share.to_bytes()),
            Err(HistoryError::RecipientKeyMismatch)
        );
    }

    #[test]
    fn only_the_heads_rekeyer_can_seal_a_share() {
        let f = fixture();
        let stranger = Identity::generate().unwrap();
        assert_eq!(
            HistoryShare::seal(&stranger, &f.head, &f.key, &Recipient::of(&f.newcomer)),
            Err(HistoryError::UntrustedRekeyer {
                found: f.owner.sign_public_key()
            })
        );
    }

    #[test]
    fn decoding_reports_version_truncation_and_trailing_bytes() {
        let f = fixture();
        let wire = f.share().to_bytes();
        let mut other = wire.clone();
        other[0] = 2;
        assert_eq!(
            HistoryShare::from_bytes(&other),
            Err(HistoryError::UnsupportedVersion { version: 2 })
        );
        for len in 0..wire.len() {
            let refused = HistoryShare::from_bytes(&wire[..len]).unwrap_err();
            assert!(
                matches!(
                    refused,
                    HistoryError::Truncated | HistoryError::Head(ManifestError::Truncated)
                ),
                "{len}: {refused:?}"
            );
        }
        let mut longer = wire.clone();
        longer.push(0);
        assert_eq!(
            HistoryShare::from_bytes(&longer),
            Err(HistoryError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn decoding_reports_a_bad_head_and_a_bad_entry() {
        let f = fixture();
        let wire = f.share().to_bytes();
        let mut head = wire.clone();
        head[1] = 9;
        assert_eq!(
            HistoryShare::from_bytes(&head),
            Err(HistoryError::Head(ManifestError::UnsupportedVersion {
                version: 9
            }))
        );
        let entry_at = 1 + f.head.encoded_len();
        let mut zero_kex = wire.clone();
        zero_kex[entry_at + 32..entry_at + 64].fill(0);
        assert!(matches!(
            HistoryShare::from_bytes(&zero_kex),
            Err(HistoryError::Malformed { .. })
        ));
        let mut sealed_version = wire.clone();
        sealed_version[entry_at + 64] = 7;
        assert_eq!(
            HistoryShare::from_bytes(&sealed_version),
            Err(HistoryError::Seal(SealError::UnsupportedVersion {
                version: 7
            }))
        );
    }

    #[test]
    fn a_server_verifies_both_signatures_under_the_headers_rekeyer() {
        let f = fixture();
        let share = f.share();
        assert_eq!(
            share.verify_signatures().unwrap(),
            f.head.unverified_header()
        );
        let forged = resigned(&share.to_bytes(), &f.newcomer);
        assert_eq!(
            HistoryShare::from_bytes(&forged)
                .unwrap()
                .verify_signatures(),
            Err(HistoryError::BadShareSignature)
        );
    }

    #[test]
    fn debug_output_holds_no_room_key() {
        let f = fixture();
        let text = format!("{:?}", f.share());
        let key_hex = crate::hex::encode(f.key.expose_secret());
        assert!(!text.contains(&key_hex));
    }
}
