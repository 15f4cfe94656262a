"""The Python bindings call the real native library: identities, invite links, sealed keys."""

import asyncio

import pytest

import unibus

TOKEN = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def recipient(identity):
    return unibus.Recipient(
        sign_public_key=identity.sign_public_key(),
        kex_public_key=identity.kex_public_key(),
    )


def test_identity_exports_and_imports_its_secrets():
    alice = unibus.Identity.generate()
    again = unibus.Identity.from_secret_bytes(alice.export_secret_bytes())
    assert again.sign_public_key() == alice.sign_public_key()
    assert again.kex_public_key() == alice.kex_public_key()
    assert alice.nkey_public().startswith("U") and len(alice.nkey_public()) == 56
    assert len(alice.sign(b"hello")) == 64


def test_identity_import_rejects_bad_bytes_with_a_typed_error():
    with pytest.raises(unibus.IdentityError.WrongLength):
        unibus.Identity.from_secret_bytes(b"\x01" * 10)
    with pytest.raises(unibus.IdentityError.UnsupportedVersion):
        unibus.Identity.from_secret_bytes(b"\x07" + b"\x01" * 64)


def test_public_key_validation_normalizes_case_and_rejects_zero():
    key = unibus.Identity.generate().sign_public_key()
    assert unibus.validate_sign_public_key(key.upper()) == key
    with pytest.raises(unibus.KeyError.AllZero):
        unibus.validate_kex_public_key("0" * 64)
    with pytest.raises(unibus.KeyError.WrongLength):
        unibus.validate_sign_public_key("abc")
    with pytest.raises(unibus.KeyError.NotHex):
        unibus.validate_sign_public_key("g" * 64)


def test_invite_link_parses_what_users_paste():
    link = unibus.InviteLink.parse(f"  https://Members.Example.com/invite#{TOKEN.upper()}\n")
    assert link.server_url() == "https://members.example.com"
    assert link.register_url() == "https://members.example.com/register"
    assert link.to_url_string() == f"https://members.example.com/invite#{TOKEN}"
    assert link.deep_link() == f"unibus://members.example.com/invite#{TOKEN}"


@pytest.mark.parametrize(
    "text, error",
    [
        ("", unibus.InviteLinkError.Empty),
        (TOKEN, unibus.InviteLinkError.MissingServer),
        (f"ftp://example.com/invite#{TOKEN}", unibus.InviteLinkError.UnsupportedScheme),
        (f"http://example.com/invite#{TOKEN}", unibus.InviteLinkError.InsecureHttp),
        (f"https://example.com/join#{TOKEN}", unibus.InviteLinkError.WrongPath),
        ("https://example.com/invite", unibus.InviteLinkError.MissingToken),
        (f"https://example.com/invite#{TOKEN[:10]}", unibus.InviteLinkError.TokenLength),
        (f"https://example.com/invite#{TOKEN[:-1]}z", unibus.InviteLinkError.TokenCharacters),
    ],
)
def test_invite_link_errors_are_typed(text, error):
    with pytest.raises(error) as raised:
        unibus.InviteLink.parse(text)
    assert TOKEN not in str(raised.value)


def test_format_invite_link_round_trips():
    text = unibus.format_invite_link("http://127.0.0.1:8080/", TOKEN)
    assert text == f"http://127.0.0.1:8080/invite#{TOKEN}"
    assert unibus.InviteLink.parse(text).server_url() == "http://127.0.0.1:8080"


def test_sealed_key_opens_only_for_its_room_epoch_and_member():
    owner, member, stranger = (unibus.Identity.generate() for _ in range(3))
    key = unibus.RoomKey.generate()
    sealed = unibus.seal_room_key(key, "general", 3, member.kex_public_key(), owner.sign_public_key())
    assert len(sealed) == 81
    opened = unibus.open_room_key(member, sealed, "general", 3, owner.sign_public_key())
    assert opened.expose_bytes() == key.expose_bytes()
    for who, room, epoch in [(member, "other", 3), (member, "general", 4), (stranger, "general", 3)]:
        with pytest.raises(unibus.SealError.Seal):
            unibus.open_room_key(who, sealed, room, epoch, owner.sign_public_key())
    with pytest.raises(unibus.SealError.InvalidInput):
        unibus.seal_room_key(key, "bad room", 1, member.kex_public_key(), owner.sign_public_key())


