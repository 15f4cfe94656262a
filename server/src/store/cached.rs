//! The authorization cache: a [`Store`] that answers the questions every login and every
//! control-plane call asks (is this user active, is this key a member of that room, which
//! rooms is it a member of, what is the room's latest epoch) from memory, kept current by the
//! store's [change feed](super::feed).
//!
//! It fails closed. A copy is used only while the feed is *fresh*: it caught up with every
//! change committed less than [`FEED_BOUND`] ago. When the feed lags, stalls or breaks, every
//! question goes to the store again (and nothing is copied) until it catches up; a feed that
//! breaks is reopened and everything copied before is forgotten. So a change made by any
//! writer (the CLI, another instance) is seen within the feed's lag, and never later than
//! [`FEED_BOUND`]; a change made through this cache is seen at once.
//!
//! A copy is only made from a read that no change overtook: each read notes the feed's
//! position before it asks the store, and its answer is kept only if no change arrived
//! meanwhile. A change forgets the copies it concerns, except a room's copy, which moves up to
//! the room's new epoch named in the change (a room's owner never changes), so a rekey does
//! not send every member's next key fetch to the store. Everything else passes through to the
//! wrapped store.
//!
//! Its own [`changes`](Store::changes) are the changes it has *applied*: a reader of them (the
//! revoker) acts on a change only once the cache has forgotten what the change made stale, so
//! a login the cache admits after the reader acted cannot be a stale one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::time::Instant;
use unibus::manifest::SignedManifest;
use unibus::protocol::status::KeyStatus;
use unibus::{InviteToken, KexPublicKey, RoomId, SignPublicKey};

use super::{
    Change, ChangeFeed, EpochPart, FeedItem, Invite, Millis, NewInvite, NewUser, Room, Snapshot,
    Store, StoreError, StoreResult, StoredShare, User, UserStatus,
};

/// How long after the feed last caught up its copies may still be used. Past it, every
/// question goes to the store until the feed catches up again.
pub const FEED_BOUND: Duration = Duration::from_secs(1);

/// How long after a change is stored it is in force on every membershipd that shares the
/// store, whoever made it: a cache answers from a copy only while its feed caught up less than
/// [`FEED_BOUND`] ago, and a feed catches up only with every change committed before it asked.
/// So a question asked [`FEED_BOUND`] after the commit is answered from the store, or from
/// copies that the change already reached. 50 ms more cover hosts whose clocks run at slightly
/// different rates. Operations that take access away (revoking or deleting a user) wait this
/// long before they report success ([`crate::admin`]).
pub const IN_FORCE_EVERYWHERE: Duration = FEED_BOUND.saturating_add(Duration::from_millis(50));

/// The most answers kept per kind; a full cache starts over.
const ENTRIES_KEPT: usize = 1_000_000;

/// The most member keys kept across every room's copied member list (32 bytes each, so about
/// 128 MiB); a room whose list would pass it is not copied until others are forgotten.
const MEMBER_KEYS_KEPT: usize = 4_000_000;

/// The wait before a broken feed is reopened.
const REOPEN_AFTER: Duration = Duration::from_millis(500);

/// How many applied changes wait for a slow reader of [`CachedStore::changes`] before it is
/// told to start over ([`Change::Reset`]).
const APPLIED_KEPT: usize = 4_096;

/// A [`Store`] with an authorization cache in front. See the [module documentation](self).
pub struct CachedStore {
    inner: Arc<dyn Store>,
    shared: Arc<Shared>,
}

/// The cached answers and how far the feed has come.
#[derive(Default)]
struct Copies {
    /// Users by key; `None` for "no such user".
    users: HashMap<SignPublicKey, Option<User>>,
    /// Whether a key is a member of a room.
    members: HashMap<(RoomId, SignPublicKey), bool>,
    /// The rooms a key is a member of, sorted.
    rooms: HashMap<SignPublicKey, Vec<RoomId>>,
    /// Every member of a room (active or not), for the fan-out of its live messages.
    room_members: HashMap<RoomId, Arc<[SignPublicKey]>>,
    /// How many keys `room_members` holds in all (at most [`MEMBER_KEYS_KEPT`]).
    room_member_keys: usize,
    /// Room records (owner and latest epoch) by id; `None` for "no such room".
    room_records: HashMap<RoomId, Option<Room>>,
    /// The latest epoch of each room that a rekey stored through this cache moved the copy to,
    /// until the feed names it (or a later one). The feed brings changes in the order they
    /// were committed, so meanwhile an epoch below it from the feed is a change committed
    /// before that rekey: late, not a restore.
    awaiting_feed: HashMap<RoomId, u64>,
    /// How many changes (and forgettings) there have been: a read copies its answer only if
    /// this did not move while it asked the store.
    position: u64,
    /// When the feed last caught up (everything committed before this was applied).
    caught_up: Option<Instant>,
}

