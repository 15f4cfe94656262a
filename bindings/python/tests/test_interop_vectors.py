"""The sealed-key format checked by an independent implementation (pyhpke + cryptography).

These tests rebuild the golden vectors in tests/vectors/ from docs/protocol.md alone, byte for
byte, and exchange keys in both directions between Python's HPKE and the Rust SDK.
"""

import json
import pathlib
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

import unibus

VECTORS = json.loads(
    (pathlib.Path(__file__).parents[3] / "tests" / "vectors" / "sealed-room-key-v1.json").read_text()
)
SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305)
INFO_LABEL = b"unibus/room-key/v1"
MANIFEST_CONTEXT = b"unibus/rekey-manifest/v1"


def info(room: str, epoch: int, recipient_kex: bytes, rekeyer_sign: bytes) -> bytes:
    room_bytes = room.encode("ascii")
    return (
        INFO_LABEL
        + struct.pack(">H", len(room_bytes))
        + room_bytes
        + struct.pack(">Q", epoch)
        + recipient_kex
        + rekeyer_sign
    )


def identity(sign_seed: bytes, kex_secret: bytes) -> unibus.Identity:
    return unibus.Identity.from_secret_bytes(b"\x01" + sign_seed + kex_secret)


def test_python_hpke_reproduces_every_sealed_vector_byte_for_byte():
    for case in VECTORS["sealed_room_keys"]:
        recipient = bytes.fromhex(case["recipient_kex_public"])
        expected_info = info(case["room"], case["epoch"], recipient, bytes.fromhex(case["rekeyer_sign_public"]))
        assert expected_info.hex() == case["info"]

        ephemeral = SUITE.kem.derive_key_pair(bytes.fromhex(case["ephemeral_ikm"]))
        pkr = SUITE.kem.deserialize_public_key(recipient)
        enc, sender = SUITE.create_sender_context(pkr, expected_info, eks=ephemeral)
        ciphertext = sender.seal(bytes.fromhex(case["room_key"]), aad=b"")
        assert (b"\x01" + enc + ciphertext).hex() == case["sealed"]

        sealed = bytes.fromhex(case["sealed"])
        skr = SUITE.kem.deserialize_private_key(bytes.fromhex(case["recipient_kex_secret"]))
        receiver = SUITE.create_recipient_context(sealed[1:33], skr, expected_info)
        assert receiver.open(sealed[33:], aad=b"").hex() == case["room_key"]


def test_a_key_sealed_by_python_hpke_opens_in_the_rust_sdk():
    owner, member = unibus.Identity.generate(), unibus.Identity.generate()
    room_key = bytes(range(32))
    kex = bytes.fromhex(member.kex_public_key())
    binding = info("general", 9, kex, bytes.fromhex(owner.sign_public_key()))
    enc, sender = SUITE.create_sender_context(SUITE.kem.deserialize_public_key(kex), binding)
    sealed = b"\x01" + enc + sender.seal(room_key, aad=b"")

    opened = unibus.open_room_key(member, sealed, "general", 9, owner.sign_public_key())
    assert opened.expose_bytes() == room_key


def parse_manifest(wire: bytes):
    body, signature = wire[:-64], wire[-64:]
    assert body[0] == 1
    (room_len,) = struct.unpack_from(">H", body, 1)
    offset = 3 + room_len
    room = body[3:offset].decode("ascii")
    epoch, previous = struct.unpack_from(">QQ", body, offset)
    offset += 16
    rekeyer = body[offset : offset + 32]
    (count,) = struct.unpack_from(">I", body, offset + 32)
    offset += 36
    entries = []
    for _ in range(count):
        entries.append((body[offset : offset + 32], body[offset + 32 : offset + 64], body[offset + 64 : offset + 145]))
        offset += 145
    assert offset == len(body)
    return room, epoch, previous, rekeyer, entries, body, signature


def test_manifest_vectors_parse_and_verify_with_an_independent_ed25519():
    for case in VECTORS["manifests"]:
        wire = bytes.fromhex(case["signed_manifest"])
        room, epoch, previous, rekeyer, entries, body, signature = parse_manifest(wire)
        assert (room, epoch, previous) == (case["room"], case["epoch"], case["previous_epoch"])
        assert rekeyer.hex() == case["rekeyer_sign_public"]
        Ed25519PublicKey.from_public_bytes(rekeyer).verify(signature, MANIFEST_CONTEXT + body)
        assert [m for m, _, _ in entries] == sorted(m for m, _, _ in entries)

        for member in case["members"]:
            me = identity(bytes.fromhex(member["sign_seed"]), bytes.fromhex(member["kex_secret"]))
            key = unibus.open_manifest(me, wire, room, epoch, case["rekeyer_sign_public"])
            assert key.expose_bytes().hex() == case["room_key"]
            # And Python opens the same member's entry on its own.
            _, kex, sealed = next(e for e in entries if e[0].hex() == member["sign_public"])
            skr = SUITE.kem.deserialize_private_key(bytes.fromhex(member["kex_secret"]))
            receiver = SUITE.create_recipient_context(sealed[1:33], skr, info(room, epoch, kex, rekeyer))
            assert receiver.open(sealed[33:], aad=b"").hex() == case["room_key"]
