//! Strict ed25519: signing-key validation (protocol section 2.2) and signature verification
//! (section 2.3) against crafted inputs, in the style of "Taming the many EdDSAs" (Chalkias,
//! Garillot, Nikolaenko, 2020): small-order `A` and `R` in every encoding, non-canonical `A` and
//! `R`, and `S >= L`. The RFC 8032 known answers are in `known_answers.rs`.
//!
//! Every point and encoding here is derived from the curve with curve25519-dalek. The lists of
//! the protocol document, copied below, are checked against that derivation, not the other way
//! round.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{Identity as _, IsIdentity};
use sha2::{Digest, Sha512};
use unibus::keys::{KeyError, KeyKind, SignatureError};
use unibus::{SignPublicKey, Signature};

/// Protocol section 2.2: the canonical encodings of the 8 ed25519 points of small order, with
/// their order.
const SMALL_ORDER_CANONICAL: [(&str, u32); 8] = [
    (
        "0100000000000000000000000000000000000000000000000000000000000000",
        1,
    ),
    (
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        2,
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        4,
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000080",
        4,
    ),
    (
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        8,
    ),
    (
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        8,
    ),
    (
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        8,
    ),
    (
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        8,
    ),
];

/// Protocol section 2.2: the non-canonical encodings of points of small order that a lenient
/// decoder accepts, with their order: `x = 0` with the sign bit set, and `y >= p`.
const SMALL_ORDER_NON_CANONICAL: [(&str, u32); 6] = [
    (
        "0100000000000000000000000000000000000000000000000000000000000080",
        1,
    ),
    (
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        2,
    ),
    (
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        4,
    ),
    (
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        4,
    ),
    (
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        1,
    ),
    (
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        1,
    ),
];

/// `L`, the order of the base point, little-endian.
const GROUP_ORDER: &str = "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010";

/// `p = 2^255 - 19`, little-endian.
const P: &str = "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f";

const MESSAGE: &[u8] = b"unibus strict signature test";

fn bytes32(text: &str) -> [u8; 32] {
    hex::decode(text).unwrap().try_into().unwrap()
}

fn all_small_order_encodings() -> Vec<([u8; 32], u32)> {
    SMALL_ORDER_CANONICAL
        .iter()
        .chain(SMALL_ORDER_NON_CANONICAL.iter())
        .map(|(text, order)| (bytes32(text), *order))
        .collect()
}

/// Little-endian 256-bit addition; `None` if the sum needs bit 255 or more.
fn add_below_2_255(a: &[u8; 32], b: &[u8; 32]) -> Option<[u8; 32]> {
    let mut sum = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(a[i]) + u16::from(b[i]) + carry;
        sum[i] = v as u8;
        carry = v >> 8;
    }
    (carry == 0 && sum[31] & 0x80 == 0).then_some(sum)
}

/// Every 32-byte string that stands for `y`: `y` and `y + p` (when it fits in 255 bits), each
/// with the sign bit clear and set. A decoder reads 255 bits and reduces them mod `p`, so these
/// are all the encodings whose y-coordinate is `y`.
fn every_spelling_of(y: &[u8; 32]) -> Vec<[u8; 32]> {
    let mut ys = vec![*y];
    ys.extend(add_below_2_255(y, &bytes32(P)));
    let mut out = Vec::new();
    for y in ys {
        for sign in [0, 0x80] {
            let mut e = y;
            e[31] |= sign;
            out.push(e);
        }
    }
    out
}

/// The smallest `n` in 1, 2, 4, 8 with `[n]P` the identity, or `None` if `P` is not of small
/// order.
fn small_order(point: &EdwardsPoint) -> Option<u32> {
    let mut multiple = *point;
    for order in [1, 2, 4, 8] {
        if multiple.is_identity() {
            return Some(order);
        }
        multiple = multiple + multiple;
    }
    None
}

