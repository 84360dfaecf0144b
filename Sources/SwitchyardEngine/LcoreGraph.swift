import CDPDK
import SwitchyardCore

/// The stage graph of one lcore: its sources, its stage instances and the edges between them.
///
///     source (rx queue | ring) ──► node ──► edge[disposition] ──┬─► node ...   (same lcore)
///                                                               ├─► port tx   (this lcore's tx queue)
///                                                               ├─► ring      (another lcore)
///                                                               └─► drop      (edge 0: freed, counted)
///
/// A node runs its stage once per burst (one dynamic dispatch), then sends its packets on, depth
/// first. When every packet took the same disposition (the common case: rte_graph's "home run"),
/// the burst's own vector goes to that edge as it is, with no copy. Otherwise each packet is moved
/// to its disposition's edge buffer and each non-empty edge is sent on:
///
///     dispositions [v v v v]  ──► edge[v] ◄── the vector itself (no copy)
///     dispositions [v d v r]  ──► edge[v].buffer [p0 p2], edge[d].buffer [p1], edge[r].buffer [p3]
///
/// Passing the vector on is safe because nothing writes it until the walk returns: it is the
/// source's rx vector (refilled at the next poll) or an edge buffer of an upstream node, and the
/// wiring is acyclic (validated), so no node is re-entered while it runs. Everything here is
/// allocated when the graph is built; running it allocates nothing and touches no reference count.
///
/// A graph is immutable once published: hot reload builds a new graph and swaps the pointer the
/// lcore reads at the top of each loop (see `LcoreRuntime`).
///
/// Capture (`switchyard ctl capture`): each source burst and each node run first reads the capture
/// slot (one load, one predictable branch). Empty: the walk below. Armed: `runCaptured`, the same
/// walk that also copies the packets crossing the captured edge (CaptureTap.swift).
public final class LcoreGraph {
    enum EdgeKind: UInt8 {
        case drop, node, port, ring
    }

    struct Edge {
        var kind: EdgeKind
        var node: Int = 0
        var port: UInt16 = 0
        var queue: UInt16 = 0
        var ring: OpaquePointer? = nil
        /// tx: [sent, tx-full]; ring: [enqueued, ring-full].
        var sinkCounters: UnsafeMutablePointer<UInt64>? = nil
        var buffer: MbufVector
        var count: Int = 0
    }

    struct Node {
        var runner: Unmanaged<StageRunner>
        var edges: UnsafeMutablePointer<Edge>
        var edgeCount: Int
        var dispositions: UnsafeMutablePointer<UInt8>
        /// [in, disposition 0, disposition 1, ...]
        var counters: UnsafeMutablePointer<UInt64>
        /// The capture service's number for this stage instance (`sy_capture_tap.stage`).
        var stageKey: UInt16
        var dropReasons: DropReasons
    }

    struct Source {
        var isRing: Bool
        var port: UInt16
        var queue: UInt16
        var ring: OpaquePointer?
        var node: Int
        var counters: UnsafeMutablePointer<UInt64>
    }

    public let lcore: Int
    let burstSize: Int
    let txRetries: Int
    let nodes: UnsafeMutableBufferPointer<Node>
    let sources: UnsafeMutableBufferPointer<Source>
    let rxBuffer: MbufVector
    /// The active capture (`sy_capture_tap`), or nil; and this lcore's capture counters.
    let captureSlot: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    let captureCounters: UnsafeMutablePointer<UInt64>
    /// Keeps the runners and counter blocks alive; the hot path uses the unmanaged copies.
    private let runners: [StageRunner]
    private let blocks: [CounterBlock]
    private var buffers: [MbufVector] = []
    public let stageNames: [String]

