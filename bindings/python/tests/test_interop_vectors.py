"""The sealed-key, manifest and envelope formats checked by an independent implementation.

These tests rebuild the golden vectors in tests/vectors/ from docs/protocol.md alone, with
pyhpke, Python's `cryptography` (Ed25519, HKDF, ChaCha20-Poly1305) and hashlib: the sealed keys
byte for byte, the manifests' Merkle trees (RFC 9162) and member parts with their own code, and
the message envelopes byte for byte. They also exchange keys in both directions between Python's
HPKE and the Rust SDK.
"""

import hashlib
import json
import pathlib
import struct

import pytest
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

import unibus

VECTOR_DIR = pathlib.Path(__file__).parents[3] / "tests" / "vectors"
SEALED_VECTORS = json.loads((VECTOR_DIR / "sealed-room-key-v1.json").read_text())
MANIFEST_VECTORS = json.loads((VECTOR_DIR / "rekey-manifest-v2.json").read_text())
ENVELOPE_VECTORS = json.loads((VECTOR_DIR / "message-envelope-v1.json").read_text())
SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305)
INFO_LABEL = b"unibus/room-key/v1"
MANIFEST_VERSION = 2
MANIFEST_CONTEXT = b"unibus/rekey-manifest/v2"
ENTRY_LEN = 145
SIGNATURE_LEN = 64
MAX_ENTRIES = 1 << 20
MAX_PROOF_LEN = 20


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


def open_with_pyhpke(sealed: bytes, kex_secret: bytes, binding: bytes) -> bytes:
    assert len(sealed) == 81 and sealed[0] == 1
    skr = SUITE.kem.deserialize_private_key(kex_secret)
    receiver = SUITE.create_recipient_context(sealed[1:33], skr, binding)
    return receiver.open(sealed[33:], aad=b"")