/// The 8 points of order dividing 8, derived without the library's table: `[L]Q` lies in the
/// torsion subgroup for any curve point `Q`; take one of order 8 and its multiples.
fn derive_torsion_points() -> Vec<EdwardsPoint> {
    let minus_one = Scalar::ZERO - Scalar::ONE; // L - 1 as an integer
    for i in 0u8..=255 {
        let mut seed = [0x42u8; 32];
        seed[0] = i;
        seed[31] = 0x12;
        let Some(q) = CompressedEdwardsY(seed).decompress() else {
            continue;
        };
        let t = q * minus_one + q; // [L]Q
        if small_order(&t) == Some(8) {
            let mut all = vec![EdwardsPoint::identity()];
            for _ in 1..8 {
                let next = all[all.len() - 1] + t;
                all.push(next);
            }
            return all;
        }
    }
    panic!("no curve point with a torsion component of order 8 among 256 candidates");
}

/// `k = SHA-512(R || A || M) mod L`.
fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
    let digest: [u8; 64] = Sha512::new()
        .chain_update(r)
        .chain_update(a)
        .chain_update(message)
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&digest)
}

fn signature(r: &[u8; 32], s: &[u8; 32]) -> Signature {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(r);
    bytes[32..].copy_from_slice(s);
    Signature::from_bytes(bytes)
}

/// An ordinary key with a known secret scalar `a`.
fn ordinary_key() -> (Scalar, [u8; 32]) {
    let a = Scalar::from_bytes_mod_order([0x35; 32]);
    (a, (B * a).compress().to_bytes())
}

#[test]
fn the_listed_small_order_encodings_are_exactly_every_encoding_of_the_8_small_order_points() {
    let derived = derive_torsion_points();
    let mut derived_canonical: Vec<[u8; 32]> =
        derived.iter().map(|p| p.compress().to_bytes()).collect();
    derived_canonical.sort();
    derived_canonical.dedup();
    assert_eq!(derived_canonical.len(), 8);
    let mut library: Vec<[u8; 32]> = EIGHT_TORSION
        .iter()
        .map(|p| p.compress().to_bytes())
        .collect();
    library.sort();
    assert_eq!(derived_canonical, library, "the library's table agrees");
    assert!(small_order(&B).is_none(), "the check can fail");

    let mut listed_canonical: Vec<[u8; 32]> = SMALL_ORDER_CANONICAL
        .iter()
        .map(|(t, _)| bytes32(t))
        .collect();
    listed_canonical.sort();
    assert_eq!(listed_canonical, derived_canonical);

    // Every spelling of every small-order y that a lenient decoder accepts.
    let mut derived_all = Vec::new();
    for point in &derived {
        let mut y = point.compress().to_bytes();
        y[31] &= 0x7f;
        for e in every_spelling_of(&y) {
            if let Some(decoded) = CompressedEdwardsY(e).decompress() {
                assert!(small_order(&decoded).is_some(), "{}", hex::encode(e));
                derived_all.push(e);
            }
        }
    }
    derived_all.sort();
    derived_all.dedup();
    let mut listed_all: Vec<[u8; 32]> = all_small_order_encodings()
        .iter()
        .map(|(e, _)| *e)
        .collect();
    listed_all.sort();
    assert_eq!(listed_all, derived_all);

    // Each listed order, multiplying by 8 gives the identity; the non-canonical ones are not
    // what the point re-encodes to.
    for (e, order) in all_small_order_encodings() {
        let point = CompressedEdwardsY(e).decompress().unwrap();
        assert!(point.mul_by_cofactor().is_identity(), "{}", hex::encode(e));
        assert_eq!(small_order(&point), Some(order), "{}", hex::encode(e));
    }
    for (text, _) in SMALL_ORDER_NON_CANONICAL {
        let e = bytes32(text);
        let point = CompressedEdwardsY(e).decompress().unwrap();
        assert_ne!(point.compress().to_bytes(), e, "{text}");
    }
}

