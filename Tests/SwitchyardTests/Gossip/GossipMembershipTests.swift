import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardGossip
import SwitchyardTesting
import Testing

/// Hosts join and leave a running cluster (`GossipNode.updateMembers`, what a reload of
/// `cluster.hosts` does): no node restarts. Three gossip nodes on 127.0.0.1, as in GossipClusterTests.
@Suite("gossip membership", .serialized)
struct GossipMembershipTests {
    /// Host `host`'s cluster section with the hosts `members` only.
    static func node(_ bed: GossipTestbed, host: Int, members: [Int]) throws -> Host {
        let settings = try GossipTestbed.parseCluster(yaml(bed, host: host, members: members))
        let runtime = try ClusterRuntime(configuration: settings, name: "symember\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        return Host(id: host, runtime: runtime, node: try GossipNode(cluster: runtime, settings: settings.gossip!))
    }

    static func yaml(_ bed: GossipTestbed, host: Int, members: [Int]) -> String {
        var lines = ["host: \(host)", "hosts:"]
        for id in members { lines.append("  - { id: \(id), address: 198.18.0.\(id) }") }
        lines += ["services:", "  - name: web", "    vip: 198.19.0.1", "    port: 80", "    backends:"]
        for id in members { lines.append("      - { host: \(id), address: 198.18.100.\(id), port: 8080 }") }
        lines += ["connections:", "  capacity: 4096", "gossip:", "  key: \(GossipTestbed.keyHex)", "  members:"]
        for id in members { lines.append("    - { host: \(id), address: 127.0.0.1, port: \(bed.ports[id - 1]) }") }
        lines += bed.extra.split(separator: "\n").map { "  " + $0 }
        return lines.joined(separator: "\n")
    }

    static func members(_ bed: GossipTestbed, _ ids: [Int]) -> [GossipMember] {
        ids.map { GossipMember(hostID: $0, address: IPAddress("127.0.0.1")!, port: bed.ports[$0 - 1]) }
    }

    static func flows(of host: Int, _ range: Range<Int>) -> [TestFlow] {
        range.map { TestFlow(client: host * 10000 + $0, family: $0 % 3 == 0 ? 6 : 4, udp: $0 % 4 == 1) }
    }

    @Test func aHostJoinsTakesTheWholeStateFirstThenLeavesByDraining() throws {
        let bed = try GossipTestbed(hosts: 3, extra: "heartbeat_ms: 20\npeer_timeout_ms: 1000\ndigest_interval_ms: 100")
        var hosts = try [Self.node(bed, host: 1, members: [1, 2]), Self.node(bed, host: 2, members: [1, 2])]
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        var expected: [TestFlow: Int] = [:]
        for host in hosts {
            for flow in Self.flows(of: host.id, 0..<50) {
                #expect(host.open(flow))
                expected[flow] = host.id
            }
        }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } } != nil)

        // Without the reload, the peers ignore host 3: its sync is not answered. (It waits for
        // them up to peer_timeout_ms; docs/gossip.md says to start a host after the reload.)
        let early = try Self.node(bed, host: 3, members: [1, 2, 3])
        pollFor(hosts + [early], seconds: 0.2)
        #expect(early.snapshot().isEmpty && hosts.allSatisfy { $0.node.counters().value("dropped-unknown-sender") > 0 },
                "\(hosts[0].node.counters().table())")

        // The reload on hosts 1 and 2: host 3 becomes a member; nothing restarts.
        for host in hosts {
            let (added, removed) = host.node.updateMembers(Self.members(bed, [1, 2, 3]))
            #expect(added == [3] && removed.isEmpty)
        }
        // Host 3 (the one started early) now gets the whole state before it claims anything.
        let joined = pollUntil(hosts + [early], timeout: 10) { early.node.isSynchronised && early.holds(expected) }
        #expect(joined != nil, "host 3 did not receive the whole state: \(early.snapshot().count) of \(expected.count)")
        let status = early.node.counters().peers
        #expect(status.allSatisfy { $0.syncDone && !$0.syncGaveUp }, "answered, not skipped as silent: \(status)")
        hosts.append(early)
        for flow in Self.flows(of: 3, 0..<30) {
            #expect(hosts[2].open(flow))
            expected[flow] = 3
        }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } } != nil, "host 3's flows reach 1 and 2")

        // Host 3 leaves: hosts 1 and 2 keep it as a departing member; its flows stay until closed.
        for host in hosts.prefix(2) {
            let (added, removed) = host.node.updateMembers(Self.members(bed, [1, 2, 3]), departing: [3])
            #expect(added.isEmpty && removed.isEmpty)
            #expect(host.node.departingPeers().map(\.hostID) == [3] && host.node.departingPeers()[0].flows == 30)
        }
        for flow in Self.flows(of: 3, 0..<20) {
            hosts[2].close(flow)
            expected[flow] = nil
        }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } } != nil, "host 3's closes still apply")
        #expect(hosts.prefix(2).allSatisfy { $0.node.departingPeers()[0].flows == 10 })
        for flow in Self.flows(of: 3, 20..<30) {
            hosts[2].close(flow)
            expected[flow] = nil
        }
        #expect(pollUntil(hosts, timeout: 5) { hosts.prefix(2).allSatisfy { $0.node.departingPeers()[0].flows == 0 } } != nil)
        // Drained: the next membership drops it (the cluster plug-in does this by itself, ClusterPlugin+Membership).
        for host in hosts.prefix(2) {
            let (added, removed) = host.node.updateMembers(Self.members(bed, [1, 2]))
            #expect(added.isEmpty && removed == [3])
            #expect(host.node.departingPeers().isEmpty)
            #expect(host.node.counters().peers.map(\.hostID) == [host.id == 1 ? 2 : 1])
        }
        hosts.removeLast()
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } } != nil)
        #expect(hosts.allSatisfy { $0.node.counters().peers.allSatisfy { $0.alive } })
    }

    /// A member removed while it still owns flows (not departing) takes its remote entries along.
    @Test func aRemovedMemberTakesItsRemoteEntriesAlong() throws {
        let bed = try GossipTestbed(hosts: 2)
        let hosts = try [Self.node(bed, host: 1, members: [1, 2]), Self.node(bed, host: 2, members: [1, 2])]
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        for flow in Self.flows(of: 2, 0..<10) { hosts[1].open(flow) }
        #expect(pollUntil(hosts, timeout: 5) { hosts[0].snapshot().count == 10 } != nil)
        let (_, removed) = hosts[0].node.updateMembers(Self.members(bed, [1]))
        #expect(removed == [2] && hosts[0].snapshot().isEmpty)
        #expect(hosts[0].node.counters().value("forgotten-flows") == 10)
    }
}
