//! Asking membershipd whether this identity is still a user: `POST {server}/status`
//! (docs/protocol.md §10.2).
//!
//! The cluster refuses a revoked user's login with the same `Authorization Violation` as a login
//! membershipd could not answer in time, so refusals alone never end a session
//! ([`liveness`](super::liveness)). A session that missed its account notice (it was offline
//! when the notice went out) would then reconnect forever. With a [`StatusCheck`] in its
//! [`SessionOptions`](super::SessionOptions), a session whose logins have been refused for a
//! while asks here, and ends as [`SessionEnd::Revoked`] on a definite answer: `revoked` or
//! `deleted`.

use std::future::Future;
use std::time::Duration;

use super::error::{Cause, SessionEnd};
use super::liveness::{jittered, Liveness};
use super::register::Registration;
use crate::protocol::codes::{ApiCode, ErrorBody};
use crate::protocol::status::{KeyStatus, StatusBody, StatusReply, StatusRequest};
use crate::Identity;

/// The longest wait between two questions of one run of refusals.
const CHECK_CAP: Duration = Duration::from_secs(15 * 60);

/// Where and when a session asks whether its identity is still a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCheck {
    /// The server base URL: the [`Registration`]'s `server_url` (protocol §5.3).
    pub server_url: String,
    /// How long logins must have been refused, without an admitted one between, before the
    /// first question: a restart or a storm refuses logins for a few seconds. Each question
    /// waits a random time between this and twice this; each further one of the same run of
    /// refusals twice as long as the one before, up to 15 minutes.
    pub after_refusals_for: Duration,
    /// The time limit of each question.
    pub request_timeout: Duration,
    /// DER certificates of the only certificate authorities to trust, for a server with a
    /// private CA. Empty (the default): the platform's trust store decides.
    pub trusted_root_certificates: Vec<Vec<u8>>,
}

impl StatusCheck {
    /// Asks the server at `server_url` (a server base URL, protocol §5.3), with the default
    /// waits: after 10 s of refusals, each question within 10 s.
    pub fn new(server_url: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into(),
            after_refusals_for: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            trusted_root_certificates: Vec::new(),
        }
    }
}

impl From<&Registration> for StatusCheck {
    /// Asks the server the identity registered with.
    fn from(registration: &Registration) -> Self {
        Self::new(registration.server_url.clone())
    }
}

