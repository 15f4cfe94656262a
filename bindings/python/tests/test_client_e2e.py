"""The Python SDK end to end, against a real membershipd with its nats-server: redeem invites,
log in by key, follow a room through being added, rekeyed and removed, and be revoked."""

import asyncio
import sys
import time

import pytest

import unibus
from unibus import ConnectionState, RoomUpdate, SessionEnd, WatchEnd


async def next_update(stream, timeout=5.0):
    return await asyncio.wait_for(stream.__anext__(), timeout)


async def registered(server):
    me = unibus.Identity.generate()
    link = unibus.InviteLink.parse(server.invite())
    registration = await unibus.register(link, me)
    return me, registration


async def wait_for_state(session, wanted, within=5.0):
    deadline = time.monotonic() + within
    while session.state() != wanted:
        assert time.monotonic() < deadline, f"still {session.state()}"
        await asyncio.sleep(0.02)


def test_a_member_is_added_rekeyed_removed_and_revoked_and_sees_each_step(membershipd):
    asyncio.run(member_story(membershipd))


async def member_story(server):
    owner, owner_registration = await registered(server)
    alice, alice_registration = await registered(server)
    assert alice_registration.sign_public_key == alice.sign_public_key()
    assert alice_registration.nats_urls

    owner_session = await unibus.Session.connect(owner, owner_registration.nats_urls)
    alice_session = await unibus.Session.connect(alice, alice_registration.nats_urls)
    assert alice_session.state() == ConnectionState.CONNECTED()

    async with unibus.aio.updates(alice_session) as stream:
        room = await owner_session.create_room("general")
        assert (room.owner, room.epoch) == (owner.sign_public_key(), 0)
        assert not await alice_session.is_member("general")
        with pytest.raises(unibus.SessionError.NotMember) as refused:
            await alice_session.current_epoch("general")
        # A refusal carries the protocol's code and is not worth retrying.
        assert (refused.value.refusal_code(), refused.value.is_transient()) == ("not_member", False)
        assert refused.value.reason == "not a member of this room"

        await owner_session.add_member("general", alice.sign_public_key())
        assert await next_update(stream) == RoomUpdate.ADDED(room="general")
        assert await alice_session.is_member("general")
        with pytest.raises(unibus.SessionError.NoKey):
            await alice_session.room_key("general")

        first = await owner_session.rekey("general")
        assert first.epoch == 1
        assert await next_update(stream) == RoomUpdate.NEW_EPOCH(room="general", epoch=1)
        opened = await alice_session.room_key("general")
        assert opened.epoch == 1
        assert opened.key.expose_bytes() == first.key.expose_bytes()

        class Progress(unibus.RekeyObserver):
            def __init__(self, go_on):
                self.reports, self.go_on = [], go_on

            def on_progress(self, progress):
                self.reports.append(progress)
                return self.go_on

        stop = Progress(go_on=False)
        with pytest.raises(unibus.SessionError.Cancelled):
            await owner_session.rekey_with_progress("general", stop)
        assert stop.reports == [unibus.RekeyProgress.SEALED(done=2, total=2)]
        assert await owner_session.current_epoch("general") == 1
        watched = Progress(go_on=True)
        second = await owner_session.rekey_with_progress("general", watched)
        assert watched.reports == [unibus.RekeyProgress.SEALED(done=2, total=2)]
        assert await next_update(stream) == RoomUpdate.NEW_EPOCH(room="general", epoch=2)
        assert await alice_session.current_epoch("general") == 2
        latest = await alice_session.room_key("general")
        assert latest.key.expose_bytes() == second.key.expose_bytes()
        earlier = await alice_session.room_key("general", 1)
        assert earlier.key.expose_bytes() == first.key.expose_bytes()
        rooms = await alice_session.my_rooms()
        assert [(r.id, r.owner, r.epoch) for r in rooms] == [
            ("general", owner.sign_public_key(), 2)
        ]
        with pytest.raises(unibus.SessionError.NotOwner):
            await alice_session.rekey("general")

        await owner_session.remove_member("general", alice.sign_public_key())
        assert await next_update(stream) == RoomUpdate.REMOVED(room="general")
        third = await owner_session.rekey("general")
        assert third.epoch == 3
        for epoch in (None, 3, 2):
            with pytest.raises(unibus.SessionError.NotMember):
                await alice_session.room_key("general", epoch)
        assert not await alice_session.is_member("general")

        server.cli("user", "revoke", alice.sign_public_key())
        await wait_for_state(alice_session, ConnectionState.ENDED(reason=SessionEnd.REVOKED))
        remaining = [update async for update in stream]
        assert all(u == RoomUpdate.DISCONNECTED() for u in remaining)
        assert stream.end == WatchEnd.SESSION_ENDED(reason=SessionEnd.REVOKED)

    with pytest.raises(unibus.SessionError.Ended):
        await alice_session.my_rooms()
    with pytest.raises(unibus.SessionError.LoginRefused):
        await unibus.Session.connect(alice, alice_registration.nats_urls)
    # Told where to ask, a new session learns why it is refused: the identity is revoked.
    asking = unibus.SessionOptions(
        login_patience_ms=500, status_server_url=alice_registration.server_url
    )
    with pytest.raises(unibus.SessionError.Ended) as ended:
        await unibus.Session.connect(alice, alice_registration.nats_urls, asking)
    assert "revoked" in str(ended.value)
    assert await owner_session.current_epoch("general") == 3
    await owner_session.close_session()
    with pytest.raises(unibus.SessionError.Ended):
        await owner_session.my_rooms()


