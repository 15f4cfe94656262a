//! An epoch as the stores cut it (protocol §8.4): its signed *head* (the header and the
//! signature, the same for every member) and one *tail* per member (leaf index, entry and audit
//! path). A member's part, what `key` replies, is `head || tail`. SQLite keeps each tail as a
//! row: one read of each, whatever the room's size. The KV store keeps the tails in groups of
//! 128 entries and cuts a member's tail from its group when asked (`kv::groups`). The whole
//! manifest is `head ||` the tails' entries in index order.

use unibus::manifest::{SignedManifest, ENTRY_LEN};
use unibus::SignPublicKey;

use super::{StoreError, StoreResult};

/// An epoch cut into what the stores keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEpoch {
    /// `header || signature`.
    pub head: Vec<u8>,
    /// Each member's tail, in entry order.
    pub tails: Vec<(SignPublicKey, Vec<u8>)>,
}

impl StoredEpoch {
    /// The head of `manifest`: `header || signature`.
    pub fn head_of(manifest: &SignedManifest) -> Vec<u8> {
        let mut head = manifest.header().to_bytes();
        head.extend_from_slice(&manifest.signature().to_bytes());
        head
    }

    /// Cuts `manifest` into its head and its members' tails (O(n log n) for n members).
    pub fn of(manifest: &SignedManifest) -> Self {
        let head = Self::head_of(manifest);
        let tails = manifest
            .member_parts()
            .map(|part| {
                let mut bytes = part.to_bytes();
                // Every part starts with this same head.
                let tail = bytes.split_off(head.len());
                (part.unverified_entry().member, tail)
            })
            .collect();
        StoredEpoch { head, tails }
    }
}

/// A member's part: the stored head followed by the stored tail.
pub fn member_part(head: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut part = Vec::with_capacity(head.len() + tail.len());
    part.extend_from_slice(head);
    part.extend_from_slice(tail);
    part
}

/// The whole manifest from its stored head and all its members' tails (any order), checked
/// again as any received manifest is: a stored epoch that does not decode, or whose entries do
/// not match its signed root, is [`StoreError::Corrupt`].
pub fn rebuild_manifest(
    head: &[u8],
    tails: impl IntoIterator<Item = Vec<u8>>,
) -> StoreResult<SignedManifest> {
    let corrupt = |what: String| StoreError::Corrupt(format!("stored epoch: {what}"));
    let mut entries: Vec<(u32, Vec<u8>)> = tails
        .into_iter()
        .map(|tail| {
            let index = tail
                .get(..4)
                .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
                .map(u32::from_be_bytes);
            let entry = tail.get(4..4 + ENTRY_LEN);
            match (index, entry) {
                (Some(index), Some(entry)) => Ok((index, entry.to_vec())),
                _ => Err(corrupt(format!("a tail of {} bytes", tail.len()))),
            }
        })
        .collect::<StoreResult<_>>()?;
    entries.sort_unstable_by_key(|(index, _)| *index);
    let mut bytes = Vec::with_capacity(head.len() + entries.len() * ENTRY_LEN);
    bytes.extend_from_slice(head);
    for (position, (index, entry)) in entries.iter().enumerate() {
        if *index as usize != position {
            return Err(corrupt(format!("leaf {position} is missing or doubled")));
        }
        bytes.extend_from_slice(entry);
    }
    SignedManifest::from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibus::manifest::{MemberPart, Recipient};
    use unibus::sealing::RoomKey;
    use unibus::{Identity, RoomId};

    #[test]
    fn parts_and_the_whole_manifest_come_back_from_head_and_tails() {
        let owner = Identity::generate().unwrap();
        let members: Vec<Identity> = (0..5).map(|_| Identity::generate().unwrap()).collect();
        let recipients: Vec<Recipient> = std::iter::once(&owner)
            .chain(&members)
            .map(Recipient::of)
            .collect();
        let room = RoomId::new("general").unwrap();
        let key = RoomKey::generate().unwrap();
        let manifest = SignedManifest::rekey(&owner, &room, 1, 0, &key, &recipients).unwrap();

        let stored = StoredEpoch::of(&manifest);
        assert_eq!(stored.tails.len(), 6);
        for (member, tail) in &stored.tails {
            let part = member_part(&stored.head, tail);
            assert_eq!(
                Some(MemberPart::from_bytes(&part).unwrap()),
                manifest.member_part(member)
            );
        }
        let mut tails: Vec<Vec<u8>> = stored.tails.iter().map(|(_, t)| t.clone()).collect();
        tails.reverse();
        assert_eq!(
            rebuild_manifest(&stored.head, tails.clone()).unwrap(),
            manifest
        );

        // A lost tail is corruption, never a smaller manifest.
        tails.pop();
        assert!(matches!(
            rebuild_manifest(&stored.head, tails),
            Err(StoreError::Corrupt(_))
        ));
    }
}
