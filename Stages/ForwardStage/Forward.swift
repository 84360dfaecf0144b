import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore

/// forward: the last stage before a port. Gives each packet the Ethernet source of the port it
/// leaves by and the MAC of its next hop, found through the routes and the cluster's NeighborTable.
///
///     in ──► Ethernet type (one 802.1Q tag) ──► IP destination ──► longest-prefix route ──► next hop
///                                                                                           │
///          NeighborTable (static + learned by classify) ◄── find ───────────────────────────┘
///             │ known:   dst = neighbour MAC, src = port MAC ──────────────────────────────► out
///             │ unknown: this packet becomes an ARP request / neighbour solicitation ──────► resolve
///             │          (at most one per next hop per 100 ms, else neighbor-unresolved)
///             └─ drop: truncated, not-ip, no-route, neighbor-unresolved
///
/// The stage reads the Ethernet and IP headers itself instead of trusting `sy_meta`, because
/// encapsulate may have rewritten the front of the packet. Both `out` and `resolve` must be wired
/// to the port named by `port`.
public struct Forward: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// Addressed to its next hop: send out of `port`.
        case out
        /// Turned into an ARP request or a neighbour solicitation: send out of `port`.
        case resolve
    }

    public enum Counter: Int, StageCounter {
        case forwarded
        case neighborMiss
        case arpRequest
        case ndRequest
        case truncated
        case notIP
        case noRoute
        case neighborUnresolved

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .forwarded: .info("forwarded", "addressed to a known next hop and sent to out")
            case .neighborMiss: .info("neighbor-miss", "the next hop's MAC was unknown (each then counts as a request or neighbor-unresolved)")
            case .arpRequest: .info("arp-request", "packets turned into an ARP request for an IPv4 next hop (sent to resolve)")
            case .ndRequest: .info("nd-request", "packets turned into an IPv6 neighbour solicitation (sent to resolve)")
            case .truncated: .drop("truncated", "shorter than its Ethernet, VLAN or IP header")
            case .notIP: .drop("not-ip", "neither IPv4 nor IPv6 (after at most one 802.1Q tag), or a wrong IP version")
            case .noRoute: .drop("no-route", "the destination matches no route")
            case .neighborUnresolved: .drop("neighbor-unresolved", "the next hop's MAC is unknown and no request was sent (rate limit, resolve: false, or no source_ipv6)")
            }
        }
    }

    public static let kind = "forward"
    public static let summary = "set the port's source MAC and the next hop's MAC (routes, neighbour table, ARP/ND)"

    /// At most one request per next hop per this share of a second (100 ms).
    public static let requestsPerSecondPerNextHop: UInt64 = 10
    /// Slots of the rate-limit table (a power of two), keyed by a hash of the next hop.
    public static let rateLimitSlots = 256

    // MARK: - State (raw values only: nothing is retained in `process`)

    /// Routes sorted longest prefix first, masks precomputed.
    @usableFromInline let routes: UnsafeMutablePointer<Route>
    @usableFromInline let routeCount: Int
    /// Last request TSC per rate-limit slot (0: never).
    @usableFromInline let lastRequest: UnsafeMutablePointer<UInt64>
    @usableFromInline let requestInterval: UInt64
    @usableFromInline let neighbors: NeighborView
    /// The port's MAC in the low 48 bits, memory order (NeighborView's MAC word layout).
    @usableFromInline let portMAC: UInt64
    /// This host's IPv4 address as loaded from packet memory: the sender of ARP requests.
    @usableFromInline let localIPv4: UInt32
    @usableFromInline let resolve: Bool
    @usableFromInline let hasSourceIPv6: Bool
    @usableFromInline let sourceIPv6High: UInt64
    @usableFromInline let sourceIPv6Low: UInt64
    /// Owners of the memory above, kept only so it stays alive.
    let storage: Storage
    let cluster: ClusterRuntime

    public init(parameters: Parameters, context: StageContext) throws {
        let cluster = try context.requireCluster(kind: Self.kind)
        guard let port = context.ports.first(where: { $0.name == parameters.port }) else {
            throw StageSetupError("stage '\(context.instanceName)' (forward): port '\(parameters.port)' is not started "
                + "(ports: \(context.ports.map(\.name).joined(separator: ", ")))")
        }
        var mac = port.mac
        portMAC = withUnsafeBytes(of: &mac) {
            UInt64($0.loadUnaligned(as: UInt32.self)) | UInt64($0.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) << 32
        }
        localIPv4 = UInt32(truncatingIfNeeded: cluster.configuration.localHost.address.high)
        let view = cluster.neighbors.view
        neighbors = view
        for neighbor in parameters.neighbors {
            var bytes = neighbor.mac.bytes
            let learned = withUnsafeBytes(of: &bytes) {
                view.learn(family: neighbor.address.family, high: neighbor.address.high, low: neighbor.address.low,
                                macPointer: $0.baseAddress!, isStatic: true)
            }
            guard learned else {
                throw StageSetupError("stage '\(context.instanceName)' (forward): the neighbour table is full "
                    + "(\(NeighborTable.capacity) entries); cannot add static neighbour \(neighbor.address)")
            }
        }
        storage = Storage(routes: parameters.routes, rateLimitSlots: Self.rateLimitSlots)
        routes = storage.routes
        routeCount = parameters.routes.count
        lastRequest = storage.lastRequest
        requestInterval = max(1, sy_tsc_hz() / Self.requestsPerSecondPerNextHop)
        resolve = parameters.resolve
        hasSourceIPv6 = parameters.sourceIPv6 != nil
        sourceIPv6High = parameters.sourceIPv6?.high ?? 0
        sourceIPv6Low = parameters.sourceIPv6?.low ?? 0
        self.cluster = cluster
    }

    @inlinable
    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<Forward>) {
        for index in 0..<burst.count {
            let packet = burst[index]
            let length = packet.contiguousLength
            let bytes = packet.bytes
            guard length >= 14 else {
                out.drop(index, reason: .truncated)
                continue
            }
            var etherType = UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
            var l3 = 14
            if etherType == 0x8100 {
                guard length >= 18 else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                etherType = UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt16.self))
                l3 = 18
            }
            let family: UInt8
            let destinationHigh: UInt64
            let destinationLow: UInt64
            if etherType == 0x0800 {
                guard length >= l3 + 20 else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                guard bytes.load(fromByteOffset: l3, as: UInt8.self) >> 4 == 4 else {
                    out.drop(index, reason: .notIP)
                    continue
                }
                family = 4
                destinationHigh = UInt64(bytes.loadUnaligned(fromByteOffset: l3 + 16, as: UInt32.self))
                destinationLow = 0
            } else if etherType == 0x86dd {
                guard length >= l3 + 40 else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                guard bytes.load(fromByteOffset: l3, as: UInt8.self) >> 4 == 6 else {
                    out.drop(index, reason: .notIP)
                    continue
                }
                family = 6
                destinationHigh = bytes.loadUnaligned(fromByteOffset: l3 + 24, as: UInt64.self)
                destinationLow = bytes.loadUnaligned(fromByteOffset: l3 + 32, as: UInt64.self)
            } else {
                out.drop(index, reason: .notIP)
                continue
            }

            // Longest prefix first: the first match wins.
            var routeIndex = 0
            while routeIndex < routeCount {
                let route = routes[routeIndex]
                if route.family == family && destinationHigh & route.maskHigh == route.prefixHigh
                    && destinationLow & route.maskLow == route.prefixLow
                {
                    break
                }
                routeIndex += 1
            }
            guard routeIndex < routeCount else {
                out.drop(index, reason: .noRoute)
                continue
            }
            let route = routes[routeIndex]
            let nextHopHigh = route.hasGateway ? route.gatewayHigh : destinationHigh
            let nextHopLow = route.hasGateway ? route.gatewayLow : destinationLow

            let neighbor = neighbors.find(family: family, high: nextHopHigh, low: nextHopLow)
            if neighbor >> 63 != 0 {
                NeighborView.store(mac: neighbor, to: bytes)
                NeighborView.store(mac: portMAC, to: bytes + 6)
                out.count(.forwarded)
                out.send(index, to: .out)
            } else {
                requestNeighbor(packet, index: index, l3: l3, family: family, nextHopHigh: nextHopHigh,
                                nextHopLow: nextHopLow, out)
            }
        }
    }

    /// The next hop's MAC is unknown: turn the packet into a request for it, or drop it.
    @inlinable
    func requestNeighbor(_ packet: Packet, index: Int, l3: Int, family: UInt8, nextHopHigh: UInt64,
                         nextHopLow: UInt64, _ out: BurstOutput<Forward>)
    {
        out.count(.neighborMiss)
        guard resolve, family == 4 || hasSourceIPv6 else {
            out.drop(index, reason: .neighborUnresolved)
            return
        }
        let now = sy_rdtsc()
        let slot = Int(sy_hash_crc_8byte(nextHopLow, sy_hash_crc_8byte(nextHopHigh, UInt32(family))))
            & (Self.rateLimitSlots - 1)
        let last = lastRequest[slot]
        guard last == 0 || now &- last >= requestInterval else {
            out.drop(index, reason: .neighborUnresolved)
            return
        }
        // The VLAN tag (bytes 12..<16), when there is one, stays where it is.
        let size = l3 + (family == 4 ? 28 : 72)
        guard sy_pktmbuf_set_length(packet.mbuf, UInt16(size)) else {
            out.drop(index, reason: .neighborUnresolved)
            return
        }
        lastRequest[slot] = now
        let bytes = packet.bytes
        NeighborView.store(mac: portMAC, to: bytes + 6)
        if family == 4 {
            writeARPRequest(bytes, l3: l3, target: UInt32(truncatingIfNeeded: nextHopHigh))
            out.count(.arpRequest)
        } else {
            writeNeighborSolicitation(bytes, l3: l3, targetHigh: nextHopHigh, targetLow: nextHopLow)
            out.count(.ndRequest)
        }
        out.send(index, to: .resolve)
    }

    /// A broadcast ARP request (RFC 826) for `target`, from this host's address and the port's MAC.
    @inlinable @inline(__always)
    func writeARPRequest(_ bytes: UnsafeMutableRawPointer, l3: Int, target: UInt32) {
        bytes.storeBytes(of: UInt32.max, as: UInt32.self) // destination ff:ff:ff:ff:ff:ff
        bytes.storeBytes(of: UInt16.max, toByteOffset: 4, as: UInt16.self)
        bytes.storeBytes(of: UInt16(0x0806).bigEndian, toByteOffset: l3 - 2, as: UInt16.self)
        let arp = bytes + l3
        arp.storeBytes(of: UInt16(1).bigEndian, as: UInt16.self) // hardware: Ethernet
        arp.storeBytes(of: UInt16(0x0800).bigEndian, toByteOffset: 2, as: UInt16.self) // protocol: IPv4
        arp.storeBytes(of: UInt8(6), toByteOffset: 4, as: UInt8.self)
        arp.storeBytes(of: UInt8(4), toByteOffset: 5, as: UInt8.self)
        arp.storeBytes(of: UInt16(1).bigEndian, toByteOffset: 6, as: UInt16.self) // request
        NeighborView.store(mac: portMAC, to: arp + 8)
        arp.storeBytes(of: localIPv4, toByteOffset: 14, as: UInt32.self)
        arp.storeBytes(of: UInt32(0), toByteOffset: 18, as: UInt32.self) // target MAC: unknown
        arp.storeBytes(of: UInt16(0), toByteOffset: 22, as: UInt16.self)
        arp.storeBytes(of: target, toByteOffset: 24, as: UInt32.self)
    }

    /// A neighbour solicitation (RFC 4861) for the target, to its solicited-node multicast address,
    /// from `source_ipv6`, hop limit 255, with a source link-layer address option.
    @inlinable @inline(__always)
    func writeNeighborSolicitation(_ bytes: UnsafeMutableRawPointer, l3: Int, targetHigh: UInt64, targetLow: UInt64) {
        bytes.storeBytes(of: UInt16(0x86dd).bigEndian, toByteOffset: l3 - 2, as: UInt16.self)
        let ip = bytes + l3
        ip.storeBytes(of: UInt32(0x6000_0000).bigEndian, as: UInt32.self) // version 6, class 0, flow 0
        ip.storeBytes(of: UInt16(32).bigEndian, toByteOffset: 4, as: UInt16.self) // payload length
        ip.storeBytes(of: UInt8(58), toByteOffset: 6, as: UInt8.self) // ICMPv6
        ip.storeBytes(of: UInt8(255), toByteOffset: 7, as: UInt8.self) // hop limit
        ip.storeBytes(of: sourceIPv6High, toByteOffset: 8, as: UInt64.self)
        ip.storeBytes(of: sourceIPv6Low, toByteOffset: 16, as: UInt64.self)
        let icmp = ip + 40
        icmp.storeBytes(of: UInt32(0x8700_0000).bigEndian, as: UInt32.self) // type 135, code 0, checksum 0
        icmp.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self) // reserved
        icmp.storeBytes(of: targetHigh, toByteOffset: 8, as: UInt64.self)
        icmp.storeBytes(of: targetLow, toByteOffset: 16, as: UInt64.self)
        icmp.storeBytes(of: UInt16(0x0101).bigEndian, toByteOffset: 24, as: UInt16.self) // option 1, 8 bytes
        NeighborView.store(mac: portMAC, to: icmp + 26)
        // Destination ff02::1:ffXX:XXXX and MAC 33:33:ff:XX:XX:XX, XX:XX:XX the target's low 24 bits.
        ip.storeBytes(of: UInt32(0xff02_0000).bigEndian, toByteOffset: 24, as: UInt32.self)
        ip.storeBytes(of: UInt32(0), toByteOffset: 28, as: UInt32.self)
        ip.storeBytes(of: UInt32(1).bigEndian, toByteOffset: 32, as: UInt32.self)
        ip.storeBytes(of: UInt8(0xff), toByteOffset: 36, as: UInt8.self)
        bytes.storeBytes(of: UInt32(0x3333_ff00).bigEndian, as: UInt32.self)
        for offset in 0..<3 {
            let byte = icmp.load(fromByteOffset: 21 + offset, as: UInt8.self)
            ip.storeBytes(of: byte, toByteOffset: 37 + offset, as: UInt8.self)
            bytes.storeBytes(of: byte, toByteOffset: 3 + offset, as: UInt8.self)
        }
        let pseudo = Checksum.pseudoHeader(ip: ip, family: 6, protocolNumber: 58, length: 32)
        icmp.storeBytes(of: Checksum.complete(icmp, count: 32, initial: pseudo), toByteOffset: 2, as: UInt16.self)
    }
}

