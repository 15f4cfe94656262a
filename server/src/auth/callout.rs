//! The auth-callout service: nats-server asks it, for every client that connects, whether to
//! admit them and with which permissions.
//!
//! A client logs in with its own ed25519 key as a NATS user nkey. nats-server does not check
//! the nonce signature of callout users itself, so this service does: it verifies
//! `connect_opts.sig` over `client_info.nonce` with `connect_opts.nkey`, then asks the store
//! whether that key is an active user. Anything else, including a store error or timeout, is a
//! refusal (fail closed). An admitted user gets a user JWT for the application account with
//! permissions scoped to its own key (see [`UserPermissions`]), valid for a jittered
//! [`USER_JWT_LIFETIME`] (nats-server then ends the connection and the client logs in again,
//! so even a revocation every other path missed ends its sessions within that bound).
//!
//! Every login is taken up, or refused, within
//! [`LOGIN_BUDGET`](super::admission::LOGIN_BUDGET) of its request's arrival, because
//! nats-server pings each new connection 2 to 2.4 s after accepting it, decided or not, and
//! stock nats.go (like any client that reads the first line after its `CONNECT` as the answer
//! to its own `PING`) fails its connect on that `PING`; nats.go's default connect timeout is
//! 2 s as well. A refused client retries; an undecided one that gets the `PING` fails. So under
//! a storm the callout keeps to what it can answer in time ([`admission`](super::admission)):
//! a few logins are worked on at once, newest first, and a login that gets no worker within
//! its budget is refused with [`Refusal::Overloaded`] (a signed refusal that costs a fraction
//! of an answer; clients retry with jittered backoff).
//!
//! One callout serves on several connections at once ([`CALLOUT_CONNECTIONS`] in
//! `membershipd serve`), under the same limits. nats-server checks each answer (the response
//! and the user JWT, two ed25519 verifications) on the goroutine that reads the connection the
//! answer came on, so answers on one connection cannot use more than one of its cores.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use futures::StreamExt;
use nkeys::KeyPair;
use serde_json::{json, Map, Value};
use unibus::protocol::messages::{live_subject, store_subject};
use unibus::{subjects, RoomId, SignPublicKey, Signature};

use super::admission::{Admission, Arrival, Queue};
use super::grants::Grants;
use super::jwt;
use crate::store::{now_millis, Store};

/// How many connections `membershipd serve` answers logins on (see the
/// [module documentation](self)).
pub const CALLOUT_CONNECTIONS: usize = 4;
/// The subject nats-server sends authorization requests to.
pub const AUTH_CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// The queue group of the callout responders, so several membershipd instances share the load.
pub const AUTH_CALLOUT_QUEUE: &str = "unibus-auth";

/// How long an admitted user's JWT is valid, at most; each is valid for a random time between
/// three quarters of this and all of it, so sessions that logged in together do not all log in
/// again together.
pub const USER_JWT_LIFETIME: Duration = Duration::from_secs(3_600);

/// The most rooms one login may send to straight to the stream (the first ones by id): a
/// user JWT carries one subject per room. A member of more rooms sends to the others through
/// membershipd (protocol §15.2).
pub const MAX_GRANTED_ROOMS: usize = 1_000;

/// How long a login waits for the store to list its rooms before it is admitted without
/// any (its sends then go through membershipd): a slow store never slows a login down.
pub const ROOMS_WAIT: Duration = Duration::from_millis(100);

/// The subject on which nats-server tells a client its own permissions (protocol §15.2).
pub const USER_INFO_SUBJECT: &str = "$SYS.REQ.USER.INFO";

/// The subjects an admitted user may use: its own, and its rooms' store subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPermissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

impl UserPermissions {
    /// A user may publish control-plane requests under its own key, to its own inbox prefix
    /// (the round trip that proves a login was admitted, protocol §11), to
    /// [`USER_INFO_SUBJECT`], and envelopes to the store subject of each of `rooms` (the rooms
    /// it is a member of as it logs in, at most [`MAX_GRANTED_ROOMS`] of them); it may
    /// subscribe to its own inbox prefix, its own change notifications, and the live copies of
    /// the same rooms (`unibus.live.<room>`, protocol §15.4).
    pub fn for_user(key: &SignPublicKey, rooms: &[RoomId]) -> Self {
        let granted = &rooms[..rooms.len().min(MAX_GRANTED_ROOMS)];
        let mut publish = vec![
            subjects::requests(key) + ".>",
            subjects::inbox_prefix(key) + ".>",
            USER_INFO_SUBJECT.to_string(),
        ];
        publish.extend(granted.iter().map(store_subject));
        let mut subscribe = vec![
            subjects::inbox_prefix(key) + ".>",
            subjects::events(key) + ".>",
        ];
        subscribe.extend(granted.iter().map(live_subject));
        Self { publish, subscribe }
    }
}

