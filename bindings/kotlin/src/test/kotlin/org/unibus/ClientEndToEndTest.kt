package org.unibus

import kotlinx.coroutines.async
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertArrayEquals
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/**
 * The Kotlin SDK end to end, against a real membershipd with its nats-server: redeem invites,
 * log in by key, follow a room through being added, rekeyed and removed, and be revoked.
 */
class ClientEndToEndTest {
    private suspend fun registered(server: Membershipd): Pair<Identity, Registration> {
        val me = Identity.generate()
        val registration = InviteLink.parse(server.invite()).use { register(it, me) }
        return me to registration
    }

    private suspend fun Updates.next(): RoomUpdate = withTimeout(5_000) { flow.first() }

    @Test
    fun aMemberIsAddedRekeyedRemovedAndRevokedAndSeesEachStep() = runBlocking<Unit> {
        Membershipd().use { server ->
            val (owner, ownerRegistration) = registered(server)
            val (alice, aliceRegistration) = registered(server)
            assertEquals(alice.signPublicKey(), aliceRegistration.signPublicKey)
            assertTrue(aliceRegistration.natsUrls.isNotEmpty())

            val ownerSession = Session.connect(owner, ownerRegistration.natsUrls)
            val aliceSession = Session.connect(alice, aliceRegistration.natsUrls)
            assertEquals(ConnectionState.Connected, aliceSession.state())

            aliceSession.subscribeUpdates().use { updates ->
                val room = ownerSession.createRoom("general")
                assertEquals(owner.signPublicKey(), room.owner)
                assertEquals(0uL, room.epoch)
                assertFalse(aliceSession.isMember("general"))
                val refused = assertThrows<SessionException.NotMember> {
                    runBlocking { aliceSession.currentEpoch("general") }
                }
                // A refusal carries the protocol's code and is not worth retrying.
                assertEquals("not_member", refused.refusalCode())
                assertFalse(refused.isTransient())

                ownerSession.addMember("general", alice.signPublicKey())
                assertEquals(RoomUpdate.Added("general"), updates.next())
                assertTrue(aliceSession.isMember("general"))
                assertThrows<SessionException.NoKey> {
                    runBlocking { aliceSession.roomKey("general") }
                }

                val first = ownerSession.rekey("general")
                assertEquals(1uL, first.epoch)
                assertEquals(RoomUpdate.NewEpoch("general", 1uL), updates.next())
                val opened = aliceSession.roomKey("general")
                assertEquals(1uL, opened.epoch)
                assertArrayEquals(first.key.exposeBytes(), opened.key.exposeBytes())

                class Progress(val goOn: Boolean) : RekeyObserver {
                    val reports = java.util.Collections.synchronizedList(mutableListOf<RekeyProgress>())
                    override fun onProgress(progress: RekeyProgress): Boolean {
                        reports.add(progress)
                        return goOn
                    }
                }
                val stop = Progress(goOn = false)
                assertThrows<SessionException.Cancelled> {
                    runBlocking { ownerSession.rekeyWithProgress("general", stop) }
                }
                assertEquals(listOf(RekeyProgress.Sealed(2uL, 2uL)), stop.reports.toList())
                assertEquals(1uL, ownerSession.currentEpoch("general"))
                val watched = Progress(goOn = true)
                val second = ownerSession.rekeyWithProgress("general", watched)
                assertEquals(listOf(RekeyProgress.Sealed(2uL, 2uL)), watched.reports.toList())
                assertEquals(RoomUpdate.NewEpoch("general", 2uL), updates.next())
                assertEquals(2uL, aliceSession.currentEpoch("general"))
                assertArrayEquals(second.key.exposeBytes(), aliceSession.roomKey("general").key.exposeBytes())
                assertArrayEquals(first.key.exposeBytes(), aliceSession.roomKey("general", 1uL).key.exposeBytes())
                assertEquals(
                    listOf(RoomInfo("general", owner.signPublicKey(), 2uL)),
                    aliceSession.myRooms(),
                )
                assertThrows<SessionException.NotOwner> { runBlocking { aliceSession.rekey("general") } }

                ownerSession.removeMember("general", alice.signPublicKey())
                assertEquals(RoomUpdate.Removed("general"), updates.next())
                assertEquals(3uL, ownerSession.rekey("general").epoch)
                for (epoch in listOf(null, 3uL, 2uL)) {
                    assertThrows<SessionException.NotMember> {
                        runBlocking { aliceSession.roomKey("general", epoch) }
                    }
                }
                assertFalse(aliceSession.isMember("general"))

                server.cli("user", "revoke", alice.signPublicKey())
                val revoked = ConnectionState.Ended(SessionEnd.REVOKED)
                withTimeout(5_000) {
                    while (aliceSession.state() != revoked) delay(20)
                }
                val remaining = withTimeout(5_000) { updates.flow.toList() }
                assertTrue(remaining.all { it == RoomUpdate.Disconnected }, "$remaining")
                assertEquals(WatchEnd.SessionEnded(SessionEnd.REVOKED), updates.end)
            }

            assertThrows<SessionException.Ended> { runBlocking { aliceSession.myRooms() } }
            assertThrows<SessionException.LoginRefused> {
                runBlocking { Session.connect(alice, aliceRegistration.natsUrls) }
            }
            assertEquals(3uL, ownerSession.currentEpoch("general"))
            ownerSession.closeSession()
            assertThrows<SessionException.Ended> { runBlocking { ownerSession.myRooms() } }
        }
    }

