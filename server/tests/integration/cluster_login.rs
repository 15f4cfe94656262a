//! Cluster login by key, end to end: a real 3-node nats-server cluster configured for auth
//! callout, membershipd's callout service, and clients that log in with their own keys.

use crate::common;

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use std::time::Duration;

use common::{cluster_with_auth, login, register, start_callout, world, World};
use unibus::manifest::SignedManifest;
use unibus::protocol::status::KeyStatus;
use unibus::{Identity, InviteToken, KexPublicKey, RoomId, SignPublicKey};
use unibus_server::auth::callout::inbox_prefix;
use unibus_server::auth::revocation::Revoker;
use unibus_server::auth::setup::{AuthSetup, APP_ACCOUNT};
use unibus_server::store::{
    ChangeFeed, EpochPart, Invite, KvStore, KvStoreConfig, Millis, NewInvite, NewUser, Room,
    Snapshot, Store, StoreResult, User,
};
use unibus_testkit::NatsCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_active_users_log_in_with_their_own_key() {
    let w = world().await;
    let alice = register(&*w.store).await;
    let (client, _) = login(w.cluster.server_addrs(), &alice)
        .await
        .expect("an active user logs in");
    client.flush().await.unwrap();

    let stranger = Identity::generate().unwrap();
    assert!(
        login(w.cluster.server_addrs(), &stranger).await.is_err(),
        "unknown keys are refused"
    );

    let revoked = register(&*w.store).await;
    w.store
        .revoke_user(&revoked.sign_public_key())
        .await
        .unwrap();
    assert!(
        login(w.cluster.server_addrs(), &revoked).await.is_err(),
        "revoked keys are refused"
    );

    let deleted = register(&*w.store).await;
    w.store
        .delete_user(&deleted.sign_public_key())
        .await
        .unwrap();
    assert!(
        login(w.cluster.server_addrs(), &deleted).await.is_err(),
        "deleted keys are refused"
    );

    // Every node admits the user, not only the one the callout service is connected to.
    for i in 0..3 {
        let (client, _) = login(vec![w.cluster.client_url(i).parse().unwrap()], &alice)
            .await
            .unwrap();
        client.flush().await.unwrap();
    }
    drop(w.setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_reach_only_its_own_subjects() {
    let w = world().await;
    let (alice, bob) = (register(&*w.store).await, register(&*w.store).await);
    let (client, errors) = login(w.cluster.server_addrs(), &alice).await.unwrap();
    let (alice_hex, bob_hex) = (
        alice.sign_public_key().to_hex(),
        bob.sign_public_key().to_hex(),
    );

    // Allowed: its own control-plane subjects and notifications, and its own inbox (to which
    // it may also publish: the round trip that proves a login).
    client
        .publish(format!("unibus.cp.{alice_hex}.rooms"), "".into())
        .await
        .unwrap();
    let echo = client.new_inbox();
    let mut echoes = client.subscribe(echo.clone()).await.unwrap();
    client.publish(echo, "".into()).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), echoes.next())
            .await
            .unwrap()
            .is_some(),
        "its own inbox carried its message"
    );
    let _own = client
        .subscribe(format!("unibus.events.{alice_hex}.>"))
        .await
        .unwrap();
    // The server answers a connection's operations in order, so once the refusal of a
    // sentinel arrives, any refusal of the operations before it has arrived too.
    let sentinel = format!("unibus.cp.{bob_hex}.sentinel-1");
    client.publish(sentinel.clone(), "".into()).await.unwrap();
    let seen = violations_until(&errors, &sentinel).await;
    assert_eq!(seen, vec![sentinel], "own subjects were refused");

    // Denied: another user's requests and notifications, the KV buckets, admin and system
    // subjects, and the shared inbox namespace.
    client
        .publish(format!("unibus.cp.{bob_hex}.rooms"), "".into())
        .await
        .unwrap();
    client
        .publish("$KV.UNIBUS_users.x", "".into())
        .await
        .unwrap();
    client
        .publish("unibus.admin.users", "".into())
        .await
        .unwrap();
    client
        .publish("$SYS.REQ.USER.AUTH", "".into())
        .await
        .unwrap();
    let denied_subs = [
        format!("unibus.events.{bob_hex}.>"),
        "$KV.>".to_string(),
        "_INBOX.>".to_string(),
        format!("{}.>", inbox_prefix(&bob.sign_public_key())),
        ">".to_string(),
    ];
    let mut subs = Vec::new();
    for subject in &denied_subs {
        subs.push(client.subscribe(subject.clone()).await.unwrap());
    }
    let sentinel = format!("unibus.cp.{bob_hex}.sentinel-2");
    client.publish(sentinel.clone(), "".into()).await.unwrap();
    let seen = violations_until(&errors, &sentinel).await;
    // The first sentinel, then one refusal per denied operation, then this sentinel.
    assert_eq!(
        seen.len(),
        1 + 4 + denied_subs.len() + 1,
        "expected every denied operation to be refused, and nothing else: {seen:?}"
    );
}

