//! The network client: registration, the cluster session and its messages, as async exports
//! (`suspend` in Kotlin, `async` in Swift, coroutines in Python).
//!
//! Each export converts its arguments, runs `unibus::client` on the SDK's runtime
//! ([`crate::runtime::run`]) and converts the result back; the behaviour is all in Rust.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use unibus::client;
use unibus::{RoomId, SignPublicKey};

use crate::errors::{RegisterError, SessionError};
use crate::identity::Identity;
use crate::invite::InviteLink;
use crate::runtime::{run, spawn, Unfinished};
use crate::sealing::{Recipient, RoomKey};
use crate::trust::TrustStore;

/// How [`register`] talks to the server. A field left out (`null`) takes the SDK's default,
/// the one the Rust `RegisterOptions::default()` has and docs/client.md states.
#[derive(Debug, Clone, uniffi::Record)]
pub struct RegisterOptions {
    /// Attempts in all; connection failures, timeouts, 429 and 5xx are retried.
    #[uniffi(default = None)]
    pub attempts: Option<u32>,
    /// The wait before the first retry, doubling after each.
    #[uniffi(default = None)]
    pub initial_backoff_ms: Option<u64>,
    /// The longest wait between attempts.
    #[uniffi(default = None)]
    pub max_backoff_ms: Option<u64>,
    /// The time limit of each attempt.
    #[uniffi(default = None)]
    pub request_timeout_ms: Option<u64>,
    /// DER certificates of the only CAs to trust (a private CA); empty: the platform decides.
    #[uniffi(default = [])]
    pub trusted_root_certificates: Vec<Vec<u8>>,
}

impl From<RegisterOptions> for client::RegisterOptions {
    fn from(options: RegisterOptions) -> Self {
        let defaults = Self::default();
        let millis = Duration::from_millis;
        Self {
            attempts: options.attempts.unwrap_or(defaults.attempts),
            initial_backoff: options
                .initial_backoff_ms
                .map_or(defaults.initial_backoff, millis),
            max_backoff: options.max_backoff_ms.map_or(defaults.max_backoff, millis),
            request_timeout: options
                .request_timeout_ms
                .map_or(defaults.request_timeout, millis),
            trusted_root_certificates: options.trusted_root_certificates,
        }
    }
}

/// What to keep beside the identity after registering.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Registration {
    /// The invite's server base URL.
    pub server_url: String,
    /// This identity's signing key, hex.
    pub sign_public_key: String,
    /// This identity's key-exchange key, hex.
    pub kex_public_key: String,
    /// Whether the invite made this user an admin.
    pub admin: bool,
    /// The cluster's NATS URLs, for [`Session::connect`].
    pub nats_urls: Vec<String>,
}

impl From<client::Registration> for Registration {
    fn from(registration: client::Registration) -> Self {
        Self {
            server_url: registration.server_url,
            sign_public_key: registration.sign_public_key.to_hex(),
            kex_public_key: registration.kex_public_key.to_hex(),
            admin: registration.admin,
            nats_urls: registration.nats_urls,
        }
    }
}

/// Redeems the invite `link` for `identity` over HTTPS, retrying transient failures. Safe to
/// call again after any failure: a repeated request of the same identity gets the same
/// success.
#[uniffi::export(default(options = None))]
pub async fn register(
    link: Arc<InviteLink>,
    identity: Arc<Identity>,
    options: Option<RegisterOptions>,
) -> Result<Registration, RegisterError> {
    let options = options.map(Into::into).unwrap_or_default();
    run(async move {
        Ok(client::register(&link.0, &identity.0, &options)
            .await?
            .into())
    })
    .await
}

/// How a [`Session`] connects and how long it waits. A field left out (`null`) takes the
/// SDK's default, the one the Rust `SessionOptions::default()` has and docs/client.md states.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SessionOptions {
    /// The limit for each request; past it the call fails with `Timeout`.
    #[uniffi(default = None)]
    pub request_timeout_ms: Option<u64>,
    /// The limit for logging in, per address.
    #[uniffi(default = None)]
    pub connect_timeout_ms: Option<u64>,
    /// How long `connect` retries a refused login (with jittered backoff) before it fails
    /// with `LoginRefused`.
    #[uniffi(default = None)]
    pub login_patience_ms: Option<u64>,
    /// How often `rekey` starts over when the room changes under it.
    #[uniffi(default = None)]
    pub rekey_attempts: Option<u32>,
    /// A connection name operators see; no secrets.
    #[uniffi(default = None)]
    pub connection_name: Option<String>,
    /// Where to ask whether this identity is still a user when the cluster keeps refusing its
    /// logins: the `Registration`'s `server_url`. With it, a session that missed its
    /// revocation notice ends as `Revoked` instead of reconnecting forever, and `connect` of
    /// a revoked or deleted identity fails with `SessionEnded(Revoked)`. `null`: refused
    /// logins are only retried.
    #[uniffi(default = None)]
    pub status_server_url: Option<String>,
    /// How long logins must have been refused before the first question (default 10 s).
    #[uniffi(default = None)]
    pub status_check_after_ms: Option<u64>,
    /// DER certificates of the only CAs to trust for those questions (a private CA); empty:
    /// the platform decides.
    #[uniffi(default = [])]
    pub status_trusted_root_certificates: Vec<Vec<u8>>,
}

