//! The auth-callout service: nats-server asks it, for every client that connects, whether to
//! admit them and with which permissions.
//!
//! A client logs in with its own ed25519 key as a NATS user nkey. nats-server does not check
//! the nonce signature of callout users itself, so this service does: it verifies
//! `connect_opts.sig` over `client_info.nonce` with `connect_opts.nkey`, then asks the store
//! whether that key is an active user. Anything else, including a store error or timeout, is a
//! refusal (fail closed). An admitted user gets a user JWT for the application account with
//! permissions scoped to its own key (see [`UserPermissions`]).

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use futures::StreamExt;
use nkeys::KeyPair;
use serde_json::{json, Map, Value};
use unibus::{subjects, SignPublicKey, Signature};

use super::jwt;
use crate::store::{now_millis, Store};

/// The subject nats-server sends authorization requests to.
pub const AUTH_CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// The queue group of the callout responders, so several membershipd instances share the load.
pub const AUTH_CALLOUT_QUEUE: &str = "unibus-auth";

/// The subjects an admitted user may use, all derived from its own key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPermissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

impl UserPermissions {
    /// A user may publish only control-plane requests under its own key, and subscribe only to
    /// its own inbox prefix and its own change notifications.
    pub fn for_user(key: &SignPublicKey) -> Self {
        Self {
            publish: vec![subjects::requests(key) + ".>"],
            subscribe: vec![
                subjects::inbox_prefix(key) + ".>",
                subjects::events(key) + ".>",
            ],
        }
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
}

/// Decides logins. See the [module documentation](self).
pub struct Callout {
    store: Arc<dyn Store>,
    issuer: KeyPair,
    account: String,
}

impl Callout {
    /// A callout that signs with `issuer` (the account key configured as the callout's
    /// `issuer`) and places admitted users in `account`.
    pub fn new(store: Arc<dyn Store>, issuer: KeyPair, account: impl Into<String>) -> Self {
        Self {
            store,
            issuer,
            account: account.into(),
        }
    }

    /// Answers one authorization request (a JWT signed by a server) with the response JWT: a
    /// user JWT for an admitted client, or an error.
    pub async fn respond(&self, request: &str) -> Result<String, Refusal> {
        let claims =
            jwt::decode_verified(request).map_err(|e| Refusal::MalformedRequest(e.to_string()))?;
        let nats = claims.get("nats").cloned().unwrap_or(Value::Null);
        let text = |value: &Value, path: &[&str]| -> String {
            let mut v = value;
            for p in path {
                v = v.get(p).unwrap_or(&Value::Null);
            }
            v.as_str().unwrap_or_default().to_string()
        };
        let user_nkey = text(&nats, &["user_nkey"]);
        let server_id = text(&nats, &["server_id", "id"]);
        if user_nkey.is_empty()
            || server_id.is_empty()
            || claims.get("iss").and_then(Value::as_str) != Some(server_id.as_str())
        {
            return Err(Refusal::MalformedRequest(
                "missing user_nkey or server id".into(),
            ));
        }
        let decision = self.admit(&nats, &text).await;
        match &decision {
            Ok(key) => tracing::debug!(user = %key, "login admitted"),
            Err(refusal) => {
                let nkey = text(&nats, &["connect_opts", "nkey"]);
                tracing::info!(%nkey, %refusal, "login refused");
            }
        }
        let mut response = Map::new();
        response.insert("sub".into(), json!(user_nkey));
        response.insert("aud".into(), json!(server_id));
        let body = match &decision {
            Ok(key) => json!({
                "jwt": self.user_jwt(&user_nkey, key)?,
                "type": "authorization_response",
                "version": 2,
            }),
            Err(refusal) => json!({
                "error": refusal.to_string(),
                "type": "authorization_response",
                "version": 2,
            }),
        };
        response.insert("nats".into(), body);
        jwt::encode(response, &self.issuer, now_millis() / 1000)
            .map_err(|e| Refusal::MalformedRequest(e.to_string()))
    }

    async fn admit(
        &self,
        nats: &Value,
        text: &impl Fn(&Value, &[&str]) -> String,
    ) -> Result<SignPublicKey, Refusal> {
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

    fn user_jwt(&self, user_nkey: &str, key: &SignPublicKey) -> Result<String, Refusal> {
        let permissions = UserPermissions::for_user(key);
        let claims = json!({
            "sub": user_nkey,
            "aud": self.account,
            "name": key.to_nkey(),
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
        jwt::encode(claims, &self.issuer, now_millis() / 1000)
            .map_err(|e| Refusal::MalformedRequest(e.to_string()))
    }

    /// Serves authorization requests on `client` (connected as an auth user of the callout's
    /// account) until the subscription ends. Every request gets an answer; one that cannot be
    /// read gets an empty reply, which the server takes as "not authorized".
    pub async fn run(
        self: Arc<Self>,
        client: async_nats::Client,
    ) -> Result<(), async_nats::SubscribeError> {
        let mut requests = client
            .queue_subscribe(AUTH_CALLOUT_SUBJECT, AUTH_CALLOUT_QUEUE.into())
            .await?;
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let callout = Arc::clone(&self);
            let client = client.clone();
            tokio::spawn(async move {
                let request = String::from_utf8_lossy(&message.payload);
                let answer = match callout.respond(&request).await {
                    Ok(response) => response.into_bytes().into(),
                    Err(_) => bytes::Bytes::new(),
                };
                let _ = client.publish(reply, answer).await;
            });
        }
        Ok(())
    }
}
