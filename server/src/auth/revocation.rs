//! Cutting revoked and deleted users off: a periodic sweep over every node's connections.
//!
//! nats-server keeps an admitted callout user connected until told otherwise, and config
//! reloads do not help (they would drop every callout user at once). So membershipd, as the
//! system account's user, asks all nodes for the application account's connections
//! (`$SYS.REQ.SERVER.PING.CONNZ`), checks each distinct key against the store, and disconnects
//! the connections of keys that are revoked or gone (`$SYS.REQ.SERVER.<id>.KICK`). A kicked
//! client that reconnects meets the callout, which refuses it.
//!
//! Only a definite answer ("revoked", "no such user") disconnects: a store error leaves live
//! sessions alone for that sweep, while new logins are refused until the store answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use unibus::SignPublicKey;

use crate::store::{Store, StoreError, UserStatus};

/// Why a sweep could not list the connected users (no one is cut by a failed sweep).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SweepError {
    /// The system account's reply inbox could not be subscribed to.
    #[error("cannot subscribe to the CONNZ replies: {0}")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// The CONNZ request could not be published.
    #[error("cannot ask the servers for their connections: {0}")]
    Ask(#[source] async_nats::PublishError),
}

/// How long a sweep collects CONNZ answers from the nodes.
const COLLECT_WINDOW: Duration = Duration::from_millis(300);

/// A connection found on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Connection {
    server_id: String,
    cid: u64,
    user: String,
}

/// Finds and disconnects the sessions of users who may no longer log in.
pub struct Revoker {
    store: Arc<dyn Store>,
    system: async_nats::Client,
    account: String,
}

impl Revoker {
    /// A revoker using `system` (a connection of the system account's user) for the users of
    /// `account`.
    pub fn new(
        store: Arc<dyn Store>,
        system: async_nats::Client,
        account: impl Into<String>,
    ) -> Self {
        Self {
            store,
            system,
            account: account.into(),
        }
    }

    /// One sweep: returns how many connections were disconnected.
    pub async fn sweep(&self) -> Result<usize, SweepError> {
        let connections = self.connections().await?;
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        let mut kicked = 0;
        for connection in connections {
            let cut = match verdicts.get(&connection.user) {
                Some(cut) => *cut,
                None => {
                    let cut = self.must_cut(&connection.user).await;
                    verdicts.insert(connection.user.clone(), cut);
                    cut
                }
            };
            if cut && self.kick(&connection).await {
                tracing::info!(
                    user = %connection.user,
                    server = %connection.server_id,
                    cid = connection.cid,
                    "revoked session cut"
                );
                kicked += 1;
            }
        }
        Ok(kicked)
    }

    /// Sweeps every `interval`, forever.
    pub async fn run(self, interval: Duration) {
        loop {
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "revocation sweep failed");
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn must_cut(&self, nkey: &str) -> bool {
        let Ok(key) = SignPublicKey::from_nkey(nkey) else {
            // Not a user key at all: it cannot be one of ours.
            return true;
        };
        match self.store.get_user(&key).await {
            Ok(user) => user.status != UserStatus::Active,
            Err(StoreError::NotFound) => true,
            Err(_) => false,
        }
    }

    async fn connections(&self) -> Result<Vec<Connection>, SweepError> {
        let inbox = self.system.new_inbox();
        let mut replies = self
            .system
            .subscribe(inbox.clone())
            .await
            .map_err(SweepError::Subscribe)?;
        let filter = json!({ "acc": self.account, "auth": true, "limit": 1_000_000 });
        self.system
            .publish_with_reply(
                "$SYS.REQ.SERVER.PING.CONNZ",
                inbox,
                filter.to_string().into(),
            )
            .await
            .map_err(SweepError::Ask)?;
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + COLLECT_WINDOW;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
            let Ok(reply) = serde_json::from_slice::<Value>(&message.payload) else {
                continue;
            };
            let server_id = reply["server"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            for c in reply["data"]["connections"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let user = c["authorized_user"].as_str().or_else(|| c["name"].as_str());
                if let (Some(cid), Some(user)) = (c["cid"].as_u64(), user) {
                    found.push(Connection {
                        server_id: server_id.clone(),
                        cid,
                        user: user.to_string(),
                    });
                }
            }
        }
        Ok(found)
    }

    async fn kick(&self, connection: &Connection) -> bool {
        let subject = format!("$SYS.REQ.SERVER.{}.KICK", connection.server_id);
        let request = json!({ "cid": connection.cid }).to_string();
        match tokio::time::timeout(
            Duration::from_secs(1),
            self.system.request(subject, request.into()),
        )
        .await
        {
            Ok(Ok(reply)) => serde_json::from_slice::<Value>(&reply.payload)
                .map(|v| v.get("error").is_none())
                .unwrap_or(false),
            _ => false,
        }
    }
}
