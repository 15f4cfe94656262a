//! The operator's app as membershipd presents it: its display name and store pages on the
//! invite page, and the identifiers that let a tapped `https://` invite link open the app
//! directly (Apple universal links, Android app links; see `docs/operations.md`).
//!
//! Each setting is a type that checks its value when it is parsed (from a flag, a variable or
//! the settings file), so a wrong value stops `membershipd` with a message that says what the
//! value must look like; [`AppLinks::new`] then checks the settings that go together.

use std::fmt;
use std::str::FromStr;

/// A setting of the operator's app that is not in the form it must have. Each message says
/// what the form is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppLinkError {
    /// `app-name` is empty, too long or holds control characters.
    #[error(
        "the app name must be 1 to {MAX_APP_NAME_CHARS} characters, without control characters"
    )]
    AppName,
    /// `ios-app-id` is not `TEAMID.bundle.id`.
    #[error("the iOS app ID must be TEAMID.bundle.id: the 10-character team ID (A-Z, 0-9), a dot, and the app's bundle ID (A-Z, a-z, 0-9, '-', '.'), e.g. ABCDE12345.com.example.app")]
    IosAppId,
    /// `android-package` is not a package name.
    #[error("the Android package must be the app's package name: two or more parts separated by dots, each a letter followed by letters, digits or '_', e.g. com.example.app")]
    AndroidPackage,
    /// An `android-cert-fingerprint` is not a SHA-256 fingerprint.
    #[error("an Android certificate fingerprint must be the SHA-256 fingerprint of the app's signing certificate: 32 bytes as hex pairs separated by ':' (AA:BB:...:FF), as `keytool -list -v` or the Play Console shows it")]
    CertFingerprint,
    /// A store URL is not an `https` URL with a host.
    #[error("a store URL must be an https:// URL with a host and without a user name or password, e.g. https://apps.apple.com/app/id123456789")]
    StoreUrl,
    /// `android-package` was given without `android-cert-fingerprint`, or the other way round.
    #[error("Android app links need both --android-package and at least one --android-cert-fingerprint; set both, or neither")]
    AndroidIncomplete,
}

/// The longest app name, in characters.
pub const MAX_APP_NAME_CHARS: usize = 64;

/// The name the invite page gives the app when the operator sets none.
pub const DEFAULT_APP_NAME: &str = "unibus";

/// Implements `Display`, `FromStr` (by `$parse`) and `Deserialize` (from a string, by the
/// same check) for a checked string setting.
macro_rules! checked_string {
    ($name:ident, $parse:expr) => {
        impl $name {
            /// The value as checked (and normalized).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = AppLinkError;

            fn from_str(text: &str) -> Result<Self, AppLinkError> {
                let parse: fn(&str) -> Result<String, AppLinkError> = $parse;
                parse(text).map($name)
            }
        }

        impl TryFrom<String> for $name {
            type Error = AppLinkError;

            fn try_from(text: String) -> Result<Self, AppLinkError> {
                text.parse()
            }
        }
    };
}

/// The app's display name on the invite page (`--app-name`): 1 to 64 characters, no control
/// characters, surrounding white space trimmed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct AppName(String);

checked_string!(AppName, |text| {
    let name = text.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_APP_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AppLinkError::AppName);
    }
    Ok(name.to_owned())
});

impl Default for AppName {
    fn default() -> Self {
        AppName(DEFAULT_APP_NAME.to_owned())
    }
}

/// The iOS app's application identifier (`--ios-app-id`), `TEAMID.bundle.id`: the 10-character
/// team ID, a dot and the bundle ID, as Apple's association file names apps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct IosAppId(String);

checked_string!(IosAppId, |text| {
    let (team, bundle) = text.split_once('.').ok_or(AppLinkError::IosAppId)?;
    let team_ok = team.len() == 10
        && team
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let bundle_ok = !bundle.is_empty()
        && bundle.len() <= 155
        && bundle.split('.').all(|part| !part.is_empty())
        && bundle
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if team_ok && bundle_ok {
        Ok(text.to_owned())
    } else {
        Err(AppLinkError::IosAppId)
    }
});

/// The Android app's package name (`--android-package`), e.g. `com.example.app`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct AndroidPackage(String);

checked_string!(AndroidPackage, |text| {
    let part_ok = |part: &str| {
        let mut bytes = part.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if text.len() <= 255 && text.split('.').count() >= 2 && text.split('.').all(part_ok) {
        Ok(text.to_owned())
    } else {
        Err(AppLinkError::AndroidPackage)
    }
});

/// The SHA-256 fingerprint of the Android app's signing certificate
/// (`--android-cert-fingerprint`): 32 bytes as hex pairs separated by colons, kept in upper
/// case as Android's association file writes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct CertFingerprint(String);

checked_string!(CertFingerprint, |text| {
    let pairs: Vec<&str> = text.split(':').collect();
    let pair_ok = |pair: &&str| pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit());
    if pairs.len() == 32 && pairs.iter().all(pair_ok) {
        Ok(text.to_ascii_uppercase())
    } else {
        Err(AppLinkError::CertFingerprint)
    }
});

/// An app store page (`--ios-store-url`, `--android-store-url`): an `https` URL with a host
/// and no user name or password, kept as the URL Standard serializes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct StoreUrl(String);

checked_string!(StoreUrl, |text| {
    let url = url::Url::parse(text.trim()).map_err(|_| AppLinkError::StoreUrl)?;
    let has_host = url.host_str().is_some_and(|host| !host.is_empty());
    if url.scheme() == "https" && has_host && url.username().is_empty() && url.password().is_none()
    {
        Ok(url.to_string())
    } else {
        Err(AppLinkError::StoreUrl)
    }
});

