import Foundation
import Unibus
import XCTest

/// The Swift bindings call the real native library: identities, invite links, sealed keys, as
/// the Kotlin and Python suites do.
final class FoundationTests: XCTestCase {
    let token = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

    private func recipient(_ identity: Identity) -> Recipient {
        Recipient(signPublicKey: identity.signPublicKey(), kexPublicKey: identity.kexPublicKey())
    }

    /// Runs `body`, which must throw an error that `expected` accepts.
    private func assertThrowsSync<T>(
        _ expected: (Error) -> Bool, _ body: () throws -> T,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try body(), file: file, line: line) {
            XCTAssertTrue(expected($0), "unexpected \($0)", file: file, line: line)
        }
    }

    func testIdentityExportsAndImportsItsSecrets() throws {
        let alice = try Identity.generate()
        let again = try Identity.fromSecretBytes(bytes: alice.exportSecretBytes())
        XCTAssertEqual(again.signPublicKey(), alice.signPublicKey())
        XCTAssertEqual(again.kexPublicKey(), alice.kexPublicKey())
        XCTAssertTrue(alice.nkeyPublic().hasPrefix("U"))
        XCTAssertEqual(alice.nkeyPublic().count, 56)
        XCTAssertEqual(alice.sign(message: Data("hello".utf8)).count, 64)
    }

    func testIdentityImportRejectsBadBytesWithATypedError() {
        assertThrowsSync({ if case IdentityError.WrongLength = $0 { return true }; return false }) {
            try Identity.fromSecretBytes(bytes: Data(repeating: 1, count: 10))
        }
        assertThrowsSync({ if case IdentityError.UnsupportedVersion = $0 { return true }; return false }) {
            try Identity.fromSecretBytes(bytes: Data([7]) + Data(repeating: 1, count: 64))
        }
    }

    func testPublicKeyValidationNormalizesCaseAndRejectsZero() throws {
        let key = try Identity.generate().signPublicKey()
        XCTAssertEqual(try validateSignPublicKey(hex: key.uppercased()), key)
        assertThrowsSync({ if case KeyError.AllZero = $0 { return true }; return false }) {
            try validateKexPublicKey(hex: String(repeating: "0", count: 64))
        }
        assertThrowsSync({ if case KeyError.WrongLength = $0 { return true }; return false }) {
            try validateSignPublicKey(hex: "abc")
        }
        assertThrowsSync({ if case KeyError.NotHex = $0 { return true }; return false }) {
            try validateSignPublicKey(hex: String(repeating: "g", count: 64))
        }
    }

    func testInviteLinkParsesWhatUsersPaste() throws {
        let link = try InviteLink.parse(text: "  https://Members.Example.com/invite#\(token.uppercased())\n")
        XCTAssertEqual(link.serverUrl(), "https://members.example.com")
        XCTAssertEqual(link.registerUrl(), "https://members.example.com/register")
        XCTAssertEqual(link.toUrlString(), "https://members.example.com/invite#\(token)")
        XCTAssertEqual(link.deepLink(), "unibus://members.example.com/invite#\(token)")
    }

    func testInviteLinkErrorsAreTypedAndHideTheToken() {
        let cases: [(String, (Error) -> Bool)] = [
            ("", { if case InviteLinkError.Empty = $0 { return true }; return false }),
            (token, { if case InviteLinkError.MissingServer = $0 { return true }; return false }),
            ("ftp://example.com/invite#\(token)",
             { if case InviteLinkError.UnsupportedScheme = $0 { return true }; return false }),
            ("http://example.com/invite#\(token)",
             { if case InviteLinkError.InsecureHttp = $0 { return true }; return false }),
            ("https://example.com/join#\(token)",
             { if case InviteLinkError.WrongPath = $0 { return true }; return false }),
            ("https://example.com/invite",
             { if case InviteLinkError.MissingToken = $0 { return true }; return false }),
            ("https://example.com/invite#\(token.prefix(10))",
             { if case InviteLinkError.TokenLength = $0 { return true }; return false }),
            ("https://example.com/invite#\(token.dropLast())z",
             { if case InviteLinkError.TokenCharacters = $0 { return true }; return false }),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try InviteLink.parse(text: text), text) { error in
                XCTAssertTrue(expected(error), "\(text): unexpected \(error)")
                XCTAssertFalse("\(error)".contains(token), "the token is in \(error)")
            }
        }
    }

    func testFormatInviteLinkRoundTrips() throws {
        let text = try formatInviteLink(serverUrl: "http://127.0.0.1:8080/", tokenHex: token)
        XCTAssertEqual(text, "http://127.0.0.1:8080/invite#\(token)")
        XCTAssertEqual(try InviteLink.parse(text: text).serverUrl(), "http://127.0.0.1:8080")
    }

    func testASealedKeyOpensOnlyForItsRoomEpochAndMember() throws {
        let owner = try Identity.generate()
        let member = try Identity.generate()
        let stranger = try Identity.generate()
        let key = try RoomKey.generate()
        let sealed = try sealRoomKey(roomKey: key, roomId: "general", epoch: 3,
                                     recipientKexPublicKey: member.kexPublicKey(),
                                     rekeyerSignPublicKey: owner.signPublicKey())
        XCTAssertEqual(sealed.count, 81)
        let opened = try openRoomKey(identity: member, sealed: sealed, roomId: "general", epoch: 3,
                                     rekeyerSignPublicKey: owner.signPublicKey())
        XCTAssertEqual(opened.exposeBytes(), key.exposeBytes())
        for (who, room, epoch) in [(member, "other", 3), (member, "general", 4), (stranger, "general", 3)]
            as [(Identity, String, UInt64)] {
            assertThrowsSync({ if case SealError.Seal = $0 { return true }; return false }) {
                try openRoomKey(identity: who, sealed: sealed, roomId: room, epoch: epoch,
                                rekeyerSignPublicKey: owner.signPublicKey())
            }
        }
        assertThrowsSync({ if case SealError.InvalidInput = $0 { return true }; return false }) {
            try sealRoomKey(roomKey: key, roomId: "bad room", epoch: 1,
                            recipientKexPublicKey: member.kexPublicKey(),
                            rekeyerSignPublicKey: owner.signPublicKey())
        }
    }

    func testAsyncRekeySealsForEveryMemberAndVerifies() async throws {
        let owner = try Identity.generate()
        let alice = try Identity.generate()
        let bob = try Identity.generate()
        let key = try RoomKey.generate()
        let manifest = try await rekeyRoom(
            rekeyer: owner, roomId: "general", epoch: 1, previousEpoch: 0,
            roomKey: key, recipients: [owner, alice, bob].map(recipient))

        for who in [owner, alice, bob] {
            let opened = try openManifest(
                identity: who, manifest: manifest, roomId: "general", epoch: 1,
                trustedRekeyerSignPublicKey: owner.signPublicKey())
            XCTAssertEqual(opened.exposeBytes(), key.exposeBytes())
        }
        func open(_ bytes: Data, epoch: UInt64 = 1, rekeyer: Identity? = nil) throws -> RoomKey {
            try openManifest(identity: alice, manifest: bytes, roomId: "general", epoch: epoch,
                             trustedRekeyerSignPublicKey: (rekeyer ?? owner).signPublicKey())
        }
        assertThrowsSync({ if case SealError.UntrustedRekeyer = $0 { return true }; return false }) {
            try open(manifest, rekeyer: bob)
        }
        assertThrowsSync({ if case SealError.WrongRoomOrEpoch = $0 { return true }; return false }) {
            try open(manifest, epoch: 2)
        }
        // The signature follows the 94-byte header (protocol section 8.3); the entries come last.
        var signatureBent = manifest
        signatureBent[signatureBent.startIndex + 94] ^= 1
        assertThrowsSync({ if case SealError.BadSignature = $0 { return true }; return false }) {
            try open(signatureBent)
        }
        var entryBent = manifest
        entryBent[entryBent.endIndex - 1] ^= 1
        assertThrowsSync({ if case SealError.RootMismatch = $0 { return true }; return false }) {
            try open(entryBent)
        }
    }

    func testAsyncRekeyErrorsAreTyped() async throws {
        let owner = try Identity.generate()
        let key = try RoomKey.generate()
        await assertThrows({ if case SealError.NoMembers = $0 { return true }; return false }) {
            try await rekeyRoom(rekeyer: owner, roomId: "general", epoch: 1, previousEpoch: 0,
                                roomKey: key, recipients: [])
        }
        await assertThrows({ if case SealError.InvalidInput = $0 { return true }; return false }) {
            try await rekeyRoom(rekeyer: owner, roomId: "general", epoch: 1, previousEpoch: 0,
                                roomKey: key, recipients: [Recipient(signPublicKey: "00", kexPublicKey: "00")])
        }
    }
}
