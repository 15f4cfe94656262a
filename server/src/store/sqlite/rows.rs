//! Rows and records: how each record is read from and written to its table, and the
//! statements the [`Store`](crate::store::Store) operations share.

use rusqlite::{params, Connection, OptionalExtension, Row};
use unibus::manifest::SignedManifest;
use unibus::{KexPublicKey, RoomId, SignPublicKey};

use crate::store::epoch::{rebuild_manifest, StoredEpoch};
use crate::store::rules::{redeemed_user, Retired};
use crate::store::{DeletedUser, Invite, Millis, Room, StoreError, StoreResult, User, UserStatus};

pub(super) fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::backend("sqlite", e)
}

pub(super) fn corrupt(what: &str) -> impl Fn(unibus::keys::KeyError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("stored {what}: {e}"))
}

/// A stored epoch: never negative in a sound database.
pub(super) fn epoch_from_sql(epoch: i64) -> StoreResult<u64> {
    u64::try_from(epoch).map_err(|_| StoreError::Corrupt(format!("stored epoch {epoch}")))
}

pub(super) fn epoch_to_sql(epoch: u64) -> StoreResult<i64> {
    i64::try_from(epoch).map_err(|_| StoreError::Invalid(format!("epoch {epoch} is too large")))
}

pub(super) const USER_COLUMNS: &str = "sign_key, kex_key, admin, status, created_at, invite_id";

