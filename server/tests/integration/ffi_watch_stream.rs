//! The FFI's `WatchStream` (`unibus_ffi`, what the Kotlin, Python and Swift adapters read)
//! against the real `membershipd` binary: its numbered handoff hands a step out again to a
//! caller that did not get it, without taking anything from the watch, and a message counts as
//! handled only once a call (`next` or `cancel`) says its step was received.

use crate::client_messages::{keyed_room, text};
use crate::client_sdk::{registered, session};
use crate::daemon;

use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon::EmbeddedServer;
use unibus::client::{Registration, TrustStore};
use unibus::{Identity, RoomId};
use unibus_ffi::{RoomUpdate, SessionError, WatchEnd, WatchEvent, WatchStep, WatchStream};

/// The stream's next step after `received`, within 20 s.
async fn step_after(stream: &WatchStream, received: u64) -> Result<WatchStep, SessionError> {
    tokio::time::timeout(Duration::from_secs(20), stream.next(received))
        .await
        .expect("the stream answers within 20 s")
}

/// The stream's next step holding a message, after `received`; steps before it are received
/// (passed on), as an app does.
async fn message_step(stream: &WatchStream, mut received: u64) -> WatchStep {
    loop {
        let step = step_after(stream, received).await.unwrap();
        match &step.event {
            WatchEvent::Update {
                update: RoomUpdate::Message { .. },
            } => return step,
            WatchEvent::Closed { end } => panic!("the watch closed: {end:?}"),
            _ => received = step.seq,
        }
    }
}

/// The message's position and body.
fn message_of(step: &WatchStep) -> (u64, Vec<u8>) {
    match &step.event {
        WatchEvent::Update {
            update: RoomUpdate::Message { message, .. },
        } => (
            message.position,
            message
                .message
                .as_ref()
                .expect("an opened message")
                .body
                .clone(),
        ),
        other => panic!("not a message: {other:?}"),
    }
}