    /// Builds the graph of `lcore` from the configuration.
    init(configuration config: EngineConfiguration, lcore: LcoreSettings, resources: EngineResources,
         services: StageServices,
         counters registry: CounterRegistry, capture: CaptureHookup = .disabled) throws
    {
        self.lcore = lcore.id
        captureSlot = capture.slot
        captureCounters = capture.counters
        burstSize = config.burstSize
        txRetries = 4
        let names = config.stagesReachable(from: lcore)
        stageNames = names
        try Self.checkResources(of: names, lcore: lcore, configuration: config, resources: resources)
        var runners: [StageRunner] = []
        var blocks: [CounterBlock] = []
        var buffers: [MbufVector] = []
        func newBuffer() -> MbufVector {
            let buffer = CacheLines.allocate(OpaquePointer?.self, count: maximumBurstSize, initializedTo: nil)
            buffers.append(buffer)
            return buffer
        }

        let nodes = UnsafeMutableBufferPointer<Node>.allocate(capacity: names.count)
        var built = 0
        func releasePartialGraph() {
            for node in nodes[..<built] { node.edges.deallocate(); node.dispositions.deallocate(); node.dropReasons.deallocate() }
            nodes.deallocate()
            for buffer in buffers { buffer.deallocate() }
        }
        for name in names {
            let stage = config.stage(named: name)!
            let block = registry.makeBlock(scope: "stage \(name)", kind: stage.descriptor.kind, lcore: lcore.id,
                                           counters: EngineCounters.stage(stage.descriptor),
                                           alwaysShown: 1 + stage.descriptor.dispositions.count,
                                           labels: [("stage", name), ("stage_kind", stage.descriptor.kind)])
            blocks.append(block)
            let dispositionCount = stage.descriptor.dispositions.count
            let context = StageContext(instanceName: name, lcoreID: lcore.id,
                                       socketID: Int32(resources.socket(ofLcore: lcore.id)),
                                       burstSize: config.burstSize, ports: resources.portDescriptions,
                                       services: services)
            let runner: StageRunner
            do {
                runner = try stage.descriptor.makeRunner(stage.parameters, context, block.values + 1 + dispositionCount)
            } catch {
                releasePartialGraph()
                throw error
            }
            runners.append(runner)
            // Each edge's count is written at every burst: on lines of this lcore's own.
            let edges = CacheLines.allocate(Edge.self, count: dispositionCount)
            for (index, target) in stage.next.enumerated() {
                var edge = Edge(kind: .drop, buffer: newBuffer())
                switch target {
                case .drop:
                    break
                case .stage(let next):
                    edge.kind = .node
                    edge.node = names.firstIndex(of: next)!
                case .port(let portName):
                    let port = resources.port(named: portName)!
                    let queue = try! resources.txQueue(port: portName, lcore: lcore.id)
                    // One block per (port, lcore): every edge of this lcore to the port shares it.
                    let sink = registry.makeBlock(scope: "tx \(portName)", kind: "tx", lcore: lcore.id,
                                                  counters: EngineCounters.tx,
                                                  labels: [("port", portName), ("queue", String(queue))])
                    blocks.append(sink)
                    edge.kind = .port
                    edge.port = port.portID
                    edge.queue = UInt16(queue)
                    edge.sinkCounters = sink.values
                case .ring(let ringName):
                    let sink = registry.makeBlock(scope: "tx ring:\(ringName)", kind: "ring-out", lcore: lcore.id,
                                                  counters: EngineCounters.ringOut, labels: [("ring", ringName)])
                    blocks.append(sink)
                    edge.kind = .ring
                    edge.ring = resources.ring(named: ringName)!
                    edge.sinkCounters = sink.values
                }
                (edges + index).initialize(to: edge)
            }
            let dispositions = CacheLines.allocate(UInt8.self, count: maximumBurstSize, initializedTo: 0)
            (nodes.baseAddress! + built).initialize(to: Node(
                runner: Unmanaged.passUnretained(runner), edges: edges, edgeCount: dispositionCount,
                dispositions: dispositions, counters: block.values,
                stageKey: capture.stageKey(name, stage.descriptor), dropReasons: DropReasons(stage.descriptor)))
            built += 1
        }
        self.nodes = nodes

        sources = .allocate(capacity: lcore.poll.count)
        for (index, (source, to)) in lcore.poll.enumerated() {
            let node = names.firstIndex(of: to)!
            switch source {
            case .port(let name, let queue):
                let block = registry.makeBlock(scope: "rx \(name)/\(queue)", kind: "rx", lcore: lcore.id,
                                               counters: EngineCounters.rx,
                                               labels: [("port", name), ("queue", String(queue))])
                blocks.append(block)
                (sources.baseAddress! + index).initialize(to: Source(
                    isRing: false, port: resources.port(named: name)!.portID, queue: UInt16(queue), ring: nil,
                    node: node, counters: block.values))
            case .ring(let name):
                let block = registry.makeBlock(scope: "rx ring:\(name)", kind: "ring-in", lcore: lcore.id,
                                               counters: EngineCounters.ringIn, labels: [("ring", name)])
                blocks.append(block)
                (sources.baseAddress! + index).initialize(to: Source(
                    isRing: true, port: 0, queue: 0, ring: resources.ring(named: name), node: node,
                    counters: block.values))
            }
        }
        self.runners = runners
        self.blocks = blocks
        rxBuffer = newBuffer()
        self.buffers = buffers
    }

