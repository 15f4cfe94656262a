//! The control plane (protocol §12): the operations, one request and one reply type each, and
//! how a reply or a refusal travels.
//!
//! A client sends `R: `[`Request`] as JSON to [`Operation::subject`]`(caller)` and reads the
//! answer with [`read_reply::<R::Reply>`](read_reply); the server reads `R` from the body and
//! answers with [`encode_reply`]. Replies are JSON ([`ReplyBody`] through serde), except the
//! `key` reply: the caller's member part in its binary wire form (§12.4), so that what a member
//! fetches for a key stays under a kilobyte in a room of any size. A refusal is always the
//! JSON error envelope.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::codes::{ErrorEnvelope, Refusal, RefusalCode};
use crate::{KexPublicKey, RoomId, SignPublicKey};

/// Every control-plane operation (protocol §12.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// The caller's rooms.
    Rooms,
    /// Whether the caller is a member of a room.
    Member,
    /// A room's latest epoch.
    Epoch,
    /// The caller's member part of an epoch: the signed header, its entry and inclusion proof.
    Key,
    /// Creates a room owned by the caller.
    CreateRoom,
    /// A room's active members with their keys (owner only).
    Members,
    /// Adds a member (owner only).
    AddMember,
    /// Removes a member (owner only).
    RemoveMember,
    /// Uploads a new epoch in one message (owner only).
    Rekey,
    /// Starts a chunked upload of a new epoch with its signed head (owner only).
    RekeyBegin,
    /// Adds entries to a chunked upload, on the instance that began it.
    RekeyPart,
    /// Commits a chunked upload as the new epoch, on the instance that began it.
    RekeyCommit,
    /// Stores a message envelope in its room (§15.2). Its body is the envelope, not JSON.
    Send,
    /// One page of a room's stored envelopes (§15.3). Members only.
    Messages,
    /// Stores history shares of earlier epochs for current members (§16.5; owner only).
    ShareHistory,
    /// Leases live copies of rooms the caller's login cannot subscribe to itself (§15.4):
    /// served by any instance, and renewed on the instance that holds the lease.
    Listen,
}

impl Operation {
    /// Every operation, in the order of the protocol's table. The server serves exactly these.
    pub const ALL: [Operation; 16] = [
        Operation::Rooms,
        Operation::Member,
        Operation::Epoch,
        Operation::Key,
        Operation::CreateRoom,
        Operation::Members,
        Operation::AddMember,
        Operation::RemoveMember,
        Operation::Rekey,
        Operation::RekeyBegin,
        Operation::RekeyPart,
        Operation::RekeyCommit,
        Operation::Send,
        Operation::Messages,
        Operation::ShareHistory,
        Operation::Listen,
    ];

    /// The operation's name: the last token of its subject.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Rooms => "rooms",
            Operation::Member => "member",
            Operation::Epoch => "epoch",
            Operation::Key => "key",
            Operation::CreateRoom => "create_room",
            Operation::Members => "members",
            Operation::AddMember => "add_member",
            Operation::RemoveMember => "remove_member",
            Operation::Rekey => "rekey",
            Operation::RekeyBegin => "rekey_begin",
            Operation::RekeyPart => "rekey_part",
            Operation::RekeyCommit => "rekey_commit",
            Operation::Send => "send",
            Operation::Messages => "messages",
            Operation::ShareHistory => "share_history",
            Operation::Listen => "listen",
        }
    }

    /// The operation named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Whether the operation only reads (the server may then check the caller and read at once).
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Operation::Rooms
                | Operation::Member
                | Operation::Epoch
                | Operation::Key
                | Operation::Messages
        )
    }

    /// `unibus.cp.<caller hex>.<name>`: where `caller` sends this operation.
    pub fn subject(self, caller: &SignPublicKey) -> String {
        format!("{}.{}", crate::subjects::requests(caller), self.name())
    }

    /// `unibus.cp.*.<name>`: where the service listens for it, from every caller.
    pub fn service_subject(self) -> String {
        format!("{}.*.{}", crate::subjects::REQUEST_PREFIX, self.name())
    }

    /// Whether requests go to one membershipd instance, named by a last subject token: the
    /// steps of a chunked upload after the first, which that instance holds (§12.5).
    pub fn is_instance_bound(self) -> bool {
        matches!(self, Operation::RekeyPart | Operation::RekeyCommit)
    }

    /// Whether requests may go either to any instance or to one named by a last subject
    /// token: `listen`, whose leases live on the instance that granted them (§15.4).
    pub fn may_name_instance(self) -> bool {
        matches!(self, Operation::Listen)
    }

    /// `unibus.cp.*.<name>.<instance>`: where one instance listens for an instance-bound
    /// operation, from every caller.
    pub fn instance_subject(self, instance: &str) -> String {
        format!("{}.{instance}", self.service_subject())
    }
}

