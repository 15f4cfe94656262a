//! The JetStream KV backend: the control plane in replicated buckets.
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `UNIBUS_users` | signing key (hex) | [`User`] as JSON, or `{"deleted": `[`DeletedUser`]`}`: the tombstone a deletion leaves |
//! | `UNIBUS_invites` | invite id (hex digest of the token) | [`Invite`] as JSON |
//! | `UNIBUS_rooms` | room id | [`Room`] as JSON |
//! | `UNIBUS_members` | `{room}.{member}` | `1` |
//! | `UNIBUS_rooms_by_member` | `{member}.{room}` | `1` |
//! | `UNIBUS_room_keys` | `f.{room}.{epoch}.{digest}` | the epoch's signed head (header and signature, protocol §8.4) |
//! | | `i.{room}.{epoch}.{digest}` | the index of the epoch's tail groups: the first member key (32 bytes) of each |
//! | | `k.{room}.{epoch}.{digest}.{n}` | tail group `n`: entries `128 n` to `128 n + 127` with the audit path they share; each member's tail (leaf index, entry, audit path) is cut from it |
//! | | `e.{room}.{epoch}` | `{digest}`: the digest of the head the epoch committed |
//! | | `h.{room}.{epoch}.{member}` | the history share of that epoch for that member (protocol §16), as uploaded |
//! | `UNIBUS_admin_nonces` | nonce of a signed admin request | when it expires (Unix ms); JetStream drops entries twice [`NONCE_KEPT_AT_MOST`] old |
//!
//! Every bucket keeps one revision per key, is created with `allow_direct = false` so reads go
//! through the stream leader and are never stale (authorization depends on them), and has
//! 1 to 5 replicas; reopening with more replicas scales the buckets in place (R1 to R3).
//!
//! Epoch markers are create-only, so the digest an epoch committed never changes: each
//! instance caches the digests it has read, and the heads, group indexes and tail groups under
//! them (each cache within a byte budget), so a warm key fetch reads only the room's record for
//! its latest epoch, and a group read once serves every member in it.
//! Large rooms' sorted member listings, and every active user's key when a large room holds a
//! large share of all users, are kept beside their bucket's version and used only while it is
//! unchanged (`listing`), so paging through a large room lists it once, and stays exact.
//!
//! Every operation is bounded by [`KvStoreConfig::op_timeout`]. Opening retries each bucket
//! operation with short attempts within [`KvStoreConfig::bootstrap_budget`], because on a cold
//! cluster a request sent before the meta leader exists gets no reply at all.
//!
//! Multi-key writes are ordered so that a crash leaves nothing half-visible:
//! - redeeming an invite burns it with a compare-and-swap on its revision (recording the key),
//!   then creates the user; a retry by the same key completes a crashed registration;
//! - an epoch's tail groups, their index and its head are written under the head's digest first, then the epoch is
//!   claimed with a create-only marker, then the room's epoch moves by compare-and-swap.
//!   A claimed epoch is always complete, so if its writer crashed, the next rekey rolls the room
//!   forward to it and asks its caller to rekey from there.
//!
//! The module is split by concern: `bucket` has the bucket primitives (bounded gets, puts,
//! compare-and-swap, listings, opening), `keys` the one definition of every key the buckets use,
//! `groups` the encoding of an epoch's tails in groups, `epoch` the ordered commit of an
//! epoch and the caches of what it committed, and `listing` the listings of large rooms.

mod bucket;
mod epoch;
mod feed;
mod groups;
mod keys;
mod listing;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use bytes::Bytes;
use unibus::manifest::SignedManifest;
use unibus::protocol::status::KeyStatus;
use unibus::{InviteToken, KexPublicKey, RoomId, SignPublicKey};

use super::rules::{
    active_user, check_nonce, mint_invite, redeem_step, redeemed_user, RedeemStep, Retired,
    NONCE_KEPT_AT_MOST,
};
use super::{
    invite_id, now_millis, DeletedUser, EpochPart, Invite, InviteStatus, NewInvite, NewUser, Room,
    RoomSnapshot, Snapshot, Store, StoreError, StoreResult, StoredShare, User, UserStatus,
};
use bucket::{backend, decode, encode, open_aging_bucket, open_bucket, CAS_ATTEMPTS};

