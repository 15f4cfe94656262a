"""Quickstart: the Python SDK from invite link to room key, as an app uses it.

    membershipd invite create    # twice: one link for the room owner, one for the member
    pip install unibus-*.whl     # the wheel that bindings/python/build-wheel.sh builds
    python3 examples/python/quickstart.py OWNER_LINK MEMBER_LINK

Both people redeem their invites with fresh identities and log in to the cluster with their own
keys. The owner creates a room, adds the member and rekeys; the member sees each change through
a watch and opens the keys of epochs 1 and 2; both send a message and the member reads them
back, opened and verified; once removed, the member cannot open epoch 3. A
real app keeps ``export_secret_bytes()`` and the registration in the platform's keychain and
reconnects with them instead of registering again.
"""

import asyncio
import sys

import unibus


async def join(link_text):
    """Redeems the link with a fresh identity and logs in."""
    me = unibus.Identity.generate()
    registration = await unibus.register(unibus.InviteLink.parse(link_text), me)
    session = await unibus.Session.connect(me, registration.nats_urls)
    print(f"registered and logged in as {me.sign_public_key()}")
    return me, session


async def expect_update(stream):
    update = await asyncio.wait_for(stream.__anext__(), 10)
    print(f"  member sees {update}")


async def main(owner_link, member_link):
    _, owner = await join(owner_link)
    member_id, member = await join(member_link)
    room = "quickstart-" + member_id.sign_public_key()[:8]

    async with unibus.aio.updates(member) as updates:
        await owner.create_room(room)
        await owner.add_member(room, member_id.sign_public_key())
        await expect_update(updates)

        for _ in range(2):
            sealed = await owner.rekey(room)
            await expect_update(updates)
            opened = await member.room_key(room)
            same = opened.key.expose_bytes() == sealed.key.expose_bytes()
            print(f"  epoch {opened.epoch}: member opened the owner's key: {same}")

        text = "text/plain; charset=utf-8"
        await owner.send(room, b"welcome", text)
        sent = await member.send(room, b"thanks", text)
        print(f"  member sent message {sent.id} at {sent.position}")
        page = await member.messages(room, unibus.MessagePage.LATEST(limit=10))
        for received in page.messages:
            if received.message is None:
                raise SystemExit(f"a message could not be read: {received.unreadable}")
            body = received.message.body.decode()
            print(f'  member reads "{body}" from {received.message.sender}')

        await owner.remove_member(room, member_id.sign_public_key())
        await expect_update(updates)
        third = await owner.rekey(room)
        try:
            await member.room_key(room)
            raise SystemExit("the removed member opened a key")
        except unibus.SessionError.NotMember:
            print(f"  epoch {third.epoch}: member refused")

    await owner.close_session()
    await member.close_session()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: quickstart.py OWNER_INVITE_LINK MEMBER_INVITE_LINK")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
