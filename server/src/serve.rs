//! `membershipd serve`: everything the server runs, wired together.
//!
//! - With no `--nats-url`, an embedded nats-server: its config (JetStream, the accounts and the
//!   auth callout) is written under `<data-dir>/nats/`, and the process is supervised:
//!   restarted if it exits, killed when membershipd stops.
//! - membershipd's connections: the service user of the `AUTH` account (the KV store when the
//!   store is KV, account notices; and [`CALLOUT_CONNECTIONS`] more for the callout), the
//!   control-plane user of the `APP` account (the control plane, where users' requests arrive
//!   with their own reply subjects) and the system user (revocation sweeps).
//! - The message stream (created or updated at start, one replica per node up to 3), the
//!   auth callout, the revocation sweep, the control-plane service (with the leased live
//!   copies) and the HTTP API.
//!
//! Once it serves, `<data-dir>/serving.json` says where (see [`Serving`]): with port 0 for
//! `--listen` or `--nats-listen` the OS picks free ports, and this file is how a supervisor or a
//! test learns them without racing for a port.
//!
//! The auth keys live in `<data-dir>/auth/` (created on first start, owner-only); every node of a
//! cluster joined with `--nats-url` must carry the config block `membershipd` writes to
//! `<data-dir>/nats/auth.conf`.

use std::sync::Arc;
use std::time::Duration;

use nkeys::KeyPair;

use crate::auth::callout::{Callout, CALLOUT_CONNECTIONS};
use crate::auth::revocation::Revoker;
use crate::auth::setup::{AuthSetup, APP_ACCOUNT};
use crate::config::Config;
use crate::control::ControlPlane;
use crate::error::ServerError;
use crate::http::{
    AppState, LinkPages, RateLimiter, ADMIN_BURST, ADMIN_RATE, STATUS_BURST, STATUS_RATE,
};
use crate::store::{CachedStore, Store};

/// How often every connection is checked, as a safety net under the revocations the change
/// feed delivers (see [`Revoker`]).
pub const REVOCATION_SWEEP: Duration = Duration::from_secs(30);

