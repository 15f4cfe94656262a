//! The room keys a session has opened, kept so that a member part it already verified and
//! opened is not verified and opened again, and so that messages of an epoch it holds need no
//! request.
//!
//! Verifying a member part and opening its copy is a pure function of the part's bytes, the
//! room, the epoch, the trusted rekeyer and the session's own identity. So when a `key` reply
//! carries exactly the bytes of a part opened before, for the same room, epoch and rekeyer, the
//! outcome is the key opened then. Any other byte, a tampered one included, misses and goes
//! through every check again. The checks that depend on the session's state (the owner's pin,
//! the epoch floor) are not kept: they run on every call.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use crate::envelope::EpochKey;
use crate::{RoomId, SignPublicKey};

/// How many opened keys a session keeps (the oldest goes first).
pub(crate) const KEPT: usize = 64;

/// What decides the outcome of opening a member part: a SHA-256 over the room, the epoch, the
/// trusted rekeyer and the part's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of opening `part` (its wire bytes) for `room` at `epoch` as signed by
    /// `rekeyer`.
    pub(crate) fn of(room: &RoomId, epoch: u64, rekeyer: &SignPublicKey, part: &[u8]) -> Self {
        let mut hash = Sha256::new();
        // Length-prefixed, so that no two different inputs hash the same bytes.
        hash.update((room.as_str().len() as u64).to_be_bytes());
        hash.update(room.as_str().as_bytes());
        hash.update(epoch.to_be_bytes());
        hash.update(rekeyer.as_bytes());
        hash.update(part);
        Self(hash.finalize().into())
    }
}

/// The epoch keys kept most recently under a key `K` (a [`Fingerprint`] of the part they were
/// opened from, or a room and epoch), at most [`KEPT`]; each is wiped when it leaves (its
/// [`RoomKey`](crate::sealing::RoomKey) zeroizes on drop).
pub(crate) struct OpenedKeys<K, V = EpochKey>(Mutex<VecDeque<(K, V)>>);

impl<K, V> Default for OpenedKeys<K, V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: PartialEq, V: Clone> OpenedKeys<K, V> {
    /// The key kept under `key`, if it is still kept.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.lock()
            .iter()
            .find(|(kept, _)| kept == key)
            .map(|(_, opened)| opened.clone())
    }

    /// Keeps `opened` under `key`, replacing what was kept under it.
    pub(crate) fn keep(&self, key: K, opened: V) {
        let mut kept = self.lock();
        kept.retain(|(k, _)| *k != key);
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((key, opened));
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(K, V)>> {
        // Every change is one push or pop, so a panic elsewhere while it was held cannot have
        // left it half-changed.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn room(name: &str) -> RoomId {
        RoomId::new(name).unwrap()
    }

    #[test]
    fn a_part_differing_in_any_input_has_another_fingerprint() {
        let (a, b) = (
            Identity::generate().unwrap().sign_public_key(),
            Identity::generate().unwrap().sign_public_key(),
        );
        let base = Fingerprint::of(&room("r"), 1, &a, b"part");
        assert_eq!(base, Fingerprint::of(&room("r"), 1, &a, b"part"));
        for other in [
            Fingerprint::of(&room("s"), 1, &a, b"part"),
            Fingerprint::of(&room("r"), 2, &a, b"part"),
            Fingerprint::of(&room("r"), 1, &b, b"part"),
            Fingerprint::of(&room("r"), 1, &a, b"parT"),
            // The room's length is hashed, so its bytes cannot run into the epoch's.
            Fingerprint::of(&room("r1"), 1, &a, b"part"),
        ] {
            assert_ne!(base, other);
        }
    }

    /// An epoch key of a one-member room, under a fresh room key.
    fn epoch_key(me: &Identity) -> EpochKey {
        use crate::manifest::{Recipient, SignedManifest};
        let key = crate::sealing::RoomKey::generate().unwrap();
        let manifest =
            SignedManifest::rekey(me, &room("r"), 1, 0, &key, &[Recipient::of(me)]).unwrap();
        let part = manifest.member_part(&me.sign_public_key()).unwrap();
        EpochKey::open(&part, me, &room("r"), 1, &me.sign_public_key()).unwrap()
    }

    #[test]
    fn only_the_newest_keys_are_kept_and_a_key_kept_again_replaces_the_old() {
        let opened = OpenedKeys::default();
        let me = Identity::generate().unwrap();
        let keys: Vec<EpochKey> = (0..=KEPT).map(|_| epoch_key(&me)).collect();
        for (n, key) in keys.iter().enumerate() {
            opened.keep(n, key.clone());
        }
        assert!(opened.get(&0).is_none(), "the oldest left");
        for (n, key) in keys.iter().enumerate().skip(1) {
            assert_eq!(opened.get(&n).unwrap().room_key(), key.room_key());
        }
        opened.keep(1, keys[2].clone());
        assert_eq!(opened.get(&1).unwrap().room_key(), keys[2].room_key());
        assert!(opened.get(&2).is_some(), "replacing evicted nothing else");
    }
}