/// How the KV store is set up.
#[derive(Debug, Clone)]
pub struct KvStoreConfig {
    /// Replicas per bucket, 1 to 5 (3 tolerates one node down).
    pub replicas: usize,
    /// The bound on every store operation.
    pub op_timeout: Duration,
    /// The bound on one attempt of a bucket operation while opening.
    pub attempt_timeout: Duration,
    /// The bound on opening as a whole, across retries.
    pub bootstrap_budget: Duration,
    /// The prefix of the bucket names: `UNIBUS` gives `UNIBUS_users` and so on. Tests use
    /// their own prefixes to share one cluster.
    pub bucket_prefix: String,
}

impl Default for KvStoreConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            op_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(2),
            bootstrap_budget: Duration::from_secs(60),
            bucket_prefix: "UNIBUS".into(),
        }
    }
}

/// The JetStream KV store. Cloning shares the buckets.
#[derive(Clone)]
pub struct KvStore {
    users: kv::Store,
    invites: kv::Store,
    rooms: kv::Store,
    members: kv::Store,
    rooms_by_member: kv::Store,
    room_keys: kv::Store,
    nonces: kv::Store,
    client: async_nats::Client,
    op_timeout: Duration,
    /// Committed epochs' manifest digests. Epoch markers are create-only, so a digest once read
    /// never changes; caching it saves a round trip on every key fetch.
    /// Shared by clones.
    digests: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(RoomId, u64), String>>>,
    /// The heads and tail-group indexes of committed epochs, by digest: immutable once written.
    /// Shared by clones.
    lookups: std::sync::Arc<std::sync::Mutex<epoch::LookupCache>>,
    /// The tail groups of committed epochs, by digest and number: immutable once written.
    /// Shared by clones.
    groups: std::sync::Arc<std::sync::Mutex<epoch::GroupCache>>,
    /// The sorted members of large rooms, valid while the members bucket is unchanged.
    /// Shared by clones.
    listings: std::sync::Arc<std::sync::Mutex<listing::ListingCache>>,
    /// Every active user's x25519 key, valid while the users bucket is unchanged (only kept
    /// for large rooms). Shared by clones.
    active_users:
        std::sync::Arc<std::sync::Mutex<Option<(bucket::BucketVersion, listing::ActiveUsers)>>>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("users", &self.users.name)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

/// What the users bucket holds under a signing key: the user, or the tombstone its deletion
/// left. The tombstone keeps the key taken, so the create-only writes of `add_user` and
/// `redeem_invite` can never bring a deleted user back, even in a race with the deletion.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum UserEntry {
    Deleted { deleted: DeletedUser },
    Live(User),
}

impl UserEntry {
    fn live(self) -> StoreResult<User> {
        match self {
            UserEntry::Live(user) => Ok(user),
            UserEntry::Deleted { .. } => Err(StoreError::NotFound),
        }
    }
}

impl KvStore {
    /// Opens (creating or scaling as needed) the six buckets on the cluster `client` is
    /// connected to.
    pub async fn open(client: async_nats::Client, config: KvStoreConfig) -> StoreResult<Self> {
        if !(1..=5).contains(&config.replicas) {
            return Err(StoreError::Invalid(format!(
                "replicas must be 1 to 5, not {}",
                config.replicas
            )));
        }
        let js = jetstream::new(client.clone());
        let deadline = Instant::now() + config.bootstrap_budget;
        let bucket = |name: &str| format!("{}_{name}", config.bucket_prefix);
        Ok(Self {
            users: open_bucket(&js, &bucket("users"), &config, deadline).await?,
            invites: open_bucket(&js, &bucket("invites"), &config, deadline).await?,
            rooms: open_bucket(&js, &bucket("rooms"), &config, deadline).await?,
            members: open_bucket(&js, &bucket("members"), &config, deadline).await?,
            rooms_by_member: open_bucket(&js, &bucket("rooms_by_member"), &config, deadline)
                .await?,
            room_keys: open_bucket(&js, &bucket("room_keys"), &config, deadline).await?,
            nonces: open_aging_bucket(
                &js,
                &bucket("admin_nonces"),
                &config,
                NONCE_KEPT_AT_MOST * 2,
                deadline,
            )
            .await?,
            client,
            op_timeout: config.op_timeout,
            digests: Default::default(),
            lookups: Default::default(),
            groups: Default::default(),
            listings: Default::default(),
            active_users: Default::default(),
        })
    }

