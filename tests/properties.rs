//! Property tests: round trips hold for all inputs, and no input makes a parser panic.

use proptest::prelude::*;
use unibus::envelope::{ContentType, Envelope, EpochKey};
use unibus::history::HistoryShare;
use unibus::invite::{InviteLink, InviteToken};
use unibus::keys::{KexPublicKey, SignPublicKey, Signature};
use unibus::manifest::{MemberPart, Recipient, SignedManifest};
use unibus::sealing::{RoomKey, SealedRoomKey};
use unibus::{Identity, RoomId};

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        // Not a label with "--" in its third and fourth places: those are reserved for
        // internationalized names (`xn--…`, RFC 5891), and a random one is no valid IDN.
        "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}"
            .prop_filter("no reserved IDN label", |host: &String| !host
                .split('.')
                .any(|label| label.get(2..4) == Some("--"))),
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
    ]
}

fn server() -> impl Strategy<Value = String> {
    (
        host(),
        proptest::option::of(1u16..),
        proptest::collection::vec("[a-zA-Z0-9_-]{1,8}", 0..3),
    )
        .prop_map(|(host, port, segments)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let path: String = segments.iter().map(|s| format!("/{s}")).collect();
            format!("https://{host}{port}{path}")
        })
}

proptest! {
    #[test]
    fn a_formatted_link_parses_back_to_the_same_link(
        server in server(),
        token in any::<[u8; 32]>(),
        upper in any::<bool>(),
        padding in "[ \t\r\n]{0,3}",
    ) {
        let link = InviteLink::new(&server, InviteToken::from_bytes(token)).unwrap();
        let mut text = link.to_string();
        if upper {
            let (base, token) = text.split_once('#').unwrap();
            text = format!("{base}#{}", token.to_uppercase());
        }
        let parsed = InviteLink::parse(&format!("{padding}{text}{padding}")).unwrap();
        prop_assert_eq!(&parsed, &link);
        prop_assert_eq!(parsed.token().as_bytes(), &token);
        if let Some(deep) = link.to_deep_link() {
            prop_assert_eq!(InviteLink::parse(&deep).unwrap(), link);
        }
    }

    #[test]
    fn link_parsing_never_panics(text in "\\PC{0,200}") {
        let _ = InviteLink::parse(&text);
    }

    #[test]
    fn link_parsing_never_panics_near_valid_links(
        prefix in "(https?|unibus|ftp)?(://)?",
        middle in "[a-z0-9.:@/\\[\\]#?%-]{0,40}",
        token in "[0-9a-fA-FxZ ]{0,70}",
    ) {
        let _ = InviteLink::parse(&format!("{prefix}{middle}#{token}"));
    }

    #[test]
    fn public_keys_round_trip_through_hex(bytes in any::<[u8; 32]>()) {
        if let Ok(key) = SignPublicKey::from_bytes(bytes) {
            prop_assert_eq!(SignPublicKey::from_hex(&key.to_hex().to_uppercase()).unwrap(), key);
            prop_assert_eq!(SignPublicKey::from_nkey(&key.to_nkey()).unwrap(), key);
        }
        if let Ok(key) = KexPublicKey::from_bytes(bytes) {
            prop_assert_eq!(KexPublicKey::from_hex(&key.to_hex()).unwrap(), key);
        }
    }

    #[test]
    fn signature_verification_never_panics(
        key in any::<[u8; 32]>(),
        signature in proptest::collection::vec(any::<u8>(), 64),
        message in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let signature = Signature::from_bytes(signature.try_into().unwrap()); // 64 by the strategy
        if let Ok(key) = SignPublicKey::from_bytes(key) {
            prop_assert!(key.verify(&message, &signature).is_err());
        }
    }

    #[test]
    fn sealed_key_and_manifest_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = SealedRoomKey::from_bytes(&bytes);
        let _ = SignedManifest::from_bytes(&bytes);
        let _ = MemberPart::from_bytes(&bytes);
    }

    #[test]
    fn member_part_decoding_never_panics_near_valid_headers(
        count in prop_oneof![0u32..=8, any::<u32>()],
        proof_len in any::<u8>(),
        tail in proptest::collection::vec(any::<u8>(), 0..1200),
    ) {
        // The start of a valid header (room "r", epochs 1 and 0, a valid rekeyer key, a small
        // count), so that decoding often gets past the header into the index, entry and path.
        let rekeyer = Identity::from_parts(&[1; 32], &[2; 32]).unwrap().sign_public_key();
        let mut bytes = vec![2, 0, 1, b'r'];
        bytes.extend_from_slice(&1u64.to_be_bytes());
        bytes.extend_from_slice(&0u64.to_be_bytes());
        bytes.extend_from_slice(rekeyer.as_bytes());
        bytes.extend_from_slice(&count.to_be_bytes());
        bytes.extend_from_slice(&tail);
        if let Ok(part) = MemberPart::from_bytes(&bytes) {
            prop_assert_eq!(part.to_bytes(), bytes.clone());
        }
        // A part for room "r" has its path length at offset 87 + 1 + 64 + 4 + 145 = 301.
        if let Some(k) = bytes.get_mut(301) {
            *k = proof_len;
        }
        let _ = MemberPart::from_bytes(&bytes);
        let _ = SignedManifest::from_bytes(&bytes);
    }
}

