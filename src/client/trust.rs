//! What the client trusts across restarts: per room, the pinned owner and the highest epoch it
//! has verified (docs/client.md, "Trust across restarts").
//!
//! A server could otherwise answer "latest key" with an older, validly signed epoch (one that a
//! removed member still knows), or name a different owner to the next session and serve a
//! manifest signed by that key. A [`TrustStore`] remembers, for one identity:
//!
//! - the owner of each room, pinned the first time a reply names it (trust on first use) and
//!   refused when a later reply names another ([`SessionError::OwnerChanged`]);
//! - whether the app marked that owner verified, after comparing its [`OwnerFingerprint`] out
//!   of band;
//! - the epoch floor: the highest epoch of the room whose manifest this client verified. A
//!   "latest" epoch below it is refused ([`SessionError::EpochRollback`]);
//! - the message cursor: the position of the last message of the room the app handled, and
//!   the senders and ids of the most recent ones, so that a watch with messages resumes after a
//!   restart with no gap and reports a copy delivered again elsewhere as a replay;
//! - for the rooms this identity owns, their history policy ([`HistoryPolicy`]) and the members
//!   added under [`HistoryPolicy::Shared`] whose shares of earlier epochs are still to be sent.
//!
//! [`TrustStore::open`] keeps this in a JSON file, rewritten atomically on every change. Each
//! change is made to the file as it is then, read again under an exclusive lock on
//! `<file>.lock`, so that several processes (or stores) on one file never lose each other's
//! pins or lower each other's floors. [`TrustStore::in_memory`] keeps it for the process's
//! life only.
//!
//! [`SessionError::OwnerChanged`]: super::SessionError::OwnerChanged
//! [`SessionError::EpochRollback`]: super::SessionError::EpochRollback

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

use super::messages::{Cursor, Delivery};
use crate::{RoomId, SignPublicKey};

/// The `format` field of a trust file.
pub const TRUST_FILE_FORMAT: &str = "unibus-trust";
/// The highest `version` of the trust files this version writes and reads: it writes 4 for a
/// file that keeps message cursors (their remembered messages packed, docs/client.md), 3 for
/// one that keeps a history policy and no cursors, 1 for one that keeps neither (what earlier
/// versions wrote, and read); it reads 2 (cursors listed, no policy) too.
pub const TRUST_FILE_VERSION: u64 = 4;
/// The domain-separation label of the safety number (docs/client.md).
pub const SAFETY_NUMBER_LABEL: &str = "unibus/owner-safety-number/v1";
/// The prefix of an owner's QR-friendly code: `unibus-owner:v1:<room>:<owner hex>`.
pub const OWNER_CODE_PREFIX: &str = "unibus-owner:v1:";

/// Why the trust store could not be opened, read, written or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The file could not be read or written; what the OS said is the
    /// [`source`](std::error::Error::source).
    #[error("cannot read or write the trust file {path}: check the path and its permissions")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a trust file this version can read. It was left as it is.
    #[error("the trust file {path} is unreadable ({reason}); it was left untouched: restore it from a backup, or move it away deliberately, which forgets every pinned owner and epoch floor")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file was written by a newer version of the SDK.
    #[error("the trust file {path} has version {version}, but this SDK reads version {supported}: update the app")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The file's version.
        version: u64,
        /// The version this SDK reads.
        supported: u64,
    },
    /// The file belongs to another identity. Every identity needs its own trust file.
    #[error("the trust file {path} belongs to identity {found}, not {expected}: give each identity its own trust file")]
    WrongIdentity {
        /// The file.
        path: PathBuf,
        /// The identity that opened it.
        expected: SignPublicKey,
        /// The identity recorded in it.
        found: SignPublicKey,
    },
    /// [`TrustStore::mark_owner_verified`] was given another owner than the pinned one.
    #[error("room {room} is pinned to owner {pinned}, not {given}: if the owner really changed, verify the new one out of band and call accept_owner")]
    OwnerMismatch {
        /// The room.
        room: RoomId,
        /// The owner pinned for it.
        pinned: SignPublicKey,
        /// The owner the app gave.
        given: SignPublicKey,
    },
    /// Text that is not an owner code (`unibus-owner:v1:<room>:<owner hex>`).
    #[error("not an owner code ({0}): expected unibus-owner:v1:<room>:<64 hex characters>")]
    BadOwnerCode(String),
}

/// What the store holds for one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTrust {
    /// The room.
    pub room: RoomId,
    /// The pinned owner: the only key this client accepts as the room's rekeyer.
    pub owner: SignPublicKey,
    /// Whether the app marked the owner verified (compared out of band).
    pub verified: bool,
    /// The highest epoch of the room whose manifest this client verified; 0 before any. A
    /// "latest" epoch below it is refused.
    pub epoch_floor: u64,
}

/// Whether the members a room's owner adds read the room's earlier epochs (docs/client.md,
/// "History policy"). It is the owner's choice and lives on the owner's device: the server is
/// never trusted to say whom to share with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryPolicy {
    /// New members read from the first epoch sealed to them (the default).
    #[default]
    Joined,
    /// The owner's device shares every earlier epoch's key with each member it adds, at its
    /// next rekey of the room (protocol §16).
    Shared,
}

