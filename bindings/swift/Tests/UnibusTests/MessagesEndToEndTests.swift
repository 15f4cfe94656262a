import Foundation
import Unibus
import XCTest

/// Messages in rooms through the Swift SDK, against a real membershipd (as the Kotlin and Python
/// suites): two members send and read, a watch with messages delivers a new one live, a
/// non-member and a body too large get their typed errors, and a member added later reads
/// earlier epochs once the owner shares them.
final class MessagesEndToEndTests: XCTestCase {
    private func connected(_ server: Membershipd) async throws -> (Identity, Session) {
        let me = try Identity.generate()
        let link = try InviteLink.parse(text: try server.invite())
        let registration = try await register(link: link, identity: me)
        return (me, try await Session.connect(identity: me, natsUrls: registration.natsUrls))
    }

    /// The next message of `updates`; membership updates before it are passed over.
    private func nextMessage(_ updates: Updates) async -> (String, ReceivedMessage)? {
        while let update = await next(updates) {
            if case let .message(room, message) = update { return (room, message) }
        }
        return nil
    }

    func testMembersSendAndReadMessagesAndAWatchDeliversNewOnes() async throws {
        let server = try Membershipd()
        defer { server.stop() }
        let (owner, ownerSession) = try await connected(server)
        let (alice, aliceSession) = try await connected(server)
        _ = try await ownerSession.createRoom(room: "general")
        try await ownerSession.addMember(room: "general", member: alice.signPublicKey())
        _ = try await ownerSession.rekey(room: "general")

        let updates = try await aliceSession.subscribeUpdates(messages: true)
        let hello = try await ownerSession.send(room: "general", body: Data("hello".utf8), contentType: "text/plain")
        XCTAssertEqual(hello.epoch, 1)
        XCTAssertFalse(hello.duplicate)
        XCTAssertEqual(hello.id.count, 32)
        let live = await nextMessage(updates)
        XCTAssertEqual(live?.0, "general")
        XCTAssertEqual(live?.1.position, hello.position)
        XCTAssertNil(live?.1.unreadable)
        XCTAssertEqual(live?.1.message?.sender, owner.signPublicKey())
        XCTAssertEqual(live?.1.message?.id, hello.id)
        XCTAssertEqual(live?.1.message?.contentType, "text/plain")
        XCTAssertEqual(live?.1.message?.body, Data("hello".utf8))

        let bytes = Data((0..<256).map { UInt8($0) })
        let reply = try await aliceSession.send(room: "general", body: bytes, contentType: "application/octet-stream")
        XCTAssertGreaterThan(reply.position, hello.position)
        let second = await nextMessage(updates)
        XCTAssertEqual(second?.1.position, reply.position)
        updates.cancel()

        let page = try await ownerSession.messages(room: "general", page: .latest(limit: 10))
        XCTAssertFalse(page.more)
        XCTAssertEqual(page.messages.map { $0.message?.id }, [hello.id, reply.id])
        XCTAssertEqual(page.messages.map { $0.message?.sender }, [owner.signPublicKey(), alice.signPublicKey()])
        XCTAssertEqual(page.messages.last?.message?.body, bytes)
        let older = try await ownerSession.messages(room: "general", page: .before(position: reply.position, limit: 1))
        XCTAssertEqual(older.messages.map { $0.message?.id }, [hello.id])
        let newer = try await ownerSession.messages(room: "general", page: .after(position: hello.position, limit: 1))
        XCTAssertEqual(newer.messages.map { $0.message?.id }, [reply.id])

        // A registered user who is not a member can neither post nor read.
        let (_, carolSession) = try await connected(server)
        await assertThrows({
            guard case SessionError.NotMember = $0, let refused = $0 as? SessionError else { return false }
            return refused.refusalCode() == "not_member" && !refused.isTransient()
        }) {
            try await carolSession.send(room: "general", body: Data("let me in".utf8), contentType: "text/plain")
        }
        await assertThrows({ if case SessionError.NotMember = $0 { return true }; return false }) {
            try await carolSession.messages(room: "general", page: .latest(limit: 10))
        }
        let after = try await ownerSession.messages(room: "general", page: .latest(limit: 10))
        XCTAssertEqual(after.messages.count, 2)

        // Too large a body is refused before any request: a request would meet NotMember.
        await assertThrows({
            guard case SessionError.BodyTooLarge = $0, let large = $0 as? SessionError else { return false }
            return large.refusalCode() == nil && !large.isTransient()
        }) {
            try await carolSession.send(room: "general", body: Data(count: 65_537), contentType: "text/plain")
        }
        await assertThrows({ if case SessionError.InvalidArgument = $0 { return true }; return false }) {
            try await carolSession.messages(room: "general", page: .latest(limit: 0))
        }
        for session in [ownerSession, aliceSession, carolSession] { await session.closeSession() }
    }

    func testAMemberAddedLaterReadsEarlierEpochsOnceTheOwnerSharesThem() async throws {
        let server = try Membershipd()
        defer { server.stop() }
        let (_, ownerSession) = try await connected(server)
        let (bob, bobSession) = try await connected(server)
        _ = try await ownerSession.createRoom(room: "general")
        _ = try await ownerSession.rekey(room: "general")
        let early = try await ownerSession.send(room: "general", body: Data("before bob".utf8), contentType: "text/plain")

        // The default: Bob, added later, reads epoch 1 as "no key".
        XCTAssertEqual(try ownerSession.historyPolicy(room: "general"), .joined)
        try await ownerSession.addMember(room: "general", member: bob.signPublicKey())
        _ = try await ownerSession.rekey(room: "general")
        let before = try await bobSession.messages(room: "general", page: .latest(limit: 10))
        XCTAssertEqual(before.messages.map { $0.unreadable }, [.noKey(epoch: 1)])

        // Only the owner sets a policy and shares; Bob then reads his history.
        XCTAssertThrowsError(try bobSession.setHistoryPolicy(room: "general", policy: .shared)) {
            guard case SessionError.NotOwner = $0 else { return XCTFail("\($0)") }
        }
        try ownerSession.setHistoryPolicy(room: "general", policy: .shared)
        XCTAssertEqual(try ownerSession.historyPolicy(room: "general"), .shared)
        let shared = try await ownerSession.shareHistory(room: "general", member: bob.signPublicKey())
        XCTAssertEqual(shared, 2)
        let after = try await bobSession.messages(room: "general", page: .latest(limit: 10))
        XCTAssertEqual(after.messages.map { $0.position }, [early.position])
        XCTAssertEqual(after.messages.first?.message?.body, Data("before bob".utf8))
        await assertThrows({ if case SessionError.NotOwner = $0 { return true }; return false }) {
            try await bobSession.shareHistory(room: "general", member: bob.signPublicKey())
        }
        for session in [ownerSession, bobSession] { await session.closeSession() }
    }
}
