//! Login storms: N clients connecting at the same moment to a release `membershipd serve`
//! (SQLite, embedded nats-server), each with its own key and full-jitter retries, beside two
//! floors measured in the same run: the same nats-server binary with the same users listed as
//! static nkeys (the floor), and the same binary in operator mode verifying a user JWT per
//! client itself, with no callout (nats-server's own per-user credential, the decentralized
//! route, which unibus does not take). The three storm by turns, for a few rounds (the servers
//! stay up between them), and a last table gives the median time to last of each and unibus's
//! ratio to the floor in each round: a single storm's time moves by up to 2x from one run to
//! the next on this shared machine. Then, with the N clients connected (members of N / 10
//! rooms, each subscribed to its own notices and its room's live copies, as a session watching
//! messages is),
//! membershipd's idle CPU and memory (beside nats-server's, over one period of the revoker's
//! sweep) and how long a revocation takes to cut a session. Last, the same storm, idle CPU and cut on a 3-node cluster (KV R3,
//! the clients spread over the nodes, membershipd connected to one of them), where a cut needs
//! the other nodes' answers.
//!
//! ```text
//! cargo bench -p unibus-server --bench storm
//! UNIBUS_STORM_SIZES=1000,5000 UNIBUS_STORM_CLUSTER_SIZES=5000 UNIBUS_STORM_ROUNDS=5 cargo bench -p unibus-server --bench storm
//! UNIBUS_STORM_REFERENCES=1 cargo bench -p unibus-server --bench storm
//! ```
//!
//! `UNIBUS_STORM_ROUNDS` (3 unless set) is how many rounds each size gets. With
//! `UNIBUS_STORM_REFERENCES` set, each size also gets three reference rows first, one storm
//! each against a fresh server, to show where a login's cost goes: the static nkeys again, each
//! user with the permissions unibus gives; the same in unibus's accounts (an application
//! account importing the events from a service account, beside a system account); and the
//! same again with an auth callout configured that every user bypasses, listed in its
//! `auth_users` (what a static list beside the callout would cost).
//!
//! Each round also storms the three with stock nats.go clients (`natsgo-storm/`, a Go program
//! built with `go build` when the bench starts; skipped with a note when that fails): nats.go
//! gives up a connect on nats-server's first `PING` and after its default 2 s timeout, and each
//! client retries at most 3 times, 200 to 600 ms apart. Their rows give the share admitted and
//! the time to the last, and a last table puts unibus's share beside the two floors'.
//!
//! Each row also counts the kernel's listen-queue overflows during its storm (see
//! [`listen_overflows`]). The clients, membershipd and nats-server share this machine's 2 cores.
//! The hard limit of open files here is 20,000 per process, so 15,000 clients is the most one
//! node takes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use unibus::protocol::messages::live_subject;
use unibus::Identity;
use unibus::{subjects, RoomId};
use unibus_server::auth::setup::AuthSetup;
use unibus_server::serve::{Serving, SERVING_FILE};
use unibus_server::store::{
    now_millis, KvStore, KvStoreConfig, Room, RoomSnapshot, Snapshot, SqliteStore, Store, User,
    UserStatus,
};
use unibus_testkit::storm::{storm, Login, StormReport};
use unibus_testkit::{ClusterOptions, NatsCluster};

/// How long a storm may take before the clients still out count as failed.
const STORM_DEADLINE: Duration = Duration::from_secs(120);
/// How long idle CPU is measured: one period of the revoker's sweep, so that the figure is the
/// average with exactly one sweep in it (a shorter window holds a sweep or not, by chance).
const IDLE_WINDOW: Duration = unibus_server::serve::REVOCATION_SWEEP;
/// How many users are revoked, one after the other, to time the cut.
const REVOCATIONS: usize = 20;

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's resident memory (`VmRSS`), in MiB; 0 when it cannot be read.
fn resident_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The share of one core each process used over `window`.
async fn idle_cpu(pids: &[u32], window: Duration) -> Vec<f64> {
    let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    tokio::time::sleep(window).await;
    pids.iter()
        .zip(before)
        .map(|(p, b)| (cpu_seconds(*p) - b) / window.as_secs_f64() * 100.0)
        .collect()
}

/// Waits until the clients of the last storm have closed their sockets (dropped clients close
/// asynchronously), so the next storm has the file descriptors it needs.
async fn settle_fds() {
    let open = || std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count());
    let deadline = Instant::now() + Duration::from_secs(60);
    while open() > 500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Drops a storm's clients and waits until their sockets are closed, before the caller stops
/// their server. A client whose connection task sees its server go away before it sees the
/// client dropped reconnects forever (async-nats does not look for a dropped client while it
/// reconnects) and keeps its dead socket open: thousands of descriptors the next storm lacks.
async fn close_before_server(report: StormReport) {
    drop(report);
    settle_fds().await;
}

