//! Generates the golden vectors in `tests/vectors/` from fixed inputs and checks the checked-in
//! files against them, byte for byte: `sealed-room-key-v1.json` (sealed room keys, format
//! version 1) and `rekey-manifest-v2.json` (rekey manifests and member parts, format version 2).
//!
//! Set `UNIBUS_UPDATE_VECTORS=1` to rewrite the files after a deliberate format change (which
//! also needs a new format version). `tests/golden_vectors.rs` checks the files the way a foreign
//! client would, through the public API only.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::manifest::{Recipient, SignedManifest};
use crate::sealing::{seal_with_ephemeral_ikm, RoomKey, SealBinding};
use crate::{hex, Identity, RoomId};

const SEALED_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/sealed-room-key-v1.json"
);
const MANIFEST_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/rekey-manifest-v2.json"
);

/// 32 deterministic bytes for a label.
fn fixed(label: &str) -> [u8; 32] {
    Sha256::digest(format!("unibus golden vector: {label}").as_bytes()).into()
}

fn identity(label: &str) -> Identity {
    Identity::from_parts(
        &fixed(&format!("{label} sign")),
        &fixed(&format!("{label} kex")),
    )
    .expect("fixed seeds give usable keys")
}

fn sealed_case(room: &str, epoch: u64, label: &str) -> Value {
    let recipient = identity(&format!("{label} recipient"));
    let rekeyer = identity(&format!("{label} rekeyer"));
    let room_key = RoomKey::from_bytes(fixed(&format!("{label} room key")));
    let ikm = fixed(&format!("{label} ephemeral"));
    let room_id = RoomId::new(room).unwrap();
    let binding = SealBinding {
        room: &room_id,
        epoch,
        recipient: &recipient.kex_public_key(),
        rekeyer: &rekeyer.sign_public_key(),
    };
    let sealed = seal_with_ephemeral_ikm(&room_key, &binding, &ikm).unwrap();
    json!({
        "room": room,
        "epoch": epoch,
        "recipient_kex_secret": hex::encode(&fixed(&format!("{label} recipient kex"))),
        "recipient_kex_public": recipient.kex_public_key().to_hex(),
        "rekeyer_sign_seed": hex::encode(&fixed(&format!("{label} rekeyer sign"))),
        "rekeyer_sign_public": rekeyer.sign_public_key().to_hex(),
        "room_key": hex::encode(room_key.expose_secret()),
        "ephemeral_ikm": hex::encode(&ikm),
        "info": hex::encode(&binding.info()),
        "sealed": hex::encode(&sealed.to_bytes()),
    })
}

