//! The SQLite change feed: the `changes` table the triggers of migrations 005 and 006 fill, read on a
//! connection of its own (WAL lets it read beside the writers) every [`FEED_TICK`].

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags};
use tokio::time::Instant;

use super::rows::backend;
use crate::store::feed::{Change, ChangeFeed, FeedItem, FEED_REPLAY_LIMIT, FEED_TICK};
use crate::store::{StoreError, StoreResult};

/// Rows read per look.
const PAGE: i64 = 1_000;

/// A feed's place: the reader connection, the last sequence yielded, and what is ready to go.
struct Reader {
    conn: Arc<Mutex<Connection>>,
    after: i64,
    ready: VecDeque<FeedItem>,
    /// Whether the next look waits a tick first (not the first look, nor after a full page).
    wait: bool,
}

/// Opens a feed of the changes committed from now on to the database at `path`.
pub(super) async fn open(path: &Path) -> StoreResult<ChangeFeed> {
    let path = path.to_path_buf();
    let (conn, after) = tokio::task::spawn_blocking(move || -> StoreResult<_> {
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        let after = latest(&conn)?;
        Ok((conn, after))
    })
    .await
    .map_err(|e| StoreError::backend("sqlite feed task", e))??;
    let reader = Reader {
        conn: Arc::new(Mutex::new(conn)),
        after,
        ready: VecDeque::new(),
        wait: false,
    };
    Ok(Box::pin(futures::stream::try_unfold(
        reader,
        |mut reader| async move {
            while reader.ready.is_empty() {
                if reader.wait {
                    tokio::time::sleep(FEED_TICK).await;
                }
                reader.look().await?;
            }
            let item = reader.ready.pop_front();
            Ok(item.map(|item| (item, reader)))
        },
    )))
}

/// The newest sequence number in the feed (0 if it is empty).
fn latest(conn: &Connection) -> StoreResult<i64> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |row| {
        row.get(0)
    })
    .map_err(backend)
}

impl Reader {
    /// Reads the changes after `after`: a page of them, or a reset when too many are waiting.
    async fn look(&mut self) -> StoreResult<()> {
        let started = Instant::now();
        let conn = Arc::clone(&self.conn);
        let after = self.after;
        let (rows, newest) = tokio::task::spawn_blocking(move || -> StoreResult<_> {
            // Only this reader uses the connection; a poisoned lock still holds a sound one.
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let newest = latest(&conn)?;
            if newest - after > FEED_REPLAY_LIMIT as i64 || newest < after {
                return Ok((None, newest));
            }
            let mut statement = conn
                .prepare_cached(
                    "SELECT seq, kind, key, room_id, epoch FROM changes WHERE seq > ?1 \
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = statement
                .query_map(params![after, PAGE], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<String>>(3)?,
                        row.get::<_, Option<i64>>(4)?,
                    ))
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            Ok((Some(rows), newest))
        })
        .await
        .map_err(|e| StoreError::backend("sqlite feed task", e))??;
        let Some(rows) = rows else {
            // Too far behind, or the table was replaced under us: start over from the present.
            self.ready.push_back(FeedItem::Changed(Change::Reset));
            self.ready.push_back(FeedItem::CaughtUp(started));
            self.after = newest;
            self.wait = true;
            return Ok(());
        };
        let full = rows.len() as i64 == PAGE;
        for (seq, kind, key, room, epoch) in rows {
            self.after = seq;
            self.ready.push_back(FeedItem::Changed(change(
                &kind,
                &key,
                room.as_deref(),
                epoch,
            )));
        }
        if !full {
            self.ready.push_back(FeedItem::CaughtUp(started));
        }
        self.wait = !full;
        Ok(())
    }
}

/// The change a row records. A row that cannot be read (written by another version) is a
/// reset: the reader forgets everything rather than miss a change.
fn change(kind: &str, key: &str, room: Option<&str>, epoch: Option<i64>) -> Change {
    if kind == "room" {
        let Ok(room) = key.parse() else {
            return Change::Reset;
        };
        // A negative epoch cannot be stored; read as unknown, the room is read again.
        let epoch = epoch.and_then(|e| u64::try_from(e).ok());
        return Change::Room { room, epoch };
    }
    let Ok(key) = key.parse() else {
        return Change::Reset;
    };
    match (kind, room.map(str::parse)) {
        ("user", _) => Change::User(key),
        ("member", Some(Ok(room))) => Change::Member { room, member: key },
        _ => Change::Reset,
    }
}