/// How many times so far a listening socket's accept queue was full when a connection
/// completed its handshake (`ListenOverflows` in `/proc/net/netstat`). The kernel then drops the
/// handshake's last step, and the connection waits for a retransmission: 1 s, then 2 s, 4 s...
/// A storm larger than the listen backlog (`net.core.somaxconn`, which nats-server's Go
/// runtime takes as its backlog) overflows it whenever the server accepts more slowly than the
/// clients arrive.
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut tcp_ext = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds used by this process and by `pids` while `work` runs: (this process, each pid).
async fn cpu_during<T>(
    pids: &[u32],
    work: impl std::future::Future<Output = T>,
) -> (T, f64, Vec<f64>) {
    let me = std::process::id();
    let before_me = cpu_seconds(me);
    let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let out = work.await;
    let used: Vec<f64> = pids
        .iter()
        .zip(before)
        .map(|(p, b)| cpu_seconds(*p) - b)
        .collect();
    (out, cpu_seconds(me) - before_me, used)
}

/// How the static-nkey rows list their users.
#[derive(Clone, Copy, PartialEq, Debug)]
enum StaticUsers {
    /// The floor: each user's nkey alone, in nats-server's global account.
    Floor,
    /// Each user also with the permissions unibus gives (protocol §11), logging in with its own
    /// inbox prefix.
    Permissions,
    /// Those permissions, in unibus's accounts: the users in the application account, which
    /// imports the events from the service account, beside a system
    /// account. nats-server publishes an event for every connection to an account of its own,
    /// never for one to the global account.
    Accounts,
    /// As `Accounts`, with an auth callout configured that every user bypasses, listed in its
    /// `auth_users`: the price of a static list beside the callout, which nats-server searches
    /// one entry after the other on every login. No callout answers: none is asked.
    CalloutBypass,
}

/// A lone nats-server's config, and how its clients log in.
struct LoneConfig {
    path: std::path::PathBuf,
    port: u16,
    login: Login,
    name: &'static str,
}

/// The floor: nats-server with the users as static nkeys; or, as a reference beside it, the
/// same with more of unibus's set-up (see [`StaticUsers`]).
fn static_config(ids: &[Arc<Identity>], dir: &Path, users: StaticUsers) -> LoneConfig {
    let port = free_port();
    let user = |id: &Arc<Identity>| {
        let hex = id.sign_public_key().to_hex();
        let nkey = id.nkey_public();
        if users == StaticUsers::Floor {
            return format!("    {{ nkey: {nkey} }}\n");
        }
        format!(
            "    {{ nkey: {nkey}, permissions: {{ \
             publish: {{ allow: [\"unibus.cp.{hex}.>\", \"_INBOX_{hex}.>\"] }}, \
             subscribe: {{ allow: [\"_INBOX_{hex}.>\", \"unibus.events.{hex}.>\"] }} }} }}\n"
        )
    };
    let list: String = ids.iter().map(user).collect();
    let listen = format!("listen: 127.0.0.1:{port}\n");
    let global = || format!("{listen}authorization {{\n  timeout: 2\n  users = [\n{list}  ]\n}}\n");
    let (config, login, name) = match users {
        StaticUsers::Floor => (global(), Login::StaticNkey, "floor: static nkeys"),
        StaticUsers::Permissions => (
            global(),
            Login::Unibus,
            "reference: static nkeys, unibus's permissions",
        ),
        StaticUsers::Accounts | StaticUsers::CalloutBypass => {
            let callout = if users == StaticUsers::CalloutBypass {
                let listed: Vec<String> = ids.iter().map(|id| id.nkey_public()).collect();
                format!(
                    "auth_callout {{ issuer: {}, account: AUTH, auth_users: [ {} ] }}",
                    nkeys::KeyPair::new_account().public_key(),
                    listed.join(", ")
                )
            } else {
                String::new()
            };
            (
                format!(
                    "{listen}authorization {{ timeout: 2\n{callout}\n}}\n\
                     accounts {{\n\
                     AUTH {{ exports: [ {{ stream: \"unibus.events.>\" }} ] }}\n\
                     APP {{\n  imports: [\n\
                     {{ stream: {{ account: AUTH, subject: \"unibus.events.>\" }} }}\n  ]\n\
                     users = [\n{list}  ]\n}}\n\
                     SYS {{ users: [ {{ user: sys, password: bench }} ] }}\n}}\n\
                     system_account: SYS\n"
                ),
                Login::Unibus,
                if users == StaticUsers::CalloutBypass {
                    "reference: static nkeys listed as the callout's auth_users"
                } else {
                    "reference: static nkeys, unibus's permissions and accounts"
                },
            )
        }
    };
    let path = dir.join(format!("{users:?}.conf"));
    std::fs::write(&path, config).unwrap();
    LoneConfig {
        path,
        port,
        login,
        name,
    }
}

/// A nats-server of its own, with nothing else beside it.
struct LoneServer {
    process: Process,
    config: LoneConfig,
}