/// The inbox prefix a user's client must use (`_INBOX_<hex>`); see [`unibus::subjects`].
pub use unibus::subjects::inbox_prefix;

/// Why a login was refused. Logged by the server; the client sees "Authorization Violation".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request from nats-server could not be read.
    #[error("malformed authorization request: {0}")]
    MalformedRequest(String),
    /// The client did not present an nkey, or the server sent no nonce.
    #[error("the client must log in with its nkey")]
    NoNkey,
    /// The nkey is not a user nkey of a valid key.
    #[error("the client's nkey is not a valid user key")]
    BadNkey,
    /// The nonce signature does not verify.
    #[error("the client's nonce signature does not verify")]
    BadSignature,
    /// The key is not an active user, or the store could not say (fail closed).
    #[error("not an active user")]
    NotAuthorized,
    /// The login could not be answered within its budget
    /// ([`LOGIN_BUDGET`](super::admission::LOGIN_BUDGET)); the client should retry after a
    /// jittered backoff.
    #[error("membershipd is overloaded; retry after a jittered backoff")]
    Overloaded,
}

/// Decides logins. See the [module documentation](self).
pub struct Callout {
    store: Arc<dyn Store>,
    issuer: KeyPair,
    account: String,
    /// The logins worked on and waiting, on every connection the callout serves.
    queue: Arc<Queue>,
    /// The room grants issued, for the revoker.
    grants: Arc<Grants>,
}

impl Callout {
    /// A callout that signs with `issuer` (the account key configured as the callout's
    /// `issuer`) and places admitted users in `account`, with the default [`Admission`].
    pub fn new(store: Arc<dyn Store>, issuer: KeyPair, account: impl Into<String>) -> Self {
        Self::with_admission(store, issuer, account, Admission::default())
    }

    /// Like [`new`](Self::new), with the given admission limits.
    pub fn with_admission(
        store: Arc<dyn Store>,
        issuer: KeyPair,
        account: impl Into<String>,
        admission: Admission,
    ) -> Self {
        Self {
            store,
            issuer,
            account: account.into(),
            queue: Arc::new(Queue::new(admission)),
            grants: Arc::default(),
        }
    }

    /// The room grants this callout issued, for a [`Revoker`](super::revocation::Revoker)
    /// to check when its change feed missed changes.
    pub fn grants(&self) -> Arc<Grants> {
        Arc::clone(&self.grants)
    }

    /// Answers one authorization request (a JWT signed by a server) with the response JWT: a
    /// user JWT for an admitted client, or an error.
    ///
    /// The request's own signature is not checked. It is made with the key the request itself
    /// names as its issuer (the server's id, generated at each start), so anyone able to forge
    /// a request could sign it as well: it proves nothing about who sent it. What does is the
    /// subject: only the servers, and the callout's own users, may publish on
    /// [`AUTH_CALLOUT_SUBJECT`] in the callout's account. And a response is good only for the
    /// server and the connection it names. The decision rests on the client's nonce signature,
    /// which is checked. (Checking the request's signature cost a quarter of membershipd's CPU
    /// per login.)
    pub async fn respond(&self, request: &str) -> Result<String, Refusal> {
        let claims = jwt::decode_unverified(request)
            .map_err(|e| Refusal::MalformedRequest(e.to_string()))?;
        let nats = claims.get("nats").cloned().unwrap_or(Value::Null);
        let (user_nkey, server_id) = addressees(&claims)?;
        let decision = match self.admit(&nats).await {
            Ok(key) => Ok((self.rooms(&key).await, key)),
            Err(refusal) => Err(refusal),
        };
        match &decision {
            Ok((rooms, key)) => tracing::debug!(user = %key, rooms = rooms.len(), "login admitted"),
            Err(refusal) => {
                let nkey = text(&nats, &["connect_opts", "nkey"]);
                tracing::info!(%nkey, %refusal, "login refused");
            }
        }
        let body = match &decision {
            Ok((rooms, key)) => json!({
                "jwt": self.user_jwt(&user_nkey, key, rooms)?,
                "type": "authorization_response",
                "version": 2,
            }),
            Err(refusal) => refusal_body(refusal),
        };
        self.response(&user_nkey, &server_id, body)
    }

    /// Refuses one authorization request as [`Refusal::Overloaded`] without working on it.
    pub fn refuse_overloaded(&self, request: &str) -> Result<String, Refusal> {
        let claims = jwt::decode_unverified(request)
            .map_err(|e| Refusal::MalformedRequest(e.to_string()))?;
        let (user_nkey, server_id) = addressees(&claims)?;
        self.response(&user_nkey, &server_id, refusal_body(&Refusal::Overloaded))
    }

