//! A control plane that lies, for testing what the client trusts (docs/client.md, "Trust
//! across restarts").
//!
//! [`Liar::start`] first logs in to the **real** cluster as the user and records real replies
//! of membershipd: the user's rooms and, for the rollback room, the key reply of an older epoch
//! (a real, validly signed manifest). It then runs a nats-server of its own, where the user's
//! nkey may log in, and answers the user's control-plane requests (`unibus.cp.<hex>.<op>`,
//! protocol §12) itself:
//!
//! - `rollback = (room, epoch)`: `rooms`, `epoch` and the latest `key` of `room` say `epoch`,
//!   and the latest key is the recorded, real reply of that older epoch;
//! - `swap_owner = room`: `room` is owned by a fresh *impostor* key, with an epoch-1 manifest
//!   that the impostor signed, sealing a fresh key to the user's real keys, so that only the
//!   client's pinned owner can tell.
//!
//! Every other room is answered as recorded; operations that change anything are refused with
//! `unavailable`. The binary `unibus-liar` wraps this for the binding tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use unibus::manifest::{Recipient, SignedManifest};
use unibus::sealing::RoomKey;
use unibus::{subjects, Identity, RoomId, SignPublicKey};

use crate::{ClusterOptions, NatsCluster};

/// What the liar lies about.
#[derive(Debug, Clone, Default)]
pub struct LiarOptions {
    /// The real cluster's client URLs, to record membershipd's replies from.
    pub real_cluster: Vec<String>,
    /// Serve this older epoch of this room as its latest (a replay of the real reply).
    pub rollback: Option<(RoomId, u64)>,
    /// Name an impostor as this room's owner, with a manifest the impostor signed.
    pub swap_owner: Option<RoomId>,
}

/// Why the liar could not start.
#[derive(Debug, thiserror::Error)]
pub enum LiarError {
    /// The real cluster or the liar's own could not be used.
    #[error("{0}")]
    Nats(String),
    /// membershipd refused to record what the liar needs (for example, no such epoch).
    #[error("recording from membershipd failed: {0}")]
    Recording(String),
    /// The liar's nats-server did not start.
    #[error(transparent)]
    Cluster(#[from] crate::ClusterError),
}

/// A running liar: its own nats-server and the task answering on it. Stopped on drop.
pub struct Liar {
    /// Where the user's session connects to be lied to, e.g. `nats://127.0.0.1:40123`.
    pub nats_url: String,
    /// The impostor's signing key (the `swap_owner` room's claimed owner).
    pub impostor: SignPublicKey,
    task: tokio::task::JoinHandle<()>,
    _cluster: NatsCluster,
}

impl Drop for Liar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Script {
    user: SignPublicKey,
    /// The recorded `rooms` reply, rewritten.
    rooms: Vec<Value>,
    /// Per room, the latest `key` reply to give and the epoch it is at.
    keys: BTreeMap<String, (u64, Value)>,
}

impl Liar {
    /// Records from the real cluster as `user`, starts the liar's nats-server and answers on
    /// it.
    pub async fn start(user: Arc<Identity>, options: LiarOptions) -> Result<Liar, LiarError> {
        let key = user.sign_public_key();
        let nats = |e: &dyn std::fmt::Display| LiarError::Nats(e.to_string());
        let real_addresses = options
            .real_cluster
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| nats(&e))?;