/// A server where an owner's room holds "one" and "two", sealed to bob too, and a trust file
/// for bob's FFI sessions.
struct TwoMessages {
    _server: EmbeddedServer,
    bob: Arc<Identity>,
    registration: Registration,
    room: RoomId,
    /// The positions of "one" and "two".
    sent: [u64; 2],
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl TwoMessages {
    async fn start() -> Self {
        let server = EmbeddedServer::start().await;
        let (owner, owner_registration) = registered(&server).await;
        let (bob, registration) = registered(&server).await;
        let owner_session = session(&owner, &owner_registration).await;
        let room = keyed_room(&owner_session, "general", &[&bob]).await;
        let mut sent = [0; 2];
        for (position, body) in sent.iter_mut().zip(["one", "two"]) {
            let message = owner_session.send(&room, body.as_bytes(), &text()).await;
            *position = message.unwrap().position;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bob-trust.json");
        Self {
            _server: server,
            bob,
            registration,
            room,
            sent,
            _dir: dir,
            path,
        }
    }

    /// The room's cursor in bob's trust file: the position of the last message handled.
    fn cursor(&self) -> u64 {
        TrustStore::open(&self.path, &self.bob.sign_public_key())
            .unwrap()
            .last_delivered(&self.room)
    }

    /// A session of bob's on the trust file, as an app starts after a restart, and its message
    /// watch.
    async fn stream(&self) -> (Arc<unibus_ffi::Session>, Arc<WatchStream>) {
        let secret = self.bob.to_secret_bytes().to_vec();
        let identity = unibus_ffi::Identity::from_secret_bytes(secret).unwrap();
        let path = self.path.to_string_lossy().into();
        let trust = unibus_ffi::TrustStore::open(path, Arc::clone(&identity)).unwrap();
        let nats_urls = self.registration.nats_urls.clone();
        let session = unibus_ffi::Session::connect(identity, nats_urls, None, Some(trust))
            .await
            .unwrap();
        let stream = session.watch_stream(true).await.unwrap();
        (session, stream)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_the_caller_did_not_get_is_handed_out_again_and_the_watch_does_not_advance() {
    let story = TwoMessages::start().await;
    let sent = story.sent;
    let (bob_session, stream) = story.stream().await;

    let first = message_step(&stream, 0).await;
    assert_eq!(message_of(&first), (sent[0], b"one".to_vec()));
    // The caller did not get it (a cancelled call): it asks with the number before it, and
    // gets the same step, not "two"; "one" is not handled, so its cursor is not written.
    let again = step_after(&stream, first.seq - 1).await.unwrap();
    assert_eq!(again, first);
    assert!(story.cursor() < sent[0], "the watch did not advance");
    // A number past the last step handed out is refused and changes nothing.
    let refused = step_after(&stream, first.seq + 1).await.unwrap_err();
    assert!(
        matches!(refused, SessionError::InvalidArgument { ref reason, .. } if reason.contains("past the last step")),
        "{refused:?}"
    );
    assert_eq!(step_after(&stream, first.seq - 1).await.unwrap(), first);

    // Received: the next call takes "two", numbered one more.
    let second = step_after(&stream, first.seq).await.unwrap();
    assert_eq!(second.seq, first.seq + 1);
    assert_eq!(message_of(&second), (sent[1], b"two".to_vec()));
    // Asking past "two" says it is handled: its cursor is written while the call waits.
    let waiting = tokio::spawn({
        let stream = Arc::clone(&stream);
        async move { stream.next(second.seq).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while story.cursor() != sent[1] {
        assert!(
            Instant::now() < deadline,
            "the cursor of \"two\" was not written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Cancelled: the waiting call gets the close as the next step, and it stays.
    stream.cancel(second.seq).unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiting call ends")
        .unwrap()
        .unwrap();
    let expected = WatchStep {
        seq: second.seq + 1,
        event: WatchEvent::Closed {
            end: WatchEnd::Cancelled,
        },
    };
    assert_eq!(closed, expected);
    assert_eq!(step_after(&stream, closed.seq).await.unwrap(), expected);
    assert_eq!(step_after(&stream, second.seq).await.unwrap(), expected);
    bob_session.close_session().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_stopped_before_the_app_got_its_last_step_leaves_that_message_to_the_next_watch() {
    let story = TwoMessages::start().await;
    let sent = story.sent;

    // "one" is handed out but the app's code never gets it (a wait given up as it finished),
    // and the app stops with the number before it ("wait up to 5 s, on timeout stop").
    let (bob_session, stream) = story.stream().await;
    let lost = message_step(&stream, 0).await;
    assert_eq!(message_of(&lost), (sent[0], b"one".to_vec()));
    // A number past the last step is refused and changes nothing: the step comes again.
    let refused = stream.cancel(lost.seq + 1).unwrap_err();
    assert!(
        matches!(refused, SessionError::InvalidArgument { ref reason, .. } if reason.contains("past the last step")),
        "{refused:?}"
    );
    assert_eq!(step_after(&stream, lost.seq - 1).await.unwrap(), lost);
    stream.cancel(lost.seq - 1).unwrap();
    assert!(
        story.cursor() < sent[0],
        "\"one\" does not count as handled"
    );
    drop(stream);
    assert!(
        story.cursor() < sent[0],
        "not when the stream is destroyed either"
    );
    bob_session.close_session().await;

    // After a restart "one" comes again, at its same position. This time the app gets it and
    // stops with its number: it counts as handled.
    let (bob_session, stream) = story.stream().await;
    let got = message_step(&stream, 0).await;
    assert_eq!(message_of(&got), (sent[0], b"one".to_vec()));
    stream.cancel(got.seq).unwrap();
    assert_eq!(story.cursor(), sent[0]);
    // Stopped: the close comes once the app has the last step, and a later cancel changes
    // nothing.
    let closed = step_after(&stream, got.seq).await.unwrap();
    assert_eq!(
        closed.event,
        WatchEvent::Closed {
            end: WatchEnd::Cancelled
        }
    );
    stream.cancel(0).unwrap();
    drop(stream);
    assert_eq!(story.cursor(), sent[0]);
    bob_session.close_session().await;

    // So the next watch starts with "two"; destroyed without a cancel after handing it out,
    // the stream cannot know the app got it: it comes again.
    let (bob_session, stream) = story.stream().await;
    let handed = message_step(&stream, 0).await;
    assert_eq!(message_of(&handed), (sent[1], b"two".to_vec()));
    drop(stream);
    assert_eq!(story.cursor(), sent[0]);
    let stream = bob_session.watch_stream(true).await.unwrap();
    assert_eq!(
        message_of(&message_step(&stream, 0).await),
        (sent[1], b"two".to_vec())
    );
    bob_session.close_session().await;
}
