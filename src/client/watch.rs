//! Watching the changes that concern this identity (docs/protocol.md §12.6).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};

use super::error::{SessionEnd, SessionError};
use super::liveness::ConnectionState;
use crate::protocol::events::Notification;
use crate::{RoomId, SignPublicKey};

/// A change that concerns this identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomUpdate {
    /// The owner added this identity to a room. There is no key for it until the next rekey.
    Added {
        /// The room.
        room: RoomId,
    },
    /// The owner removed this identity from a room; none of its keys can be fetched any more.
    Removed {
        /// The room.
        room: RoomId,
    },
    /// The room has a new epoch with a key sealed to this identity.
    NewEpoch {
        /// The room.
        room: RoomId,
        /// The new epoch.
        epoch: u64,
    },
    /// The connection dropped; the session is reconnecting. Notifications sent meanwhile are
    /// lost.
    Disconnected,
    /// The connection is back. Query the rooms and epochs again: notifications are hints, and
    /// some may have been missed (protocol §12.6).
    Reconnected,
    /// A reply to this session named another owner for a room than the pinned one; the call
    /// failed with [`SessionError::OwnerChanged`]. Raised by the session itself, not sent by
    /// the server. Show it to the user: the server may be lying.
    OwnerChanged {
        /// The room.
        room: RoomId,
        /// The owner pinned for the room.
        pinned: SignPublicKey,
        /// The owner the reply named.
        found: SignPublicKey,
        /// Whether the app had marked the pinned owner verified.
        verified: bool,
    },
}

/// Why a [`Watch`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchEnd {
    /// The app cancelled or dropped it.
    Cancelled,
    /// Its session ended.
    SessionEnded(SessionEnd),
}

enum Item {
    Update(Result<RoomUpdate, SessionError>),
    End(WatchEnd),
}

/// The changes that concern this identity, from [`Session::watch`](super::Session::watch),
/// until cancelled or the session ends.
///
/// Read it with [`next`](Self::next) or as a [`futures_core::Stream`]. It yields an error for a
/// notification it cannot read and goes on; it ends (`None`) when cancelled or when its session
/// ends, and then [`end`](Self::end) says why. Dropping it stops it. A watch keeps its session's
/// connection open while it runs.
///
/// ```no_run
/// # async fn run(session: unibus::client::Session) -> Result<(), unibus::client::SessionError> {
/// use unibus::client::RoomUpdate;
///
/// let mut updates = session.watch().await?;
/// while let Some(update) = updates.next().await {
///     match update? {
///         RoomUpdate::NewEpoch { room, .. } => {
///             let opened = session.room_key(&room, None).await?;
///             println!("{room}: epoch {}", opened.epoch);
///         }
///         other => println!("{other:?}"),
///     }
/// }
/// println!("watch ended: {:?}", updates.end());
/// # Ok(()) }
/// ```
pub struct Watch {
    updates: mpsc::Receiver<Item>,
    end: Option<WatchEnd>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("end", &self.end).finish()
    }
}

impl Watch {
    pub(crate) fn spawn(
        subscriber: async_nats::Subscriber,
        state: watch::Receiver<ConnectionState>,
        alerts: broadcast::Receiver<RoomUpdate>,
    ) -> Watch {
        let (sender, updates) = mpsc::channel(64);
        Watch {
            updates,
            end: None,
            task: tokio::spawn(forward(subscriber, state, alerts, sender)),
        }
    }

