//! A login storm: many clients connecting to the cluster at the same moment, each logging in
//! with its own key as protocol §11 says, and retrying a refused or unanswered login with full
//! jitter (a random wait between zero and 250 ms, doubling up to 8 s), as the protocol asks of
//! every client. The login storm test and the `storm` benchmark use it.
//!
//! A client counts as logged in once a round trip on its own inbox comes back (protocol §11):
//! async-nats may report a login connected before nats-server has decided it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use unibus::{subjects, Identity};

/// How one storm went.
pub struct StormReport {
    /// The connected clients, kept open until the report is dropped.
    pub clients: Vec<async_nats::Client>,
    /// Clients that never connected before the deadline.
    pub failed: usize,
    /// Clients admitted on their first attempt.
    pub first_try: usize,
    /// Each connected client's time from the start of the storm to its login.
    pub latencies: Vec<Duration>,
}

impl StormReport {
    /// The time until the last client logged in.
    pub fn time_to_last(&self) -> Duration {
        self.latencies.iter().max().copied().unwrap_or_default()
    }

    /// The latency at `quantile` (0.0 to 1.0).
    pub fn quantile(&self, quantile: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() - 1) as f64 * quantile).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }
}

/// How each client of a storm logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Login {
    /// With its key's nkey and its own inbox prefix (the unibus protocol).
    Unibus,
    /// With its key's nkey only (the floor: a nats-server with the same users as static nkeys).
    StaticNkey,
    /// With a user JWT, one per identity in the same order, and its own inbox prefix: for a
    /// nats-server in operator mode, which verifies the JWT itself (no callout).
    UserJwt(Arc<[String]>),
}

/// Connects one client per identity to `urls`, all at once, retrying refused and unanswered
/// logins with full jitter until `deadline` after the start.
pub async fn storm(
    urls: &[String],
    identities: &[Arc<Identity>],
    login: Login,
    deadline: Duration,
) -> StormReport {
    let started = Instant::now();
    let addrs: Vec<async_nats::ServerAddr> = urls.iter().filter_map(|u| u.parse().ok()).collect();
    let tasks: Vec<_> = identities
        .iter()
        .enumerate()
        .map(|(index, id)| {
            let (id, addrs, login) = (Arc::clone(id), addrs.clone(), login.clone());
            tokio::spawn(async move {
                let mut attempt = 0u32;
                let jitter = Arc::new(Mutex::new(Jitter::new(index as u64)));
                // Set by a refusal or a lost connection after async-nats returned the client.
                let retried = Arc::new(AtomicBool::new(false));
                let connected = Arc::new(AtomicBool::new(false));
                loop {
                    attempt += 1;
                    let options = match &login {
                        Login::UserJwt(jwts) => {
                            let signer = Arc::clone(&id);
                            async_nats::ConnectOptions::with_jwt(
                                jwts.get(index).cloned().unwrap_or_default(),
                                move |nonce| {
                                    let signature = signer.sign(&nonce).to_bytes().to_vec();
                                    std::future::ready(Ok(signature))
                                },
                            )
                        }
                        _ => async_nats::ConnectOptions::with_nkey(id.nkey_seed().to_string()),
                    };
                    let mut options = options
                        .connection_timeout(Duration::from_secs(12))
                        .max_reconnects(None)
                        .reconnect_delay_callback({
                            // async-nats asks before every attempt, the first included;
                            // only reconnections wait (this loop paces the first login).
                            let (jitter, connected) = (Arc::clone(&jitter), Arc::clone(&connected));
                            move |attempts| {
                                if connected.load(Ordering::Relaxed) {
                                    jitter_wait(&jitter, attempts as u32)
                                } else {
                                    Duration::ZERO
                                }
                            }
                        })
                        .event_callback({
                            let (retried, connected) =
                                (Arc::clone(&retried), Arc::clone(&connected));
                            move |event| {
                                if matches!(event, async_nats::Event::Connected) {
                                    connected.store(true, Ordering::Relaxed);
                                }
                                if matches!(
                                    event,
                                    async_nats::Event::Disconnected
                                        | async_nats::Event::ServerError(_)
                                ) {
                                    retried.store(true, Ordering::Relaxed);
                                }
                                std::future::ready(())
                            }
                        });
                    if login != Login::StaticNkey {
                        options = options
                            .custom_inbox_prefix(subjects::inbox_prefix(&id.sign_public_key()));
                    }
                    match options.connect(addrs.clone()).await {
                        Ok(client) => {
                            // The client logs in again by itself if this login is refused.
                            while started.elapsed() < deadline {
                                if round_trip(&client).await {
                                    let first = attempt == 1 && !retried.load(Ordering::Relaxed);
                                    return Some((client, first, started.elapsed()));
                                }
                            }
                            return None;
                        }
                        Err(_) => {
                            let wait = jitter_wait(&jitter, attempt);
                            if started.elapsed() + wait > deadline {
                                return None;
                            }
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            })
        })
        .collect();
    let mut report = StormReport {
        clients: Vec::new(),
        failed: 0,
        first_try: 0,
        latencies: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok(Some((client, first, latency))) => {
                report.clients.push(client);
                report.first_try += usize::from(first);
                report.latencies.push(latency);
            }
            _ => report.failed += 1,
        }
    }
    report
}

/// Whether a message `client` publishes to a fresh subject of its own inbox comes back within
/// a second. Operations sent while the login is undecided wait for it, so the try under way
/// when it is admitted comes back at once.
async fn round_trip(client: &async_nats::Client) -> bool {
    let subject = client.new_inbox();
    let Ok(mut echo) = client.subscribe(subject.clone()).await else {
        return false;
    };
    if client.publish(subject, "".into()).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(1), echo.next()).await,
        Ok(Some(_))
    )
}

/// The next wait from a client's shared generator.
fn jitter_wait(jitter: &Mutex<Jitter>, attempt: u32) -> Duration {
    // A poisoned generator still makes waits: any state of it is a valid one.
    jitter
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .wait(attempt)
}

/// Full jitter from a small per-client generator (xorshift; no cryptographic need).
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Self((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos) | 1)
    }

    fn wait(&mut self, attempt: u32) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let bound = Duration::from_millis(250)
            .saturating_mul(1 << attempt.saturating_sub(1).min(5))
            .min(Duration::from_secs(8));
        bound.mul_f64((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}
