//! The control-plane service on NATS: what an authenticated client asks the cluster.
//!
//! Requests go to `unibus.cp.<caller>.<operation>`, where `<caller>` is the caller's signing key
//! in hex. nats-server lets a user publish only under its own key (see
//! [`crate::auth::callout::UserPermissions`]), so the subject *is* the caller's authenticated
//! identity. The service listens in the users' own account (`APP`), so it sees each request's
//! reply subject as the caller set it, and answers only under the caller's own inbox prefix,
//! `_INBOX_<caller>.` ([`replies_to_caller`], the one rule for every operation): a request
//! whose answer would go anywhere else (another user's inbox or notice subjects, or nowhere) is
//! dropped unanswered and not acted on, counted per operation in the service's statistics
//! (`$SRV.STATS`) and logged at most every [`DROP_LOG_EVERY`]. The operations, their bodies and
//! replies and the refusal codes are the shared protocol types of [`unibus::protocol::control`]
//! (protocol §12); this module answers them. The service runs in a queue group, so every
//! membershipd instance shares the load. Changes are published as [`Notification`]s to
//! `unibus.events.<member>.room` for each member they concern, after the reply: the caller's
//! request returns without waiting for the fan-out (a rekey of 100,000 members notifies 100,000
//! members).
//!
//! A reply that would not fit in one NATS message (the server's `max_payload`) is replaced by a
//! `reply_too_large` refusal, and logged, so the caller hears of it instead of timing out.
//! Listings (`members`, `rooms`) come in pages that fit one message, and a manifest too large for
//! one message is uploaded in parts (`rekey_begin`, `rekey_part`, `rekey_commit`) that this
//! instance holds in memory ([`uploads`]) until the commit; the parts and the commit go to
//! `unibus.cp.<caller>.<operation>.<instance>`, this instance's own subjects.
//!
//! `send` and `messages` (protocol §15) go to the [`Relay`] of [`crate::messages`], which
//! stores envelopes in the message stream and reads pages of it; `send`'s body is the envelope
//! itself, not JSON. `listen` leases live copies from this instance's [`Fanout`]: it is
//! answered on the queue group and, for renewals, on this instance's own subject.

mod history;
pub mod uploads;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::service::ServiceExt;
use futures::StreamExt;
use unibus::manifest::{SignedHead, SignedManifest};
use unibus::protocol::codes::{Refusal, RefusalCode};
use unibus::protocol::control::{
    encode_reply, read_request, AddMemberRequest, CreateRoomRequest, Empty, EpochReply,
    EpochRequest, KeyReply, KeyRequest, MemberChange, MemberKeys, MemberReply, MemberRequest,
    MembersReply, MembersRequest, Operation, RekeyBeginReply, RekeyBeginRequest,
    RekeyCommitRequest, RekeyPartReply, RekeyPartRequest, RekeyRequest, RemoveMemberRequest,
    Request, RoomRecord, RoomsReply, RoomsRequest, ShareHistoryRequest,
};
use unibus::protocol::events::Notification;
use unibus::protocol::messages::{
    ListenReply, ListenRequest, MessagesRequest, LISTEN_LEASE, MAX_LISTEN_ROOMS,
};
use unibus::{KexPublicKey, RoomId, SignPublicKey};
use uploads::{UploadError, Uploads, UPLOAD_SWEEP};

use crate::messages::{Fanout, Listeners, Relay};
use crate::store::{Room, Store, StoreError, UserStatus};
use crate::task::AbortOnDrop;

/// How many records one request reads at once (users for `members` and `rekey`, rooms for
/// `rooms`).
const READS_IN_FLIGHT: usize = 64;

/// The most records one page of `members` or `rooms` holds, whatever the message limit.
pub const MAX_PAGE: usize = 10_000;
/// Room in a page's message for what is not a record: the reply's own headroom, and the braces,
/// the list's name and `next` around the records.
const PAGE_ENVELOPE_BYTES: usize = REPLY_HEADROOM + 512;
/// The longest `members` record with its separator:
/// `{"sign_public_key":"<64 hex>","kex_public_key":"<64 hex>"},`.
const MEMBER_RECORD_BYTES: usize = 171;
/// The longest `rooms` record with its separator: a 128-character id and a 19-digit epoch,
/// `{"id":"<128>","owner":"<64 hex>","epoch":<19 digits>},`.
const ROOM_RECORD_BYTES: usize = 241;
/// The queue group of the service.
pub const QUEUE_GROUP: &str = "unibus-control-plane";
/// The shortest time between two warnings about dropped requests (each says how many were
/// dropped since the last).
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// The one rule for where an answer may go (protocol §12.1): a reply subject under the caller's
/// own inbox prefix, `_INBOX_<caller>.` followed by at least one character, where `<caller>`
/// is the key the request's subject names (`unibus.cp.<caller>.<operation>…`). Anything else,
/// or no reply subject at all, would have membershipd speak to someone other than the caller.
pub fn replies_to_caller(subject: &str, reply: Option<&str>) -> bool {
    let (Some(caller), Some(reply)) = (subject.split('.').nth(2), reply) else {
        return false;
    };
    reply
        .strip_prefix("_INBOX_")
        .and_then(|rest| rest.strip_prefix(caller))
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| !rest.is_empty())
}

