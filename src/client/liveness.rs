//! A session's connection state, kept from the NATS client's events, and when a session counts
//! as revoked.
//!
//! The cluster says only "Authorization Violation" when it refuses a login, and it refuses for
//! more than one reason: the key is not an active user (revoked or deleted), membershipd could
//! not answer the login in time (logins fail closed, for example while a node restarts), or it
//! shed the login under a storm. So a refusal is never proof of anything: a refused session stays
//! [`ConnectionState::Reconnecting`] and keeps trying with jittered backoff. A session ends as
//! [`SessionEnd::Revoked`] only when membershipd itself says so: the account notice it publishes
//! before it disconnects a revoked user (protocol §12.6), or a control-plane refusal that the
//! caller is not an active user.
//!
//! A connection counts only once it is proven. nats-server pings every connection two seconds
//! after accepting it, whether or not its login has been decided, and async-nats takes the
//! first thing the server sends after `CONNECT` for the login's success. So a login that waits
//! longer than that (a storm, or a node whose membershipd is not back yet) is reported
//! connected before it is decided. The session is [`ConnectionState::Connected`] only after a
//! round trip on its own inbox (protocol §11), which the server carries only for an admitted
//! connection.
//!
//! A session whose logins are refused for long asks membershipd whether its key is still a user,
//! when its options say where ([`status`](super::status)): the run of refusals is kept here.
//!
//! Reconnections wait with *full jitter*: a random time between zero and an exponentially
//! growing bound ([`RECONNECT_BASE`] doubling up to [`RECONNECT_CAP`]), so clients that lost
//! the same node spread their returns instead of coming back together.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ClientError, ConnectErrorKind, Event, ServerError};
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::error::SessionEnd;

/// Whether a session can currently reach the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Logged in and connected.
    Connected,
    /// The connection dropped, or logins are being refused; the session is reconnecting by
    /// itself. Calls wait for it up to their timeout. Notifications sent meanwhile are lost, so
    /// query again once connected.
    Reconnecting,
    /// The session is over and will not reconnect.
    Ended(SessionEnd),
}

/// The bound on the first reconnection's wait; each further attempt doubles it.
pub(crate) const RECONNECT_BASE: Duration = Duration::from_millis(250);
/// The most a reconnection ever waits.
pub(crate) const RECONNECT_CAP: Duration = Duration::from_secs(8);
/// The wait between reconnection attempts of an ended session, each refused at once inside
/// the SDK (see the auth callback in [`Session::connect`](super::Session::connect)).
const ENDED_RETRY: Duration = Duration::from_secs(3600);

/// The state of one session, shared by its event callback, its reconnect schedule, its auth
/// callback and its notice listener.
pub(crate) struct Liveness {
    state: watch::Sender<ConnectionState>,
    /// Counts the connections the NATS client reported and lost, so that a round trip proves
    /// only the connection it was made on.
    connections: AtomicU64,
    /// Woken each time the NATS client reports a connection, for [`Self::confirm_connections`].
    reported: Notify,
    /// Whether the NATS client has reported a connection yet: until then its attempts are the
    /// first login's, which [`Session::connect`](super::Session::connect) paces itself.
    reported_once: AtomicBool,
    /// When the current run of refused logins began: the first refusal since the last proven
    /// connection. `None` while no login was refused since then.
    refused_since: watch::Sender<Option<Instant>>,
}

