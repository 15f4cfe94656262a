//! A session's connection state, kept from the NATS client's events, and when a session counts
//! as revoked.
//!
//! The cluster says only "Authorization Violation" when it refuses a login, and it refuses for
//! two reasons: the key is not an active user (revoked or deleted), or membershipd could not
//! answer the login in time (logins fail closed; for example while membershipd restarts, its
//! nats-server is up a moment before it answers logins). So one refusal is not proof: the
//! session ends as [`SessionEnd::Revoked`] only when its reconnections have been refused
//! [`REFUSALS_TO_END`] times in a row over at least [`REFUSAL_WINDOW`]. Until then it stays
//! [`ConnectionState::Reconnecting`] and retries every [`REFUSED_RETRY`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{ClientError, ConnectErrorKind, Event, ServerError};
use tokio::sync::watch;

use super::error::SessionEnd;

/// Whether a session can currently reach the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Logged in and connected.
    Connected,
    /// The connection dropped; the session is reconnecting by itself. Calls wait for it up to
    /// their timeout. Notifications sent meanwhile are lost, so query again once connected.
    Reconnecting,
    /// The session is over and will not reconnect.
    Ended(SessionEnd),
}

/// Consecutive refused logins that end a session, when they span [`REFUSAL_WINDOW`].
pub(crate) const REFUSALS_TO_END: u32 = 3;
/// The least time from the first of consecutive refusals to the one that ends the session.
pub(crate) const REFUSAL_WINDOW: Duration = Duration::from_secs(2);
/// The wait between reconnections after a refusal.
pub(crate) const REFUSED_RETRY: Duration = Duration::from_millis(500);
/// The wait between reconnection attempts of an ended session, each refused at once inside
/// the SDK (see the auth callback in [`Session::connect`](super::Session::connect)).
const ENDED_RETRY: Duration = Duration::from_secs(3600);

/// The state of one session, shared by its event callback, its reconnect schedule and its
/// auth callback.
pub(crate) struct Liveness {
    state: watch::Sender<ConnectionState>,
    /// Refused logins since the last successful one: how many, and when the first was.
    refusals: Mutex<Option<(u32, Instant)>>,
}

impl Liveness {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: watch::Sender::new(ConnectionState::Connected),
            refusals: Mutex::new(None),
        })
    }

    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    pub fn has_ended(&self) -> bool {
        matches!(self.state(), ConnectionState::Ended(_))
    }

    /// Ends the session, unless it has ended already; `true` if this call ended it.
    pub fn end(&self, end: SessionEnd) -> bool {
        self.set(ConnectionState::Ended(end))
    }

    /// Moves to `next` unless the session has ended; `true` if the state changed.
    fn set(&self, next: ConnectionState) -> bool {
        self.state.send_if_modified(|current| {
            if matches!(current, ConnectionState::Ended(_)) || *current == next {
                return false;
            }
            if let ConnectionState::Ended(end) = next {
                tracing::info!(%end, "the session ended");
            }
            *current = next;
            true
        })
    }

    fn refusals(&self) -> std::sync::MutexGuard<'_, Option<(u32, Instant)>> {
        // Only plain values are written under the lock; a poisoned one is still consistent.
        self.refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes one NATS client event.
    pub fn on_event(&self, event: &Event) {
        match event {
            Event::Connected => {
                *self.refusals() = None;
                self.set(ConnectionState::Connected);
            }
            Event::Disconnected => {
                self.set(ConnectionState::Reconnecting);
            }
            Event::ServerError(ServerError::AuthorizationViolation) => self.on_refused(),
            // A refused reconnection: async-nats reports the connect error's kind as text.
            Event::ClientError(ClientError::Other(text))
                if *text == ConnectErrorKind::AuthorizationViolation.to_string() =>
            {
                self.on_refused()
            }
            _ => {}
        }
    }

    fn on_refused(&self) {
        let now = Instant::now();
        let confirmed = {
            let mut refusals = self.refusals();
            let (count, first) = refusals.get_or_insert((0, now));
            *count += 1;
            tracing::debug!(
                refusals = *count,
                "the cluster refused this identity's login"
            );
            *count >= REFUSALS_TO_END && now.duration_since(*first) >= REFUSAL_WINDOW
        };
        if confirmed {
            self.end(SessionEnd::Revoked);
        } else {
            self.set(ConnectionState::Reconnecting);
        }
    }

    /// The wait before reconnection attempt `attempts`: async-nats's schedule (at once, then
    /// doubling to 4 s) normally; [`REFUSED_RETRY`] after a refusal; and once the session has
    /// ended, an hour.
    pub fn reconnect_delay(&self, attempts: usize) -> Duration {
        if self.has_ended() {
            return ENDED_RETRY;
        }
        if self.refusals().is_some() {
            return REFUSED_RETRY;
        }
        match attempts {
            0 | 1 => Duration::ZERO,
            n => Duration::from_millis(2u64.saturating_pow((n - 1).min(12) as u32))
                .min(Duration::from_secs(4)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Event {
        Event::ClientError(ClientError::Other(
            ConnectErrorKind::AuthorizationViolation.to_string(),
        ))
    }

    #[test]
    fn a_refusal_alone_keeps_reconnecting_and_a_login_forgets_it() {
        let liveness = Liveness::new();
        liveness.on_event(&Event::Disconnected);
        for _ in 0..REFUSALS_TO_END + 2 {
            liveness.on_event(&refused());
        }
        // Many refusals, but all within the window: not yet proof.
        assert_eq!(liveness.state(), ConnectionState::Reconnecting);
        assert_eq!(liveness.reconnect_delay(7), REFUSED_RETRY);
        liveness.on_event(&Event::Connected);
        assert_eq!(liveness.state(), ConnectionState::Connected);
        assert_eq!(liveness.reconnect_delay(1), Duration::ZERO);
    }

    #[test]
    fn refusals_spanning_the_window_end_the_session_for_good() {
        let liveness = Liveness::new();
        liveness.on_event(&Event::Disconnected);
        liveness.on_event(&refused());
        // Backdate the first refusal past the window.
        liveness.refusals().as_mut().unwrap().1 -= REFUSAL_WINDOW;
        for _ in 1..REFUSALS_TO_END {
            liveness.on_event(&refused());
        }
        assert_eq!(
            liveness.state(),
            ConnectionState::Ended(SessionEnd::Revoked)
        );
        // Nothing revives an ended session.
        liveness.on_event(&Event::Connected);
        assert_eq!(
            liveness.state(),
            ConnectionState::Ended(SessionEnd::Revoked)
        );
        assert_eq!(liveness.reconnect_delay(1), ENDED_RETRY);
    }

    #[test]
    fn a_closed_session_stays_closed() {
        let liveness = Liveness::new();
        assert!(liveness.end(SessionEnd::Closed));
        assert!(!liveness.end(SessionEnd::Revoked));
        liveness.on_event(&Event::Disconnected);
        assert_eq!(liveness.state(), ConnectionState::Ended(SessionEnd::Closed));
    }
}
