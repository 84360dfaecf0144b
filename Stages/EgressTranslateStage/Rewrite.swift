import CDPDK
import SwitchyardCluster

/// Header rewrites of the egress stages, with incremental checksums (RFC 1624): an address and a
/// port of a TCP/UDP packet, or of the packet an ICMP error quotes.
///
///     [eth][vlan?][IP l3 ... ][TCP/UDP l4 ...]                                  ordinary packet
///     [eth][vlan?][IP l3 ... ][ICMP l4][quoted IP inner_l3][ports inner_l4 ...]   ICMP error
@frozen @usableFromInline
struct EgressLayout {
    @usableFromInline let l3: Int
    @usableFromInline let l4: Int
    @usableFromInline let innerL3: Int
    @usableFromInline let innerL4: Int
    @usableFromInline let end: Int
    @usableFromInline let family: UInt8
    @usableFromInline let protocolNumber: UInt8

    @inlinable @inline(__always)
    init(meta: UnsafeMutablePointer<sy_meta>, contiguousLength: Int) {
        l3 = Int(meta.pointee.l3)
        l4 = Int(meta.pointee.l4)
        innerL3 = Int(meta.pointee.inner_l3)
        innerL4 = Int(meta.pointee.inner_l4)
        end = min(Int(meta.pointee.l3_end), contiguousLength)
        family = meta.pointee.family
        protocolNumber = meta.pointee.protocol
    }

    @inlinable var ipHeaderLength: Int { family == 4 ? 20 : 40 }
    @inlinable var sourceOffset: Int { family == 4 ? 12 : 8 }
    @inlinable var destinationOffset: Int { family == 4 ? 16 : 24 }
    @inlinable var checksumOffset: Int { protocolNumber == 6 ? 16 : 6 }

    /// The IP header and the transport header up to its checksum are in the first segment.
    @inlinable var fitsPacket: Bool {
        l3 != 0 && l4 >= l3 + ipHeaderLength && l4 + checksumOffset + 2 <= end
    }

    /// The outer IP header, the ICMP header, the quoted IP header and the quoted ports.
    @inlinable var fitsError: Bool {
        l3 != 0 && l4 >= l3 + ipHeaderLength && innerL3 >= l4 + 8 && innerL3 + ipHeaderLength <= end
            && innerL4 >= innerL3 + ipHeaderLength && innerL4 + 4 <= end
    }

    @inlinable var quotedChecksumPresent: Bool { innerL4 + checksumOffset + 2 <= end }
}

@usableFromInline
enum EgressRewrite {
    /// Writes `address` at `offset` of the IP header at `ip`, fixes an IPv4 header checksum; returns
    /// the old address and the old and new header checksums (for a checksum covering this header).
    @inlinable @inline(__always)
    static func address(ip: UnsafeMutableRawPointer, offset: Int, to address: IPAddress)
        -> (old: IPAddress, oldCheck: UInt16, newCheck: UInt16)
    {
        let old = IPAddress(family: address.family, at: ip + offset)
        address.store(to: ip + offset)
        guard address.family == 4 else { return (old, 0, 0) }
        let oldCheck = ip.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
        let newCheck = Checksum.adjust(oldCheck, old: old, new: address)
        ip.storeBytes(of: newCheck, toByteOffset: 10, as: UInt16.self)
        return (old, oldCheck, newCheck)
    }