/// What the store keeps of a room with [`HistoryPolicy::Shared`]: the members added since,
/// whose history is still to be shared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct History {
    policy: HistoryPolicy,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pending: BTreeSet<SignPublicKey>,
}

/// How a room owner is shown to people for an out-of-band comparison: a safety number to read
/// aloud and a code to put in a QR code. Both bind the room and the owner's key; the exact
/// derivation is in docs/client.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerFingerprint {
    /// The room.
    pub room: RoomId,
    /// The owner's signing key.
    pub owner: SignPublicKey,
    /// 12 groups of 5 digits separated by single spaces, e.g. `"04721 93310 …"`.
    pub safety_number: String,
    /// `unibus-owner:v1:<room>:<owner hex>`, for a QR code.
    pub qr_code: String,
}

impl OwnerFingerprint {
    /// The fingerprint of `owner` as the owner of `room`.
    pub fn new(room: &RoomId, owner: &SignPublicKey) -> Self {
        Self {
            room: room.clone(),
            owner: *owner,
            safety_number: safety_number(room, owner),
            qr_code: format!("{OWNER_CODE_PREFIX}{room}:{}", owner.to_hex()),
        }
    }

    /// Reads a scanned owner code (`unibus-owner:v1:<room>:<owner hex>`, the hex in either
    /// case) back into a fingerprint.
    pub fn from_qr_code(code: &str) -> Result<Self, TrustError> {
        let rest = code
            .trim()
            .strip_prefix(OWNER_CODE_PREFIX)
            .ok_or_else(|| TrustError::BadOwnerCode("wrong prefix".into()))?;
        let (room, owner) = rest
            .rsplit_once(':')
            .ok_or_else(|| TrustError::BadOwnerCode("no owner key".into()))?;
        let room = RoomId::new(room).map_err(|e| TrustError::BadOwnerCode(e.to_string()))?;
        let owner =
            SignPublicKey::from_hex(owner).map_err(|e| TrustError::BadOwnerCode(e.to_string()))?;
        Ok(Self::new(&room, &owner))
    }
}

/// `SHA-512(label || u16 BE room length || room || owner key)`; group `i` (0 to 11) is bytes
/// `5i..5i+5` as a big-endian integer modulo 100000, as 5 digits.
fn safety_number(room: &RoomId, owner: &SignPublicKey) -> String {
    let room = room.as_str().as_bytes();
    let mut hash = Sha512::new();
    hash.update(SAFETY_NUMBER_LABEL.as_bytes());
    // A room id is at most 128 bytes (protocol §6), so its length fits.
    hash.update((room.len() as u16).to_be_bytes());
    hash.update(room);
    hash.update(owner.as_bytes());
    let digest = hash.finalize();
    digest[..60]
        .chunks_exact(5)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a session learns when it checks a reply's owner against the store.
#[derive(Debug)]
pub(crate) enum OwnerCheck {
    /// The owner is the pinned one (or was just pinned).
    Trusted,
    /// Another owner is pinned.
    Changed {
        pinned: SignPublicKey,
        verified: bool,
    },
}

/// The per-room trust of one identity, kept so that a server cannot roll a room back to an
/// older (validly signed) epoch or name a different owner to the next session:
///
/// - the owner of each room, pinned the first time a reply names it (trust on first use) and
///   refused when a later reply names another
///   ([`SessionError::OwnerChanged`](super::SessionError::OwnerChanged));
/// - whether the app marked that owner verified, after comparing its [`OwnerFingerprint`] out
///   of band;
/// - the epoch floor: the highest epoch of the room whose manifest this client verified. A
///   "latest" epoch below it is refused
///   ([`SessionError::EpochRollback`](super::SessionError::EpochRollback));
/// - the message cursor of each room ([`last_delivered`](Self::last_delivered)), written by
///   [`Watch`](super::Watch)es with messages.
///
/// [`open`](Self::open) keeps this in a JSON file, rewritten atomically on every change (format
/// in docs/client.md, "Trust across restarts"); [`in_memory`](Self::in_memory) keeps it for the
/// process's life only.
///
/// Cheap to clone: clones share one state. Open a file once per process and share the store
/// between that identity's sessions: two stores writing one file would undo each other's
/// changes.
///
/// ```no_run
/// # fn run(me: &unibus::Identity) -> Result<(), unibus::client::TrustError> {
/// use unibus::client::TrustStore;
/// use unibus::RoomId;
///
/// let trust = TrustStore::open("/data/app/unibus-trust.json", &me.sign_public_key())?;
/// let room = RoomId::new("general").unwrap();
/// if let Some(fingerprint) = trust.owner_fingerprint(&room) {
///     println!("compare with the owner: {}", fingerprint.safety_number);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TrustStore {
    inner: Arc<Mutex<State>>,
}

struct State {
    identity: SignPublicKey,
    /// `None` in memory.
    path: Option<PathBuf>,
    contents: Contents,
}

