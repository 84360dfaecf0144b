import CDPDK
import Foundation
import Glibc
import SwitchyardCluster
import SwitchyardGossip

/// One cluster size, in this process: H hosts, filled to C connections each, then churned at
/// C / lifetime opens (and as many closes) per second and host while loss, delay and a flood are
/// injected; then host 1 restarts with an empty table and takes the whole state back by sync.
///
///     fill ──► converged (every table holds H × C) ──► measure `seconds` (churn, probes, flood)
///          ──► restart host 1 ──► synchronised with H × C entries (sync_s)
///
/// Worker threads poll the nodes (each its share, every 10 ms like the engine's control thread)
/// and open and close their flows; the main thread checks probes: every open of a host at most
/// every 100 ms is a probe, and its propagation is the time until every other host's table has it.
final class Simulation: @unchecked Sendable {
    struct Options {
        var hosts = 8
        var connections = 200
        var lifetime = 300.0
        var seconds = 5.0
        var loss = 0.01
        var delayMs = 1.0
        var jitterMs = 1.0
        var flood = 10_000
        var threads = 2
        var multicast = false
        var gossipExtra: [String] = []
    }

    enum Mode: UInt64 { case fill = 0, steady = 1, quiet = 2, stop = 3 }

    let options: Options
    let config: SimConfig
    var hosts: [SimHost] = []
    private let mode = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private let probeLock = NSLock()
    private var newProbes: [(host: Int, key: sy_flow_key, at: UInt64)] = []
    private var lastProbe: [UInt64]
    private var serial = 0

    init(_ options: Options) throws {
        self.options = options
        let capacity = max(1024, (options.hosts * options.connections * 5 / 4 + 1023) / 1024 * 1024)
        let ports = try SimConfig.freePorts(options.hosts + 1)
        config = SimConfig(hosts: options.hosts, capacity: capacity, ports: Array(ports.prefix(options.hosts)),
                           gossipExtra: options.gossipExtra, multicastPort: options.multicast ? ports.last! : nil)
        lastProbe = [UInt64](repeating: 0, count: options.hosts)
        mode.initialize(to: Mode.fill.rawValue)
    }

    deinit { mode.deallocate() }

    func say(_ text: String) {
        print("  [\(options.hosts) hosts] \(text)")
        fflush(stdout)
    }

