import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardHeaders

/// egress-translate: connections a resource opens to the outside leave with the egress address
/// as their source, and a source port of this host's range (`cluster.egress`).
///
///     classify-backends ─other─► egress-translate ─out──► to-uplink   (source → egress address:port)
///                                        ├─pass─► port:exception       (not from a resource to a destination of cluster.egress)
///                                        └─drop                        (ports-exhausted, no-connection, ...)
///
///     resource 198.18.100.10:41000 → 203.0.113.5:443    becomes    198.19.0.1:20417 → 203.0.113.5:443
///
/// Each connection has one entry in the connection table, under the key its replies will carry:
/// (server address, server port, egress address, egress port, protocol). The entry's owner is this
/// host and its "backend" is the resource's (address, port), exactly like an inbound flow, so the
/// replies are translated back like inbound packets and the entry is gossiped, listed by
/// `ctl connections` and expired like any other.
///
/// The egress port: probes up to `min(64, range size)` ports of this host's range, starting at a
/// seeded hash of the resource's tuple and the destination. A probe whose key holds this resource's
/// entry is the connection (found); one whose key is free may be claimed by a new connection. A
/// port is claimed only when no live entry has its key (`ConnectionView.claim`), so a port of a live
/// connection to the same destination is never reused, even by two lcores at once.
public struct EgressTranslate: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// Translated to the egress address and port: on to the uplink.
        case out
        /// Not egress traffic (the source is no resource or the destination is not allowed): unchanged.
        case pass
    }

    public enum Counter: Int, StageCounter {
        case translated
        case opened
        case fin
        case rst
        case notEgress
        case exhausted
        case noConnection
        case tableFull
        case fragment
        case unsupported
        case truncated

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .translated: .info("translated", "packets of resources rewritten to the egress address and port")
            case .opened: .info("opened", "outbound connections opened: egress port claimed, entry created, opened event emitted")
            case .fin: .info("fin", "FIN from the resource: entry set to closing")
            case .rst: .info("rst", "RST from the resource: entry removed, closed event emitted")
            case .notEgress: .info("not-egress", "packets not from a resource to a destination of cluster.egress: passed on unchanged")
            case .exhausted: .drop("ports-exhausted", "new connections for which every probed port of this host's range is taken")
            case .noConnection: .drop("no-connection", "TCP packets without SYN of a connection that has no entry")
            case .tableFull: .drop("table-full", "new connections the connection table (or its embryonic share) had no room for")
            case .fragment: .drop("fragment", "IP fragments from a resource to a destination (no ports to translate)")
            case .unsupported: .drop("unsupported-protocol", "neither TCP nor UDP, from a resource to a destination (ICMP, ...)")
            case .truncated: .drop("truncated", "the headers to rewrite are not all within the first segment and the IP packet")
            }
        }
    }

    /// No keys of its own; the stage needs `cluster.egress`.
    public struct Parameters: StageParameters {
        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            let cluster = try stage.requireCluster(map, kind: EgressTranslate.kind)
            if let cluster, cluster.egress.isEmpty {
                throw map.error("egress-translate needs `cluster.egress` (the egress addresses and port ranges)", key: "kind")
            }
        }
    }

    public static let kind = "egress-translate"
    public static let summary = "outbound connections of resources: source → an egress address and a port of this host's range"

    /// Ports probed for one connection, at most.
    public static let probes = 64

    let runtime: ClusterRuntime
    let rules: EgressRules
    @usableFromInline let ruleBounds: UnsafeMutablePointer<Int>
    @usableFromInline let rulePrefixes: UnsafeMutablePointer<EgressRules.Prefix>
    @usableFromInline let ruleCount: Int
    @usableFromInline let services: ServiceView
    @usableFromInline let table: ConnectionView
    @usableFromInline let localHost: UInt16
    @usableFromInline let seed: UInt32
    @usableFromInline let tscPerMillisecond: UInt64
    /// Two keys of scratch memory (outbound tuple, reply key), allocated once.
    @usableFromInline let keys: UnsafeMutablePointer<sy_flow_key>

    public init(parameters: Parameters, context: StageContext) throws {
        runtime = try context.requireCluster(kind: Self.kind)
        rules = EgressRules(runtime.configuration)
        services = runtime.directory.view
        table = runtime.connections.view
        localHost = services.localHostID
        seed = runtime.connections.egressSeed
        tscPerMillisecond = sy_tsc_hz() / 1000
        keys = rules.keys
        ruleBounds = rules.bounds
        rulePrefixes = rules.prefixes
        ruleCount = rules.count
    }

    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<EgressTranslate>) {
        let now = sy_rdtsc()
        var translated: UInt64 = 0
        for index in 0..<burst.count {
            let packet = burst[index]
            let meta = packet.meta
            let family = meta.pointee.family
            let frame = packet.bytes
            let l3 = Int(meta.pointee.l3)
            guard family != 0, l3 != 0, meta.pointee.flags & UInt8(SY_META_ICMP_ERROR | SY_META_REPLY) == 0,
                  l3 + (family == 4 ? 20 : 40) <= packet.contiguousLength
            else {
                out.send(index, to: .pass)
                out.count(.notEgress)
                continue
            }
            let source = IPAddress(family: family, at: frame + l3 + (family == 4 ? 12 : 8))
            let destination = IPAddress(family: family, at: frame + l3 + (family == 4 ? 16 : 24))
            guard let egress = EgressRules.match(source: source, destination: destination, bounds: ruleBounds,
                                                 prefixes: rulePrefixes, count: ruleCount)
            else {
                out.send(index, to: .pass)
                out.count(.notEgress)
                continue
            }
            if meta.pointee.flags & UInt8(SY_META_FRAGMENT) != 0 {
                out.drop(index, reason: .fragment)
                continue
            }
            let protocolNumber = meta.pointee.protocol
            guard protocolNumber == IPProtocol.tcp || protocolNumber == IPProtocol.udp else {
                out.drop(index, reason: .unsupported)
                continue
            }
            let layout = RewriteLayout(meta: meta, contiguousLength: packet.contiguousLength)
            guard layout.fitsPacketWithPorts else {
                out.drop(index, reason: .truncated)
                continue
            }
            // Ports in network order, as the flow keys hold them: TCP and UDP both start with them (the
            // UDP view reads them), inside the packet (fitsPacketWithPorts).
            let ports = UDPHeader(unchecked: frame + layout.l4)
            let sourcePort = ports.sourcePort.bigEndian
            let destinationPort = ports.destinationPort.bigEndian
            let record = services.egress + egress

            // The outbound tuple seeds the probe sequence; the reply key is what the entry is under.
            let tuple = keys, reply = keys + 1
            Self.fill(tuple, source, sourcePort, destination, destinationPort, protocolNumber)
            Self.fill(reply, destination, destinationPort, record.pointee.address, 0, protocolNumber)
            let count = record.pointee.localCount
            let start = sy_hash_crc(tuple, 40, seed) % count
            let probes = min(UInt32(Self.probes), count)
            let resourcePort = sourcePort
            var found: (position: Int32, hash: UInt32, port: UInt16)?
            var firstFree = probes
            for probe in 0..<probes {
                let port = UInt16(truncatingIfNeeded: UInt32(record.pointee.localLow) &+ (start &+ probe) % count)
                reply.pointee.dst_port = port.bigEndian
                let hash = FlowKeys.hash(reply)
                let position = sy_flow_table_lookup(table.hash, reply, hash)
                if position >= 0 {
                    let entry = table.entries + Int(position)
                    let control = sy_atomic_load_u64(&entry.pointee.control)
                    if FlowEntry.isValid(control) {
                        if FlowEntry.owner(control) == localHost, FlowEntry.backendPort(control) == resourcePort,
                           entry.pointee.backendHigh == source.high, entry.pointee.backendLow == source.low
                        {
                            found = (position, hash, port)
                            break
                        }
                        continue
                    }
                }
                if firstFree == probes { firstFree = probe }
            }

            let flags = meta.pointee.tcp_flags
            let isTCP = protocolNumber == IPProtocol.tcp
            if let found {
                let entry = table.entries + Int(found.position)
                if now &- sy_relaxed_load_u64(&entry.pointee.lastSeen) > tscPerMillisecond {
                    sy_relaxed_store_u64(&entry.pointee.lastSeen, now)
                }
                reply.pointee.dst_port = found.port.bigEndian
                HeaderRewrite.packet(frame, layout, source: true, address: record.pointee.address, port: found.port.bigEndian)
                if isTCP {
                    let control = sy_atomic_load_u64(&entry.pointee.control)
                    switch followTCP(table, entry: entry, control: control, key: reply, hash: found.hash,
                                     position: found.position, flags: flags)
                    {
                    case 1: out.count(.fin)
                    case 2: out.count(.rst)
                    default: break
                    }
                }
                translated &+= 1
                out.send(index, to: .out)
                continue
            }

            // A new connection: TCP opens with a SYN (no ACK), UDP with any datagram.
            let isSyn = isTCP && flags & 0x12 == 0x02
            if isTCP && !isSyn {
                out.drop(index, reason: .noConnection)
                continue
            }
            let state: FlowState = isTCP ? .embryonic : .datagram
            let control = FlowEntry.makeControl(state: state, family: family, owner: localHost,
                                                backendPortNetworkOrder: resourcePort)
            var claimed: (position: Int32, hash: UInt32, port: UInt16)?
            var full = false
            var probe = firstFree
            while probe < probes {
                let port = UInt16(truncatingIfNeeded: UInt32(record.pointee.localLow) &+ (start &+ probe) % count)
                reply.pointee.dst_port = port.bigEndian
                let hash = FlowKeys.hash(reply)
                let position = table.claim(key: reply, hash: hash, control: control, backendHigh: source.high,
                                           backendLow: source.low, now: now)
                if position >= 0 {
                    claimed = (position, hash, port)
                    break
                }
                if position == -2 {
                    full = true
                    break
                }
                probe += 1
            }
            guard let claimed else {
                out.drop(index, reason: full ? .tableFull : .exhausted)
                continue
            }
            reply.pointee.dst_port = claimed.port.bigEndian
            table.emit(kind: UInt8(SY_FLOW_OPENED), reason: 0, owner: localHost, backendPort: resourcePort, key: reply)
            out.count(.opened)
            HeaderRewrite.packet(frame, layout, source: true, address: record.pointee.address, port: claimed.port.bigEndian)
            translated &+= 1
            out.send(index, to: .out)
        }
        if translated > 0 { out.count(.translated, translated) }
    }

    /// A flow key: (src, srcPort, dst, dstPort, protocol, family), ports in network byte order.
    @inlinable @inline(__always)
    static func fill(_ key: UnsafeMutablePointer<sy_flow_key>, _ source: IPAddress, _ sourcePort: UInt16,
                     _ destination: IPAddress, _ destinationPort: UInt16, _ protocolNumber: UInt8)
    {
        let raw = UnsafeMutableRawPointer(key)
        raw.storeBytes(of: UInt64(0), toByteOffset: 0, as: UInt64.self)
        raw.storeBytes(of: UInt64(0), toByteOffset: 8, as: UInt64.self)
        raw.storeBytes(of: UInt64(0), toByteOffset: 16, as: UInt64.self)
        raw.storeBytes(of: UInt64(0), toByteOffset: 24, as: UInt64.self)
        raw.storeBytes(of: UInt64(0), toByteOffset: 32, as: UInt64.self)
        source.store(to: raw)
        destination.store(to: raw + 16)
        key.pointee.src_port = sourcePort
        key.pointee.dst_port = destinationPort
        key.pointee.protocol = protocolNumber
        key.pointee.family = source.family
    }
}

