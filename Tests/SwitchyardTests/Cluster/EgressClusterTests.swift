import Foundation
import Testing

extension NamespaceClusters {
    /// Outbound connections in the namespace cluster: `Tests/Cluster/egress.sh` builds run.sh's
    /// topology plus an external server beyond the router, gives the four hosts `cluster.egress` (the
    /// VIP, a disjoint port range per host), and has the resource behind each host open echo
    /// connections to that server while host 2 is drained and host 3 is killed and started again.
    /// Every connection must complete byte for byte with the VIP as its source; connections of the
    /// killed host's own resources may break (counted apart), but resume once it is back.
    /// Tests/Cluster/README.md ("egress.sh") describes it. Here it runs with the `switchyard` built
    /// next to this test bundle.
    @Suite("outbound connections in the namespace cluster", .serialized)
    struct EgressClusterTests {
        static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Cluster/egress.sh").standardized.path

        struct Verdict: Equatable {
            var connections: Int
            var completed: Int
            var broken: Int
            var brokenOwnHost: Int
        }

        /// `outbound connections=N completed=N broken=N broken_own_host=M` → its four numbers.
        static func parseVerdict(_ line: Substring) -> Verdict? {
            guard line.hasPrefix("outbound ") else { return nil }
            var values: [String: Int] = [:]
            for field in line.dropFirst("outbound ".count).split(separator: " ") {
                let parts = field.split(separator: "=")
                guard parts.count == 2, let value = Int(parts[1]) else { return nil }
                values[String(parts[0])] = value
            }
            guard values.count == 4, let connections = values["connections"], let completed = values["completed"],
                  let broken = values["broken"], let own = values["broken_own_host"]
            else { return nil }
            return Verdict(connections: connections, completed: completed, broken: broken, brokenOwnHost: own)
        }

        static func clusterNamespaces() throws -> Set<String> {
            Set(try NetworkTopology.existingNamespaces().filter { $0.hasPrefix("syc") })
        }

        @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"),
              .timeLimit(.minutes(10)))
        func outboundConnectionsCompleteThroughDrainAndKill() throws {
            let namespacesBefore = try Self.clusterNamespaces()
            // `timeout` sends SIGTERM first, so the script still removes what it built.
            let result = try ExternalCommand.run(["timeout", "--signal=TERM", "--kill-after=30", "480", Self.script,
                                                  "--binary", SwitchyardBinary.path], timeout: 540)
            let output = result.stdout + result.stderr
            let verdict = result.stdout.split(separator: "\n").last.flatMap(Self.parseVerdict)
            try #require(verdict != nil, "egress.sh did not end with its verdict line (status \(result.status)):\n\(output)")
            // Per resource (4): 100 short, 12 long and 100 UDP in scenarios 1 and 2; in scenario 3, 100
            // short and 100 UDP from the three living hosts' resources and 12 long from every resource.
            #expect(verdict!.connections == 2344, "not the connections the three scenarios open:\n\(output)")
            #expect(verdict!.completed + verdict!.broken == verdict!.connections)
            // Only the killed host's own long connections (12) may break, and with the host started
            // again 3 s later they resume: the gossip gives back their entries, found by the same ports.
            #expect(verdict!.broken == verdict!.brokenOwnHost && verdict!.brokenOwnHost <= 12,
                    "connections of other hosts' resources broke:\n\(output)")
            #expect(verdict!.brokenOwnHost == 0, "the restarted host's resources' connections did not resume:\n\(output)")
            #expect(result.status == 0, "egress.sh exited with status \(result.status):\n\(output)")
            #expect(try Self.clusterNamespaces() == namespacesBefore, "egress.sh left network namespaces behind")
        }

        @Test func verdictLinesParse() {
            #expect(Self.parseVerdict("outbound connections=1244 completed=1232 broken=12 broken_own_host=12")
                == Verdict(connections: 1244, completed: 1232, broken: 12, brokenOwnHost: 12))
            #expect(Self.parseVerdict("connections=1 completed=1 broken=0") == nil)
            #expect(Self.parseVerdict("outbound connections=1 completed=1 broken=0") == nil)
        }
    }
}
