import CDPDK
import Foundation
import SwitchyardCore

/// What the engine sets up before any lcore runs: one mempool per NUMA socket, the ports with
/// their queues, the rings, and which tx queue of each port each lcore owns.
final class EngineResources {
    private(set) var mempools: [(socket: Int32, pool: OpaquePointer)] = []
    private(set) var portDescriptions: [PortDescription] = []
    private(set) var rings: [(name: String, ring: OpaquePointer)] = []
    /// port name → lcore id → tx queue.
    private var txQueues: [String: [Int: Int]] = [:]
    /// Who may touch each queue and ring, fixed at start. A replacement graph (hot reload) must keep
    /// them: lcores swap graphs one at a time, so a queue or single-producer/consumer ring that moved
    /// to another lcore would briefly have two users.
    private var rxPollers: [String: Int] = [:]           // "port/queue" → lcore
    private var ringConsumers: [String: Int] = [:]       // ring → lcore
    private var ringProducers: [String: Set<Int>] = [:]  // ring → lcores (single-producer when one)
    private var startedPorts: [UInt16] = []
    /// mempool.data_room of the engine's pools.
    private var mempoolDataRoom = 2176

    func port(named name: String) -> PortDescription? { portDescriptions.first { $0.name == name } }
    func ring(named name: String) -> OpaquePointer? { rings.first { $0.name == name }?.ring }

    /// The set-up port a graph refers to (a replacement graph may only use what exists).
    func requirePort(_ name: String) throws -> PortDescription {
        guard let port = port(named: name) else { throw EngineError.port(name, "not set up in this engine") }
        return port
    }

    func requireRing(_ name: String) throws -> OpaquePointer {
        guard let ring = ring(named: name) else { throw EngineError.setup("ring '\(name)' is not set up in this engine") }
        return ring
    }

    func requireRxQueue(port: String, queue: Int, lcore: Int) throws {
        guard rxPollers["\(port)/\(queue)"] == lcore else {
            throw EngineError.port(port, "rx queue \(queue) is polled by lcore \(rxPollers["\(port)/\(queue)"].map(String.init) ?? "none") in the running engine, not lcore \(lcore)")
        }
    }

    func requireRingConsumer(_ ring: String, lcore: Int) throws {
        guard ringConsumers[ring] == lcore else {
            throw EngineError.setup("ring '\(ring)' is consumed by lcore \(ringConsumers[ring].map(String.init) ?? "none") in the running engine, not lcore \(lcore)")
        }
    }

    func requireRingProducer(_ ring: String, lcore: Int) throws {
        let producers = ringProducers[ring] ?? []
        guard producers.count > 1 || producers.contains(lcore) else {
            throw EngineError.setup("ring '\(ring)' was created single-producer for lcore \(producers.map(String.init).joined()); lcore \(lcore) cannot feed it without a restart")
        }
    }

    func txQueue(port: String, lcore: Int) throws -> Int {
        guard let queue = txQueues[port]?[lcore] else {
            throw EngineError.port(port, "lcore \(lcore) has no tx queue on this port in the running engine")
        }
        return queue
    }
    func socket(ofLcore lcore: Int) -> Int32 {
        let socket = Int32(bitPattern: rte_lcore_to_socket_id(UInt32(lcore)))
        return socket < 0 ? 0 : socket
    }

    func mempool(socket: Int32) -> OpaquePointer {
        (mempools.first { $0.socket == socket } ?? mempools[0]).pool
    }

