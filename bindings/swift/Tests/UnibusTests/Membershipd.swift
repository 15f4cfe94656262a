import Foundation

/// A real `membershipd serve` on the embedded default (SQLite and its own nats-server) in a
/// temporary directory, with its admin CLI. It binds port 0 (the OS picks free loopback ports,
/// so parallel servers never race for one) and reports where it serves in
/// `<data>/serving.json`. The binaries come from
/// `$UNIBUS_MEMBERSHIPD` and `$NATS_SERVER`, or from the repository's `target/debug/membershipd`
/// and `.tools/bin/nats-server` (`cargo build -p unibus-server` and
/// `scripts/install-nats-server.sh`).
final class Membershipd {
    private let data: URL
    private let binary: String
    private let natsServer: String
    private let process = Process()
    /// The base URL of its HTTP API (and of its invite links), as it reported.
    private(set) var publicUrl = ""

    init() throws {
        let repo = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let environment = ProcessInfo.processInfo.environment
        binary = environment["UNIBUS_MEMBERSHIPD"]
            ?? repo.appendingPathComponent("target/debug/membershipd").path
        natsServer = environment["NATS_SERVER"]
            ?? repo.appendingPathComponent(".tools/bin/nats-server").path
        data = FileManager.default.temporaryDirectory
            .appendingPathComponent("membershipd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--data-dir", data.path, "--nats-server", natsServer,
                             "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "serve"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        publicUrl = try waitServing()
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: data)
    }

    private func arguments(_ extra: [String]) -> [String] {
        ["--data-dir", data.path, "--public-url", publicUrl] + extra
    }

    /// Waits until this process writes serving.json (an earlier one's names another pid).
    private func waitServing() throws -> String {
        let report = data.appendingPathComponent("serving.json")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let bytes = try? Data(contentsOf: report),
               let serving = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any],
               (serving["pid"] as? NSNumber)?.int32Value == process.processIdentifier,
               let url = serving["public_url"] as? String {
                return url
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw NSError(domain: "membershipd", code: 1,
                      userInfo: [NSLocalizedDescriptionKey: "did not serve within 60 s"])
    }

    /// Runs an admin command on the same data directory and returns its JSON output.
    func cli(_ args: String...) throws -> Any {
        let run = Process()
        run.executableURL = URL(fileURLWithPath: binary)
        run.arguments = arguments(["--json"] + args)
        let output = Pipe()
        run.standardOutput = output
        try run.run()
        let bytes = output.fileHandleForReading.readDataToEndOfFile()
        run.waitUntilExit()
        return try JSONSerialization.jsonObject(with: bytes)
    }

    /// A fresh single-use invite link.
    func invite() throws -> String {
        let created = try cli("invite", "create") as? [String: Any]
        return created?["link"] as? String ?? ""
    }
}
