import CDPDK
import SwitchyardHeaders

/// Where the headers a translation rewrites are, read once per packet from its metadata, and
/// whether they lie within the first segment and the IP packet (`l3_end`). Shared by the stages
/// that rewrite addresses and ports (tuple-translate, egress-translate, egress-return).
///
///     [eth][vlan?][IP l3 ... ][TCP/UDP l4 ...]                                  ordinary packet
///     [eth][vlan?][IP l3 ... ][ICMP l4][quoted IP inner_l3][ports inner_l4 ...]   ICMP error
@frozen
public struct RewriteLayout {
    public let l3: Int
    public let l4: Int
    public let innerL3: Int
    public let innerL4: Int
    public let end: Int
    public let family: UInt8
    public let protocolNumber: UInt8
    /// An IPv4/IPv6 fragment; a non-first one has `l4` 0 (its ports are in the first).
    public let fragment: Bool

    @inlinable @inline(__always)
    public init(meta: UnsafeMutablePointer<sy_meta>, contiguousLength: Int) {
        l3 = Int(meta.pointee.l3)
        l4 = Int(meta.pointee.l4)
        innerL3 = Int(meta.pointee.inner_l3)
        innerL4 = Int(meta.pointee.inner_l4)
        end = min(Int(meta.pointee.l3_end), contiguousLength)
        family = meta.pointee.family
        protocolNumber = meta.pointee.protocol
        fragment = meta.pointee.flags & UInt8(SY_META_FRAGMENT) != 0
    }

    /// Bytes of the fixed IP header.
    @inlinable public var ipHeaderLength: Int { family == 4 ? IPv4Header.size : IPv6Header.size }
    @inlinable public var sourceOffset: Int { family == 4 ? IPv4Header.sourceOffset : IPv6Header.sourceOffset }
    @inlinable public var destinationOffset: Int { family == 4 ? IPv4Header.destinationOffset : IPv6Header.destinationOffset }
    /// Offset of the checksum in the TCP or UDP header.
    @inlinable public var transportChecksumOffset: Int {
        protocolNumber == IPProtocol.tcp ? TCPHeader.checksumOffset : UDPHeader.checksumOffset
    }

    /// The IP header, and the ports and checksum of the transport header.
    @inlinable public var fitsPacketWithPorts: Bool {
        l3 != 0 && l3 + ipHeaderLength <= end && l4 >= l3 + ipHeaderLength && l4 + transportChecksumOffset + 2 <= end
    }

    /// `fitsPacketWithPorts`, or a non-first fragment whose IP header fits (only its address is
    /// rewritten).
    @inlinable public var fitsPacketOrLaterFragment: Bool {
        guard l3 != 0, l3 + ipHeaderLength <= end else { return false }
        if l4 == 0 { return fragment }
        return l4 >= l3 + ipHeaderLength && l4 + transportChecksumOffset + 2 <= end
    }

    /// An ICMP error: the outer IP header, the ICMP checksum, the quoted IP header and the quoted
    /// ports (the quoted transport checksum is fixed only when it was quoted).
    @inlinable public var fitsError: Bool {
        l3 != 0 && l3 + ipHeaderLength <= end && l4 >= l3 + ipHeaderLength && innerL3 >= l4 + 8
            && innerL3 + ipHeaderLength <= end && innerL4 >= innerL3 + ipHeaderLength && innerL4 + 4 <= end
    }

    /// Whether the quoted transport checksum is among the quoted bytes.
    @inlinable public var quotedChecksumPresent: Bool { innerL4 + transportChecksumOffset + 2 <= end }
}

/// What one address rewrite changed (for checksums that cover the header it is in).
@frozen
public struct AddressEdit {
    public var old: IPAddress
    public var oldHeaderCheck: UInt16 = 0
    public var newHeaderCheck: UInt16 = 0

    @inlinable public init(old: IPAddress) { self.old = old }
}

/// What one port rewrite changed.
@frozen
public struct PortEdit {
    public var old: UInt16
    public var oldCheck: UInt16 = 0
    public var newCheck: UInt16 = 0

    @inlinable public init(old: UInt16) { self.old = old }
}

/// Address and port rewrites with incremental checksums (RFC 1624).
public enum HeaderRewrite {
    /// Writes `address` at `offset` of the IP header at `ip`; fixes the IPv4 header checksum.
    @inlinable @inline(__always)
    public static func address(ip: UnsafeMutableRawPointer, offset: Int, to address: IPAddress) -> AddressEdit {
        var edit = AddressEdit(old: IPAddress(family: address.family, at: ip + offset))
        address.store(to: ip + offset)
        if address.family == 4 {
            let header = IPv4Header(unchecked: ip)
            edit.oldHeaderCheck = header.checksum
            edit.newHeaderCheck = Checksum.adjust(edit.oldHeaderCheck, old: edit.old, new: address)
            header.checksum = edit.newHeaderCheck
        }
        return edit
    }

