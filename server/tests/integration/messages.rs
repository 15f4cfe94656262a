//! Messages on the bus (protocol §15) end to end: members log in with their own keys, seal
//! envelopes with keys fetched from a real control plane, `send` them through membershipd into
//! the JetStream stream of a real nats-server, read them back with `messages`, and receive
//! live copies; non-members, removed members and revoked or deleted users get nothing.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{login, register, wait_for_control_plane, Errors, StoreKind};
use futures::StreamExt;
use serde_json::{json, Value};
use unibus::envelope::{ContentType, Envelope, EpochKey};
use unibus::manifest::{MemberPart, Recipient, SignedManifest};
use unibus::protocol::control::read_reply;
use unibus::protocol::messages::{
    live_subject, member_live_subject, store_subject, LiveMessage, MessagePage, SendReply, STREAM,
};
use unibus::sealing::RoomKey;
use unibus::{Identity, RoomId, SignPublicKey};
use unibus_server::auth::setup::AuthSetup;
use unibus_server::control::ControlPlane;
use unibus_server::messages::stream::first_position;
use unibus_server::messages::{ensure_stream, Listeners, StreamSettings};
use unibus_server::store::now_millis;
use unibus_server::store::Store;
use unibus_testkit::NatsCluster;

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A cluster with membershipd's services on it: the callout, the message stream, the fan-out
/// and the control plane.
struct Bus {
    cluster: NatsCluster,
    store: Arc<dyn Store>,
    control: async_nats::Client,
    /// The control plane's task: aborted, membershipd's requests get no answer.
    plane: tokio::task::AbortHandle,
    /// The leases of live copies its control plane granted.
    listeners: Arc<Listeners>,
    _service: async_nats::Client,
    _dir: tempfile::TempDir,
}

async fn bus(nodes: usize) -> Bus {
    bus_on(nodes, StoreKind::Sqlite).await
}

async fn bus_on(nodes: usize, backend: StoreKind) -> Bus {
    bus_with(nodes, backend, "").await
}

/// A [`bus_on`] whose nodes carry `more` in their config (for example a `max_payload`).
async fn bus_with(nodes: usize, backend: StoreKind, more: &str) -> Bus {
    bus_over(nodes, backend, more, false, |store| store).await
}

/// A [`bus`] with a revoker, as `membershipd serve` runs one: the sessions of members who
/// leave a room are cut.
async fn bus_revoking(nodes: usize) -> Bus {
    bus_over(nodes, StoreKind::Sqlite, "", true, |store| store).await
}

