//! `share_history` (protocol §16.5): the owner stores history shares of earlier epochs for
//! current members, and `key` serves a member the share of an epoch it was not a recipient of.
//!
//! The server cannot open a share and does not need to: it checks that the owner made it for a
//! stored epoch of the room and for a current member with that member's registered key, so that
//! nothing it serves was forged by another user. Each member that got shares is then told
//! which epochs (a `shared` notification, §12.6). Members still verify every share themselves
//! (§16.3) against the owner key they pinned.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use unibus::history::HistoryShare;
use unibus::protocol::codes::RefusalCode;
use unibus::protocol::control::{Empty, ShareHistoryRequest, MAX_SHARES_PER_REQUEST};
use unibus::protocol::events::Notification;
use unibus::{RoomId, SignPublicKey};

use super::{refused, store_refusal, ControlPlane, Notices, Outcome};
use crate::store::{StoreError, StoredShare};

impl ControlPlane {
    /// Checks every share of the request (§16.5) and stores them all, or refuses and stores
    /// none.
    pub(super) async fn share_history(
        &self,
        caller: &SignPublicKey,
        request: ShareHistoryRequest,
        notices: &mut Notices,
    ) -> Outcome<Empty> {
        let count = request.shares.len();
        if count == 0 || count > MAX_SHARES_PER_REQUEST {
            return Err(refused(
                RefusalCode::BadRequest,
                format!("send 1 to {MAX_SHARES_PER_REQUEST} shares at once, not {count}"),
            ));
        }
        let room = &request.room;
        self.owned_room(room, caller).await?;
        let bad =
            |i: usize, why: String| refused(RefusalCode::BadShare, format!("share {i}: {why}"));
        let mut shares = Vec::with_capacity(count);
        // The stored head of each epoch the shares name, read once.
        let mut heads: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for (i, text) in request.shares.iter().enumerate() {
            let bytes = hex::decode(text).map_err(|e| bad(i, format!("not hex: {e}")))?;
            let share = HistoryShare::from_bytes(&bytes).map_err(|e| bad(i, e.to_string()))?;
            let header = share
                .verify_signatures()
                .map_err(|e| bad(i, e.to_string()))?;
            if &header.rekeyer != caller {
                return Err(bad(i, "it is not signed by the caller".into()));
            }
            if &header.room != room {
                return Err(bad(i, format!("it is for room {}", header.room)));
            }
            let epoch = header.epoch;
            if let Entry::Vacant(slot) = heads.entry(epoch) {
                slot.insert(self.stored_head(room, epoch, i).await?);
            }
            if heads.get(&epoch) != Some(&share.unverified_head().to_bytes()) {
                return Err(bad(
                    i,
                    format!("its header is not epoch {epoch}'s as stored"),
                ));
            }
            shares.push((share, bytes));
        }
        let members: BTreeSet<_> = self.active_members(room).await?;
        let mut stored = Vec::with_capacity(count);
        for (i, (share, bytes)) in shares.into_iter().enumerate() {
            let entry = share.unverified_entry();
            if !members.contains(&(entry.member, entry.recipient)) {
                return Err(refused(
                    RefusalCode::RecipientsMismatch,
                    format!(
                        "share {i}: its recipient is not a current member with its registered keys"
                    ),
                ));
            }
            stored.push(StoredShare {
                epoch: share.unverified_head().unverified_header().epoch,
                member: entry.member,
                share: bytes,
            });
        }
        self.store
            .put_history_shares(room, &stored)
            .await
            .map_err(store_refusal)?;
        // Each member is told which epochs it got, ascending, each once.
        let mut shared: BTreeMap<SignPublicKey, BTreeSet<u64>> = BTreeMap::new();
        for share in &stored {
            shared.entry(share.member).or_default().insert(share.epoch);
        }
        notices.extend(shared.into_iter().map(|(member, epochs)| {
            let event = Notification::Shared {
                room: room.clone(),
                epochs: epochs.into_iter().collect(),
            };
            (member, event)
        }));
        Ok(Empty {})
    }

    /// The stored signed head of `epoch` of `room`; a share of an epoch the room does not
    /// have is `bad_share`.
    async fn stored_head(&self, room: &RoomId, epoch: u64, i: usize) -> Outcome<Vec<u8>> {
        match self.store.epoch_head(room, epoch).await {
            Ok(head) => Ok(head),
            Err(StoreError::NotFound) => Err(refused(
                RefusalCode::BadShare,
                format!("share {i}: the room has no epoch {epoch}"),
            )),
            Err(e) => Err(store_refusal(e)),
        }
    }
}
