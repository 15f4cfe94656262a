package org.unibus

import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.emitAll
import kotlinx.coroutines.flow.flow

/**
 * A running watch of a [Session] as a Kotlin [Flow], from [subscribeUpdates], read from the
 * SDK's [WatchStream] one event at a time.
 *
 * The watch is live as soon as [subscribeUpdates] returns, so nothing that happens after that
 * is missed. [flow] completes when the watch closes (the session ended, or [close] was called),
 * and [end] then says why. Notifications that could not be read are skipped; their messages are
 * in [errors]. Close it (or use `use { }`) to cancel the watch.
 *
 * Messages are delivered at least once: a message counts as handled when the collector asks for
 * the next update (its block returned), or when the watch is closed after the collector got it,
 * and only then is its place written to the trust store. A process that dies while handling one
 * gets it again after a restart. (A `buffer()` between the flow and the collector would take
 * messages ahead of the app and weaken this.) A collector cancelled while it waits (a
 * `withTimeout`) loses nothing: the flow passes the SDK the number of the last step it got, so
 * the update that wait was about to get comes to the next collector, or, once the watch is
 * closed, to the next watch.
 */
class Updates internal constructor(private val stream: WatchStreamInterface) : AutoCloseable {
    /** The updates, in order. Collecting it again continues where the last collector stopped. */
    val flow: Flow<RoomUpdate> = flow {
        while (true) {
            val step = stream.next(received)
            received = step.seq
            when (val event = step.event) {
                is WatchEvent.Update -> emit(event.update)
                is WatchEvent.Error -> errors.add(event.message)
                is WatchEvent.Closed -> {
                    end = event.end
                    return@flow
                }
            }
        }
    }

    /** The `seq` of the last step a collector got from [stream]; 0 before the first. */
    @Volatile
    private var received: ULong = 0uL

    /** Why the watch closed; null while it runs. */
    @Volatile
    var end: WatchEnd? = null
        private set

    /** Messages of notifications that could not be read. */
    val errors: MutableList<String> = java.util.Collections.synchronizedList(mutableListOf())

    /**
     * Cancels the watch; [flow] completes. The SDK gets the number of the last step a collector
     * got, so an update that a cancelled wait was about to get does not count as handled: its
     * message comes again to the next watch.
     */
    override fun close() {
        stream.cancel(received)
        (stream as? AutoCloseable)?.close()
    }
}

/**
 * Starts watching this session's updates; see [Updates]. With [messages], the messages of the
 * session's rooms come too, as [RoomUpdate.Message]: first those after the last one delivered
 * (kept in the trust store), then each new one, in order per room, each at least once.
 */
suspend fun Session.subscribeUpdates(messages: Boolean = false): Updates =
    Updates(watchStream(messages))

/**
 * This session's updates as a cold [Flow]: each collection starts its own watch, and cancelling
 * the collector cancels it. The flow completes when the session ends. [messages] as in
 * [subscribeUpdates].
 */
fun Session.updates(messages: Boolean = false): Flow<RoomUpdate> = flow {
    subscribeUpdates(messages).use { emitAll(it.flow) }
}
