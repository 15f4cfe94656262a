//! A revocation or deletion made by another process (the `membershipd` CLI, on the host) is in
//! force on every membershipd the moment the command returns: a control-plane request sent
//! right after it is refused with `not_authorized`, on SQLite (the CLI on the data directory of
//! a running service) and on KV (two instances on one cluster).
//!
//! The services here run as `membershipd serve` runs them (the authorization cache in front of
//! the store, the control plane on its own connection in the users' account) but without the
//! revoker, which would cut the user's session and hide what the control plane answers. On KV
//! one instance's change feed lags behind the store by [`LAG`], as a busy instance's may (the
//! KV watch otherwise brings a change within milliseconds, and the CLI's own exit would hide
//! the gap).

use crate::common;
use crate::daemon::membershipd;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use unibus::Identity;
use unibus_server::auth::setup::AuthSetup;
use unibus_server::control::ControlPlane;
use unibus_server::store::{CachedStore, ChangeFeed, KvStore, KvStoreConfig, SqliteStore, Store};
use unibus_testkit::NatsCluster;

/// How far the lagging KV instance's feed is behind its store: well within what its cache
/// allows ([`unibus_server::store::cached::FEED_BOUND`]).
const LAG: Duration = Duration::from_millis(400);

/// `store`'s change feed, each item [`LAG`] after the store gave it.
async fn lagging(store: &dyn Store) -> ChangeFeed {
    let mut feed = store.changes().await.unwrap();
    let (send, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = feed.next().await {
            if send
                .send((tokio::time::Instant::now() + LAG, item))
                .is_err()
            {
                return;
            }
        }
    });
    Box::pin(futures::stream::unfold(
        received,
        |mut received| async move {
            let (due, item) = received.recv().await?;
            tokio::time::sleep_until(due).await;
            Some((item, received))
        },
    ))
}

/// A control plane over `cache`, as `serve` runs it, once the cache answers from memory.
async fn instance(
    cluster: &NatsCluster,
    setup: &AuthSetup,
    cache: Arc<CachedStore>,
) -> Arc<ControlPlane> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cache.is_fresh() {
        assert!(tokio::time::Instant::now() < deadline, "the feed caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let control = common::connect_control(cluster, setup).await;
    let plane = Arc::new(ControlPlane::new(cache, control.clone()));
    tokio::spawn(Arc::clone(&plane).run());
    control.flush().await.unwrap();
    plane
}

/// `rekey_commit` of an upload that does not exist, sent to `plane` itself (its own subject):
/// `not_found` for an active caller, `not_authorized` for a revoked one. Retried only while
/// the instance's subject has not reached the caller's node yet ("no responders").
async fn ask(client: &async_nats::Client, caller: &Identity, plane: &ControlPlane) -> String {
    let subject = format!(
        "unibus.cp.{}.rekey_commit.{}",
        caller.sign_public_key().to_hex(),
        plane.instance()
    );
    let body = json!({ "upload": "00", "instance": plane.instance() }).to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let asked = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(subject.clone(), body.clone().into()),
        )
        .await
        .expect("the instance answers");
        match asked {
            Ok(reply) => {
                let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
                return reply["error"]["code"]
                    .as_str()
                    .unwrap_or("<ok>")
                    .to_string();
            }
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Runs `membershipd <args>` to its end (the services go on answering meanwhile), and says it
/// succeeded and said so.
fn cli(args: &[&str]) {
    let output = tokio::task::block_in_place(|| membershipd().args(args).output().unwrap());
    assert!(
        output.status.success(),
        "membershipd {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("in force on every membershipd"), "{said}");
}

/// For each of `revoke` and `delete`: a user whose activity every instance has just confirmed
/// (and copied) is revoked or deleted by `command`, and every instance refuses its next request.
async fn refused_everywhere_right_after(
    cluster: &NatsCluster,
    store: &dyn Store,
    planes: &[Arc<ControlPlane>],
    command: impl Fn(&str, &str),
) {
    for action in ["revoke", "delete"] {
        let id = common::register(store).await;
        let (client, _) = common::login(cluster.server_addrs(), &id).await.unwrap();
        for plane in planes {
            assert_eq!(ask(&client, &id, plane).await, "not_found", "{action}");
        }
        command(action, &id.sign_public_key().to_hex());
        for plane in planes {
            assert_eq!(
                ask(&client, &id, plane).await,
                "not_authorized",
                "{action}: instance {}",
                plane.instance()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_revocation_on_sqlite_is_in_force_when_the_command_returns() {
    let w = common::world().await;
    let db = w.dir.path().join("db");
    let cache = CachedStore::new(Arc::new(SqliteStore::open(&db).await.unwrap()));
    let running = instance(&w.cluster, &w.setup, cache).await;
    let data = w.dir.path().to_str().unwrap();
    let db = db.to_str().unwrap();
    refused_everywhere_right_after(&w.cluster, &*w.store, &[running], |action, key| {
        cli(&["--data-dir", data, "--db", db, "user", action, key]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_revocation_on_kv_is_in_force_on_both_instances_when_the_command_returns() {
    // The keys in `<data>/auth`, where the CLI finds them to join the cluster.
    let data = tempfile::tempdir().unwrap();
    let setup = AuthSetup::load_or_create(&data.path().join("auth")).unwrap();
    let cluster = common::cluster_with_auth(&setup, 3).await;
    let kv = || async {
        let service = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
            .connect(cluster.server_addrs())
            .await
            .unwrap();
        let config = KvStoreConfig {
            replicas: 3,
            ..KvStoreConfig::default()
        };
        let store: Arc<dyn Store> = Arc::new(KvStore::open(service, config).await.unwrap());
        store
    };
    let store = kv().await;
    let _callout = common::start_callout(&cluster, &setup, Arc::clone(&store)).await;
    let prompt = CachedStore::new(kv().await);
    let behind = kv().await;
    let behind = CachedStore::with_feed(Arc::clone(&behind), lagging(&*behind).await);
    let planes = [
        instance(&cluster, &setup, prompt).await,
        instance(&cluster, &setup, behind).await,
    ];
    assert_ne!(planes[0].instance(), planes[1].instance());
    let url = cluster.client_url(1);
    let data = data.path().to_str().unwrap();
    refused_everywhere_right_after(&cluster, &*store, &planes, |action, key| {
        cli(&[
            "--data-dir",
            data,
            "--nats-url",
            &url,
            "--store",
            "kv",
            "--replicas",
            "3",
            "user",
            action,
            key,
        ]);
    })
    .await;
}
