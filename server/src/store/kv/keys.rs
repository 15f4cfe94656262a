//! The one definition of every key the buckets hold (the table in the [module documentation]
//! (super)). Room ids and hex keys contain no `.`, so each part of a key is one NATS subject
//! token, and a listing filters on a prefix of tokens.

use unibus::{RoomId, SignPublicKey};

/// `UNIBUS_members`: that `member` is in `room`.
pub(super) fn membership(room: &RoomId, member: &SignPublicKey) -> String {
    format!("{room}.{member}")
}

/// `UNIBUS_members`: the filter for every member of `room`.
pub(super) fn members_of(room: &RoomId) -> String {
    format!("{room}.*")
}

/// The member a key listed by [`members_of`] names.
pub(super) fn member_in<'k>(room: &RoomId, key: &'k str) -> &'k str {
    key.strip_prefix(room.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(key)
}

/// `UNIBUS_rooms_by_member`: the reverse index entry of `member` in `room`.
pub(super) fn room_of(member: &SignPublicKey, room: &RoomId) -> String {
    format!("{member}.{room}")
}

/// `UNIBUS_rooms_by_member`: the filter for every room of `member`.
pub(super) fn rooms_of(member: &SignPublicKey) -> String {
    format!("{member}.*")
}

/// The room a key listed by [`rooms_of`] names.
pub(super) fn room_in<'k>(member: &SignPublicKey, key: &'k str) -> &'k str {
    key.strip_prefix(&format!("{member}.")).unwrap_or(key)
}

/// `UNIBUS_room_keys`: the marker that `epoch` of `room` committed, holding the digest of the
/// epoch's head. Create-only.
pub(super) fn epoch_marker(room: &RoomId, epoch: u64) -> String {
    format!("e.{room}.{epoch}")
}

/// `UNIBUS_room_keys`: the filter for every epoch marker of `room`.
pub(super) fn epoch_markers(room: &RoomId) -> String {
    format!("e.{room}.*")
}

/// The epoch a key listed by [`epoch_markers`] names.
pub(super) fn epoch_in(key: &str) -> Option<u64> {
    key.rsplit('.').next()?.parse().ok()
}

/// `UNIBUS_room_keys`: the signed head (header and signature) of `epoch` of `room` with this
/// digest.
pub(super) fn head(room: &RoomId, epoch: u64, digest: &str) -> String {
    format!("f.{room}.{epoch}.{digest}")
}

/// `UNIBUS_room_keys`: the index of the tail groups of the epoch with this digest: the first
/// member key of every group (see `groups`).
pub(super) fn tail_index(room: &RoomId, epoch: u64, digest: &str) -> String {
    format!("i.{room}.{epoch}.{digest}")
}

/// `UNIBUS_room_keys`: group `n` of the members' tails (index, entry, audit path) of the epoch
/// with this digest.
pub(super) fn tail_group(room: &RoomId, epoch: u64, digest: &str, n: usize) -> String {
    format!("k.{room}.{epoch}.{digest}.{n}")
}

/// `UNIBUS_room_keys`: the history share of `epoch` of `room` for `member`.
pub(super) fn history_share(room: &RoomId, epoch: u64, member: &SignPublicKey) -> String {
    format!("h.{room}.{epoch}.{member}")
}

/// `UNIBUS_room_keys`: the filter for every history share of `room`.
pub(super) fn history_shares_in(room: &RoomId) -> String {
    format!("h.{room}.*.*")
}

/// The epoch and member a key listed by [`history_shares_in`] names.
pub(super) fn history_share_of(key: &str) -> Option<(u64, SignPublicKey)> {
    let mut tokens = key.rsplit('.');
    let member = SignPublicKey::from_hex(tokens.next()?).ok()?;
    let epoch = tokens.next()?.parse().ok()?;
    Some((epoch, member))
}

/// `UNIBUS_room_keys`: the filter for every history share sealed to `member`, in any room.
pub(super) fn history_shares_of(member: &SignPublicKey) -> String {
    format!("h.*.*.{member}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_give_back_their_last_part() {
        let room = RoomId::new("general").unwrap();
        let member = unibus::Identity::generate().unwrap().sign_public_key();
        assert_eq!(
            member_in(&room, &membership(&room, &member)),
            member.to_hex()
        );
        assert_eq!(room_in(&member, &room_of(&member, &room)), "general");
        assert_eq!(epoch_in(&epoch_marker(&room, 42)), Some(42));
        assert_eq!(epoch_in("e.general.x"), None);
    }
}
