import Foundation

/// Runs an external program (looked up on PATH) to completion, output captured through files so
/// a chatty program can never block on a full pipe.
enum ExternalCommand {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    struct Failure: Error, CustomStringConvertible {
        var command: [String]
        var result: Result
        var description: String {
            "`\(command.joined(separator: " "))` exited with \(result.status): \(result.stderr)\(result.stdout)"
        }
    }

    /// Runs `command` (program and arguments); a run longer than `timeout` seconds is killed and
    /// reported as status -1.
    static func run(_ command: [String], timeout: Double = 30) throws -> Result {
        let running = try BackgroundCommand(command)
        return running.wait(timeout: timeout)
    }

    /// Runs `command` and throws `Failure` unless it exits with status 0.
    @discardableResult
    static func check(_ command: [String], timeout: Double = 30) throws -> Result {
        let result = try run(command, timeout: timeout)
        guard result.status == 0 else { throw Failure(command: command, result: result) }
        return result
    }
}

/// An external program running in the background; killed when dropped if still running.
final class BackgroundCommand {
    let command: [String]
    private let process = Process()
    private let logs: TemporaryDirectory
    private let out: FileHandle
    private let err: FileHandle

    init(_ command: [String]) throws {
        self.command = command
        logs = try TemporaryDirectory()
        _ = FileManager.default.createFile(atPath: logs.file("out"), contents: nil)
        _ = FileManager.default.createFile(atPath: logs.file("err"), contents: nil)
        out = FileHandle(forWritingAtPath: logs.file("out"))!
        err = FileHandle(forWritingAtPath: logs.file("err"))!
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = command
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        try process.run()
    }

    deinit {
        terminate()
        try? out.close()
        try? err.close()
    }

    var isRunning: Bool { process.isRunning }

    /// What the program has written to standard output so far.
    var stdoutSoFar: String { (try? String(contentsOfFile: logs.file("out"), encoding: .utf8)) ?? "" }

    /// Waits for the program to exit (killing it after `timeout` seconds) and returns its output.
    func wait(timeout: Double) -> ExternalCommand.Result {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        let timedOut = process.isRunning
        terminate()
        let stderr = (try? String(contentsOfFile: logs.file("err"), encoding: .utf8)) ?? ""
        return ExternalCommand.Result(status: timedOut ? -1 : process.terminationStatus, stdout: stdoutSoFar,
                                      stderr: (timedOut ? "timed out after \(timeout) s\n" : "") + stderr)
    }

    /// Kills the program if it is still running and reaps it.
    func terminate() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        if process.processIdentifier != 0 { process.waitUntilExit() }
    }
}

/// Network namespaces, veth pairs and VXLAN devices built with iproute2 for one test, every one
/// of them removed by `tearDown()` (also called from deinit). Namespace names are unique per
/// process and topology: `sy-<pid>-<n>-<name>`; within a topology, namespaces are named by the
/// short `name` given to `addNamespace`. `nil` as a namespace means the root namespace.
///
///     let net = try NetworkTopology()
///     defer { net.tearDown() }
///     try net.addNamespace("a"); try net.addNamespace("b")
///     try net.addVethPair("veth0", in: "a", "veth0", in: "b")
final class NetworkTopology {
    /// Why namespace tests cannot run here (nil when they can): they need root and `ip netns`.
    static let unavailableReason: String? = {
        guard getuid() == 0 else { return "network namespace tests need root" }
        guard let result = try? ExternalCommand.run(["ip", "netns", "list"]), result.status == 0 else {
            return "network namespace tests need `ip netns` (iproute2)"
        }
        return nil
    }()

    private static let counter = Counter()
    private let prefix: String
    private var namespaces: [String] = []
    private var rootLinks: [String] = []
    private var backgroundCommands: [BackgroundCommand] = []

    init() throws {
        if let reason = Self.unavailableReason { throw SetupError(message: reason) }
        prefix = "sy-\(getpid())-\(Self.counter.next())-"
    }

    deinit { tearDown() }

    struct SetupError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// The full name of namespace `name` of this topology.
    func namespaceName(_ name: String) -> String { prefix + name }

