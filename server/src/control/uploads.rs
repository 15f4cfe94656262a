//! Chunked uploads of new epochs (protocol §12.5), held in memory by the instance that began
//! them until they are committed, abandoned or too old.
//!
//! Memory stays bounded: an upload reserves its whole size (the entry count its signed head
//! names, times 145 bytes) against [`UPLOAD_BUDGET`] when it begins, and one that would pass
//! the budget is refused as `unavailable` (the client retries later). An upload untouched for
//! [`UPLOAD_IDLE`] is dropped, and nothing of it was ever stored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use unibus::manifest::{SignedHead, ENTRY_LEN};
use unibus::SignPublicKey;

/// The most bytes of entries all uploads of one instance may hold at once: a 100,000-member
/// upload is 14.5 MB, and the largest manifest (2^20 members) 152 MB.
pub const UPLOAD_BUDGET: usize = 256 * 1024 * 1024;

/// How long an upload may wait for its next part or its commit before it is dropped.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(60);

/// One upload in progress.
#[derive(Debug)]
pub struct Upload {
    /// Who began it: only they may add to it or commit it.
    pub caller: SignPublicKey,
    /// The signed head it began with (signature verified, rekeyer = caller).
    pub head: SignedHead,
    /// The entries received so far, in order, whole.
    pub entries: Vec<u8>,
    /// The entries the head's count promises.
    pub count: usize,
    touched: Instant,
}

impl Upload {
    /// How many entries it holds.
    pub fn received(&self) -> usize {
        self.entries.len() / ENTRY_LEN
    }
}

/// Why an upload step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// The instance holds no such upload of this caller (never begun, committed, or dropped).
    #[error("no such upload here: it was committed, or dropped after {UPLOAD_IDLE:?} idle; start the rekey again")]
    Unknown,
    /// The upload would pass the instance's memory budget.
    #[error("this instance holds too many uploads right now; retry later")]
    Busy,
    /// A part that does not continue the upload where it stands, or goes past its count.
    #[error("{0}")]
    OutOfOrder(String),
}

/// The uploads one instance holds.
#[derive(Debug)]
pub struct Uploads {
    held: Mutex<HashMap<String, Upload>>,
    /// The most bytes of entries held at once.
    budget: usize,
}

impl Default for Uploads {
    fn default() -> Self {
        Self::with_budget(UPLOAD_BUDGET)
    }
}

impl Uploads {
    /// Uploads that may hold at most `budget` bytes of entries at once.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            held: Mutex::default(),
            budget,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        // Every write under the lock leaves whole uploads; a poisoned map is still consistent.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds a new upload under `id`, if the budget allows it.
    pub fn begin(
        &self,
        id: String,
        caller: SignPublicKey,
        head: SignedHead,
    ) -> Result<(), UploadError> {
        let count = head.unverified_header().count as usize;
        let now = Instant::now();
        let mut held = self.held();
        held.retain(|_, upload| now.duration_since(upload.touched) < UPLOAD_IDLE);
        let reserved: usize = held.values().map(|u| u.count * ENTRY_LEN).sum();
        if reserved + count * ENTRY_LEN > self.budget {
            return Err(UploadError::Busy);
        }
        held.insert(
            id,
            Upload {
                caller,
                head,
                entries: Vec::new(),
                count,
                touched: now,
            },
        );
        Ok(())
    }

    /// Adds whole entries from index `first` on; returns how many the upload holds. A part that
    /// was already received (a retry after a lost reply) changes nothing.
    pub fn add(
        &self,
        id: &str,
        caller: &SignPublicKey,
        first: usize,
        entries: &[u8],
    ) -> Result<usize, UploadError> {
        let mut held = self.held();
        let upload = held
            .get_mut(id)
            .filter(|upload| &upload.caller == caller)
            .ok_or(UploadError::Unknown)?;
        upload.touched = Instant::now();
        if !entries.len().is_multiple_of(ENTRY_LEN) {
            return Err(UploadError::OutOfOrder(format!(
                "a part of {} bytes is not whole entries of {ENTRY_LEN} bytes",
                entries.len()
            )));
        }
        let received = upload.received();
        let end = first.saturating_add(entries.len() / ENTRY_LEN);
        if first == received && end <= upload.count {
            upload.entries.extend_from_slice(entries);
            return Ok(end);
        }
        if end == received && first < received {
            return Ok(received);
        }
        Err(UploadError::OutOfOrder(format!(
            "entries {first}..{end} do not continue an upload of {} entries holding {received}",
            upload.count
        )))
    }

