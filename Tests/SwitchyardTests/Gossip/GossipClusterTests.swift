import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardGossip
import SwitchyardTesting
import Testing

/// Several gossip nodes in this process over real UDP on 127.0.0.1 (one port per host), each
/// with its own connection table. Timers: heartbeat 20 ms, peer timeout 400 ms, digest 100 ms.
@Suite("gossip cluster", .serialized)
struct GossipClusterTests {
    /// Flows 0..<count of `host`, a mix of IPv4/IPv6 and TCP/UDP (client numbers unique per host).
    static func flows(of host: Int, _ range: Range<Int>) -> [TestFlow] {
        range.map { n in
            TestFlow(client: host * 10000 + n, family: n % 3 == 0 ? 6 : 4, udp: n % 4 == 1)
        }
    }

    static func startCluster(_ bed: GossipTestbed) throws -> [Host] {
        let hosts = try (1...bed.hostCount).map { try bed.makeNode(host: $0) }
        let joined = pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } }
        #expect(joined != nil, "nodes did not synchronise at start")
        return hosts
    }

    /// Host 1's table uses RCU (its polling thread is a registered reader, like the engine's
    /// control thread with data-plane lcores); hosts 2 and 3 free at once.
    @Test func openedFlowsAppearEverywhereAndClosedOnesDisappear() throws {
        let bed = try GossipTestbed()
        let qsbr = try #require(sy_qsbr_create(UInt32(sy_max_lcore())))
        var hosts = try [bed.makeNode(host: 1, qsbr: qsbr)] + (2...3).map { try bed.makeNode(host: $0) }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        var expected: [TestFlow: Int] = [:]
        for host in hosts {
            for flow in Self.flows(of: host.id, 0..<(60 + 20 * host.id)) {
                #expect(host.open(flow))
                expected[flow] = host.id
            }
        }
        let opened = pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } }
        #expect(opened != nil, "opened flows did not reach every table: \(hosts.map { $0.snapshot().count }) of \(expected.count)")

        // Close every third flow of each host.
        for host in hosts {
            for (index, flow) in Self.flows(of: host.id, 0..<(60 + 20 * host.id)).enumerated() where index % 3 == 0 {
                host.close(flow)
                expected[flow] = nil
            }
        }
        let closed = pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } }
        #expect(closed != nil, "closed flows did not disappear everywhere")
        // Liveness is judged when a node polls: on a busy machine this thread may not have polled
        // for longer than the peer timeout, so let every node hear its peers once more.
        let live = pollUntil(hosts, timeout: 5) {
            hosts.allSatisfy { $0.node.counters().peers.allSatisfy { $0.alive && $0.synchronised } }
        }
        #expect(live != nil, "peers not all alive and synchronised")
        for host in hosts {
            let c = host.node.counters()
            #expect(c.droppedTotal == c.handshakeDrops, "\(c.table())")
            #expect(c.ownedFlows == expected.values.filter { $0 == host.id }.count)
            #expect(c.peers.allSatisfy { $0.alive && $0.synchronised })
            #expect(c.value("opens-sent") == UInt64(60 + 20 * host.id))
            #expect(c.lagSamples > 0)
        }
        print("propagation: opened in \(String(format: "%.3f", opened ?? -1)) s, closed in \(String(format: "%.3f", closed ?? -1)) s")
        print(hosts[0].node.counters().table())
        hosts.removeAll() // the nodes unregister from the QSBR variable before it goes
        sy_qsbr_free(qsbr)
    }

    /// The same over IPv6 (members ::1, one AF_INET6 socket each): flows of both families reach
    /// every table, and every peer is alive and synchronised.
    @Test func gossipRunsOverIPv6() throws {
        let bed = try GossipTestbed(memberAddress: "::1")
        let hosts = try Self.startCluster(bed)
        #expect(hosts.allSatisfy { $0.node.localEndpoint.address == IPAddress("::1")! })
        #expect(bed.endpoint(1).description == "[::1]:\(bed.ports[0])")
        var expected: [TestFlow: Int] = [:]
        for host in hosts {
            for flow in Self.flows(of: host.id, 0..<40) {
                #expect(host.open(flow))
                expected[flow] = host.id
            }
        }
        let opened = pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } }
        #expect(opened != nil, "opened flows did not reach every table over IPv6")
        let live = pollUntil(hosts, timeout: 5) {
            hosts.allSatisfy { $0.node.counters().peers.allSatisfy { $0.alive && $0.synchronised } }
        }
        #expect(live != nil, "peers not all alive and synchronised over IPv6")
        for host in hosts {
            let c = host.node.counters()
            #expect(c.droppedTotal == c.handshakeDrops, "\(c.table())")
        }
    }

    @Test func aRestartedHostTakesItsFlowsBackAndLearnsEveryoneElses() throws {
        let bed = try GossipTestbed()
        var hosts = try Self.startCluster(bed)
        var expected: [TestFlow: Int] = [:]
        for host in hosts {
            for flow in Self.flows(of: host.id, 0..<50) {
                host.open(flow)
                expected[flow] = host.id
            }
        }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } } != nil)
        let oldIncarnation = hosts[2].node.incarnation

        // Host 3 goes away (its engine stops: node and table gone).
        hosts.removeLast()
        let down = pollUntil(hosts, timeout: 3) {
            hosts.allSatisfy { $0.node.counters().peers.first { $0.hostID == 3 }?.alive == false }
        }
        #expect(down != nil, "host 3 was not declared down")
        // Rule: a down peer's flows are kept (within down_retention_ms).
        for host in hosts { #expect(host.holds(expected)) }

        // It comes back with an empty table and a new incarnation.
        let restarted = try bed.makeNode(host: 3)
        #expect(restarted.node.incarnation > oldIncarnation)
        #expect(!restarted.node.isSynchronised)
        hosts.append(restarted)
        let synced = pollUntil(hosts, timeout: 5) { restarted.node.isSynchronised }
        #expect(synced != nil, "the restarted host did not synchronise")
        // Synchronised means: its own flows are back (local entries with their backends) and it
        // holds every other host's flows.
        #expect(restarted.holds(expected), "restarted table: \(restarted.snapshot().count) entries of \(expected.count)")
        let c = restarted.node.counters()
        #expect(c.ownedFlows == 50)
        #expect(c.value("full-syncs-completed") == 2)
        for host in hosts.prefix(2) {
            #expect(host.node.counters().value("restarts-seen") == 1)
            #expect(host.node.counters().value("peers-recovered") == 1)
        }

        // And it goes on as before: a new flow and a close of a restored one reach everyone.
        let fresh = TestFlow(client: 39999)
        restarted.open(fresh)
        expected[fresh] = 3
        let restoredFlow = Self.flows(of: 3, 0..<1)[0]
        restarted.close(restoredFlow)
        expected[restoredFlow] = nil
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } } != nil)
        print("restart: host 3 declared down after \(String(format: "%.3f", down ?? -1)) s, synchronised \(String(format: "%.3f", synced ?? -1)) s after its restart")
    }

    /// 30 % of all received datagrams are thrown away (the receive-path test hook); flows are
    /// opened and closed all along. Bound: every table equals the truth within 10 s after the
    /// last change.
    @Test func tablesConvergeDespiteThirtyPercentLoss() throws {
        let bed = try GossipTestbed()
        let hosts = try (1...3).map { try bed.makeNode(host: $0) }
        for host in hosts { host.node.injectedReceiveLoss = 0.3 }
        #expect(pollUntil(hosts, timeout: 10) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        var expected: [TestFlow: Int] = [:]
        for round in 0..<20 {
            for host in hosts {
                for flow in Self.flows(of: host.id, (round * 10)..<(round * 10 + 10)) {
                    host.open(flow)
                    expected[flow] = host.id
                }
                if round > 0 {
                    for flow in Self.flows(of: host.id, ((round - 1) * 10)..<((round - 1) * 10 + 4)) {
                        host.close(flow)
                        expected[flow] = nil
                    }
                }
            }
            pollFor(hosts, seconds: 0.02)
        }
        let bound = 10.0
        let converged = pollUntil(hosts, timeout: bound) { hosts.allSatisfy { $0.holds(expected) } }
        #expect(converged != nil, "not converged within \(bound) s: \(hosts.map { $0.snapshot().count }) entries, want \(expected.count)")
        var repairs: UInt64 = 0, lost: UInt64 = 0
        for host in hosts {
            let c = host.node.counters()
            repairs += c.value("repairs-completed")
            lost += c.dropped(.injectedLoss)
            #expect(c.droppedTotal == c.dropped(.injectedLoss) + c.handshakeDrops, "\(c.table())")
        }
        #expect(lost > 0)
        #expect(repairs > 0, "loss must have been healed by anti-entropy repairs")
        print("30 % loss: \(expected.count) flows, converged \(String(format: "%.3f", converged ?? -1)) s after the last change, \(repairs) repairs, \(lost) datagrams dropped by the hook")
        print(hosts[1].node.counters().table())
    }

    /// Hosts 1 and 2 both claim one flow: every host ends with host 1's claim (the lower id),
    /// host 2 yields its local entry, and the digests then stay in agreement (no repair loop).
    @Test func theLowerHostIdWinsAConflictingClaim() throws {
        let bed = try GossipTestbed()
        let hosts = try Self.startCluster(bed)
        let contested = TestFlow(client: 777)
        hosts[1].open(contested)
        hosts[0].open(contested)
        let expected = [contested: 1]
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.holds(expected) } } != nil,
                "\(hosts.map { $0.snapshot()[contested].map { "owner \($0.owner)" } ?? "none" })")
        #expect(hosts[1].node.counters().value("yielded") == 1)
        #expect(hosts[1].node.counters().ownedFlows == 0)
        // Settled: host 1 has seen host 2's claim and kept its own, digests match and no repair
        // starts any more.
        pollFor(hosts, seconds: 0.3)
        #expect(hosts[0].node.counters().value("conflicts") == 1)
        #expect(hosts[0].node.counters().value("yielded") == 0)
        let repairs = hosts.map { $0.node.counters().value("repairs-started") }
        pollFor(hosts, seconds: 0.5)
        #expect(hosts.map { $0.node.counters().value("repairs-started") } == repairs)
        for host in hosts {
            #expect(host.holds(expected))
            #expect(host.node.counters().peers.allSatisfy { $0.lastDigestMatched }, "\(host.node.counters().table())")
        }
    }

    /// The down rule: a silent peer's flows stay for down_retention_ms, then go.
    @Test func aDownPeersFlowsAreDeletedAfterTheRetention() throws {
        let bed = try GossipTestbed(extra: "heartbeat_ms: 20\npeer_timeout_ms: 200\ndigest_interval_ms: 100\ndown_retention_ms: 600")
        var hosts = try Self.startCluster(bed)
        for flow in Self.flows(of: 3, 0..<20) { hosts[2].open(flow) }
        for flow in Self.flows(of: 1, 0..<5) { hosts[0].open(flow) }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.snapshot().count == 25 } } != nil)
        hosts.removeLast()
        let start = Date()
        let down = pollUntil(hosts, timeout: 3) { hosts.allSatisfy { $0.node.counters().peers.first { $0.hostID == 3 }?.alive == false } }
        #expect(down != nil)
        #expect(hosts.allSatisfy { $0.snapshot().count == 25 }, "kept while the retention runs")
        let gone = pollUntil(hosts, timeout: 3) { hosts.allSatisfy { $0.snapshot().count == 5 } }
        #expect(gone != nil)
        let elapsed = Date().timeIntervalSince(start)
        #expect(elapsed >= 0.75, "deleted after \(elapsed) s: before timeout + retention (0.8 s)")
        for host in hosts {
            #expect(host.node.counters().value("forgotten-flows") == 20)
            #expect(host.snapshot().values.allSatisfy { $0.owner == 1 })
        }
    }
}