extension Forward {
    /// One route as the hot path reads it: prefix and mask as raw words in packet-memory order.
    @frozen
    public struct Route: Sendable {
        public var prefixHigh: UInt64
        public var prefixLow: UInt64
        public var maskHigh: UInt64
        public var maskLow: UInt64
        public var gatewayHigh: UInt64
        public var gatewayLow: UInt64
        public var family: UInt8
        public var hasGateway: Bool
        /// Prefix length, for sorting and printing.
        public var length: Int

        /// `prefix`/`length` (host bits already zero), through `gateway` or directly connected.
        public init(prefix: IPAddress, length: Int, gateway: IPAddress?) {
            let bits = prefix.family == 4 ? 32 : 128
            var mask = [UInt8](repeating: 0, count: bits / 8)
            for bit in 0..<length { mask[bit / 8] |= 0x80 >> UInt8(bit % 8) }
            let maskAddress = IPAddress(bytes: mask)
            prefixHigh = prefix.high & maskAddress.high
            prefixLow = prefix.low & maskAddress.low
            maskHigh = maskAddress.high
            maskLow = maskAddress.low
            gatewayHigh = gateway?.high ?? 0
            gatewayLow = gateway?.low ?? 0
            family = prefix.family
            hasGateway = gateway != nil
            self.length = length
        }
    }