    /// Creates the user a redeemed invite makes, unless the key is taken: then it is this
    /// invite's own user (a retry), [`StoreError::UserDeleted`], [`StoreError::UserRevoked`] (a
    /// user revoked since the redemption's check) or [`StoreError::UserExists`].
    async fn create_redeemed_user(&self, invite: &Invite, user: User) -> StoreResult<User> {
        let key = user.sign_key.to_hex();
        if self.create(&self.users, &key, encode(&user)).await? {
            return Ok(user);
        }
        match self.get_json(&self.users, &key, "user").await? {
            UserEntry::Deleted { .. } => Err(StoreError::UserDeleted),
            UserEntry::Live(existing) if existing.status == UserStatus::Revoked => {
                Err(StoreError::UserRevoked)
            }
            UserEntry::Live(existing)
                if existing.invite_id.as_deref() == Some(invite.id.as_str()) =>
            {
                Ok(existing)
            }
            UserEntry::Live(_) => Err(StoreError::UserExists),
        }
    }

    /// Whether `key` belongs to a revoked user or belonged to a deleted one.
    async fn retired(&self, key: &SignPublicKey) -> StoreResult<Option<Retired>> {
        let Some(bytes) = self.get(&self.users, &key.to_hex()).await? else {
            return Ok(None);
        };
        Ok(match decode::<UserEntry>("user", &bytes)? {
            UserEntry::Deleted { .. } => Some(Retired::Deleted),
            UserEntry::Live(user) if user.status == UserStatus::Revoked => Some(Retired::Revoked),
            UserEntry::Live(_) => None,
        })
    }

    /// Records that `member` is in `room`: the reverse index first. `members` is the authority,
    /// so a crash in between leaves an index entry for a membership that does not exist, which a
    /// retry completes.
    async fn put_membership(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()> {
        let one = || Bytes::from_static(b"1");
        self.put(&self.rooms_by_member, &keys::room_of(member, room), one())
            .await?;
        self.put(&self.members, &keys::membership(room, member), one())
            .await
    }

    /// Every entry of the users bucket, by signing key.
    async fn user_entries(&self) -> StoreResult<Vec<UserEntry>> {
        self.list_json(&self.users, "user").await
    }
}

#[async_trait]
impl Store for KvStore {
    async fn changes(&self) -> StoreResult<super::ChangeFeed> {
        feed::open(self).await
    }

    async fn add_user(&self, user: NewUser) -> StoreResult<User> {
        let user = active_user(user);
        let key = user.sign_key.to_hex();
        if self
            .create(&self.users, &key, encode(&UserEntry::Live(user.clone())))
            .await?
        {
            return Ok(user);
        }
        match self.get_json(&self.users, &key, "user").await? {
            UserEntry::Deleted { .. } => Err(StoreError::UserDeleted),
            UserEntry::Live(_) => Err(StoreError::UserExists),
        }
    }

    async fn get_user(&self, key: &SignPublicKey) -> StoreResult<User> {
        self.get_json::<UserEntry>(&self.users, &key.to_hex(), "user")
            .await?
            .live()
    }

    async fn key_status(&self, key: &SignPublicKey) -> StoreResult<KeyStatus> {
        let Some(bytes) = self.get(&self.users, &key.to_hex()).await? else {
            return Ok(KeyStatus::Unknown);
        };
        Ok(match decode::<UserEntry>("user", &bytes)? {
            UserEntry::Deleted { .. } => KeyStatus::Deleted,
            UserEntry::Live(user) if user.status == UserStatus::Active => KeyStatus::Active,
            UserEntry::Live(_) => KeyStatus::Revoked,
        })
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        Ok(self
            .user_entries()
            .await?
            .into_iter()
            .filter_map(|entry| entry.live().ok())
            .collect())
    }

