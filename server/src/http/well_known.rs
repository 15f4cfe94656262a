//! The association files that let a tapped `https://` invite link open the operator's app
//! instead of the invite page, served only when the app is configured (`404` otherwise):
//!
//! - `/.well-known/apple-app-site-association` (Apple universal links): the `applinks` format
//!   with `components`, matching the invite path with a non-empty fragment;
//! - `/.well-known/assetlinks.json` (Android app links): a Digital Asset Links statement
//!   granting `delegate_permission/common.handle_all_urls` to the package and its certificates.
//!
//! Both are `application/json`, answered directly (never a redirect, which neither platform
//! follows), and built once at start.

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::invite_page::INVITE_PATH;
use crate::app_links::AppLinks;

/// Where Apple looks for the association file.
pub const APPLE_PATH: &str = "/.well-known/apple-app-site-association";

/// Where Android looks for the association file.
pub const ANDROID_PATH: &str = "/.well-known/assetlinks.json";

/// The association files for the configured apps.
#[derive(Debug, Clone, Default)]
pub struct WellKnown {
    apple: Option<Bytes>,
    android: Option<Bytes>,
}

impl WellKnown {
    /// The files for `app`, whose invite links start with `public_url` (the base path of that
    /// URL comes before `/invite` in the paths the files claim).
    pub fn new(app: &AppLinks, public_url: &str) -> WellKnown {
        let base_path = url::Url::parse(public_url)
            .map(|url| url.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let apple = app.ios_app_id.as_ref().map(|id| {
            json!({
                "applinks": {
                    "details": [{
                        "appIDs": [id.as_str()],
                        "components": [{
                            "/": format!("{base_path}{INVITE_PATH}"),
                            "#": "?*",
                            "caseSensitive": false,
                            "comment": "An invite link: the token is the fragment.",
                        }],
                    }],
                },
            })
        });
        let android = app.android.as_ref().map(|android| {
            json!([{
                "relation": ["delegate_permission/common.handle_all_urls"],
                "target": {
                    "namespace": "android_app",
                    "package_name": android.package.as_str(),
                    "sha256_cert_fingerprints": android
                        .cert_fingerprints
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>(),
                },
            }])
        });
        let encode = |value: serde_json::Value| Bytes::from(value.to_string());
        WellKnown {
            apple: apple.map(encode),
            android: android.map(encode),
        }
    }

    /// `GET /.well-known/apple-app-site-association`.
    pub(super) fn apple(&self) -> Response {
        json_file(self.apple.as_ref())
    }

    /// `GET /.well-known/assetlinks.json`.
    pub(super) fn android(&self) -> Response {
        json_file(self.android.as_ref())
    }
}

fn json_file(file: Option<&Bytes>) -> Response {
    match file {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            body.clone(),
        )
            .into_response(),
    }
}
