//! The store contract: every case runs against SQLite, JetStream KV R1 and KV R3, and the
//! authorization cache in front of SQLite, and must behave the same on each.
//!
//! ```text
//! cargo test -p unibus-server --test store_contract            # all backends
//! cargo test -p unibus-server --test store_contract -- sqlite  # one backend
//! UNIBUS_STRESS_ROUNDS=200 cargo test -p unibus-server --test store_contract -- concurrent
//! ```

mod cases;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use libtest_mimic::{Arguments, Failed, Trial};
use unibus_server::store::{CachedStore, KvStore, KvStoreConfig, SqliteStore, Store};
use unibus_testkit::NatsCluster;

/// A fresh, empty store of one backend.
type MakeStore =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>> + Send>> + Send + Sync>;

/// One contract case.
pub type Case = fn(Arc<dyn Store>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

fn main() {
    let args = Arguments::from_args();
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime"),
    );
    let temp = tempfile::tempdir().expect("temp dir");
    let backends = backends(&runtime, temp.path().to_path_buf());

    let mut trials = Vec::new();
    for (backend, make, _cluster) in &backends {
        for (name, case) in cases::ALL {
            let (make, runtime, case) = (Arc::clone(make), Arc::clone(&runtime), *case);
            trials.push(Trial::test(format!("{backend}::{name}"), move || {
                runtime.block_on(async move {
                    let store = make().await;
                    tokio::task::spawn(case(store))
                        .await
                        .map_err(|e| Failed::from(panic_message(e)))
                })
            }));
        }
    }
    // Trials share the runtime; run them one at a time so timings stay honest on two cores.
    let mut args = args;
    args.test_threads = Some(1);
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the clusters before the runtime, then exit with the harness's verdict.
    drop(backends);
    drop(runtime);
    conclusion.exit();
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "case panicked".into()),
        Err(e) => format!("case did not finish: {e}"),
    }
}

/// The backends under test: SQLite, and KV on a 1-node (R1) and a 3-node (R3) cluster. Each
/// case gets a fresh store: a new SQLite file, or KV buckets with a prefix of their own.
fn backends(
    runtime: &tokio::runtime::Runtime,
    dir: std::path::PathBuf,
) -> Vec<(&'static str, MakeStore, Option<NatsCluster>)> {
    let counter = Arc::new(AtomicUsize::new(0));
    let sqlite_in = move |dir: &std::path::Path, counter: &AtomicUsize| {
        let path = dir.join(format!("contract-{}.db", counter.fetch_add(1, Relaxed)));
        async move { Arc::new(SqliteStore::open(path).await.expect("open sqlite")) as Arc<dyn Store> }
    };
    let sqlite: MakeStore = {
        let (counter, dir) = (Arc::clone(&counter), dir.clone());
        Arc::new(move || Box::pin(sqlite_in(&dir, &counter)))
    };
    let cached: MakeStore = {
        let counter = Arc::clone(&counter);
        Arc::new(move || {
            let store = sqlite_in(&dir, &counter);
            Box::pin(async move { CachedStore::new(store.await) as Arc<dyn Store> })
        })
    };
    let mut backends = vec![("sqlite", sqlite, None), ("cached_sqlite", cached, None)];
    for (name, nodes) in [("kv_r1", 1), ("kv_r3", 3)] {
        let cluster = runtime
            .block_on(NatsCluster::start(nodes))
            .expect("start the nats cluster");
        let addrs = cluster.server_addrs();
        let counter = Arc::clone(&counter);
        let make: MakeStore = Arc::new(move || {
            let addrs = addrs.clone();
            let prefix = format!("T{}", counter.fetch_add(1, Relaxed));
            Box::pin(async move {
                let client = async_nats::connect(addrs).await.expect("connect");
                let config = KvStoreConfig {
                    replicas: nodes,
                    bucket_prefix: prefix,
                    ..KvStoreConfig::default()
                };
                Arc::new(KvStore::open(client, config).await.expect("open kv")) as Arc<dyn Store>
            })
        });
        backends.push((name, make, Some(cluster)));
    }
    backends
}
