package org.unibus

import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/** The Kotlin bindings call the real native library: identities, invite links, sealed keys. */
class FoundationTest {
    private val token = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

    private fun recipient(identity: Identity) =
        Recipient(signPublicKey = identity.signPublicKey(), kexPublicKey = identity.kexPublicKey())

    @Test
    fun identityExportsAndImportsItsSecrets() {
        Identity.generate().use { alice ->
            Identity.fromSecretBytes(alice.exportSecretBytes()).use { again ->
                assertEquals(alice.signPublicKey(), again.signPublicKey())
                assertEquals(alice.kexPublicKey(), again.kexPublicKey())
            }
            assertTrue(alice.nkeyPublic().startsWith("U"))
            assertEquals(64, alice.sign("hello".toByteArray()).size)
        }
    }

    @Test
    fun identityImportRejectsBadBytesWithATypedException() {
        assertThrows<IdentityException.WrongLength> { Identity.fromSecretBytes(ByteArray(10)) }
    }

    @Test
    fun publicKeyValidationNormalizesCaseAndRejectsZero() {
        val key = Identity.generate().use { it.signPublicKey() }
        assertEquals(key, validateSignPublicKey(key.uppercase()))
        assertThrows<KeyException.AllZero> { validateKexPublicKey("0".repeat(64)) }
        assertThrows<KeyException.NotHex> { validateSignPublicKey("g".repeat(64)) }
    }

    @Test
    fun inviteLinkParsesWhatUsersPaste() {
        InviteLink.parse("  https://Members.Example.com/invite#${token.uppercase()}\n").use { link ->
            assertEquals("https://members.example.com", link.serverUrl())
            assertEquals("https://members.example.com/register", link.registerUrl())
            assertEquals("https://members.example.com/invite#$token", link.toUrlString())
        }
    }

    @Test
    fun inviteLinkErrorsAreTypedAndHideTheToken() {
        val insecure = assertThrows<InviteLinkException.InsecureHttp> {
            InviteLink.parse("http://example.com/invite#$token")
        }
        assertFalse(insecure.message.orEmpty().contains(token))
        assertThrows<InviteLinkException.MissingServer> { InviteLink.parse(token) }
        assertThrows<InviteLinkException.TokenLength> { InviteLink.parse("https://example.com/invite#abc") }
        assertThrows<InviteLinkException.WrongPath> { InviteLink.parse("https://example.com/join#$token") }
    }

    @Test
    fun sealedKeyOpensOnlyForItsRoomAndEpoch() {
        val owner = Identity.generate()
        val member = Identity.generate()
        val key = RoomKey.generate()
        val sealed = sealRoomKey(key, "general", 3uL, member.kexPublicKey(), owner.signPublicKey())
        assertEquals(81, sealed.size)
        openRoomKey(member, sealed, "general", 3uL, owner.signPublicKey()).use {
            assertArrayEquals(key.exposeBytes(), it.exposeBytes())
        }
        assertThrows<SealException.Seal> {
            openRoomKey(member, sealed, "general", 4uL, owner.signPublicKey())
        }
    }

    @Test
    fun suspendRekeySealsForEveryMemberAndVerifies() = runBlocking {
        val owner = Identity.generate()
        val alice = Identity.generate()
        val bob = Identity.generate()
        val key = RoomKey.generate()

        val manifest = rekeyRoom(owner, "general", 1uL, 0uL, key, listOf(recipient(owner), recipient(alice), recipient(bob)))

        for (who in listOf(owner, alice, bob)) {
            openManifest(who, manifest, "general", 1uL, owner.signPublicKey()).use {
                assertArrayEquals(key.exposeBytes(), it.exposeBytes())
            }
        }
        assertThrows<SealException.UntrustedRekeyer> {
            openManifest(alice, manifest, "general", 1uL, bob.signPublicKey())
        }
        assertThrows<SealException.NoMembers> {
            runBlocking { rekeyRoom(owner, "general", 2uL, 1uL, key, emptyList()) }
        }
        Unit
    }
}
