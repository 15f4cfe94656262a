//! `POST /register`: redeem an invite with two public keys and a proof of possession.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use unibus::registration::{RegisterBody, RegisterRequest, RegisterRequestError};

use super::{require_json, ApiError, AppState};
use crate::json::{JsonError, Object};

/// The success response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The registered signing key (canonical hex).
    pub sign_public_key: String,
    /// The registered key-exchange key (canonical hex).
    pub kex_public_key: String,
    /// Whether the user is an admin.
    pub admin: bool,
    /// Where to connect to the cluster, logging in with the signing key's nkey.
    pub nats_urls: Vec<String>,
}

/// The fields of a registration body.
const FIELDS: &[&str] = &["token", "sign_public_key", "kex_public_key", "signature"];

/// Reads a registration body strictly ([`crate::json`]): one JSON object with exactly the four
/// string fields, nothing else. Errors name fields, never values.
pub fn parse_body(bytes: &[u8]) -> Result<RegisterBody, JsonError> {
    let mut object = Object::parse(bytes, FIELDS)?;
    Ok(RegisterBody {
        token: object.str("token")?,
        sign_public_key: object.str("sign_public_key")?,
        kex_public_key: object.str("kex_public_key")?,
        signature: object.str("signature")?,
    })
}

pub(super) async fn register(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RegisterResponse>, ApiError> {
    if !state.register_limiter.allow(peer.ip()) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many registration attempts from this address; wait and retry",
        ));
    }
    require_json(&headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is larger than {} bytes", super::MAX_BODY_BYTES),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                "the body could not be read",
            )
        }
    })?;
    let fields = parse_body(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()))?;
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
    Ok(Json(RegisterResponse {
        sign_public_key: user.sign_key.to_hex(),
        kex_public_key: user.kex_key.to_hex(),
        admin: user.admin,
        nats_urls: state.nats_urls.clone(),
    }))
}

fn request_error(error: RegisterRequestError) -> ApiError {
    let message = error.to_string();
    match error {
        RegisterRequestError::BadToken(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_token", message)
        }
        RegisterRequestError::BadKey(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_key", message)
        }
        RegisterRequestError::BadSignature(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", message),
    }
}
