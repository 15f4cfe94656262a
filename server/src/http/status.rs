//! `POST /status`: a user asks whether its own key is still a user (`docs/protocol.md` §10.2,
//! `unibus::protocol::status`).
//!
//! Checks, in order, each refusing with its own code and changing nothing:
//! 1. the per-address rate limit ([`STATUS_RATE`], [`STATUS_BURST`]): `429 rate_limited`;
//! 2. `Content-Type: application/json`: `415 unsupported_media_type`; the body's size:
//!    `413 too_large`;
//! 3. the body, a strict JSON object: `400 malformed_body`; its key: `400 bad_key`; the
//!    signature's form and the signature: `401 bad_signature`;
//! 4. the timestamp within [`REQUEST_WINDOW`] of the server's clock: `401 stale_request`.
//!
//! Then the store answers the key's status (`503 unavailable` when it cannot).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Json;
use unibus::protocol::codes::ApiCode;
use unibus::protocol::status::{StatusBody, StatusReply, StatusRequest, StatusRequestError};

use super::admin::{is_fresh, REQUEST_WINDOW};
use super::{read_body, require_json, ApiError, AppState};
use crate::store::now_millis;

/// Status requests per second allowed per client address, after the burst. A client asks only
/// after its logins were refused for a while, and then rarely; many clients may share an
/// address behind a carrier's NAT.
pub const STATUS_RATE: f64 = 10.0;

/// Status requests allowed at once per client address.
pub const STATUS_BURST: u32 = 100;

pub(super) async fn status(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StatusReply>, ApiError> {
    if !state.status_limiter.allow(peer.ip()) {
        return Err(ApiError::new(
            ApiCode::RateLimited,
            "too many status requests from this address; wait and retry",
        ));
    }
    require_json(&headers)?;
    let body = read_body(body)?;
    let fields = StatusBody::from_json(&body)
        .map_err(|e| ApiError::new(ApiCode::MalformedBody, e.to_string()))?;
    let request = StatusRequest::try_from(&fields).map_err(request_error)?;
    request.verify().map_err(request_error)?;
    if !is_fresh(request.timestamp, now_millis()) {
        return Err(ApiError::new(
            ApiCode::StaleRequest,
            format!(
                "the timestamp is more than {} s from the server's clock; check the clock",
                REQUEST_WINDOW.as_secs()
            ),
        ));
    }
    let status = state.store.key_status(&request.sign_public_key).await?;
    tracing::debug!(key = %request.sign_public_key, %status, "status asked");
    Ok(Json(StatusReply {
        sign_public_key: request.sign_public_key,
        timestamp: request.timestamp,
        status,
    }))
}

fn request_error(error: StatusRequestError) -> ApiError {
    let message = error.to_string();
    match error {
        StatusRequestError::BadKey(_) => ApiError::new(ApiCode::BadKey, message),
        _ => ApiError::new(ApiCode::BadSignature, message),
    }
}
