//! # unibus-testkit
//!
//! A real nats-server JetStream cluster of 1 or 3 processes on free 127.0.0.1 ports, each node
//! with its own config file and store directory in a temp dir. Integration tests, binding tests,
//! the demo and the benchmarks all use it. Nodes can be killed (SIGKILL) and restarted on the
//! same ports and store, and everything is stopped and deleted on drop, also when a test panics.
//!
//! The binary is `$NATS_SERVER` if set, else `.tools/bin/nats-server` at the repository root
//! (installed by `scripts/install-nats-server.sh`), else `nats-server` on the `PATH`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), unibus_testkit::ClusterError> {
//! let cluster = unibus_testkit::NatsCluster::start(3).await?;
//! let client = async_nats::connect(cluster.server_addrs()).await.unwrap();
//! # Ok(()) }
//! ```

pub mod liar;
pub mod storm;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`NatsCluster::start`] and [`NatsCluster::restart`] wait for readiness.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable nats-server binary.
    #[error("nats-server not found at {0}; run scripts/install-nats-server.sh or set NATS_SERVER")]
    BinaryNotFound(PathBuf),
    /// Starting a process or writing its files failed.
    #[error("starting nats-server: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster did not become ready in time; the message has the tail of the node logs.
    #[error("cluster not ready after {timeout:?}: {detail}")]
    NotReady {
        /// How long was waited.
        timeout: Duration,
        /// What was last seen, with log tails.
        detail: String,
    },
}

/// Options for [`NatsCluster::start_with`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes: 1, or 3 for a JetStream cluster with quorum 2.
    pub nodes: usize,
    /// Extra configuration appended to every node's config file (e.g. an `authorization`
    /// block). The readiness probe connects without credentials, so such blocks must leave an
    /// anonymous or `no_auth_user` path open, or set [`ClusterOptions::probe`] to false.
    pub extra_config: String,
    /// Whether readiness includes a JetStream round trip from a client.
    pub probe: bool,
    /// Whether [`NatsCluster::start_with`] waits for readiness at all. A cold-start test turns
    /// this off and lets the code under test find its own way.
    pub wait_ready: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 1,
            extra_config: String::new(),
            probe: true,
            wait_ready: true,
        }
    }
}

struct Node {
    name: String,
    client_port: u16,
    http_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A running cluster. See the [crate documentation](crate).
pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    options: ClusterOptions,
    // Held for its Drop, which deletes the node directories after the processes are killed.
    _dir: tempfile::TempDir,
}

/// The nats-server binary this kit uses: `$NATS_SERVER`, `.tools/bin/nats-server`, or `PATH`.
pub fn nats_server_binary() -> Result<PathBuf, ClusterError> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ClusterError::BinaryNotFound(path))
        };
    }
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/nats-server");
    if installed.is_file() {
        return Ok(installed);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nats-server"))
                .find(|p| p.is_file())
        })
        .ok_or(ClusterError::BinaryNotFound(installed))
}

/// Hands out free 127.0.0.1 ports, distinct from each other: every listener stays bound until
/// the whole set is chosen, so the OS cannot give the same port twice.
#[derive(Default)]
struct PortPicker(Vec<TcpListener>);

impl PortPicker {
    fn next(&mut self) -> std::io::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        self.0.push(listener);
        Ok(port)
    }
}

impl NatsCluster {
    /// Starts `nodes` nodes (1 or 3) with JetStream and waits until they serve.
    pub async fn start(nodes: usize) -> Result<Self, ClusterError> {
        Self::start_with(ClusterOptions {
            nodes,
            ..ClusterOptions::default()
        })
        .await
    }

