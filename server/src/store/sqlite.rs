//! The SQLite backend: the embedded default.
//!
//! One database file in WAL mode. Migrations are compiled into the binary (one SQL file per
//! migration under `server/migrations/`) and applied at open, tracked by `PRAGMA user_version`.
//! Every call runs on tokio's blocking pool, never on the async worker threads. Invite
//! redemption is one `IMMEDIATE` transaction guarded by `used = 0`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use unibus::manifest::SignedManifest;
use unibus::sealing::SealedRoomKey;
use unibus::{InviteToken, KexPublicKey, RoomId, SignPublicKey};

use super::rules::{active_user, mint_invite, redeem_step, redeemed_user, RedeemStep};
use super::{
    invite_id, now_millis, DeletedUser, EpochKey, Invite, InviteStatus, NewInvite, NewUser, Room,
    RoomSnapshot, Snapshot, Store, StoreError, StoreResult, User, UserStatus,
};

/// The migrations, in order. Migration `n` brings `user_version` from `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/001_init.sql"),
    include_str!("../../migrations/002_admin_nonces.sql"),
    include_str!("../../migrations/003_deleted_users.sql"),
];

/// The SQLite store. Cloning shares the connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

fn corrupt(what: &str) -> impl Fn(unibus::keys::KeyError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("stored {what}: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, enables WAL and applies pending
    /// migrations.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        let open_path = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> StoreResult<Connection> {
            let mut conn = Connection::open(&open_path).map_err(backend)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(backend)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(backend)?;
            conn.pragma_update(None, "foreign_keys", "ON")
                .map_err(backend)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(backend)?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("open task: {e}")))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
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

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock poisons it; the connection itself is still sound
            // (SQLite rolls back the open transaction), so keep using it.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("sqlite task: {e}")))?
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: usize = conn
        .pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
        .map_err(backend)? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this build knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
    }
    Ok(())
}

/// A stored epoch: never negative in a sound database.
fn epoch_from_sql(epoch: i64) -> StoreResult<u64> {
    u64::try_from(epoch).map_err(|_| StoreError::Corrupt(format!("stored epoch {epoch}")))
}

fn epoch_to_sql(epoch: u64) -> StoreResult<i64> {
    i64::try_from(epoch).map_err(|_| StoreError::Invalid(format!("epoch {epoch} is too large")))
}

const USER_COLUMNS: &str = "sign_key, kex_key, admin, status, created_at, invite_id";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<StoreResult<User>> {
    let sign: String = row.get(0)?;
    let kex: String = row.get(1)?;
    let status: String = row.get(3)?;
    let admin: bool = row.get(2)?;
    let created_at: i64 = row.get(4)?;
    let invite_id: Option<String> = row.get(5)?;
    Ok((|| {
        Ok(User {
            sign_key: SignPublicKey::from_hex(&sign).map_err(corrupt("signing key"))?,
            kex_key: KexPublicKey::from_hex(&kex).map_err(corrupt("key-exchange key"))?,
            admin,
            status: match status.as_str() {
                "active" => UserStatus::Active,
                _ => UserStatus::Revoked,
            },
            created_at,
            invite_id,
        })
    })())
}

const INVITE_COLUMNS: &str =
    "id, admin, created_at, created_by, expires_at, used, used_at, used_by, cancelled_at";

fn invite_from_row(row: &Row<'_>) -> rusqlite::Result<StoreResult<Invite>> {
    let created_by: Option<String> = row.get(3)?;
    // A missing expiry reads as "expired at the epoch": fail closed.
    let expires_at: Option<i64> = row.get(4)?;
    let used: bool = row.get(5)?;
    let used_at: Option<i64> = row.get(6)?;
    let used_by: Option<String> = row.get(7)?;
    let id: String = row.get(0)?;
    let admin: bool = row.get(1)?;
    let created_at: i64 = row.get(2)?;
    let cancelled_at: Option<i64> = row.get(8)?;
    Ok((|| {
        Ok(Invite {
            id,
            admin,
            created_at,
            created_by: created_by
                .map(|k| SignPublicKey::from_hex(&k).map_err(corrupt("invite creator")))
                .transpose()?,
            expires_at: expires_at.unwrap_or(0),
            // `used` is the guard column; a used row without a time still reads as used.
            used_at: used_at.or(if used { Some(0) } else { None }),
            used_by: used_by
                .map(|k| SignPublicKey::from_hex(&k).map_err(corrupt("invite user")))
                .transpose()?,
            cancelled_at,
        })
    })())
}

