import Foundation
import Testing

extension NamespaceClusters {
    /// `replicate: exceptions` in the namespace cluster: `Tests/Cluster/listeners-exceptions.sh`
    /// runs listeners.sh (b4 registered, then withdrawn, while long connections run) with every
    /// host announcing only the connections the current tables do not send to it, and checks from
    /// the hosts' counters that opens were implied and exceptions announced. Every connection must
    /// complete byte for byte. Tests/Cluster/README.md ("listeners-exceptions.sh") describes it.
    @Suite("replicate: exceptions in the namespace cluster", .serialized)
    struct ExceptionsClusterTests {
        static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Cluster/listeners-exceptions.sh").standardized.path

        @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"),
              .timeLimit(.minutes(10)))
        func connectionsSurviveTableChangesWhenOnlyExceptionsAreGossiped() throws {
            let namespacesBefore = try ClusterScenarioTests.clusterNamespaces()
            let result = try ExternalCommand.run(["timeout", "--signal=TERM", "--kill-after=30", "480", Self.script,
                                                  "--binary", SwitchyardBinary.path], timeout: 540)
            let output = result.stdout + result.stderr
            let verdict = result.stdout.split(separator: "\n").last.flatMap(ClusterScenarioTests.parseVerdict)
            try #require(verdict != nil, "listeners-exceptions.sh did not end with `connections=N completed=N broken=N` (status \(result.status)):\n\(output)")
            let (connections, completed, broken) = verdict!
            #expect(connections == 6640, "not the connections the three scenarios open:\n\(output)")
            #expect(completed == connections && broken == 0, "\(broken) connections broke:\n\(output)")
            #expect(result.status == 0, "listeners-exceptions.sh exited with status \(result.status):\n\(output)")
            #expect(try ClusterScenarioTests.clusterNamespaces() == namespacesBefore, "listeners-exceptions.sh left network namespaces behind")
        }
    }
}
