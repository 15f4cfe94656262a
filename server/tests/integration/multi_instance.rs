//! Several membershipd instances against one 3-node KV R3 cluster: they share the load with no
//! leader of their own (callout, control plane and store writes are all queue groups and
//! compare-and-swap), a revocation made anywhere reaches both (their change feeds, caches and
//! revokers), and the service survives losing one instance.

use crate::daemon;

use std::process::{Command, Stdio};
use std::time::Duration;

use daemon::{membershipd, Daemon};
use serde_json::{json, Value};
use unibus::registration::{RegisterBody, RegisterRequest};
use unibus::{Identity, InviteLink};
use unibus_server::auth::callout::inbox_prefix;
use unibus_server::auth::setup::AuthSetup;
use unibus_testkit::{ClusterOptions, NatsCluster};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn command(data: &std::path::Path, nats_url: &str, args: &[&str]) -> Command {
    let mut command = membershipd();
    command
        .arg("--data-dir")
        .arg(data)
        .args(["--nats-url", nats_url, "--store", "kv", "--replicas", "3"])
        .args(args);
    command
}

async fn start(data: &std::path::Path, nats_url: &str) -> Daemon {
    let mut serve = command(data, nats_url, &["--listen", "127.0.0.1:0", "serve"]);
    serve.stdout(Stdio::null()).stderr(Stdio::null());
    Daemon::spawn(serve, data).await
}

async fn register(instance: &Daemon, link: &str) -> (Identity, Vec<String>) {
    let link = InviteLink::parse(link).unwrap();
    let me = Identity::generate().unwrap();
    let request = RegisterRequest::sign(&me, link.token().clone());
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/register", instance.http))
        .json(&RegisterBody::from(&request))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let urls = reply["nats_urls"]
        .as_array()
        .expect("registered")
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    (me, urls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_kv_cluster_and_survive_losing_one() {
    // The operator's one-time setup: auth keys, and every node's config including auth.conf.
    let keys = tempfile::tempdir().unwrap();
    let setup = AuthSetup::load_or_create(keys.path()).unwrap();
    let cluster = NatsCluster::start_with(ClusterOptions {
        nodes: 3,
        extra_config: setup.server_config(),
        probe: false,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let nats_url = cluster.client_url(0);
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&a_dir, &b_dir] {
        copy_dir(keys.path(), &dir.path().join("auth"));
    }
    let mut a = Some(start(a_dir.path(), &nats_url).await);
    let b = start(b_dir.path(), &cluster.client_url(1)).await;

    // Invites minted through one instance redeem through the other: one shared store.
    let invite = |dir: &std::path::Path| {
        let output = command(
            dir,
            &nats_url,
            &[
                "--json",
                "--public-url",
                "https://members.example.com",
                "invite",
                "create",
            ],
        )
        .output()
        .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()["link"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (alice, urls) = register(&b, &invite(a_dir.path())).await;
    let (bob, _) = register(a.as_ref().unwrap(), &invite(b_dir.path())).await;
    assert!(!urls.is_empty());

    let connect = |id: &Identity| {
        let (seed, prefix) = (
            id.nkey_seed().to_string(),
            inbox_prefix(&id.sign_public_key()),
        );
        let addrs = cluster.server_addrs();
        async move {
            async_nats::ConnectOptions::with_nkey(seed)
                .custom_inbox_prefix(prefix)
                .connect(addrs)
                .await
                .expect("login by key")
        }
    };
    let call = |client: async_nats::Client, id: &Identity, operation: &'static str, body: Value| {
        let subject = format!("unibus.cp.{}.{operation}", id.sign_public_key().to_hex());
        async move {
            let reply = tokio::time::timeout(
                Duration::from_secs(5),
                client.request(subject, body.to_string().into()),
            )
            .await
            .expect("answered in time")
            .expect("answered");
            let reply = serde_json::from_slice::<Value>(&reply.payload).unwrap();
            assert!(reply.get("error").is_none(), "{operation} refused: {reply}");
            reply
        }
    };
    let alice_client = connect(&alice).await;
    assert_eq!(
        call(
            alice_client.clone(),
            &alice,
            "create_room",
            json!({ "room": "general" })
        )
        .await["id"],
        "general"
    );
    assert_eq!(
        call(
            alice_client.clone(),
            &alice,
            "add_member",
            json!({ "room": "general", "member": bob.sign_public_key().to_hex() })
        )
        .await,
        json!({})
    );

    // A revocation through the CLI (a writer that is neither instance) reaches both: dave's
    // sessions on every node are cut, and whichever instance answers his logins and calls
    // refuses them, while alice is untouched.
    let (dave, _) = register(&b, &invite(a_dir.path())).await;
    let dave_clients = [
        connect(&dave).await,
        connect(&dave).await,
        connect(&dave).await,
    ];
    for client in &dave_clients {
        // Both instances' caches hold dave as active before he is revoked.
        assert_eq!(
            call(client.clone(), &dave, "rooms", json!({})).await["rooms"],
            json!([])
        );
    }
    let revoked = command(
        a_dir.path(),
        &nats_url,
        &["user", "revoke", &dave.sign_public_key().to_hex()],
    )
    .output()
    .unwrap();
    assert!(revoked.status.success(), "{revoked:?}");
    let started = std::time::Instant::now();
    let connected =
        |c: &async_nats::Client| c.connection_state() == async_nats::connection::State::Connected;
    while dave_clients.iter().any(connected) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a revoked session survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        let login = async_nats::ConnectOptions::with_nkey(dave.nkey_seed().to_string())
            .custom_inbox_prefix(inbox_prefix(&dave.sign_public_key()))
            .connect(cluster.server_addrs())
            .await;
        assert!(login.is_err(), "a revoked key logged in");
    }
    assert_eq!(
        call(
            alice_client.clone(),
            &alice,
            "member",
            json!({ "room": "general" })
        )
        .await["member"],
        true
    );

    // Lose instance A: logins, the control plane and registration keep working through B.
    drop(a.take());
    let bob_client = connect(&bob).await;
    for _ in 0..20 {
        assert_eq!(
            call(
                bob_client.clone(),
                &bob,
                "member",
                json!({ "room": "general" })
            )
            .await["member"],
            true
        );
    }
    let (carol, _) = register(&b, &invite(b_dir.path())).await;
    let carol_client = connect(&carol).await;
    assert_eq!(
        call(carol_client, &carol, "rooms", json!({})).await["rooms"],
        json!([])
    );
}
