//! Checks `tests/vectors/sealed-room-key-v1.json` the way a client on another platform would:
//! only through the public API, from the published inputs.

use serde::Deserialize;
use unibus::manifest::SignedManifest;
use unibus::sealing::{open_room_key, SealBinding, SealedRoomKey};
use unibus::{Identity, KexPublicKey, RoomId, SignPublicKey};

#[derive(Deserialize)]
struct Vectors {
    sealed_room_keys: Vec<SealedCase>,
    manifests: Vec<ManifestCase>,
}

#[derive(Deserialize)]
struct SealedCase {
    room: String,
    epoch: u64,
    recipient_kex_secret: String,
    recipient_kex_public: String,
    rekeyer_sign_seed: String,
    rekeyer_sign_public: String,
    room_key: String,
    info: String,
    sealed: String,
}

#[derive(Deserialize)]
struct ManifestCase {
    room: String,
    epoch: u64,
    previous_epoch: u64,
    rekeyer_sign_public: String,
    room_key: String,
    members: Vec<Member>,
    signed_manifest: String,
}

#[derive(Deserialize)]
struct Member {
    sign_seed: String,
    kex_secret: String,
    sign_public: String,
    kex_public: String,
}

fn load() -> Vectors {
    let text = include_str!("vectors/sealed-room-key-v1.json");
    serde_json::from_str(text).expect("vector file parses")
}

fn bytes32(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

#[test]
fn every_sealed_vector_opens_to_its_room_key_with_the_published_info() {
    let vectors = load();
    assert!(vectors.sealed_room_keys.len() >= 3);
    for case in vectors.sealed_room_keys {
        // Only the x25519 secret matters for opening; the signing half is arbitrary here.
        let recipient =
            Identity::from_parts(&[1; 32], &bytes32(&case.recipient_kex_secret)).unwrap();
        assert_eq!(
            recipient.kex_public_key().to_hex(),
            case.recipient_kex_public
        );
        let rekeyer = Identity::from_parts(&bytes32(&case.rekeyer_sign_seed), &[2; 32]).unwrap();
        assert_eq!(rekeyer.sign_public_key().to_hex(), case.rekeyer_sign_public);

        let room = RoomId::new(&case.room).unwrap();
        let binding = SealBinding {
            room: &room,
            epoch: case.epoch,
            recipient: &KexPublicKey::from_hex(&case.recipient_kex_public).unwrap(),
            rekeyer: &rekeyer.sign_public_key(),
        };
        assert_eq!(
            hex::encode(binding.info()),
            case.info,
            "info layout of {}",
            case.room
        );

        let sealed = SealedRoomKey::from_bytes(&hex::decode(&case.sealed).unwrap()).unwrap();
        let key = open_room_key(
            &recipient,
            &sealed,
            &room,
            case.epoch,
            &rekeyer.sign_public_key(),
        )
        .unwrap();
        assert_eq!(hex::encode(key.expose_secret()), case.room_key);
        assert!(
            open_room_key(
                &recipient,
                &sealed,
                &room,
                case.epoch ^ 1,
                &rekeyer.sign_public_key()
            )
            .is_err(),
            "a vector must not open for another epoch"
        );
    }
}

#[test]
fn every_manifest_vector_verifies_and_opens_for_each_member() {
    for case in load().manifests {
        let bytes = hex::decode(&case.signed_manifest).unwrap();
        let signed = SignedManifest::from_bytes(&bytes).unwrap();
        assert_eq!(
            signed.to_bytes(),
            bytes,
            "decoding then encoding is the identity"
        );
        let room = RoomId::new(&case.room).unwrap();
        let owner = SignPublicKey::from_hex(&case.rekeyer_sign_public).unwrap();
        let manifest = signed.verify(&room, case.epoch, &owner).unwrap();
        assert_eq!(manifest.previous_epoch, case.previous_epoch);
        assert_eq!(manifest.entries.len(), case.members.len());
        for member in &case.members {
            let id =
                Identity::from_parts(&bytes32(&member.sign_seed), &bytes32(&member.kex_secret))
                    .unwrap();
            assert_eq!(id.sign_public_key().to_hex(), member.sign_public);
            assert_eq!(id.kex_public_key().to_hex(), member.kex_public);
            let key = signed.open(&id, &room, case.epoch, &owner).unwrap();
            assert_eq!(hex::encode(key.expose_secret()), case.room_key);
        }
    }
}