    /// Runs the whole size; returns the result fields (printed as `result k=v ...`).
    func run() throws -> [(String, String)] {
        let o = options
        let rssBase = residentBytes()
        let heapBase = dpdkHeapBytes()
        for id in 1...o.hosts {
            serial += 1
            let host = try config.makeHost(id, serial: serial)
            host.node.injectedReceiveLoss = o.loss
            host.node.injectedReceiveDelayNs = UInt64(o.delayMs * 1e6)
            host.node.injectedReceiveJitterNs = UInt64(o.jitterMs * 1e6)
            hosts.append(host)
        }
        let rssNodes = residentBytes()
        // A table's memory: its rte_hash and ring on DPDK's heap, and per position a FlowEntry
        // (32 B) and a repair mark (4 B) on the Swift heap.
        let positions = hosts[0].runtime.connections.positions
        let tableBytes = Double(dpdkHeapBytes() - heapBase) / Double(o.hosts) + Double(positions * (MemoryLayout<FlowEntry>.stride + 4))
        say("\(o.hosts) nodes on 127.0.0.1 ports \(config.ports.first!)…, table capacity \(config.capacity) each; loss \(o.loss), delay \(o.delayMs) ms + jitter \(o.jitterMs) ms; "
            + (o.multicast ? "multicast to 239.255.7.1:\(config.multicastPort!)" : "unicast"))

        // Fill: every host opens its C flows (in about 2 s, or slower where the cluster would apply
        // more than 10^5 records per second: the fill is not what is measured); then wait until
        // every table holds all of them.
        let workers = startWorkers()
        let total = o.hosts * o.connections
        let fillStart = GossipClock.monotonicNanoseconds()
        let fillLimit = UInt64(max(120, 3 * Double(o.connections) / fillRate) * 1e9)
        var converged = false
        while GossipClock.monotonicNanoseconds() - fillStart < fillLimit {
            usleep(50_000)
            if hosts.allSatisfy({ $0.liveCount >= o.connections }) { setMode(.quiet) }
            if hosts.allSatisfy({ $0.node.isSynchronised && $0.runtime.connections.count == total }) {
                converged = true
                break
            }
        }
        setMode(.quiet)
        let fillSeconds = Double(GossipClock.monotonicNanoseconds() - fillStart) / 1e9
        let rssFilled = residentBytes()
        say(converged ? String(format: "filled: every table holds %d entries after %.1f s", total, fillSeconds)
            : "NOT converged after \(Int(fillSeconds)) s: tables hold \(hosts.map { $0.runtime.connections.count }.min()!)…\(hosts.map { $0.runtime.connections.count }.max()!) of \(total)")

        // Measure: churn, probes, the flood.
        let before = hosts.map { $0.node.counters() }
        let flood = Flood(rate: o.flood, fromPort: config.ports[1 % config.ports.count], targets: config.ports.enumerated().filter { $0.offset != 1 }.map(\.element))
        flood.start()
        probeLock.withLock { newProbes.removeAll() }
        setMode(.steady)
        let start = GossipClock.monotonicNanoseconds()
        let end = start + UInt64(o.seconds * 1e9)
        var pending: [(host: Int, key: sy_flow_key, at: UInt64)] = []
        var propagation: [Double] = []
        var lost = 0
        while true {
            let now = GossipClock.monotonicNanoseconds()
            if now >= end { break }
            pending += probeLock.withLock { () -> [(host: Int, key: sy_flow_key, at: UInt64)] in
                defer { newProbes.removeAll(keepingCapacity: true) }
                return newProbes
            }
            pending.removeAll { probe in
                var key = probe.key
                for host in hosts where host.id != probe.host {
                    let view = host.view
                    if sy_flow_table_lookup(view.hash, &key, sy_flow_hash(view.hash, &key)) < 0 { return false }
                }
                propagation.append(Double(GossipClock.monotonicNanoseconds() - probe.at) / 1e6)
                return true
            }
            usleep(500)
        }
        let elapsed = Double(GossipClock.monotonicNanoseconds() - start) / 1e9
        setMode(.quiet)
        flood.stop()
        lost = pending.count
        let after = hosts.map { $0.node.counters() }
        stopWorkers(workers)

        func delta(_ name: String) -> Double {
            Double(zip(before, after).reduce(UInt64(0)) { $0 + ($1.1.value(name) &- $1.0.value(name)) })
        }
        let h = Double(o.hosts)
        let events = (delta("opens-sent") + delta("closes-sent")) / h / elapsed
        let sentBytes = (delta("bytes-sent") + 42 * delta("datagrams-sent")) / h / elapsed
        // The flood's datagrams are counted by the receivers, but they are not gossip.
        let floodBytes = Double(flood.sent) * Double(GossipWire.headerSize + 16 + GossipWire.macSize + 42)
        // Multicast: every node also reads its own datagrams back from the group (loop on, one
        // machine) and ignores them; they are taken out, as the share of its sent bytes that went
        // to the group.
        let ownLooped = delta("datagrams-sent") > 0
            ? (delta("bytes-sent") + 42 * delta("datagrams-sent")) * delta("multicast-sent") / delta("datagrams-sent") : 0
        let receivedBytes = (delta("bytes-received") + 42 * delta("datagrams-received") - floodBytes - ownLooped) / h / elapsed
        let polls = delta("polls") / h / elapsed
        let floodDrops = zip(before, after).reduce(0.0) { $0 + Double($1.1.droppedTotal &- $1.0.droppedTotal) }
            - delta("dropped-injected-loss")
        propagation.sort()
        func percentile(_ p: Double) -> Double {
            propagation.isEmpty ? 0 : propagation[min(propagation.count - 1, Int(Double(propagation.count) * p))]
        }
        let model = GossipModel(hosts: o.hosts, eventsPerSecond: events, pollsPerSecond: polls,
                                heartbeatMs: hosts[0].node.settings.heartbeatMilliseconds,
                                digestMs: hosts[0].node.settings.digestIntervalMilliseconds, multicast: o.multicast)
        say(String(format: "measured %.1f s: events/s per host %.1f (cluster %.0f), polls/s per host %.0f", elapsed, events, events * h, polls))
        // What the model covers, counted: heartbeats, digests and flow batches, one copy per peer.
        let copies = o.multicast ? 1 : h - 1
        let flowsDatagrams = delta("sent-flows") / h / elapsed
        let explained = copies * (delta("sent-heartbeat") * (80 + 42) + delta("sent-digest") * (836 + 42)
            + delta("sent-flows") * (GossipModel.flowsOverhead + 42) + (delta("opens-sent") + delta("closes-sent")) * 24) / h / elapsed
        say(String(format: "  bytes/s per host: sent %.0f, received %.0f (gossip only: UDP payload + 42 B of Ethernet/IP/UDP headers per datagram)",
                   sentBytes, receivedBytes))
        say(String(format: "    of which heartbeats, digests and flow batches %.0f (the wire model says %.0f; flow batches %.2f/s, model %.2f/s), the rest challenges and repairs",
                   explained, model.sentBytesPerSecond, flowsDatagrams, model.flowsDatagramsPerSecond))
        let kinds = ["heartbeat", "flows", "digest", "sync-request", "sync-response", "challenge"]
        say("  sent per host and second: " + kinds.map { String(format: "%@ %.1f", $0, delta("sent-" + $0) / h / elapsed) }.joined(separator: ", ")
            + String(format: "; datagrams %.1f (%@)", delta("datagrams-sent") / h / elapsed,
                     o.multicast ? String(format: "%.1f to the group", delta("multicast-sent") / h / elapsed) : "unicast: one per peer"))
        say(String(format: "  repairs per host and second: digest-mismatches %.2f, repairs-completed %.2f, swept-entries %.2f",
                   delta("digest-mismatches") / h / elapsed, delta("repairs-completed") / h / elapsed, delta("swept-entries") / h / elapsed))
        say(String(format: "  propagation to every other host: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d probes, %d not everywhere at the end)",
                   percentile(0.5), percentile(0.99), propagation.last ?? 0, propagation.count, lost))
        say(String(format: "  flood: %d bogus datagrams sent (%@), %.0f dropped by the checks; peers-down %.0f, kernel-drops %.0f, injected loss %.0f",
                   flood.sent, flood.spoofed ? "spoofed from host 2's address" : "from a port of its own", floodDrops,
                   delta("peers-down"), delta("kernel-drops"), delta("dropped-injected-loss")))

        // Sync: host 1 restarts with an empty table next to peers holding H × C entries.
        let expected = hosts.reduce(0) { $0 + $1.node.counters().ownedFlows }
        // The old node goes first: its socket must be closed before the new one binds the port.
        let restartedHost = hosts[0]
        restartedHost.node = nil
        restartedHost.runtime = nil
        serial += 1
        (restartedHost.runtime, restartedHost.node) = try config.makeParts(1, serial: serial)
        restartedHost.node.injectedReceiveLoss = o.loss
        restartedHost.node.injectedReceiveDelayNs = UInt64(o.delayMs * 1e6)
        restartedHost.node.injectedReceiveJitterNs = UInt64(o.jitterMs * 1e6)
        let syncStart = GossipClock.monotonicNanoseconds()
        var syncSeconds = -1.0
        while GossipClock.monotonicNanoseconds() - syncStart < 300_000_000_000 {
            let round = GossipClock.monotonicNanoseconds()
            for host in hosts { host.poll() }
            if hosts[0].node.isSynchronised && hosts[0].runtime.connections.count >= expected {
                syncSeconds = Double(GossipClock.monotonicNanoseconds() - syncStart) / 1e9
                break
            }
            let spent = GossipClock.monotonicNanoseconds() - round
            if spent < 10_000_000 { usleep(UInt32((10_000_000 - spent) / 1000)) }
        }
        let restarted = hosts[0].node.counters()
        let syncRecords = restarted.value("sync-records-applied")
        say(syncSeconds >= 0
            ? String(format: "sync: restarted host 1 synchronised with %d entries in %.2f s: %d records from %d peers (each sends its whole table), %.0f records/s",
                     expected, syncSeconds, syncRecords, o.hosts - 1, Double(syncRecords) / syncSeconds)
            : "sync: restarted host 1 NOT synchronised after 300 s (\(restarted.mapSize) of \(expected) entries)")

        // Memory per host: its table as allocated (all of it is resident with hugepages; here,
        // without, only what was touched), its owned set (24 B per own flow), its receive batch.
        let memoryPerHost = tableBytes + 24 * Double(o.connections) + Double(ReceiveBatchSize.bytes)
        let residentPerHost = Double(rssFilled - rssBase) / h
        say(String(format: "memory: %.1f MB per host: its table %.1f MB as allocated (capacity %d: %.0f B per slot, DPDK heap and entry arrays), owned set, receive batch; resident here %.1f MB",
                   memoryPerHost / 1e6, tableBytes / 1e6, config.capacity, tableBytes / Double(config.capacity), residentPerHost / 1e6))
        return [
            ("hosts", "\(o.hosts)"), ("connections", "\(o.connections)"), ("lifetime", "\(o.lifetime)"),
            ("converged", converged ? "1" : "0"), ("events_per_s", f(events)), ("polls_per_s", f(polls)),
            ("sent_bps", f(sentBytes)), ("received_bps", f(receivedBytes)), ("model_sent_bps", f(model.sentBytesPerSecond)),
            ("explained_bps", f(explained)),
            ("p50_ms", f(percentile(0.5))), ("p99_ms", f(percentile(0.99))), ("probes", "\(propagation.count)"),
            ("sync_s", f(syncSeconds)), ("sync_records", "\(syncRecords)"),
            ("node_bytes", f(Double(rssNodes - rssBase) / h)),
            ("memory_bytes", f(memoryPerHost)), ("resident_bytes", f(residentPerHost)), ("slot_bytes", f(Double(rssNodes - rssBase) / h / Double(config.capacity))),
            ("entry_bytes", f(Double(rssFilled - rssNodes) / h / Double(total))), ("capacity", "\(config.capacity)"),
            ("table_bytes", f(tableBytes)),
            ("peers_down", f(delta("peers-down"))), ("flood_sent", "\(flood.sent)"),
        ]
    }

