import CDPDK
import SwitchyardCluster
import SwitchyardConfig
import SwitchyardCore

/// classify: parses every frame (Ethernet, 802.1Q, ARP, IPv4, IPv6 with extension headers, TCP,
/// UDP, ICMP, ICMPv6), fills the packet's `sy_meta`, and tells apart what the cluster must handle.
/// Each packet first tries the common case (CommonCase.swift: TCP/UDP to a service of a VIP, no
/// IP options or extension headers), which costs a few loads and compares; every other packet,
/// and any that fails one of its checks, goes through the full parser (Classification.swift).
///
///     rx ──► classify ──vip─────► (VIP, proto, port) is a service; ICMP errors about such a flow
///                      ├─reply───► from a backend tuple (bypass tuple) back towards a client (side: backends only)
///                      ├─tunnel──► UDP to this host's tunnel port from a peer host
///                      ├─answer──► ARP reply / neighbour advertisement / echo reply, built in place
///                      ├─local───► anything else for this host's address (exception path)
///                      ├─other───► not ours (exception path or drop)
///                      └─drop────► malformed, truncated, fragments to a VIP, ... (one counter each)
///
/// Fragments to a VIP are dropped (`fragment`) unless `fragments: vip`: then TCP/UDP fragments go
/// to `vip` with `SY_META_FRAGMENT` set, and a `fragments` stage must come before ownership-lookup.
///
/// With `input: tunnel` (after decapsulate) only VIP traffic is valid: everything else is
/// dropped as `tunnel-not-vip`, tunnels in tunnels as `nested-tunnel`. The flags
/// `SY_META_FROM_PEER` and `peer` that decapsulate set are kept; the rest of `sy_meta` is rebuilt.
///
/// Every header is checked against the bytes of the first segment before it is read; a header
/// that continues in a second segment is dropped as `headers-not-contiguous`.
///
/// Who can make the host send from a VIP: only a `side: backends` classify gives `reply`; on the
/// uplink a packet from a bypass tuple is `backend-source-on-uplink`. An IP unicast datagram in a
/// link-layer broadcast or multicast frame is never acted on (`link-broadcast-to-unicast-ip`).
public struct Classify: Stage {
    public enum Disposition: UInt8, StageDisposition {
        case drop
        /// Traffic of a service (VIP, protocol, port), or an ICMP error about one of its flows.
        case vip
        /// From a backend (bypass tuple): to be translated back to the VIP.
        case reply
        /// Encapsulated traffic from a peer host, for decapsulate.
        case tunnel
        /// An ARP reply, neighbour advertisement or echo reply, rewritten in place from the request.
        case answer
        /// For this host's own address (or ARP/ND about an owned address we do not answer).
        case local
        /// Not ours.
        case other
    }

    public enum Counter: Int, StageCounter {
        // Drop reasons.
        case truncatedEthernet
        case truncatedVLAN
        case headersNotContiguous
        case malformedARP
        case malformedND
        case ipBadVersion
        case truncatedIPv4
        case ipv4BadHeaderLength
        case ipv4BadTotalLength
        case ipv4BadChecksum
        case truncatedIPv6
        case ipv6BadPayloadLength
        case ipv6ExtensionChain
        case tcpBadHeader
        case udpBadLength
        case truncatedICMP
        case icmpErrorTruncated
        case icmpErrorUnmatched
        case fragment
        case noService
        case vipProtocol
        case vipICMPType
        case tunnelUnknownPeer
        case nestedTunnel
        case tunnelNotVIP
        case linkBroadcastToUnicastIP
        case backendSourceOnUplink
        case notOurMAC
        // Information.
        case vlanStacked
        case nonIP
        case ipv4Options
        case ipv6ExtensionHeaders
        case answeredARP
        case answeredND
        case answeredEcho
        case answerNoRoom
        case neighborLearned
        case neighborTableFull
        case fragmentToVIP

