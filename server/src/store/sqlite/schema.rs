//! The schema: one SQL file per migration under `server/migrations/`, compiled into the binary
//! and applied at open, tracked by `PRAGMA user_version`.

use rusqlite::Connection;

use super::rows::backend;
use crate::store::{StoreError, StoreResult};

/// The migrations, in order. Migration `n` brings `user_version` from `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/001_init.sql"),
    include_str!("../../../migrations/002_admin_nonces.sql"),
    include_str!("../../../migrations/003_deleted_users.sql"),
    include_str!("../../../migrations/004_manifest_v2.sql"),
    include_str!("../../../migrations/005_change_feed.sql"),
    include_str!("../../../migrations/006_room_changes.sql"),
    include_str!("../../../migrations/007_room_change_epochs.sql"),
    include_str!("../../../migrations/008_history_shares.sql"),
];

pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(conn: &Connection) -> Vec<(i64, String, String)> {
        let mut statement = conn
            .prepare("SELECT seq, kind, key FROM changes ORDER BY seq")
            .unwrap();
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn widening_the_feed_to_rooms_keeps_its_rows_and_their_places() {
        let mut conn = Connection::open_in_memory().unwrap();
        // A database as migration 005 left it, with a user's change in its feed.
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        let (user, room) = ("a".repeat(64), "general");
        conn.execute(
            "INSERT INTO users (sign_key, kex_key, status, created_at) VALUES (?1, ?1, 'active', 0)",
            [&user],
        )
        .unwrap();
        let before = changes(&conn);
        assert_eq!(before, vec![(1, "user".into(), user.clone())]);

        migrate(&mut conn).unwrap();
        assert_eq!(changes(&conn), before, "a reader's place stays valid");
        conn.execute(
            "INSERT INTO rooms (id, owner, created_at) VALUES (?1, ?2, 0)",
            [room, &user],
        )
        .unwrap();
        conn.execute("UPDATE rooms SET epoch = 1 WHERE id = ?1", [room])
            .unwrap();
        conn.execute("UPDATE users SET status = 'revoked'", [])
            .unwrap();
        let after: Vec<(i64, String, String)> = changes(&conn);
        assert_eq!(
            after,
            vec![
                (1, "user".into(), user.clone()),
                (2, "room".into(), room.into()),
                (3, "room".into(), room.into()),
                (4, "user".into(), user),
            ]
        );
        // Room changes carry the room's epoch after the change; others none.
        let epochs: Vec<Option<i64>> = conn
            .prepare("SELECT epoch FROM changes ORDER BY seq")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(epochs, vec![None, Some(0), Some(1), None]);
    }
}
