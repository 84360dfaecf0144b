import SwitchyardHeaders
import SwitchyardPcap
import Testing

/// The SwitchyardHeaders views read what the frame builder (SwitchyardPcap.Frames) wrote, hand out
/// a view only when its fixed part fits, and write what the builder would have written.
@Suite("header views (SwitchyardHeaders)")
struct HeaderViewTests {
    /// Runs `body` on a mutable copy of `frame`, `count` bytes of it visible (default: all).
    func withFrame<R>(_ frame: [UInt8], count: Int? = nil, _ body: (PacketBytes) -> R) -> R {
        var copy = frame
        return copy.withUnsafeMutableBytes { body(PacketBytes($0.baseAddress!, count: count ?? frame.count)) }
    }

    @Test("a tagged IPv4/TCP frame: link layer, IPv4 and TCP fields; no view past the end")
    func ipv4TCP() {
        let frame = Frames.ipv4TCP(source: [198, 18, 0, 1], destination: [198, 19, 0, 1], sourcePort: 40000,
                                   destinationPort: 80, flags: [.syn], link: .init(vlan: 100))
        withFrame(frame) { packet in
            let link = LinkLayer(packet)!
            #expect(link.etherType == EtherType.ipv4 && link.l3 == 18)
            // Compared in memory order: the same answers as the host-order EtherType.
            #expect(link.hasEtherType(EtherType.ipv4) && !link.hasEtherType(EtherType.ipv6))
            #expect(link.etherTypeRaw == EtherType.ipv4.bigEndian)
            let ethernet = packet.ethernet()!
            #expect(ethernet.hasEtherType(EtherType.vlan) && !ethernet.hasEtherType(EtherType.ipv4))
            #expect(ethernet.etherTypeRaw == UInt16(0x8100).bigEndian)
            #expect(packet.header(VLANTag.self, at: VLANTag.offset)!.etherTypeRaw == EtherType.ipv4.bigEndian)
            #expect(packet.header(VLANTag.self, at: VLANTag.offset)!.vlanID == 100)
            let ip = packet.header(IPv4Header.self, at: link.l3)!
            #expect(ip.version == 4 && ip.headerLength == 20 && Int(ip.totalLength) == frame.count - 18)
            #expect(ip.protocolNumber == IPProtocol.tcp && !ip.isFragment)
            withUnsafeBytes(of: ip.source) { #expect(Array($0) == [198, 18, 0, 1]) }
            let tcp = packet.header(TCPHeader.self, at: link.l3 + ip.headerLength)!
            #expect(tcp.sourcePort == 40000 && tcp.destinationPort == 80 && tcp.flags & TCPHeader.syn != 0)
            #expect(tcp.headerLength == 20)
        }
        // One byte short of the TCP header: no view; nor a link layer for 13 bytes.
        withFrame(frame, count: 18 + 20 + 19) { packet in
            #expect(packet.header(TCPHeader.self, at: 38) == nil)
            #expect(packet.header(IPv4Header.self, at: 18) != nil)
        }
        withFrame(frame, count: 13) { #expect(LinkLayer($0) == nil) }
    }

    @Test("IPv6 extension chain: hop-by-hop, routing, first fragment to UDP; a later fragment ends the walk")
    func ipv6Chain() {
        let source = [UInt8](repeating: 0, count: 15) + [1], destination = [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [2]
        let udp = Frames.udpDatagram(source: source, destination: destination, sourcePort: 1, destinationPort: 2)
        let headers: [Frames.IPv6ExtensionHeader] = [.hopByHop(), .routing(addresses: [destination]),
                                                     .fragment(offset: 0, moreFragments: true, identification: 7)]
        let first = Frames.ipFrame(Frames.ipv6Packet(source: source, destination: destination, nextHeader: IPProtocol.udp,
                                                     payload: udp, fields: .init(extensionHeaders: headers)))
        withFrame(first) { packet in
            let ip = packet.header(IPv6Header.self, at: 14)!
            let end = 14 + IPv6Header.size + Int(ip.payloadLength)
            #expect(end == first.count)
            let chain = IPv6ExtensionChain.walk(packet, from: 14 + 40, end: end, first: ip.nextHeader, maximumHeaders: 8)
            #expect(chain.failure == nil && chain.headers == 3 && chain.isFragment)
            #expect(chain.protocolNumber == IPProtocol.udp && chain.l4 == first.count - udp.count)
            let fragment = IPv6ExtensionChain.fragmentHeader(PacketBytes(packet.base, count: end), from: 14 + 40,
                                                             first: ip.nextHeader, maximumHeaders: 8)
            #expect(fragment?.identification == 7 && fragment?.moreFragments == true)
            // Too few headers allowed: malformed.
            #expect(IPv6ExtensionChain.walk(packet, from: 54, end: end, first: ip.nextHeader, maximumHeaders: 2).failure
                == .malformed)
        }
        let later = Frames.ipFrame(Frames.ipv6Packet(source: source, destination: destination, nextHeader: IPProtocol.udp,
                                                     payload: [UInt8](repeating: 9, count: 16),
                                                     fields: .init(extensionHeaders: [.fragment(offset: 2)])))
        withFrame(later) { packet in
            let chain = IPv6ExtensionChain.walk(packet, from: 54, end: later.count, first: IPProtocol.fragment,
                                                maximumHeaders: 8)
            #expect(chain.failure == nil && chain.l4 == 0 && chain.isFragment && chain.protocolNumber == IPProtocol.udp)
        }
    }

    @Test("TCP options: the MSS is found after a no-op and replaced; an option cut short is malformed")
    func tcpOptions() {
        // A 28-byte header: NOP, then MSS 1460 (its value at the odd offset 23), end of options.
        var header = [UInt8](repeating: 0, count: 28)
        header[12] = 7 << 4
        header.replaceSubrange(20..<28, with: [1, 2, 4, 0x05, 0xb4, 0, 0, 0])
        withFrame(header) { packet in
            let tcp = packet.header(TCPHeader.self, at: 0)!
            let option = tcp.findOption(TCPHeader.optionMSS, headerLength: tcp.headerLength)!
            #expect(option.offset == 21 && option.length == 4 && !option.malformed)
            #expect(tcp.be16(at: option.offset + 2) == 0x05b4)
            let change = tcp.replace16(at: option.offset + 2, with: 1200)
            #expect(change.wide && tcp.be16(at: option.offset + 2) == 1200)
            #expect(tcp.findOption(TCPHeader.optionMSS, headerLength: 22)?.malformed == true)
        }
    }

    @Test("ARP, neighbour solicitation target and solicited-node address agree with the frame builder")
    func neighbourDiscovery() {
        let arp = Frames.arpRequest(senderMAC: [2, 0, 0, 0, 0, 9], senderIP: [198, 18, 0, 9], targetIP: [198, 18, 0, 1])
        withFrame(arp) { packet in
            let link = LinkLayer(packet)!
            #expect(link.etherType == EtherType.arp && packet.ethernet()!.isGroupDestination)
            let header = packet.header(ARPHeader.self, at: link.l3)!
            #expect(header.isEthernetIPv4 && header.operation == ARPValue.request)
            withUnsafeBytes(of: header.targetAddress) { #expect(Array($0) == [198, 18, 0, 1]) }
        }
        let target: [UInt8] = [0xfd, 0] + [UInt8](repeating: 0, count: 10) + [0, 0x12, 0x34, 0x56]
        let solicitation = Frames.icmpv6NeighborSolicitation(source: [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [1],
                                                             target: target)
        withFrame(solicitation) { packet in
            let ip = packet.header(IPv6Header.self, at: 14)!
            let message = packet.header(NeighborDiscoveryHeader.self, at: 54)!
            #expect(ip.nextHeader == IPProtocol.icmpv6 && message.icmp.type == ICMPv6Type.neighborSolicitation)
            let solicited = NeighborDiscoveryHeader.solicitedNode(targetLow: message.targetLow)
            #expect(solicited.high == ip.destinationHigh && solicited.low == ip.destinationLow)
            #expect(solicited.mac == packet.ethernet()!.destination)
        }
    }

    @Test("VXLAN and GUE headers: flags, VNI, version, control bit, length and protocol")
    func tunnels() {
        withFrame([0x08, 0, 0, 0, 0x00, 0x01, 0x02, 0x00]) { packet in
            let vxlan = packet.header(VXLANHeader.self, at: 0)!
            #expect(vxlan.hasValidVNI && vxlan.vni == 0x102)
            #expect(vxlan.vniWordRaw & VXLANHeader.vniMaskRaw == VXLANHeader.vniWordRaw(0x102))
        }
        withFrame([0x02, IPProtocol.ipv6, 0, 0]) { packet in
            let gue = packet.header(GUEHeader.self, at: 0)!
            #expect(gue.version == 0 && !gue.isControl && gue.headerLength == 12 && gue.protocolNumber == IPProtocol.ipv6)
            #expect(packet.header(GUEHeader.self, at: 1) == nil)
        }
    }

    // MARK: - What classify parses with (IPLayer, ICMPQuote, TransportPorts, ND options, ARP)

    static let vip: [UInt8] = [198, 19, 0, 1], client: [UInt8] = [198, 18, 0, 7]
    static let vip6: [UInt8] = [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [1]
    static let client6: [UInt8] = [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [7]

    @Test("IPv4 header: first byte, TTL/protocol word, fixed-header sum, byte(at:); IPLayer offsets and addresses")
    func ipv4LayerAndSum() {
        let frame = Frames.ipv4UDP(source: Self.client, destination: Self.vip, sourcePort: 40000, destinationPort: 53)
        withFrame(frame) { packet in
            let ip = packet.header(IPv4Header.self, at: 14)!
            #expect(ip.versionAndHeaderLength == IPv4Header.versionAndHeaderLengthNoOptions)
            #expect(packet.byte(at: 14) == 0x45 && packet.byte(at: frame.count) == nil)
            #expect(IPv4Header.version(firstByte: 0x46) == 4 && IPv4Header.headerLength(firstByte: 0x46) == 24)
            // A right checksum folds to 0xffff; one wrong bit does not.
            var sum = ip.fixedHeaderSum
            while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
            #expect(sum == 0xffff)
            let word = ip.ttlAndProtocolRaw
            withUnsafeBytes(of: word) { #expect(Array($0) == [ip.ttl, IPProtocol.udp]) }
            let layer = IPLayer(family: 4, l3: 14, l4: 34, end: frame.count, protocolNumber: ip.protocolNumber,
                                isFragment: false)
            #expect(layer.isTCPOrUDP && !layer.isICMP)
            #expect(layer.sourceOffset == 26 && layer.destinationOffset == 30)
            #expect(packet.address(at: layer.destinationOffset, family: 4) == (UInt64(ip.destination), 0))
            let ports = packet.header(TransportPorts.self, at: 34)!
            #expect(ports.sourcePort == 40000 && ports.destinationPort == 53)
            #expect(ports.destinationPortRaw == UInt16(53).bigEndian && ports.sourcePortRaw == UInt16(40000).bigEndian)
            withUnsafeBytes(of: ports.bothRaw) { #expect(Array($0) == [0x9c, 0x40, 0, 53]) }
        }
        withFrame(frame, count: 14) { #expect($0.byte(at: 14) == nil && $0.header(TransportPorts.self, at: 34) == nil) }
        let ip6 = Frames.ipv6TCP(source: Self.client6, destination: Self.vip6, sourcePort: 1, destinationPort: 80)
        withFrame(ip6) { packet in
            let layer = IPLayer(family: 6, l3: 14, l4: 54, end: ip6.count, protocolNumber: IPProtocol.icmpv6,
                                isFragment: false)
            #expect(layer.isICMP && !layer.isTCPOrUDP && layer.sourceOffset == 22 && layer.destinationOffset == 38)
            let ip = packet.header(IPv6Header.self, at: 14)!
            #expect(packet.address(at: layer.sourceOffset, family: 6) == (ip.sourceHigh, ip.sourceLow))
        }
    }

    @Test("ICMP and ICMPv6 constants by family: errors, echo, ND types; the echo identifier and type word")
    func icmpConstants() {
        #expect(ICMPType.isError(ICMPType.timeExceeded, family: 4) && !ICMPType.isError(ICMPType.echoRequest, family: 4))
        #expect(ICMPType.isError(ICMPv6Type.packetTooBig, family: 6) && !ICMPType.isError(ICMPv6Type.echoRequest, family: 6))
        #expect(ICMPType.isEchoRequest(8, family: 4) && ICMPType.isEchoRequest(128, family: 6))
        #expect(!ICMPType.isEchoRequest(128, family: 4) && ICMPType.echoReply(family: 6) == 129)
        #expect(ICMPType.destinationUnreachable(family: 4) == 3 && ICMPType.destinationUnreachable(family: 6) == 1)
        #expect((133...137).allSatisfy(ICMPv6Type.isNeighborDiscovery) && !ICMPv6Type.isNeighborDiscovery(132))
        #expect(!ICMPv6Type.isNeighborDiscovery(138) && IPProtocol.isTCPOrUDP(6) && IPProtocol.isTCPOrUDP(17))
        #expect(!IPProtocol.isTCPOrUDP(IPProtocol.icmp))
        let echo = Frames.icmpv4EchoRequest(source: Self.client, destination: Self.vip, identifier: 0x1234)
        withFrame(echo) { packet in
            let icmp = packet.header(ICMPHeader.self, at: 34)!
            #expect(icmp.type == ICMPType.echoRequest && icmp.identifierRaw == UInt16(0x1234).bigEndian)
            withUnsafeBytes(of: icmp.typeAndCodeRaw) { #expect(Array($0) == [ICMPType.echoRequest, 0]) }
        }
    }

    @Test("ICMPQuote: an IPv4 and an IPv6 quote found; cut short, not contiguous, a later fragment")
    func icmpQuote() {
        let original = Frames.withoutEthernet(
            Frames.ipv4TCP(source: Self.vip, destination: Self.client, sourcePort: 80, destinationPort: 40000))
        let error = Frames.icmpv4DestinationUnreachable(source: Self.client, destination: Self.vip, code: 3,
                                                        original: original, originalLength: 28)
        let layer = IPLayer(family: 4, l3: 14, l4: 34, end: error.count, protocolNumber: IPProtocol.icmp, isFragment: false)
        withFrame(error) { packet in
            let quote = ICMPQuote.parse(packet, layer, maximumHeaders: 8)
            #expect(quote.failure == nil && quote.l3 == 42 && quote.l4 == 62 && quote.protocolNumber == IPProtocol.tcp)
            #expect(packet.header(TransportPorts.self, at: quote.l4)!.sourcePort == 80)
            // The IP packet ends 1 byte before the quoted ports do: truncated.
            var short = layer
            short.end -= 1
            #expect(ICMPQuote.parse(packet, short, maximumHeaders: 8).failure == .truncated)
        }
        // The packet goes on (end), but the first segment holds only the quoted IP header: not contiguous.
        withFrame(error, count: 62) { #expect(ICMPQuote.parse($0, layer, maximumHeaders: 8).failure == .notContiguous) }
        withFrame(error, count: 50) { #expect(ICMPQuote.parse($0, layer, maximumHeaders: 8).failure == .notContiguous) }
        // A quoted later fragment (offset 8 × 8 bytes) has no ports.
        let fragment = Frames.ipv4Packet(source: Self.vip, destination: Self.client, protocol: IPProtocol.udp,
                                         payload: [UInt8](repeating: 1, count: 16),
                                         fields: .init(moreFragments: true, fragmentOffset: 8))
        let fragmentError = Frames.icmpv4TimeExceeded(source: Self.client, destination: Self.vip, code: 1,
                                                      original: fragment)
        withFrame(fragmentError) { packet in
            var later = layer
            later.end = fragmentError.count
            #expect(ICMPQuote.parse(packet, later, maximumHeaders: 8).failure == .noPorts)
        }
        let original6 = Frames.withoutEthernet(
            Frames.ipv6UDP(source: Self.vip6, destination: Self.client6, sourcePort: 53, destinationPort: 40001))
        let error6 = Frames.icmpv6PacketTooBig(source: Self.client6, destination: Self.vip6, mtu: 1280, original: original6,
                                               originalLength: 48)
        let layer6 = IPLayer(family: 6, l3: 14, l4: 54, end: error6.count, protocolNumber: IPProtocol.icmpv6,
                             isFragment: false)
        withFrame(error6) { packet in
            let quote = ICMPQuote.parse(packet, layer6, maximumHeaders: 8)
            #expect(quote.failure == nil && quote.l3 == 62 && quote.l4 == 102 && quote.protocolNumber == IPProtocol.udp)
            var short = layer6
            short.end = 62 + 40 + 7
            #expect(ICMPQuote.parse(packet, short, maximumHeaders: 8).failure == .truncated)
        }
        withFrame(error6, count: 101) { #expect(ICMPQuote.parse($0, layer6, maximumHeaders: 8).failure == .notContiguous) }
    }

    @Test("neighbour discovery: the link-layer option is found, a malformed one is nil; multicast target; all nodes")
    func neighbourOptions() {
        let target: [UInt8] = [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [1]
        let mac: [UInt8] = [2, 0, 0, 0, 0, 0x42]
        let solicitation = Frames.icmpv6NeighborSolicitation(source: Self.client6, target: target, sourceMAC: mac)
        withFrame(solicitation) { packet in
            let message = packet.header(NeighborDiscoveryHeader.self, at: 54)!
            let length = solicitation.count - 54
            #expect(!message.targetIsMulticast && length == NeighborDiscoveryHeader.sizeWithLinkLayerOption)
            let option = message.linkLayerOption(NeighborDiscoveryHeader.sourceLinkLayerOption, length: length)
            #expect(option == 26)
            var word: UInt64 = 0
            withUnsafeMutableBytes(of: &word) { $0.copyBytes(from: mac) }
            #expect(message.mac(at: option!) == word)
            // No target link-layer option in a solicitation.
            #expect(message.linkLayerOption(NeighborDiscoveryHeader.targetLinkLayerOption, length: length) == 0)
            // The option's length byte says 2 units (16 bytes): past the message, malformed.
            packet.base.storeBytes(of: UInt8(2), toByteOffset: 54 + 25, as: UInt8.self)
            #expect(message.linkLayerOption(NeighborDiscoveryHeader.sourceLinkLayerOption, length: length) == nil)
            // Length 0 is malformed too; a lone option byte (no length) as well.
            packet.base.storeBytes(of: UInt8(0), toByteOffset: 54 + 25, as: UInt8.self)
            #expect(message.linkLayerOption(NeighborDiscoveryHeader.sourceLinkLayerOption, length: length) == nil)
            #expect(message.linkLayerOption(NeighborDiscoveryHeader.sourceLinkLayerOption, length: 25) == nil)
            packet.base.storeBytes(of: UInt8(0xff), toByteOffset: 54 + 8, as: UInt8.self)
            #expect(message.targetIsMulticast)
        }
        withFrame(solicitation, count: 54 + 23) { #expect($0.header(NeighborDiscoveryHeader.self, at: 54) == nil) }
        withUnsafeBytes(of: NeighborDiscoveryHeader.allNodesMAC) { #expect(Array($0.prefix(6)) == [0x33, 0x33, 0, 0, 0, 1]) }
        withUnsafeBytes(of: (NeighborDiscoveryHeader.allNodesHigh, NeighborDiscoveryHeader.allNodesLow)) {
            #expect(Array($0) == [0xff, 2] + [UInt8](repeating: 0, count: 13) + [1])
        }
    }

    @Test("ARP: fields and the reply written in place; cut short, no view")
    func arpReplyInPlace() {
        let request = Frames.arpRequest(senderMAC: [2, 0, 0, 0, 0, 9], senderIP: Self.client, targetIP: Self.vip,
                                        vlan: 7)
        let reply = Frames.arpReply(senderMAC: [2, 0, 0, 0, 0, 1], senderIP: Self.vip, targetMAC: [2, 0, 0, 0, 0, 9],
                                    targetIP: Self.client, vlan: 7)
        withFrame(request) { packet in
            let link = LinkLayer(packet)!
            #expect(link.etherType == EtherType.arp && link.l3 == 18)
            let arp = packet.header(ARPHeader.self, at: link.l3)!
            #expect(arp.isEthernetIPv4 && arp.operation == ARPValue.request)
            let sender = arp.senderMAC, senderIP = arp.senderAddress
            var ours: UInt64 = 0
            withUnsafeMutableBytes(of: &ours) { $0.copyBytes(from: [2, 0, 0, 0, 0, 1] as [UInt8]) }
            arp.operation = ARPValue.reply
            arp.targetMAC = sender
            arp.targetAddress = senderIP
            arp.senderMAC = ours
            arp.senderAddress = Self.vip.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            let ethernet = packet.ethernet()!
            ethernet.destination = sender
            ethernet.source = ours
            #expect(Array(UnsafeRawBufferPointer(start: packet.base, count: packet.count)) == reply)
        }
        withFrame(request, count: 18 + 27) { #expect($0.header(ARPHeader.self, at: 18) == nil) }
        // Not Ethernet/IPv4: hardware length 8.
        var odd = request
        odd[18 + 4] = 8
        withFrame(odd) { #expect(!$0.header(ARPHeader.self, at: 18)!.isEthernetIPv4) }
    }
}
