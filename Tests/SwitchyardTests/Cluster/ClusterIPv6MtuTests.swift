import Foundation
import Testing

extension NamespaceClusters {
    /// IPv6, MTU and fragments end to end: `Tests/Cluster/ipv6-mtu.sh` builds three Switchyard hosts
    /// on an IPv6 underlay (gossip over IPv6 too) behind a Linux router that spreads the IPv6 VIP by
    /// ECMP as the hosts announce it over BGP (the IPv4 VIP by a static route),
    /// a client next to the router and one behind a 1400-byte hop, and checks jumbo frames between the
    /// hosts, MSS clamping, path MTU discovery through the cluster (the router's ICMP errors and
    /// encapsulate's own), and fragmented, reordered UDP datagrams, every payload byte for byte
    /// (Tests/Cluster/README.md, "ipv6-mtu.sh"). Here it runs with the `switchyard` built next to this
    /// test bundle; its last line must say that nothing broke.
    @Suite("IPv6, MTU and fragments in network namespaces", .serialized)
    struct ClusterIPv6MtuTests {
        static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Cluster/ipv6-mtu.sh").standardized.path

        /// `transfers=N completed=N datagrams=N whole=N broken=N` → its five values by name.
        static func parseVerdict(_ line: Substring) -> [String: Int]? {
            var values: [String: Int] = [:]
            for field in line.split(separator: " ") {
                let parts = field.split(separator: "=")
                guard parts.count == 2, let value = Int(parts[1]) else { return nil }
                values[String(parts[0])] = value
            }
            let names: Set = ["transfers", "completed", "datagrams", "whole", "broken"]
            return Set(values.keys) == names ? values : nil
        }

        @Test(.enabled(if: NetworkTopology.unavailableReason == nil, "needs root and `ip netns` (iproute2)"),
              .timeLimit(.minutes(10)))
        func everyTransferAndDatagramArrivesIntact() throws {
            let namespacesBefore = try ClusterScenarioTests.clusterNamespaces()
            // `timeout` sends SIGTERM first, so the script still removes what it built.
            let result = try ExternalCommand.run(["timeout", "--signal=TERM", "--kill-after=30", "480", Self.script,
                                                  "--binary", SwitchyardBinary.path], timeout: 540)
            let output = result.stdout + result.stderr
            let verdict = result.stdout.split(separator: "\n").last.flatMap(Self.parseVerdict)
            let values = try #require(verdict, "ipv6-mtu.sh did not end with its verdict line (status \(result.status)):\n\(output)")
            // 4 TCP phases of 2 VIP families x 2 directions x 3 transfers (phase 5: 6), and 2 x 3 x 8 datagrams.
            #expect(values["transfers"] == 60 && values["datagrams"] == 48, "not the transfers and datagrams the script sends:\n\(output)")
            #expect(values["completed"] == values["transfers"] && values["whole"] == values["datagrams"] && values["broken"] == 0,
                    "something broke:\n\(output)")
            #expect(result.status == 0, "ipv6-mtu.sh exited with status \(result.status):\n\(output)")
            #expect(try ClusterScenarioTests.clusterNamespaces() == namespacesBefore, "ipv6-mtu.sh left network namespaces behind")
        }

        @Test func verdictLinesParse() {
            #expect(Self.parseVerdict("transfers=60 completed=60 datagrams=48 whole=47 broken=1")?["whole"] == 47)
            #expect(Self.parseVerdict("connections=1 completed=1 broken=0") == nil)
            #expect(Self.parseVerdict("phase 4: 48 of 48 intact") == nil)
        }
    }
}
