//! Running the real `membershipd` binary in tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use unibus_server::serve::{Serving, SERVING_FILE};

/// A 127.0.0.1 port nobody listens on (bound, then released), for tests of a server that is
/// not there. Servers under test bind port 0 instead and report their ports.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The `membershipd` binary built for these tests.
pub fn membershipd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_membershipd"));
    command.env_remove("MEMBERSHIPD_CONFIG");
    command
}

/// A running membershipd, killed (SIGKILL) and reaped on drop.
pub struct Daemon {
    child: Child,
    /// `http://<its HTTP address>`.
    pub http: String,
    /// Where it serves, as it reported in `<data-dir>/serving.json`.
    pub serving: Serving,
}

impl Daemon {
    /// Spawns `command`, a `membershipd serve` on the data directory `data`, and waits until it
    /// reports where it serves (`<data>/serving.json`, written by this very process).
    pub async fn spawn(command: Command, data: &Path) -> Daemon {
        Self::spawn_logging_to(command, data, None).await
    }

    /// [`spawn`](Self::spawn), showing the daemon's log (at `log`) if it never serves.
    pub async fn spawn_logging_to(mut command: Command, data: &Path, log: Option<&Path>) -> Daemon {
        let mut child = command.spawn().unwrap();
        let report = data.join(SERVING_FILE);
        let deadline = Instant::now() + Duration::from_secs(60);
        let serving = loop {
            // A file left by an earlier, killed process names another pid.
            let serving = std::fs::read(&report)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Serving>(&bytes).ok())
                .filter(|serving| serving.pid == child.id());
            if let Some(serving) = serving {
                break serving;
            }
            let exited = child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.map(std::fs::read_to_string).transpose().ok().flatten();
                panic!(
                    "membershipd did not serve within 60 s ({exited:?}); its log:\n{}",
                    log.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Daemon {
            child,
            http: format!("http://{}", serving.http),
            serving,
        }
    }

    /// The port of the first NATS URL it gives clients.
    pub fn nats_port(&self) -> u16 {
        let url = &self.serving.nats_urls[0];
        url.rsplit_once(':').unwrap().1.parse().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `membershipd serve` on the embedded default (SQLite and a supervised nats-server) in a fresh
/// data directory, logging at debug level to `<data>/membershipd.log`.
pub struct EmbeddedServer {
    /// The running daemon.
    pub daemon: Daemon,
    /// Its data directory, removed on drop.
    pub data: tempfile::TempDir,
    /// Its HTTP port.
    pub http_port: u16,
    /// Its embedded nats-server's client port.
    pub nats_port: u16,
}

impl EmbeddedServer {
    /// Starts the server on ports the OS picks, and waits until it serves.
    pub async fn start() -> EmbeddedServer {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    /// Starts one on `data`, a data directory prepared beforehand (for example a store with
    /// many users imported into `<data>/unibus.db`).
    pub async fn start_in(data: tempfile::TempDir) -> EmbeddedServer {
        let daemon = Self::serve(data.path(), 0, 0).await;
        EmbeddedServer {
            http_port: daemon.serving.http.port(),
            nats_port: daemon.nats_port(),
            daemon,
            data,
        }
    }

    async fn serve(data: &Path, http_port: u16, nats_port: u16) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("membershipd.log"))
            .unwrap();
        let mut command = membershipd_at(data, http_port, nats_port);
        command
            .env("MEMBERSHIPD_LOG", "debug")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log);
        Daemon::spawn_logging_to(command, data, Some(&data.join("membershipd.log"))).await
    }

    /// Kills the daemon with SIGKILL (its nats-server follows it).
    pub fn kill(&mut self) {
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
    }

    /// Starts the daemon again on the same data and ports (clients keep their addresses), and
    /// waits until it serves.
    pub async fn restart(&mut self) {
        self.kill();
        self.daemon = Self::serve(self.data.path(), self.http_port, self.nats_port).await;
    }

    /// Runs the admin CLI on the same data directory (`--json`) and returns its output.
    pub fn cli(&self, args: &[&str]) -> Value {
        let output = membershipd_at(self.data.path(), self.http_port, self.nats_port)
            .arg("--public-url")
            .arg(&self.daemon.serving.public_url)
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "membershipd {args:?}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("membershipd.log")).unwrap()
    }
}

/// `membershipd` with the data directory, listeners and nats-server binary of a test server.
fn membershipd_at(data: &Path, http: u16, nats: u16) -> Command {
    let mut command = membershipd();
    command
        .arg("--data-dir")
        .arg(data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--nats-listen")
        .arg(format!("127.0.0.1:{nats}"))
        .arg("--nats-server")
        .arg(unibus_testkit::nats_server_binary().unwrap());
    command
}