#[test]
fn small_order_a_is_rejected_in_every_encoding_even_when_the_equation_holds() {
    for (a, order) in all_small_order_encodings() {
        let point = CompressedEdwardsY(a).decompress().unwrap();
        // Taming case: R = [r]B and S = r, with r chosen so that k is a multiple of 8. Then
        // [k]A is the identity and [S]B - [k]A = R: a cofactorless verifier without the
        // small-order rule accepts this signature, made without any secret key.
        let (r_bytes, s) = (1u64..)
            .map(|r| {
                let r = Scalar::from(r);
                ((B * r).compress().to_bytes(), r)
            })
            .find(|(r_bytes, _)| challenge(r_bytes, &a, MESSAGE).to_bytes()[0].is_multiple_of(8))
            .unwrap();
        let k = challenge(&r_bytes, &a, MESSAGE);
        assert_eq!(
            (B * s - point * k).compress().to_bytes(),
            r_bytes,
            "{} (order {order})",
            hex::encode(a)
        );

        let expected = if a == [0; 32] {
            KeyError::AllZero {
                kind: KeyKind::Sign,
            }
        } else {
            KeyError::LowOrder {
                kind: KeyKind::Sign,
            }
        };
        assert_eq!(SignPublicKey::from_bytes(a), Err(expected.clone()));
        assert_eq!(
            SignPublicKey::from_hex(&hex::encode(a)),
            Err(expected.clone())
        );
        assert_eq!(
            SignPublicKey::from_hex(&hex::encode_upper(a)),
            Err(expected)
        );
        // So there is no key to verify `signature(&r_bytes, &s.to_bytes())` with.
    }
}

#[test]
fn small_order_r_is_rejected_in_every_encoding() {
    let (secret, a) = ordinary_key();
    let key = SignPublicKey::from_bytes(a).unwrap();
    for (r, order) in all_small_order_encodings() {
        // S = k·a satisfies the cofactored equation [8][S]B = [8]R + [8][k]A for every
        // small-order R: a cofactored verifier without the small-order rule accepts it.
        let k = challenge(&r, &a, MESSAGE);
        let s = k * secret;
        let r_point = CompressedEdwardsY(r).decompress().unwrap();
        let a_point = B * secret;
        assert_eq!(
            (B * s).mul_by_cofactor(),
            r_point.mul_by_cofactor() + (a_point * k).mul_by_cofactor()
        );
        if r == bytes32(SMALL_ORDER_CANONICAL[0].0) {
            // R = the identity, canonically encoded: even the cofactorless equation holds,
            // byte for byte.
            assert_eq!((B * s - a_point * k).compress().to_bytes(), r);
        }
        assert_eq!(
            key.verify(MESSAGE, &signature(&r, &s.to_bytes())),
            Err(SignatureError::Invalid),
            "{} (order {order})",
            hex::encode(r)
        );
    }
}

#[test]
fn non_canonical_signing_keys_are_rejected_when_parsed() {
    let mut decodable_ordinary = 0;
    for t in 0u8..19 {
        // y = p + t, t = 0..18: every 255-bit value from p up.
        let mut y = bytes32(P);
        y[0] += t;
        for e in every_spelling_of(&y).into_iter().take(2) {
            let small = CompressedEdwardsY(e)
                .decompress()
                .and_then(|p| small_order(&p));
            let expected = if small.is_some() {
                KeyError::LowOrder {
                    kind: KeyKind::Sign,
                }
            } else {
                KeyError::NonCanonical
            };
            if small.is_none() && CompressedEdwardsY(e).decompress().is_some() {
                decodable_ordinary += 1;
            }
            assert_eq!(
                SignPublicKey::from_bytes(e),
                Err(expected),
                "{}",
                hex::encode(e)
            );
        }
    }
    // y = p + 3, 4, 5, 6, 9, 10, 14, 15, 16 and 18 decode, with either sign, to points that
    // are not of small order: the non-canonical encodings that the small-order list misses.
    assert_eq!(decodable_ordinary, 20);
}

