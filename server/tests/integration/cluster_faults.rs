//! The KV store on a 3-node R3 cluster under faults: a node (the stream leader) down, two nodes
//! down, a node restarting, and cold starts. Slow by nature, so in a test binary of its own.
//!
//! ```text
//! cargo test -p unibus-server --test cluster_faults
//! UNIBUS_COLD_STARTS=20 cargo test -p unibus-server --test cluster_faults -- cold   # stress
//! ```

use std::time::{Duration, Instant};

use unibus::{Identity, SignPublicKey};
use unibus_server::store::{KvStore, KvStoreConfig, NewInvite, NewUser, Store, StoreError};
use unibus_testkit::{ClusterOptions, NatsCluster};

const OP_TIMEOUT: Duration = Duration::from_secs(2);

fn config() -> KvStoreConfig {
    KvStoreConfig {
        replicas: 3,
        op_timeout: OP_TIMEOUT,
        ..KvStoreConfig::default()
    }
}

async fn open(cluster: &NatsCluster) -> KvStore {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .connect(cluster.server_addrs())
        .await
        .unwrap();
    KvStore::open(client, config()).await.unwrap()
}

async fn add(store: &KvStore) -> StoreResult<SignPublicKey> {
    let id = Identity::generate().unwrap();
    store
        .add_user(NewUser {
            sign_key: id.sign_public_key(),
            kex_key: id.kex_public_key(),
            admin: false,
        })
        .await
        .map(|u| u.sign_key)
}

type StoreResult<T> = Result<T, StoreError>;