    /// The next update; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<RoomUpdate, SessionError>> {
        std::future::poll_fn(|cx| self.poll_update(cx)).await
    }

    /// Why the watch ended; `None` while it runs.
    pub fn end(&self) -> Option<WatchEnd> {
        self.end
    }

    /// Stops the watch: it unsubscribes, and [`next`](Self::next) returns `None`.
    pub fn cancel(&mut self) {
        self.task.abort();
        self.updates.close();
        self.end.get_or_insert(WatchEnd::Cancelled);
    }

    fn poll_update(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<RoomUpdate, SessionError>>> {
        if self.end.is_some() {
            return Poll::Ready(None);
        }
        match self.updates.poll_recv(cx) {
            Poll::Ready(Some(Item::Update(update))) => Poll::Ready(Some(update)),
            Poll::Ready(Some(Item::End(end))) => {
                self.end = Some(end);
                Poll::Ready(None)
            }
            // The task stopped without a word: only after `cancel`, which set `end` already.
            Poll::Ready(None) => {
                self.end.get_or_insert(WatchEnd::Cancelled);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_core::Stream for Watch {
    type Item = Result<RoomUpdate, SessionError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_update(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards notifications, connection changes and the session's own alerts until the session
/// ends or the watch is dropped.
async fn forward(
    mut subscriber: async_nats::Subscriber,
    mut state: watch::Receiver<ConnectionState>,
    alerts: broadcast::Receiver<RoomUpdate>,
    updates: mpsc::Sender<Item>,
) {
    // `None` once the session that sends them is gone.
    let mut alerts = Some(alerts);
    let mut last = *state.borrow_and_update();
    let end = loop {
        if let ConnectionState::Ended(end) = last {
            break end;
        }
        let item = tokio::select! {
            message = subscriber.next() => match message {
                Some(message) => match read_notification(&message.payload) {
                    Some(update) => update,
                    None => continue,
                },
                // The connection closed: the session was closed or dropped.
                None => break SessionEnd::Closed,
            },
            changed = state.changed() => {
                if changed.is_err() {
                    break SessionEnd::Closed;
                }
                let now = *state.borrow_and_update();
                let update = match (last, now) {
                    (ConnectionState::Connected, ConnectionState::Reconnecting) => {
                        RoomUpdate::Disconnected
                    }
                    (ConnectionState::Reconnecting, ConnectionState::Connected) => {
                        RoomUpdate::Reconnected
                    }
                    _ => {
                        last = now;
                        continue;
                    }
                };
                last = now;
                Ok(update)
            }
            alert = next_alert(&mut alerts) => match alert {
                Some(update) => Ok(update),
                None => continue,
            },
            () = updates.closed() => return,
        };
        if updates.send(Item::Update(item)).await.is_err() {
            return;
        }
    };
    // The state says best why; a closed subscription alone means the session closed.
    let end = match *state.borrow() {
        ConnectionState::Ended(end) => end,
        _ => end,
    };
    let _ = updates.send(Item::End(WatchEnd::SessionEnded(end))).await;
}

/// The session's next alert; `None` (and no more polling) once the session is gone, and
/// `None` after alerts were missed because this watch fell behind (they were logged).
async fn next_alert(alerts: &mut Option<broadcast::Receiver<RoomUpdate>>) -> Option<RoomUpdate> {
    let Some(receiver) = alerts else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(update) => Some(update),
        Err(broadcast::error::RecvError::Lagged(missed)) => {
            tracing::warn!(missed, "a watch fell behind the session's alerts");
            None
        }
        Err(broadcast::error::RecvError::Closed) => {
            *alerts = None;
            None
        }
    }
}

/// A notification as an update; `None` for a kind this version does not know (skipped, as
/// protocol §12.6 asks).
fn read_notification(payload: &[u8]) -> Option<Result<RoomUpdate, SessionError>> {
    match serde_json::from_slice::<Notification>(payload) {
        Ok(Notification::Added { room }) => Some(Ok(RoomUpdate::Added { room })),
        Ok(Notification::Removed { room }) => Some(Ok(RoomUpdate::Removed { room })),
        Ok(Notification::Epoch { room, epoch }) => Some(Ok(RoomUpdate::NewEpoch { room, epoch })),
        Ok(Notification::Unknown) => None,
        Err(e) => Some(Err(SessionError::InvalidReply(format!(
            "unreadable notification: {e}"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_of_every_known_kind_are_read_and_unknown_kinds_are_skipped() {
        let room = RoomId::new("general").unwrap();
        assert_eq!(
            read_notification(br#"{"room":"general","kind":"added"}"#)
                .unwrap()
                .unwrap(),
            RoomUpdate::Added { room: room.clone() }
        );
        assert_eq!(
            read_notification(br#"{"room":"general","kind":"removed"}"#)
                .unwrap()
                .unwrap(),
            RoomUpdate::Removed { room: room.clone() }
        );
        assert_eq!(
            read_notification(br#"{"room":"general","kind":"epoch","epoch":7}"#)
                .unwrap()
                .unwrap(),
            RoomUpdate::NewEpoch { room, epoch: 7 }
        );
        assert!(read_notification(br#"{"room":"general","kind":"renamed"}"#).is_none());
        assert!(matches!(
            read_notification(br#"{"room":"general","kind":"epoch"}"#),
            Some(Err(SessionError::InvalidReply(_)))
        ));
        assert!(matches!(
            read_notification(br#"{"room":"bad room","kind":"added"}"#),
            Some(Err(SessionError::InvalidReply(_)))
        ));
    }
}
