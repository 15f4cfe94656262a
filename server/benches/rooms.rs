//! Rooms of any size, each figure beside its floor from the same run:
//!
//! - a rekey end to end through the SDK (members in pages, sealing on every core, signing, the
//!   upload in parts, the commit) at each size, beside as many raw HPKE seals of one key spread
//!   over the same cores;
//! - the bytes one member fetches for its key (the `key` reply: its member part), and the bytes
//!   the cluster carries for one rekey (the upload plus every member's fetch), beside what
//!   manifest format 1 carried (every member fetching the whole manifest: n² growth);
//! - `room_key` p50/p99 in the room, beside the same call in a 10-member room, the two timed
//!   by turns right after the large room's rekey;
//! - members fetching their keys at once after a rekey: fetches per second, beside the raw
//!   request/reply rate of the same number of concurrent requests.
//!
//! ```text
//! cargo bench -p unibus-server --bench rooms
//! UNIBUS_ROOM_SIZES=1000,10000 UNIBUS_ROOM_BACKENDS=sqlite cargo bench -p unibus-server --bench rooms
//! ```
//!
//! SQLite runs on a 1-node cluster, KV on 3 nodes with R3 buckets; membershipd's callout and
//! control plane run in this process, with the authorization cache in front of the store as
//! `membershipd serve` runs them. Client, server and cluster share this machine's cores.

#[path = "../tests/integration/common/mod.rs"]
mod common;
mod timing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hpke::{Deserializable, OpModeS};
use unibus::client::{RekeyProgress, Session, SessionOptions};
use unibus::manifest::{member_part_len, Recipient, ENTRY_LEN};
use unibus::sealing::{RoomKey, SealBinding};
use unibus::{Identity, RoomId};
use unibus_server::auth::setup::AuthSetup;
use unibus_server::control::ControlPlane;
use unibus_server::store::{
    now_millis, CachedStore, FeedItem, KvStore, KvStoreConfig, NewUser, Room, RoomSnapshot,
    Snapshot, SqliteStore, Store,
};
use unibus_testkit::NatsCluster;

use timing::fmt;

type Kem = hpke::kem::X25519HkdfSha256;

/// Members that fetch at once after a rekey.
const FETCHERS: usize = 1000;
/// `room_key` samples per room.
const KEY_SAMPLES: usize = 300;

fn sizes() -> Vec<usize> {
    std::env::var("UNIBUS_ROOM_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000])
}

fn backends() -> Vec<String> {
    std::env::var("UNIBUS_ROOM_BACKENDS")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| vec!["sqlite".into(), "kv".into()])
}

fn options() -> SessionOptions {
    SessionOptions {
        request_timeout: Duration::from_secs(300),
        ..SessionOptions::default()
    }
}

/// Raw HPKE seals of one key to every member, spread over the cores in as many chunks: the
/// floor of a rekey's sealing.
fn raw_seals_on_every_core(room: &RoomId, rekeyer: &Identity, members: &[Recipient]) -> Duration {
    let rekeyer_key = rekeyer.sign_public_key();
    let inputs: Vec<_> = members
        .iter()
        .map(|m| {
            let info = SealBinding {
                room,
                epoch: 1,
                recipient: &m.kex,
                rekeyer: &rekeyer_key,
            }
            .info();
            (
                <Kem as hpke::Kem>::PublicKey::from_bytes(m.kex.as_bytes()).unwrap(),
                info,
            )
        })
        .collect();
    let key = RoomKey::generate().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in inputs.chunks(inputs.len().div_ceil(cores)) {
            let key = &key;
            scope.spawn(move || {
                for (public, info) in chunk {
                    std::hint::black_box(
                        hpke::single_shot_seal::<
                            hpke::aead::ChaCha20Poly1305,
                            hpke::kdf::HkdfSha256,
                            Kem,
                        >(
                            &OpModeS::Base, public, info, key.expose_secret(), b""
                        )
                        .unwrap(),
                    );
                }
            });
        }
    });
    started.elapsed()
}

