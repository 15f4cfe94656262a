//! Cutting revoked and deleted users off, at a cost in proportion to revocations, not to
//! connections.
//!
//! nats-server keeps an admitted callout user connected until told otherwise, and config
//! reloads do not help (they would drop every callout user at once). So membershipd follows the
//! store's [change feed](crate::store::feed): when a user changes and is no longer active, it
//! publishes an [`AccountNotice::Revoked`] to the user's own notice subject (so the user's
//! sessions learn it from membershipd, not from refused logins), then, as the system account's
//! user, asks every node for that user's connections (`$SYS.REQ.SERVER.PING.CONNZ` filtered to
//! the user) and disconnects each (`$SYS.REQ.SERVER.<id>.KICK`). A kicked client that reconnects
//! meets the callout, which refuses it. Every instance follows the feed, so a revocation made
//! anywhere (the CLI, the admin API of any instance) reaches every node.
//!
//! A member who leaves a room is cut the same way (without a notice of its own: the control
//! plane tells it `removed`), so that no session keeps the grant to send to that room that its
//! login was given ([`grants`](super::grants), protocol §15.2); its sessions log in again with
//! the rooms it is still in.
//!
//! A slow sweep over every connection, a page at a time, is the safety net for what a feed
//! cannot see (a session that logged in during an outage of the feed); it runs at start, after a
//! feed breaks or resets, and every `sweep_every`. A sweep after the feed broke or reset also
//! checks the grants this instance's callout issued, and cuts the sessions of users granted a
//! room they left.
//!
//! Only a definite answer ("revoked", "no such user") disconnects: a store error leaves live
//! sessions alone, while new logins are refused until the store answers. Behind a
//! [`CachedStore`](crate::store::CachedStore), the revoker follows the changes the cache has
//! applied, so it never reads an answer the change made stale, and a login the cache admits
//! after the cut is not a stale admission: the cut comes after the cache forgot the user.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use unibus::protocol::events::AccountNotice;
use unibus::{RoomId, SignPublicKey};

use super::grants::Grants;
use crate::store::{Change, FeedItem, Store, StoreError, UserStatus};

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

/// How long one CONNZ question collects answers from the nodes.
const COLLECT_WINDOW: Duration = Duration::from_millis(300);

/// Connections asked of each node per page of a sweep.
const SWEEP_PAGE: usize = 1_000;

/// The wait before a broken change feed is reopened.
const REOPEN_AFTER: Duration = Duration::from_millis(500);

/// How long after a user's notice is sent its sessions are kicked at the earliest. The notice
/// travels from membershipd's connection to the user's node over the cluster's routes, the
/// kick over the system account's: nothing orders the two, and a kick that overtakes the
/// notice leaves the session without it (it then keeps reconnecting). The lead lets the notice
/// arrive first; it bounds the cut from below.
const NOTICE_LEAD: Duration = Duration::from_millis(250);

/// How long a cut for a member who may have left a room keeps asking a store that does not
/// answer.
const LEFT_PATIENCE: Duration = Duration::from_secs(30);

/// How many users the feed's revocations cut at once: each cut waits [`NOTICE_LEAD`] and up
/// to [`COLLECT_WINDOW`] for the nodes' answers, so a burst of revocations is cut side by
/// side, not one wait after the other.
const CUTS_AT_ONCE: usize = 32;

/// A connection found on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Connection {
    server_id: String,
    cid: u64,
    user: String,
}

/// One node's answer to a CONNZ question: a page of its connections.
struct NodePage {
    connections: Vec<Connection>,
    /// Whether the node has more connections after this page.
    more: bool,
}

/// The nodes' answers to one CONNZ question, taken as they arrive, until [`COLLECT_WINDOW`]
/// after it was asked: a node's connections can be cut before the slowest node answers.
struct Answers<'a> {
    replies: async_nats::Subscriber,
    deadline: tokio::time::Instant,
    /// The one user asked about, if any.
    user: Option<&'a str>,
    offset: usize,
}