fn room_from_row(row: &Row<'_>) -> rusqlite::Result<StoreResult<Room>> {
    let id: String = row.get(0)?;
    let owner: String = row.get(1)?;
    let epoch: i64 = row.get(2)?;
    let created_at: i64 = row.get(3)?;
    Ok((|| {
        Ok(Room {
            id: RoomId::new(&id)
                .map_err(|e| StoreError::Corrupt(format!("stored room id: {e}")))?,
            owner: SignPublicKey::from_hex(&owner).map_err(corrupt("room owner"))?,
            epoch: epoch_from_sql(epoch)?,
            created_at,
        })
    })())
}

fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: fn(&Row<'_>) -> rusqlite::Result<StoreResult<T>>,
) -> StoreResult<Option<T>> {
    conn.query_row(sql, params, map)
        .optional()
        .map_err(backend)?
        .transpose()
}

fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: fn(&Row<'_>) -> rusqlite::Result<StoreResult<T>>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt.query_map(params, map).map_err(backend)?;
    rows.map(|r| r.map_err(backend)?).collect()
}

fn get_user(conn: &Connection, key: &SignPublicKey) -> StoreResult<Option<User>> {
    one(
        conn,
        &format!("SELECT {USER_COLUMNS} FROM users WHERE sign_key = ?1"),
        params![key.to_hex()],
        user_from_row,
    )
}

