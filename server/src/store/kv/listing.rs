//! Listings of a room's members that stay cheap when a large room is read page by page.
//!
//! Keys cannot be range-scanned, so a page of members costs a listing of the whole room. The
//! sorted listing of a large room is therefore kept beside the members bucket's
//! [version](KvStore::version) read *before* it was listed; it is used again only while the
//! bucket's version is unchanged (no put, delete or purge anywhere in it since), so it is always
//! exact: one small read instead of a listing. A small room's users are read one by one; a
//! large room's, when it holds a large share of all users, from one listing of the users
//! bucket, kept the same way while that bucket is unchanged, so the pages of a rekey's
//! `members` and its recipient check list the users once between them.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use unibus::{KexPublicKey, RoomId, SignPublicKey};

use super::bucket::{decode, BucketVersion};
use super::{keys, KvStore, UserEntry};
use crate::store::{Store, StoreError, StoreResult, UserStatus};

/// Rooms with fewer members are listed every time (their listing is quick).
const CACHED_FROM: usize = 1_000;
/// The most member keys the cache holds (32 bytes each: 64 MB).
const CACHED_KEYS: usize = 2 * 1024 * 1024;
/// How many user reads a listing keeps in flight.
const READS_IN_FLIGHT: usize = 64;
/// The most users whose keys are kept (64 bytes each: 64 MB).
const CACHED_USERS: u64 = 1024 * 1024;
/// The users of a room of at least this many members are read from one listing of the users
/// bucket (kept while the bucket is unchanged), if that is no more than [`BULK_SHARE`] times as
/// many records.
const BULK_FROM: usize = 10_000;
/// See [`BULK_FROM`].
const BULK_SHARE: u64 = 4;

/// Every active user's x25519 key by signing key.
pub(super) type ActiveUsers = Arc<HashMap<SignPublicKey, KexPublicKey>>;

/// The sorted members of large rooms, each with the members bucket's version it was listed at.
#[derive(Debug, Default)]
pub(super) struct ListingCache {
    rooms: HashMap<RoomId, (BucketVersion, Arc<Vec<SignPublicKey>>)>,
    keys: usize,
}

impl KvStore {
    fn cached_listings(&self) -> std::sync::MutexGuard<'_, ListingCache> {
        // Entries are inserted whole with their size; a poisoned cache is still consistent.
        self.listings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The members of `room`, sorted (the room's existence is the caller's to check).
    pub(super) async fn sorted_members(
        &self,
        room: &RoomId,
    ) -> StoreResult<Arc<Vec<SignPublicKey>>> {
        let version = self.version(&self.members).await?;
        if let Some((at, members)) = self.cached_listings().rooms.get(room) {
            if *at == version {
                return Ok(Arc::clone(members));
            }
        }
        let mut members = self
            .entries(&self.members, &keys::members_of(room))
            .await?
            .into_iter()
            .map(|(key, _)| {
                SignPublicKey::from_hex(keys::member_in(room, &key))
                    .map_err(|e| StoreError::Corrupt(format!("stored member key: {e}")))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        members.sort();
        let members = Arc::new(members);
        if members.len() >= CACHED_FROM && members.len() <= CACHED_KEYS {
            let mut cache = self.cached_listings();
            if let Some((_, old)) = cache.rooms.remove(room) {
                cache.keys -= old.len();
            }
            if cache.keys + members.len() > CACHED_KEYS {
                *cache = ListingCache::default();
            }
            cache.keys += members.len();
            cache
                .rooms
                .insert(room.clone(), (version, Arc::clone(&members)));
        }
        Ok(members)
    }

    /// Up to `limit` of `members` (sorted; the tail of a room of `room_size` members) that are
    /// active users, with their x25519 keys, in order.
    pub(super) async fn active_of(
        &self,
        room_size: usize,
        members: &[SignPublicKey],
        limit: usize,
    ) -> StoreResult<Vec<(SignPublicKey, KexPublicKey)>> {
        if let Some(active) = self.all_active_users(room_size).await? {
            return Ok(members
                .iter()
                .filter_map(|member| active.get(member).map(|kex| (*member, *kex)))
                .take(limit)
                .collect());
        }
        let mut users = futures::stream::iter(members.iter().copied())
            .map(|member| async move { self.get_user(&member).await })
            .buffered(READS_IN_FLIGHT);
        let mut page = Vec::new();
        while page.len() < limit {
            match users.next().await {
                None => break,
                Some(Ok(user)) if user.status == UserStatus::Active => {
                    page.push((user.sign_key, user.kex_key));
                }
                // Revoked, or deleted (its tombstone reads as not found): not a recipient.
                Some(Ok(_)) | Some(Err(StoreError::NotFound)) => {}
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(page)
    }

    /// Every active user's x25519 key, when a room of `room_size` members is a large share of
    /// all users: from the cache if the users bucket is unchanged since it was listed, else
    /// from one listing of the bucket. `None` when reading the room's users one by one is
    /// cheaper.
    async fn all_active_users(&self, room_size: usize) -> StoreResult<Option<ActiveUsers>> {
        if room_size < BULK_FROM {
            return Ok(None);
        }
        let version = self.version(&self.users).await?;
        let (records, _, _) = version;
        if records > BULK_SHARE * room_size as u64 || records > CACHED_USERS {
            return Ok(None);
        }
        if let Some((at, active)) = self.cached_users().as_ref() {
            if *at == version {
                return Ok(Some(Arc::clone(active)));
            }
        }
        let mut active = HashMap::new();
        for (_, bytes) in self.entries(&self.users, ">").await? {
            // Revoked, or deleted (a tombstone): not a recipient.
            if let UserEntry::Live(user) = decode::<UserEntry>("user", &bytes)? {
                if user.status == UserStatus::Active {
                    active.insert(user.sign_key, user.kex_key);
                }
            }
        }
        let active = Arc::new(active);
        *self.cached_users() = Some((version, Arc::clone(&active)));
        Ok(Some(active))
    }

    fn cached_users(&self) -> std::sync::MutexGuard<'_, Option<(BucketVersion, ActiveUsers)>> {
        // Replaced whole; a poisoned cache is still consistent.
        self.active_users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
