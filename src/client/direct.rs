//! Direct sends (protocol §15.2): an envelope goes straight to its room's stream subject when
//! the session's current login was granted that room, and through membershipd's relay
//! otherwise.
//!
//! - At login, membershipd grants each member the store subject and the live subject of the
//!   rooms it is in (at most 1,000), and cuts its sessions when it leaves one of them. A
//!   session asks nats-server which subjects its login may publish and subscribe to
//!   (`$SYS.REQ.USER.INFO`) once per connection, the first time it sends or watches messages
//!   (the watch's use of the live grants is in `live.rs`).
//! - A direct send is a JetStream publish with the envelope's `Nats-Msg-Id`, whose
//!   acknowledgement gives the position. When it fails (no acknowledgement in time, a login
//!   cut meanwhile), the same bytes go through the relay: the stream stores them once either
//!   way.
//! - The stream cannot refuse an envelope of an epoch that is no longer the room's latest, as
//!   the relay does, so a session sends straight to it only with a key whose epoch it
//!   confirmed as the room's latest within `SessionOptions::send_key_fresh` ([`KEY_FRESH`] by
//!   default; [`SendingKeys`]): by fetching the key, or by a send through the relay. A sender
//!   that sends at least once a second sends one message a second through the relay; an
//!   occasional sender, each message (two hops, and no extra request).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use tokio::time::Instant;

use super::opened::OpenedKeys;
use super::{Session, SessionError};
use crate::envelope::{Envelope, EpochKey};
use crate::protocol::messages::{
    dedup_id, store_subject, SendReply, LIVE_PREFIX, STORE_PREFIX, STREAM,
};
use crate::RoomId;

/// How long after its epoch was confirmed as the room's latest a session sends with an epoch
/// key straight to the stream, by default
/// ([`SessionOptions::send_key_fresh`](super::SessionOptions::send_key_fresh), protocol §15.2).
pub const KEY_FRESH: Duration = Duration::from_secs(1);

/// The subject on which nats-server tells a client its own permissions.
const USER_INFO: &str = "$SYS.REQ.USER.INFO";

/// Per room, the latest epoch key a session sent with, and when it was last confirmed as the
/// room's latest.
pub(crate) type SendingKeys = OpenedKeys<RoomId, (EpochKey, Instant)>;

/// The rooms the session's current login may send to directly, and receive live copies of
/// directly, as nats-server said.
#[derive(Default)]
pub(crate) struct Grants(Mutex<Option<Granted>>);

#[derive(Clone)]
struct Granted {
    /// The connection (as the session's liveness counts them) the answer is about.
    connection: u64,
    /// The rooms whose store subjects the login may publish to.
    send: Arc<HashSet<RoomId>>,
    /// The rooms whose live subjects the login may subscribe to (protocol §15.4).
    live: Arc<HashSet<RoomId>>,
}

impl Grants {
    fn lock(&self) -> MutexGuard<'_, Option<Granted>> {
        // Replaced whole; a poisoned lock still guards a sound value.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The rooms whose subjects under `prefix` (`unibus.msg` or `unibus.live`) are among `allowed`
/// (nats-server's list of the subjects a login may publish or subscribe to).
fn granted_rooms<'a>(prefix: &str, allowed: impl IntoIterator<Item = &'a str>) -> HashSet<RoomId> {
    let prefix = format!("{prefix}.");
    allowed
        .into_iter()
        .filter_map(|subject| subject.strip_prefix(&prefix))
        .filter_map(|room| RoomId::new(room).ok())
        .collect()
}

impl Session {
    /// Whether the current login may publish to `room`'s store subject. Asks nats-server once
    /// per connection; a question that fails counts as no grant for the rest of the connection
    /// (the relay is always allowed, and a server that does not answer, an older membershipd
    /// that does not allow the question, costs each send nothing more).
    pub(super) async fn may_send_directly(&self, room: &RoomId) -> bool {
        self.granted().await.send.contains(room)
    }

