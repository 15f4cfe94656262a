//! The HTTP API over real HTTP on 127.0.0.1. `POST /register`: success, retries, every refusal
//! with its own code, malformed bodies that change nothing, the body limit and the rate limit.
//! `POST /admin`: signed requests work; unsigned, forged, stale, replayed and non-admin ones
//! do not.

use std::sync::Arc;

use serde_json::{json, Value};
use unibus::registration::{RegisterBody, RegisterRequest};
use unibus::{Identity, InviteToken};
use unibus_server::http::{AppState, RateLimiter, RegisterResponse};
use unibus_server::store::{NewInvite, NewUser, SqliteStore, Store};

struct Server {
    base: String,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_with(limiter: RateLimiter) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("db")).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        nats_urls: vec!["nats://127.0.0.1:4222".into()],
        register_limiter: limiter,
        public_url: base.clone(),
        nats: None,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(unibus_server::http::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Server {
        base,
        store,
        _dir: dir,
        _stop: stop,
    }
}

async fn start() -> Server {
    start_with(RateLimiter::new(1e9, 1_000_000)).await
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

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn registering_redeems_the_invite_and_a_retry_gets_the_same_success() {
    let server = start().await;
    let (token, invite) = server
        .store
        .create_invite(NewInvite::default())
        .await
        .unwrap();
    let me = Identity::generate().unwrap();
    let request = RegisterRequest::sign(&me, token);

    let (status, reply) = post_json(&server, &body(&request)).await;
    assert_eq!(status, 200, "{reply}");
    let ok: RegisterResponse = serde_json::from_value(reply.clone()).unwrap();
    assert_eq!(ok.sign_public_key, me.sign_public_key().to_hex());
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

    let (used, _) = store.create_invite(NewInvite::default()).await.unwrap();
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

    let (cancelled, invite) = store.create_invite(NewInvite::default()).await.unwrap();
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
    let (token, _) = store.create_invite(NewInvite::default()).await.unwrap();
    let (status, reply) = post_json(&server, &body(&RegisterRequest::sign(&existing, token))).await;
    assert_eq!((status, code(&reply)), (409, "user_exists"));

    let (token, invite) = store.create_invite(NewInvite::default()).await.unwrap();
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
    let (token, invite) = server
        .store
        .create_invite(NewInvite::default())
        .await
        .unwrap();
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
    let server = start_with(RateLimiter::new(0.0, 3)).await;
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        nats_urls: vec![],
        register_limiter: RateLimiter::new(1e9, 1_000_000),
        public_url: format!("https://localhost:{port}"),
        nats: None,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let tls_files = tls.clone();
    tokio::spawn(async move {
        unibus_server::http::serve_tls(listener, state, &tls_files, async {
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
