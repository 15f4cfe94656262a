//! Change notifications (protocol §12.6), published to `unibus.events.<member hex>.room`, and
//! account notices (protocol §12.6), published to `unibus.events.<hex>.account`.

use serde::{Deserialize, Serialize};

use crate::RoomId;

/// A change that concerns one member, tagged by `kind`. Kinds this version does not know read
/// as [`Notification::Unknown`], which clients skip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Notification {
    /// The member was added to `room`.
    Added {
        /// The room.
        room: RoomId,
    },
    /// The member was removed from `room`.
    Removed {
        /// The room.
        room: RoomId,
    },
    /// `room` has a new epoch, sealed to the member.
    Epoch {
        /// The room.
        room: RoomId,
        /// The new epoch.
        epoch: u64,
    },
    /// The room's owner shared the keys of earlier `epochs` of `room` with the member
    /// (history shares, protocol §16): its messages of those epochs can now be read.
    Shared {
        /// The room.
        room: RoomId,
        /// The epochs shared, ascending, each once.
        epochs: Vec<u64>,
    },
    /// A kind this version does not know.
    #[serde(other)]
    Unknown,
}

impl Notification {
    /// The NATS subject suffix notifications are published on, after `unibus.events.<hex>`.
    pub const SUBJECT_SUFFIX: &'static str = "room";

    /// The notification's JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings and numbers only: serializing cannot fail.
        serde_json::to_vec(self).expect("notifications serialize to JSON")
    }
}

/// A notice about the user's own account, tagged by `kind`: membershipd publishes it before it
/// disconnects the user's sessions, so that a client learns why from membershipd itself and
/// never has to guess from refused logins. Kinds this version does not know read as
/// [`AccountNotice::Unknown`], which clients skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AccountNotice {
    /// The user was revoked or deleted: its sessions are over and its logins will be refused.
    Revoked,
    /// A kind this version does not know.
    #[serde(other)]
    Unknown,
}

impl AccountNotice {
    /// The NATS subject suffix account notices are published on, after `unibus.events.<hex>`.
    pub const SUBJECT_SUFFIX: &'static str = "account";

    /// The notice's JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A tag only: serializing cannot fail.
        serde_json::to_vec(self).expect("account notices serialize to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_unknown_kinds_read_as_unknown() {
        let room = RoomId::new("general").unwrap();
        for notification in [
            Notification::Added { room: room.clone() },
            Notification::Removed { room: room.clone() },
            Notification::Epoch {
                room: room.clone(),
                epoch: 7,
            },
            Notification::Shared {
                room: room.clone(),
                epochs: vec![1, 2],
            },
        ] {
            let bytes = notification.to_bytes();
            assert_eq!(
                serde_json::from_slice::<Notification>(&bytes).unwrap(),
                notification
            );
        }
        assert_eq!(
            serde_json::to_value(Notification::Epoch {
                room: room.clone(),
                epoch: 7
            })
            .unwrap(),
            serde_json::json!({"kind": "epoch", "room": "general", "epoch": 7})
        );
        assert_eq!(
            serde_json::to_value(Notification::Shared {
                room,
                epochs: vec![1, 3]
            })
            .unwrap(),
            serde_json::json!({"kind": "shared", "room": "general", "epochs": [1, 3]})
        );
        let unknown: Notification =
            serde_json::from_slice(br#"{"kind":"renamed","room":"general"}"#).unwrap();
        assert_eq!(unknown, Notification::Unknown);
        assert!(
            serde_json::from_slice::<Notification>(br#"{"kind":"epoch","room":"general"}"#)
                .is_err()
        );
    }

    #[test]
    fn account_notices_are_tagged_and_unknown_kinds_read_as_unknown() {
        assert_eq!(
            AccountNotice::Revoked.to_bytes(),
            br#"{"kind":"revoked"}"#.to_vec()
        );
        let unknown: AccountNotice = serde_json::from_slice(br#"{"kind":"frozen"}"#).unwrap();
        assert_eq!(unknown, AccountNotice::Unknown);
    }
}
