//! Watching the changes that concern this identity (docs/protocol.md §12.6).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};

use super::error::{SessionEnd, SessionError};
use super::live::Live;
use super::liveness::ConnectionState;
use super::messages::{report, Delivery, Gone, Inbox, Received};
use super::trust::TrustStore;
use crate::protocol::events::Notification;
use crate::protocol::messages::LiveMessage;
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
    /// The room's owner shared the keys of earlier epochs with this identity (a history
    /// share, protocol §16): messages of those epochs that read as
    /// [`Unreadable::NoKey`](super::Unreadable::NoKey) can now be opened. A watch does not
    /// deliver again what it delivered already: read them again with
    /// [`Session::messages`](super::Session::messages).
    HistoryShared {
        /// The room.
        room: RoomId,
        /// The epochs shared, ascending.
        epochs: Vec<u64>,
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
    /// A message of a room, opened or with the reason it cannot be read. Only from
    /// [`Session::watch_with_messages`](super::Session::watch_with_messages), in position order
    /// per room, each once.
    Message {
        /// The room.
        room: RoomId,
        /// The message.
        message: Received,
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

pub(crate) enum Item {
    Update(Result<RoomUpdate, SessionError>),
    /// A message, and what to remember of it once the app has taken it.
    Message {
        message: Received,
        delivery: Delivery,
    },
    End(WatchEnd),
}

/// How many messages the app may take before their cursors are written, while more are
/// waiting; the cursors are written at once whenever none is waiting.
const WRITE_EVERY: usize = 64;

/// The changes that concern this identity, from [`Session::watch`](super::Session::watch),
/// until cancelled or the session ends; with the rooms' messages too, from
/// [`Session::watch_with_messages`](super::Session::watch_with_messages).
///
/// Read it with [`next`](Self::next) or as a [`futures_core::Stream`]. It yields an error for a
/// notification it cannot read and goes on; it ends (`None`) when cancelled or when its session
/// ends, and then [`end`](Self::end) says why. Dropping it stops it. A watch keeps its session's
/// connection open while it runs.
///
/// With messages, a [`RoomUpdate::Message`] counts as handled once the app asks for the next
/// update, or cancels or drops the watch; the handled messages' cursors are then written to the
/// session's [`TrustStore`] whenever no update is waiting, and after at most 64 otherwise. A
/// process that dies while handling messages gets those not yet written again after a restart,
/// at their same positions (at least once; docs/client.md, "Messages").
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
    /// Where the cursors of delivered messages are kept; `None` without messages.
    trust: Option<TrustStore>,
    /// The message handed out last: the app is handling it until it asks for the next update.
    taken: Option<Delivery>,
    /// Messages the app has handled, whose cursors are not written yet.
    handled: Vec<Delivery>,
    /// After a failed write, how many handled messages to gather before trying again, so that
    /// a store that keeps failing reports once per [`WRITE_EVERY`] messages, not on every poll.
    write_again_at: usize,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("end", &self.end).finish()
    }
}

