/// Named protocol numbers, shared by the stages and the test frame builder (SwitchyardPcap).
///
/// Each constant is an `@inlinable` computed property of the field's own integer type, so
/// `etherType == EtherType.ipv6` compiles to the same compare as `== 0x86dd`, works in `switch`
/// patterns and against the C metadata (`sy_meta.protocol` is a `UInt8`).
public enum EtherType {
    @inlinable public static var ipv4: UInt16 { 0x0800 }
    @inlinable public static var arp: UInt16 { 0x0806 }
    /// An 802.1Q tag (TPID) in front of the real EtherType.
    @inlinable public static var vlan: UInt16 { 0x8100 }
    @inlinable public static var ipv6: UInt16 { 0x86dd }
    /// An 802.1ad service tag (QinQ outer tag).
    @inlinable public static var serviceVLAN: UInt16 { 0x88a8 }
    /// The pre-standard QinQ outer tag some switches still send.
    @inlinable public static var legacyQinQ: UInt16 { 0x9100 }

    /// The EtherType of IP version `family` (4 or 6).
    @inlinable @inline(__always)
    public static func ip(family: UInt8) -> UInt16 { family == 4 ? ipv4 : ipv6 }
}

/// IP protocol numbers (IPv4 `protocol`, IPv6 `next header`; IANA "Assigned Internet Protocol Numbers").
public enum IPProtocol {
    /// IPv6 hop-by-hop options.
    @inlinable public static var hopByHop: UInt8 { 0 }
    @inlinable public static var icmp: UInt8 { 1 }
    /// IPv4 in IP (GUE's `proto` for an inner IPv4 packet).
    @inlinable public static var ipip: UInt8 { 4 }
    @inlinable public static var tcp: UInt8 { 6 }
    @inlinable public static var udp: UInt8 { 17 }
    /// IPv6 in IP (GUE's `proto` for an inner IPv6 packet).
    @inlinable public static var ipv6: UInt8 { 41 }
    @inlinable public static var routing: UInt8 { 43 }
    @inlinable public static var fragment: UInt8 { 44 }
    @inlinable public static var gre: UInt8 { 47 }
    @inlinable public static var esp: UInt8 { 50 }
    /// Authentication header.
    @inlinable public static var ah: UInt8 { 51 }
    @inlinable public static var icmpv6: UInt8 { 58 }
    @inlinable public static var noNextHeader: UInt8 { 59 }
    @inlinable public static var destinationOptions: UInt8 { 60 }

    /// TCP or UDP: a transport header that starts with the two ports.
    @inlinable @inline(__always)
    public static func isTCPOrUDP(_ protocolNumber: UInt8) -> Bool { protocolNumber == tcp || protocolNumber == udp }

    /// ICMP for IPv4, ICMPv6 for IPv6.
    @inlinable @inline(__always)
    public static func icmp(family: UInt8) -> UInt8 { family == 4 ? icmp : icmpv6 }

    /// The protocol that carries IP version `family` inside IP (4: IP-in-IP, 6: IPv6).
    @inlinable @inline(__always)
    public static func encapsulated(family: UInt8) -> UInt8 { family == 4 ? ipip : ipv6 }
}

/// ICMP (IPv4) message types and codes this project reads or writes.
public enum ICMPType {
    @inlinable public static var echoReply: UInt8 { 0 }
    @inlinable public static var destinationUnreachable: UInt8 { 3 }
    /// Code of `destinationUnreachable`: fragmentation needed and DF set (RFC 1191).
    @inlinable public static var fragmentationNeededCode: UInt8 { 4 }
    @inlinable public static var sourceQuench: UInt8 { 4 }
    @inlinable public static var redirect: UInt8 { 5 }
    @inlinable public static var echoRequest: UInt8 { 8 }
    @inlinable public static var timeExceeded: UInt8 { 11 }
    @inlinable public static var parameterProblem: UInt8 { 12 }

    /// Destination unreachable, source quench, redirect, time exceeded, parameter problem.
    @inlinable @inline(__always)
    public static func isError(_ type: UInt8) -> Bool {
        type == destinationUnreachable || type == sourceQuench || type == redirect || type == timeExceeded
            || type == parameterProblem
    }

    /// An error of ICMP (`family` 4) or ICMPv6 (6).
    @inlinable @inline(__always)
    public static func isError(_ type: UInt8, family: UInt8) -> Bool {
        family == 4 ? isError(type) : ICMPv6Type.isError(type)
    }

    /// An echo request of ICMP (`family` 4) or ICMPv6 (6).
    @inlinable @inline(__always)
    public static func isEchoRequest(_ type: UInt8, family: UInt8) -> Bool {
        type == (family == 4 ? echoRequest : ICMPv6Type.echoRequest)
    }

    /// The echo reply type of ICMP (`family` 4) or ICMPv6 (6).
    @inlinable @inline(__always)
    public static func echoReply(family: UInt8) -> UInt8 { family == 4 ? echoReply : ICMPv6Type.echoReply }

    /// The destination-unreachable type of ICMP (`family` 4) or ICMPv6 (6).
    @inlinable @inline(__always)
    public static func destinationUnreachable(family: UInt8) -> UInt8 {
        family == 4 ? destinationUnreachable : ICMPv6Type.destinationUnreachable
    }
}

/// ICMPv6 message types (RFC 4443, RFC 4861).
public enum ICMPv6Type {
    @inlinable public static var destinationUnreachable: UInt8 { 1 }
    @inlinable public static var packetTooBig: UInt8 { 2 }
    @inlinable public static var timeExceeded: UInt8 { 3 }
    @inlinable public static var parameterProblem: UInt8 { 4 }
    @inlinable public static var echoRequest: UInt8 { 128 }
    @inlinable public static var echoReply: UInt8 { 129 }
    @inlinable public static var routerSolicitation: UInt8 { 133 }
    @inlinable public static var routerAdvertisement: UInt8 { 134 }
    @inlinable public static var neighborSolicitation: UInt8 { 135 }
    @inlinable public static var neighborAdvertisement: UInt8 { 136 }
    @inlinable public static var redirect: UInt8 { 137 }
    /// The hop limit neighbour discovery is sent with and must arrive with (RFC 4861 7.1.1).
    @inlinable public static var neighborDiscoveryHopLimit: UInt8 { 255 }

    /// Types 1...4: the error messages (types below 128).
    @inlinable @inline(__always)
    public static func isError(_ type: UInt8) -> Bool { type >= destinationUnreachable && type <= parameterProblem }

    /// Types 133...137: router solicitation and advertisement, neighbour solicitation and
    /// advertisement, redirect (RFC 4861).
    @inlinable @inline(__always)
    public static func isNeighborDiscovery(_ type: UInt8) -> Bool { type >= routerSolicitation && type <= redirect }
}

/// ARP (RFC 826) field values for Ethernet and IPv4.
public enum ARPValue {
    @inlinable public static var hardwareEthernet: UInt16 { 1 }
    @inlinable public static var request: UInt16 { 1 }
    @inlinable public static var reply: UInt16 { 2 }
    /// Address lengths for Ethernet and IPv4.
    @inlinable public static var ethernetAddressLength: UInt8 { 6 }
    @inlinable public static var ipv4AddressLength: UInt8 { 4 }
}
