//! Invite links: how an admin hands a single-use invitation to a new user.
//!
//! A link is the membership server's base URL, the path segment `invite`, and the 32-byte token
//! as 64 hex characters in the URL *fragment*:
//!
//! ```text
//! https://members.example.com/invite#4f3c...64 hex...9a
//! https://example.com/unibus/invite#4f3c...        (server base URL https://example.com/unibus)
//! unibus://members.example.com/invite#4f3c...      (deep-link form; always means https)
//! ```
//!
//! Browsers and HTTP clients never send the fragment, so the token stays out of web server and
//! proxy logs even when someone opens the link in a browser. Plain `http` is accepted only for a
//! loopback server (`localhost`, `127.0.0.0/8`, `[::1]`), for development and tests. The full
//! grammar is in `docs/protocol.md`.
//!
//! ```
//! use unibus::invite::{InviteLink, InviteLinkError};
//!
//! let pasted = "  https://members.example.com/invite#\
//!     AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB\n";
//! let link = InviteLink::parse(pasted)?;
//! assert_eq!(link.server_url(), "https://members.example.com");
//! assert_eq!(link.register_url(), "https://members.example.com/register");
//!
//! let err = InviteLink::parse("http://members.example.com/invite#00").unwrap_err();
//! assert!(matches!(err, InviteLinkError::InsecureHttp { .. }));
//! # Ok::<(), InviteLinkError>(())
//! ```

use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};
use url::{Host, Url};
use zeroize::Zeroizing;

use crate::hex::{self, HexError};

/// Length of an invite token in bytes.
pub const TOKEN_LEN: usize = 32;
/// Length of an invite token in hex characters.
pub const TOKEN_HEX_LEN: usize = 2 * TOKEN_LEN;
/// The path segment that ends every invite link.
pub const INVITE_PATH_SEGMENT: &str = "invite";
/// The custom URL scheme of the deep-link form. It always stands for `https`.
pub const DEEP_LINK_SCHEME: &str = "unibus";

/// A link or server URL that was rejected, saying what is wrong. Messages never contain the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteLinkError {
    /// Nothing but whitespace was given.
    #[error("the invite link is empty")]
    Empty,
    /// The text has no scheme and server, e.g. a bare token was pasted.
    #[error("the invite link has no server; paste the whole link, starting with https://")]
    MissingServer,
    /// The text is not a URL at all.
    #[error("the invite link is not a valid URL: {reason}")]
    Malformed {
        /// What the URL parser objected to.
        reason: String,
    },
    /// The scheme is not `https`, loopback `http` or `unibus`.
    #[error("the invite link must start with https:// (or unibus://), not {scheme}://")]
    UnsupportedScheme {
        /// The scheme that was found.
        scheme: String,
    },
    /// Plain `http` to a host that is not loopback would expose the registration.
    #[error("plain http is allowed only for localhost; use https:// for {host}")]
    InsecureHttp {
        /// The non-loopback host.
        host: String,
    },
    /// The URL carries a user name or password, which invite links never do.
    #[error("the invite link must not contain a user name or password")]
    Credentials,
    /// The URL has a `?query`, which invite links never have.
    #[error("the invite link must not contain a query (?...)")]
    UnexpectedQuery,
    /// The path does not end with `/invite`.
    #[error("the invite link's path must end with /{INVITE_PATH_SEGMENT}")]
    WrongPath,
    /// There is no `#token` fragment.
    #[error("the invite link has no token after '#'")]
    MissingToken,
    /// The token does not have 64 characters.
    #[error("the invite token must be {TOKEN_HEX_LEN} hex characters, got {actual}")]
    TokenLength {
        /// How many characters were found.
        actual: usize,
    },
    /// The token has a character that is not a hex digit.
    #[error("the invite token has a non-hex character at position {position}")]
    TokenCharacters {
        /// Byte offset of the first bad character within the token.
        position: usize,
    },
}

/// A 32-byte single-use invite token. It is a bearer secret until consumed: `Debug` redacts it
/// and it is wiped on drop. Servers store only its [`digest`](InviteToken::digest).
#[derive(Clone, PartialEq, Eq)]
pub struct InviteToken(Zeroizing<[u8; TOKEN_LEN]>);