    /// Creates namespace `name` with its loopback up; returns its full name.
    @discardableResult
    func addNamespace(_ name: String) throws -> String {
        let full = namespaceName(name)
        _ = try? ExternalCommand.run(["ip", "netns", "del", full]) // a stale one from a crashed run
        try ExternalCommand.check(["ip", "netns", "add", full])
        namespaces.append(full)
        try ExternalCommand.check(["ip", "-n", full, "link", "set", "lo", "up"])
        return full
    }

    /// A veth pair: `nameA` in namespace `a`, `nameB` in namespace `b`, both up. An end in the
    /// root namespace (nil) gets a unique name instead (`sy<pid>x<n>`), so tests never collide
    /// there; the names actually used are returned.
    @discardableResult
    func addVethPair(_ nameA: String, in a: String?, _ nameB: String, in b: String?) throws -> (String, String) {
        let actualA = a == nil ? uniqueRootInterfaceName() : nameA
        let actualB = b == nil ? uniqueRootInterfaceName() : nameB
        var command = ["ip", "link", "add", actualA]
        if let a { command += ["netns", namespaceName(a)] }
        command += ["type", "veth", "peer", "name", actualB]
        if let b { command += ["netns", namespaceName(b)] }
        try ExternalCommand.check(command)
        if a == nil { rootLinks.append(actualA) } else if b == nil { rootLinks.append(actualB) }
        try setUp(actualA, in: a)
        try setUp(actualB, in: b)
        return (actualA, actualB)
    }

    /// Adds `cidr` (e.g. "198.18.0.1/24" or "fd00::1/64"; IPv6 without duplicate address detection).
    func addAddress(_ cidr: String, to interface: String, in namespace: String?) throws {
        var command = ip(namespace) + ["address", "add", cidr, "dev", interface]
        if cidr.contains(":") { command.append("nodad") }
        try ExternalCommand.check(command)
    }

    /// Brings `interface` up.
    func setUp(_ interface: String, in namespace: String?) throws {
        try ExternalCommand.check(ip(namespace) + ["link", "set", interface, "up"])
    }

    /// A kernel VXLAN device `name` in `namespace`: VNI `vni`, bound to `local`, UDP `port`, no
    /// learning; `address` (CIDR) on it when given; brought up.
    func addVXLAN(_ name: String = "vx0", vni: UInt32, local: String, port: UInt16 = 4789, address: String? = nil,
                  in namespace: String) throws
    {
        try ExternalCommand.check(ip(namespace) + ["link", "add", name, "type", "vxlan", "id", String(vni),
                                                   "local", local, "dstport", String(port), "nolearning"])
        if let address { try addAddress(address, to: name, in: namespace) }
        try setUp(name, in: namespace)
    }

    /// The MAC address of `interface`.
    func macAddress(of interface: String, in namespace: String?) throws -> [UInt8] {
        let result = try ExternalCommand.check(ip(namespace) + ["-o", "link", "show", "dev", interface])
        let words = result.stdout.split(separator: " ")
        guard let index = words.firstIndex(of: "link/ether"), index + 1 < words.count else {
            throw SetupError(message: "no MAC address for \(interface): \(result.stdout)")
        }
        return words[index + 1].split(separator: ":").map { UInt8($0, radix: 16)! }
    }

    /// Runs `command` inside `namespace` (`ip netns exec`) and returns its output; throws unless it exits 0.
    @discardableResult
    func run(in namespace: String?, _ command: [String], timeout: Double = 30) throws -> ExternalCommand.Result {
        try ExternalCommand.check(exec(namespace) + command, timeout: timeout)
    }

    /// Starts `command` inside `namespace` in the background; it is killed by `tearDown()` at the latest.
    func start(in namespace: String?, _ command: [String]) throws -> BackgroundCommand {
        let running = try BackgroundCommand(exec(namespace) + command)
        backgroundCommands.append(running)
        return running
    }

