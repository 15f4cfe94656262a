//! An epoch's tails in groups: the KV store keeps [`GROUP_LEN`] consecutive entries per value
//! instead of one tail per member, so a rekey of n members is n / [`GROUP_LEN`] puts, and the
//! audit paths are stored once per group rather than once per member.
//!
//! Group `g` holds entries `128 g` to `128 g + 127` (the last group fewer), and the part of
//! their audit paths they share. The manifest's Merkle tree (protocol §8.2) pairs nodes level by
//! level, so an aligned block of 128 leaves is one subtree: a member's audit path is its path
//! within that subtree, computed again from the group's entries (255 hashes at most), followed
//! by the subtree's own path to the root, the same for every member of the group. A group is
//! `path length (u8) || path (32 bytes each) || entries (145 bytes each)`: at most
//! 1 + 13 × 32 + 128 × 145 = 19 KB.
//!
//! The *index* is the member key of every group's first entry, 32 bytes each, in order: a
//! member's group is the last one whose first key is not after its own.
//!
//! The grouping depends on the manifest alone (never on a setting or the cluster's message
//! limit), so two writers of the same epoch write the same bytes under the same keys. Reading
//! never trusts the stored bytes: anything that does not parse is [`StoreError::Corrupt`], never
//! a panic.

use unibus::keys::PUBLIC_KEY_LEN;
use unibus::manifest::merkle::{self, MerkleTree, HASH_LEN};
use unibus::manifest::{SignedManifest, ENTRY_LEN, MAX_PROOF_LEN};
use unibus::SignPublicKey;

use crate::store::{StoreError, StoreResult};

/// How many entries one group holds (the last group may hold fewer). A power of two, so every
/// full group is one subtree of the manifest's Merkle tree.
pub(super) const GROUP_LEN: usize = 128;

/// The levels of a full group's own subtree.
const GROUP_LEVELS: usize = GROUP_LEN.trailing_zeros() as usize;

/// An epoch's entries as the KV store writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Grouped {
    /// The member key of every group's first entry.
    pub index: Vec<u8>,
    /// The groups, in entry order.
    pub groups: Vec<Vec<u8>>,
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("stored tail group: {what}"))
}

/// The length of a leaf's path within a subtree of `leaves` leaves, for its first leaf: the
/// levels above the leaves, ⌈log2 leaves⌉.
fn levels_of(leaves: usize) -> usize {
    (usize::BITS - leaves.saturating_sub(1).leading_zeros()) as usize
}

/// Groups `manifest`'s entries, with each group's shared upper path (O(n) hashes, once).
pub(super) fn group(manifest: &SignedManifest) -> Grouped {
    let entries = &manifest.unverified().entries;
    let tree = manifest.merkle_tree();
    let mut index = Vec::with_capacity(entries.len().div_ceil(GROUP_LEN) * PUBLIC_KEY_LEN);
    let groups = entries
        .chunks(GROUP_LEN)
        .enumerate()
        .map(|(g, chunk)| {
            // Every index below the entry count has a path; the group's first entry's path
            // ends with the path its subtree shares.
            let path = tree.proof(g * GROUP_LEN).unwrap_or_default();
            let shared = path.get(levels_of(chunk.len())..).unwrap_or_default();
            let mut group =
                Vec::with_capacity(1 + shared.len() * HASH_LEN + chunk.len() * ENTRY_LEN);
            // At most MAX_PROOF_LEN (20) hashes.
            group.push(shared.len() as u8);
            for hash in shared {
                group.extend_from_slice(hash);
            }
            for entry in chunk {
                group.extend_from_slice(&entry.to_bytes());
            }
            // Chunks are never empty.
            if let Some(first) = chunk.first() {
                index.extend_from_slice(first.member.as_bytes());
            }
            group
        })
        .collect();
    Grouped { index, groups }
}

/// How many groups `index` names.
pub(super) fn group_count(index: &[u8]) -> StoreResult<usize> {
    if !index.len().is_multiple_of(PUBLIC_KEY_LEN) {
        return Err(corrupt(format!("an index of {} bytes", index.len())));
    }
    Ok(index.len() / PUBLIC_KEY_LEN)
}

/// The group that would hold `member`'s entry, if any could: the last whose first key is not
/// after it.
pub(super) fn group_of(index: &[u8], member: &SignPublicKey) -> StoreResult<Option<usize>> {
    let count = group_count(index)?;
    let member = member.as_bytes().as_slice();
    // Binary search for how many groups start at or before the member's key. Every `middle` is
    // below `count`, so its key lies within the index.
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = low + (high - low) / 2;
        let first = index.get(middle * PUBLIC_KEY_LEN..(middle + 1) * PUBLIC_KEY_LEN);
        if first.is_some_and(|first| first <= member) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low.checked_sub(1))
}

/// A group's shared path and its entries (whole, 1 to [`GROUP_LEN`] of them).
fn parts(group: &[u8]) -> StoreResult<(Vec<merkle::Hash>, &[u8])> {
    let (&len, rest) = group
        .split_first()
        .ok_or_else(|| corrupt("an empty group"))?;
    let len = len as usize;
    let path_bytes = rest
        .get(..len * HASH_LEN)
        .filter(|_| len <= MAX_PROOF_LEN)
        .ok_or_else(|| corrupt(format!("a path of {len} hashes")))?;
    let entries = &rest[path_bytes.len()..];
    let count = entries.len() / ENTRY_LEN;
    if !entries.len().is_multiple_of(ENTRY_LEN) || !(1..=GROUP_LEN).contains(&count) {
        return Err(corrupt(format!("entries of {} bytes", entries.len())));
    }
    let path = path_bytes
        .chunks_exact(HASH_LEN)
        .filter_map(|hash| merkle::Hash::try_from(hash).ok())
        .collect();
    Ok((path, entries))
}

