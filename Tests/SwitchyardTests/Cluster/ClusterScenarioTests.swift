import Foundation
import Testing

extension NamespaceClusters {
    /// The end-to-end cluster test: `Tests/Cluster/run.sh` builds a client, a Linux ECMP router, four
    /// Switchyard hosts (`switchyard run` on net_af_packet veths) and their servers in network
    /// namespaces, runs the four scenarios (ECMP changes, spread by weight, a host killed and
    /// restarted, a drain by hot reload) with real curl clients, checks every body byte for byte, and
    /// removes everything it created. Tests/Cluster/README.md describes the topology and what each
    /// scenario asserts. Here it runs with the `switchyard` built next to this test bundle, and its
    /// last line must say that every connection completed.
    @Suite("cluster scenarios in network namespaces", .serialized)
    struct ClusterScenarioTests {
        static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Cluster/run.sh").standardized.path

        /// `connections=N completed=N broken=N` → (N, N, N).
        static func parseVerdict(_ line: Substring) -> (connections: Int, completed: Int, broken: Int)? {
            var values: [String: Int] = [:]
            for field in line.split(separator: " ") {
                let parts = field.split(separator: "=")
                guard parts.count == 2, let value = Int(parts[1]) else { return nil }
                values[String(parts[0])] = value
            }
            guard values.count == 3, let connections = values["connections"], let completed = values["completed"],
                  let broken = values["broken"]
            else { return nil }
            return (connections, completed, broken)
        }

        static func clusterNamespaces() throws -> Set<String> {
            Set(try NetworkTopology.existingNamespaces().filter { $0.hasPrefix("syc") })
        }

        @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"),
              .timeLimit(.minutes(20)))
        func everyConnectionCompletesIntactThroughEveryScenario() throws {
            let namespacesBefore = try Self.clusterNamespaces()
            // `timeout` sends SIGTERM first, so the script still removes what it built.
            // `--gossip on`: scenario 4 (the drain) needs the ownership gossip, and the engine runs it.
            let result = try ExternalCommand.run(["timeout", "--signal=TERM", "--kill-after=30", "900", Self.script,
                                                  "--binary", SwitchyardBinary.path, "--gossip", "on"], timeout: 960)
            let output = result.stdout + result.stderr
            let lines = result.stdout.split(separator: "\n")
            let verdict = lines.last.flatMap(Self.parseVerdict)
            try #require(verdict != nil, "run.sh did not end with `connections=N completed=N broken=N` (status \(result.status)):\n\(output)")
            let (connections, completed, broken) = verdict!
            // 7 spread checks of 2000 new connections and 3 long scenarios of 120 (Tests/Cluster/run.sh).
            #expect(connections == 14360, "not the connections the four scenarios open:\n\(output)")
            #expect(completed == connections && broken == 0, "\(broken) connections broke:\n\(output)")
            #expect(result.status == 0, "run.sh exited with status \(result.status):\n\(output)")
            #expect(try Self.clusterNamespaces() == namespacesBefore, "run.sh left network namespaces behind")
        }

        @Test func verdictLinesParse() {
            #expect(Self.parseVerdict("connections=120 completed=119 broken=1")! == (120, 119, 1))
            #expect(Self.parseVerdict("connections=1 completed=1") == nil)
            #expect(Self.parseVerdict("scenario 1: 120 connections") == nil)
        }
    }
}
