//! Shared fixtures of the cluster tests: a real nats-server cluster configured for auth callout,
//! membershipd's services on it, and clients that log in with their own keys.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use unibus::Identity;
use unibus_server::auth::callout::{inbox_prefix, Callout};
use unibus_server::auth::setup::{AuthSetup, APP_ACCOUNT};
use unibus_server::store::{now_millis, NewUser, SqliteStore, Store, User, UserStatus};
use unibus_testkit::{ClusterOptions, NatsCluster};

pub struct World {
    pub cluster: NatsCluster,
    pub setup: AuthSetup,
    pub store: Arc<dyn Store>,
    /// membershipd's service user (`AUTH`): the callout.
    pub service: async_nats::Client,
    /// membershipd's control-plane user (`APP`), for a control plane.
    pub control: async_nats::Client,
    pub dir: tempfile::TempDir,
}

pub async fn cluster_with_auth(setup: &AuthSetup, nodes: usize) -> NatsCluster {
    cluster_with_auth_and(setup, nodes, "").await
}

/// A cluster configured for the auth callout, with `more` added to each node's config.
pub async fn cluster_with_auth_and(setup: &AuthSetup, nodes: usize, more: &str) -> NatsCluster {
    NatsCluster::start_with(ClusterOptions {
        nodes,
        extra_config: format!("{}\n{more}", setup.server_config()),
        // Anonymous clients are refused now, so readiness is the health endpoint alone.
        probe: false,
        ..ClusterOptions::default()
    })
    .await
    .unwrap()
}

/// Connects the system account's user, as membershipd does to ask the nodes about JetStream
/// and connections.
pub async fn connect_system(cluster: &NatsCluster, setup: &AuthSetup) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password("sys".into(), setup.sys_password.to_string())
        .connect(cluster.server_addrs())
        .await
        .unwrap()
}

/// Connects membershipd's control-plane user, in the users' account (`APP`).
pub async fn connect_control(cluster: &NatsCluster, setup: &AuthSetup) -> async_nats::Client {
    async_nats::ConnectOptions::with_nkey(setup.control.seed().unwrap())
        .connect(cluster.server_addrs())
        .await
        .unwrap()
}

/// Sets up, on `control`, the message stream `membershipd serve` sets up (protocol §15), with
/// the cluster's size as its replica count (asked of JetStream through the system account, as
/// `serve` does). Returns the cluster's size. (The control plane serves the rest of messages:
/// `send`, `messages` and `listen`.)
pub async fn start_messages(
    cluster: &NatsCluster,
    setup: &AuthSetup,
    control: &async_nats::Client,
) -> usize {
    use unibus_server::messages::{ensure_stream, stream::cluster_size, StreamSettings};
    let system = connect_system(cluster, setup).await;
    let size = cluster_size(&system).await.unwrap();
    let js = async_nats::jetstream::new(control.clone());
    ensure_stream(&js, StreamSettings::default(), size)
        .await
        .unwrap();
    size
}

/// The recipients of a rekey from a `members` reply (protocol §12.2): each member's signing key
/// and registered x25519 key.
pub fn recipients(members: &serde_json::Value) -> Vec<unibus::manifest::Recipient> {
    members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| unibus::manifest::Recipient {
            member: m["sign_public_key"].as_str().unwrap().parse().unwrap(),
            kex: m["kex_public_key"].as_str().unwrap().parse().unwrap(),
        })
        .collect()
}

/// Which store a test or a benchmark runs membershipd on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite, the embedded default.
    Sqlite,
    /// JetStream KV, one replica per node.
    Kv,
}

/// Opens a store of `kind` as `membershipd serve` keeps it: a SQLite file in `dir`, or KV
/// buckets with one replica per node of the cluster, in the service user's account.
pub async fn open_store(
    kind: StoreKind,
    nodes: usize,
    cluster: &NatsCluster,
    setup: &AuthSetup,
    dir: &std::path::Path,
) -> Arc<dyn Store> {
    match kind {
        StoreKind::Sqlite => Arc::new(SqliteStore::open(dir.join("db")).await.unwrap()),
        StoreKind::Kv => {
            let service = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
                .connect(cluster.server_addrs())
                .await
                .unwrap();
            let config = unibus_server::store::KvStoreConfig {
                replicas: nodes,
                ..Default::default()
            };
            Arc::new(
                unibus_server::store::KvStore::open(service, config)
                    .await
                    .unwrap(),
            )
        }
    }
}

/// Connects membershipd's own service user, starts the callout, and returns the connection.
pub async fn start_callout(
    cluster: &NatsCluster,
    setup: &AuthSetup,
    store: Arc<dyn Store>,
) -> async_nats::Client {
    callout(cluster, setup, store).await.0
}

