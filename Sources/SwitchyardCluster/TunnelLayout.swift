/// The outer headers of one tunnel between hosts: the underlay family (IPv4 or IPv6) times the
/// tunnel kind (VXLAN or GUE). Encapsulate and decapsulate pick one layout per stage instance, when
/// it is built, and run code specialised for it: no per-packet branch on the configuration.
///
///     layout        outer headers                     bytes  offset of UDP
///     IPv4, VXLAN   Eth 14 | IPv4 20 | UDP 8 | VXLAN 8   50     34
///     IPv4, GUE     Eth 14 | IPv4 20 | UDP 8 | GUE 4     46     34
///     IPv6, VXLAN   Eth 14 | IPv6 40 | UDP 8 | VXLAN 8   70     54
///     IPv6, GUE     Eth 14 | IPv6 40 | UDP 8 | GUE 4     66     54
public protocol TunnelLayout {
    static var outerIPv6: Bool { get }
    static var isGUE: Bool { get }
}

extension TunnelLayout {
    /// 4 or 6.
    @inlinable @inline(__always) public static var outerFamily: UInt8 { outerIPv6 ? 6 : 4 }
    /// The outer IP header: 20 (IPv4, no options) or 40 (IPv6, no extension headers).
    @inlinable @inline(__always) public static var ipHeaderLength: Int { outerIPv6 ? 40 : 20 }
    /// Offset of the outer UDP header from the start of the frame.
    @inlinable @inline(__always) public static var udpOffset: Int { 14 + ipHeaderLength }
    /// The tunnel header after UDP: 8 (VXLAN) or 4 (GUE variant 0, without options).
    @inlinable @inline(__always) public static var tunnelHeaderLength: Int { isGUE ? 4 : 8 }
    /// Outer Ethernet + IP + UDP + tunnel header.
    @inlinable @inline(__always) public static var headerLength: Int { udpOffset + 8 + tunnelHeaderLength }
}

public enum IPv4VXLAN: TunnelLayout {
    public static var outerIPv6: Bool { false }
    public static var isGUE: Bool { false }
}

public enum IPv4GUE: TunnelLayout {
    public static var outerIPv6: Bool { false }
    public static var isGUE: Bool { true }
}

public enum IPv6VXLAN: TunnelLayout {
    public static var outerIPv6: Bool { true }
    public static var isGUE: Bool { false }
}

public enum IPv6GUE: TunnelLayout {
    public static var outerIPv6: Bool { true }
    public static var isGUE: Bool { true }
}

/// Which `TunnelLayout` a cluster uses; a stage switches on it once per burst.
public enum TunnelLayoutKind: Sendable {
    case ipv4VXLAN, ipv4GUE, ipv6VXLAN, ipv6GUE

    public init(_ cluster: ClusterConfiguration) {
        switch (cluster.underlayFamily == 6, cluster.tunnel.kind) {
        case (false, .vxlan): self = .ipv4VXLAN
        case (false, .gue): self = .ipv4GUE
        case (true, .vxlan): self = .ipv6VXLAN
        case (true, .gue): self = .ipv6GUE
        }
    }

    public var headerLength: Int {
        switch self {
        case .ipv4VXLAN: IPv4VXLAN.headerLength
        case .ipv4GUE: IPv4GUE.headerLength
        case .ipv6VXLAN: IPv6VXLAN.headerLength
        case .ipv6GUE: IPv6GUE.headerLength
        }
    }
}
