import CDPDK
import SwitchyardCluster
import SwitchyardCore
import SwitchyardHeaders

/// One frame as classify parses it: the SwitchyardHeaders views of its first segment (`packet`,
/// `packet.count` contiguous bytes) and the length of the whole packet.
///
/// Every header is read through a view that `packet` hands out only when the header fits (or
/// after an explicit `has` check of its full length, for headers whose length is in a field).
/// A header that does not fit is `truncated` when the packet really ends there, and
/// `headers-not-contiguous` when it goes on in another segment (we never gather headers across
/// segments).
struct Frame {
    let packet: PacketBytes
    let length: Int

    @inline(__always) init(_ packet: Packet) {
        self.packet = PacketBytes(packet.bytes, count: packet.contiguousLength)
        length = packet.length
    }

    @inline(__always) var bytes: UnsafeMutableRawPointer { packet.base }

    @inline(__always) func has(_ end: Int) -> Bool { end <= packet.count }

    @inline(__always) func short(_ reason: Classify.Counter, needs end: Int) -> Outcome {
        end <= length ? .drop(.headersNotContiguous) : .drop(reason)
    }

    /// The Ethernet header; `classify` checked that it fits before anything else.
    @inline(__always) var ethernet: EthernetHeader { EthernetHeader(unchecked: packet.base) }

    /// The ICMP header at `ip.l4`: `checkTransport` checked its 8 bytes.
    @inline(__always) func icmp(_ ip: IPLayer) -> ICMPHeader { ICMPHeader(unchecked: packet.base + ip.l4) }

    /// The ports at `l4` (a packet's or a quote's transport header): `checkTransport` or
    /// `ICMPQuote.parse` checked at least 8 bytes there.
    @inline(__always) func ports(_ l4: Int) -> TransportPorts { TransportPorts(unchecked: packet.base + l4) }

    /// The address of `family` at `offset`, in `IPAddress` words.
    @inline(__always) func address(_ offset: Int, family: UInt8) -> (high: UInt64, low: UInt64) {
        packet.address(at: offset, family: family)
    }
}

extension ICMPQuote.Failure {
    /// The drop counter of a quote no flow can be named from.
    @inline(__always) var counter: Classify.Counter {
        switch self {
        case .truncated: .icmpErrorTruncated
        case .notContiguous: .headersNotContiguous
        case .noPorts: .icmpErrorUnmatched
        }
    }
}

extension Classify {
    /// At most this many IPv6 extension headers are walked (RFC 8200 recommends few; a long chain
    /// is a way to hide the transport header from middleboxes).
    static let maximumExtensionHeaders = 8

    /// Parses an IPv4 header at `l3`: version, IHL, total length against the frame, header checksum.
    @inline(__always)
    func parseIPv4(_ frame: Frame, l3: Int, _ out: BurstOutput<Classify>) -> (IPLayer?, Outcome?) {
        // The first byte decides how long the header is (and a wrong version is reported as such
        // even when the rest is cut short), so it is read before the header's view is made.
        guard let versionIHL = frame.packet.byte(at: l3) else {
            return (nil, frame.short(.truncatedIPv4, needs: l3 + IPv4Header.size))
        }
        guard IPv4Header.version(firstByte: versionIHL) == 4 else { return (nil, .drop(.ipBadVersion)) }
        let headerLength = IPv4Header.headerLength(firstByte: versionIHL)
        guard headerLength >= IPv4Header.size else { return (nil, .drop(.ipv4BadHeaderLength)) }
        guard frame.has(l3 + headerLength) else { return (nil, frame.short(.truncatedIPv4, needs: l3 + headerLength)) }
        // headerLength >= 20 bytes at l3 are in the first segment (checked just above).
        let ip = IPv4Header(unchecked: frame.bytes + l3)
        let totalLength = Int(ip.totalLength)
        guard totalLength >= headerLength, l3 + totalLength <= frame.length else {
            return (nil, .drop(.ipv4BadTotalLength))
        }
        // Verified in software: a one's-complement sum over 20 bytes is a few adds, and a corrupt
        // header must not be translated (an incremental update would make its checksum look right).
        guard Checksum.fold(Checksum.sum(ip.raw, count: headerLength)) == 0xffff else {
            return (nil, .drop(.ipv4BadChecksum))
        }
        if headerLength > IPv4Header.size { out.count(.ipv4Options) }
        return (IPLayer(family: 4, l3: l3, l4: ip.fragmentOffset == 0 ? l3 + headerLength : 0, end: l3 + totalLength,
                        protocolNumber: ip.protocolNumber, isFragment: ip.isFragment), nil)
    }