def test_registration_refusals_are_typed_and_change_nothing(membershipd):
    async def story():
        link = unibus.InviteLink.parse(membershipd.invite())
        me = unibus.Identity.generate()
        first = await unibus.register(link, me)
        assert await unibus.register(link, me) == first  # a retry after a lost reply
        with pytest.raises(unibus.RegisterError.InviteUsed) as used:
            await unibus.register(link, unibus.Identity.generate())
        assert (used.value.refusal_code(), used.value.is_transient()) == ("invite_used", False)
        unknown = unibus.InviteLink.parse(
            unibus.format_invite_link(link.server_url(), "ab" * 32)
        )
        with pytest.raises(unibus.RegisterError.InviteUnknown):
            await unibus.register(unknown, unibus.Identity.generate())

    asyncio.run(story())
    assert len(membershipd.cli("user", "list")) == 1


def test_bad_arguments_raise_typed_errors_before_any_request(membershipd):
    async def story():
        me, registration = await registered(membershipd)
        session = await unibus.Session.connect(me, registration.nats_urls)
        with pytest.raises(unibus.SessionError.InvalidArgument) as invalid:
            await session.is_member("not a room id")
        assert (invalid.value.refusal_code(), invalid.value.is_transient()) == (None, False)
        with pytest.raises(unibus.SessionError.InvalidArgument):
            await session.add_member("general", "not-a-key")
        with pytest.raises(unibus.SessionError.Connect):
            await unibus.Session.connect(me, ["not a url at all"])
        await session.close_session()

    asyncio.run(story())


def test_a_listener_that_raises_does_not_stop_its_watch(membershipd):
    class Flaky(unibus.WatchListener):
        def __init__(self, loop, seen):
            self.loop, self.seen, self.calls = loop, seen, 0

        def on_update(self, update):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("the app's bug")
            self.loop.call_soon_threadsafe(self.seen.put_nowait, update)

        def on_error(self, message):
            pass

        def on_close(self, end):
            pass

    async def story():
        me, registration = await registered(membershipd)
        session = await unibus.Session.connect(me, registration.nats_urls)
        seen = asyncio.Queue()
        handle = await session.watch(Flaky(asyncio.get_running_loop(), seen))
        await session.create_room("general")
        await session.rekey("general")  # the listener raises on this one
        await session.rekey("general")
        assert await asyncio.wait_for(seen.get(), 5) == RoomUpdate.NEW_EPOCH(
            room="general", epoch=2
        )
        handle.cancel()
        await session.close_session()

    asyncio.run(story())


async def next_message(stream, timeout=5.0):
    """The stream's next message; membership updates before it are passed over."""
    while True:
        update = await next_update(stream, timeout)
        if update.is_message():
            return update


def test_members_send_and_read_messages_and_a_watch_delivers_new_ones(membershipd):
    asyncio.run(messages_story(membershipd))


