import Foundation
import Unibus
import XCTest

/// The Swift SDK end to end, against a real membershipd with its nats-server (as the Kotlin and
/// Python suites): redeem invites, log in by key, follow a room through being added, rekeyed and
/// removed, and be revoked.
final class ClientEndToEndTests: XCTestCase {
    private func registered(_ server: Membershipd) async throws -> (Identity, Registration) {
        let me = try Identity.generate()
        let link = try InviteLink.parse(text: try server.invite())
        return (me, try await register(link: link, identity: me))
    }

    /// Counts the progress reports of a rekey, and goes on or cancels.
    final class Progress: RekeyObserver, @unchecked Sendable {
        let goOn: Bool
        private let lock = NSLock()
        private var seen: [RekeyProgress] = []
        init(goOn: Bool) { self.goOn = goOn }
        var reports: [RekeyProgress] { lock.withLock { seen } }
        func onProgress(progress: RekeyProgress) -> Bool {
            lock.withLock { seen.append(progress) }
            return goOn
        }
    }

    func testAMemberIsAddedRekeyedRemovedAndRevokedAndSeesEachStep() async throws {
        let server = try Membershipd()
        defer { server.stop() }
        let (owner, ownerRegistration) = try await registered(server)
        let (alice, aliceRegistration) = try await registered(server)
        XCTAssertEqual(aliceRegistration.signPublicKey, alice.signPublicKey())
        XCTAssertFalse(aliceRegistration.natsUrls.isEmpty)

        let ownerSession = try await Session.connect(identity: owner, natsUrls: ownerRegistration.natsUrls)
        let aliceSession = try await Session.connect(identity: alice, natsUrls: aliceRegistration.natsUrls)
        XCTAssertEqual(aliceSession.state(), .connected)
        let updates = try await aliceSession.subscribeUpdates()

        let room = try await ownerSession.createRoom(room: "general")
        XCTAssertEqual(room.owner, owner.signPublicKey())
        XCTAssertEqual(room.epoch, 0)
        let isMemberBefore = try await aliceSession.isMember(room: "general")
        XCTAssertFalse(isMemberBefore)
        await assertThrows({
            // A refusal carries the protocol's code and is not worth retrying.
            guard case SessionError.NotMember = $0, let refused = $0 as? SessionError else { return false }
            return refused.refusalCode() == "not_member" && !refused.isTransient()
        }) {
            try await aliceSession.currentEpoch(room: "general")
        }

        try await ownerSession.addMember(room: "general", member: alice.signPublicKey())
        let added = await next(updates)
        XCTAssertEqual(added, .added(room: "general"))
        let isMemberAfter = try await aliceSession.isMember(room: "general")
        XCTAssertTrue(isMemberAfter)
        await assertThrows({ if case SessionError.NoKey = $0 { return true }; return false }) {
            try await aliceSession.roomKey(room: "general")
        }

        let first = try await ownerSession.rekey(room: "general")
        XCTAssertEqual(first.epoch, 1)
        let epochOne = await next(updates)
        XCTAssertEqual(epochOne, .newEpoch(room: "general", epoch: 1))
        let opened = try await aliceSession.roomKey(room: "general")
        XCTAssertEqual(opened.epoch, 1)
        XCTAssertEqual(opened.key.exposeBytes(), first.key.exposeBytes())

        let stop = Progress(goOn: false)
        await assertThrows({ if case SessionError.Cancelled = $0 { return true }; return false }) {
            try await ownerSession.rekeyWithProgress(room: "general", observer: stop)
        }
        XCTAssertEqual(stop.reports, [.sealed(done: 2, total: 2)])
        let afterCancel = try await ownerSession.currentEpoch(room: "general")
        XCTAssertEqual(afterCancel, 1)
        let watched = Progress(goOn: true)
        let second = try await ownerSession.rekeyWithProgress(room: "general", observer: watched)
        XCTAssertEqual(watched.reports, [.sealed(done: 2, total: 2)])
        let epochTwo = await next(updates)
        XCTAssertEqual(epochTwo, .newEpoch(room: "general", epoch: 2))
        let current = try await aliceSession.currentEpoch(room: "general")
        XCTAssertEqual(current, 2)
        let latest = try await aliceSession.roomKey(room: "general")
        XCTAssertEqual(latest.key.exposeBytes(), second.key.exposeBytes())
        let earlier = try await aliceSession.roomKey(room: "general", epoch: 1)
        XCTAssertEqual(earlier.key.exposeBytes(), first.key.exposeBytes())
        let rooms = try await aliceSession.myRooms()
        XCTAssertEqual(rooms, [RoomInfo(id: "general", owner: owner.signPublicKey(), epoch: 2)])
        await assertThrows({ if case SessionError.NotOwner = $0 { return true }; return false }) {
            try await aliceSession.rekey(room: "general")
        }

        try await ownerSession.removeMember(room: "general", member: alice.signPublicKey())
        let removed = await next(updates)
        XCTAssertEqual(removed, .removed(room: "general"))
        let third = try await ownerSession.rekey(room: "general")
        XCTAssertEqual(third.epoch, 3)
        for epoch in [nil, 3, 2] as [UInt64?] {
            await assertThrows({ if case SessionError.NotMember = $0 { return true }; return false }) {
                try await aliceSession.roomKey(room: "general", epoch: epoch)
            }
        }
        let isMemberRemoved = try await aliceSession.isMember(room: "general")
        XCTAssertFalse(isMemberRemoved)

        _ = try server.cli("user", "revoke", alice.signPublicKey())
        let ended = try await eventually { aliceSession.state() == .ended(reason: .revoked) }
        XCTAssertTrue(ended, "still \(aliceSession.state())")
        while let update = await next(updates) {
            XCTAssertEqual(update, .disconnected)
        }
        XCTAssertEqual(updates.end, .sessionEnded(reason: .revoked))

        await assertThrows({ if case SessionError.Ended = $0 { return true }; return false }) {
            try await aliceSession.myRooms()
        }
        await assertThrows({ if case SessionError.LoginRefused = $0 { return true }; return false }) {
            try await Session.connect(identity: alice, natsUrls: aliceRegistration.natsUrls)
        }
        // Told where to ask, a new session learns why it is refused: the identity is revoked.
        let asking = SessionOptions(loginPatienceMs: 500, statusServerUrl: aliceRegistration.serverUrl)
        await assertThrows({
            guard case SessionError.Ended = $0 else { return false }
            return "\($0)".contains("revoked")
        }) {
            try await Session.connect(identity: alice, natsUrls: aliceRegistration.natsUrls, options: asking)
        }
        let ownerEpoch = try await ownerSession.currentEpoch(room: "general")
        XCTAssertEqual(ownerEpoch, 3)
        await ownerSession.closeSession()
        await assertThrows({ if case SessionError.Ended = $0 { return true }; return false }) {
            try await ownerSession.myRooms()
        }
    }

