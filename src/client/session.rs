//! A logged-in session on the cluster: the control plane by request and reply
//! (docs/protocol.md §11 and §12).

use std::sync::Arc;
use std::time::Duration;

use async_nats::ConnectErrorKind;
use tokio::sync::{broadcast, watch};

use super::direct::{Grants, SendingKeys};
use super::error::{SessionEnd, SessionError};
use super::liveness::{ConnectionState, Liveness};
use super::messages::Inbox;
use super::opened::{Fingerprint, OpenedKeys};
use super::read_ahead::ReadAhead;
use super::status::{check_status, end_when_retired, StatusCheck};
use super::trust::{OwnerCheck, TrustStore};
use super::watch::{RoomUpdate, Watch};
use crate::envelope::EpochKey;
use crate::history::{HistoryShare, HISTORY_SHARE_VERSION};
use crate::manifest::{ManifestError, MemberPart, Recipient, SignedManifest, ENTRY_LEN};
use crate::protocol::control::{
    read_reply, AddMemberRequest, CreateRoomRequest, EpochReply, EpochRequest, KeyRequest,
    MemberChange, MemberRequest, MembersRequest, RekeyBeginRequest, RekeyCommitRequest,
    RekeyPartRequest, RekeyRequest, RemoveMemberRequest, ReplyBody, Request, RoomRecord,
    RoomsRequest,
};
use crate::protocol::events::AccountNotice;
use crate::protocol::messages::member_live_subject;
use crate::sealing::RoomKey;
use crate::{subjects, Identity, RoomId, SignPublicKey};

/// How a [`Session`] connects and how long it waits.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The limit for each control-plane request. A request that gets no reply in time fails
    /// with [`SessionError::Timeout`]; it never reads as a "no".
    pub request_timeout: Duration,
    /// The limit for logging in, per server address tried. Above the cluster's auth timeout
    /// (10 s in the config membershipd writes), so that a login waiting its turn in a storm is
    /// not abandoned and retried.
    pub connect_timeout: Duration,
    /// How long [`Session::connect`] keeps retrying a login the cluster refuses, with jittered
    /// backoff, before it fails with [`SessionError::LoginRefused`]. A refusal may be passing
    /// (membershipd restarting or shedding a storm of logins), so it is retried like one.
    pub login_patience: Duration,
    /// How many times [`Session::rekey`] starts over after the members or the epoch changed
    /// under it (at least 1).
    pub rekey_attempts: u32,
    /// A name for the connection, shown to operators (NATS `CONNZ`). No secret goes here.
    pub connection_name: Option<String>,
    /// What the session trusts: pinned room owners and epoch floors. Give a
    /// [`TrustStore::open`]ed file so that they survive restarts; `None` (the default) keeps
    /// them in memory for this session only, so a server can roll a room back or name another
    /// owner to the next session. It must belong to the session's identity.
    pub trust: Option<TrustStore>,
    /// Where to ask whether this identity is still a user when the cluster keeps refusing its
    /// logins (protocol §10.2); usually `Some((&registration).into())`. With it, a session that
    /// missed its account notice (it was offline when its user was revoked) ends as
    /// [`SessionEnd::Revoked`] instead of reconnecting forever, and [`Session::connect`] of a
    /// revoked or deleted identity fails with [`SessionError::Ended`] instead of
    /// [`SessionError::LoginRefused`]. `None` (the default): refusals are only retried.
    pub status_check: Option<StatusCheck>,
    /// How long after its epoch was last confirmed as the room's latest (by fetching the key,
    /// or by a send through membershipd, which refuses a stale epoch) [`Session::send`] may
    /// send with a key straight to the room's stream ([`KEY_FRESH`](super::KEY_FRESH), 1 s, by
    /// default); after that, the next send goes through membershipd. The stream cannot refuse
    /// a stale epoch (protocol §15.2), so this bounds how long after a rekey this session may
    /// still send with the epoch before it.
    pub send_key_fresh: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(12),
            login_patience: Duration::from_secs(10),
            rekey_attempts: 3,
            connection_name: None,
            trust: None,
            status_check: None,
            send_key_fresh: super::KEY_FRESH,
        }
    }
}

/// How far a long rekey has come ([`Session::rekey_with_progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RekeyProgress {
    /// `done` of the `total` members have their copy sealed.
    Sealed {
        /// Copies sealed so far.
        done: usize,
        /// Members to seal for.
        total: usize,
    },
    /// `done` of the `total` entries are uploaded (only for a manifest uploaded in parts).
    Uploaded {
        /// Entries the server holds so far.
        done: usize,
        /// Entries in the manifest.
        total: usize,
    },
}

/// A room as the control plane describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room.
    pub id: RoomId,
    /// Its owner, the only key allowed to rekey it.
    pub owner: SignPublicKey,
    /// Its latest epoch; 0 before its first key.
    pub epoch: u64,
}

/// A verified, opened room key with its epoch.
#[derive(Debug)]
pub struct OpenedRoomKey {
    /// The epoch the key belongs to.
    pub epoch: u64,
    /// The key; wiped when dropped.
    pub key: RoomKey,
}