        /// Name, severity and help of each counter: one line per case (VPP's counter list).
        public var declaration: CounterDeclaration {
            switch self {
            case .truncatedEthernet: .drop("truncated-ethernet", "shorter than an Ethernet header (14 bytes)")
            case .truncatedVLAN: .drop("truncated-vlan", "an 802.1Q tag cut short")
            case .headersNotContiguous: .drop("headers-not-contiguous", "multi-segment packet whose headers continue past the first segment")
            case .malformedARP: .drop("malformed-arp", "ARP that is not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4) or is cut short")
            case .malformedND: .drop("malformed-nd", "neighbour solicitation/advertisement failing RFC 4861 checks (hop limit, length, options, checksum)")
            case .ipBadVersion: .drop("ip-bad-version", "IP version field does not match the EtherType")
            case .truncatedIPv4: .drop("truncated-ipv4", "IPv4 header reaches past the end of the frame")
            case .ipv4BadHeaderLength: .drop("ipv4-bad-header-length", "IPv4 IHL below 5")
            case .ipv4BadTotalLength: .drop("ipv4-bad-total-length", "IPv4 total length below the header length or past the end of the frame")
            case .ipv4BadChecksum: .drop("ipv4-bad-checksum", "IPv4 header checksum is wrong")
            case .truncatedIPv6: .drop("truncated-ipv6", "IPv6 header reaches past the end of the frame")
            case .ipv6BadPayloadLength: .drop("ipv6-bad-payload-length", "IPv6 payload length reaches past the end of the frame")
            case .ipv6ExtensionChain: .drop("ipv6-extension-chain", "IPv6 extension headers cut short, misplaced, or more than 8")
            case .tcpBadHeader: .drop("tcp-bad-header", "TCP header shorter than 20 bytes, data offset below 5 or past the segment")
            case .udpBadLength: .drop("udp-bad-length", "UDP header shorter than 8 bytes, or its length field below 8 or past the IP payload")
            case .truncatedICMP: .drop("truncated-icmp", "ICMP/ICMPv6 message shorter than 8 bytes")
            case .icmpErrorTruncated: .drop("icmp-error-truncated", "ICMP error to a VIP whose quoted packet lacks a complete IP header and 8 transport bytes")
            case .icmpErrorUnmatched: .drop("icmp-error-unmatched", "ICMP error to a VIP quoting a packet no service of that VIP sent")
            case .fragment: .drop("fragment", "IP fragment to a VIP (fragments: drop, or not TCP/UDP) or first fragment from a backend (not reassembled)")
            case .noService: .drop("no-service", "TCP/UDP to a VIP on a port no service listens on")
            case .vipProtocol: .drop("vip-protocol", "IP protocol to a VIP other than TCP, UDP, ICMP (GRE, ESP, ...)")
            case .vipICMPType: .drop("vip-icmp-type", "ICMP to a VIP that is neither an echo request nor an error")
            case .tunnelUnknownPeer: .drop("tunnel-unknown-peer", "UDP to the tunnel port from an address that is not a peer host")
            case .nestedTunnel: .drop("nested-tunnel", "a tunnel packet inside a tunnel packet")
            case .tunnelNotVIP: .drop("tunnel-not-vip", "decapsulated packet that is not VIP traffic")
            case .linkBroadcastToUnicastIP: .drop("link-broadcast-to-unicast-ip", "a broadcast or multicast Ethernet frame to a VIP or this host's address, or from a backend tuple (RFC 1122 3.3.6)")
            case .backendSourceOnUplink: .drop("backend-source-on-uplink", "from a backend tuple (or a backend's ICMP error) on a side: uplink classify: spoofed or misrouted, never translated")
            case .notOurMAC: .drop("not-our-mac", "a unicast frame for another MAC than the input port's (filter_mac: true)")
            case .vlanStacked: .info("vlan-stacked", "stacked VLAN tags (QinQ): passed on as other")
            case .nonIP: .info("non-ip", "EtherType other than IPv4, IPv6, ARP: passed on as other")
            case .ipv4Options: .info("ipv4-options", "IPv4 packets with options (classified normally)")
            case .ipv6ExtensionHeaders: .info("ipv6-extension-headers", "IPv6 packets with extension headers (classified normally)")
            case .answeredARP: .info("answered-arp", "ARP requests for an owned address answered")
            case .answeredND: .info("answered-nd", "neighbour solicitations for an owned address answered")
            case .answeredEcho: .info("answered-echo", "echo requests to an owned address answered")
            case .answerNoRoom: .info("answer-no-room", "a neighbour advertisement did not fit the mbuf; the solicitation went to local")
            case .neighborLearned: .info("neighbor-learned", "neighbour entries added or changed (ARP, ND)")
            case .neighborTableFull: .info("neighbor-table-full", "a neighbour was not learned: the neighbour table is full")
            case .fragmentToVIP: .info("fragment-to-vip", "TCP/UDP fragments to a VIP handed on as vip (fragments: vip), for the fragments stage")
            }
        }
    }

