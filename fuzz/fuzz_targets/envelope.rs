//! Envelope decoding and opening: any bytes either decode or get a typed error, whatever decodes
//! keeps exactly the bytes it was given (one encoding per value), and opening it with a real
//! epoch key never panics and never succeeds for bytes its sender did not sign.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use unibus::envelope::{Envelope, EpochKey};
use unibus::manifest::{Recipient, SignedManifest};
use unibus::sealing::RoomKey;
use unibus::{Identity, RoomId};

/// A member's key of room `general` at epoch 1, made once per fuzzing process.
fn epoch_key() -> &'static EpochKey {
    static KEY: OnceLock<EpochKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let owner = Identity::from_parts(&[7; 32], &[8; 32]).expect("fixed keys");
        let room = RoomId::new("general").expect("a valid room id");
        let key = RoomKey::from_bytes([9; 32]);
        let manifest =
            SignedManifest::rekey(&owner, &room, 1, 0, &key, &[Recipient::of(&owner)])
                .expect("a one-member manifest");
        let part = manifest
            .member_part(&owner.sign_public_key())
            .expect("the owner is a member");
        EpochKey::open(&part, &owner, &room, 1, &owner.sign_public_key()).expect("opens")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::from_bytes(data) {
        assert_eq!(envelope.as_bytes(), data);
        assert!(envelope.header_bytes().len() < data.len());
        assert!(envelope.body_len() <= unibus::envelope::MAX_BODY_LEN);
        // Random bytes carry no valid signature by the epoch's only member.
        assert!(envelope.open(epoch_key()).is_err());
    }
});