impl Copies {
    fn fresh(&self) -> bool {
        self.caught_up.is_some_and(|at| at.elapsed() < FEED_BOUND)
    }

    /// Applies `change`; `stored_here` says it is a rekey stored through this cache (see
    /// [`Self::move_room`]).
    fn apply(&mut self, change: &Change, stored_here: bool) {
        self.position += 1;
        match change {
            Change::User(key) => {
                self.users.remove(key);
            }
            Change::Member { room, member } => {
                self.members.remove(&(room.clone(), *member));
                self.rooms.remove(member);
                if let Some(gone) = self.room_members.remove(room) {
                    self.room_member_keys -= gone.len();
                }
            }
            Change::Room { room, epoch } => self.move_room(room, *epoch, stored_here),
            Change::Reset => {
                self.users.clear();
                self.members.clear();
                self.rooms.clear();
                self.room_members.clear();
                self.room_member_keys = 0;
                self.room_records.clear();
                self.awaiting_feed.clear();
            }
        }
    }

    /// Moves `room`'s copy up to `epoch` (a room's owner and creation never change, so the rest
    /// of the copy stays true). A copy is never lowered. An epoch below it from a rekey stored
    /// through this cache (`stored_here`) means the feed already brought a later one: the copy
    /// stays. From the feed, it is a change that came late: the copy stays while the feed has
    /// not yet named the epoch this cache stored (see [`Self::awaiting_feed`]). Otherwise it may
    /// be a restore, so the copy is forgotten and the room read again. An unknown epoch forgets
    /// the copy.
    fn move_room(&mut self, room: &RoomId, epoch: Option<u64>, stored_here: bool) {
        if let Some(epoch) = epoch {
            let mine = self.awaiting_feed.get(room).copied();
            if stored_here {
                self.awaiting_feed
                    .insert(room.clone(), mine.map_or(epoch, |m| m.max(epoch)));
            } else if let Some(mine) = mine {
                if epoch < mine {
                    return;
                }
                self.awaiting_feed.remove(room);
            }
        }
        match (self.room_records.get_mut(room), epoch) {
            (Some(Some(record)), Some(epoch)) if epoch >= record.epoch => record.epoch = epoch,
            (Some(Some(_)), Some(_)) if stored_here => {}
            _ => {
                self.room_records.remove(room);
            }
        }
    }

    /// Copies `room`'s member list read at `position`, unless a change came meanwhile or the
    /// lists already hold [`MEMBER_KEYS_KEPT`] keys (then the copies start over, and this one
    /// is kept only if it fits alone).
    fn copy_room_members(&mut self, position: u64, room: &RoomId, members: &Arc<[SignPublicKey]>) {
        if self.read_position() != Some(position) {
            return;
        }
        if self.room_member_keys + members.len() > MEMBER_KEYS_KEPT {
            self.room_members.clear();
            self.room_member_keys = 0;
        }
        if members.len() <= MEMBER_KEYS_KEPT {
            self.room_member_keys += members.len();
            if let Some(old) = self.room_members.insert(room.clone(), Arc::clone(members)) {
                self.room_member_keys -= old.len();
            }
        }
    }

    /// The position to copy a read at, if copies may be made now.
    fn read_position(&self) -> Option<u64> {
        self.fresh().then_some(self.position)
    }
}

/// What the cache and its follower share.
struct Shared {
    copies: Mutex<Copies>,
    /// Every change once applied, and every catching up, for [`CachedStore::changes`].
    applied: broadcast::Sender<FeedItem>,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            copies: Mutex::default(),
            applied: broadcast::channel(APPLIED_KEPT).0,
        })
    }

    fn copies(&self) -> MutexGuard<'_, Copies> {
        // Every update leaves the maps whole; a poisoned lock still guards sound copies.
        self.copies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies one item of the feed, then passes it on.
    fn take(&self, item: FeedItem) {
        self.take_as(item, false);
    }

    /// Like [`Self::take`]; `stored_here` says the item is a rekey stored through this cache.
    fn take_as(&self, item: FeedItem, stored_here: bool) {
        {
            let mut copies = self.copies();
            match &item {
                FeedItem::Changed(change) => copies.apply(change, stored_here),
                FeedItem::CaughtUp(at) => copies.caught_up = Some(*at),
            }
        }
        // Nobody listening is not an error.
        let _ = self.applied.send(item);
    }

    /// Forgets everything and answers from the store until the feed catches up again.
    fn forget_all(&self) {
        self.take(FeedItem::Changed(Change::Reset));
        self.copies().caught_up = None;
    }
}

