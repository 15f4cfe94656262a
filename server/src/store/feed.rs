//! The change feed: what changed in the records that authorization and key fetches depend on
//! (users, memberships, and rooms with their latest epoch), for those who keep copies of them
//! or act on them: the authorization cache
//! ([`CachedStore`](super::CachedStore)) and the revocation of sessions
//! ([`Revoker`](crate::auth::revocation::Revoker)).
//!
//! A feed names what changed, not the new value: a reader that cares reads the record again.
//! The one exception is a room's latest epoch, which a room's change carries when the feed
//! knows it, so that a reader keeping epochs need not read the room after every rekey.
//! Every writer feeds it, whichever process it is (membershipd, the CLI, another instance):
//! SQLite through triggers in the writing transaction, JetStream KV through a watch on its
//! buckets. Besides changes, a feed says when it has caught up ([`FeedItem::CaughtUp`]), so a
//! reader can tell a quiet feed from a stalled one and fail closed on the second.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;
use unibus::{RoomId, SignPublicKey};

use super::StoreResult;

/// One change to a record that authorization depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// The user with this key was created, revoked, deleted or otherwise rewritten.
    User(SignPublicKey),
    /// `member` joined or left `room` (including a room's owner when it is created).
    Member {
        /// The room.
        room: RoomId,
        /// The member.
        member: SignPublicKey,
    },
    /// The room's record was created or rewritten (a new epoch moves it).
    Room {
        /// The room.
        room: RoomId,
        /// The room's latest epoch as this change left it; `None` when the feed does not know
        /// it (the room is gone, or the change was recorded before feeds carried epochs): read
        /// the room again.
        epoch: Option<u64>,
    },
    /// Changes were missed (the feed fell too far behind, or a bulk import rewrote many
    /// records): forget every copy.
    Reset,
}

/// What a feed yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A change. Changes to one record come in commit order; changes to users and to
    /// memberships may interleave differently (KV watches them apart). A change may be named
    /// more than once, never not at all.
    Changed(Change),
    /// Every change committed before this instant has been yielded. Feeds say this at least
    /// every [`FEED_TICK`] while they work.
    CaughtUp(Instant),
}

/// A change feed: an endless stream that yields an error when it breaks (its reader may open a
/// new one, and must then assume it missed changes).
pub type ChangeFeed = Pin<Box<dyn Stream<Item = StoreResult<FeedItem>> + Send>>;

/// How often a feed looks for new changes when it has none (and says it caught up).
pub const FEED_TICK: Duration = Duration::from_millis(100);

/// A feed further behind than this many changes yields [`Change::Reset`] and jumps to the
/// present instead of replaying them one by one.
pub const FEED_REPLAY_LIMIT: u64 = 10_000;
