//! Generates the golden vectors in `tests/vectors/` from fixed inputs and checks the checked-in
//! files against them, byte for byte: `sealed-room-key-v1.json` (sealed room keys, format
//! version 1), `rekey-manifest-v2.json` (rekey manifests and member parts, format version 2) and
//! `message-envelope-v1.json` (message envelopes, format version 1).
//!
//! Set `UNIBUS_UPDATE_VECTORS=1` to rewrite the files after a deliberate format change (which
//! also needs a new format version). `tests/golden_vectors.rs` checks the files the way a foreign
//! client would, through the public API only.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::envelope::{self, ContentType, Envelope, EpochKey, MessageId};
use crate::history::{self, HistoryShare};
use crate::manifest::{Recipient, SignedHead, SignedManifest};
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
const ENVELOPE_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/message-envelope-v1.json"
);
const HISTORY_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/history-share-v1.json"
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

/// A manifest built from fixed inputs: its rekeyer, room key and members (with the label each
/// member's inputs derive from), and the signed manifest.
struct FixedManifest {
    label: String,
    rekeyer: Identity,
    room_key: RoomKey,
    people: Vec<(String, Identity)>,
    signed: SignedManifest,
}

fn fixed_manifest(room: &str, epoch: u64, previous_epoch: u64, members: usize) -> FixedManifest {
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
        &|_| true,
    )
    .unwrap();
    FixedManifest {
        label,
        rekeyer,
        room_key,
        people,
        signed,
    }
}

fn manifest_case(room: &str, epoch: u64, previous_epoch: u64, members: usize) -> Value {
    let FixedManifest {
        label,
        rekeyer,
        room_key,
        people,
        signed,
    } = fixed_manifest(room, epoch, previous_epoch, members);
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

/// One member's opened key of a fixed manifest's epoch.
fn epoch_key(manifest: &FixedManifest, member: usize) -> EpochKey {
    let (_, who) = &manifest.people[member];
    let header = manifest.signed.header();
    let part = manifest.signed.member_part(&who.sign_public_key()).unwrap();
    EpochKey::open(
        &part,
        who,
        &header.room,
        header.epoch,
        &manifest.rekeyer.sign_public_key(),
    )
    .unwrap()
}

/// A member's secrets and part, as a case lists them.
fn member_json(manifest: &FixedManifest, member: usize) -> Value {
    let (name, who) = &manifest.people[member];
    let part = manifest.signed.member_part(&who.sign_public_key()).unwrap();
    json!({
        "sign_seed": hex::encode(&fixed(&format!("{name} sign"))),
        "kex_secret": hex::encode(&fixed(&format!("{name} kex"))),
        "sign_public": who.sign_public_key().to_hex(),
        "member_part": hex::encode(&part.to_bytes()),
    })
}

/// A message sealed by member `sender` of a fixed manifest, to be opened by member `receiver`.
struct EnvelopeInputs<'a> {
    manifest: &'a FixedManifest,
    sender: usize,
    receiver: usize,
    content_type: &'a str,
    body: Vec<u8>,
    sent_at: u64,
}

fn sealed_envelope(inputs: &EnvelopeInputs<'_>) -> (MessageId, Envelope) {
    let sender_key = epoch_key(inputs.manifest, inputs.sender);
    let (name, sender) = &inputs.manifest.people[inputs.sender];
    let id = MessageId::from_bytes(
        fixed(&format!("{name} message id"))[..16]
            .try_into()
            .unwrap(),
    );
    let envelope = Envelope::seal_with_id(
        sender,
        &sender_key,
        id,
        &ContentType::new(inputs.content_type).unwrap(),
        &inputs.body,
        inputs.sent_at,
    )
    .unwrap();
    (id, envelope)
}

