// Hand-written: a Swift concurrency view of Session.watch. (Unibus.swift beside it is generated.)
import Foundation

/// Forwards a watch's listener calls into an `AsyncStream`.
final class StreamListener: WatchListener, @unchecked Sendable {
    private let continuation: AsyncStream<RoomUpdate>.Continuation
    private let lock = NSLock()
    private var closedWith: WatchEnd?
    private var skipped: [String] = []

    init(_ continuation: AsyncStream<RoomUpdate>.Continuation) {
        self.continuation = continuation
    }

    /// Why the watch closed; nil while it runs.
    var end: WatchEnd? {
        lock.lock()
        defer { lock.unlock() }
        return closedWith
    }

    func onUpdate(update: RoomUpdate) {
        continuation.yield(update)
    }

    /// The messages of notifications that could not be read, in order (as Kotlin's and
    /// Python's adapters keep them).
    var errors: [String] {
        lock.lock()
        defer { lock.unlock() }
        return skipped
    }

    func onError(message: String) {
        lock.lock()
        skipped.append(message)
        lock.unlock()
    }

    func onClose(end: WatchEnd) {
        lock.lock()
        closedWith = end
        lock.unlock()
        continuation.finish()
    }
}

/// A running watch as an `AsyncSequence`, from `Session.subscribeUpdates()`.
///
/// The watch is live once `subscribeUpdates()` returns. Iteration ends when the watch closes
/// (the session ended, or `cancel()`), and `end` then says why. A notification that cannot be
/// read is skipped and its message kept in `errors`, as the Kotlin and Python adapters do. Cancelling the iterating task or
/// calling `cancel()` stops the watch.
public final class Updates: AsyncSequence, @unchecked Sendable {
    public typealias Element = RoomUpdate

    private let stream: AsyncStream<RoomUpdate>
    private let listener: StreamListener
    private let handle: WatchHandle

    init(stream: AsyncStream<RoomUpdate>, listener: StreamListener, handle: WatchHandle) {
        self.stream = stream
        self.listener = listener
        self.handle = handle
    }

    /// Why the watch closed; nil while it runs.
    public var end: WatchEnd? { listener.end }

    /// The messages of notifications that could not be read and were skipped, in order. The
    /// watch goes on after each.
    public var errors: [String] { listener.errors }

    /// Stops the watch; iteration ends.
    public func cancel() { handle.cancel() }

    public func makeAsyncIterator() -> AsyncStream<RoomUpdate>.AsyncIterator {
        stream.makeAsyncIterator()
    }

    deinit { handle.cancel() }
}

extension Session {
    /// Starts watching this session's updates; see `Updates`. With `messages`, the messages of
    /// the session's rooms come too, as `RoomUpdate.message`: first those after the last one
    /// delivered (kept in the trust store), then each new one, in order per room, each once.
    public func subscribeUpdates(messages: Bool = false) async throws -> Updates {
        var continuation: AsyncStream<RoomUpdate>.Continuation!
        let stream = AsyncStream<RoomUpdate>(bufferingPolicy: .unbounded) { continuation = $0 }
        let listener = StreamListener(continuation)
        let handle = try await watch(listener: listener, messages: messages)
        continuation.onTermination = { @Sendable _ in handle.cancel() }
        return Updates(stream: stream, listener: listener, handle: handle)
    }
}
