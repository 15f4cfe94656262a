//! Store benchmarks: each operation on SQLite, KV R1 and KV R3, beside its raw floor measured
//! in the same run: a bare rusqlite transaction or query, and a raw async-nats KV operation on
//! the very same bucket.
//!
//! ```text
//! cargo bench -p unibus-server --bench store
//! ```
//!
//! Operations run one after another (latency, not throughput); the table gives p50 and p99.

use std::sync::Arc;
use std::time::Instant;

mod timing;

use bytes::Bytes;
use timing::{fmt, time_each, Timings};
use unibus::manifest::{Recipient, SignedManifest};
use unibus::sealing::RoomKey;
use unibus::{Identity, RoomId};
use unibus_server::store::{KvStore, KvStoreConfig, NewInvite, NewUser, SqliteStore, Store};
use unibus_testkit::NatsCluster;

fn row(backend: &str, op: &str, ours: &Timings, floor_name: &str, floor: &Timings) {
    println!(
        "| {backend} | {op} | {} | {} | {} | {floor_name} | {} | {} | {:.2}x |",
        ours.0.len(),
        fmt(ours.pct(0.5)),
        fmt(ours.pct(0.99)),
        fmt(floor.pct(0.5)),
        fmt(floor.pct(0.99)),
        ours.ratio(floor),
    );
}

/// The raw floors of one backend.
enum Raw {
    Sqlite(Arc<std::sync::Mutex<rusqlite::Connection>>),
    Kv(Box<async_nats::jetstream::Context>),
}

struct Fixture {
    name: &'static str,
    store: Arc<dyn Store>,
    raw: Raw,
}

const N_FAST: usize = 1000;
const N_REDEEM: usize = 300;
const N_BULK: usize = 5;
const BULK_MEMBERS: usize = 1000;

