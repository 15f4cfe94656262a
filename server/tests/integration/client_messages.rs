//! Messages through the client SDK (`Session::send`, `Session::messages`,
//! `Session::watch_with_messages`) against the real `membershipd` binary on the embedded
//! default: members exchange messages, page history both ways, receive live messages, catch up
//! after a restart from the cursor in their trust file, and get typed reasons and errors for
//! what they may not read or send.

use crate::client_sdk::{registered, session};
use crate::daemon;

use std::sync::Arc;
use std::time::Duration;

use daemon::EmbeddedServer;
use unibus::client::{
    Page, Received, Registration, RoomUpdate, Session, SessionError, SessionOptions, TrustStore,
    Unreadable, Watch,
};
use unibus::envelope::{ContentType, MAX_BODY_LEN};
use unibus::{Identity, RoomId};

/// A session with `trust` as its trust store.
async fn session_with(
    me: &Arc<Identity>,
    registration: &Registration,
    trust: TrustStore,
) -> Session {
    let options = SessionOptions {
        trust: Some(trust),
        ..SessionOptions::default()
    };
    Session::connect(Arc::clone(me), &registration.nats_urls, options)
        .await
        .unwrap()
}

pub(crate) fn text() -> ContentType {
    ContentType::new("text/plain; charset=utf-8").unwrap()
}

/// The body of an opened message, as text.
fn body(received: &Received) -> String {
    let message = received.outcome.as_ref().expect("an opened message");
    String::from_utf8(message.body().to_vec()).unwrap()
}

