import CDPDK
import SwitchyardCluster
import SwitchyardCore
import SwitchyardHeaders

/// classify's common case: a unicast IPv4 (no options) or IPv6 (no extension headers) TCP or UDP
/// packet, not a fragment, to a service of a VIP. Every packet of the burst is tried here first;
/// a packet this path does not take goes through the full parser unchanged (which resets the
/// metadata and checks everything again), so nothing here may drop, count or answer.
///
///     packet ─► unicast, EtherType IPv4 / IPv6 ─► IP header checks ─► TCP/UDP header checks
///            ─► ServiceIndex (one slot) ─► service? ─yes─► meta filled, flow key + hash ─► vip
///                                                   └─no──► (any "no" above) full parser
///
/// The checks are the full parser's for this kind of packet, spelled for the fixed layout:
///
///     IPv4: first segment holds 34 bytes; version 4, IHL 5; total length >= 20 and within the
///           packet; MF clear and offset 0; header checksum; protocol TCP or UDP
///     IPv6: first segment holds 54 bytes; version 6; payload length within the packet;
///           next header TCP or UDP (an extension header goes to the full parser)
///     TCP:  >= 20 bytes in the IP payload and in the first segment; data offset >= 5 and within
///     UDP:  >= 8 bytes in the IP payload and in the first segment; 8 <= length <= IP payload
///
/// What the full parser would add for such a packet and this path leaves out is nothing: no counter
/// (no options, no extension headers, no fragment), and a service of a VIP wins over an egress
/// address (toVIP looks for the service first). Classify with `input: tunnel` or `filter_mac: true`
/// does not use this path.
extension Classify {
    /// The fixed layout this path takes: Ethernet without a tag, then IPv4 without options or the
    /// fixed IPv6 header, then TCP or UDP.
    @inline(__always) static var commonL3: Int { EthernetHeader.size }
    @inline(__always) static var commonIPv4L4: Int { EthernetHeader.size + IPv4Header.size }
    @inline(__always) static var commonIPv6L4: Int { EthernetHeader.size + IPv6Header.size }

    /// Classifies `packet` if it is the common case: fills its metadata and returns true (its
    /// disposition is `vip`). Returns false, having decided nothing, otherwise.
    ///
    /// Bounds are checked once for the fixed layout (34 or 54 bytes, then the transport header in
    /// `commonTransport`); the views are then made unchecked at those fixed offsets.
    @inline(__always)
    func commonCase(_ packet: Packet) -> Bool {
        let bytes = PacketBytes(packet.bytes, count: packet.contiguousLength)
        guard bytes.fits(0, Self.commonIPv4L4) else { return false }
        let ethernet = EthernetHeader(unchecked: bytes.base)
        // A group (broadcast, multicast) frame goes to the full parser (RFC 1122 3.3.6).
        guard !ethernet.isGroupDestination else { return false }
        if ethernet.hasEtherType(EtherType.ipv4) {
            return commonIPv4(packet, bytes)
        }
        if ethernet.hasEtherType(EtherType.ipv6) {
            return commonIPv6(packet, bytes)
        }
        return false
    }

    @inline(__always)
    func commonIPv4(_ packet: Packet, _ bytes: PacketBytes) -> Bool {
        let ip = IPv4Header(unchecked: bytes.base + Self.commonL3)
        guard ip.versionAndHeaderLength == IPv4Header.versionAndHeaderLengthNoOptions else { return false }
        let totalLength = Int(ip.totalLength)
        guard totalLength >= IPv4Header.size, Self.commonL3 + totalLength <= packet.length, !ip.isFragment,
              Checksum.fold(ip.fixedHeaderSum) == 0xffff // the header checksum, as the full parser checks it
        else { return false }
        let protocolNumber = ip.protocolNumber
        guard let tcpFlags = commonTransport(bytes, protocolNumber, l4: Self.commonIPv4L4,
                                             size: totalLength - IPv4Header.size)
        else { return false }
        let ports = TransportPorts(unchecked: bytes.base + Self.commonIPv4L4)
        let vip = ip.destination
        guard let service = services.serviceIndex.find(
            high: UInt64(vip), low: 0,
            tag: TupleTable.tag(family: 4, protocol: protocolNumber, port: ports.destinationPort))
        else { return false }
        let meta = packet.meta
        meta.pointee = sy_meta()
        meta.pointee.l3 = UInt16(truncatingIfNeeded: Self.commonL3)
        meta.pointee.l4 = UInt16(truncatingIfNeeded: Self.commonIPv4L4)
        meta.pointee.l3_end = UInt16(truncatingIfNeeded: Self.commonL3 + totalLength)
        meta.pointee.family = 4
        meta.pointee.protocol = protocolNumber
        meta.pointee.tcp_flags = tcpFlags
        meta.pointee.service = UInt16(truncatingIfNeeded: service + 1)
        // The flow key (FlowKeys.fill for this layout): client = source, VIP = destination, ports as sent.
        let key = sy_meta_key(meta)!
        let client = ip.source, bothPorts = ports.bothRaw
        FlowKeys.fillZeroed(key, ipv4Client: client, vip: vip, ports: bothPorts, protocolNumber: protocolNumber)
        meta.pointee.flow_hash = FlowKeys.hash(ipv4Client: client, vip: vip, ports: bothPorts, protocolNumber: protocolNumber)
        return true
    }

