import Foundation
import SwitchyardEngine
import SwitchyardClusterPlugin
import SwitchyardStages
import Testing

/// The README's first command: `switchyard run` without arguments runs two hosts of one cluster
/// (two child processes, gossip on loopback) and prints a summary per host. Also: the mac-swap
/// example by name, and `switchyard example`.
@Suite("the main job: switchyard run without arguments", .serialized)
struct MainJobTests {
    /// The summary table's rows: label → one cell per host.
    struct Summary {
        var rows: [String: [String]] = [:]
        /// "host 1: pid 123, ..." lines.
        var pids: [Int32] = []

        init(_ stdout: String) {
            for line in stdout.split(separator: "\n").map(String.init) {
                if line.hasPrefix("  host "), let pid = line.split(separator: " ").dropFirst(3).first.flatMap({ Int32($0.dropLast()) }) {
                    pids.append(pid)
                }
                let cells = line.components(separatedBy: "  ").map { $0.trimmingCharacters(in: .whitespaces) }
                    .filter { !$0.isEmpty }
                if cells.count == 3 { rows[cells[0]] = Array(cells[1...]) }
            }
        }

        /// The leading number of each host's cell.
        func numbers(_ label: String) -> [UInt64] {
            (rows[label] ?? []).map { UInt64($0.split(separator: " ").first ?? "") ?? 0 }
        }
    }