fn envelope_case(inputs: &EnvelopeInputs<'_>) -> Value {
    let manifest = inputs.manifest;
    let header = manifest.signed.header();
    let (id, envelope) = sealed_envelope(inputs);
    let (_, sender) = &manifest.people[inputs.sender];
    let sender_key = epoch_key(manifest, inputs.sender);
    let (key, nonce) = envelope::message_key(
        &manifest.room_key,
        &header.room,
        header.epoch,
        &sender.sign_public_key(),
        &id,
    );
    let wire = envelope.as_bytes();
    let header_len = envelope.header_bytes().len();
    let signature_at = wire.len() - crate::keys::SIGNATURE_LEN;
    let receiver_key = epoch_key(manifest, inputs.receiver);
    assert_eq!(
        envelope.open(&receiver_key).unwrap().body(),
        &inputs.body[..]
    );
    json!({
        "room": header.room.as_str(),
        "epoch": header.epoch,
        "rekeyer_sign_public": manifest.rekeyer.sign_public_key().to_hex(),
        "room_key": hex::encode(manifest.room_key.expose_secret()),
        "signed_head": hex::encode(&manifest.signed.head().to_bytes()),
        "sender": member_json(manifest, inputs.sender),
        "receiver": member_json(manifest, inputs.receiver),
        "sender_index": sender_key.index().expect("a member's own key"),
        "sender_entry": hex::encode(&sender_key.entry().expect("a member's own key").to_bytes()),
        "sender_proof": sender_key.proof().expect("a member's own key").iter().map(|h| hex::encode(h)).collect::<Vec<_>>(),
        "message_id": id.to_hex(),
        "sent_at": inputs.sent_at,
        "content_type": inputs.content_type,
        "body": hex::encode(&inputs.body),
        "key_info": hex::encode(&envelope::key_info(&header.room, header.epoch, &sender.sign_public_key())),
        "message_key": hex::encode(key.as_ref()),
        "nonce": hex::encode(&nonce),
        "header": hex::encode(envelope.header_bytes()),
        "ciphertext": hex::encode(&wire[header_len..signature_at]),
        "signature": hex::encode(&wire[signature_at..]),
        "envelope": hex::encode(wire),
    })
}

/// The framing errors every versioned wire form has: another version byte (2), its last byte
/// cut off, a byte appended.
fn framing_cases(wire: &[u8]) -> [(&'static str, Vec<u8>, &'static str); 3] {
    [
        (
            "version 2",
            [&[2u8][..], &wire[1..]].concat(),
            "UnsupportedVersion",
        ),
        (
            "the last byte cut off",
            wire[..wire.len() - 1].to_vec(),
            "Truncated",
        ),
        ("a byte appended", [wire, &[0]].concat(), "TrailingBytes"),
    ]
}