    /// The signed response to `user_nkey`'s login at `server_id`.
    fn response(&self, user_nkey: &str, server_id: &str, body: Value) -> Result<String, Refusal> {
        let mut response = Map::new();
        response.insert("sub".into(), json!(user_nkey));
        response.insert("aud".into(), json!(server_id));
        response.insert("nats".into(), body);
        jwt::encode(response, &self.issuer, now_millis() / 1000)
            .map_err(|e| Refusal::MalformedRequest(e.to_string()))
    }

    async fn admit(&self, nats: &Value) -> Result<SignPublicKey, Refusal> {
        let nkey = text(nats, &["connect_opts", "nkey"]);
        let sig = text(nats, &["connect_opts", "sig"]);
        let nonce = text(nats, &["client_info", "nonce"]);
        if nkey.is_empty() || sig.is_empty() || nonce.is_empty() {
            return Err(Refusal::NoNkey);
        }
        let key = SignPublicKey::from_nkey(&nkey).map_err(|_| Refusal::BadNkey)?;
        let sig_bytes = [URL_SAFE_NO_PAD, URL_SAFE, STANDARD, STANDARD_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(&sig).ok())
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or(Refusal::BadSignature)?;
        key.verify(nonce.as_bytes(), &Signature::from_bytes(sig_bytes))
            .map_err(|_| Refusal::BadSignature)?;
        if self.store.is_authorized(&key).await {
            Ok(key)
        } else {
            Err(Refusal::NotAuthorized)
        }
    }

    /// The rooms an admitted `key` is a member of, for its grants: none when the store
    /// cannot list them within [`ROOMS_WAIT`] (fewer grants, never more).
    async fn rooms(&self, key: &SignPublicKey) -> Vec<RoomId> {
        match tokio::time::timeout(ROOMS_WAIT, self.store.rooms_for_member(key)).await {
            Ok(Ok(rooms)) => rooms,
            Ok(Err(e)) => {
                tracing::debug!(user = %key, error = %e, "a login's rooms could not be listed; admitted without grants");
                Vec::new()
            }
            Err(_) => {
                tracing::debug!(user = %key, "a login's rooms were not listed in time; admitted without grants");
                Vec::new()
            }
        }
    }

    fn user_jwt(
        &self,
        user_nkey: &str,
        key: &SignPublicKey,
        rooms: &[RoomId],
    ) -> Result<String, Refusal> {
        let permissions = UserPermissions::for_user(key, rooms);
        let now = now_millis() / 1000;
        let lifetime = USER_JWT_LIFETIME.as_secs() as i64;
        let valid_for = lifetime - jitter(lifetime / 4);
        // Recorded before the JWT leaves: a change the feed brings from now on finds it.
        self.grants.record(
            key,
            &rooms[..rooms.len().min(MAX_GRANTED_ROOMS)],
            Duration::from_secs(valid_for.max(0) as u64 + 1),
        );
        let claims = json!({
            "sub": user_nkey,
            "aud": self.account,
            "name": key.to_nkey(),
            "exp": now + valid_for,
            "nats": {
                "pub": { "allow": permissions.publish },
                "sub": { "allow": permissions.subscribe },
                "type": "user",
                "version": 2,
            },
        });
        let Value::Object(claims) = claims else {
            unreachable!("json! of an object literal")
        };
        jwt::encode(claims, &self.issuer, now).map_err(|e| Refusal::MalformedRequest(e.to_string()))
    }

    /// Serves authorization requests on `client` (connected as an auth user of the callout's
    /// account) until the subscription ends, with the admission rules of the
    /// [module documentation](self). Every request gets an answer within the budget; one that cannot be
    /// read gets an empty reply, which the server takes as "not authorized". Call it (or
    /// [`start`](Self::start)) once per connection to serve on several: they share the limits.
    pub async fn run(
        self: Arc<Self>,
        client: async_nats::Client,
    ) -> Result<(), async_nats::SubscribeError> {
        let requests = client
            .queue_subscribe(AUTH_CALLOUT_SUBJECT, AUTH_CALLOUT_QUEUE.into())
            .await?;
        self.serve(client, requests).await;
        Ok(())
    }

    /// Like [`run`](Self::run), but returns once the subscription is written to the
    /// connection, serving in a task of its own from then on.
    pub async fn start(
        self: Arc<Self>,
        client: async_nats::Client,
    ) -> Result<tokio::task::JoinHandle<()>, async_nats::Error> {
        let requests = client
            .queue_subscribe(AUTH_CALLOUT_SUBJECT, AUTH_CALLOUT_QUEUE.into())
            .await?;
        client.flush().await?;
        Ok(tokio::spawn(self.serve(client, requests)))
    }

