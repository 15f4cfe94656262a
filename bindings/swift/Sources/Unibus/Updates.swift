// Hand-written: a Swift concurrency view of Session.watchStream. (Unibus.swift beside it is
// generated.)
import Foundation

/// A running watch as an `AsyncSequence`, from `Session.subscribeUpdates()`, read from the SDK's
/// `WatchStream` one event at a time.
///
/// The watch is live once `subscribeUpdates()` returns. Iteration ends when the watch closes
/// (the session ended, or `cancel()`), and `end` then says why. A notification that cannot be
/// read is skipped and its message kept in `errors`, as the Kotlin and Python adapters do.
/// Cancelling the iterating task or calling `cancel()` stops the watch.
///
/// Messages are delivered at least once: a message counts as handled when the loop asks for
/// the next update, or when the watch stops after the loop got it, and only then is its place
/// written to the trust store. A process that dies while handling one gets it again after a
/// restart. Each call, and the stop, passes the SDK the number of the last step this sequence
/// got (`WatchStream.next(received:)`, `cancel(received:)`), so a step handed out that never
/// reached it comes again, from this watch or the next one.
public final class Updates: AsyncSequence, @unchecked Sendable {
    public typealias Element = RoomUpdate

    private let stream: WatchStreamProtocol
    private let lock = NSLock()
    private var closedWith: WatchEnd?
    private var skipped: [String] = []
    /// The `seq` of the last step an iteration got from `stream`; 0 before the first.
    private var received: UInt64 = 0

    init(stream: WatchStreamProtocol) {
        self.stream = stream
    }

    /// Why the watch closed; nil while it runs.
    public var end: WatchEnd? {
        lock.lock()
        defer { lock.unlock() }
        return closedWith
    }

    /// The messages of notifications that could not be read and were skipped, in order. The
    /// watch goes on after each.
    public var errors: [String] {
        lock.lock()
        defer { lock.unlock() }
        return skipped
    }

    /// Stops the watch; iteration ends. The SDK gets the number of the last step this sequence
    /// got, so the message of a step handed out that never reached it comes again to the next
    /// watch.
    public func cancel() { stop(received: lastReceived()) }

    /// Reads the watch's events until the next update, or nil once it has closed.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let updates: Updates

        public mutating func next() async -> RoomUpdate? {
            await updates.nextUpdate()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(updates: self)
    }

    func nextUpdate() async -> RoomUpdate? {
        let stream = self.stream
        while true {
            let received = lastReceived()
            let step: WatchStep
            do {
                step = try await withTaskCancellationHandler {
                    try await stream.next(received: received)
                } onCancel: {
                    self.stop(received: received)
                }
            } catch {
                // The stream raises once the SDK's runtime is shut down, or for a number past
                // its last step, which this sequence never passes: the watch is over.
                skip(String(describing: error))
                stop(received: received)
                close(with: .cancelled)
                return nil
            }
            got(step)
            switch step.event {
            case .update(let update):
                return update
            case .error(let message):
                skip(message)
            case .closed(let end):
                close(with: end)
                return nil
            }
        }
    }

    /// Stops the watch for a sequence that got step `received`. The stream refuses only a
    /// number past its last step, which this sequence never passes.
    private func stop(received: UInt64) {
        try? stream.cancel(received: received)
    }

    private func lastReceived() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        return received
    }

    private func got(_ step: WatchStep) {
        lock.lock()
        received = step.seq
        lock.unlock()
    }

    private func skip(_ message: String) {
        lock.lock()
        skipped.append(message)
        lock.unlock()
    }

    private func close(with end: WatchEnd) {
        lock.lock()
        closedWith = end
        lock.unlock()
    }

    deinit { stop(received: lastReceived()) }
}

extension Session {
    /// Starts watching this session's updates; see `Updates`. With `messages`, the messages of
    /// the session's rooms come too, as `RoomUpdate.message`: first those after the last one
    /// delivered (kept in the trust store), then each new one, in order per room, each at least
    /// once.
    public func subscribeUpdates(messages: Bool = false) async throws -> Updates {
        Updates(stream: try await watchStream(messages: messages))
    }
}