impl CachedStore {
    /// Wraps `inner` and follows its change feed, reopening it when it breaks. Until the feed
    /// first catches up, every question goes to `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        let shared = Shared::new();
        let weak = Arc::downgrade(&shared);
        let source = Arc::clone(&inner);
        tokio::spawn(async move {
            loop {
                match source.changes().await {
                    Ok(feed) => {
                        if !follow(&weak, feed).await {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot open the store's change feed"),
                }
                match weak.upgrade() {
                    Some(shared) => shared.forget_all(),
                    None => return,
                }
                tokio::time::sleep(REOPEN_AFTER).await;
            }
        });
        Arc::new(Self { inner, shared })
    }

    /// Wraps `inner` but follows `feed` instead of the store's own, and does not reopen it
    /// when it ends (after which every question goes to `inner`). For tests, and for a feed
    /// that comes from elsewhere.
    pub fn with_feed(inner: Arc<dyn Store>, feed: ChangeFeed) -> Arc<Self> {
        let shared = Shared::new();
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            if follow(&weak, feed).await {
                if let Some(shared) = weak.upgrade() {
                    shared.forget_all();
                }
            }
        });
        Arc::new(Self { inner, shared })
    }

    /// Copies every user at once, so that a storm of logins right after a start finds them in
    /// memory: waits (up to `within`) for the feed to catch up, lists the users, and keeps the
    /// list only if no change arrived while it was read. Returns how many were copied.
    pub async fn warm(&self, within: Duration) -> StoreResult<usize> {
        let deadline = Instant::now() + within;
        let position = loop {
            if let Some(position) = self.copies().read_position() {
                break position;
            }
            if Instant::now() >= deadline {
                return Ok(0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let users = self.inner.list_users().await?;
        let mut copies = self.copies();
        if copies.read_position() != Some(position) || users.len() > ENTRIES_KEPT {
            return Ok(0);
        }
        let count = users.len();
        for user in users {
            copies.users.insert(user.sign_key, Some(user));
        }
        Ok(count)
    }

    /// Whether the cache answers from memory now (its feed is fresh).
    pub fn is_fresh(&self) -> bool {
        self.copies().fresh()
    }

    fn copies(&self) -> MutexGuard<'_, Copies> {
        self.shared.copies()
    }

    /// Records a change made through this cache, at once.
    fn changed(&self, change: Change) {
        self.shared.take(FeedItem::Changed(change));
    }

    /// The answer to a question whose copies the map `pick` selects keeps under `key`: from
    /// the copy (`from_copy`) while the feed is fresh; otherwise `ask`'s answer from the store,
    /// copied as `to_copy` makes it (`None`: not copied) if no change arrived while it was
    /// asked and the feed is still fresh.
    async fn answer<K: std::hash::Hash + Eq, V, T>(
        &self,
        pick: impl Fn(&mut Copies) -> &mut HashMap<K, V>,
        key: K,
        ask: impl std::future::Future<Output = StoreResult<T>>,
        from_copy: impl FnOnce(&V) -> StoreResult<T>,
        to_copy: impl FnOnce(&StoreResult<T>) -> Option<V>,
    ) -> StoreResult<T> {
        let position = {
            let mut copies = self.copies();
            if copies.fresh() {
                if let Some(copy) = pick(&mut copies).get(&key) {
                    return from_copy(copy);
                }
            }
            copies.read_position()
        };
        let answer = ask.await;
        if let Some(value) = to_copy(&answer) {
            let mut copies = self.copies();
            if position.is_some() && copies.read_position() == position {
                let map = pick(&mut copies);
                if map.len() >= ENTRIES_KEPT {
                    map.clear();
                }
                map.insert(key, value);
            }
        }
        answer
    }
}

/// A record from its copy: `None` is a copied "not found".
fn found_from_copy<T: Clone>(copy: &Option<T>) -> StoreResult<T> {
    copy.clone().ok_or(StoreError::NotFound)
}

/// What to copy of a record's read: the record, or "not found"; nothing for an error.
fn found_to_copy<T: Clone>(answer: &StoreResult<T>) -> Option<Option<T>> {
    match answer {
        Ok(record) => Some(Some(record.clone())),
        Err(StoreError::NotFound) => Some(None),
        Err(_) => None,
    }
}

/// Applies `feed` until it ends: `true` if it broke or ended, `false` if the cache is gone.
async fn follow(shared: &Weak<Shared>, mut feed: ChangeFeed) -> bool {
    while let Some(item) = feed.next().await {
        let Some(shared) = shared.upgrade() else {
            return false;
        };
        match item {
            Ok(item) => shared.take(item),
            Err(e) => {
                tracing::warn!(error = %e, "the store's change feed broke; reading the store until it is back");
                return true;
            }
        }
    }
    tracing::warn!("the store's change feed ended; reading the store until it is back");
    true
}

#[async_trait]
impl Store for CachedStore {
    async fn add_user(&self, user: NewUser) -> StoreResult<User> {
        let key = user.sign_key;
        let result = self.inner.add_user(user).await;
        self.changed(Change::User(key));
        result
    }

    async fn get_user(&self, key: &SignPublicKey) -> StoreResult<User> {
        self.answer(
            |c| &mut c.users,
            *key,
            self.inner.get_user(key),
            found_from_copy,
            found_to_copy,
        )
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.inner.list_users().await
    }

    async fn revoke_user(&self, key: &SignPublicKey) -> StoreResult<()> {
        let result = self.inner.revoke_user(key).await;
        self.changed(Change::User(*key));
        result
    }

    /// Not cached: asked rarely (by a client whose logins keep being refused), and its
    /// answer must be the store's own.
    async fn key_status(&self, key: &SignPublicKey) -> StoreResult<KeyStatus> {
        self.inner.key_status(key).await
    }

    async fn delete_user(&self, key: &SignPublicKey) -> StoreResult<()> {
        let result = self.inner.delete_user(key).await;
        self.changed(Change::User(*key));
        result
    }

    async fn create_invite(&self, invite: NewInvite) -> StoreResult<(InviteToken, Invite)> {
        self.inner.create_invite(invite).await
    }

    async fn get_invite(&self, id: &str) -> StoreResult<Invite> {
        self.inner.get_invite(id).await
    }

    async fn list_invites(&self) -> StoreResult<Vec<Invite>> {
        self.inner.list_invites().await
    }

    async fn cancel_invite(&self, id: &str) -> StoreResult<()> {
        self.inner.cancel_invite(id).await
    }

    async fn redeem_invite(
        &self,
        token: &InviteToken,
        sign_key: &SignPublicKey,
        kex_key: &KexPublicKey,
    ) -> StoreResult<User> {
        let result = self.inner.redeem_invite(token, sign_key, kex_key).await;
        self.changed(Change::User(*sign_key));
        result
    }

    async fn create_room(&self, id: &RoomId, owner: &SignPublicKey) -> StoreResult<Room> {
        let result = self.inner.create_room(id, owner).await;
        self.changed(Change::Room {
            room: id.clone(),
            epoch: None,
        });
        self.changed(Change::Member {
            room: id.clone(),
            member: *owner,
        });
        result
    }

    async fn get_room(&self, id: &RoomId) -> StoreResult<Room> {
        self.answer(
            |c| &mut c.room_records,
            id.clone(),
            self.inner.get_room(id),
            found_from_copy,
            found_to_copy,
        )
        .await
    }

    async fn list_rooms(&self) -> StoreResult<Vec<Room>> {
        self.inner.list_rooms().await
    }

    async fn add_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()> {
        let result = self.inner.add_member(room, member).await;
        self.changed(Change::Member {
            room: room.clone(),
            member: *member,
        });
        result
    }

    async fn remove_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()> {
        let result = self.inner.remove_member(room, member).await;
        self.changed(Change::Member {
            room: room.clone(),
            member: *member,
        });
        result
    }

    async fn list_members(&self, room: &RoomId) -> StoreResult<Vec<SignPublicKey>> {
        self.inner.list_members(room).await
    }

    async fn is_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<bool> {
        self.answer(
            |c| &mut c.members,
            (room.clone(), *member),
            self.inner.is_member(room, member),
            |copy| Ok(*copy),
            |answer| answer.as_ref().ok().copied(),
        )
        .await
    }

    async fn rooms_for_member(&self, member: &SignPublicKey) -> StoreResult<Vec<RoomId>> {
        self.answer(
            |c| &mut c.rooms,
            *member,
            self.inner.rooms_for_member(member),
            |copy| Ok(copy.clone()),
            |answer| answer.as_ref().ok().cloned(),
        )
        .await
    }

    /// Not cached: a rekey's recipients, and the `members` listing an owner builds one from,
    /// are the store's own.
    async fn active_members(
        &self,
        room: &RoomId,
        after: Option<&SignPublicKey>,
        limit: usize,
    ) -> StoreResult<Vec<(SignPublicKey, KexPublicKey)>> {
        self.inner.active_members(room, after, limit).await
    }

    /// From the room's copied member list and the copied users while the feed is fresh (a
    /// member whose user is not copied yet is read, and copied, on its own); from the store
    /// otherwise. The list is copied on a read that no change overtook, and forgotten when a
    /// membership of the room changes.
    async fn active_member_keys(&self, room: &RoomId) -> StoreResult<Vec<SignPublicKey>> {
        let (copied, position) = {
            let copies = self.copies();
            let copied = copies
                .fresh()
                .then(|| copies.room_members.get(room).cloned())
                .flatten();
            (copied, copies.read_position())
        };
        let members = match copied {
            Some(members) => members,
            None => {
                let members: Arc<[SignPublicKey]> = self.inner.list_members(room).await?.into();
                if let Some(position) = position {
                    self.copies().copy_room_members(position, room, &members);
                }
                members
            }
        };
        let mut active = Vec::with_capacity(members.len());
        let mut unknown = Vec::new();
        {
            let copies = self.copies();
            let fresh = copies.fresh();
            for member in members.iter() {
                match copies.users.get(member).filter(|_| fresh) {
                    Some(Some(user)) if user.status == UserStatus::Active => active.push(*member),
                    Some(_) => {}
                    None => unknown.push(*member),
                }
            }
        }
        for member in unknown {
            if self.is_authorized(&member).await {
                active.push(member);
            }
        }
        Ok(active)
    }

    /// A stored epoch moves the room's copy at once. The copy only ever rises here: the feed may
    /// have brought a later epoch (another instance's rekey on top of this one) before the store
    /// answered. A failed store may or may not have stored it, so the copy is forgotten.
    async fn put_epoch(&self, manifest: &SignedManifest) -> StoreResult<()> {
        let result = self.inner.put_epoch(manifest).await;
        let header = manifest.unverified();
        let change = Change::Room {
            room: header.room.clone(),
            epoch: result.is_ok().then_some(header.epoch),
        };
        self.shared.take_as(FeedItem::Changed(change), true);
        result
    }

    async fn latest_epoch(&self, room: &RoomId) -> StoreResult<u64> {
        Ok(self.get_room(room).await?.epoch)
    }

    /// The latest epoch comes from the room's copy while the feed is fresh, so a warm fetch
    /// asks the store for the part alone.
    async fn member_part(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: Option<u64>,
    ) -> StoreResult<EpochPart> {
        let epoch = match epoch {
            Some(epoch) => epoch,
            None => self.latest_epoch(room).await?,
        };
        self.inner.member_part(room, member, Some(epoch)).await
    }

    async fn manifest(&self, room: &RoomId, epoch: u64) -> StoreResult<SignedManifest> {
        self.inner.manifest(room, epoch).await
    }

    async fn epoch_head(&self, room: &RoomId, epoch: u64) -> StoreResult<Vec<u8>> {
        self.inner.epoch_head(room, epoch).await
    }

    async fn put_history_shares(&self, room: &RoomId, shares: &[StoredShare]) -> StoreResult<()> {
        self.inner.put_history_shares(room, shares).await
    }

    async fn history_share(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: u64,
    ) -> StoreResult<Vec<u8>> {
        self.inner.history_share(room, member, epoch).await
    }

    async fn record_nonce(
        &self,
        nonce: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<bool> {
        self.inner.record_nonce(nonce, now, expires_at).await
    }

    /// The changes this cache has applied (from its feed, and those made through it), each
    /// after it was applied. A reader that falls more than a few thousand behind gets a
    /// [`Change::Reset`] in place of what it missed.
    async fn changes(&self) -> StoreResult<ChangeFeed> {
        let applied = self.shared.applied.subscribe();
        Ok(Box::pin(futures::stream::unfold(
            applied,
            |mut applied| async move {
                let item = match applied.recv().await {
                    Ok(item) => item,
                    Err(broadcast::error::RecvError::Lagged(_)) => FeedItem::Changed(Change::Reset),
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((Ok(item), applied))
            },
        )))
    }

    async fn export_snapshot(&self) -> StoreResult<Snapshot> {
        self.inner.export_snapshot().await
    }

    async fn import_snapshot(&self, snapshot: &Snapshot) -> StoreResult<()> {
        let result = self.inner.import_snapshot(snapshot).await;
        self.changed(Change::Reset);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewUser, SqliteStore, UserStatus};
    use unibus::Identity;

    /// A feed the test writes to.
    fn controlled_feed() -> (tokio::sync::mpsc::UnboundedSender<FeedItem>, ChangeFeed) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let feed = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (Ok(item), rx))
        });
        (tx, Box::pin(feed))
    }

    /// Waits (without a fixed sleep deciding anything) until the cache has taken what was sent.
    async fn until(cache: &CachedStore, fresh: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.is_fresh() != fresh {
            assert!(
                Instant::now() < deadline,
                "the cache never became fresh={fresh}"
            );
            tokio::task::yield_now().await;
        }
    }

    async fn add(store: &dyn Store, who: &Identity) {
        let user = NewUser {
            sign_key: who.sign_public_key(),
            kex_key: who.kex_public_key(),
            admin: false,
        };
        store.add_user(user).await.unwrap();
    }

    /// A SQLite store holding two active users, and a cache in front of it that follows a feed
    /// the test writes to.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        alice: Identity,
        bob: Identity,
        feed: tokio::sync::mpsc::UnboundedSender<FeedItem>,
        cache: Arc<CachedStore>,
    }

    async fn two_users_behind_a_cache() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("db")).await.unwrap());
        let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        for who in [&alice, &bob] {
            add(&*store, who).await;
        }
        let (feed, changes) = controlled_feed();
        let cache = CachedStore::with_feed(Arc::clone(&store), changes);
        Fixture {
            _dir: dir,
            store,
            alice,
            bob,
            feed,
            cache,
        }
    }

    async fn status(store: &dyn Store, who: &Identity) -> UserStatus {
        store.get_user(&who.sign_public_key()).await.unwrap().status
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_from_memory_only_while_its_feed_is_fresh_and_fails_closed_when_it_stops() {
        let Fixture {
            _dir,
            store,
            alice,
            bob,
            feed,
            cache,
        } = two_users_behind_a_cache().await;
        assert!(
            !cache.is_fresh(),
            "not fresh before the feed first catches up"
        );

        feed.send(FeedItem::CaughtUp(Instant::now())).unwrap();
        until(&cache, true).await;
        assert_eq!(status(&*cache, &alice).await, UserStatus::Active);
        // Revoked behind the cache's back, with no change on its feed: the copy answers (this
        // is the lag the feed's bound allows), which shows the copy is what answers.
        store.revoke_user(&alice.sign_public_key()).await.unwrap();
        assert_eq!(status(&*cache, &alice).await, UserStatus::Active);

        // The feed's last catching up is older than the bound: the store answers.
        feed.send(FeedItem::CaughtUp(Instant::now() - FEED_BOUND * 2))
            .unwrap();
        until(&cache, false).await;
        assert_eq!(status(&*cache, &alice).await, UserStatus::Revoked);
        assert!(!cache.is_authorized(&alice.sign_public_key()).await);

        // The change arrives and the feed catches up: fresh again, and the copy is gone.
        feed.send(FeedItem::Changed(Change::User(alice.sign_public_key())))
            .unwrap();
        feed.send(FeedItem::CaughtUp(Instant::now())).unwrap();
        until(&cache, true).await;
        assert_eq!(status(&*cache, &alice).await, UserStatus::Revoked);

        // A change made through the cache is seen at once, whatever it had copied.
        assert!(cache.is_authorized(&bob.sign_public_key()).await);
        cache.revoke_user(&bob.sign_public_key()).await.unwrap();
        assert!(!cache.is_authorized(&bob.sign_public_key()).await);

        // The feed stops: every question goes to the store.
        let room = unibus::RoomId::new("general").unwrap();
        store
            .create_room(&room, &alice.sign_public_key())
            .await
            .unwrap();
        assert!(!cache
            .is_member(&room, &bob.sign_public_key())
            .await
            .unwrap());
        store
            .add_member(&room, &bob.sign_public_key())
            .await
            .unwrap();
        drop(feed);
        until(&cache, false).await;
        assert!(cache
            .is_member(&room, &bob.sign_public_key())
            .await
            .unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn warming_copies_every_user_once_the_feed_is_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("db")).await.unwrap());
        let alice = Identity::generate().unwrap();
        add(&*store, &alice).await;
        let (feed, changes) = controlled_feed();
        let cache = CachedStore::with_feed(Arc::clone(&store), changes);
        // Not fresh: nothing is copied.
        assert_eq!(cache.warm(Duration::ZERO).await.unwrap(), 0);
        feed.send(FeedItem::CaughtUp(Instant::now())).unwrap();
        assert_eq!(cache.warm(Duration::from_secs(10)).await.unwrap(), 1);
        // The copy answers (revoked behind the cache's back, with no change on its feed).
        store.revoke_user(&alice.sign_public_key()).await.unwrap();
        assert_eq!(status(&*cache, &alice).await, UserStatus::Active);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_members_rooms_are_copied_until_a_change_to_its_membership_arrives() {
        let Fixture {
            _dir,
            store,
            alice,
            bob,
            feed,
            cache,
        } = two_users_behind_a_cache().await;
        let mut applied = cache.changes().await.unwrap();
        feed.send(FeedItem::CaughtUp(Instant::now())).unwrap();
        until(&cache, true).await;
        let (room, bob_key) = (
            unibus::RoomId::new("general").unwrap(),
            bob.sign_public_key(),
        );
        store
            .create_room(&room, &alice.sign_public_key())
            .await
            .unwrap();
        assert_eq!(cache.rooms_for_member(&bob_key).await.unwrap(), vec![]);
        // Added behind the cache's back: the copy answers until the change arrives.
        store.add_member(&room, &bob_key).await.unwrap();
        assert_eq!(cache.rooms_for_member(&bob_key).await.unwrap(), vec![]);
        let change = Change::Member {
            room: room.clone(),
            member: bob_key,
        };
        feed.send(FeedItem::Changed(change.clone())).unwrap();
        while applied.next().await.unwrap().unwrap() != FeedItem::Changed(change.clone()) {}
        assert_eq!(cache.rooms_for_member(&bob_key).await.unwrap(), vec![room]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rooms_active_members_are_copied_until_a_change_to_its_members_or_users_arrives() {
        let Fixture {
            _dir,
            store,
            alice,
            bob,
            feed,
            cache,
        } = two_users_behind_a_cache().await;
        let mut applied = cache.changes().await.unwrap();
        let (room, alice_key, bob_key) = (
            unibus::RoomId::new("general").unwrap(),
            alice.sign_public_key(),
            bob.sign_public_key(),
        );
        let sorted = |mut keys: Vec<SignPublicKey>| {
            keys.sort();
            keys
        };
        let step = |change: Change| {
            feed.send(FeedItem::Changed(change.clone())).unwrap();
            feed.send(FeedItem::CaughtUp(Instant::now())).unwrap();
            FeedItem::Changed(change)
        };
        store.create_room(&room, &alice_key).await.unwrap();
        step(Change::Reset);
        until(&cache, true).await;
        assert!(matches!(
            cache
                .active_member_keys(&unibus::RoomId::new("nowhere").unwrap())
                .await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            cache.active_member_keys(&room).await.unwrap(),
            vec![alice_key]
        );

        // Added behind the cache's back: the copy answers until the change arrives.
        store.add_member(&room, &bob_key).await.unwrap();
        assert_eq!(
            cache.active_member_keys(&room).await.unwrap(),
            vec![alice_key]
        );
        let added = step(Change::Member {
            room: room.clone(),
            member: bob_key,
        });
        while applied.next().await.unwrap().unwrap() != added {}
        assert_eq!(
            sorted(cache.active_member_keys(&room).await.unwrap()),
            sorted(vec![alice_key, bob_key])
        );

        // Revoked behind its back: still copied as active until the user's change arrives.
        store.revoke_user(&bob_key).await.unwrap();
        assert_eq!(cache.active_member_keys(&room).await.unwrap().len(), 2);
        let revoked = step(Change::User(bob_key));
        while applied.next().await.unwrap().unwrap() != revoked {}
        assert_eq!(
            cache.active_member_keys(&room).await.unwrap(),
            vec![alice_key]
        );

        // A stale feed sends the question to the store, whatever was copied.
        store.revoke_user(&alice_key).await.unwrap();
        feed.send(FeedItem::CaughtUp(Instant::now() - FEED_BOUND * 2))
            .unwrap();
        until(&cache, false).await;
        assert_eq!(cache.active_member_keys(&room).await.unwrap(), vec![]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rooms_latest_epoch_is_copied_and_moved_up_by_the_rooms_changes() {
        use unibus::manifest::{Recipient, SignedManifest};
        use unibus::sealing::RoomKey;

        let Fixture {
            _dir,
            store,
            alice,
            feed,
            cache,
            ..
        } = two_users_behind_a_cache().await;
        let rekey = |epoch: u64| {
            let key = RoomKey::generate().unwrap();
            let room = unibus::RoomId::new("general").unwrap();
            SignedManifest::rekey(
                &alice,
                &room,
                epoch,
                epoch - 1,
                &key,
                &[Recipient::of(&alice)],
            )
            .unwrap()
        };
        let mut applied = cache.changes().await.unwrap();
        feed.send(FeedItem::CaughtUp(Instant::now())).unwrap();
        until(&cache, true).await;
        let (room, owner) = (
            unibus::RoomId::new("general").unwrap(),
            alice.sign_public_key(),
        );
        store.create_room(&room, &owner).await.unwrap();
        assert_eq!(cache.latest_epoch(&room).await.unwrap(), 0);
        // Rekeyed twice behind the cache's back: the copy answers until the changes arrive.
        store.put_epoch(&rekey(1)).await.unwrap();
        store.put_epoch(&rekey(2)).await.unwrap();
        assert_eq!(cache.latest_epoch(&room).await.unwrap(), 0);
        assert_eq!(
            cache.member_part(&room, &owner, None).await.unwrap_err(),
            StoreError::NotFound,
            "epoch 0 has no key"
        );
        // Each change moves the copy to its epoch, without reading the room again: after the
        // first, the cache says 1 while the store is at 2.
        for epoch in [1, 2] {
            let change = Change::Room {
                room: room.clone(),
                epoch: Some(epoch),
            };
            feed.send(FeedItem::Changed(change.clone())).unwrap();
            while applied.next().await.unwrap().unwrap() != FeedItem::Changed(change.clone()) {}
            assert_eq!(cache.latest_epoch(&room).await.unwrap(), epoch);
            assert_eq!(
                cache.member_part(&room, &owner, None).await.unwrap().epoch,
                epoch
            );
        }
        // A change that does not know the epoch makes the room read again.
        store.put_epoch(&rekey(3)).await.unwrap();
        let unknown = Change::Room {
            room: room.clone(),
            epoch: None,
        };
        feed.send(FeedItem::Changed(unknown.clone())).unwrap();
        while applied.next().await.unwrap().unwrap() != FeedItem::Changed(unknown.clone()) {}
        assert_eq!(cache.latest_epoch(&room).await.unwrap(), 3);
        // A rekey through the cache is seen at once...
        cache.put_epoch(&rekey(4)).await.unwrap();
        cache.put_epoch(&rekey(5)).await.unwrap();
        assert_eq!(
            cache.member_part(&room, &owner, None).await.unwrap().epoch,
            5
        );
        // ...and the feed's late word of the one before neither takes the copy back to it (a
        // member added for epoch 5 would find no key at 4) nor makes the room read again: the
        // cache still says 5 while the store, rekeyed behind its back, is at 6.
        store.put_epoch(&rekey(6)).await.unwrap();
        let room_at = |epoch: u64| Change::Room {
            room: room.clone(),
            epoch: Some(epoch),
        };
        for change in [room_at(3), room_at(4)] {
            feed.send(FeedItem::Changed(change.clone())).unwrap();
            while applied.next().await.unwrap().unwrap() != FeedItem::Changed(change.clone()) {}
            assert_eq!(cache.latest_epoch(&room).await.unwrap(), 5);
        }
        // Once the feed has named the epoch stored here, an epoch below the copy may be a
        // restore: the room is read again.
        for change in [room_at(5), room_at(4)] {
            feed.send(FeedItem::Changed(change.clone())).unwrap();
            while applied.next().await.unwrap().unwrap() != FeedItem::Changed(change.clone()) {}
        }
        assert_eq!(cache.latest_epoch(&room).await.unwrap(), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_of_its_changes_sees_each_change_it_applies() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("db")).await.unwrap());
        let (feed, changes) = controlled_feed();
        let cache = CachedStore::with_feed(store, changes);
        let mut applied = cache.changes().await.unwrap();
        let key = Identity::generate().unwrap().sign_public_key();
        feed.send(FeedItem::Changed(Change::User(key))).unwrap();
        let item = applied.next().await.unwrap().unwrap();
        assert_eq!(item, FeedItem::Changed(Change::User(key)));
    }
}
