//! Checks `tests/vectors/sealed-room-key-v1.json`, `tests/vectors/rekey-manifest-v2.json`,
//! `tests/vectors/message-envelope-v1.json` and `tests/vectors/history-share-v1.json` the way a client on another platform would: only
//! through the public API, from the published inputs.

use serde::Deserialize;
use unibus::envelope::{Envelope, EnvelopeError, EpochKey};
use unibus::history::HistoryShare;
use unibus::manifest::merkle::{self, MerkleTree};
use unibus::manifest::{MemberPart, SignedManifest};
use unibus::sealing::{open_room_key, SealBinding, SealedRoomKey};
use unibus::{Identity, KexPublicKey, RoomId, SignPublicKey};

#[derive(Deserialize)]
struct SealedVectors {
    sealed_room_keys: Vec<SealedCase>,
}

#[derive(Deserialize)]
struct ManifestVectors {
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
    leaf_hashes: Vec<String>,
    merkle_root: String,
    header: String,
    signed_manifest: String,
    member_parts: Vec<PartCase>,
}

#[derive(Deserialize)]
struct PartCase {
    sign_public: String,
    index: u32,
    proof: Vec<String>,
    member_part: String,
}

#[derive(Deserialize)]
struct Member {
    sign_seed: String,
    kex_secret: String,
    sign_public: String,
    kex_public: String,
}

fn sealed_vectors() -> SealedVectors {
    let text = include_str!("vectors/sealed-room-key-v1.json");
    serde_json::from_str(text).expect("vector file parses")
}

fn manifest_vectors() -> ManifestVectors {
    let text = include_str!("vectors/rekey-manifest-v2.json");
    serde_json::from_str(text).expect("vector file parses")
}

#[derive(Deserialize)]
struct EnvelopeVectors {
    envelopes: Vec<EnvelopeCase>,
    invalid: Vec<InvalidEnvelope>,
}

#[derive(Deserialize)]
struct EnvelopeCase {
    room: String,
    epoch: u64,
    rekeyer_sign_public: String,
    room_key: String,
    sender: EnvelopeMember,
    receiver: EnvelopeMember,
    message_id: String,
    sent_at: u64,
    content_type: String,
    body: String,
    header: String,
    envelope: String,
}

#[derive(Deserialize)]
struct EnvelopeMember {
    sign_seed: String,
    kex_secret: String,
    sign_public: String,
    member_part: String,
}

#[derive(Deserialize)]
struct InvalidEnvelope {
    description: String,
    envelope: String,
    error: String,
}

fn envelope_vectors() -> EnvelopeVectors {
    let text = include_str!("vectors/message-envelope-v1.json");
    serde_json::from_str(text).expect("vector file parses")
}

/// `member`'s epoch key of a case, opened from its member part as a client opens a fetched key.
fn epoch_key(case: &EnvelopeCase, member: &EnvelopeMember) -> EpochKey {
    let identity =
        Identity::from_parts(&bytes32(&member.sign_seed), &bytes32(&member.kex_secret)).unwrap();
    assert_eq!(identity.sign_public_key().to_hex(), member.sign_public);
    let part = MemberPart::from_bytes(&hex::decode(&member.member_part).unwrap()).unwrap();
    let key = EpochKey::open(
        &part,
        &identity,
        &RoomId::new(&case.room).unwrap(),
        case.epoch,
        &SignPublicKey::from_hex(&case.rekeyer_sign_public).unwrap(),
    )
    .unwrap();
    assert_eq!(hex::encode(key.room_key().expose_secret()), case.room_key);
    key
}

