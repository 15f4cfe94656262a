//! Where a message watch gets its live copies (protocol §15.4): straight from the stream for the
//! rooms its login was granted, leased from membershipd for the others.
//!
//! - At login, membershipd grants a member the live subject (`unibus.live.<room>`) of each room
//!   it is in (at most 1,000). The watch subscribes there, and nats-server hands it each
//!   envelope the stream stores in the room, with its position and the room's previous one:
//!   membershipd does nothing per copy.
//! - A room joined after the login, or beyond the 1,000, has no grant until the next login. The
//!   watch leases its copies from a membershipd instance (`listen`), which sends them on the
//!   identity's own `unibus.events.<member>.message`. It renews the leases every
//!   [`LISTEN_RENEW`] on the instance that holds them; when that instance does not answer, it
//!   leases them anew from any instance, and reads the rooms whose lease is new there, since
//!   their copies may have reached nobody meanwhile.
//! - Either way, a room's copies are arranged before the room is read, so nothing stored in
//!   between is missed. After a reconnection (a new login, with grants of its own) the watch
//!   arranges every room again.

use std::collections::HashSet;

use async_nats::jetstream::message::StreamMessage;
use futures_util::stream::{SelectAll, StreamExt};
use tokio::time::Instant;

use super::{Session, SessionError};
use crate::protocol::control::is_instance_token;
use crate::protocol::messages::{
    live_room, live_subject, ListenRequest, LiveMessage, LISTEN_RENEW, MAX_LISTEN_ROOMS,
    PREVIOUS_HEADER,
};
use crate::RoomId;

/// How long after a failed renewal the watch tries again (well within a lease).
const RENEW_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// A message watch's sources of live copies. See the [module documentation](self).
pub(crate) struct Live {
    session: Session,
    /// The connection the subscriptions are on.
    connection: Option<u64>,
    /// The rooms subscribed to on `connection`.
    direct: HashSet<RoomId>,
    /// Their subscriptions.
    copies: SelectAll<async_nats::Subscriber>,
    /// The rooms leased, and the instance that holds their leases.
    leased: HashSet<RoomId>,
    instance: Option<String>,
    /// When to renew the leases; `None` while there are none.
    renew_at: Option<Instant>,
}

impl Live {
    pub(crate) fn new(session: Session) -> Self {
        Self {
            session,
            connection: None,
            direct: HashSet::new(),
            copies: SelectAll::new(),
            leased: HashSet::new(),
            instance: None,
            renew_at: None,
        }
    }

    /// Arranges the copies of `rooms`, every room of this identity, on the current connection:
    /// subscribes to those its login was granted, leases the others (and lets the leases of
    /// rooms no longer listed end). Call it before reading the rooms.
    pub(crate) async fn arrange(&mut self, rooms: &[RoomId]) -> Result<(), SessionError> {
        let (connection, granted) = self.session.live_grants().await;
        if self.connection != Some(connection) {
            // A new login: its own grants; the old subscriptions end with the old ones.
            self.copies = SelectAll::new();
            self.direct.clear();
            self.connection = Some(connection);
        }
        let listed: HashSet<&RoomId> = rooms.iter().collect();
        self.leased.retain(|room| listed.contains(room));
        let mut to_lease = Vec::new();
        for room in rooms {
            if self.direct.contains(room) {
                continue;
            }
            if granted.contains(room) {
                self.subscribe(room).await?;
                // Its lease, if any, ends unrenewed.
                self.leased.remove(room);
            } else if !self.leased.contains(room) {
                to_lease.push(room.clone());
            }
        }
        self.lease(to_lease).await.map(drop)
    }

    /// Arranges the copies of `room`, just joined. Call it before reading the room. Returns the
    /// other rooms to read: those whose leases had to move to another instance, since their
    /// copies may have reached nobody meanwhile.
    pub(crate) async fn add(&mut self, room: &RoomId) -> Result<Vec<RoomId>, SessionError> {
        if self.direct.contains(room) || self.leased.contains(room) {
            return Ok(Vec::new());
        }
        let (connection, granted) = self.session.live_grants().await;
        if self.connection == Some(connection) && granted.contains(room) {
            return self.subscribe(room).await.map(|()| Vec::new());
        }
        let mut new = self.lease(vec![room.clone()]).await?;
        new.retain(|other| other != room);
        Ok(new)
    }

    /// Stops renewing the lease of `room`, left. (A subscription ends with the login, which
    /// membershipd cuts when a member leaves a room it was granted.)
    pub(crate) fn remove(&mut self, room: &RoomId) {
        self.leased.remove(room);
    }

