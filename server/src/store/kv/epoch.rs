//! Committing an epoch in an order that never shows half of one: the members' tails and the
//! signed head under the head's digest first, then a create-only marker claims the epoch, then
//! the room's epoch moves by compare-and-swap. The head commits to every entry (its Merkle root),
//! so its digest names the whole epoch. Markers never change, so the digests they name are
//! cached.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use unibus::manifest::SignedManifest;
use unibus::RoomId;

use super::{keys, KvStore};
use crate::store::epoch::StoredEpoch;
use crate::store::{Room, Store, StoreError, StoreResult};

/// How many committed digests are cached before the cache starts over.
const DIGESTS_CACHED: usize = 10_000;

/// How many puts of one epoch's tails are in flight at once.
const PUTS_IN_FLIGHT: usize = 64;

/// The digest an epoch's keys carry: of its signed head.
pub(super) fn head_digest(head: &[u8]) -> String {
    hex::encode(&Sha256::digest(head)[..16])
}

impl KvStore {
    /// The digest of the manifest that committed `epoch`, if any.
    pub(super) async fn committed_digest(
        &self,
        room: &RoomId,
        epoch: u64,
    ) -> StoreResult<Option<String>> {
        let key = (room.clone(), epoch);
        if let Some(digest) = self.cached_digests().get(&key) {
            return Ok(Some(digest.clone()));
        }
        let digest = self
            .get(&self.room_keys, &keys::epoch_marker(room, epoch))
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if let Some(digest) = &digest {
            let mut cache = self.cached_digests();
            if cache.len() >= DIGESTS_CACHED {
                cache.clear();
            }
            cache.insert(key, digest.clone());
        }
        Ok(digest)
    }

    fn cached_digests(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(RoomId, u64), String>> {
        // Entries are inserted whole; a poisoned map is still a map of true digests.
        self.digests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes an epoch's tails, then its head, under the head's digest (idempotent
    /// overwrites). Returns the digest.
    pub(super) async fn write_epoch_data(&self, manifest: &SignedManifest) -> StoreResult<String> {
        let contents = manifest.unverified();
        let (room, epoch) = (&contents.room, contents.epoch);
        let stored = StoredEpoch::of(manifest);
        let digest = head_digest(&stored.head);
        // Many puts in flight at once: each waits for its own ack, so a large epoch costs
        // n / PUTS_IN_FLIGHT round trips instead of n.
        let digest_ref = digest.as_str();
        let puts = stored.tails.into_iter().map(|(member, tail)| {
            let key = keys::tail(room, epoch, digest_ref, &member);
            async move { self.put(&self.room_keys, &key, Bytes::from(tail)).await }
        });
        futures::stream::iter(puts)
            .buffer_unordered(PUTS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        let key = keys::head(room, epoch, &digest);
        self.put(&self.room_keys, &key, Bytes::from(stored.head))
            .await?;
        Ok(digest)
    }

    /// Moves the room's epoch from `from` to `to` by compare-and-swap. `Ok(actual)` with the
    /// room's epoch if it was not at `from`.
    pub(super) async fn advance_room(
        &self,
        room: &RoomId,
        from: u64,
        to: u64,
    ) -> StoreResult<Result<(), u64>> {
        let mut outcome = Ok(());
        self.modify(&self.rooms, room.as_str(), "room", |mut record: Room| {
            if record.epoch == from {
                record.epoch = to;
                outcome = Ok(());
                Ok(Some(record))
            } else {
                outcome = Err(record.epoch);
                Ok(None)
            }
        })
        .await?;
        Ok(outcome)
    }

    /// Commits `manifest` as the next epoch of its room, in the order of the [module
    /// documentation](self): data, then the create-only marker, then the room's epoch.
    pub(super) async fn commit_epoch(&self, manifest: &SignedManifest) -> StoreResult<()> {
        let contents = manifest.unverified();
        let (room, epoch, previous) = (&contents.room, contents.epoch, contents.previous_epoch);
        let current = self.get_room(room).await?.epoch;
        if current != previous {
            return Err(StoreError::EpochConflict {
                expected: previous,
                actual: current,
            });
        }
        let digest = self.write_epoch_data(manifest).await?;
        let marker = keys::epoch_marker(room, epoch);
        if !self
            .create(&self.room_keys, &marker, Bytes::from(digest.clone()))
            .await?
        {
            let claimed = self.committed_digest(room, epoch).await?;
            if claimed.as_deref() != Some(digest.as_str()) {
                // Another rekey claimed this epoch; its data is complete. Roll the room forward
                // to it (in case its writer crashed) and ask the caller to rekey from there.
                let actual = match self.advance_room(room, previous, epoch).await? {
                    Ok(()) => epoch,
                    Err(actual) => actual,
                };
                return Err(StoreError::EpochConflict {
                    expected: previous,
                    actual,
                });
            }
        }
        match self.advance_room(room, previous, epoch).await? {
            Ok(()) => Ok(()),
            // A retry of this same upload after the room already moved to it.
            Err(actual) if actual == epoch => Ok(()),
            Err(actual) => Err(StoreError::EpochConflict {
                expected: previous,
                actual,
            }),
        }
    }

    /// Writes an epoch as a snapshot holds it: its data, then its marker (overwritten, so an
    /// import over the same state changes nothing).
    pub(super) async fn import_epoch(&self, manifest: &SignedManifest) -> StoreResult<()> {
        let digest = self.write_epoch_data(manifest).await?;
        let contents = manifest.unverified();
        let marker = keys::epoch_marker(&contents.room, contents.epoch);
        self.put(&self.room_keys, &marker, Bytes::from(digest))
            .await
    }
}
