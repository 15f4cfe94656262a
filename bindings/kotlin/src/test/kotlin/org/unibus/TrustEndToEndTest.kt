package org.unibus

import java.nio.file.Files
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/**
 * What the Kotlin SDK trusts across restarts, end to end: pins and epoch floors recorded with a
 * real membershipd in a trust file are enforced against a control plane that lies
 * (`unibus-liar` replays an older, validly signed epoch as the latest and names an impostor as a
 * room's owner).
 */
class TrustEndToEndTest {
    private suspend fun Updates.next(): RoomUpdate = withTimeout(5_000) { flow.first() }

    @Test
    fun aTrustFileRefusesARolledBackEpochAndASwappedOwnerFromALyingServerAfterARestart() = runBlocking<Unit> {
        val dir = Files.createTempDirectory("unibus-trust").toFile()
        val path = dir.resolve("trust.json").path
        try {
            Membershipd().use { server ->
                val me = Identity.generate()
                val registration = InviteLink.parse(server.invite()).use { register(it, me) }
                val mine = me.signPublicKey()

                // The real membershipd: "general" at epoch 2, "annex" at epoch 1.
                TrustStore.open(path, me).use { trust ->
                    val session = Session.connect(me, registration.natsUrls, trust = trust)
                    for (room in listOf("general", "annex")) {
                        session.createRoom(room)
                        session.rekey(room)
                    }
                    session.rekey("general")
                    assertEquals(2uL, session.roomKey("general").epoch)
                    assertEquals(1uL, session.roomKey("annex").epoch)
                    session.closeSession()
                }

                // A new process's view: the pins and floors are in the file, for this identity only.
                val trust = TrustStore.open(path, me)
                assertEquals(RoomTrust("general", mine, false, 2uL), trust.room("general"))
                val stranger = Identity.generate()
                assertThrows<TrustException.WrongIdentity> { TrustStore.open(path, stranger) }
                assertThrows<SessionException.Trust> {
                    runBlocking {
                        Session.connect(me, registration.natsUrls, trust = TrustStore.inMemory(stranger))
                    }
                }

                val impostor = Liar(me, registration.natsUrls, rollback = "general" to 1uL, swapOwner = "annex").use { liar ->
                    val session = Session.connect(me, listOf(liar.natsUrl), trust = trust)
                    session.subscribeUpdates().use { updates ->
                        // The replayed epoch is refused as the latest, and served as history.
                        assertThrows<SessionException.EpochRollback> { runBlocking { session.roomKey("general") } }
                        assertThrows<SessionException.EpochRollback> { runBlocking { session.currentEpoch("general") } }
                        assertEquals(1uL, session.roomKey("general", 1uL).epoch)
                        assertEquals(2uL, trust.room("general")?.epochFloor)

                        // The impostor's validly signed manifest is refused: the owner is pinned.
                        assertThrows<SessionException.OwnerChanged> { runBlocking { session.roomKey("annex") } }
                        assertEquals(RoomUpdate.OwnerChanged("annex", mine, liar.impostor, false), updates.next())

                        // Out of band: compare, mark verified; accept a new owner only deliberately.
                        val fingerprint = checkNotNull(trust.ownerFingerprint("general"))
                        assertEquals(ownerFingerprint("general", mine), fingerprint)
                        assertEquals(fingerprint, parseOwnerCode(fingerprint.qrCode))
                        assertEquals(12, fingerprint.safetyNumber.split(" ").size)
                        trust.markOwnerVerified("general", mine)
                        assertThrows<TrustException.OwnerMismatch> { trust.markOwnerVerified("annex", liar.impostor) }
                        trust.acceptOwner("annex", liar.impostor)
                        assertEquals(1uL, session.roomKey("annex").epoch)
                    }
                    session.closeSession()
                    liar.impostor
                }

                assertEquals(
                    listOf(RoomTrust("annex", impostor, true, 1uL), RoomTrust("general", mine, true, 2uL)),
                    TrustStore.open(path, me).rooms(),
                )
            }
        } finally {
            dir.deleteRecursively()
        }
    }
}
