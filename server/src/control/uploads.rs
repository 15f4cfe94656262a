//! Chunked uploads of new epochs (protocol §12.5), held in memory by the instance that began
//! them until they are committed, abandoned or too old.
//!
//! Memory stays bounded: an upload reserves its whole size (the entry count its signed head
//! names, times 145 bytes) against [`UPLOAD_BUDGET`] when it begins, and one that would pass
//! the budget is refused as `unavailable` (the client retries later). One key may hold at most
//! [`UPLOADS_PER_CALLER`] uploads reserving at most [`UPLOAD_CALLER_BUDGET`] at once, so no
//! caller can take the whole budget from the others; past that it is refused as
//! `too_many_uploads` (commit or abandon one first). An upload untouched for [`UPLOAD_IDLE`] is
//! dropped, and nothing of it was ever stored: [`Uploads::sweep_every`] drops them every
//! [`UPLOAD_SWEEP`], so their memory comes back even if no upload begins after them.
//!
//! Time is tokio's clock, so tests pause it and move it by hand.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use unibus::manifest::{SignedHead, ENTRY_LEN, MAX_ENTRIES};
use unibus::SignPublicKey;

/// The most bytes of entries all uploads of one instance may hold at once: a 100,000-member
/// upload is 14.5 MB, and the largest manifest (2^20 members) 152 MB.
pub const UPLOAD_BUDGET: usize = 256 * 1024 * 1024;

/// The most bytes of entries one key's uploads may hold at once on one instance: one upload of
/// the largest manifest (2^20 entries, 152 MB), so at least 96 MB of [`UPLOAD_BUDGET`] always
/// stays for other keys.
pub const UPLOAD_CALLER_BUDGET: usize = MAX_ENTRIES * ENTRY_LEN;

/// The most uploads one key may hold at once on one instance (an owner needs one per room it is
/// rekeying, and only rooms too large for one message are uploaded in parts).
pub const UPLOADS_PER_CALLER: usize = 4;

/// How long an upload may wait for its next part or its commit before it is dropped.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(60);

/// How often idle uploads are swept: an abandoned upload's memory comes back at most
/// [`UPLOAD_IDLE`] + [`UPLOAD_SWEEP`] after its last step.
pub const UPLOAD_SWEEP: Duration = Duration::from_secs(10);

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

    /// The bytes of entries it reserves: all that its head promises.
    fn size(&self) -> usize {
        self.count * ENTRY_LEN
    }
}

/// Drops the uploads idle for [`UPLOAD_IDLE`] at `now`, returning their memory.
fn drop_idle(held: &mut HashMap<String, Upload>, now: Instant) {
    held.retain(|_, upload| now.duration_since(upload.touched) < UPLOAD_IDLE);
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
    /// The caller's uploads on this instance would pass [`UPLOADS_PER_CALLER`] or
    /// [`UPLOAD_CALLER_BUDGET`].
    #[error(
        "you hold {held} uploads reserving {reserved} bytes here, and one key may hold at most \
         {UPLOADS_PER_CALLER} reserving {UPLOAD_CALLER_BUDGET} bytes: commit one, or abandon it \
         (it is dropped after {UPLOAD_IDLE:?} idle), then start this rekey again"
    )]
    CallerLimit {
        /// The caller's uploads held now.
        held: usize,
        /// The bytes they reserve.
        reserved: usize,
    },
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
    /// The most bytes of entries one caller's uploads hold at once.
    caller_budget: usize,
}

impl Default for Uploads {
    fn default() -> Self {
        Self::with_budgets(UPLOAD_BUDGET, UPLOAD_CALLER_BUDGET)
    }
}