impl From<SessionOptions> for client::SessionOptions {
    fn from(options: SessionOptions) -> Self {
        let defaults = Self::default();
        let millis = Duration::from_millis;
        Self {
            request_timeout: options
                .request_timeout_ms
                .map_or(defaults.request_timeout, millis),
            connect_timeout: options
                .connect_timeout_ms
                .map_or(defaults.connect_timeout, millis),
            login_patience: options
                .login_patience_ms
                .map_or(defaults.login_patience, millis),
            rekey_attempts: options.rekey_attempts.unwrap_or(defaults.rekey_attempts),
            connection_name: options.connection_name,
            trust: None,
            status_check: options.status_server_url.map(|url| {
                let check = client::StatusCheck::new(url);
                client::StatusCheck {
                    after_refusals_for: options
                        .status_check_after_ms
                        .map_or(check.after_refusals_for, millis),
                    trusted_root_certificates: options.status_trusted_root_certificates,
                    ..check
                }
            }),
            send_key_fresh: defaults.send_key_fresh,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SessionEnd {
    /// The app closed it.
    Closed,
    /// membershipd said the identity was revoked or deleted.
    Revoked,
}

impl From<client::SessionEnd> for SessionEnd {
    fn from(end: client::SessionEnd) -> Self {
        match end {
            client::SessionEnd::Closed => Self::Closed,
            client::SessionEnd::Revoked => Self::Revoked,
        }
    }
}

/// Whether the members a room's owner adds read the room's earlier epochs (docs/client.md,
/// "History policy"). Kept on the owner's device, in its trust store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum HistoryPolicy {
    /// New members read from the first epoch sealed to them (the default).
    Joined,
    /// The owner's next rekey shares every earlier epoch with the members it added.
    Shared,
}

impl From<client::HistoryPolicy> for HistoryPolicy {
    fn from(policy: client::HistoryPolicy) -> Self {
        match policy {
            client::HistoryPolicy::Joined => Self::Joined,
            client::HistoryPolicy::Shared => Self::Shared,
        }
    }
}

impl From<HistoryPolicy> for client::HistoryPolicy {
    fn from(policy: HistoryPolicy) -> Self {
        match policy {
            HistoryPolicy::Joined => Self::Joined,
            HistoryPolicy::Shared => Self::Shared,
        }
    }
}

/// Whether a session can reach the cluster now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    /// Connected.
    Connected,
    /// Reconnecting by itself; calls wait up to their timeout.
    Reconnecting,
    /// Over; calls fail with `Ended`.
    Ended {
        /// Why.
        reason: SessionEnd,
    },
}

impl From<client::ConnectionState> for ConnectionState {
    fn from(state: client::ConnectionState) -> Self {
        match state {
            client::ConnectionState::Connected => Self::Connected,
            client::ConnectionState::Reconnecting => Self::Reconnecting,
            client::ConnectionState::Ended(end) => Self::Ended { reason: end.into() },
        }
    }
}

/// A room as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RoomInfo {
    /// The room id.
    pub id: String,
    /// The owner's signing key, hex.
    pub owner: String,
    /// The latest epoch; 0 before the first key.
    pub epoch: u64,
}

impl From<client::RoomInfo> for RoomInfo {
    fn from(room: client::RoomInfo) -> Self {
        Self {
            id: room.id.to_string(),
            owner: room.owner.to_hex(),
            epoch: room.epoch,
        }
    }
}

/// A verified, opened room key and its epoch.
#[derive(Debug, Clone, uniffi::Record)]
pub struct OpenedRoomKey {
    /// The epoch.
    pub epoch: u64,
    /// The key, wiped when the object is destroyed.
    pub key: Arc<RoomKey>,
}

impl From<client::OpenedRoomKey> for OpenedRoomKey {
    fn from(opened: client::OpenedRoomKey) -> Self {
        Self {
            epoch: opened.epoch,
            key: Arc::new(RoomKey(opened.key)),
        }
    }
}

/// A change that concerns this identity.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum RoomUpdate {
    /// Added to a room (no key until the next rekey).
    Added {
        /// The room id.
        room: String,
    },
    /// Removed from a room.
    Removed {
        /// The room id.
        room: String,
    },
    /// A new epoch with a key for this identity.
    NewEpoch {
        /// The room id.
        room: String,
        /// The new epoch.
        epoch: u64,
    },
    /// The owner shared earlier epochs' keys with this identity: their messages that read as
    /// `NoKey` can now be opened (read them again with `messages`).
    HistoryShared {
        /// The room id.
        room: String,
        /// The epochs shared, ascending.
        epochs: Vec<u64>,
    },
    /// The connection dropped; reconnecting.
    Disconnected,
    /// The connection is back: query rooms and epochs again, updates may have been missed.
    Reconnected,
    /// A reply named another owner for a room than the pinned one, and was refused: the server
    /// may be lying. Raised by the SDK, not sent by the server.
    OwnerChanged {
        /// The room id.
        room: String,
        /// The pinned owner, hex.
        pinned: String,
        /// The owner the reply named, hex.
        found: String,
        /// Whether the app had marked the pinned owner verified.
        verified: bool,
    },
    /// A message of a room, opened or with the reason it cannot be read. Only from a watch
    /// started with `messages = true`, in position order per room, each once.
    Message {
        /// The room id.
        room: String,
        /// The message.
        message: ReceivedMessage,
    },
}

