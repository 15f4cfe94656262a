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
use unibus::manifest::{Recipient, SignedManifest};
use unibus::protocol::codes::{Refusal, RefusalCode};
use unibus::protocol::control::{
    encode_reply, read_reply, read_request, Empty, EpochReply, EpochRequest, KeyReply, KeyRequest,
    MemberReply, MemberRequest, Operation, Request, RoomRecord, RoomsReply, RoomsRequest,
};
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
    rooms: Vec<RoomRecord>,
    /// Per room, the latest `key` reply to give, with its epoch.
    keys: BTreeMap<RoomId, (u64, KeyReply)>,
}

/// Asks the real control plane `request` as the user, and keeps the reply.
async fn ask<R: Request>(
    real: &async_nats::Client,
    user: &SignPublicKey,
    request: &R,
) -> Result<R::Reply, LiarError> {
    let body = serde_json::to_vec(request).map_err(|e| LiarError::Recording(e.to_string()))?;
    let reply = real
        .request(R::OPERATION.subject(user), body.into())
        .await
        .map_err(|e| LiarError::Nats(e.to_string()))?;
    match read_reply::<R::Reply>(&reply.payload) {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(refusal)) => Err(LiarError::Recording(refusal.to_string())),
        Err(e) => Err(LiarError::Recording(e.to_string())),
    }
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
        let mut rooms = ask(&real, &key, &RoomsRequest {}).await?.rooms;
        let mut keys = BTreeMap::new();
        if let Some((room, epoch)) = &options.rollback {
            let request = KeyRequest {
                room: room.clone(),
                epoch: Some(*epoch),
            };
            keys.insert(room.clone(), (*epoch, ask(&real, &key, &request).await?));
            for entry in rooms.iter_mut().filter(|entry| &entry.id == room) {
                entry.epoch = *epoch;
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
            let part = manifest
                .member_part(&key)
                .map(|part| part.to_bytes())
                .unwrap_or_default();
            let owner = impostor.sign_public_key();
            keys.insert(room.clone(), (1, KeyReply { part }));
            rooms.retain(|entry| &entry.id != room);
            rooms.push(RoomRecord {
                id: room.clone(),
                owner,
                epoch: 1,
            });
            rooms.sort_by(|a, b| a.id.cmp(&b.id));
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
            .subscribe(format!("{}.>", subjects::requests(&key)))
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
        let answer = match Operation::from_name(operation) {
            Some(operation) => script.answer(operation, &message.payload),
            None => refuse(RefusalCode::BadRequest, "no such operation"),
        };
        let _ = client.publish(reply, answer.into()).await;
    }
}

fn refuse(code: RefusalCode, message: &str) -> Vec<u8> {
    encode_reply::<Empty>(&Err(Refusal::new(code, message)))
}

impl Script {
    fn room(&self, id: &RoomId) -> Option<&RoomRecord> {
        self.rooms.iter().find(|room| &room.id == id)
    }

    fn answer(&self, operation: Operation, body: &[u8]) -> Vec<u8> {
        let not_member = || Refusal::new(RefusalCode::NotMember, "not a member");
        match operation {
            Operation::Rooms => encode_reply::<RoomsReply>(&Ok(RoomsReply {
                rooms: self.rooms.clone(),
            })),
            Operation::Member => {
                encode_reply(&read_request::<MemberRequest>(body).map(|r| MemberReply {
                    member: self.room(&r.room).is_some(),
                }))
            }
            Operation::Epoch => encode_reply(&read_request::<EpochRequest>(body).and_then(|r| {
                let room = self.room(&r.room).ok_or_else(not_member)?;
                Ok(EpochReply { epoch: room.epoch })
            })),
            Operation::Key => {
                encode_reply(&read_request::<KeyRequest>(body).and_then(|r| {
                    match (self.keys.get(&r.room), r.epoch) {
                        (Some((_, reply)), None) => Ok(reply.clone()),
                        (Some((epoch, reply)), Some(asked)) if asked == *epoch => Ok(reply.clone()),
                        _ => Err(Refusal::new(
                            RefusalCode::NoKey,
                            "this test double has no such key",
                        )),
                    }
                }))
            }
            _ => refuse(
                RefusalCode::Unavailable,
                "this test double only answers questions",
            ),
        }
    }
}
