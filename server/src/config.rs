//! `membershipd` settings: flags, then environment variables, then an optional TOML file, then
//! safe defaults, in that order of precedence.
//!
//! Every setting has a flag (`--listen`), an environment variable (`MEMBERSHIPD_LISTEN`) and a
//! TOML key (`listen = "127.0.0.1:8080"`). Clap resolves flag over variable; [`Settings::or`]
//! then falls back to the file, and [`Config::resolve`] to the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::app_links::{
    AndroidPackage, AppLinkError, AppLinks, AppName, CertFingerprint, IosAppId, StoreUrl,
};

/// Which store backend to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A SQLite file in the data directory (the default).
    Sqlite,
    /// JetStream KV buckets on the cluster at `--nats-url`.
    Kv,
}

/// Settings as given by flags, environment or file; unset ones are `None`.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Directory for the SQLite database and backups [default: ./membershipd-data].
    #[arg(long, env = "MEMBERSHIPD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Store backend [default: sqlite, or kv when --nats-url is given].
    #[arg(long, env = "MEMBERSHIPD_STORE", global = true, value_enum)]
    pub store: Option<StoreKind>,
    /// SQLite database file [default: DATA_DIR/unibus.db].
    #[arg(long, env = "MEMBERSHIPD_DB", global = true)]
    pub db: Option<PathBuf>,
    /// NATS URL of the cluster (for the KV store and migration).
    #[arg(long, env = "MEMBERSHIPD_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Replicas of each KV bucket, 1 to 5 [default: 1].
    #[arg(long, env = "MEMBERSHIPD_REPLICAS", global = true)]
    pub replicas: Option<usize>,
    /// Seconds within which the message stream stores an envelope sent twice only once
    /// [default: 120].
    #[arg(long, env = "MEMBERSHIPD_MESSAGE_DUPLICATE_WINDOW", global = true)]
    pub message_duplicate_window: Option<u64>,
    /// Seconds the message stream keeps an envelope; 0 keeps it forever [default: 0].
    #[arg(long, env = "MEMBERSHIPD_MESSAGE_MAX_AGE", global = true)]
    pub message_max_age: Option<u64>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "MEMBERSHIPD_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// The server's public base URL, as put in invite links [default: http(s)://LISTEN].
    #[arg(long, env = "MEMBERSHIPD_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// NATS URLs told to registered clients, comma-separated [default: --nats-url].
    #[arg(
        long,
        env = "MEMBERSHIPD_ADVERTISE_NATS",
        global = true,
        value_delimiter = ','
    )]
    pub advertise_nats: Option<Vec<String>>,
    /// Registrations allowed per second per client address [default: 1].
    #[arg(long, env = "MEMBERSHIPD_REGISTER_RATE", global = true)]
    pub register_rate: Option<f64>,
    /// Registrations allowed at once per client address [default: 10].
    #[arg(long, env = "MEMBERSHIPD_REGISTER_BURST", global = true)]
    pub register_burst: Option<u32>,
    /// Client address of the embedded nats-server run when no --nats-url is given
    /// [default: 127.0.0.1:4222].
    #[arg(long, env = "MEMBERSHIPD_NATS_LISTEN", global = true)]
    pub nats_listen: Option<SocketAddr>,
    /// The nats-server binary for the embedded server [default: $NATS_SERVER, else
    /// nats-server on the PATH].
    #[arg(long, env = "MEMBERSHIPD_NATS_SERVER", global = true)]
    pub nats_server: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS (with --tls-key) instead of plain HTTP.
    #[arg(
        long,
        env = "MEMBERSHIPD_TLS_CERT",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "MEMBERSHIPD_TLS_KEY",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Seconds an HTTP client has for a TLS handshake, for a request's headers, and an idle
    /// connection for its next request [default: 10].
    #[arg(long, env = "MEMBERSHIPD_HTTP_HEADER_TIMEOUT", global = true)]
    pub http_header_timeout: Option<u64>,
    /// Seconds an HTTP client has to send a request's body and get the answer [default: 30].
    #[arg(long, env = "MEMBERSHIPD_HTTP_REQUEST_TIMEOUT", global = true)]
    pub http_request_timeout: Option<u64>,
    /// HTTP connections open at once from one IP address [default: 64].
    #[arg(
        long,
        env = "MEMBERSHIPD_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
        global = true
    )]
    pub http_max_connections_per_address: Option<usize>,
    /// HTTP connections open at once in all [default: 4096].
    #[arg(long, env = "MEMBERSHIPD_HTTP_MAX_CONNECTIONS", global = true)]
    pub http_max_connections: Option<usize>,
    /// The app's name on the invite page [default: unibus].
    #[arg(long, env = "MEMBERSHIPD_APP_NAME", global = true)]
    pub app_name: Option<AppName>,
    /// The iOS app, TEAMID.bundle.id: /.well-known/apple-app-site-association names it, so
    /// that a tapped invite link opens it.
    #[arg(long, env = "MEMBERSHIPD_IOS_APP_ID", global = true)]
    pub ios_app_id: Option<IosAppId>,
    /// The Android app's package name: /.well-known/assetlinks.json names it, so that a tapped
    /// invite link opens it (needs --android-cert-fingerprint).
    #[arg(
        long,
        env = "MEMBERSHIPD_ANDROID_PACKAGE",
        global = true,
        requires = "android_cert_fingerprint"
    )]
    pub android_package: Option<AndroidPackage>,
    /// SHA-256 fingerprint of the Android app's signing certificate, AA:BB:...:FF; repeat the
    /// flag, or separate with commas, for several (needs --android-package).
    #[arg(
        long,
        env = "MEMBERSHIPD_ANDROID_CERT_FINGERPRINT",
        global = true,
        value_delimiter = ',',
        requires = "android_package"
    )]
    pub android_cert_fingerprint: Option<Vec<CertFingerprint>>,
    /// The iOS app's App Store page (https), linked from the invite page.
    #[arg(long, env = "MEMBERSHIPD_IOS_STORE_URL", global = true)]
    pub ios_store_url: Option<StoreUrl>,
    /// The Android app's store page (https), linked from the invite page.
    #[arg(long, env = "MEMBERSHIPD_ANDROID_STORE_URL", global = true)]
    pub android_store_url: Option<StoreUrl>,
}

