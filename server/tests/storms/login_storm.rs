//! Storms of logins against the real `membershipd` binary on the embedded default: thousands
//! of clients at once all get in, revoked ones are cut while the rest stay, and a restart of
//! the server under a crowd of SDK sessions ends none of them, even as they ask whether they
//! are still users. How fast is the `storm`
//! benchmark's question; these prove what happens. Bounds only keep a broken server from
//! hanging the run.

use crate::common::active_user;
use crate::daemon::EmbeddedServer;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use unibus::client::{ConnectionState, Session, SessionOptions, StatusCheck};
use unibus::Identity;
use unibus_server::store::{Snapshot, SqliteStore, Store};
use unibus_testkit::storm::{storm, Login};

const NEVER: Duration = Duration::from_secs(120);

/// A membershipd whose store already holds `n` active users, and their identities.
async fn server_with_users(n: usize) -> (EmbeddedServer, Vec<Arc<Identity>>) {
    let data = tempfile::tempdir().unwrap();
    let ids: Vec<Arc<Identity>> = (0..n)
        .map(|_| Arc::new(Identity::generate().unwrap()))
        .collect();
    let store = SqliteStore::open(data.path().join("unibus.db"))
        .await
        .unwrap();
    let snapshot = Snapshot {
        users: ids.iter().map(|id| active_user(id)).collect(),
        ..Snapshot::default()
    };
    store.import_snapshot(&snapshot).await.unwrap();
    drop(store);
    (EmbeddedServer::start_in(data).await, ids)
}

fn nats_url(server: &EmbeddedServer) -> String {
    format!("nats://127.0.0.1:{}", server.nats_port)
}

fn connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_at_once_all_get_in_and_revoked_ones_are_cut_under_load() {
    let _storm = crate::one_at_a_time().await;
    const CLIENTS: usize = 2_000;
    const REVOKED: usize = 20;
    let (server, ids) = server_with_users(CLIENTS).await;

    let report = storm(&[nats_url(&server)], &ids, Login::Unibus, NEVER).await;
    eprintln!(
        "{CLIENTS} at once: {} connected ({} on the first try), last after {:?}, p50 {:?}, p99 {:?}",
        report.clients.len(),
        report.first_try,
        report.time_to_last(),
        report.quantile(0.5),
        report.quantile(0.99),
    );
    assert_eq!(report.failed, 0, "every client gets in");
    assert_eq!(report.clients.len(), CLIENTS);

    // Load while revoking: a hundred clients keep asking the control plane.
    let load: Vec<_> = report.clients[REVOKED..REVOKED + 100]
        .iter()
        .zip(&ids[REVOKED..REVOKED + 100])
        .map(|(client, id)| {
            let (client, subject) = (
                client.clone(),
                format!(
                    "{}.rooms",
                    unibus::subjects::requests(&id.sign_public_key())
                ),
            );
            tokio::spawn(async move {
                loop {
                    let _ = client.request(subject.clone(), "{}".into()).await;
                }
            })
        })
        .collect();

    let started = Instant::now();
    for id in &ids[..REVOKED] {
        server.cli(&["user", "revoke", &id.sign_public_key().to_hex()]);
    }
    while report.clients[..REVOKED].iter().any(connected) {
        assert!(
            started.elapsed() < NEVER,
            "a revoked client is still connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{REVOKED} revoked with {CLIENTS} connected: all cut {:?} after the first revoke began",
        started.elapsed()
    );
    for task in load {
        task.abort();
    }
    let still = report.clients[REVOKED..]
        .iter()
        .filter(|c| connected(c))
        .count();
    assert_eq!(still, CLIENTS - REVOKED, "only the revoked are cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_a_crowd_of_sdk_sessions_ends_none_of_them() {
    let _storm = crate::one_at_a_time().await;
    const SESSIONS: usize = 300;
    let (mut server, ids) = server_with_users(SESSIONS).await;
    let urls = [nats_url(&server)];
    // Each session refused for half a second asks membershipd whether it is still a user (an
    // answer of "active", or none, must not end it).
    let options = SessionOptions {
        login_patience: NEVER,
        status_check: Some(StatusCheck {
            after_refusals_for: Duration::from_millis(500),
            ..StatusCheck::new(server.daemon.serving.public_url.clone())
        }),
        ..SessionOptions::default()
    };
    let sessions: Vec<Session> = futures::future::join_all(
        ids.iter()
            .map(|id| Session::connect(Arc::clone(id), &urls, options.clone())),
    )
    .await
    .into_iter()
    .map(|session| session.expect("every session logs in"))
    .collect();

    // Every state each session passes through, from now on.
    let logs: Vec<Arc<Mutex<Vec<ConnectionState>>>> =
        sessions.iter().map(|_| Arc::default()).collect();
    let watchers: Vec<_> = sessions
        .iter()
        .zip(&logs)
        .map(|(session, log)| {
            let (mut changes, log) = (session.state_changes(), Arc::clone(log));
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    let state = *changes.borrow();
                    log.lock().unwrap().push(state);
                }
            })
        })
        .collect();

    server.restart().await;
    let started = Instant::now();
    let back = |session: &Session, log: &Mutex<Vec<ConnectionState>>| {
        session.state() == ConnectionState::Connected
            && log.lock().unwrap().contains(&ConnectionState::Reconnecting)
    };
    while !sessions.iter().zip(&logs).all(|(s, log)| back(s, log)) {
        assert!(started.elapsed() < NEVER, "not every session came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{SESSIONS} sessions back {:?} after the restart",
        started.elapsed()
    );
    for watcher in watchers {
        watcher.abort();
    }
    for log in &logs {
        let log = log.lock().unwrap();
        assert!(
            !log.iter()
                .any(|state| matches!(state, ConnectionState::Ended(_))),
            "a session ended on the way: {log:?}"
        );
    }
}
