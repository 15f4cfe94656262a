//! Redeeming an invite over HTTPS: `POST {server}/register` (docs/protocol.md §10).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::RegisterError;
use crate::protocol::codes::{ApiCode, ErrorBody};
use crate::protocol::registration::RegisterReply;
use crate::registration::{RegisterBody, RegisterRequest};
use crate::{Identity, InviteLink, KexPublicKey, SignPublicKey};

/// What an identity needs to log in after registering; store it beside the identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The server base URL of the invite (section 5.3 of the protocol).
    pub server_url: String,
    /// The registered signing key: this identity's.
    pub sign_public_key: SignPublicKey,
    /// The registered key-exchange key: this identity's.
    pub kex_public_key: KexPublicKey,
    /// Whether the invite made this user an admin.
    pub admin: bool,
    /// The cluster's NATS URLs, for [`Session::connect`](super::Session::connect).
    pub nats_urls: Vec<String>,
}

/// How [`register`] talks to the server.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// Attempts in all, including the first (at least 1). Failures that may pass (connection
    /// errors, timeouts, `429` and `5xx`) are retried; refusals are not.
    pub attempts: u32,
    /// The wait before the first retry; it doubles on each retry, up to [`max_backoff`](Self::max_backoff).
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// The time limit of each attempt, from connecting to the end of the reply.
    pub request_timeout: Duration,
    /// DER certificates of the only certificate authorities to trust, for a server with a
    /// private CA. Empty (the default): the platform's trust store decides.
    pub trusted_root_certificates: Vec<Vec<u8>>,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            request_timeout: Duration::from_secs(10),
            trusted_root_certificates: Vec::new(),
        }
    }
}

/// Redeems `link`'s invite for `identity`: signs the proof of possession (protocol §10) and
/// posts it to the link's server, retrying transient failures with exponential backoff.
///
/// Retrying is safe: the server answers a repeated request of the same identity with the same
/// success, so a lost response never loses the registration, and a refused request spends
/// nothing.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use unibus::client::{register, RegisterOptions};
/// use unibus::{Identity, InviteLink};
///
/// let link = InviteLink::parse("https://members.example.com/invite#<64 hex>")?;
/// let me = Identity::generate()?;
/// let registration = register(&link, &me, &RegisterOptions::default()).await?;
/// println!("registered; the cluster is at {:?}", registration.nats_urls);
/// # Ok(()) }
/// ```
pub async fn register(
    link: &InviteLink,
    identity: &Identity,
    options: &RegisterOptions,
) -> Result<Registration, RegisterError> {
    let url = link.register_url();
    let http = super::http::client(
        &url,
        &options.trusted_root_certificates,
        options.request_timeout,
    )
    .map_err(RegisterError::Tls)?;
    let body = RegisterBody::from(&RegisterRequest::sign(identity, link.token().clone()));
    let mut backoff = options.initial_backoff;
    let mut attempt = 1;
    loop {
        match post_once(&http, &url, &body).await {
            Ok(reply) => return check_reply(reply, link, identity),
            Err(Attempt::Final(error)) => return Err(error),
            Err(Attempt::Transient(error)) if attempt >= options.attempts.max(1) => {
                return Err(error)
            }
            Err(Attempt::Transient(error)) => {
                tracing::debug!(attempt, %error, "registration attempt failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.max_backoff);
                attempt += 1;
            }
        }
    }
}

/// The result of one attempt that did not succeed.
enum Attempt {
    /// Retrying may help.
    Transient(RegisterError),
    /// It will not.
    Final(RegisterError),
}

async fn post_once(
    http: &reqwest::Client,
    url: &str,
    body: &RegisterBody,
) -> Result<RegisterReply, Attempt> {
    // Four strings always serialize.
    let json = serde_json::to_vec(body).expect("the register body serializes to JSON");
    let (status, bytes) = super::http::post_json(http, url, json)
        .await
        .map_err(|e| Attempt::Transient(RegisterError::Transport(e.into())))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| {
            Attempt::Final(RegisterError::InvalidResponse(format!(
                "status {status} with an unreadable body: {e}"
            )))
        });
    }
    Err(classify(status.as_u16(), super::http::refusal(&bytes)))
}

/// The error for a refused attempt (its refusal, if the body carried one), and whether
/// retrying may help.
fn classify(status: u16, refusal: Option<ErrorBody<ApiCode>>) -> Attempt {
    let Some(ErrorBody { code, message }) = refusal else {
        return match status {
            429 => Attempt::Transient(RegisterError::RateLimited),
            500.. => Attempt::Transient(RegisterError::Unavailable { status, code: None }),
            _ => Attempt::Final(RegisterError::Rejected {
                code: None,
                message: format!("status {status} without a refusal body"),
            }),
        };
    };
    let error = match code {
        ApiCode::InviteUnknown => RegisterError::InviteUnknown,
        ApiCode::InviteUsed => RegisterError::InviteUsed,
        ApiCode::UserExists => RegisterError::AlreadyRegistered,
        ApiCode::UserDeleted => RegisterError::UserDeleted,
        ApiCode::UserRevoked => RegisterError::UserRevoked,
        ApiCode::InviteExpired => RegisterError::InviteExpired,
        ApiCode::InviteCancelled => RegisterError::InviteCancelled,
        ApiCode::RateLimited => return Attempt::Transient(RegisterError::RateLimited),
        _ if status == 429 => return Attempt::Transient(RegisterError::RateLimited),
        code if status >= 500 => {
            return Attempt::Transient(RegisterError::Unavailable {
                status,
                code: Some(code),
            })
        }
        code => RegisterError::Rejected {
            code: Some(code),
            message,
        },
    };
    Attempt::Final(error)
}

/// Checks that the server registered exactly this identity, and keeps what the app needs.
fn check_reply(
    reply: RegisterReply,
    link: &InviteLink,
    identity: &Identity,
) -> Result<Registration, RegisterError> {
    if reply.sign_public_key != identity.sign_public_key()
        || reply.kex_public_key != identity.kex_public_key()
    {
        return Err(RegisterError::InvalidResponse(
            "the server registered other keys than this identity's".into(),
        ));
    }
    if reply.nats_urls.is_empty() {
        return Err(RegisterError::InvalidResponse(
            "the reply names no cluster address".into(),
        ));
    }
    Ok(Registration {
        server_url: link.server_url().to_owned(),
        sign_public_key: reply.sign_public_key,
        kex_public_key: reply.kex_public_key,
        admin: reply.admin,
        nats_urls: reply.nats_urls,
    })
}