    /// When the leases are due for renewal; `None` while there are none.
    pub(crate) fn renew_at(&self) -> Option<Instant> {
        self.renew_at
    }

    /// Renews the leases. Returns the rooms whose lease was new at the instance that answered:
    /// read them, their copies may have reached nobody.
    pub(crate) async fn renew(&mut self) -> Result<Vec<RoomId>, SessionError> {
        let rooms: Vec<RoomId> = self.leased.iter().cloned().collect();
        // Set again once they are renewed.
        self.renew_at = None;
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let renewed = self.lease(rooms).await;
        if renewed.is_err() {
            self.renew_at = Some(Instant::now() + RENEW_RETRY);
        }
        renewed
    }

    /// The next copy that came straight from the stream, with its room. Pending while there is
    /// none.
    pub(crate) async fn next(&mut self) -> Result<(RoomId, LiveMessage), SessionError> {
        loop {
            if self.copies.is_empty() {
                return std::future::pending().await;
            }
            match self.copies.next().await {
                Some(message) => return read_copy(message),
                // Every subscription ended with the connection: none until the next arrangement.
                None => self.copies = SelectAll::new(),
            }
        }
    }

    async fn subscribe(&mut self, room: &RoomId) -> Result<(), SessionError> {
        let subscriber = self
            .session
            .client()
            .subscribe(live_subject(room))
            .await
            .map_err(|e| SessionError::Transport(e.into()))?;
        self.copies.push(subscriber);
        self.direct.insert(room.clone());
        Ok(())
    }

    /// Leases `rooms` on the instance that holds the other leases, or, when it is gone, all of
    /// them anew from any instance. Returns the rooms whose lease is new at the instance.
    async fn lease(&mut self, rooms: Vec<RoomId>) -> Result<Vec<RoomId>, SessionError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        match self.listen(&rooms).await {
            Err(SessionError::NoResponders | SessionError::Timeout(_))
                if self.instance.is_some() =>
            {
                self.instance = None;
                let mut all: Vec<RoomId> = self.leased.drain().chain(rooms).collect();
                all.sort();
                all.dedup();
                self.listen(&all).await
            }
            leased => leased,
        }
    }

    /// `listen` for `rooms`, in requests of at most [`MAX_LISTEN_ROOMS`], all to one instance.
    async fn listen(&mut self, rooms: &[RoomId]) -> Result<Vec<RoomId>, SessionError> {
        let mut new = Vec::new();
        for chunk in rooms.chunks(MAX_LISTEN_ROOMS) {
            let request = ListenRequest {
                rooms: chunk.to_vec(),
                instance: self.instance.clone(),
            };
            let reply = self.session.call(&request).await?;
            let steered = self
                .instance
                .as_ref()
                .is_some_and(|asked| *asked != reply.instance);
            if steered || !is_instance_token(&reply.instance) {
                return Err(SessionError::InvalidReply(
                    "listen named an instance that is not a subject token, or not the one asked"
                        .into(),
                ));
            }
            self.instance = Some(reply.instance);
            let asked: HashSet<&RoomId> = chunk.iter().collect();
            let leased: HashSet<RoomId> = reply
                .rooms
                .into_iter()
                .filter(|room| asked.contains(room))
                .collect();
            // A room not leased is no longer this identity's.
            for room in chunk {
                if !leased.contains(room) {
                    self.leased.remove(room);
                }
            }
            new.extend(reply.new.into_iter().filter(|room| leased.contains(room)));
            self.leased.extend(leased);
        }
        // A room leased now does not put off the renewal of the others.
        let next = Instant::now() + LISTEN_RENEW;
        self.renew_at = match self.renew_at {
            _ if self.leased.is_empty() => None,
            Some(at) => Some(at.min(next)),
            None => Some(next),
        };
        Ok(new)
    }
}

/// A copy the stream republished, as a live message of its room.
fn read_copy(message: async_nats::Message) -> Result<(RoomId, LiveMessage), SessionError> {
    let bad = |what: String| SessionError::InvalidReply(format!("a live copy: {what}"));
    let room =
        live_room(&message.subject).ok_or_else(|| bad("its subject names no room".into()))?;
    let previous = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(PREVIOUS_HEADER))
        .map(|value| value.as_str().to_owned());
    let stored = StreamMessage::try_from(message).map_err(|e| bad(e.to_string()))?;
    let time = u64::try_from(stored.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let live =
        LiveMessage::republished(stored.sequence, previous.as_deref(), time, &stored.payload)
            .map_err(|e| bad(e.to_string()))?;
    Ok((room, live))
}
