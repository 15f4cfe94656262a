//! The rekey manifest: the signed record of one epoch of a room's key.
//!
//! Whoever rekeys a room (its owner) seals a fresh room key to every member on their own device
//! and signs one manifest for the new epoch. The signature covers a small **header**: the room,
//! the epoch, the previous epoch, the rekeyer's key, the number of entries and the root of a
//! Merkle tree ([`merkle`], RFC 9162) over every member's entry (member key, x25519 key, sealed
//! copy). A client verifies the header against the room owner's key, and its own entry against
//! the signed root, before it trusts a sealed key, so a server cannot swap, replay or re-bind
//! copies.
//!
//! Two wire forms exist (version 2, all integers big-endian), specified in `docs/protocol.md` §8:
//!
//! ```text
//! header    = 0x02 || u16 len(room) || room || u64 epoch || u64 previous_epoch
//!             || rekeyer ed25519 (32) || u32 count || merkle root (32)
//! signature = ed25519 signature (64) over (SIGNING_CONTEXT || header)
//! entry     = member ed25519 (32) || member x25519 (32) || sealed room key (81)
//!
//! manifest  = header || signature || count * entry                  (SignedManifest)
//! part      = header || signature || u32 index || entry
//!             || u8 k || k * hash (32)                              (MemberPart)
//! ```
//!
//! Entries are sorted by member key, strictly ascending, so every manifest has one encoding;
//! the tree's leaves are the entries in that order. The rekeyer builds and uploads the whole
//! [`SignedManifest`]; each member needs only its [`MemberPart`]: the signed header, its own entry
//! and the entry's audit path, O(log n) bytes (at most 852 for room `general` at 100,000 members).
//!
//! ```
//! use unibus::{Identity, RoomId};
//! use unibus::manifest::{MemberPart, Recipient, SignedManifest};
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
//! // On the server: decode, check the signature and the entries against the signed root, and
//! // cut the member's part.
//! let received = SignedManifest::from_bytes(&wire)?;
//! received.verify_signature()?;
//! let part = received.member_part(&member.sign_public_key()).expect("a member").to_bytes();
//!
//! // On the member's device: the part alone is enough.
//! let opened = MemberPart::from_bytes(&part)?.open(&member, &room, 1, &owner.sign_public_key())?;
//! assert_eq!(opened.expose_secret(), key.expose_secret());
//! // So is the whole manifest.
//! let opened = received.open(&member, &room, 1, &owner.sign_public_key())?;
//! assert_eq!(opened.expose_secret(), key.expose_secret());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod merkle;
mod part;

pub use part::MemberPart;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::keys::{
    DecodedSignKey, KexPublicKey, SignPublicKey, Signature, PUBLIC_KEY_LEN, SIGNATURE_LEN,
};
use crate::room::RoomId;
use crate::sealing::{
    open_room_key, seal_room_key, RoomKey, SealBinding, SealError, SealedRoomKey,
    SEALED_ROOM_KEY_LEN, SEALED_ROOM_KEY_VERSION,
};
use crate::wire::{Reader, Short};
use crate::Identity;
use merkle::{Hash, MerkleTree, ProofError, HASH_LEN};

/// Version byte of the manifest format (header and member part alike).
pub const MANIFEST_VERSION: u8 = 2;
/// Domain-separation prefix of the signed message: the signature covers
/// `SIGNING_CONTEXT || header`.
pub const SIGNING_CONTEXT: &[u8] = b"unibus/rekey-manifest/v2";
/// Length of one entry on the wire, and of one leaf of the Merkle tree before hashing.
pub const ENTRY_LEN: usize = 2 * PUBLIC_KEY_LEN + SEALED_ROOM_KEY_LEN;
/// Most entries a manifest may hold: 2^20 = 1,048,576.
pub const MAX_ENTRIES: usize = 1 << 20;
/// Most hashes in a member part's audit path: ⌈log2 [`MAX_ENTRIES`]⌉ = 20.
pub const MAX_PROOF_LEN: usize = 20;
/// Length of a header without its room id: version, room length, two epochs, rekeyer key,
/// count and Merkle root (1 + 2 + 8 + 8 + 32 + 4 + 32 bytes).
pub const HEADER_BASE_LEN: usize = 1 + 2 + 8 + 8 + PUBLIC_KEY_LEN + 4 + HASH_LEN;
/// The largest epoch: 2^63 − 1, the largest integer every platform's store and language holds
/// as a signed 64-bit number. A manifest above it is malformed, and the control plane refuses a
/// key request for a larger epoch (`docs/protocol.md` §8.1).
pub const MAX_EPOCH: u64 = i64::MAX as u64;

// The proof bound is the depth of the largest tree.
const _: () = assert!(1 << MAX_PROOF_LEN == MAX_ENTRIES);

/// Length in bytes of a [`SignedManifest`]'s wire form for a room id of `room_len` bytes and
/// `count` entries: `151 + room_len + 145 × count`.
pub const fn signed_manifest_len(room_len: usize, count: usize) -> usize {
    HEADER_BASE_LEN + room_len + SIGNATURE_LEN + count * ENTRY_LEN
}

/// Length in bytes of a [`MemberPart`]'s wire form for a room id of `room_len` bytes and an audit
/// path of `proof_len` hashes: `301 + room_len + 32 × proof_len`.
pub const fn member_part_len(room_len: usize, proof_len: usize) -> usize {
    HEADER_BASE_LEN + room_len + SIGNATURE_LEN + 4 + ENTRY_LEN + 1 + proof_len * HASH_LEN
}

