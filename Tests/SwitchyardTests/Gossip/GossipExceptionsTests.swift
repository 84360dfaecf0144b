import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardGossip
import SwitchyardTesting
import Testing

/// `replicate: exceptions` (docs/gossip.md, "Scale"): three real nodes on 127.0.0.1. Each host
/// opens the flows the Maglev table picks for it (what ownership-lookup does), which are not sent;
/// a table change (a backend added on host 2) makes each owner announce exactly the flows whose
/// pick moved off it, computed here directly with `Maglev.populate`; after it every peer sends
/// every flow to its owner (by its entry, or by the pick); withdrawing the backend again closes
/// the exceptions; a restarted host's sync carries the exceptions only.
@Suite("gossip exceptions", .serialized)
struct GossipExceptionsTests {
    static let extra = "heartbeat_ms: 20\npeer_timeout_ms: 400\ndigest_interval_ms: 100\nreplicate: exceptions"
    static let added = "      - { host: 2, address: 198.18.100.9, port: 8080 }"

    /// The backends of `web` (host, address), as the testbed writes them, with `added` or not.
    static func backends(added: Bool) -> [(host: Int, address: String)] {
        [(1, "198.18.100.1"), (2, "198.18.100.2"), (3, "198.18.100.3")] + (added ? [(2, "198.18.100.9")] : [])
    }

    /// The host the Maglev table of `backends` picks for `flow`, computed without the engine.
    static func pick(_ flow: TestFlow, _ backends: [(host: Int, address: String)]) -> Int {
        let table = backends.count == 4 ? tableWithAdded : tableWithout
        var key = flow.key
        return backends[Int(table[Int(FlowKeys.hash(&key) % 65537)])].host
    }

    /// The Maglev table of `backends` (TCP, port 8080, weight 1 each).
    static func table(_ backends: [(host: Int, address: String)]) -> [UInt32] {
        let keys = backends.map { IPAddress($0.address)!.bytes + [6, 0x1f, 0x90] }
        return Maglev.populate(keys: keys, weights: backends.map { _ in 1 }, size: 65537)!
    }

    static let tableWithout = table(backends(added: false))
    static let tableWithAdded = table(backends(added: true))

    static func yaml(_ bed: GossipTestbed, host: Int, added: Bool, capacity: Int = 4096) -> String {
        let base = bed.clusterYAML(host: host, capacity: capacity)
        guard added else { return base }
        return base.replacingOccurrences(of: "    backends:\n", with: "    backends:\n" + Self.added + "\n")
    }

    /// A host started on `yaml` (fresh runtime and node).
    static func start(_ bed: GossipTestbed, host: Int, added: Bool, capacity: Int = 4096) throws -> Host {
        let configuration = try GossipTestbed.parseCluster(yaml(bed, host: host, added: added, capacity: capacity))
        let runtime = try ClusterRuntime(configuration: configuration, name: "syexc\(TestEAL.nextSerial())", socket: 0, qsbr: nil)
        return Host(id: host, runtime: runtime, node: try GossipNode(cluster: runtime, settings: configuration.gossip!))
    }

    /// What a reload does to the tables: a new runtime that keeps the connections (kept alive by
    /// the caller, as the engine keeps its current runtime).
    static func reload(_ bed: GossipTestbed, _ host: Host, from previous: ClusterRuntime, added: Bool,
                       capacity: Int = 4096) throws -> ClusterRuntime {
        ClusterRuntime(reloading: previous,
                       configuration: try GossipTestbed.parseCluster(yaml(bed, host: host.id, added: added, capacity: capacity)))
    }

    /// Each host holds its own flows (local) and exactly `exceptions` of the others (remote).
    static func holdsExactly(_ host: Host, own: [TestFlow], exceptions: [TestFlow: Int]) -> Bool {
        let table = host.snapshot()
        let remote = exceptions.filter { $0.value != host.id }
        guard table.count == own.count + remote.count else { return false }
        for flow in own where table[flow]?.owner != host.id || table[flow]?.remote == true { return false }
        for (flow, owner) in remote where table[flow]?.owner != owner || table[flow]?.remote != true { return false }
        return true
    }

