//! The control-plane service on NATS: what an authenticated client asks the cluster.
//!
//! Requests go to `unibus.cp.<caller>.<operation>`, where `<caller>` is the caller's signing key
//! in hex. nats-server lets a user publish only under its own key (see
//! [`crate::auth::callout::UserPermissions`]), so the subject *is* the caller's authenticated
//! identity. Bodies and replies are JSON; a refusal is `{"error": {"code", "message"}}`. The
//! service runs in a queue group, so every membershipd instance shares the load. Changes are
//! published to `unibus.events.<member>.room` for each member they concern.
//!
//! | operation | body | reply | who |
//! |---|---|---|---|
//! | `rooms` | `{}` | `{"rooms": [room]}` | anyone |
//! | `member` | `{"room"}` | `{"member": bool}` | anyone (false for unknown rooms) |
//! | `epoch` | `{"room"}` | `{"epoch"}` | members |
//! | `key` | `{"room", "epoch"?}` | `{"epoch", "owner", "sealed", "manifest"}` (hex) | members |
//! | `create_room` | `{"room"}` | room | anyone; the caller owns it |
//! | `members` | `{"room"}` | `{"members": [{"sign_public_key", "kex_public_key"}]}` | the owner |
//! | `add_member` | `{"room", "member"}` | `{}` | the owner |
//! | `remove_member` | `{"room", "member"}` | `{}` | the owner |
//! | `rekey` | `{"manifest"}` (hex) | `{"epoch"}` | the owner |
//!
//! where `room` is `{"id", "owner", "epoch"}`.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_nats::service::ServiceExt;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use unibus::manifest::SignedManifest;
use unibus::{KexPublicKey, RoomId, SignPublicKey};

use crate::store::{Room, Store, StoreError, UserStatus};

use unibus::subjects::REQUEST_PREFIX;
/// How many records one request reads at once (users for `members` and `rekey`, rooms for
/// `rooms`).
const READS_IN_FLIGHT: usize = 64;
/// The queue group of the service.
pub const QUEUE_GROUP: &str = "unibus-control-plane";
/// Every operation.
pub const OPERATIONS: &[&str] = &[
    "rooms",
    "member",
    "epoch",
    "key",
    "create_room",
    "members",
    "add_member",
    "remove_member",
    "rekey",
];

/// A refused request: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// e.g. `not_member`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => refused("not_found", "no such record"),
            StoreError::RoomExists => refused("room_exists", error.to_string()),
            StoreError::EpochConflict { .. } => refused("epoch_conflict", error.to_string()),
            StoreError::Invalid(_) => refused("bad_request", error.to_string()),
            StoreError::Corrupt(_) => {
                tracing::error!(error = %error, "unreadable store record");
                refused(
                    "internal",
                    "the server could not read its own records; report this",
                )
            }
            _ => refused("unavailable", "the store is unavailable; retry later"),
        }
    }
}

#[derive(Deserialize)]
struct RoomBody {
    room: String,
    #[serde(default)]
    epoch: Option<u64>,
    #[serde(default)]
    member: Option<String>,
}

#[derive(Deserialize)]
struct RekeyBody {
    manifest: String,
}