/// Envelopes that the first case's receiver must refuse, each with the error it gets.
fn invalid_envelopes(inputs: &EnvelopeInputs<'_>) -> Vec<Value> {
    let manifest = inputs.manifest;
    let (_, envelope) = sealed_envelope(inputs);
    let wire = envelope.as_bytes().to_vec();
    let header_len = envelope.header_bytes().len();
    let signature_at = wire.len() - crate::keys::SIGNATURE_LEN;
    let receiver_key = epoch_key(manifest, inputs.receiver);
    let room_len = envelope.room().as_str().len();
    let bent = |at: usize| {
        let mut bytes = wire.clone();
        bytes[at] ^= 0x01;
        bytes
    };
    // Re-signs everything before the signature with `who`, after `change`.
    let resigned = |who: &Identity, change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = wire[..signature_at].to_vec();
        change(&mut bytes);
        let mut message = envelope::SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(&bytes);
        bytes.extend_from_slice(&who.sign(&message).to_bytes());
        bytes
    };
    let outsider = identity("envelope outsider");
    let proof_len = epoch_key(manifest, inputs.sender)
        .proof()
        .expect("a member's own key")
        .len();
    let entry_at = header_len - 4 - 1 - 32 * proof_len - crate::manifest::ENTRY_LEN;
    let mut cases = vec![
        (
            "a ciphertext byte flipped",
            bent(header_len),
            "BadSignature",
        ),
        (
            "a signature byte flipped",
            bent(signature_at + 1),
            "BadSignature",
        ),
        (
            "a message id byte flipped",
            bent(3 + room_len + 8),
            "BadSignature",
        ),
        (
            "a content type byte flipped",
            bent(3 + room_len + 8 + 16 + 8 + 1),
            "BadSignature",
        ),
        (
            "a proof hash byte flipped",
            bent(header_len - 5),
            "NotAMember",
        ),
        (
            "the epoch changed to 2",
            {
                let mut bytes = wire.clone();
                bytes[3 + room_len + 7] = 2;
                bytes
            },
            "WrongEpoch",
        ),
    ];
    cases.extend(framing_cases(&wire));
    cases.extend([
        (
            "a body length of 65537",
            {
                let mut bytes = wire.clone();
                bytes[header_len - 4..header_len].copy_from_slice(&65_537u32.to_be_bytes());
                bytes
            },
            "BodyTooLarge",
        ),
        (
            "an outsider's entry in place of the sender's, signed by the outsider",
            resigned(&outsider, &|bytes: &mut Vec<u8>| {
                bytes[entry_at..entry_at + 32]
                    .copy_from_slice(outsider.sign_public_key().as_bytes());
                bytes[entry_at + 32..entry_at + 64]
                    .copy_from_slice(outsider.kex_public_key().as_bytes());
            }),
            "NotAMember",
        ),
    ]);
    // A body encrypted under another key, signed by the sender: the signature verifies and the
    // body does not decrypt.
    let (name, sender) = &manifest.people[inputs.sender];
    let mut wrong = epoch_key(manifest, inputs.sender);
    wrong.set_room_key(RoomKey::from_bytes(fixed(&format!(
        "{name} wrong room key"
    ))));
    let under_wrong_key = Envelope::seal_with_id(
        sender,
        &wrong,
        *envelope.id(),
        envelope.content_type(),
        &inputs.body,
        inputs.sent_at,
    )
    .unwrap();
    cases.push((
        "the body encrypted under another room key, signed by the sender",
        under_wrong_key.to_bytes(),
        "DecryptFailed",
    ));
    cases
        .into_iter()
        .map(|(description, bytes, error)| {
            let refused = Envelope::from_bytes(&bytes).and_then(|e| e.open(&receiver_key));
            let found = format!("{:?}", refused.expect_err(description));
            assert!(found.starts_with(error), "{description}: {found}");
            json!({ "description": description, "envelope": hex::encode(&bytes), "error": error })
        })
        .collect()
}

fn envelope_vectors() -> Value {
    let three = fixed_manifest("general", 1, 0, 3);
    let five = fixed_manifest("design-team_2", 4_294_967_297, 3, 5);
    let longest = fixed_manifest(
        &"R".repeat(crate::room::ROOM_ID_MAX_LEN),
        crate::manifest::MAX_EPOCH,
        0,
        1,
    );
    let first = EnvelopeInputs {
        manifest: &three,
        sender: 0,
        receiver: 2,
        content_type: "text/plain; charset=utf-8",
        body: b"hello, room".to_vec(),
        sent_at: 1_700_000_000_123,
    };
    // The sender whose entry is the last leaf of five: its path is one hash.
    let last_leaf = {
        let last = five.signed.unverified().entries.last().unwrap().member;
        five.people
            .iter()
            .position(|(_, id)| id.sign_public_key() == last)
            .unwrap()
    };
    json!({
        "description": "unibus message envelopes, format version 1: ChaCha20-Poly1305 under a \
            key and nonce from HKDF-SHA256 (salt the message id, ikm the room key), the header \
            as associated data, an Ed25519 signature over \"unibus/message/v1\" || header || \
            ciphertext, and the sender's manifest entry and audit path (RFC 9162, SHA-256) in \
            the header. All byte strings are lowercase hex. See docs/protocol.md sections 14 \
            and 9.",
        "envelopes": [
            envelope_case(&first),
            envelope_case(&EnvelopeInputs {
                manifest: &five,
                sender: last_leaf,
                receiver: (last_leaf + 1) % 5,
                content_type: "application/octet-stream",
                body: Vec::new(),
                sent_at: 0,
            }),
            envelope_case(&EnvelopeInputs {
                manifest: &longest,
                sender: 0,
                receiver: 0,
                content_type: "application/vnd.example.bytes",
                body: (0..=255u8).cycle().take(300).collect(),
                sent_at: envelope::MAX_SENT_AT,
            }),
        ],
        "invalid": invalid_envelopes(&first),
    })
}