/// Like [`start_callout`], and starts a revoker as `membershipd serve` does: it follows
/// `store`'s change feed, cutting the sessions of users no longer active and of members who
/// left a room they were granted, and checks the callout's grants at every sweep. Returns once
/// its first sweep is over.
pub async fn start_callout_and_revoker(
    cluster: &NatsCluster,
    setup: &AuthSetup,
    store: Arc<dyn Store>,
) -> async_nats::Client {
    use unibus_server::auth::revocation::Revoker;
    let (service, callout) = callout(cluster, setup, Arc::clone(&store)).await;
    let system = connect_system(cluster, setup).await;
    // A revoked user's session, which only the revoker's first sweep can find: once it is
    // cut, that sweep has checked the grants too, and every cut from then on comes from the
    // change feed (the next sweep is an hour off).
    let sentinel = register(&*store).await;
    let (sentinel_client, _) = login(cluster.server_addrs(), &sentinel).await.unwrap();
    store
        .revoke_user(&sentinel.sign_public_key())
        .await
        .unwrap();
    let revoker = Revoker::new(store, system, service.clone(), APP_ACCOUNT)
        .sparing(setup.control.public_key())
        .with_grants(callout.grants());
    tokio::spawn(Arc::new(revoker).run(Duration::from_secs(3600)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sentinel_client.connection_state() == async_nats::connection::State::Connected {
        assert!(
            std::time::Instant::now() < deadline,
            "the first sweep never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service
}

async fn callout(
    cluster: &NatsCluster,
    setup: &AuthSetup,
    store: Arc<dyn Store>,
) -> (async_nats::Client, Arc<Callout>) {
    let service = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
        .connect(cluster.server_addrs())
        .await
        .unwrap();
    let issuer = nkeys::KeyPair::from_seed(&setup.issuer.seed().unwrap()).unwrap();
    let store_for_probe = Arc::clone(&store);
    let callout = Arc::new(Callout::new(store, issuer, APP_ACCOUNT));
    tokio::spawn(Arc::clone(&callout).run(service.clone()));
    service.flush().await.unwrap();
    wait_for_callout(cluster, &*store_for_probe).await;
    (service, callout)
}

/// Waits until every node can reach the callout (its subscription's interest takes a moment
/// to spread over the routes): a probe user logs in at each node.
async fn wait_for_callout(cluster: &NatsCluster, store: &dyn Store) {
    let probe = register(store).await;
    for i in 0..cluster.len() {
        let node: Vec<async_nats::ServerAddr> = vec![cluster.client_url(i).parse().unwrap()];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while login(node.clone(), &probe).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "node {i} never reached the callout"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    store.delete_user(&probe.sign_public_key()).await.unwrap();
}

pub async fn world() -> World {
    world_with_config("").await
}

/// A [`world`] whose nodes carry `more` in their config (for example a `max_payload`).
pub async fn world_with_config(more: &str) -> World {
    world_on_with(StoreKind::Sqlite, 3, more).await
}

/// A world of `nodes` nodes whose membershipd keeps a store of `kind`.
pub async fn world_on(kind: StoreKind, nodes: usize) -> World {
    world_on_with(kind, nodes, "").await
}

async fn world_on_with(kind: StoreKind, nodes: usize, more: &str) -> World {
    let setup = AuthSetup::generate().unwrap();
    let cluster = cluster_with_auth_and(&setup, nodes, more).await;
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(kind, nodes, &cluster, &setup, dir.path()).await;
    let service = start_callout(&cluster, &setup, Arc::clone(&store)).await;
    let control = connect_control(&cluster, &setup).await;
    World {
        cluster,
        setup,
        store,
        service,
        control,
        dir,
    }
}

/// The record of `id` as an active user, for snapshot imports of many users at once.
pub fn active_user(id: &Identity) -> User {
    User {
        sign_key: id.sign_public_key(),
        kex_key: id.kex_public_key(),
        admin: false,
        status: UserStatus::Active,
        created_at: now_millis(),
        invite_id: None,
    }
}

pub async fn register(store: &dyn Store) -> Identity {
    let id = Identity::generate().unwrap();
    store
        .add_user(NewUser {
            sign_key: id.sign_public_key(),
            kex_key: id.kex_public_key(),
            admin: false,
        })
        .await
        .unwrap();
    id
}

/// Waits until every node of the cluster reaches the control-plane service (its endpoints'
/// interest takes a moment to spread over the routes): a probe user asks `member` at each node
/// until an answer comes instead of "no responders".
pub async fn wait_for_control_plane(cluster: &NatsCluster, store: &dyn Store) {
    let probe = register(store).await;
    let subject = format!(
        "{}.member",
        unibus::subjects::requests(&probe.sign_public_key())
    );
    for i in 0..cluster.len() {
        let node: Vec<async_nats::ServerAddr> = vec![cluster.client_url(i).parse().unwrap()];
        let (client, _) = login(node, &probe).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let asked = client
                .request(subject.clone(), r#"{"room":"probe"}"#.into())
                .await;
            if asked.is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {i} never reached the control plane: {asked:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    store.delete_user(&probe.sign_public_key()).await.unwrap();
}

/// Server errors (permission violations) seen by a client.
pub type Errors = Arc<Mutex<Vec<String>>>;

pub async fn login(
    addrs: Vec<async_nats::ServerAddr>,
    id: &Identity,
) -> Result<(async_nats::Client, Errors), async_nats::ConnectError> {
    let errors: Errors = Arc::default();
    let seen = Arc::clone(&errors);
    let client = async_nats::ConnectOptions::with_nkey(id.nkey_seed().to_string())
        .custom_inbox_prefix(inbox_prefix(&id.sign_public_key()))
        .connection_timeout(Duration::from_secs(3))
        .event_callback(move |event| {
            let seen = Arc::clone(&seen);
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(addrs)
        .await?;
    Ok((client, errors))
}

/// A history share's wire form (protocol §16.2) re-signed by `who` after `change`: what a
/// forger could make of a genuine one.
pub fn resigned_share(share: &[u8], who: &Identity, change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut bytes = share[..share.len() - 64].to_vec();
    change(&mut bytes);
    let mut message = unibus::history::SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(&bytes);
    bytes.extend_from_slice(&who.sign(&message).to_bytes());
    bytes
}