/// Which egress address a (source, destination) pair uses: the first `cluster.egress` item whose
/// resources hold the source and whose destinations hold the destination. Raw memory, read by the
/// hot path without reference counting.
@usableFromInline
final class EgressRules {
    /// One prefix as raw words in packet-memory order (like IPAddress), with its mask.
    @frozen @usableFromInline
    struct Prefix {
        @usableFromInline var family: UInt8
        @usableFromInline var high: UInt64
        @usableFromInline var low: UInt64
        @usableFromInline var maskHigh: UInt64
        @usableFromInline var maskLow: UInt64

        @inlinable @inline(__always)
        func contains(_ address: IPAddress) -> Bool {
            address.family == family && address.high & maskHigh == high && address.low & maskLow == low
        }
    }

    /// Per egress item: [resources start, resources end, destinations start, destinations end).
    @usableFromInline let bounds: UnsafeMutablePointer<Int>
    @usableFromInline let prefixes: UnsafeMutablePointer<Prefix>
    @usableFromInline let count: Int
    @usableFromInline let keys: UnsafeMutablePointer<sy_flow_key>

    init(_ configuration: ClusterConfiguration) {
        count = configuration.egress.count
        bounds = .allocate(capacity: max(count, 1) * 4)
        var all: [Prefix] = []
        for (index, egress) in configuration.egress.enumerated() {
            bounds[index * 4] = all.count
            all += egress.resources.map(Self.prefix)
            bounds[index * 4 + 1] = all.count
            bounds[index * 4 + 2] = all.count
            all += egress.destinations.map(Self.prefix)
            bounds[index * 4 + 3] = all.count
        }
        prefixes = .allocate(capacity: max(all.count, 1))
        prefixes.initialize(from: all, count: all.count)
        keys = .allocate(capacity: 2)
        keys.initialize(repeating: sy_flow_key(), count: 2)
    }