async def messages_story(server):
    (owner, owner_reg), (alice, alice_reg) = await registered(server), await registered(server)
    owner_session = await unibus.Session.connect(owner, owner_reg.nats_urls)
    alice_session = await unibus.Session.connect(alice, alice_reg.nats_urls)
    await owner_session.create_room("general")
    await owner_session.add_member("general", alice.sign_public_key())
    await owner_session.rekey("general")

    async with unibus.aio.updates(alice_session, messages=True) as stream:
        hello = await owner_session.send("general", b"hello", "text/plain")
        assert (hello.epoch, hello.duplicate, len(hello.id)) == (1, False, 32)
        live = await next_message(stream)
        assert live.room == "general"
        assert live.message == unibus.ReceivedMessage(
            room="general",
            position=hello.position,
            time=live.message.time,
            message=unibus.OpenedMessage(
                sender=owner.sign_public_key(),
                epoch=1,
                id=hello.id,
                sent_at=live.message.message.sent_at,
                content_type="text/plain",
                body=b"hello",
            ),
            unreadable=None,
        )
        # The cluster's storage time and the sender's clock: both now, in milliseconds.
        now_ms = time.time() * 1000
        assert abs(live.message.time - now_ms) < 60_000
        assert abs(live.message.message.sent_at - now_ms) < 60_000
        reply = await alice_session.send("general", bytes(range(256)), "application/octet-stream")
        assert reply.position > hello.position
        assert (await next_message(stream)).message.position == reply.position

    page = await owner_session.messages("general", unibus.MessagePage.LATEST(limit=10))
    assert not page.more
    assert [(m.position, m.message.sender, m.message.body) for m in page.messages] == [
        (hello.position, owner.sign_public_key(), b"hello"),
        (reply.position, alice.sign_public_key(), bytes(range(256))),
    ]
    older = await owner_session.messages(
        "general", unibus.MessagePage.BEFORE(position=reply.position, limit=1)
    )
    assert [m.message.id for m in older.messages] == [hello.id]
    newer = await owner_session.messages(
        "general", unibus.MessagePage.AFTER(position=hello.position, limit=1)
    )
    assert [m.message.id for m in newer.messages] == [reply.id]
    assert not newer.more

    # A registered user who is not a member can neither post nor read.
    carol, carol_reg = await registered(server)
    carol_session = await unibus.Session.connect(carol, carol_reg.nats_urls)
    with pytest.raises(unibus.SessionError.NotMember) as refused:
        await carol_session.send("general", b"let me in", "text/plain")
    assert (refused.value.refusal_code(), refused.value.is_transient()) == ("not_member", False)
    with pytest.raises(unibus.SessionError.NotMember):
        await carol_session.messages("general", unibus.MessagePage.LATEST(limit=10))
    after = await owner_session.messages("general", unibus.MessagePage.LATEST(limit=10))
    assert [m.position for m in after.messages] == [hello.position, reply.position]
    for session in (owner_session, alice_session, carol_session):
        await session.close_session()


def test_bad_message_arguments_raise_typed_errors_before_any_request(membershipd):
    async def story():
        me, registration = await registered(membershipd)
        session = await unibus.Session.connect(me, registration.nats_urls)
        # A room this identity is not in: any request would be refused with NotMember instead.
        with pytest.raises(unibus.SessionError.BodyTooLarge) as large:
            await session.send("elsewhere", bytes(65_537), "text/plain")
        assert (large.value.refusal_code(), large.value.is_transient()) == (None, False)
        assert "65537" in large.value.reason
        with pytest.raises(unibus.SessionError.InvalidArgument):
            await session.send("elsewhere", b"hi", "")
        with pytest.raises(unibus.SessionError.InvalidArgument):
            await session.send("not a room id", b"hi", "text/plain")
        for page in (unibus.MessagePage.LATEST(limit=0), unibus.MessagePage.LATEST(limit=1001)):
            with pytest.raises(unibus.SessionError.InvalidArgument):
                await session.messages("elsewhere", page)
        with pytest.raises(unibus.SessionError.NotMember):
            await session.send("elsewhere", bytes(65_536), "text/plain")
        await session.close_session()

    asyncio.run(story())