pub(super) fn user_from_row(row: &Row<'_>) -> rusqlite::Result<StoreResult<User>> {
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

pub(super) const INVITE_COLUMNS: &str =
    "id, admin, created_at, created_by, expires_at, used, used_at, used_by, cancelled_at";

pub(super) fn invite_from_row(row: &Row<'_>) -> rusqlite::Result<StoreResult<Invite>> {
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

pub(super) fn room_from_row(row: &Row<'_>) -> rusqlite::Result<StoreResult<Room>> {
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

pub(super) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: fn(&Row<'_>) -> rusqlite::Result<StoreResult<T>>,
) -> StoreResult<Option<T>> {
    conn.prepare_cached(sql)
        .map_err(backend)?
        .query_row(params, map)
        .optional()
        .map_err(backend)?
        .transpose()
}

pub(super) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: fn(&Row<'_>) -> rusqlite::Result<StoreResult<T>>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt.query_map(params, map).map_err(backend)?;
    rows.map(|r| r.map_err(backend)?).collect()
}

pub(super) fn get_user(conn: &Connection, key: &SignPublicKey) -> StoreResult<Option<User>> {
    one(
        conn,
        &format!("SELECT {USER_COLUMNS} FROM users WHERE sign_key = ?1"),
        params![key.to_hex()],
        user_from_row,
    )
}

pub(super) fn is_deleted(conn: &Connection, key: &SignPublicKey) -> StoreResult<bool> {
    conn.query_row(
        "SELECT 1 FROM deleted_users WHERE sign_key = ?1",
        params![key.to_hex()],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
    .map_err(backend)
}

/// Whether `key` belongs to a revoked user or belonged to a deleted one.
pub(super) fn retired(conn: &Connection, key: &SignPublicKey) -> StoreResult<Option<Retired>> {
    if is_deleted(conn, key)? {
        return Ok(Some(Retired::Deleted));
    }
    Ok(get_user(conn, key)?
        .filter(|user| user.status == UserStatus::Revoked)
        .map(|_| Retired::Revoked))
}

pub(super) fn insert_deleted(conn: &Connection, deleted: &DeletedUser) -> StoreResult<()> {
    conn.execute(
        "INSERT OR REPLACE INTO deleted_users (sign_key, deleted_at) VALUES (?1, ?2)",
        params![deleted.sign_key.to_hex(), deleted.deleted_at],
    )
    .map_err(backend)?;
    Ok(())
}

pub(super) fn list_deleted(conn: &Connection) -> StoreResult<Vec<DeletedUser>> {
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

pub(super) fn insert_user(conn: &Connection, user: &User) -> StoreResult<()> {
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

pub(super) fn get_invite(conn: &Connection, id: &str) -> StoreResult<Option<Invite>> {
    one(
        conn,
        &format!("SELECT {INVITE_COLUMNS} FROM invites WHERE id = ?1"),
        params![id],
        invite_from_row,
    )
}

pub(super) fn insert_invite(conn: &Connection, invite: &Invite) -> StoreResult<()> {
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

pub(super) fn get_room(conn: &Connection, id: &RoomId) -> StoreResult<Option<Room>> {
    one(
        conn,
        "SELECT id, owner, epoch, created_at FROM rooms WHERE id = ?1",
        params![id.as_str()],
        room_from_row,
    )
}

/// Inserts a manifest and its per-member sealed copies (overwriting, for imports).
pub(super) fn insert_epoch(conn: &Connection, manifest: &SignedManifest) -> StoreResult<()> {
    let contents = manifest.unverified();
    let (room, epoch) = (contents.room.as_str(), epoch_to_sql(contents.epoch)?);
    let stored = StoredEpoch::of(manifest);
    conn.execute(
        "INSERT OR REPLACE INTO epoch_heads (room_id, epoch, head) VALUES (?1, ?2, ?3)",
        params![room, epoch, stored.head],
    )
    .map_err(backend)?;
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO epoch_tails (room_id, epoch, member, tail) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(backend)?;
    for (member, tail) in &stored.tails {
        stmt.execute(params![room, epoch, member.to_hex(), tail])
            .map_err(backend)?;
    }
    Ok(())
}

/// The whole manifest of `epoch` of `room`, rebuilt from its head and tails.
/// The signed head of `epoch` of `room`, or [`StoreError::NotFound`].
pub(super) fn get_head(conn: &Connection, room: &RoomId, epoch: u64) -> StoreResult<Vec<u8>> {
    conn.query_row(
        "SELECT head FROM epoch_heads WHERE room_id = ?1 AND epoch = ?2",
        params![room.as_str(), epoch_to_sql(epoch)?],
        |row| row.get(0),
    )
    .optional()
    .map_err(backend)?
    .ok_or(StoreError::NotFound)
}

pub(super) fn get_manifest(
    conn: &Connection,
    room: &RoomId,
    epoch: u64,
) -> StoreResult<SignedManifest> {
    let head = get_head(conn, room, epoch)?;
    let epoch = epoch_to_sql(epoch)?;
    let tails = all(
        conn,
        "SELECT tail FROM epoch_tails WHERE room_id = ?1 AND epoch = ?2",
        params![room.as_str(), epoch],
        |row| Ok(Ok(row.get::<_, Vec<u8>>(0)?)),
    )?;
    rebuild_manifest(&head, tails)
}

pub(super) fn list_users(conn: &Connection) -> StoreResult<Vec<User>> {
    all(
        conn,
        &format!("SELECT {USER_COLUMNS} FROM users ORDER BY sign_key"),
        [],
        user_from_row,
    )
}

pub(super) fn list_invites(conn: &Connection) -> StoreResult<Vec<Invite>> {
    all(
        conn,
        &format!("SELECT {INVITE_COLUMNS} FROM invites ORDER BY id"),
        [],
        invite_from_row,
    )
}

pub(super) fn list_rooms(conn: &Connection) -> StoreResult<Vec<Room>> {
    all(
        conn,
        "SELECT id, owner, epoch, created_at FROM rooms ORDER BY id",
        [],
        room_from_row,
    )
}

pub(super) fn list_members(conn: &Connection, room: &RoomId) -> StoreResult<Vec<SignPublicKey>> {
    all(
        conn,
        "SELECT member FROM members WHERE room_id = ?1 ORDER BY member",
        params![room.as_str()],
        |row| Ok(parse_member(row.get(0)?)),
    )
}

/// Every epoch's manifest of a room, as `(epoch, hex)`.
pub(super) fn list_manifests(conn: &Connection, room: &RoomId) -> StoreResult<Vec<(u64, String)>> {
    let epochs = all(
        conn,
        "SELECT epoch FROM epoch_heads WHERE room_id = ?1 ORDER BY epoch",
        params![room.as_str()],
        |row| Ok(epoch_from_sql(row.get(0)?)),
    )?;
    epochs
        .into_iter()
        .map(|epoch| {
            let manifest = get_manifest(conn, room, epoch)?;
            Ok((epoch, hex::encode(manifest.to_bytes())))
        })
        .collect()
}

pub(super) fn parse_member(text: String) -> StoreResult<SignPublicKey> {
    SignPublicKey::from_hex(&text).map_err(corrupt("member key"))
}

pub(super) fn create_redeemed_user(
    conn: &Connection,
    invite: &Invite,
    sign_key: SignPublicKey,
    kex_key: KexPublicKey,
    now: Millis,
) -> StoreResult<User> {
    if get_user(conn, &sign_key)?.is_some() {
        return Err(StoreError::UserExists);
    }
    let user = redeemed_user(invite, sign_key, kex_key, now);
    insert_user(conn, &user)?;
    Ok(user)
}

/// Stores (or replaces) the history share of `room`'s `epoch` for `member`.
pub(super) fn insert_history_share(
    conn: &Connection,
    room: &RoomId,
    epoch: u64,
    member: &SignPublicKey,
    share: &[u8],
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO history_shares (room_id, epoch, member, share) \
         VALUES (?1, ?2, ?3, ?4)",
    )
    .map_err(backend)?
    .execute(params![
        room.as_str(),
        epoch_to_sql(epoch)?,
        member.to_hex(),
        share
    ])
    .map_err(backend)?;
    Ok(())
}

/// Every history share of `room`, for a snapshot: epoch, member, hex of the share.
pub(super) fn list_history_shares(
    conn: &Connection,
    room: &RoomId,
) -> StoreResult<Vec<(u64, SignPublicKey, String)>> {
    all(
        conn,
        "SELECT epoch, member, share FROM history_shares WHERE room_id = ?1 \
         ORDER BY epoch, member",
        params![room.as_str()],
        |row| {
            let (epoch, member, share): (i64, String, Vec<u8>) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            Ok((|| {
                Ok((
                    epoch_from_sql(epoch)?,
                    parse_member(member)?,
                    hex::encode(share),
                ))
            })())
        },
    )
}