/// Why a manifest or member part could not be built, decoded, verified or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The bytes end before the manifest (or member part) does.
    #[error("manifest is truncated")]
    Truncated,
    /// Bytes follow the end of the manifest (or member part).
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
    /// No members were given to rekey for, or a header counts no entries.
    #[error("a rekey needs at least one member")]
    NoMembers,
    /// The signature does not verify under the manifest's rekeyer key.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// The entries of a full manifest do not hash to the Merkle root its header signs.
    #[error("the manifest's entries do not match the Merkle root it signs")]
    RootMismatch,
    /// A member part's audit path does not prove its entry against the signed Merkle root (the
    /// source says how: index past the count, path of the wrong length, or another root).
    #[error("the member part's inclusion proof does not verify against the signed Merkle root")]
    BadProof(#[source] ProofError),
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
    /// This member has no copy in the manifest (not a member at that epoch), or the member part
    /// holds another member's entry.
    #[error("this member has no sealed copy in the manifest")]
    NotARecipient,
    /// The member's copy is sealed to a different x25519 key than this identity's.
    #[error("the sealed copy is addressed to a different key-exchange key")]
    RecipientKeyMismatch,
    /// Sealing or opening the room key failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The rekey was cancelled by its observer before every copy was sealed.
    #[error("the rekey was cancelled")]
    Cancelled,
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

/// One member's entry: who, which key it is sealed to, and the sealed copy. It is one leaf of
/// the manifest's Merkle tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The member's ed25519 key.
    pub member: SignPublicKey,
    /// The x25519 key the copy is sealed to.
    pub recipient: KexPublicKey,
    /// The sealed room key.
    pub sealed: SealedRoomKey,
}

impl ManifestEntry {
    /// Opens the copy for `identity` (protocol §8.5, the last two steps): it must be sealed to
    /// `identity`'s own x25519 key (`RecipientKeyMismatch`), and opens with the requested room
    /// and epoch and the trusted rekeyer (§7.4).
    pub(crate) fn open(
        &self,
        identity: &Identity,
        room: &RoomId,
        epoch: u64,
        trusted_rekeyer: &SignPublicKey,
    ) -> Result<RoomKey, ManifestError> {
        if self.recipient != identity.kex_public_key() {
            return Err(ManifestError::RecipientKeyMismatch);
        }
        Ok(open_room_key(
            identity,
            &self.sealed,
            room,
            epoch,
            trusted_rekeyer,
        )?)
    }

    /// The 145-byte wire form: member key || x25519 key || sealed copy.
    pub fn to_bytes(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        let (member, rest) = out.split_at_mut(PUBLIC_KEY_LEN);
        let (recipient, sealed) = rest.split_at_mut(PUBLIC_KEY_LEN);
        member.copy_from_slice(self.member.as_bytes());
        recipient.copy_from_slice(self.recipient.as_bytes());
        sealed.copy_from_slice(&self.sealed.to_bytes());
        out
    }

    /// The entry's leaf hash in the manifest's Merkle tree: `SHA-256(0x00 || entry bytes)`.
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.to_bytes())
    }

    /// Decodes an entry, field by field (`docs/protocol.md` §8.4, whole-manifest step 12).
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, ManifestError> {
        Self::decode_with_point(reader).map(|(entry, _)| entry)
    }

    /// [`decode`](Self::decode), keeping the member key's decoded point for a signature check
    /// that follows (an envelope's sender, §14.5).
    pub(crate) fn decode_with_point(
        reader: &mut Reader<'_>,
    ) -> Result<(Self, DecodedSignKey), ManifestError> {
        let decoded =
            SignPublicKey::decode(reader.take::<32>()?).map_err(|e| ManifestError::Malformed {
                reason: format!("member key: {e}"),
            })?;
        let member = *decoded.key();
        let recipient = KexPublicKey::from_bytes(reader.take::<32>()?).map_err(|e| {
            ManifestError::Malformed {
                reason: format!("member entry: {e}"),
            }
        })?;
        let sealed = SealedRoomKey::from_bytes(reader.take_slice(SEALED_ROOM_KEY_LEN)?)?;
        let entry = Self {
            member,
            recipient,
            sealed,
        };
        Ok((entry, decoded))
    }
}

/// The signed part of a manifest: everything but the entries, which it commits to through the
/// Merkle root. Obtain it verified through [`MemberPart::verify`] or [`SignedManifest::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHeader {
    /// The room.
    pub room: RoomId,
    /// The epoch this key belongs to (1 to [`MAX_EPOCH`]).
    pub epoch: u64,
    /// The epoch it replaces (0 for a room's first key).
    pub previous_epoch: u64,
    /// Who sealed and signed.
    pub rekeyer: SignPublicKey,
    /// The number of entries (1 to [`MAX_ENTRIES`]): the size of the Merkle tree.
    pub count: u32,
    /// The root of the Merkle tree over the entries ([`merkle`]).
    pub merkle_root: Hash,
}

impl ManifestHeader {
    /// The wire form, `87 + len(room)` bytes; the signature covers
    /// [`SIGNING_CONTEXT`] followed by these bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let room = self.room.as_str().as_bytes();
        let mut out = Vec::with_capacity(HEADER_BASE_LEN + room.len());
        out.push(MANIFEST_VERSION);
        // A RoomId is at most 128 bytes, so the cast fits.
        out.extend_from_slice(&(room.len() as u16).to_be_bytes());
        out.extend_from_slice(room);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.previous_epoch.to_be_bytes());
        out.extend_from_slice(self.rekeyer.as_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.merkle_root);
        out
    }

    /// The message the rekeyer signs: [`SIGNING_CONTEXT`] || header.
    fn signed_message(&self) -> Vec<u8> {
        let mut message = SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(&self.to_bytes());
        message
    }

    /// Decodes a header, checking each field as it is read (`docs/protocol.md` §8.4, steps 1
    /// to 9).
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, ManifestError> {
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
        let rekeyer = read_sign_key(reader, "rekeyer key")?;
        let count = u32::from_be_bytes(reader.take::<4>()?);
        let merkle_root = reader.take::<HASH_LEN>()?;
        check_epochs(epoch, previous_epoch)?;
        check_count(count as usize)?;
        Ok(Self {
            room,
            epoch,
            previous_epoch,
            rekeyer,
            count,
            merkle_root,
        })
    }

    /// Steps 1 and 2 of a client's checks: signed by the trusted rekeyer, for the room and
    /// epoch asked for.
    pub(crate) fn check_requested(
        &self,
        room: &RoomId,
        epoch: u64,
        trusted_rekeyer: &SignPublicKey,
    ) -> Result<(), ManifestError> {
        if &self.rekeyer != trusted_rekeyer {
            return Err(ManifestError::UntrustedRekeyer {
                found: self.rekeyer,
            });
        }
        if &self.room != room || self.epoch != epoch {
            return Err(ManifestError::WrongRoomOrEpoch {
                found_room: self.room.clone(),
                found_epoch: self.epoch,
            });
        }
        Ok(())
    }

    /// Checks `signature` over this header under the header's own rekeyer key (strict mode).
    pub(crate) fn verify_signature(&self, signature: &Signature) -> Result<(), ManifestError> {
        self.rekeyer
            .verify(&self.signed_message(), signature)
            .map_err(|_| ManifestError::BadSignature)
    }
}

