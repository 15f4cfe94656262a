//! The embedded nats-server that `membershipd serve` runs when no `--nats-url` is given: its
//! config file and a supervisor that keeps the process running and takes it down with
//! membershipd. The only `unsafe` of the server lives here (a `prctl` in the forked child).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ServerError;

/// Writes the embedded nats-server's config into `dir` (beside the `auth.conf` that `serve`
/// writes there) and keeps the process running: restarted a second after it exits, killed when
/// the returned task is aborted or membershipd dies.
pub(crate) fn supervise(
    dir: &Path,
    listen: SocketAddr,
    binary: PathBuf,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let conf = dir.join("nats.conf");
    let text = format!(
        "server_name: membershipd\nlisten: {listen}\njetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 10GB\n}}\ninclude \"auth.conf\"\n",
        listen = listen,
        store = dir.join("jetstream").display(),
    );
    std::fs::write(&conf, text).map_err(|e| ServerError::file("cannot write", &conf, e))?;
    let log_path = dir.join("nats.log");
    Ok(tokio::spawn(async move {
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path);
            let mut command = tokio::process::Command::new(&binary);
            command
                .arg("--config")
                .arg(&conf)
                .kill_on_drop(true)
                .stdin(std::process::Stdio::null());
            die_with_parent(&mut command);
            if let Ok(log) = log {
                if let Ok(copy) = log.try_clone() {
                    command.stdout(copy);
                }
                command.stderr(log);
            }
            match command.spawn() {
                Ok(mut child) => {
                    let status = child.wait().await;
                    tracing::warn!(?status, "embedded nats-server exited; restarting");
                }
                Err(e) => eprintln!(
                    "membershipd: cannot start {}: {e}; retrying",
                    binary.display()
                ),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
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