    @Test
    fun registrationRefusalsAreTypedExceptions() = runBlocking<Unit> {
        Membershipd().use { server ->
            InviteLink.parse(server.invite()).use { link ->
                val me = Identity.generate()
                val first = register(link, me)
                assertEquals(first, register(link, me))
                val used = assertThrows<RegisterException.InviteUsed> {
                    runBlocking { register(link, Identity.generate()) }
                }
                assertEquals("invite_used", used.refusalCode())
                assertFalse(used.isTransient())
                val unknown = InviteLink.parse(formatInviteLink(link.serverUrl(), "ab".repeat(32)))
                assertThrows<RegisterException.InviteUnknown> {
                    runBlocking { register(unknown, Identity.generate()) }
                }
            }
        }
    }

    @Test
    fun theColdFlowAdapterDeliversUpdatesAndStopsItsWatchWithTheCollector() = runBlocking<Unit> {
        Membershipd().use { server ->
            val (owner, registration) = registered(server)
            val session = Session.connect(owner, registration.natsUrls)
            session.createRoom("general")
            // `first()` cancels the collector after one update, and with it the watch.
            val collected = async { withTimeout(5_000) { session.updates().first() } }
            // The watch starts when collection does: rekey until the collector has seen one.
            while (!collected.isCompleted) {
                session.rekey("general")
                delay(100)
            }
            val update = collected.await()
            assertTrue(update is RoomUpdate.NewEpoch && update.room == "general", "$update")
            session.closeSession()
        }
    }

    private suspend fun Updates.nextMessage(): RoomUpdate.Message = withTimeout(5_000) {
        flow.first { it is RoomUpdate.Message } as RoomUpdate.Message
    }