    func testRegistrationRefusalsAreTypedErrorsAndChangeNothing() async throws {
        let server = try Membershipd()
        defer { server.stop() }
        let link = try InviteLink.parse(text: try server.invite())
        let me = try Identity.generate()
        let first = try await register(link: link, identity: me)
        let again = try await register(link: link, identity: me)  // a retry after a lost reply
        XCTAssertEqual(first, again)
        await assertThrows({
            guard case RegisterError.InviteUsed = $0, let used = $0 as? RegisterError else { return false }
            return used.refusalCode() == "invite_used" && !used.isTransient()
        }) {
            try await register(link: link, identity: try Identity.generate())
        }
        let unknown = try InviteLink.parse(
            text: try formatInviteLink(serverUrl: link.serverUrl(), tokenHex: String(repeating: "ab", count: 32)))
        await assertThrows({ if case RegisterError.InviteUnknown = $0 { return true }; return false }) {
            try await register(link: unknown, identity: try Identity.generate())
        }
        let users = try server.cli("user", "list") as? [Any]
        XCTAssertEqual(users?.count, 1)
    }

    func testBadArgumentsAreTypedErrorsBeforeAnyRequest() async throws {
        let server = try Membershipd()
        defer { server.stop() }
        let (me, registration) = try await registered(server)
        let session = try await Session.connect(identity: me, natsUrls: registration.natsUrls)
        await assertThrows({
            guard case SessionError.InvalidArgument = $0, let invalid = $0 as? SessionError else { return false }
            return invalid.refusalCode() == nil && !invalid.isTransient()
        }) {
            try await session.isMember(room: "not a room id")
        }
        await assertThrows({ if case SessionError.InvalidArgument = $0 { return true }; return false }) {
            try await session.addMember(room: "general", member: "not-a-key")
        }
        await assertThrows({ if case SessionError.Connect = $0 { return true }; return false }) {
            try await Session.connect(identity: me, natsUrls: ["not a url at all"])
        }
        await session.closeSession()
    }

    func testCancellingTheIteratingTaskStopsItsWatch() async throws {
        let server = try Membershipd()
        defer { server.stop() }
        let (owner, registration) = try await registered(server)
        let session = try await Session.connect(identity: owner, natsUrls: registration.natsUrls)
        _ = try await session.createRoom(room: "general")
        let updates = try await session.subscribeUpdates()
        let seen = Seen()
        let iterating = Task {
            for await update in updates { seen.append(update) }
        }
        _ = try await session.rekey(room: "general")
        let delivered = try await eventually { seen.updates == [.newEpoch(room: "general", epoch: 1)] }
        XCTAssertTrue(delivered, "\(seen.updates)")

        iterating.cancel()
        await iterating.value
        let stopped = try await eventually { updates.end == .cancelled }
        XCTAssertTrue(stopped, "the watch still runs: \(String(describing: updates.end))")
        await session.closeSession()
    }

    /// The updates a task has iterated, read from another.
    final class Seen: @unchecked Sendable {
        private let lock = NSLock()
        private var seen: [RoomUpdate] = []
        var updates: [RoomUpdate] { lock.withLock { seen } }
        func append(_ update: RoomUpdate) { lock.withLock { seen.append(update) } }
    }
}