    /// Parses an IPv6 header at `l3` and walks its extension headers.
    @inline(__always)
    func parseIPv6(_ frame: Frame, l3: Int, _ out: BurstOutput<Classify>) -> (IPLayer?, Outcome?) {
        guard let ip = frame.packet.header(IPv6Header.self, at: l3) else {
            return (nil, frame.short(.truncatedIPv6, needs: l3 + IPv6Header.size))
        }
        guard ip.version == 6 else { return (nil, .drop(.ipBadVersion)) }
        let end = l3 + IPv6Header.size + Int(ip.payloadLength)
        guard end <= frame.length else { return (nil, .drop(.ipv6BadPayloadLength)) }
        let chain = IPv6ExtensionChain.walk(frame.packet, from: l3 + IPv6Header.size, end: end, first: ip.nextHeader,
                                            maximumHeaders: Self.maximumExtensionHeaders)
        switch chain.failure {
        case .malformed?: return (nil, .drop(.ipv6ExtensionChain))
        case .notContiguous?: return (nil, .drop(.headersNotContiguous))
        case nil: break
        }
        if chain.headers > 0 { out.count(.ipv6ExtensionHeaders) }
        return (IPLayer(family: 6, l3: l3, l4: chain.l4, end: end, protocolNumber: chain.protocolNumber,
                        isFragment: chain.isFragment), nil)
    }

    /// Checks the transport header of a packet that has one; sets `tcp_flags`.
    @inline(__always)
    func checkTransport(_ frame: Frame, _ ip: IPLayer, _ meta: UnsafeMutablePointer<sy_meta>) -> Outcome? {
        let l4 = ip.l4
        let size = ip.end - l4
        switch ip.protocolNumber {
        case IPProtocol.tcp:
            guard size >= TCPHeader.size else { return .drop(.tcpBadHeader) }
            guard let tcp = frame.packet.header(TCPHeader.self, at: l4) else {
                return frame.short(.tcpBadHeader, needs: l4 + TCPHeader.size)
            }
            let headerLength = tcp.headerLength
            guard headerLength >= TCPHeader.size, headerLength <= size else { return .drop(.tcpBadHeader) }
            meta.pointee.tcp_flags = tcp.flags
        case IPProtocol.udp:
            guard size >= UDPHeader.size else { return .drop(.udpBadLength) }
            guard let udp = frame.packet.header(UDPHeader.self, at: l4) else {
                return frame.short(.udpBadLength, needs: l4 + UDPHeader.size)
            }
            let length = Int(udp.length)
            // A first fragment carries only part of the datagram its length field counts.
            guard length >= UDPHeader.size, ip.isFragment || length <= size else { return .drop(.udpBadLength) }
        case IPProtocol.icmp where ip.family == 4, IPProtocol.icmpv6 where ip.family == 6:
            guard size >= ICMPHeader.size else { return .drop(.truncatedICMP) }
            guard frame.has(l4 + ICMPHeader.size) else { return frame.short(.truncatedICMP, needs: l4 + ICMPHeader.size) }
        default:
            break
        }
        return nil
    }

    /// The packet an ICMP error quotes (`ICMPQuote.parse`): a complete IP header of the same
    /// family and at least the 8 transport bytes that hold the ports.
    @inline(__always)
    func parseQuote(_ frame: Frame, _ ip: IPLayer) -> ICMPQuote {
        ICMPQuote.parse(frame.packet, ip, maximumHeaders: Self.maximumExtensionHeaders)
    }
}
