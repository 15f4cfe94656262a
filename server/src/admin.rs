//! The admin operations, one implementation for both ways in: the `membershipd` CLI on the
//! host and the signed admin API (`POST /admin`).

use std::time::Duration;

use serde_json::{json, Value};
use unibus::{InviteLink, KexPublicKey, RoomId, SignPublicKey};

use crate::store::{now_millis, NewInvite, NewUser, Store, StoreError};
use unibus::protocol::json::{JsonError, Object};

/// An admin operation with its parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `user.add`: add a user by their public keys.
    UserAdd {
        /// ed25519 key.
        sign_key: SignPublicKey,
        /// x25519 key.
        kex_key: KexPublicKey,
        /// Whether the user is an admin.
        admin: bool,
    },
    /// `user.list`.
    UserList,
    /// `user.revoke`: the user can no longer log in; the record stays.
    UserRevoke(SignPublicKey),
    /// `user.delete`: the record goes and the key is retired for good (it can never register,
    /// be added or log in again).
    UserDelete(SignPublicKey),
    /// `invite.create`: a single-use invite; the result carries its link, shown once.
    InviteCreate {
        /// Whether the user it creates is an admin.
        admin: bool,
        /// Hours until it expires.
        ttl_hours: u64,
    },
    /// `invite.list`, with each invite's status.
    InviteList,
    /// `invite.cancel`.
    InviteCancel(String),
    /// `room.create`.
    RoomCreate {
        /// The room.
        room: RoomId,
        /// Its owner.
        owner: SignPublicKey,
    },
    /// `room.add_member`.
    RoomAddMember {
        /// The room.
        room: RoomId,
        /// The member.
        member: SignPublicKey,
    },
    /// `room.remove_member`.
    RoomRemoveMember {
        /// The room.
        room: RoomId,
        /// The member.
        member: SignPublicKey,
    },
    /// `room.list`.
    RoomList,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    /// There is no operation by this name.
    #[error("no operation {0:?}")]
    Unknown(String),
    /// An argument is missing or malformed.
    #[error("{0}")]
    BadInput(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server's configuration cannot serve the operation (e.g. a public URL that cannot
    /// carry invite links).
    #[error("{0}")]
    Misconfigured(String),
}

/// The default invite lifetime in hours (7 days).
pub const DEFAULT_TTL_HOURS: u64 = 168;

/// The longest invite lifetime in hours (365 days). An invite lives at least 1 hour.
pub const MAX_TTL_HOURS: u64 = 8760;

/// The accepted invite lifetimes, in hours.
pub const TTL_HOURS: std::ops::RangeInclusive<u64> = 1..=MAX_TTL_HOURS;

impl From<JsonError> for OperationError {
    fn from(error: JsonError) -> Self {
        OperationError::BadInput(error.to_string())
    }
}

/// Parses a signing key argument.
pub fn sign_key(text: &str) -> Result<SignPublicKey, OperationError> {
    SignPublicKey::from_hex(text).map_err(|e| OperationError::BadInput(e.to_string()))
}

/// Parses a key-exchange key argument.
pub fn kex_key(text: &str) -> Result<KexPublicKey, OperationError> {
    KexPublicKey::from_hex(text).map_err(|e| OperationError::BadInput(e.to_string()))
}

/// Parses a room id argument.
pub fn room_id(text: &str) -> Result<RoomId, OperationError> {
    RoomId::new(text).map_err(|e| OperationError::BadInput(e.to_string()))
}

/// Each operation's name and the params it takes.
const PARAMS: &[(&str, &[&str])] = &[
    ("user.add", &["sign_public_key", "kex_public_key", "admin"]),
    ("user.list", &[]),
    ("user.revoke", &["sign_public_key"]),
    ("user.delete", &["sign_public_key"]),
    ("invite.create", &["admin", "ttl_hours"]),
    ("invite.list", &[]),
    ("invite.cancel", &["id"]),
    ("room.create", &["room", "owner"]),
    ("room.add_member", &["room", "member"]),
    ("room.remove_member", &["room", "member"]),
    ("room.list", &[]),
];

