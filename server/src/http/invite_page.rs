//! `GET /invite`: the page a browser shows for an invite link, `https://<server>/invite#<token>`.
//!
//! The page is one self-contained HTML document, the same for every link: browsers never send
//! the fragment, so the server never sees the token, and the page's one inline script reads it
//! in the browser. It checks the token's form as the SDK's parser does (64 hex digits), then
//! offers "Open in the app" (the `unibus://` deep link) and shows the link as a QR code, or says
//! plainly that the link has no code or a damaged one. It makes no request, so it cannot tell
//! whether an invite is valid, used or expired. Without JavaScript it still explains what the
//! link is and what to do.
//!
//! The response forbids everything the page does not need: a Content-Security-Policy of
//! `default-src 'none'` that allows exactly its inline style and script by their SHA-256
//! hashes, no referrer, no framing, no content sniffing. The operator's app name and store
//! URLs are the only values in it, HTML-escaped.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::app_links::AppLinks;

const TEMPLATE: &str = include_str!("invite_page/invite.html");
const STYLE: &str = include_str!("invite_page/invite.css");
const SCRIPT: &str = include_str!("invite_page/invite.js");

/// The path of the page: the last segment of every invite link's path (protocol §5.2).
pub const INVITE_PATH: &str = "/invite";

/// The invite page, rendered once for the operator's app settings, with its headers.
#[derive(Debug, Clone)]
pub struct InvitePage {
    html: Bytes,
    headers: HeaderMap,
}

impl InvitePage {
    /// The page for `app`: its name and store pages.
    pub fn new(app: &AppLinks) -> InvitePage {
        let name = escape_html(app.name.as_str());
        let stores: Vec<String> = [
            ("App Store (iPhone and iPad)", &app.ios_store_url),
            ("Google Play (Android)", &app.android_store_url),
        ]
        .into_iter()
        .filter_map(|(label, url)| {
            url.as_ref().map(|url| {
                format!(
                    "<li><a href=\"{}\" rel=\"noreferrer noopener\">{label}</a></li>",
                    escape_html(url.as_str())
                )
            })
        })
        .collect();
        let stores = if stores.is_empty() {
            "<p>Ask the person who invited you where to get it.</p>".to_owned()
        } else {
            format!("<ul>{}</ul>", stores.concat())
        };
        let html = TEMPLATE
            .replace("{{style}}", STYLE)
            .replace("{{script}}", SCRIPT)
            .replace("{{stores}}", &stores)
            .replace("{{name}}", &name);
        let csp = format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; img-src data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
             require-trusted-types-for 'script'; trusted-types 'none'",
            sha256_source(SCRIPT),
            sha256_source(STYLE)
        );
        let mut headers = HeaderMap::new();
        let mut put = |name: HeaderName, value: &str| {
            // The values are built here from ASCII text, hashes and constants.
            let value = HeaderValue::from_str(value).expect("an ASCII header value");
            headers.insert(name, value);
        };
        put(header::CONTENT_TYPE, "text/html; charset=utf-8");
        put(header::CONTENT_SECURITY_POLICY, &csp);
        put(header::REFERRER_POLICY, "no-referrer");
        put(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        put(header::X_FRAME_OPTIONS, "DENY");
        // The same page for every link: caches may keep it briefly, as the operator's
        // settings may change with a restart.
        put(header::CACHE_CONTROL, "public, max-age=300");
        InvitePage {
            html: Bytes::from(html),
            headers,
        }
    }

    /// The response to `GET` or `HEAD` (hyper leaves the body out for `HEAD`).
    pub(super) fn response(&self) -> Response {
        (StatusCode::OK, self.headers.clone(), self.html.clone()).into_response()
    }
}

impl Default for InvitePage {
    fn default() -> Self {
        InvitePage::new(&AppLinks::default())
    }
}

/// What the router answers for a path it has no route for: the invite page for `/invite` in
/// any case (the SDK's parser accepts `/INVITE`, as a link typed or scanned in capitals has
/// it), `405` for other methods there, and an empty `404` for anything else.
pub(super) fn fallback(page: &InvitePage, method: &Method, uri: &Uri) -> Response {
    if !uri.path().eq_ignore_ascii_case(INVITE_PATH) {
        return StatusCode::NOT_FOUND.into_response();
    }
    if method == Method::GET || method == Method::HEAD {
        page.response()
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET,HEAD")],
        )
            .into_response()
    }
}

/// A CSP source expression that allows an inline element whose text is `text`.
fn sha256_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// `text` safe inside HTML text and double- or single-quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(page: &InvitePage) -> &str {
        std::str::from_utf8(&page.html).unwrap()
    }

    #[test]
    fn the_csp_allows_exactly_the_inline_style_and_script_it_serves() {
        let page = InvitePage::default();
        let csp = page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        let html = text(&page);
        let inline = |open: &str, close: &str| {
            let start = html.find(open).unwrap() + open.len();
            html[start..start + html[start..].find(close).unwrap()].to_owned()
        };
        let script = inline("<script>", "</script>");
        let style = inline("<style>", "</style>");
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains(&format!("script-src '{}';", sha256_source(&script))));
        assert!(csp.contains(&format!("style-src '{}';", sha256_source(&style))));
        assert_eq!(html.matches("<script").count(), 1, "one script");
        assert_eq!(html.matches("<style").count(), 1, "one style");
        assert!(!html.contains("{{"), "every placeholder is filled");
    }

    #[test]
    fn the_operators_values_are_html_escaped() {
        let app = AppLinks {
            name: "<b>\"Chat\" & 'co'</b>".parse().unwrap(),
            ios_store_url: Some("https://apps.example.com/a?x=1&y=\"2\"".parse().unwrap()),
            ..AppLinks::default()
        };
        let page = InvitePage::new(&app);
        let html = text(&page);
        assert!(html
            .contains("You are invited to &lt;b&gt;&quot;Chat&quot; &amp; &#39;co&#39;&lt;/b&gt;"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("href=\"https://apps.example.com/a?x=1&amp;y=%222%22\""));
        assert!(
            !html.contains("Google Play"),
            "no link for what is not configured"
        );
    }

    #[test]
    fn the_page_is_under_16_kib() {
        let page = InvitePage::new(&AppLinks {
            name: "x"
                .repeat(crate::app_links::MAX_APP_NAME_CHARS)
                .parse()
                .unwrap(),
            ios_store_url: Some("https://apps.apple.com/app/id1234567890".parse().unwrap()),
            android_store_url: Some(
                "https://play.google.com/store/apps/details?id=com.example.app"
                    .parse()
                    .unwrap(),
            ),
            ..AppLinks::default()
        });
        assert!(page.html.len() < 16 * 1024, "{} bytes", page.html.len());
    }
}
