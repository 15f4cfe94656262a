//! The rekey manifest: the signed record of one epoch of a room's key.
//!
//! Whoever rekeys a room (its owner) seals a fresh room key to every member on their own device
//! and signs one manifest for the new epoch: the room, the epoch, the previous epoch, the
//! rekeyer's key and every member's sealed copy. A client verifies the manifest against the room
//! owner's key before it trusts a sealed key, so a server cannot swap, replay or re-bind copies.
//!
//! The wire format (version 1, all integers big-endian) is specified in `docs/protocol.md`:
//!
//! ```text
//! body      = 0x01 || u16 len(room) || room || u64 epoch || u64 previous_epoch
//!             || rekeyer ed25519 (32) || u32 count || count * entry
//! entry     = member ed25519 (32) || member x25519 (32) || sealed room key (81)
//! signed    = body || ed25519 signature (64) over (SIGNING_CONTEXT || body)
//! ```
//!
//! Entries are sorted by member key, strictly ascending, so every manifest has one encoding.
//!
//! ```
//! use unibus::{Identity, RoomId};
//! use unibus::manifest::{Recipient, SignedManifest};
//! use unibus::sealing::RoomKey;
//!
//! let owner = Identity::generate()?;
//! let member = Identity::generate()?;
//! let room = RoomId::new("general")?;
//! let key = RoomKey::generate()?;
//! let members = [Recipient::of(&owner), Recipient::of(&member)];
//!
//! let signed = SignedManifest::rekey(&owner, &room, 1, 0, &key, &members)?;
//! let wire = signed.to_bytes();
//!
//! // On the member's device:
//! let received = SignedManifest::from_bytes(&wire)?;
//! let opened = received.open(&member, &room, 1, &owner.sign_public_key())?;
//! assert_eq!(opened.expose_secret(), key.expose_secret());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::keys::{KexPublicKey, SignPublicKey, Signature, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::room::RoomId;
use crate::sealing::{
    open_room_key, seal_room_key, RoomKey, SealBinding, SealError, SealedRoomKey,
    SEALED_ROOM_KEY_LEN, SEALED_ROOM_KEY_VERSION,
};
use crate::Identity;

/// Version byte of the manifest format.
pub const MANIFEST_VERSION: u8 = 1;
/// Domain-separation prefix of the signed message.
pub const SIGNING_CONTEXT: &[u8] = b"unibus/rekey-manifest/v1";
/// Length of one entry on the wire.
pub const ENTRY_LEN: usize = 2 * PUBLIC_KEY_LEN + SEALED_ROOM_KEY_LEN;
/// Most entries a manifest may hold.
pub const MAX_ENTRIES: usize = 65_536;
/// The largest epoch: 2^63 − 1, the largest integer every platform's store and language holds
/// as a signed 64-bit number. A manifest above it is malformed, and the control plane refuses a
/// key request for a larger epoch (`docs/protocol.md` §8.1).
pub const MAX_EPOCH: u64 = i64::MAX as u64;

/// Why a manifest could not be built, decoded, verified or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The bytes end before the manifest does.
    #[error("manifest is truncated")]
    Truncated,
    /// Bytes follow the signature.
    #[error("manifest has {extra} trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The version byte is unknown.
    #[error("manifest has unsupported version {version}; update the SDK")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// A field is out of its allowed range; the message names it.
    #[error("manifest is malformed: {reason}")]
    Malformed {
        /// Which field and why.
        reason: String,
    },
    /// The same member appears twice, or entries are out of order.
    #[error("manifest entries must be sorted by member key with no duplicates")]
    UnsortedOrDuplicate,
    /// No members were given to rekey for.
    #[error("a rekey needs at least one member")]
    NoMembers,
    /// The signature does not verify under the manifest's rekeyer key.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// The manifest was signed by a key other than the one the client trusts for this room.
    #[error("manifest was signed by {found}, not the room's trusted rekeyer")]
    UntrustedRekeyer {
        /// The key that signed.
        found: SignPublicKey,
    },
    /// The manifest is for a different room or epoch than the one asked for.
    #[error("manifest is for room {found_room} epoch {found_epoch}, not the one requested")]
    WrongRoomOrEpoch {
        /// The room in the manifest.
        found_room: RoomId,
        /// The epoch in the manifest.
        found_epoch: u64,
    },
    /// This member has no copy in the manifest (not a member at that epoch).
    #[error("this member has no sealed copy in the manifest")]
    NotARecipient,
    /// The member's copy is sealed to a different x25519 key than this identity's.
    #[error("the sealed copy is addressed to a different key-exchange key")]
    RecipientKeyMismatch,
    /// Sealing or opening the room key failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A member to seal for: the pair of public keys a user registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// The member's ed25519 key (their identity).
    pub member: SignPublicKey,
    /// The member's x25519 key (where the copy is sealed).
    pub kex: KexPublicKey,
}

