//! The decisions every backend makes the same way: what a new record looks like, what
//! redeeming an invite must do next, and which admin nonces may be kept. Backends differ only
//! in how they write atomically.

use std::time::Duration;

use unibus::{InviteToken, KexPublicKey, SignPublicKey};

use super::{
    invite_id, now_millis, Invite, InviteStatus, Millis, NewInvite, NewUser, StoreError,
    StoreResult, User, UserStatus,
};

/// The longest a store keeps an admin request's nonce ([`Store::record_nonce`](super::Store::record_nonce)):
/// a JetStream KV store lets its nonces bucket drop entries past twice this age.
pub const NONCE_KEPT_AT_MOST: Duration = Duration::from_secs(600);

/// Whether an admin request's nonce may be recorded until `expires_at`: alphanumeric, and kept
/// no longer than [`NONCE_KEPT_AT_MOST`] from `now`.
pub(crate) fn check_nonce(nonce: &str, now: Millis, expires_at: Millis) -> StoreResult<()> {
    if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StoreError::Invalid("a nonce is alphanumeric".into()));
    }
    let longest = Millis::try_from(NONCE_KEPT_AT_MOST.as_millis()).unwrap_or(Millis::MAX);
    if expires_at.saturating_sub(now) > longest {
        return Err(StoreError::Invalid(format!(
            "a nonce is kept at most {} s",
            NONCE_KEPT_AT_MOST.as_secs()
        )));
    }
    Ok(())
}

/// A new, active user created now.
pub(crate) fn active_user(user: NewUser) -> User {
    User {
        sign_key: user.sign_key,
        kex_key: user.kex_key,
        admin: user.admin,
        status: UserStatus::Active,
        created_at: now_millis(),
        invite_id: None,
    }
}

/// A fresh token and the invite record that stores only its digest.
pub(crate) fn mint_invite(new: NewInvite) -> StoreResult<(InviteToken, Invite)> {
    let token = InviteToken::generate()
        .map_err(|e| StoreError::backend("OS random number generator", e))?;
    let now = now_millis();
    let ttl = i64::try_from(new.ttl.as_millis()).unwrap_or(i64::MAX);
    let invite = Invite {
        id: invite_id(&token),
        admin: new.admin,
        created_at: now,
        created_by: new.created_by,
        expires_at: now.saturating_add(ttl),
        used_at: None,
        used_by: None,
        cancelled_at: None,
    };
    Ok((token, invite))
}

/// What an admin made of a signing key's user, which keeps the key from redeeming any invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retired {
    /// The user was revoked: the record stays, and so does its refusal to log in.
    Revoked,
    /// The user was deleted: only the key's tombstone stays.
    Deleted,
}

/// What redeeming an invite must do next.
pub(crate) enum RedeemStep {
    /// The invite is pending: burn it, then create the user.
    Burn,
    /// This key already burned it (a retry): complete or confirm the registration.
    Complete,
}

/// What redeeming `invite` for `sign_key` at `now` must do next, or why it cannot.
/// `retired` says whether `sign_key` belongs to a revoked user or belonged to a deleted one:
/// such a key is refused before anything is written, on the first try and on a retry alike, so
/// a replayed registration neither brings a deleted user back nor tells a revoked one that it
/// is registered, and no invite is spent on it (a crashed redemption has no user record, so it
/// still completes).
pub(crate) fn redeem_step(
    invite: &Invite,
    sign_key: &SignPublicKey,
    retired: Option<Retired>,
    now: Millis,
) -> StoreResult<RedeemStep> {
    match retired {
        Some(Retired::Deleted) => return Err(StoreError::UserDeleted),
        Some(Retired::Revoked) => return Err(StoreError::UserRevoked),
        None => {}
    }
    match (invite.used_by, invite.status_at(now)) {
        (Some(by), _) if &by == sign_key => Ok(RedeemStep::Complete),
        (_, InviteStatus::Used) => Err(StoreError::InviteUsed),
        (_, InviteStatus::Cancelled) => Err(StoreError::InviteCancelled),
        (_, InviteStatus::Expired) => Err(StoreError::InviteExpired),
        (_, InviteStatus::Pending) => Ok(RedeemStep::Burn),
    }
}

/// The user a redeemed invite creates.
pub(crate) fn redeemed_user(
    invite: &Invite,
    sign_key: SignPublicKey,
    kex_key: KexPublicKey,
    now: Millis,
) -> User {
    User {
        sign_key,
        kex_key,
        admin: invite.admin,
        status: UserStatus::Active,
        created_at: now,
        invite_id: Some(invite.id.clone()),
    }
}
