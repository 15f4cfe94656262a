"""What the Python SDK trusts across restarts, end to end: pins and epoch floors recorded with a
real membershipd in a trust file are enforced against a control plane that lies (``unibus-liar``
replays an older, validly signed epoch as the latest and names an impostor as a room's owner)."""

import asyncio
import hashlib

import pytest

import unibus
from unibus import RoomTrust, RoomUpdate

from conftest import Liar


async def next_update(stream, timeout=5.0):
    return await asyncio.wait_for(stream.__anext__(), timeout)


def test_the_safety_number_is_sha512_of_the_label_room_and_owner_in_twelve_groups():
    owner = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # RFC 8032 test 1
    room = b"general"
    digest = hashlib.sha512(
        b"unibus/owner-safety-number/v1" + len(room).to_bytes(2, "big") + room + bytes.fromhex(owner)
    ).digest()
    expected = " ".join(
        f"{int.from_bytes(digest[5 * i:5 * i + 5], 'big') % 100000:05d}" for i in range(12)
    )
    fingerprint = unibus.owner_fingerprint("general", owner)
    assert fingerprint.safety_number == expected
    assert expected == "82923 94159 02761 87939 24232 60937 80972 98870 40424 33927 35428 18703"
    assert fingerprint.qr_code == f"unibus-owner:v1:general:{owner}"
    assert unibus.parse_owner_code(fingerprint.qr_code) == fingerprint
    with pytest.raises(unibus.TrustError.BadOwnerCode):
        unibus.parse_owner_code("unibus-owner:v1:general")


def test_a_trust_file_refuses_a_rolled_back_epoch_and_a_swapped_owner_from_a_lying_server_after_a_restart(
    membershipd, tmp_path
):
    asyncio.run(trust_story(membershipd, tmp_path))


async def trust_story(server, tmp_path):
    me = unibus.Identity.generate()
    registration = await unibus.register(unibus.InviteLink.parse(server.invite()), me)
    mine = me.sign_public_key()
    path = str(tmp_path / "trust.json")

    # The real membershipd: "general" at epoch 2, "annex" at epoch 1, fetched with a trust file.
    trust = unibus.TrustStore.open(path, me)
    session = await unibus.Session.connect(me, registration.nats_urls, trust=trust)
    for room in ("general", "annex"):
        await session.create_room(room)
        await session.rekey(room)
    await session.rekey("general")
    assert (await session.room_key("general")).epoch == 2
    assert (await session.room_key("annex")).epoch == 1
    await session.close_session()

    # A new process's view: the file has the pins and floors, and is this identity's only.
    trust = unibus.TrustStore.open(path, me)
    assert trust.room("general") == RoomTrust(
        room="general", owner=mine, verified=False, epoch_floor=2
    )
    stranger = unibus.Identity.generate()
    with pytest.raises(unibus.TrustError.WrongIdentity):
        unibus.TrustStore.open(path, stranger)
    with pytest.raises(unibus.SessionError.Trust):
        await unibus.Session.connect(
            me, registration.nats_urls, trust=unibus.TrustStore.in_memory(stranger)
        )

    liar = Liar(
        me, registration.nats_urls, tmp_path, rollback=("general", 1), swap_owner="annex"
    )
    try:
        session = await unibus.Session.connect(me, [liar.nats_url], trust=trust)
        async with unibus.aio.updates(session) as stream:
            # The replayed epoch is refused as the latest, and still served as history.
            with pytest.raises(unibus.SessionError.EpochRollback):
                await session.room_key("general")
            with pytest.raises(unibus.SessionError.EpochRollback):
                await session.current_epoch("general")
            assert (await session.room_key("general", 1)).epoch == 1
            assert trust.room("general").epoch_floor == 2

            # The impostor's validly signed manifest is refused because the owner is pinned.
            with pytest.raises(unibus.SessionError.OwnerChanged):
                await session.room_key("annex")
            assert await next_update(stream) == RoomUpdate.OWNER_CHANGED(
                room="annex", pinned=mine, found=liar.impostor, verified=False
            )

            # Out of band: compare, mark verified; accept a new owner only deliberately.
            fingerprint = trust.owner_fingerprint("general")
            assert fingerprint == unibus.owner_fingerprint("general", mine)
            assert len(fingerprint.safety_number.split(" ")) == 12
            trust.mark_owner_verified("general", mine)
            with pytest.raises(unibus.TrustError.OwnerMismatch):
                trust.mark_owner_verified("annex", liar.impostor)
            trust.accept_owner("annex", liar.impostor)
            assert (await session.room_key("annex")).epoch == 1
        await session.close_session()
    finally:
        liar.stop()

    assert unibus.TrustStore.open(path, me).rooms() == [
        RoomTrust(room="annex", owner=liar.impostor, verified=True, epoch_floor=1),
        RoomTrust(room="general", owner=mine, verified=True, epoch_floor=2),
    ]