    public struct Parameters: StageParameters {
        public enum Input: String, Sendable {
            /// Frames from a NIC.
            case wire
            /// Inner frames after decapsulate: only VIP traffic is valid.
            case tunnel
        }

        public var input: Input
        /// Answer ARP, neighbour solicitations and echo requests for owned addresses.
        public var answer: Bool
        /// Learn neighbours (IP → MAC) from ARP and ND into the cluster's neighbour table.
        public var learnNeighbors: Bool
        /// Drop unicast frames addressed to another MAC than the input port's, as a NIC outside
        /// promiscuous mode would (for ports that see a shared segment: af_packet, a flooding switch).
        public var filterMAC: Bool
        /// Which side of the host the input port faces; only the backends side gives `reply`.
        public var side: Side
        /// What to do with fragments to a VIP: drop them, or hand TCP/UDP ones on as `vip`
        /// (SY_META_FRAGMENT set) for a `fragments` stage before ownership-lookup.
        public var fragments: Fragments

        public enum Fragments: String, Sendable {
            case drop
            case vip
        }

        public enum Side: String, Sendable {
            /// Clients, the router, peer hosts: a packet from a backend tuple here is spoofed or misrouted.
            case uplink
            /// This host's backends: packets from their bypass tuples are replies, to be translated to the VIP.
            case backends
        }

        public init(input: Input = .wire, answer: Bool = true, learnNeighbors: Bool = true, filterMAC: Bool = false,
                    side: Side = .uplink, fragments: Fragments = .drop)
        {
            self.fragments = fragments
            self.input = input
            self.answer = answer
            self.learnNeighbors = learnNeighbors
            self.filterMAC = filterMAC
            self.side = side
        }

        public init(from map: ConfigMap, stage: StageParameterContext) throws {
            input = Input(rawValue: try map.choice("input", ["wire", "tunnel"], default: "wire"))!
            answer = try map.bool("answer", default: true)
            learnNeighbors = try map.bool("learn_neighbors", default: true)
            filterMAC = try map.bool("filter_mac", default: false)
            side = Side(rawValue: try map.choice("side", ["uplink", "backends"], default: "uplink"))!
            fragments = Fragments(rawValue: try map.choice("fragments", ["drop", "vip"], default: "drop"))!
            if input == .tunnel {
                for key in ["answer", "learn_neighbors", "filter_mac", "side"] where map.has(key) {
                    throw map.error("has no effect with input: tunnel (only VIP traffic is valid inside a tunnel)", key: key)
                }
                answer = false
                learnNeighbors = false
                filterMAC = false
                side = .uplink
            }
            // Errors of an invalid cluster section are reported on their own; a missing one is ours.
            _ = try stage.requireCluster(map, kind: Classify.kind)
        }
    }

    public static let kind = "classify"
    public static let summary = "parse frames; tell VIP flows, replies, tunnels, answers (ARP/ND/echo), local and other apart"

    /// Keeps the cluster's tables alive; the hot path reads them through the raw views below.
    let runtime: ClusterRuntime
    let storage: Storage
    let services: ServiceView
    let neighbors: NeighborView
    /// cluster.tunnel.port, host byte order.
    let tunnelPort: UInt16
    let fromTunnel: Bool
    let answers: Bool
    let learns: Bool
    let filtersMAC: Bool
    /// `side: backends`: packets from backend tuples are replies. On the uplink side they are dropped.
    let repliesAllowed: Bool
    /// `fragments: vip`: TCP/UDP fragments to a VIP go on as `vip`.
    let fragmentsToVIP: Bool
    /// The common case (CommonCase.swift) is tried first: not with `input: tunnel` or `filter_mac`.
    let tryCommonCase: Bool
    let portIDs: UnsafeMutablePointer<UInt16>
    /// Port MACs in the low 48 bits, memory order (as NeighborView stores them).
    let portMACs: UnsafeMutablePointer<UInt64>
    let portCount: Int

