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
