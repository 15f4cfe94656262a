//! The control-plane service on NATS: what an authenticated client asks the cluster.
//!
//! Requests go to `unibus.cp.<caller>.<operation>`, where `<caller>` is the caller's signing key
//! in hex. nats-server lets a user publish only under its own key (see
//! [`crate::auth::callout::UserPermissions`]), so the subject *is* the caller's authenticated
//! identity. The operations, their bodies and replies and the refusal codes are the shared
//! protocol types of [`unibus::protocol::control`] (protocol §12); this module answers them. The
//! service runs in a queue group, so every membershipd instance shares the load. Changes are
//! published as [`Notification`]s to `unibus.events.<member>.room` for each member they concern.
//!
//! A reply that would not fit in one NATS message (the server's `max_payload`) is replaced by a
//! `reply_too_large` refusal, and logged, so the caller hears of it instead of timing out.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_nats::service::ServiceExt;
use futures::StreamExt;
use unibus::manifest::SignedManifest;
use unibus::protocol::codes::{Refusal, RefusalCode};
use unibus::protocol::control::{
    encode_reply, read_request, AddMemberRequest, CreateRoomRequest, Empty, EpochReply,
    EpochRequest, KeyReply, KeyRequest, MemberChange, MemberKeys, MemberReply, MemberRequest,
    MembersReply, MembersRequest, Operation, RekeyRequest, RemoveMemberRequest, Request,
    RoomRecord, RoomsReply, RoomsRequest,
};
use unibus::protocol::events::Notification;
use unibus::{KexPublicKey, RoomId, SignPublicKey};

use crate::store::{Room, Store, StoreError, UserStatus};

/// How many records one request reads at once (users for `members` and `rekey`, rooms for
/// `rooms`).
const READS_IN_FLIGHT: usize = 64;
/// The queue group of the service.
pub const QUEUE_GROUP: &str = "unibus-control-plane";

/// What an operation answers: its reply, or a refusal.
type Outcome<T> = Result<T, Refusal>;

fn refused(code: RefusalCode, message: impl Into<String>) -> Refusal {
    Refusal::new(code, message)
}