/// A bus on `wrap` of the store it opens (every service, and [`Bus::store`], use the
/// wrapped one), with a revoker if `revoking`.
async fn bus_over(
    nodes: usize,
    backend: StoreKind,
    more: &str,
    revoking: bool,
    wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> Bus {
    let setup = AuthSetup::generate().unwrap();
    let cluster = common::cluster_with_auth_and(&setup, nodes, more).await;
    let dir = tempfile::tempdir().unwrap();
    let store = wrap(common::open_store(backend, nodes, &cluster, &setup, dir.path()).await);
    let service = if revoking {
        common::start_callout_and_revoker(&cluster, &setup, Arc::clone(&store)).await
    } else {
        common::start_callout(&cluster, &setup, Arc::clone(&store)).await
    };
    let control = common::connect_control(&cluster, &setup).await;
    let size = common::start_messages(&cluster, &setup, &control).await;
    let plane = ControlPlane::new(Arc::clone(&store), control.clone());
    assert_eq!(size, nodes, "the cluster's size as JetStream reports it");
    let listeners = plane.listeners();
    let plane = tokio::spawn(Arc::new(plane).run()).abort_handle();
    control.flush().await.unwrap();
    wait_for_control_plane(&cluster, &*store).await;
    Bus {
        cluster,
        store,
        control,
        plane,
        listeners,
        _service: service,
        _dir: dir,
    }
}

struct Member {
    id: Identity,
    client: async_nats::Client,
    errors: Errors,
    live: async_nats::Subscriber,
}

async fn member(bus: &Bus) -> Member {
    member_at(bus, bus.cluster.server_addrs()).await
}

async fn member_at(bus: &Bus, addrs: Vec<async_nats::ServerAddr>) -> Member {
    let id = register(&*bus.store).await;
    let (client, errors) = login(addrs, &id).await.unwrap();
    let live = client
        .subscribe(member_live_subject(&id.sign_public_key()))
        .await
        .unwrap();
    client.flush().await.unwrap();
    Member {
        id,
        client,
        errors,
        live,
    }
}

/// A refusal's code, or the reply.
type Reply<T> = Result<T, String>;

impl Member {
    fn key(&self) -> SignPublicKey {
        self.id.sign_public_key()
    }

    async fn call_bytes(&self, operation: &str, body: Vec<u8>) -> Vec<u8> {
        let subject = format!("unibus.cp.{}.{operation}", self.key().to_hex());
        tokio::time::timeout(REPLY_TIMEOUT, self.client.request(subject, body.into()))
            .await
            .expect("the service answers")
            .expect("request")
            .payload
            .to_vec()
    }

    async fn call(&self, operation: &str, body: Value) -> Value {
        let reply = self
            .call_bytes(operation, body.to_string().into_bytes())
            .await;
        serde_json::from_slice(&reply).unwrap()
    }

    /// Leases the live copies of `rooms` (`listen`, protocol §15.4); the reply as JSON.
    async fn listen(&self, rooms: &[&str]) -> Value {
        self.call("listen", json!({ "rooms": rooms })).await
    }

    async fn send(&self, envelope: &[u8]) -> Reply<SendReply> {
        let reply = self.call_bytes("send", envelope.to_vec()).await;
        read_reply::<SendReply>(&reply)
            .unwrap()
            .map_err(|r| r.code.as_str().to_string())
    }

    /// `send` where the cluster may fail: a request that gets no answer is `Err("no answer")`.
    async fn try_send(&self, envelope: &[u8]) -> Reply<SendReply> {
        let subject = format!("unibus.cp.{}.send", self.key().to_hex());
        let request = self.client.request(subject, envelope.to_vec().into());
        match tokio::time::timeout(REPLY_TIMEOUT, request).await {
            Ok(Ok(reply)) => read_reply::<SendReply>(&reply.payload)
                .unwrap()
                .map_err(|r| r.code.as_str().to_string()),
            _ => Err("no answer".into()),
        }
    }

    async fn page(&self, request: Value) -> Reply<MessagePage> {
        let reply = self
            .call_bytes("messages", request.to_string().into_bytes())
            .await;
        read_reply::<MessagePage>(&reply)
            .unwrap()
            .map_err(|r| r.code.as_str().to_string())
    }

    async fn create(&self, room: &str) {
        let created = self.call("create_room", json!({ "room": room })).await;
        assert_eq!(created["id"], room, "{created}");
    }

    async fn add(&self, room: &str, other: &Member) {
        let added = self
            .call(
                "add_member",
                json!({ "room": room, "member": other.key().to_hex() }),
            )
            .await;
        assert_eq!(added, json!({}));
    }

    /// A rekey to `epoch` on the owner's device.
    async fn rekey(&self, room: &str, epoch: u64) {
        let members = self.call("members", json!({ "room": room })).await;
        let recipients = common::recipients(&members);
        let manifest = SignedManifest::rekey(
            &self.id,
            &RoomId::new(room).unwrap(),
            epoch,
            epoch - 1,
            &RoomKey::generate().unwrap(),
            &recipients,
        )
        .unwrap();
        let reply = self
            .call(
                "rekey",
                json!({ "manifest": hex::encode(manifest.to_bytes()) }),
            )
            .await;
        assert_eq!(reply, json!({ "epoch": epoch }));
    }

    /// This member's key of the room's latest epoch, fetched, verified and opened.
    async fn epoch_key(&self, room: &str, owner: &SignPublicKey) -> EpochKey {
        let part = self
            .call_bytes("key", json!({ "room": room }).to_string().into_bytes())
            .await;
        let part = MemberPart::from_bytes(&part).expect("a member part");
        let epoch = part.unverified_header().epoch;
        EpochKey::open(&part, &self.id, &RoomId::new(room).unwrap(), epoch, owner).unwrap()
    }

    /// A key of `room` at `epoch` from a manifest this member made and signed itself, listing
    /// only itself: its envelopes decode and are signed, but no stored epoch proves them.
    fn self_made_key(&self, room: &str, epoch: u64) -> EpochKey {
        let room = RoomId::new(room).unwrap();
        let me = [Recipient {
            member: self.key(),
            kex: self.id.kex_public_key(),
        }];
        let key = RoomKey::generate().unwrap();
        let manifest = SignedManifest::rekey(&self.id, &room, epoch, epoch - 1, &key, &me).unwrap();
        let part = manifest.member_part(&self.key()).unwrap();
        EpochKey::open(&part, &self.id, &room, epoch, &self.key()).unwrap()
    }

    fn seal(&self, key: &EpochKey, body: &str) -> Vec<u8> {
        Envelope::seal(
            &self.id,
            key,
            &ContentType::new("text/plain").unwrap(),
            body.as_bytes(),
            1_700_000_000_000,
        )
        .unwrap()
        .to_bytes()
    }

    /// The next live copy, if one comes within `wait`.
    async fn next_live(&mut self, wait: Duration) -> Option<LiveMessage> {
        let message = tokio::time::timeout(wait, self.live.next()).await.ok()??;
        Some(LiveMessage::from_bytes(&message.payload).unwrap())
    }
}

/// A room owned by a fresh member, with `others` fresh members, keyed at epoch 1. They all
/// logged in before the room existed, so their logins hold no grant of it: each leases its live
/// copies from membershipd.
async fn room_with(bus: &Bus, room: &str, others: usize) -> (Member, Vec<Member>) {
    let owner = member(bus).await;
    owner.create(room).await;
    let mut members = Vec::new();
    for _ in 0..others {
        let other = member(bus).await;
        owner.add(room, &other).await;
        members.push(other);
    }
    owner.rekey(room, 1).await;
    for m in std::iter::once(&owner).chain(&members) {
        let leased = m.listen(&[room]).await;
        assert_eq!(leased["rooms"], json!([room]), "{leased}");
    }
    (owner, members)
}

/// Envelopes with their positions, as pages hold them.
type Records = Vec<(u64, Vec<u8>)>;

fn records(page: &MessagePage) -> Records {
    page.messages
        .iter()
        .map(|m| (m.position, m.envelope.clone()))
        .collect()
}

/// `request` with `limit` when given.
fn limited(mut request: Value, limit: Option<u32>) -> Value {
    if let Some(limit) = limit {
        request["limit"] = json!(limit);
    }
    request
}

/// Every envelope of `room` a member reads, paging forward from the start; each page goes
/// through `check`.
async fn read_forward(
    reader: &Member,
    room: &str,
    limit: Option<u32>,
    check: impl Fn(&MessagePage),
) -> Records {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let request = limited(json!({ "room": room, "after": after }), limit);
        let page = reader.page(request).await.unwrap();
        check(&page);
        assert!(page.messages.len() <= limit.unwrap_or(100) as usize);
        out.extend(records(&page));
        match page.messages.last() {
            Some(last) if page.more => after = last.position,
            _ => return out,
        }
    }
}