    /// The stage's own memory: the route table and the rate-limit table, allocated once.
    final class Storage {
        let routes: UnsafeMutablePointer<Route>
        let lastRequest: UnsafeMutablePointer<UInt64>
        let rateLimitSlots: Int

        init(routes list: [Route], rateLimitSlots: Int) {
            routes = .allocate(capacity: max(list.count, 1))
            routes.initialize(from: list, count: list.count)
            lastRequest = .allocate(capacity: rateLimitSlots)
            lastRequest.initialize(repeating: 0, count: rateLimitSlots)
            self.rateLimitSlots = rateLimitSlots
        }

        deinit {
            routes.deallocate()
            lastRequest.deallocate()
        }
    }
}

// MARK: - Parameters

extension Forward {
    /// A static neighbour from the configuration.
    public struct StaticNeighbor: Sendable {
        public var address: IPAddress
        public var mac: MACAddress
    }

    public struct Parameters: StageParameters {
        /// The port whose MAC becomes the Ethernet source; `out` and `resolve` are wired to it.
        public var port: String
        /// Longest prefix first. Without `routes:` in the file: 0.0.0.0/0 and ::/0, directly connected.
        public var routes: [Route]
        public var neighbors: [StaticNeighbor]
        public var resolve: Bool
        public var sourceIPv6: IPAddress?

        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            _ = try stage.requireCluster(map, kind: Forward.kind)
            let portValue = try map.required("port")
            port = try portValue.string()
            guard stage.portNames.contains(port) else {
                throw portValue.error(stage.portNames.isEmpty
                    ? "port '\(port)' does not exist: no ports are configured"
                    : "port '\(port)' does not exist (ports: \(stage.portNames.joined(separator: ", ")))")
            }