/// `member`'s tail (leaf index, entry, audit path: protocol §8.4) from group `n`, if its entry
/// is there.
pub(super) fn tail_in(
    group: &[u8],
    n: usize,
    member: &SignPublicKey,
) -> StoreResult<Option<Vec<u8>>> {
    let (shared, entries) = parts(group)?;
    let Some(position) = entries
        .chunks_exact(ENTRY_LEN)
        .position(|entry| entry.get(..PUBLIC_KEY_LEN) == Some(member.as_bytes().as_slice()))
    else {
        return Ok(None);
    };
    let hashes = entries
        .chunks_exact(ENTRY_LEN)
        .map(merkle::leaf_hash)
        .collect();
    let own = MerkleTree::from_leaf_hashes(hashes)
        .proof(position)
        .unwrap_or_default();
    let leaf = n
        .checked_mul(GROUP_LEN)
        .and_then(|first| first.checked_add(position))
        .and_then(|leaf| u32::try_from(leaf).ok())
        .ok_or_else(|| corrupt(format!("group {n} is past any manifest")))?;
    let path_len = own.len() + shared.len();
    if own.len() > GROUP_LEVELS || path_len > MAX_PROOF_LEN {
        return Err(corrupt(format!("an audit path of {path_len} hashes")));
    }
    let entry = &entries[position * ENTRY_LEN..(position + 1) * ENTRY_LEN];
    let mut tail = Vec::with_capacity(4 + ENTRY_LEN + 1 + path_len * HASH_LEN);
    tail.extend_from_slice(&leaf.to_be_bytes());
    tail.extend_from_slice(entry);
    // At most MAX_PROOF_LEN (20), checked above.
    tail.push(path_len as u8);
    for hash in own.iter().chain(&shared) {
        tail.extend_from_slice(hash);
    }
    Ok(Some(tail))
}

/// The entries of `group`, in order.
pub(super) fn entries_in(group: &[u8]) -> StoreResult<&[u8]> {
    parts(group).map(|(_, entries)| entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::epoch::StoredEpoch;
    use unibus::manifest::Recipient;
    use unibus::sealing::RoomKey;
    use unibus::{Identity, RoomId};

    fn manifest(n: usize) -> SignedManifest {
        let owner = Identity::generate().unwrap();
        let recipients: Vec<Recipient> = (0..n)
            .map(|_| Recipient::of(&Identity::generate().unwrap()))
            .collect();
        let room = RoomId::new("general").unwrap();
        let key = RoomKey::generate().unwrap();
        SignedManifest::rekey(&owner, &room, 1, 0, &key, &recipients).unwrap()
    }

    #[test]
    fn every_member_gets_the_tail_the_whole_manifest_cuts_for_it() {
        for n in [
            1,
            2,
            3,
            GROUP_LEN - 1,
            GROUP_LEN,
            GROUP_LEN + 1,
            3 * GROUP_LEN + 7,
        ] {
            let manifest = manifest(n);
            let stored = StoredEpoch::of(&manifest);
            let grouped = group(&manifest);
            assert_eq!(grouped.groups.len(), n.div_ceil(GROUP_LEN));
            assert_eq!(group_count(&grouped.index).unwrap(), grouped.groups.len());
            for (member, tail) in &stored.tails {
                let g = group_of(&grouped.index, member).unwrap().unwrap();
                assert_eq!(
                    tail_in(&grouped.groups[g], g, member).unwrap().as_ref(),
                    Some(tail),
                    "{n} members"
                );
            }
            let entries: Vec<u8> = grouped
                .groups
                .iter()
                .flat_map(|g| entries_in(g).unwrap().to_vec())
                .collect();
            let wire = manifest.to_bytes();
            assert_eq!(entries, wire[wire.len() - n * ENTRY_LEN..]);
        }
    }

    #[test]
    fn a_stranger_finds_no_tail() {
        let manifest = manifest(2 * GROUP_LEN);
        let grouped = group(&manifest);
        let stranger = Identity::generate().unwrap().sign_public_key();
        let found = group_of(&grouped.index, &stranger)
            .unwrap()
            .map(|g| tail_in(&grouped.groups[g], g, &stranger).unwrap());
        assert_eq!(found.flatten(), None);
    }

    #[test]
    fn damaged_groups_and_indexes_are_corruption_not_panics() {
        let manifest = manifest(GROUP_LEN + 3);
        let grouped = group(&manifest);
        let member = manifest.unverified().entries[GROUP_LEN + 1].member;
        let last = &grouped.groups[1];
        for cut in 0..last.len() {
            let damaged = &last[..cut];
            let outcome = tail_in(damaged, 1, &member);
            // Cut within the path, or within an entry: corrupt. At an entry's end: that
            // entry's member is found if it is whole, else not.
            let path_end = 1 + last[0] as usize * HASH_LEN;
            let whole = cut > path_end && (cut - path_end).is_multiple_of(ENTRY_LEN);
            assert_eq!(outcome.is_ok(), whole, "cut at {cut}");
        }
        let mut lying = last.clone();
        lying[0] = 200;
        assert!(matches!(
            tail_in(&lying, 1, &member),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(entries_in(&[]), Err(StoreError::Corrupt(_))));
        // A group number past any manifest.
        assert!(matches!(
            tail_in(last, usize::MAX, &member),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            group_of(&grouped.index[..31], &member),
            Err(StoreError::Corrupt(_))
        ));
    }
}