impl Watch {
    /// Forwards what `subscriber` gets (skipping leased live messages on `live_subject` unless
    /// an inbox handles them, writing their cursors to its trust store), connection changes
    /// from `state` and the session's `alerts`; with an inbox, the live copies it arranges.
    pub(crate) fn spawn(
        subscriber: async_nats::Subscriber,
        state: watch::Receiver<ConnectionState>,
        alerts: broadcast::Receiver<RoomUpdate>,
        live_subject: String,
        messages: Option<(Inbox, TrustStore)>,
    ) -> Watch {
        let (sender, updates) = mpsc::channel(64);
        let (inbox, trust) = messages.unzip();
        let sources = Sources {
            subscriber,
            state,
            alerts,
            live_subject,
        };
        Watch {
            updates,
            end: None,
            task: tokio::spawn(async move {
                // `Gone`: the watch was dropped, nobody is left to tell.
                let _ = forward(sources, inbox, sender).await;
            }),
            trust,
            taken: None,
            handled: Vec::new(),
            write_again_at: 0,
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

    /// Stops the watch: it unsubscribes, and [`next`](Self::next) returns `None`. The
    /// message taken last counts as handled, and the cursors are written.
    pub fn cancel(&mut self) {
        self.task.abort();
        self.updates.close();
        self.end.get_or_insert(WatchEnd::Cancelled);
        self.write_cursors_on_leaving();
    }

    /// Stops the watch as [`cancel`](Self::cancel) does, except that the message taken last
    /// (returned by the last [`next`](Self::next)) does not count as handled: for an app that
    /// never got it (the call that returned it was given up as it finished). The cursors of the
    /// messages handled before it are written; its own is not, so the next watch with messages
    /// on the same [`TrustStore`] delivers it again, at its same position.
    pub fn cancel_last_unhandled(&mut self) {
        self.taken = None;
        self.cancel();
    }

    fn poll_update(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<RoomUpdate, SessionError>>> {
        if self.end.is_some() {
            return Poll::Ready(None);
        }
        // Asking for the next update says the app has handled the message it took last.
        self.handled.extend(self.taken.take());
        if self.handled.len() >= WRITE_EVERY {
            if let Err(error) = self.write_cursors() {
                return Poll::Ready(Some(Err(error)));
            }
        }
        match self.updates.poll_recv(cx) {
            Poll::Ready(Some(Item::Update(update))) => Poll::Ready(Some(update)),
            Poll::Ready(Some(Item::Message { message, delivery })) => {
                let room = delivery.room.clone();
                self.taken = Some(delivery);
                Poll::Ready(Some(Ok(RoomUpdate::Message { room, message })))
            }
            Poll::Ready(Some(Item::End(end))) => {
                self.end = Some(end);
                self.write_cursors_on_leaving();
                Poll::Ready(None)
            }
            // The task stopped without a word: only after `cancel`, which set `end` already.
            Poll::Ready(None) => {
                self.end.get_or_insert(WatchEnd::Cancelled);
                Poll::Ready(None)
            }
            // Nothing is waiting: the app has handled everything it took.
            Poll::Pending => match self.write_cursors() {
                Ok(()) => Poll::Pending,
                Err(error) => Poll::Ready(Some(Err(error))),
            },
        }
    }

    /// Writes the cursors of the messages the app has handled to the trust store, in one
    /// atomic write. On failure they are kept, to be written with the next ones.
    fn write_cursors(&mut self) -> Result<(), SessionError> {
        let Some(trust) = &self.trust else {
            return Ok(());
        };
        if self.handled.is_empty() || self.handled.len() < self.write_again_at {
            return Ok(());
        }
        if let Err(error) = trust.record_delivered(&self.handled) {
            self.write_again_at = self.handled.len() + WRITE_EVERY;
            return Err(error.into());
        }
        self.handled.clear();
        self.write_again_at = 0;
        Ok(())
    }

    /// The watch is ending or dropped: the message taken last counts as handled.
    fn write_cursors_on_leaving(&mut self) {
        self.handled.extend(self.taken.take());
        self.write_again_at = 0;
        if let Err(error) = self.write_cursors() {
            tracing::warn!(%error, "the cursors of delivered messages could not be written; they will be delivered again");
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
        self.write_cursors_on_leaving();
    }
}

/// Whether a message watch has rooms it could not read to their end, and when it tries again.
#[derive(Debug, Default)]
struct Behind {
    /// Failed catch-ups in a row; 0 when nothing is behind.
    failures: usize,
    /// When to try again.
    retry_at: Option<tokio::time::Instant>,
}

impl Behind {
    /// Records a catch-up's outcome: `complete`, or not (then it is tried again after a
    /// backoff that grows with each failure in a row).
    fn after(&mut self, complete: bool) {
        if complete {
            *self = Self::default();
        } else {
            self.failures += 1;
            let wait = super::liveness::backoff(self.failures);
            self.retry_at = Some(tokio::time::Instant::now() + wait);
        }
    }

    fn is_behind(&self) -> bool {
        self.retry_at.is_some()
    }

    /// Resolves when it is time to try again (never while nothing is behind).
    async fn retry(&self) {
        match self.retry_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

/// What a watch's task listens to.
struct Sources {
    subscriber: async_nats::Subscriber,
    state: watch::Receiver<ConnectionState>,
    alerts: broadcast::Receiver<RoomUpdate>,
    /// Where live messages come; skipped without an inbox.
    live_subject: String,
}

/// Forwards notifications, connection changes, the session's own alerts and, with an inbox,
/// messages, until the session ends, or the watch is dropped ([`Gone`]).
async fn forward(
    sources: Sources,
    mut inbox: Option<Inbox>,
    updates: mpsc::Sender<Item>,
) -> Result<(), Gone> {
    let updates = &updates;
    let Sources {
        mut subscriber,
        mut state,
        alerts,
        live_subject,
    } = sources;
    // Where the inbox's live copies come from; only used with an inbox.
    let mut live = inbox
        .as_ref()
        .map(|inbox| Live::new(inbox.session().clone()));
    // `None` once the session that sends them is gone.
    let mut alerts = Some(alerts);
    let mut last = *state.borrow_and_update();
    // The subscription is made: what is stored from now on comes live, the rest is read.
    let mut behind = Behind::default();
    if let (Some(inbox), Some(live)) = (inbox.as_mut(), live.as_mut()) {
        behind.after(inbox.catch_up_all(live, updates).await?);
    }
    let end = loop {
        if let ConnectionState::Ended(end) = last {
            break end;
        }
        let renew_at = live.as_ref().and_then(Live::renew_at);
        let item = tokio::select! {
            message = subscriber.next() => match message {
                Some(message) if message.subject.as_str() == live_subject => {
                    if let Some(inbox) = inbox.as_mut() {
                        if !inbox.on_leased(&message.payload, updates).await? {
                            behind.after(false);
                        }
                    }
                    continue;
                }
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
            copy = next_copy(&mut live) => {
                if let Some(inbox) = inbox.as_mut() {
                    let delivered = match copy {
                        Ok((room, copy)) => inbox.on_live(room, copy, updates).await?,
                        Err(error) => {
                            report(updates, error).await?;
                            true
                        }
                    };
                    if !delivered {
                        behind.after(false);
                    }
                }
                continue;
            }
            // Leased copies go on only while their leases are renewed.
            () = sleep_until(renew_at), if renew_at.is_some() => {
                if let (Some(inbox), Some(live)) = (inbox.as_mut(), live.as_mut()) {
                    match live.renew().await {
                        // Copies of a room whose lease is new may have reached nobody.
                        Ok(new) => {
                            for room in new {
                                if !inbox.catch_up(&room, updates).await? {
                                    behind.after(false);
                                }
                            }
                        }
                        Err(error) => {
                            report(updates, error).await?;
                            // The next catch-up leases what is not leased.
                            behind.after(false);
                        }
                    }
                }
                continue;
            }
            // A catch-up that failed is tried again, with backoff.
            () = behind.retry(), if inbox.is_some() && behind.is_behind() => {
                if let (Some(inbox), Some(live)) = (inbox.as_mut(), live.as_mut()) {
                    behind.after(inbox.catch_up_all(live, updates).await?);
                }
                continue;
            }
            () = updates.closed() => return Err(Gone),
        };
        // What a message watch reads after the update: a reconnection may have missed live
        // messages of every room, and a room just joined has its history.
        let catch_up = match &item {
            Ok(RoomUpdate::Reconnected) => Some(None),
            Ok(RoomUpdate::Added { room }) => Some(Some(room.clone())),
            Ok(RoomUpdate::Removed { room }) => {
                if let Some(live) = live.as_mut() {
                    live.remove(room);
                }
                None
            }
            _ => None,
        };
        updates.send(Item::Update(item)).await.map_err(|_| Gone)?;
        if let (Some(inbox), Some(live), Some(which)) = (inbox.as_mut(), live.as_mut(), catch_up) {
            match which {
                // Every room: read or not, this decides whether any is behind.
                None => behind.after(inbox.catch_up_all(live, updates).await?),
                Some(room) => {
                    let arranged = match live.add(&room).await {
                        Ok(moved) => Some(moved),
                        Err(error) => {
                            report(updates, error).await?;
                            None
                        }
                    };
                    let mut complete = arranged.is_some();
                    // The room, and any whose lease moved to another instance.
                    for room in std::iter::once(room).chain(arranged.into_iter().flatten()) {
                        complete &= inbox.catch_up(&room, updates).await?;
                    }
                    if !complete {
                        behind.after(false);
                    }
                }
            }
        }
    };
    // The state says best why; a closed subscription alone means the session closed.
    let end = match *state.borrow() {
        ConnectionState::Ended(end) => end,
        _ => end,
    };
    let _ = updates.send(Item::End(WatchEnd::SessionEnded(end))).await;
    Ok(())
}

/// The next live copy from the stream, with its room; pending without a message watch.
async fn next_copy(live: &mut Option<Live>) -> Result<(RoomId, LiveMessage), SessionError> {
    match live {
        Some(live) => live.next().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `at`; never without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
        Ok(Notification::Shared { room, epochs }) => {
            Some(Ok(RoomUpdate::HistoryShared { room, epochs }))
        }
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

    /// An unreadable message of `room` at `position`, as the inbox hands it to a watch.
    fn message(room: &RoomId, position: u64) -> Item {
        Item::Message {
            message: Received {
                position,
                time: 0,
                outcome: Err(super::super::Unreadable::NoKey { epoch: 1 }),
            },
            delivery: Delivery {
                room: room.clone(),
                position,
                opened: None,
            },
        }
    }

    /// Feeds messages at positions 1 and 2, takes both, and stops the watch with `stop`;
    /// returns the room's cursor then, and after the watch is dropped.
    async fn stopped_after_two_messages(stop: fn(&mut Watch)) -> (u64, u64) {
        let room = RoomId::new("general").unwrap();
        let trust = TrustStore::in_memory(&crate::Identity::generate().unwrap().sign_public_key());
        // A message watch fed by the test, with no subscription behind it.
        let (sender, updates) = mpsc::channel(8);
        let mut watch = Watch {
            updates,
            end: None,
            task: tokio::spawn(std::future::pending()),
            trust: Some(trust.clone()),
            taken: None,
            handled: Vec::new(),
            write_again_at: 0,
        };
        for position in [1, 2] {
            sender.send(message(&room, position)).await.unwrap();
            let update = watch.next().await.unwrap().unwrap();
            assert!(
                matches!(update, RoomUpdate::Message { message, .. } if message.position == position)
            );
        }
        stop(&mut watch);
        assert!(watch.next().await.is_none());
        assert_eq!(watch.end(), Some(WatchEnd::Cancelled));
        let stopped = trust.last_delivered(&room);
        drop(watch);
        (stopped, trust.last_delivered(&room))
    }

    #[tokio::test]
    async fn a_watch_cancelled_with_its_last_message_unhandled_writes_the_cursor_before_it() {
        // Message 1 was handled (the app asked for the next update); message 2, taken last, was
        // never got by the app: its cursor is not written, even when the watch is dropped.
        assert_eq!(
            stopped_after_two_messages(Watch::cancel_last_unhandled).await,
            (1, 1)
        );
        // Cancelled as usual, the message taken last counts as handled.
        assert_eq!(stopped_after_two_messages(Watch::cancel).await, (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_catch_up_is_retried_after_a_bounded_backoff_until_one_completes() {
        use super::super::liveness::RECONNECT_BASE;
        use std::time::Duration;
        let mut behind = Behind::default();
        assert!(!behind.is_behind());
        let never = tokio::time::timeout(Duration::from_secs(3600), behind.retry()).await;
        assert!(never.is_err(), "nothing to retry");
        for failures in 1..=2u32 {
            let now = tokio::time::Instant::now();
            behind.after(false);
            let wait = behind.retry_at.unwrap() - now;
            assert!(wait <= RECONNECT_BASE * 2u32.pow(failures - 1), "{wait:?}");
            behind.retry().await;
            assert!(tokio::time::Instant::now() >= now + wait);
        }
        assert_eq!(behind.failures, 2);
        behind.after(true);
        assert!(!behind.is_behind());
    }
}