    /// Sets everything up; on failure, what was set up is torn down by `close()`.
    func setUp(_ config: EngineConfiguration, log: (String) -> Void) throws {
        for lcore in config.lcores where rte_lcore_is_enabled(UInt32(lcore.id)) == 0 {
            throw EngineError.setup("lcore \(lcore.id) is not enabled in the EAL (check eal.args and the command line)")
        }
        // Ports first: their sockets decide where the pools go.
        var portIDs: [(PortSettings, UInt16, sy_port_info)] = []
        for port in config.ports {
            var id: UInt16 = 0
            guard rte_eth_dev_get_port_by_name(port.deviceName, &id) == 0 else {
                throw EngineError.port(port.name, "device '\(port.deviceName)' was not found by DPDK (probe failed or wrong address)")
            }
            var info = sy_port_info()
            guard sy_port_info(id, &info) == 0 else { throw EngineError.port(port.name, "cannot read device info") }
            portIDs.append((port, id, info))
        }
        var sockets = Set(portIDs.map { $0.2.socket_id < 0 ? Int32(0) : Int32($0.2.socket_id) })
        for lcore in config.lcores { sockets.insert(socket(ofLcore: lcore.id)) }
        let mbufs = config.mempool.mbufs ?? Self.mbufsNeeded(config)
        mempoolDataRoom = config.mempool.dataRoom
        for socket in sockets.sorted() {
            let name = "sy_mbufs_s\(socket)"
            guard let pool = sy_pktmbuf_pool_create(name, UInt32(mbufs), UInt32(config.mempool.cache),
                                                    UInt16(config.mempool.dataRoom), socket)
            else {
                throw EngineError.setup("cannot create mempool \(name) of \(mbufs) mbufs: \(String(cString: sy_strerror(sy_errno())))")
            }
            mempools.append((socket, pool))
            log("mempool \(name): \(mbufs) mbufs of \(config.mempool.dataRoom) bytes")
        }

        for lcore in config.lcores {
            for port in config.transmitPorts(of: lcore) {
                var queues = txQueues[port, default: [:]]
                queues[lcore.id] = queues.count // lcores take tx queues 0, 1, ... in file order
                txQueues[port] = queues
            }
        }
        for (port, id, info) in portIDs {
            try start(port, id: id, info: info, log: log)
        }

        for lcore in config.lcores {
            for (source, _) in lcore.poll {
                switch source {
                case .port(let port, let queue): rxPollers["\(port)/\(queue)"] = lcore.id
                case .ring(let ring): ringConsumers[ring] = lcore.id
                }
            }
            for stage in config.stagesReachable(from: lcore) {
                for case .ring(let ring) in config.stage(named: stage)!.next { ringProducers[ring, default: []].insert(lcore.id) }
            }
        }
        for (index, ring) in config.rings.enumerated() {
            let producers = ringProducers[ring.name]?.count ?? 0
            // On the consumer's socket: it reads every slot. Names are short and process-global: number them.
            let socket = ringConsumers[ring.name].map { self.socket(ofLcore: $0) } ?? 0
            guard let handle = sy_ring_create("sy_ring\(index)", UInt32(ring.size), socket, producers <= 1, true) else {
                throw EngineError.setup("ring '\(ring.name)': cannot create: \(String(cString: sy_strerror(sy_errno())))")
            }
            rings.append((ring.name, handle))
        }
    }