            if let routesValue = map.optional("routes") {
                let items = try routesValue.list()
                guard !items.isEmpty else {
                    throw routesValue.error("an empty list routes nothing; leave `routes` out to treat every destination as directly connected")
                }
                var parsed: [(route: Route, prefix: IPAddress, line: Int)] = []
                for (index, item) in items.enumerated() {
                    let routeMap = try item.within("stage '\(stage.instanceName)' route #\(index + 1)").map()
                    let prefixValue = try routeMap.required("prefix")
                    let (prefix, length) = try Self.parsePrefix(prefixValue)
                    var gateway: IPAddress?
                    if let viaValue = routeMap.optional("via") {
                        let via = try Self.parseUnicast(viaValue)
                        guard via.family == prefix.family else {
                            throw viaValue.error("the prefix is IPv\(prefix.family) but the gateway \(via) is IPv\(via.family)")
                        }
                        gateway = via
                    }
                    try routeMap.finish()
                    if let previous = parsed.first(where: { $0.prefix == prefix && $0.route.length == length }) {
                        throw prefixValue.error("\(prefix)/\(length) is routed twice (also on line \(previous.line))")
                    }
                    parsed.append((Route(prefix: prefix, length: length, gateway: gateway), prefix, routeMap.line))
                }
                routes = parsed.map(\.route)
            } else {
                routes = [Route(prefix: IPAddress(bytes: [0, 0, 0, 0]), length: 0, gateway: nil),
                          Route(prefix: IPAddress(bytes: [UInt8](repeating: 0, count: 16)), length: 0, gateway: nil)]
            }
            routes.sort { $0.length > $1.length } // stable: equal lengths keep file order

