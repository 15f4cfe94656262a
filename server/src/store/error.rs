//! The store's error type.

use std::sync::Arc;
use std::time::Duration;

/// The backend's own error behind a [`StoreError::Backend`] (a `rusqlite::Error`, an
/// async-nats error, an I/O error), shared so that the store error stays cheap to clone.
pub type BackendCause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store operation. Security decisions treat every variant as "deny".
///
/// Two errors are equal when they are the same variant with the same fields; two
/// [`StoreError::Backend`] errors when they say the same (`what` and the cause's message).
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The signing key belongs to a user an admin revoked. Its record stays, and it may not
    /// register again, by any invite.
    #[error("this signing key belongs to a revoked user and cannot register again; only an admin can change that")]
    UserRevoked,
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
    /// The backend failed (I/O, SQLite, NATS). Retry later. `what` says which part failed;
    /// the backend's own error is the [`source`](std::error::Error::source), and the message
    /// repeats it, as async-nats's errors do.
    #[error("store backend error ({what}): {source}")]
    Backend {
        /// Which part failed, e.g. `sqlite` or `jetstream`.
        what: &'static str,
        /// The backend's error.
        #[source]
        source: BackendCause,
    },
}

impl StoreError {
    /// A [`StoreError::Backend`] for `what`, caused by `cause`.
    pub fn backend(
        what: &'static str,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        StoreError::Backend {
            what,
            source: Arc::from(cause.into()),
        }
    }
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        use StoreError as E;
        match (self, other) {
            (E::NotFound, E::NotFound)
            | (E::UserExists, E::UserExists)
            | (E::UserDeleted, E::UserDeleted)
            | (E::UserRevoked, E::UserRevoked)
            | (E::RoomExists, E::RoomExists)
            | (E::InviteUnknown, E::InviteUnknown)
            | (E::InviteExpired, E::InviteExpired)
            | (E::InviteUsed, E::InviteUsed)
            | (E::InviteCancelled, E::InviteCancelled) => true,
            (
                E::EpochConflict { expected, actual },
                E::EpochConflict {
                    expected: e2,
                    actual: a2,
                },
            ) => expected == e2 && actual == a2,
            (E::Invalid(a), E::Invalid(b)) | (E::Corrupt(a), E::Corrupt(b)) => a == b,
            (E::Timeout(a), E::Timeout(b)) => a == b,
            (
                E::Backend { what, source },
                E::Backend {
                    what: w2,
                    source: s2,
                },
            ) => what == w2 && source.to_string() == s2.to_string(),
            _ => false,
        }
    }
}

impl Eq for StoreError {}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_error_keeps_its_cause_as_source() {
        let cause = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe broke");
        let error = StoreError::backend("sqlite", cause);
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), "pipe broke");
        assert_eq!(
            error.to_string(),
            "store backend error (sqlite): pipe broke"
        );
        assert_eq!(error.clone(), error);
        assert_ne!(error, StoreError::backend("jetstream", "pipe broke"));
    }
}
