#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

#if canImport(Glibc)
private typealias FileActions = posix_spawn_file_actions_t
private typealias SpawnAttributes = posix_spawnattr_t
#else
// Darwin declares both as opaque pointers.
private typealias FileActions = posix_spawn_file_actions_t?
private typealias SpawnAttributes = posix_spawnattr_t?
#endif

/// A child process of the tests (membershipd, unibus-liar, the admin CLI), started with
/// `posix_spawn` with an empty signal mask and every signal at its default action.
///
/// Why not Foundation's `Process`: on Linux it hands the child the signal mask of the thread that
/// starts it, and the threads that run async tests block SIGINT and SIGTERM. A membershipd
/// started there never sees `terminate()`'s SIGTERM (and `waitUntilExit()` spins), nor does the
/// nats-server it starts in turn. Sending SIGKILL instead would reach membershipd but skip its
/// shutdown. Spawning with the mask and dispositions set explicitly gives every child the state
/// a shell would, whichever thread starts it, so `stop()` is an ordinary SIGTERM.
final class Child {
    /// Where one of the child's standard streams goes.
    enum Stream {
        /// `/dev/null`.
        case null
        /// A file, created or truncated.
        case file(String)
        /// A pipe whose other end the parent keeps: `Child.input` or `Child.output`.
        case pipe
    }

    let pid: pid_t
    /// The write end of the child's stdin, for `.pipe`.
    let input: FileHandle?
    /// The read end of the child's stdout, for `.pipe`.
    let output: FileHandle?
    private var status: Int32?

    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
         stdin: Stream = .null, stdout: Stream = .null, stderr: Stream = .null) throws {
        var actions = FileActions()
        var attributes = SpawnAttributes()
        guard posix_spawn_file_actions_init(&actions) == 0, posix_spawnattr_init(&attributes) == 0
        else { throw Child.error("posix_spawn setup failed", errno) }
        defer {
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attributes)
        }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        // The parent's ends of the pipes: closed in the child (close-on-exec), kept here.
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        defer { childEnds.forEach { _ = close($0) } }
        func route(_ stream: Stream, to fd: Int32, childReads: Bool) throws -> Int32? {
            switch stream {
            case .null:
                posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_RDWR, 0)
                return nil
            case .file(let path):
                posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
                return nil
            case .pipe:
                var ends: [Int32] = [0, 0]
                guard pipe(&ends) == 0 else { throw Child.error("pipe failed", errno) }
                let (childEnd, parentEnd) = childReads ? (ends[0], ends[1]) : (ends[1], ends[0])
                _ = fcntl(parentEnd, F_SETFD, FD_CLOEXEC)
                _ = fcntl(childEnd, F_SETFD, FD_CLOEXEC)
                childEnds.append(childEnd)
                parentEnds.append(parentEnd)
                // dup2 clears close-on-exec on the copy the child keeps.
                posix_spawn_file_actions_adddup2(&actions, childEnd, fd)
                return parentEnd
            }
        }
        let inputEnd = try route(stdin, to: 0, childReads: true)
        let outputEnd = try route(stdout, to: 1, childReads: false)
        _ = try route(stderr, to: 2, childReads: false)

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let env = (environment ?? ProcessInfo.processInfo.environment)
            .map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + env).forEach { free($0) } }
        var child = pid_t()
        let spawned = posix_spawn(&child, executable, &actions, &attributes, argv, env)
        guard spawned == 0 else {
            parentEnds.forEach { _ = close($0) }
            throw Child.error("cannot start \(executable)", spawned)
        }
        pid = child
        input = inputEnd.map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        output = outputEnd.map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
    }

    /// Waits for the child to exit and returns its wait status.
    @discardableResult
    func wait() -> Int32 {
        if let status { return status }
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) == -1 && errno == EINTR {}
        status = raw
        return raw
    }

    /// Whether the child has exited (reaping it if so).
    var exited: Bool {
        if status != nil { return true }
        var raw: Int32 = 0
        guard waitpid(pid, &raw, WNOHANG) == pid else { return false }
        status = raw
        return true
    }

    /// Asks the child to stop with SIGTERM; after `patience` seconds, kills it. Reaps it.
    func stop(patience: TimeInterval = 10) {
        guard !exited else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(patience)
        while !exited && Date() < deadline {
            usleep(10_000)
        }
        if !exited {
            kill(pid, SIGKILL)
            wait()
        }
    }

    /// Whether the wait status says the child exited with status 0.
    var succeeded: Bool {
        let raw = wait()
        return raw & 0x7f == 0 && (raw >> 8) & 0xff == 0
    }

    private static func error(_ what: String, _ code: Int32) -> NSError {
        NSError(domain: "Child", code: Int(code),
                userInfo: [NSLocalizedDescriptionKey: "\(what): \(String(cString: strerror(code)))"])
    }
}
