//! Quickstart: the client SDK from invite link to room key, as an app uses it.
//!
//! ```text
//! membershipd invite create     # twice: one link for the room owner, one for the member
//! cargo run --example quickstart -- '<owner invite link>' '<member invite link>' [reader]
//! ```
//!
//! With a third argument, the signing key (hex) of a registered user, the owner adds that user
//! to the room as a reader that stays: another app, in any language, reads the messages after
//! the quickstart ends (the Python and Kotlin tests do).
//!
//! Both people redeem their invites with fresh identities and log in to the cluster with their
//! own keys. The owner creates a room, adds the member and rekeys; the member sees each change
//! through a watch and opens the keys of epochs 1 and 2; both send a message and the member
//! reads them back, opened and verified; once removed, the member cannot open epoch 3. A real app keeps `Identity::to_secret_bytes()` and the `Registration` in the
//! platform's keychain and reconnects with them instead of registering again.

use std::sync::Arc;
use std::time::Duration;

use unibus::client::{
    register, Page, RegisterOptions, Session, SessionError, SessionOptions, Watch,
};
use unibus::envelope::ContentType;
use unibus::{Identity, InviteLink, RoomId, SignPublicKey};

type Error = Box<dyn std::error::Error>;

/// Redeems `link` with a fresh identity and logs in.
async fn join(link: &str) -> Result<(Arc<Identity>, Session), Error> {
    let link = InviteLink::parse(link)?;
    let me = Arc::new(Identity::generate()?);
    let registration = register(&link, &me, &RegisterOptions::default()).await?;
    let options = SessionOptions {
        // If its logins keep being refused, the session asks the server whether it was revoked.
        status_check: Some((&registration).into()),
        ..SessionOptions::default()
    };
    let session = Session::connect(Arc::clone(&me), &registration.nats_urls, options).await?;
    println!("registered and logged in as {}", me.sign_public_key());
    Ok((me, session))
}

async fn expect_update(watch: &mut Watch) -> Result<(), Error> {
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await? {
        Some(update) => {
            println!("  member sees {:?}", update?);
            Ok(())
        }
        None => Err("the watch ended".into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (owner_link, member_link, reader) = match args.as_slice() {
        [owner, member] => (owner, member, None),
        [owner, member, reader] => (owner, member, Some(SignPublicKey::from_hex(reader)?)),
        _ => {
            return Err(
                "usage: quickstart <owner invite link> <member invite link> [reader key]".into(),
            )
        }
    };
    let (_, owner) = join(owner_link).await?;
    let (member_id, member) = join(member_link).await?;
    let mut updates = member.watch().await?;

    let room = RoomId::new(&format!(
        "quickstart-{}",
        &member_id.sign_public_key().to_hex()[..8]
    ))?;
    owner.create_room(&room).await?;
    owner
        .add_member(&room, &member_id.sign_public_key())
        .await?;
    expect_update(&mut updates).await?;
    if let Some(reader) = &reader {
        owner.add_member(&room, reader).await?;
        println!("  owner added reader {reader} to room {room}");
    }

    for _ in 0..2 {
        let sealed = owner.rekey(&room).await?;
        expect_update(&mut updates).await?;
        let opened = member.room_key(&room, None).await?;
        let same = opened.key.expose_secret() == sealed.key.expose_secret();
        println!(
            "  epoch {}: member opened the owner's key: {same}",
            opened.epoch
        );
    }

    let text = ContentType::new("text/plain; charset=utf-8")?;
    owner.send(&room, b"welcome", &text).await?;
    let sent = member.send(&room, b"thanks", &text).await?;
    println!("  member sent message {} at {}", sent.id, sent.position);
    for received in member
        .messages(&room, Page::Latest { limit: 10 })
        .await?
        .messages
    {
        let message = received.outcome?;
        let body = String::from_utf8_lossy(message.body());
        println!("  member reads {body:?} from {}", message.sender());
    }

    owner
        .remove_member(&room, &member_id.sign_public_key())
        .await?;
    expect_update(&mut updates).await?;
    let third = owner.rekey(&room).await?;
    match member.room_key(&room, None).await {
        Err(SessionError::NotMember) => println!("  epoch {}: member refused", third.epoch),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    owner.close().await;
    member.close().await;
    Ok(())
}