/// The requests dropped by [`replies_to_caller`], per operation, and when that was last logged.
#[derive(Debug, Default)]
struct Dropped {
    /// In the order of [`Operation::ALL`].
    counts: [AtomicU64; Operation::ALL.len()],
    /// The last warning, and the total it reported.
    logged: Mutex<(Option<tokio::time::Instant>, u64)>,
}

impl Dropped {
    /// Where `operation` is counted.
    fn slot(operation: Operation) -> Option<usize> {
        Operation::ALL.iter().position(|o| *o == operation)
    }

    /// Counts a dropped request on `subject`, and warns if the last warning is old enough.
    fn count(&self, subject: &str) {
        let operation = subject.split('.').nth(3).and_then(Operation::from_name);
        if let Some(slot) = operation.and_then(Self::slot) {
            self.counts[slot].fetch_add(1, Ordering::Relaxed);
        }
        let total = self.total();
        // Every update leaves the pair whole; a poisoned lock still holds a sound one.
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        if logged
            .0
            .is_none_or(|at| now.duration_since(at) >= DROP_LOG_EVERY)
        {
            tracing::warn!(
                subject,
                dropped = total - logged.1,
                total,
                "requests whose reply subject is not under their caller's inbox were dropped \
                 unanswered (protocol 12.1)"
            );
            *logged = (Some(now), total);
        }
    }

    /// The requests of `operation` dropped so far.
    fn of(&self, operation: Operation) -> u64 {
        Self::slot(operation).map_or(0, |slot| self.counts[slot].load(Ordering::Relaxed))
    }

    /// Every request dropped so far.
    fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The custom statistics of the endpoint `name`: its operation's drops (`rekey_begin` also
    /// counts its upload's `rekey_part` and `rekey_commit`, which are not endpoints).
    fn stats(&self, name: &str) -> serde_json::Value {
        let dropped = match Operation::from_name(name) {
            Some(Operation::RekeyBegin) => [
                Operation::RekeyBegin,
                Operation::RekeyPart,
                Operation::RekeyCommit,
            ]
            .into_iter()
            .map(|op| self.of(op))
            .sum(),
            Some(operation) => self.of(operation),
            None => 0,
        };
        serde_json::json!({ "dropped_requests": dropped })
    }
}

/// What an operation answers: its reply, or a refusal.
type Outcome<T> = Result<T, Refusal>;

/// The notifications an answer owes: each member with what to tell them.
pub type Notices = Vec<(SignPublicKey, Notification)>;

/// The answer to one request: the reply, and the notifications to publish once it is sent.
#[derive(Debug)]
pub struct Answer {
    /// The reply's bytes (a refusal is a reply too).
    pub reply: Vec<u8>,
    /// What the change tells its members (empty for reads and refusals).
    pub notices: Notices,
}

