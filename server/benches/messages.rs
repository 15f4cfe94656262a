//! Messages on the bus, each figure beside its floor from the same run:
//!
//! - `send` of a 1 KiB message by one sender, straight to the stream (seal, JetStream publish
//!   and acknowledgement: a session that logged in as a member of the room), and through
//!   membershipd (seal, request, relay checks, publish, acknowledgement, reply: a session
//!   that logged in before it joined), beside a raw JetStream publish of the same envelope
//!   bytes, with its `Nats-Msg-Id`, acknowledged, on a stream of the same settings;
//! - 100 senders into one room at once, each on its own connection (logged in as members, so
//!   sending straight to the stream), beside 100 raw publishers;
//! - catch-up: 10,000 stored messages of one room paged (`messages`, pages of 1,000) and opened
//!   by one member, beside a raw ordered-consumer fetch of the same 10,000 envelopes, and that
//!   fetch plus opening each envelope in this process (the network floor and the crypto floor
//!   together);
//! - fan-out: from `send` to each of N live members holding the decrypted message (default
//!   1,000; `UNIBUS_FANOUT_MEMBERS`), p50 and p99 over members and messages, beside a raw core
//!   NATS publish of the same bytes to N subscribers.
//!
//! ```text
//! cargo bench -p unibus-server --bench messages
//! UNIBUS_MESSAGES_SETUPS=sqlite,kv3 UNIBUS_FANOUT_MEMBERS=200 cargo bench -p unibus-server --bench messages
//! ```
//!
//! The cluster is real nats-server processes on 127.0.0.1 (SQLite with 1 node, then KV R1 on 1
//! node, then KV R3 on 3 nodes), with membershipd's callout, control plane, message stream and
//! fan-out in this process, as `membershipd serve` runs them. Members in the fan-out row are
//! plain NATS connections, logged in as members, that subscribe to the room's live copies and
//! open each envelope themselves (what the SDK's watch does before it hands a message to the
//! app, without its cursor writes). Client, server and cluster share this machine's cores.

#[path = "../tests/integration/common/mod.rs"]
mod common;
mod timing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::StreamMessage;
use futures::StreamExt;
use unibus::client::{Page, Session, SessionOptions};
use unibus::envelope::{ContentType, Envelope, EpochKey};
use unibus::manifest::MemberPart;
use unibus::protocol::control::{read_reply, Request};
use unibus::protocol::messages::{
    live_subject, member_live_subject, ListenReply, ListenRequest, LiveMessage, PREVIOUS_HEADER,
};
use unibus::{Identity, RoomId};
use unibus_server::auth::setup::AuthSetup;
use unibus_server::control::ControlPlane;
use unibus_server::messages::stream::stream_config;
use unibus_server::messages::StreamSettings;
use unibus_server::store::{CachedStore, Store};

use timing::{fmt, Timings};

const SAMPLES: usize = 1000;
const BODY: usize = 1024;
const SENDERS: usize = 100;
const CATCH_UP: usize = 10_000;
const PAGE: u32 = 1000;
const FANOUT_MESSAGES: usize = 20;
/// How long each throughput figure is counted for.
const WINDOW: Duration = Duration::from_secs(3);

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Kv { nodes: usize },
}

fn row(setup: &str, op: &str, ours: &Timings, floor_name: &str, floor: &Timings) {
    println!(
        "| {setup} | {op} | {} / {} | {floor_name} {} / {} | {:.2}x |",
        fmt(ours.pct(0.5)),
        fmt(ours.pct(0.99)),
        fmt(floor.pct(0.5)),
        fmt(floor.pct(0.99)),
        ours.ratio(floor),
    );
}

/// The raw floor's stream: the message stream's settings under another name and subjects, in
/// the service's account.
async fn raw_stream(service: &async_nats::Client, nodes: usize) -> async_nats::jetstream::Context {
    let js = async_nats::jetstream::new(service.clone());
    let mut config = stream_config(StreamSettings::default(), nodes);
    config.name = "BENCH_RAW".into();
    config.subjects = vec!["bench.raw.*".into()];
    if let Some(republish) = config.republish.as_mut() {
        republish.source = "bench.raw.>".into();
        republish.destination = "bench.rawlive.>".into();
    }
    let _ = js.delete_stream("BENCH_RAW").await;
    js.create_stream(config).await.unwrap();
    js
}