impl Liveness {
    /// A session's liveness, [`ConnectionState::Reconnecting`] until its first connection is
    /// proven.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: watch::Sender::new(ConnectionState::Reconnecting),
            connections: AtomicU64::new(0),
            reported: Notify::new(),
            reported_once: AtomicBool::new(false),
            refused_since: watch::Sender::new(None),
        })
    }

    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// Which connection the NATS client is on: the count moves with every connection reported
    /// and lost.
    pub fn connection(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
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

    /// Takes one NATS client event. A reported connection waits for its proof
    /// ([`Self::confirm_connections`]); a refused login is only a reason to keep reconnecting.
    pub fn on_event(&self, event: &Event) {
        match event {
            Event::Connected => {
                self.reported_once.store(true, Ordering::SeqCst);
                // Counted before it is announced, so a proof already under way cannot claim it.
                self.connections.fetch_add(1, Ordering::SeqCst);
                self.reported.notify_one();
            }
            Event::Disconnected => {
                self.connections.fetch_add(1, Ordering::SeqCst);
                self.set(ConnectionState::Reconnecting);
            }
            event if is_refusal(event) => {
                tracing::debug!("the cluster refused this identity's login; retrying");
                self.connections.fetch_add(1, Ordering::SeqCst);
                self.set(ConnectionState::Reconnecting);
                self.refused_since.send_if_modified(|since| {
                    let first = since.is_none();
                    since.get_or_insert_with(Instant::now);
                    first
                });
            }
            _ => {}
        }
    }

    /// Proves each connection `client` reports with a round trip on its own inbox, waiting up
    /// to `within` for it, and only then calls the session connected. A connection reported
    /// while one is being proven is proven instead. Runs until the task is aborted.
    pub async fn confirm_connections(&self, client: &async_nats::Client, within: Duration) {
        loop {
            self.reported.notified().await;
            loop {
                let connection = self.connections.load(Ordering::SeqCst);
                tokio::select! {
                    admitted = round_trip(client, within) => {
                        if admitted {
                            self.proven(connection);
                        }
                        break;
                    }
                    () = self.reported.notified() => {}
                }
            }
        }
    }

    /// Calls the session connected if `connection` is still the client's latest.
    fn proven(&self, connection: u64) {
        self.state.send_if_modified(|current| {
            // Read under the state's lock: an event that counts after this also sets its
            // state after this, so a lost connection is never left called connected.
            if matches!(current, ConnectionState::Ended(_))
                || *current == ConnectionState::Connected
                || self.connections.load(Ordering::SeqCst) != connection
            {
                return false;
            }
            *current = ConnectionState::Connected;
            self.refused_since.send_replace(None);
            true
        });
    }

    /// When the current run of refused logins began, if logins have been refused since the
    /// last proven connection.
    pub fn refusals_began(&self) -> Option<Instant> {
        *self.refused_since.borrow()
    }

    /// Waits until a login is refused (at once if one already was since the last proven
    /// connection), and returns when that run of refusals began.
    pub async fn refused_since(&self) -> Instant {
        let mut since = self.refused_since.subscribe();
        let began = since
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|began| *began);
        match began {
            Some(began) => began,
            // The sender lives in `self`: it cannot be dropped while this borrows `self`.
            None => std::future::pending().await,
        }
    }

    /// Proves the latest connection, as its round trip would.
    #[cfg(test)]
    pub fn prove_latest(&self) {
        self.proven(self.connections.load(Ordering::SeqCst));
    }

    /// The wait before attempt `attempts` (counted from 1) of the NATS client, which asks
    /// before every attempt, the first included: none before the first login's attempts (its
    /// retries are paced by [`Session::connect`](super::Session::connect)); for reconnections,
    /// full jitter under a bound that starts at [`RECONNECT_BASE`] and doubles up to
    /// [`RECONNECT_CAP`]; once the session has ended, an hour.
    pub fn reconnect_delay(&self, attempts: usize) -> Duration {
        if self.has_ended() {
            return ENDED_RETRY;
        }
        if !self.reported_once.load(Ordering::SeqCst) {
            return Duration::ZERO;
        }
        backoff(attempts)
    }
}

/// Whether `event` says the cluster refused a login: as a server error on the connection, or,
/// for a refused reconnection attempt, as the client error async-nats makes of the
/// connection's error kind (it carries only that kind's text).
fn is_refusal(event: &Event) -> bool {
    match event {
        Event::ServerError(ServerError::AuthorizationViolation) => true,
        Event::ClientError(ClientError::Other(text)) => {
            *text == ConnectErrorKind::AuthorizationViolation.to_string()
        }
        _ => false,
    }
}

/// Whether a message `client` publishes to a fresh subject of its own inbox comes back within
/// `within`: the server handles a connection's operations only once its login is admitted.
async fn round_trip(client: &async_nats::Client, within: Duration) -> bool {
    let subject = client.new_inbox();
    let Ok(mut echo) = client.subscribe(subject.clone()).await else {
        return false;
    };
    if client.publish(subject, "".into()).await.is_err() {
        return false;
    }
    matches!(tokio::time::timeout(within, echo.next()).await, Ok(Some(_)))
}

/// A fully jittered wait before retry `attempt` (counted from 1): uniformly random between zero
/// and `RECONNECT_BASE * 2^(attempt - 1)`, at most [`RECONNECT_CAP`].
pub(crate) fn backoff(attempt: usize) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16) as u32;
    let bound = RECONNECT_BASE
        .saturating_mul(1 << doublings)
        .min(RECONNECT_CAP);
    jittered(bound)
}

