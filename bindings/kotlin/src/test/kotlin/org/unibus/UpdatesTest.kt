package org.unibus

import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test

class UpdatesTest {
    @Test
    fun unreadableNotificationsAreKeptAsErrorsAndTheFlowGoesOn() = runBlocking<Unit> {
        // The adapter alone, fed as the SDK feeds it from its own thread: an update, a
        // notification that could not be read, another update, the close. Python and Swift
        // behave the same.
        val updates = Updates()
        updates.listener.onUpdate(RoomUpdate.Added("general"))
        updates.listener.onError("unreadable notification: not JSON")
        updates.listener.onUpdate(RoomUpdate.NewEpoch("general", 2uL))
        updates.listener.onClose(WatchEnd.Cancelled)

        val received = withTimeout(5_000) { updates.flow.toList() }
        assertEquals(listOf(RoomUpdate.Added("general"), RoomUpdate.NewEpoch("general", 2uL)), received)
        assertEquals(listOf("unreadable notification: not JSON"), updates.errors.toList())
        assertEquals(WatchEnd.Cancelled, updates.end)
    }
}
