//! `migrate_sqlite_to_kv`: faithful (the KV snapshot equals the SQLite one), idempotent, and
//! preceded by a consistent backup.

use unibus::history::HistoryShare;
use unibus::manifest::{Recipient, SignedManifest};
use unibus::sealing::RoomKey;
use unibus::{Identity, RoomId};
use unibus_server::store::migrate::migrate_sqlite_to_kv;
use unibus_server::store::{
    KvStore, KvStoreConfig, NewInvite, NewUser, SqliteStore, Store, StoredShare,
};
use unibus_testkit::NatsCluster;

/// Two rooms (one rekeyed to epoch 2, with a history share of epoch 1), members, a revoked and a
/// deleted user, used and pending invites.
async fn seed(store: &SqliteStore) {
    let people: Vec<Identity> = (0..5).map(|_| Identity::generate().unwrap()).collect();
    for (i, id) in people.iter().enumerate() {
        store
            .add_user(NewUser {
                sign_key: id.sign_public_key(),
                kex_key: id.kex_public_key(),
                admin: i == 0,
            })
            .await
            .unwrap();
    }
    store
        .revoke_user(&people[3].sign_public_key())
        .await
        .unwrap();
    store
        .delete_user(&people[4].sign_public_key())
        .await
        .unwrap();
    let (general, side) = (
        RoomId::new("general").unwrap(),
        RoomId::new("side").unwrap(),
    );
    let owner = &people[0];
    store
        .create_room(&general, &owner.sign_public_key())
        .await
        .unwrap();
    store
        .create_room(&side, &people[1].sign_public_key())
        .await
        .unwrap();
    for id in &people[1..3] {
        store
            .add_member(&general, &id.sign_public_key())
            .await
            .unwrap();
    }
    for (epoch, previous, recipients) in [(1, 0, &people[..2]), (2, 1, &people[..3])] {
        let recipients: Vec<Recipient> = recipients.iter().map(Recipient::of).collect();
        let key = RoomKey::generate().unwrap();
        let manifest =
            SignedManifest::rekey(owner, &general, epoch, previous, &key, &recipients).unwrap();
        store.put_epoch(&manifest).await.unwrap();
        if epoch == 1 {
            // The member added at epoch 2 gets epoch 1 as a history share.
            let late = &people[2];
            let share =
                HistoryShare::seal(owner, &manifest.head(), &key, &Recipient::of(late)).unwrap();
            let stored = StoredShare {
                epoch,
                member: late.sign_public_key(),
                share: share.to_bytes(),
            };
            store.put_history_shares(&general, &[stored]).await.unwrap();
        }
    }
    let (token, _) = store.create_invite(NewInvite::default()).await.unwrap();
    let newcomer = Identity::generate().unwrap();
    store
        .redeem_invite(
            &token,
            &newcomer.sign_public_key(),
            &newcomer.kex_public_key(),
        )
        .await
        .unwrap();
    store.create_invite(NewInvite::default()).await.unwrap();
}

#[tokio::test]
async fn migration_is_faithful_idempotent_and_backed_up_first() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("unibus.db"))
        .await
        .unwrap();
    seed(&sqlite).await;
    let expected = sqlite.export_snapshot().await.unwrap();

    let cluster = NatsCluster::start(1).await.unwrap();
    let client = async_nats::connect(cluster.server_addrs()).await.unwrap();
    let kv = KvStore::open(client, KvStoreConfig::default())
        .await
        .unwrap();

    let backup = dir.path().join("backup.db");
    let report = migrate_sqlite_to_kv(&sqlite, &kv, Some(&backup))
        .await
        .unwrap();
    assert_eq!(
        (
            report.users,
            report.deleted_users,
            report.invites,
            report.rooms,
            report.epochs,
            report.history_shares
        ),
        (5, 1, 2, 2, 2, 1)
    );
    assert_eq!(
        kv.export_snapshot().await.unwrap(),
        expected,
        "KV equals SQLite after migration"
    );

    // The backup reopens with identical data.
    let reopened = SqliteStore::open(&backup).await.unwrap();
    assert_eq!(reopened.export_snapshot().await.unwrap(), expected);

    // A second run (no backup this time) converges to the same state.
    migrate_sqlite_to_kv(&sqlite, &kv, None).await.unwrap();
    assert_eq!(kv.export_snapshot().await.unwrap(), expected);

    // The migrated store serves as the old one did: keys, epochs, authorization.
    let general = RoomId::new("general").unwrap();
    assert_eq!(kv.latest_epoch(&general).await.unwrap(), 2);
    let admin = expected.users.iter().find(|u| u.admin).unwrap();
    assert!(kv.has_admin(&admin.sign_key).await);
    let member = expected
        .rooms
        .iter()
        .find(|r| r.room.id == general)
        .unwrap()
        .members[0];
    assert_eq!(
        kv.member_part(&general, &member, None).await.unwrap().epoch,
        2
    );

    // Backing up over an existing file is refused rather than overwriting it.
    assert!(migrate_sqlite_to_kv(&sqlite, &kv, Some(&backup))
        .await
        .is_err());
}
