//! The client SDK over the network, each figure beside its floor from the same run:
//!
//! - `is_member` and `room_key` through the control plane (request, membershipd, store,
//!   reply), against the raw request/reply hop and on KV a raw async-nats KV get of the same
//!   record from the same bucket. `room_key` twice: for an epoch the session opened before
//!   (it does not verify and open the same part again), and as the first fetch after each rekey
//!   (the member-part verification and HPKE open included), the latter also beside the raw hop
//!   timed right after a rekey, by turns with it; and its client work alone;
//! - 200 users calling the control plane at once, against 200 raw clients' request/reply rate;
//! - a rekey of a 1,000-member room: the sealing CPU against raw HPKE seals of the same key to
//!   the same members, and the whole rekey (members, epoch, seal, sign, upload, store);
//! - a fresh identity's time from `register` to its first opened room key.
//!
//! ```text
//! cargo bench -p unibus-server --bench client
//! ```
//!
//! The cluster is real nats-server processes on 127.0.0.1: SQLite (the embedded default) with 1
//! node, then KV with 1 node and R1 buckets, then 3 nodes and R3, with membershipd's auth
//! callout, control plane and HTTP API in this process. Every call is also shown beside the
//! request/reply hop alone (a raw request to a responder that answers at once), and on KV beside
//! raw KV gets. `is_member`, `room_key` for an epoch opened before and the hop are timed by
//! turns, so that each sees the machine at the same moments. Client, server and cluster share
//! this machine's cores.

#[path = "../tests/integration/common/mod.rs"]
mod common;
mod timing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hpke::{Deserializable, OpModeS};
use unibus::client::{register, RegisterOptions, Session, SessionOptions};
use unibus::manifest::{MemberPart, Recipient, SignedManifest};
use unibus::sealing::{RoomKey, SealBinding};
use unibus::{Identity, InviteLink, RoomId};
use unibus_server::auth::setup::AuthSetup;
use unibus_server::control::ControlPlane;
use unibus_server::http::{AppState, RateLimiter};
use unibus_server::store::{CachedStore, NewInvite, Store};

use timing::{fmt, time_each, Timings};

const SAMPLES: usize = 2000;
const REKEY_MEMBERS: usize = 1000;
const REKEY_ROUNDS: usize = 5;
const FRESH_IDENTITIES: usize = 30;
/// Rekeys followed by the member's first fetch of the new epoch (and as many followed by a
/// raw hop).
const FIRST_FETCHES: usize = 100;
/// Users calling the control plane at once, each on its own connection.
const CONCURRENT_USERS: usize = 200;
/// How long each throughput figure is counted for.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(3);

fn row(setup: &str, op: &str, ours: &Timings, floor_name: &str, floor: &Timings) {
    let ratio = ours.ratio(floor);
    println!(
        "| {setup} | {op} | {} / {} | {floor_name} {} / {} | {ratio:.2}x |",
        fmt(ours.pct(0.5)),
        fmt(ours.pct(0.99)),
        fmt(floor.pct(0.5)),
        fmt(floor.pct(0.99)),
    );
}

type Kem = hpke::kem::X25519HkdfSha256;

/// What raw HPKE needs to seal to each member, prepared outside the clock: the parsed x25519
/// key and the `info` binding of protocol §7.2.
fn raw_inputs(
    room: &RoomId,
    epoch: u64,
    rekeyer: &Identity,
    members: &[Recipient],
) -> Vec<(<Kem as hpke::Kem>::PublicKey, Vec<u8>)> {
    let rekeyer_key = rekeyer.sign_public_key();
    members
        .iter()
        .map(|member| {
            let info = SealBinding {
                room,
                epoch,
                recipient: &member.kex,
                rekeyer: &rekeyer_key,
            }
            .info();
            let public = <Kem as hpke::Kem>::PublicKey::from_bytes(member.kex.as_bytes()).unwrap();
            (public, info)
        })
        .collect()
}