/// A refusal with `code` and a message for people.
pub(crate) fn refused(code: RefusalCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

/// The refusal for a store error: a store outage is `unavailable` (retry), an unreadable record
/// `internal` (logged), never blamed on the caller.
pub(crate) fn store_refusal(error: StoreError) -> Refusal {
    match error {
        StoreError::NotFound => refused(RefusalCode::NotFound, "no such record"),
        StoreError::RoomExists => refused(RefusalCode::RoomExists, error.to_string()),
        StoreError::EpochConflict { .. } => refused(RefusalCode::EpochConflict, error.to_string()),
        StoreError::Invalid(_) => refused(RefusalCode::BadRequest, error.to_string()),
        StoreError::Corrupt(_) => {
            tracing::error!(error = %error, "unreadable store record");
            refused(
                RefusalCode::Internal,
                "the server could not read its own records; report this",
            )
        }
        _ => refused(
            RefusalCode::Unavailable,
            "the store is unavailable; retry later",
        ),
    }
}

/// The refusal of a caller that is not a member of the room (also for unknown rooms).
pub(crate) fn not_member() -> Refusal {
    refused(RefusalCode::NotMember, "you are not a member of this room")
}

/// The room, if `caller` is a member; otherwise `not_member` (also for unknown rooms, so
/// non-members learn nothing).
pub(crate) async fn member_room(
    store: &dyn Store,
    room: &RoomId,
    caller: &SignPublicKey,
) -> Outcome<Room> {
    // Both reads at once; membership decides first, so a non-member learns nothing of the
    // room, not even whether it exists.
    let (member, record) = tokio::join!(store.is_member(room, caller), store.get_room(room));
    if !member.map_err(store_refusal)? {
        return Err(not_member());
    }
    record.map_err(store_refusal)
}

fn room_record(room: &Room) -> RoomRecord {
    RoomRecord {
        id: room.id.clone(),
        owner: room.owner,
        epoch: room.epoch,
    }
}

/// The control plane's subscriptions, made before it answers anything.
struct Bound {
    /// The micro-service registration; its endpoints end when it is dropped.
    _service: async_nats::service::Service,
    /// One endpoint per queue-group operation.
    endpoints: Vec<async_nats::service::endpoint::Endpoint>,
    /// This instance's own subjects (the instance-bound operations).
    own: Vec<async_nats::Subscriber>,
}

/// The control-plane service. See the [module documentation](self).
pub struct ControlPlane {
    store: Arc<dyn Store>,
    client: async_nats::Client,
    /// This instance's token: the last subject token of its instance-bound operations.
    instance: String,
    uploads: Arc<Uploads>,
    /// The requests dropped because their answer would not go to their caller.
    dropped: Arc<Dropped>,
    /// `send` and `messages`: the message stream.
    relay: Relay,
    /// `listen`: the leased live copies this instance sends.
    fanout: Arc<Fanout>,
}

impl ControlPlane {
    /// A service answering on `client`, a connection in the users' own account (`APP`), where
    /// it sees the reply subjects callers set.
    pub fn new(store: Arc<dyn Store>, client: async_nats::Client) -> Self {
        Self {
            relay: Relay::new(Arc::clone(&store), client.clone()),
            fanout: Arc::new(Fanout::new(Arc::clone(&store), client.clone())),
            store,
            client,
            instance: instance_token(),
            uploads: Arc::default(),
            dropped: Arc::default(),
        }
    }

    /// The leases of live copies this instance granted (`listen`).
    pub fn listeners(&self) -> Arc<Listeners> {
        self.fanout.listeners()
    }

    /// This instance's token: the last subject token of its `rekey_part` and `rekey_commit`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How many requests this instance dropped because their reply subject was not under
    /// their caller's inbox (or missing).
    pub fn dropped_requests(&self) -> u64 {
        self.dropped.total()
    }

    /// Registers the service (NATS micro-services protocol: discovery and stats) with one
    /// endpoint per [`Operation`], and answers requests until the connection closes. Idle
    /// uploads are swept every [`UPLOAD_SWEEP`] meanwhile.
    pub async fn run(self: Arc<Self>) -> Result<(), async_nats::Error> {
        let bound = self.bind().await?;
        self.serve(bound).await;
        Ok(())
    }

    /// Like [`run`](Self::run), but returns once the server holds every subscription (a
    /// flush: the server answers it only after the subscriptions before it), answering in a task
    /// of its own from then on. `membershipd serve` starts the auth callout only then, so it
    /// admits nobody before the control plane is there: a crowd reconnecting after a restart is
    /// not met by silence.
    pub async fn start(self: Arc<Self>) -> Result<tokio::task::JoinHandle<()>, async_nats::Error> {
        let bound = self.bind().await?;
        self.client.flush().await?;
        Ok(tokio::spawn(self.serve(bound)))
    }

    /// Subscribes the service's endpoints (in the queue group) and this instance's own
    /// subjects.
    async fn bind(&self) -> Result<Bound, async_nats::Error> {
        let dropped = Arc::clone(&self.dropped);
        let service = self
            .client
            .service_builder()
            .description("unibus control plane: rooms, epochs, sealed keys")
            .stats_handler(move |name, _| dropped.stats(&name))
            .queue_group(QUEUE_GROUP)
            .start("unibus-control-plane", env!("CARGO_PKG_VERSION"))
            .await?;
        let mut endpoints = Vec::new();
        let mut own = Vec::new();
        for operation in Operation::ALL {
            if operation.is_instance_bound() || operation.may_name_instance() {
                // Only this instance holds the upload or the leases: its own subject, outside
                // the queue group.
                let subject = operation.instance_subject(&self.instance);
                own.push(self.client.subscribe(subject).await?);
            }
            if operation.is_instance_bound() {
                continue;
            }
            endpoints.push(
                service
                    .endpoint_builder()
                    .name(operation.name())
                    .add(operation.service_subject())
                    .await?,
            );
        }
        Ok(Bound {
            _service: service,
            endpoints,
            own,
        })
    }

    /// Answers what `bound` receives until the connection closes, sweeping idle uploads and
    /// ended leases.
    async fn serve(self: Arc<Self>, bound: Bound) {
        // These end with this task, however it ends (aborted included).
        let _sweeper = AbortOnDrop(tokio::spawn(Uploads::sweep_every(
            Arc::downgrade(&self.uploads),
            UPLOAD_SWEEP,
        )));
        let _leases = AbortOnDrop(tokio::spawn(Fanout::sweep_every(
            Arc::downgrade(&self.fanout),
            LISTEN_LEASE,
        )));
        let this = Arc::clone(&self);
        let _own = AbortOnDrop(tokio::spawn(async move {
            let mut messages = futures::stream::select_all(bound.own);
            while let Some(message) = messages.next().await {
                let this = Arc::clone(&this);
                tokio::spawn(async move {
                    let subject = message.subject.as_str();
                    let reply_to = message.reply.as_deref();
                    let (Some(reply_to), Some(answer)) = (
                        reply_to,
                        this.take(subject, reply_to, &message.payload).await,
                    ) else {
                        return;
                    };
                    let sent = this
                        .client
                        .publish(reply_to.to_string(), answer.reply.into())
                        .await;
                    if let Err(e) = sent {
                        tracing::warn!(subject, error = %e, "a reply could not be sent");
                    }
                    this.publish(answer.notices).await;
                });
            }
        }));
        let mut requests = futures::stream::select_all(bound.endpoints);
        while let Some(request) = requests.next().await {
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                let message = &request.message;
                let subject = message.subject.as_str();
                let reply_to = message.reply.as_deref();
                let Some(answer) = this.take(subject, reply_to, &message.payload).await else {
                    return;
                };
                if let Err(e) = request.respond(Ok(answer.reply.into())).await {
                    tracing::warn!(subject, error = %e, "a reply could not be sent");
                }
                this.publish(answer.notices).await;
            });
        }
    }

    /// The answer to one request received on `subject` with the reply subject `reply_to`, its
    /// reply made to fit one message; `None` when the request is dropped, unanswered and not
    /// acted on, because its answer would not go to its caller ([`replies_to_caller`]).
    async fn take(&self, subject: &str, reply_to: Option<&str>, body: &[u8]) -> Option<Answer> {
        if !replies_to_caller(subject, reply_to) {
            self.dropped.count(subject);
            return None;
        }
        let answer = self.answer(subject, body).await;
        Some(Answer {
            reply: self.fitting(subject, answer.reply),
            notices: answer.notices,
        })
    }

    /// `reply`, or a `reply_too_large` refusal if it would not fit in one message.
    fn fitting(&self, subject: &str, reply: Vec<u8>) -> Vec<u8> {
        fit(subject, reply, self.client.server_info().max_payload)
    }

    /// The answer to one request on `subject` with `body`: its reply, and the notifications
    /// to [`publish`](Self::publish) once the reply is sent.
    pub async fn answer(&self, subject: &str, body: &[u8]) -> Answer {
        let mut notices = Notices::new();
        let reply = self.reply(subject, body, &mut notices).await;
        Answer { reply, notices }
    }

    /// The reply to one request, collecting what it owes its members in `notices`.
    async fn reply(&self, subject: &str, body: &[u8], notices: &mut Notices) -> Vec<u8> {
        let mut tokens = subject.split('.');
        let (caller, operation, instance) =
            match (tokens.nth(2), tokens.next(), tokens.next(), tokens.next()) {
                (Some(caller), Some(operation), instance, None) => (caller, operation, instance),
                _ => return reject(refused(RefusalCode::BadRequest, "unknown subject")),
            };
        let Some(operation) = Operation::from_name(operation) else {
            return reject(refused(RefusalCode::BadRequest, "unknown operation"));
        };
        let own = Some(self.instance.as_str());
        let named_as_it_may = match instance {
            None => !operation.is_instance_bound(),
            Some(_) => {
                (operation.is_instance_bound() || operation.may_name_instance()) && instance == own
            }
        };
        if !named_as_it_may {
            return reject(refused(RefusalCode::BadRequest, "unknown subject"));
        }
        match SignPublicKey::from_hex(caller) {
            Ok(caller) => self.handle(&caller, operation, body, notices).await,
            Err(_) => reject(refused(
                RefusalCode::BadRequest,
                "the subject does not name a key",
            )),
        }
    }

    async fn handle(
        &self,
        caller: &SignPublicKey,
        operation: Operation,
        body: &[u8],
        notices: &mut Notices,
    ) -> Vec<u8> {
        // A session may outlive its user until the revoker cuts it: check every time (from the
        // authorization cache, which fails closed).
        // Reads run beside the check, since it comes to the same answer and saves a round trip:
        // a refused caller gets the refusal and never the read. Writes wait for it.
        if operation.is_read_only() {
            // Reads change nothing, so they owe no notifications.
            let mut none = Notices::new();
            let (active, reply) = tokio::join!(
                self.check_active(caller),
                self.dispatch(caller, operation, body, &mut none)
            );
            match active {
                Ok(()) => reply,
                Err(refusal) => reject(refusal),
            }
        } else {
            match self.check_active(caller).await {
                Ok(()) => self.dispatch(caller, operation, body, notices).await,
                Err(refusal) => reject(refusal),
            }
        }
    }

    /// Reads the operation's request and runs its handler: one arm per [`Operation`].
    async fn dispatch(
        &self,
        caller: &SignPublicKey,
        operation: Operation,
        body: &[u8],
        notices: &mut Notices,
    ) -> Vec<u8> {
        match operation {
            Operation::Rooms => serve(body, |r: RoomsRequest| self.rooms(caller, r)).await,
            Operation::Member => serve(body, |r: MemberRequest| self.member(caller, r)).await,
            Operation::Epoch => serve(body, |r: EpochRequest| self.epoch(caller, r)).await,
            Operation::Key => serve(body, |r: KeyRequest| self.key(caller, r)).await,
            Operation::CreateRoom => {
                serve(body, |r: CreateRoomRequest| self.create_room(caller, r)).await
            }
            Operation::Members => serve(body, |r: MembersRequest| self.members(caller, r)).await,
            Operation::AddMember => {
                serve(body, |r: AddMemberRequest| {
                    self.add_member(caller, r.0, notices)
                })
                .await
            }
            Operation::RemoveMember => {
                serve(body, |r: RemoveMemberRequest| {
                    self.remove_member(caller, r.0, notices)
                })
                .await
            }
            Operation::Rekey => serve(body, |r: RekeyRequest| self.rekey(caller, r, notices)).await,
            Operation::RekeyBegin => {
                serve(body, |r: RekeyBeginRequest| self.rekey_begin(caller, r)).await
            }
            Operation::RekeyPart => {
                serve(body, |r: RekeyPartRequest| self.rekey_part(caller, r)).await
            }
            Operation::RekeyCommit => {
                serve(body, |r: RekeyCommitRequest| {
                    self.rekey_commit(caller, r, notices)
                })
                .await
            }
            Operation::ShareHistory => {
                serve(body, |r: ShareHistoryRequest| {
                    self.share_history(caller, r, notices)
                })
                .await
            }
            Operation::Listen => serve(body, |r: ListenRequest| self.listen(caller, r)).await,
            // The body is the envelope itself, not JSON (§15.2).
            Operation::Send => encode_reply(&self.relay.send(caller, body).await),
            Operation::Messages => {
                // A page fills what a reply may (`fit`).
                let budget = self
                    .client
                    .server_info()
                    .max_payload
                    .saturating_sub(REPLY_HEADROOM);
                serve(body, |r: MessagesRequest| {
                    self.relay.messages(caller, r, budget)
                })
                .await
            }
        }
    }

    /// Fails closed, but says which: a store outage is "unavailable", not "not authorized".
    async fn check_active(&self, caller: &SignPublicKey) -> Outcome<()> {
        match self.store.get_user(caller).await {
            Ok(user) if user.status == UserStatus::Active => Ok(()),
            Ok(_) | Err(StoreError::NotFound) => {
                Err(refused(RefusalCode::NotAuthorized, "not an active user"))
            }
            Err(e) => Err(store_refusal(e)),
        }
    }

    async fn rooms(&self, caller: &SignPublicKey, request: RoomsRequest) -> Outcome<RoomsReply> {
        let limit = self.page_limit(request.limit, ROOM_RECORD_BYTES)?;
        let store = &self.store;
        let ids = store
            .rooms_for_member(caller)
            .await
            .map_err(store_refusal)?;
        let start = request
            .after
            .as_ref()
            .map_or(0, |after| ids.partition_point(|id| id <= after));
        let more = ids.len() - start > limit;
        // In order (the list is sorted by id), with many reads in flight.
        let mut records = futures::stream::iter(ids.into_iter().skip(start).take(limit))
            .map(|id| async move { store.get_room(&id).await })
            .buffered(READS_IN_FLIGHT);
        let mut rooms = Vec::new();
        while let Some(record) = records.next().await {
            match record {
                Ok(room) => rooms.push(room_record(&room)),
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(store_refusal(e)),
            }
        }
        let next = if more {
            rooms.last().map(|room| room.id.clone())
        } else {
            None
        };
        Ok(RoomsReply { rooms, next })
    }

    /// How many records of at most `record_bytes` (JSON, with a separator) one page holds: what
    /// the caller asked for, at most [`MAX_PAGE`], and never more than fit in one message. A
    /// `limit` of 0 asks for nothing a page could be, and is `bad_request`.
    fn page_limit(&self, requested: Option<u32>, record_bytes: usize) -> Outcome<usize> {
        if requested == Some(0) {
            return Err(refused(
                RefusalCode::BadRequest,
                "`limit` must be at least 1 (leave it out for as many as fit)",
            ));
        }
        let max_payload = self.client.server_info().max_payload;
        let fits = (max_payload.saturating_sub(PAGE_ENVELOPE_BYTES) / record_bytes).max(1);
        let requested = requested.map_or(usize::MAX, |n| n as usize);
        Ok(fits.min(requested).min(MAX_PAGE))
    }

    async fn member(&self, caller: &SignPublicKey, request: MemberRequest) -> Outcome<MemberReply> {
        let member = self
            .store
            .is_member(&request.room, caller)
            .await
            .map_err(store_refusal)?;
        Ok(MemberReply { member })
    }

    async fn epoch(&self, caller: &SignPublicKey, request: EpochRequest) -> Outcome<EpochReply> {
        let room = self.member_room(&request.room, caller).await?;
        Ok(EpochReply { epoch: room.epoch })
    }

    async fn key(&self, caller: &SignPublicKey, request: KeyRequest) -> Outcome<KeyReply> {
        if request
            .epoch
            .is_some_and(|e| e > unibus::manifest::MAX_EPOCH)
        {
            return Err(refused(
                RefusalCode::BadRequest,
                "an epoch is at most 2^63 - 1",
            ));
        }
        // Membership first, so a non-member learns nothing of the room; the store finds the
        // latest epoch itself when none is asked for (one read fewer than asking for the room).
        if !self
            .store
            .is_member(&request.room, caller)
            .await
            .map_err(store_refusal)?
        {
            return Err(not_member());
        }
        let no_key = || refused(RefusalCode::NoKey, "no sealed key for you at that epoch");
        match self
            .store
            .member_part(&request.room, caller, request.epoch)
            .await
        {
            Ok(stored) => Ok(KeyReply { part: stored.part }),
            // For an earlier epoch the caller was not a recipient of, the history share the
            // owner stored for it, if any (§16.5).
            Err(StoreError::NotFound) => match request.epoch {
                Some(epoch) => match self.store.history_share(&request.room, caller, epoch).await {
                    Ok(share) => Ok(KeyReply { part: share }),
                    Err(StoreError::NotFound) => Err(no_key()),
                    Err(e) => Err(store_refusal(e)),
                },
                None => Err(no_key()),
            },
            Err(e) => Err(store_refusal(e)),
        }
    }

    async fn create_room(
        &self,
        caller: &SignPublicKey,
        request: CreateRoomRequest,
    ) -> Outcome<RoomRecord> {
        let room = self
            .store
            .create_room(&request.room, caller)
            .await
            .map_err(store_refusal)?;
        Ok(room_record(&room))
    }

    async fn members(
        &self,
        caller: &SignPublicKey,
        request: MembersRequest,
    ) -> Outcome<MembersReply> {
        let limit = self.page_limit(request.limit, MEMBER_RECORD_BYTES)?;
        self.owned_room(&request.room, caller).await?;
        // One more than the page, to know whether another page follows.
        let mut page = self
            .store
            .active_members(&request.room, request.after.as_ref(), limit + 1)
            .await
            .map_err(store_refusal)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = if more {
            page.last().map(|(key, _)| *key)
        } else {
            None
        };
        let members = page
            .into_iter()
            .map(|(sign_public_key, kex_public_key)| MemberKeys {
                sign_public_key,
                kex_public_key,
            })
            .collect();
        Ok(MembersReply { members, next })
    }

    async fn add_member(
        &self,
        caller: &SignPublicKey,
        change: MemberChange,
        notices: &mut Notices,
    ) -> Outcome<Empty> {
        self.owned_room(&change.room, caller).await?;
        match self.store.get_user(&change.member).await {
            Ok(user) if user.status == UserStatus::Active => {}
            Ok(_) | Err(StoreError::NotFound) => {
                return Err(refused(
                    RefusalCode::UnknownUser,
                    "no active user has this key",
                ))
            }
            Err(e) => return Err(store_refusal(e)),
        }
        self.store
            .add_member(&change.room, &change.member)
            .await
            .map_err(store_refusal)?;
        notices.push((change.member, Notification::Added { room: change.room }));
        Ok(Empty {})
    }

    async fn remove_member(
        &self,
        caller: &SignPublicKey,
        change: MemberChange,
        notices: &mut Notices,
    ) -> Outcome<Empty> {
        self.owned_room(&change.room, caller).await?;
        if &change.member == caller {
            return Err(refused(
                RefusalCode::BadRequest,
                "the owner cannot leave their own room",
            ));
        }
        match self.store.remove_member(&change.room, &change.member).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                return Err(refused(RefusalCode::NotMember, "not a member"))
            }
            Err(e) => return Err(store_refusal(e)),
        }
        notices.push((change.member, Notification::Removed { room: change.room }));
        Ok(Empty {})
    }

    /// The room, if `caller` is a member; otherwise `not_member` (also for unknown rooms, so
    /// non-members learn nothing).
    async fn member_room(&self, room: &RoomId, caller: &SignPublicKey) -> Outcome<Room> {
        member_room(&*self.store, room, caller).await
    }

    async fn owned_room(&self, room: &RoomId, caller: &SignPublicKey) -> Outcome<Room> {
        let room = self.member_room(room, caller).await?;
        if &room.owner != caller {
            return Err(refused(
                RefusalCode::NotOwner,
                "only the room's owner may do this",
            ));
        }
        Ok(room)
    }

    /// The members who can receive keys: active users, with their registered x25519 keys.
    async fn active_members(
        &self,
        room: &RoomId,
    ) -> Outcome<BTreeSet<(SignPublicKey, KexPublicKey)>> {
        let all = self
            .store
            .active_members(room, None, usize::MAX)
            .await
            .map_err(store_refusal)?;
        Ok(all.into_iter().collect())
    }

    async fn rekey(
        &self,
        caller: &SignPublicKey,
        request: RekeyRequest,
        notices: &mut Notices,
    ) -> Outcome<EpochReply> {
        let bad = |message: String| refused(RefusalCode::BadManifest, message);
        let bytes = hex::decode(&request.manifest).map_err(|e| bad(e.to_string()))?;
        self.commit_manifest(caller, &bytes, notices).await
    }

    /// Starts a chunked upload: checks the signed head as a whole manifest's would be (the
    /// signature, the rekeyer, the room's owner, the epoch it follows) before holding anything.
    async fn rekey_begin(
        &self,
        caller: &SignPublicKey,
        request: RekeyBeginRequest,
    ) -> Outcome<RekeyBeginReply> {
        let bad = |message: String| refused(RefusalCode::BadManifest, message);
        let bytes = hex::decode(&request.head).map_err(|e| bad(e.to_string()))?;
        let head = SignedHead::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        let header = head.verify_signature().map_err(|e| bad(e.to_string()))?;
        if &header.rekeyer != caller {
            return Err(bad("the manifest is not signed by the caller".into()));
        }
        let room = self.owned_room(&header.room, caller).await?;
        if room.epoch != header.previous_epoch {
            return Err(refused(
                RefusalCode::EpochConflict,
                format!(
                    "the room is at epoch {}, not {}",
                    room.epoch, header.previous_epoch
                ),
            ));
        }
        let upload = random_hex::<16>().ok_or_else(|| {
            refused(
                RefusalCode::Unavailable,
                "no randomness for an upload id; retry later",
            )
        })?;
        self.uploads
            .begin(upload.clone(), *caller, head)
            .map_err(upload_refusal)?;
        Ok(RekeyBeginReply {
            upload,
            instance: self.instance.clone(),
        })
    }

    /// Leases the caller live copies of those of `rooms` it is a member of (protocol §15.4).
    async fn listen(&self, caller: &SignPublicKey, request: ListenRequest) -> Outcome<ListenReply> {
        if let Some(instance) = &request.instance {
            self.same_instance(instance)?;
        }
        let mut rooms = request.rooms;
        if rooms.is_empty() || rooms.len() > MAX_LISTEN_ROOMS {
            return Err(refused(
                RefusalCode::BadRequest,
                format!("name 1 to {MAX_LISTEN_ROOMS} rooms"),
            ));
        }
        rooms.sort();
        rooms.dedup();
        // From the authorization cache while its feed is fresh; an outage leases nothing.
        let memberships =
            futures::future::join_all(rooms.iter().map(|room| self.store.is_member(room, caller)))
                .await;
        let mut leased = Vec::with_capacity(rooms.len());
        for (room, member) in rooms.into_iter().zip(memberships) {
            if member.map_err(store_refusal)? {
                leased.push(room);
            }
        }
        let new = self.fanout.lease(caller, &leased).await.map_err(|error| {
            tracing::warn!(%error, "a room's live copies could not be subscribed to");
            refused(
                RefusalCode::Unavailable,
                "the cluster did not take a subscription; retry later",
            )
        })?;
        Ok(ListenReply {
            instance: self.instance.clone(),
            rooms: leased,
            new,
        })
    }

    /// Refuses an upload step or a renewal whose body names another instance than its subject
    /// (which names this one): a client that sends it is confused about where it is.
    fn same_instance(&self, instance: &str) -> Outcome<()> {
        if instance != self.instance {
            return Err(refused(
                RefusalCode::BadRequest,
                "the body's `instance` is not the instance of the subject it was sent to",
            ));
        }
        Ok(())
    }

    async fn rekey_part(
        &self,
        caller: &SignPublicKey,
        request: RekeyPartRequest,
    ) -> Outcome<RekeyPartReply> {
        self.same_instance(&request.instance)?;
        let entries = hex::decode(&request.entries)
            .map_err(|e| refused(RefusalCode::BadRequest, format!("entries: {e}")))?;
        let received = self
            .uploads
            .add(&request.upload, caller, request.first as usize, &entries)
            .map_err(upload_refusal)?;
        // At most the head's count, a u32.
        Ok(RekeyPartReply {
            received: received as u32,
        })
    }

    async fn rekey_commit(
        &self,
        caller: &SignPublicKey,
        request: RekeyCommitRequest,
        notices: &mut Notices,
    ) -> Outcome<EpochReply> {
        self.same_instance(&request.instance)?;
        let upload = self
            .uploads
            .take(&request.upload, caller)
            .map_err(upload_refusal)?;
        if upload.received() != upload.count {
            return Err(refused(
                RefusalCode::BadManifest,
                format!(
                    "the upload holds {} of its {} entries",
                    upload.received(),
                    upload.count
                ),
            ));
        }
        let mut bytes = upload.head.to_bytes();
        bytes.extend_from_slice(&upload.entries);
        drop(upload);
        self.commit_manifest(caller, &bytes, notices).await
    }

    /// Checks a whole manifest's wire form (protocol §12.5) and stores it as the new epoch;
    /// every recipient is to be told.
    async fn commit_manifest(
        &self,
        caller: &SignPublicKey,
        bytes: &[u8],
        notices: &mut Notices,
    ) -> Outcome<EpochReply> {
        let bad = |message: String| refused(RefusalCode::BadManifest, message);
        let signed = SignedManifest::from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
        // The signature over the header, then the entries against the Merkle root it signs
        // (protocol §8.6): a manifest whose parts would not verify for their members is refused.
        let manifest = signed.verify_signature().map_err(|e| bad(e.to_string()))?;
        if &manifest.rekeyer != caller {
            return Err(bad("the manifest is not signed by the caller".into()));
        }
        self.owned_room(&manifest.room, caller).await?;
        let expected = self.active_members(&manifest.room).await?;
        let given: BTreeSet<(SignPublicKey, KexPublicKey)> = manifest
            .entries
            .iter()
            .map(|e| (e.member, e.recipient))
            .collect();
        if given != expected {
            return Err(refused(
                RefusalCode::RecipientsMismatch,
                format!(
                    "the manifest must seal to exactly the {} current members with their registered keys",
                    expected.len()
                ),
            ));
        }
        self.store.put_epoch(&signed).await.map_err(store_refusal)?;
        notices.extend(expected.into_iter().map(|(member, _)| {
            let event = Notification::Epoch {
                room: manifest.room.clone(),
                epoch: manifest.epoch,
            };
            (member, event)
        }));
        Ok(EpochReply {
            epoch: manifest.epoch,
        })
    }

    /// Publishes an answer's notifications, each to its member. Best effort: the store
    /// already holds the change, and a client that missed it finds it on its next query.
    pub async fn publish(&self, notices: Notices) {
        for (member, event) in notices {
            let subject = format!(
                "{}.{}",
                unibus::subjects::events(&member),
                Notification::SUBJECT_SUFFIX
            );
            if let Err(e) = self.client.publish(subject, event.to_bytes().into()).await {
                tracing::debug!(error = %e, "a notification could not be published");
            }
        }
    }
}

