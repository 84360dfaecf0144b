import CDPDK
import SwitchyardCluster
import SwitchyardCore

/// classify's common case: a unicast IPv4 (no options) or IPv6 (no extension headers) TCP or UDP
/// packet, not a fragment, to a service of a VIP. Every packet of the burst is tried here first;
/// a packet this path does not take goes through the full parser unchanged (which resets the
/// metadata and checks everything again), so nothing here may drop, count or answer.
///
///     packet ─► unicast, EtherType 0x0800 / 0x86dd ─► IP header checks ─► TCP/UDP header checks
///            ─► ServiceIndex (one slot) ─► service? ─yes─► meta filled, flow key + hash ─► vip
///                                                   └─no──► (any "no" above) full parser
///
/// The checks are the full parser's for this kind of packet, spelled for the fixed layout:
///
///     IPv4: first segment holds 34 bytes; version 4, IHL 5; total length >= 20 and within the
///           packet; MF clear and offset 0; header checksum; protocol 6 or 17
///     IPv6: first segment holds 54 bytes; version 6; payload length within the packet;
///           next header 6 or 17 (an extension header goes to the full parser)
///     TCP:  >= 20 bytes in the IP payload and in the first segment; data offset >= 5 and within
///     UDP:  >= 8 bytes in the IP payload and in the first segment; 8 <= length <= IP payload
///
/// What the full parser would add for such a packet and this path leaves out is nothing: no counter
/// (no options, no extension headers, no fragment), and a service of a VIP wins over an egress
/// address (toVIP looks for the service first). Classify with `input: tunnel` or `filter_mac: true`
/// does not use this path.
extension Classify {
    /// Classifies `packet` if it is the common case: fills its metadata and returns true (its
    /// disposition is `vip`). Returns false, having decided nothing, otherwise.
    @inline(__always)
    func commonCase(_ packet: Packet) -> Bool {
        let bytes = packet.bytes
        let available = packet.contiguousLength
        // Bit 0 of the first byte: a group (broadcast, multicast) frame goes to the full parser (RFC 1122 3.3.6).
        guard available >= 34, bytes.load(as: UInt8.self) & 1 == 0 else { return false }
        let etherType = bytes.loadUnaligned(fromByteOffset: 12, as: UInt16.self)
        if etherType == UInt16(0x0800).bigEndian {
            return commonIPv4(packet, bytes, available: available)
        }
        if etherType == UInt16(0x86dd).bigEndian {
            return commonIPv6(packet, bytes, available: available)
        }
        return false
    }

    @inline(__always)
    func commonIPv4(_ packet: Packet, _ bytes: UnsafeMutableRawPointer, available: Int) -> Bool {
        let frame = Frame(bytes: bytes, available: available, length: packet.length)
        guard frame.u8(14) == 0x45 else { return false }
        let totalLength = Int(frame.be16(16))
        guard totalLength >= 20, 14 + totalLength <= frame.length,
              frame.raw16(20) & UInt16(0x3fff).bigEndian == 0, // MF clear, offset 0: not a fragment
              Self.headerChecksumIsValid(bytes + 14)
        else { return false }
        let protocolNumber = frame.u8(23)
        guard let tcpFlags = commonTransport(frame, protocolNumber, l4: 34, size: totalLength - 20) else { return false }
        let vip = UInt64(frame.raw32(30))
        guard let service = services.serviceIndex.find(
            high: vip, low: 0, tag: TupleTable.tag(family: 4, protocol: protocolNumber, port: frame.be16(36)))
        else { return false }
        let meta = packet.meta
        meta.pointee = sy_meta()
        meta.pointee.l3 = 14
        meta.pointee.l4 = 34
        meta.pointee.l3_end = UInt16(truncatingIfNeeded: 14 + totalLength)
        meta.pointee.family = 4
        meta.pointee.protocol = protocolNumber
        meta.pointee.tcp_flags = tcpFlags
        meta.pointee.service = UInt16(truncatingIfNeeded: service + 1)
        // The flow key (FlowKeys.fill for this layout): client = source, VIP = destination, ports as sent.
        let key = UnsafeMutableRawPointer(sy_meta_key(meta)!)
        key.storeBytes(of: frame.raw32(26), as: UInt32.self)
        key.storeBytes(of: UInt32(truncatingIfNeeded: vip), toByteOffset: 16, as: UInt32.self)
        key.storeBytes(of: frame.raw32(34), toByteOffset: 32, as: UInt32.self) // source port, destination port
        key.storeBytes(of: protocolNumber, toByteOffset: 36, as: UInt8.self)
        key.storeBytes(of: UInt8(4), toByteOffset: 37, as: UInt8.self)
        meta.pointee.flow_hash = FlowKeys.hash(sy_meta_key(meta)!)
        return true
    }

