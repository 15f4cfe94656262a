//! The HTTP API over real HTTP on 127.0.0.1. `POST /register`: success, retries, every refusal
//! with its own code, malformed bodies that change nothing, the body limit and the rate limit.
//! `POST /admin`: signed requests work; unsigned, forged, stale, replayed and non-admin ones
//! do not. `POST /status`: a key learns its own status; forged, stale and malformed requests
//! are refused. `GET /invite` and `/.well-known/`: the invite page with its headers, the
//! association files only when configured, and hostile requests that get the page or a clean
//! 4xx and change nothing (the page in a real browser: `server/tests/invite_page/`).

use std::sync::Arc;

use serde_json::{json, Value};
use unibus::protocol::registration::RegisterReply;
use unibus::protocol::status::{KeyStatus, StatusBody, StatusReply, StatusRequest};
use unibus::registration::{RegisterBody, RegisterRequest};
use unibus::{Identity, InviteToken};
use unibus_server::http::{
    AppState, HttpLimits, LinkPages, RateLimiter, ServeOptions, ANDROID_PATH, APPLE_PATH,
};
use unibus_server::store::{Invite, NewInvite, NewUser, SqliteStore, Store};

struct Server {
    base: String,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// What a test server is started with.
struct Setup {
    register_limiter: RateLimiter,
    admin_limiter: RateLimiter,
    status_limiter: RateLimiter,
    limits: HttpLimits,
    link_pages: LinkPages,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            register_limiter: RateLimiter::new(1e9, 1_000_000),
            admin_limiter: RateLimiter::new(1e9, 1_000_000),
            status_limiter: RateLimiter::new(1e9, 1_000_000),
            limits: HttpLimits::default(),
            link_pages: LinkPages::default(),
        }
    }
}

async fn start_with(setup: Setup) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("db")).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        nats_urls: vec!["nats://127.0.0.1:4222".into()],
        register_limiter: setup.register_limiter,
        admin_limiter: setup.admin_limiter,
        status_limiter: setup.status_limiter,
        public_url: base.clone(),
        nats: None,
        link_pages: setup.link_pages,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        tls: None,
        limits: setup.limits,
    };
    tokio::spawn(async move {
        unibus_server::http::serve(listener, state, options, async {
            let _ = stopped.await;
        })
        .await
    });
    Server {
        base,
        store,
        _dir: dir,
        _stop: stop,
    }
}

async fn start() -> Server {
    start_with(Setup::default()).await
}

fn body(request: &RegisterRequest) -> Value {
    serde_json::to_value(RegisterBody::from(request)).unwrap()
}

async fn post(server: &Server, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/register", server.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_json(server: &Server, value: &Value) -> (u16, Value) {
    post(server, value.to_string()).await
}

/// A fresh invite in the server's store: its token and record.
async fn new_invite(server: &Server) -> (InviteToken, Invite) {
    server
        .store
        .create_invite(NewInvite::default())
        .await
        .unwrap()
}

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn registering_redeems_the_invite_and_a_retry_gets_the_same_success() {
    let server = start().await;
    let (token, invite) = new_invite(&server).await;
    let me = Identity::generate().unwrap();
    let request = RegisterRequest::sign(&me, token);

    let (status, reply) = post_json(&server, &body(&request)).await;
    assert_eq!(status, 200, "{reply}");
    let ok: RegisterReply = serde_json::from_value(reply.clone()).unwrap();
    assert_eq!(ok.sign_public_key, me.sign_public_key());
    assert_eq!(ok.nats_urls, vec!["nats://127.0.0.1:4222".to_string()]);
    assert!(server.store.is_authorized(&me.sign_public_key()).await);

    // The response was "lost": the same request again succeeds the same way.
    let (status, again) = post_json(&server, &body(&request)).await;
    assert_eq!((status, &again), (200, &reply));
    assert_eq!(
        server.store.get_invite(&invite.id).await.unwrap().used_by,
        Some(me.sign_public_key())
    );
}

#[tokio::test]
async fn each_refusal_has_its_own_code_and_status() {
    let server = start().await;
    let store = &server.store;
    let signed = |token: InviteToken| RegisterRequest::sign(&Identity::generate().unwrap(), token);

    let (status, reply) =
        post_json(&server, &body(&signed(InviteToken::generate().unwrap()))).await;
    assert_eq!((status, code(&reply)), (404, "invite_unknown"));

    let (used, _) = new_invite(&server).await;
    let used_twice = used.clone();
    assert_eq!(post_json(&server, &body(&signed(used))).await.0, 200);
    let (status, reply) = post_json(&server, &body(&signed(used_twice))).await;
    assert_eq!((status, code(&reply)), (409, "invite_used"));

    let (expired, _) = store
        .create_invite(NewInvite {
            ttl: std::time::Duration::ZERO,
            ..NewInvite::default()
        })
        .await
        .unwrap();
    let (status, reply) = post_json(&server, &body(&signed(expired))).await;
    assert_eq!((status, code(&reply)), (410, "invite_expired"));

    let (cancelled, invite) = new_invite(&server).await;
    store.cancel_invite(&invite.id).await.unwrap();
    let (status, reply) = post_json(&server, &body(&signed(cancelled))).await;
    assert_eq!((status, code(&reply)), (410, "invite_cancelled"));

    let existing = Identity::generate().unwrap();
    store
        .add_user(NewUser {
            sign_key: existing.sign_public_key(),
            kex_key: existing.kex_public_key(),
            admin: false,
        })
        .await
        .unwrap();
    let (token, _) = new_invite(&server).await;
    let (status, reply) = post_json(&server, &body(&RegisterRequest::sign(&existing, token))).await;
    assert_eq!((status, code(&reply)), (409, "user_exists"));

    let (token, invite) = new_invite(&server).await;
    let mut forged = body(&signed(token));
    forged["kex_public_key"] = json!(Identity::generate().unwrap().kex_public_key().to_hex());
    let (status, reply) = post_json(&server, &forged).await;
    assert_eq!((status, code(&reply)), (401, "bad_signature"));
    let mut bad_key = forged.clone();
    bad_key["sign_public_key"] = json!("0".repeat(64));
    let (status, reply) = post_json(&server, &bad_key).await;
    assert_eq!((status, code(&reply)), (400, "bad_key"));
    let mut bad_token = forged;
    bad_token["token"] = json!("abc");
    let (status, reply) = post_json(&server, &bad_token).await;
    assert_eq!((status, code(&reply)), (400, "bad_token"));
    let still = store.get_invite(&invite.id).await.unwrap();
    assert!(
        still.used_by.is_none(),
        "refused requests must not burn the invite"
    );

    let (status, reply) = post(&server, "{").await;
    assert_eq!((status, code(&reply)), (400, "malformed_body"));
    let (status, reply) = post(&server, vec![b'x'; 64 * 1024]).await;
    assert_eq!((status, code(&reply)), (413, "too_large"));
}