    /// Starts a cluster with `options`.
    pub async fn start_with(options: ClusterOptions) -> Result<Self, ClusterError> {
        assert!(options.nodes >= 1, "a cluster needs at least one node");
        let binary = nats_server_binary()?;
        let dir = tempfile::Builder::new().prefix("unibus-nats-").tempdir()?;
        let mut nodes = Vec::with_capacity(options.nodes);
        let mut cluster_ports = Vec::with_capacity(options.nodes);
        let mut ports = PortPicker::default();
        for i in 0..options.nodes {
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(node_dir.join("jetstream"))?;
            nodes.push(Node {
                name: format!("n{i}"),
                client_port: ports.next()?,
                http_port: ports.next()?,
                dir: node_dir,
                child: None,
            });
            cluster_ports.push(ports.next()?);
        }
        for (i, node) in nodes.iter().enumerate() {
            let mut config = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 256MB\n  max_file_store: 2GB\n}}\n",
                name = node.name,
                client = node.client_port,
                http = node.http_port,
                store = node.dir.join("jetstream").display(),
            );
            if options.nodes > 1 {
                let routes: Vec<String> = cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
                    .collect();
                let _ = write!(
                    config,
                    "cluster {{\n  name: unibus-test\n  listen: 127.0.0.1:{port}\n  no_advertise: true\n  pool_size: -1\n  routes: [{routes}]\n}}\n",
                    port = cluster_ports[i],
                    routes = routes.join(", "),
                );
            }
            config.push_str(&options.extra_config);
            std::fs::write(node.dir.join("nats.conf"), config)?;
        }
        // Release the ports just before the nodes bind them.
        drop(ports);
        let mut cluster = Self {
            binary,
            nodes,
            options,
            _dir: dir,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        if cluster.options.wait_ready {
            cluster.wait_ready(READY_TIMEOUT).await?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("nats.log"))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(node.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        Ok(())
    }

    /// Number of nodes, running or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of the node with this server name (`n0`, `n1`, ...), as JetStream reports
    /// leaders.
    pub fn node_index(&self, server_name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == server_name)
    }

    /// The client URL of node `i`, e.g. `nats://127.0.0.1:40123`.
    pub fn client_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The client URLs of all nodes, running or not (clients skip the ones that are down).
    pub fn client_urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.client_url(i)).collect()
    }

    /// The client addresses of all nodes, in the form `async_nats::connect` takes.
    pub fn server_addrs(&self) -> Vec<async_nats::ServerAddr> {
        self.client_urls()
            .iter()
            .map(|url| {
                url.parse()
                    .expect("nats://127.0.0.1:port is a valid server address")
            })
            .collect()
    }

    /// Node `i`'s config file, e.g. to edit it and [`reload`](Self::reload).
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("nats.conf")
    }

    /// Node `i`'s process id, if it was started and not killed through this handle (for
    /// example to read its CPU use from `/proc`).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Whether node `i`'s process is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills node `i` with SIGKILL and waits for it to exit. Its store directory stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts node `i` on the same ports and store, and waits until the cluster is ready.
    pub async fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(READY_TIMEOUT).await
    }

    /// Sends SIGHUP-style reload to node `i` (`nats-server --signal reload=PID`), to apply an
    /// edited config file.
    pub fn reload(&mut self, i: usize) -> Result<(), ClusterError> {
        let pid = self
            .pid(i)
            .ok_or_else(|| std::io::Error::other(format!("node {i} is not running")))?;
        let status = Command::new(&self.binary)
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("reload of node {i} failed: {status}")).into())
        }
    }

    /// The last `lines` lines of node `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].dir.join("nats.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until every running node reports healthy (JetStream current with its meta leader)
    /// and, if probing, a client completes a JetStream request.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.check_ready().await {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                let logs: Vec<String> = (0..self.nodes.len())
                    .map(|i| format!("--- {} log:\n{}", self.nodes[i].name, self.log_tail(i, 15)))
                    .collect();
                return Err(ClusterError::NotReady {
                    timeout,
                    detail: format!("{last}\n{}", logs.join("\n")),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn check_ready(&self) -> Result<(), String> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect();
        for &i in &running {
            let port = self.nodes[i].http_port;
            let body = tokio::task::spawn_blocking(move || http_get(port, "/healthz"))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{}: /healthz: {e}", self.nodes[i].name))?;
            if !body.contains("\"ok\"") {
                return Err(format!("{}: /healthz says {body}", self.nodes[i].name));
            }
        }
        if !self.options.probe {
            return Ok(());
        }
        let addrs: Vec<async_nats::ServerAddr> = running
            .iter()
            .map(|i| self.client_url(*i).parse().expect("a valid server address"))
            .collect();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(1))
            .connect(addrs)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let js = async_nats::jetstream::new(client);
        tokio::time::timeout(Duration::from_secs(2), js.query_account())
            .await
            .map_err(|_| "JetStream account info timed out".to_string())?
            .map_err(|e| format!("JetStream account info: {e}"))?;
        Ok(())
    }
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(response))
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
