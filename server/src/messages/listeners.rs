//! The leases of live copies this instance holds (protocol §15.4, `listen`).
//!
//! A member whose login may subscribe to a room's `unibus.live.<room>` receives the room's
//! copies from nats-server itself, and costs membershipd nothing. A member whose login may not
//! (it joined the room after it logged in, or is in more rooms than a login is granted) leases
//! the room's copies from one instance, which sends it each copy on
//! `unibus.events.<member>.message` for [`LISTEN_LEASE`] after the lease was last renewed, while
//! the member is an active member of the room ([`Fanout`](super::Fanout), which holds them,
//! checks that at every copy). The leases live in this instance's memory only: a client renews
//! them on the instance that granted them, and leases anew (and reads what it may have missed)
//! when that instance is gone.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;
use unibus::protocol::messages::LISTEN_LEASE;
use unibus::{RoomId, SignPublicKey};

/// The leases this instance holds: per room, each listener and when its lease ends.
#[derive(Default)]
pub struct Listeners(Mutex<HashMap<RoomId, HashMap<SignPublicKey, Instant>>>);

impl Listeners {
    fn lock(&self) -> MutexGuard<'_, HashMap<RoomId, HashMap<SignPublicKey, Instant>>> {
        // Every update leaves the map whole; a poisoned lock still guards a sound value.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Leases (or renews) `member`'s copies of `rooms` for [`LISTEN_LEASE`] from now. Returns
    /// the rooms whose lease it did not hold until now.
    pub fn lease(&self, member: &SignPublicKey, rooms: &[RoomId]) -> Vec<RoomId> {
        let now = Instant::now();
        let until = now + LISTEN_LEASE;
        let mut leases = self.lock();
        let mut new = Vec::new();
        for room in rooms {
            let previous = leases
                .entry(room.clone())
                .or_default()
                .insert(*member, until);
            if previous.is_none_or(|ended| ended <= now) {
                new.push(room.clone());
            }
        }
        new
    }

    /// The members whose lease of `room` has not ended; forgets the ended ones.
    pub fn of(&self, room: &RoomId) -> Vec<SignPublicKey> {
        let now = Instant::now();
        let mut leases = self.lock();
        let Some(listeners) = leases.get_mut(room) else {
            return Vec::new();
        };
        listeners.retain(|_, until| *until > now);
        let members = listeners.keys().copied().collect();
        if listeners.is_empty() {
            leases.remove(room);
        }
        members
    }

    /// Forgets every ended lease, of every room; returns how many leases are left.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut leases = self.lock();
        leases.retain(|_, listeners| {
            listeners.retain(|_, until| *until > now);
            !listeners.is_empty()
        });
        leases.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SignPublicKey {
        unibus::Identity::generate().unwrap().sign_public_key()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_lasts_its_time_from_its_last_renewal_and_says_when_it_is_new() {
        let (alice, bob) = (key(), key());
        let (general, ops) = (RoomId::new("general").unwrap(), RoomId::new("ops").unwrap());
        let listeners = Listeners::default();
        let one = std::slice::from_ref(&general);
        assert_eq!(listeners.lease(&alice, one), one);
        assert_eq!(
            listeners.lease(&bob, &[general.clone(), ops.clone()]).len(),
            2
        );
        tokio::time::advance(LISTEN_LEASE / 2).await;
        // Renewed while it lasts: not new.
        assert!(listeners.lease(&alice, one).is_empty());
        let mut of_general = listeners.of(&general);
        of_general.sort();
        let mut both = vec![alice, bob];
        both.sort();
        assert_eq!(of_general, both);
        tokio::time::advance(LISTEN_LEASE / 2).await;
        // Bob's leases ended; Alice's was renewed half a lease ago.
        assert_eq!(listeners.of(&general), [alice]);
        assert!(listeners.of(&ops).is_empty());
        assert_eq!(listeners.sweep(), 1);
        // A lease that ended is new again.
        assert_eq!(listeners.lease(&bob, std::slice::from_ref(&ops)), [ops]);
        tokio::time::advance(LISTEN_LEASE).await;
        assert_eq!(listeners.sweep(), 0);
        assert!(listeners.0.lock().unwrap().is_empty(), "nothing is kept");
    }
}