impl Recipient {
    /// The recipient for an identity's own public keys.
    pub fn of(identity: &Identity) -> Self {
        Self {
            member: identity.sign_public_key(),
            kex: identity.kex_public_key(),
        }
    }
}

/// One member's entry: who, which key it is sealed to, and the sealed copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The member's ed25519 key.
    pub member: SignPublicKey,
    /// The x25519 key the copy is sealed to.
    pub recipient: KexPublicKey,
    /// The sealed room key.
    pub sealed: SealedRoomKey,
}

/// The contents of a manifest. Obtain it verified through [`SignedManifest::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyManifest {
    /// The room.
    pub room: RoomId,
    /// The epoch this key belongs to (at least 1).
    pub epoch: u64,
    /// The epoch it replaces (0 for a room's first key).
    pub previous_epoch: u64,
    /// Who sealed and signed.
    pub rekeyer: SignPublicKey,
    /// One entry per member, sorted by member key.
    pub entries: Vec<ManifestEntry>,
}

impl RekeyManifest {
    /// The entry of `member`, if any.
    pub fn entry_for(&self, member: &SignPublicKey) -> Option<&ManifestEntry> {
        self.entries
            .binary_search_by(|e| e.member.cmp(member))
            .ok()
            .map(|i| &self.entries[i])
    }

    fn encode_body(&self) -> Vec<u8> {
        let room = self.room.as_str().as_bytes();
        let mut out =
            Vec::with_capacity(1 + 2 + room.len() + 16 + 32 + 4 + self.entries.len() * ENTRY_LEN);
        out.push(MANIFEST_VERSION);
        // A RoomId is at most 128 bytes and entries are capped at MAX_ENTRIES, so both casts fit.
        out.extend_from_slice(&(room.len() as u16).to_be_bytes());
        out.extend_from_slice(room);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.previous_epoch.to_be_bytes());
        out.extend_from_slice(self.rekeyer.as_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for entry in &self.entries {
            out.extend_from_slice(entry.member.as_bytes());
            out.extend_from_slice(entry.recipient.as_bytes());
            out.extend_from_slice(&entry.sealed.to_bytes());
        }
        out
    }

    fn check_invariants(&self) -> Result<(), ManifestError> {
        if self.epoch == 0 || self.previous_epoch >= self.epoch || self.epoch > MAX_EPOCH {
            return Err(ManifestError::Malformed {
                reason: format!(
                    "epoch {} must be 1 to 2^63 - 1 and above previous epoch {}",
                    self.epoch, self.previous_epoch
                ),
            });
        }
        if self.entries.is_empty() {
            return Err(ManifestError::NoMembers);
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(ManifestError::Malformed {
                reason: format!("{} entries; the limit is {MAX_ENTRIES}", self.entries.len()),
            });
        }
        if self.entries.windows(2).any(|w| w[0].member >= w[1].member) {
            return Err(ManifestError::UnsortedOrDuplicate);
        }
        Ok(())
    }
}

/// A manifest with the rekeyer's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    manifest: RekeyManifest,
    signature: Signature,
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(body);
    message
}