    @Test func onlyFlowsWhosePickMovedAreAnnouncedAndPeersRouteThemToTheirOwner() throws {
        let bed = try GossipTestbed(extra: Self.extra)
        var hosts = try (1...3).map { try Self.start(bed, host: $0, added: false) }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)

        // Every host opens the flows the current table picks for it: none is sent.
        let flows = (0..<3000).map { TestFlow(client: $0) }
        var owner: [TestFlow: Int] = [:]
        for flow in flows { owner[flow] = Self.pick(flow, Self.backends(added: false)) }
        var own: [Int: [TestFlow]] = [:]
        for flow in flows { own[owner[flow]!, default: []].append(flow) }
        for host in hosts { for flow in own[host.id]! { #expect(host.open(flow)) } }
        let implied = pollUntil(hosts, timeout: 5) {
            hosts.reduce(UInt64(0)) { $0 + $1.node.counters().value("opens-implied") } == 3000
        }
        #expect(implied != nil)
        pollFor(hosts, seconds: 0.3) // digests go round: nothing to repair
        for host in hosts {
            let c = host.node.counters()
            #expect(c.value("opens-sent") == 0 && c.value("repairs-started") == 0, "host \(host.id): \(c.table())")
            #expect(Self.holdsExactly(host, own: own[host.id]!, exceptions: [:]), "host \(host.id) holds only its own flows")
        }

        // A backend joins on host 2: every host reloads; each owner announces the flows whose pick
        // moved off it, exactly those of the direct computation.
        var exceptions: [TestFlow: Int] = [:]
        for flow in flows where Self.pick(flow, Self.backends(added: true)) != owner[flow]! { exceptions[flow] = owner[flow]! }
        #expect(exceptions.count > 300 && exceptions.count < 1500, "a quarter of the flows moves: \(exceptions.count)")
        var runtimes = try hosts.map { try Self.reload(bed, $0, from: $0.runtime, added: true) }
        let announced = pollUntil(hosts, timeout: 5) {
            hosts.allSatisfy { Self.holdsExactly($0, own: own[$0.id]!, exceptions: exceptions) }
        }
        #expect(announced != nil, "every host holds exactly the exceptions: \(hosts.map { $0.snapshot().count })")
        for host in hosts {
            let c = host.node.counters()
            let moved = exceptions.values.filter { $0 == host.id }.count
            #expect(c.value("exceptions-announced") == UInt64(moved) && c.value("opens-sent") == UInt64(moved),
                    "host \(host.id): \(moved) moved, \(c.value("exceptions-announced")) announced")
            #expect(c.ownedFlows == moved)
        }
        // Routing on every host, as ownership-lookup does it: the entry's owner, else the pick of
        // this host's current tables. Every flow reaches its owner.
        for host in hosts {
            let table = host.snapshot()
            let directory = try #require(host.runtime.tables.current)
            for flow in flows {
                var key = flow.key
                let target = table[flow]?.owner ?? directory.pickedHost(key: &key).map(Int.init)
                #expect(target == owner[flow]!, "host \(host.id) sends \(flow) to \(String(describing: target)), owner \(owner[flow]!)")
            }
        }

        // A restarted host 3 takes only the exceptions: its own back as local entries, the
        // others' as remote ones; none of the flows the tables imply.
        // Scope owned-and-yours: each peer sends its own exceptions and those of host 3 it holds.
        let expectedRecords = UInt64(exceptions.count + exceptions.values.filter { $0 == 3 }.count)
        hosts.removeLast()
        runtimes.removeLast()
        let restarted = try Self.start(bed, host: 3, added: true)
        hosts.append(restarted)
        #expect(pollUntil(hosts, timeout: 5) { restarted.node.isSynchronised } != nil)
        let ownExceptions = exceptions.filter { $0.value == 3 }.map(\.key)
        #expect(Self.holdsExactly(restarted, own: ownExceptions, exceptions: exceptions),
                "restarted host 3 holds \(restarted.snapshot().count) entries, \(exceptions.count) exceptions")
        let c3 = restarted.node.counters()
        #expect(c3.value("sync-records-applied") == expectedRecords, "\(c3.value("sync-records-applied")) records")
        print("exceptions: 3000 flows, \(exceptions.count) exceptions after adding a backend, restarted host synced \(c3.value("sync-records-applied")) records")

