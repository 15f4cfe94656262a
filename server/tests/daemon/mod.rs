//! Running the real `membershipd` binary in tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A free 127.0.0.1 port (released for the daemon to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    pub async fn spawn(mut command: Command, http_port: u16) -> Daemon {
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
            assert!(
                Instant::now() < deadline,
                "membershipd did not become healthy"
            );
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
