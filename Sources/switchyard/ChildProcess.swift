import Foundation

/// A child process started with posix_spawn: output to files, in its own process group, so a
/// Ctrl-C in the terminal reaches only the parent, which then signals each child exactly once.
/// (`switchyard run` takes a second SIGINT/SIGTERM as "exit at once", without its cleanup.)
final class ChildProcess {
    let pid: pid_t
    /// The exit status once reaped: the code, or 128 + the signal that ended it.
    private(set) var status: Int32?
    private(set) var signalsSent = 0

    init(arguments: [String], stdout: String, stderr: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t(), none = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGTERM)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, environ)
        guard rc == 0 else {
            throw ValidationErrorMessage("cannot start \(arguments[0]): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
    }

    var isRunning: Bool { status == nil }

    /// Reaps the child if it has exited; returns true when it has.
    @discardableResult
    func poll() -> Bool {
        guard status == nil else { return true }
        var raw: Int32 = 0
        guard waitpid(pid, &raw, WNOHANG) == pid else { return false }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros Swift does not import.
        status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        return true
    }

    /// Sends `signal` if the child still runs (counting SIGINT/SIGTERM).
    func send(_ signal: Int32) {
        guard !poll() else { return }
        if signal != SIGKILL { signalsSent += 1 }
        kill(pid, signal)
    }

    /// Waits until the child exits, killing it after `timeout` seconds.
    func wait(timeout: Double) {
        let deadline = Date().addingTimeInterval(timeout)
        while !poll() {
            if Date() >= deadline { kill(pid, SIGKILL) }
            usleep(20_000)
        }
    }
}

/// An error that prints as its message.
struct ValidationErrorMessage: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