    /// Everything the graph will refer to exists in the running engine and belongs to this lcore:
    /// a replacement graph (hot reload) may only use the ports, queues and rings set up at start, with
    /// the same owners. So building cannot fail halfway, and no queue or ring gets a second user.
    private static func checkResources(of names: [String], lcore: LcoreSettings, configuration config: EngineConfiguration,
                                       resources: EngineResources) throws
    {
        for name in names {
            for target in config.stage(named: name)!.next {
                switch target {
                case .port(let port):
                    _ = try resources.requirePort(port)
                    _ = try resources.txQueue(port: port, lcore: lcore.id)
                case .ring(let ring):
                    _ = try resources.requireRing(ring)
                    try resources.requireRingProducer(ring, lcore: lcore.id)
                case .drop, .stage: break
                }
            }
        }
        for (source, _) in lcore.poll {
            switch source {
            case .port(let port, let queue):
                _ = try resources.requirePort(port)
                try resources.requireRxQueue(port: port, queue: queue, lcore: lcore.id)
            case .ring(let ring):
                _ = try resources.requireRing(ring)
                try resources.requireRingConsumer(ring, lcore: lcore.id)
            }
        }
    }

    deinit {
        // Holding stages free what they still hold (each counted under a drop reason by the stage,
        // and here as disposition 0, so `in` = the sum of the dispositions): every mbuf goes back
        // to its pool before the engine checks.
        for (index, runner) in runners.enumerated() {
            let freed = runner.releaseAll()
            if freed > 0 { sy_counter_add(nodes[index].counters + 1, UInt64(freed)) }
        }
        for node in nodes {
            node.edges.deinitialize(count: node.edgeCount)
            node.edges.deallocate()
            node.dispositions.deallocate()
            node.dropReasons.deallocate()
        }
        nodes.deallocate()
        sources.deallocate()
        for buffer in buffers { buffer.deallocate() }
    }

    /// Polls every source once and runs what arrived through the graph. Returns packets received.
    /// With `receiveFromPorts` false (draining at shutdown) only rings are polled.
    @inline(__always)
    func poll(receiveFromPorts: Bool, status: LcoreStatus) -> Int {
        var received = 0
        for index in 0..<sources.count {
            let source = sources[index]
            let count: Int
            if source.isRing {
                count = Int(sy_ring_dequeue_burst(source.ring, rxBuffer, UInt32(burstSize)))
            } else if receiveFromPorts {
                count = Int(sy_eth_rx_burst(source.port, source.queue, rxBuffer, UInt16(burstSize)))
            } else {
                continue
            }
            guard count > 0 else { continue }
            status.beginBurst()
            sy_counter_add(source.counters, UInt64(count))
            if _slowPath(sy_atomic_load_ptr(captureSlot) != nil) { captureSource(source, count: count) }
            run(node: source.node, packets: rxBuffer, count: count)
            status.endBurst()
            received += count
        }
        return received
    }

    /// Runs one node on `count` packets and sends each disposition's packets along its edge.
    func run(node index: Int, packets: MbufVector, count: Int) {
        let node = nodes[index]
        if let tap = sy_atomic_load_ptr(captureSlot) {
            return runCaptured(node: node, packets: packets, count: count,
                               tap: tap.assumingMemoryBound(to: sy_capture_tap.self))
        }
        let count = runStage(node, packets: packets, count: count)
        guard count > 0 else { return }
        // Home run: one disposition for the whole burst; the vector goes on as it is.
        let first = node.dispositions[0]
        if Self.allEqual(node.dispositions, count: count, to: first) {
            let d = Int(first)
            sy_counter_add(node.counters + 1 + d, UInt64(count))
            send(node.edges[d], packets: packets, count: count)
            return
        }
        let edges = group(node, packets: packets, count: count)
        for d in 0..<node.edgeCount {
            let edge = edges + d
            let n = edge.pointee.count
            guard n > 0 else { continue }
            edge.pointee.count = 0
            sy_counter_add(node.counters + 1 + d, UInt64(n))
            send(edge.pointee, packets: edge.pointee.buffer, count: n)
        }
    }

    /// Counts `in` and runs the node's stage (its one dynamic call per burst). Returns the burst's
    /// count afterwards: a holding stage may return fewer (held) or more (released) packets than
    /// it was given.
    @inline(__always)
    private func runStage(_ node: Node, packets: MbufVector, count: Int) -> Int {
        sy_counter_add(node.counters, UInt64(count))
        return node.runner._withUnsafeGuaranteedRef {
            $0.run(PacketBurst(mbufs: packets, count: count), dispositions: node.dispositions)
        }
    }

    /// True when `dispositions[0..<count]` all equal `value`: an OR of XORs, no early exit, so
    /// the compiler vectorises it (a burst of 32 is two 16-byte compares).
    @inline(__always)
    static func allEqual(_ dispositions: UnsafeMutablePointer<UInt8>, count: Int, to value: UInt8) -> Bool {
        var differences: UInt8 = 0
        for i in 0..<count { differences |= dispositions[i] ^ value }
        return differences == 0
    }

