//! The JSON bodies as the client sends and reads them (docs/protocol.md §10 and §12).

use serde::{Deserialize, Serialize};

use super::error::SessionError;
use crate::{KexPublicKey, RoomId, SignPublicKey};

/// The body of every operation that names a room.
#[derive(Serialize)]
pub(crate) struct RoomRequest<'a> {
    pub room: &'a RoomId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<&'a SignPublicKey>,
}

impl<'a> RoomRequest<'a> {
    pub fn room(room: &'a RoomId) -> Self {
        Self {
            room,
            epoch: None,
            member: None,
        }
    }
}

/// The body of `rekey`.
#[derive(Serialize)]
pub(crate) struct RekeyRequest {
    /// The signed manifest's wire form in hex.
    pub manifest: String,
}

/// A room as replies describe it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct RoomReply {
    pub id: RoomId,
    pub owner: SignPublicKey,
    pub epoch: u64,
}

#[derive(Deserialize)]
pub(crate) struct RoomsReply {
    pub rooms: Vec<RoomReply>,
}

#[derive(Deserialize)]
pub(crate) struct MemberReply {
    pub member: bool,
}

#[derive(Deserialize)]
pub(crate) struct EpochReply {
    pub epoch: u64,
}

#[derive(Deserialize)]
pub(crate) struct KeyReply {
    pub epoch: u64,
    pub owner: SignPublicKey,
    pub sealed: String,
    pub manifest: String,
}

#[derive(Deserialize)]
pub(crate) struct MembersReply {
    pub members: Vec<MemberEntry>,
}

#[derive(Deserialize)]
pub(crate) struct MemberEntry {
    pub sign_public_key: SignPublicKey,
    pub kex_public_key: KexPublicKey,
}

/// `{}`: the reply of `add_member` and `remove_member`.
#[derive(Deserialize)]
pub(crate) struct Empty {}

/// A change notification (§12.6). Unknown kinds are skipped by the caller.
#[derive(Deserialize)]
pub(crate) struct Notification {
    pub room: RoomId,
    pub kind: String,
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// A refusal, over HTTP (protocol §10) and on the control plane (§12.3) alike.
#[derive(Deserialize)]
pub(crate) struct Refusal {
    pub error: RefusalDetail,
}

#[derive(Deserialize)]
pub(crate) struct RefusalDetail {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// Reads a reply: the operation's result, or the refusal it carries.
pub(crate) fn parse_reply<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, SessionError> {
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| SessionError::InvalidReply(format!("not JSON: {e}")))?;
    if value.get("error").is_some() {
        let refusal: Refusal = serde_json::from_value(value)
            .map_err(|e| SessionError::InvalidReply(format!("unreadable refusal: {e}")))?;
        return Err(SessionError::from_refusal(
            &refusal.error.code,
            refusal.error.message,
        ));
    }
    serde_json::from_value(value).map_err(|e| SessionError::InvalidReply(e.to_string()))
}
