import Foundation

/// A real `membershipd serve` on the embedded default (SQLite and its own nats-server) in a
/// temporary directory, with its admin CLI. It binds port 0 (the OS picks free loopback ports,
/// so parallel servers never race for one) and reports where it serves in
/// `<data>/serving.json`. The binaries come from `$UNIBUS_MEMBERSHIPD` and `$NATS_SERVER`, or
/// from the repository's `target/debug/membershipd` and `.tools/bin/nats-server`
/// (`scripts/test.sh` provides both).
final class Membershipd {
    private let data: URL
    private let binary: String
    private let child: Child
    /// The base URL of its HTTP API (and of its invite links), as it reported.
    private(set) var publicUrl = ""

    init() throws {
        binary = try repositoryBinary("UNIBUS_MEMBERSHIPD", "target/debug/membershipd")
        let natsServer = try repositoryBinary("NATS_SERVER", ".tools/bin/nats-server")
        data = FileManager.default.temporaryDirectory
            .appendingPathComponent("membershipd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        child = try Child(binary, ["--data-dir", data.path, "--nats-server", natsServer,
                                   "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "serve"],
                          stderr: .file(data.appendingPathComponent("membershipd.log").path))
        // Thrown from here, after every property is set, the error still runs deinit: stop().
        publicUrl = try waitServing()
    }

    deinit { stop() }

    /// Stops the server (SIGTERM) and removes its data. A test calls it in a `defer`, so the
    /// server lives to the end of the test, not only to its last use.
    func stop() {
        child.stop()
        try? FileManager.default.removeItem(at: data)
    }

    /// Waits until this process writes serving.json (an earlier one's names another pid).
    private func waitServing() throws -> String {
        let report = data.appendingPathComponent("serving.json")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if child.exited {
                let log = data.appendingPathComponent("membershipd.log")
                let said = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                throw failure("membershipd exited: \(said.suffix(2000))")
            }
            if let bytes = try? Data(contentsOf: report),
               let serving = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any],
               (serving["pid"] as? NSNumber)?.int32Value == child.pid,
               let url = serving["public_url"] as? String {
                return url
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw failure("membershipd did not serve within 60 s")
    }

    /// Runs an admin command on the same data directory and returns its JSON output.
    func cli(_ args: String...) throws -> Any {
        let run = try Child(binary, ["--data-dir", data.path, "--public-url", publicUrl, "--json"] + args,
                            stdout: .pipe)
        let bytes = run.output?.readDataToEndOfFile() ?? Data()
        guard run.succeeded else {
            throw failure("membershipd \(args) failed: \(String(decoding: bytes, as: UTF8.self))")
        }
        return try JSONSerialization.jsonObject(with: bytes)
    }

    /// A fresh single-use invite link.
    func invite() throws -> String {
        let created = try cli("invite", "create") as? [String: Any]
        guard let link = created?["link"] as? String else { throw failure("no link in the CLI output") }
        return link
    }
}

/// `$variable`, or `path` in the repository (this file is in bindings/swift/Tests/UnibusTests).
func repositoryBinary(_ variable: String, _ path: String) throws -> String {
    let repo = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let binary = ProcessInfo.processInfo.environment[variable]
        ?? repo.appendingPathComponent(path).path
    guard FileManager.default.isExecutableFile(atPath: binary) else {
        throw failure("\(binary) is missing: run scripts/test.sh, or set $\(variable)")
    }
    return binary
}

/// An error whose description is `message`.
func failure(_ message: String) -> NSError {
    NSError(domain: "UnibusTests", code: 1, userInfo: [NSLocalizedDescriptionKey: message])
}
