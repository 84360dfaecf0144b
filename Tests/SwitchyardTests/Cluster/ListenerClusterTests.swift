import Foundation
import Testing

extension NamespaceClusters {
    /// Listener registration in the namespace cluster: `Tests/Cluster/listeners.sh` runs run.sh's
    /// topology with four gossiping hosts and b4 left out of the file's backends, then registers b4
    /// with `ctl listen` on host 4 and withdraws it with `ctl unlisten`, each while long connections
    /// run, checking the spread of new connections by weight (1:1:1:0, 1:1:1:2, 1:1:1:0), that every
    /// host reaches the same directory generation, that host 4 enters and leaves the router's route,
    /// and that every connection completes byte for byte. Tests/Cluster/README.md ("listeners.sh")
    /// describes it. Here it runs with the `switchyard` built next to this test bundle.
    @Suite("listener registration in the namespace cluster", .serialized)
    struct ListenerClusterTests {
        static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Cluster/listeners.sh").standardized.path

        @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"),
              .timeLimit(.minutes(10)))
        func registeredAndWithdrawnBackendsTakeTheirShareAndBreakNothing() throws {
            let namespacesBefore = try ClusterScenarioTests.clusterNamespaces()
            // `timeout` sends SIGTERM first, so the script still removes what it built.
            let result = try ExternalCommand.run(["timeout", "--signal=TERM", "--kill-after=30", "480", Self.script,
                                                  "--binary", SwitchyardBinary.path], timeout: 540)
            let output = result.stdout + result.stderr
            let verdict = result.stdout.split(separator: "\n").last.flatMap(ClusterScenarioTests.parseVerdict)
            try #require(verdict != nil, "listeners.sh did not end with `connections=N completed=N broken=N` (status \(result.status)):\n\(output)")
            let (connections, completed, broken) = verdict!
            // 3 spread checks of 2000 new connections, 2 long scenarios of 120, 400 short ones
            // across the registration.
            #expect(connections == 6640, "not the connections the three scenarios open:\n\(output)")
            // The registration's preview was compared with what it moved (Tests/Cluster/README.md,
            // "Preview checks"; a mismatch fails the script).
            #expect(output.contains("preview register: predicted="), "listeners.sh did not compare the preview with the outcome:\n\(output)")
            #expect(completed == connections && broken == 0, "\(broken) connections broke:\n\(output)")
            #expect(result.status == 0, "listeners.sh exited with status \(result.status):\n\(output)")
            #expect(try ClusterScenarioTests.clusterNamespaces() == namespacesBefore, "listeners.sh left network namespaces behind")
        }
    }
}
