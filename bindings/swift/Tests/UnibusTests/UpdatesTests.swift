import XCTest
@testable import Unibus

final class UpdatesTests: XCTestCase {
    /// Events as the SDK's WatchStream gives them, as numbered steps, the last one again and
    /// again; each call must pass the number of the step handed out before it.
    final class Events: WatchStreamProtocol, @unchecked Sendable {
        private let lock = NSLock()
        private let steps: [WatchStep]
        private var last: UInt64 = 0

        init(_ events: [WatchEvent]) {
            steps = events.enumerated().map { WatchStep(seq: UInt64($0.offset + 1), event: $0.element) }
        }

        func next(received: UInt64) async throws -> WatchStep { take(received) }

        private func take(_ received: UInt64) -> WatchStep {
            lock.lock()
            defer { lock.unlock() }
            XCTAssertEqual(received, last)
            let step = steps[Int(min(received, UInt64(steps.count - 1)))]
            last = step.seq
            return step
        }

        func cancel(received: UInt64) throws {}
    }

    /// Step 1 is an update; the wait for step 2 ends only when the stream is cancelled (with a
    /// `Closed(Cancelled)` step, as the SDK's does). Records the numbers passed to `cancel`.
    final class Stalled: WatchStreamProtocol, @unchecked Sendable {
        private let lock = NSLock()
        private var cancelled: [UInt64] = []
        private var waiter: CheckedContinuation<Void, Never>?

        /// The numbers passed to `cancel(received:)`, in order.
        var cancels: [UInt64] {
            lock.lock()
            defer { lock.unlock() }
            return cancelled
        }

        func next(received: UInt64) async throws -> WatchStep {
            if received == 0 {
                return WatchStep(seq: 1, event: .update(update: .added(room: "general")))
            }
            await withCheckedContinuation { wait($0) }
            return WatchStep(seq: 2, event: .closed(end: .cancelled))
        }

        private func wait(_ continuation: CheckedContinuation<Void, Never>) {
            lock.lock()
            if cancelled.isEmpty {
                waiter = continuation
                lock.unlock()
            } else {
                lock.unlock()
                continuation.resume()
            }
        }

        func cancel(received: UInt64) throws {
            lock.lock()
            cancelled.append(received)
            let waiting = waiter
            waiter = nil
            lock.unlock()
            waiting?.resume()
        }
    }

    func testUnreadableNotificationsAreKeptAsErrorsAndTheStreamGoesOn() async {
        // The adapter alone, fed an update, a notification that could not be read, another
        // update, the close. Kotlin and Python behave the same.
        let updates = Updates(stream: Events([
            .update(update: .added(room: "general")),
            .error(message: "unreadable notification: not JSON"),
            .update(update: .newEpoch(room: "general", epoch: 2)),
            .closed(end: .cancelled),
        ]))

        var received: [RoomUpdate] = []
        for await update in updates { received.append(update) }
        XCTAssertEqual(received, [.added(room: "general"), .newEpoch(room: "general", epoch: 2)])
        XCTAssertEqual(updates.errors, ["unreadable notification: not JSON"])
        XCTAssertEqual(updates.end, .cancelled)
        // Closed stays closed.
        var again: [RoomUpdate] = []
        for await update in updates { again.append(update) }
        XCTAssertEqual(again, [])
    }

    func testCancellingTheIteratingTaskPassesTheNumberOfTheLastStepItGot() async {
        // The wait for the second update is given up (its task cancelled), as when the SDK's
        // answer is lost to a timeout: the stream gets 1, so the message of a step 2 handed
        // out meanwhile would not count as handled. Kotlin and Python behave the same.
        let stream = Stalled()
        let updates = Updates(stream: stream)
        var iterator = updates.makeAsyncIterator()
        let first = await iterator.next()
        XCTAssertEqual(first, .added(room: "general"))
        let waiting = Task {
            var iterator = updates.makeAsyncIterator()
            return await iterator.next()
        }
        waiting.cancel()
        let second = await waiting.value
        XCTAssertNil(second)
        XCTAssertEqual(stream.cancels, [1])
        XCTAssertEqual(updates.end, .cancelled)
    }
}
