import Foundation

/// A real `membershipd serve` on the embedded default (SQLite and its own nats-server) in a
/// temporary directory on loopback ports, with its admin CLI. The binaries come from
/// `$UNIBUS_MEMBERSHIPD` and `$NATS_SERVER`, or from the repository's `target/debug/membershipd`
/// and `.tools/bin/nats-server` (`cargo build -p unibus-server` and
/// `scripts/install-nats-server.sh`).
final class Membershipd {
    private let data: URL
    private let httpPort: Int
    private let natsPort: Int
    private let binary: String
    private let natsServer: String
    private let process = Process()

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
        httpPort = Membershipd.freePort()
        natsPort = Membershipd.freePort()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments(["serve"])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try waitHealthy()
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: data)
    }

    private static func freePort() -> Int {
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                _ = bind(fd, $0, length)
                _ = getsockname(fd, $0, &length)
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private func arguments(_ extra: [String]) -> [String] {
        ["--data-dir", data.path,
         "--listen", "127.0.0.1:\(httpPort)",
         "--nats-listen", "127.0.0.1:\(natsPort)",
         "--nats-server", natsServer] + extra
    }

    private func waitHealthy() throws {
        let url = URL(string: "http://127.0.0.1:\(httpPort)/healthz")!
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let (_, response) = try? syncGet(url),
               (response as? HTTPURLResponse)?.statusCode == 200 {
                return
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw NSError(domain: "membershipd", code: 1,
                      userInfo: [NSLocalizedDescriptionKey: "not healthy within 60 s"])
    }

    private func syncGet(_ url: URL) throws -> (Data, URLResponse) {
        let done = DispatchSemaphore(value: 0)
        var result: Result<(Data, URLResponse), Error> = .failure(URLError(.unknown))
        URLSession.shared.dataTask(with: url) { data, response, error in
            if let data = data, let response = response {
                result = .success((data, response))
            } else {
                result = .failure(error ?? URLError(.unknown))
            }
            done.signal()
        }.resume()
        done.wait()
        return try result.get()
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