/// What the store keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Contents {
    rooms: BTreeMap<RoomId, Entry>,
    /// Per room, the messages delivered to this identity's watches.
    messages: BTreeMap<RoomId, Cursor>,
    /// The rooms whose policy is [`HistoryPolicy::Shared`]; the others are `Joined`.
    history: BTreeMap<RoomId, History>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    owner: SignPublicKey,
    verified: bool,
    epoch_floor: u64,
}

/// The file, as written (docs/client.md).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u64,
    identity: SignPublicKey,
    rooms: BTreeMap<RoomId, Entry>,
    /// Version 2 and later.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    messages: BTreeMap<RoomId, Cursor>,
    /// Version 3 and later.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    history: BTreeMap<RoomId, History>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("TrustStore")
            .field("identity", &state.identity)
            .field("path", &state.path)
            .field("rooms", &state.contents.rooms.len())
            .finish()
    }
}

impl TrustStore {
    /// Opens the trust file at `path` for `identity` (its signing key), or creates it (with no
    /// rooms) if there is none. The directory must exist.
    ///
    /// A file that belongs to another identity fails with [`TrustError::WrongIdentity`]; a file
    /// that is not a readable trust file with [`TrustError::Corrupt`] or
    /// [`TrustError::UnsupportedVersion`]. Such a file is never reset or overwritten.
    pub fn open(path: impl AsRef<Path>, identity: &SignPublicKey) -> Result<Self, TrustError> {
        let path = path.as_ref().to_path_buf();
        let contents = match std::fs::read(&path) {
            Ok(bytes) => read_file(&path, &bytes, identity)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let contents = Contents::default();
                write_file(&path, identity, &contents)?;
                contents
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        Ok(Self::with_state(State {
            identity: *identity,
            path: Some(path),
            contents,
        }))
    }

    /// A store kept in memory only, which does **not** survive a restart: a server can then
    /// name another owner, or roll back the epoch, to the next process. What
    /// [`SessionOptions::default`](super::SessionOptions) uses.
    pub fn in_memory(identity: &SignPublicKey) -> Self {
        Self::with_state(State {
            identity: *identity,
            path: None,
            contents: Contents::default(),
        })
    }

    fn with_state(state: State) -> Self {
        Self {
            inner: Arc::new(Mutex::new(state)),
        }
    }

    /// The identity (signing key) this store belongs to.
    pub fn identity(&self) -> SignPublicKey {
        self.lock().identity
    }

    /// The file behind the store; `None` for an in-memory store.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().path.clone()
    }

    /// What the store holds for `room`; `None` before any reply named its owner.
    pub fn room(&self, room: &RoomId) -> Option<RoomTrust> {
        self.lock()
            .contents
            .rooms
            .get(room)
            .map(|entry| room_trust(room, entry))
    }

    /// Every room the store holds, sorted by id.
    pub fn rooms(&self) -> Vec<RoomTrust> {
        self.lock()
            .contents
            .rooms
            .iter()
            .map(|(room, entry)| room_trust(room, entry))
            .collect()
    }

    /// The pinned owner of `room` as a safety number and a QR code, to compare out of band;
    /// `None` if no owner is pinned.
    pub fn owner_fingerprint(&self, room: &RoomId) -> Option<OwnerFingerprint> {
        self.room(room)
            .map(|trust| OwnerFingerprint::new(room, &trust.owner))
    }

    /// Marks `owner` verified as the owner of `room`, after the app compared its fingerprint
    /// out of band. Pins it if the room has no owner pinned yet; fails with
    /// [`TrustError::OwnerMismatch`] if another owner is pinned (see
    /// [`accept_owner`](Self::accept_owner)).
    pub fn mark_owner_verified(
        &self,
        room: &RoomId,
        owner: &SignPublicKey,
    ) -> Result<(), TrustError> {
        self.update(|contents| {
            let entry = contents.rooms.entry(room.clone()).or_insert(Entry {
                owner: *owner,
                verified: false,
                epoch_floor: 0,
            });
            if entry.owner != *owner {
                return Err(TrustError::OwnerMismatch {
                    room: room.clone(),
                    pinned: entry.owner,
                    given: *owner,
                });
            }
            entry.verified = true;
            Ok(())
        })
    }

    /// Pins `owner` as the owner of `room`, replacing any other, and marks it verified: the way
    /// to accept a change of owner deliberately, after verifying the new one out of band. The
    /// epoch floor is kept.
    pub fn accept_owner(&self, room: &RoomId, owner: &SignPublicKey) -> Result<(), TrustError> {
        self.update(|contents| {
            let entry = contents.rooms.entry(room.clone()).or_insert(Entry {
                owner: *owner,
                verified: true,
                epoch_floor: 0,
            });
            entry.owner = *owner;
            entry.verified = true;
            Ok(())
        })
    }

