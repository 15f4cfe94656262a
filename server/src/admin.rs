//! The admin operations, one implementation for both ways in: the `membershipd` CLI on the
//! host and the signed admin API (`POST /admin`). What they are and how their params read is
//! the protocol's ([`unibus::protocol::admin`]); running them against the store is here.

use std::time::Duration;

use serde_json::{json, Value};
use unibus::{InviteLink, KexPublicKey, RoomId, SignPublicKey};

use crate::store::cached::IN_FORCE_EVERYWHERE;
use crate::store::{now_millis, NewInvite, NewUser, Store, StoreError};
pub use unibus::protocol::admin::{
    AdminOperation, AdminParamsError, DEFAULT_TTL_HOURS, MAX_TTL_HOURS, TTL_HOURS,
};

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

impl From<AdminParamsError> for OperationError {
    fn from(error: AdminParamsError) -> Self {
        match error {
            AdminParamsError::Unknown(name) => OperationError::Unknown(name),
            other => OperationError::BadInput(other.to_string()),
        }
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

/// Runs `operation`. `actor` is the admin behind it (recorded on invites), `None` for the CLI
/// on the host; `public_url` is the server base URL for invite links.
///
/// A revocation or a deletion returns only once it is in force on every membershipd sharing
/// the store, whichever process made it: it waits [`IN_FORCE_EVERYWHERE`] after the store took
/// it, the longest any instance's authorization cache may still answer from a copy made
/// before. From its return on, every instance refuses the user's logins and control-plane
/// requests.
pub async fn run(
    operation: AdminOperation,
    store: &dyn Store,
    public_url: &str,
    actor: Option<SignPublicKey>,
) -> Result<Value, OperationError> {
    Ok(match operation {
        AdminOperation::UserAdd {
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
        AdminOperation::UserList => json!(store.list_users().await?),
        AdminOperation::UserRevoke(key) => {
            store.revoke_user(&key).await?;
            tokio::time::sleep(IN_FORCE_EVERYWHERE).await;
            json!({ "revoked": key })
        }
        AdminOperation::UserDelete(key) => {
            store.delete_user(&key).await?;
            tokio::time::sleep(IN_FORCE_EVERYWHERE).await;
            json!({ "deleted": key })
        }
        AdminOperation::InviteCreate { admin, ttl_hours } => {
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
        AdminOperation::InviteList => {
            let now = now_millis();
            let invites = store.list_invites().await?;
            json!(invites
                .iter()
                .map(|i| json!({ "invite": i, "status": i.status_at(now) }))
                .collect::<Vec<_>>())
        }
        AdminOperation::InviteCancel(id) => {
            store.cancel_invite(&id).await?;
            json!({ "cancelled": id })
        }
        AdminOperation::RoomCreate { room, owner } => {
            json!(store.create_room(&room, &owner).await?)
        }
        AdminOperation::RoomAddMember { room, member } => {
            store.add_member(&room, &member).await?;
            json!({ "room": room, "added": member })
        }
        AdminOperation::RoomRemoveMember { room, member } => {
            store.remove_member(&room, &member).await?;
            json!({ "room": room, "removed": member })
        }
        AdminOperation::RoomList => json!(store.list_rooms().await?),
    })
}