/// A random room of 1 to 12 members (identities from random seeds) rekeyed by its owner.
fn random_room() -> impl Strategy<Value = RandomRoom> {
    (
        proptest::collection::vec(any::<([u8; 32], [u8; 32])>(), 1..=12),
        any::<[u8; 32]>(),
        "[a-z][a-z0-9_-]{0,20}",
        1u64..=unibus::manifest::MAX_EPOCH,
        any::<[u8; 32]>(),
    )
        .prop_map(|(seeds, owner_seed, room, epoch, key)| {
            let members: Vec<Identity> = seeds
                .iter()
                .map(|(sign, kex)| Identity::from_parts(sign, kex).unwrap())
                .collect();
            let owner = Identity::from_parts(&owner_seed, &[9; 32]).unwrap();
            let room = RoomId::new(&room).unwrap();
            let recipients: Vec<Recipient> = members.iter().map(Recipient::of).collect();
            let key = RoomKey::from_bytes(key);
            // Random seeds give distinct keys (a duplicate would be a SHA-512 collision).
            let signed =
                SignedManifest::rekey(&owner, &room, epoch, epoch - 1, &key, &recipients).unwrap();
            RandomRoom {
                owner,
                members,
                room,
                epoch,
                key,
                signed,
            }
        })
}

#[derive(Debug)]
struct RandomRoom {
    owner: Identity,
    members: Vec<Identity>,
    room: RoomId,
    epoch: u64,
    key: RoomKey,
    signed: SignedManifest,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_member_part_of_a_random_manifest_verifies_and_opens(r in random_room()) {
        let owner = r.owner.sign_public_key();
        let parts: Vec<MemberPart> = r.signed.member_parts().collect();
        prop_assert_eq!(parts.len(), r.members.len());
        for member in &r.members {
            let part = r.signed.member_part(&member.sign_public_key()).unwrap();
            prop_assert!(parts.contains(&part));
            let bytes = part.to_bytes();
            prop_assert_eq!(bytes.len(), part.encoded_len());
            let decoded = MemberPart::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&decoded, &part);
            let key = decoded.open(member, &r.room, r.epoch, &owner).unwrap();
            prop_assert_eq!(key.expose_secret(), r.key.expose_secret());
        }
    }

    #[test]
    fn flipping_any_byte_of_a_member_part_fails_with_a_typed_error(
        r in random_room(),
        who in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let member = who.get(&r.members);
        let mut bytes = r.signed.member_part(&member.sign_public_key()).unwrap().to_bytes();
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        let verdict = MemberPart::from_bytes(&bytes)
            .and_then(|part| part.open(member, &r.room, r.epoch, &r.owner.sign_public_key()));
        prop_assert!(verdict.is_err(), "a flip of {:#04x} at {} went unnoticed", mask, at);
    }

    #[test]
    fn any_member_s_message_opens_for_every_member_as_sent(
        r in random_room(),
        from in any::<prop::sample::Index>(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        content_type in "[ -~]{1,127}",
        sent_at in 0u64..=unibus::envelope::MAX_SENT_AT,
    ) {
        let owner = r.owner.sign_public_key();
        let key_of = |member: &Identity| {
            let part = r.signed.member_part(&member.sign_public_key()).unwrap();
            EpochKey::open(&part, member, &r.room, r.epoch, &owner).unwrap()
        };
        let sender = from.get(&r.members);
        let content_type = ContentType::new(&content_type).unwrap();
        let wire = Envelope::seal(sender, &key_of(sender), &content_type, &body, sent_at)
            .unwrap()
            .to_bytes();
        for member in &r.members {
            let message = Envelope::from_bytes(&wire).unwrap().open(&key_of(member)).unwrap();
            prop_assert_eq!(message.body(), &body[..]);
            prop_assert_eq!(message.sender(), &sender.sign_public_key());
            prop_assert_eq!(message.content_type(), &content_type);
            prop_assert_eq!(message.sent_at(), sent_at);
        }
    }

    #[test]
    fn flipping_any_byte_of_an_envelope_fails_with_a_typed_error(
        r in random_room(),
        from in any::<prop::sample::Index>(),
        to in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let owner = r.owner.sign_public_key();
        let key_of = |member: &Identity| {
            let part = r.signed.member_part(&member.sign_public_key()).unwrap();
            EpochKey::open(&part, member, &r.room, r.epoch, &owner).unwrap()
        };
        let (sender, receiver) = (from.get(&r.members), to.get(&r.members));
        let text = ContentType::new("text/plain").unwrap();
        let mut bytes = Envelope::seal(sender, &key_of(sender), &text, b"flip me", 0)
            .unwrap()
            .to_bytes();
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        let verdict = Envelope::from_bytes(&bytes).and_then(|e| e.open(&key_of(receiver)));
        prop_assert!(verdict.is_err(), "a flip of {:#04x} at {} went unnoticed", mask, at);
    }

    #[test]
    fn envelope_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        if let Ok(envelope) = Envelope::from_bytes(&bytes) {
            prop_assert_eq!(envelope.as_bytes(), &bytes[..]);
        }
    }

    #[test]
    fn a_history_share_of_a_random_epoch_opens_for_its_newcomer_alone_and_round_trips(
        r in random_room(),
        newcomer_seeds in any::<([u8; 32], [u8; 32])>(),
    ) {
        let newcomer = Identity::from_parts(&newcomer_seeds.0, &newcomer_seeds.1).unwrap();
        let owner = r.owner.sign_public_key();
        let share =
            HistoryShare::seal(&r.owner, &r.signed.head(), &r.key, &Recipient::of(&newcomer))
                .unwrap();
        let bytes = share.to_bytes();
        prop_assert_eq!(bytes.len(), share.encoded_len());
        let decoded = HistoryShare::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&decoded, &share);
        let key = decoded.open(&newcomer, &r.room, r.epoch, &owner).unwrap();
        prop_assert_eq!(key.expose_secret(), r.key.expose_secret());
        for member in &r.members {
            prop_assert!(decoded.open(member, &r.room, r.epoch, &owner).is_err());
        }
    }

    #[test]
    fn flipping_any_byte_of_a_history_share_fails_with_a_typed_error(
        r in random_room(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let newcomer = Identity::from_parts(&[7; 32], &[8; 32]).unwrap();
        let share =
            HistoryShare::seal(&r.owner, &r.signed.head(), &r.key, &Recipient::of(&newcomer))
                .unwrap();
        let mut bytes = share.to_bytes();
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        let verdict = HistoryShare::from_bytes(&bytes)
            .and_then(|share| share.open(&newcomer, &r.room, r.epoch, &r.owner.sign_public_key()));
        prop_assert!(verdict.is_err(), "a flip of {:#04x} at {} went unnoticed", mask, at);
    }

    #[test]
    fn history_share_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        if let Ok(share) = HistoryShare::from_bytes(&bytes) {
            prop_assert_eq!(share.to_bytes(), bytes);
        }
    }
}
