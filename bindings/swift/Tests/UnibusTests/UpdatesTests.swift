import XCTest
@testable import Unibus

final class UpdatesTests: XCTestCase {
    func testUnreadableNotificationsAreKeptAsErrorsAndTheStreamGoesOn() async {
        // The adapter alone, fed as the SDK feeds it from its own thread: an update, a
        // notification that could not be read, another update, the close. Kotlin and Python
        // behave the same.
        var continuation: AsyncStream<RoomUpdate>.Continuation!
        let stream = AsyncStream<RoomUpdate>(bufferingPolicy: .unbounded) { continuation = $0 }
        let listener = StreamListener(continuation)
        listener.onUpdate(update: .added(room: "general"))
        listener.onError(message: "unreadable notification: not JSON")
        listener.onUpdate(update: .newEpoch(room: "general", epoch: 2))
        listener.onClose(end: .cancelled)

        var received: [RoomUpdate] = []
        for await update in stream { received.append(update) }
        XCTAssertEqual(received, [.added(room: "general"), .newEpoch(room: "general", epoch: 2)])
        XCTAssertEqual(listener.errors, ["unreadable notification: not JSON"])
        XCTAssertEqual(listener.end, .cancelled)
    }
}