/// Runs the server until `shutdown` completes. `open_store` opens the configured store; it is
/// awaited only once NATS is up, because the KV store connects as membershipd's service user
/// (its buckets live in the `AUTH` account).
pub async fn run(
    config: &Config,
    open_store: impl std::future::Future<Output = Result<Arc<dyn Store>, ServerError>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let auth_dir = config.data_dir.join("auth");
    let keys_error = |source: Box<dyn std::error::Error + Send + Sync>| ServerError::AuthKeys {
        path: auth_dir.clone(),
        source,
    };
    let auth = AuthSetup::load_or_create(&auth_dir).map_err(|e| keys_error(e.into()))?;
    let nats_dir = config.data_dir.join("nats");
    std::fs::create_dir_all(&nats_dir)
        .map_err(|e| ServerError::file("cannot create", &nats_dir, e))?;
    let (nats_url, supervisor) = match &config.nats_url {
        Some(url) => {
            // The block every node needs, for the operator: owner-only (it holds the system
            // user's password), like the keys. The embedded nats-server's is written by its
            // supervisor.
            let auth_conf = nats_dir.join("auth.conf");
            crate::auth::setup::write_private(&auth_conf, &auth.server_config())
                .map_err(|e| ServerError::file("cannot write", &auth_conf, e))?;
            (url.clone(), None)
        }
        None => {
            let (supervisor, bound) = crate::embedded_nats::supervise(
                &nats_dir,
                config.nats_listen,
                config.nats_server.clone(),
                &auth,
            )
            .await?;
            (format!("nats://{bound}"), Some(supervisor))
        }
    };
    let service_user =
        || async_nats::ConnectOptions::with_nkey(auth.service.seed().unwrap_or_default());
    let service = connect_retrying(&nats_url, service_user).await?;
    let control = connect_retrying(&nats_url, || {
        async_nats::ConnectOptions::with_nkey(auth.control.seed().unwrap_or_default())
    })
    .await?;
    // The callout answers on connections of its own, so that nats-server checks its answers on
    // several cores (see `auth::callout`).
    let mut callout_connections = Vec::with_capacity(CALLOUT_CONNECTIONS);
    for _ in 0..CALLOUT_CONNECTIONS {
        callout_connections.push(connect_retrying(&nats_url, service_user).await?);
    }
    let system = connect_retrying(&nats_url, || {
        async_nats::ConnectOptions::with_user_and_password(
            "sys".into(),
            auth.sys_password.to_string(),
        )
    })
    .await?;
    // Every service asks the store through the authorization cache; the revoker follows the
    // changes the cache has applied.
    let cache = CachedStore::new(open_store.await?);
    let warming = Arc::clone(&cache);
    tokio::spawn(async move {
        match warming.warm(Duration::from_secs(10)).await {
            Ok(users) => tracing::debug!(users, "the authorization cache holds every user"),
            Err(e) => tracing::warn!(error = %e, "the authorization cache could not be warmed"),
        }
    });
    let store: Arc<dyn Store> = cache;

    let issuer = auth
        .issuer
        .seed()
        .and_then(|seed| KeyPair::from_seed(&seed))
        .map_err(|e| keys_error(e.into()))?;
    // The message stream exists, in this version's settings, before anyone can send.
    let nodes = crate::messages::stream::cluster_size(&system)
        .await
        .map_err(ServerError::Messages)?;
    crate::messages::ensure_stream(
        &async_nats::jetstream::new(control.clone()),
        config.messages,
        nodes,
    )
    .await
    .map_err(ServerError::Messages)?;
    // The control plane answers before the callout lets anyone in: a client that reconnects
    // the moment logins work finds it there.
    Arc::new(ControlPlane::new(Arc::clone(&store), control))
        .start()
        .await
        .map_err(ServerError::Services)?;
    let callout = Arc::new(Callout::new(Arc::clone(&store), issuer, APP_ACCOUNT));
    for connection in &callout_connections {
        Arc::clone(&callout)
            .start(connection.clone())
            .await
            .map_err(ServerError::Services)?;
    }
    if let (Some(supervisor), Some(first)) = (&supervisor, callout_connections.first()) {
        supervisor.callout_listens_on(first.clone()).await;
    }
    tokio::spawn(
        Arc::new(
            Revoker::new(Arc::clone(&store), system, service.clone(), APP_ACCOUNT)
                .sparing(auth.control.public_key())
                .with_grants(callout.grants()),
        )
        .run(REVOCATION_SWEEP),
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Http {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Http {
        addr: config.listen,
        source,
    })?;
    let serving = Serving {
        pid: std::process::id(),
        http: local,
        public_url: config.public_url(local),
        nats_urls: config.advertise_nats(&nats_url),
    };
    let state = Arc::new(AppState {
        store,
        nats_urls: serving.nats_urls.clone(),
        register_limiter: RateLimiter::new(config.register_rate, config.register_burst),
        admin_limiter: RateLimiter::new(ADMIN_RATE, ADMIN_BURST),
        status_limiter: RateLimiter::new(STATUS_RATE, STATUS_BURST),
        public_url: serving.public_url.clone(),
        nats: Some(service.clone()),
        link_pages: LinkPages::new(&config.app_links, &serving.public_url),
    });
    let serving_file = config.data_dir.join(SERVING_FILE);
    serving.write(&serving_file)?;
    tracing::info!(
        http = %local,
        tls = config.tls.is_some(),
        store = ?config.store,
        nats = %nats_url,
        public_url = %serving.public_url,
        "membershipd serving"
    );
    let options = crate::http::ServeOptions {
        tls: config.tls.clone(),
        limits: config.http_limits.clone(),
    };
    let result = crate::http::serve(listener, state, options, shutdown)
        .await
        .map_err(|source| ServerError::Http {
            addr: local,
            source,
        });
    if let Some(supervisor) = supervisor {
        supervisor.abort();
    }
    // Best effort: a stale file after a crash names addresses nobody listens on.
    let _ = std::fs::remove_file(&serving_file);
    result
}

/// The file in the data directory that says where a running `serve` listens.
pub const SERVING_FILE: &str = "serving.json";

/// Where a running `membershipd serve` can be reached, written to `<data-dir>/serving.json`
/// once the HTTP API listens and the cluster services run (so its appearance also means
/// "ready"), and removed when it stops. The file is replaced atomically: a reader sees all of it
/// or none.
///
/// ```json
/// {"pid": 4242, "http": "127.0.0.1:41234", "public_url": "http://127.0.0.1:41234",
///  "nats_urls": ["nats://127.0.0.1:42345"]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Serving {
    /// membershipd's process id.
    pub pid: u32,
    /// The HTTP API's address as bound.
    pub http: std::net::SocketAddr,
    /// The base URL of invite links (`--public-url`, or the HTTP address).
    pub public_url: String,
    /// The NATS URLs registered clients are given (`--advertise-nats`, or the cluster's URL).
    pub nats_urls: Vec<String>,
}

impl Serving {
    /// Writes the file through a temporary file and a rename, so it appears whole.
    fn write(&self, path: &std::path::Path) -> Result<(), ServerError> {
        let partial = path.with_extension("json.partial");
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| ServerError::file("cannot encode", path, e.into()))?;
        std::fs::write(&partial, text)
            .map_err(|e| ServerError::file("cannot write", &partial, e))?;
        std::fs::rename(&partial, path).map_err(|e| ServerError::file("cannot write", path, e))
    }
}

/// Connects, retrying for up to 30 s while the server starts.
async fn connect_retrying(
    url: &str,
    options: impl Fn() -> async_nats::ConnectOptions,
) -> Result<async_nats::Client, ServerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match options()
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await
        {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ServerError::Nats {
                    url: url.to_string(),
                    source: e,
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
