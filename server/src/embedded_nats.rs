//! The embedded nats-server that `membershipd serve` runs when no `--nats-url` is given: its
//! config file and a supervisor that keeps the process running and takes it down with
//! membershipd. The only `unsafe` of the server lives here (a `prctl` in the forked child).
//!
//! **Starting without a long wait.** nats-server accepts clients before membershipd's callout
//! listens on it, and a login that arrives then waits the whole authentication timeout: no
//! callout answers, and nats-server does not notice that nobody listens. With the full
//! [`AUTH_TIMEOUT`] every client that reconnects that early (after a restart, most of them)
//! would wait 10 s. So each nats-server the supervisor starts has [`STARTING_AUTH_TIMEOUT`]
//! until membershipd's service connection is proven back on it (a round trip, after which the
//! callout's subscription, renewed on reconnection, is in place); then the config is rewritten
//! with the full timeout and nats-server reloads it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::auth::setup::{write_private, AuthSetup, AUTH_TIMEOUT};
use crate::error::ServerError;

/// How long the first start of the embedded nats-server may take to report its port.
const PORT_REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The authentication timeout of a freshly started embedded nats-server, until the callout
/// listens on it: a login that arrives before that is refused after this long and retried.
pub const STARTING_AUTH_TIMEOUT: Duration = Duration::from_secs(1);

/// The running embedded nats-server: its supervisor, and how to tell it that the callout
/// listens.
pub(crate) struct Embedded {
    task: tokio::task::JoinHandle<()>,
    callout: watch::Sender<Option<async_nats::Client>>,
    /// Whether a nats-server has had its timeout raised.
    raised: watch::Receiver<bool>,
}

/// How long [`Embedded::callout_listens_on`] waits for the first nats-server's timeout to be
/// raised.
const RAISE_WITHIN: Duration = Duration::from_secs(10);

impl Embedded {
    /// Says that `service` is the connection the callout listens on: each nats-server started
    /// (this one and every restart) gets the full authentication timeout once `service` is
    /// proven back on it. Returns once the running one has it, so that a storm of logins right
    /// after the start waits its turn (or after [`RAISE_WITHIN`], with a warning).
    pub async fn callout_listens_on(&self, service: async_nats::Client) {
        self.callout.send_replace(Some(service));
        let mut raised = self.raised.clone();
        if !matches!(
            tokio::time::timeout(RAISE_WITHIN, raised.wait_for(|raised| *raised)).await,
            Ok(Ok(_))
        ) {
            tracing::warn!(
                "the embedded nats-server's auth timeout is not raised yet; serving anyway"
            );
        }
    }

