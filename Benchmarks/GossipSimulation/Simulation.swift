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
        /// `cluster.gossip.replicate`: all, or exceptions (then the tables change mid-run).
        var replicate = "all"
        var exceptions: Bool { replicate == "exceptions" }
    }

    enum Mode: UInt64 { case fill = 0, steady = 1, quiet = 2, stop = 3 }

    let options: Options
    var config: SimConfig
    /// The table generation the workers reload their hosts to (exceptions runs: 1 mid-run).
    private let tablesWanted = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    var hosts: [SimHost] = []
    private let mode = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private let probeLock = NSLock()
    private var newProbes: [(host: Int, key: sy_flow_key, at: UInt64)] = []
    private var lastProbe: [UInt64]
    private var serial = 0

    init(_ options: Options) throws {
        self.options = options
        // A table for every host's flows; with exceptions, for its own flows and the exceptions of
        // one table change (at most about as many again).
        let entries = options.exceptions ? 2 * options.connections : options.hosts * options.connections
        let capacity = max(1024, (entries * 5 / 4 + 1023) / 1024 * 1024)
        let ports = try SimConfig.freePorts(options.hosts + 1)
        config = SimConfig(hosts: options.hosts, capacity: capacity, ports: Array(ports.prefix(options.hosts)),
                           gossipExtra: options.gossipExtra + (options.exceptions ? ["replicate: exceptions"] : []),
                           multicastPort: options.multicast ? ports.last! : nil)
        lastProbe = [UInt64](repeating: 0, count: options.hosts)
        mode.initialize(to: Mode.fill.rawValue)
        tablesWanted.initialize(to: 0)
    }

    deinit {
        mode.deallocate()
        tablesWanted.deallocate()
    }

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
            host.pickOwn = o.exceptions
            hosts.append(host)
        }
        let rssNodes = residentBytes()
        // A table's memory: its rte_hash, ring and FlowEntry array (32 B per position) on DPDK's
        // heap, and per position a repair mark (4 B) on the Swift heap.
        let positions = hosts[0].runtime.connections.positions
        let tableBytes = Double(dpdkHeapBytes() - heapBase) / Double(o.hosts) + Double(positions * 4)
        say("\(o.hosts) nodes on 127.0.0.1 ports \(config.ports.first!)…, table capacity \(config.capacity) each; loss \(o.loss), delay \(o.delayMs) ms + jitter \(o.jitterMs) ms; "
            + (o.multicast ? "multicast to 239.255.7.1:\(config.multicastPort!)" : "unicast")
            + (o.exceptions ? "; replicate: exceptions (each host opens the flows the table picks for it)" : ""))

        // Fill: every host opens its C flows (in about 2 s, or slower where the cluster would apply
        // more than 10^5 records per second: the fill is not what is measured); then wait until
        // every table holds all of them.
        let workers = startWorkers()
        let total = o.hosts * o.connections
        // Exceptions: each table holds its own flows only (every open agrees with the tables).
        let filledCount = o.exceptions ? o.connections : total
        let fillStart = GossipClock.monotonicNanoseconds()
        let fillLimit = UInt64(max(120, 3 * Double(o.connections) / fillRate) * 1e9)
        var converged = false
        while GossipClock.monotonicNanoseconds() - fillStart < fillLimit {
            usleep(50_000)
            if hosts.allSatisfy({ $0.liveCount >= o.connections }) { setMode(.quiet) }
            if hosts.allSatisfy({ $0.node.isSynchronised && $0.runtime.connections.count == filledCount }) {
                converged = true
                break
            }
        }
        setMode(.quiet)
        let fillSeconds = Double(GossipClock.monotonicNanoseconds() - fillStart) / 1e9
        let rssFilled = residentBytes()
        say(converged ? String(format: "filled: every table holds %d entries after %.1f s", filledCount, fillSeconds)
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
        // Exceptions: the tables change at half time (one backend added on host 1, every host
        // reloads); every flow whose pick moved off its owner is a probe from that moment.
        let changeAt = start + UInt64(o.seconds * 1e9 / 2)
        var changed = !o.exceptions
        var mid = before, midTime = start, midFlood = 0
        var exceptionCount = 0
        var exceptionProbes = 0
        var exceptionPropagation: [Double] = []
        var burstEnd: UInt64 = 0
        var closedProbes = 0
        while true {
            let now = GossipClock.monotonicNanoseconds()
            if now >= end { break }
            if !changed && now >= changeAt {
                changed = true
                mid = hosts.map { $0.node.counters() }
                midTime = now
                midFlood = flood.sent
                config.backendAdded = true
                sy_atomic_store_u64(tablesWanted, 1)
                let directory = try config.directory()
                var key = sy_flow_key()
                for host in hosts {
                    let view = host.view
                    for position in 0..<host.runtime.connections.positions {
                        let control = sy_atomic_load_u64(&view.entries[position].control)
                        guard FlowEntry.isValid(control), FlowEntry.owner(control) == UInt16(host.id),
                              sy_flow_table_key_at(view.hash, Int32(position), &key) == 0,
                              directory.pickedHost(key: &key) != UInt16(host.id)
                        else { continue }
                        pending.append((host.id, key, now))
                        exceptionCount += 1
                    }
                }
                exceptionProbes = pending.count
                say("table change at \(String(format: "%.1f", Double(now - start) / 1e9)) s: backend 198.18.101.1 added on host 1; \(exceptionCount) flows now disagree with the tables (exceptions)")
            }
            pending += probeLock.withLock { () -> [(host: Int, key: sy_flow_key, at: UInt64)] in
                defer { newProbes.removeAll(keepingCapacity: true) }
                return newProbes
            }
            removeArrived()
            usleep(500)
        }
        let elapsed = Double(GossipClock.monotonicNanoseconds() - start) / 1e9
        setMode(.quiet)
        flood.stop()
        let after = hosts.map { $0.node.counters() }
        // Exceptions still on their way when the window ends (a datagram lost to the injected loss
        // waits for the next digest repair, about a second): up to 5 s more, without the flood or
        // new flows, so that "not everywhere at the end" counts the lost, not the late. Their times
        // count in the propagation figures. Rates and bytes stay those of the window (`after`).
        let drainEnd = GossipClock.monotonicNanoseconds() + 5_000_000_000
        while o.exceptions && !pending.isEmpty && GossipClock.monotonicNanoseconds() < drainEnd {
            removeArrived()
            usleep(500)
        }
        lost = pending.count
        stopWorkers(workers)

        /// Takes out of `pending` every probe that is now in every other host's table.
        func removeArrived() {
            pending.removeAll { probe in
                var key = probe.key
                if o.exceptions {
                    // An exception whose flow closed (churn) before it reached everyone: not a probe.
                    let view = hosts[probe.host - 1].view
                    if sy_flow_table_lookup(view.hash, &key, sy_flow_hash(view.hash, &key)) < 0 {
                        closedProbes += 1
                        return true
                    }
                }
                for host in hosts where host.id != probe.host {
                    let view = host.view
                    if sy_flow_table_lookup(view.hash, &key, sy_flow_hash(view.hash, &key)) < 0 { return false }
                }
                let ms = Double(GossipClock.monotonicNanoseconds() - probe.at) / 1e6
                if o.exceptions {
                    exceptionPropagation.append(ms)
                    burstEnd = GossipClock.monotonicNanoseconds()
                } else {
                    propagation.append(ms)
                }
                return true
            }
        }

        let h = Double(o.hosts)
        if o.exceptions { propagation = exceptionPropagation }
        // Exceptions runs: the steady window (before the table change) gives the events, the
        // model check and the steady bytes; the burst window (after it) the re-announce burst.
        let steadyEnd = o.exceptions ? mid : after
        let steadySeconds = o.exceptions ? Double(midTime - start) / 1e9 : elapsed
        func delta(_ name: String, _ a: [GossipCounters], _ b: [GossipCounters]) -> Double {
            Double(zip(a, b).reduce(UInt64(0)) { $0 + ($1.1.value(name) &- $1.0.value(name)) })
        }
        func delta(_ name: String) -> Double { delta(name, before, after) }
        /// Wire bytes per host and second sent and received between two snapshots.
        func bytes(_ a: [GossipCounters], _ b: [GossipCounters], seconds: Double, floodSent: Int) -> (sent: Double, received: Double) {
            let sent = (delta("bytes-sent", a, b) + 42 * delta("datagrams-sent", a, b)) / h / seconds
            // The flood's datagrams are counted by the receivers, but they are not gossip.
            let floodBytes = Double(floodSent) * Double(GossipWire.headerSize + 16 + GossipWire.macSize + 42)
            // Multicast: every node also reads its own datagrams back from the group (loop on, one
            // machine) and ignores them; they are taken out, as the share of its sent bytes that went
            // to the group.
            let ownLooped = delta("datagrams-sent", a, b) > 0
                ? (delta("bytes-sent", a, b) + 42 * delta("datagrams-sent", a, b)) * delta("multicast-sent", a, b) / delta("datagrams-sent", a, b) : 0
            let received = (delta("bytes-received", a, b) + 42 * delta("datagrams-received", a, b) - floodBytes - ownLooped) / h / seconds
            return (sent, received)
        }
        let (sentBytes, receivedBytes) = bytes(before, after, seconds: elapsed, floodSent: flood.sent)
        let events = (delta("opens-sent", before, steadyEnd) + delta("closes-sent", before, steadyEnd)) / h / steadySeconds
        let polls = delta("polls", before, steadyEnd) / h / steadySeconds
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
        func d(_ name: String) -> Double { delta(name, before, steadyEnd) }
        let flowsDatagrams = d("sent-flows") / h / steadySeconds
        let explained = copies * (d("sent-heartbeat") * (80 + 42) + d("sent-digest") * (836 + 42)
            + d("sent-flows") * (GossipModel.flowsOverhead + 42) + (d("opens-sent") + d("closes-sent")) * 24) / h / steadySeconds
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
        say(String(format: "  propagation to every other host: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d probes, %d not everywhere at the end)%@",
                   percentile(0.5), percentile(0.99), propagation.last ?? 0, propagation.count, lost,
                   o.exceptions ? " (probes: the exceptions, from the table change)" : ""))
        var burstSeconds = 0.0, burstReceived = 0.0, burstSent = 0.0, steadySent = 0.0, steadyReceived = 0.0
        if o.exceptions {
            (steadySent, steadyReceived) = bytes(before, mid, seconds: steadySeconds, floodSent: midFlood)
            let burstWindow = Double(end - midTime) / 1e9
            (burstSent, burstReceived) = bytes(mid, after, seconds: burstWindow, floodSent: flood.sent - midFlood)
            burstSeconds = burstEnd > midTime ? Double(burstEnd - midTime) / 1e9 : 0
            say(String(format: "  exceptions: opens-implied %.0f, opens-sent %.0f (steady window %.1f s); bytes/s per host before the change: sent %.0f, received %.0f",
                       delta("opens-implied", before, mid), delta("opens-sent", before, mid), steadySeconds, steadySent, steadyReceived))
            say(String(format: "  table change: %d exceptions (%.2f%% of all connections), exceptions-announced %.0f, table-rescans %.0f; every one on every peer after %.3f s (%d of %d probes; %d closed first); bytes/s per host after the change (%.1f s): sent %.0f, received %.0f",
                       exceptionCount, 100 * Double(exceptionCount) / Double(total), delta("exceptions-announced", mid, after),
                       delta("table-rescans", mid, after), burstSeconds, exceptionPropagation.count, exceptionProbes, closedProbes,
                       burstWindow, burstSent, burstReceived))
        }
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
            ? String(format: "sync: restarted host 1 synchronised with %d entries in %.2f s: %d records from %d peers (%@), %.0f records/s",
                     expected, syncSeconds, syncRecords, o.hosts - 1,
                     o.exceptions ? "each sends its own exceptions, two also host 1's" : "each sends its whole table", Double(syncRecords) / syncSeconds)
            : "sync: restarted host 1 NOT synchronised after 300 s (\(restarted.mapSize) of \(expected) entries)")

        // Memory per host: its table as allocated (all of it is resident with hugepages; here,
        // without, only what was touched), its owned set (24 B per own flow), its receive batch.
        let ownedSet = o.exceptions ? Double(after.map(\.ownedFlows).max() ?? 0) : Double(o.connections)
        let memoryPerHost = tableBytes + 24 * ownedSet + Double(ReceiveBatchSize.bytes)
        let held = after.map(\.mapSize).max() ?? 0
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
            ("held_entries", "\(held)"), ("exceptions", "\(exceptionCount)"), ("burst_s", f(burstSeconds)),
            ("burst_received_bps", f(burstReceived)), ("burst_sent_bps", f(burstSent)),
            ("steady_sent_bps", f(steadySent)), ("steady_received_bps", f(steadyReceived)),
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
            let wanted = Int(sy_atomic_load_u64(tablesWanted))
            for host in mine {
                if host.tablesVersion < wanted {
                    // A reload: the same connections, the new tables (the engine's ClusterRuntime(reloading:)).
                    host.runtime = try! config.reloaded(host.runtime, host: host.id)
                    host.tablesVersion = wanted
                }
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
                        if !o.exceptions && now - lastProbe[id] >= 100_000_000 {
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