impl SignedManifest {
    /// Rekeys on the device: seals `room_key` to every recipient for `room` at `epoch`, and signs
    /// the manifest with `rekeyer`. `previous_epoch` is the epoch being replaced (0 for none).
    pub fn rekey(
        rekeyer: &Identity,
        room: &RoomId,
        epoch: u64,
        previous_epoch: u64,
        room_key: &RoomKey,
        recipients: &[Recipient],
    ) -> Result<Self, ManifestError> {
        Self::rekey_with(
            rekeyer,
            room,
            epoch,
            previous_epoch,
            room_key,
            recipients,
            seal_room_key,
        )
    }

    /// [`rekey`](Self::rekey) with the sealing step supplied, so golden vectors can fix the
    /// ephemeral keys. The manifest's structure is checked before anything is sealed.
    pub(crate) fn rekey_with(
        rekeyer: &Identity,
        room: &RoomId,
        epoch: u64,
        previous_epoch: u64,
        room_key: &RoomKey,
        recipients: &[Recipient],
        mut seal: impl FnMut(&RoomKey, &SealBinding<'_>) -> Result<SealedRoomKey, SealError>,
    ) -> Result<Self, ManifestError> {
        let rekeyer_key = rekeyer.sign_public_key();
        let mut sorted = recipients.to_vec();
        sorted.sort_by_key(|r| r.member);
        // Placeholders until sealed: the structure (epochs, count, order) is checked first, so a
        // bad request costs no sealing.
        let placeholder =
            SealedRoomKey::from_bytes(&[SEALED_ROOM_KEY_VERSION; SEALED_ROOM_KEY_LEN])?;
        let mut manifest = RekeyManifest {
            room: room.clone(),
            epoch,
            previous_epoch,
            rekeyer: rekeyer_key,
            entries: sorted
                .iter()
                .map(|r| ManifestEntry {
                    member: r.member,
                    recipient: r.kex,
                    sealed: placeholder,
                })
                .collect(),
        };
        manifest.check_invariants()?;
        for entry in &mut manifest.entries {
            entry.sealed = seal(
                room_key,
                &SealBinding {
                    room,
                    epoch,
                    recipient: &entry.recipient,
                    rekeyer: &rekeyer_key,
                },
            )?;
        }
        let signature = rekeyer.sign(&signed_message(&manifest.encode_body()));
        Ok(Self {
            manifest,
            signature,
        })
    }

    /// The wire form: body followed by the 64-byte signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.manifest.encode_body();
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Decodes the wire form and checks its structure. The signature is *not* checked here:
    /// call [`verify`](Self::verify) or [`verify_signature`](Self::verify_signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut reader = Reader(bytes);
        let version = reader.take::<1>()?[0];
        if version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion { version });
        }
        let room_len = usize::from(u16::from_be_bytes(reader.take::<2>()?));
        let room_bytes = reader.take_slice(room_len)?;
        let room = std::str::from_utf8(room_bytes)
            .ok()
            .and_then(|s| RoomId::new(s).ok())
            .ok_or_else(|| ManifestError::Malformed {
                reason: "room id".into(),
            })?;
        let epoch = u64::from_be_bytes(reader.take::<8>()?);
        let previous_epoch = u64::from_be_bytes(reader.take::<8>()?);
        let rekeyer = reader.sign_key("rekeyer key")?;
        let count = u32::from_be_bytes(reader.take::<4>()?) as usize;
        if count > MAX_ENTRIES {
            return Err(ManifestError::Malformed {
                reason: format!("{count} entries; the limit is {MAX_ENTRIES}"),
            });
        }
        let expected_rest = count * ENTRY_LEN + SIGNATURE_LEN;
        match reader.0.len() {
            n if n < expected_rest => return Err(ManifestError::Truncated),
            n if n > expected_rest => {
                return Err(ManifestError::TrailingBytes {
                    extra: n - expected_rest,
                })
            }
            _ => {}
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let member = reader.sign_key("member key")?;
            let recipient = KexPublicKey::from_bytes(reader.take::<32>()?).map_err(|e| {
                ManifestError::Malformed {
                    reason: format!("member entry: {e}"),
                }
            })?;
            let sealed = SealedRoomKey::from_bytes(reader.take_slice(SEALED_ROOM_KEY_LEN)?)?;
            entries.push(ManifestEntry {
                member,
                recipient,
                sealed,
            });
        }
        let signature = Signature::from_bytes(reader.take::<SIGNATURE_LEN>()?);
        let manifest = RekeyManifest {
            room,
            epoch,
            previous_epoch,
            rekeyer,
            entries,
        };
        manifest.check_invariants()?;
        Ok(Self {
            manifest,
            signature,
        })
    }

    /// Checks the signature under the manifest's own rekeyer key. A server uses this on upload,
    /// then checks that the rekeyer may rekey the room.
    pub fn verify_signature(&self) -> Result<&RekeyManifest, ManifestError> {
        let message = signed_message(&self.manifest.encode_body());
        self.manifest
            .rekeyer
            .verify(&message, &self.signature)
            .map_err(|_| ManifestError::BadSignature)?;
        Ok(&self.manifest)
    }

    /// What a client does before trusting any key in the manifest: it is for `room` at `epoch`,
    /// signed by `trusted_rekeyer` (the room owner), and the signature verifies.
    pub fn verify(
        &self,
        room: &RoomId,
        epoch: u64,
        trusted_rekeyer: &SignPublicKey,
    ) -> Result<&RekeyManifest, ManifestError> {
        if &self.manifest.rekeyer != trusted_rekeyer {
            return Err(ManifestError::UntrustedRekeyer {
                found: self.manifest.rekeyer,
            });
        }
        if &self.manifest.room != room || self.manifest.epoch != epoch {
            return Err(ManifestError::WrongRoomOrEpoch {
                found_room: self.manifest.room.clone(),
                found_epoch: self.manifest.epoch,
            });
        }
        self.verify_signature()
    }

    /// Verifies (as [`verify`](Self::verify)) and opens `identity`'s copy of the room key.
    pub fn open(
        &self,
        identity: &Identity,
        room: &RoomId,
        epoch: u64,
        trusted_rekeyer: &SignPublicKey,
    ) -> Result<RoomKey, ManifestError> {
        let manifest = self.verify(room, epoch, trusted_rekeyer)?;
        let entry = manifest
            .entry_for(&identity.sign_public_key())
            .ok_or(ManifestError::NotARecipient)?;
        if entry.recipient != identity.kex_public_key() {
            return Err(ManifestError::RecipientKeyMismatch);
        }
        Ok(open_room_key(
            identity,
            &entry.sealed,
            room,
            epoch,
            trusted_rekeyer,
        )?)
    }

    /// The manifest's contents, **unverified**. For servers storing what they received and for
    /// diagnostics; clients use [`verify`](Self::verify).
    pub fn unverified(&self) -> &RekeyManifest {
        &self.manifest
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take_slice(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        if self.0.len() < n {
            return Err(ManifestError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        // take_slice returned exactly N bytes.
        Ok(self.take_slice(N)?.try_into().expect("N bytes"))
    }

    fn sign_key(&mut self, what: &str) -> Result<SignPublicKey, ManifestError> {
        SignPublicKey::from_bytes(self.take::<32>()?).map_err(|e| ManifestError::Malformed {
            reason: format!("{what}: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Room {
        owner: Identity,
        alice: Identity,
        bob: Identity,
        room: RoomId,
        key: RoomKey,
    }

    fn room() -> Room {
        Room {
            owner: Identity::generate().unwrap(),
            alice: Identity::generate().unwrap(),
            bob: Identity::generate().unwrap(),
            room: RoomId::new("general").unwrap(),
            key: RoomKey::generate().unwrap(),
        }
    }

    fn signed(r: &Room) -> SignedManifest {
        let recipients = [Recipient::of(&r.alice), Recipient::of(&r.bob)];
        SignedManifest::rekey(&r.owner, &r.room, 5, 4, &r.key, &recipients).unwrap()
    }

    #[test]
    fn rekey_checks_structure_before_sealing() {
        let r = room();
        let twice = [Recipient::of(&r.alice), Recipient::of(&r.alice)];
        let mut sealed = 0;
        let result = SignedManifest::rekey_with(&r.owner, &r.room, 2, 1, &r.key, &twice, |k, b| {
            sealed += 1;
            seal_room_key(k, b)
        });
        assert_eq!(result.unwrap_err(), ManifestError::UnsortedOrDuplicate);
        assert_eq!(sealed, 0);
        for (epoch, previous) in [(0, 0), (3, 3), (3, 4)] {
            let err =
                SignedManifest::rekey(&r.owner, &r.room, epoch, previous, &r.key, &twice[..1]);
            assert!(
                matches!(err, Err(ManifestError::Malformed { .. })),
                "{epoch} {previous}"
            );
        }
        assert_eq!(
            SignedManifest::rekey(&r.owner, &r.room, 1, 0, &r.key, &[]).unwrap_err(),
            ManifestError::NoMembers
        );
    }

    #[test]
    fn signing_keys_in_a_manifest_are_checked_like_any_signing_key() {
        let wire = signed(&room()).to_bytes();
        let n = "general".len();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut y_is_p_plus_3 = [0xff; 32];
        y_is_p_plus_3[0] = 0xf0;
        y_is_p_plus_3[31] = 0x7f;
        // The rekeyer key, then the first entry's member key (section 8.1).
        for offset in [19 + n, 55 + n] {
            for (key, expected) in [
                (identity, "low-order point"),
                (y_is_p_plus_3, "not canonically encoded"),
            ] {
                let mut bad = wire.clone();
                bad[offset..offset + 32].copy_from_slice(&key);
                match SignedManifest::from_bytes(&bad) {
                    Err(ManifestError::Malformed { reason }) => {
                        assert!(reason.contains(expected), "{offset}: {reason}")
                    }
                    other => panic!("{offset}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_rejected() {
        let wire = signed(&room()).to_bytes();
        for len in 0..wire.len() {
            let err = SignedManifest::from_bytes(&wire[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ManifestError::Truncated | ManifestError::Malformed { .. }
                ),
                "{len}: {err:?}"
            );
        }
        let mut longer = wire.clone();
        longer.push(0);
        assert_eq!(
            SignedManifest::from_bytes(&longer).unwrap_err(),
            ManifestError::TrailingBytes { extra: 1 }
        );
        let mut v2 = wire;
        v2[0] = 2;
        assert_eq!(
            SignedManifest::from_bytes(&v2).unwrap_err(),
            ManifestError::UnsupportedVersion { version: 2 }
        );
    }

    #[test]
    fn any_flipped_bit_in_the_body_or_signature_fails_verification() {
        let r = room();
        let wire = signed(&r).to_bytes();
        // One flip in each region: header, an entry's sealed copy, the signature.
        for index in [10, wire.len() - 64 - 5, wire.len() - 1] {
            let mut tampered = wire.clone();
            tampered[index] ^= 0x01;
            let verdict = SignedManifest::from_bytes(&tampered).and_then(|m| {
                m.open(&r.alice, &r.room, 5, &r.owner.sign_public_key())
                    .map(|_| ())
            });
            assert!(verdict.is_err(), "flip at {index} went unnoticed");
        }
    }

    #[test]
    fn opening_names_why_a_member_gets_no_key() {
        let r = room();
        let signed = signed(&r);
        let owner = r.owner.sign_public_key();
        assert_eq!(
            signed.open(&r.owner, &r.room, 5, &owner).unwrap_err(),
            ManifestError::NotARecipient
        );
        let seed: [u8; 32] = r.alice.to_secret_bytes()[1..33].try_into().unwrap();
        let alice_new_kex = Identity::from_parts(&seed, &[3; 32]).unwrap();
        assert_eq!(
            signed.open(&alice_new_kex, &r.room, 5, &owner).unwrap_err(),
            ManifestError::RecipientKeyMismatch
        );
        assert!(matches!(
            signed.open(&r.alice, &r.room, 5, &r.bob.sign_public_key()),
            Err(ManifestError::UntrustedRekeyer { .. })
        ));
        assert!(matches!(
            signed.open(&r.alice, &RoomId::new("other").unwrap(), 5, &owner),
            Err(ManifestError::WrongRoomOrEpoch { .. })
        ));
        let key = signed.open(&r.bob, &r.room, 5, &owner).unwrap();
        assert_eq!(key.expose_secret(), r.key.expose_secret());
    }
}
