//! The control-plane service end to end: clients logged in with their own keys ask a real
//! cluster about rooms, epochs and keys, owners manage and rekey rooms, and changes arrive as
//! notifications.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{
    login, register, wait_for_control_plane, world, world_on, world_with_config, StoreKind, World,
};
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use unibus::history::{self, HistoryShare};
use unibus::manifest::{MemberPart, Recipient, SignedHead, SignedManifest};
use unibus::protocol::events::Notification;
use unibus::sealing::RoomKey;
use unibus::{Identity, RoomId, SignPublicKey};
use unibus_server::control::ControlPlane;

async fn with_service() -> World {
    serve(world().await).await
}

/// Runs the control plane on `w` and waits until every node reaches it.
async fn serve(w: World) -> World {
    tokio::spawn(Arc::new(ControlPlane::new(Arc::clone(&w.store), w.control.clone())).run());
    w.control.flush().await.unwrap();
    wait_for_control_plane(&w.cluster, &*w.store).await;
    w
}

struct User {
    id: Identity,
    client: async_nats::Client,
}

async fn user(w: &World) -> User {
    let id = register(&*w.store).await;
    let (client, _) = login(w.cluster.server_addrs(), &id).await.unwrap();
    User { id, client }
}

impl User {
    fn key(&self) -> String {
        self.id.sign_public_key().to_hex()
    }

    async fn call(&self, operation: &str, body: Value) -> Value {
        serde_json::from_slice(&self.call_raw(operation, body).await).unwrap()
    }

    /// The reply's bytes: JSON, or for `key` the binary member part (§12.4).
    async fn call_raw(&self, operation: &str, body: Value) -> Vec<u8> {
        self.call_bytes(operation, body.to_string().into_bytes())
            .await
    }

    /// The JSON reply to a body given as text (which a `Value` could not hold, such as a field
    /// named twice).
    async fn call_text(&self, operation: &str, body: &str) -> Value {
        let reply = self.call_bytes(operation, body.as_bytes().to_vec()).await;
        serde_json::from_slice(&reply).unwrap()
    }

