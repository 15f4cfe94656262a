//! Leased live copies (protocol §15.4). The stream republishes every envelope it stores on
//! `unibus.live.<room>`, with its position (`Nats-Sequence`), the room's previous position
//! (`Nats-Last-Sequence`) and its time (`Nats-Time-Stamp`). A member whose login was granted
//! the room subscribes there itself, and nats-server hands it the copy: membershipd does
//! nothing. For a member that leased the room from this instance instead ([`Listeners`]),
//! the instance subscribes to the room's live subject too, from the first lease of the room
//! until the sweep after its last lease ended, and sends each copy as a [`LiveMessage`] on
//! `unibus.events.<member>.message` to each listener that is still an active member of the room:
//! it asks the store ([`Store::is_member`], [`Store::is_authorized`]), which membershipd's
//! authorization cache answers from memory while its change feed is fresh, so a copy costs no
//! store read and a removed member stops getting copies within the feed's bound (1 s), on every
//! instance. A room nobody leased from this instance costs it nothing.
//!
//! Nothing is polled: at rest the fan-out forgets ended leases, and unsubscribes from rooms
//! left without one, once every
//! [`LISTEN_LEASE`](unibus::protocol::messages::LISTEN_LEASE). A copy is best effort, like every
//! notification: one this instance could not send is lost, and clients catch up with
//! `messages` (§15.4).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use futures::StreamExt;
use unibus::protocol::messages::{
    live_room, live_subject, member_live_subject, LiveMessage, PREVIOUS_HEADER,
};
use unibus::{RoomId, SignPublicKey};

use super::reader::millis;
use super::{Listeners, MessagesError};
use crate::store::{Store, StoreError};
use crate::task::AbortOnDrop;

/// The fan-out of leased live copies. See the [module documentation](self).
pub struct Fanout {
    store: Arc<dyn Store>,
    client: async_nats::Client,
    listeners: Arc<Listeners>,
    /// Per room with leases, the task that takes its copies (and holds its subscription).
    rooms: Mutex<HashMap<RoomId, AbortOnDrop>>,
}

impl Fanout {
    /// A fan-out on `client`, membershipd's control-plane connection in the users' account.
    pub fn new(store: Arc<dyn Store>, client: async_nats::Client) -> Self {
        Self {
            store,
            client,
            listeners: Arc::default(),
            rooms: Mutex::default(),
        }
    }

    /// The leases this fan-out serves.
    pub fn listeners(&self) -> Arc<Listeners> {
        Arc::clone(&self.listeners)
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomId, AbortOnDrop>> {
        // Entries are inserted and removed whole; a poisoned lock still guards a sound map.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Leases `member` the copies of `rooms` ([`Listeners::lease`]) and returns, once
    /// nats-server holds a subscription to each room's live subject, the rooms whose lease was
    /// new. The caller checked that `member` is a member of each.
    pub async fn lease(
        self: &Arc<Self>,
        member: &SignPublicKey,
        rooms: &[RoomId],
    ) -> Result<Vec<RoomId>, async_nats::Error> {
        // The lease first: a sweep meanwhile keeps the room's subscription.
        let new = self.listeners.lease(member, rooms);
        let missing: Vec<&RoomId> = {
            let subscribed = self.rooms();
            rooms
                .iter()
                .filter(|r| !subscribed.contains_key(*r))
                .collect()
        };
        if missing.is_empty() {
            return Ok(new);
        }
        for room in missing {
            let copies = self.client.subscribe(live_subject(room)).await?;
            let task = AbortOnDrop(tokio::spawn(take_copies(Arc::downgrade(self), copies)));
            // A lease of the same room at the same moment may have subscribed too: one stays.
            self.rooms().entry(room.clone()).or_insert(task);
        }
        // Every subscription is in place before the caller hears of its lease.
        self.client.flush().await?;
        Ok(new)
    }

    /// Forgets ended leases, and unsubscribes from the rooms left without one.
    pub fn sweep(&self) {
        self.listeners.sweep();
        // Asked per room under the lock: a room leased meanwhile keeps its subscription.
        self.rooms()
            .retain(|room, _| !self.listeners.of(room).is_empty());
    }

    /// [`sweep`](Self::sweep)s every `period` while `fanout` lives.
    pub async fn sweep_every(fanout: Weak<Self>, period: Duration) {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            match fanout.upgrade() {
                Some(fanout) => fanout.sweep(),
                None => return,
            }
        }
    }

    /// Sends one republished copy to every member that leased its room from this instance and
    /// is an active member of it; returns how many.
    pub async fn deliver(&self, copy: async_nats::Message) -> Result<usize, MessagesError> {
        let malformed = |what: &str| MessagesError::Malformed(format!("a live copy: {what}"));
        let room =
            live_room(&copy.subject).ok_or_else(|| malformed("its subject names no room"))?;
        let listeners = self.listeners.of(&room);
        if listeners.is_empty() {
            return Ok(0);
        }
        let previous = copy
            .headers
            .as_ref()
            .and_then(|h| h.get(PREVIOUS_HEADER))
            .map(|v| v.as_str().to_owned());
        let stored = StreamMessage::try_from(copy).map_err(|e| malformed(&e.to_string()))?;
        let live: bytes::Bytes = LiveMessage::republished(
            stored.sequence,
            previous.as_deref(),
            millis(stored.time),
            &stored.payload,
        )
        .map_err(|e| malformed(&e.to_string()))?
        .to_bytes()
        .into();
        let mut sent = 0;
        for member in &listeners {
            // Checked at every copy, from the authorization cache; an outage sends nothing.
            let current = match self.store.is_member(&room, member).await {
                Ok(true) => self.store.is_authorized(member).await,
                Ok(false) | Err(StoreError::NotFound) => false,
                Err(e) => return Err(e.into()),
            };
            if !current {
                continue;
            }
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

/// Takes a room's copies until its subscription ends or the fan-out is gone.
async fn take_copies(fanout: Weak<Fanout>, mut copies: async_nats::Subscriber) {
    while let Some(copy) = copies.next().await {
        let Some(fanout) = fanout.upgrade() else {
            return;
        };
        let subject = copy.subject.to_string();
        match fanout.deliver(copy).await {
            Ok(sent) => tracing::trace!(subject, sent, "a live copy was fanned out"),
            Err(e) => tracing::warn!(subject, error = %e, "a live copy was not fanned out"),
        }
    }
}