/// Reads `R` from `body` and answers it with `handler`, as bytes.
async fn serve<R, F, Fut>(body: &[u8], handler: F) -> Vec<u8>
where
    R: Request,
    F: FnOnce(R) -> Fut,
    Fut: std::future::Future<Output = Outcome<R::Reply>>,
{
    let outcome = match read_request::<R>(body) {
        Ok(request) => handler(request).await,
        Err(refusal) => Err(refusal),
    };
    encode_reply(&outcome)
}

/// Room in a reply's message for what is not the body: the reply subject and the protocol line.
const REPLY_HEADROOM: usize = 1024;

/// `reply`, or, when it is larger than a message of `max_payload` bytes can carry beside its
/// headroom, a logged `reply_too_large` refusal: the caller hears of it instead of timing out.
fn fit(subject: &str, reply: Vec<u8>, max_payload: usize) -> Vec<u8> {
    let limit = max_payload.saturating_sub(REPLY_HEADROOM);
    if reply.len() <= limit {
        return reply;
    }
    tracing::error!(
        subject,
        bytes = reply.len(),
        limit,
        "a reply is larger than the cluster's message limit; refused instead"
    );
    reject(refused(
        RefusalCode::ReplyTooLarge,
        format!(
            "the reply ({} bytes) is larger than the cluster's message limit ({limit} bytes)",
            reply.len()
        ),
    ))
}

