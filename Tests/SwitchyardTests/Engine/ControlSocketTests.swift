import Foundation
import SwitchyardEngine
import SwitchyardPcap
import Testing

/// The control socket of a real engine (`switchyard run` on virtual devices, its own process):
/// every `ctl` command answers; garbage, oversized, silent and half-closed clients get an error or
/// are dropped and change nothing; counters read while the lcore runs at full rate add up at the end.
@Suite("control socket", .serialized)
struct ControlSocketTests {
    /// A capture replayed forever into two stages and a null device: the lcore runs at full rate.
    static func fullRate(capture: String, socket: String) -> String {
        """
        name: control-test
        control: { socket: \(socket) }
        eal: { memory_mb: 256 }
        ports:
          - name: wire
            device: net_pcap0,rx_pcap=\(capture),infinite_rx=1
            tx_queues: 0
          - name: sink
            device: net_null0
            rx_queues: 0
        stages:
          - name: count
            kind: counter
            next: { out: swap }
          - name: swap
            kind: mac-swap
            next: { out: port:sink }
        lcores:
          - id: 1
            cpu: 1
            idle: busy
            poll:
              - { port: wire, queue: 0, to: count }

        """
    }

    @Test func everyCommandAnswersAndHostileClientsChangeNothing() throws {
        let workspace = try TemporaryDirectory()
        let capture = workspace.file("in.pcap")
        try Pcap.write(PacketBuilder().flowMix(count: 256, flows: 64), to: capture)
        let socket = workspace.file("ctl.sock")
        let config = try workspace.write("engine.yaml", Self.fullRate(capture: capture, socket: socket))
        let engine = try BackgroundEngine(["run", "--config", config, "--duration", "8",
                                           "--stats-json", workspace.file("counters.json")], in: workspace)
        try engine.waitForSocket(socket)

        // status names the engine, its configuration (with its hash), lcores and ports with link.
        let status = try #require(try ControlClient.request(socket: socket, command: "status") as? [String: Any])
        #expect(status["name"] as? String == "control-test")
        let configInfo = try #require(status["config"] as? [String: Any])
        #expect(configInfo["file"] as? String == config)
        #expect((configInfo["sha256"] as? String)?.count == 64)
        let ports = try #require(status["ports"] as? [[String: Any]])
        #expect(ports.map { $0["name"] as? String } == ["wire", "sink"])
        #expect(ports.allSatisfy { ($0["link"] as? [String: Any])?["up"] as? Bool == true })
        #expect((status["lcores"] as? [[String: Any]])?.first?["stages"] as? [String] == ["count", "swap"])

        // Hostile clients, between well-formed requests.
        let before = try Self.received(socket)
        #expect(try Self.raw(socket, Array("not json at all\n".utf8)).contains("malformed request"))
        #expect(try Self.raw(socket, Array("[1, 2, 3]\n".utf8)).contains("malformed request"))
        #expect(try Self.raw(socket, Array("{\"command\": \"reboot\"}\n".utf8)).contains("unknown command 'reboot'"))
        #expect(try Self.raw(socket, Array("{\"command\": \"stats\", \"args\": 7}\n".utf8)).contains("must be an object"))
        #expect(try Self.raw(socket, [UInt8](repeating: 0x41, count: 70_000)).contains("request too long"))
        #expect(try Self.raw(socket, [0xff, 0xfe, 0x00, 0x01, 0x0a]).contains("malformed request"))
        // Half-closed: the request without its newline, then shutdown(SHUT_WR): still answered.
        #expect(try Self.raw(socket, Array("{\"command\": \"help\"}".utf8)).contains("\"ok\":true"))
        // Connects and says nothing; connects and leaves mid-answer; both while others are served.
        let silent = try Self.connect(socket)
        let leaving = try Self.connect(socket)
        _ = "{\"command\": \"stats\"}\n".withCString { send(leaving, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        close(leaving)
        // No cluster here: an error reply that says so.
        #expect(throws: ControlClientError.self) { try ControlClient.request(socket: socket, command: "connections") }
        let after = try Self.received(socket)
        #expect(after > before, "the lcore kept counting while clients misbehaved (\(before) -> \(after))")
        close(silent)

        // Totals read while the lcore runs: stage in = its dispositions' sum within a burst's worth.
        // Rates need two snapshots a second apart.
        var stats: [String: Any] = [:]
        for _ in 0..<50 {
            stats = try #require(try ControlClient.request(socket: socket, command: "stats") as? [String: Any])
            if (stats["rate_interval_s"] as? Double ?? 0) > 0 { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        let blocks = try #require(stats["blocks"] as? [[String: Any]])
        let count = try #require(blocks.first { $0["scope"] as? String == "stage count" }?["counters"] as? [String: Any])
        let input = (count["in"] as? NSNumber)?.uint64Value ?? 0, out = (count["out"] as? NSNumber)?.uint64Value ?? 0
        #expect(input >= out && input - out <= 64, "in \(input), out \(out)")
        let lcore = try #require((stats["lcores"] as? [[String: Any]])?.first)
        #expect((lcore["busy_share"] as? Double ?? 0) > 0.5)
        #expect((lcore["cycles_per_packet"] as? Double ?? 0) > 0)
        let nic = try #require(try ControlClient.request(socket: socket, command: "ports") as? [[String: Any]])
        #expect(((nic.first?["stats"] as? [String: Any])?["ipackets"] as? NSNumber)?.uint64Value ?? 0 > 0)

        let result = try engine.wait(timeout: 30)
        #expect(result.status == 0, "engine failed:\n\(result.output)")
        #expect(CounterSnapshot.allMbufsReturned(result.stdout), "\(result.stdout)")
        #expect(!FileManager.default.fileExists(atPath: socket), "the socket file is removed at exit")

        // At the end everything adds up, the NIC's own counters included.
        let final = try CounterSnapshot(path: workspace.file("counters.json"))
        if let error = final.conservationError() { Issue.record("counters do not add up: \(error)") }
        #expect(final.total("port wire", "ipackets") == final.total("rx wire/0", "packets"))
        #expect(final.total("port sink", "opackets") == final.total("tx sink", "sent"))
        #expect(final.blocks.filter { $0.scope == "tx sink" }.count == 1, "one block per tx port and lcore")
    }

    @Test func reloadAppliesWhatCanChangeLiveAndRefusesTheRest() throws {
        let workspace = try TemporaryDirectory()
        let capture = workspace.file("in.pcap")
        try Pcap.write(PacketBuilder().flowMix(count: 256, flows: 64), to: capture)
        let socket = workspace.file("ctl.sock")
        let original = Self.fullRate(capture: capture, socket: socket)
        let config = try workspace.write("engine.yaml", original)
        let engine = try BackgroundEngine(["run", "--config", config, "--duration", "10",
                                           "--stats-json", workspace.file("counters.json")], in: workspace)
        try engine.waitForSocket(socket)

        // An invalid file changes nothing; the reply has every error with file, line and key.
        let invalid = try workspace.write("invalid.yaml", original.replacingOccurrences(of: "kind: mac-swap", with: "kind: mac-swap\n    colour: blue"))
        let refusal = try SwitchyardBinary.run(["ctl", "--socket", socket, "reload", invalid])
        #expect(refusal.status == 1)
        #expect(refusal.stderr.contains("invalid configuration, nothing changed") && refusal.stderr.contains("invalid.yaml:17:5: stage 'swap': key 'colour'")
                && refusal.stderr.contains("colour"), "\(refusal.stderr)")
        // A change of something fixed at start is refused, naming the key.
        let moved = try workspace.write("moved.yaml", original.replacingOccurrences(of: "device: net_null0", with: "device: net_null1"))
        let fixed = try SwitchyardBinary.run(["ctl", "--socket", socket, "reload", moved])
        #expect(fixed.status == 1 && fixed.stderr.contains("ports 'sink'") && fixed.stderr.contains("cannot change while the engine runs"),
                "\(fixed.stderr)")
        // Stages and wiring change live: the new graph runs.
        let rewired = original.replacingOccurrences(of: "next: { out: port:sink }", with: "next: { out: discard }\n  - name: discard\n    kind: drop")
        let applied = try SwitchyardBinary.run(["ctl", "--socket", socket, "reload", try workspace.write("rewired.yaml", rewired)])
        #expect(applied.status == 0 && applied.stdout.contains("stages or their wiring changed"), "\(applied.output)")
        Thread.sleep(forTimeInterval: 0.5)
        // SIGHUP re-reads the running file (now rewired.yaml): nothing changes, and it says so in the log.
        kill(engine.process.processIdentifier, SIGHUP)
        Thread.sleep(forTimeInterval: 0.5)
        let result = try engine.wait(timeout: 30)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("reloaded: 1 [count swap discard]"), "\(result.stderr)")
        #expect(result.stderr.components(separatedBy: "reloaded:").count == 3, "ctl reload and SIGHUP each reloaded once")
        let final = try CounterSnapshot(path: workspace.file("counters.json"))
        #expect(final.total("stage discard", "dropped") > 1000, "the new graph ran")
        #expect(final.total("tx sink", "sent") > 1000, "the first graph ran")
        if let error = final.conservationError() { Issue.record("counters do not add up: \(error)") }
        #expect(CounterSnapshot.allMbufsReturned(result.stdout))
    }

    @Test func ctlAgainstNoEngineSaysSoInOneLine() throws {
        let workspace = try TemporaryDirectory()
        let result = try SwitchyardBinary.run(["ctl", "--socket", workspace.file("none.sock"), "status"])
        #expect(result.status == 1)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains(workspace.file("none.sock")) && lines[0].contains("no engine"),
                "\(result.stderr)")
    }

