//! The `membershipd` command line: `serve`, and admin commands for users, invites, rooms,
//! backups and migration. Human output by default, `--json` for scripts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use crate::admin::{AdminOperation, OperationError};
use crate::auth::setup::AuthSetup;
use crate::config::{Config, Settings, StoreKind};
use crate::error::ServerError;
use crate::store::migrate::{backup_sqlite, migrate_sqlite_to_kv};
use crate::store::{now_millis, KvStore, KvStoreConfig, SqliteStore, Store};

/// `membershipd`: the unibus reference server.
#[derive(Debug, Parser)]
#[command(name = "membershipd", version, about, long_about = None)]
pub struct Cli {
    /// A TOML file with settings (keys as the long flags, e.g. `listen = "0.0.0.0:8080"`).
    #[arg(long, env = "MEMBERSHIPD_CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: the embedded nats-server (unless --nats-url), cluster login by key,
    /// the control-plane service, and the HTTP API (registration, signed admin API, health).
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage invites.
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Manage rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Copy the SQLite control plane into JetStream KV at --nats-url (after a backup).
    MigrateToKv {
        /// Skip the `VACUUM INTO` backup taken first.
        #[arg(long)]
        no_backup: bool,
    },
    /// Write a consistent copy of the SQLite database.
    Backup {
        /// Where [default: DATA_DIR/backup-UNIX_MS.db].
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

/// `user` commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user by their public keys.
    Add {
        /// ed25519 public key, 64 hex.
        #[arg(long)]
        sign_key: String,
        /// x25519 public key, 64 hex.
        #[arg(long)]
        kex_key: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Revoke a user: they can no longer log in; the record stays.
    Revoke {
        /// ed25519 public key, 64 hex.
        key: String,
    },
    /// Delete a user for good: the record goes and the key is retired. A deleted key can never
    /// register, be added or log in again, by any invite (its own included), so its old room
    /// memberships and admin flag never come back; the person needs a new identity and a new
    /// invite, and starts with no rooms.
    Delete {
        /// ed25519 public key, 64 hex.
        key: String,
    },
}

/// `invite` commands.
#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Create an invite and print its link (shown once) and a QR code.
    Create {
        /// The user it creates is an admin.
        #[arg(long)]
        admin: bool,
        /// Hours until it expires, 1 to 8760.
        #[arg(long, default_value_t = crate::admin::DEFAULT_TTL_HOURS,
              value_parser = clap::value_parser!(u64).range(crate::admin::TTL_HOURS))]
        ttl_hours: u64,
        /// Do not print the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// List invites with their status.
    List,
    /// Cancel a pending invite.
    Cancel {
        /// The invite id (from `invite list`).
        id: String,
    },
}

/// `room` commands.
#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room.
    Create {
        /// Room id: 1 to 128 of A-Z a-z 0-9 _ -.
        id: String,
        /// The owner's ed25519 public key.
        #[arg(long)]
        owner: String,
    },
    /// Add a member.
    AddMember {
        /// Room id.
        id: String,
        /// The member's ed25519 public key.
        member: String,
    },
    /// Remove a member.
    RemoveMember {
        /// Room id.
        id: String,
        /// The member's ed25519 public key.
        member: String,
    },
    /// List rooms.
    List,
}

/// Parses the command line, runs the command, and reports errors on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr, filtered by MEMBERSHIPD_LOG (e.g. `debug`, `unibus_server=trace`);
    // `info` by default. Nothing logged ever holds an invite token, a request body or a secret.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MEMBERSHIPD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(json, &format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(json, &error.to_string()),
    }
}

