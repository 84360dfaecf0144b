import Foundation
import SwitchyardEngine
import Glibc

/// A child process started with posix_spawn and polled with waitpid(WNOHANG): the control thread
/// starts and watches helpers (BIRD, birdc) without ever waiting on them.
///
/// The child gets its own process group (a Ctrl-C meant for the engine does not reach it), stdin
/// from /dev/null, stdout and stderr into `output`. With `dieWithParent` it runs under
/// `setpriv --pdeathsig KILL`: the kernel kills it when the engine dies, even by SIGKILL.
final class ChildProcess {
    let pid: pid_t
    let startedAt = Date()
    private(set) var status: ExitStatus?

    struct ExitStatus: CustomStringConvertible {
        var raw: Int32
        var succeeded: Bool { raw & 0x7f == 0 && (raw >> 8) & 0xff == 0 }
        var description: String {
            raw & 0x7f == 0 ? "exited with status \((raw >> 8) & 0xff)" : "was killed by signal \(raw & 0x7f)"
        }
    }

    private init(pid: pid_t) { self.pid = pid }

    static let setpriv = "/usr/bin/setpriv"

    static func spawn(_ path: String, _ arguments: [String], output: String, dieWithParent: Bool) throws -> ChildProcess {
        var argv = [path] + arguments
        var program = path
        if dieWithParent, access(setpriv, X_OK) == 0 {
            argv = [setpriv, "--pdeathsig", "KILL", "--"] + argv
            program = setpriv
        }
        guard access(path, X_OK) == 0 else { throw ControlError("\(path) is not an executable file") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Own process group; default signal dispositions and an empty mask in the child.
        var everything = sigset_t(), nothing = sigset_t()
        sigemptyset(&everything)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&everything, signal) }
        sigemptyset(&nothing)
        posix_spawnattr_setsigdefault(&attributes, &everything)
        posix_spawnattr_setsigmask(&attributes, &nothing)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, program, &actions, &attributes, cArguments, environ)
        guard rc == 0 else { throw ControlError("cannot start \(program): \(String(cString: strerror(rc)))") }
        return ChildProcess(pid: pid)
    }

    /// The exit status once the child has exited (reaped here, once); nil while it runs.
    func reap() -> ExitStatus? {
        if let status { return status }
        var raw: Int32 = 0
        let rc = waitpid(pid, &raw, WNOHANG)
        if rc == pid {
            status = ExitStatus(raw: raw)
        } else if rc < 0 && errno == ECHILD {
            status = ExitStatus(raw: 0xff << 8) // reaped elsewhere: treat as gone
        }
        return status
    }

    func kill(_ signal: Int32) {
        if status == nil { _ = Glibc.kill(pid, signal) }
    }

    /// Polls for the exit up to `timeout` seconds (shutdown only).
    func wait(timeout: Double) -> ExitStatus? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let status = reap() { return status }
            usleep(10_000)
        }
        return reap()
    }
}