# RFC 9162 section 2.1, written from docs/protocol.md section 8.2.


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list) -> bytes:
    """The Merkle tree hash of a list of leaf hashes (RFC 9162 section 2.1.1)."""
    if len(leaves) == 1:
        return leaves[0]
    k = largest_power_of_two_below(len(leaves))
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def audit_path(m: int, leaves: list) -> list:
    """PATH(m, D[n]) of RFC 9162 section 2.1.3.1, bottom first."""
    if len(leaves) <= 1:
        return []
    k = largest_power_of_two_below(len(leaves))
    if m < k:
        return audit_path(m, leaves[:k]) + [mth(leaves[k:])]
    return audit_path(m - k, leaves[k:]) + [mth(leaves[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, path: list, root: bytes) -> bool:
    """The verification algorithm of RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# The wire forms of docs/protocol.md sections 8.1 and 8.3.


def parse_header(data: bytes) -> dict:
    assert data[0] == MANIFEST_VERSION
    (room_len,) = struct.unpack_from(">H", data, 1)
    assert 1 <= room_len <= 128
    offset = 3 + room_len
    room = data[3:offset].decode("ascii")
    epoch, previous = struct.unpack_from(">QQ", data, offset)
    rekeyer = data[offset + 16 : offset + 48]
    (count,) = struct.unpack_from(">I", data, offset + 48)
    root = data[offset + 52 : offset + 84]
    length = offset + 84
    assert length == 87 + room_len and len(root) == 32
    assert 1 <= epoch <= 2**63 - 1 and previous < epoch and 1 <= count <= MAX_ENTRIES
    return {
        "room": room,
        "epoch": epoch,
        "previous_epoch": previous,
        "rekeyer": rekeyer,
        "count": count,
        "root": root,
        "bytes": data[:length],
    }


def parse_manifest(wire: bytes):
    header = parse_header(wire)
    offset = len(header["bytes"])
    signature = wire[offset : offset + SIGNATURE_LEN]
    offset += SIGNATURE_LEN
    assert len(wire) - offset == ENTRY_LEN * header["count"]
    entries = [wire[offset + i * ENTRY_LEN : offset + (i + 1) * ENTRY_LEN] for i in range(header["count"])]
    return header, signature, entries


def parse_member_part(wire: bytes):
    header = parse_header(wire)
    offset = len(header["bytes"])
    signature = wire[offset : offset + SIGNATURE_LEN]
    offset += SIGNATURE_LEN
    (index,) = struct.unpack_from(">I", wire, offset)
    entry = wire[offset + 4 : offset + 4 + ENTRY_LEN]
    offset += 4 + ENTRY_LEN
    k = wire[offset]
    assert k <= MAX_PROOF_LEN
    offset += 1
    proof = [wire[offset + 32 * i : offset + 32 * (i + 1)] for i in range(k)]
    assert len(wire) == offset + 32 * k == 301 + len(header["room"]) + 32 * k
    return header, signature, index, entry, proof


def verify_header(header: dict, signature: bytes, trusted_rekeyer: bytes):
    assert header["rekeyer"] == trusted_rekeyer
    Ed25519PublicKey.from_public_bytes(trusted_rekeyer).verify(signature, MANIFEST_CONTEXT + header["bytes"])


def member_identities(case):
    for member in case["members"]:
        yield member, identity(bytes.fromhex(member["sign_seed"]), bytes.fromhex(member["kex_secret"]))


# Sealed keys.


def test_python_hpke_reproduces_every_sealed_vector_byte_for_byte():
    for case in SEALED_VECTORS["sealed_room_keys"]:
        recipient = bytes.fromhex(case["recipient_kex_public"])
        expected_info = info(case["room"], case["epoch"], recipient, bytes.fromhex(case["rekeyer_sign_public"]))
        assert expected_info.hex() == case["info"]

        ephemeral = SUITE.kem.derive_key_pair(bytes.fromhex(case["ephemeral_ikm"]))
        pkr = SUITE.kem.deserialize_public_key(recipient)
        enc, sender = SUITE.create_sender_context(pkr, expected_info, eks=ephemeral)
        ciphertext = sender.seal(bytes.fromhex(case["room_key"]), aad=b"")
        assert (b"\x01" + enc + ciphertext).hex() == case["sealed"]

        sealed = bytes.fromhex(case["sealed"])
        opened = open_with_pyhpke(sealed, bytes.fromhex(case["recipient_kex_secret"]), expected_info)
        assert opened.hex() == case["room_key"]


def test_a_key_sealed_by_python_hpke_opens_in_the_rust_sdk():
    owner, member = unibus.Identity.generate(), unibus.Identity.generate()
    room_key = bytes(range(32))
    kex = bytes.fromhex(member.kex_public_key())
    binding = info("general", 9, kex, bytes.fromhex(owner.sign_public_key()))
    enc, sender = SUITE.create_sender_context(SUITE.kem.deserialize_public_key(kex), binding)
    sealed = b"\x01" + enc + sender.seal(room_key, aad=b"")

    opened = unibus.open_room_key(member, sealed, "general", 9, owner.sign_public_key())
    assert opened.expose_bytes() == room_key


# The Merkle tree.


def test_python_merkle_tree_gives_the_certificate_transparency_reference_roots():
    leaves = [
        bytes.fromhex(x)
        for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
    ]
    hashes = [leaf_hash(leaf) for leaf in leaves]
    assert mth(hashes[:5]).hex() == "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"
    assert mth(hashes[:7]).hex() == "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"
    assert mth(hashes).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    for size in range(1, 9):
        root = mth(hashes[:size])
        for index in range(size):
            path = audit_path(index, hashes[:size])
            assert verify_inclusion(hashes[index], index, size, path, root)
            assert not verify_inclusion(hashes[index], index + 1, size, path, root)
            if index > 0:
                assert not verify_inclusion(hashes[index], index - 1, size, path, root)


# Whole manifests.


def test_manifest_vectors_parse_and_verify_with_an_independent_ed25519_and_merkle_tree():
    assert any(len(case["members"]) in (5, 7) for case in MANIFEST_VECTORS["manifests"])
    for case in MANIFEST_VECTORS["manifests"]:
        wire = bytes.fromhex(case["signed_manifest"])
        header, signature, entries = parse_manifest(wire)
        assert header["bytes"].hex() == case["header"]
        assert (header["room"], header["epoch"], header["previous_epoch"]) == (
            case["room"],
            case["epoch"],
            case["previous_epoch"],
        )
        verify_header(header, signature, bytes.fromhex(case["rekeyer_sign_public"]))
        members = [entry[:32] for entry in entries]
        assert members == sorted(members) and len(set(members)) == len(members)

        hashes = [leaf_hash(entry) for entry in entries]
        assert [h.hex() for h in hashes] == case["leaf_hashes"]
        assert mth(hashes) == header["root"]
        assert header["root"].hex() == case["merkle_root"]

        for member, me in member_identities(case):
            key = unibus.open_manifest(me, wire, header["room"], header["epoch"], case["rekeyer_sign_public"])
            assert key.expose_bytes().hex() == case["room_key"]
            # And Python opens the same member's entry on its own.
            entry = next(e for e in entries if e[:32].hex() == member["sign_public"])
            binding = info(header["room"], header["epoch"], entry[32:64], header["rekeyer"])
            opened = open_with_pyhpke(entry[64:], bytes.fromhex(member["kex_secret"]), binding)
            assert opened.hex() == case["room_key"]


def test_a_manifest_whose_entries_do_not_match_its_root_is_refused_by_the_rust_sdk():
    case = MANIFEST_VECTORS["manifests"][1]
    wire = bytearray(bytes.fromhex(case["signed_manifest"]))
    wire[-1] ^= 1
    member, me = next(member_identities(case))
    with pytest.raises(unibus.SealError.RootMismatch):
        unibus.open_manifest(me, bytes(wire), case["room"], case["epoch"], case["rekeyer_sign_public"])


# Member parts.


def test_member_part_vectors_verify_with_an_independent_merkle_proof_and_open():
    for case in MANIFEST_VECTORS["manifests"]:
        _, _, entries = parse_manifest(bytes.fromhex(case["signed_manifest"]))
        hashes = [leaf_hash(entry) for entry in entries]
        trusted = bytes.fromhex(case["rekeyer_sign_public"])
        secrets = {m["sign_public"]: m for m in case["members"]}
        assert len(case["member_parts"]) == len(entries)
        for part_case in case["member_parts"]:
            wire = bytes.fromhex(part_case["member_part"])
            header, signature, index, entry, proof = parse_member_part(wire)
            assert header["bytes"].hex() == case["header"]
            verify_header(header, signature, trusted)
            assert index == part_case["index"]
            assert entry == entries[index] and entry[:32].hex() == part_case["sign_public"]
            assert [p.hex() for p in proof] == part_case["proof"]
            # The path is RFC 9162's PATH, and it verifies against the signed root and count.
            assert proof == audit_path(index, hashes)
            assert verify_inclusion(leaf_hash(entry), index, header["count"], proof, header["root"])
            assert not verify_inclusion(leaf_hash(entry), index + 1, header["count"], proof, header["root"])
            changed = bytes([entry[0] ^ 1]) + entry[1:]
            assert not verify_inclusion(leaf_hash(changed), index, header["count"], proof, header["root"])

            member = secrets[part_case["sign_public"]]
            binding = info(header["room"], header["epoch"], entry[32:64], header["rekeyer"])
            opened = open_with_pyhpke(entry[64:], bytes.fromhex(member["kex_secret"]), binding)
            assert opened.hex() == case["room_key"]
            me = identity(bytes.fromhex(member["sign_seed"]), bytes.fromhex(member["kex_secret"]))
            key = unibus.open_member_part(me, wire, case["room"], case["epoch"], case["rekeyer_sign_public"])
            assert key.expose_bytes().hex() == case["room_key"]


def test_the_rust_sdk_refuses_a_member_part_for_another_member_or_with_a_bent_proof():
    case = MANIFEST_VECTORS["manifests"][3]
    assert len(case["members"]) == 7
    first, second = case["member_parts"][0], case["member_parts"][1]
    secrets = {m["sign_public"]: m for m in case["members"]}
    member = secrets[first["sign_public"]]
    me = identity(bytes.fromhex(member["sign_seed"]), bytes.fromhex(member["kex_secret"]))
    args = (case["room"], case["epoch"], case["rekeyer_sign_public"])

    with pytest.raises(unibus.SealError.NotARecipient):
        unibus.open_member_part(me, bytes.fromhex(second["member_part"]), *args)
    bent = bytearray(bytes.fromhex(first["member_part"]))
    bent[-1] ^= 1
    with pytest.raises(unibus.SealError.BadProof):
        unibus.open_member_part(me, bytes(bent), *args)
    with pytest.raises(unibus.SealError.TrailingBytes):
        unibus.open_member_part(me, bytes.fromhex(first["member_part"]) + b"\x00", *args)


# Message envelopes, written from docs/protocol.md section 14.

ENVELOPE_VERSION = 1
MESSAGE_CONTEXT = b"unibus/message/v1"
MESSAGE_KEY_LABEL = b"unibus/message-key/v1"
MAX_BODY_LEN = 65536


class Refused(Exception):
    """An envelope refused with the error name of docs/protocol.md sections 14.4 and 14.5."""


def parse_envelope(wire: bytes) -> dict:
    """Decodes an envelope in the order of section 14.4, raising Refused(<error>)."""
    pos = 0

    def take(n):
        nonlocal pos
        if len(wire) - pos < n:
            raise Refused("Truncated")
        pos += n
        return wire[pos - n : pos]

    version = take(1)[0]
    if version != ENVELOPE_VERSION:
        raise Refused("UnsupportedVersion")
    (room_len,) = struct.unpack(">H", take(2))
    room = take(room_len)
    if not 1 <= room_len <= 128 or not all(0x21 <= b <= 0x7E for b in room):
        raise Refused("Malformed")
    (epoch,) = struct.unpack(">Q", take(8))
    if not 1 <= epoch <= 2**63 - 1:
        raise Refused("Malformed")
    message_id = take(16)
    (sent_at,) = struct.unpack(">Q", take(8))
    if sent_at > 2**63 - 1:
        raise Refused("Malformed")
    content_type = take(take(1)[0])
    if not content_type or not all(0x20 <= b <= 0x7E for b in content_type):
        raise Refused("ContentType")
    (index,) = struct.unpack(">I", take(4))
    entry = take(ENTRY_LEN)
    k = take(1)[0]
    if k > MAX_PROOF_LEN:
        raise Refused("Malformed")
    proof = [take(32) for _ in range(k)]
    (body_len,) = struct.unpack(">I", take(4))
    if body_len > MAX_BODY_LEN:
        raise Refused("BodyTooLarge")
    header = wire[:pos]
    rest = len(wire) - pos
    if rest < body_len + 16 + 64:
        raise Refused("Truncated")
    if rest > body_len + 16 + 64:
        raise Refused("TrailingBytes")
    assert len(header) == 190 + room_len + len(content_type) + 32 * k
    return {
        "room": room.decode("ascii"),
        "epoch": epoch,
        "message_id": message_id,
        "sent_at": sent_at,
        "content_type": content_type.decode("ascii"),
        "index": index,
        "entry": entry,
        "sender": entry[:32],
        "proof": proof,
        "header": header,
        "ciphertext": wire[pos : len(wire) - 64],
        "signature": wire[len(wire) - 64 :],
    }


def message_key(room_key: bytes, room: str, epoch: int, sender: bytes, message_id: bytes):
    room_bytes = room.encode("ascii")
    info = MESSAGE_KEY_LABEL + struct.pack(">H", len(room_bytes)) + room_bytes + struct.pack(">Q", epoch) + sender
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=message_id, info=info).derive(room_key)
    return info, okm[:32], okm[32:]


def open_envelope(wire: bytes, header: dict, room_key: bytes) -> dict:
    """Section 14.5 with an epoch's verified manifest header and room key."""
    envelope = parse_envelope(wire)
    if envelope["room"] != header["room"] or envelope["epoch"] != header["epoch"]:
        raise Refused("WrongEpoch")
    if not verify_inclusion(leaf_hash(envelope["entry"]), envelope["index"], header["count"], envelope["proof"], header["root"]):
        raise Refused("NotAMember")
    try:
        Ed25519PublicKey.from_public_bytes(envelope["sender"]).verify(
            envelope["signature"], MESSAGE_CONTEXT + envelope["header"] + envelope["ciphertext"]
        )
    except InvalidSignature:
        raise Refused("BadSignature") from None
    _, key, nonce = message_key(room_key, envelope["room"], envelope["epoch"], envelope["sender"], envelope["message_id"])
    try:
        envelope["body"] = ChaCha20Poly1305(key).decrypt(nonce, envelope["ciphertext"], envelope["header"])
    except InvalidTag:
        raise Refused("DecryptFailed") from None
    return envelope


def verified_epoch_header(case) -> dict:
    """The epoch's header, verified under the trusted owner key (section 8.5, as a receiver
    does when it opens its own member part)."""
    head = bytes.fromhex(case["signed_head"])
    header = parse_header(head)
    verify_header(header, head[len(header["bytes"]) :], bytes.fromhex(case["rekeyer_sign_public"]))
    part_header, _, _, entry, _ = parse_member_part(bytes.fromhex(case["receiver"]["member_part"]))
    assert part_header["bytes"] == header["bytes"] and entry[:32] == bytes.fromhex(case["receiver"]["sign_public"])
    return header


def test_python_rebuilds_every_envelope_vector_byte_for_byte():
    for case in ENVELOPE_VECTORS["envelopes"]:
        header = verified_epoch_header(case)
        room_key = bytes.fromhex(case["room_key"])
        sender_seed = bytes.fromhex(case["sender"]["sign_seed"])
        signer = Ed25519PrivateKey.from_private_bytes(sender_seed)
        sender = bytes.fromhex(case["sender"]["sign_public"])
        assert signer.public_key().public_bytes_raw() == sender
        # The sender's entry and path come from its own member part (section 14.2).
        _, _, index, entry, proof = parse_member_part(bytes.fromhex(case["sender"]["member_part"]))
        assert entry.hex() == case["sender_entry"] and index == case["sender_index"]
        assert [p.hex() for p in proof] == case["sender_proof"]
        room = case["room"].encode("ascii")
        content_type = case["content_type"].encode("ascii")
        body = bytes.fromhex(case["body"])
        message_id = bytes.fromhex(case["message_id"])
        built_header = (
            bytes([ENVELOPE_VERSION])
            + struct.pack(">H", len(room))
            + room
            + struct.pack(">Q", case["epoch"])
            + message_id
            + struct.pack(">Q", case["sent_at"])
            + bytes([len(content_type)])
            + content_type
            + struct.pack(">I", index)
            + entry
            + bytes([len(proof)])
            + b"".join(proof)
            + struct.pack(">I", len(body))
        )
        assert built_header.hex() == case["header"]
        info, key, nonce = message_key(room_key, case["room"], case["epoch"], sender, message_id)
        assert (info.hex(), key.hex(), nonce.hex()) == (case["key_info"], case["message_key"], case["nonce"])
        ciphertext = ChaCha20Poly1305(key).encrypt(nonce, body, built_header)
        assert ciphertext.hex() == case["ciphertext"]
        signature = signer.sign(MESSAGE_CONTEXT + built_header + ciphertext)
        assert signature.hex() == case["signature"]
        assert (built_header + ciphertext + signature).hex() == case["envelope"]
        opened = open_envelope(bytes.fromhex(case["envelope"]), header, room_key)
        assert opened["body"] == body and opened["sender"] == sender
        assert len(bytes.fromhex(case["envelope"])) == 270 + len(room) + len(content_type) + 32 * len(proof) + len(body)


@pytest.mark.parametrize("invalid", ENVELOPE_VECTORS["invalid"], ids=lambda case: case["description"])
def test_python_refuses_every_invalid_envelope_with_its_documented_error(invalid):
    case = ENVELOPE_VECTORS["envelopes"][0]
    header = verified_epoch_header(case)
    with pytest.raises(Refused) as refused:
        open_envelope(bytes.fromhex(invalid["envelope"]), header, bytes.fromhex(case["room_key"]))
    assert refused.value.args[0] == invalid["error"]


# History shares, written from docs/protocol.md section 16.

HISTORY_VECTORS = json.loads((VECTOR_DIR / "history-share-v1.json").read_text())
SHARE_VERSION = 1
SHARE_CONTEXT = b"unibus/history-share/v1"


def parse_share(wire: bytes) -> dict:
    """Decodes a history share in the order of section 16.2, raising Refused(<error>)."""
    if len(wire) < 1:
        raise Refused("Truncated")
    if wire[0] != SHARE_VERSION:
        raise Refused("UnsupportedVersion")
    if len(wire) < 3:
        raise Refused("Head")
    (room_len,) = struct.unpack_from(">H", wire, 2)
    head_len = 151 + room_len
    if len(wire) < 1 + head_len:
        raise Refused("Head")
    header = parse_header(wire[1 : 1 + head_len])
    total = 361 + room_len
    if len(wire) < total:
        raise Refused("Truncated")
    if len(wire) > total:
        raise Refused("TrailingBytes")
    entry = wire[1 + head_len : 1 + head_len + ENTRY_LEN]
    if entry[64] != 1:
        raise Refused("Seal(UnsupportedVersion)")
    return {
        "header": header,
        "head_signature": wire[1 + len(header["bytes"]) : 1 + head_len],
        "entry": entry,
        "signed": wire[: total - SIGNATURE_LEN],
        "signature": wire[total - SIGNATURE_LEN :],
    }


def open_share(wire: bytes, room: str, epoch: int, owner: bytes, sign_public: bytes, kex_public: bytes, kex_secret: bytes):
    """Section 16.3: every check of a member, then HPKE open; returns (header, room key)."""
    share = parse_share(wire)
    header = share["header"]
    if header["rekeyer"] != owner:
        raise Refused("UntrustedRekeyer")
    if header["room"] != room or header["epoch"] != epoch:
        raise Refused("WrongRoomOrEpoch")
    key = Ed25519PublicKey.from_public_bytes(owner)
    try:
        key.verify(share["head_signature"], MANIFEST_CONTEXT + header["bytes"])
    except InvalidSignature:
        raise Refused("BadHeaderSignature") from None
    try:
        key.verify(share["signature"], SHARE_CONTEXT + share["signed"])
    except InvalidSignature:
        raise Refused("BadShareSignature") from None
    entry = share["entry"]
    if entry[:32] != sign_public:
        raise Refused("NotARecipient")
    if entry[32:64] != kex_public:
        raise Refused("RecipientKeyMismatch")
    try:
        room_key = open_with_pyhpke(entry[64:], kex_secret, info(room, epoch, kex_public, owner))
    except Exception:
        raise Refused("Seal(OpenFailed)") from None
    return header, room_key


def test_python_rebuilds_every_history_share_vector_byte_for_byte_and_reads_the_epoch():
    for case in HISTORY_VECTORS["shares"]:
        owner_seed = bytes.fromhex(case["rekeyer_sign_seed"])
        signer = Ed25519PrivateKey.from_private_bytes(owner_seed)
        owner = bytes.fromhex(case["rekeyer_sign_public"])
        assert signer.public_key().public_bytes_raw() == owner
        recipient = case["recipient"]
        sign_public = bytes.fromhex(recipient["sign_public"])
        kex_public = bytes.fromhex(recipient["kex_public"])
        room_key = bytes.fromhex(case["room_key"])
        binding = info(case["room"], case["epoch"], kex_public, owner)
        assert binding.hex() == case["info"]
        ephemeral = SUITE.kem.derive_key_pair(bytes.fromhex(case["ephemeral_ikm"]))
        enc, sender = SUITE.create_sender_context(SUITE.kem.deserialize_public_key(kex_public), binding, eks=ephemeral)
        sealed = b"\x01" + enc + sender.seal(room_key, aad=b"")
        entry = sign_public + kex_public + sealed
        assert entry.hex() == case["entry"]
        unsigned = bytes([SHARE_VERSION]) + bytes.fromhex(case["signed_head"]) + entry
        signature = signer.sign(SHARE_CONTEXT + unsigned)
        assert signature.hex() == case["signature"]
        wire = unsigned + signature
        assert wire.hex() == case["share"]
        assert len(wire) == 361 + len(case["room"])
        header, opened = open_share(
            wire, case["room"], case["epoch"], owner, sign_public, kex_public, bytes.fromhex(recipient["kex_secret"])
        )
        assert opened == room_key
        # The share's header verifies the epoch's senders: the recipient reads its messages.
        message = open_envelope(bytes.fromhex(case["envelope"]), header, opened)
        assert message["body"].hex() == case["body"]
        # The Rust SDK opens the same share for the same member.
        member = identity(bytes.fromhex(recipient["sign_seed"]), bytes.fromhex(recipient["kex_secret"]))
        key = unibus.open_history_share(member, wire, case["room"], case["epoch"], case["rekeyer_sign_public"])
        assert key.expose_bytes() == room_key


@pytest.mark.parametrize("invalid", HISTORY_VECTORS["invalid"], ids=lambda case: case["description"])
def test_python_refuses_every_invalid_history_share_with_its_documented_error(invalid):
    case = HISTORY_VECTORS["shares"][0]
    recipient = case["recipient"]
    with pytest.raises(Refused) as refused:
        open_share(
            bytes.fromhex(invalid["share"]),
            case["room"],
            case["epoch"],
            bytes.fromhex(case["rekeyer_sign_public"]),
            bytes.fromhex(recipient["sign_public"]),
            bytes.fromhex(recipient["kex_public"]),
            bytes.fromhex(recipient["kex_secret"]),
        )
    assert refused.value.args[0] == invalid["error"]


def test_the_rust_sdk_refuses_a_history_share_signed_by_anyone_but_the_owner():
    case = HISTORY_VECTORS["shares"][0]
    recipient = case["recipient"]
    member = identity(bytes.fromhex(recipient["sign_seed"]), bytes.fromhex(recipient["kex_secret"]))
    forged = next(i for i in HISTORY_VECTORS["invalid"] if i["error"] == "BadShareSignature")
    with pytest.raises(unibus.SealError.BadShareSignature):
        unibus.open_history_share(member, bytes.fromhex(forged["share"]), case["room"], case["epoch"], case["rekeyer_sign_public"])