/// An epoch's signed head: the header and the rekeyer's signature over it (protocol §8.3), the
/// first `151 + len(room)` bytes of the whole manifest and of every member part. A chunked
/// upload begins with it (§12.5), so the server can check the signature and the rekeyer before
/// any entry arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    header: ManifestHeader,
    signature: Signature,
}

impl SignedHead {
    /// Decodes `header || signature` and nothing else (the header's checks of §8.4).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut reader = Reader::new(bytes);
        let head = Self::decode(&mut reader)?;
        reader.expect_remaining(0)?;
        Ok(head)
    }

    /// Decodes `header || signature` from the front of `reader` (§8.4, steps 1 to 10).
    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, ManifestError> {
        let header = ManifestHeader::decode(reader)?;
        let signature = Signature::from_bytes(reader.take::<SIGNATURE_LEN>()?);
        Ok(Self { header, signature })
    }

    /// The wire form: `header || signature`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header.to_bytes();
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Checks the signature under the header's own rekeyer key (strict mode) and returns the
    /// header. Whether that key may rekey the room is the caller's question.
    pub fn verify_signature(&self) -> Result<&ManifestHeader, ManifestError> {
        self.header.verify_signature(&self.signature)?;
        Ok(&self.header)
    }

    /// The header, **unverified** until [`verify_signature`](Self::verify_signature) succeeds.
    pub fn unverified_header(&self) -> &ManifestHeader {
        &self.header
    }

    /// The rekeyer's signature over the header.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The length of the wire form: `151 + len(room)` bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_BASE_LEN + self.header.room.as_str().len() + SIGNATURE_LEN
    }
}

fn check_epochs(epoch: u64, previous_epoch: u64) -> Result<(), ManifestError> {
    if epoch == 0 || previous_epoch >= epoch || epoch > MAX_EPOCH {
        return Err(ManifestError::Malformed {
            reason: format!(
                "epoch {epoch} must be 1 to 2^63 - 1 and above previous epoch {previous_epoch}"
            ),
        });
    }
    Ok(())
}

fn check_count(count: usize) -> Result<(), ManifestError> {
    if count == 0 {
        return Err(ManifestError::NoMembers);
    }
    if count > MAX_ENTRIES {
        return Err(ManifestError::Malformed {
            reason: format!("{count} entries; the limit is {MAX_ENTRIES}"),
        });
    }
    Ok(())
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
        self.index_of(member).and_then(|i| self.entries.get(i))
    }

    /// The position of `member`'s entry (its leaf index in the Merkle tree), if any.
    pub fn index_of(&self, member: &SignPublicKey) -> Option<usize> {
        self.entries.binary_search_by(|e| e.member.cmp(member)).ok()
    }

    /// The leaf hashes of the entries, in order.
    pub fn leaf_hashes(&self) -> Vec<Hash> {
        self.entries.iter().map(ManifestEntry::leaf_hash).collect()
    }

    /// The Merkle root of the entries, computed from them (O(n) hashes).
    pub fn merkle_root(&self) -> Hash {
        merkle::root(&self.leaf_hashes())
    }

    /// The Merkle tree of the entries with every level, for audit paths (O(n) hashes).
    pub fn merkle_tree(&self) -> MerkleTree {
        MerkleTree::from_leaf_hashes(self.leaf_hashes())
    }

    /// The rekeyer's structural rules, in the order of `docs/protocol.md` §8.1.
    fn check_invariants(&self) -> Result<(), ManifestError> {
        check_epochs(self.epoch, self.previous_epoch)?;
        check_count(self.entries.len())?;
        if self.entries.windows(2).any(|w| w[0].member >= w[1].member) {
            return Err(ManifestError::UnsortedOrDuplicate);
        }
        Ok(())
    }
}

