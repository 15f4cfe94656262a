//! `membershipd` as an operator runs it: the real binary, `serve` on the embedded default
//! (SQLite and a supervised nats-server), the CLI beside it, and a client that registers over
//! HTTP, logs in to NATS with its own key, uses the control plane, sends and reads a message, and
//! is cut off when revoked.

use crate::daemon;

use std::time::{Duration, Instant};

use daemon::EmbeddedServer;
use serde_json::{json, Value};
use unibus::envelope::{ContentType, Envelope, EpochKey};
use unibus::manifest::{MemberPart, Recipient, SignedManifest};
use unibus::protocol::control::read_reply;
use unibus::protocol::messages::{MessagePage, SendReply};
use unibus::registration::{RegisterBody, RegisterRequest};
use unibus::sealing::RoomKey;
use unibus::{Identity, InviteLink, RoomId};
use unibus_server::auth::callout::inbox_prefix;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_user_registers_logs_in_by_key_and_is_cut_off_when_revoked() {
    let server = EmbeddedServer::start().await;
    let health: Value = reqwest::get(format!("{}/healthz", server.daemon.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health,
        json!({ "status": "ok", "store": "ok", "cluster": "ok" })
    );
    let created = server.cli(&["invite", "create"]);
    let link = InviteLink::parse(created["link"].as_str().unwrap()).unwrap();

    let me = Identity::generate().unwrap();
    let request = RegisterRequest::sign(&me, link.token().clone());
    let reply: Value = reqwest::Client::new()
        .post(link.register_url())
        .json(&RegisterBody::from(&request))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // A second key trying the spent invite is refused; neither attempt's secrets are logged.
    let thief = RegisterRequest::sign(&Identity::generate().unwrap(), link.token().clone());
    let refused = reqwest::Client::new()
        .post(link.register_url())
        .json(&RegisterBody::from(&thief))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let log = server.log();
    assert!(
        log.contains("registered") && log.contains("registration refused"),
        "{log}"
    );
    for secret in [
        request.token.to_hex().to_string(),
        request.signature.to_hex(),
        thief.signature.to_hex(),
    ] {
        assert!(
            !log.contains(&secret),
            "a token or signature reached the log"
        );
    }
    let nats_url = reply["nats_urls"][0]
        .as_str()
        .expect("the server says where NATS is")
        .to_string();

    let client = async_nats::ConnectOptions::with_nkey(me.nkey_seed().to_string())
        .custom_inbox_prefix(inbox_prefix(&me.sign_public_key()))
        .connect(&nats_url)
        .await
        .expect("the registered key logs in");
    let ask_bytes = |operation: &str, body: Vec<u8>| {
        let client = client.clone();
        let subject = format!("unibus.cp.{}.{operation}", me.sign_public_key().to_hex());
        async move { client.request(subject, body.into()).await.unwrap().payload }
    };
    let ask = |operation: &str, body: Value| {
        let reply = ask_bytes(operation, body.to_string().into_bytes());
        async move { serde_json::from_slice::<Value>(&reply.await).unwrap() }
    };
    assert_eq!(
        ask("create_room", json!({ "room": "general" })).await["owner"],
        me.sign_public_key().to_hex()
    );
    assert_eq!(ask("rooms", json!({})).await["rooms"][0]["id"], "general");
    let rooms = server.cli(&["room", "list"]);
    assert_eq!(rooms[0]["id"], "general");

    // A message through the embedded nats-server's stream: keyed, sealed, sent, read back.
    let room = RoomId::new("general").unwrap();
    let me_alone = [Recipient {
        member: me.sign_public_key(),
        kex: me.kex_public_key(),
    }];
    let manifest =
        SignedManifest::rekey(&me, &room, 1, 0, &RoomKey::generate().unwrap(), &me_alone).unwrap();
    let manifest = hex::encode(manifest.to_bytes());
    assert_eq!(
        ask("rekey", json!({ "manifest": manifest })).await["epoch"],
        1
    );
    let part = ask_bytes("key", json!({ "room": "general" }).to_string().into_bytes()).await;
    let part = MemberPart::from_bytes(&part).unwrap();
    let key = EpochKey::open(&part, &me, &room, 1, &me.sign_public_key()).unwrap();
    let text = ContentType::new("text/plain").unwrap();
    let envelope = Envelope::seal(&me, &key, &text, b"hello", 0)
        .unwrap()
        .to_bytes();
    let sent = ask_bytes("send", envelope.clone()).await;
    let sent = read_reply::<SendReply>(&sent).unwrap().unwrap();
    let page = ask_bytes(
        "messages",
        json!({ "room": "general" }).to_string().into_bytes(),
    )
    .await;
    let page = read_reply::<MessagePage>(&page).unwrap().unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].position, sent.position);
    assert_eq!(page.messages[0].envelope, envelope);

    // An admin revokes the user from the CLI; the running server cuts the session. (How fast
    // is measured by a benchmark; the bound here only stops a broken sweep from hanging.)
    let started = Instant::now();
    server.cli(&["user", "revoke", &me.sign_public_key().to_hex()]);
    while client.connection_state() == async_nats::connection::State::Connected {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the revoked session was never cut"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        async_nats::ConnectOptions::with_nkey(me.nkey_seed().to_string())
            .connect(&nats_url)
            .await
            .is_err(),
        "a revoked key cannot log in again"
    );
}
