import XCTest
@testable import Unibus

/// The Swift SDK end to end against a real membershipd, as bindings/kotlin and
/// bindings/python do on Linux: redeem invites, log in by key, follow a room through being
/// added, rekeyed and removed, and be revoked. Run on a Mac with `swift test`.
final class ClientEndToEndTests: XCTestCase {
    private func registered(_ server: Membershipd) async throws -> (Identity, Registration) {
        let me = try Identity.generate()
        let link = try InviteLink.parse(text: try server.invite())
        return (me, try await register(link: link, identity: me))
    }

    private func next(_ iterator: inout AsyncStream<RoomUpdate>.AsyncIterator) async -> RoomUpdate? {
        await iterator.next()
    }

    private func assertThrows<T>(
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

    func testAMemberIsAddedRekeyedRemovedAndRevokedAndSeesEachStep() async throws {
        let server = try Membershipd()
        let (owner, ownerRegistration) = try await registered(server)
        let (alice, aliceRegistration) = try await registered(server)
        XCTAssertEqual(aliceRegistration.signPublicKey, alice.signPublicKey())

        let ownerSession = try await Session.connect(identity: owner, natsUrls: ownerRegistration.natsUrls)
        let aliceSession = try await Session.connect(identity: alice, natsUrls: aliceRegistration.natsUrls)
        XCTAssertEqual(aliceSession.state(), .connected)
        let updates = try await aliceSession.subscribeUpdates()
        var iterator = updates.makeAsyncIterator()

        let room = try await ownerSession.createRoom(room: "general")
        XCTAssertEqual(room.epoch, 0)
        let isMemberBefore = try await aliceSession.isMember(room: "general")
        XCTAssertFalse(isMemberBefore)

        try await ownerSession.addMember(room: "general", member: alice.signPublicKey())
        let added = await next(&iterator)
        XCTAssertEqual(added, .added(room: "general"))
        await assertThrows({ if case SessionError.NoKey = $0 { return true }; return false }) {
            try await aliceSession.roomKey(room: "general")
        }

        let first = try await ownerSession.rekey(room: "general")
        let epochOne = await next(&iterator)
        XCTAssertEqual(epochOne, .newEpoch(room: "general", epoch: 1))
        let opened = try await aliceSession.roomKey(room: "general")
        XCTAssertEqual(opened.epoch, 1)
        XCTAssertEqual(opened.key.exposeBytes(), first.key.exposeBytes())

        final class Progress: RekeyObserver, @unchecked Sendable {
            let goOn: Bool
            private let lock = NSLock()
            private var seen: [RekeyProgress] = []
            init(goOn: Bool) { self.goOn = goOn }
            var reports: [RekeyProgress] { lock.lock(); defer { lock.unlock() }; return seen }
            func onProgress(progress: RekeyProgress) -> Bool {
                lock.lock(); seen.append(progress); lock.unlock()
                return goOn
            }
        }
        let stop = Progress(goOn: false)
        await assertThrows({ if case SessionError.Cancelled = $0 { return true }; return false }) {
            try await ownerSession.rekeyWithProgress(room: "general", observer: stop)
        }
        XCTAssertEqual(stop.reports, [.sealed(done: 2, total: 2)])
        let watched = Progress(goOn: true)
        let second = try await ownerSession.rekeyWithProgress(room: "general", observer: watched)
        XCTAssertEqual(watched.reports, [.sealed(done: 2, total: 2)])
        let epochTwo = await next(&iterator)
        XCTAssertEqual(epochTwo, .newEpoch(room: "general", epoch: 2))
        let latest = try await aliceSession.roomKey(room: "general")
        XCTAssertEqual(latest.key.exposeBytes(), second.key.exposeBytes())

        try await ownerSession.removeMember(room: "general", member: alice.signPublicKey())
        let removed = await next(&iterator)
        XCTAssertEqual(removed, .removed(room: "general"))
        let third = try await ownerSession.rekey(room: "general")
        XCTAssertEqual(third.epoch, 3)
        await assertThrows({
            // A refusal carries the protocol's code and is not worth retrying.
            guard case SessionError.NotMember = $0, let refused = $0 as? SessionError else { return false }
            return refused.refusalCode() == "not_member" && !refused.isTransient()
        }) {
            try await aliceSession.roomKey(room: "general")
        }

        _ = try server.cli("user", "revoke", alice.signPublicKey())
        let deadline = Date().addingTimeInterval(5)
        while aliceSession.state() != .ended(reason: .revoked) && Date() < deadline {
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTAssertEqual(aliceSession.state(), .ended(reason: .revoked))
        while let update = await next(&iterator) {
            XCTAssertEqual(update, .disconnected)
        }
        XCTAssertEqual(updates.end, .sessionEnded(reason: .revoked))
        await assertThrows({ if case SessionError.LoginRefused = $0 { return true }; return false }) {
            try await Session.connect(identity: alice, natsUrls: aliceRegistration.natsUrls)
        }
        await ownerSession.closeSession()
    }

    func testRegistrationRefusalsAreTypedErrors() async throws {
        let server = try Membershipd()
        let link = try InviteLink.parse(text: try server.invite())
        let me = try Identity.generate()
        let first = try await register(link: link, identity: me)
        let again = try await register(link: link, identity: me)
        XCTAssertEqual(first, again)
        await assertThrows({ if case RegisterError.InviteUsed = $0 { return true }; return false }) {
            try await register(link: link, identity: try Identity.generate())
        }
    }
}
