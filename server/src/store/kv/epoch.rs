//! Committing an epoch in an order that never shows half of one: the members' tails (in
//! groups, see [`super::groups`]), their index and the signed head under the head's digest
//! first, then a create-only marker claims the epoch, then the room's epoch moves by
//! compare-and-swap. The head commits to every entry (its Merkle root), so its digest names the
//! whole epoch. Markers never change, so the digests they name are cached, and so are the
//! heads, indexes and tail groups of the epochs members fetch from: a warm key fetch reads
//! nothing of the epoch.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use unibus::manifest::SignedManifest;
use unibus::{RoomId, SignPublicKey};

use super::{groups, keys, KvStore};
use crate::store::epoch::StoredEpoch;
use crate::store::{Room, Store, StoreError, StoreResult};

/// How many committed digests are cached before the cache starts over.
const DIGESTS_CACHED: usize = 10_000;

/// How many puts (or gets) of one epoch's tail groups are in flight at once: at most 16 groups
/// of at most 19 KB.
const GROUPS_IN_FLIGHT: usize = 16;

/// The most bytes of heads and indexes cached before the cache starts over: 64 indexes of the
/// largest rooms (2^20 members, 8,192 groups of 32 bytes), thousands of typical ones.
const LOOKUPS_CACHED_BYTES: usize = 16 * 1024 * 1024;

/// The most bytes of tail groups cached before the cache starts over: about 3,400 groups of
/// at most 19 KB, the tails of some 400,000 members. After a rekey every member fetches its
/// key, and a group read once serves the other members in it.
const GROUPS_CACHED_BYTES: usize = 64 * 1024 * 1024;

/// What finds a member's part of a committed epoch: its signed head and its groups' index.
#[derive(Debug)]
pub(super) struct EpochLookup {
    /// The signed head (header and signature).
    pub head: Bytes,
    /// The first member key of every tail group.
    pub index: Bytes,
}

