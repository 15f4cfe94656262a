//! The room keys a session has opened, kept so that a member part it already verified and
//! opened is not verified and opened again.
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

use crate::sealing::RoomKey;
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

/// The keys opened most recently, at most [`KEPT`]; each is wiped when it leaves (a
/// [`RoomKey`] zeroizes on drop).
#[derive(Default)]
pub(crate) struct OpenedKeys(Mutex<VecDeque<(Fingerprint, RoomKey)>>);

impl OpenedKeys {
    /// The key opened before with this fingerprint, if it is still kept.
    pub(crate) fn get(&self, fingerprint: &Fingerprint) -> Option<RoomKey> {
        self.lock()
            .iter()
            .find(|(kept, _)| kept == fingerprint)
            .map(|(_, key)| key.clone())
    }

    /// Keeps `key`, opened from the part with this fingerprint.
    pub(crate) fn keep(&self, fingerprint: Fingerprint, key: RoomKey) {
        let mut kept = self.lock();
        if kept.iter().any(|(k, _)| *k == fingerprint) {
            return;
        }
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((fingerprint, key));
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<(Fingerprint, RoomKey)>> {
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

    #[test]
    fn only_the_newest_keys_are_kept() {
        let opened = OpenedKeys::default();
        let rekeyer = Identity::generate().unwrap().sign_public_key();
        let fingerprints: Vec<Fingerprint> = (0..=KEPT as u64)
            .map(|epoch| Fingerprint::of(&room("r"), epoch, &rekeyer, b"part"))
            .collect();
        let keys: Vec<RoomKey> = fingerprints
            .iter()
            .map(|_| RoomKey::generate().unwrap())
            .collect();
        for (fingerprint, key) in fingerprints.iter().zip(&keys) {
            opened.keep(*fingerprint, key.clone());
        }
        assert_eq!(opened.get(&fingerprints[0]), None, "the oldest left");
        for (fingerprint, key) in fingerprints.iter().zip(&keys).skip(1) {
            assert_eq!(opened.get(fingerprint).as_ref(), Some(key));
        }
    }
}
