//! One member's part of a manifest: what a member fetches instead of the whole manifest.

use super::merkle::{self, Hash, HASH_LEN};
use super::{ManifestEntry, ManifestError, ManifestHeader, MAX_PROOF_LEN};
use crate::keys::{SignPublicKey, Signature, SIGNATURE_LEN};
use crate::room::RoomId;
use crate::sealing::RoomKey;
use crate::wire::Reader;
use crate::Identity;

/// One member's part of a signed manifest: the signed header, the member's leaf index and entry,
/// and the entry's audit path to the signed Merkle root. O(log n) bytes: 301 + len(room) + 32 ×
/// (path length), with a path of at most ⌈log2 count⌉ hashes (`docs/protocol.md` §8.3).
///
/// ```text
/// part = header || signature (64) || u32 index || entry (145) || u8 k || k * hash (32)
/// ```
///
/// A server cuts it from a [`SignedManifest`](super::SignedManifest) with
/// [`member_part`](super::SignedManifest::member_part) or
/// [`member_parts`](super::SignedManifest::member_parts); the member decodes it with
/// [`from_bytes`](Self::from_bytes) and opens it with [`open`](Self::open), which runs every check
/// of `docs/protocol.md` §8.5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPart {
    header: ManifestHeader,
    signature: Signature,
    index: u32,
    entry: ManifestEntry,
    proof: Vec<Hash>,
}

impl MemberPart {
    /// Puts a part together from a manifest's pieces. `index` is below the manifest's entry
    /// count (at most `MAX_ENTRIES`), so it fits a `u32`.
    pub(super) fn assemble(
        header: ManifestHeader,
        signature: Signature,
        index: usize,
        entry: ManifestEntry,
        proof: Vec<Hash>,
    ) -> Self {
        Self {
            header,
            signature,
            index: index as u32,
            entry,
            proof,
        }
    }

    /// The wire form, [`encoded_len`](Self::encoded_len) bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header.to_bytes();
        out.reserve(self.encoded_len().saturating_sub(out.len()));
        out.extend_from_slice(&self.signature.to_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.entry.to_bytes());
        // At most MAX_PROOF_LEN (20) hashes: checked when decoded, and a tree of at most
        // MAX_ENTRIES leaves has no longer path.
        out.push(self.proof.len() as u8);
        for hash in &self.proof {
            out.extend_from_slice(hash);
        }
        out
    }

    /// The length of the wire form: `301 + len(room) + 32 × proof length`.
    pub fn encoded_len(&self) -> usize {
        super::member_part_len(self.header.room.as_str().len(), self.proof.len())
    }

    /// Decodes the wire form and checks its structure (`docs/protocol.md` §8.4). Neither the
    /// signature nor the audit path is checked here: call [`verify`](Self::verify) or
    /// [`open`](Self::open).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut reader = Reader::new(bytes);
        let header = ManifestHeader::decode(&mut reader)?;
        let signature = Signature::from_bytes(reader.take::<SIGNATURE_LEN>()?);
        let index = u32::from_be_bytes(reader.take::<4>()?);
        let entry = ManifestEntry::decode(&mut reader)?;
        let proof_len = usize::from(reader.take::<1>()?[0]);
        if proof_len > MAX_PROOF_LEN {
            return Err(ManifestError::Malformed {
                reason: format!("audit path of {proof_len} hashes; the limit is {MAX_PROOF_LEN}"),
            });
        }
        reader.expect_remaining(proof_len * HASH_LEN)?;
        let proof = (0..proof_len)
            .map(|_| reader.take::<HASH_LEN>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            header,
            signature,
            index,
            entry,
            proof,
        })
    }

    /// What a client does before trusting the entry, in this order (`docs/protocol.md` §8.5,
    /// steps 1 to 5): the header names `trusted_rekeyer` as the rekeyer (`UntrustedRekeyer`) and
    /// `room` and `epoch` (`WrongRoomOrEpoch`); the signature verifies over the header
    /// (`BadSignature`); the entry is `member`'s (`NotARecipient`); the index is below the count
    /// and the audit path leads from the entry to the signed root (`BadProof`).
    ///
    /// Returns the verified entry. Once this succeeds, the header is verified too.
    pub fn verify(
        &self,
        room: &RoomId,
        epoch: u64,
        trusted_rekeyer: &SignPublicKey,
        member: &SignPublicKey,
    ) -> Result<&ManifestEntry, ManifestError> {
        self.header.check_requested(room, epoch, trusted_rekeyer)?;
        self.header.verify_signature(&self.signature)?;
        if &self.entry.member != member {
            return Err(ManifestError::NotARecipient);
        }
        merkle::verify_inclusion(
            &self.entry.leaf_hash(),
            u64::from(self.index),
            u64::from(self.header.count),
            &self.proof,
            &self.header.merkle_root,
        )
        .map_err(ManifestError::BadProof)?;
        Ok(&self.entry)
    }

    /// Verifies (as [`verify`](Self::verify), for `identity`'s signing key), checks that the copy
    /// is sealed to `identity`'s own x25519 key (`RecipientKeyMismatch`), and opens it with the
    /// requested room and epoch and the trusted rekeyer (`docs/protocol.md` §7.4).
    pub fn open(
        &self,
        identity: &Identity,
        room: &RoomId,
        epoch: u64,
        trusted_rekeyer: &SignPublicKey,
    ) -> Result<RoomKey, ManifestError> {
        self.verify(room, epoch, trusted_rekeyer, &identity.sign_public_key())?
            .open(identity, room, epoch, trusted_rekeyer)
    }

    /// The signed header, **unverified** until [`verify`](Self::verify) succeeds.
    pub fn unverified_header(&self) -> &ManifestHeader {
        &self.header
    }

    /// The signed head (header and signature), **unverified** until [`verify`](Self::verify)
    /// succeeds.
    pub fn head(&self) -> super::SignedHead {
        super::SignedHead {
            header: self.header.clone(),
            signature: self.signature,
        }
    }

    /// The member's entry, **unverified** until [`verify`](Self::verify) succeeds.
    pub fn unverified_entry(&self) -> &ManifestEntry {
        &self.entry
    }

    /// The rekeyer's signature over the header.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The entry's leaf index: its position among the manifest's entries.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The audit path from the entry to the root, bottom first (RFC 9162 §2.1.3.1).
    pub fn proof(&self) -> &[Hash] {
        &self.proof
    }
}
