//! The fixture itself: nodes start, serve JetStream, survive a node loss, and clean up.

use std::time::Duration;

use unibus_testkit::NatsCluster;

async fn kv_round_trip(urls: &[String], replicas: usize, key: &str) {
    let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let client = async_nats::connect(addrs).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "fixture".into(),
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .unwrap();
    // A new replicated bucket's stream may not be known yet to the node this client is on:
    // retry the first write until it lands, within a bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(e) = kv.put(key, "v".into()).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the bucket never took a write: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(kv.get(key).await.unwrap().unwrap(), "v");
}

#[tokio::test]
async fn one_node_serves_jetstream_and_cleans_up_on_drop() {
    let cluster = NatsCluster::start(1).await.unwrap();
    kv_round_trip(&cluster.client_urls(), 1, "a").await;
    let url = cluster.client_url(0);
    drop(cluster);
    let refused = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(500))
        .connect(url)
        .await;
    assert!(refused.is_err(), "the node must be gone after drop");
}

#[tokio::test]
async fn three_nodes_form_a_cluster_that_survives_one_restart() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    kv_round_trip(&cluster.client_urls(), 3, "before").await;
    cluster.kill(1);
    assert!(!cluster.is_running(1));
    cluster.restart(1).await.unwrap();
    assert!(cluster.is_running(1));
    kv_round_trip(&[cluster.client_url(1)], 3, "after").await;
}
