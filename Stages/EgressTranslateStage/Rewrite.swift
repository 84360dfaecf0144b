import CDPDK
import SwitchyardCluster

/// Header rewrites of the egress stages, on SwitchyardCluster's shared `RewriteLayout` and
/// `HeaderRewrite` (the ones tuple-translate uses): an address and a port of a TCP/UDP packet, or
/// of the packet an ICMP error quotes.
///
///     [eth][vlan?][IP l3 ... ][TCP/UDP l4 ...]                                  ordinary packet
///     [eth][vlan?][IP l3 ... ][ICMP l4][quoted IP inner_l3][ports inner_l4 ...]   ICMP error
@usableFromInline
enum EgressRewrite {
    /// An ordinary packet: its source (`source`) or destination address and port.
    @inlinable @inline(__always)
    static func packet(_ frame: UnsafeMutableRawPointer, _ layout: RewriteLayout, source: Bool, address: IPAddress,
                       port: UInt16)
    {
        let edit = HeaderRewrite.address(ip: frame + layout.l3,
                                         offset: source ? layout.sourceOffset : layout.destinationOffset, to: address)
        _ = HeaderRewrite.port(transport: frame + layout.l4, offset: source ? 0 : 2, to: port, layout: layout,
                               checksumPresent: true, oldAddress: edit.old, newAddress: address)
    }

    /// An ICMP error sent to the egress address about a packet egress:port → server: the outer
    /// destination and the quoted source become the resource's, and the ICMP checksum follows
    /// every change (for ICMPv6, the outer destination in its pseudo-header too).
    @inlinable @inline(__always)
    static func errorToResource(_ frame: UnsafeMutableRawPointer, _ layout: RewriteLayout, address: IPAddress,
                                port: UInt16)
    {
        let outer = HeaderRewrite.address(ip: frame + layout.l3, offset: layout.destinationOffset, to: address)
        let quoted = HeaderRewrite.address(ip: frame + layout.innerL3, offset: layout.sourceOffset, to: address)
        let quotedPort = HeaderRewrite.port(transport: frame + layout.innerL4, offset: 0, to: port, layout: layout,
                                            checksumPresent: layout.quotedChecksumPresent, oldAddress: quoted.old,
                                            newAddress: address)
        let icmp = frame + layout.l4
        var check = icmp.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        check = Checksum.adjust(check, old: quoted.old, new: address)
        check = Checksum.adjust(check, old: quoted.oldHeaderCheck, new: quoted.newHeaderCheck)
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