/// A request body, which knows its operation and its reply.
pub trait Request: Serialize + DeserializeOwned {
    /// The operation it is the body of.
    const OPERATION: Operation;
    /// What a successful reply carries.
    type Reply: ReplyBody;

    /// Where `caller` sends it: [`Operation::subject`], and for an instance-bound operation
    /// the instance's token after it.
    fn subject(&self, caller: &SignPublicKey) -> String {
        Self::OPERATION.subject(caller)
    }
}

/// How a successful reply travels: its bytes, and reading them back.
pub trait ReplyBody: Sized {
    /// The reply's bytes.
    fn to_body(&self) -> Vec<u8>;
    /// Reads a reply from its bytes.
    fn from_body(body: &[u8]) -> Result<Self, MalformedReply>;
}

/// [`ReplyBody`] as JSON, for reply types that are serde types.
macro_rules! json_replies {
    ($($reply:ty),+ $(,)?) => {
        $(impl ReplyBody for $reply {
            fn to_body(&self) -> Vec<u8> {
                // The protocol's types hold only strings, numbers, booleans and lists.
                serde_json::to_vec(self).expect("protocol replies serialize to JSON")
            }

            fn from_body(body: &[u8]) -> Result<Self, MalformedReply> {
                serde_json::from_slice(body).map_err(MalformedReply::Json)
            }
        })+
    };
}

/// A room as replies describe it (§12.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    /// The room id.
    pub id: RoomId,
    /// The owner's signing key: the only key allowed to rekey the room.
    pub owner: SignPublicKey,
    /// The latest epoch; 0 before the first key.
    pub epoch: u64,
}

/// A member with the keys it registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberKeys {
    /// The member's signing key.
    pub sign_public_key: SignPublicKey,
    /// The member's registered x25519 key.
    pub kex_public_key: KexPublicKey,
}

/// `{}`: a request or reply with no fields. Any fields received are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `rooms`: one page of the caller's rooms, sorted by id (§12.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsRequest {
    /// Only rooms after this id: the `next` of the page before. `None` for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<RoomId>,
    /// The most rooms wanted in this page; the server may send fewer (it fills at most one
    /// message). `None` for as many as fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The reply of `rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomsReply {
    /// The rooms the caller is a member of, sorted by id.
    pub rooms: Vec<RoomRecord>,
    /// Set when more rooms follow: the `after` of the next page (the last id of this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<RoomId>,
}

/// A request that names only a room: `member`, `epoch`, `create_room`.
macro_rules! room_request {
    ($(#[$meta:meta])* $name:ident => $operation:ident, $reply:ty) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            /// The room.
            pub room: RoomId,
        }

        impl Request for $name {
            const OPERATION: Operation = Operation::$operation;
            type Reply = $reply;
        }
    };
}

room_request!(
    /// `member`: whether the caller is a member of `room` (`false` for a room that does not exist).
    MemberRequest => Member, MemberReply
);
room_request!(
    /// `epoch`: the room's latest epoch. Members only.
    EpochRequest => Epoch, EpochReply
);
room_request!(
    /// `create_room`: creates `room`, owned by the caller. The reply is the room itself.
    CreateRoomRequest => CreateRoom, RoomRecord
);
/// `members`: one page of the room's active members with their registered keys, sorted by
/// signing key (§12.2). Owner only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersRequest {
    /// The room.
    pub room: RoomId,
    /// Only members after this key: the `next` of the page before. `None` for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<SignPublicKey>,
    /// The most members wanted in this page; the server may send fewer (it fills at most one
    /// message). `None` for as many as fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Request for MembersRequest {
    const OPERATION: Operation = Operation::Members;
    type Reply = MembersReply;
}

/// The reply of `member`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReply {
    /// Whether the caller is a member.
    pub member: bool,
}

/// The reply of `epoch` and of `rekey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochReply {
    /// The epoch.
    pub epoch: u64,
}