    /// Takes the upload out for its commit: whatever the commit's outcome, it is gone.
    pub fn take(&self, id: &str, caller: &SignPublicKey) -> Result<Upload, UploadError> {
        let mut held = self.held();
        match held.get(id) {
            Some(upload) if &upload.caller == caller => {}
            _ => return Err(UploadError::Unknown),
        }
        held.remove(id).ok_or(UploadError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unibus::manifest::{Recipient, SignedManifest};
    use unibus::sealing::RoomKey;
    use unibus::{Identity, RoomId};

    /// A signed manifest of `n` members and its head.
    fn manifest(n: usize) -> (Identity, SignedManifest) {
        let owner = Identity::generate().unwrap();
        let recipients: Vec<Recipient> = (0..n)
            .map(|_| Recipient::of(&Identity::generate().unwrap()))
            .collect();
        let key = RoomKey::generate().unwrap();
        let room = RoomId::new("general").unwrap();
        let signed = SignedManifest::rekey(&owner, &room, 1, 0, &key, &recipients).unwrap();
        (owner, signed)
    }

    #[test]
    fn parts_arrive_in_order_retries_change_nothing_and_only_the_caller_commits() {
        let (owner, signed) = manifest(5);
        let me = owner.sign_public_key();
        let wire = signed.to_bytes();
        let head = signed.head();
        let entries = &wire[head.to_bytes().len()..];
        let uploads = Uploads::default();
        uploads.begin("u".into(), me, head).unwrap();

        assert_eq!(uploads.add("u", &me, 0, &entries[..2 * ENTRY_LEN]), Ok(2));
        // The same part again (its reply was lost): nothing changes.
        assert_eq!(uploads.add("u", &me, 0, &entries[..2 * ENTRY_LEN]), Ok(2));
        // A gap, a part past the count, half an entry: refused, nothing changes.
        assert!(matches!(
            uploads.add("u", &me, 3, &entries[3 * ENTRY_LEN..4 * ENTRY_LEN]),
            Err(UploadError::OutOfOrder(_))
        ));
        assert!(matches!(
            uploads.add("u", &me, 2, &[entries, entries].concat()[2 * ENTRY_LEN..]),
            Err(UploadError::OutOfOrder(_))
        ));
        assert!(matches!(
            uploads.add("u", &me, 2, &entries[2 * ENTRY_LEN..2 * ENTRY_LEN + 7]),
            Err(UploadError::OutOfOrder(_))
        ));
        assert_eq!(uploads.add("u", &me, 2, &entries[2 * ENTRY_LEN..]), Ok(5));

        // Another key cannot see, extend or take it.
        let stranger = Identity::generate().unwrap().sign_public_key();
        assert_eq!(
            uploads.add("u", &stranger, 5, &[]),
            Err(UploadError::Unknown)
        );
        assert!(matches!(
            uploads.take("u", &stranger),
            Err(UploadError::Unknown)
        ));
        let upload = uploads.take("u", &me).unwrap();
        assert_eq!(upload.entries, entries);
        // Taken once: gone.
        assert!(matches!(uploads.take("u", &me), Err(UploadError::Unknown)));
    }

    #[test]
    fn uploads_past_the_memory_budget_are_refused_until_room_is_made() {
        let (owner, signed) = manifest(2);
        let me = owner.sign_public_key();
        // Room for two uploads of two entries.
        let uploads = Uploads::with_budget(4 * ENTRY_LEN);
        uploads.begin("a".into(), me, signed.head()).unwrap();
        uploads.begin("b".into(), me, signed.head()).unwrap();
        assert_eq!(
            uploads.begin("c".into(), me, signed.head()),
            Err(UploadError::Busy)
        );
        uploads.take("a", &me).unwrap();
        assert_eq!(uploads.begin("c".into(), me, signed.head()), Ok(()));
    }
}
