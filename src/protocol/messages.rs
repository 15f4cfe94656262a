//! Messages on the bus (protocol §15): sending an envelope through membershipd, reading a
//! room's stored messages page by page, and the live copies members receive, straight from the
//! stream or leased from membershipd (`listen`).
//!
//! The bodies of a message exchange are binary, not JSON, so that an envelope (up to
//! [`MAX_ENVELOPE_LEN`] bytes) travels as it is:
//!
//! ```text
//! send request  = envelope                                          (the wire form of §14)
//! send reply    = {"position": u64, "duplicate": bool}             (JSON)
//! messages page = 0x01 || u8 more || u32 count || count * record
//! record        = u64 position || u64 time || u32 length || envelope
//! live message  = 0x01 || u64 position || u64 previous || u64 time || envelope
//! ```
//!
//! A message's **position** is its sequence number in the cluster's message stream: positions
//! grow with every message stored, in any room, so a room's positions increase but skip. A
//! live message's **previous** is the position of the message before it in the same room (0 for
//! the room's first), so a client that holds a room's last position sees at once whether it
//! missed anything.

use serde::{Deserialize, Serialize};

use super::control::{MalformedReply, Operation, ReplyBody, Request};
use crate::envelope::{MessageId, MAX_ENVELOPE_LEN};
use crate::{RoomId, SignPublicKey};

/// The JetStream stream that holds every room's envelopes, in the users' account.
pub const STREAM: &str = "UNIBUS_MESSAGES";
/// Envelopes of room `<room>` are stored on `unibus.msg.<room>`.
pub const STORE_PREFIX: &str = "unibus.msg";
/// The stream republishes each stored envelope on `unibus.live.<room>`, with its position and
/// the room's previous position in headers. A member's login may subscribe there for the rooms
/// it was granted (§11); membershipd sends copies of the others to members that lease them
/// ([`ListenRequest`]).
pub const LIVE_PREFIX: &str = "unibus.live";
/// The header of a republished copy that holds the room's previous position.
pub const PREVIOUS_HEADER: &str = "Nats-Last-Sequence";
/// How long a [`ListenRequest`]'s lease lasts on the instance that granted it.
pub const LISTEN_LEASE: std::time::Duration = std::time::Duration::from_secs(60);
/// How often a client renews its leases: three times within one lease.
pub const LISTEN_RENEW: std::time::Duration = std::time::Duration::from_secs(20);
/// The most rooms one [`ListenRequest`] names.
pub const MAX_LISTEN_ROOMS: usize = 1000;
/// The subject suffix of live messages to a member, after `unibus.events.<member hex>`.
pub const LIVE_SUFFIX: &str = "message";
/// Version byte of a messages page and of a live message.
pub const FORMAT_VERSION: u8 = 1;
/// The most records a `messages` page holds, whatever `limit` asks.
pub const MAX_PAGE: u32 = 1000;
/// The records a `messages` page holds when `limit` is left out.
pub const DEFAULT_PAGE: u32 = 100;

/// `unibus.msg.<room>`: where the stream stores `room`'s envelopes.
pub fn store_subject(room: &RoomId) -> String {
    format!("{STORE_PREFIX}.{room}")
}

/// `unibus.live.<room>`: where the stream republishes `room`'s envelopes as they are stored.
pub fn live_subject(room: &RoomId) -> String {
    format!("{LIVE_PREFIX}.{room}")
}

/// The room of a `unibus.live.<room>` subject.
pub fn live_room(subject: &str) -> Option<RoomId> {
    let room = subject.strip_prefix(LIVE_PREFIX)?.strip_prefix('.')?;
    RoomId::new(room).ok()
}

/// `unibus.events.<member hex>.message`: where membershipd sends `member` the live messages of
/// the rooms it leased ([`ListenRequest`]).
pub fn member_live_subject(member: &SignPublicKey) -> String {
    format!("{}.{LIVE_SUFFIX}", crate::subjects::events(member))
}

/// The `Nats-Msg-Id` an envelope is stored under: `<room>.<sender hex>.<message id hex>`. The
/// stream stores a second envelope with the same id, within its duplicate window, only once.
pub fn dedup_id(room: &RoomId, sender: &SignPublicKey, id: &MessageId) -> String {
    format!("{room}.{}.{id}", sender.to_hex())
}

/// `send`: an envelope to store in its room (§15.2). The body is the envelope's wire form
/// itself, not JSON; its first byte is the envelope's version, never `{`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// The envelope's wire form (§14.2).
    pub envelope: Vec<u8>,
}

