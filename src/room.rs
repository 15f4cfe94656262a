//! Room identifiers.
//!
//! A room id is 1 to 128 characters of `A-Z a-z 0-9 _ -`. The alphabet is safe as a single NATS
//! subject token and a JetStream KV key, so ids never need escaping on their way through the
//! cluster, and it is what HPKE binds a sealed key to.

use std::fmt;

/// Longest room id, in characters.
pub const ROOM_ID_MAX_LEN: usize = 128;

/// A room id that was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomIdError {
    /// The id is empty.
    #[error("room id is empty")]
    Empty,
    /// The id is longer than [`ROOM_ID_MAX_LEN`].
    #[error("room id is {actual} characters; the limit is {ROOM_ID_MAX_LEN}")]
    TooLong {
        /// Its length.
        actual: usize,
    },
    /// The id has a character outside `A-Z a-z 0-9 _ -`.
    #[error("room id has a character outside A-Z a-z 0-9 _ - at position {position}")]
    BadCharacter {
        /// Byte offset of the first bad character.
        position: usize,
    },
}

/// A validated room id. See the [module documentation](self).
///
/// ```
/// use unibus::RoomId;
/// let room = RoomId::new("design-team_2")?;
/// assert_eq!(room.as_str(), "design-team_2");
/// assert!(RoomId::new("a.b").is_err());
/// # Ok::<(), unibus::room::RoomIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

impl RoomId {
    /// Validates `id`.
    pub fn new(id: &str) -> Result<Self, RoomIdError> {
        if id.is_empty() {
            return Err(RoomIdError::Empty);
        }
        if id.len() > ROOM_ID_MAX_LEN {
            return Err(RoomIdError::TooLong { actual: id.len() });
        }
        if let Some(position) = id
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(RoomIdError::BadCharacter { position });
        }
        Ok(Self(id.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomId({})", self.0)
    }
}

impl std::str::FromStr for RoomId {
    type Err = RoomIdError;
    fn from_str(text: &str) -> Result<Self, RoomIdError> {
        Self::new(text)
    }
}

crate::serde_as_string!(RoomId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_long_and_subject_unsafe_ids() {
        assert_eq!(RoomId::new(""), Err(RoomIdError::Empty));
        assert_eq!(
            RoomId::new(&"a".repeat(129)),
            Err(RoomIdError::TooLong { actual: 129 })
        );
        assert!(RoomId::new(&"a".repeat(128)).is_ok());
        for bad in ["a.b", "a b", "a*", "a>", "é", "a/b"] {
            assert!(
                matches!(RoomId::new(bad), Err(RoomIdError::BadCharacter { .. })),
                "{bad}"
            );
        }
    }
}