/// Puts `owner` and `members` into `store` with `room`: one snapshot import on SQLite, many
/// writes in flight on KV.
async fn populate(
    store: &Arc<dyn Store>,
    sqlite: bool,
    room: &RoomId,
    owner: &Identity,
    members: &[Identity],
) {
    let everyone: Vec<&Identity> = std::iter::once(owner).chain(members).collect();
    if sqlite {
        let mut snapshot = Snapshot {
            users: everyone.iter().map(|id| common::active_user(id)).collect(),
            rooms: vec![RoomSnapshot {
                room: Room {
                    id: room.clone(),
                    owner: owner.sign_public_key(),
                    epoch: 0,
                    created_at: now_millis(),
                },
                members: everyone.iter().map(|id| id.sign_public_key()).collect(),
                manifests: Vec::new(),
                history: Vec::new(),
            }],
            ..Snapshot::default()
        };
        snapshot.normalize();
        store.import_snapshot(&snapshot).await.unwrap();
        caught_up(store).await;
        return;
    }
    store
        .add_user(NewUser {
            sign_key: owner.sign_public_key(),
            kex_key: owner.kex_public_key(),
            admin: false,
        })
        .await
        .unwrap();
    store
        .create_room(room, &owner.sign_public_key())
        .await
        .unwrap();
    futures::stream::iter(members)
        .map(|id| {
            let store = Arc::clone(store);
            let (room, new) = (
                room.clone(),
                NewUser {
                    sign_key: id.sign_public_key(),
                    kex_key: id.kex_public_key(),
                    admin: false,
                },
            );
            async move {
                store.add_user(new).await?;
                store.add_member(&room, &id.sign_public_key()).await
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    caught_up(store).await;
}

/// Waits until the store's authorization cache has applied every change committed so far (the
/// thousands of users and memberships just written), so that timings after it are not of a
/// cache still draining its feed.
async fn caught_up(store: &Arc<dyn Store>) {
    let written = tokio::time::Instant::now();
    let mut applied = store.changes().await.unwrap();
    while let Some(item) = applied.next().await {
        if let Ok(FeedItem::CaughtUp(at)) = item {
            if at >= written {
                return;
            }
        }
    }
    panic!("the cache's feed ended");
}

struct Service {
    cluster: NatsCluster,
    /// membershipd's control-plane connection, which also answers the floor's echo requests.
    control: async_nats::Client,
    store: Arc<dyn Store>,
    urls: Vec<String>,
    sqlite: bool,
    _dir: tempfile::TempDir,
}

async fn service(backend: &str) -> Service {
    let sqlite = backend == "sqlite";
    let nodes = if sqlite { 1 } else { 3 };
    let setup = AuthSetup::generate().unwrap();
    let cluster = common::cluster_with_auth(&setup, nodes).await;
    let client = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
        .connect(cluster.server_addrs())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw: Arc<dyn Store> = if sqlite {
        Arc::new(SqliteStore::open(dir.path().join("db")).await.unwrap())
    } else {
        Arc::new(
            KvStore::open(
                client.clone(),
                KvStoreConfig {
                    replicas: 3,
                    ..KvStoreConfig::default()
                },
            )
            .await
            .unwrap(),
        )
    };
    // As `membershipd serve` runs it: the authorization cache in front, warmed.
    let cache = CachedStore::new(raw);
    cache.warm(Duration::from_secs(10)).await.unwrap();
    let store: Arc<dyn Store> = cache;
    let _callout = common::start_callout(&cluster, &setup, Arc::clone(&store)).await;
    let control = common::connect_control(&cluster, &setup).await;
    tokio::spawn(Arc::new(ControlPlane::new(Arc::clone(&store), control.clone())).run());
    control.flush().await.unwrap();
    common::wait_for_control_plane(&cluster, &*store).await;
    let urls = (0..nodes).map(|i| cluster.client_url(i)).collect();
    Service {
        cluster,
        control,
        store,
        urls,
        sqlite,
        _dir: dir,
    }
}

/// When a rekey's phases ended, from its progress reports.
#[derive(Default)]
struct Phases {
    first_sealed: Option<Instant>,
    last_sealed: Option<Instant>,
    last_uploaded: Option<Instant>,
}

impl Phases {
    fn mark(&mut self, progress: RekeyProgress) {
        let now = Instant::now();
        match progress {
            RekeyProgress::Sealed { .. } => {
                self.first_sealed.get_or_insert(now);
                self.last_sealed = Some(now);
            }
            RekeyProgress::Uploaded { .. } => self.last_uploaded = Some(now),
        }
    }

    /// The phases' lengths: fetching the members (until the first sealing report), sealing,
    /// uploading in parts (if it was), and the commit (until the rekey returned).
    fn describe(&self, started: Instant) -> String {
        let end = Instant::now();
        let sealed = self.last_sealed.unwrap_or(started);
        let uploaded = self.last_uploaded.unwrap_or(sealed);
        format!(
            "members {} · sealing {} · upload {} · commit {}",
            fmt(self.first_sealed.unwrap_or(started) - started),
            fmt(sealed - self.first_sealed.unwrap_or(started)),
            fmt(uploaded - sealed),
            fmt(end - uploaded),
        )
    }
}

/// A member's session in a rekeyed room, to time `room_key` with.
struct Fetcher {
    session: Session,
    room: RoomId,
}

impl Fetcher {
    async fn fetch(&self) {
        self.session.room_key(&self.room, None).await.unwrap();
    }
}

/// `room_key` in `big` and in `small`, one after the other `KEY_SAMPLES` times, so that both
/// are timed under the same load of the machine and the cluster: (big, small).
async fn interleaved(big: &Fetcher, small: &Fetcher) -> (timing::Timings, timing::Timings) {
    let (mut in_big, mut in_small) = (Vec::new(), Vec::new());
    for _ in 0..KEY_SAMPLES {
        for (fetcher, times) in [(big, &mut in_big), (small, &mut in_small)] {
            let start = Instant::now();
            fetcher.fetch().await;
            times.push(start.elapsed());
        }
    }
    (timing::Timings(in_big), timing::Timings(in_small))
}

/// One room of `size` members: rekey end to end, its floor, and a sampled member's session,
/// warmed by a few fetches.
async fn room(s: &Service, name: &str, size: usize) -> (Duration, Duration, Fetcher) {
    let room = RoomId::new(name).unwrap();
    let owner = Arc::new(Identity::generate().unwrap());
    let members: Vec<Identity> = (1..size).map(|_| Identity::generate().unwrap()).collect();
    populate(&s.store, s.sqlite, &room, &owner, &members).await;
    let recipients: Vec<Recipient> = std::iter::once(&*owner)
        .chain(&members)
        .map(Recipient::of)
        .collect();
    let floor = raw_seals_on_every_core(&room, &owner, &recipients);

    let session = Session::connect(Arc::clone(&owner), &s.urls, options())
        .await
        .unwrap();
    let started = Instant::now();
    let marks = Arc::new(std::sync::Mutex::new(Phases::default()));
    let observed = Arc::clone(&marks);
    session
        .rekey_with_progress(
            &room,
            Arc::new(move |progress| {
                observed.lock().unwrap().mark(progress);
                true
            }),
        )
        .await
        .unwrap();
    let rekey = started.elapsed();
    eprintln!("{name}: {}", marks.lock().unwrap().describe(started));

    let sampled = Arc::new(
        Identity::from_secret_bytes(&members[members.len() / 2].to_secret_bytes()).unwrap(),
    );
    let fetcher = Fetcher {
        session: Session::connect(sampled, &s.urls, options()).await.unwrap(),
        room,
    };
    for _ in 0..20 {
        fetcher.fetch().await;
    }
    (rekey, floor, fetcher)
}

fn main() {
    let rt = timing::runtime();
    rt.block_on(async {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        println!("Rooms of any size ({cores} cores; client, server and cluster share them)\n");
        println!("| backend | members | rekey end to end | floor: raw HPKE seals on {cores} cores | ratio | one member's key fetch | format 1 (whole manifest) | cluster bytes per rekey (upload + every fetch) | format 1 | room_key p50 / p99 | 10-member room p50 / p99 |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for backend in backends() {
            let s = service(&backend).await;
            let (_, _, ten) = room(&s, "ten", 10).await;
            for &size in &sizes() {
                let (rekey, floor, fetcher) = room(&s, &format!("room-{size}"), size).await;
                let (latency, small) = interleaved(&fetcher, &ten).await;
                let tree_depth = (usize::BITS - (size - 1).leading_zeros()) as usize;
                let part = member_part_len(9, tree_depth);
                let whole = 151 + 9 + ENTRY_LEN * size;
                // The upload travels as hex; each member then fetches its part.
                let ours_total = 2 * whole + size * part;
                let v1_total = 2 * whole + size * (2 * whole);
                println!(
                    "| {backend} | {size} | {} | {} | {:.2}x | ≤ {part} B | {whole} B (hex: {} B) | {:.1} MB | {:.1} GB | {} / {} | {} / {} |",
                    fmt(rekey),
                    fmt(floor),
                    rekey.as_secs_f64() / floor.as_secs_f64(),
                    2 * whole,
                    ours_total as f64 / 1e6,
                    v1_total as f64 / 1e9,
                    fmt(latency.pct(0.5)),
                    fmt(latency.pct(0.99)),
                    fmt(small.pct(0.5)),
                    fmt(small.pct(0.99)),
                );
            }
            burst(&s).await;
        }
    });
}

/// `FETCHERS` members of one room fetch their key at once, each from its own session; beside
/// the same number of concurrent raw requests answered at once by a responder in this process.
async fn burst(s: &Service) {
    let room = RoomId::new("burst").unwrap();
    let owner = Arc::new(Identity::generate().unwrap());
    let members: Vec<Identity> = (1..FETCHERS)
        .map(|_| Identity::generate().unwrap())
        .collect();
    populate(&s.store, s.sqlite, &room, &owner, &members).await;
    Session::connect(Arc::clone(&owner), &s.urls, options())
        .await
        .unwrap()
        .rekey(&room)
        .await
        .unwrap();
    let sessions: Vec<Session> = futures::stream::iter(&members)
        .map(|m| {
            let id = Arc::new(Identity::from_secret_bytes(&m.to_secret_bytes()).unwrap());
            Session::connect(id, &s.urls, options())
        })
        .buffer_unordered(32)
        .try_collect()
        .await
        .unwrap();
    let started = Instant::now();
    futures::future::try_join_all(sessions.iter().map(|session| session.room_key(&room, None)))
        .await
        .unwrap();
    let ours = started.elapsed();

    // The floor: as many concurrent requests from a member's connection, on the control
    // plane's own path, to a responder on membershipd's control-plane connection that answers
    // at once.
    let subject = format!("unibus.cp.{}.echo", members[0].sign_public_key());
    let mut requests = s.control.subscribe(subject.clone()).await.unwrap();
    let responder = s.control.clone();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    s.control.flush().await.unwrap();
    let (client, _) = common::login(s.cluster.server_addrs(), &members[0])
        .await
        .unwrap();
    let started = Instant::now();
    futures::future::try_join_all(
        (0..FETCHERS).map(|_| client.request(subject.clone(), "x".into())),
    )
    .await
    .unwrap();
    let floor = started.elapsed();
    let backend = if s.sqlite { "SQLite" } else { "KV R3" };
    println!(
        "\n{FETCHERS} members fetching their key at once ({backend}): {:.0} fetches/s; raw request/reply, {FETCHERS} at once: {:.0} requests/s\n",
        FETCHERS as f64 / ours.as_secs_f64(),
        FETCHERS as f64 / floor.as_secs_f64(),
    );
    for session in sessions {
        session.close().await;
    }
}