/// Every envelope of `room` a member reads, from the latest page backward; each page goes
/// through `check`, and each ends right before the one after it.
async fn read_backward(
    reader: &Member,
    room: &str,
    limit: Option<u32>,
    check: impl Fn(&MessagePage),
) -> Records {
    let mut out: Records = Vec::new();
    let mut request = limited(json!({ "room": room }), limit);
    loop {
        let page = reader.page(request).await.unwrap();
        check(&page);
        assert!(page.messages.len() <= limit.unwrap_or(100) as usize);
        let mut earlier = records(&page);
        earlier.append(&mut out);
        out = earlier;
        match out.first() {
            Some((first, _)) if page.more => {
                request = limited(json!({ "room": room, "before": first }), limit)
            }
            _ => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sent_envelope_is_stored_once_read_back_and_copied_live_to_every_member() {
    stored_once_read_back_and_copied(bus(1).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_the_kv_store_a_sent_envelope_is_stored_once_read_back_and_copied_live() {
    stored_once_read_back_and_copied(bus_on(1, StoreKind::Kv).await).await;
}

async fn stored_once_read_back_and_copied(bus: Bus) {
    let (mut owner, mut others) = room_with(&bus, "general", 1).await;
    let mut other = others.pop().unwrap();
    let key = owner.epoch_key("general", &owner.key()).await;
    let envelope = owner.seal(&key, "hello");

    let sent = owner.send(&envelope).await.unwrap();
    assert!(!sent.duplicate);
    // The same bytes again (a retry): stored once, at the same position.
    let again = owner.send(&envelope).await.unwrap();
    assert_eq!(
        again,
        SendReply {
            position: sent.position,
            duplicate: true
        }
    );
    let page = other.page(json!({ "room": "general" })).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert!(!page.more);
    assert_eq!(page.messages[0].position, sent.position);
    assert_eq!(page.messages[0].envelope, envelope);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(page.messages[0].time <= now && page.messages[0].time + 60_000 > now);
    // The reader opens it with its own key.
    let their_key = other.epoch_key("general", &owner.key()).await;
    let opened = Envelope::from_bytes(&page.messages[0].envelope)
        .unwrap()
        .open(&their_key)
        .unwrap();
    assert_eq!(opened.body(), b"hello");
    assert_eq!(opened.sender(), &owner.key());

    // Live copies: one each, the sender included, the duplicate not copied again.
    for m in [&mut owner, &mut other] {
        let live = m.next_live(REPLY_TIMEOUT).await.expect("a live copy");
        assert_eq!(
            (live.position, live.previous, live.envelope.as_slice()),
            (sent.position, 0, envelope.as_slice())
        );
        assert_eq!(live.time, page.messages[0].time);
    }
    // The chain: each copy names the room's previous position.
    let second = other.seal(&their_key, "second");
    let second_at = other.send(&second).await.unwrap().position;
    let live = owner.next_live(REPLY_TIMEOUT).await.unwrap();
    assert_eq!((live.position, live.previous), (second_at, sent.position));
    assert!(owner.next_live(Duration::from_millis(300)).await.is_none());
    assert!(owner.errors.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn send_refuses_bad_envelopes_stale_epochs_and_rooms_without_a_key() {
    let bus = bus(1).await;
    let (owner, mut others) = room_with(&bus, "general", 1).await;
    let other = others.pop().unwrap();
    let key = owner.epoch_key("general", &owner.key()).await;
    let envelope = owner.seal(&key, "hello");

    assert_eq!(owner.send(b"garbage").await.unwrap_err(), "bad_envelope");
    assert_eq!(owner.send(&[]).await.unwrap_err(), "bad_envelope");
    assert_eq!(
        owner
            .send(&envelope[..envelope.len() - 1])
            .await
            .unwrap_err(),
        "bad_envelope"
    );
    // Another member sends the owner's envelope: not theirs.
    assert_eq!(other.send(&envelope).await.unwrap_err(), "bad_envelope");
    // A flipped byte of the signature, and of the ciphertext (under the signature).
    for at in [envelope.len() - 1, envelope.len() - 70] {
        let mut tampered = envelope.clone();
        tampered[at] ^= 0x01;
        assert_eq!(owner.send(&tampered).await.unwrap_err(), "bad_envelope");
    }
    // A proof made up by the sender: a manifest the room does not store.
    let forged_key = other.self_made_key("general", 1);
    assert_eq!(
        other.send(&other.seal(&forged_key, "x")).await.unwrap_err(),
        "bad_envelope"
    );
    // Nothing of these was stored.
    assert!(owner
        .page(json!({ "room": "general" }))
        .await
        .unwrap()
        .messages
        .is_empty());

    // After a rekey, an envelope of the old epoch is stale; one of the new epoch is stored.
    owner.rekey("general", 2).await;
    assert_eq!(owner.send(&envelope).await.unwrap_err(), "stale_epoch");
    let fresh = owner.epoch_key("general", &owner.key()).await;
    assert_eq!(fresh.epoch(), 2);
    owner.send(&owner.seal(&fresh, "hello")).await.unwrap();
    // A member added since that rekey is in no manifest of the room: an envelope with a proof
    // of its own making is refused, also once the relay knows the epoch's header.
    let newcomer = member(&bus).await;
    owner.add("general", &newcomer).await;
    let newcomer_key = newcomer.self_made_key("general", 2);
    assert_eq!(
        newcomer
            .send(&newcomer.seal(&newcomer_key, "x"))
            .await
            .unwrap_err(),
        "bad_envelope"
    );

    // A room with no key yet: a member's (self-made) envelope for it is `no_key`.
    owner.create("unkeyed").await;
    let own_key = owner.self_made_key("unkeyed", 1);
    assert_eq!(
        owner.send(&owner.seal(&own_key, "x")).await.unwrap_err(),
        "no_key"
    );
    // A user outside the room: its own envelope for the room is `not_member`.
    let outsider = member(&bus).await;
    let outsider_key = outsider.self_made_key("general", 2);
    assert_eq!(
        outsider
            .send(&outsider.seal(&outsider_key, "x"))
            .await
            .unwrap_err(),
        "not_member"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_revoked_and_deleted_members_can_neither_send_nor_read_nor_receive() {
    let bus = bus(1).await;
    let (mut owner, others) = room_with(&bus, "general", 3).await;
    let mut others = others.into_iter();
    let (mut removed, mut revoked, mut deleted) = (
        others.next().unwrap(),
        others.next().unwrap(),
        others.next().unwrap(),
    );
    let owner_key = owner.key();
    let keys = [
        removed.epoch_key("general", &owner_key).await,
        revoked.epoch_key("general", &owner_key).await,
        deleted.epoch_key("general", &owner_key).await,
    ];
    let envelopes = [
        removed.seal(&keys[0], "r"),
        revoked.seal(&keys[1], "v"),
        deleted.seal(&keys[2], "d"),
    ];
    let outsider = member(&bus).await;
    assert_eq!(
        outsider
            .page(json!({ "room": "general" }))
            .await
            .unwrap_err(),
        "not_member"
    );
    assert_eq!(
        outsider
            .page(json!({ "room": "nowhere" }))
            .await
            .unwrap_err(),
        "not_member"
    );

    let removal = owner
        .call(
            "remove_member",
            json!({ "room": "general", "member": removed.key().to_hex() }),
        )
        .await;
    assert_eq!(removal, json!({}));
    bus.store.revoke_user(&revoked.key()).await.unwrap();
    bus.store.delete_user(&deleted.key()).await.unwrap();

    assert_eq!(removed.send(&envelopes[0]).await.unwrap_err(), "not_member");
    assert_eq!(
        removed
            .page(json!({ "room": "general" }))
            .await
            .unwrap_err(),
        "not_member"
    );
    for (user, envelope) in [(&revoked, &envelopes[1]), (&deleted, &envelopes[2])] {
        assert_eq!(user.send(envelope).await.unwrap_err(), "not_authorized");
        assert_eq!(
            user.page(json!({ "room": "general" })).await.unwrap_err(),
            "not_authorized"
        );
    }
    // The owner's message reaches the owner, and none of them.
    let key = owner.epoch_key("general", &owner_key).await;
    let sent = owner.send(&owner.seal(&key, "after")).await.unwrap();
    assert_eq!(
        owner.next_live(REPLY_TIMEOUT).await.unwrap().position,
        sent.position
    );
    for user in [&mut removed, &mut revoked, &mut deleted] {
        assert!(user.next_live(Duration::from_millis(500)).await.is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_go_forward_backward_and_from_the_latest_across_interleaved_rooms() {
    let bus = bus(1).await;
    let (owner, _) = room_with(&bus, "alpha", 0).await;
    owner.create("beta").await;
    owner.rekey("beta", 1).await;
    let (alpha, beta) = (
        owner.epoch_key("alpha", &owner.key()).await,
        owner.epoch_key("beta", &owner.key()).await,
    );
    let mut sent: BTreeMap<&str, Records> = BTreeMap::new();
    for i in 0..25 {
        for (room, key, repeat) in [("alpha", &alpha, 1), ("beta", &beta, 2)] {
            for _ in 0..repeat {
                let envelope = owner.seal(key, &format!("{room} {i}"));
                let at = owner.send(&envelope).await.unwrap().position;
                sent.entry(room).or_default().push((at, envelope));
            }
        }
    }
    let alpha_sent = &sent["alpha"];
    // Forward from the start, in pages of 7 (and all at once).
    let any = |_: &MessagePage| {};
    assert_eq!(
        &read_forward(&owner, "alpha", Some(7), any).await,
        alpha_sent
    );
    assert_eq!(
        &read_forward(&owner, "beta", Some(1000), any).await,
        &sent["beta"]
    );
    // The latest page, then backward until `more` is false.
    let latest = owner
        .page(json!({ "room": "alpha", "limit": 10 }))
        .await
        .unwrap();
    assert!(latest.more);
    assert_eq!(records(&latest), alpha_sent[15..].to_vec());
    let not_empty = |page: &MessagePage| assert!(!page.messages.is_empty());
    assert_eq!(
        &read_backward(&owner, "alpha", Some(10), not_empty).await,
        alpha_sent
    );
    // A page from the middle: `before` a position that is not the room's.
    let middle = sent["beta"][20].0;
    let page = owner
        .page(json!({ "room": "alpha", "before": middle, "limit": 3 }))
        .await
        .unwrap();
    let expected: Vec<u64> = alpha_sent
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at < middle)
        .collect();
    let got: Vec<u64> = page.messages.iter().map(|m| m.position).collect();
    assert_eq!(got, expected[expected.len() - 3..]);
    assert!(page.more);
    // After the last and before the first: empty, nothing more.
    let last = alpha_sent.last().unwrap().0;
    for request in [
        json!({ "room": "alpha", "after": last }),
        json!({ "room": "alpha", "before": alpha_sent[0].0 }),
        json!({ "room": "alpha", "before": 0 }),
    ] {
        assert_eq!(owner.page(request).await.unwrap(), MessagePage::default());
    }
    // A room with no messages.
    owner.create("empty").await;
    assert_eq!(
        owner.page(json!({ "room": "empty" })).await.unwrap(),
        MessagePage::default()
    );
    // Bad requests.
    for request in [
        json!({ "room": "alpha", "limit": 0 }),
        json!({ "room": "alpha", "limit": 1001 }),
        json!({ "room": "alpha", "after": 1, "before": 5 }),
        json!({ "room": "alpha", "after": 9_223_372_036_854_775_808u64 }),
        json!({ "room": "alpha", "before": -1 }),
        json!({}),
    ] {
        assert_eq!(
            owner.page(request.clone()).await.unwrap_err(),
            "bad_request",
            "{request}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn users_cannot_reach_the_stream_or_the_live_copies_themselves() {
    let bus = bus(1).await;
    let (owner, _) = room_with(&bus, "general", 0).await;
    let key = owner.epoch_key("general", &owner.key()).await;
    let envelope = owner.seal(&key, "hello");
    let mut intruder = member(&bus).await;
    let mut live = intruder.client.subscribe("unibus.live.>").await.unwrap();
    let mut one_room = intruder
        .client
        .subscribe("unibus.live.general")
        .await
        .unwrap();
    // Nor can it lease the copies of a room it is not in.
    let leased = intruder.listen(&["general"]).await;
    assert_eq!((&leased["rooms"], &leased["new"]), (&json!([]), &json!([])));
    intruder
        .client
        .publish("unibus.msg.general", envelope.clone().into())
        .await
        .unwrap();
    let info = tokio::time::timeout(
        Duration::from_secs(2),
        intruder
            .client
            .request(format!("$JS.API.STREAM.INFO.{STREAM}"), "".into()),
    )
    .await;
    assert!(
        !matches!(info, Ok(Ok(_))),
        "a user reached the JetStream API"
    );
    let get = tokio::time::timeout(
        Duration::from_secs(2),
        intruder.client.request(
            format!("$JS.API.DIRECT.GET.{STREAM}"),
            r#"{"last_by_subj":"unibus.msg.general"}"#.into(),
        ),
    )
    .await;
    assert!(!matches!(get, Ok(Ok(_))), "a user read the stream");
    intruder.client.flush().await.unwrap();
    // The owner's own send is copied to the owner, never to the intruder's subscription.
    owner.send(&envelope).await.unwrap();
    for subscription in [&mut live, &mut one_room] {
        assert!(
            tokio::time::timeout(Duration::from_millis(500), subscription.next())
                .await
                .is_err()
        );
    }
    assert!(intruder
        .next_live(Duration::from_millis(100))
        .await
        .is_none());
    let errors = intruder.errors.lock().unwrap().clone();
    for subject in ["unibus.live.>", "unibus.live.general", "unibus.msg.general"] {
        assert!(
            errors.iter().any(|e| e.contains(subject)),
            "{subject}: {errors:?}"
        );
    }
    // The stream holds the owner's one envelope only.
    let js = async_nats::jetstream::new(bus.control.clone());
    let mut stream = js.get_stream(STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_three_node_cluster_no_acknowledged_envelope_is_lost_when_a_node_dies() {
    // The store on the same cluster (KV R3), as a clustered deployment runs it.
    let mut bus = bus_on(3, StoreKind::Kv).await;
    let js = async_nats::jetstream::new(bus.control.clone());
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .and_then(|name| bus.cluster.node_index(&name))
        .expect("the stream has a leader");
    // The sender stays on a node that survives.
    let survivor = (leader + 1) % 3;
    let addr: Vec<async_nats::ServerAddr> = vec![bus.cluster.client_url(survivor).parse().unwrap()];
    let owner = member_at(&bus, addr.clone()).await;
    owner.create("burst").await;
    owner.rekey("burst", 1).await;
    let key = owner.epoch_key("burst", &owner.key()).await;
    let mut acknowledged = Vec::new();
    let mut pending: Vec<Vec<u8>> = (0..60).map(|i| owner.seal(&key, &i.to_string())).collect();
    pending.reverse();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    while let Some(envelope) = pending.pop() {
        if sent == 20 {
            bus.cluster.kill(leader);
        }
        // A send that fails is retried with the same bytes, as a client does.
        match owner.try_send(&envelope).await {
            Ok(reply) => {
                acknowledged.push((reply.position, envelope));
                sent += 1;
            }
            Err(code) => {
                assert!(code == "unavailable" || code == "no answer", "{code}");
                assert!(Instant::now() < deadline, "sends never recovered");
                pending.push(envelope);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    acknowledged.sort();
    acknowledged.dedup_by_key(|(at, _)| *at);
    assert_eq!(
        acknowledged.len(),
        60,
        "a retried envelope was stored twice"
    );
    // Every acknowledged envelope is readable, in order, with nothing else in between
    // (replicas answer reads and may lag a moment: read until they caught up).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = read_forward(&owner, "burst", Some(1000), |_| {}).await;
        if read == acknowledged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged envelopes are missing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_instance_sets_up_the_stream_at_once_and_a_restart_applies_new_settings() {
    let bus = bus(1).await;
    let js = async_nats::jetstream::new(bus.control.clone());
    let settings = StreamSettings::default();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let js = js.clone();
            tokio::spawn(async move { ensure_stream(&js, settings, 1).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let changed = StreamSettings {
        duplicate_window: Duration::from_secs(30),
        max_age: Duration::from_secs(86_400),
    };
    ensure_stream(&js, changed, 1).await.unwrap();
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(
        (config.duplicate_window, config.max_age),
        (changed.duplicate_window, changed.max_age)
    );
    assert_eq!(config.subjects, ["unibus.msg.*"]);
    assert!(config.allow_direct);
    assert!(config.max_message_size as usize >= unibus::envelope::MAX_ENVELOPE_LEN);
    let republish = config.republish.expect("a republish");
    assert_eq!(
        (republish.source.as_str(), republish.destination.as_str()),
        ("unibus.msg.>", "unibus.live.>")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_created_anew_starts_above_every_position_of_the_one_before() {
    // A plain JetStream server: the stream's setup is what is under test here, and deleting
    // the stream needs a user that membershipd's own permissions do not give.
    let cluster = NatsCluster::start(1).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(cluster.client_url(0)).await.unwrap());
    let subject = store_subject(&RoomId::new("general").unwrap());
    let store = |body: &'static str| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            js.publish(subject, body.into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };

    let created_after = now_millis();
    ensure_stream(&js, StreamSettings::default(), 1)
        .await
        .unwrap();
    let first = store("one").await;
    assert!(first >= first_position(created_after), "{first}");
    // A start with other settings updates the stream and keeps its positions.
    let changed = StreamSettings {
        duplicate_window: Duration::from_secs(30),
        max_age: Duration::ZERO,
    };
    ensure_stream(&js, changed, 1).await.unwrap();
    assert_eq!(store("two").await, first + 1);

    // An operator deletes the stream; the next start of membershipd creates it again. Its
    // positions go on above the old ones, so a client's cursor (`last`, at most `first + 1`)
    // is below the next envelope, whose `previous` (0) is not `last`: the client reads the
    // room after `last` and finds it (protocol §15.4).
    js.delete_stream(STREAM).await.unwrap();
    ensure_stream(&js, StreamSettings::default(), 1)
        .await
        .unwrap();
    assert!(store("three").await > first + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_never_outgrows_the_clusters_message_limit_and_still_ends_where_asked() {
    // Records of about 1.3 KB in messages of at most 8 KiB: about five to a page.
    let bus = bus_with(1, StoreKind::Sqlite, "max_payload: 8192").await;
    let (owner, _) = room_with(&bus, "big", 0).await;
    let key = owner.epoch_key("big", &owner.key()).await;
    let mut sent = Vec::new();
    for i in 0..23 {
        let envelope = owner.seal(&key, &format!("{i:>1000}"));
        sent.push((owner.send(&envelope).await.unwrap().position, envelope));
    }
    let max_payload = bus.control.server_info().max_payload;
    let pages = |page: &MessagePage| {
        use unibus::protocol::control::ReplyBody;
        assert!(
            page.to_body().len() < max_payload,
            "a page outgrew the limit"
        );
        assert!(page.messages.len() < 10, "{} records", page.messages.len());
        assert!(!page.messages.is_empty());
    };
    // Forward: every envelope once, in order, in pages that fit.
    assert_eq!(read_forward(&owner, "big", None, pages).await, sent);
    // Backward from the latest: each page ends right before the one after it.
    assert_eq!(read_backward(&owner, "big", None, pages).await, sent);
}

/// A login of `id` at one node that records when it is disconnected, and the server errors
/// it is sent (a refused publish is one).
async fn watched_login(
    addr: &str,
    id: &Identity,
) -> (
    async_nats::Client,
    Errors,
    tokio::sync::mpsc::UnboundedReceiver<Instant>,
) {
    let errors: Errors = Arc::default();
    let (seen, (cut, cuts)) = (Arc::clone(&errors), tokio::sync::mpsc::unbounded_channel());
    let client = async_nats::ConnectOptions::with_nkey(id.nkey_seed().to_string())
        .custom_inbox_prefix(unibus_server::auth::callout::inbox_prefix(
            &id.sign_public_key(),
        ))
        .event_callback(move |event| {
            let (seen, cut) = (Arc::clone(&seen), cut.clone());
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        let _ = cut.send(Instant::now());
                    }
                    async_nats::Event::ServerError(e) => seen.lock().unwrap().push(e.to_string()),
                    _ => {}
                }
            }
        })
        .connect(addr)
        .await
        .unwrap();
    (client, errors, cuts)
}

/// The subjects `client`'s login may publish to, as nats-server tells it.
async fn granted(client: &async_nats::Client) -> Vec<String> {
    let info = tokio::time::timeout(
        REPLY_TIMEOUT,
        client.request("$SYS.REQ.USER.INFO", "".into()),
    )
    .await
    .unwrap()
    .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    info["data"]["permissions"]["publish"]["allow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_sends_straight_to_its_rooms_stream_and_loses_that_within_a_second_of_its_removal_on_every_node(
) {
    let bus = bus_revoking(3).await;
    let (owner, others) = room_with(&bus, "general", 1).await;
    let bob = &others[0].id;
    let key = others[0].epoch_key("general", &owner.key()).await;
    let js_info = |stream: &str| {
        let js = async_nats::jetstream::new(bus.control.clone());
        let stream = stream.to_string();
        async move {
            js.get_stream(stream)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages
        }
    };
    // Bob logs in at each node now that he is a member: each login may publish to the room.
    let mut logins = Vec::new();
    for node in 0..3 {
        let login = watched_login(&bus.cluster.client_url(node), bob).await;
        let grants = granted(&login.0).await;
        assert!(
            grants.contains(&store_subject(&RoomId::new("general").unwrap())),
            "{grants:?}"
        );
        assert!(!grants
            .iter()
            .any(|g| g.starts_with("unibus.msg.") && g != "unibus.msg.general"));
        let envelope = others[0].seal(&key, &format!("straight from node {node}"));
        let ack = async_nats::jetstream::new(login.0.clone())
            .publish(
                store_subject(&RoomId::new("general").unwrap()),
                envelope.into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.stream, STREAM);
        logins.push(login);
    }
    assert_eq!(js_info(STREAM).await, 3, "each direct send is stored");
    // The owner reads them as any envelope (a replica may be a moment behind: read until it
    // is not, within a bound).
    let deadline = Instant::now() + Duration::from_secs(10);
    while owner
        .page(json!({ "room": "general" }))
        .await
        .unwrap()
        .messages
        .len()
        < 3
    {
        assert!(Instant::now() < deadline, "the owner never read the three");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let removal = owner
        .call(
            "remove_member",
            json!({ "room": "general", "member": bob.sign_public_key().to_hex() }),
        )
        .await;
    assert_eq!(removal, json!({}));
    let removed = Instant::now();
    for (node, (client, errors, cuts)) in logins.iter_mut().enumerate() {
        // The session that held the grant is cut (the bound keeps a broken revoker from
        // hanging the test; the figure is asserted below).
        let cut = tokio::time::timeout(Duration::from_secs(10), cuts.recv())
            .await
            .expect("the removed member's session is cut")
            .unwrap();
        assert!(
            cut.duration_since(removed) < Duration::from_secs(1),
            "node {node}: cut {:?} after the removal",
            cut.duration_since(removed)
        );
        // It logs in again, without the room.
        let deadline = Instant::now() + Duration::from_secs(10);
        let grants = loop {
            if let Ok(Ok(info)) = tokio::time::timeout(
                Duration::from_millis(500),
                client.request("$SYS.REQ.USER.INFO", "".into()),
            )
            .await
            {
                let info: Value = serde_json::from_slice(&info.payload).unwrap();
                break info["data"]["permissions"]["publish"]["allow"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "node {node}: never logged in again"
            );
        };
        assert!(!grants.to_string().contains("unibus.msg."), "{grants}");
        client
            .publish("unibus.msg.general", others[0].seal(&key, "after").into())
            .await
            .unwrap();
        client.flush().await.unwrap();
        let refused = Instant::now() + Duration::from_secs(5);
        while !errors
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("unibus.msg.general"))
        {
            assert!(
                Instant::now() < refused,
                "node {node}: {:?}",
                errors.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(
        js_info(STREAM).await,
        3,
        "nothing after the removal is stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sdk_session_that_logged_in_as_a_member_sends_straight_to_the_stream_while_its_epoch_is_confirmed(
) {
    use unibus::client::{Session, SessionError, SessionOptions};
    let bus = bus(1).await;
    let (owner, others) = room_with(&bus, "general", 1).await;
    let room = RoomId::new("general").unwrap();
    let bob = Arc::new(Identity::from_secret_bytes(&others[0].id.to_secret_bytes()).unwrap());
    let options = SessionOptions {
        // The key is confirmed once: the control plane is gone for the second send.
        send_key_fresh: Duration::from_secs(3600),
        ..SessionOptions::default()
    };
    let urls = [bus.cluster.client_url(0)];
    let session = Session::connect(Arc::clone(&bob), &urls, options.clone())
        .await
        .unwrap();
    let text = ContentType::new("text/plain").unwrap();
    let first = session.send(&room, b"one", &text).await.unwrap();
    // A session that never counts an epoch as confirmed sends everything through membershipd.
    let unconfirmed = Session::connect(
        Arc::clone(&bob),
        &urls,
        SessionOptions {
            send_key_fresh: Duration::ZERO,
            request_timeout: Duration::from_secs(1),
            ..options.clone()
        },
    )
    .await
    .unwrap();
    unconfirmed.send(&room, b"relayed", &text).await.unwrap();
    let js = async_nats::jetstream::new(bus.control.clone());
    let stream = js.get_stream(STREAM).await.unwrap();

    bus.plane.abort();
    // The control plane is gone: a request to it gets no answer.
    let outsider = Session::connect(
        Arc::new(Identity::from_secret_bytes(&owner.id.to_secret_bytes()).unwrap()),
        &urls,
        SessionOptions {
            request_timeout: Duration::from_secs(1),
            ..options
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        outsider.is_member(&room).await,
        Err(SessionError::NoResponders | SessionError::Timeout(_))
    ));

    assert!(matches!(
        unconfirmed
            .send(&room, b"not without membershipd", &text)
            .await,
        Err(SessionError::NoResponders | SessionError::Timeout(_))
    ));
    let second = session.send(&room, b"two", &text).await.unwrap();
    assert!(second.position > first.position);
    assert!(!second.duplicate);
    let stored = stream.direct_get(second.position).await.unwrap();
    assert_eq!(stored.subject.as_str(), store_subject(&room));
    let envelope = Envelope::from_bytes(&stored.payload).unwrap();
    assert_eq!(envelope.id(), &second.id);
    assert_eq!(envelope.sender(), &bob.sign_public_key());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removal_the_change_feed_missed_is_cut_by_the_next_sweep_from_the_callouts_grants() {
    use futures::StreamExt as _;
    use unibus_server::store::{CachedStore, Change, FeedItem};
    // The services' cache follows a feed that loses every membership change, and says it
    // missed changes only when the test sends a reset. (A change written through the cache
    // itself is applied at once: this removal is written beside it, as by another instance.)
    let (reset, resets) = tokio::sync::mpsc::unbounded_channel::<FeedItem>();
    let beside = Arc::new(std::sync::OnceLock::<Arc<dyn Store>>::new());
    let bus = bus_over(1, StoreKind::Sqlite, "", true, {
        let beside = Arc::clone(&beside);
        move |store| {
            let _ = beside.set(Arc::clone(&store));
            let inner = Arc::clone(&store);
            let lossy = futures::stream::once(async move { inner.changes().await.unwrap() })
                .flatten()
                .filter(|item| {
                    std::future::ready(!matches!(
                        item,
                        Ok(FeedItem::Changed(Change::Member { .. }))
                    ))
                });
            let resets = futures::stream::unfold(resets, |mut resets| async move {
                let item = resets.recv().await?;
                Some((Ok(item), resets))
            });
            let feed = futures::stream::select(lossy, resets);
            let cache: Arc<dyn Store> = CachedStore::with_feed(store, Box::pin(feed));
            cache
        }
    })
    .await;
    let (_owner, others) = room_with(&bus, "general", 1).await;
    let bob = &others[0].id;
    let (client, _errors, mut cuts) = watched_login(&bus.cluster.client_url(0), bob).await;
    assert!(granted(&client)
        .await
        .contains(&"unibus.msg.general".to_string()));
    let room = RoomId::new("general").unwrap();
    beside
        .get()
        .unwrap()
        .remove_member(&room, &bob.sign_public_key())
        .await
        .unwrap();

    reset.send(FeedItem::Changed(Change::Reset)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), cuts.recv())
        .await
        .expect("the sweep cuts the session granted a room its user left")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Ok(info)) = tokio::time::timeout(
            Duration::from_millis(500),
            client.request("$SYS.REQ.USER.INFO", "".into()),
        )
        .await
        {
            let info: Value = serde_json::from_slice(&info.payload).unwrap();
            assert!(!info["data"]["permissions"]
                .to_string()
                .contains("unibus.msg."));
            break;
        }
        assert!(Instant::now() < deadline, "never logged in again");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_granted_a_room_takes_its_copies_from_the_stream_and_a_lease_is_renewed_on_its_instance(
) {
    let bus = bus(1).await;
    let (owner, others) = room_with(&bus, "general", 1).await;
    let room = RoomId::new("general").unwrap();
    // Bob logs in again, now a member: his login may subscribe to the room's live subject.
    let bob = &others[0].id;
    let (client, errors, _) = watched_login(&bus.cluster.client_url(0), bob).await;
    let mut copies = client.subscribe(live_subject(&room)).await.unwrap();
    client.flush().await.unwrap();
    let key = owner.epoch_key("general", &owner.key()).await;
    let first = owner.send(&owner.seal(&key, "one")).await.unwrap().position;
    let second_envelope = owner.seal(&key, "two");
    let second = owner.send(&second_envelope).await.unwrap().position;
    let mut got = Vec::new();
    for _ in 0..2 {
        let copy = tokio::time::timeout(REPLY_TIMEOUT, copies.next())
            .await
            .unwrap()
            .unwrap();
        let header = |name: &str| {
            copy.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        got.push((
            header("Nats-Sequence"),
            header("Nats-Last-Sequence"),
            copy.payload.to_vec(),
        ));
    }
    assert_eq!(got[0].0, Some(first.to_string()));
    assert_eq!(got[0].1, Some("0".to_string()));
    assert_eq!(
        got[1],
        (
            Some(second.to_string()),
            Some(first.to_string()),
            second_envelope
        )
    );
    assert!(errors.lock().unwrap().is_empty(), "{:?}", errors.lock());

    // Leases: renewed within their time, they are not new; renewed on the instance named.
    let renewed = owner.listen(&["general", "general"]).await;
    assert_eq!(renewed["rooms"], json!(["general"]));
    assert_eq!(renewed["new"], json!([]));
    let instance = renewed["instance"].as_str().unwrap().to_string();
    let subject = format!("unibus.cp.{}.listen.{instance}", owner.key().to_hex());
    let body = json!({ "rooms": ["general"], "instance": instance }).to_string();
    let reply = owner.client.request(subject, body.into()).await.unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        (&reply["rooms"], &reply["new"]),
        (&json!(["general"]), &json!([]))
    );
    // Another instance's subject has nobody behind it; a body naming another instance than
    // the one that took it, no room or too many are refused.
    let gone = format!(
        "unibus.cp.{}.listen.{}",
        owner.key().to_hex(),
        "0".repeat(16)
    );
    let body = json!({ "rooms": ["general"], "instance": "0".repeat(16) }).to_string();
    assert!(owner
        .client
        .request(gone, body.clone().into())
        .await
        .is_err());
    let too_many: Vec<String> = (0..1001).map(|i| format!("r{i}")).collect();
    for body in [
        body,
        json!({ "rooms": [] }).to_string(),
        json!({ "rooms": too_many }).to_string(),
    ] {
        let reply = owner.call_bytes("listen", body.into_bytes()).await;
        let refusal = read_reply::<unibus::protocol::messages::ListenReply>(&reply)
            .unwrap()
            .unwrap_err();
        assert_eq!(refusal.code.as_str(), "bad_request");
    }
    let mut leased = bus.listeners.of(&room);
    leased.sort();
    let mut expected = vec![owner.key(), bob.sign_public_key()];
    expected.sort();
    assert_eq!(leased, expected, "the two logins of room_with leased it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_watch_takes_copies_from_the_stream_where_its_login_was_granted_and_leases_the_rest(
) {
    use unibus::client::{Session, SessionOptions};
    let bus = bus(1).await;
    // Not `room_with`: nobody leases anything here but the watch.
    let (owner, bob_before) = (member(&bus).await, member(&bus).await);
    owner.create("granted").await;
    owner.add("granted", &bob_before).await;
    owner.rekey("granted", 1).await;
    let others = [bob_before];
    let bob = Arc::new(Identity::from_secret_bytes(&others[0].id.to_secret_bytes()).unwrap());
    let urls = [bus.cluster.client_url(0)];
    let session = Session::connect(Arc::clone(&bob), &urls, SessionOptions::default())
        .await
        .unwrap();
    // Rooms bob joins after his login: one before the watch starts, one while it runs.
    owner.create("joined").await;
    owner.add("joined", &others[0]).await;
    owner.rekey("joined", 1).await;
    let mut watch = session.watch_with_messages().await.unwrap();
    let (granted, joined, later) = (
        RoomId::new("granted").unwrap(),
        RoomId::new("joined").unwrap(),
        RoomId::new("later").unwrap(),
    );
    // The room his login was granted is never leased; the other is, by his watch.
    let leased_by = |room: &RoomId| bus.listeners.of(room);
    until_leased(&bus.listeners, &joined, &bob.sign_public_key()).await;
    owner.create("later").await;
    owner.add("later", &others[0]).await;
    owner.rekey("later", 1).await;
    let mut expected = Vec::new();
    for room in ["granted", "joined", "later"] {
        let key = owner.epoch_key(room, &owner.key()).await;
        owner.send(&owner.seal(&key, room)).await.unwrap();
        expected.push(room.to_string());
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let (room, message) = next_message(&mut watch).await;
        let body = message.outcome.unwrap().body().to_vec();
        assert_eq!(body, room.as_str().as_bytes());
        got.push(room.to_string());
    }
    got.sort();
    assert_eq!(got, expected);
    assert!(!leased_by(&granted).contains(&bob.sign_public_key()));
    for room in [&joined, &later] {
        assert!(leased_by(room).contains(&bob.sign_public_key()), "{room}");
    }
}

/// The next message `watch` delivers, skipping its other updates; within the reply timeout.
async fn next_message(watch: &mut unibus::client::Watch) -> (RoomId, unibus::client::Received) {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let update = tokio::time::timeout_at(deadline.into(), watch.next())
            .await
            .expect("a message arrives")
            .unwrap()
            .unwrap();
        if let unibus::client::RoomUpdate::Message { room, message } = update {
            return (room, message);
        }
    }
}

/// Returns once `who` holds a lease of `room` in `listeners`; fails after the reply timeout.
async fn until_leased(listeners: &Listeners, room: &RoomId, who: &SignPublicKey) {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !listeners.of(room).contains(who) {
        assert!(Instant::now() < deadline, "{room} was not leased in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Another membershipd instance's control plane on `bus` (with the fan-out of its leases), on
/// the bus's control connection. Returns its leases, and the handle that stops it.
async fn instance(bus: &Bus) -> (Arc<Listeners>, tokio::task::AbortHandle) {
    let plane = ControlPlane::new(Arc::clone(&bus.store), bus.control.clone());
    let listeners = plane.listeners();
    let running = Arc::new(plane).start().await.unwrap();
    (listeners, running.abort_handle())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_whose_lease_instance_stopped_leases_again_elsewhere_and_reads_what_reached_nobody()
{
    use unibus::client::{Session, SessionOptions};
    let bus = bus(1).await;
    // Only instance `first` answers requests at first, so the watch leases from it.
    bus.plane.abort();
    let (first, stop_first) = instance(&bus).await;
    let (owner, bob_raw) = (member(&bus).await, member(&bus).await);
    let bob = Arc::new(Identity::from_secret_bytes(&bob_raw.id.to_secret_bytes()).unwrap());
    let session = Session::connect(
        Arc::clone(&bob),
        &[bus.cluster.client_url(0)],
        SessionOptions::default(),
    )
    .await
    .unwrap();
    // Rooms bob joins after his login: leased, not granted.
    owner.create("a").await;
    owner.add("a", &bob_raw).await;
    owner.rekey("a", 1).await;
    owner.create("b").await;
    let mut watch = session.watch_with_messages().await.unwrap();
    let a = RoomId::new("a").unwrap();
    until_leased(&first, &a, &bob.sign_public_key()).await;
    // The instance stops; another takes over, holding no lease: a message now reaches nobody.
    stop_first.abort();
    let (second, _running) = instance(&bus).await;
    let key = owner.epoch_key("a", &owner.key()).await;
    let unseen = owner
        .send(&owner.seal(&key, "while nobody leased a"))
        .await
        .unwrap();
    // Bob joins b: his watch leases it, finds the first instance gone, leases a and b anew
    // from the second, and reads a, whose lease is new there.
    owner.add("b", &bob_raw).await;
    // The message stored while nobody leased its room comes first.
    let (room, message) = next_message(&mut watch).await;
    assert_eq!((room, message.position), (a.clone(), unseen.position));
    for room in [&a, &RoomId::new("b").unwrap()] {
        assert_eq!(second.of(room), [bob.sign_public_key()], "{room}");
    }
    // And the next message of a comes live from the second instance.
    let next = owner.send(&owner.seal(&key, "live again")).await.unwrap();
    let (room, message) = next_message(&mut watch).await;
    assert_eq!((room, message.position), (a, next.position));
}