fn fail(json: bool, message: &str) -> ExitCode {
    if json {
        println!("{}", json!({ "error": message }));
    } else {
        eprintln!("membershipd: {message}");
    }
    ExitCode::FAILURE
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), ServerError> {
    let file = match &cli.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let config = Config::resolve(cli.settings.or(file))?;
    let out = Output { json: cli.json };
    match cli.command {
        Command::Serve => {
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            crate::serve::run(&config, open_store(&config), shutdown).await
        }
        command @ (Command::User(_) | Command::Invite(_) | Command::Room(_)) => {
            let qr = matches!(
                command,
                Command::Invite(InviteCommand::Create { no_qr: false, .. })
            );
            let operation = operation(command)?;
            let needs_url = matches!(operation, AdminOperation::InviteCreate { .. });
            if needs_url && config.public_url.is_none() && config.listen.port() == 0 {
                return Err(ServerError::NoPublicUrl);
            }
            let store = open_store(&config).await?;
            let public_url = config.public_url(config.listen);
            let value = crate::admin::run(operation.clone(), &*store, &public_url, None).await?;
            out.print(human(&operation, &value, qr && !out.json), value);
            Ok(())
        }
        Command::MigrateToKv { no_backup } => migrate(&out, &config, no_backup).await,
        Command::Backup { out: dest } => {
            let sqlite = open_sqlite(&config).await?;
            let dest =
                dest.unwrap_or_else(|| config.data_dir.join(format!("backup-{}.db", now_millis())));
            backup_sqlite(&sqlite, &dest).await?;
            out.print(
                format!("backup written to {}", dest.display()),
                json!({ "backup": dest }),
            );
            Ok(())
        }
    }
}

struct Output {
    json: bool,
}

impl Output {
    fn print(&self, human: impl std::fmt::Display, value: Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{human}");
        }
    }
}

async fn open_sqlite(config: &Config) -> Result<SqliteStore, ServerError> {
    if let Some(parent) = config.db.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| ServerError::file("cannot create", parent, e))?;
    }
    Ok(SqliteStore::open(&config.db).await?)
}

async fn open_kv(config: &Config, replicas: usize) -> Result<KvStore, ServerError> {
    let url = config.nats_url.as_deref().ok_or(ServerError::NoNatsUrl)?;
    // With cluster login by key set up, membershipd connects as its service user, whose
    // account holds the KV buckets; a cluster without it is joined anonymously.
    let auth_dir = config.data_dir.join("auth");
    let keys_error = |source: Box<dyn std::error::Error + Send + Sync>| ServerError::AuthKeys {
        path: auth_dir.clone(),
        source,
    };
    let options = match AuthSetup::load(&auth_dir).map_err(|e| keys_error(e.into()))? {
        Some(setup) => async_nats::ConnectOptions::with_nkey(
            setup.service.seed().map_err(|e| keys_error(e.into()))?,
        ),
        None => async_nats::ConnectOptions::new(),
    };
    let client = options
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|source| ServerError::Nats {
            url: url.to_string(),
            source,
        })?;
    KvStore::open(
        client,
        KvStoreConfig {
            replicas,
            ..KvStoreConfig::default()
        },
    )
    .await
    .map_err(ServerError::from)
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServerError> {
    Ok(match config.store {
        StoreKind::Sqlite => Arc::new(open_sqlite(config).await?),
        StoreKind::Kv => Arc::new(open_kv(config, config.replicas).await?),
    })
}

/// The admin operation a `user`, `invite` or `room` command stands for.
fn operation(command: Command) -> Result<AdminOperation, OperationError> {
    use crate::admin::{kex_key, room_id, sign_key};
    Ok(match command {
        Command::User(UserCommand::Add {
            sign_key: sign,
            kex_key: kex,
            admin,
        }) => AdminOperation::UserAdd {
            sign_key: sign_key(&sign)?,
            kex_key: kex_key(&kex)?,
            admin,
        },
        Command::User(UserCommand::List) => AdminOperation::UserList,
        Command::User(UserCommand::Revoke { key }) => AdminOperation::UserRevoke(sign_key(&key)?),
        Command::User(UserCommand::Delete { key }) => AdminOperation::UserDelete(sign_key(&key)?),
        Command::Invite(InviteCommand::Create {
            admin, ttl_hours, ..
        }) => AdminOperation::InviteCreate { admin, ttl_hours },
        Command::Invite(InviteCommand::List) => AdminOperation::InviteList,
        Command::Invite(InviteCommand::Cancel { id }) => AdminOperation::InviteCancel(id),
        Command::Room(RoomCommand::Create { id, owner }) => AdminOperation::RoomCreate {
            room: room_id(&id)?,
            owner: sign_key(&owner)?,
        },
        Command::Room(RoomCommand::AddMember { id, member }) => AdminOperation::RoomAddMember {
            room: room_id(&id)?,
            member: sign_key(&member)?,
        },
        Command::Room(RoomCommand::RemoveMember { id, member }) => {
            AdminOperation::RoomRemoveMember {
                room: room_id(&id)?,
                member: sign_key(&member)?,
            }
        }
        Command::Room(RoomCommand::List) => AdminOperation::RoomList,
        _ => return Err(OperationError::BadInput("not an admin command".into())),
    })
}