        // The backend goes again (hosts 1 and 2; host 3 restarted on the new file and reloads
        // too): the exceptions are closed everywhere, and host 3's own agree again.
        let before = hosts.map { $0.node.counters().value("exceptions-withdrawn") }
        runtimes = try hosts.enumerated().map { index, host in
            try Self.reload(bed, host, from: index < runtimes.count ? runtimes[index] : host.runtime, added: false)
        }
        let withdrawn = pollUntil(hosts, timeout: 5) {
            hosts.allSatisfy { $0.snapshot().values.allSatisfy { !$0.remote } }
        }
        #expect(withdrawn != nil, "remote entries left: \(hosts.map { $0.snapshot().values.filter(\.remote).count })")
        for (host, count) in zip(hosts, before) {
            let moved = exceptions.values.filter { $0 == host.id }.count
            #expect(host.node.counters().value("exceptions-withdrawn") - count == UInt64(moved))
            #expect(host.node.counters().ownedFlows == 0)
        }
        withExtendedLifetime(runtimes) {}
    }

    /// A table of more positions than one poll rescans: the rescan after a change takes several
    /// polls (bounded work per poll) and still announces exactly the flows whose pick moved.
    @Test func theRescanOfALargeTableIsSpreadOverPolls() throws {
        let bed = try GossipTestbed(hosts: 3, extra: Self.extra)
        let hosts = try (1...3).map { try Self.start(bed, host: $0, added: false, capacity: 300_000) }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        let owner = hosts[0]
        // Table positions are taken in insertion order: more flows than one poll's 65,536.
        let mine = (0..<240_000).map { TestFlow(client: $0) }.filter { Self.pick($0, Self.backends(added: false)) == 1 }
        #expect(mine.count > 70_000)
        for flow in mine { #expect(owner.open(flow)) }
        #expect(pollUntil(hosts, timeout: 20) { owner.node.counters().value("opens-implied") == UInt64(mine.count) } != nil)
        let moved = mine.filter { Self.pick($0, Self.backends(added: true)) != 1 }
        let positions = owner.runtime.connections.positions
        #expect(positions > 2 * 65536, "a table of \(positions) positions")
        let runtimes = try hosts.map { try Self.reload(bed, $0, from: $0.runtime, added: true, capacity: 300_000) }
        owner.poll()
        let first = owner.node.counters().value("exceptions-announced")
        #expect(first > 0 && first < UInt64(moved.count), "one poll rescans 65,536 of \(positions) positions: \(first) of \(moved.count)")
        print("rescan: \(first) of \(moved.count) exceptions announced by the first poll after the change (\(positions) positions)")
        let done = pollUntil(hosts, timeout: 20, every: 50_000) {
            hosts[1...].allSatisfy { peer in
                let table = peer.snapshot()
                return table.count == moved.count && moved.allSatisfy { table[$0]?.owner == 1 }
            }
        }
        #expect(done != nil, "the peers hold exactly host 1's \(moved.count) exceptions")
        #expect(owner.node.counters().value("exceptions-announced") == UInt64(moved.count))
        withExtendedLifetime(runtimes) {}
    }

    /// Five hosts, each owning 60 exceptions (flows it opened whose pick is another host): a
    /// restarted host 5 takes every peer's exceptions once and its own from two peers only (hosts
    /// 2 and 3: index 5 mod 4 on), not from all four. Restarted again while hosts 2 and 3 are
    /// silent, it asks hosts 1 and 4 for its own instead, once `peer_timeout_ms` has passed.
    @Test func aRestartedHostTakesItsOwnExceptionsFromTwoPeers() throws {
        let bed = try GossipTestbed(hosts: 5, extra: Self.extra)
        var hosts = try (1...5).map { try Self.start(bed, host: $0, added: false) }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        let directory = try #require(hosts[0].runtime.tables.current)
        var owner: [TestFlow: Int] = [:]
        for host in hosts {
            var opened = 0
            for n in (host.id * 10_000)..<(host.id * 10_000 + 1000) where opened < 60 {
                let flow = TestFlow(client: n)
                var key = flow.key
                guard let picked = directory.pickedHost(key: &key), Int(picked) != host.id else { continue }
                #expect(host.open(flow))
                owner[flow] = host.id
                opened += 1
            }
        }
        #expect(owner.count == 300)
        let spread = pollUntil(hosts, timeout: 5) {
            hosts.allSatisfy { host in Self.holdsExactly(host, own: owner.filter { $0.value == host.id }.map(\.key), exceptions: owner) }
        }
        #expect(spread != nil, "every host holds the 300 exceptions: \(hosts.map { $0.snapshot().count })")
        let own5 = owner.filter { $0.value == 5 }.map(\.key)

        // All peers live: every peer's exceptions once, host 5's own from two peers.
        hosts.removeLast()
        var records: UInt64 = 0
        do {
            let restarted = try Self.start(bed, host: 5, added: false)
            let all = hosts + [restarted]
            #expect(pollUntil(all, timeout: 5) { restarted.node.isSynchronised } != nil)
            #expect(Self.holdsExactly(restarted, own: own5, exceptions: owner), "host 5 holds \(restarted.snapshot().count) entries")
            let c5 = restarted.node.counters()
            records = c5.value("sync-records-applied")
            #expect(records == UInt64(240 + 2 * 60), "\(records) records")
            #expect(c5.value("sync-yours-reassigned") == 0)
        }

        // Hosts 2 and 3 silent (nobody polls them): hosts 1 and 4 are asked for host 5's own.
        let again = try Self.start(bed, host: 5, added: false)
        let live = [hosts[0], hosts[3], again]
        #expect(pollUntil(live, timeout: 5) { again.node.isSynchronised } != nil)
        let fromLive = owner.filter { $0.value == 1 || $0.value == 4 || $0.value == 5 }
        #expect(pollUntil(live, timeout: 5) { Self.holdsExactly(again, own: own5, exceptions: fromLive) } != nil,
                "host 5 holds \(again.snapshot().count) entries, wants its own 60 and hosts 1 and 4's 120")
        let c5 = again.node.counters()
        #expect(c5.value("sync-yours-reassigned") == 2, "\(c5.table())")
        print("exceptions, five hosts: a restart took \(records) records (240 + 2 x 60); with two peers silent, \(c5.value("sync-yours-reassigned")) live peers asked instead")
        withExtendedLifetime(hosts) {}
    }

    @Test func closesOfImpliedFlowsAreNotSent() throws {
        let bed = try GossipTestbed(extra: Self.extra)
        let hosts = try (1...2).map { try Self.start(bed, host: $0, added: false) }
        #expect(pollUntil(hosts, timeout: 5) { hosts.allSatisfy { $0.node.isSynchronised } } != nil)
        let mine = (0..<400).map { TestFlow(client: $0) }.filter { Self.pick($0, Self.backends(added: false)) == 1 }
        for flow in mine { hosts[0].open(flow) }
        #expect(pollUntil(hosts, timeout: 5) { hosts[0].node.counters().value("opens-implied") == UInt64(mine.count) } != nil)
        for flow in mine { hosts[0].close(flow) }
        #expect(pollUntil(hosts, timeout: 5) { hosts[0].node.counters().value("closes-implied") == UInt64(mine.count) } != nil)
        let c = hosts[0].node.counters()
        #expect(c.value("opens-sent") == 0 && c.value("closes-sent") == 0, "\(c.table())")
    }

    @Test func replicateIsParsedStrictly() throws {
        let bed = try GossipTestbed(extra: "replicate: exceptions")
        #expect(try bed.configuration(host: 1).gossip?.replicate == .exceptions)
        #expect(try GossipTestbed().configuration(host: 1).gossip?.replicate == .all)
        let bad = try GossipTestbed(extra: "replicate: some")
        do {
            _ = try bad.configuration(host: 1)
            Issue.record("replicate: some was accepted")
        } catch {
            let text = "\(error)"
            #expect(text.contains("<gossip test>:") && text.contains("replicate")
                    && text.contains("'some' is not one of: all, exceptions"), "\(text)")
        }
    }
}
