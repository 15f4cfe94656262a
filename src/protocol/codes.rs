//! Error codes and the error envelope `{"error": {"code", "message"}}` that every refusal
//! travels in: on the control plane (protocol §12.3) and over HTTP (§10, §13).

use std::fmt;

/// Defines a code enum: one variant per known code, `Unknown(String)` for the rest, the list of
/// known codes, and (de)serialization as the code's text.
macro_rules! codes {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A code this version does not know, as received.
            Unknown(String),
        }

        impl $name {
            /// Every code this version knows, in the order of the protocol's table.
            pub const KNOWN: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The code as it travels.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )+
                    $name::Unknown(code) => code,
                }
            }

            /// The code for `text`; [`Self::Unknown`] if this version does not know it.
            pub fn parse(text: &str) -> Self {
                match text {
                    $( $text => $name::$variant, )+
                    other => $name::Unknown(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
                Ok(Self::parse(&text))
            }
        }
    };
}

codes! {
    /// Why the control plane refused a request (protocol §12.3).
    RefusalCode {
        /// The caller is not an active user (revoked or deleted after logging in), or the store
        /// could not confirm that it is.
        NotAuthorized = "not_authorized",
        /// The body is not of the operation's shape, or an argument is invalid.
        BadRequest = "bad_request",
        /// The caller is not a member of the room (or the room does not exist).
        NotMember = "not_member",
        /// The caller is a member but not the room's owner.
        NotOwner = "not_owner",
        /// No sealed copy for the caller at that epoch.
        NoKey = "no_key",
        /// A room with this id exists.
        RoomExists = "room_exists",
        /// No active user has this key.
        UnknownUser = "unknown_user",
        /// The rekey was based on an epoch that is no longer the room's latest.
        EpochConflict = "epoch_conflict",
        /// The uploaded manifest does not decode or verify, or is not the caller's.
        BadManifest = "bad_manifest",
        /// The manifest's entries are not exactly the room's active members.
        RecipientsMismatch = "recipients_mismatch",
        /// A record disappeared between two steps of the operation; retry.
        NotFound = "not_found",
        /// The store failed or did not answer in time; retry later.
        Unavailable = "unavailable",
        /// A stored record cannot be read; not the caller's fault.
        Internal = "internal",
        /// The reply could not be sent whole (larger than the cluster's message limit).
        ReplyTooLarge = "reply_too_large",
        /// `rekey_begin`: the caller already holds as many uploads (or bytes of uploads) as one
        /// key may on that instance; commit or abandon one, then start again.
        TooManyUploads = "too_many_uploads",
        /// `send`: the envelope does not decode, is not the caller's, or its proof or signature
        /// does not verify against the epoch the room stores.
        BadEnvelope = "bad_envelope",
        /// `send`: the envelope is for an epoch other than the room's latest; fetch the latest
        /// key and seal the message again.
        StaleEpoch = "stale_epoch",
        /// `share_history`: a share does not decode, its signatures do not verify under its
        /// header's rekeyer, that rekeyer is not the caller, or its header is not the stored
        /// header of an epoch of the room.
        BadShare = "bad_share",
    }
}