    @Test
    fun membersSendAndReadMessagesAndAWatchDeliversNewOnes() = runBlocking<Unit> {
        Membershipd().use { server ->
            val (owner, ownerRegistration) = registered(server)
            val (alice, aliceRegistration) = registered(server)
            val ownerSession = Session.connect(owner, ownerRegistration.natsUrls)
            val aliceSession = Session.connect(alice, aliceRegistration.natsUrls)
            ownerSession.createRoom("general")
            ownerSession.addMember("general", alice.signPublicKey())
            ownerSession.rekey("general")

            val hello: SentMessage
            val reply: SentMessage
            aliceSession.subscribeUpdates(messages = true).use { updates ->
                hello = ownerSession.send("general", "hello".toByteArray(), "text/plain")
                assertEquals(1uL, hello.epoch)
                assertFalse(hello.duplicate)
                assertEquals(32, hello.id.length)
                val live = updates.nextMessage()
                assertEquals("general", live.room)
                assertEquals(hello.position, live.message.position)
                assertEquals(null, live.message.unreadable)
                val opened = live.message.message!!
                assertEquals(owner.signPublicKey(), opened.sender)
                assertEquals(hello.id, opened.id)
                assertEquals("text/plain", opened.contentType)
                assertArrayEquals("hello".toByteArray(), opened.body)

                reply = aliceSession.send("general", ByteArray(256) { it.toByte() }, "application/octet-stream")
                assertTrue(reply.position > hello.position)
                assertEquals(reply.position, updates.nextMessage().message.position)
            }

            val page = ownerSession.messages("general", MessagePage.Latest(10u))
            assertFalse(page.more)
            assertEquals(listOf(hello.id, reply.id), page.messages.map { it.message!!.id })
            assertEquals(
                listOf(owner.signPublicKey(), alice.signPublicKey()),
                page.messages.map { it.message!!.sender },
            )
            val older = ownerSession.messages("general", MessagePage.Before(reply.position, 1u))
            assertEquals(listOf(hello.id), older.messages.map { it.message!!.id })
            val newer = ownerSession.messages("general", MessagePage.After(hello.position, 1u))
            assertEquals(listOf(reply.id), newer.messages.map { it.message!!.id })

            // A registered user who is not a member can neither post nor read.
            val (carol, carolRegistration) = registered(server)
            val carolSession = Session.connect(carol, carolRegistration.natsUrls)
            val refused = assertThrows<SessionException.NotMember> {
                runBlocking { carolSession.send("general", "let me in".toByteArray(), "text/plain") }
            }
            assertEquals("not_member", refused.refusalCode())
            assertFalse(refused.isTransient())
            assertThrows<SessionException.NotMember> {
                runBlocking { carolSession.messages("general", MessagePage.Latest(10u)) }
            }
            assertEquals(2, ownerSession.messages("general", MessagePage.Latest(10u)).messages.size)

            // Too large a body is refused before any request: a request would meet NotMember.
            val large = assertThrows<SessionException.BodyTooLarge> {
                runBlocking { carolSession.send("general", ByteArray(65_537), "text/plain") }
            }
            assertEquals(null, large.refusalCode())
            assertFalse(large.isTransient())
            assertThrows<SessionException.InvalidArgument> {
                runBlocking { carolSession.messages("general", MessagePage.Latest(0u)) }
            }
            for (session in listOf(ownerSession, aliceSession, carolSession)) session.closeSession()
        }
    }

    @Test
    fun aMemberAddedLaterReadsEarlierEpochsOnceTheOwnerSharesThem() = runBlocking<Unit> {
        Membershipd().use { server ->
            val (owner, ownerRegistration) = registered(server)
            val (bob, bobRegistration) = registered(server)
            val ownerSession = Session.connect(owner, ownerRegistration.natsUrls)
            val bobSession = Session.connect(bob, bobRegistration.natsUrls)
            ownerSession.createRoom("general")
            ownerSession.rekey("general")
            val early = ownerSession.send("general", "before bob".toByteArray(), "text/plain")

            // The default: Bob, added later, reads epoch 1 as "no key".
            assertEquals(HistoryPolicy.JOINED, ownerSession.historyPolicy("general"))
            ownerSession.addMember("general", bob.signPublicKey())
            ownerSession.rekey("general")
            val before = bobSession.messages("general", MessagePage.Latest(10u))
            assertEquals(listOf(Unreadable.NoKey(1uL)), before.messages.map { it.unreadable })

            // Only the owner sets a policy and shares; Bob then reads his history.
            assertThrows<SessionException.NotOwner> {
                bobSession.setHistoryPolicy("general", HistoryPolicy.SHARED)
            }
            ownerSession.setHistoryPolicy("general", HistoryPolicy.SHARED)
            assertEquals(HistoryPolicy.SHARED, ownerSession.historyPolicy("general"))
            assertEquals(2uL, ownerSession.shareHistory("general", bob.signPublicKey()))
            val after = bobSession.messages("general", MessagePage.Latest(10u))
            assertEquals(listOf(early.position), after.messages.map { it.position })
            assertArrayEquals("before bob".toByteArray(), after.messages.single().message!!.body)
            assertThrows<SessionException.NotOwner> {
                runBlocking { bobSession.shareHistory("general", bob.signPublicKey()) }
            }
            for (session in listOf(ownerSession, bobSession)) session.closeSession()
        }
    }
}