impl Answers<'_> {
    /// The next node's page, or `None` once the window has closed.
    async fn next(&mut self) -> Option<NodePage> {
        loop {
            let message = tokio::time::timeout_at(self.deadline, self.replies.next())
                .await
                .ok()??;
            if let Some(page) = self.read(&message.payload) {
                return Some(page);
            }
        }
    }

    /// A node's CONNZ reply as a page; `None` if it is not one.
    fn read(&self, payload: &[u8]) -> Option<NodePage> {
        let reply = serde_json::from_slice::<Value>(payload).ok()?;
        let server_id = reply["server"]["id"].as_str().unwrap_or_default();
        let data = &reply["data"];
        let total = data["total"].as_u64().unwrap_or(0) as usize;
        let mut connections = Vec::new();
        for c in data["connections"].as_array().into_iter().flatten() {
            let name = c["authorized_user"].as_str().or_else(|| c["name"].as_str());
            let (Some(cid), Some(name)) = (c["cid"].as_u64(), name) else {
                continue;
            };
            // Filtered by the server, and again here: only the asked-for user is cut.
            if self.user.is_some_and(|user| user != name) {
                continue;
            }
            connections.push(Connection {
                server_id: server_id.to_string(),
                cid,
                user: name.to_string(),
            });
        }
        Some(NodePage {
            connections,
            more: total > self.offset + SWEEP_PAGE,
        })
    }
}

/// Finds and disconnects the sessions of users who may no longer log in.
pub struct Revoker {
    store: Arc<dyn Store>,
    system: async_nats::Client,
    service: async_nats::Client,
    account: String,
    /// membershipd's own users in `account` (the control plane's): never cut.
    spared: Vec<String>,
    /// The room grants of this instance's callout, checked by each sweep after a feed gap.
    grants: Option<Arc<Grants>>,
}

impl Revoker {
    /// A revoker using `system` (a connection of the system account's user) to find and
    /// disconnect the sessions of `account`'s users, and `service` (membershipd's own
    /// connection, the publisher of notices) to tell them why.
    pub fn new(
        store: Arc<dyn Store>,
        system: async_nats::Client,
        service: async_nats::Client,
        account: impl Into<String>,
    ) -> Self {
        Self {
            store,
            system,
            service,
            account: account.into(),
            spared: Vec::new(),
            grants: None,
        }
    }

    /// Checks `grants` (the room grants of this instance's callout) at each sweep after the
    /// feed broke or reset, and cuts the sessions of each user granted a room it is no longer
    /// a member of: the safety net for a membership change the feed missed.
    pub fn with_grants(mut self, grants: Arc<Grants>) -> Self {
        self.grants = Some(grants);
        self
    }

    /// Never cuts the connections of `nkey`, a user of membershipd's own in the revoker's
    /// account (the control plane's, which is not a registered user): a sweep would otherwise
    /// disconnect the control plane itself, and requests in flight would fail.
    pub fn sparing(mut self, nkey: impl Into<String>) -> Self {
        self.spared.push(nkey.into());
        self
    }

    /// Follows the change feed and cuts each user who stops being active (up to 32 users at
    /// a time); sweeps every connection at start, whenever the feed breaks or resets, and
    /// every `sweep_every`. A sweep runs beside the feed, never in its way: one over 15,000
    /// connections takes seconds, and the feed's cuts go on meanwhile.
    pub async fn run(self: Arc<Self>, sweep_every: Duration) {
        let sweep_now = tokio::sync::Notify::new();
        tokio::join!(
            self.follow_feed(&sweep_now),
            self.sweep_when_asked(&sweep_now, sweep_every),
        );
    }