impl InviteToken {
    /// A fresh token from the OS CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; TOKEN_LEN]);
        getrandom::fill(bytes.as_mut())?;
        Ok(Self(bytes))
    }

    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Parses 64 hex characters of either case.
    pub fn from_hex(text: &str) -> Result<Self, InviteLinkError> {
        hex::decode_array::<TOKEN_LEN>(text)
            .map(Self::from_bytes)
            .map_err(|e| match e {
                HexError::Length { actual } => InviteLinkError::TokenLength { actual },
                HexError::Character { position } => InviteLinkError::TokenCharacters { position },
            })
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// 64 lowercase hex characters, in a buffer wiped on drop.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_ref()))
    }

    /// SHA-256 of the token bytes: what a server stores and looks invites up by, so a leaked
    /// database yields no usable invite.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_ref()).into()
    }
}

impl fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteToken(<redacted>)")
    }
}

/// A parsed invite link: where to register, and with which token.
///
/// `Display` prints the canonical `https://.../invite#token` form (lowercase token), so
/// formatting a parsed link gives a link that parses to the same value.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteLink {
    server: String,
    token: InviteToken,
}

impl InviteLink {
    /// A link to `server_url` (the server's base URL, `https://host[:port][/prefix]`) carrying
    /// `token`. A trailing slash on the server URL is ignored.
    pub fn new(server_url: &str, token: InviteToken) -> Result<Self, InviteLinkError> {
        let server_url = server_url.trim();
        if server_url.is_empty() {
            return Err(InviteLinkError::Empty);
        }
        let url = parse_url(server_url)?;
        if url.fragment().is_some() {
            return Err(InviteLinkError::Malformed {
                reason: "a server URL has no '#' part".into(),
            });
        }
        Ok(Self {
            server: canonical_base(&url, url.path()),
            token,
        })
    }

    /// Parses what a user pasted or scanned. Surrounding whitespace and upper-case hex are
    /// accepted; anything else that is not a valid link gets an error naming the problem.
    pub fn parse(text: &str) -> Result<Self, InviteLinkError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(InviteLinkError::Empty);
        }
        let (location, fragment) = match text.split_once('#') {
            Some((location, fragment)) => (location, Some(fragment)),
            None => (text, None),
        };
        let url = parse_url(location)?;
        // The final segment is matched case-insensitively, like the scheme and host, so a link
        // typed or scanned in capitals still works.
        let path = url.path();
        let prefix = path
            .len()
            .checked_sub(INVITE_PATH_SEGMENT.len())
            .filter(|&cut| path.is_char_boundary(cut))
            .filter(|&cut| path[cut..].eq_ignore_ascii_case(INVITE_PATH_SEGMENT))
            .and_then(|cut| path[..cut].strip_suffix('/'))
            .ok_or(InviteLinkError::WrongPath)?;
        let token = match fragment {
            None | Some("") => return Err(InviteLinkError::MissingToken),
            Some(token) => InviteToken::from_hex(token)?,
        };
        Ok(Self {
            server: canonical_base(&url, prefix),
            token,
        })
    }

    /// The server's base URL without a trailing slash, e.g. `https://members.example.com`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// Where to `POST` the registration: `{server_url}/register`.
    pub fn register_url(&self) -> String {
        format!("{}/register", self.server)
    }

    /// The invite token.
    pub fn token(&self) -> &InviteToken {
        &self.token
    }

    /// The deep-link form, `unibus://host[:port][/prefix]/invite#token`, for QR codes that
    /// should open the app directly. `None` for a plain-http (loopback) server, which that form
    /// cannot express.
    pub fn to_deep_link(&self) -> Option<String> {
        let rest = self.server.strip_prefix("https://")?;
        Some(format!(
            "{DEEP_LINK_SCHEME}://{rest}/{INVITE_PATH_SEGMENT}#{}",
            self.token.to_hex().as_str()
        ))
    }
}

impl fmt::Display for InviteLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{INVITE_PATH_SEGMENT}#{}",
            self.server,
            self.token.to_hex().as_str()
        )
    }
}

