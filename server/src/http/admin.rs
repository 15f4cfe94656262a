//! `POST /admin`: the signed admin API (see `unibus::admin` for the signature).
//!
//! The server accepts a request only if its signature verifies, its timestamp is within
//! [`REQUEST_WINDOW`] of the server's clock, its nonce was not seen in that window (replays are
//! refused), and the key is an active admin. Operations mirror the CLI:
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use unibus::admin::{verify_admin_body, SIGNATURE_HEADER};
use unibus::{InviteLink, KexPublicKey, RoomId, SignPublicKey, Signature};

use super::{ApiError, AppState};
use crate::store::{now_millis, Millis, NewInvite, NewUser};

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

/// The nonces seen within the request window, to refuse replays.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<String, Millis>>,
}

impl ReplayGuard {
    /// Records `nonce` until `expires`; `false` if it was already recorded (a replay).
    fn first_use(&self, nonce: &str, now: Millis, expires: Millis) -> bool {
        // A poisoned lock only means another request panicked mid-insert; the map is intact.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, until| *until > now);
        seen.insert(nonce.to_string(), expires).is_none()
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

pub(super) async fn admin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let unauthorized = |code, message: &str| error(StatusCode::UNAUTHORIZED, code, message);
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
        error(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("expected an admin request: {e}"),
        )
    })?;
    let admin = SignPublicKey::from_hex(&request.admin)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_key", e.to_string()))?;
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
        return Err(error(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "the nonce must be 32 hex characters",
        ));
    }
    if !state
        .replay_guard
        .first_use(&request.nonce, now, request.timestamp + window)
    {
        return Err(unauthorized("replayed", "this request was already used"));
    }
    if !state.store.has_admin(&admin).await {
        return Err(error(
            StatusCode::FORBIDDEN,
            "not_admin",
            "the key is not an active admin",
        ));
    }
    execute(&state, &request.operation, &request.params, &admin)
        .await
        .map(Json)
}

fn param<'a>(params: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    params[name].as_str().ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("missing string parameter {name}"),
        )
    })
}

fn key_param(params: &Value, name: &str) -> Result<SignPublicKey, ApiError> {
    SignPublicKey::from_hex(param(params, name)?)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_key", e.to_string()))
}

fn room_param(params: &Value) -> Result<RoomId, ApiError> {
    RoomId::new(param(params, "room")?)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "malformed_body", e.to_string()))
}

async fn execute(
    state: &AppState,
    operation: &str,
    params: &Value,
    admin: &SignPublicKey,
) -> Result<Value, ApiError> {
    let store = &state.store;
    Ok(match operation {
        "user.add" => {
            let kex = KexPublicKey::from_hex(param(params, "kex_public_key")?)
                .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_key", e.to_string()))?;
            let user = NewUser {
                sign_key: key_param(params, "sign_public_key")?,
                kex_key: kex,
                admin: params["admin"].as_bool().unwrap_or(false),
            };
            json!(store.add_user(user).await?)
        }
        "user.list" => json!(store.list_users().await?),
        "user.revoke" => {
            store
                .revoke_user(&key_param(params, "sign_public_key")?)
                .await?;
            json!({})
        }
        "user.delete" => {
            store
                .delete_user(&key_param(params, "sign_public_key")?)
                .await?;
            json!({})
        }
        "invite.create" => {
            let ttl_hours = params["ttl_hours"].as_u64().unwrap_or(168);
            let (token, invite) = store
                .create_invite(NewInvite {
                    created_by: Some(*admin),
                    admin: params["admin"].as_bool().unwrap_or(false),
                    ttl: Duration::from_secs(ttl_hours.saturating_mul(3600)),
                })
                .await?;
            let link = InviteLink::new(&state.public_url, token).map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "misconfigured",
                    e.to_string(),
                )
            })?;
            json!({ "invite": invite, "link": link.to_string() })
        }
        "invite.list" => {
            let now = now_millis();
            let invites = store.list_invites().await?;
            json!(invites
                .iter()
                .map(|i| json!({ "invite": i, "status": i.status_at(now) }))
                .collect::<Vec<_>>())
        }
        "invite.cancel" => {
            store.cancel_invite(param(params, "id")?).await?;
            json!({})
        }
        "room.create" => json!(
            store
                .create_room(&room_param(params)?, &key_param(params, "owner")?)
                .await?
        ),
        "room.add_member" => {
            store
                .add_member(&room_param(params)?, &key_param(params, "member")?)
                .await?;
            json!({})
        }
        "room.remove_member" => {
            store
                .remove_member(&room_param(params)?, &key_param(params, "member")?)
                .await?;
            json!({})
        }
        "room.list" => json!(store.list_rooms().await?),
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "unknown_operation",
                format!("no operation {operation:?}"),
            ))
        }
    })
}
