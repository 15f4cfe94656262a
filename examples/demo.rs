//! The unibus demo: what exists so far, end to end on one machine, printed step by step.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! An admin mints an invite link; the new member's device parses it and makes its identity; the
//! room owner rekeys the room on their device, sealing a fresh key to every member and signing
//! the manifest; the member verifies the manifest and opens the key. (Registration over HTTP and
//! the cluster come with the store and server.)

use unibus::manifest::{Recipient, SignedManifest};
use unibus::sealing::RoomKey;
use unibus::{Identity, InviteLink, InviteToken, RoomId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("1. The admin mints a single-use invite link (the token goes in the URL fragment).");
    let link = InviteLink::new("https://members.example.com", InviteToken::generate()?)?;
    println!("   {link}");
    if let Some(deep) = link.to_deep_link() {
        println!("   deep link for a QR code: {deep}");
    }

    println!("\n2. The new member pastes it (sloppily) into the app, which parses it.");
    let pasted = format!("   {}  \n", link.to_string().to_uppercase());
    println!("   pasted: {pasted:?}");
    let parsed = InviteLink::parse(&pasted)?;
    println!("   server:   {}", parsed.server_url());
    println!("   register: {}", parsed.register_url());
    println!("   same link: {}", parsed == link);

    println!("\n   What a bad paste gets instead:");
    for bad in [
        "http://members.example.com/invite#00",
        "members.example.com/invite",
        "https://members.example.com/invite#abc",
    ] {
        println!("   {bad:45} -> {}", InviteLink::parse(bad).unwrap_err());
    }

    println!("\n3. Identities are made on each device; only public keys ever leave it.");
    let owner = Identity::generate()?;
    let member = Identity::generate()?;
    for (who, id) in [("owner ", &owner), ("member", &member)] {
        println!(
            "   {who} sign {}  kex {}",
            id.sign_public_key(),
            id.kex_public_key()
        );
        println!("          nkey {}", id.nkey_public());
    }
    println!("   Debug never shows secrets: {member:?}");

    println!("\n4. The owner rekeys room \"general\" to epoch 1 on their device.");
    let room = RoomId::new("general")?;
    let room_key = RoomKey::generate()?;
    let recipients = [Recipient::of(&owner), Recipient::of(&member)];
    let manifest = SignedManifest::rekey(&owner, &room, 1, 0, &room_key, &recipients)?;
    let wire = manifest.to_bytes();
    println!(
        "   signed manifest: {} bytes, {} sealed copies of {} bytes each",
        wire.len(),
        recipients.len(),
        unibus::sealing::SEALED_ROOM_KEY_LEN
    );
    println!("   the key itself:  {room_key:?}");

    println!("\n5. The member receives the manifest, verifies it against the owner's key, and opens the key.");
    let received = SignedManifest::from_bytes(&wire)?;
    let opened = received.open(&member, &room, 1, &owner.sign_public_key())?;
    println!(
        "   opened the same key: {}",
        opened.expose_secret() == room_key.expose_secret()
    );

    println!("\n6. And what does not open:");
    let stranger = Identity::generate()?;
    println!(
        "   a stranger:          {}",
        received
            .open(&stranger, &room, 1, &owner.sign_public_key())
            .unwrap_err()
    );
    println!(
        "   another epoch:       {}",
        received
            .open(&member, &room, 2, &owner.sign_public_key())
            .unwrap_err()
    );
    println!(
        "   signed by the wrong key: {}",
        received
            .open(&member, &room, 1, &stranger.sign_public_key())
            .unwrap_err()
    );
    let mut tampered = wire.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let verdict =
        SignedManifest::from_bytes(&tampered)?.open(&member, &room, 1, &owner.sign_public_key());
    println!("   a tampered manifest: {}", verdict.unwrap_err());

    println!("\nDone.");
    Ok(())
}
