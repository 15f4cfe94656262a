//! The `membershipd` command line: `serve`, and admin commands for users, invites, rooms,
//! backups and migration. Human output by default, `--json` for scripts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use unibus::{InviteLink, KexPublicKey, RoomId, SignPublicKey};

use crate::auth::setup::AuthSetup;
use crate::config::{Config, Settings, StoreKind};
use crate::store::migrate::{backup_sqlite, migrate_sqlite_to_kv};
use crate::store::{
    now_millis, KvStore, KvStoreConfig, NewInvite, NewUser, SqliteStore, Store, StoreError,
};

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
        /// Where [default: <data-dir>/backup-<unix ms>.db].
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
    /// Delete a user's record for good.
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
        /// Hours until it expires.
        #[arg(long, default_value_t = 168)]
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
        Err(message) => fail(json, &message),
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
pub async fn run(cli: Cli) -> Result<(), String> {
    let file = match &cli.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let config = Config::resolve(cli.settings.or(file));
    let out = Output { json: cli.json };
    match cli.command {
        Command::Serve => {
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            crate::serve::run(&config, open_store(&config), shutdown).await
        }
        Command::User(command) => user(&out, open_store(&config).await?, command).await,
        Command::Invite(command) => {
            invite(&out, &config, open_store(&config).await?, command).await
        }
        Command::Room(command) => room(&out, open_store(&config).await?, command).await,
        Command::MigrateToKv { no_backup } => migrate(&out, &config, no_backup).await,
        Command::Backup { out: dest } => {
            let sqlite = open_sqlite(&config).await?;
            let dest =
                dest.unwrap_or_else(|| config.data_dir.join(format!("backup-{}.db", now_millis())));
            backup_sqlite(&sqlite, &dest).await.map_err(store_error)?;
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

fn store_error(e: StoreError) -> String {
    e.to_string()
}

async fn open_sqlite(config: &Config) -> Result<SqliteStore, String> {
    if let Some(parent) = config.db.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    SqliteStore::open(&config.db).await.map_err(store_error)
}

async fn open_kv(config: &Config, replicas: usize) -> Result<KvStore, String> {
    let url = config
        .nats_url
        .as_deref()
        .ok_or("the KV store needs --nats-url")?;
    // With cluster login by key set up, membershipd connects as its service user, whose
    // account holds the KV buckets; a cluster without it is joined anonymously.
    let auth_dir = config.data_dir.join("auth");
    let options =
        match AuthSetup::load(&auth_dir).map_err(|e| format!("{}: {e}", auth_dir.display()))? {
            Some(setup) => async_nats::ConnectOptions::with_nkey(
                setup.service.seed().map_err(|e| e.to_string())?,
            ),
            None => async_nats::ConnectOptions::new(),
        };
    let client = options
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    KvStore::open(
        client,
        KvStoreConfig {
            replicas,
            ..KvStoreConfig::default()
        },
    )
    .await
    .map_err(store_error)
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>, String> {
    Ok(match config.store {
        StoreKind::Sqlite => Arc::new(open_sqlite(config).await?),
        StoreKind::Kv => Arc::new(open_kv(config, config.replicas).await?),
    })
}

fn sign_key(text: &str) -> Result<SignPublicKey, String> {
    SignPublicKey::from_hex(text).map_err(|e| e.to_string())
}

fn room_id(text: &str) -> Result<RoomId, String> {
    RoomId::new(text).map_err(|e| e.to_string())
}

async fn user(out: &Output, store: Arc<dyn Store>, command: UserCommand) -> Result<(), String> {
    match command {
        UserCommand::Add {
            sign_key: sign,
            kex_key,
            admin,
        } => {
            let user = store
                .add_user(NewUser {
                    sign_key: sign_key(&sign)?,
                    kex_key: KexPublicKey::from_hex(&kex_key).map_err(|e| e.to_string())?,
                    admin,
                })
                .await
                .map_err(store_error)?;
            out.print(format!("added user {}", user.sign_key), json!(user));
        }
        UserCommand::List => {
            let users = store.list_users().await.map_err(store_error)?;
            let lines: Vec<String> = users
                .iter()
                .map(|u| {
                    format!(
                        "{}  {:?}{}",
                        u.sign_key,
                        u.status,
                        if u.admin { "  admin" } else { "" }
                    )
                })
                .collect();
            out.print(lines.join("\n"), json!(users));
        }
        UserCommand::Revoke { key } => {
            store
                .revoke_user(&sign_key(&key)?)
                .await
                .map_err(store_error)?;
            out.print(format!("revoked {key}"), json!({ "revoked": key }));
        }
        UserCommand::Delete { key } => {
            store
                .delete_user(&sign_key(&key)?)
                .await
                .map_err(store_error)?;
            out.print(format!("deleted {key}"), json!({ "deleted": key }));
        }
    }
    Ok(())
}

async fn invite(
    out: &Output,
    config: &Config,
    store: Arc<dyn Store>,
    command: InviteCommand,
) -> Result<(), String> {
    match command {
        InviteCommand::Create {
            admin,
            ttl_hours,
            no_qr,
        } => {
            let (token, invite) = store
                .create_invite(NewInvite {
                    created_by: None,
                    admin,
                    ttl: Duration::from_secs(ttl_hours.saturating_mul(3600)),
                })
                .await
                .map_err(store_error)?;
            let link = InviteLink::new(&config.public_url, token).map_err(|e| {
                format!(
                    "the public URL {} cannot carry invites: {e}",
                    config.public_url
                )
            })?;
            let mut human = format!("invite {}\nlink (shown once): {link}", invite.id);
            if !no_qr && !out.json {
                if let Ok(code) = qrcode::QrCode::new(link.to_string().as_bytes()) {
                    let art = code
                        .render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build();
                    human.push_str(&format!("\n{art}"));
                }
            }
            out.print(human, json!({ "invite": invite, "link": link.to_string() }));
        }
        InviteCommand::List => {
            let invites = store.list_invites().await.map_err(store_error)?;
            let now = now_millis();
            let lines: Vec<String> = invites
                .iter()
                .map(|i| format!("{}  {:?}", i.id, i.status_at(now)))
                .collect();
            let values: Vec<Value> = invites
                .iter()
                .map(|i| json!({ "invite": i, "status": i.status_at(now) }))
                .collect();
            out.print(lines.join("\n"), json!(values));
        }
        InviteCommand::Cancel { id } => {
            store.cancel_invite(&id).await.map_err(store_error)?;
            out.print(format!("cancelled {id}"), json!({ "cancelled": id }));
        }
    }
    Ok(())
}

async fn room(out: &Output, store: Arc<dyn Store>, command: RoomCommand) -> Result<(), String> {
    match command {
        RoomCommand::Create { id, owner } => {
            let room = store
                .create_room(&room_id(&id)?, &sign_key(&owner)?)
                .await
                .map_err(store_error)?;
            out.print(format!("created room {}", room.id), json!(room));
        }
        RoomCommand::AddMember { id, member } => {
            store
                .add_member(&room_id(&id)?, &sign_key(&member)?)
                .await
                .map_err(store_error)?;
            out.print(
                format!("added {member} to {id}"),
                json!({ "room": id, "added": member }),
            );
        }
        RoomCommand::RemoveMember { id, member } => {
            store
                .remove_member(&room_id(&id)?, &sign_key(&member)?)
                .await
                .map_err(store_error)?;
            out.print(
                format!("removed {member} from {id}"),
                json!({ "room": id, "removed": member }),
            );
        }
        RoomCommand::List => {
            let rooms = store.list_rooms().await.map_err(store_error)?;
            let lines: Vec<String> = rooms
                .iter()
                .map(|r| format!("{}  owner {}  epoch {}", r.id, r.owner, r.epoch))
                .collect();
            out.print(lines.join("\n"), json!(rooms));
        }
    }
    Ok(())
}

async fn migrate(out: &Output, config: &Config, no_backup: bool) -> Result<(), String> {
    let sqlite = open_sqlite(config).await?;
    let kv = open_kv(config, config.replicas).await?;
    let backup = (!no_backup).then(|| {
        config
            .data_dir
            .join(format!("pre-migration-{}.db", now_millis()))
    });
    let report = migrate_sqlite_to_kv(&sqlite, &kv, backup.as_deref())
        .await
        .map_err(store_error)?;
    out.print(
        format!(
            "migrated {} users, {} invites, {} rooms, {} epochs{}",
            report.users,
            report.invites,
            report.rooms,
            report.epochs,
            report
                .backup
                .as_ref()
                .map(|b| format!(" (backup: {})", b.display()))
                .unwrap_or_default()
        ),
        json!({
            "users": report.users, "invites": report.invites, "rooms": report.rooms,
            "epochs": report.epochs, "backup": report.backup,
        }),
    );
    Ok(())
}