impl LoneServer {
    async fn start(config: LoneConfig) -> Self {
        let mut process = Process(
            Command::new(unibus_testkit::nats_server_binary().unwrap())
                .arg("-c")
                .arg(&config.path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        while std::net::TcpStream::connect(("127.0.0.1", config.port)).is_err() {
            if let Ok(Some(status)) = process.0.try_wait() {
                panic!(
                    "nats-server would not start with {} ({status})",
                    config.path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { process, config }
    }

    /// A storm against it: its row and its time to last, the clients closed again.
    async fn storm(&self, ids: &[Arc<Identity>]) -> (String, Duration) {
        let url = format!("nats://127.0.0.1:{}", self.config.port);
        let login = self.config.login.clone();
        let overflows = listen_overflows();
        let (report, clients_cpu, used) = cpu_during(
            &[self.process.0.id()],
            storm(&[url], ids, login, STORM_DEADLINE),
        )
        .await;
        let overflows = listen_overflows() - overflows;
        let cpu = format!("clients {clients_cpu:.1} s, nats-server {:.1} s", used[0]);
        let row = row(self.config.name, ids.len(), &report, &cpu, overflows);
        let time_to_last = report.time_to_last();
        close_before_server(report).await;
        (row, time_to_last)
    }
}

/// The stock nats.go storm program, built once (see the module documentation).
struct NatsGo {
    binary: std::path::PathBuf,
}

/// What the nats.go program reports of one storm (see `natsgo-storm/main.go`).
#[derive(serde::Deserialize)]
struct NatsGoReport {
    clients: usize,
    admitted: usize,
    first_try: usize,
    /// Each admitted client's time from the start, sorted.
    latencies_ms: Vec<f64>,
    /// Failed attempts by their error.
    errors: std::collections::BTreeMap<String, usize>,
}

impl NatsGoReport {
    fn admitted_percent(&self) -> f64 {
        self.admitted as f64 * 100.0 / self.clients.max(1) as f64
    }

    fn time_to_last(&self) -> Duration {
        Duration::from_secs_f64(self.latencies_ms.last().copied().unwrap_or(0.0) / 1e3)
    }
}

impl NatsGo {
    /// Builds the program into `dir`, or says why not.
    fn build(dir: &Path) -> Result<Self, String> {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/natsgo-storm");
        let binary = dir.join("natsgo-storm");
        let output = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(".")
            .current_dir(&source)
            .output()
            .map_err(|e| format!("go: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(Self { binary })
    }

    /// A storm of `ids` logging in as `login` to `url`, while `pids` are measured: its row
    /// (`name`'s) and its report.
    async fn storm(
        &self,
        name: &str,
        url: &str,
        ids: &[Arc<Identity>],
        login: &Login,
        pids: &[u32],
        dir: &Path,
    ) -> (String, NatsGoReport) {
        let clients = dir.join("natsgo-clients");
        let lines: String = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let inbox = match login {
                    Login::StaticNkey => "-".to_string(),
                    _ => unibus::subjects::inbox_prefix(&id.sign_public_key()),
                };
                let jwt = match login {
                    Login::UserJwt(jwts) => jwts[i].clone(),
                    _ => "-".to_string(),
                };
                format!("{} {inbox} {jwt}\n", id.nkey_seed().as_str())
            })
            .collect();
        std::fs::write(&clients, lines).unwrap();
        let mut command = Command::new(&self.binary);
        command
            .arg(url)
            .stdin(std::fs::File::open(&clients).unwrap())
            .stderr(Stdio::inherit());
        let overflows = listen_overflows();
        let (output, _, used) = cpu_during(
            pids,
            tokio::task::spawn_blocking(move || command.output().unwrap()),
        )
        .await;
        let overflows = listen_overflows() - overflows;
        let output = output.unwrap();
        assert!(output.status.success(), "natsgo-storm: {output:?}");
        let report: NatsGoReport = serde_json::from_slice(&output.stdout).unwrap();
        let n = report.clients.max(1);
        let quantile = |q: f64| {
            let l = &report.latencies_ms;
            l.get(((l.len().max(1) - 1) as f64 * q).round() as usize)
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.0} ms"))
        };
        let errors: Vec<String> = report
            .errors
            .iter()
            .map(|(error, count)| format!("{count}x {error}"))
            .collect();
        let row = format!(
            "| nats.go, {name} | {} | {:.2}% | {:.2}% | {} | {:.0}/s | {} | {} | {overflows} | servers {} s of CPU; failed attempts: {} |",
            report.clients,
            report.first_try as f64 * 100.0 / n as f64,
            report.admitted_percent(),
            ms(report.time_to_last()),
            report.admitted as f64 / report.time_to_last().as_secs_f64().max(1e-9),
            quantile(0.5),
            quantile(0.99),
            each(&used, 1),
            if errors.is_empty() { "none".to_string() } else { errors.join(", ") },
        );
        (row, report)
    }
}

/// The decentralized route's floor: nats-server in operator mode, verifying user JWTs itself
/// (issued by an account key, with the permissions unibus gives), no callout. Not how unibus
/// logs in today: printed so that the two routes can be compared on the same machine.
fn jwt_config(ids: &[Arc<Identity>], dir: &Path) -> LoneConfig {
    use nkeys::KeyPair;
    use serde_json::{json, Map, Value};
    use unibus_server::auth::jwt;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = |value: Value| -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!("claims are an object")
        };
        map
    };
    let (operator, account, system) = (
        KeyPair::new_operator(),
        KeyPair::new_account(),
        KeyPair::new_account(),
    );
    let account_jwt = |key: &KeyPair, name: &str| {
        let limits = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
            "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
        let nats = json!({"type": "account", "version": 2, "limits": limits});
        jwt::encode(
            claims(json!({"sub": key.public_key(), "name": name, "nats": nats})),
            &operator,
            now,
        )
        .unwrap()
    };
    let operator_jwt = jwt::encode(
        claims(json!({"sub": operator.public_key(), "name": "bench",
            "nats": {"type": "operator", "version": 2, "system_account": system.public_key()}})),
        &operator,
        now,
    )
    .unwrap();
    let jwts: Vec<String> = ids
        .iter()
        .map(|id| {
            let hex = id.sign_public_key().to_hex();
            let nats = json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1,
                "pub": {"allow": [format!("unibus.cp.{hex}.>"), format!("_INBOX_{hex}.>")]},
                "sub": {"allow": [format!("_INBOX_{hex}.>"), format!("unibus.events.{hex}.>")]}});
            jwt::encode(
                claims(json!({"sub": id.nkey_public(), "name": "", "nats": nats})),
                &account,
                now,
            )
            .unwrap()
        })
        .collect();
    let port = free_port();
    let config = dir.join("jwt.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nauthorization {{ timeout: 2 }}\noperator: {operator_jwt}\n\
             system_account: {sys}\nresolver: MEMORY\nresolver_preload: {{\n  {app}: {app_jwt}\n  {sys}: {sys_jwt}\n}}\n",
            sys = system.public_key(),
            app = account.public_key(),
            app_jwt = account_jwt(&account, "APP"),
            sys_jwt = account_jwt(&system, "SYS"),
        ),
    )
    .unwrap();
    LoneConfig {
        path: config,
        port,
        login: Login::UserJwt(jwts.into()),
        name: "reference: user JWTs, no callout",
    }
}

