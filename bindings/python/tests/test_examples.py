"""The quickstarts in examples/ run their whole story against a real membershipd: the Python
one (with the installed unibus package, as an app runs it), and the Rust one (built by scripts/test.sh; ``$UNIBUS_RUST_QUICKSTART`` overrides where).
The messages the Rust quickstart sends are read here in Python, across languages."""

import asyncio
import os
import pathlib
import subprocess
import sys

import unibus

REPO = pathlib.Path(__file__).resolve().parents[3]

EXPECTED = [
    "  epoch 1: member opened the owner's key: true",
    "  epoch 2: member opened the owner's key: true",
    "  epoch 3: member refused",
]
# Each line of a message read back starts so; the sender's key follows.
READ = ['  member reads "welcome" from ', '  member reads "thanks" from ']


def run(command, env=None):
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for line in EXPECTED:
        assert line.lower() in (l.lower() for l in lines), done.stdout
    reads = [l for l in lines if l.startswith("  member reads ")]
    assert [r[: len(prefix)] for r, prefix in zip(reads, READ)] == READ, done.stdout
    return lines


def test_the_python_quickstart_runs_its_whole_story(membershipd):
    script = REPO / "examples/python/quickstart.py"
    run([sys.executable, str(script), membershipd.invite(), membershipd.invite()])


def rust_quickstart():
    binary = os.environ.get("UNIBUS_RUST_QUICKSTART") or REPO / "target/debug/examples/quickstart"
    assert pathlib.Path(binary).is_file(), f"{binary} is missing: run scripts/test.sh"
    return str(binary)


def test_the_rust_quickstart_runs_its_whole_story(membershipd):
    run([rust_quickstart(), membershipd.invite(), membershipd.invite()])


def test_messages_the_rust_quickstart_sends_are_read_in_python(membershipd):
    asyncio.run(read_the_rust_quickstarts_messages(membershipd))


async def read_the_rust_quickstarts_messages(server):
    reader = unibus.Identity.generate()
    registration = await unibus.register(unibus.InviteLink.parse(server.invite()), reader)
    command = [rust_quickstart(), server.invite(), server.invite(), reader.sign_public_key()]
    lines = await asyncio.to_thread(run, command)
    # "  owner added reader <key> to room <room>"; "  member reads "..." from <sender>".
    room = next(l for l in lines if l.startswith("  owner added reader ")).split()[-1]
    senders = [l.split()[-1] for l in lines if l.startswith("  member reads ")]

    session = await unibus.Session.connect(reader, registration.nats_urls)
    page = await session.messages(room, unibus.MessagePage.LATEST(limit=10))
    assert not page.more
    assert [(m.message.body, m.message.sender) for m in page.messages] == list(
        zip([b"welcome", b"thanks"], senders)
    )
    assert all(m.unreadable is None and m.room == room for m in page.messages)
    assert [m.message.content_type for m in page.messages] == ["text/plain; charset=utf-8"] * 2
    # A watch with messages catches up on the same two, in order.
    async with unibus.aio.updates(session, messages=True) as stream:
        caught_up = []
        while len(caught_up) < 2:
            update = await asyncio.wait_for(stream.__anext__(), 10)
            if update.is_message():
                caught_up.append(update.message)
    assert caught_up == page.messages
    await session.close_session()