/// Raw HPKE seals (RFC 9180 base mode, the suite of protocol §7) of one key to every member:
/// the floor of a rekey's sealing.
fn raw_seals(key: &RoomKey, inputs: &[(<Kem as hpke::Kem>::PublicKey, Vec<u8>)]) {
    for (public, info) in inputs {
        std::hint::black_box(
            hpke::single_shot_seal::<hpke::aead::ChaCha20Poly1305, hpke::kdf::HkdfSha256, Kem>(
                &OpModeS::Base,
                public,
                info,
                key.expose_secret(),
                b"",
            )
            .unwrap(),
        );
    }
}

/// Where membershipd keeps its state in a run.
#[derive(Clone, Copy)]
enum Backend {
    /// SQLite, the embedded default, with a 1-node cluster.
    Sqlite,
    /// JetStream KV with `nodes` replicas on `nodes` nodes.
    Kv { nodes: usize },
}

async fn bench(backend: Backend) {
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
    // As `membershipd serve` runs it: the authorization cache in front, warmed.
    let cache = CachedStore::new(raw_store);
    cache.warm(Duration::from_secs(10)).await.unwrap();
    assert!(cache.is_fresh(), "the cache's change feed caught up");
    let store: Arc<dyn Store> = cache;
    let _callout = common::start_callout(&cluster, &setup, Arc::clone(&store)).await;
    // The control plane's own connection, in the users' account, as `membershipd serve` makes.
    let control = common::connect_control(&cluster, &setup).await;
    tokio::spawn(Arc::new(ControlPlane::new(Arc::clone(&store), control.clone())).run());
    let urls: Vec<String> = (0..nodes).map(|i| cluster.client_url(i)).collect();

    // The HTTP API, for registration.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        nats_urls: urls.clone(),
        register_limiter: RateLimiter::new(1e9, u32::MAX),
        admin_limiter: RateLimiter::new(1e9, u32::MAX),
        status_limiter: RateLimiter::new(1e9, u32::MAX),
        public_url: http.clone(),
        nats: None,
        link_pages: Default::default(),
    });
    tokio::spawn(unibus_server::http::serve(
        listener,
        state,
        Default::default(),
        std::future::pending(),
    ));

    let owner = Arc::new(common::register(&*store).await);
    let member = Arc::new(common::register(&*store).await);
    let connect =
        |who: &Arc<Identity>| Session::connect(Arc::clone(who), &urls, SessionOptions::default());
    let owner_session = connect(&owner).await.unwrap();
    let member_session = connect(&member).await.unwrap();
    let room = RoomId::new("bench").unwrap();
    owner_session.create_room(&room).await.unwrap();
    owner_session
        .add_member(&room, &member.sign_public_key())
        .await
        .unwrap();
    owner_session.rekey(&room).await.unwrap();

    // The request/reply hop alone, on the control plane's own path (a user's request to
    // membershipd's control-plane connection): a raw request to a responder that answers at once.
    let echo_subject = format!("unibus.cp.{}.echo", member.sign_public_key());
    let mut echoes = control.subscribe(echo_subject.clone()).await.unwrap();
    let echo_task = tokio::spawn({
        let control = control.clone();
        async move {
            use futures::StreamExt;
            while let Some(message) = echoes.next().await {
                if let Some(reply) = message.reply {
                    let _ = control.publish(reply, message.payload).await;
                }
            }
        }
    });
    control.flush().await.unwrap();
    let (raw_user, _) = common::login(cluster.server_addrs(), &member)
        .await
        .unwrap();

    for _ in 0..100 {
        member_session.is_member(&room).await.unwrap();
        raw_user
            .request(echo_subject.clone(), "{}".into())
            .await
            .unwrap();
    }
    // Timed by turns with the raw hop, so that each figure and its floor see the machine at
    // the same moments (timed one after the other, they drifted apart by up to 1.5x).
    let (mut ours_member, mut ours_key, mut raw_echo) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        let start = Instant::now();
        assert!(member_session.is_member(&room).await.unwrap());
        ours_member.push(start.elapsed());
        let start = Instant::now();
        raw_user
            .request(echo_subject.clone(), "{}".into())
            .await
            .unwrap();
        raw_echo.push(start.elapsed());
        if i % 2 == 0 {
            let start = Instant::now();
            assert_eq!(member_session.room_key(&room, None).await.unwrap().epoch, 1);
            ours_key.push(start.elapsed());
        }
    }
    let (ours_member, ours_key, raw_echo) =
        (Timings(ours_member), Timings(ours_key), Timings(raw_echo));
    // The first fetch of each epoch: the session has not opened this part before, so it
    // verifies and opens it (the rekeys before each fetch are not timed). Its floor is the raw
    // hop in the same moment, right after a rekey, by turns with it: what follows a rekey finds
    // the threads of client, server and cluster busy with other work or asleep, and any call
    // then costs more than one in a loop of calls (the hop above).
    let (mut first_fetches, mut hops_after_rekey) = (Vec::new(), Vec::new());
    for i in 0..FIRST_FETCHES * 2 {
        let epoch = owner_session.rekey(&room).await.unwrap().epoch;
        let start = Instant::now();
        if i % 2 == 0 {
            assert_eq!(
                member_session.room_key(&room, None).await.unwrap().epoch,
                epoch
            );
            first_fetches.push(start.elapsed());
        } else {
            raw_user
                .request(echo_subject.clone(), "{}".into())
                .await
                .unwrap();
            hops_after_rekey.push(start.elapsed());
        }
    }
    let (first_fetches, hops_after_rekey) = (Timings(first_fetches), Timings(hops_after_rekey));
    echo_task.abort();
    // The client's own share of `room_key`, without the network: reading, verifying and
    // opening the member part it fetched.
    let part = store
        .member_part(&room, &member.sign_public_key(), None)
        .await
        .unwrap()
        .part;
    let latest = store.latest_epoch(&room).await.unwrap();
    let client_work = time_each(SAMPLES, |_| async {
        let part = MemberPart::from_bytes(&part).unwrap();
        part.open(&member, &room, latest, &owner.sign_public_key())
            .unwrap();
    })
    .await;
    let hop = "raw NATS request/reply";
    row(&name, "is_member", &ours_member, hop, &raw_echo);
    row(
        &name,
        "room_key, an epoch opened before (fetch; the same part is not opened again)",
        &ours_key,
        hop,
        &raw_echo,
    );
    row(
        &name,
        "room_key, first fetch of an epoch (fetch, verify, open)",
        &first_fetches,
        hop,
        &raw_echo,
    );
    row(
        &name,
        "room_key, first fetch of an epoch, right after the rekey",
        &first_fetches,
        "raw NATS request/reply right after a rekey",
        &hops_after_rekey,
    );
    row(
        &name,
        "room_key's client work alone (read, verify, open the part; no network)",
        &client_work,
        hop,
        &raw_echo,
    );

    if let Backend::Kv { .. } = backend {
        // Raw KV gets of the records behind the two calls, from the same leader-read buckets.
        let js = async_nats::jetstream::new(service.clone());
        let members = js.get_key_value("UNIBUS_members").await.unwrap();
        let room_keys = js.get_key_value("UNIBUS_room_keys").await.unwrap();
        let member_key = format!("{room}.{}", member.sign_public_key());
        let marker = format!("e.{room}.1");
        let digest = room_keys.get(&marker).await.unwrap().expect("epoch 1");
        let digest = String::from_utf8(digest.to_vec()).unwrap();
        // The two members' tails are in the epoch's first (and only) group.
        let tail_key = format!("k.{room}.1.{digest}.0");
        let head_key = format!("f.{room}.1.{digest}");
        let raw_member = time_each(SAMPLES, |_| async {
            assert!(members.get(&member_key).await.unwrap().is_some());
        })
        .await;
        let raw_key = time_each(SAMPLES / 2, |_| async {
            assert!(room_keys.get(&tail_key).await.unwrap().is_some());
        })
        .await;
        let raw_records = time_each(SAMPLES / 2, |_| async {
            assert!(room_keys.get(&marker).await.unwrap().is_some());
            let (tail, head) = tokio::join!(room_keys.get(&tail_key), room_keys.get(&head_key));
            assert!(tail.unwrap().is_some() && head.unwrap().is_some());
        })
        .await;
        row(&name, "is_member", &ours_member, "raw KV get", &raw_member);
        row(
            &name,
            "room_key, an epoch opened before",
            &ours_key,
            "raw KV get",
            &raw_key,
        );
        row(
            &name,
            "room_key, an epoch opened before",
            &ours_key,
            "raw KV gets of its records (marker, then tail group and head)",
            &raw_records,
        );
    }

    throughput(
        &name,
        &store,
        &urls,
        &control,
        &cluster,
        &owner_session,
        &room,
    )
    .await;

    // A 1,000-member room: members straight into the store, then rekeys through the SDK.
    let big = RoomId::new("big").unwrap();
    owner_session.create_room(&big).await.unwrap();
    let mut recipients = vec![Recipient::of(&owner)];
    for _ in 1..REKEY_MEMBERS {
        let id = common::register(&*store).await;
        store.add_member(&big, &id.sign_public_key()).await.unwrap();
        recipients.push(Recipient::of(&id));
    }
    let key = RoomKey::generate().unwrap();
    let inputs = raw_inputs(&big, 1, &owner, &recipients);
    let mut seal_ours = Vec::new();
    let mut seal_raw = Vec::new();
    for _ in 0..REKEY_ROUNDS {
        let start = Instant::now();
        std::hint::black_box(SignedManifest::rekey(&owner, &big, 1, 0, &key, &recipients).unwrap());
        seal_ours.push(start.elapsed());
        let start = Instant::now();
        raw_seals(&key, &inputs);
        seal_raw.push(start.elapsed());
    }
    row(
        &name,
        "rekey 1,000: seal + sign (CPU)",
        &Timings(seal_ours),
        "1,000 raw HPKE seals",
        &Timings(seal_raw.clone()),
    );
    let whole = time_each(REKEY_ROUNDS, |_| async {
        owner_session.rekey(&big).await.unwrap();
    })
    .await;
    row(
        &name,
        "rekey 1,000: whole (fetch, seal, upload, store)",
        &whole,
        "1,000 raw HPKE seals",
        &Timings(seal_raw),
    );

    // A fresh identity: register over HTTP, log in, get added and rekeyed for, open its key.
    let mut phases = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut total = Vec::new();
    let first = RoomId::new("first").unwrap();
    owner_session.create_room(&first).await.unwrap();
    for _ in 0..FRESH_IDENTITIES {
        let (token, _) = store.create_invite(NewInvite::default()).await.unwrap();
        let link = InviteLink::new(&http, token).unwrap();
        let me = Arc::new(Identity::generate().unwrap());
        let start = Instant::now();
        let registration = register(&link, &me, &RegisterOptions::default())
            .await
            .unwrap();
        let registered = Instant::now();
        let session = Session::connect(
            Arc::clone(&me),
            &registration.nats_urls,
            SessionOptions::default(),
        )
        .await
        .unwrap();
        let connected = Instant::now();
        owner_session
            .add_member(&first, &me.sign_public_key())
            .await
            .unwrap();
        owner_session.rekey(&first).await.unwrap();
        let rekeyed = Instant::now();
        session.room_key(&first, None).await.unwrap();
        let opened = Instant::now();
        phases[0].push(registered - start);
        phases[1].push(connected - registered);
        phases[2].push(rekeyed - connected);
        phases[3].push(opened - rekeyed);
        total.push(opened - start);
        session.close().await;
        owner_session
            .remove_member(&first, &me.sign_public_key())
            .await
            .unwrap();
    }
    let [register_t, login_t, owner_t, open_t] = phases.map(Timings);
    println!(
        "| {name} | register to first room key | {} / {} | register {} + login {} + owner adds and rekeys {} + fetch and open {} (p50) | |",
        fmt(Timings(total.clone()).pct(0.5)),
        fmt(Timings(total).pct(0.99)),
        fmt(register_t.pct(0.5)),
        fmt(login_t.pct(0.5)),
        fmt(owner_t.pct(0.5)),
        fmt(open_t.pct(0.5)),
    );
    owner_session.close().await;
    member_session.close().await;
}