/// A session on the cluster, logged in with the identity's own key.
///
/// Cheap to clone: clones share one connection. The connection reconnects by itself after a
/// network failure or a refused login ([`ConnectionState::Reconnecting`], with jittered
/// backoff); when membershipd says the user was revoked or deleted, the session ends
/// ([`ConnectionState::Ended`] with [`SessionEnd::Revoked`]) and every call fails with
/// [`SessionError::Ended`].
///
/// ```no_run
/// # async fn run(me: std::sync::Arc<unibus::Identity>, registration: unibus::client::Registration)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use unibus::client::{Session, SessionOptions};
/// use unibus::RoomId;
///
/// let session = Session::connect(me, &registration.nats_urls, SessionOptions::default()).await?;
/// let room = RoomId::new("general")?;
/// if session.is_member(&room).await? {
///     let opened = session.room_key(&room, None).await?;
///     println!("epoch {} key ready", opened.epoch);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Arc<Identity>,
    client: async_nats::Client,
    liveness: Arc<Liveness>,
    /// Pinned owners and epoch floors.
    trust: TrustStore,
    /// Updates the session itself raises (an owner change), for every watch.
    alerts: broadcast::Sender<RoomUpdate>,
    options: SessionOptions,
    /// The task that listens for the account's notices and proves each reconnection; stopped
    /// with the session.
    background: tokio::task::AbortHandle,
    /// The member parts this session verified and opened, by fingerprint.
    opened: OpenedKeys<Fingerprint>,
    /// The same epoch keys by room and epoch, for reading and sending messages without a
    /// request.
    epochs: OpenedKeys<(RoomId, u64)>,
    /// Per room, the latest epoch key this session sent with, and when it was confirmed.
    sending: SendingKeys,
    /// The rooms the current login may send to directly.
    grants: Grants,
    /// JetStream on `client`, for sending directly, with the request timeout.
    jetstream: async_nats::jetstream::Context,
    /// The history pages being read ahead of the requests for them.
    read_ahead: ReadAhead,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.background.abort();
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sign_public_key", &self.inner.identity.sign_public_key())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Logs in to the cluster at `nats_urls` (from [`Registration`](super::Registration)) with
    /// `identity`'s signing key, as protocol §11 says: the key signs the server's nonce, and
    /// the secret never leaves the identity.
    ///
    /// A refused or unanswered login is retried with jittered backoff for
    /// [`SessionOptions::login_patience`] (the cluster also refuses while membershipd restarts
    /// or sheds a storm). Fails with [`SessionError::LoginRefused`] if the cluster kept refusing
    /// the key that long (it is not an active user, or membershipd stayed unavailable),
    /// [`SessionError::Connect`] if no address answers, and
    /// [`SessionError::Trust`] ([`TrustError::WrongIdentity`](super::TrustError::WrongIdentity))
    /// if [`SessionOptions::trust`] belongs to another identity.
    pub async fn connect(
        identity: Arc<Identity>,
        nats_urls: &[impl AsRef<str>],
        options: SessionOptions,
    ) -> Result<Session, SessionError> {
        let own_key = identity.sign_public_key();
        let trust = match &options.trust {
            Some(trust) if trust.identity() != own_key => {
                return Err(super::TrustError::WrongIdentity {
                    path: trust.path().unwrap_or_default(),
                    expected: own_key,
                    found: trust.identity(),
                }
                .into())
            }
            Some(trust) => trust.clone(),
            None => TrustStore::in_memory(&own_key),
        };
        let addresses = nats_urls
            .iter()
            .map(|url| {
                url.as_ref()
                    .parse::<async_nats::ServerAddr>()
                    .map_err(|e| SessionError::Connect(e.into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if addresses.is_empty() {
            return Err(SessionError::Connect("no cluster address given".into()));
        }
        let own_hex = identity.sign_public_key().to_hex();
        let liveness = Liveness::new();
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        let client = loop {
            attempt += 1;
            let refusal = match Self::connect_options(&identity, &liveness, &options)
                .connect(addresses.clone())
                .await
            {
                Ok(client) => break client,
                Err(e) => match e.kind() {
                    ConnectErrorKind::AuthorizationViolation => SessionError::LoginRefused,
                    // A login membershipd did not answer in time times out the same way.
                    ConnectErrorKind::TimedOut => SessionError::Connect(e.into()),
                    _ => return Err(SessionError::Connect(e.into())),
                },
            };
            let wait = super::liveness::backoff(attempt);
            if started.elapsed() + wait > options.login_patience {
                return Err(Self::why_refused(&identity, &options, refusal).await);
            }
            tracing::debug!(attempt, ?wait, "login refused or unanswered; retrying");
            tokio::time::sleep(wait).await;
        };
        let background = {
            let (client, key, liveness) = (client.clone(), own_key, Arc::clone(&liveness));
            let within = options.connect_timeout;
            let (identity, check) = (Arc::clone(&identity), options.status_check.clone());
            tokio::spawn(async move {
                tokio::join!(
                    listen_for_notices(client.clone(), key, Arc::clone(&liveness)),
                    liveness.confirm_connections(&client, within),
                    async {
                        if let Some(check) = check {
                            let ask = || check_status(&identity, &check);
                            end_when_retired(&liveness, check.after_refusals_for, ask).await;
                        }
                    },
                );
            })
            .abort_handle()
        };
        // async-nats may report a login connected before nats-server has decided it (see
        // `liveness`): the session is returned once the round trip proves it was admitted. A
        // login refused meanwhile is retried by the client itself, with the jittered backoff.
        let patience = options
            .login_patience
            .saturating_sub(started.elapsed())
            .max(options.connect_timeout);
        let mut state = liveness.subscribe();
        let admitted = matches!(
            tokio::time::timeout(
                patience,
                state.wait_for(|state| *state == ConnectionState::Connected),
            )
            .await,
            Ok(Ok(_))
        );
        if !admitted {
            background.abort();
            // The client's own reconnection attempts now fail at once inside the SDK.
            liveness.end(SessionEnd::Closed);
            let refusal = SessionError::LoginRefused;
            return Err(Self::why_refused(&identity, &options, refusal).await);
        }
        tracing::debug!(key = %own_hex, "logged in to the cluster");
        let mut jetstream = async_nats::jetstream::new(client.clone());
        jetstream.set_timeout(options.request_timeout);
        Ok(Session {
            inner: Arc::new(Inner {
                identity,
                client,
                liveness,
                trust,
                alerts: broadcast::channel(16).0,
                options,
                background,
                opened: OpenedKeys::default(),
                epochs: OpenedKeys::default(),
                sending: SendingKeys::default(),
                grants: Grants::default(),
                jetstream,
                read_ahead: ReadAhead::default(),
            }),
        })
    }

    /// `refusal`, or, for [`SessionError::LoginRefused`], [`SessionError::Ended`] with
    /// [`SessionEnd::Revoked`] when the options' [`StatusCheck`] answers that the identity is
    /// revoked or deleted. (A login that timed out says nothing about the key.)
    async fn why_refused(
        identity: &Identity,
        options: &SessionOptions,
        refusal: SessionError,
    ) -> SessionError {
        let (SessionError::LoginRefused, Some(check)) = (&refusal, &options.status_check) else {
            return refusal;
        };
        match check_status(identity, check).await {
            Ok(status) if status.is_retired() => {
                tracing::info!(%status, "the login was refused: membershipd says this identity is {status}");
                SessionError::Ended(SessionEnd::Revoked)
            }
            Ok(_) => refusal,
            Err(error) => {
                tracing::debug!(%error, "could not ask why the login was refused");
                refusal
            }
        }
    }

    /// The NATS options of one login attempt: the key signs the nonce (unless the session has
    /// ended), and the session's liveness hears every event and sets every reconnect's wait.
    fn connect_options(
        identity: &Arc<Identity>,
        liveness: &Arc<Liveness>,
        options: &SessionOptions,
    ) -> async_nats::ConnectOptions {
        let signer = Arc::clone(identity);
        let signer_liveness = Arc::clone(liveness);
        let mut connect = async_nats::ConnectOptions::with_auth_callback(move |nonce: Vec<u8>| {
            let signer = Arc::clone(&signer);
            let ended = signer_liveness.has_ended();
            async move {
                if ended {
                    return Err(async_nats::AuthError::new("the session has ended"));
                }
                let mut auth = async_nats::Auth::new();
                auth.nkey = Some(signer.nkey_public());
                auth.signature = Some(signer.sign(&nonce).to_bytes().to_vec());
                Ok(auth)
            }
        })
        .custom_inbox_prefix(subjects::inbox_prefix(&identity.sign_public_key()))
        .connection_timeout(options.connect_timeout)
        .request_timeout(Some(options.request_timeout))
        .reconnect_delay_callback({
            let liveness = Arc::clone(liveness);
            move |attempts| liveness.reconnect_delay(attempts)
        })
        .event_callback({
            let liveness = Arc::clone(liveness);
            move |event| {
                liveness.on_event(&event);
                std::future::ready(())
            }
        });
        if let Some(name) = &options.connection_name {
            connect = connect.name(name);
        }
        connect
    }

    /// The identity this session is logged in as.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.inner.identity
    }

    /// What this session trusts: pinned room owners, their verification and epoch floors.
    /// Changes made through it (for example [`TrustStore::accept_owner`]) apply to the
    /// session's next calls.
    pub fn trust(&self) -> &TrustStore {
        &self.inner.trust
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.inner.liveness.state()
    }

    /// A receiver that sees every change of [`state`](Self::state).
    pub fn state_changes(&self) -> watch::Receiver<ConnectionState> {
        self.inner.liveness.subscribe()
    }

    /// The rooms this identity is a member of, sorted by id, fetched page by page (one
    /// message each). Each room's owner is checked against its pin
    /// ([`SessionError::OwnerChanged`]) and its epoch against its floor
    /// ([`SessionError::EpochRollback`]); one room that fails fails the call.
    pub async fn my_rooms(&self) -> Result<Vec<RoomInfo>, SessionError> {
        let mut rooms = Vec::new();
        let mut after: Option<RoomId> = None;
        loop {
            let request = RoomsRequest {
                after: after.clone(),
                limit: None,
            };
            let reply = self.call(&request).await?;
            let ids = reply.rooms.iter().map(|r| &r.id);
            check_page(after.as_ref(), ids, reply.next.as_ref(), rooms.len())?;
            for record in reply.rooms {
                rooms.push(self.room_info(record)?);
            }
            match reply.next {
                Some(next) => after = Some(next),
                None => return Ok(rooms),
            }
        }
    }

    /// Whether this identity is a member of `room`. `false` also for a room that does not
    /// exist; any failure to find out is an error, never `false`.
    pub async fn is_member(&self, room: &RoomId) -> Result<bool, SessionError> {
        let reply = self.call(&MemberRequest { room: room.clone() }).await?;
        Ok(reply.member)
    }

    /// The room's latest epoch (0 before its first key). Members only. An epoch below the
    /// room's floor (the highest epoch this client verified) fails with
    /// [`SessionError::EpochRollback`].
    pub async fn current_epoch(&self, room: &RoomId) -> Result<u64, SessionError> {
        let reply = self.call(&EpochRequest { room: room.clone() }).await?;
        self.check_latest(room, reply.epoch)?;
        Ok(reply.epoch)
    }

    /// Fetches this identity's member part of `epoch` (the latest if `None`): the epoch's
    /// signed header, this identity's entry with its sealed copy, and the entry's inclusion
    /// proof, a few hundred bytes in a room of any size. Runs every check of protocol §8.5 with
    /// the room's pinned owner as the trusted rekeyer, and opens the copy.
    ///
    /// The rekeyer the part names must be the pinned owner ([`SessionError::OwnerChanged`]; the
    /// first reply pins it). For the latest key, the epoch must not be below the room's floor
    /// ([`SessionError::EpochRollback`]); an explicit older `epoch` is history and is served.
    /// Once verified, the epoch raises the floor, saved in the [`TrustStore`].
    pub async fn room_key(
        &self,
        room: &RoomId,
        epoch: Option<u64>,
    ) -> Result<OpenedRoomKey, SessionError> {
        let opened = self.epoch_key(room, epoch).await?;
        Ok(OpenedRoomKey {
            epoch: opened.epoch(),
            key: opened.room_key().clone(),
        })
    }

    /// [`room_key`](Self::room_key), keeping the whole verified member part as an
    /// [`EpochKey`]: what sealing and opening messages of that epoch need.
    pub(crate) async fn epoch_key(
        &self,
        room: &RoomId,
        epoch: Option<u64>,
    ) -> Result<EpochKey, SessionError> {
        let request = KeyRequest {
            room: room.clone(),
            epoch,
        };
        let reply = self.call(&request).await?;
        // For an earlier epoch this identity was not a recipient of, the owner may have shared
        // it (protocol §12.4): a history share, told apart by its first byte.
        if reply.part.first() == Some(&HISTORY_SHARE_VERSION) {
            return self.shared_epoch_key(room, epoch, &reply.part);
        }
        let part = MemberPart::from_bytes(&reply.part)?;
        // The header is unverified until `open` below; what is read from it first is only
        // compared with what this client asked for and what it pinned.
        let header = part.unverified_header();
        let (offered, rekeyer) = (header.epoch, header.rekeyer);
        if epoch.is_some_and(|asked| asked != offered) {
            return Err(SessionError::InvalidReply(format!(
                "asked for epoch {}, got {offered}",
                epoch.unwrap_or_default(),
            )));
        }
        // Only the room's owner rekeys, so the part's rekeyer must be the pinned owner.
        self.check_owner(room, rekeyer)?;
        if epoch.is_none() {
            self.check_latest(room, offered)?;
        }
        self.keep_opened(room, offered, rekeyer, &reply.part, || {
            Ok(EpochKey::open(
                &part,
                &self.inner.identity,
                room,
                offered,
                &rekeyer,
            )?)
        })
    }

    /// The epoch key opened from a history share the server sent for `room` at `asked`
    /// (protocol §16.3), with the room's pinned owner as the only key it may be signed by. A
    /// share is an answer only to an explicit epoch.
    fn shared_epoch_key(
        &self,
        room: &RoomId,
        asked: Option<u64>,
        bytes: &[u8],
    ) -> Result<EpochKey, SessionError> {
        let Some(epoch) = asked else {
            return Err(SessionError::InvalidReply(
                "a history share as the latest key".into(),
            ));
        };
        let share = HistoryShare::from_bytes(bytes)?;
        // Unverified until `from_share` below: only compared with the pin first.
        let rekeyer = share.unverified_head().unverified_header().rekeyer;
        self.check_owner(room, rekeyer)?;
        self.keep_opened(room, epoch, rekeyer, bytes, || {
            Ok(EpochKey::from_share(
                &share,
                &self.inner.identity,
                room,
                epoch,
                &rekeyer,
            )?)
        })
    }

    /// The key of `room` at `epoch` by `rekeyer` that `open` verifies and opens from `bytes`
    /// (a member part or a history share), unless the same bytes for the same room, epoch and
    /// rekeyer were opened before (see `opened`); then the room's floor rises to `epoch` and the
    /// key is kept for the epoch's messages.
    fn keep_opened(
        &self,
        room: &RoomId,
        epoch: u64,
        rekeyer: SignPublicKey,
        bytes: &[u8],
        open: impl FnOnce() -> Result<EpochKey, SessionError>,
    ) -> Result<EpochKey, SessionError> {
        let fingerprint = Fingerprint::of(room, epoch, &rekeyer, bytes);
        let key = match self.inner.opened.get(&fingerprint) {
            Some(key) => key,
            None => {
                let key = open()?;
                self.inner.opened.keep(fingerprint, key.clone());
                key
            }
        };
        self.inner.trust.record_verified(room, &rekeyer, epoch)?;
        self.inner.epochs.keep((room.clone(), epoch), key.clone());
        Ok(key)
    }

    /// The epoch key of `room` at `epoch` this session verified before, if it is still kept
    /// and its rekeyer is still the room's pinned owner.
    pub(crate) fn kept_epoch_key(&self, room: &RoomId, epoch: u64) -> Option<EpochKey> {
        let key = self.inner.epochs.get(&(room.clone(), epoch))?;
        let pinned = self.inner.trust.room(room)?.owner;
        (key.header().rekeyer == pinned).then_some(key)
    }

    /// Creates `room` with this identity as its owner and first member, at epoch 0 (no key
    /// yet: call [`rekey`](Self::rekey)).
    pub async fn create_room(&self, room: &RoomId) -> Result<RoomInfo, SessionError> {
        let reply = self.call(&CreateRoomRequest { room: room.clone() }).await?;
        self.room_info(reply)
    }

    /// The room's active members with their registered keys, the owner included, sorted by
    /// signing key, fetched page by page (one message each). Owner only.
    pub async fn members(&self, room: &RoomId) -> Result<Vec<Recipient>, SessionError> {
        let mut members = Vec::new();
        let mut after = None;
        loop {
            let request = MembersRequest {
                room: room.clone(),
                after,
                limit: None,
            };
            let reply = self.call(&request).await?;
            let keys = reply.members.iter().map(|m| &m.sign_public_key);
            check_page(after.as_ref(), keys, reply.next.as_ref(), members.len())?;
            members.extend(reply.members.into_iter().map(|m| Recipient {
                member: m.sign_public_key,
                kex: m.kex_public_key,
            }));
            match reply.next {
                Some(next) => after = Some(next),
                None => return Ok(members),
            }
        }
    }

    /// Adds the active user `member` to `room`. Owner only; adding a member twice is not an
    /// error. The member gets no key until the next [`rekey`](Self::rekey).
    pub async fn add_member(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
    ) -> Result<(), SessionError> {
        let change = MemberChange {
            room: room.clone(),
            member: *member,
        };
        self.call(&AddMemberRequest(change)).await?;
        // Under HistoryPolicy::Shared, the next rekey shares the room's history with it.
        self.inner.trust.add_pending_history(room, member)?;
        Ok(())
    }

    /// Removes `member` from `room`. Owner only, and not the owner itself. The member can no
    /// longer fetch any key of the room; [`rekey`](Self::rekey) next so it cannot read what
    /// follows either.
    pub async fn remove_member(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
    ) -> Result<(), SessionError> {
        let change = MemberChange {
            room: room.clone(),
            member: *member,
        };
        self.call(&RemoveMemberRequest(change)).await?;
        Ok(())
    }

    /// Rekeys `room` on this device (protocol §12.5): fetches the active members and the
    /// epoch `e`, generates a fresh key, seals it to every member, signs the manifest and
    /// uploads it as epoch `e + 1`. Owner only. Returns the new epoch and its key.
    ///
    /// If the members or the epoch change meanwhile, it starts over, up to
    /// [`SessionOptions::rekey_attempts`] times. Sealing runs on every core from tokio's
    /// blocking pool (about 0.07 ms per member and core); a manifest too large for one message
    /// is uploaded in parts. For progress reports and cancellation, see
    /// [`rekey_with_progress`](Self::rekey_with_progress).
    pub async fn rekey(&self, room: &RoomId) -> Result<OpenedRoomKey, SessionError> {
        self.rekey_with_progress(room, Arc::new(|_| true)).await
    }

    /// [`rekey`](Self::rekey), reporting its progress to `progress`: sealed copies every
    /// [`PROGRESS_STEP`](crate::manifest::PROGRESS_STEP) members (from the sealing threads, so
    /// it must be quick), then uploaded entries after each part. When `progress` returns
    /// `false`, the rekey stops ([`SessionError::Cancelled`]): sealing stops on every core, an
    /// upload in parts is abandoned (the server drops it; nothing was stored), and the room
    /// keeps its epoch. A report may come after the decision to stop, from another core.
    pub async fn rekey_with_progress(
        &self,
        room: &RoomId,
        progress: Arc<dyn Fn(RekeyProgress) -> bool + Send + Sync>,
    ) -> Result<OpenedRoomKey, SessionError> {
        let attempts = self.inner.options.rekey_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.rekey_once(room, &progress).await {
                Err(SessionError::EpochConflict | SessionError::RecipientsMismatch)
                    if attempt < attempts =>
                {
                    tracing::debug!(room = %room, attempt, "the room changed during a rekey; starting over");
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Listens for changes that concern this identity: added to or removed from a room, a new
    /// epoch, and the connection dropping and coming back. See [`Watch`].
    pub async fn watch(&self) -> Result<Watch, SessionError> {
        self.spawn_watch(None).await
    }

    /// [`watch`](Self::watch), with the messages of this identity's rooms merged in as
    /// [`RoomUpdate::Message`]: first every room's messages after the last one delivered (kept
    /// in the [`TrustStore`]), then each new one as it is stored, in position order per room,
    /// each once. After a reconnection it catches up again. See docs/client.md, "Messages".
    pub async fn watch_with_messages(&self) -> Result<Watch, SessionError> {
        self.spawn_watch(Some(Inbox::new(self.clone()))).await
    }

    async fn spawn_watch(&self, inbox: Option<Inbox>) -> Result<Watch, SessionError> {
        self.ensure_open()?;
        let subject = subjects::events(&self.inner.identity.sign_public_key()) + ".>";
        let subscriber = self
            .inner
            .client
            .subscribe(subject)
            .await
            .map_err(|e| SessionError::Transport(e.into()))?;
        Ok(Watch::spawn(
            subscriber,
            self.inner.liveness.subscribe(),
            self.inner.alerts.subscribe(),
            member_live_subject(&self.inner.identity.sign_public_key()),
            inbox.map(|inbox| (inbox, self.inner.trust.clone())),
        ))
    }

    /// Ends the session: pending requests are flushed, every watch closes with
    /// [`SessionEnd::Closed`], and later calls fail with [`SessionError::Ended`].
    pub async fn close(&self) {
        if self.inner.liveness.end(SessionEnd::Closed) {
            let drain = self.inner.client.drain();
            let _ = tokio::time::timeout(self.inner.options.request_timeout, drain).await;
        }
    }

    async fn rekey_once(
        &self,
        room: &RoomId,
        progress: &Arc<dyn Fn(RekeyProgress) -> bool + Send + Sync>,
    ) -> Result<OpenedRoomKey, SessionError> {
        let (recipients, previous) = tokio::join!(self.members(room), self.current_epoch(room));
        let (recipients, previous) = (recipients?, previous?);
        let epoch = previous
            .checked_add(1)
            .ok_or_else(|| SessionError::InvalidReply("the epoch cannot grow".into()))?;
        let identity = Arc::clone(&self.inner.identity);
        let room_id = room.clone();
        let sealing = Arc::clone(progress);
        let (manifest, key) = tokio::task::spawn_blocking(move || {
            let key = RoomKey::generate()?;
            let total = recipients.len();
            let observe = |done| sealing(RekeyProgress::Sealed { done, total });
            let manifest = SignedManifest::rekey_observed(
                &identity,
                &room_id,
                epoch,
                previous,
                &key,
                &recipients,
                &observe,
            )
            .map_err(|e| match e {
                ManifestError::Cancelled => SessionError::Cancelled,
                other => other.into(),
            })?;
            Ok::<_, SessionError>((manifest, key))
        })
        .await
        .map_err(|e| SessionError::Internal(format!("the sealing task failed: {e}")))??;
        let reply = self.upload(&manifest, progress.as_ref()).await?;
        if reply.epoch != epoch {
            return Err(SessionError::InvalidReply(format!(
                "uploaded epoch {epoch}, the server says {}",
                reply.epoch
            )));
        }
        // Our own signed manifest is stored: the room is at this epoch at least.
        self.inner
            .trust
            .record_verified(room, &self.inner.identity.sign_public_key(), epoch)?;
        self.share_pending_history(room, previous, &manifest).await;
        Ok(OpenedRoomKey { epoch, key })
    }

    /// Uploads a signed manifest (protocol §12.5): in one `rekey` message when it fits in the
    /// cluster's message limit, else as a chunked upload: `rekey_begin` with the signed head,
    /// `rekey_part` with as many whole entries as fit in each message, then `rekey_commit`.
    async fn upload(
        &self,
        manifest: &SignedManifest,
        progress: &(dyn Fn(RekeyProgress) -> bool + Send + Sync),
    ) -> Result<EpochReply, SessionError> {
        let wire = manifest.to_bytes();
        // What a JSON body may carry beside its hex, within `call`'s own headroom.
        let room_for_hex = self.request_limit().saturating_sub(256);
        if wire.len() * 2 <= room_for_hex {
            let request = RekeyRequest {
                manifest: crate::hex::encode(&wire),
            };
            return self.call(&request).await;
        }
        let head = manifest.head().to_bytes();
        let begun = self
            .call(&RekeyBeginRequest {
                head: crate::hex::encode(&head),
            })
            .await?;
        if !begun.instance_is_valid() {
            return Err(SessionError::InvalidReply(
                "rekey_begin named an instance that is not a subject token".into(),
            ));
        }
        let per_part = (room_for_hex / (2 * ENTRY_LEN)).max(1);
        // The wire form is the head followed by the entries.
        let entries = wire.strip_prefix(head.as_slice()).ok_or_else(|| {
            SessionError::Internal("a manifest's wire form does not start with its head".into())
        })?;
        for (n, chunk) in entries.chunks(per_part * ENTRY_LEN).enumerate() {
            let first = n * per_part;
            let request = RekeyPartRequest {
                upload: begun.upload.clone(),
                instance: begun.instance.clone(),
                // At most MAX_ENTRIES (2^20) entries: the index fits.
                first: first as u32,
                entries: crate::hex::encode(chunk),
            };
            let reply = self.call(&request).await?;
            let expected = first + chunk.len() / ENTRY_LEN;
            if reply.received as usize != expected {
                return Err(SessionError::InvalidReply(format!(
                    "the upload holds {} entries after sending {expected}",
                    reply.received
                )));
            }
            let total = entries.len() / ENTRY_LEN;
            if !progress(RekeyProgress::Uploaded {
                done: expected,
                total,
            }) {
                // The server drops the upload once it is idle; nothing of it was stored.
                return Err(SessionError::Cancelled);
            }
        }
        self.call(&RekeyCommitRequest {
            upload: begun.upload,
            instance: begun.instance,
        })
        .await
    }

    /// The largest request body the cluster takes in one message, with room for the subjects.
    pub(super) fn request_limit(&self) -> usize {
        self.inner
            .client
            .server_info()
            .max_payload
            .saturating_sub(512)
    }

    fn ensure_open(&self) -> Result<(), SessionError> {
        match self.state() {
            ConnectionState::Ended(end) => Err(SessionError::Ended(end)),
            _ => Ok(()),
        }
    }

    /// One control-plane request, within the request timeout: `request` to its operation's
    /// subject, and its reply or the refusal it carries.
    pub(super) async fn call<R: Request>(&self, request: &R) -> Result<R::Reply, SessionError> {
        // The protocol's request types hold strings and numbers: they always serialize.
        let payload = serde_json::to_vec(request).expect("request bodies serialize to JSON");
        let subject = request.subject(&self.inner.identity.sign_public_key());
        self.exchange(subject, payload).await
    }

    /// One request of `payload` to `subject`, within the request timeout, and its reply of
    /// type `T` or the refusal it carries.
    pub(super) async fn exchange<T: ReplyBody>(
        &self,
        subject: String,
        payload: Vec<u8>,
    ) -> Result<T, SessionError> {
        self.ensure_open()?;
        let limit = self.request_limit();
        if payload.len() > limit {
            return Err(SessionError::RequestTooLarge {
                bytes: payload.len(),
                limit,
            });
        }
        let timeout = self.inner.options.request_timeout;
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(timeout));
        let reply = self
            .inner
            .client
            .send_request(subject, request)
            .await
            .map_err(|e| {
                // A request that failed because the session ended says so.
                if let ConnectionState::Ended(end) = self.state() {
                    return SessionError::Ended(end);
                }
                match e.kind() {
                    async_nats::RequestErrorKind::TimedOut => SessionError::Timeout(timeout),
                    async_nats::RequestErrorKind::NoResponders => SessionError::NoResponders,
                    _ => SessionError::Transport(e.into()),
                }
            })?;
        match read_reply::<T>(&reply.payload) {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(refusal)) => {
                let error = SessionError::from_refusal(refusal);
                // membershipd itself says this identity is no longer an active user.
                if matches!(error, SessionError::NotAuthorized) {
                    self.inner.liveness.end(SessionEnd::Revoked);
                }
                Err(error)
            }
            Err(e) => Err(SessionError::InvalidReply(e.to_string())),
        }
    }

    /// Per room, the latest epoch key this session sent with, and when it was confirmed.
    pub(super) fn sending_keys(&self) -> &SendingKeys {
        &self.inner.sending
    }

    /// The rooms the current login may send to directly.
    pub(super) fn grants(&self) -> &Grants {
        &self.inner.grants
    }

    /// The NATS connection.
    pub(super) fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// JetStream on the NATS connection, waiting the request timeout for acknowledgements.
    pub(super) fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.inner.jetstream
    }

    /// How long a request waits for its answer.
    pub(super) fn request_timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// How long a sending key is used before it is confirmed again.
    pub(super) fn send_key_fresh(&self) -> Duration {
        self.inner.options.send_key_fresh
    }

    /// Which connection the NATS client is on, counted by the session's liveness: it moves
    /// with every connection made and lost.
    pub(super) fn connection(&self) -> u64 {
        self.inner.liveness.connection()
    }

    /// The history pages being read ahead.
    pub(super) fn read_ahead(&self) -> &ReadAhead {
        &self.inner.read_ahead
    }

    fn room_info(&self, reply: RoomRecord) -> Result<RoomInfo, SessionError> {
        self.check_owner(&reply.id, reply.owner)?;
        self.check_latest(&reply.id, reply.epoch)?;
        Ok(RoomInfo {
            id: reply.id,
            owner: reply.owner,
            epoch: reply.epoch,
        })
    }

    /// Pins `owner` for `room` the first time (saved in the trust store), and refuses a
    /// different one later (protocol §12.4: no operation changes a room's owner), telling the
    /// session's watches.
    fn check_owner(&self, room: &RoomId, owner: SignPublicKey) -> Result<(), SessionError> {
        match self.inner.trust.check_owner(room, &owner)? {
            OwnerCheck::Trusted => Ok(()),
            OwnerCheck::Changed { pinned, verified } => {
                tracing::warn!(room = %room, pinned = %pinned, found = %owner, "a reply named another owner than the pinned one; refused");
                // No watch listening is not an error.
                let _ = self.inner.alerts.send(RoomUpdate::OwnerChanged {
                    room: room.clone(),
                    pinned,
                    found: owner,
                    verified,
                });
                Err(SessionError::OwnerChanged {
                    room: room.clone(),
                    pinned,
                    found: owner,
                    verified,
                })
            }
        }
    }

    /// Refuses `epoch` as the room's latest if it is below the room's floor.
    fn check_latest(&self, room: &RoomId, epoch: u64) -> Result<(), SessionError> {
        let floor = self.inner.trust.epoch_floor(room);
        if epoch < floor {
            tracing::warn!(room = %room, offered = epoch, floor, "a reply offered an epoch below the floor as the latest; refused");
            return Err(SessionError::EpochRollback {
                room: room.clone(),
                offered: epoch,
                floor,
            });
        }
        Ok(())
    }
}

/// The most items a paged listing may hold in all: a server that keeps sending pages past it
/// is not believed.
const MAX_LISTED: usize = crate::manifest::MAX_ENTRIES;

/// Checks one page of a listing sorted by key (§12.2): every key after `after` and ascending,
/// `next` (when set) the page's last key, and no more than [`MAX_LISTED`] items so far. A server
/// that breaks this could make the client loop or grow without end.
fn check_page<'k, K: Ord + 'k>(
    after: Option<&K>,
    keys: impl Iterator<Item = &'k K>,
    next: Option<&K>,
    listed: usize,
) -> Result<(), SessionError> {
    let mut previous = after;
    let mut count = 0;
    for key in keys {
        if previous.is_some_and(|p| key <= p) {
            return Err(SessionError::InvalidReply(
                "a listing page is not in ascending key order after its cursor".into(),
            ));
        }
        previous = Some(key);
        count += 1;
    }
    if next.is_some() && (count == 0 || next != previous) {
        return Err(SessionError::InvalidReply(
            "a listing page's next cursor is not its last key".into(),
        ));
    }
    if listed.saturating_add(count) > MAX_LISTED {
        return Err(SessionError::InvalidReply(format!(
            "a listing of more than {MAX_LISTED} items"
        )));
    }
    Ok(())
}

/// Ends the session as [`SessionEnd::Revoked`] when membershipd's account notice says so
/// (protocol §12.6). Only membershipd may publish to a user's notice subject.
async fn listen_for_notices(
    client: async_nats::Client,
    key: SignPublicKey,
    liveness: Arc<Liveness>,
) {
    use futures_util::StreamExt;
    let subject = format!(
        "{}.{}",
        subjects::events(&key),
        AccountNotice::SUBJECT_SUFFIX
    );
    let mut notices = match client.subscribe(subject).await {
        Ok(notices) => notices,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for account notices");
            return;
        }
    };
    while let Some(message) = notices.next().await {
        match serde_json::from_slice::<AccountNotice>(&message.payload) {
            Ok(AccountNotice::Revoked) => {
                liveness.end(SessionEnd::Revoked);
                return;
            }
            Ok(AccountNotice::Unknown) | Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_page_must_move_forward_and_name_its_last_key_as_next() {
        let keys = [2, 3, 5];
        assert!(check_page(Some(&1), keys.iter(), Some(&5), 0).is_ok());
        assert!(check_page(None, keys.iter(), None, 0).is_ok());
        assert!(check_page::<u8>(None, [].iter(), None, 0).is_ok());
        // Not after the cursor, not ascending, a cursor that is not the last key, an empty page
        // that claims more: each could make the client loop.
        assert!(check_page(Some(&2), keys.iter(), None, 0).is_err());
        assert!(check_page(None, [3, 2].iter(), None, 0).is_err());
        assert!(check_page(None, keys.iter(), Some(&3), 0).is_err());
        assert!(check_page::<u8>(Some(&1), [].iter(), Some(&1), 0).is_err());
        assert!(check_page(None, keys.iter(), None, MAX_LISTED - 2).is_err());
    }
}