    /// Forgets everything about `room`: its owner is pinned again from the next reply, its
    /// epoch floor starts at 0, and its messages are delivered again from its first. Only for a
    /// room the app deliberately resets (for example after a server was restored from a backup
    /// and the change was confirmed out of band).
    pub fn forget_room(&self, room: &RoomId) -> Result<(), TrustError> {
        self.update(|contents| {
            contents.rooms.remove(room);
            contents.messages.remove(room);
            contents.history.remove(room);
            Ok(())
        })
    }

    /// The position of the last message of `room` delivered to this identity's watches and
    /// handled by the app (0 before any): a watch with messages resumes after it.
    pub fn last_delivered(&self, room: &RoomId) -> u64 {
        self.lock()
            .contents
            .messages
            .get(room)
            .map_or(0, |cursor| cursor.last)
    }

    /// The history policy of `room` ([`HistoryPolicy::Joined`] unless set).
    pub fn history_policy(&self, room: &RoomId) -> HistoryPolicy {
        self.lock()
            .contents
            .history
            .get(room)
            .map_or(HistoryPolicy::Joined, |history| history.policy)
    }

    /// Sets the history policy of `room` (and saves). Back to `Joined`, the members still
    /// waiting for their history are forgotten.
    pub(crate) fn set_history_policy(
        &self,
        room: &RoomId,
        policy: HistoryPolicy,
    ) -> Result<(), TrustError> {
        self.update(|contents| {
            match policy {
                HistoryPolicy::Joined => {
                    contents.history.remove(room);
                }
                HistoryPolicy::Shared => {
                    contents.history.entry(room.clone()).or_default().policy = policy;
                }
            }
            Ok(())
        })
    }

    /// Records that `member` was added to `room` and is to get its history, if the room's
    /// policy is `Shared` (and saves); else nothing.
    pub(crate) fn add_pending_history(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
    ) -> Result<(), TrustError> {
        self.update(|contents| {
            if let Some(history) = contents.history.get_mut(room) {
                history.pending.insert(*member);
            }
            Ok(())
        })
    }