/// The Android app that may open invite links: its package and signing certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AndroidApp {
    /// The package name.
    pub package: AndroidPackage,
    /// The SHA-256 fingerprints of its signing certificates (one or more, e.g. the upload key
    /// and Google Play's app signing key).
    pub cert_fingerprints: Vec<CertFingerprint>,
}

/// Everything membershipd says about the operator's app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppLinks {
    /// The name on the invite page.
    pub name: AppName,
    /// The iOS app: `/.well-known/apple-app-site-association` is served when set.
    pub ios_app_id: Option<IosAppId>,
    /// The Android app: `/.well-known/assetlinks.json` is served when set.
    pub android: Option<AndroidApp>,
    /// The iOS app's App Store page, linked from the invite page.
    pub ios_store_url: Option<StoreUrl>,
    /// The Android app's store page, linked from the invite page.
    pub android_store_url: Option<StoreUrl>,
}

impl AppLinks {
    /// The app's settings as a whole: an Android package needs at least one certificate
    /// fingerprint, and fingerprints need a package ([`AppLinkError::AndroidIncomplete`]).
    pub fn new(
        name: Option<AppName>,
        ios_app_id: Option<IosAppId>,
        android_package: Option<AndroidPackage>,
        android_cert_fingerprints: Vec<CertFingerprint>,
        ios_store_url: Option<StoreUrl>,
        android_store_url: Option<StoreUrl>,
    ) -> Result<AppLinks, AppLinkError> {
        let android = match (android_package, android_cert_fingerprints.is_empty()) {
            (None, true) => None,
            (Some(package), false) => Some(AndroidApp {
                package,
                cert_fingerprints: android_cert_fingerprints,
            }),
            _ => return Err(AppLinkError::AndroidIncomplete),
        };
        Ok(AppLinks {
            name: name.unwrap_or_default(),
            ios_app_id,
            android,
            ios_store_url,
            android_store_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINGERPRINT: &str = "14:6d:e9:83:c5:73:06:50:d8:ee:b9:95:2f:34:fc:64:16:a0:83:42:e6:1d:be:a8:8a:04:96:b2:3f:cf:44:e5";

    #[test]
    fn well_formed_values_are_accepted_and_normalized() {
        assert_eq!(
            "ABCDE12345.com.example.app"
                .parse::<IosAppId>()
                .unwrap()
                .as_str(),
            "ABCDE12345.com.example.app"
        );
        assert_eq!(
            "com.example.my_app"
                .parse::<AndroidPackage>()
                .unwrap()
                .as_str(),
            "com.example.my_app"
        );
        assert_eq!(
            FINGERPRINT.parse::<CertFingerprint>().unwrap().as_str(),
            FINGERPRINT.to_ascii_uppercase()
        );
        assert_eq!(
            "https://Apps.Apple.com/app/id1"
                .parse::<StoreUrl>()
                .unwrap()
                .as_str(),
            "https://apps.apple.com/app/id1"
        );
        assert_eq!("  Chat  ".parse::<AppName>().unwrap().as_str(), "Chat");
    }

    #[test]
    fn malformed_values_are_refused_with_what_they_must_look_like() {
        for bad in [
            "",
            "ABCDE12345",
            "abcde12345.com.x",
            "ABCDE1234.com.x",
            "ABCDE12345.",
            "ABCDE12345.com..x",
            "ABCDE12345.com/x",
        ] {
            assert_eq!(
                bad.parse::<IosAppId>(),
                Err(AppLinkError::IosAppId),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "app",
            "com.",
            "1com.example",
            "com.exa-mple",
            "com.example.",
            "com..example",
        ] {
            assert_eq!(
                bad.parse::<AndroidPackage>(),
                Err(AppLinkError::AndroidPackage),
                "{bad:?}"
            );
        }
        let short = &FINGERPRINT[..FINGERPRINT.len() - 3];
        for bad in [
            "",
            short,
            &FINGERPRINT.replace(':', ""),
            &FINGERPRINT.replace("14:", "1G:"),
            &format!("{FINGERPRINT}:00"),
        ] {
            assert_eq!(
                bad.parse::<CertFingerprint>(),
                Err(AppLinkError::CertFingerprint),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "apps.apple.com/app",
            "http://apps.apple.com/app",
            "https://u:p@apps.apple.com/",
            "javascript:alert(1)",
            "https://",
        ] {
            assert_eq!(
                bad.parse::<StoreUrl>(),
                Err(AppLinkError::StoreUrl),
                "{bad:?}"
            );
        }
        for bad in [" ", "a\u{7}b", &"x".repeat(MAX_APP_NAME_CHARS + 1)] {
            assert_eq!(
                bad.parse::<AppName>(),
                Err(AppLinkError::AppName),
                "{bad:?}"
            );
        }
        assert!(AppLinkError::CertFingerprint.to_string().contains("AA:BB"));
    }

    #[test]
    fn an_android_package_and_its_fingerprints_go_together() {
        let package = || Some("com.example.app".parse().unwrap());
        let fingerprints = || vec![FINGERPRINT.parse().unwrap()];
        let new =
            |package, fingerprints| AppLinks::new(None, None, package, fingerprints, None, None);
        assert_eq!(new(package(), vec![]), Err(AppLinkError::AndroidIncomplete));
        assert_eq!(
            new(None, fingerprints()),
            Err(AppLinkError::AndroidIncomplete)
        );
        assert_eq!(new(None, vec![]).unwrap(), AppLinks::default());
        let both = new(package(), fingerprints()).unwrap();
        assert_eq!(both.android.unwrap().cert_fingerprints.len(), 1);
        assert_eq!(both.name.as_str(), DEFAULT_APP_NAME);
    }
}