fn is_deleted(conn: &Connection, key: &SignPublicKey) -> StoreResult<bool> {
    conn.query_row(
        "SELECT 1 FROM deleted_users WHERE sign_key = ?1",
        params![key.to_hex()],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(backend)
}

fn insert_deleted(conn: &Connection, deleted: &DeletedUser) -> StoreResult<()> {
    conn.execute(
        "INSERT OR REPLACE INTO deleted_users (sign_key, deleted_at) VALUES (?1, ?2)",
        params![deleted.sign_key.to_hex(), deleted.deleted_at],
    )
    .map_err(backend)?;
    Ok(())
}

fn list_deleted(conn: &Connection) -> StoreResult<Vec<DeletedUser>> {
    all(
        conn,
        "SELECT sign_key, deleted_at FROM deleted_users ORDER BY sign_key",
        [],
        |row| {
            let key: String = row.get(0)?;
            let deleted_at: i64 = row.get(1)?;
            Ok(SignPublicKey::from_hex(&key)
                .map_err(corrupt("deleted user key"))
                .map(|sign_key| DeletedUser {
                    sign_key,
                    deleted_at,
                }))
        },
    )
}

fn insert_user(conn: &Connection, user: &User) -> StoreResult<()> {
    conn.execute(
        &format!("INSERT OR REPLACE INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            user.sign_key.to_hex(),
            user.kex_key.to_hex(),
            user.admin,
            match user.status {
                UserStatus::Active => "active",
                UserStatus::Revoked => "revoked",
            },
            user.created_at,
            user.invite_id,
        ],
    )
    .map_err(backend)?;
    Ok(())
}

fn get_invite(conn: &Connection, id: &str) -> StoreResult<Option<Invite>> {
    one(
        conn,
        &format!("SELECT {INVITE_COLUMNS} FROM invites WHERE id = ?1"),
        params![id],
        invite_from_row,
    )
}

fn insert_invite(conn: &Connection, invite: &Invite) -> StoreResult<()> {
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO invites ({INVITE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ),
        params![
            invite.id,
            invite.admin,
            invite.created_at,
            invite.created_by.map(|k| k.to_hex()),
            invite.expires_at,
            invite.used_at.is_some() || invite.used_by.is_some(),
            invite.used_at,
            invite.used_by.map(|k| k.to_hex()),
            invite.cancelled_at,
        ],
    )
    .map_err(backend)?;
    Ok(())
}

fn get_room(conn: &Connection, id: &RoomId) -> StoreResult<Option<Room>> {
    one(
        conn,
        "SELECT id, owner, epoch, created_at FROM rooms WHERE id = ?1",
        params![id.as_str()],
        room_from_row,
    )
}

/// Inserts a manifest and its per-member sealed copies (overwriting, for imports).
fn insert_epoch(conn: &Connection, manifest: &SignedManifest) -> StoreResult<()> {
    let contents = manifest.unverified();
    let epoch = epoch_to_sql(contents.epoch)?;
    conn.execute(
        "INSERT OR REPLACE INTO manifests (room_id, epoch, manifest) VALUES (?1, ?2, ?3)",
        params![contents.room.as_str(), epoch, manifest.to_bytes()],
    )
    .map_err(backend)?;
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO room_keys (room_id, member, epoch, sealed) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(backend)?;
    for entry in &contents.entries {
        stmt.execute(params![
            contents.room.as_str(),
            entry.member.to_hex(),
            epoch,
            entry.sealed.to_bytes().as_slice()
        ])
        .map_err(backend)?;
    }
    Ok(())
}

fn list_users(conn: &Connection) -> StoreResult<Vec<User>> {
    all(
        conn,
        &format!("SELECT {USER_COLUMNS} FROM users ORDER BY sign_key"),
        [],
        user_from_row,
    )
}

fn list_invites(conn: &Connection) -> StoreResult<Vec<Invite>> {
    all(
        conn,
        &format!("SELECT {INVITE_COLUMNS} FROM invites ORDER BY id"),
        [],
        invite_from_row,
    )
}

fn list_rooms(conn: &Connection) -> StoreResult<Vec<Room>> {
    all(
        conn,
        "SELECT id, owner, epoch, created_at FROM rooms ORDER BY id",
        [],
        room_from_row,
    )
}

fn list_members(conn: &Connection, room: &RoomId) -> StoreResult<Vec<SignPublicKey>> {
    all(
        conn,
        "SELECT member FROM members WHERE room_id = ?1 ORDER BY member",
        params![room.as_str()],
        |row| Ok(parse_member(row.get(0)?)),
    )
}

/// Every epoch's manifest of a room, as `(epoch, hex)`.
fn list_manifests(conn: &Connection, room: &RoomId) -> StoreResult<Vec<(u64, String)>> {
    all(
        conn,
        "SELECT epoch, manifest FROM manifests WHERE room_id = ?1 ORDER BY epoch",
        params![room.as_str()],
        |row| {
            let epoch: i64 = row.get(0)?;
            let manifest: Vec<u8> = row.get(1)?;
            Ok(epoch_from_sql(epoch).map(|epoch| (epoch, hex::encode(manifest))))
        },
    )
}

fn parse_member(text: String) -> StoreResult<SignPublicKey> {
    SignPublicKey::from_hex(&text).map_err(corrupt("member key"))
}

#[async_trait]
impl Store for SqliteStore {
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
        self.with(move |conn| get_user(conn, &key)?.ok_or(StoreError::NotFound))
            .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.with(|conn| list_users(conn)).await
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
        self.with(move |conn| get_invite(conn, &id)?.ok_or(StoreError::NotFound))
            .await
    }

    async fn list_invites(&self) -> StoreResult<Vec<Invite>> {
        self.with(|conn| list_invites(conn)).await
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
            let deleted = is_deleted(&tx, &sign_key)?;
            let outcome = match redeem_step(&invite, &sign_key, deleted, now)? {
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
        self.with(move |conn| get_room(conn, &id)?.ok_or(StoreError::NotFound))
            .await
    }

    async fn list_rooms(&self) -> StoreResult<Vec<Room>> {
        self.with(|conn| list_rooms(conn)).await
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
        self.with(move |conn| {
            if get_room(conn, &room)?.is_none() {
                return Err(StoreError::NotFound);
            }
            list_members(conn, &room)
        })
        .await
    }

    async fn is_member(&self, room: &RoomId, member: &SignPublicKey) -> StoreResult<bool> {
        let (room, member) = (room.clone(), member.to_hex());
        self.with(move |conn| {
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
        self.with(move |conn| {
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

    async fn sealed_key(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
        epoch: Option<u64>,
    ) -> StoreResult<EpochKey> {
        let (room, member) = (room.clone(), member.to_hex());
        self.with(move |conn| {
            let epoch = match epoch {
                Some(epoch) => epoch,
                None => get_room(conn, &room)?.ok_or(StoreError::NotFound)?.epoch,
            };
            let sealed: Vec<u8> = conn
                .query_row(
                    "SELECT sealed FROM room_keys WHERE room_id = ?1 AND member = ?2 AND epoch = ?3",
                    params![room.as_str(), member, epoch_to_sql(epoch)?],
                    |row| row.get(0),
                )
                .optional()
                .map_err(backend)?
                .ok_or(StoreError::NotFound)?;
            let sealed = SealedRoomKey::from_bytes(&sealed)
                .map_err(|e| StoreError::Corrupt(format!("stored sealed key: {e}")))?;
            Ok(EpochKey { epoch, sealed })
        })
        .await
    }

    async fn manifest(&self, room: &RoomId, epoch: u64) -> StoreResult<Vec<u8>> {
        let room = room.clone();
        self.with(move |conn| {
            conn.query_row(
                "SELECT manifest FROM manifests WHERE room_id = ?1 AND epoch = ?2",
                params![room.as_str(), epoch_to_sql(epoch)?],
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
            tx.commit().map_err(backend)
        })
        .await
    }
}

fn create_redeemed_user(
    conn: &Connection,
    invite: &Invite,
    sign_key: SignPublicKey,
    kex_key: KexPublicKey,
    now: super::Millis,
) -> StoreResult<User> {
    if get_user(conn, &sign_key)?.is_some() {
        return Err(StoreError::UserExists);
    }
    let user = redeemed_user(invite, sign_key, kex_key, now);
    insert_user(conn, &user)?;
    Ok(user)
}