impl Settings {
    /// Each setting from `self`, else from `fallback`.
    pub fn or(self, fallback: Settings) -> Settings {
        Settings {
            data_dir: self.data_dir.or(fallback.data_dir),
            store: self.store.or(fallback.store),
            db: self.db.or(fallback.db),
            nats_url: self.nats_url.or(fallback.nats_url),
            replicas: self.replicas.or(fallback.replicas),
            message_duplicate_window: self
                .message_duplicate_window
                .or(fallback.message_duplicate_window),
            message_max_age: self.message_max_age.or(fallback.message_max_age),
            listen: self.listen.or(fallback.listen),
            public_url: self.public_url.or(fallback.public_url),
            advertise_nats: self.advertise_nats.or(fallback.advertise_nats),
            register_rate: self.register_rate.or(fallback.register_rate),
            register_burst: self.register_burst.or(fallback.register_burst),
            nats_listen: self.nats_listen.or(fallback.nats_listen),
            nats_server: self.nats_server.or(fallback.nats_server),
            tls_cert: self.tls_cert.or(fallback.tls_cert),
            tls_key: self.tls_key.or(fallback.tls_key),
            http_header_timeout: self.http_header_timeout.or(fallback.http_header_timeout),
            http_request_timeout: self.http_request_timeout.or(fallback.http_request_timeout),
            http_max_connections_per_address: self
                .http_max_connections_per_address
                .or(fallback.http_max_connections_per_address),
            http_max_connections: self.http_max_connections.or(fallback.http_max_connections),
            app_name: self.app_name.or(fallback.app_name),
            ios_app_id: self.ios_app_id.or(fallback.ios_app_id),
            android_package: self.android_package.or(fallback.android_package),
            android_cert_fingerprint: self
                .android_cert_fingerprint
                .or(fallback.android_cert_fingerprint),
            ios_store_url: self.ios_store_url.or(fallback.ios_store_url),
            android_store_url: self.android_store_url.or(fallback.android_store_url),
        }
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Settings, crate::error::ServerError> {
        use crate::error::ServerError;
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::file("cannot read config file", path, e))?;
        toml::from_str(&text).map_err(|source| ServerError::Config {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Store backend.
    pub store: StoreKind,
    /// SQLite database file.
    pub db: PathBuf,
    /// NATS URL, if any.
    pub nats_url: Option<String>,
    /// KV replicas.
    pub replicas: usize,
    /// The message stream's duplicate window and retention.
    pub messages: crate::messages::StreamSettings,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Public base URL for invite links, when set; see [`Config::public_url`].
    pub public_url: Option<String>,
    /// NATS URLs for registered clients, when set; see [`Config::advertise_nats`].
    pub advertise_nats: Option<Vec<String>>,
    /// Registrations per second per address.
    pub register_rate: f64,
    /// Registration burst per address.
    pub register_burst: u32,
    /// Client address of the embedded nats-server.
    pub nats_listen: SocketAddr,
    /// The nats-server binary for the embedded server.
    pub nats_server: PathBuf,
    /// Certificate and key for HTTPS; plain HTTP when `None`.
    pub tls: Option<crate::http::TlsFiles>,
    /// Timeouts and connection caps of the HTTP API.
    pub http_limits: crate::http::HttpLimits,
    /// The operator's app, for the invite page and the `.well-known` association files.
    pub app_links: AppLinks,
}

impl Config {
    /// Applies the defaults to whatever `settings` leaves unset, and checks the settings that
    /// go together (those of the Android app: [`AppLinks::new`]).
    pub fn resolve(settings: Settings) -> Result<Config, AppLinkError> {
        let app_links = AppLinks::new(
            settings.app_name,
            settings.ios_app_id,
            settings.android_package,
            settings.android_cert_fingerprint.unwrap_or_default(),
            settings.ios_store_url,
            settings.android_store_url,
        )?;
        let data_dir = settings
            .data_dir
            .unwrap_or_else(|| PathBuf::from("membershipd-data"));
        let listen = settings
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let nats_listen = settings
            .nats_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4222)));
        let store = settings.store.unwrap_or(if settings.nats_url.is_some() {
            StoreKind::Kv
        } else {
            StoreKind::Sqlite
        });
        let tls = match (settings.tls_cert, settings.tls_key) {
            (Some(cert), Some(key)) => Some(crate::http::TlsFiles { cert, key }),
            _ => None,
        };
        let defaults = crate::http::HttpLimits::default();
        let http_limits = crate::http::HttpLimits {
            header_timeout: settings
                .http_header_timeout
                .map_or(defaults.header_timeout, Duration::from_secs),
            request_timeout: settings
                .http_request_timeout
                .map_or(defaults.request_timeout, Duration::from_secs),
            max_connections_per_address: settings
                .http_max_connections_per_address
                .unwrap_or(defaults.max_connections_per_address),
            max_connections: settings
                .http_max_connections
                .unwrap_or(defaults.max_connections),
        };
        Ok(Config {
            app_links,
            http_limits,
            tls,
            db: settings.db.unwrap_or_else(|| data_dir.join("unibus.db")),
            store,
            replicas: settings.replicas.unwrap_or(1),
            messages: crate::messages::StreamSettings {
                duplicate_window: settings.message_duplicate_window.map_or(
                    crate::messages::DEFAULT_DUPLICATE_WINDOW,
                    Duration::from_secs,
                ),
                max_age: settings
                    .message_max_age
                    .map_or(Duration::ZERO, Duration::from_secs),
            },
            public_url: settings.public_url,
            advertise_nats: settings.advertise_nats,
            nats_url: settings.nats_url,
            register_rate: settings.register_rate.unwrap_or(1.0),
            register_burst: settings.register_burst.unwrap_or(10),
            nats_server: settings
                .nats_server
                .or_else(|| std::env::var_os("NATS_SERVER").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("nats-server")),
            nats_listen,
            listen,
            data_dir,
        })
    }

