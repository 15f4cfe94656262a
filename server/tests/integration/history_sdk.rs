//! History shares through the client SDK (`Session::set_history_policy`, `rekey`,
//! `share_history`, `room_key`, `messages`) against membershipd's control plane and message
//! relay on a real cluster, on SQLite and on KV: a member added later reads nothing of the
//! epochs before it by default, reads them once its owner shares them, and refuses every share
//! the server forges with its typed reason.

use crate::common::{self, StoreKind, World};

use std::sync::Arc;

use unibus::client::{
    HistoryPolicy, Page, RoomUpdate, Session, SessionError, SessionOptions, Unreadable,
};
use unibus::envelope::ContentType;
use unibus::history::{HistoryError, HistoryShare};
use unibus::manifest::{Recipient, SignedHead, SignedManifest};
use unibus::sealing::RoomKey;
use unibus::{Identity, RoomId};
use unibus_server::control::ControlPlane;
use unibus_server::store::StoredShare;

/// A one-node cluster with membershipd's control plane and message relay on a store of `kind`.
async fn served(kind: StoreKind) -> World {
    let w = common::world_on(kind, 1).await;
    common::start_messages(&w.cluster, &w.setup, &w.control).await;
    tokio::spawn(Arc::new(ControlPlane::new(Arc::clone(&w.store), w.control.clone())).run());
    w.control.flush().await.unwrap();
    common::wait_for_control_plane(&w.cluster, &*w.store).await;
    w
}

/// A registered user and its session.
async fn user(w: &World) -> (Arc<Identity>, Session) {
    let id = Arc::new(common::register(&*w.store).await);
    let session = Session::connect(
        Arc::clone(&id),
        &w.cluster.client_urls(),
        SessionOptions::default(),
    )
    .await
    .unwrap();
    (id, session)
}

fn text() -> ContentType {
    ContentType::new("text/plain").unwrap()
}

/// What `reader` reads of `room`: each message's body, or why it cannot.
async fn read(reader: &Session, room: &RoomId) -> Vec<Result<String, Unreadable>> {
    let page = reader
        .messages(room, Page::Latest { limit: 100 })
        .await
        .unwrap();
    page.messages
        .into_iter()
        .map(|m| m.outcome.map(|m| String::from_utf8(m.into_body()).unwrap()))
        .collect()
}

async fn a_member_added_later_reads_earlier_epochs_only_when_its_owner_shares_them(w: &World) {
    let (_, owner) = user(w).await;
    let (bob_id, bob) = user(w).await;
    let (carol_id, carol) = user(w).await;
    let (dave_id, dave) = user(w).await;
    let room = RoomId::new("general").unwrap();
    owner.create_room(&room).await.unwrap();
    owner
        .add_member(&room, &bob_id.sign_public_key())
        .await
        .unwrap();
    assert_eq!(owner.rekey(&room).await.unwrap().epoch, 1);
    bob.send(&room, b"one", &text()).await.unwrap();

    // The default: Carol, added later, reads epoch 1 as "no key".
    assert_eq!(owner.history_policy(&room), HistoryPolicy::Joined);
    owner
        .add_member(&room, &carol_id.sign_public_key())
        .await
        .unwrap();
    assert_eq!(owner.rekey(&room).await.unwrap().epoch, 2);
    bob.send(&room, b"two", &text()).await.unwrap();
    assert_eq!(
        read(&carol, &room).await,
        vec![Err(Unreadable::NoKey { epoch: 1 }), Ok("two".into())]
    );
    assert!(matches!(
        carol.room_key(&room, Some(1)).await,
        Err(SessionError::NoKey)
    ));

    // The policy is the owner's alone, on its own device.
    assert!(matches!(
        bob.set_history_policy(&room, HistoryPolicy::Shared),
        Err(SessionError::NotOwner)
    ));
    owner
        .set_history_policy(&room, HistoryPolicy::Shared)
        .unwrap();
    assert_eq!(owner.history_policy(&room), HistoryPolicy::Shared);
    // Dave, added under Shared, reads every earlier epoch after the owner's next rekey.
    owner
        .add_member(&room, &dave_id.sign_public_key())
        .await
        .unwrap();
    assert_eq!(owner.rekey(&room).await.unwrap().epoch, 3);
    bob.send(&room, b"three", &text()).await.unwrap();
    assert_eq!(
        read(&dave, &room).await,
        vec![Ok("one".into()), Ok("two".into()), Ok("three".into())]
    );
    let shared = dave.room_key(&room, Some(1)).await.unwrap();
    assert_eq!(shared.epoch, 1);
    // Dave sends with the latest key, where the manifest lists him.
    assert_eq!(dave.send(&room, b"four", &text()).await.unwrap().epoch, 3);
    // Carol was added before the policy changed: the owner shares her history explicitly, and
    // her watch is told which epochs.
    assert_eq!(
        read(&carol, &room).await[0],
        Err(Unreadable::NoKey { epoch: 1 })
    );
    let mut carol_updates = carol.watch().await.unwrap();
    assert_eq!(
        owner
            .share_history(&room, &carol_id.sign_public_key())
            .await
            .unwrap(),
        3,
        "epochs 1 to 3"
    );
    let told = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match carol_updates.next().await.expect("the watch runs") {
                Ok(RoomUpdate::HistoryShared { room, epochs }) => return (room, epochs),
                Ok(_) => continue,
                Err(error) => panic!("the watch failed: {error}"),
            }
        }
    })
    .await
    .expect("a history_shared update within 10 s");
    assert_eq!(told, (room.clone(), vec![1, 2, 3]));
    let carol_reads = read(&carol, &room).await;
    assert_eq!(carol_reads[0], Ok("one".into()));
    // Only the owner may share.
    assert!(matches!(
        bob.share_history(&room, &carol_id.sign_public_key()).await,
        Err(SessionError::NotOwner)
    ));
}