codes! {
    /// Why the HTTP API refused a request (`/register`, protocol §10, and `/admin`, §13).
    ApiCode {
        /// The body is not of the endpoint's shape (§10, §13).
        MalformedBody = "malformed_body",
        /// The invite token is not 64 hex characters.
        BadToken = "bad_token",
        /// A public key is invalid (§2.2).
        BadKey = "bad_key",
        /// The signature is malformed or does not verify.
        BadSignature = "bad_signature",
        /// The admin request's timestamp is outside the accepted window.
        StaleRequest = "stale_request",
        /// The admin request's nonce was used before.
        Replayed = "replayed",
        /// The signing key belonged to a deleted user.
        UserDeleted = "user_deleted",
        /// The signing key belongs to a revoked user.
        UserRevoked = "user_revoked",
        /// The key is not an active admin.
        NotAdmin = "not_admin",
        /// No invite has this token.
        InviteUnknown = "invite_unknown",
        /// A record the admin operation names does not exist.
        NotFound = "not_found",
        /// The request's body did not arrive in time.
        RequestTimeout = "request_timeout",
        /// Another key already redeemed the invite.
        InviteUsed = "invite_used",
        /// The signing key is already registered.
        UserExists = "user_exists",
        /// A room with this id exists.
        RoomExists = "room_exists",
        /// The invite is past its expiry.
        InviteExpired = "invite_expired",
        /// An admin cancelled the invite.
        InviteCancelled = "invite_cancelled",
        /// The body is larger than the limit.
        TooLarge = "too_large",
        /// The `Content-Type` is not `application/json`.
        UnsupportedMediaType = "unsupported_media_type",
        /// There is no admin operation by this name.
        UnknownOperation = "unknown_operation",
        /// An admin operation's params are wrong.
        BadRequest = "bad_request",
        /// An argument the store refuses.
        Invalid = "invalid",
        /// Too many requests from this address.
        RateLimited = "rate_limited",
        /// A stored record cannot be read; not the client's fault.
        Internal = "internal",
        /// The server's public URL cannot carry invite links.
        Misconfigured = "misconfigured",
        /// The server's store did not answer; retry later.
        Unavailable = "unavailable",
    }
}

impl ApiCode {
    /// The HTTP status the server answers this code with (protocol §10 and §13); 400 for a code
    /// this version does not know.
    pub fn status(&self) -> u16 {
        match self {
            Self::MalformedBody
            | Self::BadToken
            | Self::BadKey
            | Self::UnknownOperation
            | Self::BadRequest
            | Self::Invalid
            | Self::Unknown(_) => 400,
            Self::BadSignature | Self::StaleRequest | Self::Replayed => 401,
            Self::UserDeleted | Self::UserRevoked | Self::NotAdmin => 403,
            Self::InviteUnknown | Self::NotFound => 404,
            Self::RequestTimeout => 408,
            Self::InviteUsed | Self::UserExists | Self::RoomExists => 409,
            Self::InviteExpired | Self::InviteCancelled => 410,
            Self::TooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RateLimited => 429,
            Self::Internal | Self::Misconfigured => 500,
            Self::Unavailable => 503,
        }
    }
}

/// A refusal: a code for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody<C> {
    /// The stable code.
    pub code: C,
    /// What went wrong and what to do. May change between versions; never parse it.
    #[serde(default)]
    pub message: String,
}

/// The envelope every refusal travels in: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorEnvelope<C> {
    /// The refusal.
    pub error: ErrorBody<C>,
}

/// A control-plane refusal.
pub type Refusal = ErrorBody<RefusalCode>;

impl<C> ErrorBody<C> {
    /// A refusal with `code` and `message`.
    pub fn new(code: C, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// This refusal in its envelope.
    pub fn into_envelope(self) -> ErrorEnvelope<C> {
        ErrorEnvelope { error: self }
    }
}

impl<C: fmt::Display> fmt::Display for ErrorBody<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips_and_unknown_codes_are_kept() {
        for code in RefusalCode::KNOWN {
            assert_eq!(&RefusalCode::parse(code.as_str()), code);
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(&serde_json::from_str::<RefusalCode>(&json).unwrap(), code);
        }
        for code in ApiCode::KNOWN {
            assert_eq!(&ApiCode::parse(code.as_str()), code);
            assert!((400..600).contains(&code.status()));
        }
        assert_eq!(
            RefusalCode::parse("brand_new"),
            RefusalCode::Unknown("brand_new".into())
        );
        let envelope: ErrorEnvelope<RefusalCode> =
            serde_json::from_str(r#"{"error":{"code":"no_key","message":"none"}}"#).unwrap();
        assert_eq!(envelope.error, Refusal::new(RefusalCode::NoKey, "none"));
        assert_eq!(
            serde_json::to_value(&envelope).unwrap(),
            serde_json::json!({"error": {"code": "no_key", "message": "none"}})
        );
    }
}