impl Operation {
    /// The operation the admin API names `name`, with its `params` (an object, or `None` when
    /// the request has none). Params are read strictly ([`unibus::protocol::json`]): a param the operation
    /// does not take, a wrong type, a `null` or a number out of range is
    /// [`OperationError::BadInput`], never a default.
    pub fn from_json(name: &str, params: Option<Value>) -> Result<Self, OperationError> {
        let Some(&(name, allowed)) = PARAMS.iter().find(|(known, _)| *known == name) else {
            return Err(OperationError::Unknown(name.to_string()));
        };
        let mut params = match params {
            None => Object::default(),
            Some(value) => Object::from_value(value, "params", allowed)?,
        };
        let p = &mut params;
        Ok(match name {
            "user.add" => Operation::UserAdd {
                sign_key: sign_key(&p.str("sign_public_key")?)?,
                kex_key: kex_key(&p.str("kex_public_key")?)?,
                admin: p.optional_bool("admin")?.unwrap_or(false),
            },
            "user.list" => Operation::UserList,
            "user.revoke" => Operation::UserRevoke(sign_key(&p.str("sign_public_key")?)?),
            "user.delete" => Operation::UserDelete(sign_key(&p.str("sign_public_key")?)?),
            "invite.create" => Operation::InviteCreate {
                admin: p.optional_bool("admin")?.unwrap_or(false),
                ttl_hours: p
                    .optional_u64(
                        "ttl_hours",
                        TTL_HOURS,
                        "a whole number of hours from 1 to 8760",
                    )?
                    .unwrap_or(DEFAULT_TTL_HOURS),
            },
            "invite.list" => Operation::InviteList,
            "invite.cancel" => Operation::InviteCancel(p.str("id")?),
            "room.create" => Operation::RoomCreate {
                room: room_id(&p.str("room")?)?,
                owner: sign_key(&p.str("owner")?)?,
            },
            "room.add_member" => Operation::RoomAddMember {
                room: room_id(&p.str("room")?)?,
                member: sign_key(&p.str("member")?)?,
            },
            "room.remove_member" => Operation::RoomRemoveMember {
                room: room_id(&p.str("room")?)?,
                member: sign_key(&p.str("member")?)?,
            },
            "room.list" => Operation::RoomList,
            // Every name in PARAMS has an arm above.
            _ => return Err(OperationError::Unknown(name.to_string())),
        })
    }

    /// Runs the operation. `actor` is the admin behind it (recorded on invites), `None` for
    /// the CLI on the host; `public_url` is the server base URL for invite links.
    pub async fn run(
        self,
        store: &dyn Store,
        public_url: &str,
        actor: Option<SignPublicKey>,
    ) -> Result<Value, OperationError> {
        Ok(match self {
            Operation::UserAdd {
                sign_key,
                kex_key,
                admin,
            } => {
                json!(
                    store
                        .add_user(NewUser {
                            sign_key,
                            kex_key,
                            admin
                        })
                        .await?
                )
            }
            Operation::UserList => json!(store.list_users().await?),
            Operation::UserRevoke(key) => {
                store.revoke_user(&key).await?;
                json!({ "revoked": key })
            }
            Operation::UserDelete(key) => {
                store.delete_user(&key).await?;
                json!({ "deleted": key })
            }
            Operation::InviteCreate { admin, ttl_hours } => {
                if !TTL_HOURS.contains(&ttl_hours) {
                    return Err(OperationError::BadInput(format!(
                        "an invite lives 1 to {MAX_TTL_HOURS} hours, not {ttl_hours}"
                    )));
                }
                let (token, invite) = store
                    .create_invite(NewInvite {
                        created_by: actor,
                        admin,
                        ttl: Duration::from_secs(ttl_hours.saturating_mul(3600)),
                    })
                    .await?;
                let link = InviteLink::new(public_url, token).map_err(|e| {
                    OperationError::Misconfigured(format!(
                        "the public URL {public_url} cannot carry invite links: {e}"
                    ))
                })?;
                json!({ "invite": invite, "link": link.to_string() })
            }
            Operation::InviteList => {
                let now = now_millis();
                let invites = store.list_invites().await?;
                json!(invites
                    .iter()
                    .map(|i| json!({ "invite": i, "status": i.status_at(now) }))
                    .collect::<Vec<_>>())
            }
            Operation::InviteCancel(id) => {
                store.cancel_invite(&id).await?;
                json!({ "cancelled": id })
            }
            Operation::RoomCreate { room, owner } => json!(store.create_room(&room, &owner).await?),
            Operation::RoomAddMember { room, member } => {
                store.add_member(&room, &member).await?;
                json!({ "room": room, "added": member })
            }
            Operation::RoomRemoveMember { room, member } => {
                store.remove_member(&room, &member).await?;
                json!({ "room": room, "removed": member })
            }
            Operation::RoomList => json!(store.list_rooms().await?),
        })
    }
}