impl SendRequest {
    /// Where `caller` sends it: `unibus.cp.<caller hex>.send`.
    pub fn subject(caller: &SignPublicKey) -> String {
        Operation::Send.subject(caller)
    }

    /// The request's body: the envelope.
    pub fn to_body(&self) -> Vec<u8> {
        self.envelope.clone()
    }
}

/// The reply of `send`: where the envelope is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReply {
    /// The envelope's position in the stream.
    pub position: u64,
    /// Whether the stream already held this envelope (the same sender and message id, sent
    /// again within the duplicate window): it is stored once, at `position`.
    pub duplicate: bool,
}

/// `listen`: leases live copies of `rooms` (§15.4), for a client whose login may not subscribe
/// to their `unibus.live.<room>` subjects itself (rooms it joined after it logged in, or beyond
/// the 1,000 a login is granted). The instance that answers sends the caller a
/// [`LiveMessage`] of each envelope stored in a leased room, on [`member_live_subject`], while
/// the caller is an active member of it, for [`LISTEN_LEASE`] after the request. Sent with
/// `instance` (the token of an earlier reply), it goes to that instance only, which renews
/// the leases it holds; without, to any instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenRequest {
    /// The rooms, 1 to [`MAX_LISTEN_ROOMS`].
    pub rooms: Vec<RoomId>,
    /// The instance to renew the leases on (the subject's last token); none for any instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The reply of `listen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenReply {
    /// The instance that holds the leases: renew them there.
    pub instance: String,
    /// The rooms leased: those of the request the caller is a member of.
    pub rooms: Vec<RoomId>,
    /// Those of `rooms` whose lease this instance did not hold until now (copies stored
    /// before may have reached nobody: read them, §15.4).
    pub new: Vec<RoomId>,
}

impl Request for ListenRequest {
    const OPERATION: Operation = Operation::Listen;
    type Reply = ListenReply;

    fn subject(&self, caller: &SignPublicKey) -> String {
        match &self.instance {
            Some(instance) => format!("{}.{instance}", Self::OPERATION.subject(caller)),
            None => Self::OPERATION.subject(caller),
        }
    }
}

/// `messages`: one page of a room's stored envelopes (§15.3). Members only.
///
/// With `after`, the first `limit` envelopes after that position; with `before`, the last
/// `limit` envelopes before it; with neither, the room's last `limit` envelopes. Both at once is
/// `bad_request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// The room.
    pub room: RoomId,
    /// Only envelopes after this position, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Only envelopes before this position, newest last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// The most envelopes wanted, 1 to [`MAX_PAGE`] ([`DEFAULT_PAGE`] when left out). The
    /// server may send fewer: a page fills at most one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Request for MessagesRequest {
    const OPERATION: Operation = Operation::Messages;
    type Reply = MessagePage;
}

/// One stored envelope, as a page carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its position in the stream.
    pub position: u64,
    /// When the stream stored it, in milliseconds since the Unix epoch (the cluster's clock).
    pub time: u64,
    /// The envelope's wire form, as sent.
    pub envelope: Vec<u8>,
}

/// The reply of `messages`: envelopes of one room, in ascending position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagePage {
    /// The envelopes, oldest first.
    pub messages: Vec<StoredMessage>,
    /// Whether the room holds more in the page's direction: after the last (for `after`) or
    /// before the first (for `before` and for the latest page).
    pub more: bool,
}

/// A record's bytes before its envelope: position, time and length.
const RECORD_HEAD_LEN: usize = 8 + 8 + 4;
/// A page's bytes before its records: version, `more` and count.
const PAGE_HEAD_LEN: usize = 1 + 1 + 4;

impl MessagePage {
    /// The bytes a record of an envelope of `envelope_len` bytes takes in a page.
    pub fn record_len(envelope_len: usize) -> usize {
        RECORD_HEAD_LEN + envelope_len
    }

    /// The bytes a page takes beside its records.
    pub const HEAD_LEN: usize = PAGE_HEAD_LEN;
}

impl ReplyBody for MessagePage {
    fn to_body(&self) -> Vec<u8> {
        let records: usize = self
            .messages
            .iter()
            .map(|m| Self::record_len(m.envelope.len()))
            .sum();
        let mut out = Vec::with_capacity(PAGE_HEAD_LEN + records);
        out.push(FORMAT_VERSION);
        out.push(u8::from(self.more));
        // A page fills at most one NATS message, far fewer than 2^32 records.
        out.extend_from_slice(&(self.messages.len() as u32).to_be_bytes());
        for message in &self.messages {
            out.extend_from_slice(&message.position.to_be_bytes());
            out.extend_from_slice(&message.time.to_be_bytes());
            // An envelope is at most MAX_ENVELOPE_LEN bytes.
            out.extend_from_slice(&(message.envelope.len() as u32).to_be_bytes());
            out.extend_from_slice(&message.envelope);
        }
        out
    }

