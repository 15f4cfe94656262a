//! The HTTP API: `POST /register`, `POST /status` (a user asks whether its key is still a
//! user), the signed admin API `POST /admin`, and `GET /healthz`; and what a browser or a phone
//! fetches for an invite link: the invite page `GET /invite` and the app association files
//! under `/.well-known/`.
//!
//! Errors are JSON, `{"error": {"code": "...", "message": "..."}}`, with a distinct code and
//! HTTP status per cause (see [`ApiError`] and `docs/protocol.md`). Invite tokens and request
//! bodies are never logged.

mod admin;
mod invite_page;
mod listener;
mod rate_limit;
mod register;
mod status;
mod well_known;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use admin::{ADMIN_BURST, ADMIN_RATE, REQUEST_WINDOW};
pub use invite_page::{InvitePage, INVITE_PATH};
pub use listener::HttpLimits;
pub use rate_limit::RateLimiter;
pub use status::{STATUS_BURST, STATUS_RATE};
pub use well_known::{WellKnown, ANDROID_PATH, APPLE_PATH};

use crate::app_links::AppLinks;
use crate::store::{Store, StoreError};
use unibus::protocol::codes::{ApiCode, ErrorBody};

/// The largest request body accepted, in bytes. A registration is about 350 bytes.
pub const MAX_BODY_BYTES: usize = 4096;

/// What the handlers share.
pub struct AppState {
    /// The control-plane store.
    pub store: Arc<dyn Store>,
    /// The NATS URLs a registered client is told to connect to.
    pub nats_urls: Vec<String>,
    /// The per-address limit on `/register`.
    pub register_limiter: RateLimiter,
    /// The per-address limit on `/admin`.
    pub admin_limiter: RateLimiter,
    /// The per-address limit on `/status`.
    pub status_limiter: RateLimiter,
    /// The server's public base URL, for invite links made through the admin API.
    pub public_url: String,
    /// membershipd's own NATS connection, whose state `/healthz` reports (`None` when the API
    /// runs without a cluster, as in tests of the HTTP layer alone).
    pub nats: Option<async_nats::Client>,
    /// The invite page and the association files.
    pub link_pages: LinkPages,
}

/// What a browser or a phone fetches for an invite link: the invite page and the app
/// association files, built once from the operator's app settings.
#[derive(Debug, Clone, Default)]
pub struct LinkPages {
    /// `GET /invite`.
    pub page: InvitePage,
    /// `/.well-known/apple-app-site-association` and `/.well-known/assetlinks.json`.
    pub well_known: WellKnown,
}

impl LinkPages {
    /// The pages for `app`, whose invite links start with `public_url`.
    pub fn new(app: &AppLinks, public_url: &str) -> LinkPages {
        LinkPages {
            page: InvitePage::new(app),
            well_known: WellKnown::new(app, public_url),
        }
    }
}

/// The HTTP routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/register", post(register::register))
        .route("/status", post(status::status))
        .route("/healthz", get(healthz))
        .route("/admin", post(admin::admin))
        .route(INVITE_PATH, get(invite))
        .route(APPLE_PATH, get(apple_app_site_association))
        .route(ANDROID_PATH, get(assetlinks))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// How the API is served: TLS or not, and the bounds on clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Serve HTTPS with this certificate and key; plain HTTP if `None` (for loopback, or
    /// behind a TLS-terminating proxy).
    pub tls: Option<TlsFiles>,
    /// Timeouts and connection caps.
    pub limits: HttpLimits,
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight finish
/// for up to 5 s. HTTP/1.1 only; see [`HttpLimits`] for what a client is allowed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = match &options.tls {
        Some(files) => Some(tls_acceptor(files)?),
        None => None,
    };
    listener::run(listener, router(state), options.limits, tls, shutdown).await
}

/// The certificate chain and private key, PEM files, for serving HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: std::path::PathBuf,
    /// The private key.
    pub key: std::path::PathBuf,
}

