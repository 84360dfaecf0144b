import Foundation
import Testing

extension NamespaceClusters {
    /// Health checks in the namespace cluster: `Tests/Cluster/health.sh` runs run.sh's topology with
    /// four gossiping hosts, each checking its own server over HTTP through a management link
    /// (`check_address`), kills b3's server under long connections, and checks that b3 is found down
    /// within the bound, that every host reaches the same generation, that host 3 leaves and rejoins
    /// the router's route, that new connections avoid b3 while it is down, and that every connection
    /// but those b3's killed server was serving completes byte for byte. Tests/Cluster/README.md
    /// ("health.sh") describes it. Here it runs with the `switchyard` built next to this test bundle.
    @Suite("health checks in the namespace cluster", .serialized)
    struct HealthClusterTests {
        static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Cluster/health.sh").standardized.path

        @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"),
              .timeLimit(.minutes(10)))
        func aKilledServerIsWithdrawnAndNothingElseBreaks() throws {
            let namespacesBefore = try ClusterScenarioTests.clusterNamespaces()
            // `timeout` sends SIGTERM first, so the script still removes what it built.
            let result = try ExternalCommand.run(["timeout", "--signal=TERM", "--kill-after=30", "480", Self.script,
                                                  "--binary", SwitchyardBinary.path], timeout: 540)
            let output = result.stdout + result.stderr
            let verdict = result.stdout.split(separator: "\n").last.flatMap(ClusterScenarioTests.parseVerdict)
            try #require(verdict != nil, "health.sh did not end with `connections=N completed=N broken=N` (status \(result.status)):\n\(output)")
            let (connections, completed, broken) = verdict!
            // 3 spread checks of 2000 and 120 long connections, less those of the killed server.
            #expect(connections > 6000 && connections <= 6120, "not the connections the scenarios open:\n\(output)")
            #expect(completed == connections && broken == 0, "\(broken) connections broke:\n\(output)")
            // The withdrawal's preview was compared with what it moved (Tests/Cluster/README.md,
            // "Preview checks"; a mismatch fails the script).
            #expect(output.contains("preview down: predicted="), "health.sh did not compare the preview with the outcome:\n\(output)")
            #expect(result.status == 0, "health.sh exited with status \(result.status):\n\(output)")
            #expect(try ClusterScenarioTests.clusterNamespaces() == namespacesBefore, "health.sh left network namespaces behind")
        }
    }
}
