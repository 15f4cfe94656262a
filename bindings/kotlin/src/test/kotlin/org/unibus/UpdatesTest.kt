package org.unibus

import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Test

class UpdatesTest {
    @Test
    fun unreadableNotificationsAreKeptAsErrorsAndTheFlowGoesOn() = runBlocking<Unit> {
        // The adapter alone, fed events as the SDK's WatchStream gives them: an update, a
        // notification that could not be read, another update, the close. Python and Swift
        // behave the same.
        val steps = listOf(
            WatchEvent.Update(RoomUpdate.Added("general")),
            WatchEvent.Error("unreadable notification: not JSON"),
            WatchEvent.Update(RoomUpdate.NewEpoch("general", 2uL)),
            WatchEvent.Closed(WatchEnd.Cancelled),
        ).mapIndexed { index, event -> WatchStep(index.toULong() + 1uL, event) }
        // The steps, the last one again and again; each call must pass the number of the step
        // handed out before it.
        var last = 0uL
        val updates = Updates(
            object : WatchStreamInterface {
                override suspend fun next(received: ULong): WatchStep {
                    assertEquals(last, received)
                    val step = steps[minOf(received, steps.size.toULong() - 1uL).toInt()]
                    last = step.seq
                    return step
                }

                override fun cancel(received: ULong) {}
            },
        )

        val received = withTimeout(5_000) { updates.flow.toList() }
        assertEquals(listOf(RoomUpdate.Added("general"), RoomUpdate.NewEpoch("general", 2uL)), received)
        assertEquals(listOf("unreadable notification: not JSON"), updates.errors.toList())
        assertEquals(WatchEnd.Cancelled, updates.end)
        // Closed stays closed.
        assertEquals(emptyList<RoomUpdate>(), withTimeout(5_000) { updates.flow.toList() })
    }

    @Test
    fun closingPassesTheNumberOfTheLastStepACollectorGotToCancel() = runBlocking<Unit> {
        // Step 1 is an update; the wait for step 2 never ends and is given up, as when the
        // SDK's answer is lost to a timeout. Closing then passes 1: the app never got step 2,
        // so its message must not count as handled. Python and Swift behave the same.
        val cancels = java.util.Collections.synchronizedList(mutableListOf<ULong>())
        val updates = Updates(
            object : WatchStreamInterface {
                override suspend fun next(received: ULong): WatchStep = when (received) {
                    0uL -> WatchStep(1uL, WatchEvent.Update(RoomUpdate.Added("general")))
                    else -> awaitCancellation()
                }

                override fun cancel(received: ULong) {
                    cancels.add(received)
                }
            },
        )

        assertEquals(RoomUpdate.Added("general"), withTimeout(5_000) { updates.flow.first() })
        assertNull(withTimeoutOrNull(50) { updates.flow.first() })
        updates.close()
        assertEquals(listOf(1uL), cancels.toList())
    }
}