async fn bench(fx: &Fixture) {
    let store = &fx.store;
    // Seed: one user, one room with a member holding a key.
    let alice = Identity::generate().unwrap();
    store
        .add_user(NewUser {
            sign_key: alice.sign_public_key(),
            kex_key: alice.kex_public_key(),
            admin: false,
        })
        .await
        .unwrap();
    let owner = Identity::generate().unwrap();
    let room = RoomId::new(&format!("bench-{}", fx.name.replace('_', "-"))).unwrap();
    store
        .create_room(&room, &owner.sign_public_key())
        .await
        .unwrap();
    store
        .add_member(&room, &alice.sign_public_key())
        .await
        .unwrap();
    let key = RoomKey::generate().unwrap();
    let first = SignedManifest::rekey(
        &owner,
        &room,
        1,
        0,
        &key,
        &[Recipient::of(&owner), Recipient::of(&alice)],
    )
    .unwrap();
    store.put_epoch(&first).await.unwrap();

    // consume + add user
    let mut invites = Vec::new();
    for _ in 0..N_REDEEM {
        invites.push(store.create_invite(NewInvite::default()).await.unwrap().0);
    }
    let newcomers: Vec<Identity> = (0..N_REDEEM)
        .map(|_| Identity::generate().unwrap())
        .collect();
    let redeem = time_each(N_REDEEM, |i| {
        let (token, id) = (&invites[i], &newcomers[i]);
        async move {
            store
                .redeem_invite(token, &id.sign_public_key(), &id.kex_public_key())
                .await
                .unwrap();
        }
    })
    .await;

    let authorized = time_each(N_FAST, |_| async {
        assert!(store.is_authorized(&alice.sign_public_key()).await);
    })
    .await;
    let latest = time_each(N_FAST, |_| async {
        store
            .member_part(&room, &alice.sign_public_key(), None)
            .await
            .unwrap();
    })
    .await;

    // Bulk: put_epoch of a 1,000-member manifest, epochs 2..=N_BULK+1.
    let members: Vec<Recipient> = (0..BULK_MEMBERS)
        .map(|_| Recipient::of(&Identity::generate().unwrap()))
        .collect();
    let manifests: Vec<SignedManifest> = (0..N_BULK as u64)
        .map(|i| SignedManifest::rekey(&owner, &room, i + 2, i + 1, &key, &members).unwrap())
        .collect();
    let bulk = time_each(N_BULK, |i| {
        let manifest = &manifests[i];
        async move { store.put_epoch(manifest).await.unwrap() }
    })
    .await;

    match &fx.raw {
        Raw::Sqlite(conn) => {
            let conn = Arc::clone(conn);
            let tx_floor = time_each(N_REDEEM, |i| {
                let conn = Arc::clone(&conn);
                async move {
                    tokio::task::spawn_blocking(move || {
                        let mut c = conn.lock().unwrap();
                        let tx = c.transaction().unwrap();
                        tx.execute(
                            "INSERT INTO t (k, v) VALUES (?1, ?2)",
                            rusqlite::params![format!("r{i}"), "v"],
                        )
                        .unwrap();
                        tx.commit().unwrap();
                    })
                    .await
                    .unwrap()
                }
            })
            .await;
            let select_floor = time_each(N_FAST, |_| {
                let conn = Arc::clone(&conn);
                async move {
                    tokio::task::spawn_blocking(move || {
                        let c = conn.lock().unwrap();
                        let _: String = c
                            .query_row("SELECT v FROM t WHERE k = 'r0'", [], |r| r.get(0))
                            .unwrap();
                    })
                    .await
                    .unwrap()
                }
            })
            .await;
            let bulk_floor = time_each(N_BULK, |e| {
                let conn = Arc::clone(&conn);
                async move {
                    tokio::task::spawn_blocking(move || {
                        let mut c = conn.lock().unwrap();
                        let tx = c.transaction().unwrap();
                        for m in 0..BULK_MEMBERS {
                            tx.execute(
                                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                                rusqlite::params![format!("b{e}.{m}"), "x".repeat(81)],
                            )
                            .unwrap();
                        }
                        tx.commit().unwrap();
                    })
                    .await
                    .unwrap()
                }
            })
            .await;
            row(
                fx.name,
                "redeem invite (consume + add user)",
                &redeem,
                "rusqlite 1-row tx",
                &tx_floor,
            );
            row(
                fx.name,
                "is_authorized",
                &authorized,
                "rusqlite select by key",
                &select_floor,
            );
            row(
                fx.name,
                "latest member part of a member",
                &latest,
                "rusqlite select by key",
                &select_floor,
            );
            row(
                fx.name,
                "put epoch, 1,000 members",
                &bulk,
                "rusqlite 1,000-row tx",
                &bulk_floor,
            );
        }
        Raw::Kv(js) => {
            let kv = js.get_key_value("UNIBUS_users").await.unwrap();
            let key = alice.sign_public_key().to_hex();
            let get_floor = time_each(N_FAST, |_| async {
                kv.get(&key).await.unwrap().unwrap();
            })
            .await;
            let entry = kv.entry(&key).await.unwrap().unwrap();
            let mut revision = entry.revision;
            let mut cas = Vec::with_capacity(N_REDEEM);
            for _ in 0..N_REDEEM {
                let start = Instant::now();
                revision = kv
                    .update(&key, entry.value.clone(), revision)
                    .await
                    .unwrap();
                cas.push(start.elapsed());
            }
            let cas_floor = Timings(cas);
            let scratch = js.get_key_value("UNIBUS_room_keys").await.unwrap();
            let bulk_floor = time_each(N_BULK, |e| {
                let scratch = &scratch;
                async move {
                    for m in 0..BULK_MEMBERS {
                        scratch
                            .put(format!("floor.{e}.{m}"), Bytes::from(vec![1u8; 81]))
                            .await
                            .unwrap();
                    }
                }
            })
            .await;
            row(
                fx.name,
                "redeem invite (consume + add user)",
                &redeem,
                "raw KV CAS update",
                &cas_floor,
            );
            row(
                fx.name,
                "is_authorized",
                &authorized,
                "raw KV get",
                &get_floor,
            );
            row(
                fx.name,
                "latest member part of a member",
                &latest,
                "raw KV get",
                &get_floor,
            );
            row(
                fx.name,
                "put epoch, 1,000 members",
                &bulk,
                "1,000 raw KV puts, one at a time",
                &bulk_floor,
            );
        }
    }
}

fn main() {
    let runtime = timing::runtime();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        println!("unibus store benchmarks (sequential; p50 and p99 per operation)\n");
        println!(
            "| backend | operation | n | p50 | p99 | floor | floor p50 | floor p99 | p50 ratio |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");

        let sqlite = SqliteStore::open(dir.path().join("bench.db"))
            .await
            .unwrap();
        let raw = rusqlite::Connection::open(dir.path().join("floor.db")).unwrap();
        raw.pragma_update(None, "journal_mode", "WAL").unwrap();
        raw.pragma_update(None, "synchronous", "NORMAL").unwrap();
        raw.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT NOT NULL)", [])
            .unwrap();
        bench(&Fixture {
            name: "sqlite",
            store: Arc::new(sqlite),
            raw: Raw::Sqlite(Arc::new(std::sync::Mutex::new(raw))),
        })
        .await;

        for (name, nodes) in [("kv_r1", 1usize), ("kv_r3", 3)] {
            let cluster = NatsCluster::start(nodes).await.unwrap();
            let client = async_nats::connect(cluster.server_addrs()).await.unwrap();
            let store = KvStore::open(
                client.clone(),
                KvStoreConfig {
                    replicas: nodes,
                    ..KvStoreConfig::default()
                },
            )
            .await
            .unwrap();
            bench(&Fixture {
                name,
                store: Arc::new(store),
                raw: Raw::Kv(Box::new(async_nats::jetstream::new(client))),
            })
            .await;
        }
    });
}
