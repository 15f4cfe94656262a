//! The room grants this instance's callout issued (protocol §15.2), kept as long as the user
//! JWTs that carry them may live.
//!
//! A grant lets a session publish to a room's store subject until the session ends. The
//! [`Revoker`](super::revocation::Revoker) ends the sessions of a member who leaves a room as
//! the change feed brings the change; when a feed cannot say what it missed (it broke, or
//! reset), the revoker's sweep looks here instead, and cuts every user granted a room it is no
//! longer a member of. A cut forgets the grants of the logins it cut (those issued before it),
//! so that a user is not cut again for a room its next login was not granted. Each instance keeps the grants it issued itself: a change one instance
//! missed is still cut by every other instance whose feed brought it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use unibus::{RoomId, SignPublicKey};

/// The rooms granted to users, each login's grant until its JWT expires. See the
/// [module documentation](self).
#[derive(Debug, Default)]
pub struct Grants {
    issued: Mutex<HashMap<SignPublicKey, Vec<Issued>>>,
}

/// One login's grant.
#[derive(Debug)]
struct Issued {
    rooms: Vec<RoomId>,
    at: Instant,
    until: Instant,
}

impl Grants {
    /// Records that a login of `user` was granted `rooms`, in a JWT valid for `lifetime`
    /// from now.
    pub fn record(&self, user: &SignPublicKey, rooms: &[RoomId], lifetime: Duration) {
        if rooms.is_empty() {
            return;
        }
        let (at, mut issued) = (Instant::now(), self.issued());
        let grants = issued.entry(*user).or_default();
        let until = at + lifetime;
        // A login granted the same rooms as an earlier one stands for both: a user who logs in
        // again and again keeps one record per set of rooms, not one per login.
        if let Some(same) = grants.iter_mut().find(|grant| grant.rooms == rooms) {
            same.at = at;
            same.until = same.until.max(until);
            return;
        }
        grants.push(Issued {
            rooms: rooms.to_vec(),
            at,
            until,
        });
    }

    /// Every user with rooms granted in a JWT that may still be in use, and those rooms
    /// (of all its logins, each once). Expired grants are forgotten.
    pub fn outstanding(&self) -> Vec<(SignPublicKey, Vec<RoomId>)> {
        let now = Instant::now();
        let mut issued = self.issued();
        issued.retain(|_, grants| {
            grants.retain(|grant| grant.until > now);
            !grants.is_empty()
        });
        issued
            .iter()
            .map(|(user, grants)| {
                let rooms: BTreeSet<&RoomId> = grants.iter().flat_map(|g| &g.rooms).collect();
                (*user, rooms.into_iter().cloned().collect())
            })
            .collect()
    }

    /// Forgets `user`'s grants issued before `cut`: its sessions of then were cut. A login
    /// granted since (it logged in again) is kept.
    pub fn forget_before(&self, user: &SignPublicKey, cut: Instant) {
        let mut issued = self.issued();
        if let Some(grants) = issued.get_mut(user) {
            grants.retain(|grant| grant.at >= cut);
            if grants.is_empty() {
                issued.remove(user);
            }
        }
    }

    fn issued(&self) -> MutexGuard<'_, HashMap<SignPublicKey, Vec<Issued>>> {
        // Every update leaves the map whole; a poisoned lock still guards a sound map.
        self.issued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SignPublicKey {
        unibus::Identity::from_parts(&[byte; 32], &[byte; 32])
            .unwrap()
            .sign_public_key()
    }

    fn rooms(names: &[&str]) -> Vec<RoomId> {
        names.iter().map(|n| RoomId::new(n).unwrap()).collect()
    }

    #[test]
    fn a_users_logins_grants_add_up_and_empty_grants_are_not_kept() {
        let grants = Grants::default();
        let (alice, bob) = (key(1), key(2));
        grants.record(&alice, &rooms(&["a", "b"]), Duration::from_secs(60));
        grants.record(&alice, &rooms(&["b", "c"]), Duration::from_secs(60));
        grants.record(&bob, &[], Duration::from_secs(60));
        assert_eq!(grants.outstanding(), vec![(alice, rooms(&["a", "b", "c"]))]);
    }

    #[test]
    fn a_cut_forgets_the_grants_of_the_logins_before_it_and_keeps_those_after() {
        let grants = Grants::default();
        let alice = key(1);
        grants.record(&alice, &rooms(&["a", "left"]), Duration::from_secs(60));
        let cut = Instant::now();
        grants.record(&alice, &rooms(&["a"]), Duration::from_secs(60));
        grants.forget_before(&alice, cut);
        assert_eq!(grants.outstanding(), vec![(alice, rooms(&["a"]))]);
        grants.forget_before(&alice, Instant::now() + Duration::from_secs(1));
        assert!(grants.outstanding().is_empty());
    }

    #[test]
    fn logins_granted_the_same_rooms_keep_one_record_that_a_cut_before_the_last_keeps() {
        let grants = Grants::default();
        let alice = key(1);
        grants.record(&alice, &rooms(&["a"]), Duration::from_secs(60));
        let cut = Instant::now();
        grants.record(&alice, &rooms(&["a"]), Duration::from_secs(60));
        assert_eq!(grants.issued().get(&alice).map(Vec::len), Some(1));
        grants.forget_before(&alice, cut);
        assert_eq!(grants.outstanding(), vec![(alice, rooms(&["a"]))]);
    }

    #[test]
    fn an_expired_grant_is_forgotten() {
        let grants = Grants::default();
        grants.record(&key(1), &rooms(&["a"]), Duration::ZERO);
        assert!(grants.outstanding().is_empty());
    }
}
