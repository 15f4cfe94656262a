//! Running the real `membershipd` binary in tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A free 127.0.0.1 port (released for the daemon to bind).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free 127.0.0.1 ports: all are held until all are chosen.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
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
    /// `http://127.0.0.1:<port>`.
    pub http: String,
}

impl Daemon {
    /// Spawns `command`, which serves HTTP on 127.0.0.1:`http_port`, and waits until its
    /// `/healthz` answers 200.
    pub async fn spawn(command: Command, http_port: u16) -> Daemon {
        Self::spawn_logging_to(command, http_port, None).await
    }

    /// [`spawn`](Self::spawn), showing the daemon's log (at `log`) if it never gets healthy.
    pub async fn spawn_logging_to(
        mut command: Command,
        http_port: u16,
        log: Option<&Path>,
    ) -> Daemon {
        // Owned by a Daemon from here on, so a failed start still kills and reaps it.
        let daemon = Daemon {
            child: command.spawn().unwrap(),
            http: format!("http://127.0.0.1:{http_port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let healthy = reqwest::get(format!("{}/healthz", daemon.http))
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return daemon;
            }
            if Instant::now() > deadline {
                let log = log.map(std::fs::read_to_string).transpose().ok().flatten();
                panic!(
                    "membershipd did not become healthy within 60 s; its log:\n{}",
                    log.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    /// Starts the server and waits until it is healthy.
    pub async fn start() -> EmbeddedServer {
        let data = tempfile::tempdir().unwrap();
        let [http_port, nats_port] = free_ports();
        let daemon = Self::serve(data.path(), http_port, nats_port).await;
        EmbeddedServer {
            daemon,
            data,
            http_port,
            nats_port,
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
        Daemon::spawn_logging_to(command, http_port, Some(&data.join("membershipd.log"))).await
    }

    /// Kills the daemon with SIGKILL (its nats-server follows it).
    pub fn kill(&mut self) {
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
    }

    /// Starts the daemon again on the same data and ports, and waits until it is healthy.
    pub async fn restart(&mut self) {
        self.kill();
        self.daemon = Self::serve(self.data.path(), self.http_port, self.nats_port).await;
    }

    /// Runs the admin CLI on the same data directory (`--json`) and returns its output.
    pub fn cli(&self, args: &[&str]) -> Value {
        let output = membershipd_at(self.data.path(), self.http_port, self.nats_port)
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