    /// Writes `port` at `offset` (0 source, 2 destination) of the TCP/UDP header at `transport` and,
    /// when `checksumPresent`, updates its checksum for the port and the pseudo-header address
    /// change `oldAddress` → `newAddress`. A zero UDP checksum (none computed) stays zero; a UDP
    /// checksum that comes out as zero is written 0xffff.
    @inlinable @inline(__always)
    public static func port(transport: UnsafeMutableRawPointer, offset: Int, to port: UInt16, layout: RewriteLayout,
                            checksumPresent: Bool, oldAddress: IPAddress, newAddress: IPAddress) -> PortEdit
    {
        var edit = PortEdit(old: transport.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
        transport.storeBytes(of: port, toByteOffset: offset, as: UInt16.self)
        guard checksumPresent else { return edit }
        let checkOffset = layout.transportChecksumOffset
        edit.oldCheck = transport.loadUnaligned(fromByteOffset: checkOffset, as: UInt16.self)
        let isUDP = layout.protocolNumber == IPProtocol.udp
        if isUDP && edit.oldCheck == 0 { return edit }
        var check = Checksum.adjust(edit.oldCheck, old: oldAddress, new: newAddress)
        check = Checksum.adjust(check, old: edit.old, new: port)
        if isUDP && check == 0 { check = 0xffff }
        edit.newCheck = check
        transport.storeBytes(of: check, toByteOffset: checkOffset, as: UInt16.self)
        return edit
    }

    /// An ordinary packet: its source (`source`) or destination address and port, the IPv4 header
    /// checksum and the TCP/UDP checksum, each checksum adjusted once for all its changes (the same
    /// bytes as `address` then `port`; HeaderRewriteTests compares the two). A non-first fragment
    /// (`l4` 0) gets only its address: its ports and checksum are in the first. A zero UDP checksum
    /// (none computed) stays zero; one that comes out as zero is written 0xffff.
    @inlinable @inline(__always)
    public static func packet(_ frame: UnsafeMutableRawPointer, _ layout: RewriteLayout, source: Bool,
                              address: IPAddress, port: UInt16)
    {
        let ip = frame + layout.l3
        var change: UInt64
        if layout.family == 4 {
            let offset = source ? IPv4Header.sourceOffset : IPv4Header.destinationOffset
            let old = ip.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
            let new = UInt32(truncatingIfNeeded: address.high)
            ip.storeBytes(of: new, toByteOffset: offset, as: UInt32.self)
            change = Checksum.change(old: old, new: new)
            let header = IPv4Header(unchecked: ip)
            header.checksum = Checksum.adjust(header.checksum, change: change)
        } else {
            let offset = source ? IPv6Header.sourceOffset : IPv6Header.destinationOffset
            let oldHigh = ip.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            let oldLow = ip.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
            ip.storeBytes(of: address.high, toByteOffset: offset, as: UInt64.self)
            ip.storeBytes(of: address.low, toByteOffset: offset + 8, as: UInt64.self)
            change = Checksum.change(old: oldHigh, new: address.high) &+ Checksum.change(old: oldLow, new: address.low)
        }
        guard layout.l4 != 0 else { return }
        let transport = frame + layout.l4
        let portOffset = source ? 0 : TransportPorts.destinationPortOffset
        let oldPort = transport.loadUnaligned(fromByteOffset: portOffset, as: UInt16.self)
        transport.storeBytes(of: port, toByteOffset: portOffset, as: UInt16.self)
        change &+= Checksum.change(old: oldPort, new: port)
        let checkOffset = layout.transportChecksumOffset
        let oldCheck = transport.loadUnaligned(fromByteOffset: checkOffset, as: UInt16.self)
        let isUDP = layout.protocolNumber == IPProtocol.udp
        if isUDP && oldCheck == 0 { return } // no UDP checksum was computed: none is made up
        var check = Checksum.adjust(oldCheck, change: change)
        if isUDP && check == 0 { check = 0xffff }
        transport.storeBytes(of: check, toByteOffset: checkOffset, as: UInt16.self)
    }

    /// An ICMP error about a packet that left from `address`:`port`'s public side (VIP → client,
    /// egress address → server): the outer destination and the quoted source become `address` and
    /// `port`, then the ICMP checksum follows every change.
    @inlinable @inline(__always)
    public static func errorToQuotedSource(_ frame: UnsafeMutableRawPointer, _ layout: RewriteLayout,
                                           address: IPAddress, port: UInt16)
    {
        let outer = Self.address(ip: frame + layout.l3, offset: layout.destinationOffset, to: address)
        let quoted = Self.address(ip: frame + layout.innerL3, offset: layout.sourceOffset, to: address)
        let quotedPort = Self.port(transport: frame + layout.innerL4, offset: 0, to: port, layout: layout,
                                   checksumPresent: layout.quotedChecksumPresent, oldAddress: quoted.old,
                                   newAddress: address)
        icmpChecksum(frame, layout, outer: layout.family == 6 ? outer : nil, outerNew: address, quoted: quoted,
                     quotedNew: address, port: quotedPort, portNew: port)
    }

    /// The ICMP checksum after the quoted address, header checksum, port and transport checksum
    /// changed, and for ICMPv6 the outer address in its pseudo-header (`outer`, nil if unchanged).
    @inlinable @inline(__always)
    public static func icmpChecksum(_ frame: UnsafeMutableRawPointer, _ layout: RewriteLayout, outer: AddressEdit?,
                                    outerNew: IPAddress, quoted: AddressEdit, quotedNew: IPAddress, port: PortEdit,
                                    portNew: UInt16)
    {
        let icmp = ICMPHeader(unchecked: frame + layout.l4)
        var check = icmp.checksum
        check = Checksum.adjust(check, old: quoted.old, new: quotedNew)
        check = Checksum.adjust(check, old: quoted.oldHeaderCheck, new: quoted.newHeaderCheck)
        check = Checksum.adjust(check, old: port.old, new: portNew)
        check = Checksum.adjust(check, old: port.oldCheck, new: port.newCheck)
        if let outer { check = Checksum.adjust(check, old: outer.old, new: outerNew) }
        icmp.checksum = check
    }
}