def test_async_rekey_seals_for_every_member_and_verifies():
    owner, alice, bob = (unibus.Identity.generate() for _ in range(3))
    key = unibus.RoomKey.generate()
    members = [recipient(owner), recipient(alice), recipient(bob)]

    manifest = asyncio.run(unibus.rekey_room(owner, "general", 1, 0, key, members))

    for who in (owner, alice, bob):
        opened = unibus.open_manifest(who, manifest, "general", 1, owner.sign_public_key())
        assert opened.expose_bytes() == key.expose_bytes()
    with pytest.raises(unibus.SealError.UntrustedRekeyer):
        unibus.open_manifest(alice, manifest, "general", 1, bob.sign_public_key())
    with pytest.raises(unibus.SealError.WrongRoomOrEpoch):
        unibus.open_manifest(alice, manifest, "general", 2, owner.sign_public_key())
    # The signature follows the 94-byte header (protocol section 8.3); the entries come last.
    tampered = bytearray(manifest)
    tampered[94] ^= 1
    with pytest.raises(unibus.SealError.BadSignature):
        unibus.open_manifest(alice, bytes(tampered), "general", 1, owner.sign_public_key())
    tampered = bytearray(manifest)
    tampered[-1] ^= 1
    with pytest.raises(unibus.SealError.RootMismatch):
        unibus.open_manifest(alice, bytes(tampered), "general", 1, owner.sign_public_key())


def test_async_rekey_errors_are_typed():
    owner = unibus.Identity.generate()
    key = unibus.RoomKey.generate()
    with pytest.raises(unibus.SealError.NoMembers):
        asyncio.run(unibus.rekey_room(owner, "general", 1, 0, key, []))
    with pytest.raises(unibus.SealError.InvalidInput):
        bad = unibus.Recipient(sign_public_key="00", kex_public_key="00")
        asyncio.run(unibus.rekey_room(owner, "general", 1, 0, key, [bad]))


def test_the_asyncio_stream_keeps_unreadable_notifications_as_errors_and_goes_on():
    # The adapter alone, fed events as the SDK's WatchStream gives them: an update, a
    # notification that could not be read, another update, the close. Kotlin and Swift behave
    # the same.
    from unibus.aio import UpdateStream

    class Events:
        """The events as numbered steps, the last one again and again; each call must pass the
        number of the step handed out before it."""

        def __init__(self, events):
            self.steps = [unibus.WatchStep(seq=n, event=e) for n, e in enumerate(events, 1)]
            self.last = 0

        async def next(self, received):
            assert received == self.last
            step = self.steps[min(received, len(self.steps) - 1)]
            self.last = step.seq
            return step

        def cancel(self):
            pass

    async def story():
        stream = UpdateStream(
            Events(
                [
                    unibus.WatchEvent.UPDATE(update=unibus.RoomUpdate.ADDED(room="general")),
                    unibus.WatchEvent.ERROR(message="unreadable notification: not JSON"),
                    unibus.WatchEvent.UPDATE(
                        update=unibus.RoomUpdate.NEW_EPOCH(room="general", epoch=2)
                    ),
                    unibus.WatchEvent.CLOSED(end=unibus.WatchEnd.CANCELLED()),
                ]
            )
        )
        received = [update async for update in stream]
        assert received == [
            unibus.RoomUpdate.ADDED(room="general"),
            unibus.RoomUpdate.NEW_EPOCH(room="general", epoch=2),
        ]
        assert stream.errors == ["unreadable notification: not JSON"]
        assert stream.end == unibus.WatchEnd.CANCELLED()
        # Closed stays closed.
        assert [update async for update in stream] == []

    asyncio.run(story())
