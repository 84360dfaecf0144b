import CDPDK
import Foundation
import SwitchyardCluster
import SwitchyardGossip
import SwitchyardTesting
import Testing

/// The control thread applies gossip (remote entries inserted and removed) as fast as it can
/// while two reader threads, registered on an RCU QSBR variable as data-plane lcores are, look
/// flows up without locks and check every entry they find. Runs ~2 s; prints the rate.
@Suite("gossip stress", .serialized)
struct GossipStressTests {
    /// Flow n is owned by host 2 when n is even, host 3 when odd; its backend is a function of n.
    static let universe = 12000
    static func flow(_ n: Int) -> TestFlow { TestFlow(client: n, family: n % 5 == 0 ? 6 : 4, udp: n % 7 == 0) }
    static func owner(_ n: Int) -> Int { n % 2 == 0 ? 2 : 3 }

    final class Shared: @unchecked Sendable {
        var qsbr: OpaquePointer?
        let stop = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        var lookups = [UInt64](repeating: 0, count: 2)
        var found = [UInt64](repeating: 0, count: 2)
        var wrong = [String](repeating: "", count: 2)
        var wrongCount = [Int](repeating: 0, count: 2)
        init() { stop.initialize(to: 0) }
        deinit { stop.deallocate() }
    }

    @Test func readersNeverSeeAWrongEntryWhileGossipIsApplied() throws {
        let bed = try GossipTestbed()
        guard let qsbr = sy_qsbr_create(UInt32(sy_max_lcore())) else {
            Issue.record("cannot create the QSBR variable")
            return
        }
        defer { sy_qsbr_free(qsbr) }
        let host = try bed.makeNode(host: 1, capacity: 16384, qsbr: qsbr)
        let view = host.view
        let keys = (0..<Self.universe).map { Self.flow($0).key }
        let hashes = keys.map { key -> UInt32 in
            var k = key
            return sy_flow_hash(view.hash, &k)
        }
        let backends = (0..<Self.universe).map { Self.flow($0).backend(owner: Self.owner($0)) }
        let shared = Shared()
        shared.qsbr = qsbr

        let done = DispatchGroup()
        for reader in 0..<2 {
            done.enter()
            Thread {
                _ = sy_thread_ensure_lcore()
                let lcore = sy_lcore_id()
                let qsbr = shared.qsbr!
                _ = sy_qsbr_register(qsbr, lcore)
                var random = UInt64(reader + 1) &* 0x9e37_79b9_7f4a_7c15
                var lookups: UInt64 = 0, found: UInt64 = 0
                var key = sy_flow_key(), stored = sy_flow_key()
                while sy_atomic_load_u64(shared.stop) == 0 {
                    for _ in 0..<64 {
                        random ^= random << 13; random ^= random >> 7; random ^= random << 17
                        let n = Int(random % UInt64(Self.universe))
                        key = keys[n]
                        lookups += 1
                        let position = sy_flow_table_lookup(view.hash, &key, hashes[n])
                        guard position >= 0 else { continue }
                        let entry = view.entries + Int(position)
                        let control = sy_atomic_load_u64(&entry.pointee.control)
                        guard FlowEntry.isValid(control) else { continue } // being removed
                        found += 1
                        let high = entry.pointee.backendHigh, low = entry.pointee.backendLow
                        var problem = ""
                        if FlowEntry.state(control) != FlowState.remote.rawValue { problem = "state \(FlowEntry.state(control))" }
                        if Int(FlowEntry.owner(control)) != Self.owner(n) { problem = "owner \(FlowEntry.owner(control))" }
                        if FlowEntry.family(control) != key.family { problem = "family" }
                        if high != backends[n].high || low != backends[n].low { problem = "backend" }
                        // The slot still holds this key: RCU kept it from being reused under us.
                        let rc = sy_flow_table_key_at(view.hash, position, &stored)
                        if rc == 0 && memcmp(&stored, &key, 40) != 0 { problem = "key at position" }
                        if !problem.isEmpty {
                            shared.wrongCount[reader] += 1
                            shared.wrong[reader] = "flow \(n): \(problem)"
                        }
                    }
                    sy_qsbr_quiescent(qsbr, lcore)
                }
                sy_qsbr_unregister(qsbr, lcore)
                shared.lookups[reader] = lookups
                shared.found[reader] = found
                done.leave()
            }.start()
        }

        // The control thread: batches of opens for absent flows and closes for present ones, from
        // hosts 2 and 3, as authentic datagrams through the node's full receive path.
        var senders = [2: TestSender(host: 2), 3: TestSender(host: 3)]
        senders[2]!.verify(with: host.node, from: bed.endpoint(2))
        senders[3]!.verify(with: host.node, from: bed.endpoint(3))
        var present = [Bool](repeating: false, count: Self.universe)
        var random: UInt64 = 0x1234_5678
        var records = 0, datagrams = 0
        let start = Date()
        while Date().timeIntervalSince(start) < 2 {
            for owner in [2, 3] {
                var batch: [FlowRecord] = []
                var inBatch = Set<Int>()
                var bytes = GossipWire.flowsOverhead
                while true {
                    random ^= random << 13; random ^= random >> 7; random ^= random << 17
                    let n = Int(random % UInt64(Self.universe / 2)) * 2 + (owner == 2 ? 0 : 1)
                    bytes += keys[n].family == 4 ? 24 : 60
                    if bytes > GossipWire.maxPayload { break } // a full datagram
                    guard inBatch.insert(n).inserted else { continue }
                    let b = backends[n]
                    batch.append(FlowRecord(op: present[n] ? .close : .open, key: keys[n], owner: UInt16(owner),
                                            backendHigh: b.high, backendLow: b.low, backendPortNetworkOrder: UInt16(8080).bigEndian))
                    present[n].toggle()
                }
                let datagram = senders[owner]!.datagram(.flows(batch))
                #expect(host.node.handle(datagram, from: bed.endpoint(owner)) == nil)
                records += batch.count
                datagrams += 1
            }
        }
        let elapsed = Date().timeIntervalSince(start)
        sy_atomic_store_u64(shared.stop, 1)
        done.wait()

        let wrong = shared.wrongCount.reduce(0, +)
        #expect(wrong == 0, "readers saw wrong entries: \(shared.wrong)")
        #expect(shared.found.allSatisfy { $0 > 0 }, "readers found nothing: the test would prove nothing")
        // The table is exactly what was applied.
        let table = host.snapshot()
        #expect(table.count == present.filter { $0 }.count)
        for n in 0..<Self.universe where present[n] {
            #expect(table[Self.flow(n)]?.owner == Self.owner(n))
        }
        let c = host.node.counters()
        #expect(c.value("opens-applied") + c.value("closes-applied") == UInt64(records))
        #expect(c.value("table-full") == 0)
        print(String(format: "gossip stress: %d records applied in %.2f s = %.0f records/s (%.0f datagrams/s); readers: %d lookups, %d hits, %d wrong",
                     records, elapsed, Double(records) / elapsed, Double(datagrams) / elapsed,
                     shared.lookups.reduce(0, +), shared.found.reduce(0, +), wrong))
    }
}