        // 1. Record real replies.
        let real = async_nats::ConnectOptions::with_nkey(user.nkey_seed().to_string())
            .custom_inbox_prefix(subjects::inbox_prefix(&key))
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .connect(real_addresses)
            .await
            .map_err(|e| nats(&e))?;
        let prefix = subjects::requests(&key);
        let ask = |operation: &str, body: Value| {
            let (real, subject) = (real.clone(), format!("{prefix}.{operation}"));
            async move {
                let reply = real
                    .request(subject, body.to_string().into())
                    .await
                    .map_err(|e| LiarError::Nats(e.to_string()))?;
                let value: Value = serde_json::from_slice(&reply.payload)
                    .map_err(|e| LiarError::Recording(e.to_string()))?;
                if value.get("error").is_some() {
                    return Err(LiarError::Recording(value.to_string()));
                }
                Ok(value)
            }
        };
        let mut rooms = ask("rooms", json!({})).await?["rooms"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut keys = BTreeMap::new();
        if let Some((room, epoch)) = &options.rollback {
            let reply = ask("key", json!({"room": room, "epoch": epoch})).await?;
            keys.insert(room.to_string(), (*epoch, reply));
            for entry in &mut rooms {
                if entry["id"] == room.as_str() {
                    entry["epoch"] = json!(epoch);
                }
            }
        }
        real.drain().await.map_err(|e| nats(&e))?;

        // 2. The impostor's room.
        let impostor = Identity::generate().map_err(|e| LiarError::Recording(e.to_string()))?;
        if let Some(room) = &options.swap_owner {
            let fresh = RoomKey::generate().map_err(|e| LiarError::Recording(e.to_string()))?;
            let manifest =
                SignedManifest::rekey(&impostor, room, 1, 0, &fresh, &[Recipient::of(&user)])
                    .map_err(|e| LiarError::Recording(e.to_string()))?;
            let sealed = manifest
                .unverified()
                .entry_for(&key)
                .map(|entry| hex::encode(entry.sealed.to_bytes()))
                .unwrap_or_default();
            let owner = impostor.sign_public_key().to_hex();
            keys.insert(
                room.to_string(),
                (
                    1,
                    json!({"epoch": 1, "owner": owner, "sealed": sealed,
                           "manifest": hex::encode(manifest.to_bytes())}),
                ),
            );
            rooms.retain(|entry| entry["id"] != room.as_str());
            rooms.push(json!({"id": room, "owner": owner, "epoch": 1}));
            rooms.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        }

        // 3. A nats-server where the user's key logs in, and the answers.
        let cluster = NatsCluster::start_with(ClusterOptions {
            nodes: 1,
            extra_config: format!(
                "authorization {{\n  users = [ {{ nkey: {} }} ]\n}}\n",
                user.nkey_public()
            ),
            probe: false,
            ..ClusterOptions::default()
        })
        .await?;
        let nats_url = cluster.client_url(0);
        let responder = async_nats::ConnectOptions::with_nkey(user.nkey_seed().to_string())
            .connect(cluster.server_addrs())
            .await
            .map_err(|e| nats(&e))?;
        let requests = responder
            .subscribe(format!("{prefix}.>"))
            .await
            .map_err(|e| nats(&e))?;
        responder.flush().await.map_err(|e| nats(&e))?;
        let script = Script {
            user: key,
            rooms,
            keys,
        };
        let task = tokio::spawn(answer(responder, requests, script));
        Ok(Liar {
            nats_url,
            impostor: impostor.sign_public_key(),
            task,
            _cluster: cluster,
        })
    }
}

async fn answer(client: async_nats::Client, mut requests: async_nats::Subscriber, script: Script) {
    let prefix = format!("{}.", subjects::requests(&script.user));
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply else { continue };
        let operation = message.subject.as_str().strip_prefix(&prefix).unwrap_or("");
        let body: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        let answer = script.answer(operation, &body);
        let _ = client.publish(reply, answer.to_string().into()).await;
    }
}

fn refusal(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

impl Script {
    fn room(&self, id: &str) -> Option<&Value> {
        self.rooms.iter().find(|room| room["id"] == id)
    }

    fn answer(&self, operation: &str, body: &Value) -> Value {
        let id = body["room"].as_str().unwrap_or_default();
        match operation {
            "rooms" => json!({ "rooms": self.rooms }),
            "member" => json!({ "member": self.room(id).is_some() }),
            "epoch" => match self.room(id) {
                Some(room) => json!({ "epoch": room["epoch"] }),
                None => refusal("not_member", "not a member"),
            },
            "key" => match (self.keys.get(id), body["epoch"].as_u64()) {
                (Some((_, reply)), None) => reply.clone(),
                (Some((epoch, reply)), Some(asked)) if asked == *epoch => reply.clone(),
                _ => refusal("no_key", "this test double has no such key"),
            },
            _ => refusal("unavailable", "this test double only answers questions"),
        }
    }
}
