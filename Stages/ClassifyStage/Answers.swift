import CDPDK
import SwitchyardCluster
import SwitchyardCore
import SwitchyardHeaders

/// ARP, neighbour discovery and echo: what classify answers for owned addresses (every VIP and
/// this host's address) and what it learns into the cluster's neighbour table.
///
///     ARP request for an owned address ──► ARP reply        (same frame, rewritten)
///     NS for an owned IPv6 address     ──► NA, S and O set  (same mbuf, 72 bytes after Ethernet)
///     echo request to an owned address ──► echo reply       (addresses swapped, TTL/hop limit 64)
///
/// Answers leave from the port the request came in on: Ethernet source = that port's MAC,
/// destination = the requester's MAC; a VLAN tag stays where it is.
extension Classify {
    /// The MAC of the port a packet came in on (the first port when the id is unknown).
    @inline(__always)
    func portMAC(_ packet: Packet) -> UInt64 {
        let port = packet.inputPort
        for index in 0..<portCount where portIDs[index] == port { return portMACs[index] }
        return portMACs[0]
    }

    @inline(__always)
    func isOwned(_ kind: (kind: ServiceDirectory.AddressKind, hostID: UInt16)?) -> Bool {
        kind?.kind == .vip || kind?.kind == .localHost
    }

    /// The TTL (IPv4) and hop limit (IPv6) of an echo reply.
    static let answerHopLimit: UInt8 = 64

    // MARK: - ARP

    /// ARP (Ethernet/IPv4 only): learn the sender, answer requests for owned addresses.
    @inline(__always)
    func arp(_ packet: Packet, _ frame: Frame, l3: Int, _ out: BurstOutput<Classify>) -> Outcome {
        guard let arp = frame.packet.header(ARPHeader.self, at: l3) else {
            return frame.short(.malformedARP, needs: l3 + ARPHeader.size)
        }
        guard arp.isEthernetIPv4 else { return .drop(.malformedARP) }
        let operation = arp.operation
        guard operation == ARPValue.request || operation == ARPValue.reply else { return .send(.other) }
        let senderIP = arp.senderAddress
        let targetIP = arp.targetAddress
        let targetOwned = isOwned(services.classify(address: UInt64(targetIP), low: 0, family: 4))
        if learns && senderIP != 0 && !isOwned(services.classify(address: UInt64(senderIP), low: 0, family: 4)) {
            learn(family: 4, high: UInt64(senderIP), low: 0, mac: arp.senderMAC, addressedToUs: targetOwned, out)
        }
        guard targetOwned else { return .send(.other) }
        guard operation == ARPValue.request && answers else { return .send(.local) }

        // The request becomes the reply in place: same length, same VLAN tag, same padding.
        let ourMAC = portMAC(packet)
        let requesterMAC = arp.senderMAC
        arp.operation = ARPValue.reply
        arp.senderMAC = ourMAC
        arp.senderAddress = targetIP
        arp.targetMAC = requesterMAC
        arp.targetAddress = senderIP
        frame.ethernet.destination = requesterMAC
        frame.ethernet.source = ourMAC
        out.count(.answeredARP)
        return .send(.answer)
    }

    // MARK: - Neighbour discovery

