//! What `membershipd` itself can fail at: its commands and `serve`. Each variant says what
//! failed; the underlying error is the [`source`](std::error::Error::source), and the message
//! repeats it, as the store's errors do, so the one line the CLI prints says everything.

use std::path::PathBuf;

use crate::admin::OperationError;
use crate::store::StoreError;

/// Why a `membershipd` command or `serve` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A file or directory could not be read, written or created.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What it is, e.g. `the data directory`.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The settings file is not valid TOML of the known settings.
    #[error("config file {}: {source}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        #[source]
        source: toml::de::Error,
    },
    /// A setting of the operator's app (`--ios-app-id`, `--android-package` and the like) is
    /// malformed or lacks its partner.
    #[error(transparent)]
    AppLinks(#[from] crate::app_links::AppLinkError),
    /// The KV store was asked for without a cluster to keep it on.
    #[error("the KV store needs --nats-url")]
    NoNatsUrl,
    /// An invite link needs the server's URL, but `--listen` asks for any free port (0), so the
    /// CLI cannot know it.
    #[error("--listen has port 0, so the server URL for invite links is unknown: pass --public-url (a running `membershipd serve` writes its URL to <data-dir>/serving.json)")]
    NoPublicUrl,
    /// membershipd's auth keys could not be used.
    #[error("auth keys in {}: {source}", path.display())]
    AuthKeys {
        /// Their directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The cluster could not be reached (after the retries `serve` makes while it starts).
    #[error("cannot connect to NATS at {url}: {source}")]
    Nats {
        /// The URL.
        url: String,
        /// What async-nats said.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The embedded nats-server could not be started.
    #[error("embedded nats-server {}: {reason}", binary.display())]
    EmbeddedNats {
        /// The nats-server binary.
        binary: PathBuf,
        /// What went wrong.
        reason: String,
        /// The OS error, if one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The HTTP API could not listen on its address, or stopped with an error.
    #[error("http server on {addr}: {source}")]
    Http {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The control plane or the auth callout could not subscribe on the cluster (the service
    /// user's connection was refused the subjects, or closed): check that every node carries
    /// the `auth.conf` block and that the cluster is reachable.
    #[error("membershipd's services could not subscribe on the cluster: {0}")]
    Services(#[source] async_nats::Error),
    /// The message stream could not be created or updated in the users' account: check that
    /// every node carries the current `auth.conf` block (it enables JetStream there) and that
    /// the cluster has JetStream.
    #[error("{0}")]
    Messages(#[source] crate::messages::MessagesError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An admin operation (`user`, `invite`, `room`) was refused.
    #[error(transparent)]
    Operation(#[from] OperationError),
}

impl ServerError {
    /// A [`ServerError::File`] for `what` at `path`.
    pub fn file(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ServerError::File {
            what,
            path: path.into(),
            source,
        }
    }
}
