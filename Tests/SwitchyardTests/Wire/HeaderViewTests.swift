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
}