    /// Answers the authorization requests of `requests` on `client`, the connection they came
    /// on.
    async fn serve(
        self: Arc<Self>,
        client: async_nats::Client,
        mut requests: async_nats::Subscriber,
    ) {
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let callout = Arc::clone(&self);
            let client = client.clone();
            // Taken in here, in the order the logins arrive.
            let arrival = self.queue.arrive();
            tokio::spawn(async move {
                let request = String::from_utf8_lossy(&message.payload);
                let answer = callout.decide(&request, arrival).await;
                let answer = answer.unwrap_or_default();
                let _ = client.publish(reply, answer.into_bytes().into()).await;
            });
        }
    }

    /// Decides a login taken in as `arrival`: answered if it gets a worker within its budget,
    /// refused as overloaded if not.
    async fn decide(&self, request: &str, arrival: Arrival) -> Result<String, Refusal> {
        let worker = match arrival {
            Arrival::Work(worker) => Some(worker),
            Arrival::Wait(waiter) => waiter.turn().await,
        };
        let Some(_worker) = worker else {
            tracing::debug!("a login could not be answered within its budget; refused");
            return self.refuse_overloaded(request);
        };
        self.respond(request).await
    }
}

/// The text at `path` in `value`, or "" when there is none.
fn text(value: &Value, path: &[&str]) -> String {
    let mut v = value;
    for p in path {
        v = v.get(p).unwrap_or(&Value::Null);
    }
    v.as_str().unwrap_or_default().to_string()
}

/// The user nkey and the server id an authorization request names, which its response must
/// name back; the request must be issued by that server.
fn addressees(claims: &Map<String, Value>) -> Result<(String, String), Refusal> {
    let nats = claims.get("nats").unwrap_or(&Value::Null);
    let user_nkey = text(nats, &["user_nkey"]);
    let server_id = text(nats, &["server_id", "id"]);
    if user_nkey.is_empty()
        || server_id.is_empty()
        || claims.get("iss").and_then(Value::as_str) != Some(server_id.as_str())
    {
        return Err(Refusal::MalformedRequest(
            "missing user_nkey or server id".into(),
        ));
    }
    Ok((user_nkey, server_id))
}

fn refusal_body(refusal: &Refusal) -> Value {
    json!({
        "error": refusal.to_string(),
        "type": "authorization_response",
        "version": 2,
    })
}

/// A random number of seconds in `0..=max` (0 if the system's randomness fails: no jitter is
/// better than no login).
fn jitter(max: i64) -> i64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) if max > 0 => (u64::from_le_bytes(bytes) % (max as u64 + 1)) as i64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_may_publish_to_and_subscribe_to_its_own_subjects_and_at_most_the_granted_rooms_stream_subjects(
    ) {
        let key = unibus::Identity::generate().unwrap().sign_public_key();
        let rooms: Vec<RoomId> = (0..MAX_GRANTED_ROOMS + 5)
            .map(|i| RoomId::new(&format!("room-{i:05}")).unwrap())
            .collect();
        let permissions = UserPermissions::for_user(&key, &rooms);
        let stores: Vec<&String> = permissions
            .publish
            .iter()
            .filter(|s| s.starts_with("unibus.msg."))
            .collect();
        assert_eq!(stores.len(), MAX_GRANTED_ROOMS);
        assert_eq!(stores[0], "unibus.msg.room-00000");
        assert!(permissions.publish.contains(&USER_INFO_SUBJECT.to_string()));
        // Nothing else of the stream, and no wildcard over it.
        assert!(!permissions.publish.iter().any(|s| s.contains('*')
            || s == ">"
            || s.starts_with("$JS")
            || s.starts_with("unibus.live")));
        // It may subscribe to the same rooms' live copies, and nothing else of the stream.
        let lives: Vec<&String> = permissions
            .subscribe
            .iter()
            .filter(|s| s.starts_with("unibus.live."))
            .collect();
        assert_eq!(lives.len(), MAX_GRANTED_ROOMS);
        assert_eq!(lives[0], "unibus.live.room-00000");
        assert!(!permissions
            .subscribe
            .iter()
            .any(|s| s.starts_with("unibus.msg")
                || s.starts_with("$JS")
                || (s.starts_with("unibus.live") && s.contains(['*', '>']))));
        let none = UserPermissions::for_user(&key, &[]);
        assert!(!none.publish.iter().any(|s| s.starts_with("unibus.msg.")));
        assert!(!none.subscribe.iter().any(|s| s.starts_with("unibus.live")));
    }
}
