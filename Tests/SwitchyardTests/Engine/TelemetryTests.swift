import Foundation
import SwitchyardEngine
import Testing

/// DPDK telemetry: Debian's `dpdk-telemetry.py` reads Switchyard's commands from a running engine,
/// beside DPDK's own `/ethdev/...` ones.
@Suite("DPDK telemetry", .serialized)
struct TelemetryTests {
    static let script = "/usr/bin/dpdk-telemetry.py"

    /// `off`: --no-huge. `auto`: hugepages when some are reserved (Hugepages/reserve.sh), else --no-huge.
    @Test("dpdk-telemetry.py -f PREFIX reads /switchyard/stages, /connections, /gossip and /ethdev/list",
          .enabled(if: FileManager.default.isExecutableFile(atPath: script), "needs Debian's dpdk package"),
          arguments: ["off", "auto"])
    func telemetryScriptReadsStages(hugepages: String) throws {
        let directory = try TemporaryDirectory()
        let config = try MetricsTests.writeEngineConfiguration(in: directory, metricsPort: nil, hugepages: hugepages)
        let state = EAL.hugepageState()
        let huge = hugepages == "auto" && state.free > 0 && state.mounted
        let engine = try BackgroundProcess(SwitchyardBinary.path, ["run", "--config", config, "--duration", "4"])
        defer { engine.stop() }
        // switchyard: telemetry: /var/run/dpdk/switchyard-PID/dpdk_telemetry.v2 (dpdk-telemetry.py -f switchyard-PID)
        let pid = engine.process.processIdentifier
        let line = "telemetry: /var/run/dpdk/switchyard-\(pid)/dpdk_telemetry.v2 (dpdk-telemetry.py -f switchyard-\(pid))"
        let logged = engine.wait(for: 15) { engine.stderr.contains(line) && engine.stderr.contains("running:") }
        try #require(logged, "engine: \(engine.stderr)")
        #expect(engine.stderr.contains(huge ? "memory: hugepages" : "--no-huge"), "\(engine.stderr)")
        Thread.sleep(forTimeInterval: 0.5)

        // The script is interactive: commands on stdin, one JSON answer per line on stdout.
        let session = try Command.run(Self.script, ["-f", "switchyard-\(pid)"], stdin: """
            /switchyard/stages
            /switchyard/stages,swap
            /switchyard/connections
            /switchyard/gossip
            /ethdev/list

            """, timeout: 20)
        #expect(session.status == 0, "\(session.output)")
        let answers = session.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        try #require(answers.count == 5, "dpdk-telemetry.py said: \(session.output)")
        let stages = try #require(answers[0]["/switchyard/stages"] as? [String: Any], "\(answers[0])")
        let count = try #require((stages["count"] as? [String: Any]), "\(stages)")
        #expect(count["kind"] as? String == "counter")
        let countLcore = try #require(count["lcore_1"] as? [String: Any], "\(count)")
        let received = (countLcore["in"] as? NSNumber)?.uint64Value ?? 0
        #expect(received > 0, "\(countLcore)")
        #expect((countLcore["out"] as? NSNumber)?.uint64Value ?? 0 > 0, "\(countLcore)")
        #expect((countLcore["drop"] as? NSNumber)?.uint64Value == 0, "\(countLcore)")
        #expect(countLcore["size_64"] != nil, "own counters are named with _ for -: \(countLcore)")
        let swap = try #require((stages["swap"] as? [String: Any])?["lcore_1"] as? [String: Any], "\(stages)")
        #expect(swap["truncated"] as? NSNumber == 0, "a drop reason: \(swap)")
        let one = try #require(answers[1]["/switchyard/stages"] as? [String: Any], "\(answers[1])")
        #expect(Array(one.keys) == ["swap"])
        #expect((answers[2]["/switchyard/connections"] as? [String: Any])?["configured"] as? NSNumber == 0, "\(answers[2])")
        #expect((answers[3]["/switchyard/gossip"] as? [String: Any])?["configured"] as? NSNumber == 0, "\(answers[3])")
        #expect(answers[4]["/ethdev/list"] as? [Int] == [0, 1], "\(answers[4])")

        // The counters read over telemetry are the engine's own: its final totals are no smaller.
        #expect(engine.finish(within: 15) == 0, "\(engine.stderr)")
        let table = engine.stdout.split(separator: "\n").first { $0.hasPrefix("stage count ") }
        let total = table?.split(separator: " ").last.flatMap { UInt64($0) } ?? 0
        #expect(total >= received, "printed \(total), telemetry \(received)")
        // The runtime directory goes with the engine.
        #expect(!FileManager.default.fileExists(atPath: "/var/run/dpdk/switchyard-\(pid)"))
    }
}
