//! Foundation benchmarks: every SDK operation beside its raw floor, measured in the same run.
//!
//! ```text
//! cargo bench --bench foundation
//! ```
//!
//! Each row times the SDK call and its floor in alternating samples (so drift and frequency
//! changes hit both alike), then prints the median and p99 per operation, and the ratio of the
//! medians. The floors are the bare libraries the SDK wraps: ed25519-dalek/x25519-dalek key
//! derivation, `hpke` single-shot seal/open with the same suite and `info`, and `url` parsing.

use std::hint::black_box;
use std::time::Instant;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hpke::{Deserializable, OpModeR, OpModeS};
use sha2::{Digest, Sha256};
use unibus::envelope::{ContentType, Envelope, EpochKey};
use unibus::manifest::{MemberPart, Recipient, SignedManifest};
use unibus::sealing::{open_room_key, seal_room_key, RoomKey, SealBinding};
use unibus::{Identity, InviteLink, RoomId};

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// Sealing and opening a message of 1 KiB and of 64 KiB in a room of `manifest`'s members, beside
/// the raw primitives a message needs at the least: ChaCha20-Poly1305 over the body and one
/// ed25519 signature (to seal) or one ed25519 key decoding and strict verification (to open).
/// The raw signature covers as many bytes as the envelope's does (the 17-byte context, the
/// header with the sender's entry and audit path, and the ciphertext): ed25519 hashes what it
/// signs, so a floor over the body alone would not be the same work.
/// `member` sends and reads its own messages: a receiver runs the same checks on anyone's.
fn message_rows(owner: &Identity, member: &Identity, room: &RoomId, manifest: &SignedManifest) {
    let epoch = manifest.header().epoch;
    let part = manifest.member_part(&member.sign_public_key()).unwrap();
    let sender_key = EpochKey::open(&part, member, room, epoch, &owner.sign_public_key()).unwrap();
    let receiver_key = sender_key.clone();
    let text = ContentType::new("text/plain").unwrap();
    let raw_key = [7u8; 32];
    let raw_cipher = ChaCha20Poly1305::new(&raw_key.into());
    let raw_signer = SigningKey::from_bytes(&[8; 32]);
    for size in [1024, 65_536] {
        let body = vec![0x42u8; size];
        let label = if size == 1024 { "1 KiB" } else { "64 KiB" };
        let wire = Envelope::seal(member, &sender_key, &text, &body, 1)
            .unwrap()
            .to_bytes();
        // What the envelope signs besides the ciphertext: the context and the header.
        let signed_extra =
            unibus::envelope::SIGNING_CONTEXT.len() + wire.len() - 64 - body.len() - 16;
        row(
            &format!("seal a {label} message (HKDF, encrypt, sign)"),
            "raw ChaCha20-Poly1305 encrypt + ed25519 sign of as many bytes",
            compare(
                200,
                10,
                || {
                    drop(black_box(
                        Envelope::seal(member, &sender_key, &text, black_box(&body), 1).unwrap(),
                    ))
                },
                || {
                    let mut buffer = vec![0u8; signed_extra];
                    buffer.extend_from_slice(black_box(&body));
                    let tag = raw_cipher
                        .encrypt_inout_detached(
                            &[0u8; 12].into(),
                            &[],
                            buffer[signed_extra..].as_mut().into(),
                        )
                        .unwrap();
                    buffer.extend_from_slice(&tag);
                    black_box(raw_signer.sign(&buffer));
                },
            ),
            Some(1.1),
        );
        let mut raw_sealed = vec![0u8; signed_extra];
        raw_sealed.extend_from_slice(&body);
        let raw_tag = raw_cipher
            .encrypt_inout_detached(
                &[0u8; 12].into(),
                &[],
                raw_sealed[signed_extra..].as_mut().into(),
            )
            .unwrap();
        raw_sealed.extend_from_slice(&raw_tag);
        let raw_signature = raw_signer.sign(&raw_sealed);
        let raw_public = raw_signer.verifying_key().to_bytes();
        row(
            &format!(
                "open a {label} message ({} bytes: decode, proof, verify, decrypt)",
                wire.len()
            ),
            "raw ed25519 key decode + verify_strict of as many bytes + ChaCha20-Poly1305 decrypt",
            compare(
                200,
                10,
                || {
                    let envelope = Envelope::from_bytes(black_box(&wire)).unwrap();
                    drop(black_box(envelope.open(&receiver_key).unwrap()))
                },
                || {
                    let sealed = black_box(&raw_sealed);
                    VerifyingKey::from_bytes(&raw_public)
                        .unwrap()
                        .verify_strict(sealed, &raw_signature)
                        .unwrap();
                    let (ciphertext, tag) =
                        sealed[signed_extra..].split_at(sealed.len() - signed_extra - 16);
                    let mut plain = ciphertext.to_vec();
                    let tag: [u8; 16] = tag.try_into().unwrap();
                    raw_cipher
                        .decrypt_inout_detached(
                            &[0u8; 12].into(),
                            &[],
                            plain.as_mut_slice().into(),
                            &tag.into(),
                        )
                        .unwrap();
                    black_box(plain);
                },
            ),
            Some(1.1),
        );
    }
}