    async fn revoke_user(&self, key: &SignPublicKey) -> StoreResult<()> {
        self.modify(&self.users, &key.to_hex(), "user", |entry: UserEntry| {
            let mut user = entry.live()?;
            Ok((user.status != UserStatus::Revoked).then(|| {
                user.status = UserStatus::Revoked;
                UserEntry::Live(user)
            }))
        })
        .await
    }

    async fn delete_user(&self, key: &SignPublicKey) -> StoreResult<()> {
        // The user's history shares go first: a failure after them leaves a live user whose
        // owners can share again, never a tombstone with shares behind it.
        for (share, _) in self
            .entries(&self.room_keys, &keys::history_shares_of(key))
            .await?
        {
            self.delete(&self.room_keys, &share).await?;
        }
        // The record becomes its tombstone in one compare-and-swap.
        let tombstone = DeletedUser {
            sign_key: *key,
            deleted_at: now_millis(),
        };
        self.modify(&self.users, &key.to_hex(), "user", |entry: UserEntry| {
            entry.live()?;
            Ok(Some(UserEntry::Deleted { deleted: tombstone }))
        })
        .await
    }

    async fn create_invite(&self, new: NewInvite) -> StoreResult<(InviteToken, Invite)> {
        let (token, invite) = mint_invite(new)?;
        if !self
            .create(&self.invites, &invite.id, encode(&invite))
            .await?
        {
            return Err(backend("invite id collision"));
        }
        Ok((token, invite))
    }