/// A TLS acceptor (rustls with *ring*) for the certificate and key in `files`, offering only
/// HTTP/1.1.
fn tls_acceptor(files: &TlsFiles) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} {}: {e}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid("certificate chain", &files.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| invalid("private key", &files.key, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid("TLS set-up for", &files.cert, &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid("certificate and key", &files.cert, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn invite(State(state): State<Arc<AppState>>) -> Response {
    state.link_pages.page.response()
}

async fn apple_app_site_association(State(state): State<Arc<AppState>>) -> Response {
    state.link_pages.well_known.apple()
}

async fn assetlinks(State(state): State<Arc<AppState>>) -> Response {
    state.link_pages.well_known.android()
}

async fn fallback(State(state): State<Arc<AppState>>, method: Method, uri: Uri) -> Response {
    invite_page::fallback(&state.link_pages.page, &method, &uri)
}

async fn healthz(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    // A lookup of a room that never exists: NotFound proves the store answered.
    let probe = unibus::RoomId::new("healthz-probe").expect("a valid room id");
    let store = match state.store.get_room(&probe).await {
        Ok(_) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    // The cluster: membershipd's own connection, which the callout and the control plane use.
    let cluster = match &state.nats {
        None => Ok(()),
        Some(client) => match client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(format!("{other:?}").to_lowercase()),
        },
    };
    let report = |part: &Result<(), String>| match part {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let healthy = store.is_ok() && cluster.is_ok();
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "store": report(&store),
        "cluster": if state.nats.is_some() { report(&cluster) } else { "not used".into() },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Refuses a request whose `Content-Type` is not `application/json` (parameters such as
/// `charset=utf-8` are allowed) with `415 unsupported_media_type`.
fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let media_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match media_type {
        Some(t) if t.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(ApiError::new(
            ApiCode::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        )),
    }
}

/// The body of a request, or `413 too_large` when it is over [`MAX_BODY_BYTES`] and
/// `400 malformed_body` when it could not be read.
fn read_body(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ApiCode::TooLarge,
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::new(ApiCode::MalformedBody, "the body could not be read")
        }
    })
}

/// An API error: a stable code, whose HTTP status the protocol fixes ([`ApiCode::status`]),
/// and a message for people, without secrets or values from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub ErrorBody<ApiCode>);

impl ApiError {
    pub(crate) fn new(code: ApiCode, message: impl Into<String>) -> Self {
        Self(ErrorBody::new(code, message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0.into_envelope())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let message = error.to_string();
        match error {
            StoreError::InviteUnknown => ApiError::new(ApiCode::InviteUnknown, message),
            StoreError::InviteExpired => ApiError::new(ApiCode::InviteExpired, message),
            StoreError::InviteCancelled => ApiError::new(ApiCode::InviteCancelled, message),
            StoreError::InviteUsed => ApiError::new(ApiCode::InviteUsed, message),
            StoreError::UserExists => ApiError::new(ApiCode::UserExists, message),
            StoreError::UserDeleted => ApiError::new(ApiCode::UserDeleted, message),
            StoreError::UserRevoked => ApiError::new(ApiCode::UserRevoked, message),
            StoreError::RoomExists => ApiError::new(ApiCode::RoomExists, message),
            StoreError::NotFound => ApiError::new(ApiCode::NotFound, message),
            StoreError::Invalid(_) => ApiError::new(ApiCode::Invalid, message),
            StoreError::Corrupt(_) => {
                tracing::error!(error = %error, "unreadable store record");
                ApiError::new(
                    ApiCode::Internal,
                    "the server could not read its own records; report this to its operator",
                )
            }
            // No admin operation rekeys, so an epoch conflict is as unexpected as the rest.
            _ => ApiError::new(
                ApiCode::Unavailable,
                "the server's store is unavailable; retry later",
            ),
        }
    }
}
