//! The control plane's data layer: one [`Store`] contract, two backends.
//!
//! - [`SqliteStore`]: a SQLite file in WAL mode, migrations embedded in the binary. The
//!   embedded default, one node.
//! - [`KvStore`]: replicated JetStream KV buckets (`UNIBUS_users`, `UNIBUS_invites`,
//!   `UNIBUS_rooms`, `UNIBUS_members`, `UNIBUS_rooms_by_member`, `UNIBUS_room_keys`, and
//!   `UNIBUS_admin_nonces` for the admin API's replay guard), for a cluster of nodes. Replication is JetStream's; the store never replicates by hand.
//!
//! Both pass the same contract suite (`server/tests/contract/`), so callers cannot tell
//! them apart. The rules every backend keeps:
//!
//! - A missing record is [`StoreError::NotFound`].
//! - [`Store::is_authorized`] and [`Store::has_admin`] fail closed: any backend error or
//!   timeout answers `false`.
//! - [`Store::redeem_invite`] is atomic and single-use. It burns the invite (recording who used
//!   it) before it creates the user, so an already-registered key gets
//!   [`StoreError::UserExists`] with the invite spent, and a retry by the same key after a crash
//!   or a lost response completes the registration instead of failing with "used".
//! - Invite tokens are stored only as their SHA-256 digest.

pub mod cached;
mod epoch;
mod error;
pub mod feed;
pub mod kv;
pub mod migrate;
mod rules;
pub mod sqlite;
mod types;

use async_trait::async_trait;
use unibus::manifest::SignedManifest;
use unibus::protocol::status::KeyStatus;
use unibus::{InviteToken, KexPublicKey, RoomId, SignPublicKey};

pub use cached::CachedStore;
pub use error::{BackendCause, StoreError, StoreResult};
pub use feed::{Change, ChangeFeed, FeedItem};
pub use kv::{KvStore, KvStoreConfig};
pub use rules::NONCE_KEPT_AT_MOST;

pub use sqlite::SqliteStore;
pub use types::*;

/// The store contract. See the [module documentation](self) for the rules all backends keep.
#[async_trait]
pub trait Store: Send + Sync {
    // ---- users ----

    /// Creates a user. [`StoreError::UserExists`] if the signing key is taken.
    async fn add_user(&self, user: NewUser) -> StoreResult<User>;

    /// The user with this signing key, or [`StoreError::NotFound`].
    async fn get_user(&self, key: &SignPublicKey) -> StoreResult<User>;

    /// All users, sorted by signing key.
    async fn list_users(&self) -> StoreResult<Vec<User>>;

    /// Marks a user revoked: they can no longer log in, the record stays.
    async fn revoke_user(&self, key: &SignPublicKey) -> StoreResult<()>;

    /// Deletes a user's record, and the history shares sealed to them. Their room memberships
    /// stay, inert: the key cannot log in.
    async fn delete_user(&self, key: &SignPublicKey) -> StoreResult<()>;

    /// What the store knows of a signing key, for `POST /status` (protocol §10.2): an active
    /// or revoked user, a deleted one (its key retired for good), or none of these.
    async fn key_status(&self, key: &SignPublicKey) -> StoreResult<KeyStatus>;

    /// Whether this key belongs to an active user. `false` on any error (fail closed).
    async fn is_authorized(&self, key: &SignPublicKey) -> bool {
        matches!(self.get_user(key).await, Ok(user) if user.status == UserStatus::Active)
    }

    /// Whether this key belongs to an active admin. `false` on any error (fail closed).
    async fn has_admin(&self, key: &SignPublicKey) -> bool {
        matches!(self.get_user(key).await, Ok(user) if user.status == UserStatus::Active && user.admin)
    }

    // ---- invites ----

    /// Creates an invite with a fresh 32-byte token. The token is returned once and stored
    /// only as its digest.
    async fn create_invite(&self, invite: NewInvite) -> StoreResult<(InviteToken, Invite)>;

    /// The invite with this id (hex digest of its token), or [`StoreError::NotFound`].
    async fn get_invite(&self, id: &str) -> StoreResult<Invite>;

    /// All invites, sorted by id. Use [`Invite::status_at`] for their status.
    async fn list_invites(&self) -> StoreResult<Vec<Invite>>;

    /// Cancels a pending (or expired) invite. [`StoreError::InviteUsed`] if it was redeemed;
    /// cancelling twice is not an error.
    async fn cancel_invite(&self, id: &str) -> StoreResult<()>;

    /// Redeems an invite for a new user with these keys, atomically and once. See the
    /// [module documentation](self) for the crash-safety and retry rules.
    async fn redeem_invite(
        &self,
        token: &InviteToken,
        sign_key: &SignPublicKey,
        kex_key: &KexPublicKey,
    ) -> StoreResult<User>;

    // ---- rooms ----

    /// Creates a room owned by `owner`, who becomes its first member.
    async fn create_room(&self, id: &RoomId, owner: &SignPublicKey) -> StoreResult<Room>;

    /// The room, or [`StoreError::NotFound`].
    async fn get_room(&self, id: &RoomId) -> StoreResult<Room>;

    /// All rooms, sorted by id.
    async fn list_rooms(&self) -> StoreResult<Vec<Room>>;

    /// Adds a member. Adding a member twice is not an error. [`StoreError::NotFound`] if the
    /// room does not exist.
    async fn add_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()>;

    /// Removes a member. [`StoreError::NotFound`] if they are not a member.
    async fn remove_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()>;

    /// The room's members, sorted. [`StoreError::NotFound`] if the room does not exist.
    async fn list_members(&self, room: &RoomId) -> StoreResult<Vec<SignPublicKey>>;