    /// The public base URL for invite links: the configured one, or `http(s)://` the address
    /// the HTTP API listens on (`http` as bound, which differs from [`listen`](Self::listen)
    /// when that asks for port 0).
    pub fn public_url(&self, http: SocketAddr) -> String {
        self.public_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{http}")
        })
    }

    /// The NATS URLs registered clients are given: the configured ones, or the URL membershipd
    /// itself reaches the cluster on (`nats_url`: the `--nats-url`, or the embedded server's
    /// address as bound).
    pub fn advertise_nats(&self, nats_url: &str) -> Vec<String> {
        self.advertise_nats
            .clone()
            .unwrap_or_else(|| vec![nats_url.to_owned()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file: Settings = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nreplicas = 3\nnats-url = \"nats://127.0.0.1:4222\"\n",
        )
        .unwrap();
        let flags = Settings {
            replicas: Some(5),
            ..Settings::default()
        };
        let config = Config::resolve(flags.or(file)).unwrap();
        assert_eq!(config.replicas, 5);
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(
            config.store,
            StoreKind::Kv,
            "a NATS URL implies the KV store"
        );
        assert_eq!(
            config.advertise_nats("nats://127.0.0.1:4222"),
            vec!["nats://127.0.0.1:4222".to_string()]
        );
        assert_eq!(config.public_url(config.listen), "http://127.0.0.1:9000");
    }

    #[test]
    fn defaults_are_local_and_sqlite() {
        let config = Config::resolve(Settings::default()).unwrap();
        assert_eq!(config.store, StoreKind::Sqlite);
        assert_eq!(config.db, PathBuf::from("membershipd-data/unibus.db"));
        assert!(config.listen.ip().is_loopback());
    }

    #[test]
    fn default_urls_follow_the_addresses_as_bound() {
        let config = Config::resolve(Settings {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            nats_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Settings::default()
        })
        .unwrap();
        let bound = "127.0.0.1:41234".parse().unwrap();
        assert_eq!(config.public_url(bound), "http://127.0.0.1:41234");
        assert_eq!(
            config.advertise_nats("nats://127.0.0.1:42345"),
            vec!["nats://127.0.0.1:42345".to_string()]
        );
        let explicit = Config::resolve(Settings {
            public_url: Some("https://members.example.com".into()),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(explicit.public_url(bound), "https://members.example.com");
    }

    #[test]
    fn app_settings_are_checked_in_the_file_and_as_a_whole() {
        let fingerprint = ["AB"; 32].join(":");
        let file: Settings = toml::from_str(&format!(
            "app-name = \"Chat\"\nandroid-package = \"com.example.chat\"\n\
             android-cert-fingerprint = [\"{fingerprint}\"]\n"
        ))
        .unwrap();
        let config = Config::resolve(file.clone()).unwrap();
        assert_eq!(config.app_links.name.as_str(), "Chat");
        assert_eq!(
            config.app_links.android.unwrap().package.as_str(),
            "com.example.chat"
        );
        let error = toml::from_str::<Settings>("android-cert-fingerprint = [\"AB:CD\"]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("AA:BB"), "{error}");
        let no_fingerprints = Settings {
            android_cert_fingerprint: None,
            ..file
        };
        assert_eq!(
            Config::resolve(no_fingerprints).unwrap_err(),
            AppLinkError::AndroidIncomplete
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<Settings>("lissten = \"x\"").is_err());
    }
}