impl From<client::RoomUpdate> for RoomUpdate {
    fn from(update: client::RoomUpdate) -> Self {
        match update {
            client::RoomUpdate::Added { room } => Self::Added {
                room: room.to_string(),
            },
            client::RoomUpdate::Removed { room } => Self::Removed {
                room: room.to_string(),
            },
            client::RoomUpdate::NewEpoch { room, epoch } => Self::NewEpoch {
                room: room.to_string(),
                epoch,
            },
            client::RoomUpdate::HistoryShared { room, epochs } => Self::HistoryShared {
                room: room.to_string(),
                epochs,
            },
            client::RoomUpdate::Disconnected => Self::Disconnected,
            client::RoomUpdate::Reconnected => Self::Reconnected,
            client::RoomUpdate::OwnerChanged {
                room,
                pinned,
                found,
                verified,
            } => Self::OwnerChanged {
                room: room.to_string(),
                pinned: pinned.to_hex(),
                found: found.to_hex(),
                verified,
            },
            client::RoomUpdate::Message { room, message } => Self::Message {
                room: room.to_string(),
                message: ReceivedMessage::new(&room, message),
            },
        }
    }
}

/// A message stored in its room, as [`Session::send`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SentMessage {
    /// The message's id, 32 hex characters, fresh for every message.
    pub id: String,
    /// Its position in the room's history.
    pub position: u64,
    /// The epoch whose key sealed it.
    pub epoch: u64,
    /// Whether a retry found it stored already (by an earlier attempt that got no answer): it
    /// is stored once, at `position`.
    pub duplicate: bool,
}

impl From<client::SentMessage> for SentMessage {
    fn from(sent: client::SentMessage) -> Self {
        Self {
            id: sent.id.to_hex(),
            position: sent.position,
            epoch: sent.epoch,
            duplicate: sent.duplicate,
        }
    }
}

/// Which page of a room's history [`Session::messages`] reads. `limit` is 1 to 1,000; a page
/// may hold fewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum MessagePage {
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

impl From<MessagePage> for client::Page {
    fn from(page: MessagePage) -> Self {
        match page {
            MessagePage::Latest { limit } => Self::Latest { limit },
            MessagePage::Before { position, limit } => Self::Before { position, limit },
            MessagePage::After { position, limit } => Self::After { position, limit },
        }
    }
}

/// One page of a room's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReceivedPage {
    /// The messages, in ascending position.
    pub messages: Vec<ReceivedMessage>,
    /// Whether the room holds more in the page's direction: after the last message for
    /// `After`, before the first for `Before` and `Latest`.
    pub more: bool,
}

/// An opened message: its sender's signature and membership verified, its body decrypted.
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct OpenedMessage {
    /// Who sent it (signing key, hex): a member of the room at its epoch.
    pub sender: String,
    /// The epoch it was encrypted under.
    pub epoch: u64,
    /// Its id, 32 hex characters.
    pub id: String,
    /// When its sender says it was sent (milliseconds since the Unix epoch, the sender's clock).
    pub sent_at: u64,
    /// The content type its sender gave.
    pub content_type: String,
    /// The decrypted body.
    pub body: Vec<u8>,
}

/// Shows the body's length, not the body.
impl std::fmt::Debug for OpenedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedMessage")
            .field("sender", &self.sender)
            .field("epoch", &self.epoch)
            .field("id", &self.id)
            .field("sent_at", &self.sent_at)
            .field("content_type", &self.content_type)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

impl From<unibus::envelope::Message> for OpenedMessage {
    fn from(message: unibus::envelope::Message) -> Self {
        Self {
            sender: message.sender().to_hex(),
            epoch: message.epoch(),
            id: message.id().to_hex(),
            sent_at: message.sent_at(),
            content_type: message.content_type().as_str().to_owned(),
            body: message.into_body(),
        }
    }
}

/// Why a stored message cannot be read. Such a message never fails a page or a watch: it is
/// reported in its place.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Unreadable {
    /// This identity holds no key for the message's epoch: it is from before this member
    /// joined, or was not sealed to it.
    NoKey {
        /// The message's epoch.
        epoch: u64,
    },
    /// The sender is not a member of the room at the message's epoch.
    NotAMember,
    /// The signature does not verify: the message was altered or forged.
    BadSignature,
    /// The body does not decrypt under the epoch's key, although the sender signed it.
    DecryptFailed,
    /// The same sender and message id were already delivered at another position; the first
    /// one stands.
    Replayed {
        /// Where the message was delivered first.
        first_position: u64,
    },
    /// The stored bytes are not an envelope of this room.
    Malformed {
        /// What is wrong.
        reason: String,
    },
}

impl From<client::Unreadable> for Unreadable {
    fn from(reason: client::Unreadable) -> Self {
        use client::Unreadable as Core;
        match reason {
            Core::NoKey { epoch } => Self::NoKey { epoch },
            Core::NotAMember => Self::NotAMember,
            Core::BadSignature => Self::BadSignature,
            Core::DecryptFailed => Self::DecryptFailed,
            Core::Replayed { first_position } => Self::Replayed { first_position },
            Core::Malformed { reason } => Self::Malformed { reason },
            // A reason this version of the bindings does not name.
            other => Self::Malformed {
                reason: other.to_string(),
            },
        }
    }
}

/// A stored message as this client received it: exactly one of `message` (opened) and
/// `unreadable` (why not) is set.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ReceivedMessage {
    /// The room id.
    pub room: String,
    /// Its position in the room's history.
    pub position: u64,
    /// When the cluster stored it, in milliseconds since the Unix epoch.
    pub time: u64,
    /// The opened message, or null when it cannot be read.
    pub message: Option<OpenedMessage>,
    /// Why it cannot be read, or null when it was opened.
    pub unreadable: Option<Unreadable>,
}