    private func f(_ value: Double) -> String { String(format: "%.4f", value) }

    /// Opens per second and host while filling: C in 2 s, at most 10^5 records applied per second
    /// in the whole cluster (each open is applied by H - 1 peers).
    var fillRate: Double {
        min(Double(options.connections) / 2, 100_000 / Double(options.hosts * (options.hosts - 1)))
    }

    private func setMode(_ m: Mode) { sy_atomic_store_u64(mode, m.rawValue) }

    // MARK: - Workers

    private func startWorkers() -> [DispatchSemaphore] {
        (0..<max(1, options.threads)).map { index in
            let done = DispatchSemaphore(value: 0)
            let thread = Thread { [self] in
                work(index)
                done.signal()
            }
            thread.start()
            return done
        }
    }

    private func stopWorkers(_ workers: [DispatchSemaphore]) {
        setMode(.stop)
        workers.forEach { $0.wait() }
        setMode(.quiet)
    }

    /// Polls hosts `index`, `index + threads`, … every 10 ms; opens and closes their flows.
    private func work(_ index: Int) {
        let mine = stride(from: index, to: hosts.count, by: max(1, options.threads)).map { hosts[$0] }
        let o = options
        let steadyRate = Double(o.connections) / o.lifetime
        var last = GossipClock.monotonicNanoseconds()
        while true {
            let m = Mode(rawValue: sy_atomic_load_u64(mode)) ?? .stop
            if m == .stop { return }
            let now = GossipClock.monotonicNanoseconds()
            let dt = Double(now - last) / 1e9
            last = now
            for host in mine {
                switch m {
                case .fill:
                    host.credit += fillRate * dt
                    while host.credit >= 1 && host.liveCount < o.connections {
                        host.open()
                        host.credit -= 1
                    }
                case .steady:
                    host.credit += steadyRate * dt
                    while host.credit >= 1 {
                        host.open()
                        host.credit -= 1
                        let id = host.id - 1
                        if now - lastProbe[id] >= 100_000_000 {
                            lastProbe[id] = now
                            let key = host.key(host.nextFlow - 1)
                            probeLock.withLock { newProbes.append((host.id, key, now)) }
                        }
                        while host.liveCount > o.connections { host.closeOldest() }
                    }
                default:
                    host.credit = 0
                }
                host.poll()
            }
            let spent = GossipClock.monotonicNanoseconds() - now
            if spent < 10_000_000 { usleep(UInt32((10_000_000 - spent) / 1000)) }
        }
    }
}

/// What a node's receive batch holds (64 datagram buffers of 2048 B and their headers).
enum ReceiveBatchSize {
    static let bytes = 64 * (2048 + 64 + 16 + 64 + 16)
}
