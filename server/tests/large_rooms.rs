//! Rooms of any size, end to end through the SDK: a 100,000-member room on SQLite and a
//! 10,000-member room on a 3-node KV (R3) cluster are rekeyed by their owner (paged `members`,
//! sealing on every core, the manifest uploaded in parts, one commit), and a sample of members
//! fetch, verify and open the new key. Their own test binary, so they run alone.

#[path = "integration/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use unibus::client::{Session, SessionOptions};
use unibus::{Identity, RoomId};
use unibus_server::auth::setup::AuthSetup;
use unibus_server::control::ControlPlane;
use unibus_server::store::{
    now_millis, KvStore, KvStoreConfig, NewUser, Room, RoomSnapshot, Snapshot, SqliteStore, Store,
};
use unibus_testkit::NatsCluster;

/// Members whose keys are opened after the rekey: the first, one in the middle, the last.
fn sample(members: &[Identity]) -> [&Identity; 3] {
    [
        &members[0],
        &members[members.len() / 2],
        &members[members.len() - 1],
    ]
}

fn options() -> SessionOptions {
    SessionOptions {
        // A 100,000-member commit stores 100,000 parts before it answers.
        request_timeout: Duration::from_secs(120),
        ..SessionOptions::default()
    }
}

/// membershipd's callout and control plane on `cluster` over `store`.
async fn serve(cluster: &NatsCluster, setup: &AuthSetup, store: Arc<dyn Store>) {
    let _callout = common::start_callout(cluster, setup, Arc::clone(&store)).await;
    let control = common::connect_control(cluster, setup).await;
    tokio::spawn(Arc::new(ControlPlane::new(Arc::clone(&store), control.clone())).run());
    control.flush().await.unwrap();
    common::wait_for_control_plane(cluster, &*store).await;
}

/// The owner rekeys `room` through the SDK, and the sampled members open the new key.
async fn rekey_and_open(
    cluster: &NatsCluster,
    owner: Arc<Identity>,
    room: &RoomId,
    members: &[Identity],
) {
    let urls: Vec<String> = (0..cluster.len()).map(|i| cluster.client_url(i)).collect();
    let session = Session::connect(owner, &urls, options()).await.unwrap();
    let started = Instant::now();
    let rekeyed = session.rekey(room).await.unwrap();
    eprintln!(
        "{} members: rekeyed to epoch {} in {:?}",
        members.len() + 1,
        rekeyed.epoch,
        started.elapsed()
    );
    assert_eq!(rekeyed.epoch, 1);
    for member in sample(members) {
        let theirs = Session::connect(
            Arc::new(Identity::from_secret_bytes(&member.to_secret_bytes()).unwrap()),
            &urls,
            options(),
        )
        .await
        .unwrap();
        let opened = theirs.room_key(room, None).await.unwrap();
        assert_eq!(opened.epoch, 1);
        assert_eq!(opened.key.expose_secret(), rekeyed.key.expose_secret());
        theirs.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100000_member_room_on_sqlite_rekeys_and_its_members_open_the_key() {
    const MEMBERS: usize = 99_999;
    let setup = AuthSetup::generate().unwrap();
    let cluster = common::cluster_with_auth(&setup, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("db")).await.unwrap());

    // The room and its users in one snapshot import: one transaction.
    let owner = Arc::new(Identity::generate().unwrap());
    let members: Vec<Identity> = (0..MEMBERS)
        .map(|_| Identity::generate().unwrap())
        .collect();
    let room = RoomId::new("everyone").unwrap();
    let mut snapshot = Snapshot {
        users: std::iter::once(&*owner)
            .chain(&members)
            .map(common::active_user)
            .collect(),
        rooms: vec![RoomSnapshot {
            room: Room {
                id: room.clone(),
                owner: owner.sign_public_key(),
                epoch: 0,
                created_at: now_millis(),
            },
            members: std::iter::once(&*owner)
                .chain(&members)
                .map(Identity::sign_public_key)
                .collect(),
            manifests: Vec::new(),
            history: Vec::new(),
        }],
        ..Snapshot::default()
    };
    snapshot.normalize();
    store.import_snapshot(&snapshot).await.unwrap();

    serve(&cluster, &setup, Arc::clone(&store)).await;
    rekey_and_open(&cluster, owner, &room, &members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_member_room_on_kv_r3_rekeys_and_its_members_open_the_key() {
    const MEMBERS: usize = 9_999;
    let setup = AuthSetup::generate().unwrap();
    let cluster = common::cluster_with_auth(&setup, 3).await;
    let service = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
        .connect(cluster.server_addrs())
        .await
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(
        KvStore::open(
            service,
            KvStoreConfig {
                replicas: 3,
                ..KvStoreConfig::default()
            },
        )
        .await
        .unwrap(),
    );

    let owner = Arc::new(Identity::generate().unwrap());
    let members: Vec<Identity> = (0..MEMBERS)
        .map(|_| Identity::generate().unwrap())
        .collect();
    let room = RoomId::new("everyone").unwrap();
    let add_user = |id: &Identity| {
        let store = Arc::clone(&store);
        let new = NewUser {
            sign_key: id.sign_public_key(),
            kex_key: id.kex_public_key(),
            admin: false,
        };
        async move { store.add_user(new).await }
    };
    add_user(&owner).await.unwrap();
    store
        .create_room(&room, &owner.sign_public_key())
        .await
        .unwrap();
    futures::stream::iter(&members)
        .map(|id| {
            let (store, room, add) = (Arc::clone(&store), room.clone(), add_user(id));
            let key = id.sign_public_key();
            async move {
                add.await?;
                store.add_member(&room, &key).await
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();

    serve(&cluster, &setup, Arc::clone(&store)).await;
    rekey_and_open(&cluster, owner, &room, &members).await;
}
