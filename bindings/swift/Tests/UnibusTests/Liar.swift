import Foundation
import Unibus

/// `unibus-liar`: records real replies of membershipd as `identity`, then answers that
/// identity's control-plane requests on a nats-server of its own, replaying epoch `rollback` of
/// a room as its latest and naming an impostor as the owner of `swapOwner`. The binary comes
/// from `$UNIBUS_LIAR`, or the repository's `target/debug/unibus-liar` (`scripts/test.sh`
/// builds it). It runs until its stdin closes (`stop()`).
final class Liar {
    private let child: Child
    /// Where a session connects to be lied to.
    let natsUrl: String
    /// The impostor's signing key, hex.
    let impostor: String

    init(identity: Identity, natsUrls: [String], rollback: (String, UInt64)? = nil,
         swapOwner: String? = nil) throws {
        var environment = ProcessInfo.processInfo.environment
        environment["NATS_SERVER"] = try repositoryBinary("NATS_SERVER", ".tools/bin/nats-server")
        var arguments: [String] = []
        for url in natsUrls { arguments += ["--cluster", url] }
        if let rollback { arguments += ["--rollback", "\(rollback.0):\(rollback.1)"] }
        if let room = swapOwner { arguments += ["--swap-owner", room] }
        child = try Child(try repositoryBinary("UNIBUS_LIAR", "target/debug/unibus-liar"), arguments,
                          environment: environment, stdin: .pipe, stdout: .pipe)
        let secret = identity.exportSecretBytes().map { String(format: "%02x", $0) }.joined()
        var line = Data()
        if let input = child.input, let output = child.output {
            input.write(Data((secret + "\n").utf8))
            while true {
                let byte = output.readData(ofLength: 1)
                if byte.isEmpty || byte == Data("\n".utf8) { break }
                line.append(byte)
            }
        }
        let started = (try? JSONSerialization.jsonObject(with: line)) as? [String: String]
        guard let url = started?["nats_url"], let impostor = started?["impostor"] else {
            child.stop()
            throw failure("unibus-liar did not start: \(String(decoding: line, as: UTF8.self))")
        }
        natsUrl = url
        self.impostor = impostor
    }

    deinit { stop() }

    /// Closes its stdin, which stops it; SIGTERM only if it has not stopped within 30 s.
    func stop() {
        guard !child.exited else { return }
        try? child.input?.close()
        let deadline = Date().addingTimeInterval(30)
        while !child.exited && Date() < deadline { usleep(10_000) }
        child.stop()
    }
}
