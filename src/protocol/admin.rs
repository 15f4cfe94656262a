//! `POST /admin`, the signed admin API (protocol §13): the request body and the operations
//! with their params. The body's signature is [`crate::admin`]. The server runs the same
//! [`AdminOperation`]s for its CLI on the host.

use serde_json::{json, Value};

use super::json::{JsonError, Object};
use crate::{KexPublicKey, RoomId, SignPublicKey};

/// The fields of an admin request body.
const FIELDS: &[&str] = &["admin", "timestamp", "nonce", "operation", "params"];

/// An admin request body as read, before any check of what it says (protocol §13).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminBody {
    /// The admin's signing key, as sent.
    pub admin: String,
    /// Unix milliseconds, as sent.
    pub timestamp: i64,
    /// The nonce, as sent.
    pub nonce: String,
    /// The operation's name.
    pub operation: String,
    /// The operation's params: an object, or `None` when left out.
    pub params: Option<Value>,
}

impl AdminBody {
    /// Reads an admin request body strictly ([`super::json`]): one JSON object with the
    /// fields of [`AdminBody`], each of its type, nothing else. Errors name fields, never
    /// values. What the fields say (key, signature, freshness, nonce) the server checks next.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JsonError> {
        let mut request = Object::parse(bytes, FIELDS)?;
        Ok(AdminBody {
            admin: request.str("admin")?,
            timestamp: request.i64("timestamp", "a whole number of Unix milliseconds")?,
            nonce: request.str("nonce")?,
            operation: request.str("operation")?,
            params: request.optional_object("params")?,
        })
    }
}

/// An admin operation with its arguments (protocol §13.2): what `POST /admin` names in
/// `operation` and `params`, and what the server's CLI runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOperation {
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
        /// Hours until it expires, in [`TTL_HOURS`].
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

/// Why `operation` and `params` are not an [`AdminOperation`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminParamsError {
    /// There is no operation by this name (`unknown_operation`).
    #[error("no admin operation {0:?}")]
    Unknown(String),
    /// A param is missing, unknown, of the wrong type or out of range (`bad_request`); the
    /// message names the param.
    #[error("{0}")]
    BadParams(String),
}

impl From<JsonError> for AdminParamsError {
    fn from(error: JsonError) -> Self {
        AdminParamsError::BadParams(error.to_string())
    }
}

/// The default invite lifetime in hours (7 days).
pub const DEFAULT_TTL_HOURS: u64 = 168;

/// The longest invite lifetime in hours (365 days). An invite lives at least 1 hour.
pub const MAX_TTL_HOURS: u64 = 8760;

/// The accepted invite lifetimes, in hours.
pub const TTL_HOURS: std::ops::RangeInclusive<u64> = 1..=MAX_TTL_HOURS;