/// How many `send` requests the control plane has answered, from its service statistics.
async fn relayed_sends(control: &async_nats::Client) -> u64 {
    let stats = control
        .request("$SRV.STATS.unibus-control-plane", "".into())
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    stats["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == "send")
        .filter_map(|e| e["num_requests"].as_u64())
        .sum()
}

/// Whether `client`'s login may subscribe to `room`'s live copies, as nats-server says.
async fn live_granted(client: &async_nats::Client, room: &RoomId) -> bool {
    let info = client
        .request("$SYS.REQ.USER.INFO", "".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    let subject = live_subject(room);
    info["data"]["permissions"]["subscribe"]["allow"]
        .as_array()
        .is_some_and(|allowed| allowed.iter().any(|s| s.as_str() == Some(subject.as_str())))
}

/// Publishes `payload` on the raw stream with a fresh `Nats-Msg-Id` and waits for the ack.
async fn raw_publish(js: &async_nats::jetstream::Context, payload: &[u8], n: usize) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("raw.{n}").as_str());
    js.publish_with_headers("bench.raw.room", headers, payload.to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Rekeys `room`, again after a transient refusal: right after a burst of sends the cluster may
/// still be busy, and a rekey then may meet `unavailable`.
async fn rekey(session: &Session, room: &RoomId) {
    for attempt in 1.. {
        match session.rekey(room).await {
            Ok(_) => return,
            Err(e) if e.is_transient() && attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => panic!("rekey of {room}: {e}"),
        }
    }
}

async fn bench(backend: Backend, fanout_members: usize) {
    let (name, nodes) = match backend {
        Backend::Sqlite => ("SQLite, 1 node".to_string(), 1),
        Backend::Kv { nodes } => (format!("KV R{nodes}, {nodes} node(s)"), nodes),
    };
    let setup = AuthSetup::generate().unwrap();
    let cluster = common::cluster_with_auth(&setup, nodes).await;
    let service = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
        .connect(cluster.server_addrs())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kind = match backend {
        Backend::Sqlite => common::StoreKind::Sqlite,
        Backend::Kv { .. } => common::StoreKind::Kv,
    };
    let raw_store = common::open_store(kind, nodes, &cluster, &setup, dir.path()).await;
    let cache = CachedStore::new(raw_store);
    cache.warm(Duration::from_secs(10)).await.unwrap();
    let store: Arc<dyn Store> = cache;
    let _callout = common::start_callout(&cluster, &setup, Arc::clone(&store)).await;
    let control = common::connect_control(&cluster, &setup).await;
    let size = common::start_messages(&cluster, &setup, &control).await;
    tokio::spawn(Arc::new(ControlPlane::new(Arc::clone(&store), control.clone())).run());
    common::wait_for_control_plane(&cluster, &*store).await;
    let urls: Vec<String> = (0..nodes).map(|i| cluster.client_url(i)).collect();
    let raw = raw_stream(&service, size).await;

    let owner = Arc::new(common::register(&*store).await);
    let connect =
        |who: &Arc<Identity>| Session::connect(Arc::clone(who), &urls, SessionOptions::default());
    let owner_session = connect(&owner).await.unwrap();
    let room = RoomId::new("bench").unwrap();
    owner_session.create_room(&room).await.unwrap();
    rekey(&owner_session, &room).await;
    let text = ContentType::new("text/plain").unwrap();
    let body = vec![0x42u8; BODY];

    // One sender: `send` and the raw publish of the same envelope by turns.
    let (envelope, owner_key) = {
        let part = store
            .member_part(&room, &owner.sign_public_key(), None)
            .await
            .unwrap()
            .part;
        let part = MemberPart::from_bytes(&part).unwrap();
        let key = EpochKey::open(&part, &owner, &room, 1, &owner.sign_public_key()).unwrap();
        let envelope = Envelope::seal(&owner, &key, &text, &body, 0)
            .unwrap()
            .to_bytes();
        (envelope, key)
    };
    // The owner's session logged in before the room existed: its login has no grant for it,
    // and it sends through membershipd. A session that logs in now, as a member, sends
    // straight to the stream (protocol §15.2).
    let sender_session = connect(&owner).await.unwrap();
    for (op, session, first) in [
        (
            "send 1 KiB, one sender (seal, publish straight to the stream, ack)",
            &sender_session,
            0,
        ),
        (
            "send 1 KiB, one sender whose login predates its room (seal, relay, publish, ack)",
            &owner_session,
            10_000,
        ),
    ] {
        for i in 0..50 {
            session.send(&room, &body, &text).await.unwrap();
            raw_publish(&raw, &envelope, first + i).await;
        }
        let (mut ours, mut floor) = (Vec::new(), Vec::new());
        for i in 0..SAMPLES {
            let start = Instant::now();
            session.send(&room, &body, &text).await.unwrap();
            ours.push(start.elapsed());
            let start = Instant::now();
            raw_publish(&raw, &envelope, first + 100 + i).await;
            floor.push(start.elapsed());
        }
        row(
            &name,
            op,
            &Timings(ours),
            "raw JetStream publish + ack of the same envelope",
            &Timings(floor),
        );
    }
    sender_session.close().await;

    // Many senders into one room at once.
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let who = Arc::new(common::register(&*store).await);
        owner_session
            .add_member(&room, &who.sign_public_key())
            .await
            .unwrap();
        senders.push(who);
    }
    rekey(&owner_session, &room).await;
    let mut sessions = Vec::new();
    for who in &senders {
        sessions.push(Arc::new(connect(who).await.unwrap()));
    }
    let relayed_before = relayed_sends(&control).await;
    let mut ours_sent = 0;
    let ours_rate = {
        let deadline = Instant::now() + WINDOW;
        let tasks: Vec<_> = sessions
            .iter()
            .map(|session| {
                let (session, room, text, body) = (
                    Arc::clone(session),
                    room.clone(),
                    text.clone(),
                    body.clone(),
                );
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    while Instant::now() < deadline {
                        session.send(&room, &body, &text).await.unwrap();
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        for task in tasks {
            ours_sent += task.await.unwrap();
        }
        ours_sent as f64 / WINDOW.as_secs_f64()
    };
    let relayed = relayed_sends(&control).await - relayed_before;
    let mut publishers = Vec::new();
    for _ in 0..SENDERS {
        let client = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
            .connect(cluster.server_addrs())
            .await
            .unwrap();
        publishers.push(async_nats::jetstream::new(client));
    }
    // The floor, then the floor with each message sealed in this process before its publish
    // (the crypto floor beside the network floor, as for the catch-up).
    let mut first = 0;
    let mut rates = Vec::new();
    for sealing in [None, Some((Arc::clone(&owner), owner_key.clone()))] {
        let deadline = Instant::now() + WINDOW;
        let tasks: Vec<_> = publishers
            .iter()
            .enumerate()
            .map(|(p, js)| {
                let (js, envelope, sealing) = (js.clone(), envelope.clone(), sealing.clone());
                let (text, body) = (text.clone(), body.clone());
                let first = first + 1_000_000 * (p + 1);
                tokio::spawn(async move {
                    let mut sent = 0usize;
                    while Instant::now() < deadline {
                        let bytes = match &sealing {
                            None => envelope.clone(),
                            Some((who, key)) => Envelope::seal(who, key, &text, &body, 0)
                                .unwrap()
                                .to_bytes(),
                        };
                        raw_publish(&js, &bytes, first + sent).await;
                        sent += 1;
                    }
                    sent as u64
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        rates.push(total as f64 / WINDOW.as_secs_f64());
        first += 500_000;
    }
    let (floor_rate, sealed_rate) = (rates[0], rates[1]);
    println!(
        "| {name} | send 1 KiB, {SENDERS} senders into one room at once ({relayed} of {ours_sent} through the relay) | {ours_rate:.0} messages/s | raw JetStream publish + ack, {SENDERS} publishers: {floor_rate:.0}/s; sealing each in-process first: {sealed_rate:.0}/s (x{:.2}) | {:.2}x |",
        floor_rate / sealed_rate,
        floor_rate / ours_rate
    );
    for session in &sessions {
        session.close().await;
    }
    // Catch-up: a room of CATCH_UP messages, read by a member from the start.
    let catch_room = RoomId::new("catchup").unwrap();
    owner_session.create_room(&catch_room).await.unwrap();
    let reader = Arc::new(common::register(&*store).await);
    owner_session
        .add_member(&catch_room, &reader.sign_public_key())
        .await
        .unwrap();
    rekey(&owner_session, &catch_room).await;
    let mut in_flight = Vec::new();
    for _ in 0..CATCH_UP {
        in_flight.push(owner_session.send(&catch_room, &body, &text));
        if in_flight.len() == 64 {
            for sent in futures::future::join_all(in_flight.drain(..)).await {
                sent.unwrap();
            }
        }
    }
    for sent in futures::future::join_all(in_flight).await {
        sent.unwrap();
    }
    let reader_session = connect(&reader).await.unwrap();
    // The first read fetches and opens the epoch's key; it is not timed.
    reader_session
        .messages(
            &catch_room,
            Page::After {
                position: 0,
                limit: 1,
            },
        )
        .await
        .unwrap();
    let start = Instant::now();
    let (mut position, mut opened) = (0, 0);
    loop {
        let page = reader_session
            .messages(
                &catch_room,
                Page::After {
                    position,
                    limit: PAGE,
                },
            )
            .await
            .unwrap();
        for message in &page.messages {
            assert!(message.outcome.is_ok());
            opened += 1;
            position = message.position;
        }
        if !page.more {
            break;
        }
    }
    let ours_catch_up = start.elapsed();
    assert_eq!(opened, CATCH_UP);
    // The floor: as many envelopes of the same size, stored in the raw stream and read back
    // with an ordered consumer (users and the control plane may create no consumers on the
    // message stream), then opened in this process.
    let raw_subject = "bench.raw.catchup";
    let mut acks = Vec::new();
    for n in 0..CATCH_UP {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("catchup.{n}").as_str());
        acks.push(
            raw.publish_with_headers(raw_subject, headers, envelope.clone().into())
                .await
                .unwrap(),
        );
        if acks.len() == 256 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let stream = raw.get_stream("BENCH_RAW").await.unwrap();
    let start = Instant::now();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: raw_subject.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut fetched = Vec::with_capacity(CATCH_UP);
    while fetched.len() < CATCH_UP {
        fetched.push(messages.next().await.unwrap().unwrap().payload.clone());
    }
    let raw_fetch = start.elapsed();
    let start = Instant::now();
    for payload in &fetched {
        Envelope::from_bytes(payload)
            .unwrap()
            .open(&owner_key)
            .unwrap();
    }
    let crypto = start.elapsed();
    println!(
        "| {name} | catch-up: {CATCH_UP} messages paged ({PAGE} a page) and opened | {} | raw ordered fetch {} (x{:.2}); fetch + opening in-process {} | {:.2}x |",
        fmt(ours_catch_up),
        fmt(raw_fetch),
        ours_catch_up.as_secs_f64() / raw_fetch.as_secs_f64(),
        fmt(raw_fetch + crypto),
        ours_catch_up.as_secs_f64() / (raw_fetch + crypto).as_secs_f64(),
    );
    reader_session.close().await;

    // Fan-out: a room of `fanout_members` live members.
    let fan_room = RoomId::new("fanout").unwrap();
    owner_session.create_room(&fan_room).await.unwrap();
    let mut members = Vec::new();
    for _ in 0..fanout_members {
        let who = common::register(&*store).await;
        owner_session
            .add_member(&fan_room, &who.sign_public_key())
            .await
            .unwrap();
        members.push(who);
    }
    rekey(&owner_session, &fan_room).await;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut clients = Vec::new();
    let mut leased = 0;
    for who in members {
        let part = store
            .member_part(&fan_room, &who.sign_public_key(), None)
            .await
            .unwrap()
            .part;
        let part = MemberPart::from_bytes(&part).unwrap();
        let key = EpochKey::open(&part, &who, &fan_room, 1, &owner.sign_public_key()).unwrap();
        let (client, _) = common::login(cluster.server_addrs(), &who).await.unwrap();
        // Logged in as a member, its login may subscribe to the room's live copies; one whose
        // grants its login could not be given (protocol §11) leases them, as the SDK does.
        let direct = live_granted(&client, &fan_room).await;
        let mut live = if direct {
            client.subscribe(live_subject(&fan_room)).await.unwrap()
        } else {
            leased += 1;
            let copies = client
                .subscribe(member_live_subject(&who.sign_public_key()))
                .await
                .unwrap();
            let request = ListenRequest {
                rooms: vec![fan_room.clone()],
                instance: None,
            };
            let reply = client
                .request(
                    request.subject(&who.sign_public_key()),
                    serde_json::to_vec(&request).unwrap().into(),
                )
                .await
                .unwrap();
            let reply: ListenReply = read_reply(&reply.payload).unwrap().unwrap();
            assert_eq!(reply.rooms.as_slice(), std::slice::from_ref(&fan_room));
            copies
        };
        client.flush().await.unwrap();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(copy) = live.next().await {
                let live = if direct {
                    let previous = copy
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(PREVIOUS_HEADER))
                        .map(|v| v.as_str().to_owned());
                    let stored = StreamMessage::try_from(copy).unwrap();
                    LiveMessage::republished(
                        stored.sequence,
                        previous.as_deref(),
                        0,
                        &stored.payload,
                    )
                    .unwrap()
                } else {
                    LiveMessage::from_bytes(&copy.payload).unwrap()
                };
                Envelope::from_bytes(&live.envelope)
                    .unwrap()
                    .open(&key)
                    .unwrap();
                let _ = done.send((seen, Instant::now()));
                seen += 1;
            }
        });
        clients.push(client);
    }
    // One message untimed: once every member holds this one, everything before is out of the
    // way.
    owner_session.send(&fan_room, &body, &text).await.unwrap();
    for _ in 0..fanout_members {
        assert_eq!(done_rx.recv().await.unwrap().0, 0);
    }
    let mut ours = Vec::new();
    for i in 1..=FANOUT_MESSAGES {
        let start = Instant::now();
        owner_session.send(&fan_room, &body, &text).await.unwrap();
        for _ in 0..fanout_members {
            let (seen, at) = done_rx.recv().await.unwrap();
            assert_eq!(seen, i);
            ours.push(at - start);
        }
    }
    // The floor: one core NATS publish of the same bytes to as many subscribers.
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut raw_clients = Vec::new();
    for _ in 0..fanout_members {
        let client = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
            .connect(cluster.server_addrs())
            .await
            .unwrap();
        let mut subscription = client.subscribe("bench.fanout").await.unwrap();
        client.flush().await.unwrap();
        let done = raw_tx.clone();
        tokio::spawn(async move {
            while subscription.next().await.is_some() {
                let _ = done.send(Instant::now());
            }
        });
        raw_clients.push(client);
    }
    let mut floor = Vec::new();
    for _ in 0..FANOUT_MESSAGES {
        let start = Instant::now();
        service
            .publish("bench.fanout", envelope.clone().into())
            .await
            .unwrap();
        service.flush().await.unwrap();
        for _ in 0..fanout_members {
            floor.push(raw_rx.recv().await.unwrap() - start);
        }
    }
    row(
        &name,
        &format!("fan-out: send to each of {fanout_members} live members holding it decrypted ({} straight from the stream, {leased} leased)", fanout_members - leased),
        &Timings(ours),
        &format!("raw core NATS publish to {fanout_members} subscribers"),
        &Timings(floor),
    );
    owner_session.close().await;
}

fn main() {
    let fanout_members = std::env::var("UNIBUS_FANOUT_MEMBERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let runtime = timing::runtime();
    println!("| setup | operation | unibus | floor | ratio |");
    println!("|---|---|---|---|---|");
    // `UNIBUS_MESSAGES_SETUPS`: which of `sqlite`, `kv1` and `kv3` to run (all by default).
    let setups = std::env::var("UNIBUS_MESSAGES_SETUPS").unwrap_or_default();
    let wanted = |name: &str| setups.is_empty() || setups.split(',').any(|s| s.trim() == name);
    for (name, backend) in [
        ("sqlite", Backend::Sqlite),
        ("kv1", Backend::Kv { nodes: 1 }),
        ("kv3", Backend::Kv { nodes: 3 }),
    ] {
        if wanted(name) {
            runtime.block_on(bench(backend, fanout_members));
        }
    }
}
