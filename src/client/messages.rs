//! Messages in rooms (docs/protocol.md §14 and §15; docs/client.md, "Messages"): sending an
//! envelope, reading a room's history page by page, and delivering new messages to a
//! [`Watch`](super::Watch) in position order, each once, across reconnections and restarts.
//!
//! Delivery keeps, per room, a [`Cursor`]: the position of the last message delivered (`last`)
//! and the senders and ids of the most recent ones. A live copy is delivered when its `previous`
//! is `last`, dropped when its position is not above `last`, and otherwise the gap is read from
//! the stored history first (§15.4). The cursors are kept in the session's
//! [`TrustStore`](super::TrustStore) once the app has taken the messages (see
//! [`Watch`](super::Watch)).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::error::SessionError;
use super::live::Live;
use super::read_ahead;
use super::session::Session;
use super::watch::Item;
use crate::envelope::{
    ContentType, Envelope, EnvelopeError, EpochKey, Message, MessageId, MAX_BODY_LEN,
};
use crate::protocol::messages::{
    LiveMessage, MessagePage, MessagesRequest, SendReply, SendRequest, MAX_PAGE,
};
use crate::{RoomId, SignPublicKey};

/// How many of a room's most recently delivered messages (sender and id) a cursor remembers,
/// to report a copy of one of them stored at another position as [`Unreadable::Replayed`].
pub const REMEMBERED_PER_ROOM: usize = 1024;

/// The highest position (and `sent_at`) the protocol allows: 2^63 − 1.
const MAX_POSITION: u64 = i64::MAX as u64;

/// How many times [`Session::send`] sends the same envelope when the cluster does not answer,
/// has no membershipd, or says it is unavailable. Every attempt ends within the request
/// timeout, so all of them end well within the stream's duplicate window (2 minutes).
pub const SEND_ATTEMPTS: usize = 4;

/// How many times [`Session::send`] seals the message again, under the room's latest key, when
/// the room was rekeyed under it (`stale_epoch`).
pub const SEAL_ATTEMPTS: usize = 3;

/// A message stored in its room, as [`Session::send`] returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentMessage {
    /// The message's id, fresh for every message.
    pub id: MessageId,
    /// Its position in the room's history (protocol §15.1).
    pub position: u64,
    /// The epoch whose key sealed it.
    pub epoch: u64,
    /// Whether a retry found it stored already (by an earlier attempt that got no answer): it
    /// is stored once, at `position`.
    pub duplicate: bool,
}

/// Which page of a room's history [`Session::messages`] reads. `limit` is 1 to
/// [`MAX_PAGE`] (1,000); a page may hold fewer (it fills at most one message of the cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The room's latest messages.
    Latest {
        /// The most messages wanted.
        limit: u32,
    },
    /// The messages just before `position` (page backward from a page's first position).
    Before {
        /// Only messages below this position.
        position: u64,
        /// The most messages wanted.
        limit: u32,
    },
    /// The messages just after `position` (page forward from a page's last position; 0 for
    /// the room's first messages).
    After {
        /// Only messages above this position.
        position: u64,
        /// The most messages wanted.
        limit: u32,
    },
}

impl Page {
    /// The request for `room`, or why the page cannot be asked for.
    fn request(self, room: &RoomId) -> Result<MessagesRequest, SessionError> {
        let (after, before, limit) = match self {
            Page::Latest { limit } => (None, None, limit),
            Page::Before { position, limit } => (None, Some(position), limit),
            Page::After { position, limit } => (Some(position), None, limit),
        };
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(SessionError::InvalidArgument(format!(
                "a page's limit is 1 to {MAX_PAGE}, not {limit}"
            )));
        }
        if after.or(before).is_some_and(|p| p > MAX_POSITION) {
            return Err(SessionError::InvalidArgument(
                "a position is at most 2^63 - 1".into(),
            ));
        }
        Ok(MessagesRequest {
            room: room.clone(),
            after,
            before,
            limit: Some(limit),
        })
    }
}

/// One page of a room's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPage {
    /// The messages, in ascending position.
    pub messages: Vec<Received>,
    /// Whether the room holds more in the page's direction: after the last message for
    /// [`Page::After`], before the first for [`Page::Before`] and [`Page::Latest`].
    pub more: bool,
}

/// A stored message as this client received it: opened, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its position in the room's history.
    pub position: u64,
    /// When the cluster stored it, in milliseconds since the Unix epoch (the sender's own
    /// clock is [`Message::sent_at`]).
    pub time: u64,
    /// The opened message (sender, epoch, id, content type and body, all verified), or why it
    /// cannot be read.
    pub outcome: Result<Message, Unreadable>,
}

