//! The client's errors: one enum for registration over HTTP, one for the cluster session.
//!
//! Every refusal code of the server (docs/protocol.md §10 and §12.3) has its own variant, so an
//! app can act on it without parsing messages. Transport failures have their own variants too:
//! a timeout or a lost connection is never read as "not a member" or "no key".

use std::time::Duration;

/// The underlying cause of a transport, connection or TLS failure, kept as the error's
/// [`source`](std::error::Error::source) so an app can tell them apart without parsing text.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

use super::trust::TrustError;
use crate::envelope::EnvelopeError;
use crate::history::HistoryError;
use crate::manifest::ManifestError;
use crate::protocol::codes::{ApiCode, Refusal, RefusalCode};
use crate::sealing::SealError;
use crate::{RoomId, SignPublicKey};

/// Why redeeming an invite failed. See [`register`](super::register).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// No invite has this token (`invite_unknown`): the link is wrong or was never issued.
    #[error("the server knows no invite with this token: check the link or ask for a new invite")]
    InviteUnknown,
    /// Another key already redeemed the invite (`invite_used`).
    #[error("this invite was already redeemed by another key: ask for a new invite")]
    InviteUsed,
    /// This identity's signing key is already registered, through another invite
    /// (`user_exists`). The identity can log in as it is.
    #[error("this identity is already registered; the invite was not needed")]
    AlreadyRegistered,
    /// An admin deleted the user this signing key belonged to (`user_deleted`). A deleted key
    /// is retired for good: make a new identity and ask for a new invite.
    #[error("an admin deleted this identity; it can never register again: create a new identity and ask for a new invite")]
    UserDeleted,
    /// An admin revoked the user this signing key belongs to (`user_revoked`). Registering
    /// again will not change that; only an admin can.
    #[error(
        "an admin revoked this identity; registering again will not change that: ask an admin"
    )]
    UserRevoked,
    /// The invite is past its expiry (`invite_expired`).
    #[error("the invite has expired: ask for a new invite")]
    InviteExpired,
    /// An admin cancelled the invite (`invite_cancelled`).
    #[error("an admin cancelled this invite: ask for a new invite")]
    InviteCancelled,
    /// The server refused the request itself (`malformed_body`, `bad_token`, `bad_key`,
    /// `bad_signature`, `too_large` or a code this version does not know). Retrying will not
    /// help: the client and server disagree on the protocol.
    #[error("the server refused the registration request ({}): {message}", code.as_ref().map_or("no code", ApiCode::as_str))]
    Rejected {
        /// The server's error code, if its reply carried one.
        code: Option<ApiCode>,
        /// The server's message (or the HTTP status, if the reply carried no refusal).
        message: String,
    },
    /// Too many attempts from this address (`rate_limited`), still after the client's retries.
    #[error("the server is rate-limiting registrations from this address: wait and retry")]
    RateLimited,
    /// The server said it is unavailable (`unavailable`, or any 5xx), still after the client's
    /// retries. The invite is not spent; retry later with the same identity.
    #[error("the server is unavailable (status {status}): retry later with the same identity")]
    Unavailable {
        /// The HTTP status.
        status: u16,
        /// The server's error code, if its reply carried one.
        code: Option<ApiCode>,
    },
    /// The server could not be reached, or the connection failed, still after the client's
    /// retries. If the server did register the identity, retrying with the same identity and
    /// invite succeeds: registration is idempotent.
    /// The cause (DNS, TLS, a refused connection, a timeout) is the error's
    /// [`source`](std::error::Error::source).
    #[error("could not reach the server: retry later with the same identity")]
    Transport(#[source] Cause),
    /// The server answered 200 with something that is not a registration reply for this
    /// identity.
    #[error("the server's reply is not a valid registration of this identity: {0}")]
    InvalidResponse(String),
    /// The HTTPS client could not be built: an unusable extra root certificate, or, for an
    /// `https` server with no extra roots, no CA certificates on the system. The cause is the
    /// [`source`](std::error::Error::source). A plain-`http` (loopback) server needs neither.
    #[error("cannot set up HTTPS: install the system's CA certificates, or pass the server's root certificate")]
    Tls(#[source] Cause),
}

impl RegisterError {
    /// Whether retrying the same registration later may succeed: rate limiting, an unavailable
    /// server and transport trouble. (The client has already retried these a few times.)
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::Unavailable { .. } | Self::Transport(_)
        )
    }

    /// The server's refusal code (protocol §10), when the server refused the registration;
    /// `None` for failures that are not a server's answer (transport, TLS, an invalid reply).
    pub fn refusal_code(&self) -> Option<ApiCode> {
        match self {
            Self::InviteUnknown => Some(ApiCode::InviteUnknown),
            Self::InviteUsed => Some(ApiCode::InviteUsed),
            Self::AlreadyRegistered => Some(ApiCode::UserExists),
            Self::UserDeleted => Some(ApiCode::UserDeleted),
            Self::UserRevoked => Some(ApiCode::UserRevoked),
            Self::InviteExpired => Some(ApiCode::InviteExpired),
            Self::InviteCancelled => Some(ApiCode::InviteCancelled),
            Self::RateLimited => Some(ApiCode::RateLimited),
            Self::Rejected { code, .. } | Self::Unavailable { code, .. } => code.clone(),
            Self::Transport(_) | Self::InvalidResponse(_) | Self::Tls(_) => None,
        }
    }
}

