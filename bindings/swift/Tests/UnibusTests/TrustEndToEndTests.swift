import Foundation
import Unibus
import XCTest

/// What the Swift SDK trusts across restarts, end to end, as the Kotlin and Python suites:
/// pins and epoch floors recorded with a real membershipd in a trust file are enforced against a
/// control plane that lies (`unibus-liar` replays an older, validly signed epoch as the latest
/// and names an impostor as a room's owner).
final class TrustEndToEndTests: XCTestCase {
    func testTheSafetyNumberIsTwelveGroupsOfFiveDigitsAndTheCodeReadsBack() throws {
        let owner = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  // RFC 8032 test 1
        let fingerprint = try ownerFingerprint(room: "general", owner: owner)
        XCTAssertEqual(fingerprint.safetyNumber,
                       "82923 94159 02761 87939 24232 60937 80972 98870 40424 33927 35428 18703")
        XCTAssertEqual(fingerprint.qrCode, "unibus-owner:v1:general:\(owner)")
        XCTAssertEqual(try parseOwnerCode(code: fingerprint.qrCode), fingerprint)
        XCTAssertThrowsError(try parseOwnerCode(code: "unibus-owner:v1:general")) {
            guard case TrustError.BadOwnerCode = $0 else { return XCTFail("\($0)") }
        }
    }

    func testATrustFileRefusesARolledBackEpochAndASwappedOwnerFromALyingServerAfterARestart() async throws {
        let server = try Membershipd()
        defer { server.stop() }
        let me = try Identity.generate()
        let registration = try await register(
            link: try InviteLink.parse(text: try server.invite()), identity: me)
        let mine = me.signPublicKey()
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("unibus-trust-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("trust.json").path

        // The real membershipd: "general" at epoch 2, "annex" at epoch 1.
        do {
            let trust = try TrustStore.open(path: path, identity: me)
            let session = try await Session.connect(
                identity: me, natsUrls: registration.natsUrls, trust: trust)
            for room in ["general", "annex"] {
                _ = try await session.createRoom(room: room)
                _ = try await session.rekey(room: room)
            }
            _ = try await session.rekey(room: "general")
            let general = try await session.roomKey(room: "general")
            XCTAssertEqual(general.epoch, 2)
            let annex = try await session.roomKey(room: "annex")
            XCTAssertEqual(annex.epoch, 1)
            await session.closeSession()
        }

        // A new process's view: the pins and floors are in the file, for this identity only.
        let trust = try TrustStore.open(path: path, identity: me)
        XCTAssertEqual(try trust.room(room: "general"),
                       RoomTrust(room: "general", owner: mine, verified: false, epochFloor: 2))
        let stranger = try Identity.generate()
        XCTAssertThrowsError(try TrustStore.open(path: path, identity: stranger)) {
            guard case TrustError.WrongIdentity = $0 else { return XCTFail("\($0)") }
        }
        await assertThrows({ if case SessionError.Trust = $0 { return true }; return false }) {
            try await Session.connect(identity: me, natsUrls: registration.natsUrls,
                                      trust: TrustStore.inMemory(identity: stranger))
        }

        let liar = try Liar(identity: me, natsUrls: registration.natsUrls,
                            rollback: ("general", 1), swapOwner: "annex")
        defer { liar.stop() }
        let session = try await Session.connect(identity: me, natsUrls: [liar.natsUrl], trust: trust)
        let updates = try await session.subscribeUpdates()

        // The replayed epoch is refused as the latest, and served as history.
        await assertThrows({ if case SessionError.EpochRollback = $0 { return true }; return false }) {
            try await session.roomKey(room: "general")
        }
        await assertThrows({ if case SessionError.EpochRollback = $0 { return true }; return false }) {
            try await session.currentEpoch(room: "general")
        }
        let history = try await session.roomKey(room: "general", epoch: 1)
        XCTAssertEqual(history.epoch, 1)
        XCTAssertEqual(try trust.room(room: "general")?.epochFloor, 2)

        // The impostor's validly signed manifest is refused: the owner is pinned.
        await assertThrows({ if case SessionError.OwnerChanged = $0 { return true }; return false }) {
            try await session.roomKey(room: "annex")
        }
        let changed = await next(updates)
        XCTAssertEqual(changed, .ownerChanged(room: "annex", pinned: mine, found: liar.impostor,
                                              verified: false))

        // Out of band: compare, mark verified; accept a new owner only deliberately.
        let fingerprint = try XCTUnwrap(try trust.ownerFingerprint(room: "general"))
        XCTAssertEqual(fingerprint, try ownerFingerprint(room: "general", owner: mine))
        XCTAssertEqual(try parseOwnerCode(code: fingerprint.qrCode), fingerprint)
        XCTAssertEqual(fingerprint.safetyNumber.split(separator: " ").count, 12)
        try trust.markOwnerVerified(room: "general", owner: mine)
        XCTAssertThrowsError(try trust.markOwnerVerified(room: "annex", owner: liar.impostor)) {
            guard case TrustError.OwnerMismatch = $0 else { return XCTFail("\($0)") }
        }
        try trust.acceptOwner(room: "annex", owner: liar.impostor)
        let accepted = try await session.roomKey(room: "annex")
        XCTAssertEqual(accepted.epoch, 1)
        await session.closeSession()

        XCTAssertEqual(try TrustStore.open(path: path, identity: me).rooms(), [
            RoomTrust(room: "annex", owner: liar.impostor, verified: true, epochFloor: 1),
            RoomTrust(room: "general", owner: mine, verified: true, epochFloor: 2),
        ])
    }
}