impl ReceivedMessage {
    fn new(room: &RoomId, received: client::Received) -> Self {
        let (message, unreadable) = match received.outcome {
            Ok(message) => (Some(message.into()), None),
            Err(reason) => (None, Some(reason.into())),
        };
        Self {
            room: room.to_string(),
            position: received.position,
            time: received.time,
            message,
            unreadable,
        }
    }
}

/// Why a watch stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum WatchEnd {
    /// The app cancelled it.
    Cancelled,
    /// Its session ended.
    SessionEnded {
        /// Why.
        reason: SessionEnd,
    },
}

impl From<client::WatchEnd> for WatchEnd {
    fn from(end: client::WatchEnd) -> Self {
        match end {
            client::WatchEnd::Cancelled => Self::Cancelled,
            client::WatchEnd::SessionEnded(end) => Self::SessionEnded { reason: end.into() },
        }
    }
}

/// Receives a watch's updates, implemented by the app. Called from an SDK thread, one call
/// at a time, in order. The methods should return quickly. An exception thrown by one is
/// logged and the watch goes on.
///
/// A message counts as handled once `on_update` returns (its cursor may then be written): an
/// app that queues it and dies before handling it does not get it again after a restart. For
/// at-least-once delivery, read a [`WatchStream`] (`Session.watch_stream`) instead, as the
/// Kotlin, Python and Swift adapters do.
#[uniffi::export(with_foreign)]
pub trait WatchListener: Send + Sync {
    /// A change.
    fn on_update(&self, update: RoomUpdate);
    /// A notification that could not be read; the watch goes on.
    fn on_error(&self, message: String);
    /// The watch stopped; no call follows.
    fn on_close(&self, end: WatchEnd);
}

/// How far a long rekey has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RekeyProgress {
    /// `done` of the `total` members have their copy sealed.
    Sealed {
        /// Copies sealed so far.
        done: u64,
        /// Members to seal for.
        total: u64,
    },
    /// `done` of the `total` entries are uploaded (a manifest uploaded in parts).
    Uploaded {
        /// Entries the server holds so far.
        done: u64,
        /// Entries in the manifest.
        total: u64,
    },
}

impl From<unibus::client::RekeyProgress> for RekeyProgress {
    fn from(progress: unibus::client::RekeyProgress) -> Self {
        use unibus::client::RekeyProgress as Core;
        match progress {
            Core::Sealed { done, total } => Self::Sealed {
                done: done as u64,
                total: total as u64,
            },
            Core::Uploaded { done, total } => Self::Uploaded {
                done: done as u64,
                total: total as u64,
            },
        }
    }
}

/// Receives a rekey's progress. Called from the SDK's threads (several at once while sealing);
/// it should return quickly.
#[uniffi::export(with_foreign)]
pub trait RekeyObserver: Send + Sync {
    /// How far the rekey has come; return false to cancel it.
    fn on_progress(&self, progress: RekeyProgress) -> bool;
}

/// Calls the app's listener. uniffi turns an exception thrown there into a panic here; it is
/// logged, and the watch goes on.
fn deliver(call: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).is_err() {
        tracing::warn!("a watch listener threw; the watch goes on");
    }
}

/// A running watch. `cancel()` stops it (and calls `on_close(Cancelled)`); destroying the
/// handle stops it too, silently.
#[derive(uniffi::Object)]
pub struct WatchHandle {
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: Arc<AtomicBool>,
    listener: Arc<dyn WatchListener>,
}

#[uniffi::export]
impl WatchHandle {
    /// Stops the watch. The listener gets `on_close(Cancelled)` unless it was already closed.
    pub fn cancel(&self) {
        self.stop();
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.listener.on_close(WatchEnd::Cancelled);
        }
    }
}