    /// The rooms whose live copies the current login may subscribe to (protocol §15.4), asked
    /// as [`may_send_directly`](Self::may_send_directly) asks, with the connection they are
    /// about.
    pub(super) async fn live_grants(&self) -> (u64, Arc<HashSet<RoomId>>) {
        let granted = self.granted().await;
        (granted.connection, granted.live)
    }

    /// The current connection's grants, asked of nats-server the first time.
    async fn granted(&self) -> Granted {
        let connection = self.connection();
        if let Some(granted) = &*self.grants().lock() {
            if granted.connection == connection {
                return granted.clone();
            }
        }
        let (send, live) = match self.ask_grants().await {
            Ok((send, live)) => (Arc::new(send), Arc::new(live)),
            Err(error) => {
                tracing::debug!(%error, "could not learn this login's grants; sending and listening through membershipd");
                Default::default()
            }
        };
        let granted = Granted {
            connection,
            send,
            live,
        };
        // Kept for the connection it was asked on: after a reconnection it is asked again.
        *self.grants().lock() = Some(granted.clone());
        granted
    }

    async fn ask_grants(&self) -> Result<(HashSet<RoomId>, HashSet<RoomId>), SessionError> {
        let timeout = self.request_timeout();
        let reply = tokio::time::timeout(timeout, self.client().request(USER_INFO, "".into()))
            .await
            .map_err(|_| SessionError::Timeout(timeout))?
            .map_err(|e| SessionError::Transport(e.into()))?;
        let info: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| SessionError::InvalidReply(format!("the login's permissions: {e}")))?;
        let permissions = &info["data"]["permissions"];
        let allowed = |kind: &str| {
            permissions[kind]["allow"]
                .as_array()
                .map(|list| list.iter().filter_map(|s| s.as_str()))
                .ok_or_else(|| {
                    SessionError::InvalidReply(format!(
                        "the login's permissions list no subjects to {kind} to"
                    ))
                })
        };
        Ok((
            granted_rooms(STORE_PREFIX, allowed("publish")?),
            granted_rooms(LIVE_PREFIX, allowed("subscribe")?),
        ))
    }

    /// Publishes `envelope` to its room's stream subject and waits for the stream's
    /// acknowledgement. A failure forgets the login's grants, so the next send asks again.
    pub(super) async fn send_directly(
        &self,
        envelope: &Envelope,
    ) -> Result<SendReply, SessionError> {
        let outcome = self.publish(envelope).await;
        if outcome.is_err() {
            *self.grants().lock() = None;
        }
        outcome
    }

    async fn publish(&self, envelope: &Envelope) -> Result<SendReply, SessionError> {
        let timeout = self.request_timeout();
        let publish = PublishMessage::build()
            .message_id(dedup_id(envelope.room(), envelope.sender(), envelope.id()))
            .payload(envelope.to_bytes().into());
        let ack = self
            .jetstream()
            .send_publish(store_subject(envelope.room()), publish)
            .await
            .map_err(|e| SessionError::Transport(e.into()))?
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::PublishErrorKind::TimedOut => SessionError::Timeout(timeout),
                _ => SessionError::Transport(e.into()),
            })?;
        if ack.stream != STREAM {
            return Err(SessionError::InvalidReply(format!(
                "a send was acknowledged by stream {}, not {STREAM}",
                ack.stream
            )));
        }
        Ok(SendReply {
            position: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_store_or_live_subjects_of_valid_rooms_are_grants() {
        let rooms = granted_rooms(
            STORE_PREFIX,
            [
                "unibus.msg.general",
                "unibus.msg.ops",
                "unibus.cp.abc.>",
                "_INBOX_abc.>",
                "$SYS.REQ.USER.INFO",
                "unibus.msg.>",
                "unibus.msgs.x",
            ],
        );
        let expected: HashSet<RoomId> = ["general", "ops"]
            .into_iter()
            .map(|r| RoomId::new(r).unwrap())
            .collect();
        assert_eq!(rooms, expected);
        let live = granted_rooms(
            LIVE_PREFIX,
            [
                "unibus.live.general",
                "unibus.msg.ops",
                "unibus.live.*",
                "unibus.live.>",
            ],
        );
        assert_eq!(live, HashSet::from([RoomId::new("general").unwrap()]));
    }
}