    @Test func connectionsListsTheTableOfAClusterEngine() throws {
        let workspace = try TemporaryDirectory()
        let directory = GoldenCaptureTests.directory
        let template = try String(contentsOfFile: directory + "/config.yaml", encoding: .utf8)
        let socket = workspace.file("golden.sock")
        let config = try workspace.write("golden.yaml", "control: { socket: \(socket) }\n" + template
            .replacingOccurrences(of: "GOLDEN_DIR", with: directory).replacingOccurrences(of: "OUT_DIR", with: workspace.path))
        let engine = try BackgroundEngine(["run", "--config", config, "--duration", "6"], in: workspace)
        try engine.waitForSocket(socket)
        Thread.sleep(forTimeInterval: 1) // the finite captures are replayed by then
        let table = try #require(try ControlClient.request(socket: socket, command: "connections") as? [String: Any])
        let rows = try #require(table["connections"] as? [[String: Any]])
        #expect(!rows.isEmpty)
        #expect((table["matched"] as? Int) == rows.count)
        for row in rows {
            for key in ["client", "vip", "protocol", "service", "owner", "backend", "state", "idle_s"] {
                #expect(row[key] != nil, "\(key) missing in \(row)")
            }
        }
        let web = try #require(try ControlClient.request(socket: socket, command: "connections",
                                                        args: ["service": "web"]) as? [String: Any])
        #expect((web["connections"] as? [[String: Any]] ?? []).allSatisfy { $0["service"] as? String == "web" })
        let limited = try #require(try ControlClient.request(socket: socket, command: "connections",
                                                            args: ["limit": 1]) as? [String: Any])
        #expect((limited["connections"] as? [[String: Any]])?.count == 1)
        #expect(throws: ControlClientError.self) {
            try ControlClient.request(socket: socket, command: "connections", args: ["service": "nope"])
        }
        #expect(throws: ControlClientError.self) {
            try ControlClient.request(socket: socket, command: "connections", args: ["limit": -3])
        }
        // The command-line client prints the same table.
        let printed = try SwitchyardBinary.run(["ctl", "--socket", socket, "connections", "--service", "web"])
        #expect(printed.status == 0 && printed.stdout.contains("shown of"), "\(printed.output)")
        let result = try engine.wait(timeout: 30)
        #expect(result.status == 0, "\(result.output)")
    }

    // MARK: - Helpers

    /// Packets the engine has received so far.
    static func received(_ socket: String) throws -> UInt64 {
        let stats = try #require(try ControlClient.request(socket: socket, command: "stats") as? [String: Any])
        let blocks = stats["blocks"] as? [[String: Any]] ?? []
        return blocks.filter { $0["kind"] as? String == "rx" }
            .reduce(0) { $0 + ((($1["counters"] as? [String: Any])?["packets"] as? NSNumber)?.uint64Value ?? 0) }
    }

    static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else { throw ControlClientError("connect failed") }
        return fd
    }

    /// Sends `bytes`, closes the sending side, returns whatever the server answered.
    static func raw(_ path: String, _ bytes: [UInt8]) throws -> String {
        let fd = try connect(path)
        defer { close(fd) }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break } // the server answered (too long) and closed: read what it said
            sent += n
        }
        shutdown(fd, Int32(SHUT_WR))
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            reply += buffer[..<n]
        }
        return String(decoding: reply, as: UTF8.self)
    }
}

