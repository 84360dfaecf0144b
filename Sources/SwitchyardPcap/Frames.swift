import SwitchyardHeaders

/// Crafted test traffic: Ethernet frames with correct checksums, built layer by layer.
///
/// Every builder returns the frame's bytes without FCS. Addresses are byte arrays: 4 bytes for
/// IPv4, 16 for IPv6, 6 for MACs. Examples and tests use 198.18.0.0/15, fd00::/8 and locally
/// administered MACs (02:...).
///
///     let frame = Frames.ipv4TCP(source: [198, 18, 0, 1], destination: [198, 19, 0, 1],
///                                sourcePort: 40000, destinationPort: 80, flags: [.syn],
///                                link: .init(vlan: 100))
public enum Frames {
    // MARK: - Layer 2

    public static let defaultSourceMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01]
    public static let defaultDestinationMAC: [UInt8] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02]
    public static let broadcastMAC: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]

    /// The MAC DPDK's net_pcap gives the `index`-th pcap port it creates in a process (0, 1, ...):
    /// 02:70:63:61:70:NN ("pcap"). Frames to a port with `filter_mac: true` must be addressed to it.
    public static func netPcapMAC(_ index: Int) -> [UInt8] { [0x02, 0x70, 0x63, 0x61, 0x70, UInt8(index)] }

    /// The Ethernet header: MACs and an optional single 802.1Q tag.
    public struct Link: Sendable, Equatable {
        public var source: [UInt8]
        public var destination: [UInt8]
        /// VLAN ID (12 bits) of one 802.1Q tag, priority 0; nil for an untagged frame.
        public var vlan: UInt16?

        public init(source: [UInt8] = Frames.defaultSourceMAC, destination: [UInt8] = Frames.defaultDestinationMAC,
                    vlan: UInt16? = nil)
        {
            precondition(source.count == 6 && destination.count == 6, "MAC addresses are 6 bytes")
            self.source = source
            self.destination = destination
            self.vlan = vlan
        }
    }

    /// The named EtherTypes of the shared header layer (SwitchyardHeaders).
    public typealias EtherType = SwitchyardHeaders.EtherType

    /// An Ethernet frame (with the VLAN tag if `link` has one) around `payload`.
    public static func ethernet(link: Link = Link(), etherType: UInt16, payload: [UInt8]) -> [UInt8] {
        var frame = link.destination + link.source
        if let vlan = link.vlan { frame += be16(EtherType.vlan) + be16(vlan & 0x0fff) }
        return frame + be16(etherType) + payload
    }

    /// The bytes after the Ethernet header (and its VLAN tag, if any): the IP packet of an IP frame.
    public static func withoutEthernet(_ frame: [UInt8]) -> [UInt8] {
        var offset = 12
        while offset + 2 <= frame.count, UInt16(frame[offset]) << 8 | UInt16(frame[offset + 1]) == EtherType.vlan {
            offset += 4
        }
        return Array(frame.dropFirst(offset + 2))
    }

    // MARK: - IPv4

    /// The named IP protocol numbers of the shared header layer (SwitchyardHeaders).
    public typealias IPProtocol = SwitchyardHeaders.IPProtocol

    /// IPv4 header fields other than addresses, protocol and lengths.
    public struct IPv4Fields: Sendable, Equatable {
        public var ttl: UInt8
        public var tos: UInt8
        public var identification: UInt16
        public var dontFragment: Bool
        public var moreFragments: Bool
        /// Fragment offset in 8-byte units (13 bits).
        public var fragmentOffset: UInt16
        /// Raw option bytes; padded with zeros (End of Option List) to a multiple of 4, at most 40.
        public var options: [UInt8]

        public init(ttl: UInt8 = 64, tos: UInt8 = 0, identification: UInt16 = 1, dontFragment: Bool = false,
                    moreFragments: Bool = false, fragmentOffset: UInt16 = 0, options: [UInt8] = [])
        {
            self.ttl = ttl
            self.tos = tos
            self.identification = identification
            self.dontFragment = dontFragment
            self.moreFragments = moreFragments
            self.fragmentOffset = fragmentOffset
            self.options = options
        }
    }

    /// An IPv4 packet (no Ethernet): header with IHL, total length and header checksum filled in.
    public static func ipv4Packet(source: [UInt8], destination: [UInt8], protocol: UInt8, payload: [UInt8],
                                  fields: IPv4Fields = IPv4Fields()) -> [UInt8]
    {
        precondition(source.count == 4 && destination.count == 4, "IPv4 addresses are 4 bytes")
        var options = fields.options
        while options.count % 4 != 0 { options.append(0) }
        precondition(options.count <= 40, "IPv4 options are at most 40 bytes")
        let headerLength = 20 + options.count
        let flagsAndOffset = (fields.dontFragment ? IPv4Header.dontFragmentBit : 0)
            | (fields.moreFragments ? IPv4Header.moreFragmentsBit : 0) | (fields.fragmentOffset & IPv4Header.fragmentOffsetMask)
        var header: [UInt8] = [0x40 | UInt8(headerLength / 4), fields.tos] + be16(UInt16(headerLength + payload.count))
            + be16(fields.identification) + be16(UInt16(flagsAndOffset)) + [fields.ttl, `protocol`, 0, 0]
            + source + destination + options
        let sum = ipv4Checksum(header)
        header[10] = UInt8(sum >> 8)
        header[11] = UInt8(sum & 0xff)
        return header + payload
    }

    // MARK: - IPv6

    /// One IPv6 extension header; the chain's Next Header fields are filled in by `ipv6Packet`.
    public enum IPv6ExtensionHeader: Sendable, Equatable {
        /// Hop-by-hop options: raw option TLVs, padded with Pad1/PadN to a multiple of 8 bytes.
        case hopByHop(options: [UInt8] = [])
        /// Destination options: raw option TLVs, padded like hop-by-hop.
        case destinationOptions(options: [UInt8] = [])
        /// A routing header: 4 reserved bytes then the 16-byte addresses (the type 0/type 2 layout).
        /// With segmentsLeft 0 the IPv6 destination is the final one, so checksums use it.
        case routing(type: UInt8 = 0, segmentsLeft: UInt8 = 0, addresses: [[UInt8]])
        /// A fragment header; offset in 8-byte units (13 bits).
        case fragment(offset: UInt16 = 0, moreFragments: Bool = false, identification: UInt32 = 1)

        var protocolNumber: UInt8 {
            switch self {
            case .hopByHop: IPProtocol.hopByHop
            case .destinationOptions: IPProtocol.destinationOptions
            case .routing: IPProtocol.routing
            case .fragment: IPProtocol.fragment
            }
        }

        /// The header's bytes, given the protocol number of what follows it.
        func bytes(nextHeader: UInt8) -> [UInt8] {
            switch self {
            case .hopByHop(let options), .destinationOptions(let options):
                var body = options
                let padding = (8 - (2 + body.count) % 8) % 8
                if padding == 1 { body.append(0) } // Pad1
                if padding >= 2 { body += [1, UInt8(padding - 2)] + [UInt8](repeating: 0, count: padding - 2) } // PadN
                return [nextHeader, UInt8((2 + body.count) / 8 - 1)] + body
            case .routing(let type, let segmentsLeft, let addresses):
                precondition(addresses.allSatisfy { $0.count == 16 }, "IPv6 addresses are 16 bytes")
                return [nextHeader, UInt8(addresses.count * 2), type, segmentsLeft, 0, 0, 0, 0] + addresses.flatMap { $0 }
            case .fragment(let offset, let moreFragments, let identification):
                return [nextHeader, 0] + be16((offset & 0x1fff) << 3 | (moreFragments ? 1 : 0)) + be32(identification)
            }
        }
    }

    /// IPv6 header fields other than addresses, next header and payload length.
    public struct IPv6Fields: Sendable, Equatable {
        public var hopLimit: UInt8
        public var trafficClass: UInt8
        /// Flow label (20 bits).
        public var flowLabel: UInt32
        /// Extension headers, in order, between the IPv6 header and the upper-layer header.
        public var extensionHeaders: [IPv6ExtensionHeader]

        public init(hopLimit: UInt8 = 64, trafficClass: UInt8 = 0, flowLabel: UInt32 = 0,
                    extensionHeaders: [IPv6ExtensionHeader] = [])
        {
            self.hopLimit = hopLimit
            self.trafficClass = trafficClass
            self.flowLabel = flowLabel
            self.extensionHeaders = extensionHeaders
        }
    }

    /// An IPv6 packet (no Ethernet): the extension-header chain, then `payload` of protocol `nextHeader`.
    public static func ipv6Packet(source: [UInt8], destination: [UInt8], nextHeader: UInt8, payload: [UInt8],
                                  fields: IPv6Fields = IPv6Fields()) -> [UInt8]
    {
        precondition(source.count == 16 && destination.count == 16, "IPv6 addresses are 16 bytes")
        var chain: [UInt8] = []
        let headers = fields.extensionHeaders
        for (index, header) in headers.enumerated() {
            let next = index + 1 < headers.count ? headers[index + 1].protocolNumber : nextHeader
            chain += header.bytes(nextHeader: next)
        }
        let first = headers.first?.protocolNumber ?? nextHeader
        let versionClassFlow = 6 << 28 | UInt32(fields.trafficClass) << 20 | (fields.flowLabel & 0xfffff)
        return be32(versionClassFlow) + be16(UInt16(chain.count + payload.count)) + [first, fields.hopLimit]
            + source + destination + chain + payload
    }

    /// An IP packet of either version, chosen by the address length (4 or 16 bytes).
    public static func ipPacket(source: [UInt8], destination: [UInt8], protocol: UInt8, payload: [UInt8]) -> [UInt8] {
        source.count == 4
            ? ipv4Packet(source: source, destination: destination, protocol: `protocol`, payload: payload)
            : ipv6Packet(source: source, destination: destination, nextHeader: `protocol`, payload: payload)
    }

    /// An Ethernet frame around an IP packet; the EtherType follows the packet's version nibble.
    public static func ipFrame(_ packet: [UInt8], link: Link = Link()) -> [UInt8] {
        ethernet(link: link, etherType: packet.first.map { $0 >> 4 == 6 } == true ? EtherType.ipv6 : EtherType.ipv4,
                 payload: packet)
    }

    // MARK: - TCP and UDP

    public struct TCPFlags: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let fin = TCPFlags(rawValue: 0x01)
        public static let syn = TCPFlags(rawValue: 0x02)
        public static let rst = TCPFlags(rawValue: 0x04)
        public static let psh = TCPFlags(rawValue: 0x08)
        public static let ack = TCPFlags(rawValue: 0x10)
        public static let urg = TCPFlags(rawValue: 0x20)
        public static let ece = TCPFlags(rawValue: 0x40)
        public static let cwr = TCPFlags(rawValue: 0x80)
    }

    /// How an outer or inner UDP checksum is written.
    public enum UDPChecksum: Sendable { case computed, zero }

    /// A TCP segment (20-byte header, no options) with its checksum over the pseudo header of
    /// `source` and `destination` (IPv4 or IPv6).
    public static func tcpSegment(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16,
                                  flags: TCPFlags = [.syn], sequence: UInt32 = 1, acknowledgment: UInt32 = 0,
                                  window: UInt16 = 65535, payload: [UInt8] = []) -> [UInt8]
    {
        var segment = be16(sourcePort) + be16(destinationPort) + be32(sequence) + be32(acknowledgment)
            + [0x50, flags.rawValue] + be16(window) + [0, 0, 0, 0] + payload
        let sum = transportChecksum(source: source, destination: destination, protocol: IPProtocol.tcp, segment: segment)
        segment[16] = UInt8(sum >> 8)
        segment[17] = UInt8(sum & 0xff)
        return segment
    }

    /// A UDP datagram with its checksum over the pseudo header (a computed 0 is sent as 0xffff).
    public static func udpDatagram(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16,
                                   payload: [UInt8] = [], checksum: UDPChecksum = .computed) -> [UInt8]
    {
        var datagram = be16(sourcePort) + be16(destinationPort) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
        if checksum == .computed {
            var sum = transportChecksum(source: source, destination: destination, protocol: IPProtocol.udp,
                                        segment: datagram)
            if sum == 0 { sum = 0xffff }
            datagram[6] = UInt8(sum >> 8)
            datagram[7] = UInt8(sum & 0xff)
        }
        return datagram
    }

    /// An IPv4/TCP frame.
    public static func ipv4TCP(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16,
                               flags: TCPFlags = [.syn], sequence: UInt32 = 1, acknowledgment: UInt32 = 0,
                               payload: [UInt8] = [], ip: IPv4Fields = IPv4Fields(), link: Link = Link()) -> [UInt8]
    {
        let tcp = tcpSegment(source: source, destination: destination, sourcePort: sourcePort,
                             destinationPort: destinationPort, flags: flags, sequence: sequence,
                             acknowledgment: acknowledgment, payload: payload)
        return ipFrame(ipv4Packet(source: source, destination: destination, protocol: IPProtocol.tcp, payload: tcp,
                                  fields: ip), link: link)
    }

    /// An IPv4/UDP frame.
    public static func ipv4UDP(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16,
                               payload: [UInt8] = [], checksum: UDPChecksum = .computed, ip: IPv4Fields = IPv4Fields(),
                               link: Link = Link()) -> [UInt8]
    {
        let udp = udpDatagram(source: source, destination: destination, sourcePort: sourcePort,
                              destinationPort: destinationPort, payload: payload, checksum: checksum)
        return ipFrame(ipv4Packet(source: source, destination: destination, protocol: IPProtocol.udp, payload: udp,
                                  fields: ip), link: link)
    }

    /// An IPv6/TCP frame; extension headers (in `ip`) go before the TCP header.
    public static func ipv6TCP(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16,
                               flags: TCPFlags = [.syn], sequence: UInt32 = 1, acknowledgment: UInt32 = 0,
                               payload: [UInt8] = [], ip: IPv6Fields = IPv6Fields(), link: Link = Link()) -> [UInt8]
    {
        let tcp = tcpSegment(source: source, destination: destination, sourcePort: sourcePort,
                             destinationPort: destinationPort, flags: flags, sequence: sequence,
                             acknowledgment: acknowledgment, payload: payload)
        return ipFrame(ipv6Packet(source: source, destination: destination, nextHeader: IPProtocol.tcp, payload: tcp,
                                  fields: ip), link: link)
    }

    /// An IPv6/UDP frame; extension headers (in `ip`) go before the UDP header.
    public static func ipv6UDP(source: [UInt8], destination: [UInt8], sourcePort: UInt16, destinationPort: UInt16,
                               payload: [UInt8] = [], checksum: UDPChecksum = .computed, ip: IPv6Fields = IPv6Fields(),
                               link: Link = Link()) -> [UInt8]
    {
        let udp = udpDatagram(source: source, destination: destination, sourcePort: sourcePort,
                              destinationPort: destinationPort, payload: payload, checksum: checksum)
        return ipFrame(ipv6Packet(source: source, destination: destination, nextHeader: IPProtocol.udp, payload: udp,
                                  fields: ip), link: link)
    }

    // MARK: - ICMPv4

    /// An ICMPv4 message: type, code, checksum, the 4 bytes `rest` (identifier/sequence, MTU, ...), `body`.
    public static func icmpv4Message(type: UInt8, code: UInt8, rest: [UInt8], body: [UInt8]) -> [UInt8] {
        precondition(rest.count == 4, "the rest of the ICMP header is 4 bytes")
        var message = [type, code, 0, 0] + rest + body
        let sum = internetChecksum(message)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        return message
    }

    /// An ICMPv4 echo request (type 8).
    public static func icmpv4EchoRequest(source: [UInt8], destination: [UInt8], identifier: UInt16 = 1,
                                         sequence: UInt16 = 1, payload: [UInt8] = [], ip: IPv4Fields = IPv4Fields(),
                                         link: Link = Link()) -> [UInt8]
    {
        let icmp = icmpv4Message(type: ICMPType.echoRequest, code: 0, rest: be16(identifier) + be16(sequence), body: payload)
        return ipFrame(ipv4Packet(source: source, destination: destination, protocol: IPProtocol.icmp, payload: icmp,
                                  fields: ip), link: link)
    }

    /// An ICMPv4 echo reply (type 0).
    public static func icmpv4EchoReply(source: [UInt8], destination: [UInt8], identifier: UInt16 = 1,
                                       sequence: UInt16 = 1, payload: [UInt8] = [], ip: IPv4Fields = IPv4Fields(),
                                       link: Link = Link()) -> [UInt8]
    {
        let icmp = icmpv4Message(type: ICMPType.echoReply, code: 0, rest: be16(identifier) + be16(sequence), body: payload)
        return ipFrame(ipv4Packet(source: source, destination: destination, protocol: IPProtocol.icmp, payload: icmp,
                                  fields: ip), link: link)
    }

    /// An ICMPv4 destination unreachable (type 3) quoting `original` (an IPv4 packet without
    /// Ethernet), cut to `originalLength` bytes when given. Code 4 (fragmentation needed) carries
    /// `nextHopMTU`.
    public static func icmpv4DestinationUnreachable(source: [UInt8], destination: [UInt8], code: UInt8,
                                                    nextHopMTU: UInt16 = 0, original: [UInt8],
                                                    originalLength: Int? = nil, link: Link = Link()) -> [UInt8]
    {
        let quoted = originalLength.map { Array(original.prefix($0)) } ?? original
        let icmp = icmpv4Message(type: ICMPType.destinationUnreachable, code: code, rest: [0, 0] + be16(nextHopMTU), body: quoted)
        return ipFrame(ipv4Packet(source: source, destination: destination, protocol: IPProtocol.icmp, payload: icmp),
                       link: link)
    }

    /// An ICMPv4 time exceeded (type 11; code 0 TTL, 1 reassembly) quoting `original` like above.
    public static func icmpv4TimeExceeded(source: [UInt8], destination: [UInt8], code: UInt8 = 0, original: [UInt8],
                                          originalLength: Int? = nil, link: Link = Link()) -> [UInt8]
    {
        let quoted = originalLength.map { Array(original.prefix($0)) } ?? original
        let icmp = icmpv4Message(type: ICMPType.timeExceeded, code: code, rest: [0, 0, 0, 0], body: quoted)
        return ipFrame(ipv4Packet(source: source, destination: destination, protocol: IPProtocol.icmp, payload: icmp),
                       link: link)
    }

    // MARK: - ICMPv6

    /// An ICMPv6 message (type, code, checksum over the IPv6 pseudo header, then `body`).
    public static func icmpv6Message(source: [UInt8], destination: [UInt8], type: UInt8, code: UInt8,
                                     body: [UInt8]) -> [UInt8]
    {
        var message = [type, code, 0, 0] + body
        let sum = transportChecksum(source: source, destination: destination, protocol: IPProtocol.icmpv6,
                                    segment: message)
        message[2] = UInt8(sum >> 8)
        message[3] = UInt8(sum & 0xff)
        return message
    }

    /// An ICMPv6 echo request (type 128).
    public static func icmpv6EchoRequest(source: [UInt8], destination: [UInt8], identifier: UInt16 = 1,
                                         sequence: UInt16 = 1, payload: [UInt8] = [], ip: IPv6Fields = IPv6Fields(),
                                         link: Link = Link()) -> [UInt8]
    {
        let icmp = icmpv6Message(source: source, destination: destination, type: ICMPv6Type.echoRequest, code: 0,
                                 body: be16(identifier) + be16(sequence) + payload)
        return ipFrame(ipv6Packet(source: source, destination: destination, nextHeader: IPProtocol.icmpv6,
                                  payload: icmp, fields: ip), link: link)
    }

    /// An ICMPv6 echo reply (type 129).
    public static func icmpv6EchoReply(source: [UInt8], destination: [UInt8], identifier: UInt16 = 1,
                                       sequence: UInt16 = 1, payload: [UInt8] = [], ip: IPv6Fields = IPv6Fields(),
                                       link: Link = Link()) -> [UInt8]
    {
        let icmp = icmpv6Message(source: source, destination: destination, type: ICMPv6Type.echoReply, code: 0,
                                 body: be16(identifier) + be16(sequence) + payload)
        return ipFrame(ipv6Packet(source: source, destination: destination, nextHeader: IPProtocol.icmpv6,
                                  payload: icmp, fields: ip), link: link)
    }

    /// An ICMPv6 packet too big (type 2) with `mtu`, quoting `original` (an IPv6 packet without
    /// Ethernet), cut to `originalLength` bytes when given.
    public static func icmpv6PacketTooBig(source: [UInt8], destination: [UInt8], mtu: UInt32, original: [UInt8],
                                          originalLength: Int? = nil, link: Link = Link()) -> [UInt8]
    {
        let quoted = originalLength.map { Array(original.prefix($0)) } ?? original
        let icmp = icmpv6Message(source: source, destination: destination, type: ICMPv6Type.packetTooBig, code: 0, body: be32(mtu) + quoted)
        return ipFrame(ipv6Packet(source: source, destination: destination, nextHeader: IPProtocol.icmpv6,
                                  payload: icmp), link: link)
    }

    /// An ICMPv6 destination unreachable (type 1; code 0 no route, 1 prohibited, 3 address, 4 port)
    /// quoting `original` like above.
    public static func icmpv6DestinationUnreachable(source: [UInt8], destination: [UInt8], code: UInt8,
                                                    original: [UInt8], originalLength: Int? = nil,
                                                    link: Link = Link()) -> [UInt8]
    {
        let quoted = originalLength.map { Array(original.prefix($0)) } ?? original
        let icmp = icmpv6Message(source: source, destination: destination, type: ICMPv6Type.destinationUnreachable, code: code,
                                 body: [0, 0, 0, 0] + quoted)
        return ipFrame(ipv6Packet(source: source, destination: destination, nextHeader: IPProtocol.icmpv6,
                                  payload: icmp), link: link)
    }

    /// A neighbor solicitation (type 135) for `target`, sent from `source` to the target's
    /// solicited-node multicast address and its 33:33:ff:... MAC, hop limit 255, with a source
    /// link-layer address option carrying `sourceMAC` (left out when `source` is ::, as for DAD).
    public static func icmpv6NeighborSolicitation(source: [UInt8], target: [UInt8],
                                                  sourceMAC: [UInt8] = Frames.defaultSourceMAC,
                                                  vlan: UInt16? = nil) -> [UInt8]
    {
        precondition(target.count == 16, "IPv6 addresses are 16 bytes")
        let destination = solicitedNodeMulticast(for: target)
        let unspecified = source.allSatisfy { $0 == 0 }
        let option: [UInt8] = unspecified ? [] : [NeighborDiscoveryHeader.sourceLinkLayerOption, 1] + sourceMAC
        let icmp = icmpv6Message(source: source, destination: destination, type: ICMPv6Type.neighborSolicitation, code: 0,
                                 body: [0, 0, 0, 0] + target + option)
        let packet = ipv6Packet(source: source, destination: destination, nextHeader: IPProtocol.icmpv6, payload: icmp,
                                fields: IPv6Fields(hopLimit: ICMPv6Type.neighborDiscoveryHopLimit))
        return ipFrame(packet, link: Link(source: sourceMAC, destination: multicastMAC(for: destination), vlan: vlan))
    }

    /// ff02::1:ffXX:XXXX, from the low 24 bits of `address`.
    public static func solicitedNodeMulticast(for address: [UInt8]) -> [UInt8] {
        [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff] + address.suffix(3)
    }

    /// 33:33 followed by the low 32 bits of an IPv6 multicast address.
    public static func multicastMAC(for address: [UInt8]) -> [UInt8] {
        [0x33, 0x33] + address.suffix(4)
    }

    // MARK: - ARP

    /// An ARP request (IPv4 over Ethernet) for `targetIP`, broadcast.
    public static func arpRequest(senderMAC: [UInt8], senderIP: [UInt8], targetIP: [UInt8],
                                  vlan: UInt16? = nil) -> [UInt8]
    {
        ethernet(link: Link(source: senderMAC, destination: broadcastMAC, vlan: vlan), etherType: EtherType.arp,
                 payload: arp(opcode: ARPValue.request, senderMAC: senderMAC, senderIP: senderIP, targetMAC: [0, 0, 0, 0, 0, 0],
                              targetIP: targetIP))
    }

    /// An ARP reply (IPv4 over Ethernet) telling `targetMAC`/`targetIP` that `senderIP` is at `senderMAC`.
    public static func arpReply(senderMAC: [UInt8], senderIP: [UInt8], targetMAC: [UInt8], targetIP: [UInt8],
                                vlan: UInt16? = nil) -> [UInt8]
    {
        ethernet(link: Link(source: senderMAC, destination: targetMAC, vlan: vlan), etherType: EtherType.arp,
                 payload: arp(opcode: ARPValue.reply, senderMAC: senderMAC, senderIP: senderIP, targetMAC: targetMAC,
                              targetIP: targetIP))
    }

    /// A gratuitous ARP: a broadcast request announcing `senderIP` at `senderMAC` (target IP = sender IP).
    public static func gratuitousARP(senderMAC: [UInt8], senderIP: [UInt8], vlan: UInt16? = nil) -> [UInt8] {
        arpRequest(senderMAC: senderMAC, senderIP: senderIP, targetIP: senderIP, vlan: vlan)
    }

    static func arp(opcode: UInt16, senderMAC: [UInt8], senderIP: [UInt8], targetMAC: [UInt8],
                    targetIP: [UInt8]) -> [UInt8]
    {
        precondition(senderIP.count == 4 && targetIP.count == 4, "ARP carries IPv4 addresses")
        return be16(ARPValue.hardwareEthernet) + be16(EtherType.ipv4)
            + [ARPValue.ethernetAddressLength, ARPValue.ipv4AddressLength] + be16(opcode) + senderMAC + senderIP + targetMAC + targetIP
    }

    // MARK: - Tunnels and IPsec

    /// A GRE packet (protocol 47) with the minimal 4-byte header (no checksum, key or sequence)
    /// carrying `payload` of EtherType `protocolType` (IPv4 by default). Outer IPv4 or IPv6 by address length.
    public static func gre(source: [UInt8], destination: [UInt8], payload: [UInt8],
                           protocolType: UInt16 = EtherType.ipv4, link: Link = Link()) -> [UInt8]
    {
        ipFrame(ipPacket(source: source, destination: destination, protocol: IPProtocol.gre,
                         payload: [0, 0] + be16(protocolType) + payload), link: link)
    }

    /// An ESP packet (protocol 50): SPI, sequence number, then `payload` (opaque encrypted bytes).
    public static func esp(source: [UInt8], destination: [UInt8], spi: UInt32, sequence: UInt32,
                           payload: [UInt8] = [UInt8](repeating: 0xa5, count: 32), link: Link = Link()) -> [UInt8]
    {
        ipFrame(ipPacket(source: source, destination: destination, protocol: IPProtocol.esp,
                         payload: be32(spi) + be32(sequence) + payload), link: link)
    }

    /// A VXLAN frame: outer Ethernet/IP/UDP (to `destinationPort`, 4789 by default), the 8-byte
    /// VXLAN header with `vni`, then `inner`, a whole Ethernet frame.
    public static func vxlan(outerSource: [UInt8], outerDestination: [UInt8], sourcePort: UInt16 = 49152,
                             destinationPort: UInt16 = 4789, vni: UInt32, inner: [UInt8],
                             udpChecksum: UDPChecksum = .zero, link: Link = Link()) -> [UInt8]
    {
        let header: [UInt8] = [0x08, 0, 0, 0] + be32(vni << 8)
        let udp = udpDatagram(source: outerSource, destination: outerDestination, sourcePort: sourcePort,
                              destinationPort: destinationPort, payload: header + inner, checksum: udpChecksum)
        return ipFrame(ipPacket(source: outerSource, destination: outerDestination, protocol: IPProtocol.udp,
                                payload: udp), link: link)
    }

    /// A GUE frame: outer Ethernet/IP/UDP to `destinationPort`, a 4-byte GUE variant 0 header
    /// (version 0, C 0, hlen 0, proto 4 or 41 after the inner version, flags 0), then `inner`,
    /// an IPv4 or IPv6 packet without Ethernet.
    public static func gue(outerSource: [UInt8], outerDestination: [UInt8], sourcePort: UInt16 = 49152,
                           destinationPort: UInt16, inner: [UInt8], udpChecksum: UDPChecksum = .zero,
                           link: Link = Link()) -> [UInt8]
    {
        let innerProtocol = inner.first.map { $0 >> 4 == 6 } == true ? IPProtocol.ipv6 : IPProtocol.ipip
        let header: [UInt8] = [0, innerProtocol, 0, 0]
        let udp = udpDatagram(source: outerSource, destination: outerDestination, sourcePort: sourcePort,
                              destinationPort: destinationPort, payload: header + inner, checksum: udpChecksum)
        return ipFrame(ipPacket(source: outerSource, destination: outerDestination, protocol: IPProtocol.udp,
                                payload: udp), link: link)
    }

    // MARK: - Checksums and helpers

    /// The Internet checksum (RFC 1071) of `bytes`, odd lengths padded with a zero byte.
    public static func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count {
            sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// The header checksum of an IPv4 header (its checksum field, bytes 10-11, counted as zero).
    public static func ipv4Checksum(_ header: [UInt8]) -> UInt16 {
        var zeroed = header
        zeroed[10] = 0
        zeroed[11] = 0
        return internetChecksum(zeroed)
    }

    /// The TCP, UDP or ICMPv6 checksum of `segment` (its checksum field zero) over the IPv4 or
    /// IPv6 pseudo header of `source` and `destination`.
    public static func transportChecksum(source: [UInt8], destination: [UInt8], protocol: UInt8,
                                         segment: [UInt8]) -> UInt16
    {
        let pseudo: [UInt8] = source.count == 4
            ? source + destination + [0, `protocol`] + be16(UInt16(segment.count))
            : source + destination + be32(UInt32(segment.count)) + [0, 0, 0, `protocol`]
        return internetChecksum(pseudo + segment)
    }

    /// The first `length` bytes of `frame` (all of it when shorter).
    public static func truncated(_ frame: [UInt8], to length: Int) -> [UInt8] {
        Array(frame.prefix(length))
    }

    /// `frame` padded with zero bytes to at least `minimum` bytes (60: the Ethernet minimum without FCS).
    public static func padded(_ frame: [UInt8], to minimum: Int = 60) -> [UInt8] {
        frame + [UInt8](repeating: 0, count: max(0, minimum - frame.count))
    }

    static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }
    static func be32(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]
    }
}