    static func exampleDirectories() -> Set<String> {
        Set(((try? FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())) ?? [])
            .filter { $0.hasPrefix("switchyard-example-") })
    }

    /// Nothing left behind: the hosts' EAL runtime directories and the temporary directory.
    static func expectNothingLeft(_ summary: Summary, before: Set<String>) {
        #expect(summary.pids.count == 2)
        for pid in summary.pids {
            #expect(!FileManager.default.fileExists(atPath: "/var/run/dpdk/switchyard-\(pid)"), "runtime directory of \(pid) left")
        }
        #expect(exampleDirectories().subtracting(before).isEmpty, "temporary directory left")
    }

    @Test func runWithoutArgumentsShowsTwoHostsOfOneCluster() throws {
        let before = Self.exampleDirectories()
        let result = try SwitchyardBinary.run(["run"], timeout: 60)
        #expect(result.status == 0, "\(result.output)")
        let summary = Summary(result.stdout)
        let opened = summary.numbers("flows opened (owned here)")
        #expect(opened.count == 2 && opened.allSatisfy { $0 > 0 }, "\(result.stdout)")
        // Every flow is owned by exactly one host, and each host knows the other's flows by gossip.
        #expect(opened.reduce(0, +) == 256, "\(result.stdout)")
        #expect(summary.numbers("flows the peer owns, known here") == opened.reversed(), "\(result.stdout)")
        #expect(summary.numbers("gossip events sent / applied").allSatisfy { $0 > 0 }, "\(result.stdout)")
        let applied = (summary.rows["gossip events sent / applied"] ?? []).compactMap { UInt64($0.split(separator: " ").last ?? "") }
        #expect(applied.count == 2 && applied.allSatisfy { $0 > 0 }, "\(result.stdout)")
        for label in ["translated to a backend", "  of them from the peer (VXLAN)", "encapsulated to the peer",
                      "replies translated to the VIP", "packets received"]
        {
            let values = summary.numbers(label.trimmingCharacters(in: .whitespaces))
            #expect(values.count == 2 && values.allSatisfy { $0 > 0 }, "\(label): \(result.stdout)")
        }
        // Every packet received is in exactly one row (this traffic has nothing else).
        let received = summary.numbers("packets received")
        let rows = ["translated to a backend", "encapsulated to the peer", "replies translated to the VIP"].map(summary.numbers)
        #expect(received == (0..<2).map { host in rows.reduce(0) { $0 + ($1.count == 2 ? $1[host] : 0) } }, "\(result.stdout)")
        #expect(summary.rows["drops"] == ["none", "none"], "\(result.stdout)")
        #expect((summary.rows["mbufs back in the pool"] ?? []).allSatisfy { $0.hasPrefix("all ") }, "\(result.stdout)")
        #expect(result.stdout.contains("Both hosts stopped cleanly (exit status 0)."))
        Self.expectNothingLeft(summary, before: before)
    }

    @Test func durationZeroRunsUntilCtrlCAndSaysHowToWatch() throws {
        let before = Self.exampleDirectories()
        let result = try SwitchyardBinary.run(["run", "--duration", "0"], interruptAfter: 4, timeout: 60)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("switchyard ctl --socket /run/switchyard/example-host1"), "\(result.stdout)")
        #expect(result.stdout.contains(".sock stats --watch 1"))
        #expect(result.stdout.contains("switchyard ctl --socket /run/switchyard/example-host2"))
        #expect(result.stdout.contains("metrics of host 2: http://127.0.0.1:"))
        #expect(result.stderr.contains("switchyard: signal received: stopping both hosts"))
        let summary = Summary(result.stdout)
        #expect(summary.numbers("flows opened (owned here)").reduce(0, +) == 256, "\(result.stdout)")
        Self.expectNothingLeft(summary, before: before)
    }

    @Test func theMacSwapExampleRunsByName() throws {
        let result = try SwitchyardBinary.run(["run", "--example", "mac-swap", "--duration", "1"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("stage reflect (mac-swap)"), "\(result.stdout)")
        #expect(CounterSnapshot.allMbufsReturned(result.stdout), "\(result.stdout)")
        let printed = try SwitchyardBinary.run(["example", "mac-swap"])
        #expect(printed.stdout.contains("kind: mac-swap"))
    }

    /// The `stages:` section of a configuration without comments, neighbour entries and the router's
    /// address: what is left must be the same in the golden configuration and in the example's.
    static func pipeline(_ text: String) -> [String] {
        let lines = text.split(separator: "\n").map(String.init)
        guard let start = lines.firstIndex(where: { $0.hasPrefix("stages:") }),
              let end = lines.firstIndex(where: { $0.hasPrefix("lcores:") }) else { return [] }
        return lines[start..<end].map { line in
            String(line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0])
                .trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty && !$0.hasPrefix("- { address:") }
    }

    /// Both hosts' configurations are valid and run the golden pipeline: the same stages, parameters
    /// and wiring, only the neighbour entries differ.
    @Test func theExampleHostsRunTheGoldenPipeline() throws {
        let workspace = try TemporaryDirectory()
        try workspace.write("gossip.key", String(repeating: "ab", count: 32))
        let goldenText = try String(contentsOfFile: GoldenCaptureTests.directory + "/config.yaml", encoding: .utf8)
        let golden = try EngineConfiguration.load(path: GoldenCaptureTests.directory + "/config.yaml", stages: builtinStages, plugins: standardPlugins)
        func wiring(_ config: EngineConfiguration) -> [String] {
            config.stages.map { "\($0.name) \($0.descriptor.kind) \($0.next.map(\.description))" }
        }
        for host in [1, 2] {
            let printed = try SwitchyardBinary.run(["example", "single-ip-image", "--host", String(host)])
            #expect(printed.status == 0)
            let file = try workspace.write("host\(host).yaml", printed.stdout
                .replacingOccurrences(of: "key_file: gossip.key", with: "key_file: \(workspace.file("gossip.key"))"))
            let config = try EngineConfiguration.load(path: file, stages: builtinStages, plugins: standardPlugins)
            #expect(config.cluster?.localHostID == host)
            #expect(config.name == "example-host\(host)")
            #expect(wiring(config) == wiring(golden))
            #expect(Self.pipeline(printed.stdout) == Self.pipeline(goldenText))
            #expect(!Self.pipeline(printed.stdout).isEmpty)
        }
    }
}
