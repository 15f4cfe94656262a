//! Moving the control plane from SQLite to JetStream KV, the one-time data move when a
//! deployment outgrows one machine.
//!
//! [`migrate_sqlite_to_kv`] first takes a consistent copy of the database with `VACUUM INTO`,
//! exports the whole control plane from that copy, and writes it into the KV buckets as it is:
//! epochs, statuses, times and every manifest preserved. Every write is an overwrite, so running
//! it again converges to the same state.

use std::path::{Path, PathBuf};

use super::{KvStore, SqliteStore, Store, StoreError, StoreResult};

/// What a migration copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The backup taken first, if one was.
    pub backup: Option<PathBuf>,
    /// Users copied.
    pub users: usize,
    /// Deleted users' tombstones copied (their keys stay retired).
    pub deleted_users: usize,
    /// Invites copied.
    pub invites: usize,
    /// Rooms copied.
    pub rooms: usize,
    /// Epoch manifests copied, over all rooms.
    pub epochs: usize,
    /// History shares copied, over all rooms.
    pub history_shares: usize,
}

/// Writes a consistent copy of the database at `dest` (which must not exist).
pub async fn backup_sqlite(store: &SqliteStore, dest: &Path) -> StoreResult<()> {
    if dest.exists() {
        return Err(StoreError::Invalid(format!(
            "backup destination {} already exists",
            dest.display()
        )));
    }
    store.backup_to(dest).await
}

/// Copies everything in `sqlite` into `kv`. With `backup`, the copy is taken there first (with
/// `VACUUM INTO`) and the migration reads from it, so what is migrated is exactly what was
/// backed up.
pub async fn migrate_sqlite_to_kv(
    sqlite: &SqliteStore,
    kv: &KvStore,
    backup: Option<&Path>,
) -> StoreResult<MigrationReport> {
    let snapshot = match backup {
        Some(dest) => {
            backup_sqlite(sqlite, dest).await?;
            SqliteStore::open(dest).await?.export_snapshot().await?
        }
        None => sqlite.export_snapshot().await?,
    };
    kv.import_snapshot(&snapshot).await?;
    Ok(MigrationReport {
        backup: backup.map(Path::to_path_buf),
        users: snapshot.users.len(),
        deleted_users: snapshot.deleted_users.len(),
        invites: snapshot.invites.len(),
        rooms: snapshot.rooms.len(),
        epochs: snapshot.rooms.iter().map(|r| r.manifests.len()).sum(),
        history_shares: snapshot.rooms.iter().map(|r| r.history.len()).sum(),
    })
}
