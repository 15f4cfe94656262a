//! The SQLite backend: the embedded default.
//!
//! One database file in WAL mode. Migrations are compiled into the binary (one SQL file per
//! migration under `server/migrations/`) and applied at open, tracked by `PRAGMA user_version`.
//! Every call runs on tokio's blocking pool, never on the async worker threads. Invite
//! redemption is one `IMMEDIATE` transaction guarded by `used = 0`.
//!
//! Writes go through one connection; reads through [`READERS`] read-only ones beside it (WAL
//! lets them read while the writer writes), each read in a transaction of its own, so it sees
//! one committed state. Calls wait for a free connection on the async side, so a burst of
//! calls does not grow the blocking pool.
//!
//! `schema` has the migrations, `rows` the mapping between rows and records (and the
//! statements every operation shares); this file is the [`Store`] implementation.

mod feed;
mod rows;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use unibus::manifest::SignedManifest;
use unibus::protocol::status::KeyStatus;
use unibus::{InviteToken, KexPublicKey, RoomId, SignPublicKey};

use super::rules::{active_user, check_nonce, mint_invite, redeem_step, RedeemStep};
use super::{
    invite_id, now_millis, DeletedUser, EpochPart, Invite, InviteStatus, NewInvite, NewUser, Room,
    RoomSnapshot, Snapshot, Store, StoreError, StoreResult, StoredShare, User,
};
use rows::*;

/// How many read-only connections a store keeps beside its writer.
pub const READERS: usize = 4;

/// The SQLite store. Cloning shares the connections.
#[derive(Clone)]
pub struct SqliteStore {
    conns: Arc<Connections>,
    path: PathBuf,
}