/// The index of the node leading a bucket's stream. Asked again for a few seconds, because
/// right after the buckets are created the JetStream API may not answer yet.
async fn leader_of(cluster: &NatsCluster, stream: &str) -> usize {
    let client = async_nats::connect(cluster.server_addrs()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leader = match js.get_stream(stream).await {
            Ok(mut found) => found
                .info()
                .await
                .ok()
                .and_then(|info| info.cluster.clone())
                .and_then(|c| c.leader),
            Err(_) => None,
        };
        if let Some(index) = leader.and_then(|name| cluster.node_index(&name)) {
            return index;
        }
        assert!(Instant::now() < deadline, "no leader for {stream}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_node_and_the_stream_leader_keeps_the_store_serving() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let store = open(&cluster).await;
    let before = add(&store).await.unwrap();
    let leader = leader_of(&cluster, "KV_UNIBUS_users").await;
    cluster.kill(leader);

    // Writes fail while a new leader is elected (4 to 6 s measured), then succeed again.
    let started = Instant::now();
    let recovered = loop {
        match add(&store).await {
            Ok(key) => break key,
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no recovery within 20 s: {e}"),
        }
    };
    eprintln!(
        "writes recovered {:?} after killing the leader n{leader}",
        started.elapsed()
    );
    assert!(
        store.is_authorized(&before).await,
        "data written before the loss is still there"
    );
    assert!(store.is_authorized(&recovered).await);
    // Every bucket elects its own leader: the invite buckets recover on their own schedule,
    // within the same bound.
    let redeemed = loop {
        let attempt = async {
            let (token, _) = store.create_invite(NewInvite::default()).await?;
            let id = Identity::generate().unwrap();
            store
                .redeem_invite(&token, &id.sign_public_key(), &id.kex_public_key())
                .await
        };
        match attempt.await {
            Ok(user) => break user,
            Err(e) if started.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("invites did not recover within 20 s: {e}"),
        }
    };
    assert!(store.is_authorized(&redeemed.sign_key).await);

    // The node comes back and serves everything, including what was written without it.
    cluster.restart(leader).await.unwrap();
    let client = async_nats::connect(cluster.client_url(leader))
        .await
        .unwrap();
    let rejoined = KvStore::open(client, config()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rejoined.is_authorized(&recovered).await {
        assert!(
            Instant::now() < deadline,
            "the restarted node never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_nodes_down_authorization_fails_closed_within_the_op_timeout() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let store = open(&cluster).await;
    let user = add(&store).await.unwrap();
    assert!(store.is_authorized(&user).await);
    let admin_check_before = store.has_admin(&user).await;
    assert!(!admin_check_before);

    let leader = leader_of(&cluster, "KV_UNIBUS_users").await;
    cluster.kill(leader);
    cluster.kill((leader + 1) % 3);

    for _ in 0..3 {
        let started = Instant::now();
        let allowed = store.is_authorized(&user).await;
        let elapsed = started.elapsed();
        assert!(
            !allowed,
            "no quorum must deny, never admit from a possibly stale replica"
        );
        // The answer comes from the operation timeout, not a hang; the margin is for a
        // starved runner, not a speed claim.
        assert!(elapsed <= 3 * OP_TIMEOUT, "took {elapsed:?}");
    }
    assert!(matches!(
        store.get_user(&user).await,
        Err(StoreError::Timeout(_) | StoreError::Backend { .. })
    ));
    assert!(add(&store).await.is_err());
}

/// Cold starts: `UNIBUS_COLD_STARTS` (20 in the stress run), else 2.
fn cold_starts() -> usize {
    std::env::var("UNIBUS_COLD_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_three_node_start_converges() {
    for run in 0..cold_starts() {
        let cluster = NatsCluster::start_with(ClusterOptions {
            nodes: 3,
            wait_ready: false,
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        // Connect and open at once, before the meta leader exists: the store must retry its
        // way in within its bootstrap budget.
        let started = Instant::now();
        let client = loop {
            match async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_millis(500))
                .connect(cluster.server_addrs())
                .await
            {
                Ok(client) => break client,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("run {run}: no node accepted a connection: {e}"),
            }
        };
        let store = KvStore::open(client, config()).await.unwrap_or_else(|e| {
            let logs: Vec<String> = (0..3)
                .map(|i| format!("--- n{i}:\n{}", cluster.log_tail(i, 25)))
                .collect();
            panic!("run {run}: {e}\n{}", logs.join("\n"))
        });
        let user = add(&store).await.unwrap();
        assert!(store.is_authorized(&user).await);
        eprintln!("cold start {run}: serving after {:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_another_node_never_see_stale_authorization() {
    let cluster = NatsCluster::start(3).await.unwrap();
    let connect = |i: usize| {
        let url = cluster.client_url(i);
        async move {
            let client = async_nats::connect(url).await.unwrap();
            KvStore::open(client, config()).await.unwrap()
        }
    };
    let (writer, reader) = (connect(0).await, connect(2).await);
    let mut stale = 0;
    for _ in 0..100 {
        let user = add(&writer).await.unwrap();
        if !reader.is_authorized(&user).await {
            stale += 1;
        }
        writer.revoke_user(&user).await.unwrap();
        if reader.is_authorized(&user).await {
            stale += 1;
        }
    }
    assert_eq!(
        stale, 0,
        "a read through another node saw a stale user record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_with_more_replicas_scales_the_buckets_in_place() {
    let cluster = NatsCluster::start(3).await.unwrap();
    let client = async_nats::connect(cluster.server_addrs()).await.unwrap();
    let r1 = KvStore::open(
        client.clone(),
        KvStoreConfig {
            replicas: 1,
            ..config()
        },
    )
    .await
    .unwrap();
    let user = add(&r1).await.unwrap();

    let r3 = KvStore::open(client.clone(), config()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for bucket in [
        "users",
        "invites",
        "rooms",
        "members",
        "rooms_by_member",
        "room_keys",
        "admin_nonces",
    ] {
        let mut stream = js.get_stream(format!("KV_UNIBUS_{bucket}")).await.unwrap();
        assert_eq!(
            stream.info().await.unwrap().config.num_replicas,
            3,
            "{bucket}"
        );
    }
    assert!(
        r3.is_authorized(&user).await,
        "data written at R1 survives the scale-up"
    );
    assert!(matches!(
        KvStore::open(
            async_nats::connect(cluster.server_addrs()).await.unwrap(),
            KvStoreConfig {
                replicas: 6,
                ..config()
            }
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nonces_bucket_drops_old_entries_even_when_created_before_without_an_age() {
    use async_nats::jetstream::stream;
    use unibus_server::store::NONCE_KEPT_AT_MOST;

    let cluster = NatsCluster::start(1).await.unwrap();
    let client = async_nats::connect(cluster.server_addrs()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    // The bucket as earlier versions created it: entries kept for ever.
    js.create_stream(stream::Config {
        name: "KV_UNIBUS_admin_nonces".into(),
        subjects: vec!["$KV.UNIBUS_admin_nonces.>".into()],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    let store = KvStore::open(
        client,
        KvStoreConfig {
            replicas: 1,
            ..config()
        },
    )
    .await
    .unwrap();
    let mut stream = js.get_stream("KV_UNIBUS_admin_nonces").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().config.max_age,
        NONCE_KEPT_AT_MOST * 2
    );
    // A nonce that would have to outlive the bucket's age is refused.
    let now = unibus_server::store::now_millis();
    let too_long = now + 2 * NONCE_KEPT_AT_MOST.as_millis() as i64;
    assert!(matches!(
        store.record_nonce("00ff", now, too_long).await,
        Err(StoreError::Invalid(_))
    ));
}
