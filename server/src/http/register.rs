//! `POST /register`: redeem an invite with two public keys and a proof of possession.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Json;
use unibus::protocol::codes::ApiCode;
use unibus::protocol::registration::{RegisterBody, RegisterReply};
use unibus::registration::{RegisterRequest, RegisterRequestError};

use super::{read_body, require_json, ApiError, AppState};

pub(super) async fn register(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RegisterReply>, ApiError> {
    if !state.register_limiter.allow(peer.ip()) {
        return Err(ApiError::new(
            ApiCode::RateLimited,
            "too many registration attempts from this address; wait and retry",
        ));
    }
    require_json(&headers)?;
    let body = read_body(body)?;
    let fields = RegisterBody::from_json(&body)
        .map_err(|e| ApiError::new(ApiCode::MalformedBody, e.to_string()))?;
    let request = RegisterRequest::try_from(&fields).map_err(request_error)?;
    request.verify().map_err(request_error)?;
    // Logged: the outcome and the public key. Never the token or the body.
    let redeemed = state
        .store
        .redeem_invite(
            &request.token,
            &request.sign_public_key,
            &request.kex_public_key,
        )
        .await;
    let user = match redeemed {
        Ok(user) => {
            tracing::info!(user = %user.sign_key, "registered");
            user
        }
        Err(e) => {
            tracing::info!(key = %request.sign_public_key, error = %e, "registration refused");
            return Err(e.into());
        }
    };
    Ok(Json(RegisterReply {
        sign_public_key: user.sign_key,
        kex_public_key: user.kex_key,
        admin: user.admin,
        nats_urls: state.nats_urls.clone(),
    }))
}

fn request_error(error: RegisterRequestError) -> ApiError {
    let message = error.to_string();
    match error {
        RegisterRequestError::BadToken(_) => ApiError::new(ApiCode::BadToken, message),
        RegisterRequestError::BadKey(_) => ApiError::new(ApiCode::BadKey, message),
        RegisterRequestError::BadSignature(_) => ApiError::new(ApiCode::BadSignature, message),
        _ => ApiError::new(ApiCode::MalformedBody, message),
    }
}