    fn from_body(body: &[u8]) -> Result<Self, MalformedReply> {
        let bad = |what: &str| MalformedReply::Binary(format!("messages page: {what}"));
        let mut reader = crate::wire::Reader::new(body);
        let truncated = |_| bad("truncated");
        if reader.u8().map_err(truncated)? != FORMAT_VERSION {
            return Err(bad("unknown version"));
        }
        let more = match reader.u8().map_err(truncated)? {
            0 => false,
            1 => true,
            _ => return Err(bad("`more` is neither 0 nor 1")),
        };
        let count = reader.u32().map_err(truncated)? as usize;
        // Every record takes at least RECORD_HEAD_LEN bytes: no allocation beyond the body.
        if count > reader.remaining() / RECORD_HEAD_LEN {
            return Err(bad("more records than bytes"));
        }
        let mut messages = Vec::with_capacity(count);
        for _ in 0..count {
            let position = reader.u64().map_err(truncated)?;
            let time = reader.u64().map_err(truncated)?;
            let len = reader.u32().map_err(truncated)? as usize;
            if len > MAX_ENVELOPE_LEN {
                return Err(bad("an envelope longer than the protocol allows"));
            }
            let envelope = reader.take_slice(len).map_err(truncated)?.to_vec();
            messages.push(StoredMessage {
                position,
                time,
                envelope,
            });
        }
        reader
            .expect_remaining(0)
            .map_err(|_| bad("trailing bytes"))?;
        if messages.windows(2).any(|w| w[0].position >= w[1].position) {
            return Err(bad("positions are not ascending"));
        }
        Ok(Self { messages, more })
    }
}

/// A live message: a stored envelope as membershipd sends it to a member that leased its room,
/// on [`member_live_subject`], or as the stream republishes it on [`live_subject`]
/// ([`republished`](Self::republished)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMessage {
    /// Its position in the stream.
    pub position: u64,
    /// The position of the room's message before it; 0 when it is the room's first.
    pub previous: u64,
    /// When the stream stored it, in milliseconds since the Unix epoch.
    pub time: u64,
    /// The envelope's wire form.
    pub envelope: Vec<u8>,
}

/// A live message's bytes before its envelope.
const LIVE_HEAD_LEN: usize = 1 + 8 + 8 + 8;