    /// Follows the change feed, reopening it when it breaks; asks `sweep_now` for a sweep
    /// whenever the feed (re)opens or resets, since the feed cannot say what happened before.
    async fn follow_feed(self: &Arc<Self>, sweep_now: &tokio::sync::Notify) {
        let cuts_at_once = Arc::new(tokio::sync::Semaphore::new(CUTS_AT_ONCE));
        let mut cuts = tokio::task::JoinSet::new();
        loop {
            let mut feed = match self.store.changes().await {
                Ok(feed) => feed,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the store's change feed; sweeping only");
                    sweep_now.notify_one();
                    tokio::time::sleep(REOPEN_AFTER).await;
                    continue;
                }
            };
            sweep_now.notify_one();
            loop {
                match feed.next().await {
                    Some(Ok(FeedItem::Changed(Change::User(key)))) => {
                        while cuts.try_join_next().is_some() {}
                        // Waits while as many cuts as allowed are under way; the semaphore is
                        // never closed.
                        let Ok(permit) = Arc::clone(&cuts_at_once).acquire_owned().await else {
                            continue;
                        };
                        let revoker = Arc::clone(self);
                        cuts.spawn(async move {
                            revoker.cut_if_gone(&key).await;
                            drop(permit);
                        });
                    }
                    Some(Ok(FeedItem::Changed(Change::Member { room, member }))) => {
                        while cuts.try_join_next().is_some() {}
                        let Ok(permit) = Arc::clone(&cuts_at_once).acquire_owned().await else {
                            continue;
                        };
                        let revoker = Arc::clone(self);
                        cuts.spawn(async move {
                            revoker.cut_if_left(&room, &member).await;
                            drop(permit);
                        });
                    }
                    Some(Ok(FeedItem::Changed(Change::Reset))) => sweep_now.notify_one(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the store's change feed broke; reopening");
                        break;
                    }
                    None => break,
                }
            }
            tokio::time::sleep(REOPEN_AFTER).await;
        }
    }

    /// Sweeps when asked and every `every`, one sweep at a time. Asked during a sweep, it
    /// sweeps once more after it (that sweep may have passed the change over); asked several
    /// times, once.
    async fn sweep_when_asked(&self, asked: &tokio::sync::Notify, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once; the feed asks for the first sweep when it opens.
        tick.tick().await;
        loop {
            let after_feed_gap = tokio::select! {
                _ = asked.notified() => true,
                _ = tick.tick() => false,
            };
            self.sweep_logged(after_feed_gap).await;
            tick.reset();
        }
    }

    /// Checks the grants first when the feed may have missed changes (one question of the
    /// cache per granted user; the feed's own cuts cover them otherwise), then every connection
    /// (which takes seconds over thousands).
    async fn sweep_logged(&self, check_grants: bool) {
        if check_grants {
            match self.sweep_grants().await {
                0 => {}
                cut => tracing::info!(cut, "the sweep cut sessions granted rooms they left"),
            }
        }
        match self.sweep().await {
            Ok(0) => {}
            Ok(cut) => tracing::info!(cut, "the sweep cut sessions of users no longer active"),
            Err(e) => tracing::warn!(error = %e, "revocation sweep failed"),
        }
    }

    /// Cuts `key`'s sessions if it is no longer an active user: returns how many.
    pub async fn cut_if_gone(&self, key: &SignPublicKey) -> usize {
        if !self.must_cut(&key.to_nkey()).await {
            return 0;
        }
        self.notify_revoked(key).await;
        self.cut_sessions(key).await
    }

    /// Cuts `member`'s sessions if it is no longer a member of `room`, so that no session
    /// keeps a grant to send to `room` (protocol §15.2); its sessions log in again with the
    /// rooms it is in. Returns how many were cut. While the store cannot say, it asks again
    /// every 500 ms, for up to 30 s; then the grant lasts until the feed breaks (the sweep
    /// after it checks every grant) or the login's JWT expires.
    pub async fn cut_if_left(&self, room: &RoomId, member: &SignPublicKey) -> usize {
        let give_up = tokio::time::Instant::now() + LEFT_PATIENCE;
        loop {
            match self.store.is_member(room, member).await {
                Ok(true) => return 0,
                Ok(false) => return self.cut_sessions(member).await,
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    tracing::warn!(error = %e, user = %member, %room, "could not tell whether a member left a room; its sessions keep their grants");
                    return 0;
                }
                Err(e) => {
                    tracing::debug!(error = %e, user = %member, %room, "cannot tell yet whether a member left a room");
                    tokio::time::sleep(REOPEN_AFTER).await;
                }
            }
        }
    }

    /// Cuts every session of `key`, [`NOTICE_LEAD`] after now (so that a notice sent just
    /// before reaches them first). Returns how many were cut.
    async fn cut_sessions(&self, key: &SignPublicKey) -> usize {
        let started = std::time::Instant::now();
        let kick_from = tokio::time::Instant::now() + NOTICE_LEAD;
        let nkey = key.to_nkey();
        if self.spared.contains(&nkey) {
            return 0;
        }
        let mut answers = match self.ask(Some(&nkey), 0).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::warn!(error = %e, user = %key, "cannot find a user's sessions to cut");
                return 0;
            }
        };
        let mut kicked = 0;
        while let Some(page) = answers.next().await {
            tokio::time::sleep_until(kick_from).await;
            kicked += self.kick_all(&page.connections).await;
        }
        if let Some(grants) = &self.grants {
            grants.forget_before(key, started);
        }
        kicked
    }

    /// Cuts the sessions of every user this instance granted a room it is no longer a member
    /// of: returns how many sessions were cut. A user's rooms are one question of the
    /// authorization cache (its logins asked the same); rooms the store cannot list are left
    /// for the next sweep.
    pub async fn sweep_grants(&self) -> usize {
        let Some(grants) = &self.grants else {
            return 0;
        };
        let mut kicked = 0;
        for (user, granted) in grants.outstanding() {
            let Ok(rooms) = self.store.rooms_for_member(&user).await else {
                continue;
            };
            let rooms: HashSet<RoomId> = rooms.into_iter().collect();
            if granted.iter().any(|room| !rooms.contains(room)) {
                kicked += self.cut_sessions(&user).await;
            }
        }
        kicked
    }

    /// One sweep over every connection, a page at a time: returns how many were cut.
    pub async fn sweep(&self) -> Result<usize, SweepError> {
        let mut verdicts: HashMap<String, bool> = HashMap::new();
        let mut kicked = 0;
        let mut offset = 0;
        let mut notified = HashSet::new();
        loop {
            let mut answers = self.ask(None, offset).await?;
            let mut more = false;
            while let Some(page) = answers.next().await {
                more |= page.more;
                let mut cut = Vec::new();
                for connection in page.connections {
                    let verdict = match verdicts.get(&connection.user) {
                        Some(verdict) => *verdict,
                        None => {
                            let verdict = self.must_cut(&connection.user).await;
                            verdicts.insert(connection.user.clone(), verdict);
                            verdict
                        }
                    };
                    if verdict {
                        if notified.insert(connection.user.clone()) {
                            if let Ok(key) = SignPublicKey::from_nkey(&connection.user) {
                                self.notify_revoked(&key).await;
                            }
                        }
                        cut.push(connection);
                    }
                }
                if !cut.is_empty() {
                    tokio::time::sleep(NOTICE_LEAD).await;
                }
                kicked += self.kick_all(&cut).await;
            }
            if !more {
                return Ok(kicked);
            }
            // Kicked connections leave the listing, so a few may be passed over: the next sweep
            // finds them.
            offset += SWEEP_PAGE;
        }
    }

    async fn must_cut(&self, nkey: &str) -> bool {
        if self.spared.iter().any(|spared| spared == nkey) {
            return false;
        }
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

    /// Tells `key`'s sessions that they are over, [`NOTICE_LEAD`] before they are
    /// disconnected.
    async fn notify_revoked(&self, key: &SignPublicKey) {
        let subject = format!(
            "{}.{}",
            unibus::subjects::events(key),
            AccountNotice::SUBJECT_SUFFIX
        );
        let published = self
            .service
            .publish(subject, AccountNotice::Revoked.to_bytes().into())
            .await;
        // Flushed, so the notice is on its way before the kick can overtake it.
        let flushed = match published {
            Ok(()) => self.service.flush().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = flushed {
            tracing::debug!(%error, user = %key, "the revocation notice could not be sent");
        }
    }

    async fn kick_all(&self, connections: &[Connection]) -> usize {
        let kicks = connections.iter().map(|connection| async move {
            let kicked = self.kick(connection).await;
            if kicked {
                tracing::info!(
                    user = %connection.user,
                    server = %connection.server_id,
                    cid = connection.cid,
                    "revoked session cut"
                );
            }
            kicked
        });
        futures::future::join_all(kicks)
            .await
            .into_iter()
            .filter(|kicked| *kicked)
            .count()
    }

    /// Asks every node for the application account's connections: all of them from `offset`
    /// (one page per node), or only `user`'s. The answers come in as the nodes send them.
    async fn ask<'a>(
        &self,
        user: Option<&'a str>,
        offset: usize,
    ) -> Result<Answers<'a>, SweepError> {
        let inbox = self.system.new_inbox();
        let replies = self
            .system
            .subscribe(inbox.clone())
            .await
            .map_err(SweepError::Subscribe)?;
        let mut filter = json!({
            "acc": self.account,
            "auth": true,
            "offset": offset,
            "limit": SWEEP_PAGE,
        });
        if let Some(user) = user {
            filter["user"] = json!(user);
        }
        self.system
            .publish_with_reply(
                "$SYS.REQ.SERVER.PING.CONNZ",
                inbox,
                filter.to_string().into(),
            )
            .await
            .map_err(SweepError::Ask)?;
        Ok(Answers {
            replies,
            deadline: tokio::time::Instant::now() + COLLECT_WINDOW,
            user,
            offset,
        })
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