#[test]
fn signing_keys_that_are_not_curve_points_are_rejected_when_parsed() {
    let mut off_curve = 0;
    for y in 2u8..19 {
        let mut e = [0u8; 32];
        e[0] = y;
        for sign in [0, 0x80] {
            e[31] = sign;
            if CompressedEdwardsY(e).decompress().is_none() {
                off_curve += 1;
                assert_eq!(
                    SignPublicKey::from_bytes(e),
                    Err(KeyError::NotOnCurve),
                    "{}",
                    hex::encode(e)
                );
            } else {
                assert!(SignPublicKey::from_bytes(e).is_ok(), "{}", hex::encode(e));
            }
        }
    }
    // y = 2, 7, 8, 11, 12, 13 and 17, with either sign.
    assert_eq!(off_curve, 14);
}

#[test]
fn non_canonical_r_is_rejected() {
    // Every encoding with y >= p, as R, with S = k·a. A non-canonical R can only be accepted
    // by a verifier that compares points instead of bytes; with these inputs the point
    // equation does not hold either (that would take the discrete log of R), so this test
    // shows that the rejection happens on the bytes, before any verifier arithmetic could
    // matter: see also keys.rs's unit test of the byte-level checks.
    let (secret, a) = ordinary_key();
    let key = SignPublicKey::from_bytes(a).unwrap();
    let mut checked = 0;
    for t in 0u8..19 {
        let mut y = bytes32(P);
        y[0] += t;
        for r in every_spelling_of(&y).into_iter().take(2) {
            let s = challenge(&r, &a, MESSAGE) * secret;
            assert_eq!(
                key.verify(MESSAGE, &signature(&r, &s.to_bytes())),
                Err(SignatureError::Invalid),
                "{}",
                hex::encode(r)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 38);
    // And the negative-zero encodings, x = 0 with the sign bit set, of the two points with
    // x = 0 (both of small order, so also in the list).
    for r in [
        SMALL_ORDER_NON_CANONICAL[0].0,
        SMALL_ORDER_NON_CANONICAL[1].0,
    ] {
        let r = bytes32(r);
        let s = challenge(&r, &a, MESSAGE) * secret;
        assert_eq!(
            key.verify(MESSAGE, &signature(&r, &s.to_bytes())),
            Err(SignatureError::Invalid)
        );
    }
}

#[test]
fn s_at_or_above_the_group_order_is_rejected() {
    let l = bytes32(GROUP_ORDER);
    assert!(bool::from(Scalar::from_canonical_bytes(l).is_none()));
    let mut below = l;
    below[0] -= 1;
    assert!(bool::from(Scalar::from_canonical_bytes(below).is_some()));

    // RFC 8032 section 7.1, TEST 1.
    let key =
        SignPublicKey::from_hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
            .unwrap();
    let good = Signature::from_hex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    )
    .unwrap();
    key.verify(b"", &good).unwrap();
    let bytes = good.to_bytes();
    let r: [u8; 32] = bytes[..32].try_into().unwrap();
    let s: [u8; 32] = bytes[32..].try_into().unwrap();

    // S + L is the same scalar mod L: a verifier that reduces S would accept it.
    let mut s_plus_l = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(s[i]) + u16::from(l[i]) + carry;
        s_plus_l[i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0);
    assert_eq!(Scalar::from_bytes_mod_order(s_plus_l).to_bytes(), s);

    let mut s_plus_2_255 = s;
    s_plus_2_255[31] |= 0x80;
    for bad_s in [s_plus_l, l, s_plus_2_255, [0xff; 32]] {
        assert_eq!(
            key.verify(b"", &signature(&r, &bad_s)),
            Err(SignatureError::Invalid),
            "{}",
            hex::encode(bad_s)
        );
    }
}