/// Control-plane throughput: `CONCURRENT_USERS` members of `room`, each with its own session,
/// call one operation in a loop for `THROUGHPUT_WINDOW`; beside it, as many raw clients logged
/// in the same way send requests to a responder that answers at once.
#[allow(clippy::too_many_arguments)]
async fn throughput(
    name: &str,
    store: &Arc<dyn Store>,
    urls: &[String],
    control: &async_nats::Client,
    cluster: &unibus_testkit::NatsCluster,
    owner: &Session,
    room: &RoomId,
) {
    let mut users = Vec::with_capacity(CONCURRENT_USERS);
    for _ in 0..CONCURRENT_USERS {
        let id = Arc::new(common::register(&**store).await);
        owner.add_member(room, &id.sign_public_key()).await.unwrap();
        users.push(id);
    }
    let sessions: Vec<Arc<Session>> = futures::future::join_all(
        users
            .iter()
            .map(|id| Session::connect(Arc::clone(id), urls, SessionOptions::default())),
    )
    .await
    .into_iter()
    .map(|session| Arc::new(session.unwrap()))
    .collect();

    // Each task runs `call` until the window closes; the rate is every completed call over it.
    async fn rate<F, Fut>(tasks: usize, call: F) -> f64
    where
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let until = Instant::now() + THROUGHPUT_WINDOW;
        let handles: Vec<_> = (0..tasks)
            .map(|i| {
                let call = call.clone();
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while Instant::now() < until {
                        call(i).await;
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut total = 0;
        for handle in handles {
            total += handle.await.unwrap();
        }
        total as f64 / THROUGHPUT_WINDOW.as_secs_f64()
    }

    let echo_subject = "unibus.cp.*.echo";
    let echoes = control.subscribe(echo_subject).await.unwrap();
    let echo_task = tokio::spawn({
        let control = control.clone();
        async move {
            use futures::StreamExt;
            let mut echoes = echoes;
            while let Some(message) = echoes.next().await {
                if let Some(reply) = message.reply {
                    let _ = control.publish(reply, message.payload).await;
                }
            }
        }
    });
    control.flush().await.unwrap();
    let mut raw = Vec::with_capacity(CONCURRENT_USERS);
    for id in &users {
        let (client, _) = common::login(cluster.server_addrs(), id).await.unwrap();
        raw.push((client, format!("unibus.cp.{}.echo", id.sign_public_key())));
    }
    let raw = Arc::new(raw);
    let floor = rate(CONCURRENT_USERS, move |i| {
        let raw = Arc::clone(&raw);
        async move {
            let (client, subject) = &raw[i];
            client.request(subject.clone(), "{}".into()).await.unwrap();
        }
    })
    .await;
    echo_task.abort();

    let sessions = Arc::new(sessions);
    let room = room.clone();
    let member = {
        let (sessions, room) = (Arc::clone(&sessions), room.clone());
        rate(CONCURRENT_USERS, move |i| {
            let (sessions, room) = (Arc::clone(&sessions), room.clone());
            async move { assert!(sessions[i].is_member(&room).await.unwrap()) }
        })
        .await
    };
    let rooms = {
        let sessions = Arc::clone(&sessions);
        rate(CONCURRENT_USERS, move |i| {
            let sessions = Arc::clone(&sessions);
            async move { assert_eq!(sessions[i].my_rooms().await.unwrap().len(), 1) }
        })
        .await
    };
    let latest = owner.current_epoch(&room).await.unwrap();
    let epoch = {
        let (sessions, room) = (Arc::clone(&sessions), room.clone());
        rate(CONCURRENT_USERS, move |i| {
            let (sessions, room) = (Arc::clone(&sessions), room.clone());
            async move { assert_eq!(sessions[i].current_epoch(&room).await.unwrap(), latest) }
        })
        .await
    };
    for (op, ours) in [("member", member), ("rooms", rooms), ("epoch", epoch)] {
        println!(
            "| {name} | {op}: {CONCURRENT_USERS} users at once | {ours:.0} requests/s | raw NATS request/reply, {CONCURRENT_USERS} clients: {floor:.0}/s | {:.2}x |",
            floor / ours
        );
    }
    for session in sessions.iter() {
        session.close().await;
    }
    // Back to the two members the rows above measured.
    for id in &users {
        owner
            .remove_member(&room, &id.sign_public_key())
            .await
            .unwrap();
    }
}

fn main() {
    let runtime = timing::runtime();
    println!("| setup | operation | unibus p50 / p99 | floor p50 / p99 | p50 ratio |");
    println!("|---|---|---|---|---|");
    runtime.block_on(bench(Backend::Sqlite));
    runtime.block_on(bench(Backend::Kv { nodes: 1 }));
    runtime.block_on(bench(Backend::Kv { nodes: 3 }));
}