async def keyed_room_with_member(server):
    """An owner's session with its room "general", rekeyed after adding a member; the member's
    identity and registration."""
    (owner, owner_reg), (member, member_reg) = await registered(server), await registered(server)
    owner_session = await unibus.Session.connect(owner, owner_reg.nats_urls)
    await owner_session.create_room("general")
    await owner_session.add_member("general", member.sign_public_key())
    await owner_session.rekey("general")
    return owner_session, member, member_reg


# A device that takes one message and dies before handling it (os._exit: nothing is cleaned up,
# as when the process is killed). The short wait gives an adapter that ran ahead of the app
# (one that marked queued messages as handled) the time to write their cursors; what is
# asserted does not depend on it.
DIES_WHILE_HANDLING = """
import asyncio, os, sys
import unibus

async def main():
    me = unibus.Identity.from_secret_bytes(bytes.fromhex(sys.argv[1]))
    trust = unibus.TrustStore.open(sys.argv[2], me)
    session = await unibus.Session.connect(me, sys.argv[3:], trust=trust)
    async with unibus.aio.updates(session, messages=True) as stream:
        async for update in stream:
            if update.is_message():
                print(update.message.message.body.decode(), flush=True)
                await asyncio.sleep(0.5)
                os._exit(0)

asyncio.run(main())
"""


def test_a_message_taken_by_a_process_that_dies_before_handling_it_is_delivered_again(
    membershipd, tmp_path
):
    async def story():
        owner_session, alice, alice_reg = await keyed_room_with_member(membershipd)
        sent = [
            (await owner_session.send("general", body, "text/plain")).position
            for body in (b"one", b"two", b"three")
        ]
        path = str(tmp_path / "alice-trust.json")

        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            DIES_WHILE_HANDLING,
            alice.export_secret_bytes().hex(),
            path,
            *alice_reg.nats_urls,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(child.communicate(), 30)
        assert (child.returncode, out) == (0, b"one\n")

        # The restart: the same identity and trust file get every message from the first, once.
        trust = unibus.TrustStore.open(path, alice)
        alice_session = await unibus.Session.connect(alice, alice_reg.nats_urls, trust=trust)
        async with unibus.aio.updates(alice_session, messages=True) as stream:
            got = [(await next_message(stream)).message for _ in sent]
        assert [(m.position, m.message.body) for m in got] == list(
            zip(sent, (b"one", b"two", b"three"))
        )
        # Handled now (leaving the block wrote the last cursor): a third watch catches up on
        # nothing, and its first message is the next one sent.
        async with unibus.aio.updates(alice_session, messages=True) as stream:
            four = await owner_session.send("general", b"four", "text/plain")
            assert (await next_message(stream)).message.position == four.position
        for session in (owner_session, alice_session):
            await session.close_session()

    asyncio.run(story())


def test_a_watch_read_with_waits_given_up_after_1_ms_loses_no_message(membershipd):
    # Each wait for the next update is given up after about 1 ms and started again, so many end
    # just as the SDK finished them (uniffi then frees the finished result): the numbered
    # handoff hands that update to the next wait. Half the messages are caught up, half live.
    # Bounded: 60 messages within 60 s; a wait that keeps missing is given a little longer.
    async def story():
        owner_session, alice, alice_reg = await keyed_room_with_member(membershipd)
        alice_session = await unibus.Session.connect(alice, alice_reg.nats_urls)
        bodies = [f"message {n}".encode() for n in range(60)]

        async def send(some):
            for body in some:
                await owner_session.send("general", body, "text/plain")

        await send(bodies[:30])
        async with unibus.aio.updates(alice_session, messages=True) as stream:
            live = asyncio.create_task(send(bodies[30:]))
            got, given_up, missed_in_a_row = [], 0, 0
            deadline = time.monotonic() + 60
            while len(got) < len(bodies):
                assert time.monotonic() < deadline, f"{len(got)} messages within 60 s"
                try:
                    update = await asyncio.wait_for(
                        stream.__anext__(), 0.001 * (1 + missed_in_a_row)
                    )
                except asyncio.TimeoutError:
                    given_up += 1
                    missed_in_a_row += 1
                    continue
                missed_in_a_row = 0
                if update.is_message():
                    got.append(update.message.message.body)
                    assert got == bodies[: len(got)], "every message, in order, none lost"
            await live
        assert given_up > 0
        for session in (owner_session, alice_session):
            await session.close_session()

    asyncio.run(story())