/// Waits (up to 10 s) until a permissions violation naming `sentinel` has arrived, and returns
/// every violation so far, each as the text of its error.
async fn violations_until(errors: &Mutex<Vec<String>>, sentinel: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let violations: Vec<String> = errors
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.to_lowercase().contains("permissions violation"))
            .cloned()
            .collect();
        if violations.iter().any(|v| v.contains(sentinel)) {
            return violations
                .iter()
                .map(|v| {
                    if v.contains(sentinel) {
                        sentinel.to_string()
                    } else {
                        v.clone()
                    }
                })
                .collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sentinel was never refused: {violations:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_refused_when_the_store_is_unreachable() {
    // The store is KV on a cluster of its own, which then goes away.
    let store_cluster = NatsCluster::start(1).await.unwrap();
    let kv = KvStore::open(
        async_nats::connect(store_cluster.server_addrs())
            .await
            .unwrap(),
        KvStoreConfig {
            op_timeout: Duration::from_millis(800),
            ..KvStoreConfig::default()
        },
    )
    .await
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(kv);
    let alice = register(&*store).await;

    let setup = AuthSetup::generate().unwrap();
    let cluster = cluster_with_auth(&setup, 1).await;
    start_callout(&cluster, &setup, Arc::clone(&store)).await;
    let (client, _) = login(cluster.server_addrs(), &alice)
        .await
        .expect("logs in while the store answers");
    drop(client);

    drop(store_cluster);
    assert!(
        login(cluster.server_addrs(), &alice).await.is_err(),
        "no store, no login"
    );
}

/// A revoker of `w`'s application account that reads `store`, on a connection of the system
/// account's user; not yet running.
async fn revoker(w: &World, store: Arc<dyn Store>) -> Arc<Revoker> {
    let system = async_nats::ConnectOptions::with_user_and_password(
        "sys".into(),
        w.setup.sys_password.to_string(),
    )
    .connect(w.cluster.server_addrs())
    .await
    .unwrap();
    let revoker = Revoker::new(store, system, w.service.clone(), APP_ACCOUNT);
    Arc::new(revoker.sparing(w.setup.control.public_key()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_spares_the_control_planes_own_connection_in_the_users_account() {
    let w = world().await;
    // The control plane's user is in the application account too, and is not a registered
    // user: a sweep that did not spare it would cut membershipd's own control plane.
    let spared = revoker(&w, Arc::clone(&w.store)).await;
    assert_eq!(spared.sweep().await.unwrap(), 0);
    let (dave_client, _) = login(w.cluster.server_addrs(), &register(&*w.store).await)
        .await
        .unwrap();
    dave_client.flush().await.unwrap();
    assert_eq!(spared.sweep().await.unwrap(), 0, "dave is an active user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_deleted_users_are_told_then_cut_off_on_every_node_and_stay_out() {
    // How fast the cut is, is a benchmark's question (a starved CI runner proves nothing about
    // speed); this test proves that it happens, on every node, to exactly the right sessions,
    // and that each session is told why first. The bound only keeps a broken revoker from
    // hanging the run.
    const NEVER: Duration = Duration::from_secs(20);
    let w = world().await;

    let (alice, bob, carol, dave) = (
        register(&*w.store).await,
        register(&*w.store).await,
        register(&*w.store).await,
        register(&*w.store).await,
    );
    let notices = |id: &Identity| {
        format!(
            "{}.{}",
            unibus::subjects::events(&id.sign_public_key()),
            unibus::protocol::events::AccountNotice::SUBJECT_SUFFIX
        )
    };
    let mut sessions = Vec::new();
    let mut told = Vec::new();
    for i in 0..3 {
        let node = vec![w.cluster.client_url(i).parse().unwrap()];
        let (a, c) = (
            login(node.clone(), &alice).await.unwrap().0,
            login(node, &carol).await.unwrap().0,
        );
        told.push(a.subscribe(notices(&alice)).await.unwrap());
        told.push(c.subscribe(notices(&carol)).await.unwrap());
        a.flush().await.unwrap();
        c.flush().await.unwrap();
        sessions.push((a, c));
    }
    let (bob_client, _) = login(w.cluster.server_addrs(), &bob).await.unwrap();
    // Dave is revoked while no revoker runs: the sweep a revoker starts with finds him.
    let (dave_client, _) = login(w.cluster.server_addrs(), &dave).await.unwrap();
    w.store.revoke_user(&dave.sign_public_key()).await.unwrap();

    // The periodic sweep is far off: the cuts below come from the change feed.
    tokio::spawn(
        revoker(&w, Arc::clone(&w.store))
            .await
            .run(Duration::from_secs(3600)),
    );
    let connected =
        |c: &async_nats::Client| c.connection_state() == async_nats::connection::State::Connected;
    let started = std::time::Instant::now();
    while connected(&dave_client) {
        assert!(started.elapsed() < NEVER, "the first sweep never cut dave");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The revoker follows the feed from the moment it opened it: wait until that sweep is over
    // (dave is cut) before the changes it must see.
    let started = std::time::Instant::now();
    w.store.revoke_user(&alice.sign_public_key()).await.unwrap();
    w.store.delete_user(&carol.sign_public_key()).await.unwrap();
    while sessions.iter().any(|(a, c)| connected(a) || connected(c)) {
        assert!(
            started.elapsed() < NEVER,
            "a revoked session is still connected after {NEVER:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("all six revoked sessions cut after {:?}", started.elapsed());
    for mut notices in told {
        let notice = tokio::time::timeout(Duration::from_secs(5), notices.next())
            .await
            .expect("each session is told before it is cut")
            .expect("a notice");
        assert_eq!(&notice.payload[..], br#"{"kind":"revoked"}"#);
    }

    // They stay out: a fresh login with either key is refused on every node (their old
    // clients' reconnects are the same login), and others are untouched.
    for i in 0..3 {
        let node = vec![w.cluster.client_url(i).parse().unwrap()];
        assert!(
            login(node.clone(), &alice).await.is_err(),
            "revoked, node {i}"
        );
        assert!(login(node, &carol).await.is_err(), "deleted, node {i}");
    }
    assert!(sessions.iter().all(|(a, c)| !connected(a) && !connected(c)));
    assert!(connected(&bob_client));
    bob_client.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_under_way_does_not_hold_back_the_cuts_the_feed_asks_for() {
    // A sweep over many connections takes seconds (a page of 1,000 at a time). Here one never
    // ends: the store holds its question about one connected user. A revocation meanwhile is
    // still cut, from the change feed. The bound only keeps a broken revoker from hanging.
    const NEVER: Duration = Duration::from_secs(20);
    let w = world().await;
    let (held, bob) = (register(&*w.store).await, register(&*w.store).await);
    let (held_client, _) = login(w.cluster.server_addrs(), &held).await.unwrap();
    let (bob_client, _) = login(w.cluster.server_addrs(), &bob).await.unwrap();

    let store = Arc::new(HoldsOneUser::new(
        Arc::clone(&w.store),
        held.sign_public_key(),
    ));
    let revoker = revoker(&w, Arc::clone(&store) as Arc<dyn Store>).await;
    tokio::spawn(revoker.run(Duration::from_secs(3600)));
    // The first sweep, which starts once the feed is open, is stuck on the held user.
    tokio::time::timeout(NEVER, store.holding.notified())
        .await
        .expect("the first sweep asks about every connected user");

    w.store.revoke_user(&bob.sign_public_key()).await.unwrap();
    let started = std::time::Instant::now();
    while bob_client.connection_state() == async_nats::connection::State::Connected {
        assert!(
            started.elapsed() < NEVER,
            "the cut waited for the sweep under way"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sweep, let go, finds the held user active: its session stays.
    store.release.add_permits(1);
    held_client.flush().await.unwrap();
    assert_eq!(
        held_client.connection_state(),
        async_nats::connection::State::Connected
    );
}

/// A store whose `get_user` of one key waits until a permit is added to `release`, and says so
/// on `holding`; every other call goes straight to `inner`.
struct HoldsOneUser {
    inner: Arc<dyn Store>,
    held: SignPublicKey,
    holding: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl HoldsOneUser {
    fn new(inner: Arc<dyn Store>, held: SignPublicKey) -> Self {
        Self {
            inner,
            held,
            holding: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Store for HoldsOneUser {
    async fn get_user(&self, key: &SignPublicKey) -> StoreResult<User> {
        if *key == self.held {
            self.holding.notify_one();
            // The semaphore is never closed.
            let _released = self.release.acquire().await;
        }
        self.inner.get_user(key).await
    }
    async fn add_user(&self, user: NewUser) -> StoreResult<User> {
        self.inner.add_user(user).await
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.inner.list_users().await
    }
    async fn revoke_user(&self, key: &SignPublicKey) -> StoreResult<()> {
        self.inner.revoke_user(key).await
    }
    async fn delete_user(&self, key: &SignPublicKey) -> StoreResult<()> {
        self.inner.delete_user(key).await
    }
    async fn key_status(&self, key: &SignPublicKey) -> StoreResult<KeyStatus> {
        self.inner.key_status(key).await
    }
    async fn create_invite(&self, invite: NewInvite) -> StoreResult<(InviteToken, Invite)> {
        self.inner.create_invite(invite).await
    }
    async fn get_invite(&self, id: &str) -> StoreResult<Invite> {
        self.inner.get_invite(id).await
    }
    async fn list_invites(&self) -> StoreResult<Vec<Invite>> {
        self.inner.list_invites().await
    }
    async fn cancel_invite(&self, id: &str) -> StoreResult<()> {
        self.inner.cancel_invite(id).await
    }
    async fn redeem_invite(
        &self,
        token: &InviteToken,
        sign_key: &SignPublicKey,
        kex_key: &KexPublicKey,
    ) -> StoreResult<User> {
        self.inner.redeem_invite(token, sign_key, kex_key).await
    }
    async fn create_room(&self, id: &RoomId, owner: &SignPublicKey) -> StoreResult<Room> {
        self.inner.create_room(id, owner).await
    }
    async fn get_room(&self, id: &RoomId) -> StoreResult<Room> {
        self.inner.get_room(id).await
    }
    async fn list_rooms(&self) -> StoreResult<Vec<Room>> {
        self.inner.list_rooms().await
    }
    async fn add_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()> {
        self.inner.add_member(room, member).await
    }
    async fn remove_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()> {
        self.inner.remove_member(room, member).await
    }
    async fn list_members(&self, room: &RoomId) -> StoreResult<Vec<SignPublicKey>> {
        self.inner.list_members(room).await
    }
    async fn is_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<bool> {
        self.inner.is_member(room, member).await
    }
    async fn rooms_for_member(&self, member: &SignPublicKey) -> StoreResult<Vec<RoomId>> {
        self.inner.rooms_for_member(member).await
    }
    async fn active_members(
        &self,
        room: &RoomId,
        after: Option<&SignPublicKey>,
        limit: usize,
    ) -> StoreResult<Vec<(SignPublicKey, KexPublicKey)>> {
        self.inner.active_members(room, after, limit).await
    }
    async fn put_epoch(&self, manifest: &SignedManifest) -> StoreResult<()> {
        self.inner.put_epoch(manifest).await
    }
    async fn member_part(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: Option<u64>,
    ) -> StoreResult<EpochPart> {
        self.inner.member_part(room, member, epoch).await
    }
    async fn manifest(&self, room: &RoomId, epoch: u64) -> StoreResult<SignedManifest> {
        self.inner.manifest(room, epoch).await
    }
    async fn epoch_head(&self, room: &RoomId, epoch: u64) -> StoreResult<Vec<u8>> {
        self.inner.epoch_head(room, epoch).await
    }
    async fn put_history_shares(
        &self,
        room: &RoomId,
        shares: &[unibus_server::store::StoredShare],
    ) -> StoreResult<()> {
        self.inner.put_history_shares(room, shares).await
    }
    async fn history_share(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: u64,
    ) -> StoreResult<Vec<u8>> {
        self.inner.history_share(room, member, epoch).await
    }
    async fn record_nonce(
        &self,
        nonce: &str,
        now: Millis,
        expires_at: Millis,
    ) -> StoreResult<bool> {
        self.inner.record_nonce(nonce, now, expires_at).await
    }
    async fn changes(&self) -> StoreResult<ChangeFeed> {
        self.inner.changes().await
    }
    async fn export_snapshot(&self) -> StoreResult<Snapshot> {
        self.inner.export_snapshot().await
    }
    async fn import_snapshot(&self, snapshot: &Snapshot) -> StoreResult<()> {
        self.inner.import_snapshot(snapshot).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_login_is_still_undecided_when_the_server_pings_it_waits_for_admission() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use unibus::client::{ConnectionState, Session, SessionOptions};
    use unibus_server::auth::callout::{Callout, AUTH_CALLOUT_SUBJECT};

    let setup = AuthSetup::generate().unwrap();
    let cluster = cluster_with_auth(&setup, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        unibus_server::store::SqliteStore::open(dir.path().join("db"))
            .await
            .unwrap(),
    );
    let alice = Arc::new(register(&*store).await);
    // The callout's subject, held by the test: logins wait until it answers.
    let service = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
        .connect(cluster.server_addrs())
        .await
        .unwrap();
    let mut held = service.subscribe(AUTH_CALLOUT_SUBJECT).await.unwrap();
    service.flush().await.unwrap();
    let issuer = nkeys::KeyPair::from_seed(&setup.issuer.seed().unwrap()).unwrap();
    let callout = Callout::new(store, issuer, APP_ACCOUNT);

    let url = cluster.client_url(0);
    let connecting = tokio::spawn({
        let (alice, url) = (Arc::clone(&alice), url.clone());
        async move { Session::connect(alice, &[url], SessionOptions::default()).await }
    });
    let login = tokio::time::timeout(Duration::from_secs(10), held.next())
        .await
        .expect("alice's login reached the callout")
        .unwrap();

    // nats-server pings a connection two seconds after accepting it, decided or not. A probe
    // accepted after alice's connection is pinged after hers, so once the probe has its PING,
    // alice's client has had one too (and async-nats took it for the login's success).
    let address = url.trim_start_matches("nats://");
    let mut probe = tokio::net::TcpStream::connect(address).await.unwrap();
    probe
        .write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&seen).contains("PING\r\n") {
            let mut chunk = [0u8; 4096];
            let n = probe.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the probe was closed before its PING");
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the server pinged the probe");
    // A moment for alice's client to act on its own PING; the session must still be waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !connecting.is_finished(),
        "Session::connect returned while its login was undecided"
    );

    // Admit her: the session is returned, connected.
    let answer = callout
        .respond(std::str::from_utf8(&login.payload).unwrap())
        .await
        .unwrap();
    service
        .publish(login.reply.unwrap(), answer.into())
        .await
        .unwrap();
    let session = tokio::time::timeout(Duration::from_secs(15), connecting)
        .await
        .expect("admitted in time")
        .unwrap()
        .expect("the session logged in");
    assert_eq!(session.state(), ConnectionState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_the_callout_cannot_answer_within_its_budget_is_refused_before_the_first_ping() {
    use unibus_server::auth::admission::{Admission, LOGIN_BUDGET};
    use unibus_server::auth::callout::Callout;

    let setup = AuthSetup::generate().unwrap();
    let cluster = cluster_with_auth(&setup, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(
        unibus_server::store::SqliteStore::open(dir.path().join("db"))
            .await
            .unwrap(),
    );
    let (alice, bob) = (register(&*inner).await, register(&*inner).await);
    // Alice's login holds the callout's only worker until the test lets it go.
    let store = Arc::new(HoldsOneUser::new(inner, alice.sign_public_key()));
    let service = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
        .connect(cluster.server_addrs())
        .await
        .unwrap();
    let issuer = nkeys::KeyPair::from_seed(&setup.issuer.seed().unwrap()).unwrap();
    let one_worker = Admission {
        at_once: 1,
        ..Admission::default()
    };
    let callout = Callout::with_admission(
        Arc::clone(&store) as Arc<dyn Store>,
        issuer,
        APP_ACCOUNT,
        one_worker,
    );
    let _serving = Arc::new(callout).start(service).await.unwrap();

    let addrs = cluster.server_addrs();
    let alice_login = tokio::spawn({
        let addrs = addrs.clone();
        async move { login(addrs, &alice).await.map(|(client, _)| client) }
    });
    tokio::time::timeout(Duration::from_secs(10), store.holding.notified())
        .await
        .expect("alice's login reached the store");

    // Bob's login cannot get the worker within its budget. A client that gives up when
    // nats-server first pings it (2 s after accepting it), as stock nats.go does, and whose
    // connect times out at 2 s, nats.go's default, hears that it was refused before then.
    assert!(LOGIN_BUDGET < Duration::from_secs(2));
    let refused = async_nats::ConnectOptions::with_nkey(bob.nkey_seed().to_string())
        .custom_inbox_prefix(inbox_prefix(&bob.sign_public_key()))
        .connection_timeout(Duration::from_secs(2))
        .connect(addrs.clone())
        .await
        .map(|_| ())
        .expect_err("bob cannot be answered in time");
    assert_eq!(
        refused.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "a refusal, not an undecided login: {refused}"
    );

    // Alice, let go, is admitted; so is bob when he tries again.
    store.release.add_permits(1);
    let alice_client = tokio::time::timeout(Duration::from_secs(10), alice_login)
        .await
        .expect("alice is answered")
        .unwrap()
        .expect("alice is admitted");
    alice_client.flush().await.unwrap();
    let (bob_client, _) = login(addrs, &bob).await.expect("bob is admitted on retry");
    bob_client.flush().await.unwrap();
}