impl Uploads {
    /// Uploads that may hold at most `budget` bytes of entries at once, and at most
    /// `caller_budget` bytes (in at most [`UPLOADS_PER_CALLER`] uploads) for any one caller.
    pub fn with_budgets(budget: usize, caller_budget: usize) -> Self {
        Self {
            held: Mutex::default(),
            budget,
            caller_budget,
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
        drop_idle(&mut held, now);
        let size = count * ENTRY_LEN;
        let (mine, mine_reserved) = held
            .values()
            .filter(|upload| upload.caller == caller)
            .fold((0, 0), |(n, bytes), upload| (n + 1, bytes + upload.size()));
        if mine >= UPLOADS_PER_CALLER || mine_reserved + size > self.caller_budget {
            return Err(UploadError::CallerLimit {
                held: mine,
                reserved: mine_reserved,
            });
        }
        let reserved: usize = held.values().map(Upload::size).sum();
        if reserved + size > self.budget {
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

    /// Drops every upload idle for [`UPLOAD_IDLE`]; returns how many.
    pub fn sweep(&self) -> usize {
        let mut held = self.held();
        let before = held.len();
        drop_idle(&mut held, Instant::now());
        before - held.len()
    }

    /// Sweeps every `period`, for as long as the uploads exist elsewhere (the service runs
    /// this beside itself; it ends once the service is dropped).
    pub async fn sweep_every(uploads: std::sync::Weak<Uploads>, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(uploads) = uploads.upgrade() else {
                return;
            };
            let dropped = uploads.sweep();
            if dropped > 0 {
                tracing::debug!(dropped, "idle uploads dropped");
            }
        }
    }

    /// How many uploads are held, and the bytes of entries they reserve.
    pub fn held_and_reserved(&self) -> (usize, usize) {
        let held = self.held();
        (held.len(), held.values().map(Upload::size).sum())
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
        // Room for two uploads of two entries; no limit per caller.
        let uploads = Uploads::with_budgets(4 * ENTRY_LEN, usize::MAX);
        uploads.begin("a".into(), me, signed.head()).unwrap();
        uploads.begin("b".into(), me, signed.head()).unwrap();
        assert_eq!(
            uploads.begin("c".into(), me, signed.head()),
            Err(UploadError::Busy)
        );
        uploads.take("a", &me).unwrap();
        assert_eq!(uploads.begin("c".into(), me, signed.head()), Ok(()));
    }

    #[test]
    fn one_caller_holds_at_most_its_share_and_others_still_begin() {
        let (owner, signed) = manifest(2);
        let me = owner.sign_public_key();
        let (other, theirs) = manifest(2);
        let them = other.sign_public_key();
        // Each caller may reserve three uploads of two entries; the instance many more.
        let uploads = Uploads::with_budgets(100 * ENTRY_LEN, 6 * ENTRY_LEN);
        for id in ["a", "b", "c"] {
            uploads.begin(id.into(), me, signed.head()).unwrap();
        }
        let refused = uploads.begin("d".into(), me, signed.head());
        assert_eq!(
            refused,
            Err(UploadError::CallerLimit {
                held: 3,
                reserved: 6 * ENTRY_LEN
            })
        );
        // The refusal says what to do, and holds nothing.
        let message = refused.unwrap_err().to_string();
        assert!(message.contains("commit one, or abandon it"), "{message}");
        assert_eq!(uploads.held_and_reserved(), (3, 6 * ENTRY_LEN));
        // Another key is not held back by mine.
        assert_eq!(uploads.begin("e".into(), them, theirs.head()), Ok(()));
        // Once one of mine is committed, I may begin again.
        uploads.take("a", &me).unwrap();
        assert_eq!(uploads.begin("d".into(), me, signed.head()), Ok(()));

        // However small, one key holds at most UPLOADS_PER_CALLER at once.
        let uploads = Uploads::default();
        for n in 0..UPLOADS_PER_CALLER {
            uploads.begin(n.to_string(), me, signed.head()).unwrap();
        }
        assert!(matches!(
            uploads.begin("one more".into(), me, signed.head()),
            Err(UploadError::CallerLimit { held, .. }) if held == UPLOADS_PER_CALLER
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_uploads_are_swept_periodically_and_their_memory_returned() {
        let (owner, signed) = manifest(3);
        let me = owner.sign_public_key();
        let uploads = std::sync::Arc::new(Uploads::default());
        uploads.begin("old".into(), me, signed.head()).unwrap();
        tokio::time::advance(UPLOAD_IDLE / 2).await;
        uploads.begin("young".into(), me, signed.head()).unwrap();
        assert_eq!(uploads.held_and_reserved(), (2, 6 * ENTRY_LEN));

        // The sweeper runs on its own; no upload begins. Run it (on the paused clock) until
        // one sweep after "old" went idle: "old" is gone, "young" is not yet.
        let sweeper = Uploads::sweep_every(std::sync::Arc::downgrade(&uploads), UPLOAD_SWEEP);
        let until = UPLOAD_IDLE / 2 + UPLOAD_SWEEP;
        assert!(tokio::time::timeout(until, sweeper).await.is_err());
        assert_eq!(uploads.held_and_reserved(), (1, 3 * ENTRY_LEN));
        assert_eq!(uploads.add("old", &me, 0, &[]), Err(UploadError::Unknown));

        // A step keeps an upload alive; once idle long enough it goes too.
        assert_eq!(uploads.add("young", &me, 0, &[]), Ok(0));
        let sweeper = Uploads::sweep_every(std::sync::Arc::downgrade(&uploads), UPLOAD_SWEEP);
        assert!(tokio::time::timeout(UPLOAD_IDLE - UPLOAD_SWEEP, sweeper)
            .await
            .is_err());
        assert_eq!(uploads.held_and_reserved().0, 1);
        let sweeper = Uploads::sweep_every(std::sync::Arc::downgrade(&uploads), UPLOAD_SWEEP);
        assert!(tokio::time::timeout(2 * UPLOAD_SWEEP, sweeper)
            .await
            .is_err());
        assert_eq!(uploads.held_and_reserved(), (0, 0));

        // The sweeper ends once the uploads are dropped.
        let sweeper = Uploads::sweep_every(std::sync::Arc::downgrade(&uploads), UPLOAD_SWEEP);
        drop(uploads);
        assert!(tokio::time::timeout(UPLOAD_SWEEP, sweeper).await.is_ok());
    }
}
