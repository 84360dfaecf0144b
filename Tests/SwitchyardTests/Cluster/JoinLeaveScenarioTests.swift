import Foundation
import Testing

extension NamespaceClusters {
    /// `Tests/Cluster/join-leave.sh`: in the namespace cluster of run.sh, host 4 joins and host 3 leaves
    /// by `ctl reload` (no peer restarts), `ctl preview` is asked before each change, and long and short
    /// connections run throughout. Run with the `switchyard` built next to this test bundle; its last
    /// line must say that every connection completed, and it must leave no namespace behind.
    @Suite("cluster: hosts join and leave", .serialized)
    struct JoinLeaveScenarioTests {
        static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Cluster/join-leave.sh").standardized.path

        @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"),
              .timeLimit(.minutes(20)))
        func aHostJoinsAndAnotherLeavesWithEveryConnectionIntact() throws {
            let namespacesBefore = try ClusterScenarioTests.clusterNamespaces()
            // `timeout` sends SIGTERM first, so the script still removes what it built.
            let result = try ExternalCommand.run(["timeout", "--signal=TERM", "--kill-after=30", "900", Self.script,
                                                  "--binary", SwitchyardBinary.path], timeout: 960)
            let output = result.stdout + result.stderr
            let verdict = result.stdout.split(separator: "\n").last.flatMap(ClusterScenarioTests.parseVerdict)
            try #require(verdict != nil, "join-leave.sh did not end with `connections=N completed=N broken=N` (status \(result.status)):\n\(output)")
            let (connections, completed, broken) = verdict!
            // 120 long connections, 3 × 400 short ones during the changes, 2 spread checks of 2000.
            #expect(connections == 5320, "not the connections the script opens:\n\(output)")
            #expect(completed == connections && broken == 0, "\(broken) connections broke:\n\(output)")
            // The previews of b4's weight and host 3's leave were compared with what the reloads
            // moved (Tests/Cluster/README.md, "Preview checks"; a mismatch fails the script).
            for label in ["weight", "leave"] {
                #expect(output.contains("preview \(label): predicted="), "join-leave.sh did not compare the \(label) preview with the outcome:\n\(output)")
            }
            #expect(result.status == 0, "join-leave.sh exited with status \(result.status):\n\(output)")
            #expect(try ClusterScenarioTests.clusterNamespaces() == namespacesBefore, "join-leave.sh left network namespaces behind")
        }
    }
}
