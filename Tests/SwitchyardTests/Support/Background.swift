import Foundation
import CDPDK // sys/socket.h's SOCK_STREAM: the module that owns the header varies between builds

/// A process that runs while the test does (an engine, a Prometheus server), its output in files.
/// `stop()` sends SIGINT (then SIGKILL after `grace` seconds) and waits; deinit stops it too.
final class BackgroundProcess {
    let process = Process()
    private let logs: TemporaryDirectory

    init(_ executable: String, _ arguments: [String], stdin: String? = nil) throws {
        logs = try TemporaryDirectory()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: logs.file("out"), contents: nil)
        _ = FileManager.default.createFile(atPath: logs.file("err"), contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: logs.file("out"))!
        process.standardError = FileHandle(forWritingAtPath: logs.file("err"))!
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var stdout: String { (try? String(contentsOfFile: logs.file("out"), encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: logs.file("err"), encoding: .utf8)) ?? "" }

    /// Waits until `condition` holds (checked every 0.1 s) or the process exits or `timeout` passes.
    @discardableResult
    func wait(for timeout: Double, until condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            if !process.isRunning { return condition() }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return condition()
    }

    /// Waits for the process to end by itself, up to `timeout`, then stops it.
    @discardableResult
    func finish(within timeout: Double) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        return stop()
    }

    @discardableResult
    func stop(grace: Double = 10) -> Int32 {
        if process.isRunning {
            kill(process.processIdentifier, SIGINT)
            let deadline = Date().addingTimeInterval(grace)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { stop() }
}

enum Loopback {
    /// A TCP port free on 127.0.0.1 right now.
    static func freeTCPPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw TestbedError("cannot find a free TCP port") }
        return Int(UInt16(bigEndian: sin.sin_port))
    }

    /// A socket listening on a free 127.0.0.1 port (close it with `close(fd)`).
    static func listener() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else {
            close(fd)
            throw TestbedError("cannot listen on a free TCP port")
        }
        return (fd, Int(UInt16(bigEndian: sin.sin_port)))
    }

    /// An HTTP request through curl: the status (0 when nothing answered) and the body.
    static func http(_ url: String, method: String = "GET") throws -> (status: Int, body: String) {
        let directory = try TemporaryDirectory()
        let run = try Command.run("/usr/bin/curl", ["-sS", "--max-time", "10", "-X", method, "-o", directory.file("body"),
                                                    "-w", "%{http_code}", url])
        let body = (try? String(contentsOfFile: directory.file("body"), encoding: .utf8)) ?? ""
        return (Int(run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, body)
    }
}

/// Runs a command to completion, stdin from a string, output captured.
enum Command {
    static func run(_ executable: String, _ arguments: [String], stdin: String? = nil,
                    timeout: Double = 60) throws -> SwitchyardBinary.Result
    {
        let logs = try TemporaryDirectory()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: logs.file("out"), contents: nil)
        _ = FileManager.default.createFile(atPath: logs.file("err"), contents: nil)
        _ = FileManager.default.createFile(atPath: logs.file("in"), contents: Data((stdin ?? "").utf8))
        process.standardOutput = FileHandle(forWritingAtPath: logs.file("out"))!
        process.standardError = FileHandle(forWritingAtPath: logs.file("err"))!
        process.standardInput = FileHandle(forReadingAtPath: logs.file("in"))!
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        func read(_ name: String) -> String { (try? String(contentsOfFile: logs.file(name), encoding: .utf8)) ?? "" }
        return SwitchyardBinary.Result(status: process.terminationStatus, stdout: read("out"), stderr: read("err"))
    }
}