/// What a revocation or deletion says once it returns (see [`crate::admin::run`]).
fn in_force() -> String {
    format!(
        "in force on every membershipd sharing this store (waited {:?} for their caches): they \
         refuse the user's logins and requests from now on",
        crate::store::cached::IN_FORCE_EVERYWHERE
    )
}

/// Text for people, from an operation's JSON result.
fn human(operation: &AdminOperation, value: &Value, qr: bool) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let list = |f: &dyn Fn(&Value) -> String| {
        value
            .as_array()
            .map(|items| items.iter().map(f).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    };
    match operation {
        AdminOperation::UserAdd { .. } => format!("added user {}", s(&value["sign_key"])),
        AdminOperation::UserList => list(&|u| {
            let admin = if u["admin"] == true { "  admin" } else { "" };
            format!("{}  {}{admin}", s(&u["sign_key"]), s(&u["status"]))
        }),
        AdminOperation::UserRevoke(key) => format!("revoked {key}; {}", in_force()),
        AdminOperation::UserDelete(key) => format!("deleted {key}; {}", in_force()),
        AdminOperation::InviteCreate { .. } => {
            let link = s(&value["link"]);
            let mut text = format!(
                "invite {}\nlink (shown once): {link}",
                s(&value["invite"]["id"])
            );
            if qr {
                if let Ok(code) = qrcode::QrCode::new(link.as_bytes()) {
                    let art = code
                        .render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build();
                    text.push_str(&format!("\n{art}"));
                }
            }
            text
        }
        AdminOperation::InviteList => {
            list(&|i| format!("{}  {}", s(&i["invite"]["id"]), s(&i["status"])))
        }
        AdminOperation::InviteCancel(id) => format!("cancelled {id}"),
        AdminOperation::RoomCreate { room, .. } => format!("created room {room}"),
        AdminOperation::RoomAddMember { room, member } => format!("added {member} to {room}"),
        AdminOperation::RoomRemoveMember { room, member } => {
            format!("removed {member} from {room}")
        }
        AdminOperation::RoomList => list(&|r| {
            format!(
                "{}  owner {}  epoch {}",
                s(&r["id"]),
                s(&r["owner"]),
                r["epoch"]
            )
        }),
    }
}

async fn migrate(out: &Output, config: &Config, no_backup: bool) -> Result<(), ServerError> {
    let sqlite = open_sqlite(config).await?;
    let kv = open_kv(config, config.replicas).await?;
    let backup = (!no_backup).then(|| {
        config
            .data_dir
            .join(format!("pre-migration-{}.db", now_millis()))
    });
    let report = migrate_sqlite_to_kv(&sqlite, &kv, backup.as_deref()).await?;
    out.print(
        format!(
            "migrated {} users ({} deleted), {} invites, {} rooms, {} epochs, {} history shares{}",
            report.users,
            report.deleted_users,
            report.invites,
            report.rooms,
            report.epochs,
            report.history_shares,
            report
                .backup
                .as_ref()
                .map(|b| format!(" (backup: {})", b.display()))
                .unwrap_or_default()
        ),
        json!({
            "users": report.users, "deleted_users": report.deleted_users, "invites": report.invites, "rooms": report.rooms,
            "epochs": report.epochs, "history_shares": report.history_shares, "backup": report.backup,
        }),
    );
    Ok(())
}