    /// The members of `room` still to get their history.
    pub(crate) fn pending_history(&self, room: &RoomId) -> Vec<SignPublicKey> {
        self.lock()
            .contents
            .history
            .get(room)
            .map(|history| history.pending.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Records that `members` of `room` got their history (and saves).
    pub(crate) fn clear_pending_history(
        &self,
        room: &RoomId,
        members: &[SignPublicKey],
    ) -> Result<(), TrustError> {
        self.update(|contents| {
            if let Some(history) = contents.history.get_mut(room) {
                for member in members {
                    history.pending.remove(member);
                }
            }
            Ok(())
        })
    }

    /// The message cursor of `room`, as this store last read or wrote it.
    pub(crate) fn message_cursor(&self, room: &RoomId) -> Cursor {
        self.lock()
            .contents
            .messages
            .get(room)
            .cloned()
            .unwrap_or_default()
    }

    /// Records that the app handled `deliveries` (and saves, once): each room's `last` rises
    /// to its highest position, never falls, and the opened messages are remembered.
    pub(crate) fn record_delivered(&self, deliveries: &[Delivery]) -> Result<(), TrustError> {
        self.update(|contents| {
            for delivery in deliveries {
                contents
                    .messages
                    .entry(delivery.room.clone())
                    .or_default()
                    .advance(delivery.position, delivery.opened);
            }
            Ok(())
        })
    }

    /// Checks `owner` against the pin of `room`, pinning it (and saving) the first time.
    pub(crate) fn check_owner(
        &self,
        room: &RoomId,
        owner: &SignPublicKey,
    ) -> Result<OwnerCheck, TrustError> {
        // Trusted as kept: nothing to write. (A pin changes only through `accept_owner` and
        // `forget_room`, which the app calls deliberately.)
        if self
            .lock()
            .contents
            .rooms
            .get(room)
            .map(|entry| entry.owner)
            == Some(*owner)
        {
            return Ok(OwnerCheck::Trusted);
        }
        self.update(|contents| {
            let rooms = &mut contents.rooms;
            Ok(match rooms.get(room) {
                Some(entry) if entry.owner == *owner => OwnerCheck::Trusted,
                Some(entry) => OwnerCheck::Changed {
                    pinned: entry.owner,
                    verified: entry.verified,
                },
                None => {
                    rooms.insert(
                        room.clone(),
                        Entry {
                            owner: *owner,
                            verified: false,
                            epoch_floor: 0,
                        },
                    );
                    OwnerCheck::Trusted
                }
            })
        })
    }

    /// The epoch floor of `room` (0 if unknown), as this store last read or wrote it.
    pub(crate) fn epoch_floor(&self, room: &RoomId) -> u64 {
        self.lock()
            .contents
            .rooms
            .get(room)
            .map_or(0, |entry| entry.epoch_floor)
    }

    /// Records that a manifest of `room` at `epoch`, signed by `owner`, verified: raises the
    /// floor (and saves) if `owner` is the pinned owner or none is pinned yet (then pinning
    /// it). Does nothing if another owner is pinned.
    pub(crate) fn record_verified(
        &self,
        room: &RoomId,
        owner: &SignPublicKey,
        epoch: u64,
    ) -> Result<(), TrustError> {
        let kept = self.lock().contents.rooms.get(room).copied();
        if matches!(kept, Some(entry) if entry.owner == *owner && entry.epoch_floor >= epoch) {
            return Ok(());
        }
        self.update(|contents| {
            let rooms = &mut contents.rooms;
            match rooms.get(room).copied() {
                None => {
                    rooms.insert(
                        room.clone(),
                        Entry {
                            owner: *owner,
                            verified: false,
                            epoch_floor: epoch,
                        },
                    );
                }
                Some(entry) if entry.owner == *owner && entry.epoch_floor < epoch => {
                    rooms.insert(
                        room.clone(),
                        Entry {
                            epoch_floor: epoch,
                            ..entry
                        },
                    );
                }
                Some(_) => {}
            }
            Ok(())
        })
    }

    /// Applies `change` to the latest contents and saves them, keeping them only if that
    /// worked.
    ///
    /// For a file, the latest contents are the file's, read under an exclusive lock on a lock
    /// file beside it (`<file>.lock`) that is held until the change is written: other
    /// processes (or other stores of this process) on the same file never lose each other's
    /// changes, and a floor that one raised is never lowered by another's older copy.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Contents) -> Result<T, TrustError>,
    ) -> Result<T, TrustError> {
        let mut state = self.lock();
        let _lock = match &state.path {
            Some(path) => Some(lock_file(path)?),
            None => None,
        };
        let latest = state.latest()?;
        let mut contents = latest.clone();
        let out = change(&mut contents)?;
        if contents != latest {
            if let Some(path) = &state.path {
                write_file(path, &state.identity, &contents)?;
            }
        }
        state.contents = contents;
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is computed on a copy and swapped in whole, so a panic while the lock
        // was held cannot have left a half-made change behind.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// The contents as they are now: the file's (read again, for other writers may have
    /// changed it), or those kept in memory.
    fn latest(&self) -> Result<Contents, TrustError> {
        let Some(path) = &self.path else {
            return Ok(self.contents.clone());
        };
        match std::fs::read(path) {
            Ok(bytes) => read_file(path, &bytes, &self.identity),
            // Moved away deliberately: start again from nothing, as `open` would.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contents::default()),
            Err(e) => Err(io_error(path, e)),
        }
    }
}

/// Takes the exclusive lock on `<path>.lock`, waiting for another holder; released when the
/// returned file is dropped.
fn lock_file(path: &Path) -> Result<std::fs::File, TrustError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let lock = options.open(&name).map_err(|e| io_error(path, e))?;
    lock.lock().map_err(|e| io_error(path, e))?;
    Ok(lock)
}

fn room_trust(room: &RoomId, entry: &Entry) -> RoomTrust {
    RoomTrust {
        room: room.clone(),
        owner: entry.owner,
        verified: entry.verified,
        epoch_floor: entry.epoch_floor,
    }
}

fn io_error(path: &Path, error: std::io::Error) -> TrustError {
    TrustError::Io {
        path: path.to_path_buf(),
        source: error,
    }
}

fn read_file(path: &Path, bytes: &[u8], identity: &SignPublicKey) -> Result<Contents, TrustError> {
    let corrupt = |reason: String| TrustError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    // The format and version first, so that a newer file says so rather than "corrupt".
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(TRUST_FILE_FORMAT) {
        return Err(corrupt(format!("its format is not {TRUST_FILE_FORMAT:?}")));
    }
    let version = value
        .get("version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| corrupt("no version".into()))?;
    if !(1..=TRUST_FILE_VERSION).contains(&version) {
        return Err(TrustError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
            supported: TRUST_FILE_VERSION,
        });
    }
    let file: File = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    if version == 1 && !file.messages.is_empty() {
        return Err(corrupt("a version 1 file with message cursors".into()));
    }
    if version < 3 && !file.history.is_empty() {
        return Err(corrupt(format!(
            "a version {version} file with a history policy"
        )));
    }
    if file.identity != *identity {
        return Err(TrustError::WrongIdentity {
            path: path.to_path_buf(),
            expected: *identity,
            found: file.identity,
        });
    }
    Ok(Contents {
        rooms: file.rooms,
        messages: file.messages,
        history: file.history,
    })
}

/// Replaces the file atomically: a temporary file in the same directory is written and
/// flushed to disk, renamed over the file, and the directory is flushed. A crash leaves the old
/// file or the new one, never a mix.
fn write_file(
    path: &Path,
    identity: &SignPublicKey,
    contents: &Contents,
) -> Result<(), TrustError> {
    // The lowest version that holds what it keeps, so that earlier versions of the SDK still
    // read it.
    let version = if !contents.messages.is_empty() {
        4
    } else if !contents.history.is_empty() {
        3
    } else {
        1
    };
    let file = File {
        format: TRUST_FILE_FORMAT.into(),
        version,
        identity: *identity,
        rooms: contents.rooms.clone(),
        messages: contents.messages.clone(),
        history: contents.history.clone(),
    };
    let mut bytes =
        serde_json::to_vec_pretty(&file).map_err(|e| io_error(path, std::io::Error::other(e)))?;
    bytes.push(b'\n');
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io_error(path, std::io::Error::other("the path names no file")))?
        .to_string_lossy()
        .into_owned();
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = write_and_rename(&temporary, path, &dir, &bytes);
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(|e| io_error(path, e))
}