fn manifest_case(room: &str, epoch: u64, previous_epoch: u64, members: usize) -> Value {
    let label = format!("manifest {room} {epoch}");
    let rekeyer = identity(&format!("{label} rekeyer"));
    let room_key = RoomKey::from_bytes(fixed(&format!("{label} room key")));
    let room_id = RoomId::new(room).unwrap();
    let people: Vec<(String, Identity)> = (0..members)
        .map(|i| {
            let name = format!("{label} member {i}");
            let id = identity(&name);
            (name, id)
        })
        .collect();
    let recipients: Vec<Recipient> = people.iter().map(|(_, id)| Recipient::of(id)).collect();
    // Each member's ephemeral IKM is fixed by the recipient key the copy is sealed to.
    let ikm_for = |kex: &crate::KexPublicKey| {
        let (name, _) = people
            .iter()
            .find(|(_, id)| &id.kex_public_key() == kex)
            .expect("sealing only for listed members");
        fixed(&format!("{name} ephemeral"))
    };
    let signed = SignedManifest::rekey_with(
        &rekeyer,
        &room_id,
        epoch,
        previous_epoch,
        &room_key,
        &recipients,
        |key, binding| seal_with_ephemeral_ikm(key, binding, &ikm_for(binding.recipient)),
    )
    .unwrap();
    let contents = signed.unverified();
    let tree = signed.merkle_tree();
    json!({
        "room": room,
        "epoch": epoch,
        "previous_epoch": previous_epoch,
        "rekeyer_sign_seed": hex::encode(&fixed(&format!("{label} rekeyer sign"))),
        "rekeyer_sign_public": rekeyer.sign_public_key().to_hex(),
        "room_key": hex::encode(room_key.expose_secret()),
        "members": people.iter().map(|(name, id)| json!({
            "sign_seed": hex::encode(&fixed(&format!("{name} sign"))),
            "kex_secret": hex::encode(&fixed(&format!("{name} kex"))),
            "sign_public": id.sign_public_key().to_hex(),
            "kex_public": id.kex_public_key().to_hex(),
            "ephemeral_ikm": hex::encode(&fixed(&format!("{name} ephemeral"))),
        })).collect::<Vec<_>>(),
        "leaf_hashes": contents.leaf_hashes().iter().map(|h| hex::encode(h)).collect::<Vec<_>>(),
        "merkle_root": hex::encode(&tree.root()),
        "header": hex::encode(&signed.header().to_bytes()),
        "signed_manifest": hex::encode(&signed.to_bytes()),
        "member_parts": signed.member_parts().map(|part| json!({
            "sign_public": part.unverified_entry().member.to_hex(),
            "index": part.index(),
            "proof": part.proof().iter().map(|h| hex::encode(h)).collect::<Vec<_>>(),
            "member_part": hex::encode(&part.to_bytes()),
        })).collect::<Vec<_>>(),
    })
}

fn sealed_vectors() -> Value {
    json!({
        "description": "unibus sealed room keys, format version 1. \
            HPKE RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / \
            ChaCha20-Poly1305. The ephemeral key is DeriveKeyPair(ephemeral_ikm). \
            All byte strings are lowercase hex. See docs/protocol.md sections 7 and 9.",
        "suite": { "mode": 0, "kem_id": 32, "kdf_id": 1, "aead_id": 3 },
        "sealed_room_keys": [
            sealed_case("general", 1, "a"),
            sealed_case("design-team_2", 4_294_967_297, "b"),
            sealed_case(&"R".repeat(crate::room::ROOM_ID_MAX_LEN), 0, "c"),
        ],
    })
}

fn manifest_vectors() -> Value {
    json!({
        "description": "unibus rekey manifests and member parts, format version 2: a signed \
            header committing to the entries through an RFC 9162 Merkle tree (SHA-256), each \
            entry holding a sealed room key of format version 1 (HPKE RFC 9180 base mode, \
            DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305, the ephemeral key \
            DeriveKeyPair(ephemeral_ikm)). All byte strings are lowercase hex. \
            See docs/protocol.md sections 8 and 9.",
        "suite": { "mode": 0, "kem_id": 32, "kdf_id": 1, "aead_id": 3 },
        "manifests": [
            manifest_case("general", 1, 0, 1),
            manifest_case("general", 2, 1, 3),
            manifest_case("general", 3, 2, 5),
            manifest_case("design-team_2", 4_294_967_297, 3, 7),
        ],
    })
}

/// Rewrites `path` with `fresh` if asked to, then compares the two as parsed JSON.
fn check(path: &str, fresh: Value) {
    if std::env::var_os("UNIBUS_UPDATE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&fresh).unwrap() + "\n";
        std::fs::write(path, text).unwrap();
    }
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")),
    )
    .unwrap();
    assert_eq!(
        stored, fresh,
        "golden vectors in {path} changed: a wire-format change needs a new version"
    );
}

#[test]
fn checked_in_sealed_key_vectors_match_a_fresh_generation() {
    check(SEALED_PATH, sealed_vectors());
}

#[test]
fn checked_in_manifest_vectors_match_a_fresh_generation() {
    check(MANIFEST_PATH, manifest_vectors());
}
