//! `kill -9` of membershipd in the middle of a storm of 1,000 registrations: once clients retry,
//! every acknowledged user exists, every invite is used by exactly the user who redeemed it, and
//! no invite is burned without its user.

use crate::daemon;

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use daemon::{membershipd, Daemon};
use serde_json::Value;
use unibus::registration::{RegisterBody, RegisterRequest};
use unibus::{Identity, InviteToken};
use unibus_server::store::{InviteStatus, NewInvite, SqliteStore, Store};

const REGISTRATIONS: usize = 1000;
const CONCURRENCY: usize = 32;
/// Kill the server once this many registrations were acknowledged.
const KILL_AFTER: usize = 300;

async fn spawn(data: &std::path::Path, http: u16, nats: u16) -> Daemon {
    let mut command = membershipd();
    command
        .arg("--data-dir")
        .arg(data)
        .args([
            "--listen",
            &format!("127.0.0.1:{http}"),
            "--nats-listen",
            &format!("127.0.0.1:{nats}"),
        ])
        .arg("--nats-server")
        .arg(unibus_testkit::nats_server_binary().unwrap())
        .args([
            "--register-rate",
            "1000000",
            "--register-burst",
            "1000000",
            "serve",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Daemon::spawn(command, data).await
}

/// One registration attempt: `Some(status, body)` if the server answered, `None` if the
/// connection failed (the server died under it).
async fn attempt(http: &reqwest::Client, url: &str, body: &Value) -> Option<(u16, Value)> {
    let response = http.post(url).json(body).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_a_registration_storm_loses_no_acknowledged_user_and_burns_no_invite_alone()
{
    let _storm = crate::one_at_a_time().await;
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("unibus.db");
    // The invites, minted before the storm.
    let mut tokens: Vec<InviteToken> = Vec::new();
    {
        let store = SqliteStore::open(&db).await.unwrap();
        for _ in 0..REGISTRATIONS {
            tokens.push(store.create_invite(NewInvite::default()).await.unwrap().0);
        }
    }
    let bodies: Vec<(Identity, Value)> = tokens
        .into_iter()
        .map(|token| {
            let id = Identity::generate().unwrap();
            let request = RegisterRequest::sign(&id, token);
            let body = serde_json::to_value(RegisterBody::from(&request)).unwrap();
            (id, body)
        })
        .collect();
    let bodies = Arc::new(bodies);

    let first = spawn(data.path(), 0, 0).await;
    let (http_port, nats_port) = (first.serving.http.port(), first.nats_port());
    let url = format!("{}/register", first.http);
    let mut daemon = Some(first);

    // The storm: CONCURRENCY workers share the 1,000 registrations; the test kills the server
    // with SIGKILL once KILL_AFTER were acknowledged.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<std::sync::Mutex<HashMap<usize, Option<u16>>>> = Arc::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (bodies, acknowledged, next, outcomes, client, url) = (
            Arc::clone(&bodies),
            Arc::clone(&acknowledged),
            Arc::clone(&next),
            Arc::clone(&outcomes),
            client.clone(),
            url.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= REGISTRATIONS {
                    break;
                }
                let status = attempt(&client, &url, &bodies[i].1).await.map(|(s, _)| s);
                if status == Some(200) {
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                outcomes.lock().unwrap().insert(i, status);
            }
        }));
    }
    while acknowledged.load(Ordering::Relaxed) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(daemon.take()); // SIGKILL, mid-storm
    for worker in workers {
        worker.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let acked: Vec<usize> = outcomes
        .iter()
        .filter(|(_, s)| **s == Some(200))
        .map(|(i, _)| *i)
        .collect();
    let unanswered: Vec<usize> = outcomes
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| *i)
        .collect();
    assert!(
        acked.len() >= KILL_AFTER && !unanswered.is_empty(),
        "the kill must land mid-storm"
    );
    assert!(
        outcomes.values().all(|s| matches!(s, Some(200) | None)),
        "before the kill, every answer is a success: {outcomes:?}"
    );

    // Restart on the same data and let every client that got no answer retry.
    let _daemon = spawn(data.path(), http_port, nats_port).await;
    for &i in &unanswered {
        let (status, reply) = attempt(&client, &url, &bodies[i].1)
            .await
            .expect("the server answers");
        assert_eq!(status, 200, "registration {i} after restart: {reply}");
    }
    // An acknowledged registration retried after the restart still gets the same success.
    let (status, _) = attempt(&client, &url, &bodies[acked[0]].1).await.unwrap();
    assert_eq!(status, 200);
    drop(_daemon);

    // Every user exists, and every invite is used by exactly its own user.
    let store = SqliteStore::open(&db).await.unwrap();
    for (id, _) in bodies.iter() {
        assert!(
            store.is_authorized(&id.sign_public_key()).await,
            "a registered user is missing"
        );
    }
    let invites = store.list_invites().await.unwrap();
    assert_eq!(invites.len(), REGISTRATIONS);
    for invite in invites {
        assert_eq!(invite.status_at(invite.created_at), InviteStatus::Used);
        let user = store
            .get_user(&invite.used_by.unwrap())
            .await
            .expect("no invite is burned without its user");
        assert_eq!(user.invite_id.as_deref(), Some(invite.id.as_str()));
    }
    eprintln!(
        "storm: {} acknowledged before the kill, {} retried after it",
        acked.len(),
        unanswered.len()
    );
}