/// Why a stored message cannot be read (protocol §14.6). One such message never fails a page
/// or a watch: it is reported in its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unreadable {
    /// This identity holds no key for the message's epoch: the epoch is from before it joined
    /// the room, or it was not a recipient of that epoch.
    #[error(
        "no key for epoch {epoch}: it is from before this member joined, or was not sealed to it"
    )]
    NoKey {
        /// The message's epoch.
        epoch: u64,
    },
    /// The sender's proof fails: that epoch's signed manifest does not list the sender.
    #[error("the sender is not a member of the room at the message's epoch")]
    NotAMember,
    /// The signature does not verify: the message was altered or forged.
    #[error("the message's signature does not verify")]
    BadSignature,
    /// The body does not decrypt under the epoch's key, although the sender signed it: a
    /// faulty or hostile member.
    #[error("the message's body does not decrypt")]
    DecryptFailed,
    /// The same sender and message id were already delivered at another position; the first
    /// one stands.
    #[error("a copy of the message delivered at position {first_position}")]
    Replayed {
        /// Where the message was delivered first.
        first_position: u64,
    },
    /// The stored bytes are not an envelope, or name another room than the one read.
    #[error("not a message of this room: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

/// What a cursor keeps of a delivered message's verified sender and id: the first 16 bytes of
/// SHA-256(sender's ed25519 key || message id), so that a remembered message takes 24 bytes
/// in the trust file (docs/client.md). Finding two messages with the same 128 bits is
/// infeasible, so a message is reported [`Unreadable::Replayed`] only when its sender and id
/// were delivered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen(pub(crate) [u8; SEEN_LEN]);

/// The length of a [`Seen`].
pub(crate) const SEEN_LEN: usize = 16;

impl Seen {
    /// What is kept of `sender`'s message `id`.
    pub(crate) fn of(sender: &SignPublicKey, id: &MessageId) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(sender.as_bytes())
            .chain_update(id.as_bytes())
            .finalize();
        let mut seen = [0; SEEN_LEN];
        seen.copy_from_slice(&digest[..SEEN_LEN]);
        Self(seen)
    }
}

/// A message delivered from a room, as the cursor remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// Its verified sender and id.
    pub(crate) seen: Seen,
    /// Where it was delivered.
    pub(crate) position: u64,
}

impl Delivered {
    /// `sender`'s message `id`, delivered at `position`.
    pub(crate) fn new(sender: &SignPublicKey, id: &MessageId, position: u64) -> Self {
        Self {
            seen: Seen::of(sender, id),
            position,
        }
    }
}

/// What a [`Watch`](super::Watch) hands the app for one message, to remember once the app has
/// taken it: the room's new `last`, and the message's sender and id when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) room: RoomId,
    pub(crate) position: u64,
    pub(crate) opened: Option<Delivered>,
}

/// What to do with a live copy (protocol §15.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LiveStep {
    /// Its `previous` is `last`: deliver it now.
    Deliver,
    /// Its position is not above `last`: delivered already.
    Duplicate,
    /// Something was missed: read the room after `last` first.
    ReadGap,
}

/// A room's delivery state: the last position delivered (0 before any) and the most recent
/// [`REMEMBERED_PER_ROOM`] opened messages, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cursor {
    pub(crate) last: u64,
    #[serde(
        default,
        skip_serializing_if = "VecDeque::is_empty",
        with = "packed_recent"
    )]
    pub(crate) recent: VecDeque<Delivered>,
}

/// A cursor's `recent` in the trust file (docs/client.md): one base64 string of 24-byte
/// records, [`Seen`] then the position as a big-endian `u64`, in position order (what this
/// version writes); or, as versions 2 and 3 of the file wrote it, a list of
/// `{"sender", "id", "position"}` objects, read into the same records.
mod packed_recent {
    use std::collections::VecDeque;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Delivered, Seen, SEEN_LEN};
    use crate::envelope::MessageId;
    use crate::SignPublicKey;

    const RECORD_LEN: usize = SEEN_LEN + 8;

    pub(crate) fn serialize<S: Serializer>(
        recent: &VecDeque<Delivered>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(recent.len() * RECORD_LEN);
        for delivered in recent {
            bytes.extend_from_slice(&delivered.seen.0);
            bytes.extend_from_slice(&delivered.position.to_be_bytes());
        }
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    /// An entry of the list form.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listed {
        sender: SignPublicKey,
        id: MessageId,
        position: u64,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Packed(String),
        Listed(Vec<Listed>),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<VecDeque<Delivered>, D::Error> {
        match Form::deserialize(deserializer)? {
            Form::Listed(list) => Ok(list
                .iter()
                .map(|l| Delivered::new(&l.sender, &l.id, l.position))
                .collect()),
            Form::Packed(text) => {
                let bytes = STANDARD
                    .decode(text)
                    .map_err(|e| D::Error::custom(format!("recent: {e}")))?;
                if bytes.len() % RECORD_LEN != 0 {
                    return Err(D::Error::custom(format!(
                        "recent: {} bytes is not a whole number of {RECORD_LEN}-byte records",
                        bytes.len()
                    )));
                }
                Ok(bytes
                    .chunks_exact(RECORD_LEN)
                    .map(|record| {
                        let (seen, position) = record.split_at(SEEN_LEN);
                        let mut s = [0; SEEN_LEN];
                        s.copy_from_slice(seen);
                        let mut p = [0; 8];
                        p.copy_from_slice(position);
                        Delivered {
                            seen: Seen(s),
                            position: u64::from_be_bytes(p),
                        }
                    })
                    .collect())
            }
        }
    }
}