/// The refusal for a store error: a store outage is `unavailable` (retry), an unreadable record
/// `internal` (logged), never blamed on the caller.
fn store_refusal(error: StoreError) -> Refusal {
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

fn room_record(room: &Room) -> RoomRecord {
    RoomRecord {
        id: room.id.clone(),
        owner: room.owner,
        epoch: room.epoch,
    }
}

/// The control-plane service. See the [module documentation](self).
pub struct ControlPlane {
    store: Arc<dyn Store>,
    client: async_nats::Client,
}

impl ControlPlane {
    /// A service answering on `client` (a connection in the account that exports the service).
    pub fn new(store: Arc<dyn Store>, client: async_nats::Client) -> Self {
        Self { store, client }
    }

    /// Registers the service (NATS micro-services protocol: discovery and stats) with one
    /// endpoint per [`Operation`], and answers requests until the connection closes.
    pub async fn run(self: Arc<Self>) -> Result<(), async_nats::Error> {
        let service = self
            .client
            .service_builder()
            .description("unibus control plane: rooms, epochs, sealed keys")
            .queue_group(QUEUE_GROUP)
            .start("unibus-control-plane", env!("CARGO_PKG_VERSION"))
            .await?;
        let mut endpoints = Vec::new();
        for operation in Operation::ALL {
            endpoints.push(
                service
                    .endpoint_builder()
                    .name(operation.name())
                    .add(operation.service_subject())
                    .await?,
            );
        }
        let mut requests = futures::stream::select_all(endpoints);
        while let Some(request) = requests.next().await {
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                let subject = request.message.subject.to_string();
                let reply = this.answer(&subject, &request.message.payload).await;
                let reply = this.fitting(&subject, reply);
                if let Err(e) = request.respond(Ok(reply.into())).await {
                    tracing::warn!(subject = %subject, error = %e, "a reply could not be sent");
                }
            });
        }
        Ok(())
    }

    /// `reply`, or a `reply_too_large` refusal if it would not fit in one message.
    fn fitting(&self, subject: &str, reply: Vec<u8>) -> Vec<u8> {
        // Headroom for the reply subject and the protocol line.
        let limit = self.client.server_info().max_payload.saturating_sub(1024);
        if reply.len() <= limit {
            return reply;
        }
        tracing::error!(
            subject,
            bytes = reply.len(),
            limit,
            "a reply is larger than the cluster's message limit; refused instead"
        );
        encode_reply::<Empty>(&Err(refused(
            RefusalCode::ReplyTooLarge,
            format!(
                "the reply ({} bytes) is larger than the cluster's message limit ({limit} bytes)",
                reply.len()
            ),
        )))
    }

    /// The reply to one request on `subject` with `body`.
    pub async fn answer(&self, subject: &str, body: &[u8]) -> Vec<u8> {
        let mut tokens = subject.split('.');
        let (caller, operation) = match (tokens.nth(2), tokens.next(), tokens.next()) {
            (Some(caller), Some(operation), None) => (caller, operation),
            _ => return reject(refused(RefusalCode::BadRequest, "unknown subject")),
        };
        let Some(operation) = Operation::from_name(operation) else {
            return reject(refused(RefusalCode::BadRequest, "unknown operation"));
        };
        match SignPublicKey::from_hex(caller) {
            Ok(caller) => self.handle(&caller, operation, body).await,
            Err(_) => reject(refused(
                RefusalCode::BadRequest,
                "the subject does not name a key",
            )),
        }
    }

    async fn handle(&self, caller: &SignPublicKey, operation: Operation, body: &[u8]) -> Vec<u8> {
        // A session may outlive its user by up to one revocation sweep: check every time.
        // Reads run beside the check, since it comes to the same answer and saves a round trip:
        // a refused caller gets the refusal and never the read. Writes wait for it.
        if operation.is_read_only() {
            let (active, reply) = tokio::join!(
                self.check_active(caller),
                self.dispatch(caller, operation, body)
            );
            match active {
                Ok(()) => reply,
                Err(refusal) => reject(refusal),
            }
        } else {
            match self.check_active(caller).await {
                Ok(()) => self.dispatch(caller, operation, body).await,
                Err(refusal) => reject(refusal),
            }
        }
    }

    /// Reads the operation's request and runs its handler: one arm per [`Operation`].
    async fn dispatch(&self, caller: &SignPublicKey, operation: Operation, body: &[u8]) -> Vec<u8> {
        match operation {
            Operation::Rooms => serve(body, |_: RoomsRequest| self.rooms(caller)).await,
            Operation::Member => serve(body, |r: MemberRequest| self.member(caller, r)).await,
            Operation::Epoch => serve(body, |r: EpochRequest| self.epoch(caller, r)).await,
            Operation::Key => serve(body, |r: KeyRequest| self.key(caller, r)).await,
            Operation::CreateRoom => {
                serve(body, |r: CreateRoomRequest| self.create_room(caller, r)).await
            }
            Operation::Members => serve(body, |r: MembersRequest| self.members(caller, r)).await,
            Operation::AddMember => {
                serve(body, |r: AddMemberRequest| self.add_member(caller, r.0)).await
            }
            Operation::RemoveMember => {
                serve(body, |r: RemoveMemberRequest| {
                    self.remove_member(caller, r.0)
                })
                .await
            }
            Operation::Rekey => serve(body, |r: RekeyRequest| self.rekey(caller, r)).await,
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

    async fn rooms(&self, caller: &SignPublicKey) -> Outcome<RoomsReply> {
        let store = &self.store;
        // In order (the list is sorted by id), with many reads in flight.
        let ids = store
            .rooms_for_member(caller)
            .await
            .map_err(store_refusal)?;
        let mut records = futures::stream::iter(ids)
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
        Ok(RoomsReply { rooms })
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
        let room = self.member_room(&request.room, caller).await?;
        let epoch = request.epoch.unwrap_or(room.epoch);
        match self
            .store
            .member_part(&request.room, caller, Some(epoch))
            .await
        {
            Ok(stored) => Ok(KeyReply { part: stored.part }),
            Err(StoreError::NotFound) => Err(refused(
                RefusalCode::NoKey,
                "no sealed key for you at that epoch",
            )),
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
        self.owned_room(&request.room, caller).await?;
        let members = self
            .active_members(&request.room)
            .await?
            .into_iter()
            .map(|(sign_public_key, kex_public_key)| MemberKeys {
                sign_public_key,
                kex_public_key,
            })
            .collect();
        Ok(MembersReply { members })
    }

    async fn add_member(&self, caller: &SignPublicKey, change: MemberChange) -> Outcome<Empty> {
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
        self.notify(&change.member, Notification::Added { room: change.room })
            .await;
        Ok(Empty {})
    }

    async fn remove_member(&self, caller: &SignPublicKey, change: MemberChange) -> Outcome<Empty> {
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
        self.notify(&change.member, Notification::Removed { room: change.room })
            .await;
        Ok(Empty {})
    }

    /// The room, if `caller` is a member; otherwise `not_member` (also for unknown rooms, so
    /// non-members learn nothing).
    async fn member_room(&self, room: &RoomId, caller: &SignPublicKey) -> Outcome<Room> {
        // Both reads at once; membership decides first, so a non-member learns nothing of
        // the room, not even whether it exists.
        let (member, record) = tokio::join!(
            self.store.is_member(room, caller),
            self.store.get_room(room)
        );
        if !member.map_err(store_refusal)? {
            return Err(refused(
                RefusalCode::NotMember,
                "you are not a member of this room",
            ));
        }
        record.map_err(store_refusal)
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
        let store = &self.store;
        // Many reads in flight: a 1,000-member room costs a few round trips, not a thousand.
        let members = store.list_members(room).await.map_err(store_refusal)?;
        let mut users = futures::stream::iter(members)
            .map(|member| async move { store.get_user(&member).await })
            .buffer_unordered(READS_IN_FLIGHT);
        let mut active = BTreeSet::new();
        while let Some(user) = users.next().await {
            match user {
                Ok(user) if user.status == UserStatus::Active => {
                    active.insert((user.sign_key, user.kex_key));
                }
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(store_refusal(e)),
            }
        }
        Ok(active)
    }

    async fn rekey(&self, caller: &SignPublicKey, request: RekeyRequest) -> Outcome<EpochReply> {
        let bad = |message: String| refused(RefusalCode::BadManifest, message);
        let bytes = hex::decode(&request.manifest).map_err(|e| bad(e.to_string()))?;
        let signed = SignedManifest::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
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
        for (member, _) in &expected {
            let event = Notification::Epoch {
                room: manifest.room.clone(),
                epoch: manifest.epoch,
            };
            self.notify(member, event).await;
        }
        Ok(EpochReply {
            epoch: manifest.epoch,
        })
    }

    /// Publishes a change notification to one member. Best effort: the store already holds
    /// the change, and a client that missed it finds it on its next query.
    async fn notify(&self, member: &SignPublicKey, event: Notification) {
        let subject = format!(
            "{}.{}",
            unibus::subjects::events(member),
            Notification::SUBJECT_SUFFIX
        );
        if let Err(e) = self.client.publish(subject, event.to_bytes().into()).await {
            tracing::debug!(error = %e, "a notification could not be published");
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

/// A refusal's bytes.
fn reject(refusal: Refusal) -> Vec<u8> {
    encode_reply::<Empty>(&Err(refusal))
}
