//! The records the store keeps. Times are Unix milliseconds (UTC).

use serde::{Deserialize, Serialize};
use unibus::{KexPublicKey, RoomId, SignPublicKey};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// The default lifetime of an invite: 7 days.
pub const DEFAULT_INVITE_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Whether a user may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// The user may log in.
    Active,
    /// The user was revoked by an admin and may not log in. The record stays.
    Revoked,
}

/// A registered user: public keys only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The ed25519 key: the user's identity and NATS nkey.
    pub sign_key: SignPublicKey,
    /// The x25519 key room keys are sealed to.
    pub kex_key: KexPublicKey,
    /// Whether the user may administer users, invites and rooms.
    pub admin: bool,
    /// Active or revoked.
    pub status: UserStatus,
    /// When the user was created.
    pub created_at: Millis,
    /// The id of the invite the user redeemed, if they registered through one.
    pub invite_id: Option<String>,
}

/// The tombstone a deleted user leaves: the key can never be registered or added again, so
/// nothing it was given (memberships, the admin flag, a login) comes back. The person behind it
/// needs a new identity and a new invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedUser {
    /// The deleted user's ed25519 key.
    pub sign_key: SignPublicKey,
    /// When the user was deleted.
    pub deleted_at: Millis,
}

/// What [`Store::add_user`](super::Store::add_user) creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The ed25519 key.
    pub sign_key: SignPublicKey,
    /// The x25519 key.
    pub kex_key: KexPublicKey,
    /// Whether the user is an admin.
    pub admin: bool,
}

/// Where an invite is in its life, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InviteStatus {
    /// Can be redeemed.
    Pending,
    /// Redeemed.
    Used,
    /// Past its expiry, never redeemed.
    Expired,
    /// Cancelled by an admin before use.
    Cancelled,
}

/// An invite. The token itself is never stored: [`Invite::id`] is the hex SHA-256 of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Hex SHA-256 of the token ([`unibus::InviteToken::digest`]).
    pub id: String,
    /// Whether the user it creates is an admin.
    pub admin: bool,
    /// When it was created.
    pub created_at: Millis,
    /// The admin who created it, if any (the CLI creates invites without one).
    pub created_by: Option<SignPublicKey>,
    /// When it stops being redeemable.
    pub expires_at: Millis,
    /// When it was redeemed.
    pub used_at: Option<Millis>,
    /// Who redeemed it. Set together with `used_at`, before the user is created, so a retry by
    /// the same key completes a registration that a crash interrupted.
    pub used_by: Option<SignPublicKey>,
    /// When it was cancelled.
    pub cancelled_at: Option<Millis>,
}

impl Invite {
    /// The status at time `now`. Used and cancelled are final; otherwise an invite is expired
    /// from `expires_at` on.
    pub fn status_at(&self, now: Millis) -> InviteStatus {
        if self.used_at.is_some() || self.used_by.is_some() {
            InviteStatus::Used
        } else if self.cancelled_at.is_some() {
            InviteStatus::Cancelled
        } else if now >= self.expires_at {
            InviteStatus::Expired
        } else {
            InviteStatus::Pending
        }
    }
}

/// What [`Store::create_invite`](super::Store::create_invite) creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvite {
    /// The admin creating it, if any.
    pub created_by: Option<SignPublicKey>,
    /// Whether the user it creates is an admin.
    pub admin: bool,
    /// How long it stays redeemable.
    pub ttl: std::time::Duration,
}

impl Default for NewInvite {
    fn default() -> Self {
        Self {
            created_by: None,
            admin: false,
            ttl: DEFAULT_INVITE_TTL,
        }
    }
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Its id.
    pub id: RoomId,
    /// Its owner, who rekeys it. The owner is a member from creation.
    pub owner: SignPublicKey,
    /// The latest key epoch; 0 until the first key is put.
    pub epoch: u64,
    /// When it was created.
    pub created_at: Millis,
}

/// A member's part of an epoch (protocol §8.4), with the epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPart {
    /// The epoch.
    pub epoch: u64,
    /// The part's wire form: `head || tail`, sent to the member as the `key` reply.
    pub part: Vec<u8>,
}

/// One history share of a room (protocol §16), as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredShare {
    /// The epoch whose key it holds.
    pub epoch: u64,
    /// The member it is sealed to.
    pub member: SignPublicKey,
    /// Its wire form, as uploaded (protocol §16.2).
    pub share: Vec<u8>,
}

/// One room's whole state in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    /// The room record, with its real epoch.
    pub room: Room,
    /// Its members, sorted.
    pub members: Vec<SignPublicKey>,
    /// Every epoch's signed manifest (hex of the wire form), by ascending epoch. The per-member
    /// sealed copies are the manifests' entries.
    pub manifests: Vec<(u64, String)>,
    /// Every history share (protocol §16): its epoch, its member and the hex of its wire form,
    /// by epoch, then member.
    #[serde(default)]
    pub history: Vec<(u64, SignPublicKey, String)>,
}

/// The whole control plane, backend-agnostic: what `migrate-to-kv` copies and parity tests
/// compare. Every list is sorted, so equal states give equal snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// All users, by signing key.
    pub users: Vec<User>,
    /// The keys of deleted users, by signing key: they stay deleted in the copy.
    #[serde(default)]
    pub deleted_users: Vec<DeletedUser>,
    /// All invites, by id.
    pub invites: Vec<Invite>,
    /// All rooms, by id.
    pub rooms: Vec<RoomSnapshot>,
}

impl Snapshot {
    /// Sorts every list into the canonical order.
    pub fn normalize(&mut self) {
        self.users.sort_by_key(|u| u.sign_key);
        self.deleted_users.sort_by_key(|u| u.sign_key);
        self.invites.sort_by(|a, b| a.id.cmp(&b.id));
        self.rooms.sort_by(|a, b| a.room.id.cmp(&b.room.id));
        for room in &mut self.rooms {
            room.members.sort();
            room.manifests.sort_by_key(|(epoch, _)| *epoch);
            room.history
                .sort_by_key(|(epoch, member, _)| (*epoch, *member));
        }
    }
}
