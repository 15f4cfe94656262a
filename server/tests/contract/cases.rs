//! The contract cases. Each gets a fresh, empty store and asserts behaviour every backend must
//! share.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use unibus::history::HistoryShare;
use unibus::manifest::{MemberPart, Recipient, SignedManifest};
use unibus::protocol::status::KeyStatus;
use unibus::sealing::RoomKey;
use unibus::{Identity, InviteToken, KexPublicKey, RoomId, SignPublicKey};
use unibus_server::store::{
    invite_id, Change, FeedItem, InviteStatus, NewInvite, NewUser, Store, StoreError, StoredShare,
    UserStatus, DEFAULT_INVITE_TTL,
};

macro_rules! cases {
    ($($name:ident),+ $(,)?) => {
        /// Every case, by name.
        pub const ALL: &[(&str, super::Case)] = &[
            $((stringify!($name), |store| Box::pin($name(store)))),+
        ];
    };
}

cases!(
    add_then_get_returns_the_same_user,
    a_taken_signing_key_is_user_exists,
    missing_users_are_not_found,
    keys_given_in_any_case_find_the_same_user,
    users_are_listed_sorted_by_key,
    revoke_keeps_the_record_and_denies_authorization,
    delete_removes_the_user_and_leaves_memberships_inert,
    a_deleted_key_never_comes_back_by_any_path,
    a_revoked_key_redeems_nothing_and_spends_no_invite,
    a_keys_status_follows_it_from_unknown_to_active_revoked_and_deleted,
    a_crashed_redemption_completes_but_a_deleted_user_is_not_recreated,
    has_admin_only_for_active_admins,
    invites_store_only_the_token_digest,
    invites_last_seven_days_by_default,
    redeem_creates_the_user_and_burns_the_invite,
    a_second_key_cannot_redeem_a_used_invite,
    a_retry_by_the_same_key_returns_the_same_user,
    an_already_registered_key_gets_user_exists_with_the_invite_spent,
    an_expired_invite_cannot_be_redeemed,
    a_cancelled_invite_cannot_be_redeemed,
    cancel_rules,
    an_unknown_token_is_invite_unknown,
    invites_list_with_every_status,
    an_admin_invite_creates_an_admin,
    a_room_starts_with_its_owner_as_member,
    members_and_the_reverse_index_follow_adds_and_removes,
    membership_changes_on_missing_rooms_or_members_are_not_found,
    active_members_come_in_key_order_pages_without_revoked_or_deleted_users,
    put_epoch_stores_every_part_and_moves_the_epoch,
    a_large_epoch_gives_every_member_its_own_part,
    a_large_rooms_listing_follows_every_change,
    a_rekey_from_a_stale_epoch_is_a_conflict,
    no_key_before_the_first_epoch_or_for_non_recipients,
    history_shares_are_kept_per_epoch_and_member_and_go_with_a_deleted_user,
    snapshot_export_import_round_trips_and_is_idempotent,
    concurrent_redeemers_of_one_invite_make_exactly_one_user,
    an_admin_nonce_is_accepted_once_until_it_expires,
    the_change_feed_names_every_later_change_to_users_members_and_rooms,
);

fn identity() -> Identity {
    Identity::generate().expect("keys")
}

fn new_user(id: &Identity, admin: bool) -> NewUser {
    NewUser {
        sign_key: id.sign_public_key(),
        kex_key: id.kex_public_key(),
        admin,
    }
}