/// The next message the watch delivers (skipping other updates), within 20 s. A transient
/// failure (a request that timed out on a loaded machine) is reported by the watch, which goes
/// on: the room stays before the message, and is read again at its next live copy.
async fn next_message(watch: &mut Watch) -> (RoomId, Received) {
    let within = Duration::from_secs(20);
    tokio::time::timeout(within, async {
        loop {
            match watch.next().await.expect("the watch runs") {
                Ok(RoomUpdate::Message { room, message }) => return (room, message),
                Ok(_) => continue,
                Err(error) if error.is_transient() => eprintln!("the watch reported {error}"),
                Err(error) => panic!("the watch failed: {error}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no message within {within:?}"))
}

/// A room `name` of `owner` with `members` added and keyed at epoch 1.
pub(crate) async fn keyed_room(owner: &Session, name: &str, members: &[&Arc<Identity>]) -> RoomId {
    let room = RoomId::new(name).unwrap();
    owner.create_room(&room).await.unwrap();
    for member in members {
        owner
            .add_member(&room, &member.sign_public_key())
            .await
            .unwrap();
    }
    assert_eq!(owner.rekey(&room).await.unwrap().epoch, 1);
    room
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_exchange_messages_both_ways_and_page_history_backward_and_forward() {
    let server = EmbeddedServer::start().await;
    let (owner, owner_registration) = registered(&server).await;
    let (bob, bob_registration) = registered(&server).await;
    let owner_session = session(&owner, &owner_registration).await;
    let bob_session = session(&bob, &bob_registration).await;
    let room = keyed_room(&owner_session, "general", &[&bob]).await;

    let mut sent = Vec::new();
    for n in 0..5 {
        let (from, who) = if n % 2 == 0 {
            (&owner_session, &owner)
        } else {
            (&bob_session, &bob)
        };
        let body = format!("message {n}");
        let stored = from.send(&room, body.as_bytes(), &text()).await.unwrap();
        assert_eq!((stored.epoch, stored.duplicate), (1, false));
        sent.push((stored, who.sign_public_key(), body));
    }
    assert!(sent.windows(2).all(|w| w[0].0.position < w[1].0.position));

    // Each reads everything, with its sender, id, epoch and body.
    for reader in [&owner_session, &bob_session] {
        let page = reader
            .messages(&room, Page::Latest { limit: 100 })
            .await
            .unwrap();
        assert!(!page.more);
        assert_eq!(page.messages.len(), 5);
        for (received, (stored, sender, text)) in page.messages.iter().zip(&sent) {
            assert_eq!(received.position, stored.position);
            let message = received.outcome.as_ref().unwrap();
            assert_eq!(
                (message.id(), message.sender(), message.epoch()),
                (&stored.id, sender, 1)
            );
            assert_eq!(body(received), *text);
        }
    }

    // Backward from the latest two, then forward from the first.
    let latest = bob_session
        .messages(&room, Page::Latest { limit: 2 })
        .await
        .unwrap();
    assert!(latest.more);
    let bodies = |page: &unibus::client::ReceivedPage| -> Vec<String> {
        page.messages.iter().map(body).collect()
    };
    assert_eq!(bodies(&latest), ["message 3", "message 4"]);
    let before = bob_session
        .messages(
            &room,
            Page::Before {
                position: latest.messages[0].position,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(bodies(&before), ["message 1", "message 2"]);
    assert!(before.more);
    let after = bob_session
        .messages(
            &room,
            Page::After {
                position: sent[0].0.position,
                limit: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(bodies(&after), ["message 1", "message 2", "message 3"]);
    assert!(after.more);

    // Bad input is a typed error and sends nothing.
    let too_large = vec![0u8; MAX_BODY_LEN + 1];
    assert!(matches!(
        bob_session.send(&room, &too_large, &text()).await,
        Err(SessionError::BodyTooLarge { len, limit }) if len == MAX_BODY_LEN + 1 && limit == MAX_BODY_LEN
    ));
    assert!(matches!(
        bob_session.messages(&room, Page::Latest { limit: 0 }).await,
        Err(SessionError::InvalidArgument(_))
    ));
    let page = bob_session
        .messages(&room, Page::Latest { limit: 100 })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 5, "nothing more was stored");
}

/// Pages are read ahead (docs/client.md, "Reading history"): the page after a full one is read
/// while the full one is returned, and it must not stand in for a read made after more
/// messages were stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_read_ahead_never_hides_a_later_message_nor_outlives_a_removal() {
    let server = EmbeddedServer::start().await;
    let (owner, owner_registration) = registered(&server).await;
    let (bob, bob_registration) = registered(&server).await;
    let owner_session = session(&owner, &owner_registration).await;
    let bob_session = session(&bob, &bob_registration).await;
    let room = keyed_room(&owner_session, "reading-ahead", &[&bob]).await;
    let send = |n: usize| {
        let (owner_session, room) = (&owner_session, &room);
        async move {
            owner_session
                .send(room, format!("message {n}").as_bytes(), &text())
                .await
                .unwrap()
        }
    };
    let bodies = |page: &unibus::client::ReceivedPage| -> Vec<String> {
        page.messages.iter().map(body).collect()
    };
    let page_after = |position: u64| {
        let (bob_session, room) = (&bob_session, &room);
        async move {
            bob_session
                .messages(room, Page::After { position, limit: 2 })
                .await
                .unwrap()
        }
    };

    for n in 0..3 {
        send(n).await;
    }
    let first = page_after(0).await;
    assert_eq!(bodies(&first), ["message 0", "message 1"]);
    assert!(first.more);
    // The page after it (message 2 only, the room's end) is being read ahead: a message
    // stored now is in the page asked for next.
    send(3).await;
    let second = page_after(first.messages[1].position).await;
    assert_eq!(bodies(&second), ["message 2", "message 3"]);
    assert!(!second.more);

    // Full pages read ahead are used as read, each once.
    for n in 4..7 {
        send(n).await;
    }
    let third = page_after(second.messages[1].position).await;
    assert_eq!(bodies(&third), ["message 4", "message 5"]);
    assert!(third.more);
    let fourth = page_after(third.messages[1].position).await;
    assert_eq!(bodies(&fourth), ["message 6"]);
    assert!(!fourth.more);
    let again = page_after(third.messages[1].position).await;
    assert_eq!(bodies(&again), ["message 6"]);

    // A member removed while the page after a full one is read ahead (a closed one: 9 and 10,
    // with 11 after them) does not get it.
    for n in 7..12 {
        send(n).await;
    }
    let fifth = page_after(fourth.messages[0].position).await;
    assert_eq!(bodies(&fifth), ["message 7", "message 8"]);
    assert!(fifth.more);
    owner_session
        .remove_member(&room, &bob.sign_public_key())
        .await
        .unwrap();
    let after_removal = bob_session
        .messages(
            &room,
            Page::After {
                position: fifth.messages[1].position,
                limit: 2,
            },
        )
        .await;
    assert!(
        matches!(after_removal, Err(SessionError::NotMember)),
        "{after_removal:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_messages_arrive_and_an_offline_member_catches_up_after_a_restart_with_no_gap_or_duplicate(
) {
    let server = EmbeddedServer::start().await;
    let (owner, owner_registration) = registered(&server).await;
    let (bob, bob_registration) = registered(&server).await;
    let owner_session = session(&owner, &owner_registration).await;
    let room = keyed_room(&owner_session, "general", &[&bob]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bob-trust.json");
    let send = |body: &'static str| {
        let (owner_session, room) = (owner_session.clone(), room.clone());
        async move {
            owner_session
                .send(&room, body.as_bytes(), &text())
                .await
                .unwrap()
                .position
        }
    };

    let before_watching = send("before the first watch").await;
    let trust = TrustStore::open(&path, &bob.sign_public_key()).unwrap();
    let bob_session = session_with(&bob, &bob_registration, trust).await;
    let mut watch = bob_session.watch_with_messages().await.unwrap();
    // Caught up from the room's start, then live.
    let (in_room, first) = next_message(&mut watch).await;
    assert_eq!((in_room, first.position), (room.clone(), before_watching));
    assert_eq!(body(&first), "before the first watch");
    let live = send("live").await;
    let (_, received) = next_message(&mut watch).await;
    assert_eq!((received.position, body(&received)), (live, "live".into()));
    let sender = received.outcome.as_ref().unwrap().sender();
    assert_eq!(*sender, owner.sign_public_key());

    // Offline: the watch and the session go; two messages are stored meanwhile.
    drop(watch);
    bob_session.close().await;
    drop(bob_session);
    let missed = [send("missed 1").await, send("missed 2").await];
    assert_eq!(
        TrustStore::open(&path, &bob.sign_public_key())
            .unwrap()
            .last_delivered(&room),
        live,
        "the cursor is where the app stopped"
    );

    // A restart with the same trust file: the missed ones, then the next live one, once each.
    let trust = TrustStore::open(&path, &bob.sign_public_key()).unwrap();
    let bob_session = session_with(&bob, &bob_registration, trust).await;
    let mut watch = bob_session.watch_with_messages().await.unwrap();
    for (position, text) in missed.iter().zip(["missed 1", "missed 2"]) {
        let (_, received) = next_message(&mut watch).await;
        assert_eq!(
            (received.position, body(&received)),
            (*position, text.into())
        );
    }
    let after = send("after the restart").await;
    let (_, received) = next_message(&mut watch).await;
    assert_eq!(
        (received.position, body(&received)),
        (after, "after the restart".into()),
        "nothing delivered twice and nothing missed between"
    );
    watch.cancel();
    assert_eq!(bob_session.trust().last_delivered(&room), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_later_reads_earlier_epochs_as_no_key_and_a_rekey_under_a_send_is_sealed_again(
) {
    let server = EmbeddedServer::start().await;
    let (owner, owner_registration) = registered(&server).await;
    let (bob, bob_registration) = registered(&server).await;
    let (carol, carol_registration) = registered(&server).await;
    let owner_session = session(&owner, &owner_registration).await;
    let bob_session = session(&bob, &bob_registration).await;
    let room = keyed_room(&owner_session, "general", &[&bob]).await;

    // Bob sends at epoch 1, and keeps that key for his next send.
    let early = bob_session
        .send(&room, b"epoch one", &text())
        .await
        .unwrap();
    assert_eq!(early.epoch, 1);
    owner_session
        .add_member(&room, &carol.sign_public_key())
        .await
        .unwrap();
    assert_eq!(owner_session.rekey(&room).await.unwrap().epoch, 2);
    // The room moved on under Bob's kept key: membershipd says stale_epoch, and the SDK seals
    // again under epoch 2.
    let late = bob_session
        .send(&room, b"epoch two", &text())
        .await
        .unwrap();
    assert_eq!((late.epoch, late.duplicate), (2, false));
    assert_ne!(late.id, early.id);

    let carol_session = session(&carol, &carol_registration).await;
    let page = carol_session
        .messages(&room, Page::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 2);
    assert_eq!(page.messages[0].position, early.position);
    assert_eq!(
        page.messages[0].outcome,
        Err(Unreadable::NoKey { epoch: 1 }),
        "from before Carol joined"
    );
    assert_eq!(body(&page.messages[1]), "epoch two");
    // The same through a watch: the new member's catch-up starts at the room's first message.
    let mut watch = carol_session.watch_with_messages().await.unwrap();
    let (_, first) = next_message(&mut watch).await;
    assert_eq!(first.outcome, Err(Unreadable::NoKey { epoch: 1 }));
    let (_, second) = next_message(&mut watch).await;
    assert_eq!(
        (second.position, body(&second)),
        (late.position, "epoch two".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_can_neither_send_nor_read_and_gets_typed_errors() {
    let server = EmbeddedServer::start().await;
    let (owner, owner_registration) = registered(&server).await;
    let (bob, bob_registration) = registered(&server).await;
    let (stranger, stranger_registration) = registered(&server).await;
    let owner_session = session(&owner, &owner_registration).await;
    let bob_session = session(&bob, &bob_registration).await;
    let room = keyed_room(&owner_session, "general", &[&bob]).await;
    bob_session
        .send(&room, b"while a member", &text())
        .await
        .unwrap();

    owner_session
        .remove_member(&room, &bob.sign_public_key())
        .await
        .unwrap();
    // Bob still holds the epoch 1 key; the cluster refuses him all the same.
    assert!(matches!(
        bob_session.send(&room, b"after removal", &text()).await,
        Err(SessionError::NotMember)
    ));
    assert!(matches!(
        bob_session
            .messages(&room, Page::Latest { limit: 10 })
            .await,
        Err(SessionError::NotMember)
    ));
    let stranger_session = session(&stranger, &stranger_registration).await;
    assert!(matches!(
        stranger_session.send(&room, b"hello?", &text()).await,
        Err(SessionError::NotMember)
    ));
    let page = owner_session
        .messages(&room, Page::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1, "nothing of theirs was stored");
    // A member whose room has no key yet gets NoKey, not a transport error.
    let empty = RoomId::new("empty").unwrap();
    owner_session.create_room(&empty).await.unwrap();
    assert!(matches!(
        owner_session.send(&empty, b"no key yet", &text()).await,
        Err(SessionError::NoKey)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_watch_delivers_what_was_stored_around_a_restart_of_membershipd_once() {
    let mut server = EmbeddedServer::start().await;
    let (owner, owner_registration) = registered(&server).await;
    let (bob, bob_registration) = registered(&server).await;
    let owner_session = session(&owner, &owner_registration).await;
    let bob_session = session(&bob, &bob_registration).await;
    let room = keyed_room(&owner_session, "general", &[&bob]).await;
    let mut watch = bob_session.watch_with_messages().await.unwrap();
    let send = |body: &'static [u8]| {
        let (owner_session, room) = (owner_session.clone(), room.clone());
        async move {
            owner_session
                .send(&room, body, &text())
                .await
                .unwrap()
                .position
        }
    };
    let before = send(b"before").await;
    assert_eq!(next_message(&mut watch).await.1.position, before);

    // membershipd and its nats-server go away and come back on the same ports and data; the
    // owner sends as soon as it is back, whether or not Bob is.
    server.restart().await;
    let mut owner_state = owner_session.state_changes();
    tokio::time::timeout(
        Duration::from_secs(30),
        owner_state.wait_for(|state| *state == unibus::client::ConnectionState::Connected),
    )
    .await
    .expect("the owner reconnects")
    .unwrap();
    let during = send(b"during").await;
    let (_, received) = next_message(&mut watch).await;
    assert_eq!(
        (received.position, body(&received)),
        (during, "during".into())
    );
    let after = send(b"after").await;
    let (_, received) = next_message(&mut watch).await;
    assert_eq!(
        (received.position, body(&received)),
        (after, "after".into()),
        "each once, in order"
    );
}

/// A stand-in control plane on a plain nats-server: `key` answers `me`'s real member part of
/// epoch 1 of `room`, and `send` answers `unavailable` the first time and "stored before, at
/// 7" the second, as a store that stored the first attempt but could not say so would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_meets_an_outage_is_sent_again_with_the_same_bytes() {
    use futures::StreamExt;
    use unibus::envelope::Envelope;
    use unibus::manifest::{Recipient, SignedManifest};
    use unibus::protocol::codes::{Refusal, RefusalCode};
    use unibus::protocol::control::{encode_reply, KeyReply};
    use unibus::protocol::messages::SendReply;
    use unibus::sealing::RoomKey;

    let cluster = unibus_testkit::NatsCluster::start(1).await.unwrap();
    let me = Arc::new(Identity::generate().unwrap());
    let room = RoomId::new("general").unwrap();
    let key = RoomKey::generate().unwrap();
    let manifest = SignedManifest::rekey(&me, &room, 1, 0, &key, &[Recipient::of(&me)]).unwrap();
    let part = manifest
        .member_part(&me.sign_public_key())
        .unwrap()
        .to_bytes();
    let stand_in = async_nats::connect(cluster.client_url(0)).await.unwrap();
    let mut requests = stand_in
        .subscribe(format!("unibus.cp.{}.>", me.sign_public_key().to_hex()))
        .await
        .unwrap();
    stand_in.flush().await.unwrap();
    let (sent_bytes, mut received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut sends = 0;
        while let Some(request) = requests.next().await {
            let reply = if request.subject.ends_with(".key") {
                encode_reply(&Ok(KeyReply { part: part.clone() }))
            } else if request.subject.ends_with(".send") {
                sends += 1;
                sent_bytes.send(request.payload.to_vec()).unwrap();
                if sends == 1 {
                    encode_reply::<SendReply>(&Err(Refusal::new(
                        RefusalCode::Unavailable,
                        "the stream did not answer",
                    )))
                } else {
                    encode_reply(&Ok(SendReply {
                        position: 7,
                        duplicate: true,
                    }))
                }
            } else {
                continue;
            };
            let reply_to = request.reply.unwrap();
            stand_in.publish(reply_to, reply.into()).await.unwrap();
        }
    });

    let session = Session::connect(
        Arc::clone(&me),
        &[cluster.client_url(0)],
        SessionOptions::default(),
    )
    .await
    .unwrap();
    let sent = session.send(&room, b"once", &text()).await.unwrap();
    assert_eq!((sent.position, sent.epoch, sent.duplicate), (7, 1, true));
    let (first, second) = (
        received.recv().await.unwrap(),
        received.recv().await.unwrap(),
    );
    assert_eq!(first, second, "the retry carries the same envelope");
    assert_eq!(*Envelope::from_bytes(&first).unwrap().id(), sent.id);
    assert!(received.try_recv().is_err(), "two attempts, no more");
}
