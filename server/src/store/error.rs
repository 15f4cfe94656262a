//! The store's error type.

use std::time::Duration;

/// What went wrong in a store operation. Security decisions treat every variant as "deny".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such record.
    #[error("not found")]
    NotFound,
    /// A user with this signing key already exists.
    #[error("a user with this signing key already exists")]
    UserExists,
    /// The signing key belonged to a user who was deleted. A deleted key never comes back: the
    /// person needs a new identity (new keys) and a new invite.
    #[error("this signing key belonged to a deleted user and cannot be registered again; create a new identity and ask for a new invite")]
    UserDeleted,
    /// A room with this id already exists.
    #[error("a room with this id already exists")]
    RoomExists,
    /// No invite has this token.
    #[error("the invite is unknown")]
    InviteUnknown,
    /// The invite is past its expiry.
    #[error("the invite has expired")]
    InviteExpired,
    /// The invite was already redeemed by another key.
    #[error("the invite was already used")]
    InviteUsed,
    /// The invite was cancelled.
    #[error("the invite was cancelled")]
    InviteCancelled,
    /// A rekey was based on an epoch that is no longer the room's latest.
    #[error("the room is at epoch {actual}, not {expected}; fetch the room and rekey again")]
    EpochConflict {
        /// The previous epoch the rekey claimed.
        expected: u64,
        /// The room's actual epoch.
        actual: u64,
    },
    /// An argument is invalid: the caller's mistake.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A stored record cannot be read: the store is damaged, or was written by another
    /// version. Not the caller's fault; report it to the operator.
    #[error(
        "a stored record cannot be read ({0}); the store may be damaged or from another version"
    )]
    Corrupt(String),
    /// The backend did not answer within the op timeout.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend failed (I/O, SQLite, NATS). Retry later; the message says what failed.
    #[error("store backend error: {0}")]
    Backend(String),
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;