/// A whole manifest: the signed header and every entry. The rekeyer builds it, the server
/// receives, verifies and stores it, and cuts each member's [`MemberPart`] from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    manifest: RekeyManifest,
    /// The root the header signs: as decoded, not recomputed, until
    /// [`verify_signature`](Self::verify_signature) compares the two.
    merkle_root: Hash,
    signature: Signature,
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
        Self::rekey_observed(
            rekeyer,
            room,
            epoch,
            previous_epoch,
            room_key,
            recipients,
            &|_| true,
        )
    }

    /// [`rekey`](Self::rekey), telling `observe` how many copies are sealed after every
    /// [`PROGRESS_STEP`] of them and after the last (from the sealing threads, so it must be
    /// quick). When `observe` returns `false`, sealing stops on every core and the rekey fails
    /// with [`ManifestError::Cancelled`].
    pub fn rekey_observed(
        rekeyer: &Identity,
        room: &RoomId,
        epoch: u64,
        previous_epoch: u64,
        room_key: &RoomKey,
        recipients: &[Recipient],
        observe: &(dyn Fn(usize) -> bool + Sync),
    ) -> Result<Self, ManifestError> {
        Self::rekey_with(
            rekeyer,
            room,
            epoch,
            previous_epoch,
            room_key,
            recipients,
            seal_room_key,
            observe,
        )
    }

    /// [`rekey`](Self::rekey) with the sealing step supplied, so golden vectors can fix the
    /// ephemeral keys. The manifest's structure is checked before anything is sealed.
    // The public rekey's six inputs and the two steps golden vectors and tests replace.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rekey_with(
        rekeyer: &Identity,
        room: &RoomId,
        epoch: u64,
        previous_epoch: u64,
        room_key: &RoomKey,
        recipients: &[Recipient],
        seal: impl Fn(&RoomKey, &SealBinding<'_>) -> Result<SealedRoomKey, SealError> + Sync,
        observe: &(dyn Fn(usize) -> bool + Sync),
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
        let total = manifest.entries.len();
        let (sealed, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
        let seal_all = |entries: &mut [ManifestEntry]| -> Result<(), ManifestError> {
            for entry in entries {
                if stop.load(Ordering::Relaxed) {
                    return Err(ManifestError::Cancelled);
                }
                entry.sealed = seal(
                    room_key,
                    &SealBinding {
                        room,
                        epoch,
                        recipient: &entry.recipient,
                        rekeyer: &rekeyer_key,
                    },
                )?;
                let done = sealed.fetch_add(1, Ordering::Relaxed) + 1;
                if (done % PROGRESS_STEP == 0 || done == total) && !observe(done) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(ManifestError::Cancelled);
                }
            }
            Ok(())
        };
        in_parallel(&mut manifest.entries, seal_all)?;
        let merkle_root = manifest.merkle_root();
        let mut signed = Self {
            manifest,
            merkle_root,
            signature: Signature::from_bytes([0; SIGNATURE_LEN]),
        };
        signed.signature = rekeyer.sign(&signed.header().signed_message());
        Ok(signed)
    }

    /// The signed header: the manifest's fields, its entry count and the Merkle root it signs
    /// (as received: [`verify_signature`](Self::verify_signature) checks it against the
    /// entries).
    pub fn header(&self) -> ManifestHeader {
        ManifestHeader {
            room: self.manifest.room.clone(),
            epoch: self.manifest.epoch,
            previous_epoch: self.manifest.previous_epoch,
            rekeyer: self.manifest.rekeyer,
            // At most MAX_ENTRIES (2^20) entries, checked when built or decoded: the cast fits.
            count: self.manifest.entries.len() as u32,
            merkle_root: self.merkle_root,
        }
    }

    /// The rekeyer's signature over the header.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The signed head: the header and the signature, as a chunked upload begins (§12.5).
    pub fn head(&self) -> SignedHead {
        SignedHead {
            header: self.header(),
            signature: self.signature,
        }
    }

    /// The wire form: header, 64-byte signature, then every entry (145 bytes each) in order,
    /// [`signed_manifest_len`] bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header().to_bytes();
        out.reserve(SIGNATURE_LEN + self.manifest.entries.len() * ENTRY_LEN);
        out.extend_from_slice(&self.signature.to_bytes());
        for entry in &self.manifest.entries {
            out.extend_from_slice(&entry.to_bytes());
        }
        out
    }

    /// Decodes the wire form and checks its structure (`docs/protocol.md` §8.4). Neither the
    /// signature nor the Merkle root is checked here: call [`verify`](Self::verify) or
    /// [`verify_signature`](Self::verify_signature).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut reader = Reader::new(bytes);
        let header = ManifestHeader::decode(&mut reader)?;
        let signature = Signature::from_bytes(reader.take::<SIGNATURE_LEN>()?);
        // The header checked count ≤ MAX_ENTRIES, so this cannot overflow.
        let count = header.count as usize;
        reader.expect_remaining(count * ENTRY_LEN)?;
        let entries = (0..count)
            .map(|_| ManifestEntry::decode(&mut reader))
            .collect::<Result<Vec<_>, _>>()?;
        if entries.windows(2).any(|w| w[0].member >= w[1].member) {
            return Err(ManifestError::UnsortedOrDuplicate);
        }
        Ok(Self {
            manifest: RekeyManifest {
                room: header.room,
                epoch: header.epoch,
                previous_epoch: header.previous_epoch,
                rekeyer: header.rekeyer,
                entries,
            },
            merkle_root: header.merkle_root,
            signature,
        })
    }

    /// Checks the signature under the manifest's own rekeyer key, then that the entries hash to
    /// the Merkle root the header signs (`RootMismatch` if not). A server uses this on upload,
    /// then checks that the rekeyer may rekey the room.
    pub fn verify_signature(&self) -> Result<&RekeyManifest, ManifestError> {
        self.header().verify_signature(&self.signature)?;
        if self.manifest.merkle_root() != self.merkle_root {
            return Err(ManifestError::RootMismatch);
        }
        Ok(&self.manifest)
    }

    /// What a client does before trusting any key in the manifest: it is signed by
    /// `trusted_rekeyer` (the room owner), for `room` at `epoch`, the signature verifies and the
    /// entries match the signed root.
    pub fn verify(
        &self,
        room: &RoomId,
        epoch: u64,
        trusted_rekeyer: &SignPublicKey,
    ) -> Result<&RekeyManifest, ManifestError> {
        self.header()
            .check_requested(room, epoch, trusted_rekeyer)?;
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
        entry.open(identity, room, epoch, trusted_rekeyer)
    }

    /// The manifest's contents, **unverified**. For servers storing what they received and for
    /// diagnostics; clients use [`verify`](Self::verify).
    pub fn unverified(&self) -> &RekeyManifest {
        &self.manifest
    }

    /// The Merkle tree of the entries, with every level: its root, and each entry's audit path
    /// in O(log n). Building it costs O(n) hashes.
    pub fn merkle_tree(&self) -> MerkleTree {
        self.manifest.merkle_tree()
    }

    /// `member`'s part: the signed header, the member's entry and its audit path, or `None` if
    /// the member has no entry. This builds the whole tree (O(n) hashes); to cut every member's
    /// part, use [`member_parts`](Self::member_parts), which builds it once.
    ///
    /// The part carries the header as received. Call [`verify_signature`](Self::verify_signature)
    /// first: the parts of a manifest whose entries do not match its signed root do not verify.
    pub fn member_part(&self, member: &SignPublicKey) -> Option<MemberPart> {
        let index = self.manifest.index_of(member)?;
        let entry = *self.manifest.entries.get(index)?;
        let proof = self.merkle_tree().proof(index)?;
        Some(MemberPart::assemble(
            self.header(),
            self.signature,
            index,
            entry,
            proof,
        ))
    }

    /// Every member's part, in entry order (ascending member key), from one tree built up front:
    /// O(n) hashes for the tree, then O(log n) per part with no hashing. As for
    /// [`member_part`](Self::member_part), verify the manifest first.
    pub fn member_parts(&self) -> impl ExactSizeIterator<Item = MemberPart> + '_ {
        let tree = self.merkle_tree();
        let header = self.header();
        self.manifest
            .entries
            .iter()
            .enumerate()
            .map(move |(index, entry)| {
                // The tree was built from these entries, so every index has a path; an empty one
                // would only make the part fail verification.
                let proof = tree.proof(index).unwrap_or_default();
                MemberPart::assemble(header.clone(), self.signature, index, *entry, proof)
            })
    }
}

