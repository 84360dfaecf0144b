import Foundation

/// Runs the real `switchyard` binary (built next to this test bundle) as its own process:
/// DPDK's EAL can start only once per process, so every engine run is a fresh process.
enum SwitchyardBinary {
    static var path: String {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = bundle.deletingLastPathComponent()
        // The test runner may be inside a .xctest bundle directory.
        while !FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("switchyard").path),
              directory.path != "/"
        {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("switchyard").path
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var output: String { stdout + stderr }
    }

    /// Runs `switchyard ARGS`; `interruptAfter` sends SIGINT after that many seconds.
    static func run(_ arguments: [String], interruptAfter: Double? = nil, timeout: Double = 60) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        // Output goes to files, so a chatty process can never block on a full pipe.
        let logs = try TemporaryDirectory()
        _ = FileManager.default.createFile(atPath: logs.file("out"), contents: nil)
        _ = FileManager.default.createFile(atPath: logs.file("err"), contents: nil)
        let out = FileHandle(forWritingAtPath: logs.file("out"))!, err = FileHandle(forWritingAtPath: logs.file("err"))!
        defer {
            try? out.close()
            try? err.close()
        }
        process.standardOutput = out
        process.standardError = err
        try process.run()
        func read(_ name: String) -> String { (try? String(contentsOfFile: logs.file(name), encoding: .utf8)) ?? "" }
        if let interruptAfter {
            Thread.sleep(forTimeInterval: interruptAfter)
            kill(process.processIdentifier, SIGINT)
        }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return Result(status: -1, stdout: read("out"), stderr: "timed out after \(timeout) s\n" + read("err"))
        }
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: read("out"), stderr: read("err"))
    }
}

/// A directory removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "switchyard-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        try text.write(toFile: file(name), atomically: false, encoding: .utf8)
        return file(name)
    }
}

/// The final counters a run wrote with --stats-json.
struct CounterSnapshot {
    struct Block: Decodable {
        var scope: String
        var kind: String
        var lcore: Int
        var counters: [String: UInt64]
        /// For stages: the names of the disposition counters.
        var dispositions: [String]
    }

    var blocks: [Block]

    init(path: String) throws {
        blocks = try JSONDecoder().decode([Block].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Sum over lcores.
    func total(_ scope: String, _ counter: String) -> UInt64 {
        blocks.filter { $0.scope == scope }.reduce(0) { $0 + ($1.counters[counter] ?? 0) }
    }

    func lcores(of scope: String) -> Set<Int> { Set(blocks.filter { $0.scope == scope }.map(\.lcore)) }

    /// True when the run's output says every mempool got all its mbufs back.
    static func allMbufsReturned(_ stdout: String) -> Bool {
        let lines = stdout.split(separator: "\n").filter { $0.hasPrefix("mempool ") }
        return !lines.isEmpty && lines.allSatisfy { line in
            let words = line.split(separator: " ")
            return words.count > 4 && words[2] == words[4] && words[3] == "of"
        }
    }

    /// Every packet received must end somewhere: sent, refused by a full NIC or ring, dropped by
    /// a stage, or flushed at shutdown. Packets on rings are counted once in, once out.
    func conservationError() -> String? {
        let received = blocks.filter { $0.kind == "rx" }.reduce(0) { $0 + ($1.counters["packets"] ?? 0) }
        let sent = blocks.filter { $0.kind == "tx" }.reduce(0) { $0 + $1.counters["sent"]! + $1.counters["tx-full"]! }
        let ringRefused = blocks.filter { $0.kind == "ring-out" }.reduce(0) { $0 + $1.counters["ring-full"]! }
        let ringIn = blocks.filter { $0.kind == "ring-out" }.reduce(0) { $0 + $1.counters["enqueued"]! }
        let ringOut = blocks.filter { $0.kind == "ring-in" }.reduce(0) { $0 + $1.counters["packets"]! }
        let flushed = total("engine", "shutdown-flushed")
        let stageDrops = blocks.filter { $0.scope.hasPrefix("stage ") }.reduce(0) { $0 + ($1.counters["drop"] ?? 0) }
        for block in blocks where !block.dispositions.isEmpty {
            let given = block.dispositions.reduce(0) { $0 + block.counters[$1]! }
            if block.counters["in"]! != given {
                return "\(block.scope) on lcore \(block.lcore): \(block.counters["in"]!) in but \(given) given a disposition"
            }
        }
        if ringIn != ringOut + flushed {
            return "rings: \(ringIn) enqueued but \(ringOut) dequeued and \(flushed) flushed"
        }
        let accounted = sent + ringRefused + stageDrops + flushed
        if received != accounted {
            return "\(received) received but \(accounted) accounted for (sent+tx-full \(sent), ring-full \(ringRefused), stage drops \(stageDrops), flushed \(flushed))"
        }
        return nil
    }
}
