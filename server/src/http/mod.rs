//! The HTTP API: `POST /register`, the signed admin API `POST /admin`, and `GET /healthz`.
//!
//! Errors are JSON, `{"error": {"code": "...", "message": "..."}}`, with a distinct code and
//! HTTP status per cause (see [`ApiError`] and `docs/protocol.md`). Invite tokens and request
//! bodies are never logged.

mod admin;
mod rate_limit;
mod register;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use admin::REQUEST_WINDOW;
pub use rate_limit::RateLimiter;
pub use register::RegisterResponse;
pub use unibus::registration::RegisterBody;

use crate::store::{Store, StoreError};

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
    /// The server's public base URL, for invite links made through the admin API.
    pub public_url: String,
    /// membershipd's own NATS connection, whose state `/healthz` reports (`None` when the API
    /// runs without a cluster, as in tests of the HTTP layer alone).
    pub nats: Option<async_nats::Client>,
}

/// The HTTP routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/register", post(register::register))
        .route("/healthz", get(healthz))
        .route("/admin", post(admin::admin))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API over plain HTTP on `listener` until `shutdown` completes (for loopback, or
/// behind a TLS-terminating proxy; see [`serve_tls`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The certificate chain and private key, PEM files, for serving HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: std::path::PathBuf,
    /// The private key.
    pub key: std::path::PathBuf,
}

/// Serves the API over HTTPS (rustls) on `listener` until `shutdown` completes, then lets
/// requests in flight finish for up to 5 s.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    tls: &TlsFiles,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // One process-wide crypto provider: ring, which the NATS client already links. Installing
    // it twice is harmless (the second call reports the first).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key).await?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(router(state).into_make_service_with_connect_info::<SocketAddr>())
        .await
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

/// An API error: a stable code, an HTTP status, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `invite_used`.
    pub code: &'static str,
    /// What went wrong and what to do, without secrets.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        use StatusCode as S;
        let message = error.to_string();
        match error {
            StoreError::InviteUnknown => Self::new(S::NOT_FOUND, "invite_unknown", message),
            StoreError::InviteExpired => Self::new(S::GONE, "invite_expired", message),
            StoreError::InviteCancelled => Self::new(S::GONE, "invite_cancelled", message),
            StoreError::InviteUsed => Self::new(S::CONFLICT, "invite_used", message),
            StoreError::UserExists => Self::new(S::CONFLICT, "user_exists", message),
            StoreError::RoomExists => Self::new(S::CONFLICT, "room_exists", message),
            StoreError::EpochConflict { .. } => Self::new(S::CONFLICT, "epoch_conflict", message),
            StoreError::NotFound => Self::new(S::NOT_FOUND, "not_found", message),
            StoreError::Invalid(_) => Self::new(S::BAD_REQUEST, "invalid", message),
            _ => Self::new(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server's store is unavailable; retry later",
            ),
        }
    }
}
