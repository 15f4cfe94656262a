//! Invite-link exports.

use std::sync::Arc;

use crate::errors::InviteLinkError;

/// A parsed invite link. The token stays in Rust; registration uses it there.
#[derive(Debug, uniffi::Object)]
pub struct InviteLink(pub(crate) unibus::InviteLink);

#[uniffi::export]
impl InviteLink {
    /// Parses what the user pasted or scanned (surrounding whitespace and upper-case hex are
    /// fine). Every other problem raises its own `InviteLinkError` variant.
    #[uniffi::constructor]
    pub fn parse(text: String) -> Result<Arc<Self>, InviteLinkError> {
        Ok(Arc::new(Self(unibus::InviteLink::parse(&text)?)))
    }

    /// The server's base URL, e.g. `https://members.example.com`.
    pub fn server_url(&self) -> String {
        self.0.server_url().to_owned()
    }

    /// Where registration is posted: `{server_url}/register`.
    pub fn register_url(&self) -> String {
        self.0.register_url()
    }

    /// The deep-link form `unibus://.../invite#token`, or nothing for a loopback http server.
    pub fn deep_link(&self) -> Option<String> {
        self.0.to_deep_link()
    }

    /// The canonical `https://.../invite#token` form. It contains the token: show it only to
    /// the person it is for.
    pub fn to_url_string(&self) -> String {
        self.0.to_string()
    }
}

/// Formats the link for a server base URL and a 64-hex token, as an admin tool does.
#[uniffi::export]
pub fn format_invite_link(
    server_url: String,
    token_hex: String,
) -> Result<String, InviteLinkError> {
    let token = unibus::InviteToken::from_hex(&token_hex)?;
    Ok(unibus::InviteLink::new(&server_url, token)?.to_string())
}