    /// Whether `member` is in `room`. An error is an error, never "not a member".
    async fn is_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<bool>;

    /// The rooms `member` is in, sorted.
    async fn rooms_for_member(&self, member: &SignPublicKey) -> StoreResult<Vec<RoomId>>;

    /// The room's members who can receive keys (active users) with their registered x25519
    /// keys, sorted by signing key: at most `limit` of them, all after `after` when given. One
    /// page of a listing of any size. [`StoreError::NotFound`] for a room that does not exist.
    async fn active_members(
        &self,
        room: &RoomId,
        after: Option<&SignPublicKey>,
        limit: usize,
    ) -> StoreResult<Vec<(SignPublicKey, KexPublicKey)>>;

    /// The signing keys of the room's members who are active users, in no particular order:
    /// who gets a room's live messages (protocol §15.4). [`StoreError::NotFound`] for a room
    /// that does not exist. The [authorization cache](CachedStore) answers it from memory, kept
    /// current by the change feed, so a message's fan-out does not read the store.
    async fn active_member_keys(&self, room: &RoomId) -> StoreResult<Vec<SignPublicKey>> {
        Ok(self
            .active_members(room, None, usize::MAX)
            .await?
            .into_iter()
            .map(|(member, _)| member)
            .collect())
    }

    /// Stores a new epoch, its signed head and each member's tail (protocol §8.4),
    /// and moves the room's epoch from the manifest's `previous_epoch` to its `epoch`: members
    /// see all of the epoch or none of it.
    /// [`StoreError::EpochConflict`] if the room is not at `previous_epoch` (a concurrent
    /// rekey won). The caller verifies the signature and the rekeyer's right to rekey.
    async fn put_epoch(&self, manifest: &SignedManifest) -> StoreResult<()>;

    /// The room's latest epoch (0 before its first key).
    async fn latest_epoch(&self, room: &RoomId) -> StoreResult<u64> {
        Ok(self.get_room(room).await?.epoch)
    }

    /// `member`'s part of `epoch` (the latest if `None`) in its wire form (protocol §8.4): the
    /// epoch's signed header, the member's entry and its audit path. A bounded number of reads
    /// of bounded size, whatever the room's size (SQLite: the head and the tail; KV: the
    /// member's group of 128 entries; the head, the group index and the groups are cached).
    /// [`StoreError::NotFound`] if there is none (no key yet, or not a recipient then).
    async fn member_part(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: Option<u64>,
    ) -> StoreResult<EpochPart>;

    /// The whole signed manifest of `epoch`, rebuilt from its head and every member's tail
    /// (for snapshots and migration; O(n) reads).
    async fn manifest(&self, room: &RoomId, epoch: u64) -> StoreResult<SignedManifest>;

    /// The signed head (header and signature, protocol §8.3) of `epoch` of `room`, as it was
    /// uploaded. [`StoreError::NotFound`] if the room has no such epoch.
    async fn epoch_head(&self, room: &RoomId, epoch: u64) -> StoreResult<Vec<u8>>;

    /// Stores history shares of `room` (protocol §16), replacing any stored for the same epoch
    /// and member. The caller has checked them (§16.5). SQLite stores all of them or none; KV
    /// writes one record per share, so after a failure the caller sends them again.
    async fn put_history_shares(&self, room: &RoomId, shares: &[StoredShare]) -> StoreResult<()>;

    /// The history share of `epoch` of `room` for `member`, or [`StoreError::NotFound`]. A
    /// deleted user's shares are gone.
    async fn history_share(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: u64,
    ) -> StoreResult<Vec<u8>>;

    // ---- admin requests ----

    /// Records the nonce of a signed admin request until `expires_at`. `Ok(true)` the first
    /// time, `Ok(false)` for a nonce already recorded that has not expired at `now` (a replay):
    /// a recorded nonce is forgotten only once `expires_at <= now`. `now` is the caller's one
    /// reading of the clock for the request, so the freshness check and the expiry agree.
    /// Nonces are not part of snapshots, and the store drops them once expired, so the replay
    /// table does not grow with the admin requests ever made. A nonce must be alphanumeric and
    /// expire within [`NONCE_KEPT_AT_MOST`] of `now` ([`StoreError::Invalid`] otherwise).
    async fn record_nonce(&self, nonce: &str, now: Millis, expires_at: Millis)
        -> StoreResult<bool>;

    // ---- the change feed ----

    /// A feed of the changes to users and memberships committed from now on, by any writer
    /// (see [`feed`]). Each call opens a feed of its own.
    async fn changes(&self) -> StoreResult<ChangeFeed>;

    // ---- whole state ----

    /// The whole control plane. Lists are sorted ([`Snapshot::normalize`]).
    async fn export_snapshot(&self) -> StoreResult<Snapshot>;

    /// Writes a snapshot as it is (epochs, statuses and times preserved), overwriting records
    /// with the same keys. Importing the same snapshot twice gives the same state.
    async fn import_snapshot(&self, snapshot: &Snapshot) -> StoreResult<()>;
}

/// Decodes a manifest stored (as hex) in a snapshot.
pub(crate) fn decode_manifest_hex(hex_text: &str) -> StoreResult<SignedManifest> {
    let bytes =
        hex::decode(hex_text).map_err(|e| StoreError::Invalid(format!("manifest hex: {e}")))?;
    SignedManifest::from_bytes(&bytes).map_err(|e| StoreError::Invalid(format!("manifest: {e}")))
}

/// The id of an invite: the hex SHA-256 of its token.
pub fn invite_id(token: &InviteToken) -> String {
    hex::encode(token.digest())
}
