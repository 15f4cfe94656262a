package org.unibus

import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.unibus.examples.quickstart

/** examples/kotlin/Quickstart.kt runs its whole story against a real membershipd. */
class ExamplesTest {
    @Test
    fun theQuickstartRunsFromInviteLinksToARefusedRemovedMember() = runBlocking<Unit> {
        Membershipd().use { server ->
            assertEquals(3uL, quickstart(server.invite(), server.invite()))
        }
    }
}