    public init(parameters: Parameters, context: StageContext) throws {
        runtime = try context.requireCluster(kind: Self.kind)
        if (parameters.answer || parameters.filterMAC) && context.ports.isEmpty {
            throw StageSetupError("stage '\(context.instanceName)' (classify): answer or filter_mac needs a port (its MAC)")
        }
        storage = Storage(ports: context.ports, counters: Counter.allCases.count)
        services = runtime.directory.view
        neighbors = runtime.neighbors.view
        tunnelPort = runtime.configuration.tunnel.port
        fromTunnel = parameters.input == .tunnel
        answers = parameters.answer
        learns = parameters.learnNeighbors
        filtersMAC = parameters.filterMAC
        repliesAllowed = parameters.side == .backends
        fragmentsToVIP = parameters.fragments == .vip
        tryCommonCase = !fromTunnel && !filtersMAC
        portIDs = storage.portIDs
        portMACs = storage.portMACs
        portCount = storage.portCount
    }

    public mutating func process(_ burst: PacketBurst, _ out: BurstOutput<Classify>) {
        for index in 0..<burst.count {
            // TCP/UDP to a VIP without options or extension headers: a few loads and compares.
            if tryCommonCase && commonCase(burst[index]) {
                out.send(index, to: .vip)
                continue
            }
            switch classify(burst[index], out) {
            case .send(let disposition): out.send(index, to: disposition)
            case .drop(let reason): out.drop(index, reason: reason)
            }
        }
    }

    /// Classifies one packet outside the engine: fills its `sy_meta`, rewrites answers in place,
    /// learns neighbours, and returns the disposition (and the drop reason). For tests of the stages
    /// after classify (run it in a harness's `prepare`); counters go to a private scratch block.
    public func classify(single packet: Packet) -> (disposition: Disposition, dropReason: Counter?) {
        let out = BurstOutput<Classify>(dispositions: storage.scratchDisposition, counters: storage.scratchCounters)
        switch classify(packet, out) {
        case .send(let disposition): return (disposition, nil)
        case .drop(let reason): return (.drop, reason)
        }
    }
}

/// What classify decided for one packet.
enum Outcome {
    case send(Classify.Disposition)
    case drop(Classify.Counter)
}

/// Memory of one stage instance, allocated once (never on the hot path) and freed with the stage.
final class Storage {
    let portIDs: UnsafeMutablePointer<UInt16>
    let portMACs: UnsafeMutablePointer<UInt64>
    let portCount: Int
    let scratchDisposition: UnsafeMutablePointer<UInt8>
    let scratchCounters: UnsafeMutablePointer<UInt64>

    init(ports: [PortDescription], counters: Int) {
        portCount = ports.count
        portIDs = .allocate(capacity: max(ports.count, 1))
        portMACs = .allocate(capacity: max(ports.count, 1))
        portIDs.initialize(repeating: 0, count: max(ports.count, 1))
        portMACs.initialize(repeating: 0, count: max(ports.count, 1))
        for (index, port) in ports.enumerated() {
            let m = port.mac
            portIDs[index] = port.portID
            portMACs[index] = UInt64(m.0) | UInt64(m.1) << 8 | UInt64(m.2) << 16 | UInt64(m.3) << 24
                | UInt64(m.4) << 32 | UInt64(m.5) << 40
        }
        scratchDisposition = .allocate(capacity: 1)
        scratchDisposition.initialize(to: 0)
        scratchCounters = .allocate(capacity: counters)
        scratchCounters.initialize(repeating: 0, count: counters)
    }

    deinit {
        portIDs.deallocate()
        portMACs.deallocate()
        scratchDisposition.deallocate()
        scratchCounters.deallocate()
    }
}