impl WatchHandle {
    fn stop(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One step of a [`WatchStream`].
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum WatchEvent {
    /// A change, or a message of a room.
    Update {
        /// What changed.
        update: RoomUpdate,
    },
    /// A notification that could not be read; the watch goes on.
    Error {
        /// What went wrong.
        message: String,
    },
    /// The watch stopped; every later `next()` returns this step again.
    Closed {
        /// Why.
        end: WatchEnd,
    },
}

/// An event of a [`WatchStream`] with its number, from [`WatchStream::next`].
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct WatchStep {
    /// The step's number: 1 for the stream's first event, one more for each new event taken
    /// from the watch. Once the app's code has the step, pass it to the next `next()`.
    pub seq: u64,
    /// The event.
    pub event: WatchEvent,
}

/// A running watch that the app reads one event at a time, from `Session.watch_stream`:
/// the pull form of `Session.watch`, which the Kotlin `Flow`, the Python async iterator and the
/// Swift `AsyncSequence` are built on.
///
/// Each event comes as a numbered [`WatchStep`], handed over with the number of the last step
/// the app's code got (see [`next`](Self::next)): a step is kept until a call says its caller
/// has it, so one lost between the SDK and the app's code (a call cancelled by a timeout just
/// as it finished) is handed out again, and no event is lost.
///
/// With messages, delivery is at least once: a message counts as handled when `next()` is
/// called with its step's number (which takes the next event from the watch), or when
/// [`cancel`](Self::cancel) is called with it, and only then may its cursor be written
/// (`unibus::client::Watch`). A stream stopped before the app's code got the step handed out
/// last (by `cancel` with an earlier number, or destroyed without `cancel`) leaves that
/// step's message unhandled, and the next watch with the same trust file delivers it again. A
/// process that dies while handling a message gets it again, at its same position, from the
/// next watch with the same trust file.
#[derive(uniffi::Object)]
pub struct WatchStream {
    reader: Arc<tokio::sync::Mutex<Reader>>,
    shared: Arc<Shared>,
}

/// A [`WatchStream`]'s watch and the step it handed out last.
struct Reader {
    watch: client::Watch,
    /// Kept until a call says its caller has it; `None` before the first step.
    last: Option<WatchStep>,
}

impl Reader {
    /// The step to hand again to a caller whose code got step `received`: the last one if the
    /// caller does not have it, or if it is `Closed`; `None` when the caller has it and the
    /// watch's next event is due. A `received` past the last step is refused, and changes
    /// nothing.
    fn again(&self, received: u64) -> Result<Option<WatchStep>, SessionError> {
        check_received(received, self.last_seq())?;
        Ok(self
            .last
            .as_ref()
            .filter(|step| step.seq > received || matches!(step.event, WatchEvent::Closed { .. }))
            .cloned())
    }

    /// Numbers `event`, the watch's next one, and keeps it as the last step.
    fn keep(&mut self, event: WatchEvent) -> WatchStep {
        let step = WatchStep {
            seq: self.last_seq() + 1,
            event,
        };
        self.last = Some(step.clone());
        step
    }

    /// The number of the last step handed out; 0 before the first.
    fn last_seq(&self) -> u64 {
        self.last.as_ref().map_or(0, |step| step.seq)
    }

    /// Stops the watch for an app whose code got step `received`: the message of the last
    /// step counts as handled only if the app has that step.
    fn stop(&mut self, received: u64) {
        if self.last_seq() > received {
            self.watch.cancel_last_unhandled();
        } else {
            self.watch.cancel();
        }
    }
}

/// Refuses a `received` past `last`, the number of the last step handed out.
fn check_received(received: u64, last: u64) -> Result<(), SessionError> {
    if received > last {
        return Err(SessionError::InvalidArgument {
            reason: format!(
                "received {received} is past the last step handed out ({last}): pass the seq \
                 of the last step your code got, 0 before the first"
            ),
            transient: false,
            code: None,
        });
    }
    Ok(())
}

/// What a [`WatchStream`]'s `cancel` shares with its calls, outside the reader's lock.
#[derive(Default)]
struct Shared {
    /// The number of the last step handed out, as [`Reader::last_seq`], for `cancel` to check
    /// its `received` against while a call holds the reader.
    handed: AtomicU64,
    /// The `received` of the first stop asked (a later one changes nothing); `None` until then.
    /// Whoever holds the reader when it is asked stops the watch with it before letting go.
    stop: Mutex<Option<u64>>,
    /// Wakes a call waiting for the watch's next event once a stop is asked.
    stopping: tokio::sync::Notify,
}

impl Shared {
    /// Asks for the watch to stop for an app whose code got step `received`: at once if the
    /// reader is free, otherwise by its holder, before it lets go ([`release`](Self::release)).
    fn ask_stop(&self, reader: &tokio::sync::Mutex<Reader>, received: u64) {
        let mut stop = self
            .stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let received = *stop.get_or_insert(received);
        match reader.try_lock() {
            Ok(mut reader) => reader.stop(received),
            // A call holds the reader; one waiting for an event wakes up now.
            Err(_) => self.stopping.notify_one(),
        }
    }

    /// Stops the watch if a stop was asked, and lets go of the reader. Under the lock of
    /// `stop`, so that a stop asked while `reader` was held is never left undone.
    fn release(&self, mut reader: tokio::sync::MutexGuard<'_, Reader>) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(received) = *stop {
            reader.stop(received);
        }
        drop(reader);
    }
}

#[uniffi::export]
impl WatchStream {
    /// The next step, given `received`, the `seq` of the last step the app's code got (0 before
    /// the first). If the stream handed out a later step, the caller did not get it: that step
    /// comes again, and nothing is taken from the watch. Otherwise the call waits for the
    /// watch's next event (taking it says the message of step `received` is handled), numbers
    /// it one more than the last, keeps it and returns it. Once a step is `Closed`, every later
    /// call returns that same step. A `received` above the last step handed out raises
    /// `InvalidArgument` and changes nothing. Calls are answered one at a time, in order; a call
    /// given up before its turn, or while it waits (a timeout), takes nothing from the watch.
    /// Raises `Internal` if the SDK's runtime is shut down.
    pub async fn next(&self, received: u64) -> Result<WatchStep, SessionError> {
        let (mut sender, receiver) = tokio::sync::oneshot::channel();
        let (reader, shared) = (Arc::clone(&self.reader), Arc::clone(&self.shared));
        spawn(async move {
            // A call given up before its turn, or while it waits, takes nothing from the watch:
            // only one that is still waiting takes the next event.
            let mut reader = tokio::select! {
                biased;
                () = sender.closed() => return,
                reader = reader.lock() => reader,
            };
            let step = match reader.again(received) {
                Ok(Some(step)) => Some(Ok(step)),
                Ok(None) => {
                    let event = tokio::select! {
                        biased;
                        () = sender.closed() => None,
                        event = next_event(&mut reader.watch, &shared.stopping) => Some(event),
                    };
                    event.map(|event| {
                        let step = reader.keep(event);
                        shared.handed.store(step.seq, Ordering::Release);
                        Ok(step)
                    })
                }
                Err(error) => Some(Err(error)),
            };
            // Let go first: a caller that has the step finds the reader free, and its
            // `cancel` stops the watch at once.
            shared.release(reader);
            // A caller gone now loses nothing: the step is kept for its next call.
            if let Some(step) = step {
                let _ = sender.send(step);
            }
        })?;
        receiver.await.unwrap_or_else(|_| {
            Err(Unfinished("the SDK's runtime stopped before the watch answered".into()).into())
        })
    }