/// Puts `share` into the store for `member` at epoch 1 as a lying server could, bypassing every
/// check of `share_history`.
async fn plant(w: &World, room: &RoomId, member: &Identity, share: Vec<u8>) {
    let stored = StoredShare {
        epoch: 1,
        member: member.sign_public_key(),
        share,
    };
    w.store
        .put_history_shares(room, std::slice::from_ref(&stored))
        .await
        .unwrap();
}

async fn a_share_the_server_forges_is_refused_with_its_typed_reason(w: &World) {
    let (owner_id, owner) = user(w).await;
    let (erin_id, erin) = user(w).await;
    let (mallory_id, _mallory) = user(w).await;
    let room = RoomId::new("forged").unwrap();
    owner.create_room(&room).await.unwrap();
    let key1 = owner.rekey(&room).await.unwrap().key;
    owner
        .add_member(&room, &erin_id.sign_public_key())
        .await
        .unwrap();
    owner.rekey(&room).await.unwrap();
    // Erin pins the owner through her rooms.
    erin.my_rooms().await.unwrap();
    // Epoch 1's signed head, as the store keeps it.
    let head = w.store.epoch_head(&room, 1).await.unwrap();
    let head = SignedHead::from_bytes(&head).unwrap();
    let genuine = HistoryShare::seal(&owner_id, &head, &key1, &Recipient::of(&erin_id))
        .unwrap()
        .to_bytes();
    let entry_at = 1 + head.encoded_len();
    let owner_key = owner_id.sign_public_key();
    let other_head = SignedManifest::rekey(
        &owner_id,
        &room,
        1,
        0,
        &RoomKey::generate().unwrap(),
        &[Recipient::of(&owner_id)],
    )
    .unwrap()
    .head();
    let cases: Vec<(&str, Vec<u8>, HistoryError)> = vec![
        (
            "signed by another user",
            common::resigned_share(&genuine, &mallory_id, |_| ()),
            HistoryError::BadShareSignature,
        ),
        (
            "addressed to another member",
            HistoryShare::seal(&owner_id, &head, &key1, &Recipient::of(&mallory_id))
                .unwrap()
                .to_bytes(),
            HistoryError::NotARecipient,
        ),
        (
            "another head of epoch 1 swapped in",
            common::resigned_share(&genuine, &mallory_id, |bytes| {
                bytes.splice(1..entry_at, other_head.to_bytes());
            }),
            HistoryError::BadShareSignature,
        ),
        (
            "a sealed copy byte flipped",
            {
                let mut bytes = genuine.clone();
                bytes[entry_at + 64 + 40] ^= 1;
                bytes
            },
            HistoryError::BadShareSignature,
        ),
    ];
    for (what, share, expected) in cases {
        plant(w, &room, &erin_id, share).await;
        match erin.room_key(&room, Some(1)).await {
            Err(SessionError::HistoryShare(found)) => assert_eq!(found, expected, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // A whole share made by another user, with a head of its own: its rekeyer is not the
    // owner Erin pinned, refused as for a member part.
    let fake = SignedManifest::rekey(
        &mallory_id,
        &room,
        1,
        0,
        &key1,
        &[Recipient::of(&mallory_id)],
    )
    .unwrap();
    let by_another = HistoryShare::seal(&mallory_id, &fake.head(), &key1, &Recipient::of(&erin_id))
        .unwrap()
        .to_bytes();
    plant(w, &room, &erin_id, by_another).await;
    match erin.room_key(&room, Some(1)).await {
        Err(SessionError::OwnerChanged { pinned, found, .. }) => {
            assert_eq!((pinned, found), (owner_key, mallory_id.sign_public_key()));
        }
        other => panic!("a share by another rekeyer: {other:?}"),
    }
    // The genuine share opens.
    plant(w, &room, &erin_id, genuine).await;
    assert_eq!(erin.room_key(&room, Some(1)).await.unwrap().key, key1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_history_on_sqlite() {
    let w = served(StoreKind::Sqlite).await;
    a_member_added_later_reads_earlier_epochs_only_when_its_owner_shares_them(&w).await;
    a_share_the_server_forges_is_refused_with_its_typed_reason(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_history_on_kv() {
    let w = served(StoreKind::Kv).await;
    a_member_added_later_reads_earlier_epochs_only_when_its_owner_shares_them(&w).await;
    a_share_the_server_forges_is_refused_with_its_typed_reason(&w).await;
}