fn write_and_rename(
    temporary: &Path,
    path: &Path,
    dir: &Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(temporary, path)?;
    // The rename is durable once the directory is flushed (not possible on Windows).
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn key() -> SignPublicKey {
        Identity::generate().unwrap().sign_public_key()
    }

    #[test]
    fn the_safety_number_is_twelve_groups_of_five_digits_bound_to_room_and_owner() {
        let room = RoomId::new("general").unwrap();
        // The public key of RFC 8032's first test.
        let owner = SignPublicKey::from_hex(RFC8032_TEST1_KEY).unwrap();
        let fingerprint = OwnerFingerprint::new(&room, &owner);
        let groups: Vec<&str> = fingerprint.safety_number.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
        // The known answer of docs/client.md.
        assert_eq!(fingerprint.safety_number, KNOWN_SAFETY_NUMBER);
        assert_eq!(
            fingerprint.qr_code,
            format!("unibus-owner:v1:general:{RFC8032_TEST1_KEY}")
        );
        let other_room = OwnerFingerprint::new(&RoomId::new("generals").unwrap(), &owner);
        assert_ne!(other_room.safety_number, fingerprint.safety_number);
        let other_owner = OwnerFingerprint::new(&room, &key());
        assert_ne!(other_owner.safety_number, fingerprint.safety_number);
    }

    const RFC8032_TEST1_KEY: &str =
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const KNOWN_SAFETY_NUMBER: &str =
        "82923 94159 02761 87939 24232 60937 80972 98870 40424 33927 35428 18703";

    #[test]
    fn an_owner_code_reads_back_and_anything_else_is_refused() {
        let room = RoomId::new("design-team_2").unwrap();
        let owner = key();
        let fingerprint = OwnerFingerprint::new(&room, &owner);
        assert_eq!(
            OwnerFingerprint::from_qr_code(&fingerprint.qr_code).unwrap(),
            fingerprint
        );
        let upper = format!(
            "unibus-owner:v1:design-team_2:{}",
            owner.to_hex().to_uppercase()
        );
        assert_eq!(OwnerFingerprint::from_qr_code(&upper).unwrap(), fingerprint);
        for bad in [
            "",
            "unibus-owner:v1:",
            "unibus-owner:v2:general:00",
            "unibus-owner:v1:general",
            "unibus-owner:v1:bad room:0707070707070707070707070707070707070707070707070707070707070707",
            "unibus-owner:v1:general:07",
        ] {
            assert!(
                matches!(OwnerFingerprint::from_qr_code(bad), Err(TrustError::BadOwnerCode(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pins_floors_and_verification_survive_reopening_the_file() {
        let dir = tempdir();
        let path = dir.join("trust.json");
        let me = key();
        let (room, owner) = (RoomId::new("general").unwrap(), key());
        let store = TrustStore::open(&path, &me).unwrap();
        assert!(matches!(
            store.check_owner(&room, &owner),
            Ok(OwnerCheck::Trusted)
        ));
        store.record_verified(&room, &owner, 2).unwrap();
        store.record_verified(&room, &owner, 1).unwrap();
        store.mark_owner_verified(&room, &owner).unwrap();

        let reopened = TrustStore::open(&path, &me).unwrap();
        assert_eq!(
            reopened.room(&room),
            Some(RoomTrust {
                room: room.clone(),
                owner,
                verified: true,
                epoch_floor: 2
            })
        );
        let stranger = key();
        assert!(matches!(
            reopened.check_owner(&room, &stranger),
            Ok(OwnerCheck::Changed { pinned, verified: true }) if pinned == owner
        ));
        assert!(matches!(
            reopened.mark_owner_verified(&room, &stranger),
            Err(TrustError::OwnerMismatch { .. })
        ));
        reopened.accept_owner(&room, &stranger).unwrap();
        let again = TrustStore::open(&path, &me).unwrap().room(&room).unwrap();
        assert_eq!(
            (again.owner, again.verified, again.epoch_floor),
            (stranger, true, 2)
        );
        reopened.forget_room(&room).unwrap();
        assert!(TrustStore::open(&path, &me).unwrap().rooms().is_empty());
        // No temporary file is left behind: only the file and its lock file.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["trust.json", "trust.json.lock"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_of_another_identity_a_newer_version_or_garbage_is_refused_and_left_untouched() {
        let dir = tempdir();
        let path = dir.join("trust.json");
        let owner_of_file = key();
        TrustStore::open(&path, &owner_of_file).unwrap();
        let before = std::fs::read(&path).unwrap();
        let me = key();
        assert!(matches!(
            TrustStore::open(&path, &me),
            Err(TrustError::WrongIdentity { found, expected, .. })
                if found == owner_of_file && expected == me
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);

        let newer = String::from_utf8(before.clone())
            .unwrap()
            .replace("\"version\": 1", "\"version\": 5");
        std::fs::write(&path, newer).unwrap();
        assert!(matches!(
            TrustStore::open(&path, &owner_of_file),
            Err(TrustError::UnsupportedVersion { version: 5, .. })
        ));
        for garbage in [&b""[..], b"{", b"[]", br#"{"format":"other","version":1}"#] {
            std::fs::write(&path, garbage).unwrap();
            assert!(
                matches!(
                    TrustStore::open(&path, &owner_of_file),
                    Err(TrustError::Corrupt { .. })
                ),
                "{garbage:?}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), garbage);
        }
        let bad_room = String::from_utf8(before).unwrap().replace(
            "\"rooms\": {}",
            &format!(
                "\"rooms\": {{\"a b\": {{\"owner\": \"{}\", \"verified\": false, \"epoch_floor\": 1}}}}",
                me.to_hex()
            ),
        );
        std::fs::write(&path, &bad_room).unwrap();
        assert!(matches!(
            TrustStore::open(&path, &owner_of_file),
            Err(TrustError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unwritable_place_is_an_io_error_and_an_in_memory_store_writes_nothing() {
        let me = key();
        assert!(matches!(
            TrustStore::open("/nonexistent-unibus-dir/trust.json", &me),
            Err(TrustError::Io { .. })
        ));
        let memory = TrustStore::in_memory(&me);
        let room = RoomId::new("general").unwrap();
        memory.record_verified(&room, &me, 3).unwrap();
        assert_eq!(memory.epoch_floor(&room), 3);
        assert_eq!(memory.path(), None);
    }

    #[test]
    fn two_stores_on_one_file_never_lower_each_others_floors_or_drop_each_others_pins() {
        let dir = tempdir();
        let path = dir.join("trust.json");
        let me = key();
        let (general, design, owner) = (
            RoomId::new("general").unwrap(),
            RoomId::new("design").unwrap(),
            key(),
        );
        // Two processes of the same app, each with the file open since before the other's
        // changes (two stores in one process behave the same).
        let first = TrustStore::open(&path, &me).unwrap();
        let second = TrustStore::open(&path, &me).unwrap();
        first.record_verified(&general, &owner, 5).unwrap();
        // The second store pins another room from its older copy: the first's floor stays.
        second.record_verified(&design, &owner, 2).unwrap();
        second.record_verified(&general, &owner, 3).unwrap();
        let reopened = TrustStore::open(&path, &me).unwrap();
        assert_eq!(reopened.epoch_floor(&general), 5);
        assert_eq!(reopened.epoch_floor(&design), 2);
        // The second store now knows the first's floor too.
        assert_eq!(second.epoch_floor(&general), 5);

        // Both raising floors at once from threads: every raise lands, none is lost.
        let rooms: Vec<RoomId> = (0..4)
            .map(|i| RoomId::new(&format!("room-{i}")).unwrap())
            .collect();
        std::thread::scope(|scope| {
            for (store, mine) in [(&first, &rooms[..2]), (&second, &rooms[2..])] {
                scope.spawn(move || {
                    for epoch in 1..=25 {
                        for room in mine {
                            store.record_verified(room, &owner, epoch).unwrap();
                        }
                    }
                });
            }
        });
        let reopened = TrustStore::open(&path, &me).unwrap();
        for room in &rooms {
            assert_eq!(reopened.epoch_floor(room), 25, "{room}");
        }
        assert_eq!(reopened.epoch_floor(&general), 5);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn message_cursors_survive_reopening_never_fall_and_keep_a_version_1_file_readable_until_used()
    {
        use crate::envelope::MessageId;
        let dir = tempdir();
        let path = dir.join("trust.json");
        let (me, sender) = (key(), key());
        let (general, design) = (
            RoomId::new("general").unwrap(),
            RoomId::new("design").unwrap(),
        );
        let store = TrustStore::open(&path, &me).unwrap();
        store.record_verified(&general, &sender, 1).unwrap();
        // Without cursors the file stays version 1, which earlier SDKs read.
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["version"], 1);
        assert!(written.get("messages").is_none());

        let delivered = |room: &RoomId, position: u64, id: u8| Delivery {
            room: room.clone(),
            position,
            opened: Some(super::super::messages::Delivered::new(
                &sender,
                &MessageId::from_bytes([id; 16]),
                position,
            )),
        };
        store
            .record_delivered(&[delivered(&general, 4, 1), delivered(&general, 9, 2)])
            .unwrap();
        // Another store of the file, behind: its older position lowers nothing.
        let behind = TrustStore::open(&path, &me).unwrap();
        behind
            .record_delivered(&[delivered(&general, 6, 3), delivered(&design, 2, 1)])
            .unwrap();
        let reopened = TrustStore::open(&path, &me).unwrap();
        assert_eq!(reopened.last_delivered(&general), 9);
        assert_eq!(reopened.last_delivered(&design), 2);
        let cursor = reopened.message_cursor(&general);
        let positions: Vec<u64> = cursor.recent.iter().map(|d| d.position).collect();
        assert_eq!(positions, [4, 6, 9]);
        assert_eq!(
            cursor.first_position(&sender, &MessageId::from_bytes([2; 16]), 11),
            Some(9)
        );
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["version"], 4);
        // The remembered messages, packed: 24 bytes each, SHA-256(sender || id)[..16] and the
        // position.
        use base64::Engine;
        let packed = base64::engine::general_purpose::STANDARD
            .decode(written["messages"]["general"]["recent"].as_str().unwrap())
            .unwrap();
        assert_eq!(packed.len(), 3 * 24);
        let mut hashed = sender.as_bytes().to_vec();
        hashed.extend_from_slice(&[2; 16]);
        use sha2::Digest;
        assert_eq!(packed[48..64], sha2::Sha256::digest(&hashed)[..16]);
        assert_eq!(packed[64..], 9u64.to_be_bytes());

        // A version 1 file that claims cursors is not one this SDK wrote.
        let claimed = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"version\": 4", "\"version\": 1");
        std::fs::write(&path, &claimed).unwrap();
        assert!(matches!(
            TrustStore::open(&path, &me),
            Err(TrustError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_version_2_file_with_its_listed_cursors_is_read_and_written_back_packed() {
        let dir = tempdir();
        let path = dir.join("trust.json");
        use crate::envelope::MessageId;
        let (me, sender) = (key(), key());
        let id = MessageId::from_bytes([7; 16]);
        let written_by_version_2 = serde_json::json!({
            "format": TRUST_FILE_FORMAT,
            "version": 2,
            "identity": me,
            "rooms": {},
            "messages": {
                "general": {
                    "last": 12,
                    "recent": [{ "sender": sender, "id": id.to_string(), "position": 12 }]
                }
            }
        });
        std::fs::write(&path, serde_json::to_vec(&written_by_version_2).unwrap()).unwrap();
        let store = TrustStore::open(&path, &me).unwrap();
        let general = RoomId::new("general").unwrap();
        assert_eq!(store.last_delivered(&general), 12);
        let cursor = store.message_cursor(&general);
        assert_eq!(cursor.first_position(&sender, &id, 15), Some(12));
        assert_eq!(cursor.first_position(&me, &id, 15), None);

        store
            .record_delivered(&[Delivery {
                room: general.clone(),
                position: 13,
                opened: None,
            }])
            .unwrap();
        let reopened = TrustStore::open(&path, &me).unwrap();
        assert_eq!(reopened.last_delivered(&general), 13);
        assert_eq!(
            reopened
                .message_cursor(&general)
                .first_position(&sender, &id, 15),
            Some(12)
        );
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["version"], 4);
        assert!(written["messages"]["general"]["recent"].is_string());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_history_policy_and_its_pending_members_survive_reopening_in_a_version_3_file() {
        let dir = tempdir();
        let path = dir.join("trust.json");
        let (me, owner, newcomer, gone) = (key(), key(), key(), key());
        let general = RoomId::new("general").unwrap();
        let store = TrustStore::open(&path, &me).unwrap();
        store.record_verified(&general, &owner, 1).unwrap();
        assert_eq!(store.history_policy(&general), HistoryPolicy::Joined);
        // Under the default, nothing is pending and the file stays version 1.
        store.add_pending_history(&general, &newcomer).unwrap();
        assert!(store.pending_history(&general).is_empty());
        let version = |path: &Path| {
            let written: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            written["version"].clone()
        };
        assert_eq!(version(&path), 1);

        store
            .set_history_policy(&general, HistoryPolicy::Shared)
            .unwrap();
        store.add_pending_history(&general, &newcomer).unwrap();
        store.add_pending_history(&general, &gone).unwrap();
        assert_eq!(version(&path), 3);
        let reopened = TrustStore::open(&path, &me).unwrap();
        assert_eq!(reopened.history_policy(&general), HistoryPolicy::Shared);
        let mut expected = vec![newcomer, gone];
        expected.sort();
        assert_eq!(reopened.pending_history(&general), expected);
        reopened.clear_pending_history(&general, &[gone]).unwrap();
        assert_eq!(
            TrustStore::open(&path, &me)
                .unwrap()
                .pending_history(&general),
            vec![newcomer]
        );

        // A version 2 file that claims a policy is not one this SDK wrote.
        let claimed = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"version\": 3", "\"version\": 2");
        std::fs::write(&path, &claimed).unwrap();
        assert!(matches!(
            TrustStore::open(&path, &me),
            Err(TrustError::Corrupt { .. })
        ));
        std::fs::write(&path, claimed.replace("\"version\": 2", "\"version\": 3")).unwrap();
        // Back to Joined: the policy and its pending members go, and the file is version 1.
        let store = TrustStore::open(&path, &me).unwrap();
        store
            .set_history_policy(&general, HistoryPolicy::Joined)
            .unwrap();
        assert!(store.pending_history(&general).is_empty());
        assert_eq!(version(&path), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir() -> PathBuf {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let dir =
            std::env::temp_dir().join(format!("unibus-trust-{}", crate::hex::encode(&random)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
