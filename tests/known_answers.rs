//! Published test vectors: RFC 8032 (ed25519) and RFC 7748 (x25519), through the SDK's own
//! identity type. (RFC 9180's HPKE vector runs inside the crate, on the sealing code path.)

use unibus::{Identity, SignPublicKey, Signature};

fn bytes32(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

/// RFC 8032 section 7.1, TEST 1 to TEST 3: secret key, public key, message, signature.
const RFC8032: [(&str, &str, &str, &str); 3] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

#[test]
fn ed25519_signing_matches_rfc8032() {
    for (secret, public, message, signature) in RFC8032 {
        let id = Identity::from_parts(&bytes32(secret), &[7; 32]).unwrap();
        assert_eq!(id.sign_public_key().to_hex(), public);
        let message = hex::decode(message).unwrap();
        let signed = id.sign(&message);
        assert_eq!(signed.to_hex(), signature);

        let key = SignPublicKey::from_hex(public).unwrap();
        key.verify(&message, &Signature::from_hex(signature).unwrap())
            .unwrap();
        let mut tampered = signed.to_bytes();
        tampered[0] ^= 1;
        assert!(key
            .verify(&message, &Signature::from_bytes(tampered))
            .is_err());
        assert!(key.verify(b"another message", &signed).is_err());
    }
}

#[test]
fn x25519_public_keys_match_rfc7748_section_6_1() {
    let alice = Identity::from_parts(
        &[7; 32],
        &bytes32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
    )
    .unwrap();
    let bob = Identity::from_parts(
        &[7; 32],
        &bytes32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
    )
    .unwrap();
    assert_eq!(
        alice.kex_public_key().to_hex(),
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    );
    assert_eq!(
        bob.kex_public_key().to_hex(),
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    );
}

#[test]
fn nkeys_agree_with_the_nats_nkeys_crate() {
    for _ in 0..20 {
        let id = Identity::generate().unwrap();
        let pair = nkeys::KeyPair::from_seed(id.nkey_seed().as_str()).unwrap();
        assert_eq!(pair.public_key(), id.nkey_public());
        // A NATS server verifies the nonce signature with the public nkey; our key must agree.
        let nonce = b"server nonce";
        let sig: [u8; 64] = pair.sign(nonce).unwrap().try_into().unwrap();
        id.sign_public_key()
            .verify(nonce, &Signature::from_bytes(sig))
            .unwrap();
        assert_eq!(
            SignPublicKey::from_nkey(&pair.public_key()).unwrap(),
            id.sign_public_key()
        );
    }
}
