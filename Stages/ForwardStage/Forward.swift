import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore
import SwitchyardHeaders

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
            let frame = PacketBytes(packet.bytes, count: packet.contiguousLength)
            guard let link = LinkLayer(frame) else {
                out.drop(index, reason: .truncated)
                continue
            }
            let l3 = link.l3
            let family: UInt8
            let destinationHigh: UInt64
            let destinationLow: UInt64
            if link.hasEtherType(EtherType.ipv4) {
                guard let ip = frame.header(IPv4Header.self, at: l3) else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                guard ip.version == 4 else {
                    out.drop(index, reason: .notIP)
                    continue
                }
                family = 4
                destinationHigh = UInt64(ip.destination)
                destinationLow = 0
            } else if link.hasEtherType(EtherType.ipv6) {
                guard let ip = frame.header(IPv6Header.self, at: l3) else {
                    out.drop(index, reason: .truncated)
                    continue
                }
                guard ip.version == 6 else {
                    out.drop(index, reason: .notIP)
                    continue
                }
                family = 6
                destinationHigh = ip.destinationHigh
                destinationLow = ip.destinationLow
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
                let ethernet = EthernetHeader(unchecked: frame.base)
                ethernet.destination = neighbor
                ethernet.source = portMAC
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
        let size = l3 + (family == 4 ? ARPHeader.size
            : IPv6Header.size + NeighborDiscoveryHeader.sizeWithLinkLayerOption)
        guard sy_pktmbuf_set_length(packet.mbuf, UInt16(size)) else {
            out.drop(index, reason: .neighborUnresolved)
            return
        }
        lastRequest[slot] = now
        let bytes = packet.bytes
        EthernetHeader(unchecked: bytes).source = portMAC
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
    /// `l3` + 28 bytes are writable.
    @inlinable @inline(__always)
    func writeARPRequest(_ bytes: UnsafeMutableRawPointer, l3: Int, target: UInt32) {
        EthernetHeader(unchecked: bytes).destination = EthernetHeader.broadcast
        LinkLayer.setEtherType(EtherType.arp, before: l3, in: bytes)
        let arp = ARPHeader(unchecked: bytes + l3)
        arp.setEthernetIPv4(operation: ARPValue.request)
        arp.senderMAC = portMAC
        arp.senderAddress = localIPv4
        arp.targetMAC = 0 // unknown
        arp.targetAddress = target
    }

    /// A neighbour solicitation (RFC 4861) for the target, to its solicited-node multicast address,
    /// from `source_ipv6`, hop limit 255, with a source link-layer address option. `l3` + 72 bytes
    /// are writable.
    @inlinable @inline(__always)
    func writeNeighborSolicitation(_ bytes: UnsafeMutableRawPointer, l3: Int, targetHigh: UInt64, targetLow: UInt64) {
        let length = NeighborDiscoveryHeader.sizeWithLinkLayerOption
        let solicited = NeighborDiscoveryHeader.solicitedNode(targetLow: targetLow)
        EthernetHeader(unchecked: bytes).destination = solicited.mac
        LinkLayer.setEtherType(EtherType.ipv6, before: l3, in: bytes)
        let ip = IPv6Header(unchecked: bytes + l3)
        ip.setVersionNoClassNoFlow()
        ip.payloadLength = UInt16(length)
        ip.nextHeader = IPProtocol.icmpv6
        ip.hopLimit = 255
        ip.sourceHigh = sourceIPv6High
        ip.sourceLow = sourceIPv6Low
        ip.destinationHigh = solicited.high
        ip.destinationLow = solicited.low
        let solicitation = NeighborDiscoveryHeader(unchecked: ip.raw + IPv6Header.size)
        solicitation.icmp.start(type: ICMPv6Type.neighborSolicitation, code: 0)
        solicitation.icmp.rest = 0 // reserved
        solicitation.targetHigh = targetHigh
        solicitation.targetLow = targetLow
        solicitation.setLinkLayerOption(type: NeighborDiscoveryHeader.sourceLinkLayerOption, mac: portMAC)
        let pseudo = Checksum.pseudoHeader(ip: ip.raw, family: 6, protocolNumber: IPProtocol.icmpv6, length: length)
        solicitation.icmp.checksum = Checksum.complete(solicitation.raw, count: length, initial: pseudo)
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