/// Per-operation nanoseconds of each sample.
struct Samples(Vec<f64>);

impl Samples {
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

/// Times `ours` and `floor` in alternating samples of `batch` calls each.
fn compare(
    samples: usize,
    batch: u32,
    mut ours: impl FnMut(),
    mut floor: impl FnMut(),
) -> (Samples, Samples) {
    for _ in 0..batch.max(3) {
        ours();
        floor();
    }
    let mut a = Vec::with_capacity(samples);
    let mut b = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        for _ in 0..batch {
            ours();
        }
        a.push(start.elapsed().as_nanos() as f64 / f64::from(batch));
        let start = Instant::now();
        for _ in 0..batch {
            floor();
        }
        b.push(start.elapsed().as_nanos() as f64 / f64::from(batch));
    }
    (Samples(a), Samples(b))
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn row(name: &str, floor_name: &str, (ours, floor): (Samples, Samples), bar: Option<f64>) {
    let (om, fm) = (ours.percentile(0.5), floor.percentile(0.5));
    let ratio = om / fm;
    let verdict = match bar {
        Some(bar) if ratio <= bar => format!("≤ {bar}x ok"),
        Some(bar) => format!("> {bar}x MISSED"),
        None => "-".into(),
    };
    println!(
        "| {name} | {} | {} | {floor_name} | {} | {} | {ratio:.2}x | {verdict} |",
        human(om),
        human(ours.percentile(0.99)),
        human(fm),
        human(floor.percentile(0.99)),
    );
}

fn raw_keygen() -> ([u8; 32], [u8; 32]) {
    let mut seeds = [0u8; 64];
    getrandom::fill(&mut seeds).unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(seeds[..32].try_into().unwrap());
    let secret = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(&seeds[32..]).unwrap());
    (
        signing.verifying_key().to_bytes(),
        x25519_dalek::PublicKey::from(&secret).to_bytes(),
    )
}

/// RFC 9162's Merkle tree hash of these leaves, straight from sha2: pairs hashed level by
/// level, an odd last node carried up.
fn raw_merkle_root<'a>(leaves: impl Iterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut level: Vec<[u8; 32]> = leaves
        .map(|leaf| {
            Sha256::new()
                .chain_update([0])
                .chain_update(leaf)
                .finalize()
                .into()
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => Sha256::new()
                    .chain_update([1])
                    .chain_update(left)
                    .chain_update(right)
                    .finalize()
                    .into(),
                [odd] => *odd,
                _ => unreachable!(),
            })
            .collect();
    }
    level[0]
}

