//! Registration throughput and latency over real HTTP on 127.0.0.1, with 32 concurrent clients,
//! on SQLite, KV R1 and KV R3, beside the store-level floor (sequential `redeem_invite`)
//! measured in the same run.
//!
//! ```text
//! cargo bench -p unibus-server --bench register
//! ```
//!
//! Client and server share this machine's cores, so the figures are a floor for a server with
//! the machine to itself. Signing happens before the clock starts; the server's verification,
//! rate limiting, JSON handling and store write are all inside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use unibus::registration::{RegisterBody, RegisterRequest};
use unibus::Identity;
use unibus_server::http::{AppState, RateLimiter};
use unibus_server::store::{KvStore, KvStoreConfig, NewInvite, SqliteStore, Store};
use unibus_testkit::NatsCluster;

mod timing;

const CLIENTS: usize = 32;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn bodies(store: &dyn Store, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (token, _) = store.create_invite(NewInvite::default()).await.unwrap();
        let request = RegisterRequest::sign(&Identity::generate().unwrap(), token);
        out.push(
            serde_json::to_value(RegisterBody::from(&request))
                .unwrap()
                .to_string(),
        );
    }
    out
}

async fn bench(name: &str, store: Arc<dyn Store>, n: usize) {
    // The store-level floor: sequential redemptions, no HTTP.
    let mut floor = Vec::new();
    for _ in 0..200 {
        let (token, _) = store.create_invite(NewInvite::default()).await.unwrap();
        let id = Identity::generate().unwrap();
        let start = Instant::now();
        store
            .redeem_invite(&token, &id.sign_public_key(), &id.kex_public_key())
            .await
            .unwrap();
        floor.push(start.elapsed());
    }
    floor.sort();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/register", listener.local_addr().unwrap());
    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        nats_urls: vec![],
        register_limiter: RateLimiter::new(1e9, u32::MAX),
        admin_limiter: RateLimiter::new(1e9, u32::MAX),
        status_limiter: RateLimiter::new(1e9, u32::MAX),
        public_url: "http://127.0.0.1".into(),
        nats: None,
        link_pages: Default::default(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(unibus_server::http::serve(
        listener,
        state,
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));

    let bodies = Arc::new(bodies(&*store, n).await);
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (bodies, client, url, next) = (
            Arc::clone(&bodies),
            client.clone(),
            url.clone(),
            Arc::clone(&next),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= bodies.len() {
                    return latencies;
                }
                let start = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bodies[i].clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                latencies.push(start.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let _ = stop.send(());
    let _ = server.await;
    println!(
        "| {name} | {n} | {:.0}/s | {} | {} | {} | {} |",
        n as f64 / elapsed.as_secs_f64(),
        ms(pct(&latencies, 0.5)),
        ms(pct(&latencies, 0.99)),
        ms(pct(&floor, 0.5)),
        ms(pct(&floor, 0.99)),
    );
}

fn main() {
    let runtime = timing::runtime();
    runtime.block_on(async {
        println!("registration over HTTP, {CLIENTS} concurrent clients on 127.0.0.1 (client and server share 2 cores)\n");
        println!("| backend | registrations | throughput | p50 | p99 | store floor p50 (sequential redeem) | floor p99 |");
        println!("|---|---|---|---|---|---|---|");
        let dir = tempfile::tempdir().unwrap();
        bench("sqlite", Arc::new(SqliteStore::open(dir.path().join("db")).await.unwrap()), 4000).await;
        for (name, nodes) in [("kv_r1", 1usize), ("kv_r3", 3)] {
            let cluster = NatsCluster::start(nodes).await.unwrap();
            let client = async_nats::connect(cluster.server_addrs()).await.unwrap();
            let store = KvStore::open(client, KvStoreConfig { replicas: nodes, ..KvStoreConfig::default() }).await.unwrap();
            bench(name, Arc::new(store), 2000).await;
        }
    });
}