    deinit {
        bounds.deallocate()
        prefixes.deallocate()
        keys.deallocate()
    }

    static func prefix(_ prefix: EgressSettings.Prefix) -> Prefix {
        let size = prefix.address.family == 4 ? 4 : 16
        var maskBytes = [UInt8](repeating: 0, count: size)
        for bit in 0..<prefix.length { maskBytes[bit / 8] |= 0x80 >> UInt8(bit % 8) }
        let mask = IPAddress(bytes: maskBytes)
        return Prefix(family: prefix.address.family, high: prefix.address.high & mask.high,
                      low: prefix.address.low & mask.low, maskHigh: mask.high, maskLow: mask.low)
    }

    /// The index of the egress item for this pair, nil when none allows it.
    @inlinable @inline(__always)
    static func match(source: IPAddress, destination: IPAddress, bounds: UnsafeMutablePointer<Int>,
                      prefixes: UnsafeMutablePointer<Prefix>, count: Int) -> Int?
    {
        for index in 0..<count {
            var allowed = false
            for slot in bounds[index * 4]..<bounds[index * 4 + 1] where prefixes[slot].contains(source) {
                allowed = true
                break
            }
            guard allowed else { continue }
            for slot in bounds[index * 4 + 2]..<bounds[index * 4 + 3] where prefixes[slot].contains(destination) {
                return index
            }
        }
        return nil
    }
}