/// The writer and the readers, each with the permits that say how many calls may hold it.
struct Connections {
    writer: Mutex<Connection>,
    writing: Arc<Semaphore>,
    readers: Vec<Mutex<Connection>>,
    reading: Arc<Semaphore>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, enables WAL and applies pending
    /// migrations.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let open_path = path.clone();
        let conns = tokio::task::spawn_blocking(move || -> StoreResult<Connections> {
            let mut conn = Connection::open(&open_path).map_err(backend)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(backend)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(backend)?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(backend)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(backend)?;
            schema::migrate(&mut conn)?;
            let readers = (0..READERS)
                .map(|_| {
                    let reader = Connection::open_with_flags(
                        &open_path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(backend)?;
                    reader
                        .busy_timeout(std::time::Duration::from_secs(5))
                        .map_err(backend)?;
                    Ok(Mutex::new(reader))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(Connections {
                writer: Mutex::new(conn),
                writing: Arc::new(Semaphore::new(1)),
                readers,
                reading: Arc::new(Semaphore::new(READERS)),
            })
        })
        .await
        .map_err(|e| StoreError::backend("sqlite open task", e))??;
        Ok(Self {
            conns: Arc::new(conns),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a consistent copy of the database to `dest` with `VACUUM INTO` (which must not
    /// exist yet), while the store stays usable.
    pub async fn backup_to(&self, dest: impl AsRef<Path>) -> StoreResult<()> {
        let dest = dest.as_ref().to_string_lossy().into_owned();
        self.with(move |conn| {
            conn.execute("VACUUM INTO ?1", params![dest])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    /// Runs `f` with the writer on the blocking pool, once the writer is free.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = permit(&self.conns.writing).await?;
        let conns = Arc::clone(&self.conns);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&mut lock(&conns.writer))
        })
        .await
        .map_err(|e| StoreError::backend("sqlite task", e))?
    }

    /// Runs `f` with a free reader on the blocking pool, in a read transaction (one committed
    /// state for all its statements).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let permit = permit(&self.conns.reading).await?;
        let conns = Arc::clone(&self.conns);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // The permit guarantees a free reader: at most READERS calls hold one.
            let reader = conns
                .readers
                .iter()
                .find_map(|reader| match reader.try_lock() {
                    Ok(free) => Some(free),
                    Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) => None,
                })
                .unwrap_or_else(|| lock(&conns.readers[0]));
            let snapshot = reader.unchecked_transaction().map_err(backend)?;
            let result = f(&snapshot);
            // Nothing was written: ending the read transaction cannot lose anything.
            let _ = snapshot.finish();
            result
        })
        .await
        .map_err(|e| StoreError::backend("sqlite task", e))?
    }
}

/// A permit of `semaphore`, which is never closed.
async fn permit(semaphore: &Arc<Semaphore>) -> StoreResult<OwnedSemaphorePermit> {
    Arc::clone(semaphore)
        .acquire_owned()
        .await
        .map_err(|e| StoreError::backend("sqlite connection permits", e))
}

/// Locks a connection. A panic while holding the lock poisons it; the connection itself is
/// still sound (SQLite rolls back the open transaction), so keep using it.
fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Store for SqliteStore {
    async fn changes(&self) -> StoreResult<super::ChangeFeed> {
        feed::open(&self.path).await
    }

    async fn add_user(&self, user: NewUser) -> StoreResult<User> {
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            if get_user(&tx, &user.sign_key)?.is_some() {
                return Err(StoreError::UserExists);
            }
            if is_deleted(&tx, &user.sign_key)? {
                return Err(StoreError::UserDeleted);
            }
            let user = active_user(user);
            insert_user(&tx, &user)?;
            tx.commit().map_err(backend)?;
            Ok(user)
        })
        .await
    }

    async fn get_user(&self, key: &SignPublicKey) -> StoreResult<User> {
        let key = *key;
        self.read(move |conn| get_user(conn, &key)?.ok_or(StoreError::NotFound))
            .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.read(list_users).await
    }

    async fn key_status(&self, key: &SignPublicKey) -> StoreResult<KeyStatus> {
        let key = *key;
        self.read(move |conn| {
            Ok(match get_user(conn, &key)? {
                Some(user) if user.status == super::UserStatus::Active => KeyStatus::Active,
                Some(_) => KeyStatus::Revoked,
                None if is_deleted(conn, &key)? => KeyStatus::Deleted,
                None => KeyStatus::Unknown,
            })
        })
        .await
    }

    async fn revoke_user(&self, key: &SignPublicKey) -> StoreResult<()> {
        let key = key.to_hex();
        self.with(move |conn| {
            match conn
                .execute(
                    "UPDATE users SET status = 'revoked' WHERE sign_key = ?1",
                    params![key],
                )
                .map_err(backend)?
            {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn delete_user(&self, key: &SignPublicKey) -> StoreResult<()> {
        let key = *key;
        self.with(move |conn| {
            // The record goes and the tombstone comes in one transaction.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let removed = tx
                .execute(
                    "DELETE FROM users WHERE sign_key = ?1",
                    params![key.to_hex()],
                )
                .map_err(backend)?;
            if removed == 0 {
                return Err(StoreError::NotFound);
            }
            insert_deleted(
                &tx,
                &DeletedUser {
                    sign_key: key,
                    deleted_at: now_millis(),
                },
            )?;
            tx.execute(
                "DELETE FROM history_shares WHERE member = ?1",
                params![key.to_hex()],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn create_invite(&self, new: NewInvite) -> StoreResult<(InviteToken, Invite)> {
        let (token, invite) = mint_invite(new)?;
        let stored = invite.clone();
        self.with(move |conn| insert_invite(conn, &stored)).await?;
        Ok((token, invite))
    }

    async fn get_invite(&self, id: &str) -> StoreResult<Invite> {
        let id = id.to_owned();
        self.read(move |conn| get_invite(conn, &id)?.ok_or(StoreError::NotFound))
            .await
    }

    async fn list_invites(&self) -> StoreResult<Vec<Invite>> {
        self.read(list_invites).await
    }

    async fn cancel_invite(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let invite = get_invite(&tx, &id)?.ok_or(StoreError::NotFound)?;
            match invite.status_at(now_millis()) {
                InviteStatus::Used => return Err(StoreError::InviteUsed),
                InviteStatus::Cancelled => return Ok(()),
                InviteStatus::Pending | InviteStatus::Expired => {}
            }
            tx.execute(
                "UPDATE invites SET cancelled_at = ?1 WHERE id = ?2 AND used = 0",
                params![now_millis(), id],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn redeem_invite(
        &self,
        token: &InviteToken,
        sign_key: &SignPublicKey,
        kex_key: &KexPublicKey,
    ) -> StoreResult<User> {
        let id = invite_id(token);
        let (sign_key, kex_key) = (*sign_key, *kex_key);
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let invite = get_invite(&tx, &id)?.ok_or(StoreError::InviteUnknown)?;
            let now = now_millis();
            let retired = retired(&tx, &sign_key)?;
            let outcome = match redeem_step(&invite, &sign_key, retired, now)? {
                RedeemStep::Burn => {
                    let burned = tx
                        .execute(
                            "UPDATE invites SET used = 1, used_at = ?1, used_by = ?2 \
                             WHERE id = ?3 AND used = 0 AND cancelled_at IS NULL",
                            params![now, sign_key.to_hex(), id],
                        )
                        .map_err(backend)?;
                    if burned != 1 {
                        // Unreachable inside this IMMEDIATE transaction; fail safe anyway.
                        return Err(StoreError::InviteUsed);
                    }
                    create_redeemed_user(&tx, &invite, sign_key, kex_key, now)
                }
                RedeemStep::Complete => match get_user(&tx, &sign_key)? {
                    Some(user) if user.invite_id.as_deref() == Some(id.as_str()) => Ok(user),
                    Some(_) => Err(StoreError::UserExists),
                    None => create_redeemed_user(&tx, &invite, sign_key, kex_key, now),
                },
            };
            // The burn stands even when the key was already registered (UserExists).
            tx.commit().map_err(backend)?;
            outcome
        })
        .await
    }

    async fn create_room(&self, id: &RoomId, owner: &SignPublicKey) -> StoreResult<Room> {
        let room = Room {
            id: id.clone(),
            owner: *owner,
            epoch: 0,
            created_at: now_millis(),
        };
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            if get_room(&tx, &room.id)?.is_some() {
                return Err(StoreError::RoomExists);
            }
            tx.execute(
                "INSERT INTO rooms (id, owner, epoch, created_at) VALUES (?1, ?2, 0, ?3)",
                params![room.id.as_str(), room.owner.to_hex(), room.created_at],
            )
            .map_err(backend)?;
            tx.execute(
                "INSERT INTO members (room_id, member) VALUES (?1, ?2)",
                params![room.id.as_str(), room.owner.to_hex()],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(room)
        })
        .await
    }

    async fn get_room(&self, id: &RoomId) -> StoreResult<Room> {
        let id = id.clone();
        self.read(move |conn| get_room(conn, &id)?.ok_or(StoreError::NotFound))
            .await
    }

    async fn list_rooms(&self) -> StoreResult<Vec<Room>> {
        self.read(list_rooms).await
    }

    async fn add_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()> {
        let (room, member) = (room.clone(), member.to_hex());
        self.with(move |conn| {
            if get_room(conn, &room)?.is_none() {
                return Err(StoreError::NotFound);
            }
            conn.execute(
                "INSERT OR IGNORE INTO members (room_id, member) VALUES (?1, ?2)",
                params![room.as_str(), member],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn remove_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<()> {
        let (room, member) = (room.clone(), member.to_hex());
        self.with(move |conn| {
            match conn
                .execute(
                    "DELETE FROM members WHERE room_id = ?1 AND member = ?2",
                    params![room.as_str(), member],
                )
                .map_err(backend)?
            {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn list_members(&self, room: &RoomId) -> StoreResult<Vec<SignPublicKey>> {
        let room = room.clone();
        self.read(move |conn| {
            if get_room(conn, &room)?.is_none() {
                return Err(StoreError::NotFound);
            }
            list_members(conn, &room)
        })
        .await
    }

    async fn active_members(
        &self,
        room: &RoomId,
        after: Option<&SignPublicKey>,
        limit: usize,
    ) -> StoreResult<Vec<(SignPublicKey, KexPublicKey)>> {
        let (room, after) = (room.clone(), after.map(SignPublicKey::to_hex));
        // SQLite's LIMIT is a signed 64-bit number; "all" is any number past the table's size.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            if get_room(conn, &room)?.is_none() {
                return Err(StoreError::NotFound);
            }
            // Deleted users have no row in `users`, revoked ones are filtered out.
            all(
                conn,
                "SELECT u.sign_key, u.kex_key FROM members m JOIN users u ON u.sign_key = m.member \
                 WHERE m.room_id = ?1 AND m.member > ?2 AND u.status = 'active' \
                 ORDER BY m.member LIMIT ?3",
                params![room.as_str(), after.unwrap_or_default(), limit],
                |row| {
                    let (sign, kex): (String, String) = (row.get(0)?, row.get(1)?);
                    Ok(parse_member(sign).and_then(|sign| {
                        let kex = KexPublicKey::from_hex(&kex).map_err(|e| {
                            StoreError::Corrupt(format!("stored key-exchange key: {e}"))
                        })?;
                        Ok((sign, kex))
                    }))
                },
            )
        })
        .await
    }

    async fn is_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<bool> {
        let (room, member) = (room.clone(), member.to_hex());
        self.read(move |conn| {
            conn.query_row(
                "SELECT 1 FROM members WHERE room_id = ?1 AND member = ?2",
                params![room.as_str(), member],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(backend)
        })
        .await
    }

    async fn rooms_for_member(&self, member: &SignPublicKey) -> StoreResult<Vec<RoomId>> {
        let member = member.to_hex();
        self.read(move |conn| {
            all(
                conn,
                "SELECT room_id FROM members WHERE member = ?1 ORDER BY room_id",
                params![member],
                |row| {
                    let id: String = row.get(0)?;
                    Ok(RoomId::new(&id)
                        .map_err(|e| StoreError::Corrupt(format!("stored room id: {e}"))))
                },
            )
        })
        .await
    }

    async fn put_epoch(&self, manifest: &SignedManifest) -> StoreResult<()> {
        let manifest = manifest.clone();
        self.with(move |conn| {
            let contents = manifest.unverified();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let room = get_room(&tx, &contents.room)?.ok_or(StoreError::NotFound)?;
            if room.epoch != contents.previous_epoch {
                return Err(StoreError::EpochConflict {
                    expected: contents.previous_epoch,
                    actual: room.epoch,
                });
            }
            insert_epoch(&tx, &manifest)?;
            tx.execute(
                "UPDATE rooms SET epoch = ?1 WHERE id = ?2",
                params![epoch_to_sql(contents.epoch)?, contents.room.as_str()],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn member_part(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: Option<u64>,
    ) -> StoreResult<EpochPart> {
        let (room, member) = (room.clone(), member.to_hex());
        self.read(move |conn| {
            let epoch = match epoch {
                Some(epoch) => epoch,
                None => get_room(conn, &room)?.ok_or(StoreError::NotFound)?.epoch,
            };
            let (head, tail): (Vec<u8>, Vec<u8>) = conn
                .prepare_cached(
                    "SELECT h.head, t.tail FROM epoch_tails t JOIN epoch_heads h \
                     ON h.room_id = t.room_id AND h.epoch = t.epoch \
                     WHERE t.room_id = ?1 AND t.epoch = ?2 AND t.member = ?3",
                )
                .map_err(backend)?
                .query_row(
                    params![room.as_str(), epoch_to_sql(epoch)?, member],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(backend)?
                .ok_or(StoreError::NotFound)?;
            Ok(EpochPart {
                epoch,
                part: super::epoch::member_part(&head, &tail),
            })
        })
        .await
    }

    async fn manifest(&self, room: &RoomId, epoch: u64) -> StoreResult<SignedManifest> {
        let room = room.clone();
        self.read(move |conn| get_manifest(conn, &room, epoch))
            .await
    }

    async fn epoch_head(&self, room: &RoomId, epoch: u64) -> StoreResult<Vec<u8>> {
        let room = room.clone();
        self.read(move |conn| get_head(conn, &room, epoch)).await
    }

    async fn put_history_shares(&self, room: &RoomId, shares: &[StoredShare]) -> StoreResult<()> {
        let (room, shares) = (room.clone(), shares.to_vec());
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            get_room(&tx, &room)?.ok_or(StoreError::NotFound)?;
            for share in &shares {
                insert_history_share(&tx, &room, share.epoch, &share.member, &share.share)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn history_share(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: u64,
    ) -> StoreResult<Vec<u8>> {
        let (room, member) = (room.clone(), member.to_hex());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT share FROM history_shares \
                 WHERE room_id = ?1 AND epoch = ?2 AND member = ?3",
            )
            .map_err(backend)?
            .query_row(
                params![room.as_str(), epoch_to_sql(epoch)?, member],
                |row| row.get(0),
            )
            .optional()
            .map_err(backend)?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn record_nonce(
        &self,
        nonce: &str,
        now: super::Millis,
        expires_at: super::Millis,
    ) -> StoreResult<bool> {
        check_nonce(nonce, now, expires_at)?;
        let nonce = nonce.to_owned();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            tx.execute(
                "DELETE FROM admin_nonces WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(backend)?;
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO admin_nonces (nonce, expires_at) VALUES (?1, ?2)",
                    params![nonce, expires_at],
                )
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn export_snapshot(&self) -> StoreResult<Snapshot> {
        self.with(|conn| {
            // One read transaction: in WAL mode it sees a single consistent state.
            let tx = conn.transaction().map_err(backend)?;
            let mut snapshot = Snapshot {
                users: list_users(&tx)?,
                deleted_users: list_deleted(&tx)?,
                invites: list_invites(&tx)?,
                rooms: Vec::new(),
            };
            for room in list_rooms(&tx)? {
                snapshot.rooms.push(RoomSnapshot {
                    members: list_members(&tx, &room.id)?,
                    manifests: list_manifests(&tx, &room.id)?,
                    history: list_history_shares(&tx, &room.id)?,
                    room,
                });
            }
            snapshot.normalize();
            Ok(snapshot)
        })
        .await
    }

    async fn import_snapshot(&self, snapshot: &Snapshot) -> StoreResult<()> {
        let snapshot = snapshot.clone();
        let manifests = snapshot
            .rooms
            .iter()
            .flat_map(|r| {
                r.manifests
                    .iter()
                    .map(|(_, hex)| super::decode_manifest_hex(hex))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.with(move |conn| {
            let tx = conn.transaction().map_err(backend)?;
            for user in &snapshot.users {
                insert_user(&tx, user)?;
            }
            for deleted in &snapshot.deleted_users {
                tx.execute(
                    "DELETE FROM users WHERE sign_key = ?1",
                    params![deleted.sign_key.to_hex()],
                )
                .map_err(backend)?;
                insert_deleted(&tx, deleted)?;
            }
            for invite in &snapshot.invites {
                insert_invite(&tx, invite)?;
            }
            for room in &snapshot.rooms {
                tx.execute(
                    "INSERT OR REPLACE INTO rooms (id, owner, epoch, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        room.room.id.as_str(),
                        room.room.owner.to_hex(),
                        epoch_to_sql(room.room.epoch)?,
                        room.room.created_at
                    ],
                )
                .map_err(backend)?;
                for member in &room.members {
                    tx.execute(
                        "INSERT OR IGNORE INTO members (room_id, member) VALUES (?1, ?2)",
                        params![room.room.id.as_str(), member.to_hex()],
                    )
                    .map_err(backend)?;
                }
            }
            for manifest in &manifests {
                insert_epoch(&tx, manifest)?;
            }
            for room in &snapshot.rooms {
                for (epoch, member, share) in &room.history {
                    let share = hex::decode(share)
                        .map_err(|e| StoreError::Corrupt(format!("a history share's hex: {e}")))?;
                    insert_history_share(&tx, &room.room.id, *epoch, member, &share)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use unibus::Identity;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_are_answered_while_the_writer_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db")).await.unwrap();
        let alice = Identity::generate().unwrap();
        store
            .add_user(NewUser {
                sign_key: alice.sign_public_key(),
                kex_key: alice.kex_public_key(),
                admin: false,
            })
            .await
            .unwrap();
        // The writer is held until the test releases it.
        let (holding, held) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writer = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .with(move |_| {
                        let _ = holding.send(());
                        let _ = released.recv_timeout(Duration::from_secs(30));
                        Ok(())
                    })
                    .await
            }
        });
        held.await.unwrap();
        let key = alice.sign_public_key();
        let reads = futures::future::join_all((0..READERS * 2).map(|_| store.get_user(&key)));
        let answered = tokio::time::timeout(Duration::from_secs(10), reads).await;
        release.send(()).unwrap();
        writer.await.unwrap().unwrap();
        let answered = answered.expect("the reads waited for the writer");
        assert!(answered.iter().all(Result::is_ok), "{answered:?}");
    }
}
