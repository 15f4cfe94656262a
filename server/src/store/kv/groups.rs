//! An epoch's tails in groups: the KV store keeps [`GROUP_LEN`] members' tails per value
//! instead of one value per member, so a rekey of n members is n / [`GROUP_LEN`] puts.
//!
//! - A *group* is the tails of consecutive members in key order (the manifest's entry order),
//!   each as `member (32 bytes) || tail length (u32, big-endian) || tail`.
//! - The *index* is the first member key of every group, 32 bytes each, in order: a member's
//!   group is the last one whose first key is not after its own.
//!
//! The grouping depends on the manifest alone (never on a setting or the cluster's message
//! limit), so two writers of the same epoch write the same bytes under the same keys. A tail is
//! at most 790 bytes (a 2^20-member tree), so a group is at most
//! [`GROUP_LEN`] × 826 bytes = 106 KB, well under a message.
//!
//! Reading never trusts the stored bytes: anything that does not parse is
//! [`StoreError::Corrupt`], never a panic.

use unibus::keys::PUBLIC_KEY_LEN;
use unibus::SignPublicKey;

use crate::store::{StoreError, StoreResult};

/// How many members' tails one group holds (the last group may hold fewer).
pub(super) const GROUP_LEN: usize = 128;

/// The bytes of a record besides its tail: the member key and the tail's length.
const RECORD_OVERHEAD: usize = PUBLIC_KEY_LEN + 4;

/// An epoch's tails as the KV store writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Grouped {
    /// The first member key of every group.
    pub index: Vec<u8>,
    /// The groups, in member order.
    pub groups: Vec<Vec<u8>>,
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("stored tail group: {what}"))
}

/// Groups `tails` (each member's tail, any order; sorted here by member key).
pub(super) fn group(mut tails: Vec<(SignPublicKey, Vec<u8>)>) -> Grouped {
    // The manifest's entry order is already ascending: this sort only checks it.
    tails.sort_by_key(|(member, _)| *member);
    let mut index = Vec::with_capacity(tails.len().div_ceil(GROUP_LEN) * PUBLIC_KEY_LEN);
    let groups = tails
        .chunks(GROUP_LEN)
        .map(|chunk| {
            let bytes: usize = chunk.iter().map(|(_, t)| RECORD_OVERHEAD + t.len()).sum();
            let mut group = Vec::with_capacity(bytes);
            for (member, tail) in chunk {
                group.extend_from_slice(member.as_bytes());
                // A tail is under 1 KB.
                group.extend_from_slice(&(tail.len() as u32).to_be_bytes());
                group.extend_from_slice(tail);
            }
            // Chunks are never empty.
            if let Some((first, _)) = chunk.first() {
                index.extend_from_slice(first.as_bytes());
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

/// The group that would hold `member`'s tail, if any could: the last whose first key is not
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
    let at_or_before = low;
    Ok(at_or_before.checked_sub(1))
}

/// The records of a group: each member key with its tail.
fn records(group: &[u8]) -> impl Iterator<Item = StoreResult<(&[u8], &[u8])>> {
    let mut rest = group;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let record = (|| {
            let member = rest.get(..PUBLIC_KEY_LEN)?;
            let len = rest
                .get(PUBLIC_KEY_LEN..RECORD_OVERHEAD)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)? as usize;
            let tail = rest.get(RECORD_OVERHEAD..RECORD_OVERHEAD.checked_add(len)?)?;
            Some((member, tail, RECORD_OVERHEAD + len))
        })();
        match record {
            Some((member, tail, used)) => {
                rest = &rest[used..];
                Some(Ok((member, tail)))
            }
            None => {
                let left = rest.len();
                rest = &[];
                Some(Err(corrupt(format!(
                    "a record cut short ({left} bytes left)"
                ))))
            }
        }
    })
}

/// `member`'s tail in `group`, if it is there.
pub(super) fn tail_in<'g>(
    group: &'g [u8],
    member: &SignPublicKey,
) -> StoreResult<Option<&'g [u8]>> {
    for record in records(group) {
        let (key, tail) = record?;
        if key == member.as_bytes() {
            return Ok(Some(tail));
        }
    }
    Ok(None)
}

/// Every tail in `group`, in order.
pub(super) fn tails_in(group: &[u8]) -> StoreResult<Vec<Vec<u8>>> {
    records(group)
        .map(|record| record.map(|(_, tail)| tail.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibus::Identity;

    fn members(n: usize) -> Vec<SignPublicKey> {
        let mut keys: Vec<SignPublicKey> = (0..n)
            .map(|_| Identity::generate().unwrap().sign_public_key())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn every_member_finds_its_own_tail_in_its_group() {
        for n in [
            1,
            GROUP_LEN - 1,
            GROUP_LEN,
            GROUP_LEN + 1,
            3 * GROUP_LEN + 7,
        ] {
            let keys = members(n);
            // Tails of different lengths, named by their member.
            let tails: Vec<(SignPublicKey, Vec<u8>)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, [k.as_bytes().as_slice(), &vec![7; i % 5]].concat()))
                .collect();
            let mut shuffled = tails.clone();
            shuffled.reverse();
            let grouped = group(shuffled);
            assert_eq!(grouped.groups.len(), n.div_ceil(GROUP_LEN));
            assert_eq!(group_count(&grouped.index).unwrap(), grouped.groups.len());
            for (member, tail) in &tails {
                let g = group_of(&grouped.index, member).unwrap().unwrap();
                assert_eq!(
                    tail_in(&grouped.groups[g], member).unwrap(),
                    Some(tail.as_slice())
                );
            }
            let all: Vec<Vec<u8>> = grouped
                .groups
                .iter()
                .flat_map(|g| tails_in(g).unwrap())
                .collect();
            assert_eq!(all, tails.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_stranger_finds_no_tail() {
        let keys = members(2 * GROUP_LEN);
        let (stranger, recorded) = (keys[GROUP_LEN + 3], keys);
        let tails = recorded
            .iter()
            .filter(|k| **k != stranger)
            .map(|k| (*k, vec![1, 2, 3]))
            .collect();
        let grouped = group(tails);
        let found = group_of(&grouped.index, &stranger)
            .unwrap()
            .map(|g| tail_in(&grouped.groups[g], &stranger).unwrap());
        assert_eq!(found.flatten(), None);
        // Before the first group's first key: no group at all.
        let smallest = SignPublicKey::from_bytes([0; 32]);
        if let Ok(smallest) = smallest {
            if smallest < recorded[0] {
                assert_eq!(group_of(&grouped.index, &smallest).unwrap(), None);
            }
        }
    }

    #[test]
    fn damaged_groups_and_indexes_are_corruption_not_panics() {
        let keys = members(3);
        let grouped = group(keys.iter().map(|k| (*k, vec![9; 40])).collect());
        let group = &grouped.groups[0];
        for cut in 1..group.len() {
            let damaged = &group[..cut];
            let whole_records = cut.is_multiple_of(RECORD_OVERHEAD + 40);
            assert_eq!(tails_in(damaged).is_ok(), whole_records, "cut at {cut}");
        }
        let mut lying = group.clone();
        lying[PUBLIC_KEY_LEN..RECORD_OVERHEAD].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(tails_in(&lying), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            tail_in(&lying, &keys[2]),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            group_of(&grouped.index[..31], &keys[0]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