    /// Moves each packet to its disposition's edge buffer: one store per packet.
    @inline(__always)
    private func group(_ node: Node, packets: MbufVector, count: Int) -> UnsafeMutablePointer<Edge> {
        let edges = node.edges
        for i in 0..<count {
            let edge = edges + Int(node.dispositions[i])
            edge.pointee.buffer[edge.pointee.count] = packets[i]
            edge.pointee.count &+= 1
        }
        return edges
    }

    /// `run(node:)` while a capture is active: the same walk, plus copies of the packets that cross
    /// the captured edge (before they are sent on, so a tx capture includes what the NIC refuses).
    @inline(never)
    private func runCaptured(node: Node, packets: MbufVector, count: Int, tap: UnsafePointer<sy_capture_tap>) {
        let stageTapped = tap.pointee.kind == UInt8(SY_CAPTURE_STAGE) && tap.pointee.stage == node.stageKey
        let watchDrops = stageTapped && (tap.pointee.any_disposition != 0 || tap.pointee.disposition == 0)
        if watchDrops { node.dropReasons.snapshot(node.counters) }
        let count = runStage(node, packets: packets, count: count)
        let edges = group(node, packets: packets, count: count)
        for d in 0..<node.edgeCount {
            let edge = edges + d
            let n = edge.pointee.count
            guard n > 0 else { continue }
            edge.pointee.count = 0
            sy_counter_add(node.counters + 1 + d, UInt64(n))
            var meta = sy_capture_meta()
            meta.lcore = UInt16(lcore)
            meta.stage = node.stageKey
            meta.disposition = UInt8(d)
            meta.queue = UInt16(SY_CAPTURE_NONE)
            meta.reason = UInt16(SY_CAPTURE_NONE)
            if stageTapped && (tap.pointee.any_disposition != 0 || Int(tap.pointee.disposition) == d) {
                if d == 0 && watchDrops { meta.reason = node.dropReasons.reason(node.counters, dropped: n) }
                meta.kind = UInt8(SY_CAPTURE_STAGE)
                sy_capture_burst(tap, edge.pointee.buffer, UInt32(n), meta, captureCounters)
            }
            if edge.pointee.kind == .port && tap.pointee.kind == UInt8(SY_CAPTURE_TX) && tap.pointee.port == edge.pointee.port {
                meta.kind = UInt8(SY_CAPTURE_TX)
                meta.port = edge.pointee.port
                meta.queue = edge.pointee.queue
                meta.reason = UInt16(SY_CAPTURE_NONE)
                sy_capture_burst(tap, edge.pointee.buffer, UInt32(n), meta, captureCounters)
            }
            send(edge.pointee, packets: edge.pointee.buffer, count: n)
        }
    }

    /// A burst just received from a source, when a capture is active: copied if it is the rx port.
    @inline(never)
    private func captureSource(_ source: Source, count: Int) {
        guard let raw = sy_atomic_load_ptr(captureSlot), !source.isRing else { return }
        let tap = raw.assumingMemoryBound(to: sy_capture_tap.self)
        guard tap.pointee.kind == UInt8(SY_CAPTURE_RX) && tap.pointee.port == source.port else { return }
        var meta = sy_capture_meta()
        meta.lcore = UInt16(lcore)
        meta.kind = UInt8(SY_CAPTURE_RX)
        meta.stage = UInt16(SY_CAPTURE_NONE)
        meta.port = source.port
        meta.queue = source.queue
        meta.reason = UInt16(SY_CAPTURE_NONE)
        sy_capture_burst(tap, rxBuffer, UInt32(count), meta, captureCounters)
    }

    /// Sends `count` packets of `packets` (the edge's buffer, or a whole burst's vector) along `edge`.
    @inline(__always)
    private func send(_ edge: Edge, packets: MbufVector, count: Int) {
        switch edge.kind {
        case .drop:
            sy_pktmbuf_free_bulk(packets, UInt32(count))
        case .node:
            run(node: edge.node, packets: packets, count: count)
        case .port:
            var sent = 0
            var retries = 0
            while sent < count {
                let n = Int(sy_eth_tx_burst(edge.port, edge.queue, packets + sent, UInt16(count - sent)))
                sent += n
                if n == 0 {
                    retries += 1
                    if retries > txRetries { break }
                }
            }
            sy_counter_add(edge.sinkCounters!, UInt64(sent))
            if sent < count {
                sy_pktmbuf_free_bulk(packets + sent, UInt32(count - sent))
                sy_counter_add(edge.sinkCounters! + 1, UInt64(count - sent))
            }
        case .ring:
            let queued = Int(sy_ring_enqueue_burst(edge.ring, packets, UInt32(count)))
            sy_counter_add(edge.sinkCounters!, UInt64(queued))
            if queued < count {
                sy_pktmbuf_free_bulk(packets + queued, UInt32(count - queued))
                sy_counter_add(edge.sinkCounters! + 1, UInt64(count - queued))
            }
        }
    }
}