/// Each operation's name and the params it takes (protocol §13.2).
pub const OPERATIONS: &[(&str, &[&str])] = &[
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

fn bad(error: impl std::fmt::Display) -> AdminParamsError {
    AdminParamsError::BadParams(error.to_string())
}

impl AdminOperation {
    /// The operation the admin API names `name`, with its `params` (an object, or `None` when
    /// the request has none). Params are read strictly ([`super::json`]): a param the operation
    /// does not take, a wrong type, a `null` or a number out of range is
    /// [`AdminParamsError::BadParams`], never a default.
    pub fn from_json(name: &str, params: Option<Value>) -> Result<Self, AdminParamsError> {
        let Some(&(name, allowed)) = OPERATIONS.iter().find(|(known, _)| *known == name) else {
            return Err(AdminParamsError::Unknown(name.to_string()));
        };
        let mut params = match params {
            None => Object::default(),
            Some(value) => Object::from_value(value, "params", allowed)?,
        };
        let p = &mut params;
        let sign_key = |text: String| SignPublicKey::from_hex(&text).map_err(bad);
        let room_id = |text: String| RoomId::new(&text).map_err(bad);
        Ok(match name {
            "user.add" => AdminOperation::UserAdd {
                sign_key: sign_key(p.str("sign_public_key")?)?,
                kex_key: KexPublicKey::from_hex(&p.str("kex_public_key")?).map_err(bad)?,
                admin: p.optional_bool("admin")?.unwrap_or(false),
            },
            "user.list" => AdminOperation::UserList,
            "user.revoke" => AdminOperation::UserRevoke(sign_key(p.str("sign_public_key")?)?),
            "user.delete" => AdminOperation::UserDelete(sign_key(p.str("sign_public_key")?)?),
            "invite.create" => AdminOperation::InviteCreate {
                admin: p.optional_bool("admin")?.unwrap_or(false),
                ttl_hours: p
                    .optional_u64(
                        "ttl_hours",
                        TTL_HOURS,
                        "a whole number of hours from 1 to 8760",
                    )?
                    .unwrap_or(DEFAULT_TTL_HOURS),
            },
            "invite.list" => AdminOperation::InviteList,
            "invite.cancel" => AdminOperation::InviteCancel(p.str("id")?),
            "room.create" => AdminOperation::RoomCreate {
                room: room_id(p.str("room")?)?,
                owner: sign_key(p.str("owner")?)?,
            },
            "room.add_member" => AdminOperation::RoomAddMember {
                room: room_id(p.str("room")?)?,
                member: sign_key(p.str("member")?)?,
            },
            "room.remove_member" => AdminOperation::RoomRemoveMember {
                room: room_id(p.str("room")?)?,
                member: sign_key(p.str("member")?)?,
            },
            "room.list" => AdminOperation::RoomList,
            // Every name in OPERATIONS has an arm above.
            _ => return Err(AdminParamsError::Unknown(name.to_string())),
        })
    }

    /// The operation's name on the wire (`user.add`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            AdminOperation::UserAdd { .. } => "user.add",
            AdminOperation::UserList => "user.list",
            AdminOperation::UserRevoke(_) => "user.revoke",
            AdminOperation::UserDelete(_) => "user.delete",
            AdminOperation::InviteCreate { .. } => "invite.create",
            AdminOperation::InviteList => "invite.list",
            AdminOperation::InviteCancel(_) => "invite.cancel",
            AdminOperation::RoomCreate { .. } => "room.create",
            AdminOperation::RoomAddMember { .. } => "room.add_member",
            AdminOperation::RoomRemoveMember { .. } => "room.remove_member",
            AdminOperation::RoomList => "room.list",
        }
    }

    /// The operation's `params` object, as a client sends it ([`from_json`](Self::from_json)
    /// reads it back to the same operation).
    pub fn params(&self) -> Value {
        match self {
            AdminOperation::UserAdd {
                sign_key,
                kex_key,
                admin,
            } => json!({
                "sign_public_key": sign_key.to_hex(),
                "kex_public_key": kex_key.to_hex(),
                "admin": admin,
            }),
            AdminOperation::UserRevoke(key) | AdminOperation::UserDelete(key) => {
                json!({ "sign_public_key": key.to_hex() })
            }
            AdminOperation::InviteCreate { admin, ttl_hours } => {
                json!({ "admin": admin, "ttl_hours": ttl_hours })
            }
            AdminOperation::InviteCancel(id) => json!({ "id": id }),
            AdminOperation::RoomCreate { room, owner } => {
                json!({ "room": room.as_str(), "owner": owner.to_hex() })
            }
            AdminOperation::RoomAddMember { room, member }
            | AdminOperation::RoomRemoveMember { room, member } => {
                json!({ "room": room.as_str(), "member": member.to_hex() })
            }
            AdminOperation::UserList | AdminOperation::InviteList | AdminOperation::RoomList => {
                json!({})
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn every_admin_operation_round_trips_through_its_name_and_params() {
        let someone = Identity::generate().unwrap();
        let (sign, kex) = (someone.sign_public_key(), someone.kex_public_key());
        let room = RoomId::new("general").unwrap();
        let all = [
            AdminOperation::UserAdd {
                sign_key: sign,
                kex_key: kex,
                admin: true,
            },
            AdminOperation::UserList,
            AdminOperation::UserRevoke(sign),
            AdminOperation::UserDelete(sign),
            AdminOperation::InviteCreate {
                admin: false,
                ttl_hours: MAX_TTL_HOURS,
            },
            AdminOperation::InviteList,
            AdminOperation::InviteCancel("0123abcd".into()),
            AdminOperation::RoomCreate {
                room: room.clone(),
                owner: sign,
            },
            AdminOperation::RoomAddMember {
                room: room.clone(),
                member: sign,
            },
            AdminOperation::RoomRemoveMember { room, member: sign },
            AdminOperation::RoomList,
        ];
        assert_eq!(all.len(), OPERATIONS.len(), "one case per operation");
        for operation in all {
            let read = AdminOperation::from_json(operation.name(), Some(operation.params()));
            assert_eq!(read.as_ref(), Ok(&operation));
            let listed = OPERATIONS
                .iter()
                .find(|(name, _)| *name == operation.name());
            let params = operation.params();
            let sent: Vec<&str> = params
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert!(
                sent.iter().all(|p| listed.unwrap().1.contains(p)),
                "{sent:?}"
            );
        }
    }

    #[test]
    fn unknown_operations_and_bad_params_are_refused_by_name() {
        assert_eq!(
            AdminOperation::from_json("user.promote", None),
            Err(AdminParamsError::Unknown("user.promote".into()))
        );
        let refused = AdminOperation::from_json("invite.create", Some(json!({ "ttl_hours": 0 })));
        assert!(matches!(refused, Err(AdminParamsError::BadParams(m)) if m.contains("ttl_hours")));
        let extra = AdminOperation::from_json("user.list", Some(json!({ "all": true })));
        assert!(matches!(extra, Err(AdminParamsError::BadParams(_))));
        assert_eq!(
            AdminOperation::from_json("invite.create", None),
            Ok(AdminOperation::InviteCreate {
                admin: false,
                ttl_hours: DEFAULT_TTL_HOURS
            })
        );
    }
}
