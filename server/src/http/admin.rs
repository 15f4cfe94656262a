//! `POST /admin`: the signed admin API (see `unibus::admin` for the signature).
//!
//! The server accepts a request only if its signature verifies, its timestamp is within
//! [`REQUEST_WINDOW`] of the server's clock, its nonce was not seen in that window (replays are
//! refused), and the key is an active admin. The operations are [`crate::admin::Operation`],
//! the same the CLI runs:
//!
//! | operation | params | result |
//! |---|---|---|
//! | `user.add` | `sign_public_key`, `kex_public_key`, `admin`? | the user |
//! | `user.list` | | users |
//! | `user.revoke`, `user.delete` | `sign_public_key` | `{}` |
//! | `invite.create` | `admin`?, `ttl_hours`? | `{"invite", "link"}` |
//! | `invite.list` | | `[{"invite", "status"}]` |
//! | `invite.cancel` | `id` | `{}` |
//! | `room.create` | `room`, `owner` | the room |
//! | `room.add_member`, `room.remove_member` | `room`, `member` | `{}` |
//! | `room.list` | | rooms |

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use unibus::admin::{verify_admin_body, SIGNATURE_HEADER};
use unibus::{SignPublicKey, Signature};

use super::{ApiError, AppState};
use crate::admin::{Operation, OperationError};
use crate::store::{now_millis, Millis};

/// How far a request's timestamp may be from the server's clock, either way.
pub const REQUEST_WINDOW: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminBody {
    admin: String,
    timestamp: Millis,
    nonce: String,
    operation: String,
    #[serde(default)]
    params: Value,
}

fn error_of(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

pub(super) async fn admin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let unauthorized = |code, message: &str| error_of(StatusCode::UNAUTHORIZED, code, message);
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Signature::from_hex(v).ok())
        .ok_or_else(|| {
            unauthorized(
                "bad_signature",
                "missing or malformed Unibus-Signature header",
            )
        })?;
    let request: AdminBody = serde_json::from_slice(&body).map_err(|e| {
        error_of(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("expected an admin request: {e}"),
        )
    })?;
    let admin = SignPublicKey::from_hex(&request.admin)
        .map_err(|e| error_of(StatusCode::BAD_REQUEST, "bad_key", e.to_string()))?;
    verify_admin_body(&admin, &body, &signature)
        .map_err(|_| unauthorized("bad_signature", "the signature does not verify"))?;
    let now = now_millis();
    let window = REQUEST_WINDOW.as_millis() as Millis;
    if (now - request.timestamp).abs() > window {
        return Err(unauthorized(
            "stale_request",
            "the timestamp is outside the accepted window; check the clock",
        ));
    }
    if request.nonce.len() != 32 || !request.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(error_of(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "the nonce must be 32 hex characters",
        ));
    }
    // Recorded in the store, so every instance sharing it refuses the replay.
    if !state
        .store
        .record_nonce(&request.nonce, request.timestamp + window)
        .await?
    {
        return Err(unauthorized("replayed", "this request was already used"));
    }
    if !state.store.has_admin(&admin).await {
        return Err(error_of(
            StatusCode::FORBIDDEN,
            "not_admin",
            "the key is not an active admin",
        ));
    }
    let operation = Operation::from_json(&request.operation, &request.params)?;
    Ok(Json(
        operation
            .run(&*state.store, &state.public_url, Some(admin))
            .await?,
    ))
}

impl From<OperationError> for ApiError {
    fn from(error: OperationError) -> Self {
        match error {
            OperationError::BadInput(message) => {
                error_of(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            OperationError::Unknown(name) => error_of(
                StatusCode::BAD_REQUEST,
                "unknown_operation",
                format!("no operation {name:?}"),
            ),
            OperationError::Store(e) => e.into(),
            OperationError::Misconfigured(message) => {
                error_of(StatusCode::INTERNAL_SERVER_ERROR, "misconfigured", message)
            }
        }
    }
}