/// A refusal's bytes.
fn reject(refusal: Refusal) -> Vec<u8> {
    encode_reply::<Empty>(&Err(refusal))
}

/// The refusal for an upload step: a vanished upload is `not_found` (start the rekey again), a
/// full instance `unavailable` (retry later), a caller holding its whole share
/// `too_many_uploads` (finish or abandon one first), a part out of place `bad_request`.
fn upload_refusal(error: UploadError) -> Refusal {
    let code = match error {
        UploadError::Unknown => RefusalCode::NotFound,
        UploadError::Busy => RefusalCode::Unavailable,
        UploadError::CallerLimit { .. } => RefusalCode::TooManyUploads,
        UploadError::OutOfOrder(_) => RefusalCode::BadRequest,
    };
    refused(code, error.to_string())
}

/// `N` random bytes in lowercase hex (an upload's id), if the OS gives randomness.
fn random_hex<const N: usize>() -> Option<String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// This instance's token, unique among the instances on one cluster: random when the OS gives
/// randomness, else the process id and the start time.
fn instance_token() -> String {
    random_hex::<8>().unwrap_or_else(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        format!("{:08x}{started:016x}", std::process::id())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record's bytes in a page: its JSON and a separator.
    fn in_page<T: serde::Serialize>(record: &T) -> usize {
        serde_json::to_vec(record).unwrap().len() + 1
    }

    #[test]
    fn only_a_reply_subject_under_the_callers_inbox_is_answered() {
        let caller = "ab".repeat(32);
        let other = "cd".repeat(32);
        let subject = format!("unibus.cp.{caller}.member");
        let part = format!("unibus.cp.{caller}.rekey_part.0123");
        for (on, reply) in [
            (&subject, format!("_INBOX_{caller}.x")),
            (&subject, format!("_INBOX_{caller}.nuid.7")),
            (&part, format!("_INBOX_{caller}.x")),
        ] {
            assert!(replies_to_caller(on, Some(&reply)), "{reply}");
        }
        for reply in [
            format!("_INBOX_{other}.x"),
            format!("unibus.events.{other}.room"),
            format!("unibus.events.{caller}.account"),
            format!("_INBOX_{caller}"),
            format!("_INBOX_{caller}."),
            format!("_INBOX_{caller}x.y"),
            format!("_INBOX.{caller}.x"),
            format!("_inbox_{caller}.x"),
        ] {
            assert!(!replies_to_caller(&subject, Some(&reply)), "{reply}");
        }
        assert!(!replies_to_caller(&subject, None));
        assert!(!replies_to_caller("unibus.cp", Some("_INBOX_.x")));
    }

    #[test]
    fn a_reply_too_large_for_one_message_becomes_a_refusal_that_fits() {
        let small = b"{}".to_vec();
        assert_eq!(fit("s", small.clone(), 4096), small);
        let refusal = fit("s", vec![b'x'; 4000], 4096);
        assert!(refusal.len() < 4096 - REPLY_HEADROOM);
        let read = unibus::protocol::control::read_reply::<Empty>(&refusal).unwrap();
        assert_eq!(read.unwrap_err().code, RefusalCode::ReplyTooLarge);
    }

    #[test]
    fn a_full_page_fits_in_one_message_with_its_envelope() {
        let id = unibus::Identity::generate().unwrap();
        for max_payload in [4096, 16_384, 1024 * 1024] {
            let records = (max_payload - PAGE_ENVELOPE_BYTES) / MEMBER_RECORD_BYTES;
            let page = MembersReply {
                members: vec![
                    MemberKeys {
                        sign_public_key: id.sign_public_key(),
                        kex_public_key: id.kex_public_key(),
                    };
                    records
                ],
                next: Some(id.sign_public_key()),
            };
            let reply = encode_reply(&Ok(page));
            assert_eq!(fit("s", reply.clone(), max_payload), reply, "{max_payload}");
        }
    }

    #[test]
    fn page_sizes_count_the_longest_record_exactly() {
        let id = unibus::Identity::generate().unwrap();
        let member = MemberKeys {
            sign_public_key: id.sign_public_key(),
            kex_public_key: id.kex_public_key(),
        };
        assert_eq!(in_page(&member), MEMBER_RECORD_BYTES);
        let room = RoomRecord {
            id: RoomId::new(&"R".repeat(128)).unwrap(),
            owner: id.sign_public_key(),
            epoch: unibus::manifest::MAX_EPOCH,
        };
        assert_eq!(in_page(&room), ROOM_RECORD_BYTES);
    }
}