impl LiveMessage {
    /// The wire form: `0x01 || u64 position || u64 previous || u64 time || envelope`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LIVE_HEAD_LEN + self.envelope.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.position.to_be_bytes());
        out.extend_from_slice(&self.previous.to_be_bytes());
        out.extend_from_slice(&self.time.to_be_bytes());
        out.extend_from_slice(&self.envelope);
        out
    }

    /// A copy the stream republished: its `position` and storage `time` (from its
    /// `Nats-Sequence` and `Nats-Time-Stamp` headers), the value of its [`PREVIOUS_HEADER`], and
    /// its payload, the envelope.
    pub fn republished(
        position: u64,
        previous: Option<&str>,
        time: u64,
        envelope: &[u8],
    ) -> Result<Self, MalformedReply> {
        let bad = |what: &str| MalformedReply::Binary(format!("republished copy: {what}"));
        let previous = previous
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| bad("no previous position"))?;
        Self::checked(position, previous, time, envelope).map_err(bad)
    }

    /// A live message of these parts, if they keep the rules of both forms: the previous
    /// position below the position, and an envelope no longer than the protocol allows.
    fn checked(
        position: u64,
        previous: u64,
        time: u64,
        envelope: &[u8],
    ) -> Result<Self, &'static str> {
        if previous >= position {
            return Err("the previous position is not below the position");
        }
        if envelope.len() > MAX_ENVELOPE_LEN {
            return Err("an envelope longer than the protocol allows");
        }
        Ok(Self {
            position,
            previous,
            time,
            envelope: envelope.to_vec(),
        })
    }

    /// Reads the wire form. The envelope is not decoded here.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MalformedReply> {
        let bad = |what: &str| MalformedReply::Binary(format!("live message: {what}"));
        let mut reader = crate::wire::Reader::new(bytes);
        let truncated = |_| bad("truncated");
        if reader.u8().map_err(truncated)? != FORMAT_VERSION {
            return Err(bad("unknown version"));
        }
        let position = reader.u64().map_err(truncated)?;
        let previous = reader.u64().map_err(truncated)?;
        let time = reader.u64().map_err(truncated)?;
        Self::checked(position, previous, time, &bytes[LIVE_HEAD_LEN..]).map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> MessagePage {
        MessagePage {
            messages: vec![
                StoredMessage {
                    position: 3,
                    time: 1_700_000_000_000,
                    envelope: vec![1, 2, 3],
                },
                StoredMessage {
                    position: 9,
                    time: 1_700_000_000_001,
                    envelope: Vec::new(),
                },
            ],
            more: true,
        }
    }

    #[test]
    fn a_page_round_trips_and_every_cut_or_extra_byte_is_refused() {
        let body = page().to_body();
        assert_eq!(MessagePage::from_body(&body).unwrap(), page());
        for len in 0..body.len() {
            assert!(MessagePage::from_body(&body[..len]).is_err(), "{len} bytes");
        }
        assert!(MessagePage::from_body(&[&body[..], &[0]].concat()).is_err());
        let empty = MessagePage::default();
        assert_eq!(MessagePage::from_body(&empty.to_body()).unwrap(), empty);
    }

    #[test]
    fn a_page_out_of_order_or_with_a_huge_count_is_refused() {
        let mut unordered = page();
        unordered.messages.swap(0, 1);
        assert!(MessagePage::from_body(&unordered.to_body()).is_err());
        let mut huge = page().to_body();
        huge[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(MessagePage::from_body(&huge).is_err());
    }

    #[test]
    fn a_live_message_round_trips_and_its_previous_is_below_its_position() {
        let live = LiveMessage {
            position: 10,
            previous: 4,
            time: 5,
            envelope: vec![1; 40],
        };
        assert_eq!(LiveMessage::from_bytes(&live.to_bytes()).unwrap(), live);
        let backwards = LiveMessage {
            previous: 10,
            ..live.clone()
        };
        assert!(LiveMessage::from_bytes(&backwards.to_bytes()).is_err());
        assert!(LiveMessage::from_bytes(&live.to_bytes()[..20]).is_err());
    }

    #[test]
    fn subjects_and_dedup_ids_name_the_room_and_sender() {
        let room = RoomId::new("general").unwrap();
        let me = crate::Identity::generate().unwrap().sign_public_key();
        let id = MessageId::from_bytes([0xab; 16]);
        assert_eq!(store_subject(&room), "unibus.msg.general");
        assert_eq!(live_subject(&room), "unibus.live.general");
        assert_eq!(live_room("unibus.live.general"), Some(room.clone()));
        for other in [
            "unibus.live",
            "unibus.live.",
            "unibus.lived.x",
            "unibus.msg.general",
        ] {
            assert_eq!(live_room(other), None, "{other}");
        }
        assert_eq!(
            member_live_subject(&me),
            format!("unibus.events.{}.message", me.to_hex())
        );
        assert_eq!(
            dedup_id(&room, &me, &id),
            format!("general.{}.{}", me.to_hex(), "ab".repeat(16))
        );
    }

    #[test]
    fn a_republished_copy_needs_a_previous_position_below_its_own() {
        let copy = LiveMessage::republished(9, Some("4"), 7, b"envelope").unwrap();
        assert_eq!((copy.position, copy.previous, copy.time), (9, 4, 7));
        assert_eq!(copy.envelope, b"envelope");
        assert_eq!(
            LiveMessage::republished(9, Some("0"), 7, b"")
                .unwrap()
                .previous,
            0
        );
        for previous in [None, Some("9"), Some("12"), Some("x"), Some("-1")] {
            assert!(
                LiveMessage::republished(9, previous, 7, b"").is_err(),
                "{previous:?}"
            );
        }
        let huge = vec![0; MAX_ENVELOPE_LEN + 1];
        assert!(LiveMessage::republished(9, Some("4"), 7, &huge).is_err());
    }

    #[test]
    fn a_listen_request_goes_to_any_instance_or_to_the_one_it_names() {
        let me = crate::Identity::generate().unwrap().sign_public_key();
        let mut request = ListenRequest {
            rooms: vec![RoomId::new("general").unwrap()],
            instance: None,
        };
        assert_eq!(
            request.subject(&me),
            format!("unibus.cp.{}.listen", me.to_hex())
        );
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"rooms":["general"]}"#
        );
        request.instance = Some("abc".into());
        assert_eq!(
            request.subject(&me),
            format!("unibus.cp.{}.listen.abc", me.to_hex())
        );
        assert!(serde_json::from_str::<ListenRequest>(r#"{"rooms":[],"x":1}"#).is_err());
    }
}