def test_a_watch_stopped_after_a_given_up_wait_leaves_the_message_it_missed_to_the_next_one(
    membershipd, tmp_path
):
    # "Wait a moment for a message, on timeout stop": each round starts a watch on the same
    # trust file, waits once for a message (given up after 0.5 to 6 ms), and leaves the block.
    # A wait given up just as the SDK finished it (uniffi then frees the finished result) took a
    # message the loop never got: leaving the block must not count it as handled, so a later
    # round gets it. One the loop got counts as handled. Bounded: 40 messages within 60 s.
    async def story():
        owner_session, alice, alice_reg = await keyed_room_with_member(membershipd)
        bodies = [f"message {n}".encode() for n in range(40)]
        for body in bodies:
            await owner_session.send("general", body, "text/plain")
        trust = unibus.TrustStore.open(str(tmp_path / "alice-trust.json"), alice)
        alice_session = await unibus.Session.connect(alice, alice_reg.nats_urls, trust=trust)

        got, rounds, given_up = [], 0, 0
        deadline = time.monotonic() + 60
        while len(got) < len(bodies):
            assert time.monotonic() < deadline, f"{len(got)} messages within 60 s"
            rounds += 1
            wait = 0.0005 * (1 + rounds % 12)
            async with unibus.aio.updates(alice_session, messages=True) as stream:
                try:
                    update = await asyncio.wait_for(next_message(stream), wait)
                except asyncio.TimeoutError:
                    given_up += 1
                    continue
            got.append(update.message.message.body)
            assert got == bodies[: len(got)], "every message, in order, none lost, none twice"
        assert given_up > 0
        for session in (owner_session, alice_session):
            await session.close_session()

    asyncio.run(story())


def test_a_member_added_later_reads_earlier_epochs_once_the_owner_shares_them(membershipd):
    asyncio.run(history_story(membershipd))


async def history_story(server):
    (owner, owner_reg), (bob, bob_reg) = await registered(server), await registered(server)
    owner_session = await unibus.Session.connect(owner, owner_reg.nats_urls)
    bob_session = await unibus.Session.connect(bob, bob_reg.nats_urls)
    await owner_session.create_room("general")
    await owner_session.rekey("general")
    early = await owner_session.send("general", b"before bob", "text/plain")

    # The default: Bob, added later, reads epoch 1 as "no key".
    assert owner_session.history_policy("general") == unibus.HistoryPolicy.JOINED
    await owner_session.add_member("general", bob.sign_public_key())
    await owner_session.rekey("general")
    page = await bob_session.messages("general", unibus.MessagePage.LATEST(limit=10))
    assert [m.unreadable for m in page.messages] == [unibus.Unreadable.NO_KEY(epoch=1)]
    with pytest.raises(unibus.SessionError.NoKey):
        await bob_session.room_key("general", 1)

    # Only the owner sets a policy; it shares Bob's history, and Bob reads it.
    with pytest.raises(unibus.SessionError.NotOwner):
        bob_session.set_history_policy("general", unibus.HistoryPolicy.SHARED)
    owner_session.set_history_policy("general", unibus.HistoryPolicy.SHARED)
    assert owner_session.history_policy("general") == unibus.HistoryPolicy.SHARED
    async with unibus.aio.updates(bob_session) as stream:
        assert await owner_session.share_history("general", bob.sign_public_key()) == 2
        # Bob's watch is told which epochs came.
        update = await next_update(stream)
        while not update.is_history_shared():
            update = await next_update(stream)
        assert update == unibus.RoomUpdate.HISTORY_SHARED(room="general", epochs=[1, 2])
    page = await bob_session.messages("general", unibus.MessagePage.LATEST(limit=10))
    assert [(m.position, m.message.body) for m in page.messages] == [(early.position, b"before bob")]
    with pytest.raises(unibus.SessionError.NotOwner):
        await bob_session.share_history("general", bob.sign_public_key())
    for session in (owner_session, bob_session):
        await session.close_session()