/// 200 malformed bodies, each built differently: all get a 4xx and the store does not change.
#[tokio::test]
async fn malformed_bodies_get_a_client_error_and_change_nothing() {
    let server = start().await;
    let (token, invite) = new_invite(&server).await;
    let good = body(&RegisterRequest::sign(
        &Identity::generate().unwrap(),
        token,
    ));
    let before = server.store.export_snapshot().await.unwrap();

    let fields = ["token", "sign_public_key", "kex_public_key", "signature"];
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove(*field);
        bodies.push(missing.to_string().into());
        for bad in [
            json!(null),
            json!(7),
            json!([]),
            json!({}),
            json!(""),
            json!("zz"),
            json!("0".repeat(64)),
            json!("F".repeat(200)),
        ] {
            let mut changed = good.clone();
            changed[*field] = bad;
            bodies.push(changed.to_string().into());
        }
        // Flip one hex digit of the field: a different token, key or signature.
        let mut flipped = good.clone();
        let text = flipped[*field].as_str().unwrap().to_string();
        let digit = if text.as_bytes()[i] == b'0' { "1" } else { "0" };
        flipped[*field] = json!(format!("{}{}{}", &text[..i], digit, &text[i + 1..]));
        bodies.push(flipped.to_string().into());
    }
    let mut extra = good.clone();
    extra["admin"] = json!(true);
    bodies.push(extra.to_string().into());
    for text in [
        "",
        "null",
        "[]",
        "\"x\"",
        "{\"token\":",
        "{}",
        "true",
        "{\"token\":1e999}",
    ] {
        bodies.push(text.into());
    }
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    while bodies.len() < 200 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 600) as usize;
        let mut junk = good.to_string().into_bytes();
        junk.truncate(len.min(junk.len()));
        junk.push((seed >> 8) as u8);
        bodies.push(junk);
    }

    for (i, bad) in bodies.into_iter().enumerate() {
        let (status, reply) = post(&server, bad).await;
        assert!(
            (400..500).contains(&status),
            "body {i}: status {status} {reply}"
        );
        assert!(reply["error"]["code"].is_string(), "body {i}: {reply}");
    }
    assert_eq!(
        server.store.export_snapshot().await.unwrap(),
        before,
        "the store changed"
    );
    assert!(server
        .store
        .get_invite(&invite.id)
        .await
        .unwrap()
        .used_by
        .is_none());
    // And the good body still works afterwards.
    assert_eq!(post_json(&server, &good).await.0, 200);
}

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let server = start_with(Setup {
        register_limiter: RateLimiter::new(0.0, 3),
        ..Setup::default()
    })
    .await;
    for _ in 0..3 {
        let (status, reply) = post(&server, "{}").await;
        assert_eq!((status, code(&reply)), (400, "malformed_body"));
    }
    let (status, reply) = post(&server, "{}").await;
    assert_eq!((status, code(&reply)), (429, "rate_limited"));
}

#[tokio::test]
async fn health_reports_the_store() {
    let server = start().await;
    let reply: Value = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["status"], "ok");
}

async fn admin_call(
    server: &Server,
    admin: &Identity,
    operation: &str,
    params: Value,
    age_ms: i64,
    nonce: &str,
) -> (u16, Value, Vec<u8>, String) {
    let body = json!({
        "admin": admin.sign_public_key().to_hex(),
        "timestamp": unibus_server::store::now_millis() - age_ms,
        "nonce": nonce,
        "operation": operation,
        "params": params,
    })
    .to_string()
    .into_bytes();
    let signature = unibus::admin::sign_admin_body(admin, &body).to_hex();
    let (status, reply) = send_admin(server, body.clone(), Some(&signature)).await;
    (status, reply, body, signature)
}

async fn send_admin(server: &Server, body: Vec<u8>, signature: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/admin", server.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header(unibus::admin::SIGNATURE_HEADER, signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn nonce() -> String {
    hex::encode(&InviteToken::generate().unwrap().as_bytes()[..16])
}

async fn admin_user(server: &Server) -> Identity {
    let admin = Identity::generate().unwrap();
    server
        .store
        .add_user(NewUser {
            sign_key: admin.sign_public_key(),
            kex_key: admin.kex_public_key(),
            admin: true,
        })
        .await
        .unwrap();
    admin
}