/// `key`: the caller's sealed copy of the room key at `epoch`, or at the latest epoch when
/// `epoch` is `None` (sent as absent; `null` reads the same). Members only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    /// The room.
    pub room: RoomId,
    /// The epoch, or `None` for the latest. At most [`MAX_EPOCH`](crate::manifest::MAX_EPOCH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// The reply of `key` (§12.4), in its binary wire form, as the body itself: the caller's member
/// part (§8.4, first byte 0x02), or, for an explicit epoch the caller was not a recipient of, a
/// history share the owner stored for it (§16.2, first byte 0x01). The client tells them apart
/// by the first byte, then decodes and verifies ([`MemberPart`](crate::manifest::MemberPart),
/// [`HistoryShare`](crate::history::HistoryShare)); the server sends the stored bytes without
/// decoding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReply {
    /// The member part's or the history share's wire form.
    pub part: Vec<u8>,
}

impl ReplyBody for KeyReply {
    fn to_body(&self) -> Vec<u8> {
        self.part.clone()
    }

    fn from_body(body: &[u8]) -> Result<Self, MalformedReply> {
        // A member part starts with its version byte; a JSON body would start with `{`.
        if body.first() == Some(&b'{') || body.is_empty() {
            return Err(MalformedReply::NotBinary);
        }
        Ok(KeyReply {
            part: body.to_vec(),
        })
    }
}

/// The reply of `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReply {
    /// The active members, the owner included, sorted by signing key.
    pub members: Vec<MemberKeys>,
    /// Set when more members follow: the `after` of the next page (the last key of this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<SignPublicKey>,
}

/// `add_member` and `remove_member`: who joins or leaves `room`. Owner only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    /// The room.
    pub room: RoomId,
    /// The member's signing key.
    pub member: SignPublicKey,
}

/// `add_member`: adds an active user to the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AddMemberRequest(pub MemberChange);

/// `remove_member`: removes a member (not the owner) from the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RemoveMemberRequest(pub MemberChange);

/// `rekey`: a new epoch's whole signed manifest (§8.3), hex. The reply is the new epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyRequest {
    /// The signed manifest's wire form, hex.
    pub manifest: String,
}

/// `share_history`: history shares (§16.2), hex, of earlier epochs of `room`, each for a current
/// member. Owner only; at most [`MAX_SHARES_PER_REQUEST`] of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareHistoryRequest {
    /// The room.
    pub room: RoomId,
    /// The shares' wire forms, hex.
    pub shares: Vec<String>,
}

/// The most shares one `share_history` request may carry. A share of the longest room id is
/// 489 bytes, 978 hex characters, so 1,000 of them fit in a cluster message of 1 MiB.
pub const MAX_SHARES_PER_REQUEST: usize = 1_000;

impl Request for ShareHistoryRequest {
    const OPERATION: Operation = Operation::ShareHistory;
    type Reply = Empty;
}

/// `rekey_begin`: starts a chunked upload of a new epoch (§12.5) with its signed head. Owner
/// only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyBeginRequest {
    /// `header || signature` (§8.3), hex.
    pub head: String,
}

/// The reply of `rekey_begin`: the upload's id, and the instance that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyBeginReply {
    /// The upload's id (hex).
    pub upload: String,
    /// The token of the membershipd instance that holds the upload (1 to 32 lowercase hex
    /// characters): the last token of the subjects of `rekey_part` and `rekey_commit`.
    pub instance: String,
}

impl RekeyBeginReply {
    /// Whether `instance` is a token a client may put in a subject: lowercase hex, 1 to 32
    /// characters. A client refuses any other (a server must not steer its requests).
    pub fn instance_is_valid(&self) -> bool {
        is_instance_token(&self.instance)
    }
}

/// Whether `instance` is a token a client may put in a subject: lowercase hex, 1 to 32
/// characters. A client refuses any other instance a reply names (a server must not steer its
/// requests).
pub fn is_instance_token(instance: &str) -> bool {
    (1..=32).contains(&instance.len())
        && instance
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `rekey_part`: the manifest's entries from index `first` on, in order (§12.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyPartRequest {
    /// The upload's id.
    pub upload: String,
    /// The instance that holds it (the subject's last token).
    pub instance: String,
    /// The index of the first entry in `entries`: the number received so far.
    pub first: u32,
    /// Whole entries (§8.1, 145 bytes each), hex.
    pub entries: String,
}