    async fn call_bytes(&self, operation: &str, body: Vec<u8>) -> Vec<u8> {
        let subject = format!("unibus.cp.{}.{operation}", self.key());
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            self.client.request(subject, body.into()),
        )
        .await
        .expect("the service answers")
        .expect("request");
        reply.payload.to_vec()
    }

    /// A step of the chunked upload `begun` (`rekey_part` or `rekey_commit`), sent to the
    /// instance that holds it, with the upload's id and instance and the fields of `more`.
    async fn upload_step(&self, step: &str, begun: &Value, more: Value) -> Value {
        let instance = begun["instance"].as_str().unwrap();
        let mut body = json!({ "upload": begun["upload"], "instance": instance });
        body.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        self.call(&format!("{step}.{instance}"), body).await
    }

    /// A `key` reply: the member part, or the refusal's code.
    async fn key_reply(&self, body: Value) -> Result<MemberPart, String> {
        let reply = self.call_raw("key", body).await;
        if reply.first() == Some(&b'{') {
            let refusal: Value = serde_json::from_slice(&reply).unwrap();
            return Err(code(&refusal).to_string());
        }
        Ok(MemberPart::from_bytes(&reply).unwrap())
    }

    /// A rekey on the device: fetch the members' keys, seal, sign, upload.
    async fn rekey(&self, room: &str, epoch: u64) -> (Value, RoomKey) {
        let members = self.call("members", json!({ "room": room })).await;
        let recipients = common::recipients(&members);
        let key = RoomKey::generate().unwrap();
        let manifest = SignedManifest::rekey(
            &self.id,
            &RoomId::new(room).unwrap(),
            epoch,
            epoch - 1,
            &key,
            &recipients,
        )
        .unwrap();
        (
            self.call(
                "rekey",
                json!({ "manifest": hex::encode(manifest.to_bytes()) }),
            )
            .await,
            key,
        )
    }

    /// Fetches, verifies and opens this user's key.
    async fn open_key(&self, room: &str, epoch: Option<u64>) -> Result<(u64, RoomKey), String> {
        let mut body = json!({ "room": room });
        if let Some(epoch) = epoch {
            body["epoch"] = json!(epoch);
        }
        let part = self.key_reply(body).await?;
        let (epoch, owner) = (
            part.unverified_header().epoch,
            part.unverified_header().rekeyer,
        );
        let key = part
            .open(&self.id, &RoomId::new(room).unwrap(), epoch, &owner)
            .map_err(|e| e.to_string())?;
        Ok((epoch, key))
    }
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<ok>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_answered_first_and_its_members_told_after() {
    // The answer carries what the change owes its members; nothing is published until the
    // reply is out (`run` sends the reply, then publishes), so the caller never waits for the
    // fan-out.
    let w = world().await;
    let plane = ControlPlane::new(Arc::clone(&w.store), w.control.clone());
    let (alice, bob) = (register(&*w.store).await, register(&*w.store).await);
    let general = RoomId::new("general").unwrap();
    w.store
        .create_room(&general, &alice.sign_public_key())
        .await
        .unwrap();
    // Bob listens as a logged-in user does (membershipd's own user only publishes there).
    let (bob_client, _) = login(w.cluster.server_addrs(), &bob).await.unwrap();
    let mut bob_events = bob_client
        .subscribe(format!(
            "unibus.events.{}.>",
            bob.sign_public_key().to_hex()
        ))
        .await
        .unwrap();
    bob_client.flush().await.unwrap();

    let subject = format!("unibus.cp.{}.add_member", alice.sign_public_key().to_hex());
    let body = json!({ "room": "general", "member": bob.sign_public_key().to_hex() });
    let answer = plane.answer(&subject, body.to_string().as_bytes()).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&answer.reply).unwrap(),
        json!({})
    );
    assert_eq!(
        answer.notices,
        vec![(
            bob.sign_public_key(),
            Notification::Added {
                room: general.clone()
            }
        )]
    );
    assert!(w
        .store
        .is_member(&general, &bob.sign_public_key())
        .await
        .unwrap());

    plane.publish(answer.notices).await;
    let event: Value = serde_json::from_slice(&bob_events.next().await.unwrap().payload).unwrap();
    assert_eq!(event, json!({ "room": "general", "kind": "added" }));

    // A refused change owes nobody anything.
    let again = plane.answer(&subject, b"{}").await;
    assert!(again.notices.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_story_from_creation_to_removal() {
    let w = with_service().await;
    let (alice, bob) = (user(&w).await, user(&w).await);
    let mut bob_events = bob
        .client
        .subscribe(format!("unibus.events.{}.>", bob.key()))
        .await
        .unwrap();
    bob.client.flush().await.unwrap();

    let created = alice
        .call("create_room", json!({ "room": "general" }))
        .await;
    assert_eq!(
        (created["id"].as_str(), created["epoch"].as_u64()),
        (Some("general"), Some(0))
    );
    assert_eq!(
        code(
            &alice
                .call(
                    "add_member",
                    json!({ "room": "general", "member": bob.key() })
                )
                .await
        ),
        "<ok>"
    );
    let added: Value = serde_json::from_slice(&bob_events.next().await.unwrap().payload).unwrap();
    assert_eq!(added, json!({ "room": "general", "kind": "added" }));

    assert_eq!(
        bob.call("member", json!({ "room": "general" })).await["member"],
        true
    );
    let rooms = bob.call("rooms", json!({})).await;
    assert_eq!(rooms["rooms"][0]["id"], "general");
    assert_eq!(
        code(
            &bob.open_key("general", None)
                .await
                .map(|_| Value::Null)
                .unwrap_or_else(|c| json!({"error": {"code": c}}))
        ),
        "no_key"
    );

    let (reply, key1) = alice.rekey("general", 1).await;
    assert_eq!(reply["epoch"], 1, "{reply}");
    let event: Value = serde_json::from_slice(&bob_events.next().await.unwrap().payload).unwrap();
    assert_eq!(
        event,
        json!({ "room": "general", "kind": "epoch", "epoch": 1 })
    );
    assert_eq!(
        bob.call("epoch", json!({ "room": "general" })).await["epoch"],
        1
    );
    assert_eq!(
        bob.open_key("general", None).await.unwrap(),
        (1, key1.clone())
    );

    let (_, key2) = alice.rekey("general", 2).await;
    assert_eq!(bob.open_key("general", None).await.unwrap(), (2, key2));
    assert_eq!(bob.open_key("general", Some(1)).await.unwrap(), (1, key1));

    assert_eq!(
        code(
            &alice
                .call(
                    "remove_member",
                    json!({ "room": "general", "member": bob.key() })
                )
                .await
        ),
        "<ok>"
    );
    let _epoch2: Value = serde_json::from_slice(&bob_events.next().await.unwrap().payload).unwrap();
    let removed: Value = serde_json::from_slice(&bob_events.next().await.unwrap().payload).unwrap();
    assert_eq!(removed, json!({ "room": "general", "kind": "removed" }));
    let (reply, _) = alice.rekey("general", 3).await;
    assert_eq!(reply["epoch"], 3);
    assert_eq!(
        bob.open_key("general", Some(3)).await.unwrap_err(),
        "not_member"
    );
    assert_eq!(
        bob.open_key("general", None).await.unwrap_err(),
        "not_member"
    );
    assert_eq!(
        bob.call("member", json!({ "room": "general" })).await["member"],
        false
    );

    // Added again, a member fetches the epochs it was sealed to before its removal (§12.2), and
    // none it was not.
    let again = json!({ "room": "general", "member": bob.key() });
    assert_eq!(code(&alice.call("add_member", again).await), "<ok>");
    assert_eq!(bob.open_key("general", Some(1)).await.unwrap().0, 1);
    assert_eq!(bob.open_key("general", Some(2)).await.unwrap().0, 2);
    assert_eq!(bob.open_key("general", None).await.unwrap_err(), "no_key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_and_non_owners_are_refused() {
    let w = with_service().await;
    let (alice, bob, carol) = (user(&w).await, user(&w).await, user(&w).await);
    alice
        .call("create_room", json!({ "room": "general" }))
        .await;
    alice
        .call(
            "add_member",
            json!({ "room": "general", "member": bob.key() }),
        )
        .await;
    alice.rekey("general", 1).await;

    // A non-member learns nothing, about real rooms or missing ones.
    for room in ["general", "nowhere"] {
        assert_eq!(
            code(&carol.call("epoch", json!({ "room": room })).await),
            "not_member"
        );
        assert_eq!(carol.open_key(room, None).await.unwrap_err(), "not_member");
        assert_eq!(
            carol.call("member", json!({ "room": room })).await["member"],
            false
        );
    }
    // A member is not an owner.
    for (operation, body) in [
        (
            "add_member",
            json!({ "room": "general", "member": carol.key() }),
        ),
        (
            "remove_member",
            json!({ "room": "general", "member": alice.key() }),
        ),
        ("members", json!({ "room": "general" })),
    ] {
        assert_eq!(
            code(&bob.call(operation, body).await),
            "not_owner",
            "{operation}"
        );
    }
    let key = RoomKey::generate().unwrap();
    let general = RoomId::new("general").unwrap();
    let everyone = [Recipient::of(&alice.id), Recipient::of(&bob.id)];
    let by_bob = SignedManifest::rekey(&bob.id, &general, 2, 1, &key, &everyone).unwrap();
    assert_eq!(
        code(
            &bob.call(
                "rekey",
                json!({ "manifest": hex::encode(by_bob.to_bytes()) })
            )
            .await
        ),
        "not_owner"
    );
    // Nor can a member upload the owner's manifest as its own.
    let by_alice = SignedManifest::rekey(&alice.id, &general, 2, 1, &key, &everyone).unwrap();
    assert_eq!(
        code(
            &bob.call(
                "rekey",
                json!({ "manifest": hex::encode(by_alice.to_bytes()) })
            )
            .await
        ),
        "bad_manifest"
    );

    // The owner must seal to exactly the members, from the current epoch, with registered keys.
    let only_owner =
        SignedManifest::rekey(&alice.id, &general, 2, 1, &key, &[Recipient::of(&alice.id)])
            .unwrap();
    let reply = alice
        .call(
            "rekey",
            json!({ "manifest": hex::encode(only_owner.to_bytes()) }),
        )
        .await;
    assert_eq!(code(&reply), "recipients_mismatch");
    let stale = SignedManifest::rekey(
        &alice.id,
        &general,
        1,
        0,
        &key,
        &[Recipient::of(&alice.id), Recipient::of(&bob.id)],
    )
    .unwrap();
    assert_eq!(
        code(
            &alice
                .call(
                    "rekey",
                    json!({ "manifest": hex::encode(stale.to_bytes()) })
                )
                .await
        ),
        "epoch_conflict"
    );
    // A flipped byte in the last entry (the entries no longer match the signed Merkle root) or
    // in the signature: refused before anything else is looked at.
    let signature_at = unibus::manifest::HEADER_BASE_LEN + "general".len();
    for (at, says) in [
        (stale.to_bytes().len() - 1, "Merkle root"),
        (signature_at, "signature"),
    ] {
        let mut forged = stale.to_bytes();
        forged[at] ^= 1;
        let reply = alice
            .call("rekey", json!({ "manifest": hex::encode(forged) }))
            .await;
        assert_eq!(code(&reply), "bad_manifest");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{reply}");
    }
    assert_eq!(code(&alice.call("add_member", json!({ "room": "general", "member": Identity::generate().unwrap().sign_public_key().to_hex() })).await), "unknown_user");
    assert_eq!(
        code(
            &alice
                .call("create_room", json!({ "room": "general" }))
                .await
        ),
        "room_exists"
    );
    assert_eq!(
        code(&alice.call("epoch", json!({ "room": "bad room" })).await),
        "bad_request"
    );
    assert_eq!(code(&alice.call("epoch", json!("x")).await), "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_user_is_refused_even_before_its_session_is_cut() {
    let w = with_service().await;
    let alice = user(&w).await;
    alice
        .call("create_room", json!({ "room": "general" }))
        .await;
    w.store
        .revoke_user(&alice.id.sign_public_key())
        .await
        .unwrap();
    assert_eq!(
        code(&alice.call("rooms", json!({})).await),
        "not_authorized"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_objects_and_epochs_past_the_limit_are_bad_requests() {
    let w = with_service().await;
    let alice = user(&w).await;
    alice
        .call("create_room", json!({ "room": "general" }))
        .await;
    alice.rekey("general", 1).await;
    // An array in field order, which serde would otherwise take for the struct.
    for (operation, body) in [
        ("create_room", json!(["other"])),
        ("epoch", json!(["general"])),
        ("key", json!(["general", 1])),
        ("rooms", json!([])),
        ("member", json!("general")),
        ("rekey", json!(null)),
    ] {
        let reply = alice.call(operation, body).await;
        assert_eq!(code(&reply), "bad_request", "{operation}: {reply}");
    }
    assert_eq!(
        code(&alice.call("epoch", json!({ "room": "other" })).await),
        "not_member",
        "the array created nothing"
    );
    // Epochs are 0 to 2^63 - 1 on the wire; beyond that a request is refused, not "no key".
    for epoch in [json!(i64::MAX as u64 + 1), json!(u64::MAX)] {
        let reply = alice
            .key_reply(json!({ "room": "general", "epoch": epoch }))
            .await;
        assert_eq!(reply.unwrap_err(), "bad_request", "{epoch}");
    }
    let reply = alice
        .key_reply(json!({ "room": "general", "epoch": i64::MAX }))
        .await;
    assert_eq!(reply.unwrap_err(), "no_key");
    // `"epoch": null` is the latest.
    let reply = alice
        .key_reply(json!({ "room": "general", "epoch": null }))
        .await;
    assert_eq!(reply.unwrap().unverified_header().epoch, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_rekeys_larger_than_a_message_go_through_in_pages_and_parts() {
    use unibus::client::{RekeyProgress, Session, SessionError, SessionOptions};
    // Messages of at most 16 KiB. 150 members: the `members` listing (26 KB) comes in pages and
    // the 150-entry manifest (44 KB as hex) goes up in parts; 80 rooms list in two pages.
    let w = serve(world_with_config("max_payload: 16384").await).await;
    let owner = Arc::new(register(&*w.store).await);
    let urls: Vec<String> = (0..w.cluster.len())
        .map(|i| w.cluster.client_url(i))
        .collect();
    let connect =
        |id: &Arc<Identity>| Session::connect(Arc::clone(id), &urls, SessionOptions::default());
    let session = connect(&owner).await.unwrap();
    let room = RoomId::new("crowd").unwrap();
    session.create_room(&room).await.unwrap();
    let member = Arc::new(register(&*w.store).await);
    w.store
        .add_member(&room, &member.sign_public_key())
        .await
        .unwrap();
    let mut expected = vec![owner.sign_public_key(), member.sign_public_key()];
    for _ in 2..150 {
        let someone = register(&*w.store).await;
        w.store
            .add_member(&room, &someone.sign_public_key())
            .await
            .unwrap();
        expected.push(someone.sign_public_key());
    }
    expected.sort();
    let listed: Vec<SignPublicKey> = session
        .members(&room)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.member)
        .collect();
    assert_eq!(listed, expected);

    // Cancelled after the first part: nothing is stored, the room keeps its epoch.
    let stop_at_upload = Arc::new(|progress| !matches!(progress, RekeyProgress::Uploaded { .. }));
    let cancelled = session.rekey_with_progress(&room, stop_at_upload).await;
    assert!(
        matches!(cancelled, Err(SessionError::Cancelled)),
        "{cancelled:?}"
    );
    assert_eq!(session.current_epoch(&room).await.unwrap(), 0);

    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&reports);
    let progress = Arc::new(move |progress| {
        seen.lock().unwrap().push(progress);
        true
    });
    let rekeyed = session.rekey_with_progress(&room, progress).await.unwrap();
    assert_eq!(rekeyed.epoch, 1);
    let reports = reports.lock().unwrap().clone();
    assert!(reports.contains(&RekeyProgress::Sealed {
        done: 150,
        total: 150
    }));
    assert_eq!(
        reports.last(),
        Some(&RekeyProgress::Uploaded {
            done: 150,
            total: 150
        })
    );
    let theirs = connect(&member).await.unwrap();
    let opened = theirs.room_key(&room, None).await.unwrap();
    assert_eq!(opened.epoch, 1);
    assert_eq!(opened.key.expose_secret(), rekeyed.key.expose_secret());

    for i in 0..79 {
        let id = RoomId::new(&format!("room-{i:02}")).unwrap();
        w.store
            .create_room(&id, &member.sign_public_key())
            .await
            .unwrap();
    }
    let rooms = theirs.my_rooms().await.unwrap();
    assert_eq!(rooms.len(), 80);
    assert!(rooms.windows(2).all(|w| w[0].id < w[1].id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_takes_parts_in_order_from_its_owner_and_commits_only_whole() {
    let w = with_service().await;
    let (alice, bob) = (user(&w).await, user(&w).await);
    alice
        .call("create_room", json!({ "room": "general" }))
        .await;
    alice
        .call(
            "add_member",
            json!({ "room": "general", "member": bob.key() }),
        )
        .await;
    let recipients = [Recipient::of(&alice.id), Recipient::of(&bob.id)];
    let key = RoomKey::generate().unwrap();
    let general = RoomId::new("general").unwrap();
    let signed = SignedManifest::rekey(&alice.id, &general, 1, 0, &key, &recipients).unwrap();
    let head = signed.head().to_bytes();
    let wire = signed.to_bytes();
    let entries = &wire[head.len()..];
    let entry = unibus::manifest::ENTRY_LEN;

    // Only the owner begins, with a head it signed.
    let refused = bob
        .call("rekey_begin", json!({ "head": hex::encode(&head) }))
        .await;
    assert_eq!(code(&refused), "bad_manifest", "{refused}");
    let begin = || alice.call("rekey_begin", json!({ "head": hex::encode(&head) }));
    let part =
        |first: usize, bytes: &[u8]| json!({ "first": first, "entries": hex::encode(bytes) });

    // Bytes after the head are not a head.
    let mut long = head.clone();
    long.push(0);
    let trailing = alice
        .call("rekey_begin", json!({ "head": hex::encode(&long) }))
        .await;
    assert_eq!(code(&trailing), "bad_manifest", "{trailing}");
    let message = trailing["error"]["message"].as_str().unwrap();
    assert!(message.contains("trailing bytes"), "{trailing}");

    let begun = begin().await;
    // A step whose body names another instance than its subject does is refused, and adds
    // nothing; the subject's instance is the one that holds the upload.
    let here = begun["instance"].as_str().unwrap();
    let elsewhere = json!({ "upload": begun["upload"], "instance": "0" });
    let mut part_elsewhere = part(0, &entries[..entry]);
    part_elsewhere
        .as_object_mut()
        .unwrap()
        .extend(elsewhere.as_object().unwrap().clone());
    for (step, body) in [("rekey_part", part_elsewhere), ("rekey_commit", elsewhere)] {
        let reply = alice.call(&format!("{step}.{here}"), body).await;
        assert_eq!(code(&reply), "bad_request", "{step}: {reply}");
    }
    let first = alice
        .upload_step("rekey_part", &begun, part(0, &entries[..entry]))
        .await;
    assert_eq!(first["received"], 1);
    // Out of order, or from another key: refused, nothing changes.
    let gap = alice
        .upload_step("rekey_part", &begun, part(2, &entries[entry..]))
        .await;
    assert_eq!(code(&gap), "bad_request");
    let other = bob
        .upload_step("rekey_part", &begun, part(1, &entries[entry..]))
        .await;
    assert_eq!(code(&other), "not_found");
    // A commit before the last part stores nothing, and ends the upload.
    let early = alice.upload_step("rekey_commit", &begun, json!({})).await;
    assert_eq!(code(&early), "bad_manifest", "{early}");
    let after = alice
        .upload_step("rekey_part", &begun, part(1, &entries[entry..]))
        .await;
    assert_eq!(code(&after), "not_found");
    assert_eq!(bob.open_key("general", None).await.unwrap_err(), "no_key");

    // Again, whole: the epoch is stored and opens for the member.
    let again = begin().await;
    assert_eq!(again["instance"], begun["instance"]);
    for (first, bytes) in [(0, &entries[..entry]), (1, &entries[entry..])] {
        let reply = alice
            .upload_step("rekey_part", &again, part(first, bytes))
            .await;
        assert_eq!(reply["received"], first + 1);
    }
    let committed = alice.upload_step("rekey_commit", &again, json!({})).await;
    assert_eq!(committed["epoch"], 1, "{committed}");
    assert_eq!(bob.open_key("general", None).await.unwrap(), (1, key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reply_grows_with_the_log_of_the_room_not_its_size() {
    let w = with_service().await;
    let owner = user(&w).await;
    owner.call("create_room", json!({ "room": "crowd" })).await;
    let room = RoomId::new("crowd").unwrap();
    let fetcher = user(&w).await;
    owner
        .call(
            "add_member",
            json!({ "room": "crowd", "member": fetcher.key() }),
        )
        .await;
    // 2 members: a one-hash audit path.
    let (_, first) = owner.rekey("crowd", 1).await;
    let small = fetcher.call_raw("key", json!({ "room": "crowd" })).await;
    assert_eq!(small.len(), unibus::manifest::member_part_len(5, 1));

    // 512 members: a nine-hash path. The whole manifest is 74 KB; the part stays under 1 KB.
    for _ in 2..512 {
        let member = register(&*w.store).await;
        w.store
            .add_member(&room, &member.sign_public_key())
            .await
            .unwrap();
    }
    let (_, second) = owner.rekey("crowd", 2).await;
    let large = fetcher.call_raw("key", json!({ "room": "crowd" })).await;
    assert_eq!(large.len(), unibus::manifest::member_part_len(5, 9));
    assert!(large.len() < 1000, "{} bytes", large.len());
    assert_eq!(fetcher.open_key("crowd", None).await.unwrap(), (2, second));
    assert_eq!(
        fetcher.open_key("crowd", Some(1)).await.unwrap(),
        (1, first)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_holds_at_least_one_record_and_the_last_has_no_next() {
    let w = with_service().await;
    let (alice, bob) = (user(&w).await, user(&w).await);
    for room in ["a", "b"] {
        alice.call("create_room", json!({ "room": room })).await;
    }
    let add = json!({ "room": "a", "member": bob.key() });
    assert_eq!(code(&alice.call("add_member", add).await), "<ok>");
    // `limit` is a whole number from 1 to 2^32 - 1; `after` a valid room id or key.
    for (operation, body) in [
        ("rooms", json!({ "limit": 0 })),
        ("members", json!({ "room": "a", "limit": 0 })),
        ("rooms", json!({ "limit": -1 })),
        ("rooms", json!({ "limit": 1.5 })),
        ("rooms", json!({ "limit": "1" })),
        ("rooms", json!({ "limit": 4_294_967_296u64 })),
        ("rooms", json!({ "after": "bad room" })),
        ("members", json!({ "room": "a", "after": "beef" })),
    ] {
        let reply = alice.call(operation, body.clone()).await;
        assert_eq!(code(&reply), "bad_request", "{operation} {body}: {reply}");
    }
    let first = alice.call("rooms", json!({ "limit": 1 })).await;
    assert_eq!(first["rooms"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["next"], "a");
    let from_null = alice
        .call("rooms", json!({ "after": null, "limit": 1 }))
        .await;
    assert_eq!(from_null, first, "`\"after\": null` is the first page");
    let last = alice
        .call("rooms", json!({ "after": "a", "limit": 1 }))
        .await;
    assert_eq!(last["rooms"][0]["id"], "b", "{last}");
    assert!(last.get("next").is_none(), "no `next`, not null: {last}");
    let mut keys = [alice.key(), bob.key()];
    keys.sort();
    let first = alice
        .call("members", json!({ "room": "a", "limit": 1 }))
        .await;
    assert_eq!(first["next"], keys[0].as_str(), "{first}");
    let last = alice
        .call(
            "members",
            json!({ "room": "a", "after": keys[0], "limit": 1 }),
        )
        .await;
    assert_eq!(last["members"][0]["sign_public_key"], keys[1].as_str());
    assert!(last.get("next").is_none(), "no `next`, not null: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_names_a_field_twice_is_a_bad_request_and_changes_nothing() {
    let w = with_service().await;
    let (alice, bob) = (user(&w).await, user(&w).await);
    alice.call("create_room", json!({ "room": "a" })).await;
    let twice = alice
        .call_text("create_room", r#"{"room":"one","room":"two"}"#)
        .await;
    assert_eq!(code(&twice), "bad_request", "{twice}");
    // At any depth, also in a field the operation does not take.
    let nested = format!(
        r#"{{"room":"a","member":"{}","extra":{{"x":1,"x":2}}}}"#,
        bob.key()
    );
    let reply = alice.call_text("add_member", &nested).await;
    assert_eq!(code(&reply), "bad_request", "{reply}");
    let rooms = alice.call("rooms", json!({})).await;
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 1, "{rooms}");
    assert_eq!(
        bob.call("member", json!({ "room": "a" })).await["member"],
        false
    );
}

/// The answers of the control plane's `$SRV.STATS`: every endpoint's custom data.
async fn dropped_in_stats(control: &async_nats::Client) -> u64 {
    let reply = control
        .request("$SRV.STATS.unibus-control-plane", "".into())
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&reply.payload).unwrap();
    stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["dropped_requests"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_reply_would_not_reach_its_caller_is_dropped_and_changes_nothing() {
    let w = world().await;
    let plane = Arc::new(ControlPlane::new(Arc::clone(&w.store), w.control.clone()));
    tokio::spawn(Arc::clone(&plane).run());
    w.control.flush().await.unwrap();
    wait_for_control_plane(&w.cluster, &*w.store).await;
    let (alice, bob, victim) = (user(&w).await, user(&w).await, user(&w).await);
    alice
        .call("create_room", json!({ "room": "general" }))
        .await;
    let mut inbox = victim
        .client
        .subscribe(format!("_INBOX_{}.>", victim.key()))
        .await
        .unwrap();
    let mut events = victim
        .client
        .subscribe(format!("unibus.events.{}.>", victim.key()))
        .await
        .unwrap();
    victim.client.flush().await.unwrap();

    // Alice asks, on her own subjects, for answers to go to the victim, or nowhere: an
    // add_member (a change), a read, and an upload's commit on the instance's own subject.
    let on = |operation: &str| format!("unibus.cp.{}.{operation}", alice.key());
    let add = Bytes::from(json!({ "room": "general", "member": bob.key() }).to_string());
    let elsewhere = [
        format!("_INBOX_{}.x", victim.key()),
        format!("unibus.events.{}.room", victim.key()),
        format!("unibus.events.{}.account", victim.key()),
        // Not under her inbox prefix either: the prefix's dot is part of it.
        format!("_INBOX_{}", alice.key()),
    ];
    for reply in &elsewhere {
        alice
            .client
            .publish_with_reply(on("add_member"), reply.clone(), add.clone())
            .await
            .unwrap();
    }
    alice.client.publish(on("add_member"), add).await.unwrap();
    let read = Bytes::from(json!({ "room": "general" }).to_string());
    let foreign = format!("_INBOX_{}.y", victim.key());
    alice
        .client
        .publish_with_reply(on("epoch"), foreign.clone(), read)
        .await
        .unwrap();
    let commit = json!({ "upload": "00", "instance": plane.instance() }).to_string();
    alice
        .client
        .publish_with_reply(
            format!("{}.{}", on("rekey_commit"), plane.instance()),
            foreign,
            commit.into(),
        )
        .await
        .unwrap();
    alice.client.flush().await.unwrap();
    let sent = elsewhere.len() as u64 + 3;

    // Each was taken, and dropped: counted, and shown to the operator in the service's stats.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while plane.dropped_requests() < sent {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {sent} dropped",
            plane.dropped_requests()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(plane.dropped_requests(), sent);
    assert_eq!(dropped_in_stats(&w.control).await, sent);
    // Nothing changed, and the caller's own requests are answered as before.
    assert!(!w
        .store
        .is_member(&RoomId::new("general").unwrap(), &bob.id.sign_public_key())
        .await
        .unwrap());
    assert_eq!(
        alice.call("epoch", json!({ "room": "general" })).await["epoch"],
        0
    );
    // Nothing reached the victim by the time its own round trip through the server is back.
    victim.client.flush().await.unwrap();
    assert!(
        inbox.next().now_or_never().is_none(),
        "an answer in its inbox"
    );
    assert!(
        events.next().now_or_never().is_none(),
        "an answer in its notices"
    );
}

/// `share_history` with these shares' wire forms; the refusal's code, or `<ok>`.
async fn share(who: &User, shares: &[Vec<u8>]) -> String {
    let shares: Vec<String> = shares.iter().map(hex::encode).collect();
    let reply = who
        .call(
            "share_history",
            json!({ "room": "general", "shares": shares }),
        )
        .await;
    code(&reply).to_string()
}

async fn the_owner_alone_stores_checked_history_shares_and_key_serves_them(w: World) {
    let (owner, member, other) = (user(&w).await, user(&w).await, user(&w).await);
    let general = RoomId::new("general").unwrap();
    owner
        .call("create_room", json!({ "room": "general" }))
        .await;
    owner
        .call(
            "add_member",
            json!({ "room": "general", "member": other.key() }),
        )
        .await;
    let (_, key1) = owner.rekey("general", 1).await;
    owner
        .call(
            "add_member",
            json!({ "room": "general", "member": member.key() }),
        )
        .await;
    let epoch1 = json!({ "room": "general", "epoch": 1 });
    // By default a member added later has no key of the epoch before it.
    assert_eq!(
        member.key_reply(epoch1.clone()).await.unwrap_err(),
        "no_key"
    );

    // The epoch's signed head, as the owner's own part carries it.
    let part = owner.key_reply(epoch1.clone()).await.unwrap().to_bytes();
    let head = SignedHead::from_bytes(&part[..151 + general.as_str().len()]).unwrap();
    let seal = |to: Recipient| {
        HistoryShare::seal(&owner.id, &head, &key1, &to)
            .unwrap()
            .to_bytes()
    };
    let good = seal(Recipient::of(&member.id));
    let entry_at = 1 + head.encoded_len();

    // Refused, and nothing stored: bad requests, non-owners, forgeries, strangers, other heads.
    assert_eq!(share(&owner, &[]).await, "bad_request");
    assert_eq!(
        share(&other, std::slice::from_ref(&good)).await,
        "not_owner"
    );
    assert_eq!(share(&member, &[vec![0x01]]).await, "not_owner");
    let stranger = user(&w).await;
    assert_eq!(
        share(&stranger, std::slice::from_ref(&good)).await,
        "not_member"
    );
    assert_eq!(
        share(&owner, &[good[..good.len() - 1].to_vec()]).await,
        "bad_share"
    );
    let forged = common::resigned_share(&good, &other.id, |_| ());
    assert_eq!(share(&owner, &[forged]).await, "bad_share");
    let mut tampered = good.clone();
    tampered[entry_at + 64 + 40] ^= 1;
    assert_eq!(share(&owner, &[tampered]).await, "bad_share");
    // A head the owner signed but never uploaded (another manifest of epoch 1), and one of an
    // epoch the room does not have.
    for epoch in [1, 5] {
        let unstored = SignedManifest::rekey(
            &owner.id,
            &general,
            epoch,
            epoch - 1,
            &key1,
            &[Recipient::of(&owner.id)],
        )
        .unwrap()
        .head();
        let swapped = HistoryShare::seal(&owner.id, &unstored, &key1, &Recipient::of(&member.id))
            .unwrap()
            .to_bytes();
        assert_eq!(
            share(&owner, &[swapped]).await,
            "bad_share",
            "epoch {epoch}"
        );
    }
    // Sealed to someone who is not a member, or to a member's wrong x25519 key.
    assert_eq!(
        share(&owner, &[seal(Recipient::of(&stranger.id))]).await,
        "recipients_mismatch"
    );
    let wrong_kex = Recipient {
        member: member.id.sign_public_key(),
        kex: stranger.id.kex_public_key(),
    };
    assert_eq!(
        share(&owner, &[good.clone(), seal(wrong_kex)]).await,
        "recipients_mismatch"
    );
    assert_eq!(
        member.key_reply(epoch1.clone()).await.unwrap_err(),
        "no_key"
    );

    // The owner's own share is stored, and `key` for that epoch serves it to its member.
    assert_eq!(share(&owner, std::slice::from_ref(&good)).await, "<ok>");
    let reply = member.call_raw("key", epoch1.clone()).await;
    assert_eq!(reply, good);
    assert_eq!(reply[0], history::HISTORY_SHARE_VERSION);
    let opened = HistoryShare::from_bytes(&reply)
        .unwrap()
        .open(&member.id, &general, 1, &owner.id.sign_public_key())
        .unwrap();
    assert_eq!(opened, key1);
    // Only for the epoch asked by number: the latest key is still none of the member's.
    assert_eq!(
        member
            .key_reply(json!({ "room": "general" }))
            .await
            .unwrap_err(),
        "no_key"
    );
    // A recipient of the epoch still gets its member part.
    assert_eq!(other.open_key("general", Some(1)).await.unwrap().1, key1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shares_are_checked_stored_and_served_on_sqlite() {
    let w = serve(world_on(StoreKind::Sqlite, 1).await).await;
    the_owner_alone_stores_checked_history_shares_and_key_serves_them(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shares_are_checked_stored_and_served_on_kv() {
    let w = serve(world_on(StoreKind::Kv, 1).await).await;
    the_owner_alone_stores_checked_history_shares_and_key_serves_them(w).await;
}