fn room(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

/// Asserts that the invite `id` is still pending: nothing spent it.
async fn assert_pending(store: &dyn Store, id: &str) {
    let invite = store.get_invite(id).await.unwrap();
    assert_eq!(
        invite.status_at(unibus_server::store::now_millis()),
        InviteStatus::Pending,
        "{invite:?}"
    );
}

async fn invite(store: &dyn Store) -> InviteToken {
    store.create_invite(NewInvite::default()).await.unwrap().0
}

async fn add_then_get_returns_the_same_user(store: Arc<dyn Store>) {
    let alice = identity();
    let added = store.add_user(new_user(&alice, false)).await.unwrap();
    assert_eq!(added.sign_key, alice.sign_public_key());
    assert_eq!(added.kex_key, alice.kex_public_key());
    assert_eq!(added.status, UserStatus::Active);
    assert!(!added.admin);
    assert_eq!(
        store.get_user(&alice.sign_public_key()).await.unwrap(),
        added
    );
    assert!(store.is_authorized(&alice.sign_public_key()).await);
}

async fn a_taken_signing_key_is_user_exists(store: Arc<dyn Store>) {
    let alice = identity();
    store.add_user(new_user(&alice, false)).await.unwrap();
    let again = NewUser {
        kex_key: identity().kex_public_key(),
        ..new_user(&alice, true)
    };
    assert_eq!(
        store.add_user(again).await.unwrap_err(),
        StoreError::UserExists
    );
    assert!(
        !store
            .get_user(&alice.sign_public_key())
            .await
            .unwrap()
            .admin
    );
}

async fn missing_users_are_not_found(store: Arc<dyn Store>) {
    let ghost = identity().sign_public_key();
    assert_eq!(
        store.get_user(&ghost).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.revoke_user(&ghost).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.delete_user(&ghost).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(!store.is_authorized(&ghost).await);
    assert!(!store.has_admin(&ghost).await);
}

async fn keys_given_in_any_case_find_the_same_user(store: Arc<dyn Store>) {
    let alice = identity();
    store.add_user(new_user(&alice, false)).await.unwrap();
    let upper = SignPublicKey::from_hex(&alice.sign_public_key().to_hex().to_uppercase()).unwrap();
    assert_eq!(
        store.get_user(&upper).await.unwrap().sign_key,
        alice.sign_public_key()
    );
    let duplicate = NewUser {
        sign_key: upper,
        kex_key: KexPublicKey::from_hex(&alice.kex_public_key().to_hex().to_uppercase()).unwrap(),
        admin: false,
    };
    assert_eq!(
        store.add_user(duplicate).await.unwrap_err(),
        StoreError::UserExists
    );
}

async fn users_are_listed_sorted_by_key(store: Arc<dyn Store>) {
    let mut keys = Vec::new();
    for _ in 0..5 {
        let id = identity();
        store.add_user(new_user(&id, false)).await.unwrap();
        keys.push(id.sign_public_key());
    }
    keys.sort();
    let listed: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .iter()
        .map(|u| u.sign_key)
        .collect();
    assert_eq!(listed, keys);
}

async fn revoke_keeps_the_record_and_denies_authorization(store: Arc<dyn Store>) {
    let admin = identity();
    store.add_user(new_user(&admin, true)).await.unwrap();
    store.revoke_user(&admin.sign_public_key()).await.unwrap();
    let user = store.get_user(&admin.sign_public_key()).await.unwrap();
    assert_eq!(user.status, UserStatus::Revoked);
    assert!(!store.is_authorized(&admin.sign_public_key()).await);
    assert!(!store.has_admin(&admin.sign_public_key()).await);
    // Revoking again is harmless.
    store.revoke_user(&admin.sign_public_key()).await.unwrap();
}

async fn delete_removes_the_user_and_leaves_memberships_inert(store: Arc<dyn Store>) {
    let (owner, bob) = (identity(), identity());
    store.add_user(new_user(&owner, false)).await.unwrap();
    store.add_user(new_user(&bob, false)).await.unwrap();
    let general = room("general");
    store
        .create_room(&general, &owner.sign_public_key())
        .await
        .unwrap();
    store
        .add_member(&general, &bob.sign_public_key())
        .await
        .unwrap();

    store.delete_user(&bob.sign_public_key()).await.unwrap();
    assert_eq!(
        store.get_user(&bob.sign_public_key()).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(!store.is_authorized(&bob.sign_public_key()).await);
    // The membership stays, inert: the key can no longer log in to use it.
    assert!(store
        .is_member(&general, &bob.sign_public_key())
        .await
        .unwrap());
    assert_eq!(
        store
            .rooms_for_member(&bob.sign_public_key())
            .await
            .unwrap(),
        vec![general]
    );
    // And the key stays retired.
    assert_eq!(
        store.add_user(new_user(&bob, false)).await.unwrap_err(),
        StoreError::UserDeleted
    );
    assert_eq!(
        store.delete_user(&bob.sign_public_key()).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.revoke_user(&bob.sign_public_key()).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(store
        .list_users()
        .await
        .unwrap()
        .iter()
        .all(|u| u.sign_key != bob.sign_public_key()));
}

async fn a_revoked_key_redeems_nothing_and_spends_no_invite(store: Arc<dyn Store>) {
    let user = identity();
    let token = invite(&*store).await;
    let (sign, kex) = (user.sign_public_key(), user.kex_public_key());
    store.redeem_invite(&token, &sign, &kex).await.unwrap();
    store.revoke_user(&sign).await.unwrap();

    // Replaying its own redemption is refused, not confirmed.
    assert_eq!(
        store.redeem_invite(&token, &sign, &kex).await.unwrap_err(),
        StoreError::UserRevoked
    );
    // So is a fresh invite, which stays unspent.
    let (fresh, fresh_invite) = store.create_invite(NewInvite::default()).await.unwrap();
    assert_eq!(
        store.redeem_invite(&fresh, &sign, &kex).await.unwrap_err(),
        StoreError::UserRevoked
    );
    assert_pending(&*store, &fresh_invite.id).await;
    // Nothing changed: still revoked, still refused.
    assert_eq!(
        store.get_user(&sign).await.unwrap().status,
        UserStatus::Revoked
    );
    assert!(!store.is_authorized(&sign).await);
}

async fn a_keys_status_follows_it_from_unknown_to_active_revoked_and_deleted(
    store: Arc<dyn Store>,
) {
    let (revoked, deleted) = (identity(), identity());
    let status = |id: &Identity| {
        let (store, key) = (Arc::clone(&store), id.sign_public_key());
        async move { store.key_status(&key).await.unwrap() }
    };
    assert_eq!(status(&revoked).await, KeyStatus::Unknown);
    store.add_user(new_user(&revoked, false)).await.unwrap();
    store.add_user(new_user(&deleted, true)).await.unwrap();
    assert_eq!(status(&revoked).await, KeyStatus::Active);
    store.revoke_user(&revoked.sign_public_key()).await.unwrap();
    assert_eq!(status(&revoked).await, KeyStatus::Revoked);
    // A revoked user that is then deleted is deleted, and so is an active one.
    store.delete_user(&revoked.sign_public_key()).await.unwrap();
    store.delete_user(&deleted.sign_public_key()).await.unwrap();
    assert_eq!(status(&revoked).await, KeyStatus::Deleted);
    assert_eq!(status(&deleted).await, KeyStatus::Deleted);
}

async fn a_deleted_key_never_comes_back_by_any_path(store: Arc<dyn Store>) {
    // An admin who registered through an invite and joined a room.
    let (owner, admin) = (identity(), identity());
    store.add_user(new_user(&owner, false)).await.unwrap();
    let (token, _) = store
        .create_invite(NewInvite {
            admin: true,
            ..NewInvite::default()
        })
        .await
        .unwrap();
    let (sign, kex) = (admin.sign_public_key(), admin.kex_public_key());
    store.redeem_invite(&token, &sign, &kex).await.unwrap();
    let general = room("general");
    store
        .create_room(&general, &owner.sign_public_key())
        .await
        .unwrap();
    store.add_member(&general, &sign).await.unwrap();
    store.delete_user(&sign).await.unwrap();

    // Replaying its own redemption (the crash-recovery path) brings nothing back.
    assert_eq!(
        store.redeem_invite(&token, &sign, &kex).await.unwrap_err(),
        StoreError::UserDeleted
    );
    // Nor does a fresh invite, with the same or a new x25519 key; and that invite stays unspent.
    let (fresh, fresh_invite) = store.create_invite(NewInvite::default()).await.unwrap();
    let new_kex = identity().kex_public_key();
    for kex in [kex, new_kex] {
        assert_eq!(
            store.redeem_invite(&fresh, &sign, &kex).await.unwrap_err(),
            StoreError::UserDeleted
        );
    }
    assert_pending(&*store, &fresh_invite.id).await;
    // Nor an admin adding the key directly.
    assert_eq!(
        store
            .add_user(NewUser {
                sign_key: sign,
                kex_key: new_kex,
                admin: true
            })
            .await
            .unwrap_err(),
        StoreError::UserDeleted
    );
    assert_eq!(
        store.get_user(&sign).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(!store.is_authorized(&sign).await);
    assert!(!store.has_admin(&sign).await);
    // Its old membership is inert, never a member with a new key.
    assert!(store.is_member(&general, &sign).await.unwrap());
}

async fn a_crashed_redemption_completes_but_a_deleted_user_is_not_recreated(store: Arc<dyn Store>) {
    // A redemption that burned the invite and crashed before creating the user.
    let (token, invite) = store.create_invite(NewInvite::default()).await.unwrap();
    let alice = identity();
    let (sign, kex) = (alice.sign_public_key(), alice.kex_public_key());
    let mut snapshot = store.export_snapshot().await.unwrap();
    let burned = &mut snapshot.invites[0];
    assert_eq!(burned.id, invite.id);
    burned.used_at = Some(unibus_server::store::now_millis());
    burned.used_by = Some(sign);
    store.import_snapshot(&snapshot).await.unwrap();
    assert_eq!(
        store.get_user(&sign).await.unwrap_err(),
        StoreError::NotFound
    );

    // The same key completes it.
    let user = store.redeem_invite(&token, &sign, &kex).await.unwrap();
    assert_eq!(user.invite_id.as_deref(), Some(invite.id.as_str()));
    assert!(store.is_authorized(&sign).await);
    // Once deleted, the same call is refused: a deletion is not a crash.
    store.delete_user(&sign).await.unwrap();
    assert_eq!(
        store.redeem_invite(&token, &sign, &kex).await.unwrap_err(),
        StoreError::UserDeleted
    );
    assert!(!store.is_authorized(&sign).await);
}

async fn has_admin_only_for_active_admins(store: Arc<dyn Store>) {
    let (admin, user) = (identity(), identity());
    store.add_user(new_user(&admin, true)).await.unwrap();
    store.add_user(new_user(&user, false)).await.unwrap();
    assert!(store.has_admin(&admin.sign_public_key()).await);
    assert!(!store.has_admin(&user.sign_public_key()).await);
    assert!(store.is_authorized(&user.sign_public_key()).await);
}

async fn invites_store_only_the_token_digest(store: Arc<dyn Store>) {
    let (token, invite) = store.create_invite(NewInvite::default()).await.unwrap();
    assert_eq!(invite.id, invite_id(&token));
    assert_eq!(store.get_invite(&invite.id).await.unwrap(), invite);
    let snapshot = serde_json::to_string(&store.export_snapshot().await.unwrap()).unwrap();
    assert!(
        !snapshot.contains(token.to_hex().as_str()),
        "the token itself must not be stored"
    );
    assert_eq!(
        store.get_invite("00").await.unwrap_err(),
        StoreError::NotFound
    );
}

async fn invites_last_seven_days_by_default(store: Arc<dyn Store>) {
    let (_, invite) = store.create_invite(NewInvite::default()).await.unwrap();
    assert_eq!(
        invite.expires_at - invite.created_at,
        DEFAULT_INVITE_TTL.as_millis() as i64
    );
    assert_eq!(invite.status_at(invite.created_at), InviteStatus::Pending);
    let creator = identity().sign_public_key();
    let (_, by_admin) = store
        .create_invite(NewInvite {
            created_by: Some(creator),
            ttl: Duration::from_secs(60),
            admin: false,
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_invite(&by_admin.id).await.unwrap().created_by,
        Some(creator)
    );
}

async fn redeem_creates_the_user_and_burns_the_invite(store: Arc<dyn Store>) {
    let (token, invite) = store.create_invite(NewInvite::default()).await.unwrap();
    let alice = identity();
    let user = store
        .redeem_invite(&token, &alice.sign_public_key(), &alice.kex_public_key())
        .await
        .unwrap();
    assert_eq!(user.sign_key, alice.sign_public_key());
    assert_eq!(user.invite_id.as_deref(), Some(invite.id.as_str()));
    assert!(store.is_authorized(&alice.sign_public_key()).await);
    let burned = store.get_invite(&invite.id).await.unwrap();
    assert_eq!(burned.status_at(burned.created_at), InviteStatus::Used);
    assert_eq!(burned.used_by, Some(alice.sign_public_key()));
    assert!(burned.used_at.is_some());
}

async fn a_second_key_cannot_redeem_a_used_invite(store: Arc<dyn Store>) {
    let token = invite(&*store).await;
    let (alice, mallory) = (identity(), identity());
    store
        .redeem_invite(&token, &alice.sign_public_key(), &alice.kex_public_key())
        .await
        .unwrap();
    let err = store
        .redeem_invite(
            &token,
            &mallory.sign_public_key(),
            &mallory.kex_public_key(),
        )
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::InviteUsed);
    assert_eq!(
        store
            .get_user(&mallory.sign_public_key())
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

async fn a_retry_by_the_same_key_returns_the_same_user(store: Arc<dyn Store>) {
    let token = invite(&*store).await;
    let alice = identity();
    let first = store
        .redeem_invite(&token, &alice.sign_public_key(), &alice.kex_public_key())
        .await
        .unwrap();
    let retry = store
        .redeem_invite(&token, &alice.sign_public_key(), &alice.kex_public_key())
        .await
        .unwrap();
    assert_eq!(first, retry);
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

async fn an_already_registered_key_gets_user_exists_with_the_invite_spent(store: Arc<dyn Store>) {
    let alice = identity();
    store.add_user(new_user(&alice, false)).await.unwrap();
    let (token, invite) = store.create_invite(NewInvite::default()).await.unwrap();
    for _ in 0..2 {
        let err = store
            .redeem_invite(&token, &alice.sign_public_key(), &alice.kex_public_key())
            .await
            .unwrap_err();
        assert_eq!(err, StoreError::UserExists);
    }
    let spent = store.get_invite(&invite.id).await.unwrap();
    assert_eq!(spent.status_at(spent.created_at), InviteStatus::Used);
    let bob = identity();
    assert_eq!(
        store
            .redeem_invite(&token, &bob.sign_public_key(), &bob.kex_public_key())
            .await
            .unwrap_err(),
        StoreError::InviteUsed
    );
}

async fn an_expired_invite_cannot_be_redeemed(store: Arc<dyn Store>) {
    let (token, invite) = store
        .create_invite(NewInvite {
            ttl: Duration::ZERO,
            ..NewInvite::default()
        })
        .await
        .unwrap();
    let alice = identity();
    let err = store
        .redeem_invite(&token, &alice.sign_public_key(), &alice.kex_public_key())
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::InviteExpired);
    assert_eq!(
        store.get_user(&alice.sign_public_key()).await.unwrap_err(),
        StoreError::NotFound
    );
    let unchanged = store.get_invite(&invite.id).await.unwrap();
    assert_eq!(unchanged, invite, "a refused redemption changes nothing");
}

async fn a_cancelled_invite_cannot_be_redeemed(store: Arc<dyn Store>) {
    let (token, invite) = store.create_invite(NewInvite::default()).await.unwrap();
    store.cancel_invite(&invite.id).await.unwrap();
    let alice = identity();
    let err = store
        .redeem_invite(&token, &alice.sign_public_key(), &alice.kex_public_key())
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::InviteCancelled);
    assert!(!store.is_authorized(&alice.sign_public_key()).await);
}

async fn cancel_rules(store: Arc<dyn Store>) {
    let (_, pending) = store.create_invite(NewInvite::default()).await.unwrap();
    store.cancel_invite(&pending.id).await.unwrap();
    store.cancel_invite(&pending.id).await.unwrap();
    let cancelled = store.get_invite(&pending.id).await.unwrap();
    assert_eq!(
        cancelled.status_at(cancelled.created_at),
        InviteStatus::Cancelled
    );

    let (token, used) = store.create_invite(NewInvite::default()).await.unwrap();
    let alice = identity();
    store
        .redeem_invite(&token, &alice.sign_public_key(), &alice.kex_public_key())
        .await
        .unwrap();
    assert_eq!(
        store.cancel_invite(&used.id).await.unwrap_err(),
        StoreError::InviteUsed
    );
    assert_eq!(
        store.cancel_invite(&"ab".repeat(32)).await.unwrap_err(),
        StoreError::NotFound
    );
}

async fn an_unknown_token_is_invite_unknown(store: Arc<dyn Store>) {
    let alice = identity();
    let stranger = InviteToken::generate().unwrap();
    let err = store
        .redeem_invite(&stranger, &alice.sign_public_key(), &alice.kex_public_key())
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::InviteUnknown);
    assert!(store.list_users().await.unwrap().is_empty());
}

async fn invites_list_with_every_status(store: Arc<dyn Store>) {
    let (_, pending) = store.create_invite(NewInvite::default()).await.unwrap();
    let (used_token, used) = store.create_invite(NewInvite::default()).await.unwrap();
    let (_, expired) = store
        .create_invite(NewInvite {
            ttl: Duration::ZERO,
            ..NewInvite::default()
        })
        .await
        .unwrap();
    let (_, cancelled) = store.create_invite(NewInvite::default()).await.unwrap();
    store.cancel_invite(&cancelled.id).await.unwrap();
    let alice = identity();
    store
        .redeem_invite(
            &used_token,
            &alice.sign_public_key(),
            &alice.kex_public_key(),
        )
        .await
        .unwrap();

    let now = unibus_server::store::now_millis();
    let listed = store.list_invites().await.unwrap();
    let mut ids: Vec<_> = [&pending, &used, &expired, &cancelled]
        .iter()
        .map(|i| i.id.clone())
        .collect();
    ids.sort();
    assert_eq!(listed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), ids);
    let status = |id: &str| listed.iter().find(|i| i.id == id).unwrap().status_at(now);
    assert_eq!(status(&pending.id), InviteStatus::Pending);
    assert_eq!(status(&used.id), InviteStatus::Used);
    assert_eq!(status(&expired.id), InviteStatus::Expired);
    assert_eq!(status(&cancelled.id), InviteStatus::Cancelled);
}

async fn an_admin_invite_creates_an_admin(store: Arc<dyn Store>) {
    let (token, _) = store
        .create_invite(NewInvite {
            admin: true,
            ..NewInvite::default()
        })
        .await
        .unwrap();
    let root = identity();
    let user = store
        .redeem_invite(&token, &root.sign_public_key(), &root.kex_public_key())
        .await
        .unwrap();
    assert!(user.admin);
    assert!(store.has_admin(&root.sign_public_key()).await);
}

async fn a_room_starts_with_its_owner_as_member(store: Arc<dyn Store>) {
    let owner = identity().sign_public_key();
    let general = room("general");
    let created = store.create_room(&general, &owner).await.unwrap();
    assert_eq!((created.owner, created.epoch), (owner, 0));
    assert_eq!(store.get_room(&general).await.unwrap(), created);
    assert_eq!(store.list_members(&general).await.unwrap(), vec![owner]);
    assert_eq!(
        store.create_room(&general, &owner).await.unwrap_err(),
        StoreError::RoomExists
    );
    assert_eq!(
        store.get_room(&room("nope")).await.unwrap_err(),
        StoreError::NotFound
    );
    store.create_room(&room("alpha"), &owner).await.unwrap();
    let listed: Vec<_> = store
        .list_rooms()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![room("alpha"), general]);
    assert_eq!(store.latest_epoch(&room("alpha")).await.unwrap(), 0);
}

async fn members_and_the_reverse_index_follow_adds_and_removes(store: Arc<dyn Store>) {
    let (owner, bob, carol) = (
        identity().sign_public_key(),
        identity().sign_public_key(),
        identity().sign_public_key(),
    );
    let (a, b) = (room("a"), room("b"));
    store.create_room(&a, &owner).await.unwrap();
    store.create_room(&b, &owner).await.unwrap();
    store.add_member(&a, &bob).await.unwrap();
    store.add_member(&a, &bob).await.unwrap();
    store.add_member(&b, &bob).await.unwrap();
    store.add_member(&b, &carol).await.unwrap();

    let mut expected = vec![owner, bob];
    expected.sort();
    assert_eq!(store.list_members(&a).await.unwrap(), expected);
    assert_eq!(
        store.rooms_for_member(&bob).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert!(store.is_member(&b, &carol).await.unwrap());
    assert!(!store.is_member(&a, &carol).await.unwrap());

    store.remove_member(&a, &bob).await.unwrap();
    assert!(!store.is_member(&a, &bob).await.unwrap());
    assert_eq!(store.rooms_for_member(&bob).await.unwrap(), vec![b.clone()]);
    assert_eq!(
        store
            .rooms_for_member(&identity().sign_public_key())
            .await
            .unwrap(),
        Vec::<RoomId>::new()
    );
}

async fn membership_changes_on_missing_rooms_or_members_are_not_found(store: Arc<dyn Store>) {
    let (owner, bob) = (identity().sign_public_key(), identity().sign_public_key());
    let missing = room("missing");
    assert_eq!(
        store.add_member(&missing, &bob).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.list_members(&missing).await.unwrap_err(),
        StoreError::NotFound
    );
    assert!(!store.is_member(&missing, &bob).await.unwrap());
    let general = room("general");
    store.create_room(&general, &owner).await.unwrap();
    assert_eq!(
        store.remove_member(&general, &bob).await.unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.rooms_for_member(&bob).await.unwrap(),
        Vec::<RoomId>::new()
    );
}

struct Rekey {
    owner: Identity,
    members: Vec<Identity>,
    general: RoomId,
}

async fn active_members_come_in_key_order_pages_without_revoked_or_deleted_users(
    store: Arc<dyn Store>,
) {
    let general = room("general");
    let people: Vec<Identity> = (0..7).map(|_| identity()).collect();
    for person in &people {
        store.add_user(new_user(person, false)).await.unwrap();
    }
    let owner = &people[0];
    store
        .create_room(&general, &owner.sign_public_key())
        .await
        .unwrap();
    for person in &people[1..] {
        store
            .add_member(&general, &person.sign_public_key())
            .await
            .unwrap();
    }
    store
        .revoke_user(&people[1].sign_public_key())
        .await
        .unwrap();
    store
        .delete_user(&people[2].sign_public_key())
        .await
        .unwrap();
    let mut expected: Vec<_> = people
        .iter()
        .enumerate()
        .filter(|(i, _)| ![1, 2].contains(i))
        .map(|(_, p)| (p.sign_public_key(), p.kex_public_key()))
        .collect();
    expected.sort();

    let all = store
        .active_members(&general, None, usize::MAX)
        .await
        .unwrap();
    assert_eq!(all, expected);
    // Pages of two, each after the last key of the one before, give the same list.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .active_members(&general, after.as_ref(), 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        paged.extend(page);
    }
    assert_eq!(paged, expected);
    assert_eq!(
        store
            .active_members(&room("missing"), None, 10)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    // The keys alone (who gets live messages), in any order: the same members.
    let mut keys = store.active_member_keys(&general).await.unwrap();
    keys.sort();
    let expected_keys: Vec<_> = expected.iter().map(|(sign, _)| *sign).collect();
    assert_eq!(keys, expected_keys);
    assert_eq!(
        store
            .active_member_keys(&room("missing"))
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

async fn room_with_members(store: &dyn Store, n: usize) -> Rekey {
    let owner = identity();
    let general = room("general");
    store
        .create_room(&general, &owner.sign_public_key())
        .await
        .unwrap();
    let members: Vec<Identity> = (0..n).map(|_| identity()).collect();
    for m in &members {
        store
            .add_member(&general, &m.sign_public_key())
            .await
            .unwrap();
    }
    Rekey {
        owner,
        members,
        general,
    }
}

fn rekey(r: &Rekey, epoch: u64, previous: u64, who: &[&Identity]) -> (SignedManifest, RoomKey) {
    let key = RoomKey::generate().unwrap();
    let recipients: Vec<Recipient> = who.iter().map(|id| Recipient::of(id)).collect();
    (
        SignedManifest::rekey(&r.owner, &r.general, epoch, previous, &key, &recipients).unwrap(),
        key,
    )
}

async fn put_epoch_stores_every_part_and_moves_the_epoch(store: Arc<dyn Store>) {
    let r = room_with_members(&*store, 3).await;
    let everyone: Vec<&Identity> = std::iter::once(&r.owner).chain(&r.members).collect();
    let (first, key1) = rekey(&r, 1, 0, &everyone);
    store.put_epoch(&first).await.unwrap();
    assert_eq!(store.latest_epoch(&r.general).await.unwrap(), 1);
    let (second, key2) = rekey(&r, 2, 1, &everyone[..3]);
    store.put_epoch(&second).await.unwrap();
    assert_eq!(store.get_room(&r.general).await.unwrap().epoch, 2);

    let owner_key = r.owner.sign_public_key();
    for (i, member) in everyone.iter().enumerate() {
        let me = member.sign_public_key();
        let latest = store.member_part(&r.general, &me, None).await;
        if i < 3 {
            // The stored part is exactly the one the manifest cuts for this member, and opens.
            let latest = latest.unwrap();
            assert_eq!(latest.epoch, 2);
            assert_eq!(
                Some(latest.part.clone()),
                second.member_part(&me).map(|p| p.to_bytes())
            );
            let part = MemberPart::from_bytes(&latest.part).unwrap();
            assert_eq!(part.open(member, &r.general, 2, &owner_key).unwrap(), key2);
        } else {
            assert_eq!(
                latest.unwrap_err(),
                StoreError::NotFound,
                "member {i} was left out of epoch 2"
            );
        }
        let old = store.member_part(&r.general, &me, Some(1)).await.unwrap();
        assert_eq!(old.epoch, 1);
        let opened = MemberPart::from_bytes(&old.part)
            .unwrap()
            .open(member, &r.general, 1, &owner_key)
            .unwrap();
        assert_eq!(opened, key1);
    }
    // The whole manifests come back from what was stored.
    assert_eq!(store.manifest(&r.general, 1).await.unwrap(), first);
    assert_eq!(store.manifest(&r.general, 2).await.unwrap(), second);
    assert_eq!(
        store.manifest(&r.general, 3).await.unwrap_err(),
        StoreError::NotFound
    );
}

/// Adds `members` to `room` (which exists), many at once.
async fn add_members(store: &Arc<dyn Store>, room: &RoomId, members: &[Identity]) {
    let adds = members.iter().map(|m| {
        let (store, room, key) = (Arc::clone(store), room.clone(), m.sign_public_key());
        async move { store.add_member(&room, &key).await }
    });
    let added: Vec<_> = futures::stream::iter(adds.collect::<Vec<_>>())
        .buffer_unordered(32)
        .collect()
        .await;
    for outcome in added {
        outcome.unwrap();
    }
}

async fn a_large_epoch_gives_every_member_its_own_part(store: Arc<dyn Store>) {
    // Enough members that a store keeping tails in groups keeps several, the last one partial.
    let r = room_with_members(&*store, 0).await;
    let members: Vec<Identity> = (0..300).map(|_| identity()).collect();
    add_members(&store, &r.general, &members).await;
    let everyone: Vec<&Identity> = std::iter::once(&r.owner).chain(&members).collect();
    let (manifest, _) = rekey(&r, 1, 0, &everyone);
    store.put_epoch(&manifest).await.unwrap();
    for member in &everyone {
        let me = member.sign_public_key();
        let part = store.member_part(&r.general, &me, Some(1)).await.unwrap();
        assert_eq!(
            Some(part.part),
            manifest.member_part(&me).map(|p| p.to_bytes())
        );
    }
    // A key between two members' keys, and keys before the first and after the last, find
    // nothing.
    // (Keys that are not valid points are skipped: they cannot be members anyway.)
    let low = format!("{}01", "00".repeat(31));
    let high = format!("{}00", "7f".repeat(31));
    let strangers = [&low, &high]
        .into_iter()
        .filter_map(|hex| SignPublicKey::from_hex(hex).ok())
        .chain([identity().sign_public_key()]);
    for stranger in strangers {
        assert_eq!(
            store
                .member_part(&r.general, &stranger, Some(1))
                .await
                .unwrap_err(),
            StoreError::NotFound
        );
    }
    assert_eq!(store.manifest(&r.general, 1).await.unwrap(), manifest);
}

async fn a_large_rooms_listing_follows_every_change(store: Arc<dyn Store>) {
    // A room large enough that a store may keep its listing between calls: every change must
    // show in the next listing, whatever changed in between.
    let r = room_with_members(&*store, 0).await;
    let members: Vec<Identity> = (0..1_100).map(|_| identity()).collect();
    add_members(&store, &r.general, &members).await;
    let mut expected: Vec<SignPublicKey> = std::iter::once(&r.owner)
        .chain(&members)
        .map(Identity::sign_public_key)
        .collect();
    expected.sort();
    assert_eq!(store.list_members(&r.general).await.unwrap(), expected);
    assert_eq!(store.list_members(&r.general).await.unwrap(), expected);

    let newcomer = identity();
    store
        .add_member(&r.general, &newcomer.sign_public_key())
        .await
        .unwrap();
    expected.push(newcomer.sign_public_key());
    expected.sort();
    assert_eq!(store.list_members(&r.general).await.unwrap(), expected);

    let leaver = members[500].sign_public_key();
    store.remove_member(&r.general, &leaver).await.unwrap();
    expected.retain(|m| *m != leaver);
    assert_eq!(store.list_members(&r.general).await.unwrap(), expected);

    // A change in another room leaves this one's listing as it is.
    store
        .create_room(&room("other"), &newcomer.sign_public_key())
        .await
        .unwrap();
    assert_eq!(store.list_members(&r.general).await.unwrap(), expected);

    // Active members: users come and go between pages of the same listing.
    let everyone: Vec<&Identity> = std::iter::once(&r.owner)
        .chain(&members)
        .chain([&newcomer])
        .filter(|id| id.sign_public_key() != leaver)
        .collect();
    let registrations: Vec<_> = everyone
        .iter()
        .map(|id| {
            let (store, user) = (Arc::clone(&store), new_user(id, false));
            async move { store.add_user(user).await }
        })
        .collect();
    let registered: Vec<_> = futures::stream::iter(registrations)
        .buffer_unordered(32)
        .collect()
        .await;
    for outcome in registered {
        outcome.unwrap();
    }
    let mut active: Vec<(SignPublicKey, KexPublicKey)> = everyone
        .iter()
        .map(|id| (id.sign_public_key(), id.kex_public_key()))
        .collect();
    active.sort();
    assert_eq!(
        store
            .active_members(&r.general, None, usize::MAX)
            .await
            .unwrap(),
        active
    );
    let page = store.active_members(&r.general, None, 2).await.unwrap();
    assert_eq!(page, active[..2]);
    store.revoke_user(&active[2].0).await.unwrap();
    store.delete_user(&active[3].0).await.unwrap();
    let next = store
        .active_members(&r.general, Some(&page[1].0), 1_050)
        .await
        .unwrap();
    assert_eq!(next, active[4..1_054]);
}

async fn a_rekey_from_a_stale_epoch_is_a_conflict(store: Arc<dyn Store>) {
    let r = room_with_members(&*store, 1).await;
    let who = [&r.owner, &r.members[0]];
    store.put_epoch(&rekey(&r, 1, 0, &who).0).await.unwrap();
    let (stale, _) = rekey(&r, 2, 0, &who);
    assert_eq!(
        store.put_epoch(&stale).await.unwrap_err(),
        StoreError::EpochConflict {
            expected: 0,
            actual: 1
        }
    );
    let (replay, _) = rekey(&r, 1, 0, &who);
    assert!(matches!(
        store.put_epoch(&replay).await.unwrap_err(),
        StoreError::EpochConflict { .. }
    ));
    assert_eq!(store.latest_epoch(&r.general).await.unwrap(), 1);
    let other = RoomId::new("other").unwrap();
    let elsewhere = SignedManifest::rekey(
        &r.owner,
        &other,
        1,
        0,
        &RoomKey::generate().unwrap(),
        &[Recipient::of(&r.owner)],
    )
    .unwrap();
    assert_eq!(
        store.put_epoch(&elsewhere).await.unwrap_err(),
        StoreError::NotFound
    );
}

async fn no_key_before_the_first_epoch_or_for_non_recipients(store: Arc<dyn Store>) {
    let r = room_with_members(&*store, 1).await;
    let member = r.members[0].sign_public_key();
    assert_eq!(
        store
            .member_part(&r.general, &member, None)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    store
        .put_epoch(&rekey(&r, 1, 0, &[&r.owner]).0)
        .await
        .unwrap();
    assert_eq!(
        store
            .member_part(&r.general, &member, None)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store
            .member_part(&r.general, &member, Some(1))
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store
            .member_part(&room("missing"), &member, None)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
}

async fn history_shares_are_kept_per_epoch_and_member_and_go_with_a_deleted_user(
    store: Arc<dyn Store>,
) {
    let r = room_with_members(&*store, 2).await;
    for member in &r.members {
        store.add_user(new_user(member, false)).await.unwrap();
    }
    let (first, key) = rekey(&r, 1, 0, &[&r.owner]);
    store.put_epoch(&first).await.unwrap();
    // The head comes back as uploaded; an epoch never committed has none.
    assert_eq!(
        store.epoch_head(&r.general, 1).await.unwrap(),
        first.head().to_bytes()
    );
    assert_eq!(
        store.epoch_head(&r.general, 2).await.unwrap_err(),
        StoreError::NotFound
    );
    let share_for = |who: &Identity| StoredShare {
        epoch: 1,
        member: who.sign_public_key(),
        share: HistoryShare::seal(&r.owner, &first.head(), &key, &Recipient::of(who))
            .unwrap()
            .to_bytes(),
    };
    let (a, b) = (share_for(&r.members[0]), share_for(&r.members[1]));
    let (alice, bob) = (a.member, b.member);
    store
        .put_history_shares(&r.general, &[a.clone(), b.clone()])
        .await
        .unwrap();
    let stored = store.history_share(&r.general, &alice, 1).await.unwrap();
    assert_eq!(stored, a.share);
    let opened = HistoryShare::from_bytes(&stored)
        .unwrap()
        .open(&r.members[0], &r.general, 1, &r.owner.sign_public_key())
        .unwrap();
    assert_eq!(opened, key);
    // A share sent again for the same epoch and member replaces the one stored.
    let again = share_for(&r.members[0]);
    assert_ne!(again.share, a.share, "every seal has a fresh ephemeral key");
    store
        .put_history_shares(&r.general, std::slice::from_ref(&again))
        .await
        .unwrap();
    assert_eq!(
        store.history_share(&r.general, &alice, 1).await.unwrap(),
        again.share
    );
    // None for another epoch, another member or another room.
    for (room_id, who, epoch) in [
        (&r.general, alice, 2),
        (&r.general, r.owner.sign_public_key(), 1),
        (&room("other"), alice, 1),
    ] {
        assert_eq!(
            store.history_share(room_id, &who, epoch).await.unwrap_err(),
            StoreError::NotFound
        );
    }
    assert_eq!(
        store
            .put_history_shares(&room("missing"), std::slice::from_ref(&b))
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    // A deleted user's shares go with it; the others stay.
    store.delete_user(&alice).await.unwrap();
    assert_eq!(
        store
            .history_share(&r.general, &alice, 1)
            .await
            .unwrap_err(),
        StoreError::NotFound
    );
    assert_eq!(
        store.history_share(&r.general, &bob, 1).await.unwrap(),
        b.share
    );
}

async fn snapshot_export_import_round_trips_and_is_idempotent(store: Arc<dyn Store>) {
    // Populate every kind of record, then import into a second store of the same backend
    // (the migration test covers SQLite into KV).
    let r = room_with_members(&*store, 2).await;
    let everyone = [&r.owner, &r.members[0], &r.members[1]];
    let (first, first_key) = rekey(&r, 1, 0, &everyone[..2]);
    store.put_epoch(&first).await.unwrap();
    store
        .put_epoch(&rekey(&r, 2, 1, &everyone).0)
        .await
        .unwrap();
    // The member added at epoch 2 gets epoch 1 as a history share.
    let late = &r.members[1];
    let share = HistoryShare::seal(&r.owner, &first.head(), &first_key, &Recipient::of(late))
        .unwrap()
        .to_bytes();
    store
        .put_history_shares(
            &r.general,
            &[StoredShare {
                epoch: 1,
                member: late.sign_public_key(),
                share: share.clone(),
            }],
        )
        .await
        .unwrap();
    let admin = identity();
    store.add_user(new_user(&admin, true)).await.unwrap();
    store.revoke_user(&admin.sign_public_key()).await.unwrap();
    let gone = identity();
    store.add_user(new_user(&gone, true)).await.unwrap();
    store.delete_user(&gone.sign_public_key()).await.unwrap();
    let (token, _) = store.create_invite(NewInvite::default()).await.unwrap();
    store
        .redeem_invite(
            &token,
            &r.members[0].sign_public_key(),
            &r.members[0].kex_public_key(),
        )
        .await
        .unwrap();
    store.create_invite(NewInvite::default()).await.unwrap();

    let snapshot = store.export_snapshot().await.unwrap();
    assert_eq!(snapshot.users.len(), 2);
    assert_eq!(snapshot.deleted_users.len(), 1);
    assert_eq!(snapshot.deleted_users[0].sign_key, gone.sign_public_key());
    assert_eq!(snapshot.invites.len(), 2);
    assert_eq!(snapshot.rooms[0].manifests.len(), 2);
    assert_eq!(snapshot.rooms[0].room.epoch, 2);
    assert_eq!(
        snapshot.rooms[0].history,
        vec![(1, late.sign_public_key(), hex::encode(&share))]
    );

    // Importing over the same state changes nothing, twice.
    store.import_snapshot(&snapshot).await.unwrap();
    store.import_snapshot(&snapshot).await.unwrap();
    assert_eq!(store.export_snapshot().await.unwrap(), snapshot);
    // And every member's part is still served after an import.
    let part = store
        .member_part(&r.general, &r.members[0].sign_public_key(), None)
        .await
        .unwrap();
    assert_eq!(part.epoch, 2);
    // A deleted key stays deleted through an import.
    assert_eq!(
        store.add_user(new_user(&gone, false)).await.unwrap_err(),
        StoreError::UserDeleted
    );
}

/// Rounds of the 64-redeemer race: `UNIBUS_STRESS_ROUNDS` (200 in the stress run), else 3.
fn stress_rounds() -> usize {
    std::env::var("UNIBUS_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

async fn concurrent_redeemers_of_one_invite_make_exactly_one_user(store: Arc<dyn Store>) {
    for round in 0..stress_rounds() {
        let (token, invite) = store.create_invite(NewInvite::default()).await.unwrap();
        let token = Arc::new(token);
        let contenders: Vec<Identity> = (0..64).map(|_| identity()).collect();
        let tasks: Vec<_> = contenders
            .iter()
            .map(|id| {
                let (store, token) = (Arc::clone(&store), Arc::clone(&token));
                let (sign, kex) = (id.sign_public_key(), id.kex_public_key());
                tokio::spawn(async move { store.redeem_invite(&token, &sign, &kex).await })
            })
            .collect();
        let mut winners = Vec::new();
        for (id, task) in contenders.iter().zip(tasks) {
            match task.await.unwrap() {
                Ok(user) => winners.push(user.sign_key),
                Err(StoreError::InviteUsed) => {}
                Err(other) => panic!("round {round}: unexpected {other:?}"),
            }
            let _ = id;
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let burned = store.get_invite(&invite.id).await.unwrap();
        assert_eq!(burned.used_by, Some(winners[0]), "round {round}");
        for id in &contenders {
            let registered = store.get_user(&id.sign_public_key()).await.is_ok();
            assert_eq!(
                registered,
                id.sign_public_key() == winners[0],
                "round {round}"
            );
        }
    }
}

async fn an_admin_nonce_is_accepted_once_until_it_expires(store: Arc<dyn Store>) {
    let now = unibus_server::store::now_millis();
    let (window, expires) = (60_000, now + 120_000);
    let nonce = "0123456789abcdef0123456789abcdef";
    assert!(store.record_nonce(nonce, now, expires).await.unwrap());
    assert!(
        !store.record_nonce(nonce, now, expires).await.unwrap(),
        "a replay"
    );
    // Still a replay at the last moment its request could pass, by the caller's clock, however
    // much later the store itself looks at the time.
    assert!(!store
        .record_nonce(nonce, now + window, expires)
        .await
        .unwrap());
    assert!(!store
        .record_nonce(nonce, expires - 1, expires)
        .await
        .unwrap());
    let other = "fedcba9876543210fedcba9876543210";
    assert!(store.record_nonce(other, now, expires).await.unwrap());
    // Once its expiry is reached, a nonce may be forgotten and reused.
    assert!(store
        .record_nonce(nonce, expires, expires + 120_000)
        .await
        .unwrap());
    assert!(!store
        .record_nonce(nonce, expires, expires + 120_000)
        .await
        .unwrap());
    // A nonce is alphanumeric, and kept no longer than the stores keep nonces.
    let longest = unibus_server::store::NONCE_KEPT_AT_MOST.as_millis() as i64;
    for (bad, until) in [
        ("", expires),
        ("not-alnum", expires),
        ("ok", now + longest + 1),
    ] {
        assert!(
            matches!(
                store.record_nonce(bad, now, until).await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?} until {until}"
        );
    }
    assert!(store.record_nonce("ok", now, now + longest).await.unwrap());
    // Nonces are not part of the control plane's snapshot.
    assert_eq!(store.export_snapshot().await.unwrap(), Default::default());
}

async fn the_change_feed_names_every_later_change_to_users_members_and_rooms(
    store: Arc<dyn Store>,
) {
    // The bound only keeps a broken feed from hanging the run.
    const NEVER: Duration = Duration::from_secs(20);
    let (owner, alice) = (identity(), identity());
    store.add_user(new_user(&owner, false)).await.unwrap();
    let mut feed = store.changes().await.unwrap();
    // A feed opens at about the present: it may still name a change that was in flight as it
    // opened, but once it says it caught up, everything before is behind it.
    loop {
        match tokio::time::timeout(NEVER, feed.next()).await.unwrap() {
            Some(Ok(FeedItem::CaughtUp(_))) => break,
            Some(Ok(FeedItem::Changed(_))) => {}
            other => panic!("a new feed works: {other:?}"),
        }
    }

    let general = room("general");
    let (a, o) = (alice.sign_public_key(), owner.sign_public_key());
    store.add_user(new_user(&alice, false)).await.unwrap();
    store.revoke_user(&a).await.unwrap();
    store.create_room(&general, &o).await.unwrap();
    store.add_member(&general, &a).await.unwrap();
    store.remove_member(&general, &a).await.unwrap();
    store.delete_user(&a).await.unwrap();
    let r = Rekey {
        owner,
        members: Vec::new(),
        general: general.clone(),
    };
    store
        .put_epoch(&rekey(&r, 1, 0, &[&r.owner]).0)
        .await
        .unwrap();
    let member = |m: SignPublicKey| Change::Member {
        room: general.clone(),
        member: m,
    };
    let room_at = |epoch| Change::Room {
        room: general.clone(),
        epoch: Some(epoch),
    };
    let expected = [
        Change::User(a),
        Change::User(a),
        room_at(0),
        member(o),
        member(a),
        member(a),
        Change::User(a),
        room_at(1),
    ];

    // Every change: each record named at least as often as it changed (backends may interleave
    // records differently, and a feed may name a change twice), never a change from before the
    // feed caught up, and then a catching up.
    let deadline = tokio::time::Instant::now() + NEVER;
    let mut seen = Vec::new();
    let all_seen = |seen: &[Change]| {
        expected.iter().all(|record| {
            let changed = expected.iter().filter(|c| *c == record).count();
            seen.iter().filter(|c| *c == record).count() >= changed
        })
    };
    loop {
        let item = tokio::time::timeout_at(deadline, feed.next())
            .await
            .unwrap_or_else(|_| panic!("the feed did not name every change: {seen:?}"))
            .expect("the feed ended")
            .expect("the feed broke");
        match item {
            FeedItem::Changed(change) => {
                assert_ne!(
                    change,
                    Change::User(o),
                    "a change from before the feed caught up"
                );
                assert_ne!(change, Change::Reset);
                seen.push(change);
            }
            FeedItem::CaughtUp(_) if all_seen(&seen) => break,
            FeedItem::CaughtUp(_) => {}
        }
    }
}
