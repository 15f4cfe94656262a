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

        func cancel() {}
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
}