/// A history share of a fixed manifest's epoch for a newcomer who is not in it, sealed with a
/// fixed ephemeral key.
fn fixed_share(manifest: &FixedManifest, head: &SignedHead, newcomer: &Recipient) -> HistoryShare {
    HistoryShare::seal_with(
        &manifest.rekeyer,
        head,
        &manifest.room_key,
        newcomer,
        |key, binding| {
            seal_with_ephemeral_ikm(
                key,
                binding,
                &fixed(&format!("{} share ephemeral", manifest.label)),
            )
        },
    )
    .unwrap()
}

fn newcomer(manifest: &FixedManifest) -> (String, Identity) {
    let name = format!("{} newcomer", manifest.label);
    let id = identity(&name);
    (name, id)
}

fn history_case(manifest: &FixedManifest) -> Value {
    let header = manifest.signed.header();
    let (name, who) = newcomer(manifest);
    let share = fixed_share(manifest, &manifest.signed.head(), &Recipient::of(&who));
    let wire = share.to_bytes();
    let signature_at = wire.len() - crate::keys::SIGNATURE_LEN;
    let owner = manifest.rekeyer.sign_public_key();
    let binding = SealBinding {
        room: &header.room,
        epoch: header.epoch,
        recipient: &who.kex_public_key(),
        rekeyer: &owner,
    };
    // A message of the epoch by its first member, which the newcomer opens with the share.
    let (_, envelope) = sealed_envelope(&EnvelopeInputs {
        manifest,
        sender: 0,
        receiver: 0,
        content_type: "text/plain",
        body: b"before you joined".to_vec(),
        sent_at: 1_700_000_000_000,
    });
    let key = EpochKey::from_share(&share, &who, &header.room, header.epoch, &owner).unwrap();
    assert_eq!(envelope.open(&key).unwrap().body(), b"before you joined");
    json!({
        "room": header.room.as_str(),
        "epoch": header.epoch,
        "rekeyer_sign_seed": hex::encode(&fixed(&format!("{} rekeyer sign", manifest.label))),
        "rekeyer_sign_public": owner.to_hex(),
        "room_key": hex::encode(manifest.room_key.expose_secret()),
        "signed_head": hex::encode(&manifest.signed.head().to_bytes()),
        "recipient": {
            "sign_seed": hex::encode(&fixed(&format!("{name} sign"))),
            "kex_secret": hex::encode(&fixed(&format!("{name} kex"))),
            "sign_public": who.sign_public_key().to_hex(),
            "kex_public": who.kex_public_key().to_hex(),
        },
        "ephemeral_ikm": hex::encode(&fixed(&format!("{} share ephemeral", manifest.label))),
        "info": hex::encode(&binding.info()),
        "entry": hex::encode(&share.unverified_entry().to_bytes()),
        "signature": hex::encode(&wire[signature_at..]),
        "share": hex::encode(&wire),
        "envelope": hex::encode(envelope.as_bytes()),
        "body": hex::encode(b"before you joined"),
    })
}

