import Foundation

/// `unibus-liar`: records real replies of membershipd as `identity`, then answers that
/// identity's control-plane requests on a nats-server of its own, replaying epoch `rollback` of
/// a room as its latest and naming an impostor as the owner of `swapOwner`. The binary comes
/// from `$UNIBUS_LIAR`, or the repository's `target/debug/unibus-liar`
/// (`cargo build -p unibus-testkit --bin unibus-liar`). It runs until its stdin closes.
final class Liar {
    private let process = Process()
    private let input = Pipe()
    /// Where a session connects to be lied to.
    let natsUrl: String
    /// The impostor's signing key, hex.
    let impostor: String

    init(identity: Identity, natsUrls: [String], rollback: (String, UInt64)? = nil,
         swapOwner: String? = nil) throws {
        let repo = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var environment = ProcessInfo.processInfo.environment
        let binary = environment["UNIBUS_LIAR"]
            ?? repo.appendingPathComponent("target/debug/unibus-liar").path
        environment["NATS_SERVER"] = environment["NATS_SERVER"]
            ?? repo.appendingPathComponent(".tools/bin/nats-server").path
        var arguments: [String] = []
        for url in natsUrls { arguments += ["--cluster", url] }
        if let rollback = rollback { arguments += ["--rollback", "\(rollback.0):\(rollback.1)"] }
        if let room = swapOwner { arguments += ["--swap-owner", room] }
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.environment = environment
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let secret = identity.exportSecretBytes().map { String(format: "%02x", $0) }.joined()
        input.fileHandleForWriting.write(Data((secret + "\n").utf8))
        var line = Data()
        while true {
            let byte = output.fileHandleForReading.readData(ofLength: 1)
            if byte.isEmpty || byte == Data("\n".utf8) { break }
            line.append(byte)
        }
        let started = try JSONSerialization.jsonObject(with: line) as? [String: String]
        guard let url = started?["nats_url"], let impostor = started?["impostor"] else {
            throw NSError(domain: "unibus-liar", code: 1,
                          userInfo: [NSLocalizedDescriptionKey: "unibus-liar did not start"])
        }
        natsUrl = url
        self.impostor = impostor
    }

    deinit {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}