    /// Listens on UDP `address`:`port` inside `namespace` and collects up to `count` datagrams,
    /// giving up `timeout` seconds after the first call. Returns once the socket is bound.
    func startUDPReceiver(in namespace: String?, address: String, port: UInt16, count: Int = 1,
                          timeout: Double = 10) throws -> UDPReceiver
    {
        let script = """
            import socket, sys, time
            address, port, count, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
            s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((address, port))
            print("ready", flush=True)
            deadline = time.monotonic() + timeout
            for _ in range(count):
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    data = s.recv(65535)
                except socket.timeout:
                    break
                print(data.hex(), flush=True)
            """
        let receiver = try start(in: namespace, [Self.python, "-c", script, address, String(port), String(count),
                                                 String(timeout)])
        let deadline = Date().addingTimeInterval(10)
        while !receiver.stdoutSoFar.hasPrefix("ready") {
            guard receiver.isRunning, Date() < deadline else {
                let result = receiver.wait(timeout: 0)
                throw SetupError(message: "UDP receiver on \(address):\(port) did not start: \(result.stderr)")
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return UDPReceiver(process: receiver, timeout: timeout)
    }

    /// Sends `frames` as they are out of `interface` inside `namespace`, through a raw AF_PACKET socket.
    func inject(_ frames: [[UInt8]], in namespace: String?, interface: String) throws {
        let script = """
            import socket, sys
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind((sys.argv[1], 0))
            for frame in sys.argv[2:]:
                s.send(bytes.fromhex(frame))
            """
        let hex = frames.map { $0.map { String(format: "%02x", $0) }.joined() }
        try run(in: namespace, [Self.python, "-c", script, interface] + hex)
    }

    /// Removes every namespace and root-namespace link this topology created and kills its
    /// background commands. Safe to call more than once.
    func tearDown() {
        for command in backgroundCommands { command.terminate() }
        backgroundCommands = []
        for link in rootLinks { _ = try? ExternalCommand.run(["ip", "link", "del", link]) }
        rootLinks = []
        for namespace in namespaces.reversed() { _ = try? ExternalCommand.run(["ip", "netns", "del", namespace]) }
        namespaces = []
    }

    /// Every network namespace that exists now (`ip netns list`), to check that tests left none behind.
    static func existingNamespaces() throws -> [String] {
        let result = try ExternalCommand.check(["ip", "netns", "list"])
        return result.stdout.split(separator: "\n").map { String($0.split(separator: " ")[0]) }
    }

    /// Whether `interface` exists in the root namespace.
    static func rootInterfaceExists(_ interface: String) -> Bool {
        (try? ExternalCommand.run(["ip", "link", "show", "dev", interface]))?.status == 0
    }

    private func ip(_ namespace: String?) -> [String] {
        namespace.map { ["ip", "-n", namespaceName($0)] } ?? ["ip"]
    }

    private func exec(_ namespace: String?) -> [String] {
        namespace.map { ["ip", "netns", "exec", namespaceName($0)] } ?? []
    }

    private func uniqueRootInterfaceName() -> String { "sy\(getpid())x\(Self.counter.next())" }

    /// Debian's python3 (a dependency of dpdk-dev), else whatever python3 is on PATH.
    static let python = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3"

    /// A process-wide counter for unique names.
    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func next() -> Int {
            lock.lock()
            defer { lock.unlock() }
            value += 1
            return value
        }
    }
}

/// A UDP listener started by `NetworkTopology.startUDPReceiver`.
final class UDPReceiver {
    private let process: BackgroundCommand
    private let timeout: Double

    init(process: BackgroundCommand, timeout: Double) {
        self.process = process
        self.timeout = timeout
    }

    /// The payloads received: waits until `count` datagrams arrived or the receiver's timeout ran out.
    func datagrams() throws -> [[UInt8]] {
        let result = process.wait(timeout: timeout + 5)
        guard result.status == 0 else {
            throw ExternalCommand.Failure(command: process.command, result: result)
        }
        return result.stdout.split(separator: "\n").dropFirst().map { line in
            stride(from: 0, to: line.count, by: 2).map { offset in
                let start = line.index(line.startIndex, offsetBy: offset)
                return UInt8(line[start..<line.index(start, offsetBy: 2)], radix: 16)!
            }
        }
    }

    /// The payloads received, as UTF-8 text.
    func texts() throws -> [String] {
        try datagrams().map { String(decoding: $0, as: UTF8.self) }
    }
}