    private func start(_ port: PortSettings, id: UInt16, info: sy_port_info, log: (String) -> Void) throws {
        let driver = withUnsafeBytes(of: info.driver_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if port.rxQueues > Int(info.max_rx_queues) || port.txQueues > Int(info.max_tx_queues) {
            throw EngineError.port(port.name, "\(driver) supports at most \(info.max_rx_queues) rx and \(info.max_tx_queues) tx queues")
        }
        let scatter = try Self.checkMTU(port, info: info, driver: driver, dataRoom: mempoolDataRoom)
        var rssApplied = false
        var rc = sy_port_configure(id, UInt16(port.rxQueues), UInt16(port.txQueues), port.rss, &rssApplied,
                                   UInt16(port.mtu ?? 0), scatter)
        guard rc == 0 else { throw EngineError.port(port.name, "configure failed: \(String(cString: sy_strerror(-rc)))") }
        if let mtu = port.mtu {
            rc = sy_port_set_mtu(id, UInt16(mtu))
            guard rc == 0 || rc == -Int32(ENOTSUP) else {
                throw EngineError.port(port.name, "cannot set mtu \(mtu): \(String(cString: sy_strerror(-rc)))")
            }
        }
        var rxd = UInt16(port.rxDescriptors), txd = UInt16(port.txDescriptors)
        _ = sy_port_adjust_desc(id, &rxd, &txd)
        let socket: Int32 = info.socket_id < 0 ? 0 : Int32(info.socket_id)
        for queue in 0..<port.rxQueues {
            rc = sy_port_rx_queue_setup(id, UInt16(queue), rxd, socket, mempool(socket: socket))
            guard rc == 0 else { throw EngineError.port(port.name, "rx queue \(queue) setup failed: \(String(cString: sy_strerror(-rc)))") }
        }
        for queue in 0..<port.txQueues {
            rc = sy_port_tx_queue_setup(id, UInt16(queue), txd, socket)
            guard rc == 0 else { throw EngineError.port(port.name, "tx queue \(queue) setup failed: \(String(cString: sy_strerror(-rc)))") }
        }
        rc = rte_eth_dev_start(id)
        guard rc == 0 else { throw EngineError.port(port.name, "start failed: \(String(cString: sy_strerror(-rc)))") }
        startedPorts.append(id)
        if port.promiscuous { _ = rte_eth_promiscuous_enable(id) } // not every virtual device has it
        let m = info.mac
        portDescriptions.append(PortDescription(name: port.name, portID: id, mac: (m.0, m.1, m.2, m.3, m.4, m.5),
                                                socketID: socket))
        let mac = [m.0, m.1, m.2, m.3, m.4, m.5].map { String(format: "%02x", $0) }.joined(separator: ":")
        let rss = port.rxQueues <= 1 ? "" : !port.rss ? ", RSS off" : rssApplied ? ", RSS on" : ", RSS not supported by \(driver)"
        var mtu: UInt16 = 0
        let mtuText = sy_port_get_mtu(id, &mtu) == 0 ? ", mtu \(mtu)\(scatter ? " (scattered receive)" : "")" : ""
        log("port \(port.name): \(port.deviceName) (\(driver), port \(id), \(mac)), \(port.rxQueues) rx / \(port.txQueues) tx queues, \(rxd)/\(txd) descriptors\(rss)\(mtuText)")
    }

    /// Bytes a frame has beyond its IP packet when DPDK checks an MTU: the device's own figure
    /// (max_rx_pktlen - max_mtu) or else Ethernet header + CRC (18).
    static func frameOverhead(_ info: sy_port_info) -> Int {
        if info.max_mtu != UInt16.max, Int(info.max_rx_pktlen) > Int(info.max_mtu) {
            return Int(info.max_rx_pktlen) - Int(info.max_mtu)
        }
        return 18
    }

    /// Checks `mtu` against the device's limits (min_mtu, max_mtu, max_rx_pktlen) and the mbuf data
    /// room; returns whether scattered receive is needed (frames larger than one mbuf's buffer).
    static func checkMTU(_ port: PortSettings, info: sy_port_info, driver: String, dataRoom: Int) throws -> Bool {
        guard let mtu = port.mtu else { return false }
        let overhead = frameOverhead(info)
        let maximum = min(Int(info.max_mtu), Int(info.max_rx_pktlen) - overhead)
        if mtu < Int(info.min_mtu) {
            throw EngineError.port(port.name, "mtu \(mtu) is below the minimum of \(driver): \(info.min_mtu)")
        }
        if mtu > maximum {
            throw EngineError.port(port.name, "mtu \(mtu) is above the maximum of \(driver): \(maximum) (max_mtu \(info.max_mtu), max_rx_pktlen \(info.max_rx_pktlen) less \(overhead) bytes of frame overhead)")
        }
        // A frame: the IP packet, the Ethernet header, one 802.1Q tag. An mbuf holds its data room
        // less the headroom (RTE_PKTMBUF_HEADROOM, 128).
        let frame = mtu + 18
        let buffer = dataRoom - Int(RTE_PKTMBUF_HEADROOM)
        guard frame > buffer else { return false }
        guard info.rx_scatter else {
            throw EngineError.port(port.name, "mtu \(mtu) needs \(frame)-byte frames but an mbuf holds \(buffer) (mempool.data_room \(dataRoom) less \(RTE_PKTMBUF_HEADROOM) headroom) and \(driver) has no scattered receive: set mempool.data_room to at least \(frame + Int(RTE_PKTMBUF_HEADROOM))")
        }
        return true
    }

    /// Mbufs for every descriptor, ring slot and in-flight burst, with room for the per-lcore caches.
    static func mbufsNeeded(_ config: EngineConfiguration) -> Int {
        var needed = config.ports.reduce(0) { $0 + $1.rxQueues * $1.rxDescriptors + $1.txQueues * $1.txDescriptors }
        needed += config.rings.reduce(0) { $0 + $1.size }
        needed += (config.lcores.count + 1) * (config.mempool.cache * 3 / 2 + 8 * maximumBurstSize)
        var size = 8191
        while size < needed { size = size * 2 + 1 }
        return size
    }

    /// Packets still on rings (only after every lcore has stopped): freed, and how many.
    func flushRings() -> Int {
        var flushed = 0
        let buffer = MbufVector.allocate(capacity: maximumBurstSize)
        defer { buffer.deallocate() }
        for (_, ring) in rings {
            while true {
                let n = Int(sy_ring_dequeue_burst(ring, buffer, UInt32(maximumBurstSize)))
                if n == 0 { break }
                sy_pktmbuf_free_bulk(buffer, UInt32(n))
                flushed += n
            }
        }
        return flushed
    }

    var ringsAreEmpty: Bool { rings.allSatisfy { sy_ring_count($0.ring) == 0 } }

    /// Stops and closes the ports (their drivers free the mbufs they hold), then frees the rings.
    func close() {
        for id in startedPorts {
            _ = rte_eth_dev_stop(id)
            _ = rte_eth_dev_close(id)
        }
        startedPorts.removeAll()
        for (_, ring) in rings { rte_ring_free(ring) }
        rings.removeAll()
    }

    /// (pool name, mbufs in the pool, pool size) for each pool: after `close()`, all should be back.
    func mempoolState() -> [(name: String, available: Int, size: Int)] {
        mempools.map { (String(cString: sy_mempool_name($0.pool)), Int(sy_mempool_avail($0.pool)),
                        Int(sy_mempool_size($0.pool))) }
    }
}