    async fn get_invite(&self, id: &str) -> StoreResult<Invite> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NotFound);
        }
        self.get_json(&self.invites, id, "invite").await
    }

    async fn list_invites(&self) -> StoreResult<Vec<Invite>> {
        self.list_json(&self.invites, "invite").await
    }

    async fn cancel_invite(&self, id: &str) -> StoreResult<()> {
        self.get_invite(id).await?;
        self.modify(
            &self.invites,
            id,
            "invite",
            |mut invite: Invite| match invite.status_at(now_millis()) {
                InviteStatus::Used => Err(StoreError::InviteUsed),
                InviteStatus::Cancelled => Ok(None),
                InviteStatus::Pending | InviteStatus::Expired => {
                    invite.cancelled_at = Some(now_millis());
                    Ok(Some(invite))
                }
            },
        )
        .await
    }

    async fn redeem_invite(
        &self,
        token: &InviteToken,
        sign_key: &SignPublicKey,
        kex_key: &KexPublicKey,
    ) -> StoreResult<User> {
        let id = invite_id(token);
        for _ in 0..CAS_ATTEMPTS {
            let entry = self
                .entry(&self.invites, &id)
                .await?
                .ok_or(StoreError::InviteUnknown)?;
            let mut invite: Invite = decode("invite", &entry.value)?;
            let now = now_millis();
            // Checked before the burn so a retired key spends no invite; the create-only write
            // of the user refuses it again if it is retired in between.
            let retired = self.retired(sign_key).await?;
            match redeem_step(&invite, sign_key, retired, now)? {
                RedeemStep::Burn => {
                    invite.used_at = Some(now);
                    invite.used_by = Some(*sign_key);
                    if !self
                        .update(&self.invites, &id, encode(&invite), entry.revision)
                        .await?
                    {
                        // Someone else changed it first: decide again on what they wrote.
                        continue;
                    }
                    let user = redeemed_user(&invite, *sign_key, *kex_key, now);
                    return self.create_redeemed_user(&invite, user).await;
                }
                RedeemStep::Complete => {
                    let user = redeemed_user(&invite, *sign_key, *kex_key, now);
                    return self.create_redeemed_user(&invite, user).await;
                }
            }
        }
        Err(backend(format!("invite {id}: too much contention")))
    }

    async fn create_room(&self, id: &RoomId, owner: &SignPublicKey) -> StoreResult<Room> {
        let room = Room {
            id: id.clone(),
            owner: *owner,
            epoch: 0,
            created_at: now_millis(),
        };
        if !self.create(&self.rooms, id.as_str(), encode(&room)).await? {
            return Err(StoreError::RoomExists);
        }
        self.add_member(id, owner).await?;
        Ok(room)
    }

    async fn get_room(&self, id: &RoomId) -> StoreResult<Room> {
        self.get_json(&self.rooms, id.as_str(), "room").await
    }

    async fn list_rooms(&self) -> StoreResult<Vec<Room>> {
        self.list_json(&self.rooms, "room").await
    }

    async fn add_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()> {
        self.get_room(room).await?;
        self.put_membership(room, member).await
    }

    async fn remove_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()> {
        if !self.is_member(room, member).await? {
            return Err(StoreError::NotFound);
        }
        self.delete(&self.members, &keys::membership(room, member))
            .await?;
        self.delete(&self.rooms_by_member, &keys::room_of(member, room))
            .await
    }

    async fn list_members(&self, room: &RoomId) -> StoreResult<Vec<SignPublicKey>> {
        self.get_room(room).await?;
        Ok(self.sorted_members(room).await?.to_vec())
    }

    async fn active_members(
        &self,
        room: &RoomId,
        after: Option<&SignPublicKey>,
        limit: usize,
    ) -> StoreResult<Vec<(SignPublicKey, KexPublicKey)>> {
        // Keys cannot be range-scanned: the room's sorted members (see `listing`), then their
        // users in key order until the page is full.
        self.get_room(room).await?;
        let members = self.sorted_members(room).await?;
        let start = after.map_or(0, |after| members.partition_point(|m| m <= after));
        self.active_of(members.len(), &members[start..], limit)
            .await
    }

    async fn is_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<bool> {
        Ok(self
            .get(&self.members, &keys::membership(room, member))
            .await?
            .is_some())
    }

    async fn rooms_for_member(&self, member: &SignPublicKey) -> StoreResult<Vec<RoomId>> {
        let mut rooms = self
            .entries(&self.rooms_by_member, &keys::rooms_of(member))
            .await?
            .into_iter()
            .map(|(key, _)| {
                RoomId::new(keys::room_in(member, &key))
                    .map_err(|e| StoreError::Corrupt(format!("stored room id: {e}")))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        rooms.sort();
        Ok(rooms)
    }

    async fn put_epoch(&self, manifest: &SignedManifest) -> StoreResult<()> {
        self.commit_epoch(manifest).await
    }

    async fn member_part(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: Option<u64>,
    ) -> StoreResult<EpochPart> {
        let epoch = match epoch {
            Some(epoch) => epoch,
            None => self.get_room(room).await?.epoch,
        };
        let digest = self
            .committed_digest(room, epoch)
            .await?
            .ok_or(StoreError::NotFound)?;
        let lookup = self.epoch_lookup(room, epoch, &digest).await?;
        let tail = self
            .member_tail(room, epoch, &digest, &lookup, member)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(EpochPart {
            epoch,
            part: super::epoch::member_part(&lookup.head, &tail),
        })
    }

    async fn manifest(&self, room: &RoomId, epoch: u64) -> StoreResult<SignedManifest> {
        let digest = self
            .committed_digest(room, epoch)
            .await?
            .ok_or(StoreError::NotFound)?;
        let lookup = self.epoch_lookup(room, epoch, &digest).await?;
        self.whole_manifest(room, epoch, &digest, &lookup).await
    }

    async fn epoch_head(&self, room: &RoomId, epoch: u64) -> StoreResult<Vec<u8>> {
        let digest = self
            .committed_digest(room, epoch)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(self.epoch_lookup(room, epoch, &digest).await?.head.to_vec())
    }

    async fn put_history_shares(&self, room: &RoomId, shares: &[StoredShare]) -> StoreResult<()> {
        self.get_room(room).await?;
        for share in shares {
            let key = keys::history_share(room, share.epoch, &share.member);
            self.put(&self.room_keys, &key, Bytes::from(share.share.clone()))
                .await?;
        }
        Ok(())
    }

    async fn history_share(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: u64,
    ) -> StoreResult<Vec<u8>> {
        let key = keys::history_share(room, epoch, member);
        Ok(self
            .get(&self.room_keys, &key)
            .await?
            .ok_or(StoreError::NotFound)?
            .to_vec())
    }

    async fn record_nonce(
        &self,
        nonce: &str,
        now: super::Millis,
        expires_at: super::Millis,
    ) -> StoreResult<bool> {
        check_nonce(nonce, now, expires_at)?;
        let record = Bytes::from(expires_at.to_string());
        if self.create(&self.nonces, nonce, record.clone()).await? {
            return Ok(true);
        }
        // Taken: a replay, unless the earlier use has expired, in which case take it over.
        let Some(entry) = self.entry(&self.nonces, nonce).await? else {
            return self.create(&self.nonces, nonce, record).await;
        };
        let until: super::Millis = String::from_utf8_lossy(&entry.value)
            .parse()
            .unwrap_or(i64::MAX);
        if until > now {
            return Ok(false);
        }
        self.update(&self.nonces, nonce, record, entry.revision)
            .await
    }

    async fn export_snapshot(&self) -> StoreResult<Snapshot> {
        let mut snapshot = Snapshot {
            invites: self.list_invites().await?,
            ..Snapshot::default()
        };
        for entry in self.user_entries().await? {
            match entry {
                UserEntry::Live(user) => snapshot.users.push(user),
                UserEntry::Deleted { deleted } => snapshot.deleted_users.push(deleted),
            }
        }
        for room in self.list_rooms().await? {
            let members = self.list_members(&room.id).await?;
            let mut manifests = Vec::new();
            for (key, _) in self
                .entries(&self.room_keys, &keys::epoch_markers(&room.id))
                .await?
            {
                let epoch = keys::epoch_in(&key)
                    .ok_or_else(|| StoreError::Corrupt(format!("stored epoch marker {key}")))?;
                let manifest = self.manifest(&room.id, epoch).await?;
                manifests.push((epoch, hex::encode(manifest.to_bytes())));
            }
            let mut history = Vec::new();
            for (key, share) in self
                .entries(&self.room_keys, &keys::history_shares_in(&room.id))
                .await?
            {
                let (epoch, member) = keys::history_share_of(&key)
                    .ok_or_else(|| StoreError::Corrupt(format!("stored history share {key}")))?;
                history.push((epoch, member, hex::encode(&share)));
            }
            snapshot.rooms.push(RoomSnapshot {
                room,
                members,
                manifests,
                history,
            });
        }
        snapshot.normalize();
        Ok(snapshot)
    }

    async fn import_snapshot(&self, snapshot: &Snapshot) -> StoreResult<()> {
        for user in &snapshot.users {
            let entry = UserEntry::Live(user.clone());
            self.put(&self.users, &user.sign_key.to_hex(), encode(&entry))
                .await?;
        }
        for deleted in &snapshot.deleted_users {
            let entry = UserEntry::Deleted { deleted: *deleted };
            self.put(&self.users, &deleted.sign_key.to_hex(), encode(&entry))
                .await?;
        }
        for invite in &snapshot.invites {
            self.put(&self.invites, &invite.id, encode(invite)).await?;
        }
        for room in &snapshot.rooms {
            let id = &room.room.id;
            for (_, hex_manifest) in &room.manifests {
                self.import_epoch(&super::decode_manifest_hex(hex_manifest)?)
                    .await?;
            }
            // The room record last, with its real epoch, once everything it points to exists.
            self.put(&self.rooms, id.as_str(), encode(&room.room))
                .await?;
            for member in &room.members {
                self.put_membership(id, member).await?;
            }
            for (epoch, member, share) in &room.history {
                let share = hex::decode(share)
                    .map_err(|e| StoreError::Corrupt(format!("a history share's hex: {e}")))?;
                let key = keys::history_share(id, *epoch, member);
                self.put(&self.room_keys, &key, Bytes::from(share)).await?;
            }
        }
        Ok(())
    }
}