/// A uniformly random wait between zero and `bound`.
pub(crate) fn jittered(bound: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    // Without randomness, the full bound: slower, but still bounded, and no worse than no jitter.
    let fraction = match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 1.0,
    };
    bound.mul_f64(fraction)
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
    fn refusals_alone_never_end_a_session() {
        let liveness = Liveness::new();
        liveness.on_event(&Event::Disconnected);
        for _ in 0..1_000 {
            liveness.on_event(&refused());
            liveness.on_event(&Event::ServerError(ServerError::AuthorizationViolation));
        }
        assert_eq!(liveness.state(), ConnectionState::Reconnecting);
        assert!(liveness.reconnect_delay(1_000) <= RECONNECT_CAP);
    }

    #[test]
    fn a_run_of_refusals_begins_at_the_first_in_either_form_and_ends_with_a_proven_login() {
        for refusal in [
            refused(),
            Event::ServerError(ServerError::AuthorizationViolation),
        ] {
            let liveness = Liveness::new();
            liveness.on_event(&Event::Disconnected);
            liveness.on_event(&Event::ClientError(ClientError::Other(
                ConnectErrorKind::Io.to_string(),
            )));
            assert_eq!(liveness.refusals_began(), None, "not a refusal");
            liveness.on_event(&refusal);
            let began = liveness.refusals_began().expect("a refusal");
            liveness.on_event(&refusal);
            assert_eq!(liveness.refusals_began(), Some(began), "the same run");
            liveness.on_event(&Event::Connected);
            assert_eq!(
                liveness.refusals_began(),
                Some(began),
                "reported, not proven"
            );
            liveness.prove_latest();
            assert_eq!(liveness.refusals_began(), None);
        }
    }

    #[test]
    fn the_first_login_starts_at_once_and_only_reconnections_wait() {
        let liveness = Liveness::new();
        assert_eq!(liveness.reconnect_delay(1), Duration::ZERO);
        liveness.on_event(&Event::Connected);
        liveness.on_event(&Event::Disconnected);
        // Some of 100 jittered first waits under 250 ms are above zero (odds of all zero: nil).
        assert!((0..100).any(|_| liveness.reconnect_delay(1) > Duration::ZERO));
        assert!((0..100).all(|_| liveness.reconnect_delay(1) <= RECONNECT_BASE));
    }

    #[test]
    fn a_reported_connection_counts_only_once_proven_and_only_if_it_is_the_latest() {
        let liveness = Liveness::new();
        liveness.on_event(&Event::Connected);
        // Reported, not proven: async-nats may report a login that is still undecided.
        assert_eq!(liveness.state(), ConnectionState::Reconnecting);
        let first = liveness.connections.load(Ordering::SeqCst);
        // The connection is lost before its proof lands: the proof is of nothing.
        liveness.on_event(&Event::Disconnected);
        liveness.proven(first);
        assert_eq!(liveness.state(), ConnectionState::Reconnecting);
        liveness.on_event(&Event::Connected);
        liveness.proven(liveness.connections.load(Ordering::SeqCst));
        assert_eq!(liveness.state(), ConnectionState::Connected);
    }

    #[test]
    fn an_ended_session_stays_ended_and_stops_reconnecting() {
        let liveness = Liveness::new();
        assert!(liveness.end(SessionEnd::Revoked));
        assert!(!liveness.end(SessionEnd::Closed));
        liveness.on_event(&Event::Connected);
        liveness.proven(liveness.connections.load(Ordering::SeqCst));
        assert_eq!(
            liveness.state(),
            ConnectionState::Ended(SessionEnd::Revoked)
        );
        assert_eq!(liveness.reconnect_delay(1), ENDED_RETRY);
    }

    #[test]
    fn reconnect_waits_are_fully_jittered_under_a_doubling_capped_bound() {
        for (attempt, bound) in [
            (1, RECONNECT_BASE),
            (2, RECONNECT_BASE * 2),
            (3, RECONNECT_BASE * 4),
            (50, RECONNECT_CAP),
        ] {
            let waits: Vec<Duration> = (0..2_000).map(|_| backoff(attempt)).collect();
            assert!(waits.iter().all(|w| *w <= bound), "attempt {attempt}");
            // Spread over the whole range: some in each quarter (a miss has odds of
            // (3/4)^2000 per quarter).
            for quarter in 0..4u32 {
                let (low, high) = (bound * quarter / 4, bound * (quarter + 1) / 4);
                assert!(
                    waits.iter().any(|w| *w >= low && *w <= high),
                    "attempt {attempt}: nothing in quarter {quarter}"
                );
            }
        }
    }
}