fn bytes32(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

#[test]
fn every_sealed_vector_opens_to_its_room_key_with_the_published_info() {
    let vectors = sealed_vectors();
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

fn identity(member: &Member) -> Identity {
    let id =
        Identity::from_parts(&bytes32(&member.sign_seed), &bytes32(&member.kex_secret)).unwrap();
    assert_eq!(id.sign_public_key().to_hex(), member.sign_public);
    assert_eq!(id.kex_public_key().to_hex(), member.kex_public);
    id
}

#[test]
fn every_manifest_vector_verifies_and_opens_for_each_member() {
    let cases = manifest_vectors().manifests;
    assert!(cases.len() >= 4);
    assert!(
        cases
            .iter()
            .any(|c| !c.members.len().is_power_of_two() && c.members.len() > 4),
        "a case exercises RFC 9162's split of a size that is not a power of two"
    );
    for case in cases {
        let bytes = hex::decode(&case.signed_manifest).unwrap();
        let signed = SignedManifest::from_bytes(&bytes).unwrap();
        assert_eq!(
            signed.to_bytes(),
            bytes,
            "decoding then encoding is the identity"
        );
        assert_eq!(hex::encode(signed.header().to_bytes()), case.header);
        assert!(bytes.starts_with(&hex::decode(&case.header).unwrap()));
        let room = RoomId::new(&case.room).unwrap();
        let owner = SignPublicKey::from_hex(&case.rekeyer_sign_public).unwrap();
        let manifest = signed.verify(&room, case.epoch, &owner).unwrap();
        assert_eq!(manifest.previous_epoch, case.previous_epoch);
        assert_eq!(manifest.entries.len(), case.members.len());
        for member in &case.members {
            let id = identity(member);
            let key = signed.open(&id, &room, case.epoch, &owner).unwrap();
            assert_eq!(hex::encode(key.expose_secret()), case.room_key);
        }
    }
}

#[test]
fn every_manifest_vectors_merkle_root_is_the_rfc_9162_root_of_its_entries() {
    for case in manifest_vectors().manifests {
        let signed =
            SignedManifest::from_bytes(&hex::decode(&case.signed_manifest).unwrap()).unwrap();
        let leaves: Vec<String> = signed
            .unverified()
            .entries
            .iter()
            .map(|e| hex::encode(merkle::leaf_hash(&e.to_bytes())))
            .collect();
        assert_eq!(leaves, case.leaf_hashes);
        let leaf_hashes: Vec<merkle::Hash> = case.leaf_hashes.iter().map(|h| bytes32(h)).collect();
        assert_eq!(hex::encode(merkle::root(&leaf_hashes)), case.merkle_root);
        assert_eq!(
            hex::encode(MerkleTree::from_leaf_hashes(leaf_hashes).root()),
            case.merkle_root
        );
        assert_eq!(hex::encode(signed.header().merkle_root), case.merkle_root);
    }
}

#[test]
fn every_member_part_vector_decodes_verifies_and_opens_for_its_member_alone() {
    for case in manifest_vectors().manifests {
        let signed =
            SignedManifest::from_bytes(&hex::decode(&case.signed_manifest).unwrap()).unwrap();
        let room = RoomId::new(&case.room).unwrap();
        let owner = SignPublicKey::from_hex(&case.rekeyer_sign_public).unwrap();
        assert_eq!(case.member_parts.len(), case.members.len());
        let count = case.members.len() as u64;
        for (position, part_case) in case.member_parts.iter().enumerate() {
            assert_eq!(
                part_case.index as usize, position,
                "parts are in entry order"
            );
            let bytes = hex::decode(&part_case.member_part).unwrap();
            let part = MemberPart::from_bytes(&bytes).unwrap();
            assert_eq!(
                part.to_bytes(),
                bytes,
                "decoding then encoding is the identity"
            );
            assert_eq!(part.index(), part_case.index);
            let proof: Vec<String> = part.proof().iter().map(hex::encode).collect();
            assert_eq!(proof, part_case.proof);
            assert_eq!(
                Some(proof.len()),
                merkle::audit_path_len(part_case.index.into(), count)
            );
            // The part starts with the manifest's header and signature.
            let prefix = case.header.len() / 2 + 64;
            assert_eq!(
                bytes[..prefix],
                hex::decode(&case.signed_manifest).unwrap()[..prefix]
            );
            // The server-side cut gives the same bytes.
            let member = SignPublicKey::from_hex(&part_case.sign_public).unwrap();
            assert_eq!(signed.member_part(&member).unwrap().to_bytes(), bytes);

            let entry = part.verify(&room, case.epoch, &owner, &member).unwrap();
            assert_eq!(entry.member, member);
            let leaf = bytes32(&case.leaf_hashes[position]);
            let path: Vec<merkle::Hash> = part_case.proof.iter().map(|h| bytes32(h)).collect();
            merkle::verify_inclusion(
                &leaf,
                part_case.index.into(),
                count,
                &path,
                &bytes32(&case.merkle_root),
            )
            .unwrap();

            let me = case
                .members
                .iter()
                .find(|m| m.sign_public == part_case.sign_public)
                .expect("every part belongs to a listed member");
            let key = part.open(&identity(me), &room, case.epoch, &owner).unwrap();
            assert_eq!(hex::encode(key.expose_secret()), case.room_key);
            // Nobody else's identity opens it.
            for other in case
                .members
                .iter()
                .filter(|m| m.sign_public != me.sign_public)
            {
                assert!(part
                    .open(&identity(other), &room, case.epoch, &owner)
                    .is_err());
            }
        }
    }
}

#[test]
fn every_envelope_vector_opens_for_its_receiver_and_its_sender_with_the_published_fields() {
    for case in envelope_vectors().envelopes {
        let wire = hex::decode(&case.envelope).unwrap();
        let envelope = Envelope::from_bytes(&wire).unwrap();
        assert_eq!(envelope.as_bytes(), &wire[..]);
        assert_eq!(hex::encode(envelope.header_bytes()), case.header);
        for member in [&case.receiver, &case.sender] {
            let message = envelope.open(&epoch_key(&case, member)).unwrap();
            assert_eq!(hex::encode(message.body()), case.body);
            assert_eq!(message.sender().to_hex(), case.sender.sign_public);
            assert_eq!(message.id().to_hex(), case.message_id);
            assert_eq!(message.sent_at(), case.sent_at);
            assert_eq!(message.content_type().as_str(), case.content_type);
            assert_eq!(
                (message.room().as_str(), message.epoch()),
                (&case.room[..], case.epoch)
            );
        }
    }
}

#[test]
fn every_invalid_envelope_vector_is_refused_with_its_published_error() {
    let vectors = envelope_vectors();
    let first = &vectors.envelopes[0];
    let key = epoch_key(first, &first.receiver);
    for invalid in &vectors.invalid {
        let wire = hex::decode(&invalid.envelope).unwrap();
        let refused = Envelope::from_bytes(&wire)
            .and_then(|envelope| envelope.open(&key))
            .expect_err(&invalid.description);
        // The error's variant name is the published error.
        let name = format!("{refused:?}");
        assert!(
            name.starts_with(&invalid.error),
            "{}: {name}",
            invalid.description
        );
    }
}

#[derive(Deserialize)]
struct HistoryVectors {
    shares: Vec<ShareCase>,
    invalid: Vec<InvalidShare>,
}

#[derive(Deserialize)]
struct ShareCase {
    room: String,
    epoch: u64,
    rekeyer_sign_public: String,
    room_key: String,
    signed_head: String,
    recipient: ShareRecipient,
    entry: String,
    share: String,
    envelope: String,
    body: String,
}

#[derive(Deserialize)]
struct ShareRecipient {
    sign_seed: String,
    kex_secret: String,
    sign_public: String,
}

#[derive(Deserialize)]
struct InvalidShare {
    description: String,
    share: String,
    error: String,
}

fn history_vectors() -> HistoryVectors {
    serde_json::from_str(include_str!("vectors/history-share-v1.json")).expect("vector file parses")
}

fn share_recipient(case: &ShareCase) -> Identity {
    let who = &case.recipient;
    let identity =
        Identity::from_parts(&bytes32(&who.sign_seed), &bytes32(&who.kex_secret)).unwrap();
    assert_eq!(identity.sign_public_key().to_hex(), who.sign_public);
    identity
}

#[test]
fn every_history_share_vector_opens_for_its_recipient_alone_and_reads_the_epochs_message() {
    for case in history_vectors().shares {
        let wire = hex::decode(&case.share).unwrap();
        let share = HistoryShare::from_bytes(&wire).unwrap();
        assert_eq!(share.to_bytes(), wire);
        assert_eq!(
            hex::encode(share.unverified_head().to_bytes()),
            case.signed_head
        );
        assert_eq!(hex::encode(share.unverified_entry().to_bytes()), case.entry);
        let room = RoomId::new(&case.room).unwrap();
        let owner = SignPublicKey::from_hex(&case.rekeyer_sign_public).unwrap();
        let me = share_recipient(&case);
        let key = EpochKey::from_share(&share, &me, &room, case.epoch, &owner).unwrap();
        assert_eq!(hex::encode(key.room_key().expose_secret()), case.room_key);
        let message = Envelope::from_bytes(&hex::decode(&case.envelope).unwrap())
            .unwrap()
            .open(&key)
            .unwrap();
        assert_eq!(hex::encode(message.body()), case.body);
        // Read-only: the key opens the epoch's messages but sends nothing in it.
        let text = unibus::envelope::ContentType::new("text/plain").unwrap();
        assert!(matches!(
            Envelope::seal(&me, &key, &text, b"hi", 0),
            Err(EnvelopeError::ReadOnlyKey { .. })
        ));
        let stranger = Identity::generate().unwrap();
        assert!(share.open(&stranger, &room, case.epoch, &owner).is_err());
    }
}

#[test]
fn every_invalid_history_share_vector_is_refused_with_its_published_error() {
    let vectors = history_vectors();
    let first = &vectors.shares[0];
    let me = share_recipient(first);
    let room = RoomId::new(&first.room).unwrap();
    let owner = SignPublicKey::from_hex(&first.rekeyer_sign_public).unwrap();
    for invalid in &vectors.invalid {
        let wire = hex::decode(&invalid.share).unwrap();
        let refused = HistoryShare::from_bytes(&wire)
            .and_then(|share| share.open(&me, &room, first.epoch, &owner))
            .expect_err(&invalid.description);
        let name = format!("{refused:?}");
        assert!(
            name.starts_with(&invalid.error),
            "{}: {name}",
            invalid.description
        );
    }
}
