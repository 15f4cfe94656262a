import XCTest
@testable import Unibus

final class UpdatesTests: XCTestCase {
    /// Events as the SDK's WatchStream gives them, the last one again and again.
    final class Events: WatchStreamProtocol, @unchecked Sendable {
        private let lock = NSLock()
        private var events: [WatchEvent]

        init(_ events: [WatchEvent]) { self.events = events }

        func next() async -> WatchEvent { take() }

        private func take() -> WatchEvent {
            lock.lock()
            defer { lock.unlock() }
            return events.count > 1 ? events.removeFirst() : events[0]
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