    /// Neighbour solicitations and advertisements (RFC 4861 7.1 checks); other ND types are other.
    @inline(__always)
    func neighborDiscovery(_ packet: Packet, _ frame: Frame, _ ip: IPLayer, type: UInt8,
                           _ out: BurstOutput<Classify>) -> Outcome
    {
        let isSolicitation = type == ICMPv6Type.neighborSolicitation
        guard isSolicitation || type == ICMPv6Type.neighborAdvertisement else { return .send(.other) }
        let l4 = ip.l4
        let size = ip.end - l4
        // The fixed IPv6 header was checked by parseIPv6, the ICMPv6 header by checkTransport.
        let ipv6 = IPv6Header(unchecked: frame.bytes + ip.l3)
        guard ipv6.hopLimit == ICMPv6Type.neighborDiscoveryHopLimit, frame.icmp(ip).code == 0,
              size >= NeighborDiscoveryHeader.size
        else { return .drop(.malformedND) }
        guard frame.has(ip.end) else { return frame.short(.malformedND, needs: ip.end) }
        // The whole message is in the first segment (checked just above).
        let message = NeighborDiscoveryHeader(unchecked: frame.bytes + l4)
        // Rare and small: the whole checksum is verified before anything is learned or answered.
        let pseudo = Checksum.pseudoHeader(ip: ipv6.raw, family: 6, protocolNumber: IPProtocol.icmpv6, length: size)
        guard Checksum.complete(message.raw, count: size, initial: pseudo) == 0 else { return .drop(.malformedND) }
        let target = (high: message.targetHigh, low: message.targetLow)
        guard !message.targetIsMulticast else { return .drop(.malformedND) }

        // The sender's link-layer address in a solicitation, the target's in an advertisement.
        guard let option = message.linkLayerOption(
            isSolicitation ? NeighborDiscoveryHeader.sourceLinkLayerOption : NeighborDiscoveryHeader.targetLinkLayerOption,
            length: size)
        else { return .drop(.malformedND) }
        let hasLinkLayer = option != 0

        if !isSolicitation {
            let destinationOwned = isOwned(services.classify(address: ipv6.destinationHigh, low: ipv6.destinationLow,
                                                             family: 6))
            if learns && hasLinkLayer && !isOwned(services.classify(address: target.high, low: target.low, family: 6)) {
                learn(family: 6, high: target.high, low: target.low, mac: message.mac(at: option),
                      addressedToUs: destinationOwned, out)
            }
            return destinationOwned ? .send(.local) : .send(.other)
        }

        let source = (high: ipv6.sourceHigh, low: ipv6.sourceLow)
        let unspecified = source.high == 0 && source.low == 0
        // Duplicate address detection comes from :: and must not carry a link-layer option.
        if unspecified && hasLinkLayer { return .drop(.malformedND) }
        let targetOwned = isOwned(services.classify(address: target.high, low: target.low, family: 6))
        if learns && !unspecified && hasLinkLayer {
            learn(family: 6, high: source.high, low: source.low, mac: message.mac(at: option), addressedToUs: targetOwned,
                  out)
        }
        guard targetOwned else { return .send(.other) }
        guard answers else { return .send(.local) }

        // The advertisement replaces everything after Ethernet: IPv6 header (40) + NA (24) + option (8).
        // Read what is needed from the solicitation before the mbuf is resized (a shorter one grows).
        let ourMAC = portMAC(packet)
        let requesterMAC = hasLinkLayer ? message.mac(at: option) : frame.ethernet.source
        let messageLength = NeighborDiscoveryHeader.sizeWithLinkLayerOption
        let length = ip.l3 + IPv6Header.size + messageLength
        guard sy_pktmbuf_set_length(packet.mbuf, UInt16(length)) else {
            out.count(.answerNoRoom)
            return .send(.local)
        }
        // `length` bytes are in the (possibly grown) first segment: set_length succeeded.
        let l3 = ip.l3
        let bytes = packet.bytes
        let ethernet = EthernetHeader(unchecked: bytes)
        // Solicited: unicast back to the solicitor. DAD (from ::): to all nodes, S clear (RFC 4861 7.2.4).
        ethernet.destination = unspecified ? NeighborDiscoveryHeader.allNodesMAC : requesterMAC
        ethernet.source = ourMAC
        let answer = IPv6Header(unchecked: bytes + l3)
        answer.setVersionNoClassNoFlow()
        answer.payloadLength = UInt16(messageLength)
        answer.nextHeader = IPProtocol.icmpv6
        answer.hopLimit = ICMPv6Type.neighborDiscoveryHopLimit
        answer.sourceHigh = target.high
        answer.sourceLow = target.low
        // Back to the solicitor; DAD to ff02::1 (all nodes).
        answer.destinationHigh = unspecified ? NeighborDiscoveryHeader.allNodesHigh : source.high
        answer.destinationLow = unspecified ? NeighborDiscoveryHeader.allNodesLow : source.low
        let advertisement = NeighborDiscoveryHeader(unchecked: bytes + l3 + IPv6Header.size)
        advertisement.icmp.start(type: ICMPv6Type.neighborAdvertisement, code: 0)
        advertisement.icmp.rest = unspecified ? NeighborDiscoveryHeader.overrideFlag
            : NeighborDiscoveryHeader.solicitedFlag | NeighborDiscoveryHeader.overrideFlag
        advertisement.targetHigh = target.high
        advertisement.targetLow = target.low
        advertisement.setLinkLayerOption(type: NeighborDiscoveryHeader.targetLinkLayerOption, mac: ourMAC)
        advertisement.icmp.checksum = Checksum.complete(
            advertisement.raw, count: messageLength,
            initial: Checksum.pseudoHeader(ip: answer.raw, family: 6, protocolNumber: IPProtocol.icmpv6,
                                           length: messageLength))
        packet.meta.pointee.l4 = UInt16(truncatingIfNeeded: l3 + IPv6Header.size)
        packet.meta.pointee.l3_end = UInt16(truncatingIfNeeded: length)
        out.count(.answeredND)
        return .send(.answer)
    }

