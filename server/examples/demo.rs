//! The unibus demo: the whole story on the embedded default, on this machine, step by step.
//!
//! ```text
//! ./scripts/demo.sh      # builds membershipd and this example, then runs it
//! ```
//!
//! An operator starts `membershipd serve` (SQLite and its own nats-server, all on 127.0.0.1)
//! and mints invite links with its CLI. Two people redeem them with fresh identities through the
//! client SDK, log in to the cluster with their own keys, and one of them creates a room, adds
//! the other, and rekeys it on their device. The other sees each change as it happens, then
//! fetches, verifies and opens the room key. They exchange end-to-end encrypted messages: one
//! arrives live through the watch, the other is read back from the room's history. After being
//! removed, they cannot open the next key.
//!
//! The binaries come from `$MEMBERSHIPD` (default: `membershipd` beside this example's
//! directory, where cargo builds it) and `$NATS_SERVER` (default: `.tools/bin/nats-server`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use unibus::client::{
    register, Page, RegisterOptions, RoomUpdate, Session, SessionError, SessionOptions, Watch,
};
use unibus::envelope::ContentType;
use unibus::sealing::RoomKey;
use unibus::{Identity, InviteLink, RoomId};

type Error = Box<dyn std::error::Error>;

/// `membershipd serve`, killed when dropped.
struct Server {
    child: Child,
    binary: PathBuf,
    args: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Runs an admin command beside the server and returns its JSON output.
    fn cli(&self, command: &[&str]) -> Result<serde_json::Value, Error> {
        let output = Command::new(&self.binary)
            .args(&self.args)
            .arg("--json")
            .args(command)
            .output()?;
        if !output.status.success() {
            return Err(format!("membershipd {command:?} failed").into());
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }
}

fn binary(variable: &str, default: PathBuf) -> Result<PathBuf, Error> {
    let path = std::env::var_os(variable).map_or(default, PathBuf::from);
    if !path.is_file() {
        return Err(format!("{} is missing: run ./scripts/demo.sh", path.display()).into());
    }
    Ok(path)
}

async fn start_server(data: &Path) -> Result<(Server, String), Error> {
    let here = std::env::current_exe()?;
    let target = here
        .parent()
        .and_then(Path::parent)
        .ok_or("no target dir")?;
    let membershipd = binary("MEMBERSHIPD", target.join("membershipd"))?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let nats_server = binary("NATS_SERVER", repo.join(".tools/bin/nats-server"))?;
    let mut args = vec![
        "--data-dir".into(),
        data.display().to_string(),
        "--nats-server".into(),
        nats_server.display().to_string(),
    ];
    // Port 0: the OS picks free ports, and membershipd reports them in serving.json.
    let child = Command::new(&membershipd)
        .args(&args)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--nats-listen",
            "127.0.0.1:0",
            "serve",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.join("membershipd.log"))?)
        .spawn()?;
    let pid = child.id();
    let mut server = Server {
        child,
        binary: membershipd,
        args: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let serving = loop {
        let serving = std::fs::read(data.join("serving.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .filter(|serving| serving["pid"] == pid);
        if let Some(serving) = serving {
            break serving;
        }
        if Instant::now() > deadline {
            return Err("membershipd did not serve within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let public_url = serving["public_url"].as_str().ok_or("no public_url")?;
    args.extend(["--public-url".into(), public_url.to_owned()]);
    server.args = args;
    let health = format!("{public_url}/healthz");
    if !reqwest::get(&health).await?.status().is_success() {
        return Err("membershipd is not healthy".into());
    }
    Ok((server, health))
}

/// A short, non-secret name for a key: the first bytes of its SHA-256.
fn fingerprint(key: &RoomKey) -> String {
    let digest = Sha256::digest(key.expose_secret());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn short(hex: &str) -> &str {
    &hex[..12]
}

async fn next_update(watch: &mut Watch) -> Result<RoomUpdate, Error> {
    match tokio::time::timeout(Duration::from_secs(5), watch.next()).await? {
        Some(update) => Ok(update?),
        None => Err("the watch ended".into()),
    }
}

/// The next update that is not a message (bob's own message comes through his watch too).
async fn next_change(watch: &mut Watch) -> Result<RoomUpdate, Error> {
    loop {
        match next_update(watch).await? {
            RoomUpdate::Message { .. } => continue,
            change => return Ok(change),
        }
    }
}

async fn redeem(server: &Server, who: &str) -> Result<(Arc<Identity>, Vec<String>), Error> {
    let minted = server.cli(&["invite", "create"])?;
    let link = InviteLink::parse(minted["link"].as_str().ok_or("no link")?)?;
    println!(
        "   admin: membershipd invite create -> {}/invite#<token, shown once>",
        link.server_url()
    );
    let me = Arc::new(Identity::generate()?);
    let registration = register(&link, &me, &RegisterOptions::default()).await?;
    println!(
        "   {who}: new identity {}…, registered; cluster at {}",
        short(&me.sign_public_key().to_hex()),
        registration.nats_urls.join(", ")
    );
    Ok((me, registration.nats_urls))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let data = tempfile::tempdir()?;
    println!("1. The operator starts membershipd on the embedded default.");
    let (server, health) = start_server(data.path()).await?;
    println!("   membershipd serve: SQLite and a nats-server child; {health} answers 200");

    println!("\n2. Two invite links are minted and redeemed with fresh identities.");
    let (alice, alice_urls) = redeem(&server, "alice").await?;
    let (bob, bob_urls) = redeem(&server, "bob").await?;

    println!("\n3. Both log in to the cluster with their own keys (no passwords, no tokens).");
    let alice_session = Session::connect(alice, &alice_urls, SessionOptions::default()).await?;
    let bob_session =
        Session::connect(Arc::clone(&bob), &bob_urls, SessionOptions::default()).await?;
    let mut bob_updates = bob_session.watch_with_messages().await?;
    println!(
        "   alice: {:?}; bob: {:?}, watching for changes and messages",
        alice_session.state(),
        bob_session.state()
    );

    println!("\n4. alice creates a room and adds bob.");
    let room = RoomId::new("general")?;
    let created = alice_session.create_room(&room).await?;
    println!(
        "   room {} owned by alice, epoch {}",
        created.id, created.epoch
    );
    alice_session
        .add_member(&room, &bob.sign_public_key())
        .await?;
    println!("   bob sees: {:?}", next_update(&mut bob_updates).await?);

    println!("\n5. alice rekeys on her device: a fresh key sealed to every member, signed.");
    let epoch_1 = alice_session.rekey(&room).await?;
    println!(
        "   epoch {} uploaded; key fingerprint {}",
        epoch_1.epoch,
        fingerprint(&epoch_1.key)
    );
    println!("   bob sees: {:?}", next_update(&mut bob_updates).await?);

    println!("\n6. bob fetches his sealed copy, verifies the manifest and opens it.");
    let opened = bob_session.room_key(&room, None).await?;
    println!(
        "   epoch {}: key fingerprint {} (same as alice's: {})",
        opened.epoch,
        fingerprint(&opened.key),
        opened.key.expose_secret() == epoch_1.key.expose_secret()
    );

    println!("\n7. alice and bob exchange messages, sealed and signed on their devices.");
    let text = ContentType::new("text/plain; charset=utf-8")?;
    let sent = alice_session.send(&room, b"hello bob", &text).await?;
    println!(
        "   alice: message {} stored at position {}",
        sent.id, sent.position
    );
    match next_update(&mut bob_updates).await? {
        RoomUpdate::Message { message, .. } => {
            let opened = message.outcome?;
            println!(
                "   bob sees, live: {:?} from {}…",
                String::from_utf8_lossy(opened.body()),
                short(&opened.sender().to_hex())
            );
        }
        other => return Err(format!("bob should see the message, got {other:?}").into()),
    }
    bob_session.send(&room, b"hi alice", &text).await?;
    for received in alice_session
        .messages(&room, Page::Latest { limit: 10 })
        .await?
        .messages
    {
        let opened = received.outcome?;
        println!(
            "   alice reads, position {}: {:?} from {}…",
            received.position,
            String::from_utf8_lossy(opened.body()),
            short(&opened.sender().to_hex())
        );
    }

    println!("\n8. alice removes bob and rekeys; bob cannot open the new key.");
    alice_session
        .remove_member(&room, &bob.sign_public_key())
        .await?;
    println!("   bob sees: {:?}", next_change(&mut bob_updates).await?);
    let epoch_2 = alice_session.rekey(&room).await?;
    match bob_session.room_key(&room, None).await {
        Err(SessionError::NotMember) => {
            println!("   epoch {}: bob is refused: not a member", epoch_2.epoch)
        }
        other => return Err(format!("bob should be refused, got {other:?}").into()),
    }

    alice_session.close().await;
    bob_session.close().await;
    drop(server);
    println!("\nDone: the server, its nats-server and the data directory are gone.");
    Ok(())
}