    @inline(__always)
    func commonIPv6(_ packet: Packet, _ bytes: UnsafeMutableRawPointer, available: Int) -> Bool {
        let frame = Frame(bytes: bytes, available: available, length: packet.length)
        guard available >= 54, frame.u8(14) >> 4 == 6 else { return false }
        let payloadLength = Int(frame.be16(18))
        guard 54 + payloadLength <= frame.length else { return false }
        let protocolNumber = frame.u8(20)
        guard let tcpFlags = commonTransport(frame, protocolNumber, l4: 54, size: payloadLength) else { return false }
        let vipHigh = frame.raw64(38), vipLow = frame.raw64(46)
        guard let service = services.serviceIndex.find(
            high: vipHigh, low: vipLow, tag: TupleTable.tag(family: 6, protocol: protocolNumber, port: frame.be16(56)))
        else { return false }
        let meta = packet.meta
        meta.pointee = sy_meta()
        meta.pointee.l3 = 14
        meta.pointee.l4 = 54
        meta.pointee.l3_end = UInt16(truncatingIfNeeded: 54 + payloadLength)
        meta.pointee.family = 6
        meta.pointee.protocol = protocolNumber
        meta.pointee.tcp_flags = tcpFlags
        meta.pointee.service = UInt16(truncatingIfNeeded: service + 1)
        let key = UnsafeMutableRawPointer(sy_meta_key(meta)!)
        key.storeBytes(of: frame.raw64(22), as: UInt64.self)
        key.storeBytes(of: frame.raw64(30), toByteOffset: 8, as: UInt64.self)
        key.storeBytes(of: vipHigh, toByteOffset: 16, as: UInt64.self)
        key.storeBytes(of: vipLow, toByteOffset: 24, as: UInt64.self)
        key.storeBytes(of: frame.raw32(54), toByteOffset: 32, as: UInt32.self) // source port, destination port
        key.storeBytes(of: protocolNumber, toByteOffset: 36, as: UInt8.self)
        key.storeBytes(of: UInt8(6), toByteOffset: 37, as: UInt8.self)
        meta.pointee.flow_hash = FlowKeys.hash(sy_meta_key(meta)!)
        return true
    }

    /// The 20-byte IPv4 header at `header` sums to 0xffff (one's complement), as the full parser
    /// checks it: five 32-bit words added in 64 bits and folded (the same sum as ten 16-bit words).
    @inline(__always)
    static func headerChecksumIsValid(_ header: UnsafeMutableRawPointer) -> Bool {
        var sum = UInt64(header.loadUnaligned(as: UInt32.self))
        sum &+= UInt64(header.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        sum &+= UInt64(header.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        sum &+= UInt64(header.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        sum &+= UInt64(header.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        return Checksum.fold(sum) == 0xffff
    }

    /// The TCP or UDP header at `l4` with `size` bytes of IP payload, checked as `checkTransport`
    /// checks it: the TCP flags (0 for UDP), or nil for another protocol or any failed check.
    @inline(__always)
    func commonTransport(_ frame: Frame, _ protocolNumber: UInt8, l4: Int, size: Int) -> UInt8? {
        if protocolNumber == 6 {
            guard size >= 20, frame.has(l4 + 20) else { return nil }
            let dataOffset = Int(frame.u8(l4 + 12) >> 4)
            guard dataOffset >= 5, dataOffset * 4 <= size else { return nil }
            return frame.u8(l4 + 13)
        }
        if protocolNumber == 17 {
            guard size >= 8, frame.has(l4 + 8) else { return nil }
            let length = Int(frame.be16(l4 + 4))
            guard length >= 8, length <= size else { return nil }
            return 0
        }
        return nil
    }
}