/// The reply of `rekey_part`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyPartReply {
    /// How many entries the upload holds now.
    pub received: u32,
}

/// `rekey_commit`: checks the whole upload and stores it as the new epoch (§12.5). The reply is
/// the new epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyCommitRequest {
    /// The upload's id.
    pub upload: String,
    /// The instance that holds it (the subject's last token).
    pub instance: String,
}

impl Request for RekeyBeginRequest {
    const OPERATION: Operation = Operation::RekeyBegin;
    type Reply = RekeyBeginReply;
}

impl Request for RekeyPartRequest {
    const OPERATION: Operation = Operation::RekeyPart;
    type Reply = RekeyPartReply;

    fn subject(&self, caller: &SignPublicKey) -> String {
        format!("{}.{}", Self::OPERATION.subject(caller), self.instance)
    }
}

impl Request for RekeyCommitRequest {
    const OPERATION: Operation = Operation::RekeyCommit;
    type Reply = EpochReply;

    fn subject(&self, caller: &SignPublicKey) -> String {
        format!("{}.{}", Self::OPERATION.subject(caller), self.instance)
    }
}

impl Request for RoomsRequest {
    const OPERATION: Operation = Operation::Rooms;
    type Reply = RoomsReply;
}

impl Request for KeyRequest {
    const OPERATION: Operation = Operation::Key;
    type Reply = KeyReply;
}

impl Request for AddMemberRequest {
    const OPERATION: Operation = Operation::AddMember;
    type Reply = Empty;
}

impl Request for RemoveMemberRequest {
    const OPERATION: Operation = Operation::RemoveMember;
    type Reply = Empty;
}

impl Request for RekeyRequest {
    const OPERATION: Operation = Operation::Rekey;
    type Reply = EpochReply;
}

json_replies!(
    super::messages::SendReply,
    super::messages::ListenReply,
    RekeyBeginReply,
    RekeyPartReply,
    RoomsReply,
    MemberReply,
    EpochReply,
    RoomRecord,
    MembersReply,
    Empty
);

/// Why a reply could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedReply {
    /// The body is not the JSON the operation replies with.
    #[error("the reply is not the protocol's JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The body of a binary reply (`key`) is empty or JSON that is not a refusal.
    #[error("the reply is not a member part")]
    NotBinary,
    /// A binary reply or message (`messages`, a live message) does not decode; the text says
    /// where.
    #[error("the reply is malformed: {0}")]
    Binary(String),
}

/// Reads a reply: `Ok(Ok(reply))`, `Ok(Err(refusal))` for a refusal, or why it is neither. A
/// refusal is a JSON object with an `error` member, whatever the operation.
pub fn read_reply<T: ReplyBody>(payload: &[u8]) -> Result<Result<T, Refusal>, MalformedReply> {
    if payload.first() == Some(&b'{') {
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(MalformedReply::Json)?;
        if value.get("error").is_some() {
            // A malformed refusal is malformed, never read as a success.
            let envelope: ErrorEnvelope<RefusalCode> =
                serde_json::from_value(value).map_err(MalformedReply::Json)?;
            return Ok(Err(envelope.error));
        }
    }
    T::from_body(payload).map(Ok)
}

/// Reads a request body: empty (read as `{}`) or one JSON object. Any other JSON value (an
/// array in field order included) is refused, and so is an object that names a field twice, at
/// any depth (as the HTTP API does, §10 and §13: which of the two would count is not left to
/// chance); fields the operation does not take are ignored.
pub fn read_request<R: Request>(body: &[u8]) -> Result<R, Refusal> {
    let bad = |message: String| Refusal::new(RefusalCode::BadRequest, message);
    let value: serde_json::Value = if body.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(body).map_err(|e| bad(format!("malformed request: {e}")))?
    };
    if !value.is_object() {
        return Err(bad("the body must be a JSON object".into()));
    }
    if super::json::names_a_field_twice(body) {
        return Err(bad("a field appears more than once in an object".into()));
    }
    serde_json::from_value(value).map_err(|e| bad(format!("malformed request: {e}")))
}

