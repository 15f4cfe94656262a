package org.unibus

import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
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

                override fun cancel() {}
            },
        )

        val received = withTimeout(5_000) { updates.flow.toList() }
        assertEquals(listOf(RoomUpdate.Added("general"), RoomUpdate.NewEpoch("general", 2uL)), received)
        assertEquals(listOf("unreadable notification: not JSON"), updates.errors.toList())
        assertEquals(WatchEnd.Cancelled, updates.end)
        // Closed stays closed.
        assertEquals(emptyList<RoomUpdate>(), withTimeout(5_000) { updates.flow.toList() })
    }
}
