//! Property tests: round trips hold for all inputs, and no input makes a parser panic.

use proptest::prelude::*;
use unibus::invite::{InviteLink, InviteToken};
use unibus::keys::{KexPublicKey, SignPublicKey, Signature};
use unibus::manifest::SignedManifest;
use unibus::sealing::SealedRoomKey;

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
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
    }
}