            neighbors = []
            for (index, item) in try map.list("neighbors").enumerated() {
                let neighborMap = try item.within("stage '\(stage.instanceName)' neighbor #\(index + 1)").map()
                let addressValue = try neighborMap.required("address")
                let address = try Self.parseUnicast(addressValue)
                let macValue = try neighborMap.required("mac")
                let text = try macValue.string()
                guard let mac = MACAddress(text) else {
                    throw macValue.error("'\(text)' is not a MAC address (like 02:00:00:00:00:01)")
                }
                guard mac.bytes.0 & 1 == 0 else {
                    throw macValue.error("\(mac) is a multicast or broadcast MAC, not a neighbour's")
                }
                try neighborMap.finish()
                guard !neighbors.contains(where: { $0.address == address }) else {
                    throw addressValue.error("neighbour \(address) is listed twice")
                }
                neighbors.append(StaticNeighbor(address: address, mac: mac))
            }

            resolve = try map.bool("resolve", default: true)
            if let sourceValue = map.optional("source_ipv6") {
                let source = try Self.parseUnicast(sourceValue)
                guard source.family == 6 else {
                    throw sourceValue.error("\(source) is not an IPv6 address")
                }
                guard resolve else {
                    throw sourceValue.error("only neighbour solicitations use source_ipv6, and resolve is false")
                }
                sourceIPv6 = source
            } else {
                sourceIPv6 = nil
            }
        }

        /// `198.18.0.0/16` or `fd00::/8`: an address with no bits set past the length.
        static func parsePrefix(_ value: ConfigValue) throws -> (IPAddress, Int) {
            let text = try value.string()
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, let address = IPAddress(String(parts[0])) else {
                throw value.error("'\(text)' is not a prefix (like 198.18.0.0/16 or fd00::/8)")
            }
            let bits = address.family == 4 ? 32 : 128
            guard let length = Int(parts[1]), (0...bits).contains(length) else {
                throw value.error("'\(parts[1])' is not a prefix length for IPv\(address.family) (0...\(bits))")
            }
            let network = Route(prefix: address, length: length, gateway: nil)
            guard network.prefixHigh == address.high && network.prefixLow == address.low else {
                let masked = IPAddress(family: address.family, high: network.prefixHigh, low: network.prefixLow)
                throw value.error("'\(text)' has host bits set (did you mean \(masked)/\(length)?)")
            }
            return (address, length)
        }

        /// An IPv4 or IPv6 unicast address (not unspecified, not multicast or broadcast).
        static func parseUnicast(_ value: ConfigValue) throws -> IPAddress {
            let address = try ClusterConfiguration.parseAddress(value)
            let bytes = address.bytes
            if bytes.allSatisfy({ $0 == 0 }) {
                throw value.error("\(address) is the unspecified address, not a host's")
            }
            if address.family == 4 ? bytes[0] >= 224 : bytes[0] == 0xff {
                throw value.error("\(address) is not a unicast address")
            }
            return address
        }
    }
}