impl fmt::Debug for InviteLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InviteLink")
            .field("server", &self.server)
            .field("token", &self.token)
            .finish()
    }
}

impl std::str::FromStr for InviteLink {
    type Err = InviteLinkError;
    fn from_str(text: &str) -> Result<Self, InviteLinkError> {
        Self::parse(text)
    }
}

/// Parses and checks the location part (everything before `#`): scheme, host, no credentials,
/// no query. `unibus://` is rewritten to `https://`.
fn parse_url(location: &str) -> Result<Url, InviteLinkError> {
    // WHATWG URL parsing reads `https:///invite` as host "invite", so an empty authority must be
    // caught on the raw text.
    let authority = location
        .split_once("://")
        .map(|(_, rest)| rest)
        .filter(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if location.contains("://") && authority.is_none() {
        return Err(InviteLinkError::MissingServer);
    }
    let mut url = match Url::parse(location) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) | Err(url::ParseError::EmptyHost) => {
            return Err(InviteLinkError::MissingServer)
        }
        Err(e) => {
            return Err(InviteLinkError::Malformed {
                reason: e.to_string(),
            })
        }
    };
    if url.scheme() == DEEP_LINK_SCHEME {
        // `unibus://host/...` parses as an opaque URL; re-parse its authority as https.
        let rest = authority.ok_or(InviteLinkError::MissingServer)?;
        url = Url::parse(&format!("https://{rest}")).map_err(|e| match e {
            url::ParseError::EmptyHost => InviteLinkError::MissingServer,
            e => InviteLinkError::Malformed {
                reason: e.to_string(),
            },
        })?;
    }
    let host = url.host().ok_or(InviteLinkError::MissingServer)?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => {
            return Err(InviteLinkError::InsecureHttp {
                host: host.to_string(),
            })
        }
        other => {
            return Err(InviteLinkError::UnsupportedScheme {
                scheme: other.to_string(),
            })
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(InviteLinkError::Credentials);
    }
    if url.query().is_some() {
        return Err(InviteLinkError::UnexpectedQuery);
    }
    Ok(url)
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// `scheme://host[:port]` plus `path` without its trailing slash.
fn canonical_base(url: &Url, path: &str) -> String {
    format!(
        "{}{}",
        url.origin().ascii_serialization(),
        path.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn parse(text: &str) -> Result<InviteLink, InviteLinkError> {
        InviteLink::parse(text)
    }

    #[test]
    fn parses_the_canonical_form_and_prints_it_back() {
        let text = format!("https://members.example.com/invite#{TOKEN}");
        let link = parse(&text).unwrap();
        assert_eq!(link.server_url(), "https://members.example.com");
        assert_eq!(link.token().to_hex().as_str(), TOKEN);
        assert_eq!(link.to_string(), text);
    }

    #[test]
    fn tolerates_whitespace_upper_case_and_host_case() {
        let text = format!(
            "\n\t https://Members.Example.COM:8443/api/invite#{} \r\n",
            TOKEN.to_uppercase()
        );
        let link = parse(&text).unwrap();
        assert_eq!(link.server_url(), "https://members.example.com:8443/api");
        assert_eq!(link.token().to_hex().as_str(), TOKEN);
    }

    #[test]
    fn a_link_in_capitals_parses_and_keeps_its_prefix_case() {
        let link = parse(&format!(
            "HTTPS://EXAMPLE.COM/Api/INVITE#{}",
            TOKEN.to_uppercase()
        ))
        .unwrap();
        assert_eq!(link.server_url(), "https://example.com/Api");
        assert_eq!(
            link.to_string(),
            format!("https://example.com/Api/invite#{TOKEN}")
        );
    }

    #[test]
    fn default_port_is_dropped_from_the_server_url() {
        let link = parse(&format!("https://example.com:443/invite#{TOKEN}")).unwrap();
        assert_eq!(link.server_url(), "https://example.com");
    }

    #[test]
    fn accepts_plain_http_only_on_loopback() {
        for host in ["127.0.0.1:8080", "localhost:1", "[::1]:80", "127.9.9.9"] {
            let link = parse(&format!("http://{host}/invite#{TOKEN}")).unwrap();
            assert!(link.server_url().starts_with("http://"), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "localhost.example.com", "[::2]"] {
            assert!(
                matches!(
                    parse(&format!("http://{host}/invite#{TOKEN}")),
                    Err(InviteLinkError::InsecureHttp { .. })
                ),
                "{host}"
            );
        }
    }

    #[test]
    fn deep_link_means_https_and_round_trips() {
        let link = parse(&format!("unibus://members.example.com/x/invite#{TOKEN}")).unwrap();
        assert_eq!(link.server_url(), "https://members.example.com/x");
        let deep = link.to_deep_link().unwrap();
        assert_eq!(
            deep,
            format!("unibus://members.example.com/x/invite#{TOKEN}")
        );
        assert_eq!(parse(&deep).unwrap(), link);
        let local = parse(&format!("http://127.0.0.1:1/invite#{TOKEN}")).unwrap();
        assert_eq!(local.to_deep_link(), None);
    }

    #[test]
    fn each_problem_gets_its_own_error() {
        use InviteLinkError::*;
        let cases: Vec<(String, InviteLinkError)> = vec![
            ("   ".into(), Empty),
            (TOKEN.into(), MissingServer),
            (format!("https:///invite#{TOKEN}"), MissingServer),
            (format!("unibus:///invite#{TOKEN}"), MissingServer),
            (
                format!("ftp://example.com/invite#{TOKEN}"),
                UnsupportedScheme {
                    scheme: "ftp".into(),
                },
            ),
            (
                format!("http://example.com/invite#{TOKEN}"),
                InsecureHttp {
                    host: "example.com".into(),
                },
            ),
            (
                format!("https://u:p@example.com/invite#{TOKEN}"),
                Credentials,
            ),
            (
                format!("https://example.com/invite?x=1#{TOKEN}"),
                UnexpectedQuery,
            ),
            (format!("https://example.com/#{TOKEN}"), WrongPath),
            (format!("https://example.com/invite/#{TOKEN}"), WrongPath),
            (format!("https://example.com/xinvite#{TOKEN}"), WrongPath),
            ("https://example.com/invite".into(), MissingToken),
            ("https://example.com/invite#".into(), MissingToken),
            (
                format!("https://example.com/invite#{}", &TOKEN[1..]),
                TokenLength { actual: 63 },
            ),
            (
                format!("https://example.com/invite#{TOKEN}0"),
                TokenLength { actual: 65 },
            ),
            (
                format!("https://example.com/invite#{}x", &TOKEN[1..]),
                TokenCharacters { position: 63 },
            ),
            (
                format!("https://example.com/invite#{TOKEN} {TOKEN}"),
                TokenLength { actual: 129 },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(&input).unwrap_err(), expected, "{input:?}");
        }
        assert!(matches!(
            parse("https://exa mple.com/invite#00"),
            Err(Malformed { .. })
        ));
    }

    #[test]
    fn errors_and_debug_never_show_the_token() {
        let link = parse(&format!("https://example.com/invite#{TOKEN}")).unwrap();
        assert!(!format!("{link:?}").contains(TOKEN));
        let bad = format!("http://example.com/invite#{TOKEN}");
        assert!(!parse(&bad).unwrap_err().to_string().contains(TOKEN));
    }

    #[test]
    fn new_validates_the_server_url_like_parse() {
        let token = InviteToken::from_hex(TOKEN).unwrap();
        let link = InviteLink::new("https://example.com/base/", token.clone()).unwrap();
        assert_eq!(
            link.to_string(),
            format!("https://example.com/base/invite#{TOKEN}")
        );
        assert_eq!(
            InviteLink::new("http://example.com", token.clone()).unwrap_err(),
            InviteLinkError::InsecureHttp {
                host: "example.com".into()
            }
        );
        assert!(InviteLink::new("https://example.com/#x", token).is_err());
    }

    #[test]
    fn digest_is_sha256_of_the_token_bytes() {
        let token = InviteToken::from_bytes([0; 32]);
        // SHA-256 of 32 zero bytes.
        assert_eq!(
            hex::encode(&token.digest()),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }
}