/// Why a session ended. Once ended, a session refuses every call with
/// [`SessionError::Ended`]; connect a new one to continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEnd {
    /// The app closed the session.
    Closed,
    /// membershipd said this identity was revoked or deleted: its account notice (protocol
    /// §12.6), or a control-plane refusal that the caller is not an active user. Refused logins
    /// alone never end a session (they also happen while a node restarts or sheds a storm).
    Revoked,
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Closed => "the session was closed",
            Self::Revoked => "membershipd revoked or deleted this identity",
        })
    }
}

/// Why a cluster session call failed. See [`Session`](super::Session).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The cluster kept refusing the login for [`SessionOptions::login_patience`](super::SessionOptions::login_patience):
    /// this key is not an active user (never registered, revoked or deleted), or membershipd
    /// could not confirm it in that time (it was down or overloaded).
    #[error("the cluster refused this identity: it is not an active user")]
    LoginRefused,
    /// The cluster could not be reached to log in (an address that does not parse, none given,
    /// or none answering); the cause is the [`source`](std::error::Error::source).
    #[error("could not connect to the cluster: check the addresses and retry")]
    Connect(#[source] Cause),
    /// No request reached an answer in time.
    #[error("no answer within {0:?}: the cluster or membershipd may be unreachable; retry")]
    Timeout(Duration),
    /// The session is connected but no membershipd is serving the control plane.
    #[error("no membershipd is answering on the cluster: retry later")]
    NoResponders,
    /// The request could not be sent; the cause is the
    /// [`source`](std::error::Error::source).
    #[error("the request could not be sent")]
    Transport(#[source] Cause),
    /// The request is larger than the cluster accepts in one message. No retry can succeed.
    #[error("the request is {bytes} bytes, more than the cluster's limit of {limit} bytes")]
    RequestTooLarge {
        /// The request's size.
        bytes: usize,
        /// The cluster's `max_payload`.
        limit: usize,
    },
    /// The SDK failed on this device (a task it ran panicked). A bug: report it.
    #[error("the SDK failed internally: {0}")]
    Internal(String),
    /// The session has ended; connect a new one.
    #[error("the session has ended: {0}")]
    Ended(SessionEnd),
    /// `not_authorized`: the user was revoked or deleted after logging in (the session is about
    /// to be cut), or membershipd could not confirm that it is active.
    #[error("membershipd refused the request: this identity is no longer an active user")]
    NotAuthorized,
    /// `not_member`: this identity is not a member of the room, or the room does not exist.
    #[error("not a member of this room")]
    NotMember,
    /// `not_owner`: only the room's owner may do this.
    #[error("only the room's owner may do this")]
    NotOwner,
    /// `no_key`: no key is sealed to this identity at that epoch (none yet, or it was added
    /// after that epoch).
    #[error("no room key is sealed to this identity at that epoch")]
    NoKey,
    /// `room_exists`: a room with this id exists.
    #[error("a room with this id already exists")]
    RoomExists,
    /// `unknown_user`: no active user has this key.
    #[error("no active user has this key")]
    UnknownUser,
    /// `epoch_conflict`: another rekey came first. [`Session::rekey`](super::Session::rekey)
    /// retries by itself; this is returned only when every attempt met a conflict.
    #[error("the room's epoch changed during the rekey: fetch it again and retry")]
    EpochConflict,
    /// `recipients_mismatch`: the members changed during the rekey (also retried by
    /// [`Session::rekey`](super::Session::rekey)).
    #[error("the room's members changed during the rekey: retry")]
    RecipientsMismatch,
    /// `bad_manifest`: membershipd refused the uploaded manifest.
    #[error("membershipd refused the rekey manifest: {0}")]
    BadManifest(String),
    /// `bad_request`: membershipd could not use the request (see the message).
    #[error("membershipd refused the request as malformed: {0}")]
    BadRequest(String),
    /// `not_found`: a record disappeared during the request; retry.
    #[error("a record changed during the request: retry")]
    NotFound,
    /// `unavailable`: membershipd's store did not answer; retry later.
    #[error("membershipd's store is unavailable: retry later")]
    Unavailable,
    /// `internal`: membershipd could not read its own records. Not this client's fault, and
    /// retrying will not help until the operator repairs the server.
    #[error("membershipd failed internally: {0}")]
    ServerFault(String),
    /// `reply_too_large`: the answer is larger than the cluster's message limit, so it could
    /// not be sent. Retrying will not help.
    #[error("membershipd's reply is too large for the cluster: {0}")]
    ReplyTooLarge(String),
    /// A refusal code this version of the client does not know.
    #[error("membershipd refused the request ({code}): {message}")]
    Refused {
        /// The server's error code.
        code: RefusalCode,
        /// The server's message.
        message: String,
    },
    /// The reply is not what the protocol says.
    #[error("membershipd's reply is malformed: {0}")]
    InvalidReply(String),
    /// The key reply failed verification (section 8.5 of the protocol): wrong room or epoch,
    /// not signed by the owner, or the copy does not open. The key is not used.
    #[error("the room key did not verify: {0}")]
    Verification(#[from] ManifestError),
    /// A history share (protocol §16.3) the server served for an epoch failed verification:
    /// not the room's, not signed by the pinned owner, not addressed to this identity, or the
    /// copy does not open. The key is not used.
    #[error("the history share did not verify: {0}")]
    HistoryShare(#[from] HistoryError),
    /// A reply named another owner for a room than the one pinned in the session's
    /// [`TrustStore`](super::TrustStore). The reply is refused, and the session's watches get
    /// [`RoomUpdate::OwnerChanged`](super::RoomUpdate::OwnerChanged). A server that lies, or an
    /// owner that really changed: compare the new owner's
    /// [`OwnerFingerprint`](super::OwnerFingerprint) out of band, and only then
    /// [`accept_owner`](super::TrustStore::accept_owner).
    #[error("the server named {found} as the owner of room {room}, but {pinned} is pinned ({}): do not trust this room's keys; compare the new owner's safety number out of band and accept it only if the change is genuine", if *verified { "verified" } else { "not verified" })]
    OwnerChanged {
        /// The room.
        room: RoomId,
        /// The owner pinned for the room.
        pinned: SignPublicKey,
        /// The owner the reply named.
        found: SignPublicKey,
        /// Whether the app had marked the pinned owner verified.
        verified: bool,
    },
    /// A reply offered, as the room's latest, an epoch below one whose manifest this client
    /// already verified: an older key replayed (one that removed members may still hold), or
    /// a server restored from an old backup. The reply is refused. Explicit older epochs
    /// (`room_key(room, Some(epoch))`) are still served.
    #[error("the server offered epoch {offered} as the latest of room {room}, but this client already verified epoch {floor}: the server is replaying an old key; do not use it, and report the server")]
    EpochRollback {
        /// The room.
        room: RoomId,
        /// The epoch the reply offered as the latest.
        offered: u64,
        /// The highest epoch of the room this client verified.
        floor: u64,
    },
    /// The trust store could not be read or saved (see the message).
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// Generating or sealing a new room key failed on this device.
    #[error("sealing the new room key failed: {0}")]
    Seal(#[from] SealError),
    /// The app stopped the rekey through its progress callback; the room keeps its epoch.
    #[error("the rekey was cancelled; the room keeps its epoch")]
    Cancelled,
    /// `stale_epoch`: the message was sealed under an epoch that is no longer the room's
    /// latest. [`Session::send`](super::Session::send) fetches the latest key and seals again
    /// by itself; this is returned only when every attempt met a newer epoch.
    #[error("the room was rekeyed while the message was being sent: send it again")]
    StaleEpoch,
    /// `bad_envelope`: membershipd refused the message as not a valid envelope of this sender
    /// (see the message). Not transient: the same bytes will be refused again.
    #[error("membershipd refused the message: {0}")]
    BadEnvelope(String),
    /// A message body is larger than an envelope carries
    /// ([`MAX_BODY_LEN`](crate::envelope::MAX_BODY_LEN), 64 KiB). Nothing was sent.
    #[error("the message body is {len} bytes, more than the limit of {limit} bytes: split it or send it another way")]
    BodyTooLarge {
        /// The body's length.
        len: usize,
        /// The largest body an envelope carries.
        limit: usize,
    },
    /// An argument is out of its range (see the message). Nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The message could not be sealed on this device (no randomness, or a key that is not
    /// this identity's). Nothing was sent.
    #[error("the message could not be sealed: {0}")]
    Envelope(EnvelopeError),
}

impl From<EnvelopeError> for SessionError {
    fn from(error: EnvelopeError) -> Self {
        match error {
            EnvelopeError::BodyTooLarge { len } => Self::BodyTooLarge {
                len,
                limit: crate::envelope::MAX_BODY_LEN,
            },
            other => Self::Envelope(other),
        }
    }
}

impl SessionError {
    /// The error for a control-plane refusal (protocol §12.3).
    pub(crate) fn from_refusal(refusal: Refusal) -> Self {
        let message = refusal.message;
        match refusal.code {
            RefusalCode::NotAuthorized => Self::NotAuthorized,
            RefusalCode::NotMember => Self::NotMember,
            RefusalCode::NotOwner => Self::NotOwner,
            RefusalCode::NoKey => Self::NoKey,
            RefusalCode::RoomExists => Self::RoomExists,
            RefusalCode::UnknownUser => Self::UnknownUser,
            RefusalCode::EpochConflict => Self::EpochConflict,
            RefusalCode::RecipientsMismatch => Self::RecipientsMismatch,
            RefusalCode::BadManifest => Self::BadManifest(message),
            RefusalCode::BadRequest => Self::BadRequest(message),
            RefusalCode::NotFound => Self::NotFound,
            RefusalCode::Unavailable => Self::Unavailable,
            RefusalCode::Internal => Self::ServerFault(message),
            RefusalCode::ReplyTooLarge => Self::ReplyTooLarge(message),
            RefusalCode::StaleEpoch => Self::StaleEpoch,
            RefusalCode::BadEnvelope => Self::BadEnvelope(message),
            code => Self::Refused { code, message },
        }
    }

    /// The control plane's refusal code (protocol §12.3) when membershipd refused the call, or
    /// `None` when the failure is not a refusal (transport, verification, trust, this device).
    pub fn refusal_code(&self) -> Option<RefusalCode> {
        Some(match self {
            Self::NotAuthorized => RefusalCode::NotAuthorized,
            Self::NotMember => RefusalCode::NotMember,
            Self::NotOwner => RefusalCode::NotOwner,
            Self::NoKey => RefusalCode::NoKey,
            Self::RoomExists => RefusalCode::RoomExists,
            Self::UnknownUser => RefusalCode::UnknownUser,
            Self::EpochConflict => RefusalCode::EpochConflict,
            Self::RecipientsMismatch => RefusalCode::RecipientsMismatch,
            Self::BadManifest(_) => RefusalCode::BadManifest,
            Self::BadRequest(_) => RefusalCode::BadRequest,
            Self::NotFound => RefusalCode::NotFound,
            Self::Unavailable => RefusalCode::Unavailable,
            Self::ServerFault(_) => RefusalCode::Internal,
            Self::ReplyTooLarge(_) => RefusalCode::ReplyTooLarge,
            Self::StaleEpoch => RefusalCode::StaleEpoch,
            Self::BadEnvelope(_) => RefusalCode::BadEnvelope,
            Self::Refused { code, .. } => code.clone(),
            _ => return None,
        })
    }

    /// Whether retrying the same call later may succeed: transport trouble and store outages,
    /// not refusals.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_)
                | Self::NoResponders
                | Self::Transport(_)
                | Self::Connect(_)
                | Self::NotFound
                | Self::Unavailable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_code_is_recoverable_from_its_session_error() {
        let unknown = RefusalCode::parse("a_code_from_a_newer_server");
        for code in RefusalCode::KNOWN.iter().chain([&unknown]) {
            let error = SessionError::from_refusal(Refusal {
                code: code.clone(),
                message: "why".into(),
            });
            assert_eq!(error.refusal_code().as_ref(), Some(code), "{error}");
        }
        assert_eq!(
            SessionError::Timeout(Duration::from_secs(1)).refusal_code(),
            None
        );
        assert_eq!(SessionError::LoginRefused.refusal_code(), None);
    }

    #[test]
    fn only_transport_and_outage_failures_are_transient() {
        assert!(SessionError::Unavailable.is_transient());
        assert!(SessionError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!SessionError::NotMember.is_transient());
        assert!(!SessionError::Internal("panic".into()).is_transient());
        let unavailable = RegisterError::Unavailable {
            status: 503,
            code: Some(ApiCode::Unavailable),
        };
        assert!(unavailable.is_transient());
        assert_eq!(unavailable.refusal_code(), Some(ApiCode::Unavailable));
        assert!(!RegisterError::InviteUsed.is_transient());
        assert_eq!(
            RegisterError::AlreadyRegistered.refusal_code(),
            Some(ApiCode::UserExists)
        );
        assert_eq!(
            RegisterError::InvalidResponse("x".into()).refusal_code(),
            None
        );
    }
}
