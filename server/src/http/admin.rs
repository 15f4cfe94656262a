//! `POST /admin`: the signed admin API (see `unibus::admin` for the signature).
//!
//! Checks, in order, each refusing with its own code (`docs/protocol.md` §13):
//! 1. the per-address rate limit ([`ADMIN_RATE`], [`ADMIN_BURST`]): `429 rate_limited`;
//! 2. `Content-Type: application/json`: `415 unsupported_media_type`;
//! 3. the `Unibus-Signature` header, 128 hex: `401 bad_signature`;
//! 4. the body, a strict JSON object ([`unibus::protocol::json`]): `400 malformed_body`; its `admin` key:
//!    `400 bad_key`;
//! 5. the signature over the exact body bytes: `401 bad_signature`;
//! 6. the timestamp within [`REQUEST_WINDOW`] of the server's clock, read once per request:
//!    `401 stale_request`; the nonce, 32 hex: `400 malformed_body`;
//! 7. the key is an active admin: `403 not_admin`;
//! 8. the nonce was not used before: `401 replayed`. Only requests that passed 1 to 7 record a
//!    nonce, so no one but an admin can fill the replay table. A nonce is kept until twice the
//!    window past its timestamp, strictly longer than any moment its request could pass.
//!
//! Then the operation, [`AdminOperation`] (the same the CLI runs), with strictly read
//! params:
//!
//! | operation | params | result |
//! |---|---|---|
//! | `user.add` | `sign_public_key`, `kex_public_key`, `admin`? | the user |
//! | `user.list` | | `[user]` |
//! | `user.revoke` | `sign_public_key` | `{"revoked": key}` |
//! | `user.delete` | `sign_public_key` | `{"deleted": key}` |
//! | `invite.create` | `admin`?, `ttl_hours`? (1 to 8760, default 168) | `{"invite", "link"}` |
//! | `invite.list` | | `[{"invite", "status"}]` |
//! | `invite.cancel` | `id` | `{"cancelled": id}` |
//! | `room.create` | `room`, `owner` | the room |
//! | `room.add_member` | `room`, `member` | `{"room", "added": member}` |
//! | `room.remove_member` | `room`, `member` | `{"room", "removed": member}` |
//! | `room.list` | | `[room]` |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::Value;
use unibus::admin::{verify_admin_body, SIGNATURE_HEADER};
use unibus::{SignPublicKey, Signature};

use super::{require_json, ApiError, AppState};
use crate::admin::{AdminOperation, OperationError};
use crate::store::{now_millis, Millis};
use unibus::protocol::admin::AdminBody;
use unibus::protocol::codes::ApiCode;

/// How far a request's timestamp may be from the server's clock, either way.
pub const REQUEST_WINDOW: Duration = Duration::from_secs(60);

/// Admin requests per second allowed per client address, after the burst.
pub const ADMIN_RATE: f64 = 5.0;

/// Admin requests allowed at once per client address.
pub const ADMIN_BURST: u32 = 50;

/// Whether `timestamp` is within the window of `now`. No arithmetic on the untrusted number can
/// overflow: the distance is computed as an unsigned difference.
pub(super) fn is_fresh(timestamp: Millis, now: Millis) -> bool {
    u128::from(now.abs_diff(timestamp)) <= REQUEST_WINDOW.as_millis()
}

/// Until when a fresh request's nonce is kept: twice the window past its timestamp, so it
/// outlives every moment at which the request could pass the freshness check.
fn nonce_expiry(timestamp: Millis) -> Millis {
    let window = Millis::try_from(REQUEST_WINDOW.as_millis()).unwrap_or(Millis::MAX);
    timestamp.saturating_add(window.saturating_mul(2))
}

pub(super) async fn admin(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if !state.admin_limiter.allow(peer.ip()) {
        return Err(ApiError::new(
            ApiCode::RateLimited,
            "too many admin requests from this address; wait and retry",
        ));
    }
    require_json(&headers)?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Signature::from_hex(v).ok())
        .ok_or_else(|| {
            ApiError::new(
                ApiCode::BadSignature,
                "missing or malformed Unibus-Signature header",
            )
        })?;
    let AdminBody {
        admin,
        timestamp,
        nonce,
        operation,
        params,
    } = AdminBody::from_json(&body)
        .map_err(|e| ApiError::new(ApiCode::MalformedBody, e.to_string()))?;
    let admin = SignPublicKey::from_hex(&admin)
        .map_err(|e| ApiError::new(ApiCode::BadKey, e.to_string()))?;
    verify_admin_body(&admin, &body, &signature)
        .map_err(|_| ApiError::new(ApiCode::BadSignature, "the signature does not verify"))?;
    // One reading of the clock decides freshness and the nonce's expiry alike.
    let now = now_millis();
    if !is_fresh(timestamp, now) {
        return Err(ApiError::new(
            ApiCode::StaleRequest,
            "the timestamp is outside the accepted window; check the clock",
        ));
    }
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            ApiCode::MalformedBody,
            "the field `nonce` must be 32 hex characters",
        ));
    }
    if !state.store.has_admin(&admin).await {
        return Err(ApiError::new(
            ApiCode::NotAdmin,
            "the key is not an active admin",
        ));
    }
    // Recorded in the store, so every instance sharing it refuses the replay. Lowercased, so a
    // replay cannot pass by changing the nonce's case (the signature covers the body as sent).
    let nonce = nonce.to_ascii_lowercase();
    if !state
        .store
        .record_nonce(&nonce, now, nonce_expiry(timestamp))
        .await?
    {
        return Err(ApiError::new(
            ApiCode::Replayed,
            "this request was already used",
        ));
    }
    let operation = AdminOperation::from_json(&operation, params).map_err(OperationError::from)?;
    Ok(Json(
        crate::admin::run(operation, &*state.store, &state.public_url, Some(admin)).await?,
    ))
}

impl From<OperationError> for ApiError {
    fn from(error: OperationError) -> Self {
        match error {
            OperationError::BadInput(message) => ApiError::new(ApiCode::BadRequest, message),
            // The name is the caller's text: not repeated.
            OperationError::Unknown(_) => ApiError::new(
                ApiCode::UnknownOperation,
                "no such operation; protocol §13 lists them",
            ),
            OperationError::Store(e) => e.into(),
            OperationError::Misconfigured(message) => {
                ApiError::new(ApiCode::Misconfigured, message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_holds_at_the_window_edges_and_never_overflows() {
        let now = 1_700_000_000_000;
        let window = REQUEST_WINDOW.as_millis() as Millis;
        assert!(is_fresh(now - window, now));
        assert!(is_fresh(now + window, now));
        assert!(!is_fresh(now - window - 1, now));
        assert!(!is_fresh(now + window + 1, now));
        for extreme in [Millis::MIN, Millis::MAX, 0, -1] {
            assert!(!is_fresh(extreme, now));
            let _ = nonce_expiry(extreme);
        }
        assert_eq!(nonce_expiry(Millis::MAX), Millis::MAX);
    }

    #[test]
    fn a_nonce_outlives_every_moment_its_request_could_pass() {
        let timestamp = 1_700_000_000_000;
        let window = REQUEST_WINDOW.as_millis() as Millis;
        // The last moment the request is fresh, and the store forgets only once expiry <= now.
        let last_fresh = timestamp + window;
        assert!(is_fresh(timestamp, last_fresh));
        assert!(nonce_expiry(timestamp) > last_fresh);
    }
}