/// Shares that the first case's recipient must refuse, each with the error it gets.
fn invalid_shares(manifest: &FixedManifest) -> Vec<Value> {
    let header = manifest.signed.header();
    let (_, who) = newcomer(manifest);
    let me = Recipient::of(&who);
    let wire = fixed_share(manifest, &manifest.signed.head(), &me).to_bytes();
    let signature_at = wire.len() - crate::keys::SIGNATURE_LEN;
    let head_len = manifest.signed.head().encoded_len();
    let entry_at = 1 + head_len;
    let owner = &manifest.rekeyer;
    // Signs everything before the signature with `who`, after `change`.
    let resigned = |signer: &Identity, change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = wire[..signature_at].to_vec();
        change(&mut bytes);
        let mut message = history::SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(&bytes);
        bytes.extend_from_slice(&signer.sign(&message).to_bytes());
        bytes
    };
    let outsider = identity("history outsider");
    // The owner's next epoch, sealed to the owner alone: a good head of another epoch.
    let next = SignedManifest::rekey_with(
        owner,
        &header.room,
        header.epoch + 1,
        header.epoch,
        &manifest.room_key,
        &[Recipient::of(owner)],
        |key, binding| seal_with_ephemeral_ikm(key, binding, &fixed("history next epoch")),
        &|_| true,
    )
    .unwrap();
    // Another rekeyer's epoch of the same room and number, shared by that rekeyer.
    let impostor = FixedManifest {
        label: "history impostor".into(),
        rekeyer: identity("history outsider"),
        room_key: manifest.room_key.clone(),
        people: Vec::new(),
        signed: SignedManifest::rekey_with(
            &outsider,
            &header.room,
            header.epoch,
            header.previous_epoch,
            &manifest.room_key,
            &[Recipient::of(&outsider)],
            |key, binding| seal_with_ephemeral_ikm(key, binding, &fixed("history impostor")),
            &|_| true,
        )
        .unwrap(),
    };
    let mut cases: Vec<(&str, Vec<u8>, &str)> = framing_cases(&wire).into();
    cases.extend([
        (
            "the whole share made and signed by another rekeyer",
            fixed_share(&impostor, &impostor.signed.head(), &me).to_bytes(),
            "UntrustedRekeyer",
        ),
        (
            "the head of the owner's next epoch in place of the epoch's, signed by the owner",
            resigned(owner, &|bytes: &mut Vec<u8>| {
                bytes.splice(1..entry_at, next.head().to_bytes());
            }),
            "WrongRoomOrEpoch",
        ),
        (
            "a header signature byte flipped",
            {
                let mut bytes = wire.clone();
                bytes[head_len - 1] ^= 0x01;
                bytes
            },
            "BadHeaderSignature",
        ),
        (
            "signed by an outsider instead of the owner",
            resigned(&outsider, &|_| ()),
            "BadShareSignature",
        ),
        (
            "a sealed copy byte flipped",
            {
                let mut bytes = wire.clone();
                bytes[entry_at + 64 + 40] ^= 0x01;
                bytes
            },
            "BadShareSignature",
        ),
        (
            "addressed to an outsider, signed by the owner",
            fixed_share(manifest, &manifest.signed.head(), &Recipient::of(&outsider)).to_bytes(),
            "NotARecipient",
        ),
        (
            "sealed to the outsider's x25519 key, signed by the owner",
            fixed_share(
                manifest,
                &manifest.signed.head(),
                &Recipient {
                    member: me.member,
                    kex: outsider.kex_public_key(),
                },
            )
            .to_bytes(),
            "RecipientKeyMismatch",
        ),
        (
            "a sealed copy byte flipped, signed by the owner",
            resigned(owner, &|bytes: &mut Vec<u8>| {
                bytes[entry_at + 64 + 40] ^= 0x01
            }),
            "Seal(OpenFailed)",
        ),
    ]);
    cases
        .into_iter()
        .map(|(description, bytes, error)| {
            let refused = HistoryShare::from_bytes(&bytes).and_then(|share| {
                share.open(&who, &header.room, header.epoch, &owner.sign_public_key())
            });
            let found = format!("{:?}", refused.expect_err(description));
            assert!(found.starts_with(error), "{description}: {found}");
            json!({ "description": description, "share": hex::encode(&bytes), "error": error })
        })
        .collect()
}

fn history_vectors() -> Value {
    let three = fixed_manifest("general", 1, 0, 3);
    let five = fixed_manifest("design-team_2", 4_294_967_297, 3, 5);
    let longest = fixed_manifest(
        &"R".repeat(crate::room::ROOM_ID_MAX_LEN),
        crate::manifest::MAX_EPOCH,
        0,
        1,
    );
    json!({
        "description": "unibus history shares, format version 1: an earlier epoch's room key \
            sealed to one member as a manifest entry is (HPKE RFC 9180 base mode, \
            DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305, the ephemeral key \
            DeriveKeyPair(ephemeral_ikm)), with the epoch's signed head and an Ed25519 \
            signature by the room's owner over \"unibus/history-share/v1\" || the share before \
            its signature. All byte strings are lowercase hex. See docs/protocol.md sections 16 \
            and 9.",
        "suite": { "mode": 0, "kem_id": 32, "kdf_id": 1, "aead_id": 3 },
        "shares": [history_case(&three), history_case(&five), history_case(&longest)],
        "invalid": invalid_shares(&three),
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

#[test]
fn checked_in_envelope_vectors_match_a_fresh_generation() {
    check(ENVELOPE_PATH, envelope_vectors());
}

#[test]
fn checked_in_history_share_vectors_match_a_fresh_generation() {
    check(HISTORY_PATH, history_vectors());
}
