package org.unibus

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.emitAll
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.flow.receiveAsFlow

/**
 * A running watch of a [Session] as a Kotlin [Flow], from [subscribeUpdates].
 *
 * The watch is live as soon as [subscribeUpdates] returns, so nothing that happens after that
 * is missed. [flow] completes when the watch closes (the session ended, or [close] was called),
 * and [end] then says why. Notifications that could not be read are skipped; their messages are
 * in [errors]. Close it (or use `use { }`) to cancel the watch.
 */
class Updates internal constructor() : AutoCloseable {
    private val channel = Channel<RoomUpdate>(Channel.UNLIMITED)
    private var handle: WatchHandle? = null

    /** The updates, in order. Collecting it again continues where the last collector stopped. */
    val flow: Flow<RoomUpdate> = channel.receiveAsFlow()

    /** Why the watch closed; null while it runs. */
    @Volatile
    var end: WatchEnd? = null
        private set

    /** Messages of notifications that could not be read. */
    val errors: MutableList<String> = java.util.Collections.synchronizedList(mutableListOf())

    internal val listener = object : WatchListener {
        override fun onUpdate(update: RoomUpdate) {
            channel.trySend(update)
        }

        override fun onError(message: String) {
            errors.add(message)
        }

        override fun onClose(end: WatchEnd) {
            this@Updates.end = end
            channel.close()
        }
    }

    internal fun attach(handle: WatchHandle) {
        this.handle = handle
    }

    /** Cancels the watch; [flow] completes. */
    override fun close() {
        handle?.let {
            it.cancel()
            it.close()
        }
        handle = null
        channel.close()
    }
}

/**
 * Starts watching this session's updates; see [Updates]. With [messages], the messages of the
 * session's rooms come too, as [RoomUpdate.Message]: first those after the last one delivered
 * (kept in the trust store), then each new one, in order per room, each once.
 */
suspend fun Session.subscribeUpdates(messages: Boolean = false): Updates {
    val updates = Updates()
    updates.attach(watch(updates.listener, messages))
    return updates
}

/**
 * This session's updates as a cold [Flow]: each collection starts its own watch, and cancelling
 * the collector cancels it. The flow completes when the session ends. [messages] as in
 * [subscribeUpdates].
 */
fun Session.updates(messages: Boolean = false): Flow<RoomUpdate> = flow {
    subscribeUpdates(messages).use { emitAll(it.flow) }
}