    /// Stops supervising and kills nats-server.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Writes the embedded nats-server's config into `dir` (beside the `auth.conf` that `serve`
/// writes there) and keeps the process running: restarted a second after it exits, killed when
/// the returned task is aborted or membershipd dies.
///
/// With port 0 in `listen`, nats-server picks a free port itself and reports it in a ports file
/// (its `ports_file_dir`); no other process can take the port between choosing and binding.
/// The port is then written into the config, so a restarted nats-server keeps the address
/// clients were given. Returns the supervisor and the client address nats-server listens on.
pub(crate) async fn supervise(
    dir: &Path,
    listen: SocketAddr,
    binary: PathBuf,
    auth: &AuthSetup,
) -> Result<(Embedded, SocketAddr), ServerError> {
    let conf = dir.join("nats.conf");
    let log_path = dir.join("nats.log");
    let ports_dir = dir.join("ports");
    let auth = AuthConf {
        path: dir.join("auth.conf"),
        starting: auth.server_config_with(STARTING_AUTH_TIMEOUT),
        running: auth.server_config_with(AUTH_TIMEOUT),
    };
    auth.write(false)?;
    std::fs::create_dir_all(&ports_dir)
        .map_err(|e| ServerError::file("cannot create", &ports_dir, e))?;
    write_config(&conf, dir, listen, &ports_dir)?;
    let (first, listen) = if listen.port() == 0 {
        let mut child =
            spawn(&binary, &conf, &log_path).map_err(|source| ServerError::EmbeddedNats {
                binary: binary.clone(),
                reason: format!("cannot start it: {source}"),
                source: Some(source),
            })?;
        let port = reported_port(&mut child, &ports_dir, &binary).await?;
        let bound = SocketAddr::new(listen.ip(), port);
        write_config(&conf, dir, bound, &ports_dir)?;
        (Some(child), bound)
    } else {
        (None, listen)
    };
    let (callout, ready) = watch::channel(None);
    let (raised_tx, raised) = watch::channel(false);
    let task = tokio::spawn(keep_running(
        binary,
        conf,
        log_path,
        Arc::new(auth),
        (ready, Arc::new(raised_tx)),
        first,
    ));
    Ok((
        Embedded {
            task,
            callout,
            raised,
        },
        listen,
    ))
}

/// `auth.conf` (it holds the system user's password: owner-only), in its two versions.
struct AuthConf {
    path: PathBuf,
    /// With [`STARTING_AUTH_TIMEOUT`].
    starting: String,
    /// With [`AUTH_TIMEOUT`].
    running: String,
}

impl AuthConf {
    fn write(&self, running: bool) -> Result<(), ServerError> {
        let text = if running {
            &self.running
        } else {
            &self.starting
        };
        write_private(&self.path, text)
            .map_err(|e| ServerError::file("cannot write", &self.path, e))
    }
}

/// The config: JetStream under `dir`, the auth block, and the client address (port 0 becomes
/// nats-server's "any free port"). Every nats-server reports its ports in `ports_dir` (a
/// reload keeps the report only while the config still names the directory).
fn write_config(
    conf: &Path,
    dir: &Path,
    listen: SocketAddr,
    ports_dir: &Path,
) -> Result<(), ServerError> {
    let port = if listen.port() == 0 {
        "-1".to_string()
    } else {
        listen.port().to_string()
    };
    let address = format!(
        "host: \"{}\"\nport: {port}\nports_file_dir: \"{}\"\n",
        listen.ip(),
        ports_dir.display()
    );
    let text = format!(
        "server_name: membershipd\n{address}jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 10GB\n}}\ninclude \"auth.conf\"\n",
        store = dir.join("jetstream").display(),
    );
    std::fs::write(conf, text).map_err(|e| ServerError::file("cannot write", conf, e))
}

/// Starts nats-server on `conf`, logging to `log_path`.
fn spawn(binary: &Path, conf: &Path, log_path: &Path) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path);
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--config")
        .arg(conf)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    die_with_parent(&mut command);
    if let Ok(log) = log {
        if let Ok(copy) = log.try_clone() {
            command.stdout(copy);
        }
        command.stderr(log);
    }
    command.spawn()
}