/// RFC 9162 §2.1.3.2: the root an audit path leads to from `leaf` at `index` of `size`.
fn raw_path_root(leaf: &[u8], index: u64, size: u64, path: &[[u8; 32]]) -> [u8; 32] {
    let node = |left: &[u8], right: &[u8]| -> [u8; 32] {
        Sha256::new()
            .chain_update([1])
            .chain_update(left)
            .chain_update(right)
            .finalize()
            .into()
    };
    let mut r: [u8; 32] = Sha256::new()
        .chain_update([0])
        .chain_update(leaf)
        .finalize()
        .into();
    let (mut f, mut s) = (index, size - 1);
    for p in path {
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    r
}

fn main() {
    let owner = Identity::generate().unwrap();
    let member = Identity::generate().unwrap();
    let room = RoomId::new("general").unwrap();
    let key = RoomKey::generate().unwrap();
    let binding = SealBinding {
        room: &room,
        epoch: 7,
        recipient: &member.kex_public_key(),
        rekeyer: &owner.sign_public_key(),
    };
    let info = binding.info();
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(member.kex_public_key().as_bytes()).unwrap();
    let sk_bytes = &member.to_secret_bytes()[33..65];
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(sk_bytes).unwrap();
    let sealed = seal_room_key(&key, &binding).unwrap();
    let sealed_bytes = sealed.to_bytes();
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed_bytes[1..33]).unwrap();

    println!("unibus foundation benchmarks (one thread; median and p99 per operation)\n");
    println!("| operation | unibus median | unibus p99 | floor | floor median | floor p99 | ratio | bar |");
    println!("|---|---|---|---|---|---|---|---|");

    row(
        "identity generate (ed25519 + x25519)",
        "raw dalek keygen from OS RNG",
        compare(
            300,
            20,
            || drop(black_box(Identity::generate().unwrap())),
            || {
                black_box(raw_keygen());
            },
        ),
        Some(1.1),
    );
    row(
        "seal room key",
        "raw hpke single_shot_seal",
        compare(
            300,
            10,
            || {
                black_box(seal_room_key(&key, &binding).unwrap());
            },
            || {
                drop(black_box(
                    hpke::single_shot_seal::<Aead, Kdf, Kem>(
                        &OpModeS::Base,
                        &pk,
                        &info,
                        key.expose_secret(),
                        &[],
                    )
                    .unwrap(),
                ))
            },
        ),
        Some(1.1),
    );
    row(
        "open room key",
        "raw hpke single_shot_open",
        compare(
            300,
            10,
            || {
                drop(black_box(
                    open_room_key(&member, &sealed, &room, 7, &owner.sign_public_key()).unwrap(),
                ))
            },
            || {
                drop(black_box(
                    hpke::single_shot_open::<Aead, Kdf, Kem>(
                        &OpModeR::Base,
                        &sk,
                        &enc,
                        &info,
                        &sealed_bytes[33..],
                        &[],
                    )
                    .unwrap(),
                ))
            },
        ),
        Some(1.1),
    );

    let link_text = format!(
        "https://members.example.com/invite#{}",
        "A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90"
    );
    let link_samples = compare(
        300,
        2000,
        || drop(black_box(InviteLink::parse(black_box(&link_text)).unwrap())),
        || drop(black_box(url::Url::parse(black_box(&link_text)).unwrap())),
    );
    let per_second = 1e9 / link_samples.0.percentile(0.5);
    row(
        "invite link parse",
        "url::Url::parse of the same link",
        link_samples,
        None,
    );

    // Rekeys seal on every core; the floor is the same number of raw HPKE seals, cut into the
    // same number of chunks on as many threads (raw seals ÷ cores).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let raw_seals_on_every_core = |pks: &[<Kem as hpke::Kem>::PublicKey]| {
        std::thread::scope(|scope| {
            for chunk in pks.chunks(pks.len().div_ceil(cores)) {
                let info = &info;
                let key = &key;
                scope.spawn(move || {
                    for pk in chunk {
                        drop(black_box(
                            hpke::single_shot_seal::<Aead, Kdf, Kem>(
                                &OpModeS::Base,
                                pk,
                                info,
                                key.expose_secret(),
                                &[],
                            )
                            .unwrap(),
                        ));
                    }
                });
            }
        })
    };
    let mut members = Vec::new();
    for (size, samples) in [(1_000, 12), (10_000, 4), (100_000, 2)] {
        let more = size - members.len();
        members.extend((0..more).map(|_| Recipient::of(&Identity::generate().unwrap())));
        let member_pks: Vec<_> = members
            .iter()
            .map(|r| <Kem as hpke::Kem>::PublicKey::from_bytes(r.kex.as_bytes()).unwrap())
            .collect();
        row(
            &format!("rekey {size} members on {cores} cores (seal all + Merkle root + sign)"),
            &format!("{size} raw hpke seals on {cores} threads"),
            compare(
                samples,
                1,
                || {
                    drop(black_box(
                        SignedManifest::rekey(&owner, &room, 2, 1, &key, &members).unwrap(),
                    ))
                },
                || raw_seals_on_every_core(&member_pks),
            ),
            Some(1.1),
        );
    }
    members.truncate(1000);

    let mut with_member = members.clone();
    with_member.push(Recipient::of(&member));
    let manifest = SignedManifest::rekey(&owner, &room, 2, 1, &key, &with_member).unwrap();
    let wire = manifest.to_bytes();
    let member_sealed = manifest
        .unverified()
        .entry_for(&member.sign_public_key())
        .unwrap()
        .sealed
        .to_bytes();
    let member_enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&member_sealed[1..33]).unwrap();
    let member_info = SealBinding {
        epoch: 2,
        ..binding
    }
    .info();
    // The v2 wire form: header (87 + len(room) bytes), signature (64), then the entries.
    let header_len = unibus::manifest::HEADER_BASE_LEN + room.as_str().len();
    let (header, rest) = wire.split_at(header_len);
    let (signature, entries) = rest.split_at(64);
    let mut signed_message = b"unibus/rekey-manifest/v2".to_vec();
    signed_message.extend_from_slice(header);
    let signed_root: [u8; 32] = header[header_len - 32..].try_into().unwrap();
    let verifying =
        ed25519_dalek::VerifyingKey::from_bytes(owner.sign_public_key().as_bytes()).unwrap();
    let dalek_signature = ed25519_dalek::Signature::from_slice(signature).unwrap();
    let raw_open = || {
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &sk,
            &member_enc,
            &member_info,
            &member_sealed[33..],
            &[],
        )
        .unwrap()
    };
    row(
        "decode + verify + open, 1,001-member manifest",
        "raw ed25519 verify + sha2 Merkle root + hpke open",
        compare(
            50,
            2,
            || {
                let signed = SignedManifest::from_bytes(black_box(&wire)).unwrap();
                drop(black_box(
                    signed
                        .open(&member, &room, 2, &owner.sign_public_key())
                        .unwrap(),
                ));
            },
            || {
                verifying
                    .verify_strict(black_box(&signed_message), &dalek_signature)
                    .unwrap();
                assert_eq!(raw_merkle_root(entries.chunks_exact(145)), signed_root);
                drop(black_box(raw_open()));
            },
        ),
        None,
    );

    let part = manifest
        .member_part(&member.sign_public_key())
        .unwrap()
        .to_bytes();
    let path: Vec<[u8; 32]> = manifest
        .member_part(&member.sign_public_key())
        .unwrap()
        .proof()
        .to_vec();
    let member_index = manifest
        .unverified()
        .index_of(&member.sign_public_key())
        .unwrap() as u64;
    let member_entry = &entries[member_index as usize * 145..][..145];
    row(
        &format!("decode + verify + open, member part ({} bytes)", part.len()),
        "raw ed25519 verify + sha2 audit path + hpke open",
        compare(
            300,
            20,
            || {
                let part = MemberPart::from_bytes(black_box(&part)).unwrap();
                drop(black_box(
                    part.open(&member, &room, 2, &owner.sign_public_key())
                        .unwrap(),
                ));
            },
            || {
                verifying
                    .verify_strict(black_box(&signed_message), &dalek_signature)
                    .unwrap();
                let root = raw_path_root(member_entry, member_index, 1001, &path);
                assert_eq!(root, signed_root);
                drop(black_box(raw_open()));
            },
        ),
        None,
    );

    message_rows(&owner, &member, &room, &manifest);

    println!(
        "\ninvite link parsing: {:.2} million links/s on one core (bar: at least 1 million/s) {}",
        per_second / 1e6,
        if per_second >= 1e6 { "ok" } else { "MISSED" }
    );
}