/// Immutable records of committed epochs, with their total size, under a budget: a cache
/// that would outgrow it starts over.
#[derive(Debug)]
pub(super) struct SizedCache<K, V> {
    entries: std::collections::HashMap<K, V>,
    bytes: usize,
    budget: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> SizedCache<K, V> {
    fn new(budget: usize) -> Self {
        Self {
            entries: std::collections::HashMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// A copy of the cached value (values are reference-counted).
    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.entries.get(key).cloned()
    }

    /// Keeps `value` of `size` bytes, unless it alone exceeds the budget.
    fn insert(&mut self, key: K, value: V, size: usize) {
        if size > self.budget {
            return;
        }
        if self.bytes + size > self.budget {
            self.entries.clear();
            self.bytes = 0;
        }
        if self.entries.insert(key, value).is_none() {
            self.bytes += size;
        }
    }
}

/// The cached [`EpochLookup`]s, by digest.
pub(super) type LookupCache = SizedCache<String, Arc<EpochLookup>>;

/// The cached tail groups, by digest and group number.
pub(super) type GroupCache = SizedCache<(String, usize), Bytes>;

impl Default for LookupCache {
    fn default() -> Self {
        Self::new(LOOKUPS_CACHED_BYTES)
    }
}

impl Default for GroupCache {
    fn default() -> Self {
        Self::new(GROUPS_CACHED_BYTES)
    }
}

/// Locks a cache of immutable records. Entries go in whole with their size, so a cache whose
/// lock was poisoned is still consistent.
fn lock<T>(cache: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
        if let Some(digest) = lock(&self.digests).get(&key) {
            return Ok(Some(digest.clone()));
        }
        let digest = self
            .get(&self.room_keys, &keys::epoch_marker(room, epoch))
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if let Some(digest) = &digest {
            self.remember_digest(room, epoch, digest);
        }
        Ok(digest)
    }

    /// Caches the digest `epoch`'s marker names (markers never change).
    fn remember_digest(&self, room: &RoomId, epoch: u64, digest: &str) {
        let mut cache = lock(&self.digests);
        if cache.len() >= DIGESTS_CACHED {
            cache.clear();
        }
        cache.insert((room.clone(), epoch), digest.to_owned());
    }

    /// Writes an epoch's tail groups, their index, then its head, under the head's digest
    /// (idempotent overwrites: the grouping depends on the manifest alone), and caches them as
    /// written, so the members' fetches after the rekey find them in memory. Returns the digest.
    pub(super) async fn write_epoch_data(&self, manifest: &SignedManifest) -> StoreResult<String> {
        let contents = manifest.unverified();
        let (room, epoch) = (&contents.room, contents.epoch);
        let head = Bytes::from(StoredEpoch::head_of(manifest));
        let digest = head_digest(&head);
        let grouped = groups::group(manifest);
        let tail_groups: Vec<Bytes> = grouped.groups.into_iter().map(Bytes::from).collect();
        // Several groups in flight at once: each waits for its own ack.
        let digest_ref = digest.as_str();
        // Clones share the bytes.
        let puts = tail_groups
            .clone()
            .into_iter()
            .enumerate()
            .map(|(n, group)| {
                let key = keys::tail_group(room, epoch, digest_ref, n);
                async move { self.put(&self.room_keys, &key, group).await }
            });
        futures::stream::iter(puts)
            .buffer_unordered(GROUPS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        let index = Bytes::from(grouped.index);
        let key = keys::tail_index(room, epoch, &digest);
        self.put(&self.room_keys, &key, index.clone()).await?;
        let key = keys::head(room, epoch, &digest);
        self.put(&self.room_keys, &key, head.clone()).await?;
        // Under the digest, which names exactly this content: cached before the marker commits
        // it, they are found only through a marker naming this digest.
        let size = head.len() + index.len();
        lock(&self.lookups).insert(digest.clone(), Arc::new(EpochLookup { head, index }), size);
        let mut cached = lock(&self.groups);
        for (n, group) in tail_groups.into_iter().enumerate() {
            let size = group.len();
            cached.insert((digest.clone(), n), group, size);
        }
        Ok(digest)
    }

    /// The head and the group index of the committed epoch with this digest, from the cache or
    /// read at once. Both are written before the epoch's marker, so a missing one is damage.
    pub(super) async fn epoch_lookup(
        &self,
        room: &RoomId,
        epoch: u64,
        digest: &str,
    ) -> StoreResult<Arc<EpochLookup>> {
        if let Some(lookup) = lock(&self.lookups).get(digest) {
            return Ok(lookup);
        }
        let (head_key, index_key) = (
            keys::head(room, epoch, digest),
            keys::tail_index(room, epoch, digest),
        );
        let (head, index) = tokio::join!(
            self.get(&self.room_keys, &head_key),
            self.get(&self.room_keys, &index_key),
        );
        let missing = |what: &str| {
            StoreError::Corrupt(format!("epoch {epoch} of {room} has no stored {what}"))
        };
        let lookup = Arc::new(EpochLookup {
            head: head?.ok_or_else(|| missing("head"))?,
            index: index?.ok_or_else(|| missing("tail index"))?,
        });
        let size = lookup.head.len() + lookup.index.len();
        lock(&self.lookups).insert(digest.to_owned(), Arc::clone(&lookup), size);
        Ok(lookup)
    }

    /// `member`'s tail of the committed epoch `lookup` describes, if it is a recipient: one read
    /// of its group.
    pub(super) async fn member_tail(
        &self,
        room: &RoomId,
        epoch: u64,
        digest: &str,
        lookup: &EpochLookup,
        member: &SignPublicKey,
    ) -> StoreResult<Option<Vec<u8>>> {
        let Some(n) = groups::group_of(&lookup.index, member)? else {
            return Ok(None);
        };
        let cached = lock(&self.groups).get(&(digest.to_owned(), n));
        let group = match cached {
            Some(group) => group,
            None => {
                let group = self
                    .get(&self.room_keys, &keys::tail_group(room, epoch, digest, n))
                    .await?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "epoch {epoch} of {room} has no tail group {n}"
                        ))
                    })?;
                let size = group.len();
                lock(&self.groups).insert((digest.to_owned(), n), group.clone(), size);
                group
            }
        };
        groups::tail_in(&group, n, member)
    }

    /// The whole manifest of the committed epoch `lookup` describes: its head and every
    /// group's entries, checked again as any received manifest is.
    pub(super) async fn whole_manifest(
        &self,
        room: &RoomId,
        epoch: u64,
        digest: &str,
        lookup: &EpochLookup,
    ) -> StoreResult<SignedManifest> {
        let count = groups::group_count(&lookup.index)?;
        let gets = (0..count).map(|n| async move {
            self.get(&self.room_keys, &keys::tail_group(room, epoch, digest, n))
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("epoch {epoch} of {room} has no tail group {n}"))
                })
        });
        let stored: Vec<Bytes> = futures::stream::iter(gets)
            .buffered(GROUPS_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut bytes = lookup.head.to_vec();
        for group in &stored {
            bytes.extend_from_slice(groups::entries_in(group)?);
        }
        SignedManifest::from_bytes(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("stored epoch {epoch} of {room}: {e}")))
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
        if self
            .create(&self.room_keys, &marker, Bytes::from(digest.clone()))
            .await?
        {
            self.remember_digest(room, epoch, &digest);
        } else {
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