/// The bytes of a reply: the result itself, or the refusal in its envelope.
pub fn encode_reply<T: ReplyBody>(reply: &Result<T, Refusal>) -> Vec<u8> {
    match reply {
        Ok(result) => result.to_body(),
        // An envelope of a code and a message always serializes.
        Err(refusal) => serde_json::to_vec(&ErrorEnvelope {
            error: refusal.clone(),
        })
        .expect("error envelopes serialize to JSON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = serde_json::to_vec(&value).unwrap();
        assert_eq!(serde_json::from_slice::<T>(&bytes).unwrap(), value);
    }

    #[test]
    fn every_operation_has_one_name_and_subject() {
        let me = crate::Identity::generate().unwrap().sign_public_key();
        for op in Operation::ALL {
            assert_eq!(Operation::from_name(op.name()), Some(op));
            assert_eq!(
                op.subject(&me),
                format!("unibus.cp.{}.{}", me.to_hex(), op.name())
            );
        }
        assert_eq!(Operation::from_name("fly"), None);
    }

    #[test]
    fn every_request_and_reply_round_trips() {
        let room = RoomId::new("general").unwrap();
        let id = crate::Identity::generate().unwrap();
        let (sign, kex) = (id.sign_public_key(), id.kex_public_key());
        let record = RoomRecord {
            id: room.clone(),
            owner: sign,
            epoch: 3,
        };
        round_trip(RoomsRequest::default());
        round_trip(RoomsRequest {
            after: Some(room.clone()),
            limit: Some(10),
        });
        round_trip(RoomsReply {
            rooms: vec![record.clone()],
            next: None,
        });
        round_trip(RoomsReply {
            rooms: vec![record.clone()],
            next: Some(room.clone()),
        });
        round_trip(MemberRequest { room: room.clone() });
        round_trip(MemberReply { member: true });
        round_trip(EpochRequest { room: room.clone() });
        round_trip(EpochReply { epoch: 7 });
        round_trip(KeyRequest {
            room: room.clone(),
            epoch: Some(2),
        });
        round_trip(KeyRequest {
            room: room.clone(),
            epoch: None,
        });
        let part = KeyReply {
            part: vec![2, 0, 7],
        };
        assert_eq!(KeyReply::from_body(&part.to_body()).unwrap(), part);
        round_trip(CreateRoomRequest { room: room.clone() });
        round_trip(record);
        round_trip(MembersRequest {
            room: room.clone(),
            after: None,
            limit: None,
        });
        round_trip(MembersRequest {
            room: room.clone(),
            after: Some(sign),
            limit: Some(500),
        });
        round_trip(MembersReply {
            members: vec![MemberKeys {
                sign_public_key: sign,
                kex_public_key: kex,
            }],
            next: Some(sign),
        });
        let change = MemberChange { room, member: sign };
        round_trip(AddMemberRequest(change.clone()));
        round_trip(RemoveMemberRequest(change));
        round_trip(Empty {});
        round_trip(RekeyRequest {
            manifest: "00".into(),
        });
        round_trip(ShareHistoryRequest {
            room: RoomId::new("general").unwrap(),
            shares: vec!["01".into()],
        });
    }

    #[test]
    fn requests_are_objects_naming_each_field_once_and_null_epoch_is_the_latest() {
        let latest: KeyRequest = read_request(br#"{"room":"general","epoch":null}"#).unwrap();
        assert_eq!(latest.epoch, None);
        let absent: KeyRequest = read_request(br#"{"room":"general","extra":1}"#).unwrap();
        assert_eq!(absent.epoch, None);
        assert!(read_request::<RoomsRequest>(b"").is_ok());
        for body in [
            &br#"["general"]"#[..],
            b"null",
            b"\"general\"",
            b"{",
            br#"{"room":"general","room":"other"}"#,
            br#"{"room":"general","extra":{"x":1,"x":2}}"#,
        ] {
            let refusal = read_request::<EpochRequest>(body).unwrap_err();
            assert_eq!(refusal.code, RefusalCode::BadRequest);
        }
    }

    #[test]
    fn replies_and_refusals_are_told_apart() {
        let ok: Result<EpochReply, Refusal> = Ok(EpochReply { epoch: 4 });
        let bytes = encode_reply(&ok);
        assert_eq!(read_reply::<EpochReply>(&bytes).unwrap(), ok);
        let refused: Result<EpochReply, Refusal> =
            Err(Refusal::new(RefusalCode::NotMember, "not a member"));
        let bytes = encode_reply(&refused);
        assert_eq!(read_reply::<EpochReply>(&bytes).unwrap(), refused);
        assert!(read_reply::<EpochReply>(b"[]").is_err());
    }
}
