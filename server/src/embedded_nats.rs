//! The embedded nats-server that `membershipd serve` runs when no `--nats-url` is given: its
//! config file and a supervisor that keeps the process running and takes it down with
//! membershipd. The only `unsafe` of the server lives here (a `prctl` in the forked child).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ServerError;

/// How long the first start of the embedded nats-server may take to report its port.
const PORT_REPORT_TIMEOUT: Duration = Duration::from_secs(30);

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
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr), ServerError> {
    let conf = dir.join("nats.conf");
    let log_path = dir.join("nats.log");
    let ports_dir = dir.join("ports");
    write_config(&conf, dir, listen, &ports_dir)?;
    let (first, listen) = if listen.port() == 0 {
        std::fs::create_dir_all(&ports_dir)
            .map_err(|e| ServerError::file("cannot create", &ports_dir, e))?;
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
    Ok((
        tokio::spawn(keep_running(binary, conf, log_path, first)),
        listen,
    ))
}

/// The config: JetStream under `dir`, the auth block, and the client address (port 0 becomes
/// nats-server's "any free port", reported in `ports_dir`).
fn write_config(
    conf: &Path,
    dir: &Path,
    listen: SocketAddr,
    ports_dir: &Path,
) -> Result<(), ServerError> {
    let address = if listen.port() == 0 {
        format!(
            "host: \"{}\"\nport: -1\nports_file_dir: \"{}\"\n",
            listen.ip(),
            ports_dir.display()
        )
    } else {
        format!("host: \"{}\"\nport: {}\n", listen.ip(), listen.port())
    };
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

/// Keeps nats-server running on `conf`, starting from `first` if it is already running.
async fn keep_running(
    binary: PathBuf,
    conf: PathBuf,
    log_path: PathBuf,
    mut first: Option<tokio::process::Child>,
) {
    loop {
        let child = match first.take() {
            Some(child) => Ok(child),
            None => spawn(&binary, &conf, &log_path),
        };
        match child {
            Ok(mut child) => {
                let status = child.wait().await;
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
