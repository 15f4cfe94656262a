//! The owner's side of history sharing (docs/client.md, "History policy"; protocol §16): the
//! room's policy, kept in the [`TrustStore`](super::TrustStore) on the owner's device, and the
//! history shares the owner's device seals and uploads. A member's side is in
//! [`Session::room_key`] and [`Session::messages`], which open a share the server sends for an
//! epoch the member was not a recipient of.

use super::error::SessionError;
use super::session::Session;
use super::trust::HistoryPolicy;
use crate::history::{history_share_len, HistoryShare};
use crate::manifest::{Recipient, SignedManifest};
use crate::protocol::control::{ShareHistoryRequest, MAX_SHARES_PER_REQUEST};
use crate::{RoomId, SignPublicKey};

impl Session {
    /// Sets the history policy of `room`, which this identity owns (the room's pinned owner;
    /// [`SessionError::NotOwner`] otherwise). It is kept on this device only, in the
    /// [`TrustStore`](super::TrustStore); nothing is sent. Under [`HistoryPolicy::Shared`],
    /// each member added with [`add_member`](Self::add_member) from now on gets the key of
    /// every earlier epoch, sealed to it at the room's next [`rekey`](Self::rekey).
    pub fn set_history_policy(
        &self,
        room: &RoomId,
        policy: HistoryPolicy,
    ) -> Result<(), SessionError> {
        let me = self.identity().sign_public_key();
        if self.trust().room(room).map(|trust| trust.owner) != Some(me) {
            return Err(SessionError::NotOwner);
        }
        self.trust().set_history_policy(room, policy)?;
        Ok(())
    }

    /// The history policy of `room` on this device ([`HistoryPolicy::Joined`] unless set).
    pub fn history_policy(&self, room: &RoomId) -> HistoryPolicy {
        self.trust().history_policy(room)
    }

    /// Shares the key of every epoch of `room` up to its latest with `member`, an active member
    /// ([`SessionError::InvalidArgument`] otherwise): seals each to the member's registered
    /// x25519 key, signs it (protocol §16) and uploads the shares in batches that fit in a
    /// message. Owner only, whatever the policy. Returns how many shares were uploaded. The
    /// server serves a share only for an epoch the member was not a recipient of; sending
    /// them again is safe.
    pub async fn share_history(
        &self,
        room: &RoomId,
        member: &SignPublicKey,
    ) -> Result<usize, SessionError> {
        let (members, latest) = tokio::join!(self.members(room), self.current_epoch(room));
        let (members, latest) = (members?, latest?);
        let recipient = members
            .into_iter()
            .find(|recipient| &recipient.member == member)
            .ok_or_else(|| {
                SessionError::InvalidArgument(format!(
                    "{member} is not an active member of room {room}"
                ))
            })?;
        self.share_epochs(room, &[recipient], latest).await
    }

    /// After this device rekeyed `room` from `previous` with `manifest`: shares epochs 1 to
    /// `previous` with the members added under [`HistoryPolicy::Shared`] since (the new
    /// manifest's recipients among them). The rekey stands whatever happens here: a failure is
    /// logged and those members stay pending for the next rekey.
    pub(super) async fn share_pending_history(
        &self,
        room: &RoomId,
        previous: u64,
        manifest: &SignedManifest,
    ) {
        let pending = self.trust().pending_history(room);
        if pending.is_empty() {
            return;
        }
        let newcomers: Vec<Recipient> = manifest
            .unverified()
            .entries
            .iter()
            .filter(|entry| pending.contains(&entry.member))
            .map(|entry| Recipient {
                member: entry.member,
                kex: entry.recipient,
            })
            .collect();
        // Members no longer in the room are dropped: adding them again makes them pending.
        let mut done: Vec<SignPublicKey> = pending
            .iter()
            .filter(|member| !newcomers.iter().any(|r| &r.member == *member))
            .copied()
            .collect();
        match self.share_epochs(room, &newcomers, previous).await {
            Ok(_) => done.extend(newcomers.iter().map(|r| r.member)),
            Err(error) => tracing::warn!(
                room = %room,
                %error,
                "sharing the room's history with its new members failed; the next rekey tries again"
            ),
        }
        if let Err(error) = self.trust().clear_pending_history(room, &done) {
            tracing::warn!(room = %room, %error, "the trust store could not record the shared history");
        }
    }

    /// Seals epochs 1 to `through` of `room` (those this identity can open) to each of
    /// `recipients` and uploads the shares, in batches that fit in a message.
    async fn share_epochs(
        &self,
        room: &RoomId,
        recipients: &[Recipient],
        through: u64,
    ) -> Result<usize, SessionError> {
        if recipients.is_empty() {
            return Ok(0);
        }
        // Each share travels as hex in a JSON string, with its quotes and comma.
        let share_text = 2 * history_share_len(room.as_str().len()) + 3;
        let room_for_shares = self
            .request_limit()
            .saturating_sub(256 + room.as_str().len());
        let batch = (room_for_shares / share_text).clamp(1, MAX_SHARES_PER_REQUEST);
        let mut pending: Vec<String> = Vec::with_capacity(batch);
        let mut uploaded = 0;
        for epoch in 1..=through {
            let key = match self.epoch_key(room, Some(epoch)).await {
                Ok(key) => key,
                // An epoch this identity holds no key of has nothing to share.
                Err(SessionError::NoKey) => continue,
                Err(error) => return Err(error),
            };
            for recipient in recipients {
                let share =
                    HistoryShare::seal(self.identity(), key.head(), key.room_key(), recipient)?;
                pending.push(crate::hex::encode(&share.to_bytes()));
                if pending.len() == batch {
                    uploaded += self.upload_shares(room, &mut pending).await?;
                }
            }
        }
        if !pending.is_empty() {
            uploaded += self.upload_shares(room, &mut pending).await?;
        }
        Ok(uploaded)
    }

    /// Sends `shares` (hex) with `share_history`, and empties it.
    async fn upload_shares(
        &self,
        room: &RoomId,
        shares: &mut Vec<String>,
    ) -> Result<usize, SessionError> {
        let request = ShareHistoryRequest {
            room: room.clone(),
            shares: std::mem::take(shares),
        };
        self.call(&request).await?;
        Ok(request.shares.len())
    }
}
