import CDPDK
import SwitchyardCluster
import SwitchyardCore

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

    /// 33:33:00:00:00:01 as a MAC word (memory order on a little-endian CPU, as NeighborView keeps MACs).
    static let allNodesMAC: UInt64 = 0x33 | 0x33 << 8 | 0x01 << 40

    // MARK: - ARP

    /// ARP (Ethernet/IPv4 only): learn the sender, answer requests for owned addresses.
    @inline(__always)
    func arp(_ packet: Packet, _ frame: Frame, l3 arp: Int, _ out: BurstOutput<Classify>) -> Outcome {
        guard frame.has(arp + 28) else { return frame.short(.malformedARP, needs: arp + 28) }
        guard frame.be16(arp) == 1, frame.be16(arp + 2) == 0x0800, frame.u8(arp + 4) == 6, frame.u8(arp + 5) == 4 else {
            return .drop(.malformedARP)
        }
        let operation = frame.be16(arp + 6)
        guard operation == 1 || operation == 2 else { return .send(.other) }
        let senderIP = frame.raw32(arp + 14)
        let targetIP = frame.raw32(arp + 24)
        let targetOwned = isOwned(services.classify(address: UInt64(targetIP), low: 0, family: 4))
        if learns && senderIP != 0 && !isOwned(services.classify(address: UInt64(senderIP), low: 0, family: 4)) {
            learn(family: 4, high: UInt64(senderIP), low: 0, mac: frame.mac(arp + 8), addressedToUs: targetOwned, out)
        }
        guard targetOwned else { return .send(.other) }
        guard operation == 1 && answers else { return .send(.local) }

        // The request becomes the reply in place: same length, same VLAN tag, same padding.
        let ourMAC = portMAC(packet)
        let requesterMAC = frame.mac(arp + 8)
        frame.storeBE16(2, at: arp + 6)
        frame.storeMAC(ourMAC, at: arp + 8)
        frame.bytes.storeBytes(of: targetIP, toByteOffset: arp + 14, as: UInt32.self)
        frame.storeMAC(requesterMAC, at: arp + 18)
        frame.bytes.storeBytes(of: senderIP, toByteOffset: arp + 24, as: UInt32.self)
        frame.storeMAC(requesterMAC, at: 0)
        frame.storeMAC(ourMAC, at: 6)
        out.count(.answeredARP)
        return .send(.answer)
    }

    // MARK: - Neighbour discovery

    /// Neighbour solicitations and advertisements (RFC 4861 7.1 checks); other ND types are other.
    @inline(__always)
    func neighborDiscovery(_ packet: Packet, _ frame: Frame, _ ip: IPLayer, type: UInt8,
                           _ out: BurstOutput<Classify>) -> Outcome
    {
        guard type == 135 || type == 136 else { return .send(.other) }
        let l4 = ip.l4
        let size = ip.end - l4
        guard frame.u8(ip.l3 + 7) == 255, frame.u8(l4 + 1) == 0, size >= 24 else { return .drop(.malformedND) }
        guard frame.has(ip.end) else { return frame.short(.malformedND, needs: ip.end) }
        // Rare and small: the whole checksum is verified before anything is learned or answered.
        let pseudo = Checksum.pseudoHeader(ip: frame.bytes + ip.l3, family: 6, protocolNumber: 58, length: size)
        guard Checksum.complete(frame.bytes + l4, count: size, initial: pseudo) == 0 else { return .drop(.malformedND) }
        let target = frame.address(l4 + 8, family: 6)
        guard frame.u8(l4 + 8) != 0xff else { return .drop(.malformedND) }

        // Options: type, length in 8-byte units (never 0), within the message.
        var linkLayer = 0
        var option = l4 + 24
        while option < ip.end {
            guard option + 2 <= ip.end else { return .drop(.malformedND) }
            let length = Int(frame.u8(option + 1)) * 8
            guard length > 0, option + length <= ip.end else { return .drop(.malformedND) }
            // Source link-layer address (1) in a solicitation, target link-layer address (2) in an advertisement.
            if frame.u8(option) == (type == 135 ? 1 : 2) && length >= 8 { linkLayer = option + 2 }
            option += length
        }

        if type == 136 {
            let destinationOwned = isOwned(services.classify(address: frame.raw64(ip.l3 + 24),
                                                             low: frame.raw64(ip.l3 + 32), family: 6))
            if learns && linkLayer != 0 && !isOwned(services.classify(address: target.high, low: target.low, family: 6)) {
                learn(family: 6, high: target.high, low: target.low, mac: frame.mac(linkLayer),
                      addressedToUs: destinationOwned, out)
            }
            return destinationOwned ? .send(.local) : .send(.other)
        }

        let source = frame.address(ip.sourceOffset, family: 6)
        let unspecified = source.high == 0 && source.low == 0
        // Duplicate address detection comes from :: and must not carry a link-layer option.
        if unspecified && linkLayer != 0 { return .drop(.malformedND) }
        let targetOwned = isOwned(services.classify(address: target.high, low: target.low, family: 6))
        if learns && !unspecified && linkLayer != 0 {
            learn(family: 6, high: source.high, low: source.low, mac: frame.mac(linkLayer), addressedToUs: targetOwned, out)
        }
        guard targetOwned else { return .send(.other) }
        guard answers else { return .send(.local) }

        // The advertisement replaces everything after Ethernet: IPv6 header (40) + NA (24) + option (8).
        // Read what is needed from the solicitation before the mbuf is resized (a shorter one grows).
        let ourMAC = portMAC(packet)
        let requesterMAC = linkLayer != 0 ? frame.mac(linkLayer) : frame.mac(6)
        let length = ip.l3 + 72
        guard sy_pktmbuf_set_length(packet.mbuf, UInt16(length)) else {
            out.count(.answerNoRoom)
            return .send(.local)
        }
        let l3 = ip.l3
        let bytes = frame.bytes
        // Solicited: unicast back to the solicitor. DAD (from ::): to all nodes, S clear (RFC 4861 7.2.4).
        frame.storeMAC(unspecified ? Self.allNodesMAC : requesterMAC, at: 0)
        frame.storeMAC(ourMAC, at: 6)
        bytes.storeBytes(of: UInt32(0x6000_0000).bigEndian, toByteOffset: l3, as: UInt32.self)
        frame.storeBE16(32, at: l3 + 4)
        bytes.storeBytes(of: UInt8(58), toByteOffset: l3 + 6, as: UInt8.self)
        bytes.storeBytes(of: UInt8(255), toByteOffset: l3 + 7, as: UInt8.self)
        bytes.storeBytes(of: target.high, toByteOffset: l3 + 8, as: UInt64.self)
        bytes.storeBytes(of: target.low, toByteOffset: l3 + 16, as: UInt64.self)
        // Back to the solicitor; DAD to ff02::1 (all nodes).
        bytes.storeBytes(of: unspecified ? UInt64(0xff02_0000_0000_0000).bigEndian : source.high, toByteOffset: l3 + 24,
                         as: UInt64.self)
        bytes.storeBytes(of: unspecified ? UInt64(1).bigEndian : source.low, toByteOffset: l3 + 32, as: UInt64.self)
        let icmp = l3 + 40
        bytes.storeBytes(of: UInt32(0x8800_0000).bigEndian, toByteOffset: icmp, as: UInt32.self) // type 136, code 0, checksum 0
        bytes.storeBytes(of: UInt32(unspecified ? 0x2000_0000 : 0x6000_0000).bigEndian, toByteOffset: icmp + 4,
                         as: UInt32.self) // S (solicited) and O (override)
        bytes.storeBytes(of: target.high, toByteOffset: icmp + 8, as: UInt64.self)
        bytes.storeBytes(of: target.low, toByteOffset: icmp + 16, as: UInt64.self)
        bytes.storeBytes(of: UInt16(0x0201).bigEndian, toByteOffset: icmp + 24, as: UInt16.self) // target link-layer, 1 unit
        frame.storeMAC(ourMAC, at: icmp + 26)
        let checksum = Checksum.complete(bytes + icmp, count: 32,
                                         initial: Checksum.pseudoHeader(ip: bytes + l3, family: 6, protocolNumber: 58,
                                                                        length: 32))
        bytes.storeBytes(of: checksum, toByteOffset: icmp + 2, as: UInt16.self)
        packet.meta.pointee.l4 = UInt16(truncatingIfNeeded: icmp)
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
        let bytes = frame.bytes
        let l3 = ip.l3
        let l4 = ip.l4
        if ip.family == 4 {
            let source = frame.raw32(l3 + 12)
            bytes.storeBytes(of: frame.raw32(l3 + 16), toByteOffset: l3 + 12, as: UInt32.self)
            bytes.storeBytes(of: source, toByteOffset: l3 + 16, as: UInt32.self)
            // Swapping two words leaves the header sum alone; the TTL word changes it.
            let oldTTL = frame.raw16(l3 + 8)
            bytes.storeBytes(of: UInt8(64), toByteOffset: l3 + 8, as: UInt8.self)
            bytes.storeBytes(of: Checksum.adjust(frame.raw16(l3 + 10), old: oldTTL, new: frame.raw16(l3 + 8)),
                             toByteOffset: l3 + 10, as: UInt16.self)
        } else {
            let sourceHigh = frame.raw64(l3 + 8), sourceLow = frame.raw64(l3 + 16)
            bytes.storeBytes(of: frame.raw64(l3 + 24), toByteOffset: l3 + 8, as: UInt64.self)
            bytes.storeBytes(of: frame.raw64(l3 + 32), toByteOffset: l3 + 16, as: UInt64.self)
            bytes.storeBytes(of: sourceHigh, toByteOffset: l3 + 24, as: UInt64.self)
            bytes.storeBytes(of: sourceLow, toByteOffset: l3 + 32, as: UInt64.self)
            bytes.storeBytes(of: UInt8(64), toByteOffset: l3 + 7, as: UInt8.self)
        }
        // ICMPv6's pseudo header holds both addresses: swapped, its sum is the same.
        let oldType = frame.raw16(l4)
        bytes.storeBytes(of: UInt8(ip.family == 4 ? 0 : 129), toByteOffset: l4, as: UInt8.self)
        bytes.storeBytes(of: Checksum.adjust(frame.raw16(l4 + 2), old: oldType, new: frame.raw16(l4)),
                         toByteOffset: l4 + 2, as: UInt16.self)
        frame.storeMAC(frame.mac(6), at: 0)
        frame.storeMAC(portMAC(packet), at: 6)
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