    /// Stops the watch, given `received` as in [`next`](Self::next): the `seq` of the last step
    /// the app's code got (0 before the first). The message of the step handed out last counts
    /// as handled only if `received` is that step's number, or a `next()` called with it waits
    /// for the watch's next event; otherwise the app never got that step, and the next watch
    /// with the same trust file delivers its message again. Everything handled before it is
    /// written. A `next()` waiting now returns a `Closed(Cancelled)` step, and so does every
    /// later one once the app has the step handed out last. A `received` above the last step
    /// handed out raises `InvalidArgument` and changes nothing, as in `next`. Once a stop is
    /// asked, a later `cancel` changes nothing.
    pub fn cancel(&self, received: u64) -> Result<(), SessionError> {
        check_received(received, self.shared.handed.load(Ordering::Acquire))?;
        self.shared.ask_stop(&self.reader, received);
        Ok(())
    }
}

impl Drop for WatchStream {
    /// Destroyed without `cancel`, the stream stops as `cancel(0)` would: it cannot know
    /// whether the app's code got the step handed out last, so that step's message stays
    /// unhandled (delivered again) unless a `next()` called with its number waits for the
    /// watch's next event. A `next()` still waiting holds the watch: it stops too.
    fn drop(&mut self) {
        self.shared.ask_stop(&self.reader, 0);
    }
}

/// The watch's next event, or `Closed(Cancelled)` once a stop is asked (`stopping`). The call
/// waiting for it said its caller has the last step, so that step's message counts as handled.
async fn next_event(watch: &mut client::Watch, stopping: &tokio::sync::Notify) -> WatchEvent {
    let update = tokio::select! {
        biased;
        () = stopping.notified() => {
            watch.cancel();
            None
        }
        update = watch.next() => update,
    };
    match update {
        Some(Ok(update)) => WatchEvent::Update {
            update: update.into(),
        },
        Some(Err(error)) => WatchEvent::Error {
            message: error.to_string(),
        },
        None => WatchEvent::Closed {
            end: watch.end().unwrap_or(client::WatchEnd::Cancelled).into(),
        },
    }
}

/// A session on the cluster, logged in with an identity's own key. See `unibus::client`.
#[derive(uniffi::Object)]
pub struct Session(client::Session);

fn room_id(room: &str) -> Result<RoomId, SessionError> {
    Ok(RoomId::new(room)?)
}

fn member_key(member: &str) -> Result<SignPublicKey, SessionError> {
    Ok(SignPublicKey::from_hex(member)?)
}

#[uniffi::export]
impl Session {
    /// Logs in to the cluster at `nats_urls` (from the [`Registration`]) with `identity`'s key.
    /// `trust` keeps pinned room owners and epoch floors across restarts (a
    /// `TrustStore.open`ed file of this identity); without it they last for this session only.
    #[uniffi::constructor(default(options = None, trust = None))]
    pub async fn connect(
        identity: Arc<Identity>,
        nats_urls: Vec<String>,
        options: Option<SessionOptions>,
        trust: Option<Arc<TrustStore>>,
    ) -> Result<Arc<Session>, SessionError> {
        let options = client::SessionOptions {
            trust: trust.map(|store| store.0.clone()),
            ..options.map(Into::into).unwrap_or_default()
        };
        run(async move {
            let session =
                client::Session::connect(Arc::clone(&identity.0), &nats_urls, options).await?;
            Ok(Arc::new(Session(session)))
        })
        .await
    }

    /// The trust store this session uses (the one given to `connect`, or its in-memory one).
    pub fn trust_store(&self) -> Arc<TrustStore> {
        Arc::new(TrustStore(self.0.trust().clone()))
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.0.state().into()
    }

    /// The rooms this identity is a member of, sorted by id.
    pub async fn my_rooms(&self) -> Result<Vec<RoomInfo>, SessionError> {
        let session = self.0.clone();
        run(async move {
            Ok(session
                .my_rooms()
                .await?
                .into_iter()
                .map(Into::into)
                .collect())
        })
        .await
    }

    /// Whether this identity is a member of `room` (false for unknown rooms; failures raise).
    pub async fn is_member(&self, room: String) -> Result<bool, SessionError> {
        let (session, room) = (self.0.clone(), room_id(&room)?);
        run(async move { Ok(session.is_member(&room).await?) }).await
    }

    /// The room's latest epoch. Members only.
    pub async fn current_epoch(&self, room: String) -> Result<u64, SessionError> {
        let (session, room) = (self.0.clone(), room_id(&room)?);
        run(async move { Ok(session.current_epoch(&room).await?) }).await
    }

    /// Fetches, verifies and opens this identity's room key at `epoch` (the latest if null).
    #[uniffi::method(default(epoch = None))]
    pub async fn room_key(
        &self,
        room: String,
        epoch: Option<u64>,
    ) -> Result<OpenedRoomKey, SessionError> {
        let (session, room) = (self.0.clone(), room_id(&room)?);
        run(async move { Ok(session.room_key(&room, epoch).await?.into()) }).await
    }