impl Cursor {
    /// What to do with a live copy at `position` whose room's previous message is at
    /// `previous`.
    pub(crate) fn step(&self, position: u64, previous: u64) -> LiveStep {
        if position <= self.last {
            LiveStep::Duplicate
        } else if previous == self.last {
            LiveStep::Deliver
        } else {
            LiveStep::ReadGap
        }
    }

    /// Where a message of `sender` with `id` was delivered before, if at another position than
    /// `position`.
    pub(crate) fn first_position(
        &self,
        sender: &SignPublicKey,
        id: &MessageId,
        position: u64,
    ) -> Option<u64> {
        let seen = Seen::of(sender, id);
        self.recent
            .iter()
            .find(|d| d.seen == seen)
            .map(|d| d.position)
            .filter(|first| *first != position)
    }

    /// Records a delivery: `last` rises to its position (never falls), and an opened message
    /// is remembered.
    pub(crate) fn advance(&mut self, position: u64, opened: Option<Delivered>) {
        self.last = self.last.max(position);
        if let Some(opened) = opened {
            self.remember_delivered(opened);
        }
    }

    /// Remembers `opened` unless its sender and id are already, keeping the newest
    /// [`REMEMBERED_PER_ROOM`] by position.
    fn remember_delivered(&mut self, opened: Delivered) {
        if self.recent.iter().any(|d| d.seen == opened.seen) {
            return;
        }
        // Usually the newest; after a merge of two writers, in its place by position.
        let at = self
            .recent
            .iter()
            .rposition(|d| d.position < opened.position)
            .map_or(0, |i| i + 1);
        self.recent.insert(at, opened);
        while self.recent.len() > REMEMBERED_PER_ROOM {
            self.recent.pop_front();
        }
    }

    /// `outcome` of the message at `position`: an opened message whose sender and id were
    /// delivered at another position becomes [`Unreadable::Replayed`], any other opened one is
    /// remembered. Returns it, and what was remembered. `last` does not move.
    pub(crate) fn remember(
        &mut self,
        position: u64,
        outcome: Result<Message, Unreadable>,
    ) -> (Result<Message, Unreadable>, Option<Delivered>) {
        let message = match outcome {
            Ok(message) => message,
            Err(reason) => return (Err(reason), None),
        };
        if let Some(first_position) = self.first_position(message.sender(), message.id(), position)
        {
            return (Err(Unreadable::Replayed { first_position }), None);
        }
        let opened = Delivered::new(message.sender(), message.id(), position);
        self.remember_delivered(opened);
        (Ok(message), Some(opened))
    }

    /// [`remember`](Self::remember), and `last` rises to `position`: the message is delivered.
    pub(crate) fn deliver(
        &mut self,
        position: u64,
        outcome: Result<Message, Unreadable>,
    ) -> (Result<Message, Unreadable>, Option<Delivered>) {
        let delivered = self.remember(position, outcome);
        self.last = self.last.max(position);
        delivered
    }
}

/// The epoch keys one read needs, by epoch: `None` for an epoch with no key for this identity.
type Keys = HashMap<u64, Option<EpochKey>>;