    // MARK: - Echo

    /// The echo request becomes the reply: addresses swapped, TTL/hop limit 64, type changed,
    /// checksums updated incrementally (RFC 1624), so a request with a bad checksum gets a reply
    /// with a bad checksum and nothing is summed over the payload. IPv4 options stay as they came.
    @inline(__always)
    func echoReply(_ packet: Packet, _ frame: Frame, _ ip: IPLayer, _ out: BurstOutput<Classify>) -> Outcome {
        // parseIPv4/parseIPv6 checked the IP header, checkTransport the ICMP header.
        if ip.family == 4 {
            let ipv4 = IPv4Header(unchecked: frame.bytes + ip.l3)
            let source = ipv4.source
            ipv4.source = ipv4.destination
            ipv4.destination = source
            // Swapping two words leaves the header sum alone; the TTL word changes it.
            let oldTTL = ipv4.ttlAndProtocolRaw
            ipv4.ttl = Self.answerHopLimit
            ipv4.checksum = Checksum.adjust(ipv4.checksum, old: oldTTL, new: ipv4.ttlAndProtocolRaw)
        } else {
            let ipv6 = IPv6Header(unchecked: frame.bytes + ip.l3)
            let sourceHigh = ipv6.sourceHigh, sourceLow = ipv6.sourceLow
            ipv6.sourceHigh = ipv6.destinationHigh
            ipv6.sourceLow = ipv6.destinationLow
            ipv6.destinationHigh = sourceHigh
            ipv6.destinationLow = sourceLow
            ipv6.hopLimit = Self.answerHopLimit
        }
        // ICMPv6's pseudo header holds both addresses: swapped, its sum is the same.
        let icmp = frame.icmp(ip)
        let oldType = icmp.typeAndCodeRaw
        icmp.type = ICMPType.echoReply(family: ip.family)
        icmp.checksum = Checksum.adjust(icmp.checksum, old: oldType, new: icmp.typeAndCodeRaw)
        let ethernet = frame.ethernet
        ethernet.destination = ethernet.source
        ethernet.source = portMAC(packet)
        out.count(.answeredEcho)
        return .send(.answer)
    }

    // MARK: - Learning

    /// Records `address` → `mac` in the neighbour table. Only neighbours that talk to an owned
    /// address are added; others already known are refreshed. A busy shared segment therefore
    /// cannot fill the fixed-size table with hosts the engine never sends to.
    @inline(__always)
    func learn(family: UInt8, high: UInt64, low: UInt64, mac: UInt64, addressedToUs: Bool, _ out: BurstOutput<Classify>) {
        // Multicast/broadcast (group bit) and all-zero MACs are no neighbour's address.
        guard mac & 1 == 0, mac != 0 else { return }
        let current = neighbors.find(family: family, high: high, low: low)
        let known = current >> 63 != 0
        if !known && !addressedToUs { return }
        // Unchanged, or a static entry learning must not replace.
        if known && (current & 0xffff_ffff_ffff == mac || current & (1 << 62) != 0) { return }
        var word = mac
        if withUnsafeBytes(of: &word, { neighbors.learn(family: family, high: high, low: low, macPointer: $0.baseAddress!) }) {
            out.count(.neighborLearned)
        } else {
            out.count(.neighborTableFull)
        }
    }
}