    /// Creates `room`, owned by this identity, at epoch 0.
    pub async fn create_room(&self, room: String) -> Result<RoomInfo, SessionError> {
        let (session, room) = (self.0.clone(), room_id(&room)?);
        run(async move { Ok(session.create_room(&room).await?.into()) }).await
    }

    /// The room's active members and their keys. Owner only.
    pub async fn members(&self, room: String) -> Result<Vec<Recipient>, SessionError> {
        let (session, room) = (self.0.clone(), room_id(&room)?);
        run(async move {
            Ok(session
                .members(&room)
                .await?
                .into_iter()
                .map(|m| Recipient {
                    sign_public_key: m.member.to_hex(),
                    kex_public_key: m.kex.to_hex(),
                })
                .collect())
        })
        .await
    }

    /// Adds the active user `member` (signing key, hex) to `room`. Owner only.
    pub async fn add_member(&self, room: String, member: String) -> Result<(), SessionError> {
        let (session, room, member) = (self.0.clone(), room_id(&room)?, member_key(&member)?);
        run(async move { Ok(session.add_member(&room, &member).await?) }).await
    }

    /// Removes `member` (signing key, hex) from `room`. Owner only; rekey afterwards.
    pub async fn remove_member(&self, room: String, member: String) -> Result<(), SessionError> {
        let (session, room, member) = (self.0.clone(), room_id(&room)?, member_key(&member)?);
        run(async move { Ok(session.remove_member(&room, &member).await?) }).await
    }

    /// Seals a fresh key to every current member on this device and uploads it as the next
    /// epoch. Owner only. Returns the new epoch and its key.
    pub async fn rekey(&self, room: String) -> Result<OpenedRoomKey, SessionError> {
        let (session, room) = (self.0.clone(), room_id(&room)?);
        run(async move { Ok(session.rekey(&room).await?.into()) }).await
    }

