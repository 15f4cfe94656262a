import Foundation
import Unibus
import XCTest

/// Runs `body`, which must throw an error that `expected` accepts.
func assertThrows<T>(
    _ expected: (Error) -> Bool, _ body: () async throws -> T,
    file: StaticString = #filePath, line: UInt = #line
) async {
    do {
        _ = try await body()
        XCTFail("no error", file: file, line: line)
    } catch {
        XCTAssertTrue(expected(error), "unexpected \(error)", file: file, line: line)
    }
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass; returns whether it held.
func eventually(within seconds: TimeInterval = 5, _ condition: () -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() >= deadline { return false }
        try await Task.sleep(nanoseconds: 20_000_000)
    }
    return true
}

/// The next update of `updates`, or nil when the stream ends or none comes within `seconds`
/// (then the stream is cancelled: the test has failed).
func next(_ updates: Updates, within seconds: UInt64 = 5) async -> RoomUpdate? {
    await withTaskGroup(of: RoomUpdate?.self) { group in
        group.addTask {
            var iterator = updates.makeAsyncIterator()
            return await iterator.next()
        }
        group.addTask {
            try? await Task.sleep(nanoseconds: seconds * 1_000_000_000)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}