impl Session {
    /// Sends `body` to `room`, and returns once the cluster has stored it (protocol §15.2).
    ///
    /// The body is sealed with the room's latest epoch key (fetched and verified like
    /// [`room_key`](Self::room_key) the first time, then kept). The envelope goes straight to
    /// the room's stream when this login was granted the room (a member of it when it logged
    /// in) and the key's epoch was confirmed as the room's latest within
    /// [`SessionOptions::send_key_fresh`](super::SessionOptions::send_key_fresh) (1 s by
    /// default: by fetching the key, or by a send through membershipd, which checks it), and
    /// through membershipd otherwise (docs/client.md, "Messages"). When the cluster does not answer,
    /// has no membershipd or is unavailable, the **same bytes** are sent again, up to
    /// [`SEND_ATTEMPTS`] times, so the message is stored once however many attempts reach it
    /// ([`SentMessage::duplicate`]). When membershipd answers that the room was rekeyed under
    /// it (`stale_epoch`), nothing was stored: it fetches the latest key and seals again with
    /// a new id, up to [`SEAL_ATTEMPTS`] times.
    ///
    /// Fails with [`SessionError::BodyTooLarge`] for a body of more than 64 KiB (nothing is
    /// sent), [`SessionError::NotMember`] if this identity is not a member of `room` (or was
    /// removed), [`SessionError::NoKey`] before the room's first key sealed to it, and with the
    /// last transient error if every attempt failed: the message may then have been stored,
    /// and reading the room shows whether.
    pub async fn send(
        &self,
        room: &RoomId,
        body: &[u8],
        content_type: &ContentType,
    ) -> Result<SentMessage, SessionError> {
        if body.len() > MAX_BODY_LEN {
            return Err(SessionError::BodyTooLarge {
                len: body.len(),
                limit: MAX_BODY_LEN,
            });
        }
        let mut attempt = 1;
        let mut refresh = false;
        loop {
            let (key, confirmed) = self.sending_key(room, refresh).await?;
            let envelope = Envelope::seal(self.identity(), &key, content_type, body, now_ms())?;
            // Straight to the stream only while the epoch is known to be the room's latest.
            let fresh = confirmed.elapsed() < self.send_key_fresh();
            match self.store(&envelope, fresh).await {
                Ok((reply, relayed)) => {
                    if relayed {
                        // membershipd stored it, so the epoch was the room's latest just now.
                        self.sending_keys()
                            .keep(room.clone(), (key.clone(), tokio::time::Instant::now()));
                    }
                    return Ok(SentMessage {
                        id: *envelope.id(),
                        position: reply.position,
                        epoch: key.epoch(),
                        duplicate: reply.duplicate,
                    });
                }
                Err(SessionError::StaleEpoch) if attempt < SEAL_ATTEMPTS => {
                    tracing::debug!(room = %room, epoch = key.epoch(), "the room was rekeyed under a send; sealing again");
                    attempt += 1;
                    refresh = true;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One page of `room`'s history, oldest first, each message opened or with the reason it
    /// cannot be (protocol §14.6): a message that cannot be read never fails the page. Keys of
    /// earlier epochs are fetched when a message needs them, verified like
    /// [`room_key`](Self::room_key), and kept for the session. A message whose sender and id
    /// were delivered at another position (earlier in the page, or to a
    /// [`watch_with_messages`](Self::watch_with_messages) recently) is
    /// [`Unreadable::Replayed`].
    ///
    /// A page with [`more`](ReceivedPage::more) has the next page in its direction read ahead
    /// (docs/client.md, "Reading history"): paging on costs little more than opening.
    ///
    /// Fails with [`SessionError::InvalidArgument`] for a limit of 0 or above 1,000,
    /// [`SessionError::NotMember`] if this identity is not a member of `room`, and with the
    /// failure of fetching a key (a timeout, a key that does not verify).
    pub async fn messages(&self, room: &RoomId, page: Page) -> Result<ReceivedPage, SessionError> {
        let request = page.request(room)?;
        let reply = self.read_page(&request).await?;
        if let Some(bad) = reply.messages.iter().find(|m| {
            request.after.is_some_and(|after| m.position <= after)
                || request.before.is_some_and(|before| m.position >= before)
        }) {
            return Err(SessionError::InvalidReply(format!(
                "a page holds position {}, outside the range asked for",
                bad.position
            )));
        }
        let mut cursor = self.trust().message_cursor(room);
        let mut keys = Keys::new();
        let mut messages = Vec::with_capacity(reply.messages.len());
        for stored in reply.messages {
            let outcome = self.open_stored(room, &stored.envelope, &mut keys).await?;
            // A copy of the cursor, only to find replays: reading a page delivers nothing.
            let (outcome, _) = cursor.remember(stored.position, outcome);
            messages.push(Received {
                position: stored.position,
                time: stored.time,
                outcome,
            });
        }
        Ok(ReceivedPage {
            messages,
            more: reply.more,
        })
    }

    /// `request`'s page, and the next page in its direction starts being read ahead
    /// (docs/client.md, "Reading history"). A page read ahead for `request` is used when it is
    /// closed and membershipd answers, now, that this identity is a member of the room (`member`,
    /// from its authorization cache): so every page returned was allowed by the room when it
    /// was asked for (a member removed meanwhile gets its `not_member` from the page read
    /// instead), as a page read now would be.
    pub(crate) async fn read_page(
        &self,
        request: &MessagesRequest,
    ) -> Result<MessagePage, SessionError> {
        let ahead = match self.read_ahead().take(request) {
            Some(pending) => match tokio::join!(pending.page(), self.is_member(&request.room)) {
                (Some(page), Ok(true)) => Some(page),
                _ => None,
            },
            None => None,
        };
        let page = match ahead {
            Some(page) => page,
            None => self.call(request).await?,
        };
        if let Some(next) = read_ahead::next_request(request, &page) {
            let (session, asked) = (self.clone(), next.clone());
            self.read_ahead()
                .start(next, async move { session.call(&asked).await });
        }
        Ok(page)
    }

    /// The epoch key to send to `room` with, and when its epoch was last confirmed as the
    /// room's latest: the one sent with last, unless `refresh` or it is no longer the room's
    /// (another owner pinned, or a later epoch verified since); else the latest, fetched and
    /// verified (which confirms it).
    async fn sending_key(
        &self,
        room: &RoomId,
        refresh: bool,
    ) -> Result<(EpochKey, tokio::time::Instant), SessionError> {
        if !refresh {
            if let Some((key, confirmed)) = self.sending_keys().get(room) {
                let trusted = self.trust().room(room).is_some_and(|trust| {
                    trust.owner == key.header().rekeyer && trust.epoch_floor <= key.epoch()
                });
                if trusted {
                    return Ok((key, confirmed));
                }
            }
        }
        let key = self.epoch_key(room, None).await?;
        let confirmed = tokio::time::Instant::now();
        self.sending_keys()
            .keep(room.clone(), (key.clone(), confirmed));
        Ok((key, confirmed))
    }

    /// Stores `envelope`: straight in its room's stream when `fresh` (its epoch was confirmed
    /// as the room's latest recently) and this login may, else (or when that fails) through
    /// membershipd until the cluster answers, up to [`SEND_ATTEMPTS`] times with backoff;
    /// always the same bytes. Says whether membershipd stored it.
    async fn store(
        &self,
        envelope: &Envelope,
        fresh: bool,
    ) -> Result<(SendReply, bool), SessionError> {
        if fresh && self.may_send_directly(envelope.room()).await {
            match self.send_directly(envelope).await {
                Ok(reply) => return Ok((reply, false)),
                Err(error) => {
                    tracing::debug!(%error, "a direct send failed; sending the same bytes through membershipd")
                }
            }
        }
        let request = SendRequest {
            envelope: envelope.to_bytes(),
        };
        let subject = SendRequest::subject(&self.identity().sign_public_key());
        let mut attempt = 1;
        loop {
            match self
                .exchange::<SendReply>(subject.clone(), request.to_body())
                .await
            {
                Err(error) if error.is_transient() && attempt < SEND_ATTEMPTS => {
                    tracing::debug!(%error, attempt, "a send got no answer; sending the same bytes again");
                    tokio::time::sleep(super::liveness::backoff(attempt)).await;
                    attempt += 1;
                }
                outcome => return outcome.map(|reply| (reply, true)),
            }
        }
    }

    /// Opens a stored envelope of `room`, or says why it cannot be read. Fails only when the
    /// key of its epoch could not be fetched or did not verify: then nothing can be said about
    /// the message yet.
    pub(crate) async fn open_stored(
        &self,
        room: &RoomId,
        bytes: &[u8],
        keys: &mut Keys,
    ) -> Result<Result<Message, Unreadable>, SessionError> {
        let envelope = match Envelope::from_bytes(bytes) {
            Ok(envelope) => envelope,
            Err(error) => {
                return Ok(Err(Unreadable::Malformed {
                    reason: error.to_string(),
                }))
            }
        };
        if envelope.room() != room {
            return Ok(Err(Unreadable::Malformed {
                reason: format!("it names room {}", envelope.room()),
            }));
        }
        let epoch = envelope.epoch();
        let key = match keys.get(&epoch) {
            Some(key) => key.clone(),
            None => {
                let key = match self.kept_epoch_key(room, epoch) {
                    Some(key) => Some(key),
                    None => match self.epoch_key(room, Some(epoch)).await {
                        Ok(key) => Some(key),
                        Err(SessionError::NoKey) => None,
                        Err(error) => return Err(error),
                    },
                };
                keys.insert(epoch, key.clone());
                key
            }
        };
        let Some(key) = key else {
            return Ok(Err(Unreadable::NoKey { epoch }));
        };
        Ok(envelope.open(&key).map_err(|error| match error {
            EnvelopeError::NotAMember(_) => Unreadable::NotAMember,
            EnvelopeError::BadSignature => Unreadable::BadSignature,
            EnvelopeError::DecryptFailed => Unreadable::DecryptFailed,
            other => Unreadable::Malformed {
                reason: other.to_string(),
            },
        }))
    }
}

/// The sender's clock, in milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(MAX_POSITION)
        })
}

/// The watch was dropped: stop.
pub(crate) struct Gone;

/// The messages side of a [`Watch`](super::Watch): per room, the cursor of what this watch has
/// handed out, starting from what the trust store remembers.
pub(crate) struct Inbox {
    session: Session,
    cursors: HashMap<RoomId, Cursor>,
    keys: HashMap<RoomId, Keys>,
}

impl Inbox {
    pub(crate) fn new(session: Session) -> Self {
        Self {
            session,
            cursors: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    /// The session it reads with.
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// Arranges the live copies of every room of this identity (`live`), then reads each after
    /// its `last`: after the watch starts and after every reconnection, so that nothing stored
    /// while it was away is missed. `Ok(false)` when a room's copies could not be arranged or a
    /// room could not be read to its end (reported): try again later.
    pub(crate) async fn catch_up_all(
        &mut self,
        live: &mut Live,
        out: &mpsc::Sender<Item>,
    ) -> Result<bool, Gone> {
        let rooms: Vec<RoomId> = match self.session.my_rooms().await {
            Ok(rooms) => rooms.into_iter().map(|room| room.id).collect(),
            Err(error) => return report(out, error).await.map(|()| false),
        };
        let mut complete = true;
        if let Err(error) = live.arrange(&rooms).await {
            report(out, error).await?;
            complete = false;
        }
        for room in rooms {
            complete &= self.catch_up(&room, out).await?;
        }
        Ok(complete)
    }

    /// Reads `room` after its `last` until the room holds no more, delivering each message.
    /// `Ok(false)` when it stopped on a failure (reported): the room stays before the message
    /// it could not read or open.
    pub(crate) async fn catch_up(
        &mut self,
        room: &RoomId,
        out: &mpsc::Sender<Item>,
    ) -> Result<bool, Gone> {
        loop {
            let after = self.cursor(room).last;
            let request = MessagesRequest {
                room: room.clone(),
                after: Some(after),
                before: None,
                limit: None,
            };
            let page = match self.session.read_page(&request).await {
                Ok(page) => page,
                Err(error) => return report(out, error).await.map(|()| false),
            };
            let more = page.more && !page.messages.is_empty();
            for stored in page.messages {
                if !self
                    .deliver(room, stored.position, stored.time, &stored.envelope, out)
                    .await?
                {
                    return Ok(false);
                }
            }
            if !more {
                return Ok(true);
            }
        }
    }

    /// Handles a live copy membershipd sent (a leased room's, protocol §15.4). `Ok(false)` when
    /// the gap before it could not be read (reported): the room stays before it; try again
    /// later.
    pub(crate) async fn on_leased(
        &mut self,
        payload: &[u8],
        out: &mpsc::Sender<Item>,
    ) -> Result<bool, Gone> {
        let live = match LiveMessage::from_bytes(payload) {
            Ok(live) => live,
            Err(error) => {
                let error = SessionError::InvalidReply(error.to_string());
                return report(out, error).await.map(|()| true);
            }
        };
        // The room is the envelope's; one that does not decode cannot be placed, and is read
        // from the history (as malformed) when the room's next copy shows the gap.
        let room = match Envelope::from_bytes(&live.envelope) {
            Ok(envelope) => envelope.room().clone(),
            Err(error) => {
                let error = SessionError::InvalidReply(format!("a live message: {error}"));
                return report(out, error).await.map(|()| true);
            }
        };
        self.on_live(room, live, out).await
    }

    /// Handles a live copy of `room`, from the stream or from membershipd (protocol §15.4).
    /// `Ok(false)` when the gap before it could not be read (reported): the room stays before
    /// it; try again later.
    pub(crate) async fn on_live(
        &mut self,
        room: RoomId,
        live: LiveMessage,
        out: &mpsc::Sender<Item>,
    ) -> Result<bool, Gone> {
        match self.cursor(&room).step(live.position, live.previous) {
            LiveStep::Duplicate => Ok(true),
            LiveStep::Deliver => {
                self.deliver(&room, live.position, live.time, &live.envelope, out)
                    .await
            }
            LiveStep::ReadGap => {
                // Only once the gap is read: else the room stays before it.
                if !self.catch_up(&room, out).await? {
                    return Ok(false);
                }
                match self.cursor(&room).step(live.position, live.previous) {
                    LiveStep::Deliver => {
                        self.deliver(&room, live.position, live.time, &live.envelope, out)
                            .await
                    }
                    LiveStep::Duplicate => Ok(true),
                    // The pages do not reach its `previous` yet (they were read from a replica
                    // a moment behind, §15.3): read again soon; it comes with a later page.
                    LiveStep::ReadGap => Ok(false),
                }
            }
        }
    }

    /// Opens and hands out the message at `position` unless it was handed out already.
    /// `Ok(false)` when its key could not be fetched (reported): the room stays before it.
    async fn deliver(
        &mut self,
        room: &RoomId,
        position: u64,
        time: u64,
        envelope: &[u8],
        out: &mpsc::Sender<Item>,
    ) -> Result<bool, Gone> {
        if position <= self.cursor(room).last {
            return Ok(true);
        }
        let keys = self.keys.entry(room.clone()).or_default();
        // The session keeps the keys it opened last; these are only the room's recent epochs.
        if keys.len() > super::opened::KEPT {
            keys.clear();
        }
        let outcome = match self.session.open_stored(room, envelope, keys).await {
            Ok(outcome) => outcome,
            Err(error) => {
                report(out, error).await?;
                return Ok(false);
            }
        };
        let (outcome, opened) = self.cursor(room).deliver(position, outcome);
        let item = Item::Message {
            message: Received {
                position,
                time,
                outcome,
            },
            delivery: Delivery {
                room: room.clone(),
                position,
                opened,
            },
        };
        out.send(item).await.map_err(|_| Gone)?;
        Ok(true)
    }

    fn cursor(&mut self, room: &RoomId) -> &mut Cursor {
        let session = &self.session;
        self.cursors
            .entry(room.clone())
            .or_insert_with(|| session.trust().message_cursor(room))
    }
}

/// Tells the watch's reader about `error`, and goes on.
pub(crate) async fn report(out: &mpsc::Sender<Item>, error: SessionError) -> Result<(), Gone> {
    tracing::debug!(%error, "reading messages failed");
    out.send(Item::Update(Err(error))).await.map_err(|_| Gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Recipient, SignedManifest};
    use crate::sealing::RoomKey;
    use crate::Identity;

    fn room() -> RoomId {
        RoomId::new("general").unwrap()
    }

    /// `count` messages opened by their receiver: alice sends in a room of two.
    fn opened(count: usize) -> Vec<Message> {
        let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let key = RoomKey::generate().unwrap();
        let recipients = [Recipient::of(&alice), Recipient::of(&bob)];
        let manifest = SignedManifest::rekey(&alice, &room(), 1, 0, &key, &recipients).unwrap();
        let epoch_key = |who: &Identity| {
            let part = manifest.member_part(&who.sign_public_key()).unwrap();
            EpochKey::open(&part, who, &room(), 1, &alice.sign_public_key()).unwrap()
        };
        let (sending, reading) = (epoch_key(&alice), epoch_key(&bob));
        let text = ContentType::new("text/plain").unwrap();
        (0..count)
            .map(|n| {
                let body = format!("message {n}");
                let envelope = Envelope::seal(&alice, &sending, &text, body.as_bytes(), 1).unwrap();
                envelope.open(&reading).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_live_copy_is_delivered_after_last_dropped_at_or_below_it_and_otherwise_fills_the_gap() {
        let cursor = Cursor {
            last: 10,
            recent: VecDeque::new(),
        };
        assert_eq!(cursor.step(14, 10), LiveStep::Deliver);
        assert_eq!(cursor.step(10, 7), LiveStep::Duplicate);
        assert_eq!(cursor.step(9, 0), LiveStep::Duplicate);
        assert_eq!(cursor.step(20, 14), LiveStep::ReadGap, "14 was missed");
        assert_eq!(cursor.step(20, 3), LiveStep::ReadGap, "previous below last");
        // A new member's room starts at 0: the room's first message follows it at once.
        assert_eq!(Cursor::default().step(5, 0), LiveStep::Deliver);
        assert_eq!(Cursor::default().step(5, 2), LiveStep::ReadGap);
    }

    #[test]
    fn a_copy_delivered_again_at_another_position_is_replayed_and_at_its_own_it_is_not() {
        let message = opened(1).remove(0);
        let mut cursor = Cursor::default();
        let (first, remembered) = cursor.deliver(4, Ok(message.clone()));
        assert_eq!(first, Ok(message.clone()));
        assert_eq!(remembered.unwrap().position, 4);
        assert_eq!(cursor.last, 4);
        let (again, remembered) = cursor.deliver(9, Ok(message.clone()));
        assert_eq!(again, Err(Unreadable::Replayed { first_position: 4 }));
        assert_eq!(remembered, None);
        assert_eq!(cursor.last, 9, "a replay is delivered, as a reason");
        // Reading a page that holds the message at its own position again is no replay.
        assert_eq!(cursor.remember(4, Ok(message.clone())).0, Ok(message));
        assert_eq!(cursor.recent.len(), 1);
    }

    #[test]
    fn an_unreadable_message_moves_last_but_is_not_remembered_and_last_never_falls() {
        let mut cursor = Cursor::default();
        let (outcome, remembered) = cursor.deliver(3, Err(Unreadable::BadSignature));
        assert_eq!((outcome, remembered), (Err(Unreadable::BadSignature), None));
        assert_eq!((cursor.last, cursor.recent.len()), (3, 0));
        cursor.advance(2, None);
        assert_eq!(cursor.last, 3);
    }

    #[test]
    fn a_cursor_remembers_the_newest_messages_by_position_whatever_order_they_come_in() {
        let messages = opened(REMEMBERED_PER_ROOM + 4);
        let mut cursor = Cursor::default();
        // Two writers' deliveries merged out of order: positions 2, 1, 4, 3, ...
        for (n, message) in messages.iter().enumerate() {
            let position = (n as u64 ^ 1) + 1;
            cursor.advance(
                position,
                Some(Delivered::new(message.sender(), message.id(), position)),
            );
        }
        assert_eq!(cursor.recent.len(), REMEMBERED_PER_ROOM);
        let positions: Vec<u64> = cursor.recent.iter().map(|d| d.position).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert_eq!(*positions.first().unwrap(), 5, "the four oldest left");
        assert_eq!(cursor.last, REMEMBERED_PER_ROOM as u64 + 4);
    }

    /// The rule of protocol §15.4 as [`Inbox`] runs it, against a room's stored history: live
    /// copies that arrive out of order, twice or not at all are delivered in position order,
    /// each once, with nothing missed once the history is read.
    #[test]
    fn live_copies_reordered_repeated_or_lost_deliver_the_history_in_order_once() {
        let history: Vec<(u64, u64)> = vec![(3, 0), (5, 3), (6, 5), (9, 6), (12, 9), (13, 12)];
        let read_after = |last: u64| -> Vec<u64> {
            history
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| *p > last)
                .collect()
        };
        // Copies as the network handed them over: 5 lost, 9 before 6, 12 twice, 13 lost.
        let arrivals = [(3, 0), (9, 6), (6, 5), (12, 9), (12, 9)];
        let mut cursor = Cursor::default();
        let mut delivered = Vec::new();
        let mut deliver = |cursor: &mut Cursor, position: u64| {
            if position > cursor.last {
                cursor.advance(position, None);
                delivered.push(position);
            }
        };
        for (position, previous) in arrivals {
            match cursor.step(position, previous) {
                LiveStep::Deliver => deliver(&mut cursor, position),
                LiveStep::Duplicate => {}
                LiveStep::ReadGap => {
                    for stored in read_after(cursor.last) {
                        deliver(&mut cursor, stored);
                    }
                    if cursor.step(position, previous) == LiveStep::Deliver {
                        deliver(&mut cursor, position);
                    }
                }
            }
        }
        // 13 came after the gap read that took it; a reconnection's catch-up reads nothing.
        for stored in read_after(cursor.last) {
            deliver(&mut cursor, stored);
        }
        assert_eq!(delivered, [3, 5, 6, 9, 12, 13]);
    }

    #[test]
    fn a_page_is_asked_for_within_the_protocols_limits_only() {
        let request = Page::Before {
            position: 40,
            limit: 10,
        }
        .request(&room())
        .unwrap();
        assert_eq!(
            (request.after, request.before, request.limit),
            (None, Some(40), Some(10))
        );
        let request = Page::After {
            position: 0,
            limit: MAX_PAGE,
        }
        .request(&room())
        .unwrap();
        assert_eq!((request.after, request.before), (Some(0), None));
        for bad in [
            Page::Latest { limit: 0 },
            Page::Latest {
                limit: MAX_PAGE + 1,
            },
            Page::After {
                position: MAX_POSITION + 1,
                limit: 1,
            },
        ] {
            assert!(matches!(
                bad.request(&room()),
                Err(SessionError::InvalidArgument(_))
            ));
        }
    }
}