    /// `rekey`, reporting its progress to `observer` (sealed copies, then uploaded entries).
    /// When `on_progress` returns false the rekey stops with `Cancelled` and the room keeps its
    /// epoch. An exception thrown by `on_progress` counts as false.
    pub async fn rekey_with_progress(
        &self,
        room: String,
        observer: Arc<dyn RekeyObserver>,
    ) -> Result<OpenedRoomKey, SessionError> {
        let (session, room) = (self.0.clone(), room_id(&room)?);
        let progress = Arc::new(move |progress: unibus::client::RekeyProgress| {
            let progress = RekeyProgress::from(progress);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                observer.on_progress(progress)
            }))
            .unwrap_or(false)
        });
        run(async move { Ok(session.rekey_with_progress(&room, progress).await?.into()) }).await
    }

    /// Sets the history policy of `room`, which this identity owns (else `NotOwner`). Kept in
    /// the session's trust store on this device; nothing is sent. Under `Shared`, the members
    /// added from now on get every earlier epoch's key at the room's next rekey.
    pub fn set_history_policy(
        &self,
        room: String,
        policy: HistoryPolicy,
    ) -> Result<(), SessionError> {
        Ok(self.0.set_history_policy(&room_id(&room)?, policy.into())?)
    }

    /// The history policy of `room` on this device (`Joined` unless set).
    pub fn history_policy(&self, room: String) -> Result<HistoryPolicy, SessionError> {
        Ok(self.0.history_policy(&room_id(&room)?).into())
    }

    /// Shares the key of every epoch of `room` up to its latest with the active member
    /// `member` (signing key, hex): sealed to it and signed on this device. Owner only.
    /// Returns how many shares were uploaded.
    pub async fn share_history(&self, room: String, member: String) -> Result<u64, SessionError> {
        let (session, room, member) = (self.0.clone(), room_id(&room)?, member_key(&member)?);
        run(async move { Ok(session.share_history(&room, &member).await? as u64) }).await
    }

    /// Encrypts `body` with the room's latest key, publishes it and returns it once it is
    /// stored. Transient failures are retried with the same envelope, so the message is stored
    /// once; a body of more than 64 KiB fails with `BodyTooLarge` before any request.
    pub async fn send(
        &self,
        room: String,
        body: Vec<u8>,
        content_type: String,
    ) -> Result<SentMessage, SessionError> {
        let (session, room) = (self.0.clone(), room_id(&room)?);
        let content_type = unibus::envelope::ContentType::new(&content_type)
            .map_err(SessionError::invalid_argument)?;
        run(async move { Ok(session.send(&room, &body, &content_type).await?.into()) }).await
    }

    /// One page of `room`'s history, oldest first, each message opened or with the reason it
    /// cannot be: a message that cannot be read never fails the page.
    pub async fn messages(
        &self,
        room: String,
        page: MessagePage,
    ) -> Result<ReceivedPage, SessionError> {
        let (session, room) = (self.0.clone(), room_id(&room)?);
        run(async move {
            let page = session.messages(&room, page.into()).await?;
            Ok(ReceivedPage {
                messages: page
                    .messages
                    .into_iter()
                    .map(|received| ReceivedMessage::new(&room, received))
                    .collect(),
                more: page.more,
            })
        })
        .await
    }

    /// Starts delivering the changes that concern this identity to `listener`, until the
    /// returned handle is cancelled or destroyed, or the session ends. With `messages`, the
    /// messages of this identity's rooms are delivered too (`RoomUpdate.Message`): first every
    /// room's messages after the last one delivered (kept in the trust store), then each new
    /// one as it is stored, in position order per room, each once.
    #[uniffi::method(default(messages = false))]
    pub async fn watch(
        &self,
        listener: Arc<dyn WatchListener>,
        messages: bool,
    ) -> Result<Arc<WatchHandle>, SessionError> {
        let session = self.0.clone();
        let mut watch = run(async move {
            Ok::<_, SessionError>(if messages {
                session.watch_with_messages().await?
            } else {
                session.watch().await?
            })
        })
        .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let task = {
            let (listener, closed) = (Arc::clone(&listener), Arc::clone(&closed));
            spawn(async move {
                while let Some(update) = watch.next().await {
                    match update {
                        Ok(update) => deliver(|| listener.on_update(update.into())),
                        Err(error) => deliver(|| listener.on_error(error.to_string())),
                    }
                }
                if !closed.swap(true, Ordering::AcqRel) {
                    let end = watch.end().unwrap_or(client::WatchEnd::Cancelled);
                    deliver(|| listener.on_close(end.into()));
                }
            })
            .map_err(SessionError::from)?
        };
        Ok(Arc::new(WatchHandle {
            task: Mutex::new(Some(task)),
            closed,
            listener,
        }))
    }

    /// Starts a watch, like [`watch`](Self::watch), that the app reads with
    /// [`WatchStream::next`] instead of a listener: with `messages`, each message is delivered
    /// at least once (see [`WatchStream`]).
    #[uniffi::method(default(messages = false))]
    pub async fn watch_stream(&self, messages: bool) -> Result<Arc<WatchStream>, SessionError> {
        let session = self.0.clone();
        let watch = run(async move {
            Ok::<_, SessionError>(if messages {
                session.watch_with_messages().await?
            } else {
                session.watch().await?
            })
        })
        .await?;
        Ok(Arc::new(WatchStream {
            reader: Arc::new(tokio::sync::Mutex::new(Reader { watch, last: None })),
            shared: Arc::default(),
        }))
    }

    /// Ends the session: watches close with `SessionEnded(Closed)`, later calls raise `Ended`.
    /// (Named so, not `close`, because Kotlin objects already have `close()`: it frees the
    /// Rust object, and ends the session too when it was the last reference.)
    pub async fn close_session(&self) {
        let session = self.0.clone();
        let _ = run(async move {
            session.close().await;
            Ok::<_, SessionError>(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_errors_are_typed_with_their_codes_not_other() {
        use unibus::client::SessionError as Core;
        let typed = |error: Core| SessionError::from(error);
        assert!(matches!(
            typed(Core::StaleEpoch),
            SessionError::StaleEpoch { transient: false, code: Some(ref c), .. } if c == "stale_epoch"
        ));
        assert!(matches!(
            typed(Core::BadEnvelope("signature".into())),
            SessionError::BadEnvelope { transient: false, code: Some(ref c), .. } if c == "bad_envelope"
        ));
        assert!(matches!(
            typed(Core::BodyTooLarge { len: 65_537, limit: 65_536 }),
            SessionError::BodyTooLarge { transient: false, code: None, ref reason } if reason.contains("65537")
        ));
        assert!(matches!(
            typed(Core::InvalidArgument("limit".into())),
            SessionError::InvalidArgument {
                transient: false,
                code: None,
                ..
            }
        ));
        assert!(matches!(
            typed(Core::Envelope(
                unibus::envelope::EnvelopeError::NotTheKeyHolder
            )),
            SessionError::Envelope {
                transient: false,
                code: None,
                ..
            }
        ));
    }

    #[test]
    fn a_message_page_asks_for_the_same_page_as_in_rust() {
        for (page, core) in [
            (
                MessagePage::Before {
                    position: 9,
                    limit: 5,
                },
                client::Page::Before {
                    position: 9,
                    limit: 5,
                },
            ),
            (
                MessagePage::After {
                    position: 0,
                    limit: 1000,
                },
                client::Page::After {
                    position: 0,
                    limit: 1000,
                },
            ),
            (
                MessagePage::Latest { limit: 20 },
                client::Page::Latest { limit: 20 },
            ),
        ] {
            assert_eq!(client::Page::from(page), core);
        }
    }

    #[test]
    fn options_left_out_take_the_sdks_defaults_and_given_ones_are_kept() {
        let register: client::RegisterOptions = RegisterOptions {
            attempts: None,
            initial_backoff_ms: None,
            max_backoff_ms: None,
            request_timeout_ms: Some(1234),
            trusted_root_certificates: vec![],
        }
        .into();
        let defaults = client::RegisterOptions::default();
        assert_eq!(register.attempts, defaults.attempts);
        assert_eq!(register.initial_backoff, defaults.initial_backoff);
        assert_eq!(register.max_backoff, defaults.max_backoff);
        assert_eq!(register.request_timeout, Duration::from_millis(1234));

        let session: client::SessionOptions = SessionOptions {
            request_timeout_ms: None,
            connect_timeout_ms: Some(42),
            login_patience_ms: Some(7),
            rekey_attempts: None,
            connection_name: None,
            status_server_url: Some("https://members.example.com".into()),
            status_check_after_ms: None,
            status_trusted_root_certificates: vec![],
        }
        .into();
        let defaults = client::SessionOptions::default();
        assert_eq!(session.request_timeout, defaults.request_timeout);
        assert_eq!(session.connect_timeout, Duration::from_millis(42));
        assert_eq!(session.login_patience, Duration::from_millis(7));
        assert_eq!(session.rekey_attempts, defaults.rekey_attempts);
        assert_eq!(
            session.status_check,
            Some(client::StatusCheck::new("https://members.example.com"))
        );
    }
}
