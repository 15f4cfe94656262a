package org.unibus

import java.io.File
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.unibus.examples.Outcome
import org.unibus.examples.quickstart

/**
 * examples/kotlin/Quickstart.kt runs its whole story against a real membershipd; and the messages
 * the Rust quickstart (examples/quickstart.rs, `$UNIBUS_RUST_QUICKSTART` or the repository's
 * `target/debug/examples/quickstart`) sends are read here in Kotlin, across languages.
 */
class ExamplesTest {
    @Test
    fun theQuickstartRunsFromInviteLinksToARefusedRemovedMember() = runBlocking<Unit> {
        Membershipd().use { server ->
            assertEquals(
                Outcome(listOf("welcome", "thanks"), 3uL),
                quickstart(server.invite(), server.invite()),
            )
        }
    }

    @Test
    fun messagesTheRustQuickstartSendsAreReadInKotlin() = runBlocking<Unit> {
        Membershipd().use { server ->
            val reader = Identity.generate()
            val registration = InviteLink.parse(server.invite()).use { register(it, reader) }
            val binary = System.getenv("UNIBUS_RUST_QUICKSTART")?.let(::File)
                ?: File("../../target/debug/examples/quickstart")
            check(binary.isFile) { "$binary is missing: run scripts/test.sh" }
            val lines = withContext(Dispatchers.IO) {
                val process = ProcessBuilder(
                    binary.path, server.invite(), server.invite(), reader.signPublicKey(),
                ).redirectErrorStream(true).start()
                val output = process.inputStream.bufferedReader().readLines()
                assertTrue(process.waitFor(120, TimeUnit.SECONDS))
                assertEquals(0, process.exitValue(), output.joinToString("\n"))
                output
            }
            // "  owner added reader <key> to room <room>"; "  member reads "..." from <sender>".
            val room = lines.first { it.startsWith("  owner added reader ") }.split(" ").last()
            val senders = lines.filter { it.startsWith("  member reads ") }.map { it.split(" ").last() }

            val session = Session.connect(reader, registration.natsUrls)
            val page = session.messages(room, MessagePage.Latest(10u))
            assertFalse(page.more)
            assertEquals(
                listOf("welcome", "thanks").zip(senders),
                page.messages.map { it.message!!.body.decodeToString() to it.message!!.sender },
            )
            assertTrue(page.messages.all { it.unreadable == null && it.room == room })
            session.closeSession()
        }
    }
}