    /// Writes `port` at `portOffset` (0 source, 2 destination) of the transport header at `l4` and,
    /// when `checksumPresent`, follows the port and the pseudo-header address change in its
    /// checksum. A zero UDP checksum stays zero; one that comes out zero is written 0xffff.
    /// Returns the old port and the old and new checksums.
    @inlinable @inline(__always)
    static func port(l4: UnsafeMutableRawPointer, portOffset: Int, to port: UInt16, layout: EgressLayout,
                     checksumPresent: Bool, oldAddress: IPAddress, newAddress: IPAddress)
        -> (old: UInt16, oldCheck: UInt16, newCheck: UInt16)
    {
        let old = l4.loadUnaligned(fromByteOffset: portOffset, as: UInt16.self)
        l4.storeBytes(of: port, toByteOffset: portOffset, as: UInt16.self)
        guard checksumPresent else { return (old, 0, 0) }
        let offset = layout.checksumOffset
        let oldCheck = l4.loadUnaligned(fromByteOffset: offset, as: UInt16.self)
        let isUDP = layout.protocolNumber == 17
        if isUDP && oldCheck == 0 { return (old, 0, 0) }
        var check = Checksum.adjust(oldCheck, old: oldAddress, new: newAddress)
        check = Checksum.adjust(check, old: old, new: port)
        if isUDP && check == 0 { check = 0xffff }
        l4.storeBytes(of: check, toByteOffset: offset, as: UInt16.self)
        return (old, oldCheck, check)
    }

    /// An ordinary packet: its source (`source`) or destination address and port.
    @inlinable @inline(__always)
    static func packet(_ frame: UnsafeMutableRawPointer, _ layout: EgressLayout, source: Bool, address: IPAddress,
                       port: UInt16)
    {
        let edit = Self.address(ip: frame + layout.l3, offset: source ? layout.sourceOffset : layout.destinationOffset,
                                to: address)
        _ = Self.port(l4: frame + layout.l4, portOffset: source ? 0 : 2, to: port, layout: layout,
                      checksumPresent: true, oldAddress: edit.old, newAddress: address)
    }

    /// An ICMP error sent to the egress address about a packet egress:port → server: the outer
    /// destination and the quoted source become the resource's, and the ICMP checksum follows
    /// every change (for ICMPv6, the outer destination in its pseudo-header too).
    @inlinable @inline(__always)
    static func errorToResource(_ frame: UnsafeMutableRawPointer, _ layout: EgressLayout, address: IPAddress,
                                port: UInt16)
    {
        let outer = Self.address(ip: frame + layout.l3, offset: layout.destinationOffset, to: address)
        let quoted = Self.address(ip: frame + layout.innerL3, offset: layout.sourceOffset, to: address)
        let quotedPort = Self.port(l4: frame + layout.innerL4, portOffset: 0, to: port, layout: layout,
                                   checksumPresent: layout.quotedChecksumPresent, oldAddress: quoted.old,
                                   newAddress: address)
        let icmp = frame + layout.l4
        var check = icmp.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        check = Checksum.adjust(check, old: quoted.old, new: address)
        check = Checksum.adjust(check, old: quoted.oldCheck, new: quoted.newCheck)
        check = Checksum.adjust(check, old: quotedPort.old, new: port)
        check = Checksum.adjust(check, old: quotedPort.oldCheck, new: quotedPort.newCheck)
        if layout.family == 6 { check = Checksum.adjust(check, old: outer.old, new: address) }
        icmp.storeBytes(of: check, toByteOffset: 2, as: UInt16.self)
    }
}

/// TCP state of an egress connection's entry, seen from either direction (the inbound rules of
/// ownership-lookup): RST removes the entry, FIN sets it closing (kept `timeouts.fin`), a packet
/// without SYN establishes an embryonic entry.
@inlinable @inline(__always)
func followTCP(_ table: ConnectionView, entry: UnsafeMutablePointer<FlowEntry>, control: UInt64,
               key: UnsafeMutablePointer<sy_flow_key>, hash: UInt32, position: Int32, flags: UInt8) -> UInt8
{
    let state = FlowEntry.state(control)
    if flags & 0x04 != 0 {
        table.remove(key: key, hash: hash, position: position, control: control, reason: 2)
        return 2
    } else if flags & 0x01 != 0 {
        if state != FlowState.closing.rawValue {
            table.setState(entry, control: control, to: .closing)
            return 1
        }
    } else if flags & 0x02 == 0 && state == FlowState.embryonic.rawValue {
        table.setState(entry, control: control, to: .established)
    }
    return 0
}