/// `switchyard ARGS` in the background, for tests that talk to it while it runs.
final class BackgroundEngine {
    let process = Process()
    let logs: TemporaryDirectory

    init(_ arguments: [String], in workspace: TemporaryDirectory) throws {
        logs = try TemporaryDirectory()
        process.executableURL = URL(fileURLWithPath: SwitchyardBinary.path)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: logs.file("out"), contents: nil)
        _ = FileManager.default.createFile(atPath: logs.file("err"), contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: logs.file("out"))!
        process.standardError = FileHandle(forWritingAtPath: logs.file("err"))!
        try process.run()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    var output: String {
        ((try? String(contentsOfFile: logs.file("out"), encoding: .utf8)) ?? "")
            + ((try? String(contentsOfFile: logs.file("err"), encoding: .utf8)) ?? "")
    }

    /// Waits until the engine answers on `socket` (it opens it once its ports are up).
    func waitForSocket(_ socket: String, timeout: Double = 30) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if ControlClient.isAnswering(socket: socket) { return }
            guard process.isRunning else { throw ControlClientError("the engine exited:\n\(output)") }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw ControlClientError("no control socket at \(socket) after \(timeout) s:\n\(output)")
    }

    /// Waits for the engine to exit (SIGINT first if it outlives `timeout`).
    func wait(timeout: Double) throws -> SwitchyardBinary.Result {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGINT)
            Thread.sleep(forTimeInterval: 5)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        let out = (try? String(contentsOfFile: logs.file("out"), encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: logs.file("err"), encoding: .utf8)) ?? ""
        return SwitchyardBinary.Result(status: process.terminationStatus, stdout: out, stderr: err)
    }
}