fn room_json(room: &Room) -> Value {
    json!({ "id": room.id, "owner": room.owner, "epoch": room.epoch })
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

    /// Registers the service (NATS micro-services protocol: discovery and stats) and answers
    /// requests until the connection closes.
    pub async fn run(self: Arc<Self>) -> Result<(), async_nats::Error> {
        let service = self
            .client
            .service_builder()
            .description("unibus control plane: rooms, epochs, sealed keys")
            .queue_group(QUEUE_GROUP)
            .start("unibus-control-plane", env!("CARGO_PKG_VERSION"))
            .await?;
        let mut endpoints = Vec::new();
        for operation in OPERATIONS {
            endpoints.push(
                service
                    .endpoint_builder()
                    .name(*operation)
                    .add(format!("{REQUEST_PREFIX}.*.{operation}"))
                    .await?,
            );
        }
        let mut requests = futures::stream::select_all(endpoints);
        while let Some(request) = requests.next().await {
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                let reply = this
                    .answer(&request.message.subject, &request.message.payload)
                    .await;
                let _ = request.respond(Ok(reply.to_string().into())).await;
            });
        }
        Ok(())
    }

    /// The reply to one request on `subject` with `body`.
    pub async fn answer(&self, subject: &str, body: &[u8]) -> Value {
        let mut tokens = subject.split('.');
        let (caller, operation) = match (tokens.nth(2), tokens.next(), tokens.next()) {
            (Some(caller), Some(operation), None) => (caller, operation),
            _ => return error_json(&refused("bad_request", "unknown subject")),
        };
        let outcome = match SignPublicKey::from_hex(caller) {
            Ok(caller) => self.handle(&caller, operation, body).await,
            Err(_) => Err(refused("bad_request", "the subject does not name a key")),
        };
        outcome.unwrap_or_else(|e| error_json(&e))
    }

    async fn handle(
        &self,
        caller: &SignPublicKey,
        operation: &str,
        body: &[u8],
    ) -> Result<Value, Refused> {
        // A session may outlive its user by up to one revocation sweep: check every time.
        // Reads run beside the check, since it comes to the same answer and saves a round trip:
        // a refused caller gets the refusal and never the read. Writes wait for it.
        let read_only = matches!(operation, "rooms" | "member" | "epoch" | "key");
        if read_only {
            let (active, outcome) = tokio::join!(
                self.check_active(caller),
                self.operate(caller, operation, body)
            );
            active?;
            outcome
        } else {
            self.check_active(caller).await?;
            self.operate(caller, operation, body).await
        }
    }

    /// Fails closed, but says which: a store outage is "unavailable", not "not authorized".
    async fn check_active(&self, caller: &SignPublicKey) -> Result<(), Refused> {
        match self.store.get_user(caller).await {
            Ok(user) if user.status == UserStatus::Active => Ok(()),
            Ok(_) | Err(StoreError::NotFound) => {
                Err(refused("not_authorized", "not an active user"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn operate(
        &self,
        caller: &SignPublicKey,
        operation: &str,
        body: &[u8],
    ) -> Result<Value, Refused> {
        if operation == "rooms" {
            parse::<AnyObject>(body)?;
            let store = &self.store;
            // In order (the list is sorted by id), with many reads in flight.
            let mut records = futures::stream::iter(store.rooms_for_member(caller).await?)
                .map(|id| async move { store.get_room(&id).await })
                .buffered(READS_IN_FLIGHT);
            let mut rooms = Vec::new();
            while let Some(record) = records.next().await {
                match record {
                    Ok(room) => rooms.push(room_json(&room)),
                    Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(json!({ "rooms": rooms }));
        }
        if operation == "rekey" {
            let body: RekeyBody = parse(body)?;
            return self.rekey(caller, &body.manifest).await;
        }
        let body: RoomBody = parse(body)?;
        let room_id = RoomId::new(&body.room).map_err(|e| refused("bad_request", e.to_string()))?;
        match operation {
            "member" => Ok(json!({ "member": self.store.is_member(&room_id, caller).await? })),
            "create_room" => Ok(room_json(&self.store.create_room(&room_id, caller).await?)),
            "epoch" => {
                let room = self.member_room(&room_id, caller).await?;
                Ok(json!({ "epoch": room.epoch }))
            }
            "key" => {
                if body.epoch.is_some_and(|e| e > unibus::manifest::MAX_EPOCH) {
                    return Err(refused("bad_request", "an epoch is at most 2^63 - 1"));
                }
                let room = self.member_room(&room_id, caller).await?;
                let epoch = body.epoch.unwrap_or(room.epoch);
                // The copy and the manifest are independent reads of immutable records.
                let (key, manifest) = tokio::join!(
                    self.store.sealed_key(&room_id, caller, Some(epoch)),
                    self.store.manifest(&room_id, epoch)
                );
                let key = match key {
                    Ok(key) => key,
                    Err(StoreError::NotFound) => {
                        return Err(refused("no_key", "no sealed key for you at that epoch"))
                    }
                    Err(e) => return Err(e.into()),
                };
                Ok(json!({
                    "epoch": key.epoch,
                    "owner": room.owner,
                    "sealed": hex::encode(key.sealed.to_bytes()),
                    "manifest": hex::encode(manifest?),
                }))
            }
            "members" => {
                self.owned_room(&room_id, caller).await?;
                let mut members = Vec::new();
                for (sign, kex) in self.active_members(&room_id).await? {
                    members.push(json!({ "sign_public_key": sign, "kex_public_key": kex }));
                }
                Ok(json!({ "members": members }))
            }
            "add_member" | "remove_member" => {
                self.owned_room(&room_id, caller).await?;
                let member = body
                    .member
                    .as_deref()
                    .ok_or_else(|| refused("bad_request", "missing member"))
                    .and_then(|m| {
                        SignPublicKey::from_hex(m)
                            .map_err(|e| refused("bad_request", e.to_string()))
                    })?;
                if operation == "add_member" {
                    match self.store.get_user(&member).await {
                        Ok(user) if user.status == UserStatus::Active => {}
                        Ok(_) | Err(StoreError::NotFound) => {
                            return Err(refused("unknown_user", "no active user has this key"))
                        }
                        Err(e) => return Err(e.into()),
                    }
                    self.store.add_member(&room_id, &member).await?;
                    self.notify(&member, json!({ "room": room_id, "kind": "added" }))
                        .await;
                } else {
                    if &member == caller {
                        return Err(refused(
                            "bad_request",
                            "the owner cannot leave their own room",
                        ));
                    }
                    match self.store.remove_member(&room_id, &member).await {
                        Ok(()) => {}
                        Err(StoreError::NotFound) => {
                            return Err(refused("not_member", "not a member"))
                        }
                        Err(e) => return Err(e.into()),
                    }
                    self.notify(&member, json!({ "room": room_id, "kind": "removed" }))
                        .await;
                }
                Ok(json!({}))
            }
            _ => Err(refused("bad_request", "unknown operation")),
        }
    }

    /// The room, if `caller` is a member; otherwise `not_member` (also for unknown rooms, so
    /// non-members learn nothing).
    async fn member_room(&self, room: &RoomId, caller: &SignPublicKey) -> Result<Room, Refused> {
        // Both reads at once; membership decides first, so a non-member learns nothing of
        // the room, not even whether it exists.
        let (member, record) = tokio::join!(
            self.store.is_member(room, caller),
            self.store.get_room(room)
        );
        if !member? {
            return Err(refused("not_member", "you are not a member of this room"));
        }
        Ok(record?)
    }

    async fn owned_room(&self, room: &RoomId, caller: &SignPublicKey) -> Result<Room, Refused> {
        let room = self.member_room(room, caller).await?;
        if &room.owner != caller {
            return Err(refused("not_owner", "only the room's owner may do this"));
        }
        Ok(room)
    }

    /// The members who can receive keys: active users, with their registered x25519 keys.
    async fn active_members(
        &self,
        room: &RoomId,
    ) -> Result<BTreeSet<(SignPublicKey, KexPublicKey)>, Refused> {
        let store = &self.store;
        // Many reads in flight: a 1,000-member room costs a few round trips, not a thousand.
        let mut users = futures::stream::iter(store.list_members(room).await?)
            .map(|member| async move { store.get_user(&member).await })
            .buffer_unordered(READS_IN_FLIGHT);
        let mut members = BTreeSet::new();
        while let Some(user) = users.next().await {
            match user {
                Ok(user) if user.status == UserStatus::Active => {
                    members.insert((user.sign_key, user.kex_key));
                }
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(members)
    }

    async fn rekey(&self, caller: &SignPublicKey, manifest_hex: &str) -> Result<Value, Refused> {
        let bytes =
            hex::decode(manifest_hex).map_err(|e| refused("bad_manifest", e.to_string()))?;
        let signed = SignedManifest::from_bytes(&bytes)
            .map_err(|e| refused("bad_manifest", e.to_string()))?;
        let manifest = signed
            .verify_signature()
            .map_err(|e| refused("bad_manifest", e.to_string()))?;
        if &manifest.rekeyer != caller {
            return Err(refused(
                "bad_manifest",
                "the manifest is not signed by the caller",
            ));
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
                "recipients_mismatch",
                format!(
                    "the manifest must seal to exactly the {} current members with their registered keys",
                    expected.len()
                ),
            ));
        }
        self.store.put_epoch(&signed).await?;
        for (member, _) in &expected {
            self.notify(
                member,
                json!({ "room": manifest.room, "kind": "epoch", "epoch": manifest.epoch }),
            )
            .await;
        }
        Ok(json!({ "epoch": manifest.epoch }))
    }

    /// Publishes a change notification to one member. Best effort: the store already holds
    /// the change, and a client that missed it finds it on its next query.
    async fn notify(&self, member: &SignPublicKey, event: Value) {
        let subject = unibus::subjects::events(member) + ".room";
        let _ = self.client.publish(subject, event.to_string().into()).await;
    }
}

/// Reads a request body: empty, or one JSON object (an array in field order is refused, as serde
/// would otherwise take it for the struct). Fields the operation does not take are ignored.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Refused> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| refused("bad_request", format!("malformed request: {e}")));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| refused("bad_request", format!("malformed request: {e}")))?;
    if !value.is_object() {
        return Err(refused("bad_request", "the body must be a JSON object"));
    }
    serde_json::from_value(value)
        .map_err(|e| refused("bad_request", format!("malformed request: {e}")))
}

/// A body of no fields the operation reads: empty or any JSON object.
#[derive(Deserialize)]
struct AnyObject {}

fn error_json(refusal: &Refused) -> Value {
    json!({ "error": { "code": refusal.code, "message": refusal.message } })
}