#[tokio::test]
async fn an_admin_manages_users_invites_and_rooms_with_signed_requests() {
    let server = start().await;
    let admin = admin_user(&server).await;
    let bob = Identity::generate().unwrap();
    let bob_hex = bob.sign_public_key().to_hex();

    let (status, user, ..) = admin_call(
        &server,
        &admin,
        "user.add",
        json!({ "sign_public_key": bob_hex, "kex_public_key": bob.kex_public_key().to_hex() }),
        0,
        &nonce(),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    let (_, users, ..) = admin_call(&server, &admin, "user.list", json!({}), 0, &nonce()).await;
    assert_eq!(users.as_array().unwrap().len(), 2);

    let (status, created, ..) = admin_call(
        &server,
        &admin,
        "invite.create",
        json!({ "ttl_hours": 1 }),
        0,
        &nonce(),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let link = unibus::InviteLink::parse(created["link"].as_str().unwrap()).unwrap();
    let invite = server
        .store
        .get_invite(created["invite"]["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        invite.created_by,
        Some(admin.sign_public_key()),
        "the audit trail names the admin"
    );
    assert_eq!(unibus_server::store::invite_id(link.token()), invite.id);

    let (status, room, ..) = admin_call(
        &server,
        &admin,
        "room.create",
        json!({ "room": "general", "owner": bob_hex }),
        0,
        &nonce(),
    )
    .await;
    assert_eq!(
        (status, room["owner"].as_str()),
        (200, Some(bob_hex.as_str()))
    );
    let (status, reply, ..) = admin_call(
        &server,
        &admin,
        "room.create",
        json!({ "room": "general", "owner": bob_hex }),
        0,
        &nonce(),
    )
    .await;
    assert_eq!((status, code(&reply)), (409, "room_exists"));
    let (status, ..) = admin_call(
        &server,
        &admin,
        "user.revoke",
        json!({ "sign_public_key": bob_hex }),
        0,
        &nonce(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!server.store.is_authorized(&bob.sign_public_key()).await);
    let (status, reply, ..) = admin_call(&server, &admin, "user.fly", json!({}), 0, &nonce()).await;
    assert_eq!((status, code(&reply)), (400, "unknown_operation"));
}

#[tokio::test]
async fn unsigned_forged_stale_replayed_and_non_admin_requests_are_refused() {
    let server = start().await;
    let admin = admin_user(&server).await;

    let (status, _, body, signature) =
        admin_call(&server, &admin, "user.list", json!({}), 0, &nonce()).await;
    assert_eq!(status, 200);
    // The very same request again: a replay.
    let (status, reply) = send_admin(&server, body.clone(), Some(&signature)).await;
    assert_eq!((status, code(&reply)), (401, "replayed"));
    // No signature, or a signature over other bytes.
    let (status, reply) = send_admin(&server, body.clone(), None).await;
    assert_eq!((status, code(&reply)), (401, "bad_signature"));
    let mut forged = body;
    let at = forged.len() - 3;
    forged[at] = b' ';
    let (status, reply) = send_admin(&server, forged, Some(&signature)).await;
    assert!(
        matches!(
            (status, code(&reply)),
            (401, "bad_signature") | (400, "malformed_body")
        ),
        "{status} {reply}"
    );
    // Too old, and too far in the future.
    let (status, reply, ..) =
        admin_call(&server, &admin, "user.list", json!({}), 120_000, &nonce()).await;
    assert_eq!((status, code(&reply)), (401, "stale_request"));
    let (status, reply, ..) =
        admin_call(&server, &admin, "user.list", json!({}), -120_000, &nonce()).await;
    assert_eq!((status, code(&reply)), (401, "stale_request"));
    // A valid signature by a key that is not an admin, or no longer one.
    let user = Identity::generate().unwrap();
    server
        .store
        .add_user(NewUser {
            sign_key: user.sign_public_key(),
            kex_key: user.kex_public_key(),
            admin: false,
        })
        .await
        .unwrap();
    let (status, reply, ..) = admin_call(&server, &user, "user.list", json!({}), 0, &nonce()).await;
    assert_eq!((status, code(&reply)), (403, "not_admin"));
    server
        .store
        .revoke_user(&admin.sign_public_key())
        .await
        .unwrap();
    let (status, reply, ..) =
        admin_call(&server, &admin, "user.list", json!({}), 0, &nonce()).await;
    assert_eq!((status, code(&reply)), (403, "not_admin"));
    // None of it changed anything.
    assert_eq!(server.store.list_users().await.unwrap().len(), 2);
}

#[tokio::test]
async fn registration_works_over_https_and_plain_http_to_the_tls_port_does_not() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = unibus_server::http::TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&tls.cert, certified.cert.pem()).unwrap();
    std::fs::write(&tls.key, certified.signing_key.serialize_pem()).unwrap();

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("db")).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        nats_urls: vec![],
        register_limiter: RateLimiter::new(1e9, 1_000_000),
        admin_limiter: RateLimiter::new(1e9, 1_000_000),
        status_limiter: RateLimiter::new(1e9, 1_000_000),
        public_url: format!("https://localhost:{port}"),
        nats: None,
        link_pages: Default::default(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = unibus_server::http::ServeOptions {
        tls: Some(tls.clone()),
        ..Default::default()
    };
    tokio::spawn(async move {
        unibus_server::http::serve(listener, state, options, async {
            let _ = stopped.await;
        })
        .await
    });

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let (token, _) = store.create_invite(NewInvite::default()).await.unwrap();
    let me = Identity::generate().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let reply = loop {
        match client
            .post(format!("https://localhost:{port}/register"))
            .json(&body(&RegisterRequest::sign(&me, token.clone())))
            .send()
            .await
        {
            Ok(reply) => break reply,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(reply.status(), 200);
    assert!(store.is_authorized(&me.sign_public_key()).await);
    let plain = reqwest::get(format!("http://localhost:{port}/healthz")).await;
    assert!(
        !plain.is_ok_and(|r| r.status().is_success()),
        "plain HTTP must not be served on the TLS port"
    );
    drop(stop);
}

/// Signs `body` (any JSON, sent as is) with `admin`'s key and posts it to `/admin`.
async fn signed_admin(server: &Server, admin: &Identity, body: &Value) -> (u16, Value) {
    let bytes = body.to_string().into_bytes();
    let signature = unibus::admin::sign_admin_body(admin, &bytes).to_hex();
    send_admin(server, bytes, Some(&signature)).await
}

fn admin_body(admin: &Identity, operation: &str, params: Value) -> Value {
    json!({
        "admin": admin.sign_public_key().to_hex(),
        "timestamp": unibus_server::store::now_millis(),
        "nonce": nonce(),
        "operation": operation,
        "params": params,
    })
}

#[tokio::test]
async fn a_deleted_user_replaying_its_own_registration_stays_deleted() {
    let server = start().await;
    let (token, _) = server
        .store
        .create_invite(NewInvite {
            admin: true,
            ..NewInvite::default()
        })
        .await
        .unwrap();
    let me = Identity::generate().unwrap();
    let original = body(&RegisterRequest::sign(&me, token));
    let (status, reply) = post_json(&server, &original).await;
    assert_eq!((status, reply["admin"].as_bool()), (200, Some(true)));
    // The deleted admin can no longer use the admin API...
    let other_admin = admin_user(&server).await;
    let (status, reply) = signed_admin(
        &server,
        &other_admin,
        &admin_body(
            &other_admin,
            "user.delete",
            json!({ "sign_public_key": me.sign_public_key().to_hex() }),
        ),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    // ...and replaying the captured registration, or redeeming a fresh invite, brings nothing back.
    let (status, reply) = post_json(&server, &original).await;
    assert_eq!((status, code(&reply)), (403, "user_deleted"), "{reply}");
    let (fresh, fresh_invite) = new_invite(&server).await;
    let (status, reply) = post_json(&server, &body(&RegisterRequest::sign(&me, fresh))).await;
    assert_eq!((status, code(&reply)), (403, "user_deleted"));
    assert!(!server.store.is_authorized(&me.sign_public_key()).await);
    assert!(!server.store.has_admin(&me.sign_public_key()).await);
    assert!(
        server
            .store
            .get_invite(&fresh_invite.id)
            .await
            .unwrap()
            .used_by
            .is_none(),
        "a deleted key spends no invite"
    );
    let (status, reply) =
        signed_admin(&server, &me, &admin_body(&me, "user.list", json!({}))).await;
    assert_eq!((status, code(&reply)), (403, "not_admin"));
}

#[tokio::test]
async fn a_revoked_user_replaying_its_own_registration_is_refused_and_stays_revoked() {
    let server = start().await;
    let (token, _) = new_invite(&server).await;
    let me = Identity::generate().unwrap();
    let original = body(&RegisterRequest::sign(&me, token));
    let (status, _) = post_json(&server, &original).await;
    assert_eq!(status, 200);
    server
        .store
        .revoke_user(&me.sign_public_key())
        .await
        .unwrap();

    // Neither the replay nor a fresh invite says it is registered, and the invite stays unspent.
    let (status, reply) = post_json(&server, &original).await;
    assert_eq!((status, code(&reply)), (403, "user_revoked"), "{reply}");
    let (fresh, fresh_invite) = new_invite(&server).await;
    let (status, reply) = post_json(&server, &body(&RegisterRequest::sign(&me, fresh))).await;
    assert_eq!((status, code(&reply)), (403, "user_revoked"), "{reply}");
    assert!(server
        .store
        .get_invite(&fresh_invite.id)
        .await
        .unwrap()
        .used_by
        .is_none());
    assert!(!server.store.is_authorized(&me.sign_public_key()).await);
}

#[tokio::test]
async fn a_body_must_be_a_json_object_sent_as_json() {
    let server = start().await;
    let (token, invite) = new_invite(&server).await;
    let me = Identity::generate().unwrap();
    let good = body(&RegisterRequest::sign(&me, token));
    // The four fields as an array, in field order: serde would take it for the struct.
    let fields = ["token", "sign_public_key", "kex_public_key", "signature"];
    let array = Value::Array(fields.iter().map(|f| good[*f].clone()).collect());
    let (status, reply) = post_json(&server, &array).await;
    assert_eq!((status, code(&reply)), (400, "malformed_body"), "{reply}");
    // A duplicate field is ambiguous, so refused.
    let duplicated = good.to_string().replacen('{', r#"{"token":"00","#, 1);
    let (status, reply) = post(&server, duplicated).await;
    assert_eq!((status, code(&reply)), (400, "malformed_body"), "{reply}");
    // The right body with the wrong media type, or none.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = reqwest::Client::new()
            .post(format!("{}/register", server.base))
            .body(good.to_string());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let reply: Value = response.json().await.unwrap();
        assert_eq!(code(&reply), "unsupported_media_type");
    }
    assert!(server
        .store
        .get_invite(&invite.id)
        .await
        .unwrap()
        .used_by
        .is_none());
    // A parameter is allowed on the media type.
    let response = reqwest::Client::new()
        .post(format!("{}/register", server.base))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // The admin API: a signed array, and a signed body without the media type.
    let admin = admin_user(&server).await;
    let request = admin_body(&admin, "user.list", json!({}));
    let keys = ["admin", "timestamp", "nonce", "operation", "params"];
    let array = Value::Array(keys.iter().map(|k| request[*k].clone()).collect());
    let (status, reply) = signed_admin(&server, &admin, &array).await;
    assert_eq!((status, code(&reply)), (400, "malformed_body"), "{reply}");
    let bytes = request.to_string().into_bytes();
    let signature = unibus::admin::sign_admin_body(&admin, &bytes).to_hex();
    let response = reqwest::Client::new()
        .post(format!("{}/admin", server.base))
        .header(unibus::admin::SIGNATURE_HEADER, signature)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
}

#[tokio::test]
async fn error_replies_never_repeat_a_value_from_the_request() {
    let server = start().await;
    let (token, _) = new_invite(&server).await;
    let secret = token.to_hex().to_string();
    let me = Identity::generate().unwrap();
    let good = body(&RegisterRequest::sign(&me, token));
    let mut attempts = vec![
        // The token as the name of an unknown field.
        json!({ secret.clone(): 1 }),
        // The token where a field of another type belongs, or inside a wrong type.
        json!({ "token": [secret.clone()] }),
        json!({ "token": { secret.clone(): secret.clone() } }),
    ];
    let mut renamed = good.clone();
    let value = renamed.as_object_mut().unwrap().remove("token").unwrap();
    renamed[value.as_str().unwrap()] = json!(true);
    attempts.push(renamed);
    for attempt in &attempts {
        let (status, reply) = post_json(&server, attempt).await;
        assert_eq!(status, 400, "{reply}");
        assert!(!reply.to_string().contains(&secret), "echoed: {reply}");
    }
    let admin = admin_user(&server).await;
    for params in [
        json!({ secret.clone(): 1 }),
        json!({ "ttl_hours": secret.clone() }),
    ] {
        let (status, reply) = signed_admin(
            &server,
            &admin,
            &admin_body(&admin, "invite.create", params),
        )
        .await;
        assert_eq!(status, 400, "{reply}");
        assert!(!reply.to_string().contains(&secret), "echoed: {reply}");
    }
    // The token as an operation's name.
    let (status, reply) =
        signed_admin(&server, &admin, &admin_body(&admin, &secret, json!({}))).await;
    assert_eq!((status, code(&reply)), (400, "unknown_operation"));
    assert!(!reply.to_string().contains(&secret), "echoed: {reply}");
}

#[tokio::test]
async fn admin_params_are_read_strictly_and_never_defaulted() {
    let server = start().await;
    let admin = admin_user(&server).await;
    for params in [
        json!({ "ttl_hours": "1" }),
        json!({ "ttl_hours": -1 }),
        json!({ "ttl_hours": 1.5 }),
        json!({ "ttl_hours": 1.0 }),
        json!({ "ttl_hours": null }),
        json!({ "ttl_hours": 0 }),
        json!({ "ttl_hours": 8761 }),
        serde_json::from_str(r#"{"ttl_hours": 18446744073709551616}"#).unwrap(),
        json!({ "admin": "true" }),
        json!({ "admin": null }),
        json!({ "admin": 1 }),
        json!({ "ttl": 1 }),
        json!([1]),
        json!("x"),
    ] {
        let (status, reply) = signed_admin(
            &server,
            &admin,
            &admin_body(&admin, "invite.create", params.clone()),
        )
        .await;
        assert_eq!(status, 400, "{params}: {reply}");
        assert!(
            matches!(code(&reply), "bad_request" | "malformed_body"),
            "{params}: {reply}"
        );
    }
    let mut null_params = admin_body(&admin, "user.list", json!({}));
    null_params["params"] = Value::Null;
    let (status, reply) = signed_admin(&server, &admin, &null_params).await;
    assert_eq!((status, code(&reply)), (400, "malformed_body"), "{reply}");
    let (status, reply) = signed_admin(
        &server,
        &admin,
        &admin_body(&admin, "user.list", json!({ "verbose": true })),
    )
    .await;
    assert_eq!((status, code(&reply)), (400, "bad_request"), "{reply}");
    assert!(
        server.store.list_invites().await.unwrap().is_empty(),
        "no refused request made an invite"
    );
    // Within the rules, the values are used as given.
    let (status, reply) = signed_admin(
        &server,
        &admin,
        &admin_body(&admin, "invite.create", json!({ "ttl_hours": 1 })),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let invite = &reply["invite"];
    let lifetime = invite["expires_at"].as_i64().unwrap() - invite["created_at"].as_i64().unwrap();
    assert_eq!(lifetime, 3_600_000);
}

#[tokio::test]
async fn extreme_timestamps_are_stale_requests_and_the_server_lives_on() {
    let server = start().await;
    let admin = admin_user(&server).await;
    for timestamp in [json!(i64::MIN), json!(i64::MAX), json!(0), json!(-1)] {
        let mut request = admin_body(&admin, "user.list", json!({}));
        request["timestamp"] = timestamp.clone();
        let (status, reply) = signed_admin(&server, &admin, &request).await;
        assert_eq!(
            (status, code(&reply)),
            (401, "stale_request"),
            "{timestamp}"
        );
    }
    for timestamp in [json!(1.5), json!("1"), json!(u64::MAX), json!(null)] {
        let mut request = admin_body(&admin, "user.list", json!({}));
        request["timestamp"] = timestamp.clone();
        let (status, reply) = signed_admin(&server, &admin, &request).await;
        assert_eq!(
            (status, code(&reply)),
            (400, "malformed_body"),
            "{timestamp}"
        );
    }
    let (status, _) =
        signed_admin(&server, &admin, &admin_body(&admin, "user.list", json!({}))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn only_an_active_admin_records_a_nonce() {
    let server = start().await;
    let admin = admin_user(&server).await;
    let stranger = Identity::generate().unwrap();
    // A stranger's validly signed request, with a nonce an admin will use next.
    let mut theirs = admin_body(&stranger, "user.list", json!({}));
    let shared = nonce();
    theirs["nonce"] = json!(shared);
    let (status, reply) = signed_admin(&server, &stranger, &theirs).await;
    assert_eq!((status, code(&reply)), (403, "not_admin"));
    let mut mine = admin_body(&admin, "user.list", json!({}));
    mine["nonce"] = json!(shared);
    let (status, reply) = signed_admin(&server, &admin, &mine).await;
    assert_eq!(
        status, 200,
        "the stranger's request recorded nothing: {reply}"
    );
    // A nonce differing only in case is the same nonce.
    let mut upper = admin_body(&admin, "user.list", json!({}));
    upper["nonce"] = json!(shared.to_uppercase());
    let (status, reply) = signed_admin(&server, &admin, &upper).await;
    assert_eq!((status, code(&reply)), (401, "replayed"));
}

#[tokio::test]
async fn admin_requests_are_rate_limited_per_address() {
    let server = start_with(Setup {
        admin_limiter: RateLimiter::new(0.0, 2),
        ..Setup::default()
    })
    .await;
    let stranger = Identity::generate().unwrap();
    for _ in 0..2 {
        let (status, reply) = signed_admin(
            &server,
            &stranger,
            &admin_body(&stranger, "user.list", json!({})),
        )
        .await;
        assert_eq!((status, code(&reply)), (403, "not_admin"));
    }
    let (status, reply) = signed_admin(
        &server,
        &stranger,
        &admin_body(&stranger, "user.list", json!({})),
    )
    .await;
    assert_eq!((status, code(&reply)), (429, "rate_limited"));
}

#[tokio::test]
async fn an_unreadable_stored_record_is_a_server_error_not_the_callers() {
    let server = start().await;
    let (token, invite) = new_invite(&server).await;
    // Damage the record behind the server's back.
    let db = rusqlite::Connection::open(server._dir.path().join("db")).unwrap();
    db.execute(
        "UPDATE invites SET created_by = 'not a key' WHERE id = ?1",
        [&invite.id],
    )
    .unwrap();
    drop(db);
    let me = Identity::generate().unwrap();
    let (status, reply) = post_json(&server, &body(&RegisterRequest::sign(&me, token))).await;
    assert_eq!((status, code(&reply)), (500, "internal"), "{reply}");
}

// ---- slow, idle and greedy clients ----

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn short_limits() -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_millis(400),
        request_timeout: Duration::from_millis(800),
        max_connections_per_address: 4,
        max_connections: 100,
    }
}

fn addr(server: &Server) -> std::net::SocketAddr {
    server.base.trim_start_matches("http://").parse().unwrap()
}

/// Connects from `source` (any 127.0.0.0/8 address) to the server.
async fn connect_from(server: &Server, source: [u8; 4]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    socket.connect(addr(server)).await.unwrap()
}

/// Reads until the server closes the connection (or 10 s pass), returning what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed() {
    let server = start_with(Setup {
        limits: short_limits(),
        ..Setup::default()
    })
    .await;
    // Says nothing at all.
    let mut silent = connect_from(&server, [127, 0, 0, 1]).await;
    assert!(read_until_closed(&mut silent).await.is_some());
    // Sends half its headers and stalls.
    let mut slow = connect_from(&server, [127, 0, 0, 1]).await;
    slow.write_all(b"POST /register HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(read_until_closed(&mut slow).await.is_some());
    // Sends its headers, then never the body it announced: 408.
    let mut stalled = connect_from(&server, [127, 0, 0, 1]).await;
    stalled
        .write_all(
            b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
    let reply = read_until_closed(&mut stalled).await.expect("closed");
    assert!(
        reply.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // Asks once, then idles on the kept-alive connection.
    let mut idle = connect_from(&server, [127, 0, 0, 1]).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until_closed(&mut idle).await.expect("closed");
    assert!(reply.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    let server = start_with(Setup {
        limits: HttpLimits {
            // Long enough that the idle connections outlast the test.
            header_timeout: Duration::from_secs(30),
            ..short_limits()
        },
        ..Setup::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(&server, [127, 0, 0, 1]).await);
    }
    // The cap is counted once the server has accepted them: a fifth is closed unanswered.
    let mut refused = None;
    for _ in 0..50 {
        let mut fifth = connect_from(&server, [127, 0, 0, 1]).await;
        fifth
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok();
        let reply = read_until_closed(&mut fifth).await.expect("closed");
        if reply.is_empty() {
            refused = Some(());
            break;
        }
    }
    assert!(refused.is_some(), "the fifth connection was served");
    // Another address is still served at once.
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let health = client
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // And the address gets its places back as its connections close.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = connect_from(&server, [127, 0, 0, 1]).await;
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok();
        let reply = read_until_closed(&mut again).await.unwrap_or_default();
        if reply.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the address never got a place back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn plain_http_is_http_1_1_only() {
    let server = start().await;
    let mut h2c = connect_from(&server, [127, 0, 0, 1]).await;
    // The HTTP/2 connection preface, as an h2c client with prior knowledge sends it.
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let reply = read_until_closed(&mut h2c).await.expect("closed");
    // An HTTP/2 server answers with a SETTINGS frame (type 4 at byte 3); this one does not.
    assert!(
        reply.is_empty() || reply.starts_with(b"HTTP/1.1 "),
        "{:?}",
        &reply[..reply.len().min(16)]
    );
}

async fn post_status(server: &Server, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/status", server.base))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn status_body(me: &Identity, timestamp: i64) -> Value {
    serde_json::to_value(StatusBody::from(&StatusRequest::sign(me, timestamp))).unwrap()
}

fn now_ms() -> i64 {
    unibus_server::store::now_millis()
}

/// `me`'s status, asked with a request signed at `at`; the reply must name that request.
async fn ask(server: &Server, me: &Identity, at: i64) -> KeyStatus {
    let (status, reply) = post_status(server, &status_body(me, at)).await;
    assert_eq!(status, 200, "{reply}");
    let reply: StatusReply = serde_json::from_value(reply).unwrap();
    assert_eq!(
        (reply.sign_public_key, reply.timestamp),
        (me.sign_public_key(), at)
    );
    reply.status
}

#[tokio::test]
async fn a_key_learns_its_own_status_from_a_fresh_signed_request() {
    let server = start().await;
    let me = Identity::generate().unwrap();
    assert_eq!(ask(&server, &me, now_ms()).await, KeyStatus::Unknown);
    let key = me.sign_public_key();
    server
        .store
        .add_user(NewUser {
            sign_key: key,
            kex_key: me.kex_public_key(),
            admin: false,
        })
        .await
        .unwrap();
    assert_eq!(ask(&server, &me, now_ms()).await, KeyStatus::Active);
    server.store.revoke_user(&key).await.unwrap();
    assert_eq!(ask(&server, &me, now_ms()).await, KeyStatus::Revoked);
    server.store.delete_user(&key).await.unwrap();
    // A replay of an earlier request, still inside the window, tells what is true now.
    assert_eq!(
        ask(&server, &me, now_ms() - 30_000).await,
        KeyStatus::Deleted
    );
    // Asking changed nothing.
    assert_eq!(
        server.store.key_status(&key).await.unwrap(),
        KeyStatus::Deleted
    );
}

#[tokio::test]
async fn a_status_request_that_is_forged_stale_or_malformed_is_refused() {
    let server = start().await;
    let (me, other) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let window = 60_000;

    // Signed by another key than the one it names.
    let mut forged = status_body(&other, now_ms());
    forged["sign_public_key"] = json!(me.sign_public_key().to_hex());
    let (status, reply) = post_status(&server, &forged).await;
    assert_eq!((status, code(&reply)), (401, "bad_signature"));
    // The timestamp changed after signing.
    let mut moved = status_body(&me, now_ms());
    moved["timestamp"] = json!(now_ms() + 1);
    let (status, reply) = post_status(&server, &moved).await;
    assert_eq!((status, code(&reply)), (401, "bad_signature"));
    // Correctly signed, but too old or too far ahead; and the extremes of the type.
    for at in [
        now_ms() - 2 * window,
        now_ms() + 2 * window,
        i64::MIN,
        i64::MAX,
    ] {
        let (status, reply) = post_status(&server, &status_body(&me, at)).await;
        assert_eq!((status, code(&reply)), (401, "stale_request"), "{at}");
    }
    let mut bad_key = status_body(&me, now_ms());
    bad_key["sign_public_key"] = json!("00".repeat(32));
    let (status, reply) = post_status(&server, &bad_key).await;
    assert_eq!((status, code(&reply)), (400, "bad_key"));
    for malformed in [
        json!({"sign_public_key": me.sign_public_key().to_hex(), "timestamp": now_ms()}),
        json!({"sign_public_key": me.sign_public_key().to_hex(), "timestamp": "1", "signature": "00"}),
        json!([me.sign_public_key().to_hex(), now_ms(), "00"]),
    ] {
        let (status, reply) = post_status(&server, &malformed).await;
        assert_eq!(
            (status, code(&reply)),
            (400, "malformed_body"),
            "{malformed}"
        );
    }
    let mut short_signature = status_body(&me, now_ms());
    short_signature["signature"] = json!("ab");
    let (status, reply) = post_status(&server, &short_signature).await;
    assert_eq!((status, code(&reply)), (401, "bad_signature"));
}

#[tokio::test]
async fn status_requests_are_rate_limited_per_address() {
    let server = start_with(Setup {
        status_limiter: RateLimiter::new(0.0, 2),
        ..Setup::default()
    })
    .await;
    let me = Identity::generate().unwrap();
    for _ in 0..2 {
        let (status, reply) = post_status(&server, &status_body(&me, now_ms())).await;
        assert_eq!(status, 200, "{reply}");
    }
    let (status, reply) = post_status(&server, &status_body(&me, now_ms())).await;
    assert_eq!((status, code(&reply)), (429, "rate_limited"));
}

/// Sends `request` as it is on a new connection and returns the response's status and the
/// whole response (the request asks the server to close).
async fn raw(server: &Server, request: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = connect_from(server, [127, 0, 0, 1]).await;
    stream.write_all(request).await.unwrap();
    let response = read_until_closed(&mut stream)
        .await
        .expect("the server closes");
    let status = std::str::from_utf8(&response)
        .ok()
        .and_then(|text| text.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, response)
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn the_invite_page_is_self_contained_under_a_strict_policy() {
    let server = start().await;
    let response = reqwest::get(format!("{}/invite", server.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("cache-control"), "public, max-age=300");
    let page = response.text().await.unwrap();
    assert!(page.len() < 16 * 1024, "{} bytes", page.len());
    assert!(page.contains("<h1>You are invited to unibus</h1>"));
    // Nothing is fetched from anywhere: no external script, style, image or font.
    for external in [
        "src=",
        "url(",
        "@import",
        "href=\"http",
        "href=\"//",
        "stylesheet",
    ] {
        assert!(!page.contains(external), "{external}");
    }
    // HEAD: the same headers, no body.
    let head = reqwest::Client::new()
        .head(format!("{}/invite", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-security-policy"].to_str().unwrap(),
        csp
    );
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn hostile_paths_queries_and_headers_get_the_page_or_a_clean_4xx_and_change_nothing() {
    let server = start().await;
    let (token, _) = new_invite(&server).await;
    let (page_status, page) = raw(&server, &get_request("/invite")).await;
    assert_eq!(page_status, 200);
    let body = |response: &[u8]| {
        let at = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        response[at + 4..].to_vec()
    };
    let page_body = body(&page);
    // The same page: for the final segment in any case (as the SDK's parser accepts it), with
    // a query, with a token in the query or the path (nothing reads them), and odd headers.
    let long_query = format!("/invite?{}", "q".repeat(8000));
    let token_query = format!("/invite?token={}", token.to_hex().as_str());
    for path in [
        "/INVITE",
        "/Invite",
        "/invite?",
        "/invite?a=1&b=%00",
        &long_query,
        &token_query,
    ] {
        let (status, response) = raw(&server, &get_request(path)).await;
        assert_eq!(status, 200, "{}", &path[..path.len().min(30)]);
        assert_eq!(body(&response), page_body);
    }
    let odd = "GET /invite HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\n\
               Referer: https://evil.example/\r\nRange: bytes=9-1\r\nAccept: ;;;\r\n\
               Cookie: a=b\r\nConnection: close\r\n\r\n";
    let (status, response) = raw(&server, odd.as_bytes()).await;
    assert_eq!((status, body(&response)), (200, page_body.clone()));
    // Anything else under /invite is not found; other methods are not allowed.
    let token_path = format!("/invite/{}", token.to_hex().as_str());
    for path in [
        "/invite/",
        "/invite/x",
        "/invite/../register",
        "/invitex",
        "/invite%2F",
        "/invite%00",
        &token_path,
    ] {
        let (status, _) = raw(&server, &get_request(path)).await;
        assert_eq!(status, 404, "{path}");
    }
    let head = "HEAD /INVITE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, response) = raw(&server, head.as_bytes()).await;
    assert_eq!((status, body(&response)), (200, vec![]), "HEAD has no body");
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let request = format!(
            "{method} /invite HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let (status, _) = raw(&server, request.as_bytes()).await;
        assert_eq!(status, 405, "{method}");
        let request = request.replace("/invite", "/INVITE");
        assert_eq!(
            raw(&server, request.as_bytes()).await.0,
            405,
            "{method} /INVITE"
        );
    }
    // A request line too long for the server: a clean 4xx, and the page is still served.
    let (status, _) = raw(
        &server,
        &get_request(&format!("/invite?{}", "q".repeat(20_000))),
    )
    .await;
    assert!((400..500).contains(&status), "{status}");
    let (status, response) = raw(&server, &get_request("/invite")).await;
    assert_eq!((status, body(&response)), (200, page_body));
    // Nothing changed: the invite is still pending.
    let invites = server.store.list_invites().await.unwrap();
    assert_eq!(invites.len(), 1);
    assert!(invites[0].used_at.is_none() && invites[0].cancelled_at.is_none());
}

#[tokio::test]
async fn the_association_files_are_served_only_for_a_configured_app() {
    let server = start().await;
    for path in [APPLE_PATH, ANDROID_PATH] {
        let response = reqwest::get(format!("{}{path}", server.base))
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path} without an app");
    }
    let fingerprint = ["0A"; 32].join(":");
    let app = unibus_server::app_links::AppLinks::new(
        Some("Chat".parse().unwrap()),
        Some("ABCDE12345.com.example.chat".parse().unwrap()),
        Some("com.example.chat".parse().unwrap()),
        vec![fingerprint.to_lowercase().parse().unwrap()],
        None,
        None,
    )
    .unwrap();
    let server = start_with(Setup {
        link_pages: LinkPages::new(&app, "https://example.com/unibus/"),
        ..Setup::default()
    })
    .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let fetch = |path: &'static str| {
        let request = no_redirects.get(format!("{}{path}", server.base));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.headers()["content-type"], "application/json");
            response.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        fetch(APPLE_PATH).await,
        json!({"applinks": {"details": [{
            "appIDs": ["ABCDE12345.com.example.chat"],
            "components": [{
                "/": "/unibus/invite",
                "#": "?*",
                "caseSensitive": false,
                "comment": "An invite link: the token is the fragment.",
            }],
        }]}})
    );
    assert_eq!(
        fetch(ANDROID_PATH).await,
        json!([{
            "relation": ["delegate_permission/common.handle_all_urls"],
            "target": {
                "namespace": "android_app",
                "package_name": "com.example.chat",
                "sha256_cert_fingerprints": [fingerprint],
            },
        }])
    );
    let page = reqwest::get(format!("{}/invite", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<h1>You are invited to Chat</h1>"));
}