/// The client port `child` reports in its ports file (`<name>_<pid>.ports` in `ports_dir`,
/// JSON with a `nats` list of URLs), waiting until it appears.
async fn reported_port(
    child: &mut tokio::process::Child,
    ports_dir: &Path,
    binary: &Path,
) -> Result<u16, ServerError> {
    let failed = |reason: String| ServerError::EmbeddedNats {
        binary: binary.to_path_buf(),
        reason,
        source: None,
    };
    let pid = child
        .id()
        .ok_or_else(|| failed("it exited at once; see nats.log".into()))?;
    let suffix = format!("_{pid}.ports");
    let deadline = tokio::time::Instant::now() + PORT_REPORT_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!("it exited ({status}); see nats.log")));
        }
        let report = std::fs::read_dir(ports_dir)
            .into_iter()
            .flatten()
            .flatten()
            .find(|entry| entry.file_name().to_string_lossy().ends_with(&suffix))
            .and_then(|entry| std::fs::read(entry.path()).ok());
        if let Some(port) = report.as_deref().and_then(client_port) {
            return Ok(port);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(failed(format!(
                "it reported no port within {PORT_REPORT_TIMEOUT:?}; see nats.log"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The port of the first client URL in a nats-server ports file, if it is complete.
fn client_port(report: &[u8]) -> Option<u16> {
    let report: serde_json::Value = serde_json::from_slice(report).ok()?;
    let url = report.get("nats")?.as_array()?.first()?.as_str()?;
    url.rsplit_once(':')?.1.parse().ok()
}

/// Keeps nats-server running on `conf`, starting from `first` if it is already running, and
/// gives each one the full authentication timeout once the callout listens on it.
async fn keep_running(
    binary: PathBuf,
    conf: PathBuf,
    log_path: PathBuf,
    auth: Arc<AuthConf>,
    (callout, raised): (
        watch::Receiver<Option<async_nats::Client>>,
        Arc<watch::Sender<bool>>,
    ),
    mut first: Option<tokio::process::Child>,
) {
    loop {
        let child = match first.take() {
            Some(child) => Ok(child),
            None => match auth.write(false) {
                Ok(()) => spawn(&binary, &conf, &log_path),
                Err(e) => Err(std::io::Error::other(e)),
            },
        };
        match child {
            Ok(mut child) => {
                let raising = child.id().map(|pid| {
                    tokio::spawn(raise_auth_timeout(
                        binary.clone(),
                        pid,
                        Arc::clone(&auth),
                        callout.clone(),
                        Arc::clone(&raised),
                    ))
                });
                let status = child.wait().await;
                if let Some(raising) = raising {
                    raising.abort();
                }
                tracing::warn!(?status, "embedded nats-server exited; restarting");
            }
            Err(e) => tracing::error!(
                binary = %binary.display(),
                error = %e,
                "cannot start the embedded nats-server; retrying"
            ),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Once the callout's connection is proven on the nats-server `pid` (a message it publishes
/// to its own inbox comes back, so its subscriptions are renewed there), writes the running
/// `auth.conf` and has nats-server reload it.
async fn raise_auth_timeout(
    binary: PathBuf,
    pid: u32,
    auth: Arc<AuthConf>,
    mut callout: watch::Receiver<Option<async_nats::Client>>,
    raised: Arc<watch::Sender<bool>>,
) {
    let Ok(Some(service)) = callout.wait_for(Option::is_some).await.map(|c| c.clone()) else {
        return;
    };
    while !round_trip(&service).await {}
    if let Err(e) = auth.write(true) {
        tracing::warn!(error = %e, "cannot raise the embedded nats-server's auth timeout");
        return;
    }
    let reloaded = tokio::process::Command::new(&binary)
        .arg("--signal")
        .arg(format!("reload={pid}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await;
    match reloaded {
        Ok(status) if status.success() => {
            tracing::debug!(
                timeout = ?AUTH_TIMEOUT,
                "the callout listens; the embedded nats-server's auth timeout is raised"
            );
            raised.send_replace(true);
        }
        other => tracing::warn!(
            ?other,
            "the embedded nats-server did not reload its config; logins keep the starting auth timeout"
        ),
    }
}

/// Whether a message `client` publishes to a fresh inbox subject comes back within a second.
async fn round_trip(client: &async_nats::Client) -> bool {
    let subject = client.new_inbox();
    let Ok(mut echo) = client.subscribe(subject.clone()).await else {
        return false;
    };
    if client.publish(subject, "".into()).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(1), echo.next()).await,
        Ok(Some(_))
    )
}

/// Makes the child die with membershipd even when membershipd itself is killed with SIGKILL
/// (when no destructor runs), so no orphaned nats-server keeps the port and the store. The
/// signal follows the *thread* that spawned the child; the supervisor spawns from a runtime
/// worker thread, which lives as long as membershipd.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut tokio::process::Command) {}

#[cfg(test)]
mod tests {
    use super::client_port;

    #[test]
    fn the_client_port_is_read_from_a_complete_ports_file_only() {
        let report = br#"{"nats":["nats://127.0.0.1:41234"],"monitoring":[]}"#;
        assert_eq!(client_port(report), Some(41234));
        assert_eq!(client_port(br#"{"nats":["nats://127.0.0.1:4"#), None);
        assert_eq!(client_port(br#"{"nats":[]}"#), None);
        assert_eq!(client_port(b""), None);
    }
}
