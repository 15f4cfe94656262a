//! Live copies (protocol §15.4). The stream republishes every envelope it stores on
//! `unibus.live.<room>`, with its position (`Nats-Sequence`), the room's previous position
//! (`Nats-Last-Sequence`) and its time (`Nats-Time-Stamp`). Every membershipd instance
//! subscribes there in one queue group, so each stored envelope is taken by one instance
//! cluster-wide, which sends it as a [`LiveMessage`] to each current, active member of the room
//! on `unibus.events.<member>.message`. It asks the store for the members
//! ([`Store::active_member_keys`]), which membershipd's authorization cache answers from memory
//! while its change feed is fresh, so a message costs no store read: a member added or removed
//! gets, or stops getting, copies within the feed's bound (1 s), on every instance.
//!
//! Nothing is polled: an instance with no messages does nothing. A copy is best effort, like
//! every notification: one taken by an instance that stops before it sends is lost, and clients
//! catch up with `messages` (§15.4).

use std::sync::Arc;

use async_nats::jetstream::message::StreamMessage;
use futures::StreamExt;
use unibus::protocol::messages::{member_live_subject, LiveMessage, LIVE_PREFIX};
use unibus::RoomId;

use super::reader::millis;
use super::MessagesError;
use crate::store::{Store, StoreError};

/// The queue group every instance's fan-out subscribes in.
pub const FANOUT_QUEUE_GROUP: &str = "unibus-messages";

/// The fan-out of live copies. See the [module documentation](self).
pub struct Fanout {
    store: Arc<dyn Store>,
    client: async_nats::Client,
}

impl Fanout {
    /// A fan-out on `client`, membershipd's control-plane connection in the users' account.
    pub fn new(store: Arc<dyn Store>, client: async_nats::Client) -> Self {
        Self { store, client }
    }

    /// Subscribes (in the queue group) and returns once the server holds the subscription,
    /// fanning out in a task of its own from then on.
    pub async fn start(self: Arc<Self>) -> Result<tokio::task::JoinHandle<()>, async_nats::Error> {
        let mut copies = self
            .client
            .queue_subscribe(format!("{LIVE_PREFIX}.>"), FANOUT_QUEUE_GROUP.into())
            .await?;
        self.client.flush().await?;
        Ok(tokio::spawn(async move {
            while let Some(copy) = copies.next().await {
                let subject = copy.subject.to_string();
                match self.deliver(copy).await {
                    Ok(sent) => tracing::trace!(subject, sent, "a live copy was fanned out"),
                    Err(e) => tracing::warn!(subject, error = %e, "a live copy was not fanned out"),
                }
            }
        }))
    }

    /// Sends one republished copy to every active member of its room; returns how many.
    pub async fn deliver(&self, copy: async_nats::Message) -> Result<usize, MessagesError> {
        let malformed = |what: &str| MessagesError::Malformed(format!("a live copy: {what}"));
        let room = copy
            .subject
            .strip_prefix(LIVE_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|room| RoomId::new(room).ok())
            .ok_or_else(|| malformed("its subject names no room"))?;
        let previous = copy
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Last-Sequence"))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .ok_or_else(|| malformed("no Nats-Last-Sequence"))?;
        let stored = StreamMessage::try_from(copy).map_err(|e| malformed(&e.to_string()))?;
        if previous >= stored.sequence {
            return Err(malformed("its previous position is not below its own"));
        }
        let live: bytes::Bytes = LiveMessage {
            position: stored.sequence,
            previous,
            time: millis(stored.time),
            envelope: stored.payload.to_vec(),
        }
        .to_bytes()
        .into();
        let members = match self.store.active_member_keys(&room).await {
            Ok(members) => members,
            // The room is gone: nobody to tell.
            Err(StoreError::NotFound) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut sent = 0;
        for member in &members {
            if let Err(e) = self
                .client
                .publish(member_live_subject(member), live.clone())
                .await
            {
                tracing::debug!(error = %e, "a live copy could not be published");
            } else {
                sent += 1;
            }
        }
        Ok(sent)
    }
}