impl From<Short> for ManifestError {
    fn from(short: Short) -> Self {
        match short {
            Short::Truncated => ManifestError::Truncated,
            Short::Trailing(extra) => ManifestError::TrailingBytes { extra },
        }
    }
}

/// Reads an ed25519 key, checked as protocol §2.2 checks 3 to 6; `what` names it in the error.
fn read_sign_key(reader: &mut Reader<'_>, what: &str) -> Result<SignPublicKey, ManifestError> {
    SignPublicKey::from_bytes(reader.take::<32>()?).map_err(|e| ManifestError::Malformed {
        reason: format!("{what}: {e}"),
    })
}

/// How many sealed copies a rekey's progress report stands for (see
/// [`SignedManifest::rekey_observed`]).
pub const PROGRESS_STEP: usize = 256;

/// The fewest entries worth a sealing thread of their own: below this, starting a thread costs
/// more than it saves.
const ENTRIES_PER_THREAD: usize = 64;

/// Runs `work` over `entries` cut into one contiguous chunk per available core (at most one per
/// [`ENTRIES_PER_THREAD`] entries), on scoped threads, and returns the first error. A panic in
/// a chunk is resumed on the calling thread, as if the work had run there.
fn in_parallel<E: Send>(
    entries: &mut [ManifestEntry],
    work: impl Fn(&mut [ManifestEntry]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = cores.min(entries.len().div_ceil(ENTRIES_PER_THREAD)).max(1);
    if threads == 1 {
        return work(entries);
    }
    let chunk = entries.len().div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = entries
            .chunks_mut(chunk)
            .map(|chunk| scope.spawn(move || work(chunk)))
            .collect();
        let mut outcome = Ok(());
        for handle in handles {
            match handle.join() {
                Ok(result) => outcome = outcome.and(result),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        outcome
    })
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

    fn part_of(signed: &SignedManifest, who: &Identity) -> Vec<u8> {
        signed
            .member_part(&who.sign_public_key())
            .unwrap()
            .to_bytes()
    }

    /// Where the first entry (full manifest) or the entry (member part) starts, for room
    /// `general`: after the header and the signature (and a member part's index).
    const N: usize = "general".len();
    const ENTRIES_AT: usize = HEADER_BASE_LEN + N + SIGNATURE_LEN;
    const PART_ENTRY_AT: usize = ENTRIES_AT + 4;

    #[test]
    fn rekey_checks_structure_before_sealing() {
        let r = room();
        let twice = [Recipient::of(&r.alice), Recipient::of(&r.alice)];
        let sealed = AtomicUsize::new(0);
        let count = |k: &RoomKey, b: &SealBinding<'_>| {
            sealed.fetch_add(1, Ordering::Relaxed);
            seal_room_key(k, b)
        };
        let result =
            SignedManifest::rekey_with(&r.owner, &r.room, 2, 1, &r.key, &twice, count, &|_| true);
        assert_eq!(result.unwrap_err(), ManifestError::UnsortedOrDuplicate);
        assert_eq!(sealed.into_inner(), 0);
        for (epoch, previous) in [(0, 0), (3, 3), (3, 4), (MAX_EPOCH + 1, 0)] {
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
    fn the_wire_forms_have_the_documented_layout_and_lengths() {
        let r = room();
        let signed = signed(&r);
        let wire = signed.to_bytes();
        assert_eq!(wire.len(), signed_manifest_len(N, 2));
        assert_eq!(wire.len(), 151 + N + 2 * 145);
        let header = signed.header().to_bytes();
        assert_eq!(header.len(), 87 + N);
        assert_eq!(wire[..header.len()], header[..]);
        assert_eq!(header[0], 2);
        assert_eq!(
            header[header.len() - 32..],
            signed.unverified().merkle_root()
        );
        assert_eq!(
            header[header.len() - 36..header.len() - 32],
            2u32.to_be_bytes()
        );
        assert_eq!(
            wire[header.len()..ENTRIES_AT],
            signed.signature().to_bytes()
        );
        let mut message = b"unibus/rekey-manifest/v2".to_vec();
        message.extend_from_slice(&header);
        r.owner
            .sign_public_key()
            .verify(&message, signed.signature())
            .unwrap();

        // A member part shares the header and signature, then has the index, the entry and the
        // path: one hash for one of two leaves.
        let part = signed.member_part(&r.bob.sign_public_key()).unwrap();
        let bytes = part.to_bytes();
        assert_eq!(bytes.len(), member_part_len(N, 1));
        assert_eq!(bytes.len(), 301 + N + 32);
        assert_eq!(bytes.len(), part.encoded_len());
        assert_eq!(bytes[..ENTRIES_AT], wire[..ENTRIES_AT]);
        let index = signed
            .unverified()
            .index_of(&r.bob.sign_public_key())
            .unwrap();
        assert_eq!(
            bytes[ENTRIES_AT..PART_ENTRY_AT],
            (index as u32).to_be_bytes()
        );
        let entry = signed.unverified().entries[index].to_bytes();
        assert_eq!(bytes[PART_ENTRY_AT..PART_ENTRY_AT + ENTRY_LEN], entry);
        assert_eq!(
            wire[ENTRIES_AT + index * ENTRY_LEN..ENTRIES_AT + (index + 1) * ENTRY_LEN],
            entry
        );
        assert_eq!(bytes[PART_ENTRY_AT + ENTRY_LEN], 1);
        let other = signed.unverified().entries[1 - index].leaf_hash();
        assert_eq!(bytes[PART_ENTRY_AT + ENTRY_LEN + 1..], other);
    }

    #[test]
    fn signing_keys_in_a_manifest_are_checked_like_any_signing_key() {
        let r = room();
        let signed = signed(&r);
        let wire = signed.to_bytes();
        let part = part_of(&signed, &r.alice);
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut y_is_p_plus_3 = [0xff; 32];
        y_is_p_plus_3[0] = 0xf0;
        y_is_p_plus_3[31] = 0x7f;
        // The rekeyer key, then the first entry's member key (section 8.1).
        for offset in [19 + N, ENTRIES_AT] {
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
        for offset in [19 + N, PART_ENTRY_AT] {
            let mut bad = part.clone();
            bad[offset..offset + 32].copy_from_slice(&identity);
            match MemberPart::from_bytes(&bad) {
                Err(ManifestError::Malformed { reason }) => {
                    assert!(reason.contains("low-order point"), "{offset}: {reason}")
                }
                other => panic!("{offset}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_rejected() {
        let r = room();
        let signed = signed(&r);
        let wire = signed.to_bytes();
        for len in 0..wire.len() {
            let err = SignedManifest::from_bytes(&wire[..len]).unwrap_err();
            assert_eq!(err, ManifestError::Truncated, "{len}");
        }
        let part = part_of(&signed, &r.alice);
        for len in 0..part.len() {
            let err = MemberPart::from_bytes(&part[..len]).unwrap_err();
            assert_eq!(err, ManifestError::Truncated, "{len}");
        }
        let mut longer = wire.clone();
        longer.push(0);
        assert_eq!(
            SignedManifest::from_bytes(&longer).unwrap_err(),
            ManifestError::TrailingBytes { extra: 1 }
        );
        let mut longer = part.clone();
        longer.push(0);
        assert_eq!(
            MemberPart::from_bytes(&longer).unwrap_err(),
            ManifestError::TrailingBytes { extra: 1 }
        );
        for version in [0, 1, 3] {
            let mut other = wire.clone();
            other[0] = version;
            assert_eq!(
                SignedManifest::from_bytes(&other).unwrap_err(),
                ManifestError::UnsupportedVersion { version }
            );
            let mut other = part.clone();
            other[0] = version;
            assert_eq!(
                MemberPart::from_bytes(&other).unwrap_err(),
                ManifestError::UnsupportedVersion { version }
            );
        }
    }

    #[test]
    fn header_fields_out_of_range_are_refused_when_decoding() {
        let r = room();
        let signed = signed(&r);
        let count_at = 51 + N;
        type Expected = fn(&ManifestError) -> bool;
        let cases: [(usize, Vec<u8>, Expected); 4] = [
            // epoch 0, then previous epoch ≥ epoch, then the count: 0 and 2^20 + 1.
            (3 + N, 0u64.to_be_bytes().to_vec(), |e| {
                matches!(e, ManifestError::Malformed { .. })
            }),
            (11 + N, 5u64.to_be_bytes().to_vec(), |e| {
                matches!(e, ManifestError::Malformed { .. })
            }),
            (count_at, 0u32.to_be_bytes().to_vec(), |e| {
                e == &ManifestError::NoMembers
            }),
            (
                count_at,
                ((1u32 << 20) + 1).to_be_bytes().to_vec(),
                |e| matches!(e, ManifestError::Malformed { reason } if reason.contains("limit")),
            ),
        ];
        for (offset, value, expected) in cases {
            for bytes in [signed.to_bytes(), part_of(&signed, &r.bob)] {
                let mut bad = bytes;
                bad[offset..offset + value.len()].copy_from_slice(&value);
                // The header is decoded and checked alike for both forms.
                let full = SignedManifest::from_bytes(&bad).map(|_| ()).unwrap_err();
                let part = MemberPart::from_bytes(&bad).map(|_| ()).unwrap_err();
                assert!(
                    expected(&full) && expected(&part),
                    "{offset}: {full:?} {part:?}"
                );
            }
        }
        // A count that disagrees with the entries that follow is a length error.
        let mut wire = signed.to_bytes();
        wire[count_at..count_at + 4].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(
            SignedManifest::from_bytes(&wire).unwrap_err(),
            ManifestError::Truncated
        );
        wire[count_at..count_at + 4].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(
            SignedManifest::from_bytes(&wire).unwrap_err(),
            ManifestError::TrailingBytes { extra: ENTRY_LEN }
        );
    }

    #[test]
    fn a_member_part_with_a_path_longer_than_twenty_hashes_is_malformed() {
        let r = room();
        let mut part = part_of(&signed(&r), &r.alice);
        let k_at = PART_ENTRY_AT + ENTRY_LEN;
        part.truncate(k_at);
        part.push(21);
        part.extend_from_slice(&[7; 21 * 32]);
        assert!(matches!(
            MemberPart::from_bytes(&part),
            Err(ManifestError::Malformed { reason }) if reason.contains("audit path")
        ));
        // Twenty is decodable, and then fails as a proof of the wrong length.
        part.truncate(k_at);
        part.push(20);
        part.extend_from_slice(&[7; 20 * 32]);
        let decoded = MemberPart::from_bytes(&part).unwrap();
        assert_eq!(decoded.to_bytes(), part);
        assert!(matches!(
            decoded.open(&r.alice, &r.room, 5, &r.owner.sign_public_key()),
            Err(ManifestError::BadProof(ProofError::WrongPathLength {
                found: 20,
                expected: 1,
                ..
            }))
        ));
    }

    #[test]
    fn any_flipped_bit_in_the_header_signature_or_entries_fails_verification() {
        let r = room();
        let wire = signed(&r).to_bytes();
        // One flip in each region: header, the signed root, the signature, an entry's sealed copy.
        let root_at = HEADER_BASE_LEN + N - 1;
        for index in [10, root_at, ENTRIES_AT - 1, wire.len() - 5] {
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
    fn entries_that_do_not_match_the_signed_root_are_refused_on_upload() {
        let r = room();
        let mut wire = signed(&r).to_bytes();
        // Swap in another sealed copy's byte: the header and signature are intact.
        let last = wire.len() - 1;
        wire[last] ^= 0x01;
        let tampered = SignedManifest::from_bytes(&wire).unwrap();
        assert_eq!(
            tampered.verify_signature().unwrap_err(),
            ManifestError::RootMismatch
        );
        assert_eq!(
            tampered
                .open(&r.bob, &r.room, 5, &r.owner.sign_public_key())
                .unwrap_err(),
            ManifestError::RootMismatch
        );
        // A flip in the signed root itself breaks the signature first.
        let mut wire = signed(&r).to_bytes();
        wire[HEADER_BASE_LEN + N - 1] ^= 0x01;
        assert_eq!(
            SignedManifest::from_bytes(&wire)
                .unwrap()
                .verify_signature()
                .unwrap_err(),
            ManifestError::BadSignature
        );
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

    #[test]
    fn opening_a_member_part_names_why_a_member_gets_no_key_in_the_documented_order() {
        let r = room();
        let signed = signed(&r);
        let owner = r.owner.sign_public_key();
        let alice_part = MemberPart::from_bytes(&part_of(&signed, &r.alice)).unwrap();
        let bob_part = MemberPart::from_bytes(&part_of(&signed, &r.bob)).unwrap();
        assert!(signed.member_part(&owner).is_none());

        // 1. rekeyer, 2. room and epoch.
        assert!(matches!(
            alice_part.open(&r.alice, &r.room, 5, &r.bob.sign_public_key()),
            Err(ManifestError::UntrustedRekeyer { found }) if found == owner
        ));
        assert!(matches!(
            alice_part.open(&r.alice, &r.room, 6, &owner),
            Err(ManifestError::WrongRoomOrEpoch { found_epoch: 5, .. })
        ));
        // 3. signature: a forged header fails before anything about the entry is looked at.
        let mut forged = part_of(&signed, &r.alice);
        forged[HEADER_BASE_LEN + N + 3] ^= 0x01;
        let forged = MemberPart::from_bytes(&forged).unwrap();
        assert_eq!(
            forged.open(&r.owner, &r.room, 5, &owner).unwrap_err(),
            ManifestError::BadSignature
        );
        // 4. Someone else's part: not a recipient, though it verifies for them.
        assert_eq!(
            alice_part.open(&r.bob, &r.room, 5, &owner).unwrap_err(),
            ManifestError::NotARecipient
        );
        // 5. The proof: a wrong index, an altered entry, an altered path.
        let mut wrong_index = alice_part.to_bytes();
        wrong_index[ENTRIES_AT..PART_ENTRY_AT]
            .copy_from_slice(&(1 - alice_part.index()).to_be_bytes());
        let mut past_the_end = alice_part.to_bytes();
        past_the_end[ENTRIES_AT..PART_ENTRY_AT].copy_from_slice(&2u32.to_be_bytes());
        let mut altered_entry = alice_part.to_bytes();
        altered_entry[PART_ENTRY_AT + ENTRY_LEN - 1] ^= 0x01;
        let mut altered_path = alice_part.to_bytes();
        let last = altered_path.len() - 1;
        altered_path[last] ^= 0x01;
        for (bytes, expected) in [
            (wrong_index, ProofError::RootMismatch),
            (
                past_the_end,
                ProofError::IndexOutOfRange { index: 2, size: 2 },
            ),
            (altered_entry, ProofError::RootMismatch),
            (altered_path, ProofError::RootMismatch),
        ] {
            let part = MemberPart::from_bytes(&bytes).unwrap();
            assert_eq!(
                part.open(&r.alice, &r.room, 5, &owner).unwrap_err(),
                ManifestError::BadProof(expected)
            );
        }
        // 6. The x25519 key.
        let seed: [u8; 32] = r.alice.to_secret_bytes()[1..33].try_into().unwrap();
        let alice_new_kex = Identity::from_parts(&seed, &[3; 32]).unwrap();
        assert_eq!(
            alice_part
                .open(&alice_new_kex, &r.room, 5, &owner)
                .unwrap_err(),
            ManifestError::RecipientKeyMismatch
        );
        // Then the key.
        for (part, who) in [(&alice_part, &r.alice), (&bob_part, &r.bob)] {
            let entry = part
                .verify(&r.room, 5, &owner, &who.sign_public_key())
                .unwrap();
            assert_eq!(entry.member, who.sign_public_key());
            let key = part.open(who, &r.room, 5, &owner).unwrap();
            assert_eq!(key.expose_secret(), r.key.expose_secret());
        }
    }

    #[test]
    fn every_members_part_is_cut_from_one_tree_and_opens() {
        let owner = Identity::generate().unwrap();
        let people: Vec<Identity> = (0..7).map(|_| Identity::generate().unwrap()).collect();
        let recipients: Vec<Recipient> = people.iter().map(Recipient::of).collect();
        let room = RoomId::new("seven").unwrap();
        let key = RoomKey::generate().unwrap();
        let signed = SignedManifest::rekey(&owner, &room, 3, 1, &key, &recipients).unwrap();
        let parts: Vec<MemberPart> = signed.member_parts().collect();
        assert_eq!(parts.len(), 7);
        let tree = signed.merkle_tree();
        assert_eq!(tree.root(), signed.header().merkle_root);
        for (index, part) in parts.iter().enumerate() {
            assert_eq!(part.index() as usize, index);
            let member = part.unverified_entry().member;
            assert_eq!(signed.member_part(&member).as_ref(), Some(part));
            assert_eq!(part.proof(), tree.proof(index).unwrap());
            assert_eq!(MemberPart::from_bytes(&part.to_bytes()).as_ref(), Ok(part));
        }
        for who in &people {
            let part = signed.member_part(&who.sign_public_key()).unwrap();
            let opened = part.open(who, &room, 3, &owner.sign_public_key()).unwrap();
            assert_eq!(opened.expose_secret(), key.expose_secret());
        }
    }

    #[test]
    fn a_member_part_of_a_100000_member_manifest_is_under_1_kib_and_opens() {
        // One real entry among 100,000 leaves, the others fake leaf hashes: no 100,000 seals.
        const COUNT: usize = 100_000;
        let r = room();
        let real =
            SignedManifest::rekey(&r.owner, &r.room, 5, 4, &r.key, &[Recipient::of(&r.alice)])
                .unwrap();
        let entry = real.unverified().entries[0];
        let at = 54_321;
        let leaves: Vec<Hash> = (0..COUNT as u64)
            .map(|i| {
                if i as usize == at {
                    entry.leaf_hash()
                } else {
                    merkle::leaf_hash(&i.to_be_bytes())
                }
            })
            .collect();
        let tree = MerkleTree::from_leaf_hashes(leaves);
        let longest = (0..COUNT).map(|i| tree.proof(i).unwrap().len()).max();
        assert_eq!(longest, Some(17));
        assert_eq!(merkle::max_audit_path_len(COUNT as u64), 17);
        // The bound, for the longest room id: 301 + 128 + 17 × 32 = 973 bytes.
        assert_eq!(member_part_len(crate::room::ROOM_ID_MAX_LEN, 17), 973);
        assert!(member_part_len(crate::room::ROOM_ID_MAX_LEN, 17) < 1024);

        let header = ManifestHeader {
            count: COUNT as u32,
            merkle_root: tree.root(),
            ..real.header()
        };
        let signature = r.owner.sign(&header.signed_message());
        let part = MemberPart::assemble(header, signature, at, entry, tree.proof(at).unwrap());
        let bytes = part.to_bytes();
        assert_eq!(bytes.len(), member_part_len(N, part.proof().len()));
        assert!(bytes.len() <= 852, "{} bytes", bytes.len());
        let decoded = MemberPart::from_bytes(&bytes).unwrap();
        let key = decoded
            .open(&r.alice, &r.room, 5, &r.owner.sign_public_key())
            .unwrap();
        assert_eq!(key.expose_secret(), r.key.expose_secret());
    }

    #[test]
    fn a_rekey_sealed_on_several_threads_opens_for_every_member_in_order() {
        // Enough members for one thread per core: each chunk seals its own entries in place.
        let owner = Identity::generate().unwrap();
        let people: Vec<Identity> = (0..3 * ENTRIES_PER_THREAD)
            .map(|_| Identity::generate().unwrap())
            .collect();
        let recipients: Vec<Recipient> = people.iter().map(Recipient::of).collect();
        let room = RoomId::new("crowd").unwrap();
        let key = RoomKey::generate().unwrap();
        let signed = SignedManifest::rekey(&owner, &room, 1, 0, &key, &recipients).unwrap();
        let wire = SignedManifest::from_bytes(&signed.to_bytes()).unwrap();
        for person in &people {
            let part = wire.member_part(&person.sign_public_key()).unwrap();
            let opened = part
                .open(person, &room, 1, &owner.sign_public_key())
                .unwrap();
            assert_eq!(opened.expose_secret(), key.expose_secret());
        }
    }

    #[test]
    fn a_sealing_error_in_any_chunk_is_the_rekeys_error() {
        let entry = |member: SignPublicKey| ManifestEntry {
            member,
            recipient: Identity::generate().unwrap().kex_public_key(),
            sealed: SealedRoomKey::from_bytes(&[SEALED_ROOM_KEY_VERSION; SEALED_ROOM_KEY_LEN])
                .unwrap(),
        };
        let (usual, odd) = (
            Identity::generate().unwrap().sign_public_key(),
            Identity::generate().unwrap().sign_public_key(),
        );
        let mut entries = vec![entry(usual); 4 * ENTRIES_PER_THREAD];
        let fails_on_odd = |chunk: &mut [ManifestEntry]| {
            if chunk.iter().any(|e| e.member == odd) {
                Err("cannot seal to this one")
            } else {
                Ok(())
            }
        };
        assert_eq!(in_parallel(&mut entries, fails_on_odd), Ok(()));
        // The odd entry last, in the last chunk: its error is not lost behind the others' Ok.
        *entries.last_mut().unwrap() = entry(odd);
        assert_eq!(
            in_parallel(&mut entries, fails_on_odd),
            Err("cannot seal to this one")
        );
    }

    #[test]
    fn a_rekey_reports_its_progress_and_stops_when_its_observer_says_so() {
        let owner = Identity::generate().unwrap();
        let recipients: Vec<Recipient> = (0..2 * PROGRESS_STEP + 1)
            .map(|_| Recipient::of(&Identity::generate().unwrap()))
            .collect();
        let room = RoomId::new("crowd").unwrap();
        let key = RoomKey::generate().unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let observe = |done: usize| {
            seen.lock().unwrap().push(done);
            true
        };
        SignedManifest::rekey_observed(&owner, &room, 1, 0, &key, &recipients, &observe).unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(
            seen,
            [PROGRESS_STEP, 2 * PROGRESS_STEP, 2 * PROGRESS_STEP + 1]
        );

        // Cancelled at the first report: no manifest, and the other cores stop too.
        let reports = AtomicUsize::new(0);
        let cancel = |_| {
            reports.fetch_add(1, Ordering::Relaxed);
            false
        };
        assert_eq!(
            SignedManifest::rekey_observed(&owner, &room, 1, 0, &key, &recipients, &cancel)
                .unwrap_err(),
            ManifestError::Cancelled
        );
        assert!(
            reports.into_inner() <= std::thread::available_parallelism().map_or(1, usize::from)
        );
    }
}