/// Why a status question got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// The device's clock is more than a minute from the server's (`stale_request`): set the
    /// clock right.
    #[error("the server refused the question as stale: this device's clock is more than a minute off; set it right")]
    ClockSkew,
    /// Too many questions from this address (`rate_limited`): ask again later.
    #[error("the server is rate-limiting status questions from this address: ask again later")]
    RateLimited,
    /// The server said it is unavailable (`unavailable`, or any 5xx): ask again later.
    #[error("the server is unavailable (HTTP {status}): ask again later")]
    Unavailable {
        /// The HTTP status.
        status: u16,
        /// The server's error code, if its reply carried one.
        code: Option<ApiCode>,
    },
    /// The server refused the question itself (`malformed_body`, `bad_key`, `bad_signature`,
    /// `unsupported_media_type`, or a code this version does not know): the client and the
    /// server disagree on the protocol, or `server_url` is not a unibus server.
    #[error("the server refused the status question ({}): {message}", code.as_ref().map_or("no code", ApiCode::as_str))]
    Rejected {
        /// The server's error code, if its reply carried one.
        code: Option<ApiCode>,
        /// The server's message (or the HTTP status, if the reply carried no refusal).
        message: String,
    },
    /// The answer is not what the protocol says, or is about another question.
    #[error("the server's status answer is invalid: {0}")]
    InvalidResponse(String),
    /// The server could not be reached, or the answer was cut; the cause is the
    /// [`source`](std::error::Error::source).
    #[error("could not reach the server to ask: check the network and ask again")]
    Transport(#[source] Cause),
    /// TLS could not be set up (a certificate in
    /// [`StatusCheck::trusted_root_certificates`] does not parse, or, for an `https` server
    /// with no extra roots, the platform's trust store is unavailable).
    #[error("TLS could not be set up for the status question: install the system's CA certificates, or pass the server's root certificate")]
    Tls(#[source] Cause),
}

/// Asks the server named in `check` what it knows of `identity`'s signing key: the key signs
/// the question with the device's clock (protocol §10.2), and only an answer about this very
/// question is taken.
///
/// ```no_run
/// # async fn run(me: unibus::Identity, registration: unibus::client::Registration)
/// # -> Result<(), Box<dyn std::error::Error>> {
/// use unibus::client::{check_status, StatusCheck};
///
/// let status = check_status(&me, &StatusCheck::from(&registration)).await?;
/// if status.is_retired() {
///     println!("an admin revoked or deleted this identity: {status}");
/// }
/// # Ok(()) }
/// ```
pub async fn check_status(
    identity: &Identity,
    check: &StatusCheck,
) -> Result<KeyStatus, StatusError> {
    let url = format!("{}/status", check.server_url.trim_end_matches('/'));
    let http = super::http::client(
        &url,
        &check.trusted_root_certificates,
        check.request_timeout,
    )
    .map_err(StatusError::Tls)?;
    let request = StatusRequest::sign(identity, unix_millis());
    // Two strings and a number always serialize.
    let json = serde_json::to_vec(&StatusBody::from(&request))
        .expect("the status body serializes to JSON");
    let (status, body) = super::http::post_json(&http, &url, json)
        .await
        .map_err(|e| StatusError::Transport(e.into()))?;
    if !status.is_success() {
        return Err(refused(status.as_u16(), super::http::refusal(&body)));
    }
    let reply: StatusReply = serde_json::from_slice(&body).map_err(|e| {
        StatusError::InvalidResponse(format!("status {status} with an unreadable body: {e}"))
    })?;
    if reply.sign_public_key != request.sign_public_key || reply.timestamp != request.timestamp {
        return Err(StatusError::InvalidResponse(
            "the answer is about another key or another question".into(),
        ));
    }
    Ok(reply.status)
}

/// The error for a refused question.
fn refused(status: u16, refusal: Option<ErrorBody<ApiCode>>) -> StatusError {
    let (code, message) = match refusal {
        Some(ErrorBody { code, message }) => (Some(code), message),
        None => (None, format!("status {status} without a refusal body")),
    };
    match code {
        Some(ApiCode::StaleRequest) => StatusError::ClockSkew,
        Some(ApiCode::RateLimited) => StatusError::RateLimited,
        _ if status == 429 => StatusError::RateLimited,
        code if status >= 500 => StatusError::Unavailable { status, code },
        code => StatusError::Rejected { code, message },
    }
}

/// Unix milliseconds on the device's clock; 0 for a clock before 1970 (the server then
/// answers `stale_request`).
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Ends the session as [`SessionEnd::Revoked`] when `ask` answers that its key is revoked or
/// deleted, asking only while logins have been refused for `after` without an admitted one
/// between (see [`StatusCheck::after_refusals_for`]). Runs until the session ends or the task
/// is aborted.
pub(super) async fn end_when_retired<F, Fut>(liveness: &Liveness, after: Duration, ask: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<KeyStatus, StatusError>>,
{
    while !liveness.has_ended() {
        let run = liveness.refused_since().await;
        let (mut from, mut wait) = (run, after);
        loop {
            // A wait too long for the clock to express is a question never asked.
            let Some(at) = from.checked_add(wait.saturating_add(jittered(wait))) else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(at).await;
            if liveness.has_ended() || liveness.refusals_began() != Some(run) {
                break;
            }
            match ask().await {
                Ok(status) if status.is_retired() => {
                    tracing::info!(%status, "membershipd says this identity is {status}");
                    liveness.end(SessionEnd::Revoked);
                    return;
                }
                Ok(status) => {
                    tracing::debug!(%status, "logins are refused, but the key is not retired")
                }
                Err(error) => tracing::debug!(%error, "could not ask whether the key is retired"),
            }
            from = tokio::time::Instant::now();
            wait = wait.saturating_mul(2).min(CHECK_CAP);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use async_nats::{Event, ServerError};

    use super::*;
    use crate::client::ConnectionState;

    const AFTER: Duration = Duration::from_secs(10);

    /// Runs the check over `liveness` with `answer` counting its questions.
    fn spawn_check(
        liveness: &Arc<Liveness>,
        answer: Result<KeyStatus, ()>,
    ) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let (liveness, counter) = (Arc::clone(liveness), Arc::clone(&asked));
        let task = tokio::spawn(async move {
            end_when_retired(&liveness, AFTER, || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::ready(answer.map_err(|()| StatusError::RateLimited))
            })
            .await;
        });
        (asked, task)
    }

    fn refuse(liveness: &Liveness) {
        liveness.on_event(&Event::ServerError(ServerError::AuthorizationViolation));
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoked_answer_after_long_refusals_ends_the_session() {
        let liveness = Liveness::new();
        let (asked, task) = spawn_check(&liveness, Ok(KeyStatus::Revoked));
        refuse(&liveness);
        // Not before the refusals have lasted `AFTER`.
        tokio::time::sleep(AFTER - Duration::from_millis(1)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 0);
        // And at most twice that.
        tokio::time::sleep(AFTER).await;
        task.await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(
            liveness.state(),
            ConnectionState::Ended(SessionEnd::Revoked)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn active_or_unanswered_questions_never_end_the_session_and_come_less_often() {
        for answer in [Ok(KeyStatus::Active), Ok(KeyStatus::Unknown), Err(())] {
            let liveness = Liveness::new();
            let (asked, task) = spawn_check(&liveness, answer);
            refuse(&liveness);
            // Within an hour of refusals: the first question 10 to 20 s in, then each a wait
            // of w to 2w after the one before, w doubling from 20 s up to 15 minutes: 7 to 9
            // questions, where asking every 10 s would have made 360.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let questions = asked.load(Ordering::SeqCst);
            assert!((7..=9).contains(&questions), "{answer:?}: {questions}");
            assert_eq!(liveness.state(), ConnectionState::Reconnecting);
            task.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_admitted_login_ends_the_run_of_refusals_before_anyone_asks() {
        let liveness = Liveness::new();
        let (asked, task) = spawn_check(&liveness, Ok(KeyStatus::Revoked));
        refuse(&liveness);
        tokio::time::sleep(AFTER / 2).await;
        liveness.on_event(&Event::Connected);
        liveness.prove_latest();
        tokio::time::sleep(AFTER * 3).await;
        assert_eq!(asked.load(Ordering::SeqCst), 0);
        assert_eq!(liveness.state(), ConnectionState::Connected);
        // A later run of refusals is timed from its own start.
        refuse(&liveness);
        tokio::time::sleep(AFTER * 2).await;
        task.await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert!(liveness.has_ended());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_too_long_for_the_clock_never_asks_and_never_panics() {
        let liveness = Liveness::new();
        let asked = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (liveness, counter) = (Arc::clone(&liveness), Arc::clone(&asked));
            async move {
                end_when_retired(&liveness, Duration::MAX, || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(Ok(KeyStatus::Revoked))
                })
                .await;
            }
        });
        refuse(&liveness);
        tokio::time::sleep(Duration::from_secs(365 * 24 * 3600)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 0);
        assert!(!task.is_finished(), "the task neither ended nor panicked");
        task.abort();
    }

    #[test]
    fn each_refusal_has_its_own_error() {
        let body = |code: ApiCode| Some(ErrorBody::new(code, "m"));
        assert!(matches!(
            refused(401, body(ApiCode::StaleRequest)),
            StatusError::ClockSkew
        ));
        assert!(matches!(refused(429, None), StatusError::RateLimited));
        assert!(matches!(
            refused(503, body(ApiCode::Unavailable)),
            StatusError::Unavailable { status: 503, .. }
        ));
        assert!(matches!(
            refused(401, body(ApiCode::BadSignature)),
            StatusError::Rejected {
                code: Some(ApiCode::BadSignature),
                ..
            }
        ));
        assert!(matches!(
            refused(404, None),
            StatusError::Rejected { code: None, .. }
        ));
    }
}
