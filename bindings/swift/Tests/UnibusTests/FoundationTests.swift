import XCTest
@testable import Unibus

/// The Swift bindings call the real native library: identities, invite links, sealed keys.
/// They mirror bindings/kotlin and bindings/python; run them on a Mac with `swift test`.
final class FoundationTests: XCTestCase {
    let token = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

    func testIdentityExportsAndImportsItsSecrets() throws {
        let alice = try Identity.generate()
        let again = try Identity.fromSecretBytes(bytes: alice.exportSecretBytes())
        XCTAssertEqual(again.signPublicKey(), alice.signPublicKey())
        XCTAssertEqual(again.kexPublicKey(), alice.kexPublicKey())
        XCTAssertTrue(alice.nkeyPublic().hasPrefix("U"))
    }

    func testInviteLinkParsesWhatUsersPaste() throws {
        let link = try InviteLink.parse(text: "  https://Members.Example.com/invite#\(token.uppercased())\n")
        XCTAssertEqual(link.serverUrl(), "https://members.example.com")
        XCTAssertEqual(link.registerUrl(), "https://members.example.com/register")
    }

    func testInviteLinkErrorsAreTyped() {
        XCTAssertThrowsError(try InviteLink.parse(text: "http://example.com/invite#\(token)")) { error in
            guard case InviteLinkError.InsecureHttp = error else {
                return XCTFail("expected InsecureHttp, got \(error)")
            }
        }
    }

    func testAsyncRekeyAndOpenManifest() async throws {
        let owner = try Identity.generate()
        let member = try Identity.generate()
        let key = try RoomKey.generate()
        let recipients = [owner, member].map {
            Recipient(signPublicKey: $0.signPublicKey(), kexPublicKey: $0.kexPublicKey())
        }
        let manifest = try await rekeyRoom(
            rekeyer: owner, roomId: "general", epoch: 1, previousEpoch: 0,
            roomKey: key, recipients: recipients)
        let opened = try openManifest(
            identity: member, manifest: manifest, roomId: "general", epoch: 1,
            trustedRekeyerSignPublicKey: owner.signPublicKey())
        XCTAssertEqual(opened.exposeBytes(), key.exposeBytes())
    }
}