/// Where a storm's membershipd serves.
enum Deployment {
    /// SQLite, and the embedded nats-server membershipd runs itself.
    Embedded,
    /// KV R3 on a 3-node cluster of its own, membershipd connected to the first node.
    Cluster(NatsCluster),
}

impl Deployment {
    /// Sets it up with `ids` as active users, keeping membershipd's files in `data`.
    async fn start(nodes: usize, ids: &[Arc<Identity>], data: &Path) -> Self {
        std::fs::create_dir_all(data).unwrap();
        if nodes == 1 {
            let store = SqliteStore::open(data.join("unibus.db")).await.unwrap();
            store.import_snapshot(&snapshot_of(ids)).await.unwrap();
            return Self::Embedded;
        }
        // The operator's set-up: membershipd's auth keys, and every node's config with them.
        let setup = AuthSetup::load_or_create(&data.join("auth")).unwrap();
        let cluster = NatsCluster::start_with(ClusterOptions {
            nodes,
            extra_config: setup.server_config(),
            probe: false,
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let service = async_nats::ConnectOptions::with_nkey(setup.service.seed().unwrap())
            .connect(cluster.server_addrs())
            .await
            .unwrap();
        let config = KvStoreConfig {
            replicas: nodes,
            ..KvStoreConfig::default()
        };
        let store = KvStore::open(service, config).await.unwrap();
        store.import_snapshot(&snapshot_of(ids)).await.unwrap();
        Self::Cluster(cluster)
    }

    /// A `membershipd` command of this deployment.
    fn membershipd(&self, data: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_membershipd"));
        command
            .env_remove("MEMBERSHIPD_CONFIG")
            .env("MEMBERSHIPD_LOG", "warn")
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg("127.0.0.1:0");
        match self {
            Self::Embedded => command
                .arg("--nats-listen")
                .arg("127.0.0.1:0")
                .arg("--nats-server")
                .arg(unibus_testkit::nats_server_binary().unwrap()),
            Self::Cluster(cluster) => command
                .arg("--nats-url")
                .arg(cluster.client_url(0))
                .args(["--store", "kv", "--replicas"])
                .arg(cluster.len().to_string()),
        };
        command
    }

    /// The nats-server processes: the embedded one (`membershipd`'s child), or the nodes.
    fn nats_pids(&self, membershipd: u32) -> Vec<u32> {
        match self {
            Self::Embedded => child_of(membershipd).into_iter().collect(),
            Self::Cluster(cluster) => (0..cluster.len()).filter_map(|i| cluster.pid(i)).collect(),
        }
    }
}

/// nats-server's pid: membershipd's child.
fn child_of(pid: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children.split_whitespace().next()?.parse().ok()
}

/// membershipd's share of a login alone: `Callout::respond` on authorization requests like
/// nats-server's, on both cores, from a warm cache; beside its floor, the raw ed25519 work each
/// answer needs (one verification, the nonce's; two signatures, the user JWT and the response).
/// Returns (logins/s, floor logins/s).
async fn callout_alone(ids: &[Arc<Identity>], dir: &Path) -> (f64, f64) {
    use base64::Engine;
    use nkeys::KeyPair;
    use unibus_server::auth::callout::Callout;
    use unibus_server::auth::jwt;
    use unibus_server::store::CachedStore;

    let store = SqliteStore::open(dir.join("callout.db")).await.unwrap();
    store.import_snapshot(&snapshot_of(ids)).await.unwrap();
    let cache = CachedStore::new(Arc::new(store));
    cache.warm(Duration::from_secs(10)).await.unwrap();
    let server = KeyPair::new_server();
    let callout = Arc::new(Callout::new(cache, KeyPair::new_account(), "APP"));
    let requests: Vec<String> = ids
        .iter()
        .map(|id| {
            let nonce = format!("nonce-{}", id.sign_public_key().to_hex());
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(id.sign(nonce.as_bytes()).to_bytes());
            let claims = serde_json::json!({
                "sub": server.public_key(),
                "aud": "nats-authorization-request",
                "nats": {
                    "user_nkey": id.nkey_public(),
                    "server_id": { "id": server.public_key() },
                    "connect_opts": { "nkey": id.nkey_public(), "sig": sig },
                    "client_info": { "nonce": nonce },
                    "type": "authorization_request",
                    "version": 2,
                },
            });
            let serde_json::Value::Object(claims) = claims else {
                unreachable!("an object literal")
            };
            jwt::encode(claims, &server, now_millis() / 1000).unwrap()
        })
        .collect();
    let requests = Arc::new(requests);
    let started = Instant::now();
    let halves: Vec<_> = (0..2)
        .map(|half| {
            let (callout, requests) = (Arc::clone(&callout), Arc::clone(&requests));
            tokio::spawn(async move {
                for request in requests.iter().skip(half).step_by(2) {
                    let answer = callout.respond(request).await.unwrap();
                    assert!(answer.len() > 400, "an admission carries a user JWT");
                }
            })
        })
        .collect();
    for half in halves {
        half.await.unwrap();
    }
    let rate = requests.len() as f64 / started.elapsed().as_secs_f64();

    let key = KeyPair::new_account();
    let message = requests[0].as_bytes();
    let signature = key.sign(message).unwrap();
    let rounds = 2_000;
    let started = Instant::now();
    let floors: Vec<_> = (0..2)
        .map(|_| {
            let (key, message, signature) = (
                KeyPair::from_public_key(&key.public_key()).unwrap(),
                message.to_vec(),
                signature.clone(),
            );
            let signer = KeyPair::new_account();
            tokio::task::spawn_blocking(move || {
                for _ in 0..rounds / 2 {
                    key.verify(&message, &signature).unwrap();
                    signer.sign(&message).unwrap();
                    signer.sign(&message).unwrap();
                }
            })
        })
        .collect();
    for floor in floors {
        floor.await.unwrap();
    }
    let floor = rounds as f64 / started.elapsed().as_secs_f64();
    (rate, floor)
}

/// Members per room in the snapshot the storms log in to: N users are in N / 10 rooms.
const MEMBERS_PER_ROOM: usize = 10;

/// Every identity as an active user, and in rooms of [`MEMBERS_PER_ROOM`] (the first of each
/// ten its owner), as a deployment at rest holds them.
fn snapshot_of(ids: &[Arc<Identity>]) -> Snapshot {
    let rooms = ids
        .chunks(MEMBERS_PER_ROOM)
        .enumerate()
        .map(|(i, members)| RoomSnapshot {
            room: Room {
                id: RoomId::new(&format!("room-{i}")).unwrap(),
                owner: members[0].sign_public_key(),
                epoch: 0,
                created_at: now_millis(),
            },
            members: members.iter().map(|id| id.sign_public_key()).collect(),
            manifests: Vec::new(),
            history: Vec::new(),
        })
        .collect();
    let users = ids
        .iter()
        .map(|id| User {
            sign_key: id.sign_public_key(),
            kex_key: id.kex_public_key(),
            admin: false,
            status: UserStatus::Active,
            created_at: now_millis(),
            invite_id: None,
        })
        .collect();
    let mut snapshot = Snapshot {
        users,
        rooms,
        ..Snapshot::default()
    };
    snapshot.normalize();
    snapshot
}

/// What one deployment measured with N clients connected.
struct Unibus {
    nodes: usize,
    /// Idle CPU: membershipd's, then each nats-server's.
    idle: Vec<f64>,
    /// Resident memory in MiB, at the end of the idle window: membershipd's, then each
    /// nats-server's.
    resident: Vec<f64>,
    /// Whether every client held its subscription to its own notices while idle.
    subscribed: bool,
    /// From the start of `membershipd user revoke` to the session's end.
    cuts: Vec<Duration>,
    /// From the start of `membershipd user revoke` to its return.
    returns: Vec<Duration>,
    /// How many of the revoked sessions each node held.
    cut_nodes: std::collections::BTreeMap<String, usize>,
}

/// membershipd serving a deployment, started once for a size's rounds.
struct UnibusNode {
    /// membershipd, stopped before the deployment's cluster (see `rest_and_cuts`).
    server: Process,
    nodes: usize,
    data: std::path::PathBuf,
    deployment: Deployment,
    /// membershipd's, then each nats-server's.
    pids: Vec<u32>,
    urls: Vec<String>,
}

impl UnibusNode {
    async fn start(ids: &[Arc<Identity>], dir: &Path, nodes: usize) -> Self {
        let data = dir.join(format!("membershipd-{nodes}"));
        let deployment = Deployment::start(nodes, ids, &data).await;
        let log = std::fs::File::create(dir.join(format!("membershipd-{nodes}.log"))).unwrap();
        let server = Process(
            deployment
                .membershipd(&data)
                .arg("serve")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let serving: Serving = loop {
            if let Ok(text) = std::fs::read(data.join(SERVING_FILE)) {
                if let Ok(serving) = serde_json::from_slice(&text) {
                    break serving;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let pids: Vec<u32> = std::iter::once(server.0.id())
            .chain(deployment.nats_pids(server.0.id()))
            .collect();
        let urls = match &deployment {
            Deployment::Embedded => serving.nats_urls.clone(),
            // Clients spread over every node.
            Deployment::Cluster(cluster) => cluster.client_urls(),
        };
        Self {
            nodes,
            data,
            deployment,
            server,
            pids,
            urls,
        }
    }

    /// A storm against it: its row, and the report with the clients still connected.
    async fn storm(&self, ids: &[Arc<Identity>]) -> (String, StormReport) {
        let overflows = listen_overflows();
        let (storm, clients_cpu, used) = cpu_during(
            &self.pids,
            storm(&self.urls, ids, Login::Unibus, STORM_DEADLINE),
        )
        .await;
        let overflows = listen_overflows() - overflows;
        let cpu = format!(
            "clients {clients_cpu:.1} s, membershipd {:.1} s, nats-server {} s",
            used.first().copied().unwrap_or(0.0),
            each(used.get(1..).unwrap_or_default(), 1)
        );
        let name = match self.nodes {
            1 => "unibus: callout".to_string(),
            nodes => format!("unibus: callout, {nodes} nodes, KV R{nodes}"),
        };
        (row(&name, ids.len(), &storm, &cpu, overflows), storm)
    }

    /// With `storm`'s clients connected: the idle CPU, then the revocation cut of the first
    /// [`REVOCATIONS`] of them.
    async fn rest_and_cuts(self, ids: &[Arc<Identity>], storm: StormReport) -> Unibus {
        // Every client subscribes to its own notices and to its room's live copies, as a
        // session watching messages does (its login was granted the room), when the clients
        // are in the order of `ids` (all of them got in).
        let mut subscriptions = Vec::new();
        let subscribed = storm.failed == 0;
        if subscribed {
            for (i, (id, client)) in ids.iter().zip(&storm.clients).enumerate() {
                let room = RoomId::new(&format!("room-{}", i / MEMBERS_PER_ROOM)).unwrap();
                for subject in [
                    subjects::events(&id.sign_public_key()) + ".>",
                    live_subject(&room),
                ] {
                    match client.subscribe(subject).await {
                        Ok(subscription) => subscriptions.push(subscription),
                        Err(e) => eprintln!("a client could not subscribe: {e}"),
                    }
                }
            }
            for client in &storm.clients {
                let _ = client.flush().await;
            }
        }
        // Let the storm's aftermath settle, then measure rest.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = idle_cpu(&self.pids, IDLE_WINDOW).await;
        let resident = self.pids.iter().map(|pid| resident_mib(*pid)).collect();
        let subscribed = subscribed && subscriptions.len() == 2 * ids.len();
        drop(subscriptions);

        let (mut cuts, mut returns) = (Vec::new(), Vec::new());
        let mut cut_nodes = std::collections::BTreeMap::new();
        for (id, client) in ids.iter().zip(&storm.clients).take(REVOCATIONS) {
            *cut_nodes
                .entry(client.server_info().server_name)
                .or_insert(0) += 1;
            let started = Instant::now();
            let mut command = match self
                .deployment
                .membershipd(&self.data)
                .arg("user")
                .arg("revoke")
                .arg(id.sign_public_key().to_hex())
                .stdout(Stdio::null())
                .spawn()
            {
                Ok(command) => command,
                // With the clients' sockets this process may be out of file descriptors.
                Err(e) => {
                    eprintln!("revocation cut at {} not measured: {e}", ids.len());
                    break;
                }
            };
            // The command returns 1.05 s after the store took the revocation (in force on every
            // instance by then); the session usually ends before that. Both are timed from the
            // command's start.
            let (mut cut, mut returned) = (None, None);
            while (cut.is_none() || returned.is_none())
                && started.elapsed() < Duration::from_secs(60)
            {
                if cut.is_none()
                    && client.connection_state() != async_nats::connection::State::Connected
                {
                    cut = Some(started.elapsed());
                }
                if returned.is_none() {
                    if let Some(status) = command.try_wait().unwrap() {
                        assert!(status.success(), "revoke: {status}");
                        returned = Some(started.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            cuts.push(cut.unwrap_or_else(|| started.elapsed()));
            returns.extend(returned);
        }
        close_before_server(storm).await;
        // membershipd stops first; the cluster (in `self.deployment`) after it.
        drop(self.server);
        Unibus {
            nodes: self.nodes,
            idle,
            resident,
            subscribed,
            cuts,
            returns,
            cut_nodes,
        }
    }
}

/// Figures joined with ` + `, e.g. one per node.
fn each(figures: &[f64], decimals: usize) -> String {
    let each: Vec<String> = figures.iter().map(|f| format!("{f:.decimals$}")).collect();
    each.join(" + ")
}

fn row(name: &str, n: usize, report: &StormReport, cpu: &str, overflows: u64) -> String {
    format!(
        "| {name} | {n} | {:.2}% | {:.2}% | {} | {:.0}/s | {} | {} | {overflows} | {cpu} |",
        report.first_try as f64 * 100.0 / n as f64,
        report.clients.len() as f64 * 100.0 / n as f64,
        ms(report.time_to_last()),
        report.clients.len() as f64 / report.time_to_last().as_secs_f64().max(1e-9),
        ms(report.quantile(0.5)),
        ms(report.quantile(0.99)),
    )
}

/// Sizes from the environment variable `name`, comma-separated, or `default`.
fn sizes(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn identities(n: usize) -> Vec<Arc<Identity>> {
    (0..n)
        .map(|_| Arc::new(Identity::generate().unwrap()))
        .collect()
}

/// The median of `values` (not empty): the middle one, or the mean of the two middle ones.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds: usize = std::env::var("UNIBUS_STORM_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!("| login | N at once | first try | connected | time to last | logins/s | p50 | p99 | accept queue overflows | CPU during the storm |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut rest = Vec::new();
    let mut alone = Vec::new();
    let mut ratios = Vec::new();
    let mut natsgo_shares = Vec::new();
    let natsgo_dir = tempfile::tempdir().unwrap();
    let natsgo = NatsGo::build(natsgo_dir.path());
    if let Err(why) = &natsgo {
        eprintln!("no nats.go rows: natsgo-storm did not build: {why}");
    }
    for n in sizes("UNIBUS_STORM_SIZES", "1000,5000,10000,15000") {
        let ids = identities(n);
        let dir = tempfile::tempdir().unwrap();
        if alone.is_empty() {
            alone.push(callout_alone(&ids, dir.path()).await);
        }
        if std::env::var_os("UNIBUS_STORM_REFERENCES").is_some() {
            for users in [
                StaticUsers::Permissions,
                StaticUsers::Accounts,
                StaticUsers::CalloutBypass,
            ] {
                let config = static_config(&ids, dir.path(), users);
                println!("{}", LoneServer::start(config).await.storm(&ids).await.0);
            }
        }
        // The floor, nats-server's own JWT login and unibus by turns, so that each round's
        // storms see the machine alike.
        let floor = LoneServer::start(static_config(&ids, dir.path(), StaticUsers::Floor)).await;
        let jwt = LoneServer::start(jwt_config(&ids, dir.path())).await;
        let unibus = UnibusNode::start(&ids, dir.path(), 1).await;
        let mut times: [Vec<f64>; 3] = Default::default();
        let mut admitted: [Vec<(f64, Duration)>; 3] = Default::default();
        for round in 1..=rounds {
            if let Ok(natsgo) = &natsgo {
                let [floor_admitted, jwt_admitted, _] = &mut admitted;
                for (server, admitted) in [(&floor, floor_admitted), (&jwt, jwt_admitted)] {
                    let config = &server.config;
                    let url = format!("nats://127.0.0.1:{}", config.port);
                    let pids = [server.process.0.id()];
                    let (row, report) = natsgo
                        .storm(config.name, &url, &ids, &config.login, &pids, dir.path())
                        .await;
                    println!("{row}");
                    admitted.push((report.admitted_percent(), report.time_to_last()));
                }
                let (row, report) = natsgo
                    .storm(
                        "unibus: callout",
                        &unibus.urls[0],
                        &ids,
                        &Login::Unibus,
                        &unibus.pids,
                        dir.path(),
                    )
                    .await;
                println!("{row}");
                admitted[2].push((report.admitted_percent(), report.time_to_last()));
                settle_fds().await;
            }
            let [floors, jwts, ours] = &mut times;
            for (server, times) in [(&floor, floors), (&jwt, jwts)] {
                let (row, time_to_last) = server.storm(&ids).await;
                println!("{row}");
                times.push(time_to_last.as_secs_f64());
            }
            let (row, storm) = unibus.storm(&ids).await;
            println!("{row}");
            ours.push(storm.time_to_last().as_secs_f64());
            if round == rounds {
                drop((floor, jwt));
                rest.push((n, unibus.rest_and_cuts(&ids, storm).await));
                break;
            }
            close_before_server(storm).await;
        }
        ratios.push((n, times));
        natsgo_shares.push((n, admitted));
    }
    for n in sizes("UNIBUS_STORM_CLUSTER_SIZES", "10000") {
        let ids = identities(n);
        let dir = tempfile::tempdir().unwrap();
        let unibus = UnibusNode::start(&ids, dir.path(), 3).await;
        let (row, storm) = unibus.storm(&ids).await;
        println!("{row}");
        rest.push((n, unibus.rest_and_cuts(&ids, storm).await));
    }
    println!();
    println!("| N at once | floor: time to last, median of {rounds} | user JWTs: median | unibus: median | unibus / floor | unibus / user JWTs | unibus / floor in each round |");
    println!("|---|---|---|---|---|---|---|");
    for (n, [floors, jwts, ours]) in ratios {
        let each_round: Vec<String> = ours
            .iter()
            .zip(&floors)
            .map(|(u, f)| format!("{:.2}x", u / f))
            .collect();
        let (floor, jwt, ours) = (median(floors), median(jwts), median(ours));
        let time = |seconds: f64| ms(Duration::from_secs_f64(seconds));
        println!(
            "| {n} | {} | {} | {} | {:.2}x | {:.2}x | {} |",
            time(floor),
            time(jwt),
            time(ours),
            ours / floor,
            ours / jwt,
            each_round.join(", "),
        );
    }
    if natsgo.is_ok() {
        println!();
        println!("| N at once, stock nats.go (3 retries, 200-600 ms apart) | floor: admitted, time to last (each round) | user JWTs | unibus |");
        println!("|---|---|---|---|");
        for (n, shares) in natsgo_shares {
            let column = |rounds: &[(f64, Duration)]| {
                let each: Vec<String> = rounds
                    .iter()
                    .map(|(share, last)| format!("{share:.2}% in {}", ms(*last)))
                    .collect();
                each.join(", ")
            };
            println!(
                "| {n} | {} | {} | {} |",
                column(&shares[0]),
                column(&shares[1]),
                column(&shares[2]),
            );
        }
    }
    println!();
    for (rate, floor) in alone {
        println!(
            "membershipd's share of a login alone (Callout::respond, warm cache, 2 cores): {rate:.0} logins/s; \
             floor, its raw ed25519 work (1 verification + 2 signatures): {floor:.0}/s"
        );
    }
    println!();
    println!("At rest: N clients connected, in N / {MEMBERS_PER_ROOM} rooms of {MEMBERS_PER_ROOM}, each subscribed to its own notices and its room's live copies (as a session watching messages is), idle for {} s; then the revocation of {REVOCATIONS} of them, timed from the start of `membershipd user revoke` to the end of the session, and to the command's return (1.05 s after the store took the revocation: in force on every instance by then).", IDLE_WINDOW.as_secs());
    println!("| N connected | rooms | nodes | subscribed | membershipd idle CPU | membershipd memory | nats-server idle CPU (each node) | nats-server memory (each node) | revoked sessions per node | revocation cut p50 | p99 (of {REVOCATIONS}) | command returned, p50 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, mut unibus) in rest {
        unibus.cuts.sort();
        unibus.returns.sort();
        let pct = |times: &[Duration], p: f64| {
            times
                .get(((times.len().max(1) - 1) as f64 * p).round() as usize)
                .map_or_else(|| "not measured".to_string(), |cut| ms(*cut))
        };
        let per_node: Vec<String> = unibus
            .cut_nodes
            .iter()
            .map(|(node, count)| format!("{node}: {count}"))
            .collect();
        println!(
            "| {n} | {} | {} | {} | {:.1}% of a core | {:.0} MiB | {}% of a core | {} MiB | {} | {} | {} | {} |",
            n.div_ceil(MEMBERS_PER_ROOM),
            unibus.nodes,
            if unibus.subscribed { "yes" } else { "no (not every client got in)" },
            unibus.idle.first().copied().unwrap_or(0.0),
            unibus.resident.first().copied().unwrap_or(0.0),
            each(unibus.idle.get(1..).unwrap_or_default(), 1),
            each(unibus.resident.get(1..).unwrap_or_default(), 0),
            per_node.join(", "),
            pct(&unibus.cuts, 0.5),
            pct(&unibus.cuts, 0.99),
            pct(&unibus.returns, 0.5),
        );
    }
}