    @inline(__always)
    func commonIPv6(_ packet: Packet, _ bytes: PacketBytes) -> Bool {
        guard bytes.fits(0, Self.commonIPv6L4) else { return false }
        let ip = IPv6Header(unchecked: bytes.base + Self.commonL3)
        guard ip.version == 6 else { return false }
        let payloadLength = Int(ip.payloadLength)
        guard Self.commonIPv6L4 + payloadLength <= packet.length else { return false }
        let protocolNumber = ip.nextHeader
        guard let tcpFlags = commonTransport(bytes, protocolNumber, l4: Self.commonIPv6L4, size: payloadLength)
        else { return false }
        let ports = TransportPorts(unchecked: bytes.base + Self.commonIPv6L4)
        let vipHigh = ip.destinationHigh, vipLow = ip.destinationLow
        guard let service = services.serviceIndex.find(
            high: vipHigh, low: vipLow,
            tag: TupleTable.tag(family: 6, protocol: protocolNumber, port: ports.destinationPort))
        else { return false }
        let meta = packet.meta
        meta.pointee = sy_meta()
        meta.pointee.l3 = UInt16(truncatingIfNeeded: Self.commonL3)
        meta.pointee.l4 = UInt16(truncatingIfNeeded: Self.commonIPv6L4)
        meta.pointee.l3_end = UInt16(truncatingIfNeeded: Self.commonIPv6L4 + payloadLength)
        meta.pointee.family = 6
        meta.pointee.protocol = protocolNumber
        meta.pointee.tcp_flags = tcpFlags
        meta.pointee.service = UInt16(truncatingIfNeeded: service + 1)
        let key = sy_meta_key(meta)!
        let clientHigh = ip.sourceHigh, clientLow = ip.sourceLow, bothPorts = ports.bothRaw
        FlowKeys.fillZeroed(key, ipv6ClientHigh: clientHigh, clientLow: clientLow, vipHigh: vipHigh, vipLow: vipLow,
                            ports: bothPorts, protocolNumber: protocolNumber)
        meta.pointee.flow_hash = FlowKeys.hash(ipv6ClientHigh: clientHigh, clientLow: clientLow, vipHigh: vipHigh,
                                               vipLow: vipLow, ports: bothPorts, protocolNumber: protocolNumber)
        return true
    }

    /// The TCP or UDP header at `l4` with `size` bytes of IP payload, checked as `checkTransport`
    /// checks it: the TCP flags (0 for UDP), or nil for another protocol or any failed check.
    @inline(__always)
    func commonTransport(_ bytes: PacketBytes, _ protocolNumber: UInt8, l4: Int, size: Int) -> UInt8? {
        if protocolNumber == IPProtocol.tcp {
            guard size >= TCPHeader.size, let tcp = bytes.header(TCPHeader.self, at: l4) else { return nil }
            let headerLength = tcp.headerLength
            guard headerLength >= TCPHeader.size, headerLength <= size else { return nil }
            return tcp.flags
        }
        if protocolNumber == IPProtocol.udp {
            guard size >= UDPHeader.size, let udp = bytes.header(UDPHeader.self, at: l4) else { return nil }
            let length = Int(udp.length)
            guard length >= UDPHeader.size, length <= size else { return nil }
            return 0
        }
        return nil
    }
}
