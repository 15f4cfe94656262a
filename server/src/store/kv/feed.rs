//! The KV change feed: a watch on each of `UNIBUS_users`, `UNIBUS_members` and `UNIBUS_rooms`,
//! each from the revision after the bucket's last when the feed opens. Every [`FEED_TICK`] the
//! feed asks the buckets' streams for their last sequence: once the watches have delivered up
//! to it, everything committed before the question has been yielded ([`FeedItem::CaughtUp`]).

use std::collections::VecDeque;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{backend, KvStore};
use crate::store::feed::{Change, ChangeFeed, FeedItem, FEED_TICK};
use crate::store::{Room, StoreError, StoreResult};

/// One watched bucket: its watch and the last revision (stream sequence) it delivered.
struct Watched {
    bucket: kv::Store,
    watch: kv::Watch,
    seen: u64,
}

impl Watched {
    async fn open(store: &KvStore, bucket: &kv::Store) -> StoreResult<Self> {
        let last = last_sequence(store, bucket).await?;
        let watch = store.op(bucket.watch_all_from_revision(last + 1)).await?;
        Ok(Self {
            bucket: bucket.clone(),
            watch,
            seen: last,
        })
    }
}

/// The bucket stream's last sequence, asked of the server now.
async fn last_sequence(store: &KvStore, bucket: &kv::Store) -> StoreResult<u64> {
    Ok(store
        .op(bucket.stream.get_info())
        .await?
        .state
        .last_sequence)
}

struct Reader {
    store: KvStore,
    users: Watched,
    members: Watched,
    rooms: Watched,
    tick: Interval,
    ready: VecDeque<FeedItem>,
}

/// Opens a feed of the changes committed from now on.
pub(super) async fn open(store: &KvStore) -> StoreResult<ChangeFeed> {
    let users = Watched::open(store, &store.users).await?;
    let members = Watched::open(store, &store.members).await?;
    let rooms = Watched::open(store, &store.rooms).await?;
    let mut tick = tokio::time::interval(FEED_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let reader = Reader {
        store: store.clone(),
        users,
        members,
        rooms,
        tick,
        ready: VecDeque::new(),
    };
    Ok(Box::pin(futures::stream::try_unfold(
        reader,
        |mut reader| async move {
            while reader.ready.is_empty() {
                reader.next().await?;
            }
            let item = reader.ready.pop_front();
            Ok(item.map(|item| (item, reader)))
        },
    )))
}

impl Reader {
    /// Waits for the next change or tick and queues what it yields.
    async fn next(&mut self) -> StoreResult<()> {
        tokio::select! {
            entry = self.users.watch.next() => {
                let entry = delivered(entry)?;
                self.users.seen = entry.revision;
                let change = entry.key.parse().map_or(Change::Reset, Change::User);
                self.ready.push_back(FeedItem::Changed(change));
            }
            entry = self.members.watch.next() => {
                let entry = delivered(entry)?;
                self.members.seen = entry.revision;
                let change = entry
                    .key
                    .split_once('.')
                    .and_then(|(room, member)| Some(Change::Member {
                        room: room.parse().ok()?,
                        member: member.parse().ok()?,
                    }))
                    .unwrap_or(Change::Reset);
                self.ready.push_back(FeedItem::Changed(change));
            }
            entry = self.rooms.watch.next() => {
                let entry = delivered(entry)?;
                self.rooms.seen = entry.revision;
                let change = entry.key.parse().map_or(Change::Reset, |room| Change::Room {
                    room,
                    epoch: room_epoch(&entry),
                });
                self.ready.push_back(FeedItem::Changed(change));
            }
            _ = self.tick.tick() => {
                let asked = Instant::now();
                let (users, members, rooms) = tokio::try_join!(
                    last_sequence(&self.store, &self.users.bucket),
                    last_sequence(&self.store, &self.members.bucket),
                    last_sequence(&self.store, &self.rooms.bucket),
                )?;
                if self.users.seen >= users && self.members.seen >= members && self.rooms.seen >= rooms {
                    self.ready.push_back(FeedItem::CaughtUp(asked));
                }
            }
        }
        Ok(())
    }
}

/// The epoch a room's entry holds, if it holds a room (not a deletion, nor a record this
/// version cannot read, after which the room is read again).
fn room_epoch(entry: &kv::Entry) -> Option<u64> {
    if entry.operation != kv::Operation::Put {
        return None;
    }
    super::bucket::decode::<Room>("room", &entry.value)
        .ok()
        .map(|room| room.epoch)
}

/// An entry a watch delivered, or why the watch is over.
fn delivered(entry: Option<Result<kv::Entry, kv::WatcherError>>) -> StoreResult<kv::Entry> {
    match entry {
        Some(Ok(entry)) => Ok(entry),
        Some(Err(e)) => Err(backend(e)),
        None => Err(StoreError::backend(
            "jetstream",
            "the bucket's watch ended".to_string(),
        )),
    }
}
